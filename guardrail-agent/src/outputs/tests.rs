use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicUsize;

use super::*;
use guardrail_engine::event::{Decision, FileDetails, Outcome, Process, SyscallResult};
use guardrail_engine::rules::spec::{Action, Mode};

fn event(seq: u64, decision: Option<(&str, Severity)>) -> Event {
    Event {
        seq,
        time: "2024-05-01T12:00:00.123456789Z".into(),
        ktime_ns: 1,
        via: None,
        body: Body::File {
            syscall: "openat".into(),
            process: Process {
                pid: 4242,
                uid: 0,
                comm: "vi".into(),
                exe: Some("/usr/bin/vi".into()),
                ..Default::default()
            },
            result: SyscallResult {
                ok: true,
                ret: 3,
                errno: None,
            },
            file: FileDetails {
                op: "open".into(),
                path: Some("/etc/shadow".into()),
                resolved: true,
                flags: vec!["write".into()],
                ..Default::default()
            },
        },
        decision: decision.map(|(rule, severity)| Decision {
            rule: rule.into(),
            action: Action::Alert,
            mode: Mode::Enforce,
            severity,
            outcome: Outcome::Alerted,
            fallback: None,
            matched: [("path".to_string(), "/etc/shadow".to_string())].into(),
            also: vec![],
            exempted: vec![],
            reverted: None,
            fallback_error: None,
        }),
        redacted: vec![],
    }
}

fn published(e: Event) -> Published {
    let json: Arc<str> = serde_json::to_string(&e).unwrap().into();
    Published {
        event: Arc::new(e),
        json,
    }
}

fn alert(seq: u64) -> Published {
    published(event(seq, Some(("shadow-writers", Severity::High))))
}

