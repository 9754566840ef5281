//! The shapes of the objects in an event line, as serde's readers of the
//! event types accept them: each member's key, the form of its value, and
//! whether it must be there. The scanner checks every member it knows
//! against these tables — a line serde would refuse must not count as an
//! event — and skips only members no reader knows, as serde does.
//!
//! Tables list members in the order the writer puts them: the scanner
//! looks for the next key where the last one was found first. Tests at
//! the end hold each table to its type (drift).

use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::Deserialize;

use super::json::{Bail, Cursor, KnownKey};
use crate::canonical::PathSource;
use crate::event::{Outcome, Via};
use crate::rules::spec::{Action, Fallback, Mode, Severity};

/// The form of a member's value.
#[derive(Clone, Copy)]
pub enum Shape {
    U32,
    U64,
    I32,
    I64,
    Bool,
    Str,
    /// A string one of an enum's names (checked by the enum's own reader).
    Enum(fn(&str) -> bool),
    /// A device number, `MAJOR:MINOR`.
    Dev,
    /// `null`, or the shape.
    Opt(&'static Shape),
    List(&'static Shape),
    Obj(&'static Schema),
    /// An object of strings (a decision's `matched`).
    MapStr,
}

/// One member of an object.
pub struct Member {
    pub key: KnownKey,
    pub shape: Shape,
    pub required: bool,
}

/// An object's members.
pub struct Schema {
    pub members: &'static [Member],
    /// The bits of the required members.
    pub required: u64,
}

impl Schema {
    pub const fn new(members: &'static [Member]) -> Schema {
        let mut required = 0;
        let mut i = 0;
        while i < members.len() {
            if members[i].required {
                required |= 1 << i;
            }
            i += 1;
        }
        Schema { members, required }
    }

    /// Reads the next key: the position of its member, or none for a key
    /// the object does not know. The member at `hint` (the one after the
    /// last, in the writer's order) is tried first.
    pub fn member(&self, c: &mut Cursor, hint: usize) -> Result<Option<usize>, Bail> {
        if self.members.get(hint).is_some_and(|m| c.key_is(&m.key)) {
            return Ok(Some(hint));
        }
        let key = c.key()?;
        Ok(self
            .members
            .iter()
            .position(|m| m.key.name.as_bytes() == key))
    }
}

/// Whether `name` is one of `T`'s names, as its reader decides.
fn is<T: for<'de> Deserialize<'de>>(name: &str) -> bool {
    T::deserialize(StrDeserializer::<ValueError>::new(name)).is_ok()
}

const fn req(key: &'static str, shape: Shape) -> Member {
    Member {
        key: KnownKey::new(key),
        shape,
        required: true,
    }
}

/// A member that may be missing: every `Option` (serde reads a missing
/// option as none) and every member with a default.
const fn opt(key: &'static str, shape: Shape) -> Member {
    Member {
        key: KnownKey::new(key),
        shape,
        required: false,
    }
}

const STR: Shape = Shape::Str;
const OPT_STR: Shape = Shape::Opt(&Shape::Str);
const OPT_U32: Shape = Shape::Opt(&Shape::U32);
const OPT_I32: Shape = Shape::Opt(&Shape::I32);
const STRS: Shape = Shape::List(&Shape::Str);
const PATH_SOURCE: Shape = Shape::Opt(&Shape::Enum(is::<PathSource>));

/// Names for the members of one table, as positions in it.
macro_rules! members {
    ($($name:ident),* $(,)?) => {
        #[allow(dead_code)]
        #[repr(usize)]
        pub enum M { $($name),* }
    };
}

pub mod process {
    use super::*;
    members!(
        Pid,
        Tid,
        Id,
        Pv,
        Ppid,
        Uid,
        Gid,
        Euid,
        Egid,
        Auid,
        Comm,
        Exe,
        ParentExe,
        CgroupId,
        ParentId,
        Ancestors,
        AncestorsTruncated,
        User,
        Group,
        Cgroup,
        Unit,
        Container,
        Session,
        Tty,
    );
    /// `ProcessJsonForm`: every member but `pid` and `tid` may be missing
    /// (a reference has only `id` and `pv` more); `Process::try_from`
    /// decides what a whole process must hold.
    pub static SCHEMA: Schema = Schema::new(&[
        req("pid", Shape::U32),
        req("tid", Shape::U32),
        opt("id", OPT_STR),
        opt("pv", Shape::Opt(&Shape::U64)),
        opt("ppid", OPT_U32),
        opt("uid", OPT_U32),
        opt("gid", OPT_U32),
        opt("euid", OPT_U32),
        opt("egid", OPT_U32),
        opt("auid", OPT_U32),
        opt("comm", OPT_STR),
        opt("exe", OPT_STR),
        opt("parent_exe", OPT_STR),
        opt("cgroup_id", Shape::Opt(&Shape::U64)),
        opt("parent_id", OPT_STR),
        opt("ancestors", Shape::List(&Shape::Obj(&ancestor::SCHEMA))),
        opt("ancestors_truncated", Shape::Bool),
        opt("user", OPT_STR),
        opt("group", OPT_STR),
        opt("cgroup", OPT_STR),
        opt("unit", OPT_STR),
        opt("container", Shape::Opt(&Shape::Obj(&container::SCHEMA))),
        opt("session", OPT_U32),
        opt("tty", OPT_STR),
    ]);
}

pub mod ancestor {
    use super::*;
    members!(Pid, Id, Exe, Script);
    pub static SCHEMA: Schema = Schema::new(&[
        req("pid", Shape::U32),
        opt("id", OPT_STR),
        opt("exe", OPT_STR),
        opt("script", OPT_STR),
    ]);
}

pub mod container {
    use super::*;
    members!(Runtime, Id);
    pub static SCHEMA: Schema = Schema::new(&[req("runtime", STR), req("id", STR)]);
}

pub mod result {
    use super::*;
    members!(Ok, Ret, Errno);
    pub static SCHEMA: Schema = Schema::new(&[
        req("ok", Shape::Bool),
        req("ret", Shape::I64),
        opt("errno", OPT_STR),
    ]);
}

pub mod exec {
    use super::*;
    members!(
        Path,
        RawPath,
        PathSource,
        Argv,
        ArgvTruncated,
        ArgvUnavailable,
        Cwd,
        Fd
    );
    pub static SCHEMA: Schema = Schema::new(&[
        req("path", STR),
        opt("raw_path", OPT_STR),
        opt("path_source", PATH_SOURCE),
        req("argv", STRS),
        req("argv_truncated", Shape::Bool),
        opt("argv_unavailable", Shape::Bool),
        opt("cwd", OPT_STR),
        opt("fd", OPT_I32),
    ]);
}

pub mod file {
    use super::*;
    members!(
        Op,
        Path,
        RawPath,
        PathSource,
        Resolved,
        Object,
        Aliases,
        NewPath,
        NewPathSource,
        Target,
        Flags,
        Mode,
        Fd,
        Length,
        Truncated,
        Mount,
    );
    pub static SCHEMA: Schema = Schema::new(&[
        req("op", STR),
        opt("path", OPT_STR),
        opt("raw_path", OPT_STR),
        opt("path_source", PATH_SOURCE),
        req("resolved", Shape::Bool),
        opt("object", Shape::Opt(&Shape::Obj(&object::SCHEMA))),
        opt("aliases", STRS),
        opt("new_path", OPT_STR),
        opt("new_path_source", PATH_SOURCE),
        opt("target", OPT_STR),
        opt("flags", STRS),
        opt("mode", OPT_STR),
        opt("fd", OPT_I32),
        opt("length", Shape::Opt(&Shape::U64)),
        opt("truncated", STRS),
        opt("mount", Shape::Opt(&Shape::Obj(&mount::SCHEMA))),
    ]);
}

pub mod object {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("dev", Shape::Dev),
        req("ino", Shape::U64),
        req("kernel", Shape::Bool),
    ]);
}

pub mod mount {
    use super::*;
    members!(Source, Fstype, Flags, Namespace);
    pub static SCHEMA: Schema = Schema::new(&[
        opt("source", OPT_STR),
        opt("fstype", OPT_STR),
        opt("flags", STRS),
        opt("namespace", OPT_STR),
    ]);
}

pub mod perm {
    use super::*;
    members!(
        Op, Path, RawPath, PathSource, Object, Aliases, Fd, Mode, ModeBits, Owner, Ids, Caps,
        Xattr, Truncated,
    );
    pub static SCHEMA: Schema = Schema::new(&[
        req("op", STR),
        opt("path", OPT_STR),
        opt("raw_path", OPT_STR),
        opt("path_source", PATH_SOURCE),
        opt("object", Shape::Opt(&Shape::Obj(&object::SCHEMA))),
        opt("aliases", STRS),
        opt("fd", OPT_I32),
        opt("mode", OPT_STR),
        opt("mode_bits", STRS),
        opt("owner", Shape::Opt(&Shape::Obj(&owner::SCHEMA))),
        opt("ids", Shape::Opt(&Shape::Obj(&id_change::SCHEMA))),
        opt("caps", Shape::Opt(&Shape::Obj(&cap_change::SCHEMA))),
        opt("xattr", Shape::Opt(&Shape::Obj(&xattr::SCHEMA))),
        opt("truncated", STRS),
    ]);
}

pub mod owner {
    use super::*;
    members!(Uid, Gid);
    pub static SCHEMA: Schema = Schema::new(&[opt("uid", OPT_U32), opt("gid", OPT_U32)]);
}

pub mod ids {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("uid", Shape::U32),
        req("gid", Shape::U32),
        req("euid", Shape::U32),
        req("egid", Shape::U32),
    ]);
}

