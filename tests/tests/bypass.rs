//! The alert bypass suite: an alert (and a monitor) rule on exact paths
//! decides every write, chmod, chown, unlink and rename of a watched file
//! however the path is spelled or reached — `..`, `.`, `//`, a symlinked
//! directory (relative and absolute, also as a rename destination's
//! parent), a bind mount, a relative path from a cwd that was deleted and
//! re-created (as a symlink elsewhere), a chroot (absolute and relative
//! paths, an absolute symlink and `..` inside it), a hard link — and its
//! event names the file by its canonical path (or, for another name of
//! the same object, carries the watched name as an alias). `guardrail
//! rules test` on the recorded events decides the same events.
//!
//! Each spelling runs in a forked child that makes its syscalls directly
//! (no shell, no exec), so chroot and a deleted cwd need nothing inside
//! the jail and every call's result is checked.

use std::ffi::CString;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guardrail_tests::{cstr, is_marker, marker, rules_test, Agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Write,
    Chmod,
    Chown,
    Unlink,
    Rename,
}

const OPS: [Op; 5] = [Op::Write, Op::Chmod, Op::Chown, Op::Unlink, Op::Rename];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Chmod => "chmod",
            Op::Chown => "chown",
            Op::Unlink => "unlink",
            Op::Rename => "rename",
        }
    }

    /// The event's section, operation and the field naming the target.
    fn event(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Op::Write => ("file", "open", "path"),
            Op::Chmod => ("perm", "chmod", "path"),
            Op::Chown => ("perm", "chown", "path"),
            Op::Unlink => ("file", "unlink", "path"),
            Op::Rename => ("file", "rename", "new_path"),
        }
    }
}

/// What a child does before its operations.
enum Step {
    Chdir(CString),
    Chroot(CString),
    Rmdir(CString),
    Symlink(CString, CString),
}

/// One way of reaching d/prot: steps, then `spell(name)` names
/// d/prot/name from inside the child.
struct Spelling {
    name: &'static str,
    steps: Vec<Step>,
    spell: Box<dyn Fn(&str) -> String>,
    ops: &'static [Op],
    /// The event names another path of the same object (a hard link, a
    /// bind mount): the watched name must be among its aliases.
    other_name: Option<&'static str>,
}

fn c(s: impl AsRef<[u8]>) -> CString {
    CString::new(s.as_ref()).unwrap()
}

