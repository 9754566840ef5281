//! Rules on the live agent: real syscalls produce explained decisions; a
//! bad reload keeps the old rules in force; replay gives the same answer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use guardrail_tests::{bin, is_marker, marker, rules_test, setuid_decision, Agent, BoundedOutput};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn rules_for(dir: &Path, id: &str) -> String {
    format!(
        r#"
[[rule]]
id = "{id}"
description = "setuid bits under the test directory"
on = ["perm.chmod"]
path = ["{dir}/**"]
mode_set = ["setuid"]
severity = "high"
"#,
        dir = dir.display()
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_matching_syscall_is_explained_and_a_lookalike_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start_with_config(&rules_for(&d, "test-setuid"), &[]);
    let file = d.join("f");
    std::fs::write(&file, b"").unwrap();
    // Look-alike first: a chmod without setuid.
    chmod(&file, 0o755);
    let d1 = setuid_decision(&agent, &file);
    assert_eq!(d1["rule"], "test-setuid");
    assert_eq!(d1["action"], "alert");
    assert_eq!(d1["mode"], "enforce");
    assert_eq!(d1["outcome"], "alerted");
    assert_eq!(d1["severity"], "high");
    assert_eq!(d1["matched"]["on"], "perm.chmod");
    assert_eq!(d1["matched"]["path"], file.to_str().unwrap());
    assert_eq!(d1["matched"]["mode"], "4755");
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    assert!(
        events.iter().all(|e| e["decision"].is_null()),
        "only the setuid chmod decides: {events:#?}"
    );
    let list = agent.cli(&["rules", "list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], "test-setuid");
    assert_eq!(list[0]["hits"], 1);
    agent.stop();
}

#[test]
fn a_bad_reload_keeps_the_old_rules_and_a_good_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start_with_config(&rules_for(&d, "old-rule"), &[]);
    let file = d.join("f");
    std::fs::write(&file, b"").unwrap();
    assert_eq!(setuid_decision(&agent, &file)["rule"], "old-rule");

    // Invalid: a misspelt kind. SIGHUP must not drop the old rules.
    std::fs::write(
        &agent.config,
        "[[rule]]\nid = \"new\"\non = [\"perm.chmode\"]\n",
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    let reload = loop {
        let s = agent.status();
        if s["last_reload"]["ok"] == false {
            break s["last_reload"].clone();
        }
        assert!(Instant::now() < deadline, "no failed reload reported");
        std::thread::sleep(Duration::from_millis(100));
    };
    let error = reload["error"].as_str().unwrap();
    assert!(
        error.contains("guardrail.toml:3:6: unknown event kind \"perm.chmode\""),
        "{error}"
    );
    assert_eq!(
        setuid_decision(&agent, &file)["rule"],
        "old-rule",
        "old rules still in force"
    );

    // Valid again, no signal: the file change alone reloads it.
    std::fs::write(&agent.config, rules_for(&d, "new-rule")).unwrap();
    let deadline = Instant::now() + WAIT;
    while agent.status()["last_reload"]["ok"] != true {
        assert!(Instant::now() < deadline, "file change not picked up");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(setuid_decision(&agent, &file)["rule"], "new-rule");
    agent.stop();
}

#[test]
fn rules_check_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[rule]]\nid = \"a\"\non = [\"file.wirte\"]\n\n[[rule]]\nid = \"b\"\non = [\"exec\"]\nuid = [\"no-such-user-x\"]\n",
    )
    .unwrap();
    let out = Command::new(bin("guardrail"))
        .args(["rules", "check"])
        .arg(&file)
        .bounded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    assert!(
        stderr.contains(&format!(
            "{f}:3:6: unknown event kind \"file.wirte\" (hint: did you mean \"file.write\"?)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:8:7: uid: no user named \"no-such-user-x\"")),
        "{stderr}"
    );
    let ok = Command::new(bin("guardrail"))
        .args(["rules", "check"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/guardrail.toml"))
        .bounded_output()
        .unwrap();
    assert!(
        ok.status.success(),
        "the shipped config is valid: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Record real events, then replay them against a candidate rule: the
/// replay finds exactly the events the live agent decided on.
#[test]
fn replay_of_recorded_events_matches_the_live_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start_with_config(&rules_for(&d, "live"), &[]);
    let file = d.join("f");
    std::fs::write(&file, b"").unwrap();
    for _ in 0..3 {
        chmod(&file, 0o4755);
        chmod(&file, 0o644);
    }
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let recorded = agent.collect_until(WAIT, |e| is_marker(e, &done));
    let live = recorded
        .iter()
        .filter(|e| e["decision"]["rule"] == "live")
        .count();
    assert_eq!(live, 3);
    let log = d.join("events.jsonl");
    let text: String = recorded.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let candidate = d.join("candidate.toml");
    // The candidate would deny every chmod of the file (the live rule only
    // alerted on setuid ones): the three setuid chmods and the three
    // chmods back.
    std::fs::write(
        &candidate,
        format!(
            "[[rule]]\nid = \"candidate\"\non = [\"perm.chmod\"]\npath = [\"{}\"]\naction = \"deny\"\n",
            file.display()
        ),
    )
    .unwrap();
    let report = rules_test(&candidate, &log);
    assert_eq!(report["events"], recorded.len());
    assert_eq!(report["rules"][0]["rule"], "candidate");
    assert_eq!(report["rules"][0]["hits"], 6);
    assert_eq!(report["rules"][0]["outcomes"]["denied"], 6);
    assert_eq!(
        report["rules"][0]["examples"][0]["path"],
        file.to_str().unwrap()
    );
    agent.stop();
}
