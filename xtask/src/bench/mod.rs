//! `cargo xtask bench`: what guardrail costs, as ratios against a bare run
//! measured side by side (A B A B …) in the same run.
//!
//! Workloads are the syscall storms of bench/storm.c. Configurations:
//! bare; guardrail with the shipped default rules; guardrail capturing
//! everything (read opens, a rule on every event, audit log on); auditd
//! with one syscall rule (last: auditd leaves a cost behind in processes
//! until reboot). Results go to target/bench/report.md and report.json.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{root, run};

const PAIRS: usize = 5;

struct Workload {
    name: &'static str,
    mode: &'static str,
    count: u64,
    /// The syscalls auditd is told to record for it.
    syscalls: &'static [&'static str],
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "open storm",
        mode: "open",
        count: 1_000_000,
        syscalls: &["openat"],
    },
    Workload {
        name: "write storm",
        mode: "write",
        count: 200_000,
        syscalls: &["openat"],
    },
    Workload {
        name: "exec storm",
        mode: "exec",
        count: 2_000,
        syscalls: &["execve"],
    },
    Workload {
        name: "chmod storm",
        mode: "chmod",
        count: 200_000,
        // glibc's chmod() is the chmod syscall; fchmodat for completeness.
        syscalls: &["chmod", "fchmodat"],
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    DefaultRules,
    FullCapture,
    Auditd,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::DefaultRules => "guardrail, default rules",
            Config::FullCapture => "guardrail, full capture + audit log",
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
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time_storm(storm: &Path, w: &Workload, scratch: &Path) -> Result<Duration> {
    let target = scratch.join("target-file");
    let arg = match w.mode {
        "write" => scratch.to_path_buf(),
        _ => target,
    };
    let started = Instant::now();
    let status = Command::new(storm)
        .arg(w.mode)
        .arg(w.count.to_string())
        .arg(&arg)
        .status()?;
    let took = started.elapsed();
    anyhow::ensure!(status.success(), "storm {} failed", w.mode);
    Ok(took)
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let _ = self.0.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn start_agent(config: &Path, dir: &Path, extra: &[&str]) -> Result<Agent> {
    let socket = dir.join("bench.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(root().join("target/release/guardrail-agent"))
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .env("GUARDRAIL_LOG", "error")
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        anyhow::ensure!(Instant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Agent(child))
}

fn auditctl(args: &[&str]) -> Result<()> {
    run(Command::new("auditctl").args(args).stdout(Stdio::null()))
}

pub fn bench() -> Result<()> {
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let storm = out.join("storm");
    run(Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&storm)
        .arg(root().join("bench/storm.c")))?;
    let scratch = tempfile_dir(&out)?;
    std::fs::write(scratch.join("target-file"), b"x")?;

    // Configurations, auditd last.
    let default_cfg = scratch.join("default.toml");
    let shipped = std::fs::read_to_string(root().join("config/guardrail.toml"))?;
    std::fs::write(
        &default_cfg,
        shipped.replace(
            "/var/log/guardrail/audit.jsonl",
            &out.join("audit-default.jsonl").display().to_string(),
        ),
    )?;
    let full_cfg = scratch.join("full.toml");
    std::fs::write(
        &full_cfg,
        format!(
            "[audit_log]\npath = \"{}\"\n[capture]\nread_opens = true\n[[rule]]\nid = \"everything\"\non = [\"*\"]\n",
            out.join("audit-full.jsonl").display()
        ),
    )?;
    let have_auditd = Command::new("auditctl").arg("-s").output().is_ok();

    let mut rows = Vec::new();
    for config in [Config::DefaultRules, Config::FullCapture, Config::Auditd] {
        if config == Config::Auditd && !have_auditd {
            eprintln!(
                "xtask: auditd not installed (apt-get install auditd): skipping the auditd column"
            );
            continue;
        }
        for w in WORKLOADS {
            let (mut ratios, mut added, mut bare) = (Vec::new(), Vec::new(), Vec::new());
            for pair in 0..PAIRS {
                let a = time_storm(&storm, w, &scratch)?;
                let b = {
                    let _guard: Box<dyn std::any::Any> = match config {
                        Config::DefaultRules => Box::new(start_agent(&default_cfg, &scratch, &[])?),
                        Config::FullCapture => {
                            Box::new(start_agent(&full_cfg, &scratch, &["--capture-read-opens"])?)
                        }
                        Config::Auditd => {
                            ensure_auditd_running()?;
                            auditctl(&["-e", "1"])?;
                            let mut rule = vec!["-a", "always,exit", "-F", "arch=b64"];
                            for s in w.syscalls {
                                rule.extend(["-S", s]);
                            }
                            rule.extend(["-k", "guardrail-bench"]);
                            auditctl(&rule)?;
                            Box::new(AuditdGuard)
                        }
                    };
                    time_storm(&storm, w, &scratch)?
                };
                // The audit logs grow by every captured event: start afresh.
                for log in ["audit-default.jsonl", "audit-full.jsonl"] {
                    let _ = std::fs::remove_file(out.join(log));
                }
                let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
                eprintln!(
                    "xtask: {} / {}: pair {}: bare {a:.3}s, with {b:.3}s",
                    w.name,
                    config.name(),
                    pair + 1
                );
                ratios.push(b / a);
                added.push((b - a) * 1e9 / w.count as f64);
                bare.push(a);
            }
            rows.push(Row {
                workload: w.name,
                config: config.name(),
                ratios,
                added_ns: added,
                bare_s: median(&mut bare),
            });
        }
    }
    let _ = Command::new("umount").arg(&scratch).status();
    let _ = std::fs::remove_dir_all(&scratch);
    report(&rows, &out)
}

/// auditd must run to receive the records, as on a real host; the
/// benchmark starts it when it is not running (and leaves it running:
/// auditing is turned off again after each measurement).
fn ensure_auditd_running() -> Result<()> {
    let status = Command::new("auditctl").arg("-s").output()?;
    let text = String::from_utf8_lossy(&status.stdout);
    let running = text
        .lines()
        .any(|l| l.starts_with("pid ") && l.trim() != "pid 0");
    if !running {
        run(&mut Command::new("auditd"))?;
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Removes the bench's audit rule and turns auditing off again.
struct AuditdGuard;

impl Drop for AuditdGuard {
    fn drop(&mut self) {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", "guardrail-bench"])
            .stdout(Stdio::null())
            .status();
        let _ = Command::new("auditctl")
            .args(["-e", "0"])
            .stdout(Stdio::null())
            .status();
    }
}

/// A tmpfs for the storms' files: the benchmark measures the cost per
/// syscall, not the disk (a 64-byte write to this machine's disk takes
/// ~140 µs, which would drown it).
fn tempfile_dir(base: &Path) -> Result<PathBuf> {
    let dir = base.join(format!("scratch-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512m", "guardrail-bench"])
        .arg(&dir))?;
    Ok(dir)
}

fn report(rows: &[Row], out: &Path) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "# guardrail benchmark\n\nKernel {}, {cpus} CPUs. Each row: {PAIRS} pairs of runs, bare then with the configuration, alternating; ratio = with / bare (median, min–max); added cost per syscall-loop iteration in ns (median).\n\n| workload | configuration | bare (s) | ratio median | ratio min–max | added ns/op |\n| --- | --- | --- | --- | --- | --- |\n",
        kernel.trim()
    );
    let mut json = Vec::new();
    for r in rows {
        let mut ratios = r.ratios.clone();
        let mut added = r.added_ns.clone();
        let (lo, hi) = (
            ratios.iter().cloned().fold(f64::MAX, f64::min),
            ratios.iter().cloned().fold(f64::MIN, f64::max),
        );
        let (m, a) = (median(&mut ratios), median(&mut added));
        writeln!(
            md,
            "| {} | {} | {:.3} | {m:.3}× | {lo:.3}–{hi:.3} | {a:.0} |",
            r.workload, r.config, r.bare_s
        )?;
        json.push(format!(
            "{{\"workload\":\"{}\",\"config\":\"{}\",\"bare_s\":{:.4},\"ratio_median\":{m:.4},\"ratio_min\":{lo:.4},\"ratio_max\":{hi:.4},\"added_ns\":{a:.1}}}",
            r.workload, r.config, r.bare_s
        ));
    }
    md.push_str("\nBPF-LSM is not available on kernels that refuse LSM programs; the enforcement-path column is not measured there.\n");
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(out.join("report.json"), format!("[{}]\n", json.join(",\n")))?;
    println!("{md}");
    if rows.is_empty() {
        bail!("nothing was measured");
    }
    Ok(())
}
