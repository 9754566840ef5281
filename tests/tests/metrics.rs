//! The Prometheus endpoint, scraped from a live agent: events by kind,
//! rule hits by outcome, kernel losses, reloads and evaluation latency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use guardrail_tests::{free_port, Agent};

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// The value of the sample whose name and labels start with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_scrape_shows_events_decisions_losses_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let file = d.join("watched");
    std::fs::write(&file, b"x").unwrap();
    let port = free_port();
    // An output, so that its counters are exported too.
    let syslog = d.join("syslog.sock");
    let _receiver = std::os::unix::net::UnixDatagram::bind(&syslog).unwrap();
    let config = format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[output]]\ntype = \"syslog\"\nsocket = \"{}\"\n\n[[rule]]\nid = \"watched-mode\"\non = [\"perm.chmod\"]\npath = [\"{}\"]\n",
        syslog.display(),
        file.display()
    );
    let agent = Agent::start_with_config(&config, &[]);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.to_str().unwrap();
    agent.collect_until(Duration::from_secs(20), |e| {
        e["perm"]["path"] == path && e["decision"]["rule"] == "watched-mode"
    });

    let (head, text) = get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        sample(&text, "guardrail_events_total{kind=\"perm\"}").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "guardrail_rule_hits_total{rule=\"watched-mode\",outcome=\"alerted\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "guardrail_rule_evaluation_seconds_count").unwrap() >= 1.0);
    // Losses are exported even when there are none, so alerts can use them.
    assert!(
        sample(&text, "guardrail_kernel_lost_ringbuf_total").is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "guardrail_audit_log_written_total").is_some(),
        "{text}"
    );
    assert_eq!(sample(&text, "guardrail_rules "), Some(1.0), "{text}");
    // The output's own thread delivers; the counters follow within a drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(port, "/metrics");
        if sample(&text, "guardrail_output_sent_total{output=\"syslog\"}") >= Some(1.0) {
            assert_eq!(
                sample(&text, "guardrail_output_dropped_total{output=\"syslog\"}"),
                Some(0.0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "the output sent nothing: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A broken configuration is counted as a failed reload.
    std::fs::write(&agent.config, "[[rule]]\nid = 1\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = get(port, "/metrics");
        if sample(&text, "guardrail_reloads_total{result=\"failed\"}") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed reload counted: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (head, _) = get(port, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    agent.stop();
}
