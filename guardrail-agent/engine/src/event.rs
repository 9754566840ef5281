//! The events guardrail emits: one JSON object per line, schema in
//! `docs/events.md`. Field names here are a public interface.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::canonical::PathSource;
pub use crate::event_json::ProcessMemo;

/// The paths an event names: at most two and a few aliases, kept inline
/// because rules read them for every event and an allocation each was a
/// fifth of the event path's allocations.
pub type Paths<'e> = smallvec::SmallVec<[&'e str; 4]>;

/// A name from a fixed set (a syscall, an operation, an errno): borrowed
/// from the agent's tables when an event is made, owned only when one is
/// read back from JSON. An owned string per name was two allocations and
/// two frees per event.
pub type Name = std::borrow::Cow<'static, str>;

/// Read back in one pass by `event_json` rather than by a derived form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Per-agent sequence number, starting at 1; a gap never happens
    /// silently: lost records are reported by `loss` events.
    pub seq: u64,
    /// Wall-clock time (RFC 3339, UTC) of the record.
    pub time: String,
    /// Monotonic kernel time (CLOCK_MONOTONIC, ns) of the record.
    pub ktime_ns: u64,
    /// How the operation reached the kernel: `syscall`, or `io_uring` for
    /// a request submitted through a ring (reported as the syscall that
    /// does the same). Absent on `loss` events.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Via>,
    #[serde(flatten)]
    pub body: Body,
    /// Set when a rule matched: what was decided and why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<Decision>,
    /// Fields whose secrets were replaced by `[REDACTED:<pattern>]`, e.g.
    /// `exec.argv[3]`, `file.path`, `decision.matched.argv_matches`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub redacted: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Syscall,
    IoUring,
}

/// What became of an event a rule decided on (docs/rules.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// In the order of their names, as they sort in reports.
pub enum Outcome {
    Alerted,
    Allowed,
    Denied,
    Killed,
    Reverted,
    WouldDeny,
    WouldKill,
}

impl Outcome {
    /// Every outcome, as docs/rules.md lists them.
    pub const ALL: [Outcome; 7] = [
        Outcome::Alerted,
        Outcome::Denied,
        Outcome::Killed,
        Outcome::Reverted,
        Outcome::WouldDeny,
        Outcome::WouldKill,
        Outcome::Allowed,
    ];

