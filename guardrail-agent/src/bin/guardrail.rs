//! guardrail: the operator CLI. Talks to a running guardrail-agent over its
//! control socket.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use guardrail_agent::config::{Config, DEFAULT_PATH, DEFAULT_SOCKET};
use guardrail_agent::control::request;
use guardrail_agent::doctor::{rule_effects, Check, HostFacts, Level, LsmState};
use guardrail_agent::kernel::probes::{ProbeOptions, Probes};
use guardrail_agent::protocol::{ErrorReply, Request, RuleSummary, Status, TailSkipped, TailStart};
use guardrail_agent::trust::{self, AdminGroup, Policy, RealFs};
use guardrail_engine::event::Event;
use guardrail_engine::filter::TailFilter;
use guardrail_engine::human;
use guardrail_engine::replay::{events_of, Compare, Comparison, Replay};
use guardrail_engine::report::Report;
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::{load_rules, RuleSet};
use guardrail_engine::search::{self, Criteria, Flow, Parsed, Query, Search, SearchError};

#[derive(Parser, Debug)]
#[command(
    name = "guardrail",
    version,
    about = "Operate guardrail: tail events, check and test rules, verify the audit log, show agent status"
)]
struct Cli {
    /// The agent's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with the audit log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Check, test and list guardrail rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Stream live events.
    Tail {
        #[command(flatten)]
        filter: EventFilter,
        /// Print JSON lines instead of the compact human form.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// First the audit log's events since TIME (30m, 2h, 7d, or RFC 3339),
        /// then live ones, with none missing or repeated where they meet.
        /// The log is the one the agent writes (`guardrail status`).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// Show what the agent captures, on what kernel, and what it lost.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Explain what this host supports and what each rule will do here.
    ///
    /// Checks the kernel, BTF, tracepoints, lockdown and BPF-LSM (with how
    /// to enable it), then explains every configured rule. Asks the running agent when there is one; otherwise, as root,
    /// loads the probes briefly to prove what the kernel accepts. Exit
    /// status 1 when the agent cannot capture on this host or would refuse
    /// its configuration because others than root could change it, 2 when
    /// the configuration is invalid.
    Doctor {
        /// Configuration whose rules to explain.
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Judge from files only; never load BPF programs.
        #[arg(long)]
        no_load: bool,
        #[arg(long)]
        json: bool,
    },
    /// Central rules and every host's status over NATS (docs/fleet.md).
    Fleet(FleetArgs),
    /// Print a shell completion script (e.g. `guardrail completions bash >
    /// /etc/bash_completion.d/guardrail`).
    Completions { shell: clap_complete::Shell },
    /// Write man pages for guardrail and its subcommands into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

/// Where the fleet's NATS is, and who this client is on it.
#[derive(clap::Args, Debug)]
struct FleetArgs {
    /// NATS server URL(s), comma-separated (nats:// or tls://).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    url: String,
    /// A NATS credentials file (an operator's: pushing rules needs write
    /// access to the rules bucket, which hosts' credentials do not have).
    #[arg(long, global = true, conflicts_with_all = ["nkey", "token_file"])]
    creds: Option<PathBuf>,
    /// A file holding an NKey seed.
    #[arg(long, global = true, conflicts_with = "token_file")]
    nkey: Option<PathBuf>,
    /// A file holding a token.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// The key-value bucket of rule sets (`[fleet] rules_bucket`).
    #[arg(long, global = true, default_value = guardrail_agent::config::nats::DEFAULT_RULES_BUCKET)]
    rules_bucket: String,
    /// The key-value bucket of host status (`[fleet] status_bucket`).
    #[arg(long, global = true, default_value = guardrail_agent::config::nats::DEFAULT_STATUS_BUCKET)]
    status_bucket: String,
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Push rule sets to groups of hosts.
    #[command(subcommand)]
    Rules(FleetRulesCommand),
    /// Every host that reported: last seen, the central rule set it runs
    /// (and whether it is the one pushed for its group), the last refused
    /// set with its error, enforcement capability, losses. Exit 1 when a
    /// host does not run its group's pushed rule set.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Every host's live events (from the nats outputs' subjects).
    Tail {
        /// Only this host (its `host` in the nats output).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        filter: EventFilter,
        /// Print JSON lines (`{"host", "event"}`) instead of the human form.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// The nats outputs' `subject_prefix`.
        #[arg(long, default_value = guardrail_agent::outputs::nats::DEFAULT_PREFIX)]
        subject_prefix: String,
    },
}

/// Which live events to show (`tail`, `fleet tail`).
#[derive(clap::Args, Debug)]
struct EventFilter {
    /// Only these kinds (repeatable): exec, file, perm.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Only this process id.
    #[arg(long)]
    pid: Option<u32>,
    /// Only processes whose executable matches this glob.
    #[arg(long)]
    exe: Option<String>,
    /// Only events naming a path that matches this glob (`/etc/**`).
    #[arg(long)]
    path: Option<String>,
    /// Only events a rule decided on (alerts, denials, kills, …).
    #[arg(long)]
    alerts: bool,
}

impl From<EventFilter> for TailFilter {
    fn from(f: EventFilter) -> Self {
        TailFilter {
            kinds: f.kinds,
            pid: f.pid,
            exe: f.exe,
            path: f.path,
            decisions_only: f.alerts,
        }
    }
}

#[derive(Subcommand, Debug)]
enum FleetRulesCommand {
    /// Validate FILE as a central rule set (only `[[rule]]` and
    /// `[[window]]` tables, exactly as agents will) and put it as the rule
    /// set of group KEY; every agent with `rules_key = KEY` applies it.
    /// Invalid rules are not pushed (exit 2, errors with line and column).
    Push {
        file: PathBuf,
        /// The group: the agents' `[fleet] rules_key`.
        #[arg(long, value_name = "GROUP")]
        key: String,
    },
}

/// A host's records in a NATS stream (docs/outputs.md#nats).
#[derive(clap::Args, Debug)]
struct NatsSource {
    /// NATS server URL (nats:// or tls://).
    #[arg(long, value_name = "URL", requires = "host")]
    nats: Option<String>,
    /// The host whose records to check (its `host` in the output).
    #[arg(long, requires = "nats")]
    host: Option<String>,
    /// The JetStream stream (the output's `stream`).
    #[arg(long, default_value = guardrail_agent::outputs::nats::DEFAULT_STREAM, requires = "nats")]
    stream: String,
    /// The output's `subject_prefix`.
    #[arg(long, default_value = guardrail_agent::outputs::nats::DEFAULT_PREFIX, requires = "nats")]
    subject_prefix: String,
    /// A NATS credentials file.
    #[arg(long, requires = "nats", conflicts_with_all = ["nkey", "token_file"])]
    creds: Option<PathBuf>,
    /// A file holding an NKey seed.
    #[arg(long, requires = "nats", conflicts_with = "token_file")]
    nkey: Option<PathBuf>,
    /// A file holding a token.
    #[arg(long, requires = "nats")]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Check the hash chain of audit log files, given oldest first
    /// (e.g. audit.jsonl.2 audit.jsonl.1 audit.jsonl), or of one host's
    /// records in a NATS JetStream stream (--nats URL --host H). Exit
    /// status 1 and the first broken record when anything was edited,
    /// removed, inserted or reordered.
    ///
    /// A file of NATS records exported one per line, in stream order,
    /// verifies as a log file does.
    Verify {
        #[arg(required_unless_present = "nats", conflicts_with = "nats")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        nats: NatsSource,
    },
    /// Find records in the audit log (live and rotated files, oldest
    /// first) by time, rule, outcome, kind, path, program, process,
    /// process tree or user. Every criterion given must hold; one given
    /// several times holds when any of its values does.
    ///
    /// A --since query skips rotated files that end before it and
    /// binary-searches the first file that does not, so it reads little
    /// of a large log (see --stats).
    Search {
        #[command(flatten)]
        files: LogFiles,
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        select: Select,
        /// Print the records as stored (JSON lines, with their `chain`).
        #[arg(long)]
        json: bool,
        /// Check the hash chain of every record read (each file the search
        /// touches is then read from its first line); a broken record is
        /// reported as FILE:LINE, exit status 1.
        #[arg(long)]
        verify: bool,
        /// Print to stderr how many bytes were read, records parsed and
        /// matched.
        #[arg(long)]
        stats: bool,
    },
    /// Count what the audit log holds for a time range: per rule, outcome,
    /// kind, path prefix (`/etc/ssh`), executable and hour. Takes the same
    /// criteria as `log search`.
    Report {
        #[command(flatten)]
        files: LogFiles,
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        select: Select,
        /// Rows per table in the human form (the hours are all shown).
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
        /// Print to stderr how many bytes were read, records parsed and
        /// matched.
        #[arg(long)]
        stats: bool,
    },
}

/// Which audit log files to read.
#[derive(clap::Args, Debug, Clone)]
struct LogFiles {
    /// The configuration whose `[audit_log] path` names the log; its
    /// rotated files (PATH.1, PATH.2, …) are found next to it.
    #[arg(long, short, default_value = DEFAULT_PATH, value_name = "FILE")]
    config: PathBuf,
    /// Read these log files instead, oldest first (repeatable).
    #[arg(long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// A time range.
#[derive(clap::Args, Debug, Clone)]
struct Range {
    /// From this time: an age (30m, 2h, 7d, 1h30m), RFC 3339
    /// (2026-11-27T10:00:00Z) or a UTC day (2026-11-27).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this time (same forms).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

/// What to select in the audit log.
#[derive(clap::Args, Debug, Clone)]
struct Select {
    /// Decided by this rule (`decision.rule`).
    #[arg(long = "rule", value_name = "ID")]
    rules: Vec<String>,
    /// With this decision outcome: alerted, denied, killed, reverted,
    /// would_deny, would_kill, allowed.
    #[arg(long = "outcome", value_name = "OUTCOME")]
    outcomes: Vec<String>,
    /// exec, file, perm, loss, log_gap, or a kind as rules name it
    /// (file.write, file.rename, perm.chmod, file.*, …).
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Naming a path that matches this glob (`/etc/ssh/**`). Events name
    /// canonical paths: symlinked directories resolved.
    #[arg(long, value_name = "GLOB")]
    path: Option<String>,
    /// Done by a program matching this glob (`process.exe`).
    #[arg(long, value_name = "GLOB")]
    exe: Option<String>,
    /// Done by this process id (pids are reused: see --process-id).
    #[arg(long)]
    pid: Option<u32>,
    /// Done by this process (`process.id`, PID@START).
    #[arg(long, value_name = "PID@START")]
    process_id: Option<String>,
    /// Done by this process or any process it created, however deep (a
    /// login's shell: everything done in that session).
    #[arg(long, value_name = "PID@START")]
    lineage: Option<String>,
    /// Done by this user (real uid; a name is looked up in /etc/passwd).
    #[arg(long, value_name = "NAME|UID")]
    user: Option<String>,
    /// Done in a login of this user (login uid, `process.auid`): follows
    /// sudo and su.
    #[arg(long, value_name = "NAME|UID")]
    login_user: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Validate a configuration or rules file and everything it includes.
    /// Prints every problem with file:line:column; exit status 2 on error.
    /// Files that others than root could change (the file, an include, a
    /// directory on their paths) are errors for the agent's configuration,
    /// which the agent would refuse, and warnings for any other file.
    Check { file: PathBuf },
    /// Replay recorded events against the rules of FILE and show which
    /// rules would fire, how often, on what; or, with --against, against
    /// two rule sets, showing only the decisions that change.
    ///
    /// The events are JSON lines (`guardrail tail --json`, `guardrail-agent
    /// --print json`, an audit log) given with --events, or else the audit
    /// log's (see --config, --file, --since). With --against the exit
    /// status is 0 when no decision changes, 1 when some do, 2 on error:
    /// a gate for a rule change in CI.
    Test {
        /// The rules: a configuration or rules file.
        #[arg(required_unless_present = "against", conflicts_with = "against")]
        file: Option<PathBuf>,
        /// Compare the rules of CURRENT and CANDIDATE (configuration or
        /// rules files): decisions that appear, disappear or change
        /// outcome (alerted → denied), by rule, with examples.
        #[arg(long, num_args = 2, value_names = ["CURRENT", "CANDIDATE"])]
        against: Vec<PathBuf>,
        /// The recorded events; `-` for standard input.
        #[arg(long, conflicts_with_all = ["files", "since", "until"])]
        events: Option<PathBuf>,
        #[command(flatten)]
        log: LogFiles,
        #[command(flatten)]
        range: Range,
        /// Report as JSON.
        #[arg(long)]
        json: bool,
        /// Report outcomes as on a host where the kernel can deny and kill
        /// (default: as if it could; use --no-enforcement for a host
        /// without BPF-LSM).
        #[arg(long)]
        no_enforcement: bool,
    },
    /// The rules in force on the running agent, with hit counts.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Failures whose exit status says which: `main` maps them (anything
/// else exits 1 with its message).
#[derive(Debug, thiserror::Error)]
enum Exit {
    /// Invalid rules (already printed, with file and line): exit 2.
    #[error("invalid rules")]
    Invalid,
    /// A host where the agent cannot capture: exit 1.
    #[error("this host cannot run guardrail")]
    Unfit,
    /// `rules test --against`: decisions change (already printed): exit 1.
    #[error("decisions change")]
    Changed,
    /// A broken audit log chain (already printed): exit 1.
    #[error("broken audit log")]
    Broken,
    /// A failure where exit 1 means something else (`rules test
    /// --against`): exit 2, with its message.
    #[error("{0}")]
    Fails2(String),
}

fn exit_is(e: &anyhow::Error, which: fn(&Exit) -> bool) -> bool {
    e.downcast_ref::<Exit>().is_some_and(which)
}

fn main() -> std::process::ExitCode {
    // `guardrail tail | head` and the like: end quietly when the reader
    // goes away, as Unix tools do, instead of panicking on EPIPE (Rust
    // ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default disposition at start, before
    // any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let Err(e) = real_main() else {
        return std::process::ExitCode::SUCCESS;
    };
    match e.downcast_ref::<Exit>() {
        Some(Exit::Invalid) => std::process::ExitCode::from(2),
        Some(Exit::Broken | Exit::Unfit | Exit::Changed) => std::process::ExitCode::from(1),
        Some(Exit::Fails2(why)) => {
            eprintln!("error: {why}");
            std::process::ExitCode::from(2)
        }
        None => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn verify_log(files: &[PathBuf]) -> Result<()> {
    let mut texts = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    match guardrail_engine::chain::verify(&texts) {
        Ok(n) => {
            println!("{n} records verified: the chain is intact");
            Ok(())
        }
        Err(broken) => {
            eprintln!("BROKEN at {broken}");
            Err(Exit::Broken.into())
        }
    }
}

async fn verify_nats(url: String, n: NatsSource) -> Result<()> {
    use guardrail_agent::outputs::nats;
    let host = n.host.unwrap_or_default();
    let src = nats::Source {
        url,
        stream: n.stream,
        subject_prefix: n.subject_prefix,
        host: host.clone(),
        creds: n.creds,
        nkey: n.nkey,
        token_file: n.token_file,
    };
    let records = nats::read_host(&src).await?;
    anyhow::ensure!(
        !records.is_empty(),
        "stream {} holds no records of host {host}",
        src.stream
    );
    match nats::verify_host(&host, &records) {
        Ok(c) => {
            println!(
                "{} records of host {host} verified: the chain is intact",
                c.records
            );
            for s in c.restarts {
                println!(
                    "a new chain begins at stream sequence {s} (the output's spool started afresh)"
                );
            }
            Ok(())
        }
        Err((seq, why)) => {
            eprintln!("BROKEN at stream {} sequence {seq}: {why}", src.stream);
            Err(Exit::Broken.into())
        }
    }
}

/// The audit log files to read, oldest first: those given, or the live
/// log the configuration names and its rotated files.
fn log_files(src: &LogFiles) -> Result<Vec<PathBuf>> {
    if !src.files.is_empty() {
        for f in &src.files {
            anyhow::ensure!(f.exists(), "{}: no such file", f.display());
        }
        return Ok(src.files.clone());
    }
    let config = Config::load(&src.config).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(the audit log's location is the configuration's [audit_log] path: give another configuration with --config, or the log files with --file)"
        )
    })?;
    let live = &config.audit_log.path;
    let files = search::files::discover(live).with_context(|| {
        format!(
            "listing the audit log {} ([audit_log] path of {})",
            live.display(),
            src.config.display()
        )
    })?;
    if files.is_empty() {
        let why = if config.audit_log.enabled {
            "nothing written yet, or the agent never ran with this configuration"
        } else {
            "[audit_log] enabled = false"
        };
        bail!(
            "no audit log at {} ({why}; from {})",
            live.display(),
            src.config.display()
        );
    }
    Ok(files)
}

impl Range {
    fn resolve(&self) -> Result<(Option<jiff::Timestamp>, Option<jiff::Timestamp>)> {
        let now = jiff::Timestamp::now();
        let parse = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| search::time::parse(t, now).with_context(|| format!("--{flag}")))
                .transpose()
        };
        Ok((parse("since", &self.since)?, parse("until", &self.until)?))
    }
}

/// A user given by name or uid.
fn uid_of(flag: &str, user: &Option<String>, names: &Names) -> Result<Option<u32>> {
    let Some(user) = user else { return Ok(None) };
    if let Ok(uid) = user.parse() {
        return Ok(Some(uid));
    }
    match names.user(user) {
        Some(uid) => Ok(Some(uid)),
        None => bail!("--{flag}: no user named {user:?} in /etc/passwd (give a uid)"),
    }
}

impl Select {
    fn criteria(&self) -> Result<Criteria> {
        let names = if self.user.is_some() || self.login_user.is_some() {
            Names::system()
        } else {
            Names::default()
        };
        if let Some(p) = &self.path {
            path_hint(p);
        }
        Ok(Criteria {
            rules: self.rules.clone(),
            outcomes: self.outcomes.clone(),
            kinds: self.kinds.clone(),
            path: self.path.clone(),
            exe: self.exe.clone(),
            pid: self.pid,
            process_id: self.process_id.clone(),
            lineage: self.lineage.clone(),
            uid: uid_of("user", &self.user, &names)?,
            login_uid: uid_of("login-user", &self.login_user, &names)?,
        })
    }
}

/// Events name absolute, canonical paths: say so when a --path cannot
/// match one, or names a path that is canonically another on this host.
fn path_hint(pattern: &str) {
    if !pattern.starts_with('/') && !pattern.starts_with('*') {
        eprintln!(
            "guardrail: note: events name absolute paths; {pattern:?} matches only a path written exactly so (did you mean \"**/{pattern}\"?)"
        );
        return;
    }
    if pattern.contains(['*', '?', '[', '{']) {
        return;
    }
    if let Ok(real) = std::fs::canonicalize(pattern) {
        if real.as_os_str() != pattern.trim_end_matches('/') {
            eprintln!(
                "guardrail: note: on this host {pattern} is {}; events name canonical paths (symlinked directories resolved)",
                real.display()
            );
        }
    }
}

/// Run a search over `files`, printing notes; the search and how it ended.
fn run_search(
    files: &[PathBuf],
    query: Query,
    criteria: &Criteria,
    sink: &mut dyn FnMut(&search::Found) -> std::io::Result<Flow>,
) -> Result<Search> {
    let mut search = Search::new(query, criteria.compile()?);
    let result = search.run(files, sink);
    for note in &search.notes {
        eprintln!("guardrail: {note}");
    }
    match result {
        Ok(_) => Ok(search),
        Err(SearchError::Broken { place, why }) => {
            eprintln!("BROKEN at {place}: {why}");
            Err(Exit::Broken.into())
        }
        Err(SearchError::Io { file, source })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            bail!("{file}: {source} (the audit log is root's, and readable by agent.admin_group when one is configured)")
        }
        Err(e) => Err(e.into()),
    }
}

