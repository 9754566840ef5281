//! How many events per second reach the audit log without loss, for
//! several ring-buffer sizes, what is lost at twice that, and how long an
//! event takes from the kernel to the audit log writer at 10% and 80% of
//! the sustainable rate.
//!
//! The load is `storm rate`: chmod at a paced rate (each one a captured
//! event), with a rule on every event and the audit log on — the most the
//! agent has to do per event. One generator process runs per CPU, each on
//! its own file, so the rate is not bounded by what one process can issue
//! (one reached ~217k/s); the agent competes with them for the CPUs, as
//! it would with a busy host's workload, and its share of CPU at each rate
//! is reported.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Result;
use serde_json::{json, Value};

use super::agent::{free_port, quantile, scrape, Agent};
use super::Setup;

const RINGS_MIB: &[u32] = &[1, 4, 16];
const RATES: &[u64] = &[
    25_000, 50_000, 100_000, 200_000, 300_000, 400_000, 600_000, 800_000,
];
const SECONDS: f64 = 3.0;

pub struct Ring {
    mib: u32,
    /// The highest rate reached with nothing lost.
    sustained: Option<u64>,
    /// The agent's CPU at that rate.
    cpu: Option<AgentCpu>,
    /// What ended the climb of rates.
    limit: Limit,
    /// At twice the sustained rate: the rate reached and the share lost.
    at_double: Option<(u64, f64)>,
}

/// Why no higher rate was sustained.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The next rate lost events.
    Loss,
    /// No loss, but the generators could not reach the rate asked.
    Generators,
    /// No loss at the highest rate asked (`--quick` asks only two).
    HighestRateAsked,
}

