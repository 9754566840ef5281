//! What `guardrail log search` (and `log report`) select, besides the time
//! range: every criterion given must hold; a criterion given several
//! times (`--rule a --rule b`) holds when any of its values does.

use std::collections::HashSet;
use std::sync::Arc;

use globset::GlobMatcher;

use super::Parsed;
use crate::event::{Body, Outcome, Process};
use crate::rules::kinds;

/// Decision outcomes (docs/rules.md).
pub const OUTCOMES: &[&str] = &{
    let mut names = [""; Outcome::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Outcome::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Record families; besides these, `--kind` takes the kinds rules name
/// (`file.write`, `perm.*`).
const FAMILIES: &[&str] = &["exec", "file", "perm", "loss", "log_gap"];

#[derive(Clone, Debug, Default)]
pub struct Criteria {
    /// `decision.rule`.
    pub rules: Vec<String>,
    /// `decision.outcome`.
    pub outcomes: Vec<String>,
    /// A family (`exec`, `file`, `perm`, `loss`, `log_gap`) or a rule kind
    /// (`file.write`, `file.*`).
    pub kinds: Vec<String>,
    /// Glob on any path the event names (canonical).
    pub path: Option<String>,
    /// Glob on `process.exe`.
    pub exe: Option<String>,
    pub pid: Option<u32>,
    /// `process.id` (`PID@START`).
    pub process_id: Option<String>,
    /// A `process.id`: that process and every process it created, however
    /// deep.
    pub lineage: Option<String>,
    /// `process.uid`.
    pub uid: Option<u32>,
    /// `process.auid` (login uid).
    pub login_uid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CriteriaError {
    #[error("unknown kind {name:?}{hint}: expected exec, file, perm, loss, log_gap, or a rule kind ({})", kinds::KINDS.join(", "))]
    Kind { name: String, hint: String },
    #[error("unknown outcome {name:?}{hint}: expected one of {}", OUTCOMES.join(", "))]
    Outcome { name: String, hint: String },
    #[error(transparent)]
    Glob(#[from] crate::filter::FilterError),
    #[error("{0:?} is not a process id: expected PID@START, as in an event's process.id")]
    ProcessId(String),
}

fn did_you_mean(name: &str, candidates: &[&str]) -> String {
    kinds::closest(name, candidates).map_or(String::new(), |c| format!(" (did you mean {c:?}?)"))
}

enum Kind {
    Family(&'static str),
    Mask(u32),
}

/// [`Criteria`] compiled. Stateful: `--lineage` learns the processes of
/// the tree as it reads, so it must see records in log order.
pub struct Matcher {
    c: Criteria,
    kinds: Vec<Kind>,
    path: Option<GlobMatcher>,
    exe: Option<GlobMatcher>,
    /// The lineage's process ids seen so far.
    lineage: Option<HashSet<Arc<str>>>,
}

impl Criteria {
    pub fn compile(&self) -> Result<Matcher, CriteriaError> {
        let mut compiled = Vec::new();
        for k in &self.kinds {
            if let Some(f) = FAMILIES.iter().find(|f| *f == k) {
                compiled.push(Kind::Family(f));
            } else if let Some(mask) = kinds::mask_of(k) {
                compiled.push(Kind::Mask(mask));
            } else {
                let all: Vec<&str> = FAMILIES.iter().chain(kinds::KINDS).copied().collect();
                return Err(CriteriaError::Kind {
                    name: k.clone(),
                    hint: did_you_mean(k, &all),
                });
            }
        }
        for o in &self.outcomes {
            if !OUTCOMES.contains(&o.as_str()) {
                return Err(CriteriaError::Outcome {
                    name: o.clone(),
                    hint: did_you_mean(o, OUTCOMES),
                });
            }
        }
        for id in [&self.process_id, &self.lineage].into_iter().flatten() {
            let ok = id
                .split_once('@')
                .is_some_and(|(p, s)| p.parse::<u32>().is_ok() && s.parse::<u64>().is_ok());
            if !ok {
                return Err(CriteriaError::ProcessId(id.clone()));
            }
        }
        Ok(Matcher {
            kinds: compiled,
            path: crate::filter::glob(&self.path)?,
            exe: crate::filter::glob(&self.exe)?,
            lineage: self
                .lineage
                .as_ref()
                .map(|id| HashSet::from([Arc::from(id.as_str())])),
            c: self.clone(),
        })
    }
}

impl Matcher {
    /// Whether any criterion is set (an unfiltered search shows every
    /// record, `loss` and `log_gap` included).
    pub fn narrows(&self) -> bool {
        let c = &self.c;
        !(c.rules.is_empty()
            && c.outcomes.is_empty()
            && c.kinds.is_empty()
            && c.path.is_none()
            && c.exe.is_none()
            && c.pid.is_none()
            && c.process_id.is_none()
            && c.lineage.is_none()
            && c.uid.is_none()
            && c.login_uid.is_none())
    }

    pub fn matches(&mut self, record: &Parsed) -> bool {
        let event = match record {
            Parsed::Gap { .. } => {
                return !self.narrows() || self.kinds.iter().any(|k| family_is(k, "log_gap"))
            }
            Parsed::Event(e) => e,
        };
        let Some(process) = event.body.process() else {
            // A loss report names no process: shown unfiltered, or asked
            // for by kind.
            return !self.narrows() || self.kinds.iter().any(|k| family_is(k, "loss"));
        };
        // First, whatever the other criteria say: a descendant is known
        // by its ancestors, and its own children by it.
        if !self.in_lineage(process) {
            return false;
        }
        let c = &self.c;
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| kind_matches(k, &event.body)) {
            return false;
        }
        if !c.rules.is_empty() || !c.outcomes.is_empty() {
            let Some(d) = &event.decision else {
                return false;
            };
            if !c.rules.is_empty() && !c.rules.contains(&d.rule) {
                return false;
            }
            if !c.outcomes.is_empty() && !c.outcomes.iter().any(|o| o == d.outcome.as_str()) {
                return false;
            }
        }
        if c.pid.is_some_and(|pid| pid != process.pid)
            || c.uid.is_some_and(|uid| uid != process.uid)
            || c.login_uid.is_some_and(|a| Some(a) != process.auid)
        {
            return false;
        }
        if let Some(id) = &c.process_id {
            if process.id.as_deref() != Some(id.as_str()) {
                return false;
            }
        }
        if let Some(g) = &self.exe {
            if !process.exe.as_deref().is_some_and(|e| g.is_match(e)) {
                return false;
            }
        }
        if let Some(g) = &self.path {
            if !event.body.paths().iter().any(|p| g.is_match(p)) {
                return false;
            }
        }
        true
    }

    fn in_lineage(&mut self, p: &Process) -> bool {
        let Some(ids) = &mut self.lineage else {
            return true;
        };
        let known = |ids: &HashSet<Arc<str>>, id: &Option<Arc<str>>| {
            id.as_ref().is_some_and(|id| ids.contains(id))
        };
        if known(ids, &p.id) {
            return true;
        }
        // The nearest ancestor in the lineage: the processes between it and
        // this one are in the lineage too. Events name at most 8
        // ancestors: remembering them finds descendants deeper than that.
        let mut between: Vec<Arc<str>> = p.id.iter().cloned().collect();
        if known(ids, &p.parent_id) {
            ids.extend(between);
            return true;
        }
        between.extend(p.parent_id.iter().cloned());
        for a in p.ancestors.iter() {
            if known(ids, &a.id) {
                ids.extend(between);
                return true;
            }
            between.extend(a.id.iter().cloned());
        }
        false
    }
}

fn family_is(k: &Kind, family: &str) -> bool {
    matches!(k, Kind::Family(f) if *f == family)
}

fn kind_matches(k: &Kind, body: &Body) -> bool {
    match k {
        Kind::Family(f) => *f == body.kind(),
        Kind::Mask(m) => m & kinds::mask_of_event(body) != 0,
    }
}
