//! A bounded on-disk queue of records, in order, that survives a restart.
//!
//! The NATS output writes every record here first and publishes from here,
//! so that a server that is down or slow never holds up the output's
//! thread, and what was not yet acknowledged is still there after the
//! agent restarts. Records are lines in numbered segment files
//! (`000000000001.seg` …); `cursor` names the first record the server has
//! not acknowledged. Fully acknowledged segments are deleted, except the
//! newest: its last record is where the output's chain continues after a
//! restart.
//!
//! Writer (the output's thread) and reader (the publisher) share only the
//! segment list and the positions, under one lock; each has its own file
//! handles. The reader sees a record once the writer has flushed it whole.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A place in the spool: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {dir}: {what}: {source}")]
    Io {
        dir: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("spool full ({used} of {limit} bytes in use)")]
    Full { used: u64, limit: u64 },
}

#[derive(Debug)]
struct Shared {
    /// Segments on disk, oldest first, with the bytes of whole records the
    /// writer has flushed to each.
    segments: VecDeque<(u64, u64)>,
    /// The first record not yet acknowledged.
    acked: Pos,
    /// Acknowledged since the cursor file was last written.
    unsaved: bool,
}

impl Shared {
    fn used(&self) -> u64 {
        self.segments.iter().map(|(_, len)| len).sum()
    }
}

/// The spool's state shared by its writer and its reader.
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    segment_bytes: u64,
    shared: Mutex<Shared>,
    /// Woken when records were flushed (the reader is async).
    flushed: tokio::sync::Notify,
}

/// The writing end (one per spool).
pub struct Writer {
    spool: Arc<Spool>,
    file: BufWriter<File>,
    segment: u64,
    /// Bytes of whole records written to the current segment, flushed or
    /// not.
    written: u64,
    /// Bytes of records written but not yet counted as flushed.
    pending: u64,
}

/// The last whole record of a segment (within its last 1 MiB: entries
/// are at most about 64 KiB), if it has one.
fn last_whole_record(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(1 << 20))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let whole = tail.iter().rposition(|&b| b == b'\n')?;
    let line = tail[..whole].rsplit(|&b| b == b'\n').next()?;
    (!line.is_empty()).then(|| String::from_utf8_lossy(line).into_owned())
}

fn seg_name(id: u64) -> String {
    format!("{id:012}.seg")
}

