//! `cargo xtask bench`: what guardrail costs, as ratios against a bare run
//! measured side by side (A B A B …) in the same run, plus throughput,
//! delay, rule-engine, memory and start-up figures. Results go to
//! target/bench/report.md and report.json.
//!
//! Overhead workloads are the syscall storms of bench/storm.c.
//! Configurations: bare; guardrail with the shipped default rules;
//! guardrail capturing everything (read opens, a rule on every event,
//! audit log on); guardrail with 50 deny rules on other paths; the
//! minimal copy-every-syscall eBPF probe (the floor for full capture);
//! auditd with one syscall rule — last, because auditd leaves a cost
//! behind in processes until reboot.

mod agent;
mod engine;
mod footprint;
mod nats;
mod throughput;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{root, run};
use agent::{Agent, Floor};

/// `--quick`: one pair, a tenth of the work, to check the harness itself;
/// its figures are not a measurement.
static QUICK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub fn quick() -> bool {
    *QUICK.get().unwrap_or(&false)
}

/// Pairs per row unless `--pairs` says otherwise.
pub const DEFAULT_PAIRS: usize = 5;

/// Pairs per row, as `--pairs` asks.
static PAIRS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn pairs() -> usize {
    if quick() {
        1
    } else {
        *PAIRS.get().unwrap_or(&DEFAULT_PAIRS)
    }
}

struct Workload {
    name: &'static str,
    mode: &'static str,
    /// The file the storm works on (a directory for `write` and
    /// `uring-create`).
    target: Target,
    count: u64,
    /// The syscalls auditd is told to record for it.
    syscalls: &'static [&'static str],
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "open storm",
        mode: "open",
        target: Target::File,
        count: 1_000_000,
        syscalls: &["openat"],
    },
    // Read-only opens of a file a rule watches (`file.read`): each is
    // captured and decided, unlike the open storm's.
    Workload {
        name: "watched read storm",
        mode: "open",
        target: Target::WatchedFile,
        count: 200_000,
        syscalls: &["openat"],
    },
    Workload {
        name: "write storm",
        mode: "write",
        target: Target::Scratch,
        count: 200_000,
        syscalls: &["openat"],
    },
    Workload {
        name: "exec storm",
        mode: "exec",
        target: Target::File,
        count: 2_000,
        syscalls: &["execve"],
    },
    Workload {
        name: "chmod storm",
        mode: "chmod",
        target: Target::File,
        count: 200_000,
        // glibc's chmod() is the chmod syscall; fchmodat for completeness.
        syscalls: &["chmod", "fchmodat"],
    },
    // A syscall no probe watches: what attaching the syscall probes
    // costs every other syscall (per-syscall tracepoints: the kernel's
    // tracing slow path; raw probes: one short program run as well).
    Workload {
        name: "unwatched syscall storm",
        mode: "unwatched",
        target: Target::Scratch,
        count: 5_000_000,
        // auditd's rule names a syscall the storm does not make, as
        // guardrail's probes watch others than getppid.
        syscalls: &["chmod"],
    },
    Workload {
        name: "io_uring create storm",
        mode: "uring-create",
        target: Target::Scratch,
        count: 100_000,
        // auditd records io_uring file ops under io_uring_enter's audit
        // context (5.16+) only with io_uring rules; the syscall itself is
        // the closest one-rule equivalent.
        syscalls: &["io_uring_enter"],
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// The scratch directory.
    Scratch,
    /// A file no rule names.
    File,
    /// A file the benchmark's default configuration watches reads of.
    WatchedFile,
}

/// The file the default configuration adds a `file.read` rule for.
const WATCHED_FILE: &str = "watched-file";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    DefaultRules,
    /// The default rules without their `file.read` rules: no read watch
    /// set, the baseline of what watching reads costs.
    DefaultNoReads,
    /// The default rules, the audit log writing every event's process
    /// whole (`[audit_log] process = "full"`; the default names them by
    /// reference).
    DefaultWhole,
    /// The default rules with the syscall probes on raw tracepoints
    /// (`--syscall-probes raw`, what kernels before 5.15 use).
    DefaultRaw,
    FullCapture,
    Deny50,
    Floor,
    Auditd,
}

