//! Reading an audit log that names processes by reference.
//!
//! With `[audit_log] process = "ref"` the writer puts a thread's process
//! object in full only in the first line of each file (and each run of the
//! agent) that uses that process version; later lines carry
//! `"process":{"pid":P,"tid":T,"id":"P@START","pv":N}`. A definition is
//! the whole object with `pv` after `id`. What a reader relies on: a
//! reference is preceded, in the same file and the same run of the agent,
//! by a definition of its `pv` for the same `id` — the latest definition of
//! a `pv` before a reference is the one it names. A process that was never
//! numbered (a thread's first event, a process without `id`, every log
//! written with `process = "full"`) is whole and carries no `pv`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Event, Process};

/// The writer defines every version it names again at least this often
/// (and in every file): a reader starting in the middle of a file finds a
/// reference's definition at most this far back.
pub const REDEFINED_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(3600);

/// Versions remembered per generation; two generations are kept, so a
/// version used again within the last 64k learnt is always found.
const GENERATION: usize = 1 << 16;

/// The writer defines every version again once it has defined this many
/// since the last time: a reference's definition is always among the
/// last [`GENERATION`] a reader learnt from the file.
pub const DEFINED_AT_MOST: usize = GENERATION / 2;

/// The process versions defined so far in the lines read, to complete the
/// references that follow.
#[derive(Default)]
pub struct ProcessJoin {
    recent: HashMap<u64, Arc<Process>>,
    older: HashMap<u64, Arc<Process>>,
    /// The `seq` of the last event joined: where it falls, another run of
    /// the agent began, numbering other versions. (Joining an event again
    /// is no new run; a run of one event numbers no version.)
    last_seq: Option<u64>,
}

/// What [`ProcessJoin::join`] did with an event's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// No process, or a whole one without `pv`.
    Whole,
    /// A definition, learnt.
    Defined,
    /// A reference, completed from its definition.
    Joined,
    /// A reference whose definition was not read: the event's process has
    /// only `pid`, `tid`, `id` and `pv` (`unjoined` is set).
    Missing,
}

impl ProcessJoin {
    /// Learn the event's definition, or complete its reference.
    pub fn join(&mut self, event: &mut Event) -> Joined {
        self.saw(event.seq);
        let Some(p) = event.body.process_mut() else {
            return Joined::Whole;
        };
        let Some(pv) = p.pv else {
            return Joined::Whole;
        };
        if !p.unjoined {
            self.learn(pv, p.clone());
            return Joined::Defined;
        }
        match self.find(pv) {
            // The id is checked on every join: the wrong program or user on
            // an event would be worse than none.
            Some(def) if def.id == p.id => {
                let (pid, tid) = (p.pid, p.tid);
                *p = (*def).clone();
                p.pid = pid;
                p.tid = tid;
                Joined::Joined
            }
            _ => Joined::Missing,
        }
    }

    /// The definition of `pv` a reference naming the process `id` takes
    /// (as [`Self::join`] completes one); none when it was not read.
    pub fn resolve(&mut self, pv: u64, id: &str) -> Option<Arc<Process>> {
        self.find(pv).filter(|def| def.id.as_deref() == Some(id))
    }

    /// An event passed over (not joined) had this `seq`: where `seq` falls,
    /// the versions known are forgotten. True there: a new run began.
    pub fn saw(&mut self, seq: u64) -> bool {
        let new_run = self.last_seq.is_some_and(|last| seq < last);
        if new_run {
            self.recent.clear();
            self.older.clear();
        }
        self.last_seq = Some(seq);
        new_run
    }

    /// Learn a definition met reading backwards: an earlier definition of
    /// a version already known is older, and not the one later references
    /// name.
    pub fn learn_earlier(&mut self, event: &Event) {
        let Some(p) = event.body.process() else {
            return;
        };
        if let (Some(pv), false) = (p.pv, p.unjoined) {
            if self.find(pv).is_none() {
                self.learn(pv, p.clone());
            }
        }
    }

    /// As many versions as a file defines between two redefinitions are
    /// known: learning more (backwards) would forget the nearest.
    pub fn full(&self) -> bool {
        self.recent.len() + self.older.len() >= GENERATION
    }

    /// Whether a definition of `pv` is known.
    pub fn knows(&mut self, pv: u64) -> bool {
        self.find(pv).is_some()
    }

    fn learn(&mut self, pv: u64, mut process: Process) {
        if self.recent.len() >= GENERATION {
            self.older = std::mem::take(&mut self.recent);
        }
        process.json = Default::default();
        self.recent.insert(pv, Arc::new(process));
    }

