//! The agent's side of lineage marks (see `guardrail_common::lineage`):
//! which program path owns which bit, the inodes the kernel recognises
//! them by, each kill/deny rule's exempted lineages, and marks for the
//! processes that already ran when a program became listed.

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use aya::Ebpf;
use guardrail_common::enforce::{rule_slot, MAX_KERNEL_RULES};
use guardrail_common::lineage::{
    state, LineageMark, ProgramKey, LINEAGE_PATH_LEN, MAX_LINEAGE_PROGRAMS, SEEDED,
};
use tracing::{info, warn};

use guardrail_engine::kernel_maps::kernel_dev;

/// Which bit each program path owns.
pub type Bits = BTreeMap<String, u32>;

/// Give every path of `wanted` a bit: the one it had in `previous`, else
/// a bit never used (not in `dirty`), else a freed one. Returns the new
/// assignment and the freed bits it reuses (which the caller must clear
/// from every mark first: a process marked under the old program must not
/// be exempt as a descendant of the new one).
pub fn assign(previous: &Bits, wanted: &BTreeSet<String>, dirty: u64) -> Result<(Bits, u64)> {
    let mut out: Bits = previous
        .iter()
        .filter(|(p, _)| wanted.contains(*p))
        .map(|(p, &b)| (p.clone(), b))
        .collect();
    let mut taken: u64 = out.values().fold(0, |acc, &b| acc | (1 << b));
    let mut reused = 0;
    for path in wanted {
        if out.contains_key(path) {
            continue;
        }
        let free = !taken;
        let clean = free & !dirty;
        let pick = if clean != 0 { clean } else { free };
        anyhow::ensure!(
            pick != 0,
            "ancestor_exe_not on kill/deny rules names more than {MAX_LINEAGE_PROGRAMS} distinct \
             programs; the kernel tracks {MAX_LINEAGE_PROGRAMS}"
        );
        let bit = pick.trailing_zeros();
        if clean == 0 {
            reused |= 1 << bit;
        }
        taken |= 1 << bit;
        out.insert(path.clone(), bit);
    }
    Ok((out, reused))
}

/// Each kernel rule's exempted lineages as a bit mask.
pub fn rule_masks(lineages: &[Vec<String>], bits: &Bits) -> Vec<u64> {
    lineages
        .iter()
        .map(|paths| {
            paths
                .iter()
                .filter_map(|p| bits.get(p))
                .fold(0, |acc, &b| acc | (1 << b))
        })
        .collect()
}

/// Whether `path` starts with `#!`: the kernel knows a process by its
/// interpreter, never by the script it runs.
fn is_script(path: &str) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == b"#!")
}

/// One process as /proc shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    pub ppid: u32,
    pub start_ticks: u64,
    /// Bits of the program it runs now.
    pub runs: u64,
}

/// The marks processes that already run should have for `bits`: what
/// their ancestors (parent chain, as far as it goes) run, and what they
/// run. A process whose chain breaks (re-parented after its listed
/// ancestor ended) cannot be told apart from any other: not marked.
pub fn marks_from(procs: &StdHashMap<u32, ProcEntry>, bits: u64) -> Vec<(u32, LineageMark)> {
    let mut out = Vec::new();
    for (&pid, p) in procs {
        let mut inherited = 0;
        let mut at = p.ppid;
        for _ in 0..256 {
            let Some(a) = procs.get(&at) else { break };
            inherited |= a.runs;
            if a.ppid == at || a.ppid == 0 {
                break;
            }
            at = a.ppid;
        }
        let mark = LineageMark {
            inherited: inherited & bits,
            passes_on: p.runs & bits,
            start: SEEDED | p.start_ticks,
        };
        if mark.inherited | mark.passes_on != 0 {
            out.push((pid, mark));
        }
    }
    out
}

