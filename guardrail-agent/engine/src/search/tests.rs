use std::path::PathBuf;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::testlog::*;
use super::*;
use crate::event::{Ancestor, Event};

/// Run a search; the seqs of the events found (0 for a log_gap).
fn seqs(files: &[PathBuf], query: Query, criteria: &Criteria) -> (Vec<u64>, Search) {
    let mut search = Search::new(query, criteria.compile().unwrap());
    let mut found = Vec::new();
    search
        .run(files, &mut |f| {
            found.push(match f.record {
                Parsed::Event(e) => e.seq,
                Parsed::Gap { .. } => 0,
            });
            Ok(Flow::Continue)
        })
        .unwrap();
    (found, search)
}

fn expected(events: &[Event], keep: impl Fn(usize, &Event) -> bool) -> Vec<u64> {
    events
        .iter()
        .enumerate()
        .filter(|(i, e)| keep(*i, e))
        .map(|(_, e)| e.seq)
        .collect()
}

fn since(i: usize) -> Option<Timestamp> {
    Some(time_of(i))
}

/// 2000 events in 5 files of 400.
fn rotated_log() -> (tempfile::TempDir, Vec<PathBuf>, Vec<Event>) {
    let dir = tempfile::tempdir().unwrap();
    let events = sample(2000);
    let files = write_log(dir.path(), &json(&events), 400);
    assert_eq!(files.len(), 5);
    assert_eq!(
        files::discover(&dir.path().join("audit.jsonl")).unwrap(),
        files
    );
    (dir, files, events)
}

#[test]
fn every_filter_returns_exactly_its_records() {
    let (_dir, files, events) = rotated_log();
    let range = Query {
        since: since(300),
        until: since(1700),
        ..Default::default()
    };
    let in_range = |i: usize| (300..=1700).contains(&i);
    type Keep<'a> = Box<dyn Fn(usize, &Event) -> bool + 'a>;
    let cases: Vec<(Criteria, Keep<'_>)> = vec![
        (Criteria::default(), Box::new(|i, _| in_range(i))),
        (
            Criteria {
                rules: vec!["ssh-config".into()],
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 8 == 0),
        ),
        (
            Criteria {
                outcomes: vec!["denied".into()],
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 12 == 1),
        ),
        (
            Criteria {
                kinds: vec!["perm".into()],
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 4 == 1),
        ),
        (
            // A rule kind: write-opens only, not renames.
            Criteria {
                kinds: vec!["file.write".into()],
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 4 == 0),
        ),
        (
            Criteria {
                kinds: vec!["file".into()],
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && (i % 4 == 0 || i % 4 == 3)),
        ),
        (
            // Any path the event names: the rename's destination too.
            Criteria {
                path: Some("/etc/sudoers".into()),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 4 == 3),
        ),
        (
            Criteria {
                path: Some("/tmp/work/f[37]".into()),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 4 == 1 && matches!(i % 10, 3 | 7)),
        ),
        (
            Criteria {
                exe: Some("/usr/bin/c*".into()),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && (i % 4 == 1 || i % 4 == 2)),
        ),
        (
            Criteria {
                pid: Some(1007),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 50 == 7),
        ),
        (
            Criteria {
                process_id: Some("1007@20".into()),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 50 == 7 && i / 50 == 20),
        ),
        (
            Criteria {
                lineage: Some("500@1".into()),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 5 == 0),
        ),
        (
            Criteria {
                uid: Some(1001),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 4 == 2),
        ),
        (
            Criteria {
                login_uid: Some(1000),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 4 == 0),
        ),
        (
            // Criteria combine: all must hold.
            Criteria {
                rules: vec!["ssh-config".into()],
                lineage: Some("500@1".into()),
                ..Default::default()
            },
            Box::new(|i, _| in_range(i) && i % 8 == 0 && i % 5 == 0),
        ),
    ];
    for (criteria, keep) in cases {
        let (found, _) = seqs(&files, range.clone(), &criteria);
        let want = expected(&events, keep);
        assert!(
            !want.is_empty(),
            "{criteria:?} selects nothing: a weak case"
        );
        assert_eq!(found, want, "{criteria:?}");
        // Verification and a whole-log read give the same answer.
        let verified = Query {
            verify: true,
            ..range.clone()
        };
        assert_eq!(seqs(&files, verified, &criteria).0, want, "{criteria:?}");
    }
}

