//! The systemd unit's promises, checked without systemd: the agent works
//! with exactly the capabilities `packaging/guardrail-agent.service` grants
//! and `NoNewPrivileges`, and it tells the service manager when it is
//! ready and when it stops.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{assert_success, Agent, BoundedOutput, Launch};

const UNIT: &str = include_str!("../../packaging/guardrail-agent.service");

/// `CapabilityBoundingSet=CAP_BPF CAP_PERFMON …` as setpriv's
/// `-all,+bpf,+perfmon,…`.
fn unit_bounding_set() -> String {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit limits capabilities");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

#[test]
fn the_units_capabilities_are_enough_to_capture_and_revert() {
    assert!(UNIT.lines().any(|l| l == "NoNewPrivileges=yes"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another user's file: restoring its mode needs CAP_FOWNER.
    let file = d.join("policy");
    std::fs::write(&file, b"x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let rules = format!(
        "[[rule]]\nid = \"keep-policy\"\non = [\"perm.chmod\"]\npath = [\"{}\"]\naction = \"deny\"\nfallback = \"revert\"\n",
        file.display()
    );
    let launch = Launch {
        wrapper: [
            "setpriv",
            &format!("--bounding-set={}", unit_bounding_set()),
            "--inh-caps=-all",
            "--no-new-privs",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let agent = Agent::launch(&rules, &[], &launch);
    let status = agent.status();
    assert!(status["tracepoints_attached"].as_u64().unwrap() > 0);
    // Under the bounding set the agent has at most these capabilities.
    let caps = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let bnd = caps.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    assert_ne!(
        bnd.split_whitespace().nth(1),
        Some("000001ffffffffff"),
        "{bnd}"
    );
    if status["enforcement"]["deny"] == true {
        eprintln!("this kernel denies: revert is not used here");
        agent.stop();
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "chmod",
            "4777",
        ])
        .arg(&file)
        .bounded_output()
        .unwrap();
    assert_success(&out);
    let path = file.to_str().unwrap();
    let events = agent.collect_until(Duration::from_secs(20), |e| {
        e["perm"]["path"] == path && e["perm"]["op"] == "chmod"
    });
    let decision = &events.last().unwrap()["decision"];
    assert_eq!(decision["outcome"], "reverted", "{decision}");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o640);
    agent.stop();
}

#[test]
fn the_agent_says_ready_only_once_its_rules_are_in_force_and_stopping_at_the_end() {
    assert!(UNIT.lines().any(|l| l == "Type=notify"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let launch = Launch {
        env: vec![("NOTIFY_SOCKET".into(), path.display().to_string())],
        ..Default::default()
    };
    let agent = Agent::launch("", &[], &launch);
    let mut buf = [0u8; 256];
    // Start-up steps first: each extends systemd's start timeout and says
    // what the agent is doing, so a slow start that progresses is not
    // killed and an operator sees where it is. This manager reads only
    // once the agent serves: steps beyond its queue (10 datagrams) are
    // dropped, never waited for; READY is waited for.
    let mut steps = Vec::new();
    let ready = loop {
        let n = manager
            .recv(&mut buf)
            .expect("READY=1 within 60 s of the last step");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.starts_with("READY=1") {
            break message;
        }
        assert!(
            message.starts_with("EXTEND_TIMEOUT_USEC=120000000\nSTATUS=starting: "),
            "{message:?}"
        );
        steps.push(message);
    };
    assert_eq!(ready, "READY=1\nSTATUS=running");
    assert!(
        steps
            .iter()
            .any(|s| s.ends_with("verifying guardrail_sys_exit")),
        "{steps:#?}"
    );
    // Ready means serving: the control socket answers.
    assert!(agent.status()["tracepoints_attached"].as_u64().unwrap() > 0);
    agent.stop();
    let n = manager.recv(&mut buf).expect("STOPPING=1 at SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1");
}
