//! Validating rule specs and compiling them into matchers. Every problem is
//! reported (not just the first) with file, line, column and a hint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use jiff::tz::TimeZone;
use regex::RegexSet;
use toml::Spanned;

use super::diagnostics::{RuleError, Source};
use super::globs::Globs;
use super::index::RuleIndex;
use super::kinds::{self, closest, KINDS};
use super::matchers::*;
use super::spec::*;
use super::users::Names;
use super::window::{parse_day, parse_time, Window, ALL_DAYS};

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub action: Action,
    pub mode: Mode,
    pub severity: Severity,
    pub fallback: Fallback,
    pub exempts: Vec<String>,
    pub kinds: u32,
    /// `on` names `file.read`: the rule's paths join the read watch set
    /// (reads of other files are never captured unless
    /// `capture.read_opens` is on).
    pub reads: bool,
    pub result: ResultFilter,
    pub path: Option<Box<PathMatcher>>,
    pub path_not: Option<Box<PathMatcher>>,
    pub exe: Option<Box<PathMatcher>>,
    pub exe_not: Option<Box<PathMatcher>>,
    pub parent_exe: Option<Box<PathMatcher>>,
    pub parent_exe_not: Option<Box<PathMatcher>>,
    pub ancestor_exe: Option<Box<PathMatcher>>,
    pub ancestor_exe_not: Option<Box<PathMatcher>>,
    pub unit: Option<GlobSet>,
    pub unit_not: Option<GlobSet>,
    pub container: Option<ContainerMatcher>,
    pub argv_contains: Vec<String>,
    pub argv_matches: Option<RegexSet>,
    pub uid: IdMatcher,
    pub euid: IdMatcher,
    pub gid: IdMatcher,
    pub auid: IdMatcher,
    pub mode_mask: Option<u32>,
    pub owner: Option<Vec<u32>>,
    pub owner_group: Option<Vec<u32>>,
    pub to_root: Option<bool>,
    pub caps_gained: Option<CapsMatch>,
    /// Indexes into [`RuleSet::windows`].
    pub in_window: Vec<usize>,
    pub outside_window: Vec<usize>,
    pub cgroup_id: Option<Vec<u64>>,
    pub cgroup_id_not: Option<Vec<u64>>,
    /// Where the rule is defined, for messages.
    pub origin: String,
    pub hits: AtomicU64,
    /// Why the kernel could not evaluate this rule (empty: it can).
    pub kernel_problems: Vec<String>,
}

/// A validated, compiled set of rules, in file order.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub windows: Vec<Window>,
    /// Every file the set was read from (watched for reload).
    pub files: Vec<PathBuf>,
    /// Directories wildcard includes read (a new file there is a change).
    pub dirs: Vec<PathBuf>,
    /// Other files the compiled set depends on (/etc/passwd, for `~`
    /// patterns): a change reloads the rules, but they are not rules files
    /// (not self-protected, not trust-checked).
    pub inputs: Vec<PathBuf>,
    /// Built from `rules`; [`RuleSet::reindex`] after changing them.
    pub index: RuleIndex,
}

impl RuleSet {
    /// The rules whose `path` matches one of `paths`, in file order, into
    /// `out`: one match of the index's glob set per path (remembered per
    /// path), then each rule it names checked on its own — rather than
    /// every rule's globs in turn.
    pub fn rules_on_paths(&self, paths: &[&str], out: &mut Vec<usize>) {
        self.candidates(paths, &[], out);
        out.retain(|&i| {
            self.rules[i]
                .path
                .as_ref()
                .is_some_and(|p| p.find(paths).is_some())
        });
    }

    /// The rules an event with these paths and executables may concern,
    /// in file order, into `out`: the index's answer, or every rule when
    /// the index was not built for this set.
    pub fn candidates(&self, paths: &[&str], exes: &[&str], out: &mut Vec<usize>) {
        if !self.index.candidates(self.rules.len(), paths, exes, out) {
            self.every_rule(out);
        }
    }

    /// Every rule, in file order, into `out`.
    pub fn every_rule(&self, out: &mut Vec<usize>) {
        out.clear();
        out.extend(0..self.rules.len());
    }

