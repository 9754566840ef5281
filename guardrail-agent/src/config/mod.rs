//! The agent's configuration file (TOML). Every error names the file, line
//! and column.

pub mod nats;

use std::path::{Path, PathBuf};

use guardrail_engine::redact::RedactionSection;
use guardrail_engine::span::line_column;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/guardrail/guardrail.toml";
pub const DEFAULT_SOCKET: &str = "/run/guardrail/guardrail.sock";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentSection,
    pub capture: CaptureSection,
    pub audit_log: AuditSection,
    pub metrics: MetricsSection,
    pub redaction: RedactionSection,
    /// `[[output]]` tables: where events and alerts go besides the audit
    /// log (docs/outputs.md).
    pub output: Vec<toml::Spanned<OutputSection>>,
    /// `[fleet]`: central rules and status over NATS (docs/fleet.md).
    pub fleet: Option<FleetSection>,
    // The rule tables are validated by `rules::load_rules`.
    #[serde(skip_serializing)]
    pub include: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub window: Option<toml::Value>,
    #[serde(skip_serializing)]
    pub rule: Option<toml::Value>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Control socket for the `guardrail` CLI.
    pub socket: PathBuf,
    /// Members of this group may also use the socket (tail, status, rules
    /// list); without it only root may. No socket command changes rules.
    pub socket_group: Option<String>,
    /// Members of this group administer guardrail: included rules files
    /// and their directories may be writable by it (never the
    /// configuration file itself, which names the group), and it may read
    /// the audit log the agent creates. Without it only root may change
    /// anything the agent trusts (docs/security.md).
    pub admin_group: Option<String>,
    /// Where BPF-LSM is active: no other process (root included) may
    /// signal or trace the agent, except init stopping it, and its
    /// configuration and binaries may not be changed while it runs.
    pub self_protection: bool,
    /// Executables that may still change the configuration and binaries
    /// (package upgrades).
    pub self_protection_exempt: Vec<String>,
}

/// The tamper-evident audit log (docs/audit-log.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub enabled: bool,
    pub path: PathBuf,
    /// Rotate when the file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (audit.jsonl.1 … .N).
    pub max_files: usize,
    /// Also rotate once the current file's first record is this old
    /// ("1d", "12h"); absent: size only.
    pub max_age: Option<String>,
    pub fsync: Fsync,
    /// Records held in memory while the disk refuses writes.
    pub buffer_bytes: usize,
    /// How events write their process: whole in every event, or whole
    /// once per file and version and by reference after (docs/audit-log.md).
    /// Unset: by reference, unless an output reads the log's own lines
    /// (`outputs::log_process_form`).
    pub process: Option<ProcessForm>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/var/log/guardrail/audit.jsonl".into(),
            max_bytes: 100 << 20,
            max_files: 10,
            max_age: None,
            fsync: Default::default(),
            buffer_bytes: 64 << 20,
            process: None,
        }
    }
}

/// The Prometheus endpoint (docs/metrics.md).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address to serve `GET /metrics` on, e.g. "127.0.0.1:9717"; absent:
    /// no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

/// Central rules and status over NATS JetStream (docs/fleet.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// nats:// or tls:// URLs, several separated by commas.
    pub url: String,
    /// Credentials, each read from a root-only file (never logged).
    #[serde(default)]
    pub creds: Option<PathBuf>,
    #[serde(default)]
    pub nkey: Option<PathBuf>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The key-value bucket holding rule sets, one key per group.
    #[serde(default = "default_rules_bucket")]
    pub rules_bucket: String,
    /// This host's group: the key it watches.
    pub rules_key: String,
    /// The key-value bucket where each host puts its status (key: host).
    #[serde(default = "default_status_bucket")]
    pub status_bucket: String,
    /// Status is also published on `<subject_prefix>.<host>.status`.
    #[serde(default = "default_fleet_prefix")]
    pub subject_prefix: String,
    /// Default: the hostname.
    #[serde(default)]
    pub host: Option<String>,
    /// Seconds between two status reports (also sent at once after a
    /// rule set is applied or rejected).
    #[serde(default = "default_status_interval")]
    pub status_interval_s: u64,
}

fn default_rules_bucket() -> String {
    nats::DEFAULT_RULES_BUCKET.into()
}
fn default_status_bucket() -> String {
    nats::DEFAULT_STATUS_BUCKET.into()
}
fn default_fleet_prefix() -> String {
    nats::DEFAULT_PREFIX.into()
}
fn default_status_interval() -> u64 {
    30
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Stdout,
    Syslog,
    Journald,
    Webhook,
    /// NATS JetStream (docs/outputs.md#nats).
    Nats,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Stdout => "stdout",
            OutputKind::Syslog => "syslog",
            OutputKind::Journald => "journald",
            OutputKind::Webhook => "webhook",
            OutputKind::Nats => "nats",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event's JSON object, as in the audit log.
    #[default]
    Json,
    /// `{"text": "…"}`, which Slack (and Mattermost, Rocket.Chat)
    /// incoming webhooks accept.
    Slack,
}

