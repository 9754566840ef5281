//! Problems in rules files, each with its file, line, column and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::span::LineIndex;

/// One problem in a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// A source file's text, for turning spans into lines and columns.
pub struct Source<'a> {
    pub path: &'a Path,
    lines: LineIndex<'a>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Source<'a> {
        Source {
            path,
            lines: LineIndex::new(text),
        }
    }

    /// `path:line` of a byte offset: where a rule or window is defined.
    pub fn here(&self, offset: usize) -> String {
        format!(
            "{}:{}",
            self.path.display(),
            self.lines.line_column(offset).0
        )
    }

    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) -> RuleError {
        let (line, column) = self.lines.line_column(span.start);
        RuleError {
            file: self.path.to_path_buf(),
            line,
            column,
            message,
            hint,
        }
    }
}
