//! The agent's life: [`Agent::start`] loads the probes, puts the rules in
//! force, takes the pinned state over and opens the control socket; [`run`]
//! is the event loop (drain the ring, reload, time windows, central rules)
//! until SIGTERM or SIGINT; [`Agent::stop`] leaves the pinned programs
//! capturing and enforcing for the next agent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use guardrail_agent::audit::AuditLog;
use guardrail_agent::config::Config;
use guardrail_agent::control::{Access, ControlServer};
use guardrail_agent::fleet::{self, Applied, Fleet, Rejected, Update};
use guardrail_agent::kernel::capabilities::{bpf_lsm_state, kernel_release, Capabilities};
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

use crate::raise_memlock_limit;

/// What the command line decides about a run.
pub struct Launch {
    /// The configuration file in use (None: defaults, no reloads).
    pub config_file: Option<PathBuf>,
    pub print: Print,
    pub only_pid: Option<u32>,
    /// Where the state that outlives the agent is pinned (None:
    /// `--ephemeral`).
    pub pin_root: Option<PathBuf>,
    pub syscall_probes: SyscallProbes,
}

/// A running agent: its probes, the pipeline events go through, and what
/// it reports.
pub struct Agent {
    started: Instant,
    config: Config,
    /// Who may own the configuration, as judged at start.
    policy: Policy,
    config_file: Option<PathBuf>,
    pin_root: Option<PathBuf>,
    kernel_can_enforce: bool,
    probes: Probes,
    pipeline: Pipeline<ProcFs>,
    status: Arc<Mutex<Status>>,
    /// The rules in force, as the control socket lists them.
    shared_rules: Arc<Mutex<Arc<RuleSet>>>,
    metrics: Option<Arc<Metrics>>,
    /// How the central rule set is named (with `[fleet]`).
    fleet_origin: Option<PathBuf>,
    /// The central set in force (None: none applied yet).
    central: Option<Applied>,
    /// The configuration last seen, valid or not.
    fingerprint: Option<Fingerprint>,
    uncommitted: Uncommitted,
    /// When the next time window opens or closes.
    window_edge: tokio::time::Instant,
}

