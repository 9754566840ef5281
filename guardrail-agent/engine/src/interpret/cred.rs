//! Credential changes: setuid/setgid and their variants, and capset.

use guardrail_common::{flags, syscalls as sc};

use super::*;

pub(super) fn body(call: &Call, process: Process) -> Body {
    let (h, a, nr) = (call.h, call.a, call.nr);
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
    let syscall = call.syscall.clone();
    let result = call.result.clone();
    if nr == sc::CAPSET {
        let known_old = h.flags & flags::TASK_FIELDS != 0;
        return Body::Perm {
            syscall,
            perm: PermDetails {
                op: "capset".into(),
                caps: Some(Box::new(CapChange {
                    effective: cap_names(a[2]),
                    permitted: cap_names(a[3]),
                    inheritable: cap_names(a[4]),
                    gained: known_old.then(|| cap_names(a[2] & !a[5])),
                })),
                ..Default::default()
            },
            process,
            result,
        };
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
    Body::Perm {
        syscall,
        perm: PermDetails {
            op: op.into(),
            ids: Some(Box::new(IdChange {
                requested,
                old,
                new,
                to_root,
            })),
            ..Default::default()
        },
        process,
        result,
    }
}