#[test]
fn a_recent_since_reads_a_small_part_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample(20_000);
    let files = write_log(dir.path(), &json(&events), 4000);
    let query = Query {
        since: since(17_990),
        ..Default::default()
    };
    let (found, search) = seqs(&files, query, &Criteria::default());
    assert_eq!(found, expected(&events, |i, _| i >= 17_990));
    let s = &search.stats;
    assert_eq!((s.files, s.files_skipped), (5, 4));
    assert_eq!(s.matched, 2010);
    // The last 10% of the records, and little more.
    assert!(
        s.bytes_read * 100 < s.bytes_total * 12,
        "read {} of {} bytes: more than needed for the last 2010 of 20000 records",
        s.bytes_read,
        s.bytes_total
    );
    // A since in the middle of the newest file: binary search, so well
    // under that file's size.
    let (found, search) = seqs(
        &files,
        Query {
            since: since(19_900),
            ..Default::default()
        },
        &Criteria::default(),
    );
    assert_eq!(found.len(), 100);
    let newest = std::fs::metadata(files.last().unwrap()).unwrap().len();
    assert!(
        search.stats.bytes_read < newest / 4,
        "{} bytes read of a {newest}-byte file",
        search.stats.bytes_read
    );
    // Without --since everything is read.
    let (found, search) = seqs(&files, Query::default(), &Criteria::default());
    assert_eq!(found.len(), 20_000);
    assert_eq!(search.stats.bytes_read, search.stats.bytes_total);
}

#[test]
fn until_stops_reading() {
    let (_dir, files, events) = rotated_log();
    let query = Query {
        until: since(100),
        ..Default::default()
    };
    let (found, search) = seqs(&files, query, &Criteria::default());
    assert_eq!(found, expected(&events, |i, _| i <= 100));
    assert!(
        search.stats.bytes_read < search.stats.bytes_total / 3,
        "{:?}",
        search.stats
    );
}

#[test]
fn records_slightly_out_of_order_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample(5000);
    // Two CPUs: event 4000 is written after 4001 but happened before.
    events.swap(4000, 4001);
    let files = write_log(dir.path(), &json(&events), 5000);
    let query = Query {
        since: Some(time_of(4000)),
        until: Some(time_of(4000)),
        ..Default::default()
    };
    let (found, _) = seqs(&files, query, &Criteria::default());
    assert_eq!(found, vec![4001]);
}

#[test]
fn a_tampered_record_is_found_at_its_line() {
    let (_dir, files, _) = rotated_log();
    // Line 17 of the second oldest file.
    let victim = &files[1];
    let text = std::fs::read_to_string(victim).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[16] = lines[16].replacen("\"ktime_ns\":", "\"ktime_ns\":1", 1);
    assert_ne!(lines[16], text.lines().nth(16).unwrap());
    std::fs::write(victim, lines.join("\n") + "\n").unwrap();
    let mut search = Search::new(
        Query {
            verify: true,
            ..Default::default()
        },
        Criteria::default().compile().unwrap(),
    );
    let err = search.run(&files, &mut |_| Ok(Flow::Continue)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:17: its content does not match its hash: the record was edited",
            victim.display()
        )
    );
    // A --since that skips the file does not read (nor verify) it.
    let mut search = Search::new(
        Query {
            verify: true,
            since: since(900),
            ..Default::default()
        },
        Criteria::default().compile().unwrap(),
    );
    search.run(&files, &mut |_| Ok(Flow::Continue)).unwrap();
    assert_eq!(search.stats.files_skipped, 2);
    assert_eq!(search.stats.verified, 1200);
    // A deleted record breaks the link, even at the start of a file
    // after a skipped one: the skipped file's last record is the link.
    let third = &files[2];
    let text = std::fs::read_to_string(third).unwrap();
    std::fs::write(third, text.split_once('\n').unwrap().1).unwrap();
    let mut search = Search::new(
        Query {
            verify: true,
            since: since(900),
            ..Default::default()
        },
        Criteria::default().compile().unwrap(),
    );
    let err = search.run(&files, &mut |_| Ok(Flow::Continue)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:1: does not follow", third.display())),
        "{err}"
    );
}

