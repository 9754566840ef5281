//! Start-up time (process start → probes attached and rules in force, the
//! moment the control socket appears) and peak memory (VmHWM): idle with
//! the default rules, with 1000 rules, and under the storms (measured by
//! the overhead runs).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::agent::{Agent, Memory};
use super::{median, Setup};

const STARTS: usize = 5;

pub struct Results {
    startup_ms: f64,
    startup_1000_ms: f64,
}

fn thousand_rules(setup: &Setup) -> Result<std::path::PathBuf> {
    let path = setup.scratch.join("rules1000.toml");
    let mut text = format!(
        "[audit_log]\npath = \"{}\"\n",
        setup.out.join("audit-1000.jsonl").display()
    );
    for i in 0..1000 {
        writeln!(
            text,
            "[[rule]]\nid = \"r{i}\"\non = [\"file.write\", \"perm.chmod\"]\npath = [\"/srv/app{i}/**\"]\nexe_not = [\"/usr/bin/dpkg\"]\n"
        )?;
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Median start-up over a few starts, and the last agent's memory after
/// it idled a few seconds.
fn starts(config: &Path, setup: &Setup) -> Result<(f64, Memory)> {
    let mut times = Vec::new();
    let mut rss = None;
    for i in 0..STARTS {
        let agent = Agent::start(config, &setup.scratch, &[])?;
        times.push(agent.startup.as_secs_f64() * 1e3);
        if i == STARTS - 1 {
            std::thread::sleep(Duration::from_secs(3));
            rss = Some(agent.memory()?);
        }
    }
    Ok((median(&mut times), rss.expect("at least one start")))
}

pub fn run(setup: &Setup, default: &Path, peak_rss: &mut Vec<(String, Memory)>) -> Result<Results> {
    let (startup_ms, idle) = starts(default, setup)?;
    peak_rss.push(("idle, default rules".into(), idle));
    let (startup_1000_ms, idle_1000) = starts(&thousand_rules(setup)?, setup)?;
    peak_rss.push(("idle, 1000 rules".into(), idle_1000));
    Ok(Results {
        startup_ms,
        startup_1000_ms,
    })
}

pub fn markdown(r: &Results, peak_rss: &[(String, Memory)]) -> String {
    let mut md = format!(
        "\n## Start-up and memory\n\nStart-up (process start → probes attached, rules in force; median of {STARTS}): **{:.0} ms** with the default rules, {:.0} ms with 1000 rules.\n\nResident memory: now (VmRSS), of which the mapped ring buffer (kernel memory the agent maps to read events, sized by `capture.ring_buffer_bytes`, 16 MiB mapped twice), and the peak since start (VmHWM, which includes parsing the kernel's BTF at start-up).\n\n| agent | RSS | of it ring buffer | RSS without it | peak (VmHWM) |\n| --- | --- | --- | --- | --- |\n",
        r.startup_ms, r.startup_1000_ms
    );
    let mib = |k: u64| k as f64 / 1024.0;
    for (what, m) in peak_rss {
        let _ = writeln!(
            md,
            "| {what} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            mib(m.rss),
            mib(m.ring),
            mib(m.rss.saturating_sub(m.ring)),
            mib(m.peak)
        );
    }
    md
}

pub fn json(r: &Results, peak_rss: &[(String, Memory)]) -> Value {
    json!({
        "startup_ms": r.startup_ms,
        "startup_1000_rules_ms": r.startup_1000_ms,
        "memory_kib": peak_rss.iter().map(|(w, m)| json!({"when": w, "rss": m.rss, "ring_buffer": m.ring, "peak": m.peak})).collect::<Vec<_>>(),
    })
}