/// What a search found, as notes on stderr: losses in the range, rules
/// asked for that decided nothing in it.
fn after_search(
    search: &Search,
    criteria: &Criteria,
    config: Option<&std::path::Path>,
    verify: bool,
    stats: bool,
) {
    if search.stats.lost > 0 {
        eprintln!(
            "guardrail: note: {} records were lost in this range (loss and log_gap records): the answer may be incomplete",
            search.stats.lost
        );
    }
    for rule in &criteria.rules {
        if search.rules_seen.contains(rule) {
            continue;
        }
        let mut note =
            format!("guardrail: note: no event in the range was decided by rule {rule:?}");
        if let Some(set) = config.and_then(|c| load_rules(c, Names::system()).ok()) {
            if !set.rules.iter().any(|r| &r.id == rule) {
                let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
                let hint = guardrail_engine::rules::kinds::closest(rule, &ids)
                    .map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
                note += &format!("; {} defines no such rule{hint}", config.unwrap().display());
            }
        }
        eprintln!("{note}");
    }
    if verify {
        let s = &search.stats;
        let skipped = if s.files_skipped > 0 {
            let n = s.files_skipped;
            let files = if n == 1 { "file" } else { "files" };
            format!(" ({n} {files} before --since skipped, not verified)")
        } else {
            String::new()
        };
        eprintln!(
            "guardrail: {} records verified: the chain is intact{skipped}",
            s.verified
        );
    }
    if stats {
        let s = &search.stats;
        eprintln!(
            "guardrail: stats: read {} of {} bytes ({:.2}%) in {} files ({} skipped whole), {} records parsed, {} in range, {} matched",
            s.bytes_read,
            s.bytes_total,
            if s.bytes_total == 0 { 0.0 } else { s.bytes_read as f64 * 100.0 / s.bytes_total as f64 },
            s.files,
            s.files_skipped,
            s.records_parsed,
            s.in_range,
            s.matched
        );
    }
}