/// What `--storms-only` and `--config` leave of the benchmark.
#[derive(Debug, Default)]
pub struct Only {
    storms_only: bool,
    nats_only: bool,
    pub footprint_only: bool,
    pub throughput_only: bool,
    configs: Vec<Config>,
    /// Substrings of the storms' names to run (empty: all).
    pub workloads: Vec<String>,
}

impl Only {
    pub fn parse(storms_only: bool, nats_only: bool, names: &[String]) -> Result<Self> {
        let mut configs = Vec::new();
        for name in names {
            configs.push(match name.as_str() {
                "default" => Config::DefaultRules,
                "noreads" => Config::DefaultNoReads,
                "whole" => Config::DefaultWhole,
                "raw" => Config::DefaultRaw,
                "full" => Config::FullCapture,
                "deny50" => Config::Deny50,
                "floor" => Config::Floor,
                "auditd" => Config::Auditd,
                other => {
                    bail!("--config {other}: expected one of default, noreads, whole, raw, full, deny50, floor, auditd")
                }
            });
        }
        Ok(Only {
            storms_only,
            nats_only,
            footprint_only: false,
            throughput_only: false,
            configs,
            workloads: Vec::new(),
        })
    }

    fn wants(&self, config: Config) -> bool {
        self.configs.is_empty() || self.configs.contains(&config)
    }

    fn wants_workload(&self, w: &Workload) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|n| w.name.contains(n.as_str()))
    }
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::DefaultRules => "guardrail, default rules",
            Config::DefaultNoReads => "guardrail, default rules without file.read (no read watch)",
            Config::DefaultWhole => "guardrail, default rules, log writing processes whole",
            Config::DefaultRaw => "guardrail, default rules, raw syscall probes",
            Config::FullCapture => "guardrail, full capture + audit log",
            Config::Deny50 => "guardrail, 50 deny rules elsewhere",
            Config::Floor => "floor: minimal eBPF copy to ring buffer",
            Config::Auditd => "auditd, one syscall rule",
        }
    }
}

struct Row {
    workload: &'static str,
    config: &'static str,
    ratios: Vec<f64>,
    added_ns: Vec<f64>,
    bare_s: f64,
    /// Events the sensor delivered and lost during the measured run (whole
    /// host), when it reports them.
    delivered: Option<Delivered>,
    /// Median time the agent needed after the storm to read everything.
    catch_up_ms: Option<f64>,
    /// Median agent CPU time per delivered event (the whole run's, start
    /// to caught up, divided by what it delivered).
    cpu_ns_per_event: Option<f64>,
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn count(w: &Workload) -> u64 {
    if quick() {
        w.count / 10
    } else {
        w.count
    }
}

fn time_storm(storm: &Path, w: &Workload, scratch: &Path) -> Result<Duration> {
    let arg = match w.target {
        Target::Scratch => scratch.to_path_buf(),
        Target::File => scratch.join("target-file"),
        Target::WatchedFile => scratch.join(WATCHED_FILE),
    };
    let started = Instant::now();
    let status = Command::new(storm)
        .arg(w.mode)
        .arg(count(w).to_string())
        .arg(&arg)
        .status()?;
    let took = started.elapsed();
    anyhow::ensure!(status.success(), "storm {} failed", w.mode);
    Ok(took)
}

fn auditctl(args: &[&str]) -> Result<()> {
    run(Command::new("auditctl").args(args).stdout(Stdio::null()))
}

/// What runs during the "with" half of a pair; stopped when dropped, after
/// `finish` has read its counters.
enum Running {
    /// With its CPU time once started (the start-up's is not the storm's).
    Agent(Agent, Duration),
    Floor(Floor),
    Auditd(AuditdGuard),
}

/// Events a sensor delivered and lost.
type Delivered = (u64, u64);

/// What one "with" run showed besides its time.
#[derive(Default)]
struct Finished {
    delivered: Option<Delivered>,
    memory: Option<agent::Memory>,
    /// From the storm's end until the agent had read everything.
    catch_up: Option<Duration>,
    /// The agent's CPU time from its start to catching up.
    agent_cpu: Option<Duration>,
}

impl Running {
    fn start_agent(config: &Path, scratch: &Path, extra: &[&str]) -> Result<Running> {
        let a = Agent::start(config, scratch, extra)?;
        let cpu = a.cpu_time()?;
        Ok(Running::Agent(a, cpu))
    }

