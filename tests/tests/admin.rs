//! Ordinary administration under the **shipped** configuration is quiet:
//! installing and purging a real Debian package that ships a systemd unit,
//! a cron file and configuration under /etc (anacron, from Debian's
//! archive through apt), managing users with the proper tools, editing a
//! crontab with crontab(1), rotating a log with logrotate — zero
//! decisions. The same file changes made from a shell are decided, and
//! their events carry the lineage.
//!
//! This test changes the host the way an administrator would (a package,
//! a user, a crontab) and undoes it; a package that was installed before
//! the test is reinstalled, never removed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{is_marker, marker, Agent, BoundedOutput};
use serde_json::Value;

const PACKAGE: &str = "anacron";
const USER: &str = "grtest-admin";

fn shipped_config(audit_log: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/guardrail.toml");
    let text = std::fs::read_to_string(path).unwrap();
    text.replace(
        "path = \"/var/log/guardrail/audit.jsonl\"",
        &format!("path = \"{}\"", audit_log.display()),
    )
}

/// Run an administrator's command; it must succeed.
fn admin(what: &str, args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .bounded_output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(what: &str, script: &str) {
    admin(what, &["sh", "-c", script]);
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .bounded_output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn decisions(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| !e["decision"].is_null()).collect()
}

/// Whether `e` was done by this test's process tree (other activity on
/// the host — a build in /tmp, a cron job — is not the test's business).
fn ours(e: &Value) -> bool {
    let me = std::process::id();
    e["process"]["ppid"] == me
        || e["process"]["ancestors"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["pid"] == me))
}

/// The events until the end marker of phase `phase` (a directory of its
/// own, so no event of an earlier marker can end it).
fn until_marker(agent: &Agent, dir: &Path, phase: &str) -> Vec<Value> {
    let phase_dir = dir.join(phase);
    std::fs::create_dir(&phase_dir).unwrap();
    let done = marker(&phase_dir);
    std::fs::write(&done, b"").unwrap();
    agent.collect_until(Duration::from_secs(120), |e| is_marker(e, &done))
}

#[test]
fn administration_is_quiet_and_the_same_changes_by_hand_are_decided() {
    for tool in ["crontab", "logrotate", "useradd"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .bounded_output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: `cargo xtask test` installs cron and logrotate"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start_with_config(&shipped_config(&d.join("audit.jsonl")), &[]);
    let _ = Command::new("userdel").args(["-r", USER]).bounded_output();

    // A package with a unit, a cron file and a conffile, in and out.
    let was_installed = installed(PACKAGE);
    if was_installed {
        admin(
            "reinstall",
            &["apt-get", "install", "-y", "-q", "--reinstall", PACKAGE],
        );
    } else {
        admin(
            "install",
            &[
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                PACKAGE,
            ],
        );
        assert!(Path::new("/etc/cron.d/anacron").exists());
        admin("purge", &["apt-get", "purge", "-y", "-q", PACKAGE]);
    }
    // Users and groups with their tools (adduser is a perl script).
    admin("useradd", &["useradd", "-m", USER]);
    admin("usermod", &["usermod", "-c", "guardrail test", USER]);
    sh(
        "chpasswd",
        &format!("echo '{USER}:not-a-real-password' | chpasswd"),
    );
    admin("groupadd", &["groupadd", "grtest-group"]);
    admin("gpasswd", &["gpasswd", "-a", USER, "grtest-group"]);
    admin("groupdel", &["groupdel", "grtest-group"]);
    // A crontab, edited with crontab(1).
    sh(
        "crontab",
        &format!("echo '17 3 * * * true' | crontab -u {USER} -"),
    );
    admin("crontab -r", &["crontab", "-u", USER, "-r"]);
    admin("userdel", &["userdel", "-r", USER]);
    // A log rotated by logrotate, with a postrotate script.
    let log = Path::new("/var/log/guardrail-admin-test.log");
    std::fs::write(log, b"a line\n").unwrap();
    let conf = d.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 2\n  create 0640 root root\n  postrotate\n    true\n  endscript\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    admin(
        "logrotate",
        &[
            "logrotate",
            "-f",
            "-s",
            d.join("state").to_str().unwrap(),
            conf.to_str().unwrap(),
        ],
    );

    let events = until_marker(&agent, &d, "administration");
    let noise: Vec<&Value> = decisions(&events).into_iter().filter(|e| ours(e)).collect();
    assert!(
        noise.is_empty(),
        "{} decisions on ordinary administration: {noise:#?}",
        noise.len()
    );
    // The agent saw the work (so the silence means something).
    let touched = |p: &str| {
        events
            .iter()
            .any(|e| e["file"]["path"] == p || e["file"]["new_path"] == p)
    };
    assert!(
        touched("/etc/shadow") || touched("/etc/shadow+") || touched("/etc/nshadow"),
        "no event on the shadow file"
    );
    if !was_installed {
        assert!(
            touched("/etc/cron.d/anacron"),
            "no event on the package's cron file"
        );
    }

    // The same kinds of change, by hand from a shell: decided.
    sh(
        "by hand",
        "echo '* * * * * root true' > /etc/cron.d/grtest-by-hand; \
         echo '[Service]' > /etc/systemd/system/grtest-by-hand.service; \
         rm -f /etc/cron.d/grtest-by-hand /etc/systemd/system/grtest-by-hand.service",
    );
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(log.with_extension("log.1"));
    let events = until_marker(&agent, &d, "by-hand");
    for (rule, path) in [
        ("cron-entries", "/etc/cron.d/grtest-by-hand"),
        (
            "systemd-units",
            "/etc/systemd/system/grtest-by-hand.service",
        ),
    ] {
        let e = events
            .iter()
            .find(|e| e["decision"]["rule"] == rule && e["file"]["path"] == path)
            .unwrap_or_else(|| {
                panic!(
                    "{rule} did not decide the write to {path}: {:#?}",
                    decisions(&events)
                )
            });
        let ancestors = e["process"]["ancestors"].as_array().unwrap();
        assert!(!ancestors.is_empty(), "{e:#}");
        assert!(e["process"]["id"].is_string(), "{e:#}");
    }
    agent.stop();
}