    /// As the event's JSON spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Alerted => "alerted",
            Outcome::Denied => "denied",
            Outcome::Killed => "killed",
            Outcome::Reverted => "reverted",
            Outcome::WouldDeny => "would_deny",
            Outcome::WouldKill => "would_kill",
            Outcome::Allowed => "allowed",
        }
    }

    /// The outcome spelt `name`.
    pub fn named(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's decision on an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The rule that decided.
    pub rule: String,
    pub action: crate::rules::spec::Action,
    pub mode: crate::rules::spec::Mode,
    pub severity: crate::rules::spec::Severity,
    pub outcome: Outcome,
    /// Set when the kernel could not enforce the action here and the
    /// rule's fallback acted instead.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fallback: Option<crate::rules::spec::Fallback>,
    /// The matchers and the event values that satisfied them.
    pub matched: std::collections::BTreeMap<String, String>,
    /// Other rules that matched too.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub also: Vec<String>,
    /// Rules an allow rule exempted from acting on this event.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub exempted: Vec<String>,
    /// The `revert` fallback: what was restored.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reverted: Option<Reverted>,
    /// Why the fallback could not act, when it could not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fallback_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    Exec {
        syscall: Name,
        #[serde(serialize_with = "Process::serialize_cached")]
        process: Process,
        result: SyscallResult,
        exec: ExecDetails,
    },
    File {
        syscall: Name,
        #[serde(serialize_with = "Process::serialize_cached")]
        process: Process,
        result: SyscallResult,
        file: FileDetails,
    },
    Perm {
        syscall: Name,
        #[serde(serialize_with = "Process::serialize_cached")]
        process: Process,
        result: SyscallResult,
        perm: PermDetails,
    },
    /// A process set up an io_uring instance: file operations submitted
    /// through it bypass the syscall tracepoints (docs/events.md#io_uring).
    Uring {
        syscall: Name,
        #[serde(serialize_with = "Process::serialize_cached")]
        process: Process,
        result: SyscallResult,
        uring: UringDetails,
    },
    Loss {
        loss: LossDetails,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UringDetails {
    /// `setup` or `register`.
    pub op: Name,
    /// `setup`: the ring's file descriptor.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fd: Option<i32>,
    /// `setup`: submission queue entries.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sq_entries: Option<u32>,
    /// `register`: what was registered (or unregistered), and how many
    /// files and buffers the ring has registered after the call.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub register: Option<UringRegister>,
    /// Setup flags: `sqpoll` (a kernel thread submits for the process),
    /// `iopoll`, `sq_aff`, `cqsize`, `clamp`, `attach_wq`, `r_disabled`,
    /// `submit_all`, `coop_taskrun`, `taskrun_flag`, `sqe128`, `cqe32`,
    /// `single_issuer`, `defer_taskrun`, `no_mmap`, `registered_fd_only`,
    /// `no_sqarray`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub flags: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UringRegister {
    /// The IORING_REGISTER_* opcode, lower-case without the prefix
    /// (`files`, `buffers`, `files_update`, ...; `opcode_N` when unknown).
    pub opcode: String,
    pub files: u32,
    pub buffers: u32,
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Exec { .. } => "exec",
            Body::File { .. } => "file",
            Body::Perm { .. } => "perm",
            Body::Uring { .. } => "uring",
            Body::Loss { .. } => "loss",
        }
    }

    pub fn process_mut(&mut self) -> Option<&mut Process> {
        match self {
            Body::Exec { process, .. }
            | Body::File { process, .. }
            | Body::Perm { process, .. }
            | Body::Uring { process, .. } => Some(process),
            Body::Loss { .. } => None,
        }
    }

    pub fn process(&self) -> Option<&Process> {
        match self {
            Body::Exec { process, .. }
            | Body::File { process, .. }
            | Body::Perm { process, .. }
            | Body::Uring { process, .. } => Some(process),
            Body::Loss { .. } => None,
        }
    }

    /// What the call returned (none for `loss`).
    pub fn result(&self) -> Option<&SyscallResult> {
        match self {
            Body::Exec { result, .. }
            | Body::File { result, .. }
            | Body::Perm { result, .. }
            | Body::Uring { result, .. } => Some(result),
            Body::Loss { .. } => None,
        }
    }

    /// The operation, e.g. `open`, `rename`, `chmod`, `setuid`, `exec`.
    pub fn op(&self) -> &str {
        match self {
            Body::Exec { .. } => "exec",
            Body::File { file, .. } => &file.op,
            Body::Perm { perm, .. } => &perm.op,
            Body::Uring { uring, .. } => &uring.op,
            Body::Loss { .. } => "loss",
        }
    }

    /// Paths the event names (for filters and rules).
    pub fn paths(&self) -> Paths<'_> {
        let mut v = Paths::new();
        match self {
            Body::Exec { exec, .. } => v.push(exec.path.as_str()),
            Body::File { file, .. } => {
                v.extend(file.path.as_deref());
                v.extend(file.new_path.as_deref());
                v.extend(file.aliases.iter().map(String::as_str));
            }
            Body::Perm { perm, .. } => {
                v.extend(perm.path.as_deref());
                v.extend(perm.aliases.iter().map(String::as_str));
            }
            Body::Uring { .. } | Body::Loss { .. } => {}
        }
        v
    }
}

/// How an event changes what paths resolve to, for path integrity: a
/// rule on a path also decides what would make that path mean another
/// object, whatever operations it lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathChange<'e> {
    /// These directories moved (a rename, either side): every path below
    /// them now resolves elsewhere.
    Below(Vec<&'e str>),
    /// Something was mounted at (or unmounted from) these places: they and
    /// every path below them may name other objects.
    AtAndBelow(Vec<&'e str>),
    /// The root itself was swapped (pivot_root in the host's mount
    /// namespace): every path may name another object.
    Everywhere,
}

impl Body {
    /// What this event changes about other paths' meaning, if anything.
    pub fn path_change(&self) -> Option<PathChange<'_>> {
        let Body::File { file, .. } = self else {
            return None;
        };
        path_change_of(
            &file.op,
            file.mount.as_deref().map(MountDetails::facts),
            file.path.as_deref(),
            file.new_path.as_deref(),
        )
    }
}

