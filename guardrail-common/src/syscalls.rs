//! The x86_64 syscalls guardrail watches, and where their string arguments are.
//!
//! Both sides use this table: the probes to know which arguments are user
//! strings to copy, the agent to name and decode records.

pub const OPEN: u32 = 2;
pub const TRUNCATE: u32 = 76;
pub const FTRUNCATE: u32 = 77;
pub const RENAME: u32 = 82;
pub const CREAT: u32 = 85;
pub const MKDIR: u32 = 83;
pub const LINK: u32 = 86;
pub const UNLINK: u32 = 87;
pub const SYMLINK: u32 = 88;
pub const CHMOD: u32 = 90;
pub const FCHMOD: u32 = 91;
pub const CHOWN: u32 = 92;
pub const FCHOWN: u32 = 93;
pub const LCHOWN: u32 = 94;
pub const EXECVE: u32 = 59;
pub const SETUID: u32 = 105;
pub const SETXATTR: u32 = 188;
pub const LSETXATTR: u32 = 189;
pub const FSETXATTR: u32 = 190;
pub const SETGID: u32 = 106;
pub const SETREUID: u32 = 113;
pub const SETREGID: u32 = 114;
pub const SETRESUID: u32 = 117;
pub const SETRESGID: u32 = 119;
pub const SETFSUID: u32 = 122;
pub const SETFSGID: u32 = 123;
pub const CAPSET: u32 = 126;
pub const MKNOD: u32 = 133;
pub const OPENAT: u32 = 257;
pub const MKDIRAT: u32 = 258;
pub const MKNODAT: u32 = 259;
pub const FCHOWNAT: u32 = 260;
pub const UNLINKAT: u32 = 263;
pub const RENAMEAT: u32 = 264;
pub const LINKAT: u32 = 265;
pub const SYMLINKAT: u32 = 266;
pub const FCHMODAT: u32 = 268;
pub const RENAMEAT2: u32 = 316;
pub const EXECVEAT: u32 = 322;
pub const OPENAT2: u32 = 437;
pub const FCHMODAT2: u32 = 452;
pub const PIVOT_ROOT: u32 = 155;
pub const MOUNT: u32 = 165;
pub const UMOUNT2: u32 = 166;
pub const MOVE_MOUNT: u32 = 429;

/// Where a syscall's interesting arguments live. Argument indexes are
/// 0-based; `NONE` means "not present".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgLayout {
    /// First path (user string).
    pub path0: u8,
    /// Second path (user string): rename/link target, symlink's link path.
    pub path1: u8,
    /// Directory fd that `path0` is relative to.
    pub dirfd0: u8,
    /// Directory fd that `path1` is relative to.
    pub dirfd1: u8,
    /// argv (user array of user strings).
    pub argv: u8,
}

pub const NONE: u8 = u8::MAX;

const fn layout(path0: u8, path1: u8, dirfd0: u8, dirfd1: u8, argv: u8) -> ArgLayout {
    ArgLayout {
        path0,
        path1,
        dirfd0,
        dirfd1,
        argv,
    }
}

/// The argument layout of a watched syscall, `None` for any other number.
pub const fn arg_layout(nr: u32) -> Option<ArgLayout> {
    match nr {
        // mount(source, target, …): the target is what changes meaning.
        MOUNT => Some(layout(1, 0, NONE, NONE, NONE)),
        UMOUNT2 => Some(layout(0, NONE, NONE, NONE, NONE)),
        PIVOT_ROOT => Some(layout(0, 1, NONE, NONE, NONE)),
        // move_mount(from_dfd, from, to_dfd, to, flags): the destination first.
        MOVE_MOUNT => Some(layout(3, 1, 2, 0, NONE)),
        _ => path_op_layout(nr),
    }
}

