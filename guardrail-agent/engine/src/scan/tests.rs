//! The scanner against serde's reader: on the lines the agent writes, on
//! every member an event can hold, and on those lines mutated in every way
//! a line can be (see [`super::agrees_with_serde`]).

use std::sync::Arc;

use proptest::prelude::*;

use super::{agrees_with_serde, read, Scan};
use crate::attribution::Container;
use crate::event::*;
use crate::rules::spec::{Action, Fallback, Mode, Severity};

fn process(pid: u32, exe: &str) -> Process {
    Process {
        pid,
        tid: pid,
        id: Some(format!("{pid}@77").into()),
        ppid: Some(1),
        uid: 1000,
        gid: 1000,
        euid: 0,
        egid: 0,
        auid: Some(1000),
        comm: "x\"y".into(),
        exe: Some(exe.into()),
        parent_exe: Some("/usr/bin/bash".into()),
        cgroup_id: 4242,
        parent_id: Some("1@1".into()),
        ancestors: vec![
            Ancestor {
                pid: 7,
                id: Some("7@9".into()),
                exe: Some("/usr/bin/python3".into()),
                script: Some("/usr/bin/unattended-upgrade".into()),
            },
            Ancestor {
                pid: 1,
                id: None,
                exe: None,
                script: None,
            },
        ]
        .into(),
        ancestors_truncated: true,
        who: Arc::new(Attribution {
            user: Some("alice".into()),
            group: Some("users".into()),
            cgroup: Some("/system.slice/x.service".into()),
            unit: Some("x.service".into()),
            container: Some(Arc::new(Container {
                runtime: "docker".into(),
                id: "ab".repeat(32),
            })),
        }),
        session: Some(3),
        tty: Some("pts/0".into()),
        ..Default::default()
    }
}

fn result(ok: bool) -> SyscallResult {
    SyscallResult {
        ok,
        ret: if ok { 0 } else { -13 },
        errno: (!ok).then(|| "EACCES".into()),
    }
}

fn event(seq: u64, body: Body) -> Event {
    Event {
        seq,
        time: format!("2026-12-07T03:00:{:02}.{:09}Z", seq % 60, seq * 7),
        ktime_ns: seq * 1000,
        via: Some(if seq.is_multiple_of(2) {
            Via::Syscall
        } else {
            Via::IoUring
        }),
        body,
        decision: seq.is_multiple_of(3).then(|| Decision {
            rule: "r".into(),
            action: Action::Deny,
            mode: Mode::Enforce,
            severity: Severity::High,
            outcome: Outcome::Reverted,
            fallback: Some(Fallback::Revert),
            matched: [("path".to_string(), "/etc/x".to_string())].into(),
            also: vec!["a".into()],
            exempted: vec!["b".into()],
            reverted: Some(Reverted {
                mode: "644".into(),
                uid: 0,
                gid: 0,
            }),
            fallback_error: Some("no".into()),
        }),
        redacted: if !seq.is_multiple_of(2) {
            vec!["exec.argv[1]".into()]
        } else {
            vec![]
        },
    }
}

