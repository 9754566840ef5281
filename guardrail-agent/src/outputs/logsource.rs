//! The NATS output's queue when it takes every event: the audit log's own
//! files, read where the log's writer wrote them.
//!
//! The log already holds the exact lines the stream carries, sealed in
//! its chain; copying each into a spool of its own, reading it back and
//! rewriting it into a message was most of the output's cost
//! (design/nats-from-log.md). Instead the publisher reads the committed
//! bytes of `audit.jsonl` and its rotated files through descriptors the
//! writer hands over ([`LogFeed`]), cuts them into messages, and remembers
//! in `spool_dir/log-cursor` the first byte the server has not
//! acknowledged: by file identity (device and inode, which a rotation's
//! rename keeps), offset, and the hash of the line before it.
//!
//! What an outage may hold back is the log's retained files
//! (`max_files` × `max_bytes`) plus up to `spool_bytes` of files rotated
//! out while still unsent: the writer renames such a file
//! `<path>.held.<n>` instead of removing it (and a file deleted behind
//! its back stays readable through the descriptor while the agent runs).
//! Past that bound the oldest such file is given up: its unsent lines are
//! counted, and a `loss` message says so in the stream before the next
//! line.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::message::{kind_of, new_chain_id, Losses, BATCH_BYTES, BATCH_RECORDS};
use super::OutputStats;
use crate::audit::writer::rotated;
use crate::audit::{held_files, FeedFile, FileId, LogFeed};
use crate::config::nats::is_token;
use guardrail_engine::chain::sealed_hash_of;

/// Why lines are given up, in `last_drop` and the `loss` record (the
/// "spool full" prefix is what operators and `log verify --nats` know).
const GIVEN_UP: &str = "spool full (audit log files rotated away unsent)";

/// Files rotated away unsent held open at most, whatever their bytes: a
/// descriptor each, and the agent's share of them is bounded (small
/// `max_bytes` with a large `spool_bytes` would take thousands).
const HELD_FILES_AT_MOST: usize = 256;

/// A place in the log: a file as this reader numbers them, and a byte in
/// it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPos {
    pub file: u64,
    pub offset: u64,
}

/// One message to publish.
pub struct Message {
    /// The subject's last token.
    pub kind: String,
    /// What names it after `<host>.` in its `Nats-Msg-Id`: its first
    /// line's hash, or a `loss` message's id.
    pub name: String,
    /// None: lines the stream holds already, only to be acknowledged.
    pub payload: Option<Bytes>,
    pub records: u64,
    /// Where the log continues after it, and the hash of its last line.
    pub end: LogPos,
    pub last_hash: Option<String>,
}

/// A file of the log this reader holds.
struct Held {
    n: u64,
    id: FileId,
    /// None once given up (or never found: lines lost before a start).
    file: Option<Arc<File>>,
    end: u64,
    rotated: bool,
    /// Out of the log's rotation: held (renamed) for this reader, or
    /// deleted while open. What such files hold unsent is bounded.
    beyond_kept: bool,
    /// Given up: how many lines were lost reading on from each offset
    /// (none known: unknown), and the id of its `loss` message.
    given_up: Option<GivenUp>,
}

struct GivenUp {
    lines_after: Vec<(u64, u64)>,
    id: String,
    reason: String,
}

impl Held {
    fn beyond_kept(&self) -> bool {
        // The file being written is deleted only behind the agent's back.
        self.beyond_kept
            || self.rotated
                && self
                    .file
                    .as_ref()
                    .is_some_and(|f| f.metadata().is_ok_and(|m| m.nlink() == 0))
    }
}

pub struct LogSource {
    feed: Arc<LogFeed>,
    cursor_path: PathBuf,
    files: VecDeque<Held>,
    next_n: u64,
    /// The first byte not acknowledged, and the hash of the line before.
    acked: LogPos,
    acked_hash: Option<String>,
    /// The stream sequence of the last acknowledged message (persisted,
    /// so that a restart finds what was stored after it).
    acked_at: u64,
    unsaved: bool,
    /// Where the next read starts, and the hash of the line before it.
    next: LogPos,
    next_hash: Option<String>,
    /// Bytes of files rotated away unsent that may be held.
    bound: u64,
    losses: Losses,
    name: String,
    stats: Arc<OutputStats>,
}

