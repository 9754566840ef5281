//! `guardrail log`: search, report on and verify the audit log (and the
//! NATS stream it is copied to).

use super::*;

/// A host's records in a NATS stream (docs/outputs.md#nats).
#[derive(clap::Args, Debug)]
pub(crate) struct NatsSource {
    /// NATS server URL (nats:// or tls://).
    #[arg(long, value_name = "URL", requires = "host")]
    pub(crate) nats: Option<String>,
    /// The host whose records to check (its `host` in the output).
    #[arg(long, requires = "nats")]
    pub(crate) host: Option<String>,
    /// The JetStream stream (the output's `stream`).
    #[arg(long, default_value = guardrail_agent::outputs::nats::DEFAULT_STREAM, requires = "nats")]
    pub(crate) stream: String,
    /// The output's `subject_prefix`.
    #[arg(long, default_value = guardrail_agent::outputs::nats::DEFAULT_PREFIX, requires = "nats")]
    pub(crate) subject_prefix: String,
    /// A NATS credentials file.
    #[arg(long, requires = "nats", conflicts_with_all = ["nkey", "token_file"])]
    pub(crate) creds: Option<PathBuf>,
    /// A file holding an NKey seed.
    #[arg(long, requires = "nats", conflicts_with = "token_file")]
    pub(crate) nkey: Option<PathBuf>,
    /// A file holding a token.
    #[arg(long, requires = "nats")]
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum LogCommand {
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
pub(crate) struct LogFiles {
    /// The configuration whose `[audit_log] path` names the log; its
    /// rotated files (PATH.1, PATH.2, …) are found next to it.
    #[arg(long, short, default_value = DEFAULT_PATH, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Read these log files instead, oldest first (repeatable).
    #[arg(long = "file", value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
}

/// A time range.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Range {
    /// From this time: an age (30m, 2h, 7d, 1h30m), RFC 3339
    /// (2026-11-27T10:00:00Z) or a UTC day (2026-11-27).
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// Up to this time (same forms).
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<String>,
}

/// What to select in the audit log.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Select {
    /// Decided by this rule (`decision.rule`).
    #[arg(long = "rule", value_name = "ID")]
    pub(crate) rules: Vec<String>,
    /// With this decision outcome: alerted, denied, killed, reverted,
    /// would_deny, would_kill, allowed.
    #[arg(long = "outcome", value_name = "OUTCOME")]
    pub(crate) outcomes: Vec<String>,
    /// exec, file, perm, loss, log_gap, or a kind as rules name it
    /// (file.write, file.rename, perm.chmod, file.*, …).
    #[arg(long = "kind", value_name = "KIND")]
    pub(crate) kinds: Vec<String>,
    /// Naming a path that matches this glob (`/etc/ssh/**`). Events name
    /// canonical paths: symlinked directories resolved.
    #[arg(long, value_name = "GLOB")]
    pub(crate) path: Option<String>,
    /// Done by a program matching this glob (`process.exe`).
    #[arg(long, value_name = "GLOB")]
    pub(crate) exe: Option<String>,
    /// Done by this process id (pids are reused: see --process-id).
    #[arg(long)]
    pub(crate) pid: Option<u32>,
    /// Done by this process (`process.id`, PID@START).
    #[arg(long, value_name = "PID@START")]
    pub(crate) process_id: Option<String>,
    /// Done by this process or any process it created, however deep (a
    /// login's shell: everything done in that session).
    #[arg(long, value_name = "PID@START")]
    pub(crate) lineage: Option<String>,
    /// Done by this user (real uid; a name is looked up in /etc/passwd).
    #[arg(long, value_name = "NAME|UID")]
    pub(crate) user: Option<String>,
    /// Done in a login of this user (login uid, `process.auid`): follows
    /// sudo and su.
    #[arg(long, value_name = "NAME|UID")]
    pub(crate) login_user: Option<String>,
}

impl Range {
    pub(crate) fn resolve(&self) -> Result<(Option<jiff::Timestamp>, Option<jiff::Timestamp>)> {
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
pub(crate) fn uid_of(flag: &str, user: &Option<String>, names: &Names) -> Result<Option<u32>> {
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
    pub(crate) fn criteria(&self) -> Result<Criteria> {
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
pub(crate) fn path_hint(pattern: &str) {
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

pub(crate) fn verify_log(files: &[PathBuf]) -> Result<()> {
    let mut texts = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    match guardrail_engine::chain::verify(&texts) {
        Ok(n) => {
            println!("{n} records verified: the chain is intact");
            let newest = texts.last();
            if let Some((file, tail)) =
                newest.and_then(|(f, t)| Some((f, guardrail_engine::chain::unfinished_tail(t)?)))
            {
                println!(
                    "{file} ends with {} bytes of a record still being written (or cut \
                     short by a crash): not verified",
                    tail.len()
                );
            }
            // Each file holds the definitions its references name.
            for (file, text) in &texts {
                let missing = guardrail_engine::process_join::undefined_references(text);
                if let Some((line, pv)) = missing.first() {
                    println!(
                        "note: {file}:{line}: names process version {pv}, which no earlier line of the file defines ({} such lines in the file): readers leave them out",
                        missing.len()
                    );
                }
            }
            Ok(())
        }
        Err(broken) => {
            eprintln!("BROKEN at {broken}");
            Err(Exit::Broken.into())
        }
    }
}

pub(crate) async fn verify_nats(url: String, n: NatsSource) -> Result<()> {
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
                    "a new chain begins at stream sequence {s} (a new audit log, or the output's spool started afresh)"
                );
            }
            if !c.late.is_empty() {
                println!(
                    "{} records were stored after records that follow them (resent after a cluster fail-over; verified in chain order): stream sequences {}",
                    c.late.len(),
                    c.late
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for (s, count) in c.losses {
                println!(
                    "at stream sequence {s} the host reports {count} records it could not send (a loss record; the chain may skip them there)"
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
pub(crate) fn log_files(src: &LogFiles) -> Result<Vec<PathBuf>> {
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

/// Run a search over `files`, printing notes; the search and how it ended.
pub(crate) fn run_search(
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
pub(crate) fn after_search(
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
    if search.stats.unjoined > 0 {
        eprintln!(
            "guardrail: note: {} events in this range name their process by a reference whose definition was not found (cut from the file, or written by a faulty writer): they were left out",
            search.stats.unjoined
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
pub(crate) fn print_record(
    out: &mut impl Write,
    found: &search::Found,
    json: bool,
    colour: bool,
    day: &mut String,
) -> std::io::Result<Flow> {
    let written = if json {
        // As stored, with a process named by reference written in full.
        writeln!(out, "{}", found.full_line())
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

pub(crate) fn log_search(
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

pub(crate) fn log_report(
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
