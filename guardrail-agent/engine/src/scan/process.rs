//! A line's process as the scanner reads it: whole, or a reference to a
//! version defined earlier, as `Process::try_from` takes it; and where its
//! texts lie in the object, for the memo of processes read lately.

use std::borrow::Cow;

use super::json::{Bail, Cursor};
use super::schema::{self, list, object};

/// A line's process: whole, or a reference to a version defined earlier;
/// each text as `T`.
#[derive(Debug, Default)]
pub struct ProcessOf<T> {
    pub(super) id: Option<T>,
    pub(super) pv: Option<u64>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) euid: Option<u32>,
    pub(super) egid: Option<u32>,
    pub(super) auid: Option<u32>,
    pub(super) comm: bool,
    pub(super) exe: Option<T>,
    pub(super) parent_exe: Option<T>,
    pub(super) cgroup_id: Option<u64>,
    /// Each ancestor's exe and script, nearest first.
    pub(super) ancestors: Vec<(Option<T>, Option<T>)>,
    pub(super) ancestors_truncated: bool,
    pub(super) unit: Option<T>,
    /// The container's runtime and id.
    pub(super) container: Option<(T, T)>,
}

/// A line's process, its texts borrowed from the line where they hold no
/// escape.
pub type ProcessRead<'a> = ProcessOf<Cow<'a, str>>;

/// Where a text lies in a process object: its start and end.
type Span = (u32, u32);

/// A process object's reading with each text as where it lies in the
/// object, for the memo; only of objects without escapes.
pub type ProcessSpans = ProcessOf<Span>;

impl<T> ProcessOf<T> {
    /// The same reading with each text made by `text`; none when `text`
    /// makes none of one.
    fn map_texts<U>(&self, mut text: impl FnMut(&T) -> Option<U>) -> Option<ProcessOf<U>> {
        let container = match &self.container {
            Some((runtime, id)) => Some((text(runtime)?, text(id)?)),
            None => None,
        };
        let mut opt = |t: &Option<T>| match t {
            Some(t) => text(t).map(Some),
            None => Some(None),
        };
        let mut ancestors = Vec::with_capacity(self.ancestors.len());
        for (exe, script) in &self.ancestors {
            ancestors.push((opt(exe)?, opt(script)?));
        }
        let (id, exe, parent_exe, unit) = (
            opt(&self.id)?,
            opt(&self.exe)?,
            opt(&self.parent_exe)?,
            opt(&self.unit)?,
        );
        Some(ProcessOf {
            id,
            pv: self.pv,
            uid: self.uid,
            gid: self.gid,
            euid: self.euid,
            egid: self.egid,
            auid: self.auid,
            comm: self.comm,
            exe,
            parent_exe,
            cgroup_id: self.cgroup_id,
            ancestors,
            ancestors_truncated: self.ancestors_truncated,
            unit,
            container,
        })
    }
}

impl<'a> ProcessRead<'a> {
    /// Where each of this reading's texts lies in `object`, if each is
    /// borrowed from it.
    pub(super) fn spans(&self, object: &'a str) -> Option<ProcessSpans> {
        let base = object.as_ptr() as usize;
        self.map_texts(|text| match text {
            Cow::Borrowed(t) => {
                let start = (t.as_ptr() as usize).checked_sub(base)?;
                (start + t.len() <= object.len())
                    .then_some((start as u32, (start + t.len()) as u32))
            }
            Cow::Owned(_) => None,
        })
    }

    /// The reading `spans` describes, of `object`.
    pub(super) fn at(spans: &ProcessSpans, object: &'a str) -> ProcessRead<'a> {
        spans
            .map_texts(|&(start, end)| Some(Cow::Borrowed(&object[start as usize..end as usize])))
            .expect("every span makes a text")
    }
}

/// The line's process, as `Process::try_from` would take it: whole
/// without `pv`, or a reference. A definition (whole with `pv`) bails:
/// the serde reader learns it for the references that follow.
pub(super) fn process_of<'a>(c: &mut Cursor<'a>) -> Result<ProcessRead<'a>, Bail> {
    use schema::process::M;
    let mut p = ProcessRead::default();
    object(c, &schema::process::SCHEMA, 1, |c, i| {
        match i {
            i if i == M::Id as usize => p.id = c.opt_string()?,
            i if i == M::Pv as usize => p.pv = c.opt_uint()?,
            i if i == M::Uid as usize => p.uid = c.opt_uint()?,
            i if i == M::Gid as usize => p.gid = c.opt_uint()?,
            i if i == M::Euid as usize => p.euid = c.opt_uint()?,
            i if i == M::Egid as usize => p.egid = c.opt_uint()?,
            i if i == M::Auid as usize => p.auid = c.opt_uint()?,
            i if i == M::Comm as usize => p.comm = c.opt_string()?.is_some(),
            i if i == M::Exe as usize => p.exe = c.opt_string()?,
            i if i == M::ParentExe as usize => p.parent_exe = c.opt_string()?,
            i if i == M::CgroupId as usize => p.cgroup_id = c.opt_uint()?,
            i if i == M::Ancestors as usize => {
                list(c, 2, |c| {
                    let (mut exe, mut script) = (None, None);
                    object(c, &schema::ancestor::SCHEMA, 3, |c, i| {
                        use schema::ancestor::M;
                        match i {
                            i if i == M::Exe as usize => exe = c.opt_string()?,
                            i if i == M::Script as usize => script = c.opt_string()?,
                            _ => return Ok(false),
                        }
                        Ok(true)
                    })?;
                    p.ancestors.push((exe, script));
                    Ok(())
                })?;
            }
            i if i == M::AncestorsTruncated as usize => p.ancestors_truncated = c.bool()?,
            i if i == M::Unit as usize => p.unit = c.opt_string()?,
            i if i == M::Container as usize => {
                if !c.opt_null() {
                    let (mut runtime, mut id) = (None, None);
                    object(c, &schema::container::SCHEMA, 2, |c, i| {
                        use schema::container::M;
                        match i {
                            i if i == M::Runtime as usize => runtime = Some(c.string()?),
                            _ => id = Some(c.string()?),
                        }
                        Ok(true)
                    })?;
                    p.container = runtime.zip(id);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let reference = p.uid.is_none() && !p.comm;
    if reference {
        // `Process::try_from`: a reference has `pv` and `id`; without
        // them the missing members are an error, which serde reports.
        return match (p.pv, &p.id) {
            (Some(_), Some(_)) => Ok(p),
            _ => Err(Bail),
        };
    }
    let whole = p.uid.is_some()
        && p.gid.is_some()
        && p.euid.is_some()
        && p.egid.is_some()
        && p.comm
        && p.cgroup_id.is_some();
    if !whole || p.pv.is_some() {
        return Err(Bail);
    }
    Ok(p)
}
