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

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::event::{
    Body, Decision, Event, ExecDetails, FileDetails, LossDetails, PermDetails, Process,
    SyscallResult, UringDetails, Via,
};

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor { memo: None })
    }
}

impl Event {
    /// An event from its JSON line, as `serde_json::from_str` reads it,
    /// each distinct process object parsed once for all the lines `memo`
    /// sees: a log repeats a process's object in each of its events, and
    /// that object was most of a line to parse.
    pub fn from_line(line: &str, memo: &mut ProcessMemo) -> serde_json::Result<Event> {
        let memo = memo.consulted();
        let mut d = serde_json::Deserializer::from_str(line);
        let event = d.deserialize_map(EventVisitor { memo })?;
        d.end()?;
        Ok(event)
    }
}

/// Processes read lately, by their JSON text (see [`Event::from_line`]).
///
/// A miss costs more than reading the line without the memo (the object
/// is scanned to its end, then read), so the memo steps aside for a
/// while when it misses most of the time: a log of many processes
/// interleaved reads as fast as without it.
#[derive(Default)]
pub struct ProcessMemo {
    read: HashMap<Box<str>, Process, foldhash::fast::RandomState>,
    worth: MemoWorth,
}

/// Process objects remembered; full, a memo starts over.
pub(crate) const MEMO_MAX: usize = 1024;
/// Lookups per judgement; fewer hits than [`MEMO_WORTH`] of them, and
/// the memo rests for [`MEMO_REST`] lines.
const MEMO_JUDGED: u32 = 256;
const MEMO_WORTH: u32 = 64;
const MEMO_REST: u32 = 65536;

/// Whether a memo of the processes read lately is worth its misses:
/// judged every [`MEMO_JUDGED`] lookups, and resting for a while when it
/// hits too rarely (a log of many processes interleaved).
#[derive(Default)]
pub(crate) struct MemoWorth {
    /// Lookups and hits since the last judgement.
    lookups: u32,
    hits: u32,
    /// Lines still to read without the memo.
    resting: u32,
}

impl MemoWorth {
    /// Whether to consult the memo for the next line.
    pub(crate) fn consult(&mut self) -> bool {
        if self.resting > 0 {
            self.resting -= 1;
            return false;
        }
        true
    }

    /// Counts a lookup; true when the memo was just judged not worth
    /// keeping (its owner empties it).
    pub(crate) fn looked_up(&mut self, hit: bool) -> bool {
        self.lookups += 1;
        self.hits += u32::from(hit);
        if self.lookups < MEMO_JUDGED {
            return false;
        }
        let worthless = self.hits < MEMO_WORTH;
        if worthless {
            self.resting = MEMO_REST;
        }
        self.lookups = 0;
        self.hits = 0;
        worthless
    }
}

impl ProcessMemo {
    /// Self to read the next line with, or None while resting.
    fn consulted(&mut self) -> Option<&mut Self> {
        self.worth.consult().then_some(self)
    }

    fn process(&mut self, json: &str) -> serde_json::Result<Process> {
        let known = self.read.get(json).cloned();
        if self.worth.looked_up(known.is_some()) {
            self.read.clear();
        }
        if let Some(p) = known {
            return Ok(p);
        }
        let p: Process = serde_json::from_str(json)?;
        if self.read.len() >= MEMO_MAX {
            self.read.clear();
        }
        self.read.insert(json.into(), p.clone());
        Ok(p)
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

struct EventVisitor<'m> {
    /// Set only when reading with serde_json from a string, whose values
    /// can be borrowed as text.
    memo: Option<&'m mut ProcessMemo>,
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a guardrail event (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Event, A::Error> {
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
                Field::Process => match self.memo.as_deref_mut() {
                    Some(memo) => {
                        if f.process.is_some() {
                            return Err(de::Error::duplicate_field("process"));
                        }
                        let json: &'de serde_json::value::RawValue = map.next_value()?;
                        f.process = Some(memo.process(json.get()).map_err(de::Error::custom)?);
                    }
                    None => take(&mut f.process, "process", &mut map)?,
                },
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
    fn a_line_read_with_the_process_memo_is_the_line_read_without() {
        let mut memo = ProcessMemo::default();
        let mut lines = lines();
        // A process object of its own, the same again, a process that is
        // not one, the process named twice, a line cut short.
        lines.push(lines[2].replace(r#""pid":7,"tid":7"#, r#""pid":8,"tid":8"#));
        lines.push(lines[2].clone());
        lines.push(lines[2].replace(r#""uid":0,"#, r#""uid":-1,"#));
        lines.push(lines[2].replace(
            r#""syscall":"chmod","#,
            &format!(r#""syscall":"chmod",{PROCESS},"#),
        ));
        lines.push(lines[2][..lines[2].len() - 1].to_string());
        lines.push(format!("{} x", lines[2]));
        for line in lines.iter().chain(&lines) {
            let plain = serde_json::from_str::<Event>(line).map_err(|e| e.to_string());
            let memo = Event::from_line(line, &mut memo).map_err(|e| e.to_string());
            match (&plain, &memo) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{line}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{plain:?} but {memo:?}: {line}"),
            }
        }
        // Full, it starts over (and rests, missing each time) and still
        // reads each process right.
        for pid in 0..MEMO_MAX as u32 + 10 {
            let line = lines[2].replace(r#""pid":7,"#, &format!(r#""pid":{pid},"#));
            let event = Event::from_line(&line, &mut memo).unwrap();
            assert_eq!(event.body.process().unwrap().pid, pid);
            assert!(memo.read.len() <= MEMO_MAX);
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
