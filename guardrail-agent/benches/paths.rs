//! What canonical paths cost the agent per event (`cargo xtask bench`
//! reports the medians): completing a path-based call's path on the live
//! file system (directory resolution cached, as during a storm), against
//! the lexical clean-up alone.

use criterion::{criterion_group, criterion_main, Criterion};
use guardrail_agent::canonical::{complete, lexical, FinalComponent};
use guardrail_agent::interpret::LiveFs;
use guardrail_agent::procfs::ProcFs;

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
    group.finish();
}

criterion_group!(benches, completion);
criterion_main!(benches);
