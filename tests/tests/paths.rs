//! Canonical paths: however a program spells a path (`..`, `.`, `//`, a
//! symlinked directory, a relative path), the event names the file by its
//! canonical path, keeps the spelling in `raw_path`, and a rule on the
//! canonical path decides it — live, in monitor mode, and on replay.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{is_marker, marker, rules_test, Agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// One evasion attempt: a shell command run in `cwd`, and the operation it
/// must be reported as.
struct Spelling {
    name: &'static str,
    cwd: &'static str,
    script: String,
    /// `file` or `perm`, and the operation.
    section: &'static str,
    op: &'static str,
    /// The canonical path the event must name (for a rename, its
    /// destination, in `new_path`).
    target: &'static str,
    field: &'static str,
}

/// /d/prot holds the protected files; /d/sub is a sibling to climb out
/// of; /d/elsewhere/link points at /d/prot.
fn layout(d: &Path) {
    std::fs::create_dir_all(d.join("prot")).unwrap();
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::create_dir_all(d.join("elsewhere")).unwrap();
    symlink(d.join("prot"), d.join("elsewhere/link")).unwrap();
    for f in [
        "a.conf", "b.conf", "c.conf", "d.conf", "e.conf", "f.conf", "g.conf",
    ] {
        std::fs::write(d.join("prot").join(f), b"original\n").unwrap();
    }
    std::fs::write(d.join("h.tmp"), b"new\n").unwrap();
}

fn spellings() -> Vec<Spelling> {
    let s = |name, cwd, script: &str, section, op, target, field| Spelling {
        name,
        cwd,
        script: script.to_string(),
        section,
        op,
        target,
        field,
    };
    vec![
        s(
            "dot-dot",
            "sub",
            "echo x >> ../prot/a.conf",
            "file",
            "open",
            "prot/a.conf",
            "path",
        ),
        s(
            "dot",
            ".",
            "echo x >> ./prot/./b.conf",
            "file",
            "open",
            "prot/b.conf",
            "path",
        ),
        s(
            "double-slash",
            ".",
            "echo x >> \"$D\"//prot//c.conf",
            "file",
            "open",
            "prot/c.conf",
            "path",
        ),
        s(
            "symlinked-dir",
            ".",
            "echo x >> elsewhere/link/d.conf",
            "file",
            "open",
            "prot/d.conf",
            "path",
        ),
        s(
            "chmod-dot-dot",
            "sub",
            "chmod 600 ../prot/e.conf",
            "perm",
            "chmod",
            "prot/e.conf",
            "path",
        ),
        s(
            "chown-symlinked-dir",
            ".",
            "chown 0:0 \"$D\"/elsewhere/link/f.conf",
            "perm",
            "chown",
            "prot/f.conf",
            "path",
        ),
        s(
            "unlink-symlinked-dir",
            "sub",
            "rm ../elsewhere/link/g.conf",
            "file",
            "unlink",
            "prot/g.conf",
            "path",
        ),
        s(
            "rename-into-symlinked-dir",
            ".",
            "mv h.tmp elsewhere/link/h.conf",
            "file",
            "rename",
            "prot/h.conf",
            "new_path",
        ),
    ]
}

fn rules(d: &Path, mode: &str) -> String {
    let targets: Vec<String> = spellings()
        .iter()
        .map(|s| format!("\"{}\"", d.join(s.target).display()))
        .collect();
    format!(
        "[[rule]]\nid = \"guard\"\non = [\"file.write\", \"file.unlink\", \"file.rename\", \"perm.chmod\", \"perm.chown\"]\npath = [{}]\nmode = \"{mode}\"\n",
        targets.join(", ")
    )
}

/// Run every spelling against a fresh tree under an agent with the rule
/// in `mode`; return the tree and the events up to the end marker.
fn run(mode: &str) -> (tempfile::TempDir, PathBuf, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    layout(&d);
    let agent = Agent::start_with_config(&rules(&d, mode), &[]);
    for s in spellings() {
        let status = Command::new("sh")
            .args(["-c", &s.script])
            .current_dir(d.join(s.cwd))
            .env("D", &d)
            .status()
            .unwrap();
        assert!(status.success(), "{}: {}", s.name, s.script);
    }
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    agent.stop();
    (dir, d, events)
}

/// The event of spelling `s`: its operation on its canonical target.
fn event_of<'a>(events: &'a [Value], d: &Path, s: &Spelling) -> &'a Value {
    let target = d.join(s.target);
    events
        .iter()
        .find(|e| {
            e["kind"] == s.section
                && e[s.section]["op"] == s.op
                && e[s.section][s.field] == target.to_str().unwrap()
                && e["result"]["ok"] == true
        })
        .unwrap_or_else(|| {
            let near: Vec<&Value> = events
                .iter()
                .filter(|e| e["kind"] == s.section && e[s.section]["op"] == s.op)
                .collect();
            panic!(
                "{}: no {} {} event naming {} as {}; events of that op: {near:#?}",
                s.name,
                s.section,
                s.op,
                target.display(),
                s.field
            )
        })
}

