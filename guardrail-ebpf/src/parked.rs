//! Syscalls between their entry and exit, by thread (`pid_tgid`): what
//! the entry read (arguments, ids, time) for the exit's record.
//!
//! A thread's entry stays in the table from its first watched syscall
//! until the thread exits. Each call's entry is written over the last one
//! in place, and its exit marks it taken. Inserting and deleting an entry
//! for every call (the bucket lock, the free list, the copy) was a fifth
//! of the probes' time on a chmod storm; a lookup and a few stores are
//! what remains.
//!
//! Not preallocated: an entry is made once per thread and freed when the
//! thread exits (`lifecycle`), so the table holds only the threads that
//! make watched calls, and its size costs no memory up front.

use aya_ebpf::{macros::map, maps::HashMap};
use guardrail_common::PendingSyscall;

use crate::BPF_F_NO_PREALLOC;

/// What `syscall` holds in an entry whose call has exited.
const TAKEN: u32 = u32::MAX;

#[map]
static PENDING: HashMap<u64, PendingSyscall> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Park `pending` as thread `pid_tgid`'s call; false when the table is
/// full (the thread had no entry and no room was left for one).
#[inline(always)]
pub fn park(pid_tgid: u64, pending: &PendingSyscall) -> bool {
    match PENDING.get_ptr_mut(&pid_tgid) {
        Some(slot) => {
            // SAFETY: this thread's entry; only this thread writes it. The
            // call number last, as the entry's exit reads it first.
            unsafe {
                (*slot).enter_ns = pending.enter_ns;
                (*slot).args = pending.args;
                (*slot).old_ids = pending.old_ids;
                core::ptr::write_volatile(&mut (*slot).syscall, pending.syscall);
            }
            true
        }
        None => PENDING.insert(&pid_tgid, pending, 0).is_ok(),
    }
}

/// A thread's call between entry and exit, in its entry.
pub struct Parked(*mut PendingSyscall);

impl Parked {
    /// What the call's entry read.
    #[inline(always)]
    pub fn call(&self) -> &PendingSyscall {
        // SAFETY: a live entry of the map; only its thread writes it, and
        // not while this borrow lasts.
        unsafe { &*self.0 }
    }

    /// The call has exited: its entry is kept for the thread's next.
    #[inline(always)]
    pub fn take(self) {
        // SAFETY: as in `call`; written through the pointer the lookup
        // gave, not looked up again.
        unsafe { core::ptr::write_volatile(&mut (*self.0).syscall, TAKEN) };
    }
}

/// Thread `pid_tgid`'s call between entry and exit, if one is parked.
#[inline(always)]
pub fn parked(pid_tgid: u64) -> Option<Parked> {
    let slot = PENDING.get_ptr_mut(&pid_tgid)?;
    // SAFETY: a live entry of the map.
    (unsafe { (*slot).syscall } != TAKEN).then_some(Parked(slot))
}

/// Thread `pid_tgid` is gone (it exited, or its exec made it the
/// process's leader): its entry too.
#[inline(always)]
pub fn forget(pid_tgid: u64) {
    let _ = PENDING.remove(&pid_tgid);
}
