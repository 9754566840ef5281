//! The agent's configuration file (TOML). Every error names the file, line
//! and column.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/guardrail/guardrail.toml";
pub const DEFAULT_SOCKET: &str = "/run/guardrail/guardrail.sock";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentSection,
    pub capture: CaptureSection,
    pub audit_log: AuditSection,
    pub redaction: RedactionSection,
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
    pub fsync: crate::audit::writer::Fsync,
    /// Records held in memory while the disk refuses writes.
    pub buffer_bytes: usize,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/var/log/guardrail/audit.jsonl".into(),
            max_bytes: 100 << 20,
            max_files: 10,
            fsync: Default::default(),
            buffer_bytes: 64 << 20,
        }
    }
}

/// Secret redaction before events leave the agent (docs/audit-log.md).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionSection {
    /// Turning redaction off has to be said: secrets then reach the log,
    /// tail clients and every output.
    pub enabled: bool,
    /// Patterns added to the built-in ones.
    pub patterns: Vec<RedactionPattern>,
}

impl Default for RedactionSection {
    fn default() -> Self {
        Self {
            enabled: true,
            patterns: Vec::new(),
        }
    }
}

/// A user pattern: where the regex has a group named `secret`, only that
/// group is replaced. Spans are kept so that a bad regex is reported at
/// its line and column.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactionPattern {
    pub name: toml::Spanned<String>,
    pub regex: toml::Spanned<String>,
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

/// 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
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
        Ok(config)
    }

    /// User redaction patterns must compile; errors point at the value.
    fn check_redaction(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        for (i, p) in self.redaction.patterns.iter().enumerate() {
            if let Err(e) = crate::redact::compile_user(p.name.get_ref(), p.regex.get_ref()) {
                let (field, span) = match e {
                    crate::redact::RedactError::BadName { .. } => ("name", p.name.span()),
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
    fn ring_buffer_must_be_a_power_of_two() {
        let err = parse("[capture]\nring_buffer_bytes = 5000\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/g.toml: capture.ring_buffer_bytes: 5000 is not a power of two of at least 4096"
        );
    }
}
