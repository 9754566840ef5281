//! Loading the embedded probes, attaching them, and reading their counters.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use guardrail_common::{counter, syscalls, KernelOffsets};
use tracing::{info, warn};

use super::enforce::{self, Enforcer};
use super::{btf, tracefs};

/// Where the start-up canary file lives (a tmpfs on systemd hosts).
const CANARY_DIR: &str = "/run/guardrail";

/// The probes' object, built by `build.rs`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guardrail.bpf.o"));

/// How to load the probes.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    /// Bytes waiting in the ring buffer before the reader is woken.
    pub wakeup_bytes: u64,
    pub capture_read_opens: bool,
    /// Capture only this thread group (0: everything but the agent).
    pub only_tgid: u32,
    /// With BPF-LSM: other processes may not signal or trace the agent.
    pub self_protect: bool,
}

/// Kernel-side totals, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub ringbuf_drops: u64,
    pub pending_drops: u64,
    pub submitted: u64,
    /// Fork/exit records lost: not events (not in `lost()`).
    pub lifecycle_drops: u64,
}

impl KernelCounters {
    pub fn lost(&self) -> u64 {
        self.ringbuf_drops + self.pending_drops
    }
}

pub struct Probes {
    // Keeps programs and links alive: dropping it detaches everything.
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    /// Tracepoints attached, e.g. `syscalls/sys_enter_openat`.
    pub attached: Vec<String>,
    /// Watched syscalls this kernel has no tracepoint for.
    pub missing: Vec<&'static str>,
    /// Whether task fields (ppid, euid, auid) could be resolved from BTF.
    pub offsets: Option<KernelOffsets>,
    /// io_uring file operations this kernel does not let the probes see.
    pub uring_unseen: Vec<String>,
}

