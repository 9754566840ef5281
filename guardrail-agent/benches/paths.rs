//! What canonical paths cost the agent per event (`cargo xtask bench`
//! reports the medians): completing a path-based call's path on the live
//! file system (directory resolution cached, as during a storm), against
//! the lexical clean-up alone.

use criterion::{criterion_group, criterion_main, Criterion};
use guardrail_agent::procfs::ProcFs;
use guardrail_engine::canonical::{complete, complete_in, lexical, FinalComponent};
use guardrail_engine::interpret::{LiveFs, ProcessView};

fn completion(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("prot")).unwrap();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("prot/a.conf"), b"x").unwrap();
    let spelled = format!("{}/sub/../prot/./a.conf", root.display());
    let mut procfs = ProcFs::default();
    let mut group = c.benchmark_group("paths");
    group.bench_function("lexical", |b| b.iter(|| lexical(&spelled)));
    group.bench_function("complete, directory kept", |b| {
        b.iter(|| complete(&spelled, FinalComponent::Keep, &mut LiveFs(&mut procfs)))
    });
    group.bench_function("complete, final symlink followed", |b| {
        b.iter(|| complete(&spelled, FinalComponent::Follow, &mut LiveFs(&mut procfs)))
    });
    // A process chrooted at `root` reaching prot through an absolute
    // symlink (sub/jail -> /prot): resolved inside the root with openat2
    // (RESOLVE_IN_ROOT), not cached.
    std::os::unix::fs::symlink("/prot", root.join("sub/jail")).unwrap();
    let jail = root.to_str().unwrap().to_string();
    group.bench_function("complete in a chroot, absolute symlink", |b| {
        b.iter(|| {
            complete_in(
                &jail,
                "/sub/jail/a.conf",
                FinalComponent::Keep,
                &mut LiveFs(&mut procfs),
            )
        })
    });
    group.finish();
}

/// The process table's share of an event: lineage (8 ancestors) and
/// attribution (cgroup, unit, container, user and group names), the table
/// warm as it is while the agent runs.
fn identity(c: &mut Criterion) {
    let mut table = ProcFs::default();
    // A chain of 9 processes above pid numbers no real process has.
    let base = 5_000_000u32;
    for i in 0..9 {
        table.forked(base + i, base + i + 1, (i as u64 + 1) * 10_000_000);
        table.exec_happened(base + i + 1, &format!("/usr/bin/program{i}"));
    }
    let leaf = base + 9;
    let cgroup_root_id = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| guardrail_agent::cgroups::cgroup2_root(&m))
        .and_then(|root| std::fs::metadata(root).ok())
        .map_or(1, |m| std::os::unix::fs::MetadataExt::ino(&m));
    let mut group = c.benchmark_group("process");
    group.bench_function("lineage, 8 ancestors", |b| {
        b.iter(|| table.lineage(leaf, 8))
    });
    // An exec storm: each child is new, forked and exec'd by the same
    // parent; its lineage and the ancestors' JSON its event carries.
    let mut n = 0u32;
    group.bench_function("lineage and ancestors' JSON of a new child", |b| {
        b.iter(|| {
            n += 1;
            let child = base + 100 + n % 1000;
            table.forked(leaf, child, (100 + n as u64) * 10_000_000);
            table.exec_happened(child, "/usr/bin/true");
            let lineage = table.lineage(child, 8);
            table.exited(child);
            serde_json::to_string(&lineage.ancestors)
        })
    });
    group.bench_function("attribution", |b| {
        b.iter(|| table.attribution(cgroup_root_id, 0, 0))
    });
    group.finish();
}

/// A chmod record turned into an event body, as under a chmod storm: the
/// process (this one, its table entry warm), the path completed on the
/// live file system and its identity looked up, the mode named.
fn interpretation(c: &mut Criterion) {
    use guardrail_common::{syscalls as sc, EventHeader};
    use guardrail_engine::decode::RawRecord;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().canonicalize().unwrap().join("f");
    std::fs::write(&file, b"x").unwrap();
    let pid = std::process::id();
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"storm");
    let record = RawRecord {
        header: EventHeader {
            syscall: sc::CHMOD,
            args: [0, 0o644, 0, 0, 0, 0],
            pid,
            tid: pid,
            comm,
            ..Default::default()
        },
        str0: file.to_str().unwrap().as_bytes().to_vec(),
        str1: vec![],
        dir0: vec![],
        dir1: vec![],
    };
    let mut procfs = ProcFs::default();
    let mut group = c.benchmark_group("interpret");
    group.bench_function("chmod record", |b| {
        b.iter(|| guardrail_engine::interpret::interpret(&record, &mut procfs))
    });
    group.finish();
}

criterion_group!(benches, completion, identity, interpretation);
criterion_main!(benches);