/// The cursor's file in the spool directory.
pub const CURSOR: &str = "log-cursor";

struct Cursor {
    id: FileId,
    offset: u64,
    hash: Option<String>,
    acked_at: u64,
}

fn read_cursor(path: &Path) -> Option<Cursor> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut f = text.split_whitespace();
    (f.next()? == "v2").then_some(())?;
    let dev = f.next()?.parse().ok()?;
    let ino = f.next()?.parse().ok()?;
    let offset = f.next()?.parse().ok()?;
    let hash = f.next()?;
    let acked_at = f.next()?.parse().ok()?;
    Some(Cursor {
        id: (dev, ino),
        offset,
        hash: (hash != "-").then(|| hash.to_string()),
        acked_at,
    })
}

/// The files of the log at `path` before the one being written, oldest
/// first: those held for the reader by an earlier run (`<path>.held.<n>`),
/// then `<path>.K` … `<path>.1` (those that can be opened).
fn older_files(path: &Path) -> Vec<FeedFile> {
    let found = |p: PathBuf, held: bool| {
        FeedFile::open(&p).ok().map(|f| FeedFile {
            rotated: true,
            held: held.then_some(p),
            ..f
        })
    };
    let mut files = vec![];
    for (_, p) in held_files(path) {
        files.extend(found(p, true));
    }
    let kept: Vec<FeedFile> = (1..)
        .map_while(|i| found(rotated(path, i), false))
        .collect();
    files.extend(kept.into_iter().rev());
    files
}

/// The hash of the whole line that ends just before `offset` in `file`.
fn hash_before(file: &File, offset: u64) -> Option<String> {
    let from = offset.saturating_sub(1 << 20);
    let mut buf = vec![0u8; (offset - from) as usize];
    file.read_exact_at(&mut buf, from).ok()?;
    let text = buf.strip_suffix(b"\n")?;
    let line = text.rsplit(|&b| b == b'\n').next()?;
    sealed_hash_of(line).map(str::to_string)
}

/// Where the line sealed with `hash` ends in `file` (after its newline).
fn after_line(file: &File, hash: &str) -> Option<u64> {
    let len = file.metadata().ok()?.len();
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).ok()?;
    let needle = format!("\"hash\":\"{hash}\"}}}}\n");
    let at = memchr::memmem::find(&buf, needle.as_bytes())?;
    Some((at + needle.len()) as u64)
}

/// Lines (newlines) in `file` from each of `offsets` to `end`, in one
/// read of the file.
fn lines_after(file: &File, offsets: &[u64], end: u64) -> Vec<u64> {
    let mut n = vec![0; offsets.len()];
    let mut at = offsets.iter().copied().min().unwrap_or(end);
    let mut buf = vec![0u8; 1 << 20];
    while at < end {
        let want = ((end - at) as usize).min(buf.len());
        if file.read_exact_at(&mut buf[..want], at).is_err() {
            break;
        }
        for (count, &from) in n.iter_mut().zip(offsets) {
            let skip = (from.saturating_sub(at) as usize).min(want);
            *count += memchr::memchr_iter(b'\n', &buf[skip..want]).count() as u64;
        }
        at += want as u64;
    }
    n
}