#[test]
fn corrupt_and_unfinished_lines_are_named_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample(10);
    let files = write_log(dir.path(), &json(&events), 10);
    let mut text = std::fs::read_to_string(&files[0]).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "{\"seq\":4,\"time\":\"2026-11-20T00:00:03Z\",\"kind\":\"fi";
    lines[5] = "not json at all";
    text = lines.join("\n") + "\n{\"seq\":11,\"time\":\"2026";
    std::fs::write(&files[0], &text).unwrap();
    let (found, search) = seqs(&files, Query::default(), &Criteria::default());
    assert_eq!(found, vec![1, 2, 3, 5, 7, 8, 9, 10]);
    let name = files[0].display();
    assert_eq!(search.notes.len(), 3, "{:?}", search.notes);
    assert!(search.notes[0].starts_with(&format!("{name}:4: not a guardrail record (")));
    assert!(search.notes[1].starts_with(&format!("{name}:6: not a guardrail record (")));
    assert_eq!(
        search.notes[2],
        format!("{name}:11: the last record is unfinished (being written, or cut short by a crash); not read")
    );
    // With --verify the corrupt line is a break, at its line.
    let mut search = Search::new(
        Query {
            verify: true,
            ..Default::default()
        },
        Criteria::default().compile().unwrap(),
    );
    let err = search.run(&files, &mut |_| Ok(Flow::Continue)).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{name}:4: ")), "{err}");
}

#[test]
fn an_empty_range_finds_nothing() {
    let (_dir, files, _) = rotated_log();
    for (from, to) in [
        (time_of(5000), time_of(6000)),
        (
            t0() - SignedDuration::from_hours(48),
            t0() - SignedDuration::from_hours(24),
        ),
        (time_of(10), time_of(5)),
    ] {
        let (found, search) = seqs(
            &files,
            Query {
                since: Some(from),
                until: Some(to),
                ..Default::default()
            },
            &Criteria::default(),
        );
        assert!(found.is_empty(), "{from}..{to}: {found:?}");
        assert!(search.notes.is_empty());
    }
}

#[test]
fn an_unknown_rule_finds_nothing_and_is_not_among_those_seen() {
    let (_dir, files, _) = rotated_log();
    let (found, search) = seqs(
        &files,
        Query::default(),
        &Criteria {
            rules: vec!["ssh-confg".into()],
            ..Default::default()
        },
    );
    assert!(found.is_empty());
    assert_eq!(
        search.rules_seen.iter().collect::<Vec<_>>(),
        ["ssh-config", "world-writable"]
    );
}

#[test]
fn gaps_and_losses_show_unfiltered_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = json(&sample(6));
    let gap_time = humantime_like(time_of(3));
    records.insert(
        3,
        format!("{{\"kind\":\"log_gap\",\"time\":\"{gap_time}\",\"lost\":7}}"),
    );
    let files = write_log(dir.path(), &records, 100);
    let (found, search) = seqs(&files, Query::default(), &Criteria::default());
    assert_eq!(found, vec![1, 2, 3, 0, 4, 5, 6]);
    assert_eq!(search.stats.lost, 7);
    let only = |kind: &str| Criteria {
        kinds: vec![kind.into()],
        ..Default::default()
    };
    assert_eq!(seqs(&files, Query::default(), &only("log_gap")).0, vec![0]);
    assert_eq!(seqs(&files, Query::default(), &only("exec")).0, vec![3]);
}

