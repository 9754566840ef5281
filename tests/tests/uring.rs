//! io_uring made visible: a process that sets up a ring is an event, with
//! its flags (SQPOLL: a kernel thread submits for it), its program and
//! lineage; rules allow-list the programs that may.

use std::process::Command;
use std::time::Duration;

use guardrail_tests::{is_marker, marker, Agent};
use serde_json::Value;

/// Perl (in every Debian) calling io_uring_setup(2) directly: `flags` go
/// into `struct io_uring_params` (offset 8).
fn set_up_a_ring(perl: &std::path::Path, flags: u32) -> u32 {
    let script = format!(
        "my $p = \"\\0\" x 120; substr($p, 8, 4) = pack(\"L\", {flags}); \
         my $fd = syscall(425, 8, $p); die \"io_uring_setup: $!\\n\" if $fd < 0; print \"$$\\n\";"
    );
    let out = Command::new(perl).args(["-e", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn setting_up_a_ring_is_an_event_and_allow_listed_programs_are_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    // The allow-listed program: a copy of perl under another name.
    let allowed = d.join("database");
    std::fs::copy("/usr/bin/perl", &allowed).unwrap();
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"uring\"\non = [\"uring.setup\"]\nexe_not = [\"{}\"]\nseverity = \"medium\"\n",
            allowed.display()
        ),
        &[],
    );
    const SQPOLL: u32 = 2;
    let plain = set_up_a_ring(std::path::Path::new("/usr/bin/perl"), 0);
    let polled = set_up_a_ring(std::path::Path::new("/usr/bin/perl"), SQPOLL);
    let listed = set_up_a_ring(&allowed, 0);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let setup_by = |pid: u32| -> &Value {
        events
            .iter()
            .find(|e| e["kind"] == "uring" && e["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no io_uring set-up event for pid {pid}"))
    };
    let e = setup_by(plain);
    assert_eq!(e["uring"]["op"], "setup", "{e:#}");
    assert_eq!(e["uring"]["sq_entries"], 8, "{e:#}");
    assert_eq!(e["process"]["exe"], "/usr/bin/perl", "{e:#}");
    assert!(
        !e["process"]["ancestors"].as_array().unwrap().is_empty(),
        "{e:#}"
    );
    assert_eq!(e["decision"]["rule"], "uring", "{e:#}");
    let e = setup_by(polled);
    assert!(
        e["uring"]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "sqpoll"),
        "{e:#}"
    );
    let e = setup_by(listed);
    assert!(
        e["decision"].is_null(),
        "an allow-listed program is quiet: {e:#}"
    );
}

/// The shipped rules: qemu-img (a listed, legitimate io_uring user, from
/// Debian's qemu-utils) sets up its ring quietly; an unlisted program is
/// alerted on.
#[test]
fn the_default_pack_is_quiet_for_qemu_img_and_alerts_on_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/guardrail.toml"),
    )
    .unwrap()
    .replace(
        "path = \"/var/log/guardrail/audit.jsonl\"",
        &format!("path = \"{}\"", d.join("audit.jsonl").display()),
    );
    let agent = Agent::start_with_config(&shipped, &[]);
    let image = d.join("disk.img");
    let out = Command::new("qemu-img")
        .args(["create", "-f", "raw"])
        .arg(&image)
        .arg("1M")
        .output()
        .expect("qemu-img (qemu-utils, a test prerequisite)");
    assert!(out.status.success());
    let out = Command::new("qemu-img")
        .args(["bench", "-i", "io_uring", "-c", "16", "-f", "raw"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unlisted = set_up_a_ring(std::path::Path::new("/usr/bin/perl"), 0);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let setups: Vec<&Value> = events.iter().filter(|e| e["kind"] == "uring").collect();
    let qemu = setups
        .iter()
        .find(|e| e["process"]["exe"] == "/usr/bin/qemu-img")
        .unwrap_or_else(|| panic!("no set-up by qemu-img: {setups:#?}"));
    assert!(qemu["decision"].is_null(), "{qemu:#}");
    let perl = setups
        .iter()
        .find(|e| e["process"]["pid"] == unlisted)
        .unwrap_or_else(|| panic!("no set-up by perl: {setups:#?}"));
    assert_eq!(perl["decision"]["rule"], "io-uring-setup", "{perl:#}");
}

/// vm/helper.c, the io_uring submitter the VM scenarios use too, built
/// for this host.
fn helper(dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/helper.c");
    let out = dir.join("vmhelper");
    let status = Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc (installed by the test prerequisites)");
    assert!(status.success(), "building {}", src.display());
    out
}

/// The first event for `path` that came `via` the given way, with `op`.
fn find<'a>(events: &'a [Value], via: &str, op: &str, path: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["via"] == via && e["file"]["op"] == op && e["file"]["path"] == path)
        .unwrap_or_else(|| {
            let seen: Vec<_> = events
                .iter()
                .filter(|e| e["kind"] == "file")
                .map(|e| (&e["via"], &e["file"]["op"], &e["file"]["path"]))
                .collect();
            panic!("no {op} of {path} via {via}; file events: {seen:?}")
        })
}