    pub fn reindex(&mut self) {
        self.index = RuleIndex::build(
            self.rules
                .iter()
                .map(|r| (r.path.as_deref(), r.exe.as_deref())),
        );
    }
}

/// Collects the rules and windows of every file, then compiles them.
pub struct Compiler {
    names: Names,
    errors: Vec<RuleError>,
    windows: Vec<Window>,
    window_names: HashMap<String, String>,
    rules: Vec<Rule>,
    ids: HashMap<String, String>,
    /// allow rules' `exempts`, checked once every rule is known.
    pending_exempts: Vec<(RuleError, String)>,
    /// Some pattern expanded `~`: the set depends on /etc/passwd.
    uses_homes: bool,
}

const MODE_BITS: &[(&str, u32)] = &[
    ("setuid", 0o4000),
    ("setgid", 0o2000),
    ("sticky", 0o1000),
    ("world_writable", 0o0002),
];

fn mask(names: &[&str]) -> u32 {
    names
        .iter()
        .filter_map(|n| kinds::mask_of(n))
        .fold(0, |a, b| a | b)
}

impl Compiler {
    pub fn new(names: Names) -> Self {
        Compiler {
            names,
            errors: Vec::new(),
            windows: Vec::new(),
            window_names: HashMap::new(),
            rules: Vec::new(),
            ids: HashMap::new(),
            pending_exempts: Vec::new(),
            uses_homes: false,
        }
    }

    /// Windows first, from every file: rules may name windows defined in
    /// any file.
    pub fn add_windows(&mut self, src: &Source, specs: &[WindowSpec]) {
        for w in specs {
            if let Some(first) = self.window_names.get(w.name.get_ref()) {
                let e = src.error(
                    w.name.span(),
                    format!("window {:?} is defined twice", w.name.get_ref()),
                    Some(format!("the first definition is at {first}")),
                );
                self.errors.push(e);
                continue;
            }
            let mut ok = true;
            let mut days = Vec::new();
            for (d, span) in w
                .days
                .iter()
                .flat_map(|ds| ds.get_ref().iter().map(move |d| (d, ds.span())))
            {
                match parse_day(d) {
                    Some(day) => days.push(day),
                    None => {
                        ok = false;
                        self.errors.push(src.error(
                            span,
                            format!("unknown day {d:?}"),
                            Some("use mon, tue, wed, thu, fri, sat, sun".into()),
                        ));
                    }
                }
            }
            if days.is_empty() {
                days = ALL_DAYS.to_vec();
            }
            let mut time = |s: &Spanned<String>, field: &str| {
                let t = parse_time(s.get_ref());
                if t.is_none() {
                    self.errors.push(src.error(
                        s.span(),
                        format!("{field} {:?} is not a time", s.get_ref()),
                        Some("write 24-hour \"HH:MM\", e.g. \"02:00\"".into()),
                    ));
                }
                t
            };
            let (start, end) = (time(&w.start, "start"), time(&w.end, "end"));
            let tz_name =
                w.tz.as_ref()
                    .map_or("UTC".to_string(), |t| t.get_ref().clone());
            // UTC needs no time zone database (minimal hosts lack tzdata).
            let tz = match TimeZone::get(&tz_name) {
                Ok(tz) => Some(tz),
                Err(_) if matches!(tz_name.as_str(), "UTC" | "Etc/UTC" | "Z") => {
                    Some(TimeZone::UTC)
                }
                Err(e) => {
                    let span = w.tz.as_ref().map_or(w.name.span(), |t| t.span());
                    self.errors.push(src.error(
                        span,
                        format!("unknown time zone {tz_name:?}: {e}"),
                        Some("use an IANA name such as \"UTC\" or \"Europe/Berlin\"; zones other than UTC need the tzdata package".into()),
                    ));
                    None
                }
            };
            if let (Some(s), Some(e)) = (start, end) {
                if s == e {
                    ok = false;
                    self.errors.push(src.error(
                        w.end.span(),
                        "start and end are equal: the window would be empty".into(),
                        Some("for a whole day use start = \"00:00\", end = \"00:00\" is not allowed; list the days and use 00:00–23:59".into()),
                    ));
                }
            }
            let here = src.here(w.name.span().start);
            self.window_names.insert(w.name.get_ref().clone(), here);
            if let (true, Some(start), Some(end), Some(tz)) = (ok, start, end, tz) {
                self.windows.push(Window {
                    name: w.name.get_ref().clone(),
                    days,
                    start,
                    end,
                    tz,
                    tz_name,
                });
            }
        }
    }

