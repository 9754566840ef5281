//! NATS JetStream output: every event, in order, on
//! `<subject_prefix>.<host>.<kind>`, each message sealed in this host's
//! chain so that the stream can be verified centrally.
//!
//! Guarantee (docs/outputs.md#nats): at least once, exactly once after the
//! server's deduplication. Records are appended to an on-disk spool
//! ([`super::spool`]); a publisher thread sends from
//! the spool with many acknowledgements in flight and forgets a record only
//! once JetStream acknowledged it. A record is resent after a failure with
//! the same `Nats-Msg-Id` (below), which the server
//! deduplicates; and after a reconnection the publisher first asks the
//! stream which of this host's records since the last acknowledged one it
//! holds, and skips exactly those, so a lost acknowledgement duplicates
//! nothing even after an outage longer than the deduplication window.
//! Only what the stream holds is skipped: in a cluster's fail-over a
//! record can be lost while later ones are stored, and it is sent again.
//! (After an agent restart, records sent and never acknowledged are sent
//! again and deduplicated within the server's window.) Only a full spool
//! drops records: they are counted, and a `loss` record naming the output
//! goes into the stream before the next one.
//!
//! What the stream carries: an output that takes every event (the
//! default) while the audit log is on sends **the audit log's own sealed
//! lines**, read from the log's files ([`super::logsource`]): one hash
//! per event for the log and the stream, nothing of the output's in the
//! event path, and no copy of the lines in a spool of its own (the log's
//! files are the queue). A message's id is then `<host>.<hash of its
//! first line>`, unique in the host's chain. Lines the output had to give
//! up (files rotated away unsent beyond `spool_bytes`, or lines after the
//! last one sent that no file holds any more at a start) are counted, and
//! a `loss` message (outside the chain, with an `id`) says how many
//! before the next lines; `guardrail log verify --nats` lets the chain
//! skip only there, or where a new audit log began.
//!
//! Otherwise (an output with filters, or no audit log) each record is
//! `{"host","chain_id","seq","event"}` sealed as the audit log's lines
//! are ([`guardrail_engine::chain`]), in this output's own chain,
//! continued across restarts from the spool, and `guardrail log verify`
//! checks an exported stream as it checks the audit log; a message's id
//! is `<host>.<chain id>.<seq of its first record>`, and a `loss` record
//! is sealed into that chain.
//!
//! Messages: one message holds one or more consecutive records of one kind,
//! one per line (JSON lines), on that kind's subject. A message per record
//! costs a publish and an acknowledgement per event, more agent CPU than
//! the whole rest of an event's path (docs/performance.md); consecutive
//! records are therefore spooled together as one entry, up to
//! [`BATCH_RECORDS`] or [`BATCH_BYTES`], and each entry is one message
//! whose `Nats-Msg-Id` names its first record. The entry is fixed once
//! spooled, so a resend is the very same message and the server's
//! deduplication holds. A quiet host's events still go out one by one: an
//! entry is closed as soon as the event path (or the audit log's writer)
//! has nothing more to hand over.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use tracing::warn;

use super::logsource::{LogSource, Message};
use super::message::{new_chain_id, Losses, BATCH_BYTES, BATCH_RECORDS};
use super::spool::{self, Pos, Spool, SpoolError, Writer};
use super::{Delivery, OutputStats, Sink};
use crate::audit::LogFeed;
use crate::config::nats::{check_output, shown};
use crate::config::OutputSection;
use crate::outputs::Published;
use guardrail_engine::chain::{chain_order, open, seal_in_place, sealed_hash, GENESIS};

pub const DEFAULT_PREFIX: &str = "guardrail";
pub const DEFAULT_STREAM: &str = "GUARDRAIL";
pub const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
pub const DEFAULT_MAX_AGE: &str = "30d";
pub const SPOOL_ROOT: &str = "/var/lib/guardrail/spool";
/// JetStream's default; documented because resends rely on it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Publishes waiting for their acknowledgement at most.
const WINDOW: usize = 1024;
/// Once stopping, how long the publisher keeps sending what is spooled
/// (what it could not send stays spooled for the next start).
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// The hostname as a subject token.
pub fn default_host(hostname: &str) -> String {
    let h: String = hostname
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if h.is_empty() {
        "-".into()
    } else {
        h
    }
}

/// How to reach the server, and the stream this output expects.
#[derive(Clone)]
struct Target {
    urls: Vec<async_nats::ServerAddr>,
    auth: Auth,
    prefix: String,
    host: String,
    stream: String,
    replicas: usize,
    max_age: Duration,
    name: String,
}

/// Credentials, read from their files at start (a file that cannot be
/// read stops the agent with its path; contents are never shown).
#[derive(Clone)]
enum Auth {
    None,
    Creds(PathBuf),
    Nkey(String),
    Token(String),
}

fn read_secret(path: &std::path::Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let text = text.trim().to_string();
    anyhow::ensure!(
        !text.is_empty(),
        "the {what} file {} is empty",
        path.display()
    );
    Ok(text)
}

