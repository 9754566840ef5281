//! The NATS JetStream output with a real nats-server (Debian's
//! `nats-server`, installed by `cargo xtask test`): three agents publish
//! during a storm while the server is killed and restarted; an agent
//! restarted while the server is down keeps its spool; wrong credentials,
//! an unreachable server, a full spool and a stream with other settings
//! each give a clear error and lose nothing else.
//!
//! What the tests read is the stream itself, with the `async-nats` client:
//! per host, every event exactly once and in order (the pipeline's `seq`
//! runs 1, 2, 3 … without a gap), and the host's chain verifying with
//! `guardrail log verify` on the exported records.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use guardrail_tests::nats::{read_stream as read_stream_as, runtime, NatsServer, STREAM};
use guardrail_tests::{
    assert_success, free_port, log_verify_nats, trusted_tempdir, wait_until, Agent, Launch,
};
use serde_json::Value;
const DEADLINE: Duration = Duration::from_secs(120);

/// Every message of the stream, in stream order: subject and payload.
fn read_stream(url: &str) -> Vec<(String, String)> {
    read_stream_as(url, async_nats::ConnectOptions::new())
}

/// One host's records, in stream order, each with its event; each
/// subject names the host and the event's kind.
fn records_of(all: &[(String, String)], host: &str) -> Vec<(String, Value)> {
    let prefix = format!("guardrail.{host}.");
    all.iter()
        .filter_map(|(subject, payload)| {
            let kind = subject.strip_prefix(&prefix)?;
            let v: Value = serde_json::from_str(payload).unwrap();
            assert_eq!(v["kind"], kind, "{subject}: {payload}");
            Some((payload.clone(), v))
        })
        .collect()
}

/// The host's records are its audit log's own lines, in the log's order,
/// none missing or repeated except where a `loss` message says lines were
/// lost; and `guardrail log verify --nats` finds the chain intact.
fn assert_chain(url: &str, dir: &Path, host: &str, records: &[(String, Value)]) {
    assert_chain_with(url, &[], dir, host, records)
}

/// [`assert_chain`], `log verify --nats` given `args` (credentials).
fn assert_chain_with(
    url: &str,
    args: &[&str],
    dir: &Path,
    host: &str,
    records: &[(String, Value)],
) {
    let verified = log_verify_nats(url, host, args);
    assert_success(&verified);
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("the chain is intact"),
        "{verified:?}"
    );
    // The log's files on disk, oldest first. Lines of files rotated away
    // since (the output sent them from its open descriptors) are older
    // than all of them.
    let path = dir.join(format!("{host}-audit.jsonl"));
    let mut log = String::new();
    for i in (1..)
        .take_while(|i| path.with_extension(format!("jsonl.{i}")).exists())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        log.push_str(&std::fs::read_to_string(path.with_extension(format!("jsonl.{i}"))).unwrap());
    }
    log.push_str(&std::fs::read_to_string(&path).unwrap());
    let at: std::collections::HashMap<&str, usize> =
        log.lines().enumerate().map(|(i, l)| (l, i)).collect();
    let mut last: Option<usize> = None;
    let mut after_loss = false;
    for (i, (line, v)) in records.iter().enumerate() {
        if v["kind"] == "loss" && v.get("chain").is_none() {
            after_loss = true;
            continue;
        }
        // The stream's readers take each message alone: unless told
        // otherwise, a log whose lines a stream carries writes processes
        // whole, never by reference.
        assert!(
            v.get("process").is_none() || v["process"].get("ppid").is_some(),
            "{host}: record {i} names its process by reference: {line}"
        );
        let Some(&here) = at.get(line.as_str()) else {
            assert!(
                last.is_none(),
                "{host}: record {i} is not a line of the audit log's files: {line}"
            );
            continue;
        };
        if let Some(last) = last {
            assert!(
                here == last + 1 || (after_loss && here > last),
                "{host}: record {i} is audit log line {here} after line {last}: missing, repeated or out of order"
            );
        }
        last = Some(here);
        after_loss = false;
    }
}

