//! Start-up on a fresh boot: tracefs not mounted yet, and several agents
//! (or an agent and a tracing tool) starting at the same moment. Whoever
//! mounts tracefs first wins; everybody else must take that mount as their
//! own instead of failing with EBUSY.
//!
//! The test runs in a mount namespace of its own, so that unmounting
//! tracefs there leaves the host (and the other tests) alone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guardrail_tests::{wait_until, Agent, Launch};

const AGENTS: usize = 4;

/// A process holding a private mount namespace; others join it with
/// nsenter. Killed when dropped.
struct Namespace(Child);

impl Namespace {
    fn new() -> Namespace {
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let ns = Namespace(child);
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_link(format!("/proc/{}/ns/mnt", ns.pid())).ok() == Some(ours.clone()) {
            assert!(Instant::now() < deadline, "unshare made no namespace");
            std::thread::sleep(Duration::from_millis(20));
        }
        ns
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `nsenter` into this namespace, as a wrapper for other commands.
    fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.pid().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    fn sh(&self, script: &str) -> bool {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                script,
            ])
            .status()
            .unwrap()
            .success()
    }

    fn has_tracefs(&self) -> bool {
        self.sh("[ -d /sys/kernel/tracing/events ] || [ -d /sys/kernel/debug/tracing/events ]")
    }
}

/// Processes blocked opening `fifo`: `cat` shows it as its argument.
fn readers_of(fifo: &Path) -> usize {
    let wanted = fifo.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let mut args = c.split(|&b| b == 0);
                args.next() == Some(b"cat") && args.next() == Some(wanted)
            })
        })
        .count()
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agents_starting_together_on_an_unmounted_tracefs_all_start() {
    guardrail_tests::require_root();
    let ns = Namespace::new();
    // Everything that shows tracefs, gone (lazily: nothing here holds it).
    ns.sh(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; true",
    );
    assert!(
        !ns.has_tracefs(),
        "tracefs is still visible in the test's mount namespace"
    );
    assert!(Path::new("/sys/kernel/tracing").is_dir());

    // A starting gate: each agent's wrapper blocks opening a FIFO for
    // reading until the test opens it for writing, which releases them
    // all at the same instant.
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    assert!(Command::new("mkfifo")
        .arg(&gate)
        .status()
        .unwrap()
        .success());
    let starts: Vec<_> = (0..AGENTS)
        .map(|_| {
            let mut wrapper: Vec<String> = ["sh", "-c", "cat \"$0\" >/dev/null; exec \"$@\""]
                .map(String::from)
                .to_vec();
            wrapper.push(gate.display().to_string());
            wrapper.extend(ns.enter());
            std::thread::spawn(move || {
                let launch = Launch {
                    wrapper,
                    quiet: true,
                    ..Default::default()
                };
                Agent::launch("", &[], &launch)
            })
        })
        .collect();
    // Open the gate once every wrapper waits at it (each is a `cat` with
    // the FIFO open, blocked or about to be).
    wait_until(
        "the agents at the starting gate",
        Duration::from_secs(60),
        || readers_of(&gate) == AGENTS,
    );
    drop(std::fs::OpenOptions::new().write(true).open(&gate).unwrap());
    let agents: Vec<Agent> = starts
        .into_iter()
        .map(|t| t.join().expect("an agent failed to start"))
        .collect();
    assert!(ns.has_tracefs(), "nobody mounted tracefs");
    for agent in agents {
        let s = agent.status();
        assert!(
            s["tracepoints_attached"].as_u64().unwrap() > 0,
            "no tracepoint attached: {s}"
        );
        agent.stop();
    }
}