pub struct Nats {
    feed: Feed,
    publisher: Option<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

/// What feeds the publisher.
enum Feed {
    /// Events handed over by the event path, sealed in this output's own
    /// chain and spooled: an output that takes some events only, or an
    /// agent without an audit log.
    Events(Box<Sealer>),
    /// The audit log's files, read by the publisher itself.
    AuditLog,
}

impl Nats {
    /// The output; it publishes the audit log's sealed lines from the
    /// log's files when given its `feed` (the output takes every event
    /// and the audit log is on), else the events the event path hands
    /// over.
    pub fn new(
        cfg: &OutputSection,
        name: &str,
        hostname: &str,
        stats: Arc<OutputStats>,
        feed: Option<Arc<LogFeed>>,
    ) -> Result<Self> {
        check_output(cfg).map_err(anyhow::Error::msg)?;
        let urls = cfg
            .url
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<Vec<async_nats::ServerAddr>, _>>()
            .context("url")?;
        let auth = if let Some(p) = &cfg.creds {
            // Read once now so that a wrong path stops the start.
            read_secret(p, "credentials")?;
            Auth::Creds(p.clone())
        } else if let Some(p) = &cfg.nkey {
            Auth::Nkey(read_secret(p, "nkey seed")?)
        } else if let Some(p) = &cfg.token_file {
            Auth::Token(read_secret(p, "token")?)
        } else {
            Auth::None
        };
        let host = cfg.host.clone().unwrap_or_else(|| default_host(hostname));
        let dir = cfg
            .spool_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(SPOOL_ROOT).join(name));
        let spool_bytes = cfg.spool_bytes.unwrap_or(DEFAULT_SPOOL_BYTES);
        let target = Target {
            urls,
            auth,
            prefix: cfg
                .subject_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
            host: host.clone(),
            stream: cfg.stream.clone().unwrap_or_else(|| DEFAULT_STREAM.into()),
            replicas: cfg.replicas.unwrap_or(1),
            max_age: humantime::parse_duration(cfg.max_age.as_deref().unwrap_or(DEFAULT_MAX_AGE))?,
            name: name.to_string(),
        };
        let (feed, queue) = match feed {
            Some(log_feed) => {
                // An older agent's spool: sent first, and the log is read
                // on from the last line it held.
                let (old, after) = if spool::exists_in(&dir) {
                    let (spool, _, last) = Spool::open(&dir, spool_bytes)?;
                    let after = last.as_deref().and_then(resume_point);
                    let old = (!spool.is_drained()).then_some(spool);
                    if old.is_none() {
                        spool::remove(&dir);
                    }
                    (old, after)
                } else {
                    (None, None)
                };
                if let Some(old) = &old {
                    let _ = stats.spool.set(old.clone());
                }
                stats.reads_log.store(true, Ordering::Relaxed);
                let log = LogSource::open(
                    log_feed,
                    &dir,
                    spool_bytes,
                    after.as_deref(),
                    name,
                    stats.clone(),
                )
                .with_context(|| {
                    format!(
                        "reading the audit log for the NATS output (spool_dir {})",
                        dir.display()
                    )
                })?;
                (
                    Feed::AuditLog,
                    Queue::Log {
                        old: old.map(|spool| SpoolQueue::new(spool, dir.clone())),
                        log: Box::new(log),
                    },
                )
            }
            None => {
                let (spool, writer, last) = Spool::open(&dir, spool_bytes)?;
                let _ = stats.spool.set(spool.clone());
                // Entries of this output's own chain may wait in the spool.
                let (chain_id, prev, seq) =
                    match last.as_deref().and_then(Continued::from_spool_line) {
                        Some(c) => (c.chain_id, c.hash, c.seq),
                        None => (new_chain_id(), GENESIS.to_string(), 0),
                    };
                let sealer = Sealer {
                    writer,
                    host_json: serde_json::Value::from(host).to_string(),
                    chain_id,
                    prev,
                    seq,
                    name: name.to_string(),
                    batch: Batch::default(),
                    losses: Losses::default(),
                };
                (
                    Feed::Events(Box::new(sealer)),
                    Queue::Spool(SpoolQueue::new(spool, dir.clone())),
                )
            }
        };
        let draining = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let acked_at = match &queue {
            Queue::Log { log, .. } => log.acked_at(),
            Queue::Spool(_) => 0,
        };
        let publisher = Publisher {
            target,
            queue,
            stats,
            draining: draining.clone(),
            abort: abort.clone(),
            acked_at,
        };
        let thread = std::thread::Builder::new()
            .name(format!("nats-{name}"))
            .spawn(move || publisher.run())
            .context("starting the NATS publisher thread")?;
        Ok(Self {
            feed,
            publisher: Some(thread),
            draining,
            abort,
        })
    }
}

/// Seals the events the event path hands over in this output's own
/// chain, and spools them.
struct Sealer {
    writer: Writer,
    /// The host as a JSON string, quoted and escaped once.
    host_json: String,
    chain_id: String,
    prev: String,
    seq: u64,
    name: String,
    /// Sealed records not yet spooled: one message to be.
    batch: Batch,
    losses: Losses,
}

impl Sealer {
    /// Seal `event_json` as the next record and add it to the message
    /// being built; refused, with nothing sealed, when the spool has no
    /// room for it or cannot take the message before it.
    fn append(&mut self, kind: &str, event_json: &str) -> Result<(), SpoolError> {
        use std::fmt::Write;
        let seq = self.seq + 1;
        if !self.batch.takes(kind, event_json.len() + 100) {
            self.spool_batch()?;
        }
        // Written straight into the message and sealed there.
        let before = self.batch.entry.len();
        let start = self.batch.open(seq, kind);
        let entry = &mut self.batch.entry;
        let _ = write!(
            entry,
            "{{\"host\":{},\"chain_id\":\"{}\",\"seq\":{seq},\"event\":",
            self.host_json, self.chain_id
        );
        entry.push_str(event_json);
        entry.push('}');
        // The message with this record and its seal (about 150 bytes) must
        // fit; checked before sealing so that a refused record leaves no
        // gap in the chain.
        if let Err(e) = self.writer.room(entry.len() + 160) {
            entry.truncate(before);
            return Err(e);
        }
        self.prev = seal_in_place(entry, start, &self.prev).as_str().to_owned();
        self.batch.taken(kind);
        self.seq = seq;
        Ok(())
    }

