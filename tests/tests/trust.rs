//! The agent trusts only what only root can change (docs/security.md): a
//! configuration, an included rules file, or a directory on their paths
//! that others could write is refused at start, and at reload the rules
//! in force stay.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use guardrail_tests::{
    assert_success, bin, setuid_decision, trusted_tempdir, wait_until, Agent, BoundedOutput,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Start the agent on `config` for real; it must exit non-zero (within a
/// minute: an agent that accepted the file would run on). Its stderr.
fn refused_at_start(config: &Path) -> String {
    let dir = config.parent().unwrap();
    let mut child = Command::new(bin("guardrail-agent"))
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(dir.join("guardrail.sock"))
        .args(["--print", "none", "--ephemeral"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent started with {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        !dir.join("guardrail.sock").exists(),
        "a refused agent must not serve"
    );
    stderr
}

fn check_config(config: &Path) -> Output {
    Command::new(bin("guardrail-agent"))
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .bounded_output()
        .unwrap()
}

fn rules_check(config: &Path) -> Output {
    Command::new(bin("guardrail"))
        .args(["--socket", "/nonexistent/guardrail.sock", "rules", "check"])
        .arg(config)
        .bounded_output()
        .unwrap()
}

const RULE: &str = "[[rule]]\nid = \"watch-exec\"\non = [\"exec\"]\n";

#[test]
fn a_world_writable_configuration_is_refused_by_agent_check_config_and_doctor() {
    let dir = trusted_tempdir();
    let config = dir.path().join("guardrail.toml");
    std::fs::write(&config, RULE).unwrap();
    chmod(&config, 0o666);
    let c = config.display();
    let want = format!(
        "{c} is writable by others (owner root, mode 0666): anyone could change the configuration and rules the agent enforces; fix: chmod o-w {c}"
    );
    let stderr = refused_at_start(&config);
    assert!(stderr.contains(&want), "{stderr}");

    let out = check_config(&config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&want), "{stderr}");

    // Not the agent's configuration: a warning, and the file is valid.
    let out = rules_check(&config);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("warning: {want}")), "{stderr}");

    let out = Command::new(bin("guardrail"))
        .args([
            "--socket",
            "/nonexistent/guardrail.sock",
            "doctor",
            "--no-load",
            "--json",
        ])
        .arg("--config")
        .arg(&config)
        .bounded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["what"] == "config files")
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["level"], "fail");
    assert_eq!(failed[0]["detail"], want.as_str());

    // Fixed as the message says: accepted.
    chmod(&config, 0o644);
    assert_success(&check_config(&config));
}

#[test]
fn a_group_writable_include_is_refused_unless_the_group_administers() {
    let dir = trusted_tempdir();
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).unwrap();
    chmod(&rules_d, 0o755);
    let include = rules_d.join("x.toml");
    std::fs::write(&include, RULE).unwrap();
    // nogroup (65534) exists on Debian and in the test VM.
    std::os::unix::fs::chown(&include, Some(0), Some(65534)).unwrap();
    chmod(&include, 0o664);
    let config = dir.path().join("guardrail.toml");
    std::fs::write(&config, "include = [\"rules.d/*.toml\"]\n").unwrap();
    let i = include.display();
    let stderr = refused_at_start(&config);
    assert!(
        stderr.contains(&format!(
            "{i} is writable by group nogroup (owner root, mode 0664): its members could change the rules the agent enforces; fix: chmod g-w {i}"
        )),
        "{stderr}"
    );
    // The admin group may write rules files (not the configuration).
    std::fs::write(
        &config,
        "include = [\"rules.d/*.toml\"]\n\n[agent]\nadmin_group = \"nogroup\"\n",
    )
    .unwrap();
    assert_success(&check_config(&config));
}

