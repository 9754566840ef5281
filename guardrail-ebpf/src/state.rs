//! Maps no program reads: the agent keeps in them what the next agent
//! needs to adopt the pinned state (see `guardrail_common::pinned`). They
//! live in the object so that the same loader creates and pins them with
//! every other map.

use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use guardrail_common::enforce::MAX_KERNEL_RULES;
use guardrail_common::pinned::{RULE_NAME_LEN, SLOTS};

#[map]
static AGENT_STATE: Array<u64> = Array::with_max_entries(SLOTS, 0);

/// The rule id of each kernel rule slot, so that a verdict recorded while
/// no agent ran can still be named by the next one.
#[map]
static RULE_NAMES: Array<[u8; RULE_NAME_LEN]> = Array::with_max_entries(2 * MAX_KERNEL_RULES, 0);
