//! `cargo xtask vm-test-systemd`: the Debian package under a real systemd.
//!
//! A Debian 12 root (the package test's debootstrap tree, cached under
//! target/package/) is packed whole as the initramfs, with /init pointing
//! at systemd, and booted on Debian 12's own 6.1 cloud kernel with its
//! default LSM list: no `lsm=` on the command line, so BPF-LSM is on only
//! because Debian's CONFIG_LSM names `bpf` — the common install. A unit
//! of the image (vm/systemd/guardrail-vm-test.service) runs
//! vm/systemd/scenarios.sh once the system is up: it installs the package
//! with apt and checks the service as users run it, one
//! `GUARDRAIL-VM: PASS|FAIL <name>` line per check, then powers off.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::prereqs::Qemu;
use crate::vm::{self, BootSpec, KERNELS};
use crate::{cargo, package, root, run};

/// Debian 12's own kernel.
const KERNEL: &str = "6.1";
/// The apt installs, restarts and upgrade under emulation take minutes.
const TIMEOUT: Duration = Duration::from_secs(1800);

fn dir() -> PathBuf {
    vm::vm_dir().join("systemd")
}

/// A package that adds one rules file to /etc/guardrail/conf.d: how the
/// scenarios change the rules of a running agent, whose self-protection
/// lets only dpkg write its configuration.
fn rules_package() -> Result<PathBuf> {
    let stage = dir().join("guardrail-vm-rules");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let rules = stage.join("etc/guardrail/conf.d/vm-reload.toml");
    std::fs::create_dir_all(rules.parent().unwrap())?;
    std::fs::copy(root().join("vm/systemd/vm-reload.toml"), &rules)?;
    std::fs::create_dir_all(stage.join("DEBIAN"))?;
    std::fs::write(
        stage.join("DEBIAN/control"),
        "Package: guardrail-vm-rules\nVersion: 1\nArchitecture: all\n\
         Maintainer: guardrail developers <guardrail@localhost>\n\
         Description: a rule the systemd VM test adds to a running agent\n",
    )?;
    run(Command::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(&stage))?;
    let deb = dir().join("guardrail-vm-rules_1_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

/// The root file system as an initramfs: the debootstrap tree without
/// documentation and apt's caches, the packages to install and the
/// scenarios.
fn image(packages: &Packages) -> Result<PathBuf> {
    let template = package::chroot_template()?;
    let staging = dir().join("root");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(dir())?;
    run(Command::new("cp").arg("-a").arg(&template).arg(&staging))?;
    for strip in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        let path = staging.join(strip);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
    }
    std::fs::create_dir_all(staging.join("var/lib/apt/lists/partial"))?;
    std::fs::create_dir_all(staging.join("var/cache/apt/archives/partial"))?;
    // The rootfs is the kernel's: systemd is its init.
    symlink("/lib/systemd/systemd", staging.join("init"))?;
    // The agent trusts its configuration only if no directory up to / is
    // writable by others; the copied tree's top is the staging directory.
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(staging.join("etc/hostname"), "guardrail-vm\n")?;
    let vm = staging.join("vm");
    std::fs::create_dir_all(&vm)?;
    let name = |deb: &Path| deb.file_name().unwrap().to_string_lossy().into_owned();
    for deb in [&packages.first, &packages.upgrade, &packages.rules] {
        std::fs::copy(deb, vm.join(name(deb)))?;
    }
    std::fs::write(
        vm.join("env"),
        format!(
            "FIRST='{}'\nFIRST_VERSION='{}'\nUPGRADE='{}'\nUPGRADE_VERSION='{}'\nRULES='{}'\n",
            name(&packages.first),
            packages.first_version,
            name(&packages.upgrade),
            packages.upgrade_version,
            name(&packages.rules),
        ),
    )?;
    let scenarios = vm.join("scenarios.sh");
    std::fs::copy(root().join("vm/systemd/scenarios.sh"), &scenarios)?;
    std::fs::set_permissions(&scenarios, std::fs::Permissions::from_mode(0o755))?;
    let units = staging.join("etc/systemd/system");
    std::fs::copy(
        root().join("vm/systemd/guardrail-vm-test.service"),
        units.join("guardrail-vm-test.service"),
    )?;
    std::fs::create_dir_all(units.join("multi-user.target.wants"))?;
    symlink(
        "/etc/systemd/system/guardrail-vm-test.service",
        units.join("multi-user.target.wants/guardrail-vm-test.service"),
    )?;
    // Nothing else runs: no logins on the console the checks print to
    // (there is no udev to announce the serial device either), and no
    // timer starts apt or dpkg behind the scenarios' backs.
    for unit in [
        "getty@tty1.service",
        "serial-getty@ttyS0.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
    ] {
        let link = units.join(unit);
        let _ = std::fs::remove_file(&link);
        symlink("/dev/null", &link)?;
    }
    let image = dir().join("root.cpio.zst");
    // Owners as debootstrap made them (systemd-journal, …): no -R.
    let cmd = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | zstd -q -T0 -3 -f -o '{}'",
        staging.display(),
        image.display()
    );
    run(Command::new("sh").args(["-c", &cmd]))?;
    std::fs::remove_dir_all(&staging)?;
    Ok(image)
}

