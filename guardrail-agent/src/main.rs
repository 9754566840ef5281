//! guardrail-agent: loads the probes, turns kernel records into events,
//! and serves them to the `guardrail` CLI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use guardrail_agent::audit::AuditLog;
use guardrail_agent::config::{Config, DEFAULT_PATH};
use guardrail_agent::control::{Access, ControlServer};
use guardrail_agent::doctor::{rule_effects, HostFacts, LsmState};
use guardrail_agent::fleet::{self, Applied, Fleet, Rejected, Update};
use guardrail_agent::kernel::capabilities::{bpf_lsm_state, kernel_release, Capabilities};
use guardrail_agent::kernel::pins::{self, DEFAULT_ROOT};
use guardrail_agent::kernel::probes::{ProbeOptions, Probes, SyscallProbes};
use guardrail_agent::kernel::ring::RingReader;
use guardrail_agent::metrics::Metrics;
use guardrail_agent::notify::{self, notify};
use guardrail_agent::outputs::Outputs;
use guardrail_agent::pipeline::{Pipeline, Print};
use guardrail_agent::procfs::ProcFs;
use guardrail_agent::protocol::{ReloadStatus, Status};
use guardrail_agent::reload::{self, Fingerprint};
use guardrail_agent::trust::Policy;
use guardrail_engine::decode;
use guardrail_engine::redact::Redactor;
use guardrail_engine::rules::builtin::{
    add_self_protection, add_state_protection, SELF_PROTECTION_RULES,
};
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::spec::{Action, Mode};
use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::{CentralText, RuleSet};

/// guardrail's host audit sensor: captures exec, file and permission
/// changes with eBPF and serves them to `guardrail tail`.
#[derive(Parser, Debug)]
#[command(name = "guardrail-agent", version)]
struct Args {
    /// Configuration file. A missing file at the default path means
    /// defaults; a missing file given explicitly is an error.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Control socket (overrides `agent.socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print every event to stdout.
    #[arg(long, value_enum, default_value = "none")]
    print: Print,
    /// Capture only this process (thread group): a diagnostic, like
    /// `strace -p`.
    #[arg(long, value_name = "PID")]
    only_pid: Option<u32>,
    /// Ring buffer size in bytes (overrides `capture.ring_buffer_bytes`).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Also capture opens that only read (overrides `capture.read_opens`).
    #[arg(long)]
    capture_read_opens: bool,
    /// Validate the configuration, say what each rule will do on this host,
    /// and exit.
    #[arg(long)]
    check_config: bool,
    /// Do not pin: probes, rules and ring buffer end with the agent
    /// (diagnostics and tests; a service keeps them pinned so that
    /// enforcement and capture never lapse).
    #[arg(long)]
    ephemeral: bool,
    /// Where the probes, rules and ring buffer are pinned (on bpffs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT)]
    state_dir: PathBuf,
    /// Remove the pinned state: guardrail's programs detach, its rules stop
    /// being enforced, unread records are freed. Refused while an agent
    /// runs (stop it first).
    #[arg(long)]
    unload: bool,
    /// After an agent ended without a clean stop (SIGKILL, the OOM killer,
    /// a crash) and was not started again: lift only its self-protection,
    /// as a clean stop does, so that the configuration and the binaries
    /// may change (the package's upgrade runs this); every other rule
    /// stays enforced. Refused while an agent runs.
    #[arg(long, conflicts_with = "unload")]
    lift_self_protection: bool,
    /// Where the syscall and exec probes attach: `auto` picks `raw` on
    /// kernels before 5.15, whose per-syscall tracepoints cannot be pinned
    /// (capture would pause between agents), `tracepoints` elsewhere.
    #[arg(long, value_enum, default_value = "auto")]
    syscall_probes: SyscallProbes,
    /// Benchmark only: run the minimal copy-every-syscall probe instead of
    /// guardrail's, print what it received on SIGTERM (`cargo xtask bench`).
    #[arg(long, hide = true)]
    bench_floor: bool,
    /// Write the man page into DIR and exit (used to build the package).
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<PathBuf>,
}

/// The config file in use: the one given, else the default one if present.
fn config_path(args: &Args) -> Option<PathBuf> {
    match &args.config {
        Some(path) => Some(path.clone()),
        None if Path::new(DEFAULT_PATH).exists() => Some(DEFAULT_PATH.into()),
        None => None,
    }
}

