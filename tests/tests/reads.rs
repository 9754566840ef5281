//! `file.read`: read-only opens of the files rules watch are captured (by
//! device and inode, so under any name), with the reading program and its
//! lineage; reads of every other file are still dropped in the kernel.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{assert_success, is_marker, marker, trusted_tempdir, Agent, BoundedOutput};
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

/// Wait until the agent's status shows a read watch set `ok` accepts.
fn wait_for_watch(agent: &Agent, what: &str, ok: impl Fn(&Value) -> bool) {
    guardrail_tests::wait_until(what, WAIT, || ok(&agent.status()["read_watch"]));
}

fn cat(path: &Path) {
    assert_success(
        &Command::new("/usr/bin/cat")
            .arg(path)
            .bounded_output()
            .unwrap(),
    );
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
        // Reads only: a file's creation is an open too.
        .filter(|e| {
            e["file"]["flags"]
                .as_array()
                .is_some_and(|f| !f.iter().any(|x| x == "write" || x == "create"))
        })
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
    // A link in a watched subtree to an unwatched file: not followed, so
    // the file it points to stays unwatched.
    std::os::unix::fs::symlink(d.join("plain"), d.join("tree/a/b/link.key")).unwrap();
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
    // The agent watches what was created once it has seen the creation:
    // the secret, both keys and the deep key (the public key is excluded).
    wait_for_watch(&agent, "4 files watched", |w| w["files"] == 4);
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
    // An O_PATH handle on the secret reads nothing: no read.
    let secret_c = guardrail_tests::cstr(&d.join("secret"));
    let fd = unsafe { libc::open(secret_c.as_ptr(), libc::O_PATH) };
    assert!(fd >= 0, "O_PATH open: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd) };
    assert_success(
        &Command::new("/usr/bin/sha256sum")
            .arg(d.join("secret"))
            .bounded_output()
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
    // The hard link is the secret: decided, with the watched name (its
    // own read, not the secret's, which names it as an alias).
    let innocent = d.join("innocent");
    assert!(
        reads_of(&events, &innocent)
            .iter()
            .filter(|e| e["file"]["path"] == innocent.to_str().unwrap())
            .any(|e| e["decision"]["rule"] == "secret-read"),
        "a read through a hard link is decided: {:#?}",
        reads_of(&events, &d.join("innocent"))
    );
    // Unwatched reads never leave the kernel.
    assert!(
        reads_of(&events, &d.join("plain")).is_empty(),
        "an unwatched read was captured"
    );
    // In a watched directory, excluded by path_not: not watched at all.
    assert!(
        reads_of(&events, &d.join("keys/id_new.pub")).is_empty(),
        "an excluded file's read was captured"
    );
    // The O_PATH handle is no read: the secret's reads are cat's (one by
    // its name, one through the hard link) and sha256sum's.
    let o_path: Vec<&Value> = reads_of(&events, &d.join("secret"))
        .into_iter()
        .filter(|e| e["process"]["tid"].as_u64() == Some(guardrail_tests::gettid() as u64))
        .collect();
    assert!(
        o_path.is_empty(),
        "an O_PATH open was reported as a read: {o_path:#?}"
    );
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

    // Replaced as passwd replaces /etc/shadow (a new file renamed over
    // it: a new inode): once the agent has seen the rename, the new file
    // is watched, without waiting for the periodic recompile.
    let swaps = agent.status()["read_watch"]["swaps"].as_u64().unwrap();
    std::fs::write(d.join("secret.new"), b"n3w\n").unwrap();
    std::fs::rename(d.join("secret.new"), d.join("secret")).unwrap();
    wait_for_watch(&agent, "the new secret watched", |w| {
        w["swaps"].as_u64() > Some(swaps)
    });
    cat(&d.join("secret"));
    let events = events_until_now(&agent, d, 1);
    assert_read_decided(&events, &d.join("secret"));
    agent.stop();
}

/// Files one rule watches by exact name in the large-set test.
const MANY: usize = 10_000;

fn many_files_config(dir: &Path, extra: bool) -> String {
    let paths: Vec<String> = (0..MANY)
        .map(|i| format!("\"{}/many/f{i}\"", dir.display()))
        .collect();
    let mut config = format!(
        "[[rule]]\nid = \"many\"\non = [\"file.read\"]\npath = [{}]\n",
        paths.join(", ")
    );
    if extra {
        config.push_str(&format!(
            "\n[[rule]]\nid = \"extra\"\non = [\"file.read\"]\npath = [\"{}/extra\"]\n",
            dir.display()
        ));
    }
    config
}

#[test]
fn ten_thousand_watched_files_and_reloads_under_load_miss_no_read() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let dir = trusted_tempdir();
    let d = dir.path().to_path_buf();
    std::fs::create_dir(d.join("many")).unwrap();
    for i in 0..MANY {
        std::fs::write(d.join(format!("many/f{i}")), b"x").unwrap();
    }
    std::fs::write(d.join("extra"), b"x").unwrap();
    let agent = Agent::start_with_config(&many_files_config(&d, false), &[]);
    let rules = |agent: &Agent| agent.status()["rules"].as_u64().unwrap_or(0);
    assert_eq!(rules(&agent), 1);

    // A reader reads watched files, one every millisecond, all the while
    // the set is swapped: each reload changes it, so each puts a whole new
    // generation of 10,000 entries in force.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, d) = (stop.clone(), reads.clone(), d.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::fs::read(d.join(format!("many/f{}", (i * 7919) % MANY))).unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    for round in 1..=6 {
        let extra = round % 2 == 1;
        std::fs::write(&agent.config, many_files_config(&d, extra)).unwrap();
        agent.signal(libc::SIGHUP);
        let want = if extra { 2 } else { 1 };
        let deadline = Instant::now() + WAIT;
        while rules(&agent) != want {
            assert!(Instant::now() < deadline, "reload {round} not in force");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // However fast the reloads went, the reader read across them.
    guardrail_tests::wait_until("200 reads", WAIT, || reads.load(Ordering::Relaxed) >= 200);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let done = reads.load(Ordering::Relaxed);
    let events = events_until_now(&agent, &d, 0);

    let many = format!("{}/many/f", d.display());
    let seen = events
        .iter()
        .filter(|e| e["kind"] == "file" && e["file"]["op"] == "open")
        .filter(|e| {
            e["file"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&many))
        })
        .filter(|e| e["decision"]["rule"] == "many")
        .count() as u64;
    let losses: Vec<&Value> = events.iter().filter(|e| e["kind"] == "loss").collect();
    assert!(losses.is_empty(), "events were lost: {losses:#?}");
    assert_eq!(
        seen, done,
        "every read of a watched file is decided, across 6 reloads"
    );
    agent.stop();
}

/// A kernel that has `bpf_rdonly_cast` but refuses the probes' call of it
/// (a debug agent is made to call a function that is not a kfunc, which
/// every verifier refuses): the agent loads its probes again with helper
/// reads, says so, and watched reads are still decided.
#[test]
fn a_kernel_refusing_typed_file_loads_still_watches_reads() {
    // Only where the agent would bind the cast at all: the kernel has it
    // (its name is in the BTF's strings) and compiles BPF programs.
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
    let has_cast = btf.windows(16).any(|w| w == b"bpf_rdonly_cast\0");
    let jit =
        std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").is_ok_and(|v| v.trim() != "0");
    if !(has_cast && jit) {
        eprintln!("skipped: this kernel has no bpf_rdonly_cast or no BPF JIT");
        return;
    }
    let dir = trusted_tempdir();
    let d = dir.path();
    std::fs::write(d.join("secret"), b"s3cret\n").unwrap();
    std::fs::write(d.join("plain"), b"nothing\n").unwrap();
    let config = format!(
        "[[rule]]\nid = \"secret-read\"\non = [\"file.read\"]\npath = [\"{}/secret\"]\n",
        d.display()
    );
    let launch = guardrail_tests::Launch {
        env: vec![("GUARDRAIL_TEST_RDONLY_CAST".into(), "vfs_open".into())],
        ..Default::default()
    };
    let agent = Agent::launch(&config, &[], &launch);
    let capabilities = &agent.status()["capabilities"];
    // The fallback ran: the kernel refused the call it was made to make.
    assert_eq!(
        capabilities["typed_files"], false,
        "the refused cast is not in force: {capabilities:#}"
    );
    assert!(
        capabilities["typed_files_note"]
            .as_str()
            .is_some_and(|n| n.contains("vfs_open")),
        "the refusal is reported: {capabilities:#}"
    );
    wait_for_watch(&agent, "1 file watched", |w| w["files"] == 1);
    cat(&d.join("secret"));
    cat(&d.join("plain"));
    let events = events_until_now(&agent, d, 0);
    assert_read_decided(&events, &d.join("secret"));
    assert!(
        reads_of(&events, &d.join("plain")).is_empty(),
        "an unwatched read was captured"
    );
    agent.stop();
}
