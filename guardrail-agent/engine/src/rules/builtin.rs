//! Rules the agent adds itself.

use std::path::{Path, PathBuf};

use super::users::Names;
use super::{compile_text, RuleSet};

pub const SELF_PROTECTION: &str = "guardrail-self-protection";
/// The pinned state's rule: kept apart from [`SELF_PROTECTION`] because it
/// exempts the agent's own program, which pins, adopts and unloads there.
pub const SELF_PROTECTION_STATE: &str = "guardrail-self-protection-state";
/// What the self-protection rules deny: every change to a file's content,
/// name, existence, mode or owner.
const PROTECTED_KINDS: &str = r#"["file.write", "file.unlink", "file.rename", "file.link", "file.create", "perm.chmod", "perm.chown"]"#;
/// Both, lifted together at a clean stop.
pub const SELF_PROTECTION_RULES: [&str; 2] = [SELF_PROTECTION, SELF_PROTECTION_STATE];

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
         on = {PROTECTED_KINDS}\npath = [{}]\naction = \"deny\"\nseverity = \"critical\"\n",
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
    append(set, "built-in self-protection rule", &text)
}

/// Append the rule that keeps the pinned state (`dir`: programs, links and
/// maps that enforce while no agent runs) as it is: nothing in it may be
/// removed, renamed, replaced or added except by guardrail's own
/// `programs` — the agent pins, adopts and unloads (`guardrail-agent
/// --unload`); the CLI reads the state for `doctor`. With path integrity
/// this also refuses mounts over the directories above it and unmounting
/// bpffs in the host's mount namespace; while it is in force only these
/// programs may open guardrail's maps for writing.
pub fn add_state_protection(
    set: &mut RuleSet,
    dir: &Path,
    programs: &[PathBuf],
) -> anyhow::Result<()> {
    let programs: Vec<String> = programs
        .iter()
        .filter(|p| p.exists())
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let text = format!(
        "[[rule]]\nid = \"{SELF_PROTECTION_STATE}\"\n\
         description = \"guardrail's pinned state is changed by guardrail's programs only\"\n\
         on = {PROTECTED_KINDS}\npath = [{dir:?}, {subtree:?}]\nexe_not = [{programs}]\naction = \"deny\"\nseverity = \"critical\"\n",
        dir = dir.display().to_string(),
        subtree = format!("{}/**", dir.display()),
        programs = programs.join(", "),
    );
    append(set, "built-in pinned-state protection rule", &text)
}

/// Compile a built-in rule's `text` and add it to `set`.
fn append(set: &mut RuleSet, origin: &str, text: &str) -> anyhow::Result<()> {
    let built = compile_text(Path::new(origin), text, Names::default())?;
    set.rules.extend(built.rules);
    set.reindex();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::spec::Action;

    /// The pinned state's rule denies every change under the state
    /// directory (and to the directory itself) except by the programs it
    /// names; programs that do not exist are left out, never guessed.
    #[test]
    fn the_pinned_state_rule_guards_the_directory_for_guardrails_programs_only() {
        let dir = tempfile::tempdir().unwrap();
        let agent = std::env::current_exe().unwrap();
        let missing = dir.path().join("no-such-program");
        let mut set = RuleSet::default();
        add_state_protection(&mut set, dir.path(), &[agent.clone(), missing.clone()]).unwrap();
        let rule = &set.rules[0];
        assert_eq!(rule.id, SELF_PROTECTION_STATE);
        assert_eq!(rule.action, Action::Deny);
        let inside = dir.path().join("abi-5/maps/KRULES");
        let (inside, root) = (inside.to_str().unwrap(), dir.path().to_str().unwrap());
        let path = rule.path.as_ref().unwrap();
        assert!(path.matches_any(&[inside]) && path.matches_any(&[root]));
        assert!(!path.matches_any(&["/etc/guardrail/guardrail.toml"]));
        let exe_not = &rule.exe_not.as_ref().unwrap().patterns;
        assert_eq!(exe_not, &vec![agent.display().to_string()]);
    }
}
