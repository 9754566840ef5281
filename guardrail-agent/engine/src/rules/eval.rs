//! Evaluating a rule set against an event: which rules match, which one
//! decides, and what it did.
//!
//! Precedence: `allow` rules exempt the rules they name; among the
//! remaining matches the strongest action decides (kill, which also
//! denies, then deny, then alert), and the first such rule in file order
//! names the decision. The
//! other matching rules are listed in `also`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use jiff::Timestamp;

use super::compile::{Rule, RuleSet};
use super::facts::{lineage_of, Facts};
use super::kinds::name_in;
use super::matchers::{CapsMatch, PathMatcher};
use super::spec::{Action, Fallback, Mode, ResultFilter};
use crate::event::{Decision, Event, Outcome, PathChange};

/// What the kernel can enforce on this host (see `guardrail status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enforcement {
    /// BPF-LSM is active and the deny programs are attached.
    pub deny: bool,
    /// Kill programs are attached.
    pub kill: bool,
}

type Matched = BTreeMap<String, String>;

/// Kill is strongest: in the kernel it denies the operation and kills.
fn strength(a: Action) -> u8 {
    match a {
        Action::Kill => 3,
        Action::Deny => 2,
        Action::Alert => 1,
        Action::Allow => 0,
    }
}

/// Evaluate `event` at instant `at` (for windows: the event's own time, so
/// replay gives the answer the live agent gave).
pub fn evaluate(
    set: &RuleSet,
    event: &Event,
    at: Timestamp,
    enforcement: Enforcement,
) -> Option<Decision> {
    let facts = Facts::of(event)?;
    let Judgement {
        mut matches,
        exempted,
        decider,
    } = judge::<Matched>(set, &facts, at)?;
    let rule = matches[decider].1;
    rule.hits.fetch_add(1, Ordering::Relaxed);
    let is_exempted = |r: &Rule| exempted.contains(&r.id.as_str());
    let ids = |keep: &dyn Fn(&Rule) -> bool| -> Vec<String> {
        matches
            .iter()
            .filter(|(_, r, _)| keep(r))
            .map(|(_, r, _)| r.id.clone())
            .collect()
    };
    let (also, exempted) = if rule.action == Action::Allow {
        // Only exceptions acted: the decision names the first, so that
        // every use of an exception is auditable.
        (vec![], ids(&|r| r.action != Action::Allow))
    } else {
        (
            ids(&|r| r.action != Action::Allow && !is_exempted(r) && r.id != rule.id),
            ids(&is_exempted),
        )
    };
    let (outcome, fallback) = outcome(rule, enforcement, facts.revertable());
    Some(Decision {
        rule: rule.id.clone(),
        action: rule.action,
        mode: rule.mode,
        severity: rule.severity,
        outcome,
        fallback,
        matched: std::mem::take(&mut matches[decider].2),
        also,
        exempted,
        reverted: None,
        fallback_error: None,
    })
}

/// What [`evaluate`] decides, without the explanation: the deciding rule
/// (its position in the set) and the outcome. Replay counts only these,
/// and a match that need not explain itself formats nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub rule: usize,
    pub outcome: Outcome,
}

/// [`evaluate`]'s decision, by the same rules, without explaining it (and
/// without counting it in the rule's `hits`).
pub fn decide(
    set: &RuleSet,
    event: &Event,
    at: Timestamp,
    enforcement: Enforcement,
) -> Option<Verdict> {
    decide_facts(set, &Facts::of(event)?, at, enforcement)
}

/// [`decide`] on an event's facts, however they were read.
pub fn decide_facts(
    set: &RuleSet,
    facts: &Facts,
    at: Timestamp,
    enforcement: Enforcement,
) -> Option<Verdict> {
    let j = judge::<Quiet>(set, facts, at)?;
    let (rule, r, _) = j.matches[j.decider];
    let (outcome, _) = outcome(r, enforcement, facts.revertable());
    Some(Verdict { rule, outcome })
}