pub mod id_change {
    use super::*;
    members!(Requested, Old, New, ToRoot);
    pub static SCHEMA: Schema = Schema::new(&[
        req("requested", Shape::List(&Shape::I64)),
        req("old", Shape::Obj(&ids::SCHEMA)),
        req("new", Shape::Obj(&ids::SCHEMA)),
        req("to_root", Shape::Bool),
    ]);
}

pub mod cap_change {
    use super::*;
    members!(Effective, Permitted, Inheritable, Gained);
    pub static SCHEMA: Schema = Schema::new(&[
        req("effective", STRS),
        req("permitted", STRS),
        req("inheritable", STRS),
        opt("gained", Shape::Opt(&STRS)),
    ]);
}

pub mod xattr {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("name", STR),
        req("size", Shape::U64),
        opt("file_caps", Shape::Opt(&Shape::Obj(&file_caps::SCHEMA))),
    ]);
}

pub mod file_caps {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("permitted", STRS),
        req("inheritable", STRS),
        req("effective", Shape::Bool),
    ]);
}

pub mod uring {
    use super::*;
    members!(Op, Fd, SqEntries, Register, Flags);
    pub static SCHEMA: Schema = Schema::new(&[
        req("op", STR),
        opt("fd", OPT_I32),
        opt("sq_entries", OPT_U32),
        opt("register", Shape::Opt(&Shape::Obj(&uring_register::SCHEMA))),
        opt("flags", STRS),
    ]);
}