impl LogSource {
    /// Where this output left off in the log (its cursor in `spool_dir`);
    /// else after the line `resume_after` (the last one an older agent's
    /// spool held); else, the first time, at the log's end: the history
    /// before the output was configured is not sent.
    pub fn open(
        feed: Arc<LogFeed>,
        spool_dir: &Path,
        bound: u64,
        resume_after: Option<&str>,
        name: &str,
        stats: Arc<OutputStats>,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(spool_dir)?;
        let mut s = LogSource {
            cursor_path: spool_dir.join(CURSOR),
            files: VecDeque::new(),
            next_n: 1,
            acked: LogPos::default(),
            acked_hash: None,
            acked_at: 0,
            unsaved: true,
            next: LogPos::default(),
            next_hash: None,
            bound,
            losses: Losses::default(),
            name: name.to_string(),
            stats,
            feed,
        };
        s.feed.adopt(older_files(&s.feed.path));
        // The bound is kept once the place is known (files before it are
        // sent, not held).
        s.take_in();
        let cursor = read_cursor(&s.cursor_path);
        let (start, hash) = match (&cursor, resume_after) {
            (Some(c), _) => {
                s.acked_at = c.acked_at;
                let at_offset = s.files.iter().find(|h| h.id == c.id).filter(|h| {
                    c.offset <= h.end
                        && (c.offset == 0
                            || c.hash.is_none()
                            || h.file.as_ref().and_then(|f| hash_before(f, c.offset)) == c.hash)
                });
                match at_offset {
                    Some(h) => (
                        Some(LogPos {
                            file: h.n,
                            offset: c.offset,
                        }),
                        c.hash.clone(),
                    ),
                    None => (s.find_after(c.hash.as_deref()), c.hash.clone()),
                }
            }
            (None, Some(after)) => (s.find_after(Some(after)), Some(after.to_string())),
            (None, None) => {
                // First enablement: from the log's end on.
                let last = s.files.back().map(|h| LogPos {
                    file: h.n,
                    offset: h.end,
                });
                let hash = last.and_then(|p| {
                    let h = s.files.back()?;
                    (p.offset > 0)
                        .then(|| h.file.as_ref().and_then(|f| hash_before(f, p.offset)))
                        .flatten()
                });
                (last, hash)
            }
        };
        let start = start.unwrap_or_else(|| {
            // Where it left off is in no file the log still holds: what
            // came between is lost, how much is not known.
            let why = "the lines after the last one sent are in no file the audit log still holds (rotated away while the agent was stopped)";
            warn!(output = %name, "{why}: a loss is reported in the stream");
            s.files.push_front(Held {
                n: 0,
                id: (0, 0),
                file: None,
                end: 0,
                rotated: true,
                beyond_kept: false,
                given_up: Some(GivenUp {
                    lines_after: vec![],
                    id: format!("loss.{}", new_chain_id()),
                    reason: why.to_string(),
                }),
            });
            LogPos { file: 0, offset: 0 }
        });
        // Files before the place are sent: let go (held ones removed).
        s.ack(start, hash.as_deref(), 0);
        s.next = start;
        s.next_hash = hash;
        s.refresh();
        s.save_cursor(s.acked_at)?;
        Ok(s)
    }

    /// The position after the line sealed `hash` in a file the log holds.
    fn find_after(&self, hash: Option<&str>) -> Option<LogPos> {
        let hash = hash?;
        self.files.iter().rev().find_map(|h| {
            let offset = after_line(h.file.as_ref()?, hash)?;
            Some(LogPos { file: h.n, offset })
        })
    }

    /// The stream sequence acknowledged last (0: none known).
    pub fn acked_at(&self) -> u64 {
        self.acked_at
    }

    /// Read again from the first byte not acknowledged (a new session).
    pub fn rewind(&mut self) {
        self.next = self.acked;
        self.next_hash = self.acked_hash.clone();
    }

    /// Take in what the writer said since, and give up the oldest files
    /// rotated away unsent while they hold more than the bound.
    pub fn refresh(&mut self) {
        self.take_in();
        let held = loop {
            let (held, beyond) = self.held();
            match beyond.first() {
                Some(&oldest) if held > self.bound || beyond.len() > HELD_FILES_AT_MOST => {
                    self.give_up(oldest)
                }
                _ => break held,
            }
        };
        // Published once within the bound: status never shows the
        // moment between a rotation and the give-up it causes.
        self.stats.held_bytes.store(held, Ordering::Relaxed);
    }

    /// Take in the files the writer handed over since, and where each
    /// ends now.
    fn take_in(&mut self) {
        for ff in self.feed.files() {
            // Only a file still held open is known by its inode: once a
            // file is given up and closed, a new log file may get its
            // inode number (ext4 reuses them at once).
            match self
                .files
                .iter_mut()
                .find(|h| h.id == ff.id && h.file.is_some())
            {
                Some(h) => {
                    h.end = ff.end;
                    h.rotated = ff.rotated;
                    h.beyond_kept = ff.held.is_some();
                }
                None => {
                    self.files.push_back(Held {
                        n: self.next_n,
                        id: ff.id,
                        file: Some(ff.file),
                        end: ff.end,
                        rotated: ff.rotated,
                        beyond_kept: ff.held.is_some(),
                        given_up: None,
                    });
                    self.next_n += 1;
                }
            }
        }
    }