/// [`Body::path_change`] of a file event from what decides it: its `op`,
/// its mount details, and its paths.
pub fn path_change_of<'e>(
    op: &str,
    mount: Option<MountFacts>,
    path: Option<&'e str>,
    new_path: Option<&'e str>,
) -> Option<PathChange<'e>> {
    let paths = || path.into_iter().chain(new_path).collect();
    if let Some(mount) = mount {
        if !mount.changes_what_paths_mean() {
            return None;
        }
        let host = mount.namespace.is_none_or(|n| n == "host");
        if op == "umount" && !host {
            // An unmount in a namespace of its own uncovers only that
            // namespace's view (a container runtime dropping the old
            // root after pivot_root); the kernel allows it too.
            return None;
        }
        return Some(if op == "pivot_root" && host {
            PathChange::Everywhere
        } else {
            PathChange::AtAndBelow(paths())
        });
    }
    // A directory above a watched path moved away: a write under its
    // new name, then a move back, would never name the watched path.
    // (An rmdir is no such threat: the directory had to be empty, so
    // what it held was removed first, and those are events of their
    // own; a later re-creation is decided by its path.)
    (op == "rename").then(|| PathChange::Below(paths()))
}

/// What decides whether a mount-family call changes what paths mean (see
/// [`MountFacts::changes_what_paths_mean`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountFacts<'e> {
    /// The caller's mount namespace (`host`, `private`, `service`).
    pub namespace: Option<&'e str>,
    /// The flags name `remount`, `bind`, or a propagation change
    /// (`shared`, `private`, `slave`, `unbindable`).
    pub remount: bool,
    pub bind: bool,
    pub propagation: bool,
}

/// The propagation changes among mount flags.
const PROPAGATION_FLAGS: [&str; 4] = ["shared", "private", "slave", "unbindable"];

impl MountFacts<'_> {
    /// Notes one of the call's flags.
    pub fn flag(&mut self, flag: &str) {
        self.remount |= flag == "remount";
        self.bind |= flag == "bind";
        self.propagation |= PROPAGATION_FLAGS.contains(&flag);
    }

    /// Whether the call changes what a path resolves to. A remount or a
    /// propagation change (`--make-private` …) leaves every path naming
    /// what it named, and the service manager's mounts in a service's
    /// own namespace are how systemd sandboxes services: neither is a
    /// threat to a watched path. The kernel's path integrity decides the
    /// same way (`sb_mount`).
    pub fn changes_what_paths_mean(&self) -> bool {
        // mount(2) tries remount, then bind, then a propagation change:
        // a bind with a propagation flag is still a bind.
        self.namespace != Some("service") && !self.remount && (self.bind || !self.propagation)
    }
}

/// Who a process acts as and where it runs: names for its ids, its
/// cgroup, service and container. Shared by the events of every process
/// with the same cgroup, uid and gid (see `ProcessView::attribution`): one
/// reference count per event instead of one per name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// The name of `uid` (/etc/passwd); omitted for ids it does not list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    /// The name of `gid` (/etc/group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Arc<str>>,
    /// The cgroup (v2) path of `cgroup_id`, e.g. `/system.slice/nginx.service`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Arc<str>>,
    /// The systemd unit the cgroup belongs to (`nginx.service`,
    /// `session-4.scope`, `user@1000.service`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<Arc<str>>,
    /// The container the cgroup shows, with its runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<crate::attribution::Container>>,
}

impl Attribution {
    /// Shared; one allocation for all that name nothing (a replay of a
    /// log written without names).
    pub fn shared(self) -> Arc<Attribution> {
        static NOTHING: std::sync::LazyLock<Arc<Attribution>> =
            std::sync::LazyLock::new(Default::default);
        if self == Attribution::default() {
            NOTHING.clone()
        } else {
            Arc::new(self)
        }
    }
}

