//! Loading the configuration and rules, and noticing when they change.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Config;
use crate::trust::{self, AdminGroup, Policy, RealFs};
use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::{compile_with_central, CentralText, RuleSet, RulesError};

/// The configuration file and the rule set it yields, once it is certain
/// that only root (and, for rules files, the admin group) can change them
/// (docs/security.md). The configuration file is checked before it is
/// read; the files it includes once their names are known, before
/// anything in them is used.
///
/// At start (`in_force` is None) the admin group is the one the file
/// names, looked up on this host; at reload it is the one in force, since
/// `[agent]` changes take effect at restart. The policy used is returned.
///
/// `central`: the fleet's rule set, compiled with the local rules
/// (guardrail_engine::rules::compile_with_central says how they combine).
pub fn load(
    path: &Path,
    in_force: Option<&Policy>,
    central: Option<CentralText<'_>>,
) -> anyhow::Result<(Config, RuleSet, Policy)> {
    let fs = RealFs::new();
    // The admin group never covers the file that names it.
    let strict = in_force.cloned().unwrap_or_else(|| Policy::agent(None));
    trust::refuse(trust::check_config(&fs, &strict, path))?;
    let config = Config::load(path)?;
    let names = Names::system();
    let policy = match in_force {
        Some(p) => p.clone(),
        None => Policy::agent(
            config
                .agent
                .admin_group
                .as_deref()
                .map(|name| AdminGroup::resolve(name, &names))
                .transpose()?,
        ),
    };
    let main_text = std::fs::read_to_string(path).map_err(|e| {
        RulesError(vec![guardrail_engine::rules::diagnostics::RuleError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read: {e}"),
            hint: None,
        }])
    })?;
    let rules = compile_with_central(path, &main_text, names, central)?;
    trust::refuse(trust::check_included(&fs, &policy, path, &rules))?;
    check_credentials(&config, &policy)?;
    warn_if_secrets_readable(path, &config);
    Ok((config, rules, policy))
}

/// NATS credential files (nats outputs, `[fleet]`) are trusted like the
/// configuration, and must be readable by root only (docs/security.md).
fn check_credentials(config: &Config, policy: &Policy) -> anyhow::Result<()> {
    use crate::fleet::Credentials;
    let outputs = config.output.iter().map(|o| {
        let o = o.get_ref();
        Credentials {
            creds: o.creds.clone(),
            nkey: o.nkey.clone(),
            token_file: o.token_file.clone(),
        }
    });
    let fleet = config.fleet.iter().map(|f| Credentials {
        creds: f.creds.clone(),
        nkey: f.nkey.clone(),
        token_file: f.token_file.clone(),
    });
    for c in outputs.chain(fleet) {
        c.check_trusted(policy)?;
    }
    Ok(())
}

/// Webhook headers (Authorization, tokens) are the only credentials the
/// configuration holds, and it holds them itself: others should not be
/// able to read it then.
fn warn_if_secrets_readable(path: &Path, config: &Config) {
    let secrets = config
        .output
        .iter()
        .any(|o| o.get_ref().headers.as_ref().is_some_and(|h| !h.is_empty()));
    let mode = std::fs::metadata(path).map_or(0, |m| m.mode());
    if secrets && mode & 0o004 != 0 {
        tracing::warn!(
            "{} holds webhook headers and is readable by others (mode {:04o}): anyone could read credentials it may hold; fix: chmod o-r {}",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
}

/// What one watched file looks like: besides content changes (mtime,
/// size), owner and mode changes (ctime): a configuration made writable
/// by others is refused at once, and fixing it is noticed without SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    path: PathBuf,
    mtime: Option<SystemTime>,
    len: u64,
    ctime: (i64, i64),
    mode: u32,
    owner: (u32, u32),
}

/// What the files a rule set was read from look like now: their
/// modification times, and for include directories their listing (a file
/// added to rules.d changes the directory's mtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<Seen>);

impl Fingerprint {
    pub fn of(main: &Path, set: &RuleSet) -> Self {
        let mut paths: Vec<PathBuf> = vec![main.to_path_buf()];
        paths.extend(set.files.iter().cloned());
        paths.extend(set.dirs.iter().cloned());
        paths.extend(set.inputs.iter().cloned());
        paths.sort();
        paths.dedup();
        Fingerprint(
            paths
                .into_iter()
                .map(|path| {
                    let meta = std::fs::metadata(&path).ok();
                    Seen {
                        mtime: meta.as_ref().and_then(|m| m.modified().ok()),
                        len: meta.as_ref().map_or(0, |m| m.len()),
                        ctime: meta
                            .as_ref()
                            .map_or((0, 0), |m| (m.ctime(), m.ctime_nsec())),
                        mode: meta.as_ref().map_or(0, |m| m.mode()),
                        owner: meta.as_ref().map_or((0, 0), |m| (m.uid(), m.gid())),
                        path,
                    }
                })
                .collect(),
        )
    }
}
