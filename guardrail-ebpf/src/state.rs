//! Maps in which the agent keeps what the next agent needs to adopt the
//! pinned state (see `guardrail_common::pinned`). They live in the object
//! so that the same loader creates and pins them with every other map.
//! The programs read one slot: which load records the calls read only at
//! their exit.

use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use guardrail_common::enforce::MAX_KERNEL_RULES;
use guardrail_common::pinned::{EMITTER, RULE_NAME_LEN, SLOTS};

#[map]
static AGENT_STATE: Array<u64> = Array::with_max_entries(SLOTS, 0);

/// This load of the programs, set by the agent (never 0).
#[no_mangle]
static INSTANCE: u64 = 0;

/// Whether this load writes the records of calls that run no entry
/// program (`crate::EXIT_ONLY`). During a hand-over the old and the new
/// agent's programs both see each such call, and nothing parked tells
/// them apart: the new agent names itself the emitter once its programs
/// are attached, then removes the old ones, so each call is recorded once.
#[inline(always)]
pub fn emitting() -> bool {
    AGENT_STATE
        .get(EMITTER)
        .is_some_and(|&owner| owner == crate::global(&INSTANCE))
}

/// The rule id of each kernel rule slot, so that a verdict recorded while
/// no agent ran can still be named by the next one.
#[map]
static RULE_NAMES: Array<[u8; RULE_NAME_LEN]> = Array::with_max_entries(2 * MAX_KERNEL_RULES, 0);
