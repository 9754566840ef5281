//! [`ProcessView`]: a table of processes kept by the kernel's fork, exec
//! and exit records, so that every event names the program its process
//! ran at that moment (a forked child runs its parent's until it execs),
//! and short-lived processes keep their exe after they are gone. /proc is
//! asked only about processes older than the agent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::interpret::ProcessView;

pub struct ProcFs {
    procs: HashMap<u32, Proc>,
    last_prune: Instant,
    /// Directories resolved lately: a storm on one file resolves its
    /// directory once, not once per event.
    resolved: HashMap<String, String>,
    resolved_at: Instant,
}

/// How long resolved directories are trusted without an event that says
/// a directory changed (mounts, for one, are not events).
const RESOLVED_FOR: Duration = Duration::from_secs(1);
/// Bound on the resolution cache; full, it starts over.
const RESOLVED_MAX: usize = 4096;

/// One process as the table knows it.
struct Proc {
    /// None: a process with no program file (a kernel thread).
    exe: Option<String>,
    /// When its exit record arrived. Kept a while after: records of its
    /// children (naming it as parent) may still be on their way.
    exited: Option<Instant>,
    /// When the kernel last said something about it (fork, exec).
    learned: Instant,
}

/// How often the table is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// How long an exited process stays in the table.
const KEEP_EXITED: Duration = Duration::from_secs(30);
/// A process whose exit record was lost (ring buffer full) is dropped when
/// /proc no longer shows it and the kernel said nothing about it for this
/// long.
const KEEP_UNSEEN: Duration = Duration::from_secs(60);

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            procs: HashMap::new(),
            last_prune: Instant::now(),
            resolved: HashMap::new(),
            resolved_at: Instant::now(),
        }
    }
}

fn readlink(path: String) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| crate::interpret::text(p.as_os_str().as_encoded_bytes()))
}

impl ProcFs {
    /// Every process running now, from /proc: called once the probes are
    /// attached, so that a process is either seeded here or born in a fork
    /// record that follows.
    pub fn seed(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A fork record processed meanwhile knows better.
            self.procs.entry(pid).or_insert_with(|| Proc {
                exe: readlink(format!("/proc/{pid}/exe")),
                exited: None,
                learned: Instant::now(),
            });
        }
    }

    /// Processes in the table.
    pub fn tracked(&self) -> usize {
        self.procs.len()
    }

    fn learn(&mut self, pid: u32, exe: Option<String>) {
        self.procs.insert(
            pid,
            Proc {
                exe,
                exited: None,
                learned: Instant::now(),
            },
        );
    }

    fn prune(&mut self) {
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = Instant::now();
        self.procs.retain(|pid, p| match p.exited {
            Some(at) => at.elapsed() < KEEP_EXITED,
            None => {
                p.learned.elapsed() < KEEP_UNSEEN
                    || std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
        });
    }
}

impl ProcessView for ProcFs {
    fn dir_of(&mut self, pid: u32, dirfd: Option<i32>) -> Option<String> {
        match dirfd {
            None => readlink(format!("/proc/{pid}/cwd")),
            Some(fd) => readlink(format!("/proc/{pid}/fd/{fd}")),
        }
    }

    fn fd_path(&mut self, pid: u32, fd: i32) -> Option<String> {
        readlink(format!("/proc/{pid}/fd/{fd}"))
    }

    fn exe(&mut self, pid: u32) -> Option<String> {
        self.prune();
        if let Some(p) = self.procs.get(&pid) {
            return p.exe.clone();
        }
        // Not born while the agent watched (and not seeded): /proc is all
        // there is, and it answers for now, not for the moment of the event.
        let exe = readlink(format!("/proc/{pid}/exe"))?;
        self.learn(pid, Some(exe.clone()));
        Some(exe)
    }

    fn exec_happened(&mut self, pid: u32, exe: &str) {
        self.learn(pid, Some(exe.to_string()));
    }

    fn forked(&mut self, parent: u32, child: u32) {
        let exe = self.exe(parent);
        self.learn(child, exe);
    }

    fn exited(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exited = Some(Instant::now());
        }
    }

    fn realpath(&mut self, path: &str) -> Option<String> {
        if self.resolved_at.elapsed() >= RESOLVED_FOR || self.resolved.len() >= RESOLVED_MAX {
            self.paths_changed();
        }
        if let Some(hit) = self.resolved.get(path) {
            return Some(hit.clone());
        }
        let real = std::fs::canonicalize(path)
            .ok()
            .map(|p| crate::interpret::text(p.as_os_str().as_encoded_bytes()))?;
        // Only what exists is remembered: a directory made a moment later
        // (mkdir is not an event) must not stay unresolvable.
        self.resolved.insert(path.to_string(), real.clone());
        Some(real)
    }

    fn paths_changed(&mut self) {
        self.resolved.clear();
        self.resolved_at = Instant::now();
    }
}