    /// What the sensor delivered and lost, once it caught up.
    fn finish(self) -> Result<Finished> {
        match self {
            Running::Agent(a, cpu_at_start) => {
                let settled = a.settle()?;
                Ok(Finished {
                    delivered: Some((settled.delivered, settled.lost)),
                    memory: a.memory().ok(),
                    catch_up: Some(settled.catch_up),
                    agent_cpu: Some(a.cpu_time()?.saturating_sub(cpu_at_start)),
                })
            }
            Running::Floor(f) => Ok(Finished {
                delivered: Some(f.stop()?),
                ..Default::default()
            }),
            Running::Auditd(guard) => {
                // Rule removed and auditing put back before the next run.
                drop(guard);
                Ok(Finished::default())
            }
        }
    }
}

pub struct Setup {
    pub out: PathBuf,
    pub storm: PathBuf,
    pub scratch: PathBuf,
}

/// The config files each configuration runs with.
struct Configs {
    default: PathBuf,
    no_reads: PathBuf,
    whole_process: PathBuf,
    full: PathBuf,
    deny50: PathBuf,
}

/// `config` without its `file.read` rules: each table, from its header to
/// the next, whose `on` names `file.read` (whatever else it names).
fn without_read_rules(config: &str) -> String {
    let mut kept = String::new();
    let mut table = String::new();
    let end_table = |table: &mut String, kept: &mut String| {
        let reads = table.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("on") && l.contains("\"file.read\"")
        });
        if !reads {
            kept.push_str(table);
        }
        table.clear();
    };
    for line in config.split_inclusive('\n') {
        if line.starts_with('[') {
            end_table(&mut table, &mut kept);
        }
        table.push_str(line);
    }
    end_table(&mut table, &mut kept);
    kept
}

fn write_configs(setup: &Setup) -> Result<Configs> {
    let (out, scratch) = (&setup.out, &setup.scratch);
    let default = scratch.join("default.toml");
    let shipped = std::fs::read_to_string(root().join("config/guardrail.toml"))?;
    // The shipped pack, and one rule watching reads of the watched read
    // storm's file.
    let own_log = |config: &str, name: &str| {
        config.replace(
            "/var/log/guardrail/audit.jsonl",
            &out.join(name).display().to_string(),
        )
    };
    let mut text = own_log(&shipped, "audit-default.jsonl");
    write!(
        text,
        "\n[[rule]]\nid = \"bench-watched-read\"\non = [\"file.read\"]\npath = [\"{}\"]\n",
        scratch.join(WATCHED_FILE).display()
    )?;
    std::fs::write(&default, &text)?;
    let whole_process = scratch.join("whole.toml");
    let text = text.replacen("[audit_log]\n", "[audit_log]\nprocess = \"full\"\n", 1);
    anyhow::ensure!(
        text.contains("process = \"full\""),
        "config/guardrail.toml has no [audit_log] section"
    );
    let text = text.replace(
        &out.join("audit-default.jsonl").display().to_string(),
        &out.join("audit-whole.jsonl").display().to_string(),
    );
    std::fs::write(&whole_process, text)?;
    let no_reads = scratch.join("noreads.toml");
    let without = without_read_rules(&shipped);
    anyhow::ensure!(
        without.len() < shipped.len(),
        "config/guardrail.toml has no `file.read` rule to leave out"
    );
    std::fs::write(&no_reads, own_log(&without, "audit-noreads.jsonl"))?;
    let full = scratch.join("full.toml");
    std::fs::write(
        &full,
        format!(
            "[audit_log]\npath = \"{}\"\n[capture]\nread_opens = true\n[[rule]]\nid = \"everything\"\non = [\"*\"]\n",
            out.join("audit-full.jsonl").display()
        ),
    )?;
    // Deny rules on files that exist but that the storms never touch.
    let deny50 = scratch.join("deny50.toml");
    let protected = scratch.join("protected");
    std::fs::create_dir_all(&protected)?;
    let mut text = format!(
        "[audit_log]\npath = \"{}\"\n",
        out.join("audit-deny.jsonl").display()
    );
    for i in 0..50 {
        let file = protected.join(format!("p{i}"));
        std::fs::write(&file, b"x")?;
        writeln!(
            text,
            "[[rule]]\nid = \"deny-{i}\"\non = [\"file.write\", \"file.unlink\", \"perm.chmod\"]\npath = [\"{}\"]\naction = \"deny\"\n",
            file.display()
        )?;
    }
    std::fs::write(&deny50, text)?;
    Ok(Configs {
        default,
        no_reads,
        whole_process,
        full,
        deny50,
    })
}

