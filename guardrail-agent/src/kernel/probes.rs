//! Loading the embedded probes, attaching them, and reading their counters.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, Map, MapData, PerCpuArray},
    Ebpf, EbpfLoader,
};
use guardrail_common::{counter, pinned, syscalls, KernelOffsets};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::attach::{attach_raw, attach_tracepoint};
use super::enforce::{self, Enforcer};
use super::kfunc;
use super::pins::{monotonic_ns, Found, Links, StateDir};
use super::ring::RingReader;
use super::{btf, tracefs};

/// Where the start-up canary file lives (a tmpfs on systemd hosts).
const CANARY_DIR: &str = "/run/guardrail";

/// An empty object: this agent was built without the eBPF toolchain
/// (build.rs stubs the probes then, so that checks and unit tests run).
pub(crate) fn require_probes(object: &[u8]) -> Result<()> {
    if object.is_empty() {
        anyhow::bail!(
            "this guardrail-agent was built without its probes (the eBPF toolchain was \
             missing, and cargo warned so); build it with `cargo xtask build`"
        );
    }
    Ok(())
}

/// The probes' object, built by `build.rs`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guardrail.bpf.o"));

impl SyscallProbes {
    /// What `guardrail status` says: where the probes are attached.
    pub fn name(raw: bool) -> &'static str {
        if raw {
            "raw"
        } else {
            "tracepoints"
        }
    }
}

/// Which probes this build carries: the start of the SHA-256 of the
/// embedded object (`guardrail status`), so that an operator — and the
/// upgrade test — can tell two builds' probes apart.
pub fn probes_id() -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(OBJECT)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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
    /// Keep the probes, rules and ring buffer pinned here when the agent
    /// exits, and adopt what is pinned at start (None: everything ends
    /// with the agent).
    pub pin_root: Option<PathBuf>,
    /// Which tracepoints carry the syscall and exec probes.
    pub syscall_probes: SyscallProbes,
}

/// Where the syscall and exec probes attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallProbes {
    /// `raw` on kernels that attach tracepoints only through perf events
    /// (before 5.15: those cannot be pinned, so capture would pause
    /// between agents), `tracepoints` elsewhere.
    #[default]
    Auto,
    /// The raw `sys_enter`/`sys_exit` and `sched_process_exec`
    /// tracepoints: pinnable on every supported kernel; run on every
    /// syscall and check its number first.
    Raw,
    /// One `syscalls:sys_{enter,exit}_*` tracepoint per watched syscall
    /// and `sched:sched_process_exec`.
    Tracepoints,
}

/// What the agent knows about the pinned state (`guardrail status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Continuity {
    /// Where the state is pinned.
    pub state_dir: String,
    /// A previous agent's state was adopted (else it was created, or
    /// replaced: see `replaced`).
    pub adopted: bool,
    /// Why the state found at start could not be adopted.
    pub replaced: Option<String>,
    /// The previous owner, when adopted.
    pub previous_pid: Option<u32>,
    /// Whether the previous owner stopped cleanly (false: crash, SIGKILL).
    pub previous_stopped_cleanly: Option<bool>,
    /// How long no agent read the ring buffer before this one (ms).
    pub unattended_ms: Option<u64>,
    /// Records left in a ring buffer that could not be adopted: lost.
    pub discarded_records: u64,
    /// Records the previous agent had logged but not yet given back to
    /// the kernel when it died: skipped, not logged twice.
    #[serde(default)]
    pub already_logged: u64,
    /// Links pinned by this agent.
    pub links_pinned: usize,
    /// Attachments this kernel cannot pin: they lapse when the agent exits.
    pub not_pinned: Vec<String>,
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
    // Keeps programs and links alive: dropping it detaches everything
    // that is not pinned.
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    /// What this agent leaves the next one (AGENT_STATE).
    ledger: Array<MapData, u64>,
    /// The pinned state this agent owns, if kept.
    state: Option<StateDir>,
    _pinned_links: Vec<aya::programs::links::PinnedLink>,
    /// Loss counters already reported (by the previous owner, when
    /// adopted): the next `loss` event starts from here.
    pub reported: KernelCounters,
    pub continuity: Option<Continuity>,
    /// Tracepoints attached, e.g. `syscalls/sys_enter_openat`.
    pub attached: Vec<String>,
    /// Watched syscalls this kernel has no tracepoint for.
    pub missing: Vec<&'static str>,
    /// Whether task fields (ppid, euid, auid) could be resolved from BTF.
    pub offsets: Option<KernelOffsets>,
    /// io_uring file operations this kernel does not let the probes see.
    pub uring_unseen: Vec<String>,
    /// The read watch set's maps (`file.read` rules), for the pipeline.
    pub read_watch: Option<super::watch::ReadWatch>,
    /// Where the syscall and exec probes are attached: `raw` or
    /// `tracepoints` (see [`SyscallProbes`]).
    pub syscall_probes: &'static str,
    /// The probes read the current task's fields with plain loads (a
    /// typed task, 5.11+) rather than helper calls.
    pub typed_tasks: bool,
    /// The read watch reads an opened file with plain loads (the fd's
    /// slot cast by `bpf_rdonly_cast`, 6.2+).
    pub typed_files: bool,
    /// Why files are not typed although the kernel has the cast.
    pub typed_files_note: Option<String>,
    /// This load of the programs (their `INSTANCE`).
    instance: u64,
}

