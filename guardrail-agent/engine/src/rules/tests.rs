//! Rule engine tests: every matcher, precedence, windows, and the errors an
//! operator sees.

use std::path::Path;

use jiff::Timestamp;

use super::eval::{evaluate, Enforcement};
use super::users::Names;
use super::{compile_text, RuleSet};
use crate::event::*;

fn names() -> Names {
    Names::from_text(
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        "root:x:0:\nstaff:x:50:\n",
    )
}

fn rules(text: &str) -> RuleSet {
    compile_text(Path::new("/etc/guardrail/guardrail.toml"), text, names())
        .unwrap_or_else(|e| panic!("rules did not compile:\n{e}"))
}

fn errors(text: &str) -> String {
    compile_text(Path::new("/etc/g.toml"), text, names())
        .expect_err("rules should be refused")
        .to_string()
}

fn process(exe: &str, uid: u32) -> Process {
    Process {
        pid: 42,
        tid: 42,
        ppid: Some(1),
        uid,
        euid: uid,
        exe: Some(exe.into()),
        parent_exe: Some("/usr/bin/bash".into()),
        cgroup_id: 7,
        ..Default::default()
    }
}

fn ok() -> SyscallResult {
    SyscallResult {
        ok: true,
        ret: 0,
        errno: None,
    }
}

fn event(body: Body) -> Event {
    Event {
        seq: 1,
        time: "2026-11-27T12:00:00Z".into(),
        ktime_ns: 0,
        via: None,
        body,
        decision: None,
        redacted: vec![],
    }
}

