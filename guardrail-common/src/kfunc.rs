//! Kernel functions (kfuncs) the probes call where the kernel has them.
//!
//! aya-ebpf cannot name a kfunc (it emits no kfunc relocations), so the
//! probes call a helper id no kernel defines, and the agent rewrites each
//! such call in the object before it loads it: into a call of the kfunc
//! where the kernel's BTF has it, and into `r0 = r1` where it does not
//! (there the probes' flag for it is zero and the calls are dead code the
//! verifier drops).

/// The helper id standing for `bpf_rdonly_cast(obj, btf_id)` (6.2+): the
/// pointer `obj` typed, read-only, as the struct `btf_id` names.
pub const RDONLY_CAST_PLACEHOLDER: u32 = 0x7ff0_0001;