/// Writes found records; a closed stdout (`| head`) ends the search.
fn print_record(
    out: &mut impl Write,
    found: &search::Found,
    json: bool,
    colour: bool,
    day: &mut String,
) -> std::io::Result<Flow> {
    let written = if json {
        writeln!(out, "{}", found.line)
    } else {
        // The human line shows the time of day: say when the day changes.
        let date = found.record.time().get(..10).unwrap_or_default();
        if date != day.as_str() {
            *day = date.to_string();
            let _ = writeln!(out, "── {date} (UTC)");
        }
        match found.record {
            Parsed::Event(e) => writeln!(out, "{}", human::line(e, colour)),
            Parsed::Gap { time, lost } => writeln!(out, "{}", human::gap_line(time, *lost, colour)),
        }
    };
    match written {
        Ok(()) => Ok(Flow::Continue),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
        Err(e) => Err(e),
    }
}

fn log_search(
    src: &LogFiles,
    range: &Range,
    select: &Select,
    json: bool,
    verify: bool,
    stats: bool,
) -> Result<()> {
    let (since, until) = range.resolve()?;
    let criteria = select.criteria()?;
    criteria.compile()?;
    let files = log_files(src)?;
    let colour = std::io::stdout().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut day = String::new();
    let query = Query {
        since,
        until,
        verify,
        follow: false,
    };
    let search = run_search(&files, query, &criteria, &mut |f| {
        print_record(&mut out, f, json, colour, &mut day)
    });
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let search = search?;
    let config = src.files.is_empty().then_some(src.config.as_path());
    after_search(&search, &criteria, config, verify, stats);
    Ok(())
}