/// An event of every kind with every member it can have, and the forms a
/// log holds: a reference and a definition.
fn every_member() -> Vec<Event> {
    let object = Some(ObjectId {
        dev: (8 << 20) | 1,
        ino: 99,
        kernel: true,
    });
    let file = |op: &str, mount: Option<MountDetails>| FileDetails {
        op: op.to_string().into(),
        path: Some("/etc/ssh/sshd_config".into()),
        raw_path: Some("/etc//ssh/../ssh/sshd_config".into()),
        path_source: Some(crate::canonical::PathSource::Agent),
        resolved: true,
        object,
        aliases: vec!["/srv/ssh/sshd_config".into()],
        new_path: Some("/etc/ssh/sshd_config.bak".into()),
        new_path_source: Some(crate::canonical::PathSource::Lexical),
        target: Some("../x".into()),
        flags: vec!["write".into(), "create".into()],
        mode: Some("644".into()),
        fd: Some(3),
        length: Some(0),
        truncated: vec!["path".into()],
        mount: mount.map(Box::new),
    };
    let mount = |flags: &[&str], namespace: &str| MountDetails {
        source: Some("/srv".into()),
        fstype: Some("tmpfs".into()),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        namespace: Some(namespace.into()),
    };
    let perm = |op: &str| PermDetails {
        op: op.to_string().into(),
        path: Some("/usr/bin/x".into()),
        raw_path: Some("x".into()),
        path_source: Some(crate::canonical::PathSource::Kernel),
        object,
        aliases: vec!["/bin/x".into()],
        fd: Some(-100),
        mode: Some("4755".into()),
        mode_bits: vec!["setuid".into()],
        owner: Some(Owner {
            uid: Some(0),
            gid: None,
        }),
        ids: Some(Box::new(IdChange {
            requested: vec![-1, 0],
            old: Ids {
                uid: 1000,
                gid: 1000,
                euid: 1000,
                egid: 1000,
            },
            new: Ids::default(),
            to_root: true,
        })),
        caps: Some(Box::new(CapChange {
            effective: vec!["cap_sys_admin".into()],
            permitted: vec![],
            inheritable: vec![],
            gained: Some(vec!["cap_sys_admin".into()]),
        })),
        xattr: Some(Box::new(Xattr {
            name: "security.capability".into(),
            size: 20,
            file_caps: Some(FileCaps {
                permitted: vec!["cap_net_raw".into()],
                inheritable: vec![],
                effective: true,
            }),
        })),
        truncated: vec![],
    };
    let p = || process(100, "/usr/bin/x");
    let mut events = vec![
        Body::Exec {
            syscall: "execve".into(),
            process: p(),
            result: result(true),
            exec: ExecDetails {
                path: "/usr/bin/curl".into(),
                raw_path: Some("curl".into()),
                path_source: Some(crate::canonical::PathSource::Kernel),
                argv: vec!["curl".into(), "-H".into(), "é \\ \"q\"".into()],
                argv_truncated: true,
                argv_unavailable: false,
                cwd: Some("/root".into()),
                fd: None,
            },
        },
        Body::File {
            syscall: "openat".into(),
            process: p(),
            result: result(false),
            file: file("open", None),
        },
        Body::File {
            syscall: "renameat2".into(),
            process: p(),
            result: result(true),
            file: file("rename", None),
        },
        Body::File {
            syscall: "mount".into(),
            process: p(),
            result: result(true),
            file: file("mount", Some(mount(&["bind", "rec"], "host"))),
        },
        Body::File {
            syscall: "mount".into(),
            process: p(),
            result: result(true),
            file: file("mount", Some(mount(&["private"], "private"))),
        },
        Body::File {
            syscall: "pivot_root".into(),
            process: p(),
            result: result(true),
            file: file("pivot_root", Some(mount(&[], "host"))),
        },
        Body::Perm {
            syscall: "fchmodat".into(),
            process: p(),
            result: result(true),
            perm: perm("chmod"),
        },
        Body::Perm {
            syscall: "setuid".into(),
            process: p(),
            result: result(true),
            perm: PermDetails {
                caps: None,
                owner: None,
                ..perm("setuid")
            },
        },
        Body::Uring {
            syscall: "io_uring_register".into(),
            process: p(),
            result: result(true),
            uring: UringDetails {
                op: "register".into(),
                fd: Some(5),
                sq_entries: Some(64),
                register: Some(UringRegister {
                    opcode: "files".into(),
                    files: 2,
                    buffers: 0,
                }),
                flags: vec!["sqpoll".into()],
            },
        },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, body)| event(i as u64 + 1, body))
    .collect::<Vec<_>>();
    // A process with nothing optional.
    let mut bare = events[1].clone();
    *bare.body.process_mut().unwrap() = Process {
        pid: 5,
        tid: 6,
        comm: "c".into(),
        ..Default::default()
    };
    bare.via = None;
    events.push(bare);
    // The forms of a log naming processes by reference.
    let mut definition = events[6].clone();
    definition.body.process_mut().unwrap().pv = Some(3);
    let mut reference = events[6].clone();
    let r = reference.body.process_mut().unwrap();
    r.pv = Some(3);
    r.json = ProcessJson::Ref {
        pv: 3,
        shared: "".into(),
    };
    events.push(definition);
    events.push(reference);
    events
}

