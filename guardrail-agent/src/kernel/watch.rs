//! The read watch set: which files' read-only opens the probes report
//! (rules of kind `file.read`), compiled from the rules into the kernel's
//! `READ_WATCH` map by device and inode, and put in force with a
//! generation flip so that a reload never leaves a moment unwatched.
//!
//! What a pattern watches (see guardrail_common::watch): the files that
//! exist and match it, each under every name (hard links, renames). An
//! exact path is that file; a glob (`/root/.ssh/id_*`,
//! `/etc/kubernetes/**/*.key`) the matching files found below its
//! directory part, 16 levels deep. A file created, renamed or linked to a
//! watched name is watched once the agent has seen that event (the set is
//! recompiled then, at most every 100 ms), and the set is recompiled
//! every 5 s and on reload. The agent filters what the kernel reports
//! with the rule's own globs.
//!
//! Those refreshes compile on a thread of their own: a compile looks at
//! up to 16,384 files and walks up to 200,000 directory entries, which
//! must not hold up the events. Only a reload compiles in place, because
//! the new watch set must be in force before the new kill/deny rules.

use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use aya::Ebpf;
use guardrail_common::enforce::InodeKey;
use guardrail_common::watch;
use guardrail_engine::kernel_maps::watch::{compile, WatchSet, MAX_PER_GENERATION, MAX_VISITED};
use guardrail_engine::rules::RuleSet;
use tracing::{info, warn};

use super::enforce::remove_generation;

/// The kernel's watch maps and the set in force.
pub struct ReadWatch {
    map: HashMap<MapData, InodeKey, u8>,
    state: Array<MapData, u64>,
    /// `READ_WATCH_BITS`, and what this agent wrote to each generation's
    /// words (the map starts zeroed and is this agent's own).
    bits: Array<MapData, u64>,
    written_bits: [Vec<u64>; 2],
    generation: u32,
    current: WatchSet,
    compiled_at: Instant,
    /// An event changed a watched name since the last compile.
    touched: bool,
    /// Sets put in force since the agent started.
    swaps: u64,
    /// The set the last swap replaced, its generation and when: removed
    /// from the kernel a moment later (see [`RETIRE_AFTER`]).
    retired: Option<(WatchSet, u32, Instant)>,
    /// A write of the inactive generation failed half-way: it holds
    /// entries no set names.
    inactive_dirty: bool,
    /// A refresh compiling on its thread, and the rules it compiles.
    compiling: Option<(Arc<RuleSet>, Receiver<WatchSet>)>,
}

/// How long a replaced generation stays in the kernel after the flip:
/// far longer than a probe takes from reading the state word to its
/// lookups.
const RETIRE_AFTER: Duration = Duration::from_millis(100);

fn key(dev: u64, ino: u64, generation: u32) -> InodeKey {
    InodeKey {
        dev,
        ino,
        generation,
        _pad: 0,
    }
}

/// What `guardrail status` shows of the read watch set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatchStatus {
    /// Files watched.
    pub files: usize,
    /// Files left out because the set was full.
    pub left_out: usize,
    /// Sets put in force since the agent started (each reload or change of
    /// a watched name that changed the set).
    pub swaps: u64,
}

/// How soon after an event touched a watched name the set is recompiled
/// (a burst of creations costs one compile).
const SOON: Duration = Duration::from_millis(100);

/// How often the set is recompiled from the file system between reloads
/// (new files and directories under watched directories).
const REFRESH: Duration = Duration::from_secs(5);

