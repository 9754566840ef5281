//! `guardrail log report`: what the audit log holds for a time range,
//! counted per rule, outcome, path prefix, executable, kind and hour.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::event::Body;
use crate::human::escape;
use crate::search::Parsed;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Events counted (`loss` reports and `log_gap` records are counted in
    /// `lost` instead).
    pub events: u64,
    /// Events a rule decided on.
    pub decisions: u64,
    /// Records lost, as `loss` and `log_gap` records say.
    pub lost: u64,
    /// Times of the first and last events counted.
    pub first: Option<String>,
    pub last: Option<String>,
    /// Decisions per rule.
    pub by_rule: BTreeMap<String, u64>,
    /// Decisions per outcome.
    pub by_outcome: BTreeMap<String, u64>,
    /// Events per kind (`exec`, `file.open`, `perm.chmod`, …).
    pub by_kind: BTreeMap<String, u64>,
    /// Events per path prefix, the first two components (`/etc/ssh`);
    /// an event naming two paths under different prefixes counts in both.
    pub by_path_prefix: BTreeMap<String, u64>,
    /// Events per `process.exe` (`[comm]` when unknown).
    pub by_exe: BTreeMap<String, u64>,
    /// Events per hour (UTC), `2026-11-27T10`.
    pub by_hour: BTreeMap<String, u64>,
}

/// The first two components of an absolute path: `/etc/ssh/sshd_config`
/// → `/etc/ssh`, `/etc/passwd` → `/etc/passwd`, `/` → `/`.
pub fn path_prefix(path: &str) -> &str {
    let Some(rest) = path.strip_prefix('/') else {
        return path;
    };
    let mut ends = rest.match_indices('/').map(|(i, _)| i + 1);
    match (ends.next(), ends.next()) {
        (Some(_), Some(second)) => &path[..second],
        _ => path.trim_end_matches('/').max("/"),
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

impl Report {
    pub fn add(&mut self, record: &Parsed) {
        self.lost += record.lost();
        let Parsed::Event(event) = record else {
            return;
        };
        let Some(process) = event.body.process() else {
            return;
        };
        self.events += 1;
        if self.first.is_none() {
            self.first = Some(event.time.clone());
        }
        self.last = Some(event.time.clone());
        if let Some(d) = &event.decision {
            self.decisions += 1;
            bump(&mut self.by_rule, &d.rule);
            bump(&mut self.by_outcome, d.outcome.as_str());
        }
        let kind = match &event.body {
            Body::Exec { .. } => "exec".to_string(),
            body => format!("{}.{}", body.kind(), body.op()),
        };
        bump(&mut self.by_kind, &kind);
        let mut prefixes: Vec<&str> = event.body.paths().into_iter().map(path_prefix).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        for p in prefixes {
            bump(&mut self.by_path_prefix, p);
        }
        match &process.exe {
            Some(exe) => bump(&mut self.by_exe, exe),
            None => bump(&mut self.by_exe, &format!("[{}]", process.comm)),
        }
        // Times are RFC 3339 UTC: the hour is the first 13 characters.
        if let Some(hour) = event.time.get(..13) {
            bump(&mut self.by_hour, hour);
        }
    }

    /// Human tables: each section's `top` largest counts (the hours all,
    /// in order).
    pub fn render(&self, top: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} events, {} decided by a rule, {} records lost",
            self.events, self.decisions, self.lost
        );
        if let (Some(first), Some(last)) = (&self.first, &self.last) {
            let _ = writeln!(s, "from {first} to {last}");
        }
        let sections: [(&str, &BTreeMap<String, u64>); 5] = [
            ("rule", &self.by_rule),
            ("outcome", &self.by_outcome),
            ("kind", &self.by_kind),
            ("path prefix", &self.by_path_prefix),
            ("executable", &self.by_exe),
        ];
        for (title, map) in sections {
            if map.is_empty() {
                continue;
            }
            let mut rows: Vec<(&String, &u64)> = map.iter().collect();
            // Largest first; equal counts by name, for a stable table.
            rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(s, "\n{:>10}  {title}", "count");
            for (key, n) in rows.iter().take(top) {
                let _ = writeln!(s, "{n:>10}  {}", escape(key));
            }
            if rows.len() > top {
                let rest: u64 = rows[top..].iter().map(|(_, n)| **n).sum();
                let _ = writeln!(s, "{rest:>10}  … {} more", rows.len() - top);
            }
        }
        if !self.by_hour.is_empty() {
            let _ = writeln!(s, "\n{:>10}  hour (UTC)", "count");
            for (hour, n) in &self.by_hour {
                let _ = writeln!(s, "{n:>10}  {hour}:00");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::testlog::*;

    #[test]
    fn path_prefixes_are_two_components() {
        assert_eq!(path_prefix("/etc/ssh/sshd_config"), "/etc/ssh");
        assert_eq!(path_prefix("/etc/ssh/"), "/etc/ssh");
        assert_eq!(path_prefix("/etc/passwd"), "/etc/passwd");
        assert_eq!(path_prefix("/etc/"), "/etc");
        assert_eq!(path_prefix("/"), "/");
        assert_eq!(path_prefix("relative/x/y"), "relative/x/y");
    }

    #[test]
    fn counts_per_rule_outcome_prefix_exe_and_hour() {
        let mut report = Report::default();
        // 8000 s: a little over two hours.
        for e in sample(8000) {
            report.add(&Parsed::Event(Box::new(e)));
        }
        report.add(&Parsed::Gap {
            time: humantime_like(time_of(8000)),
            lost: 3,
        });
        assert_eq!((report.events, report.lost), (8000, 3));
        assert_eq!(report.by_rule["ssh-config"], 1000);
        assert_eq!(report.by_rule["world-writable"], 667);
        assert_eq!(report.decisions, 1667);
        assert_eq!(report.by_outcome["alerted"], 1000);
        assert_eq!(report.by_outcome["denied"], 667);
        assert_eq!(report.by_kind["file.open"], 2000);
        assert_eq!(report.by_kind["file.rename"], 2000);
        assert_eq!(report.by_kind["exec"], 2000);
        // The sshd_config writes and the renames (two paths, one prefix).
        assert_eq!(report.by_path_prefix["/etc/ssh"], 2000);
        assert_eq!(report.by_path_prefix["/etc/sudoers"], 2000);
        assert_eq!(report.by_path_prefix["/etc/sudoers.tmp"], 2000);
        assert_eq!(report.by_path_prefix["/tmp/work"], 2000);
        assert_eq!(report.by_exe["/usr/sbin/visudo"], 2000);
        assert_eq!(
            report.by_hour.iter().collect::<Vec<_>>(),
            [
                (&"2026-11-20T00".to_string(), &3600),
                (&"2026-11-20T01".to_string(), &3600),
                (&"2026-11-20T02".to_string(), &800)
            ]
        );
        let text = report.render(2);
        assert!(text.starts_with("8000 events, 1667 decided by a rule, 3 records lost\n"));
        assert!(
            text.contains(
                "\n     count  rule\n      1000  ssh-config\n       667  world-writable\n"
            ),
            "{text}"
        );
        assert!(text.contains("      4000  … 2 more\n"), "{text}");
        assert!(text.contains("       800  2026-11-20T02:00\n"), "{text}");
    }
}
