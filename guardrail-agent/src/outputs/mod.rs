//! Outputs besides the audit log: stdout, syslog, journald, webhooks,
//! NATS JetStream.
//!
//! Each output has a bounded queue and a thread of its own. The event path
//! only filters and does a non-blocking `try_send`: a slow or dead output
//! never holds up events or enforcement. What does not fit in a queue is
//! dropped and counted (`guardrail status`, and a warning at most every
//! 10 s per output).

pub mod journald;
pub mod logsource;
pub mod message;
pub mod nats;
pub mod spool;
pub mod syslog;
pub mod webhook;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::audit::AuditLog;
use crate::config::{Config, OutputKind, OutputSection, ProcessForm};
use guardrail_engine::event::{Body, Event};
use guardrail_engine::rules::spec::Severity;

/// A serialised event, shared by every output and tail client.
#[derive(Clone)]
pub struct Published {
    pub event: Arc<Event>,
    pub json: Arc<str>,
}

/// How long outputs get, when the agent stops, to deliver what is queued.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Whether an output is handed the audit log's own sealed lines (while
/// the log is on) rather than events: a nats output taking every event,
/// so that the stream carries the log's chain (outputs/nats.rs).
pub fn reads_the_log(cfg: &OutputSection) -> bool {
    cfg.kind == OutputKind::Nats && Filter::of(cfg).takes_all()
}

/// How the audit log writes an event's process: as `[audit_log] process`
/// says; unset, by reference (half the bytes to hash and write per
/// event), unless an output reads the log's own lines. Those lines reach
/// `guardrail fleet tail` and other readers of the stream one message at
/// a time, and a reference means nothing without the line that defined
/// it, which such a reader may never have seen.
pub fn log_process_form(config: &Config) -> ProcessForm {
    config.audit_log.process.unwrap_or_else(|| {
        if config.output.iter().any(|o| reads_the_log(o.get_ref())) {
            ProcessForm::Full
        } else {
            ProcessForm::Ref
        }
    })
}

/// Which events an output takes.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub min_severity: Option<Severity>,
    pub rules: Option<Vec<String>>,
    pub alerts_only: bool,
}

impl Filter {
    pub fn of(cfg: &OutputSection) -> Self {
        Self {
            min_severity: cfg.min_severity,
            rules: cfg.rules.clone(),
            // Stdout and the NATS stream take every event unless told
            // otherwise; the others are for alerts.
            alerts_only: cfg
                .alerts_only
                .unwrap_or(!matches!(cfg.kind, OutputKind::Stdout | OutputKind::Nats)),
        }
    }

    /// Whether every event passes.
    pub fn takes_all(&self) -> bool {
        !self.alerts_only && self.min_severity.is_none() && self.rules.is_none()
    }

    /// An event without a decision has no severity and no rule: it passes
    /// only a filter that asks for neither.
    pub fn accepts(&self, event: &Event) -> bool {
        match &event.decision {
            None => self.takes_all(),
            Some(d) => {
                self.min_severity.is_none_or(|min| d.severity >= min)
                    && self.rules.as_ref().is_none_or(|r| r.contains(&d.rule))
            }
        }
    }
}

/// Counters of one output, shared between the event path and its thread.
#[derive(Default)]
pub struct OutputStats {
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
    pub queued: AtomicU64,
    /// The output's on-disk spool, if it has one.
    spool: std::sync::OnceLock<Arc<spool::Spool>>,
    /// The output reads the audit log's files (nats): `held_bytes` of
    /// files rotated away are waiting for the server.
    reads_log: std::sync::atomic::AtomicBool,
    held_bytes: AtomicU64,
    /// What became of each delivery, under one lock: a reader never sees a
    /// failure counted without its error, or an error that a later success
    /// has already cleared.
    outcomes: Mutex<Outcomes>,
}

#[derive(Clone, Default)]
struct Outcomes {
    sent: u64,
    failed: u64,
    last_error: Option<String>,
    last_drop: Option<String>,
}

impl OutputStats {
    /// `events` were delivered (by one send).
    fn delivered(&self, events: u64) {
        let mut o = self.outcomes.lock().unwrap();
        o.sent += events;
        o.last_error = None;
    }

    /// A problem that lost nothing (yet): shown until the next success.
    fn error(&self, e: String) {
        self.outcomes.lock().unwrap().last_error = Some(e);
    }

    /// Why events are being dropped: shown as the latest error too, and
    /// kept as the reason of the latest drop, which no later connection
    /// error overwrites.
    fn dropped_because(&self, e: String) {
        let mut o = self.outcomes.lock().unwrap();
        o.last_error = Some(e.clone());
        o.last_drop = Some(e);
    }