    /// Spool the message being built. Its records are sealed: when the
    /// spool cannot take it (a disk error; room was checked record by
    /// record) it is kept and tried again, so that the chain has no gap,
    /// and records after it are refused meanwhile.
    fn spool_batch(&mut self) -> Result<(), SpoolError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.writer.append(&self.batch.entry)?;
        self.batch.clear();
        Ok(())
    }

    fn deliver(&mut self, p: &Published, ctx: &Delivery) -> Result<(), String> {
        if self.losses.unreported > 0 {
            let loss = self.losses.record(&self.name, "spool full", None);
            if self.append("loss", &loss.to_string()).is_ok() {
                self.losses.unreported = 0;
            }
        }
        if self.losses.unreported > 0 {
            self.losses.unreported += 1;
            self.losses.total += 1;
            ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.append(p.event.body.kind(), &p.json) {
            Ok(()) => Ok(()),
            Err(e @ SpoolError::Full { .. }) => {
                self.losses.count(1, &e.to_string(), &self.name, &ctx.stats);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn idle(&mut self, ctx: &Delivery) {
        if let Err(e) = self.spool_batch().and_then(|()| self.writer.flush()) {
            ctx.stats.error(e.to_string());
        }
    }

    /// Spool and flush what is left, when the output stops.
    fn finish(&mut self) {
        if let Err(e) = self.spool_batch() {
            warn!(output = %self.name, "{e}: the last {} events are lost to this output", self.batch.records);
        }
        if let Err(e) = self.writer.flush() {
            warn!(output = %self.name, "{e}");
        }
    }
}

/// Where the log is read on from, after an older agent's spool: the hash
/// of the last audit line it holds, or the one a `loss` entry names as
/// the last spooled before it. None for an own chain's entry.
fn resume_point(entry: &str) -> Option<String> {
    let (kind, last) = last_record(entry)?;
    if kind == "loss" && sealed_hash(last).is_none() {
        let v: serde_json::Value = serde_json::from_str(last).ok()?;
        return v["after"].as_str().map(str::to_string);
    }
    let hash = sealed_hash(last)?;
    Continued::from_record(last)
        .is_none()
        .then(|| hash.to_string())
}

/// Consecutive records of one kind, to be spooled as one entry
/// `<first> <kind> <record>\t<record>…`, `<first>` naming the message: the
/// seq of its first record in this output's own chain, or the hash of its
/// first audit log line. A sealed record is compact JSON, in which a tab
/// can only appear escaped, so the tab separates records within the
/// spool's line, and becomes a newline in the message.
#[derive(Default)]
struct Batch {
    entry: String,
    kind: String,
    records: u64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Whether a record of `kind` about `bytes` long may join.
    fn takes(&self, kind: &str, bytes: usize) -> bool {
        self.is_empty()
            || (self.kind == kind
                && self.records < BATCH_RECORDS
                && self.entry.len() + bytes + 160 <= BATCH_BYTES)
    }

    /// Begin a record: the entry's header or a separator; returns where
    /// the record starts. Until [`Self::taken`], truncating the entry to
    /// its length before undoes it.
    fn open(&mut self, first: impl std::fmt::Display, kind: &str) -> usize {
        use std::fmt::Write;
        if self.is_empty() {
            self.entry.clear();
            let _ = write!(self.entry, "{first} {kind} ");
        } else {
            self.entry.push('\t');
        }
        self.entry.len()
    }

    /// The record begun by [`Self::open`] is whole.
    fn taken(&mut self, kind: &str) {
        if self.kind != kind {
            self.kind.clear();
            self.kind.push_str(kind);
        }
        self.records += 1;
    }

    #[cfg(test)]
    fn push(&mut self, first: impl std::fmt::Display, kind: &str, line: &str) {
        self.open(first, kind);
        self.entry.push_str(line);
        self.taken(kind);
    }

    fn clear(&mut self) {
        self.entry.clear();
        self.records = 0;
    }
}

/// A spooled entry taken apart: what names its message, its kind, and its
/// records separated by tabs (an entry of an older agent holds one).
fn entry_parts(entry: &str) -> Option<(&str, &str, &str)> {
    let mut parts = entry.splitn(3, ' ');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// A spooled entry's kind and last record.
fn last_record(entry: &str) -> Option<(&str, &str)> {
    let (_, kind, records) = entry_parts(entry)?;
    Some((kind, records.rsplit('\t').next()?))
}

/// A spooled entry as a message: what names it (see [`Batch`]), its kind,
/// the payload (records one per line) and how many records it holds.
fn entry_message(entry: &[u8]) -> Option<(&str, &str, bytes::Bytes, u64)> {
    let first_end = memchr::memchr(b' ', entry)?;
    let kind_end = first_end + 1 + memchr::memchr(b' ', &entry[first_end + 1..])?;
    let first = std::str::from_utf8(&entry[..first_end]).ok()?;
    let kind = std::str::from_utf8(&entry[first_end + 1..kind_end]).ok()?;
    let mut payload = entry[kind_end + 1..].to_vec();
    let mut records = 1;
    for tab in memchr::memchr_iter(b'\t', &entry[kind_end + 1..]) {
        payload[tab] = b'\n';
        records += 1;
    }
    Some((first, kind, payload.into(), records))
}

/// What names a spooled message after `<host>.` in its `Nats-Msg-Id`:
/// `<chain id>.<seq>` of its first record in an output's own chain (the
/// chain its record names: an older agent's may wait in the spool), else
/// `first` itself (an audit log line's hash, or a `loss` message's id).
fn entry_name(first: &str, payload: &[u8]) -> String {
    let own_seq = first.len() <= 20 && first.bytes().all(|b| b.is_ascii_digit());
    if !own_seq {
        return first.to_string();
    }
    let record = payload.split(|&b| b == b'\n').next().unwrap_or_default();
    match std::str::from_utf8(record)
        .ok()
        .and_then(Continued::from_record)
    {
        Some(c) => format!("{}.{first}", c.chain_id),
        None => first.to_string(),
    }
}

/// The names (see [`entry_name`]) of every record a stored message
/// holds: `<chain id>.<seq>` of an own chain's, an audit line's hash, a
/// `loss` message's id. A message of this output is held if its first
/// record's name is among them.
fn names_in(payload: &str) -> Vec<String> {
    payload
        .lines()
        .filter_map(|line| {
            if let Some(hash) = sealed_hash(line) {
                if let Some(c) = Continued::from_record(line) {
                    return Some(format!("{}.{}", c.chain_id, c.seq));
                }
                return Some(hash.to_string());
            }
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            v["id"].as_str().map(str::to_string)
        })
        .collect()
}

/// Where a chain continues: from a spool line or a stored message.
struct Continued {
    chain_id: String,
    hash: String,
    seq: u64,
}

impl Continued {
    /// From a spooled entry: its last record.
    fn from_spool_line(line: &str) -> Option<Self> {
        Self::from_record(last_record(line)?.1)
    }

    fn from_record(record: &str) -> Option<Self> {
        let opened = open(record)?;
        let v: serde_json::Value = serde_json::from_str(&opened.event_json).ok()?;
        Some(Self {
            chain_id: v["chain_id"].as_str()?.to_string(),
            hash: opened.hash.to_string(),
            seq: v["seq"].as_u64()?,
        })
    }
}

impl Sink for Nats {
    fn deliver(&mut self, p: &Published, ctx: &Delivery) -> Result<(), String> {
        match &mut self.feed {
            Feed::Events(s) => s.deliver(p, ctx),
            Feed::AuditLog => Ok(()),
        }
    }

    fn idle(&mut self, ctx: &Delivery) {
        if let Feed::Events(s) = &mut self.feed {
            s.idle(ctx);
        }
    }

    fn takes_events(&self) -> bool {
        matches!(self.feed, Feed::Events(_))
    }

    fn confirms_itself(&self) -> bool {
        true
    }

    fn stores_itself(&self) -> bool {
        true
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Feed::Events(s) = &mut self.feed {
            s.finish();
        }
        // The publisher sends what it can for a moment; the rest stays in
        // the spool (or the log) for the next start.
        self.draining.store(true, Ordering::Relaxed);
        join_within(&mut self.publisher, STOP_DRAIN, &self.abort);
    }
}

/// Let `thread` finish on its own for up to `grace`, then raise `stop`
/// and wait for it.
fn join_within(thread: &mut Option<JoinHandle<()>>, grace: Duration, stop: &AtomicBool) {
    let end = Instant::now() + grace;
    while thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = thread.take() {
        let _ = t.join();
    }
}

/// What the publisher sends from.
enum Queue {
    /// This output's spool (its own chain's records).
    Spool(SpoolQueue),
    /// The audit log's files; first what an older agent spooled from
    /// them and never sent.
    Log {
        old: Option<SpoolQueue>,
        log: Box<LogSource>,
    },
}

/// Where a message ends, to acknowledge it.
enum End {
    Spool(Pos),
    Log(Message),
}

/// A spool read from the first entry not acknowledged.
struct SpoolQueue {
    spool: Arc<Spool>,
    dir: PathBuf,
    next: Pos,
}

impl SpoolQueue {
    fn new(spool: Arc<Spool>, dir: PathBuf) -> Self {
        let next = spool.acked();
        SpoolQueue { spool, dir, next }
    }

    /// The next entries as messages (None: held by the stream already).
    fn read(&mut self, stored: &HashSet<String>) -> Result<Vec<(Option<Outgoing>, End)>, String> {
        let batch = self
            .spool
            .read(self.next, 256 << 10)
            .map_err(|e| e.to_string())?;
        let mut out = vec![];
        for (entry, end) in batch {
            let Some((first, kind, payload, records)) = entry_message(&entry) else {
                return Err(format!("spool: unreadable record at {:?}", self.next));
            };
            self.next = end;
            let name = entry_name(first, &payload);
            let outgoing = (!stored.contains(&name)).then(|| Outgoing {
                kind: kind.to_string(),
                name,
                payload,
                records,
            });
            out.push((outgoing, End::Spool(end)));
        }
        Ok(out)
    }
}

/// A message to publish.
struct Outgoing {
    kind: String,
    name: String,
    payload: bytes::Bytes,
    records: u64,
}

impl Queue {
    fn rewind(&mut self) {
        match self {
            Queue::Spool(q) => q.next = q.spool.acked(),
            Queue::Log { old, log } => {
                if let Some(q) = old {
                    q.next = q.spool.acked();
                }
                log.rewind();
            }
        }
    }

    /// The next messages, with where each ends; empty when nothing more
    /// is there for now.
    fn read(&mut self, stored: &HashSet<String>) -> Result<Vec<(Option<Outgoing>, End)>, String> {
        match self {
            Queue::Spool(q) => q.read(stored),
            Queue::Log { old, log } => {
                if let Some(q) = old {
                    let out = q.read(stored)?;
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
                let messages = log
                    .read(256 << 10, stored)
                    .map_err(|e| format!("reading the audit log: {e}"))?;
                Ok(messages
                    .into_iter()
                    .map(|mut m| {
                        let outgoing = m.payload.take().map(|payload| Outgoing {
                            kind: std::mem::take(&mut m.kind),
                            name: std::mem::take(&mut m.name),
                            payload,
                            records: m.records,
                        });
                        (outgoing, End::Log(m))
                    })
                    .collect())
            }
        }
    }

    /// Everything up to `end` is stored (at stream sequence `at`; 0 when
    /// the stream held it already).
    fn ack(&mut self, end: &End, at: u64) -> Result<(), String> {
        match (self, end) {
            (Queue::Spool(q), End::Spool(pos)) => q.spool.ack(*pos).map_err(|e| e.to_string()),
            (Queue::Log { old, .. }, End::Spool(pos)) => {
                let Some(q) = old else { return Ok(()) };
                q.spool.ack(*pos).map_err(|e| e.to_string())?;
                if q.spool.is_drained() && q.next >= *pos {
                    // The older agent's spool is sent: the log goes on.
                    spool::remove(&q.dir);
                    *old = None;
                }
                Ok(())
            }
            (Queue::Log { log, .. }, End::Log(m)) => {
                log.ack(m.end, m.last_hash.as_deref(), at);
                Ok(())
            }
            (Queue::Spool(_), End::Log(_)) => Ok(()),
        }
    }

    fn save_cursor(&mut self, acked_at: u64) -> Result<(), String> {
        match self {
            Queue::Spool(q) => q.spool.save_cursor().map_err(|e| e.to_string()),
            Queue::Log { old, log } => {
                if let Some(q) = old {
                    q.spool.save_cursor().map_err(|e| e.to_string())?;
                }
                log.save_cursor(acked_at)
                    .map_err(|e| format!("spool: cannot write the cursor: {e}"))
            }
        }
    }

    /// Take in what the log's writer did (see `LogSource::refresh`).
    fn refresh(&mut self) {
        if let Queue::Log { log, .. } = self {
            log.refresh();
        }
    }

    fn is_drained(&mut self) -> bool {
        match self {
            Queue::Spool(q) => q.spool.is_drained(),
            Queue::Log { old, log } => {
                old.as_ref().is_none_or(|q| q.spool.is_drained()) && log.is_drained()
            }
        }
    }

    /// Completes when there may be more to read.
    async fn more(&self) {
        match self {
            Queue::Spool(q) => q.spool.flushed().await,
            Queue::Log { log, .. } => log.feed().changed().await,
        }
    }
}

struct Publisher {
    target: Target,
    queue: Queue,
    stats: Arc<OutputStats>,
    draining: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    /// The stream sequence of the last record JetStream acknowledged (0:
    /// none known): what was sent after it may or may not be stored.
    acked_at: u64,
}

impl Publisher {
    fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                self.stats
                    .error(format!("cannot start the NATS runtime: {e}"));
                return;
            }
        };
        rt.block_on(self.publish());
        if let Err(e) = self.queue.save_cursor(self.acked_at) {
            warn!(output = %self.target.name, "{e}");
        }
    }

    fn done(&mut self) -> bool {
        self.abort.load(Ordering::Relaxed)
            || (self.draining.load(Ordering::Relaxed) && self.queue.is_drained())
    }

    async fn publish(&mut self) {
        let mut backoff = Duration::from_millis(250);
        let mut failing = false;
        while !self.done() {
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    if !failing {
                        warn!(output = %self.target.name, "NATS output: {e}; events stay in the spool and are sent once it works (warned once until then)");
                        failing = true;
                    }
                    self.stats.error(e);
                }
            }
            let end = Instant::now() + backoff;
            while Instant::now() < end && !self.done() {
                // Files rotated away meanwhile count against the bound.
                self.queue.refresh();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn connect(&self) -> Result<jetstream::Context, String> {
        let t = &self.target;
        let opts = match &t.auth {
            Auth::None => async_nats::ConnectOptions::new(),
            Auth::Creds(p) => async_nats::ConnectOptions::with_credentials_file(p)
                .await
                .map_err(|e| format!("credentials file {}: {e}", p.display()))?,
            Auth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            Auth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        };
        let client = opts
            .name(format!("guardrail {}", t.host))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .max_reconnects(Some(0))
            .connect(t.urls.clone())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", shown(&t.urls)))?;
        Ok(jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .ack_timeout(Duration::from_secs(5))
            .max_ack_inflight(WINDOW * 2)
            .build(client))
    }

    /// The stream as this output expects it: created when missing; when
    /// it exists with other settings it is left alone and the output
    /// waits, saying what differs.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<stream::Stream, String> {
        let t = &self.target;
        let want_subject = format!("{}.>", t.prefix);
        match js.get_stream(&t.stream).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(|e| format!("stream {}: {e}", t.stream))?;
                let c = &info.config;
                let mut diff = Vec::new();
                if !c.subjects.contains(&want_subject) {
                    diff.push(format!("subjects {:?} (want {want_subject:?})", c.subjects));
                }
                if c.num_replicas.max(1) != t.replicas {
                    diff.push(format!("replicas {} (want {})", c.num_replicas, t.replicas));
                }
                if c.max_age != t.max_age {
                    diff.push(format!(
                        "max_age {} (want {})",
                        humantime::format_duration(c.max_age),
                        humantime::format_duration(t.max_age)
                    ));
                }
                if c.retention != stream::RetentionPolicy::Limits {
                    diff.push(format!("retention {:?} (want Limits)", c.retention));
                }
                if c.storage != stream::StorageType::File {
                    diff.push(format!("storage {:?} (want File)", c.storage));
                }
                if diff.is_empty() {
                    Ok(s)
                } else {
                    Err(format!(
                        "stream {} exists with other settings than this output's: {}; it is not changed: make the stream or the output's configuration agree",
                        t.stream,
                        diff.join(", ")
                    ))
                }
            }
            Err(e) => {
                let missing = matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
                if !missing {
                    return Err(format!("stream {}: {e}", t.stream));
                }
                js.create_stream(stream::Config {
                    name: t.stream.clone(),
                    subjects: vec![want_subject],
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    num_replicas: t.replicas,
                    max_age: t.max_age,
                    duplicate_window: DUPLICATE_WINDOW,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create stream {}: {e}", t.stream))
            }
        }
    }

    /// This chain's records the stream holds after stream sequence
    /// `after`: those sent since the last acknowledgement that were
    /// stored all the same (their acknowledgement was lost). Not a range:
    /// in a fail-over one can be lost while later ones are stored.
    async fn stored_after(
        &self,
        s: &stream::Stream,
        after: u64,
    ) -> Result<HashSet<String>, String> {
        let t = &self.target;
        let held = host_messages(
            s,
            &t.prefix,
            &t.host,
            jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
        )
        .await
        .map_err(|e| {
            format!(
                "stream {}: reading this host's records since the last acknowledged one: {e:#}",
                t.stream
            )
        })?;
        Ok(held
            .iter()
            .filter_map(|(_, m)| std::str::from_utf8(m).ok())
            .flat_map(names_in)
            .collect())
    }

    /// One connection: send from the queue until stopped or a failure.
    async fn session(&mut self) -> Result<(), String> {
        let js = self.connect().await?;
        let stream = self.ensure_stream(&js).await?;
        let stored = match self.acked_at {
            // Nothing acknowledged is known: what an earlier agent sent
            // and never saw acknowledged is sent again (deduplicated).
            0 => HashSet::new(),
            after => self.stored_after(&stream, after).await?,
        };
        self.queue.rewind();
        let prefix = format!("{}.{}.", self.target.prefix, self.target.host);
        let id_prefix = format!("{}.", self.target.host);
        // Each message in flight: its acknowledgement and records (none
        // for one the stream holds already), and where it ends.
        let mut inflight: VecDeque<(Option<(PublishAckFuture, u64)>, End)> = VecDeque::new();
        let mut saved = Instant::now();
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            // Refill once half the window is acknowledged, not after every
            // acknowledgement: a read takes up to 256 KiB of records, and
            // one that could use a single record parsed and dropped the
            // rest (about 0.5 ms of CPU per record sent, docs/performance.md).
            if inflight.len() <= WINDOW / 2 {
                while inflight.len() < WINDOW {
                    let batch = self.queue.read(&stored)?;
                    if batch.is_empty() {
                        break;
                    }
                    for (outgoing, end) in batch {
                        let Some(m) = outgoing else {
                            inflight.push_back((None, end));
                            continue;
                        };
                        let msg = jetstream::message::PublishMessage::build()
                            .message_id(format!("{id_prefix}{}", m.name))
                            .payload(m.payload);
                        let ack = js
                            .send_publish(format!("{prefix}{}", m.kind), msg)
                            .await
                            .map_err(|e| format!("publish: {e}"))?;
                        inflight.push_back((Some((ack, m.records)), end));
                    }
                }
            }
            let Some((ack, end)) = inflight.pop_front() else {
                if self.done() {
                    return Ok(());
                }
                if saved.elapsed() >= Duration::from_millis(200) {
                    self.queue.save_cursor(self.acked_at)?;
                    saved = Instant::now();
                }
                tokio::select! {
                    () = self.queue.more() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            };
            let mut at = 0;
            if let Some((ack, records)) = ack {
                let ack = ack.await.map_err(|e| {
                    format!("{}: no acknowledgement: {e}", shown(&self.target.urls))
                })?;
                self.acked_at = ack.sequence;
                at = ack.sequence;
                self.stats.delivered(records);
            }
            self.queue.ack(&end, at)?;
            if saved.elapsed() >= Duration::from_millis(200) {
                self.queue.save_cursor(self.acked_at)?;
                saved = Instant::now();
            }
        }
    }
}

/// Where to read a host's records from, for `guardrail log verify --nats`.
pub struct Source {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub host: String,
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// A host's records in stream order, each with the stream sequence of
/// the message that holds it.
pub async fn read_host(src: &Source) -> Result<Vec<(u64, String)>> {
    let opts = if let Some(p) = &src.creds {
        async_nats::ConnectOptions::with_credentials_file(p)
            .await
            .with_context(|| format!("credentials file {}", p.display()))?
    } else if let Some(p) = &src.nkey {
        async_nats::ConnectOptions::with_nkey(read_secret(p, "nkey seed")?)
    } else if let Some(p) = &src.token_file {
        async_nats::ConnectOptions::with_token(read_secret(p, "token")?)
    } else {
        async_nats::ConnectOptions::new()
    };
    let client = opts
        .connection_timeout(Duration::from_secs(10))
        .connect(src.url.as_str())
        .await
        .with_context(|| format!("connecting to {}", src.url))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&src.stream)
        .await
        .with_context(|| format!("stream {}", src.stream))?;
    let all = jetstream::consumer::DeliverPolicy::All;
    Ok(host_messages(&stream, &src.subject_prefix, &src.host, all)
        .await?
        .into_iter()
        .flat_map(|(seq, m)| {
            String::from_utf8_lossy(&m)
                .lines()
                .map(|line| (seq, line.to_string()))
                .collect::<Vec<_>>()
        })
        .collect())
}

/// A host's messages (`<prefix>.<host>.>`) as the stream holds them now,
/// in stream order: stream sequence and payload. (A consumer rather than
/// a direct get: nats-server 2.9 finds no last message for a wildcard
/// subject.)
async fn host_messages(
    stream: &stream::Stream,
    prefix: &str,
    host: &str,
    policy: jetstream::consumer::DeliverPolicy,
) -> Result<Vec<(u64, Vec<u8>)>> {
    use futures_util::StreamExt;
    // A cluster that lost a node answers no consumer request while it
    // elects a new metadata leader (seconds): ask again, for up to 30 s.
    let mut attempts = 0;
    let consumer = loop {
        let asked = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("{prefix}.{host}.>"),
                deliver_policy: policy,
                ..Default::default()
            })
            .await;
        match asked {
            Ok(consumer) => break consumer,
            Err(e) if e.kind() == stream::ConsumerErrorKind::TimedOut && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).context(format!(
                    "creating a consumer of {prefix}.{host}.> (after {} attempts)",
                    attempts + 1
                ))
            }
        }
    };
    let n = consumer.cached_info().num_pending as usize;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await?;
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("the stream stopped delivering")?
            .context("the stream ended")??;
        let seq = m.info().map_err(anyhow::Error::msg)?.stream_sequence;
        out.push((seq, m.payload.to_vec()));
    }
    Ok(out)
}