    /// Globs over names (units, container ids): `*` matches anything.
    fn names(
        &mut self,
        src: &Source,
        field: &str,
        spec: &Option<Spanned<Vec<String>>>,
    ) -> Option<GlobSet> {
        let spec = spec.as_ref()?;
        let mut b = GlobSetBuilder::new();
        for p in spec.get_ref() {
            match Glob::new(p) {
                Ok(g) => {
                    b.add(g);
                }
                Err(e) => self.errors.push(src.error(
                    spec.span(),
                    format!("{field}: bad pattern {p:?}: {e}"),
                    None,
                )),
            }
        }
        b.build().ok()
    }

    fn container(
        &mut self,
        src: &Source,
        spec: &Option<Spanned<Vec<String>>>,
    ) -> Option<ContainerMatcher> {
        let list = spec.as_ref()?.get_ref();
        match list.as_slice() {
            [one] if one == "any" => Some(ContainerMatcher::Any),
            [one] if one == "none" => Some(ContainerMatcher::None),
            _ if list.iter().any(|p| p == "any" || p == "none") => {
                self.errors.push(src.error(
                    spec.as_ref()?.span(),
                    "container: \"any\" and \"none\" stand alone".into(),
                    Some("write container = [\"any\"], [\"none\"], or a list of id globs".into()),
                ));
                None
            }
            _ => self
                .names(src, "container", spec)
                .map(ContainerMatcher::Ids),
        }
    }

    fn paths(
        &mut self,
        src: &Source,
        field: &str,
        spec: &Option<Spanned<Vec<String>>>,
    ) -> Option<Box<PathMatcher>> {
        let spec = spec.as_ref()?;
        let mut compiled = Vec::new();
        let mut origin = Vec::new();
        let mut expanded = Vec::new();
        for p in spec.get_ref() {
            match self.expand_homes(p) {
                Ok(list) => expanded.extend(list),
                Err((message, hint)) => self.errors.push(src.error(
                    spec.span(),
                    format!("{field}: {message}"),
                    Some(hint),
                )),
            }
        }
        for (i, p) in expanded.iter().enumerate() {
            if !p.starts_with('/') {
                self.errors.push(src.error(
                    spec.span(),
                    format!("{field}: {p:?} is not absolute"),
                    Some("paths in rules are absolute; events carry absolute paths".into()),
                ));
                continue;
            }
            let mut globs = vec![p.clone()];
            if let Some(base) = p.strip_suffix("/**") {
                // A subtree includes its root.
                globs.push(if base.is_empty() {
                    "/".into()
                } else {
                    base.to_string()
                });
            }
            for g in globs {
                match GlobBuilder::new(&g).literal_separator(true).build() {
                    Ok(glob) => {
                        compiled.push(glob);
                        origin.push(i);
                    }
                    Err(e) => self.errors.push(src.error(
                        spec.span(),
                        format!("{field}: bad pattern {p:?}: {e}"),
                        None,
                    )),
                }
            }
        }
        let mut above = Vec::new();
        let mut above_origin = Vec::new();
        for (i, p) in expanded.iter().enumerate() {
            for g in ancestor_globs(p) {
                if let Ok(glob) = GlobBuilder::new(&g).literal_separator(true).build() {
                    above.push(glob);
                    above_origin.push(i);
                }
            }
        }
        // A set too large to build (regex size limits) is an error here:
        // without its matcher the rule would match every path.
        let built = Globs::new(&compiled).and_then(|set| Ok((set, Globs::new(&above)?)));
        let (set, above) = match built {
            Ok(built) => built,
            Err(e) => {
                self.errors.push(src.error(
                    spec.span(),
                    format!("{field}: the patterns cannot be compiled together: {e}"),
                    Some("split them over several rules".into()),
                ));
                return None;
            }
        };
        // Boxed: a rule has eight such fields, most of them unset, and each
        // held 400 bytes inline (a thousand rules: ~3 MB of empty matchers).
        Some(Box::new(PathMatcher {
            set,
            globs: compiled,
            origin,
            above,
            above_origin,
            patterns: expanded,
        }))
    }

