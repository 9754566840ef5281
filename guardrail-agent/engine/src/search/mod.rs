//! `guardrail log search`: the records of the audit log (live and rotated
//! files) in a time range that meet some [`criteria`].
//!
//! A time-bounded query does not read the whole log. Rotation keeps files
//! in time order, and the writer appends records in the order the agent
//! emits them, so:
//!
//! - a file whose **last** record is older than `--since` is skipped after
//!   reading only that record (found by reading backwards from the end);
//! - in the first file that is not, the start is found by **binary
//!   search** on byte offsets: seek to the middle, resynchronise to the
//!   next line, read that record's `time`;
//! - reading stops at the first record past `--until`.
//!
//! Times are ordered only to within [`SLACK`]: two CPUs finishing
//! syscalls at the same moment may have their records written in the
//! other order, and a `log_gap` record carries the time it was written,
//! not the time of the records it reports. The search therefore starts
//! `SLACK` early and stops `SLACK` late, and decides on each record by its
//! own time. A wall clock stepped back across an agent restart breaks the
//! order for real: search without `--since` then.
//!
//! `--verify` checks the hash chain of what it reads. A record's link to
//! the one before it can only be checked with that record in hand, so
//! with `--verify` each file the search touches is read from its first
//! line (no binary search); a skipped file's last record is taken as the
//! link into the next file, unverified itself.

pub mod criteria;
pub mod files;
#[cfg(test)]
pub(crate) mod testlog;
pub mod time;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::chain::{self, Verifier};
use crate::event::{Body, Event};
use crate::process_join::{self, Joined, ProcessJoin, REDEFINED_WITHIN};
pub use criteria::{Criteria, CriteriaError, Matcher};
use files::Counted;

/// How far out of time order two records may be written (see above).
pub const SLACK: SignedDuration = SignedDuration::from_secs(5);

/// The binary search stops narrowing at this many bytes, and reads on.
const WINDOW: u64 = 64 << 10;

/// One record of the log.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Event(Box<Event>),
    /// The writer could not keep `lost` records (docs/audit-log.md).
    Gap {
        time: String,
        lost: u64,
    },
}

#[derive(Deserialize)]
struct GapRecord {
    kind: String,
    time: String,
    lost: u64,
}

impl Parsed {
    /// Parse one line of the log; why not, if it is not a record.
    pub fn parse(text: &str) -> Result<Parsed, String> {
        match serde_json::from_str::<Event>(text) {
            Ok(e) => Ok(Parsed::Event(Box::new(e))),
            Err(event_error) => match serde_json::from_str::<GapRecord>(text) {
                Ok(g) if g.kind == "log_gap" => Ok(Parsed::Gap {
                    time: g.time,
                    lost: g.lost,
                }),
                _ => Err(event_error.to_string()),
            },
        }
    }

    /// [`Parsed::parse`], each distinct process object parsed once for
    /// the lines `memo` sees (see [`Event::from_line`]). Why a line is not
    /// a record is said by the plain reader, in its words.
    pub fn parse_with(text: &str, memo: &mut crate::event::ProcessMemo) -> Result<Parsed, String> {
        match Event::from_line(text, memo) {
            Ok(e) => Ok(Parsed::Event(Box::new(e))),
            Err(_) => Parsed::parse(text),
        }
    }

    pub fn time(&self) -> &str {
        match self {
            Parsed::Event(e) => &e.time,
            Parsed::Gap { time, .. } => time,
        }
    }

    /// Records this one says were lost (kernel `loss` or writer `log_gap`).
    pub fn lost(&self) -> u64 {
        match self {
            Parsed::Event(e) => match &e.body {
                Body::Loss { loss } => loss.count,
                _ => 0,
            },
            Parsed::Gap { lost, .. } => *lost,
        }
    }
}

