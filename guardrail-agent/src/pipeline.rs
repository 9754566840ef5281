//! From ring-buffer records to published events: decode, interpret,
//! number, report losses, fan out.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tracing::warn;

use crate::kernel::enforce::Enforcer;
use crate::kernel::probes::KernelCounters;
use crate::outputs::Published;
use crate::revert::Baseline;
use guardrail_common::enforce::action;
use guardrail_common::RecordKind;
use guardrail_engine::decode::{decode_into, RawRecord};
use guardrail_engine::event::{Body, Event, LossDetails, Outcome, ProcessJson, Via};
use guardrail_engine::interpret::{interpret, ProcessView};
use guardrail_engine::process_join::push_defined;
use guardrail_engine::process_json::ProcessJsonCache;
use guardrail_engine::redact::Redactor;
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::{evaluate, RuleSet};

/// An event's JSON with its process whole: `json` itself, or, when it
/// names its process by reference (for the audit log), `json` with the
/// definition's members put in, made in `full`.
fn whole_json<'j>(
    json: &'j str,
    reference: Option<&crate::audit::Reference>,
    full: &'j mut String,
) -> &'j str {
    match reference {
        Some(r) => {
            full.clear();
            push_defined(full, json, r.at, &r.shared);
            full
        }
        None => json,
    }
}

/// Where events go besides tail clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Print {
    None,
    Json,
    Human,
}

pub struct Pipeline<V: ProcessView> {
    view: V,
    seq: u64,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, to turn kernel times into wall time.
    wall_offset_ns: i128,
    pub events_total: u64,
    pub decode_errors: u64,
    pub unknown_records: u64,
    reported: KernelCounters,
    rate: RateMeter,
    print: Print,
    publish: broadcast::Sender<Published>,
    rules: Arc<RuleSet>,
    enforcement: Enforcement,
    enforcer: Option<Enforcer>,
    /// The kernel's read watch set (`file.read` rules); None in tests and
    /// replays that run without probes.
    read_watch: Option<crate::kernel::watch::ReadWatch>,
    /// Indexes of the kernel-enforced rules that name paths, computed when
    /// the rules change rather than for every event.
    kernel_path_rules: Vec<usize>,
    /// The rules an event's paths touch (see `refresh_if_touched`): one
    /// list, reused.
    rules_touched: Vec<usize>,
    /// A protected (or watched) path was replaced in the batch being
    /// handled: its rules are re-resolved once, at the end of the batch
    /// ([`Pipeline::refresh_touched`]), not once per event. A backlog full
    /// of such changes (an adopted ring after a package upgrade) made one
    /// full recompile per event.
    kernel_paths_touched: bool,
    watched_paths_touched: bool,
    baseline: Baseline,
    pub audit: Option<crate::audit::AuditLog>,
    pub decisions: u64,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    alert_log: AlertLogLimit,
    /// Applied after the rules, before anything leaves the agent.
    redactor: Arc<Redactor>,
    /// The process names `redactor` last looked at (see `Recent`).
    redacted_recently: guardrail_engine::redact::Recent,
    /// Events in which something was redacted.
    pub redacted_events: u64,
    /// `[[output]]`s; each drains its own bounded queue.
    pub outputs: Option<crate::outputs::Outputs>,
    /// Files that exact-path rules name, by identity: an event on the same
    /// object under another name (a hard link, a bind mount) gets the
    /// rule's name as an alias, so the rule decides it too.
    watched: std::collections::HashMap<(u64, u64), Vec<String>>,
    /// The directories of those files, by identity, with the files' names
    /// in them: an unlink or rename has no object left to compare, but
    /// the same directory reached under another name (a bind mount of it
    /// or of an ancestor) holding the same name is the watched path.
    watched_dirs: std::collections::HashMap<(u64, u64), Vec<(String, String)>>,
    watched_at: Duration,
    /// The `seq` of the latest event published to tail clients, stored
    /// before it is sent: a client that subscribes and then reads it is
    /// sent every later event (`guardrail tail --since` joins the audit
    /// log's history to the live stream there).
    last_published: Arc<std::sync::atomic::AtomicU64>,
    /// Each event's JSON is written here, then copied out once to be
    /// shared: a buffer allocated per event (~1 KB, freed again) cost a
    /// malloc, a free and a consolidation of glibc's small chunks each.
    json: Vec<u8>,
    /// The event's JSON with its process whole, when `json` names it by
    /// reference and someone other than the audit log wants the event.
    full_json: String,
    wall_times: crate::wall_time::WallTimes,
    /// The time text of an event nobody else took, for the next event's.
    spare_time: String,
    process_json: ProcessJsonCache,
    /// The record being handled, its strings' memory kept between records.
    raw: RawRecord,
}