    /// `~*/rest` → `HOME/rest` for every home directory in /etc/passwd;
    /// `~name/rest` → that user's; anything else as written. Homes are
    /// canonicalized (events carry canonical paths) and their glob
    /// characters escaped.
    fn expand_homes(&mut self, pattern: &str) -> Result<Vec<String>, (String, String)> {
        let Some(rest) = pattern.strip_prefix('~') else {
            return Ok(vec![pattern.to_string()]);
        };
        let hint = || {
            "write ~*/PATH for every user's home (from /etc/passwd) or ~NAME/PATH for one user's"
                .to_string()
        };
        let (who, tail) = match rest.split_once('/') {
            Some((who, tail)) if !tail.is_empty() => (who, tail),
            _ => {
                return Err((
                    format!("{pattern:?} names no path under the home directory"),
                    hint(),
                ))
            }
        };
        self.uses_homes = true;
        let homes: Vec<String> = match who {
            "*" => self.names.homes().into_iter().map(String::from).collect(),
            "" => {
                return Err((
                    format!("{pattern:?}: `~/` has no user here (the agent runs as root)"),
                    hint(),
                ))
            }
            name => match self.names.home_of(name) {
                Some(h) => vec![h.to_string()],
                None => {
                    return Err((
                        format!("{pattern:?}: no user named {name:?} in /etc/passwd"),
                        hint(),
                    ))
                }
            },
        };
        let mut out: Vec<String> = Vec::new();
        for home in homes {
            let real = std::fs::canonicalize(&home)
                .map(|p| p.display().to_string())
                .unwrap_or(home);
            let base = globset::escape(real.trim_end_matches('/'));
            let expanded = format!("{base}/{tail}");
            if !out.contains(&expanded) {
                out.push(expanded);
            }
        }
        Ok(out)
    }

    fn ids(
        &mut self,
        src: &Source,
        field: &str,
        spec: &Option<Spanned<Vec<IdSpec>>>,
        group: bool,
    ) -> Option<Vec<u32>> {
        let spec = spec.as_ref()?;
        let mut out = Vec::new();
        for id in spec.get_ref() {
            match id {
                IdSpec::Number(n) => out.push(*n),
                IdSpec::Name(name) => {
                    let found = if group {
                        self.names.group(name)
                    } else {
                        self.names.user(name)
                    };
                    match found {
                        Some(n) => out.push(n),
                        None => self.errors.push(
                            src.error(
                                spec.span(),
                                format!(
                                    "{field}: no {} named {name:?} on this host",
                                    if group { "group" } else { "user" }
                                ),
                                Some(
                                    "use a number, or create the account before loading the rule"
                                        .into(),
                                ),
                            ),
                        ),
                    }
                }
            }
        }
        Some(out)
    }

    fn id_matcher(
        &mut self,
        src: &Source,
        field: &str,
        any: &Option<Spanned<Vec<IdSpec>>>,
        none: &Option<Spanned<Vec<IdSpec>>>,
        group: bool,
    ) -> IdMatcher {
        IdMatcher {
            any_of: self.ids(src, field, any, group),
            none_of: self.ids(src, &format!("{field}_not"), none, group),
        }
    }

