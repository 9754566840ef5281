//! A model of the BPF-LSM decision (guardrail-ebpf/src/enforce/mod.rs,
//! `decide`) over the maps [`super::compile`] produces, and a
//! property test that it agrees with the userspace evaluator on every
//! rule set and event: what the kernel denies is what the rules say.

use guardrail_common::enforce::{action, rule_flags, InodeKey};

use super::Compiled;

/// Mirror of `decide`: `chain` is the object then its parent directories
/// (as (dev, ino), generation 0), `exe` the task's executable.
pub fn decide(
    c: &Compiled,
    op: u32,
    chain: &[(u64, u64)],
    exe: (u64, u64),
    windows: u32,
) -> Option<(usize, u32)> {
    if c.ops & op == 0 {
        return None;
    }
    let mut yes = c.pathless;
    let mut no = 0u64;
    for (depth, &(dev, ino)) in chain.iter().enumerate() {
        let key = InodeKey {
            dev,
            ino,
            generation: 0,
            _pad: 0,
        };
        if let Some(r) = c.inodes.get(&key) {
            yes |= r.subtree;
            no |= r.not_subtree;
            if depth == 0 {
                yes |= r.exact;
                no |= r.not_exact;
            }
        }
    }
    let candidates = yes & !no;
    let (mut matched, mut exempt) = (0u64, 0u64);
    for (i, rule) in c.rules.iter().enumerate() {
        if candidates & (1 << i) == 0 || rule.ops & op == 0 {
            continue;
        }
        if rule.windows_in != 0 && windows & rule.windows_in == 0 || windows & rule.windows_out != 0
        {
            continue;
        }
        if rule.flags & (rule_flags::EXE_ONLY | rule_flags::EXE_EXCEPT) != 0 {
            let listed = c
                .exes
                .iter()
                .any(|e| e.rule == i as u32 && (e.dev, e.ino) == exe);
            if listed != (rule.flags & rule_flags::EXE_ONLY != 0) {
                continue;
            }
        }
        if rule.action == action::ALLOW {
            exempt |= rule.exempts;
        } else {
            matched |= 1 << i;
        }
    }
    matched &= !exempt;
    if matched == 0 {
        return None;
    }
    let kills: u64 = c
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.action == action::KILL)
        .map(|(i, _)| 1u64 << i)
        .sum();
    let pick = if matched & kills != 0 {
        matched & kills
    } else {
        matched
    };
    let i = pick.trailing_zeros() as usize;
    Some((i, c.rules[i].action))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use guardrail_common::enforce::op;
    use proptest::prelude::*;

    use super::*;
    use crate::event::*;
    use crate::kernel_maps::{compile, kernel_dev};
    use crate::rules::compile_text;
    use crate::rules::eval::{evaluate, Enforcement};
    use crate::rules::users::Names;

    const FILES: &[&str] = &["a", "b", "d/c", "d/e/f", "d/e/g"];
    const DIRS: &[&str] = &["d", "d/e"];
    const KINDS: &[(&str, u32)] = &[
        ("file.write", op::OPEN_WRITE),
        ("perm.chmod", op::CHMOD),
        ("file.unlink", op::UNLINK),
    ];

    struct Tree {
        _dir: tempfile::TempDir,
        root: PathBuf,
        exes: [PathBuf; 2],
    }

    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for d in DIRS {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in FILES {
            std::fs::write(root.join(f), b"").unwrap();
        }
        let exes = [root.join("tool1"), root.join("tool2")];
        for e in &exes {
            std::fs::write(e, b"").unwrap();
        }
        Tree {
            _dir: dir,
            root,
            exes,
        }
    }

    fn id(p: &Path) -> (u64, u64) {
        let m = std::fs::metadata(p).unwrap();
        (kernel_dev(m.dev()), m.ino())
    }

    /// The object and every directory above it, as the kernel walks them.
    fn chain(p: &Path) -> Vec<(u64, u64)> {
        p.ancestors().map(id).collect()
    }

    #[derive(Debug, Clone)]
    struct RuleGen {
        kind: usize,
        target: usize,
        subtree: bool,
        exe_not: Option<usize>,
        kill: bool,
    }

    fn rule_gen() -> impl Strategy<Value = RuleGen> {
        (
            0..KINDS.len(),
            0..FILES.len() + DIRS.len(),
            any::<bool>(),
            proptest::option::of(0..2usize),
            any::<bool>(),
        )
            .prop_map(|(kind, target, subtree, exe_not, kill)| RuleGen {
                kind,
                target,
                subtree,
                exe_not,
                kill,
            })
    }

    fn text(t: &Tree, rules: &[RuleGen], allow: Option<(usize, usize)>) -> String {
        let mut s = String::new();
        for (i, r) in rules.iter().enumerate() {
            let target = if r.target < FILES.len() {
                FILES[r.target]
            } else {
                DIRS[r.target - FILES.len()]
            };
            let mut path = t.root.join(target).display().to_string();
            if r.subtree && r.target >= FILES.len() {
                path.push_str("/**");
            }
            s += &format!(
                "[[rule]]\nid = \"r{i}\"\non = [\"{}\"]\npath = [\"{path}\"]\naction = \"{}\"\n",
                KINDS[r.kind].0,
                if r.kill { "kill" } else { "deny" }
            );
            if let Some(e) = r.exe_not {
                s += &format!("exe_not = [\"{}\"]\n", t.exes[e].display());
            }
        }
        if let Some((target, exe)) = allow {
            let target = target % rules.len().max(1);
            if !rules.is_empty() {
                s += &format!(
                    "[[rule]]\nid = \"exception\"\non = [\"*\"]\nexe = [\"{}\"]\naction = \"allow\"\nexempts = [\"r{target}\"]\n",
                    t.exes[exe].display()
                );
            }
        }
        s
    }

    fn event(t: &Tree, kind: usize, file: usize, exe: usize) -> Event {
        let path = t.root.join(FILES[file]).display().to_string();
        let process = Process {
            exe: Some(t.exes[exe].display().to_string().into()),
            ..Default::default()
        };
        let result = SyscallResult {
            ok: true,
            ..Default::default()
        };
        let body = match KINDS[kind].0 {
            "perm.chmod" => Body::Perm {
                syscall: "chmod".into(),
                process,
                result,
                perm: PermDetails {
                    op: "chmod".into(),
                    path: Some(path),
                    mode: Some("0644".into()),
                    ..Default::default()
                },
            },
            k => Body::File {
                syscall: "x".into(),
                process,
                result,
                file: FileDetails {
                    op: if k == "file.unlink" { "unlink" } else { "open" }.into(),
                    path: Some(path),
                    flags: if k == "file.write" {
                        vec!["write".into()]
                    } else {
                        vec![]
                    },
                    resolved: true,
                    ..Default::default()
                },
            },
        };
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn kernel_and_userspace_decide_alike(
            rules in proptest::collection::vec(rule_gen(), 0..6),
            allow in proptest::option::of((0..6usize, 0..2usize)),
            kind in 0..KINDS.len(),
            file in 0..FILES.len(),
            exe in 0..2usize,
        ) {
            let t = tree();
            let set = compile_text(&t.root.join("g.toml"), &text(&t, &rules, allow), Names::default()).unwrap();
            let compiled = compile(&set, 0).unwrap();
            let e = event(&t, kind, file, exe);
            let at = "2026-11-27T12:00:00Z".parse().unwrap();
            let user = evaluate(&set, &e, at, Enforcement { deny: true, kill: true })
                .filter(|d| d.outcome == Outcome::Denied || d.outcome == Outcome::Killed);
            let kernel = decide(&compiled, KINDS[kind].1, &chain(&t.root.join(FILES[file])), id(&t.exes[exe]), 0);
            match (&user, kernel) {
                (None, None) => {}
                (Some(d), Some((i, act))) => {
                    prop_assert_eq!(&compiled.ids[i], &d.rule);
                    prop_assert_eq!(act == action::KILL, d.outcome == Outcome::Killed);
                }
                _ => prop_assert!(false, "userspace {:?} vs kernel {:?}", user, kernel),
            }
        }
    }
}
