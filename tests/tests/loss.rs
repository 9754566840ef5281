//! No silent loss: a burst far larger than a tiny ring buffer is either
//! delivered or counted, record for record.

use std::time::{Duration, Instant};

use guardrail_tests::{Agent, ChmodStorm};

#[test]
fn every_syscall_is_delivered_or_counted_as_lost() {
    const CALLS: usize = 50_000;
    let (_dir, storm) = ChmodStorm::in_tempdir(CALLS);
    let pid = storm.pid;
    let pid_s = pid.to_string();
    // One page of ring buffer and no early wake-up: most records must drop.
    let agent = Agent::start(&["--only-pid", &pid_s, "--ring-buffer-bytes", "4096"]);
    storm.release();
    storm.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut delivered, mut lost) = (0usize, 0usize);
    while delivered + lost < CALLS && Instant::now() < deadline {
        for e in agent.collect_for(Duration::from_millis(500)) {
            match e["kind"].as_str() {
                Some("perm") if e["process"]["pid"] == pid && e["perm"]["op"] == "chmod" => {
                    delivered += 1
                }
                Some("loss") => lost += e["loss"]["count"].as_u64().unwrap() as usize,
                _ => {}
            }
        }
    }
    assert!(lost > 0, "a 4 KiB ring buffer should have overflowed");
    assert!(delivered > 0, "nothing delivered at all");
    assert_eq!(
        delivered + lost,
        CALLS,
        "delivered {delivered} + lost {lost}"
    );
    // And nothing more arrives afterwards: the books balance exactly.
    let late = agent.collect_for(Duration::from_secs(1));
    assert!(late
        .iter()
        .all(|e| e["kind"] != "loss" && e["process"]["pid"] != pid));
    agent.stop();
}

/// Records that run past the end of a small ring buffer's data (the
/// agent maps the data once, and joins such a record from its two parts)
/// read back whole: paths of every length, in order, none missing.
#[test]
fn records_that_wrap_around_the_ring_read_back_whole() {
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    // Names of 1 to 97 characters: records of many sizes, so that over
    // the laps of an 8 KiB ring they end at every kind of offset.
    let files: Vec<std::path::PathBuf> = (0..BATCHES * PER_BATCH)
        .map(|i| dir.join(format!("{i}-{}", "x".repeat(i * 7 % 97))))
        .collect();
    for f in &files {
        std::fs::write(f, b"").unwrap();
    }
    let child = ChmodStorm::paced(&files, PER_BATCH);
    let (pid, pid_s) = (child.pid, child.pid.to_string());
    let agent = Agent::start(&["--only-pid", &pid_s, "--ring-buffer-bytes", "8192"]);
    let mut seen = Vec::new();
    for batch in 0..BATCHES {
        child.release();
        let want = (batch + 1) * PER_BATCH;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < want && Instant::now() < deadline {
            for e in agent.collect_for(Duration::from_millis(200)) {
                assert_ne!(e["kind"], "loss", "nothing may be lost at this pace: {e}");
                if e["kind"] == "perm" && e["process"]["pid"] == pid {
                    seen.push(e["perm"]["path"].as_str().unwrap_or("?").to_string());
                }
            }
        }
        assert_eq!(
            seen.len(),
            want,
            "batch {batch}: {:?}",
            &seen[batch * PER_BATCH..]
        );
    }
    let expected: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(seen, expected);
    child.wait();
    agent.stop();
}

/// Threads that come and go by the tens of thousands (a server that
/// starts a thread per request) never fill the probes' table of calls in
/// flight: each thread's entry goes when the thread does. 16 processes of
/// 6,000 threads each make about 90,000 distinct thread ids (where
/// `pid_max` is 32,768 the kernel reuses them, but across processes they
/// stay distinct), more than the table's 65,536 entries.
#[test]
fn threads_that_come_and_go_never_fill_the_in_flight_table() {
    const PROCESSES: usize = 16;
    const THREADS: usize = 6_000;
    let dir = guardrail_tests::trusted_tempdir();
    let file = dir.path().join("churned");
    std::fs::write(&file, b"").unwrap();
    // A ring that holds every event even if the agent stalls: a ring
    // drop here would be another kind of loss than the one under test.
    let agent = Agent::start(&["--ring-buffer-bytes", "67108864"]);
    let children: Vec<std::process::Child> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_thread-churn"))
                .arg(&file)
                .arg(THREADS.to_string())
                .spawn()
                .expect("starting thread-churn")
        })
        .collect();
    let mut counts: std::collections::HashMap<u64, usize> =
        children.iter().map(|c| (u64::from(c.id()), 0)).collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "thread-churn failed");
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while counts.values().any(|&n| n < THREADS) && Instant::now() < deadline {
        for e in agent.collect_for(Duration::from_millis(500)) {
            assert_ne!(e["kind"], "loss", "nothing may be lost: {e}");
            if e["kind"] == "perm" && e["perm"]["op"] == "chmod" {
                if let Some(n) = e["process"]["pid"]
                    .as_u64()
                    .and_then(|p| counts.get_mut(&p))
                {
                    *n += 1;
                }
            }
        }
    }
    assert!(
        counts.values().all(|&n| n == THREADS),
        "chmods seen per process (of {THREADS} each): {counts:?}"
    );
    let status = agent.status();
    assert_eq!(status["lost_inflight"], 0, "{status}");
    assert_eq!(status["lost_total"], 0, "{status}");
    agent.stop();
}