    fn window_refs(&mut self, src: &Source, spec: &Option<Spanned<Vec<String>>>) -> Vec<usize> {
        let Some(spec) = spec else { return vec![] };
        let mut out = Vec::new();
        for name in spec.get_ref() {
            match self.windows.iter().position(|w| &w.name == name) {
                Some(i) => out.push(i),
                None if self.window_names.contains_key(name) => {} // invalid window: already reported
                None => {
                    let known: Vec<&str> = self.windows.iter().map(|w| w.name.as_str()).collect();
                    self.errors.push(
                        src.error(
                            spec.span(),
                            format!("no window named {name:?}"),
                            closest(name, &known)
                                .map(|c| format!("did you mean {c:?}?"))
                                .or(Some("define it in a [[window]] table".into())),
                        ),
                    );
                }
            }
        }
        out
    }

    pub fn add_rules(&mut self, src: &Source, specs: &[RuleSpec]) {
        for spec in specs {
            self.add_rule(src, spec);
        }
    }

    fn add_rule(&mut self, src: &Source, r: &RuleSpec) {
        let errors_before = self.errors.len();
        let id = r.id.get_ref().clone();
        let here = src.here(r.id.span().start);
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.errors.push(src.error(
                r.id.span(),
                format!("rule id {id:?} is not a valid id"),
                Some("use letters, digits, '-', '_' and '.'".into()),
            ));
        }
        if let Some(first) = self.ids.get(&id) {
            self.errors.push(src.error(
                r.id.span(),
                format!("rule id {id:?} is used twice"),
                Some(format!("the first rule with this id is at {first}")),
            ));
        } else {
            self.ids.insert(id.clone(), here.clone());
        }

        let mut kinds = 0;
        for name in r.on.get_ref() {
            match kinds::mask_of(name) {
                Some(m) => kinds |= m,
                None => self.errors.push(src.error(
                    r.on.span(),
                    format!("unknown event kind {name:?}"),
                    Some(match closest(name, KINDS) {
                        Some(c) => format!("did you mean {c:?}?"),
                        None => format!("known kinds: {}, and file.*, perm.*, *", KINDS.join(", ")),
                    }),
                )),
            }
        }
        if r.on.get_ref().is_empty() {
            self.errors.push(src.error(
                r.on.span(),
                "`on` is empty: the rule can never match".into(),
                None,
            ));
        }

        // Matchers that only some kinds have: a rule whose kinds have none of
        // them could never fire.
        let only = |field: &str,
                    spec_span: Option<std::ops::Range<usize>>,
                    valid: &[&str],
                    this: &mut Self| {
            if let Some(span) = spec_span {
                if kinds & mask(valid) == 0 && kinds != 0 {
                    this.errors.push(src.error(
                        span,
                        format!(
                            "{field} applies only to {}; with on = {:?} this rule can never match",
                            valid.join(", "),
                            r.on.get_ref()
                        ),
                        Some(format!("add {} to `on`, or remove {field}", valid[0])),
                    ));
                }
            }
        };
        only(
            "mode_set",
            r.mode_set.as_ref().map(|s| s.span()),
            &["perm.chmod"],
            self,
        );
        only(
            "mode_mask",
            r.mode_mask.as_ref().map(|s| s.span()),
            &["perm.chmod"],
            self,
        );
        only(
            "owner",
            r.owner.as_ref().map(|s| s.span()),
            &["perm.chown"],
            self,
        );
        only(
            "owner_group",
            r.owner_group.as_ref().map(|s| s.span()),
            &["perm.chown"],
            self,
        );
        only(
            "to_root",
            r.to_root.as_ref().map(|s| s.span()),
            &["perm.setuid"],
            self,
        );
        only(
            "caps_gained",
            r.caps_gained.as_ref().map(|s| s.span()),
            &["perm.capset"],
            self,
        );
        only(
            "argv_contains",
            r.argv_contains.as_ref().map(|s| s.span()),
            &["exec"],
            self,
        );
        only(
            "argv_matches",
            r.argv_matches.as_ref().map(|s| s.span()),
            &["exec"],
            self,
        );
        let path_kinds: Vec<&str> = KINDS
            .iter()
            .copied()
            .filter(|k| !matches!(*k, "perm.setuid" | "perm.setgid" | "perm.capset"))
            .collect();
        only("path", r.path.as_ref().map(|s| s.span()), &path_kinds, self);