pub mod uring_register {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("opcode", STR),
        req("files", Shape::U32),
        req("buffers", Shape::U32),
    ]);
}

pub mod decision {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("rule", STR),
        req("action", Shape::Enum(is::<Action>)),
        req("mode", Shape::Enum(is::<Mode>)),
        req("severity", Shape::Enum(is::<Severity>)),
        req("outcome", Shape::Enum(is::<Outcome>)),
        opt("fallback", Shape::Opt(&Shape::Enum(is::<Fallback>))),
        req("matched", Shape::MapStr),
        opt("also", STRS),
        opt("exempted", STRS),
        opt("reverted", Shape::Opt(&Shape::Obj(&reverted::SCHEMA))),
        opt("fallback_error", OPT_STR),
    ]);
}

pub mod reverted {
    use super::*;
    pub static SCHEMA: Schema = Schema::new(&[
        req("mode", STR),
        req("uid", Shape::U32),
        req("gid", Shape::U32),
    ]);
}

/// An event's top-level members (`event_json::Field`), which
/// `view::event` reads by the rules of `event_json::EventVisitor`, not as
/// a schema's: the shapes here are those of the members it checks
/// alike.
pub mod top {
    use super::*;
    members!(
        Seq, Time, KtimeNs, Via, Kind, Syscall, Process, Result, Exec, File, Perm, Uring, Loss,
        Decision, Redacted,
    );
    pub static SCHEMA: Schema = Schema::new(&[
        req("seq", Shape::U64),
        req("time", STR),
        req("ktime_ns", Shape::U64),
        opt("via", VIA),
        req("kind", STR),
        req("syscall", STR),
        req("process", Shape::Obj(&process::SCHEMA)),
        req("result", Shape::Obj(&result::SCHEMA)),
        opt("exec", Shape::Obj(&exec::SCHEMA)),
        opt("file", Shape::Obj(&file::SCHEMA)),
        opt("perm", Shape::Obj(&perm::SCHEMA)),
        opt("uring", Shape::Obj(&uring::SCHEMA)),
        opt("loss", Shape::Obj(&Schema::new(&[]))),
        opt("decision", DECISION),
        opt("redacted", REDACTED),
    ]);
}