fn overhead(
    setup: &Setup,
    configs: &Configs,
    only: &Only,
    peak_rss: &mut Vec<(String, agent::Memory)>,
) -> Result<Vec<Row>> {
    let audit_before = AuditState::read().ok();
    let mut rows = Vec::new();
    for config in [
        Config::DefaultRules,
        Config::DefaultNoReads,
        Config::DefaultWhole,
        Config::DefaultRaw,
        Config::FullCapture,
        Config::Deny50,
        Config::Floor,
        Config::Auditd,
    ] {
        if !only.wants(config) {
            continue;
        }
        if config == Config::Auditd && audit_before.is_none() {
            eprintln!(
                "xtask: auditd not installed (apt-get install auditd): skipping the auditd column"
            );
            continue;
        }
        for w in WORKLOADS
            .iter()
            .filter(|w| only.wants_workload(w))
            // Without a watch set only opens cost less: the baseline of
            // the open storm alone.
            .filter(|w| config != Config::DefaultNoReads || w.name == "open storm")
            // A process written whole changes what each event the agent
            // receives costs: the storms whose events reach it.
            .filter(|w| {
                config != Config::DefaultWhole
                    || matches!(w.name, "chmod storm" | "write storm" | "exec storm")
            })
        {
            let (mut ratios, mut added, mut bare) = (Vec::new(), Vec::new(), Vec::new());
            let mut delivered = Vec::new();
            let (mut catch_up, mut cpu_per_event) = (Vec::new(), Vec::new());
            for pair in 0..pairs() {
                let a = time_storm(&setup.storm, w, &setup.scratch)?;
                let running = match config {
                    Config::DefaultRules => {
                        Running::start_agent(&configs.default, &setup.scratch, &[])?
                    }
                    Config::DefaultNoReads => {
                        Running::start_agent(&configs.no_reads, &setup.scratch, &[])?
                    }
                    Config::DefaultWhole => {
                        Running::start_agent(&configs.whole_process, &setup.scratch, &[])?
                    }
                    Config::DefaultRaw => Running::start_agent(
                        &configs.default,
                        &setup.scratch,
                        &["--syscall-probes", "raw"],
                    )?,
                    Config::FullCapture => Running::start_agent(
                        &configs.full,
                        &setup.scratch,
                        &["--capture-read-opens"],
                    )?,
                    Config::Deny50 => Running::start_agent(&configs.deny50, &setup.scratch, &[])?,
                    Config::Floor => Running::Floor(Floor::start(&configs.full)?),
                    Config::Auditd => {
                        let enabled = AuditState::read()?.enabled;
                        ensure_auditd_running()?;
                        auditctl(&["-e", "1"])?;
                        let mut rule = vec!["-a", "always,exit", "-F", "arch=b64"];
                        for s in w.syscalls {
                            rule.extend(["-S", s]);
                        }
                        rule.extend(["-k", "guardrail-bench"]);
                        auditctl(&rule)?;
                        Running::Auditd(AuditdGuard { enabled })
                    }
                };
                let b = time_storm(&setup.storm, w, &setup.scratch)?;
                let finished = running.finish()?;
                if let Some(c) = finished.delivered {
                    delivered.push(c);
                    if let Some(cpu) = finished.agent_cpu {
                        cpu_per_event.push(cpu.as_nanos() as f64 / c.0.max(1) as f64);
                    }
                }
                if let Some(t) = finished.catch_up {
                    catch_up.push(t.as_secs_f64() * 1e3);
                }
                // Memory after the last pair: the agent has seen the whole storm.
                if let (Some(mem), Config::FullCapture, true) =
                    (finished.memory, config, pair + 1 == pairs())
                {
                    peak_rss.push((format!("under the {} (full capture)", w.name), mem));
                }
                // The audit logs grow by every captured event: start afresh.
                for log in [
                    "audit-default.jsonl",
                    "audit-whole.jsonl",
                    "audit-noreads.jsonl",
                    "audit-full.jsonl",
                    "audit-deny.jsonl",
                ] {
                    let _ = std::fs::remove_file(setup.out.join(log));
                }
                let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
                eprintln!(
                    "xtask: {} / {}: pair {}: bare {a:.3}s, with {b:.3}s",
                    w.name,
                    config.name(),
                    pair + 1
                );
                ratios.push(b / a);
                added.push((b - a) * 1e9 / count(w) as f64);
                bare.push(a);
            }
            delivered.sort();
            if config == Config::Auditd {
                if let Some(before) = &audit_before {
                    restore_audit(before)?;
                }
            }
            rows.push(Row {
                workload: w.name,
                config: config.name(),
                ratios,
                added_ns: added,
                bare_s: median(&mut bare),
                delivered: delivered.get(delivered.len() / 2).copied(),
                catch_up_ms: (!catch_up.is_empty()).then(|| median(&mut catch_up)),
                cpu_ns_per_event: (!cpu_per_event.is_empty()).then(|| median(&mut cpu_per_event)),
            });
        }
    }
    Ok(rows)
}

