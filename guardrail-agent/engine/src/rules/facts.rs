//! What rules can read of an event, and nothing else: the one description
//! both readers of events fill — the live pipeline and replay from its
//! in-memory [`Event`], and (design/replay-scanner.md) a reader that takes
//! these facts straight from a recorded line without building an `Event`.
//! Matchers read only this, so a rule cannot depend on a field one reader
//! fills and the other does not.

use crate::event::{Ancestor, Body, Event, PathChange};

use super::kinds::mask_of_event;

/// An event as rules see it. Built once per event, then judged by every
/// candidate rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts<'e> {
    /// Every kind the event belongs to, as bits (see [`super::kinds`]);
    /// never 0.
    pub kinds: u32,
    /// The call succeeded.
    pub ok: bool,
    /// The paths the event names, in the order of [`Body::paths`].
    pub paths: Vec<&'e str>,
    pub exe: Option<&'e str>,
    pub parent: Option<&'e str>,
    /// The process's ancestors, nearest first.
    pub ancestors: &'e [Ancestor],
    /// More ancestors exist than `ancestors` lists.
    pub ancestors_truncated: bool,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub auid: Option<u32>,
    pub cgroup_id: u64,
    /// The systemd unit the process runs in.
    pub unit: Option<&'e str>,
    pub container: Option<ContainerRef<'e>>,
    /// An exec's arguments (none for other kinds).
    pub argv: Option<&'e [String]>,
    /// A permission change's details (none for other kinds).
    pub perm: Option<PermFacts<'e>>,
    /// How the event changes what other paths resolve to.
    pub change: Option<PathChange<'e>>,
}

/// The container a process runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerRef<'e> {
    pub runtime: &'e str,
    pub id: &'e str,
}

/// What rules read of a permission change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermFacts<'e> {
    /// chmod: the new mode, as written (octal).
    pub mode: Option<&'e str>,
    /// chown: the new owner (uid, gid), each none when left unchanged.
    pub owner: Option<(Option<u32>, Option<u32>)>,
    /// setuid family: the call made the process root.
    pub to_root: Option<bool>,
    /// capset: the effective capabilities gained; none when the old set is
    /// unknown.
    pub gained: Option<&'e [String]>,
}

impl<'e> Facts<'e> {
    /// The facts of `event`; none for events no rule can match (`loss`
    /// reports, kinds outside the catalogue).
    pub fn of(event: &'e Event) -> Option<Self> {
        let body = &event.body;
        let kinds = mask_of_event(body);
        if kinds == 0 {
            return None;
        }
        let process = body.process()?;
        let ok = body.result()?.ok;
        let (argv, perm) = match body {
            Body::Exec { exec, .. } => (Some(exec.argv.as_slice()), None),
            Body::Perm { perm, .. } => (
                None,
                Some(PermFacts {
                    mode: perm.mode.as_deref(),
                    owner: perm.owner.as_ref().map(|o| (o.uid, o.gid)),
                    to_root: perm.ids.as_ref().map(|ids| ids.to_root),
                    gained: perm.caps.as_ref().and_then(|c| c.gained.as_deref()),
                }),
            ),
            _ => (None, None),
        };
        Some(Facts {
            kinds,
            ok,
            paths: body.paths(),
            exe: process.exe.as_deref(),
            parent: process.parent_exe.as_deref(),
            ancestors: &process.ancestors,
            ancestors_truncated: process.ancestors_truncated,
            uid: process.uid,
            euid: process.euid,
            gid: process.gid,
            auid: process.auid,
            cgroup_id: process.cgroup_id,
            unit: process.who.unit.as_deref(),
            container: process.who.container.as_deref().map(|c| ContainerRef {
                runtime: &c.runtime,
                id: &c.id,
            }),
            argv,
            perm,
            change: body.path_change(),
        })
    }

    /// Whether a deny rule's `fallback = "revert"` can undo the event.
    pub fn revertable(&self) -> bool {
        super::kinds::revertable_mask(self.kinds)
    }

    /// The programs of the process's ancestors, nearest first: each one's
    /// exe, and the script it ran when the exe is an interpreter
    /// (`adduser`, `deb-systemd-helper` and `unattended-upgrade` are
    /// scripts).
    pub fn ancestor_exes(&self) -> Vec<&'e str> {
        self.ancestors
            .iter()
            .flat_map(|a| [a.exe.as_deref(), a.script.as_deref()])
            .flatten()
            .collect()
    }

    /// A lineage as people read it, oldest first: `sshd → bash → curl`.
    pub fn lineage(&self) -> String {
        lineage_of(self.ancestors, self.ancestors_truncated, self.exe)
    }
}

/// `ancestors` (nearest first) and the process's own `exe` as people read
/// them, oldest first: `sshd → bash → curl`; `…` first when the list was
/// cut.
pub fn lineage_of(ancestors: &[Ancestor], truncated: bool, exe: Option<&str>) -> String {
    let name = |exe: Option<&str>| {
        exe.map_or("?".to_string(), |e| {
            e.rsplit('/').next().unwrap_or(e).to_string()
        })
    };
    let mut parts: Vec<String> = ancestors
        .iter()
        .rev()
        .map(|a| name(a.script.as_deref().or(a.exe.as_deref())))
        .collect();
    if truncated {
        parts.insert(0, "…".into());
    }
    parts.push(name(exe));
    parts.join(" → ")
}
