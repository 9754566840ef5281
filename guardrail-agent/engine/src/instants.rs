//! Recorded times read back at replay's pace. Replay evaluates every event
//! at its own time (windows), and parsing an RFC 3339 time in full was a
//! twentieth of replay. Events come in time order, many per second: the
//! whole seconds are parsed once per second, the fraction added.

use jiff::{SignedDuration, Timestamp};

/// A reader of the `time` members the agent writes, remembering the last
/// whole second it parsed.
#[derive(Debug, Default)]
pub struct Instants {
    /// `YYYY-MM-DDTHH:MM:SS` of the last second parsed, and that instant.
    last: Option<([u8; SECOND], Timestamp)>,
}

/// Bytes of `YYYY-MM-DDTHH:MM:SS`.
const SECOND: usize = 19;

impl Instants {
    /// The instant `text` names, exactly as `text.parse::<Timestamp>()`
    /// reads it.
    pub fn of(&mut self, text: &str) -> Option<Timestamp> {
        let Some(nanos) = fraction_of_written(text.as_bytes()) else {
            // Any other form (an offset, a leap second, a comma): the
            // parser decides.
            return text.parse().ok();
        };
        let second: [u8; SECOND] = text.as_bytes()[..SECOND].try_into().ok()?;
        let base = match self.last {
            Some((known, at)) if known == second => at,
            _ => {
                let at: Timestamp = format!("{}Z", &text[..SECOND]).parse().ok()?;
                self.last = Some((second, at));
                at
            }
        };
        base.checked_add(SignedDuration::from_nanos(nanos)).ok()
    }
}

/// For a time in the form the agent writes —
/// `YYYY-MM-DDTHH:MM:SS[.F…]Z`, seconds below 60, 1 to 9 fraction
/// digits — the fraction in nanoseconds; none for any other text.
fn fraction_of_written(b: &[u8]) -> Option<i64> {
    const DIGIT: u8 = b'0';
    const SHAPE: &[u8; SECOND] = b"0000-00-00T00:00:00";
    if b.len() < SECOND + 1 || *b.last()? != b'Z' {
        return None;
    }
    for (&c, &want) in b[..SECOND].iter().zip(SHAPE) {
        let fits = if want == DIGIT {
            c.is_ascii_digit()
        } else {
            c == want
        };
        if !fits {
            return None;
        }
    }
    if b[17] > b'5' {
        return None;
    }
    let rest = &b[SECOND..b.len() - 1];
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix(b".")?;
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - DIGIT));
    Some(value * 10i64.pow(9 - digits.len() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn written_times_read_as_the_parser_reads_them() {
        let mut instants = Instants::default();
        for text in [
            "2026-11-27T12:00:00.000000000Z",
            "2026-11-27T12:00:00.5Z",
            "2026-11-27T12:00:01Z",
            "2026-11-27T12:00:01.123456789Z",
            "2026-11-27T12:00:01.000000001Z",
            "2024-02-29T23:59:59.999999999Z",
            "2026-11-27T12:00:60Z",
            "2026-02-30T12:00:00Z",
            "2026-11-27T12:00:00+01:00",
            "2026-11-27T12:00:00,5Z",
            "2026-11-27T12:00:00.Z",
            "2026-11-27T12:00:00.1234567890Z",
            "2026-11-27 12:00:00Z",
            "2026-11-27T12:00:00z",
            "9999-12-30T22:00:00.999999999Z",
            "9999-12-31T23:59:59Z",
            "",
            "Z",
        ] {
            assert_eq!(instants.of(text), text.parse().ok(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_time_reads_as_the_parser_reads_it(
            texts in proptest::collection::vec(
                r"[0-9]{4}-[0-1][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\.[0-9]{0,10})?[Zz]?",
                1..20,
            )
        ) {
            let mut instants = Instants::default();
            for text in &texts {
                prop_assert_eq!(instants.of(text), text.parse().ok(), "{}", text);
            }
        }

        #[test]
        fn times_within_one_second_read_as_the_parser_reads_them(
            second in r"[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]",
            fractions in proptest::collection::vec(r"(\.[0-9]{0,10})?Z?", 1..20),
        ) {
            let mut instants = Instants::default();
            for fraction in &fractions {
                let text = format!("{second}{fraction}");
                prop_assert_eq!(instants.of(&text), text.parse().ok(), "{}", text);
            }
        }
    }
}