/// One `[[output]]` table. One flat table for every type, so that a key
/// that does not apply to the type is reported rather than ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    #[serde(rename = "type")]
    pub kind: OutputKind,
    /// Shown in `guardrail status`; default: the type, numbered if repeated.
    #[serde(default)]
    pub name: Option<String>,
    /// Only decisions of at least this severity.
    #[serde(default)]
    pub min_severity: Option<guardrail_engine::rules::spec::Severity>,
    /// Only decisions of these rules.
    #[serde(default)]
    pub rules: Option<Vec<String>>,
    /// Only events a rule decided on. Default: false for stdout, true for
    /// the others.
    #[serde(default)]
    pub alerts_only: Option<bool>,
    /// Events waiting for this output; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// syslog, journald: the Unix datagram socket (default /dev/log,
    /// /run/systemd/journal/socket).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// syslog: send UDP to this host:port instead of the socket.
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: facility name (default auth).
    #[serde(default)]
    pub facility: Option<String>,
    /// webhook: http:// or https:// URL. nats: nats:// or tls:// URLs,
    /// several separated by commas.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub format: Option<WebhookFormat>,
    /// webhook: extra request headers (e.g. Authorization).
    #[serde(default)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// webhook: per request (connect, send, and read the answer).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// webhook: further attempts after the first one fails.
    #[serde(default)]
    pub retries: Option<u32>,
    /// webhook: wait before the first retry; doubled for each next one.
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// webhook: the longest wait between attempts.
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    /// nats: subjects are `<subject_prefix>.<host>.<kind>` (default
    /// "guardrail").
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// nats: the JetStream stream (default "GUARDRAIL"), created when
    /// missing, never changed when it exists.
    #[serde(default)]
    pub stream: Option<String>,
    /// nats: this host's name in subjects and records (default: the
    /// hostname, dots replaced by `_`).
    #[serde(default)]
    pub host: Option<String>,
    /// nats: a credentials file (JWT and NKey seed).
    #[serde(default)]
    pub creds: Option<PathBuf>,
    /// nats: a file holding an NKey seed.
    #[serde(default)]
    pub nkey: Option<PathBuf>,
    /// nats: a file holding a token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// nats: where records wait until the server acknowledges them
    /// (default /var/lib/guardrail/spool/<output name>).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// nats: the most the spool may hold on disk (default 1 GiB); more
    /// is dropped, counted and reported.
    #[serde(default)]
    pub spool_bytes: Option<u64>,
    /// nats: replicas of a stream this output creates (default 1).
    #[serde(default)]
    pub replicas: Option<usize>,
    /// nats: how long a stream this output creates keeps records
    /// (default "30d").
    #[serde(default)]
    pub max_age: Option<String>,
}

fn default_queue() -> usize {
    1024
}

/// Syslog facility numbers (RFC 5424, section 6.2.1).
pub fn syslog_facility(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    /// Kernel ring buffer size: a power of two, at least 4096.
    pub ring_buffer_bytes: u32,
    /// How often the agent drains the ring buffer when it was not woken.
    pub drain_interval_ms: u64,
    /// Wake the agent early once this many bytes are waiting (0: on every
    /// event, which costs about 3 µs per syscall instead of 0.4).
    pub wakeup_bytes: u64,
    /// Also capture opens that only read.
    pub read_opens: bool,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            admin_group: None,
            self_protection: true,
            self_protection_exempt: vec!["/usr/bin/dpkg".into()],
        }
    }
}

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 16 << 20,
            drain_interval_ms: 50,
            wakeup_bytes: 1 << 20,
            read_opens: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
}

/// How the audit log writes an event's process (docs/audit-log.md).
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProcessForm {
    /// The whole object in every event.
    Full,
    /// The whole object the first time a file names a process version,
    /// then `{"pid","tid","id","pv"}`: about half the bytes per event.
    Ref,
}