/// [`STREAM`] as the server describes it now.
fn stream_info(url: &str) -> async_nats::jetstream::stream::Info {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        js.get_stream(STREAM)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone()
    })
}

fn nats_output(agent: &Agent) -> Value {
    agent.status()["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "nats")
        .cloned()
        .expect("a nats output in status")
}

fn config(url: &str, host: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[audit_log]\npath = \"{audit}\"\n\n[[output]]\ntype = \"nats\"\nurl = \"{url}\"\nhost = \"{host}\"\nspool_dir = \"{spool}\"\n{extra}",
        audit = dir.join(format!("{host}-audit.jsonl")).display(),
        spool = dir.join(format!("{host}-spool")).display(),
    )
}

/// [`config`] with an audit log of two small files (`max_bytes` each):
/// the log's files are the output's queue, and those rotated out unsent
/// are held up to `spool_bytes`.
fn small_log_config(url: &str, host: &str, dir: &Path, max_bytes: u64, spool_bytes: u64) -> String {
    config(url, host, dir, &format!("spool_bytes = {spool_bytes}\n")).replacen(
        "[audit_log]\n",
        &format!("[audit_log]\nmax_bytes = {max_bytes}\nmax_files = 2\n"),
        1,
    )
}

fn quiet() -> Launch {
    Launch {
        quiet: true,
        ..Default::default()
    }
}

