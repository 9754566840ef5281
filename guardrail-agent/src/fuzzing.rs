//! Properties that must hold for arbitrary untrusted input, one function
//! per input the agent or CLI accepts. The cargo-fuzz targets in `fuzz/`
//! call these; the test suite replays the kept corpora through them.
//! Each panics when its property is broken.

use std::path::Path;

use guardrail_engine::interpret::ProcessView;

/// The configuration and rules parser on arbitrary text: errors, never
/// panics, and errors in the file name a line inside it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A directory that does not exist: includes resolve to nothing, so no
    // file of the machine is read.
    let path = Path::new("/nonexistent/guardrail-fuzz/guardrail.toml");
    let _ = crate::config::Config::parse(text, path);
    if let Err(errors) = guardrail_engine::rules::load::compile_text(
        path,
        text,
        guardrail_engine::rules::users::Names::default(),
    ) {
        let lines = text.lines().count().max(1);
        for e in errors.0.iter().filter(|e| e.file == path) {
            assert!(e.line >= 1 && e.line <= lines + 1, "{e}");
        }
    }
}

/// No /proc: results must not depend on the machine's processes.
struct NoProcesses;

impl ProcessView for NoProcesses {
    fn dir_of(&mut self, _: u32, _: Option<i32>) -> Option<String> {
        None
    }
    fn fd_path(&mut self, _: u32, _: i32) -> Option<String> {
        None
    }
    fn exe(&mut self, _: u32) -> Option<std::sync::Arc<str>> {
        None
    }
    fn exec_happened(&mut self, _: u32, _: &str) {}
}

/// Ring-buffer records from a misbehaving kernel side: decoding and
/// interpreting never panic, what decodes serialises to JSON, and replay
/// reads that line in place as serde reads it.
pub fn decoder(data: &[u8]) {
    use guardrail_engine::event::{Body, Event};
    if let Ok(raw) = guardrail_engine::decode::decode(data) {
        if let Some(body) = guardrail_engine::interpret::interpret(&raw, &mut NoProcesses) {
            let loss = matches!(body, Body::Loss { .. });
            let event = Event {
                seq: 1,
                time: "2026-12-07T03:00:00.123456789Z".into(),
                ktime_ns: 1,
                via: None,
                body,
                decision: None,
                redacted: vec![],
            };
            let line = serde_json::to_string(&event).expect("every event serialises");
            match guardrail_engine::scan::agrees_with_serde(line.as_bytes()) {
                Ok(in_place) => assert!(in_place || loss, "left to serde: {line}"),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// Replay's line scanner on arbitrary lines: what it reads in place,
/// serde's reader reads alike (`guardrail_engine::scan::agrees_with_serde`).
pub fn replay_line(data: &[u8]) {
    if let Err(e) = guardrail_engine::scan::agrees_with_serde(data) {
        panic!("{e}");
    }
}

/// `guardrail log verify` on arbitrary files (split in two where the
/// first byte says, to reach the checks across files): a verdict, never a
/// panic, and no more records verified than there are lines.
pub fn log_verify(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let cut = data.first().map_or(0, |&b| b as usize % (text.len() + 1));
    let cut = (0..=cut)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let files = vec![
        ("a".to_string(), text[..cut].to_string()),
        ("b".to_string(), text[cut..].to_string()),
    ];
    if let Ok(n) = guardrail_engine::chain::verify(&files) {
        let lines: u64 = files.iter().map(|(_, t)| t.lines().count() as u64).sum();
        assert!(n <= lines, "{n} records verified in {lines} lines");
    }
}

/// A request line from a control-socket client: parsing and filter
/// compilation never panic.
pub fn control(data: &[u8]) {
    if let Ok(crate::protocol::Request::Tail { filter, .. }) = serde_json::from_slice(data) {
        let _ = filter.compile();
    }
}

/// A property over one untrusted input.
pub type Check = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: &[(&str, Check)] = &[
    ("config", config),
    ("decoder", decoder),
    ("log_verify", log_verify),
    ("control", control),
    ("replay_line", replay_line),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input the fuzzers kept (their corpora, and every crash turned
    /// into a regression file) still holds each property.
    #[test]
    fn kept_corpora_replay_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for (name, check) in TARGETS {
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let Ok(data) = std::fs::read(&path) else {
                        // A running campaign may have just minimised it away.
                        continue;
                    };
                    if std::panic::catch_unwind(|| check(&data)).is_err() {
                        panic!("{name}: {} breaks the property", path.display());
                    }
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "no corpus under {}", root.display());
    }

    // The smoke run in the test suite: random and seed-derived inputs
    // through every property, uninstrumented (`cargo xtask fuzz` is the
    // real campaign).
    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        #[test]
        fn random_bytes_hold_every_property(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            for (_, check) in TARGETS {
                check(&data);
            }
        }

        #[test]
        fn edited_seeds_hold_every_property(
            at in 0usize..4096,
            byte in proptest::num::u8::ANY,
            cut in 0usize..4096,
        ) {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let seeds: [(&str, Check); 2] = [
                ("config/guardrail.toml", config),
                ("vm/guardrail.toml", config),
            ];
            for (file, check) in seeds {
                let mut data = std::fs::read(root.join(file)).unwrap();
                let i = at % data.len();
                data[i] = byte;
                data.truncate(cut.max(i + 1));
                check(&data);
            }
        }
    }
}
