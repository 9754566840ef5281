//! The compact one-line-per-event form of `guardrail tail` and `--print human`.

use std::fmt::Write;

use crate::event::{Body, Event};

/// Make untrusted text safe for a terminal: control characters (newlines,
/// escape sequences) are shown escaped, never interpreted.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn line(event: &Event, colour: bool) -> String {
    let time = event.time.get(11..23).unwrap_or(&event.time);
    let body = &event.body;
    let (paint, reset) = match (colour, body.kind()) {
        (false, _) => ("", ""),
        (true, "exec") => ("\x1b[36m", "\x1b[0m"),
        (true, "file") => ("\x1b[33m", "\x1b[0m"),
        (true, "perm") => ("\x1b[35m", "\x1b[0m"),
        (true, _) => ("\x1b[31;1m", "\x1b[0m"),
    };
    let mut s = format!("{time} {paint}{:<4} {:<8}{reset}", body.kind(), body.op());
    if let Some(p) = body.process().filter(|p| p.unjoined) {
        // Named by reference, its definition not read: nothing but its
        // ids is known.
        let _ = write!(
            s,
            " pid={} process {} v{} (not joined: its definition was not read)",
            p.pid,
            escape(p.id.as_deref().unwrap_or("?")),
            p.pv.unwrap_or(0)
        );
    } else if let Some(p) = body.process() {
        let _ = write!(
            s,
            " pid={} uid={} {}",
            p.pid,
            p.uid,
            escape(p.exe.as_deref().unwrap_or(&p.comm))
        );
        if let Some(tty) = &p.tty {
            let _ = write!(s, " tty={}", escape(tty));
        }
        // Where it comes from, oldest first: `(sshd → bash → curl)`.
        if !p.ancestors.is_empty() {
            let _ = write!(s, " ({})", escape(&crate::rules::eval::lineage(p)));
        }
    }
    match body {
        Body::Exec { exec, .. } => {
            let argv: Vec<String> = exec.argv.iter().map(|a| escape(a)).collect();
            let _ = write!(s, " → {} [{}]", escape(&exec.path), argv.join(" "));
        }
        Body::File { file, .. } => {
            let _ = write!(s, " {}", escape(file.path.as_deref().unwrap_or("?")));
            if let Some(n) = &file.new_path {
                let _ = write!(s, " → {}", escape(n));
            }
            if !file.flags.is_empty() {
                let _ = write!(s, " ({})", file.flags.join(","));
            }
            if let Some(m) = &file.mount {
                if let Some(source) = &m.source {
                    let _ = write!(s, " from {}", escape(source));
                }
                if let Some(t) = &m.fstype {
                    let _ = write!(s, " type={}", escape(t));
                }
                if !m.flags.is_empty() {
                    let _ = write!(s, " ({})", m.flags.join(","));
                }
            }
        }
        Body::Perm { perm, .. } => {
            if let Some(p) = &perm.path {
                let _ = write!(s, " {}", escape(p));
            }
            if let Some(m) = &perm.mode {
                let _ = write!(s, " mode={m}");
            }
            if let Some(o) = &perm.owner {
                let id = |v: Option<u32>| v.map_or("-".into(), |v| v.to_string());
                let _ = write!(s, " owner={}:{}", id(o.uid), id(o.gid));
            }
            if let Some(ids) = &perm.ids {
                let _ = write!(
                    s,
                    " uid {}→{} euid {}→{}",
                    ids.old.uid, ids.new.uid, ids.old.euid, ids.new.euid
                );
            }
            if let Some(c) = &perm.caps {
                let _ = write!(s, " effective={}", c.effective.join(","));
            }
            if let Some(x) = &perm.xattr {
                let _ = write!(s, " {}", escape(&x.name));
                if let Some(c) = &x.file_caps {
                    let _ = write!(s, " caps={}", c.permitted.join(","));
                }
            }
        }
        Body::Uring { uring, .. } => {
            if let (Some(fd), Some(entries)) = (uring.fd, uring.sq_entries) {
                let _ = write!(s, " fd={fd} entries={entries}");
            }
            if let Some(r) = &uring.register {
                let _ = write!(s, " {} files={} buffers={}", r.opcode, r.files, r.buffers);
            }
            if !uring.flags.is_empty() {
                let _ = write!(s, " ({})", uring.flags.join(","));
            }
        }
        Body::Loss { loss } => {
            let _ = write!(s, " {} records lost ({} total)", loss.count, loss.total);
        }
    }
    if let Some(r) = body.result() {
        if let Some(e) = &r.errno {
            let _ = write!(s, " = {e}");
        }
    }
    if let Some(d) = &event.decision {
        let (on, off) = if colour {
            ("\x1b[1;31m", "\x1b[0m")
        } else {
            ("", "")
        };
        let _ = write!(s, "  {on}[{} {}]{off}", d.rule, d.outcome);
        if let Some(f) = &d.fallback {
            let _ = write!(s, " (fallback: {f})");
        }
    }
    s
}

/// A `log_gap` record of the audit log, in the form of [`line`].
pub fn gap_line(time: &str, lost: u64, colour: bool) -> String {
    let short = time.get(11..23).unwrap_or(time);
    let (on, off) = if colour {
        ("\x1b[31;1m", "\x1b[0m")
    } else {
        ("", "")
    };
    format!("{short} {on}gap  log_gap{off}  {lost} records lost: the audit log could not keep them")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Ancestor, FileDetails, Process, SyscallResult};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\nb\x1b[31mc"), "a\\nb\\u{1b}[31mc");
    }

    #[test]
    fn a_line_shows_the_lineage_oldest_first() {
        let ancestor = |pid, exe: &str| Ancestor {
            pid,
            id: None,
            exe: Some(exe.into()),
            script: None,
        };
        let event = Event {
            seq: 1,
            time: "2026-12-01T12:00:00.123456789Z".into(),
            ktime_ns: 0,
            via: None,
            body: Body::File {
                syscall: "openat".into(),
                process: Process {
                    pid: 7,
                    exe: Some("/usr/bin/curl".into()),
                    ancestors: vec![ancestor(6, "/usr/bin/bash"), ancestor(5, "/usr/sbin/sshd")]
                        .into(),
                    ..Default::default()
                },
                result: SyscallResult::default(),
                file: FileDetails {
                    op: "open".into(),
                    path: Some("/tmp/x".into()),
                    ..Default::default()
                },
            },
            decision: None,
            redacted: vec![],
        };
        assert_eq!(
            line(&event, false),
            "12:00:00.123 file open     pid=7 uid=0 /usr/bin/curl (sshd → bash → curl) /tmp/x"
        );
    }
}
