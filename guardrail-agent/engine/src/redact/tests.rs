use proptest::prelude::*;

use super::*;
use crate::event::{
    Decision, ExecDetails, FileDetails, Outcome, PermDetails, Process, SyscallResult,
};
use crate::redact::RedactionPattern;

const CORPUS: &str = include_str!("corpus.txt");

enum Case {
    Redact { input: String, expected: String },
    Keep(String),
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
}

/// The corpus, each case with its line number.
fn corpus() -> Vec<(usize, Case)> {
    let mut cases = Vec::new();
    let mut lines = CORPUS.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, line)) = lines.next() {
        if let Some(input) = line.strip_prefix("< ") {
            let (_, next) = lines.next().expect("`<` is followed by `>`");
            let expected = next
                .strip_prefix("> ")
                .unwrap_or_else(|| panic!("corpus.txt:{}: expected `> ` after `<`", n + 1));
            cases.push((
                n,
                Case::Redact {
                    input: unescape(input),
                    expected: unescape(expected),
                },
            ));
        } else if let Some(input) = line.strip_prefix("= ") {
            cases.push((n, Case::Keep(unescape(input))));
        } else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "corpus.txt:{n}: unknown line {line:?}"
            );
        }
    }
    cases
}

#[test]
fn the_corpus_is_redacted_exactly_and_look_alikes_are_kept() {
    let r = Redactor::default();
    let mut failures = Vec::new();
    for (n, case) in corpus() {
        match case {
            Case::Redact { input, expected } => {
                let got = r.redact_str(&input);
                if got.as_deref() != Some(expected.as_str()) {
                    failures.push(format!(
                        "corpus.txt:{n}: {input:?}\n   got {got:?}\n  want {expected:?}"
                    ));
                }
            }
            Case::Keep(input) => {
                if let Some(got) = r.redact_str(&input) {
                    failures.push(format!(
                        "corpus.txt:{n}: look-alike {input:?} was redacted: {got:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_built_in_pattern_has_corpus_cases() {
    let cases = corpus();
    for (name, _) in builtin() {
        let marker = marker(name);
        assert!(
            cases.iter().any(
                |(_, c)| matches!(c, Case::Redact { expected, .. } if expected.contains(&marker))
            ),
            "no corpus case redacts with {marker}"
        );
    }
    let keeps = cases
        .iter()
        .filter(|(_, c)| matches!(c, Case::Keep(_)))
        .count();
    assert!(keeps >= 50, "{keeps} look-alikes");
}

fn argv(args: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut fields = Vec::new();
    Redactor::default().redact_argv(&mut argv, &mut fields);
    (argv, fields)
}

#[test]
fn a_secret_option_redacts_the_next_argument() {
    let (a, f) = argv(&["mysql", "-u", "root", "--password", "hunter2", "db"]);
    assert_eq!(
        a,
        [
            "mysql",
            "-u",
            "root",
            "--password",
            "[REDACTED:secret-option]",
            "db"
        ]
    );
    assert_eq!(f, ["exec.argv[4]"]);
    let (a, _) = argv(&["vault", "login", "-token", "s.Xy9kQ2mP7vR1"]);
    assert_eq!(a[3], "[REDACTED:secret-option]");
    let (a, _) = argv(&["x", "--API-KEY", "k"]);
    assert_eq!(a[2], "[REDACTED:secret-option]");
}

#[test]
fn an_option_or_nothing_after_a_secret_option_is_kept() {
    for args in [
        &["mysql", "--password", "-h", "db"][..],
        &["mysql", "--password", "--host=db"],
        &["mysql", "--password"],
        &["tool", "--no-password", "file.txt"],
        &["tool", "--password-file", "/etc/x"],
        &["tool", "--password", ""],
    ] {
        let (a, f) = argv(args);
        assert_eq!(a, args, "{args:?}");
        assert!(f.is_empty(), "{args:?}: {f:?}");
    }
}

#[test]
fn a_private_key_spread_over_arguments_is_redacted_to_its_end() {
    let (a, f) = argv(&[
        "printf",
        "%s\\n",
        "-----BEGIN EC PRIVATE KEY-----",
        "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5",
        "oAoGCCqGSM49AwEHoUQDQgAE",
        "-----END EC PRIVATE KEY-----",
        "after",
    ]);
    assert_eq!(
        a,
        [
            "printf",
            "%s\\n",
            "[REDACTED:private-key]",
            "[REDACTED:private-key]",
            "[REDACTED:private-key]",
            "[REDACTED:private-key]",
            "after"
        ]
    );
    assert_eq!(
        f,
        [
            "exec.argv[2]",
            "exec.argv[3]",
            "exec.argv[4]",
            "exec.argv[5]"
        ]
    );
}

fn redactor_with(patterns: &[(&str, &str)]) -> Redactor {
    let cfg = RedactionSection {
        enabled: true,
        patterns: patterns
            .iter()
            .map(|(n, r)| RedactionPattern {
                name: toml::Spanned::new(0..0, n.to_string()),
                regex: toml::Spanned::new(0..0, r.to_string()),
            })
            .collect(),
    };
    Redactor::new(&cfg).unwrap()
}

#[test]
fn user_patterns_redact_the_whole_match_or_the_secret_group() {
    let r = redactor_with(&[
        ("ticket", r"\btkt_[a-z0-9]{12}\b"),
        ("pin", r"(?i)\bpin:(?P<secret>[0-9]{4,8})\b"),
    ]);
    assert_eq!(
        r.redact_str("open tkt_0a1b2c3d4e5f now").as_deref(),
        Some("open [REDACTED:ticket] now")
    );
    assert_eq!(
        r.redact_str("PIN:123456").as_deref(),
        Some("PIN:[REDACTED:pin]")
    );
    assert_eq!(r.redact_str("tkt_short"), None);
    // The built-in patterns stay.
    assert!(r.redact_str("--password=x1").is_some());
}

#[test]
fn bad_user_patterns_are_refused() {
    assert!(matches!(
        compile_user("x", "("),
        Err(RedactError::Regex { .. })
    ));
    assert!(matches!(
        compile_user("x", "a?"),
        Err(RedactError::MatchesEmpty { .. })
    ));
    assert!(matches!(
        compile_user("a]b", "x"),
        Err(RedactError::BadName { .. })
    ));
}

fn process() -> Process {
    Process {
        pid: 42,
        tid: 42,
        comm: "mysql".into(),
        exe: Some("/usr/bin/mysql".into()),
        parent_exe: Some("/bin/bash".into()),
        ..Default::default()
    }
}

fn exec_event(args: &[&str]) -> Event {
    Event {
        seq: 1,
        time: "2024-01-01T00:00:00Z".into(),
        ktime_ns: 1,
        via: None,
        body: Body::Exec {
            syscall: "execve".into(),
            process: process(),
            result: SyscallResult {
                ok: true,
                ret: 0,
                errno: None,
            },
            exec: ExecDetails {
                path: "/usr/bin/mysql".into(),
                argv: args.iter().map(|s| s.to_string()).collect(),
                cwd: Some("/root".into()),
                ..Default::default()
            },
        },
        decision: None,
        redacted: vec![],
    }
}

fn decision(matched: &[(&str, &str)]) -> Decision {
    Decision {
        rule: "db-clients".into(),
        action: crate::rules::spec::Action::Alert,
        mode: crate::rules::spec::Mode::Enforce,
        severity: Default::default(),
        outcome: Outcome::Alerted,
        fallback: None,
        matched: matched
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        also: vec![],
        exempted: vec![],
        reverted: None,
        fallback_error: None,
    }
}

#[test]
fn an_event_names_its_redacted_fields_and_its_json_holds_no_secret() {
    let mut e = exec_event(&["mysql", "--user=app", "--password=S3cr3tValue123", "db"]);
    e.decision = Some(decision(&[
        ("on", "exec"),
        (
            "argv_matches",
            "mysql --user=app --password=S3cr3tValue123 db",
        ),
    ]));
    Redactor::default().redact_event(&mut e);
    assert_eq!(
        e.redacted,
        ["exec.argv[2]", "decision.matched.argv_matches"]
    );
    let Body::Exec { exec, .. } = &e.body else {
        unreachable!()
    };
    assert_eq!(exec.argv[2], "--password=[REDACTED:secret-assignment]");
    let json = serde_json::to_string(&e).unwrap();
    assert!(!json.contains("S3cr3tValue123"), "{json}");
    assert!(
        json.contains(r#""redacted":["exec.argv[2]","decision.matched.argv_matches"]"#),
        "{json}"
    );
}

#[test]
fn paths_are_redacted_field_by_field() {
    let mut e = exec_event(&[]);
    e.body = Body::File {
        syscall: "renameat2".into(),
        process: process(),
        result: SyscallResult::default(),
        file: FileDetails {
            op: "rename".into(),
            path: Some("/tmp/upload-AKIAIOSFODNN7EXAMPLE".into()),
            new_path: Some("/srv/keys/token=abc123def456".into()),
            raw_path: Some("upload-AKIAIOSFODNN7EXAMPLE".into()),
            resolved: true,
            ..Default::default()
        },
    };
    Redactor::default().redact_event(&mut e);
    assert_eq!(e.redacted, ["file.path", "file.raw_path"]);
    let Body::File { file, .. } = &e.body else {
        unreachable!()
    };
    assert_eq!(
        file.path.as_deref(),
        Some("/tmp/upload-[REDACTED:aws-access-key]")
    );
    // `token=` inside a path component is not an assignment on its own.
    assert_eq!(
        file.new_path.as_deref(),
        Some("/srv/keys/token=abc123def456")
    );
}

#[test]
fn a_clean_event_is_left_alone_and_serialises_without_redacted() {
    let mut e = exec_event(&["mysql", "--user=app", "db"]);
    let before = e.clone();
    Redactor::default().redact_event(&mut e);
    assert_eq!(e, before);
    assert!(!serde_json::to_string(&e).unwrap().contains("redacted"));
}

#[test]
fn disabled_redaction_changes_nothing() {
    let r = Redactor::new(&RedactionSection {
        enabled: false,
        patterns: vec![],
    })
    .unwrap();
    let mut e = exec_event(&["mysql", "--password=S3cr3tValue123"]);
    let before = e.clone();
    r.redact_event(&mut e);
    assert_eq!(e, before);
}

#[test]
fn a_stream_of_events_is_redacted_as_each_event_alone() {
    // Names repeat, change, change back, become empty, carry a secret and
    // lose it again: each event must come out as it would on its own.
    let names = [
        ("bash", "/usr/bin/bash"),
        ("bash", "/usr/bin/bash"),
        ("curl", "/tmp/AKIAIOSFODNN7EXAMPLE/curl"),
        ("curl", "/tmp/AKIAIOSFODNN7EXAMPLE/curl"),
        ("", "/usr/bin/bash"),
        ("AKIAIOSFODNN7EXAMPLE", "/usr/bin/bash"),
        ("bash", "/usr/bin/bash"),
    ];
    let r = Redactor::default();
    let mut recent = Recent::default();
    let mut redacted = vec![];
    for (i, (comm, exe)) in names.into_iter().enumerate() {
        let mut e = exec_event(&["true"]);
        let Body::Exec { process, .. } = &mut e.body else {
            unreachable!()
        };
        process.comm = comm.into();
        process.exe = Some(exe.into());
        process.parent_exe = Some(names[names.len() - 1 - i].1.into());
        let mut alone = e.clone();
        r.redact_event(&mut alone);
        r.redact_event_after(&mut e, &mut recent);
        assert_eq!(e, alone, "event {i}");
        redacted.push(e.redacted.len());
    }
    assert_eq!(redacted, [0, 0, 1, 2, 1, 1, 0]);
}

#[test]
fn a_stream_of_paths_is_redacted_as_each_event_alone() {
    // Paths repeat, carry a secret twice in a row, move between file and
    // permission events, and lose their raw form: each event must come
    // out as it would on its own.
    let secret = "/tmp/upload-AKIAIOSFODNN7EXAMPLE";
    let steps: [(bool, &str, Option<&str>); 8] = [
        (true, "/etc/hosts", Some("hosts")),
        (true, "/etc/hosts", Some("hosts")),
        (false, secret, Some("upload-AKIAIOSFODNN7EXAMPLE")),
        (false, secret, Some("upload-AKIAIOSFODNN7EXAMPLE")),
        (true, secret, None),
        (true, "/etc/hosts", Some("upload-AKIAIOSFODNN7EXAMPLE")),
        (false, "/etc/hosts", None),
        (true, "/etc/hosts", Some("hosts")),
    ];
    let r = Redactor::default();
    let mut recent = Recent::default();
    let mut redacted = vec![];
    for (i, (is_file, path, raw)) in steps.into_iter().enumerate() {
        let mut e = exec_event(&[]);
        e.body = if is_file {
            Body::File {
                syscall: "openat".into(),
                process: process(),
                result: SyscallResult::default(),
                file: FileDetails {
                    op: "write".into(),
                    path: Some(path.into()),
                    raw_path: raw.map(Into::into),
                    ..Default::default()
                },
            }
        } else {
            Body::Perm {
                syscall: "fchmodat".into(),
                process: process(),
                result: SyscallResult::default(),
                perm: PermDetails {
                    op: "chmod".into(),
                    path: Some(path.into()),
                    raw_path: raw.map(Into::into),
                    ..Default::default()
                },
            }
        };
        let mut alone = e.clone();
        r.redact_event(&mut alone);
        r.redact_event_after(&mut e, &mut recent);
        assert_eq!(e, alone, "event {i}");
        redacted.push(e.redacted.len());
    }
    assert_eq!(redacted, [0, 0, 2, 2, 1, 1, 0, 0]);
}

/// A secret in one of the shapes the agent knows, for the property test.
fn secret_argv() -> impl Strategy<Value = (String, Vec<String>)> {
    // Characters a shell argument or URL userinfo may carry unquoted;
    // starts with a letter or digit so it is not taken for an option, and
    // holds a digit so it cannot occur by chance in the benign arguments.
    let password = "[A-Za-z0-9]{3}[0-9][A-Za-z0-9!%^*~+._]{4,26}";
    let aws = "(AKIA|ASIA)[A-Z2-7]{16}";
    let github = "ghp_[A-Za-z0-9]{36}";
    let benign = prop::collection::vec("[a-z/._-]{1,12}", 0..4);
    (
        0usize..6,
        password,
        aws,
        github,
        benign.clone(),
        benign,
        "[a-z]{3,8}",
    )
        .prop_map(|(shape, pw, aws, gh, before, after, key)| {
            let (secret, args): (String, Vec<String>) = match shape {
                0 => (pw.clone(), vec![format!("--{key}-password={pw}")]),
                1 => (pw.clone(), vec!["--token".into(), pw.clone()]),
                2 => (
                    pw.clone(),
                    vec![format!("https://{key}:{pw}@example.com/x")],
                ),
                3 => (
                    pw.clone(),
                    vec![format!("{}_SECRET={pw}", key.to_uppercase())],
                ),
                4 => (aws.clone(), vec![aws]),
                _ => (
                    gh.clone(),
                    vec![format!("sh -c 'git push https://{gh}@github.com/o/r'")],
                ),
            };
            let mut argv = before;
            argv.extend(args);
            argv.extend(after);
            (secret, argv)
        })
}

proptest! {
    #[test]
    fn the_secret_appears_nowhere_in_the_serialised_event((secret, args) in secret_argv()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut e = exec_event(&args);
        e.decision = Some(decision(&[("argv_matches", &args.join(" "))]));
        Redactor::default().redact_event(&mut e);
        let json = serde_json::to_string(&e).unwrap();
        prop_assert!(!json.contains(&secret), "{} in {}", secret, json);
        prop_assert!(e.redacted.iter().any(|f| f.starts_with("exec.argv[")), "{:?}", e.redacted);
        prop_assert!(e.redacted.contains(&"decision.matched.argv_matches".to_string()));
    }
}

/// Cost per event; run with `--release --ignored --nocapture`.
#[test]
#[ignore]
fn cost_of_a_clean_and_a_secret_event() {
    let r = Redactor::default();
    let mut clean = exec_event(&["/usr/bin/make", "-j2", "CFLAGS=-O2", "install"]);
    clean.body = Body::File {
        syscall: "openat".into(),
        process: process(),
        result: SyscallResult::default(),
        file: FileDetails {
            op: "open".into(),
            path: Some("/home/alice/src/project/target/debug/deps/libfoo-0a1b2c3d.rlib".into()),
            resolved: true,
            ..Default::default()
        },
    };
    let secret = exec_event(&["mysql", "--user=app", "--password=S3cr3tValue123", "db"]);
    let n = 200_000;
    // A clean event is left as it is, so the same one serves every round.
    let mut e = clean.clone();
    let start = std::time::Instant::now();
    for _ in 0..n {
        r.redact_event(&mut e);
        std::hint::black_box(&e);
    }
    println!("clean file event: {:?}", start.elapsed() / n);
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(secret.clone());
    }
    let clone = start.elapsed() / n;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut e = secret.clone();
        r.redact_event(&mut e);
        std::hint::black_box(&e);
    }
    println!("exec with a secret: {:?}", start.elapsed() / n - clone);
}