impl Probes {
    /// Load and attach; the ring buffer comes back separately so that the
    /// caller can poll it while it also reads the counters.
    /// The third element is the enforcer, or why this kernel cannot enforce.
    pub fn load(opts: &ProbeOptions) -> Result<(Self, RingReader, Result<Enforcer, String>)> {
        require_probes(OBJECT)?;
        let state = opts
            .pin_root
            .as_deref()
            .map(StateDir::open)
            .transpose()
            .context("opening the pinned state (`--ephemeral` runs without it)")?;
        let found = match &state {
            Some(s) => s.inspect(opts.ring_buffer_bytes),
            None => Found::Nothing,
        };
        let found = match (&state, found) {
            (Some(s), Found::Nothing) if !s.others().is_empty() => Found::Unusable(format!(
                "pinned by a build with another record layout ({})",
                s.others().join(", ")
            )),
            (_, found) => found,
        };
        if let (Some(s), Found::Unusable(why)) = (&state, &found) {
            warn!(
                "the pinned state in {} is not adopted: {why}; its programs keep enforcing until \
                 this agent's do, then it is removed",
                s.dir().display()
            );
            s.set_aside()?;
        }
        if let Some(s) = &state {
            s.prepare()?;
        }
        let tracefs = tracefs::root_or_mount().context(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed; \
             mount it with `mount -t tracefs nodev /sys/kernel/tracing`",
        )?;
        crate::notify::starting("reading the kernel's BTF");
        let kernel_btf = btf::read(Path::new(btf::VMLINUX));
        let offsets = match kernel_btf
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|b| btf::resolve_offsets(b).map_err(|e| e.to_string()))
        {
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
        let uring_ops = super::uring::resolve(&tracefs, kernel_btf.as_ref());
        let uring_register = super::uring::register_offsets(&tracefs);
        let agent_tgid = std::process::id();
        let read_opens = u8::from(opts.capture_read_opens);
        let self_protect = u8::from(opts.self_protect);
        let offsets_value = offsets.unwrap_or_default();
        // Only with the offsets: they are what the typed loads add.
        let task_btf = u8::from(
            offsets.is_some()
                && kernel_btf
                    .as_ref()
                    .is_ok_and(|b| btf::has_helper(b, "bpf_get_current_task_btf")),
        );
        // A syscall's saved registers as a typed pointer (5.15+): where the
        // per-syscall tracepoints are used, calls that need nothing from
        // their entry are read at their exit only (the probes' EXIT_ONLY).
        let task_pt_regs = task_btf == 1
            && kernel_btf
                .as_ref()
                .is_ok_and(|b| btf::has_helper(b, "bpf_task_pt_regs"));
        // Typed files for the read watch (see `kfunc`): only with typed
        // tasks, whose loads lead to the fd table.
        let file_cast = kernel_btf
            .as_ref()
            .ok()
            .filter(|_| task_btf == 1)
            .and_then(kfunc::file_cast);
        let hook_params = |hook: &str| {
            kernel_btf
                .as_ref()
                .ok()
                .and_then(|b| btf::lsm_hook_params(b, hook))
        };
        let shapes = enforce::HookShapes {
            rename_params: hook_params("path_rename").unwrap_or(5),
            setattr_params: hook_params("inode_setattr").unwrap_or(3),
            setxattr_params: hook_params("inode_setxattr").unwrap_or(6),
        };
        // The raw io_uring tracepoints' prototypes (`raw` probes).
        let raw_tp_args = |tp: &str| {
            kernel_btf
                .as_ref()
                .ok()
                .and_then(|b| btf::raw_tracepoint_args(b, tp))
        };
        let uring_raw_args = (
            raw_tp_args("io_uring_create"),
            raw_tp_args("io_uring_register"),
        );
        // Everything asked of it: give its memory back before the loader
        // reads the BTF its own way (relocations), so that two parsed
        // copies are never held at once (they are the start-up peak).
        drop(kernel_btf);
        let mut missing = Vec::new();
        let raw_resolved = offsets.as_ref().is_some_and(btf::raw_syscalls_resolved);
        let raw = match opts.syscall_probes {
            SyscallProbes::Tracepoints => false,
            SyscallProbes::Auto if aya::features().bpf_perf_link() => false,
            SyscallProbes::Auto => {
                if !raw_resolved {
                    warn!(
                        "this kernel attaches syscall tracepoints through perf events, which \
                         cannot be pinned, and its BTF does not describe pt_regs and \
                         thread_info for the raw syscall probes: syscall and exec capture \
                         stops while no agent runs"
                    );
                }
                raw_resolved
            }
            SyscallProbes::Raw => {
                anyhow::ensure!(
                    raw_resolved,
                    "--syscall-probes raw needs the kernel's BTF to describe pt_regs and \
                     thread_info (x86-64); use --syscall-probes tracepoints"
                );
                true
            }
        };
        let exit_only = u8::from(!raw && task_pt_regs && raw_resolved);
        // This load, as the probes' INSTANCE: unique in a boot, never 0.
        let instance = monotonic_ns() | 1;
        // Watched syscalls this kernel has (a tracepoint each; the raw
        // probes drop calls to the others, -ENOSYS).
        let mut present = Vec::new();
        for &(nr, name) in syscalls::WATCHED {
            if tracefs::exists(&tracefs, "syscalls", &format!("sys_enter_{name}")) {
                present.push((nr, name));
            } else {
                missing.push(name);
            }
        }
        // The syscall exit's program on a thread of its own while the
        // others are verified (on 6.18: 1.7 s of 2.4 s, the io_uring
        // completion's 0.56 s next).
        let mut ahead = if raw {
            vec![
                "guardrail_raw_sys_exit",
                "guardrail_raw_sys_enter",
                "guardrail_raw_exec",
            ]
        } else {
            vec![
                "guardrail_sys_exit",
                "guardrail_sys_enter",
                "guardrail_exec",
            ]
        };
        ahead.extend(super::uring::programs(&uring_ops, raw));
        let register_offsets = uring_register.unwrap_or_default();
        // The probe object with its kfunc calls bound for `file_cast`, its
        // maps created (or the pinned ones reused) and its globals set.
        let load = |file_cast: Option<kfunc::FileCast>| -> Result<(Ebpf, Option<kfunc::FileCast>)> {
            let (object, calls) = kfunc::bind_rdonly_cast(
                OBJECT,
                file_cast.map_or(kfunc::Binding::Absent, |c| kfunc::Binding::Kfunc(c.kfunc)),
            )
            .context("binding the probes' kernel function calls")?;
            // A build whose probes never cast has nothing to turn on.
            let file_cast = file_cast.filter(|_| calls > 0);
            let (cast_id, cast_offset) = file_cast.map_or((0, 0), |c| (c.holder, c.offset));
            let mut loader = EbpfLoader::new();
            if let Some(s) = &state {
                for name in pinned::MAPS {
                    loader.map_pin_path(name, s.map_path(name));
                }
            }
            let ebpf = loader
                .override_global("AGENT_TGID", &agent_tgid, true)
                .override_global("ONLY_TGID", &opts.only_tgid, true)
                .override_global("CAPTURE_READ_OPENS", &read_opens, true)
                .override_global("SELF_PROTECT", &self_protect, true)
                .override_global("TASK_BTF", &task_btf, true)
                .override_global("EXIT_ONLY", &exit_only, true)
                .override_global("INSTANCE", &instance, true)
                .override_global("FILE_CAST_BTF_ID", &cast_id, true)
                .override_global("FILE_CAST_OFFSET", &cast_offset, true)
                .override_global("WAKEUP_BYTES", &opts.wakeup_bytes, true)
                .override_global("EXEC_OLD_PID_OFFSET", &old_pid_offset, true)
                .override_global("EXEC_FILENAME_OFFSET", &filename_offset, true)
                .override_global("URING_CREATE_OFFSETS", &uring_offsets[..], true)
                .override_global("URING", &uring_ops.offsets, true)
                .override_global("URING_REGISTER_OFFSETS", &register_offsets[..], true)
                .override_global("OFFSETS", &offsets_value, true)
                .map_max_entries("EVENTS", opts.ring_buffer_bytes)
                .load(object.bytes())
                .context("loading the guardrail probes into the kernel")?;
            Ok((ebpf, file_cast))
        };
        let (mut ebpf, mut file_cast) = load(file_cast)?;
        // The BPF-LSM programs need the kernel's BTF as aya reads it (the
        // loader's copy is gone): read it while the verifier works, on
        // the CPU the shorter half of the verification leaves idle.
        let lsm_btf = std::thread::Builder::new()
            .name("btf".into())
            .spawn(|| aya::Btf::from_sys_fs().ok())
            .context("starting the BTF reader thread")?;
        // A kernel that has `bpf_rdonly_cast` yet refuses the probes with
        // their call of it (a verifier of 6.2 to 6.11 this was not tried
        // on) still gets the read watch, by helper reads: the probes are
        // loaded again with the calls left out, rather than the agent not
        // starting. The calls are only in programs of `ahead` (the syscall
        // exits and the io_uring completions reach `reads::watched_in`),
        // so this is where such a refusal comes. On this rare path the
        // loader parses the kernel's BTF again while the BTF thread may
        // hold its own copy: a higher start-up peak, once.
        let mut typed_files_note = None;
        if let Err(refused) = super::attach::verify_ahead(&mut ebpf, &ahead) {
            let log = format!("{refused:#}");
            // Only the verifier's refusal: anything else (a thread that
            // would not start) would fail the same way again.
            let verifier_refused = refused.chain().any(|e| {
                matches!(
                    e.downcast_ref::<aya::programs::ProgramError>(),
                    Some(aya::programs::ProgramError::LoadError { .. })
                )
            });
            if file_cast.is_none() || !verifier_refused {
                return Err(refused);
            }
            let verdict = super::attach::verifier_verdict(&log).to_string();
            warn!(
                "the kernel refused the probes with the read watch's typed file loads \
                 (bpf_rdonly_cast): {verdict}; loading them again with helper reads"
            );
            debug!("{log}");
            drop(ebpf);
            (ebpf, file_cast) = load(None)?;
            super::attach::verify_ahead(&mut ebpf, &ahead).with_context(|| {
                format!(
                    "loading the probes with helper reads, after the kernel refused them \
                     with typed file loads ({verdict})"
                )
            })?;
            typed_files_note = Some(format!(
                "refused by this kernel ({verdict}): helper reads instead"
            ));
        }
        let own_map_ids = map_ids(&ebpf);
        let mut links = Links::new(state.as_ref());
        let mut attached = Vec::new();
        let to = &mut (&mut links, &mut attached);
        if raw {
            for (program, tp) in [
                ("guardrail_raw_sys_enter", "sys_enter"),
                ("guardrail_raw_sys_exit", "sys_exit"),
                ("guardrail_raw_exec", "sched_process_exec"),
            ] {
                attach_raw(&mut ebpf, to, program, tp)?;
            }
        } else {
            for (phase, program) in [
                ("enter", "guardrail_sys_enter"),
                ("exit", "guardrail_sys_exit"),
            ] {
                // With EXIT_ONLY, an entry program only where the call
                // parks something at its entry.
                let tps: Vec<String> = present
                    .iter()
                    .filter(|(nr, _)| {
                        phase == "exit" || exit_only == 0 || syscalls::parked_at_entry(*nr)
                    })
                    .map(|(_, name)| format!("sys_{phase}_{name}"))
                    .collect();
                let tps: Vec<&str> = tps.iter().map(String::as_str).collect();
                attach_tracepoint(&mut ebpf, to, program, "syscalls", &tps)?;
            }
            attach_tracepoint(
                &mut ebpf,
                to,
                "guardrail_exec",
                "sched",
                &["sched_process_exec"],
            )?;
        }
        // With the raw syscall probes, the io_uring set-up and register
        // tracepoints as raw ones too (pinnable where the others are not),
        // when BTF gives their prototypes; else as tracepoints.
        let raw_register = match uring_raw_args.1 {
            Some(5) => Some("guardrail_raw_uring_register"),
            Some(6) => Some("guardrail_raw_uring_register_eventfd"),
            _ => None,
        }
        .filter(|_| raw);
        let raw_setup = raw && uring_raw_args.0 == Some(5);
        let setup = raw_setup || uring_create.iter().all(Option::is_some);
        if raw_setup {
            attach_raw(
                &mut ebpf,
                to,
                "guardrail_raw_uring_create",
                "io_uring_create",
            )?;
        } else if setup {
            attach_tracepoint(
                &mut ebpf,
                to,
                "guardrail_uring_create",
                "io_uring",
                &["io_uring_create"],
            )?;
        }
        let register = raw_register.is_some() || uring_register.is_some();
        if let Some(program) = raw_register {
            attach_raw(&mut ebpf, to, program, "io_uring_register")?;
        } else if register {
            attach_tracepoint(
                &mut ebpf,
                to,
                "guardrail_uring_register",
                "io_uring",
                &["io_uring_register"],
            )?;
        }
        if !setup {
            warn!("this kernel has no io_uring:io_uring_create tracepoint: io_uring set-ups are not reported");
        }
        if !register {
            warn!("this kernel has no io_uring:io_uring_register tracepoint: files and buffers registered with a ring are not reported");
        }
        super::uring::attach(&mut ebpf, &uring_ops, raw, to)?;
        // Forks and exits keep the agent's process table true to the
        // kernel; without BTF offsets the probes cannot tell threads from
        // processes and stay silent.
        // The exec raw tracepoint keeps lineage marks (kill/deny rules'
        // `ancestor_exe_not`), as fork and exit do.
        for (program, tp) in [
            ("guardrail_fork", "sched_process_fork"),
            ("guardrail_exit", "sched_process_exit"),
            ("guardrail_lineage_exec", "sched_process_exec"),
        ] {
            attach_raw(&mut ebpf, to, program, tp)?;
        }

        let lsm_btf = lsm_btf
            .join()
            .map_err(|_| anyhow::anyhow!("the BTF reader thread panicked"))?;
        let loaded = enforce::load(&mut ebpf, lsm_btf.as_ref(), shapes, &mut links, own_map_ids);
        // The last use of the BPF-LSM programs' BTF. Parsing it needs tens
        // of MiB for a moment: they go back to the system before the ring
        // buffer is mapped (as many MiB again, for good), so that the two
        // are never resident at once — together they were the agent's
        // peak memory.
        drop(lsm_btf);
        // SAFETY: no arguments that could be invalid.
        unsafe { libc::malloc_trim(0) };
        // Records written meanwhile wait in the kernel's ring: mapping it
        // later loses none.
        let Map::RingBuf(events) = ebpf.take_map("EVENTS").context("EVENTS map")? else {
            anyhow::bail!("EVENTS is not a ring buffer");
        };
        let ring = RingReader::new(events, opts.ring_buffer_bytes)?;
        let enforcer = match (offsets, loaded) {
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
        let read_watch = super::watch::ReadWatch::take(&mut ebpf)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("COUNTERS map")?)?;
        let mut ledger: Array<MapData, u64> =
            Array::try_from(ebpf.take_map("AGENT_STATE").context("AGENT_STATE map")?)?;
        info!(
            tracepoints = attached.len(),
            syscalls = SyscallProbes::name(raw),
            missing = ?missing,
            typed_tasks = task_btf == 1,
            typed_files = file_cast.is_some(),
            exit_only_calls = exit_only == 1,
            "probes attached"
        );
        let slot = |ledger: &Array<MapData, u64>, i: u32| ledger.get(&i, 0).unwrap_or(0);
        let mut reported = KernelCounters::default();
        let continuity = match &state {
            None => None,
            Some(s) => {
                let adopted = found == Found::Adoptable;
                let mut c = Continuity {
                    state_dir: s.dir().display().to_string(),
                    adopted,
                    links_pinned: links.pinned.len(),
                    not_pinned: links.unpinnable.clone(),
                    ..Default::default()
                };
                if let Found::Unusable(why) = &found {
                    c.replaced = Some(why.clone());
                }
                if adopted {
                    reported.ringbuf_drops = slot(&ledger, pinned::REPORTED_RINGBUF);
                    reported.pending_drops = slot(&ledger, pinned::REPORTED_INFLIGHT);
                    c.previous_pid = Some(slot(&ledger, pinned::OWNER_PID) as u32);
                    c.previous_stopped_cleanly = Some(slot(&ledger, pinned::STOPPED_CLEANLY) != 0);
                    let last_seen = slot(&ledger, pinned::LAST_SEEN_NS);
                    c.unattended_ms = Some(monotonic_ns().saturating_sub(last_seen) / 1_000_000);
                    info!(
                        state = %s.dir().display(),
                        previous_pid = c.previous_pid,
                        unattended_ms = c.unattended_ms,
                        "adopted the pinned state: the records written while no agent ran come first"
                    );
                }
                if !c.not_pinned.is_empty() {
                    warn!(
                        "this kernel attaches tracepoints through perf events, which cannot be \
                         pinned: capture of {} tracepoints stops while no agent runs (enforcement \
                         and process tracking continue)",
                        c.not_pinned.len()
                    );
                }
                ledger.set(pinned::OWNER_PID, std::process::id() as u64, 0)?;
                ledger.set(pinned::STOPPED_CLEANLY, 0, 0)?;
                ledger.set(pinned::LAST_SEEN_NS, monotonic_ns(), 0)?;
                Some(c)
            }
        };
        let pinned_links = links.pinned;
        let probes = Self {
            _ebpf: ebpf,
            counters,
            ledger,
            _pinned_links: pinned_links,
            state,
            reported,
            continuity,
            attached,
            missing,
            offsets,
            uring_unseen: uring_ops.unseen,
            read_watch: Some(read_watch),
            syscall_probes: SyscallProbes::name(raw),
            typed_tasks: task_btf == 1,
            typed_files: file_cast.is_some(),
            typed_files_note,
            instance,
        };
        Ok((probes, ring, enforcer))
    }

