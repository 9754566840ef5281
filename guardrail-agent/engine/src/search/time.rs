//! Times as `--since` and `--until` take them: an instant (RFC 3339), a
//! day (UTC midnight), or an age counted back from now (`30m`, `2h`,
//! `7d`, `1h30m`).

use jiff::{SignedDuration, Timestamp};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("{0:?} is not a time: give RFC 3339 (2026-11-27T10:00:00Z), a UTC day (2026-11-27) or an age such as 30m, 2h, 7d, 1h30m")]
    Unrecognised(String),
    #[error("{0:?} has no time zone: add Z (UTC) or an offset, e.g. {0}Z")]
    NoZone(String),
    #[error("{0:?} is too far back")]
    TooFar(String),
}

/// Seconds in one unit of an age.
fn unit(c: char) -> Option<i64> {
    Some(match c {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    })
}

/// `2h`, `90m`, `1h30m`: the total in seconds; None if `s` is not an age.
fn age(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            let n: i64 = digits.parse().ok()?;
            total = total.checked_add(n.checked_mul(unit(c)?)?)?;
            digits.clear();
        }
    }
    // A bare number is ambiguous (seconds? minutes?): refused.
    (digits.is_empty() && !s.is_empty()).then_some(total)
}

/// The instant `s` names, ages counted back from `now`.
pub fn parse(s: &str, now: Timestamp) -> Result<Timestamp, TimeError> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(secs) = age(s) {
        return now
            .checked_sub(SignedDuration::from_secs(secs))
            .map_err(|_| TimeError::TooFar(s.into()));
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    // A day alone is taken as UTC; a time of day without a zone is
    // ambiguous (the host's zone? UTC, like the log?) and refused.
    if s.len() > 10 && s.parse::<jiff::civil::DateTime>().is_ok() {
        return Err(TimeError::NoZone(s.into()));
    }
    if let Ok(day) = s.parse::<jiff::civil::Date>() {
        if let Ok(t) = day.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(t.timestamp());
        }
    }
    Err(TimeError::Unrecognised(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(parse("2h", now()), Ok(at("2026-11-27T10:00:00Z")));
        assert_eq!(parse("30m", now()), Ok(at("2026-11-27T11:30:00Z")));
        assert_eq!(parse("7d", now()), Ok(at("2026-11-20T12:00:00Z")));
        assert_eq!(parse("1w", now()), Ok(at("2026-11-20T12:00:00Z")));
        assert_eq!(parse("1h30m", now()), Ok(at("2026-11-27T10:30:00Z")));
        assert_eq!(parse("45s", now()), Ok(at("2026-11-27T11:59:15Z")));
        assert_eq!(parse("now", now()), Ok(now()));
    }

    #[test]
    fn instants_and_days() {
        assert_eq!(
            parse("2026-11-01T08:15:00Z", now()),
            Ok(at("2026-11-01T08:15:00Z"))
        );
        assert_eq!(
            parse("2026-11-01T09:15:00+01:00", now()),
            Ok(at("2026-11-01T08:15:00Z"))
        );
        assert_eq!(parse("2026-11-01", now()), Ok(at("2026-11-01T00:00:00Z")));
    }

    #[test]
    fn what_is_not_a_time_says_what_is() {
        for bad in ["", "5", "2x", "h", "2h-", "yesterday", "2026-13-01"] {
            let e = parse(bad, now()).unwrap_err();
            assert!(e.to_string().contains("RFC 3339"), "{bad}: {e}");
        }
        assert_eq!(
            parse("2026-11-01T08:15:00", now()),
            Err(TimeError::NoZone("2026-11-01T08:15:00".into()))
        );
        assert!(matches!(
            parse("99999999999d", now()),
            Err(TimeError::TooFar(_) | TimeError::Unrecognised(_))
        ));
    }
}
