//! Journald output: the native protocol, one datagram of `FIELD=value`
//! entries per event to /run/systemd/journal/socket, so that alerts are
//! searchable by field (`journalctl GUARDRAIL_RULE=setuid-bit`).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use anyhow::Result;

use super::{priority, severity_name, summary, Delivery, Sink};
use crate::config::OutputSection;
use crate::outputs::Published;
use guardrail_engine::event::{Body, Event};

pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

pub struct Journald {
    path: PathBuf,
    sock: UnixDatagram,
}

impl Journald {
    pub fn new(cfg: &OutputSection) -> Result<Self> {
        Ok(Self {
            path: cfg.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into()),
            sock: UnixDatagram::unbound()?,
        })
    }
}

impl Sink for Journald {
    fn deliver(&mut self, p: &Published, _: &Delivery) -> Result<(), String> {
        let datagram = encode(&fields(&p.event, &p.json));
        // A datagram larger than the socket allows (EMSGSIZE) fails and is
        // counted; events are far below the usual limit (~200 KiB).
        self.sock
            .send_to(&datagram, &self.path)
            .map(drop)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// The journal fields of an event. `GUARDRAIL_EVENT` holds the whole
/// event as JSON, as in the audit log.
pub fn fields(event: &Event, json: &str) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("MESSAGE", summary(event)),
        ("PRIORITY", priority(event).to_string()),
        ("SYSLOG_IDENTIFIER", "guardrail".to_string()),
        ("GUARDRAIL_SEQ", event.seq.to_string()),
        ("GUARDRAIL_KIND", event.body.kind().to_string()),
        ("GUARDRAIL_OP", event.body.op().to_string()),
    ];
    if let Some(d) = &event.decision {
        f.push(("GUARDRAIL_RULE", d.rule.clone()));
        f.push(("GUARDRAIL_OUTCOME", d.outcome.to_string()));
        f.push(("GUARDRAIL_SEVERITY", severity_name(d.severity).into()));
    }
    if let Some(p) = event.body.process() {
        f.push(("GUARDRAIL_PID", p.pid.to_string()));
        f.push(("GUARDRAIL_UID", p.uid.to_string()));
        if let Some(exe) = &p.exe {
            f.push(("GUARDRAIL_EXE", exe.to_string()));
        }
    }
    if let Some(path) = event.body.paths().first() {
        f.push(("GUARDRAIL_PATH", path.to_string()));
    }
    if let Body::Loss { loss } = &event.body {
        f.push(("GUARDRAIL_LOST", loss.count.to_string()));
    }
    f.push(("GUARDRAIL_EVENT", json.to_string()));
    f
}

/// The native protocol: `NAME=value\n`, or, for a value holding a
/// newline, `NAME\n`, its length as 64-bit little-endian, the value, `\n`.
pub fn encode(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}
