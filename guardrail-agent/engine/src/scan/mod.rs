//! Replay's line scanner: reads the agent's own event lines in place, as
//! strictly as the serde reader checks them, and hands every line it is
//! not sure about back to serde (design/replay-scanner.md).
//!
//! Replay spends most of a line's time in serde's parsing, allocations and
//! drops (~2.3 of 3.4 µs); the rules read a dozen facts. The scanner
//! borrows those facts from the line instead, and any doubt — an escaped
//! key, a surrogate, a number of an unexpected form — costs only the serde
//! parse the line would have had anyway.

pub mod json;
pub mod memo;
pub mod process;
pub mod schema;
pub mod view;

pub use memo::RecentProcesses;
pub use view::EventView;

/// What the scanner made of a line.
#[derive(Debug)]
// Made and taken apart once per line, on the stack: a box would be the
// allocation per line the scanner exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum Scan<'a> {
    /// An event, read in place.
    View(EventView<'a>),
    /// A line for serde to decide: anything the scanner is not sure of
    /// (another form, a `loss` report, a definition of a process version,
    /// an error).
    Serde(&'a str),
    /// Not UTF-8: the serde reader skips such lines unread.
    NotUtf8,
}

/// Reads one line (without its `\n`), its process through `memo`.
pub fn read<'a>(line: &'a [u8], memo: &mut RecentProcesses) -> Scan<'a> {
    match json::precheck(line) {
        json::Pre::Clean(clean) => {
            match view::event(&mut json::Cursor::new(clean), memo.consulted()) {
                Ok(view) => Scan::View(view),
                Err(json::Bail) => Scan::Serde(clean.as_str()),
            }
        }
        json::Pre::Unusual(text) => Scan::Serde(text),
        json::Pre::NotUtf8 => Scan::NotUtf8,
    }
}

/// The scanner's contract, checked on one line against serde's reader:
/// a line serde refuses is never read in place, and a line read in place
/// has the event's facts, summary, `seq` and `time`. True when the line
/// was read in place. For the tests and the `replay_line` fuzz target.
pub fn agrees_with_serde(line: &[u8]) -> Result<bool, String> {
    use crate::event::{Event, ProcessMemo};
    use crate::rules::Facts;
    let serde = std::str::from_utf8(line)
        .ok()
        .and_then(|text| Event::from_line(text, &mut ProcessMemo::default()).ok());
    let view = match read(line, &mut RecentProcesses::default()) {
        Scan::View(view) => view,
        Scan::Serde(_) => return Ok(false),
        Scan::NotUtf8 if serde.is_none() => return Ok(false),
        Scan::NotUtf8 => return Err("serde read a line the scanner found not UTF-8".into()),
    };
    let Some(event) = serde else {
        return Err(format!("serde refuses a line the scanner read: {view:?}"));
    };
    // A reference's process, as serde reads it, stands for the definition
    // a reader would join: the facts must come from it either way.
    let joined = match (view.reference(), event.body.process()) {
        (None, _) => None,
        (Some((pv, id)), Some(p))
            if p.unjoined && p.pv == Some(pv) && p.id.as_deref() == Some(id) =>
        {
            Some(p)
        }
        (Some(reference), p) => {
            return Err(format!(
                "the scanner read a reference {reference:?}, serde {p:?}"
            ))
        }
    };
    let differ = |what: &str, scanned: &dyn std::fmt::Debug, serde: &dyn std::fmt::Debug| {
        Err(format!(
            "{what}: the scanner read {scanned:?}, serde {serde:?}"
        ))
    };
    if (view.seq, &*view.time) != (event.seq, event.time.as_str()) {
        return differ(
            "seq and time",
            &(view.seq, &view.time),
            &(event.seq, &event.time),
        );
    }
    let (scanned, read) = (view.facts(joined), Facts::of(&event));
    if scanned != read {
        return differ("facts", &scanned, &read);
    }
    let (scanned, read) = (view.summary(joined), view::Summary::of(&event));
    if scanned != read {
        return differ("summary", &scanned, &read);
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