#[test]
fn a_lineage_deeper_than_the_ancestors_listed_is_followed() {
    // root 1@1 → 2@1 → … → 11@1: the last names only 8 ancestors (3..10).
    let chain: Vec<Event> = (1..=11u32)
        .map(|pid| {
            let mut e = sample_event(2);
            e.seq = pid as u64;
            let Body::Exec { process, .. } = &mut e.body else {
                unreachable!()
            };
            process.pid = pid;
            process.id = Some(format!("{pid}@1").into());
            process.parent_id = (pid > 1).then(|| Arc::from(format!("{}@1", pid - 1)));
            process.ancestors = (1..pid)
                .rev()
                .take(8)
                .map(|a| Ancestor {
                    pid: a,
                    id: Some(format!("{a}@1").into()),
                    exe: None,
                    script: None,
                })
                .collect();
            e
        })
        .collect();
    let mut stranger = sample_event(2);
    stranger.seq = 12;
    let mut events = chain;
    events.push(stranger);
    let dir = tempfile::tempdir().unwrap();
    let files = write_log(dir.path(), &json(&events), 100);
    let lineage = |id: &str| Criteria {
        lineage: Some(id.into()),
        ..Default::default()
    };
    assert_eq!(
        seqs(&files, Query::default(), &lineage("1@1")).0,
        (1..=11).collect::<Vec<u64>>()
    );
    assert_eq!(
        seqs(&files, Query::default(), &lineage("9@1")).0,
        vec![9, 10, 11]
    );
}

#[test]
fn bad_criteria_say_what_is_expected() {
    let err = |c: Criteria| c.compile().err().unwrap().to_string();
    assert!(err(Criteria {
        kinds: vec!["file.wirte".into()],
        ..Default::default()
    })
    .starts_with("unknown kind \"file.wirte\" (did you mean \"file.write\"?)"));
    assert!(err(Criteria {
        outcomes: vec!["deny".into()],
        ..Default::default()
    })
    .starts_with("unknown outcome \"deny\" (did you mean \"denied\"?): expected one of alerted"));
    assert_eq!(
        err(Criteria {
            lineage: Some("1234".into()),
            ..Default::default()
        }),
        "\"1234\" is not a process id: expected PID@START, as in an event's process.id"
    );
}

#[test]
fn following_reads_on_across_a_rotation_exactly_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let events = sample(30);
    let records = json(&events);
    // Seal all 30 in one chain; write 10, then follow as the rest come.
    let files = write_log(dir.path(), &records, 30);
    let sealed = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<&str> = sealed.lines().collect();
    let live = dir.path().join("audit.jsonl");
    std::fs::write(&live, lines[..10].join("\n") + "\n").unwrap();
    let mut search = Search::new(
        Query {
            since: since(5),
            follow: true,
            ..Default::default()
        },
        Criteria::default().compile().unwrap(),
    );
    let mut found = Vec::new();
    let mut sink = |f: &Found| {
        if let Parsed::Event(e) = f.record {
            found.push(e.seq);
        }
        Ok(Flow::Continue)
    };
    let mut pos = search
        .run(std::slice::from_ref(&live), &mut sink)
        .unwrap()
        .unwrap();
    assert_eq!(search.last_seen.map(|(s, _)| s), Some(10));
    // Half a line, being written: not read yet, not a note.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    write!(f, "{}\n{}", lines[10], &lines[11][..20]).unwrap();
    search.follow(&mut pos, &mut sink).unwrap();
    assert_eq!(search.last_seen.map(|(s, _)| s), Some(11));
    // The line is finished, one more, then the writer rotates and goes on.
    write!(f, "{}\n{}\n", &lines[11][20..], lines[12]).unwrap();
    drop(f);
    std::fs::rename(&live, dir.path().join("audit.jsonl.1")).unwrap();
    std::fs::write(&live, lines[13..].join("\n") + "\n").unwrap();
    search.follow(&mut pos, &mut sink).unwrap();
    assert_eq!(found, (6..=30).collect::<Vec<u64>>());
    assert!(search.notes.is_empty(), "{:?}", search.notes);
    assert_eq!(search.last_seen.map(|(s, _)| s), Some(30));
}

