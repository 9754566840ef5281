//! What a compiled rule matches with: paths (globs, with the directories
//! above them for rules that guard a subtree), ids, capabilities and
//! containers.

use globset::{Glob, GlobSet};

use super::globs::Globs;

/// Paths and executables: exact (`/etc/shadow`), a subtree
/// (`/etc/nginx/**`, which includes `/etc/nginx` itself) or a glob (`*`
/// does not cross `/`).
#[derive(Clone, Debug)]
pub struct PathMatcher {
    pub(super) set: Globs,
    /// The globs of `set`, for the rule set's index.
    pub(super) globs: Vec<Glob>,
    /// Which pattern each glob of `set` came from.
    pub(super) origin: Vec<usize>,
    /// The directories above what the patterns name (see
    /// [`ancestor_globs`]), and which pattern each came from.
    pub(super) above: Globs,
    pub(super) above_origin: Vec<usize>,
    pub patterns: Vec<String>,
}

impl PathMatcher {
    /// Whether any of `candidates` matches; allocates nothing.
    pub fn matches_any(&self, candidates: &[&str]) -> bool {
        candidates.iter().any(|c| self.set.is_match(c))
    }

    /// The first of `candidates` that is a directory above something a
    /// pattern names (or, with `inclusive`, that thing itself), with the
    /// pattern: replacing it (a mount, a rename) changes what the pattern
    /// resolves to.
    pub fn find_above<'a>(
        &self,
        candidates: &[&'a str],
        inclusive: bool,
    ) -> Option<(&'a str, &str)> {
        if inclusive {
            if let Some(hit) = self.find(candidates) {
                return Some(hit);
            }
        }
        candidates.iter().find_map(|c| {
            self.above
                .first(c)
                .map(|i| (*c, self.patterns[self.above_origin[i]].as_str()))
        })
    }

    /// The first of `candidates` that matches, with the pattern it matched.
    pub fn find<'a>(&self, candidates: &[&'a str]) -> Option<(&'a str, &str)> {
        candidates.iter().find_map(|c| {
            self.set
                .first(c)
                .map(|i| (*c, self.patterns[self.origin[i]].as_str()))
        })
    }
}

/// Globs for the directories above what absolute `pattern` names: each
/// strict ancestor (`/`, `/etc`, `/etc/ssh` for `/etc/ssh/sshd_config`),
/// and past a `**` in the middle every directory under the part before
/// it. A `/` inside `{…}` or `[…]` does not split components.
pub fn ancestor_globs(pattern: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in pattern.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&pattern[start..]);
    // parts[0] is the empty text before the leading `/`; the last part is
    // the named object itself.
    let mut out = vec!["/".to_string()];
    let mut prefix = String::new();
    let inner = parts.len().saturating_sub(1);
    for part in parts.iter().take(inner).skip(1) {
        if part.contains("**") {
            out.push(format!("{prefix}/**"));
            break;
        }
        prefix.push('/');
        prefix.push_str(part);
        out.push(prefix.clone());
    }
    out
}

/// A pattern the kernel can evaluate: an exact path or a `/**` subtree.
pub fn is_kernel_path(pattern: &str) -> bool {
    // `~*/…` and `~name/…` expand to exact home directories.
    let pattern = match pattern.strip_prefix('~') {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, tail)| tail),
        None => pattern,
    };
    let base = pattern.strip_suffix("/**").unwrap_or(pattern);
    !base.contains(['*', '?', '[', '{'])
}

#[derive(Clone, Debug, Default)]
pub struct IdMatcher {
    pub any_of: Option<Vec<u32>>,
    pub none_of: Option<Vec<u32>>,
}

impl IdMatcher {
    pub fn is_set(&self) -> bool {
        self.any_of.is_some() || self.none_of.is_some()
    }
    pub fn matches(&self, id: Option<u32>) -> bool {
        let yes = self
            .any_of
            .as_ref()
            .is_none_or(|ids| id.is_some_and(|i| ids.contains(&i)));
        let no = self
            .none_of
            .as_ref()
            .is_some_and(|ids| id.is_some_and(|i| ids.contains(&i)));
        yes && !no
    }
}

#[derive(Clone, Debug)]
pub enum CapsMatch {
    Any,
    AnyOf(Vec<String>),
}

/// What a rule's `container` asks for.
#[derive(Clone, Debug)]
pub enum ContainerMatcher {
    /// In any container.
    Any,
    /// Not in a container (as far as the cgroup path shows).
    None,
    /// In a container whose id matches.
    Ids(GlobSet),
}

impl ContainerMatcher {
    pub fn matches(&self, container: Option<super::facts::ContainerRef>) -> bool {
        match (self, container) {
            (ContainerMatcher::Any, c) => c.is_some(),
            (ContainerMatcher::None, c) => c.is_none(),
            (ContainerMatcher::Ids(set), Some(c)) => set.is_match(c.id),
            (ContainerMatcher::Ids(_), None) => false,
        }
    }
}
