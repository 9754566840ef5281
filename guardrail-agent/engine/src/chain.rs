//! The audit log's hash chain.
//!
//! Each line is an event's JSON object with one more member appended last:
//! `"chain":{"prev":P,"hash":H}` where `H = SHA-256(P + "\n" + E)`, `E`
//! being the line's JSON without that member, and `P` the previous
//! record's `H` (64 zeros for the first record of a new log). Editing,
//! deleting, inserting or reordering any record breaks the chain at that
//! point, across rotated files too.

use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const MARK: &str = ",\"chain\":{\"prev\":\"";

pub fn hash(prev: &str, event_json: &str) -> String {
    digest(prev, event_json).as_str().to_owned()
}

/// [`hash`] as a value on the stack: the audit log's writer seals every
/// record with one, and a string per record (allocated, filled a byte at
/// a time and checked as UTF-8) cost a sixth of its hashing.
fn digest(prev: &str, event_json: &str) -> HexDigest {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(event_json.as_bytes());
    HexDigest::of(&h.finalize().into())
}

/// A SHA-256 digest in lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigest([u8; 64]);

impl HexDigest {
    fn of(bytes: &[u8; 32]) -> HexDigest {
        let mut out = [0u8; 64];
        hex_into(&mut out, bytes);
        HexDigest(out)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<String> for HexDigest {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// `bytes` in lower-case hex, two digits each.
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(&mut out, bytes);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `bytes` in hex into `out` (twice as long): a table lookup per digit
/// (the hex crate's char iterator was a fifth of the writer's hashing).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 15) as usize];
    }
}

/// The line for `event_json` (a JSON object) chained after `prev`, and its
/// hash.
pub fn seal(prev: &str, event_json: &str) -> (String, String) {
    let mut line = String::with_capacity(event_json.len() + MARK.len() + 150);
    line.push_str(event_json);
    let h = seal_in_place(&mut line, 0, prev);
    (line, h.as_str().to_owned())
}

/// [`seal`] without a copy: the JSON object that ends `out`, from `start`,
/// gets its chain member appended; returns its hash.
pub fn seal_in_place(out: &mut String, start: usize, prev: &str) -> HexDigest {
    let h = digest(prev, &out[start..]);
    if out.ends_with('}') {
        out.pop();
    }
    for part in [MARK, prev, "\",\"hash\":\"", h.as_str(), "\"}}"] {
        out.push_str(part);
    }
    h
}

/// The hash a sealed line ends with, without taking the line apart (no
/// check that it matches: [`Verifier`] does that).
pub fn sealed_hash(line: &str) -> Option<&str> {
    sealed_hash_of(line.as_bytes())
}

/// [`sealed_hash`] of a line as bytes read from a file: only the hash is
/// checked to be text (a reader of many lines need not check all of
/// every line).
pub fn sealed_hash_of(line: &[u8]) -> Option<&str> {
    let body = line.strip_suffix(b"\"}}")?;
    let at = body.len().checked_sub(64)?;
    body[..at]
        .ends_with(b"\",\"hash\":\"")
        .then(|| std::str::from_utf8(&body[at..]).ok())
        .flatten()
}

/// A line taken apart: the event JSON it seals, and its prev and hash.
pub struct Opened<'a> {
    pub event_json: String,
    pub prev: &'a str,
    pub hash: &'a str,
}

pub fn open(line: &str) -> Option<Opened<'_>> {
    let (at, prev, hash) = parts(line)?;
    Some(Opened {
        event_json: format!("{}}}", &line[..at]),
        prev,
        hash,
    })
}

/// Where a sealed line's chain member begins, and its prev and hash.
fn parts(line: &str) -> Option<(usize, &str, &str)> {
    let at = line.rfind(MARK)?;
    let rest = &line[at + MARK.len()..];
    let prev = rest.get(..64)?;
    let rest = rest.get(64..)?.strip_prefix("\",\"hash\":\"")?;
    let hash = rest.get(..64)?;
    (rest.get(64..)? == "\"}}").then_some((at, prev, hash))
}

