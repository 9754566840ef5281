//! Records shared by the probes (`guardrail-ebpf`) and the agent.
//!
//! Every record the probes submit to the ring buffer starts with an
//! [`EventHeader`] followed by `data_len` bytes of string data. The layout is
//! `#[repr(C)]`. The agent embeds the probes it was built with, so the only
//! records of another layout it could meet are those of pinned state an
//! agent of another build left behind: that state lives under
//! `abi-<ABI_VERSION>`, and an agent adopts it only when its
//! [`pinned::layout_mark`] (the ABI and the size of every shared record)
//! matches its own; state of any other layout is never adopted.
#![cfg_attr(not(feature = "user"), no_std)]

pub mod catalogue;
pub mod enforce;
pub mod kfunc;
pub mod lineage;
pub mod syscalls;
pub mod watch;

/// Bumped whenever a record layout changes.
pub const ABI_VERSION: u32 = 5;

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

/// String bytes an io_uring request's record may hold to be parked in the
/// small table (`URING_PARKED`) until it completes; longer ones take a
/// whole record's room (`URING_PENDING`). Most paths are far shorter, and
/// parking costs an allocation and a copy of the whole entry.
pub const URING_PARKED_DATA: usize = 1024;

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
    /// A process registered files, buffers or other resources with a ring
    /// (`io_uring:io_uring_register`): `args[0]` the register opcode,
    /// `args[1]` and `args[2]` the files and buffers registered with the
    /// ring after the call; `ret` its result.
    UringRegister = 5,
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
    /// The operation was submitted through io_uring, not made as a
    /// syscall: `syscall` names the syscall that does the same, the
    /// arguments are laid out as that syscall's, and the paths were copied
    /// from the kernel's own copy (`struct filename`) of the request.
    pub const VIA_IO_URING: u32 = 1 << 12;
    /// The process's root is not the root of its mount tree (it runs in
    /// a chroot): its absolute paths are relative to that directory, and
    /// string 2 (string 3) of an absolute first (second) path holds the
    /// root, walked in the kernel from the host's root.
    pub const ROOT_CHANGED: u32 = 1 << 13;
    /// With [`ROOT_CHANGED`]: string 3 holds the process's root (walked
    /// from the host's root), for an absolute second path or a relative
    /// first one; a relative second path is then relative to the same
    /// directory as the first (string 2).
    pub const ROOT_IN_STR3: u32 = 1 << 14;
    /// An exec record's arguments carry the process's login session and
    /// controlling terminal (see `syscalls::exec_args`).
    pub const EXEC_TERMINAL: u32 = 1 << 15;
    /// A read-only open of a file in the read watch set, recorded when
    /// the call returned (its entry was dropped as a plain read): the
    /// arguments are not known, only the fd it returned, so string 2 holds
    /// the object walked from that fd and string 0 is empty.
    pub const WATCHED_READ: u32 = 1 << 16;
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
    /// [`pending_flags`].
    pub flags: u32,
    pub enter_ns: u64,
    pub args: [u64; 6],
    pub old_ids: [u32; 4],
}

