//! Host integration tests: real probes, real programs, exact events.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{cstr, gettid, is_marker, marker, Agent, BoundedOutput};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn touch(path: &Path) {
    std::fs::write(path, b"").unwrap();
}

fn by_pid(events: &[Value], pid: u32) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["process"]["pid"] == pid)
        .collect()
}

#[test]
fn exec_reports_program_argv_cwd_and_parent() {
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let mut child = Command::new("/bin/echo")
        .args(["hello", "two words", "--flag=x"])
        .current_dir(&cwd)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let events = agent.collect_until(WAIT, |e| e["kind"] == "exec" && e["process"]["pid"] == pid);
    let exec = events.last().unwrap();
    assert_eq!(exec["syscall"], "execve");
    // Named canonically (on merged-/usr systems /bin is a symlink), as the
    // kernel mapped it; the spelling is kept.
    let real = std::fs::canonicalize("/bin/echo").unwrap();
    assert_eq!(exec["exec"]["path"], real.to_str().unwrap());
    assert_eq!(exec["exec"]["path_source"], "kernel");
    if real != Path::new("/bin/echo") {
        assert_eq!(exec["exec"]["raw_path"], "/bin/echo");
    }
    assert_eq!(
        exec["exec"]["argv"],
        json!(["/bin/echo", "hello", "two words", "--flag=x"])
    );
    assert_eq!(exec["exec"]["argv_truncated"], false);
    assert_eq!(exec["exec"]["cwd"], cwd.to_str().unwrap());
    assert_eq!(exec["result"], json!({"ok": true, "ret": 0, "errno": null}));
    assert_eq!(exec["process"]["exe"], real.to_str().unwrap());
    assert_eq!(exec["process"]["ppid"], std::process::id());
    assert_eq!(exec["process"]["uid"], 0);
    assert_eq!(exec["process"]["comm"], "echo");
    assert!(exec["time"].as_str().unwrap().ends_with('Z'));
    agent.stop();
}

/// A program run from memory ("fileless" exec) is reported as the memory
/// file the kernel runs, not as "/" or the /proc path it was named by.
#[test]
fn exec_from_memory_names_the_memory_file() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    let agent = Agent::start(&[]);
    // SAFETY: a valid NUL-terminated name; the fd is owned by the File.
    let mut memfd = unsafe {
        let fd = libc::memfd_create(c"payload".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        std::fs::File::from_raw_fd(fd)
    };
    memfd
        .write_all(&std::fs::read("/usr/bin/true").unwrap())
        .unwrap();
    // Run it from a read-only descriptor: kernels before 6.11 refuse to
    // run a file that is open for writing.
    let ro = std::fs::File::open(format!("/proc/self/fd/{}", memfd.as_raw_fd())).unwrap();
    drop(memfd);
    let mut child = Command::new(format!("/proc/self/fd/{}", ro.as_raw_fd()))
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let events = agent.collect_until(WAIT, |e| e["kind"] == "exec" && e["process"]["pid"] == pid);
    let exec = events.last().unwrap();
    let exe = exec["process"]["exe"].as_str().unwrap();
    assert!(exe.starts_with("/memfd:payload"), "{exec}");
    agent.stop();
}

#[test]
fn failed_exec_reports_errno_and_the_path_tried() {
    let agent = Agent::start(&[]);
    let missing = format!("/nonexistent-{}/prog", std::process::id());
    assert!(Command::new(&missing).spawn().is_err());
    let events = agent.collect_until(WAIT, |e| {
        e["kind"] == "exec" && e["exec"]["path"] == *missing
    });
    let exec = events.last().unwrap();
    assert_eq!(exec["result"]["ok"], false);
    assert_eq!(exec["result"]["errno"], "ENOENT");
    assert_eq!(exec["exec"]["argv_unavailable"], true);
}

/// A shell that exits at once: paths must still come out absolute, which
/// only works because the probes resolve the cwd in the kernel.
#[test]
fn short_lived_shell_file_ops_have_absolute_paths() {
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let done = marker(&d);
    let script = format!(
        "cd {d} && echo x > a && mv a b && ln b c && ln -s b d && truncate -s 0 b && rm b c d && : > {done}",
        d = d.display(),
        done = done.display()
    );
    let status = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    let at = |name: &str| d.join(name).to_str().unwrap().to_string();
    let files: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "file" && e.to_string().contains(d.to_str().unwrap()))
        .collect();
    let find = |op: &str, path: &str| {
        files
            .iter()
            .find(|e| e["file"]["op"] == op && e["file"]["path"] == path)
            .unwrap_or_else(|| panic!("no {op} of {path} in {files:#?}"))
    };
    let open = find("open", &at("a"));
    assert_eq!(
        open["file"]["flags"],
        json!(["write", "create", "truncate"])
    );
    assert_eq!(open["file"]["raw_path"], "a");
    assert_eq!(open["file"]["resolved"], true);
    assert_eq!(find("rename", &at("a"))["file"]["new_path"], at("b"));
    assert_eq!(find("link", &at("b"))["file"]["new_path"], at("c"));
    assert_eq!(find("symlink", &at("d"))["file"]["target"], "b");
    assert_eq!(find("truncate", &at("b"))["file"]["length"], 0);
    for name in ["b", "c", "d"] {
        let unlink = find("unlink", &at(name));
        assert_eq!(unlink["result"]["ok"], true);
        assert!(unlink["process"]["exe"].as_str().unwrap().ends_with("/rm"));
    }
}