/// The `seq` of the event creating `marker` in `host`'s audit log.
fn marker_seq(dir: &Path, host: &str, marker: &Path) -> Option<u64> {
    // Small files rotate under another test's storm, and with the server
    // down the files rotated out are held (`.held.<n>`): read newest
    // first, so a file renamed between two reads is read after it moved.
    let path = dir.join(format!("{host}-audit.jsonl"));
    let mut files = vec![
        path.clone(),
        path.with_extension("jsonl.1"),
        path.with_extension("jsonl.2"),
    ];
    files.extend(held_logs(dir, host));
    let quoted = serde_json::to_string(marker.to_str().unwrap()).unwrap();
    files
        .iter()
        // A held file given up meanwhile is gone: skip it.
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|log| {
            log.lines()
                .filter(|l| l.contains(&quoted))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .find(|e| e["kind"] == "file" && e["file"]["path"] == marker.to_str().unwrap())
        .and_then(|e| e["seq"].as_u64())
}

/// The files of `host`'s audit log held for the output
/// (`<log>.held.<n>`), newest (highest `n`) first.
fn held_logs(dir: &Path, host: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("{host}-audit.jsonl.held.");
    let mut held: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    held.sort_by_key(|h| std::cmp::Reverse(h.0));
    held.into_iter().map(|(_, p)| p).collect()
}

/// Create `marker` and wait until `host`'s agent has logged it. Written
/// again every few seconds it is not found: a full spool may give up the
/// held file holding it before it is read.
fn mark(dir: &Path, host: &str, marker: &Path) -> u64 {
    let mut seq = None;
    let mut written = Instant::now() - Duration::from_secs(60);
    wait_until(
        &format!("{host} to log {}", marker.display()),
        DEADLINE,
        || {
            if written.elapsed() > Duration::from_secs(5) {
                std::fs::write(marker, b"").unwrap();
                written = Instant::now();
            }
            seq = marker_seq(dir, host, marker);
            seq.is_some()
        },
    );
    seq.unwrap()
}

/// A shell chmod loop for `seconds`: a storm the agents keep up with.
fn storm(file: &Path, seconds: u32) -> Child {
    let script = format!(
        "end=$(( $(date +%s) + {seconds} )); while [ $(date +%s) -lt $end ]; do \
         for i in 1 2 3 4 5 6 7 8 9 10; do chmod 600 {f}; chmod 644 {f}; done; done",
        f = file.display()
    );
    Command::new("sh").args(["-c", &script]).spawn().unwrap()
}

/// Per host, the pipeline's events in the stream up to the one with
/// `upto`: seq 1 … upto, each once, in order.
fn assert_events_exactly_once(records: &[(String, Value)], host: &str, upto: u64) {
    let seqs: Vec<u64> = records
        .iter()
        .map(|(_, v)| v["seq"].as_u64().unwrap())
        .take_while(|&s| s <= upto)
        .collect();
    let want: Vec<u64> = (1..=upto).collect();
    if seqs != want {
        let first_bad = seqs
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(seqs.len().min(want.len()));
        panic!(
            "{host}: events 1..={upto} not each exactly once in order: {} in the stream, first difference at index {first_bad}: {:?}",
            seqs.len(),
            &seqs[first_bad.saturating_sub(2)..(first_bad + 3).min(seqs.len())]
        );
    }
}

/// `guardrail log verify --nats URL --host HOST`.
fn verify_nats(url: &str, host: &str) -> std::process::Output {
    log_verify_nats(url, host, &[])
}

/// The records of the agent's first run: its events' `seq` rises until
/// the agent restarts and numbers them from 1 again.
fn first_run(records: &[(String, Value)]) -> Vec<(String, Value)> {
    records
        .iter()
        .scan(0, |last, r| {
            let seq = r.1["seq"].as_u64().unwrap();
            (seq > *last).then(|| {
                *last = seq;
                r.clone()
            })
        })
        .collect()
}

#[test]
fn three_agents_deliver_every_event_once_in_order_through_a_server_kill() {
    let dir = trusted_tempdir();
    let store = dir.path().join("store");
    let mut server = NatsServer::start(&store, &[]);
    let hosts = ["alpha", "bravo", "charlie"];
    let agents: Vec<Agent> = hosts
        .iter()
        .map(|h| Agent::launch(&config(&server.url(), h, dir.path(), ""), &[], &quiet()))
        .collect();
    let target = dir.path().join("stormed");
    std::fs::write(&target, b"").unwrap();
    let mut load = storm(&target, 20);
    wait_until("every agent to publish", DEADLINE, || {
        agents
            .iter()
            .all(|a| nats_output(a)["sent"].as_u64() > Some(200))
    });
    server.kill();
    wait_until("every agent to notice the server is gone", DEADLINE, || {
        agents
            .iter()
            .all(|a| !nats_output(a)["last_error"].is_null())
    });
    let sent_before: Vec<u64> = agents
        .iter()
        .map(|a| nats_output(a)["sent"].as_u64().unwrap())
        .collect();
    server.restart();
    wait_until("every agent to publish again", DEADLINE, || {
        agents
            .iter()
            .zip(&sent_before)
            .all(|(a, before)| nats_output(a)["sent"].as_u64().unwrap() > before + 200)
    });
    assert!(load.wait().unwrap().success());
    let marker = dir.path().join("marker");
    let upto: Vec<u64> = hosts.iter().map(|h| mark(dir.path(), h, &marker)).collect();
    let mut all = vec![];
    wait_until("every host's marker in the stream", DEADLINE, || {
        all = read_stream(&server.url());
        hosts.iter().zip(&upto).all(|(h, u)| {
            records_of(&all, h)
                .iter()
                .any(|(_, v)| v["seq"].as_u64() >= Some(*u))
        })
    });
    for ((host, upto), agent) in hosts.iter().zip(&upto).zip(&agents) {
        let records = records_of(&all, host);
        assert_chain(&server.url(), dir.path(), host, &records);
        assert_events_exactly_once(&records, host, *upto);
        let out = nats_output(agent);
        assert_eq!(out["dropped"], 0, "{host}: {out}");
        assert_eq!(out["failed"], 0, "{host}: {out}");
    }
    for a in agents {
        a.stop();
    }
}

/// A storm far faster than JetStream acknowledges (chmod(2) in a tight
/// loop, 20,000 as fast as they go), with the output's default settings:
/// every event reaches the stream once, none is dropped on the way to the
/// spool (a 1024-event queue in front of it used to drop a fifth of such
/// a storm).
#[test]
fn a_storm_faster_than_the_server_is_spooled_and_delivered_whole() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &[]);
    let cfg = config(&server.url(), "storm", dir.path(), "");
    let agent = Agent::launch(&cfg, &[], &quiet());
    mark(dir.path(), "storm", &dir.path().join("started"));
    let file = dir.path().join("target");
    std::fs::write(&file, b"").unwrap();
    let c_path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    for i in 0..20_000 {
        let mode = if i % 2 == 0 { 0o600 } else { 0o644 };
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::chmod(c_path.as_ptr(), mode) }, 0);
    }
    let upto = mark(dir.path(), "storm", &dir.path().join("ended"));
    let mut records = vec![];
    wait_until("every event of the storm in the stream", DEADLINE, || {
        records = records_of(&read_stream(&server.url()), "storm");
        records.iter().any(|(_, v)| v["seq"].as_u64() >= Some(upto))
    });
    let out = nats_output(&agent);
    assert_eq!(out["dropped"], 0, "{out}");
    // Every event the pipeline numbered (a loss of the ring buffer, if the
    // agent fell behind the kernel, is one of them) is there once.
    assert_events_exactly_once(&records, "storm", upto);
    assert!(upto > 20_000, "the storm's events are in it ({upto})");
    // A burst shares messages (a publish per event would cost more agent
    // CPU than the rest of the event path).
    let messages = stream_info(&server.url()).state.messages;
    assert!(
        messages * 4 < records.len() as u64,
        "{messages} messages for {} records: the storm's records were not batched",
        records.len()
    );
    agent.stop();
}