    fn gave_up(&self, e: String) {
        let mut o = self.outcomes.lock().unwrap();
        o.failed += 1;
        o.last_error = Some(e);
    }

    fn outcomes(&self) -> Outcomes {
        self.outcomes.lock().unwrap().clone()
    }
}

/// One output in `guardrail status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OutputSnapshot {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Events delivered.
    pub sent: u64,
    /// Events given up on after the output's retries (see docs/outputs.md).
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Attempts repeated after a failure (webhook).
    pub retries: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
    /// The latest failure; cleared by the next success.
    pub last_error: Option<String>,
    /// Why the output last dropped events (nats: the spool was full); kept
    /// after later errors and successes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drop: Option<String>,
    /// Bytes of the on-disk spool (nats): events waiting for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spooled_bytes: Option<u64>,
}

/// Where an output's thread delivers events.
pub trait Sink: Send + 'static {
    /// Deliver one event, retrying as the sink does; `Err` when it gave up.
    fn deliver(&mut self, p: &Published, ctx: &Delivery) -> Result<(), String>;

    /// The queue is empty for now (a sink that batches sends its batch).
    fn idle(&mut self, _ctx: &Delivery) {}

    /// Whether the sink is handed events at all (a nats output fed with
    /// the audit log's lines is not).
    fn takes_events(&self) -> bool {
        true
    }

    /// Whether the sink counts deliveries itself (`deliver` only takes the
    /// event in; the server's acknowledgement comes later).
    fn confirms_itself(&self) -> bool {
        false
    }

    /// Whether the sink keeps what it is given in a store of its own (the
    /// nats spool) that is its queue: it is then handed every event in the
    /// event path, without a thread and queue in front that could drop
    /// events under a storm; a full store is its only limit, and the ring
    /// buffer takes the back-pressure, as it does for the audit log.
    fn stores_itself(&self) -> bool {
        false
    }
}

/// A sink fed in the event path, with whether it is failing (for
/// warning once per failure).
struct Inline {
    sink: Box<dyn Sink>,
    ctx: Delivery,
    failing: bool,
}

/// What a sink may consult while delivering.
pub struct Delivery {
    pub stats: Arc<OutputStats>,
    /// Set when the agent stops: no more waiting between retries.
    pub stopping: Arc<AtomicBool>,
}

impl Delivery {
    /// Sleep `d`, or less if the agent stops meanwhile; false if it stops.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

struct Output {
    name: String,
    kind: OutputKind,
    /// Whether it is handed events (see [`Sink::takes_events`]).
    events: bool,
    filter: Filter,
    tx: Option<SyncSender<Published>>,
    /// Instead of `tx` and `thread`, for a sink that stores itself.
    inline: Option<Mutex<Inline>>,
    stats: Arc<OutputStats>,
    thread: Option<JoinHandle<()>>,
    /// Drops already warned about, and when.
    warned: Mutex<(u64, Option<Instant>)>,
}

/// The configured outputs.
pub struct Outputs {
    outputs: Vec<Output>,
    stopping: Arc<AtomicBool>,
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates
    // when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Names as `guardrail status` shows them: the configured name, else the
/// type, numbered when a type appears more than once.
fn names(cfgs: &[&OutputSection]) -> Vec<String> {
    cfgs.iter()
        .enumerate()
        .map(|(i, c)| match &c.name {
            Some(n) => n.clone(),
            None if cfgs.iter().filter(|o| o.kind == c.kind).count() > 1 => {
                format!("{}-{}", c.kind.name(), i + 1)
            }
            None => c.kind.name().to_string(),
        })
        .collect()
}

impl Outputs {
    /// The outputs `cfgs` configures. A nats output that takes every
    /// event sends the lines of `audit`, when the audit log is on, rather
    /// than sealing each event a second time.
    pub fn start(cfgs: &[&OutputSection], audit: Option<&AuditLog>) -> Result<Self> {
        let host = hostname();
        let mut me = Self::empty();
        for (cfg, name) in cfgs.iter().zip(names(cfgs)) {
            let stats = Arc::new(OutputStats::default());
            let sink: Box<dyn Sink> = match cfg.kind {
                OutputKind::Stdout => Box::new(Stdout),
                OutputKind::Syslog => Box::new(
                    syslog::Syslog::new(cfg, host.clone())
                        .with_context(|| format!("output {name}"))?,
                ),
                OutputKind::Journald => Box::new(
                    journald::Journald::new(cfg).with_context(|| format!("output {name}"))?,
                ),
                OutputKind::Webhook => Box::new(
                    webhook::Webhook::new(cfg, host.clone())
                        .with_context(|| format!("output {name}"))?,
                ),
                OutputKind::Nats => {
                    // The first such output reads the log; another seals
                    // the events in a chain of its own.
                    let feed = audit
                        .filter(|_| reads_the_log(cfg))
                        .and_then(AuditLog::feed);
                    Box::new(
                        nats::Nats::new(cfg, &name, &host, stats.clone(), feed)
                            .with_context(|| format!("output {name}"))?,
                    )
                }
            };
            me.add_with_stats(name, cfg.kind, Filter::of(cfg), cfg.queue, sink, stats)?;
        }
        Ok(me)
    }