/// The rules that match an event, what they exempt, and which decides.
struct Judgement<'s, W> {
    /// Each matching rule: its position in the set, the rule, and why it
    /// matched.
    matches: Vec<(usize, &'s Rule, W)>,
    /// The rules the matching `allow` rules exempt, by id.
    exempted: Vec<&'s str>,
    /// The deciding match (a position in `matches`): the strongest rule
    /// that acts (not an exception, not exempted), first in file order
    /// among equals; when only exceptions acted, the first of them.
    decider: usize,
}

thread_local! {
    /// The rules [`judge`] considers for an event: one list per thread,
    /// reused, rather than one allocated per event.
    static CANDIDATES: std::cell::Cell<Vec<usize>> = const { std::cell::Cell::new(Vec::new()) };
}

fn judge<'s, W: Why>(set: &'s RuleSet, facts: &Facts, at: Timestamp) -> Option<Judgement<'s, W>> {
    let kinds = facts.kinds;
    let subject = Subject::of(facts);
    // A mount or a moved directory can concern any rule's paths, which
    // the index (by the paths the event names) cannot know: those rare
    // events are tested against every rule.
    let change = &facts.change;
    let mut candidates = CANDIDATES.take();
    match change {
        None => set.candidates(&facts.paths, facts.exe.as_slice(), &mut candidates),
        Some(_) => set.every_rule(&mut candidates),
    }
    let mut matches = Vec::new();
    for &i in &candidates {
        let rule = &set.rules[i];
        let named = (rule.kinds & kinds != 0 && subject.may_match(rule))
            .then(|| matches_rule(set, rule, &subject, kinds, at, Reach::Named))
            .flatten();
        let matched = named.or_else(|| {
            let change = change.as_ref()?;
            subject
                .may_match_changed(rule)
                .then(|| matches_rule(set, rule, &subject, kinds, at, Reach::Changed(change)))
                .flatten()
        });
        if let Some(why) = matched {
            matches.push((i, rule, why));
        }
    }
    CANDIDATES.set(candidates);
    if matches.is_empty() {
        return None;
    }
    let exempted: Vec<&str> = matches
        .iter()
        .filter(|(_, r, _)| r.action == Action::Allow)
        .flat_map(|(_, r, _)| r.exempts.iter().map(String::as_str))
        .collect();
    let decider = matches
        .iter()
        .enumerate()
        .filter(|(_, (_, r, _))| r.action != Action::Allow && !exempted.contains(&r.id.as_str()))
        .max_by_key(|(_, (i, r, _))| (strength(r.action), std::cmp::Reverse(*i)))
        .map(|(at, _)| at)
        .or_else(|| {
            matches
                .iter()
                .position(|(_, r, _)| r.action == Action::Allow)
        })?;
    Some(Judgement {
        matches,
        exempted,
        decider,
    })
}

/// The outcome the agent can truthfully report, and the fallback used.
/// Kill and deny happen in the kernel; where the kernel cannot do them the
/// rule's fallback applies and the event says so.
fn outcome(rule: &Rule, e: Enforcement, revertable: bool) -> (Outcome, Option<Fallback>) {
    match (rule.action, rule.mode) {
        (Action::Alert, _) => (Outcome::Alerted, None),
        (Action::Allow, _) => (Outcome::Allowed, None),
        (Action::Kill, Mode::Monitor) => (Outcome::WouldKill, None),
        (Action::Deny, Mode::Monitor) => (Outcome::WouldDeny, None),
        (Action::Kill, Mode::Enforce) if e.kill => (Outcome::Killed, None),
        (Action::Kill, Mode::Enforce) => (Outcome::Alerted, Some(Fallback::Alert)),
        (Action::Deny, Mode::Enforce) if e.deny => (Outcome::Denied, None),
        (Action::Deny, Mode::Enforce) => match rule.fallback {
            Fallback::Kill if e.kill => (Outcome::Killed, Some(Fallback::Kill)),
            // The agent performs the revert and corrects the outcome if it
            // cannot (see `revert`).
            Fallback::Revert if revertable => (Outcome::Reverted, Some(Fallback::Revert)),
            Fallback::Kill | Fallback::Revert | Fallback::Alert => {
                (Outcome::Alerted, Some(Fallback::Alert))
            }
        },
    }
}