pub struct Delay {
    share: &'static str,
    rate: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

pub struct Results {
    rings: Vec<Ring>,
    delays: Vec<Delay>,
}

struct Probe {
    achieved: u64,
    lost: u64,
    cpu: AgentCpu,
    metrics: Option<String>,
}

/// The agent's CPU time (all its threads) from the storm's start until it
/// had read everything, as a share of one CPU over the storm's duration
/// and per delivered event.
#[derive(Clone, Copy)]
struct AgentCpu {
    share_of_one_cpu: f64,
    per_event_ns: f64,
}

/// Generator processes: one per CPU.
fn generators() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn probe(setup: &Setup, ring_mib: u32, rate: u64, metrics: bool) -> Result<Probe> {
    let config = setup.scratch.join("throughput.toml");
    let port = free_port()?;
    let mut text = format!(
        "[audit_log]\npath = \"{}\"\n[capture]\nring_buffer_bytes = {}\n[[rule]]\nid = \"everything\"\non = [\"*\"]\n",
        setup.out.join("audit-throughput.jsonl").display(),
        ring_mib << 20
    );
    if metrics {
        text = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{text}");
    }
    std::fs::write(&config, text)?;
    let agent = Agent::start(&config, &setup.scratch, &[])?;
    let before = agent.status()?["events_total"].as_u64().unwrap_or(0);
    let cpu_before = agent.cpu_time()?;
    let started = std::time::Instant::now();
    let n = generators();
    let children = (0..n)
        .map(|i| {
            let file = setup.scratch.join(format!("target-file-{i}"));
            std::fs::write(&file, b"x")?;
            Ok(Command::new(&setup.storm)
                .args(["rate", &(rate / n as u64).to_string(), &SECONDS.to_string()])
                .arg(file)
                .stdout(std::process::Stdio::piped())
                .spawn()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut achieved = 0;
    for child in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "storm rate failed");
        achieved += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>()?;
    }
    let storm = started.elapsed();
    // Until the agent has read what is still in the ring buffer: queued
    // records are neither delivered nor lost yet.
    let settled = agent.settle()?;
    let cpu = (agent.cpu_time()? - cpu_before).as_secs_f64();
    let lost = settled.lost;
    let delivered = settled.delivered.saturating_sub(before).max(1);
    let cpu = AgentCpu {
        share_of_one_cpu: cpu / storm.as_secs_f64(),
        per_event_ns: cpu * 1e9 / delivered as f64,
    };
    let metrics = if metrics { Some(scrape(port)?) } else { None };
    drop(agent);
    let _ = std::fs::remove_file(setup.out.join("audit-throughput.jsonl"));
    eprintln!(
        "xtask: throughput: ring {ring_mib} MiB, {n} generators, asked {rate}/s, reached {achieved}/s, lost {lost}, agent {:.0}% of a CPU, {:.0} ns/event, caught up {} ms after",
        cpu.share_of_one_cpu * 100.0,
        cpu.per_event_ns,
        settled.catch_up.as_millis()
    );
    Ok(Probe {
        achieved,
        lost,
        cpu,
        metrics,
    })
}

pub fn run(setup: &Setup) -> Result<Results> {
    let mut rings = Vec::new();
    let sizes = if super::quick() {
        &RINGS_MIB[2..]
    } else {
        RINGS_MIB
    };
    for &mib in sizes {
        let mut sustained = None;
        let mut cpu = None;
        let mut limit = Limit::HighestRateAsked;
        let rates = if super::quick() { &RATES[..2] } else { RATES };
        for &rate in rates {
            let p = probe(setup, mib, rate, false)?;
            if p.lost > 0 {
                limit = Limit::Loss;
                break;
            }
            sustained = Some(p.achieved);
            cpu = Some(p.cpu);
            if (p.achieved as f64) < 0.95 * rate as f64 {
                // The generators (slowed by the capture) cannot go faster.
                limit = Limit::Generators;
                break;
            }
        }
        let at_double = match sustained {
            Some(s) => {
                let p = probe(setup, mib, 2 * s, false)?;
                let made = p.achieved as f64 * SECONDS;
                Some((p.achieved, p.lost as f64 / made.max(1.0)))
            }
            None => None,
        };
        rings.push(Ring {
            mib,
            sustained,
            cpu,
            limit,
            at_double,
        });
    }
    let mut delays = Vec::new();
    if let Some(max) = rings.last().and_then(|r| r.sustained) {
        for (share, factor) in [("10%", 0.1), ("80%", 0.8)] {
            let rate = (max as f64 * factor) as u64;
            let p = probe(setup, 16, rate, true)?;
            let text = p.metrics.unwrap_or_default();
            delays.push(Delay {
                share,
                rate: p.achieved,
                p50: quantile(&text, "guardrail_event_delay_seconds", 0.5),
                p99: quantile(&text, "guardrail_event_delay_seconds", 0.99),
            });
        }
    }
    Ok(Results { rings, delays })
}

fn ms(v: Option<f64>) -> String {
    v.map_or("—".into(), |s| format!("≤ {:.1} ms", s * 1e3))
}

pub fn markdown(r: &Results) -> String {
    let mut md = format!(
        "\n## Throughput\n\nchmod at a paced rate for {SECONDS} s from {} generator processes (one per CPU, each on its own file), every event captured, a rule on every event, audit log on. \"Sustained\" is the highest rate reached with nothing lost, counted once the agent had read everything. The agent's CPU (all its threads, from the storm's start until it had read everything) as a share of one CPU over the storm, and per delivered event.\n\n| ring buffer | sustained events/s | agent CPU at that rate: share of one CPU, per event | at 2×: reached / lost |\n| --- | --- | --- | --- |\n",
        generators()
    );
    for ring in &r.rings {
        let sustained = match (ring.sustained, ring.limit) {
            (Some(s), Limit::Generators) => format!("≥ {s} (the generators' limit: no loss)"),
            (Some(s), Limit::HighestRateAsked) => {
                format!("≥ {s} (the highest rate asked: no loss)")
            }
            (Some(s), Limit::Loss) => s.to_string(),
            (None, _) => format!("< {} (lost at the lowest rate)", RATES[0]),
        };
        let double = ring.at_double.map_or("—".into(), |(reached, lost)| {
            format!("{reached}/s, {:.2}% lost", lost * 100.0)
        });
        let cpu = ring.cpu.map_or("—".into(), |c| {
            format!(
                "{:.0}%, {:.2} µs",
                c.share_of_one_cpu * 100.0,
                c.per_event_ns / 1e3
            )
        });
        let _ = writeln!(md, "| {} MiB | {sustained} | {cpu} | {double} |", ring.mib);
    }
    md.push_str("\n## Event delay\n\nKernel timestamp → handed to the audit log writer (`guardrail_event_delay_seconds`; bucket upper bounds), 16 MiB ring buffer. The agent drains every 50 ms unless 1 MiB is waiting, so the delay is mostly that interval.\n\n| load | events/s | p50 | p99 |\n| --- | --- | --- | --- |\n");
    for d in &r.delays {
        let _ = writeln!(
            md,
            "| {} of sustained | {} | {} | {} |",
            d.share,
            d.rate,
            ms(d.p50),
            ms(d.p99)
        );
    }
    md
}

pub fn json(r: &Results) -> Value {
    json!({
        "rings": r.rings.iter().map(|ring| json!({
            "mib": ring.mib,
            "sustained_per_s": ring.sustained,
            "generator_bound": ring.limit == Limit::Generators,
            "limit": match ring.limit {
                Limit::Loss => "loss",
                Limit::Generators => "generators",
                Limit::HighestRateAsked => "highest_rate_asked",
            },
            "generators": generators(),
            "agent_cpu_share_of_one_cpu": ring.cpu.map(|c| c.share_of_one_cpu),
            "agent_cpu_ns_per_event": ring.cpu.map(|c| c.per_event_ns),
            "at_double": ring.at_double.map(|(reached, lost)| json!({"reached_per_s": reached, "lost_share": lost})),
        })).collect::<Vec<_>>(),
        "delay": r.delays.iter().map(|d| json!({
            "share": d.share, "per_s": d.rate, "p50_s": d.p50, "p99_s": d.p99,
        })).collect::<Vec<_>>(),
    })
}
