//! Enforcement: the BPF-LSM programs ([`hooks`]) ask [`decide`] whether an
//! operation on an object breaks a kill/deny rule.
//!
//! Decisions come only from kernel objects (the dentry/inode the hook is
//! given, the task's executable and credentials), never from syscall
//! arguments in user memory, so a racing thread cannot change what is
//! checked.

pub mod hooks;

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated as gen,
};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, PerCpuArray};
use guardrail_common::enforce::{
    action, rule_flags, rule_slot, ExeKey, InodeKey, InodeRules, KernelRule, Verdict,
    AGENT_PROGRAM, ENFORCE_STATE_SLOTS, HOST_MNT_NS, MAX_KERNEL_RULES, SERVICE_MANAGER,
};

use crate::inode::{current_exe, dentry_key};
use crate::off;
use crate::verdicts::VERDICTS;

/// Kill/deny/allow rules of both generations.
#[map]
static KRULES: Array<KernelRule> = Array::with_max_entries(2 * MAX_KERNEL_RULES, 0);

/// [0]: the generation in force. [1]: operations any rule of it names
/// (a quick way out for everything else). [2]: rules without paths.
/// [3], [4]: kill rules of generation 0 and 1. [5]: windows active now.
/// [6], [7]: kill and deny rules (not allow rules) of generation 0 and 1.
/// [8]: the host's mount namespace (its inode number).
#[map]
static ENFORCE_STATE: Array<u64> = Array::with_max_entries(ENFORCE_STATE_SLOTS, 0);

#[map]
static INODE_RULES: HashMap<InodeKey, InodeRules> = HashMap::with_max_entries(16384, 0);

#[map]
static EXE_RULES: HashMap<ExeKey, u8> = HashMap::with_max_entries(4096, 0);

/// The start-up canary: opening this (dev, ino) for writing is denied, so
/// the agent can prove that the LSM programs really run.
#[map]
static CANARY: Array<InodeKey> = Array::with_max_entries(1, 0);

/// Accumulators of [`decide`] and [`path_candidates`], kept in map memory
/// rather than registers on purpose: the verifier then sees unknown values
/// at each loop step and prunes, instead of following every combination
/// of bits through every iteration (which exceeds its budget).
#[map]
static ACC: PerCpuArray<[u64; 4]> = PerCpuArray::with_max_entries(1, 0);

const ACC_YES: usize = 0;
const ACC_NO: usize = 1;
const ACC_MATCHED: usize = 2;
const ACC_EXEMPT: usize = 3;

#[inline(always)]
fn acc_or(slot: usize, bits: u64) {
    if let Some(acc) = ACC.get_ptr_mut(0) {
        unsafe {
            let p = (*acc).as_mut_ptr().add(slot & 3);
            core::ptr::write_volatile(p, core::ptr::read_volatile(p) | bits);
        }
    }
}

#[inline(always)]
fn acc_get(slot: usize) -> u64 {
    ACC.get_ptr(0).map_or(0, |acc| unsafe {
        core::ptr::read_volatile((*acc).as_ptr().add(slot & 3))
    })
}

#[inline(always)]
fn acc_clear() {
    if let Some(acc) = ACC.get_ptr_mut(0) {
        // Word by word: a volatile array store is a byte-wise memset call.
        crate::record::zero(acc);
    }
}

const EPERM: i32 = 1;
const SIGKILL: u32 = 9;
/// Directories walked above the object for subtree rules.
const MAX_DEPTH: u32 = 32;

#[inline(always)]
unsafe fn read<T>(base: u64, offset: u32) -> Option<T> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).ok()
}

#[inline(always)]
fn state(i: u32) -> u64 {
    ENFORCE_STATE.get(i).copied().unwrap_or(0)
}

