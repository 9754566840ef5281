//! An event line read in place: what rules and replay's report need,
//! borrowed from the line, every other member checked as serde's reader
//! checks it (see [`super::schema`]).
//!
//! The top level mirrors `event_json::EventVisitor`: `via` and `decision`
//! may repeat (the last wins), every other known member may not; a section
//! of another kind than `kind` is skipped unread once `kind` is known and
//! checked while it is not.

use std::borrow::Cow;

use super::json::{Bail, Cursor};
use super::memo::{tid_of, RecentProcesses};
use super::process::{process_of, ProcessRead};
use super::schema::{self, list, object, validate};
use crate::event::{path_change_of, MountFacts, Paths, Process};
use crate::interpret::is_write_flag;
use crate::rules::facts::{ContainerRef, Facts, Lineage, PermFacts, Strs};
use crate::rules::kinds::{mask_of_op, BodyKind};

#[derive(Debug)]
struct ExecRead<'a> {
    path: Cow<'a, str>,
    argv: Vec<Cow<'a, str>>,
}

#[derive(Debug)]
struct FileRead<'a> {
    op: Cow<'a, str>,
    path: Option<Cow<'a, str>>,
    new_path: Option<Cow<'a, str>>,
    aliases: Vec<Cow<'a, str>>,
    /// An open's flags write (`interpret::is_write_flag`) and create.
    write: bool,
    create: bool,
    mount: Option<MountRead<'a>>,
}

#[derive(Debug)]
struct MountRead<'a> {
    namespace: Option<Cow<'a, str>>,
    /// What the flags say (its namespace left unset).
    flags: MountFacts<'static>,
}

#[derive(Debug)]
struct PermRead<'a> {
    op: Cow<'a, str>,
    path: Option<Cow<'a, str>>,
    aliases: Vec<Cow<'a, str>>,
    mode: Option<Cow<'a, str>>,
    owner: Option<(Option<u32>, Option<u32>)>,
    to_root: Option<bool>,
    gained: Option<Vec<Cow<'a, str>>>,
}

/// The section of the line's kind.
#[derive(Debug)]
enum Section<'a> {
    Exec(ExecRead<'a>),
    File(FileRead<'a>),
    Perm(PermRead<'a>),
    Uring(Cow<'a, str>),
}

/// What a report shows of an event: its operation, exe and first path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary<'v> {
    pub op: &'v str,
    pub exe: Option<&'v str>,
    pub path: Option<&'v str>,
}

impl<'v> Summary<'v> {
    /// What a report shows of an event read whole.
    pub fn of(event: &'v crate::event::Event) -> Self {
        Summary {
            op: event.body.op(),
            exe: event.body.process().and_then(|p| p.exe.as_deref()),
            path: event.body.paths().first().copied(),
        }
    }
}

/// An event line as replay reads it.
#[derive(Debug)]
pub struct EventView<'a> {
    pub seq: u64,
    pub time: Cow<'a, str>,
    ok: bool,
    process: ProcessRead<'a>,
    section: Section<'a>,
}

/// The sections read, by kind.
#[derive(Default)]
struct Sections<'a> {
    exec: Option<ExecRead<'a>>,
    file: Option<FileRead<'a>>,
    perm: Option<PermRead<'a>>,
    uring: Option<Cow<'a, str>>,
}

/// Takes a member's value, refusing a second one (as `event_json::take`).
fn once<T>(slot: &mut Option<T>, value: Result<T, Bail>) -> Result<(), Bail> {
    if slot.is_some() {
        return Err(Bail);
    }
    *slot = Some(value?);
    Ok(())
}

fn strings<'a>(c: &mut Cursor<'a>, depth: u32) -> Result<Vec<Cow<'a, str>>, Bail> {
    let mut out = Vec::new();
    list(c, depth, |c| {
        out.push(c.string()?);
        Ok(())
    })?;
    Ok(out)
}

/// Each string of a list to `each`, kept nowhere.
fn each_string<'a>(c: &mut Cursor<'a>, depth: u32, mut each: impl FnMut(&str)) -> Result<(), Bail> {
    list(c, depth, |c| {
        each(&c.string()?);
        Ok(())
    })
}