pub fn bench(quick: bool, pairs: usize, only: &Only) -> Result<()> {
    QUICK.set(quick).ok();
    PAIRS.set(pairs).ok();
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let storm = out.join("storm");
    run(Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&storm)
        .arg(root().join("bench/storm.c")))?;
    let scratch = tempfile_dir(&out)?;
    std::fs::write(scratch.join("target-file"), b"x")?;
    std::fs::write(scratch.join(WATCHED_FILE), b"x")?;
    let setup = Setup {
        out: out.clone(),
        storm,
        scratch: scratch.clone(),
    };
    let result = (|| -> Result<String> {
        let configs = write_configs(&setup)?;
        let lsm = Agent::start(&configs.deny50, &setup.scratch, &[])?.status()?["capabilities"]
            ["bpf_lsm"]
            .as_bool()
            .unwrap_or(false);
        let mut peak_rss = Vec::new();
        if only.nats_only {
            let n = nats::run(&setup)?;
            return section(&out, "nats", nats::markdown(&n), nats::json(&n));
        }
        if only.footprint_only {
            let fp = footprint::run(&setup, &configs.default, &mut peak_rss)?;
            let (md, json) = (
                footprint::markdown(&fp, &peak_rss),
                footprint::json(&fp, &peak_rss),
            );
            return section(&out, "footprint", md, json);
        }
        if only.throughput_only {
            let tp = throughput::run(&setup)?;
            let (md, json) = (throughput::markdown(&tp), throughput::json(&tp));
            return section(&out, "throughput", md, json);
        }
        if only.storms_only {
            let rows = overhead(&setup, &configs, only, &mut peak_rss)?;
            return report(&rows, lsm, None, &peak_rss, &out);
        }
        // Everything else before the overhead table: that ends with auditd.
        let fp = footprint::run(&setup, &configs.default, &mut peak_rss)?;
        let tp = throughput::run(&setup)?;
        let eng = engine::run(&setup)?;
        let n = nats::run(&setup)?;
        let rows = overhead(&setup, &configs, only, &mut peak_rss)?;
        report(&rows, lsm, Some((&tp, &eng, &fp, &n)), &peak_rss, &out)
    })();
    let _ = Command::new("umount").arg(&scratch).status();
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}", result?);
    Ok(())
}

