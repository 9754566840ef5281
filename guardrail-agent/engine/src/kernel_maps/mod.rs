//! The compiler of kill/deny rules into the BPF-LSM maps (what
//! guardrail-ebpf/src/enforce reads): rule slots, protected inodes and
//! exempted executables. Loading those maps is the agent's
//! (`guardrail-agent/src/kernel/enforce.rs`); the model of the kernel's
//! decision over them is [`model`].

pub mod model;
pub mod watch;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use guardrail_common::catalogue::OPERATIONS;
use guardrail_common::enforce::{
    action, rule_flags, ExeKey, InodeKey, InodeRules, KernelRule, MAX_KERNEL_RULES,
    MAX_KERNEL_WINDOWS, SERVICE_MANAGER,
};

use crate::rules::compile::Rule;
use crate::rules::matchers::PathMatcher;
use crate::rules::spec::{Action, Mode};
use crate::rules::RuleSet;

/// Kernel `dev_t` (MAJOR << 20 | MINOR) of a userspace `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = libc::major(st_dev) as u64;
    let minor = libc::minor(st_dev) as u64;
    (major << 20) | minor
}

pub fn key_of(meta: &std::fs::Metadata, generation: u32) -> InodeKey {
    InodeKey {
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
        generation,
        _pad: 0,
    }
}

/// The operations a rule's `on` kinds cover in the kernel (the catalogue's
/// kernel bits of each kind in the mask).
pub fn ops_of(kinds: u32) -> u32 {
    OPERATIONS
        .iter()
        .enumerate()
        .filter(|(bit, _)| kinds & (1 << bit) != 0)
        .fold(0, |ops, (_, operation)| ops | operation.ops)
}

/// What one generation of kernel maps holds.
#[derive(Debug, Default)]
pub struct Compiled {
    pub rules: Vec<KernelRule>,
    /// Kernel rule index → rule id.
    pub ids: Vec<String>,
    pub inodes: HashMap<InodeKey, InodeRules>,
    pub exes: Vec<ExeKey>,
    pub pathless: u64,
    /// Rules whose action is kill.
    pub kills: u64,
    /// Rules whose action is kill or deny: the ones path integrity serves.
    pub protecting: u64,
    pub ops: u32,
    /// Paths that do not exist now and so protect nothing until they do
    /// (re-resolved on every rule refresh).
    pub missing: Vec<String>,
    /// Per kernel rule index: the programs whose descendants it exempts
    /// (`ancestor_exe_not`), turned into lineage bits by [`Lineage`].
    ///
    /// [`Lineage`]: super::lineage::Lineage
    pub lineages: Vec<Vec<String>>,
}

/// Which rules go to the kernel: kill/deny in enforce mode, and the allow
/// rules that exempt them.
pub fn kernel_rules(set: &RuleSet) -> Vec<&Rule> {
    let enforced: Vec<&str> = set
        .rules
        .iter()
        .filter(|r| r.mode == Mode::Enforce && matches!(r.action, Action::Kill | Action::Deny))
        .map(|r| r.id.as_str())
        .collect();
    set.rules
        .iter()
        .filter(|r| {
            enforced.contains(&r.id.as_str())
                || (r.action == Action::Allow
                    && r.exempts.iter().any(|e| enforced.contains(&e.as_str())))
        })
        .collect()
}

fn add_paths(out: &mut Compiled, matcher: &PathMatcher, bit: u64, generation: u32, negated: bool) {
    for pattern in &matcher.patterns {
        let (base, subtree) = match pattern.strip_suffix("/**") {
            Some(b) => (if b.is_empty() { "/" } else { b }, true),
            None => (pattern.as_str(), false),
        };
        let mut metas = Vec::new();
        if let Ok(m) = std::fs::metadata(base) {
            metas.push(m);
        }
        // A symlink is protected as itself and as what it points to.
        if let Ok(m) = std::fs::symlink_metadata(base) {
            if m.file_type().is_symlink() {
                metas.push(m);
            }
        }
        if metas.is_empty() {
            out.missing.push(base.to_string());
        }
        if !negated {
            guard_path(out, Path::new(base), bit, generation);
        }
        for meta in metas {
            let entry = out.inodes.entry(key_of(&meta, generation)).or_default();
            let field = match (subtree, negated) {
                (false, false) => &mut entry.exact,
                (true, false) => &mut entry.subtree,
                (false, true) => &mut entry.not_exact,
                (true, true) => &mut entry.not_subtree,
            };
            *field |= bit;
        }
    }
}

/// Path integrity: mark `base` (when it exists) and every directory above
/// it as guarded by rule `bit`, so that the kernel refuses a mount on them
/// or a rename of them — which would change what the rule's path
/// resolves to without touching the protected inode. A symlinked
/// directory on the way is guarded as the link and as its target.
fn guard_path(out: &mut Compiled, base: &Path, bit: u64, generation: u32) {
    for dir in base.ancestors() {
        let metas = [std::fs::metadata(dir), std::fs::symlink_metadata(dir)];
        for meta in metas.into_iter().flatten() {
            out.inodes
                .entry(key_of(&meta, generation))
                .or_default()
                .guards |= bit;
        }
    }
}

