//! Secret redaction: before an event leaves the agent (audit log, stdout,
//! tail clients, alert lines, outputs), secrets in its arguments and paths
//! are replaced by `[REDACTED:<pattern>]` and the event's `redacted` list
//! names every field that changed. Rules are evaluated on the real values
//! first; redaction only changes what is reported.
//!
//! Only the secret part of a string is replaced (`--password=hunter2`
//! becomes `--password=[REDACTED:secret-assignment]`), so that an analyst
//! still sees what was run. Patterns are compiled once; a [`RegexSet`]
//! over all of them answers "anything to do?" in one pass, so a clean
//! string costs a single scan.

use regex::{Regex, RegexSet};

use crate::event::{Body, Event};
use serde::Deserialize;

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

/// Names that mark a value as secret in `key=value`, `--key value` and
/// JSON `"key": "value"` forms. Deliberately not `pwd` (the shell's
/// `PWD=/home/u`), `key` (`--key=/etc/ssl/x.pem` names a file) or `auth`
/// (`--auth=basic`).
const KEYWORDS: &str = r"(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key)";

/// A pattern that names a secret option whose value is the NEXT argument.
const OPTION_NAME: &str = "secret-option";

/// Built-in patterns: name and regex. Where the regex has a group named
/// `secret`, only that group is replaced; otherwise the whole match.
/// Word boundaries are ASCII (`(?-u:\b)`): the secrets are ASCII, and a
/// Unicode boundary would push the fast DFA off non-ASCII paths.
fn builtin() -> Vec<(&'static str, String)> {
    let kw = KEYWORDS;
    vec![
        // AWS access key ids: a four-letter type prefix and 16 base32
        // characters. The secret access key has no shape of its own; it is
        // caught by its name (aws_secret_access_key=…).
        (
            "aws-access-key",
            r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?-u:\b)".into(),
        ),
        (
            "github-token",
            r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)".into(),
        ),
        (
            "gitlab-token",
            r"(?-u:\b)gl(?:pat|ptt|dt|rt|cbt|soat|ft|imt|oas)-[A-Za-z0-9_-]{20,}".into(),
        ),
        (
            "slack-token",
            r"(?-u:\b)(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[0-9]-[A-Za-z0-9-]{10,})".into(),
        ),
        (
            "slack-webhook",
            r"(?i)https://hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_-]+)"
                .into(),
        ),
        (
            "jwt",
            r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*".into(),
        ),
        // From the BEGIN marker to the END marker, or to the end of the
        // string when the key goes on in the next argument.
        (
            "private-key",
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)"
                .into(),
        ),
        // scheme://user:password@host
        (
            "url-credentials",
            r"(?i)(?-u:\b)[a-z][a-z0-9+.-]*://[^\s/?#@:]*:(?P<secret>[^\s/?#@]+)@".into(),
        ),
        // --password=x, DB_PASSWORD=x, token=x at the start of an argument
        // or after whitespace or a quote (inside `sh -c "…"`). The value
        // runs to whitespace or a quote: shell quoting is not parsed.
        (
            "secret-assignment",
            format!(r#"(?i)(?:^|[\s"'])[a-z0-9_.-]*{kw}=["']?(?P<secret>[^\s"']+)"#),
        ),
        // ?token=x&… in URLs: the value ends at `&` or `#`.
        (
            "secret-assignment",
            format!(r#"(?i)[?&][a-z0-9_.-]*{kw}=(?P<secret>[^\s&#"']+)"#),
        ),
        // --password hunter2 inside one string (`sh -c "…"`, the joined
        // argv of a decision). A value starting with `-` is taken for the
        // next option.
        (
            OPTION_NAME,
            format!(
                r#"(?i)(?:^|\s)--?[a-z0-9_.-]*{kw}\s+["']?(?P<secret>[^\s"'-][^\s"']*)"#
            ),
        ),
        // {"password": "x"} in JSON bodies (curl -d).
        (
            "json-secret",
            format!(r#"(?i)"[a-z0-9_.-]*{kw}"\s*:\s*"(?P<secret>[^"]+)""#),
        ),
        // HTTP headers given on a command line (curl -H).
        (
            "auth-header",
            r#"(?i)(?-u:\b)(?:authorization|proxy-authorization|x-api-key|x-auth-token|private-token)\s*:\s*(?:(?:bearer|basic|token|digest)\s+)?(?P<secret>[^\s"']+)"#
                .into(),
        ),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction pattern {name:?}: {source}")]
    Regex {
        name: String,
        #[source]
        source: regex::Error,
    },
    #[error("redaction pattern {name:?} matches the empty string, which would redact nothing but mark every field")]
    MatchesEmpty { name: String },
    #[error("redaction pattern name {name:?}: use letters, digits, `-`, `_` or `.` (it appears in the marker [REDACTED:name])")]
    BadName { name: String },
}

struct Pattern {
    name: String,
    re: Regex,
    /// Capture group holding the secret; 0 is the whole match.
    group: usize,
}

/// The last process names and paths a [`Redactor`] looked at, and what it
/// made of them: the events of a storm come from a few processes touching
/// a few files, and checking their names against every pattern again was
/// 3% of the agent's CPU, their paths another 4%. Valid for one redactor
/// only.
#[derive(Default)]
pub struct Recent {
    /// `comm`, `exe`, `parent_exe`.
    process: [Seen; 3],
    /// A file or permission event's `path` and `raw_path`.
    path: [Seen; 2],
}

#[derive(Default)]
struct Seen {
    valid: bool,
    value: String,
    redacted: Option<String>,
}

/// Compiled redaction patterns. Cheap to share: build once, use for every
/// event.
pub struct Redactor {
    enabled: bool,
    patterns: Vec<Pattern>,
    any: RegexSet,
    /// A whole argument that is a secret option (`--password`), whose
    /// value is the next argument.
    option: Regex,
}

impl Default for Redactor {
    /// The built-in patterns, enabled.
    fn default() -> Self {
        Self::new(&RedactionSection::default()).expect("built-in redaction patterns compile")
    }
}

/// One user pattern, checked: what the configuration validates and the
/// agent compiles.
pub fn compile_user(name: &str, regex: &str) -> Result<Regex, RedactError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(RedactError::BadName { name: name.into() });
    }
    let re = Regex::new(regex).map_err(|source| RedactError::Regex {
        name: name.into(),
        source,
    })?;
    if re.is_match("") {
        return Err(RedactError::MatchesEmpty { name: name.into() });
    }
    Ok(re)
}