/// `*at` calls relative to a directory fd, from this (live) process.
#[test]
fn at_calls_relative_to_a_dirfd() {
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let tid = gettid();
    // SAFETY: plain syscalls on paths and fds this test owns.
    unsafe {
        let dfd = libc::open(cstr(&sub).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(dfd >= 0);
        let fd = libc::openat(dfd, c"x".as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o640);
        assert!(fd >= 0);
        assert_eq!(libc::fchmodat(dfd, c"x".as_ptr(), 0o4755, 0), 0);
        assert_eq!(libc::fchownat(dfd, c"x".as_ptr(), 1000, u32::MAX, 0), 0);
        assert_eq!(libc::fchmod(fd, 0o2777), 0);
        assert_eq!(libc::renameat(dfd, c"x".as_ptr(), dfd, c"y".as_ptr()), 0);
        assert_eq!(libc::unlinkat(dfd, c"y".as_ptr(), 0), 0);
        assert_eq!(libc::unlinkat(dfd, c"never-existed".as_ptr(), 0), -1);
        libc::close(fd);
        libc::close(dfd);
    }
    let done = marker(&d);
    touch(&done);
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["process"]["tid"] == tid)
        .collect();
    let x = sub.join("x").to_str().unwrap().to_string();
    let y = sub.join("y").to_str().unwrap().to_string();
    let open = mine
        .iter()
        .find(|e| e["file"]["op"] == "open" && e["file"]["path"] == x)
        .expect("open");
    assert_eq!(open["syscall"], "openat");
    assert_eq!(open["file"]["mode"], "0640");
    let chmods: Vec<&&Value> = mine.iter().filter(|e| e["perm"]["op"] == "chmod").collect();
    assert_eq!(chmods.len(), 2, "{chmods:#?}");
    assert_eq!(chmods[0]["perm"]["path"], x);
    assert_eq!(chmods[0]["perm"]["mode"], "4755");
    assert_eq!(chmods[0]["perm"]["mode_bits"], json!(["setuid"]));
    // fchmod names only an fd: the probes resolved it.
    assert_eq!(chmods[1]["syscall"], "fchmod");
    assert_eq!(chmods[1]["perm"]["path"], x);
    assert_eq!(
        chmods[1]["perm"]["mode_bits"],
        json!(["setgid", "world_writable"])
    );
    let chown = mine
        .iter()
        .find(|e| e["perm"]["op"] == "chown")
        .expect("chown");
    assert_eq!(chown["perm"]["owner"], json!({"uid": 1000, "gid": null}));
    assert_eq!(chown["perm"]["path"], x);
    let rename = mine
        .iter()
        .find(|e| e["file"]["op"] == "rename")
        .expect("rename");
    assert_eq!(rename["file"]["path"], x);
    assert_eq!(rename["file"]["new_path"], y);
    let unlinks: Vec<&&Value> = mine
        .iter()
        .filter(|e| e["file"]["op"] == "unlink")
        .collect();
    assert_eq!(unlinks[0]["file"]["path"], y);
    assert_eq!(unlinks[0]["result"]["ok"], true);
    assert_eq!(unlinks[1]["result"]["errno"], "ENOENT");
}

/// Credentials change in a forked child: old and new ids are reported, and
/// regaining root through the saved uid is flagged.
#[test]
fn setuid_family_reports_old_and_new_ids() {
    let agent = Agent::start(&[]);
    // SAFETY: the child calls only async-signal-safe functions, then _exit.
    let pid = unsafe {
        match libc::fork() {
            0 => {
                let ok = libc::setresgid(1000, 1000, 1000) == 0
                    && libc::setresuid(1000, 1000, 0) == 0
                    && libc::setresuid(u32::MAX, 0, u32::MAX) == 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
            pid => pid,
        }
    };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0, "the child's setresuid calls failed");
    let pid = pid as u32;
    let events = agent.collect_until(WAIT, |e| {
        e["process"]["pid"] == pid && e["perm"]["ids"]["requested"] == json!([-1, 0, -1])
    });
    let mine = by_pid(&events, pid);
    let gid = mine
        .iter()
        .find(|e| e["syscall"] == "setresgid")
        .expect("setresgid");
    assert_eq!(gid["perm"]["op"], "setgid");
    assert_eq!(gid["perm"]["ids"]["new"]["gid"], 1000);
    let drop = mine
        .iter()
        .find(|e| e["perm"]["ids"]["requested"] == json!([1000, 1000, 0]))
        .expect("first setresuid");
    assert_eq!(drop["perm"]["ids"]["old"]["uid"], 0);
    assert_eq!(drop["perm"]["ids"]["new"]["uid"], 1000);
    assert_eq!(drop["perm"]["ids"]["new"]["euid"], 1000);
    assert_eq!(drop["perm"]["ids"]["to_root"], false);
    let regain = mine.last().unwrap();
    assert_eq!(regain["perm"]["ids"]["old"]["euid"], 1000);
    assert_eq!(regain["perm"]["ids"]["new"]["euid"], 0);
    assert_eq!(regain["perm"]["ids"]["to_root"], true);
    assert_eq!(regain["result"]["ok"], true);
}