fn log_report(
    src: &LogFiles,
    range: &Range,
    select: &Select,
    top: usize,
    json: bool,
    stats: bool,
) -> Result<()> {
    let (since, until) = range.resolve()?;
    let criteria = select.criteria()?;
    criteria.compile()?;
    let files = log_files(src)?;
    let mut report = Report::default();
    let query = Query {
        since,
        until,
        ..Default::default()
    };
    let search = run_search(&files, query, &criteria, &mut |f| {
        report.add(f.record);
        Ok(Flow::Continue)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render(top));
    }
    let config = src.files.is_empty().then_some(src.config.as_path());
    after_search(&search, &criteria, config, false, stats);
    Ok(())
}

/// Where `rules test` takes its events from.
struct EventSource {
    events: Option<PathBuf>,
    log: LogFiles,
    range: Range,
}

impl EventSource {
    /// Hand every event to `each`; lines that were not events.
    fn each(&self, each: &mut dyn FnMut(&Event)) -> Result<u64> {
        let mut skipped = 0;
        match &self.events {
            Some(events) => {
                let input: Box<dyn std::io::BufRead> = if events.as_os_str() == "-" {
                    Box::new(std::io::stdin().lock())
                } else {
                    let f = std::fs::File::open(events)
                        .with_context(|| format!("opening {}", events.display()))?;
                    Box::new(std::io::BufReader::with_capacity(1 << 20, f))
                };
                events_of(input, &mut skipped, each)
                    .with_context(|| format!("reading {}", events.display()))?;
            }
            None => {
                let (since, until) = self.range.resolve()?;
                let files = log_files(&self.log)?;
                let query = Query {
                    since,
                    until,
                    ..Default::default()
                };
                let search = run_search(&files, query, &Criteria::default(), &mut |f| {
                    if let Parsed::Event(e) = f.record {
                        each(e);
                    }
                    Ok(Flow::Continue)
                })?;
                skipped += search.notes.len() as u64;
            }
        }
        Ok(skipped)
    }
}

fn print_example(ex: &guardrail_engine::replay::Example) {
    println!(
        "    #{} {} {} {} {}",
        ex.seq,
        ex.time,
        ex.op,
        human::escape(ex.exe.as_deref().unwrap_or("?")),
        human::escape(ex.path.as_deref().unwrap_or(""))
    );
}

fn rules_test(
    file: &std::path::Path,
    source: &EventSource,
    enforcement: Enforcement,
    json: bool,
) -> Result<()> {
    let set = load_or_report(file)?;
    let started = std::time::Instant::now();
    let mut replay = Replay::new(&set, enforcement);
    let skipped = source.each(&mut |e| replay.event(e))?;
    let mut report = replay.report;
    report.skipped_lines += skipped;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} events replayed in {:.2}s, {} decided by a rule, {} lines skipped",
        report.events,
        started.elapsed().as_secs_f64(),
        report.decided,
        report.skipped_lines
    );
    for r in &report.rules {
        let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{:<32} {:>8} hits  {}", r.rule, r.hits, outcomes.join(", "));
        r.examples.iter().for_each(print_example);
    }
    Ok(())
}

fn compare_rules(
    current: &std::path::Path,
    candidate: &std::path::Path,
    source: &EventSource,
    enforcement: Enforcement,
    json: bool,
) -> Result<()> {
    let current_set = load_or_report(current)?;
    let candidate_set = load_or_report(candidate)?;
    let mut compare = Compare::new(&current_set, &candidate_set, enforcement);
    let skipped = source.each(&mut |e| compare.event(e))?;
    let mut result: Comparison = compare.finish();
    result.skipped_lines += skipped;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if result.changes.is_empty() {
        println!(
            "{} events replayed: no decision changes from {} to {}",
            result.events,
            current.display(),
            candidate.display()
        );
    } else {
        println!(
            "{} events replayed: {} decisions change from {} to {}",
            result.events,
            result.changed,
            current.display(),
            candidate.display()
        );
        for c in &result.changes {
            let n = c.events;
            println!("{c}   {n} event{}", if n == 1 { "" } else { "s" });
            c.examples.iter().for_each(print_example);
        }
    }
    if result.skipped_lines > 0 {
        eprintln!(
            "guardrail: {} lines were not events and were skipped",
            result.skipped_lines
        );
    }
    if result.changed > 0 {
        return Err(Exit::Changed.into());
    }
    Ok(())
}