/// A process in an event. In JSON the attribution's members are the
/// process's own (`process.user`, `process.unit`…): written flattened,
/// read through [`ProcessJsonForm`] (a derived reader of a flattened
/// member would buffer every member of the process first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProcessJsonForm")]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    /// Boot-unique identity, `PID@START` (START: the process's start time
    /// in clock ticks since boot, as /proc/PID/stat and `ps` show it): the
    /// same process in every event, a reused pid never confused with it.
    /// Omitted when unknown. First after `pid` and `tid`: an audit log
    /// naming a process by reference writes these members only (see
    /// [`crate::process_join`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<Arc<str>>,
    /// The process version this object defines or names, in an audit log
    /// that writes each version in full once per file (see
    /// [`crate::process_join`]); absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pv: Option<u64>,
    /// Parent's pid; null when the kernel's BTF was unavailable.
    pub ppid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// Login uid (audit session owner); null when unset or unknown.
    pub auid: Option<u32>,
    /// Shared: a process's events carry the same text, counted rather
    /// than copied.
    pub comm: Arc<str>,
    /// Executable of the process; null when it exited before it could be
    /// looked up.
    /// Shared with the agent's process table: the same text for every
    /// event of the process, counted rather than copied.
    pub exe: Option<Arc<str>>,
    pub parent_exe: Option<Arc<str>>,
    pub cgroup_id: u64,
    /// The `id` of the process that created this one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent_id: Option<Arc<str>>,
    /// The processes that led to this one, nearest first (its creator,
    /// then the creator's creator…), up to 8.
    ///
    /// Shared: the events of one process carry the same list, built once
    /// (see `ProcessView::lineage`).
    #[serde(skip_serializing_if = "Ancestors::is_empty", default)]
    pub ancestors: Ancestors,
    /// More ancestors exist than `ancestors` lists, or the chain breaks at
    /// a process the agent does not know.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub ancestors_truncated: bool,
    /// User and group names, cgroup, unit and container.
    #[serde(flatten)]
    pub who: Arc<Attribution>,
    /// The login session id (audit `ses`, set at login by pam_loginuid);
    /// omitted when unset.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session: Option<u32>,
    /// The controlling terminal (`pts/0`, `tty1`); omitted for none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tty: Option<Arc<str>>,
    /// This object's JSON when an equal process was serialised before
    /// (see [`ProcessJson`]); not part of the process.
    #[serde(skip)]
    pub json: ProcessJson,
    /// Read from a reference (`pid`, `tid`, `id` and `pv` only) whose
    /// definition was not found: every other member is a default, not the
    /// process's (see [`crate::process_join::ProcessJoin`]).
    #[serde(skip)]
    pub unjoined: bool,
}

/// A process as its JSON holds it: the attribution's members among the
/// process's own. Read with serde's derived reader (one pass, as before
/// the attribution was shared), then made a [`Process`].
#[derive(Deserialize)]
struct ProcessJsonForm {
    pid: u32,
    tid: u32,
    #[serde(default)]
    id: Option<Arc<str>>,
    #[serde(default)]
    pv: Option<u64>,
    // Required in a whole process, absent from a reference.
    #[serde(default)]
    ppid: Option<u32>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    euid: Option<u32>,
    #[serde(default)]
    egid: Option<u32>,
    #[serde(default)]
    auid: Option<u32>,
    #[serde(default)]
    comm: Option<Arc<str>>,
    #[serde(default)]
    exe: Option<Arc<str>>,
    #[serde(default)]
    parent_exe: Option<Arc<str>>,
    #[serde(default)]
    cgroup_id: Option<u64>,
    #[serde(default)]
    parent_id: Option<Arc<str>>,
    #[serde(default)]
    ancestors: Ancestors,
    #[serde(default)]
    ancestors_truncated: bool,
    #[serde(default)]
    user: Option<Arc<str>>,
    #[serde(default)]
    group: Option<Arc<str>>,
    #[serde(default)]
    cgroup: Option<Arc<str>>,
    #[serde(default)]
    unit: Option<Arc<str>>,
    #[serde(default)]
    container: Option<Arc<crate::attribution::Container>>,
    #[serde(default)]
    session: Option<u32>,
    #[serde(default)]
    tty: Option<Arc<str>>,
}

impl TryFrom<ProcessJsonForm> for Process {
    type Error = String;