#[test]
fn an_agent_restarted_while_the_server_is_down_delivers_its_spool_later() {
    let dir = trusted_tempdir();
    let mut server = NatsServer::start(&dir.path().join("store"), &[]);
    let cfg = config(&server.url(), "delta", dir.path(), "");
    let agent = Agent::launch(&cfg, &[], &quiet());
    let first = mark(dir.path(), "delta", &dir.path().join("first"));
    wait_until("the first marker in the stream", DEADLINE, || {
        records_of(&read_stream(&server.url()), "delta")
            .iter()
            .any(|(_, v)| v["seq"].as_u64() >= Some(first))
    });
    server.kill();
    let second = mark(dir.path(), "delta", &dir.path().join("second"));
    agent.stop();
    let spool = dir.path().join("delta-spool");
    assert!(
        std::fs::read_dir(&spool).unwrap().count() > 0,
        "the spool is kept"
    );
    let agent = Agent::launch(&cfg, &[], &quiet());
    let third = dir.path().join("third");
    std::fs::write(&third, b"").unwrap();
    server.restart();
    let mut records = vec![];
    wait_until("the third marker in the stream", DEADLINE, || {
        records = records_of(&read_stream(&server.url()), "delta");
        records
            .iter()
            .any(|(_, v)| v["file"]["path"] == third.to_str().unwrap())
    });
    // One chain across both runs of the agent, each record once.
    assert_chain(&server.url(), dir.path(), "delta", &records);
    let second_path = dir.path().join("second");
    let seconds = records
        .iter()
        .filter(|(_, v)| v["file"]["path"] == second_path.to_str().unwrap())
        .count();
    assert_eq!(seconds, 1, "the event spooled while the server was down");
    // The first run's events are all there: seq 1 … through the second
    // marker (the second run numbers its events from 1 again).
    let first = first_run(&records);
    assert_events_exactly_once(&first, "delta", second);
    assert!(
        records.len() > first.len(),
        "the second run's events follow in the same chain"
    );
    agent.stop();
}

