//! Loading the configuration and rules, and noticing when they change.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Config;
use crate::rules::users::Names;
use crate::rules::{load_rules, RuleSet};

/// The configuration file and the rule set it yields.
pub fn load(path: &Path) -> anyhow::Result<(Config, RuleSet)> {
    let config = Config::load(path)?;
    let rules = load_rules(path, Names::system())?;
    Ok((config, rules))
}

/// What the files a rule set was read from look like now: their
/// modification times, and for include directories their listing (a file
/// added to rules.d changes the directory's mtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<SystemTime>, u64)>);

impl Fingerprint {
    pub fn of(main: &Path, set: &RuleSet) -> Self {
        let mut paths: Vec<PathBuf> = vec![main.to_path_buf()];
        paths.extend(set.files.iter().cloned());
        paths.extend(set.dirs.iter().cloned());
        paths.sort();
        paths.dedup();
        Fingerprint(
            paths
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let mtime = meta.as_ref().and_then(|m| m.modified().ok());
                    let len = meta.map_or(0, |m| m.len());
                    (p, mtime, len)
                })
                .collect(),
        )
    }
}
