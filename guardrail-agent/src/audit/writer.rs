//! Writing the audit log on a thread of its own.
//!
//! Records reach the writer through a bounded queue; what cannot be written
//! (disk full, read-only, gone) waits in memory up to `buffer_bytes` and is
//! written when the disk accepts it again. Nothing is lost silently: a
//! record that fits neither the queue nor the buffer is counted, and the
//! next record written is preceded by a `log_gap` record with the count.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{AuditSection, Fsync, ProcessForm};
use crate::trust::{absolute, check_path, create_private_dir, Policy, RealFs, Role};
use guardrail_engine::chain::{open, seal, seal_in_place, HexDigest, GENESIS};
use guardrail_engine::process_join::{push_defined, DEFINED_AT_MOST, REDEFINED_WITHIN};

#[derive(Debug, Default, Serialize, Deserialize, Clone, PartialEq)]
pub struct AuditSnapshot {
    pub path: String,
    pub written: u64,
    /// Records that could not even be buffered (reported in the log as
    /// `log_gap` records once writing works again).
    pub lost: u64,
    /// Write attempts that failed (the records stay buffered).
    pub failed_writes: u64,
    pub buffered_bytes: u64,
    pub last_error: Option<String>,
    /// How events write their process (`[audit_log] process`, or what
    /// unset came to); absent from agents before 2026-12-07.
    #[serde(default)]
    pub process: Option<ProcessForm>,
}

#[derive(Default)]
pub struct AuditStats {
    written: AtomicU64,
    lost: AtomicU64,
    failed_writes: AtomicU64,
    buffered_bytes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

pub struct AuditLog {
    tx: Option<SyncSender<Records>>,
    /// Records not handed over yet: they go to the writer a batch at a
    /// time (a wake-up of its thread per record was a tenth of the
    /// agent's CPU under a storm).
    batch: std::sync::Mutex<Records>,
    /// Batches the writer is done with, for the next hand-overs.
    spares: Spares,
    /// Records handed over that the writer has not taken yet.
    in_flight: Arc<AtomicU64>,
    stats: Arc<AuditStats>,
    /// Records handed to the writer.
    handed: AtomicU64,
    /// Records the writer is done with: written, or (while the disk
    /// refuses) held in memory, or counted lost. The ring buffer's space
    /// is given back only for records whose events are settled.
    settled: Arc<AtomicU64>,
    /// (ktime_ns, tid) of the last record-derived event the log held at
    /// start: what an agent killed before it could commit had handled.
    last_logged: Option<(u64, u32)>,
    /// Lost before reaching the writer (queue full), not yet reported.
    unreported: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    feed: Arc<LogFeed>,
    /// A reader of the log's files came, or gave up lines: the versions
    /// defined so far are not (all) in what it sends.
    define_again: Arc<AtomicBool>,
    /// How the events handed over write their process (the agent decides,
    /// `outputs::log_process_form`; reported in the status). Whole until
    /// told: nothing hands this log references unless it was.
    process: ProcessForm,
}

/// Records handed over together: their JSON end to end in one buffer.
/// A string per record (a kilobyte allocated by the event path, freed by
/// the writer's thread) was a tenth of the agent's CPU under a storm.
#[derive(Default)]
struct Records {
    text: String,
    /// Where each record ends in `text`.
    ends: Vec<usize>,
    /// For each record, the reference its process is, if it is one.
    references: Vec<Option<Reference>>,
}

/// A record whose process is named by reference (`[audit_log] process =
/// "ref"`): what the writer needs to write it as the version's definition
/// instead, which it does the first time a file uses the version (see
/// `guardrail_engine::process_join`).
#[derive(Clone)]
pub struct Reference {
    /// Where the reference's `}` is in the record.
    pub at: usize,
    pub pv: u64,
    /// The event's kind: a version is defined once per kind, so that each
    /// kind's lines (a NATS subject each) hold their own definitions.
    pub kind: &'static str,
    /// The members the definition adds.
    pub shared: Arc<str>,
}

impl Records {
    #[cfg(test)]
    fn push(&mut self, json: &str) {
        self.push_with(json, None);
    }

    fn push_with(&mut self, json: &str, reference: Option<Reference>) {
        self.text.push_str(json);
        self.ends.push(self.text.len());
        self.references.push(reference);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where record `i` starts in `text` (for `i == len()`: its end).
    fn start(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |before| self.ends[before])
    }

    fn get(&self, i: usize) -> &str {
        &self.text[self.start(i)..self.ends[i]]
    }

    /// The length of records `from..to`.
    fn bytes(&self, from: usize, to: usize) -> usize {
        self.start(to) - self.start(from)
    }

    /// Add the records of `other` after these.
    fn append(&mut self, other: &Records) {
        let base = self.text.len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|end| base + end));
        self.references.extend(other.references.iter().cloned());
    }

    /// Keep the first `n` records.
    fn truncate(&mut self, n: usize) {
        self.text.truncate(self.start(n));
        self.ends.truncate(n);
        self.references.truncate(n);
    }
}

/// Emptied batches, handed back by the writer for their memory: at most a
/// few are kept. A new batch starts empty and grows with its records, so
/// that batches waiting for a refusing disk hold about what their records
/// need (`buffer_bytes` bounds the records).
type Spares = Arc<Mutex<Vec<Records>>>;

const SPARES: usize = 4;

/// A batch that grew past this (records merged while the disk refused) is
/// freed rather than kept: a spare may end up holding a few records that
/// wait, and must not hold megabytes for them.
const SPARE_BYTES: usize = 1 << 20;

/// Keep `batch`'s memory for a later batch, if fewer than [`SPARES`] are
/// kept and it is worth keeping.
fn give_back(spares: &Spares, mut batch: Records) {
    let capacity = batch.text.capacity();
    if capacity == 0 || capacity > SPARE_BYTES || batch.ends.capacity() > 2 * BATCH {
        return;
    }
    batch.truncate(0);
    let mut spares = spares.lock().unwrap();
    if spares.len() < SPARES {
        spares.push(batch);
    }
}

/// A batch this small is added to the batch before it while that one
/// waits (events trickling in while the disk refuses): one allocation per
/// few records, not per hand-over. Only to a batch none of whose records
/// is written yet (written ones are freed with their batch), and up to
/// [`WRITE_BATCH_BYTES`].
const MERGE_BELOW: usize = 16;

