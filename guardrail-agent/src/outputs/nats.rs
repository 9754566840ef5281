//! NATS JetStream output: every event, in order, on
//! `<subject_prefix>.<host>.<kind>`, each message sealed in this host's
//! chain so that the stream can be verified centrally.
//!
//! Guarantee (docs/outputs.md#nats): at least once, exactly once after the
//! server's deduplication. The output's thread seals each event and appends
//! it to an on-disk spool ([`super::spool`]); a publisher thread sends from
//! the spool with many acknowledgements in flight and forgets a record only
//! once JetStream acknowledged it. A record is resent after a failure with
//! the same `Nats-Msg-Id` (`<host>.<chain id>.<seq>`), which the server
//! deduplicates; and after a reconnection the publisher first asks the
//! stream which of this host's records since the last acknowledged one it
//! holds, and skips exactly those, so a lost acknowledgement duplicates
//! nothing even after an outage longer than the deduplication window.
//! Only what the stream holds is skipped: in a cluster's fail-over a
//! record can be lost while later ones are stored, and it is sent again.
//! (After an agent restart, records sent and never acknowledged are sent
//! again and deduplicated within the server's window.) Only a full spool
//! drops records: they are counted, and a `loss` record naming the output
//! is sealed into the chain before the next one.
//!
//! The chain: each record is `{"host","chain_id","seq","event"}` sealed as
//! the audit log's lines are ([`guardrail_engine::chain`]), so `guardrail log
//! verify` checks an exported stream as it checks the audit log. It is
//! this output's own chain (the audit log may be off, filtered differently,
//! or hold `log_gap` records), continued across restarts from the spool.
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
//! entry is closed as soon as the event path has nothing more to hand over.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use tracing::warn;

use super::spool::{Pos, Spool, SpoolError, Writer};
use super::{Delivery, OutputStats, Sink};
use crate::config::nats::{check_output, shown};
use crate::config::OutputSection;
use crate::outputs::Published;
use guardrail_engine::chain::{open, seal_in_place, GENESIS};

pub const DEFAULT_PREFIX: &str = "guardrail";
pub const DEFAULT_STREAM: &str = "GUARDRAIL";
pub const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
pub const DEFAULT_MAX_AGE: &str = "30d";
pub const SPOOL_ROOT: &str = "/var/lib/guardrail/spool";
/// JetStream's default; documented because resends rely on it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Publishes waiting for their acknowledgement at most.
const WINDOW: usize = 1024;
/// At most this many records in one message.
pub const BATCH_RECORDS: u64 = 128;
/// At most about this many bytes in one message (nats-server's default
/// payload limit is 1 MiB).
pub const BATCH_BYTES: usize = 64 << 10;
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
    chain_id: String,
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
    writer: Writer,
    /// The host as a JSON string, quoted and escaped once.
    host_json: String,
    chain_id: String,
    prev: String,
    seq: u64,
    name: String,
    /// Sealed records not yet spooled: one message to be.
    batch: Batch,
    /// Records the full spool refused, not yet reported in the chain.
    unreported_loss: u64,
    lost_total: u64,
    publisher: Option<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

impl Nats {
    pub fn new(
        cfg: &OutputSection,
        name: &str,
        hostname: &str,
        stats: Arc<OutputStats>,
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
        let (spool, writer, last) =
            Spool::open(&dir, cfg.spool_bytes.unwrap_or(DEFAULT_SPOOL_BYTES))?;
        let _ = stats.spool.set(spool.clone());
        let (chain_id, prev, seq) = match last.as_deref().and_then(Continued::from_spool_line) {
            Some(c) => (c.chain_id, c.hash, c.seq),
            None => (new_chain_id(), GENESIS.to_string(), 0),
        };
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
            chain_id: chain_id.clone(),
            name: name.to_string(),
        };
        let draining = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let publisher = Publisher {
            target,
            spool: spool.clone(),
            stats,
            draining: draining.clone(),
            abort: abort.clone(),
            acked_at: AtomicU64::new(0),
        };
        let thread = std::thread::Builder::new()
            .name(format!("nats-{name}"))
            .spawn(move || publisher.run())
            .context("starting the NATS publisher thread")?;
        Ok(Self {
            writer,
            host_json: serde_json::Value::from(host).to_string(),
            chain_id,
            prev,
            seq,
            name: name.to_string(),
            batch: Batch::default(),
            unreported_loss: 0,
            lost_total: 0,
            publisher: Some(thread),
            draining,
            abort,
        })
    }

    /// Seal `event_json` as the next record and add it to the message
    /// being built; refused, with nothing sealed, when the spool has no
    /// room for it or cannot take the message before it.
    fn append(&mut self, kind: &'static str, event_json: &str) -> Result<(), SpoolError> {
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
        self.prev = seal_in_place(entry, start, &self.prev);
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

    /// Count an event lost to the fleet, for the next `loss` record.
    fn lose(&mut self, why: &SpoolError, ctx: &Delivery) {
        if self.unreported_loss == 0 {
            warn!(output = %self.name, "{why}: events are dropped and counted until the server takes what is spooled");
        }
        self.unreported_loss += 1;
        self.lost_total += 1;
        ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
        ctx.stats.dropped_because(why.to_string());
    }

    fn loss_record(&self) -> String {
        let now = jiff::Timestamp::now();
        serde_json::json!({
            "kind": "loss",
            "time": now.to_string(),
            "loss": {
                "output": self.name,
                "count": self.unreported_loss,
                "total": self.lost_total,
                "reason": "spool full",
            }
        })
        .to_string()
    }
}