    /// The bytes not acknowledged of files out of the log's rotation and
    /// still held, and those files (oldest first).
    fn held(&self) -> (u64, Vec<usize>) {
        let unsent = |h: &Held| {
            if h.n < self.acked.file {
                0
            } else if h.n == self.acked.file {
                h.end.saturating_sub(self.acked.offset)
            } else {
                h.end
            }
        };
        let beyond: Vec<usize> = (0..self.files.len())
            .filter(|&i| self.files[i].given_up.is_none() && self.files[i].beyond_kept())
            .collect();
        let held = beyond.iter().map(|&i| unsent(&self.files[i])).sum();
        (held, beyond)
    }

    /// Give up file `i` (rotated away, over the bound): its descriptor is
    /// closed and its lines not sent are counted.
    fn give_up(&mut self, i: usize) {
        let (acked, next) = (self.acked, self.next);
        let h = &mut self.files[i];
        let Some(file) = h.file.take() else { return };
        let mut offsets = vec![0];
        for p in [acked, next] {
            if p.file == h.n && p.offset > 0 {
                offsets.push(p.offset);
            }
        }
        let counts = lines_after(&file, &offsets, h.end);
        let lines_after: Vec<(u64, u64)> = offsets.into_iter().zip(counts).collect();
        let unread = if next.file < h.n {
            lines_after[0].1
        } else if next.file == h.n {
            lines_after.last().map_or(0, |(_, n)| *n)
        } else {
            0
        };
        h.given_up = Some(GivenUp {
            lines_after,
            id: format!("loss.{}", new_chain_id()),
            reason: GIVEN_UP.to_string(),
        });
        let id = h.id;
        drop(file);
        self.feed.release(id);
        // The lines after the gap may name process versions it defined.
        self.feed.define_again.store(true, Ordering::Relaxed);
        self.losses.count(unread, GIVEN_UP, &self.name, &self.stats);
    }

    /// The next messages, from about `max_bytes` of the log: lines the
    /// stream holds (`stored`) are not sent again. Empty when nothing
    /// more is committed.
    pub fn read(
        &mut self,
        max_bytes: usize,
        stored: &HashSet<String>,
    ) -> std::io::Result<Vec<Message>> {
        self.refresh();
        loop {
            let Some(i) = self.files.iter().position(|h| h.n >= self.next.file) else {
                return Ok(vec![]);
            };
            if self.files[i].n > self.next.file {
                self.next = LogPos {
                    file: self.files[i].n,
                    offset: 0,
                };
            }
            let h = &self.files[i];
            if let Some(g) = &h.given_up {
                return Ok(vec![self.loss_message(i, g.id.clone())]);
            }
            if self.next.offset >= h.end {
                if !h.rotated || i + 1 == self.files.len() {
                    return Ok(vec![]);
                }
                self.next = LogPos {
                    file: self.files[i + 1].n,
                    offset: 0,
                };
                continue;
            }
            let file = h.file.clone().expect("a file not given up is open");
            let buf = read_lines(&file, self.next.offset, h.end, max_bytes)?;
            if buf.is_empty() {
                return Ok(vec![]);
            }
            return Ok(self.messages(buf, stored));
        }
    }

    /// The `loss` message for given-up file `i`, read from `self.next`.
    fn loss_message(&mut self, i: usize, id: String) -> Message {
        let h = &self.files[i];
        let g = h.given_up.as_ref().expect("given up");
        let count = g
            .lines_after
            .iter()
            .find(|(o, _)| *o == self.next.offset)
            .map(|(_, n)| *n);
        let losses = Losses {
            unreported: count.unwrap_or(0),
            total: self.losses.total + count.unwrap_or(0),
            reason: g.reason.clone(),
            unknown: count.is_none(),
        };
        let mut record = losses.record(&self.name, &g.reason, Some(&id));
        if let Some(after) = &self.next_hash {
            record["after"] = after.as_str().into();
        }
        self.losses.unreported = 0;
        self.losses.total = losses.total;
        let end = LogPos {
            file: h.n + 1,
            offset: 0,
        };
        self.next = end;
        Message {
            kind: "loss".into(),
            name: id,
            payload: Some(Bytes::from(record.to_string())),
            records: 1,
            end,
            last_hash: self.next_hash.clone(),
        }
    }

