//! guardrail: the operator CLI. Talks to a running guardrail-agent over its
//! control socket.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use guardrail_agent::config::{Config, DEFAULT_PATH, DEFAULT_SOCKET};
use guardrail_agent::control::{request, ErrorReply, Request, RuleSummary, Status, TailSkipped};
use guardrail_agent::doctor::{rule_effects, Check, HostFacts, Level, LsmState};
use guardrail_agent::event::Event;
use guardrail_agent::filter::TailFilter;
use guardrail_agent::human;
use guardrail_agent::kernel::probes::{ProbeOptions, Probes};
use guardrail_agent::replay::replay;
use guardrail_agent::rules::eval::Enforcement;
use guardrail_agent::rules::users::Names;
use guardrail_agent::rules::{load_rules, RuleSet};
use guardrail_agent::trust::{self, AdminGroup, Policy, RealFs};

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
        /// Print JSON lines instead of the compact human form.
        #[arg(long)]
        json: bool,
        /// Stop after this many events.
        #[arg(long, short = 'n')]
        count: Option<u64>,
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
    /// Print a shell completion script (e.g. `guardrail completions bash >
    /// /etc/bash_completion.d/guardrail`).
    Completions { shell: clap_complete::Shell },
    /// Write man pages for guardrail and its subcommands into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Check the hash chain of audit log files, given oldest first
    /// (e.g. audit.jsonl.2 audit.jsonl.1 audit.jsonl). Exit status 1 and the
    /// first broken record when anything was edited, removed, inserted or
    /// reordered.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Validate a configuration or rules file and everything it includes.
    /// Prints every problem with file:line:column; exit status 2 on error.
    /// Files that others than root could change (the file, an include, a
    /// directory on their paths) are errors for the agent's configuration,
    /// which the agent would refuse, and warnings for any other file.
    Check { file: PathBuf },
    /// Replay recorded events (JSON lines, e.g. from `guardrail-agent
    /// --print json` or `guardrail tail --json`) against the rules of FILE
    /// and show which rules would fire, how often, on what.
    Test {
        file: PathBuf,
        /// The recorded events; `-` for standard input.
        #[arg(long)]
        events: PathBuf,
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

/// Invalid input (bad rules) exits 2, other failures 1.
#[derive(Debug)]
struct Invalid;

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid rules")
    }
}

impl std::error::Error for Invalid {}

/// A host where the agent cannot capture exits 1.
#[derive(Debug)]
struct Unfit;

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this host cannot run guardrail")
    }
}

impl std::error::Error for Unfit {}

/// A broken audit log chain exits 1.
#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken audit log")
    }
}

impl std::error::Error for Broken {}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<Invalid>() => std::process::ExitCode::from(2),
        Err(e) if e.is::<Broken>() || e.is::<Unfit>() => std::process::ExitCode::from(1),
        Err(e) => {
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
    match guardrail_agent::audit::chain::verify(&texts) {
        Ok(n) => {
            println!("{n} records verified: the chain is intact");
            Ok(())
        }
        Err(broken) => {
            eprintln!("BROKEN at {broken}");
            Err(Broken.into())
        }
    }
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
        Ok(_) => Err(Invalid.into()),
        Err(e) => {
            for problem in &e.0 {
                eprintln!("{problem}");
            }
            eprintln!("{} problem(s); nothing was loaded", e.0.len());
            Err(Invalid.into())
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
                    return Err(Invalid.into());
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
            events,
            json,
            no_enforcement,
        } => {
            let set = load_or_report(&file)?;
            let enforcement = Enforcement {
                deny: !no_enforcement,
                kill: !no_enforcement,
            };
            let input: Box<dyn std::io::BufRead> = if events.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(&events)
                    .with_context(|| format!("opening {}", events.display()))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            };
            let started = std::time::Instant::now();
            let report = replay(&set, input, enforcement)?;
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
                let outcomes: Vec<String> =
                    r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("{:<32} {:>8} hits  {}", r.rule, r.hits, outcomes.join(", "));
                for ex in &r.examples {
                    println!(
                        "    #{} {} {} {} {}",
                        ex.seq,
                        ex.time,
                        ex.op,
                        human::escape(ex.exe.as_deref().unwrap_or("?")),
                        human::escape(ex.path.as_deref().unwrap_or(""))
                    );
                }
            }
            Ok(())
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
            Command::Log(LogCommand::Verify { files }) => verify_log(&files),
            Command::Tail {
                kinds,
                pid,
                exe,
                path,
                alerts,
                json,
                count,
            } => {
                let filter = TailFilter {
                    kinds,
                    pid,
                    exe,
                    path,
                    decisions_only: alerts,
                };
                filter.compile()?;
                tail(&cli.socket, filter, json, count).await
            }
            Command::Status { json } => status(&cli.socket, json).await,
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

async fn tail(
    socket: &std::path::Path,
    filter: TailFilter,
    json: bool,
    count: Option<u64>,
) -> Result<()> {
    let mut lines = request(socket, &Request::Tail { filter }).await?;
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
    println!("tracepoints       {} attached", s.tracepoints_attached);
    println!("ring buffer       {} bytes", s.ring_buffer_bytes);
    println!("BTF task fields   {}", yes(c.btf));
    println!("BPF-LSM (deny)    {}", yes(c.bpf_lsm));
    if let Some(note) = &c.bpf_lsm_note {
        println!("                  {note}");
    }
    if !c.missing_syscalls.is_empty() {
        println!("not on this kernel {}", c.missing_syscalls.join(", "));
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
    println!("tail clients      {}", s.tail_clients);
    println!(
        "redaction         {} ({} events redacted)",
        if s.redaction_enabled { "on" } else { "OFF" },
        s.redacted_events
    );
    for o in &s.outputs {
        println!(
            "output {:<10} {} sent, {} failed, {} dropped (queue full), {} retries, {} queued",
            o.name, o.sent, o.failed, o.dropped, o.retries, o.queued
        );
        if let Some(e) = &o.last_error {
            println!("                  last error: {e}");
        }
    }
    Ok(())
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
                "guardrail-agent {} running (pid {}), {} tracepoints attached",
                s.version, s.pid, s.tracepoints_attached
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
    checks.extend(evidence);
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
        return Err(Unfit.into());
    }
    Ok(())
}