#[test]
fn every_spelling_is_decided_by_the_rule_on_the_canonical_path() {
    let (_dir, d, events) = run("enforce");
    for s in spellings() {
        let e = event_of(&events, &d, &s);
        assert_eq!(e["decision"]["rule"], "guard", "{}: {e:#}", s.name);
        assert_eq!(e["decision"]["outcome"], "alerted", "{}: {e:#}", s.name);
        if s.field == "path" {
            let raw = e[s.section]["raw_path"].as_str();
            assert!(
                raw.is_some_and(|r| r != e[s.section]["path"]),
                "{}: the spelling is kept in raw_path: {e:#}",
                s.name
            );
        }
        let source = &e[s.section][format!("{}_source", s.field)];
        assert!(
            source == "kernel" || source == "agent",
            "{}: path_source says how the path was made canonical: {e:#}",
            s.name
        );
    }
    // Opens are answered by the kernel itself.
    let open = event_of(&events, &d, &spellings()[0]);
    assert_eq!(open["file"]["path_source"], "kernel", "{open:#}");

    // Replay of the recorded events decides the same events.
    let log = d.join("recorded.jsonl");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let candidate = d.join("candidate.toml");
    std::fs::write(&candidate, rules(&d, "enforce")).unwrap();
    let report = rules_test(&candidate, &log);
    let live = events
        .iter()
        .filter(|e| e["decision"]["rule"] == "guard")
        .count();
    assert!(live >= spellings().len(), "{live} decisions");
    assert_eq!(report["rules"][0]["hits"], live, "{report:#}");
}

#[test]
fn monitor_mode_sees_every_spelling_too() {
    let (_dir, d, events) = run("monitor");
    for s in spellings() {
        let e = event_of(&events, &d, &s);
        assert_eq!(e["decision"]["rule"], "guard", "{}: {e:#}", s.name);
        assert_eq!(e["decision"]["mode"], "monitor", "{}: {e:#}", s.name);
    }
}

/// Run `script` in `d` under `agent`; every event up to the marker after it.
fn run_script(agent: Agent, d: &Path, script: &str) -> Vec<Value> {
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(d)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    let done = marker(d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    agent.stop();
    events
}

/// The same file under another name — a hard link, a bind mount of its
/// directory — is the same object: the event names it as reached and
/// carries the watched name as an alias, and the rule decides it.
#[test]
fn another_name_for_a_watched_file_is_decided_as_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    layout(&d);
    std::fs::write(d.join("prot/i.conf"), b"original\n").unwrap();
    std::fs::write(d.join("prot/j.conf"), b"original\n").unwrap();
    std::fs::create_dir(d.join("bind")).unwrap();
    std::fs::hard_link(d.join("prot/i.conf"), d.join("elsewhere/hard-i")).unwrap();
    let targets = format!(
        "\"{}\", \"{}\"",
        d.join("prot/i.conf").display(),
        d.join("prot/j.conf").display()
    );
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"guard\"\non = [\"file.write\", \"perm.chmod\"]\npath = [{targets}]\n"
        ),
        &[],
    );
    let script = "echo x >> elsewhere/hard-i; chmod 600 elsewhere/hard-i; \
                  mount --bind prot bind && echo x >> bind/j.conf; umount bind";
    let events = run_script(agent, &d, script);
    for (section, op, reached, watched) in [
        ("file", "open", "elsewhere/hard-i", "prot/i.conf"),
        ("perm", "chmod", "elsewhere/hard-i", "prot/i.conf"),
        ("file", "open", "bind/j.conf", "prot/j.conf"),
    ] {
        let reached = d.join(reached);
        let e = events
            .iter()
            .find(|e| e[section]["op"] == op && e[section]["path"] == reached.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {op} event on {}", reached.display()));
        assert_eq!(
            e[section]["aliases"][0],
            d.join(watched).to_str().unwrap(),
            "{e:#}"
        );
        assert_eq!(e["decision"]["rule"], "guard", "{e:#}");
        assert!(e[section]["object"]["ino"].is_u64(), "{e:#}");
    }
}

/// A watched file replaced by a new one (an editor's or useradd's rename
/// over it) leaves its old inode behind: a name that still holds that
/// inode, or a new file that reuses its number, is another file now and
/// must not be decided as the watched one.
#[test]
fn the_old_inode_of_a_replaced_watched_file_is_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    layout(&d);
    std::fs::write(d.join("prot/i.conf"), b"original\n").unwrap();
    std::fs::hard_link(d.join("prot/i.conf"), d.join("elsewhere/old-i")).unwrap();
    let watched = d.join("prot/i.conf");
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"guard\"\non = [\"file.write\"]\npath = [\"{}\"]\n",
            watched.display()
        ),
        &[],
    );
    // Replaced, then the old inode written to at once: well inside the
    // agent's one-second refresh of watched identities.
    let script =
        "echo new > prot/i.conf+ && mv prot/i.conf+ prot/i.conf && echo x >> elsewhere/old-i";
    let events = run_script(agent, &d, script);
    let old = d.join("elsewhere/old-i");
    let e = events
        .iter()
        .find(|e| e["file"]["op"] == "open" && e["file"]["path"] == old.to_str().unwrap())
        .unwrap_or_else(|| panic!("no open event on {}", old.display()));
    assert!(
        e["file"]["aliases"]
            .as_array()
            .is_none_or(|a| a.iter().all(|n| n != watched.to_str().unwrap())),
        "{e:#}"
    );
    assert!(e["decision"].is_null(), "{e:#}");
}
