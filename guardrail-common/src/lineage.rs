//! Lineage marks: which listed programs a process descends from, kept by
//! the kernel so that kill/deny rules can exempt a lineage
//! (`ancestor_exe_not`) without asking the agent.
//!
//! Each listed program path owns one bit. When a process execs a listed
//! program (by inode, like `exe` rules), its mark's `passes_on` becomes
//! that program's bits; a fork gives the child `inherited | passes_on` of
//! its parent before the child runs. `inherited` never changes after, so a
//! maintainer script keeps it across its own execs, and a daemon that
//! double-forks keeps it when it is re-parented. A process's own program is
//! not its ancestor (as for the agent's `ancestor_exe_not`): only
//! `inherited` exempts.

/// Distinct programs (paths) the marks can name: bits of a u64.
pub const MAX_LINEAGE_PROGRAMS: u32 = 64;
/// Processes with a mark at once; a process that finds the map full is
/// not marked (and so not exempt: the rule applies to it).
pub const MAX_MARKED: u32 = 32768;
/// Bytes of a program path kept in `LINEAGE_PATHS` (NUL-padded).
pub const LINEAGE_PATH_LEN: usize = 256;

/// A listed program's executable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProgramKey {
    /// The kernel's `s_dev` (MAJOR << 20 | MINOR).
    pub dev: u64,
    pub ino: u64,
}

/// One process's mark (key: its tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineageMark {
    /// Programs some ancestor ran (exempting bits).
    pub inherited: u64,
    /// Programs this process runs now, handed to its children.
    pub passes_on: u64,
    /// The process's start (`start_boottime` of its leader, ns since
    /// boot), so that a mark never outlives its process into a reused pid;
    /// or, with [`SEEDED`], the start in clock ticks as /proc tells it.
    pub start: u64,
}

/// [`LineageMark::start`] holds /proc's clock ticks (USER_HZ, 100 on every
/// Linux), not ns: set by the agent for processes that existed before it.
pub const SEEDED: u64 = 1 << 63;
/// Nanoseconds per /proc clock tick (`nsec_to_clock_t`).
pub const TICK_NS: u64 = 10_000_000;

impl LineageMark {
    /// Whether this mark belongs to the process that started at
    /// `start_ns` (its leader's `start_boottime`).
    #[inline(always)]
    pub fn belongs_to(&self, start_ns: u64) -> bool {
        if self.start & SEEDED != 0 {
            start_ns / TICK_NS == self.start & !SEEDED
        } else {
            start_ns == self.start
        }
    }
}

/// Slots of `LINEAGE_STATE`.
pub mod state {
    /// Bits that ever named a program since the maps were created: a bit
    /// freed by a rule change is reused only after the agent has cleared
    /// it from every mark.
    pub const DIRTY: u32 = 0;
    /// Marks the kernel could not store (map full): those processes are
    /// not exempt.
    pub const LOST: u32 = 1;
    pub const SLOTS: u32 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_belong_only_to_their_process() {
        let exact = LineageMark {
            start: 1_234_567_891,
            ..Default::default()
        };
        assert!(exact.belongs_to(1_234_567_891));
        assert!(!exact.belongs_to(1_234_567_892));
        let seeded = LineageMark {
            start: SEEDED | 123,
            ..Default::default()
        };
        assert!(seeded.belongs_to(1_234_567_891));
        assert!(!seeded.belongs_to(1_244_567_891));
        assert!(!seeded.belongs_to(0));
    }
}
