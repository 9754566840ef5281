//! Checks of the NATS settings, `[fleet]` and `[[output]] type = "nats"`,
//! that need no server: addresses, subject tokens, bucket names and the
//! choice of credentials. The config file's parser places their messages
//! at the line and column of the section.

use super::{FleetSection, OutputSection};

pub const DEFAULT_RULES_BUCKET: &str = "guardrail-rules";

pub const DEFAULT_STATUS_BUCKET: &str = "guardrail-status";

/// Not the events' `guardrail`: the NATS output's stream takes
/// `guardrail.>`, and a status report is not part of a host's chain.
pub const DEFAULT_PREFIX: &str = "guardrail-fleet";

/// A NATS subject token: no dots, wildcards or white space.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && !s.contains(['.', '*', '>']) && !s.contains(char::is_whitespace)
}

/// A bucket name or key as JetStream accepts them.
pub fn is_kv_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks of `[fleet]` that need no server; config.rs places the message.
pub fn check_fleet(f: &FleetSection) -> Result<(), String> {
    check_urls(&f.url)?;
    for (what, name) in [
        ("rules_bucket", &f.rules_bucket),
        ("status_bucket", &f.status_bucket),
        ("rules_key", &f.rules_key),
    ] {
        if !is_kv_name(name) {
            return Err(format!(
                "{what} {name:?} may hold only letters, digits, `-` and `_`"
            ));
        }
    }
    if !f.subject_prefix.split('.').all(is_token) {
        return Err(format!(
            "subject_prefix {:?} must be dot-separated tokens without wildcards or spaces",
            f.subject_prefix
        ));
    }
    if let Some(h) = &f.host {
        if !is_token(h) {
            return Err(format!(
                "host {h:?} must be one subject token (no dots, wildcards or spaces)"
            ));
        }
    }
    let auth = [&f.creds, &f.nkey, &f.token_file];
    if auth.iter().filter(|a| a.is_some()).count() > 1 {
        return Err("give one of `creds`, `nkey`, `token_file`".into());
    }
    if !(1..=3600).contains(&f.status_interval_s) {
        return Err("status_interval_s must be between 1 and 3600".into());
    }
    Ok(())
}

pub fn check_urls(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .map(|u| {
            if !(u.starts_with("nats://") || u.starts_with("tls://")) {
                return Err(format!("url {u:?} must start with nats:// or tls://"));
            }
            let addr: async_nats::ServerAddr = u
                .parse()
                .map_err(|_| format!("url {u:?} is not a valid server address"))?;
            if addr.has_user_pass() {
                return Err(format!(
                    "url {}: credentials in a URL end up in logs and process listings; \
                     put them in a root-only file (creds, nkey or token_file)",
                    shown(std::slice::from_ref(&addr))
                ));
            }
            Ok(addr)
        })
        .collect()
}

/// Checks of the configuration that need no server; the message is
/// placed by config.rs.
pub fn check_output(o: &OutputSection) -> Result<(), String> {
    let Some(url) = &o.url else {
        return Err("`url` is required".into());
    };
    for u in url.split(',').map(str::trim) {
        if !(u.starts_with("nats://") || u.starts_with("tls://")) {
            return Err(format!("url {u:?} must start with nats:// or tls://"));
        }
        if u.parse::<async_nats::ServerAddr>().is_err() {
            return Err(format!("url {u:?} is not a valid server address"));
        }
    }
    if let Some(p) = &o.subject_prefix {
        if !p.split('.').all(is_token) {
            return Err(format!(
                "subject_prefix {p:?} must be dot-separated tokens without wildcards or spaces"
            ));
        }
    }
    if let Some(h) = &o.host {
        if !is_token(h) {
            return Err(format!(
                "host {h:?} must be one subject token (no dots, wildcards or spaces)"
            ));
        }
    }
    if let Some(s) = &o.stream {
        if !is_token(s) || s.contains(['/', '\\']) {
            return Err(format!("stream {s:?} is not a valid stream name"));
        }
    }
    let auth = [&o.creds, &o.nkey, &o.token_file];
    if auth.iter().filter(|a| a.is_some()).count() > 1 {
        return Err("give one of `creds`, `nkey`, `token_file`".into());
    }
    if let Some(d) = &o.spool_dir {
        if !d.is_absolute() {
            return Err(format!("spool_dir {} must be absolute", d.display()));
        }
    }
    if o.spool_bytes.is_some_and(|b| b < 1 << 20) {
        return Err("spool_bytes must be at least 1048576 (1 MiB)".into());
    }
    if o.replicas.is_some_and(|r| !(1..=5).contains(&r)) {
        return Err("replicas must be between 1 and 5".into());
    }
    if let Some(a) = &o.max_age {
        humantime::parse_duration(a)
            .map_err(|e| format!("max_age {a:?} is not a duration like \"30d\": {e}"))?;
    }
    Ok(())
}

/// Server addresses without any credentials in them.
pub fn shown(urls: &[async_nats::ServerAddr]) -> String {
    urls.iter()
        .map(|u| {
            let u = u.clone().into_inner();
            format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().unwrap_or(4222)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}
