//! The event writer against serde_json's derived form: the same bytes for
//! every event, whatever its strings hold.

use std::borrow::Cow;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::event::{Decision, ExecDetails, LossDetails, MountDetails, UringDetails};

/// Strings as events hold them, and strings serde_json must escape.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/._-]{0,24}",
        "[\"\\\\\u{0}-\u{1f}\u{7f} a/é€😀]{0,12}",
        any::<String>(),
    ]
}

fn name() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![Just(Cow::Borrowed("chmod")), text().prop_map(Cow::Owned)]
}

fn path_source() -> impl Strategy<Value = Option<PathSource>> {
    proptest::option::of(prop_oneof![
        Just(PathSource::Kernel),
        Just(PathSource::Agent),
        Just(PathSource::Lexical),
    ])
}

fn object() -> impl Strategy<Value = Option<ObjectId>> {
    proptest::option::of(
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(dev, ino, kernel)| ObjectId {
            dev,
            ino,
            kernel,
        }),
    )
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..3)
}

/// Rare members go to serde_json whole: a few forms of each suffice.
fn rare<T: serde::de::DeserializeOwned + std::fmt::Debug + Clone + 'static>(
    forms: &[&str],
) -> BoxedStrategy<Option<T>> {
    let forms: Vec<T> = forms
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    proptest::option::of(proptest::sample::select(forms)).boxed()
}

fn process() -> BoxedStrategy<Process> {
    (
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(text()),
        text(),
        proptest::option::of(text()),
        0..3u8,
        any::<u64>(),
    )
        .prop_map(|(pid, tid, id, comm, exe, form, pv)| {
            let mut p = Process {
                pid,
                tid,
                id: id.map(Arc::from),
                comm: comm.into(),
                exe: exe.map(Into::into),
                ..Default::default()
            };
            match form {
                0 => {}
                1 => {
                    p.make_json().unwrap();
                }
                _ => {
                    p.json = ProcessJson::Ref {
                        pv,
                        shared: "".into(),
                    }
                }
            }
            p
        })
        .boxed()
}

fn result() -> BoxedStrategy<SyscallResult> {
    (any::<bool>(), any::<i64>(), proptest::option::of(name()))
        .prop_map(|(ok, ret, errno)| SyscallResult { ok, ret, errno })
        .boxed()
}

