//! Reading an event back from its JSON line (replay, `log search`,
//! `tail`), in one pass.
//!
//! The derived form of an [`Event`] with its body flattened and tagged by
//! `kind` would buffer every field of the line into an intermediate tree,
//! then walk that tree again to find the body's variant (serde's
//! `Content`): three quarters of replay's time went there. This reader
//! takes each field straight into its place and builds the body once the
//! line is read, whatever the order of its fields. As with the derived
//! form, fields it does not know are skipped, and so are another kind's
//! sections.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::event::{
    Body, Decision, Event, ExecDetails, FileDetails, LossDetails, PermDetails, Process,
    SyscallResult, UringDetails, Via,
};

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

/// An event's top-level field names (docs/events.md).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Seq,
    Time,
    KtimeNs,
    Via,
    Kind,
    Syscall,
    Process,
    Result,
    Exec,
    File,
    Perm,
    Uring,
    Loss,
    Decision,
    Redacted,
    #[serde(other)]
    Other,
}

/// The values of `kind`.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Exec,
    File,
    Perm,
    Uring,
    Loss,
}

/// The fields of one line, each taken once.
#[derive(Default)]
struct Fields {
    seq: Option<u64>,
    time: Option<String>,
    ktime_ns: Option<u64>,
    via: Option<Via>,
    kind: Option<Kind>,
    syscall: Option<crate::event::Name>,
    process: Option<Process>,
    result: Option<SyscallResult>,
    exec: Option<ExecDetails>,
    file: Option<FileDetails>,
    perm: Option<PermDetails>,
    uring: Option<UringDetails>,
    loss: Option<LossDetails>,
    decision: Option<Decision>,
    redacted: Option<Vec<String>>,
}

impl Fields {
    /// Whether a section for `kind` is read: another kind's section is
    /// skipped unread once `kind` is known (it comes first in every line
    /// guardrail writes), and read while it is not.
    fn wants(&self, kind: Kind) -> bool {
        self.kind.is_none_or(|k| k == kind)
    }
}

/// Take a field's value, refusing a second one.
fn take<'de, A, T>(slot: &mut Option<T>, name: &'static str, map: &mut A) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// A field the line must have.
fn required<T, E: de::Error>(value: Option<T>, name: &'static str) -> Result<T, E> {
    value.ok_or_else(|| de::Error::missing_field(name))
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a guardrail event (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut f = Fields::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Seq => take(&mut f.seq, "seq", &mut map)?,
                Field::Time => take(&mut f.time, "time", &mut map)?,
                Field::KtimeNs => take(&mut f.ktime_ns, "ktime_ns", &mut map)?,
                // `null` is an absent value, as in the derived form.
                Field::Via => f.via = map.next_value()?,
                Field::Kind => take(&mut f.kind, "kind", &mut map)?,
                Field::Syscall => take(&mut f.syscall, "syscall", &mut map)?,
                Field::Process => take(&mut f.process, "process", &mut map)?,
                Field::Result => take(&mut f.result, "result", &mut map)?,
                Field::Exec if f.wants(Kind::Exec) => take(&mut f.exec, "exec", &mut map)?,
                Field::File if f.wants(Kind::File) => take(&mut f.file, "file", &mut map)?,
                Field::Perm if f.wants(Kind::Perm) => take(&mut f.perm, "perm", &mut map)?,
                Field::Uring if f.wants(Kind::Uring) => take(&mut f.uring, "uring", &mut map)?,
                Field::Loss if f.wants(Kind::Loss) => take(&mut f.loss, "loss", &mut map)?,
                Field::Decision => f.decision = map.next_value()?,
                Field::Redacted => take(&mut f.redacted, "redacted", &mut map)?,
                Field::Exec
                | Field::File
                | Field::Perm
                | Field::Uring
                | Field::Loss
                | Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let body = body(&mut f)?;
        Ok(Event {
            seq: required(f.seq, "seq")?,
            time: required(f.time, "time")?,
            ktime_ns: required(f.ktime_ns, "ktime_ns")?,
            via: f.via,
            body,
            decision: f.decision,
            redacted: f.redacted.unwrap_or_default(),
        })
    }
}

