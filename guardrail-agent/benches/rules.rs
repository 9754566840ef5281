//! Rule evaluation cost per event for 1, 10, 100 and 1000 rules
//! (`cargo xtask bench` runs this and puts the medians in its report).
//!
//! The rules are a realistic mix — file rules on subtrees, exec rules on
//! executables, chmod rules on mode bits — none of which matches the
//! measured events, so every rule that can apply is looked at: the cost an
//! ordinary, uninteresting event pays.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use guardrail_engine::event::Event;
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::{compile_text, evaluate, RuleSet};

/// `n` rules, a third each of file, exec and chmod rules.
pub fn rules(n: usize) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        let rule = match i % 3 {
            0 => format!(
                "[[rule]]\nid = \"files-{i}\"\non = [\"file.write\", \"file.unlink\", \"file.rename\"]\npath = [\"/srv/app{i}/**\", \"/etc/app{i}.conf\"]\nexe_not = [\"/usr/bin/dpkg\"]\n"
            ),
            1 => format!(
                "[[rule]]\nid = \"exec-{i}\"\non = [\"exec\"]\nexe = [\"/opt/tool{i}/bin/*\"]\n"
            ),
            _ => format!(
                "[[rule]]\nid = \"mode-{i}\"\non = [\"perm.chmod\"]\npath = [\"/data{i}/**\"]\nmode_set = [\"setuid\", \"world_writable\"]\n"
            ),
        };
        text.push_str(&rule);
        text.push('\n');
    }
    compile_text(Path::new("/bench/rules.toml"), &text, Names::default()).expect("valid rules")
}

const WRITE: &str = r#"{"seq":2,"time":"2026-11-27T12:51:17.068022785Z","ktime_ns":1,"kind":"file","syscall":"openat","process":{"pid":8718,"tid":8718,"ppid":7916,"uid":0,"gid":0,"euid":0,"egid":0,"auid":null,"comm":"touch","exe":"/usr/bin/touch","parent_exe":"/usr/bin/bash","cgroup_id":1},"result":{"ok":true,"ret":3,"errno":null},"file":{"op":"open","path":"/srv/web/index.html","resolved":true,"flags":["write","create"],"mode":"0666"}}"#;
const EXEC: &str = r#"{"seq":3,"time":"2026-11-27T12:51:17.068489316Z","ktime_ns":2,"kind":"exec","syscall":"execve","process":{"pid":8719,"tid":8719,"ppid":7916,"uid":0,"gid":0,"euid":0,"egid":0,"auid":null,"comm":"sleep","exe":"/usr/bin/sleep","parent_exe":"/usr/bin/bash","cgroup_id":1},"result":{"ok":true,"ret":0,"errno":null},"exec":{"path":"/usr/bin/sleep","argv":["sleep","1"],"argv_truncated":false,"cwd":"/root"}}"#;

fn evaluation(c: &mut Criterion) {
    let events: Vec<(&str, Event)> = vec![
        ("file write", serde_json::from_str(WRITE).unwrap()),
        ("exec", serde_json::from_str(EXEC).unwrap()),
    ];
    let at = jiff::Timestamp::now();
    let mut group = c.benchmark_group("evaluate");
    for n in [1, 10, 100, 1000] {
        let set = rules(n);
        for (name, event) in &events {
            group.bench_with_input(BenchmarkId::new(*name, n), &set, |b, set| {
                b.iter(|| evaluate(set, event, at, Enforcement::default()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
