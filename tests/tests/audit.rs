//! The audit log: chained, verifiable, rotated without breaking the chain,
//! and surviving a full disk without crashing or losing records.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use guardrail_tests::{assert_success, log_verify, Agent};

fn churn(dir: &Path, n: usize) {
    for i in 0..n {
        std::fs::write(dir.join(format!("f{}", i % 7)), b"x").unwrap();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_log_verifies_and_an_edit_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let log = d.join("audit.jsonl");
    let agent =
        Agent::start_with_config(&format!("[audit_log]\npath = \"{}\"\n", log.display()), &[]);
    churn(&d, 20);
    wait_for("records in the log", || {
        agent.status()["audit_log"]["written"].as_u64().unwrap_or(0) >= 20
    });
    agent.stop();
    let out = log_verify(&[&log]);
    assert_success(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(String::from_utf8_lossy(&out.stdout)
        .starts_with(&format!("{} records verified", lines.len())));
    // Edit one record's path: verification names that line.
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let victim = edited.iter().position(|l| l.contains("\"file\"")).unwrap();
    edited[victim] = edited[victim].replacen("\"path\":\"/", "\"path\":\"/x", 1);
    std::fs::write(&log, edited.join("\n") + "\n").unwrap();
    let out = log_verify(&[&log]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "audit.jsonl:{}: its content does not match",
            victim + 1
        )),
        "{err}"
    );
    // Delete a record instead.
    let mut deleted: Vec<&str> = lines.clone();
    deleted.remove(2);
    std::fs::write(&log, deleted.join("\n") + "\n").unwrap();
    let err = String::from_utf8_lossy(&log_verify(&[&log]).stderr).to_string();
    assert!(err.contains("audit.jsonl:3: does not follow"), "{err}");
}

#[test]
fn rotation_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let log = d.join("audit.jsonl");
    let config = format!(
        "[audit_log]\npath = \"{}\"\nmax_bytes = 4096\nmax_files = 50\n",
        log.display()
    );
    let agent = Agent::start_with_config(&config, &[]);
    churn(&d, 60);
    wait_for("rotation", || d.join("audit.jsonl.3").exists());
    agent.stop();
    let mut files: Vec<PathBuf> = (1..=50)
        .rev()
        .map(|i| d.join(format!("audit.jsonl.{i}")))
        .filter(|p| p.exists())
        .collect();
    files.push(log.clone());
    let out = log_verify(&files);
    assert_success(&out);
    // Dropping a middle file is detected.
    let mut gap = files.clone();
    gap.remove(1);
    assert_eq!(log_verify(&gap).status.code(), Some(1));
}