    /// This agent's programs enforce the rules now in force: remove the
    /// previous agent's links (their programs detach) and any state that
    /// was not adopted, and mark the state complete. Returns the records
    /// left unread in ring buffers that were removed (lost).
    pub fn complete_handover(&mut self, ring_bytes: u32) -> Result<u64> {
        // First: from here on these programs, not the previous agent's,
        // record the calls read only at their exit.
        self.ledger.set(pinned::EMITTER, self.instance, 0)?;
        let Some(state) = &self.state else {
            return Ok(0);
        };
        let unread = state.retire()?;
        let fresh = self.ledger.get(&pinned::COMPLETE, 0)? != pinned::layout_mark();
        if fresh {
            self.ledger.set(pinned::RING_BYTES, ring_bytes as u64, 0)?;
            self.ledger.set(pinned::PINNED_AT_NS, monotonic_ns(), 0)?;
            // Last: from here on the state is whole and may be adopted.
            self.ledger
                .set(pinned::COMPLETE, pinned::layout_mark(), 0)?;
        }
        if let Some(c) = &mut self.continuity {
            c.discarded_records = unread;
        }
        Ok(unread)
    }

    /// Leave the next agent what it needs: the losses already reported
    /// and this agent's last sign of life.
    pub fn heartbeat(&mut self, reported: &KernelCounters) {
        if self.state.is_none() {
            return;
        }
        let _ = self
            .ledger
            .set(pinned::REPORTED_RINGBUF, reported.ringbuf_drops, 0);
        let _ = self
            .ledger
            .set(pinned::REPORTED_INFLIGHT, reported.pending_drops, 0);
        let _ = self.ledger.set(pinned::LAST_SEEN_NS, monotonic_ns(), 0);
    }

