//! Time windows: recurring intervals of local wall-clock time in a time
//! zone, e.g. "Saturday and Sunday, 02:00–04:00 Europe/Berlin".
//!
//! A window is active at instant `t` when `t`'s local time in the window's
//! zone is in `[start, end)` on one of its days. When `end` is not after
//! `start` the window runs past midnight and belongs to the day it starts
//! on. Local time is what counts, so on the day daylight saving starts a
//! window inside the skipped hour does not happen, and when it ends a
//! window inside the repeated hour is active during both passes.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Clone, Debug)]
pub struct Window {
    pub name: String,
    /// Days the window starts on (all seven when the rule gave none).
    pub days: Vec<Weekday>,
    pub start: Time,
    pub end: Time,
    pub tz: TimeZone,
    pub tz_name: String,
}

pub fn parse_day(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

/// "HH:MM" (24 h), "24:00" meaning the end of the day is not accepted:
/// use "00:00" as an end to run until midnight.
pub fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

pub const ALL_DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

impl Window {
    fn crosses_midnight(&self) -> bool {
        self.end <= self.start
    }

    pub fn is_active(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let (day, time) = (local.weekday(), local.time());
        if self.crosses_midnight() {
            (self.days.contains(&day) && time >= self.start)
                || (self.days.contains(&day.previous()) && time < self.end)
        } else {
            self.days.contains(&day) && time >= self.start && time < self.end
        }
    }

    /// The next instant after `after` at which the window opens or closes
    /// (within the coming eight days), so the agent can flip state on time
    /// instead of polling.
    pub fn next_change(&self, after: Timestamp) -> Option<Timestamp> {
        let today = after.to_zoned(self.tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        for offset in -1..=8i64 {
            let Ok(date) = today.checked_add(offset.days()) else {
                continue;
            };
            if !self.days.contains(&date.weekday()) {
                continue;
            }
            let end_date = if self.crosses_midnight() {
                date.tomorrow().ok()
            } else {
                Some(date)
            };
            let edges = [
                Some(date.to_datetime(self.start)),
                end_date.map(|d| d.to_datetime(self.end)),
            ];
            for edge in edges.into_iter().flatten() {
                if let Ok(z) = edge.to_zoned(self.tz.clone()) {
                    let ts = z.timestamp();
                    if ts > after && best.is_none_or(|b| ts < b) {
                        best = Some(ts);
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[&str], start: &str, end: &str, tz: &str) -> Window {
        Window {
            name: "w".into(),
            days: if days.is_empty() {
                ALL_DAYS.to_vec()
            } else {
                days.iter().map(|d| parse_day(d).unwrap()).collect()
            },
            start: parse_time(start).unwrap(),
            end: parse_time(end).unwrap(),
            tz: TimeZone::get(tz).unwrap(),
            tz_name: tz.into(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn start_is_inclusive_end_exclusive() {
        // 2026-11-28 is a Saturday.
        let w = window(&["sat", "sun"], "02:00", "04:00", "UTC");
        assert!(!w.is_active(at("2026-11-28T01:59:59Z")));
        assert!(w.is_active(at("2026-11-28T02:00:00Z")));
        assert!(w.is_active(at("2026-11-28T03:59:59Z")));
        assert!(!w.is_active(at("2026-11-28T04:00:00Z")));
        assert!(!w.is_active(at("2026-11-27T02:30:00Z")), "a Friday");
    }

    #[test]
    fn midnight_crossing_window_belongs_to_its_start_day() {
        let w = window(&["fri"], "22:00", "02:00", "UTC");
        assert!(w.is_active(at("2026-11-27T23:00:00Z")), "Friday night");
        assert!(w.is_active(at("2026-11-28T01:59:00Z")), "early Saturday");
        assert!(!w.is_active(at("2026-11-28T02:00:00Z")));
        assert!(
            !w.is_active(at("2026-11-28T23:00:00Z")),
            "Saturday night is not Friday's"
        );
    }

    #[test]
    fn local_time_of_the_zone_counts() {
        // 02:00–04:00 Berlin is 01:00–03:00 UTC in winter.
        let w = window(&[], "02:00", "04:00", "Europe/Berlin");
        assert!(w.is_active(at("2026-11-28T01:30:00Z")));
        assert!(!w.is_active(at("2026-11-28T03:30:00Z")));
    }

    #[test]
    fn daylight_saving_changes() {
        // Berlin, 2026-03-29: 02:00 → 03:00, the 02:00–02:30 window never happens.
        let w = window(&["sun"], "02:00", "02:30", "Europe/Berlin");
        assert!(!w.is_active(at("2026-03-29T00:59:59Z")));
        assert!(!w.is_active(at("2026-03-29T01:00:00Z")), "03:00 local");
        // 2026-10-25: 03:00 → 02:00, 02:00–02:30 local happens twice.
        assert!(
            w.is_active(at("2026-10-25T00:15:00Z")),
            "first 02:15 (CEST)"
        );
        assert!(
            w.is_active(at("2026-10-25T01:15:00Z")),
            "second 02:15 (CET)"
        );
        assert!(!w.is_active(at("2026-10-25T01:45:00Z")));
    }

    #[test]
    fn next_change_is_the_next_edge() {
        let w = window(&["sat"], "02:00", "04:00", "UTC");
        assert_eq!(
            w.next_change(at("2026-11-27T12:00:00Z")),
            Some(at("2026-11-28T02:00:00Z"))
        );
        assert_eq!(
            w.next_change(at("2026-11-28T02:00:00Z")),
            Some(at("2026-11-28T04:00:00Z"))
        );
        assert_eq!(
            w.next_change(at("2026-11-28T05:00:00Z")),
            Some(at("2026-12-05T02:00:00Z"))
        );
    }
}

/// Which of `windows` are active at `at` (bit i: window i), and when that
/// next changes. The agent sleeps until then and updates the kernel, so a
/// window opens and closes on time rather than at the next poll.
pub fn schedule(windows: &[Window], at: Timestamp) -> (u32, Option<Timestamp>) {
    let mut active = 0u32;
    let mut next: Option<Timestamp> = None;
    for (i, w) in windows.iter().enumerate().take(32) {
        if w.is_active(at) {
            active |= 1 << i;
        }
        if let Some(t) = w.next_change(at) {
            next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        }
    }
    (active, next)
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn schedule_reports_active_windows_and_the_next_edge() {
        let mk = |start: &str, end: &str| Window {
            name: "w".into(),
            days: ALL_DAYS.to_vec(),
            start: parse_time(start).unwrap(),
            end: parse_time(end).unwrap(),
            tz: TimeZone::UTC,
            tz_name: "UTC".into(),
        };
        let windows = [mk("10:00", "12:00"), mk("13:00", "14:00")];
        let at: Timestamp = "2026-11-27T11:00:00Z".parse().unwrap();
        let (active, next) = schedule(&windows, at);
        assert_eq!(active, 0b01);
        assert_eq!(next, Some("2026-11-27T12:00:00Z".parse().unwrap()));
        // Exactly at the edge the state has already changed.
        let (active, next) = schedule(&windows, next.unwrap());
        assert_eq!(active, 0b00);
        assert_eq!(next, Some("2026-11-27T13:00:00Z".parse().unwrap()));
    }
}