    fn find(&mut self, pv: u64) -> Option<Arc<Process>> {
        if let Some(p) = self.recent.get(&pv) {
            return Some(p.clone());
        }
        // Used again: keep it with the recent ones.
        let p = self.older.remove(&pv)?;
        self.learn(pv, (*p).clone());
        Some(p)
    }
}

/// The line as it reads in full: a stored line whose process is a
/// reference, with the members of the joined `process` put back in. None
/// when the line holds no reference to it.
pub fn full_line(line: &str, process: &Process) -> Option<String> {
    let pv = process.pv.filter(|_| !process.unjoined)?;
    let at = reference_end(line, pv)?;
    let shared = process.shared_members()?;
    let mut full = String::with_capacity(line.len() + shared.len() + 1);
    push_defined(&mut full, line, at, &shared);
    Some(full)
}

/// Where the reference to `pv` in a serialised event closes: the offset of
/// its `}`. `,"pv":` occurs once in an event: no other member is named
/// `pv`, and a string cannot hold an unescaped `"`.
pub fn reference_end(json: &str, pv: u64) -> Option<usize> {
    static PV: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b",\"pv\":"));
    let digits_at = PV.find(json.as_bytes())? + 6;
    let rest = &json.as_bytes()[digits_at..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let named = std::str::from_utf8(&rest[..digits])
        .ok()?
        .parse::<u64>()
        .ok()?;
    (named == pv && rest.get(digits) == Some(&b'}')).then_some(digits_at + digits)
}

/// Append `json` with the reference closing at `at` made a definition:
/// `shared` (see [`Process::shared_members`]) put in before its `}`.
pub fn push_defined(out: &mut String, json: &str, at: usize, shared: &str) {
    out.push_str(&json[..at]);
    out.push(',');
    out.push_str(shared);
    out.push_str(&json[at..]);
}

/// The lines (numbered from 1) of one audit-log file that name a process
/// version no earlier line of the file defines for the same process, and
/// that version. A writer bug or a file cut by hand, not tampering: the
/// chain says whether lines were removed.
pub fn undefined_references(text: &str) -> Vec<(usize, u64)> {
    let mut join = ProcessJoin::default();
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if memchr::memmem::find(line.as_bytes(), b",\"pv\":").is_none() {
            continue;
        }
        let Ok(mut event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        if join.join(&mut event) == Joined::Missing {
            let pv = event.body.process().and_then(|p| p.pv).unwrap_or(0);
            found.push((i + 1, pv));
        }
    }
    found
}

