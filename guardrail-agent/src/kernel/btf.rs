//! Field offsets of kernel structures, read from the running kernel's BTF.
//!
//! The probes read a handful of `task_struct` and `cred` fields. Their
//! offsets differ between kernel builds (5.10, 6.1 and 6.18 all differ), so
//! they are looked up here at load time instead of compiled in.

use std::path::Path;

use btf_rs::{Btf, Type};
use guardrail_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Read the BTF file at `path` (the kernel's: [`VMLINUX`]). Parsing it
/// takes a noticeable share of start-up (seconds on an emulated CPU) and
/// tens of MiB for a moment: read it once and ask it everything.
pub fn read(path: &Path) -> Result<Btf, BtfError> {
    Btf::from_file(path).map_err(|source| BtfError::Read {
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
    let mut t = btf
        .resolve_types_by_name(&format!("btf_trace_{tp}"))
        .ok()?
        .into_iter()
        .next()?;
    // typedef → pointer → function prototype (void *__data, args…).
    for _ in 0..3 {
        t = match &t {
            Type::FuncProto(proto) => return proto.parameters.len().checked_sub(1),
            Type::Typedef(x) => btf.resolve_chained_type(x).ok()?,
            Type::Ptr(x) => btf.resolve_chained_type(x).ok()?,
            _ => return None,
        };
    }
    None
}

/// How many parameters the BPF-LSM attach point of `hook` takes (the
/// previous verdict is passed after them). `None` without BPF-LSM.
pub fn lsm_hook_params(btf: &Btf, hook: &str) -> Option<usize> {
    let func = btf
        .resolve_types_by_name(&format!("bpf_lsm_{hook}"))
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Func(f) => Some(f),
            _ => None,
        })?;
    match btf.resolve_chained_type(&func).ok()? {
        Type::FuncProto(proto) => Some(proto.parameters.len()),
        _ => None,
    }
}

/// Byte offset of `member` in struct `strukt`, looking through anonymous
/// nested structs and unions (where `task_struct` keeps many fields).
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt.into()))?;
    let s = types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
    find_member(btf, &s, member, 0).ok_or_else(|| BtfError::NoMember {
        strukt: strukt.into(),
        member: member.into(),
    })
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, wanted: &str, base_bits: u32) -> Option<u32> {
    for m in &s.members {
        let bits = base_bits + m.bit_offset();
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == wanted {
            return Some(bits / 8);
        }
        if name.is_empty() {
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m) {
                if let Some(found) = find_member(btf, &inner, wanted, bits) {
                    return Some(found);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_offsets_of_the_running_kernel() {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            eprintln!("no {VMLINUX}: skipped");
            return;
        }
        let o = resolve_offsets(&read(path).unwrap()).expect("offsets");
        // Fields exist and lie inside the structures, in their declared order.
        assert!(o.task_real_parent > o.task_tgid, "{o:?}");
        assert!(o.cred_egid > o.cred_euid, "{o:?}");
        assert_ne!(o.task_cred, 0);
    }

    #[test]
    fn unknown_member_is_an_error_that_names_it() {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let err = member_offset(&btf, "cred", "no_such_field").unwrap_err();
        assert_eq!(
            err.to_string(),
            "BTF struct cred has no member no_such_field"
        );
    }
}
