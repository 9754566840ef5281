//! Secret redaction end to end: a real exec with secrets on its command
//! line; rules see the real values, while the printed events and the audit
//! log carry only markers and name the redacted fields.

use std::process::Command;
use std::time::Duration;

use guardrail_tests::Agent;

#[test]
fn secrets_on_a_command_line_reach_neither_the_log_nor_the_printed_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // The rule matches the real value: rules are evaluated before redaction.
    let config = format!(
        r#"
[audit_log]
path = "{}"

[[rule]]
id = "password-on-command-line"
on = ["exec"]
argv_matches = ['--password=S3cr3t\S+']
"#,
        log.display()
    );
    let agent = Agent::start_with_config(&config, &[]);
    let mut child = Command::new("/bin/sh")
        .args([
            "-c",
            "true",
            "sh",
            "--password=S3cr3tValue123",
            "--token",
            "S3cr3tToken456",
            "https://u:S3cr3tUrl789@example.com/",
        ])
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let events = agent.collect_until(Duration::from_secs(30), |e| {
        e["kind"] == "exec" && e["process"]["pid"] == pid && e["exec"]["raw_path"] == "/bin/sh"
    });
    let exec = events.last().unwrap();
    assert_eq!(
        exec["exec"]["argv"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "true",
            "sh",
            "--password=[REDACTED:secret-assignment]",
            "--token",
            "[REDACTED:secret-option]",
            "https://u:[REDACTED:url-credentials]@example.com/"
        ]),
        "{exec}"
    );
    assert_eq!(
        exec["redacted"],
        serde_json::json!([
            "exec.argv[4]",
            "exec.argv[6]",
            "exec.argv[7]",
            "decision.matched.argv_matches"
        ]),
        "{exec}"
    );
    assert_eq!(exec["decision"]["rule"], "password-on-command-line");
    for e in &events {
        assert!(!e.to_string().contains("S3cr3t"), "printed: {e}");
    }
    let status = agent.status();
    assert_eq!(status["redaction_enabled"], true, "{status}");
    assert!(status["redacted_events"].as_u64().unwrap() >= 1, "{status}");
    agent.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(r#""exec.argv[4]","exec.argv[6]","exec.argv[7]""#),
        "the exec is in the log"
    );
    assert!(
        !text.contains("S3cr3t"),
        "a secret reached the audit log:\n{}",
        text.lines().find(|l| l.contains("S3cr3t")).unwrap()
    );
}
