//! The syscall and exec probes as raw tracepoints, for kernels that
//! attach `syscalls:*` and `sched:*` tracepoints only through perf events
//! (before 5.15). A perf event cannot be pinned, so there capture would
//! stop whenever no agent runs; a raw tracepoint is a BPF link, pinned
//! with the rest, and keeps capturing across restarts and upgrades.
//!
//! `sys_enter` and `sys_exit` fire for every syscall, not only the watched
//! ones: the number is checked first, against the same catalogue the
//! per-call attachments are made from. The arguments come from the
//! task's saved registers (`pt_regs`, offsets from BTF), exactly what the
//! `syscalls:*` records copy. 32-bit syscalls (TS_COMPAT) are numbered
//! differently and skipped, as the `syscalls:*` tracepoints skip them.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use guardrail_common::syscalls;

use crate::{off, parked};

/// `thread_info.status` bit of a task inside a 32-bit syscall (x86).
const TS_COMPAT: u32 = 0x0002;
const ENOSYS: i64 = 38;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn guardrail_raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    let _ = on_enter(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn guardrail_raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = on_exit(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn guardrail_raw_exec(ctx: RawTracePointContext) -> i32 {
    let _ = on_exec(&ctx);
    0
}

/// A watched syscall's number, `None` for every other call (the common
/// case, decided without a helper call) and for 32-bit ones.
#[inline(always)]
fn watched(id: i64) -> Option<u32> {
    if !(0..=i64::from(u16::MAX)).contains(&id) {
        return None;
    }
    let nr = id as u32;
    syscalls::arg_layout(nr)?;
    let status: u32 = unsafe {
        bpf_probe_read_kernel((bpf_get_current_task() + off!(task_ti_status) as u64) as *const u32)
    }
    .ok()?;
    (status & TS_COMPAT == 0).then_some(nr)
}

/// Register `i`'s offset among the syscall arguments.
#[inline(always)]
fn arg_offset(i: usize) -> u32 {
    let offsets = off!(regs_args);
    offsets[i % 6]
}

fn on_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    // TP_PROTO(struct pt_regs *regs, long id)
    let Some(nr) = watched(ctx.arg(1)) else {
        return Ok(());
    };
    let regs: u64 = ctx.arg(0);
    let arg = |i: usize| {
        unsafe { bpf_probe_read_kernel((regs + arg_offset(i) as u64) as *const u64) }
            .map_err(i64::from)
    };
    // The argument registers are not in order in `pt_regs`: one read each.
    crate::enter(nr, arg, || {
        let mut args = [0u64; 6];
        for (i, slot) in args.iter_mut().enumerate() {
            *slot = arg(i)?;
        }
        Ok(args)
    })
}

fn on_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs: u64 = ctx.arg(0);
    let id: i64 =
        unsafe { bpf_probe_read_kernel((regs + off!(regs_orig_ax) as u64) as *const i64) }?;
    let Some(nr) = watched(id) else {
        return Ok(());
    };
    let ret: i64 = ctx.arg(1);
    if ret == -ENOSYS {
        // A watched call this kernel does not have (fchmodat2 before 6.6,
        // which newer C libraries try first): the per-syscall tracepoints
        // have no tracepoint for it and never see it either.
        if let Some(parked) = parked::parked(bpf_get_current_pid_tgid()) {
            parked.take();
        }
        return Ok(());
    }
    crate::exit(nr, ret)
}

fn on_exec(ctx: &RawTracePointContext) -> Result<(), i64> {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let old_tid: u64 = ctx.arg(1);
    let bprm: u64 = ctx.arg(2);
    crate::exec(old_tid as i32, || {
        let filename: u64 =
            unsafe { bpf_probe_read_kernel((bprm + off!(bprm_filename) as u64) as *const u64) }?;
        Ok(filename as *const u8)
    })
}