/// An agent SIGKILLed mid-storm loses nothing on the way to the stream:
/// the next start reads the audit log on from the first line the server
/// had not acknowledged (the output's cursor), and skips the lines sent
/// since that the stream holds. The stream then holds every line of the
/// host's audit log, once, in order, without a `loss` message.
#[test]
fn an_agent_killed_mid_storm_sends_every_line_its_log_wrote_once() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &[]);
    let cfg = config(&server.url(), "india", dir.path(), "");
    let agent = Agent::launch(&cfg, &[], &quiet());
    let target = dir.path().join("stormed");
    std::fs::write(&target, b"").unwrap();
    let mut load = storm(&target, 600);
    wait_until("the output to publish", DEADLINE, || {
        nats_output(&agent)["sent"].as_u64() > Some(500)
    });
    // SIGKILL: messages in flight, the cursor maybe not saved.
    drop(agent);
    load.kill().unwrap();
    load.wait().unwrap();
    let agent = Agent::launch(&cfg, &[], &quiet());
    let marker = dir.path().join("after-kill");
    mark(dir.path(), "india", &marker);
    let mut records = vec![];
    wait_until("the marker in the stream", DEADLINE, || {
        records = records_of(&read_stream(&server.url()), "india");
        records
            .iter()
            .any(|(_, v)| v["file"]["path"] == marker.to_str().unwrap())
    });
    assert!(
        !records.iter().any(|(_, v)| v["kind"] == "loss"),
        "nothing was lost"
    );
    assert_chain(&server.url(), dir.path(), "india", &records);
    // From the log's first line through the marker's: all of them.
    let log = std::fs::read_to_string(dir.path().join("india-audit.jsonl")).unwrap();
    let upto = log
        .lines()
        .position(|l| l.contains(marker.to_str().unwrap()))
        .unwrap();
    let sent: Vec<&str> = records
        .iter()
        .map(|(l, _)| l.as_str())
        .take(upto + 1)
        .collect();
    let logged: Vec<&str> = log.lines().take(upto + 1).collect();
    assert_eq!(
        sent.len(),
        logged.len(),
        "lines of the log missing in the stream"
    );
    assert!(sent == logged, "the stream is not the log's lines in order");
    agent.stop();
}

/// The audit log's files are the output's queue: through an outage across
/// many rotations, with the log keeping only its two last files, the files
/// rotated out unsent are held (within `spool_bytes`), across an agent
/// restart too, and delivered: every event once, in order, nothing lost;
/// then they are removed.
#[test]
fn an_outage_across_many_rotations_and_a_restart_delivers_the_files_rotated_out_once() {
    let dir = trusted_tempdir();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let cfg = small_log_config(&url, "golf", dir.path(), 262_144, 64 << 20);
    let agent = Agent::launch(&cfg, &[], &quiet());
    wait_until(
        "the output to report the unreachable server",
        DEADLINE,
        || !nats_output(&agent)["last_error"].is_null(),
    );
    let file = dir.path().join("target");
    std::fs::write(&file, b"").unwrap();
    let c_path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    for i in 0..10_000 {
        let mode = if i % 2 == 0 { 0o600 } else { 0o644 };
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::chmod(c_path.as_ptr(), mode) }, 0);
    }
    let upto = mark(dir.path(), "golf", &dir.path().join("ended"));
    let rotated = |i: u32| dir.path().join(format!("golf-audit.jsonl.{i}"));
    assert!(!rotated(3).exists() && rotated(2).exists());
    let kept: u64 = [rotated(2), rotated(1), dir.path().join("golf-audit.jsonl")]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    wait_until(
        "the files rotated away unsent to be held (spooled_bytes)",
        DEADLINE,
        || nats_output(&agent)["spooled_bytes"].as_u64() > Some(kept),
    );
    let held = || held_logs(dir.path(), "golf").len();
    assert!(held() > 0, "held on disk, beside the log");
    agent.stop();
    let agent = Agent::launch(&cfg, &[], &quiet());
    let restarted = dir.path().join("restarted");
    std::fs::write(&restarted, b"").unwrap();
    let mut server = NatsServer::not_started(port, &dir.path().join("store"), &[]);
    server.restart();
    let mut records = vec![];
    wait_until("the events of both runs in the stream", DEADLINE, || {
        records = records_of(&read_stream(&url), "golf");
        records
            .iter()
            .any(|(_, v)| v["file"]["path"] == restarted.to_str().unwrap())
    });
    assert!(
        !records.iter().any(|(_, v)| v["kind"] == "loss"),
        "nothing was lost"
    );
    let first = first_run(&records);
    assert_events_exactly_once(&first, "golf", upto);
    assert!(upto > 10_000, "the storm's events are in it ({upto})");
    assert_chain(&url, dir.path(), "golf", &records);
    let out = nats_output(&agent);
    assert_eq!(out["dropped"], 0, "{out}");
    wait_until("the held files to be sent and removed", DEADLINE, || {
        held() == 0 && nats_output(&agent)["spooled_bytes"].as_u64() == Some(0)
    });
    agent.stop();
}