/// Reads `line`'s event, or bails when serde must decide (see
/// [`super::json::Bail`]).
pub fn event<'a>(
    c: &mut Cursor<'a>,
    mut memo: Option<&mut RecentProcesses>,
) -> Result<EventView<'a>, Bail> {
    let (mut seq, mut time, mut ktime_ns, mut kind) = (None, None, None, None);
    let (mut syscall, mut process, mut ok, mut redacted) = (None, None, None, None);
    let mut sections = Sections::default();
    let wants = |kind: Option<BodyKind>, of: BodyKind| kind.is_none_or(|k| k == of);
    if !c.begin(b'{', b'}')? {
        return Err(Bail);
    }
    let mut hint = 0;
    loop {
        use schema::top::M;
        let member = schema::top::SCHEMA.member(c, hint)?;
        hint = member.map_or(hint, |i| i + 1);
        match member {
            Some(i) if i == M::Seq as usize => once(&mut seq, c.uint::<u64>())?,
            Some(i) if i == M::Time as usize => once(&mut time, c.string())?,
            Some(i) if i == M::KtimeNs as usize => once(&mut ktime_ns, c.uint::<u64>())?,
            Some(i) if i == M::Via as usize => validate(c, &schema::VIA, 1)?,
            Some(i) if i == M::Kind as usize => {
                once(&mut kind, c.string().and_then(|k| kind_of(&k)))?
            }
            Some(i) if i == M::Syscall as usize => once(&mut syscall, c.string().map(drop))?,
            Some(i) if i == M::Process as usize => {
                once(&mut process, process_with(c, memo.as_deref_mut()))?
            }
            Some(i) if i == M::Result as usize => once(&mut ok, result_of(c))?,
            Some(i) if i == M::Exec as usize && wants(kind, BodyKind::Exec) => {
                once(&mut sections.exec, exec_of(c))?
            }
            Some(i) if i == M::File as usize && wants(kind, BodyKind::File) => {
                once(&mut sections.file, file_of(c))?
            }
            Some(i) if i == M::Perm as usize && wants(kind, BodyKind::Perm) => {
                once(&mut sections.perm, perm_of(c))?
            }
            Some(i) if i == M::Uring as usize && wants(kind, BodyKind::Uring) => {
                once(&mut sections.uring, uring_of(c))?
            }
            // A loss report, which replay does not judge: serde reads it.
            Some(i) if i == M::Loss as usize && kind.is_none() => return Err(Bail),
            Some(i) if i == M::Decision as usize => validate(c, &schema::DECISION, 1)?,
            Some(i) if i == M::Redacted as usize => {
                once(&mut redacted, validate(c, &schema::REDACTED, 1))?
            }
            // Unknown, or another kind's section once `kind` is known.
            _ => c.skip_value(1)?,
        }
        if !c.more(b'}')? {
            break;
        }
    }
    if !c.at_end() {
        return Err(Bail);
    }
    let (Some(seq), Some(time), Some(_), Some(kind), Some(_), Some(process), Some(ok)) =
        (seq, time, ktime_ns, kind, syscall, process, ok)
    else {
        return Err(Bail);
    };
    let section = match kind {
        BodyKind::Exec => Section::Exec(sections.exec.ok_or(Bail)?),
        BodyKind::File => Section::File(sections.file.ok_or(Bail)?),
        BodyKind::Perm => Section::Perm(sections.perm.ok_or(Bail)?),
        BodyKind::Uring => Section::Uring(sections.uring.ok_or(Bail)?),
    };
    Ok(EventView {
        seq,
        time,
        ok,
        process,
        section,
    })
}

/// `kind`, but for `loss` (and anything unknown), which serde decides.
fn kind_of(name: &str) -> Result<BodyKind, Bail> {
    match name {
        "exec" => Ok(BodyKind::Exec),
        "file" => Ok(BodyKind::File),
        "perm" => Ok(BodyKind::Perm),
        "uring" => Ok(BodyKind::Uring),
        _ => Err(Bail),
    }
}

/// [`process_of`], through the memo of the processes read lately.
fn process_with<'a>(
    c: &mut Cursor<'a>,
    memo: Option<&mut RecentProcesses>,
) -> Result<ProcessRead<'a>, Bail> {
    let Some(memo) = memo else {
        return process_of(c);
    };
    c.ws();
    let (line, start) = (c.text(), c.position());
    let Some(tid) = tid_of(&line.as_bytes()[start..]) else {
        return process_of(c);
    };
    if let Some((len, spans)) = memo.find(tid, &line.as_bytes()[start..]) {
        c.pass(len);
        return Ok(ProcessRead::at(spans, &line[start..start + len]));
    }
    let read = process_of(c)?;
    let object = &line[start..c.position()];
    if let Some(spans) = read.spans(object) {
        memo.learn(tid, object.as_bytes(), spans);
    }
    Ok(read)
}

