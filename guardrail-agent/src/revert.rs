//! The `revert` fallback: where the kernel cannot deny a mode or owner
//! change, the agent puts the previous mode/owner back from a baseline it
//! keeps of the files that deny rules with `fallback = "revert"` protect.
//!
//! The baseline is taken when the rules load and follows changes that no
//! such rule reverted (allowed changes), so a legitimate chmod by an
//! exempted tool becomes the new baseline.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use guardrail_engine::event::{Body, Event, Reverted};
use guardrail_engine::rules::compile::Rule;
use guardrail_engine::rules::matchers::PathMatcher;
use guardrail_engine::rules::spec::{Action, Fallback, Mode};
use guardrail_engine::rules::RuleSet;

/// Files under one subtree the baseline covers at most.
const MAX_FILES_PER_TREE: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Default)]
pub struct Baseline {
    files: HashMap<PathBuf, Attrs>,
}

fn attrs(path: &Path) -> Option<Attrs> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(Attrs {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

/// Rules whose kernel denial falls back to revert.
pub fn revert_rules(set: &RuleSet) -> impl Iterator<Item = &Rule> {
    set.rules.iter().filter(|r| {
        r.action == Action::Deny && r.mode == Mode::Enforce && r.fallback == Fallback::Revert
    })
}

fn add_tree(files: &mut HashMap<PathBuf, Attrs>, root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let mut count = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            count += 1;
            if count > MAX_FILES_PER_TREE {
                warn!(tree = %root.display(), "revert baseline stops at {MAX_FILES_PER_TREE} files");
                return;
            }
            let p = e.path();
            if let Some(a) = attrs(&p) {
                files.insert(p.clone(), a);
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
}

fn add_matcher(files: &mut HashMap<PathBuf, Attrs>, m: &PathMatcher) {
    for pattern in &m.patterns {
        let base = pattern.strip_suffix("/**").unwrap_or(pattern);
        let base = if base.is_empty() { "/" } else { base };
        if let Some(a) = attrs(Path::new(base)) {
            files.insert(PathBuf::from(base), a);
        }
        if pattern.ends_with("/**") {
            add_tree(files, Path::new(base));
        }
    }
}

impl Baseline {
    /// Take the baseline of every file the revert rules of `set` name.
    pub fn of(set: &RuleSet) -> Self {
        let mut files = HashMap::new();
        for r in revert_rules(set) {
            if let Some(m) = &r.path {
                add_matcher(&mut files, m);
            }
        }
        Baseline { files }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Put back the baseline mode and owner of the file `event` changed.
    pub fn revert(&self, body: &Body) -> Result<Reverted, String> {
        let Body::Perm { perm, .. } = body else {
            return Err("only mode and owner changes can be reverted".into());
        };
        let path = perm.path.as_deref().ok_or("the event names no path")?;
        let base = self
            .files
            .get(Path::new(path))
            .ok_or_else(|| format!("no baseline for {path}"))?;
        let p = Path::new(path);
        // Owner first: chown clears setuid/setgid bits, chmod then restores.
        std::os::unix::fs::lchown(p, Some(base.uid), Some(base.gid))
            .map_err(|e| format!("chown {path}: {e}"))?;
        let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(base.mode))
                .map_err(|e| format!("chmod {path}: {e}"))?;
        }
        Ok(Reverted {
            mode: format!("{:04o}", base.mode),
            uid: base.uid,
            gid: base.gid,
        })
    }

    /// Follow a change no revert rule undid: it is the new baseline.
    pub fn follow(&mut self, event: &Event) {
        if let Body::Perm { perm, result, .. } = &event.body {
            if let (Some(path), true) = (&perm.path, result.ok) {
                let p = PathBuf::from(path);
                let now = attrs(&p);
                if let (Some(known), Some(now)) = (self.files.get_mut(&p), now) {
                    *known = now;
                }
            }
        }
    }
}
