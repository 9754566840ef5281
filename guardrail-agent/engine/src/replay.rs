//! `guardrail rules test`: replay recorded events against a candidate rule
//! set, to see what a guardrail would do before enforcing it.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Serialize;

use crate::event::{Body, Event, Process};
use crate::instants::Instants;
use crate::process_join::{Joined, ProcessJoin};
use crate::rules::eval::Enforcement;
use crate::rules::{decide_facts, Facts, RuleSet};
use crate::scan::view::Summary;
use crate::scan::{EventView, Scan};

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
    /// Events not replayed because they name their process by a reference
    /// whose definition was not in the input (see
    /// [`crate::process_join`]): a rule on the program or the user could
    /// not be judged.
    pub unjoined: u64,
    /// Events some rule decided on.
    pub decided: u64,
    /// Every rule of the set, in file order, including those that never
    /// matched (hits 0).
    pub rules: Vec<RuleReport>,
}

const EXAMPLES: usize = 3;

impl Example {
    fn of(event: &Event) -> Self {
        Example::new(event.seq, &event.time, Summary::of(event))
    }

    fn new(seq: u64, time: &str, summary: Summary) -> Self {
        Example {
            seq,
            time: time.to_string(),
            op: summary.op.to_string(),
            exe: summary.exe.map(String::from),
            path: summary.path.map(String::from),
        }
    }
}

/// Lines read and not handed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotHanded {
    /// Not events (invalid UTF-8 included).
    pub lines: u64,
    /// Events naming a process version not defined before them in the
    /// input.
    pub unjoined: u64,
}

/// The events of JSON lines, in order, each with its whole process (see
/// [`crate::process_join`]); what was not handed on is counted in `not`.
pub fn events_of(
    input: impl BufRead,
    not: &mut NotHanded,
    mut each: impl FnMut(&Event),
) -> std::io::Result<()> {
    let mut reader = SerdeReader::default();
    lines_of(input, |line| {
        // The line's UTF-8 is checked once, whole (faster than string by
        // string).
        match std::str::from_utf8(line) {
            Ok(text) => reader.read(text, not, &mut each),
            Err(_) => not.lines += 1,
        }
    })
}

/// Reads lines into whole events with serde, joining references.
#[derive(Default)]
struct SerdeReader {
    join: ProcessJoin,
    memo: crate::event::ProcessMemo,
}

impl SerdeReader {
    fn read(&mut self, text: &str, not: &mut NotHanded, each: &mut impl FnMut(&Event)) {
        match Event::from_line(text, &mut self.memo) {
            Ok(mut event) => match self.join.join(&mut event) {
                Joined::Missing => not.unjoined += 1,
                _ => each(&event),
            },
            Err(_) => not.lines += 1,
        }
    }
}

/// An event as replay gets it: read whole by serde, or read in place by
/// the scanner ([`crate::scan`]) with the definition of the process it
/// names by reference, if it does.
#[derive(Clone, Copy)]
pub enum Recorded<'r> {
    Event(&'r Event),
    Read(&'r EventView<'r>, Option<&'r Process>),
}

impl<'r> Recorded<'r> {
    fn is_loss(self) -> bool {
        matches!(self, Recorded::Event(e) if matches!(e.body, Body::Loss { .. }))
    }

    fn time(self) -> &'r str {
        match self {
            Recorded::Event(e) => &e.time,
            Recorded::Read(view, _) => &view.time,
        }
    }

    fn facts(self) -> Option<Facts<'r>> {
        match self {
            Recorded::Event(e) => Facts::of(e),
            Recorded::Read(view, joined) => view.facts(joined),
        }
    }

    fn example(self) -> Example {
        match self {
            Recorded::Event(e) => Example::of(e),
            Recorded::Read(view, joined) => {
                Example::new(view.seq, &view.time, view.summary(joined))
            }
        }
    }
}

/// [`events_of`] for replay: each line read in place by the scanner when
/// it can, by serde when it cannot, with the same events, joins and counts
/// either way.
pub fn records_of(
    input: impl BufRead,
    not: &mut NotHanded,
    mut each: impl FnMut(Recorded),
) -> std::io::Result<()> {
    let mut serde = SerdeReader::default();
    let mut memo = crate::scan::RecentProcesses::default();
    lines_of(input, |line| match crate::scan::read(line, &mut memo) {
        Scan::View(view) => {
            // As `ProcessJoin::join` does for every event.
            serde.join.saw(view.seq);
            match view.reference() {
                None => each(Recorded::Read(&view, None)),
                Some((pv, id)) => match serde.join.resolve(pv, id) {
                    Some(process) => each(Recorded::Read(&view, Some(&process))),
                    None => not.unjoined += 1,
                },
            }
        }
        Scan::Serde(text) => serde.read(text, not, &mut |e| each(Recorded::Event(e))),
        Scan::NotUtf8 => not.lines += 1,
    })
}