/// The order in which stored `lines` form their chains, and which of them
/// were stored late. A sealed line is placed right after the line its
/// `prev` names, wherever that one was stored; every other line (a first
/// line, a line whose predecessor is not there, an unsealed line) keeps
/// its place. A JetStream cluster can store a host's records out of
/// order: in a leader fail-over a message in flight is lost while later
/// ones are stored, and its resend lands after them. The chain, not the
/// stream, says where it belongs. Returns the indices of `lines` in chain
/// order, and the indices of the lines stored after lines that follow
/// them. Content is not checked here: [`Verifier`] does that, in this
/// order.
pub fn chain_order<S: AsRef<str>>(lines: &[S]) -> (Vec<usize>, Vec<usize>) {
    let links: Vec<Option<(&str, &str)>> = lines
        .iter()
        .map(|l| parts(l.as_ref()).map(|(_, prev, hash)| (prev, hash)))
        .collect();
    // The lines that follow each hash, in stored order (a repeated line
    // follows the same hash twice; the second is found by the verifier).
    let mut after: std::collections::HashMap<&str, std::collections::VecDeque<usize>> =
        std::collections::HashMap::new();
    for (i, link) in links.iter().enumerate() {
        if let Some((prev, _)) = link.filter(|(prev, _)| *prev != GENESIS) {
            after.entry(prev).or_default().push_back(i);
        }
    }
    let mut placed = vec![false; lines.len()];
    let mut order = Vec::with_capacity(lines.len());
    let mut late = Vec::new();
    // The first sealed line not yet placed: a line placed while an
    // earlier one waits was stored late. (An unsealed line, a `loss`
    // message, has no place in the chain to be late for.)
    let mut first_waiting = 0;
    for start in 0..lines.len() {
        let mut at = start;
        while !placed[at] {
            placed[at] = true;
            order.push(at);
            while first_waiting < lines.len()
                && (placed[first_waiting] || links[first_waiting].is_none())
            {
                first_waiting += 1;
            }
            if at > first_waiting {
                late.push(at);
            }
            let Some((_, hash)) = links[at] else { break };
            let Some(next) = after.get_mut(hash).and_then(|q| {
                while q.front().is_some_and(|&i| placed[i]) {
                    q.pop_front();
                }
                q.pop_front()
            }) else {
                break;
            };
            at = next;
        }
    }
    (order, late)
}

/// The first problem in a sequence of log files, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    pub line: usize,
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.why)
    }
}

/// Checks sealed lines one at a time, in log order: each must carry its
/// own hash, and follow the one before it. `verify` checks whole files
/// with it; `guardrail log search --verify` checks the lines it reads.
#[derive(Debug, Default)]
pub struct Verifier {
    /// The hash the next line must name as its `prev`; None before the
    /// first line (which may follow a file retention already removed).
    expected_prev: Option<String>,
    /// Lines that passed.
    pub count: u64,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next line must follow the record whose hash is `hash` (a record
    /// that is skipped rather than read: its content is not checked).
    pub fn expect_after(&mut self, hash: &str) {
        self.expected_prev = Some(hash.to_string());
    }

    /// Check the next line; on failure, why it is broken.
    pub fn check(&mut self, line: &str) -> Result<(), &'static str> {
        let Some(o) = open(line) else {
            return Err("not a sealed record (edited, truncated or foreign)");
        };
        if self.expected_prev.as_deref().is_some_and(|p| p != o.prev) {
            return Err(
                "does not follow the record before it: a record is missing, inserted or out of order",
            );
        }
        if hash(o.prev, &o.event_json) != o.hash {
            return Err("its content does not match its hash: the record was edited");
        }
        self.expected_prev = Some(o.hash.to_string());
        self.count += 1;
        Ok(())
    }
}

/// The end of a log file that is not a whole line yet: the record the
/// agent is writing at this moment (or one a crash cut short). Nothing
/// follows it to check it against, and it may not be whole: it is not a
/// record to verify yet. (Cutting it is no way to hide an edit: removing
/// a log's last records is what a hash chain cannot see anyway.)
pub fn unfinished_tail(text: &str) -> Option<&str> {
    let start = text.rfind('\n').map_or(0, |i| i + 1);
    (start < text.len()).then(|| &text[start..])
}

