//! Rules the agent adds itself.

use std::path::{Path, PathBuf};

use super::users::Names;
use super::{compile_text, RuleSet};

pub const SELF_PROTECTION: &str = "guardrail-self-protection";

/// Append the self-protection rule: the configuration files (and included
/// directories) and the agent's binaries may not be changed, except by the
/// `exempt` executables. Denied in the kernel like any deny rule.
pub fn add_self_protection(
    set: &mut RuleSet,
    config: &Path,
    binaries: &[PathBuf],
    exempt: &[String],
) -> anyhow::Result<()> {
    let mut paths: Vec<String> = vec![config.display().to_string()];
    paths.extend(set.files.iter().map(|p| p.display().to_string()));
    paths.extend(set.dirs.iter().map(|d| format!("{}/**", d.display())));
    paths.extend(
        binaries
            .iter()
            .filter(|b| b.exists())
            .map(|b| b.display().to_string()),
    );
    paths.sort();
    paths.dedup();
    let list = |v: &[String]| {
        v.iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "[[rule]]\nid = \"{SELF_PROTECTION}\"\ndescription = \"guardrail's configuration and binaries do not change while it runs\"\n\
         on = [\"file.write\", \"file.unlink\", \"file.rename\", \"file.link\", \"file.create\", \"perm.chmod\", \"perm.chown\"]\n\
         path = [{}]\naction = \"deny\"\nseverity = \"critical\"\n",
        list(&paths)
    );
    let exempt: Vec<String> = exempt
        .iter()
        .filter(|e| Path::new(e).exists())
        .cloned()
        .collect();
    if !exempt.is_empty() {
        text.push_str(&format!("exe_not = [{}]\n", list(&exempt)));
    }
    let built = compile_text(
        Path::new("built-in self-protection rule"),
        &text,
        Names::default(),
    )?;
    set.rules.extend(built.rules);
    set.reindex();
    Ok(())
}