/// A tmpfs that fills up: the agent keeps running, reports the failed
/// writes and the buffered records, and writes them all once space is
/// back — the chain intact, no record missing.
#[test]
fn a_full_disk_is_survived_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let fs = d.join("logfs");
    std::fs::create_dir(&fs).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&fs)
        .status()
        .unwrap();
    assert!(mount.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(fs.clone());
    let log = fs.join("audit.jsonl");
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    // One process makes the events, and the agent watches only it: other
    // tests running meanwhile must not fill this small disk.
    let mut writer = Command::new("/bin/sh")
        .args(["-c", "while read n; do echo x > f$n; done"])
        .current_dir(&work)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = writer.id().to_string();
    let agent = Agent::start_with_config(
        &format!("[audit_log]\npath = \"{}\"\n", log.display()),
        &["--only-pid", &pid],
    );
    let mut input = writer.stdin.take().unwrap();
    let mut made = 0;
    let mut churn = |n: usize| {
        use std::io::Write;
        for _ in 0..n {
            writeln!(input, "{}", made % 7).unwrap();
            made += 1;
        }
        input.flush().unwrap();
    };
    // Fill the disk.
    let ballast = fs.join("ballast");
    let _ = std::fs::write(&ballast, vec![0u8; 256 << 10]);
    wait_for("a failed write", || {
        churn(50);
        agent.status()["audit_log"]["failed_writes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    drop(input);
    writer.wait().unwrap();
    let s = agent.status();
    assert!(
        s["audit_log"]["buffered_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(
        s["audit_log"]["last_error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{s}"
    );
    // Space again: everything buffered gets written.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = agent.status()["audit_log"].clone();
        if last["buffered_bytes"] == 0 && last["last_error"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the buffer did not drain: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.status()["audit_log"]["lost"], 0);
    agent.stop();
    let out = log_verify(&[&log]);
    assert_success(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    let writes = text
        .lines()
        .filter(|l| l.contains(work.to_str().unwrap()) && l.contains("\"op\":\"open\""))
        .count();
    assert_eq!(
        writes, made,
        "every write of the watched process is in the log"
    );
    assert!(!text.contains("log_gap"));
}

/// By default (`[audit_log] process` unset, no stream of the log's lines)
/// the log writes a thread's process whole once, then names it by
/// reference, and is about half the size; every reader still sees each
/// event as the agent printed it, whole, and the chain verifies.
#[test]
fn a_log_naming_processes_by_reference_reads_back_as_the_events_were() {
    use guardrail_tests::{is_marker, log_search, marker, rules_test};
    use serde_json::Value;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let log = d.join("log").join("audit.jsonl");
    let rules = d.join("rules.toml");
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    let inside = format!("{}/", work.display());
    // The other tests of this binary write too: only this one's writes.
    let rule = format!(
        "[[rule]]\nid = \"mine\"\non = [\"file.write\"]\nexe = [\"{}\"]\npath = [\"{inside}**\"]\naction = \"alert\"\n",
        me.display()
    );
    std::fs::write(&rules, &rule).unwrap();
    let agent = Agent::start_with_config(
        &format!("[audit_log]\npath = \"{}\"\n{rule}", log.display()),
        &[],
    );
    churn(&work, 100);
    let end = marker(&work);
    std::fs::write(&end, b"x").unwrap();
    let printed: Vec<Value> = agent
        .collect_until(Duration::from_secs(60), |e| is_marker(e, &end))
        .into_iter()
        .filter(|e| {
            [&e["file"]["path"], &e["perm"]["path"]]
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.starts_with(&inside)))
        })
        .collect();
    wait_for("the marker in the log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(end.to_str().unwrap()))
    });
    // The status says which form the log is in.
    assert_eq!(agent.status()["audit_log"]["process"], "ref");
    agent.stop();
    let verified = log_verify(&[&log]);
    assert_success(&verified);
    // Every reference is defined before it in the file.
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(!said.contains("note:"), "{said}");
    // Printed whole: the program on every event.
    assert!(printed.len() > 100, "{} events", printed.len());
    assert!(printed
        .iter()
        .all(|e| e["process"]["exe"] == me.to_str().unwrap()));
    // Stored by reference, mostly.
    let text = std::fs::read_to_string(&log).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&inside)).collect();
    let references = ours
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["process"].get("pv").is_some() && v["process"].get("exe").is_none()
        })
        .count();
    assert!(
        references * 10 > ours.len() * 9,
        "{references} of {} lines name their process by reference",
        ours.len()
    );
    // `log search --json` gives each event back as printed.
    let pattern = format!("{inside}*");
    let log_arg = log.to_str().unwrap();
    let (mut found, _) = log_search(&["--json", "--path", &pattern, "--file", log_arg]);
    for v in &mut found {
        v.as_object_mut().unwrap().remove("chain");
    }
    assert_eq!(found, printed);
    // A reference whose definition is cut away is named at its line.
    let lines: Vec<&str> = text.lines().collect();
    let first_definition = lines
        .iter()
        .position(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            if !l.contains(&inside) {
                return false;
            }
            v["process"].get("pv").is_some() && v["process"].get("exe").is_some()
        })
        .unwrap();
    let cut = d.join("cut.jsonl");
    std::fs::write(&cut, lines[first_definition + 1..].join("\n") + "\n").unwrap();
    let said = String::from_utf8_lossy(&log_verify(&[&cut]).stdout).to_string();
    assert!(
        said.contains("note: ") && said.contains("cut.jsonl:"),
        "{said}"
    );
    // A replay judges the program on every event.
    let report = rules_test(&rules, &log);
    assert_eq!(report["unjoined"], 0);
    let writes = printed
        .iter()
        .filter(|e| e["file"]["flags"].to_string().contains("write"))
        .count();
    assert_eq!(report["rules"][0]["hits"], writes as u64, "{report}");
}