/// Hands each line of `input` that is not blank to `one`, without its
/// newline.
fn lines_of(mut input: impl BufRead, mut one: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut one = |line: &[u8]| {
        if !line.trim_ascii().is_empty() {
            one(line)
        }
    };
    // Lines are parsed where they lie in the reader's buffer; only a line
    // that straddles two fills is copied (into `split`) — copying every
    // line out first was a tenth of replay's time.
    let mut split = Vec::new();
    loop {
        let block = input.fill_buf()?;
        if block.is_empty() {
            if !split.is_empty() {
                one(&split);
            }
            return Ok(());
        }
        let mut used = 0;
        for end in memchr::memchr_iter(b'\n', block) {
            let line = &block[used..end];
            if split.is_empty() {
                one(line);
            } else {
                split.extend_from_slice(line);
                one(&split);
                split.clear();
            }
            used = end + 1;
        }
        split.extend_from_slice(&block[used..]);
        let len = block.len();
        input.consume(len);
    }
}

/// Replays events one at a time against one rule set.
pub struct Replay<'s> {
    set: &'s RuleSet,
    enforcement: Enforcement,
    instants: Instants,
    pub report: Report,
}

impl<'s> Replay<'s> {
    /// Windows are evaluated at each event's own time, and enforcement is
    /// reported as it would be on a host with `enforcement`.
    pub fn new(set: &'s RuleSet, enforcement: Enforcement) -> Self {
        Replay {
            set,
            enforcement,
            instants: Instants::default(),
            report: Report {
                rules: set
                    .rules
                    .iter()
                    .map(|r| RuleReport {
                        rule: r.id.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        }
    }

    pub fn event(&mut self, event: &Event) {
        self.record(Recorded::Event(event))
    }

    pub fn record(&mut self, event: Recorded) {
        let report = &mut self.report;
        if event.is_loss() {
            return;
        }
        report.events += 1;
        // The instant a recorded event is judged at: its own time.
        let Some(at) = self.instants.of(event.time()) else {
            report.skipped_lines += 1;
            return;
        };
        // Counted, not explained: what the rule matched is not reported.
        let Some(v) = event
            .facts()
            .and_then(|facts| decide_facts(self.set, &facts, at, self.enforcement))
        else {
            return;
        };
        report.decided += 1;
        let r = &mut report.rules[v.rule];
        r.hits += 1;
        match r.outcomes.get_mut(v.outcome.as_str()) {
            Some(n) => *n += 1,
            None => {
                r.outcomes.insert(v.outcome.to_string(), 1);
            }
        }
        if r.examples.len() < EXAMPLES {
            r.examples.push(event.example());
        }
    }
}

/// Replay JSON-lines events from `input` (see [`Replay::new`]).
pub fn replay(
    set: &RuleSet,
    input: impl BufRead,
    enforcement: Enforcement,
) -> std::io::Result<Report> {
    let mut replay = Replay::new(set, enforcement);
    let mut not = NotHanded::default();
    records_of(input, &mut not, |e| replay.record(e))?;
    replay.report.skipped_lines += not.lines;
    replay.report.unjoined += not.unjoined;
    Ok(replay.report)
}

/// A rule's decision, as compared between two rule sets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Decided {
    pub rule: String,
    pub outcome: crate::event::Outcome,
}

/// Events decided one way by the current rules and another by the
/// candidate: a decision that appears (`from` null), disappears (`to`
/// null) or changes rule or outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// The rule the change is about: the candidate's deciding rule, or the
    /// current one's when the candidate decides nothing.
    pub rule: String,
    pub from: Option<Decided>,
    pub to: Option<Decided>,
    pub events: u64,
    /// The first few events, in log order.
    pub examples: Vec<Example>,
}

impl std::fmt::Display for Change {
    /// `ssh-config: alerted → denied`, `new-rule: (none) → alerted`,
    /// `old: alerted → new: denied` when another rule decides.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn outcome(d: &Option<Decided>) -> &str {
            d.as_ref().map_or("(none)", |d| d.outcome.as_str())
        }
        match (&self.from, &self.to) {
            (Some(a), Some(b)) if a.rule != b.rule => {
                write!(f, "{}: {} → {}: {}", a.rule, a.outcome, b.rule, b.outcome)
            }
            _ => write!(
                f,
                "{}: {} → {}",
                self.rule,
                outcome(&self.from),
                outcome(&self.to)
            ),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Comparison {
    pub events: u64,
    /// Lines that were not events, and events without a readable time.
    pub skipped_lines: u64,
    /// Events naming a process whose definition was not read (see
    /// [`Report::unjoined`]).
    pub unjoined: u64,
    /// Events whose decision changes.
    pub changed: u64,
    /// Grouped by rule, then by what changed.
    pub changes: Vec<Change>,
}

/// A set's decision on `facts`: its rule's id and the outcome, borrowed
/// (most events are decided alike by both sets, and then nothing is
/// copied).
fn decided<'s>(
    set: &'s RuleSet,
    facts: &Facts,
    at: jiff::Timestamp,
    enforcement: Enforcement,
) -> Option<(&'s str, crate::event::Outcome)> {
    decide_facts(set, facts, at, enforcement).map(|v| (set.rules[v.rule].id.as_str(), v.outcome))
}

/// Replays events against the rules in force and a candidate, keeping
/// only the differences (`guardrail rules test --against`).
pub struct Compare<'s> {
    current: &'s RuleSet,
    candidate: &'s RuleSet,
    enforcement: Enforcement,
    instants: Instants,
    groups: BTreeMap<(String, Option<Decided>, Option<Decided>), Change>,
    pub result: Comparison,
}

