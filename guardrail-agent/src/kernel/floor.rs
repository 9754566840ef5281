//! `guardrail-agent --bench-floor`: the benchmark's floor for full capture.
//! Loads only the minimal copy-every-syscall probe (guardrail-ebpf's
//! `src/bin/floor_probe.rs`, an object of its own) on the same tracepoints the agent watches, drains its ring
//! buffer on a timer without looking at the records, and on SIGTERM prints
//! what it received and what the kernel dropped.

use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::EbpfLoader;
use guardrail_common::syscalls;
use tokio::signal::unix::{signal, SignalKind};

use super::tracefs;

/// guardrail-ebpf's `guardrail-floor` object (src/bin/floor_probe.rs).
static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guardrail-floor.bpf.o"));

pub async fn run(ring_buffer_bytes: u32, drain_interval: Duration) -> Result<()> {
    super::probes::require_probes(FLOOR_OBJECT)?;
    let tracefs = tracefs::root_or_mount().context("tracefs")?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("FLOOR_EVENTS", ring_buffer_bytes)
        .load(FLOOR_OBJECT)
        .context("loading the floor probe")?;
    let prog: &mut TracePoint = ebpf
        .program_mut("floor_sys_enter")
        .context("floor program missing from the object")?
        .try_into()?;
    prog.load().context("verifying floor_sys_enter")?;
    let mut attached = 0;
    for (_, name) in syscalls::WATCHED {
        let tp = format!("sys_enter_{name}");
        if tracefs::exists(&tracefs, "syscalls", &tp) {
            prog.attach("syscalls", &tp)
                .with_context(|| format!("attaching syscalls/{tp}"))?;
            attached += 1;
        }
    }
    let mut ring = RingBuf::try_from(ebpf.take_map("FLOOR_EVENTS").context("FLOOR_EVENTS")?)?;
    let lost: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.take_map("FLOOR_LOST").context("FLOOR_LOST")?)?;
    println!("{{\"attached\":{attached}}}");
    let mut events = 0u64;
    let mut drain = tokio::time::interval(drain_interval);
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = drain.tick() => {
                while let Some(item) = ring.next() {
                    // The consumer touches each record once, nothing more.
                    std::hint::black_box(&*item);
                    events += 1;
                }
            }
            _ = sigterm.recv() => break,
        }
    }
    while let Some(item) = ring.next() {
        std::hint::black_box(&*item);
        events += 1;
    }
    let dropped: u64 = lost.get(&0, 0)?.iter().sum();
    println!("{{\"events\":{events},\"lost\":{dropped}}}");
    Ok(())
}