fn section(toml_text: &str) -> OutputSection {
    let c = crate::config::Config::parse(toml_text, std::path::Path::new("t.toml")).unwrap();
    c.output[0].get_ref().clone()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn filters_take_severity_rules_and_plain_events_as_configured() {
    let plain = event(1, None);
    let low = event(2, Some(("a", Severity::Low)));
    let high = event(3, Some(("b", Severity::High)));
    let all = Filter::default();
    assert!(all.accepts(&plain) && all.accepts(&low) && all.accepts(&high));
    let alerts = Filter {
        alerts_only: true,
        ..Default::default()
    };
    assert!(!alerts.accepts(&plain) && alerts.accepts(&low));
    let high_only = Filter {
        min_severity: Some(Severity::High),
        ..Default::default()
    };
    assert!(!high_only.accepts(&plain) && !high_only.accepts(&low) && high_only.accepts(&high));
    let rule_a = Filter {
        rules: Some(vec!["a".into()]),
        ..Default::default()
    };
    assert!(!rule_a.accepts(&plain) && rule_a.accepts(&low) && !rule_a.accepts(&high));
    // Defaults: stdout takes everything, the others only decisions.
    assert!(!Filter::of(&section("[[output]]\ntype = \"stdout\"\n")).alerts_only);
    assert!(Filter::of(&section("[[output]]\ntype = \"syslog\"\n")).alerts_only);
}

#[test]
fn the_log_names_processes_by_reference_unless_a_stream_carries_its_lines() {
    let form = |text: &str| {
        let config = Config::parse(text, std::path::Path::new("test.toml")).unwrap();
        log_process_form(&config)
    };
    let nats = "[[output]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nhost = \"h\"\n";
    assert_eq!(form(""), ProcessForm::Ref);
    // Outputs handed events take them whole, whatever the log writes.
    assert_eq!(form("[[output]]\ntype = \"stdout\"\n"), ProcessForm::Ref);
    // A stream of the log's own lines: whole processes.
    assert_eq!(form(nats), ProcessForm::Full);
    // A filtered stream is sent events, sealed in its own chain.
    assert_eq!(
        form(&format!("{nats}alerts_only = true\n")),
        ProcessForm::Ref
    );
    // Said: as said.
    assert_eq!(
        form(&format!("[audit_log]\nprocess = \"ref\"\n\n{nats}")),
        ProcessForm::Ref
    );
    assert_eq!(form("[audit_log]\nprocess = \"full\"\n"), ProcessForm::Full);
}

#[test]
fn an_rfc5424_line_has_priority_header_structured_data_and_summary() {
    let e = event(7, Some(("shadow-writers", Severity::High)));
    // auth (4) * 8 + err (3)
    assert_eq!(
        syslog::format(&e, 4, "host1", 99),
        "<35>1 2024-05-01T12:00:00.123456Z host1 guardrail 99 alert \
         [guardrail@32473 seq=\"7\" kind=\"file\" op=\"open\" rule=\"shadow-writers\" \
         outcome=\"alerted\" severity=\"high\" pid=\"4242\" uid=\"0\" exe=\"/usr/bin/vi\" \
         path=\"/etc/shadow\"] guardrail rule shadow-writers alerted (high): \
         file open     pid=4242 uid=0 /usr/bin/vi /etc/shadow (write)"
    );
    let mut odd = event(8, None);
    if let Body::File { file, .. } = &mut odd.body {
        file.path = Some("/tmp/a\"b]c\\d".into());
    }
    let line = syslog::format(&odd, 1, "", 1);
    assert!(
        line.starts_with(
            "<14>1 2024-05-01T12:00:00.123456Z - guardrail 1 file [guardrail@32473 seq=\"8\""
        ),
        "{line}"
    );
    assert!(line.contains(r#"path="/tmp/a\"b\]c\\d"]"#), "{line}");
}

#[test]
fn syslog_reaches_a_local_datagram_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cfg = section(&format!(
        "[[output]]\ntype = \"syslog\"\nsocket = \"{}\"\nfacility = \"local3\"\n",
        path.display()
    ));
    let mut outputs = Outputs::start(&[&cfg], None).unwrap();
    outputs.send(&published(event(1, None)));
    outputs.send(&alert(2));
    let mut buf = vec![0u8; 65536];
    let n = server.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    // local3 (19) * 8 + err (3); the plain event was filtered out.
    assert!(line.starts_with("<155>1 "), "{line}");
    assert!(line.contains("seq=\"2\""), "{line}");
    outputs.stop(Duration::from_secs(5));
    assert_eq!(outputs.snapshot()[0].sent, 1);
}

#[test]
fn journald_datagrams_use_the_native_encoding() {
    let bytes = journald::encode(&[
        ("MESSAGE", "one line".into()),
        ("GUARDRAIL_EVENT", "two\nlines".into()),
    ]);
    let mut want = b"MESSAGE=one line\nGUARDRAIL_EVENT\n".to_vec();
    want.extend_from_slice(&9u64.to_le_bytes());
    want.extend_from_slice(b"two\nlines\n");
    assert_eq!(bytes, want);

    let e = alert(3);
    let fields = journald::fields(&e.event, &e.json);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("PRIORITY"), Some("3"));
    assert_eq!(get("SYSLOG_IDENTIFIER"), Some("guardrail"));
    assert_eq!(get("GUARDRAIL_RULE"), Some("shadow-writers"));
    assert_eq!(get("GUARDRAIL_OUTCOME"), Some("alerted"));
    assert_eq!(get("GUARDRAIL_SEVERITY"), Some("high"));
    assert_eq!(get("GUARDRAIL_PATH"), Some("/etc/shadow"));
    assert_eq!(get("GUARDRAIL_EVENT"), Some(&*e.json));
    // Field names journald accepts: upper case, digits, underscore, not
    // starting with an underscore.
    for (name, _) in &fields {
        assert!(
            !name.starts_with('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
    }
}

#[test]
fn journald_reaches_a_local_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cfg = section(&format!(
        "[[output]]\ntype = \"journald\"\nsocket = \"{}\"\n",
        path.display()
    ));
    let outputs = Outputs::start(&[&cfg], None).unwrap();
    outputs.send(&alert(5));
    let mut buf = vec![0u8; 65536];
    let n = server.recv(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("MESSAGE=guardrail rule shadow-writers alerted (high): "),
        "{text}"
    );
    assert!(text.contains("\nGUARDRAIL_SEQ=5\n"), "{text}");
}

#[test]
fn the_slack_payload_is_a_text_message() {
    let mut e = event(1, Some(("shadow<writers>", Severity::Critical)));
    if let Body::File { file, .. } = &mut e.body {
        file.path = Some("/etc/a&b".into());
    }
    let v: serde_json::Value = serde_json::from_str(&webhook::slack(&e, "web-1")).unwrap();
    let text = v["text"].as_str().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert!(
        text.starts_with(
            "*guardrail* on `web-1`: rule `shadow&lt;writers&gt;` alerted (critical)\n```"
        ),
        "{text}"
    );
    assert!(text.contains("/etc/a&amp;b"), "{text}");
}

/// A local HTTP server: answers `fail_first` requests with `status`, then
/// 200, one request per connection; keeps the bodies it answered 200.
struct Server {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, String)> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((head, String::from_utf8(body).ok()?))
}

fn server(fail_first: usize, status: u16) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (a, n) = (accepted.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((head, body)) = read_request(&mut stream) else {
                continue;
            };
            assert!(head.starts_with("POST /hook "), "{head}");
            assert!(head
                .to_ascii_lowercase()
                .contains("content-type: application/json"));
            let i = n.fetch_add(1, Ordering::SeqCst);
            let code = if i < fail_first { status } else { 200 };
            if code == 200 {
                a.lock().unwrap().push(body);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    Server {
        addr,
        accepted,
        requests,
    }
}

fn webhook_section(url: &str, extra: &str) -> OutputSection {
    section(&format!(
        "[[output]]\ntype = \"webhook\"\nurl = \"{url}\"\nbackoff_ms = 10\nmax_backoff_ms = 40\ntimeout_ms = 2000\n{extra}"
    ))
}

#[test]
fn a_webhook_that_fails_then_recovers_gets_every_alert_once_in_order() {
    let srv = server(4, 503);
    let cfg = webhook_section(&format!("http://{}/hook", srv.addr), "retries = 5\n");
    let outputs = Outputs::start(&[&cfg], None).unwrap();
    for seq in 1..=10 {
        outputs.send(&alert(seq));
    }
    // A plain event is not an alert: not sent.
    outputs.send(&published(event(11, None)));
    wait_for("10 alerts delivered", || outputs.snapshot()[0].sent == 10);
    let s = &outputs.snapshot()[0];
    assert_eq!(
        (s.failed, s.dropped, s.retries, s.queued),
        (0, 0, 4, 0),
        "{s:?}"
    );
    assert_eq!(s.last_error, None, "cleared by the success");
    let seqs: Vec<u64> = srv
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<_>>(),
        "each alert exactly once, in order"
    );
    assert_eq!(srv.requests.load(Ordering::SeqCst), 14);
}

#[test]
fn a_webhook_gives_up_after_its_retries_and_does_not_retry_a_client_error() {
    let srv = server(usize::MAX, 500);
    let cfg = webhook_section(&format!("http://{}/hook", srv.addr), "retries = 2\n");
    let outputs = Outputs::start(&[&cfg], None).unwrap();
    outputs.send(&alert(1));
    wait_for("a failure", || outputs.snapshot()[0].failed == 1);
    let s = &outputs.snapshot()[0];
    assert_eq!((s.sent, s.retries), (0, 2), "{s:?}");
    assert_eq!(srv.requests.load(Ordering::SeqCst), 3);
    assert_eq!(
        s.last_error.as_deref(),
        Some(format!("http://{}: HTTP 500", srv.addr).as_str())
    );

    let srv = server(usize::MAX, 400);
    let cfg = webhook_section(&format!("http://{}/hook", srv.addr), "retries = 2\n");
    let outputs = Outputs::start(&[&cfg], None).unwrap();
    outputs.send(&alert(1));
    wait_for("a failure", || outputs.snapshot()[0].failed == 1);
    assert_eq!(srv.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_dead_webhook_is_retried_then_failed_and_its_url_path_is_not_shown() {
    // Nothing listens on this port once the listener is gone.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = webhook_section(
        &format!("http://{addr}/services/T000/B000/SECRETPART"),
        "retries = 1\n",
    );
    let outputs = Outputs::start(&[&cfg], None).unwrap();
    outputs.send(&alert(1));
    wait_for("a failure", || outputs.snapshot()[0].failed == 1);
    let err = outputs.snapshot()[0].last_error.clone().unwrap();
    assert!(err.starts_with(&format!("http://{addr}: ")), "{err}");
    assert!(!err.contains("SECRETPART"), "{err}");
}

#[test]
fn backoff_doubles_up_to_its_bound() {
    let w =
        webhook::Webhook::new(&webhook_section("http://127.0.0.1:1/hook", ""), "h".into()).unwrap();
    let ms: Vec<u128> = (0..5).map(|n| w.backoff(n).as_millis()).collect();
    assert_eq!(ms, [10, 20, 40, 40, 40]);
    assert_eq!(w.backoff(40).as_millis(), 40);
}

/// A sink that holds every delivery until released.
struct Stuck {
    release: Arc<(Mutex<bool>, std::sync::Condvar)>,
    delivered: Arc<AtomicUsize>,
}

impl Sink for Stuck {
    fn deliver(&mut self, _: &Published, _: &Delivery) -> Result<(), String> {
        let (lock, cv) = &*self.release;
        let mut go = lock.lock().unwrap();
        while !*go {
            go = cv.wait(go).unwrap();
        }
        self.delivered.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_stuck_output_neither_blocks_the_sender_nor_loses_count() {
    let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut outputs = Outputs::empty();
    outputs
        .add(
            "stuck".into(),
            OutputKind::Webhook,
            Filter::default(),
            8,
            Box::new(Stuck {
                release: release.clone(),
                delivered: delivered.clone(),
            }),
        )
        .unwrap();
    let p = alert(1);
    let start = Instant::now();
    for _ in 0..10_000 {
        outputs.send(&p);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "sending took {took:?}");
    let s = &outputs.snapshot()[0];
    // 8 queued, and at most one taken by the stuck thread.
    assert!(s.dropped >= 10_000 - 9 && s.dropped <= 10_000 - 8, "{s:?}");
    assert!(
        10_000 - s.dropped - s.queued <= 1,
        "at most one in flight: {s:?}"
    );
    *release.0.lock().unwrap() = true;
    release.1.notify_all();
    let accepted = 10_000 - s.dropped as usize;
    wait_for("the queue to drain", || {
        delivered.load(Ordering::SeqCst) == accepted
    });
    wait_for("the counters", || {
        outputs.snapshot()[0].sent == accepted as u64
    });
    assert_eq!(outputs.snapshot()[0].queued, 0);
}

#[test]
fn stopping_delivers_what_is_queued() {
    let release = Arc::new((Mutex::new(true), std::sync::Condvar::new()));
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut outputs = Outputs::empty();
    outputs
        .add(
            "counting".into(),
            OutputKind::Stdout,
            Filter::default(),
            100,
            Box::new(Stuck {
                release,
                delivered: delivered.clone(),
            }),
        )
        .unwrap();
    for seq in 0..50 {
        outputs.send(&alert(seq));
    }
    outputs.stop(Duration::from_secs(5));
    assert_eq!(delivered.load(Ordering::SeqCst), 50);
}

#[test]
fn outputs_are_named_by_type_and_numbered_when_repeated() {
    let a = section("[[output]]\ntype = \"stdout\"\n");
    let b = section("[[output]]\ntype = \"webhook\"\nurl = \"http://x/\"\n");
    let mut c = b.clone();
    c.name = Some("pager".into());
    assert_eq!(
        names(&[&a, &b, &b, &c]),
        ["stdout", "webhook-2", "webhook-3", "pager"]
    );
}

#[test]
fn an_https_webhook_speaks_tls() {
    // A server that records the first byte a client sends: a TLS
    // handshake record starts with 0x16.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let first = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        b[0]
    });
    let cfg = webhook_section(&format!("https://{addr}/hook"), "retries = 0\n");
    let outputs = Outputs::start(&[&cfg], None).unwrap();
    outputs.send(&alert(1));
    assert_eq!(first.join().unwrap(), 0x16);
    wait_for("the failure", || outputs.snapshot()[0].failed == 1);
    // One snapshot: the failure is counted together with its error.
    let snapshot = outputs.snapshot().remove(0);
    assert_eq!(snapshot.failed, 1);
    let err = snapshot.last_error.expect("the failure's error");
    assert!(err.starts_with(&format!("https://{addr}: ")), "{err}");
}