/// Reads an object of `schema`, keeping one member's value (read by
/// `read`); none when the object has not that member.
fn only<'a, T>(
    c: &mut Cursor<'a>,
    schema: &schema::Schema,
    depth: u32,
    member: usize,
    mut read: impl FnMut(&mut Cursor<'a>) -> Result<T, Bail>,
) -> Result<Option<T>, Bail> {
    let mut value = None;
    object(c, schema, depth, |c, i| {
        if i != member {
            return Ok(false);
        }
        value = Some(read(c)?);
        Ok(true)
    })?;
    Ok(value)
}

/// `result.ok`.
fn result_of(c: &mut Cursor) -> Result<bool, Bail> {
    let ok = schema::result::M::Ok as usize;
    only(c, &schema::result::SCHEMA, 1, ok, Cursor::bool)?.ok_or(Bail)
}

fn exec_of<'a>(c: &mut Cursor<'a>) -> Result<ExecRead<'a>, Bail> {
    use schema::exec::M;
    let (mut path, mut argv) = (None, None);
    object(c, &schema::exec::SCHEMA, 1, |c, i| {
        match i {
            i if i == M::Path as usize => path = Some(c.string()?),
            i if i == M::Argv as usize => argv = Some(strings(c, 2)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(ExecRead {
        path: path.ok_or(Bail)?,
        argv: argv.ok_or(Bail)?,
    })
}

fn file_of<'a>(c: &mut Cursor<'a>) -> Result<FileRead<'a>, Bail> {
    use schema::file::M;
    let (mut op, mut path, mut new_path, mut aliases) = (None, None, None, Vec::new());
    let (mut write, mut create, mut mount) = (false, false, None);
    object(c, &schema::file::SCHEMA, 1, |c, i| {
        match i {
            i if i == M::Op as usize => op = Some(c.string()?),
            i if i == M::Path as usize => path = c.opt_string()?,
            i if i == M::NewPath as usize => new_path = c.opt_string()?,
            i if i == M::Aliases as usize => aliases = strings(c, 2)?,
            i if i == M::Flags as usize => each_string(c, 2, |f| {
                write |= is_write_flag(f);
                create |= f == "create";
            })?,
            i if i == M::Mount as usize => {
                if !c.opt_null() {
                    mount = Some(mount_of(c)?);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(FileRead {
        op: op.ok_or(Bail)?,
        path,
        new_path,
        aliases,
        write,
        create,
        mount,
    })
}

fn mount_of<'a>(c: &mut Cursor<'a>) -> Result<MountRead<'a>, Bail> {
    use schema::mount::M;
    let mut m = MountRead {
        namespace: None,
        flags: MountFacts::default(),
    };
    object(c, &schema::mount::SCHEMA, 2, |c, i| {
        match i {
            i if i == M::Namespace as usize => m.namespace = c.opt_string()?,
            i if i == M::Flags as usize => each_string(c, 3, |f| m.flags.flag(f))?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(m)
}

fn perm_of<'a>(c: &mut Cursor<'a>) -> Result<PermRead<'a>, Bail> {
    use schema::perm::M;
    let mut p = PermRead {
        op: Cow::Borrowed(""),
        path: None,
        aliases: Vec::new(),
        mode: None,
        owner: None,
        to_root: None,
        gained: None,
    };
    let mut op = None;
    object(c, &schema::perm::SCHEMA, 1, |c, i| {
        match i {
            i if i == M::Op as usize => op = Some(c.string()?),
            i if i == M::Path as usize => p.path = c.opt_string()?,
            i if i == M::Aliases as usize => p.aliases = strings(c, 2)?,
            i if i == M::Mode as usize => p.mode = c.opt_string()?,
            i if i == M::Owner as usize => {
                if !c.opt_null() {
                    let (mut uid, mut gid) = (None, None);
                    object(c, &schema::owner::SCHEMA, 2, |c, i| {
                        if i == schema::owner::M::Uid as usize {
                            uid = c.opt_uint()?;
                        } else {
                            gid = c.opt_uint()?;
                        }
                        Ok(true)
                    })?;
                    p.owner = Some((uid, gid));
                }
            }
            i if i == M::Ids as usize => {
                if !c.opt_null() {
                    let to_root = schema::id_change::M::ToRoot as usize;
                    let ids = &schema::id_change::SCHEMA;
                    p.to_root = Some(only(c, ids, 2, to_root, Cursor::bool)?.ok_or(Bail)?);
                }
            }
            i if i == M::Caps as usize => {
                if !c.opt_null() {
                    let gained = schema::cap_change::M::Gained as usize;
                    let caps = &schema::cap_change::SCHEMA;
                    let list = |c: &mut Cursor<'a>| {
                        if c.opt_null() {
                            Ok(None)
                        } else {
                            strings(c, 3).map(Some)
                        }
                    };
                    p.gained = only(c, caps, 2, gained, list)?.flatten();
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    p.op = op.ok_or(Bail)?;
    Ok(p)
}

fn uring_of<'a>(c: &mut Cursor<'a>) -> Result<Cow<'a, str>, Bail> {
    let op = schema::uring::M::Op as usize;
    only(c, &schema::uring::SCHEMA, 1, op, Cursor::string)?.ok_or(Bail)
}

impl<'a> EventView<'a> {
    /// The version a reference names, with its process's `id`; none for a
    /// whole process.
    pub fn reference(&self) -> Option<(u64, &str)> {
        let p = &self.process;
        if p.uid.is_some() {
            return None;
        }
        Some((p.pv?, p.id.as_deref()?))
    }

    /// The event's facts; `joined` is the definition of the process a
    /// reference names (see [`Self::reference`]), unused for a whole one.
    pub fn facts<'v>(&'v self, joined: Option<&'v Process>) -> Option<Facts<'v>> {
        let (kind, op, write, create) = match &self.section {
            Section::Exec(_) => (BodyKind::Exec, "exec", false, false),
            Section::File(f) => (BodyKind::File, &*f.op, f.write, f.create),
            Section::Perm(p) => (BodyKind::Perm, &*p.op, false, false),
            Section::Uring(op) => (BodyKind::Uring, &**op, false, false),
        };
        let kinds = mask_of_op(kind, op, write, create);
        if kinds == 0 {
            return None;
        }
        let mut paths = Paths::new();
        let (mut argv, mut perm, mut change) = (None, None, None);
        match &self.section {
            Section::Exec(e) => {
                paths.push(&e.path);
                argv = Some(Strs::Read(&e.argv));
            }
            Section::File(f) => {
                paths.extend(f.path.as_deref());
                paths.extend(f.new_path.as_deref());
                paths.extend(f.aliases.iter().map(|a| &**a));
                change = path_change_of(
                    &f.op,
                    f.mount.as_ref().map(|m| MountFacts {
                        namespace: m.namespace.as_deref(),
                        ..m.flags
                    }),
                    f.path.as_deref(),
                    f.new_path.as_deref(),
                );
            }
            Section::Perm(p) => {
                paths.extend(p.path.as_deref());
                paths.extend(p.aliases.iter().map(|a| &**a));
                perm = Some(PermFacts {
                    mode: p.mode.as_deref(),
                    owner: p.owner,
                    to_root: p.to_root,
                    gained: p.gained.as_deref().map(Strs::Read),
                });
            }
            Section::Uring(_) => {}
        }
        let facts = Facts::without_process(kinds, self.ok, paths, argv, perm, change);
        let p = match (self.reference(), joined) {
            (None, _) => &self.process,
            (Some(_), Some(joined)) => return Some(facts.with_process(joined)),
            (Some(_), None) => return None,
        };
        Some(Facts {
            exe: p.exe.as_deref(),
            parent: p.parent_exe.as_deref(),
            ancestors: Lineage::Read(&p.ancestors),
            ancestors_truncated: p.ancestors_truncated,
            uid: p.uid?,
            euid: p.euid?,
            gid: p.gid?,
            auid: p.auid,
            cgroup_id: p.cgroup_id?,
            unit: p.unit.as_deref(),
            container: p
                .container
                .as_ref()
                .map(|(runtime, id)| ContainerRef { runtime, id }),
            ..facts
        })
    }

    /// The operation (`exec`, `open`, `chmod`…), the exe and the first
    /// path the event names: what a report shows of an example.
    pub fn summary<'v>(&'v self, joined: Option<&'v Process>) -> Summary<'v> {
        let (op, path) = match &self.section {
            Section::Exec(e) => ("exec", Some(&*e.path)),
            Section::File(f) => (&*f.op, f.path.as_deref().or(f.new_path.as_deref())),
            Section::Perm(p) => (&*p.op, p.path.as_deref()),
            Section::Uring(op) => (&**op, None),
        };
        let path = path.or_else(|| match &self.section {
            Section::File(f) => f.aliases.first().map(|a| &**a),
            Section::Perm(p) => p.aliases.first().map(|a| &**a),
            _ => None,
        });
        // A reference's own members other than its id are not the
        // process's (serde drops them): only its definition names the exe.
        let exe = match (self.reference(), joined) {
            (None, _) => self.process.exe.as_deref(),
            (Some(_), Some(p)) => p.exe.as_deref(),
            (Some(_), None) => None,
        };
        Summary { op, exe, path }
    }
}
