//! The NATS output: what publishing every event to JetStream, each one
//! acknowledged, adds to the agent's CPU per event, and how fast a storm's
//! events are acknowledged.
//!
//! A real nats-server (Debian's, JetStream with file storage) on a free
//! port; pairs of runs of the chmod storm, one agent with the audit log
//! only and one with a `nats` output too (every event). Each run's agent
//! CPU (every thread, from its start until every event is read and, with
//! NATS, acknowledged) is divided by the events it delivered.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::agent::{free_port, Agent};
use super::{median, pairs, time_storm, Setup, WORKLOADS};

pub struct Round {
    plain_ns: f64,
    nats_ns: f64,
    /// The same two with the audit log naming processes by reference
    /// (`[audit_log] process = "ref"`): the NATS output sends the log's
    /// lines, about half the bytes.
    plain_ref_ns: f64,
    nats_ref_ns: f64,
    /// Events acknowledged per second, from the storm's start to the last
    /// acknowledgement.
    acked_per_s: f64,
    /// Events the output dropped (spool full) or the kernel lost.
    lost: u64,
}

pub struct Results {
    rounds: Vec<Round>,
}

/// nats-server with JetStream, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(store: &Path) -> Result<Server> {
        let port = free_port()?;
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nats-server (Debian package nats-server)")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server { child, port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run: (agent CPU ns per event, events delivered, lost, acknowledged
/// per second when the output is NATS).
fn one(setup: &Setup, config: &Path, nats: bool) -> Result<(f64, u64, u64, Option<f64>)> {
    let w = WORKLOADS
        .iter()
        .find(|w| w.mode == "chmod")
        .context("the chmod storm")?;
    let agent = Agent::start(config, &setup.scratch, &[])?;
    let cpu_at_start = agent.cpu_time()?;
    let started = Instant::now();
    time_storm(&setup.storm, w, &setup.scratch)?;
    let settled = agent.settle()?;
    let mut lost = settled.lost;
    let mut acked_per_s = None;
    if nats {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let s = agent.status()?;
            let out = output(&s)?;
            let sent = out["sent"].as_u64().unwrap_or(0);
            let dropped = out["dropped"].as_u64().unwrap_or(0);
            let events = s["events_total"].as_u64().unwrap_or(0);
            if sent + dropped >= events && out["queued"].as_u64() == Some(0) {
                lost += dropped;
                acked_per_s = Some(sent as f64 / started.elapsed().as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                bail!("the NATS output did not deliver the storm within 600 s: {out}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    let cpu = agent.cpu_time()?.saturating_sub(cpu_at_start);
    let per_event = cpu.as_nanos() as f64 / settled.delivered.max(1) as f64;
    Ok((per_event, settled.delivered, lost, acked_per_s))
}

/// Remove the audit log at `path` and its rotated files.
fn remove_log(path: &Path) {
    let _ = std::fs::remove_file(path);
    for i in 1.. {
        if std::fs::remove_file(format!("{}.{i}", path.display())).is_err() {
            break;
        }
    }
}

fn output(status: &Value) -> Result<&Value> {
    status["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["type"] == "nats"))
        .with_context(|| format!("no nats output in the status: {status}"))
}

pub fn run(setup: &Setup) -> Result<Results> {
    let store = setup.out.join("nats-store");
    let _ = std::fs::remove_dir_all(&store);
    let server = Server::start(&store)?;
    let audit = setup.out.join("audit-nats.jsonl");
    let plain = setup.scratch.join("nats-plain.toml");
    // Processes whole, as a log whose lines a stream carries writes them
    // by default: the NATS output is the only difference in the pair.
    std::fs::write(
        &plain,
        format!(
            "[audit_log]\npath = \"{}\"\nprocess = \"full\"\n",
            audit.display()
        ),
    )?;
    // The same, the log naming processes by reference.
    let by_reference = |config: &Path| -> Result<std::path::PathBuf> {
        let text = std::fs::read_to_string(config)?;
        let to = config.with_extension("ref.toml");
        std::fs::write(
            &to,
            text.replacen("process = \"full\"", "process = \"ref\"", 1),
        )?;
        Ok(to)
    };
    let plain_ref = by_reference(&plain)?;
    let mut rounds = Vec::new();
    for i in 0..pairs() {
        // A new spool each round: every run starts with nothing to send.
        let spool = setup.out.join(format!("nats-spool-{i}"));
        let _ = std::fs::remove_dir_all(&spool);
        let with = setup.scratch.join("nats-output.toml");
        std::fs::write(
            &with,
            format!(
                "[audit_log]\npath = \"{}\"\nprocess = \"full\"\n[[output]]\nname = \"fleet\"\ntype = \"nats\"\nurl = \"nats://127.0.0.1:{}\"\nspool_dir = \"{}\"\n",
                audit.display(),
                server.port,
                spool.display()
            ),
        )?;
        let with_ref = by_reference(&with)?;
        // Each run starts with an empty log; the order alternates, so that
        // neither form always runs after a NATS run (the server is still
        // writing its store then).
        let run = |config: &Path, nats: bool| {
            remove_log(&audit);
            let result = one(setup, config, nats);
            let _ = std::fs::remove_dir_all(&spool);
            result
        };
        let (plain_ns, plain_lost, plain_ref_ns, plain_ref_lost);
        let (nats_ns, nats_lost, acked, nats_ref_ns, nats_ref_lost);
        if i % 2 == 0 {
            (plain_ns, _, plain_lost, _) = run(&plain, false)?;
            (plain_ref_ns, _, plain_ref_lost, _) = run(&plain_ref, false)?;
            (nats_ns, _, nats_lost, acked) = run(&with, true)?;
            (nats_ref_ns, _, nats_ref_lost, _) = run(&with_ref, true)?;
        } else {
            (plain_ref_ns, _, plain_ref_lost, _) = run(&plain_ref, false)?;
            (plain_ns, _, plain_lost, _) = run(&plain, false)?;
            (nats_ref_ns, _, nats_ref_lost, _) = run(&with_ref, true)?;
            (nats_ns, _, nats_lost, acked) = run(&with, true)?;
        }
        rounds.push(Round {
            plain_ns,
            nats_ns,
            plain_ref_ns,
            nats_ref_ns,
            acked_per_s: acked.unwrap_or(0.0),
            lost: plain_lost + nats_lost + plain_ref_lost + nats_ref_lost,
        });
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
    Ok(Results { rounds })
}

fn medians(r: &Results) -> (f64, f64, f64) {
    let mut plain: Vec<f64> = r.rounds.iter().map(|r| r.plain_ns).collect();
    let mut nats: Vec<f64> = r.rounds.iter().map(|r| r.nats_ns).collect();
    let mut acked: Vec<f64> = r.rounds.iter().map(|r| r.acked_per_s).collect();
    (median(&mut plain), median(&mut nats), median(&mut acked))
}

/// Medians of the runs with the log naming processes by reference.
fn medians_by_reference(r: &Results) -> (f64, f64) {
    let mut plain: Vec<f64> = r.rounds.iter().map(|r| r.plain_ref_ns).collect();
    let mut nats: Vec<f64> = r.rounds.iter().map(|r| r.nats_ref_ns).collect();
    (median(&mut plain), median(&mut nats))
}

pub fn markdown(r: &Results) -> String {
    let (plain, nats, acked) = medians(r);
    let lost: u64 = r.rounds.iter().map(|r| r.lost).sum();
    let mut md = String::from(
        "\n## NATS output\n\nThe chmod storm with the audit log only, then with a `nats` output too (every event, JetStream acknowledgements, a local nats-server), alternating; agent CPU (all threads) until every event is read and acknowledged, per event. Medians.\n\n| | agent CPU per event | events acknowledged per second | lost |\n| --- | --- | --- | --- |\n",
    );
    let _ = writeln!(md, "| audit log only | {:.1} µs | | |", plain / 1000.0);
    let _ = writeln!(
        md,
        "| audit log + NATS output | {:.1} µs (+{:.0} %) | {:.0} | {lost} |",
        nats / 1000.0,
        (nats / plain - 1.0) * 100.0,
        acked
    );
    let (plain_ref, nats_ref) = medians_by_reference(r);
    let _ = writeln!(
        md,
        "| audit log naming processes by reference | {:.1} µs | | |",
        plain_ref / 1000.0
    );
    let _ = writeln!(
        md,
        "| the same + NATS output | {:.1} µs (+{:.0} %) | | |",
        nats_ref / 1000.0,
        (nats_ref / plain_ref - 1.0) * 100.0
    );
    md
}

pub fn json(r: &Results) -> Value {
    let (plain, nats, acked) = medians(r);
    json!({
        "cpu_ns_per_event_plain": plain,
        "cpu_ns_per_event_nats": nats,
        "added_share": nats / plain - 1.0,
        "by_reference": {
            "cpu_ns_per_event_plain": medians_by_reference(r).0,
            "cpu_ns_per_event_nats": medians_by_reference(r).1,
            "added_share": medians_by_reference(r).1 / medians_by_reference(r).0 - 1.0,
        },
        "acked_per_s": acked,
        "lost": r.rounds.iter().map(|r| r.lost).sum::<u64>(),
    })
}
