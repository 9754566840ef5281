//! Path arguments made absolute and canonical: from what the probes
//! walked in the kernel where they could, else from the process's cwd or
//! dirfd as /proc shows it, inside the process's root.

use guardrail_common::syscalls as sc;

use std::borrow::Cow;

use super::{text, text_cow, LiveFs, ProcessView, AT_FDCWD};
use crate::canonical::{self, FinalComponent, PathSource};

const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const O_NOFOLLOW: u64 = 0o400000;
pub(super) const UMOUNT_NOFOLLOW: u64 = 8;
const MOVE_MOUNT_T_SYMLINKS: u64 = 0x10;

/// A path argument made absolute and canonical.
pub(super) struct Resolved {
    pub(super) path: String,
    /// The path as the program passed it, when that differs from `path`.
    pub(super) raw: Option<String>,
    /// False when the path could not be made absolute (the cwd or dirfd
    /// was unreadable because the process was gone).
    pub(super) resolved: bool,
    pub(super) source: Option<PathSource>,
}

impl Resolved {
    /// The kernel walked the object itself: its path is the answer.
    pub(super) fn walked(walked: &[u8], raw: &[u8]) -> Resolved {
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
pub(super) fn resolve(
    view: &mut dyn ProcessView,
    pid: u32,
    dirfd: Option<i32>,
    raw: &[u8],
    kernel_dir: &[u8],
    kernel_root: &[u8],
    last: FinalComponent,
    chroot: bool,
) -> Resolved {
    // Borrowed from the record until something must differ from it.
    let raw_text = text_cow(raw);
    let unresolved = |raw_text: Cow<str>| Resolved {
        path: raw_text.to_string(),
        raw: Some(raw_text.into_owned()),
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
            raw: (raw_text != path).then(|| raw_text.into_owned()),
            path,
            resolved: true,
            source: Some(source),
        };
    }
    let absolute: Option<Cow<str>> = if raw.first() == Some(&b'/') {
        Some(Cow::Borrowed(&raw_text))
    } else if kernel_dir.is_empty() {
        view.dir_of(pid, dirfd.filter(|&fd| fd != AT_FDCWD))
            .map(|dir| join(&dir, &raw_text).into())
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
                raw: (raw_text != path).then(|| raw_text.into_owned()),
                path,
                resolved: true,
                source: Some(source),
            };
        }
        // The root unknown, or the directory outside it (a chroot without
        // chdir): the host's file system decides.
        Some(join(&dir, &raw_text).into())
    } else {
        // The walked directory is canonical: its `..` are its parents by
        // the text, even if it was removed and its path re-created as
        // something else since.
        let (dir, rest) = canonical::climb(&text(kernel_dir), &raw_text);
        Some(join(&dir, rest).into())
    };
    // /proc/self is the agent's own when the agent resolves it: name the
    // process's instead.
    let absolute = absolute.map(|p| own_proc(&p, pid).map_or(p, Cow::Owned));
    match absolute.filter(|p| p.starts_with('/')) {
        Some(absolute) => {
            let (path, source) = canonical::complete(&absolute, last, &mut LiveFs(view));
            drop(absolute);
            Resolved {
                raw: (raw_text != path).then(|| raw_text.into_owned()),
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
pub(super) fn inside_root(root: &str, dir: &str) -> Option<String> {
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
/// `/proc/PID`, which means the same to the process and to the agent;
/// `None` for a path that starts with neither.
pub(super) fn own_proc(path: &str, pid: u32) -> Option<String> {
    // Checked before anything is made: this runs for every path.
    let rest = path.strip_prefix("/proc/")?;
    let (task, rest) = match rest.strip_prefix("thread-self") {
        Some(rest) => (true, rest),
        None => (false, rest.strip_prefix("self")?),
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(if task {
        format!("/proc/{pid}/task/{pid}{rest}")
    } else {
        format!("/proc/{pid}{rest}")
    })
}

/// Whether call `nr` acts on what a final symlink in its first path
/// points to, as the kernel does.
pub(super) fn final_component(nr: u32, a: &[u64; 6]) -> FinalComponent {
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

pub(super) fn join(dir: &str, rel: &str) -> String {
    let rel = rel.strip_prefix("./").unwrap_or(rel);
    if rel.is_empty() {
        dir.to_string()
    } else {
        canonical::join_name(dir, rel)
    }
}