    fn try_from(f: ProcessJsonForm) -> Result<Process, String> {
        // A reference: the version's definition, earlier in the log,
        // holds the rest.
        if f.uid.is_none() && f.comm.is_none() {
            if let (Some(pv), Some(id)) = (f.pv, f.id.clone()) {
                return Ok(Process {
                    pid: f.pid,
                    tid: f.tid,
                    id: Some(id),
                    pv: Some(pv),
                    unjoined: true,
                    ..Default::default()
                });
            }
        }
        fn required<T>(v: Option<T>, name: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("missing field `{name}`"))
        }
        Ok(Process {
            pid: f.pid,
            tid: f.tid,
            ppid: f.ppid,
            uid: required(f.uid, "uid")?,
            gid: required(f.gid, "gid")?,
            euid: required(f.euid, "euid")?,
            egid: required(f.egid, "egid")?,
            auid: f.auid,
            comm: required(f.comm, "comm")?,
            exe: f.exe,
            parent_exe: f.parent_exe,
            cgroup_id: required(f.cgroup_id, "cgroup_id")?,
            id: f.id,
            pv: f.pv,
            parent_id: f.parent_id,
            ancestors: f.ancestors,
            ancestors_truncated: f.ancestors_truncated,
            who: Attribution {
                user: f.user,
                group: f.group,
                cgroup: f.cgroup,
                unit: f.unit,
                container: f.container,
            }
            .shared(),
            session: f.session,
            tty: f.tty,
            json: ProcessJson::default(),
            unjoined: false,
        })
    }
}

impl Process {
    /// As its JSON cache holds it, else field by field.
    fn serialize_cached<S: serde::Serializer>(p: &Process, s: S) -> Result<S::Ok, S::Error> {
        match &p.json {
            ProcessJson::Whole(json) => json.serialize(s),
            ProcessJson::Ref { pv, .. } => {
                use serde::ser::SerializeStruct;
                let mut r = s.serialize_struct("Process", 4)?;
                r.serialize_field("pid", &p.pid)?;
                r.serialize_field("tid", &p.tid)?;
                r.serialize_field("id", &p.id)?;
                r.serialize_field("pv", pv)?;
                r.end()
            }
            ProcessJson::None => p.serialize(s),
        }
    }

    /// Serialise this process once: the event path attaches the result to
    /// the next events whose process is equal (a process's events repeat
    /// its object; it was a third of an event's serialisation).
    pub fn make_json(&mut self) -> serde_json::Result<Arc<serde_json::value::RawValue>> {
        // Field by field: the derived form never reads `json`.
        let json: Arc<serde_json::value::RawValue> =
            serde_json::value::to_raw_value(&*self)?.into();
        self.json = ProcessJson::Whole(json.clone());
        Ok(json)
    }

    /// The members a reference leaves out, as they follow `"pv":N,` in a
    /// definition: the process's JSON after `pid`, `tid`, `id` and `pv`,
    /// without the closing brace. None for a process without `id`, which
    /// cannot be named by reference.
    pub fn shared_members(&self) -> Option<String> {
        self.shared_members_in(&serde_json::to_string(self).ok()?)
    }

    /// [`Process::shared_members`] cut from `whole`, this process's JSON
    /// as serialised field by field.
    pub fn shared_members_in(&self, whole: &str) -> Option<String> {
        let id = self.id.as_ref()?;
        let mut prefix = format!(
            "{{\"pid\":{},\"tid\":{},\"id\":{},",
            self.pid,
            self.tid,
            serde_json::to_string(id).ok()?
        );
        if let Some(pv) = self.pv {
            prefix.push_str(&format!("\"pv\":{pv},"));
        }
        let shared = whole.strip_prefix(&prefix)?.strip_suffix('}')?;
        Some(shared.to_string())
    }
}

/// How an event writes its process: field by field, as JSON made before
/// for an equal process (a cache, valid for every process equal to the one
/// it was made from, so it never makes two processes unequal), or as a
/// reference to a process version defined earlier in the audit log. Set
/// only on a process that will not change before it is serialised (after
/// redaction).
#[derive(Clone, Default)]
pub enum ProcessJson {
    #[default]
    None,
    Whole(Arc<serde_json::value::RawValue>),
    /// `{"pid","tid","id","pv"}`; `shared` holds the rest (see
    /// [`Process::shared_members`]), for whoever needs the whole object.
    Ref {
        pv: u64,
        shared: Arc<str>,
    },
}

impl ProcessJson {
    pub fn of(json: Arc<serde_json::value::RawValue>) -> ProcessJson {
        ProcessJson::Whole(json)
    }
}