#[test]
fn a_wrong_credential_is_reported_and_the_spool_is_sent_once_it_is_right() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &["--auth", "s3cret-token"]);
    let token = dir.path().join("token");
    std::fs::write(&token, "not-the-token\n").unwrap();
    // Readable by root only, or the agent refuses it (docs/security.md).
    let root_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&token, root_only).unwrap();
    let extra = format!("token_file = \"{}\"\n", token.display());
    let cfg = config(&server.url(), "echo", dir.path(), &extra);
    let agent = Agent::launch(&cfg, &[], &quiet());
    let mut out = Value::Null;
    wait_until(
        "the output to report the refused credential",
        DEADLINE,
        || {
            out = nats_output(&agent);
            out["last_error"]
                .as_str()
                .is_some_and(|e| e.to_ascii_lowercase().contains("authorization"))
        },
    );
    assert!(
        !out["last_error"]
            .as_str()
            .unwrap()
            .contains("not-the-token"),
        "the credential is not shown: {out}"
    );
    let marker = dir.path().join("while-refused");
    let upto = mark(dir.path(), "echo", &marker);
    agent.stop();
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let agent = Agent::launch(&cfg, &[], &quiet());
    let mut records = vec![];
    wait_until(
        "the events of the refused run in the stream",
        DEADLINE,
        || {
            let opts = async_nats::ConnectOptions::with_token("s3cret-token".into());
            records = records_of(&read_stream_as(&server.url(), opts), "echo");
            records
                .iter()
                .any(|(_, v)| v["file"]["path"] == marker.to_str().unwrap())
        },
    );
    assert_chain_with(
        &server.url(),
        &["--token-file", token.to_str().unwrap()],
        dir.path(),
        "echo",
        &records,
    );
    assert_events_exactly_once(&first_run(&records), "echo", upto);
    agent.stop();
}

#[test]
fn an_unreachable_server_and_a_full_spool_are_reported_and_the_loss_is_in_the_stream() {
    let dir = trusted_tempdir();
    // Nothing listens there yet.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let cfg = small_log_config(&url, "foxtrot", dir.path(), 65_536, 1 << 20);
    let agent = Agent::launch(&cfg, &[], &quiet());
    wait_until(
        "the output to report the unreachable server",
        DEADLINE,
        || {
            nats_output(&agent)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot connect") && e.contains(&port.to_string()))
        },
    );
    let target = dir.path().join("stormed");
    std::fs::write(&target, b"").unwrap();
    let mut load = storm(&target, 600);
    let mut out = Value::Null;
    wait_until(
        "the spool to fill and drop",
        Duration::from_secs(300),
        || {
            out = nats_output(&agent);
            out["dropped"].as_u64() > Some(0)
        },
    );
    load.kill().unwrap();
    load.wait().unwrap();
    assert!(out["spooled_bytes"].as_u64() <= Some(1 << 20), "{out}");
    // Why it dropped (the latest error may be the next connection
    // attempt's by now).
    assert!(
        out["last_drop"]
            .as_str()
            .is_some_and(|e| e.contains("spool full")),
        "{out}"
    );
    // The events go on to the audit log.
    mark(dir.path(), "foxtrot", &dir.path().join("after-full"));
    let mut server = NatsServer::not_started(port, &dir.path().join("store"), &[]);
    server.restart();
    let mut records = vec![];
    wait_until("the loss record in the stream", DEADLINE, || {
        records = records_of(&read_stream(&url), "foxtrot");
        records.iter().any(|(_, v)| v["kind"] == "loss")
    });
    assert_chain(&url, dir.path(), "foxtrot", &records);
    // `log verify --nats` says where the host reported the loss.
    let verified = verify_nats(&url, "foxtrot");
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("could not send"),
        "{verified:?}"
    );
    let loss = &records.iter().find(|(_, v)| v["kind"] == "loss").unwrap().1["loss"];
    assert_eq!(loss["output"], "nats");
    assert!(loss["count"].as_u64() > Some(0), "{loss}");
    agent.stop();
}