/// The figures in docs/performance.md: a large rotated log, and what a
/// `--since` query near its end reads. `GUARDRAIL_BIG_LOG=DIR` keeps the
/// log there (to time the CLI on it).
/// `cargo test -p guardrail-agent --lib search::tests::big_log -- --ignored --nocapture`
#[test]
#[ignore]
fn big_log() {
    let keep = std::env::var_os("GUARDRAIL_BIG_LOG").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let n = 1_000_000;
    // About 100 MB a file, as with the default max_bytes.
    let per_file = 200_000;
    let mut prev = crate::chain::GENESIS.to_string();
    let chunks = n / per_file;
    let mut files = Vec::new();
    for k in 0..chunks {
        let rotated = chunks - 1 - k;
        let name = match rotated {
            0 => "audit.jsonl".to_string(),
            r => format!("audit.jsonl.{r}"),
        };
        let mut text = String::new();
        for i in k * per_file..(k + 1) * per_file {
            let json = serde_json::to_string(&sample_event(i)).unwrap();
            let (line, h) = crate::chain::seal(&prev, &json);
            prev = h;
            text.push_str(&line);
            text.push('\n');
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    for (label, from) in [("last hour", n - 3600), ("last minute", n - 60)] {
        let started = std::time::Instant::now();
        let (found, search) = seqs(
            &files,
            Query {
                since: since(from),
                ..Default::default()
            },
            &Criteria::default(),
        );
        assert_eq!(found.len(), n - from);
        let s = &search.stats;
        println!(
            "{n} records, {} bytes in {} files; --since {label}: {} bytes read ({:.3}%), {} records parsed, {} matched, {:?}",
            s.bytes_total,
            s.files,
            s.bytes_read,
            s.bytes_read as f64 * 100.0 / s.bytes_total as f64,
            s.records_parsed,
            s.matched,
            started.elapsed()
        );
    }
}

/// Found events, their JSON in full made an event again.
fn found_events(files: &[PathBuf], query: Query, criteria: &Criteria) -> (Vec<Event>, Search) {
    let mut search = Search::new(query, criteria.compile().unwrap());
    let mut found = Vec::new();
    search
        .run(files, &mut |f| {
            found.push(serde_json::from_str::<Event>(&f.event_json()).unwrap());
            Ok(Flow::Continue)
        })
        .unwrap();
    (found, search)
}

#[test]
fn a_log_naming_processes_by_reference_is_searched_as_its_whole_form() {
    let events = busy_threads(2000);
    let (whole_dir, compact_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole = write_log(whole_dir.path(), &json(&events), 400);
    let lines = compact(&events, 400);
    // Each of the 8 threads: whole once, then defined once per file.
    let defined = lines
        .iter()
        .filter(|l| crate::process_join::defines_a_version(l.as_bytes()));
    assert_eq!(defined.count(), 5 * 8);
    let compact = write_log(compact_dir.path(), &lines, 400);
    let range = Query {
        since: since(1300),
        until: since(1900),
        ..Default::default()
    };
    for criteria in [
        Criteria::default(),
        Criteria {
            exe: Some("/usr/bin/c*".into()),
            ..Default::default()
        },
        Criteria {
            uid: Some(1001),
            ..Default::default()
        },
        Criteria {
            lineage: Some("500@1".into()),
            ..Default::default()
        },
    ] {
        let (want, _) = found_events(&whole, range.clone(), &criteria);
        assert!(
            !want.is_empty(),
            "{criteria:?} selects nothing: a weak case"
        );
        // From a binary search into the middle of a file, and from the
        // start (verifying).
        for verify in [false, true] {
            let query = Query {
                verify,
                ..range.clone()
            };
            let (mut found, search) = found_events(&compact, query, &criteria);
            assert_eq!(search.stats.unjoined, 0, "{criteria:?}");
            for e in &mut found {
                e.body.process_mut().unwrap().pv = None;
            }
            assert_eq!(found, want, "{criteria:?}, verify {verify}");
        }
    }
}

#[test]
fn definitions_behind_an_earlier_run_of_the_agent_are_not_taken() {
    let events = busy_threads(400);
    let lines = compact(&events, 400);
    // The agent restarted after line 200: its version numbers start over,
    // naming other process states (the same processes, another program),
    // and the first lines of the new run are lost with their definitions
    // (a writer bug this reader must not hide).
    let mut restarted = lines[..200].to_vec();
    let mut run2 = compact(&events[200..], 400);
    for (k, line) in run2.iter_mut().enumerate() {
        *line = line.replacen(
            &format!("{{\"seq\":{}", 201 + k),
            &format!("{{\"seq\":{}", 1 + k),
            1,
        );
        *line = line.replace("/usr/bin/", "/opt/new/");
    }
    let lost = |l: &String| {
        crate::process_join::defines_a_version(l.as_bytes())
            && (l.contains("\"pid\":1000,") || l.contains("\"pid\":1002,"))
    };
    let before = run2.len();
    run2.retain(|l| !lost(l));
    assert_eq!(run2.len(), before - 2);
    restarted.extend(run2);
    let dir = tempfile::tempdir().unwrap();
    let files = write_log(dir.path(), &restarted, 1000);
    // From before the restart (reading on across it), and from after it
    // (looking back across it for definitions).
    for from in [150, 300, 380] {
        let query = Query {
            since: since(from),
            ..Default::default()
        };
        let (found, search) = found_events(&files, query, &Criteria::default());
        assert!(search.stats.unjoined > 0, "from {from}: {:?}", search.stats);
        assert!(
            !found.is_empty(),
            "from {from}: {:?} {:?}",
            search.stats,
            search.notes
        );
        for e in found.iter().filter(|e| e.time >= events[200].time) {
            let exe = e.body.process().unwrap().exe.clone().unwrap();
            assert!(
                !exe.starts_with("/usr/bin/"),
                "from {from}: {}: {exe}, from the run before",
                e.seq
            );
        }
    }
}

#[test]
fn one_file_s_definitions_never_complete_another_s_references() {
    // Two hosts' logs searched together: the same version numbers, the
    // same process ids (cloned images), other programs; host B's `seq`
    // higher, so no new run shows between them.
    let events = busy_threads(400);
    let host_a = compact(&events, 400);
    let host_b: Vec<String> = compact(&events, 400)
        .iter()
        .enumerate()
        .map(|(k, l)| {
            l.replacen(
                &format!("{{\"seq\":{}", k + 1),
                &format!("{{\"seq\":{}", k + 1001),
                1,
            )
            .replace("/usr/bin/", "/opt/b/")
        })
        .collect();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut files = write_log(a.path(), &host_a, 400);
    files.extend(write_log(b.path(), &host_b, 400));
    let query = Query {
        since: since(300),
        ..Default::default()
    };
    let (found, search) = found_events(&files, query, &Criteria::default());
    assert_eq!(search.stats.unjoined, 0);
    assert_eq!(found.len(), 200);
    for e in &found[100..] {
        let exe = e.body.process().unwrap().exe.clone().unwrap();
        assert!(!exe.starts_with("/usr/bin/"), "{}: {exe}, host A's", e.seq);
    }
}