/// Where a line is: its number when its file was read from the start,
/// otherwise (after a binary search) its byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Line(u64),
    Byte(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub at: At,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            At::Line(n) => write!(f, "{}:{n}", self.file),
            At::Byte(b) => write!(f, "{}: the record at byte {b}", self.file),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    /// `--verify` found the chain broken.
    #[error("{place}: {why}")]
    Broken { place: Place, why: &'static str },
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

fn io_error(file: &str) -> impl FnOnce(std::io::Error) -> SearchError + '_ {
    move |source| SearchError::Io {
        file: file.to_string(),
        source,
    }
}

#[derive(Clone, Debug, Default)]
pub struct Query {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub verify: bool,
    /// The last file is being appended to and will be read on (`tail
    /// --since`): its unfinished last line is not worth a note.
    pub follow: bool,
}

/// What a search read, for `--stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Files given.
    pub files: u64,
    /// Files passed over whole: their last record is before `--since`.
    pub files_skipped: u64,
    /// The size of every file given.
    pub bytes_total: u64,
    pub bytes_read: u64,
    /// Lines parsed (binary-search probes included).
    pub records_parsed: u64,
    /// Records in the time range.
    pub in_range: u64,
    pub matched: u64,
    /// Records lost, as `loss` and `log_gap` records in the range say.
    pub lost: u64,
    /// Records whose chain was checked (`--verify`).
    pub verified: u64,
    /// Events in the range naming their process by a reference whose
    /// definition was not found: not matched, not handed on.
    pub unjoined: u64,
}

/// A record that matched.
pub struct Found<'a> {
    /// The line as stored (with its `chain` member).
    pub line: &'a str,
    pub record: &'a Parsed,
    pub place: &'a Place,
}

impl Found<'_> {
    /// The event as JSON in full, without its `chain` member: the stored
    /// line, with the members of a process named by reference put back.
    pub fn event_json(&self) -> String {
        let full = self.full_line();
        chain::open(&full).map_or_else(|| full.to_string(), |o| o.event_json)
    }

    /// The line as stored, with the members of a process named by
    /// reference put back (its `chain` member then no longer verifies).
    pub fn full_line(&self) -> std::borrow::Cow<'_, str> {
        match self.record {
            Parsed::Event(e) => e
                .body
                .process()
                .and_then(|p| process_join::full_line(self.line, p))
                .map_or(self.line.into(), Into::into),
            Parsed::Gap { .. } => self.line.into(),
        }
    }
}

/// What the consumer of found records wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Where reading of the last file stopped, to read on from (`tail`).
#[derive(Debug)]
pub struct Position {
    pub path: PathBuf,
    name: String,
    file: Counted,
    offset: u64,
    at: At,
}

pub struct Search {
    query: Query,
    matcher: Matcher,
    verifier: Option<Verifier>,
    pub stats: Stats,
    /// Lines that are not records, unfinished lines: one note each.
    pub notes: Vec<String>,
    /// Rules that decided on an event in the time range.
    pub rules_seen: BTreeSet<String>,
    /// The `seq` and time of the last event read, in the range or not
    /// (the last record of a skipped file counts as read): where the log
    /// ends, for `tail --since`.
    pub last_seen: Option<(u64, Timestamp)>,
    /// Past `--until`, or the consumer asked to stop.
    stopped: bool,
    /// The process versions defined in the lines read.
    join: ProcessJoin,
    /// The processes of recent lines, each object parsed once.
    memo: crate::event::ProcessMemo,
    /// Where to look for definitions of the file being read before where
    /// reading began, once a reference needs one.
    behind: Option<Behind>,
}

/// The part of a file before where a search began reading it (after a
/// binary search), where the definitions of the versions its first
/// references name are.
struct Behind {
    file: Counted,
    /// Reading began here.
    start: u64,
    /// Definitions older than this are not looked for: the writer defines
    /// a version again in every file and at least once an hour.
    oldest: Timestamp,
}

