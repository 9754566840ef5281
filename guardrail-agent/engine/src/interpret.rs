//! Turning a raw record into an [`Body`]: naming the syscall, decoding
//! flags, modes, ids and capabilities, and making paths absolute.

use guardrail_common::{flags, syscalls as sc, EventHeader};

use crate::canonical::{self, FinalComponent, PathSource};
use crate::decode::RawRecord;
use crate::event::*;

/// What interpretation needs from the live system (procfs in the agent, a
/// table in tests).
pub trait ProcessView {
    /// The directory `dirfd` (or the cwd, for `None`/AT_FDCWD) of `pid`.
    fn dir_of(&mut self, pid: u32, dirfd: Option<i32>) -> Option<String>;
    /// What open fd `fd` of `pid` refers to.
    fn fd_path(&mut self, pid: u32, fd: i32) -> Option<String>;
    /// The executable of `pid`.
    fn exe(&mut self, pid: u32) -> Option<String>;
    /// Learn that `pid` now runs `exe` (after an exec).
    fn exec_happened(&mut self, pid: u32, exe: &str);
    /// The login session and controlling terminal (major, minor) of
    /// `pid` at its exec, as the kernel had them.
    fn terminal_at_exec(&mut self, _pid: u32, _session: Option<u32>, _tty: Option<(u32, u32)>) {}
    /// Learn that the program `pid` just exec'd is the script `script`
    /// (its exe is the interpreter).
    fn script_ran(&mut self, _pid: u32, _script: &str) {}
    /// Learn that `parent` made the new process `child` (which runs the
    /// parent's program until it execs), started `start_ns` after boot (0:
    /// unknown).
    fn forked(&mut self, _parent: u32, _child: u32, _start_ns: u64) {}
    /// Who `pid` is and where it comes from, at most `depth` ancestors.
    fn lineage(&mut self, _pid: u32, _depth: usize) -> Lineage {
        Lineage::default()
    }
    /// Learn that process `pid` ended.
    fn exited(&mut self, _pid: u32) {}
    /// `realpath(3)` of `path` on the live file system; `None` when a
    /// component does not exist (or nothing can be looked at).
    fn realpath(&mut self, _path: &str) -> Option<String> {
        None
    }
    /// [`ProcessView::realpath`] as a process whose root is the directory
    /// `root` (a chroot) resolves `path`.
    fn realpath_in(&mut self, _root: &str, _path: &str) -> Option<String> {
        None
    }
    /// The root directory of `pid` (its chroot), named from the host's
    /// root, while the process lives.
    fn root_of(&mut self, _pid: u32) -> Option<String> {
        None
    }
    /// A directory may have been renamed, removed or re-pointed: forget
    /// what was resolved before.
    fn paths_changed(&mut self) {}
    /// Who and what a process acting as `uid`/`gid` in cgroup `cgroup_id`
    /// is: names and service.
    fn attribution(&mut self, _cgroup_id: u64, _uid: u32, _gid: u32) -> Attribution {
        Attribution::default()
    }
    /// The object `path` names now (stat(2), or lstat(2) unless `follow`).
    fn object_of(&mut self, _path: &str, _follow: bool) -> Option<ObjectId> {
        None
    }
    /// The host's mount namespace (PID 1's), by inode number.
    fn host_mount_namespace(&mut self) -> Option<u64> {
        None
    }
    /// [`Self::realpath`] of directory `dir`, then `name` in it.
    fn realpath_join(&mut self, dir: &str, name: &str) -> Option<String> {
        self.realpath(dir).map(|d| canonical::join_name(&d, name))
    }
}

/// A process's identity and ancestry (see [`Process`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lineage {
    pub id: Option<std::sync::Arc<str>>,
    pub parent_id: Option<std::sync::Arc<str>>,
    pub ancestors: crate::event::Ancestors,
    pub truncated: bool,
    /// The process's login session id and controlling terminal.
    pub session: Option<u32>,
    pub tty: Option<std::sync::Arc<str>>,
}

/// The service, container and names of a process (see [`Process`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attribution {
    pub user: Option<std::sync::Arc<str>>,
    pub group: Option<std::sync::Arc<str>>,
    pub cgroup: Option<std::sync::Arc<str>>,
    pub unit: Option<std::sync::Arc<str>>,
    pub container: Option<crate::attribution::Container>,
}

/// Ancestors listed in each event.
pub const LINEAGE_DEPTH: usize = 8;

/// A [`ProcessView`] as the canonical-path completion's file system.
pub struct LiveFs<'a>(pub &'a mut dyn ProcessView);

impl canonical::Resolve for LiveFs<'_> {
    fn realpath(&mut self, path: &str) -> Option<String> {
        self.0.realpath(path)
    }
    fn realpath_in(&mut self, root: &str, path: &str) -> Option<String> {
        self.0.realpath_in(root, path)
    }
    fn realpath_join(&mut self, dir: &str, name: &str) -> Option<String> {
        self.0.realpath_join(dir, name)
    }
}

pub const AT_FDCWD: i32 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_REMOVEDIR: u64 = 0x200;