/// What a match tells of itself: every matcher it tested and what met it
/// (`Matched`, a live event's decision), or nothing (`Quiet`, replay's
/// counts, whose values are then never formatted).
trait Why: Default {
    fn note(&mut self, field: &str, value: impl FnOnce() -> String);
}

impl Why for Matched {
    fn note(&mut self, field: &str, value: impl FnOnce() -> String) {
        self.insert(field.into(), value());
    }
}

#[derive(Default)]
struct Quiet;

impl Why for Quiet {
    #[inline(always)]
    fn note(&mut self, _: &str, _: impl FnOnce() -> String) {}
}

fn check<W: Why>(why: &mut W, field: &str, ok: bool, value: impl FnOnce() -> String) -> Option<()> {
    if ok {
        why.note(field, value);
        Some(())
    } else {
        None
    }
}

/// A process's lineage as people read it, oldest first: `sshd → bash →
/// curl`.
pub fn lineage(process: &crate::event::Process) -> String {
    lineage_of(
        super::facts::Lineage::Event(&process.ancestors),
        process.ancestors_truncated,
        process.exe.as_deref(),
    )
}

/// How a rule's paths concern an event: by naming what the event names,
/// or through path integrity (the event changes what they resolve to).
#[derive(Clone, Copy)]
enum Reach<'c> {
    Named,
    Changed(&'c PathChange<'c>),
}

/// An event's facts, with what rules derive from them worked out once for
/// all the rules that ask rather than once per rule.
struct Subject<'f, 'e> {
    facts: &'f Facts<'e>,
    /// A chmod's new mode, parsed once.
    mode: Option<u32>,
    /// The ancestors' programs, listed once for all the rules that ask.
    ancestors: std::cell::OnceCell<Vec<&'e str>>,
}

impl<'f, 'e> Subject<'f, 'e> {
    fn of(facts: &'f Facts<'e>) -> Self {
        Self {
            facts,
            mode: facts
                .perm
                .and_then(|p| p.mode)
                .and_then(|m| u32::from_str_radix(m, 8).ok()),
            ancestors: std::cell::OnceCell::new(),
        }
    }

    fn ancestors(&self) -> &[&'e str] {
        self.ancestors.get_or_init(|| self.facts.ancestor_exes())
    }

    /// Conditions a matching rule must meet, checked without allocating:
    /// most rules fail one of them, and are then skipped before
    /// [`matches_rule`] builds the explanation of a match.
    fn may_match(&self, rule: &Rule) -> bool {
        must(&rule.path, &self.facts.paths) && self.may_match_but_path(rule)
    }

    /// [`Self::may_match`] for a rule reached through path integrity:
    /// whatever its kinds, a rule on paths whose other conditions hold.
    fn may_match_changed(&self, rule: &Rule) -> bool {
        rule.path.is_some() && self.may_match_but_path(rule)
    }

    fn may_match_but_path(&self, rule: &Rule) -> bool {
        let f = self.facts;
        let result = match rule.result {
            ResultFilter::Any => true,
            ResultFilter::Ok => f.ok,
            ResultFilter::Failed => !f.ok,
        };
        result
            && self.facts_may_match(rule)
            && must_not(&rule.path_not, &f.paths)
            && must(&rule.exe, f.exe.as_slice())
            && must_not(&rule.exe_not, f.exe.as_slice())
            && must(&rule.parent_exe, f.parent.as_slice())
            && must_not(&rule.parent_exe_not, f.parent.as_slice())
            && self.lineage_may_match(rule)
            && self.service_may_match(rule)
    }

