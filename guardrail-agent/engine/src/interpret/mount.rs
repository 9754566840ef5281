//! Mount-family records: mount, umount, pivot_root and move_mount, with
//! the namespace they change.

use guardrail_common::syscalls as sc;

use super::names::flag_names;
use super::paths::{Resolved, UMOUNT_NOFOLLOW};
use super::*;
use crate::canonical::FinalComponent;

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

/// The operation and details of a mount-family record. `second` resolves
/// the record's second path (see [`interpret`]).
pub(super) fn mount_details(
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
