//! Field offsets of kernel structures, read from the running kernel's BTF.
//!
//! The probes read a handful of `task_struct` and `cred` fields. Their
//! offsets differ between kernel builds (5.10, 6.1 and 6.18 all differ), so
//! they are looked up here at load time instead of compiled in.

use std::path::Path;

use guardrail_common::KernelOffsets;

pub use super::btf_format::Btf;
use super::btf_format::{FormatError, Kind};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read BTF from {path}: {source}")]
    Format { path: String, source: FormatError },
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Read the BTF file at `path` (the kernel's: [`VMLINUX`]) and ask it
/// everything before dropping it: the loader reads it again its own way.
pub fn read(path: &Path) -> Result<Btf, BtfError> {
    let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Btf::parse(bytes).map_err(|source| BtfError::Format {
        path: path.display().to_string(),
        source,
    })
}

/// Resolve the offsets the probes need from the kernel's BTF.
pub fn resolve_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let task = |m: &str| member_offset(btf, "task_struct", m);
    let cred = |m: &str| member_offset(btf, "cred", m);
    Ok(KernelOffsets {
        task_real_parent: task("real_parent")?,
        task_tgid: task("tgid")?,
        // Absent without CONFIG_AUDIT (loginuid then reads as unset).
        task_loginuid: task("loginuid").unwrap_or(0),
        task_cred: task("cred")?,
        cred_euid: cred("euid")?,
        cred_egid: cred("egid")?,
        cred_cap_effective: cred("cap_effective")?,
        task_mm: task("mm")?,
        mm_arg_start: member_offset(btf, "mm_struct", "arg_start")?,
        mm_arg_end: member_offset(btf, "mm_struct", "arg_end")?,
        task_fs: task("fs")?,
        fs_pwd: member_offset(btf, "fs_struct", "pwd")?,
        fs_root: member_offset(btf, "fs_struct", "root")?,
        task_files: task("files")?,
        files_fdt: member_offset(btf, "files_struct", "fdt")?,
        fdt_fd: member_offset(btf, "fdtable", "fd")?,
        fdt_max_fds: member_offset(btf, "fdtable", "max_fds")?,
        file_f_path: member_offset(btf, "file", "f_path")?,
        file_f_inode: member_offset(btf, "file", "f_inode")?,
        path_mnt: member_offset(btf, "path", "mnt")?,
        path_dentry: member_offset(btf, "path", "dentry")?,
        dentry_parent: member_offset(btf, "dentry", "d_parent")?,
        dentry_name: member_offset(btf, "dentry", "d_name")?,
        qstr_len: member_offset(btf, "qstr", "len")?,
        qstr_name: member_offset(btf, "qstr", "name")?,
        mount_mnt: member_offset(btf, "mount", "mnt")?,
        mount_parent: member_offset(btf, "mount", "mnt_parent")?,
        mount_mountpoint: member_offset(btf, "mount", "mnt_mountpoint")?,
        vfsmount_root: member_offset(btf, "vfsmount", "mnt_root")?,
        mm_exe_file: member_offset(btf, "mm_struct", "exe_file")?,
        dentry_inode: member_offset(btf, "dentry", "d_inode")?,
        dentry_sb: member_offset(btf, "dentry", "d_sb")?,
        inode_ino: member_offset(btf, "inode", "i_ino")?,
        inode_sb: member_offset(btf, "inode", "i_sb")?,
        sb_dev: member_offset(btf, "super_block", "s_dev")?,
        file_f_mode: member_offset(btf, "file", "f_mode")?,
        bprm_file: member_offset(btf, "linux_binprm", "file")?,
        cred_uid: member_offset(btf, "cred", "uid")?,
        iattr_valid: member_offset(btf, "iattr", "ia_valid")?,
        // `real_start_time` before 5.5.
        task_start_boottime: task("start_boottime")
            .or_else(|_| task("real_start_time"))
            .unwrap_or(0),
        task_nsproxy: task("nsproxy")?,
        nsproxy_mnt_ns: member_offset(btf, "nsproxy", "mnt_ns")?,
        mnt_ns_inum: member_offset(btf, "mnt_namespace", "ns")?
            + member_offset(btf, "ns_common", "inum")?,
        bpf_map_id: member_offset(btf, "bpf_map", "id")?,
        task_group_leader: task("group_leader")?,
        // Absent without CONFIG_AUDIT: the session is then unknown.
        task_sessionid: task("sessionid").unwrap_or(0),
        task_signal: task("signal")?,
        signal_tty: member_offset(btf, "signal_struct", "tty")?,
        tty_index: member_offset(btf, "tty_struct", "index")?,
        tty_driver: member_offset(btf, "tty_struct", "driver")?,
        driver_major: member_offset(btf, "tty_driver", "major")?,
        driver_minor_start: member_offset(btf, "tty_driver", "minor_start")?,
        // Only the raw syscall probes need these: without them those
        // probes are not used (see `raw_syscall_offsets`).
        ..raw_syscall_offsets(btf).unwrap_or_default()
    })
}