/// Rules that name `dentry` itself or a directory above it. `vfsmnt`
/// (0 when the hook gives none) lets the walk cross mount points.
#[inline(never)]
fn path_candidates(mut vfsmnt: u64, mut dentry: u64, generation: u32) -> u64 {
    // The object itself: exact and subtree entries.
    if let Some(key) = dentry_key(dentry, generation) {
        if key.ino != 0 {
            if let Some(r) = unsafe { INODE_RULES.get(&key) } {
                acc_or(ACC_YES, r.exact);
                acc_or(ACC_NO, r.not_exact);
            }
        }
    }
    for _ in 0..MAX_DEPTH {
        if let Some(key) = dentry_key(dentry, generation) {
            if key.ino != 0 {
                if let Some(r) = unsafe { INODE_RULES.get(&key) } {
                    acc_or(ACC_YES, r.subtree);
                    acc_or(ACC_NO, r.not_subtree);
                }
            }
        }
        let parent: u64 = match unsafe { read(dentry, off!(dentry_parent)) } {
            Some(p) => p,
            None => break,
        };
        if parent != dentry {
            dentry = parent;
            continue;
        }
        // The root of a filesystem: continue in the mount above, if known.
        if vfsmnt == 0 {
            break;
        }
        let mount = vfsmnt - off!(mount_mnt) as u64;
        let Some(mount_parent) = (unsafe { read::<u64>(mount, off!(mount_parent)) }) else {
            break;
        };
        if mount_parent == mount {
            break;
        }
        match unsafe { read::<u64>(mount, off!(mount_mountpoint)) } {
            Some(mp) => dentry = mp,
            None => break,
        }
        vfsmnt = mount_parent + off!(mount_mnt) as u64;
    }
    acc_get(ACC_YES) & !acc_get(ACC_NO)
}

/// Whether operation `op` on the object (`vfsmnt`, `dentry`; dentry 0 for
/// operations without one) is forbidden; `to_root` tells credential hooks'
/// rules whether the change makes the task root. Records the verdict for
/// the syscall's event and kills the task for kill rules.
#[inline(always)]
pub fn decide(op: u32, vfsmnt: u64, dentry: u64, to_root: bool) -> i32 {
    if state(1) as u32 & op == 0 {
        return 0;
    }
    let generation = state(0) as u32;
    acc_clear();
    let mut candidates = state(2);
    if dentry != 0 {
        candidates |= path_candidates(vfsmnt, dentry, generation);
    }
    if candidates == 0 {
        return 0;
    }
    let exe = current_exe().unwrap_or((0, 0));
    for i in 0..MAX_KERNEL_RULES {
        if candidates & (1u64 << i) != 0 {
            // Five arguments at most for a BPF function: to_root rides on op.
            check_rule(i, generation, op | ((to_root as u32) << 31), exe.0, exe.1);
        }
    }
    let matched = acc_get(ACC_MATCHED) & !acc_get(ACC_EXEMPT);
    if matched == 0 {
        return 0;
    }
    // The first matching rule names the verdict; a kill rule wins over deny.
    let first = matched.trailing_zeros();
    let kills = matched & kill_mask(generation);
    let (rule, act) = if kills != 0 {
        (kills.trailing_zeros(), action::KILL)
    } else {
        (first, action::DENY)
    };
    let verdict = Verdict {
        rule: rule + 1,
        action: act,
        generation,
        op,
        ktime_ns: unsafe { gen::bpf_ktime_get_ns() },
    };
    if verdict.action == action::KILL {
        // The process runs no more user code; the operation is denied too.
        unsafe { gen::bpf_send_signal(SIGKILL) };
    }
    // An io-wq worker performing an io_uring request: filed under the
    // request, whose completion may be posted by another thread.
    let key = crate::uring::worker_request().unwrap_or_else(bpf_get_current_pid_tgid);
    let _ = VERDICTS.insert(&key, &verdict, 0);
    -EPERM
}

