//! The audit log's files, and reading them by byte offset while counting
//! every byte read (what `--stats` reports).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The live log and its rotated files, oldest first: `audit.jsonl.N` …
/// `audit.jsonl.1`, `audit.jsonl` (rotation renames `.1` to `.2` and so
/// on, so a higher number is older). Files left from a larger `max_files`
/// are older still and included.
pub fn discover(live: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = match live.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = live
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!("{name}.");
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(n) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        rotated.push((n, entry.path()));
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if live.exists() {
        files.push(live.to_path_buf());
    }
    Ok(files)
}

/// A file read by offset, counting the bytes it reads.
#[derive(Debug)]
pub struct Counted {
    pub file: File,
    pub len: u64,
    pub bytes_read: u64,
}

/// Bytes asked of the kernel at once when probing a line.
const CHUNK: usize = 4096;

impl Counted {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Counted {
            file,
            len,
            bytes_read: 0,
        })
    }

    /// Read into `buf` at `offset`; the number of bytes read.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, offset)?;
        self.bytes_read += n as u64;
        Ok(n)
    }

    /// The whole line that starts at `start`, without its newline, and the
    /// offset just past it; None when no complete line starts there (end
    /// of file, or a last line still being written).
    pub fn line_at(&mut self, start: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        let mut line = Vec::new();
        let mut at = start;
        let mut buf = [0u8; CHUNK];
        loop {
            let n = self.read_at(&mut buf, at)?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&buf[..i]);
                return Ok(Some((line, at + i as u64 + 1)));
            }
            line.extend_from_slice(&buf[..n]);
            at += n as u64;
        }
    }

    /// The start of the first line that begins at or after `offset`
    /// (resynchronising from the middle of a line), before `end`.
    pub fn next_line_start(&mut self, offset: u64, end: u64) -> std::io::Result<Option<u64>> {
        if offset == 0 {
            return Ok(Some(0));
        }
        // The byte before `offset` tells whether a line starts right there.
        let mut at = offset - 1;
        let mut buf = [0u8; CHUNK];
        while at < end {
            let n = self.read_at(&mut buf, at)?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                let start = at + i as u64 + 1;
                return Ok((start < end).then_some(start));
            }
            at += n as u64;
        }
        Ok(None)
    }

    /// The last complete line (ending in a newline) and its start; bytes
    /// after the last newline are a record still being written, or cut
    /// short, and are not a line.
    pub fn last_line(&mut self) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        let len = self.len;
        // Find the last newline: the end of the last complete line.
        let mut end = None;
        let mut at = len;
        let mut buf = vec![0u8; CHUNK];
        while at > 0 && end.is_none() {
            let from = at.saturating_sub(CHUNK as u64);
            let n = self.read_at(&mut buf[..(at - from) as usize], from)?;
            end = buf[..n]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| from + i as u64);
            at = from;
        }
        let Some(end) = end else { return Ok(None) };
        // Then the newline before it: the line's start.
        let mut at = end;
        let mut start = 0;
        while at > 0 {
            let from = at.saturating_sub(CHUNK as u64);
            let n = self.read_at(&mut buf[..(at - from) as usize], from)?;
            if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
                start = from + i as u64 + 1;
                break;
            }
            at = from;
        }
        let mut line = vec![0u8; (end - start) as usize];
        let mut got = 0;
        while got < line.len() {
            let n = self.read_at(&mut line[got..], start + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        line.truncate(got);
        Ok(Some((line, start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_come_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        for name in [
            "audit.jsonl",
            "audit.jsonl.1",
            "audit.jsonl.10",
            "audit.jsonl.2",
            "audit.jsonl.bak",
            "other.jsonl.3",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = discover(&live)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl.10",
                "audit.jsonl.2",
                "audit.jsonl.1",
                "audit.jsonl"
            ]
        );
    }

    #[test]
    fn lines_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "x".repeat(10_000);
        std::fs::write(&path, format!("one\n{long}\nthree\nfour-in-progr")).unwrap();
        let mut f = Counted::open(&path).unwrap();
        assert_eq!(f.line_at(0).unwrap(), Some((b"one".to_vec(), 4)));
        assert_eq!(f.next_line_start(4, f.len).unwrap(), Some(4));
        assert_eq!(f.next_line_start(5, f.len).unwrap(), Some(10_005));
        let (line, next) = f.line_at(4).unwrap().unwrap();
        assert_eq!((line.len(), next), (10_000, 10_005));
        // The unfinished last line is not a line.
        assert_eq!(f.line_at(10_011).unwrap(), None);
        assert_eq!(f.last_line().unwrap(), Some((b"three".to_vec(), 10_005)));
        assert!(f.bytes_read > 0);
        std::fs::write(&path, "only line\n").unwrap();
        let mut f = Counted::open(&path).unwrap();
        assert_eq!(f.last_line().unwrap(), Some((b"only line".to_vec(), 0)));
        std::fs::write(&path, "no newline").unwrap();
        assert_eq!(Counted::open(&path).unwrap().last_line().unwrap(), None);
    }
}