/// Where the raw syscall probes read a syscall's number and arguments
/// (the x86-64 syscall convention: di, si, dx, r10, r8, r9) and whether
/// it is a 32-bit call; `None` where the kernel's structures differ.
fn raw_syscall_offsets(btf: &Btf) -> Option<KernelOffsets> {
    let reg = |m: &str| member_offset(btf, "pt_regs", m).ok();
    let mut regs_args = [0; 6];
    for (slot, name) in regs_args
        .iter_mut()
        .zip(["di", "si", "dx", "r10", "r8", "r9"])
    {
        *slot = reg(name)?;
    }
    Some(KernelOffsets {
        regs_args,
        regs_orig_ax: reg("orig_ax")?,
        task_ti_status: member_offset(btf, "task_struct", "thread_info").ok()?
            + member_offset(btf, "thread_info", "status").ok()?,
        bprm_filename: member_offset(btf, "linux_binprm", "filename").ok()?,
        ..KernelOffsets::default()
    })
}

/// Whether the raw syscall probes can run with `offsets`.
pub fn raw_syscalls_resolved(offsets: &KernelOffsets) -> bool {
    offsets.regs_orig_ax != 0 && offsets.regs_args.iter().all(|&o| o != 0)
}

/// How many arguments raw tracepoint `tp` passes (its `TP_PROTO`), from
/// the `btf_trace_<tp>` type the kernel declares for each tracepoint.
pub fn raw_tracepoint_args(btf: &Btf, tp: &str) -> Option<usize> {
    // typedef → pointer → function prototype (void *__data, args…).
    let typedef = btf.find(Kind::Typedef, &format!("btf_trace_{tp}"))?;
    let ptr = btf.skip_modifiers(typedef.size_or_type)?;
    if ptr.kind != Kind::Ptr {
        return None;
    }
    let proto = btf.skip_modifiers(ptr.size_or_type)?;
    (proto.kind == Kind::FuncProto)
        .then(|| proto.vlen().checked_sub(1))
        .flatten()
}

/// Whether this kernel's BPF programs may call helper `name` (as in
/// `bpf_get_current_task_btf`): its id is in the kernel's own list.
pub fn has_helper(btf: &Btf, name: &str) -> bool {
    let id = format!("BPF_FUNC_{}", name.trim_start_matches("bpf_"));
    btf.find(Kind::Enum, "bpf_func_id")
        .is_some_and(|e| btf.enumerator_names(&e).any(|n| n == id))
}

/// How many parameters the BPF-LSM attach point of `hook` takes (the
/// previous verdict is passed after them). `None` without BPF-LSM.
pub fn lsm_hook_params(btf: &Btf, hook: &str) -> Option<usize> {
    let func = btf.find(Kind::Func, &format!("bpf_lsm_{hook}"))?;
    let proto = btf.type_by_id(func.size_or_type)?;
    (proto.kind == Kind::FuncProto).then(|| proto.vlen())
}

