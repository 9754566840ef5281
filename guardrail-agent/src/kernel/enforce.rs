//! The kernel side of kill/deny rules: loading the BPF-LSM programs,
//! proving they enforce (canary), and writing the maps that
//! [`guardrail_engine::kernel_maps`] compiles.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use aya::programs::Lsm;
use aya::{Btf, Ebpf};
use guardrail_common::catalogue::{Attach, Hook, HOOKS};
use guardrail_common::enforce::{
    rule_slot, ExeKey, InodeKey, InodeRules, KernelRule, AGENT_PROGRAM, HOST_MNT_NS,
    MAX_KERNEL_RULES,
};
use guardrail_common::pinned::RULE_NAME_LEN;
use guardrail_engine::kernel_maps::{compile, key_of, Compiled};
use guardrail_engine::rules::builtin::SELF_PROTECTION_STATE;
use guardrail_engine::rules::RuleSet;

use super::lineage::Lineage;
use super::pins::Links;
use tracing::{info, warn};

pub struct Enforcer {
    krules: Array<MapData, KernelRule>,
    state: Array<MapData, u64>,
    inodes: HashMap<MapData, InodeKey, InodeRules>,
    exes: HashMap<MapData, ExeKey, u8>,
    /// Rule ids by kernel slot, for the agent after this one.
    names: Array<MapData, [u8; RULE_NAME_LEN]>,
    /// guardrail's maps that only its own programs may open for writing
    /// while the pinned state's rule is in force (`OWN_MAPS`), and the ids
    /// of this load's maps.
    own_maps: HashMap<MapData, u32, u8>,
    own_map_ids: Vec<u32>,
    generation: u32,
    /// Rule ids by generation and kernel index, to name verdicts.
    ids: [Vec<String>; 2],
    current: Option<Compiled>,
    /// Lineage marks: the exemptions of `ancestor_exe_not`.
    lineage: Lineage,
}

/// Stop enforcing the rule in kernel slot `i` of `generation`: it stays
/// in the maps, matching nothing, and no longer protects paths.
fn lift_slot(
    krules: &mut Array<MapData, KernelRule>,
    state: &mut Array<MapData, u64>,
    generation: u32,
    i: u32,
) -> Result<()> {
    krules.set(rule_slot(generation, i), KernelRule::default(), 0)?;
    let slot = 6 + (generation & 1);
    let protecting = state.get(&slot, 0)? & !(1u64 << i);
    state.set(slot, protecting, 0)?;
    Ok(())
}

/// Let only `programs` open the maps `ids` for writing; with no programs,
/// anyone root may open any of them.
fn map_guard(
    exes: &mut HashMap<MapData, ExeKey, u8>,
    own_maps: &mut HashMap<MapData, u32, u8>,
    programs: &[ExeKey],
    ids: &[u32],
) -> Result<()> {
    let ids = if programs.is_empty() { &[][..] } else { ids };
    for p in programs {
        exes.insert(p, 1, 0)?;
    }
    for id in ids {
        own_maps.insert(id, 1, 0)?;
    }
    let stale: Vec<u32> = own_maps
        .keys()
        .filter_map(Result::ok)
        .filter(|id| !ids.contains(id))
        .collect();
    for id in &stale {
        let _ = own_maps.remove(id);
    }
    let stale: Vec<ExeKey> = exes
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.generation == AGENT_PROGRAM && !programs.contains(k))
        .collect();
    for k in &stale {
        let _ = exes.remove(k);
    }
    Ok(())
}

/// Rule ids by kernel slot of `generation`, as the agent that put them in
/// force named them.
fn slot_names(names: &Array<MapData, [u8; RULE_NAME_LEN]>, generation: u32) -> Vec<String> {
    (0..MAX_KERNEL_RULES)
        .map_while(|i| {
            let raw = names.get(&rule_slot(generation, i), 0).ok()?;
            let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            (len > 0).then(|| String::from_utf8_lossy(&raw[..len]).into_owned())
        })
        .collect()
}