/// Start the agent and run it until SIGTERM or SIGINT.
pub async fn run(launch: Launch, config: Config, rules: RuleSet, policy: Policy) -> Result<()> {
    // First of all: a SIGTERM during start-up is then a clean stop once
    // the loop runs, never the default action's death.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let (mut agent, ring) = Agent::start(launch, config, rules, policy).await?;
    // Central rules arrive after start: until then (and whenever NATS is
    // unreachable) the local rules are in force, plus the central set
    // last applied while this agent runs (docs/fleet.md).
    let mut fleet = agent.start_fleet()?;
    // The status replaces the last start-up step's in `systemctl status`.
    if let Err(e) = notify("READY=1\nSTATUS=running") {
        warn!("cannot tell the service manager that the agent is ready: {e}");
    }
    agent.next_window();
    let mut watch = tokio::time::interval(Duration::from_secs(2));
    // SAFETY: the reader owns its map fd, keeps it open and returns the
    // same fd for as long as it lives, and the AsyncFd owns the reader.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("polling the ring buffer")?;
    let mut drain = tokio::time::interval(Duration::from_millis(
        agent.config.capture.drain_interval_ms,
    ));
    loop {
        // After every drain the kernel's counters are compared, so that a
        // loss is reported right behind the events around it.
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let more = agent.drain(guard.get_inner_mut());
                if !more {
                    guard.clear_ready();
                }
                agent.refresh();
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
                while agent.drain(ring.get_mut()) {
                    agent.refresh();
                    tokio::task::yield_now().await;
                }
                agent.tick(ring.get_mut(), fleet.as_ref());
            }
            _ = sighup.recv() => agent.reload_now("SIGHUP"),
            _ = tokio::time::sleep_until(agent.window_edge) => agent.next_window(),
            _ = watch.tick() => agent.reload_if_changed(),
            Some(update) = next_update(&mut fleet) => {
                let Some(f) = &fleet else { continue };
                agent.apply_central(update, f);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    agent.stop(ring.into_inner());
    Ok(())
}

impl Agent {
    /// Load the probes, put the rules in force, take the pinned state over
    /// from the previous agent, and open the control socket. Returns the
    /// agent and the ring buffer to drain.
    pub async fn start(
        launch: Launch,
        config: Config,
        rules: RuleSet,
        policy: Policy,
    ) -> Result<(Agent, RingReader)> {
        let started = Instant::now();
        // Before any event: every event of this run is at least this late.
        let started_at = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        raise_memlock_limit();
        let opts = ProbeOptions {
            ring_buffer_bytes: config.capture.ring_buffer_bytes,
            wakeup_bytes: config
                .capture
                .wakeup_bytes
                .min(config.capture.ring_buffer_bytes as u64 / 2),
            capture_read_opens: config.capture.read_opens,
            only_tgid: launch.only_pid.unwrap_or(0),
            self_protect: config.agent.self_protection,
            pin_root: launch.pin_root.clone(),
            syscall_probes: launch.syscall_probes,
        };
        let (mut probes, mut ring, enforcer) = Probes::load(&opts)?;
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
            typed_tasks: probes.typed_tasks,
            typed_files: probes.typed_files,
            typed_files_note: probes.typed_files_note.clone(),
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
        let config_file = launch.config_file.clone();
        let kernel_can_enforce = enforcer.is_ok();
        let mut rules = rules;
        let pins = launch.pin_root.as_deref();
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
        let fingerprint = config_file.as_ref().map(|p| Fingerprint::of(p, &rules));
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
        let mut pipeline = Pipeline::new(processes, launch.print, tx.clone());
        pipeline.metrics = metrics.clone();
        pipeline.set_redactor(redactor(&config)?);
        if config.audit_log.enabled {
            let form = guardrail_agent::outputs::log_process_form(&config);
            let mut log = AuditLog::start(&config.audit_log, &policy)?;
            log.set_process_form(form);
            pipeline.audit = Some(log);
            if form == guardrail_agent::config::ProcessForm::Ref {
                pipeline.name_processes_by_reference();
            }
            info!(process = ?form, "audit log: each event's process written so");
        }
        if !config.output.is_empty() {
            let sections: Vec<_> = config.output.iter().map(|o| o.get_ref()).collect();
            pipeline.outputs = Some(Outputs::start(&sections, pipeline.audit.as_ref())?);
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
        let fleet_origin = None;
        let agent = Agent {
            started,
            config,
            policy,
            config_file,
            pin_root: launch.pin_root,
            kernel_can_enforce,
            probes,
            pipeline,
            status,
            shared_rules,
            metrics,
            fleet_origin,
            central: None,
            fingerprint,
            uncommitted: Uncommitted::default(),
            window_edge: tokio::time::Instant::now(),
        };
        Ok((agent, ring))
    }

    /// Connect to the fleet's NATS (`[fleet]`, with a configuration file).
    fn start_fleet(&mut self) -> Result<Option<Fleet>> {
        let fleet = match &self.config.fleet {
            Some(f) if self.config_file.is_some() => Some(Fleet::start(
                f,
                &guardrail_agent::outputs::hostname(),
                self.status.clone(),
            )?),
            _ => None,
        };
        self.fleet_origin = fleet.as_ref().map(|f| f.origin.clone());
        Ok(fleet)
    }

    /// Tell the kernel which time windows are active now, and note when
    /// the next one opens or closes (checked again at least daily).
    fn next_window(&mut self) {
        self.window_edge = tokio::time::Instant::now()
            + self
                .pipeline
                .sync_windows()
                .unwrap_or(Duration::from_secs(86_400));
    }

    /// Handle up to a batch of records; true when the ring may hold more.
    fn drain(&mut self, ring: &mut RingReader) -> bool {
        drain_ring(ring, &mut self.pipeline, &mut self.uncommitted)
    }

    /// Compare the kernel's counters (a loss is reported right behind the
    /// events around it) and refresh the status.
    fn refresh(&mut self) {
        update(
            &mut self.probes,
            &mut self.pipeline,
            &self.status,
            self.started,
        );
    }

    /// The drain timer, once the ring is empty: give back what the audit
    /// log has settled, and refresh what the status reports.
    fn tick(&mut self, ring: &mut RingReader, fleet: Option<&Fleet>) {
        self.uncommitted.commit(ring, &self.pipeline);
        self.refresh();
        update_periodic(&self.pipeline, fleet, ring.backlog_bytes(), &self.status);
    }

    /// Reload the configuration file (`why`: what asked for it).
    fn reload_now(&mut self, why: &str) {
        let central = self.central.take();
        if let Ok(fp) = self.reload(why, central.as_ref()) {
            self.fingerprint = Some(fp);
        }
        self.central = central;
        self.next_window();
    }

    /// Reload when the configuration file (or a file it includes) changed.
    fn reload_if_changed(&mut self) {
        let Some(path) = self.config_file.as_ref() else {
            return;
        };
        let current = Fingerprint::of(path, &self.shared_rules.lock().unwrap());
        if self.fingerprint.as_ref() != Some(&current) {
            // Remember what we saw, valid or not, so that an invalid
            // file is reported once, not every two seconds.
            self.fingerprint = Some(current);
            self.reload_now("config file changed");
        }
    }

    /// A new central rule set (or its deletion) from the fleet.
    fn apply_central(&mut self, update: Update, fleet: &Fleet) {
        let mut central = self.central.take();
        let applied = apply_central(update, fleet, &mut central, |candidate| {
            self.reload("central rule set", Some(candidate))
        });
        self.central = central;
        if let Some(fp) = applied {
            self.fingerprint = Some(fp);
        }
        fleet.report_now();
        self.next_window();
    }

    /// Validate and compile the whole new configuration (with `central`,
    /// the central rule set to apply); on any error the rules in force
    /// stay, and status says why.
    fn reload(&mut self, why: &str, central: Option<&Applied>) -> Result<Fingerprint, String> {
        let Some(path) = self.config_file.clone() else {
            return Err("no configuration file".into());
        };
        let origin = self.fleet_origin.clone();
        let central = match (central, &origin) {
            (Some(a), Some(origin)) => Some(CentralText {
                origin,
                text: &a.text,
            }),
            _ => None,
        };
        let result = self.reload_from(&path, why, central);
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let error = result.as_ref().err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            error!(
                "{why}: the new configuration is not used; the previous rules stay in force:\n{e}"
            );
        }
        if let Some(m) = &self.metrics {
            m.reload(error.is_none());
        }
        self.status.lock().unwrap().last_reload = Some(ReloadStatus {
            ok: error.is_none(),
            time,
            error,
        });
        result.map_err(|e| format!("{e:#}"))
    }

    fn reload_from(
        &mut self,
        path: &Path,
        why: &str,
        central: Option<CentralText>,
    ) -> Result<Fingerprint> {
        let config = &self.config;
        // Judged by the admin group in force, not one the new file names.
        let (new_config, mut set, _) = reload::load(path, Some(&self.policy), central)?;
        protect_self(
            config,
            Some(path),
            self.pin_root.as_deref(),
            &mut set,
            self.kernel_can_enforce,
        )?;
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
        let enforcement = kernel_enforcement(&set, self.kernel_can_enforce);
        let set = Arc::new(set);
        self.pipeline
            .set_rules(set.clone(), enforcement)
            .context("the new rules cannot be put in the kernel")?;
        self.pipeline.set_redactor(redaction);
        info!(rules = set.rules.len(), "{why}: configuration reloaded");
        let mut s = self.status.lock().unwrap();
        s.redaction_enabled = new_config.redaction.enabled;
        s.rules = set.rules.len();
        s.enforcement = enforcement;
        *self.shared_rules.lock().unwrap() = set;
        Ok(fp)
    }

    /// A clean stop (by init, with self-protection) leaves every rule
    /// enforced but the one that keeps the configuration and binaries as
    /// they are: stopped, the agent may be reconfigured. A crash or
    /// SIGKILL leaves it in force. The pinned state's rule goes with it: a
    /// new build (another program) must be able to adopt or replace the
    /// state.
    fn stop(mut self, mut ring: RingReader) {
        let _ = notify("STOPPING=1");
        // Flush: whatever the kernel wrote before we stop is still delivered.
        while self.drain(&mut ring) {}
        self.refresh();
        // Only now: a drained event that replaced a protected path
        // re-resolves the kill/deny rules, and that put the lifted rule
        // back in force (a 6.12 hand-over found the pinned state still
        // protected after a clean stop).
        let mut lifted = false;
        for rule in SELF_PROTECTION_RULES {
            match self.pipeline.lift_kernel_rule(rule) {
                Ok(was) => lifted |= was,
                Err(e) => warn!("{rule} could not be lifted: {e:#}"),
            }
        }
        if lifted {
            info!("self-protection lifted: the configuration may be edited while the agent is stopped");
        }
        // Flushes the audit log; outputs get a few seconds to deliver what
        // they hold. Then every record read is handled.
        drop(self.pipeline);
        ring.commit_read();
        // Pinned programs keep enforcing and capturing for the next agent.
        self.probes.stopped();
        drop(self.probes);
        let _ = std::fs::remove_file(&self.config.agent.socket);
        info!("guardrail-agent stopped");
    }
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
    // One clock reading per 256 records for the caches' and the process
    // table's checks (the clock is coarse: it ticks every few ms).
    let clock = guardrail_agent::clock::hold();
    for i in 0..DRAIN_BATCH {
        if i % 256 == 255 {
            clock.refresh();
        }
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
    pipeline.refresh_touched();
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
