//! guardrail-agent: loads the probes, turns kernel records into events,
//! and serves them to the `guardrail` CLI.

mod agent;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tracing::warn;

use guardrail_agent::config::{Config, DEFAULT_PATH};
use guardrail_agent::doctor::{rule_effects, HostFacts, LsmState};
use guardrail_agent::kernel::capabilities::kernel_release;
use guardrail_agent::kernel::pins::{self, DEFAULT_ROOT};
use guardrail_agent::kernel::probes::SyscallProbes;
use guardrail_agent::pipeline::Print;
use guardrail_agent::reload;
use guardrail_agent::trust::Policy;
use guardrail_engine::rules::builtin::SELF_PROTECTION_RULES;
use guardrail_engine::rules::RuleSet;

use agent::Launch;

/// guardrail's host audit sensor: captures exec, file and permission
/// changes with eBPF and serves them to `guardrail tail`.
#[derive(Parser, Debug)]
#[command(name = "guardrail-agent", version)]
struct Args {
    /// Configuration file. A missing file at the default path means
    /// defaults; a missing file given explicitly is an error.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Control socket (overrides `agent.socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print every event to stdout.
    #[arg(long, value_enum, default_value = "none")]
    print: Print,
    /// Capture only this process (thread group): a diagnostic, like
    /// `strace -p`.
    #[arg(long, value_name = "PID")]
    only_pid: Option<u32>,
    /// Ring buffer size in bytes (overrides `capture.ring_buffer_bytes`).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Also capture opens that only read (overrides `capture.read_opens`).
    #[arg(long)]
    capture_read_opens: bool,
    /// Validate the configuration, say what each rule will do on this host,
    /// and exit.
    #[arg(long)]
    check_config: bool,
    /// Do not pin: probes, rules and ring buffer end with the agent
    /// (diagnostics and tests; a service keeps them pinned so that
    /// enforcement and capture never lapse).
    #[arg(long)]
    ephemeral: bool,
    /// Where the probes, rules and ring buffer are pinned (on bpffs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT)]
    state_dir: PathBuf,
    /// Remove the pinned state: guardrail's programs detach, its rules stop
    /// being enforced, unread records are freed. Refused while an agent
    /// runs (stop it first).
    #[arg(long)]
    unload: bool,
    /// After an agent ended without a clean stop (SIGKILL, the OOM killer,
    /// a crash) and was not started again: lift only its self-protection,
    /// as a clean stop does, so that the configuration and the binaries
    /// may change (the package's upgrade runs this); every other rule
    /// stays enforced. Refused while an agent runs.
    #[arg(long, conflicts_with = "unload")]
    lift_self_protection: bool,
    /// Where the syscall and exec probes attach: `auto` picks `raw` on
    /// kernels before 5.15, whose per-syscall tracepoints cannot be pinned
    /// (capture would pause between agents), `tracepoints` elsewhere.
    #[arg(long, value_enum, default_value = "auto")]
    syscall_probes: SyscallProbes,
    /// Benchmark only: run the minimal copy-every-syscall probe instead of
    /// guardrail's, print what it received on SIGTERM (`cargo xtask bench`).
    #[arg(long, hide = true)]
    bench_floor: bool,
    /// Write the man page into DIR and exit (used to build the package).
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<PathBuf>,
}

/// The config file in use: the one given, else the default one if present.
fn config_path(args: &Args) -> Option<PathBuf> {
    match &args.config {
        Some(path) => Some(path.clone()),
        None if Path::new(DEFAULT_PATH).exists() => Some(DEFAULT_PATH.into()),
        None => None,
    }
}

/// The configuration, its rules, and who may change what the agent
/// trusts; refused unless only root (and the admin group) can change it.
fn load_config(args: &Args) -> Result<(Config, RuleSet, Policy)> {
    let (mut config, rules, policy) = match config_path(args) {
        Some(path) => reload::load(&path, None, None)?,
        None => (Config::default(), RuleSet::default(), Policy::agent(None)),
    };
    if let Some(s) = &args.socket {
        config.agent.socket = s.clone();
    }
    if let Some(rb) = args.ring_buffer_bytes {
        config.capture.ring_buffer_bytes = rb;
        config.validate_path(args.config.as_deref())?;
    }
    if args.capture_read_opens {
        config.capture.read_opens = true;
    }
    Ok((config, rules, policy))
}

