//! guardrail: the operator CLI. Talks to a running guardrail-agent over its
//! control socket.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use guardrail_agent::config::DEFAULT_SOCKET;
use guardrail_agent::control::{request, ErrorReply, Request, Status, TailSkipped};
use guardrail_agent::event::Event;
use guardrail_agent::filter::TailFilter;
use guardrail_agent::human;

#[derive(Parser, Debug)]
#[command(version, about = "Operate guardrail: tail events, show agent status")]
struct Cli {
    /// The agent's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
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
            Command::Tail {
                kinds,
                pid,
                exe,
                path,
                json,
                count,
            } => {
                let filter = TailFilter {
                    kinds,
                    pid,
                    exe,
                    path,
                };
                filter.compile()?;
                tail(&cli.socket, filter, json, count).await
            }
            Command::Status { json } => status(&cli.socket, json).await,
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

async fn status(socket: &std::path::Path, json: bool) -> Result<()> {
    let mut lines = request(socket, &Request::Status).await?;
    let Some(line) = lines.next_line().await? else {
        bail!("the agent closed the connection without answering");
    };
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
    println!("decode errors     {}", s.decode_errors);
    println!("tail clients      {}", s.tail_clients);
    Ok(())
}
