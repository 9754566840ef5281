//! Continuity: the probes, rules and ring buffer stay pinned when the agent
//! dies, and the next agent delivers what happened in between.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use guardrail_tests::{
    assert_success, bin, trusted_tempdir, wait_until, Agent, BoundedOutput, ChmodStorm, Launch,
};
use serde_json::Value;

/// A state directory of the test's own, unloaded (programs detached, maps
/// freed) when the test ends, whatever its outcome.
struct PinnedState(PathBuf);

impl PinnedState {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/guardrail-test-{name}-{}",
            std::process::id()
        ));
        let state = PinnedState(dir);
        state.unload();
        state
    }

    fn unload(&self) {
        let out = Command::new(bin("guardrail-agent"))
            .arg("--state-dir")
            .arg(&self.0)
            .arg("--unload")
            .bounded_output()
            .unwrap();
        assert_success(&out);
    }

    /// This build's state directory in it (the only one there).
    fn abi_dir(&self) -> PathBuf {
        std::fs::read_dir(&self.0)
            .unwrap()
            .next()
            .expect("a state directory")
            .unwrap()
            .path()
    }

    fn launch(&self) -> Launch {
        Launch {
            state_dir: Some(self.0.clone()),
            ..Default::default()
        }
    }
}

impl Drop for PinnedState {
    fn drop(&mut self) {
        let _ = Command::new(bin("guardrail-agent"))
            .arg("--state-dir")
            .arg(&self.0)
            .arg("--unload")
            .bounded_output();
    }
}

/// Chmods by `pid` and records reported lost, among `events`.
fn tally(events: &[Value], pid: i32) -> (usize, usize) {
    let (mut delivered, mut lost) = (0, 0);
    for e in events {
        match e["kind"].as_str() {
            Some("perm") if e["process"]["pid"] == pid && e["perm"]["op"] == "chmod" => {
                delivered += 1
            }
            Some("loss") => lost += e["loss"]["count"].as_u64().unwrap() as usize,
            _ => {}
        }
    }
    (delivered, lost)
}

/// Events of `agent` until `pid`'s chmods delivered plus lost reach
/// `calls` (given what earlier agents accounted for), within 120 s.
fn collect_rest(agent: &Agent, pid: i32, before: (usize, usize), calls: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let (d, l) = tally(&seen, pid);
        if before.0 + d + before.1 + l >= calls || Instant::now() > deadline {
            return seen;
        }
        seen.extend(agent.collect_for(Duration::from_millis(500)));
    }
}

/// SIGKILL the agent in the middle of a chmod storm, start another: every
/// chmod is delivered, none is lost when the ring buffer holds what
/// happened in between, and the audit log the two agents share holds each
/// exactly once, its chain unbroken.
#[test]
fn sigkill_mid_storm_loses_nothing() {
    // Long enough (a few hundred ms) to be cut by the kill.
    const CALLS: usize = 100_000;
    let state = PinnedState::new("kill");
    let logs = trusted_tempdir();
    let log = logs.path().join("audit.jsonl");
    let config = format!("[audit_log]\npath = \"{}\"\n", log.display());
    let (_dir, storm) = ChmodStorm::in_tempdir(CALLS);
    let pid = storm.pid.to_string();
    // 64 MiB: room for the whole storm, so nothing may be lost.
    let args = ["--only-pid", &pid, "--ring-buffer-bytes", "67108864"];
    let first = Agent::launch(&config, &args, &state.launch());
    storm.release();
    let mut before = first.collect_until(Duration::from_secs(60), |e| {
        e["kind"] == "perm" && e["process"]["pid"] == storm.pid
    });
    first.signal(libc::SIGKILL);
    // What it printed before it died is delivered too.
    before.extend(first.collect_for(Duration::from_secs(1)));
    drop(first);
    storm.wait();
    let (d1, l1) = tally(&before, storm.pid);
    assert!(
        d1 < CALLS,
        "the first agent saw the whole storm: kill it sooner"
    );

    let second = Agent::launch(&config, &args, &state.launch());
    // Until every chmod was printed by one agent or the other.
    let printed = |after: &[Value]| {
        let mut all = chmod_times(&before, storm.pid);
        all.extend(chmod_times(after, storm.pid));
        all.sort_unstable();
        all.dedup();
        all.len()
    };
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while printed(&after) < CALLS && Instant::now() < deadline {
        after.extend(second.collect_for(Duration::from_millis(500)));
    }
    let (d2, l2) = tally(&after, storm.pid);
    assert_eq!(
        (printed(&after), l1 + l2),
        (CALLS, 0),
        "first agent delivered {d1}, lost {l1}; second delivered {d2}, lost {l2}"
    );
    // The records the first agent handled but had not yet logged were
    // read again; those it had logged were not: the log has each once.
    let status = second.status();
    let c = &status["continuity"];
    assert_eq!(c["adopted"], true, "{c}");
    assert_eq!(c["previous_stopped_cleanly"], false, "{c}");
    assert!(c["previous_pid"].as_u64().unwrap() > 0, "{c}");
    eprintln!(
        "printed by the first agent: {d1}; logged by it, not committed, skipped: {}",
        c["already_logged"]
    );
    second.stop();
    assert_logged_once(&log, storm.pid, CALLS);
    let out = Command::new(bin("guardrail"))
        .args(["log", "verify"])
        .arg(&log)
        .bounded_output()
        .unwrap();
    assert_success(&out);
}