fn lines() -> Vec<String> {
    every_member()
        .iter()
        .chain(&crate::search::testlog::sample(8))
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

#[test]
fn the_agent_s_lines_are_read_in_place_with_the_event_s_facts() {
    for line in lines() {
        let in_place = agrees_with_serde(line.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{line}"));
        // A definition is left to serde, which learns it for the
        // references after it.
        let definition = line.contains("\"pv\":3,\"ppid\"");
        assert_eq!(in_place, !definition, "{line}");
    }
}

#[test]
fn members_in_any_order_and_escaped_text_are_read_in_place() {
    for line in lines() {
        // serde_json's Value sorts keys: every object reordered, sections
        // before `kind`.
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let sorted = serde_json::to_string(&value).unwrap();
        // `/` and letters written as escapes in string values only.
        let escaped = line.replace("/usr/", "\\/usr\\u002f");
        for variant in [sorted, escaped] {
            let in_place =
                agrees_with_serde(variant.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{variant}"));
            assert!(
                in_place
                    || variant.contains("\"pv\":3,\"ppid\"")
                    || variant.contains("\"ppid\":1,\"pv\":3"),
                "{variant}"
            );
        }
    }
}

#[test]
fn what_serde_refuses_is_never_read_in_place() {
    let lines = lines();
    for (from, to) in [
        ("\"seq\":1,", "\"seq\":-1,"),
        ("\"seq\":1,", "\"seq\":1.0,"),
        ("\"pid\":100,", "\"pid\":4294967296,"),
        ("\"ok\":true", "\"ok\":1"),
        ("\"argv_truncated\":true,", ""),
        ("\"kind\":\"exec\"", "\"kind\":\"exec\",\"kind\":\"exec\""),
        ("\"via\":\"io_uring\"", "\"via\":\"ring\""),
        ("\"dev\":\"8:1\"", "\"dev\":\"8\""),
        ("\"action\":\"deny\"", "\"action\":\"block\""),
        (
            "\"path_source\":\"kernel\"",
            "\"path_source\":null,\"path_source\":null",
        ),
        ("\"comm\":\"x\\\"y\",", ""),
        ("\"to_root\":true", "\"to_root\":null"),
        ("\"gained\":[", "\"gained\":[1,"),
        ("\"resolved\":true,", ""),
        ("\"runtime\":\"docker\",", ""),
        ("\"matched\":{", "\"matched\":{\"n\":1,"),
        ("}", "} x"),
        ("}", "},"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(from))
            .unwrap_or_else(|| panic!("no line holds {from}"));
        let bad = if from == "}" {
            format!("{line}{}", &to[1..])
        } else {
            line.replacen(from, to, 1)
        };
        assert_eq!(agrees_with_serde(bad.as_bytes()), Ok(false), "{bad}");
    }
    // An unknown member is skipped, as serde does, whatever it holds.
    let unknown = lines[0].replacen(
        '{',
        "{\"chain\":{\"x\":[1,{\"y\":null}],\"h\":\"\\u00e9\"},",
        1,
    );
    assert_eq!(agrees_with_serde(unknown.as_bytes()), Ok(true));
    assert!(matches!(
        read(b"\xff\n", &mut Default::default()),
        Scan::NotUtf8
    ));
}

/// What a mutation inserts: members known and unknown, values of every
/// type, escapes.
const KEYS: &[&str] = &[
    "seq",
    "time",
    "kind",
    "via",
    "decision",
    "process",
    "result",
    "exec",
    "file",
    "perm",
    "uring",
    "loss",
    "redacted",
    "pid",
    "uid",
    "comm",
    "exe",
    "pv",
    "id",
    "path",
    "op",
    "flags",
    "ancestors",
    "unit",
    "container",
    "mode",
    "owner",
    "gained",
    "ids",
    "to_root",
    "chain",
    "x",
];
const VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "-0",
    "01",
    "1.0",
    "1e3",
    "4294967296",
    "18446744073709551616",
    "\"1\"",
    "null",
    "true",
    "false",
    "[]",
    "{}",
    "\"exec\"",
    "\"file\"",
    "\"loss\"",
    "\"a\\u0062\"",
    "\"\\ud800\"",
    "\"\\ud83d\\ude00\"",
    "{\"x\":[1,{\"y\":null}]}",
    "[\"a\",1]",
    "\"8:1\"",
    "\"\\t\"",
    "\"é\"",
];
const BYTES: &[u8] = b"\"\\,:{}[] \t\r0123456789-.entrufals";

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Member(usize, usize, usize),
    Value(usize, usize),
    Escape(usize),
    Space(usize),
}

fn apply(line: &str, m: &Mutation) -> Vec<u8> {
    let mut b = line.as_bytes().to_vec();
    let at = |i: usize| i % (b.len() + 1);
    match *m {
        Mutation::Flip(i, byte) => {
            let i = at(i).min(b.len() - 1);
            b[i] = byte;
        }
        Mutation::Insert(i, byte) => b.insert(at(i), byte),
        Mutation::Delete(i) => {
            b.remove(at(i).min(b.len() - 1));
        }
        Mutation::Member(i, k, v) => {
            // After an object's `{`: a member, known or not.
            let opens: Vec<usize> = (0..b.len()).filter(|&j| b[j] == b'{').collect();
            let j = opens[i % opens.len()] + 1;
            let comma = if b.get(j) == Some(&b'}') { "" } else { "," };
            let member = format!(
                "\"{}\":{}{comma}",
                KEYS[k % KEYS.len()],
                VALUES[v % VALUES.len()]
            );
            b.splice(j..j, member.into_bytes());
        }
        Mutation::Value(i, v) => {
            // A member's value replaced.
            let colons: Vec<usize> = (0..b.len()).filter(|&j| b[j] == b':').collect();
            let j = colons[i % colons.len()] + 1;
            let end = (j..b.len())
                .find(|&e| matches!(b[e], b',' | b'}'))
                .unwrap_or(b.len());
            b.splice(j..end, VALUES[v % VALUES.len()].bytes());
        }
        Mutation::Escape(i) => {
            // A letter as `\u00XX`: in a string the same text, in a key
            // the same key (which the scanner leaves to serde), elsewhere
            // an error.
            let letters: Vec<usize> = (0..b.len())
                .filter(|&j| b[j].is_ascii_alphabetic())
                .collect();
            let j = letters[i % letters.len()];
            let escape = format!("\\u{:04x}", b[j]);
            b.splice(j..=j, escape.into_bytes());
        }
        Mutation::Space(i) => {
            let marks: Vec<usize> = (0..b.len())
                .filter(|&j| b"{}[],:".contains(&b[j]))
                .collect();
            let j = marks[i % marks.len()] + 1;
            b.insert(j, b' ');
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = proptest::sample::select(BYTES);
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, c)| Mutation::Flip(i, c)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, c)| Mutation::Flip(i, c)),
        (any::<usize>(), byte).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(i, k, v)| Mutation::Member(i, k, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, v)| Mutation::Value(i, v)),
        any::<usize>().prop_map(Mutation::Escape),
        any::<usize>().prop_map(Mutation::Space),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn mutated_lines_are_read_as_serde_reads_them(
        which in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let lines = lines();
        let mut line = lines[which % lines.len()].clone().into_bytes();
        for m in &mutations {
            line = apply(&String::from_utf8_lossy(&line), m);
        }
        if let Err(e) = agrees_with_serde(&line) {
            return Err(TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&line))));
        }
    }
}

