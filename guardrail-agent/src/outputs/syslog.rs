//! Syslog output: RFC 5424 messages to a local datagram socket (/dev/log)
//! or to a UDP address.

use std::fmt::Write;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use anyhow::Result;

use super::{priority, severity_name, summary, Delivery, Sink};
use crate::config::{syslog_facility, OutputSection};
use crate::outputs::Published;
use guardrail_engine::event::{Body, Event};

pub const DEFAULT_SOCKET: &str = "/dev/log";
/// Facility `auth` (4): security and authorisation messages.
pub const DEFAULT_FACILITY: u8 = 4;
/// The structured-data id: RFC 5612's enterprise number for documentation
/// until guardrail has one of its own; collectors key on the name.
pub const SD_ID: &str = "guardrail@32473";

enum Target {
    Unix(PathBuf, UnixDatagram),
    Udp(String),
}

pub struct Syslog {
    target: Target,
    facility: u8,
    hostname: String,
    pid: u32,
}

impl Syslog {
    pub fn new(cfg: &OutputSection, hostname: String) -> Result<Self> {
        let target = match &cfg.address {
            Some(a) => Target::Udp(a.clone()),
            None => Target::Unix(
                cfg.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into()),
                UnixDatagram::unbound()?,
            ),
        };
        Ok(Self {
            target,
            facility: cfg
                .facility
                .as_deref()
                .and_then(syslog_facility)
                .unwrap_or(DEFAULT_FACILITY),
            hostname,
            pid: std::process::id(),
        })
    }
}

impl Sink for Syslog {
    fn deliver(&mut self, p: &Published, _: &Delivery) -> Result<(), String> {
        let msg = format(&p.event, self.facility, &self.hostname, self.pid);
        match &self.target {
            Target::Unix(path, sock) => sock
                .send_to(msg.as_bytes(), path)
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
            Target::Udp(addr) => {
                let to = addr
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("{addr}: cannot resolve"))?;
                let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                UdpSocket::bind(bind)
                    .and_then(|s| s.send_to(msg.as_bytes(), to))
                    .map(drop)
                    .map_err(|e| format!("{addr}: {e}"))
            }
        }
    }
}

/// PARAM-VALUE escaping (RFC 5424, section 6.3.3).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Printable US-ASCII without spaces, at most `max` characters, or "-".
fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// RFC 5424 allows at most six fractional digits.
fn timestamp(time: &str) -> String {
    match (time.find('.'), time.strip_suffix('Z')) {
        (Some(dot), Some(no_z)) => {
            let frac = &no_z[dot + 1..];
            format!("{}.{}Z", &time[..dot], &frac[..frac.len().min(6)])
        }
        _ => time.to_string(),
    }
}

/// One RFC 5424 message: header, a `guardrail@…` structured-data element
/// with the fields collectors filter on, and the summary as MSG.
pub fn format(event: &Event, facility: u8, hostname: &str, pid: u32) -> String {
    let pri = u32::from(facility) * 8 + u32::from(priority(event));
    let msgid = if event.decision.is_some() {
        "alert"
    } else {
        event.body.kind()
    };
    let mut sd = format!(
        "[{SD_ID} seq=\"{}\" kind=\"{}\"",
        event.seq,
        event.body.kind()
    );
    let mut param = |k: &str, v: &str| {
        let _ = write!(sd, " {k}=\"{}\"", escape(v));
    };
    param("op", event.body.op());
    if let Some(d) = &event.decision {
        param("rule", &d.rule);
        param("outcome", d.outcome.as_str());
        param("severity", severity_name(d.severity));
    }
    if let Some(p) = event.body.process() {
        param("pid", &p.pid.to_string());
        param("uid", &p.uid.to_string());
        if let Some(exe) = &p.exe {
            param("exe", exe);
        }
    }
    if let Some(path) = event.body.paths().first() {
        param("path", path);
    }
    if let Body::Loss { loss } = &event.body {
        param("lost", &loss.count.to_string());
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} guardrail {pid} {msgid} {sd} {}",
        timestamp(&event.time),
        header_field(hostname, 255),
        summary(event)
    )
}