        let mut mode_mask = None;
        if let Some(bits) = &r.mode_set {
            let mut m = 0;
            for b in bits.get_ref() {
                match MODE_BITS.iter().find(|(n, _)| n == b) {
                    Some((_, v)) => m |= v,
                    None => self.errors.push(src.error(
                        bits.span(),
                        format!("unknown mode bit {b:?}"),
                        Some("use setuid, setgid, sticky, world_writable".into()),
                    )),
                }
            }
            mode_mask = Some(m);
        }
        if let Some(m) = &r.mode_mask {
            let text = m.get_ref().trim_start_matches("0o");
            match u32::from_str_radix(text, 8) {
                Ok(v) if v <= 0o7777 && v != 0 => mode_mask = Some(mode_mask.unwrap_or(0) | v),
                _ => self.errors.push(src.error(
                    m.span(),
                    format!("mode_mask {:?} is not an octal mask", m.get_ref()),
                    Some("e.g. \"6000\" for setuid or setgid, \"0002\" for world-writable".into()),
                )),
            }
        }

        let caps_gained = r.caps_gained.as_ref().map(|c| {
            let names = c.get_ref();
            if names.iter().any(|n| n == "any") {
                CapsMatch::Any
            } else {
                let known: Vec<String> = crate::interpret::CAP_NAMES
                    .iter()
                    .map(|n| format!("cap_{n}"))
                    .collect();
                for n in names {
                    if !known.contains(n) {
                        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
                        self.errors.push(src.error(
                            c.span(),
                            format!("unknown capability {n:?}"),
                            closest(n, &refs).map(|k| format!("did you mean {k:?}?")),
                        ));
                    }
                }
                CapsMatch::AnyOf(names.clone())
            }
        });

        let argv_matches = r
            .argv_matches
            .as_ref()
            .and_then(|m| match RegexSet::new(m.get_ref()) {
                Ok(set) => Some(set),
                Err(e) => {
                    self.errors
                        .push(src.error(m.span(), format!("argv_matches: {e}"), None));
                    None
                }
            });

        let action = r.action.as_ref().map_or(Action::Alert, |a| *a.get_ref());
        let action_span = r.action.as_ref().map_or(r.id.span(), |a| a.span());
        let exempts = r
            .exempts
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_default();
        match (action, &r.exempts) {
            (Action::Allow, None) => self.errors.push(src.error(
                action_span.clone(),
                "an allow rule must name the rules it exempts".into(),
                Some("add exempts = [\"rule-id\", …]: an exception never weakens rules it does not name".into()),
            )),
            (Action::Allow, Some(e)) => {
                for target in e.get_ref() {
                    self.pending_exempts.push((
                        src.error(e.span(), format!("exempts names no rule {target:?}"), None),
                        target.clone(),
                    ));
                }
            }
            (_, Some(e)) => self.errors.push(src.error(
                e.span(),
                "only allow rules take `exempts`".into(),
                Some("set action = \"allow\"".into()),
            )),
            _ => {}
        }
        if let (Some(f), false) = (&r.fallback, action == Action::Deny) {
            self.errors
                .push(src.error(f.span(), "only deny rules take `fallback`".into(), None));
        }