/// The `seq` (events only) and `time` of a line written by the agent,
/// without parsing it: events start `{"seq":N,"time":"…"`, gaps
/// `{"kind":"log_gap","time":"…"`. None for anything else.
fn quick_time(text: &str) -> Option<(Option<u64>, Timestamp)> {
    let (seq, rest) = if let Some(rest) = text.strip_prefix("{\"seq\":") {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let seq = rest[..digits].parse().ok()?;
        (Some(seq), rest[digits..].strip_prefix(",\"time\":\"")?)
    } else {
        let rest = text.strip_prefix("{\"kind\":\"log_gap\",\"time\":\"")?;
        (None, rest)
    };
    let time = rest.get(..rest.find('"')?)?;
    Some((seq, time.parse().ok()?))
}

/// An event's time, for skipping and probing: log_gap records carry the
/// time they were written, not an event's, and are passed over.
fn event_time(line: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(line).ok()?;
    match quick_time(text) {
        Some((Some(_), t)) => Some(t),
        Some((None, _)) => None,
        None => match Parsed::parse(text).ok()? {
            Parsed::Event(e) => e.time.parse().ok(),
            Parsed::Gap { .. } => None,
        },
    }
}

/// Reads a [`Counted`] file sequentially from an offset.
struct Sequential<'f> {
    file: &'f mut Counted,
    offset: u64,
}

impl Read for Sequential<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl Search {
    pub fn new(query: Query, matcher: Matcher) -> Self {
        Search {
            verifier: query.verify.then(Verifier::new),
            query,
            matcher,
            stats: Stats::default(),
            notes: Vec::new(),
            rules_seen: BTreeSet::new(),
            last_seen: None,
            stopped: false,
            join: ProcessJoin::default(),
            memo: Default::default(),
            behind: None,
        }
    }

    /// Search `files`, oldest first, handing each match to `sink`. Returns
    /// where the last file was left, to read on from.
    pub fn run(
        &mut self,
        files: &[PathBuf],
        sink: &mut dyn FnMut(&Found) -> std::io::Result<Flow>,
    ) -> Result<Option<Position>, SearchError> {
        let mut last = None;
        for path in files {
            let name = path.display().to_string();
            let meta = std::fs::metadata(path).map_err(io_error(&name))?;
            self.stats.files += 1;
            self.stats.bytes_total += meta.len();
        }
        for path in files {
            if self.stopped {
                break;
            }
            let name = path.display().to_string();
            let mut file = Counted::open(path).map_err(io_error(&name))?;
            // Each file defines the versions it names: another file's
            // definitions (another host's log, or before a clock step)
            // must never complete this one's references.
            self.join = ProcessJoin::default();
            let start = self.start(&name, &mut file)?;
            let (offset, at) = match start {
                Start::Skip(end) => {
                    self.stats.files_skipped += 1;
                    (end, At::Byte(end))
                }
                Start::Past => {
                    self.stopped = true;
                    (0, At::Line(1))
                }
                Start::At(offset, at) => {
                    self.behind = match (offset, self.query.since, file.file.try_clone()) {
                        (1.., Some(since), Ok(dup)) => Some(Behind {
                            file: Counted {
                                file: dup,
                                len: file.len,
                                bytes_read: 0,
                            },
                            start: offset,
                            // Twice the writer's hour: it counts the hour
                            // on a clock that stops in a suspend, and
                            // records wait while the disk refuses them.
                            oldest: since - REDEFINED_WITHIN * 2 - SLACK,
                        }),
                        _ => None,
                    };
                    let last_file = Some(path) == files.last();
                    let note_unfinished = !(self.query.follow && last_file);
                    self.scan(&name, &mut file, offset, at, note_unfinished, sink)?
                }
            };
            self.stats.bytes_read += file.bytes_read;
            file.bytes_read = 0;
            // Reading on (`tail --since`) may still need what lies behind.
            if !(self.query.follow && Some(path) == files.last()) {
                self.forget_behind();
            }
            last = Some(Position {
                path: path.clone(),
                name,
                file,
                offset,
                at,
            });
        }
        Ok(last)
    }