    /// A clean stop: the pinned programs keep enforcing and capturing.
    pub fn stopped(&mut self) {
        if self.state.is_some() {
            let _ = self.ledger.set(pinned::LAST_SEEN_NS, monotonic_ns(), 0);
            let _ = self.ledger.set(pinned::STOPPED_CLEANLY, 1, 0);
        }
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

/// The kernel ids of every map of this load (the adopted pinned maps
/// among them), for self-protection.
fn map_ids(ebpf: &Ebpf) -> Vec<u32> {
    ebpf.maps()
        .filter_map(|(name, map)| {
            let data = match map {
                Map::Array(m)
                | Map::HashMap(m)
                | Map::LruHashMap(m)
                | Map::PerCpuArray(m)
                | Map::PerCpuHashMap(m)
                | Map::PerCpuLruHashMap(m)
                | Map::ProgramArray(m)
                | Map::RingBuf(m)
                | Map::Unsupported(m) => m,
                _ => {
                    warn!(
                        map = name,
                        "not guarded by self-protection: unexpected map type"
                    );
                    return None;
                }
            };
            match data.info() {
                Ok(info) => Some(info.id()),
                Err(e) => {
                    warn!(map = name, "not guarded by self-protection: {e}");
                    None
                }
            }
        })
        .collect()
}
