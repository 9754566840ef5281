//! File operations: opens, creations, removals, renames, links, truncates
//! and the mount family.

use guardrail_common::syscalls as sc;

use super::mount::mount_details;
use super::*;
use crate::canonical::FinalComponent;

const AT_REMOVEDIR: u64 = 0x200;

/// A file operation (None: a syscall this agent does not know).
pub(super) fn body(
    call: &Call,
    target: Target,
    process: Process,
    view: &mut dyn ProcessView,
) -> Option<Body> {
    let (rec, h, a, nr) = (call.rec, call.h, call.a, call.nr);
    let mut file = FileDetails {
        path: target.path,
        raw_path: target.raw_path,
        resolved: target.resolved,
        path_source: target.path_source,
        object: target.object,
        fd: target.fd,
        truncated: truncation(h, ["path", "new_path"]),
        ..Default::default()
    };
    // Rename and link destinations, and a symlink's new name, are names:
    // a symlink there is replaced or refused, never followed.
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
            let new = call.second_path(view, FinalComponent::Keep);
            file.new_path_source = new.as_ref().and_then(|n| n.source);
            file.new_path = new.map(|n| n.path);
            "rename"
        }
        sc::LINK | sc::LINKAT => {
            let new = call.second_path(view, FinalComponent::Keep);
            file.new_path_source = new.as_ref().and_then(|n| n.source);
            file.new_path = new.map(|n| n.path);
            "link"
        }
        sc::SYMLINK | sc::SYMLINKAT => {
            // The target is stored verbatim; the new link is path1.
            file.target = Some(text(&rec.str0));
            if let Some(link) = call.second_path(view, FinalComponent::Keep) {
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
            file.mode = Some(format!("{:o}", mode).into());
            "mknod"
        }
        sc::MKDIR | sc::MKDIRAT => {
            let mode = if nr == sc::MKDIR { a[1] } else { a[2] };
            file.mode = Some(format!("{:o}", mode).into());
            "mkdir"
        }
        sc::MOUNT | sc::UMOUNT2 | sc::PIVOT_ROOT | sc::MOVE_MOUNT => {
            let (op, mount) = mount_details(rec, view, &process, &mut file, |view, last| {
                call.second_path(view, last)
            });
            file.mount = Some(Box::new(mount));
            if op != "pivot_root" {
                file.truncated = truncation(h, ["path", "mount.source"]);
            }
            op
        }
        _ => return None,
    }
    .into();
    if matches!(
        file.op.as_ref(),
        "rename"
            | "rmdir"
            | "unlink"
            | "symlink"
            | "mount"
            | "umount"
            | "pivot_root"
            | "move_mount"
    ) && call.result.ok
    {
        // What later paths resolve through may have changed.
        view.paths_changed();
    }
    Some(Body::File {
        syscall: call.syscall.clone(),
        file,
        process,
        result: call.result.clone(),
    })
}