pub struct Lineage {
    programs: HashMap<MapData, ProgramKey, u64>,
    marks: HashMap<MapData, u32, LineageMark>,
    exempt: Array<MapData, u64>,
    state: Array<MapData, u64>,
    paths: Array<MapData, [u8; LINEAGE_PATH_LEN]>,
    bits: Bits,
    /// Inodes written to LINEAGE_PROGRAMS by this agent.
    inodes: StdHashMap<ProgramKey, u64>,
}

impl Lineage {
    /// Take the maps; the bits a previous agent assigned stay as they were.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
        let programs = HashMap::try_from(take("LINEAGE_PROGRAMS")?)?;
        let marks = HashMap::try_from(take("LINEAGE_MARKS")?)?;
        let exempt = Array::try_from(take("LINEAGE_EXEMPT")?)?;
        let state = Array::try_from(take("LINEAGE_STATE")?)?;
        let paths: Array<MapData, [u8; LINEAGE_PATH_LEN]> =
            Array::try_from(take("LINEAGE_PATHS")?)?;
        let mut bits = Bits::new();
        for bit in 0..MAX_LINEAGE_PROGRAMS {
            let raw = paths.get(&bit, 0)?;
            let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            if len > 0 {
                bits.insert(String::from_utf8_lossy(&raw[..len]).into_owned(), bit);
            }
        }
        let inodes = programs.iter().filter_map(Result::ok).collect();
        Ok(Self {
            programs,
            marks,
            exempt,
            state,
            paths,
            bits,
            inodes,
        })
    }

    /// Before a rule set's generation flips: give its lineages bits, make
    /// the kernel recognise their programs, mark the processes that
    /// already descend from newly listed ones, and write each rule's
    /// exempted lineages under `generation`.
    pub fn prepare(&mut self, lineages: &[Vec<String>], generation: u32) -> Result<()> {
        let wanted: BTreeSet<String> = lineages.iter().flatten().cloned().collect();
        for path in &wanted {
            anyhow::ensure!(
                path.len() < LINEAGE_PATH_LEN,
                "ancestor_exe_not: {path:?} is longer than {} bytes",
                LINEAGE_PATH_LEN - 1
            );
        }
        let dirty = self.state.get(&state::DIRTY, 0).unwrap_or(0);
        let (bits, reused) = assign(&self.bits, &wanted, dirty)?;
        let new: u64 = bits
            .iter()
            .filter(|(p, b)| self.bits.get(*p) != Some(b))
            .fold(0, |acc, (_, &b)| acc | (1 << b));
        if reused != 0 {
            self.clear_marks(reused)?;
        }
        for bit in 0..MAX_LINEAGE_PROGRAMS {
            let mut raw = [0u8; LINEAGE_PATH_LEN];
            if let Some((p, _)) = bits.iter().find(|(_, &b)| b == bit) {
                raw[..p.len()].copy_from_slice(p.as_bytes());
            }
            self.paths.set(bit, raw, 0)?;
        }
        let used = bits.values().fold(0, |acc, &b| acc | (1u64 << b));
        self.state.set(state::DIRTY, dirty | used, 0)?;
        // The kernel recognises each program by its inode now.
        let mut inodes: StdHashMap<ProgramKey, u64> = StdHashMap::new();
        for (path, &bit) in &bits {
            if is_script(path) {
                warn!(
                    program = %path,
                    "ancestor_exe_not on a kill/deny rule names a script: the kernel knows a \
                     process by its interpreter, so its descendants are not exempt; name the \
                     program that runs it"
                );
                continue;
            }
            match std::fs::metadata(path) {
                Ok(m) => {
                    let key = ProgramKey {
                        dev: kernel_dev(m.dev()),
                        ino: m.ino(),
                    };
                    *inodes.entry(key).or_default() |= 1 << bit;
                }
                Err(_) => {
                    warn!(program = %path, "ancestor_exe_not: does not exist; its descendants are marked once it exists and the rules are refreshed")
                }
            }
        }
        for (k, v) in &inodes {
            self.programs.insert(k, v, 0)?;
        }
        for k in self.inodes.keys() {
            if !inodes.contains_key(k) {
                let _ = self.programs.remove(k);
            }
        }
        self.inodes = inodes;
        self.bits = bits;
        if new != 0 {
            self.seed(new);
        }
        for (i, mask) in rule_masks(lineages, &self.bits).into_iter().enumerate() {
            self.exempt.set(rule_slot(generation, i as u32), mask, 0)?;
        }
        for i in lineages.len() as u32..MAX_KERNEL_RULES {
            self.exempt.set(rule_slot(generation, i), 0, 0)?;
        }
        Ok(())
    }

    /// Forget `bits` in every mark.
    fn clear_marks(&mut self, bits: u64) -> Result<()> {
        let all: Vec<(u32, LineageMark)> = self.marks.iter().filter_map(Result::ok).collect();
        for (pid, mut m) in all {
            if (m.inherited | m.passes_on) & bits != 0 {
                m.inherited &= !bits;
                m.passes_on &= !bits;
                self.marks.insert(pid, m, 0)?;
            }
        }
        Ok(())
    }

    /// Mark the processes running now that descend from (or run) the
    /// programs of `bits`, from /proc ancestry. Twice: a process forked
    /// from a not-yet-marked parent during the first pass is found by the
    /// second. A mark whose process ended meanwhile is never trusted by
    /// the kernel (start time), so a reused pid gains nothing.
    fn seed(&mut self, bits: u64) {
        let by_inode: StdHashMap<ProgramKey, u64> = self.inodes.clone();
        let mut seeded = 0;
        for _ in 0..2 {
            let procs = read_proc(&by_inode);
            for (pid, mark) in marks_from(&procs, bits) {
                let merged = match self.marks.get(&pid, 0) {
                    Ok(old) if same_process(&old, mark.start & !SEEDED) => LineageMark {
                        inherited: old.inherited | mark.inherited,
                        passes_on: old.passes_on | mark.passes_on,
                        start: old.start,
                    },
                    _ => mark,
                };
                if self.marks.insert(pid, merged, 0).is_ok() {
                    seeded += 1;
                }
            }
        }
        info!(
            processes = seeded,
            "lineage marks given to processes already running"
        );
    }

    /// Marks the kernel could not store since the maps were created.
    pub fn lost(&self) -> u64 {
        self.state.get(&state::LOST, 0).unwrap_or(0)
    }
}