    /// Cut whole lines read at `self.next` into messages.
    fn messages(&mut self, buf: Bytes, stored: &HashSet<String>) -> Vec<Message> {
        let base = self.next;
        let mut out = vec![];
        let mut open: Option<Open> = None;
        let mut start = 0;
        let mut last_hash: Option<&str> = None;
        let pos = |at: usize| LogPos {
            file: base.file,
            offset: base.offset + at as u64,
        };
        let text = buf.as_ref();
        for nl in memchr::memchr_iter(b'\n', text) {
            let line = &text[start..nl];
            let line_start = start;
            start = nl + 1;
            // Every line the writer writes is sealed; one that is not is
            // not sent (it cannot be named).
            let Some(hash) = sealed_hash_of(line) else {
                continue;
            };
            last_hash = Some(hash);
            if stored.contains(hash) {
                // The stream has it (its acknowledgement was lost).
                // Lines after it ack it with theirs.
                if let Some(o) = open.take() {
                    let end = pos(o.end + 1);
                    out.push(o.message(&buf, end));
                }
                continue;
            }
            let kind = kind_of(line).filter(|k| is_token(k)).unwrap_or("other");
            if let Some(o) = &open {
                if o.kind != kind || o.records >= BATCH_RECORDS || nl - o.start + 160 > BATCH_BYTES
                {
                    let o = open.take().expect("open");
                    let end = pos(o.end + 1);
                    out.push(o.message(&buf, end));
                }
            }
            let o = open.get_or_insert_with(|| Open {
                kind: kind.to_string(),
                name: hash.to_string(),
                start: line_start,
                end: nl,
                records: 0,
                last_hash: String::new(),
            });
            o.end = nl;
            o.records += 1;
            o.last_hash.clear();
            o.last_hash.push_str(hash);
        }
        if let Some(o) = open.take() {
            let end = pos(o.end + 1);
            out.push(o.message(&buf, end));
        }
        let consumed = pos(start);
        let last_hash = last_hash.map(str::to_string);
        if out.last().is_none_or(|m| m.end < consumed) {
            // The last lines are held by the stream: nothing to send, the
            // place to acknowledge.
            out.push(Message {
                kind: String::new(),
                name: String::new(),
                payload: None,
                records: 0,
                end: consumed,
                last_hash: last_hash.clone(),
            });
        }
        self.next = consumed;
        self.next_hash = last_hash;
        out
    }

    /// Everything before `end` is acknowledged by the server, which stored
    /// it at stream sequence `at` (0 for lines it held already).
    pub fn ack(&mut self, end: LogPos, hash: Option<&str>, at: u64) {
        if end <= self.acked {
            return;
        }
        self.acked = end;
        self.acked_hash = hash.map(str::to_string).or(self.acked_hash.take());
        if at > 0 {
            self.acked_at = at;
        }
        self.unsaved = true;
        let mut released = false;
        while self.files.front().is_some_and(|h| h.n < end.file) {
            let h = self.files.pop_front().expect("front");
            if h.file.is_some() {
                self.feed.release(h.id);
            }
            released = true;
        }
        if released {
            let (held, _) = self.held();
            self.stats.held_bytes.store(held, Ordering::Relaxed);
        }
    }

    /// Everything committed is acknowledged.
    pub fn is_drained(&mut self) -> bool {
        self.refresh();
        self.files.back().is_none_or(|h| {
            self.acked
                >= LogPos {
                    file: h.n,
                    offset: h.end,
                }
        })
    }

    /// Write the cursor if acknowledgements moved it (a crash before this
    /// resends at most what was acknowledged since, which the stream's
    /// records after `acked_at` show as held).
    pub fn save_cursor(&mut self, acked_at: u64) -> std::io::Result<()> {
        if acked_at > self.acked_at {
            self.acked_at = acked_at;
            self.unsaved = true;
        }
        if !self.unsaved {
            return Ok(());
        }
        // A file given up is named by no inode (another file may have it
        // by now): a restart finds the place by the hash alone.
        let id = self
            .files
            .iter()
            .find(|h| h.n == self.acked.file && h.file.is_some())
            .map_or((0, 0), |h| h.id);
        let text = format!(
            "v2 {} {} {} {} {}\n",
            id.0,
            id.1,
            self.acked.offset,
            self.acked_hash.as_deref().unwrap_or("-"),
            self.acked_at
        );
        let tmp = self.cursor_path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.cursor_path)?;
        self.unsaved = false;
        Ok(())
    }

    /// Woken when the log has more.
    pub fn feed(&self) -> Arc<LogFeed> {
        self.feed.clone()
    }
}