impl Spool {
    /// Open (or create) the spool in `dir`, at most `limit` bytes on disk.
    /// A record cut short by a crash is removed. Returns the spool, its
    /// writer, and the last whole record (where a chain continues).
    pub fn open(dir: &Path, limit: u64) -> Result<(Arc<Self>, Writer, Option<String>), SpoolError> {
        let io = |what: &'static str| {
            let dir = dir.display().to_string();
            move |source| SpoolError::Io { dir, what, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create the directory"))?;
        let mut ids = segment_ids(dir).map_err(io("cannot list the directory"))?;
        ids.sort_unstable();
        let acked = read_cursor(&dir.join("cursor")).unwrap_or_default();
        let mut segments = VecDeque::new();
        let mut last_record = None;
        // Sent segments, removed once the last record is known.
        let mut sent = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let path = dir.join(seg_name(id));
            let newest = i + 1 == ids.len();
            if id < acked.segment && !newest {
                sent.push(path);
                continue;
            }
            let mut len = std::fs::metadata(&path)
                .map_err(io("cannot read a segment"))?
                .len();
            if newest {
                let text = std::fs::read(&path).map_err(io("cannot read a segment"))?;
                // A record is whole once its newline is written.
                let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if whole as u64 != len {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io("cannot repair a segment"))?;
                    f.set_len(whole as u64)
                        .map_err(io("cannot repair a segment"))?;
                    len = whole as u64;
                }
                let text = &text[..whole];
                last_record = text
                    .strip_suffix(b"\n")
                    .map(|t| t.rsplit(|&b| b == b'\n').next().unwrap_or(t))
                    .map(|l| String::from_utf8_lossy(l).into_owned());
            }
            segments.push_back((id, len));
        }
        if last_record.is_none() {
            // The newest segment holds no whole record (just begun): the
            // last record is in the one before it.
            last_record = ids
                .iter()
                .rev()
                .skip(1)
                .find_map(|&id| last_whole_record(&dir.join(seg_name(id))));
        }
        for path in sent {
            std::fs::remove_file(&path).map_err(io("cannot remove a sent segment"))?;
        }
        let segment = segments.back().map_or(1, |(id, _)| *id);
        if segments.is_empty() {
            segments.push_back((segment, 0));
        }
        let written = segments.back().map_or(0, |(_, len)| *len);
        let acked = if segments.front().is_some_and(|(id, _)| *id > acked.segment) {
            Pos {
                segment: segments[0].0,
                offset: 0,
            }
        } else {
            acked
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(seg_name(segment)))
            .map_err(io("cannot open a segment"))?;
        let spool = Arc::new(Spool {
            dir: dir.to_path_buf(),
            limit,
            // Small enough that acknowledged records are given back to the
            // disk well before the spool is full.
            segment_bytes: (limit / 8).clamp(4096, 8 << 20),
            shared: Mutex::new(Shared {
                segments,
                acked,
                unsaved: false,
            }),
            flushed: tokio::sync::Notify::new(),
        });
        let writer = Writer {
            spool: spool.clone(),
            file: BufWriter::with_capacity(64 << 10, file),
            segment,
            written,
            pending: 0,
        };
        Ok((spool, writer, last_record))
    }

    fn io(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> SpoolError {
        let dir = self.dir.display().to_string();
        move |source| SpoolError::Io { dir, what, source }
    }

    /// Bytes of segment files on disk.
    pub fn used(&self) -> u64 {
        self.shared.lock().unwrap().used()
    }

    /// Whether every record written and flushed has been acknowledged.
    pub fn is_drained(&self) -> bool {
        let s = self.shared.lock().unwrap();
        let (seg, len) = *s.segments.back().unwrap();
        s.acked
            >= Pos {
                segment: seg,
                offset: len,
            }
    }

    /// The first record not acknowledged.
    pub fn acked(&self) -> Pos {
        self.shared.lock().unwrap().acked
    }

    /// Completes once records were flushed since the last such wait.
    pub async fn flushed(&self) {
        self.flushed.notified().await
    }

    /// Whole records from `pos` on, at most about `max_bytes` of them (at
    /// least one), each with the position after it: slices of one buffer,
    /// as written (the writer appends `&str`s, so they are UTF-8).
    pub fn read(&self, pos: Pos, max_bytes: usize) -> Result<Vec<(Bytes, Pos)>, SpoolError> {
        let mut pos = pos;
        let (seg, len, next) = {
            let s = self.shared.lock().unwrap();
            let Some(i) = s.segments.iter().position(|(id, _)| *id >= pos.segment) else {
                return Ok(vec![]);
            };
            if s.segments[i].0 > pos.segment {
                pos = Pos {
                    segment: s.segments[i].0,
                    offset: 0,
                };
            }
            let (seg, len) = s.segments[i];
            (seg, len, s.segments.get(i + 1).map(|(id, _)| *id))
        };
        if pos.offset >= len {
            return match next {
                Some(n) => self.read(
                    Pos {
                        segment: n,
                        offset: 0,
                    },
                    max_bytes,
                ),
                None => Ok(vec![]),
            };
        }
        let file =
            File::open(self.dir.join(seg_name(seg))).map_err(self.io("cannot open a segment"))?;
        let want = (len - pos.offset).min(max_bytes.max(1) as u64) as usize;
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, pos.offset)
            .map_err(self.io("cannot read a segment"))?;
        let mut whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole == 0 {
            // One record longer than max_bytes: read it whole.
            let mut rest = vec![0u8; (len - pos.offset) as usize];
            file.read_exact_at(&mut rest, pos.offset)
                .map_err(self.io("cannot read a segment"))?;
            whole = rest.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            buf = rest;
        }
        buf.truncate(whole);
        let buf = Bytes::from(buf);
        let mut out = Vec::new();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &buf) {
            out.push((
                buf.slice(start..end),
                Pos {
                    segment: seg,
                    offset: pos.offset + end as u64 + 1,
                },
            ));
            start = end + 1;
        }
        Ok(out)
    }

    /// Everything before `pos` is acknowledged: segments wholly before it
    /// are deleted (never the newest).
    pub fn ack(&self, pos: Pos) -> Result<(), SpoolError> {
        let mut gone = Vec::new();
        {
            let mut s = self.shared.lock().unwrap();
            if pos <= s.acked {
                return Ok(());
            }
            s.acked = pos;
            s.unsaved = true;
            while s.segments.len() > 1 {
                let (id, len) = s.segments[0];
                let done = id < pos.segment || (id == pos.segment && pos.offset >= len);
                if !done {
                    break;
                }
                s.segments.pop_front();
                gone.push(id);
            }
        }
        for id in gone {
            std::fs::remove_file(self.dir.join(seg_name(id)))
                .map_err(self.io("cannot remove a sent segment"))?;
        }
        Ok(())
    }

    /// Write the cursor file if acknowledgements moved it (a crash before
    /// this resends at most what was acknowledged since; the server drops
    /// those resends as duplicates).
    pub fn save_cursor(&self) -> Result<(), SpoolError> {
        let acked = {
            let mut s = self.shared.lock().unwrap();
            if !s.unsaved {
                return Ok(());
            }
            s.unsaved = false;
            s.acked
        };
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{} {}\n", acked.segment, acked.offset))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("cursor")))
            .map_err(self.io("cannot write the cursor"))
    }
}

/// Whether `dir` holds a spool's segments.
pub fn exists_in(dir: &Path) -> bool {
    segment_ids(dir).is_ok_and(|ids| !ids.is_empty())
}

/// Remove the spool in `dir` (its segments and cursor), once all sent.
pub fn remove(dir: &Path) {
    for id in segment_ids(dir).unwrap_or_default() {
        let _ = std::fs::remove_file(dir.join(seg_name(id)));
    }
    let _ = std::fs::remove_file(dir.join("cursor"));
}

