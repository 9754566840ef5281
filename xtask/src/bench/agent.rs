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

    /// What `guardrail status --json` shows, asked on the control socket
    /// directly: a CLI process per question would be events of its own
    /// (an exec, its opens) in the counts being read.
    pub fn status(&self) -> Result<Value> {
        let mut conn = std::os::unix::net::UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        conn.write_all(b"{\"cmd\":\"status\"}\n")?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("status answer {line:?}"))
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in KiB.
    pub fn memory(&self) -> Result<Memory> {
        memory(self.child.id())
    }

    /// CPU time (user and system, every thread, exited ones included) the
    /// agent used so far, in nanoseconds: /proc/PID/stat counts in 10 ms
    /// ticks, which made the exec storm's 2,001 events 5 µs per tick.
    pub fn cpu_time(&self) -> Result<Duration> {
        let pid = self.child.id() as libc::pid_t;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `clock` is a valid place for the result.
        let err = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
        anyhow::ensure!(
            err == 0,
            "no CPU clock for the agent (pid {pid}): error {err}"
        );
        let mut at = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `at` is a valid place for the result.
        if unsafe { libc::clock_gettime(clock, &mut at) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context(format!("reading the agent's CPU clock (pid {pid})"));
        }
        Ok(Duration::new(at.tv_sec as u64, at.tv_nsec as u32))
    }

    /// After a storm: wait until the agent has read everything the kernel
    /// produced (its ring buffer empty and its counts still for three
    /// drain ticks), and say how long it needed after the storm ended: a
    /// backlog is part of the cost, and counters read earlier would call
    /// queued records neither delivered nor lost.
    pub fn settle(&self) -> Result<Settled> {
        const STILL: Duration = Duration::from_millis(150);
        let end = Instant::now();
        let deadline = end + Duration::from_secs(120);
        let mut last = None;
        let mut moving_until = end;
        loop {
            let s = self.status()?;
            let counts = (
                s["events_total"].as_u64().unwrap_or(0),
                s["lost_total"].as_u64().unwrap_or(0),
            );
            let empty = s["ring_backlog_bytes"].as_u64() == Some(0);
            if !empty || last != Some(counts) {
                moving_until = Instant::now();
            } else if moving_until.elapsed() >= STILL {
                return Ok(Settled {
                    delivered: counts.0,
                    lost: counts.1,
                    catch_up: moving_until.saturating_duration_since(end),
                });
            }
            last = Some(counts);
            anyhow::ensure!(
                Instant::now() < deadline,
                "the agent did not catch up within 120 s of the storm's end: {s}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// What the agent had done once it caught up after a storm.
pub struct Settled {
    pub delivered: u64,
    pub lost: u64,
    /// From the storm's end until the agent had read everything.
    pub catch_up: Duration,
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
