//! `guardrail rules`: the rules in force, and testing a rule set on
//! recorded events before it is put in force.

use super::*;
use crate::log::log_files;
use crate::log::run_search;
use crate::log::LogFiles;
use crate::log::Range;

#[derive(Subcommand, Debug)]
pub(crate) enum RulesCommand {
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
        /// How --events lines are read: `scan` (in place, serde for any
        /// line it is unsure of) or `serde` (every line whole). The same
        /// report either way; for comparing the two.
        #[arg(long, hide = true, value_enum, default_value_t = Reader::Scan)]
        reader: Reader,
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

/// How `rules test --events` reads its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Reader {
    Scan,
    Serde,
}

/// Where `rules test` takes its events from.
pub(crate) struct EventSource {
    pub(crate) events: Option<PathBuf>,
    pub(crate) reader: Reader,
    pub(crate) log: LogFiles,
    pub(crate) range: Range,
}

impl EventSource {
    /// Hand every event to `each`, its process whole (joined); what was
    /// not handed on.
    pub(crate) fn each(&self, each: &mut dyn FnMut(Recorded)) -> Result<NotHanded> {
        let mut not = NotHanded::default();
        match &self.events {
            Some(events) => {
                // 128 KiB a read: the lines are read while the buffer is
                // still in the CPU's cache (1 MiB was 15% slower).
                const BUFFER: usize = 128 << 10;
                let input: Box<dyn std::io::BufRead> = if events.as_os_str() == "-" {
                    Box::new(std::io::BufReader::with_capacity(
                        BUFFER,
                        std::io::stdin().lock(),
                    ))
                } else {
                    let f = std::fs::File::open(events)
                        .with_context(|| format!("opening {}", events.display()))?;
                    Box::new(std::io::BufReader::with_capacity(BUFFER, f))
                };
                match self.reader {
                    Reader::Scan => records_of(input, &mut not, each),
                    Reader::Serde => events_of(input, &mut not, |e| each(Recorded::Event(e))),
                }
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
                        each(Recorded::Event(e));
                    }
                    Ok(Flow::Continue)
                })?;
                not.lines += search.notes.len() as u64;
                not.unjoined += search.stats.unjoined;
            }
        }
        Ok(not)
    }
}

/// Why events were not replayed, and what to do about it.
fn unjoined_note(n: u64) -> String {
    format!(
        "{n} events were not replayed: they name their process by a reference whose definition is not in the input (give whole audit-log files, not a part of one)"
    )
}

pub(crate) fn print_example(ex: &guardrail_engine::replay::Example) {
    println!(
        "    #{} {} {} {} {}",
        ex.seq,
        ex.time,
        ex.op,
        human::escape(ex.exe.as_deref().unwrap_or("?")),
        human::escape(ex.path.as_deref().unwrap_or(""))
    );
}

pub(crate) fn rules_test(
    file: &std::path::Path,
    source: &EventSource,
    enforcement: Enforcement,
    json: bool,
) -> Result<()> {
    let set = load_or_report(file)?;
    let started = std::time::Instant::now();
    let mut replay = Replay::new(&set, enforcement);
    let not = source.each(&mut |e| replay.record(e))?;
    let mut report = replay.report;
    report.skipped_lines += not.lines;
    report.unjoined += not.unjoined;
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
    if report.unjoined > 0 {
        println!("{}", unjoined_note(report.unjoined));
    }
    for r in &report.rules {
        let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{:<32} {:>8} hits  {}", r.rule, r.hits, outcomes.join(", "));
        r.examples.iter().for_each(print_example);
    }
    Ok(())
}

pub(crate) fn compare_rules(
    current: &std::path::Path,
    candidate: &std::path::Path,
    source: &EventSource,
    enforcement: Enforcement,
    json: bool,
) -> Result<()> {
    let current_set = load_or_report(current)?;
    let candidate_set = load_or_report(candidate)?;
    let mut compare = Compare::new(&current_set, &candidate_set, enforcement);
    let not = source.each(&mut |e| compare.record(e))?;
    let mut result: Comparison = compare.finish();
    result.skipped_lines += not.lines;
    result.unjoined += not.unjoined;
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
    if result.unjoined > 0 {
        eprintln!("guardrail: {}", unjoined_note(result.unjoined));
    }
    if result.changed > 0 {
        return Err(Exit::Changed.into());
    }
    Ok(())
}

/// Load FILE's rules, printing every problem; `Invalid` if there were any.
pub(crate) fn load_or_report(file: &std::path::Path) -> Result<RuleSet> {
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
pub(crate) fn trust_report(file: &std::path::Path, set: &RuleSet) -> Vec<String> {
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
pub(crate) async fn is_agent_config(socket: &std::path::Path, file: &std::path::Path) -> bool {
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

pub(crate) async fn rules(socket: &std::path::Path, cmd: RulesCommand) -> Result<()> {
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
            reader,
            log,
            range,
            json,
            no_enforcement,
        } => {
            let enforcement = Enforcement {
                deny: !no_enforcement,
                kill: !no_enforcement,
            };
            let source = EventSource {
                events,
                reader,
                log,
                range,
            };
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
