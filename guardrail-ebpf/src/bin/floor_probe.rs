//! The benchmark's floor for full capture (`cargo xtask bench`): the least
//! a syscall-capturing probe can do — copy each watched syscall's number,
//! arguments and first path into a ring buffer — with nothing of
//! guardrail's (no filtering, no exit pairing, no path walks, no rules).
//! It is an object of its own, so that the agent's probes do not carry its
//! 16 MiB ring buffer (aya creates every map of an object it loads); only
//! `guardrail-agent --bench-floor` loads it.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated as gen},
    macros::{map, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use guardrail_common::syscalls;

const PATH_BYTES: usize = 256;
/// Drained on a timer, as the agent's ring buffer is.
const BPF_RB_NO_WAKEUP: u64 = 1;

#[repr(C)]
pub struct FloorRecord {
    nr: u64,
    pid_tgid: u64,
    ktime_ns: u64,
    args: [u64; 6],
    path: [u8; PATH_BYTES],
}

#[map]
static FLOOR_EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Records the full ring buffer refused, per CPU.
#[map]
static FLOOR_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const TP_SYSCALL_NR: usize = 8;
const TP_ARGS: usize = 16;

#[tracepoint]
pub fn floor_sys_enter(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = FLOOR_EVENTS.reserve::<FloorRecord>(0) else {
        if let Some(lost) = FLOOR_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot.
            unsafe { *lost += 1 };
        }
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: the reservation is a FloorRecord; reads go through helpers.
    unsafe {
        (*rec).nr = ctx.read_at::<u64>(TP_SYSCALL_NR).unwrap_or(0) & 0xffff_ffff;
        (*rec).pid_tgid = bpf_get_current_pid_tgid();
        (*rec).ktime_ns = bpf_ktime_get_ns();
        for i in 0..6 {
            (*rec).args[i] = ctx.read_at::<u64>(TP_ARGS + 8 * i).unwrap_or(0);
        }
        let nr = (*rec).nr as u32;
        (*rec).path[0] = 0;
        if let Some(layout) = syscalls::arg_layout(nr) {
            if let Some(&p) = (*rec).args.get(layout.path0 as usize) {
                gen::bpf_probe_read_user_str(
                    (*rec).path.as_mut_ptr().cast(),
                    PATH_BYTES as u32,
                    p as *const _,
                );
            }
        }
    }
    entry.submit(BPF_RB_NO_WAKEUP);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