/// An agent restarted while a storm runs: its programs and the previous
/// agent's are attached side by side for a moment, and the chmods made
/// then, which run no entry program (nothing parked tells the two exits
/// apart), must still be recorded once each, none lost.
#[test]
fn a_restart_mid_storm_records_each_call_once() {
    let state = PinnedState::new("handover");
    let logs = trusted_tempdir();
    let log = logs.path().join("audit.jsonl");
    let config = format!("[audit_log]\npath = \"{}\"\n", log.display());
    let dir = tempfile::tempdir().unwrap();
    let (file, stop, count) = (
        dir.path().join("target"),
        dir.path().join("stop"),
        dir.path().join("count"),
    );
    std::fs::write(&file, b"").unwrap();
    // About 10,000 a second: the ring buffer holds whatever the agents
    // take long to read.
    let storm = ChmodStorm::until_stopped(&file, Duration::from_micros(100), &stop, &count);
    let pid = storm.pid.to_string();
    let args = ["--only-pid", &pid, "--ring-buffer-bytes", "67108864"];
    let is_chmod = |e: &Value| e["kind"] == "perm" && e["process"]["pid"] == storm.pid;
    let first = Agent::launch(&config, &args, &state.launch());
    storm.release();
    first.collect_until(Duration::from_secs(60), is_chmod);
    first.stop();
    // The storm runs on through the hand-over: it stops only once the
    // new agent is up and printing.
    let second = Agent::launch(&config, &args, &state.launch());
    assert_eq!(second.status()["continuity"]["adopted"], true);
    let mut after = second.collect_until(Duration::from_secs(60), is_chmod);
    std::fs::write(&stop, b"").unwrap();
    storm.wait();
    let calls: usize = std::fs::read_to_string(&count).unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let logged = || -> Vec<u64> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        chmod_times(&events, storm.pid)
    };
    while logged().len() < calls && Instant::now() < deadline {
        after.extend(second.collect_for(Duration::from_millis(500)));
    }
    let (_, lost) = tally(&after, storm.pid);
    second.stop();
    assert_eq!(lost, 0, "records lost during the hand-over");
    assert_logged_once(&log, storm.pid, calls);
}

/// The finished audit log at `log` holds each of `pid`'s `calls` chmods
/// exactly once: none missing, none twice.
fn assert_logged_once(log: &Path, pid: i32, calls: usize) {
    let logged: Vec<Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut in_log = chmod_times(&logged, pid);
    let total = in_log.len();
    in_log.sort_unstable();
    in_log.dedup();
    assert_eq!(
        (in_log.len(), total),
        (calls, calls),
        "the audit log must hold each of the {calls} chmods exactly once"
    );
}