/// How often the identities of watched files are looked up again (an
/// editor or package manager replaces a file with a new inode).
const WATCHED_REFRESH: Duration = Duration::from_secs(1);

/// The identity (device as events give it, inode) of the file `path`
/// names now (stat(2)), as the watched maps key it.
fn identity(path: impl AsRef<std::path::Path>) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let id = guardrail_engine::event::ObjectId::from_stat(meta.dev(), meta.ino());
    Some((id.dev, id.ino))
}

/// Whether a rule pattern names one file (no glob, no subtree).
fn is_exact(pattern: &str) -> bool {
    !pattern.ends_with("/**") && !pattern.contains(['*', '?', '[', '{'])
}

/// The watched path that `path` names through another name of its
/// directory (stat(2) of the directory now), if any.
fn watched_in_same_dir(
    dirs: &std::collections::HashMap<(u64, u64), Vec<(String, String)>>,
    path: &str,
) -> Option<String> {
    // An escaped name (`\\`, `\xNN`) names no file as it is written.
    if dirs.is_empty() || path.contains('\\') {
        return None;
    }
    let (dir, name) = path.rsplit_once('/')?;
    dirs.get(&identity(if dir.is_empty() { "/" } else { dir })?)?
        .iter()
        .find(|(watched, _)| watched == name)
        .map(|(_, pattern)| pattern.clone())
}

/// What the LSM programs reported for a syscall.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelVerdict {
    pub rule: u32,
    pub action: u32,
    pub generation: u32,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

impl Pipeline<crate::procfs::ProcFs> {
    /// Processes in the agent's table.
    pub fn processes_tracked(&self) -> usize {
        self.view.tracked()
    }
}

impl<V: ProcessView> Pipeline<V> {
    pub fn new(view: V, print: Print, publish: broadcast::Sender<Published>) -> Self {
        Self {
            view,
            seq: 0,
            wall_offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
            events_total: 0,
            decode_errors: 0,
            unknown_records: 0,
            reported: KernelCounters::default(),
            rate: RateMeter::default(),
            print,
            publish,
            rules: Arc::new(RuleSet::default()),
            enforcement: Enforcement::default(),
            enforcer: None,
            read_watch: None,
            kernel_path_rules: Vec::new(),
            rules_touched: Vec::new(),
            kernel_paths_touched: false,
            watched_paths_touched: false,
            baseline: Baseline::default(),
            audit: None,
            decisions: 0,
            metrics: None,
            alert_log: AlertLogLimit::default(),
            redactor: Arc::new(Redactor::default()),
            redacted_recently: Default::default(),
            redacted_events: 0,
            outputs: None,
            last_published: Arc::default(),
            watched: std::collections::HashMap::new(),
            watched_dirs: std::collections::HashMap::new(),
            watched_at: crate::clock::coarse(),
            json: Vec::with_capacity(4096),
            full_json: String::new(),
            wall_times: Default::default(),
            spare_time: String::new(),
            raw: RawRecord::default(),
            process_json: Default::default(),
        }
    }

    /// Look up the identity of every file an exact-path rule names.
    fn refresh_watched(&mut self) {
        self.watched.clear();
        self.watched_dirs.clear();
        self.watched_at = crate::clock::coarse();
        let patterns = self
            .rules
            .rules
            .iter()
            .filter_map(|r| r.path.as_ref())
            .flat_map(|m| m.patterns.iter())
            .filter(|p| is_exact(p));
        // Each directory is looked up once: the shipped rules name about
        // twenty files under every home directory of /etc/passwd, which
        // was 850 stat(2) calls a second, most of them for directories
        // already looked up or not there.
        let mut dirs: std::collections::HashMap<&std::path::Path, Option<(u64, u64)>> =
            std::collections::HashMap::new();
        for pattern in patterns {
            let dir_and_name = std::path::Path::new(pattern)
                .parent()
                .zip(pattern.rsplit_once('/').map(|(_, name)| name));
            if let Some((dir, name)) = dir_and_name {
                let Some(id) = *dirs.entry(dir).or_insert_with(|| identity(dir)) else {
                    // No directory, no file in it.
                    continue;
                };
                self.watched_dirs
                    .entry(id)
                    .or_default()
                    .push((name.to_string(), pattern.clone()));
            }
            if let Some(id) = identity(pattern) {
                self.watched.entry(id).or_default().push(pattern.clone());
            }
        }
    }