/// Whether kernel rule `i` applies to this operation; records it as
/// matched or, for an allow rule, what it exempts.
#[inline(never)]
fn check_rule(i: u32, generation: u32, op_root: u32, exe_dev: u64, exe_ino: u64) {
    let (op, to_root) = (op_root & !(1 << 31), op_root & (1 << 31) != 0);
    let Some(rule) = KRULES.get(rule_slot(generation, i & (MAX_KERNEL_RULES - 1))) else {
        return;
    };
    if rule.ops & op == 0 {
        return;
    }
    if rule.flags & rule_flags::TO_ROOT != 0 && !to_root {
        return;
    }
    let windows = state(5) as u32;
    if rule.windows_in != 0 && windows & rule.windows_in == 0 {
        return;
    }
    if windows & rule.windows_out != 0 {
        return;
    }
    if rule.flags & (rule_flags::EXE_ONLY | rule_flags::EXE_EXCEPT) != 0 {
        let key = ExeKey {
            dev: exe_dev,
            ino: exe_ino,
            generation,
            rule: i,
        };
        let listed = exe_ino != 0 && unsafe { EXE_RULES.get(&key) }.is_some();
        if listed != (rule.flags & rule_flags::EXE_ONLY != 0) {
            return;
        }
    }
    // `ancestor_exe_not`: a process descending from a listed program.
    if rule.action != action::ALLOW {
        let lineages =
            crate::lineage::exempted_by(rule_slot(generation, i & (MAX_KERNEL_RULES - 1)));
        if lineages != 0 && crate::lineage::inherited() & lineages != 0 {
            return;
        }
    }
    if rule.action == action::ALLOW {
        acc_or(ACC_EXEMPT, rule.exempts);
    } else {
        acc_or(ACC_MATCHED, 1u64 << (i & 63));
    }
}

/// Path integrity: whether mounting on `dentry` (in mount `vfsmnt`, 0 when
/// unknown) would change what a kill/deny rule's path resolves to — it is
/// an object a rule names, a directory above one, or inside a protected
/// subtree. Decided on the inode, so it holds in every mount namespace.
#[inline(always)]
pub fn mount_would_change_a_rule(vfsmnt: u64, dentry: u64) -> i32 {
    let generation = state(0) as u32;
    acc_clear();
    let mut rules = guarding(dentry, generation);
    rules |= path_candidates(vfsmnt, dentry, generation);
    if rules & protecting(generation) == 0 {
        return 0;
    }
    if service_manager_in_own_namespace(generation) {
        return 0;
    }
    refuse_for_integrity(rules, generation)
}

/// Refuse an operation for path integrity, filing the verdict under the
/// first kill/deny rule among `rules` (the rules whose paths it would
/// change) so that the operation's record names the rule, as a refused
/// write's does. Integrity only denies: nobody is killed for it.
#[inline(always)]
fn refuse_for_integrity(rules: u64, generation: u32) -> i32 {
    let concerned = rules & protecting(generation);
    if concerned != 0 {
        let verdict = Verdict {
            rule: concerned.trailing_zeros() + 1,
            action: action::DENY,
            generation,
            op: 0,
            ktime_ns: unsafe { gen::bpf_ktime_get_ns() },
        };
        let key = crate::uring::worker_request().unwrap_or_else(bpf_get_current_pid_tgid);
        let _ = VERDICTS.insert(&key, &verdict, 0);
    }
    -EPERM
}

/// guardrail's maps, by id, while self-protection guards the pinned state
/// (the agent fills it, and empties it at a clean stop). Whoever could
/// write to them could delete the rules or the records in flight; other
/// programs (bpftool) may still open them to read.
#[map]
static OWN_MAPS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// Whether the current task may get a file descriptor to `map` with
/// access `writes` (it asks to write).
#[inline(always)]
pub fn map_access_refused(map: u64, writes: bool) -> i32 {
    if !writes {
        return 0;
    }
    let Some(id) = (unsafe { read::<u32>(map, off!(bpf_map_id)) }) else {
        return 0;
    };
    if unsafe { OWN_MAPS.get(&id) }.is_none() {
        return 0;
    }
    let Some((dev, ino)) = current_exe() else {
        return -EPERM;
    };
    let key = ExeKey {
        dev,
        ino,
        generation: AGENT_PROGRAM,
        rule: AGENT_PROGRAM,
    };
    if unsafe { EXE_RULES.get(&key) }.is_some() {
        0
    } else {
        -EPERM
    }
}