fn open(exe: &str, path: &str, flags: &[&str]) -> Event {
    event(Body::File {
        syscall: "openat".into(),
        process: process(exe, 0),
        result: ok(),
        file: FileDetails {
            op: "open".into(),
            path: Some(path.into()),
            resolved: true,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    })
}

fn rename(from: &str, to: &str) -> Event {
    event(Body::File {
        syscall: "rename".into(),
        process: process("/usr/bin/mv", 0),
        result: ok(),
        file: FileDetails {
            op: "rename".into(),
            path: Some(from.into()),
            new_path: Some(to.into()),
            resolved: true,
            ..Default::default()
        },
    })
}

fn chmod(path: &str, mode: &str) -> Event {
    event(Body::Perm {
        syscall: "fchmodat".into(),
        process: process("/usr/bin/chmod", 1000),
        result: ok(),
        perm: PermDetails {
            op: "chmod".into(),
            path: Some(path.into()),
            mode: Some(mode.to_owned().into()),
            ..Default::default()
        },
    })
}

fn exec(exe: &str, argv: &[&str]) -> Event {
    event(Body::Exec {
        syscall: "execve".into(),
        process: process(exe, 1000),
        result: ok(),
        exec: ExecDetails {
            path: exe.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    })
}

fn setuid(to_root: bool) -> Event {
    event(Body::Perm {
        syscall: "setresuid".into(),
        process: process("/tmp/x", 0),
        result: ok(),
        perm: PermDetails {
            op: "setuid".into(),
            ids: Some(Box::new(IdChange {
                to_root,
                ..Default::default()
            })),
            ..Default::default()
        },
    })
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn decide(set: &RuleSet, e: &Event) -> Option<Decision> {
    decide_with(set, e, Enforcement::default())
}

/// The decision, checked against the unexplained one replay counts:
/// every test of the rules tests both.
fn decide_with(set: &RuleSet, e: &Event, enf: Enforcement) -> Option<Decision> {
    let decision = evaluate(set, e, at(&e.time), enf);
    let verdict = super::eval::decide(set, e, at(&e.time), enf);
    assert_eq!(
        verdict.map(|v| (set.rules[v.rule].id.as_str(), v.outcome)),
        decision.as_ref().map(|d| (d.rule.as_str(), d.outcome)),
        "decide and evaluate disagree on {e:?}"
    );
    // Replay reads the event's line in place: the same verdict.
    let line = serde_json::to_string(e).unwrap();
    let crate::scan::Scan::View(view) = crate::scan::read(line.as_bytes(), &mut Default::default())
    else {
        panic!("the scanner left {line} to serde");
    };
    let read = view
        .facts(None)
        .and_then(|facts| super::decide_facts(set, &facts, at(&e.time), enf));
    assert_eq!(
        read, verdict,
        "the line read in place is decided otherwise: {line}"
    );
    decision
}

const SHADOW: &str = r#"
[[rule]]
id = "shadow"
on = ["file.write", "file.rename"]
path = ["/etc/shadow"]
exe_not = ["/usr/bin/passwd"]
severity = "high"
"#;

#[test]
fn path_exe_not_and_kind_explain_the_decision() {
    let set = rules(SHADOW);
    let d = decide(&set, &open("/usr/bin/vi", "/etc/shadow", &["write"])).unwrap();
    assert_eq!(d.rule, "shadow");
    assert_eq!(d.outcome, Outcome::Alerted);
    assert_eq!(d.matched["on"], "file.write");
    assert_eq!(d.matched["path"], "/etc/shadow");
    assert_eq!(d.matched["exe_not"], "/usr/bin/vi");
    assert!(decide(&set, &open("/usr/bin/passwd", "/etc/shadow", &["write"])).is_none());
    assert!(
        decide(&set, &open("/usr/bin/vi", "/etc/shadow", &["read"])).is_none(),
        "a read is not a write"
    );
    assert!(decide(&set, &open("/usr/bin/vi", "/etc/passwd", &["write"])).is_none());
}

#[test]
fn rename_onto_a_protected_path_matches_its_destination() {
    let set = rules(SHADOW);
    let d = decide(&set, &rename("/tmp/evil", "/etc/shadow")).unwrap();
    assert_eq!(d.matched["path"], "/etc/shadow");
}

#[test]
fn subtree_includes_its_root_and_globs_do_not_cross_slashes() {
    let set = rules(
        r#"
[[rule]]
id = "nginx"
on = ["file.*"]
path = ["/etc/nginx/**"]
[[rule]]
id = "conf"
on = ["file.write"]
path = ["/etc/*.conf"]
"#,
    );
    assert!(decide(&set, &open("/x", "/etc/nginx/sites/a", &["write"])).is_some());
    assert!(decide(&set, &rename("/etc/nginx", "/tmp/n")).is_some());
    assert!(decide(&set, &open("/x", "/etc/nginxx", &["write"])).is_none());
    assert_eq!(
        decide(&set, &open("/x", "/etc/host.conf", &["write"]))
            .unwrap()
            .rule,
        "conf"
    );
    assert!(decide(&set, &open("/x", "/etc/sub/host.conf", &["write"])).is_none());
}

#[test]
fn mode_bits_and_masks() {
    let set = rules(
        r#"
[[rule]]
id = "suid"
on = ["perm.chmod"]
mode_set = ["setuid", "setgid"]
[[rule]]
id = "ww"
on = ["perm.chmod"]
mode_mask = "0002"
path = ["/etc/**"]
"#,
    );
    assert_eq!(decide(&set, &chmod("/tmp/x", "4755")).unwrap().rule, "suid");
    assert_eq!(
        decide(&set, &chmod("/tmp/x", "2755")).unwrap().matched["mode"],
        "2755"
    );
    assert!(decide(&set, &chmod("/tmp/x", "0755")).is_none());
    assert_eq!(decide(&set, &chmod("/etc/x", "0666")).unwrap().rule, "ww");
    assert!(decide(&set, &chmod("/etc/x", "0664")).is_none());
}

#[test]
fn users_by_name_and_negation() {
    let set = rules(
        r#"
[[rule]]
id = "alice-chmod"
on = ["perm.chmod"]
uid = ["alice"]
[[rule]]
id = "not-root-exec"
on = ["exec"]
uid_not = ["root"]
"#,
    );
    assert_eq!(
        decide(&set, &chmod("/x", "0644")).unwrap().matched["uid"],
        "1000"
    );
    assert!(decide(&set, &exec("/bin/ls", &["ls"])).is_some());
    let mut root_exec = exec("/bin/ls", &["ls"]);
    if let Body::Exec { process, .. } = &mut root_exec.body {
        process.uid = 0;
    }
    assert!(decide(&set, &root_exec).is_none());
}

#[test]
fn argv_contains_and_matches() {
    let set = rules(
        r#"
[[rule]]
id = "curl-pipe"
on = ["exec"]
exe = ["/usr/bin/curl"]
argv_matches = ["https?://\\S+\\s.*-o\\s*/tmp/"]
[[rule]]
id = "nc-listen"
on = ["exec"]
argv_contains = ["-l"]
exe = ["/usr/bin/nc*"]
"#,
    );
    assert!(decide(
        &set,
        &exec("/usr/bin/curl", &["curl", "http://x/y", "-o", "/tmp/z"])
    )
    .is_some());
    assert!(decide(&set, &exec("/usr/bin/curl", &["curl", "http://x/y"])).is_none());
    assert_eq!(
        decide(&set, &exec("/usr/bin/ncat", &["nc", "-lvp", "4444"]))
            .unwrap()
            .rule,
        "nc-listen"
    );
}

#[test]
fn credential_change_to_root() {
    let set = rules("[[rule]]\nid = \"root\"\non = [\"perm.setuid\"]\nto_root = true\n");
    assert!(decide(&set, &setuid(true)).is_some());
    assert!(decide(&set, &setuid(false)).is_none());
}

#[test]
fn windows_gate_rules_by_the_events_time() {
    let set = rules(
        r#"
[[window]]
name = "maintenance"
days = ["fri"]
start = "11:00"
end = "13:00"
tz = "UTC"
[[rule]]
id = "outside"
on = ["file.write"]
path = ["/etc/nginx/**"]
outside_window = ["maintenance"]
[[rule]]
id = "inside"
on = ["file.write"]
path = ["/etc/nginx/**"]
in_window = ["maintenance"]
"#,
    );
    // 2026-11-27 is a Friday; 12:00 is inside.
    let mut e = open("/x", "/etc/nginx/a", &["write"]);
    assert_eq!(decide(&set, &e).unwrap().rule, "inside");
    e.time = "2026-11-27T13:00:00Z".into();
    assert_eq!(decide(&set, &e).unwrap().rule, "outside");
}

#[test]
fn strongest_action_wins_and_others_are_listed() {
    let set = rules(
        r#"
[[rule]]
id = "log-etc"
on = ["file.write"]
path = ["/etc/**"]
[[rule]]
id = "deny-shadow"
on = ["file.write"]
path = ["/etc/shadow"]
action = "deny"
fallback = "kill"
"#,
    );
    let e = open("/x", "/etc/shadow", &["write"]);
    let d = decide(&set, &e).unwrap();
    assert_eq!(d.rule, "deny-shadow");
    assert_eq!(d.also, ["log-etc"]);
    // No kernel enforcement on this host: the fallback acts, and says so.
    assert_eq!(d.outcome, Outcome::Alerted);
    assert_eq!(d.fallback.map(|f| f.to_string()).as_deref(), Some("alert"));
    // With the kernel able to kill: the kill fallback.
    let d = decide_with(
        &set,
        &e,
        Enforcement {
            deny: false,
            kill: true,
        },
    )
    .unwrap();
    assert_eq!(
        (
            d.outcome.as_str(),
            d.fallback.map(|f| f.to_string()).as_deref()
        ),
        ("killed", Some("kill"))
    );
    // With BPF-LSM: denied.
    let d = decide_with(
        &set,
        &e,
        Enforcement {
            deny: true,
            kill: true,
        },
    )
    .unwrap();
    assert_eq!(
        (
            d.outcome.as_str(),
            d.fallback.map(|f| f.to_string()).as_deref()
        ),
        ("denied", None)
    );
}

#[test]
fn monitor_mode_says_what_would_have_happened() {
    let set = rules(
        "[[rule]]\nid = \"k\"\non = [\"exec\"]\nexe = [\"/tmp/**\"]\naction = \"kill\"\nmode = \"monitor\"\n",
    );
    let d = decide_with(
        &set,
        &exec("/tmp/x", &["x"]),
        Enforcement {
            deny: true,
            kill: true,
        },
    )
    .unwrap();
    assert_eq!(d.outcome, Outcome::WouldKill);
}

#[test]
fn allow_rules_exempt_only_the_rules_they_name() {
    let set = rules(
        r#"
[[rule]]
id = "etc-writes"
on = ["file.write"]
path = ["/etc/**"]
[[rule]]
id = "suid"
on = ["perm.chmod"]
mode_set = ["setuid"]
[[rule]]
id = "apt-may-write-etc"
on = ["file.write"]
exe = ["/usr/bin/apt"]
action = "allow"
exempts = ["etc-writes"]
"#,
    );
    let d = decide(
        &set,
        &open("/usr/bin/apt", "/etc/apt/sources.list", &["write"]),
    )
    .unwrap();
    assert_eq!(d.outcome, Outcome::Allowed);
    assert_eq!(d.rule, "apt-may-write-etc");
    assert_eq!(d.exempted, ["etc-writes"]);
    assert_eq!(
        decide(&set, &open("/usr/bin/vi", "/etc/x", &["write"]))
            .unwrap()
            .rule,
        "etc-writes"
    );
}

#[test]
fn hit_counts_follow_decisions() {
    let set = rules(SHADOW);
    for _ in 0..3 {
        decide(&set, &open("/usr/bin/vi", "/etc/shadow", &["write"]));
    }
    assert_eq!(
        set.rules[0].hits.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn errors_name_file_line_column_and_hint() {
    let e = errors("[[rule]]\nid = \"a\"\non = [\"file.wirte\"]\n");
    assert_eq!(
        e,
        "/etc/g.toml:3:6: unknown event kind \"file.wirte\" (hint: did you mean \"file.write\"?)"
    );
    let e = errors("[[rule]]\nid = \"a\"\non = [\"exec\"]\npathh = [\"/x\"]\n");
    assert!(
        e.starts_with("/etc/g.toml:4:1: unknown field `pathh`"),
        "{e}"
    );
    let e =
        errors("[[rule]]\nid = \"a\"\non = [\"exec\"]\n[[rule]]\nid = \"a\"\non = [\"exec\"]\n");
    assert_eq!(e, "/etc/g.toml:5:6: rule id \"a\" is used twice (hint: the first rule with this id is at /etc/g.toml:2)");
    let e = errors("[[rule]]\nid = \"a\"\non = [\"exec\"]\nuid = [\"mallory\"]\n");
    assert!(e.contains("4:7: uid: no user named \"mallory\""), "{e}");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let e = errors("[[rule]]\nid = \"a\"\non = [\"bogus\"]\n[[rule]]\nid = \"b\"\non = [\"exec\"]\nin_window = [\"nope\"]\n");
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn unreachable_rules_are_refused() {
    let e = errors("[[rule]]\nid = \"a\"\non = [\"exec\"]\nmode_set = [\"setuid\"]\n");
    assert!(e.contains("mode_set applies only to perm.chmod"), "{e}");
}

#[test]
fn kill_and_deny_refuse_matchers_the_kernel_cannot_evaluate() {
    let e = errors(
        "[[rule]]\nid = \"a\"\non = [\"exec\"]\nargv_contains = [\"-x\"]\naction = \"kill\"\n",
    );
    assert!(
        e.contains("a kill rule: matcher `argv_contains` cannot be evaluated in the kernel"),
        "{e}"
    );
    let e = errors("[[rule]]\nid = \"a\"\non = [\"file.write\"]\npath = [\"/etc/*.conf\"]\naction = \"deny\"\n");
    assert!(e.contains("is a glob"), "{e}");
    // The same matchers are fine for alerts.
    rules("[[rule]]\nid = \"a\"\non = [\"file.write\"]\npath = [\"/etc/*.conf\"]\n");
}

#[test]
fn allow_rules_must_name_what_they_exempt() {
    let e = errors("[[rule]]\nid = \"a\"\non = [\"exec\"]\naction = \"allow\"\n");
    assert!(e.contains("must name the rules it exempts"), "{e}");
    let e = errors(
        "[[rule]]\nid = \"a\"\non = [\"exec\"]\naction = \"allow\"\nexempts = [\"ghost\"]\n",
    );
    assert!(e.contains("exempts names no rule \"ghost\""), "{e}");
}

#[test]
fn window_errors() {
    let e = errors(
        "[[window]]\nname = \"w\"\nstart = \"2am\"\nend = \"04:00\"\ntz = \"Mars/Olympus\"\n",
    );
    assert!(e.contains("start \"2am\" is not a time"), "{e}");
    assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
}

#[test]
fn includes_are_read_relative_to_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    std::fs::write(
        dir.path().join("rules.d/10-a.toml"),
        "[[rule]]\nid = \"a\"\non = [\"exec\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.d/20-b.toml"),
        "[[rule]]\nid = \"b\"\non = [\"exec\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rules.d/bad.toml"), "[agent]\n").unwrap();
    let main = dir.path().join("guardrail.toml");
    std::fs::write(&main, "include = [\"rules.d/*.toml\"]\n").unwrap();
    let err = super::load_rules(&main, names()).unwrap_err().to_string();
    assert!(err.contains("bad.toml:1:2: unknown field `agent`"), "{err}");
    std::fs::remove_file(dir.path().join("rules.d/bad.toml")).unwrap();
    let set = super::load_rules(&main, names()).unwrap();
    let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(set.files.len(), 3);
}

fn with_process(mut e: Event, f: impl FnOnce(&mut Process)) -> Event {
    match &mut e.body {
        Body::Exec { process, .. }
        | Body::File { process, .. }
        | Body::Perm { process, .. }
        | Body::Uring { process, .. } => f(process),
        Body::Loss { .. } => {}
    }
    e
}

#[test]
fn effective_group_login_ids_and_cgroup() {
    let set = rules(
        r#"
[[rule]]
id = "ids"
on = ["exec"]
euid = [0]
gid = ["staff"]
auid_not = [1000]
cgroup_id = [7]
"#,
    );
    let base = with_process(exec("/bin/ls", &["ls"]), |p| {
        p.euid = 0;
        p.gid = 50;
        p.auid = Some(1001);
    });
    let d = decide(&set, &base).unwrap();
    assert_eq!(
        (d.matched["euid"].as_str(), d.matched["gid"].as_str()),
        ("0", "50")
    );
    assert!(decide(&set, &with_process(base.clone(), |p| p.auid = Some(1000))).is_none());
    assert!(decide(&set, &with_process(base.clone(), |p| p.gid = 51)).is_none());
    assert!(decide(&set, &with_process(base.clone(), |p| p.cgroup_id = 8)).is_none());
    assert!(decide(&set, &with_process(base, |p| p.euid = 1000)).is_none());
}

#[test]
fn parent_executable() {
    let set = rules("[[rule]]\nid = \"p\"\non = [\"exec\"]\nparent_exe = [\"/usr/bin/curl\"]\n");
    let e = with_process(exec("/bin/sh", &["sh"]), |p| {
        p.parent_exe = Some("/usr/bin/curl".into())
    });
    assert_eq!(
        decide(&set, &e).unwrap().matched["parent_exe"],
        "/usr/bin/curl"
    );
    assert!(
        decide(&set, &exec("/bin/sh", &["sh"])).is_none(),
        "parent is bash"
    );
}

fn descended_from<'a>(exes: &'a [&'a str]) -> impl Fn(&mut Process) + 'a {
    move |p: &mut Process| {
        p.ancestors = exes
            .iter()
            .enumerate()
            .map(|(i, e)| crate::event::Ancestor {
                pid: 100 + i as u32,
                id: None,
                exe: Some((*e).into()),
                script: None,
            })
            .collect()
    }
}

#[test]
fn ancestor_executables_judge_a_process_by_its_lineage() {
    let set = rules(
        "[[rule]]\nid = \"units\"\non = [\"exec\"]\nancestor_exe_not = [\"/usr/bin/dpkg\", \"/usr/bin/apt*\"]\n\n\
         [[rule]]\nid = \"under-sshd\"\non = [\"exec\"]\nexe = [\"/usr/bin/curl\"]\nancestor_exe = [\"/usr/sbin/sshd\"]\n",
    );
    // A maintainer script: sh run by dpkg run by apt — quiet.
    let maintainer = with_process(
        exec("/usr/bin/cp", &["cp"]),
        descended_from(&["/usr/bin/dash", "/usr/bin/dpkg", "/usr/bin/apt-get"]),
    );
    assert!(decide(&set, &maintainer).is_none());
    // The same program from a login shell — decided, with the lineage.
    let by_hand = with_process(
        exec("/usr/bin/cp", &["cp"]),
        descended_from(&[
            "/usr/bin/bash",
            "/usr/sbin/sshd",
            "/usr/lib/systemd/systemd",
        ]),
    );
    let d = decide(&set, &by_hand).unwrap();
    assert_eq!(d.rule, "units");
    assert_eq!(d.matched["ancestor_exe_not"], "systemd → sshd → bash → cp");
    // Any ancestor, not only the parent.
    let curl = with_process(
        exec("/usr/bin/curl", &["curl"]),
        descended_from(&["/usr/bin/bash", "/usr/sbin/sshd"]),
    );
    let d = decide(&set, &curl).unwrap();
    assert!(
        d.rule == "under-sshd" || d.also.contains(&"under-sshd".to_string()),
        "{d:?}"
    );
}

#[test]
fn units_and_containers_judge_a_process_by_its_service() {
    let set = rules(
        "[[rule]]\nid = \"web\"\non = [\"exec\"]\nunit = [\"nginx.service\"]\n\n\
         [[rule]]\nid = \"host-shells\"\non = [\"exec\"]\nexe = [\"/usr/bin/sh\"]\ncontainer = [\"none\"]\nunit_not = [\"session-*.scope\"]\n\n\
         [[rule]]\nid = \"in-containers\"\non = [\"exec\"]\nexe = [\"/usr/bin/curl\"]\ncontainer = [\"any\"]\n",
    );
    let in_unit = |exe: &str, unit: &str| {
        with_process(exec(exe, &["x"]), |p| {
            std::sync::Arc::make_mut(&mut p.who).unit = Some(unit.into())
        })
    };
    assert_eq!(
        decide(&set, &in_unit("/usr/bin/id", "nginx.service"))
            .unwrap()
            .matched["unit"],
        "nginx.service"
    );
    assert!(decide(&set, &in_unit("/usr/bin/id", "cron.service")).is_none());
    // A shell on the host outside a login session: decided; in a session: not.
    assert_eq!(
        decide(&set, &in_unit("/usr/bin/sh", "cron.service"))
            .unwrap()
            .rule,
        "host-shells"
    );
    assert!(decide(&set, &in_unit("/usr/bin/sh", "session-4.scope")).is_none());
    let contained = with_process(exec("/usr/bin/curl", &["curl"]), |p| {
        std::sync::Arc::make_mut(&mut p.who).container =
            Some(std::sync::Arc::new(crate::attribution::Container {
                runtime: "docker".into(),
                id: "ab".repeat(32),
            }))
    });
    assert_eq!(decide(&set, &contained).unwrap().rule, "in-containers");
    assert!(decide(&set, &exec("/usr/bin/curl", &["curl"])).is_none());
    assert!(
        errors("[[rule]]\nid = \"c\"\non = [\"exec\"]\ncontainer = [\"any\", \"ab*\"]\n")
            .contains("stand alone")
    );
}

#[test]
fn kill_and_deny_rules_exempt_a_lineage_in_the_kernel() {
    // ancestor_exe_not on a deny rule: compiled (the kernel marks the
    // listed programs' descendants).
    let set = rules(
        "[[rule]]\nid = \"k\"\non = [\"file.write\"]\npath = [\"/etc/x\"]\naction = \"deny\"\nancestor_exe_not = [\"/usr/bin/dpkg\", \"/usr/bin/apt\"]\n",
    );
    let rule = set.rules.iter().find(|r| r.id == "k").unwrap();
    assert!(
        rule.kernel_problems.is_empty(),
        "{:?}",
        rule.kernel_problems
    );
    let compiled = crate::kernel_maps::compile(&set, 0).unwrap();
    assert_eq!(
        compiled.lineages,
        vec![vec![
            "/usr/bin/dpkg".to_string(),
            "/usr/bin/apt".to_string()
        ]]
    );
    // What the kernel cannot decide stays refused, with the reason.
    let e = errors(
        "[[rule]]\nid = \"k\"\non = [\"file.write\"]\npath = [\"/etc/x\"]\naction = \"kill\"\nancestor_exe = [\"/usr/sbin/sshd\"]\n",
    );
    assert!(
        e.contains("ancestor_exe") && e.contains("cannot be evaluated in the kernel"),
        "{e}"
    );
    let e = errors(
        "[[rule]]\nid = \"k\"\non = [\"file.write\"]\npath = [\"/etc/x\"]\naction = \"deny\"\nancestor_exe_not = [\"/usr/bin/apt*\"]\n",
    );
    assert!(e.contains("not one program"), "{e}");
    let e = errors(
        "[[rule]]\nid = \"k\"\non = [\"file.write\"]\npath = [\"/etc/x\"]\naction = \"deny\"\nancestor_exe_not = [\"/usr/lib/**\"]\n",
    );
    assert!(e.contains("not one program"), "{e}");
    // An allow rule that exempts a kernel rule has no mark to grant.
    let e = errors(
        "[[rule]]\nid = \"k\"\non = [\"file.write\"]\npath = [\"/etc/x\"]\naction = \"deny\"\n\n\
         [[rule]]\nid = \"a\"\non = [\"file.write\"]\naction = \"allow\"\nexempts = [\"k\"]\nancestor_exe_not = [\"/usr/bin/dpkg\"]\n",
    );
    assert!(e.contains("ancestor_exe_not"), "{e}");
}

#[test]
fn new_owner_and_capabilities_gained() {
    let set = rules(
        r#"
[[rule]]
id = "to-root-owner"
on = ["perm.chown"]
owner = ["root"]
[[rule]]
id = "admin-cap"
on = ["perm.capset"]
caps_gained = ["cap_sys_admin"]
"#,
    );
    let chown = |uid: Option<u32>| {
        event(Body::Perm {
            syscall: "chown".into(),
            process: process("/usr/bin/chown", 0),
            result: ok(),
            perm: PermDetails {
                op: "chown".into(),
                path: Some("/x".into()),
                owner: Some(Owner { uid, gid: None }),
                ..Default::default()
            },
        })
    };
    assert!(decide(&set, &chown(Some(0))).is_some());
    assert!(decide(&set, &chown(Some(1000))).is_none());
    assert!(decide(&set, &chown(None)).is_none(), "owner unchanged (-1)");
    let capset = |gained: Vec<&str>| {
        event(Body::Perm {
            syscall: "capset".into(),
            process: process("/x", 0),
            result: ok(),
            perm: PermDetails {
                op: "capset".into(),
                caps: Some(Box::new(CapChange {
                    gained: Some(gained.into_iter().map(String::from).collect()),
                    ..Default::default()
                })),
                ..Default::default()
            },
        })
    };
    assert_eq!(
        decide(&set, &capset(vec!["cap_sys_admin"]))
            .unwrap()
            .matched["caps_gained"],
        "cap_sys_admin"
    );
    assert!(decide(&set, &capset(vec!["cap_chown"])).is_none());
}

#[test]
fn result_filter() {
    let set = rules("[[rule]]\nid = \"failed\"\non = [\"file.write\"]\nresult = \"failed\"\n");
    let mut e = open("/x", "/etc/shadow", &["write"]);
    assert!(decide(&set, &e).is_none());
    if let Body::File { result, .. } = &mut e.body {
        result.ok = false;
        result.errno = Some("EACCES".into());
    }
    assert_eq!(decide(&set, &e).unwrap().matched["result"], "failed");
}

/// The shipped default pack (config/guardrail.toml): each rule fires on a
/// real-looking event and stays quiet on a legitimate look-alike.
mod default_pack {
    use super::*;

    fn pack() -> RuleSet {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/guardrail.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        compile_text(&path, &text, names()).unwrap()
    }

    fn by(e: Event, exe: &str) -> Event {
        with_process(e, |p| p.exe = Some(exe.into()))
    }

    fn write(exe: &str, path: &str) -> Event {
        open(exe, path, &["write", "create", "truncate"])
    }

    fn capset(gained: &[&str]) -> Event {
        event(Body::Perm {
            syscall: "capset".into(),
            process: process("/usr/bin/x", 0),
            result: ok(),
            perm: PermDetails {
                op: "capset".into(),
                caps: Some(Box::new(CapChange {
                    gained: Some(gained.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                })),
                ..Default::default()
            },
        })
    }

    fn uring_setup(exe: &str) -> Event {
        event(Body::Uring {
            syscall: "io_uring_setup".into(),
            process: process(exe, 0),
            result: ok(),
            uring: crate::event::UringDetails {
                op: "setup".into(),
                fd: Some(3),
                sq_entries: Some(8),
                flags: vec![],
                ..Default::default()
            },
        })
    }

    /// unlink, symlink (`path` is the new link), link, truncate; a link's
    /// destination in `new_path`.
    fn file_op(op: &str, path: &str, new_path: Option<&str>) -> Event {
        event(Body::File {
            syscall: op.to_owned().into(),
            process: process("/usr/bin/x", 0),
            result: ok(),
            file: FileDetails {
                op: op.to_owned().into(),
                path: Some(path.into()),
                new_path: new_path.map(Into::into),
                resolved: true,
                ..Default::default()
            },
        })
    }

    fn at_time(mut e: Event, time: &str) -> Event {
        e.time = time.into();
        e
    }

    #[test]
    fn every_rule_fires_and_its_lookalike_does_not() {
        let set = pack();
        let cases: Vec<(&str, Event, Event)> = vec![
            (
                "credential-files",
                write("/usr/bin/vi", "/etc/shadow"),
                write("/usr/bin/passwd", "/etc/shadow"),
            ),
            (
                "setuid-bit",
                chmod("/tmp/x", "4755"),
                by(chmod("/usr/bin/su", "4755"), "/usr/bin/dpkg"),
            ),
            (
                "world-writable-system",
                chmod("/etc/app.conf", "0666"),
                chmod("/tmp/scratch", "0666"),
            ),
            (
                "exec-from-temp",
                exec("/tmp/payload", &["payload"]),
                exec("/usr/bin/ls", &["ls", "/tmp"]),
            ),
            (
                "root-regained",
                by(setuid(true), "/tmp/exploit"),
                by(setuid(true), "/usr/bin/sudo"),
            ),
            (
                "preload-hijack",
                write("/usr/bin/tee", "/etc/ld.so.preload"),
                write("/usr/bin/tee", "/etc/ld.so.conf.d/x.conf"),
            ),
            (
                "ssh-authorized-keys",
                write("/usr/bin/tee", "/home/alice/.ssh/authorized_keys"),
                write("/usr/bin/ssh", "/home/alice/.ssh/known_hosts"),
            ),
            (
                "login-persistence",
                write("/usr/bin/tee", "/etc/profile.d/zz.sh"),
                write("/usr/bin/tee", "/etc/profile.d.bak"),
            ),
            (
                "systemd-user-units",
                write("/usr/bin/tee", "/home/alice/.config/systemd/user/x.service"),
                write("/usr/bin/tee", "/home/alice/.config/systemd/x.conf"),
            ),
            (
                "history-tampering",
                file_op("symlink", "/root/.bash_history", None),
                file_op("unlink", "/root/.bash_history_old", None),
            ),
            (
                "pam-config",
                write(
                    "/usr/bin/cp",
                    "/usr/lib/x86_64-linux-gnu/security/pam_evil.so",
                ),
                write("/usr/bin/cp", "/usr/lib/x86_64-linux-gnu/libsecurity.so"),
            ),
            (
                "name-resolution",
                write("/usr/bin/tee", "/etc/hosts"),
                write("/usr/sbin/resolvconf", "/run/resolvconf/resolv.conf"),
            ),
            (
                "privilege-policy",
                write("/usr/bin/tee", "/etc/polkit-1/rules.d/00-all.rules"),
                write("/usr/sbin/visudo", "/etc/sudoers.d/admins"),
            ),
            (
                "log-tampering",
                rename("/var/log/auth.log", "/tmp/x"),
                by(
                    rename("/var/log/auth.log", "/var/log/auth.log.1"),
                    "/usr/sbin/logrotate",
                ),
            ),
            (
                "guardrail-config",
                write("/usr/bin/vi", "/etc/guardrail/guardrail.toml"),
                write("/usr/bin/vi", "/etc/guardrails.txt"),
            ),
            (
                "systemd-units",
                write("/usr/bin/tee", "/etc/systemd/system/backdoor.service"),
                by(
                    write("/x", "/etc/systemd/system/a.service"),
                    "/usr/bin/systemctl",
                ),
            ),
            (
                "cron-entries",
                write("/usr/bin/tee", "/etc/cron.d/job"),
                by(
                    write("/x", "/var/spool/cron/crontabs/root"),
                    "/usr/bin/crontab",
                ),
            ),
            (
                "system-binary-permissions",
                chmod("/usr/bin/passwd", "0777"),
                by(chmod("/usr/bin/passwd", "4755"), "/usr/bin/dpkg"),
            ),
            (
                "sshd-config",
                write("/usr/bin/sed", "/etc/ssh/sshd_config"),
                write("/usr/bin/sed", "/etc/ssh/ssh_config"),
            ),
            (
                "kernel-module-config",
                write("/usr/bin/tee", "/etc/modprobe.d/evil.conf"),
                by(write("/x", "/etc/modprobe.d/a.conf"), "/usr/bin/dpkg"),
            ),
            ("capability-gain", capset(&["cap_sys_admin"]), capset(&[])),
            (
                "io-uring-setup",
                uring_setup("/usr/bin/python3.11"),
                uring_setup("/usr/bin/qemu-system-x86_64"),
            ),
            (
                "fileless-exec",
                by(exec("/proc/self/fd/3", &["x"]), "/memfd:payload"),
                by(exec("/proc/self/fd/3", &["x"]), "/usr/bin/memfd-tool"),
            ),
            (
                "credential-read",
                open("/usr/bin/cat", "/etc/shadow", &[]),
                open("/usr/bin/passwd", "/etc/shadow", &[]),
            ),
            (
                "ssh-host-key-read",
                open("/usr/bin/cat", "/etc/ssh/ssh_host_ed25519_key", &[]),
                open("/usr/sbin/sshd", "/etc/ssh/ssh_host_ed25519_key", &[]),
            ),
            (
                "ssh-private-key-read",
                open("/usr/bin/python3.11", "/root/.ssh/id_ed25519", &[]),
                open("/usr/bin/python3.11", "/root/.ssh/id_ed25519.pub", &[]),
            ),
            (
                "cloud-credential-read",
                open("/usr/bin/curl", "/root/.aws/credentials", &[]),
                open("/usr/local/bin/kubectl", "/root/.kube/config", &[]),
            ),
            (
                "nginx-outside-maintenance",
                at_time(
                    write("/usr/bin/vi", "/etc/nginx/nginx.conf"),
                    "2026-11-25T12:00:00Z",
                ),
                at_time(
                    write("/usr/bin/vi", "/etc/nginx/nginx.conf"),
                    "2026-11-28T03:00:00Z",
                ),
            ),
        ];
        let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
        assert!(ids.len() >= 15, "the default pack has {} rules", ids.len());
        for id in &ids {
            assert!(
                cases.iter().any(|(c, _, _)| c == id),
                "rule {id} has no test case"
            );
        }
        // The same triggers, made by a package manager's maintainer
        // script (or the rule's own legitimate tree): quiet.
        let lineage_exempt: &[(&str, &[&str])] = &[
            ("credential-files", &["/usr/bin/perl", "/usr/bin/dpkg"]),
            (
                "setuid-bit",
                &["/usr/bin/dash", "/usr/bin/dpkg", "/usr/bin/apt-get"],
            ),
            ("world-writable-system", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("log-tampering", &["/usr/bin/dash", "/usr/sbin/logrotate"]),
            ("guardrail-config", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            (
                "systemd-units",
                &["/usr/bin/perl", "/usr/bin/dpkg", "/usr/bin/apt"],
            ),
            ("cron-entries", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("system-binary-permissions", &["/usr/bin/dpkg"]),
            ("sshd-config", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("kernel-module-config", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("capability-gain", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("ssh-authorized-keys", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("login-persistence", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("login-persistence", &["/usr/bin/cp", "/usr/sbin/useradd"]),
            ("systemd-user-units", &["/usr/bin/dash", "/usr/bin/apt-get"]),
            ("history-tampering", &["/usr/bin/rm", "/usr/sbin/userdel"]),
            (
                "pam-config",
                &["/usr/bin/dash", "/usr/sbin/pam-auth-update"],
            ),
            ("name-resolution", &["/usr/bin/dash", "/usr/sbin/dhclient"]),
            ("privilege-policy", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("credential-read", &["/usr/bin/dash", "/usr/bin/dpkg"]),
            ("credential-read", &["/usr/bin/cp", "/usr/sbin/useradd"]),
            ("ssh-host-key-read", &["/usr/bin/dash", "/usr/bin/dpkg"]),
        ];
        for (id, tree) in lineage_exempt {
            let (_, hit, _) = cases.iter().find(|(c, _, _)| c == id).unwrap();
            let under = with_process(hit.clone(), descended_from(tree));
            let d = decide(&set, &under);
            assert!(
                d.as_ref()
                    .is_none_or(|d| d.rule != *id && !d.also.iter().any(|a| a == id)),
                "{id} fired inside its legitimate tree {tree:?}: {d:#?}"
            );
            // And from a login shell, still decided.
            let by_hand = with_process(
                hit.clone(),
                descended_from(&["/usr/bin/bash", "/usr/sbin/sshd"]),
            );
            assert!(
                decide(&set, &by_hand)
                    .is_some_and(|d| d.rule == *id || d.also.iter().any(|a| a == id)),
                "{id} did not fire from a login shell"
            );
        }
        for (id, hit, lookalike) in &cases {
            let d = decide(&set, hit).unwrap_or_else(|| panic!("{id} did not fire on {hit:#?}"));
            assert!(
                d.rule == *id || d.also.iter().any(|a| a == id),
                "{id}: decided by {} instead",
                d.rule
            );
            let quiet = decide(&set, lookalike);
            assert!(
                quiet
                    .as_ref()
                    .is_none_or(|d| d.rule != *id && !d.also.iter().any(|a| a == id)),
                "{id} fired on its look-alike: {quiet:#?}"
            );
        }
    }
}

#[test]
fn home_patterns_expand_to_every_home_in_passwd() {
    let set = rules(
        "[[rule]]\nid = \"keys\"\non = [\"file.write\"]\npath = [\"~*/.ssh/authorized_keys\"]\n\n\
         [[rule]]\nid = \"alice-rc\"\non = [\"file.write\"]\npath = [\"~alice/.bashrc\"]\naction = \"deny\"\n",
    );
    let keys = set.rules[0].path.as_ref().unwrap();
    assert_eq!(
        keys.patterns,
        [
            "/root/.ssh/authorized_keys",
            "/home/alice/.ssh/authorized_keys"
        ]
    );
    let w = |p: &str| open("/usr/bin/tee", p, &["write"]);
    assert_eq!(
        decide(&set, &w("/home/alice/.ssh/authorized_keys"))
            .unwrap()
            .rule,
        "keys"
    );
    assert_eq!(
        decide(&set, &w("/root/.ssh/authorized_keys")).unwrap().rule,
        "keys"
    );
    assert!(
        decide(&set, &w("/home/bob/.ssh/authorized_keys")).is_none(),
        "bob is not in passwd"
    );
    assert!(decide(&set, &w("/home/alice/x/.ssh/authorized_keys")).is_none());
    assert_eq!(
        decide(&set, &w("/home/alice/.bashrc")).unwrap().rule,
        "alice-rc"
    );
    assert!(decide(&set, &w("/root/.bashrc")).is_none());
    assert_eq!(
        set.inputs,
        [std::path::PathBuf::from("/etc/passwd")],
        "a passwd change reloads"
    );
    assert!(rules("[[rule]]\nid = \"a\"\non = [\"exec\"]\n")
        .inputs
        .is_empty());
}

#[test]
fn bad_home_patterns_name_file_line_and_field() {
    let e = errors("[[rule]]\nid = \"a\"\non = [\"file.write\"]\npath = [\"~bob/.bashrc\"]\n");
    assert!(
        e.contains("/etc/g.toml:4:8: path: \"~bob/.bashrc\": no user named \"bob\" in /etc/passwd"),
        "{e}"
    );
    assert!(e.contains("hint: write ~*/PATH"), "{e}");
    let e = errors("[[rule]]\nid = \"a\"\non = [\"file.write\"]\npath_not = [\"~/.bashrc\"]\n");
    assert!(
        e.contains("/etc/g.toml:4:12: path_not: \"~/.bashrc\""),
        "{e}"
    );
    let e = errors("[[rule]]\nid = \"a\"\non = [\"file.write\"]\npath = [\"~*\"]\n");
    assert!(
        e.contains("path: \"~*\" names no path under the home directory"),
        "{e}"
    );
}

mod central {
    use super::*;
    use crate::rules::{compile_with_central, CentralText};

    const LOCAL: &str = "[[rule]]\nid = \"local-deny\"\non = [\"perm.chmod\"]\npath = [\"/etc/**\"]\naction = \"deny\"\n";

    fn with_central(central: &str) -> Result<RuleSet, String> {
        compile_with_central(
            Path::new("/etc/g.toml"),
            LOCAL,
            names(),
            Some(CentralText {
                origin: Path::new("nats:guardrail-rules/web"),
                text: central,
            }),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn central_rules_are_added_to_the_local_ones() {
        let set = with_central(
            "[[rule]]\nid = \"fleet-a\"\non = [\"exec\"]\n\n[[rule]]\nid = \"fleet-ok\"\non = [\"exec\"]\naction = \"allow\"\nexempts = [\"fleet-a\"]\n",
        )
        .unwrap();
        let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["local-deny", "fleet-a", "fleet-ok"]);
        // The central set is no file: nothing to watch or trust-check.
        assert_eq!(set.files, [Path::new("/etc/g.toml")]);
        assert!(with_central("").is_ok());
    }

    #[test]
    fn a_central_set_cannot_replace_or_lift_a_local_rule() {
        let replaced =
            with_central("[[rule]]\nid = \"local-deny\"\non = [\"exec\"]\n").unwrap_err();
        assert!(
            replaced.starts_with("nats:guardrail-rules/web:2:") && replaced.contains("used twice"),
            "{replaced}"
        );
        let lifted = with_central(
            "[[rule]]\nid = \"lift\"\non = [\"perm.chmod\"]\naction = \"allow\"\nexempts = [\"local-deny\"]\n",
        )
        .unwrap_err();
        assert!(
            lifted.starts_with("nats:guardrail-rules/web:5:")
                && lifted.contains("never lift a local one"),
            "{lifted}"
        );
    }

    #[test]
    fn a_central_set_holds_rules_and_windows_only() {
        let include = with_central("include = [\"/tmp/*.toml\"]\n").unwrap_err();
        assert!(
            include.starts_with("nats:guardrail-rules/web:1:") && include.contains("unknown field"),
            "{include}"
        );
        let agent = with_central("[agent]\nself_protection = false\n").unwrap_err();
        assert!(agent.contains("unknown field"), "{agent}");
        let broken = with_central("[[rule]]\nid = \"x\"\non = [\"perm.chmode\"]\n").unwrap_err();
        assert!(
            broken.starts_with("nats:guardrail-rules/web:3:"),
            "{broken}"
        );
    }
}

/// The pre-check that skips most rules without allocating never skips a
/// rule that matches, for every matcher on numbers it takes over.
#[test]
fn the_cheap_pre_check_never_skips_a_match() {
    let set = rules(
        r#"
[[rule]]
id = "setuid-bit"
on = ["perm.chmod"]
mode_set = ["setuid", "setgid"]
ancestor_exe_not = ["/usr/bin/dpkg"]
[[rule]]
id = "world-writable"
on = ["perm.chmod"]
path = ["/etc/**"]
mode_set = ["world_writable"]
[[rule]]
id = "to-root"
on = ["perm.chown"]
owner = ["root"]
owner_group = ["root"]
[[rule]]
id = "caps"
on = ["perm.capset"]
caps_gained = ["any"]
[[rule]]
id = "some-cap"
on = ["perm.capset"]
caps_gained = ["cap_sys_admin"]
[[rule]]
id = "regain"
on = ["perm.setuid"]
to_root = true
[[rule]]
id = "ids"
on = ["perm.chmod", "perm.chown", "perm.capset", "perm.setuid"]
euid = [0]
auid_not = [1000]
cgroup_id_not = [8]
[[rule]]
id = "cgroup"
on = ["perm.chmod"]
cgroup_id = [7]
gid = ["staff"]
"#,
    );
    let perm = |op: &str, details: PermDetails| {
        event(Body::Perm {
            syscall: op.to_owned().into(),
            process: process("/usr/bin/x", 0),
            result: ok(),
            perm: PermDetails {
                op: op.to_owned().into(),
                path: Some("/etc/x".into()),
                ..details
            },
        })
    };
    let mut events = vec![];
    for mode in ["0644", "4755", "2755", "0777", "0002", "bogus"] {
        events.push(perm(
            "chmod",
            PermDetails {
                mode: Some(mode.into()),
                ..Default::default()
            },
        ));
    }
    for (uid, gid) in [
        (Some(0), Some(0)),
        (Some(0), None),
        (None, Some(0)),
        (Some(5), Some(0)),
    ] {
        events.push(perm(
            "chown",
            PermDetails {
                owner: Some(Owner { uid, gid }),
                ..Default::default()
            },
        ));
    }
    for gained in [
        None,
        Some(vec![]),
        Some(vec!["cap_chown"]),
        Some(vec!["cap_sys_admin"]),
    ] {
        events.push(perm(
            "capset",
            PermDetails {
                caps: Some(Box::new(CapChange {
                    gained: gained.map(|g| g.into_iter().map(String::from).collect()),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ));
    }
    events.push(setuid(true));
    events.push(setuid(false));
    let mut checked = 0;
    for e in events {
        for (euid, gid, auid, cgroup) in
            [(0, 50, None, 7), (0, 0, Some(1000), 8), (5, 50, Some(1), 7)]
        {
            let e = with_process(e.clone(), |p| {
                p.euid = euid;
                p.gid = gid;
                p.auid = auid;
                p.cgroup_id = cgroup;
            });
            let skipped = super::eval::skipped_matches(&set, &e, at("2026-11-27T12:00:00Z"));
            assert!(skipped.is_empty(), "{skipped:?} skipped for {e:?}");
            checked += usize::from(decide(&set, &e).is_some());
        }
    }
    assert!(checked > 10, "the grid must include matches ({checked})");
}

/// The rule index (with what it remembers of paths and programs seen)
/// decides every event as evaluating every rule would, the first time and
/// the times after.
#[test]
fn the_index_and_its_memory_decide_as_every_rule_would() {
    let text = r#"
[[rule]]
id = "etc"
on = ["file.write", "perm.chmod"]
path = ["/etc/**"]
[[rule]]
id = "shadow"
on = ["file.write"]
path = ["/etc/shadow"]
exe_not = ["/usr/bin/passwd"]
[[rule]]
id = "tool"
on = ["exec", "file.write"]
exe = ["/opt/tool/*"]
[[rule]]
id = "setuid"
on = ["perm.chmod"]
mode_set = ["setuid"]
"#;
    let indexed = rules(text);
    let mut unindexed = rules(text);
    unindexed.index = super::index::RuleIndex::default();
    let events = [
        open("/usr/bin/vi", "/etc/shadow", &["write"]),
        open("/usr/bin/passwd", "/etc/shadow", &["write"]),
        open("/opt/tool/x", "/srv/data", &["write"]),
        open("/usr/bin/vi", "/srv/data", &["write"]),
        chmod("/etc/hosts", "0644"),
        chmod("/tmp/x", "4755"),
        chmod("/tmp/x", "0644"),
        exec("/opt/tool/run", &["run"]),
        exec("/usr/bin/ls", &["ls"]),
    ];
    for round in 0..3 {
        for e in &events {
            let rule = |set: &RuleSet| decide(set, e).map(|d| d.rule);
            assert_eq!(rule(&indexed), rule(&unindexed), "round {round}: {e:?}");
        }
    }
    assert!(
        events
            .iter()
            .filter(|e| decide(&indexed, e).is_some())
            .count()
            >= 5
    );
}

fn mount_event(op: &str, at: &str, flags: &[&str], namespace: &str) -> Event {
    event(Body::File {
        syscall: "mount".into(),
        process: process("/usr/bin/mount", 0),
        result: ok(),
        file: FileDetails {
            op: op.to_owned().into(),
            path: Some(at.into()),
            resolved: true,
            mount: Some(Box::new(MountDetails {
                source: Some("/tmp/evil".into()),
                flags: flags.iter().map(|s| s.to_string()).collect(),
                namespace: Some(namespace.into()),
                ..Default::default()
            })),
            ..Default::default()
        },
    })
}

fn rmdir(path: &str) -> Event {
    event(Body::File {
        syscall: "unlinkat".into(),
        process: process("/usr/bin/rmdir", 0),
        result: ok(),
        file: FileDetails {
            op: "rmdir".into(),
            path: Some(path.into()),
            resolved: true,
            ..Default::default()
        },
    })
}

/// Path integrity for alert rules: whatever a rule lists, what changes
/// what its paths resolve to — a mount at or above them, a directory above
/// them moved or removed, the root swapped — is decided by it; what leaves
/// every path naming the same object is not.
#[test]
fn what_changes_what_a_watched_path_means_is_decided_whatever_the_rule_lists() {
    let set = rules(
        r#"
[[rule]]
id = "prot"
on = ["file.write"]
path = ["/x/prot/a.conf", "/srv/tree/**"]
"#,
    );
    let decided = |e: &Event| decide(&set, e).map(|d| (d.rule, d.matched));
    for (what, e) in [
        (
            "bind over the file",
            mount_event("mount", "/x/prot/a.conf", &["bind"], "host"),
        ),
        (
            "tmpfs over its directory",
            mount_event("mount", "/x/prot", &[], "host"),
        ),
        ("tmpfs over /", mount_event("mount", "/", &[], "private")),
        (
            "inside a subtree",
            mount_event("mount", "/srv/tree/deep/er", &[], "private"),
        ),
        (
            "unmounted from above",
            mount_event("umount", "/x", &["detach"], "host"),
        ),
        (
            "moved onto its directory",
            mount_event("move_mount", "/x/prot", &[], "host"),
        ),
        (
            "root swapped on the host",
            mount_event("pivot_root", "/newroot", &[], "host"),
        ),
        ("its directory renamed", rename("/x/prot", "/x/old")),
        (
            "a directory renamed onto its directory",
            rename("/x/evil", "/x/prot"),
        ),
    ] {
        let (rule, matched) = decided(&e).unwrap_or_else(|| panic!("{what}: not decided"));
        assert_eq!(rule, "prot", "{what}");
        assert!(
            matched["path_integrity"].contains("resolves to"),
            "{what}: {matched:?}"
        );
    }
    for (what, e) in [
        (
            "a mount elsewhere",
            mount_event("mount", "/x/other", &[], "host"),
        ),
        (
            "a remount",
            mount_event("mount", "/x/prot", &["remount", "bind"], "host"),
        ),
        (
            "a propagation change",
            mount_event("mount", "/", &["private", "rec"], "host"),
        ),
        (
            "a service's sandbox",
            mount_event("mount", "/x/prot", &["bind"], "service"),
        ),
        (
            "a container's own root",
            mount_event("pivot_root", "/var/lib/c/rootfs", &[], "private"),
        ),
        (
            "the old root dropped in a namespace",
            mount_event("umount", "/", &["detach"], "private"),
        ),
        ("a sibling renamed", rename("/x/other", "/x/other2")),
        // Empty to be removed: what it held went first, as events of
        // their own (userdel -r removing a home).
        ("its directory's (empty) parent removed", rmdir("/x")),
        // Renaming the file itself is a rename of what the rule names,
        // decided only by rules that list file.rename.
        (
            "the file itself renamed",
            rename("/x/prot/a.conf", "/tmp/a"),
        ),
        (
            "a file in the subtree renamed",
            rename("/srv/tree/a", "/srv/tree/b"),
        ),
    ] {
        assert_eq!(decided(&e), None, "{what}");
    }
    // A rule that lists the kind decides by the name, as before.
    let named = rules(
        r#"
[[rule]]
id = "mounts"
on = ["file.mount"]
path = ["/mnt/**"]
"#,
    );
    let d = decide(&named, &mount_event("mount", "/mnt/usb", &[], "host")).unwrap();
    assert_eq!(d.matched["on"], "file.mount");
    assert!(!d.matched.contains_key("path_integrity"));
    for e in [
        mount_event("mount", "/x/prot", &[], "host"),
        rename("/x/prot", "/x/old"),
    ] {
        let skipped = super::eval::skipped_matches(&set, &e, at("2026-11-27T12:00:00Z"));
        assert!(skipped.is_empty(), "{skipped:?} skipped for {e:?}");
    }
}

#[test]
fn the_directories_above_a_pattern_are_its_ancestors() {
    use super::matchers::ancestor_globs;
    assert_eq!(
        ancestor_globs("/etc/ssh/sshd_config"),
        ["/", "/etc", "/etc/ssh"]
    );
    assert_eq!(ancestor_globs("/etc/nginx/**"), ["/", "/etc", "/etc/nginx"]);
    assert_eq!(
        ancestor_globs("/home/*/.ssh/keys"),
        ["/", "/home", "/home/*", "/home/*/.ssh"]
    );
    assert_eq!(ancestor_globs("/a/**/b.conf"), ["/", "/a", "/a/**"]);
    assert_eq!(ancestor_globs("/a/{b/c,d}/e"), ["/", "/a", "/a/{b/c,d}"]);
    assert_eq!(ancestor_globs("/"), ["/"]);
}

#[test]
fn the_rules_on_a_path_are_those_whose_own_globs_match_it() {
    let mut set = rules(
        r#"
[[rule]]
id = "exact"
on = ["file.write"]
path = ["/etc/shadow"]
[[rule]]
id = "below"
on = ["file.write"]
path = ["/etc/**", "/usr/lib/**"]
[[rule]]
id = "homes"
on = ["file.read"]
path = ["~*/.ssh/id_*"]
[[rule]]
id = "middle"
on = ["file.write"]
path = ["/srv/*/conf/**/*.conf"]
[[rule]]
id = "no-path"
on = ["perm.chmod"]
mode_set = ["setuid"]
[[rule]]
id = "exe-only"
on = ["exec"]
exe = ["/tmp/**"]
"#,
    );
    let paths = [
        "/etc/shadow",
        "/etc/passwd",
        "/usr/lib/x",
        "/home/alice/.ssh/id_rsa",
        "/root/.ssh/id_ed25519",
        "/home/bob/.ssh/id_rsa",
        "/srv/a/conf/b/c.conf",
        "/srv/a/conf/c.txt",
        "/tmp/x",
        "/",
    ];
    let mut out = vec![99];
    let check = |set: &RuleSet, out: &mut Vec<usize>| {
        for a in paths {
            for b in paths {
                let ps = [a, b];
                set.rules_on_paths(&ps, out);
                let every: Vec<usize> = (0..set.rules.len())
                    .filter(|&i| {
                        set.rules[i]
                            .path
                            .as_ref()
                            .is_some_and(|p| p.find(&ps).is_some())
                    })
                    .collect();
                assert_eq!(*out, every, "{ps:?}");
            }
        }
    };
    check(&set, &mut out);
    set.rules_on_paths(&["/etc/shadow", "/root/.ssh/id_x"], &mut out);
    assert_eq!(out, [0, 1, 2]);
    // An index not rebuilt after a change: every rule is checked.
    set.rules.truncate(4);
    check(&set, &mut out);
}
