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
