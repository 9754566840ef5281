//! A rule's globs, matched without building a glob set for the shapes
//! almost every rule uses: an exact path (`/etc/shadow`) and a literal
//! subtree (`/srv/app/**`). Building a `GlobSet` costs ~60 µs and tens of
//! kilobytes for a prefix (an Aho-Corasick automaton), once per matcher:
//! with a thousand rules that was a third of the agent's start-up. The
//! answers are those of the `GlobSet` (a test compares them).

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Clone, Debug, Default)]
pub struct Globs {
    /// Exact paths, with the lowest index of a glob naming each.
    exact: HashMap<Box<str>, usize>,
    /// `base/**` globs as `(base/, index)`: a path matches when it starts
    /// with `base/` (what `GlobSet` checks for such a glob, too).
    prefixes: Vec<(Box<str>, usize)>,
    /// Every other glob, and the index each had in the list.
    rest: GlobSet,
    rest_index: Vec<usize>,
}

/// Characters with a meaning in a glob: a pattern without any is literal.
fn is_literal(s: &str) -> bool {
    !s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

impl Globs {
    /// Globs built with `literal_separator(true)` and no case folding, as
    /// rules build them.
    pub fn new(globs: &[Glob]) -> Result<Globs, globset::Error> {
        let mut out = Globs::default();
        let mut rest = GlobSetBuilder::new();
        for (i, g) in globs.iter().enumerate() {
            let text = g.glob();
            match text.strip_suffix("/**") {
                // `/**` alone is left to the glob set: it is not "starts
                // with /" there.
                Some(base) if !base.is_empty() && is_literal(base) => {
                    out.prefixes.push((format!("{base}/").into(), i));
                }
                _ if is_literal(text) => {
                    out.exact.entry(text.into()).or_insert(i);
                }
                _ => {
                    rest.add(g.clone());
                    out.rest_index.push(i);
                }
            }
        }
        if !out.rest_index.is_empty() {
            out.rest = rest.build()?;
        }
        Ok(out)
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.exact.contains_key(path)
            || self.prefixes.iter().any(|(p, _)| path.starts_with(&**p))
            || (!self.rest_index.is_empty() && self.rest.is_match(path))
    }

    /// The lowest index of a glob that matches `path`.
    pub fn first(&self, path: &str) -> Option<usize> {
        let exact = self.exact.get(path).copied();
        let prefix = self
            .prefixes
            .iter()
            .filter(|(p, _)| path.starts_with(&**p))
            .map(|&(_, i)| i)
            .min();
        let rest = if self.rest_index.is_empty() {
            None
        } else {
            self.rest.matches(path).first().map(|&k| self.rest_index[k])
        };
        [exact, prefix, rest].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use globset::GlobBuilder;
    use proptest::prelude::*;

    fn glob(s: &str) -> Glob {
        GlobBuilder::new(s).literal_separator(true).build().unwrap()
    }

    /// Pieces of patterns and paths, so that random ones often match.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "etc", "a", "b", "**", "*", "?", "[ab]", "{a,etc}", ".", "\n", "é",
        ])
    }

    fn joined(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..max).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn same_answers_as_a_glob_set(
            patterns in prop::collection::vec(joined(6).prop_map(|p| format!("/{p}")), 1..5),
            subtree in prop::collection::vec(prop::sample::select(vec!["/etc", "/a/b", "/etc/a"]), 0..3),
            path in joined(7),
        ) {
            let mut texts = patterns.clone();
            texts.extend(subtree.iter().map(|b| b.to_string()));
            texts.extend(subtree.iter().map(|b| format!("{b}/**")));
            let globs: Vec<Glob> = texts
                .iter()
                .filter_map(|p| GlobBuilder::new(p).literal_separator(true).build().ok())
                .collect();
            let mut set = GlobSetBuilder::new();
            for g in &globs {
                set.add(g.clone());
            }
            let set = set.build().unwrap();
            let ours = Globs::new(&globs).unwrap();
            let path = format!("/{path}");
            prop_assert_eq!(ours.is_match(&path), set.is_match(&path), "{:?} on {}", patterns, path);
            prop_assert_eq!(ours.first(&path), set.matches(&path).first().copied(), "{:?} on {}", patterns, path);
        }
    }

    #[test]
    fn shapes() {
        let g = Globs::new(&[
            glob("/etc/nginx/**"),
            glob("/etc/nginx"),
            glob("/etc/*.conf"),
        ])
        .unwrap();
        assert_eq!(g.first("/etc/nginx/a/b"), Some(0));
        assert_eq!(g.first("/etc/nginx"), Some(1));
        assert_eq!(g.first("/etc/nginxx"), None);
        assert_eq!(g.first("/etc/x.conf"), Some(2));
        assert_eq!(g.first("/etc/a/x.conf"), None);
        assert!(g.exact.len() == 1 && g.prefixes.len() == 1 && g.rest_index.len() == 1);
    }
}
