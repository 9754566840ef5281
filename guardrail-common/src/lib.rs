//! Records shared by the probes (`guardrail-ebpf`) and the agent.
//!
//! Every record the probes submit to the ring buffer starts with an
//! [`EventHeader`] followed by `data_len` bytes of string data. The layout is
//! `#[repr(C)]` and versioned by [`ABI_VERSION`] so that the agent refuses an
//! object built from different sources instead of misreading it.
#![cfg_attr(not(feature = "user"), no_std)]

pub mod enforce;
pub mod syscalls;

/// Bumped whenever a record layout changes.
pub const ABI_VERSION: u32 = 3;

/// Largest path the probes copy (the kernel's PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// Bytes of argv the probes copy for one exec (NUL-separated arguments).
pub const ARGV_MAX: usize = 4096;

/// Size of the per-CPU buffer a record is built in. String reads land at
/// offsets masked with [`DATA_OFFSET_MASK`] and copy at most [`PATH_MAX`]
/// bytes, so the buffer is large enough for any masked offset plus one read;
/// that is the bound the verifier needs.
pub const DATA_OFFSET_MASK: usize = 16384 - 1;
pub const SCRATCH_DATA_SIZE: usize = DATA_OFFSET_MASK + 1 + PATH_MAX;

/// What a record describes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A syscall guardrail watches finished (or, for a successful exec, the
    /// new image started); `syscall` says which.
    Syscall = 1,
    /// A process forked: `pid` is the child, `ppid` the parent, `args[0]`
    /// the child's start time (`start_boottime`, ns since boot; 0 when
    /// unknown).
    Fork = 2,
    /// A process (thread group) exited.
    Exit = 3,
    /// A process set up an io_uring instance (`io_uring:io_uring_create`):
    /// `args[0]` the ring's fd, `args[1]` its setup flags, `args[2]` its
    /// submission queue entries.
    UringSetup = 4,
}

/// Bits of [`EventHeader::flags`].
pub mod flags {
    /// The first string was cut at [`super::PATH_MAX`] (or could not be read).
    pub const STR0_TRUNCATED: u32 = 1 << 0;
    /// The second string (second path, or argv) was cut.
    pub const STR1_TRUNCATED: u32 = 1 << 1;
    /// argv could not be read (no BTF offsets, or the new image's
    /// argument area was unreadable).
    pub const ARGV_UNREADABLE: u32 = 1 << 2;
    /// The first string could not be read from user memory at all.
    pub const STR0_UNREADABLE: u32 = 1 << 3;
    /// The second string could not be read from user memory at all.
    pub const STR1_UNREADABLE: u32 = 1 << 4;
    /// Credential fields read through BTF offsets are valid.
    pub const TASK_FIELDS: u32 = 1 << 5;
    /// String 2 is not a directory but the path of the object the call
    /// acted on, walked in the kernel from the fd the call returned (a
    /// successful open): `.`, `..`, `//`, symlinks and mounts resolved as
    /// the kernel resolved them.
    pub const OBJECT0_WALKED: u32 = 1 << 6;
    /// `obj_dev`/`obj_ino` name the object the call acted on.
    pub const OBJECT_ID: u32 = 1 << 7;
    /// String `slot` is a path the probes walked in the kernel and the walk
    /// did not reach the root (too deep, or unreadable): it must not be
    /// used as if it were absolute.
    pub const fn walk_incomplete(slot: usize) -> u32 {
        1 << (8 + slot)
    }
    /// The process's root is not the root of its mount tree (it runs in
    /// a chroot): its absolute paths are relative to that directory, and
    /// string 2 (string 3) of an absolute first (second) path holds the
    /// root, walked in the kernel from the host's root.
    pub const ROOT_CHANGED: u32 = 1 << 12;
}

