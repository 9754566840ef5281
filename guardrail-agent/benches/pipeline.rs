//! The event thread's whole work per ring-buffer record: decode, interpret
//! (the process from the process table, the canonical path), the shipped
//! default rules, redaction, JSON and the hand-over to the audit log's
//! writer — for the records of a chmod storm on one file, as
//! `cargo xtask bench` drives them through the agent.
//!
//! The storm's agent CPU per event moves by hundreds of nanoseconds from
//! one run to the next on a shared 2-CPU machine; this measures the same
//! path without the kernel, the writer's thread and that noise, so a
//! change of a few percent shows.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use guardrail_agent::audit::AuditLog;
use guardrail_agent::config::{Config, ProcessForm};
use guardrail_agent::pipeline::{Pipeline, Print};
use guardrail_agent::procfs::ProcFs;
use guardrail_agent::trust::Policy;
use guardrail_common::{flags, EventHeader, RecordKind};
use guardrail_engine::decode::{encode, RawRecord};
use guardrail_engine::redact::Redactor;
use guardrail_engine::rules::compile_text;
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::users::Names;

/// A chmod(2) of `path` to `mode` by this process, as the probes record it.
fn chmod_record(path: &Path, mode: u64) -> Vec<u8> {
    let pid = std::process::id();
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"storm");
    encode(&RawRecord {
        header: EventHeader {
            kind: RecordKind::Syscall as u32,
            syscall: libc::SYS_chmod as u32,
            args: [0, mode, 0, 0, 0, 0],
            ret: 0,
            pid,
            tid: pid,
            ppid: std::os::unix::process::parent_id(),
            flags: flags::TASK_FIELDS,
            comm,
            ..Default::default()
        },
        str0: path.as_os_str().as_encoded_bytes().to_vec(),
        ..Default::default()
    })
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("f");
    std::fs::write(&file, b"").expect("the storm's file");
    let shipped = include_str!("../../config/guardrail.toml").replace(
        "/var/log/guardrail/audit.jsonl",
        &dir.path().join("audit.jsonl").display().to_string(),
    );
    let path = Path::new("/bench/guardrail.toml");
    let config = Config::parse(&shipped, path).expect("the shipped configuration");
    let rules = compile_text(path, &shipped, Names::default()).expect("the shipped rules");

    let (publish, _) = tokio::sync::broadcast::channel(16);
    let mut processes = ProcFs::default();
    processes.seed();
    let mut pipeline = Pipeline::new(processes, Print::None, publish);
    pipeline.set_redactor(Arc::new(
        Redactor::new(&config.redaction).expect("the shipped redaction"),
    ));
    let mut log = AuditLog::start(&config.audit_log, &Policy::agent(None)).expect("the audit log");
    log.set_process_form(ProcessForm::Ref);
    pipeline.audit = Some(log);
    pipeline.name_processes_by_reference();
    pipeline
        .set_rules(Arc::new(rules), Enforcement::default())
        .expect("rules in force");

    // The storm alternates two modes, so consecutive events differ.
    let records = [chmod_record(&file, 0o644), chmod_record(&file, 0o600)];
    let mut i = 0;
    let mut group = c.benchmark_group("pipeline");
    group.bench_function("chmod record, default pack, audit log", |b| {
        // As the agent's drain loop: one coarse clock reading per 256
        // records for the caches' checks.
        let clock = guardrail_agent::clock::hold();
        b.iter(|| {
            i += 1;
            if i % 256 == 0 {
                clock.refresh();
            }
            pipeline.record(&records[i & 1]);
        })
    });
    group.finish();
    // What was measured is the whole path: every record became an event
    // the audit log took.
    assert_eq!(
        pipeline.decode_errors, 0,
        "records the pipeline could not read"
    );
    let logged = pipeline.audit.as_ref().map_or(0, AuditLog::handed);
    assert!(
        logged >= i as u64,
        "{logged} of {i} records reached the audit log"
    );
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