/// Kernel times of `pid`'s chmods among `events`.
fn chmod_times(events: &[Value], pid: i32) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["kind"] == "perm" && e["process"]["pid"] == pid && e["perm"]["op"] == "chmod")
        .map(|e| e["ktime_ns"].as_u64().unwrap())
        .collect()
}

/// A ring buffer too small for what happens while no agent runs: the next
/// agent reports the overflow as `loss`, record for record.
#[test]
fn overflow_while_down_is_reported_as_loss() {
    const CALLS: usize = 20_000;
    let state = PinnedState::new("overflow");
    let (_dir, storm) = ChmodStorm::in_tempdir(CALLS);
    let pid = storm.pid.to_string();
    let args = ["--only-pid", &pid, "--ring-buffer-bytes", "65536"];
    let first = Agent::launch("", &args, &state.launch());
    // A clean stop this time: the programs stay, the agent goes.
    first.stop();
    storm.release();
    storm.wait();

    let second = Agent::launch("", &args, &state.launch());
    let events = collect_rest(&second, storm.pid, (0, 0), CALLS);
    let (delivered, lost) = tally(&events, storm.pid);
    assert!(lost > 0, "64 KiB cannot hold {CALLS} chmods");
    assert!(delivered > 0, "what fitted must be delivered");
    assert_eq!(
        delivered + lost,
        CALLS,
        "delivered {delivered} + lost {lost}"
    );
    let status = second.status();
    let c = &status["continuity"];
    assert_eq!(c["adopted"], true, "{c}");
    assert_eq!(c["previous_stopped_cleanly"], true, "{c}");
    second.stop();
}

/// The next agent on `state`, which must not adopt it, and its
/// `continuity` status (`replaced` says why).
fn next_agent_replacing(state: &PinnedState, args: &[&str]) -> (Agent, Value) {
    let agent = Agent::launch("", args, &state.launch());
    let c = agent.status()["continuity"].clone();
    assert_eq!(c["adopted"], false, "{c}");
    (agent, c)
}

/// A state that lost one of its pins is not adopted: the agent says why,
/// starts from new maps with its own rules, and removes the remains.
#[test]
fn half_written_state_is_replaced() {
    let state = PinnedState::new("half");
    let first = Agent::launch("", &[], &state.launch());
    first.stop();
    let abi = state.abi_dir();
    std::fs::remove_file(abi.join("maps/VERDICTS")).unwrap();

    let (second, c) = next_agent_replacing(&state, &[]);
    assert!(
        c["replaced"]
            .as_str()
            .is_some_and(|r| r.contains("half-written") && r.contains("VERDICTS")),
        "{c}"
    );
    wait_until(
        "only this agent's links remain",
        Duration::from_secs(30),
        || {
            let entries: Vec<String> = std::fs::read_dir(&abi)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            entries.iter().filter(|n| n.starts_with("links-")).count() == 1
                && !entries.iter().any(|n| n.starts_with("retired-"))
        },
    );
    assert!(abi.join("maps/VERDICTS").exists(), "the new state is whole");
    second.stop();
}

/// Slot `key` of the pinned array map at `pin` set to `value`, through
/// the bpf(2) syscall (what `bpftool map update pinned` does).
fn set_pinned_u64(pin: &Path, key: u32, value: u64) {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).unwrap();
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let mut get = [0u64; 16];
    get[0] = path.as_ptr() as u64;
    let size = std::mem::size_of_val(&get);
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, get.as_mut_ptr(), size) };
    assert!(
        fd >= 0,
        "opening {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    // For BPF_MAP_UPDATE_ELEM: map_fd (u32, padded), key, value, flags.
    let mut update = [0u64; 16];
    update[0] = fd as u64;
    update[1] = &key as *const u32 as u64;
    update[2] = &value as *const u64 as u64;
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            update.as_mut_ptr(),
            size,
        )
    };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "updating {}: {err}", pin.display());
}