fn pattern(name: &str, re: Regex) -> Pattern {
    let group = re
        .capture_names()
        .position(|n| n == Some("secret"))
        .unwrap_or(0);
    Pattern {
        name: name.into(),
        re,
        group,
    }
}

impl Redactor {
    pub fn new(cfg: &RedactionSection) -> Result<Self, RedactError> {
        let mut patterns: Vec<Pattern> = builtin()
            .into_iter()
            .map(|(name, re)| {
                let re = Regex::new(&re).map_err(|source| RedactError::Regex {
                    name: name.into(),
                    source,
                })?;
                Ok(pattern(name, re))
            })
            .collect::<Result<_, RedactError>>()?;
        for p in &cfg.patterns {
            patterns.push(pattern(
                p.name.get_ref(),
                compile_user(p.name.get_ref(), p.regex.get_ref())?,
            ));
        }
        let any = RegexSet::new(patterns.iter().map(|p| p.re.as_str())).map_err(|source| {
            RedactError::Regex {
                name: "(all patterns together)".into(),
                source,
            }
        })?;
        let option =
            Regex::new(&format!(r"(?i)^--?[a-z0-9_.-]*{KEYWORDS}$")).map_err(|source| {
                RedactError::Regex {
                    name: OPTION_NAME.into(),
                    source,
                }
            })?;
        Ok(Self {
            enabled: cfg.enabled,
            patterns,
            any,
            option,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `s` with every secret replaced by its marker, or None when `s` holds
    /// none.
    pub fn redact_str(&self, s: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        // is_match allocates nothing and may stop early: the common case.
        // (A literal prefilter in front of it measured slower: the cost is
        // mostly per call, not per byte.)
        if !self.any.is_match(s) {
            return None;
        }
        let hits = self.any.matches(s);
        // Secret spans of every matching pattern; overlapping spans (a JWT
        // given as `token=eyJ…`) become one marker, named after the span
        // that starts first.
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        for i in hits.iter() {
            let p = &self.patterns[i];
            if p.group == 0 {
                spans.extend(p.re.find_iter(s).map(|m| (m.start(), m.end(), i)));
            } else {
                spans.extend(
                    p.re.captures_iter(s)
                        .filter_map(|c| c.get(p.group))
                        .map(|m| (m.start(), m.end(), i)),
                );
            }
        }
        spans.retain(|&(start, end, _)| end > start);
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
        let mut out = String::with_capacity(s.len() + 16);
        let mut pos = 0;
        let mut spans = spans.into_iter().peekable();
        while let Some((start, mut end, i)) = spans.next() {
            while let Some(&(next, next_end, _)) = spans.peek() {
                if next >= end {
                    break;
                }
                end = end.max(next_end);
                spans.next();
            }
            out.push_str(&s[pos..start]);
            out.push_str(&marker(&self.patterns[i].name));
            pos = end;
        }
        out.push_str(&s[pos..]);
        Some(out)
    }

    /// Redact every string field of `event` that may carry a secret, and
    /// list the fields changed in `event.redacted`.
    pub fn redact_event(&self, event: &mut Event) {
        self.redact_event_after(event, &mut Recent::default());
    }

    /// [`Self::redact_event`] for the next of a stream of events: the
    /// process's names are looked at again only when they differ from the
    /// previous event's (`recent`, kept by the caller for this redactor).
    pub fn redact_event_after(&self, event: &mut Event, recent: &mut Recent) {
        if !self.enabled {
            return;
        }
        let mut fields = Vec::new();
        let [path_seen, raw_path_seen] = &mut recent.path;
        let process = match &mut event.body {
            Body::Exec { process, exec, .. } => {
                self.field(&mut fields, "exec.path", &mut exec.path);
                if let Some(cwd) = &mut exec.cwd {
                    self.field(&mut fields, "exec.cwd", cwd);
                }
                self.redact_argv(&mut exec.argv, &mut fields);
                process
            }
            Body::File { process, file, .. } => {
                if let Some(v) = &mut file.path {
                    self.field_again(&mut fields, "file.path", v, path_seen);
                }
                if let Some(v) = &mut file.raw_path {
                    self.field_again(&mut fields, "file.raw_path", v, raw_path_seen);
                }
                for (name, value) in [
                    ("file.new_path", &mut file.new_path),
                    ("file.target", &mut file.target),
                ] {
                    if let Some(v) = value {
                        self.field(&mut fields, name, v);
                    }
                }
                process
            }
            Body::Perm { process, perm, .. } => {
                if let Some(v) = &mut perm.path {
                    self.field_again(&mut fields, "perm.path", v, path_seen);
                }
                if let Some(v) = &mut perm.raw_path {
                    self.field_again(&mut fields, "perm.raw_path", v, raw_path_seen);
                }
                process
            }
            Body::Uring { process, .. } => process,
            Body::Loss { .. } => return,
        };
        let [comm, exe, parent_exe] = &mut recent.process;
        self.field_again(&mut fields, "process.comm", &mut process.comm, comm);
        if let Some(value) = &mut process.exe {
            self.field_again(&mut fields, "process.exe", value, exe);
        }
        if let Some(value) = &mut process.parent_exe {
            self.field_again(&mut fields, "process.parent_exe", value, parent_exe);
        }
        if let Some(d) = &mut event.decision {
            for (key, value) in d.matched.iter_mut() {
                self.field(&mut fields, &format!("decision.matched.{key}"), value);
            }
            if let Some(e) = &mut d.fallback_error {
                self.field(&mut fields, "decision.fallback_error", e);
            }
        }
        event.redacted = fields;
    }

    fn field(&self, fields: &mut Vec<String>, name: &str, value: &mut String) {
        if let Some(r) = self.redact_str(value) {
            *value = r;
            fields.push(name.to_string());
        }
    }

    /// [`Self::field`], answered from `seen` when `value` is the value it
    /// last saw. For owned text and for text shared with the process
    /// table alike (an `exe`).
    fn field_again<V>(&self, fields: &mut Vec<String>, name: &str, value: &mut V, seen: &mut Seen)
    where
        V: std::ops::Deref<Target = str> + for<'a> From<&'a str>,
    {
        if !seen.valid || seen.value != **value {
            seen.value.clear();
            seen.value.push_str(value);
            seen.redacted = self.redact_str(value);
            seen.valid = true;
        }
        if let Some(r) = &seen.redacted {
            *value = V::from(r.as_str());
            fields.push(name.to_string());
        }
    }

    /// Arguments: each on its own, plus what spans arguments — the value
    /// after a secret option, and a private key spread over several.
    fn redact_argv(&self, argv: &mut [String], fields: &mut Vec<String>) {
        let mut value_next = false;
        let mut in_key = false;
        for (i, arg) in argv.iter_mut().enumerate() {
            let field = || format!("exec.argv[{i}]");
            if in_key {
                in_key = !(arg.contains("-----END") && arg.contains("PRIVATE KEY"));
                *arg = marker("private-key");
                fields.push(field());
                continue;
            }
            if std::mem::take(&mut value_next) && !arg.is_empty() && !arg.starts_with('-') {
                *arg = marker(OPTION_NAME);
                fields.push(field());
                continue;
            }
            value_next = self.option.is_match(arg) && !arg.starts_with("--no-");
            in_key = arg.contains("-----BEGIN")
                && arg.contains("PRIVATE KEY")
                && !arg.contains("-----END");
            if let Some(r) = self.redact_str(arg) {
                *arg = r;
                fields.push(field());
            }
        }
    }
}

fn marker(name: &str) -> String {
    format!("[REDACTED:{name}]")
}

#[cfg(test)]
mod tests;
