//! The rule file format, as written by operators (see docs/rules.md).

use serde::Deserialize;
use toml::Spanned;

/// A user or group: a number or a name resolved from /etc/passwd or
/// /etc/group when the rules load.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum IdSpec {
    Number(u32),
    Name(String),
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Alert,
    Kill,
    Deny,
    /// An exception: the rules named in `exempts` do not act on events
    /// this rule matches.
    Allow,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Act as `alert`, and say what enforcement would have done.
    Monitor,
}

/// What a `deny` rule does where the kernel cannot deny.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    #[default]
    Alert,
    Kill,
    Revert,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::Alert => "alert",
            Fallback::Kill => "kill",
            Fallback::Revert => "revert",
        })
    }
}

#[derive(
    Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultFilter {
    #[default]
    Any,
    Ok,
    Failed,
}

/// One `[[rule]]` table. Every matcher is optional; the ones given must all
/// match (AND); the values of one matcher are alternatives (OR); `_not`
/// matchers must not match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub on: Spanned<Vec<String>>,
    #[serde(default)]
    pub result: ResultFilter,

    #[serde(default)]
    pub path: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub path_not: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub exe: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub exe_not: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub parent_exe: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub parent_exe_not: Option<Spanned<Vec<String>>>,
    /// Any process the event's process comes from (its creator, the
    /// creator's creator…, as far as `process.ancestors` goes).
    #[serde(default)]
    pub ancestor_exe: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub ancestor_exe_not: Option<Spanned<Vec<String>>>,
    /// The systemd unit of the process's cgroup (`nginx.service`,
    /// `session-*.scope`); globs.
    #[serde(default)]
    pub unit: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub unit_not: Option<Spanned<Vec<String>>>,
    /// `["any"]` (in some container), `["none"]` (on the host), or
    /// container id globs.
    #[serde(default)]
    pub container: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub argv_contains: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub argv_matches: Option<Spanned<Vec<String>>>,

    #[serde(default)]
    pub uid: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub uid_not: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub euid: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub euid_not: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub gid: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub gid_not: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub auid: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub auid_not: Option<Spanned<Vec<IdSpec>>>,

    /// chmod: any of these bits in the new mode (setuid, setgid, sticky,
    /// world_writable).
    #[serde(default)]
    pub mode_set: Option<Spanned<Vec<String>>>,
    /// chmod: any bit of this octal mask in the new mode.
    #[serde(default)]
    pub mode_mask: Option<Spanned<String>>,
    /// chown: the new owner.
    #[serde(default)]
    pub owner: Option<Spanned<Vec<IdSpec>>>,
    #[serde(default)]
    pub owner_group: Option<Spanned<Vec<IdSpec>>>,
    /// setuid family: the call makes the process root.
    #[serde(default)]
    pub to_root: Option<Spanned<bool>>,
    /// capset: any of these capabilities gained (`cap_sys_admin`, or `any`).
    #[serde(default)]
    pub caps_gained: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub in_window: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub outside_window: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub cgroup_id: Option<Spanned<Vec<u64>>>,
    #[serde(default)]
    pub cgroup_id_not: Option<Spanned<Vec<u64>>>,

    /// Default: alert.
    #[serde(default)]
    pub action: Option<Spanned<Action>>,
    #[serde(default)]
    pub exempts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub fallback: Option<Spanned<Fallback>>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub severity: Severity,
}

fn yes() -> bool {
    true
}

/// One `[[window]]` table: recurring local-time intervals.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub name: Spanned<String>,
    /// mon … sun; empty or absent: every day.
    #[serde(default)]
    pub days: Option<Spanned<Vec<String>>>,
    /// "HH:MM", inclusive.
    pub start: Spanned<String>,
    /// "HH:MM", exclusive; earlier than start: the window runs past midnight.
    pub end: Spanned<String>,
    /// IANA time zone, e.g. "Europe/Berlin"; default UTC.
    #[serde(default)]
    pub tz: Option<Spanned<String>>,
}

/// What a rules file holds (the main config file holds this too).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RulesFile {
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub window: Vec<WindowSpec>,
    #[serde(default)]
    pub rule: Vec<RuleSpec>,
}