/// The property above is not empty: many mutated lines are still read in
/// place (a member added or moved, spaces, escapes in strings), and many
/// are refused by both readers.
#[test]
fn mutations_keep_many_lines_in_place_and_break_many() {
    let lines = lines();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let (mut in_place, mut refused) = (0, 0);
    for _ in 0..3000 {
        let line = &lines[next() % lines.len()];
        let m = match next() % 5 {
            0 => Mutation::Member(next(), next(), next()),
            1 => Mutation::Value(next(), next()),
            2 => Mutation::Escape(next()),
            3 => Mutation::Space(next()),
            _ => Mutation::Flip(next(), BYTES[next() % BYTES.len()]),
        };
        let mutated = apply(line, &m);
        match agrees_with_serde(&mutated) {
            Ok(true) => in_place += 1,
            Ok(false) => {
                let text = String::from_utf8_lossy(&mutated);
                if serde_json::from_str::<Event>(&text).is_err() {
                    refused += 1;
                }
            }
            Err(e) => panic!("{e}\n{}", String::from_utf8_lossy(&mutated)),
        }
    }
    assert!(
        in_place > 600 && refused > 600,
        "{in_place} in place, {refused} refused"
    );
}

/// The members each reader of the event types knows, as serde's derived
/// readers list them: a member added to a type and not to its table
/// would be skipped by the scanner while serde checks it.
mod drift {
    use std::cell::Cell;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    use super::super::schema::{self, Schema};
    use crate::attribution::Container;
    use crate::event::*;

