//! What enforcement did to each thread's current syscall: written by the
//! LSM programs ([`crate::enforce`]) when they refuse or kill, read and
//! removed by the syscall's record ([`crate::record`]), so that the event
//! says what the kernel decided.

use aya_ebpf::macros::map;
use aya_ebpf::maps::HashMap;
use guardrail_common::enforce::Verdict;

/// What enforcement did to each thread's current syscall, for its record.
#[map]
pub static VERDICTS: HashMap<u64, Verdict> = HashMap::with_max_entries(16384, 0);
