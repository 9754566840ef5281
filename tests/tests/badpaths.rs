//! Hostile names: a newline in a name, bytes that are not UTF-8 (and a
//! valid name that spells like their escape), components of 255 and
//! 4096 bytes, trees deeper than the probes walk and longer than
//! PATH_MAX. Each event names the file whole, or says it could not (cut,
//! unresolved) — never a wrong path that looks right.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guardrail_tests::{cstr, is_marker, marker, Agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn c(bytes: &[u8]) -> CString {
    CString::new(bytes).unwrap()
}

/// Open `name` in directory `dir` for writing (creating it) and chmod
/// it, both relative to the directory's fd; return whether each worked.
fn write_and_chmod(dir: i32, name: &[u8]) -> (bool, bool) {
    let n = c(name);
    // SAFETY: valid fd and NUL-terminated names.
    unsafe {
        let fd = libc::openat(dir, n.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
        let wrote = fd >= 0;
        if wrote {
            libc::close(fd);
        }
        let chmod = libc::fchmodat(dir, n.as_ptr(), 0o600, 0) == 0;
        (wrote, chmod)
    }
}

fn open_dir(path: &Path) -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(cstr(path).as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open {}", path.display());
    fd
}

/// Make `depth` nested directories named `component` under `top`; return
/// an fd of the deepest and its path's length.
fn deep_tree(top: &Path, component: &[u8], depth: usize) -> (i32, usize) {
    let name = c(component);
    let mut fd = open_dir(top);
    for _ in 0..depth {
        // SAFETY: valid fds and a NUL-terminated name.
        unsafe {
            assert_eq!(libc::mkdirat(fd, name.as_ptr(), 0o755), 0, "mkdirat");
            let next = libc::openat(fd, name.as_ptr(), libc::O_PATH | libc::O_DIRECTORY);
            assert!(next >= 0);
            libc::close(fd);
            fd = next;
        }
    }
    (fd, top.as_os_str().len() + depth * (component.len() + 1))
}

/// The events of operation `op` (`open` or `chmod`) whose raw or
/// canonical path ends with `name`.
fn events_on<'a>(events: &'a [Value], op: &str, name: &str) -> Vec<&'a Value> {
    let section = if op == "chmod" { "perm" } else { "file" };
    events
        .iter()
        .filter(|e| e[section]["op"] == op)
        .filter(|e| {
            [&e[section]["path"], &e[section]["raw_path"]]
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.ends_with(name)))
        })
        .collect()
}

struct Run {
    _dir: tempfile::TempDir,
    d: PathBuf,
    events: Vec<Value>,
}

fn run(work: impl FnOnce(&Path)) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let agent = Agent::start(&[]);
    work(&d);
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    agent.stop();
    Run {
        _dir: dir,
        d,
        events,
    }
}

/// The one event of `op` on `name`, which must name `expected` whole.
fn assert_named(run: &Run, op: &str, name: &str, expected: &str) {
    let found = events_on(&run.events, op, name);
    let section = if op == "chmod" { "perm" } else { "file" };
    assert!(
        found.iter().any(|e| e[section]["path"] == expected),
        "{op} on {name:?}: no event naming {expected:?}; events: {found:#?}"
    );
    for e in found {
        let path = e[section]["path"].as_str().unwrap();
        assert!(
            !path.starts_with('/') || path == expected,
            "{op}: an absolute path that is not the file's: {path:?} (want {expected:?})"
        );
    }
}

#[test]
fn a_newline_in_a_name_arrives_whole() {
    let run = run(|d| {
        let fd = open_dir(d);
        assert_eq!(write_and_chmod(fd, b"new\nline.conf"), (true, true));
    });
    let expected = format!("{}/new\nline.conf", run.d.display());
    assert_named(&run, "open", "new\nline.conf", &expected);
    assert_named(&run, "chmod", "new\nline.conf", &expected);
}

