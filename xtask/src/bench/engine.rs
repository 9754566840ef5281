//! The rule engine: criterion's per-event evaluation cost for 1 to 1000
//! rules (guardrail-agent/benches/rules.rs), the event thread's whole work
//! per record (benches/pipeline.rs), and `guardrail rules test` replaying
//! a recorded 1,000,000-event log against 100 rules on one core.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::Setup;
use crate::{cargo, root};

const REPLAY_EVENTS: usize = 1_000_000;
const REPLAY_RULES: usize = 100;

pub struct Results {
    /// (event, rules, median ns per evaluation)
    evaluation: Vec<(String, u32, f64)>,
    /// (what, median ns) of canonical-path completion.
    paths: Vec<(String, f64)>,
    /// (what, median ns) of the event thread's work per record.
    event_path: Vec<(String, f64)>,
    replay_per_s: f64,
    /// The same log read whole by serde (`--reader serde`).
    replay_serde_per_s: f64,
}

/// `n` rules like the criterion bench's, and one that matches the web
/// root writes of the replayed log.
fn rules_text(n: usize) -> String {
    let mut text = String::from(
        "[[rule]]\nid = \"web-root\"\non = [\"file.write\"]\npath = [\"/srv/web/**\"]\n\n",
    );
    for i in 1..n {
        let rule = match i % 3 {
            0 => format!("[[rule]]\nid = \"files-{i}\"\non = [\"file.write\", \"file.unlink\"]\npath = [\"/srv/app{i}/**\"]\n"),
            1 => format!("[[rule]]\nid = \"exec-{i}\"\non = [\"exec\"]\nexe = [\"/opt/tool{i}/bin/*\"]\n"),
            _ => format!("[[rule]]\nid = \"mode-{i}\"\non = [\"perm.chmod\"]\npath = [\"/data{i}/**\"]\nmode_set = [\"setuid\"]\n"),
        };
        text.push_str(&rule);
        text.push('\n');
    }
    text
}

/// A recorded log: execs, writes and chmods in turn, as the agent writes them.
fn replay_events() -> usize {
    if super::quick() {
        REPLAY_EVENTS / 10
    } else {
        REPLAY_EVENTS
    }
}

fn write_events(path: &std::path::Path) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for seq in 0..replay_events() {
        let pid = 1000 + seq % 30000;
        let process = format!("\"process\":{{\"pid\":{pid},\"tid\":{pid},\"ppid\":1,\"uid\":0,\"gid\":0,\"euid\":0,\"egid\":0,\"auid\":null,\"comm\":\"x\",\"exe\":\"/usr/bin/x\",\"parent_exe\":\"/usr/bin/bash\",\"cgroup_id\":1}}");
        let head = format!(
            "{{\"seq\":{seq},\"time\":\"2026-11-27T12:00:00.000000000Z\",\"ktime_ns\":{seq}"
        );
        match seq % 3 {
            0 => writeln!(f, "{head},\"kind\":\"exec\",\"syscall\":\"execve\",{process},\"result\":{{\"ok\":true,\"ret\":0,\"errno\":null}},\"exec\":{{\"path\":\"/usr/bin/ls\",\"argv\":[\"ls\",\"-l\"],\"argv_truncated\":false,\"cwd\":\"/root\"}}}}")?,
            1 => writeln!(f, "{head},\"kind\":\"file\",\"syscall\":\"openat\",{process},\"result\":{{\"ok\":true,\"ret\":3,\"errno\":null}},\"file\":{{\"op\":\"open\",\"path\":\"/srv/web/page{}.html\",\"resolved\":true,\"flags\":[\"write\",\"create\"],\"mode\":\"0644\"}}}}", seq % 100)?,
            _ => writeln!(f, "{head},\"kind\":\"perm\",\"syscall\":\"chmod\",{process},\"result\":{{\"ok\":true,\"ret\":0,\"errno\":null}},\"perm\":{{\"op\":\"chmod\",\"path\":\"/tmp/f{}\",\"resolved\":true,\"mode\":\"0600\"}}}}", seq % 100)?,
        }
    }
    f.flush()?;
    Ok(())
}

/// Run one of guardrail-agent's criterion benches.
fn run_criterion(bench: &str) -> Result<()> {
    crate::run(cargo().args([
        "bench",
        "-p",
        "guardrail-agent",
        "--bench",
        bench,
        "--",
        "--warm-up-time",
        "1",
        "--measurement-time",
        if super::quick() { "1" } else { "3" },
    ]))
}