    /// Give an event on a watched file under another name the watched
    /// names as aliases.
    fn add_aliases(&mut self, body: &mut Body) {
        if crate::clock::since(self.watched_at) >= WATCHED_REFRESH {
            self.refresh_watched();
        }
        let (object, path, new_path, aliases) = match body {
            Body::File { file, .. } => (
                file.object,
                file.path.as_deref(),
                file.new_path.as_deref(),
                &mut file.aliases,
            ),
            Body::Perm { perm, .. } => (perm.object, perm.path.as_deref(), None, &mut perm.aliases),
            _ => return,
        };
        let Some(object) = object else {
            // No object (an unlink, a rename): the directory by identity.
            let names: Vec<String> = [path, new_path]
                .into_iter()
                .flatten()
                .filter_map(|p| watched_in_same_dir(&self.watched_dirs, p))
                .filter(|name| path != Some(name.as_str()) && new_path != Some(name.as_str()))
                .collect();
            for name in names {
                if !aliases.contains(&name) {
                    aliases.push(name);
                }
            }
            return;
        };
        let Some(names) = self.watched.get(&(object.dev, object.ino)) else {
            return;
        };
        let mut stale = false;
        for name in names {
            if path == Some(name.as_str())
                || new_path == Some(name.as_str())
                || aliases.contains(name)
            {
                continue;
            }
            // The map may be up to a refresh old, and a replaced file's
            // inode number is soon reused (useradd renames /etc/shadow+
            // over /etc/shadow; the next new /etc/passwd+ may get the old
            // number): the name is an alias only while it still names
            // this object. The look-up is paid only by events on a
            // watched object.
            if identity(name) == Some((object.dev, object.ino)) {
                aliases.push(name.clone());
            } else {
                stale = true;
            }
        }
        if stale {
            self.refresh_watched();
        }
    }

    /// See the field of that name.
    pub fn last_published(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.last_published.clone()
    }

    /// Redaction patterns in force (the built-in ones until set).
    pub fn set_redactor(&mut self, redactor: Arc<Redactor>) {
        self.redactor = redactor;
        self.redacted_recently = Default::default();
    }

    /// A batch of records is handled: hand the audit log writer what was
    /// sent to it since the last time, and let outputs fed in the event
    /// path pass theirs on.
    pub fn hand_over(&self) {
        if let Some(log) = &self.audit {
            log.hand_over_pending();
        }
        if let Some(outputs) = &self.outputs {
            outputs.idle();
        }
    }

    /// Records handed to the audit log writer, and how many of them it is
    /// done with; (0, 0) without an audit log.
    pub fn audit_progress(&self) -> (u64, u64) {
        self.audit
            .as_ref()
            .map_or((0, 0), |a| (a.handed(), a.settled()))
    }

    /// Stop enforcing kernel rule `id` (see [`Enforcer::lift`]).
    pub fn lift_kernel_rule(&mut self, id: &str) -> anyhow::Result<bool> {
        match &mut self.enforcer {
            Some(e) => e.lift(id),
            None => Ok(false),
        }
    }

    /// Processes the kernel could not mark for lineage exemptions.
    pub fn lineage_marks_lost(&self) -> u64 {
        self.enforcer
            .as_ref()
            .map_or(0, Enforcer::lineage_marks_lost)
    }

    /// The kernel enforcer, when this kernel has BPF-LSM.
    pub fn set_enforcer(&mut self, enforcer: Option<Enforcer>) {
        self.enforcer = enforcer;
    }

    /// Periodic work between drains: the read watch set follows files
    /// created, replaced or removed since it was compiled (written to the
    /// kernel only when it changed).
    pub fn housekeeping(&mut self) {
        if let Some(watch) = &mut self.read_watch {
            if let Err(e) = watch.refresh(&self.rules) {
                warn!("refreshing the read watch set failed: {e:#}");
            }
        }
    }

    /// The read watch set, for `guardrail status` (None: not loaded).
    pub fn read_watch_status(&self) -> Option<crate::kernel::watch::WatchStatus> {
        self.read_watch.as_ref().map(|w| w.status())
    }