impl<'s> Compare<'s> {
    pub fn new(current: &'s RuleSet, candidate: &'s RuleSet, enforcement: Enforcement) -> Self {
        Compare {
            current,
            candidate,
            enforcement,
            instants: Instants::default(),
            groups: BTreeMap::new(),
            result: Comparison::default(),
        }
    }

    pub fn event(&mut self, event: &Event) {
        self.record(Recorded::Event(event))
    }

    pub fn record(&mut self, event: Recorded) {
        if event.is_loss() {
            return;
        }
        self.result.events += 1;
        let Some(at) = self.instants.of(event.time()) else {
            self.result.skipped_lines += 1;
            return;
        };
        let facts = event.facts();
        let [from, to] = [self.current, self.candidate].map(|set| {
            facts
                .as_ref()
                .and_then(|facts| decided(set, facts, at, self.enforcement))
        });
        if from == to {
            return;
        }
        let owned = |d: Option<(&str, crate::event::Outcome)>| {
            d.map(|(rule, outcome)| Decided {
                rule: rule.to_string(),
                outcome,
            })
        };
        let (from, to) = (owned(from), owned(to));
        self.result.changed += 1;
        let rule = to.as_ref().or(from.as_ref()).map(|d| d.rule.clone());
        let key = (rule.unwrap_or_default(), from, to);
        let change = self.groups.entry(key.clone()).or_insert_with(|| Change {
            rule: key.0,
            from: key.1,
            to: key.2,
            events: 0,
            examples: Vec::new(),
        });
        change.events += 1;
        if change.examples.len() < EXAMPLES {
            change.examples.push(event.example());
        }
    }