#[test]
fn capset_reports_the_new_sets() {
    let agent = Agent::start(&[]);
    // SAFETY: the child makes raw syscalls only, then _exit.
    let pid = unsafe {
        match libc::fork() {
            0 => {
                #[repr(C)]
                struct Header {
                    version: u32,
                    pid: i32,
                }
                let header = Header {
                    version: 0x2008_0522,
                    pid: 0,
                };
                // Keep only CAP_CHOWN (bit 0) and CAP_KILL (bit 5).
                let data: [u32; 6] = [0b100001, 0b100001, 0, 0, 0, 0];
                let rc = libc::syscall(libc::SYS_capset, &header, data.as_ptr());
                libc::_exit(if rc == 0 { 0 } else { 1 });
            }
            pid => pid,
        }
    };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0);
    let events = agent.collect_until(WAIT, |e| {
        e["process"]["pid"] == pid && e["syscall"] == "capset"
    });
    let caps = &events.last().unwrap()["perm"]["caps"];
    assert_eq!(caps["effective"], json!(["cap_chown", "cap_kill"]));
    assert_eq!(caps["permitted"], json!(["cap_chown", "cap_kill"]));
    assert_eq!(
        caps["gained"],
        json!([]),
        "dropping capabilities gains none"
    );
}

#[test]
fn read_only_opens_are_filtered_in_the_kernel_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let file = d.join("readme");
    touch(&file);
    for (flags, expect) in [(&[][..], false), (&["--capture-read-opens"][..], true)] {
        let agent = Agent::start(flags);
        std::fs::read(&file).unwrap();
        let done = marker(&d);
        touch(&done);
        let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
        let seen = events.iter().any(|e| {
            e["file"]["path"] == file.to_str().unwrap()
                && e["file"]["flags"] == json!(["read", "cloexec"])
        });
        assert_eq!(seen, expect, "read-only open captured with {flags:?}");
        std::fs::remove_file(&done).unwrap();
    }
}

#[test]
fn the_agent_does_not_report_itself() {
    let agent = Agent::start(&[]);
    let events = agent.collect_for(Duration::from_secs(2));
    let own = agent.pid();
    assert!(
        by_pid(&events, own).is_empty(),
        "events of the agent itself"
    );
    agent.stop();
}

#[test]
fn tail_and_status_over_the_socket() {
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let mut tail = Command::new(guardrail_tests::bin("guardrail"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(["tail", "--json", "--kind", "file", "-n", "1", "--path"])
        .arg(format!("{}/**", d.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The tail client must be subscribed before the event happens: retry
    // the write until it shows up.
    let target = d.join("tailed");
    let out = loop {
        touch(&target);
        std::thread::sleep(Duration::from_millis(200));
        if let Some(_status) = tail.try_wait().unwrap() {
            break tail.wait_with_output().unwrap();
        }
    };
    assert!(out.status.success());
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["kind"], "file");
    assert_eq!(line["file"]["path"], target.to_str().unwrap());

    let status = Command::new(guardrail_tests::bin("guardrail"))
        .arg("--socket")
        .arg(&agent.socket)
        .args(["status", "--json"])
        .bounded_output()
        .unwrap();
    assert!(status.status.success());
    let s: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["pid"], agent.pid());
    assert_eq!(s["capabilities"]["tracepoints"], true);
    let attached = s["tracepoints_attached"].as_u64().unwrap();
    match std::env::var("GUARDRAIL_TEST_SYSCALL_PROBES").as_deref() {
        // sys_enter, sys_exit and sched_process_exec carry every syscall.
        Ok("raw") => {
            assert_eq!(s["capabilities"]["syscall_probes"], "raw", "{s}");
            assert!(attached >= 3, "{s}");
        }
        // Two per watched syscall.
        _ => assert!(attached >= 60, "{s}"),
    }
    assert!(s["events_total"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["lost_total"], 0);
    agent.stop();
}

#[test]
fn control_socket_is_root_only() {
    let agent = Agent::start(&[]);
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
