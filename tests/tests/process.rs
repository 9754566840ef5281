//! Process identity at the moment of the event: the agent keeps a table of
//! processes from the kernel's fork, exec and exit records, so an event
//! names the program its process ran when it acted — a forked child its
//! parent's program, a process that exec'd since its old one, a process
//! that is gone by the time the agent reads the record its last one —
//! never null and never the image of a later exec.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{is_marker, marker, Agent, BoundedOutput};

const ROUNDS: usize = 150;

fn canonical(program: &str) -> String {
    Path::new(program)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn every_event_names_the_program_its_process_ran_at_that_moment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start(&[]);
    // Per round: a forked subshell writes (no exec: the shell's program);
    // a new shell writes, then execs perl, which writes; all of them exit
    // at once, usually before the agent reads their records.
    let script = format!(
        r#"i=0
while [ $i -lt {ROUNDS} ]; do
  i=$((i+1))
  ( echo x > "$D/fork.$i" )
  sh -c 'echo x > "$1/before.$2"; exec perl -e "open(my \$f, q(>), qq(\$ARGV[0]/after.\$ARGV[1])) or die" "$1" "$2"' sh "$D" "$i"
done"#
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .env("D", &d)
        .status()
        .unwrap();
    assert!(status.success());
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();

    let shell = canonical("/bin/sh");
    let perl = canonical("/usr/bin/perl");
    let mut checked = 0;
    let mut ids = std::collections::HashSet::new();
    for e in events.iter().filter(|e| e["kind"] == "file") {
        let Some(path) = e["file"]["path"].as_str() else {
            continue;
        };
        let Some(name) = path.strip_prefix(&format!("{}/", d.display())) else {
            continue;
        };
        let expected = match name.split('.').next() {
            Some("fork") | Some("before") => &shell,
            Some("after") => &perl,
            _ => continue,
        };
        assert_eq!(
            e["process"]["exe"].as_str(),
            Some(expected.as_str()),
            "{name}: {e:#}"
        );
        // Each writer was made by the loop's shell, made by this test.
        let p = &e["process"];
        assert_eq!(
            p["ancestors"][0]["exe"].as_str(),
            Some(shell.as_str()),
            "{name}: {e:#}"
        );
        assert_eq!(p["ancestors"][0]["id"], p["parent_id"], "{name}: {e:#}");
        let id = p["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no id: {e:#}"));
        assert!(id.starts_with(&format!("{}@", p["pid"])), "{id}");
        ids.insert((
            name.split('.').nth(1).unwrap().to_string(),
            name.starts_with("fork"),
            id.to_string(),
        ));
        checked += 1;
    }
    assert_eq!(checked, 3 * ROUNDS, "every write was seen: {checked}");
    // One id per process: each round's subshell is its own process, and
    // the shell that wrote before.N is the process that became perl.
    let per_process: std::collections::HashSet<_> = ids.iter().map(|(_, _, id)| id).collect();
    assert_eq!(per_process.len(), 2 * ROUNDS, "{ids:?}");
}

/// The cgroup v2 mount (pure or hybrid hierarchy).
fn cgroup2_root() -> std::path::PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            (fs.split_whitespace().next()? == "cgroup2").then(|| {
                mount
                    .split_whitespace()
                    .nth(4)
                    .map(std::path::PathBuf::from)
            })?
        })
        .expect("cgroup v2 is mounted")
}

/// Events say which service and container they come from, and whose they
/// are by name; rules can judge by unit and container.
#[test]
fn events_name_the_unit_container_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let root = cgroup2_root();
    let unit = format!("grtest-{}.service", std::process::id());
    let container_id = format!("{:064x}", std::process::id());
    let scope = format!("docker-{container_id}.scope");
    for cg in [&unit, &scope] {
        std::fs::create_dir(root.join(cg)).unwrap();
    }
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"by-unit\"\non = [\"file.write\"]\nunit = [\"grtest-*.service\"]\npath = [\"{d}/**\"]\n\n\
             [[rule]]\nid = \"in-container\"\non = [\"file.write\"]\ncontainer = [\"any\"]\npath = [\"{d}/**\"]\n",
            d = d.display()
        ),
        &[],
    );
    // A shell that moves itself into a cgroup, then writes.
    for (cg, file) in [(&unit, "in-unit"), (&scope, "in-container")] {
        let script = format!(
            "echo $$ > {}/cgroup.procs && echo x > {}/{file}",
            root.join(cg).display(),
            d.display()
        );
        assert!(Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success());
    }
    std::fs::write(d.join("outside"), b"x").unwrap();
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    for cg in [&unit, &scope] {
        let _ = std::fs::remove_dir(root.join(cg));
    }
    let write_to = |name: &str| {
        let path = d.join(name);
        events
            .iter()
            .find(|e| e["file"]["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("no event for {name}"))
            .clone()
    };
    let e = write_to("in-unit");
    assert_eq!(e["process"]["unit"], unit.as_str(), "{e:#}");
    assert_eq!(e["process"]["cgroup"], format!("/{unit}"), "{e:#}");
    assert_eq!(e["process"]["user"], "root", "{e:#}");
    assert_eq!(e["decision"]["rule"], "by-unit", "{e:#}");
    let e = write_to("in-container");
    assert_eq!(e["process"]["container"]["runtime"], "docker", "{e:#}");
    assert_eq!(
        e["process"]["container"]["id"],
        container_id.as_str(),
        "{e:#}"
    );
    assert_eq!(e["decision"]["rule"], "in-container", "{e:#}");
    let e = write_to("outside");
    assert!(e["decision"].is_null(), "{e:#}");
}

/// A process in a login session on a terminal names both: a shell that
/// sets its login uid (as pam_loginuid does at login) gets a session id,
/// and under script(1) a pseudo-terminal; the programs it runs carry them.
#[test]
fn events_name_the_login_session_and_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start(&[]);
    let inner = format!(
        "echo x > {d}/in-session; tty > {d}/tty-name; cat /proc/self/sessionid > {d}/ses",
        d = d.display()
    );
    let script =
        format!("echo 1000 > /proc/self/loginuid && exec script -qec '{inner}' /dev/null",);
    let out = Command::new("sh")
        .args(["-c", &script])
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let read = |name: &str| {
        std::fs::read_to_string(d.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let tty = read("tty-name");
    let session: u64 = read("ses").parse().unwrap();
    let path = d.join("in-session");
    let e = events
        .iter()
        .find(|e| e["file"]["path"] == path.to_str().unwrap())
        .expect("the write in the session");
    assert_eq!(
        e["process"]["tty"].as_str().map(|t| format!("/dev/{t}")),
        Some(tty),
        "{e:#}"
    );
    assert_eq!(e["process"]["session"], session, "{e:#}");
    assert_eq!(e["process"]["auid"], 1000, "{e:#}");
}