/// What a clean stop does, for a pinned state whose agent died without
/// one (SIGKILL, OOM, a crash): lift the self-protection rules `ids`, so
/// that the configuration and the binaries may change (a package upgrade)
/// while every other rule stays enforced. `maps` is the state's map
/// directory; its owner's lock must be held. The rules lifted.
pub fn lift_pinned(maps: &Path, ids: &[&str]) -> Result<Vec<String>> {
    let open = |name: &str| -> Result<MapData> {
        MapData::from_pin(maps.join(name))
            .with_context(|| format!("opening the pinned map {}", maps.join(name).display()))
    };
    let mut state: Array<MapData, u64> =
        Array::try_from(aya::maps::Map::Array(open("ENFORCE_STATE")?))?;
    let names: Array<MapData, [u8; RULE_NAME_LEN]> =
        Array::try_from(aya::maps::Map::Array(open("RULE_NAMES")?))?;
    let mut krules: Array<MapData, KernelRule> =
        Array::try_from(aya::maps::Map::Array(open("KRULES")?))?;
    let generation = state.get(&0, 0)? as u32;
    let mut lifted = Vec::new();
    for (i, name) in slot_names(&names, generation & 1).into_iter().enumerate() {
        if !ids.contains(&name.as_str()) {
            continue;
        }
        lift_slot(&mut krules, &mut state, generation, i as u32)?;
        if name == SELF_PROTECTION_STATE {
            let mut exes: HashMap<MapData, ExeKey, u8> =
                HashMap::try_from(aya::maps::Map::HashMap(open("EXE_RULES")?))?;
            let mut own_maps: HashMap<MapData, u32, u8> =
                HashMap::try_from(aya::maps::Map::HashMap(open("OWN_MAPS")?))?;
            map_guard(&mut exes, &mut own_maps, &[], &[])?;
        }
        lifted.push(name);
    }
    Ok(lifted)
}

/// How many parameters the LSM hooks whose signature changed between
/// kernels take here (their BPF-LSM attach points, from the kernel's BTF).
#[derive(Clone, Copy, Debug)]
pub struct HookShapes {
    /// 4 before 5.19, then 5 (`flags`).
    pub rename_params: usize,
    /// 2 on older kernels, 3 once it gained a leading `idmap`.
    pub setattr_params: usize,
    /// 5 before 5.12, then 6 (`mnt_userns`, later `idmap`).
    pub setxattr_params: usize,
}

impl HookShapes {
    /// The program for `hook` that matches this kernel's prototype of it.
    fn program(&self, hook: &Hook) -> &'static str {
        let newer = match hook.lsm {
            "path_rename" => self.rename_params != 4,
            "inode_setattr" => self.setattr_params != 2,
            "inode_setxattr" => self.setxattr_params != 5,
            _ => false,
        };
        hook.programs[usize::from(newer).min(hook.programs.len() - 1)]
    }
}

/// Attach every hook of the catalogue with `attach(program, hook)`: the
/// program that matches this kernel's prototype; a stand-in only where the
/// hook it stands in for is refused; an optional hook's refusal said and
/// survived, a required one's an error.
fn attach_hooks(
    shapes: HookShapes,
    mut attach: impl FnMut(&'static str, &'static str) -> Result<()>,
) -> Result<()> {
    for hook in HOOKS {
        let result = match hook.attach {
            Attach::InsteadOf(_) => continue,
            _ => attach(shapes.program(hook), hook.lsm),
        };
        match (hook.attach, result) {
            (_, Ok(())) => {}
            (Attach::Optional { lost }, Err(e)) => warn!("{lost}: {e:#}"),
            (_, Err(e)) => {
                let Some(stand_in) = HOOKS
                    .iter()
                    .find(|h| h.attach == Attach::InsteadOf(hook.lsm))
                else {
                    return Err(e);
                };
                attach(shapes.program(stand_in), stand_in.lsm).with_context(|| {
                    format!("{} unusable ({e:#}), and so is {}", hook.lsm, stand_in.lsm)
                })?;
                info!(
                    "{} is enforced through {} on this kernel",
                    hook.lsm, stand_in.lsm
                );
            }
        }
    }
    Ok(())
}