/// A message being gathered: lines `start..end` of the read buffer.
struct Open {
    kind: String,
    name: String,
    start: usize,
    end: usize,
    records: u64,
    last_hash: String,
}

impl Open {
    fn message(self, buf: &Bytes, end: LogPos) -> Message {
        Message {
            kind: self.kind,
            name: self.name,
            payload: Some(buf.slice(self.start..self.end)),
            records: self.records,
            end,
            last_hash: Some(self.last_hash),
        }
    }
}

/// Whole lines of `file` from `offset` (at most about `max_bytes`, at
/// least one line), not past `end`.
fn read_lines(file: &File, offset: u64, end: u64, max_bytes: usize) -> std::io::Result<Bytes> {
    let want = ((end - offset) as usize).min(max_bytes.max(1));
    let mut buf = read_at(file, offset, want)?;
    let mut whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole == 0 && (want as u64) < end - offset {
        // One line longer than max_bytes: read it whole.
        buf = read_at(file, offset, (end - offset) as usize)?;
        whole = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    }
    buf.truncate(whole);
    Ok(Bytes::from(buf))
}

/// `len` bytes of `file` at `offset`, read into a new buffer that is not
/// zeroed first (filling a 256 KiB buffer with zeros per read was 7% of
/// the publisher's time).
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = buf.len();
        // SAFETY: pread writes at most `len - at` bytes into the spare
        // capacity after the bytes already read; only the bytes it says it
        // wrote become part of the vector.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(at).cast(),
                len - at,
                (offset + at as u64) as libc::off_t,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: the kernel wrote these `n` bytes.
            n => unsafe { buf.set_len(at + n as usize) },
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLog;
    use crate::config::AuditSection;
    use crate::trust::Policy;
    use guardrail_engine::chain::open as open_line;
    use guardrail_engine::chain::sealed_hash;

    fn start(path: &Path, max_bytes: u64, max_files: usize) -> AuditLog {
        let cfg = AuditSection {
            path: path.to_path_buf(),
            max_bytes,
            max_files,
            ..Default::default()
        };
        AuditLog::start(&cfg, &Policy::agent(None)).unwrap()
    }

    fn source(log: &AuditLog, spool: &Path, bound: u64) -> LogSource {
        let stats = Arc::new(OutputStats::default());
        LogSource::open(log.feed().unwrap(), spool, bound, None, "nats", stats).unwrap()
    }

    fn send(log: &AuditLog, kinds: &[&str], from: usize) {
        for (i, kind) in kinds.iter().enumerate() {
            log.send(&format!(r#"{{"kind":"{kind}","n":{}}}"#, from + i));
        }
    }

    /// Every message until nothing more is committed, each acknowledged.
    fn drain(src: &mut LogSource, stored: &HashSet<String>) -> Vec<Message> {
        let mut out = vec![];
        loop {
            let batch = src.read(4096, stored).unwrap();
            if batch.is_empty() {
                return out;
            }
            for m in batch {
                src.ack(m.end, m.last_hash.as_deref(), 0);
                out.push(m);
            }
        }
    }

    /// The lines the messages carry, in order.
    fn lines(messages: &[Message]) -> Vec<String> {
        messages
            .iter()
            .filter_map(|m| m.payload.as_ref())
            .flat_map(|p| {
                std::str::from_utf8(p)
                    .unwrap()
                    .split('\n')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The `n` of each test record the messages carry, in order.
    fn ns(messages: &[Message]) -> Vec<u64> {
        lines(messages).iter().filter_map(|l| n_of(l)).collect()
    }

    fn n_of(line: &str) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(&open_line(line)?.event_json).ok()?;
        v["n"].as_u64()
    }

    #[test]
    fn a_reader_reads_exactly_the_logs_lines_across_rotations_held_files_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = start(&path, 4096, 2);
        let mut src = source(&log, &dir.path().join("spool"), 1 << 30);
        let kinds: Vec<&str> = (0..300)
            .map(|i| if i % 7 < 4 { "file" } else { "exec" })
            .collect();
        send(&log, &kinds, 0);
        drop(log);
        assert!(
            !dir.path().join("audit.jsonl.3").exists(),
            "files were rotated out"
        );
        assert!(held_files(&path).len() > 2, "and held, unsent");
        let messages = drain(&mut src, &HashSet::new());
        assert_eq!(held_files(&path), [], "sent: removed");
        let got = lines(&messages);
        assert_eq!(ns(&messages), (0..300).collect::<Vec<_>>());
        // In the chain's order, nothing between.
        for pair in got.windows(2) {
            let (a, b) = (open_line(&pair[0]).unwrap(), open_line(&pair[1]).unwrap());
            assert_eq!(b.prev, a.hash);
        }
        // A message holds lines of one kind, named by its first.
        for m in messages.iter().filter(|m| m.payload.is_some()) {
            let text = std::str::from_utf8(m.payload.as_ref().unwrap()).unwrap();
            let first = text.split('\n').next().unwrap();
            assert_eq!(Some(m.name.as_str()), sealed_hash(first));
            assert!(text
                .split('\n')
                .all(|l| kind_of(l.as_bytes()) == Some(m.kind.as_str())));
            assert_eq!(text.split('\n').count() as u64, m.records);
        }
        assert!(src.is_drained());
    }

    #[test]
    fn files_rotated_away_beyond_the_bound_are_given_up_counted_and_reported_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = start(&path, 4096, 1);
        let stats = Arc::new(OutputStats::default());
        let mut src = LogSource::open(
            log.feed().unwrap(),
            &dir.path().join("spool"),
            0,
            None,
            "nats",
            stats.clone(),
        )
        .unwrap();
        send(&log, &["file"; 200], 0);
        drop(log);
        let messages = drain(&mut src, &HashSet::new());
        let sent = ns(&messages);
        let losses: Vec<serde_json::Value> = messages
            .iter()
            .filter(|m| m.kind == "loss")
            .map(|m| serde_json::from_slice(m.payload.as_ref().unwrap()).unwrap())
            .collect();
        assert!(!losses.is_empty());
        let counted: u64 = losses
            .iter()
            .map(|l| l["loss"]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(sent.len() as u64 + counted, 200, "sent {sent:?}");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), counted);
        // Each loss stands where its lines are missing: the lines before
        // and after it are whole runs of the log.
        let mut expected = 0;
        for m in &messages {
            if m.kind == "loss" {
                let l: serde_json::Value =
                    serde_json::from_slice(m.payload.as_ref().unwrap()).unwrap();
                assert!(l["loss"]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("spool full"));
                expected += l["loss"]["count"].as_u64().unwrap();
            } else {
                for line in lines(std::slice::from_ref(m)) {
                    assert_eq!(n_of(&line), Some(expected));
                    expected += 1;
                }
            }
        }
        assert_eq!(expected, 200);
        assert_eq!(held_files(&path), [], "given up: removed");
    }

    #[test]
    fn files_held_unsent_are_read_on_after_a_restart_and_a_file_deleted_while_open_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let spool = dir.path().join("spool");
        let log = start(&path, 4096, 1);
        let mut src = source(&log, &spool, 1 << 30);
        send(&log, &["file"; 150], 0);
        drop(log);
        let first = src.read(4096, &HashSet::new()).unwrap();
        src.ack(first[0].end, first[0].last_hash.as_deref(), 3);
        src.save_cursor(3).unwrap();
        let acked = lines(&first[..1]).len() as u64;
        drop(src);
        let held = held_files(&path);
        assert!(held.len() > 2, "{held:?}");
        // One deleted behind the agent's back while it runs: still read.
        let log = start(&path, 4096, 1);
        let mut src = source(&log, &spool, 1 << 30);
        std::fs::remove_file(&held[1].1).unwrap();
        send(&log, &["exec"; 10], 150);
        drop(log);
        let messages = drain(&mut src, &HashSet::new());
        assert!(messages.iter().all(|m| m.kind != "loss"));
        assert_eq!(ns(&messages), (acked..160).collect::<Vec<_>>());
        assert_eq!(held_files(&path), []);
    }

    #[test]
    fn lines_the_stream_holds_are_skipped_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = start(&path, 1 << 20, 2);
        let mut src = source(&log, &dir.path().join("spool"), 1 << 30);
        send(&log, &["file"; 10], 0);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let all: Vec<&str> = text.lines().collect();
        let stored: HashSet<String> = [2, 3, 9]
            .iter()
            .map(|&i| sealed_hash(all[i]).unwrap().to_string())
            .collect();
        let messages = drain(&mut src, &stored);
        assert_eq!(ns(&messages), [0, 1, 4, 5, 6, 7, 8]);
        // The last message acknowledges the held line after the others.
        assert!(messages.last().unwrap().payload.is_none());
        assert!(src.is_drained());
    }

    #[test]
    fn a_restart_reads_on_after_what_was_acknowledged_wherever_the_file_went() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let spool = dir.path().join("spool");
        let log = start(&path, 1 << 20, 2);
        let mut src = source(&log, &spool, 1 << 30);
        send(&log, &["file", "file", "exec", "exec", "file"], 0);
        drop(log);
        // Two messages sent; the first acknowledged.
        let batch = src.read(1 << 20, &HashSet::new()).unwrap();
        assert_eq!(batch.len(), 3);
        src.ack(batch[0].end, batch[0].last_hash.as_deref(), 7);
        src.save_cursor(7).unwrap();
        drop(src);
        let resumed = |path: &Path| {
            let log = start(path, 1 << 20, 2);
            let mut src = source(&log, &spool, 1 << 30);
            assert_eq!(src.acked_at(), 7);
            send(&log, &["perm"], 5);
            drop(log);
            let got = ns(&drain(&mut src, &HashSet::new()));
            src.save_cursor(0).unwrap();
            got
        };
        assert_eq!(resumed(&path), [2, 3, 4, 5]);
        // The same log restored as a copy (another inode): found by the
        // hash of the last line acknowledged.
        let copy = dir.path().join("copy.jsonl");
        std::fs::copy(&path, &copy).unwrap();
        assert_eq!(resumed(&copy), [5]);
    }

    #[test]
    fn the_first_start_sends_from_the_end_and_a_lost_place_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let spool = dir.path().join("spool");
        let log = start(&path, 1 << 20, 2);
        send(&log, &["file"; 3], 0);
        drop(log);
        let log = start(&path, 1 << 20, 2);
        let mut src = source(&log, &spool, 1 << 30);
        send(&log, &["file"; 2], 3);
        drop(log);
        let got = ns(&drain(&mut src, &HashSet::new()));
        assert_eq!(got, [3, 4], "the history before the output is not sent");
        drop(src);
        // The place is in no file the log holds: a loss of unknown size,
        // then every line the log holds.
        std::fs::write(
            spool.join(CURSOR),
            format!("v2 1 2 10 {} 0\n", "e".repeat(64)),
        )
        .unwrap();
        let log = start(&path, 1 << 20, 2);
        let mut src = source(&log, &spool, 1 << 30);
        drop(log);
        let messages = drain(&mut src, &HashSet::new());
        assert_eq!(messages[0].kind, "loss");
        let loss: serde_json::Value =
            serde_json::from_slice(messages[0].payload.as_ref().unwrap()).unwrap();
        assert_eq!(loss["loss"]["unknown"], true);
        assert_eq!(ns(&messages[1..]), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn files_before_the_first_start_are_not_held_when_they_rotate_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = start(&path, 4096, 2);
        send(&log, &["file"; 60], 0);
        drop(log);
        assert!(dir.path().join("audit.jsonl.2").exists());
        let log = start(&path, 4096, 2);
        let mut src = source(&log, &dir.path().join("spool"), 1 << 30);
        send(&log, &["file"; 60], 60);
        drop(log);
        let got = ns(&drain(&mut src, &HashSet::new()));
        assert_eq!(got, (60..120).collect::<Vec<_>>());
        assert_eq!(held_files(&path), [], "only files not sent are held");
    }
}