fn file() -> BoxedStrategy<FileDetails> {
    (
        (
            name(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            path_source(),
            any::<bool>(),
            object(),
            texts(),
        ),
        (
            proptest::option::of(text()),
            path_source(),
            proptest::option::of(text()),
            texts(),
            proptest::option::of(text()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<u64>()),
            texts(),
            rare::<MountDetails>(&[
                r#"{"source":"/srv","flags":["bind"],"namespace":"host"}"#,
                r#"{}"#,
            ]),
        ),
    )
        .prop_map(
            |(
                (op, path, raw_path, path_source, resolved, object, aliases),
                (new_path, new_path_source, target, flags, mode, fd, length, truncated, mount),
            )| FileDetails {
                op,
                path,
                raw_path,
                path_source,
                resolved,
                object,
                aliases,
                new_path,
                new_path_source,
                target,
                flags,
                mode: mode.map(Into::into),
                fd,
                length,
                truncated,
                mount: mount.map(Box::new),
            },
        )
        .boxed()
}

fn perm() -> BoxedStrategy<PermDetails> {
    (
        (
            name(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            path_source(),
            object(),
            texts(),
            proptest::option::of(any::<i32>()),
        ),
        (
            proptest::option::of(text()),
            texts(),
            rare(&[r#"{"uid":0,"gid":null}"#]),
            rare(&[
                r#"{"requested":[-1,0],"old":{"uid":1,"gid":1,"euid":1,"egid":1},"new":{"uid":0,"gid":1,"euid":0,"egid":1},"to_root":true}"#,
            ]),
            rare(&[
                r#"{"effective":["chown"],"permitted":[],"inheritable":[],"gained":null}"#,
            ]),
            rare(&[
                r#"{"name":"security.capability","size":20,"file_caps":{"permitted":["net_raw"],"inheritable":[],"effective":true}}"#,
                r#"{"name":"user.x","size":1}"#,
            ]),
            texts(),
        ),
    )
        .prop_map(
            |(
                (op, path, raw_path, path_source, object, aliases, fd),
                (mode, mode_bits, owner, ids, caps, xattr, truncated),
            )| PermDetails {
                op,
                path,
                raw_path,
                path_source,
                object,
                aliases,
                fd,
                mode: mode.map(Into::into),
                mode_bits,
                owner,
                ids,
                caps,
                xattr,
                truncated,
            },
        )
    .boxed()
}

fn body() -> BoxedStrategy<Body> {
    let exec = rare::<ExecDetails>(&[
        r#"{"path":"/bin/sh","argv":["sh","-c","x\"y"],"argv_truncated":false,"cwd":null}"#,
    ]);
    let uring =
        rare::<UringDetails>(&[r#"{"op":"setup","fd":3,"sq_entries":8,"flags":["sqpoll"]}"#]);
    let loss = rare::<LossDetails>(&[
        r#"{"count":3,"ringbuf":2,"inflight":1,"total":9}"#,
        r#"{"count":1,"ringbuf":0,"inflight":0,"total":1,"discarded":4}"#,
    ]);
    prop_oneof![
        (name(), process(), result(), perm()).prop_map(|(syscall, process, result, perm)| {
            Body::Perm {
                syscall,
                process,
                result,
                perm,
            }
        }),
        (name(), process(), result(), file()).prop_map(|(syscall, process, result, file)| {
            Body::File {
                syscall,
                process,
                result,
                file,
            }
        }),
        (name(), process(), result(), exec).prop_map(|(syscall, process, result, exec)| {
            Body::Exec {
                syscall,
                process,
                result,
                exec: exec.unwrap_or_default(),
            }
        }),
        (name(), process(), result(), uring).prop_map(|(syscall, process, result, uring)| {
            Body::Uring {
                syscall,
                process,
                result,
                uring: uring.unwrap_or_default(),
            }
        }),
        loss.prop_map(|loss| Body::Loss {
            loss: loss.unwrap_or_default()
        }),
    ]
    .boxed()
}

fn event() -> BoxedStrategy<Event> {
    let decision = rare::<Decision>(&[
        r#"{"rule":"no-shadow","action":"deny","mode":"enforce","severity":"high","outcome":"denied","matched":{"path":"/etc/shadow"}}"#,
        r#"{"rule":"r","action":"kill","mode":"monitor","severity":"low","outcome":"would_kill","fallback":"alert","matched":{},"also":["a"],"exempted":["b"],"fallback_error":"x"}"#,
    ]);
    (
        any::<u64>(),
        text(),
        any::<u64>(),
        proptest::option::of(prop_oneof![Just(Via::Syscall), Just(Via::IoUring)]),
        body(),
        decision,
        texts(),
    )
        .prop_map(
            |(seq, time, ktime_ns, via, body, decision, redacted)| Event {
                seq,
                time,
                ktime_ns,
                via,
                body,
                decision,
                redacted,
            },
        )
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_event_is_written_as_serde_json_writes_it(event in event()) {
        let mut written = b"before".to_vec();
        let end = event.write_json(&mut written).unwrap();
        let written = &written[b"before".len()..];
        let serde = serde_json::to_vec(&event).unwrap();
        prop_assert_eq!(
            String::from_utf8_lossy(written),
            String::from_utf8_lossy(&serde)
        );
        let json = std::str::from_utf8(written).unwrap();
        match event.body.process().map(|p| &p.json) {
            Some(ProcessJson::Ref { pv, .. }) => {
                prop_assert_eq!(end, crate::process_join::reference_end(json, *pv));
                prop_assert!(end.is_some());
            }
            _ => prop_assert_eq!(end, None),
        }
    }
}

#[test]
fn a_line_the_agent_wrote_is_written_again_byte_for_byte() {
    let line = r#"{"seq":200008,"time":"2026-12-06T20:36:26.941207109Z","ktime_ns":22778187353416,"via":"syscall","kind":"perm","syscall":"chmod","process":{"pid":31326,"tid":31326,"id":"31326@2277750","ppid":1,"uid":0,"gid":0,"euid":0,"egid":0,"auid":null,"comm":"storm","exe":"/tmp/storm","parent_exe":null,"cgroup_id":1},"result":{"ok":true,"ret":0,"errno":null},"perm":{"op":"chmod","path":"/dev/shm/storm/f","path_source":"agent","object":{"dev":"0:27","ino":3,"kernel":false},"mode":"0600"}}"#;
    let event: Event = serde_json::from_str(line).unwrap();
    let mut written = vec![];
    assert_eq!(event.write_json(&mut written).unwrap(), None);
    assert_eq!(std::str::from_utf8(&written).unwrap(), line);
}