/// Verify files given oldest first. The first record of the first file may
/// continue an older, no longer present file (its `prev` is taken as
/// given); everything after must chain, up to the newest file's
/// [`unfinished_tail`], which is left out. Returns the records checked.
pub fn verify(files: &[(String, String)]) -> Result<u64, Broken> {
    let mut v = Verifier::new();
    for (n, (name, text)) in files.iter().enumerate() {
        // Only the newest file is being written: a rotated file ends with
        // its last whole record, and a cut line there is broken.
        let whole = match unfinished_tail(text).filter(|_| n + 1 == files.len()) {
            Some(tail) => &text[..text.len() - tail.len()],
            None => text.as_str(),
        };
        for (i, line) in whole.lines().enumerate() {
            v.check(line).map_err(|why| Broken {
                file: name.clone(),
                line: i + 1,
                why: why.into(),
            })?;
        }
    }
    Ok(v.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stored_out_of_order_are_put_back_in_chain_order_and_named_late() {
        let lines = log(6);
        // A fail-over: line 2 lost in flight, 3 and 4 stored, 2 resent.
        let stored = [
            &lines[0], &lines[1], &lines[3], &lines[4], &lines[2], &lines[5],
        ];
        let (order, late) = chain_order(&stored);
        assert_eq!(order, vec![0, 1, 4, 2, 3, 5]);
        assert_eq!(late, vec![4]);
        // In order: nothing moves, nothing is late.
        let (order, late) = chain_order(&lines);
        assert_eq!((order, late), ((0..6).collect(), vec![]));
        // A gap, an unsealed line, a repeat and a new log keep their place.
        let (first, h) = seal(GENESIS, "{\"kind\":\"agent\"}");
        let (second, _) = seal(&h, "{\"kind\":\"file\"}");
        let loss = "{\"kind\":\"loss\"}".to_string();
        let mixed = [
            &lines[0], &lines[2], &loss, &lines[4], &lines[5], &lines[5], &first, &second,
        ];
        let (order, late) = chain_order(&mixed);
        assert_eq!((order, late), ((0..8).collect(), vec![]));
        // A late line after a loss message is still put back; the loss
        // message, explaining no break in this run, comes after it.
        let after_loss = [&lines[0], &loss, &lines[2], &lines[1], &lines[3]];
        let (order, late) = chain_order(&after_loss);
        assert_eq!((order, late), (vec![0, 3, 2, 4, 1], vec![3]));
    }

    #[test]
    fn the_hash_a_line_ends_with_is_found_without_opening_it() {
        let (line, h) = seal(GENESIS, r#"{"kind":"file","n":1}"#);
        assert_eq!(sealed_hash(&line), Some(h.as_str()));
        assert_eq!(sealed_hash(r#"{"kind":"loss"}"#), None);
        assert_eq!(sealed_hash(&line[..line.len() - 1]), None);
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        // The chain's known first hash: SHA-256 of 64 zeros, "\n" and "{}".
        let expected = {
            use sha2::Digest;
            let d = Sha256::digest(format!("{GENESIS}\n{{}}").as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(hash(GENESIS, "{}"), expected);
        let d = Sha256::digest(b"guardrail");
        assert_eq!(HexDigest::of(&d.into()), lower_hex(&d));
    }

    #[test]
    fn sealing_in_place_gives_the_sealed_line() {
        let event = "{\"seq\":7,\"kind\":\"file\"}";
        let (line, h) = seal(GENESIS, event);
        let mut out = String::from("prefix\t");
        let start = out.len();
        out.push_str(event);
        assert_eq!(seal_in_place(&mut out, start, GENESIS), h);
        assert_eq!(out, format!("prefix\t{line}"));
    }

    fn log(n: usize) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        (0..n)
            .map(|i| {
                let (line, h) = seal(&prev, &format!("{{\"seq\":{i},\"kind\":\"file\"}}"));
                prev = h;
                line
            })
            .collect()
    }

    /// A file of these lines, as the agent writes them (each ended).
    fn file(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn check(lines: &[String]) -> Result<u64, Broken> {
        verify(&[("audit.jsonl".into(), file(lines))])
    }

    #[test]
    fn the_line_being_written_is_left_for_later_only_in_the_newest_file() {
        let l = log(4);
        // The agent is writing the fourth record: half of it is there.
        let mut text = file(&l[..3]);
        text.push_str(&l[3][..l[3].len() / 2]);
        assert_eq!(unfinished_tail(&text), Some(&l[3][..l[3].len() / 2]));
        assert_eq!(verify(&[("audit.jsonl".into(), text.clone())]), Ok(3));
        assert_eq!(unfinished_tail(&file(&l)), None);
        assert_eq!(check(&l), Ok(4));
        // A rotated file is whole: a line cut there is broken.
        let newest = ("audit.jsonl".to_string(), String::new());
        let e = verify(&[("audit.jsonl.1".into(), text), newest]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("audit.jsonl.1", 4));
    }

    #[test]
    fn an_intact_log_verifies() {
        assert_eq!(check(&log(5)), Ok(5));
        let line = &log(1)[0];
        assert!(line.starts_with("{\"seq\":0,\"kind\":\"file\",\"chain\":{\"prev\":\"000"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], 0, "a sealed line is still the event's JSON");
    }

    #[test]
    fn an_edited_record_is_found() {
        let mut l = log(5);
        l[2] = l[2].replace("\"kind\":\"file\"", "\"kind\":\"exec\"");
        assert_eq!(check(&l).unwrap_err().line, 3);
    }

    #[test]
    fn a_deleted_record_is_found() {
        let mut l = log(5);
        l.remove(2);
        let e = check(&l).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.why.contains("missing"));
    }

    #[test]
    fn reordered_records_are_found() {
        let mut l = log(5);
        l.swap(1, 2);
        assert_eq!(check(&l).unwrap_err().line, 2);
    }

    #[test]
    fn the_chain_runs_across_rotated_files() {
        let l = log(6);
        let old = ("audit.jsonl.1".to_string(), file(&l[..3]));
        let new = ("audit.jsonl".to_string(), file(&l[3..]));
        assert_eq!(verify(&[old.clone(), new.clone()]), Ok(6));
        // A missing middle file is a break at the first record after it.
        let newest = ("audit.jsonl".to_string(), file(&l[5..]));
        let e = verify(&[old, newest]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("audit.jsonl", 1));
    }
}
