//! `guardrail rules test`: replay recorded events against a candidate rule
//! set, to see what a guardrail would do before enforcing it.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Serialize;

use crate::event::{Body, Event};
use crate::rules::eval::Enforcement;
use crate::rules::{evaluate, RuleSet};

/// What one rule would have done over the replayed events.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RuleReport {
    pub rule: String,
    pub hits: u64,
    /// Decisions by outcome (alerted, would_deny, …).
    pub outcomes: BTreeMap<String, u64>,
    /// The first few events it decided on.
    pub examples: Vec<Example>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Example {
    pub seq: u64,
    pub time: String,
    pub op: String,
    pub exe: Option<String>,
    pub path: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    pub events: u64,
    /// Lines that were not events (bad JSON, other records).
    pub skipped_lines: u64,
    /// Events some rule decided on.
    pub decided: u64,
    /// Every rule of the set, in file order, including those that never
    /// matched (hits 0).
    pub rules: Vec<RuleReport>,
}

const EXAMPLES: usize = 3;

/// Replay JSON-lines events from `input`. Windows are evaluated at each
/// event's own time, and enforcement is reported as it would be on a host
/// with `enforcement`.
pub fn replay(
    set: &RuleSet,
    input: impl BufRead,
    enforcement: Enforcement,
) -> std::io::Result<Report> {
    let mut report = Report {
        rules: set
            .rules
            .iter()
            .map(|r| RuleReport {
                rule: r.id.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let index: BTreeMap<&str, usize> = set
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            report.skipped_lines += 1;
            continue;
        };
        if matches!(event.body, Body::Loss { .. }) {
            continue;
        }
        report.events += 1;
        let Ok(at) = event.time.parse::<jiff::Timestamp>() else {
            report.skipped_lines += 1;
            continue;
        };
        let Some(d) = evaluate(set, &event, at, enforcement) else {
            continue;
        };
        report.decided += 1;
        let r = &mut report.rules[index[d.rule.as_str()]];
        r.hits += 1;
        *r.outcomes.entry(d.outcome.clone()).or_default() += 1;
        if r.examples.len() < EXAMPLES {
            r.examples.push(Example {
                seq: event.seq,
                time: event.time.clone(),
                op: event.body.op().to_string(),
                exe: event.body.process().and_then(|p| p.exe.clone()),
                path: event.body.paths().first().map(|p| p.to_string()),
            });
        }
    }
    Ok(report)
}