/// Load FILE's rules, printing every problem; `Invalid` if there were any.
fn load_or_report(file: &std::path::Path) -> Result<RuleSet> {
    let config = Config::load(file);
    let rules = load_rules(file, Names::system());
    let mut bad = false;
    if let Err(e) = &config {
        eprintln!("{e}");
        bad = true;
    }
    match rules {
        Ok(set) if !bad => Ok(set),
        Ok(_) => Err(Exit::Invalid.into()),
        Err(e) => {
            for problem in &e.0 {
                eprintln!("{problem}");
            }
            eprintln!("{} problem(s); nothing was loaded", e.0.len());
            Err(Exit::Invalid.into())
        }
    }
}

/// Who besides root could change FILE and the files it includes, judged
/// as the agent (run by root) judges them when it loads them.
fn trust_report(file: &std::path::Path, set: &RuleSet) -> Vec<String> {
    let mut report = Vec::new();
    let admin = match Config::load(file).ok().and_then(|c| c.agent.admin_group) {
        None => None,
        Some(name) => match AdminGroup::resolve(&name, &Names::system()) {
            Ok(group) => Some(group),
            Err(e) => {
                report.push(e.to_string());
                None
            }
        },
    };
    let problems = trust::check_all(&RealFs::new(), &Policy::root(admin), file, set);
    report.extend(problems.iter().map(ToString::to_string));
    report
}

/// Whether FILE is what the agent loads: the default configuration, or
/// the one the running agent says it uses.
async fn is_agent_config(socket: &std::path::Path, file: &std::path::Path) -> bool {
    let Ok(file) = file.canonicalize() else {
        return false;
    };
    let same = |other: &std::path::Path| other.canonicalize().is_ok_and(|o| o == file);
    if same(std::path::Path::new(DEFAULT_PATH)) {
        return true;
    }
    let running = reply(socket, &Request::Status).await.ok();
    running
        .and_then(|line| serde_json::from_str::<Status>(&line).ok())
        .and_then(|s| s.config_file)
        .is_some_and(|c| same(std::path::Path::new(&c)))
}

async fn rules(socket: &std::path::Path, cmd: RulesCommand) -> Result<()> {
    match cmd {
        RulesCommand::Check { file } => {
            let set = load_or_report(&file)?;
            let untrusted = trust_report(&file, &set);
            if !untrusted.is_empty() {
                if is_agent_config(socket, &file).await {
                    for problem in &untrusted {
                        eprintln!("{problem}");
                    }
                    eprintln!(
                        "{} problem(s): the agent refuses a configuration that others can change",
                        untrusted.len()
                    );
                    return Err(Exit::Invalid.into());
                }
                // A draft, e.g. in a home directory: fine to check, but
                // the agent would refuse it where it is.
                for problem in &untrusted {
                    eprintln!("warning: {problem}");
                }
                eprintln!(
                    "warning: the agent would refuse {} as its configuration until only root can change it",
                    file.display()
                );
            }
            println!(
                "{}: valid ({} rules, {} windows, {} files)",
                file.display(),
                set.rules.len(),
                set.windows.len(),
                set.files.len()
            );
            Ok(())
        }
        RulesCommand::Test {
            file,
            against,
            events,
            log,
            range,
            json,
            no_enforcement,
        } => {
            let enforcement = Enforcement {
                deny: !no_enforcement,
                kill: !no_enforcement,
            };
            let source = EventSource { events, log, range };
            match (file, against.as_slice()) {
                (Some(file), _) => rules_test(&file, &source, enforcement, json),
                (None, [current, candidate]) => {
                    // Exit 1 means "decisions change": every failure is 2.
                    compare_rules(current, candidate, &source, enforcement, json).map_err(|e| {
                        if exit_is(&e, |x| matches!(x, Exit::Invalid | Exit::Changed)) {
                            e
                        } else {
                            Exit::Fails2(format!("{e:#}")).into()
                        }
                    })
                }
                _ => bail!("give a rules FILE, or --against CURRENT CANDIDATE"),
            }
        }
        RulesCommand::List { json } => {
            let line = reply(socket, &Request::Rules).await?;
            if json {
                println!("{line}");
                return Ok(());
            }
            let list: Vec<RuleSummary> = serde_json::from_str(&line)?;
            println!(
                "{:<32} {:<6} {:<8} {:<9} {:>8}  defined at",
                "rule", "action", "mode", "severity", "hits"
            );
            for r in list {
                println!(
                    "{:<32} {:<6} {:<8} {:<9} {:>8}  {}",
                    r.id,
                    format!("{:?}", r.action).to_lowercase(),
                    format!("{:?}", r.mode).to_lowercase(),
                    format!("{:?}", r.severity).to_lowercase(),
                    r.hits,
                    r.origin
                );
            }
            Ok(())
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Rules(cmd) => rules(&cli.socket, cmd).await,
            Command::Log(LogCommand::Verify { files, nats }) => match nats.nats.clone() {
                Some(url) => verify_nats(url, nats).await,
                None => verify_log(&files),
            },
            Command::Log(LogCommand::Search {
                files,
                range,
                select,
                json,
                verify,
                stats,
            }) => log_search(&files, &range, &select, json, verify, stats),
            Command::Log(LogCommand::Report {
                files,
                range,
                select,
                top,
                json,
                stats,
            }) => log_report(&files, &range, &select, top, json, stats),
            Command::Tail {
                filter,
                json,
                count,
                since,
            } => {
                let filter = TailFilter::from(filter);
                filter.compile()?;
                match since {
                    None => tail(&cli.socket, filter, json, count).await,
                    Some(since) => {
                        let since = search::time::parse(&since, jiff::Timestamp::now())?;
                        tail_since(&cli.socket, filter, json, count, since).await
                    }
                }
            }
            Command::Status { json } => status(&cli.socket, json).await,
            Command::Fleet(args) => fleet(args).await,
            Command::Doctor {
                config,
                no_load,
                json,
            } => doctor(&cli.socket, &config, no_load, json).await,
            Command::Completions { shell } => {
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "guardrail", &mut std::io::stdout());
                Ok(())
            }
            Command::Man { dir } => {
                std::fs::create_dir_all(&dir)?;
                clap_mangen::generate_to(Cli::command(), &dir)
                    .with_context(|| format!("writing man pages to {}", dir.display()))
            }
        }
    })
}

