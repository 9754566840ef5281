//! Lineage marks (see `guardrail_common::lineage`): set when a process
//! execs a listed program, handed to a child at fork before it runs,
//! dropped at exit. The enforcement decision reads them; nothing here
//! waits for the agent.
//!
//! Keyed by tgid: threads share their process's mark (an exec by any
//! thread replaces the whole process's program). A mark is trusted only
//! when its start time is the process's, so a mark left behind can never
//! exempt a later process that reuses the pid. Whatever goes wrong (map
//! full, unreadable task) leaves a process unmarked, which means not
//! exempt: the rule applies.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel};
use aya_ebpf::macros::{map, raw_tracepoint};
use aya_ebpf::maps::{Array, HashMap};
use aya_ebpf::programs::RawTracePointContext;
use guardrail_common::enforce::MAX_KERNEL_RULES;
use guardrail_common::lineage::{
    state, LineageMark, ProgramKey, LINEAGE_PATH_LEN, MAX_LINEAGE_PROGRAMS, MAX_MARKED,
};

use crate::{off, task};

/// Listed programs' executables → their bits. Several inodes per program
/// path while a replaced binary's old inode is still known.
#[map]
static LINEAGE_PROGRAMS: HashMap<ProgramKey, u64> =
    HashMap::with_max_entries(4 * MAX_LINEAGE_PROGRAMS, 0);

/// tgid → its mark.
#[map]
static LINEAGE_MARKS: HashMap<u32, LineageMark> = HashMap::with_max_entries(MAX_MARKED, 0);

/// Per kernel rule slot (see `rule_slot`): the lineages that rule exempts.
#[map]
static LINEAGE_EXEMPT: Array<u64> = Array::with_max_entries(2 * MAX_KERNEL_RULES, 0);

/// See `guardrail_common::lineage::state`.
#[map]
static LINEAGE_STATE: Array<u64> = Array::with_max_entries(state::SLOTS, 0);

/// The program path of each bit, read only by the agent: the next agent
/// keeps the same bits for the same programs.
#[map]
static LINEAGE_PATHS: Array<[u8; LINEAGE_PATH_LEN]> =
    Array::with_max_entries(MAX_LINEAGE_PROGRAMS, 0);

/// `start_boottime` of the current thread-group leader (None: unknown,
/// and then no mark is ever trusted).
#[inline(always)]
fn leader_start() -> Option<u64> {
    let (leader_at, start_at) = (off!(task_group_leader), off!(task_start_boottime));
    if leader_at == 0 || start_at == 0 {
        return None;
    }
    unsafe {
        let leader: u64 = task::field(task::current(), leader_at).ok()?;
        task::field(leader, start_at).ok()
    }
}

/// The current process's mark, if it is really its own.
#[inline(always)]
fn current_mark() -> Option<(u32, LineageMark, u64)> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let start = leader_start()?;
    let mark = unsafe { LINEAGE_MARKS.get(&tgid) }.copied()?;
    mark.belongs_to(start).then_some((tgid, mark, start))
}

/// Lineages the current process descends from.
#[inline(always)]
pub fn inherited() -> u64 {
    current_mark().map_or(0, |(_, m, _)| m.inherited)
}

/// The lineages kernel rule `slot` exempts.
#[inline(always)]
pub fn exempted_by(slot: u32) -> u64 {
    LINEAGE_EXEMPT.get(slot).copied().unwrap_or(0)
}

#[inline(always)]
fn lost() {
    if let Some(n) = LINEAGE_STATE.get_ptr_mut(state::LOST) {
        // Approximate under contention; a count, not a decision.
        unsafe { *n += 1 };
    }
}

/// A process has exec'd: what it now runs decides what it passes on.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn guardrail_lineage_exec(_ctx: RawTracePointContext) -> i32 {
    on_exec();
    0
}

#[inline(always)]
fn on_exec() {
    let bits = match crate::inode::current_exe() {
        Some((dev, ino)) => unsafe { LINEAGE_PROGRAMS.get(&ProgramKey { dev, ino }) }
            .copied()
            .unwrap_or(0),
        None => 0,
    };
    if let Some((tgid, mut mark, _)) = current_mark() {
        if mark.passes_on != bits {
            mark.passes_on = bits;
            if LINEAGE_MARKS.insert(&tgid, &mark, 0).is_err() {
                lost();
            }
        }
        return;
    }
    if bits == 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(start) = leader_start() else {
        return;
    };
    let mark = LineageMark {
        inherited: 0,
        passes_on: bits,
        start,
    };
    if LINEAGE_MARKS.insert(&tgid, &mark, 0).is_err() {
        lost();
    }
}

/// A new process (`child`, a leader: its own start is its process's):
/// it inherits what its parent descends from and what it runs. Called
/// from the fork tracepoint, which fires before the child first runs.
#[inline(always)]
pub fn on_fork(child: u64, child_tgid: u32) {
    let Some((_, parent, _)) = current_mark() else {
        return;
    };
    let inherited = parent.inherited | parent.passes_on;
    if inherited == 0 {
        return;
    }
    let Some(start) = (match off!(task_start_boottime) {
        0 => None,
        at => unsafe { bpf_probe_read_kernel((child + at as u64) as *const u64) }.ok(),
    }) else {
        return;
    };
    let mark = LineageMark {
        inherited,
        passes_on: 0,
        start,
    };
    if LINEAGE_MARKS.insert(&child_tgid, &mark, 0).is_err() {
        lost();
    }
}

/// The leader of `tgid` exits. (A leader that exits before its other
/// threads takes the mark with it: they are no longer exempt.)
#[inline(always)]
pub fn on_exit(tgid: u32) {
    let _ = LINEAGE_MARKS.remove(&tgid);
}