/// Fixed part of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u32,
    /// x86_64 syscall number (see [`syscalls`]) for `Syscall` records.
    pub syscall: u32,
    pub flags: u32,
    /// Bytes of string data after the header: the strings back to back,
    /// `str_len[0]` bytes of the first, then the second, third, fourth.
    /// 0: first path (exec: the program; fchmod/fchown/ftruncate: the fd's
    ///    path, resolved in the kernel).
    /// 1: second path, or for exec the new image's argument area
    ///    (arguments separated and terminated by NUL).
    /// 2: the directory a relative first path is relative to (its dirfd or
    ///    the cwd), resolved in the kernel; for exec, the cwd; for a
    ///    successful open, the opened file's own path ([`flags::OBJECT0_WALKED`]).
    /// 3: the same for a relative second path; for exec, the executable the
    ///    kernel mapped (`mm->exe_file`: symlinks resolved, the interpreter
    ///    for scripts).
    pub data_len: u32,
    /// `bpf_ktime_get_ns` when the syscall entered.
    pub enter_ns: u64,
    /// `bpf_ktime_get_ns` when the record was written (syscall exit).
    pub exit_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// Login uid (`u32::MAX` when unset).
    pub auid: u32,
    pub cgroup_id: u64,
    /// Syscall return value: >= 0 success, negative errno.
    pub ret: i64,
    /// Raw syscall arguments as the syscall received them. Pointers are
    /// meaningless to userspace but kept so decoding needs no per-syscall
    /// layout on the kernel side. Two syscalls get values the agent could
    /// not read itself: openat2 has `open_how.flags`/`.mode` in args[2]/[3];
    /// capset has the new effective, permitted and inheritable sets in
    /// args[2..5] and the old effective set in args[5].
    pub args: [u64; 6],
    /// Credentials before the syscall (uid, gid, euid, egid), for the
    /// setuid family, where the record's own fields hold the result.
    pub old_ids: [u32; 4],
    pub str_len: [u32; 4],
    /// What the LSM programs did to this syscall (kernel rule index + 1,
    /// or 0), the action and the rule generation.
    pub verdict_rule: u32,
    pub verdict_action: u32,
    pub verdict_generation: u32,
    /// The device (kernel `s_dev`: MAJOR << 20 | MINOR) and inode of the
    /// object the call acted on, when the probes read them from the
    /// kernel object ([`flags::OBJECT_ID`]).
    pub obj_dev: u32,
    pub obj_ino: u64,
    pub comm: [u8; 16],
}

pub const HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();

/// Per-CPU counters in the `COUNTERS` map, indexed by these constants.
pub mod counter {
    /// Records that did not fit in the ring buffer.
    pub const RINGBUF_DROPS: u32 = 0;
    /// Syscalls whose arguments could not be parked between enter and exit
    /// (the in-flight map was full); their records are lost.
    pub const PENDING_DROPS: u32 = 1;
    /// Records submitted.
    pub const SUBMITTED: u32 = 2;
    /// Fork and exit records that did not fit in the ring buffer: not
    /// events, so not in the loss events, but the process table falls back
    /// to /proc for what they would have said.
    pub const LIFECYCLE_DROPS: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Arguments parked at syscall entry until the syscall exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingSyscall {
    pub syscall: u32,
    pub _pad: u32,
    pub enter_ns: u64,
    pub args: [u64; 6],
    pub old_ids: [u32; 4],
}

/// Field offsets into kernel structures, resolved by the agent from the
/// running kernel's BTF and handed to the probes as a global. A zero
/// `task_cred` means "unknown": the probes then leave the fields out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_loginuid: u32,
    pub task_cred: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    /// `kernel_cap_t` is `u32[2]` before 6.3 and `u64` after: the same
    /// eight bytes on little-endian, so one read serves both.
    pub cred_cap_effective: u32,
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    // Walking a `struct path` to a string (cwd, dirfd, fd).
    pub task_fs: u32,
    pub fs_pwd: u32,
    /// `fs_struct.root`: the process's root (a chroot's directory).
    pub fs_root: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_f_path: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub qstr_len: u32,
    pub qstr_name: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub mm_exe_file: u32,
    // Identifying objects for enforcement.
    pub dentry_inode: u32,
    pub dentry_sb: u32,
    pub inode_ino: u32,
    pub sb_dev: u32,
    pub file_f_mode: u32,
    pub bprm_file: u32,
    pub cred_uid: u32,
    pub iattr_valid: u32,
    /// `task_struct.start_boottime` (ns since boot): with the pid, a
    /// process's boot-unique identity (0: unknown).
    pub task_start_boottime: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::PendingSyscall {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::enforce::KernelRule {}
    unsafe impl aya::Pod for super::enforce::InodeKey {}
    unsafe impl aya::Pod for super::enforce::InodeRules {}
    unsafe impl aya::Pod for super::enforce::ExeKey {}
    unsafe impl aya::Pod for super::enforce::Verdict {}
}