/// Load and attach the LSM programs. `Err` says why this kernel cannot
/// enforce (for the operator).
pub fn load(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    shapes: HookShapes,
    links: &mut Links,
    own_map_ids: Vec<u32>,
) -> Result<Enforcer> {
    let btf = btf.context("kernel BTF is needed for BPF-LSM")?;
    attach_hooks(shapes, |program, lsm| {
        attach(ebpf, program, lsm, btf, links)
    })?;
    let take =
        |ebpf: &mut Ebpf, name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
    let state: Array<MapData, u64> = Array::try_from(take(ebpf, "ENFORCE_STATE")?)?;
    let names: Array<MapData, [u8; RULE_NAME_LEN]> = Array::try_from(take(ebpf, "RULE_NAMES")?)?;
    // A pinned state adopted from the previous agent: its generation is
    // in force, and its verdicts must still be named.
    let generation = state.get(&0, 0).unwrap_or(0) as u32 & 1;
    let adopted_ids = slot_names(&names, generation);
    let mut ids = [Vec::new(), Vec::new()];
    ids[generation as usize] = adopted_ids;
    Ok(Enforcer {
        krules: Array::try_from(take(ebpf, "KRULES")?)?,
        state,
        inodes: HashMap::try_from(take(ebpf, "INODE_RULES")?)?,
        exes: HashMap::try_from(take(ebpf, "EXE_RULES")?)?,
        names,
        own_maps: HashMap::try_from(take(ebpf, "OWN_MAPS")?)?,
        own_map_ids,
        generation,
        ids,
        current: None,
        lineage: Lineage::take(ebpf)?,
    })
}

fn attach(ebpf: &mut Ebpf, program: &str, hook: &str, btf: &Btf, links: &mut Links) -> Result<()> {
    let prog: &mut Lsm = ebpf
        .program_mut(program)
        .with_context(|| format!("{program} missing from the object"))?
        .try_into()?;
    super::attach::timed(program, || prog.load(hook, btf))
        .with_context(|| format!("loading the BPF-LSM program for {hook}"))?;
    let id = prog
        .attach()
        .with_context(|| format!("attaching the BPF-LSM program for {hook}"))?;
    if links.pinning() {
        links.keep(&format!("{program}@{hook}"), prog.take_link(id)?.into())?;
    }
    Ok(())
}

/// A rule id as kept in RULE_NAMES (cut at RULE_NAME_LEN - 1 bytes).
fn rule_name(id: &str) -> [u8; RULE_NAME_LEN] {
    let mut out = [0; RULE_NAME_LEN];
    let n = id.len().min(RULE_NAME_LEN - 1);
    out[..n].copy_from_slice(&id.as_bytes()[..n]);
    out
}

/// Prove the LSM programs enforce: a write-open of the canary file must
/// fail with EPERM. A loaded program is not proof: BPF-LSM also needs
/// `bpf` in the kernel's active LSM list.
pub fn canary(ebpf: &mut Ebpf, dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir)?;
    let file: PathBuf = dir.join(".guardrail-canary");
    std::fs::write(&file, b"")?;
    let meta = std::fs::metadata(&file)?;
    let mut canary: Array<_, InodeKey> =
        Array::try_from(ebpf.map_mut("CANARY").context("CANARY map")?)?;
    canary.set(0, key_of(&meta, 0), 0)?;
    let denied = match std::fs::OpenOptions::new().write(true).open(&file) {
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
        Ok(_) => false,
    };
    canary.set(0, InodeKey::default(), 0)?;
    let _ = std::fs::remove_file(&file);
    Ok(denied)
}

