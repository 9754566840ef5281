//! Start-up time (process start → probes attached and rules in force, the
//! moment the control socket appears) and peak memory (VmHWM): idle with
//! the default rules, with 1000 rules, and under the storms (measured by
//! the overhead runs).

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
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
    table: Table,
}

/// The process table's memory with many live processes.
pub struct Table {
    processes: usize,
    /// Agent memory (RSS without the ring buffer, KiB) before and after.
    before_kib: u64,
    after_kib: u64,
    tracked_before: u64,
    tracked_after: u64,
}

/// Live processes for the table measurement (the figure).
const TABLE_PROCESSES: usize = 30_000;

/// Sets `kernel.pid_max` while it lives, when it is too small for the
/// measurement; puts it back after.
struct PidMax(Option<String>);

impl PidMax {
    fn at_least(n: usize) -> Result<PidMax> {
        let path = "/proc/sys/kernel/pid_max";
        let now = std::fs::read_to_string(path)?;
        if now.trim().parse::<usize>().unwrap_or(0) >= n {
            return Ok(PidMax(None));
        }
        std::fs::write(path, n.to_string())?;
        Ok(PidMax(Some(now)))
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/pid_max", old.trim());
        }
    }
}

/// The agent's memory before and after `TABLE_PROCESSES` processes start
/// (each a `sleep` run by one shell, as a pool of identical workers), once
/// its table tracks them.
fn process_table(config: &Path, setup: &Setup) -> Result<Table> {
    use std::process::{Command, Stdio};
    let _pid_max = PidMax::at_least(TABLE_PROCESSES * 2 + 10_000)?;
    let agent = Agent::start(config, &setup.scratch, &[])?;
    std::thread::sleep(Duration::from_secs(3));
    let tracked =
        |a: &Agent| -> Result<u64> { Ok(a.status()?["processes_tracked"].as_u64().unwrap_or(0)) };
    let before = agent.memory()?;
    let tracked_before = tracked(&agent)?;
    let script =
        format!("for i in $(seq {TABLE_PROCESSES}); do sleep 3600 & done; echo started; wait");
    let mut pool = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()?;
    let pgid = pool.id();
    let mut line = String::new();
    let waited = (|| -> Result<u64> {
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(pool.stdout.take().expect("piped")),
            &mut line,
        )?;
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let n = tracked(&agent)?;
            if n >= tracked_before + TABLE_PROCESSES as u64 || std::time::Instant::now() > deadline
            {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })();
    // Settle past the table's upkeep (every 10 s), then measure while
    // they all live.
    std::thread::sleep(Duration::from_secs(12));
    let after = agent.memory();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    let _ = pool.wait();
    let tracked_after = waited?;
    let after = after?;
    Ok(Table {
        processes: TABLE_PROCESSES,
        before_kib: before.rss.saturating_sub(before.ring),
        after_kib: after.rss.saturating_sub(after.ring),
        tracked_before,
        tracked_after,
    })
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
    let table = process_table(default, setup)?;
    Ok(Results {
        startup_ms,
        startup_1000_ms,
        table,
    })
}

pub fn markdown(r: &Results, peak_rss: &[(String, Memory)]) -> String {
    let mut md = format!(
        "\n## Start-up and memory\n\nStart-up (process start → probes attached, rules in force; median of {STARTS}): **{:.0} ms** with the default rules, {:.0} ms with 1000 rules.\n\nResident memory: now (VmRSS), of which the mapped ring buffer (kernel memory the agent maps to read events, sized by `capture.ring_buffer_bytes`, 16 MiB by default, mapped once), and the peak since start (VmHWM, which includes parsing the kernel's BTF at start-up).\n\n| agent | RSS | of it ring buffer | RSS without it | peak (VmHWM) |\n| --- | --- | --- | --- | --- |\n",
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
    let t = &r.table;
    let _ = write!(
        md,
        "\nProcess table: {} processes started (`sleep`, from one shell); the agent tracked {} → {} processes and its memory (RSS without the ring buffer) went {:.1} → {:.1} MiB: **{:.0} bytes per tracked process**.\n",
        t.processes,
        t.tracked_before,
        t.tracked_after,
        mib(t.before_kib),
        mib(t.after_kib),
        t.per_process()
    );
    md
}

impl Table {
    /// Bytes per process the table grew by.
    fn per_process(&self) -> f64 {
        let added = self
            .tracked_after
            .saturating_sub(self.tracked_before)
            .max(1);
        self.after_kib.saturating_sub(self.before_kib) as f64 * 1024.0 / added as f64
    }
}

pub fn json(r: &Results, peak_rss: &[(String, Memory)]) -> Value {
    json!({
        "startup_ms": r.startup_ms,
        "startup_1000_rules_ms": r.startup_1000_ms,
        "process_table": {
            "processes_started": r.table.processes,
            "tracked_before": r.table.tracked_before,
            "tracked_after": r.table.tracked_after,
            "rss_without_ring_kib_before": r.table.before_kib,
            "rss_without_ring_kib_after": r.table.after_kib,
            "bytes_per_process": r.table.per_process(),
        },
        "memory_kib": peak_rss.iter().map(|(w, m)| json!({"when": w, "rss": m.rss, "ring_buffer": m.ring, "peak": m.peak})).collect::<Vec<_>>(),
    })
}
