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
