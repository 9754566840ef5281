//! No silent loss: a burst far larger than a tiny ring buffer is either
//! delivered or counted, record for record.

use std::time::{Duration, Instant};

use guardrail_tests::{cstr, Agent};

#[test]
fn every_syscall_is_delivered_or_counted_as_lost() {
    const CALLS: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("target");
    std::fs::write(&file, b"").unwrap();
    let path = cstr(&file);
    let mut pipe = [0i32; 2];
    // SAFETY: creating a pipe into a local array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // The child waits until the agent watches it, then bursts. It uses only
    // async-signal-safe calls.
    // SAFETY: see above.
    let pid = unsafe {
        match libc::fork() {
            0 => {
                let mut b = 0u8;
                libc::read(pipe[0], (&mut b as *mut u8).cast(), 1);
                for i in 0..CALLS {
                    libc::chmod(path.as_ptr(), if i % 2 == 0 { 0o644 } else { 0o600 });
                }
                libc::_exit(0);
            }
            pid => pid,
        }
    };
    let pid_s = pid.to_string();
    // One page of ring buffer and no early wake-up: most records must drop.
    let agent = Agent::start(&["--only-pid", &pid_s, "--ring-buffer-bytes", "4096"]);
    // SAFETY: writing one byte to our pipe, then reaping our child.
    unsafe {
        libc::write(pipe[1], b"x".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(status, 0);
    }
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