impl Enforcer {
    /// Put `set` in force: write it under the inactive generation, flip
    /// the active generation in one update, then clear the old one.
    pub fn apply(&mut self, set: &RuleSet) -> Result<&Compiled> {
        let next = self.generation ^ 1;
        let compiled = compile(set, next)?;
        if self.current.is_none() {
            // Adopted maps: whatever a previous agent left under the
            // inactive generation (a reload it did not finish) goes first.
            self.purge(next)?;
        }
        for (i, r) in compiled.rules.iter().enumerate() {
            self.krules.set(rule_slot(next, i as u32), r, 0)?;
            self.names
                .set(rule_slot(next, i as u32), rule_name(&compiled.ids[i]), 0)?;
        }
        for (k, v) in &compiled.inodes {
            self.inodes.insert(k, v, 0)?;
        }
        for e in &compiled.exes {
            self.exes.insert(e, 1, 0)?;
        }
        self.lineage.prepare(&compiled.lineages, next)?;
        // Operations and path-less rules first widen, then the generation
        // flips; narrowing them after the flip keeps every moment covered.
        let old_ops = self.state.get(&1, 0).unwrap_or(0);
        let old_pathless = self.state.get(&2, 0).unwrap_or(0);
        self.state.set(1, old_ops | compiled.ops as u64, 0)?;
        self.state.set(2, old_pathless | compiled.pathless, 0)?;
        self.state.set(3 + (next & 1), compiled.kills, 0)?;
        self.state.set(6 + (next & 1), compiled.protecting, 0)?;
        // The host's mount namespace, against which the service manager's
        // own namespaces are told apart.
        if let Some(ns) = crate::procfs::host_mount_namespace() {
            self.state.set(HOST_MNT_NS, ns, 0)?;
        }
        self.state.set(0, next as u64, 0)?;
        self.state.set(1, compiled.ops as u64, 0)?;
        self.state.set(2, compiled.pathless, 0)?;
        match self.current.take() {
            Some(old) => {
                for k in old.inodes.keys() {
                    let _ = self.inodes.remove(k);
                }
                for e in &old.exes {
                    let _ = self.exes.remove(e);
                }
                for i in 0..old.rules.len() as u32 {
                    let slot = rule_slot(self.generation, i);
                    self.krules.set(slot, KernelRule::default(), 0)?;
                    self.names.set(slot, [0; RULE_NAME_LEN], 0)?;
                }
            }
            // The first rule set of this agent: what it replaced is known
            // only to the kernel's maps.
            None => self.purge(self.generation)?,
        }
        for m in &compiled.missing {
            warn!(path = %m, "does not exist: kill/deny rules naming it protect it once it exists and the rules are refreshed");
        }
        info!(
            rules = compiled.rules.len(),
            objects = compiled.inodes.len(),
            generation = next,
            "kill/deny rules compiled into the kernel"
        );
        self.generation = next;
        self.ids[(next & 1) as usize] = compiled.ids.clone();
        self.guard_maps(&compiled)?;
        self.current = Some(compiled);
        Ok(self.current.as_ref().unwrap())
    }

    /// Stop enforcing rule `id` (kept in the maps, matching nothing): for
    /// what must not outlive the agent when the rest does. Whether it was
    /// in force.
    pub fn lift(&mut self, id: &str) -> Result<bool> {
        let generation = self.generation;
        let Some(i) = self.ids[(generation & 1) as usize]
            .iter()
            .position(|r| r == id)
        else {
            return Ok(false);
        };
        lift_slot(&mut self.krules, &mut self.state, generation, i as u32)?;
        if id == SELF_PROTECTION_STATE {
            self.set_map_guard(&[], &[])?;
        }
        Ok(true)
    }

    /// While the pinned state's rule is in force, only the programs it
    /// exempts (guardrail's own binaries) may open guardrail's maps for
    /// writing; without it, anyone root may.
    fn guard_maps(&mut self, compiled: &Compiled) -> Result<()> {
        let Some(i) = compiled
            .ids
            .iter()
            .position(|id| id == SELF_PROTECTION_STATE)
        else {
            return self.set_map_guard(&[], &[]);
        };
        let programs: Vec<ExeKey> = compiled
            .exes
            .iter()
            .filter(|e| e.rule == i as u32)
            .map(|e| ExeKey {
                dev: e.dev,
                ino: e.ino,
                generation: AGENT_PROGRAM,
                rule: AGENT_PROGRAM,
            })
            .collect();
        let ids = self.own_map_ids.clone();
        self.set_map_guard(&programs, &ids)
    }

    /// Make `programs` the only writers of the maps `ids` (none: no guard).
    /// The programs go in first and the maps last, and stale entries go
    /// after that, so the agent is never refused its own maps.
    fn set_map_guard(&mut self, programs: &[ExeKey], ids: &[u32]) -> Result<()> {
        map_guard(&mut self.exes, &mut self.own_maps, programs, ids)
    }

