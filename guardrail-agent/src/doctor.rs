//! `guardrail doctor` and `guardrail-agent --check-config`: what this host
//! offers guardrail, and what each configured rule will do on it.
//!
//! The facts are gathered from files (`gather`) and judged by pure
//! functions (`checks`, `rule_effect`) so that the judgement is testable
//! without the host it describes.

use std::path::Path;

use serde::Serialize;

use guardrail_engine::rules::spec::{Action, Fallback, Mode};
use guardrail_engine::rules::{Rule, RuleSet};

/// Oldest kernel the VM suite runs (Debian 11's 5.10). Ring buffers need
/// 5.8; between the two nothing is tested.
const TESTED_MIN: (u32, u32) = (5, 10);
const RING_BUFFER_MIN: (u32, u32) = (5, 8);

#[derive(Clone, Debug, Default, Serialize)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel: String,
    pub root: bool,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// Where tracefs is mounted, if it is.
    pub tracefs: Option<String>,
    /// tracefs lists `syscalls/sys_enter_openat` (CONFIG_FTRACE_SYSCALLS).
    pub syscall_tracepoints: bool,
    /// `/sys/kernel/security/lsm`, if readable.
    pub lsm_list: Option<String>,
    /// `/sys/kernel/security/lockdown`, e.g. `[none] integrity confidentiality`.
    pub lockdown: Option<String>,
    /// `CONFIG_BPF_LSM` from `/boot/config-<release>`, when that file exists.
    pub bpf_lsm_built: Option<bool>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl HostFacts {
    pub fn gather() -> Self {
        let kernel = crate::kernel::capabilities::kernel_release();
        let tracefs = crate::kernel::tracefs::root();
        let bpf_lsm_built = std::fs::read_to_string(format!("/boot/config-{kernel}"))
            .ok()
            .map(|config| config.lines().any(|l| l == "CONFIG_BPF_LSM=y"));
        Self {
            // SAFETY: no arguments.
            root: unsafe { libc::geteuid() } == 0,
            btf: Path::new(crate::kernel::btf::VMLINUX).exists(),
            syscall_tracepoints: tracefs
                .as_deref()
                .is_some_and(|t| crate::kernel::tracefs::exists(t, "syscalls", "sys_enter_openat")),
            tracefs: tracefs.map(|t| t.display().to_string()),
            lsm_list: read_trimmed("/sys/kernel/security/lsm"),
            lockdown: read_trimmed("/sys/kernel/security/lockdown"),
            bpf_lsm_built,
            kernel,
        }
    }
}

/// What is known about BPF-LSM on this host, best evidence first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum LsmState {
    /// The LSM programs loaded and denied the canary.
    Proven,
    /// Loading them was tried and failed, for this reason.
    Refused(String),
    /// `bpf` is listed as an active LSM; loading was not tried.
    Listed,
    /// Not usable, for this reason.
    Absent(String),
}

impl LsmState {
    /// Deny and kill rules act in the kernel (or, for `Listed`, will if
    /// the agent's canary succeeds at start).
    pub fn can_enforce(&self) -> bool {
        matches!(self, Self::Proven | Self::Listed)
    }