impl ReadWatch {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = HashMap::try_from(ebpf.take_map("READ_WATCH").context("READ_WATCH map")?)?;
        let state: Array<MapData, u64> = Array::try_from(
            ebpf.take_map("READ_WATCH_STATE")
                .context("READ_WATCH_STATE map")?,
        )?;
        let bits = Array::try_from(
            ebpf.take_map("READ_WATCH_BITS")
                .context("READ_WATCH_BITS map")?,
        )?;
        let zeroed = || vec![0; watch::BITMAP_WORDS as usize];
        Ok(ReadWatch {
            map,
            state,
            bits,
            written_bits: [zeroed(), zeroed()],
            generation: 0,
            current: WatchSet::default(),
            compiled_at: Instant::now(),
            touched: false,
            swaps: 0,
            retired: None,
            inactive_dirty: false,
            compiling: None,
        })
    }

    /// An event created, replaced or removed a watched name: recompile
    /// now, or soon after the last compile.
    pub fn touched(&mut self, set: &Arc<RuleSet>) -> Result<()> {
        self.touched = true;
        self.refresh(set)
    }

    /// Put a finished refresh in force; start one when a watched name was
    /// touched (at most every 100 ms), else every few seconds. Called
    /// between drains: the compile runs on a thread of its own.
    pub fn refresh(&mut self, set: &Arc<RuleSet>) -> Result<()> {
        self.remove_retired();
        if let Some((rules, done)) = &self.compiling {
            match done.try_recv() {
                Err(TryRecvError::Empty) => return Ok(()),
                // Compiled for rules a reload has since replaced: the
                // reload compiled its own.
                Ok(_) if !Arc::ptr_eq(rules, set) => self.compiling = None,
                Ok(next) => {
                    self.compiling = None;
                    return self.put_in_force(next);
                }
                Err(TryRecvError::Disconnected) => {
                    self.compiling = None;
                    warn!("compiling the read watch set failed (its thread ended)");
                }
            }
        }
        let since = self.compiled_at.elapsed();
        // Not while the last swap's generation may still be read: the
        // next swap writes into it.
        if self.retired.is_some() || (since < REFRESH && !(self.touched && since >= SOON)) {
            return Ok(());
        }
        self.compiled_at = Instant::now();
        self.touched = false;
        let (tx, rx) = mpsc::channel();
        let rules = Arc::clone(set);
        std::thread::Builder::new()
            .name("read-watch".into())
            .spawn(move || {
                let _ = tx.send(compile(&rules));
            })
            .context("starting the read watch set's compile")?;
        self.compiling = Some((Arc::clone(set), rx));
        Ok(())
    }

    pub fn status(&self) -> WatchStatus {
        WatchStatus {
            files: self.current.entries.len(),
            left_out: self.current.overflow,
            swaps: self.swaps,
        }
    }

    /// Compile `set`'s watch set here and put it in force, if it changed
    /// (a reload: a refresh still compiling is for the old rules).
    pub fn apply(&mut self, set: &RuleSet) -> Result<()> {
        self.compiled_at = Instant::now();
        self.touched = false;
        self.compiling = None;
        self.put_in_force(compile(set))
    }

    /// Write `next` to the kernel and flip to it, if it differs from the
    /// set in force.
    fn put_in_force(&mut self, next: WatchSet) -> Result<()> {
        self.remove_retired();
        if next == self.current {
            return Ok(());
        }
        if next.visited > MAX_VISITED {
            warn!("the read watch set's glob patterns reach more than {MAX_VISITED} directory entries: the walk stopped there, and files beyond are not watched");
        }
        if next.overflow > 0 {
            warn!(
                left_out = next.overflow,
                "the read watch set is full ({MAX_PER_GENERATION} files): reads of the rest are not seen"
            );
        }
        let generation = self.generation ^ 1;
        // The inactive generation is written only once it is empty: what
        // the last swap retired, or a write that failed, would go live
        // with it.
        self.clear(generation);
        self.inactive_dirty = true;
        for (&(dev, ino), &bits) in &next.entries {
            self.map
                .insert(key(watch::ANY_DEVICE, ino, generation), bits, 0)?;
            self.map.insert(key(dev, ino, generation), bits, 0)?;
        }
        self.write_bits(generation, &next)?;
        let mut word = generation as u64;
        if !next.entries.is_empty() {
            word |= watch::ACTIVE;
        }
        // One update: the new generation is in force, whole.
        self.state.set(0, word, 0)?;
        self.inactive_dirty = false;
        info!(
            entries = next.entries.len(),
            generation, "read watch set in force"
        );
        // The old generation stays a moment: a probe that read the state
        // word just before the flip may still look it up.
        let old = std::mem::replace(&mut self.current, next);
        self.retired = Some((old, self.generation, Instant::now()));
        self.generation = generation;
        self.swaps += 1;
        Ok(())
    }

    /// Write `generation`'s bitmap (not the one in force) for `set`: the
    /// words that differ from what it holds.
    fn write_bits(&mut self, generation: u32, set: &WatchSet) -> Result<()> {
        let next = set.bitmap();
        let written = &mut self.written_bits[generation as usize];
        for (i, (&word, old)) in next.iter().zip(written.iter_mut()).enumerate() {
            if word != *old {
                let index = generation * watch::BITMAP_WORDS + i as u32;
                self.bits.set(index, word, 0)?;
                *old = word;
            }
        }
        Ok(())
    }

    /// Remove the generation retired by the last swap once no probe can
    /// still be reading it.
    fn remove_retired(&mut self) {
        if self
            .retired
            .as_ref()
            .is_some_and(|(_, _, at)| at.elapsed() >= RETIRE_AFTER)
        {
            let generation = self.generation ^ 1;
            self.clear(generation);
        }
    }

    /// Empty `generation` (not the one in force).
    fn clear(&mut self, generation: u32) {
        if let Some((old, _, _)) = self.retired.take() {
            for &(dev, ino) in old.entries.keys() {
                let _ = self.map.remove(&key(dev, ino, generation));
                let _ = self.map.remove(&key(watch::ANY_DEVICE, ino, generation));
            }
        }
        if self.inactive_dirty {
            // A write that failed half-way: whatever it left.
            remove_generation(&mut self.map, generation);
            self.inactive_dirty = false;
        }
    }

    pub fn len(&self) -> usize {
        self.current.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.entries.is_empty()
    }
}