/// Compile the kernel-enforced part of `set` for `generation`. The rule
/// compiler has already refused matchers the kernel cannot evaluate.
pub fn compile(set: &RuleSet, generation: u32) -> Result<Compiled> {
    let rules = kernel_rules(set);
    anyhow::ensure!(
        rules.len() <= MAX_KERNEL_RULES as usize,
        "{} kill/deny/allow rules need the kernel; it holds {MAX_KERNEL_RULES}",
        rules.len()
    );
    let mut out = Compiled::default();
    let index: HashMap<&str, u32> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i as u32))
        .collect();
    for (i, r) in rules.iter().enumerate() {
        let bit = 1u64 << i;
        let mut k = KernelRule {
            ops: ops_of(r.kinds),
            action: match r.action {
                Action::Deny => action::DENY,
                Action::Kill => action::KILL,
                _ => action::ALLOW,
            },
            ..Default::default()
        };
        for e in &r.exempts {
            if let Some(&j) = index.get(e.as_str()) {
                k.exempts |= 1 << j;
            }
        }
        if let Some(p) = &r.path {
            k.flags |= rule_flags::HAS_PATH;
            add_paths(&mut out, p, bit, generation, false);
        } else {
            out.pathless |= bit;
        }
        if let Some(p) = &r.path_not {
            add_paths(&mut out, p, bit, generation, true);
        }
        for (matcher, flag) in [
            (&r.exe, rule_flags::EXE_ONLY),
            (&r.exe_not, rule_flags::EXE_EXCEPT),
        ] {
            let Some(m) = matcher else { continue };
            k.flags |= flag;
            for pattern in &m.patterns {
                match std::fs::metadata(pattern) {
                    Ok(meta) => {
                        let key = key_of(&meta, generation);
                        out.exes.push(ExeKey {
                            dev: key.dev,
                            ino: key.ino,
                            generation,
                            rule: i as u32,
                        });
                    }
                    Err(_) => out.missing.push(pattern.clone()),
                }
            }
        }
        if r.to_root == Some(true) {
            k.flags |= rule_flags::TO_ROOT;
        }
        out.lineages.push(match (&r.ancestor_exe_not, k.action) {
            (Some(m), a) if a != action::ALLOW => m.patterns.clone(),
            _ => Vec::new(),
        });
        for (list, bits) in [
            (&r.in_window, &mut k.windows_in),
            (&r.outside_window, &mut k.windows_out),
        ] {
            for &w in list {
                anyhow::ensure!(
                    w < MAX_KERNEL_WINDOWS,
                    "rule {}: the kernel tracks the first {MAX_KERNEL_WINDOWS} windows only",
                    r.id
                );
                *bits |= 1 << w;
            }
        }
        if k.action != action::ALLOW {
            out.ops |= k.ops;
        }
        if k.action == action::KILL {
            out.kills |= bit;
        }
        if k.action != action::ALLOW {
            out.protecting |= bit;
        }
        out.rules.push(k);
        out.ids.push(r.id.clone());
    }
    // Path integrity must not stop the service manager from setting up
    // services' private namespaces (see SERVICE_MANAGER).
    if out.protecting != 0 {
        if let Ok(meta) = std::fs::metadata("/proc/1/exe") {
            let key = key_of(&meta, generation);
            out.exes.push(ExeKey {
                dev: key.dev,
                ino: key.ino,
                generation,
                rule: SERVICE_MANAGER,
            });
        }
    }
    Ok(out)
}

/// The operation catalogue against the probes: the same hooks and
/// programs, the same syscalls, every kernel bit decided somewhere.
#[cfg(test)]
mod catalogue {
    use std::collections::BTreeSet;

    use guardrail_common::catalogue::{Attach, HOOKS, OPERATIONS};
    use guardrail_common::syscalls::WATCHED;

    /// (hook, program) of every BPF-LSM program in the probes' source.
    fn programs_in_source() -> BTreeSet<(String, String)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../guardrail-ebpf/src/enforce/hooks.rs"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut found = BTreeSet::new();
        let mut hook = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("#[lsm(hook = \"") {
                hook = Some(rest.trim_end_matches("\")]").to_string());
            } else if let (Some(h), Some(rest)) = (&hook, line.strip_prefix("pub fn ")) {
                let name = rest.split('(').next().unwrap().to_string();
                found.insert((h.clone(), name));
                hook = None;
            }
        }
        found
    }

    #[test]
    fn hooks_and_programs_are_the_probes() {
        let catalogue: BTreeSet<(String, String)> = HOOKS
            .iter()
            .flat_map(|h| {
                h.programs
                    .iter()
                    .map(|p| (h.lsm.to_string(), p.to_string()))
            })
            .collect();
        let source = programs_in_source();
        assert!(source.len() > 20, "{source:?}");
        assert_eq!(catalogue, source);
        for h in HOOKS {
            if let Attach::InsteadOf(other) = h.attach {
                assert!(
                    HOOKS.iter().any(|o| o.lsm == other),
                    "{} stands in for {other}",
                    h.lsm
                );
            }
        }
    }

    #[test]
    fn every_watched_syscall_performs_an_operation() {
        let watched: BTreeSet<&str> = WATCHED.iter().map(|(_, name)| *name).collect();
        let named: BTreeSet<&str> = OPERATIONS
            .iter()
            .flat_map(|o| o.syscalls)
            .copied()
            .collect();
        assert_eq!(watched, named);
    }

    #[test]
    fn every_kernel_bit_is_decided_by_a_hook() {
        let ops = OPERATIONS.iter().fold(0, |a, o| a | o.ops);
        let decided = HOOKS.iter().fold(0, |a, h| a | h.decides);
        assert_eq!(ops, decided);
        assert!(OPERATIONS.len() <= 32, "a kind is a bit of a u32 mask");
    }
}
