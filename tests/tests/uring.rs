//! io_uring made visible: a process that sets up a ring is an event, with
//! its flags (SQPOLL: a kernel thread submits for it), its program and
//! lineage; rules allow-list the programs that may.

use std::process::Command;
use std::time::Duration;

use guardrail_tests::{is_marker, marker, Agent, BoundedOutput};
use serde_json::Value;

/// Perl (in every Debian) calling io_uring_setup(2) directly: `flags` go
/// into `struct io_uring_params` (offset 8).
fn set_up_a_ring(perl: &std::path::Path, flags: u32) -> u32 {
    let script = format!(
        "my $p = \"\\0\" x 120; substr($p, 8, 4) = pack(\"L\", {flags}); \
         my $fd = syscall(425, 8, $p); die \"io_uring_setup: $!\\n\" if $fd < 0; print \"$$\\n\";"
    );
    let out = Command::new(perl)
        .args(["-e", &script])
        .bounded_output()
        .unwrap();
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

/// Files and buffers registered with a ring (requests then name them by
/// index) are events of their own, with what the ring holds after each
/// call; rules select them as `uring.register`.
#[test]
fn registering_files_and_buffers_with_a_ring_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start_with_config(
        "[[rule]]\nid = \"registered\"\non = [\"uring.register\"]\nseverity = \"low\"\n",
        &[],
    );
    // io_uring_register(2) is syscall 427: two files (stdin, stdout), then
    // one 4 KiB buffer (a struct iovec pointing into a Perl string).
    let script = "my $p = \"\\0\" x 120; my $fd = syscall(425, 8, $p); \
         die \"io_uring_setup: $!\\n\" if $fd < 0; \
         my $fds = pack(\"i2\", 0, 1); \
         syscall(427, $fd, 2, $fds, 2) == 0 or die \"register files: $!\\n\"; \
         my $buf = \"\\0\" x 4096; \
         my $iov = pack(\"QQ\", unpack(\"J\", pack(\"p\", $buf)), 4096); \
         syscall(427, $fd, 0, $iov, 1) == 0 or die \"register buffers: $!\\n\"; \
         print \"$$\\n\";";
    let out = Command::new("/usr/bin/perl")
        .args(["-e", script])
        .bounded_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let registered = |opcode: &str| -> &Value {
        events
            .iter()
            .find(|e| {
                e["kind"] == "uring"
                    && e["process"]["pid"] == pid
                    && e["uring"]["register"]["opcode"] == opcode
            })
            .unwrap_or_else(|| panic!("no io_uring register {opcode} event for pid {pid}"))
    };
    let files = registered("files");
    assert_eq!(files["uring"]["op"], "register", "{files:#}");
    assert_eq!(files["uring"]["register"]["files"], 2, "{files:#}");
    assert_eq!(files["result"]["ok"], true, "{files:#}");
    assert_eq!(files["process"]["exe"], "/usr/bin/perl", "{files:#}");
    assert_eq!(files["decision"]["rule"], "registered", "{files:#}");
    let buffers = registered("buffers");
    assert_eq!(buffers["uring"]["register"]["buffers"], 1, "{buffers:#}");
    assert_eq!(buffers["uring"]["register"]["files"], 2, "{buffers:#}");
    // The set-up itself is not a `uring.register` event.
    let setup = events
        .iter()
        .find(|e| e["kind"] == "uring" && e["process"]["pid"] == pid && e["uring"]["op"] == "setup")
        .expect("the set-up event");
    assert!(setup["decision"].is_null(), "{setup:#}");
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
        .bounded_output()
        .expect("qemu-img (qemu-utils, a test prerequisite)");
    assert!(out.status.success());
    let out = Command::new("qemu-img")
        .args(["bench", "-i", "io_uring", "-c", "16", "-f", "raw"])
        .arg(&image)
        .bounded_output()
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

/// Run `program ARGS` in `dir`; it must succeed.
fn run_in(dir: &std::path::Path, program: &std::path::Path, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .bounded_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the agent follows `op` through io_uring on this kernel, from
/// its status's `capabilities.uring_unseen` (op by op, or "all ops").
fn follows_through_uring(unseen: &Value, op: &str) -> bool {
    !unseen.as_array().is_some_and(|u| {
        u.iter().any(|s| {
            let s = s.as_str().unwrap_or("");
            s.starts_with(&format!("{op}:")) || s.starts_with("all")
        })
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
    let unseen = agent.status()["capabilities"]["uring_unseen"].clone();
    let kernel_has_ftruncate = follows_through_uring(&unseen, "ftruncate");
    let run = |program: &std::path::Path, args: &[&str]| run_in(&d, program, args);
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
    // mkdir: mkdir(1) makes the mkdir syscall, io_uring the mkdirat one
    sh("mkdir m1 && rmdir m1");
    uring(&["mkdir", "m1"]);
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
        ("mkdir", p("m1")),
    ];
    if kernel_has_ftruncate {
        pairs.push(("truncate", p("r1")));
    }
    for (op, path) in &pairs {
        let by_syscall = find(&events, "syscall", op, path);
        let by_uring = find(&events, "io_uring", op, path);
        for field in [
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
        // The same call, except that mkdir(1) makes mkdir, not mkdirat.
        let syscall_of = |e: &Value| match e["syscall"].as_str() {
            Some("mkdir") => "mkdirat".to_string(),
            s => s.unwrap_or_default().to_string(),
        };
        assert_eq!(
            syscall_of(by_syscall),
            syscall_of(by_uring),
            "{op}: syscall {by_syscall:#} io_uring {by_uring:#}"
        );
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
    let mkdir = find(&events, "io_uring", "mkdir", &p("m1"));
    assert_eq!(mkdir["syscall"], "mkdirat", "{mkdir:#}");
    // Both ask for 0777 (the umask narrows it in the kernel).
    assert_eq!(mkdir["file"]["mode"], "777", "{mkdir:#}");
    let mkdir_syscall = find(&events, "syscall", "mkdir", &p("m1"));
    assert_eq!(mkdir_syscall["syscall"], "mkdir", "{mkdir_syscall:#}");
    assert_eq!(mkdir_syscall["file"]["mode"], "777", "{mkdir_syscall:#}");
    assert!(d.join("m1").is_dir(), "the directory was made");
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

/// A request's paths are kept from its submission to its completion; two
/// long ones (over a kilobyte together, more than the probes' short table
/// for requests in flight holds) are reported whole, as the same rename
/// made as a syscall is.
#[test]
fn long_paths_through_io_uring_are_reported_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let helper = helper(tools.path());
    // Three directories of 200 characters: each path is over 600 bytes.
    let deep: std::path::PathBuf = ["a", "b", "c"].iter().map(|c| c.repeat(200)).collect();
    std::fs::create_dir_all(d.join(&deep)).unwrap();
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"watch-d\"\non = [\"file.rename\"]\npath = [\"{}/**\"]\nseverity = \"high\"\n",
            d.display()
        ),
        &[],
    );
    let rel = |name: &str| deep.join(name).display().to_string();
    std::fs::write(d.join(rel("old")), b"x").unwrap();
    run_in(
        &d,
        std::path::Path::new("/bin/mv"),
        &[&rel("old"), &rel("new")],
    );
    run_in(
        &d,
        std::path::Path::new("/bin/mv"),
        &[&rel("new"), &rel("old")],
    );
    run_in(&d, &helper, &["uring", "rename", &rel("old"), &rel("new")]);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let (old, new) = (
        d.join(rel("old")).display().to_string(),
        d.join(rel("new")).display().to_string(),
    );
    assert!(old.len() + new.len() > 1024);
    let by_syscall = find(&events, "syscall", "rename", &old);
    let by_uring = find(&events, "io_uring", "rename", &old);
    assert_eq!(by_uring["file"]["new_path"], new.as_str(), "{by_uring:#}");
    for field in [
        "/file/path",
        "/file/new_path",
        "/result/ok",
        "/decision/rule",
    ] {
        assert_eq!(
            by_syscall.pointer(field),
            by_uring.pointer(field),
            "{field}: syscall {by_syscall:#} io_uring {by_uring:#}"
        );
    }
    assert!(d.join(rel("new")).exists(), "the rename happened");
}

/// Extended attributes, file capabilities (`security.capability`) among
/// them, set by the setxattr and fsetxattr syscalls and through io_uring
/// (5.19+), with a relative path: the same rule, canonical path,
/// attribute, capabilities and outcome.
#[test]
fn extended_attributes_set_through_io_uring_are_decided_as_their_syscalls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let helper = helper(tools.path());
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"xattr-d\"\non = [\"perm.setxattr\"]\npath = [\"{}/**\"]\nseverity = \"high\"\n",
            d.display()
        ),
        &[],
    );
    let unseen = agent.status()["capabilities"]["uring_unseen"].clone();
    let kernel_has = |op: &str| follows_through_uring(&unseen, op);
    let run = |args: &[&str]| run_in(&d, &helper, args);
    std::fs::write(d.join("x1"), b"").unwrap();
    let cases = [
        ("setxattr", "user.k", "v"),
        ("fsetxattr", "user.f", "w"),
        ("setxattr", "security.capability", "caps:net_raw"),
    ];
    for (call, name, value) in cases {
        run(&[call, "x1", name, value]);
        if kernel_has(call) {
            run(&["uring", call, "x1", name, value]);
        }
    }
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let path = d.join("x1").display().to_string();
    let find = |via: &str, call: &str, name: &str| -> &Value {
        events
            .iter()
            .find(|e| {
                e["via"] == via
                    && e["syscall"] == call
                    && e["perm"]["op"] == "setxattr"
                    && e["perm"]["xattr"]["name"] == name
            })
            .unwrap_or_else(|| {
                let seen: Vec<_> = events
                    .iter()
                    .filter(|e| e["kind"] == "perm")
                    .map(|e| (&e["via"], &e["syscall"], &e["perm"]))
                    .collect();
                panic!("no {call} of {name} via {via}; perm events: {seen:#?}")
            })
    };
    for (call, name, _) in cases {
        let by_syscall = find("syscall", call, name);
        assert_eq!(by_syscall["perm"]["path"], path.as_str(), "{by_syscall:#}");
        assert_eq!(by_syscall["result"]["ok"], true, "{by_syscall:#}");
        assert_eq!(by_syscall["decision"]["rule"], "xattr-d", "{by_syscall:#}");
        if !kernel_has(call) {
            continue;
        }
        let by_uring = find("io_uring", call, name);
        for field in [
            "/syscall",
            "/perm/path",
            "/perm/xattr",
            "/result/ok",
            "/decision/rule",
            "/decision/outcome",
        ] {
            assert_eq!(
                by_syscall.pointer(field),
                by_uring.pointer(field),
                "{call} {name} {field}: syscall {by_syscall:#} io_uring {by_uring:#}"
            );
        }
        assert_eq!(
            by_uring["process"]["exe"],
            helper.display().to_string(),
            "{by_uring:#}"
        );
    }
    let caps = &find("syscall", "setxattr", "security.capability")["perm"]["xattr"]["file_caps"];
    assert_eq!(
        caps["permitted"],
        serde_json::json!(["cap_net_raw"]),
        "{caps:#}"
    );
    assert_eq!(caps["effective"], true, "{caps:#}");
}