/// One section measured alone: its report written to
/// `report-NAME.md` and `.json`, the markdown returned to be printed.
fn section(out: &Path, name: &str, md: String, json: serde_json::Value) -> Result<String> {
    std::fs::write(out.join(format!("report-{name}.md")), &md)?;
    std::fs::write(
        out.join(format!("report-{name}.json")),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    Ok(md)
}

/// The kernel audit state before the benchmark touched it, to put back.
struct AuditState {
    /// `auditctl -s`'s `enabled` value (0, 1, or 2 for locked).
    enabled: String,
    /// auditd's pid, 0 when it was not running.
    pid: String,
}

impl AuditState {
    fn read() -> Result<AuditState> {
        let out = Command::new("auditctl").arg("-s").output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "0".into())
        };
        Ok(AuditState {
            enabled: field("enabled "),
            pid: field("pid "),
        })
    }
}

/// auditd must run to receive the records, as on a real host; the
/// benchmark starts it when it is not running (and stops it again at the
/// end, see [`restore_audit`]).
fn ensure_auditd_running() -> Result<()> {
    if AuditState::read()?.pid == "0" {
        run(&mut Command::new("auditd"))?;
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Removes the bench's audit rule (other rules stay) and puts the enabled
/// flag back as it was before that measurement.
struct AuditdGuard {
    enabled: String,
}

impl Drop for AuditdGuard {
    fn drop(&mut self) {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", "guardrail-bench"])
            .stdout(Stdio::null())
            .status();
        let _ = Command::new("auditctl")
            .args(["-e", &self.enabled])
            .stdout(Stdio::null())
            .status();
    }
}

/// Stop auditd if the benchmark started it.
fn restore_audit(before: &AuditState) -> Result<()> {
    let now = AuditState::read()?;
    if before.pid == "0" && now.pid != "0" {
        run(Command::new("kill").arg(&now.pid))?;
    }
    Ok(())
}

/// A tmpfs for the storms' files: the benchmark measures the cost per
/// syscall, not the disk (a 64-byte write to this machine's disk takes
/// ~140 µs, which would drown it).
fn tempfile_dir(base: &Path) -> Result<PathBuf> {
    let dir = base.join(format!("scratch-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Mode 0755: a tmpfs root is 1777 by default, and the agent refuses a
    // configuration in a directory others can write.
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1g,mode=0755", "guardrail-bench"])
        .arg(&dir))?;
    Ok(dir)
}

fn report(
    rows: &[Row],
    lsm: bool,
    // The other sections; None with `--storms-only`.
    sections: Option<(
        &throughput::Results,
        &engine::Results,
        &footprint::Results,
        &nats::Results,
    )>,
    peak_rss: &[(String, agent::Memory)],
    out: &Path,
) -> Result<String> {
    if rows.is_empty() {
        bail!("nothing was measured");
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "# guardrail benchmark{}\n\nKernel {}, {cpus} CPUs. Each row: {} pairs of runs, bare then with the configuration, alternating; ratio = with / bare (median, min–max); added cost per loop iteration in ns (median); events delivered and lost by the sensor during the run (median pair; the whole host's events, so a little above the workload's), counted once the agent had read everything; how long after the storm's end that took (catch-up); the agent's CPU time per delivered event (its whole run, start-up excluded).\n\n| workload | configuration | bare (s) | ratio median | ratio min–max | added ns/op | delivered / lost | catch-up ms | agent CPU ns/event |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        if quick() { " (--quick: a check of the harness, not a measurement)" } else { "" },
        kernel.trim(),
        pairs()
    );
    let mut json_rows = Vec::new();
    for r in rows {
        let mut ratios = r.ratios.clone();
        let mut added = r.added_ns.clone();
        let (lo, hi) = (
            ratios.iter().cloned().fold(f64::MAX, f64::min),
            ratios.iter().cloned().fold(f64::MIN, f64::max),
        );
        let (m, a) = (median(&mut ratios), median(&mut added));
        let delivered = r
            .delivered
            .map_or("—".to_string(), |(d, l)| format!("{d} / {l}"));
        let catch_up = r
            .catch_up_ms
            .map_or("—".to_string(), |ms| format!("{ms:.0}"));
        let cpu = r
            .cpu_ns_per_event
            .map_or("—".to_string(), |ns| format!("{ns:.0}"));
        writeln!(
            md,
            "| {} | {} | {:.3} | {m:.3}× | {lo:.3}–{hi:.3} | {a:.0} | {delivered} | {catch_up} | {cpu} |",
            r.workload, r.config, r.bare_s
        )?;
        json_rows.push(json!({
            "workload": r.workload, "config": r.config, "bare_s": r.bare_s,
            "ratio_median": m, "ratio_min": lo, "ratio_max": hi, "added_ns": a,
            "delivered": r.delivered.map(|d| d.0), "lost": r.delivered.map(|d| d.1),
            "catch_up_ms": r.catch_up_ms, "agent_cpu_ns_per_event": r.cpu_ns_per_event,
        }));
    }
    if !lsm {
        md.push_str("\nThis kernel refuses BPF-LSM programs: the \"50 deny rules\" configuration runs with its fallback (rules evaluated in the agent, nothing denied in the kernel); the LSM hooks' own cost is not measured here.\n");
    }
    let mut report_json: Value = json!({
        "kernel": kernel.trim(),
        "cpus": cpus,
        "bpf_lsm": lsm,
        "overhead": json_rows,
    });
    if let Some((tp, eng, fp, n)) = sections {
        md.push_str(&throughput::markdown(tp));
        md.push_str(&engine::markdown(eng));
        md.push_str(&footprint::markdown(fp, peak_rss));
        md.push_str(&nats::markdown(n));
        report_json["throughput"] = throughput::json(tp);
        report_json["rule_engine"] = engine::json(eng);
        report_json["footprint"] = footprint::json(fp, peak_rss);
        report_json["nats_output"] = nats::json(n);
    } else {
        md.push_str(
            "
(--storms-only: the throughput, rule engine, footprint and NATS output sections were not measured.)
",
        );
    }
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report_json)? + "\n",
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `[[rule]]` table's `on` line.
    fn kinds_lines(config: &str) -> Vec<&str> {
        config
            .lines()
            .filter(|l| l.trim_start().starts_with("on ="))
            .collect()
    }

    #[test]
    fn the_pack_without_reads_keeps_every_other_rule_whole() {
        let shipped = std::fs::read_to_string(root().join("config/guardrail.toml")).unwrap();
        let kept = without_read_rules(&shipped);
        let (all, left) = (kinds_lines(&shipped), kinds_lines(&kept));
        let reads = all.iter().filter(|l| l.contains("\"file.read\"")).count();
        assert!(reads > 0, "the shipped pack watches reads");
        assert!(
            left.iter().all(|l| !l.contains("\"file.read\"")),
            "{left:?}"
        );
        assert_eq!(left.len() + reads, all.len());
        assert_eq!(
            kept.matches("[[rule]]").count() + reads,
            shipped.matches("[[rule]]").count()
        );
        // A rule naming reads among other kinds goes too; spacing does not
        // matter.
        let text = "[agent]\nx = 1\n[[rule]]\nid = \"a\"\non  =  [\"file.write\", \"file.read\"]\n\n[[rule]]\nid = \"b\"\non = [\"exec\"]\n";
        assert_eq!(
            without_read_rules(text),
            "[agent]\nx = 1\n[[rule]]\nid = \"b\"\non = [\"exec\"]\n"
        );
    }
}
