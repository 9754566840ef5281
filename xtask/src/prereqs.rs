//! Checking and installing what the build and the tests need.
//!
//! As root on Debian the missing pieces are installed, each step announced;
//! anywhere else the exact commands are printed and the task stops.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// Debian packages for building the probes: a rustc with its library
/// source (for `-Z build-std=core` on bpfel-unknown-none), and the LLVM
/// that bpf-linker links against.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
];
/// tzdata for window rules; debootstrap and systemd (systemd-analyze) for
/// the package test; cron (crontab) and logrotate for the test that
/// ordinary administration stays quiet under the default rules;
/// nats-server (2.9, JetStream with `-js`) for the NATS output's tests,
/// which run a real server.
const TEST_PACKAGES: &[&str] = &[
    "tzdata",
    "debootstrap",
    "systemd",
    "cron",
    "logrotate",
    // Build vm/helper.c (the io_uring submitter) for the host tests too.
    "gcc",
    "libc6-dev",
    // A legitimate io_uring user the default pack lists (qemu-img -i io_uring).
    "qemu-utils",
    "nats-server",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn is_root() -> bool {
    // SAFETY: trivial libc call without arguments.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists()
}

fn missing_packages(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

/// The apt command a person would run to install `packages`.
fn install_command(packages: &[String]) -> String {
    format!(
        "apt-get update && apt-get install --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Refresh apt's package lists, once per run: on a fresh machine they are
/// empty and apt finds nothing.
fn apt_update() -> Result<()> {
    static UPDATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if UPDATED.get().is_none() {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        let _ = UPDATED.set(());
    }
    Ok(())
}

/// What apt would do to install `packages`, simulated (nothing changes):
/// the packages it would install (as `name=version`) and those it would
/// remove.
struct AptPlan {
    install: Vec<String>,
    remove: Vec<String>,
}

fn plan(packages: &[String]) -> Result<AptPlan> {
    let out = Command::new("apt-get")
        .args(["install", "-s", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("running apt-get install -s")?;
    if !out.status.success() {
        bail!(
            "apt cannot install {}:\n{}",
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_plan(&String::from_utf8_lossy(&out.stdout)))
}

/// Read `apt-get -s` output: `Inst NAME [OLD] (VERSION …)` and
/// `Remv NAME [VERSION]` lines.
fn parse_plan(text: &str) -> AptPlan {
    let mut plan = AptPlan {
        install: Vec::new(),
        remove: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Inst"), Some(name)) => {
                let version = line
                    .split_once('(')
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                plan.install.push(match version {
                    Some(v) => format!("{name}={v}"),
                    None => name.to_string(),
                });
            }
            (Some("Remv"), Some(name)) => plan.remove.push(name.to_string()),
            _ => {}
        }
    }
    plan
}

/// Why the installation stops instead of removing what the user has.
fn refusal(packages: &[String], remove: &[String]) -> String {
    format!(
        "installing {} would remove the installed package(s) {}; guardrail's tasks never \
         remove packages. Decide yourself, and if removing them is fine run as root:\n  {}",
        packages.join(" "),
        remove.join(" "),
        install_command(packages)
    )
}

fn can_install() -> bool {
    is_root() && is_debian()
}

/// Install `missing` with apt, unless that would remove an installed
/// package: then stop and print the command instead.
fn install_packages(missing: &[String]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if !can_install() {
        bail!(
            "missing Debian packages; run as root:\n  {}",
            install_command(missing)
        );
    }
    apt_update()?;
    let plan = plan(missing)?;
    if !plan.remove.is_empty() {
        bail!(refusal(missing, &plan.remove));
    }
    eprintln!("xtask: installing Debian packages {}", missing.join(", "));
    run(Command::new("apt-get")
        // --no-remove: should the plan change between the simulation and
        // now, apt stops rather than removes.
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--no-remove",
        ])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub fn ensure_build() -> Result<()> {
    install_packages(&missing_packages(BUILD_PACKAGES))?;
    if !bpf_linker_ok() {
        let command = format!(
            "LLVM_PREFIX={LLVM_PREFIX} PATH={LLVM_PREFIX}/bin:$PATH cargo install bpf-linker \
             --version {BPF_LINKER_VERSION} --locked --no-default-features --features llvm-22"
        );
        if !(is_root() && is_debian()) {
            bail!("bpf-linker {BPF_LINKER_VERSION} is missing; run:\n  {command}");
        }
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 3 minutes)"
        );
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("PATH", path))?;
    }
    Ok(())
}

/// Debian packages the VM tests use besides QEMU: busybox for the
/// initramfs, cpio to pack it, zstd to compress the systemd VM's root
/// (the kernel unpacks it several times faster than gzip under
/// emulation), and the archive keyring apt verifies kernels with.
const VM_PACKAGES: &[&str] = &["busybox-static", "cpio", "zstd", "debian-archive-keyring"];
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Where QEMU comes from for the VM tests.
pub enum Qemu {
    /// `qemu-system-x86_64` on the PATH.
    System,
    /// Debian's package unpacked under target/vm/qemu (with the libraries
    /// the machine lacks), because installing it would have removed one
    /// of the user's packages (e.g. a newer qemu-utils from backports).
    Private(PathBuf),
}

impl Qemu {
    pub fn command(&self) -> Command {
        match self {
            Qemu::System => Command::new("qemu-system-x86_64"),
            Qemu::Private(root) => {
                let mut c = Command::new(root.join("usr/bin/qemu-system-x86_64"));
                let libs = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
                    .map(|d| root.join(d).display().to_string())
                    .join(":");
                c.env("LD_LIBRARY_PATH", libs);
                // Firmware: the BIOS lives in seabios' directory, the rest
                // in qemu's.
                for dir in ["usr/share/qemu", "usr/share/seabios"] {
                    c.arg("-L").arg(root.join(dir));
                }
                c
            }
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

pub fn ensure_vm(private_root: &Path) -> Result<Qemu> {
    install_packages(&missing_packages(VM_PACKAGES))?;
    if on_path("qemu-system-x86_64") {
        return Ok(Qemu::System);
    }
    let binary = private_root.join("usr/bin/qemu-system-x86_64");
    if binary.exists() {
        return Ok(Qemu::Private(private_root.to_path_buf()));
    }
    let wanted = [QEMU_PACKAGE.to_string()];
    if !can_install() {
        bail!(
            "QEMU is missing; run as root:\n  {}",
            install_command(&wanted)
        );
    }
    apt_update()?;
    let plan = plan(&wanted)?;
    if plan.remove.is_empty() {
        install_packages(&wanted)?;
        return Ok(Qemu::System);
    }
    eprintln!(
        "xtask: {}\nxtask: the VM tests use a private copy of {QEMU_PACKAGE} unpacked under {} \
         instead; nothing is installed or removed system-wide",
        refusal(&wanted, &plan.remove),
        private_root.display()
    );
    unpack_private(&plan.install, private_root)?;
    Ok(Qemu::Private(private_root.to_path_buf()))
}

/// Download `packages` (`name=version`, as apt planned them) and unpack
/// them into `root` with dpkg-deb, without touching dpkg's database.
fn unpack_private(packages: &[String], root: &Path) -> Result<()> {
    let debs = root.with_extension("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    run(Command::new("apt-get")
        .args(["download", "-q", "-oAPT::Sandbox::User=root"])
        .args(packages)
        .current_dir(&debs))?;
    // Unpacked beside the final place and renamed at the end, so that an
    // interrupted unpack is never taken for a complete one.
    let staging = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        }
    }
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(&staging, root)?;
    let _ = std::fs::remove_dir_all(&debs);
    Ok(())
}

/// The incumbent the benchmark compares against, and gcc for the storms.
const BENCH_PACKAGES: &[&str] = &["auditd", "gcc", "libc6-dev"];

pub fn ensure_bench() -> Result<()> {
    install_packages(&missing_packages(BENCH_PACKAGES))
}

pub fn ensure_test() -> Result<()> {
    let missing = missing_packages(TEST_PACKAGES);
    install_packages(&missing)?;
    quiet_nats_service(&missing);
    Ok(())
}

/// nats-server alone, for the benchmark's NATS section.
pub fn ensure_nats_server() -> Result<()> {
    let missing = missing_packages(&["nats-server"]);
    install_packages(&missing)?;
    quiet_nats_service(&missing);
    Ok(())
}

/// The tests and the benchmark run nats-server on ports of their own; the
/// system service the package enables would only listen on the machine's
/// network.
fn quiet_nats_service(installed_now: &[String]) {
    if installed_now.iter().any(|p| p == "nats-server") && Path::new("/run/systemd/system").exists()
    {
        eprintln!(
            "xtask: nats-server was installed for the tests only: disabling its system service"
        );
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "nats-server.service"])
            .status();
    }
}

/// What a full `cargo xtask test` writes under the checkout: builds (debug
/// and release, probes), Debian kernels and root file systems for the VM
/// tests, packages.
const TEST_RUN_BYTES: u64 = 5 << 30;

/// Say so before starting when the disk is too full for a whole run: a
/// full disk otherwise shows up far into the run as a linker crash (SIGBUS)
/// or a VM that cannot boot. A warning, not a refusal: parts of a previous
/// run may already be there.
pub fn warn_if_disk_short(root: &Path) {
    let out = Command::new("df").args(["-P", "-B1"]).arg(root).output();
    let Some(avail) = out.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    }) else {
        return;
    };
    if avail < TEST_RUN_BYTES {
        eprintln!(
            "warning: {:.1} GiB free on the file system of {}; a whole test run writes about {} GiB there. \
             Free some space (e.g. `cargo clean`) if the run fails in the linker or in a VM.",
            avail as f64 / (1u64 << 30) as f64,
            root.display(),
            TEST_RUN_BYTES >> 30
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_lists_what_apt_would_install_and_remove() {
        let text = "NOTE: This is only a simulation!
The following packages will be REMOVED:
  qemu-utils
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst cpio (2.13+dfsg-7.1 Debian:12.15/oldstable [amd64])
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
Conf cpio (2.13+dfsg-7.1 Debian:12.15/oldstable [amd64])
";
        let plan = parse_plan(text);
        assert_eq!(plan.remove, ["qemu-utils"]);
        assert_eq!(
            plan.install,
            [
                "cpio=2.13+dfsg-7.1",
                "qemu-system-x86=1:7.2+dfsg-7+deb12u18+b3"
            ]
        );
    }

    #[test]
    fn a_refusal_names_what_would_go_and_the_command() {
        let msg = refusal(&["qemu-system-x86".into()], &["qemu-utils".into()]);
        assert!(
            msg.contains("remove the installed package(s) qemu-utils"),
            "{msg}"
        );
        assert!(
            msg.contains("apt-get install --no-install-recommends qemu-system-x86"),
            "{msg}"
        );
    }
}
