//! The rule index: which rules an event can concern, found with one
//! glob-set match per path and executable instead of one per rule.

use std::collections::HashMap;

use globset::{GlobSet, GlobSetBuilder};

use super::matchers::PathMatcher;

/// Which rules an event can concern, found with one glob-set match per
/// path and executable instead of one per rule: a rule with a `path`
/// matcher only for events with a matching path, one with an `exe` (and no
/// `path`) only for a matching executable, the others always.
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// How many rules the index was built for: a set changed without
    /// reindexing is evaluated rule by rule rather than wrongly.
    rules: usize,
    by_path: GlobSet,
    path_rule: Vec<usize>,
    by_exe: GlobSet,
    exe_rule: Vec<usize>,
    others: Vec<usize>,
    /// The rules each path (`[0]`) and executable (`[1]`) seen lately
    /// matched: on a busy host the same ones come back again and again,
    /// and a lookup costs a tenth of matching every rule's globs.
    memo: [std::sync::Mutex<Matches>; 2],
}

/// Rule indices by the string that matched them. Looked up for every
/// event: foldhash, not SipHash (the keys are the host's own paths).
type Matches = HashMap<Box<str>, Box<[usize]>, foldhash::fast::RandomState>;

/// Strings remembered per glob set; full, it starts over.
const MEMO_MAX: usize = 4096;

impl RuleIndex {
    /// The index of rules with these `path` and `exe` matchers, in file
    /// order.
    pub fn build<'a>(
        rules: impl ExactSizeIterator<Item = (Option<&'a PathMatcher>, Option<&'a PathMatcher>)>,
    ) -> Self {
        let (mut paths, mut exes) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let mut index = RuleIndex {
            rules: rules.len(),
            ..Default::default()
        };
        for (i, (path, exe)) in rules.enumerate() {
            let (builder, owners, matcher) = match (path, exe) {
                (Some(p), _) => (&mut paths, &mut index.path_rule, p),
                (None, Some(e)) => (&mut exes, &mut index.exe_rule, e),
                (None, None) => {
                    index.others.push(i);
                    continue;
                }
            };
            for g in &matcher.globs {
                builder.add(g.clone());
                owners.push(i);
            }
        }
        // The globs compiled once already, in their own rule.
        index.by_path = paths.build().unwrap_or_default();
        index.by_exe = exes.build().unwrap_or_default();
        index
    }

    /// The rules that may match an event with these paths and executables,
    /// in file order, into `hit`; false when the index was not built for
    /// `rules` rules. `hit` is the caller's, kept from event to event.
    ///
    /// The rules found are gathered and sorted rather than marked in a
    /// table of every rule: an event concerns a few rules, and walking a
    /// thousand-rule table per event cost more than matching.
    pub fn candidates(
        &self,
        rules: usize,
        paths: &[&str],
        exes: &[&str],
        hit: &mut Vec<usize>,
    ) -> bool {
        if self.rules != rules {
            return false;
        }
        hit.clear();
        hit.extend_from_slice(&self.others);
        let mut found = Vec::new();
        for (memo, set, owners, of) in [
            (&self.memo[0], &self.by_path, &self.path_rule, paths),
            (&self.memo[1], &self.by_exe, &self.exe_rule, exes),
        ] {
            if of.is_empty() {
                continue;
            }
            let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
            for c in of {
                if let Some(matched) = memo.get(*c) {
                    hit.extend_from_slice(matched);
                    continue;
                }
                set.matches_into(c, &mut found);
                let mut matched: Vec<usize> = found.iter().map(|&g| owners[g]).collect();
                // A rule with several globs that match counts once.
                matched.sort_unstable();
                matched.dedup();
                hit.extend_from_slice(&matched);
                if memo.len() >= MEMO_MAX {
                    memo.clear();
                }
                memo.insert((*c).into(), matched.into_boxed_slice());
            }
        }
        hit.sort_unstable();
        hit.dedup();
        true
    }
}
