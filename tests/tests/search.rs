//! The audit log as history: `guardrail tail --since` (the log, then the
//! live stream, joined without a gap or a repeat), `guardrail log search`
//! on a real agent's log, and `guardrail rules test --against` as a gate.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use guardrail_tests::{assert_success, bin, marker, wait_until, Agent, BoundedOutput, Launch};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every record of the agent's audit log (rotated files first).
fn log_records(agent: &Agent) -> Vec<Value> {
    records_of(&PathBuf::from(
        agent.status()["audit_log"]["path"].as_str().unwrap(),
    ))
}

/// Every record of the audit log `live` and its rotated files, each
/// process named by reference replaced by the object that defined it
/// earlier in its file (what readers of the log show).
fn records_of(live: &Path) -> Vec<Value> {
    let live = live.to_path_buf();
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(live.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = p.extension()?.to_str()?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files.push((0, live));
    files
        .iter()
        .flat_map(|(_, f)| {
            let mut defined = std::collections::HashMap::new();
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| {
                    let mut e: Value = serde_json::from_str(l).unwrap();
                    let p = &e["process"];
                    if let Some(pv) = p["pv"].as_u64() {
                        let key = (p["id"].as_str().unwrap().to_string(), pv);
                        if p.get("ppid").is_some() {
                            defined.insert(key, p.clone());
                        } else {
                            e["process"] = defined[&key].clone();
                        }
                    }
                    e
                })
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Whether an event names a path under `dir` (as `--path DIR/**` does),
/// or is a loss report (which every tail shows).
fn under(e: &Value, dir: &Path) -> bool {
    let prefix = format!("{}/", dir.display());
    e["kind"] == "loss"
        || [
            &e["file"]["path"],
            &e["file"]["new_path"],
            &e["perm"]["path"],
            &e["exec"]["path"],
        ]
        .iter()
        .any(|p| p.as_str().is_some_and(|p| p.starts_with(&prefix)))
}

#[test]
fn tail_since_shows_the_log_then_live_events_once_each_in_order() {
    // Writing every record through to the disk keeps the log behind the
    // live stream during the storm: the tail must wait for the log to
    // reach where the stream starts, or show a gap.
    let log_dir = tempfile::tempdir().unwrap();
    let agent = Agent::launch(
        &format!(
            "[audit_log]\npath = \"{}/audit.jsonl\"\nfsync = \"always\"\n",
            log_dir.path().display()
        ),
        &[],
        &Launch {
            quiet: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let files: Vec<PathBuf> = (0..5).map(|i| d.join(format!("f{i}"))).collect();
    for f in &files {
        std::fs::write(f, b"x").unwrap();
    }
    // History: in the log before the tail starts.
    for i in 0..300 {
        chmod(&files[i % 5], 0o600 + (i % 2) as u32);
    }
    let before = d.join("before");
    std::fs::write(&before, b"x").unwrap();
    wait_until(
        "the first chmods in the log",
        Duration::from_secs(60),
        || {
            log_records(&agent)
                .iter()
                .any(|e| e["file"]["path"] == before.to_str().unwrap())
        },
    );

    // A storm while the tail starts: the seam falls inside it.
    let storming = Arc::new(AtomicBool::new(true));
    let storm = {
        let storming = storming.clone();
        let files = files.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while storming.load(Ordering::Relaxed) {
                chmod(&files[n % 5], 0o600 + (n % 2) as u32);
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut tail = Command::new(bin("guardrail"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(["tail", "--since", "1h", "--json", "--path"])
        .arg(format!("{}/**", d.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("tail printed a non-JSON line ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    storming.store(false, Ordering::Relaxed);
    let stormed = storm.join().unwrap();
    let end = marker(&d);
    std::fs::write(&end, b"x").unwrap();
    let mut printed: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed
        .last()
        .is_some_and(|e| e["file"]["path"] == end.to_str().unwrap())
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => printed.push(v),
            Err(_) => panic!(
                "tail did not show the end marker within 60 s; {} events shown",
                printed.len()
            ),
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    // Stopping the agent writes out what the log still holds in memory.
    agent.stop();
    let log = records_of(&log_dir.path().join("audit.jsonl"));

    // The log's records for this directory, up to the marker.
    let end_seq = printed.last().unwrap()["seq"].as_u64().unwrap();
    let logged: Vec<u64> = log
        .iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s <= end_seq) && under(e, &d))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let shown: Vec<u64> = printed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        shown.windows(2).all(|w| w[0] < w[1]),
        "not in order, or repeated: {:?}",
        shown.windows(2).find(|w| w[0] >= w[1])
    );
    let missing: Vec<&u64> = logged.iter().filter(|s| !shown.contains(s)).collect();
    let extra: Vec<&u64> = shown.iter().filter(|s| !logged.contains(s)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} shown, {} logged; missing from the tail: {:?}; not in the log: {:?}",
        shown.len(),
        logged.len(),
        &missing[..missing.len().min(20)],
        &extra[..extra.len().min(20)]
    );
    // History and live both took part: the 300 chmods before the tail,
    // and the storm's after.
    assert!(
        shown.len() >= 300 + stormed,
        "{} shown, {stormed} stormed",
        shown.len()
    );
    // History lines are printed as the live ones are: without the chain.
    assert!(printed.iter().all(|e| e.get("chain").is_none()));
}

#[test]
fn log_search_by_path_on_a_real_log() {
    let agent = Agent::start_with_config("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    std::fs::write(&a, b"x").unwrap();
    chmod(&a, 0o640);
    std::fs::write(&b, b"y").unwrap();
    std::fs::rename(&b, &c).unwrap();
    let end = marker(&d);
    std::fs::write(&end, b"x").unwrap();
    agent.collect_until(Duration::from_secs(30), |e| {
        guardrail_tests::is_marker(e, &end)
    });
    wait_until("the marker in the log", Duration::from_secs(30), || {
        log_records(&agent)
            .iter()
            .any(|e| guardrail_tests::is_marker(e, &end))
    });
    let config = agent.config.to_str().unwrap().to_string();
    let search = |args: &[&str]| {
        let mut all = vec!["--config", &config];
        all.extend_from_slice(args);
        guardrail_tests::log_search(&all)
    };
    let c_glob = c.to_str().unwrap();
    // The rename's destination is a path the event names.
    let (found, _) = search(&["--json", "--path", c_glob]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["file"]["op"], "rename");
    assert_eq!(found[0]["file"]["new_path"], c_glob);
    assert!(found[0]["chain"]["hash"].is_string(), "stored as written");
    // Everything under the directory, as the log holds it, and verified.
    let all = format!("{}/**", d.display());
    let (found, err) = search(&[
        "--json", "--since", "1h", "--verify", "--stats", "--path", &all,
    ]);
    let expected: Vec<Value> = log_records(&agent)
        .into_iter()
        .filter(|e| e["kind"] != "loss" && under(e, &d))
        .collect();
    assert!(expected.len() >= 5, "{expected:#?}");
    assert_eq!(found, expected);
    assert!(
        err.contains("records verified: the chain is intact"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} matched", expected.len())),
        "{err}"
    );
    // By kind: the chmod alone.
    let (found, _) = search(&["--json", "--kind", "perm.chmod", "--path", &all]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["perm"]["path"], a.to_str().unwrap());
    // The human form, one line per event.
    let (lines, _) = {
        let out = Command::new(bin("guardrail"))
            .args(["log", "search", "--config", &config, "--path", c_glob])
            .bounded_output()
            .unwrap();
        assert_success(&out);
        (String::from_utf8(out.stdout).unwrap(), ())
    };
    assert!(
        lines
            .lines()
            .any(|l| l.contains(" rename ") && l.ends_with(&format!("→ {c_glob}"))),
        "{lines}"
    );
    // The report counts the same records.
    let out = Command::new(bin("guardrail"))
        .args([
            "log", "report", "--config", &config, "--json", "--path", &all,
        ])
        .bounded_output()
        .unwrap();
    assert_success(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], expected.len());
    assert_eq!(report["by_kind"]["perm.chmod"], 1);
    assert_eq!(report["by_kind"]["file.rename"], 1);
    let prefix = d
        .to_str()
        .unwrap()
        .splitn(4, '/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");
    assert_eq!(
        report["by_path_prefix"][&prefix],
        expected.len(),
        "{report:#}"
    );
    agent.stop();
}

fn event(seq: u64, exe: &str, path: &str) -> String {
    serde_json::json!({
        "seq": seq, "time": format!("2026-11-27T10:00:0{seq}Z"), "ktime_ns": seq,
        "kind": "file", "syscall": "openat",
        "process": {"pid": 10, "tid": 10, "ppid": 1, "uid": 0, "gid": 0, "euid": 0,
                    "egid": 0, "auid": null, "comm": "x", "exe": exe,
                    "parent_exe": null, "cgroup_id": 1},
        "result": {"ok": true, "ret": 3, "errno": null},
        "file": {"op": "open", "path": path, "resolved": true, "flags": ["write"]}
    })
    .to_string()
}

#[test]
fn rules_test_against_gates_a_rule_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rule = |action: &str| {
        format!(
            "[[rule]]\nid = \"ssh-config\"\non = [\"file.write\"]\npath = [\"/etc/ssh/**\"]\naction = \"{action}\"\n"
        )
    };
    std::fs::write(d.join("current.toml"), rule("alert")).unwrap();
    std::fs::write(d.join("same.toml"), rule("alert")).unwrap();
    std::fs::write(d.join("candidate.toml"), rule("deny")).unwrap();
    std::fs::write(
        d.join("broken.toml"),
        "[[rule]]\nid = \"x\"\non = [\"file.wirte\"]\n",
    )
    .unwrap();
    let events = [
        event(1, "/usr/bin/vim", "/etc/ssh/sshd_config"),
        event(2, "/usr/bin/vim", "/etc/hosts"),
        event(3, "/usr/bin/sed", "/etc/ssh/ssh_config"),
    ];
    std::fs::write(d.join("events.jsonl"), events.join("\n") + "\n").unwrap();
    let test = |current: &str, candidate: &str, json: bool| {
        let mut c = Command::new(bin("guardrail"));
        c.current_dir(d)
            .args(["rules", "test", "--events", "events.jsonl", "--against"])
            .args([current, candidate]);
        if json {
            c.arg("--json");
        }
        c.bounded_output().unwrap()
    };
    let same = test("current.toml", "same.toml", false);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert!(String::from_utf8_lossy(&same.stdout).contains("no decision changes"));

    let changed = test("current.toml", "candidate.toml", false);
    assert_eq!(changed.status.code(), Some(1), "{changed:?}");
    let text = String::from_utf8(changed.stdout).unwrap();
    assert!(
        text.contains("ssh-config: alerted → denied   2 events"),
        "{text}"
    );
    assert!(
        text.contains("#1 2026-11-27T10:00:01Z open /usr/bin/vim /etc/ssh/sshd_config"),
        "{text}"
    );
    assert!(
        text.contains("#3 2026-11-27T10:00:03Z open /usr/bin/sed /etc/ssh/ssh_config"),
        "{text}"
    );
    assert!(!text.contains("/etc/hosts"), "{text}");

    let json = test("current.toml", "candidate.toml", true);
    assert_eq!(json.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["changed"], 2);
    let seqs: Vec<&Value> = v["changes"][0]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["seq"])
        .collect();
    assert_eq!(seqs, [1, 3]);

    // Errors are 2, never 1 ("changes").
    for (current, candidate) in [
        ("current.toml", "broken.toml"),
        ("missing.toml", "candidate.toml"),
    ] {
        let out = test(current, candidate, false);
        assert_eq!(out.status.code(), Some(2), "{candidate}: {out:?}");
    }
    let no_events = Command::new(bin("guardrail"))
        .current_dir(d)
        .args([
            "rules",
            "test",
            "--events",
            "nothing.jsonl",
            "--against",
            "current.toml",
            "candidate.toml",
        ])
        .bounded_output()
        .unwrap();
    assert_eq!(no_events.status.code(), Some(2), "{no_events:?}");
    assert!(String::from_utf8_lossy(&no_events.stderr).contains("nothing.jsonl"));
}

#[test]
fn log_search_answers_empty_ranges_unknown_rules_and_bad_lines_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let lines = [
        event(1, "/usr/bin/vim", "/etc/ssh/sshd_config"),
        "{\"seq\":2,\"time\":\"2026-11-27T10:00:02Z\",\"kind\":\"fi".to_string(),
        event(3, "/usr/bin/sed", "/etc/hosts"),
    ];
    // The last line is unfinished: the agent was killed while writing it.
    std::fs::write(&log, lines.join("\n") + "\n{\"seq\":4,\"ti").unwrap();
    let search = |args: &[&str]| {
        Command::new(bin("guardrail"))
            .args(["log", "search", "--file"])
            .arg(&log)
            .args(args)
            .bounded_output()
            .unwrap()
    };
    let name = log.display();
    let out = search(&["--json"]);
    assert_success(&out);
    let found: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 2);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{name}:2: not a guardrail record (")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:4: the last record is unfinished")),
        "{err}"
    );
    // An empty range: nothing, and success.
    let out = search(&["--since", "2026-11-28", "--until", "2026-11-29"]);
    assert_success(&out);
    assert!(out.stdout.is_empty(), "{out:?}");
    // A rule that decided nothing: nothing, said on stderr.
    let out = search(&["--rule", "no-such-rule"]);
    assert_success(&out);
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no event in the range was decided by rule \"no-such-rule\""));
    // Times and criteria that make no sense say what would.
    let out = search(&["--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RFC 3339"),
        "{out:?}"
    );
    let out = search(&["--kind", "file.wirte"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"file.write\""));
    // An unsealed log does not verify: the first record, by its line.
    let out = search(&["--verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("BROKEN at {name}:1: not a sealed record")),
        "{out:?}"
    );
}
