//! The operation catalogue: every operation guardrail captures and decides,
//! once, with the rule kind that names it (`on = ["perm.chmod"]`), the
//! syscalls that perform it (their `syscalls:` tracepoint names, see
//! [`crate::syscalls::WATCHED`]), the kernel's operation bits that kill and
//! deny rules of that kind cover ([`crate::enforce::op`]), and whether a
//! `revert` fallback can undo it; and every BPF-LSM hook, with the programs
//! attached to it and the operation bits it decides.
//!
//! Both sides read it: the agent compiles rules and attaches programs from
//! it; the probes' programs are named here (`grep path_chmod` finds this
//! table, the program in guardrail-ebpf/src/enforce/hooks.rs, and the
//! loader). A test in the engine holds the table against the probes'
//! source, so neither can change without the other.

use crate::enforce::op;

/// One operation, as rules name it.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// The rule kind (`on = [...]`). Its position in [`OPERATIONS`] is its
    /// bit in a rule's kind mask.
    pub kind: &'static str,
    /// The watched syscalls that can perform it. Empty for what is not a
    /// syscall of its own (io_uring set-up and registration are reported
    /// by the `io_uring:` tracepoints).
    pub syscalls: &'static [&'static str],
    /// The kernel's operation bits a kill or deny rule of this kind covers
    /// (0: decided in userspace only).
    pub ops: u32,
    /// A deny rule's `fallback = "revert"` can undo it (mode and owner).
    pub revertable: bool,
}

const OPENS: &[&str] = &["open", "creat", "openat", "openat2"];

/// Every operation. New kinds go last: a kind's bit is its position.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        kind: "exec",
        syscalls: &["execve", "execveat"],
        ops: op::EXEC,
        revertable: false,
    },
    Operation {
        kind: "file.open",
        syscalls: OPENS,
        ops: op::OPEN_READ | op::OPEN_WRITE,
        revertable: false,
    },
    Operation {
        kind: "file.write",
        syscalls: &[
            "open",
            "creat",
            "openat",
            "openat2",
            "truncate",
            "ftruncate",
        ],
        ops: op::OPEN_WRITE | op::TRUNCATE | op::CREATE,
        revertable: false,
    },
    Operation {
        kind: "file.create",
        syscalls: &["open", "creat", "openat", "openat2", "mkdir", "mkdirat"],
        ops: op::CREATE,
        revertable: false,
    },
    Operation {
        kind: "file.unlink",
        syscalls: &["unlink", "unlinkat"],
        ops: op::UNLINK,
        revertable: false,
    },
    Operation {
        kind: "file.rmdir",
        // unlinkat(AT_REMOVEDIR); rmdir(2) itself is not watched.
        syscalls: &["unlinkat"],
        ops: op::RMDIR,
        revertable: false,
    },
    Operation {
        kind: "file.rename",
        syscalls: &["rename", "renameat", "renameat2"],
        ops: op::RENAME,
        revertable: false,
    },
    Operation {
        kind: "file.truncate",
        syscalls: &["truncate", "ftruncate"],
        ops: op::TRUNCATE,
        revertable: false,
    },
    Operation {
        kind: "file.link",
        syscalls: &["link", "linkat"],
        ops: op::LINK,
        revertable: false,
    },
    Operation {
        kind: "file.symlink",
        syscalls: &["symlink", "symlinkat"],
        ops: op::SYMLINK,
        revertable: false,
    },
    Operation {
        kind: "file.mknod",
        syscalls: &["mknod", "mknodat"],
        ops: op::MKNOD,
        revertable: false,
    },
    Operation {
        kind: "file.mkdir",
        syscalls: &["mkdir", "mkdirat"],
        ops: op::MKDIR,
        revertable: false,
    },
    Operation {
        kind: "file.mount",
        // Refused by the path-integrity hooks below when they would hide a
        // protected path, not by rules of this kind.
        syscalls: &["mount", "umount", "pivot_root", "move_mount"],
        ops: 0,
        revertable: false,
    },
    Operation {
        kind: "perm.chmod",
        syscalls: &["chmod", "fchmod", "fchmodat", "fchmodat2"],
        ops: op::CHMOD,
        revertable: true,
    },
    Operation {
        kind: "perm.chown",
        syscalls: &["chown", "fchown", "lchown", "fchownat"],
        ops: op::CHOWN,
        revertable: true,
    },
    Operation {
        kind: "perm.setuid",
        syscalls: &["setuid", "setreuid", "setresuid", "setfsuid"],
        ops: op::SETUID,
        revertable: false,
    },
    Operation {
        kind: "perm.setgid",
        syscalls: &["setgid", "setregid", "setresgid", "setfsgid"],
        ops: op::SETGID,
        revertable: false,
    },
    Operation {
        kind: "perm.capset",
        syscalls: &["capset"],
        ops: op::CAPSET,
        revertable: false,
    },
    Operation {
        kind: "perm.setxattr",
        syscalls: &["setxattr", "lsetxattr", "fsetxattr"],
        ops: op::SETXATTR,
        revertable: false,
    },
    Operation {
        kind: "uring.setup",
        syscalls: &[],
        ops: 0,
        revertable: false,
    },
    Operation {
        kind: "uring.register",
        syscalls: &[],
        ops: 0,
        revertable: false,
    },
    Operation {
        kind: "file.read",
        // Read-only opens of the files in the read watch set.
        syscalls: &["open", "openat", "openat2"],
        ops: op::OPEN_READ,
        revertable: false,
    },
];