fn main() -> std::process::ExitCode {
    one_memory_arena();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every thread allocates from the one main arena of glibc's allocator.
///
/// Start-up parses the kernel's BTF on a thread of its own (tens of MiB
/// for a moment, while the verifier works): in a thread's own arena,
/// glibc keeps what such a burst leaves at the arena's top for good
/// (`malloc_trim` returns only the main arena's top to the system), and
/// the agent stayed about 10 MiB larger than it needed to be. Sharing
/// one arena costs the event path nothing measurable: its threads
/// allocate mostly from their per-thread caches (chmod storms, the agent's
/// CPU per event alternating with and without: within noise).
fn one_memory_arena() {
    // SAFETY: a setting of the allocator, made before any thread starts.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

fn real_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUARDRAIL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: the journal and log files would
        // keep the escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.man {
        std::fs::create_dir_all(dir)?;
        let page = dir.join("guardrail-agent.8");
        let mut out = Vec::new();
        clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
            .section("8")
            .render(&mut out)?;
        std::fs::write(&page, out).with_context(|| format!("writing {}", page.display()))?;
        return Ok(());
    }
    if args.unload {
        return match pins::unload(&args.state_dir)? {
            true => {
                println!(
                    "removed {}: guardrail's programs are detached and its rules no longer enforced",
                    args.state_dir.display()
                );
                Ok(())
            }
            false => {
                println!("nothing pinned at {}", args.state_dir.display());
                Ok(())
            }
        };
    }
    if args.lift_self_protection {
        match guardrail_agent::kernel::enforce::lift_self_protection(&args.state_dir, &SELF_PROTECTION_RULES)? {
            None => println!("nothing pinned at {}", args.state_dir.display()),
            Some(lifted) if lifted.is_empty() => {
                println!("self-protection was not in force (the last agent stopped cleanly, or its configuration turned it off)")
            }
            Some(lifted) => println!(
                "lifted {}: the configuration and guardrail's binaries may change; every other rule stays enforced",
                lifted.join(", ")
            ),
        }
        return Ok(());
    }
    let (config, rules, policy) = load_config(&args)?;
    if args.check_config {
        println!(
            "configuration is valid: {} rules, {} windows",
            rules.rules.len(),
            rules.windows.len()
        );
        // Judged from the LSM list only; `guardrail doctor` proves it by
        // loading the programs, and the agent with its canary at start.
        let lsm = LsmState::from_facts(&HostFacts::gather());
        if let LsmState::Absent(why) = &lsm {
            println!("BPF-LSM: {why}");
        }
        for line in rule_effects(&rules, &lsm) {
            println!("  {line}");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.bench_floor {
        raise_memlock_limit();
        return runtime.block_on(guardrail_agent::kernel::floor::run(
            config.capture.ring_buffer_bytes,
            Duration::from_millis(config.capture.drain_interval_ms),
        ));
    }
    let launch = Launch {
        config_file: config_path(&args),
        print: args.print,
        only_pid: args.only_pid,
        pin_root: (!args.ephemeral).then(|| args.state_dir.clone()),
        syscall_probes: args.syscall_probes,
    };
    runtime.block_on(agent::run(launch, config, rules, policy))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default
/// (8 MiB) is smaller than the default ring buffer.
fn raise_memlock_limit() {
    let release = kernel_release();
    if guardrail_agent::doctor::kernel_version(&release).is_some_and(|v| v >= (5, 11)) {
        return;
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        warn!(
            "cannot raise the memlock limit ({}); on kernels before 5.11 large ring buffers may fail to load",
            std::io::Error::last_os_error()
        );
    }
}
