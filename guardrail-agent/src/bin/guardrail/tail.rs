//! `guardrail tail`: events as they happen, from the agent's socket, joined
//! without a gap to the audit log's history (`--since`).

use super::*;

/// Which live events to show (`tail`, `fleet tail`).
#[derive(clap::Args, Debug)]
pub(crate) struct EventFilter {
    /// Only these kinds (repeatable): exec, file, perm.
    #[arg(long = "kind", value_name = "KIND")]
    pub(crate) kinds: Vec<String>,
    /// Only this process id.
    #[arg(long)]
    pub(crate) pid: Option<u32>,
    /// Only processes whose executable matches this glob.
    #[arg(long)]
    pub(crate) exe: Option<String>,
    /// Only events naming a path that matches this glob (`/etc/**`).
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Only events a rule decided on (alerts, denials, kills, …).
    #[arg(long)]
    pub(crate) alerts: bool,
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

pub(crate) async fn tail(
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
pub(crate) async fn tail_since(
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
pub(crate) struct History {
    pub(crate) printed: u64,
    /// The `seq` of this agent run's last event in the log (None: none
    /// yet); None outside: `--count` was reached, stop.
    pub(crate) last_seq: Option<Option<u64>>,
}

/// Print the log's events from `since` that pass `filter`, reading on
/// until the log reaches the live stream's start.
pub(crate) fn history(
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
            // As the live stream prints it: without the chain, its
            // process whole.
            Parsed::Event(_) if json => writeln!(stdout, "{}", f.event_json())?,
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
    if search.stats.unjoined > 0 {
        eprintln!(
            "guardrail: {} events of the log name their process by a reference whose definition was not found: left out",
            search.stats.unjoined
        );
    }
    for note in &search.notes {
        eprintln!("guardrail: {note}");
    }
    Ok(History {
        printed,
        last_seq: (!search.stopped()).then(|| this_run(&search)),
    })
}