    /// Matchers on numbers the event carries (ids, modes, owners,
    /// capabilities, cgroups): the cheapest tests, and for rules such as
    /// `setuid-bit` (no path) the ones that fail for nearly every event,
    /// so they go before globs over paths and lineages. Each says no
    /// exactly when [`matches_rule`] would.
    fn facts_may_match(&self, rule: &Rule) -> bool {
        let p = self.facts;
        let ids_ok = [
            (&rule.uid, Some(p.uid)),
            (&rule.euid, Some(p.euid)),
            (&rule.gid, Some(p.gid)),
            (&rule.auid, p.auid),
        ]
        .iter()
        .all(|(m, id)| !m.is_set() || m.matches(*id));
        if !ids_ok {
            return false;
        }
        let needs_perm = rule.mode_mask.is_some()
            || rule.owner.is_some()
            || rule.owner_group.is_some()
            || rule.to_root.is_some()
            || rule.caps_gained.is_some();
        if needs_perm {
            let Some(perm) = p.perm else {
                return false;
            };
            if let Some(mask) = rule.mode_mask {
                if self.mode.is_none_or(|m| m & mask == 0) {
                    return false;
                }
            }
            if let Some(uids) = &rule.owner {
                if perm
                    .owner
                    .and_then(|(uid, _)| uid)
                    .is_none_or(|u| !uids.contains(&u))
                {
                    return false;
                }
            }
            if let Some(gids) = &rule.owner_group {
                if perm
                    .owner
                    .and_then(|(_, gid)| gid)
                    .is_none_or(|g| !gids.contains(&g))
                {
                    return false;
                }
            }
            if let Some(want) = rule.to_root {
                if perm.to_root != Some(want) {
                    return false;
                }
            }
            if let Some(caps) = &rule.caps_gained {
                let Some(gained) = perm.gained else {
                    return false;
                };
                let hit = match caps {
                    CapsMatch::Any => !gained.is_empty(),
                    CapsMatch::AnyOf(names) => gained.iter().any(|g| names.iter().any(|n| n == g)),
                };
                if !hit {
                    return false;
                }
            }
        }
        rule.cgroup_id
            .as_ref()
            .is_none_or(|ids| ids.contains(&p.cgroup_id))
            && rule
                .cgroup_id_not
                .as_ref()
                .is_none_or(|ids| !ids.contains(&p.cgroup_id))
    }

    /// Unit and container matchers.
    fn service_may_match(&self, rule: &Rule) -> bool {
        let unit = self.facts.unit;
        rule.unit
            .as_ref()
            .is_none_or(|set| unit.is_some_and(|u| set.is_match(u)))
            && rule
                .unit_not
                .as_ref()
                .is_none_or(|set| !unit.is_some_and(|u| set.is_match(u)))
            && rule
                .container
                .as_ref()
                .is_none_or(|m| m.matches(self.facts.container))
    }

    /// Ancestor matchers, whose list is built only for the rules that
    /// have them.
    fn lineage_may_match(&self, rule: &Rule) -> bool {
        if rule.ancestor_exe.is_none() && rule.ancestor_exe_not.is_none() {
            return true;
        }
        let ancestors = self.ancestors();
        rule.ancestor_exe
            .as_ref()
            .is_none_or(|m| m.matches_any(ancestors))
            && rule
                .ancestor_exe_not
                .as_ref()
                .is_none_or(|m| !m.matches_any(ancestors))
    }
}

