//! Running the agent (or the floor probe) under the benchmark, and what
//! it reports: status counters, metrics, peak memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::root;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn agent_binary() -> PathBuf {
    root().join("target/release/guardrail-agent")
}

/// A running guardrail-agent; stopped (SIGTERM, flushed) when dropped.
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    /// From process start to the control socket: probes attached, rules
    /// in force.
    pub startup: Duration,
}

impl Agent {
    pub fn start(config: &Path, dir: &Path, extra: &[&str]) -> Result<Agent> {
        let socket = dir.join("bench.sock");
        let _ = std::fs::remove_file(&socket);
        let started = Instant::now();
        let mut child = Command::new(agent_binary())
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(&socket)
            // Every run starts from empty kernel state, none adopts the last.
            .arg("--ephemeral")
            .args(extra)
            .env("GUARDRAIL_LOG", "error")
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            if let Some(status) = child.try_wait()? {
                bail!("the agent exited during start-up: {status}");
            }
            anyhow::ensure!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Agent {
            child,
            socket,
            startup: started.elapsed(),
        })
    }

    pub fn status(&self) -> Result<Value> {
        let out = Command::new(root().join("target/release/guardrail"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["status", "--json"])
            .output()?;
        anyhow::ensure!(out.status.success(), "guardrail status failed");
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in KiB.
    pub fn memory(&self) -> Result<Memory> {
        memory(self.child.id())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let _ = self.child.wait();
    }
}

/// Resident memory of the agent, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// VmRSS: now.
    pub rss: u64,
    /// VmHWM: the peak since start (start-up's BTF parsing included).
    pub peak: u64,
    /// The part of VmRSS that is the mapped ring buffer (kernel memory the
    /// agent maps to read events; its size is `capture.ring_buffer_bytes`).
    pub ring: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no {name}"))
    };
    // BPF map mappings show as anon_inode:bpf-map in smaps.
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut ring = 0;
    let mut in_map = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let is_header = first.split_once('-').is_some_and(|(a, b)| {
            u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
        });
        if is_header {
            in_map = line.contains("anon_inode:bpf-map");
        }
        if let Some(v) = line.strip_prefix("Rss:") {
            if in_map {
                ring += v
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
        ring,
    })
}

/// The minimal copy-every-syscall probe (`guardrail-agent --bench-floor`).
pub struct Floor {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Floor {
    pub fn start(config: &Path) -> Result<Floor> {
        let mut child = Command::new(agent_binary())
            .arg("--bench-floor")
            .arg("--config")
            .arg(config)
            .env("GUARDRAIL_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        anyhow::ensure!(line.contains("attached"), "floor probe: {line}");
        Ok(Floor { child, stdout })
    }

    /// Stop it; (events received, events the kernel dropped).
    pub fn stop(mut self) -> Result<(u64, u64)> {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest)?;
        self.child.wait()?;
        let v: Value = serde_json::from_str(rest.trim()).context("floor probe result")?;
        Ok((
            v["events"].as_u64().unwrap_or(0),
            v["lost"].as_u64().unwrap_or(0),
        ))
    }
}

/// `GET /metrics` from the agent's endpoint.
pub fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The `q` quantile (0..1) of a histogram in OpenMetrics text, as the
/// upper bound of the bucket it falls in; None without observations.
pub fn quantile(text: &str, histogram: &str, q: f64) -> Option<f64> {
    let prefix = format!("{histogram}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total)
        .map(|(le, _)| *le)
}

/// A free local TCP port for the metrics endpoint.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