impl Probes {
    /// Load and attach; the ring buffer comes back separately so that the
    /// caller can poll it while it also reads the counters.
    /// The third element is the enforcer, or why this kernel cannot enforce.
    pub fn load(opts: &ProbeOptions) -> Result<(Self, RingBuf<MapData>, Result<Enforcer, String>)> {
        let tracefs = tracefs::root_or_mount().context(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed; \
             mount it with `mount -t tracefs nodev /sys/kernel/tracing`",
        )?;
        let offsets = match btf::resolve_offsets(Path::new(btf::VMLINUX)) {
            Ok(o) => Some(o),
            Err(e) => {
                warn!("kernel BTF unavailable ({e}): events will lack ppid, euid/egid and auid");
                None
            }
        };
        let old_pid_offset =
            tracefs::field_offset(&tracefs, "sched", "sched_process_exec", "old_pid")
                .context("sched:sched_process_exec has no old_pid field")?;
        let filename_offset =
            tracefs::field_offset(&tracefs, "sched", "sched_process_exec", "filename")
                .context("sched:sched_process_exec has no filename field")?;
        // io_uring set-up events, where the kernel has the tracepoint
        // (5.5+; absent when io_uring is compiled out).
        let uring_create = ["fd", "flags", "sq_entries"]
            .map(|f| tracefs::field_offset(&tracefs, "io_uring", "io_uring_create", f));
        let uring_offsets = uring_create.map(|o| o.unwrap_or(0));
        let uring_ops = super::uring::resolve(&tracefs);
        let agent_tgid = std::process::id();
        let read_opens = u8::from(opts.capture_read_opens);
        let self_protect = u8::from(opts.self_protect);
        let offsets_value = offsets.unwrap_or_default();
        let rename_params =
            btf::lsm_hook_params(Path::new(btf::VMLINUX), "path_rename").unwrap_or(5);
        let setattr_params =
            btf::lsm_hook_params(Path::new(btf::VMLINUX), "inode_setattr").unwrap_or(3);
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("ONLY_TGID", &opts.only_tgid, true)
            .override_global("CAPTURE_READ_OPENS", &read_opens, true)
            .override_global("SELF_PROTECT", &self_protect, true)
            .override_global("WAKEUP_BYTES", &opts.wakeup_bytes, true)
            .override_global("EXEC_OLD_PID_OFFSET", &old_pid_offset, true)
            .override_global("EXEC_FILENAME_OFFSET", &filename_offset, true)
            .override_global("URING_CREATE_OFFSETS", &uring_offsets[..], true)
            .override_global("URING", &uring_ops.offsets, true)
            .override_global("OFFSETS", &offsets_value, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            // The benchmark floor's ring buffer lives in the same object;
            // the agent never uses it, so it gets the smallest size the
            // kernel accepts instead of the 16 MiB the floor run asks for.
            .map_max_entries("FLOOR_EVENTS", 4096)
            .load(OBJECT)
            .context("loading the guardrail probes into the kernel")?;

        let mut attached = Vec::new();
        let mut missing = Vec::new();
        for (phase, program) in [
            ("enter", "guardrail_sys_enter"),
            ("exit", "guardrail_sys_exit"),
        ] {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .context("program missing from the object")?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifying {program}"))?;
            for (_, name) in syscalls::WATCHED {
                let tp = format!("sys_{phase}_{name}");
                if !tracefs::exists(&tracefs, "syscalls", &tp) {
                    if phase == "enter" {
                        missing.push(*name);
                    }
                    continue;
                }
                prog.attach("syscalls", &tp)
                    .with_context(|| format!("attaching syscalls/{tp}"))?;
                attached.push(format!("syscalls/{tp}"));
            }
        }
        let exec: &mut TracePoint = ebpf
            .program_mut("guardrail_exec")
            .context("program missing from the object")?
            .try_into()?;
        exec.load().context("verifying guardrail_exec")?;
        exec.attach("sched", "sched_process_exec")
            .context("attaching sched/sched_process_exec")?;
        attached.push("sched/sched_process_exec".into());
        if uring_create.iter().all(Option::is_some) {
            let prog: &mut TracePoint = ebpf
                .program_mut("guardrail_uring_create")
                .context("program missing from the object")?
                .try_into()?;
            prog.load().context("verifying guardrail_uring_create")?;
            prog.attach("io_uring", "io_uring_create")
                .context("attaching io_uring/io_uring_create")?;
            attached.push("io_uring/io_uring_create".into());
        } else {
            warn!("this kernel has no io_uring:io_uring_create tracepoint: io_uring set-ups are not reported");
        }
        super::uring::attach(&mut ebpf, &uring_ops, &mut attached)?;
        // Forks and exits keep the agent's process table true to the
        // kernel; without BTF offsets the probes cannot tell threads from
        // processes and stay silent.
        for (program, tp) in [
            ("guardrail_fork", "sched_process_fork"),
            ("guardrail_exit", "sched_process_exit"),
        ] {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(program)
                .context("program missing from the object")?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifying {program}"))?;
            prog.attach(tp)
                .with_context(|| format!("attaching raw tracepoint {tp}"))?;
            attached.push(format!("raw/{tp}"));
        }

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map")?)?;
        let enforcer = match (
            offsets,
            enforce::load(&mut ebpf, rename_params, setattr_params),
        ) {
            (None, _) => Err("kernel BTF is unavailable".to_string()),
            (_, Err(e)) => Err(format!("{e:#}")),
            (Some(_), Ok(enforcer)) => match enforce::canary(&mut ebpf, Path::new(CANARY_DIR)) {
                Ok(true) => Ok(enforcer),
                Ok(false) => Err("the BPF-LSM programs loaded but did not deny the canary: \
                     `bpf` is not an active LSM (add it to the lsm= boot parameter)"
                    .to_string()),
                Err(e) => Err(format!("canary check failed: {e:#}")),
            },
        };
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("COUNTERS map")?)?;
        info!(
            tracepoints = attached.len(),
            missing = ?missing,
            "probes attached"
        );
        let probes = Self {
            _ebpf: ebpf,
            counters,
            attached,
            missing,
            offsets,
            uring_unseen: uring_ops.unseen,
        };
        Ok((probes, ring, enforcer))
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let sum = |index: u32| -> Result<u64> { Ok(self.counters.get(&index, 0)?.iter().sum()) };
        Ok(KernelCounters {
            ringbuf_drops: sum(counter::RINGBUF_DROPS)?,
            pending_drops: sum(counter::PENDING_DROPS)?,
            submitted: sum(counter::SUBMITTED)?,
            lifecycle_drops: sum(counter::LIFECYCLE_DROPS)?,
        })
    }
}
