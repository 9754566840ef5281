//! io_uring made visible: a process that sets up a ring can submit file
//! operations the syscall tracepoints never see, so setting one up is an
//! event of its own (which rules can allow-list by program).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use guardrail_common::RecordKind;

use crate::{global, record, AGENT_TGID, ONLY_TGID, URING_CREATE_OFFSETS};

#[tracepoint]
pub fn guardrail_uring_create(ctx: TracePointContext) -> u32 {
    let _ = on_create(&ctx);
    0
}

fn on_create(ctx: &TracePointContext) -> Result<(), i64> {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let only = global(&ONLY_TGID);
    if tgid == global(&AGENT_TGID) || (only != 0 && only != tgid) {
        return Ok(());
    }
    let [fd_at, flags_at, entries_at] = global(&URING_CREATE_OFFSETS);
    let field = |at: u32| unsafe { ctx.read_at::<u32>(at as usize) }.map_err(|e| e as i64);
    let (fd, flags, entries) = (field(fd_at)?, field(flags_at)?, field(entries_at)?);
    record::emit_record(
        RecordKind::UringSetup,
        [fd as i32 as i64 as u64, flags as u64, entries as u64, 0, 0, 0],
        fd as i32 as i64,
    )
}