    /// Read on from `pos` to the end of the log, across a rotation.
    pub fn follow(
        &mut self,
        pos: &mut Position,
        sink: &mut dyn FnMut(&Found) -> std::io::Result<Flow>,
    ) -> Result<(), SearchError> {
        loop {
            (pos.offset, pos.at) =
                self.scan(&pos.name, &mut pos.file, pos.offset, pos.at, false, sink)?;
            if self.stopped {
                return Ok(());
            }
            let ours = pos.file.file.metadata().map_err(io_error(&pos.name))?;
            let rotated = std::fs::metadata(&pos.path)
                .is_ok_and(|now| (now.dev(), now.ino()) != (ours.dev(), ours.ino()));
            if !rotated {
                return Ok(());
            }
            // The writer renames a file only after its last write: what
            // was appended since the scan above is all there is.
            (pos.offset, pos.at) =
                self.scan(&pos.name, &mut pos.file, pos.offset, pos.at, true, sink)?;
            if self.stopped {
                return Ok(());
            }
            pos.file = Counted::open(&pos.path).map_err(io_error(&pos.name))?;
            (pos.offset, pos.at) = (0, At::Line(1));
            self.join = ProcessJoin::default();
            self.forget_behind();
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Where to start reading `file`, or whether to skip it.
    fn start(&mut self, name: &str, file: &mut Counted) -> Result<Start, SearchError> {
        if let Some(until) = self.query.until {
            let first = file.line_at(0).map_err(io_error(name))?;
            if first
                .and_then(|(line, _)| event_time(&line))
                .is_some_and(|t| t > until + SLACK)
            {
                return Ok(Start::Past);
            }
        }
        let Some(since) = self.query.since else {
            return Ok(Start::At(0, At::Line(1)));
        };
        let target = since - SLACK;
        if let Some((line, start)) = file.last_line().map_err(io_error(name))? {
            if event_time(&line).is_some_and(|t| t < target) {
                let text = std::str::from_utf8(&line).ok();
                if let Some((Some(seq), t)) = text.and_then(quick_time) {
                    self.last_seen = Some((seq, t));
                }
                if let Some(v) = &mut self.verifier {
                    if let Some(sealed) = std::str::from_utf8(&line).ok().and_then(chain::open) {
                        v.expect_after(sealed.hash);
                    }
                }
                return Ok(Start::Skip(start + line.len() as u64 + 1));
            }
        }
        if self.query.verify {
            return Ok(Start::At(0, At::Line(1)));
        }
        let offset = self.bisect(name, file, target)?;
        Ok(if offset == 0 {
            Start::At(0, At::Line(1))
        } else {
            Start::At(offset, At::Byte(offset))
        })
    }

    /// A line start at or before the first event at or after `target`.
    fn bisect(
        &mut self,
        name: &str,
        file: &mut Counted,
        target: Timestamp,
    ) -> Result<u64, SearchError> {
        // Invariant: the events before `lo` are older than `target`; the
        // event at `hi` (if any) is not.
        let (mut lo, mut hi) = (0, file.len);
        while hi - lo > WINDOW {
            let mid = lo + (hi - lo) / 2;
            let Some(start) = file.next_line_start(mid, hi).map_err(io_error(name))? else {
                break;
            };
            // The first line from there with an event's time.
            let mut probe = start;
            let mut found = None;
            while probe < hi {
                let Some((line, next)) = file.line_at(probe).map_err(io_error(name))? else {
                    break;
                };
                self.stats.records_parsed += 1;
                if let Some(t) = event_time(&line) {
                    found = Some((t, next));
                    break;
                }
                probe = next;
            }
            match found {
                Some((t, next)) if t < target => lo = next,
                Some(_) => hi = start,
                // Nothing usable between the middle and `hi`: read it all.
                None => break,
            }
        }
        Ok(lo)
    }

    /// Read the complete lines of `file` from `offset` to its end (or the
    /// end of the range); where that left off.
    fn scan(
        &mut self,
        name: &str,
        file: &mut Counted,
        mut offset: u64,
        mut at: At,
        note_unfinished: bool,
        sink: &mut dyn FnMut(&Found) -> std::io::Result<Flow>,
    ) -> Result<(u64, At), SearchError> {
        let mut reader = BufReader::with_capacity(
            1 << 16,
            Sequential {
                file: &mut *file,
                offset,
            },
        );
        let mut buf = Vec::new();
        while !self.stopped {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_error(name))?;
            if n == 0 {
                break;
            }
            let place = Place {
                file: name.to_string(),
                at,
            };
            if buf.last() != Some(&b'\n') {
                // Left for the next read if the file grows.
                if note_unfinished {
                    self.notes.push(format!(
                        "{place}: the last record is unfinished (being written, or cut short by a crash); not read{}",
                        if self.query.verify { " nor verified" } else { "" }
                    ));
                }
                break;
            }
            buf.pop();
            self.line(&buf, &place, sink)?;
            offset += n as u64;
            at = match at {
                At::Line(l) => At::Line(l + 1),
                At::Byte(_) => At::Byte(offset),
            };
        }
        Ok((offset, at))
    }

    fn line(
        &mut self,
        bytes: &[u8],
        place: &Place,
        sink: &mut dyn FnMut(&Found) -> std::io::Result<Flow>,
    ) -> Result<(), SearchError> {
        self.stats.records_parsed += 1;
        let text = std::str::from_utf8(bytes);
        if let Some(v) = &mut self.verifier {
            let checked = match text {
                Ok(t) => v.check(t),
                Err(_) => Err("not a sealed record (edited, truncated or foreign)"),
            };
            checked.map_err(|why| SearchError::Broken {
                place: place.clone(),
                why,
            })?;
            self.stats.verified += 1;
        }
        let Ok(text) = text else {
            self.notes
                .push(format!("{place}: not UTF-8 text, so not a record; skipped"));
            return Ok(());
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        let mut parsed = None;
        let (seq, time) = match quick_time(text) {
            Some(st) => st,
            None => match Parsed::parse_with(text, &mut self.memo) {
                Ok(p) => match p.time().parse::<Timestamp>() {
                    Ok(t) => {
                        let seq = match &p {
                            Parsed::Event(e) => Some(e.seq),
                            Parsed::Gap { .. } => None,
                        };
                        parsed = Some(p);
                        (seq, t)
                    }
                    Err(e) => {
                        self.notes
                            .push(format!("{place}: its time is not RFC 3339 ({e}); skipped"));
                        return Ok(());
                    }
                },
                Err(why) => {
                    self.notes
                        .push(format!("{place}: not a guardrail record ({why}); skipped"));
                    return Ok(());
                }
            },
        };
        if let Some(seq) = seq {
            self.last_seen = Some((seq, time));
            if self.join.saw(seq) {
                // What lies behind was written by another run.
                self.forget_behind();
            }
        }
        if self.query.since.is_some_and(|s| time < s) {
            // Not in the range, but what it defines may be named in it.
            self.learn_definition(bytes, text);
            return Ok(());
        }
        if let Some(until) = self.query.until {
            if time > until {
                // What it defines may be named by a record still in range.
                self.learn_definition(bytes, text);
                // Records up to SLACK later may still be in range.
                self.stopped = time > until + SLACK;
                return Ok(());
            }
        }
        let mut record = match parsed {
            Some(p) => p,
            None => match Parsed::parse_with(text, &mut self.memo) {
                Ok(p) => p,
                Err(why) => {
                    self.notes
                        .push(format!("{place}: not a guardrail record ({why}); skipped"));
                    return Ok(());
                }
            },
        };
        if let Parsed::Event(e) = &mut record {
            if self.join.join(e) == Joined::Missing {
                self.look_behind(place)?;
                if self.join.join(e) == Joined::Missing {
                    self.stats.unjoined += 1;
                    return Ok(());
                }
            }
        }
        self.stats.in_range += 1;
        self.stats.lost += record.lost();
        if let Parsed::Event(e) = &record {
            if let Some(d) = &e.decision {
                if !self.rules_seen.contains(&d.rule) {
                    self.rules_seen.insert(d.rule.clone());
                }
            }
        }
        if self.matcher.matches(&record) {
            self.stats.matched += 1;
            let found = Found {
                line: text,
                record: &record,
                place,
            };
            if sink(&found).map_err(SearchError::Output)? == Flow::Stop {
                self.stopped = true;
            }
        }
        Ok(())
    }
}

impl Search {
    /// Learn the process version a line passed over defines, if it does.
    fn learn_definition(&mut self, bytes: &[u8], text: &str) {
        if process_join::defines_a_version(bytes) {
            if let Ok(Parsed::Event(mut e)) = Parsed::parse(text) {
                self.join.join(&mut e);
            }
        }
    }

    fn forget_behind(&mut self) {
        if let Some(b) = self.behind.take() {
            self.stats.bytes_read += b.file.bytes_read;
        }
    }

    /// Learn the definitions in the part of the file before where reading
    /// began, latest first, back to its start, to where an earlier run of
    /// the agent wrote (its versions are others), or to definitions too
    /// old to be named any more. Once per file.
    fn look_behind(&mut self, place: &Place) -> Result<(), SearchError> {
        let Some(mut behind) = self.behind.take() else {
            return Ok(());
        };
        let mut end = behind.start;
        let mut carry: Vec<u8> = Vec::new();
        // The run reading began in: that of the line it began at.
        let first = behind
            .file
            .line_at(behind.start)
            .map_err(io_error(&place.file))?;
        let mut later_seq = first
            .and_then(|(line, _)| quick_time(std::str::from_utf8(&line).ok()?))
            .and_then(|(seq, _)| seq);
        let mut chunk = vec![0u8; 1 << 16];
        'back: while end > 0 {
            let from = end.saturating_sub(chunk.len() as u64);
            let want = (end - from) as usize;
            let n = behind
                .file
                .read_at(&mut chunk[..want], from)
                .map_err(io_error(&place.file))?;
            if n < want {
                break;
            }
            // `carry` is the start of a line whose beginning is in this
            // chunk (or the file's first line).
            let mut block = chunk[..want].to_vec();
            block.extend_from_slice(&carry);
            let mut line_end = block.len();
            for nl in memchr::memrchr_iter(b'\n', &block) {
                let line = &block[nl + 1..line_end];
                line_end = nl;
                if self.behind_line(line, &mut later_seq, behind.oldest) {
                    break 'back;
                }
            }
            carry = block[..line_end].to_vec();
            if from == 0 {
                if self.behind_line(&carry, &mut later_seq, behind.oldest) {
                    break;
                }
                carry.clear();
            }
            end = from;
        }
        self.stats.bytes_read += behind.file.bytes_read;
        Ok(())
    }

    /// Learn from one line read backwards; true to stop there.
    fn behind_line(&mut self, line: &[u8], later_seq: &mut Option<u64>, oldest: Timestamp) -> bool {
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        let Some((seq, time)) = quick_time(text) else {
            return false;
        };
        if time < oldest {
            return true;
        }
        if let Some(seq) = seq {
            // Going back, `seq` falls; where it rises, a new run began
            // after this line, which named other versions by these numbers.
            if later_seq.is_some_and(|later| seq >= later) {
                return true;
            }
            *later_seq = Some(seq);
        }
        if process_join::defines_a_version(line) {
            if let Ok(Parsed::Event(e)) = Parsed::parse(text) {
                self.join.learn_earlier(&e);
            }
            // The nearest definitions are the ones named: stop before
            // learning more would forget them.
            if self.join.full() {
                return true;
            }
        }
        false
    }
}

enum Start {
    /// Skip the file; its last complete line ends here.
    Skip(u64),
    /// The file (and every later one) is past `--until`.
    Past,
    At(u64, At),
}

#[cfg(test)]
mod tests;
