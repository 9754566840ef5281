//! `guardrail doctor` and `guardrail-agent --check-config` on this host:
//! they must report what the kernel really accepts, not what files suggest.

use std::path::{Path, PathBuf};
use std::process::Command;

use guardrail_tests::{assert_success, bin, require_root, trusted_tempdir, Agent, BoundedOutput};
use serde_json::Value;

/// The shipped configuration, copied where only root can change it, as
/// the package installs it: the checkout may belong to another user, and
/// the agent and doctor refuse a configuration others could change.
fn default_config() -> (tempfile::TempDir, PathBuf) {
    let shipped = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/guardrail.toml"
    ));
    let dir = trusted_tempdir();
    let copy = dir.path().join("guardrail.toml");
    std::fs::copy(shipped, &copy).unwrap();
    (dir, copy)
}

fn doctor(extra: &[&str]) -> (std::process::Output, Value) {
    let (_dir, config) = default_config();
    let out = Command::new(bin("guardrail"))
        .args([
            "--socket",
            "/nonexistent/guardrail.sock",
            "doctor",
            "--json",
        ])
        .arg("--config")
        .arg(&config)
        .args(extra)
        .bounded_output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

/// The LSM state as the running agent sees it, for comparison.
fn agent_says_lsm() -> bool {
    let agent = Agent::start(&[]);
    let s = agent.status();
    agent.stop();
    s["capabilities"]["bpf_lsm"].as_bool().unwrap()
}

#[test]
fn doctor_loads_the_probes_and_agrees_with_the_agent() {
    require_root();
    let (out, report) = doctor(&[]);
    assert!(out.status.success(), "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    let probes = checks.iter().find(|c| c["what"] == "probes").unwrap();
    assert_eq!(probes["level"], "ok", "{probes}");
    assert!(probes["detail"]
        .as_str()
        .unwrap()
        .contains("tracepoints attached"));
    // A trial load is proof either way: never merely "listed".
    let state = report["bpf_lsm"]["state"].as_str().unwrap();
    assert!(matches!(state, "proven" | "refused"), "{state}");
    assert_eq!(state == "proven", agent_says_lsm());
    // Every shipped rule is explained; the deny rule says what happens here.
    let rules: Vec<&str> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rules.len(), shipped_rules(), "{rules:?}");
    let preload = rules
        .iter()
        .find(|r| r.starts_with("preload-hijack"))
        .unwrap();
    if state == "proven" {
        assert!(preload.contains("denies in the kernel"), "{preload}");
    } else {
        assert!(preload.contains("cannot deny on this host"), "{preload}");
    }
}

#[test]
fn doctor_without_loading_reports_the_lsm_list_only() {
    require_root();
    let (out, report) = doctor(&["--no-load"]);
    assert!(out.status.success(), "{report:#}");
    let state = report["bpf_lsm"]["state"].as_str().unwrap();
    assert!(matches!(state, "listed" | "absent"), "{state}");
    let checks = report["checks"].as_array().unwrap();
    assert!(!checks.iter().any(|c| c["what"] == "probes"));
    // Installed where only root can change it, the configuration passes.
    let trust = checks.iter().find(|c| c["what"] == "config files").unwrap();
    assert_eq!(trust["level"], "ok", "{trust}");
}

#[test]
fn doctor_rejects_an_invalid_config_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nid = \"x\"\non = [\"file.wrte\"]\n").unwrap();
    let out = Command::new(bin("guardrail"))
        .args([
            "--socket",
            "/nonexistent/guardrail.sock",
            "doctor",
            "--no-load",
        ])
        .arg("--config")
        .arg(&bad)
        .bounded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
}

#[test]
fn check_config_explains_each_rule() {
    let (_dir, config) = default_config();
    let out = Command::new(bin("guardrail-agent"))
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .bounded_output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "configuration is valid: {} rules",
            shipped_rules()
        )),
        "{text}"
    );
    assert!(
        text.contains("nginx-outside-maintenance  alerts; not during maintenance"),
        "{text}"
    );
}

/// How many rules the shipped configuration defines.
fn shipped_rules() -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/guardrail.toml");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.trim() == "[[rule]]")
        .count()
}