#[test]
fn bytes_that_are_not_utf8_are_escaped_and_never_confused_with_a_name_that_spells_the_escape() {
    let run = run(|d| {
        let fd = open_dir(d);
        assert_eq!(write_and_chmod(fd, b"bad\xff.conf"), (true, true));
        // A valid name that spells what the escape of the one above looks
        // like: another file, so another path.
        assert_eq!(write_and_chmod(fd, b"bad\\xff.conf"), (true, true));
    });
    let d = run.d.display().to_string();
    let invalid = format!("{d}/bad\\xff.conf");
    let spelled = format!("{d}/bad\\\\xff.conf");
    for op in ["open", "chmod"] {
        let section = if op == "chmod" { "perm" } else { "file" };
        let paths: Vec<&str> = events_on(&run.events, op, "xff.conf")
            .iter()
            .filter_map(|e| e[section]["path"].as_str())
            .collect();
        assert!(paths.contains(&invalid.as_str()), "{op}: {paths:?}");
        assert!(paths.contains(&spelled.as_str()), "{op}: {paths:?}");
    }
}

#[test]
fn long_components_arrive_whole_or_flagged_as_cut() {
    let longest = vec![b'n'; 255];
    let too_long = vec![b'x'; 4096];
    let run = run(|d| {
        let fd = open_dir(d);
        assert_eq!(write_and_chmod(fd, &longest), (true, true));
        // Refused by the kernel (ENAMETOOLONG): still reported, cut and
        // flagged as cut.
        assert_eq!(write_and_chmod(fd, &too_long), (false, false));
    });
    let longest = String::from_utf8(longest).unwrap();
    let expected = format!("{}/{longest}", run.d.display());
    assert_named(&run, "open", &longest, &expected);
    assert_named(&run, "chmod", &longest, &expected);
    for (op, section) in [("open", "file"), ("chmod", "perm")] {
        let cut: Vec<&Value> = run
            .events
            .iter()
            .filter(|e| e[section]["op"] == op && e["result"]["errno"] == "ENAMETOOLONG")
            .filter(|e| {
                e[section]["raw_path"]
                    .as_str()
                    .or(e[section]["path"].as_str())
                    .is_some_and(|p| p.starts_with("xxxx"))
            })
            .collect();
        assert!(!cut.is_empty(), "{op}: no event for the 4096-byte name");
        for e in cut {
            let whole = e[section]["raw_path"]
                .as_str()
                .or(e[section]["path"].as_str())
                .unwrap()
                .len()
                == 4096;
            let flagged = e[section]["truncated"]
                .as_array()
                .is_some_and(|t| t.iter().any(|f| f == "path"));
            assert!(whole || flagged, "{op}: cut but not flagged: {e:#}");
        }
    }
}

#[test]
fn deep_trees_are_named_whole_or_said_to_be_unresolved() {
    // 60 levels: deeper than the probes walk (40 components), well within
    // PATH_MAX. 30 levels of 200 bytes: longer than PATH_MAX.
    let mut expect_shallow = String::new();
    let run = run(|d| {
        let (fd, _) = deep_tree(d, b"a", 60);
        assert_eq!(write_and_chmod(fd, b"deep-f"), (true, true));
        let (fd, len) = deep_tree(d, &[b'b'; 200], 30);
        assert!(len > 4096);
        assert_eq!(write_and_chmod(fd, b"long-f"), (true, true));
        expect_shallow = format!("{}{}/deep-f", d.display(), "/a".repeat(60));
    });
    assert_named(&run, "open", "deep-f", &expect_shallow);
    assert_named(&run, "chmod", "deep-f", &expect_shallow);
    let long_expected = format!(
        "{}{}/long-f",
        run.d.display(),
        format!("/{}", "b".repeat(200)).repeat(30)
    );
    for (op, section) in [("open", "file"), ("chmod", "perm")] {
        let found = events_on(&run.events, op, "long-f");
        assert!(!found.is_empty(), "{op}: no event for the long tree");
        for e in found {
            // Whole, or relative as passed (an unresolved path: no
            // path_source, `resolved: false` on file events).
            let path = e[section]["path"].as_str().unwrap();
            let unresolved = !path.starts_with('/')
                && e[section]["path_source"].is_null()
                && e[section]["resolved"] != true;
            assert!(
                path == long_expected || unresolved,
                "{op}: a path longer than PATH_MAX must be whole or flagged: {}",
                e[section]
            );
        }
    }
}
