//! guardrail: the operator CLI. Talks to a running guardrail-agent over its
//! control socket.

mod doctor;
mod fleet;
mod log;
mod rules;
mod status;
mod tail;

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
use guardrail_engine::replay::{
    events_of, records_of, Compare, Comparison, NotHanded, Recorded, Replay,
};
use guardrail_engine::report::Report;
use guardrail_engine::rules::eval::Enforcement;
use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::{load_rules, RuleSet};
use guardrail_engine::search::{self, Criteria, Flow, Parsed, Query, Search, SearchError};

use doctor::doctor;
use fleet::{fleet, FleetArgs};
use log::{log_report, log_search, verify_log, verify_nats, LogCommand};
use rules::{rules, RulesCommand};
use status::status;
use tail::{tail, tail_since, EventFilter};

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

/// The agent's one-line answer to `req`.
async fn reply(socket: &std::path::Path, req: &Request) -> Result<String> {
    let mut lines = request(socket, req).await?;
    let Some(line) = lines.next_line().await? else {
        bail!("the agent closed the connection without answering");
    };
    Ok(line)
}