#[test]
fn an_include_in_a_world_writable_directory_is_refused() {
    let dir = trusted_tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let include = open.join("x.toml");
    std::fs::write(&include, RULE).unwrap();
    chmod(&include, 0o644);
    chmod(&open, 0o777);
    let config = dir.path().join("guardrail.toml");
    std::fs::write(&config, format!("include = [\"{}\"]\n", include.display())).unwrap();
    let o = open.display();
    let stderr = refused_at_start(&config);
    assert!(
        stderr.contains(&format!(
            "{o} is writable by others (owner root, mode 0777): anyone could change the rules the agent enforces; fix: chmod o-w {o}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_symlinked_include_pointing_into_tmp_is_refused() {
    let dir = trusted_tempdir();
    // Root's own directory in /tmp, but /tmp is anyone's.
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("x.toml");
    std::fs::write(&target, RULE).unwrap();
    chmod(&target, 0o644);
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).unwrap();
    let link = rules_d.join("x.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let config = dir.path().join("guardrail.toml");
    std::fs::write(&config, "include = [\"rules.d/*.toml\"]\n").unwrap();
    // The link itself is fine (root's, in a root-only directory): only its
    // target's path is refused.
    let stderr = refused_at_start(&config);
    let tmp_mode = std::fs::metadata(std::env::temp_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        tmp_mode & 0o1002,
        0o1002,
        "/tmp is sticky and world-writable"
    );
    assert!(
        stderr.contains(&format!(
            "{} is writable by others (owner root, mode {:04o})",
            std::env::temp_dir().display(),
            tmp_mode & 0o7777
        )) && stderr.contains(&format!(
            "fix: move {} into a directory only root can write",
            link.display()
        )),
        "{stderr}"
    );
    // The same target moved under root's own directory: accepted.
    let safe = dir.path().join("x.toml");
    std::fs::copy(&target, &safe).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&safe, &link).unwrap();
    assert_success(&check_config(&config));
}

/// The configuration is the only place credentials live (webhook headers):
/// there are no separate credential files. Readable by others, it is
/// warned about.
#[test]
fn webhook_headers_in_a_configuration_others_can_read_are_warned_about() {
    let dir = trusted_tempdir();
    let config = dir.path().join("guardrail.toml");
    std::fs::write(
        &config,
        "[[output]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nheaders = { Authorization = \"Bearer x\" }\n",
    )
    .unwrap();
    chmod(&config, 0o644);
    let out = check_config(&config);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} holds webhook headers and is readable by others (mode 0644)",
            config.display()
        )),
        "{stderr}"
    );
    chmod(&config, 0o600);
    let out = check_config(&config);
    assert_success(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("webhook headers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rules_for(dir: &Path, id: &str) -> String {
    format!(
        "[agent]\n# The test itself changes the configuration while the agent runs.\nself_protection = false\n\n[[rule]]\nid = \"{id}\"\non = [\"perm.chmod\"]\npath = [\"{}/**\"]\nmode_set = [\"setuid\"]\n",
        dir.display()
    )
}

fn last_reload(agent: &Agent) -> Value {
    agent.status()["last_reload"].clone()
}

#[test]
fn a_configuration_made_world_writable_is_not_reloaded_and_the_old_rules_stay() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path().canonicalize().unwrap();
    let agent = Agent::start_with_config(&rules_for(&d, "old-rule"), &[]);
    let file = d.join("f");
    std::fs::write(&file, b"").unwrap();
    assert_eq!(setuid_decision(&agent, &file)["rule"], "old-rule");

    // Made writable by anyone: the mode change alone (no new content, no
    // signal) is noticed, and the file refused.
    chmod(&agent.config, 0o666);
    wait_until("a refused reload in status", WAIT, || {
        last_reload(&agent)["ok"] == false
    });
    let refused = last_reload(&agent);
    let error = refused["error"].as_str().unwrap();
    let c = agent.config.display();
    assert!(
        error.contains(&format!(
            "{c} is writable by others (owner root, mode 0666): anyone could change the configuration and rules the agent enforces; fix: chmod o-w {c}"
        )),
        "{error}"
    );
    // The running agent's configuration: for `rules check` an error.
    let out = agent.cli(&["rules", "check", agent.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{c} is writable by others (owner root, mode 0666)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("warning:"), "{stderr}");
    let out = agent.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("last reload       FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Rewritten "by anyone" without rules, and SIGHUP: refused again (a
    // later attempt, told by its time), the old rules in force.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&agent.config, "").unwrap();
    agent.signal(libc::SIGHUP);
    wait_until("a second refused reload", WAIT, || {
        let r = last_reload(&agent);
        r["ok"] == false && r["time"] != refused["time"]
    });
    assert_eq!(
        setuid_decision(&agent, &file)["rule"],
        "old-rule",
        "the old rules are still in force"
    );

    // Fixed: the new rules take over without a signal.
    std::fs::write(&agent.config, rules_for(&d, "new-rule")).unwrap();
    chmod(&agent.config, 0o644);
    wait_until("the fixed configuration reloaded", WAIT, || {
        last_reload(&agent)["ok"] == true
    });
    assert_eq!(setuid_decision(&agent, &file)["rule"], "new-rule");
    agent.stop();
}