    /// From the LSM list alone, without loading anything.
    pub fn from_facts(facts: &HostFacts) -> Self {
        match &facts.lsm_list {
            Some(list) if list.split(',').any(|l| l == "bpf") => Self::Listed,
            Some(list) => Self::Absent(format!(
                "`bpf` is not an active LSM (active: {list}); add `lsm={list},bpf` to \
                 GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub and reboot"
            )),
            None => Self::Absent(
                "securityfs is not mounted or the kernel lists no LSMs \
                 (/sys/kernel/security/lsm unreadable)"
                    .into(),
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub level: Level,
    pub what: &'static str,
    pub detail: String,
}

fn check(level: Level, what: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        what,
        detail: detail.into(),
    }
}

/// `6.1.0-28-cloud-amd64` → (6, 1).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The active lockdown mode: the bracketed word.
fn lockdown_mode(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'))
        .map(|w| w.trim_matches(['[', ']']))
}

/// Judge the host: capture needs everything marked `Fail`; `Warn` costs a
/// feature.
pub fn checks(facts: &HostFacts, lsm: &LsmState) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match kernel_version(&facts.kernel) {
        Some(v) if v >= TESTED_MIN => check(Level::Ok, "kernel", facts.kernel.clone()),
        Some(v) if v >= RING_BUFFER_MIN => check(
            Level::Warn,
            "kernel",
            format!(
                "{}: has BPF ring buffers, but guardrail is tested on 5.10 and later",
                facts.kernel
            ),
        ),
        Some(_) => check(
            Level::Fail,
            "kernel",
            format!("{}: BPF ring buffers need Linux 5.8 or later", facts.kernel),
        ),
        None => check(
            Level::Warn,
            "kernel",
            format!("cannot parse the release {:?}", facts.kernel),
        ),
    });
    out.push(if facts.root {
        check(Level::Ok, "privileges", "running as root")
    } else {
        check(
            Level::Warn,
            "privileges",
            "not root: the agent needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN); \
             some facts below may be unreadable",
        )
    });
    out.push(if facts.btf {
        check(Level::Ok, "BTF", "/sys/kernel/btf/vmlinux present")
    } else {
        check(
            Level::Warn,
            "BTF",
            "no /sys/kernel/btf/vmlinux: events lack ppid, euid/egid and auid, \
             paths cannot be resolved in the kernel, and BPF-LSM cannot be used \
             (needs CONFIG_DEBUG_INFO_BTF=y)",
        )
    });
    out.push(match (&facts.tracefs, facts.syscall_tracepoints) {
        (Some(t), true) => check(
            Level::Ok,
            "tracepoints",
            format!("syscall tracepoints in {t}"),
        ),
        (Some(t), false) => check(
            Level::Fail,
            "tracepoints",
            format!("{t} has no syscalls/ events: the kernel lacks CONFIG_FTRACE_SYSCALLS"),
        ),
        (None, _) => check(
            Level::Warn,
            "tracepoints",
            "tracefs is not mounted; the agent mounts it at /sys/kernel/tracing when it starts",
        ),
    });
    out.push(match facts.lockdown.as_deref().and_then(lockdown_mode) {
        Some("confidentiality") => check(
            Level::Fail,
            "lockdown",
            "confidentiality: the kernel forbids BPF programs from reading kernel \
                 memory, which capture needs; boot with lockdown=integrity or none",
        ),
        Some(mode) => check(Level::Ok, "lockdown", mode.to_string()),
        None => check(Level::Ok, "lockdown", "not reported (no lockdown LSM)"),
    });
    out.push(match lsm {
        LsmState::Proven => check(
            Level::Ok,
            "BPF-LSM",
            "active: the LSM programs loaded and denied the canary; deny and kill act in the kernel",
        ),
        LsmState::Listed => check(
            Level::Ok,
            "BPF-LSM",
            "`bpf` is an active LSM; the agent proves it with a canary when it starts",
        ),
        LsmState::Refused(why) | LsmState::Absent(why) => {
            let built = match facts.bpf_lsm_built {
                Some(false) => " This kernel is built without CONFIG_BPF_LSM.",
                _ => "",
            };
            check(
                Level::Warn,
                "BPF-LSM",
                format!(
                    "unusable: {why}.{built} Deny and kill rules use their fallback \
                     (alert, or revert for mode and owner changes)"
                ),
            )
        }
    });
    out
}

