//! Turning a raw record into an [`Body`]: naming the syscall, decoding
//! flags, modes, ids and capabilities ([`names`]), and making paths
//! absolute ([`paths`]); one module per kind of record: [`exec`],
//! [`cred`], [`perm`], [`file`] (with [`mount`]), [`uring`].

mod cred;
mod exec;
mod file;
mod mount;
mod names;
mod paths;
mod perm;
mod uring;

use guardrail_common::{flags, syscalls as sc, EventHeader};

use crate::canonical::{self, FinalComponent, PathSource};
use crate::decode::RawRecord;
use crate::event::*;

pub use names::{
    cap_names, errno_name, is_write_flag, is_write_flags, mode_bits, octal, open_flags, CAP_NAMES,
};
use paths::{final_component, resolve, Resolved};
pub use uring::{interpret_uring_register, interpret_uring_setup};

/// What interpretation needs from the live system (procfs in the agent, a
/// table in tests).
pub trait ProcessView {
    /// The directory `dirfd` (or the cwd, for `None`/AT_FDCWD) of `pid`.
    fn dir_of(&mut self, pid: u32, dirfd: Option<i32>) -> Option<String>;
    /// What open fd `fd` of `pid` refers to.
    fn fd_path(&mut self, pid: u32, fd: i32) -> Option<String>;
    /// The executable of `pid`.
    fn exe(&mut self, pid: u32) -> Option<std::sync::Arc<str>>;
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
    /// is: names and service, shared by the events that have the same.
    fn attribution(
        &mut self,
        _cgroup_id: u64,
        _uid: u32,
        _gid: u32,
    ) -> std::sync::Arc<Attribution> {
        Default::default()
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

pub use crate::event::Attribution;

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

/// [`text`], borrowed when the bytes are UTF-8 without a backslash (as
/// nearly every path is): nothing to escape, nothing to allocate.
pub fn text_cow(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains('\\') => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(text(bytes)),
    }
}

thread_local! {
    /// The last task name read and its text: a storm's records come from
    /// a few tasks, and a name allocated per event was one of the event
    /// path's allocations.
    static LAST_COMM: std::cell::RefCell<([u8; 16], std::sync::Arc<str>)> =
        std::cell::RefCell::new(([0; 16], "".into()));
}

fn comm(h: &EventHeader) -> std::sync::Arc<str> {
    LAST_COMM.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != h.comm {
            let end = h.comm.iter().position(|&b| b == 0).unwrap_or(h.comm.len());
            *last = (h.comm, text(&h.comm[..end]).into());
        }
        last.1.clone()
    })
}

fn as_fd(arg: u64) -> i32 {
    arg as i32
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
fn process_of(
    h: &EventHeader,
    view: &mut dyn ProcessView,
    exe: Option<std::sync::Arc<str>>,
) -> Process {
    let task_fields = h.flags & flags::TASK_FIELDS != 0;
    let ppid = task_fields.then_some(h.ppid);
    let lineage = view.lineage(h.pid, LINEAGE_DEPTH);
    Process {
        who: view.attribution(h.cgroup_id, h.uid, h.gid),
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
        pv: None,
        json: Default::default(),
        unjoined: false,
    }
}

/// What every kind of record shares: the header, the syscall and its
/// argument layout and result, and where its paths are relative to.
struct Call<'r> {
    rec: &'r RawRecord,
    h: &'r EventHeader,
    nr: u32,
    a: [u64; 6],
    layout: sc::ArgLayout,
    syscall: crate::event::Name,
    result: SyscallResult,
    /// The process runs in a chroot (see `flags::ROOT_CHANGED`).
    chroot: bool,
    /// String 3 holds the chroot's root (see `flags::ROOT_IN_STR3`).
    root_in_str3: bool,
}

impl<'r> Call<'r> {
    fn new(rec: &'r RawRecord) -> Option<Call<'r>> {
        let h = &rec.header;
        let nr = h.syscall;
        let chroot = h.flags & flags::ROOT_CHANGED != 0;
        Some(Call {
            rec,
            h,
            nr,
            a: h.args,
            layout: sc::arg_layout(nr)?,
            syscall: sc::name(nr)?.into(),
            result: SyscallResult {
                ok: h.ret >= 0,
                ret: h.ret,
                errno: (h.ret < 0).then(|| errno_name(h.ret.saturating_neg())),
            },
            chroot,
            root_in_str3: chroot && h.flags & flags::ROOT_IN_STR3 != 0,
        })
    }

    fn dirfd(&self, i: u8) -> Option<i32> {
        (i != sc::NONE).then(|| as_fd(self.a[i as usize]))
    }

    /// The chroot's root, walked by the probes for relative paths; a
    /// relative second path is then relative to string 2's directory.
    fn kernel_root(&self) -> &'r [u8] {
        if self.root_in_str3 {
            &self.rec.dir1
        } else {
            &[]
        }
    }

