//! io_uring made visible: a process that sets up a ring is an event, with
//! its flags (SQPOLL: a kernel thread submits for it), its program and
//! lineage; rules allow-list the programs that may.

use std::process::Command;
use std::time::Duration;

use guardrail_tests::{is_marker, marker, Agent};
use serde_json::Value;

/// Perl (in every Debian) calling io_uring_setup(2) directly: `flags` go
/// into `struct io_uring_params` (offset 8).
fn set_up_a_ring(perl: &std::path::Path, flags: u32) -> u32 {
    let script = format!(
        "my $p = \"\\0\" x 120; substr($p, 8, 4) = pack(\"L\", {flags}); \
         my $fd = syscall(425, 8, $p); die \"io_uring_setup: $!\\n\" if $fd < 0; print \"$$\\n\";"
    );
    let out = Command::new(perl).args(["-e", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn setting_up_a_ring_is_an_event_and_allow_listed_programs_are_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    // The allow-listed program: a copy of perl under another name.
    let allowed = d.join("database");
    std::fs::copy("/usr/bin/perl", &allowed).unwrap();
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"uring\"\non = [\"uring.setup\"]\nexe_not = [\"{}\"]\nseverity = \"medium\"\n",
            allowed.display()
        ),
        &[],
    );
    const SQPOLL: u32 = 2;
    let plain = set_up_a_ring(std::path::Path::new("/usr/bin/perl"), 0);
    let polled = set_up_a_ring(std::path::Path::new("/usr/bin/perl"), SQPOLL);
    let listed = set_up_a_ring(&allowed, 0);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let setup_by = |pid: u32| -> &Value {
        events
            .iter()
            .find(|e| e["kind"] == "uring" && e["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no io_uring set-up event for pid {pid}"))
    };
    let e = setup_by(plain);
    assert_eq!(e["uring"]["op"], "setup", "{e:#}");
    assert_eq!(e["uring"]["sq_entries"], 8, "{e:#}");
    assert_eq!(e["process"]["exe"], "/usr/bin/perl", "{e:#}");
    assert!(
        !e["process"]["ancestors"].as_array().unwrap().is_empty(),
        "{e:#}"
    );
    assert_eq!(e["decision"]["rule"], "uring", "{e:#}");
    let e = setup_by(polled);
    assert!(
        e["uring"]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "sqpoll"),
        "{e:#}"
    );
    let e = setup_by(listed);
    assert!(
        e["decision"].is_null(),
        "an allow-listed program is quiet: {e:#}"
    );
}
