//! Path integrity for alert and monitor rules: an alert rule on a file
//! that lists only writes also decides what would change what its path
//! resolves to — a bind mount over the file, a file system mounted over
//! its directory (relative mount point included), the same inside a
//! private mount namespace (`unshare -m`), unmounting them, and its
//! directory moved away and back. What leaves every path naming the same
//! object — a remount, a propagation change, a mount elsewhere — is an
//! event with no decision. `guardrail rules test` on the recorded events
//! decides the same events.
//!
//! The real `mount`, `umount`, `unshare` and `mv` of util-linux and
//! coreutils make the calls, as an operator (or an intruder) would.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{assert_success, is_marker, marker, rules_test, Agent, BoundedOutput};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn rule(d: &Path, mode: &str) -> String {
    format!(
        "[[rule]]\nid = \"guard\"\non = [\"file.write\"]\npath = [\"{}\"]\nmode = \"{mode}\"\n",
        d.join("prot/a.conf").display()
    )
}

/// Run `program args…` in `cwd`; it must succeed.
fn run(cwd: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .bounded_output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert_success(&out);
}

/// Unmounts whatever is left mounted under the test's tree, also when
/// the test fails.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for p in ["prot/a.conf", "prot", "other"] {
            let _ = Command::new("umount")
                .arg(self.0.join(p))
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A file event of operation `op` naming `path`.
fn names<'e>(events: &'e [Value], op: &str, path: &Path) -> Vec<&'e Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "file" && e["file"]["op"] == op)
        .filter(|e| e["file"]["path"] == path.to_str().unwrap())
        .collect()
}

fn check(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    for sub in ["prot", "sub", "evil", "other"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("prot/a.conf"), b"original\n").unwrap();
    std::fs::write(d.join("evil/a.conf"), b"evil\n").unwrap();
    let _cleanup = Cleanup(&d);
    let s = |p: &str| d.join(p).to_str().unwrap().to_string();

    let agent = Agent::start_with_config(&rule(&d, mode), &[]);
    // A bind mount over the watched file, remounted read-only (no new
    // meaning), then unmounted.
    run(
        &d,
        "mount",
        &["--bind", &s("evil/a.conf"), &s("prot/a.conf")],
    );
    run(&d, "mount", &["-o", "remount,bind,ro", &s("prot/a.conf")]);
    run(&d, "umount", &[&s("prot/a.conf")]);
    // A file system over its directory, by a relative mount point
    // (mount(8) makes it absolute before the call).
    run(&d.join("sub"), "mount", &["-t", "tmpfs", "none", "../prot"]);
    run(&d.join("sub"), "umount", &["../prot"]);
    // The same bind mount in a private mount namespace (unshare also
    // makes every mount there private: a propagation change).
    run(
        &d,
        "unshare",
        &[
            "-m",
            "mount",
            "--bind",
            &s("evil/a.conf"),
            &s("prot/a.conf"),
        ],
    );
    // The directory moved away and back.
    run(&d, "mv", &[&s("prot"), &s("moved")]);
    run(&d, "mv", &[&s("moved"), &s("prot")]);
    // A mount elsewhere.
    run(&d, "mount", &["-t", "tmpfs", "none", &s("other")]);
    run(&d, "umount", &[&s("other")]);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    agent.stop();
    assert_eq!(
        std::fs::read(d.join("prot/a.conf")).unwrap(),
        b"original\n",
        "the tree is back as it was"
    );

    let decided = |e: &Value| e["decision"]["rule"] == "guard" && e["decision"]["mode"] == mode;
    let mut failures = Vec::new();
    let expect = |what: &str, found: Vec<&Value>, count: usize, check: &dyn Fn(&Value) -> bool| {
        let good = found.iter().filter(|e| decided(e) && check(e)).count();
        (good != count)
            .then(|| format!("{what}: {good} decided of {count} expected; seen {found:?}"))
    };
    let mount = |e: &Value| e["file"]["mount"].clone();
    failures.extend(expect(
        "bind over the file (host, then private namespace)",
        names(&events, "mount", &d.join("prot/a.conf"))
            .into_iter()
            .filter(|e| !mount(e)["flags"].to_string().contains("remount"))
            .collect(),
        2,
        &|e| {
            mount(e)["source"] == s("evil/a.conf")
                && mount(e)["flags"].to_string().contains("bind")
                && e["file"]["path_source"] != Value::Null
                && e["decision"]["matched"]["path_integrity"]
                    .as_str()
                    .is_some_and(|t| t.contains("a.conf"))
        },
    ));
    let private: Vec<_> = names(&events, "mount", &d.join("prot/a.conf"))
        .into_iter()
        .filter(|e| mount(e)["namespace"] == "private")
        .collect();
    if private.len() != 1 {
        failures.push(format!(
            "one bind mount in a private namespace expected: {private:?}"
        ));
    }
    failures.extend(expect(
        "tmpfs over the directory",
        names(&events, "mount", &d.join("prot")),
        1,
        &|e| mount(e)["fstype"] == "tmpfs" && e["file"]["path_source"] != Value::Null,
    ));
    failures.extend(expect(
        "unmounted from the file",
        names(&events, "umount", &d.join("prot/a.conf")),
        1,
        &|_| true,
    ));
    failures.extend(expect(
        "unmounted from the directory",
        names(&events, "umount", &d.join("prot")),
        1,
        &|_| true,
    ));
    failures.extend(expect(
        "the directory moved away",
        names(&events, "rename", &d.join("prot")),
        1,
        &|e| e["file"]["new_path"] == s("moved"),
    ));
    failures.extend(expect(
        "the directory moved back",
        names(&events, "rename", &d.join("moved")),
        1,
        &|e| e["file"]["new_path"] == s("prot"),
    ));
    // Seen, and decided by nothing.
    for (what, found) in [
        (
            "the remount",
            names(&events, "mount", &d.join("prot/a.conf"))
                .into_iter()
                .filter(|e| mount(e)["flags"].to_string().contains("remount"))
                .collect::<Vec<_>>(),
        ),
        (
            "a mount elsewhere",
            names(&events, "mount", &d.join("other")),
        ),
        (
            "an unmount elsewhere",
            names(&events, "umount", &d.join("other")),
        ),
    ] {
        if found.len() != 1 || found.iter().any(|e| e["decision"] != Value::Null) {
            failures.push(format!(
                "{what}: one undecided event expected, seen {found:?}"
            ));
        }
    }
    let propagation = events.iter().any(|e| {
        e["file"]["op"] == "mount"
            && mount(e)["namespace"] == "private"
            && mount(e)["flags"].to_string().contains("\"private\"")
            && e["decision"] == Value::Null
    });
    if !propagation {
        failures.push("unshare's propagation change: no undecided event".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The replay decides the same events.
    let live = events.iter().filter(|e| decided(e)).count();
    assert_eq!(live, 7, "decided live");
    let log = d.join("recorded.jsonl");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let candidate = d.join("candidate.toml");
    std::fs::write(&candidate, rule(&d, mode)).unwrap();
    let report = rules_test(&candidate, &log);
    assert_eq!(report["rules"][0]["hits"], live, "{report:#}");
}

#[test]
fn an_alert_rule_decides_what_changes_what_its_path_means() {
    check("enforce");
}

#[test]
fn a_monitor_rule_decides_what_changes_what_its_path_means() {
    check("monitor");
}