    pub fn empty() -> Self {
        Self {
            outputs: Vec::new(),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Start an output's thread.
    pub fn add(
        &mut self,
        name: String,
        kind: OutputKind,
        filter: Filter,
        queue: usize,
        sink: Box<dyn Sink>,
    ) -> Result<()> {
        let stats = Arc::new(OutputStats::default());
        self.add_with_stats(name, kind, filter, queue, sink, stats)
    }

    fn add_with_stats(
        &mut self,
        name: String,
        kind: OutputKind,
        filter: Filter,
        queue: usize,
        mut sink: Box<dyn Sink>,
        stats: Arc<OutputStats>,
    ) -> Result<()> {
        let ctx = Delivery {
            stats: stats.clone(),
            stopping: self.stopping.clone(),
        };
        if sink.stores_itself() {
            self.outputs.push(Output {
                name,
                kind,
                events: sink.takes_events(),
                filter,
                tx: None,
                inline: Some(Mutex::new(Inline {
                    sink,
                    ctx,
                    failing: false,
                })),
                stats,
                thread: None,
                warned: Mutex::new((0, None)),
            });
            return Ok(());
        }
        let (tx, rx): (_, Receiver<Published>) = sync_channel(queue);
        let label = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("output-{name}"))
            .spawn(move || {
                let mut failing = false;
                let confirms_itself = sink.confirms_itself();
                // Ends when the agent drops the sender and the queue is empty.
                loop {
                    let p = match rx.try_recv() {
                        Ok(p) => p,
                        Err(TryRecvError::Disconnected) => break,
                        Err(TryRecvError::Empty) => {
                            sink.idle(&ctx);
                            match rx.recv() {
                                Ok(p) => p,
                                Err(_) => break,
                            }
                        }
                    };
                    ctx.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    deliver_one(&mut *sink, &p, &ctx, &label, confirms_itself, &mut failing);
                }
            })
            .context("starting an output thread")?;
        self.outputs.push(Output {
            name,
            kind,
            events: true,
            filter,
            tx: Some(tx),
            inline: None,
            stats,
            thread: Some(thread),
            warned: Mutex::new((0, None)),
        });
        Ok(())
    }

    /// Hand `p` to every output that takes it, without waiting.
    pub fn send(&self, p: &Published) {
        for o in &self.outputs {
            if !o.events || !o.filter.accepts(&p.event) {
                continue;
            }
            if let Some(inline) = &o.inline {
                let mut i = inline.lock().unwrap_or_else(|e| e.into_inner());
                let Inline { sink, ctx, failing } = &mut *i;
                let confirms_itself = sink.confirms_itself();
                deliver_one(&mut **sink, p, ctx, &o.name, confirms_itself, failing);
                continue;
            }
            let Some(tx) = &o.tx else { continue };
            // Counted before the send so that the thread's decrement can
            // never come first.
            o.stats.queued.fetch_add(1, Ordering::Relaxed);
            // Full, or the thread is gone (it panicked): dropped either way,
            // and counted.
            if tx.try_send(p.clone()).is_err() {
                o.stats.queued.fetch_sub(1, Ordering::Relaxed);
                o.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counters of every output; warns about new drops, at most every 10 s
    /// per output.
    pub fn snapshot(&self) -> Vec<OutputSnapshot> {
        self.outputs
            .iter()
            .map(|o| {
                let s = &o.stats;
                let dropped = s.dropped.load(Ordering::Relaxed);
                let mut warned = o.warned.lock().unwrap();
                let due = warned
                    .1
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                if dropped > warned.0 && due {
                    warn!(
                        output = %o.name,
                        "output dropped {} events ({} in all): its queue (for nats, its spool) is full; the output is slower than the events",
                        dropped - warned.0,
                        dropped
                    );
                    *warned = (dropped, Some(Instant::now()));
                }
                let outcomes = s.outcomes();
                OutputSnapshot {
                    name: o.name.clone(),
                    kind: o.kind.name().into(),
                    sent: outcomes.sent,
                    failed: outcomes.failed,
                    dropped,
                    retries: s.retries.load(Ordering::Relaxed),
                    queued: s.queued.load(Ordering::Relaxed),
                    last_error: outcomes.last_error,
                    last_drop: outcomes.last_drop,
                    spooled_bytes: if s.reads_log.load(Ordering::Relaxed) {
                        Some(
                            s.spool.get().map_or(0, |sp| sp.used())
                                + s.held_bytes.load(Ordering::Relaxed),
                        )
                    } else {
                        s.spool.get().map(|sp| sp.used())
                    },
                }
            })
            .collect()
    }

    /// The event path has handed over what it had for now: sinks fed in
    /// it pass it on (the nats spool is flushed for its publisher).
    pub fn idle(&self) {
        for o in &self.outputs {
            if let Some(inline) = &o.inline {
                let mut i = inline.lock().unwrap_or_else(|e| e.into_inner());
                let Inline { sink, ctx, .. } = &mut *i;
                sink.idle(ctx);
            }
        }
    }

    /// Close the queues and give the threads `grace` to deliver what is
    /// queued (each remaining attempt is made once, without retries).
    /// Sinks fed in the event path stop as they are dropped.
    pub fn stop(&mut self, grace: Duration) {
        for o in &mut self.outputs {
            o.tx = None;
            o.inline = None;
        }
        let deadline = Instant::now() + grace;
        // Retry waits end at once; the first attempt of each queued event
        // is still made.
        let stopping_at = deadline.checked_sub(grace / 2).unwrap_or(deadline);
        for o in &mut self.outputs {
            while o.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                if Instant::now() >= stopping_at {
                    self.stopping.store(true, Ordering::Relaxed);
                }
                if Instant::now() >= deadline {
                    warn!(output = %o.name, queued = o.stats.queued.load(Ordering::Relaxed), "output did not finish within {grace:?} of stopping; what it still holds is lost");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if o.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let _ = o.thread.take().map(JoinHandle::join);
            }
        }
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// Deliver `p` to `sink`, counting the outcome and warning once per
/// failure (`failing` remembers it).
fn deliver_one(
    sink: &mut dyn Sink,
    p: &Published,
    ctx: &Delivery,
    label: &str,
    confirms_itself: bool,
    failing: &mut bool,
) {
    match sink.deliver(p, ctx) {
        Ok(()) => {
            if !confirms_itself {
                ctx.stats.delivered(1);
            }
            if *failing {
                info!(output = %label, "output delivers again");
                *failing = false;
            }
        }
        Err(e) => {
            if !*failing {
                warn!(output = %label, "output failed (counted in status; warned once until it works again): {e}");
                *failing = true;
            }
            ctx.stats.gave_up(e);
        }
    }
}

/// JSON lines on stdout, as `--print json` but off the event path.
struct Stdout;

impl Sink for Stdout {
    fn deliver(&mut self, p: &Published, _: &Delivery) -> Result<(), String> {
        let mut out = std::io::stdout().lock();
        out.write_all(p.json.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    }
}

/// Syslog severity (RFC 5424 numbers, shared by journald's PRIORITY) of an
/// event: from its decision's severity; plain events are informational,
/// losses warnings.
pub fn priority(event: &Event) -> u8 {
    match (&event.decision, &event.body) {
        (Some(d), _) => match d.severity {
            Severity::Critical => 2,
            Severity::High => 3,
            Severity::Medium => 4,
            Severity::Low => 5,
        },
        (None, Body::Loss { .. }) => 4,
        (None, _) => 6,
    }
}

/// A one-line summary for people: the decision, then [`details`].
pub fn summary(event: &Event) -> String {
    let Some(d) = &event.decision else {
        return details(event);
    };
    let mut s = format!(
        "guardrail rule {} {} ({}): {}",
        d.rule,
        d.outcome,
        severity_name(d.severity),
        details(event)
    );
    if let Some(f) = &d.fallback {
        s.push_str(&format!(" (fallback: {f})"));
    }
    s
}

/// The event as `guardrail tail` shows it, without its time (syslog and
/// journald carry their own) and without the decision.
pub fn details(event: &Event) -> String {
    let line = if event.decision.is_some() {
        let plain = Event {
            decision: None,
            ..event.clone()
        };
        guardrail_engine::human::line(&plain, false)
    } else {
        guardrail_engine::human::line(event, false)
    };
    line.split_once(' ')
        .map_or(line.as_str(), |(_, rest)| rest)
        .to_string()
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests;
