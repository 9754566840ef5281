//! The processes a scanner read lately, by thread: a storm's log repeats a
//! thread's process object (~700 bytes with its ancestors) in each of its
//! lines, and reading that object was most of reading the line. When the
//! line holds the same bytes where the object starts, it is the same
//! object (identical bytes read identically, and a whole object ends at
//! the same `}`), and only where its texts lie is taken from the memo.

use std::collections::HashMap;

use super::process::ProcessSpans;
use crate::event_json::{MemoWorth, MEMO_MAX};

/// A process object remembered: its bytes, and its reading.
struct Known {
    text: Box<[u8]>,
    read: ProcessSpans,
}

#[derive(Default)]
pub struct RecentProcesses {
    by_tid: HashMap<u32, Known, foldhash::fast::RandomState>,
    worth: MemoWorth,
}

impl RecentProcesses {
    /// Self to read the next line with, or None while the memo rests (it
    /// hit too rarely: a log of many processes interleaved).
    pub fn consulted(&mut self) -> Option<&mut Self> {
        self.worth.consult().then_some(self)
    }

    /// The reading of the object `at` starts with, if it is the one
    /// remembered for `tid`; and the object's length.
    pub fn find(&mut self, tid: u32, at: &[u8]) -> Option<(usize, &ProcessSpans)> {
        let hit = self
            .by_tid
            .get(&tid)
            .is_some_and(|known| at.starts_with(&known.text));
        if self.worth.looked_up(hit) {
            self.by_tid.clear();
        }
        let known = self.by_tid.get(&tid).filter(|_| hit)?;
        Some((known.text.len(), &known.read))
    }

    /// Remembers `object` (the object's bytes) read as `read`.
    pub fn learn(&mut self, tid: u32, object: &[u8], read: ProcessSpans) {
        if self.by_tid.len() >= MEMO_MAX {
            self.by_tid.clear();
        }
        self.by_tid.insert(
            tid,
            Known {
                text: object.into(),
                read,
            },
        );
    }
}

/// The thread id of a process object as the agent writes it,
/// `{"pid":P,"tid":T,`; none for any other start.
pub fn tid_of(object: &[u8]) -> Option<u32> {
    let rest = object.strip_prefix(b"{\"pid\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest[digits..].strip_prefix(b",\"tid\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}