    /// The kernel's read watch set.
    pub fn set_read_watch(&mut self, watch: Option<crate::kernel::watch::ReadWatch>) {
        self.read_watch = watch;
    }

    /// Put a new rule set in force: in the kernel first (atomically), then
    /// for evaluation here. On error the rules enforced and evaluated stay
    /// as they were.
    pub fn set_rules(
        &mut self,
        rules: Arc<RuleSet>,
        enforcement: Enforcement,
    ) -> anyhow::Result<()> {
        // The watch set first: if it fails, nothing has changed; if the
        // enforcer then fails, the old rules are enforced and only what is
        // captured follows the new ones.
        if let Some(watch) = &mut self.read_watch {
            anyhow::Context::context(watch.apply(&rules), "putting the read watch set in force")?;
        }
        if let Some(enforcer) = &mut self.enforcer {
            enforcer.apply(&rules)?;
        }
        // The revert baseline is needed only where the kernel cannot deny.
        self.baseline = if enforcement.deny {
            Baseline::default()
        } else {
            Baseline::of(&rules)
        };
        let kernel = guardrail_engine::kernel_maps::kernel_rules(&rules);
        self.kernel_path_rules = (0..rules.rules.len())
            .filter(|&i| {
                let r = &rules.rules[i];
                r.path.is_some() && kernel.iter().any(|k| std::ptr::eq(*k, r))
            })
            .collect();
        self.rules = rules;
        self.enforcement = enforcement;
        self.refresh_watched();
        self.sync_windows();
        Ok(())
    }

    /// Tell the kernel which windows are active now; returns how long until
    /// that changes (the caller sleeps exactly that long).
    pub fn sync_windows(&mut self) -> Option<Duration> {
        let now = jiff::Timestamp::now();
        let (active, next) = guardrail_engine::rules::window::schedule(&self.rules.windows, now);
        if let Some(e) = &mut self.enforcer {
            if let Err(err) = e.set_windows(active) {
                warn!("cannot update window state in the kernel: {err:#}");
            }
        }
        next.map(|t| {
            let ns = t.as_nanosecond() - now.as_nanosecond();
            // Wake just after the edge, so the new state is already true.
            Duration::from_nanos(ns.max(0) as u64) + Duration::from_millis(5)
        })
    }

    /// Re-resolve kill/deny rule paths, and the read watch set, after an
    /// event that may have replaced a protected or watched file (editors,
    /// `passwd` and package managers write a new file and rename it over
    /// the old one: a new inode, unwatched until then).
    fn refresh_if_touched(&mut self, event: &Event) {
        // Nothing to find out: no such rules, or this batch already
        // re-resolves them.
        let kernel = self.enforcer.is_some() && !self.kernel_paths_touched;
        let watched = self.read_watch.is_some() && !self.watched_paths_touched;
        if !kernel && !watched {
            return;
        }
        let Body::File { file, result, .. } = &event.body else {
            return;
        };
        if !result.ok
            || !matches!(
                file.op.as_ref(),
                "rename" | "open" | "link" | "symlink" | "unlink" | "mknod" | "mkdir"
            )
        {
            return;
        }
        if file.op == "open" && !file.flags.iter().any(|f| f == "create") {
            return;
        }
        let mut touched = std::mem::take(&mut self.rules_touched);
        self.rules.rules_on_paths(&event.body.paths(), &mut touched);
        // `kernel_path_rules` is in file order, as `touched` is.
        if kernel
            && touched
                .iter()
                .any(|i| self.kernel_path_rules.binary_search(i).is_ok())
        {
            self.kernel_paths_touched = true;
        }
        if watched && touched.iter().any(|&i| self.rules.rules[i].reads) {
            self.watched_paths_touched = true;
        }
        self.rules_touched = touched;
    }

    /// End of a batch: re-resolve the kill/deny rules and the read watch
    /// set if the batch changed a path they name (see
    /// [`Pipeline::refresh_if_touched`]).
    pub fn refresh_touched(&mut self) {
        if std::mem::take(&mut self.kernel_paths_touched) {
            if let Some(enforcer) = &mut self.enforcer {
                if let Err(e) = enforcer.apply(&self.rules) {
                    warn!(
                        "refreshing kill/deny rules after a change to a protected path failed: {e:#}"
                    );
                }
            }
        }
        if std::mem::take(&mut self.watched_paths_touched) {
            if let Some(watch) = &mut self.read_watch {
                if let Err(e) = watch.touched(&self.rules) {
                    warn!("refreshing the read watch set after a change to a watched path failed: {e:#}");
                }
            }
        }
    }