/// The configuration, its rules, and who may change what the agent
/// trusts; refused unless only root (and the admin group) can change it.
fn load_config(args: &Args) -> Result<(Config, RuleSet, Policy)> {
    let (mut config, rules, policy) = match config_path(args) {
        Some(path) => reload::load(&path, None, None)?,
        None => (Config::default(), RuleSet::default(), Policy::agent(None)),
    };
    if let Some(s) = &args.socket {
        config.agent.socket = s.clone();
    }
    if let Some(rb) = args.ring_buffer_bytes {
        config.capture.ring_buffer_bytes = rb;
        config.validate_path(args.config.as_deref())?;
    }
    if args.capture_read_opens {
        config.capture.read_opens = true;
    }
    Ok((config, rules, policy))
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUARDRAIL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.man {
        std::fs::create_dir_all(dir)?;
        let page = dir.join("guardrail-agent.8");
        let mut out = Vec::new();
        clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
            .section("8")
            .render(&mut out)?;
        std::fs::write(&page, out).with_context(|| format!("writing {}", page.display()))?;
        return Ok(());
    }
    if args.unload {
        return match pins::unload(&args.state_dir)? {
            true => {
                println!(
                    "removed {}: guardrail's programs are detached and its rules no longer enforced",
                    args.state_dir.display()
                );
                Ok(())
            }
            false => {
                println!("nothing pinned at {}", args.state_dir.display());
                Ok(())
            }
        };
    }
    if args.lift_self_protection {
        match guardrail_agent::kernel::enforce::lift_self_protection(&args.state_dir, &SELF_PROTECTION_RULES)? {
            None => println!("nothing pinned at {}", args.state_dir.display()),
            Some(lifted) if lifted.is_empty() => {
                println!("self-protection was not in force (the last agent stopped cleanly, or its configuration turned it off)")
            }
            Some(lifted) => println!(
                "lifted {}: the configuration and guardrail's binaries may change; every other rule stays enforced",
                lifted.join(", ")
            ),
        }
        return Ok(());
    }
    let (config, rules, policy) = load_config(&args)?;
    if args.check_config {
        println!(
            "configuration is valid: {} rules, {} windows",
            rules.rules.len(),
            rules.windows.len()
        );
        // Judged from the LSM list only; `guardrail doctor` proves it by
        // loading the programs, and the agent with its canary at start.
        let lsm = LsmState::from_facts(&HostFacts::gather());
        if let LsmState::Absent(why) = &lsm {
            println!("BPF-LSM: {why}");
        }
        for line in rule_effects(&rules, &lsm) {
            println!("  {line}");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.bench_floor {
        raise_memlock_limit();
        return runtime.block_on(guardrail_agent::kernel::floor::run(
            config.capture.ring_buffer_bytes,
            Duration::from_millis(config.capture.drain_interval_ms),
        ));
    }
    runtime.block_on(run(args, config, rules, policy))
}

/// With BPF-LSM and `agent.self_protection`, add the rule that keeps the
/// configuration and the agent's binaries unchanged while it runs.
/// `pins`: the pinned state's directory, when the agent pins.
fn protect_self(
    config: &Config,
    path: Option<&Path>,
    pins: Option<&Path>,
    rules: &mut RuleSet,
    lsm: bool,
) -> Result<()> {
    if !(lsm && config.agent.self_protection) {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let cli = exe.with_file_name("guardrail");
    if let Some(pins) = pins.filter(|p| p.is_dir()) {
        add_state_protection(rules, pins, &[exe.clone(), cli.clone()])
            .context("building the pinned-state protection rule")?;
    }
    let Some(path) = path else {
        return Ok(());
    };
    add_self_protection(
        rules,
        path,
        &[exe, cli],
        &config.agent.self_protection_exempt,
    )
    .context("building the self-protection rule")
}

/// What the kernel enforces on this host. Without BPF-LSM every kill/deny
/// rule in enforce mode uses its fallback, and each is named once.
fn kernel_enforcement(rules: &RuleSet, available: bool) -> Enforcement {
    if available {
        return Enforcement {
            deny: true,
            kill: true,
        };
    }
    for r in &rules.rules {
        if r.mode == Mode::Enforce && matches!(r.action, Action::Kill | Action::Deny) {
            warn!(
                rule = %r.id,
                "{:?} cannot be enforced on this kernel; the rule's fallback acts and every event says so",
                r.action
            );
        }
    }
    Enforcement::default()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default
/// (8 MiB) is smaller than the default ring buffer.
fn raise_memlock_limit() {
    let release = kernel_release();
    if guardrail_agent::doctor::kernel_version(&release).is_some_and(|v| v >= (5, 11)) {
        return;
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        warn!(
            "cannot raise the memlock limit ({}); on kernels before 5.11 large ring buffers may fail to load",
            std::io::Error::last_os_error()
        );
    }
}

async fn run(args: Args, config: Config, rules: RuleSet, policy: Policy) -> Result<()> {
    let started = Instant::now();
    // Before any event: every event of this run is at least this late.
    let started_at = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    // First of all: a SIGTERM during start-up is then a clean stop once
    // the loop runs, never the default action's death.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    raise_memlock_limit();
    let opts = ProbeOptions {
        ring_buffer_bytes: config.capture.ring_buffer_bytes,
        wakeup_bytes: config
            .capture
            .wakeup_bytes
            .min(config.capture.ring_buffer_bytes as u64 / 2),
        capture_read_opens: config.capture.read_opens,
        only_tgid: args.only_pid.unwrap_or(0),
        self_protect: config.agent.self_protection,
        pin_root: (!args.ephemeral).then(|| args.state_dir.clone()),
        syscall_probes: args.syscall_probes,
    };
    let (mut probes, mut ring, enforcer) = Probes::load(&opts)?;
    // Parsing the kernel's BTF needs tens of MiB for a moment; give them
    // back to the system instead of keeping them in the heap for good.
    // SAFETY: no arguments that could be invalid.
    unsafe { libc::malloc_trim(0) };
    let (lsm_listed, lsm_note) = bpf_lsm_state();
    let (bpf_lsm, bpf_lsm_note) = match &enforcer {
        Ok(_) => (true, None),
        Err(why) => (
            false,
            Some(match lsm_note {
                Some(note) => format!("{why}; {note}"),
                None => why.clone(),
            }),
        ),
    };
    if let Err(why) = &enforcer {
        if lsm_listed {
            warn!("BPF-LSM is listed but unusable: {why}");
        }
    }
    let capabilities = Capabilities {
        kernel: kernel_release(),
        tracepoints: true,
        ring_buffer: true,
        btf: probes.offsets.is_some(),
        bpf_lsm,
        bpf_lsm_note: bpf_lsm_note.clone(),
        missing_syscalls: probes.missing.iter().map(|s| s.to_string()).collect(),
        uring_unseen: probes.uring_unseen.clone(),
        syscall_probes: probes.syscall_probes.into(),
    };
    match &bpf_lsm_note {
        None => info!(
            "kernel {}: BPF-LSM is active (canary denied): deny and kill rules are enforced in the kernel",
            capabilities.kernel
        ),
        Some(note) => warn!(
            "kernel {}: deny and kill cannot be enforced here ({note}); those rules fall back",
            capabilities.kernel
        ),
    }

    let (tx, _) = broadcast::channel(8192);
    let config_file = config_path(&args);
    let kernel_can_enforce = enforcer.is_ok();
    let mut rules = rules;
    let pins = (!args.ephemeral).then_some(args.state_dir.as_path());
    protect_self(
        &config,
        config_file.as_deref(),
        pins,
        &mut rules,
        kernel_can_enforce,
    )?;
    let enforcement = kernel_enforcement(&rules, kernel_can_enforce);
    let status = Arc::new(Mutex::new(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        capabilities,
        tracepoints_attached: probes.attached.len(),
        probes: guardrail_agent::kernel::probes::probes_id(),
        ring_buffer_bytes: opts.ring_buffer_bytes,
        config_file: config_file.as_ref().map(|p| p.display().to_string()),
        rules: rules.rules.len(),
        enforcement,
        redaction_enabled: config.redaction.enabled,
        ..Default::default()
    }));
    let mut fingerprint = config_file.as_ref().map(|p| Fingerprint::of(p, &rules));
    let rules = Arc::new(rules);
    let shared_rules = Arc::new(Mutex::new(rules.clone()));
    let access = match &config.agent.socket_group {
        None => Access::default(),
        Some(name) => {
            let names = Names::system();
            let gid = names.group(name).with_context(|| {
                format!("agent.socket_group: no group named {name:?} on this host")
            })?;
            Access {
                gid: Some(gid),
                members: names.member_uids(name),
            }
        }
    };

    let metrics = match config.metrics.listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
            let metrics = Arc::new(Metrics::new(status.clone()));
            tokio::spawn(guardrail_agent::metrics::serve(listener, metrics.clone()));
            info!("metrics served at http://{addr}/metrics");
            Some(metrics)
        }
    };
    // The probes are attached: every process is either running now (seeded
    // from /proc) or born in a fork record still to come.
    let mut processes = ProcFs::default();
    processes.seed();
    let mut pipeline = Pipeline::new(processes, args.print, tx.clone());
    pipeline.metrics = metrics.clone();
    pipeline.set_redactor(redactor(&config)?);
    if config.audit_log.enabled {
        pipeline.audit = Some(AuditLog::start(&config.audit_log, &policy)?);
    }
    if !config.output.is_empty() {
        let sections: Vec<_> = config.output.iter().map(|o| o.get_ref()).collect();
        pipeline.outputs = Some(Outputs::start(&sections)?);
    }
    notify::starting("putting the rules in force");
    pipeline.set_enforcer(enforcer.ok());
    pipeline.set_read_watch(probes.read_watch.take());
    pipeline.set_reported(probes.reported);
    pipeline
        .set_rules(rules, enforcement)
        .context("compiling kill/deny rules into the kernel")?;
    // This agent's programs enforce this configuration's rules: only now
    // may the previous agent's go.
    let discarded = probes
        .complete_handover(opts.ring_buffer_bytes)
        .context("handing the pinned state over to this agent")?;
    pipeline.discarded(discarded);
    pipeline.hand_over();
    // Records an agent killed before it could commit them are read again:
    // those already in the audit log are skipped.
    if probes.continuity.as_ref().is_some_and(|c| c.adopted) {
        if let Some((ktime, tid)) = pipeline.audit.as_ref().and_then(|a| a.last_logged()) {
            let skipped = ring.skip_through(|data| {
                decode::header(data).is_some_and(|h| h.exit_ns == ktime && h.tid == tid)
            });
            ring.commit_read();
            if skipped > 0 {
                info!(
                    skipped,
                    "records the previous agent had already logged were skipped"
                );
            }
            if let Some(c) = &mut probes.continuity {
                c.already_logged = skipped as u64;
            }
        }
    }
    status.lock().unwrap().continuity = probes.continuity.clone();
    // The socket appears only now, when the rules are in force and the
    // signal handlers are in place: a client that can connect may rely on
    // both, and on a status with every field published (audit log,
    // outputs, counters).
    update(&mut probes, &mut pipeline, &status, started);
    let listener = ControlServer::bind(&config.agent.socket, &access)?;
    let server = Arc::new(ControlServer {
        status: status.clone(),
        events: tx,
        rules: shared_rules.clone(),
        access,
        last_published: pipeline.last_published(),
        started_at,
    });
    server.serve_on_own_thread(listener)?;
    info!(
        socket = %config.agent.socket.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "guardrail-agent running"
    );
    // Central rules arrive after start: until then (and whenever NATS is
    // unreachable) the local rules are in force, plus the central set
    // last applied while this agent runs (docs/fleet.md).
    let mut fleet = match &config.fleet {
        Some(f) if config_file.is_some() => Some(Fleet::start(
            f,
            &guardrail_agent::outputs::hostname(),
            status.clone(),
        )?),
        _ => None,
    };
    // The status replaces the last start-up step's in `systemctl status`.
    if let Err(e) = notify("READY=1\nSTATUS=running") {
        warn!("cannot tell the service manager that the agent is ready: {e}");
    }
    // When the next time window opens or closes (checked again at least
    // daily), after telling the kernel which are active now.
    let next_edge = |pipeline: &mut Pipeline<ProcFs>| {
        tokio::time::Instant::now()
            + pipeline
                .sync_windows()
                .unwrap_or(Duration::from_secs(86_400))
    };
    let mut window_edge = next_edge(&mut pipeline);
    let mut watch = tokio::time::interval(Duration::from_secs(2));
    // Validate and compile the whole new configuration; on any error the
    // rules in force stay, and status says why.
    let fleet_origin = fleet.as_ref().map(|f| f.origin.clone());
    let reload = |pipeline: &mut Pipeline<ProcFs>,
                  why: &str,
                  central: Option<&Applied>|
     -> Result<Fingerprint, String> {
        let Some(path) = config_file.as_ref() else {
            return Err("no configuration file".into());
        };
        let central = match (central, &fleet_origin) {
            (Some(a), Some(origin)) => Some(CentralText {
                origin,
                text: &a.text,
            }),
            _ => None,
        };
        let mut attempt = || -> Result<Fingerprint> {
            // Judged by the admin group in force, not one the new file names.
            let (new_config, mut set, _) = reload::load(path, Some(&policy), central)?;
            protect_self(&config, Some(path), pins, &mut set, kernel_can_enforce)?;
            if new_config.capture != config.capture
                || new_config.agent != config.agent
                || new_config.fleet != config.fleet
                || new_config.audit_log != config.audit_log
                || new_config.metrics != config.metrics
                || new_config.output != config.output
            {
                warn!("[agent], [capture], [audit_log], [metrics], [fleet] and [[output]] changes take effect when the agent restarts");
            }
            let fp = Fingerprint::of(path, &set);
            let redaction = redactor(&new_config)?;
            let enforcement = kernel_enforcement(&set, kernel_can_enforce);
            let set = Arc::new(set);
            pipeline
                .set_rules(set.clone(), enforcement)
                .context("the new rules cannot be put in the kernel")?;
            pipeline.set_redactor(redaction);
            info!(rules = set.rules.len(), "{why}: configuration reloaded");
            let mut s = status.lock().unwrap();
            s.redaction_enabled = new_config.redaction.enabled;
            s.rules = set.rules.len();
            s.enforcement = enforcement;
            *shared_rules.lock().unwrap() = set;
            Ok(fp)
        };
        let result = attempt();
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            error!(
                "{why}: the new configuration is not used; the previous rules stay in force:\n{e}"
            );
        }
        if let Some(m) = &metrics {
            m.reload(error.is_none());
        }
        status.lock().unwrap().last_reload = Some(ReloadStatus {
            ok: error.is_none(),
            time,
            error,
        });
        result.map_err(|e| format!("{e:#}"))
    };
    // The central set in force (None: none applied yet).
    let mut central: Option<Applied> = None;
    let mut uncommitted = Uncommitted::default();
    // SAFETY: the reader owns its map fd, keeps it open and returns the
    // same fd for as long as it lives, and the AsyncFd owns the reader.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("polling the ring buffer")?;
    let mut drain = tokio::time::interval(Duration::from_millis(config.capture.drain_interval_ms));
    loop {
        // After every drain the kernel's counters are compared, so that a
        // loss is reported right behind the events around it.
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let more = drain_ring(guard.get_inner_mut(), &mut pipeline, &mut uncommitted);
                if !more {
                    guard.clear_ready();
                }
                update(&mut probes, &mut pipeline, &status, started);
                if more {
                    // Under a storm the ring never empties: let the control
                    // socket and the metrics endpoint run between batches.
                    tokio::task::yield_now().await;
                }
            }
            _ = drain.tick() => {
                // Not woken (the kernel wakes the agent only when waiting
                // data crosses wakeup_bytes): empty the ring now, a batch
                // at a time.
                while drain_ring(ring.get_mut(), &mut pipeline, &mut uncommitted) {
                    update(&mut probes, &mut pipeline, &status, started);
                    tokio::task::yield_now().await;
                }
                uncommitted.commit(ring.get_mut(), &pipeline);
                update(&mut probes, &mut pipeline, &status, started);
                let backlog = ring.get_ref().backlog_bytes();
                update_periodic(&pipeline, fleet.as_ref(), backlog, &status);
            }
            _ = sighup.recv() => {
                if let Ok(fp) = reload(&mut pipeline, "SIGHUP", central.as_ref()) {
                    fingerprint = Some(fp);
                }
                window_edge = next_edge(&mut pipeline);
            }
            _ = tokio::time::sleep_until(window_edge) => {
                window_edge = next_edge(&mut pipeline);
            }
            _ = watch.tick() => {
                let Some(path) = config_file.as_ref() else { continue };
                let current = Fingerprint::of(path, &shared_rules.lock().unwrap());
                if fingerprint.as_ref() != Some(&current) {
                    // Remember what we saw, valid or not, so that an invalid
                    // file is reported once, not every two seconds.
                    fingerprint = Some(current);
                    if let Ok(fp) = reload(&mut pipeline, "config file changed", central.as_ref()) {
                        fingerprint = Some(fp);
                    }
                    window_edge = next_edge(&mut pipeline);
                }
            }
            Some(update) = next_update(&mut fleet) => {
                let Some(f) = &fleet else { continue };
                if let Some(fp) = apply_central(update, f, &mut central, |candidate| {
                    reload(&mut pipeline, "central rule set", Some(candidate))
                }) {
                    fingerprint = Some(fp);
                }
                f.report_now();
                window_edge = next_edge(&mut pipeline);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    let _ = notify("STOPPING=1");
    // A clean stop (by init, with self-protection) leaves every rule
    // enforced but the one that keeps the configuration and binaries as
    // they are: stopped, the agent may be reconfigured. A crash or SIGKILL
    // leaves it in force.
    // The pinned state's rule goes with it: a new build (another program)
    // must be able to adopt or replace the state.
    let mut lifted = false;
    for rule in SELF_PROTECTION_RULES {
        match pipeline.lift_kernel_rule(rule) {
            Ok(was) => lifted |= was,
            Err(e) => warn!("{rule} could not be lifted: {e:#}"),
        }
    }
    if lifted {
        info!("self-protection lifted: the configuration may be edited while the agent is stopped");
    }
    // Flush: whatever the kernel wrote before we stop is still delivered.
    while drain_ring(ring.get_mut(), &mut pipeline, &mut uncommitted) {}
    update(&mut probes, &mut pipeline, &status, started);
    // Flushes the audit log; outputs get a few seconds to deliver what
    // they hold. Then every record read is handled.
    drop(pipeline);
    ring.get_mut().commit_read();
    // Pinned programs keep enforcing and capturing for the next agent.
    probes.stopped();
    drop(probes);
    let _ = std::fs::remove_file(&config.agent.socket);
    info!("guardrail-agent stopped");
    Ok(())
}

/// The next rule set the fleet's watcher saw; never, without a fleet.
async fn next_update(fleet: &mut Option<Fleet>) -> Option<Update> {
    match fleet {
        Some(f) => f.updates.recv().await,
        None => std::future::pending().await,
    }
}

/// Validate and apply a central rule set with `reload` (the file reload's
/// path: all or nothing); on any error the rules in force stay, and the
/// error goes to the fleet's status. A deleted key changes nothing: the
/// set in force stays until another is pushed (an empty one removes the
/// central rules), so that a mistaken delete never lifts enforcement.
fn apply_central(
    update: Update,
    fleet: &Fleet,
    central: &mut Option<Applied>,
    reload: impl FnOnce(&Applied) -> Result<Fingerprint, String>,
) -> Option<Fingerprint> {
    let (revision, value) = match update {
        Update::Put { revision, value } => (revision, value),
        Update::Deleted { revision } => {
            if !fleet.state.lock().unwrap().seen(revision) {
                warn!(revision, "the central rule set was deleted; the one in force stays (push an empty set to remove the central rules)");
                fleet.state.lock().unwrap().deleted_revision = Some(revision);
            }
            return None;
        }
    };
    if fleet.state.lock().unwrap().seen(revision) {
        return None;
    }
    let hash = fleet::rules_hash(&value);
    let outcome = match String::from_utf8(value) {
        Err(e) => {
            let error = format!(
                "{}: revision {revision} is not UTF-8 text (byte {}): not a rule set",
                fleet.origin.display(),
                e.utf8_error().valid_up_to()
            );
            error!("central rule set refused; the rules in force stay: {error}");
            Err(error)
        }
        Ok(text) => {
            let candidate = Applied {
                revision,
                hash: hash.clone(),
                text,
            };
            reload(&candidate).map(|fp| (fp, candidate))
        }
    };
    let mut state = fleet.state.lock().unwrap();
    state.deleted_revision = None;
    match outcome {
        Ok((fp, applied)) => {
            info!(revision, hash = %applied.hash, "central rule set applied");
            state.applied = Some(applied.clone());
            state.rejected = None;
            *central = Some(applied);
            Some(fp)
        }
        Err(error) => {
            // Logged where it was found (the reload says why).
            state.rejected = Some(Rejected {
                revision,
                hash,
                error,
            });
            None
        }
    }
}

/// Records handled before the loop looks at anything else.
const DRAIN_BATCH: usize = 8192;

/// Records read but not yet given back to the kernel: each with its end
/// in the ring and the audit log records that must be settled first.
#[derive(Default)]
struct Uncommitted(std::collections::VecDeque<(usize, u64)>);

impl Uncommitted {
    /// Give back the space of every record whose events the audit log
    /// writer is done with: a SIGKILL can no longer lose them.
    fn commit(&mut self, ring: &mut RingReader, pipeline: &Pipeline<ProcFs>) {
        let (_, settled) = pipeline.audit_progress();
        let mut upto = None;
        while let Some(&(end, needs)) = self.0.front() {
            if needs > settled {
                break;
            }
            upto = Some(end);
            self.0.pop_front();
        }
        if let Some(end) = upto {
            ring.commit(end);
        }
    }
}

/// Handle up to a batch of records; true when the ring may hold more.
fn drain_ring(
    ring: &mut RingReader,
    pipeline: &mut Pipeline<ProcFs>,
    uncommitted: &mut Uncommitted,
) -> bool {
    let mut more = true;
    for _ in 0..DRAIN_BATCH {
        match ring.next_record() {
            Some((data, end)) => {
                pipeline.record(data);
                uncommitted.0.push_back((end, pipeline.audit_progress().0));
            }
            None => {
                more = false;
                break;
            }
        }
    }
    pipeline.hand_over();
    uncommitted.commit(ring, pipeline);
    more
}

fn update(
    probes: &mut Probes,
    pipeline: &mut Pipeline<ProcFs>,
    status: &Mutex<Status>,
    started: Instant,
) {
    let counters = match probes.counters() {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read kernel counters: {e:#}");
            return;
        }
    };
    pipeline.kernel_counters(counters);
    // A loss record goes to the audit log right behind the events around it.
    pipeline.hand_over();
    pipeline.housekeeping();
    probes.heartbeat(&pipeline.reported());
    let mut s = status.lock().unwrap();
    s.uptime_s = started.elapsed().as_secs();
    s.events_total = pipeline.events_total;
    s.events_per_s = pipeline.events_per_s();
    s.lost_total = counters.lost();
    s.lost_ringbuf = counters.ringbuf_drops;
    s.lost_inflight = counters.pending_drops;
    s.lost_process_records = counters.lifecycle_drops;
    s.processes_tracked = pipeline.processes_tracked();
    s.decode_errors = pipeline.decode_errors;
    s.decisions = pipeline.decisions;
    s.audit_log = pipeline.audit.as_ref().map(|a| a.snapshot());
    s.redacted_events = pipeline.redacted_events;
    s.outputs = pipeline
        .outputs
        .as_ref()
        .map(|o| o.snapshot())
        .unwrap_or_default();
}

/// What changes rarely or costs a map read or a lock to learn (and the
/// ring's backlog once the tick's drain committed): on the drain tick,
/// not after every batch of events.
fn update_periodic(
    pipeline: &Pipeline<ProcFs>,
    fleet: Option<&Fleet>,
    ring_backlog_bytes: u64,
    status: &Mutex<Status>,
) {
    let lineage_marks_lost = pipeline.lineage_marks_lost();
    let fleet = fleet.map(Fleet::snapshot);
    let mut s = status.lock().unwrap();
    s.ring_backlog_bytes = ring_backlog_bytes;
    s.lineage_marks_lost = lineage_marks_lost;
    s.read_watch = pipeline.read_watch_status();
    s.fleet = fleet;
}

/// The configured redaction, said out loud when it is off.
fn redactor(config: &Config) -> Result<Arc<Redactor>> {
    let r = Redactor::new(&config.redaction).context("compiling the redaction patterns")?;
    if !r.enabled() {
        warn!("secret redaction is off ([redaction] enabled = false): arguments and paths reach the audit log, tail clients and outputs as they are");
    }
    Ok(Arc::new(r))
}