    pub fn finish(mut self) -> Comparison {
        self.result.changes = self.groups.into_values().collect();
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile_text;
    use crate::rules::users::Names;
    use crate::search::testlog::sample;

    fn rules(text: &str) -> RuleSet {
        compile_text(std::path::Path::new("/etc/g.toml"), text, Names::default()).unwrap()
    }

    const ALERT: &str = r#"
[[rule]]
id = "ssh-config"
on = ["file.write"]
path = ["/etc/ssh/**"]
action = "alert"

[[rule]]
id = "sudoers"
on = ["file.rename"]
path = ["/etc/sudoers"]
action = "alert"
"#;

    #[test]
    fn lines_that_are_not_events_are_counted_and_passed_over() {
        let event = serde_json::to_vec(&sample(1)[0]).unwrap();
        let mut input = Vec::new();
        for line in [
            &event[..],
            b"",
            b"  ",
            b"not json",
            b"{\"seq\":\"\xff\"}",
            &event[..],
        ] {
            input.extend_from_slice(line);
            input.push(b'\n');
        }
        // The last line without its newline.
        input.extend_from_slice(&event);
        let (mut seen, mut skipped) = (Vec::new(), NotHanded::default());
        events_of(&input[..], &mut skipped, |e| seen.push(e.seq)).unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(skipped.lines, 2);
        let seq = |r: Recorded| match r {
            Recorded::Event(e) => e.seq,
            Recorded::Read(view, _) => view.seq,
        };
        // Lines cut across the reader's fills, at every size of fill.
        for capacity in 1..=input.len() + 1 {
            let (mut again, mut skipped_again) = (Vec::new(), NotHanded::default());
            let reader = std::io::BufReader::with_capacity(capacity, &input[..]);
            events_of(reader, &mut skipped_again, |e| again.push(e.seq)).unwrap();
            assert_eq!(
                (&again, skipped_again),
                (&seen, skipped),
                "fills of {capacity}"
            );
            let (mut scanned, mut skipped_scanning) = (Vec::new(), NotHanded::default());
            let reader = std::io::BufReader::with_capacity(capacity, &input[..]);
            records_of(reader, &mut skipped_scanning, |r| scanned.push(seq(r))).unwrap();
            assert_eq!(
                (&scanned, skipped_scanning),
                (&seen, skipped),
                "scanned, fills of {capacity}"
            );
        }
    }

    /// The report, which both readers of lines must give alike.
    fn replayed(lines: &[String]) -> Report {
        let text = lines.join("\n");
        let set = rules(&format!("{ALERT}{USERS}"));
        let scanned = replay(&set, text.as_bytes(), Enforcement::default()).unwrap();
        let mut serde = Replay::new(&set, Enforcement::default());
        let mut not = NotHanded::default();
        events_of(text.as_bytes(), &mut not, |e| serde.event(e)).unwrap();
        serde.report.skipped_lines += not.lines;
        serde.report.unjoined += not.unjoined;
        assert_eq!(
            scanned, serde.report,
            "the scanner and serde replay differently"
        );
        scanned
    }

    /// A rule on the program and one on the user: what a reference hides.
    const USERS: &str = r#"
[[rule]]
id = "curl-by-1001"
on = ["exec"]
exe = ["/usr/bin/curl"]
uid = [1001]
action = "alert"
"#;

    #[test]
    fn a_log_naming_processes_by_reference_replays_as_its_whole_form_does() {
        let events = crate::search::testlog::busy_threads(400);
        let whole = replayed(&crate::search::testlog::json(&events));
        let lines = crate::search::testlog::compact(&events, 150);
        assert!(lines
            .iter()
            .any(|l| l.contains("\"pv\":") && !l.contains("\"exe\"")));
        let compact = replayed(&lines);
        assert!(whole.rules.iter().all(|r| r.hits > 0), "{whole:#?}");
        assert_eq!(compact, whole);
        assert_eq!(compact.unjoined, 0);
    }

    #[test]
    fn references_without_their_definition_are_counted_not_decided() {
        let lines =
            crate::search::testlog::compact(&crate::search::testlog::busy_threads(400), 400);
        // Without the first 100 lines, which define most versions.
        let report = replayed(&lines[100..]);
        assert!(report.unjoined > 0);
        let all = replayed(&lines);
        assert_eq!(report.events + report.unjoined, 300);
        assert!(all.decided > report.decided);
    }

    fn compare(current: &str, candidate: &str) -> Comparison {
        let (a, b) = (rules(current), rules(candidate));
        let mut c = Compare::new(
            &a,
            &b,
            Enforcement {
                deny: true,
                kill: true,
            },
        );
        for e in sample(40) {
            c.event(&e);
        }
        c.finish()
    }

    #[test]
    fn identical_rules_change_nothing() {
        let c = compare(ALERT, ALERT);
        assert_eq!((c.events, c.changed), (40, 0));
        assert!(c.changes.is_empty());
    }

    #[test]
    fn an_alert_made_deny_lists_exactly_the_events_now_denied() {
        let candidate = ALERT.replacen(r#"action = "alert""#, r#"action = "deny""#, 1);
        let c = compare(ALERT, &candidate);
        // sample(): every fourth event writes /etc/ssh/sshd_config.
        assert_eq!(c.changed, 10);
        assert_eq!(c.changes.len(), 1);
        let change = &c.changes[0];
        assert_eq!(change.to_string(), "ssh-config: alerted → denied");
        assert_eq!(change.events, 10);
        let seqs: Vec<u64> = change.examples.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 5, 9]);
        assert!(change
            .examples
            .iter()
            .all(|e| e.path.as_deref() == Some("/etc/ssh/sshd_config")
                && e.exe.as_deref() == Some("/usr/bin/vim")));
    }

    #[test]
    fn decisions_that_appear_and_disappear_are_grouped_by_rule() {
        let only_ssh = &ALERT[..ALERT.find(r#"id = "sudoers""#).unwrap() - "[[rule]]\n".len()];
        let c = compare(ALERT, only_ssh);
        assert_eq!(c.changes.len(), 1);
        assert_eq!(c.changes[0].to_string(), "sudoers: alerted → (none)");
        assert_eq!(c.changes[0].events, 10);
        let c = compare(only_ssh, ALERT);
        assert_eq!(c.changes[0].to_string(), "sudoers: (none) → alerted");
    }
}