/// Whether `old` belongs to the process that started at `ticks`.
fn same_process(old: &LineageMark, ticks: u64) -> bool {
    if old.start & SEEDED != 0 {
        old.start & !SEEDED == ticks
    } else {
        old.start / guardrail_common::lineage::TICK_NS == ticks
    }
}

/// Every process /proc shows, with the bits of the program it runs.
fn read_proc(by_inode: &StdHashMap<ProgramKey, u64>) -> StdHashMap<u32, ProcEntry> {
    let mut out = StdHashMap::new();
    for pid in crate::procfs::pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((ppid, start_ticks)) = crate::procfs::parse_stat(&stat) else {
            continue;
        };
        let runs = std::fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|m| {
                by_inode
                    .get(&ProgramKey {
                        dev: kernel_dev(m.dev()),
                        ino: m.ino(),
                    })
                    .copied()
            })
            .unwrap_or(0);
        out.insert(
            pid,
            ProcEntry {
                ppid,
                start_ticks,
                runs,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn programs_keep_their_bits_across_rule_changes() {
        let (first, reused) =
            assign(&Bits::new(), &set(&["/usr/bin/dpkg", "/usr/bin/apt"]), 0).unwrap();
        assert_eq!(reused, 0);
        let (second, _) = assign(
            &first,
            &set(&["/usr/bin/apt", "/usr/bin/dpkg", "/usr/sbin/x"]),
            0b11,
        )
        .unwrap();
        assert_eq!(second["/usr/bin/dpkg"], first["/usr/bin/dpkg"]);
        assert_eq!(second["/usr/bin/apt"], first["/usr/bin/apt"]);
        assert_eq!(second["/usr/sbin/x"], 2);
    }

    #[test]
    fn a_freed_bit_is_reused_last_and_reported() {
        // dpkg had bit 0; it is no longer listed. A new program takes a
        // never-used bit while there is one.
        let previous: Bits = [("/usr/bin/dpkg".to_string(), 0)].into();
        let (bits, reused) = assign(&previous, &set(&["/usr/bin/new"]), 0b1).unwrap();
        assert_eq!(bits["/usr/bin/new"], 1);
        assert_eq!(reused, 0);
        // Every bit dirty: the freed one is reused and reported, so that
        // it is cleared from every mark before it names another program.
        let (bits, reused) = assign(&previous, &set(&["/usr/bin/new"]), u64::MAX).unwrap();
        assert_eq!(bits["/usr/bin/new"], 0);
        assert_eq!(reused, 1);
    }

    #[test]
    fn more_programs_than_bits_is_an_error() {
        let many: BTreeSet<String> = (0..65).map(|i| format!("/bin/p{i}")).collect();
        let e = assign(&Bits::new(), &many, 0).unwrap_err().to_string();
        assert!(e.contains("64"), "{e}");
        let enough: BTreeSet<String> = (0..64).map(|i| format!("/bin/p{i}")).collect();
        assert_eq!(assign(&Bits::new(), &enough, 0).unwrap().0.len(), 64);
    }

    #[test]
    fn rules_exempt_the_bits_of_their_programs() {
        let bits: Bits = [
            ("/usr/bin/dpkg".to_string(), 3),
            ("/usr/bin/apt".to_string(), 5),
        ]
        .into();
        let masks = rule_masks(
            &[
                vec!["/usr/bin/dpkg".into(), "/usr/bin/apt".into()],
                vec![],
                vec!["/usr/bin/apt".into()],
            ],
            &bits,
        );
        assert_eq!(masks, vec![(1 << 3) | (1 << 5), 0, 1 << 5]);
    }

    #[test]
    fn seeding_follows_the_parent_chain() {
        let p = |ppid, runs| ProcEntry {
            ppid,
            start_ticks: 7,
            runs,
        };
        // 1 init → 10 dpkg (bit 0) → 11 sh → 12 cp; 20 bash → 21 cp;
        // 30 dpkg's re-parented daemon (chain broken: not marked).
        let procs: StdHashMap<u32, ProcEntry> = [
            (1, p(0, 0)),
            (10, p(1, 0b1)),
            (11, p(10, 0)),
            (12, p(11, 0)),
            (20, p(1, 0)),
            (21, p(20, 0)),
            (30, p(1, 0)),
        ]
        .into();
        let mut marks = marks_from(&procs, 0b1);
        marks.sort_by_key(|(pid, _)| *pid);
        let pids: Vec<u32> = marks.iter().map(|(pid, _)| *pid).collect();
        assert_eq!(pids, vec![10, 11, 12]);
        assert_eq!(marks[0].1.inherited, 0, "dpkg is not its own ancestor");
        assert_eq!(marks[0].1.passes_on, 1);
        assert_eq!(marks[2].1.inherited, 1);
        assert_eq!(marks[2].1.start, SEEDED | 7);
        // Only the bits asked for.
        assert!(marks_from(&procs, 0b10).is_empty());
    }

    #[test]
    fn a_pid_cycle_in_proc_does_not_hang() {
        let procs: StdHashMap<u32, ProcEntry> = [
            (
                5,
                ProcEntry {
                    ppid: 6,
                    start_ticks: 1,
                    runs: 1,
                },
            ),
            (
                6,
                ProcEntry {
                    ppid: 5,
                    start_ticks: 1,
                    runs: 0,
                },
            ),
        ]
        .into();
        assert_eq!(marks_from(&procs, 1).len(), 2);
    }
}
