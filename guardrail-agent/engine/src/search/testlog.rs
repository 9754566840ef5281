//! Generated audit logs for tests: events as the agent serialises them,
//! sealed in one hash chain, split into rotated files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use crate::chain::{seal, GENESIS};
use crate::event::*;
use crate::rules::spec::{Action, Mode, Severity};

pub fn t0() -> Timestamp {
    "2026-11-20T00:00:00Z".parse().unwrap()
}

/// The time of event `i` of [`sample`]: one a second from [`t0`].
pub fn time_of(i: usize) -> Timestamp {
    t0() + SignedDuration::from_secs(i as i64)
}

pub fn decision(rule: &str, outcome: Outcome) -> Decision {
    Decision {
        rule: rule.into(),
        action: Action::Alert,
        mode: Mode::Enforce,
        severity: Severity::High,
        outcome,
        fallback: None,
        matched: Default::default(),
        also: vec![],
        exempted: vec![],
        reverted: None,
        fallback_error: None,
    }
}

fn process(i: usize, exe: &str, uid: u32) -> Process {
    let pid = 1000 + (i % 50) as u32;
    // Every fifth event comes from the session of process 500@1.
    let root = if i.is_multiple_of(5) {
        (500, "500@1")
    } else {
        (400, "400@1")
    };
    Process {
        pid,
        tid: pid,
        ppid: Some(root.0),
        uid,
        euid: uid,
        auid: Some(uid),
        comm: exe.rsplit('/').next().unwrap().into(),
        exe: Some(exe.into()),
        id: Some(format!("{pid}@{}", i / 50).into()),
        parent_id: Some(Arc::from(root.1)),
        ancestors: vec![Ancestor {
            pid: root.0,
            id: Some(Arc::from(root.1)),
            exe: Some(Arc::from("/usr/bin/bash")),
            script: None,
        }]
        .into(),
        ..Default::default()
    }
}

/// Event `i` of a varied sample: writes of /etc/ssh/sshd_config by vim
/// (every other one alerted by `ssh-config`), chmods in /tmp/work by chmod
/// (some denied by `world-writable`), curl execs, renames onto
/// /etc/sudoers by visudo.
pub fn sample_event(i: usize) -> Event {
    let ok = SyscallResult {
        ok: true,
        ret: 0,
        errno: None,
    };
    let (body, decided) = match i % 4 {
        0 => (
            Body::File {
                syscall: "openat".into(),
                process: process(i, "/usr/bin/vim", 1000),
                result: ok,
                file: FileDetails {
                    op: "open".into(),
                    path: Some("/etc/ssh/sshd_config".into()),
                    resolved: true,
                    flags: vec!["write".into(), "truncate".into()],
                    ..Default::default()
                },
            },
            i.is_multiple_of(8)
                .then(|| decision("ssh-config", Outcome::Alerted)),
        ),
        1 => (
            Body::Perm {
                syscall: "fchmodat".into(),
                process: process(i, "/usr/bin/chmod", 0),
                result: ok,
                perm: PermDetails {
                    op: "chmod".into(),
                    path: Some(format!("/tmp/work/f{}", i % 10)),
                    mode: Some("777".into()),
                    ..Default::default()
                },
            },
            (i % 12 == 1).then(|| decision("world-writable", Outcome::Denied)),
        ),
        2 => (
            Body::Exec {
                syscall: "execve".into(),
                process: process(i, "/usr/bin/curl", 1001),
                result: ok,
                exec: ExecDetails {
                    path: "/usr/bin/curl".into(),
                    argv: vec!["curl".into(), "example.org".into()],
                    ..Default::default()
                },
            },
            None,
        ),
        _ => (
            Body::File {
                syscall: "renameat2".into(),
                process: process(i, "/usr/sbin/visudo", 0),
                result: ok,
                file: FileDetails {
                    op: "rename".into(),
                    path: Some("/etc/sudoers.tmp".into()),
                    new_path: Some("/etc/sudoers".into()),
                    resolved: true,
                    ..Default::default()
                },
            },
            None,
        ),
    };
    Event {
        seq: i as u64 + 1,
        time: humantime_like(time_of(i)),
        ktime_ns: i as u64 * 1_000_000_000,
        via: None,
        body,
        decision: decided,
        redacted: vec![],
    }
}

/// RFC 3339 with nanoseconds, as the agent writes times.
pub fn humantime_like(t: Timestamp) -> String {
    let st = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_nanos(t.as_nanosecond() as u64);
    humantime::format_rfc3339_nanos(st).to_string()
}

pub fn sample(n: usize) -> Vec<Event> {
    (0..n).map(sample_event).collect()
}

/// `sample(n)` with the processes of its first 8 events only: threads
/// with many events, as a storm has.
pub fn busy_threads(n: usize) -> Vec<Event> {
    let first = sample(8);
    let mut events = sample(n);
    for (i, e) in events.iter_mut().enumerate() {
        let p = first[i % 8].body.process().unwrap().clone();
        *e.body.process_mut().unwrap() = p;
    }
    events
}

/// Seal `records` (JSON objects) in one chain and write them as a rotated
/// log in `dir`, `per_file` a file: `audit.jsonl.K` … `audit.jsonl`.
/// The files, oldest first.
pub fn write_log(dir: &Path, records: &[String], per_file: usize) -> Vec<PathBuf> {
    let chunks: Vec<&[String]> = records.chunks(per_file).collect();
    let mut prev = GENESIS.to_string();
    let mut files = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        let rotated = chunks.len() - 1 - k;
        let name = if rotated == 0 {
            "audit.jsonl".to_string()
        } else {
            format!("audit.jsonl.{rotated}")
        };
        let mut text = String::new();
        for r in *chunk {
            let (line, h) = seal(&prev, r);
            prev = h;
            text.push_str(&line);
            text.push('\n');
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    files
}

pub fn json(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

/// `events` as an audit log with `process = "ref"` writes them, `per_file`
/// lines a file (see [`write_log`]): a thread's process whole in its first
/// event, numbered from its second, defined in the first line of each file
/// that names its version.
pub fn compact(events: &[Event], per_file: usize) -> Vec<String> {
    use crate::process_join::{push_defined, reference_end};
    let mut cache = crate::process_json::ProcessJsonCache::by_reference();
    let mut defined = std::collections::HashSet::new();
    let mut lines = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if i % per_file == 0 {
            defined.clear();
        }
        let mut event = event.clone();
        cache.attach(&mut event.body);
        let json = serde_json::to_string(&event).unwrap();
        let reference = match event.body.process().map(|p| &p.json) {
            Some(crate::event::ProcessJson::Ref { pv, shared }) => Some((*pv, shared.clone())),
            _ => None,
        };
        match reference {
            Some((pv, shared)) if defined.insert((pv, event.body.kind())) => {
                let mut line = String::new();
                push_defined(&mut line, &json, reference_end(&json, pv).unwrap(), &shared);
                lines.push(line);
            }
            _ => lines.push(json),
        }
    }
    lines
}
