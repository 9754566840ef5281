//! Event filters for `guardrail tail`.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// What a tail client asked for; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailFilter {
    /// exec, file, perm (loss events always pass).
    pub kinds: Vec<String>,
    pub pid: Option<u32>,
    /// Glob on the process executable.
    pub exe: Option<String>,
    /// Glob on any path the event names.
    pub path: Option<String>,
    /// Only events a rule decided on.
    pub decisions_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("unknown kind {0:?}: expected exec, file or perm")]
    Kind(String),
    #[error("bad glob {pattern:?}: {source}")]
    Glob {
        pattern: String,
        source: globset::Error,
    },
}

/// A [`TailFilter`] with its globs compiled.
pub struct CompiledFilter {
    decisions_only: bool,
    kinds: Vec<String>,
    pid: Option<u32>,
    exe: Option<GlobMatcher>,
    path: Option<GlobMatcher>,
}

pub(crate) fn glob(pattern: &Option<String>) -> Result<Option<GlobMatcher>, FilterError> {
    pattern
        .as_ref()
        .map(|p| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|source| FilterError::Glob {
                    pattern: p.clone(),
                    source,
                })
        })
        .transpose()
}

impl TailFilter {
    pub fn compile(&self) -> Result<CompiledFilter, FilterError> {
        for k in &self.kinds {
            if !matches!(k.as_str(), "exec" | "file" | "perm") {
                return Err(FilterError::Kind(k.clone()));
            }
        }
        Ok(CompiledFilter {
            decisions_only: self.decisions_only,
            kinds: self.kinds.clone(),
            pid: self.pid,
            exe: glob(&self.exe)?,
            path: glob(&self.path)?,
        })
    }
}

impl CompiledFilter {
    pub fn matches(&self, event: &Event) -> bool {
        let body = &event.body;
        let Some(process) = body.process() else {
            return true; // loss reports reach every client
        };
        if self.decisions_only && event.decision.is_none() {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == body.kind()) {
            return false;
        }
        if self.pid.is_some_and(|pid| pid != process.pid) {
            return false;
        }
        if let Some(g) = &self.exe {
            if !process.exe.as_deref().is_some_and(|e| g.is_match(e)) {
                return false;
            }
        }
        if let Some(g) = &self.path {
            if !body.paths().iter().any(|p| g.is_match(p)) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    fn file_event(pid: u32, exe: &str, path: &str) -> Event {
        Event {
            seq: 1,
            time: String::new(),
            ktime_ns: 0,
            via: None,
            decision: None,
            redacted: vec![],
            body: Body::File {
                syscall: "openat".into(),
                process: Process {
                    pid,
                    exe: Some(exe.into()),
                    ..Default::default()
                },
                result: SyscallResult::default(),
                file: FileDetails {
                    op: "open".into(),
                    path: Some(path.into()),
                    ..Default::default()
                },
            },
        }
    }

    #[test]
    fn all_fields_must_match() {
        let f = TailFilter {
            kinds: vec!["file".into()],
            pid: Some(5),
            exe: Some("/usr/bin/*".into()),
            path: Some("/etc/**".into()),
            decisions_only: false,
        }
        .compile()
        .unwrap();
        assert!(f.matches(&file_event(5, "/usr/bin/vi", "/etc/ssh/sshd_config")));
        assert!(!f.matches(&file_event(6, "/usr/bin/vi", "/etc/ssh/sshd_config")));
        assert!(!f.matches(&file_event(5, "/tmp/vi", "/etc/passwd")));
        assert!(!f.matches(&file_event(5, "/usr/bin/vi", "/home/x")));
        let exec_only = TailFilter {
            kinds: vec!["exec".into()],
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(!exec_only.matches(&file_event(5, "/usr/bin/vi", "/etc/passwd")));
    }

    #[test]
    fn bad_kind_is_refused() {
        let err = TailFilter {
            kinds: vec!["net".into()],
            ..Default::default()
        }
        .compile()
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "unknown kind \"net\": expected exec, file or perm"
        );
    }
}