/// Byte offset of `member` in struct `strukt`, looking through anonymous
/// nested structs and unions (where `task_struct` keeps many fields).
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let s = btf
        .find(Kind::Struct, strukt)
        .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
    find_member(btf, &s, member, 0, 0).ok_or_else(|| BtfError::NoMember {
        strukt: strukt.into(),
        member: member.into(),
    })
}

/// Anonymous structs and unions nest a few levels deep; a deeper chain
/// is a loop in a damaged file.
const MAX_NESTING: u32 = 16;

fn find_member(
    btf: &Btf,
    s: &super::btf_format::Type,
    wanted: &str,
    base_bits: u32,
    depth: u32,
) -> Option<u32> {
    for m in btf.members(s) {
        let bits = base_bits + m.bit_offset;
        let name = btf.name(m.name_off);
        if name == wanted {
            return Some(bits / 8);
        }
        if name.is_empty() && depth < MAX_NESTING {
            // An anonymous member whose type cannot be read is passed
            // over, as a named one that does not match is.
            let inner = btf
                .skip_modifiers(m.type_id)
                .filter(|t| matches!(t.kind, Kind::Struct | Kind::Union));
            if let Some(found) =
                inner.and_then(|inner| find_member(btf, &inner, wanted, bits, depth + 1))
            {
                return Some(found);
            }
        }
    }
    None
}