/// The segments' numbers in `dir`, unsorted.
fn segment_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse::<u64>()
                .ok()
        })
        .collect())
}

fn read_cursor(path: &Path) -> Option<Pos> {
    let text = std::fs::read_to_string(path).ok()?;
    let (s, o) = text.trim().split_once(' ')?;
    Some(Pos {
        segment: s.parse().ok()?,
        offset: o.parse().ok()?,
    })
}

impl Writer {
    /// Whether a record of `bytes` (its newline included) would fit.
    pub fn room(&self, bytes: usize) -> Result<(), SpoolError> {
        let used = self.spool.used() + self.pending;
        if used + bytes as u64 > self.spool.limit {
            return Err(SpoolError::Full {
                used,
                limit: self.spool.limit,
            });
        }
        Ok(())
    }

    /// Append one record (a line without its newline). Refused, and
    /// nothing written, when it would take the spool over its limit.
    pub fn append(&mut self, record: &str) -> Result<(), SpoolError> {
        let size = record.len() as u64 + 1;
        self.room(size as usize)?;
        if self.written > 0 && self.written + size > self.spool.segment_bytes {
            self.roll()?;
        }
        self.file
            .write_all(record.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(self.spool.io("cannot write a segment"))?;
        self.written += size;
        self.pending += size;
        Ok(())
    }

    /// Make what was appended visible to the reader.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.file
            .flush()
            .map_err(self.spool.io("cannot write a segment"))?;
        {
            let mut s = self.spool.shared.lock().unwrap();
            if let Some(last) = s.segments.back_mut() {
                last.1 = self.written;
            }
        }
        self.pending = 0;
        self.spool.flushed.notify_one();
        Ok(())
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        let next = self.segment + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.spool.dir.join(seg_name(next)))
            .map_err(self.spool.io("cannot open a segment"))?;
        self.file = BufWriter::with_capacity(64 << 10, file);
        self.segment = next;
        self.written = 0;
        self.spool
            .shared
            .lock()
            .unwrap()
            .segments
            .push_back((next, 0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(spool: &Spool) -> Vec<String> {
        let mut pos = spool.acked();
        let mut out = vec![];
        loop {
            let batch = spool.read(pos, 100).unwrap();
            let Some(last) = batch.last() else { break };
            pos = last.1;
            out.extend(
                batch
                    .into_iter()
                    .map(|(r, _)| String::from_utf8(r.to_vec()).unwrap()),
            );
        }
        out
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w, last) = Spool::open(dir.path(), 32 << 10).unwrap();
        assert_eq!(last, None);
        for i in 0..500 {
            w.append(&format!("record {i}")).unwrap();
            if i == 10 {
                let seen = spool.read(Pos::default(), 100).unwrap();
                assert!(seen.is_empty(), "not flushed yet");
            }
        }
        w.flush().unwrap();
        let got = all(&spool);
        assert_eq!(got.len(), 500);
        assert_eq!(got[499], "record 499");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() >= 2,
            "several segments"
        );
        // Acknowledge the first 200, then restart.
        let mut pos = Pos::default();
        let mut n = 0;
        while n < 200 {
            let batch = spool.read(pos, 1).unwrap();
            pos = batch[0].1;
            n += 1;
        }
        spool.ack(pos).unwrap();
        spool.save_cursor().unwrap();
        drop((spool, w));
        let (spool, _w, last) = Spool::open(dir.path(), 32 << 10).unwrap();
        assert_eq!(last.as_deref(), Some("record 499"));
        let got = all(&spool);
        assert_eq!(got.first().map(String::as_str), Some("record 200"));
        assert_eq!(got.len(), 300);
    }

    #[test]
    fn a_full_spool_refuses_and_takes_records_again_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w, _) = Spool::open(dir.path(), 8192).unwrap();
        let rec = "x".repeat(99);
        let mut taken = 0;
        while w.append(&rec).is_ok() {
            taken += 1;
            w.flush().unwrap();
        }
        assert!(matches!(w.append(&rec), Err(SpoolError::Full { .. })));
        assert!(spool.used() <= 8192);
        assert!(taken >= 70, "{taken}");
        while let Some((_, end)) = spool.read(spool.acked(), 1 << 20).unwrap().pop() {
            spool.ack(end).unwrap();
        }
        assert!(spool.is_drained());
        w.append(&rec).unwrap();
    }

    #[test]
    fn a_record_cut_short_by_a_crash_is_dropped_at_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut w, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        w.append("one").unwrap();
        w.append("two").unwrap();
        w.flush().unwrap();
        drop(w);
        let seg = dir.path().join(seg_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"thr").unwrap();
        let (spool, _, last) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(last.as_deref(), Some("two"));
        assert_eq!(all(&spool), ["one", "two"]);
        drop(spool);
        // A segment just begun, still empty: the last record is the one
        // before it.
        std::fs::write(dir.path().join(seg_name(2)), b"").unwrap();
        let (_, _, last) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(last.as_deref(), Some("two"));
    }
}