async fn fleet(args: FleetArgs) -> Result<()> {
    use guardrail_agent::fleet;
    let creds = fleet::Credentials {
        creds: args.creds.clone(),
        nkey: args.nkey.clone(),
        token_file: args.token_file.clone(),
    };
    match args.command {
        FleetCommand::Rules(FleetRulesCommand::Push { file, key }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Validated as the agents will: as a central set, with its
            // errors named by the file pushed.
            let central = guardrail_engine::rules::CentralText {
                origin: &file,
                text: &text,
            };
            let empty = std::path::Path::new("/dev/null");
            if let Err(e) = guardrail_engine::rules::compile_with_central(
                empty,
                "",
                Names::system(),
                Some(central),
            ) {
                eprintln!("{e}");
                eprintln!("not pushed: the rule set is invalid");
                return Err(Exit::Invalid.into());
            }
            let client = fleet::connect(&args.url, &creds, "guardrail fleet").await?;
            let revision = fleet::push(client, &args.rules_bucket, &key, &text).await?;
            println!(
                "pushed {} as {}/{key} (revision {revision}, {})",
                file.display(),
                args.rules_bucket,
                fleet::rules_hash(text.as_bytes())
            );
            Ok(())
        }
        FleetCommand::Status { json } => {
            let client = fleet::connect(&args.url, &creds, "guardrail fleet").await?;
            let rows = fleet::fleet_status(client, &args.rules_bucket, &args.status_bucket).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print_fleet(&rows);
            }
            if rows.iter().any(|r| !r.in_sync) {
                return Err(Exit::Changed.into());
            }
            Ok(())
        }
        FleetCommand::Tail {
            host,
            filter,
            json,
            count,
            subject_prefix,
        } => {
            let filter = TailFilter::from(filter).compile()?;
            let client = fleet::connect(&args.url, &creds, "guardrail fleet tail").await?;
            let subject = format!("{subject_prefix}.{}.>", host.as_deref().unwrap_or("*"));
            let mut sub = client.subscribe(subject).await?;
            let colour = std::io::stdout().is_terminal();
            let mut seen = 0;
            use futures_util::StreamExt;
            while let Some(m) = sub.next().await {
                let Ok(record) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                    continue;
                };
                let Ok(event) = serde_json::from_value::<Event>(record["event"].clone()) else {
                    continue;
                };
                if !filter.matches(&event) {
                    continue;
                }
                let host = record["host"].as_str().unwrap_or("-");
                let mut stdout = std::io::stdout().lock();
                if json {
                    let line = serde_json::json!({"host": host, "event": record["event"]});
                    writeln!(stdout, "{line}")?;
                } else {
                    writeln!(stdout, "{host:<16} {}", human::line(&event, colour))?;
                }
                stdout.flush()?;
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            Ok(())
        }
    }
}

fn print_fleet(rows: &[guardrail_agent::fleet::FleetRow]) {
    let short = |h: &Option<String>| {
        h.as_deref()
            .map(|h| h.trim_start_matches("sha256:").chars().take(12).collect())
            .unwrap_or_else(|| "-".to_string())
    };
    println!(
        "{:<20} {:<10} {:>9} {:<12} {:<8} {:<9} {:>10} {:>10}  version",
        "host", "group", "last seen", "rules", "pushed?", "enforce", "lost kern", "lost out"
    );
    for r in rows {
        let s = &r.status;
        let seen = r.age_s.map_or("?".into(), |a| format!("{a}s ago"));
        let enforce = if s.enforcement.deny {
            "deny+kill"
        } else if s.enforcement.kill {
            "kill"
        } else {
            "alert"
        };
        println!(
            "{:<20} {:<10} {:>9} {:<12} {:<8} {:<9} {:>10} {:>10}  {}",
            s.host,
            s.rules_key,
            seen,
            short(&s.central.rules_hash),
            if r.in_sync { "yes" } else { "NO" },
            enforce,
            s.lost_kernel,
            s.lost_outputs,
            s.version
        );
        if let Some(e) = &s.central.rules_error {
            println!(
                "  refused {} (revision {}):",
                short(&s.central.rejected_hash),
                s.central.rejected_revision.unwrap_or(0)
            );
            for line in e.lines() {
                println!("    {line}");
            }
        }
        if s.central.rules_deleted {
            println!("  the group's rule set was deleted; the last applied one stays in force");
        }
    }
}