impl PartialEq for ProcessJson {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ProcessJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcessJson::None => "none",
            ProcessJson::Whole(_) => "cached",
            ProcessJson::Ref { .. } => "reference",
        })
    }
}

/// The ancestors of a process, nearest first: one shared list for all
/// its events (see `ProcessView::lineage`), serialised once — the
/// ancestors were a third of an event's serialisation.
#[derive(Clone, Default)]
pub struct Ancestors(Arc<AncestorList>);

#[derive(Default)]
struct AncestorList {
    list: Box<[Ancestor]>,
    /// The list as JSON, made by the first event that is serialised.
    json: std::sync::OnceLock<Box<serde_json::value::RawValue>>,
}

impl Ancestors {
    /// Whether `a` and `b` are the same shared list.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    fn is_empty(&self) -> bool {
        self.0.list.is_empty()
    }
}

impl std::ops::Deref for Ancestors {
    type Target = [Ancestor];
    fn deref(&self) -> &[Ancestor] {
        &self.0.list
    }
}

impl std::fmt::Debug for Ancestors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Ancestors {
    fn eq(&self, other: &Self) -> bool {
        Ancestors::ptr_eq(self, other) || self[..] == other[..]
    }
}

impl From<Vec<Ancestor>> for Ancestors {
    fn from(list: Vec<Ancestor>) -> Self {
        Ancestors(Arc::new(AncestorList {
            list: list.into(),
            json: Default::default(),
        }))
    }
}

impl FromIterator<Ancestor> for Ancestors {
    fn from_iter<I: IntoIterator<Item = Ancestor>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl Serialize for Ancestors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = match self.0.json.get() {
            Some(json) => json,
            None => {
                let made = serde_json::value::to_raw_value(&self.0.list)
                    .map_err(serde::ser::Error::custom)?;
                self.0.json.get_or_init(|| made)
            }
        };
        json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ancestors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Ancestor>::deserialize(d).map(Ancestors::from)
    }
}

/// A file system object by identity rather than by name: the same file
/// under every path that reaches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// `MAJOR:MINOR` of the file system, as `stat -c %Hd:%Ld` shows it.
    #[serde(with = "dev_text")]
    pub dev: u64,
    pub ino: u64,
    /// Read from the kernel object the call acted on (true), or by the
    /// agent with stat(2) on the canonical path after the fact (false).
    pub kernel: bool,
}

impl ObjectId {
    /// From a kernel `s_dev` (MAJOR << 20 | MINOR).
    pub fn from_kernel(dev: u32, ino: u64) -> ObjectId {
        ObjectId {
            dev: dev as u64,
            ino,
            kernel: true,
        }
    }

    /// From a userspace `st_dev`.
    pub fn from_stat(st_dev: u64, ino: u64) -> ObjectId {
        let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
        ObjectId {
            dev: (major << 20) | minor,
            ino,
            kernel: false,
        }
    }