/// Bytes to a string, escaping what is not UTF-8 as `\xNN` so nothing is
/// lost or silently replaced, and a backslash as `\\`, so that a valid
/// name spelling `\xff` is not confused with the byte 0xff: one text
/// names one byte string.
pub fn text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if valid.contains('\\') {
            out.push_str(&valid.replace('\\', "\\\\"));
        } else {
            out.push_str(valid);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn comm(h: &EventHeader) -> String {
    let end = h.comm.iter().position(|&b| b == 0).unwrap_or(h.comm.len());
    text(&h.comm[..end])
}

fn as_fd(arg: u64) -> i32 {
    arg as i32
}

/// A path argument made absolute and canonical.
struct Resolved {
    path: String,
    /// The path as the program passed it, when that differs from `path`.
    raw: Option<String>,
    /// False when the path could not be made absolute (the cwd or dirfd
    /// was unreadable because the process was gone).
    resolved: bool,
    source: Option<PathSource>,
}

impl Resolved {
    /// The kernel walked the object itself: its path is the answer.
    fn walked(walked: &[u8], raw: &[u8]) -> Resolved {
        let path = text(walked);
        let raw = text(raw);
        Resolved {
            raw: (raw != path).then_some(raw),
            path,
            resolved: true,
            source: Some(PathSource::Kernel),
        }
    }
}

/// `kernel_dir` is the directory the probes resolved (empty when they could
/// not): for a relative path the directory it is relative to, for an
/// absolute one in a chroot (`chroot`) the process's root. `kernel_root`
/// is the chroot's root the probes walked for a relative path (empty when
/// they did not). /proc is the fallback, which works only while the
/// process lives.
#[allow(clippy::too_many_arguments)]
fn resolve(
    view: &mut dyn ProcessView,
    pid: u32,
    dirfd: Option<i32>,
    raw: &[u8],
    kernel_dir: &[u8],
    kernel_root: &[u8],
    last: FinalComponent,
    chroot: bool,
) -> Resolved {
    let raw_text = text(raw);
    let unresolved = |raw_text: String| Resolved {
        path: raw_text.clone(),
        raw: Some(raw_text),
        resolved: false,
        source: None,
    };
    if raw.first() == Some(&b'/') && chroot {
        // Absolute inside the chroot: completed inside it, named from the
        // host's root; without the root, the path names nothing known.
        let root = if kernel_dir.is_empty() {
            view.root_of(pid)
        } else {
            Some(text(kernel_dir))
        };
        let Some(root) = root.filter(|r| r.starts_with('/')) else {
            return unresolved(raw_text);
        };
        let (path, source) = canonical::complete_in(&root, &raw_text, last, &mut LiveFs(view));
        return Resolved {
            raw: (raw_text != path).then_some(raw_text),
            path,
            resolved: true,
            source: Some(source),
        };
    }
    let absolute = if raw.first() == Some(&b'/') {
        Some(raw_text.clone())
    } else if kernel_dir.is_empty() {
        view.dir_of(pid, dirfd.filter(|&fd| fd != AT_FDCWD))
            .map(|dir| join(&dir, &raw_text))
    } else if chroot {
        // Relative inside a chroot: resolved inside the root, where an
        // absolute symlink on the way starts and `..` stops.
        let dir = text(kernel_dir);
        let root = if kernel_root.is_empty() {
            view.root_of(pid)
        } else {
            Some(text(kernel_root))
        };
        if let Some((root, in_root)) = root.and_then(|r| {
            let inside = inside_root(&r, &dir)?;
            Some((r, inside))
        }) {
            let (path, source) =
                canonical::complete_in(&root, &join(&in_root, &raw_text), last, &mut LiveFs(view));
            return Resolved {
                raw: (raw_text != path).then_some(raw_text),
                path,
                resolved: true,
                source: Some(source),
            };
        }
        // The root unknown, or the directory outside it (a chroot without
        // chdir): the host's file system decides.
        Some(join(&dir, &raw_text))
    } else {
        // The walked directory is canonical: its `..` are its parents by
        // the text, even if it was removed and its path re-created as
        // something else since.
        let (dir, rest) = canonical::climb(&text(kernel_dir), &raw_text);
        Some(join(&dir, rest))
    };
    // /proc/self is the agent's own when the agent resolves it: name the
    // process's instead.
    let absolute = absolute.map(|p| own_proc(&p, pid));
    match absolute.filter(|p| p.starts_with('/')) {
        Some(absolute) => {
            let (path, source) = canonical::complete(&absolute, last, &mut LiveFs(view));
            Resolved {
                raw: (raw_text != path).then_some(raw_text),
                path,
                resolved: true,
                source: Some(source),
            }
        }
        None => unresolved(raw_text),
    }
}

/// `dir` (named from the host's root) named from inside the chroot at
/// `root`; `None` when `dir` is not inside it.
fn inside_root(root: &str, dir: &str) -> Option<String> {
    let root = root.trim_end_matches('/');
    if !dir.starts_with('/') || root.is_empty() {
        return None;
    }
    match dir.strip_prefix(root)? {
        "" | "/" => Some("/".to_string()),
        rest if rest.starts_with('/') => Some(rest.to_string()),
        _ => None,
    }
}

/// `path` with a leading `/proc/self` (and `/proc/thread-self`, as the
/// process's main thread: the record names no other) made
/// `/proc/PID`, which means the same to the process and to the agent.
fn own_proc(path: &str, pid: u32) -> String {
    for (prefix, with) in [
        ("/proc/thread-self", format!("/proc/{pid}/task/{pid}")),
        ("/proc/self", format!("/proc/{pid}")),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{with}{rest}");
            }
        }
    }
    path.to_string()
}

const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const O_NOFOLLOW: u64 = 0o400000;
const UMOUNT_NOFOLLOW: u64 = 8;
const MOVE_MOUNT_T_SYMLINKS: u64 = 0x10;
const MOVE_MOUNT_F_SYMLINKS: u64 = 0x1;
const MS_BIND: u64 = 4096;
const MS_MOVE: u64 = 8192;
const MS_REMOUNT: u64 = 32;

/// mount(2) flags by name (the ones that say what the call does to paths,
/// and the common restrictions).
const MOUNT_FLAGS: [(u64, &str); 12] = [
    (MS_BIND, "bind"),
    (MS_MOVE, "move"),
    (MS_REMOUNT, "remount"),
    (1 << 14, "rec"),
    (1, "rdonly"),
    (2, "nosuid"),
    (4, "nodev"),
    (8, "noexec"),
    (1 << 20, "shared"),
    (1 << 18, "private"),
    (1 << 19, "slave"),
    (1 << 17, "unbindable"),
];

/// umount2(2) flags by name.
const UMOUNT_FLAGS: [(u64, &str); 4] = [
    (1, "force"),
    (2, "detach"),
    (4, "expire"),
    (UMOUNT_NOFOLLOW, "nofollow"),
];

