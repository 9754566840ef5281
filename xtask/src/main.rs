//! Project tasks: `cargo xtask setup|build|run|test`.
//!
//! Everything a fresh Debian 12 machine needs is installed here, so that the
//! README's two commands and CI work with nothing done by hand.

mod bench;
mod fuzz;
mod package;
mod prereqs;
mod vm;
mod vm_systemd;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "guardrail's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain and test prerequisites (root on Debian),
    /// or print the commands that would.
    Setup,
    /// Build the probes and both binaries into target/{debug,release}/.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the agent in the foreground with the shipped default config,
    /// printing events as they happen.
    Run {
        /// Extra arguments for guardrail-agent.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure guardrail's cost against bare runs and auditd, side by side
    /// (not part of the test suite); writes target/bench/report.md.
    Bench {
        /// One pair and a tenth of the work: checks the harness, measures
        /// nothing.
        #[arg(long)]
        quick: bool,
        /// Only the storms' overhead table (no throughput, rule engine or
        /// footprint sections): for checking a change's cost on a busy
        /// machine without the whole 25-minute run.
        #[arg(long)]
        storms_only: bool,
        /// Only the NATS output's section (agent CPU per event with and
        /// without a `nats` output, events acknowledged per second).
        #[arg(long, conflicts_with = "storms_only")]
        nats_only: bool,
        /// Only the start-up and memory section (start-up times, memory
        /// idle, with 1000 rules, and with 30,000 live processes).
        #[arg(long, conflicts_with_all = ["storms_only", "nats_only"])]
        footprint_only: bool,
        /// Only the throughput section (the highest paced event rate
        /// without loss, one generator process per CPU, per ring-buffer
        /// size, with the agent's share of CPU; event delay).
        #[arg(long, conflicts_with_all = ["storms_only", "nats_only", "footprint_only"])]
        throughput_only: bool,
        /// Only these configurations of the storms' table (repeatable):
        /// default, noreads (default rules without file.read rules: no read
        /// watch; the open storm only), whole (default rules, the audit log
        /// writing every event's process whole; the chmod, write and exec
        /// storms), raw (default rules, raw syscall probes), full, deny50,
        /// floor, auditd. Default: all.
        #[arg(long = "config", value_name = "NAME")]
        configs: Vec<String>,
        /// Only the storms whose name contains this (repeatable), e.g.
        /// `--workload open` for the open and watched read storms.
        #[arg(long = "workload", value_name = "NAME")]
        workloads: Vec<String>,
        /// Pairs of runs (bare, then with the configuration) per row: more
        /// to decide a ratio whose pairs spread wider than the margin.
        #[arg(long, default_value_t = bench::DEFAULT_PAIRS as u64, value_parser = clap::value_parser!(u64).range(1..=100))]
        pairs: u64,
    },
    /// Boot Debian kernels with BPF-LSM under QEMU and run the
    /// enforcement scenarios in them.
    VmTest {
        /// 5.10, 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Boot Debian 12 with systemd as init on its own 6.1 kernel and
    /// default LSM list, install the package with apt and check the
    /// service as users run it: start, hardening, capture, deny, reload,
    /// restart and upgrade without a window, journald, stop, remove, purge.
    VmTestSystemd,
    /// Fuzz the parsers of untrusted input (config, decoder, log_verify,
    /// control, replay_line) with cargo-fuzz; new interesting inputs are kept in
    /// fuzz/corpus/TARGET, crashes in fuzz/artifacts/TARGET.
    Fuzz {
        /// One target, or all of them one after another.
        #[arg(long, default_value = "all")]
        target: String,
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Build the Debian package (target/package/guardrail_VERSION_ARCH.deb):
    /// binaries, systemd unit, default configuration, man pages and
    /// completions.
    Package {
        /// Package version (default: the workspace version).
        #[arg(long)]
        version: Option<String>,
    },
    /// Install, upgrade, remove and purge the package in a Debian 12
    /// chroot (debootstrap, cached under target/package/).
    PackageTest,
    /// Run the whole test suite: unit tests, host integration tests that
    /// load the real probes, the VM tests on Debian's 5.10, 6.1 and 6.12
    /// kernels with BPF-LSM, the package test, and the package under
    /// systemd in a Debian 12 VM.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Cargo, for builds that ship or test the agent: they must have the
/// probes (guardrail-agent's build script never stubs them then).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).env("GUARDRAIL_REQUIRE_PROBES", "1");
    cmd
}

/// The engine crate stays free of the kernel: nothing in its dependency
/// tree (build scripts included) is aya or the agent.
fn engine_is_pure() -> Result<()> {
    let out = cargo()
        .args(["tree", "-p", "guardrail-engine", "--edges", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()?;
    if !out.status.success() {
        bail!("cargo tree -p guardrail-engine failed");
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let kernel: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("aya") || l.starts_with("guardrail-agent "))
        .collect();
    if !kernel.is_empty() {
        bail!("guardrail-engine must not depend on the kernel side, but its tree has {kernel:?}");
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn build(release: bool) -> Result<()> {
    prereqs::ensure_build()?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "guardrail-agent", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// The host suites `cargo xtask test` runs a second time with the agent's
/// raw syscall probes (`--syscall-probes raw`).
const RAW_PROBE_SUITES: &[&str] = &[
    "capture",
    "paths",
    "badpaths",
    "bypass",
    "identity",
    "process",
    "continuity",
    "integrity",
    "reads",
    "uring",
];

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => {
            prereqs::ensure_build()?;
            prereqs::ensure_test()
        }
        Task::Build { release } => build(release),
        Task::Run { args } => {
            build(true)?;
            let agent = root().join("target/release/guardrail-agent");
            // The agent refuses a configuration others could change, and
            // the checkout may be a user's: run on a copy only root can
            // change, as the package installs it.
            let dir = Path::new("/run/guardrail-dev");
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            let config = dir.join("guardrail.toml");
            std::fs::copy(root().join("config/guardrail.toml"), &config)?;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
            let mut cmd = Command::new(agent);
            cmd.arg("--config")
                .arg(&config)
                .args(["--print", "human"])
                // In the foreground, Ctrl-C ends everything; the service
                // keeps its probes and rules pinned across restarts.
                .arg("--ephemeral")
                .args(args)
                .current_dir(root());
            run(&mut cmd)
        }
        Task::Bench {
            quick,
            storms_only,
            nats_only,
            footprint_only,
            throughput_only,
            configs,
            workloads,
            pairs,
        } => {
            let mut only = bench::Only::parse(storms_only, nats_only, &configs)?;
            only.footprint_only = footprint_only;
            only.throughput_only = throughput_only;
            only.workloads = workloads;
            prereqs::ensure_build()?;
            prereqs::ensure_bench()?;
            if !storms_only && !footprint_only && !throughput_only {
                prereqs::ensure_nats_server()?;
            }
            build(true)?;
            bench::bench(quick, pairs as usize, &only)
        }
        Task::VmTest { kernel } => {
            prereqs::ensure_build()?;
            let qemu = prereqs::ensure_vm(&vm::private_qemu_root())?;
            // Release binaries: the VM emulates the CPU, and a debug agent
            // takes minutes there to parse the kernel's BTF.
            build(true)?;
            vm::vm_test(&kernel, &root().join("target/release"), &qemu)
        }
        Task::VmTestSystemd => {
            prereqs::ensure_build()?;
            prereqs::ensure_test()?;
            let qemu = prereqs::ensure_vm(&vm::private_qemu_root())?;
            build(true)?;
            vm_systemd::vm_test_systemd(&root().join("target/release"), &qemu)
        }
        Task::Fuzz { target, seconds } => {
            prereqs::ensure_build()?;
            fuzz::fuzz(&target, seconds)
        }
        Task::Package { version } => {
            build(true)?;
            package::package(&root().join("target/release"), version.as_deref()).map(|_| ())
        }
        Task::PackageTest => {
            prereqs::ensure_test()?;
            build(true)?;
            package::package_test(&root().join("target/release"))
        }
        Task::Test { args } => {
            prereqs::warn_if_disk_short(&root());
            // First, before the BPF toolchain is looked at: the engine
            // builds and passes its tests with plain stable cargo.
            engine_is_pure()?;
            run(cargo().args(["test", "-p", "guardrail-engine"]).args(&args))?;
            prereqs::ensure_build()?;
            prereqs::ensure_test()?;
            let qemu = prereqs::ensure_vm(&vm::private_qemu_root())?;
            build(false)?;
            let mut cmd = cargo();
            cmd.args(["test", "--workspace"]).args(&args);
            run(&mut cmd)?;
            // The capture suites again with the raw syscall probes, which
            // kernels before 5.15 use (this host uses per-syscall
            // tracepoints): the same syscalls must give the same events.
            let mut raw = cargo();
            raw.args(["test", "-p", "guardrail-tests"]);
            for suite in RAW_PROBE_SUITES {
                raw.args(["--test", suite]);
            }
            raw.args(&args).env("GUARDRAIL_TEST_SYSCALL_PROBES", "raw");
            run(&mut raw)?;
            build(true)?;
            let bin_dir = root().join("target/release");
            package::package_test(&bin_dir)?;
            // Every VM is prepared (builds included) before any boots;
            // then they run side by side, one per CPU, the longest (the
            // systemd VM's) first.
            let mut boots = vec![vm_systemd::prepare(&bin_dir)?];
            boots.extend(vm::scenario_boots("all", &bin_dir)?);
            let mut runs = vm::run_boots(&qemu, &boots)?;
            let systemd = runs.remove(0);
            match (vm::report_scenarios(&runs), vm_systemd::report(&systemd)) {
                (Err(a), Err(b)) => Err(anyhow::anyhow!("{a:#}\n{b:#}")),
                (a, b) => a.and(b),
            }
        }
    }
}