/// Whether `rule` matches, and why (every matcher it tested).
fn matches_rule<W: Why>(
    set: &RuleSet,
    rule: &Rule,
    subject: &Subject,
    kinds: u32,
    at: Timestamp,
    reach: Reach,
) -> Option<W> {
    let facts = subject.facts;
    let mut m = W::default();
    let on = match reach {
        Reach::Named => name_in(rule.kinds, kinds),
        // Whatever the rule lists: the event's own kind.
        Reach::Changed(_) => name_in(u32::MAX, kinds),
    };
    m.note("on", || on.into());
    match rule.result {
        ResultFilter::Any => {}
        ResultFilter::Ok => check(&mut m, "result", facts.ok, || "ok".into())?,
        ResultFilter::Failed => check(&mut m, "result", !facts.ok, || "failed".into())?,
    }
    let paths = &facts.paths;
    match (&rule.path, reach) {
        (Some(p), Reach::Named) => {
            let (path, _) = p.find(paths)?;
            m.note("path", || path.into());
        }
        (Some(p), Reach::Changed(change)) => {
            let (path, pattern) = match change {
                PathChange::Below(at) => p.find_above(at, false)?,
                PathChange::AtAndBelow(at) => p.find_above(at, true)?,
                PathChange::Everywhere => (
                    paths.first().copied().unwrap_or("/"),
                    p.patterns.first()?.as_str(),
                ),
            };
            m.note("path", || path.into());
            m.note("path_integrity", || {
                format!("changes what {pattern} resolves to")
            });
        }
        (None, Reach::Named) => {}
        (None, Reach::Changed(_)) => return None,
    }
    if let Some(p) = &rule.path_not {
        if p.find(paths).is_some() {
            return None;
        }
    }
    let exe = facts.exe;
    let exes = facts.exe.as_slice();
    if let Some(p) = &rule.exe {
        let (e, _) = p.find(exes)?;
        m.note("exe", || e.into());
    }
    if let Some(p) = &rule.exe_not {
        if p.find(exes).is_some() {
            return None;
        }
        m.note("exe_not", || exe.unwrap_or("unknown").into());
    }
    let parents = facts.parent.as_slice();
    if let Some(p) = &rule.parent_exe {
        let (e, _) = p.find(parents)?;
        m.note("parent_exe", || e.into());
    }
    if let Some(p) = &rule.parent_exe_not {
        if p.find(parents).is_some() {
            return None;
        }
    }
    let unit = facts.unit;
    if let Some(set) = &rule.unit {
        let u = unit.filter(|u| set.is_match(u))?;
        m.note("unit", || u.into());
    }
    if let Some(set) = &rule.unit_not {
        if unit.is_some_and(|u| set.is_match(u)) {
            return None;
        }
        m.note("unit_not", || unit.unwrap_or("none").into());
    }
    if let Some(c) = &rule.container {
        if !c.matches(facts.container) {
            return None;
        }
        m.note("container", || {
            facts
                .container
                .map_or("none".into(), |c| format!("{} {}", c.runtime, c.id))
        });
    }
    if rule.ancestor_exe.is_some() || rule.ancestor_exe_not.is_some() {
        let ancestors = subject.ancestors();
        if let Some(p) = &rule.ancestor_exe {
            let (e, _) = p.find(ancestors)?;
            m.note("ancestor_exe", || e.into());
        }
        if let Some(p) = &rule.ancestor_exe_not {
            if p.find(ancestors).is_some() {
                return None;
            }
            m.note("ancestor_exe_not", || facts.lineage());
        }
    }
    if !rule.argv_contains.is_empty() || rule.argv_matches.is_some() {
        let argv = facts.argv?;
        if !rule.argv_contains.is_empty() {
            let hit = rule
                .argv_contains
                .iter()
                .find(|needle| argv.iter().any(|a| a.contains(needle.as_str())))?;
            m.note("argv_contains", || hit.clone());
        }
        if let Some(re) = &rule.argv_matches {
            let joined = argv.iter().collect::<Vec<_>>().join(" ");
            check(&mut m, "argv_matches", re.is_match(&joined), || joined)?;
        }
    }
    for (field, matcher, id) in [
        ("uid", &rule.uid, Some(facts.uid)),
        ("euid", &rule.euid, Some(facts.euid)),
        ("gid", &rule.gid, Some(facts.gid)),
        ("auid", &rule.auid, facts.auid),
    ] {
        if matcher.is_set() {
            let value = || id.map_or("unset".to_string(), |i| i.to_string());
            check(&mut m, field, matcher.matches(id), value)?;
        }
    }
    if let Some(mask) = rule.mode_mask {
        let text = facts.perm?.mode?;
        let mode = subject.mode?;
        check(&mut m, "mode", mode & mask != 0, || text.into())?;
    }
    if rule.owner.is_some() || rule.owner_group.is_some() {
        let owner = facts.perm?.owner?;
        if let Some(uids) = &rule.owner {
            let uid = owner.0?;
            check(&mut m, "owner", uids.contains(&uid), || uid.to_string())?;
        }
        if let Some(gids) = &rule.owner_group {
            let gid = owner.1?;
            check(&mut m, "owner_group", gids.contains(&gid), || {
                gid.to_string()
            })?;
        }
    }
    if let Some(want) = rule.to_root {
        let to_root = facts.perm?.to_root?;
        check(&mut m, "to_root", to_root == want, || to_root.to_string())?;
    }
    if let Some(caps) = &rule.caps_gained {
        let gained = facts.perm?.gained?;
        let hit = match caps {
            CapsMatch::Any => gained.first(),
            CapsMatch::AnyOf(names) => gained.iter().find(|g| names.iter().any(|n| n == g)),
        }?;
        m.note("caps_gained", || hit.into());
    }
    if !rule.in_window.is_empty() {
        let w = rule
            .in_window
            .iter()
            .map(|&i| &set.windows[i])
            .find(|w| w.is_active(at))?;
        m.note("in_window", || w.name.clone());
    }
    if rule
        .outside_window
        .iter()
        .any(|&i| set.windows[i].is_active(at))
    {
        return None;
    }
    if !rule.outside_window.is_empty() {
        m.note("outside_window", || "yes".into());
    }
    if let Some(ids) = &rule.cgroup_id {
        check(&mut m, "cgroup_id", ids.contains(&facts.cgroup_id), || {
            facts.cgroup_id.to_string()
        })?;
    }
    if let Some(ids) = &rule.cgroup_id_not {
        if ids.contains(&facts.cgroup_id) {
            return None;
        }
    }
    Some(m)
}