async fn tail(
    socket: &std::path::Path,
    filter: TailFilter,
    json: bool,
    count: Option<u64>,
) -> Result<()> {
    let mut lines = request(
        socket,
        &Request::Tail {
            filter,
            announce: false,
        },
    )
    .await?;
    let colour = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut seen = 0;
    while let Some(line) = lines.next_line().await? {
        if let Ok(e) = serde_json::from_str::<ErrorReply>(&line) {
            bail!("agent refused: {}", e.error);
        }
        if let Ok(s) = serde_json::from_str::<TailSkipped>(&line) {
            eprintln!(
                "guardrail: this client fell behind; {} events were not shown",
                s.tail_skipped
            );
            continue;
        }
        if json {
            writeln!(stdout, "{line}")?;
        } else {
            let event: Event = serde_json::from_str(&line)?;
            writeln!(stdout, "{}", human::line(&event, colour))?;
        }
        stdout.flush()?;
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

/// `tail --since`: the audit log from `since`, then the live stream.
///
/// The live stream is subscribed to first, and buffered: its first line
/// says that every event after `after_seq` will be sent. The log is read
/// until it holds `after_seq` (the writer may lag a little behind the
/// stream), then the buffered events are printed from the one after the
/// last this history showed. `seq` restarts with each agent run: only
/// history of this run (no older than `agent_started`) counts.
async fn tail_since(
    socket: &std::path::Path,
    filter: TailFilter,
    json: bool,
    count: Option<u64>,
    since: jiff::Timestamp,
) -> Result<()> {
    let status: Status = serde_json::from_str(&reply(socket, &Request::Status).await?)
        .context("the agent's status")?;
    let Some(log) = status.audit_log else {
        bail!("the agent keeps no audit log ([audit_log] enabled = false): --since reads the history from it");
    };
    let live_path = PathBuf::from(&log.path);
    let mut lines = request(
        socket,
        &Request::Tail {
            filter: filter.clone(),
            announce: true,
        },
    )
    .await?;
    let Some(first) = lines.next_line().await? else {
        bail!("the agent closed the connection without answering");
    };
    if let Ok(e) = serde_json::from_str::<ErrorReply>(&first) {
        bail!(
            "agent refused: {} (an agent older than this guardrail cannot join history to the live stream: use tail without --since)",
            e.error
        );
    }
    let start: TailStart = serde_json::from_str(&first).with_context(|| {
        format!("the agent's first tail line is not where the stream starts: {first}")
    })?;
    // Keep reading while the history is: a client that falls behind is
    // skipped events by the agent.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let history = tokio::task::spawn_blocking(move || {
        history(&live_path, filter, json, count, since, start.tail_start)
    })
    .await??;
    let Some(last_history_seq) = history.last_seq else {
        return Ok(());
    };
    let colour = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut seen = history.printed;
    while let Some(line) = rx.recv().await {
        if let Ok(s) = serde_json::from_str::<TailSkipped>(&line) {
            eprintln!(
                "guardrail: this client fell behind; {} events were not shown",
                s.tail_skipped
            );
            continue;
        }
        let event: Event = serde_json::from_str(&line)?;
        if last_history_seq.is_some_and(|last| event.seq <= last) {
            continue; // shown from the log already
        }
        if json {
            writeln!(stdout, "{line}")?;
        } else {
            writeln!(stdout, "{}", human::line(&event, colour))?;
        }
        stdout.flush()?;
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

/// What the history part of `tail --since` showed.
struct History {
    printed: u64,
    /// The `seq` of this agent run's last event in the log (None: none
    /// yet); None outside: `--count` was reached, stop.
    last_seq: Option<Option<u64>>,
}

/// Print the log's events from `since` that pass `filter`, reading on
/// until the log reaches the live stream's start.
fn history(
    live: &std::path::Path,
    filter: TailFilter,
    json: bool,
    count: Option<u64>,
    since: jiff::Timestamp,
    start: guardrail_agent::protocol::StreamStart,
) -> Result<History> {
    let run_started: jiff::Timestamp = start
        .agent_started
        .parse()
        .context("the agent's start time")?;
    let filter = filter.compile()?;
    let files = search::files::discover(live)
        .with_context(|| format!("listing the audit log {}", live.display()))?;
    let query = Query {
        since: Some(since),
        follow: true,
        ..Default::default()
    };
    let mut search = Search::new(query, Criteria::default().compile()?);
    let colour = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut printed = 0;
    let mut sink = |f: &search::Found| -> std::io::Result<Flow> {
        match f.record {
            Parsed::Event(e) if !filter.matches(e) => return Ok(Flow::Continue),
            Parsed::Event(e) if json => {
                // As the live stream prints it: without the chain.
                let line = guardrail_engine::chain::open(f.line)
                    .map_or(f.line.to_string(), |o| o.event_json);
                writeln!(stdout, "{line}")?
            }
            Parsed::Event(e) => writeln!(stdout, "{}", human::line(e, colour))?,
            Parsed::Gap { time, lost } if json => writeln!(
                stdout,
                "{{\"kind\":\"log_gap\",\"time\":\"{time}\",\"lost\":{lost}}}"
            )?,
            Parsed::Gap { time, lost } => {
                writeln!(stdout, "{}", human::gap_line(time, *lost, colour))?
            }
        }
        stdout.flush()?;
        printed += 1;
        Ok(if count.is_some_and(|c| printed >= c) {
            Flow::Stop
        } else {
            Flow::Continue
        })
    };
    let fail = |e: SearchError| anyhow::anyhow!("reading the audit log: {e}");
    let mut pos = search.run(&files, &mut sink).map_err(fail)?;
    let this_run = |s: &Search| {
        s.last_seen
            .filter(|(_, t)| *t >= run_started)
            .map(|(seq, _)| seq)
    };
    // The writer lags the live stream by a moment at most; a disk that
    // refuses writes holds it back for longer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !search.stopped() && start.after_seq > this_run(&search).unwrap_or(0) {
        if std::time::Instant::now() > deadline {
            eprintln!(
                "guardrail: the audit log has not reached the live stream's start (event {}) in 10 s (is the disk full? see `guardrail status`): events just before the live ones may be missing",
                start.after_seq
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        if let Some(pos) = &mut pos {
            search.follow(pos, &mut sink).map_err(fail)?;
        } else {
            pos = search
                .run(&search::files::discover(live)?, &mut sink)
                .map_err(fail)?;
        }
    }
    for note in &search.notes {
        eprintln!("guardrail: {note}");
    }
    Ok(History {
        printed,
        last_seq: (!search.stopped()).then(|| this_run(&search)),
    })
}

/// The agent's one-line answer to `req`.
async fn reply(socket: &std::path::Path, req: &Request) -> Result<String> {
    let mut lines = request(socket, req).await?;
    let Some(line) = lines.next_line().await? else {
        bail!("the agent closed the connection without answering");
    };
    Ok(line)
}

async fn status(socket: &std::path::Path, json: bool) -> Result<()> {
    let line = reply(socket, &Request::Status).await?;
    if json {
        println!("{line}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(&line)?;
    let c = &s.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!(
        "guardrail-agent {} (pid {}), up {}s",
        s.version, s.pid, s.uptime_s
    );
    println!("kernel            {}", c.kernel);
    if !s.probes.is_empty() {
        println!("probes            {}", s.probes);
    }
    match c.syscall_probes.as_str() {
        "" => println!("tracepoints       {} attached", s.tracepoints_attached),
        how => println!(
            "tracepoints       {} attached (syscalls: {how})",
            s.tracepoints_attached
        ),
    }
    println!("ring buffer       {} bytes", s.ring_buffer_bytes);
    println!("BTF task fields   {}", yes(c.btf));
    println!("BPF-LSM (deny)    {}", yes(c.bpf_lsm));
    if let Some(note) = &c.bpf_lsm_note {
        println!("                  {note}");
    }
    if !c.missing_syscalls.is_empty() {
        println!("not on this kernel {}", c.missing_syscalls.join(", "));
    }
    for unseen in &c.uring_unseen {
        println!("io_uring unseen    {unseen}");
    }
    println!(
        "events            {} ({:.1}/s)",
        s.events_total, s.events_per_s
    );
    println!(
        "lost              {} (ring buffer {}, in-flight table {})",
        s.lost_total, s.lost_ringbuf, s.lost_inflight
    );
    println!(
        "processes         {} tracked ({} fork/exit records lost)",
        s.processes_tracked, s.lost_process_records
    );
    println!("decode errors     {}", s.decode_errors);
    println!(
        "config            {} ({} rules, {} decisions)",
        s.config_file.as_deref().unwrap_or("none (defaults)"),
        s.rules,
        s.decisions
    );
    println!(
        "enforcement       deny {}, kill {}",
        if s.enforcement.deny {
            "in kernel"
        } else {
            "fallback"
        },
        if s.enforcement.kill {
            "in kernel"
        } else {
            "fallback"
        }
    );
    if let Some(r) = &s.last_reload {
        match &r.error {
            None => println!("last reload       ok at {}", r.time),
            Some(e) => println!(
                "last reload       FAILED at {} (previous rules in force):\n{e}",
                r.time
            ),
        }
    }
    if let Some(w) = s.read_watch.filter(|w| w.files > 0 || w.left_out > 0) {
        let left_out = if w.left_out > 0 {
            format!(
                ", {} left out (set full): their reads are not seen",
                w.left_out
            )
        } else {
            String::new()
        };
        println!("watched reads     {} files{left_out}", w.files);
    }
    if s.lineage_marks_lost > 0 {
        println!(
            "lineage           {} processes not marked (table full): not exempt by ancestor",
            s.lineage_marks_lost
        );
    }
    println!(
        "pinned state      {}",
        continuity_line(s.continuity.as_ref())
    );
    if let Some(f) = &s.fleet {
        for line in fleet_lines(f) {
            println!("{line}");
        }
    }
    println!("tail clients      {}", s.tail_clients);
    println!(
        "redaction         {} ({} events redacted)",
        if s.redaction_enabled { "on" } else { "OFF" },
        s.redacted_events
    );
    for o in &s.outputs {
        println!(
            "output {:<10} {} sent, {} failed, {} dropped (queue or spool full), {} retries, {} queued",
            o.name, o.sent, o.failed, o.dropped, o.retries, o.queued
        );
        if let Some(b) = o.spooled_bytes {
            println!("                  spool: {b} bytes on disk");
        }
        if let Some(e) = &o.last_error {
            println!("                  last error: {e}");
        }
    }
    Ok(())
}

/// The central rules' part of `guardrail status`.
fn fleet_lines(f: &guardrail_agent::protocol::FleetSnapshot) -> Vec<String> {
    let mut lines = vec![format!(
        "fleet             {} ({}/{}): {}",
        f.servers,
        f.rules_bucket,
        f.rules_key,
        match (&f.connection_error, f.connected) {
            (Some(e), _) => format!("NOT CONNECTED, retrying: {e}"),
            (None, true) => "watching".to_string(),
            (None, false) => "connecting".to_string(),
        }
    )];
    lines.push(match (&f.central.rules_hash, f.central.rules_revision) {
        (Some(hash), Some(rev)) => {
            format!("                  central rules {hash} (revision {rev}) in force")
        }
        _ => "                  no central rule set applied: local rules only".to_string(),
    });
    if let (Some(rev), Some(e)) = (f.central.rejected_revision, &f.central.rules_error) {
        lines.push(format!("                  revision {rev} refused: {e}"));
    }
    lines
}

/// What survives the agent, in one line of `guardrail status`.
fn continuity_line(c: Option<&guardrail_agent::kernel::probes::Continuity>) -> String {
    let Some(c) = c else {
        return "none (--ephemeral): enforcement and capture end with the agent".into();
    };
    let mut line = c.state_dir.clone();
    match (&c.replaced, c.adopted) {
        (Some(why), _) => line += &format!("; replaced at start ({why})"),
        (None, true) => {
            line += &format!(
                "; adopted from pid {} ({}), unattended {} ms",
                c.previous_pid.unwrap_or(0),
                if c.previous_stopped_cleanly == Some(true) {
                    "stopped cleanly"
                } else {
                    "crashed or killed"
                },
                c.unattended_ms.unwrap_or(0)
            )
        }
        (None, false) => line += "; created at start",
    }
    if c.discarded_records > 0 {
        line += &format!("; {} records discarded", c.discarded_records);
    }
    if !c.not_pinned.is_empty() {
        line += &format!(
            "; {} tracepoints not pinnable here (capture pauses while no agent runs)",
            c.not_pinned.len()
        );
    }
    line
}

/// What the kernel allows for BPF-LSM, best evidence first: the running
/// agent's canary, then a trial load (root only), then the LSM list.
async fn lsm_evidence(
    socket: &std::path::Path,
    facts: &HostFacts,
    no_load: bool,
) -> (LsmState, Option<Check>) {
    let running = reply(socket, &Request::Status).await.ok();
    if let Some(s) = running.and_then(|line| serde_json::from_str::<Status>(&line).ok()) {
        let agent = Check {
            level: Level::Ok,
            what: "agent",
            detail: format!(
                "guardrail-agent {} running (pid {}), {} tracepoints attached; pinned state: {}",
                s.version,
                s.pid,
                s.tracepoints_attached,
                continuity_line(s.continuity.as_ref())
            ),
        };
        let lsm = match s.capabilities.bpf_lsm_note {
            None if s.capabilities.bpf_lsm => LsmState::Proven,
            note => LsmState::Refused(note.unwrap_or_default()),
        };
        return (lsm, Some(agent));
    }
    if no_load || !facts.root {
        return (LsmState::from_facts(facts), None);
    }
    let opts = ProbeOptions {
        ring_buffer_bytes: 4096,
        wakeup_bytes: 4096,
        capture_read_opens: false,
        // Capture only this short-lived process: nobody else pays.
        only_tgid: std::process::id(),
        self_protect: false,
        // A trial: nothing may outlive it, nor touch the agent's state.
        pin_root: None,
        syscall_probes: Default::default(),
    };
    match Probes::load(&opts) {
        Ok((probes, _ring, enforcer)) => {
            let mut detail = format!("trial load: {} tracepoints attached", probes.attached.len());
            if !probes.missing.is_empty() {
                detail += &format!("; not on this kernel: {}", probes.missing.join(", "));
            }
            let check = Check {
                level: Level::Ok,
                what: "probes",
                detail,
            };
            let lsm = match enforcer {
                Ok(_) => LsmState::Proven,
                Err(why) => LsmState::Refused(why),
            };
            (lsm, Some(check))
        }
        Err(e) => (
            LsmState::from_facts(facts),
            Some(Check {
                level: Level::Fail,
                what: "probes",
                detail: format!("the probes do not load: {e:#}"),
            }),
        ),
    }
}

async fn doctor(
    socket: &std::path::Path,
    config: &std::path::Path,
    no_load: bool,
    json: bool,
) -> Result<()> {
    let facts = HostFacts::gather();
    let (lsm, evidence) = lsm_evidence(socket, &facts, no_load).await;
    let mut checks = guardrail_agent::doctor::checks(&facts, &lsm);
    let agent_runs = evidence.as_ref().is_some_and(|c| c.what == "agent");
    checks.extend(evidence);
    if !agent_runs {
        let root = std::path::Path::new(guardrail_agent::kernel::pins::DEFAULT_ROOT);
        if let Some(detail) = guardrail_agent::kernel::pins::describe(root) {
            checks.push(Check {
                level: Level::Warn,
                what: "pinned",
                detail: format!(
                    "{detail}. Start the agent to read them, or `guardrail-agent --unload` to remove guardrail from the kernel"
                ),
            });
        }
    }
    let rules = if config.exists() {
        Some(load_or_report(config)?)
    } else {
        None
    };
    if let Some(set) = &rules {
        // The agent refuses to start with these.
        let untrusted = trust_report(config, set);
        if untrusted.is_empty() {
            checks.push(Check {
                level: Level::Ok,
                what: "config files",
                detail: format!(
                    "{} and what it includes: only root can change them",
                    config.display()
                ),
            });
        }
        checks.extend(untrusted.into_iter().map(|detail| Check {
            level: Level::Fail,
            what: "config files",
            detail,
        }));
    }
    let effects = rules
        .as_ref()
        .map(|set| rule_effects(set, &lsm))
        .unwrap_or_default();
    if json {
        let report = serde_json::json!({
            "host": facts,
            "bpf_lsm": lsm,
            "checks": checks,
            "config": config,
            "rules": effects,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &checks {
            let mark = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{mark} {:<12} {}", c.what, c.detail);
        }
        match &rules {
            None => println!(
                "\n{}: not found; the agent would run without rules",
                config.display()
            ),
            Some(set) => {
                println!(
                    "\n{} rules in {} on this host:",
                    set.rules.len(),
                    config.display()
                );
                for line in &effects {
                    println!("  {line}");
                }
            }
        }
    }
    if checks.iter().any(|c| c.level == Level::Fail) {
        return Err(Exit::Unfit.into());
    }
    Ok(())
}