        let rule = Rule {
            id,
            description: r.description.clone(),
            action,
            mode: r.mode,
            severity: r.severity,
            fallback: r
                .fallback
                .as_ref()
                .map(|f| *f.get_ref())
                .unwrap_or_default(),
            exempts,
            kinds,
            reads: r.on.get_ref().iter().any(|k| k == "file.read"),
            result: r.result,
            path: self.paths(src, "path", &r.path),
            path_not: self.paths(src, "path_not", &r.path_not),
            exe: self.paths(src, "exe", &r.exe),
            exe_not: self.paths(src, "exe_not", &r.exe_not),
            parent_exe: self.paths(src, "parent_exe", &r.parent_exe),
            parent_exe_not: self.paths(src, "parent_exe_not", &r.parent_exe_not),
            ancestor_exe: self.paths(src, "ancestor_exe", &r.ancestor_exe),
            ancestor_exe_not: self.paths(src, "ancestor_exe_not", &r.ancestor_exe_not),
            unit: self.names(src, "unit", &r.unit),
            unit_not: self.names(src, "unit_not", &r.unit_not),
            container: self.container(src, &r.container),
            argv_contains: r
                .argv_contains
                .as_ref()
                .map(|a| a.get_ref().clone())
                .unwrap_or_default(),
            argv_matches,
            uid: self.id_matcher(src, "uid", &r.uid, &r.uid_not, false),
            euid: self.id_matcher(src, "euid", &r.euid, &r.euid_not, false),
            gid: self.id_matcher(src, "gid", &r.gid, &r.gid_not, true),
            auid: self.id_matcher(src, "auid", &r.auid, &r.auid_not, false),
            mode_mask,
            owner: self.ids(src, "owner", &r.owner, false),
            owner_group: self.ids(src, "owner_group", &r.owner_group, true),
            to_root: r.to_root.as_ref().map(|t| *t.get_ref()),
            caps_gained,
            in_window: self.window_refs(src, &r.in_window),
            outside_window: self.window_refs(src, &r.outside_window),
            cgroup_id: r.cgroup_id.as_ref().map(|c| c.get_ref().clone()),
            cgroup_id_not: r.cgroup_id_not.as_ref().map(|c| c.get_ref().clone()),
            origin: here,
            hits: AtomicU64::new(0),
            kernel_problems: kernel_problems(r),
        };
        if matches!(action, Action::Kill | Action::Deny) {
            for problem in rule.kernel_problems.clone() {
                self.errors.push(src.error(action_span.clone(), format!("{} rule: {problem}", if action == Action::Kill { "a kill" } else { "a deny" }), Some("enforcement happens in the kernel, which cannot evaluate this matcher: use action = \"alert\", or drop the matcher".into())));
            }
        }
        if rule.reads {
            self.check_read_paths(src, r, &rule);
        }
        if r.enabled && self.errors.len() == errors_before {
            self.rules.push(rule);
        }
    }

    /// `file.read` rules name the files whose reads are watched: they need
    /// paths, and paths that do not watch every directory.
    fn check_read_paths(&mut self, src: &Source, r: &RuleSpec, rule: &Rule) {
        let Some(paths) = &rule.path else {
            self.errors.push(src.error(
                r.on.span(),
                "`file.read` needs `path`: only reads of the files rules name are captured".into(),
                Some("add path = [...] with the files or directories to watch".into()),
            ));
            return;
        };
        for p in &paths.patterns {
            if let Some(("/", _)) = crate::kernel_maps::watch::watch_base(p) {
                self.errors.push(src.error(
                    r.path.as_ref().map_or(r.on.span(), |s| s.span()),
                    format!("path {p:?}: a `file.read` pattern must start with a directory without wildcards"),
                    Some("watching reads everywhere costs every open; name the directory (/etc/ssh/*, /home/*/.ssh/** is not possible, ~*/.ssh/* is)".into()),
                ));
            }
        }
    }

    pub fn finish(mut self, files: Vec<PathBuf>) -> Result<RuleSet, Vec<RuleError>> {
        for (error, target) in std::mem::take(&mut self.pending_exempts) {
            let exists = self
                .rules
                .iter()
                .any(|r| r.id == target && r.action != Action::Allow)
                || self.ids.contains_key(&target);
            if !exists {
                self.errors.push(error);
            }
        }
        // An exception to a kernel-enforced rule must be evaluable in the
        // kernel too, or the kernel would deny what the exception allows.
        for r in self.rules.iter().filter(|r| r.action == Action::Allow) {
            let enforced: Vec<&str> = r
                .exempts
                .iter()
                .filter(|e| {
                    self.rules
                        .iter()
                        .any(|t| &t.id == *e && matches!(t.action, Action::Kill | Action::Deny))
                })
                .map(String::as_str)
                .collect();
            if !enforced.is_empty() {
                for problem in &r.kernel_problems {
                    self.errors.push(RuleError {
                        file: PathBuf::from(
                            r.origin
                                .rsplit_once(':')
                                .map_or(r.origin.as_str(), |(f, _)| f),
                        ),
                        line: r
                            .origin
                            .rsplit_once(':')
                            .and_then(|(_, l)| l.parse().ok())
                            .unwrap_or(1),
                        column: 1,
                        message: format!(
                            "allow rule {:?} exempts kernel-enforced {}: {problem}",
                            r.id,
                            enforced.join(", ")
                        ),
                        hint: Some(
                            "exceptions to kill/deny rules use only matchers the kernel evaluates"
                                .into(),
                        ),
                    });
                }
            }
        }
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let mut set = RuleSet {
            rules: self.rules,
            windows: self.windows,
            files,
            dirs: Vec::new(),
            inputs: if self.uses_homes {
                vec![PathBuf::from("/etc/passwd")]
            } else {
                Vec::new()
            },
            index: RuleIndex::default(),
        };
        set.reindex();
        Ok(set)
    }

    pub fn push_error(&mut self, e: RuleError) {
        self.errors.push(e);
    }
}