/// When the audit log is flushed to disk.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Leave it to the kernel.
    Never,
    /// At most a second of records at risk (default).
    #[default]
    Interval,
    /// After every record: safest, slowest.
    Always,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_column(text, s.start));
            ConfigError::Parse {
                path: name.clone(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        config.validate(&name)?;
        config.check_redaction(text, &name)?;
        config.check_outputs(text, &name)?;
        if let Some(f) = &config.fleet {
            nats::check_fleet(f).map_err(|message| {
                let at = text.find("[fleet]").unwrap_or(0);
                let (line, column) = line_column(text, at);
                ConfigError::Parse {
                    path: name.clone(),
                    line,
                    column,
                    message: format!("[fleet]: {message}"),
                }
            })?;
        }
        Ok(config)
    }

    /// Keys an output type needs, and keys it does not use.
    fn check_outputs(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        for (i, spanned) in self.output.iter().enumerate() {
            let o = spanned.get_ref();
            let kind = o.kind.name();
            let err = |message: String| {
                let (line, column) = line_column(text, spanned.span().start);
                ConfigError::Parse {
                    path: path.into(),
                    line,
                    column,
                    message: format!("output[{i}] ({kind}): {message}"),
                }
            };
            if o.queue == 0 || o.queue > 1_000_000 {
                return Err(err("queue must be between 1 and 1000000".into()));
            }
            use OutputKind::{Journald, Nats, Syslog, Webhook};
            // Each key, whether it is set, and the types that use it.
            let keys: [(&str, bool, &[OutputKind]); 20] = [
                ("url", o.url.is_some(), &[Webhook, Nats]),
                ("format", o.format.is_some(), &[Webhook]),
                ("headers", o.headers.is_some(), &[Webhook]),
                ("timeout_ms", o.timeout_ms.is_some(), &[Webhook]),
                ("retries", o.retries.is_some(), &[Webhook]),
                ("backoff_ms", o.backoff_ms.is_some(), &[Webhook]),
                ("max_backoff_ms", o.max_backoff_ms.is_some(), &[Webhook]),
                ("socket", o.socket.is_some(), &[Syslog, Journald]),
                ("address", o.address.is_some(), &[Syslog]),
                ("facility", o.facility.is_some(), &[Syslog]),
                ("subject_prefix", o.subject_prefix.is_some(), &[Nats]),
                ("stream", o.stream.is_some(), &[Nats]),
                ("host", o.host.is_some(), &[Nats]),
                ("creds", o.creds.is_some(), &[Nats]),
                ("nkey", o.nkey.is_some(), &[Nats]),
                ("token_file", o.token_file.is_some(), &[Nats]),
                ("spool_dir", o.spool_dir.is_some(), &[Nats]),
                ("spool_bytes", o.spool_bytes.is_some(), &[Nats]),
                ("replicas", o.replicas.is_some(), &[Nats]),
                ("max_age", o.max_age.is_some(), &[Nats]),
            ];
            let unused: Vec<&str> = keys
                .iter()
                .filter(|(_, set, kinds)| *set && !kinds.contains(&o.kind))
                .map(|(k, _, _)| *k)
                .collect();
            if let Some(k) = unused.first() {
                return Err(err(format!("`{k}` does not apply to {kind} outputs")));
            }
            match o.kind {
                OutputKind::Syslog => {
                    if o.socket.is_some() && o.address.is_some() {
                        return Err(err("give `socket` or `address`, not both".into()));
                    }
                    if let Some(a) = &o.address {
                        // Resolved when sending, not here: a name server
                        // that is down must not make the configuration
                        // invalid.
                        let port = a.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                        if !matches!(port, Some(Ok(_))) {
                            return Err(err(format!(
                                "address {a:?} is not host:port (e.g. \"192.0.2.1:514\")"
                            )));
                        }
                    }
                    if let Some(f) = &o.facility {
                        if syslog_facility(f).is_none() {
                            return Err(err(format!("unknown facility {f:?} (kern, user, daemon, auth, syslog, authpriv, local0 … local7)")));
                        }
                    }
                }
                OutputKind::Webhook => {
                    let Some(url) = &o.url else {
                        return Err(err("`url` is required".into()));
                    };
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err(format!(
                            "url {url:?} must start with http:// or https://"
                        )));
                    }
                    if o.timeout_ms == Some(0) {
                        return Err(err("timeout_ms must be at least 1".into()));
                    }
                    for (k, v) in o.headers.iter().flatten() {
                        let token =
                            |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                        if k.is_empty() || !k.chars().all(token) {
                            return Err(err(format!(
                                "header name {k:?} is not a valid HTTP header name"
                            )));
                        }
                        if v.contains(['\r', '\n']) {
                            return Err(err(format!(
                                "header {k:?}: a value may not contain line breaks"
                            )));
                        }
                    }
                }
                OutputKind::Nats => {
                    nats::check_output(o).map_err(err)?;
                }
                OutputKind::Stdout | OutputKind::Journald => {}
            }
        }
        Ok(())
    }

    /// User redaction patterns must compile; errors point at the value.
    fn check_redaction(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        for (i, p) in self.redaction.patterns.iter().enumerate() {
            if let Err(e) =
                guardrail_engine::redact::compile_user(p.name.get_ref(), p.regex.get_ref())
            {
                let (field, span) = match e {
                    guardrail_engine::redact::RedactError::BadName { .. } => {
                        ("name", p.name.span())
                    }
                    _ => ("regex", p.regex.span()),
                };
                let (line, column) = line_column(text, span.start);
                return Err(ConfigError::Parse {
                    path: path.into(),
                    line,
                    column,
                    message: format!("redaction.patterns[{i}].{field}: {e}"),
                });
            }
        }
        Ok(())
    }

    /// Validate again after command-line overrides.
    pub fn validate_path(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let name = path.map_or("command line".into(), |p| p.display().to_string());
        self.validate(&name)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let rb = self.capture.ring_buffer_bytes;
        if rb < 4096 || !rb.is_power_of_two() {
            return Err(ConfigError::Invalid {
                path: path.into(),
                field: "capture.ring_buffer_bytes",
                message: format!("{rb} is not a power of two of at least 4096"),
            });
        }
        if let Some(age) = &self.audit_log.max_age {
            match humantime::parse_duration(age) {
                Ok(d) if d >= std::time::Duration::from_secs(60) => {}
                Ok(_) => {
                    return Err(ConfigError::Invalid {
                        path: path.into(),
                        field: "audit_log.max_age",
                        message: format!("{age:?} is shorter than a minute"),
                    })
                }
                Err(e) => {
                    return Err(ConfigError::Invalid {
                        path: path.into(),
                        field: "audit_log.max_age",
                        message: format!("{age:?} is not a duration like \"1d\" or \"12h\": {e}"),
                    })
                }
            }
        }
        if self.audit_log.max_bytes < 4096 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                field: "audit_log.max_bytes",
                message: "must be at least 4096".into(),
            });
        }
        if self.capture.drain_interval_ms == 0 || self.capture.drain_interval_ms > 10_000 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                field: "capture.drain_interval_ms",
                message: "must be between 1 and 10000".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/g.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_field_is_reported_with_line_and_column() {
        let err = parse("[capture]\nread_opens = true\nring_bufer_bytes = 4096\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/g.toml:3:1: unknown field `ring_bufer_bytes`"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_position() {
        let err = parse("[capture]\nread_opens = \"yes\"\n").unwrap_err();
        assert!(err.to_string().starts_with("/etc/g.toml:2:14:"), "{err}");
    }

    #[test]
    fn redaction_is_on_unless_turned_off() {
        assert!(parse("").unwrap().redaction.enabled);
        assert!(
            !parse("[redaction]\nenabled = false\n")
                .unwrap()
                .redaction
                .enabled
        );
    }

    #[test]
    fn user_redaction_patterns_parse_in_both_table_forms() {
        let inline =
            parse("[redaction]\npatterns = [{ name = \"ticket\", regex = 'tkt_[a-z0-9]{32}' }]\n")
                .unwrap();
        let tables =
            parse("[[redaction.patterns]]\nname = \"ticket\"\nregex = 'tkt_[a-z0-9]{32}'\n")
                .unwrap();
        assert_eq!(inline.redaction, tables.redaction);
        assert_eq!(
            inline.redaction.patterns[0].regex.get_ref(),
            "tkt_[a-z0-9]{32}"
        );
    }

    #[test]
    fn a_bad_redaction_regex_names_its_position_and_field() {
        let err = parse("[redaction]\npatterns = [\n  { name = \"x\", regex = 'tkt_(' },\n]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "/etc/g.toml:3:25: redaction.patterns[0].regex: redaction pattern \"x\":"
            ),
            "{err}"
        );
        let err = parse("[[redaction.patterns]]\nname = \"a b\"\nregex = 'x'\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/g.toml:2:8: redaction.patterns[0].name:"),
            "{err}"
        );
        let err = parse("[[redaction.patterns]]\nname = \"any\"\nregex = 'x*'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("matches the empty string"), "{err}");
    }

    #[test]
    fn outputs_are_checked_for_what_their_type_needs_and_uses() {
        let ok = parse(
            "[[output]]\ntype = \"webhook\"\nurl = \"https://h/x\"\nformat = \"slack\"\nmin_severity = \"high\"\n\n[[output]]\ntype = \"syslog\"\naddress = \"192.0.2.1:514\"\n",
        )
        .unwrap();
        assert_eq!(ok.output.len(), 2);
        let nats = parse(
            "[[output]]\ntype = \"nats\"\nurl = \"nats://a:4222, tls://b:4222\"\nhost = \"web-1\"\ncreds = \"/etc/guardrail/nats.creds\"\nspool_bytes = 1048576\nreplicas = 3\nmax_age = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(nats.output[0].get_ref().replicas, Some(3));
        for (text, want) in [
            (
                "[[output]]\ntype = \"webhook\"\n",
                "/etc/g.toml:1:1: output[0] (webhook): `url` is required",
            ),
            (
                "[[output]]\ntype = \"syslog\"\nurl = \"http://x/\"\n",
                "/etc/g.toml:1:1: output[0] (syslog): `url` does not apply to syslog outputs",
            ),
            (
                "[[output]]\ntype = \"syslog\"\nfacility = \"mail2\"\n",
                "/etc/g.toml:1:1: output[0] (syslog): unknown facility \"mail2\"",
            ),
            (
                "[[output]]\ntype = \"syslog\"\naddress = \"loghost\"\n",
                "/etc/g.toml:1:1: output[0] (syslog): address \"loghost\" is not host:port",
            ),
            (
                "[[output]]\ntype = \"webhook\"\nurl = \"ftp://x/\"\n",
                "/etc/g.toml:1:1: output[0] (webhook): url \"ftp://x/\" must start with",
            ),
            (
                "[[output]]\ntype = \"webhook\"\nurl = \"http://x/\"\nheaders = { \"X Token\" = \"1\" }\n",
                "/etc/g.toml:1:1: output[0] (webhook): header name \"X Token\" is not",
            ),
            (
                "[[output]]\ntype = \"stdout\"\nqueue = 0\n",
                "/etc/g.toml:1:1: output[0] (stdout): queue must be",
            ),
            (
                "[[output]]\ntype = \"pager\"\n",
                "/etc/g.toml:2:8: unknown variant `pager`",
            ),
            (
                "[[output]]\ntype = \"stdout\"\n\n[[output]]\ntype = \"nats\"\n",
                "/etc/g.toml:4:1: output[1] (nats): `url` is required",
            ),
            (
                "[[output]]\ntype = \"nats\"\nurl = \"http://h:4222\"\n",
                "/etc/g.toml:1:1: output[0] (nats): url \"http://h:4222\" must start with nats:// or tls://",
            ),
            (
                "[[output]]\ntype = \"nats\"\nurl = \"nats://h\"\nhost = \"web.example\"\n",
                "/etc/g.toml:1:1: output[0] (nats): host \"web.example\" must be one subject token",
            ),
            (
                "[[output]]\ntype = \"nats\"\nurl = \"nats://h\"\ncreds = \"/a\"\ntoken_file = \"/b\"\n",
                "/etc/g.toml:1:1: output[0] (nats): give one of `creds`, `nkey`, `token_file`",
            ),
            (
                "[[output]]\ntype = \"nats\"\nurl = \"nats://h\"\nspool_bytes = 1000\n",
                "/etc/g.toml:1:1: output[0] (nats): spool_bytes must be at least 1048576",
            ),
            (
                "[[output]]\ntype = \"nats\"\nurl = \"nats://h\"\nspool_dir = \"spool\"\n",
                "/etc/g.toml:1:1: output[0] (nats): spool_dir spool must be absolute",
            ),
            (
                "[[output]]\ntype = \"nats\"\nurl = \"nats://h\"\nformat = \"slack\"\n",
                "/etc/g.toml:1:1: output[0] (nats): `format` does not apply to nats outputs",
            ),
            (
                "[[output]]\ntype = \"webhook\"\nurl = \"http://h/\"\nspool_dir = \"/s\"\n",
                "/etc/g.toml:1:1: output[0] (webhook): `spool_dir` does not apply to webhook outputs",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }

    #[test]
    fn max_age_must_be_a_duration_of_a_minute_or_more() {
        assert!(parse("[audit_log]\nmax_age = \"1d\"\n").is_ok());
        let err = parse("[audit_log]\nmax_age = \"daily\"\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/g.toml: audit_log.max_age: \"daily\" is not a duration"),
            "{err}"
        );
        let err = parse("[audit_log]\nmax_age = \"5s\"\n").unwrap_err();
        assert!(err.to_string().contains("shorter than a minute"), "{err}");
    }

    #[test]
    fn ring_buffer_must_be_a_power_of_two() {
        let err = parse("[capture]\nring_buffer_bytes = 5000\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/g.toml: capture.ring_buffer_bytes: 5000 is not a power of two of at least 4096"
        );
    }
}