fn flag_names(value: u64, names: &[(u64, &str)]) -> Vec<String> {
    names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The file system type the probes copied into a mount record's
/// arguments (see `syscalls::mount_args`).
fn fstype(a: &[u64; 6]) -> Option<String> {
    let mut bytes = Vec::with_capacity(sc::mount_args::FSTYPE_MAX);
    for i in sc::mount_args::FSTYPE_ARGS {
        bytes.extend_from_slice(&a[i].to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    (end > 0).then(|| text(&bytes[..end]))
}

/// Whether call `nr` acts on what a final symlink in its first path
/// points to, as the kernel does.
fn final_component(nr: u32, a: &[u64; 6]) -> FinalComponent {
    let follows = match nr {
        sc::CHMOD | sc::CHOWN | sc::TRUNCATE | sc::SETXATTR => true,
        sc::EXECVE | sc::EXECVEAT => true,
        sc::FCHMODAT => true,
        sc::FCHMODAT2 => a[3] & AT_SYMLINK_NOFOLLOW == 0,
        sc::FCHOWNAT => a[4] & AT_SYMLINK_NOFOLLOW == 0,
        sc::LINKAT => a[4] & AT_SYMLINK_FOLLOW != 0,
        sc::OPEN => a[1] & O_NOFOLLOW == 0,
        sc::OPENAT | sc::OPENAT2 => a[2] & O_NOFOLLOW == 0,
        sc::CREAT => true,
        // A mount point is looked up following symlinks, as is the new
        // root; umount2 unless UMOUNT_NOFOLLOW; move_mount's destination
        // only with MOVE_MOUNT_T_SYMLINKS.
        sc::MOUNT | sc::PIVOT_ROOT => true,
        sc::UMOUNT2 => a[1] & UMOUNT_NOFOLLOW == 0,
        sc::MOVE_MOUNT => a[4] & MOVE_MOUNT_T_SYMLINKS != 0,
        _ => false,
    };
    if follows {
        FinalComponent::Follow
    } else {
        FinalComponent::Keep
    }
}

fn join(dir: &str, rel: &str) -> String {
    let rel = rel.strip_prefix("./").unwrap_or(rel);
    if rel.is_empty() {
        dir.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

pub fn errno_name(errno: i64) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        31 => "EMLINK",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
        122 => "EDQUOT",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

pub fn open_flags(f: u64) -> Vec<String> {
    let mut v = Vec::new();
    v.push(match f & 3 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    });
    for (bit, name) in [
        (0o100, "create"),
        (0o200, "exclusive"),
        (0o1000, "truncate"),
        (0o2000, "append"),
        (0o200000, "directory"),
        (0o400000, "nofollow"),
        (0o2000000, "cloexec"),
        (0o10000000, "path"),
    ] {
        if f & bit != 0 && !(name == "directory" && f & 0o20000000 != 0) {
            v.push(name);
        }
    }
    // O_TMPFILE is __O_TMPFILE | O_DIRECTORY.
    if f & 0o20000000 != 0 {
        v.push("tmpfile");
    }
    v.into_iter().map(String::from).collect()
}

/// Whether decoded open flags may change the file (what `file.write`
/// rules match).
pub fn is_write_flags(flags: &[String]) -> bool {
    flags.iter().any(|f| {
        matches!(
            f.as_str(),
            "write" | "read_write" | "create" | "truncate" | "append" | "tmpfile"
        )
    })
}

pub fn octal(mode: u64) -> String {
    format!("{:04o}", mode & 0o7777)
}

pub fn mode_bits(mode: u64) -> Vec<String> {
    let mut v = Vec::new();
    for (bit, name) in [
        (0o4000, "setuid"),
        (0o2000, "setgid"),
        (0o1000, "sticky"),
        (0o0002, "world_writable"),
    ] {
        if mode & bit != 0 {
            v.push(name.to_string());
        }
    }
    v
}

pub const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

pub fn cap_names(set: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| set & (1u64 << bit) != 0)
        .map(|bit| match CAP_NAMES.get(bit) {
            Some(name) => format!("cap_{name}"),
            None => format!("cap_{bit}"),
        })
        .collect()
}

/// VFS_CAP_REVISION_{1,2,3} in `vfs_cap_data.magic_etc`, and its
/// effective bit.
const VFS_CAP_REVISION_MASK: u64 = 0xFF00_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u64 = 1;

/// The attribute a setxattr record sets; for `security.capability`, the
/// file capabilities (revision 1 has only the low word of each set).
fn xattr(rec: &RawRecord) -> Xattr {
    use sc::xattr_caps::*;
    let a = rec.header.args;
    let name = text(&rec.str1);
    let size = a[3];
    let magic = a[MAGIC_ARG];
    let revision = magic & VFS_CAP_REVISION_MASK;
    let file_caps = (name == "security.capability"
        && size >= 12
        && (0x0100_0000..=0x0300_0000).contains(&revision))
    .then(|| {
        let words = if revision == 0x0100_0000 || size < 20 {
            0xFFFF_FFFF
        } else {
            u64::MAX
        };
        FileCaps {
            permitted: cap_names(a[PERMITTED_ARG] & words),
            inheritable: cap_names(a[INHERITABLE_ARG] & words),
            effective: magic & VFS_CAP_FLAGS_EFFECTIVE != 0,
        }
    });
    Xattr {
        name,
        size,
        file_caps,
    }
}

fn opt_id(arg: u64) -> Option<u32> {
    let v = arg as u32;
    (v != u32::MAX).then_some(v)
}

fn truncation(h: &EventHeader, names: [&str; 2]) -> Vec<String> {
    let mut v = Vec::new();
    if h.flags & (flags::STR0_TRUNCATED | flags::STR0_UNREADABLE) != 0 {
        v.push(names[0].to_string());
    }
    if h.flags & (flags::STR1_TRUNCATED | flags::STR1_UNREADABLE) != 0 && !names[1].is_empty() {
        v.push(names[1].to_string());
    }
    v
}

/// The process a record is about, as the table knows it now (for this
/// moment: records are handled in the order the kernel wrote them).
fn process_of(h: &EventHeader, view: &mut dyn ProcessView, exe: Option<String>) -> Process {
    let task_fields = h.flags & flags::TASK_FIELDS != 0;
    let ppid = task_fields.then_some(h.ppid);
    let lineage = view.lineage(h.pid, LINEAGE_DEPTH);
    let who = view.attribution(h.cgroup_id, h.uid, h.gid);
    Process {
        user: who.user,
        group: who.group,
        cgroup: who.cgroup,
        unit: who.unit,
        container: who.container,
        id: lineage.id,
        parent_id: lineage.parent_id,
        ancestors: lineage.ancestors,
        ancestors_truncated: lineage.truncated,
        session: lineage.session,
        tty: lineage.tty,
        pid: h.pid,
        tid: h.tid,
        ppid,
        uid: h.uid,
        gid: h.gid,
        euid: h.euid,
        egid: h.egid,
        auid: (task_fields && h.auid != u32::MAX).then_some(h.auid),
        comm: comm(h),
        exe,
        parent_exe: ppid.filter(|&p| p != 0).and_then(|p| view.exe(p)),
        cgroup_id: h.cgroup_id,
    }
}

/// io_uring setup flags (IORING_SETUP_*), bit by bit.
const URING_SETUP_FLAGS: [&str; 17] = [
    "iopoll",
    "sqpoll",
    "sq_aff",
    "cqsize",
    "clamp",
    "attach_wq",
    "r_disabled",
    "submit_all",
    "coop_taskrun",
    "taskrun_flag",
    "sqe128",
    "cqe32",
    "single_issuer",
    "defer_taskrun",
    "no_mmap",
    "registered_fd_only",
    "no_sqarray",
];

/// A process set up an io_uring instance.
pub fn interpret_uring_setup(rec: &RawRecord, view: &mut dyn ProcessView) -> Body {
    let h = &rec.header;
    let flags = h.args[1];
    let exe = view.exe(h.pid);
    Body::Uring {
        syscall: "io_uring_setup".into(),
        process: process_of(h, view, exe),
        result: SyscallResult {
            ok: true,
            ret: h.ret,
            errno: None,
        },
        uring: UringDetails {
            op: "setup".into(),
            fd: Some(h.args[0] as i32),
            sq_entries: Some(h.args[2] as u32),
            flags: (0..64)
                .filter(|bit| flags & (1u64 << bit) != 0)
                .map(|bit| match URING_SETUP_FLAGS.get(bit) {
                    Some(name) => name.to_string(),
                    None => format!("flag_{bit}"),
                })
                .collect(),
            register: None,
        },
    }
}

/// io_uring_register(2) opcodes (IORING_REGISTER_*), by number.
const URING_REGISTER_OPCODES: [&str; 34] = [
    "buffers",
    "unregister_buffers",
    "files",
    "unregister_files",
    "eventfd",
    "unregister_eventfd",
    "files_update",
    "eventfd_async",
    "probe",
    "personality",
    "unregister_personality",
    "restrictions",
    "enable_rings",
    "files2",
    "files_update2",
    "buffers2",
    "buffers_update",
    "iowq_aff",
    "unregister_iowq_aff",
    "iowq_max_workers",
    "ring_fds",
    "unregister_ring_fds",
    "pbuf_ring",
    "unregister_pbuf_ring",
    "sync_cancel",
    "file_alloc_range",
    "pbuf_status",
    "napi",
    "unregister_napi",
    "clock",
    "clone_buffers",
    "send_msg_ring",
    "zcrx_ifq",
    "resize_rings",
];

/// A process registered (or unregistered) resources with a ring.
pub fn interpret_uring_register(rec: &RawRecord, view: &mut dyn ProcessView) -> Body {
    let h = &rec.header;
    // IORING_REGISTER_USE_REGISTERED_RING: the ring named by index.
    let opcode = h.args[0] as u32 & !(1 << 31);
    let exe = view.exe(h.pid);
    Body::Uring {
        syscall: "io_uring_register".into(),
        process: process_of(h, view, exe),
        result: SyscallResult {
            ok: h.ret >= 0,
            ret: h.ret,
            errno: (h.ret < 0).then(|| errno_name(h.ret.saturating_neg())),
        },
        uring: UringDetails {
            op: "register".into(),
            register: Some(UringRegister {
                opcode: URING_REGISTER_OPCODES
                    .get(opcode as usize)
                    .map_or_else(|| format!("opcode_{opcode}"), |n| n.to_string()),
                files: h.args[1] as u32,
                buffers: h.args[2] as u32,
            }),
            ..Default::default()
        },
    }
}

/// Interpret a record; `None` for syscalls this agent does not know (a
/// newer probe object), which the caller counts.
pub fn interpret(rec: &RawRecord, view: &mut dyn ProcessView) -> Option<Body> {
    let h = &rec.header;
    let nr = h.syscall;
    let name = sc::name(nr)?;
    let layout = sc::arg_layout(nr)?;
    let a = h.args;
    let result = SyscallResult {
        ok: h.ret >= 0,
        ret: h.ret,
        errno: (h.ret < 0).then(|| errno_name(h.ret.saturating_neg())),
    };
    let dirfd = |i: u8| (i != sc::NONE).then(|| as_fd(a[i as usize]));
    let object_walked = h.flags & flags::OBJECT0_WALKED != 0 && !rec.dir0.is_empty();
    let chroot = h.flags & flags::ROOT_CHANGED != 0;
    // The chroot's root, walked by the probes for relative paths; a
    // relative second path is then relative to string 2's directory.
    let root_in_str3 = chroot && h.flags & flags::ROOT_IN_STR3 != 0;
    let kernel_root: &[u8] = if root_in_str3 { &rec.dir1 } else { &[] };
    let path0 = (layout.path0 != sc::NONE).then(|| {
        if object_walked {
            Resolved::walked(&rec.dir0, &rec.str0)
        } else {
            let last = final_component(nr, &a);
            // An exec's string 2 is its cwd, never a chroot's root.
            let dir0: &[u8] = if sc::is_exec(nr) && chroot && rec.str0.first() == Some(&b'/') {
                &[]
            } else {
                &rec.dir0
            };
            resolve(
                view,
                h.pid,
                dirfd(layout.dirfd0),
                &rec.str0,
                dir0,
                kernel_root,
                last,
                chroot,
            )
        }
    });

    // execveat(fd, "", …, AT_EMPTY_PATH) runs the open file `fd`.
    let exec_fd = (nr == sc::EXECVEAT && a[4] & AT_EMPTY_PATH != 0).then(|| as_fd(a[0]));
    // For exec, the program run (as the kernel named it, made absolute).
    let exec_path = sc::is_exec(nr).then(|| {
        let fd_exec = exec_fd.is_some() && rec.str0.is_empty();
        match &path0 {
            _ if fd_exec => Resolved {
                path: view
                    .fd_path(h.pid, as_fd(a[0]))
                    .unwrap_or_else(|| format!("fd:{}", as_fd(a[0]))),
                raw: None,
                resolved: true,
                source: Some(PathSource::Agent),
            },
            // The kernel's executable is the program itself unless it was
            // a script (then it is the interpreter).
            Some(p) if !rec.dir1.is_empty() && p.path.as_bytes() == rec.dir1.as_slice() => {
                Resolved::walked(&rec.dir1, &rec.str0)
            }
            Some(p) => Resolved {
                path: p.path.clone(),
                raw: p.raw.clone(),
                resolved: p.resolved,
                source: p.source,
            },
            None => Resolved {
                path: String::new(),
                raw: None,
                resolved: false,
                source: None,
            },
        }
    });
    if let (Some(program), true) = (&exec_path, h.ret == 0) {
        // The kernel's exe (symlinks resolved, the interpreter for a
        // script) when the probes could walk it.
        let exe = if rec.dir1.is_empty() {
            program.path.clone()
        } else {
            text(&rec.dir1)
        };
        view.exec_happened(h.pid, &exe);
        if h.flags & flags::EXEC_TERMINAL != 0 {
            let session = a[sc::exec_args::SESSION_ARG] as u32;
            let tty = a[sc::exec_args::TTY_ARG] as u32;
            view.terminal_at_exec(
                h.pid,
                (session != u32::MAX).then_some(session),
                (tty != 0).then_some((tty >> 20, tty & 0xfffff)),
            );
        }
        if exe != program.path {
            // A script: its interpreter is the exe, the script is what ran.
            view.script_ran(h.pid, &program.path);
        }
    }
    let exe_now = view
        .exe(h.pid)
        .or_else(|| exec_path.as_ref().map(|p| p.path.clone()));
    let process = process_of(h, view, exe_now);
    let syscall = name.to_string();

    if let Some(program) = exec_path {
        // The argument area is NUL-terminated arguments; a cut one has no
        // final NUL.
        let area = rec.str1.strip_suffix(&[0]).unwrap_or(&rec.str1);
        let argv = if area.is_empty() {
            Vec::new()
        } else {
            area.split(|&b| b == 0).map(text).collect()
        };
        return Some(Body::Exec {
            syscall,
            exec: ExecDetails {
                path: program.path,
                raw_path: program.raw,
                path_source: program.source,
                argv,
                argv_truncated: h.flags & flags::STR1_TRUNCATED != 0,
                // Failed execs keep no argv: it is read from the new image.
                argv_unavailable: h.ret != 0 || h.flags & flags::ARGV_UNREADABLE != 0,
                cwd: if rec.dir0.is_empty() {
                    view.dir_of(h.pid, None)
                } else {
                    Some(text(&rec.dir0))
                },
                fd: exec_fd,
            },
            process,
            result,
        });
    }

    if sc::is_cred_change(nr) {
        let old = Ids {
            uid: h.old_ids[0],
            gid: h.old_ids[1],
            euid: h.old_ids[2],
            egid: h.old_ids[3],
        };
        let new = Ids {
            uid: h.uid,
            gid: h.gid,
            euid: h.euid,
            egid: h.egid,
        };
        if nr == sc::CAPSET {
            let known_old = h.flags & flags::TASK_FIELDS != 0;
            return Some(Body::Perm {
                syscall,
                perm: PermDetails {
                    op: "capset".into(),
                    caps: Some(CapChange {
                        effective: cap_names(a[2]),
                        permitted: cap_names(a[3]),
                        inheritable: cap_names(a[4]),
                        gained: known_old.then(|| cap_names(a[2] & !a[5])),
                    }),
                    ..Default::default()
                },
                process,
                result,
            });
        }
        let argc = match nr {
            sc::SETREUID | sc::SETREGID => 2,
            sc::SETRESUID | sc::SETRESGID => 3,
            _ => 1,
        };
        let requested = a[..argc]
            .iter()
            .map(|&v| (v as u32 as i32) as i64)
            .collect();
        let op = match nr {
            sc::SETGID | sc::SETREGID | sc::SETRESGID | sc::SETFSGID => "setgid",
            _ => "setuid",
        };
        let to_root = (new.uid == 0 || new.euid == 0) && old.uid != 0 && old.euid != 0;
        return Some(Body::Perm {
            syscall,
            perm: PermDetails {
                op: op.into(),
                ids: Some(IdChange {
                    requested,
                    old,
                    new,
                    to_root,
                }),
                ..Default::default()
            },
            process,
            result,
        });
    }

    // File and permission changes on a path or fd.
    let fd_arg = matches!(nr, sc::FTRUNCATE | sc::FCHMOD | sc::FCHOWN | sc::FSETXATTR)
        .then(|| as_fd(a[0]))
        // A registered file (io_uring) is no fd.
        .filter(|&fd| !(nr == sc::FSETXATTR && fd == -1));
    let (path, raw_path, resolved, path_source) = match (&path0, fd_arg) {
        (Some(p), _) => (Some(p.path.clone()), p.raw.clone(), p.resolved, p.source),
        // The probes walked the fd's path; /proc is the fallback.
        (None, Some(_)) if !rec.str0.is_empty() => {
            (Some(text(&rec.str0)), None, true, Some(PathSource::Kernel))
        }
        (None, Some(fd)) => {
            let p = view.fd_path(h.pid, fd);
            let ok = p.is_some();
            (p, None, ok, ok.then_some(PathSource::Agent))
        }
        (None, None) => (None, None, false, None),
    };
    // The object by identity: from the kernel object where the probes read
    // it; for a path-based call that succeeded, stat(2) of the canonical
    // path now.
    let object = if h.flags & flags::OBJECT_ID != 0 {
        Some(ObjectId::from_kernel(h.obj_dev, h.obj_ino))
    } else {
        let looked_up = match (&path, result.ok, path_source) {
            (Some(p), true, Some(PathSource::Agent)) => Some(p.as_str()),
            _ => None,
        };
        let follow = final_component(nr, &a) == FinalComponent::Follow;
        match nr {
            sc::CHMOD
            | sc::FCHMODAT
            | sc::FCHMODAT2
            | sc::CHOWN
            | sc::LCHOWN
            | sc::FCHOWNAT
            | sc::SETXATTR
            | sc::LSETXATTR
            | sc::TRUNCATE => looked_up.and_then(|p| view.object_of(p, follow)),
            _ => None,
        }
    };
    let perm = |op: &str| PermDetails {
        op: op.into(),
        path: path.clone(),
        raw_path: raw_path.clone(),
        path_source,
        object,
        fd: fd_arg,
        truncated: truncation(h, ["path", ""]),
        ..Default::default()
    };
    match nr {
        sc::CHMOD | sc::FCHMOD | sc::FCHMODAT | sc::FCHMODAT2 => {
            let mode = if nr == sc::CHMOD || nr == sc::FCHMOD {
                a[1]
            } else {
                a[2]
            };
            return Some(Body::Perm {
                syscall,
                perm: PermDetails {
                    mode: Some(octal(mode)),
                    mode_bits: mode_bits(mode),
                    ..perm("chmod")
                },
                process,
                result,
            });
        }
        sc::SETXATTR | sc::LSETXATTR | sc::FSETXATTR => {
            return Some(Body::Perm {
                syscall,
                perm: PermDetails {
                    xattr: Some(xattr(rec)),
                    truncated: truncation(h, ["path", "xattr.name"]),
                    ..perm("setxattr")
                },
                process,
                result,
            });
        }
        sc::CHOWN | sc::FCHOWN | sc::LCHOWN | sc::FCHOWNAT => {
            let (u, g) = if nr == sc::FCHOWNAT {
                (a[2], a[3])
            } else {
                (a[1], a[2])
            };
            return Some(Body::Perm {
                syscall,
                perm: PermDetails {
                    owner: Some(Owner {
                        uid: opt_id(u),
                        gid: opt_id(g),
                    }),
                    ..perm("chown")
                },
                process,
                result,
            });
        }
        _ => {}
    }

    let mut file = FileDetails {
        path,
        raw_path,
        resolved,
        path_source,
        object,
        fd: fd_arg,
        truncated: truncation(h, ["path", "new_path"]),
        ..Default::default()
    };
    // Rename and link destinations, and a symlink's new name, are names:
    // a symlink there is replaced or refused, never followed.
    let second = |view: &mut dyn ProcessView, last: FinalComponent| {
        (layout.path1 != sc::NONE).then(|| {
            resolve(
                view,
                h.pid,
                dirfd(layout.dirfd1),
                &rec.str1,
                if root_in_str3 && rec.str1.first().is_some_and(|&b| b != b'/') {
                    &rec.dir0
                } else {
                    &rec.dir1
                },
                kernel_root,
                last,
                chroot,
            )
        })
    };
    file.op = match nr {
        sc::OPEN | sc::OPENAT | sc::OPENAT2 | sc::CREAT => {
            let (fl, mode) = match nr {
                sc::OPEN => (a[1], a[2]),
                sc::CREAT => (0o1101, a[1]),
                _ => (a[2], a[3]),
            };
            file.flags = open_flags(fl);
            if fl & (0o100 | 0o20000000) != 0 {
                file.mode = Some(octal(mode));
            }
            "open"
        }
        sc::UNLINK => "unlink",
        sc::UNLINKAT => {
            if a[2] & AT_REMOVEDIR != 0 {
                "rmdir"
            } else {
                "unlink"
            }
        }
        sc::RENAME | sc::RENAMEAT | sc::RENAMEAT2 => {
            let new = second(view, FinalComponent::Keep);
            file.new_path_source = new.as_ref().and_then(|n| n.source);
            file.new_path = new.map(|n| n.path);
            "rename"
        }
        sc::LINK | sc::LINKAT => {
            let new = second(view, FinalComponent::Keep);
            file.new_path_source = new.as_ref().and_then(|n| n.source);
            file.new_path = new.map(|n| n.path);
            "link"
        }
        sc::SYMLINK | sc::SYMLINKAT => {
            // The target is stored verbatim; the new link is path1.
            file.target = Some(text(&rec.str0));
            if let Some(link) = second(view, FinalComponent::Keep) {
                file.path = Some(link.path);
                file.raw_path = link.raw;
                file.resolved = link.resolved;
                file.path_source = link.source;
            }
            "symlink"
        }
        sc::TRUNCATE | sc::FTRUNCATE => {
            file.length = Some(a[1]);
            "truncate"
        }
        sc::MKNOD | sc::MKNODAT => {
            let mode = if nr == sc::MKNOD { a[1] } else { a[2] };
            file.mode = Some(format!("{:o}", mode));
            "mknod"
        }
        sc::MKDIR | sc::MKDIRAT => {
            let mode = if nr == sc::MKDIR { a[1] } else { a[2] };
            file.mode = Some(format!("{:o}", mode));
            "mkdir"
        }
        sc::MOUNT | sc::UMOUNT2 | sc::PIVOT_ROOT | sc::MOVE_MOUNT => {
            let (op, mount) = mount_details(rec, view, &process, &mut file, |view, last| {
                second(view, last)
            });
            file.mount = Some(mount);
            if op != "pivot_root" {
                file.truncated = truncation(h, ["path", "mount.source"]);
            }
            op
        }
        _ => return None,
    }
    .to_string();
    if matches!(
        file.op.as_str(),
        "rename"
            | "rmdir"
            | "unlink"
            | "symlink"
            | "mount"
            | "umount"
            | "pivot_root"
            | "move_mount"
    ) && result.ok
    {
        // What later paths resolve through may have changed.
        view.paths_changed();
    }
    Some(Body::File {
        syscall,
        file,
        process,
        result,
    })
}

/// The operation and details of a mount-family record. `second` resolves
/// the record's second path (see [`interpret`]).
fn mount_details(
    rec: &RawRecord,
    view: &mut dyn ProcessView,
    process: &Process,
    file: &mut FileDetails,
    second: impl Fn(&mut dyn ProcessView, FinalComponent) -> Option<Resolved>,
) -> (&'static str, MountDetails) {
    let h = &rec.header;
    let a = &h.args;
    let ns = a[sc::mount_args::MNT_NS_ARG];
    let host = view.host_mount_namespace();
    let namespace = match host {
        _ if ns == 0 => None,
        None => None,
        Some(host) if host == ns => Some("host".to_string()),
        // PID 1's program in a namespace of its own: systemd sandboxing a
        // service.
        Some(_) if process.exe.is_some() && process.exe == view.exe(1) => {
            Some("service".to_string())
        }
        Some(_) => Some("private".to_string()),
    };
    let mut mount = MountDetails {
        namespace,
        ..Default::default()
    };
    let resolved_source = |view: &mut dyn ProcessView, last| {
        second(view, last).map(|s| if s.resolved { s.path } else { text(&rec.str1) })
    };
    let op = match h.syscall {
        sc::MOUNT => {
            let flags = a[3];
            mount.flags = flag_names(flags, &MOUNT_FLAGS);
            // A bind or a move attaches a tree named by a path (followed,
            // as mount(2) looks it up); anything else names a device or
            // nothing, kept as passed.
            mount.source = if flags & (MS_BIND | MS_MOVE) != 0 && flags & MS_REMOUNT == 0 {
                resolved_source(view, FinalComponent::Follow)
            } else {
                (!rec.str1.is_empty()).then(|| text(&rec.str1))
            };
            mount.fstype = fstype(a);
            "mount"
        }
        sc::UMOUNT2 => {
            mount.flags = flag_names(a[1], &UMOUNT_FLAGS);
            "umount"
        }
        sc::PIVOT_ROOT => {
            // put_old: where the old root goes.
            if let Some(old) = second(view, FinalComponent::Follow) {
                file.new_path_source = old.source;
                file.new_path = Some(old.path);
            }
            "pivot_root"
        }
        _ => {
            // move_mount: an empty source path with MOVE_MOUNT_F_EMPTY_PATH
            // is the tree `from_dfd` holds (fsmount, open_tree).
            mount.source = if rec.str1.is_empty() {
                Some(format!("fd:{}", as_fd(a[0])))
            } else {
                let last = if a[4] & MOVE_MOUNT_F_SYMLINKS != 0 {
                    FinalComponent::Follow
                } else {
                    FinalComponent::Keep
                };
                resolved_source(view, last)
            };
            "move_mount"
        }
    };
    (op, mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Table {
        cwd: HashMap<u32, String>,
        fds: HashMap<(u32, i32), String>,
        exes: HashMap<u32, String>,
        host_ns: Option<u64>,
    }

    impl ProcessView for Table {
        fn host_mount_namespace(&mut self) -> Option<u64> {
            self.host_ns
        }
        fn dir_of(&mut self, pid: u32, dirfd: Option<i32>) -> Option<String> {
            match dirfd {
                None => self.cwd.get(&pid).cloned(),
                Some(fd) => self.fds.get(&(pid, fd)).cloned(),
            }
        }
        fn fd_path(&mut self, pid: u32, fd: i32) -> Option<String> {
            self.fds.get(&(pid, fd)).cloned()
        }
        fn exe(&mut self, pid: u32) -> Option<String> {
            self.exes.get(&pid).cloned()
        }
        fn exec_happened(&mut self, pid: u32, exe: &str) {
            self.exes.insert(pid, exe.into());
        }
    }

    fn rec(nr: u32, args: [u64; 6], ret: i64, s0: &[u8], s1: &[u8]) -> RawRecord {
        RawRecord {
            dir0: vec![],
            dir1: vec![],
            header: EventHeader {
                syscall: nr,
                args,
                ret,
                pid: 10,
                tid: 10,
                ..Default::default()
            },
            str0: s0.to_vec(),
            str1: s1.to_vec(),
        }
    }

    fn table() -> Table {
        let mut t = Table::default();
        t.cwd.insert(10, "/home/u".into());
        t.fds.insert((10, 5), "/srv/data".into());
        t
    }

    #[test]
    fn a_directory_is_named_from_inside_its_chroot() {
        assert_eq!(inside_root("/srv/jail", "/srv/jail").as_deref(), Some("/"));
        assert_eq!(
            inside_root("/srv/jail/", "/srv/jail/sub").as_deref(),
            Some("/sub")
        );
        // A sibling sharing the prefix, and a cwd left outside the root.
        assert_eq!(inside_root("/srv/jail", "/srv/jailbreak"), None);
        assert_eq!(inside_root("/srv/jail", "/tmp"), None);
    }

    #[test]
    fn relative_openat_resolves_against_dirfd() {
        let r = rec(sc::OPENAT, [5, 0, 0o1101, 0o640, 0, 0], 3, b"out.txt", b"");
        let Some(Body::File { file, result, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(file.path.as_deref(), Some("/srv/data/out.txt"));
        assert_eq!(file.raw_path.as_deref(), Some("out.txt"));
        assert_eq!(file.flags, ["write", "create", "truncate"]);
        assert_eq!(file.mode.as_deref(), Some("0640"));
        assert!(result.ok);
    }

    #[test]
    fn cwd_relative_rename_resolves_both_paths() {
        let fdcwd = AT_FDCWD as u32 as u64 | 0xffff_ffff_0000_0000;
        let r = rec(sc::RENAMEAT, [fdcwd, 0, fdcwd, 0, 0, 0], 0, b"a", b"./b");
        let Some(Body::File { file, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(file.op, "rename");
        assert_eq!(file.path.as_deref(), Some("/home/u/a"));
        assert_eq!(file.new_path.as_deref(), Some("/home/u/b"));
    }

    #[test]
    fn kernel_resolved_directory_wins_over_procfs() {
        let mut r = rec(
            sc::UNLINKAT,
            [AT_FDCWD as u64, 0, 0, 0, 0, 0],
            0,
            b"rc",
            b"",
        );
        r.dir0 = b"/tmp/jobs".to_vec();
        // The process is gone: /proc knows nothing.
        let Some(Body::File { file, .. }) = interpret(&r, &mut Table::default()) else {
            panic!()
        };
        assert_eq!(file.path.as_deref(), Some("/tmp/jobs/rc"));
        assert!(file.resolved);
    }

    /// mount(2): the mount point and a bind's source named canonically,
    /// the file system type and flags decoded, the caller's namespace
    /// told apart from the host's and from the service manager's.
    #[test]
    fn a_mount_names_its_mount_point_source_type_and_namespace() {
        let mut fstype = [0u8; 16];
        fstype[..5].copy_from_slice(b"tmpfs");
        let word = |i: usize| u64::from_le_bytes(fstype[i..i + 8].try_into().unwrap());
        let mut t = table();
        t.host_ns = Some(4026531841);
        t.exes.insert(1, "/usr/lib/systemd/systemd".into());
        let r = rec(
            sc::MOUNT,
            [0, 0, word(0), 0, word(8), 4026531841],
            0,
            b"../x//prot/",
            b"none",
        );
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        assert_eq!(file.op, "mount");
        assert_eq!(file.path.as_deref(), Some("/home/x/prot"));
        let m = file.mount.unwrap();
        assert_eq!(m.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(m.source.as_deref(), Some("none"));
        assert_eq!(m.namespace.as_deref(), Some("host"));
        assert!(m.changes_what_paths_mean());

        const BIND_REC: u64 = 4096 | 1 << 14;
        let r = rec(
            sc::MOUNT,
            [0, 0, 0, BIND_REC, 0, 77],
            0,
            b"/srv/b",
            b"evil/./dir",
        );
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        let m = file.mount.unwrap();
        assert_eq!(m.source.as_deref(), Some("/home/u/evil/dir"));
        assert_eq!(m.flags, ["bind", "rec"]);
        assert_eq!(m.fstype, None);
        assert_eq!(m.namespace.as_deref(), Some("private"));

        // PID 1's program in a namespace of its own: a service's sandbox.
        t.exes.insert(10, "/usr/lib/systemd/systemd".into());
        let r = rec(sc::MOUNT, [0, 0, 0, 4096, 0, 77], 0, b"/etc", b"/etc");
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        let m = file.mount.unwrap();
        assert_eq!(m.namespace.as_deref(), Some("service"));
        assert!(!m.changes_what_paths_mean());

        // A remount changes no path's meaning.
        let r = rec(sc::MOUNT, [0, 0, 0, 32 | 1, 0, 0], 0, b"/", b"");
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        let m = file.mount.unwrap();
        assert_eq!(m.flags, ["remount", "rdonly"]);
        assert_eq!(m.namespace, None);
        assert!(!m.changes_what_paths_mean());
    }

    #[test]
    fn unmount_move_mount_and_pivot_root_name_what_they_change() {
        let mut t = table();
        let r = rec(sc::UMOUNT2, [0, 2, 0, 0, 0, 0], 0, b"mnt", b"");
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        assert_eq!(
            (file.op.as_str(), file.path.as_deref()),
            ("umount", Some("/home/u/mnt"))
        );
        assert_eq!(file.mount.unwrap().flags, ["detach"]);

        // move_mount(fd 7, "", AT_FDCWD, "/x/prot", MOVE_MOUNT_F_EMPTY_PATH)
        let r = rec(
            sc::MOVE_MOUNT,
            [7, 0, -100i64 as u64, 0, 4, 0],
            0,
            b"/x/prot",
            b"",
        );
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        assert_eq!(
            (file.op.as_str(), file.path.as_deref()),
            ("move_mount", Some("/x/prot"))
        );
        assert_eq!(file.mount.unwrap().source.as_deref(), Some("fd:7"));

        let r = rec(sc::PIVOT_ROOT, [0; 6], 0, b"/new", b"/new/old");
        let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        assert_eq!(file.op, "pivot_root");
        assert_eq!(file.new_path.as_deref(), Some("/new/old"));
    }

    #[test]
    fn a_successful_open_names_the_file_the_kernel_opened() {
        let mut r = rec(
            sc::OPENAT,
            [5, 0, 0o2101, 0o644, 0, 0],
            3,
            b"../prot//a.conf",
            b"",
        );
        r.header.flags = flags::OBJECT0_WALKED;
        r.dir0 = b"/x/prot/a.conf".to_vec();
        let Some(Body::File { file, .. }) = interpret(&r, &mut Table::default()) else {
            panic!()
        };
        assert_eq!(file.path.as_deref(), Some("/x/prot/a.conf"));
        assert_eq!(file.raw_path.as_deref(), Some("../prot//a.conf"));
        assert_eq!(file.path_source, Some(PathSource::Kernel));
    }

    #[test]
    fn a_path_only_the_string_names_is_completed_and_says_so() {
        let mut r = rec(
            sc::UNLINKAT,
            [AT_FDCWD as u64, 0, 0, 0, 0, 0],
            0,
            b"../prot/./a",
            b"",
        );
        r.dir0 = b"/x/sub".to_vec();
        // Nothing to resolve directories with here: the lexical form.
        let Some(Body::File { file, .. }) = interpret(&r, &mut Table::default()) else {
            panic!()
        };
        assert_eq!(file.path.as_deref(), Some("/x/prot/a"));
        assert_eq!(file.raw_path.as_deref(), Some("../prot/./a"));
        assert_eq!(file.path_source, Some(PathSource::Lexical));
    }

    #[test]
    fn failed_unlink_names_errno_and_unresolvable_path_is_flagged() {
        let r = rec(sc::UNLINK, [0; 6], -13, b"x", b"");
        let mut t = Table::default();
        let Some(Body::File { file, result, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        assert!(!result.ok);
        assert_eq!(result.errno.as_deref(), Some("EACCES"));
        assert!(!file.resolved);
        assert_eq!(file.path.as_deref(), Some("x"));
    }

    #[test]
    fn chmod_decodes_mode_bits() {
        let r = rec(sc::CHMOD, [0, 0o4777, 0, 0, 0, 0], 0, b"/usr/bin/x", b"");
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(perm.mode.as_deref(), Some("4777"));
        assert_eq!(perm.mode_bits, ["setuid", "world_writable"]);
    }

    #[test]
    fn chown_minus_one_means_unchanged() {
        let r = rec(
            sc::FCHOWNAT,
            [0, 0, 1000, u32::MAX as u64, 0, 0],
            0,
            b"/f",
            b"",
        );
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(
            perm.owner,
            Some(Owner {
                uid: Some(1000),
                gid: None
            })
        );
    }

    #[test]
    fn file_capabilities_are_decoded_only_for_security_capability() {
        use sc::xattr_caps::*;
        let mut args = [0u64; 6];
        args[3] = 20;
        args[MAGIC_ARG] = 0x0200_0001;
        args[PERMITTED_ARG] = 1 << 13 | 1 << 33;
        let r = rec(sc::SETXATTR, args, 0, b"/f", b"security.capability");
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(perm.op, "setxattr");
        assert_eq!(perm.path.as_deref(), Some("/f"));
        let x = perm.xattr.unwrap();
        assert_eq!(x.name, "security.capability");
        let caps = x.file_caps.unwrap();
        assert_eq!(caps.permitted, ["cap_net_raw", "cap_mac_admin"]);
        assert!(caps.effective && caps.inheritable.is_empty());
        // Revision 1 has one word per set; another attribute has none.
        args[MAGIC_ARG] = 0x0100_0000;
        args[3] = 12;
        let r = rec(sc::SETXATTR, args, 0, b"/f", b"security.capability");
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        let caps = perm.xattr.unwrap().file_caps.unwrap();
        assert_eq!(caps.permitted, ["cap_net_raw"]);
        assert!(!caps.effective);
        let r = rec(sc::SETXATTR, args, 0, b"/f", b"user.x");
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(perm.xattr.unwrap().file_caps, None);
    }

    #[test]
    fn setuid_to_root_is_flagged() {
        let mut r = rec(sc::SETRESUID, [0, 0, u32::MAX as u64, 0, 0, 0], 0, b"", b"");
        r.header.old_ids = [1000, 1000, 1000, 1000];
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        let ids = perm.ids.unwrap();
        assert_eq!(ids.requested, [0, 0, -1]);
        assert!(ids.to_root);
    }

    #[test]
    fn exec_splits_argv_and_learns_the_exe() {
        let r = rec(sc::EXECVE, [0; 6], 0, b"/bin/echo", b"echo\0hello world\0");
        let mut t = table();
        let Some(Body::Exec { exec, process, .. }) = interpret(&r, &mut t) else {
            panic!()
        };
        assert_eq!(exec.argv, ["echo", "hello world"]);
        assert_eq!(process.exe.as_deref(), Some("/bin/echo"));
        assert_eq!(t.exes.get(&10).map(String::as_str), Some("/bin/echo"));
    }

    #[test]
    fn capset_reports_gained_caps() {
        let mut r = rec(
            sc::CAPSET,
            [0, 0, 1 << 21 | 1, 1 << 21 | 1, 0, 1],
            0,
            b"",
            b"",
        );
        r.header.flags = flags::TASK_FIELDS;
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        let caps = perm.caps.unwrap();
        assert_eq!(caps.gained.unwrap(), ["cap_sys_admin"]);
    }

    #[test]
    fn non_utf8_bytes_are_escaped_not_replaced() {
        assert_eq!(text(b"a\xffb"), "a\\xffb");
    }

    #[test]
    fn proc_self_names_the_process_not_the_agent() {
        assert_eq!(own_proc("/proc/self/exe", 42), "/proc/42/exe");
        assert_eq!(own_proc("/proc/self", 42), "/proc/42");
        assert_eq!(
            own_proc("/proc/thread-self/fd/3", 42),
            "/proc/42/task/42/fd/3"
        );
        assert_eq!(own_proc("/proc/selfish", 42), "/proc/selfish");
        let r = rec(
            sc::CHMOD,
            [0, 0o600, 0, 0, 0, 0],
            0,
            b"/proc/self/fd/3",
            b"",
        );
        let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
            panic!()
        };
        assert_eq!(perm.path.as_deref(), Some("/proc/10/fd/3"));
        assert_eq!(perm.raw_path.as_deref(), Some("/proc/self/fd/3"));
    }

    #[test]
    fn a_backslash_is_escaped_so_no_two_names_share_a_text() {
        assert_eq!(text(b"a\\xffb"), "a\\\\xffb");
        assert_ne!(text(b"a\\xffb"), text(b"a\xffb"));
        assert_eq!(text("é\\".as_bytes()), "é\\\\");
    }
}
