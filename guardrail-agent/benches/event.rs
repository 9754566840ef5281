//! What one captured event costs in the agent's user-space stages, each
//! alone: rule evaluation with the shipped default pack, redaction,
//! serialisation, and sealing into the audit chain. The event is the chmod
//! storm's (`cargo xtask bench`): a chmod of a file under /tmp by a process
//! eight generations deep, which no default rule decides — the ordinary,
//! uninteresting event that a busy host is made of.

use criterion::{criterion_group, criterion_main, Criterion};
use guardrail_engine::chain::seal;
use guardrail_engine::event::{
    Ancestor, Ancestors, Body, Event, PermDetails, Process, SyscallResult,
};
use guardrail_engine::process_json::ProcessJsonCache;
use guardrail_engine::redact::RedactionSection;
use guardrail_engine::redact::Redactor;
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::{compile_text, evaluate};
use std::path::Path;

fn chmod_event() -> Event {
    let exes = [
        "/usr/bin/bash",
        "/usr/bin/sudo",
        "/usr/bin/bash",
        "/usr/sbin/sshd",
        "/usr/sbin/sshd",
        "/usr/sbin/sshd",
        "/usr/lib/systemd/systemd",
        "/usr/lib/systemd/systemd",
    ];
    let ancestors: Ancestors = exes
        .iter()
        .enumerate()
        .map(|(i, exe)| Ancestor {
            pid: 1000 - i as u32,
            id: Some(format!("{}@{}", 1000 - i, 50 + i).into()),
            exe: Some((*exe).into()),
            script: None,
        })
        .collect();
    Event {
        seq: 123_456,
        time: "2026-12-02T03:00:00.123456789Z".into(),
        ktime_ns: 987_654_321,
        via: None,
        body: Body::Perm {
            syscall: "chmod".into(),
            process: Process {
                pid: 4242,
                tid: 4242,
                ppid: Some(1000),
                comm: "storm".into(),
                exe: Some("/root/storm".into()),
                parent_exe: Some("/usr/bin/bash".into()),
                cgroup_id: 7,
                id: Some("4242@90".into()),
                parent_id: Some("1000@50".into()),
                ancestors,
                who: std::sync::Arc::new(guardrail_engine::event::Attribution {
                    user: Some("root".into()),
                    group: Some("root".into()),
                    cgroup: Some("/user.slice/user-0.slice/session-3.scope".into()),
                    unit: Some("session-3.scope".into()),
                    container: None,
                }),
                ..Default::default()
            },
            result: SyscallResult {
                ok: true,
                ret: 0,
                errno: None,
            },
            perm: PermDetails {
                op: "chmod".into(),
                path: Some("/tmp/bench/target-file".into()),
                mode: Some("0644".into()),
                ..Default::default()
            },
        },
        decision: None,
        redacted: vec![],
    }
}

fn stages(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/guardrail.toml");
    let text = std::fs::read_to_string(&path).expect("the shipped default configuration");
    let names = Names::from_text("root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");
    let pack = compile_text(&path, &text, names).expect("the default pack compiles");
    let event = chmod_event();
    let at = jiff::Timestamp::now();
    let redactor = Redactor::new(&RedactionSection::default()).expect("default redaction");
    let json = serde_json::to_string(&event).unwrap();
    let prev = "0".repeat(64);
    let mut group = c.benchmark_group("event");
    group.bench_function("evaluate (default pack)", |b| {
        b.iter(|| evaluate(&pack, &event, at, Enforcement::default()))
    });
    group.bench_function("redact", |b| {
        b.iter_batched(
            || event.clone(),
            |mut e| redactor.redact_event(&mut e),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("serialise", |b| b.iter(|| serde_json::to_string(&event)));
    // What the event path does for a thread's later events: its process
    // object's JSON is looked up (compared with the last one) and reused.
    // (A thread's first event is serialised with its process; its second
    // makes the JSON kept for the rest.)
    let mut cache = ProcessJsonCache::default();
    cache.attach(&mut event.clone().body);
    cache.attach(&mut event.clone().body);
    group.bench_function("serialise (process as the thread's last event)", |b| {
        b.iter_batched(
            || event.clone(),
            |mut e| {
                cache.attach(&mut e.body);
                serde_json::to_string(&e)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // An exec storm, or a host's short-lived commands: each event is its
    // thread's first (and only) one.
    let mut tid = 0u32;
    group.bench_function("attach and serialise (a thread's only event)", |b| {
        b.iter_batched(
            || {
                tid += 1;
                let mut e = event.clone();
                if let Body::Perm { process, .. } = &mut e.body {
                    process.tid = tid;
                }
                e
            },
            |mut e| {
                cache.attach(&mut e.body);
                serde_json::to_string(&e)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // A process's first event: its ancestors' JSON is made then, and
    // shared by its later events.
    group.bench_function("serialise (first event of a process)", |b| {
        b.iter_batched(
            || {
                let mut e = event.clone();
                if let Body::Perm { process, .. } = &mut e.body {
                    process.ancestors = process.ancestors.to_vec().into();
                }
                e
            },
            |e| serde_json::to_string(&e),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("seal", |b| b.iter(|| seal(&prev, &json)));
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