/// A read-only open of a watched file through io_uring is a `file.read`
/// event as `cat`'s open is: same canonical path, rule and outcome, with
/// `"via":"io_uring"`; a read-only open of any other file is not reported
/// either way (the read watch, not every read).
#[test]
fn reads_of_watched_files_through_io_uring_are_decided_as_their_syscalls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::write(d.join("secret"), b"private\n").unwrap();
    std::fs::write(d.join("other"), b"public\n").unwrap();
    let tools = tempfile::tempdir().unwrap();
    let helper = helper(tools.path());
    let agent = Agent::start_with_config(
        &format!(
            "[[rule]]\nid = \"watch-secret\"\non = [\"file.read\"]\npath = [\"{}/secret\"]\nseverity = \"high\"\n",
            d.display()
        ),
        &[],
    );
    if !follows_through_uring(&agent.status()["capabilities"]["uring_unseen"], "openat") {
        agent.stop();
        eprintln!("this kernel's io_uring tracepoints carry no request: nothing to compare");
        return;
    }
    let run = |program: &std::path::Path, args: &[&str]| run_in(&d, program, args);
    run(std::path::Path::new("/bin/cat"), &["secret"]);
    run(&helper, &["uring", "read", "secret"]);
    run(std::path::Path::new("/bin/cat"), &["other"]);
    run(&helper, &["uring", "read", "other"]);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    let secret = d.join("secret").display().to_string();
    let by_syscall = find(&events, "syscall", "open", &secret);
    let by_uring = find(&events, "io_uring", "open", &secret);
    for field in [
        "/file/path",
        "/result/ok",
        "/decision/rule",
        "/decision/outcome",
        "/file/object",
    ] {
        assert_eq!(
            by_syscall.pointer(field),
            by_uring.pointer(field),
            "{field}: syscall {by_syscall:#} io_uring {by_uring:#}"
        );
    }
    assert_eq!(by_uring["decision"]["rule"], "watch-secret", "{by_uring:#}");
    assert_eq!(by_uring["syscall"], "openat", "{by_uring:#}");
    assert_eq!(by_uring["process"]["exe"], helper.display().to_string());
    let other = d.join("other").display().to_string();
    let reported: Vec<_> = events
        .iter()
        .filter(|e| e["file"]["path"] == other.as_str())
        .collect();
    assert!(
        reported.is_empty(),
        "unwatched reads reported: {reported:#?}"
    );
}