#[test]
fn a_stream_with_other_settings_is_not_changed_and_the_output_says_why() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &[]);
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["guardrail.>".into()],
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let agent = Agent::launch(
        &config(&server.url(), "golf", dir.path(), ""),
        &[],
        &quiet(),
    );
    wait_until("the output to report the mismatch", DEADLINE, || {
        nats_output(&agent)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exists with other settings") && e.contains("max_age 1h"))
    });
    let max_age = stream_info(&server.url()).config.max_age;
    assert_eq!(
        max_age,
        Duration::from_secs(3600),
        "the stream is left alone"
    );
    assert_eq!(read_stream(&server.url()).len(), 0);
    agent.stop();
}

#[test]
fn log_verify_nats_finds_a_missing_an_edited_and_a_repeated_record() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &[]);
    let agent = Agent::launch(
        &config(&server.url(), "hotel", dir.path(), ""),
        &[],
        &quiet(),
    );
    // Markers one at a time, each in the stream before the next: the
    // agent hands each over alone, so the stream holds several messages
    // (records handed over together share one).
    for i in 0..4 {
        let upto = mark(dir.path(), "hotel", &dir.path().join(format!("marker-{i}")));
        wait_until("the marker in the stream", DEADLINE, || {
            records_of(&read_stream(&server.url()), "hotel")
                .iter()
                .any(|(_, v)| v["seq"].as_u64() >= Some(upto))
        });
    }
    agent.stop();
    assert_success(&verify_nats(&server.url(), "hotel"));
    let broken = |what: &str, want: &str| {
        let out = verify_nats(&server.url(), "hotel");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{what}: {out:?}"
        );
    };
    let rt = runtime();
    let js = rt.block_on(async {
        async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
    });
    let mut stream = rt.block_on(js.get_stream(STREAM)).unwrap();
    let publish = |subject: &str, payload: String| -> u64 {
        rt.block_on(async {
            js.publish(subject.to_string(), payload.into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        })
    };
    let text = |m: &async_nats::jetstream::message::StreamMessage| {
        String::from_utf8(m.payload.to_vec()).unwrap()
    };
    let last_seq = rt.block_on(stream.info()).unwrap().state.last_sequence;
    let last = rt.block_on(stream.get_raw_message(last_seq)).unwrap();
    // Edited: the last record replaced by a changed copy.
    rt.block_on(stream.delete_message(last_seq)).unwrap();
    let edited = publish(
        &last.subject,
        text(&last).replacen("\"ktime_ns\":", "\"ktime_ns\":1", 1),
    );
    broken("an edited record", "edited");
    rt.block_on(stream.delete_message(edited)).unwrap();
    publish(&last.subject, text(&last));
    assert_success(&verify_nats(&server.url(), "hotel"));
    // Repeated: an older record again at the end (a swap, as a cluster
    // fail-over makes, is named as stored late instead: see chain_order).
    let third = rt.block_on(stream.get_raw_message(3)).unwrap();
    let again = publish(&third.subject, text(&third));
    broken("a record repeated at the end", "out of order");
    rt.block_on(stream.delete_message(again)).unwrap();
    assert_success(&verify_nats(&server.url(), "hotel"));
    // Missing: the second record deleted.
    rt.block_on(stream.delete_message(2)).unwrap();
    broken("a deleted record", "missing");
}
