//! Kernel functions the probes call where the agent found them (see
//! `guardrail_common::kfunc`).

use guardrail_common::kfunc::RDONLY_CAST_PLACEHOLDER;

/// `obj` typed as the struct the BTF id `btf_id` names, for plain loads
/// (`bpf_rdonly_cast`); the verifier rewrites the call into a move.
/// Only where [`crate::FILE_CAST_BTF_ID`] is set: elsewhere the call is
/// `r0 = r1` and its callers are dead code.
#[inline(always)]
pub unsafe fn rdonly_cast(obj: u64, btf_id: u32) -> u64 {
    // SAFETY: the helper-call convention aya-ebpf's own helpers use; the
    // agent replaces the id before the kernel sees it.
    let cast: unsafe extern "C" fn(u64, u32) -> u64 =
        core::mem::transmute(RDONLY_CAST_PLACEHOLDER as usize);
    cast(obj, btf_id)
}