/// Path integrity: whether unmounting `vfsmnt` would change what a
/// kill/deny rule's path resolves to — its root is a protected object, a
/// directory above one (bpffs under the pinned state, /sys above it), or
/// inside a protected subtree. Only in the host's mount namespace: there
/// the unmount is what every host process sees, and a file system such as
/// bpffs dies with its last mount; in a private namespace it changes that
/// namespace's view alone (container runtimes unmount the old root there).
#[inline(always)]
pub fn umount_would_change_a_rule(vfsmnt: u64) -> i32 {
    let host = state(HOST_MNT_NS);
    if host == 0 || crate::task::current_mnt_ns() != Some(host) {
        return 0;
    }
    let Some(root) = (unsafe { read::<u64>(vfsmnt, off!(vfsmount_root)) }) else {
        return 0;
    };
    let generation = state(0) as u32;
    acc_clear();
    let rules = guarding(root, generation) | path_candidates(vfsmnt, root, generation);
    if rules & protecting(generation) == 0 {
        return 0;
    }
    refuse_for_integrity(rules, generation)
}


/// Whether the current task runs the service manager's program (PID 1's
/// executable, in EXE_RULES under SERVICE_MANAGER) in a mount namespace
/// other than the host's: a service's private namespace being set up,
/// whose mounts no host process sees.
#[inline(always)]
fn service_manager_in_own_namespace(generation: u32) -> bool {
    if !outside_host_mount_namespace() {
        return false;
    }
    let Some((dev, ino)) = current_exe() else {
        return false;
    };
    let key = ExeKey {
        dev,
        ino,
        generation,
        rule: SERVICE_MANAGER,
    };
    unsafe { EXE_RULES.get(&key) }.is_some()
}

/// Whether the current task's mount namespace is known and is not the
/// host's (the agent keeps the host's in ENFORCE_STATE[HOST_MNT_NS]).
#[inline(always)]
fn outside_host_mount_namespace() -> bool {
    let host = state(HOST_MNT_NS);
    if host == 0 {
        return false;
    }
    crate::task::current_mnt_ns().is_some_and(|ns| ns != host)
}

/// Path integrity for `pivot_root(new_root, put_old)`. In the host's mount
/// namespace it swaps the root under every process there, so every path
/// a rule names could mean something else: refused while any kill/deny
/// rule is in force. In a namespace of its own (a container runtime
/// entering its root file system) it changes paths only for that
/// namespace, and is decided like a mount on `new_root` and `put_old`.
#[inline(always)]
pub fn pivot_would_change_a_rule(
    new_mnt: u64,
    new_dentry: u64,
    old_mnt: u64,
    old_dentry: u64,
) -> i32 {
    let generation = state(0) as u32;
    if protecting(generation) == 0 {
        return 0;
    }
    if !outside_host_mount_namespace() {
        return refuse_for_integrity(protecting(generation), generation);
    }
    let r = mount_would_change_a_rule(new_mnt, new_dentry);
    if r != 0 {
        return r;
    }
    mount_would_change_a_rule(old_mnt, old_dentry)
}

/// Path integrity: whether moving `dentry` away (or replacing it) would
/// change what a kill/deny rule's path resolves to.
#[inline(always)]
pub fn move_would_change_a_rule(dentry: u64) -> i32 {
    let generation = state(0) as u32;
    let rules = guarding(dentry, generation);
    if rules & protecting(generation) == 0 {
        return 0;
    }
    refuse_for_integrity(rules, generation)
}

/// Rules whose paths run through `dentry` (see `InodeRules::guards`).
#[inline(always)]
fn guarding(dentry: u64, generation: u32) -> u64 {
    match dentry_key(dentry, generation) {
        Some(key) if key.ino != 0 => {
            unsafe { INODE_RULES.get(&key) }.map_or(0, |r| r.guards | r.exact)
        }
        _ => 0,
    }
}

/// Kill and deny rules of `generation` (allow rules exempt, never protect).
#[inline(always)]
fn protecting(generation: u32) -> u64 {
    state(6 + (generation & 1))
}

/// Rules of `generation` whose action is kill (kept by the agent in
/// ENFORCE_STATE[3 + generation]).
#[inline(always)]
fn kill_mask(generation: u32) -> u64 {
    state(3 + (generation & 1))
}

/// Whether `dentry` is the start-up canary (see [`CANARY`]).
#[inline(always)]
pub fn is_canary(dentry: u64) -> bool {
    let Some(canary) = CANARY.get(0) else {
        return false;
    };
    if canary.ino == 0 {
        return false;
    }
    dentry_key(dentry, 0).is_some_and(|k| k.dev == canary.dev && k.ino == canary.ino)
}
