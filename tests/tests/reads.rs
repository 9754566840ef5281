//! `file.read`: read-only opens of the files rules watch are captured (by
//! device and inode, so under any name), with the reading program and its
//! lineage; reads of every other file are still dropped in the kernel.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{assert_success, is_marker, marker, trusted_tempdir, Agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn agent_watching(dir: &Path) -> Agent {
    let config = format!(
        r#"
[[rule]]
id = "secret-read"
on = ["file.read"]
path = ["{d}/secret", "{d}/keys/id_*", "{d}/tree/**/*.key"]
path_not = ["{d}/keys/*.pub"]
exe_not = ["/usr/bin/sha256sum"]
"#,
        d = dir.display()
    );
    Agent::start_with_config(&config, &[])
}

fn cat(path: &Path) {
    assert_success(&Command::new("/usr/bin/cat").arg(path).output().unwrap());
}

/// Events up to a fresh marker.
fn events_until_now(agent: &Agent, dir: &Path, n: u32) -> Vec<Value> {
    let phase = dir.join(format!("phase-{n}"));
    std::fs::create_dir(&phase).unwrap();
    let done = marker(&phase);
    std::fs::write(&done, b"").unwrap();
    agent.collect_until(WAIT, |e| is_marker(e, &done))
}

fn reads_of<'a>(events: &'a [Value], path: &Path) -> Vec<&'a Value> {
    let path = path.to_str().unwrap();
    events
        .iter()
        .filter(|e| e["kind"] == "file" && e["file"]["op"] == "open")
        .filter(|e| {
            e["file"]["path"] == path
                || e["file"]["aliases"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p == path))
        })
        .collect()
}

fn assert_read_decided(events: &[Value], path: &Path) -> Value {
    let reads = reads_of(events, path);
    let hit = reads
        .iter()
        .find(|e| e["decision"]["rule"] == "secret-read")
        .unwrap_or_else(|| panic!("no decided read of {}: {reads:#?}", path.display()));
    assert_eq!(hit["process"]["exe"], "/usr/bin/cat", "{hit:#}");
    assert!(
        hit["process"]["ancestors"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "the lineage is in the event: {hit:#}"
    );
    assert_eq!(hit["result"]["ok"], true, "{hit:#}");
    (*hit).clone()
}

#[test]
fn reads_of_watched_files_are_decided_and_others_are_not_captured() {
    let dir = trusted_tempdir();
    let d = dir.path();
    std::fs::write(d.join("secret"), b"s3cret\n").unwrap();
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::create_dir_all(d.join("tree/a/b")).unwrap();
    std::fs::write(d.join("keys/id_old"), b"key\n").unwrap();
    std::fs::write(d.join("plain"), b"nothing\n").unwrap();
    let agent = agent_watching(d);

    // An exact file; a file created in a watched directory after the set
    // was compiled; a file deep in a watched subtree.
    std::fs::write(d.join("keys/id_new"), b"key\n").unwrap();
    std::fs::write(d.join("tree/a/b/c.key"), b"key\n").unwrap();
    // Another name for the secret, made while the agent runs.
    std::fs::hard_link(d.join("secret"), d.join("innocent")).unwrap();
    // Look-alikes: an unwatched file, a file in the watched directory the
    // pattern does not match, the watched file read by the exempted
    // program.
    std::fs::write(d.join("keys/id_new.pub"), b"pub\n").unwrap();
    for f in [
        "secret",
        "keys/id_old",
        "keys/id_new",
        "tree/a/b/c.key",
        "innocent",
    ] {
        cat(&d.join(f));
    }
    cat(&d.join("plain"));
    cat(&d.join("keys/id_new.pub"));
    assert_success(
        &Command::new("/usr/bin/sha256sum")
            .arg(d.join("secret"))
            .output()
            .unwrap(),
    );
    let events = events_until_now(&agent, d, 0);

    let hit = assert_read_decided(&events, &d.join("secret"));
    assert!(
        hit["file"]["flags"]
            .as_array()
            .is_some_and(|f| !f.iter().any(|x| x == "write" || x == "create")),
        "a read: {hit:#}"
    );
    assert_read_decided(&events, &d.join("keys/id_old"));
    assert_read_decided(&events, &d.join("keys/id_new"));
    assert_read_decided(&events, &d.join("tree/a/b/c.key"));
    // The hard link is the secret: decided, with the watched name.
    assert!(
        reads_of(&events, &d.join("innocent"))
            .iter()
            .any(|e| e["decision"]["rule"] == "secret-read"),
        "a read through a hard link is decided: {:#?}",
        reads_of(&events, &d.join("innocent"))
    );
    // Unwatched reads never leave the kernel.
    assert!(
        reads_of(&events, &d.join("plain")).is_empty(),
        "an unwatched read was captured"
    );
    // In a watched directory, not matching: captured perhaps, never decided.
    assert!(reads_of(&events, &d.join("keys/id_new.pub"))
        .iter()
        .all(|e| e["decision"].is_null()));
    // The exempted program reads undecided.
    let by_sha: Vec<&Value> = reads_of(&events, &d.join("secret"))
        .into_iter()
        .filter(|e| e["process"]["exe"] == "/usr/bin/sha256sum")
        .collect();
    assert!(!by_sha.is_empty(), "the exempted program's read is seen");
    assert!(
        by_sha.iter().all(|e| e["decision"].is_null()),
        "{by_sha:#?}"
    );
    agent.stop();
}
