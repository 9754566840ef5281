//! Hostile input from the host's own processes: file names with newlines,
//! terminal escape sequences and bytes that are not UTF-8, paths at
//! PATH_MAX, argv far larger than the probes copy. Each must arrive
//! faithfully (or flagged as cut), and never reach a terminal raw.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use guardrail_tests::{bin, wait_until, Agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn hostile_names_are_kept_in_json_and_escaped_for_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start(&[]);
    // Start a human-form tail first, filtered to this directory.
    let glob = format!("{}/**", d.display());
    let tail = Command::new(bin("guardrail"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(["tail", "--path", &glob, "-n", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the tail client to subscribe", WAIT, || {
        agent.status()["tail_clients"].as_u64() >= Some(1)
    });
    let name = OsStr::from_bytes(b"evil\n\x1b[31mred\xff.txt");
    let file = d.join(name);
    std::fs::write(&file, b"x").unwrap();

    let expected = format!("{}/evil\n\x1b[31mred\\xff.txt", d.display());
    let events = agent.collect_until(WAIT, |e| e["file"]["path"] == expected.as_str());
    let event: &Value = events.last().unwrap();
    assert_eq!(event["file"]["op"], "open");

    let out = tail.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\x1b'),
        "raw escape reached the terminal: {text:?}"
    );
    assert_eq!(
        text.lines().count(),
        1,
        "a newline in a name split the line: {text:?}"
    );
    assert!(text.contains("evil\\n\\u{1b}[31mred\\xff.txt"), "{text:?}");
    agent.stop();
}

#[test]
fn a_path_at_path_max_arrives_whole_and_a_longer_one_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start(&[]);
    // Build a directory chain to just under PATH_MAX (4096 with the NUL).
    let mut deep = d.clone();
    let component = "d".repeat(200);
    while deep.as_os_str().len() + 201 < 4095 - 10 {
        deep.push(&component);
    }
    std::fs::create_dir_all(&deep).unwrap();
    let pad = 4095 - deep.as_os_str().len() - 1;
    let longest = deep.join("f".repeat(pad));
    assert_eq!(longest.as_os_str().len(), 4095);
    std::fs::write(&longest, b"x").unwrap();
    let path = longest.to_str().unwrap();
    let events = agent.collect_until(WAIT, |e| e["file"]["path"] == path);
    assert!(events.last().unwrap()["file"]["truncated"].is_null());

    // Deeper than PATH_MAX is reachable only relative to a directory; the
    // walked path is cut, and the event says so.
    // (sh's cd works on the whole absolute path, which is too long; perl's
    // chdir takes the relative step.)
    let script = format!(
        "chdir '{}' or die; mkdir '{c}'; chdir '{c}' or die $!; open(F, '>beyond') or die $!; print F 'x'; close F",
        deep.display(),
        c = component
    );
    let status = Command::new("perl").args(["-e", &script]).status().unwrap();
    assert!(status.success());
    let events = agent.collect_until(WAIT, |e| {
        e["file"]["raw_path"] == "beyond" && e["file"]["op"] == "open"
    });
    let e = &events.last().unwrap()["file"];
    assert!(
        e["truncated"].as_array().is_some_and(|t| !t.is_empty()) || e["resolved"] == false,
        "a path beyond PATH_MAX must be flagged: {e}"
    );
    agent.stop();
}

#[test]
fn thousands_of_arguments_are_cut_and_flagged() {
    let agent = Agent::start(&[]);
    let args: Vec<String> = (0..5000).map(|i| format!("argument-{i:05}")).collect();
    let mut child = Command::new("/bin/true").args(&args).spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let events = agent.collect_until(WAIT, |e| e["kind"] == "exec" && e["process"]["pid"] == pid);
    let exec = &events.last().unwrap()["exec"];
    assert_eq!(exec["argv_truncated"], true, "{exec}");
    let argv = exec["argv"].as_array().unwrap();
    assert_eq!(argv[0], "/bin/true");
    assert_eq!(argv[1], "argument-00000");
    assert!(
        argv.len() > 100 && argv.len() < 5001,
        "{} arguments",
        argv.len()
    );
    // Every whole argument is exactly what was passed.
    for (i, a) in argv.iter().enumerate().skip(1).take(argv.len() - 2) {
        assert_eq!(a, &format!("argument-{:05}", i - 1));
    }
    agent.stop();
}