fn window_names(set: &RuleSet, indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(|&i| set.windows[i].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One sentence: what `rule` does on a host in state `lsm`.
pub fn rule_effect(rule: &Rule, set: &RuleSet, lsm: &LsmState) -> String {
    let mut text = match (rule.action, rule.mode) {
        (Action::Allow, _) => format!("exempts from {}", rule.exempts.join(", ")),
        (Action::Alert, _) => "alerts".to_string(),
        (action, Mode::Monitor) => format!(
            "alerts and reports that it would {} (monitor mode)",
            verb(action)
        ),
        (Action::Deny, Mode::Enforce) if lsm.can_enforce() => {
            "denies in the kernel (EPERM) before the operation happens".into()
        }
        (Action::Kill, Mode::Enforce) if lsm.can_enforce() => {
            "denies in the kernel and kills the process (SIGKILL) before it runs more code".into()
        }
        (action, Mode::Enforce) => {
            let fallback = match rule.fallback {
                Fallback::Revert => {
                    "reverts mode and owner changes after the fact (fallback = \"revert\"); \
                     other operations only alert"
                }
                Fallback::Alert | Fallback::Kill => "only alerts (fallback)",
            };
            format!("cannot {} on this host: {fallback}", verb(action))
        }
    };
    if !rule.in_window.is_empty() {
        text += &format!("; only during {}", window_names(set, &rule.in_window));
    }
    if !rule.outside_window.is_empty() {
        text += &format!("; not during {}", window_names(set, &rule.outside_window));
    }
    text
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Deny => "deny",
        Action::Kill => "kill",
        Action::Alert => "alert",
        Action::Allow => "allow",
    }
}

/// `id: effect` for every rule, aligned.
pub fn rule_effects(set: &RuleSet, lsm: &LsmState) -> Vec<String> {
    let width = set.rules.iter().map(|r| r.id.len()).max().unwrap_or(0);
    set.rules
        .iter()
        .map(|r| format!("{:width$}  {}", r.id, rule_effect(r, set, lsm)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guardrail_engine::rules::users::Names;

    fn healthy() -> HostFacts {
        HostFacts {
            kernel: "6.1.0-28-cloud-amd64".into(),
            root: true,
            btf: true,
            tracefs: Some("/sys/kernel/tracing".into()),
            syscall_tracepoints: true,
            lsm_list: Some("lockdown,capability,bpf".into()),
            lockdown: Some("[none] integrity confidentiality".into()),
            bpf_lsm_built: Some(true),
        }
    }

    fn level_of(checks: &[Check], what: &str) -> Level {
        checks.iter().find(|c| c.what == what).unwrap().level
    }

    #[test]
    fn a_healthy_host_passes_every_check() {
        let facts = healthy();
        let lsm = LsmState::from_facts(&facts);
        assert_eq!(lsm, LsmState::Listed);
        assert!(checks(&facts, &lsm).iter().all(|c| c.level == Level::Ok));
    }

    #[test]
    fn missing_bpf_lsm_says_how_to_enable_it() {
        let facts = HostFacts {
            lsm_list: Some("lockdown,capability,apparmor".into()),
            ..healthy()
        };
        let lsm = LsmState::from_facts(&facts);
        let c = checks(&facts, &lsm);
        let lsm_check = c.iter().find(|c| c.what == "BPF-LSM").unwrap();
        assert_eq!(lsm_check.level, Level::Warn);
        assert!(
            lsm_check
                .detail
                .contains("lsm=lockdown,capability,apparmor,bpf"),
            "{}",
            lsm_check.detail
        );
    }

    #[test]
    fn old_kernels_and_confidentiality_lockdown_fail() {
        let facts = HostFacts {
            kernel: "5.4.0-150-generic".into(),
            lockdown: Some("none integrity [confidentiality]".into()),
            ..healthy()
        };
        let c = checks(&facts, &LsmState::Listed);
        assert_eq!(level_of(&c, "kernel"), Level::Fail);
        assert_eq!(level_of(&c, "lockdown"), Level::Fail);
        let facts = HostFacts {
            kernel: "5.8.0".into(),
            ..healthy()
        };
        assert_eq!(
            level_of(&checks(&facts, &LsmState::Listed), "kernel"),
            Level::Warn
        );
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.0"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-33-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("garbage"), None);
    }

    fn rules(text: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, text).unwrap();
        guardrail_engine::rules::load_rules(&path, Names::default()).unwrap()
    }

    #[test]
    fn effects_follow_the_kernel() {
        let set = rules(
            r#"
[[window]]
name = "maint"
start = "02:00"
end = "04:00"

[[rule]]
id = "no-shadow"
on = ["file.write"]
path = ["/etc/shadow"]
action = "deny"
outside_window = ["maint"]

[[rule]]
id = "sudoers-mode"
on = ["perm.chmod"]
action = "deny"
fallback = "revert"
path = ["/etc/sudoers"]

[[rule]]
id = "watch"
on = ["exec"]
action = "kill"
mode = "monitor"
exe = ["/tmp/**"]
"#,
        );
        let with = rule_effects(&set, &LsmState::Proven);
        assert!(with[0].contains("denies in the kernel"), "{with:?}");
        assert!(with[0].ends_with("; not during maint"), "{with:?}");
        let without = rule_effects(&set, &LsmState::Refused("EPERM".into()));
        assert!(
            without[0].contains("cannot deny on this host: only alerts"),
            "{without:?}"
        );
        assert!(
            without[1].contains("reverts mode and owner changes"),
            "{without:?}"
        );
        assert!(
            without[2].contains("would kill (monitor mode)"),
            "{without:?}"
        );
    }
}