    /// In the memory of the last event's time, when that event was not
    /// shared.
    fn wall_time(&mut self, ktime_ns: u64) -> String {
        let mut time = std::mem::take(&mut self.spare_time);
        self.wall_times
            .format_into(ktime_ns as i128 + self.wall_offset_ns, &mut time);
        time
    }

    /// Handle one ring-buffer record.
    pub fn record(&mut self, bytes: &[u8]) {
        // Decoded into the same record every time: its strings keep their
        // memory, so a record costs no allocation of its own. (Read in
        // place below: moving the record out and back copied its 296
        // bytes three times.)
        if let Err(e) = decode_into(bytes, &mut self.raw) {
            self.decode_errors += 1;
            warn!("undecodable record ({e}); counted in status.decode_errors");
            return;
        }
        let raw = &self.raw;
        // Forks and exits keep the process table current; they are not
        // events of their own.
        match raw.header.kind {
            k if k == RecordKind::Fork as u32 => {
                self.view
                    .forked(raw.header.ppid, raw.header.pid, raw.header.args[0]);
                return;
            }
            k if k == RecordKind::Exit as u32 => {
                self.view.exited(raw.header.pid);
                return;
            }
            k if k == RecordKind::UringSetup as u32 || k == RecordKind::UringRegister as u32 => {
                let body = if k == RecordKind::UringSetup as u32 {
                    guardrail_engine::interpret::interpret_uring_setup(raw, &mut self.view)
                } else {
                    guardrail_engine::interpret::interpret_uring_register(raw, &mut self.view)
                };
                let exit_ns = raw.header.exit_ns;
                self.emit(exit_ns, body, KernelVerdict::default(), Some(Via::Syscall));
                return;
            }
            _ => {}
        }
        let Some(body) = interpret(raw, &mut self.view) else {
            self.unknown_records += 1;
            self.decode_errors += 1;
            return;
        };
        let h = &raw.header;
        let via = if h.flags & guardrail_common::flags::VIA_IO_URING != 0 {
            Via::IoUring
        } else {
            Via::Syscall
        };
        let verdict = KernelVerdict {
            rule: h.verdict_rule,
            action: h.verdict_action,
            generation: h.verdict_generation,
        };
        let exit_ns = h.exit_ns;
        self.emit(exit_ns, body, verdict, Some(via));
    }

    /// Compare the kernel's loss counters with what was reported and emit a
    /// `loss` event for any increase.
    pub fn kernel_counters(&mut self, now: KernelCounters) {
        let lost = now.lost() - self.reported.lost();
        if lost == 0 {
            return;
        }
        let body = Body::Loss {
            loss: LossDetails {
                count: lost,
                ringbuf: now.ringbuf_drops - self.reported.ringbuf_drops,
                inflight: now.pending_drops - self.reported.pending_drops,
                total: now.lost(),
                discarded: 0,
            },
        };
        self.reported = now;
        self.emit(monotonic_ns(), body, KernelVerdict::default(), None);
    }

    /// Losses already reported, by this agent or (adopted state) the one
    /// before it.
    pub fn reported(&self) -> KernelCounters {
        self.reported
    }

    /// Start counting losses from `reported` (an adopted state's).
    pub fn set_reported(&mut self, reported: KernelCounters) {
        self.reported = reported;
    }

    /// Report records removed unread with a pinned state that could not be
    /// adopted.
    pub fn discarded(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let body = Body::Loss {
            loss: LossDetails {
                count,
                ringbuf: 0,
                inflight: 0,
                total: self.reported.lost(),
                discarded: count,
            },
        };
        self.emit(monotonic_ns(), body, KernelVerdict::default(), None);
    }

    /// Name processes by reference in the audit log (`[audit_log] process
    /// = "ref"`); everyone else still gets them whole.
    pub fn name_processes_by_reference(&mut self) {
        self.process_json = ProcessJsonCache::by_reference();
    }

