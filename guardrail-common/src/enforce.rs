//! Keys and values of the enforcement maps: kill/deny rules compiled by the
//! agent and evaluated by the BPF-LSM programs.
//!
//! Files are identified by (device, inode), never by the path a program
//! passed, so symlinks, hard links, bind mounts, relative paths and dirfds
//! name the same protected object. Subtree rules walk `d_parent` (and
//! mounts) from the object up.
//!
//! Every key carries a generation: the agent writes a new rule set under
//! the inactive generation, then flips [`ACTIVE`-generation] in one map
//! update, then deletes the old entries — a reload never leaves a moment
//! with nothing enforced.

/// Operations, as bits of [`KernelRule::ops`].
pub mod op {
    pub const EXEC: u32 = 1 << 0;
    pub const OPEN_READ: u32 = 1 << 1;
    pub const OPEN_WRITE: u32 = 1 << 2;
    pub const CREATE: u32 = 1 << 3;
    pub const UNLINK: u32 = 1 << 4;
    pub const RMDIR: u32 = 1 << 5;
    pub const RENAME: u32 = 1 << 6;
    pub const TRUNCATE: u32 = 1 << 7;
    pub const LINK: u32 = 1 << 8;
    pub const SYMLINK: u32 = 1 << 9;
    pub const MKNOD: u32 = 1 << 10;
    pub const CHMOD: u32 = 1 << 11;
    pub const CHOWN: u32 = 1 << 12;
    pub const SETUID: u32 = 1 << 13;
    pub const SETGID: u32 = 1 << 14;
    pub const CAPSET: u32 = 1 << 15;
    pub const MKDIR: u32 = 1 << 16;
    pub const SETXATTR: u32 = 1 << 17;
}

/// Kill/deny rules one generation can hold (bits of a u64 mask).
pub const MAX_KERNEL_RULES: u32 = 64;

/// [`KernelRule::action`].
pub mod action {
    pub const DENY: u32 = 1;
    pub const KILL: u32 = 2;
    /// An exception: clears the rules in [`super::KernelRule::exempts`].
    pub const ALLOW: u32 = 3;
}

/// [`KernelRule::flags`].
pub mod rule_flags {
    /// The rule names paths: it applies only where [`super::InodeRules`]
    /// put it among the candidates.
    pub const HAS_PATH: u32 = 1 << 0;
    /// Applies only to the executables in the exe map.
    pub const EXE_ONLY: u32 = 1 << 1;
    /// Never applies to the executables in the exe map (`exe_not`).
    pub const EXE_EXCEPT: u32 = 1 << 2;
    /// setuid/setgid: only calls that make a non-root process root.
    pub const TO_ROOT: u32 = 1 << 3;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelRule {
    pub ops: u32,
    pub action: u32,
    pub flags: u32,
    /// `in_window`: applies only while one of these windows (bits) is
    /// active. 0: always.
    pub windows_in: u32,
    /// `outside_window`: never applies while one of these is active.
    pub windows_out: u32,
    pub _pad: u32,
    /// For allow rules: the rules (bits) this one exempts.
    pub exempts: u64,
}

/// Windows the kernel tracks (bits of a u32); the agent sets
/// which are active, on time, in the enforcement state map.
pub const MAX_KERNEL_WINDOWS: usize = 32;

/// An object (or directory) some rules name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// The kernel's `s_dev` (MAJOR << 20 | MINOR).
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
    pub _pad: u32,
}

/// Which rules name an inode: as the object itself (`exact`), as a
/// directory above it (`subtree`), and the same for `path_not`; and the
/// rules whose paths run through it (`guards`: the object a rule names,
/// the root of its subtree, and every directory above them), which no
/// mount and no rename may change while the rule is in force.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeRules {
    pub exact: u64,
    pub subtree: u64,
    pub not_exact: u64,
    pub not_subtree: u64,
    pub guards: u64,
}

/// An executable a rule's `exe`/`exe_not` names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
    pub rule: u32,
}

/// What the LSM programs did to the current syscall, for its record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Kernel rule index + 1 (0: none).
    pub rule: u32,
    pub action: u32,
    pub generation: u32,
    pub op: u32,
    /// When it was decided: a verdict older than the syscall being
    /// reported belongs to an earlier, unreported one and is ignored.
    pub ktime_ns: u64,
}

/// Per-generation rule table index.
pub const fn rule_slot(generation: u32, rule: u32) -> u32 {
    (generation & 1) * MAX_KERNEL_RULES + rule
}

/// `ExeKey::rule` of the service manager's program (PID 1's executable):
/// in a mount namespace other than the host's it may mount over what the
/// rules protect — that is how it sets up services' private namespaces
/// (ProtectSystem=, PrivateTmp=…), which no host process sees.
pub const SERVICE_MANAGER: u32 = u32::MAX;

/// `ExeKey::generation` and `ExeKey::rule` of guardrail's own programs
/// (the agent's and the CLI's binaries), which alone may open guardrail's
/// maps for writing while self-protection guards the pinned state. Outside
/// both generations, so that rule changes leave them alone.
pub const AGENT_PROGRAM: u32 = u32::MAX - 1;

/// Slots of the `ENFORCE_STATE` map (see guardrail-ebpf's enforce module).
pub const ENFORCE_STATE_SLOTS: u32 = 9;
/// `ENFORCE_STATE` slot holding the inode number of the host's (PID 1's)
/// mount namespace.
pub const HOST_MNT_NS: u32 = 8;