fn criterion() -> Result<Vec<(String, u32, f64)>> {
    run_criterion("rules")?;
    let dir = root().join("target/criterion/evaluate");
    let mut out = Vec::new();
    for event in std::fs::read_dir(&dir).context("criterion results")? {
        let event = event?;
        for n in std::fs::read_dir(event.path())? {
            let n = n?;
            let Ok(rules) = n.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let est: Value =
                serde_json::from_slice(&std::fs::read(n.path().join("new/estimates.json"))?)?;
            let median = est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
            out.push((
                event.file_name().to_string_lossy().into_owned(),
                rules,
                median,
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(out)
}

/// Canonical-path completion (guardrail-agent/benches/paths.rs).
fn path_completion() -> Result<Vec<(String, f64)>> {
    run_criterion("paths")?;
    medians(&["paths", "process"])
}

/// The event thread's whole work per record (guardrail-agent/benches/pipeline.rs).
fn event_path() -> Result<Vec<(String, f64)>> {
    run_criterion("pipeline")?;
    medians(&["pipeline"])
}

/// (function, median ns) of every case criterion measured in `groups`.
fn medians(groups: &[&str]) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    let cases = groups
        .iter()
        .map(|g| std::fs::read_dir(root().join("target/criterion").join(g)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("criterion results")?;
    for case in cases.into_iter().flatten() {
        let case = case?;
        let Ok(text) = std::fs::read(case.path().join("new/estimates.json")) else {
            continue;
        };
        let est: Value = serde_json::from_slice(&text)?;
        let name: Value =
            serde_json::from_slice(&std::fs::read(case.path().join("new/benchmark.json"))?)?;
        out.push((
            name["function_id"].as_str().unwrap_or("?").to_string(),
            est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub fn run(setup: &Setup) -> Result<Results> {
    let evaluation = criterion()?;
    let paths = path_completion()?;
    let event_path = event_path()?;
    let events = setup.out.join("replay.jsonl");
    write_events(&events)?;
    let rules = setup.scratch.join("replay-rules.toml");
    std::fs::write(&rules, rules_text(REPLAY_RULES))?;
    // Each line read in place (the default), then every line by serde:
    // the reports must be the same bytes.
    let replay = |reader: &str| -> Result<(Vec<u8>, f64)> {
        let started = Instant::now();
        let out = Command::new("taskset")
            .args(["-c", "0"])
            .arg(root().join("target/release/guardrail"))
            .args(["rules", "test"])
            .arg(&rules)
            .arg("--events")
            .arg(&events)
            .args(["--json", "--reader", reader])
            .output()?;
        let took = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            report["events"].as_u64() == Some(replay_events() as u64),
            "replay read {} events",
            report["events"]
        );
        Ok((out.stdout, replay_events() as f64 / took))
    };
    let (scanned, replay_per_s) = replay("scan")?;
    let (read_whole, replay_serde_per_s) = replay("serde")?;
    anyhow::ensure!(
        scanned == read_whole,
        "replay reports differ between the scanner and serde"
    );
    let _ = std::fs::remove_file(&events);
    Ok(Results {
        evaluation,
        paths,
        event_path,
        replay_per_s,
        replay_serde_per_s,
    })
}

pub fn markdown(r: &Results) -> String {
    let mut md = String::from("\n## Rule engine\n\nEvaluation of one event that no rule matches (every applicable rule is looked at), criterion median:\n\n| event | rules | ns per event |\n| --- | --- | --- |\n");
    for (event, rules, ns) in &r.evaluation {
        let _ = writeln!(md, "| {event} | {rules} | {ns:.0} |");
    }
    let _ = writeln!(
        md,
        "\n`guardrail rules test` on a recorded {}-event log (JSON lines) with {REPLAY_RULES} rules, pinned to one core: **{:.0} events/s** (each line read in place; {:.0} events/s reading every line whole with serde, the same report).",
        replay_events(),
        r.replay_per_s,
        r.replay_serde_per_s
    );
    md.push_str("\nCanonical paths and process identity: what completing a path-based call's path (`/d/sub/../prot/./a.conf`, directories resolved on the live file system with the agent's cache warm) and naming the process (lineage of 8 ancestors; cgroup, unit, container, user and group names) cost the agent per event, criterion median:\n\n| step | ns per event |\n| --- | --- |\n");
    for (what, ns) in &r.paths {
        let _ = writeln!(md, "| {what} | {ns:.0} |");
    }
    md.push_str("\nThe event thread's whole work per ring-buffer record (decode, interpret, rules, redaction, JSON, the hand-over to the audit log's writer; not the kernel, not the writer's hashing and writing), criterion median:\n\n| record | ns per event |\n| --- | --- |\n");
    for (what, ns) in &r.event_path {
        let _ = writeln!(md, "| {what} | {ns:.0} |");
    }
    md
}

pub fn json(r: &Results) -> Value {
    json!({
        "evaluation_ns": r.evaluation.iter().map(|(e, n, ns)| json!({"event": e, "rules": n, "median_ns": ns})).collect::<Vec<_>>(),
        "replay_events_per_s": r.replay_per_s,
        "replay_serde_events_per_s": r.replay_serde_per_s,
        "path_completion_ns": r.paths.iter().map(|(w, ns)| json!({"step": w, "median_ns": ns})).collect::<Vec<_>>(),
        "event_path_ns": r.event_path.iter().map(|(w, ns)| json!({"record": w, "median_ns": ns})).collect::<Vec<_>>(),
    })
}