    /// Records the member names a derived reader asks for, then stops it.
    struct Recorder<'r>(&'r Cell<Option<&'static [&'static str]>>);

    impl<'de> Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("a struct was expected"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(Some(fields));
            Err(de::Error::custom("recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    fn members_of<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        let fields = Cell::new(None);
        let _ = T::deserialize(Recorder(&fields));
        fields.get().expect("a derived struct reader").to_vec()
    }

    fn names(schema: &Schema) -> Vec<&'static str> {
        schema.members.iter().map(|m| m.key.name).collect()
    }

    #[test]
    fn every_table_lists_its_type_s_members_in_the_writer_s_order() {
        let tables: [(&str, &Schema, Vec<&str>); 19] = [
            ("process", &schema::process::SCHEMA, members_of::<Process>()),
            (
                "ancestor",
                &schema::ancestor::SCHEMA,
                members_of::<Ancestor>(),
            ),
            (
                "container",
                &schema::container::SCHEMA,
                members_of::<Container>(),
            ),
            (
                "result",
                &schema::result::SCHEMA,
                members_of::<SyscallResult>(),
            ),
            ("exec", &schema::exec::SCHEMA, members_of::<ExecDetails>()),
            ("file", &schema::file::SCHEMA, members_of::<FileDetails>()),
            ("object", &schema::object::SCHEMA, members_of::<ObjectId>()),
            (
                "mount",
                &schema::mount::SCHEMA,
                members_of::<MountDetails>(),
            ),
            ("perm", &schema::perm::SCHEMA, members_of::<PermDetails>()),
            ("owner", &schema::owner::SCHEMA, members_of::<Owner>()),
            ("ids", &schema::ids::SCHEMA, members_of::<Ids>()),
            (
                "id_change",
                &schema::id_change::SCHEMA,
                members_of::<IdChange>(),
            ),
            (
                "cap_change",
                &schema::cap_change::SCHEMA,
                members_of::<CapChange>(),
            ),
            ("xattr", &schema::xattr::SCHEMA, members_of::<Xattr>()),
            (
                "file_caps",
                &schema::file_caps::SCHEMA,
                members_of::<FileCaps>(),
            ),
            (
                "uring",
                &schema::uring::SCHEMA,
                members_of::<UringDetails>(),
            ),
            (
                "uring_register",
                &schema::uring_register::SCHEMA,
                members_of::<UringRegister>(),
            ),
            (
                "decision",
                &schema::decision::SCHEMA,
                members_of::<Decision>(),
            ),
            (
                "reverted",
                &schema::reverted::SCHEMA,
                members_of::<Reverted>(),
            ),
        ];
        for (name, table, members) in tables {
            assert_eq!(names(table), members, "the {name} table");
        }
    }

    fn reads<T: for<'de> Deserialize<'de>>(value: &serde_json::Value) -> bool {
        T::deserialize(value).is_ok()
    }

    /// A member a table says may be missing is one serde's reader does
    /// without, and the others it requires. (The process is judged whole
    /// or a reference after reading, by `Process::try_from`: the scanner
    /// follows it, and the lines above test it.)
    #[test]
    fn members_a_table_requires_are_those_serde_requires() {
        type Reads = fn(&serde_json::Value) -> bool;
        let objects: [(&str, &Schema, Reads); 18] = [
            (
                "/process/ancestors/0",
                &schema::ancestor::SCHEMA,
                reads::<Ancestor>,
            ),
            (
                "/process/container",
                &schema::container::SCHEMA,
                reads::<Container>,
            ),
            ("/result", &schema::result::SCHEMA, reads::<SyscallResult>),
            ("/exec", &schema::exec::SCHEMA, reads::<ExecDetails>),
            ("/file", &schema::file::SCHEMA, reads::<FileDetails>),
            ("/file/object", &schema::object::SCHEMA, reads::<ObjectId>),
            ("/file/mount", &schema::mount::SCHEMA, reads::<MountDetails>),
            ("/perm", &schema::perm::SCHEMA, reads::<PermDetails>),
            ("/perm/owner", &schema::owner::SCHEMA, reads::<Owner>),
            ("/perm/ids", &schema::id_change::SCHEMA, reads::<IdChange>),
            ("/perm/ids/old", &schema::ids::SCHEMA, reads::<Ids>),
            (
                "/perm/caps",
                &schema::cap_change::SCHEMA,
                reads::<CapChange>,
            ),
            ("/perm/xattr", &schema::xattr::SCHEMA, reads::<Xattr>),
            (
                "/perm/xattr/file_caps",
                &schema::file_caps::SCHEMA,
                reads::<FileCaps>,
            ),
            ("/uring", &schema::uring::SCHEMA, reads::<UringDetails>),
            (
                "/uring/register",
                &schema::uring_register::SCHEMA,
                reads::<UringRegister>,
            ),
            ("/decision", &schema::decision::SCHEMA, reads::<Decision>),
            (
                "/decision/reverted",
                &schema::reverted::SCHEMA,
                reads::<Reverted>,
            ),
        ];
        let events: Vec<serde_json::Value> = super::every_member()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        for (at, table, reads) in objects {
            let mut judged = 0;
            for event in &events {
                let Some(object) = event.pointer(at).and_then(|o| o.as_object()) else {
                    continue;
                };
                assert!(reads(&object.clone().into()), "{at}: {object:?}");
                for member in table.members {
                    let mut without = object.clone();
                    if without.remove(member.key.name).is_none() {
                        continue;
                    }
                    assert_eq!(
                        reads(&without.into()),
                        !member.required,
                        "{at}: without {}",
                        member.key.name
                    );
                    judged += 1;
                }
            }
            assert!(judged > 0, "no line holds {at}");
        }
    }
}