/// Why a kill/deny rule cannot be compiled into kernel maps.
pub fn kernel_problems(r: &RuleSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = r.on.get_ref().iter().find(|k| k.starts_with("uring.")) {
        out.push(format!(
            "`{k}` cannot be refused in the kernel yet: alert on it"
        ));
    }
    let mut unsupported = |name: &str, present: bool| {
        if present {
            out.push(format!(
                "matcher `{name}` cannot be evaluated in the kernel"
            ));
        }
    };
    unsupported("uid", r.uid.is_some());
    unsupported("uid_not", r.uid_not.is_some());
    unsupported("euid", r.euid.is_some());
    unsupported("euid_not", r.euid_not.is_some());
    unsupported("gid", r.gid.is_some());
    unsupported("gid_not", r.gid_not.is_some());
    unsupported("auid", r.auid.is_some());
    unsupported("auid_not", r.auid_not.is_some());
    unsupported("mode_set", r.mode_set.is_some());
    unsupported("mode_mask", r.mode_mask.is_some());
    unsupported("owner", r.owner.is_some());
    unsupported("owner_group", r.owner_group.is_some());
    unsupported("caps_gained", r.caps_gained.is_some());
    unsupported("cgroup_id", r.cgroup_id.is_some());
    unsupported("cgroup_id_not", r.cgroup_id_not.is_some());
    unsupported("argv_contains", r.argv_contains.is_some());
    unsupported("argv_matches", r.argv_matches.is_some());
    unsupported("parent_exe", r.parent_exe.is_some());
    unsupported("parent_exe_not", r.parent_exe_not.is_some());
    unsupported("ancestor_exe", r.ancestor_exe.is_some());
    // The kernel exempts a lineage from a kill/deny rule (a mark set at
    // exec of a listed program, inherited at fork); an allow rule has no
    // mark to grant.
    let allow = r
        .action
        .as_ref()
        .is_some_and(|a| *a.get_ref() == Action::Allow);
    unsupported("ancestor_exe_not", allow && r.ancestor_exe_not.is_some());
    unsupported("unit", r.unit.is_some());
    unsupported("unit_not", r.unit_not.is_some());
    unsupported("container", r.container.is_some());
    if r.result != ResultFilter::Any {
        out.push("`result` cannot be known before the operation runs".into());
    }
    for (field, spec) in [
        ("path", &r.path),
        ("path_not", &r.path_not),
        ("exe", &r.exe),
        ("exe_not", &r.exe_not),
    ] {
        if let Some(s) = spec {
            for p in s.get_ref() {
                if !is_kernel_path(p) {
                    out.push(format!("{field} pattern {p:?} is a glob; the kernel matches exact paths and `/**` subtrees"));
                }
            }
        }
    }
    if let Some(s) = &r.ancestor_exe_not {
        for p in s.get_ref() {
            if !is_kernel_path(p) || p.ends_with("/**") {
                out.push(format!("ancestor_exe_not pattern {p:?} is not one program; the kernel marks the descendants of exact program paths"));
            }
        }
    }
    out
}
