//! Cgroup ids (what the probes read per event) to cgroup v2 paths: a
//! cgroup's id is the inode number of its directory in the cgroup2 file
//! system, so one walk of that tree names them all. Unknown ids trigger a
//! new walk, at most once a second; ids that stay unknown are shown as
//! numbers only.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Cgroups {
    /// Where cgroup2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified
    /// on hybrid hosts); None without cgroup v2.
    root: Option<PathBuf>,
    paths: crate::idmap::IdMap<u64, Cgroup>,
    walked: Option<Instant>,
    /// Walks so far: what was derived from the table is stale after one.
    walks: u64,
}

/// One cgroup, with what its path says, worked out once.
#[derive(Debug)]
pub struct Cgroup {
    pub path: Arc<str>,
    pub unit: Option<Arc<str>>,
    /// Shared with every event of the cgroup (its two strings were
    /// copied per event).
    pub container: Option<Arc<guardrail_engine::attribution::Container>>,
}

impl Cgroup {
    fn new(path: String) -> Cgroup {
        Cgroup {
            unit: guardrail_engine::attribution::unit_of(&path).map(Arc::from),
            container: guardrail_engine::attribution::container_of(&path).map(Arc::new),
            path: path.into(),
        }
    }
}

const WALK_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Bound on the table (and on one walk).
const MAX_CGROUPS: usize = 65_536;

/// The cgroup2 mount point in /proc/self/mountinfo text.
pub fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(mount.split_whitespace().nth(4)?))
    })
}

impl Default for Cgroups {
    fn default() -> Self {
        let root = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_root(&m));
        Cgroups {
            root,
            paths: Default::default(),
            walked: None,
            walks: 0,
        }
    }
}

impl Cgroups {
    /// The path of cgroup `id`, relative to the cgroup2 root (`/` for the
    /// root cgroup).
    pub fn get(&mut self, id: u64) -> Option<&Cgroup> {
        // Borrowed, not shared: an event takes the names it shows, and a
        // reference count per event for the cgroup itself was one more
        // pair of atomic operations.
        if !self.paths.contains_key(&id) {
            let due = self
                .walked
                .is_none_or(|at| at.elapsed() >= WALK_AT_MOST_EVERY);
            if !due {
                return None;
            }
            self.walked = Some(Instant::now());
            let root = self.root.clone()?;
            self.walks += 1;
            self.paths.clear();
            self.walk(&root, &root);
        }
        self.paths.get(&id)
    }

    /// How many times the cgroup tree was read.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    fn walk(&mut self, root: &Path, dir: &Path) {
        if self.paths.len() >= MAX_CGROUPS {
            return;
        }
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        let relative = dir.strip_prefix(root).unwrap_or(Path::new(""));
        // Every byte kept (escaped as in events), never replaced.
        let path = format!(
            "/{}",
            guardrail_engine::interpret::text(relative.as_os_str().as_encoded_bytes())
        );
        self.paths.insert(meta.ino(), Cgroup::new(path));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                self.walk(root, &entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_pure_and_hybrid_hosts() {
        let hybrid = "35 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_root(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_root("22 1 0:21 / /proc rw - proc proc rw\n"), None);
    }
}