/// The running kernel's BTF, for tests that read it; None (and a note)
/// on a kernel without it.
#[cfg(test)]
pub(super) fn running_kernel() -> Option<Btf> {
    let path = Path::new(VMLINUX);
    if !path.exists() {
        eprintln!("no {VMLINUX}: skipped");
        return None;
    }
    Some(read(path).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_offsets_of_the_running_kernel() {
        let Some(btf) = running_kernel() else {
            return;
        };
        let o = resolve_offsets(&btf).expect("offsets");
        // Fields exist and lie inside the structures, in their declared order.
        assert!(o.task_real_parent > o.task_tgid, "{o:?}");
        assert!(o.cred_egid > o.cred_euid, "{o:?}");
        assert_ne!(o.task_cred, 0);
    }

    /// 6.18 (this machine) has the typed current task (5.11+), and no
    /// kernel has a helper of a made-up name.
    #[test]
    fn knows_which_helpers_the_running_kernel_has() {
        let Some(btf) = running_kernel() else {
            return;
        };
        assert!(has_helper(&btf, "bpf_get_current_task_btf"));
        assert!(has_helper(&btf, "bpf_probe_read_kernel"));
        assert!(!has_helper(&btf, "bpf_no_such_helper"));
    }

    #[test]
    fn unknown_member_is_an_error_that_names_it() {
        let Some(btf) = running_kernel() else {
            return;
        };
        let err = member_offset(&btf, "cred", "no_such_field").unwrap_err();
        assert_eq!(
            err.to_string(),
            "BTF struct cred has no member no_such_field"
        );
        assert_eq!(
            member_offset(&btf, "no_such_struct", "x")
                .unwrap_err()
                .to_string(),
            "BTF has no struct no_such_struct"
        );
    }

    /// The struct named `name`, as a general BTF library (btf-rs) finds it.
    fn oracle_struct(btf: &btf_rs::Btf, name: &str) -> Option<btf_rs::Struct> {
        btf.resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                btf_rs::Type::Struct(s) => Some(s),
                _ => None,
            })
    }

    /// The answer of a general BTF library (btf-rs), for comparison.
    fn oracle(btf: &btf_rs::Btf, strukt: &str, member: &str) -> Option<u32> {
        fn walk(btf: &btf_rs::Btf, s: &btf_rs::Struct, wanted: &str, base: u32) -> Option<u32> {
            for m in &s.members {
                let bits = base + m.bit_offset();
                let name = btf.resolve_name(m).unwrap_or_default();
                if name == wanted {
                    return Some(bits / 8);
                }
                if name.is_empty() {
                    if let Ok(btf_rs::Type::Struct(i) | btf_rs::Type::Union(i)) =
                        btf.resolve_chained_type(m)
                    {
                        if let Some(found) = walk(btf, &i, wanted, bits) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        walk(btf, &oracle_struct(btf, strukt)?, member, 0)
    }

    /// Every member of the structures the probes read (and of every
    /// structure nested in them, anonymous ones included) is found where
    /// a general BTF library finds it; so are the tracepoint and LSM
    /// prototypes.
    #[test]
    fn reads_the_running_kernel_as_a_general_btf_library_does() {
        let Some(ours) = running_kernel() else {
            return;
        };
        let theirs = btf_rs::Btf::from_file(VMLINUX).unwrap();
        let structs = [
            "task_struct",
            "cred",
            "mm_struct",
            "fs_struct",
            "files_struct",
            "fdtable",
            "file",
            "path",
            "dentry",
            "qstr",
            "mount",
            "vfsmount",
            "inode",
            "super_block",
            "linux_binprm",
            "iattr",
            "nsproxy",
            "mnt_namespace",
            "ns_common",
            "bpf_map",
            "signal_struct",
            "tty_struct",
            "tty_driver",
            "pt_regs",
            "thread_info",
            "io_kiocb",
            "filename",
            "io_open",
            "open_how",
            "io_rename",
            "io_unlink",
            "io_hardlink",
            "io_mkdir",
            "io_xattr",
            "xattr_name",
            "io_worker",
            "io_wq_work",
            "io_ftrunc",
        ];
        let mut compared = 0;
        for strukt in structs {
            let Some(s) = ours.find(Kind::Struct, strukt) else {
                assert!(oracle_struct(&theirs, strukt).is_none(), "{strukt} missed");
                continue;
            };
            let mut names = Vec::new();
            let mut stack = vec![s];
            while let Some(t) = stack.pop() {
                for m in ours.members(&t) {
                    match ours.name(m.name_off) {
                        "" => stack.extend(
                            ours.skip_modifiers(m.type_id)
                                .filter(|i| matches!(i.kind, Kind::Struct | Kind::Union)),
                        ),
                        name => names.push(name.to_string()),
                    }
                }
            }
            assert!(!names.is_empty(), "{strukt}");
            for name in names {
                assert_eq!(
                    member_offset(&ours, strukt, &name).ok(),
                    oracle(&theirs, strukt, &name),
                    "{strukt}.{name}"
                );
                compared += 1;
            }
        }
        assert!(compared > 300, "{compared} members");
        for tp in [
            "io_uring_create",
            "io_uring_register",
            "sys_enter",
            "sched_process_exec",
        ] {
            let proto = theirs
                .resolve_types_by_name(&format!("btf_trace_{tp}"))
                .ok()
                .and_then(|t| t.into_iter().next());
            let expected = proto.and_then(|t| {
                let btf_rs::Type::Typedef(t) = t else {
                    return None;
                };
                let btf_rs::Type::Ptr(p) = theirs.resolve_chained_type(&t).ok()? else {
                    return None;
                };
                let btf_rs::Type::FuncProto(f) = theirs.resolve_chained_type(&p).ok()? else {
                    return None;
                };
                f.parameters.len().checked_sub(1)
            });
            assert_eq!(raw_tracepoint_args(&ours, tp), expected, "{tp}");
        }
        assert_eq!(raw_tracepoint_args(&ours, "sys_enter"), Some(2));
        for hook in [
            "path_rename",
            "inode_setattr",
            "inode_setxattr",
            "file_open",
        ] {
            let expected = theirs
                .resolve_types_by_name(&format!("bpf_lsm_{hook}"))
                .ok()
                .and_then(|t| {
                    t.into_iter().find_map(|t| match t {
                        btf_rs::Type::Func(f) => Some(f),
                        _ => None,
                    })
                })
                .and_then(|f| match theirs.resolve_chained_type(&f).ok()? {
                    btf_rs::Type::FuncProto(p) => Some(p.parameters.len()),
                    _ => None,
                });
            assert_eq!(lsm_hook_params(&ours, hook), expected, "{hook}");
        }
    }
}
