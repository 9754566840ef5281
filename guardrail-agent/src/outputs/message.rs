//! What the NATS output's messages are made of, whichever queue they
//! come from (the audit log's files, `logsource`, or the output's own
//! spool, `nats`): their size limits, a line's kind (the subject's last
//! token), `loss` records and chain ids.

use std::sync::atomic::Ordering;

use tracing::warn;

use super::OutputStats;

/// At most this many records in one message.
pub const BATCH_RECORDS: u64 = 128;
/// At most about this many bytes in one message (nats-server's default
/// payload limit is 1 MiB).
pub const BATCH_BYTES: usize = 64 << 10;

/// Events lost to the fleet (the spool was full, or lines of the audit log
/// were given up), for the next `loss` record.
#[derive(Default)]
pub struct Losses {
    pub unreported: u64,
    pub total: u64,
    pub reason: String,
    /// Some were lost, how many is not known (reported with count 0).
    pub unknown: bool,
}

impl Losses {
    pub fn count(&mut self, n: u64, why: &str, name: &str, stats: &OutputStats) {
        if self.unreported == 0 {
            warn!(output = %name, "{why}: events are dropped and counted until the server takes what is spooled");
        }
        self.unreported += n;
        self.total += n;
        self.reason = why.to_string();
        stats.dropped.fetch_add(n, Ordering::Relaxed);
        stats.dropped_because(why.to_string());
    }

    /// The `loss` record; `id` names it when it travels outside a chain.
    pub fn record(&self, name: &str, reason: &str, id: Option<&str>) -> serde_json::Value {
        let mut record = serde_json::json!({
            "kind": "loss",
            "time": jiff::Timestamp::now().to_string(),
            "loss": {
                "output": name,
                "count": self.unreported,
                "total": self.total,
                "reason": reason,
            }
        });
        if let Some(id) = id {
            record["id"] = id.into();
        }
        if self.unknown {
            // `count` is then at least what was lost.
            record["loss"]["unknown"] = true.into();
        }
        record
    }
}

/// The top-level `kind` of an event's JSON line: the first `"kind":"`
/// member (the event's own comes before its nested objects; a string
/// value cannot hold it unescaped).
pub fn kind_of(line: &[u8]) -> Option<&str> {
    // Built once: building a searcher per line was a twentieth of the
    // publisher's time.
    static KIND: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"kind\":\""));
    let at = KIND.find(line)? + KIND.needle().len();
    let len = memchr::memchr(b'"', &line[at..])?;
    std::str::from_utf8(&line[at..at + len]).ok()
}

/// A chain id: the time this chain began (a fresh spool), in ns, hex;
/// with the host in the message id, unique unless the host's clock goes
/// back to the same nanosecond.
pub fn new_chain_id() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{ns:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lines_kind_is_found_wherever_it_is() {
        assert_eq!(kind_of(br#"{"kind":"exec","a":1}"#), Some("exec"));
        assert_eq!(kind_of(br#"{"time":"x","kind":"file"}"#), Some("file"));
        assert_eq!(kind_of(br#"{"time":"x"}"#), None);
        assert_eq!(kind_of(b""), None);
        assert_eq!(kind_of(br#"{"kind":"#), None);
    }
}
