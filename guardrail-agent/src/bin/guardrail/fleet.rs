//! `guardrail fleet`: the central rule set and the hosts that report
//! to NATS.

use super::*;

/// Where the fleet's NATS is, and who this client is on it.
#[derive(clap::Args, Debug)]
pub(crate) struct FleetArgs {
    /// NATS server URL(s), comma-separated (nats:// or tls://).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub(crate) url: String,
    /// A NATS credentials file (an operator's: pushing rules needs write
    /// access to the rules bucket, which hosts' credentials do not have).
    #[arg(long, global = true, conflicts_with_all = ["nkey", "token_file"])]
    pub(crate) creds: Option<PathBuf>,
    /// A file holding an NKey seed.
    #[arg(long, global = true, conflicts_with = "token_file")]
    pub(crate) nkey: Option<PathBuf>,
    /// A file holding a token.
    #[arg(long, global = true)]
    pub(crate) token_file: Option<PathBuf>,
    /// The key-value bucket of rule sets (`[fleet] rules_bucket`).
    #[arg(long, global = true, default_value = guardrail_agent::config::nats::DEFAULT_RULES_BUCKET)]
    pub(crate) rules_bucket: String,
    /// The key-value bucket of host status (`[fleet] status_bucket`).
    #[arg(long, global = true, default_value = guardrail_agent::config::nats::DEFAULT_STATUS_BUCKET)]
    pub(crate) status_bucket: String,
    /// Give up on the server after this many seconds (`rules push` and
    /// `status`; `tail` runs until stopped).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    pub(crate) timeout: u64,
    #[command(subcommand)]
    pub(crate) command: FleetCommand,
}

/// `work` within `seconds`, or an error naming the server and the limit:
/// a server that accepts the connection and never answers must not hang
/// an operator's shell or a script.
async fn bounded<T>(
    url: &str,
    seconds: u64,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let limit = std::time::Duration::from_secs(seconds);
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "{url} did not answer within {seconds} s (raise it with --timeout)"
        ))
    })
}

#[derive(Subcommand, Debug)]
pub(crate) enum FleetCommand {
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

#[derive(Subcommand, Debug)]
pub(crate) enum FleetRulesCommand {
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

pub(crate) async fn fleet(args: FleetArgs) -> Result<()> {
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
            let revision = bounded(&args.url, args.timeout, async {
                let client = fleet::connect(&args.url, &creds, "guardrail fleet").await?;
                fleet::push(client, &args.rules_bucket, &key, &text).await
            })
            .await?;
            println!(
                "pushed {} as {}/{key} (revision {revision}, {})",
                file.display(),
                args.rules_bucket,
                fleet::rules_hash(text.as_bytes())
            );
            Ok(())
        }
        FleetCommand::Status { json } => {
            let rows = bounded(&args.url, args.timeout, async {
                let client = fleet::connect(&args.url, &creds, "guardrail fleet").await?;
                fleet::fleet_status(client, &args.rules_bucket, &args.status_bucket).await
            })
            .await?;
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
            // A message holds one or more records, one per line.
            while let Some(m) = sub.next().await {
                let Ok(text) = std::str::from_utf8(&m.payload) else {
                    continue;
                };
                // The host as the subject names it: `<prefix>.<host>.<kind>`.
                let subject_host = m
                    .subject
                    .strip_prefix(subject_prefix.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    .and_then(|r| r.rsplit_once('.'))
                    .map_or("-", |(h, _)| h);
                for line in text.lines() {
                    let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                        continue;
                    };
                    // An audit log line is the event itself; a record of
                    // an output's own chain wraps it.
                    let event_json = record.get("event").unwrap_or(&record);
                    let Ok(event) = serde_json::from_value::<Event>(event_json.clone()) else {
                        continue;
                    };
                    if !filter.matches(&event) {
                        continue;
                    }
                    let host = record["host"].as_str().unwrap_or(subject_host);
                    let mut stdout = std::io::stdout().lock();
                    if json {
                        let line = serde_json::json!({"host": host, "event": event_json});
                        writeln!(stdout, "{line}")?;
                    } else {
                        writeln!(stdout, "{host:<16} {}", human::line(&event, colour))?;
                    }
                    stdout.flush()?;
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }
    }
}

pub(crate) fn print_fleet(rows: &[guardrail_agent::fleet::FleetRow]) {
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