    /// The first path argument, made absolute.
    fn first_path(&self, view: &mut dyn ProcessView) -> Option<Resolved> {
        let (rec, h) = (self.rec, self.h);
        let object_walked = h.flags & flags::OBJECT0_WALKED != 0 && !rec.dir0.is_empty();
        (self.layout.path0 != sc::NONE).then(|| {
            if object_walked {
                Resolved::walked(&rec.dir0, &rec.str0)
            } else {
                let last = final_component(self.nr, &self.a);
                // An exec's string 2 is its cwd, never a chroot's root.
                let dir0: &[u8] =
                    if sc::is_exec(self.nr) && self.chroot && rec.str0.first() == Some(&b'/') {
                        &[]
                    } else {
                        &rec.dir0
                    };
                resolve(
                    view,
                    h.pid,
                    self.dirfd(self.layout.dirfd0),
                    &rec.str0,
                    dir0,
                    self.kernel_root(),
                    last,
                    self.chroot,
                )
            }
        })
    }

    /// The second path argument (a rename's or link's destination, a
    /// symlink's new name, a mount's source), made absolute.
    fn second_path(&self, view: &mut dyn ProcessView, last: FinalComponent) -> Option<Resolved> {
        let rec = self.rec;
        (self.layout.path1 != sc::NONE).then(|| {
            resolve(
                view,
                self.h.pid,
                self.dirfd(self.layout.dirfd1),
                &rec.str1,
                if self.root_in_str3 && rec.str1.first().is_some_and(|&b| b != b'/') {
                    &rec.dir0
                } else {
                    &rec.dir1
                },
                self.kernel_root(),
                last,
                self.chroot,
            )
        })
    }
}

/// The object a file or permission change acts on: its path (from the
/// first path argument, or the fd's) and its identity.
struct Target {
    path: Option<String>,
    raw_path: Option<String>,
    resolved: bool,
    path_source: Option<PathSource>,
    object: Option<ObjectId>,
    fd: Option<i32>,
}

impl Target {
    fn of(call: &Call, path0: Option<Resolved>, view: &mut dyn ProcessView) -> Target {
        let (rec, h, a, nr) = (call.rec, call.h, call.a, call.nr);
        let fd = matches!(nr, sc::FTRUNCATE | sc::FCHMOD | sc::FCHOWN | sc::FSETXATTR)
            .then(|| as_fd(a[0]))
            // A registered file (io_uring) is no fd.
            .filter(|&fd| !(nr == sc::FSETXATTR && fd == -1));
        let (path, raw_path, resolved, path_source) = match (path0, fd) {
            (Some(p), _) => (Some(p.path), p.raw, p.resolved, p.source),
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
        // The object by identity: from the kernel object where the probes
        // read it; for a path-based call that succeeded, stat(2) of the
        // canonical path now.
        let object = if h.flags & flags::OBJECT_ID != 0 {
            Some(ObjectId::from_kernel(h.obj_dev, h.obj_ino))
        } else {
            let looked_up = match (&path, call.result.ok, path_source) {
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
        Target {
            path,
            raw_path,
            resolved,
            path_source,
            object,
            fd,
        }
    }
}

/// Interpret a record; `None` for syscalls this agent does not know (a
/// newer probe object), which the caller counts.
pub fn interpret(rec: &RawRecord, view: &mut dyn ProcessView) -> Option<Body> {
    let call = Call::new(rec)?;
    let path0 = call.first_path(view);
    if sc::is_exec(call.nr) {
        return Some(exec::body(&call, path0, view));
    }
    let exe = view.exe(call.h.pid);
    let process = process_of(call.h, view, exe);
    if sc::is_cred_change(call.nr) {
        return Some(cred::body(&call, process));
    }
    let target = Target::of(&call, path0, view);
    if let Some(op) = perm::op_of(call.nr) {
        return Some(perm::body(&call, op, target, process));
    }
    file::body(&call, target, process, view)
}

#[cfg(test)]
mod tests;