/// `via`: `null` or one of its names.
pub const VIA: Shape = Shape::Opt(&Shape::Enum(is::<Via>));
/// `decision`: `null` or a decision.
pub const DECISION: Shape = Shape::Opt(&Shape::Obj(&decision::SCHEMA));
/// `redacted`: the fields redacted.
pub const REDACTED: Shape = STRS;

/// Checks a value of `shape`, keeping nothing. `depth`: arrays and
/// objects open around it.
pub fn validate(c: &mut Cursor, shape: &Shape, depth: u32) -> Result<(), Bail> {
    match *shape {
        Shape::U32 => c.uint::<u32>().map(drop),
        Shape::U64 => c.uint::<u64>().map(drop),
        Shape::I32 => c.int::<i32>().map(drop),
        Shape::I64 => c.int::<i64>().map(drop),
        Shape::Bool => c.bool().map(drop),
        Shape::Str => c.string().map(drop),
        Shape::Enum(known) => known(&c.string()?).then_some(()).ok_or(Bail),
        Shape::Dev => crate::event::dev_from_text(&c.string()?)
            .map(drop)
            .map_err(|_| Bail),
        Shape::Opt(inner) => {
            if c.opt_null() {
                Ok(())
            } else {
                validate(c, inner, depth)
            }
        }
        Shape::List(item) => list(c, depth, |c| validate(c, item, depth + 1)),
        Shape::Obj(schema) => object(c, schema, depth, |_, _| Ok(false)),
        Shape::MapStr => {
            // A map: any keys (an escaped one bails), repeated keys
            // allowed (the last wins), string values.
            if c.begin(b'{', b'}')? {
                loop {
                    c.key()?;
                    c.string()?;
                    if !c.more(b'}')? {
                        break;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Reads an array, each item with `item`.
pub fn list<'a>(
    c: &mut Cursor<'a>,
    depth: u32,
    mut item: impl FnMut(&mut Cursor<'a>) -> Result<(), Bail>,
) -> Result<(), Bail> {
    if depth >= super::json::MAX_DEPTH {
        return Err(Bail);
    }
    if c.begin(b'[', b']')? {
        loop {
            item(c)?;
            if !c.more(b']')? {
                break;
            }
        }
    }
    Ok(())
}

/// Reads an object of `schema`: each known member once (a second one
/// bails, as serde refuses it), handed to `each` by its position, which
/// reads its value and answers true, or answers false to have it checked
/// by its shape; unknown members skipped; the required ones present.
pub fn object<'a>(
    c: &mut Cursor<'a>,
    schema: &Schema,
    depth: u32,
    mut each: impl FnMut(&mut Cursor<'a>, usize) -> Result<bool, Bail>,
) -> Result<(), Bail> {
    if depth >= super::json::MAX_DEPTH {
        return Err(Bail);
    }
    let mut seen = 0u64;
    if c.begin(b'{', b'}')? {
        let mut hint = 0;
        loop {
            match schema.member(c, hint)? {
                Some(i) => {
                    if seen & (1 << i) != 0 {
                        return Err(Bail);
                    }
                    seen |= 1 << i;
                    hint = i + 1;
                    if !each(c, i)? {
                        validate(c, &schema.members[i].shape, depth + 1)?;
                    }
                }
                None => c.skip_value(depth + 1)?,
            }
            if !c.more(b'}')? {
                break;
            }
        }
    }
    if seen & schema.required != schema.required {
        return Err(Bail);
    }
    Ok(())
}