/// An upgrade from a build whose probes pinned other maps (here: this
/// build's state with one map fewer and another layout mark, as an older
/// build's is): the new agent says the state has other layouts, not that
/// it is half-written, and replaces it.
#[test]
fn another_layouts_state_is_named_as_such() {
    let state = PinnedState::new("layout");
    let first = Agent::launch("", &[], &state.launch());
    first.stop();
    let abi = state.abi_dir();
    // AGENT_STATE[COMPLETE] holds the build's layout mark: another one.
    set_pinned_u64(&abi.join("maps/AGENT_STATE"), 0, 0x6775_6172_6400_0001);
    std::fs::remove_file(abi.join("maps/URING_PARKED")).unwrap();

    let (second, c) = next_agent_replacing(&state, &[]);
    assert!(
        c["replaced"]
            .as_str()
            .is_some_and(|r| r.contains("other map layouts") && !r.contains("half-written")),
        "{c}"
    );
    assert!(
        abi.join("maps/URING_PARKED").exists(),
        "the new state is whole"
    );
    second.stop();
}

/// No BPF filesystem at /sys/fs/bpf (a fresh boot without systemd): the
/// agent mounts one and pins there. Run in a mount namespace of its own,
/// whose bpffs (and pins) go with it.
#[test]
fn bpffs_not_mounted_is_mounted() {
    let dir = "/sys/fs/bpf/guardrail-test-unmounted";
    let launch = Launch {
        wrapper: [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/bpf 2>/dev/null; exec \"$0\" \"$@\"",
        ]
        .map(String::from)
        .to_vec(),
        state_dir: Some(dir.into()),
        ..Default::default()
    };
    let agent = Agent::launch("", &[], &launch);
    let status = agent.status();
    let c = &status["continuity"];
    assert!(
        c["state_dir"]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{dir}/abi-"))),
        "{c}"
    );
    assert_eq!(c["adopted"], false, "{c}");
    assert!(c["links_pinned"].as_u64().unwrap() > 0, "{c}");
    // Pinned in the namespace's own bpffs, not in the host's.
    assert!(!Path::new(dir).exists());
    // And it captures.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("seen");
    std::fs::write(&f, b"").unwrap();
    agent.collect_until(Duration::from_secs(60), |e| {
        e["kind"] == "file" && e["file"]["path"] == f.to_str().unwrap()
    });
    agent.stop();
}

/// The state of a build with another record layout (here: this build's,
/// renamed as an older ABI's) is never adopted: the new agent says so,
/// enforces with its own programs and maps, then removes the old state and
/// reports what its ring buffer still held as lost.
#[test]
fn another_builds_state_is_replaced_and_its_records_counted() {
    const CALLS: usize = 500;
    let state = PinnedState::new("abi");
    let (_dir, storm) = ChmodStorm::in_tempdir(CALLS);
    let pid = storm.pid.to_string();
    let args = ["--only-pid", &pid];
    let first = Agent::launch("", &args, &state.launch());
    first.stop();
    storm.release();
    storm.wait();
    let ours = state.abi_dir();
    let older = state.0.join("abi-0");
    std::fs::rename(&ours, &older).unwrap();

    let (second, c) = next_agent_replacing(&state, &args);
    assert!(
        c["replaced"]
            .as_str()
            .is_some_and(|r| r.contains("another record layout") && r.contains("abi-0")),
        "{c}"
    );
    assert!(!older.exists(), "the old state must be gone");
    let discarded = c["discarded_records"].as_u64().unwrap() as usize;
    assert!(
        discarded >= CALLS,
        "{discarded} records discarded, {CALLS} chmods were waiting"
    );
    let loss = second.collect_until(Duration::from_secs(30), |e| e["kind"] == "loss");
    assert_eq!(
        loss.last().unwrap()["loss"]["discarded"].as_u64(),
        Some(discarded as u64)
    );
    // None of the old ring's records was decoded as this build's.
    assert!(loss.iter().all(|e| e["process"]["pid"] != storm.pid));
    second.stop();
}
