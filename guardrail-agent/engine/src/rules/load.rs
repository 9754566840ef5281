//! Reading the rule set: the main config file's `[[rule]]` and `[[window]]`
//! tables, plus every file its `include` patterns name.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::compile::{Compiler, RuleSet};
use super::diagnostics::{RuleError, Source};
use super::spec::{RuleSpec, RulesFile, WindowSpec};
use super::users::Names;
use crate::span::line_column;

/// The rules part of the main config file; the agent's own sections are
/// validated by [`crate::config::Config`].
#[derive(Deserialize)]
struct MainFile {
    #[serde(default)]
    include: Vec<toml::Spanned<String>>,
    #[serde(default)]
    window: Vec<WindowSpec>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// An included file holds rules and windows only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludedFile {
    #[serde(default)]
    window: Vec<WindowSpec>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug)]
pub struct RulesError(pub Vec<RuleError>);

impl std::fmt::Display for RulesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesError {}

fn toml_error(path: &Path, text: &str, e: toml::de::Error) -> RuleError {
    let (line, column) = e.span().map_or((1, 1), |s| line_column(text, s.start));
    RuleError {
        file: path.to_path_buf(),
        line,
        column,
        message: e.message().trim().to_string(),
        hint: None,
    }
}

fn read(path: &Path) -> Result<String, RuleError> {
    std::fs::read_to_string(path).map_err(|e| RuleError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("cannot read: {e}"),
        hint: None,
    })
}

/// Files an include pattern names, sorted. A pattern with wildcards may
/// match nothing (an empty rules.d); a plain path must exist.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains(['*', '?', '[']) {
        return if full.is_file() {
            Ok(vec![full])
        } else {
            Err(format!("included file {} does not exist", full.display()))
        };
    }
    let dir = full.parent().unwrap_or(Path::new("/"));
    let glob = globset::Glob::new(name)
        .map_err(|e| e.to_string())?
        .compile_matcher();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| glob.is_match(n)))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    Ok(files)
}

/// Load and compile the rules of `main` and its includes. All errors of
/// all files are returned together.
pub fn load_rules(main: &Path, names: Names) -> Result<RuleSet, RulesError> {
    let main_text = read(main).map_err(|e| RulesError(vec![e]))?;
    compile_text(main, &main_text, names)
}

/// Compile rules from `main_text`, said to be the file `main` (includes
/// are relative to it).
pub fn compile_text(main: &Path, main_text: &str, names: Names) -> Result<RuleSet, RulesError> {
    compile_with_central(main, main_text, names, None)
}

/// A rule set received from the fleet's key-value bucket
/// (docs/fleet.md): `origin` names it in errors (`nats:BUCKET/KEY`).
#[derive(Clone, Copy, Debug)]
pub struct CentralText<'a> {
    pub origin: &'a Path,
    pub text: &'a str,
}

/// Compile the local rules of `main` together with a central rule set.
/// The central set adds rules and windows, and nothing else: it holds
/// only `[[rule]]` and `[[window]]` tables (no `include`, no agent
/// sections); an id or window name it shares with a local one is an
/// error (so it cannot replace or disable a local rule); and its allow
/// rules may exempt only central rules (so it cannot lift a local deny).
pub fn compile_with_central(
    main: &Path,
    main_text: &str,
    names: Names,
    central: Option<CentralText<'_>>,
) -> Result<RuleSet, RulesError> {
    let main_text = main_text.to_string();
    let parsed: MainFile = toml::from_str(&main_text)
        .map_err(|e| RulesError(vec![toml_error(main, &main_text, e)]))?;
    let mut files: Vec<(PathBuf, String, RulesFile)> = Vec::new();
    let mut errors = Vec::new();
    let base = main.parent().unwrap_or(Path::new("."));
    let mut dirs = Vec::new();
    for inc in &parsed.include {
        let pattern = base.join(inc.get_ref());
        if pattern.to_string_lossy().contains(['*', '?', '[']) {
            dirs.extend(pattern.parent().map(Path::to_path_buf));
        }
        match expand(base, inc.get_ref()) {
            Ok(paths) => {
                for p in paths {
                    match read(&p).and_then(|text| {
                        let f: IncludedFile =
                            toml::from_str(&text).map_err(|e| toml_error(&p, &text, e))?;
                        Ok((text, f))
                    }) {
                        Ok((text, f)) => files.push((
                            p,
                            text,
                            RulesFile {
                                include: vec![],
                                window: f.window,
                                rule: f.rule,
                            },
                        )),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(message) => {
                let (line, column) = line_column(&main_text, inc.span().start);
                errors.push(RuleError {
                    file: main.to_path_buf(),
                    line,
                    column,
                    message,
                    hint: None,
                });
            }
        }
    }
    if let Some(c) = central {
        match toml::from_str::<IncludedFile>(c.text) {
            Ok(f) => {
                check_central_exempts(&c, &f.rule, &mut errors);
                files.push((
                    c.origin.to_path_buf(),
                    c.text.to_string(),
                    RulesFile {
                        include: vec![],
                        window: f.window,
                        rule: f.rule,
                    },
                ));
            }
            Err(e) => errors.push(toml_error(c.origin, c.text, e)),
        }
    }
    files.insert(
        0,
        (
            main.to_path_buf(),
            main_text.clone(),
            RulesFile {
                include: vec![],
                window: parsed.window,
                rule: parsed.rule,
            },
        ),
    );
    let mut compiler = Compiler::new(names);
    for e in errors {
        compiler.push_error(e);
    }
    // Every window first (rules name them), each file's line index built
    // once for both passes.
    let sources: Vec<Source> = files
        .iter()
        .map(|(path, text, _)| Source::new(path, text))
        .collect();
    for (src, (_, _, f)) in sources.iter().zip(&files) {
        compiler.add_windows(src, &f.window);
    }
    for (src, (_, _, f)) in sources.iter().zip(&files) {
        compiler.add_rules(src, &f.rule);
    }
    let origin = central.map(|c| c.origin.to_path_buf());
    let mut set = compiler
        .finish(
            files
                .into_iter()
                .map(|(p, _, _)| p)
                .filter(|p| Some(p) != origin.as_ref())
                .collect(),
        )
        .map_err(RulesError)?;
    set.dirs = dirs;
    Ok(set)
}

/// An allow rule of the central set naming a rule outside it (a local
/// one) is an error.
fn check_central_exempts(c: &CentralText<'_>, rules: &[RuleSpec], errors: &mut Vec<RuleError>) {
    let ids: Vec<String> = rules.iter().map(|r| r.id.get_ref().clone()).collect();
    for r in rules {
        let Some(exempts) = &r.exempts else { continue };
        for target in exempts.get_ref() {
            if !ids.contains(target) {
                let (line, column) = line_column(c.text, exempts.span().start);
                errors.push(RuleError {
                    file: c.origin.to_path_buf(),
                    line,
                    column,
                    message: format!(
                        "rule {:?} exempts {target:?}, which is not a rule of this central set: a central rule set may only add rules and exceptions to its own rules, never lift a local one",
                        r.id.get_ref()
                    ),
                    hint: Some("exempt the event in the host's local configuration instead".into()),
                });
            }
        }
    }
}
