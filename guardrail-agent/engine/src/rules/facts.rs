//! What rules can read of an event, and nothing else: the one description
//! both readers of events fill — the live pipeline and replay from its
//! in-memory [`Event`], and (design/replay-scanner.md) a reader that takes
//! these facts straight from a recorded line without building an `Event`.
//! Matchers read only this, so a rule cannot depend on a field one reader
//! fills and the other does not.

use std::borrow::Cow;

use crate::event::{Ancestor, Body, Event, PathChange, Paths, Process};

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
    pub paths: Paths<'e>,
    pub exe: Option<&'e str>,
    pub parent: Option<&'e str>,
    /// The process's ancestors, nearest first.
    pub ancestors: Lineage<'e>,
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
    pub argv: Option<Strs<'e>>,
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
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PermFacts<'e> {
    /// chmod: the new mode, as written (octal).
    pub mode: Option<&'e str>,
    /// chown: the new owner (uid, gid), each none when left unchanged.
    pub owner: Option<(Option<u32>, Option<u32>)>,
    /// setuid family: the call made the process root.
    pub to_root: Option<bool>,
    /// capset: the effective capabilities gained; none when the old set is
    /// unknown.
    pub gained: Option<Strs<'e>>,
}

/// A list of strings, as an event holds it or as a line was read.
#[derive(Clone, Copy, Debug)]
pub enum Strs<'e> {
    Event(&'e [String]),
    Read(&'e [Cow<'e, str>]),
}

impl<'e> Strs<'e> {
    pub fn iter(self) -> impl Iterator<Item = &'e str> {
        let (event, read) = match self {
            Strs::Event(list) => (list, &[][..]),
            Strs::Read(list) => (&[][..], list),
        };
        event
            .iter()
            .map(String::as_str)
            .chain(read.iter().map(|s| &**s))
    }

    pub fn first(self) -> Option<&'e str> {
        self.iter().next()
    }

    pub fn is_empty(self) -> bool {
        self.first().is_none()
    }
}

impl PartialEq for Strs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// An ancestor's program as a line was read: its `exe` and `script`.
pub type AncestorRead<'e> = (Option<Cow<'e, str>>, Option<Cow<'e, str>>);

/// A process's ancestors, nearest first, as an event holds them or as a
/// line was read: what rules read of each is its `exe` and `script`.
#[derive(Clone, Copy, Debug)]
pub enum Lineage<'e> {
    Event(&'e [Ancestor]),
    Read(&'e [AncestorRead<'e>]),
}

impl<'e> Lineage<'e> {
    /// Each ancestor's `exe` and `script`, nearest first.
    pub fn programs(self) -> impl Iterator<Item = (Option<&'e str>, Option<&'e str>)> {
        let (event, read) = match self {
            Lineage::Event(list) => (list, &[][..]),
            Lineage::Read(list) => (&[][..], list),
        };
        event
            .iter()
            .map(|a| (a.exe.as_deref(), a.script.as_deref()))
            .chain(read.iter().map(|(e, s)| (e.as_deref(), s.as_deref())))
    }
}

impl PartialEq for Lineage<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.programs().eq(other.programs())
    }
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
            Body::Exec { exec, .. } => (Some(Strs::Event(&exec.argv)), None),
            Body::Perm { perm, .. } => (
                None,
                Some(PermFacts {
                    mode: perm.mode.as_deref(),
                    owner: perm.owner.as_ref().map(|o| (o.uid, o.gid)),
                    to_root: perm.ids.as_ref().map(|ids| ids.to_root),
                    gained: perm
                        .caps
                        .as_ref()
                        .and_then(|c| c.gained.as_deref())
                        .map(Strs::Event),
                }),
            ),
            _ => (None, None),
        };
        Some(
            Facts::without_process(kinds, ok, body.paths(), argv, perm, body.path_change())
                .with_process(process),
        )
    }

    /// The facts of an event but its process's, which [`Self::with_process`]
    /// or the caller fills in.
    pub fn without_process(
        kinds: u32,
        ok: bool,
        paths: Paths<'e>,
        argv: Option<Strs<'e>>,
        perm: Option<PermFacts<'e>>,
        change: Option<PathChange<'e>>,
    ) -> Self {
        Facts {
            kinds,
            ok,
            paths,
            exe: None,
            parent: None,
            ancestors: Lineage::Event(&[]),
            ancestors_truncated: false,
            uid: 0,
            euid: 0,
            gid: 0,
            auid: None,
            cgroup_id: 0,
            unit: None,
            container: None,
            argv,
            perm,
            change,
        }
    }

    /// These facts, of `process`.
    pub fn with_process(self, process: &'e Process) -> Self {
        Facts {
            exe: process.exe.as_deref(),
            parent: process.parent_exe.as_deref(),
            ancestors: Lineage::Event(&process.ancestors),
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
            ..self
        }
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
            .programs()
            .flat_map(|(exe, script)| [exe, script])
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
pub fn lineage_of(ancestors: Lineage, truncated: bool, exe: Option<&str>) -> String {
    let name = |exe: Option<&str>| {
        exe.map_or("?".to_string(), |e| {
            e.rsplit('/').next().unwrap_or(e).to_string()
        })
    };
    let mut parts: Vec<String> = ancestors
        .programs()
        .map(|(exe, script)| name(script.or(exe)))
        .collect();
    parts.reverse();
    if truncated {
        parts.insert(0, "…".into());
    }
    parts.push(name(exe));
    parts.join(" → ")
}
