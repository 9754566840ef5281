//! Mode, owner and extended-attribute changes on a path or fd.

use guardrail_common::syscalls as sc;

use super::*;

/// The operation a permission-change syscall performs (None: not one).
pub(super) fn op_of(nr: u32) -> Option<&'static str> {
    match nr {
        sc::CHMOD | sc::FCHMOD | sc::FCHMODAT | sc::FCHMODAT2 => Some("chmod"),
        sc::SETXATTR | sc::LSETXATTR | sc::FSETXATTR => Some("setxattr"),
        sc::CHOWN | sc::FCHOWN | sc::LCHOWN | sc::FCHOWNAT => Some("chown"),
        _ => None,
    }
}

pub(super) fn body(call: &Call, op: &'static str, target: Target, process: Process) -> Body {
    let (h, a, nr) = (call.h, call.a, call.nr);
    let base = PermDetails {
        op: op.into(),
        path: target.path,
        raw_path: target.raw_path,
        path_source: target.path_source,
        object: target.object,
        fd: target.fd,
        truncated: truncation(h, ["path", ""]),
        ..Default::default()
    };
    let perm = match op {
        "chmod" => {
            let mode = if nr == sc::CHMOD || nr == sc::FCHMOD {
                a[1]
            } else {
                a[2]
            };
            PermDetails {
                mode: Some(octal(mode)),
                mode_bits: mode_bits(mode),
                ..base
            }
        }
        "setxattr" => PermDetails {
            xattr: Some(Box::new(xattr(call.rec))),
            truncated: truncation(h, ["path", "xattr.name"]),
            ..base
        },
        _ => {
            let (u, g) = if nr == sc::FCHOWNAT {
                (a[2], a[3])
            } else {
                (a[1], a[2])
            };
            PermDetails {
                owner: Some(Owner {
                    uid: opt_id(u),
                    gid: opt_id(g),
                }),
                ..base
            }
        }
    };
    Body::Perm {
        syscall: call.syscall.clone(),
        perm,
        process,
        result: call.result.clone(),
    }
}

/// VFS_CAP_REVISION_{1,2,3} in `vfs_cap_data.magic_etc`, and its
/// effective bit.
const VFS_CAP_REVISION_MASK: u64 = 0xFF00_0000;

const VFS_CAP_FLAGS_EFFECTIVE: u64 = 1;

/// The attribute a setxattr record sets; for `security.capability`, the
/// file capabilities (revision 1 has only the low word of each set).
pub(super) fn xattr(rec: &RawRecord) -> Xattr {
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

pub(super) fn opt_id(arg: u64) -> Option<u32> {
    let v = arg as u32;
    (v != u32::MAX).then_some(v)
}