/// A rule's matcher, if it has one, matches one of `of`.
fn must(m: &Option<Box<PathMatcher>>, of: &[&str]) -> bool {
    m.as_ref().is_none_or(|m| m.matches_any(of))
}

/// A rule's exclusion, if it has one, matches none of `of`.
fn must_not(m: &Option<Box<PathMatcher>>, of: &[&str]) -> bool {
    m.as_ref().is_none_or(|m| !m.matches_any(of))
}

/// The rules that match `event` but that the allocation-free pre-check
/// would have skipped (must be none: a skipped match is a missed decision).
#[cfg(test)]
pub(super) fn skipped_matches<'s>(set: &'s RuleSet, event: &Event, at: Timestamp) -> Vec<&'s str> {
    let Some(facts) = Facts::of(event) else {
        return vec![];
    };
    let kinds = facts.kinds;
    let subject = Subject::of(&facts);
    let change = &facts.change;
    set.rules
        .iter()
        .filter(|r| {
            let named = r.kinds & kinds != 0
                && matches_rule::<Matched>(set, r, &subject, kinds, at, Reach::Named).is_some()
                && !subject.may_match(r);
            let changed = change.as_ref().is_some_and(|c| {
                matches_rule::<Matched>(set, r, &subject, kinds, at, Reach::Changed(c)).is_some()
                    && !subject.may_match_changed(r)
            });
            named || changed
        })
        .map(|r| r.id.as_str())
        .collect()
}
