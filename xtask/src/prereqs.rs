//! Checking and installing what the build and the tests need.
//!
//! As root on Debian the missing pieces are installed, each step announced;
//! anywhere else the exact commands are printed and the task stops.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

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
/// the package test.
const TEST_PACKAGES: &[&str] = &["tzdata", "debootstrap", "systemd"];
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

fn install_packages(missing: &[String]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !(is_root() && is_debian()) {
        bail!("missing Debian packages; run as root:\n  {command}");
    }
    eprintln!("xtask: installing Debian packages {}", missing.join(", "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
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

/// Debian packages the VM tests use: QEMU, busybox for the initramfs,
/// cpio to pack it, and the archive keyring apt verifies kernels with.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "debian-archive-keyring",
];

pub fn ensure_vm() -> Result<()> {
    install_packages(&missing_packages(VM_PACKAGES))
}

/// The incumbent the benchmark compares against, and gcc for the storms.
const BENCH_PACKAGES: &[&str] = &["auditd", "gcc", "libc6-dev"];

pub fn ensure_bench() -> Result<()> {
    install_packages(&missing_packages(BENCH_PACKAGES))
}

pub fn ensure_test() -> Result<()> {
    install_packages(&missing_packages(TEST_PACKAGES))
}