/// The audit log's files as a reader of its committed lines finds them:
/// the file being written, with how many of its bytes are whole sealed
/// lines, and the files rotated since the reader came (the NATS output
/// publishes the log's lines from its files, `outputs::logsource`).
///
/// The writer says where the committed end is after each write, and
/// which file comes next after each rotation, with a descriptor open on
/// it: a file rotated away (deleted) while the reader still holds it
/// stays readable through that descriptor. Only whole lines are ever
/// covered: a write that fails is cut off before the end moves.
pub struct LogFeed {
    files: Mutex<VecDeque<FeedFile>>,
    /// Whether a reader takes the files: without one only the current
    /// file is kept.
    read: AtomicBool,
    /// Woken after each write and rotation.
    wake: tokio::sync::Notify,
    /// The log's path (its rotated files are `<path>.1`, `<path>.2` …).
    pub path: PathBuf,
    /// The reader set this when it lost lines: every process version is
    /// defined again (see `Writer::defined`).
    pub define_again: Arc<AtomicBool>,
}

/// A file of the log as the writer last said.
#[derive(Clone)]
pub struct FeedFile {
    /// Open for reading.
    pub file: Arc<File>,
    /// (st_dev, st_ino): the file whatever its name becomes.
    pub id: FileId,
    /// Bytes of whole sealed lines in it.
    pub end: u64,
    /// Rotated: nothing more is written to it, `end` is final.
    pub rotated: bool,
    /// Rotated out of the log's `max_files` while the reader still needed
    /// it: renamed to this (`<path>.held.<n>`), removed on release.
    pub held: Option<PathBuf>,
}

/// The name a file rotated out while unsent is held under: `<path>.held.<n>`,
/// numbered on from the highest held now (oldest first, whatever the clock).
fn held_name(path: &Path) -> PathBuf {
    let next = held_files(path).last().map_or(1, |(n, _)| n + 1);
    PathBuf::from(format!("{}.held.{next}", path.display()))
}

/// The files of the log at `path` held for its reader, oldest first.
pub fn held_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return vec![];
    };
    let prefix = format!("{}.held.", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut held: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    held.sort();
    held
}

/// A file's identity across renames.
pub type FileId = (u64, u64);

/// The identity of an open file.
fn file_id(file: &File) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

impl LogFeed {
    fn new(path: &Path, first: FeedFile, define_again: Arc<AtomicBool>) -> Self {
        LogFeed {
            files: Mutex::new(VecDeque::from([first])),
            read: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            path: path.to_path_buf(),
            define_again,
        }
    }

    /// The files from the oldest the reader has not released to the one
    /// being written.
    pub fn files(&self) -> Vec<FeedFile> {
        self.files.lock().unwrap().iter().cloned().collect()
    }

    /// The reader is done with the rotated file `id`: its descriptor is
    /// closed (a deleted file's space is given back) and, held, it is
    /// removed.
    pub fn release(&self, id: FileId) {
        self.files.lock().unwrap().retain(|f| {
            let done = f.rotated && f.id == id;
            if let (true, Some(held)) = (done, &f.held) {
                if let Err(e) = std::fs::remove_file(held) {
                    warn!("audit log: removing {}, sent: {e}", held.display());
                }
            }
            !done
        });
    }

    /// Files of the log older than those the writer handed over (found by
    /// the reader at start: rotated, or held by an earlier run), oldest
    /// first; those the feed has already are left out.
    pub fn adopt(&self, older: Vec<FeedFile>) {
        let mut files = self.files.lock().unwrap();
        let known: Vec<FileId> = files.iter().map(|f| f.id).collect();
        for f in older.into_iter().rev() {
            if !known.contains(&f.id) {
                files.push_front(f);
            }
        }
    }

    /// The writer removes rotated file `id` at `from`: if the reader has
    /// not released it, it is renamed out of the rotation instead (under
    /// the lock, so a release cannot come between) and true returned.
    fn hold(&self, id: FileId, from: &Path) -> bool {
        let mut files = self.files.lock().unwrap();
        let Some(f) = files.iter_mut().find(|f| f.rotated && f.id == id) else {
            return false;
        };
        let to = held_name(&self.path);
        match std::fs::rename(from, &to) {
            Ok(()) => {
                f.held = Some(to);
                true
            }
            Err(e) => {
                warn!(
                    "audit log: keeping {} for the NATS output as {}: {e}; it is removed, its unsent lines are read from the open file while the agent runs",
                    from.display(),
                    to.display()
                );
                false
            }
        }
    }

    /// Completes after the next write or rotation (or at once if one
    /// came since the last wait).
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    /// Whole lines now end at `end` in the current file.
    fn committed(&self, end: u64) {
        if let Some(current) = self.files.lock().unwrap().back_mut() {
            current.end = end;
        }
        self.wake.notify_one();
    }

    /// The current file is rotated; `next` is written from now on.
    fn rotated(&self, next: FeedFile) {
        let mut files = self.files.lock().unwrap();
        if let Some(current) = files.back_mut() {
            current.rotated = true;
        }
        if !self.read.load(Ordering::Relaxed) {
            files.clear();
        }
        files.push_back(next);
        drop(files);
        self.wake.notify_one();
    }
}

impl FeedFile {
    /// The file at `path`, opened for reading, whole lines to its end (a
    /// file being written: the writer cuts a torn line before writing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        Ok(FeedFile {
            id: file_id(&file)?,
            end: file.metadata()?.len(),
            file: Arc::new(file),
            rotated: false,
            held: None,
        })
    }
}

const QUEUE: usize = 65_536;
/// Records per hand-over, at most (the pipeline also hands over what it
/// has after each drain of the ring buffer).
const BATCH: usize = 512;

/// Rotated file `i` of the log at `path`: `<path>.<i>`.
pub fn rotated(path: &Path, i: usize) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

/// At most the last `max` bytes of `path`, from its first whole line on
/// (empty if it cannot be read): the line the cut falls in, and with it
/// a character the cut may split, is left out.
fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(max);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    if start > 0 {
        let first = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The hash of the last sealed record of `path`, to continue its chain
/// (if it is within the last 64 KiB: records are far smaller).
fn last_hash(path: &Path) -> Option<String> {
    let text = tail(path, 1 << 16);
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    open(last).map(|o| o.hash.to_string())
}

/// (ktime_ns, tid) of the last event in the log that came from a kernel
/// record (loss and gap records have neither), within the last 256 KiB.
fn last_logged_record(path: &Path) -> Option<(u64, u32)> {
    tail(path, 1 << 18).lines().rev().find_map(|line| {
        let event: serde_json::Value = serde_json::from_str(&open(line)?.event_json).ok()?;
        Some((
            event["ktime_ns"].as_u64()?,
            event["process"]["tid"].as_u64()? as u32,
        ))
    })
}

/// A record is one line: bytes after the last newline are a record whose
/// writing was interrupted (SIGKILL, power loss). Remove them; how many.
fn cut_torn_record(path: &Path) -> std::io::Result<u64> {
    // The log itself is open for appending only.
    let file = &OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut r = BufReader::new(file);
    // Records are far smaller than this; a log without any newline in its
    // last 1 MiB is left alone rather than cut.
    let start = len.saturating_sub(1 << 20);
    r.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    r.read_to_end(&mut tail)?;
    match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) if i + 1 == tail.len() => Ok(0),
        Some(i) => {
            let keep = start + i as u64 + 1;
            file.set_len(keep)?;
            Ok(len - keep)
        }
        None if start == 0 => {
            file.set_len(0)?;
            Ok(len)
        }
        None => Ok(0),
    }
}