/// The argument layout of a watched call that names files or changes
/// credentials (every watched call but the mount family: the calls
/// io_uring can also carry). Kept apart so that the io_uring probe's code,
/// which 6.1's verifier checks with little room to spare, does not grow
/// with calls it never sees.
pub const fn path_op_layout(nr: u32) -> Option<ArgLayout> {
    Some(match nr {
        OPEN | CREAT | UNLINK | TRUNCATE | CHMOD | CHOWN | LCHOWN | MKNOD | MKDIR | SETXATTR
        | LSETXATTR => layout(0, NONE, NONE, NONE, NONE),
        OPENAT | OPENAT2 | UNLINKAT | FCHMODAT | FCHMODAT2 | FCHOWNAT | MKNODAT | MKDIRAT => {
            layout(1, NONE, 0, NONE, NONE)
        }
        RENAME | LINK => layout(0, 1, NONE, NONE, NONE),
        RENAMEAT | RENAMEAT2 | LINKAT => layout(1, 3, 0, 2, NONE),
        // symlink(target, linkpath): the target is stored verbatim, never resolved.
        SYMLINK => layout(0, 1, NONE, NONE, NONE),
        SYMLINKAT => layout(0, 2, NONE, 1, NONE),
        FTRUNCATE | FCHMOD | FCHOWN | FSETXATTR => layout(NONE, NONE, NONE, NONE, NONE),
        EXECVE => layout(0, NONE, NONE, NONE, 1),
        EXECVEAT => layout(1, NONE, 0, NONE, 2),
        SETUID | SETGID | SETREUID | SETREGID | SETRESUID | SETRESGID | SETFSUID | SETFSGID
        | CAPSET => layout(NONE, NONE, NONE, NONE, NONE),
        _ => return None,
    })
}

/// The setxattr family: string 1 is the attribute's name (argument 1),
/// not a path; for `security.capability` the probes read the file
/// capabilities being set (see [`xattr_caps`]).
pub const fn is_setxattr(nr: u32) -> bool {
    matches!(nr, SETXATTR | LSETXATTR | FSETXATTR)
}

/// Where the probes leave what they read of a setxattr value in the
/// record's arguments (the value's address, and the name's, mean nothing
/// to the agent): `vfs_cap_data.magic_etc` in argument 2, the permitted
/// and inheritable sets (low word | high word << 32) in 5 and 1. The size
/// (argument 3) says how much of it the caller passed.
pub mod xattr_caps {
    pub const MAGIC_ARG: usize = 2;
    pub const PERMITTED_ARG: usize = 5;
    pub const INHERITABLE_ARG: usize = 1;
}

/// Calls that attach, detach or swap mounts: what a path resolves to
/// changes for every process in the mount namespace.
pub const fn is_mount_family(nr: u32) -> bool {
    matches!(nr, MOUNT | UMOUNT2 | PIVOT_ROOT | MOVE_MOUNT)
}

/// What the probes leave in a mount-family record's arguments, which the
/// agent could not read itself: the caller's mount namespace (inode
/// number, 0 when unknown) in argument 5, which no mount-family call
/// uses, and for `mount` the file system type's first 16 bytes (NUL
/// padded) in arguments 2 and 4 instead of the pointers to it and to the
/// options.
pub mod mount_args {
    pub const MNT_NS_ARG: usize = 5;
    pub const FSTYPE_ARGS: [usize; 2] = [2, 4];
    pub const FSTYPE_MAX: usize = 16;
}

/// What the probes leave in an exec record's arguments, in place of the
/// argv and envp pointers (argv is read from the new image): the login
/// session id (`u32::MAX` unset) in argument 2, the controlling terminal's
/// device number (`major << 20 | minor`, 0: none) in argument 3. Flagged
/// by `flags::EXEC_TERMINAL`.
pub mod exec_args {
    pub const SESSION_ARG: usize = 2;
    pub const TTY_ARG: usize = 3;
}

/// True for the exec family, whose records are completed when the new
/// image starts rather than when the syscall returns.
pub const fn is_exec(nr: u32) -> bool {
    matches!(nr, EXECVE | EXECVEAT)
}

/// True for syscalls that change credentials; the probes keep the ids from
/// before the call so that the record shows old and new.
pub const fn is_cred_change(nr: u32) -> bool {
    matches!(
        nr,
        SETUID
            | SETGID
            | SETREUID
            | SETREGID
            | SETRESUID
            | SETRESGID
            | SETFSUID
            | SETFSGID
            | CAPSET
    )
}

/// Open-family syscalls, whose flags decide whether the open writes.
pub const fn open_flags_arg(nr: u32) -> Option<u8> {
    match nr {
        OPEN => Some(1),
        OPENAT | OPENAT2 => Some(2),
        _ => None,
    }
}

/// Calls whose record needs something that is gone by their exit, which
/// the probes park at their entry: the exec family (its arguments are
/// gone once the new image runs), credential changes (the ids from before
/// the call) and the mount family (the caller's mount namespace and the
/// file system type, as they were). Every other watched call's arguments
/// are still in the task's saved registers when it exits: where the
/// probes can read those (per-syscall tracepoints and `bpf_task_pt_regs`,
/// 5.15+), such a call runs no entry program at all, and an open is
/// dropped on its flags at its exit. (Without them every call is parked,
/// and a read-only open is dropped at its entry.)
pub const fn parked_at_entry(nr: u32) -> bool {
    is_exec(nr) || is_cred_change(nr) || is_mount_family(nr)
}

