//! What the running kernel offers guardrail, reported once at start and in
//! `guardrail status`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub kernel: String,
    /// Syscall tracepoints attached (capture works).
    pub tracepoints: bool,
    pub ring_buffer: bool,
    /// Kernel BTF present: task fields (ppid, euid, auid) are captured.
    pub btf: bool,
    /// `bpf` is in the active LSM list (/sys/kernel/security/lsm). Deny
    /// needs this; without it deny rules fall back.
    pub bpf_lsm: bool,
    /// Why BPF-LSM is not usable, for the operator.
    pub bpf_lsm_note: Option<String>,
    /// Watched syscalls this kernel has no tracepoint for.
    pub missing_syscalls: Vec<String>,
    /// File operations submitted through io_uring that this kernel does
    /// not let the probes see, each with why (empty: all are seen).
    #[serde(default)]
    pub uring_unseen: Vec<String>,
    /// Where the syscall and exec probes attach: `raw` (raw_syscalls
    /// `sys_enter`/`sys_exit`, pinnable everywhere) or `tracepoints`
    /// (one `syscalls:*` tracepoint per watched call).
    #[serde(default)]
    pub syscall_probes: String,
    /// The probes read the current task's fields with plain loads, not
    /// helper calls (5.11+: `bpf_get_current_task_btf`).
    #[serde(default)]
    pub typed_tasks: bool,
    /// The read watch reads an opened file with plain loads, not helper
    /// calls (6.2+: `bpf_rdonly_cast`, where the kernel accepts it).
    #[serde(default)]
    pub typed_files: bool,
    /// Why files are not typed where the kernel has the cast (its
    /// verifier refused the probes with it).
    #[serde(default)]
    pub typed_files_note: Option<String>,
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `bpf` is an active LSM, and if not, why.
pub fn bpf_lsm_state() -> (bool, Option<String>) {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => (true, None),
        Ok(list) => (
            false,
            Some(format!(
                "BPF-LSM is not active (active LSMs: {}); add `lsm={},bpf` to the kernel command line",
                list.trim(),
                list.trim()
            )),
        ),
        Err(_) => (
            false,
            Some("securityfs is not mounted or the kernel has no LSM list; deny rules will fall back".into()),
        ),
    }
}