/// When the current file's first record was written, from its `time`.
fn first_record_time(path: &Path) -> Option<std::time::SystemTime> {
    let f = File::open(path).ok()?;
    let first = BufReader::new(f).lines().next()?.ok()?;
    let value: serde_json::Value = serde_json::from_str(&first).ok()?;
    humantime::parse_rfc3339(value.get("time")?.as_str()?).ok()
}

/// Open the log for appending. A new file is root's alone (0600), or
/// also readable by `reader` (0640); an existing one keeps its mode.
fn open_log(path: &Path, reader: Option<u32>) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if reader.is_some() { 0o640 } else { 0o600 };
    match OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => {
            if let Some(gid) = reader {
                std::os::unix::fs::fchown(&file, None, Some(gid))?;
            }
            // What the umask took from the reader, given back.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)
        }
        Err(e) => Err(e),
    }
}

/// Exclusive advisory lock: two agents appending to one chain would break it.
fn lock(file: &File, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    anyhow::ensure!(
        rc == 0,
        "{} is in use by another guardrail agent",
        path.display()
    );
    Ok(())
}

impl AuditLog {
    /// Open (creating if need be) the log at `cfg.path`. A directory the
    /// agent creates lets only root in, or root and the admin group of
    /// `policy` to read; an existing one that others could write is
    /// reported, since they could remove or replace the log.
    pub fn start(cfg: &AuditSection, policy: &Policy) -> Result<Self> {
        let path = cfg.path.clone();
        let reader = policy.admin.as_ref().map(|a| a.gid);
        if let Some(dir) = path.parent() {
            create_private_dir(dir, reader)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        for problem in check_path(&RealFs::new(), policy, &absolute(&path), Role::AuditLog) {
            warn!("{problem}");
        }
        let file = open_log(&path, reader)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        lock(&file, &path)?;
        match cut_torn_record(&path) {
            Ok(0) => {}
            Ok(n) => warn!(
                path = %path.display(),
                "the audit log ended in a record cut short (the agent was killed while writing it); its {n} bytes were removed so that the chain continues from the last whole record"
            ),
            Err(e) => {
                warn!(path = %path.display(), "cannot check the audit log's last record: {e}")
            }
        }
        // A log just rotated (by age, with nothing written since) holds no
        // record yet: its chain and the record last handled are in the
        // file it was rotated to.
        // (Only a log with no byte in it: one whose last line cannot be
        // read begins a new chain, which `log verify` shows as such.)
        let empty = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let continued = if empty {
            rotated(&path, 1)
        } else {
            path.clone()
        };
        let prev = last_hash(&continued).unwrap_or_else(|| GENESIS.to_string());
        let last_logged = last_logged_record(&continued);
        let (tx, rx) = sync_channel(QUEUE);
        let in_flight = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(AuditStats::default());
        let unreported = Arc::new(AtomicU64::new(0));
        let settled = Arc::new(AtomicU64::new(0));
        let spares = Spares::default();
        let define_again = Arc::new(AtomicBool::new(false));
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let feed = Arc::new(LogFeed::new(
            &path,
            FeedFile::open(&path)
                .with_context(|| format!("opening the audit log {} to read", path.display()))?,
            define_again.clone(),
        ));
        let mut w = Writer {
            feed: feed.clone(),
            defined: Default::default(),
            epoch_started: Instant::now(),
            define_again: define_again.clone(),
            spares: spares.clone(),
            write_buf: String::new(),
            settled: settled.clone(),
            failing: false,
            cfg: cfg.clone(),
            reader,
            file,
            size,
            prev,
            pending: VecDeque::new(),
            pending_bytes: 0,
            gap: 0,
            stats: stats.clone(),
            unreported: unreported.clone(),
            last_sync: Instant::now(),
            dirty: false,
            max_age: cfg
                .max_age
                .as_deref()
                .and_then(|a| humantime::parse_duration(a).ok()),
            // A file with records started when its first record was written.
            first_record_at: first_record_time(&path),
        };
        let thread = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn({
                let in_flight = in_flight.clone();
                move || w.run(rx, &in_flight)
            })?;
        info!(path = %path.display(), "audit log open");
        Ok(AuditLog {
            tx: Some(tx),
            batch: std::sync::Mutex::new(Records::default()),
            spares,
            in_flight,
            stats,
            handed: AtomicU64::new(0),
            settled,
            last_logged,
            unreported,
            thread: Some(thread),
            path,
            feed,
            define_again,
            process: ProcessForm::Full,
        })
    }

    /// Say how the events handed over write their process.
    pub fn set_process_form(&mut self, form: ProcessForm) {
        self.process = form;
    }

    /// The log's files, for the reader of its committed lines (the NATS
    /// output): from now on rotated files are kept for it until it
    /// releases them. One reader only (what it has not released is what
    /// the writer keeps): None once taken.
    pub fn feed(&self) -> Option<Arc<LogFeed>> {
        if self.feed.read.swap(true, Ordering::Relaxed) {
            return None;
        }
        // It reads on from here: what it sends defines its versions anew.
        self.define_again.store(true, Ordering::Relaxed);
        Some(self.feed.clone())
    }

    /// Hand a record to the writer (with the next batch, as a copy);
    /// never blocks.
    pub fn send(&self, json: &str) {
        self.send_with(json, None);
    }

    /// Hand a record whose process is a reference (see [`Reference`]).
    pub fn send_with(&self, json: &str, reference: Option<Reference>) {
        if self.tx.is_none() {
            return;
        }
        self.handed.fetch_add(1, Ordering::Relaxed);
        let mut batch = self.batch.lock().unwrap();
        batch.push_with(json, reference);
        if batch.len() >= BATCH {
            self.hand_over(&mut batch);
        }
    }

    /// Hand the records sent since the last hand-over to the writer.
    pub fn hand_over_pending(&self) {
        let mut batch = self.batch.lock().unwrap();
        self.hand_over(&mut batch);
    }

    fn hand_over(&self, batch: &mut Records) {
        let n = batch.len() as u64;
        let Some(tx) = &self.tx else { return };
        if n == 0 {
            return;
        }
        let queued = self.in_flight.load(Ordering::Relaxed);
        let sent = queued + n <= QUEUE as u64 && {
            self.in_flight.fetch_add(n, Ordering::Relaxed);
            let spare = self.spares.lock().unwrap().pop();
            match tx.try_send(std::mem::replace(batch, spare.unwrap_or_default())) {
                Ok(()) => true,
                Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                    self.in_flight.fetch_sub(n, Ordering::Relaxed);
                    give_back(&self.spares, std::mem::replace(batch, b));
                    false
                }
            }
        };
        if !sent {
            // The writer is that far behind: these are lost, said in the
            // log's next gap record; they count as settled (nothing more
            // will happen to them).
            batch.truncate(0);
            self.unreported.fetch_add(n, Ordering::Relaxed);
            self.stats.lost.fetch_add(n, Ordering::Relaxed);
            self.settled.fetch_add(n, Ordering::Release);
        }
    }

