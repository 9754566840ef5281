//! Outputs with the real agent: a webhook that fails and then recovers
//! gets every alert once and in order, syslog gets them on a local socket,
//! and a webhook that never answers fills its small queue — dropped and
//! counted — while events and the other outputs go on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guardrail_tests::Agent;
use serde_json::Value;

/// Answers the first `fail_first` POSTs with 500, then 200; keeps the
/// bodies it accepted.
fn flaky_server(fail_first: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let keep = accepted.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            n += 1;
            let code = if n <= fail_first { 500 } else { 200 };
            if code == 200 {
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, accepted)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn output<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {status}"))
}

#[test]
fn alerts_reach_every_output_and_a_stuck_one_only_drops() {
    let dir = tempfile::tempdir().unwrap();
    let syslog_path = dir.path().join("log");
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (url, accepted) = flaky_server(2);
    // Accepts connections (the kernel does) but never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let tag = format!("guardrail-output-test-{}", std::process::id());
    let config = format!(
        r#"
[[output]]
type = "webhook"
name = "flaky"
url = "{url}"
backoff_ms = 50
retries = 5

[[output]]
type = "syslog"
socket = "{}"

[[output]]
type = "webhook"
name = "stuck"
url = "http://{}/alerts"
timeout_ms = 30000
queue = 1

[[rule]]
id = "output-test"
on = ["exec"]
argv_contains = ["{tag}"]
severity = "high"
"#,
        syslog_path.display(),
        stuck.local_addr().unwrap()
    );
    let agent = Agent::start_with_config(&config, &[]);
    for i in 1..=5 {
        let ok = Command::new("/bin/sh")
            .args(["-c", "true", "sh", &format!("{tag}-{i}")])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    // The event path went on: all five alerts were printed.
    agent.collect_until(Duration::from_secs(30), |e| {
        e["decision"]["rule"] == "output-test"
            && e["exec"]["argv"][4] == format!("{tag}-5").as_str()
    });
    wait_for("five alerts at the webhook", || {
        accepted.lock().unwrap().len() >= 5
    });
    let got: Vec<String> = accepted
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["exec"]["argv"][4].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=5).map(|i| format!("{tag}-{i}")).collect();
    assert_eq!(got, want, "each alert once, in order");
    let mut buf = vec![0u8; 65536];
    for i in 1..=5 {
        let n = syslog.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]);
        // auth (4) * 8 + err (3) for severity high
        assert!(line.starts_with("<35>1 "), "{line}");
        assert!(line.contains("rule=\"output-test\""), "{line}");
        assert!(line.contains(&format!("{tag}-{i}")), "{line}");
    }
    wait_for("status counters", || {
        let s = agent.status();
        output(&s, "flaky")["sent"] == 5 && output(&s, "syslog")["sent"] == 5
    });
    let s = agent.status();
    assert_eq!(output(&s, "flaky")["retries"], 2, "{s}");
    assert_eq!(output(&s, "flaky")["failed"], 0, "{s}");
    // One in flight, at most one queued, the rest dropped and counted.
    let stuck_out = output(&s, "stuck");
    let dropped = stuck_out["dropped"].as_u64().unwrap();
    assert!((3..=4).contains(&dropped), "{s}");
    assert_eq!(stuck_out["sent"], 0, "{s}");
    drop(stuck);
    agent.stop();
}

/// A reader of `--print` that goes away (`guardrail-agent --print json |
/// head`) does not stop the agent: it goes on capturing and answering.
#[test]
fn a_closed_print_pipe_does_not_stop_the_agent() {
    use std::os::unix::fs::PermissionsExt;
    let dir = guardrail_tests::trusted_tempdir();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let mut agent = Agent::launch("", &[], &guardrail_tests::Launch::default());
    agent.stop_reading();
    let before = agent.status()["events_total"].as_u64().unwrap();
    // The reader drops the pipe at the first of these; the agent writes
    // the rest into a closed pipe.
    let made = 200;
    for i in 0..made {
        let mode = if i % 2 == 0 { 0o600 } else { 0o640 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    guardrail_tests::wait_until(
        "the agent to count the chmods made after its reader left",
        Duration::from_secs(120),
        || agent.status()["events_total"].as_u64().unwrap() >= before + made,
    );
    assert!(agent.alive(), "the agent exited when its reader left");
    agent.stop();
}