/// The body the line's `kind` names, from the fields read.
fn body<E: de::Error>(f: &mut Fields) -> Result<Body, E> {
    let kind = required(f.kind, "kind")?;
    if kind == Kind::Loss {
        return Ok(Body::Loss {
            loss: required(f.loss.take(), "loss")?,
        });
    }
    let syscall = required(f.syscall.take(), "syscall")?;
    let process = required(f.process.take(), "process")?;
    let result = required(f.result.take(), "result")?;
    Ok(match kind {
        Kind::Exec => Body::Exec {
            syscall,
            process,
            result,
            exec: required(f.exec.take(), "exec")?,
        },
        Kind::File => Body::File {
            syscall,
            process,
            result,
            file: required(f.file.take(), "file")?,
        },
        Kind::Perm => Body::Perm {
            syscall,
            process,
            result,
            perm: required(f.perm.take(), "perm")?,
        },
        Kind::Uring => Body::Uring {
            syscall,
            process,
            result,
            uring: required(f.uring.take(), "uring")?,
        },
        Kind::Loss => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived form this reader replaces, kept here to compare with.
    #[derive(Deserialize)]
    struct Derived {
        seq: u64,
        time: String,
        ktime_ns: u64,
        #[serde(default)]
        via: Option<Via>,
        #[serde(flatten)]
        body: Body,
        #[serde(default)]
        decision: Option<Decision>,
        #[serde(default)]
        redacted: Vec<String>,
    }

    impl From<Derived> for Event {
        fn from(d: Derived) -> Event {
            Event {
                seq: d.seq,
                time: d.time,
                ktime_ns: d.ktime_ns,
                via: d.via,
                body: d.body,
                decision: d.decision,
                redacted: d.redacted,
            }
        }
    }

    const PROCESS: &str = r#""process":{"pid":7,"tid":7,"ppid":1,"uid":0,"gid":0,"euid":0,"egid":0,"auid":null,"comm":"x","exe":"/usr/bin/x","parent_exe":"/usr/bin/bash","cgroup_id":1,"ancestors":[{"pid":1,"exe":"/sbin/init","id":"1@1"}]}"#;

    fn lines() -> Vec<String> {
        vec![
            format!(
                r#"{{"seq":1,"time":"t","ktime_ns":5,"kind":"exec","syscall":"execve",{PROCESS},"result":{{"ok":true,"ret":0,"errno":null}},"exec":{{"path":"/usr/bin/ls","argv":["ls"],"argv_truncated":false,"cwd":"/"}}}}"#
            ),
            // Fields in another order, an unknown field, `via` and a
            // decision, and another kind's section (skipped).
            format!(
                r#"{{"file":{{"op":"open","path":"/srv/a","resolved":true,"flags":["write"],"mode":"0644"}},"future":[1,{{"x":2}}],"perm":{{"op":"chmod","path":"/x","resolved":true}},{PROCESS},"kind":"file","via":"io_uring","seq":2,"time":"t","ktime_ns":6,"syscall":"openat","result":{{"ok":false,"ret":-13,"errno":"EACCES"}},"decision":{{"rule":"r","action":"alert","mode":"enforce","outcome":"alerted","severity":"high","matched":{{}}}},"redacted":["file.path"]}}"#
            ),
            format!(
                r#"{{"seq":3,"time":"t","ktime_ns":7,"via":null,"kind":"perm","syscall":"chmod",{PROCESS},"result":{{"ok":true,"ret":0,"errno":null}},"perm":{{"op":"chmod","path":"/tmp/f","resolved":true,"mode":"0600"}},"decision":null}}"#
            ),
            r#"{"seq":4,"time":"t","ktime_ns":8,"kind":"loss","loss":{"count":3,"ringbuf":3,"inflight":0,"total":3}}"#.to_string(),
        ]
    }

    #[test]
    fn reads_what_the_derived_form_reads() {
        for line in lines() {
            let derived: Result<Derived, _> = serde_json::from_str(&line);
            let derived = Event::from(derived.unwrap_or_else(|e| panic!("{e}: {line}")));
            let ours: Event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(ours, derived, "{line}");
        }
    }

    #[test]
    fn a_written_event_reads_back_the_same() {
        for line in lines() {
            let event: Event = serde_json::from_str(&line).unwrap();
            let again: Event =
                serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
            assert_eq!(again, event);
        }
    }

    #[test]
    fn bad_lines_are_refused_with_the_field_named() {
        let line = &lines()[0];
        for (bad, says) in [
            (
                line.replace(r#""kind":"exec","#, ""),
                "missing field `kind`",
            ),
            (
                line.replace(r#""kind":"exec""#, r#""kind":"nope""#),
                "unknown variant `nope`",
            ),
            (line.replace(r#""seq":1,"#, ""), "missing field `seq`"),
            (
                line.replace(r#","exec":{"#, r#","file":{"#),
                "missing field `exec`",
            ),
            (
                line.replace(r#""seq":1,"#, r#""seq":1,"seq":2,"#),
                "duplicate field `seq`",
            ),
            ("[1,2]".to_string(), "expected a guardrail event"),
        ] {
            let err = serde_json::from_str::<Event>(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err} ({bad})");
        }
    }
}
