//! Problems in rules files, each with its file, line, column and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::span::line_column;

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
    pub text: &'a str,
}

impl Source<'_> {
    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) -> RuleError {
        let (line, column) = line_column(self.text, span.start);
        RuleError {
            file: self.path.to_path_buf(),
            line,
            column,
            message,
            hint,
        }
    }
}
