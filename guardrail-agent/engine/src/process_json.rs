//! The process object of an event, serialised once per thread while it
//! stays the same: a thread's events repeat its process (ids, names,
//! programs, cgroup, ancestors), and writing that object was a third of
//! an event's serialisation.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::event::{Body, Process, ProcessJson};

/// Threads remembered at most; past it the cache starts over (a busy host
/// has more threads than this, but a thread's events come in runs).
const THREADS: usize = 1024;

#[derive(Default)]
pub struct ProcessJsonCache {
    by_tid: HashMap<u32, (Process, Arc<RawValue>)>,
}

impl ProcessJsonCache {
    /// Give the event's process its JSON: the one made for an equal
    /// process of the same thread, else a new one. Call it once nothing
    /// will change the event's process any more (after redaction).
    pub fn attach(&mut self, body: &mut Body) {
        let Some(process) = body.process_mut() else {
            return;
        };
        if let Some((known, json)) = self.by_tid.get(&process.tid) {
            if known == process {
                process.json = ProcessJson::of(json.clone());
                return;
            }
        }
        // A process that cannot be serialised is left to fail where the
        // whole event is, with its error.
        let Ok(json) = process.make_json() else {
            return;
        };
        if self.by_tid.len() >= THREADS {
            self.by_tid.clear();
        }
        self.by_tid.insert(process.tid, (process.clone(), json));
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
        for body in [chmod(7, "/bin/a"), chmod(7, "/bin/a"), chmod(8, "/bin/b")] {
            let plain = json(&body);
            let mut cached = body.clone();
            cache.attach(&mut cached);
            assert!(format!("{:?}", cached.process().unwrap().json) == "cached");
            assert_eq!(json(&cached), plain);
        }
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