    fn emit(&mut self, ktime_ns: u64, body: Body, verdict: KernelVerdict, via: Option<Via>) {
        self.seq += 1;
        if !matches!(body, Body::Loss { .. }) {
            self.events_total += 1;
            self.rate.tick(1);
            if let Some(m) = &self.metrics {
                m.event(body.kind());
            }
        }
        let wall_ns = ktime_ns as i128 + self.wall_offset_ns;
        // The body goes straight into its event: each move of it is a
        // copy of several hundred bytes.
        let mut event = Event {
            seq: self.seq,
            time: self.wall_time(ktime_ns),
            ktime_ns,
            via,
            body,
            decision: None,
            redacted: vec![],
        };
        if !self.rules.rules.is_empty() {
            self.add_aliases(&mut event.body);
            let started = self.metrics.is_some().then(Instant::now);
            let at =
                jiff::Timestamp::from_nanosecond(wall_ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            event.decision = evaluate(&self.rules, &event, at, self.enforcement);
            self.kernel_facts(&mut event, verdict);
            self.refresh_if_touched(&event);
            self.apply_revert(&mut event);
            if let (Some(m), Some(started)) = (&self.metrics, started) {
                m.evaluated(started.elapsed());
                if let Some(d) = &event.decision {
                    m.decision(d);
                }
            }
        }
        // Rules and fallbacks saw the real values; nothing below may.
        self.redactor
            .redact_event_after(&mut event, &mut self.redacted_recently);
        self.process_json.attach(&mut event.body);
        if !event.redacted.is_empty() {
            self.redacted_events += 1;
        }
        if event.decision.is_some() {
            self.decisions += 1;
        }
        if let Some(d) = event.decision.as_ref().filter(|_| self.alert_log.admit()) {
            let p = event.body.process();
            warn!(
                target: "guardrail::alert",
                rule = %d.rule,
                outcome = %d.outcome,
                severity = ?d.severity,
                kind = event.body.op(),
                pid = p.map(|p| p.pid),
                exe = p.and_then(|p| p.exe.as_deref()),
                lineage = p.map(guardrail_engine::rules::eval::lineage),
                path = event.body.paths().first().copied(),
                "guardrail rule matched"
            );
        }
        self.json.clear();
        let reference_at = match event.write_json(&mut self.json) {
            Ok(at) => at,
            Err(e) => {
                warn!("cannot serialise event: {e}");
                return;
            }
        };
        // SAFETY: the event writer writes UTF-8 only, as serde_json does
        // (its own `to_string` relies on the same); checking a kilobyte
        // per event again cost 1.5% of the agent's CPU under a storm.
        let json = unsafe { std::str::from_utf8_unchecked(&self.json) };
        if let Some(m) = &self.metrics {
            m.delayed(monotonic_ns().saturating_sub(ktime_ns));
        }
        // A reference is for the audit log alone: whoever serialises the
        // published event gets the process whole. The writer says where
        // the reference closes exactly when it wrote one.
        let kind = event.body.kind();
        let reference = match (event.body.process_mut(), reference_at) {
            (Some(p), Some(at)) => match std::mem::take(&mut p.json) {
                ProcessJson::Ref { pv, shared } => Some(crate::audit::Reference {
                    at,
                    pv,
                    kind,
                    shared,
                }),
                cached => {
                    p.json = cached;
                    None
                }
            },
            _ => None,
        };
        if let Some(log) = &self.audit {
            log.send_with(json, reference.clone());
        }
        let printed = match self.print {
            Print::None => Ok(()),
            Print::Json => writeln!(
                std::io::stdout().lock(),
                "{}",
                whole_json(json, reference.as_ref(), &mut self.full_json)
            ),
            Print::Human => writeln!(
                std::io::stdout().lock(),
                "{}",
                guardrail_engine::human::line(&event, false)
            ),
        };
        if let Err(e) = printed {
            // A closed pipe (the reader of `--print` went away) must not
            // stop the agent: the log and the outputs still get every
            // event.
            warn!("--print: cannot write to standard output ({e}); events are no longer printed");
            self.print = Print::None;
        }
        self.last_published
            .store(self.seq, std::sync::atomic::Ordering::SeqCst);
        // Nobody tailing and no outputs: nothing to share the event with.
        // A client that subscribes from here on reads `last_published`
        // afterwards, so it does not expect this event from the stream.
        if self.outputs.is_none() && self.publish.receiver_count() == 0 {
            self.spare_time = event.time;
            return;
        }
        let published = Published {
            event: Arc::new(event),
            json: whole_json(json, reference.as_ref(), &mut self.full_json).into(),
        };
        if let Some(outputs) = &self.outputs {
            outputs.send(&published);
        }
        // No subscriber is not an error: nobody is tailing.
        let _ = self.publish.send(published);
    }

    /// Perform the `revert` fallback the decision calls for, or record why
    /// it could not; follow allowed changes of baseline files.
    fn apply_revert(&mut self, event: &mut Event) {
        if self.baseline.is_empty() {
            return;
        }
        match &mut event.decision {
            Some(d) if d.outcome == Outcome::Reverted => match self.baseline.revert(&event.body) {
                Ok(r) => d.reverted = Some(r),
                Err(e) => {
                    let shown = self.redactor.redact_str(&e);
                    warn!(rule = %d.rule, "revert failed: {}", shown.as_deref().unwrap_or(&e));
                    d.outcome = Outcome::Alerted;
                    d.fallback_error = Some(e);
                }
            },
            _ => self.baseline.follow(event),
        }
    }

    /// Outcomes of kill/deny come from what the kernel did, not from
    /// what the rules say it should have done.
    fn kernel_facts(&self, event: &mut Event, verdict: KernelVerdict) {
        let Some(enforcer) = &self.enforcer else {
            return;
        };
        let kernel_rule = (verdict.rule != 0)
            .then(|| enforcer.verdict_rule(verdict.generation, verdict.rule))
            .flatten();
        match (kernel_rule, &mut event.decision) {
            (Some(id), decision) => {
                let outcome = if verdict.action == action::KILL {
                    Outcome::Killed
                } else {
                    Outcome::Denied
                };
                match decision {
                    Some(d) if d.rule == id => {
                        d.outcome = outcome;
                        d.fallback = None;
                    }
                    _ => {
                        // The kernel acted on a rule the event's paths (as the
                        // program passed them) did not show: name it anyway.
                        let rule = self.rules.rules.iter().find(|r| r.id == id);
                        *decision = Some(guardrail_engine::event::Decision {
                            rule: id.to_string(),
                            action: rule
                                .map_or(guardrail_engine::rules::spec::Action::Deny, |r| r.action),
                            mode: guardrail_engine::rules::spec::Mode::Enforce,
                            severity: rule.map_or_else(Default::default, |r| r.severity),
                            outcome,
                            fallback: None,
                            matched: [(
                                "kernel".to_string(),
                                "object matched in the kernel".to_string(),
                            )]
                            .into(),
                            also: vec![],
                            exempted: vec![],
                            reverted: None,
                            fallback_error: None,
                        });
                    }
                }
            }
            (None, Some(d)) if matches!(d.outcome, Outcome::Denied | Outcome::Killed) => {
                // The rule matched here but the kernel did not act (e.g. the
                // operation failed before its hook ran): report what happened.
                d.outcome = Outcome::Alerted;
                d.fallback = None;
            }
            _ => {}
        }
    }

    pub fn events_per_s(&mut self) -> f64 {
        self.rate.per_second()
    }
}

/// The agent's own log names each alert, but at most this many a second:
/// a storm of matches must not turn into a storm of log writes. Every
/// decision is still in the audit log, the outputs and `tail`.
const ALERT_LOG_PER_S: u32 = 50;

#[derive(Default)]
struct AlertLogLimit {
    second: u64,
    logged: u32,
    suppressed: u64,
}

impl AlertLogLimit {
    fn admit(&mut self) -> bool {
        let now = monotonic_ns() / 1_000_000_000;
        if now != self.second {
            if self.suppressed > 0 {
                warn!(
                    target: "guardrail::alert",
                    "{} more rule matches in the last second were not logged here (all are in the audit log, the outputs and guardrail tail)",
                    self.suppressed
                );
            }
            *self = Self {
                second: now,
                ..Self::default()
            };
        }
        if self.logged < ALERT_LOG_PER_S {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// Events per second over a sliding window of a few seconds.
struct RateMeter {
    window_start: Instant,
    count: u64,
    last: f64,
}

impl Default for RateMeter {
    fn default() -> Self {
        Self {
            window_start: Instant::now(),
            count: 0,
            last: 0.0,
        }
    }
}

impl RateMeter {
    fn tick(&mut self, n: u64) {
        self.count += n;
    }

    fn per_second(&mut self) -> f64 {
        let elapsed = self.window_start.elapsed();
        if elapsed >= Duration::from_secs(5) {
            self.last = self.count as f64 / elapsed.as_secs_f64();
            self.count = 0;
            self.window_start = Instant::now();
        }
        self.last
    }
}
