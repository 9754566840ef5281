//! Each event's wall-clock time in RFC 3339 (`2026-12-05T14:05:43.156740807Z`),
//! as `humantime::format_rfc3339_nanos` writes it. Events come in bursts
//! within the same second: the date and time of day are worked out once
//! per second and only the nanoseconds per event. Formatting through
//! humantime's `Display` was 2.5% of the agent's CPU under a chmod storm.

/// Formats times since the Unix epoch, remembering the last second's text.
#[derive(Default)]
pub struct WallTimes {
    /// The second `prefix` spells, if any yet.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: [u8; 19],
}

impl WallTimes {
    /// [`Self::format_into`] into a new string.
    #[cfg(test)]
    fn format(&mut self, ns: i128) -> String {
        let mut text = String::new();
        self.format_into(ns, &mut text);
        text
    }

    /// The time `ns` nanoseconds after the epoch (before it: the epoch),
    /// into `into` (emptied first), reusing its memory.
    pub fn format_into(&mut self, ns: i128, into: &mut String) {
        // Divided as u64 (until 2554): u128 division is a library call
        // that cost 2% of an event.
        let (second, nanos) = match u64::try_from(ns.max(0)) {
            Ok(ns) => (ns / 1_000_000_000, (ns % 1_000_000_000) as u32),
            Err(_) => {
                let ns = ns as u128;
                ((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
            }
        };
        if self.second != Some(second) {
            self.prefix = civil(second);
            self.second = Some(second);
        }
        let mut digits_text = [0u8; 30];
        digits_text[..19].copy_from_slice(&self.prefix);
        digits_text[19] = b'.';
        digits(&mut digits_text[20..29], nanos);
        digits_text[29] = b'Z';
        // Only ASCII digits and punctuation were written.
        into.clear();
        into.push_str(std::str::from_utf8(&digits_text).expect("ASCII"));
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a second since the epoch; the calendar
/// is jiff's, once per second.
fn civil(second: u64) -> [u8; 19] {
    let at = i64::try_from(second)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    let mut out = *b"0000-00-00T00:00:00";
    digits(&mut out[0..4], t.year() as u32);
    digits(&mut out[5..7], t.month() as u32);
    digits(&mut out[8..10], t.day() as u32);
    digits(&mut out[11..13], t.hour() as u32);
    digits(&mut out[14..16], t.minute() as u32);
    digits(&mut out[17..19], t.second() as u32);
    out
}

/// `value` in decimal, zero-padded to fill `out`.
fn digits(out: &mut [u8], mut value: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::WallTimes;
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime};

    fn humantime(ns: u64) -> String {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
        humantime::format_rfc3339_nanos(t).to_string()
    }

    #[test]
    fn known_times() {
        let mut w = WallTimes::default();
        assert_eq!(w.format(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(w.format(-5), "1970-01-01T00:00:00.000000000Z");
        // A leap day, then the next second in the same formatter.
        let leap = 1_709_164_799_123_456_789i128; // 2024-02-28T23:59:59
        assert_eq!(w.format(leap), "2024-02-28T23:59:59.123456789Z");
        assert_eq!(
            w.format(leap + 1_000_000_000),
            "2024-02-29T00:00:00.123456789Z"
        );
    }

    proptest! {
        /// The same text as humantime for any time up to the year 2554
        /// (u64 nanoseconds), whether or not the second was cached.
        #[test]
        fn as_humantime_writes_it(ns in any::<u64>(), step in 0u64..3_000_000_000) {
            let mut w = WallTimes::default();
            prop_assert_eq!(w.format(ns as i128), humantime(ns));
            let next = ns.saturating_add(step);
            prop_assert_eq!(w.format(next as i128), humantime(next));
        }
    }
}