/// A thread's process read through the memo of recent processes reads as
/// it does alone: the same process again, the thread after an exec (its
/// exe changed), an exe that extends the last one, a lineage cut or not.
#[test]
fn lines_read_through_the_memo_read_as_without_it() {
    use super::RecentProcesses;
    let mut events = crate::search::testlog::busy_threads(400);
    for (i, e) in events.iter_mut().enumerate() {
        let p = e.body.process_mut().unwrap();
        if i % 50 == 0 {
            p.exe = Some(format!("{}b", p.exe.as_deref().unwrap_or("/x")).into());
        }
        if i % 7 == 0 {
            p.ancestors_truncated = !p.ancestors_truncated;
        }
    }
    for _ in 0..20 {
        events.extend(every_member());
    }
    let mut memo = RecentProcesses::default();
    let mut in_place = 0;
    for e in &events {
        let line = serde_json::to_string(e).unwrap();
        let (with, alone) = (
            read(line.as_bytes(), &mut memo),
            read(line.as_bytes(), &mut RecentProcesses::default()),
        );
        match (with, alone) {
            (Scan::View(with), Scan::View(alone)) => {
                assert_eq!(with.reference(), alone.reference(), "{line}");
                let joined = Process::default();
                assert_eq!(
                    with.facts(Some(&joined)),
                    alone.facts(Some(&joined)),
                    "{line}"
                );
                assert_eq!(with.facts(None), alone.facts(None), "{line}");
                assert_eq!(with.summary(None), alone.summary(None), "{line}");
                in_place += 1;
            }
            (Scan::Serde(_), Scan::Serde(_)) => {}
            (with, alone) => panic!("{with:?} with the memo, {alone:?} alone: {line}"),
        }
    }
    assert!(in_place > events.len() * 9 / 10);
    // The memo was used: the last line's process is the one remembered.
    let line = serde_json::to_string(events.last().unwrap()).unwrap();
    let at = line.find("\"process\":").unwrap() + "\"process\":".len();
    let object = &line.as_bytes()[at..];
    let tid = super::memo::tid_of(object).unwrap();
    assert!(memo.find(tid, object).is_some());
}