fn spellings(d: &Path) -> Vec<Spelling> {
    let ds = d.to_str().unwrap().to_string();
    let at = |p: &str| cstr(&d.join(p));
    let prefix =
        |p: String| -> Box<dyn Fn(&str) -> String> { Box::new(move |f| format!("{p}{f}")) };
    vec![
        Spelling {
            name: "dot-dot",
            steps: vec![Step::Chdir(at("sub"))],
            spell: prefix("../prot/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            name: "dot",
            steps: vec![Step::Chdir(at("."))],
            spell: prefix("./prot/./".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            name: "double-slash",
            steps: vec![],
            spell: prefix(format!("{ds}//prot//")),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            name: "symlinked-dir-relative",
            steps: vec![Step::Chdir(at("sub"))],
            spell: prefix("../elsewhere/link/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            // Also the symlinked parent of the rename's destination.
            name: "symlinked-dir-absolute",
            steps: vec![],
            spell: prefix(format!("{ds}/elsewhere/link/")),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            name: "bind-mount",
            steps: vec![],
            spell: prefix(format!("{ds}/bind/")),
            ops: &OPS,
            other_name: Some("bind"),
        },
        Spelling {
            // The cwd is removed and its path re-created as a symlink to
            // d/elsewhere/deep: `..` of the process's (deleted) cwd is d,
            // `..` of the new path is d/elsewhere, which has a prot too.
            name: "deleted-cwd",
            steps: vec![
                Step::Chdir(at("work")),
                Step::Rmdir(at("work")),
                Step::Symlink(at("elsewhere/deep"), at("work")),
            ],
            spell: prefix("../prot/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            // Inside the chroot, /prot is d/prot.
            name: "chroot",
            steps: vec![Step::Chroot(at(".")), Step::Chdir(c("/"))],
            spell: prefix("/prot/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            name: "chroot-relative",
            steps: vec![Step::Chroot(at(".")), Step::Chdir(c("/sub"))],
            spell: prefix("../prot/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            // d/sub/jail is an absolute symlink to /prot: inside the
            // chroot it starts at the chroot's root (d/prot), not the
            // host's (where /prot does not exist).
            name: "chroot-absolute-symlink",
            steps: vec![Step::Chroot(at(".")), Step::Chdir(c("/sub"))],
            spell: prefix("jail/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            // `..` stops at the chroot's root, as the kernel stops it.
            name: "chroot-above-root",
            steps: vec![Step::Chroot(at(".")), Step::Chdir(c("/sub"))],
            spell: prefix("../../../../../../../../prot/".into()),
            ops: &OPS,
            other_name: None,
        },
        Spelling {
            // Unlinking or renaming over another name of a file leaves the
            // watched name and its content as they were: only the calls
            // that change the object are the watched file's.
            name: "hard-link",
            steps: vec![],
            spell: prefix(format!("{ds}/hard/")),
            ops: &[Op::Write, Op::Chmod, Op::Chown],
            other_name: Some("hard"),
        },
    ]
}

/// The watched file of spelling `s` and operation `op`.
fn file_name(s: &str, op: Op) -> String {
    format!("{s}-{}", op.name())
}

/// d/prot holds every watched file and each rename's source; d/sub is a
/// sibling to climb out of; d/elsewhere/link points at d/prot;
/// d/elsewhere/prot is a decoy; d/hard holds hard links of the files;
/// d/bind is where d/prot is bind-mounted.
fn layout(d: &Path) {
    for dir in [
        "prot",
        "sub",
        "elsewhere/deep",
        "elsewhere/prot",
        "hard",
        "bind",
        "work",
    ] {
        std::fs::create_dir_all(d.join(dir)).unwrap();
    }
    symlink(d.join("prot"), d.join("elsewhere/link")).unwrap();
    symlink("/prot", d.join("sub/jail")).unwrap();
    for s in spellings(d) {
        for &op in OPS.iter() {
            let f = file_name(s.name, op);
            std::fs::write(d.join("prot").join(&f), b"original\n").unwrap();
            std::fs::write(d.join("prot").join(format!("src-{f}")), b"new\n").unwrap();
            // Decoys where a wrong resolution would land.
            std::fs::write(d.join("elsewhere/prot").join(&f), b"decoy\n").unwrap();
            if s.other_name == Some("hard") {
                std::fs::hard_link(d.join("prot").join(&f), d.join("hard").join(&f)).unwrap();
            }
        }
    }
}

/// Run spelling `s`'s operations in a forked child; its exit status is 0,
/// or 10 + the failing step, or 100 + the failing operation.
fn run_spelling(s: &Spelling) {
    let paths: Vec<(Op, CString, CString)> = s
        .ops
        .iter()
        .map(|&op| {
            let f = file_name(s.name, op);
            (op, c((s.spell)(&f)), c((s.spell)(&format!("src-{f}"))))
        })
        .collect();
    // SAFETY: the child makes only syscalls on memory prepared before the
    // fork, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe {
            for (i, step) in s.steps.iter().enumerate() {
                let rc = match step {
                    Step::Chdir(p) => libc::chdir(p.as_ptr()),
                    Step::Chroot(p) => libc::chroot(p.as_ptr()),
                    Step::Rmdir(p) => libc::rmdir(p.as_ptr()),
                    Step::Symlink(target, link) => libc::symlink(target.as_ptr(), link.as_ptr()),
                };
                if rc != 0 {
                    libc::_exit(10 + i as i32);
                }
            }
            for (i, (op, path, src)) in paths.iter().enumerate() {
                let ok = match op {
                    Op::Write => {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_APPEND);
                        fd >= 0 && libc::write(fd, b"x\n".as_ptr().cast(), 2) == 2 && {
                            libc::close(fd);
                            true
                        }
                    }
                    Op::Chmod => libc::chmod(path.as_ptr(), 0o600) == 0,
                    Op::Chown => libc::chown(path.as_ptr(), 0, 0) == 0,
                    Op::Unlink => libc::unlink(path.as_ptr()) == 0,
                    Op::Rename => libc::rename(src.as_ptr(), path.as_ptr()) == 0,
                };
                if !ok {
                    libc::_exit(100 + i as i32);
                }
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{}: the child's calls failed (status {:#x}: 10+ a step, 100+ an operation)",
        s.name,
        status
    );
}

fn rules(d: &Path, mode: &str) -> String {
    let targets: Vec<String> = spellings(d)
        .iter()
        .flat_map(|s| s.ops.iter().map(|&op| file_name(s.name, op)))
        .map(|f| format!("\"{}\"", d.join("prot").join(f).display()))
        .collect();
    format!(
        "[[rule]]\nid = \"guard\"\non = [\"file.write\", \"file.unlink\", \"file.rename\", \"perm.chmod\", \"perm.chown\"]\npath = [{}]\nmode = \"{mode}\"\n",
        targets.join(", ")
    )
}

/// Unmounts d/bind when dropped, also when the test fails.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &Path, to: &Path) -> BindMount {
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(ok.success(), "mount --bind");
        BindMount(to.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Run every spelling under an agent with the rule in `mode`; return the
/// tree and the events up to the end marker.
fn run(mode: &str) -> (tempfile::TempDir, PathBuf, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    layout(&d);
    let _bind = BindMount::new(&d.join("prot"), &d.join("bind"));
    let agent = Agent::start_with_config(&rules(&d, mode), &[]);
    for s in spellings(&d) {
        run_spelling(&s);
    }
    let done = marker(&d);
    std::fs::write(&done, b"").unwrap();
    let events = agent.collect_until(WAIT, |e| is_marker(e, &done));
    agent.stop();
    (dir, d, events)
}

/// Check that every operation of every spelling was decided, its event
/// naming the canonical path; return the number of decided events.
fn check_all(d: &Path, events: &[Value], mode: &str) -> usize {
    let mut failures = Vec::new();
    for s in spellings(d) {
        for &op in s.ops {
            let (section, event_op, field) = op.event();
            let target = d.join("prot").join(file_name(s.name, op));
            let target = target.to_str().unwrap();
            let reached = s
                .other_name
                .map(|via| d.join(via).join(file_name(s.name, op)));
            let names = |e: &Value| {
                let named = e[section][field].as_str();
                match &reached {
                    None => named == Some(target),
                    Some(other) => {
                        named == other.to_str()
                            && e[section]["aliases"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|x| x == target))
                    }
                }
            };
            let found = events.iter().find(|e| {
                e["kind"] == section
                    && e[section]["op"] == event_op
                    && e["result"]["ok"] == true
                    && names(e)
            });
            let Some(e) = found else {
                let near: Vec<String> = events
                    .iter()
                    .filter(|e| e["kind"] == section && e[section]["op"] == event_op)
                    .filter(|e| e.to_string().contains(&file_name(s.name, op)))
                    .map(|e| e[section].to_string())
                    .collect();
                failures.push(format!(
                    "{} {}: no event naming {target}; seen: {near:?}",
                    s.name,
                    op.name()
                ));
                continue;
            };
            if e["decision"]["rule"] != "guard" || e["decision"]["mode"] != mode {
                failures.push(format!(
                    "{} {}: not decided in {mode}: {}",
                    s.name,
                    op.name(),
                    e
                ));
            }
            let source = &e[section][format!("{field}_source")];
            if source != "kernel" && source != "agent" {
                failures.push(format!(
                    "{} {}: the path is not canonical ({field}_source {source}): {}",
                    s.name,
                    op.name(),
                    e[section]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    events
        .iter()
        .filter(|e| e["decision"]["rule"] == "guard")
        .count()
}

/// The recorded events replayed through the same rule decide the same
/// number of events.
fn check_replay(d: &Path, events: &[Value], mode: &str, live: usize) {
    let log = d.join("recorded.jsonl");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let candidate = d.join("candidate.toml");
    std::fs::write(&candidate, rules(d, mode)).unwrap();
    let report = rules_test(&candidate, &log);
    assert_eq!(report["rules"][0]["hits"], live, "{report:#}");
}

#[test]
fn an_alert_rule_decides_every_spelling_on_the_canonical_path() {
    let (_dir, d, events) = run("enforce");
    let live = check_all(&d, &events, "enforce");
    check_replay(&d, &events, "enforce", live);
    // Nothing was decided on the decoys a wrong resolution would name.
    let decoys = d.join("elsewhere/prot");
    assert!(
        !events.iter().any(|e| e["decision"]["rule"] == "guard"
            && e.to_string().contains(decoys.to_str().unwrap())),
        "a decision named a decoy"
    );
}

#[test]
fn a_monitor_rule_decides_every_spelling_on_the_canonical_path() {
    let (_dir, d, events) = run("monitor");
    let live = check_all(&d, &events, "monitor");
    check_replay(&d, &events, "monitor", live);
}