    /// The same object, however it was learned.
    pub fn same(&self, other: &ObjectId) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// Kernel dev numbers as `MAJOR:MINOR` text.
mod dev_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(dev: &u64, s: S) -> Result<S::Ok, S::Error> {
        // Into a stack buffer: a formatter per event was a twentieth of
        // the agent's serialisation.
        let mut major = itoa::Buffer::new();
        let mut minor = itoa::Buffer::new();
        let (major, minor) = (major.format(dev >> 20), minor.format(dev & 0xfffff));
        let mut text = [0u8; 41];
        let len = major.len() + 1 + minor.len();
        text[..major.len()].copy_from_slice(major.as_bytes());
        text[major.len()] = b':';
        text[major.len() + 1..len].copy_from_slice(minor.as_bytes());
        s.serialize_str(std::str::from_utf8(&text[..len]).expect("digits and a colon"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        super::dev_from_text(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A kernel dev number from its `MAJOR:MINOR` text.
pub fn dev_from_text(text: &str) -> Result<u64, String> {
    let (major, minor) = text
        .split_once(':')
        .ok_or_else(|| "dev is MAJOR:MINOR".to_string())?;
    let n = |t: &str| t.parse::<u64>().map_err(|e| e.to_string());
    Ok((n(major)? << 20) | n(minor)?)
}

/// One process of a lineage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<Arc<str>>,
    /// The program it ran when its child was made (or since, if it
    /// exec'd); null for kernel threads.
    pub exe: Option<Arc<str>>,
    /// When that program is a script: the script (`exe` is then its
    /// interpreter).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub script: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyscallResult {
    pub ok: bool,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Symbolic errno on failure, e.g. `EACCES`.
    pub errno: Option<Name>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecDetails {
    /// The program run: canonical and absolute (see `path_source`).
    pub path: String,
    /// The program as the caller named it, when that differs from `path`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw_path: Option<String>,
    /// How `path` was made canonical: `kernel`, `agent` or `lexical`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_source: Option<PathSource>,
    pub argv: Vec<String>,
    /// argv was longer than the probes copy (4096 bytes).
    pub argv_truncated: bool,
    /// argv could not be captured: the exec failed (argv is read from the
    /// new image) or the kernel's BTF was missing.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub argv_unavailable: bool,
    pub cwd: Option<String>,
    /// For execveat with AT_EMPTY_PATH: the fd executed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fd: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileDetails {
    /// open, unlink, rename, truncate, link, symlink, mknod, mkdir
    pub op: Name,
    /// Canonical absolute path of the file acted on (no `.`, `..` or
    /// `//`, symlinked directories resolved); null when only an fd was
    /// given and it could not be resolved.
    pub path: Option<String>,
    /// The path exactly as the program passed it, when that differs from
    /// `path`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw_path: Option<String>,
    /// How `path` was made canonical: `kernel` (walked from the object in
    /// the kernel), `agent` (directories resolved by the agent on the live
    /// file system) or `lexical` (only `.`, `..`, `//` removed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_source: Option<PathSource>,
    /// Whether `path` is absolute (false: the cwd or dirfd could not be
    /// read because the process was gone).
    pub resolved: bool,
    /// The object acted on, by device and inode (see [`ObjectId`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object: Option<ObjectId>,
    /// Other names of the same object that rules watch (a hard link, the
    /// path under a bind mount's source): rules match them too.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub aliases: Vec<String>,
    /// Second path: rename/link destination, canonical like `path`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new_path_source: Option<PathSource>,
    /// symlink: the target stored in the link, verbatim.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    /// open: decoded flags (read, write, read_write, create, truncate,
    /// append, exclusive, directory, nofollow, cloexec, tmpfile, path).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub flags: Vec<String>,
    /// open with create, mknod, mkdir: the mode requested (octal string;
    /// borrowed from a table when the agent makes it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<std::borrow::Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fd: Option<i32>,
    /// truncate: the new length.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub length: Option<u64>,
    /// Paths cut at PATH_MAX or unreadable, by field name.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub truncated: Vec<String>,
    /// mount, umount, move_mount, pivot_root: what was attached where.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mount: Option<Box<MountDetails>>,
}

/// A mount-family call: `path` is the mount point whose meaning changes
/// (pivot_root: the new root; `new_path` the old root's new place).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MountDetails {
    /// What is attached: for a bind or a move, and move_mount, the
    /// canonical path of the tree (`fd:N` for a detached tree from
    /// fsmount or open_tree); for a new file system, the source as passed
    /// (a device, or any word: `none`, `tmpfs`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    /// The file system type (`mount` of a new file system; its first 15
    /// bytes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fstype: Option<String>,
    /// Decoded flags: for `mount` bind, move, remount, rec, rdonly,
    /// nosuid, nodev, noexec, shared, private, slave, unbindable; for
    /// `umount` force, detach, expire, nofollow.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub flags: Vec<String>,
    /// The caller's mount namespace: `host` (what every host process
    /// sees), `private` (a namespace of its own), `service` (a private
    /// namespace the service manager, PID 1's program, is setting up for
    /// a service); absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
}

impl MountDetails {
    /// What decides whether the call changes what paths mean.
    pub fn facts(&self) -> MountFacts<'_> {
        let mut facts = MountFacts {
            namespace: self.namespace.as_deref(),
            ..Default::default()
        };
        self.flags.iter().for_each(|f| facts.flag(f));
        facts
    }

    /// Whether the call changes what a path resolves to (see
    /// [`MountFacts::changes_what_paths_mean`]).
    pub fn changes_what_paths_mean(&self) -> bool {
        self.facts().changes_what_paths_mean()
    }
}

/// The members few calls have (ids, capabilities, an attribute) are
/// boxed: every event is moved whole a few times on its way, and a chmod
/// need not carry a setuid's room.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PermDetails {
    /// chmod, chown, setuid, setgid, capset, setxattr
    pub op: Name,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub raw_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_source: Option<PathSource>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub object: Option<ObjectId>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fd: Option<i32>,
    /// chmod: the new mode (octal string; borrowed from a table when the
    /// agent makes it) and its notable bits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<std::borrow::Cow<'static, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub mode_bits: Vec<String>,
    /// chown: the new owner; null for "unchanged" (-1).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<Owner>,
    /// setuid family: ids requested (-1 = unchanged), before and after.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ids: Option<Box<IdChange>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub caps: Option<Box<CapChange>>,
    /// setxattr: the attribute set.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xattr: Option<Box<Xattr>>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub truncated: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Xattr {
    /// The attribute's name (`security.capability`, `user.x`, ...).
    pub name: String,
    /// Bytes of value passed.
    pub size: u64,
    /// `security.capability`: the file capabilities being set, when the
    /// value is a `vfs_cap_data` the probes could read.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_caps: Option<FileCaps>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileCaps {
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    /// The effective bit: the permitted set is raised at exec.
    pub effective: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdChange {
    /// Arguments as passed, in syscall order; -1 means "leave unchanged".
    pub requested: Vec<i64>,
    pub old: Ids,
    pub new: Ids,
    /// The call made the process root (uid or euid 0) when it was not.
    pub to_root: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapChange {
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    /// Effective capabilities the call adds; null when the old set is
    /// unknown.
    pub gained: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossDetails {
    /// Records lost since the previous loss event.
    pub count: u64,
    /// Records that did not fit in the ring buffer.
    pub ringbuf: u64,
    /// Syscalls that could not be tracked between enter and exit.
    pub inflight: u64,
    /// Records lost since the agent started.
    pub total: u64,
    /// Records left in a pinned ring buffer that could not be adopted
    /// (another build's, or a changed size): removed unread.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub discarded: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_names_its_file_system_as_major_colon_minor() {
        for (dev, text) in [(254 << 20, "254:0"), ((8 << 20) | 17, "8:17"), (0, "0:0")] {
            let id = ObjectId::from_kernel(dev, 12);
            let json = serde_json::to_value(id).unwrap();
            assert_eq!(json["dev"], text);
            assert_eq!(serde_json::from_value::<ObjectId>(json).unwrap(), id);
        }
        let widest = ObjectId {
            dev: u64::MAX,
            ..Default::default()
        };
        let json = serde_json::to_value(widest).unwrap();
        assert_eq!(json["dev"], format!("{}:{}", u64::MAX >> 20, 0xfffff));
    }

    #[test]
    fn shared_ancestors_serialise_as_a_plain_list_every_time() {
        let ancestors: Ancestors = [
            (7, "/usr/bin/bash", None),
            (1, "/sbin/init", Some("/etc/rc")),
        ]
        .into_iter()
        .map(|(pid, exe, script)| Ancestor {
            pid,
            id: Some(format!("{pid}@3").into()),
            exe: Some(exe.into()),
            script: script.map(Into::into),
        })
        .collect();
        let process = Process {
            pid: 9,
            ancestors: ancestors.clone(),
            ..Default::default()
        };
        let first = serde_json::to_value(&process).unwrap();
        let again = serde_json::to_string(&process).unwrap();
        assert_eq!(
            first["ancestors"],
            serde_json::json!([
                {"pid": 7, "id": "7@3", "exe": "/usr/bin/bash"},
                {"pid": 1, "id": "1@3", "exe": "/sbin/init", "script": "/etc/rc"}
            ])
        );
        let back: Process = serde_json::from_str(&again).unwrap();
        assert_eq!(back.ancestors, ancestors);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&again).unwrap(),
            first
        );
        let none = serde_json::to_value(Process::default()).unwrap();
        assert!(none.get("ancestors").is_none(), "an empty list is left out");
    }
}

/// What a revert did, for the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// The mode and owner restored (mode as octal).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
}