/// [`PendingSyscall::flags`].
pub mod pending_flags {
    /// Not parked: read at the call's exit, which had no entry program
    /// (see [`crate::syscalls::parked_at_entry`]); `enter_ns` only says
    /// which verdict the record may take.
    pub const UNPARKED: u32 = 1;
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
    /// `file.f_inode`: the inode, one read instead of two through the
    /// path's dentry.
    pub file_f_inode: u32,
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
    /// `inode.i_sb`: the device of a file reached by its inode.
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub file_f_mode: u32,
    pub bprm_file: u32,
    pub cred_uid: u32,
    pub iattr_valid: u32,
    /// `task_struct.start_boottime` (ns since boot): with the pid, a
    /// process's boot-unique identity (0: unknown).
    pub task_start_boottime: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns`, and the offset of
    /// `ns.inum` in `mnt_namespace`: which mount namespace a task is in.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `bpf_map.id`: which map a task asks a file descriptor for.
    pub bpf_map_id: u32,
    /// `task_struct.group_leader`: whose start a process's lineage mark
    /// is checked against.
    pub task_group_leader: u32,
    /// `task_struct.sessionid`: the login session (audit) id, 0 without
    /// CONFIG_AUDIT.
    pub task_sessionid: u32,
    /// `task_struct.signal`, `signal_struct.tty`, `tty_struct.index` and
    /// `.driver`, `tty_driver.major` and `.minor_start`: the controlling
    /// terminal's device number.
    pub task_signal: u32,
    pub signal_tty: u32,
    pub tty_index: u32,
    pub tty_driver: u32,
    pub driver_major: u32,
    pub driver_minor_start: u32,
    /// For the raw syscall probes (see `raw_syscalls` in the probes):
    /// where the task's saved registers (`struct pt_regs`) keep the six
    /// syscall arguments (x86-64: di, si, dx, r10, r8, r9) and the
    /// syscall number (`orig_ax`), and where `thread_info.status` (whose
    /// TS_COMPAT bit marks a 32-bit syscall) sits in `task_struct`.
    /// All zero: unknown, and the raw probes are not used.
    pub regs_args: [u32; 6],
    pub regs_orig_ax: u32,
    pub task_ti_status: u32,
    /// `linux_binprm.filename`: the program an exec runs, as the kernel
    /// resolved it.
    pub bprm_filename: u32,
}

/// Where the probes find an io_uring request's prepared command and the
/// fields they read from it, resolved by the agent from the running
/// kernel's BTF (struct io_kiocb and the per-op command structs of
/// io_uring/openclose.c, fs.c, truncate.c). A zero `present` means the
/// kernel lacks what is needed: the probes are then not attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringOffsets {
    /// Bit per op the probes can read (`1 << IORING_OP_*`).
    pub present: u64,
    /// `io_kiocb.cmd`: where the op's prepared command lives.
    pub req_cmd: u32,
    /// Offsets in the tracepoint records (from their format files):
    /// `io_uring_submit_req` (`io_uring_submit_sqe` before 6.3) `req` and
    /// `opcode`; `io_uring_complete` `req` and `res`.
    pub tp_submit_req: u32,
    pub tp_submit_opcode: u32,
    pub tp_complete_req: u32,
    pub tp_complete_res: u32,
    /// struct filename.name (the kernel's copy of the path).
    pub filename_name: u32,
    /// struct io_open.
    pub open_dfd: u32,
    pub open_filename: u32,
    pub open_how: u32,
    pub open_file_slot: u32,
    /// struct io_rename.
    pub rename_old_dfd: u32,
    pub rename_new_dfd: u32,
    pub rename_oldpath: u32,
    pub rename_newpath: u32,
    pub rename_flags: u32,
    /// struct io_unlink.
    pub unlink_dfd: u32,
    pub unlink_flags: u32,
    pub unlink_filename: u32,
    /// struct io_link (struct io_hardlink where linkat has its own).
    pub link_old_dfd: u32,
    pub link_new_dfd: u32,
    pub link_oldpath: u32,
    pub link_newpath: u32,
    pub link_flags: u32,
    /// `io_kiocb.flags` and `io_kiocb.cqe.fd` (the fd the request names
    /// until it is issued).
    pub req_flags: u32,
    pub req_cqe_fd: u32,
    /// struct io_ftrunc (6.9+).
    pub ftrunc_len: u32,
    /// Finding the request an io-wq worker is performing, so that an LSM
    /// verdict there is filed under the request (its completion may be
    /// posted by another thread): `task_struct.flags` (PF_IO_WORKER),
    /// `task_struct.worker_private` (`pf_io_worker` before 6.0),
    /// `io_worker.cur_work`, `io_kiocb.work`. Zero `task_flags`: unknown.
    pub task_flags: u32,
    pub task_worker_private: u32,
    pub worker_cur_work: u32,
    pub req_work: u32,
    /// struct io_mkdir (5.15+).
    pub mkdir_dfd: u32,
    pub mkdir_mode: u32,
    pub mkdir_filename: u32,
    /// struct io_xattr (5.19+): its `filename` (setxattr) and, in its
    /// `ctx` (`struct xattr_ctx`, `kernel_xattr_ctx` from 6.13), the
    /// kernel's copies of the name (`kname`, a `struct xattr_name`) and
    /// value (`kvalue`), the value's `size` and the call's `flags`.
    pub xattr_filename: u32,
    pub xattr_flags: u32,
    pub xattr_kname: u32,
    pub xattr_kvalue: u32,
    pub xattr_size: u32,
    pub xattr_name_name: u32,
    /// struct io_symlink (linkat's own struct io_hardlink has the
    /// `link_*` fields) where the kernel has them apart (the io_uring of
    /// Linux 5.15 as carried by 5.10's stable kernels); struct io_link's
    /// fields otherwise.
    pub symlink_new_dfd: u32,
    pub symlink_oldpath: u32,
    pub symlink_newpath: u32,
    /// Where the completion tracepoint carries no request (the io_uring
    /// of 5.15, as in 5.10's stable kernels): a request is matched to its
    /// completion by its ring and `user_data` instead, from these offsets
    /// in the submission and completion records. Zero
    /// `complete_by_user_data`: by request.
    pub complete_by_user_data: u32,
    pub tp_submit_ctx: u32,
    pub tp_submit_user_data: u32,
    pub tp_complete_ctx: u32,
    pub tp_complete_user_data: u32,
    pub _pad: u32,
}

/// io_uring opcodes (UAPI `IORING_OP_*`, stable numbers) of the file
/// operations guardrail reports.
pub mod uring_op {
    pub const OPENAT: u32 = 18;
    pub const OPENAT2: u32 = 28;
    pub const RENAMEAT: u32 = 35;
    pub const UNLINKAT: u32 = 36;
    pub const MKDIRAT: u32 = 37;
    pub const SYMLINKAT: u32 = 38;
    pub const LINKAT: u32 = 39;
    pub const FSETXATTR: u32 = 41;
    pub const SETXATTR: u32 = 42;
    pub const FTRUNCATE: u32 = 55;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::UringOffsets {}
    unsafe impl aya::Pod for super::PendingSyscall {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::enforce::KernelRule {}
    unsafe impl aya::Pod for super::enforce::InodeKey {}
    unsafe impl aya::Pod for super::enforce::InodeRules {}
    unsafe impl aya::Pod for super::enforce::ExeKey {}
    unsafe impl aya::Pod for super::enforce::Verdict {}
    unsafe impl aya::Pod for super::lineage::ProgramKey {}
    unsafe impl aya::Pod for super::lineage::LineageMark {}
    unsafe impl aya::Pod for super::watch::Refused {}
}

/// Kernel state that outlives an agent (issue: continuity): the maps the
/// agent pins under its state directory, and the slots of `AGENT_STATE`,
/// the map in which one agent leaves what the next one needs to adopt.
pub mod pinned {
    /// Maps that carry state across agents: the ring buffer and its
    /// counters, the syscalls in flight (shared, so that old and new
    /// programs attached side by side during a hand-over emit one record
    /// per syscall), and the enforcement maps. Scratch maps stay private
    /// to each load.
    pub const MAPS: &[&str] = &[
        "EVENTS",
        "PENDING",
        "COUNTERS",
        "KRULES",
        "ENFORCE_STATE",
        "INODE_RULES",
        "EXE_RULES",
        "VERDICTS",
        "AGENT_STATE",
        "RULE_NAMES",
        // io_uring requests between submission and completion: shared, so
        // that one submitted under the old programs completes under the new.
        // Short records in the first, long ones in the second.
        "URING_PARKED",
        "URING_PENDING",
        // guardrail's maps that other programs may open read-only only.
        "OWN_MAPS",
        // Lineage marks and what they mean: a process keeps its exemption
        // across agent restarts.
        "LINEAGE_PROGRAMS",
        "LINEAGE_MARKS",
        "LINEAGE_EXEMPT",
        "LINEAGE_STATE",
        "LINEAGE_PATHS",
        // Reads the LSM hook refused, until the call's exit reports them
        // (one report, whichever agent's programs take the note).
        "REFUSED",
    ];

    /// `AGENT_STATE[COMPLETE]` holds this once every map and link of the
    /// state directory is pinned; anything else is a half-written state.
    pub const COMPLETE: u32 = 0;
    /// Size of the pinned ring buffer in bytes.
    pub const RING_BYTES: u32 = 1;
    /// Pid of the agent that last owned the state.
    pub const OWNER_PID: u32 = 2;
    /// CLOCK_MONOTONIC ns (the clock of bpf_ktime_get_ns and of the
    /// records) of the owner's last sign of life: refreshed while it runs,
    /// final when it stopped.
    pub const LAST_SEEN_NS: u32 = 3;
    /// Non-zero when the owner stopped cleanly (SIGTERM); zero after a
    /// crash or SIGKILL.
    pub const STOPPED_CLEANLY: u32 = 4;
    /// Kernel loss counters the owner had already reported as `loss`
    /// events (ring buffer, in flight), so that the next agent reports only
    /// what was lost since.
    pub const REPORTED_RINGBUF: u32 = 5;
    pub const REPORTED_INFLIGHT: u32 = 6;
    /// When the state was first pinned (same clock as LAST_SEEN_NS).
    pub const PINNED_AT_NS: u32 = 7;
    /// The instance (the probes' `INSTANCE`, one per load) whose programs
    /// write the records of calls read only at their exit: while an old
    /// and a new agent's programs are attached side by side, one of them
    /// does. (Calls parked at entry are shared through `PENDING`.)
    pub const EMITTER: u32 = 8;
    pub const SLOTS: u32 = 9;

    /// Bytes of a rule id kept in `RULE_NAMES` (NUL-padded).
    pub const RULE_NAME_LEN: usize = 64;

    /// The value of `AGENT_STATE[COMPLETE]` for this build's layout: the
    /// ABI version, the sizes of every pinned key and value, and which
    /// calls are parked at their entry (`syscalls::parked_set`), so that
    /// a state written by a build with other layouts is never adopted.
    pub const fn layout_mark() -> u64 {
        let sizes = [
            core::mem::size_of::<crate::EventHeader>(),
            core::mem::size_of::<crate::PendingSyscall>(),
            core::mem::size_of::<crate::enforce::KernelRule>(),
            core::mem::size_of::<crate::enforce::InodeKey>(),
            core::mem::size_of::<crate::enforce::InodeRules>(),
            core::mem::size_of::<crate::enforce::ExeKey>(),
            core::mem::size_of::<crate::enforce::Verdict>(),
            crate::counter::COUNT as usize,
            crate::SCRATCH_DATA_SIZE,
            crate::URING_PARKED_DATA,
            crate::enforce::ENFORCE_STATE_SLOTS as usize,
            SLOTS as usize,
            RULE_NAME_LEN,
            core::mem::size_of::<crate::lineage::ProgramKey>(),
            core::mem::size_of::<crate::lineage::LineageMark>(),
            crate::lineage::LINEAGE_PATH_LEN,
            crate::lineage::state::SLOTS as usize,
            core::mem::size_of::<crate::watch::Refused>(),
        ];
        let parked = crate::syscalls::parked_set();
        let mut mark: u64 = 0x6775_6172_6400_0000 | crate::ABI_VERSION as u64;
        let mut i = 0;
        while i < sizes.len() {
            // FNV-1a over the sizes, folded into the low bits next to the ABI.
            mark = (mark ^ sizes[i] as u64).wrapping_mul(0x100_0000_01b3);
            i += 1;
        }
        mark = (mark ^ parked).wrapping_mul(0x100_0000_01b3);
        mark | 1
    }
}