/// Whether a stored line defines a process version: `"pv":N` followed by
/// more members (a reference ends at `pv`). For readers that skip lines
/// without parsing them and must still learn definitions.
pub fn defines_a_version(line: &[u8]) -> bool {
    let Some(at) = memchr::memmem::find(line, b",\"pv\":") else {
        return false;
    };
    let rest = &line[at + 6..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits) == Some(&b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chmod by thread `tid` of process `pid` running `exe`, whole.
    pub(crate) fn line(seq: u64, pid: u32, tid: u32, exe: &str) -> String {
        format!(
            r#"{{"seq":{seq},"time":"2026-12-06T10:00:00Z","ktime_ns":{seq},"kind":"perm","syscall":"chmod","process":{{"pid":{pid},"tid":{tid},"id":"{pid}@9","ppid":1,"uid":0,"gid":0,"euid":0,"egid":0,"auid":null,"comm":"c","exe":"{exe}","parent_exe":null,"cgroup_id":1}},"result":{{"ok":true,"ret":0,"errno":null}},"perm":{{"op":"chmod","path":"/f","mode":"0644"}}}}"#
        )
    }

    /// The line's process as a definition of `pv`.
    fn defining(line: &str, pv: u64) -> String {
        line.replacen("@9\",", &format!("@9\",\"pv\":{pv},"), 1)
    }

    /// The line's process as a reference to `pv`.
    fn naming(line: &str, pv: u64) -> String {
        let start = line.find("\"ppid\"").unwrap();
        let end = line.find("},\"result\"").unwrap();
        format!("{}\"pv\":{pv}{}", &line[..start], &line[end..])
    }

    fn event(text: &str) -> Event {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_reference_takes_the_latest_definition_of_its_version() {
        let mut join = ProcessJoin::default();
        let a = line(5, 7, 7, "/bin/a");
        let b = line(3, 7, 8, "/bin/b");
        assert_eq!(join.join(&mut event(&defining(&a, 1))), Joined::Defined);
        // The agent restarted: pv 1 is another process state now.
        assert_eq!(join.join(&mut event(&defining(&b, 1))), Joined::Defined);
        let mut reference = event(&naming(&line(4, 7, 8, "/bin/b"), 1));
        assert!(reference.body.process().unwrap().unjoined);
        assert_eq!(join.join(&mut reference), Joined::Joined);
        let mut whole = event(&line(4, 7, 8, "/bin/b"));
        let p = whole.body.process_mut().unwrap();
        p.pv = Some(1);
        assert_eq!(reference.body.process(), whole.body.process());
    }

    #[test]
    fn a_new_run_forgets_the_versions_of_the_last() {
        let mut join = ProcessJoin::default();
        join.join(&mut event(&defining(&line(5, 7, 7, "/bin/a"), 1)));
        // seq starts over: the same number names a state not defined yet.
        let mut reference = event(&naming(&line(1, 7, 7, "/bin/a"), 1));
        assert_eq!(join.join(&mut reference), Joined::Missing);
    }

    #[test]
    fn a_definition_of_another_process_is_not_taken() {
        let mut join = ProcessJoin::default();
        join.join(&mut event(&defining(&line(1, 7, 7, "/bin/a"), 1)));
        let mut other = event(&naming(&line(2, 9, 9, "/bin/a"), 1));
        assert_eq!(join.join(&mut other), Joined::Missing);
        let p = other.body.process().unwrap();
        assert!(p.unjoined);
        assert_eq!((p.pid, p.exe.as_deref()), (9, None));
        let mut unknown = event(&naming(&line(3, 7, 7, "/bin/a"), 2));
        assert_eq!(join.join(&mut unknown), Joined::Missing);
    }

    #[test]
    fn a_reference_reads_back_as_a_process_to_join_and_nothing_else_does() {
        let reference = event(&naming(&line(1, 7, 7, "/bin/a"), 3));
        let p = reference.body.process().unwrap();
        assert_eq!((p.pid, p.tid, p.pv, p.unjoined), (7, 7, Some(3), true));
        assert_eq!(p.id.as_deref(), Some("7@9"));
        // Neither a reference nor whole: the missing member is named.
        let text = line(1, 7, 7, "/bin/a").replace("\"uid\":0,", "");
        let e = serde_json::from_str::<Event>(&text).unwrap_err();
        assert!(e.to_string().contains("missing field `uid`"), "{e}");
    }

    #[test]
    fn an_unjoined_process_is_shown_as_not_joined_not_as_root() {
        let unjoined = event(&naming(&line(1, 7, 7, "/bin/a"), 3));
        let shown = crate::human::line(&unjoined, false);
        assert!(
            shown.contains("pid=7 process 7@9 v3 (not joined"),
            "{shown}"
        );
        assert!(!shown.contains("uid="), "{shown}");
    }

    #[test]
    fn a_joined_line_prints_as_its_definition_would() {
        let whole = line(5, 7, 7, "/bin/a");
        let defined = defining(&whole, 4);
        assert_ne!(defined, whole);
        let mut join = ProcessJoin::default();
        join.join(&mut event(&defined));
        let later = line(6, 7, 7, "/bin/a");
        let stored = naming(&later, 4);
        let mut e = event(&stored);
        assert_eq!(join.join(&mut e), Joined::Joined);
        let full = full_line(&stored, e.body.process().unwrap()).unwrap();
        assert_eq!(full, defining(&later, 4));
        assert!(full_line(&whole, event(&whole).body.process().unwrap()).is_none());
    }

    #[test]
    fn a_file_s_references_without_definition_are_found_at_their_line() {
        let text = [
            defining(&line(1, 7, 7, "/bin/a"), 1),
            naming(&line(2, 7, 7, "/bin/a"), 1),
            naming(&line(3, 7, 7, "/bin/a"), 2),
            line(4, 8, 8, "/bin/b"),
        ]
        .join("\n");
        assert_eq!(undefined_references(&text), [(3, 2)]);
    }

    #[test]
    fn definitions_are_told_from_references_without_parsing() {
        let whole = line(1, 7, 7, "/bin/a");
        assert!(defines_a_version(defining(&whole, 12).as_bytes()));
        assert!(!defines_a_version(naming(&whole, 12).as_bytes()));
        assert!(!defines_a_version(whole.as_bytes()));
    }

    #[test]
    fn versions_used_again_outlive_a_generation() {
        let mut join = ProcessJoin::default();
        let a = line(1, 7, 7, "/bin/a");
        join.join(&mut event(&defining(&a, 1)));
        for pv in 2..(2 * GENERATION as u64) {
            if pv % 1000 == 0 {
                assert!(join.knows(1), "version 1 forgotten by {pv}");
            }
            join.join(&mut event(&defining(&line(pv, 8, 8, "/bin/b"), pv)));
        }
        assert!(join.knows(1));
    }
}