/// Which watched calls [`parked_at_entry`] names, as a bit per entry of
/// [`WATCHED`]: part of the pinned state's layout (see
/// `pinned::layout_mark`). Old and new agents' programs share the table
/// of parked calls during a hand-over, which works only while both park
/// the same calls: otherwise one exit records a call from its parked
/// entry and the other from the saved registers, and the call is
/// recorded twice.
pub const fn parked_set() -> u64 {
    let mut set = 0u64;
    let mut i = 0;
    while i < WATCHED.len() {
        if parked_at_entry(WATCHED[i].0) {
            set |= 1 << i;
        }
        i += 1;
    }
    set
}

/// Calls that return an fd for the file they named: the probes walk that
/// fd's path, the kernel's own answer to what the path meant.
pub const fn returns_opened_fd(nr: u32) -> bool {
    matches!(nr, OPEN | CREAT | OPENAT | OPENAT2)
}

/// Every watched syscall, with the tracepoint name suffix (`sys_enter_<name>`).
/// `fchmodat2` exists only from Linux 6.6: the agent attaches what the
/// running kernel has and reports what it skipped.
pub const WATCHED: &[(u32, &str)] = &[
    (OPEN, "open"),
    (CREAT, "creat"),
    (OPENAT, "openat"),
    (OPENAT2, "openat2"),
    (UNLINK, "unlink"),
    (UNLINKAT, "unlinkat"),
    (RENAME, "rename"),
    (RENAMEAT, "renameat"),
    (RENAMEAT2, "renameat2"),
    (TRUNCATE, "truncate"),
    (FTRUNCATE, "ftruncate"),
    (LINK, "link"),
    (LINKAT, "linkat"),
    (SYMLINK, "symlink"),
    (SYMLINKAT, "symlinkat"),
    (MKNOD, "mknod"),
    (MKNODAT, "mknodat"),
    (MKDIR, "mkdir"),
    (MKDIRAT, "mkdirat"),
    (SETXATTR, "setxattr"),
    (LSETXATTR, "lsetxattr"),
    (FSETXATTR, "fsetxattr"),
    (CHMOD, "chmod"),
    (FCHMOD, "fchmod"),
    (FCHMODAT, "fchmodat"),
    (FCHMODAT2, "fchmodat2"),
    (CHOWN, "chown"),
    (FCHOWN, "fchown"),
    (LCHOWN, "lchown"),
    (FCHOWNAT, "fchownat"),
    (SETUID, "setuid"),
    (SETGID, "setgid"),
    (SETREUID, "setreuid"),
    (SETREGID, "setregid"),
    (SETRESUID, "setresuid"),
    (SETRESGID, "setresgid"),
    (SETFSUID, "setfsuid"),
    (SETFSGID, "setfsgid"),
    (CAPSET, "capset"),
    (MOUNT, "mount"),
    (UMOUNT2, "umount"),
    (PIVOT_ROOT, "pivot_root"),
    (MOVE_MOUNT, "move_mount"),
    (EXECVE, "execve"),
    (EXECVEAT, "execveat"),
];

/// The name of a watched syscall.
pub fn name(nr: u32) -> Option<&'static str> {
    WATCHED.iter().find(|(n, _)| *n == nr).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The set fits its word, and says which calls are parked.
    #[test]
    fn the_parked_set_names_the_parked_calls() {
        assert!(WATCHED.len() <= 64);
        let set = parked_set();
        for (i, (nr, name)) in WATCHED.iter().enumerate() {
            assert_eq!(set >> i & 1 == 1, parked_at_entry(*nr), "{name}");
        }
    }

    /// What a call parks at its entry is what its exit can no longer
    /// read; the calls that open or name files or change modes and owners
    /// are read whole at their exit.
    #[test]
    fn only_calls_that_need_their_entry_are_parked() {
        let parked = WATCHED
            .iter()
            .filter(|(nr, _)| parked_at_entry(*nr))
            .map(|(_, name)| *name);
        assert!(parked.eq([
            "setuid",
            "setgid",
            "setreuid",
            "setregid",
            "setresuid",
            "setresgid",
            "setfsuid",
            "setfsgid",
            "capset",
            "mount",
            "umount",
            "pivot_root",
            "move_mount",
            "execve",
            "execveat"
        ]));
    }
}