/// Consecutive records of one kind, to be spooled as one entry
/// `<first seq> <kind> <record>\t<record>…`: a sealed record is compact
/// JSON, in which a tab can only appear escaped, so the tab separates
/// records within the spool's line, and becomes a newline in the message.
#[derive(Default)]
struct Batch {
    entry: String,
    kind: &'static str,
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
    fn open(&mut self, seq: u64, kind: &str) -> usize {
        use std::fmt::Write;
        if self.is_empty() {
            self.entry.clear();
            let _ = write!(self.entry, "{seq} {kind} ");
        } else {
            self.entry.push('\t');
        }
        self.entry.len()
    }

    /// The record begun by [`Self::open`] is whole.
    fn taken(&mut self, kind: &'static str) {
        self.kind = kind;
        self.records += 1;
    }

    #[cfg(test)]
    fn push(&mut self, seq: u64, kind: &'static str, line: &str) {
        self.open(seq, kind);
        self.entry.push_str(line);
        self.taken(kind);
    }

    fn clear(&mut self) {
        self.entry.clear();
        self.records = 0;
    }
}

/// A spooled entry taken apart: its first record's seq, its kind, and its
/// records separated by tabs (an entry of an older agent holds one).
fn entry_parts(entry: &str) -> Option<(&str, &str, &str)> {
    let mut parts = entry.splitn(3, ' ');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// A spooled entry as a message: its first record's seq, its kind, the
/// payload (records one per line) and how many records it holds.
fn entry_message(entry: &[u8]) -> Option<(u64, &str, bytes::Bytes, u64)> {
    let seq_end = memchr::memchr(b' ', entry)?;
    let kind_end = seq_end + 1 + memchr::memchr(b' ', &entry[seq_end + 1..])?;
    let seq = std::str::from_utf8(&entry[..seq_end]).ok()?.parse().ok()?;
    let kind = std::str::from_utf8(&entry[seq_end + 1..kind_end]).ok()?;
    let mut payload = entry[kind_end + 1..].to_vec();
    let mut records = 1;
    for tab in memchr::memchr_iter(b'\t', &entry[kind_end + 1..]) {
        payload[tab] = b'\n';
        records += 1;
    }
    Some((seq, kind, payload.into(), records))
}

/// A chain id: the time this chain began (a fresh spool), in ns, hex;
/// with the host in the message id, unique unless the host's clock goes
/// back to the same nanosecond.
fn new_chain_id() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{ns:x}")
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
        let (_, _, records) = entry_parts(line)?;
        Self::from_record(records.rsplit('\t').next()?)
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
        if self.unreported_loss > 0 {
            let loss = self.loss_record();
            if self.append("loss", &loss).is_ok() {
                self.unreported_loss = 0;
            }
        }
        if self.unreported_loss > 0 {
            self.unreported_loss += 1;
            self.lost_total += 1;
            ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.append(p.event.body.kind(), &p.json) {
            Ok(()) => Ok(()),
            Err(e @ SpoolError::Full { .. }) => {
                self.lose(&e, ctx);
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

    fn confirms_itself(&self) -> bool {
        true
    }

    fn stores_itself(&self) -> bool {
        true
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Err(e) = self.spool_batch() {
            warn!(output = %self.name, "{e}: the last {} events are lost to this output", self.batch.records);
        }
        if let Err(e) = self.writer.flush() {
            warn!(output = %self.name, "{e}");
        }
        // The publisher sends what it can for a moment; the rest stays in
        // the spool for the next start.
        self.draining.store(true, Ordering::Relaxed);
        let end = Instant::now() + STOP_DRAIN;
        while self.publisher.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.abort.store(true, Ordering::Relaxed);
        if let Some(t) = self.publisher.take() {
            let _ = t.join();
        }
    }
}

struct Publisher {
    target: Target,
    spool: Arc<Spool>,
    stats: Arc<OutputStats>,
    draining: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    /// The stream sequence of the last record JetStream acknowledged (0:
    /// none yet): what was sent after it may or may not be stored.
    acked_at: AtomicU64,
}

impl Publisher {
    fn run(self) {
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
        if let Err(e) = self.spool.save_cursor() {
            warn!(output = %self.target.name, "{e}");
        }
    }

    fn done(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
            || (self.draining.load(Ordering::Relaxed) && self.spool.is_drained())
    }

    async fn publish(&self) {
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
    async fn stored_after(&self, s: &stream::Stream, after: u64) -> Result<HashSet<u64>, String> {
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
            .flat_map(str::lines)
            .filter_map(Continued::from_record)
            .filter(|c| c.chain_id == t.chain_id)
            .map(|c| c.seq)
            .collect())
    }

    /// One connection: send from the spool until stopped or a failure.
    async fn session(&self) -> Result<(), String> {
        let js = self.connect().await?;
        let stream = self.ensure_stream(&js).await?;
        let stored = match self.acked_at.load(Ordering::Relaxed) {
            // This agent's first session: what an earlier one sent and
            // never saw acknowledged is sent again (deduplicated).
            0 => HashSet::new(),
            after => self.stored_after(&stream, after).await?,
        };
        let t = &self.target;
        let mut next = self.spool.acked();
        // Each message in flight: its acknowledgement and records (none
        // for one the stream holds already), and the spool after it.
        let mut inflight: VecDeque<(Option<(PublishAckFuture, u64)>, Pos)> = VecDeque::new();
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
                    let batch = self
                        .spool
                        .read(next, 256 << 10)
                        .map_err(|e| e.to_string())?;
                    if batch.is_empty() {
                        break;
                    }
                    for (entry, end) in batch {
                        let Some((seq, kind, payload, records)) = entry_message(&entry) else {
                            return Err(format!("spool: unreadable record at {next:?}"));
                        };
                        next = end;
                        if stored.contains(&seq) {
                            // The stream has it (its acknowledgement was lost).
                            inflight.push_back((None, end));
                        } else {
                            let msg = jetstream::message::PublishMessage::build()
                                .message_id(format!("{}.{}.{seq}", t.host, t.chain_id))
                                .payload(payload);
                            let ack = js
                                .send_publish(format!("{}.{}.{kind}", t.prefix, t.host), msg)
                                .await
                                .map_err(|e| format!("publish: {e}"))?;
                            inflight.push_back((Some((ack, records)), end));
                        }
                        if inflight.len() >= WINDOW {
                            break;
                        }
                    }
                }
            }
            let Some((ack, end)) = inflight.pop_front() else {
                if self.done() {
                    return Ok(());
                }
                self.spool.save_cursor().map_err(|e| e.to_string())?;
                tokio::select! {
                    () = self.spool.flushed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            };
            if let Some((ack, records)) = ack {
                let ack = ack
                    .await
                    .map_err(|e| format!("{}: no acknowledgement: {e}", shown(&t.urls)))?;
                self.acked_at.store(ack.sequence, Ordering::Relaxed);
                self.stats.delivered(records);
            }
            self.spool.ack(end).map_err(|e| e.to_string())?;
            if saved.elapsed() >= Duration::from_millis(200) {
                self.spool.save_cursor().map_err(|e| e.to_string())?;
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
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{prefix}.{host}.>"),
            deliver_policy: policy,
            ..Default::default()
        })
        .await?;
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
    /// Stream sequences where a new chain began (a spool started afresh).
    pub restarts: Vec<u64>,
}

/// Check a host's records in stream order: each sealed, naming `host`,
/// following the one before it; a new chain may begin only at its first
/// record (`prev` of zeros, `seq` 1, another `chain_id`). On failure, the
/// stream sequence and why.
pub fn verify_host(host: &str, records: &[(u64, String)]) -> Result<HostChain, (u64, String)> {
    let mut v = guardrail_engine::chain::Verifier::new();
    let mut out = HostChain::default();
    let mut chain: Option<(String, u64)> = None;
    for (stream_seq, line) in records {
        let fail = |why: &str| (*stream_seq, why.to_string());
        let opened = open(line).ok_or_else(|| fail("not a sealed record"))?;
        let value: serde_json::Value = serde_json::from_str(&opened.event_json)
            .map_err(|_| fail("the record is not JSON: it was edited"))?;
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
    use crate::config::nats::is_token;
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
        let mut reordered = chain("a", 5);
        reordered.swap(1, 2);
        assert_eq!(verify_host("h", &reordered).unwrap_err().0, 3);
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
        assert_eq!((seq, kind, count), (1, "file", 3));
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

    #[test]
    fn default_host_is_one_subject_token() {
        assert_eq!(default_host("web-1.example.org"), "web-1_example_org");
        assert!(is_token(&default_host("a b.c")));
    }
}
