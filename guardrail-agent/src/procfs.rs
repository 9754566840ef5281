//! [`ProcessView`] over /proc, with a table of executables learned from
//! exec events so that short-lived processes keep their exe after exit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::interpret::ProcessView;

pub struct ProcFs {
    exes: HashMap<u32, String>,
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

/// How often entries of processes that are gone are dropped. A pid reused
/// within this time by a process that did not exec shows the old exe.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            exes: HashMap::new(),
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
    fn prune(&mut self) {
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = Instant::now();
        self.exes
            .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
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
        if let Some(exe) = self.exes.get(&pid) {
            return Some(exe.clone());
        }
        let exe = readlink(format!("/proc/{pid}/exe"))?;
        self.exes.insert(pid, exe.clone());
        Some(exe)
    }

    fn exec_happened(&mut self, pid: u32, exe: &str) {
        self.exes.insert(pid, exe.to_string());
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