/// What the scenarios install: the package, a newer version of it, and
/// the rules package.
struct Packages {
    first: PathBuf,
    first_version: String,
    upgrade: PathBuf,
    upgrade_version: String,
    rules: PathBuf,
}

/// The upgrade's binaries: the agent built with other probes (feature
/// `upgrade-test-variant`: other programs, the same maps and records), as
/// a release whose probes changed would be. Copied aside, then the normal
/// build is restored in `bin_dir` (both builds stay cached).
fn variant_bins(bin_dir: &Path) -> Result<PathBuf> {
    let dir = root().join("target/upgrade-variant");
    std::fs::create_dir_all(&dir)?;
    let build = |variant: bool| {
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--release",
            "--package",
            "guardrail-agent",
            "--bins",
        ]);
        if variant {
            cmd.args(["--features", "upgrade-test-variant"]);
        }
        run(&mut cmd)
    };
    let normal = std::fs::read(bin_dir.join("guardrail-agent"))?;
    build(true)?;
    for bin in ["guardrail-agent", "guardrail"] {
        std::fs::copy(bin_dir.join(bin), dir.join(bin))
            .with_context(|| format!("copying {bin} of the variant build"))?;
    }
    build(false)?;
    let variant = std::fs::read(dir.join("guardrail-agent"))?;
    anyhow::ensure!(
        variant != normal && std::fs::read(bin_dir.join("guardrail-agent"))? == normal,
        "the upgrade-test variant build did not give a second, different agent"
    );
    Ok(dir)
}

/// The systemd VM's boot: the packages built from `bin_dir`'s binaries
/// (and an upgrade variant) in a debootstrapped root with systemd as PID 1.
pub fn prepare(bin_dir: &Path) -> Result<vm::Boot> {
    let first_version = env!("CARGO_PKG_VERSION").to_string();
    let upgrade_version = format!("{first_version}+upgrade1");
    let packages = Packages {
        first: package::package(bin_dir, Some(&first_version))?,
        upgrade: package::package(&variant_bins(bin_dir)?, Some(&upgrade_version))?,
        rules: rules_package()?,
        first_version,
        upgrade_version,
    };
    let initrd = image(&packages)?;
    let kernel = KERNELS
        .iter()
        .find(|k| k.name == KERNEL)
        .context("Debian 12's kernel is not in the list")?;
    Ok(vm::Boot {
        label: format!("systemd {KERNEL}"),
        kernel,
        initrd,
        log: vm::vm_dir().join("boot-systemd.log"),
        spec: BootSpec {
            // Debian's default LSM list, on purpose: no lsm=.
            append: "console=ttyS0 panic=-1 loglevel=4 systemd.show_status=false",
            // The root file system lives in memory.
            memory_mib: 2048,
            timeout: TIMEOUT,
        },
    })
}

/// Print the systemd VM's totals; fail naming every failure.
pub fn report(run: &vm::Run) -> Result<()> {
    println!(
        "vm-systemd: {} passed, {} failed",
        run.passed.len(),
        run.failed.len()
    );
    if !run.failures.is_empty() {
        bail!("systemd VM test failed:\n  {}", run.failures.join("\n  "));
    }
    Ok(())
}

pub fn vm_test_systemd(bin_dir: &Path, qemu: &Qemu) -> Result<()> {
    let boot = prepare(bin_dir)?;
    let runs = vm::run_boots(qemu, std::slice::from_ref(&boot))?;
    report(&runs[0])
}