/// The operation a rule kind names.
pub fn operation(kind: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.kind == kind)
}

/// How the agent treats a hook the kernel refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Enforcement is not available without it (or without the hook
    /// that stands in for it, [`Attach::InsteadOf`]).
    Required,
    /// Enforcement goes on without it; the agent warns what is lost.
    Optional { lost: &'static str },
    /// Attached only where the kernel refuses the hook named.
    InsteadOf(&'static str),
}

/// One BPF-LSM hook.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// The LSM hook's name.
    pub lsm: &'static str,
    /// The programs for it in guardrail-ebpf/src/enforce/hooks.rs: one, or
    /// one per prototype the hook has had (oldest first; the agent picks
    /// by the kernel's BTF).
    pub programs: &'static [&'static str],
    /// The operation bits it decides. 0: it guards something else (paths
    /// from being hidden by mounts, or guardrail itself).
    pub decides: u32,
    pub attach: Attach,
}

const fn required(lsm: &'static str, program: &'static [&'static str], decides: u32) -> Hook {
    Hook {
        lsm,
        programs: program,
        decides,
        attach: Attach::Required,
    }
}

/// Every BPF-LSM hook the probes use, in the order the agent attaches them.
///
/// The order matters, though not for correctness: it is the one the VM
/// hand-over checks were proven with. Attaching the path, rename and
/// attribute hooks before the credential and self-protection ones made an
/// agent's start under a loop of denied writes (5.10, QEMU/TCG) take over
/// 300 s instead of 130 s; why is not understood yet.
pub const HOOKS: &[Hook] = &[
    required(
        "file_open",
        &["guardrail_file_open"],
        op::OPEN_READ | op::OPEN_WRITE,
    ),
    required("bprm_check_security", &["guardrail_bprm_check"], op::EXEC),
    required("path_unlink", &["guardrail_path_unlink"], op::UNLINK),
    required("path_rmdir", &["guardrail_path_rmdir"], op::RMDIR),
    required(
        "path_mknod",
        &["guardrail_path_mknod"],
        op::CREATE | op::MKNOD,
    ),
    required(
        "path_mkdir",
        &["guardrail_path_mkdir"],
        op::MKDIR | op::CREATE,
    ),
    required(
        "path_symlink",
        &["guardrail_path_symlink"],
        op::SYMLINK | op::CREATE,
    ),
    required("path_link", &["guardrail_path_link"], op::LINK | op::CREATE),
    required("path_truncate", &["guardrail_path_truncate"], op::TRUNCATE),
    required("path_chmod", &["guardrail_path_chmod"], op::CHMOD),
    required(
        "task_fix_setuid",
        &["guardrail_task_fix_setuid"],
        op::SETUID,
    ),
    required(
        "task_fix_setgid",
        &["guardrail_task_fix_setgid"],
        op::SETGID,
    ),
    required("capset", &["guardrail_capset"], op::CAPSET),
    // Self-protection: guardrail's processes and maps.
    required("task_kill", &["guardrail_task_kill"], 0),
    required("ptrace_access_check", &["guardrail_ptrace_access_check"], 0),
    required("bpf_map", &["guardrail_bpf_map"], 0),
    // 4 arguments before 5.19, then 5 (`flags`).
    required(
        "path_rename",
        &["guardrail_path_rename4", "guardrail_path_rename5"],
        op::RENAME,
    ),
    // Path integrity: no mount over, or unmount of, what the rules protect.
    required("sb_mount", &["guardrail_sb_mount"], 0),
    required("sb_pivotroot", &["guardrail_sb_pivotroot"], 0),
    // A hook since 5.2 (the new mount API).
    Hook {
        lsm: "move_mount",
        programs: &["guardrail_move_mount"],
        decides: 0,
        attach: Attach::Optional {
            lost: "mounts made with move_mount(2) cannot be refused on this kernel",
        },
    },
    required("sb_umount", &["guardrail_sb_umount"], 0),
    // BPF trampolines cannot take its by-value kuid_t/kgid_t on 5.10:
    // inode_setattr stands in there.
    required("path_chown", &["guardrail_path_chown"], op::CHOWN),
    // 2 arguments before 6.3, then 3 (a leading `idmap`).
    Hook {
        lsm: "inode_setattr",
        programs: &["guardrail_inode_setattr2", "guardrail_inode_setattr3"],
        decides: op::CHOWN,
        attach: Attach::InsteadOf("path_chown"),
    },
    // 5 arguments before 5.12, then 6 (`mnt_userns`, later `idmap`).
    Hook {
        lsm: "inode_setxattr",
        programs: &["guardrail_inode_setxattr5", "guardrail_inode_setxattr6"],
        decides: op::SETXATTR,
        attach: Attach::Optional {
            lost: "extended attributes (file capabilities) cannot be refused on this kernel",
        },
    },
];
