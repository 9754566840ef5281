//! The read watch set: the files whose read-only opens the probes
//! capture (`file.read` rules), by inode, as the agent writes them into
//! the `WATCH` map.

use std::collections::HashMap as StdHashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use guardrail_common::watch;

use super::kernel_dev;
use crate::rules::RuleSet;

/// Files one generation may watch: a quarter of the map, since each has
/// two entries and a reload writes the new generation before the old one
/// is removed.
pub const MAX_PER_GENERATION: usize = watch::MAX_ENTRIES as usize / 4;

/// Directories walked below a subtree pattern's base.
const MAX_SUBTREE_DEPTH: usize = 16;

/// One generation's watch set, by (kernel dev, ino).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchSet {
    pub entries: StdHashMap<(u64, u64), u8>,
    /// Entries left out because the set was full.
    pub overflow: usize,
    /// Directory entries looked at by glob patterns' walks.
    pub visited: usize,
}

/// Directory entries one compile looks at, at most, for glob patterns.
pub const MAX_VISITED: usize = 200_000;

impl WatchSet {
    /// The bitmap of its watched files' inode numbers, as the probes check
    /// it before the map (`guardrail_common::watch::BITMAP_WORDS`).
    pub fn bitmap(&self) -> Vec<u64> {
        let mut words = vec![0u64; watch::BITMAP_WORDS as usize];
        for (&(_, ino), &bits) in &self.entries {
            if bits & watch::FILE != 0 {
                let (word, bit) = watch::bit_of(ino);
                words[word as usize] |= bit;
            }
        }
        words
    }

    fn add(&mut self, meta: &std::fs::Metadata, bits: u8) {
        let key = (kernel_dev(meta.dev()), meta.ino());
        if let Some(v) = self.entries.get_mut(&key) {
            *v |= bits;
        } else if self.entries.len() < MAX_PER_GENERATION {
            self.entries.insert(key, bits);
        } else {
            self.overflow += 1;
        }
    }
}

/// The directory part of `pattern` without glob characters, and whether
/// what follows it reaches below its immediate children (`**`, or a glob
/// in a directory component). None for an exact path.
pub fn watch_base(pattern: &str) -> Option<(&str, bool)> {
    let first_glob = pattern.find(['*', '?', '[', '{'])?;
    let base_end = pattern[..first_glob].rfind('/')?;
    let base = if base_end == 0 {
        "/"
    } else {
        &pattern[..base_end]
    };
    let rest = &pattern[base_end + 1..];
    Some((base, rest.contains('/') || rest.contains("**")))
}

/// Compile the watch set of every enabled rule that names `file.read`.
pub fn compile(set: &RuleSet) -> WatchSet {
    let mut out = WatchSet::default();
    for rule in set.rules.iter().filter(|r| r.reads) {
        let Some(paths) = &rule.path else { continue };
        for pattern in &paths.patterns {
            match watch_base(pattern) {
                None => {
                    // The file, and what a symlink there points to.
                    if let Ok(m) = std::fs::metadata(pattern) {
                        out.add(&m, watch::FILE);
                    }
                }
                Some((base, deep)) => {
                    // What path_not excludes would be captured only to be
                    // left undecided.
                    let excluded = |p: &str| {
                        rule.path_not
                            .as_ref()
                            .is_some_and(|not| not.matches_any(&[p]))
                    };
                    add_dir(&mut out, Path::new(base), deep, 0, &|p: &str| {
                        paths.matches_any(&[p]) && !excluded(p)
                    });
                }
            }
        }
    }
    out
}

/// Watch the files in `dir` (and, `deep`, in its subdirectories) that
/// match.
fn add_dir(
    out: &mut WatchSet,
    dir: &Path,
    deep: bool,
    depth: usize,
    matches: &dyn Fn(&str) -> bool,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Bounded: a home directory's subtree is its owner's to fill.
        out.visited += 1;
        if out.visited > MAX_VISITED {
            return;
        }
        // Symlinks are not followed: a user's link in a watched subtree
        // to `/` would make every compile walk the host, one to a file
        // every process reads would capture every such read.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            if deep && depth < MAX_SUBTREE_DEPTH {
                add_dir(out, &path, deep, depth + 1, matches);
            }
        } else if kind.is_file() && path.to_str().is_some_and(matches) {
            if let Ok(m) = entry.metadata() {
                out.add(&m, watch::FILE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every watched file's number finds its bit set (a miss would hide
    /// a read); directories, which reads are not reported for, set none;
    /// and a thousand files leave nearly every other number clear.
    #[test]
    fn the_bitmap_passes_every_watched_file_and_few_others() {
        let mut set = WatchSet::default();
        for ino in (1..=1000u64).map(|i| i * 7919) {
            set.entries.insert((2049, ino), watch::FILE);
        }
        set.entries.insert((2049, 424_242), 0); // a watched directory
        let words = set.bitmap();
        let is_set = |ino: u64| {
            let (word, bit) = watch::bit_of(ino);
            words[word as usize] & bit != 0
        };
        for &(_, ino) in set.entries.keys().filter(|k| k.1 != 424_242) {
            assert!(is_set(ino), "watched inode {ino} not in the bitmap");
        }
        let others = (10_000_000..10_100_000u64).filter(|&i| is_set(i)).count();
        assert!(others < 3_000, "{others} of 100,000 unwatched numbers pass");
        let mut directories = WatchSet::default();
        directories.entries.insert((2049, 424_242), 0);
        assert!(directories.bitmap().iter().all(|&w| w == 0));
    }

    #[test]
    fn bases_of_patterns() {
        assert_eq!(watch_base("/etc/shadow"), None);
        assert_eq!(watch_base("/root/.ssh/id_*"), Some(("/root/.ssh", false)));
        assert_eq!(
            watch_base("/root/.config/gcloud/**"),
            Some(("/root/.config/gcloud", true))
        );
        assert_eq!(
            watch_base("/etc/kubernetes/**/*.key"),
            Some(("/etc/kubernetes", true))
        );
        assert_eq!(watch_base("/etc/*/x"), Some(("/etc", true)));
        assert_eq!(watch_base("/*"), Some(("/", false)));
    }
}
