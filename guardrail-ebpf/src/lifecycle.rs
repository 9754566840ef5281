//! Process lifecycle: a fork that makes a new process, and a process's
//! exit. With these the agent knows every process's program from its
//! birth (its parent's, until it execs) to its end, in the order the
//! kernel saw them, instead of asking /proc after the fact — when the
//! process may have exec'd something else or be gone.
//!
//! Raw tracepoints: their arguments are the kernel's own `task_struct`
//! pointers (the classic tracepoint records only pids, which cannot tell
//! a new thread from a new process).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use guardrail_common::RecordKind;

use crate::{off, record};

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn guardrail_fork(ctx: RawTracePointContext) -> i32 {
    let _ = on_fork(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn guardrail_exit(_ctx: RawTracePointContext) -> i32 {
    let _ = on_exit();
    0
}

fn on_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    if off!(task_tgid) == 0 {
        return Ok(());
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // TP_PROTO(struct task_struct *parent, struct task_struct *child)
    let child: u64 = ctx.arg(1);
    let child_tgid: u32 =
        unsafe { bpf_probe_read_kernel((child + off!(task_tgid) as u64) as *const u32) }?;
    // A new thread of the same process: nothing to learn.
    if child_tgid == parent {
        return Ok(());
    }
    // Every process, whatever the agent wants recorded.
    crate::lineage::on_fork(child, child_tgid);
    if !crate::audited(parent) {
        return Ok(());
    }
    let start = match off!(task_start_boottime) {
        0 => 0,
        at => unsafe { bpf_probe_read_kernel((child + at as u64) as *const u64) }.unwrap_or(0),
    };
    record::emit_lifecycle(RecordKind::Fork, child_tgid, parent, start)
}

fn on_exit() -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Each thread's entry lives until the thread does (see `parked`).
    crate::parked::forget(pid_tgid);
    // Threads end all the time; the process is reported once, by its
    // leader.
    if tgid != tid {
        return Ok(());
    }
    crate::lineage::on_exit(tgid);
    if !crate::audited(tgid) {
        return Ok(());
    }
    record::emit_lifecycle(RecordKind::Exit, tgid, 0, 0)
}
