//! Process identity at the moment of the event: in a tight loop, a forked
//! child writes (still running its parent's program), execs bash, which
//! writes, runs a dash child that writes, then execs another program and
//! exits. Every event must name the program its process ran when it made
//! the call — never null, never the image of a later exec — and so must
//! its ancestors.

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use guardrail_tests::{cstr, is_marker, marker, Agent};
use serde_json::Value;

const ROUNDS: usize = 300;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// One round: returns the child's pid.
fn round(d: &Path, i: usize) -> i32 {
    let pre = cstr(&d.join(format!("pre-{i}")));
    let script = c(&format!(
        "echo x > {d}/post-{i}; /usr/bin/dash -c 'echo x > {d}/post2-{i}'; exec /usr/bin/true",
        d = d.display()
    ));
    let bash = c("/usr/bin/bash");
    let dash_c = c("-c");
    let argv = [
        bash.as_ptr(),
        dash_c.as_ptr(),
        script.as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: the child makes only syscalls on memory prepared before the
    // fork, then execs or _exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let fd = libc::open(pre.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
            if fd < 0 {
                libc::_exit(3);
            }
            libc::close(fd);
            libc::execv(bash.as_ptr(), argv.as_ptr());
            libc::_exit(4);
        }
        pid
    }
}

fn ancestor_exes(e: &Value) -> Vec<Option<&str>> {
    e["process"]["ancestors"]
        .as_array()
        .map(|a| a.iter().map(|x| x["exe"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn every_event_names_the_program_its_process_ran_at_that_moment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();
    let me = me.to_str().unwrap();
    let agent = Agent::start(&[]);
    let pids: Vec<i32> = (0..ROUNDS).map(|i| round(&d, i)).collect();
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "round failed: {status:#x}"
        );
    }
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(120), |e| is_marker(e, &done));
    agent.stop();

    let mut failures = Vec::new();
    for i in 0..ROUNDS {
        // (file, its process's exe, the exes of its nearest ancestors)
        let expected: [(String, &str, Vec<&str>); 3] = [
            (format!("pre-{i}"), me, vec![me]),
            (format!("post-{i}"), "/usr/bin/bash", vec![me]),
            (
                format!("post2-{i}"),
                "/usr/bin/dash",
                vec!["/usr/bin/bash", me],
            ),
        ];
        for (name, exe, ancestors) in expected {
            let path = d.join(&name);
            let Some(e) = events
                .iter()
                .find(|e| e["file"]["op"] == "open" && e["file"]["path"] == path.to_str().unwrap())
            else {
                failures.push(format!("{name}: no event"));
                continue;
            };
            if e["process"]["exe"] != exe {
                failures.push(format!("{name}: exe {} (want {exe})", e["process"]["exe"]));
            }
            let got = ancestor_exes(e);
            if got.len() < ancestors.len()
                || got[..ancestors.len()]
                    .iter()
                    .zip(&ancestors)
                    .any(|(g, w)| *g != Some(*w))
            {
                failures.push(format!(
                    "{name}: ancestors {got:?} (want {ancestors:?} first)"
                ));
            }
            if e["process"]["id"].is_null() || e["process"]["parent_id"].is_null() {
                failures.push(format!("{name}: no process id: {}", e["process"]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} events wrong:\n{}",
        failures.len(),
        ROUNDS * 3,
        failures[..failures.len().min(40)].join("\n")
    );
}

/// A chain of cgroups under `top` named `component`, `depth` deep, made
/// with fds (its path may be longer than PATH_MAX): the fds, top first.
fn cgroup_chain(top: i32, component: &str, depth: usize) -> Vec<i32> {
    let name = c(component);
    let mut fds = vec![top];
    for _ in 0..depth {
        let at = *fds.last().unwrap();
        // SAFETY: a valid fd and a NUL-terminated name.
        unsafe {
            assert_eq!(libc::mkdirat(at, name.as_ptr(), 0o755), 0, "mkdirat");
            let fd = libc::openat(at, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(fd >= 0);
            fds.push(fd);
        }
    }
    fds
}

/// Remove a chain made by [`cgroup_chain`], deepest first.
fn remove_chain(fds: &[i32], component: &str) {
    let name = c(component);
    for pair in fds.windows(2).rev() {
        // SAFETY: valid fds and a NUL-terminated name.
        unsafe {
            libc::close(pair[1]);
            libc::unlinkat(pair[0], name.as_ptr(), libc::AT_REMOVEDIR);
        }
    }
}

/// The test's cgroups, removed (deepest first) when dropped, also when
/// the test fails.
struct Chains {
    top_path: String,
    top: i32,
    chains: Vec<(Vec<i32>, String)>,
}

impl Drop for Chains {
    fn drop(&mut self) {
        for (fds, component) in &self.chains {
            remove_chain(fds, component);
        }
        // SAFETY: closing our fd.
        unsafe { libc::close(self.top) };
        let _ = std::fs::remove_dir(&self.top_path);
    }
}

/// Fork a child that waits, is moved into the cgroup `cgroup_fd`, drops to
/// uid/gid 54321 (in no /etc/passwd) and creates `file`.
fn run_in_cgroup(cgroup_fd: i32, file: &Path) {
    let file = cstr(file);
    let mut pipe = [0i32; 2];
    // SAFETY: plain syscalls; the child touches only memory prepared
    // before the fork.
    unsafe {
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let mut b = 0u8;
            libc::read(pipe[0], (&mut b as *mut u8).cast(), 1);
            if libc::setresgid(54321, 54321, 54321) != 0
                || libc::setresuid(54321, 54321, 54321) != 0
            {
                libc::_exit(3);
            }
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
            libc::_exit(if fd >= 0 { 0 } else { 4 });
        }
        let procs = c("cgroup.procs");
        let fd = libc::openat(cgroup_fd, procs.as_ptr(), libc::O_WRONLY);
        assert!(fd >= 0, "cgroup.procs");
        let text = pid.to_string();
        assert_eq!(
            libc::write(fd, text.as_ptr().cast(), text.len()),
            text.len() as isize,
            "moving the child into the cgroup"
        );
        libc::close(fd);
        libc::write(pipe[1], b"go".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}

#[test]
fn a_4k_cgroup_path_and_an_unlisted_user_are_shown_honestly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Where cgroup v2 is mounted (/sys/fs/cgroup, or …/unified on a
    // hybrid host).
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = mountinfo
        .lines()
        .find(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, fs)| fs.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("a cgroup v2 mount")
        .to_string();
    let top_rel = format!("/guardrail-test-{}", std::process::id());
    let top_path = format!("{root}{top_rel}");
    std::fs::create_dir(&top_path).expect("a cgroup for the test");
    // SAFETY: a NUL-terminated path.
    let top = unsafe { libc::open(c(&top_path).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    // 4,020 bytes below the top: the whole path fits PATH_MAX. 4,400: it
    // does not, and cannot be named by a path at all.
    let fits = "f".repeat(200);
    let too_long = "g".repeat(219);
    let chains = Chains {
        top_path: top_path.clone(),
        top,
        chains: vec![
            (cgroup_chain(top, &fits, 20), fits.clone()),
            (cgroup_chain(top, &too_long, 20), too_long.clone()),
        ],
    };
    let agent = Agent::start(&[]);
    run_in_cgroup(*chains.chains[0].0.last().unwrap(), &d.join("in-fits"));
    run_in_cgroup(*chains.chains[1].0.last().unwrap(), &d.join("in-long"));
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(Duration::from_secs(60), |e| is_marker(e, &done));
    agent.stop();
    drop(chains);

    for (file, component) in [("in-fits", &fits), ("in-long", &too_long)] {
        let path = d.join(file);
        let e = events
            .iter()
            .find(|e| e["file"]["op"] == "open" && e["file"]["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("no event for {file}"));
        let p = &e["process"];
        assert_eq!(p["uid"], 54321, "{p:#}");
        assert!(
            p["user"].is_null(),
            "a uid no file lists has no name: {p:#}"
        );
        assert!(p["group"].is_null(), "{p:#}");
        let whole = format!("{top_rel}{}", format!("/{component}").repeat(20));
        let cgroup = &p["cgroup"];
        if file == "in-fits" {
            assert_eq!(cgroup, whole.as_str(), "a 4 KiB cgroup path arrives whole");
        } else {
            assert!(
                cgroup.is_null() || *cgroup == whole.as_str(),
                "a cgroup path longer than PATH_MAX is whole or unknown, never cut: {cgroup}"
            );
        }
        assert!(p["cgroup_id"].as_u64().is_some_and(|id| id > 0), "{p:#}");
        assert!(p["unit"].is_null(), "no unit in these paths: {p:#}");
    }
}