    /// Remove every entry of `generation` from the enforcement maps.
    fn purge(&mut self, generation: u32) -> Result<()> {
        remove_generation(&mut self.inodes, generation);
        let exes: Vec<ExeKey> = self
            .exes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation == generation)
            .collect();
        for e in &exes {
            let _ = self.exes.remove(e);
        }
        for i in 0..MAX_KERNEL_RULES {
            self.krules
                .set(rule_slot(generation, i), KernelRule::default(), 0)?;
            self.names
                .set(rule_slot(generation, i), [0; RULE_NAME_LEN], 0)?;
        }
        Ok(())
    }

    /// Lineage marks the kernel could not store (those processes are not
    /// exempt).
    pub fn lineage_marks_lost(&self) -> u64 {
        self.lineage.lost()
    }

    /// Tell the kernel which windows are active now (bit i: window i of
    /// the rule set in force).
    pub fn set_windows(&mut self, active: u32) -> Result<()> {
        self.state.set(5, active as u64, 0)?;
        Ok(())
    }

    /// The rule id and action of a verdict the kernel reported.
    pub fn verdict_rule(&self, generation: u32, rule: u32) -> Option<&str> {
        let ids = &self.ids[(generation & 1) as usize];
        rule.checked_sub(1)
            .and_then(|i| ids.get(i as usize))
            .map(String::as_str)
    }
}

/// Remove every entry of `generation` from an inode-keyed map (what a
/// generation that is not in force holds).
pub(super) fn remove_generation<V: aya::Pod>(
    map: &mut HashMap<MapData, InodeKey, V>,
    generation: u32,
) {
    let stale: Vec<InodeKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.generation == generation)
        .collect();
    for k in &stale {
        let _ = map.remove(k);
    }
}

/// `guardrail-agent --lift-self-protection`: the self-protection rules
/// `ids` of this build's pinned state lifted, as its agent's clean stop
/// would have (see [`lift_pinned`]). Refused while an
/// agent owns the state; `None` when nothing is pinned.
pub fn lift_self_protection(root: &Path, ids: &[&str]) -> Result<Option<Vec<String>>> {
    let dir = root.join(format!("abi-{}", guardrail_common::ABI_VERSION));
    if !dir.join("maps").exists() {
        return Ok(None);
    }
    let _lock = super::pins::lock(&dir)?;
    lift_pinned(&dir.join("maps"), ids).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: HookShapes = HookShapes {
        rename_params: 5,
        setattr_params: 3,
        setxattr_params: 6,
    };

    /// The programs attached when the kernel refuses the hooks in `refused`.
    fn attached(shapes: HookShapes, refused: &[&str]) -> Result<Vec<&'static str>> {
        let mut done = Vec::new();
        attach_hooks(shapes, |program, lsm| {
            if refused.contains(&lsm) {
                anyhow::bail!("{lsm} refused");
            }
            done.push(program);
            Ok(())
        })?;
        Ok(done)
    }

    #[test]
    fn a_stand_in_is_attached_only_where_its_hook_is_refused() {
        let all = attached(NEW, &[]).unwrap();
        assert!(all.contains(&"guardrail_path_chown"));
        assert!(!all.iter().any(|p| p.starts_with("guardrail_inode_setattr")));
        assert!(all.contains(&"guardrail_path_rename5"));
        assert!(all.contains(&"guardrail_inode_setxattr6"));
        assert_eq!(all.len(), HOOKS.len() - 1);

        let old = HookShapes {
            rename_params: 4,
            setattr_params: 2,
            setxattr_params: 5,
        };
        let on_5_10 = attached(old, &["path_chown"]).unwrap();
        assert!(on_5_10.contains(&"guardrail_inode_setattr2"));
        assert!(!on_5_10.contains(&"guardrail_path_chown"));
        assert!(on_5_10.contains(&"guardrail_path_rename4"));
        assert!(on_5_10.contains(&"guardrail_inode_setxattr5"));
    }

    #[test]
    fn refusals_are_fatal_only_for_required_hooks() {
        let without = attached(NEW, &["move_mount", "inode_setxattr"]).unwrap();
        assert_eq!(without.len(), HOOKS.len() - 3);
        assert!(attached(NEW, &["path_chown", "inode_setattr"]).is_err());
        assert!(attached(NEW, &["file_open"]).is_err());
    }
}