    /// Records handed to the writer so far.
    pub fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    /// Of those, the ones the writer is done with (see `settled`).
    pub fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// (ktime_ns, tid) of the last event from a kernel record in the log
    /// when it was opened.
    pub fn last_logged(&self) -> Option<(u64, u32)> {
        self.last_logged
    }

    pub fn snapshot(&self) -> AuditSnapshot {
        let s = &self.stats;
        AuditSnapshot {
            path: self.path.display().to_string(),
            written: s.written.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            failed_writes: s.failed_writes.load(Ordering::Relaxed),
            buffered_bytes: s.buffered_bytes.load(Ordering::Relaxed),
            last_error: s.last_error.lock().unwrap().clone(),
            process: Some(self.process),
        }
    }
}

impl Drop for AuditLog {
    /// Flush what can be written, then stop the writer.
    fn drop(&mut self) {
        self.hand_over_pending();
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    /// The process versions (and kinds) defined in the current file since
    /// the epoch began: a record naming one of them by reference is
    /// written as it is, any other reference as a definition.
    defined: foldhash::HashSet<(u64, &'static str)>,
    epoch_started: Instant,
    define_again: Arc<AtomicBool>,
    feed: Arc<LogFeed>,
    spares: Spares,
    /// Where each write's sealed lines are put together.
    write_buf: String,
    cfg: AuditSection,
    /// The admin group, which may read the files the writer creates.
    reader: Option<u32>,
    file: File,
    size: u64,
    prev: String,
    /// Records to write, a batch at a time.
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    settled: Arc<AtomicU64>,
    /// The disk refuses writes: records are settled as they are buffered,
    /// so that capture never waits for the disk.
    failing: bool,
    /// Records lost while buffered writing was impossible, to report.
    gap: u64,
    stats: Arc<AuditStats>,
    unreported: Arc<AtomicU64>,
    last_sync: Instant,
    dirty: bool,
    /// Rotate once the current file's first record is this old.
    max_age: Option<Duration>,
    first_record_at: Option<std::time::SystemTime>,
}

/// A batch of records being written.
struct Pending {
    records: Records,
    /// The first record not written yet.
    next: usize,
    /// Whether its records are already settled (see `Writer::failed`).
    settled: bool,
}

impl Pending {
    fn left(&self) -> usize {
        self.records.len() - self.next
    }
}

/// Every version named is defined again at least this often, so that a
/// reader starting in the middle of a file finds definitions close behind.
const REDEFINE_EVERY: Duration = REDEFINED_WITHIN.unsigned_abs();

/// Versions remembered as defined, at most: readers keep at least as many
/// (with room for a write batch's worth past it).
const DEFINED_MAX: usize = DEFINED_AT_MOST - 4096;

/// At most this many bytes of sealed records per write(2).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

impl Writer {
    fn run(&mut self, rx: Receiver<Records>, in_flight: &AtomicU64) {
        let mut retry_at = Instant::now();
        loop {
            let mut take = |batch: Records| {
                in_flight.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                self.enqueue(batch);
            };
            let closed = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(batch) => {
                    take(batch);
                    while let Ok(batch) = rx.try_recv() {
                        take(batch);
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if Instant::now() >= retry_at && self.too_old() {
                if let Err(e) = self.rotate() {
                    self.failed(e);
                    retry_at = Instant::now() + Duration::from_secs(1);
                }
            }
            if Instant::now() >= retry_at && !self.flush() {
                // The disk refuses: try again in a second, keep buffering.
                retry_at = Instant::now() + Duration::from_secs(1);
            }
            self.maybe_sync(closed);
            if closed {
                if !self.pending.is_empty() {
                    warn!(
                        records = self.pending.iter().map(Pending::left).sum::<usize>(),
                        "audit log: records not written at shutdown"
                    );
                }
                return;
            }
        }
    }

    /// Buffer each record of `batch` that fits in the memory allowed
    /// (`buffer_bytes`); one that does not is lost, counted.
    fn enqueue(&mut self, mut batch: Records) {
        if self.pending_bytes + batch.text.len() > self.cfg.buffer_bytes {
            let mut kept = Records::default();
            for i in 0..batch.len() {
                let rec = batch.get(i);
                if self.pending_bytes + kept.text.len() + rec.len() <= self.cfg.buffer_bytes {
                    kept.push_with(rec, batch.references[i].clone());
                }
            }
            let lost = (batch.len() - kept.len()) as u64;
            self.gap += lost;
            self.stats.lost.fetch_add(lost, Ordering::Relaxed);
            self.settled.fetch_add(lost, Ordering::Release);
            give_back(&self.spares, std::mem::replace(&mut batch, kept));
        }
        let records = batch.len();
        if records == 0 {
            give_back(&self.spares, batch);
            return;
        }
        self.pending_bytes += batch.text.len();
        if self.failing {
            self.settled.fetch_add(records as u64, Ordering::Release);
        }
        match self.pending.back_mut() {
            Some(last)
                if records < MERGE_BELOW
                    && last.next == 0
                    && last.settled == self.failing
                    && last.records.text.len() + batch.text.len() <= WRITE_BATCH_BYTES =>
            {
                last.records.append(&batch);
                give_back(&self.spares, batch);
            }
            _ => self.pending.push_back(Pending {
                records: batch,
                next: 0,
                settled: self.failing,
            }),
        }
        self.stats
            .buffered_bytes
            .store(self.pending_bytes as u64, Ordering::Relaxed);
    }

    fn write_line(&mut self, event_json: &str) -> std::io::Result<()> {
        let (line, hash) = seal(&self.prev, event_json);
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.write_sealed(&bytes)?;
        self.prev = hash;
        Ok(())
    }

    /// Append whole sealed lines; on failure nothing of them stays (a
    /// partial line would break the chain for good).
    fn write_sealed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let synced = self.file.write_all(bytes).and_then(|()| {
            if self.cfg.fsync == Fsync::Always {
                self.file.sync_data()?;
            }
            Ok(())
        });
        if let Err(e) = synced {
            // A partial line would break the chain for good, and lines
            // written but not synced would be written again by the retry
            // (sealed from the same `prev`): cut them off.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        self.feed.committed(self.size);
        self.first_record_at
            .get_or_insert_with(std::time::SystemTime::now);
        self.dirty = true;
        Ok(())
    }

    /// Write what is pending; false if the disk refused.
    fn flush(&mut self) -> bool {
        let gap = self.gap + self.unreported.swap(0, Ordering::Relaxed);
        if gap > 0 {
            let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
            let record = format!("{{\"kind\":\"log_gap\",\"time\":\"{now}\",\"lost\":{gap}}}");
            if let Err(e) = self.write_line(&record) {
                // All of it is reported next time, from `unreported`.
                self.gap = 0;
                self.unreported.fetch_add(gap, Ordering::Relaxed);
                self.failed(e);
                return false;
            }
            self.gap = 0;
        }
        if self.define_again.swap(false, Ordering::Relaxed)
            || self.epoch_started.elapsed() >= REDEFINE_EVERY
            || self.defined.len() > DEFINED_MAX
        {
            self.new_epoch();
        }
        while !self.pending.is_empty() {
            // Many records per write(2): one call per record was a third
            // of the agent's CPU under a storm. The batch ends where the
            // file reaches its rotation size, as one record at a time did.
            let room = self.cfg.max_bytes.saturating_sub(self.size).max(1) as usize;
            // One buffer for every write: its readers read the file.
            let mut text = std::mem::take(&mut self.write_buf);
            text.clear();
            text.reserve(room.min(WRITE_BATCH_BYTES) + 4096);
            let mut last = None;
            let mut records = 0;
            // Versions this write defines: not defined if it fails.
            let mut fresh = Vec::new();
            'fill: for p in &self.pending {
                for i in p.next..p.records.len() {
                    // Sealed where it will be written: no line of its own.
                    let start = text.len();
                    let record = p.records.get(i);
                    match &p.records.references[i] {
                        Some(r) if self.defined.insert((r.pv, r.kind)) => {
                            push_defined(&mut text, record, r.at, &r.shared);
                            fresh.push((r.pv, r.kind));
                        }
                        _ => text.push_str(record),
                    }
                    let prev = last.as_ref().map_or(self.prev.as_str(), HexDigest::as_str);
                    last = Some(seal_in_place(&mut text, start, prev));
                    text.push('\n');
                    records += 1;
                    if text.len() >= room || text.len() >= WRITE_BATCH_BYTES {
                        break 'fill;
                    }
                }
            }
            let written = self.write_sealed(text.as_bytes());
            self.write_buf = text;
            if let Err(e) = written {
                for key in &fresh {
                    self.defined.remove(key);
                }
                self.failed(e);
                return false;
            }
            if let Some(last) = last {
                self.prev = last.as_str().to_owned();
            }
            self.written(records);
            self.stats
                .written
                .fetch_add(records as u64, Ordering::Relaxed);
            if self.size >= self.cfg.max_bytes {
                if let Err(e) = self.rotate() {
                    self.failed(e);
                    return false;
                }
            }
        }
        self.stats
            .buffered_bytes
            .store(self.pending_bytes as u64, Ordering::Relaxed);
        *self.stats.last_error.lock().unwrap() = None;
        self.failing = false;
        true
    }

    /// The first `records` pending records were written.
    fn written(&mut self, mut records: usize) {
        while records > 0 {
            let p = self
                .pending
                .front_mut()
                .expect("written records were pending");
            let n = p.left().min(records);
            self.pending_bytes -= p.records.bytes(p.next, p.next + n);
            if !p.settled {
                self.settled.fetch_add(n as u64, Ordering::Release);
            }
            p.next += n;
            records -= n;
            if p.left() == 0 {
                let done = self.pending.pop_front().expect("just looked at");
                give_back(&self.spares, done.records);
            }
        }
    }

    fn failed(&mut self, e: std::io::Error) {
        if !self.failing {
            self.failing = true;
            for p in self.pending.iter_mut().filter(|p| !p.settled) {
                p.settled = true;
                self.settled.fetch_add(p.left() as u64, Ordering::Release);
            }
        }
        self.stats.failed_writes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .buffered_bytes
            .store(self.pending_bytes as u64, Ordering::Relaxed);
        let mut last = self.stats.last_error.lock().unwrap();
        if last.is_none() {
            warn!("audit log write failed ({e}); buffering in memory and retrying");
        }
        *last = Some(e.to_string());
    }

    /// audit.jsonl → audit.jsonl.1 → … → audit.jsonl.N (dropped). The
    /// chain continues into the new file.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        let path = &self.cfg.path;
        let name = |i: usize| rotated(path, i);
        let keep = self.cfg.max_files.max(1);
        self.retire(&name(keep));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(path, name(1))?;
        let file = open_log(path, self.reader)?;
        lock(&file, path).map_err(std::io::Error::other)?;
        self.feed.rotated(FeedFile::open(path)?);
        self.file = file;
        self.size = 0;
        self.first_record_at = None;
        // A reader of one file never needs another.
        self.new_epoch();
        Ok(())
    }

    /// The oldest rotated file goes, unless the log's reader has not sent
    /// it yet: then it is held (renamed out of the rotation) until it has.
    fn retire(&self, oldest: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(oldest) else {
            return;
        };
        if !self.feed.hold((m.dev(), m.ino()), oldest) {
            let _ = std::fs::remove_file(oldest);
        }
    }

    /// Define every version again from the next record on.
    fn new_epoch(&mut self) {
        self.defined.clear();
        self.epoch_started = Instant::now();
    }

    fn too_old(&self) -> bool {
        match (self.max_age, self.first_record_at) {
            (Some(max), Some(first)) => first.elapsed().is_ok_and(|age| age >= max),
            _ => false,
        }
    }

    fn maybe_sync(&mut self, closing: bool) {
        let due = match self.cfg.fsync {
            Fsync::Never | Fsync::Always => closing,
            Fsync::Interval => closing || self.last_sync.elapsed() >= Duration::from_secs(1),
        };
        if due && self.dirty {
            let _ = self.file.sync_data();
            self.dirty = false;
            self.last_sync = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_lets_only_root_in_or_the_admin_group_read() {
        use std::os::unix::fs::MetadataExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private/audit.jsonl");
        let cfg = AuditSection {
            path: path.clone(),
            ..Default::default()
        };
        drop(AuditLog::start(&cfg, &Policy::agent(None)).unwrap());
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        // SAFETY: no arguments.
        let gid = unsafe { libc::getegid() };
        let admin = Policy::agent(Some(crate::trust::AdminGroup {
            name: "admins".into(),
            gid,
        }));
        let path = dir.path().join("shared/audit.jsonl");
        let cfg = AuditSection {
            path: path.clone(),
            max_bytes: 4096,
            max_files: 2,
            ..Default::default()
        };
        let log = AuditLog::start(&cfg, &admin).unwrap();
        // Enough to rotate: the new file is the admin group's too.
        for n in 0..100 {
            log.send(&format!(r#"{{"kind":"test","n":{n}}}"#));
        }
        drop(log);
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        let rotated = dir.path().join("shared/audit.jsonl.1");
        for p in [&path, &rotated] {
            let meta = std::fs::metadata(p).unwrap();
            assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o640, gid), "{p:?}");
        }
    }

    #[test]
    fn the_feed_holds_every_file_written_since_a_reader_came_up_to_whole_lines_on_disk_too() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let cfg = AuditSection {
            path: path.clone(),
            max_bytes: 4096,
            max_files: 2,
            ..Default::default()
        };
        let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
        let feed = log.feed().unwrap();
        for n in 0..120 {
            log.send(&format!(r#"{{"kind":"test","n":{n}}}"#));
        }
        drop(log);
        let files = feed.files();
        assert!(files.len() > 3, "rotated away beyond max_files, still held");
        let mut read = Vec::new();
        for (i, f) in files.iter().enumerate() {
            assert_eq!(f.rotated, i + 1 < files.len());
            let mut bytes = vec![0; f.end as usize];
            f.file.read_exact_at(&mut bytes, 0).unwrap();
            assert!(bytes.ends_with(b"\n"), "file {i} ends with a whole line");
            read.extend(bytes);
        }
        // The files the log keeps end what the feed holds, byte for byte;
        // the held ones before them carry the chain from its start.
        let mut kept = Vec::new();
        for f in [".2", ".1", ""] {
            kept.extend(std::fs::read(format!("{}{f}", path.display())).unwrap_or_default());
        }
        assert!(read.ends_with(&kept));
        let lines: Vec<&str> = std::str::from_utf8(&read).unwrap().lines().collect();
        let ns: Vec<String> = (0..120).map(|n| format!(r#""n":{n}"#)).collect();
        let mut next = ns.iter();
        for l in &lines {
            if l.contains(r#""kind":"test""#) {
                assert!(l.contains(next.next().unwrap().as_str()), "{l}");
            }
        }
        assert!(next.next().is_none(), "every record read");
        let mut prev = guardrail_engine::chain::GENESIS;
        for l in &lines {
            let opened = guardrail_engine::chain::open(l).unwrap();
            assert_eq!(opened.prev, prev);
            prev = opened.hash;
        }

        // Rotated out of `max_files` unsent: held on disk beside the log;
        // a file the reader releases goes.
        let held = held_files(&path);
        assert_eq!(held.len(), files.len() - 3);
        let first = files[0].id;
        feed.release(first);
        assert!(feed.files().iter().all(|f| f.id != first));
        assert_eq!(held_files(&path), held[1..]);
    }

    #[test]
    fn a_record_cut_short_is_removed_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let cfg = AuditSection {
            path: path.clone(),
            ..Default::default()
        };
        let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
        log.send(r#"{"kind":"test","n":1}"#);
        drop(log);
        // A killed writer leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"kind":"test","n":2,"chain":{"prev":"ab"#)
            .unwrap();
        drop(f);
        let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
        log.send(r#"{"kind":"test","n":3}"#);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(r#""n":2"#), "{text}");
        let files = vec![("audit.jsonl".into(), text)];
        assert_eq!(guardrail_engine::chain::verify(&files).unwrap(), 2);
    }

    #[test]
    fn a_restart_continues_the_chain_when_the_tail_read_cuts_a_character() {
        // The last 64 KiB are read for the chain: with a long record of
        // two-byte characters before the last one, one of these two
        // paddings puts the cut inside a character.
        for pad in ["", "x"] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = AuditSection {
                path: dir.path().join("audit.jsonl"),
                ..Default::default()
            };
            let long = "é".repeat(40_000);
            let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
            log.send(&format!(r#"{{"kind":"test","n":1,"s":"{pad}{long}"}}"#));
            log.send(r#"{"kind":"test","n":2}"#);
            drop(log);
            let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
            log.send(r#"{"kind":"test","n":3}"#);
            drop(log);
            let text = std::fs::read_to_string(&cfg.path).unwrap();
            let files = vec![("audit.jsonl".into(), text)];
            assert_eq!(guardrail_engine::chain::verify(&files).unwrap(), 3);
        }
    }

    fn records(texts: &[&str]) -> Records {
        let mut r = Records::default();
        for t in texts {
            r.push(t);
        }
        r
    }

    #[test]
    fn records_lie_end_to_end_and_are_cut_and_joined_whole() {
        let mut r = records(&["{\"n\":1}", "", "{\"n\":333}"]);
        assert_eq!(
            (r.len(), r.get(0), r.get(1), r.get(2)),
            (3, "{\"n\":1}", "", "{\"n\":333}")
        );
        assert_eq!((r.bytes(0, 3), r.bytes(1, 3), r.bytes(2, 2)), (16, 9, 0));
        r.append(&records(&["{\"n\":4}"]));
        assert_eq!((r.len(), r.get(3)), (4, "{\"n\":4}"));
        r.truncate(1);
        assert_eq!((r.len(), r.text.as_str()), (1, "{\"n\":1}"));
        r.truncate(0);
        assert_eq!((r.len(), r.text.as_str()), (0, ""));
    }

    /// A writer whose disk refuses: records wait in memory, up to
    /// `buffer_bytes`.
    fn refusing(dir: &Path, buffer_bytes: usize) -> Writer {
        let cfg = AuditSection {
            path: dir.join("audit.jsonl"),
            buffer_bytes,
            ..Default::default()
        };
        let file = open_log(&cfg.path, None).unwrap();
        let feed = LogFeed::new(
            &cfg.path,
            FeedFile::open(&cfg.path).unwrap(),
            Default::default(),
        );
        Writer {
            defined: Default::default(),
            epoch_started: Instant::now(),
            define_again: Default::default(),
            feed: Arc::new(feed),
            spares: Default::default(),
            write_buf: String::new(),
            file,
            cfg,
            reader: None,
            size: 0,
            prev: GENESIS.into(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            settled: Default::default(),
            failing: true,
            gap: 0,
            stats: Default::default(),
            unreported: Default::default(),
            last_sync: Instant::now(),
            dirty: false,
            max_age: None,
            first_record_at: None,
        }
    }

    #[test]
    fn a_record_beyond_the_memory_allowed_is_lost_alone_and_the_rest_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = refusing(dir.path(), 100);
        let [a, b, c] = [60, 50, 30].map(|len| format!("{{\"n\":\"{}\"}}", "x".repeat(len - 8)));
        // 60 fits, 60 + 50 does not, 60 + 30 does.
        w.enqueue(records(&[&a, &b, &c]));
        assert_eq!((w.pending_bytes, w.gap), (90, 1));
        // A few more records join the waiting batch.
        w.enqueue(records(&["{\"n\":1}"]));
        assert_eq!((w.pending.len(), w.pending_bytes), (1, 97));
        // Lost or buffered while the disk refuses: all settled, once.
        assert_eq!(w.settled.load(Ordering::Relaxed), 4);
        assert_eq!(w.stats.lost.load(Ordering::Relaxed), 1);
        // The disk is back.
        assert!(w.flush());
        assert_eq!((w.pending.len(), w.pending_bytes, w.gap), (0, 0, 0));
        assert_eq!(w.settled.load(Ordering::Relaxed), 4);
        let text = std::fs::read_to_string(&w.cfg.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("{\"kind\":\"log_gap\""), "{text}");
        assert!(lines[0].contains("\"lost\":1"), "{text}");
        for (line, rec) in lines[1..].iter().zip([&a, &c, &"{\"n\":1}".to_string()]) {
            assert!(
                line.starts_with(&rec[..rec.len() - 1]),
                "{line} is not {rec}"
            );
        }
        assert_eq!(lines.len(), 4);
        let files = vec![("audit.jsonl".into(), text.clone())];
        assert_eq!(guardrail_engine::chain::verify(&files).unwrap(), 4);
    }

    #[test]
    fn a_gap_record_the_disk_refuses_is_reported_once_when_it_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = refusing(dir.path(), 1000);
        w.gap = 1;
        // Writes fail with ENOSPC, twice.
        w.file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        assert!(!w.flush());
        assert!(!w.flush());
        assert_eq!((w.gap, w.unreported.load(Ordering::Relaxed)), (0, 1));
        w.file = open_log(&w.cfg.path, None).unwrap();
        assert!(w.flush());
        let text = std::fs::read_to_string(&w.cfg.path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("\"kind\":\"log_gap\"") && text.contains("\"lost\":1"),
            "{text}"
        );
    }

    #[test]
    fn records_join_only_a_waiting_batch_with_nothing_written_and_big_batches_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = refusing(dir.path(), 1 << 20);
        let small = || records(&["{\"n\":1}"]);
        w.enqueue(small());
        w.enqueue(small());
        assert_eq!(w.pending.len(), 1, "a small batch joins the one waiting");
        w.pending[0].next = 1;
        w.pending_bytes -= 7;
        w.enqueue(small());
        assert_eq!(w.pending.len(), 2, "not a batch partly written");
        let many: Vec<String> = (0..MERGE_BELOW).map(|n| format!("{{\"n\":{n}}}")).collect();
        w.enqueue(records(
            &many.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        assert_eq!(w.pending.len(), 3, "a batch of {MERGE_BELOW} stands alone");
        // The merged batches' memory was kept.
        assert_eq!(w.spares.lock().unwrap().len(), 1);
        w.spares.lock().unwrap().clear();
        let mut big = Records::default();
        big.text.reserve(SPARE_BYTES + 1);
        give_back(&w.spares, big);
        give_back(&w.spares, Records::default());
        assert!(w.spares.lock().unwrap().is_empty());
        let mut kept = Records::default();
        kept.push("{}");
        give_back(&w.spares, kept);
        assert_eq!(w.spares.lock().unwrap()[0].len(), 0);
    }

    /// Waits for `path` to exist, as a writer's rotation is asynchronous.
    fn wait_for(path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn age_rotated(dir: &Path) -> AuditSection {
        AuditSection {
            path: dir.join("audit.jsonl"),
            // Below what the config accepts, to keep the test short.
            max_age: Some("1s".into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_old_file_is_rotated_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = age_rotated(dir.path());
        let path = cfg.path.clone();
        let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
        // As the pipeline does after each drain of the ring buffer.
        log.send(r#"{"kind":"test","n":1}"#);
        log.hand_over_pending();
        wait_for(&dir.path().join("audit.jsonl.1"));
        log.send(r#"{"kind":"test","n":2}"#);
        drop(log);
        let rotated = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(
            rotated.contains(r#""n":1"#) && !rotated.contains(r#""n":2"#),
            "{rotated}"
        );
        assert!(current.contains(r#""n":2"#), "{current}");
        let files = vec![
            ("audit.jsonl.1".into(), rotated),
            ("audit.jsonl".into(), current),
        ];
        assert_eq!(guardrail_engine::chain::verify(&files).unwrap(), 2);
    }

    #[test]
    fn a_restart_just_after_a_rotation_continues_the_rotated_files_chain() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = age_rotated(dir.path());
        let path = cfg.path.clone();
        let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
        log.send(r#"{"kind":"test","n":1,"ktime_ns":7,"process":{"tid":3}}"#);
        log.hand_over_pending();
        wait_for(&dir.path().join("audit.jsonl.1"));
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let log = AuditLog::start(&cfg, &Policy::agent(None)).unwrap();
        assert_eq!(log.last_logged(), Some((7, 3)));
        log.send(r#"{"kind":"test","n":2}"#);
        drop(log);
        let files = vec![
            (
                "audit.jsonl.1".into(),
                std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap(),
            ),
            (
                "audit.jsonl".into(),
                std::fs::read_to_string(&path).unwrap(),
            ),
        ];
        assert_eq!(guardrail_engine::chain::verify(&files).unwrap(), 2);
    }

    /// Event `seq` of thread 7, naming process version `pv` by reference.
    fn referencing(batch: &mut Records, seq: u64, pv: u64, kind: &'static str) {
        let json = format!(
            r#"{{"seq":{seq},"kind":"{kind}","process":{{"pid":7,"tid":7,"id":"7@1","pv":{pv}}}}}"#
        );
        let at = guardrail_engine::process_join::reference_end(&json, pv).unwrap();
        let shared = format!(r#""uid":0,"exe":"/bin/v{pv}""#).into();
        batch.push_with(
            &json,
            Some(Reference {
                at,
                pv,
                kind,
                shared,
            }),
        );
    }

    /// The lines of `path` that define a version.
    fn definitions(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| guardrail_engine::process_join::defines_a_version(l.as_bytes()))
            .map(|l| guardrail_engine::chain::open(l).unwrap().event_json)
            .collect()
    }

    #[test]
    fn a_version_is_written_whole_once_per_file_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = refusing(dir.path(), 1 << 20);
        let mut batch = Records::default();
        for (seq, pv, kind) in [
            (1, 1, "perm"),
            (2, 1, "perm"),
            (3, 2, "perm"),
            (4, 1, "file"),
            (5, 1, "perm"),
        ] {
            referencing(&mut batch, seq, pv, kind);
        }
        w.enqueue(batch);
        assert!(w.flush());
        assert_eq!(
            definitions(&w.cfg.path),
            [
                r#"{"seq":1,"kind":"perm","process":{"pid":7,"tid":7,"id":"7@1","pv":1,"uid":0,"exe":"/bin/v1"}}"#,
                r#"{"seq":3,"kind":"perm","process":{"pid":7,"tid":7,"id":"7@1","pv":2,"uid":0,"exe":"/bin/v2"}}"#,
                r#"{"seq":4,"kind":"file","process":{"pid":7,"tid":7,"id":"7@1","pv":1,"uid":0,"exe":"/bin/v1"}}"#,
            ]
        );
        let text = std::fs::read_to_string(&w.cfg.path).unwrap();
        assert_eq!(text.lines().count(), 5);
        let files = vec![("audit.jsonl".into(), text)];
        assert_eq!(guardrail_engine::chain::verify(&files).unwrap(), 5);
        // A new file defines again what it names.
        w.rotate().unwrap();
        let mut batch = Records::default();
        referencing(&mut batch, 6, 1, "perm");
        referencing(&mut batch, 7, 1, "perm");
        w.enqueue(batch);
        assert!(w.flush());
        let defined = definitions(&w.cfg.path);
        assert_eq!(defined.len(), 1);
        assert!(defined[0].starts_with(r#"{"seq":6,"#), "{defined:?}");
    }

    #[test]
    fn a_write_that_fails_defines_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = refusing(dir.path(), 1 << 20);
        let mut batch = Records::default();
        referencing(&mut batch, 1, 1, "perm");
        referencing(&mut batch, 2, 1, "perm");
        w.enqueue(batch);
        // Writes fail with ENOSPC, then the disk takes them.
        w.file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        assert!(!w.flush());
        w.file = open_log(&w.cfg.path, None).unwrap();
        assert!(w.flush());
        let defined = definitions(&w.cfg.path);
        assert_eq!(defined.len(), 1);
        assert!(defined[0].starts_with(r#"{"seq":1,"#), "{defined:?}");
    }

    #[test]
    fn a_new_reader_of_the_lines_is_given_the_definitions_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = refusing(dir.path(), 1 << 20);
        let mut batch = Records::default();
        referencing(&mut batch, 1, 1, "perm");
        w.enqueue(batch);
        assert!(w.flush());
        // As `AuditLog::tap` does.
        w.define_again.store(true, Ordering::Relaxed);
        let mut batch = Records::default();
        referencing(&mut batch, 2, 1, "perm");
        referencing(&mut batch, 3, 1, "perm");
        w.enqueue(batch);
        assert!(w.flush());
        let defined = definitions(&w.cfg.path);
        assert_eq!(defined.len(), 2, "{defined:?}");
        assert!(defined[1].starts_with(r#"{"seq":2,"#), "{defined:?}");
    }

    mod by_reference {
        use super::*;
        use guardrail_engine::event::{Body, Event, Process, ProcessJson};
        use guardrail_engine::process_join::{
            reference_end, undefined_references, Joined, ProcessJoin,
        };
        use guardrail_engine::process_json::ProcessJsonCache;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            /// An event of thread `thread` in process state `state`.
            Event {
                thread: u32,
                state: u32,
                perm: bool,
            },
            Rotate,
            /// The next event's first write fails (a full disk).
            FailNext,
            /// The agent restarts: a new writer and numbering.
            Restart,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                12 => (0u32..4, 0u32..3, any::<bool>())
                    .prop_map(|(thread, state, perm)| Step::Event { thread, state, perm }),
                1 => Just(Step::Rotate),
                1 => Just(Step::FailNext),
                1 => Just(Step::Restart),
            ]
        }

        fn process(thread: u32, state: u32) -> Process {
            Process {
                pid: 100 + thread,
                tid: 100 + thread,
                id: Some(format!("{}@1", 100 + thread).into()),
                uid: state,
                comm: format!("c{state}").into(),
                exe: Some(format!("/bin/s{state}").into()),
                ..Default::default()
            }
        }

        fn writer(dir: &Path, prev: String) -> Writer {
            let mut w = refusing(dir, 1 << 20);
            w.cfg.max_files = 10_000;
            w.size = std::fs::metadata(&w.cfg.path).map_or(0, |m| m.len());
            w.prev = prev;
            w
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever the interleaving of threads, process changes,
            /// rotations, failed writes and restarts, every reference is
            /// defined earlier in its own file, and joins to the process
            /// its event was written for.
            #[test]
            fn every_reference_joins_to_the_process_it_was_written_for(
                steps in proptest::collection::vec(step(), 1..150)
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut w = writer(dir.path(), GENESIS.into());
                let mut cache = ProcessJsonCache::by_reference();
                let (mut seq, mut fail_next) = (0, false);
                let mut written = Vec::new();
                for step in steps {
                    match step {
                        Step::Event { thread, state, perm } => {
                            seq += 1;
                            let p = process(thread, state);
                            let mut body = if perm {
                                Body::Perm {
                                    syscall: "chmod".into(),
                                    process: p.clone(),
                                    result: Default::default(),
                                    perm: Default::default(),
                                }
                            } else {
                                Body::File {
                                    syscall: "openat".into(),
                                    process: p.clone(),
                                    result: Default::default(),
                                    file: Default::default(),
                                }
                            };
                            cache.attach(&mut body);
                            let event = Event {
                                seq,
                                time: "2026-12-06T10:00:00Z".into(),
                                ktime_ns: seq,
                                via: None,
                                body,
                                decision: None,
                                redacted: vec![],
                            };
                            let json = serde_json::to_string(&event).unwrap();
                            let reference = match &event.body.process().unwrap().json {
                                ProcessJson::Ref { pv, shared } => Some(Reference {
                                    at: reference_end(&json, *pv).unwrap(),
                                    pv: *pv,
                                    kind: event.body.kind(),
                                    shared: shared.clone(),
                                }),
                                _ => None,
                            };
                            let mut batch = Records::default();
                            batch.push_with(&json, reference);
                            w.enqueue(batch);
                            if std::mem::take(&mut fail_next) {
                                w.file = OpenOptions::new().append(true).open("/dev/full").unwrap();
                                prop_assert!(!w.flush());
                                w.file = open_log(&w.cfg.path, None).unwrap();
                            }
                            prop_assert!(w.flush());
                            written.push(p);
                        }
                        Step::Rotate => w.rotate().unwrap(),
                        Step::FailNext => fail_next = true,
                        Step::Restart => {
                            w = writer(dir.path(), w.prev.clone());
                            cache = ProcessJsonCache::by_reference();
                            seq = 0;
                        }
                    }
                }
                // Oldest file first, as readers take them.
                let path = dir.path().join("audit.jsonl");
                let mut files: Vec<PathBuf> = (1..10_000)
                    .map(|i| rotated(&path, i))
                    .take_while(|f| f.exists())
                    .collect();
                files.reverse();
                files.push(path);
                let mut join = ProcessJoin::default();
                let mut read = Vec::new();
                for f in &files {
                    let text = std::fs::read_to_string(f).unwrap();
                    prop_assert_eq!(undefined_references(&text), vec![]);
                    for line in text.lines() {
                        let mut e: Event = serde_json::from_str(line).unwrap();
                        prop_assert_ne!(join.join(&mut e), Joined::Missing);
                        let mut p = e.body.process().unwrap().clone();
                        p.pv = None;
                        read.push(p);
                    }
                }
                prop_assert_eq!(read, written);
            }
        }
    }
}
