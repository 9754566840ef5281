//! The process object of an event, serialised once per thread while it
//! stays the same: a thread's events repeat its process (ids, names,
//! programs, cgroup, ancestors), and writing that object was a third of
//! an event's serialisation.
//!
//! For an audit log that names processes by reference, the JSON attached
//! is a reference instead: `{"pid","tid","id","pv"}`, `pv` numbering the
//! distinct process states (versions) of this run, with the rest of the
//! object beside it for the writer, which writes a version in full the
//! first time a file uses it (see [`crate::process_join`]).

use std::collections::HashMap;

use crate::event::{Body, Process, ProcessJson};

/// Threads remembered at most; past it the cache starts over (a busy host
/// has more threads than this, but a thread's events come in runs).
const THREADS: usize = 1024;

#[derive(Default)]
pub struct ProcessJsonCache {
    by_tid: HashMap<u32, Seen>,
    /// Attach references rather than whole objects.
    by_reference: bool,
    /// The last process version numbered.
    last_pv: u64,
}

/// What the cache knows of a thread.
enum Seen {
    /// One event so far, its process serialised with it: most processes
    /// of an exec storm (or a busy host's short-lived commands) have only
    /// one event, and making their JSON apart, then copying it into the
    /// event and keeping a copy of the process, was a third of the cost
    /// of the process object for nothing.
    Once,
    /// The thread's last process and its JSON.
    Made(Box<Process>, ProcessJson),
}

impl ProcessJsonCache {
    /// A cache that attaches references to numbered process versions.
    pub fn by_reference() -> Self {
        ProcessJsonCache {
            by_reference: true,
            ..Default::default()
        }
    }

    /// Give the event's process its JSON: the one made for an equal
    /// process of the same thread, else, from a thread's second event on,
    /// a new one. Call it once nothing will change the event's process
    /// any more (after redaction).
    pub fn attach(&mut self, body: &mut Body) {
        let Some(process) = body.process_mut() else {
            return;
        };
        match self.by_tid.get(&process.tid) {
            Some(Seen::Made(known, json)) if **known == *process => {
                process.json = json.clone();
                return;
            }
            Some(_) => {}
            None => {
                self.make_room();
                self.by_tid.insert(process.tid, Seen::Once);
                return;
            }
        }
        // A process that cannot be serialised is left to fail where the
        // whole event is, with its error.
        let Ok(whole) = process.make_json() else {
            return;
        };
        // The members a reference leaves out, cut from the JSON just made
        // (and only for an audit log that names processes by reference).
        let shared = match self.by_reference {
            true => process.shared_members_in(whole.get()),
            false => None,
        };
        let json = match shared {
            Some(shared) => {
                self.last_pv += 1;
                ProcessJson::Ref {
                    pv: self.last_pv,
                    shared: shared.into(),
                }
            }
            None => ProcessJson::of(whole),
        };
        process.json = json.clone();
        self.make_room();
        self.by_tid
            .insert(process.tid, Seen::Made(Box::new(process.clone()), json));
    }

    fn make_room(&mut self) {
        if self.by_tid.len() >= THREADS {
            self.by_tid.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PermDetails, SyscallResult};

    fn chmod(tid: u32, exe: &str) -> Body {
        Body::Perm {
            syscall: "chmod".into(),
            process: Process {
                pid: tid,
                tid,
                comm: "storm".into(),
                exe: Some(exe.into()),
                ..Default::default()
            },
            result: SyscallResult::default(),
            perm: PermDetails::default(),
        }
    }

    fn json(body: &Body) -> serde_json::Value {
        serde_json::to_value(body).unwrap()
    }

    #[test]
    fn an_event_serialises_as_it_would_without_the_cache() {
        let mut cache = ProcessJsonCache::default();
        let events = [
            chmod(7, "/bin/a"),
            chmod(7, "/bin/a"),
            chmod(7, "/bin/a"),
            chmod(8, "/bin/b"),
        ];
        let mut attached = Vec::new();
        for body in events {
            let plain = json(&body);
            let mut cached = body.clone();
            cache.attach(&mut cached);
            attached.push(format!("{:?}", cached.process().unwrap().json));
            assert_eq!(json(&cached), plain);
        }
        // A thread's first event is serialised with its process; from the
        // second on, the process's JSON is made once and shared.
        assert_eq!(attached, ["none", "cached", "cached", "none"]);
    }

    #[test]
    fn a_changed_process_of_the_same_thread_is_serialised_anew() {
        let mut cache = ProcessJsonCache::default();
        let mut first = chmod(7, "/bin/a");
        cache.attach(&mut first);
        // The thread exec'd another program.
        let mut second = chmod(7, "/bin/b");
        cache.attach(&mut second);
        assert_eq!(json(&second)["process"]["exe"], "/bin/b");
        let mut third = chmod(7, "/bin/b");
        cache.attach(&mut third);
        assert_eq!(json(&third)["process"]["exe"], "/bin/b");
    }
}