/// Each file operation the issue lists, made once as a syscall (by the
/// coreutils a user has) and once through io_uring, with relative paths:
/// both are captured with the same canonical paths and decided by the same
/// rule with the same outcome.
#[test]
fn file_operations_through_io_uring_are_decided_as_their_syscalls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let helper = helper(tools.path());
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"watch-d\"\non = [\"file.*\"]\npath = [\"{}/**\"]\nseverity = \"high\"\n",
            d.display()
        ),
        &[],
    );
    let kernel_has_ftruncate = agent.status()["capabilities"]["uring_unseen"]
        .as_array()
        .is_some_and(|u| {
            !u.iter()
                .any(|s| s.as_str().unwrap_or("").starts_with("ftruncate"))
        });
    let run = |program: &std::path::Path, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let sh = |script: &str| run(std::path::Path::new("/bin/sh"), &["-c", script]);
    let uring = |args: &[&str]| {
        let mut all = vec!["uring"];
        all.extend_from_slice(args);
        run(&helper, &all);
    };
    // open for writing (creating)
    sh(": > f1");
    uring(&["open", "f1"]);
    uring(&["open2", "f2"]);
    // rename
    sh("mv f1 r1 && mv r1 f1");
    uring(&["rename", "f1", "r1"]);
    // link and symlink
    sh("ln r1 h1 && rm h1");
    uring(&["link", "r1", "h1"]);
    sh("ln -s r1 s1 && rm s1");
    uring(&["symlink", "r1", "s1"]);
    // unlink
    sh("rm h1 && ln r1 h1");
    uring(&["unlink", "h1"]);
    // truncate (ftruncate through io_uring from Linux 6.9)
    sh("truncate -s 3 r1");
    if kernel_has_ftruncate {
        uring(&["truncate", "r1", "1"]);
    }
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let p = |name: &str| d.join(name).display().to_string();
    let mut pairs = vec![
        ("open", p("f1")),
        ("rename", p("f1")),
        ("link", p("r1")),
        ("symlink", p("s1")),
        ("unlink", p("h1")),
    ];
    if kernel_has_ftruncate {
        pairs.push(("truncate", p("r1")));
    }
    for (op, path) in &pairs {
        let by_syscall = find(&events, "syscall", op, path);
        let by_uring = find(&events, "io_uring", op, path);
        for field in [
            "/syscall",
            "/file/path",
            "/file/new_path",
            "/file/target",
            "/result/ok",
            "/decision/rule",
            "/decision/outcome",
        ] {
            assert_eq!(
                by_syscall.pointer(field),
                by_uring.pointer(field),
                "{op} {field}: syscall {by_syscall:#} io_uring {by_uring:#}"
            );
        }
        assert_eq!(by_uring["decision"]["rule"], "watch-d", "{by_uring:#}");
        assert_eq!(
            by_uring["process"]["exe"],
            helper.display().to_string(),
            "{by_uring:#}"
        );
        // Lineage: the helper was started by this test.
        let test_exe = std::env::current_exe().unwrap().display().to_string();
        assert_eq!(
            by_uring["process"]["ancestors"][0]["exe"], test_exe,
            "{by_uring:#}"
        );
    }
    let open2 = find(&events, "io_uring", "open", &p("f2"));
    assert_eq!(open2["syscall"], "openat2", "{open2:#}");
    assert!(
        open2["file"]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "create"),
        "{open2:#}"
    );
    assert_eq!(open2["decision"]["rule"], "watch-d", "{open2:#}");
}