/// What a host's records in a stream hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostChain {
    pub records: u64,
    /// Stream sequences where a new chain began (a spool or audit log
    /// started afresh).
    pub restarts: Vec<u64>,
    /// `loss` messages: their stream sequence and how many records the
    /// host said it could not send there.
    pub losses: Vec<(u64, u64)>,
    /// Stream sequences of records stored after records that follow them
    /// in the chain: resent after a cluster fail-over (checked in chain
    /// order all the same).
    pub late: Vec<u64>,
}

/// Check a host's records in chain order (each placed after the record
/// its `prev` names, wherever the stream stored it; see
/// [`guardrail_engine::chain::chain_order`]). Two forms may be there: the
/// audit log's own lines (each following the one before it; a new chain
/// may begin only with a new log, its `prev` of zeros, and the chain may
/// skip only where a `loss` message says records were lost), and records
/// of an output's own chain (each naming `host`, a new chain beginning
/// only at its first record: `prev` of zeros, `seq` 1, another
/// `chain_id`). On failure, the stream sequence and why.
pub fn verify_host(host: &str, records: &[(u64, String)]) -> Result<HostChain, (u64, String)> {
    let mut out = HostChain::default();
    // The audit log's chain: checked, and whether a `loss` came since;
    // and every line seen (a line's first 8 bytes of hash), so that a
    // line repeated where the chain may skip is found all the same.
    let mut audit: Option<guardrail_engine::chain::Verifier> = None;
    let mut after_loss = false;
    let mut seen = HashSet::new();
    // An output's own chain.
    let mut v = guardrail_engine::chain::Verifier::new();
    let mut chain: Option<(String, u64)> = None;
    let (order, late) = chain_order(
        records
            .iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .as_slice(),
    );
    out.late = late.into_iter().map(|i| records[i].0).collect();
    for (stream_seq, line) in order.into_iter().map(|i| &records[i]) {
        let fail = |why: &str| (*stream_seq, why.to_string());
        let Some(opened) = open(line) else {
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|_| fail("not a sealed record"))?;
            if value["kind"] != "loss" || !value["id"].is_string() {
                return Err(fail("not a sealed record"));
            }
            out.losses
                .push((*stream_seq, value["loss"]["count"].as_u64().unwrap_or(0)));
            after_loss = true;
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&opened.event_json)
            .map_err(|_| fail("the record is not JSON: it was edited"))?;
        if value.get("chain_id").is_none() {
            // An audit log line.
            let short = u64::from_str_radix(&opened.hash[..16], 16).unwrap_or(0);
            if !seen.insert(short) {
                return Err(fail(
                    "a record repeated: a record is missing, repeated or out of order",
                ));
            }
            let restart = opened.prev == GENESIS && audit.is_some();
            if restart {
                out.restarts.push(*stream_seq);
            }
            if restart || after_loss {
                audit = None;
            }
            audit
                .get_or_insert_with(guardrail_engine::chain::Verifier::new)
                .check(line)
                .map_err(fail)?;
            after_loss = false;
            out.records += 1;
            continue;
        }
        // A record of an output's own chain (an output with filters, or
        // no audit log, for a while): audit lines after it begin anew,
        // their link to the lines before that stretch unchecked.
        audit = None;
        if value["host"] != host {
            return Err(fail(&format!("the record names host {}", value["host"])));
        }
        let (Some(id), Some(seq)) = (value["chain_id"].as_str(), value["seq"].as_u64()) else {
            return Err(fail("the record has no chain_id or seq"));
        };
        let fresh = opened.prev == GENESIS && seq == 1;
        match &chain {
            Some((cur, _)) if fresh && cur != id => {
                v = guardrail_engine::chain::Verifier::new();
                out.restarts.push(*stream_seq);
            }
            Some((cur, _)) if cur != id => {
                return Err(fail("a record of another chain, not at that chain's start"))
            }
            Some((_, last)) if seq != last + 1 => {
                v.check(line).map_err(fail)?;
                return Err(fail(&format!(
                    "seq {seq} after {last}: a record is missing, repeated or out of order"
                )));
            }
            _ => {}
        }
        v.check(line).map_err(fail)?;
        chain = Some((id.to_string(), seq));
        out.records += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::message::kind_of;
    use guardrail_engine::chain::seal;

    fn chain(id: &str, n: u64) -> Vec<(u64, String)> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let rec = format!(
                    "{{\"host\":\"h\",\"chain_id\":\"{id}\",\"seq\":{seq},\"event\":{{\"seq\":{seq},\"kind\":\"file\"}}}}"
                );
                let (line, hash) = seal(&prev, &rec);
                prev = hash;
                (seq, line)
            })
            .collect()
    }

    #[test]
    fn a_hosts_records_verify_and_a_new_chain_may_begin() {
        let mut r = chain("a", 5);
        assert_eq!(verify_host("h", &r).unwrap().records, 5);
        r.extend(chain("b", 3).into_iter().map(|(s, l)| (s + 5, l)));
        let ok = verify_host("h", &r).unwrap();
        assert_eq!((ok.records, ok.restarts), (8, vec![6]));
        assert!(verify_host("other", &r)
            .unwrap_err()
            .1
            .contains("names host"));
    }

    #[test]
    fn a_missing_edited_or_reordered_record_is_found() {
        let mut missing = chain("a", 5);
        missing.remove(2);
        assert_eq!(verify_host("h", &missing).unwrap_err().0, 4);
        let mut edited = chain("a", 5);
        edited[1].1 = edited[1]
            .1
            .replace("\"kind\":\"file\"", "\"kind\":\"exec\"");
        let e = verify_host("h", &edited).unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("edited"), "{}", e.1);
        // Stored out of order (a resend after a fail-over): verified in
        // chain order, and named.
        let mut reordered = chain("a", 5);
        reordered.swap(1, 2);
        let ok = verify_host("h", &reordered).unwrap();
        assert_eq!((ok.records, ok.late), (5, vec![2]));
        // A repeated first record is no restart: the same chain id.
        let mut repeated = chain("a", 3);
        repeated.push((4, repeated[0].1.clone()));
        assert_eq!(verify_host("h", &repeated).unwrap_err().0, 4);
    }

    #[test]
    fn consecutive_records_of_one_kind_share_an_entry_and_a_chain_continues_from_its_last() {
        let records = chain("a", 3);
        let mut b = Batch::default();
        for (seq, line) in &records {
            assert!(b.takes("file", line.len()));
            b.push(*seq, "file", line);
        }
        assert!(!b.takes("exec", 10), "another kind begins another message");
        let (seq, kind, payload, count) = entry_message(b.entry.as_bytes()).unwrap();
        assert_eq!((seq, kind, count), ("1", "file", 3));
        let lines: Vec<(u64, String)> = std::str::from_utf8(&payload)
            .unwrap()
            .lines()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.to_string()))
            .collect();
        assert_eq!(lines, records, "the message is the records, one per line");
        let c = Continued::from_spool_line(&b.entry).unwrap();
        assert_eq!((c.chain_id.as_str(), c.seq), ("a", 3));
        // An entry spooled by an agent before batches: one record.
        let old = format!("1 file {}", records[0].1);
        assert_eq!(Continued::from_spool_line(&old).unwrap().seq, 1);
        // Full by count and by size.
        let mut full = Batch::default();
        for seq in 1..=BATCH_RECORDS {
            full.push(seq, "file", "{}");
        }
        assert!(!full.takes("file", 2));
        let mut big = Batch::default();
        big.push(1, "file", &"x".repeat(BATCH_BYTES - 200));
        assert!(!big.takes("file", 100));
    }

    /// Audit log lines as the writer seals them, after `prev`.
    fn audit_lines(prev: &str, kinds: &[&str]) -> Vec<String> {
        let mut prev = prev.to_string();
        kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let (line, hash) = seal(&prev, &format!("{{\"seq\":{i},\"kind\":\"{kind}\"}}"));
                prev = hash;
                line
            })
            .collect()
    }

    fn numbered(lines: &[String]) -> Vec<(u64, String)> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.clone()))
            .collect()
    }

    #[test]
    fn audit_lines_verify_and_only_a_loss_record_or_a_new_log_explains_a_break() {
        let lines = audit_lines(GENESIS, &["exec", "file", "file", "perm", "file"]);
        let ok = verify_host("h", &numbered(&lines)).unwrap();
        assert_eq!((ok.records, ok.restarts.len()), (5, 0));
        // A line missing, edited or repeated is found; one stored late is
        // named.
        let mut missing = lines.clone();
        missing.remove(2);
        assert_eq!(verify_host("h", &numbered(&missing)).unwrap_err().0, 3);
        let mut edited = lines.clone();
        edited[1] = edited[1].replace("\"file\"", "\"exec\"");
        assert!(verify_host("h", &numbered(&edited))
            .unwrap_err()
            .1
            .contains("edited"));
        let mut repeated = lines.clone();
        repeated.insert(2, lines[1].clone());
        assert_eq!(verify_host("h", &numbered(&repeated)).unwrap_err().0, 3);
        let mut moved = lines.clone();
        moved.swap(1, 2);
        assert_eq!(verify_host("h", &numbered(&moved)).unwrap().late, vec![3]);
        // A loss message explains the gap after it, and is reported.
        let loss = r#"{"kind":"loss","id":"loss.1","loss":{"output":"nats","count":1,"total":1}}"#;
        let mut lost = lines.clone();
        lost[2] = loss.to_string();
        let ok = verify_host("h", &numbered(&lost)).unwrap();
        assert_eq!((ok.records, ok.losses), (4, vec![(3, 1)]));
        // An unsealed line that is no loss message is not accepted.
        let mut foreign = lines.clone();
        foreign[2] = r#"{"kind":"file"}"#.to_string();
        assert!(verify_host("h", &numbered(&foreign)).is_err());
        // A new audit log begins a new chain.
        let mut renewed = lines.clone();
        renewed.extend(audit_lines(GENESIS, &["agent"]));
        assert_eq!(
            verify_host("h", &numbered(&renewed)).unwrap().restarts,
            vec![6]
        );
    }

    #[test]
    fn audit_lines_are_named_by_their_hash_and_grouped_by_kind() {
        let lines = audit_lines(GENESIS, &["exec", "file", "file"]);
        assert_eq!(kind_of(lines[1].as_bytes()), Some("file"));
        let hashes: Vec<&str> = lines.iter().map(|l| sealed_hash(l).unwrap()).collect();
        assert_eq!(entry_name(hashes[0], lines[0].as_bytes()), hashes[0]);
        // A record of an own chain is named by the chain it names.
        let own = &chain("c7", 2)[1].1;
        assert_eq!(entry_name("2", own.as_bytes()), "c7.2");
        assert_eq!(names_in(own), vec!["c7.2".to_string()]);
        let mut b = Batch::default();
        b.push(hashes[1], "file", &lines[1]);
        assert!(b.takes("file", lines[2].len()));
        b.push(hashes[1], "file", &lines[2]);
        let (first, kind, payload, count) = entry_message(b.entry.as_bytes()).unwrap();
        assert_eq!((first, kind, count), (hashes[1], "file", 2));
        // The stream's copy of that message names both lines.
        let held = names_in(std::str::from_utf8(&payload).unwrap());
        assert_eq!(held, vec![hashes[1].to_string(), hashes[2].to_string()]);
        let loss = r#"{"kind":"loss","id":"loss.9","loss":{}}"#;
        assert_eq!(names_in(loss), vec!["loss.9".to_string()]);
    }

    #[test]
    fn a_repeated_line_is_found_even_where_the_chain_may_skip() {
        let lines = audit_lines(GENESIS, &["exec", "file", "file", "perm"]);
        let loss = r#"{"kind":"loss","id":"loss.1","loss":{"count":1}}"#.to_string();
        // After a loss message, a line seen before is no skip.
        let replayed = vec![lines[0].clone(), lines[1].clone(), loss, lines[1].clone()];
        let e = verify_host("h", &numbered(&replayed)).unwrap_err();
        assert_eq!(e.0, 4, "{}", e.1);
        // A log's first line again is no new log.
        let again = vec![lines[0].clone(), lines[1].clone(), lines[0].clone()];
        assert_eq!(verify_host("h", &numbered(&again)).unwrap_err().0, 3);
        // An output's own chain for a while (filters configured), then the
        // audit log's lines again: each verifies.
        let mut mixed = lines[..2].to_vec();
        mixed.extend(chain("own", 2).into_iter().map(|(_, l)| l));
        mixed.extend(lines[3..].iter().cloned());
        assert_eq!(verify_host("h", &numbered(&mixed)).unwrap().records, 5);
    }

    #[test]
    fn an_older_agents_spool_says_after_which_line_the_log_is_read_on() {
        let lines = audit_lines(GENESIS, &["file"; 3]);
        let mut entry = Batch::default();
        entry.push(sealed_hash(&lines[0]).unwrap(), "file", &lines[0]);
        entry.push(sealed_hash(&lines[1]).unwrap(), "file", &lines[1]);
        assert_eq!(
            resume_point(&entry.entry).as_deref(),
            sealed_hash(&lines[1])
        );
        // A loss entry names the last line spooled before it.
        let loss = serde_json::json!({"kind": "loss", "id": "loss.1", "after": sealed_hash(&lines[2]).unwrap()});
        let loss_entry = format!("loss.1 loss {loss}");
        assert_eq!(resume_point(&loss_entry).as_deref(), sealed_hash(&lines[2]));
        // An own chain's entry is no place to resume the audit log's lines.
        let mut own = Batch::default();
        own.push(1, "file", &chain("c", 1)[0].1);
        assert_eq!(resume_point(&own.entry), None);
    }

    #[test]
    fn default_host_is_one_subject_token() {
        assert_eq!(default_host("web-1.example.org"), "web-1_example_org");
        assert!(crate::config::nats::is_token(&default_host("a b.c")));
    }
}
