//! `cargo xtask vm-test`: boot real Debian kernels under QEMU (TCG) with
//! BPF-LSM enabled and run the enforcement scenarios inside them.
//!
//! Kernels come from Debian's archive through apt, with a private sources
//! list and lists directory per release so the machine's own apt state is
//! untouched, and are cached under target/vm/. The initramfs holds busybox,
//! the agent and CLI with their shared libraries, the VM rules
//! (vm/guardrail.toml) and the scenario script (vm/scenarios.sh), which
//! prints one `GUARDRAIL-VM: PASS|FAIL <name>` line per check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::prereqs::Qemu;
use crate::{root, run};

pub struct Kernel {
    pub name: &'static str,
    release: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        release: "bullseye",
    },
    Kernel {
        name: "6.1",
        release: "bookworm",
    },
    Kernel {
        name: "6.12",
        release: "bookworm-backports",
    },
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org/debian";
const BOOT_TIMEOUT: Duration = Duration::from_secs(2400);

pub fn vm_dir() -> PathBuf {
    root().join("target/vm")
}

/// Where QEMU is unpacked when it cannot be installed without removing
/// one of the machine's packages.
pub fn private_qemu_root() -> PathBuf {
    vm_dir().join("qemu")
}

/// apt options that keep everything in `dir`.
fn apt_options(dir: &Path) -> Vec<String> {
    vec![
        format!(
            "-oDir::Etc::SourceList={}",
            dir.join("sources.list").display()
        ),
        "-oDir::Etc::SourceParts=/dev/null".into(),
        format!("-oDir::State::Lists={}", dir.join("lists").display()),
        format!("-oDir::Cache={}", dir.join("cache").display()),
        "-oDebug::NoLocking=1".into(),
        "-oAPT::Sandbox::User=root".into(),
    ]
}

/// The kernel image for `k`, downloaded and unpacked on first use.
fn kernel_image(k: &Kernel) -> Result<PathBuf> {
    let dir = vm_dir().join(format!("kernel-{}", k.name));
    let image = dir.join("vmlinuz");
    if image.exists() {
        return Ok(image);
    }
    eprintln!(
        "xtask: fetching Debian's {} cloud kernel ({}) with apt",
        k.name, k.release
    );
    let apt = dir.join("apt");
    std::fs::create_dir_all(apt.join("lists/partial"))?;
    std::fs::create_dir_all(apt.join("cache/archives/partial"))?;
    std::fs::write(
        apt.join("sources.list"),
        format!("deb [signed-by={KEYRING}] {MIRROR} {} main\n", k.release),
    )?;
    let opts = apt_options(&apt);
    run(Command::new("apt-get").args(&opts).args(["update", "-q"]))?;
    // The metapackage names the current kernel package of the release.
    let out = Command::new("apt-cache")
        .args(&opts)
        .args(["depends", "linux-image-cloud-amd64"])
        .output()?;
    let deps = String::from_utf8_lossy(&out.stdout);
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .with_context(|| format!("no cloud kernel package in {}: {deps}", k.release))?
        .to_string();
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    run(Command::new("apt-get")
        .args(&opts)
        .args(["download", &package])
        .current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = dir.join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let vmlinuz = std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the kernel package")?;
    std::fs::copy(&vmlinuz, &image)?;
    std::fs::write(dir.join("package"), &package)?;
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(image)
}

/// Shared libraries `binary` needs, from ldd.
fn shared_libs(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l
                .split("=>")
                .nth(1)
                .unwrap_or(l)
                .split_whitespace()
                .next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn copy_into(staging: &Path, file: &Path, dest: Option<&str>) -> Result<()> {
    let rel = dest
        .map(PathBuf::from)
        .unwrap_or_else(|| file.strip_prefix("/").unwrap_or(file).to_path_buf());
    let target = staging.join(rel.strip_prefix("/").unwrap_or(&rel));
    std::fs::create_dir_all(target.parent().unwrap())?;
    std::fs::copy(file, &target).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

/// Build the initramfs with the agent from `bin_dir`.
fn initramfs(bin_dir: &Path) -> Result<PathBuf> {
    let staging = vm_dir().join("initramfs");
    let _ = std::fs::remove_dir_all(&staging);
    for d in [
        "bin",
        "sbin",
        "etc/guardrail",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
    ] {
        std::fs::create_dir_all(staging.join(d))?;
    }
    copy_into(&staging, Path::new("/bin/busybox"), Some("bin/busybox"))?;
    for name in ["guardrail-agent", "guardrail"] {
        let bin = bin_dir.join(name);
        copy_into(&staging, &bin, Some(&format!("bin/{name}")))?;
        for lib in shared_libs(&bin)? {
            copy_into(&staging, &lib, None)?;
        }
    }
    let vm = root().join("vm");
    let helper = vm_dir().join("vmhelper");
    run(Command::new("gcc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(&helper)
        .arg(vm.join("helper.c")))?;
    copy_into(&staging, &helper, Some("bin/vmhelper"))?;
    copy_into(&staging, &vm.join("init"), Some("init"))?;
    copy_into(&staging, &vm.join("scenarios.sh"), Some("scenarios.sh"))?;
    copy_into(
        &staging,
        &vm.join("guardrail.toml"),
        Some("etc/guardrail/guardrail.toml"),
    )?;
    std::fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )?;
    std::fs::write(staging.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    for f in ["init", "scenarios.sh"] {
        run(Command::new("chmod").arg("755").arg(staging.join(f)))?;
    }
    // The agent trusts its configuration only if nobody but root can
    // change it or its directories: whatever the umask and whoever builds
    // the image, nothing in it is group- or world-writable and all is
    // root's (/tmp and /run are mounted over at boot).
    run(Command::new("chmod").args(["-R", "go-w"]).arg(&staging))?;
    let image = vm_dir().join("initramfs.cpio.gz");
    let cmd = format!(
        "cd '{}' && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '{}'",
        staging.display(),
        image.display()
    );
    run(Command::new("sh").args(["-c", &cmd]))?;
    Ok(image)
}

/// What one boot reported.
struct Outcome {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub finished: bool,
    /// The kernel reached our init (it printed the first line).
    pub booted: bool,
    /// What the scenario printed to explain a failed check (its
    /// `GUARDRAIL-VM: log` lines: an agent's log, a status).
    pub logs: Vec<String>,
}

/// Boots that never reach init, retried: QEMU's TCG emulation has now and
/// then crashed a kernel during early boot here, before any of our code
/// ran. A boot that reached init is never retried.
const BOOT_ATTEMPTS: usize = 3;

/// How a VM is booted besides its kernel and initramfs.
pub struct BootSpec<'a> {
    /// The kernel command line.
    pub append: &'a str,
    pub memory_mib: u32,
    /// The whole run is given up after this long.
    pub timeout: Duration,
}

/// The busybox scenarios: BPF-LSM switched on with `lsm=`, as on hosts
/// whose kernels do not list it.
const SCENARIOS_BOOT: BootSpec = BootSpec {
    append: "console=ttyS0 lsm=lockdown,capability,bpf panic=-1 loglevel=4",
    memory_mib: 1024,
    timeout: BOOT_TIMEOUT,
};

fn boot(qemu: &Qemu, kernel: &Path, initrd: &Path, log: &Path, spec: &BootSpec) -> Result<Outcome> {
    let mut child = qemu
        .command()
        // Without CMPXCHG16B: TCG's emulation of it in SLUB's per-CPU fast
        // path double-faulted Debian's 6.12 kernel now and then (in
        // kmem_cache_alloc, with no BPF frame on the stack); kernels fall
        // back to a slower path without it.
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max,-cx16",
            "-m",
            &spec.memory_mib.to_string(),
            "-smp",
            "1",
        ])
        .args([
            "-nographic",
            // No network: the scenarios need none, and a NIC needs its
            // option ROM.
            "-nic",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", spec.append])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > spec.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
    let mut outcome = Outcome {
        passed: vec![],
        failed: vec![],
        finished: false,
        booted: false,
        logs: vec![],
    };
    for line in text.lines() {
        let Some(rest) = line.trim_end_matches('\r').split("GUARDRAIL-VM: ").nth(1) else {
            continue;
        };
        if rest.starts_with("kernel ") {
            outcome.booted = true;
        } else if let Some(name) = rest.strip_prefix("PASS ") {
            outcome.passed.push(name.to_string());
        } else if let Some(name) = rest.strip_prefix("FAIL ") {
            outcome.failed.push(name.to_string());
        } else if rest.starts_with("DONE") {
            outcome.finished = true;
        } else if let Some(text) = rest.strip_prefix("log ") {
            outcome.logs.push(text.to_string());
        }
    }
    Ok(outcome)
}

/// The scenario's explanations carried into a failure report, at most.
const MAX_LOG_LINES: usize = 80;

/// What a VM run found, after retries: the checks that passed and
/// failed, and every reason to fail the task (failed checks, an
/// unfinished run, no check passed), each prefixed with the run's label.
pub struct Run {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub failures: Vec<String>,
}

/// One VM to boot: `kernel` with `initrd`, its checks reported under
/// `label`, its serial log kept in `log`.
pub struct Boot {
    pub label: String,
    pub kernel: &'static Kernel,
    pub initrd: PathBuf,
    pub log: PathBuf,
    pub spec: BootSpec<'static>,
}

/// How many VMs run at once: each emulates one CPU on one host thread, so
/// one per host CPU; `XTASK_VM_JOBS` sets another number.
fn vm_jobs() -> usize {
    std::env::var("XTASK_VM_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Run `boots`, as many at once as [`vm_jobs`] says, in the order given
/// (put the longest first, so that the last to start is a short one);
/// their runs, in the same order. Kernels are fetched first, one at a
/// time.
pub fn run_boots(qemu: &Qemu, boots: &[Boot]) -> Result<Vec<Run>> {
    for b in boots {
        kernel_image(b.kernel)?;
    }
    let jobs = vm_jobs().min(boots.len()).max(1);
    if jobs > 1 {
        eprintln!("xtask: {} VMs, {jobs} at a time", boots.len());
    }
    let next = AtomicUsize::new(0);
    let runs: Mutex<Vec<Option<Result<Run>>>> = Mutex::new(boots.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = boots.get(i) else { break };
                let run = run_boot(qemu, b);
                runs.lock().unwrap()[i] = Some(run);
            });
        }
    });
    runs.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every boot was run"))
        .collect()
}

/// Boot `b` (again when it did not reach init), print each check and the
/// totals, prefixed with its label.
fn run_boot(qemu: &Qemu, b: &Boot) -> Result<Run> {
    let Boot {
        label,
        kernel: k,
        initrd,
        log,
        spec,
    } = b;
    let image = kernel_image(k)?;
    let package = std::fs::read_to_string(vm_dir().join(format!("kernel-{}/package", k.name)))
        .unwrap_or_default();
    eprintln!(
        "xtask: booting {label} ({package}) under QEMU/TCG; serial log in {}",
        log.display()
    );
    let started = Instant::now();
    let mut o = boot(qemu, &image, initrd, log, spec)?;
    for attempt in 2..=BOOT_ATTEMPTS {
        if o.booted {
            break;
        }
        let kept = log.with_extension(format!("failed-boot-{}.log", attempt - 1));
        std::fs::rename(log, &kept)?;
        eprintln!(
            "xtask: {label} did not reach init (see {}); booting again ({attempt}/{BOOT_ATTEMPTS})",
            kept.display()
        );
        o = boot(qemu, &image, initrd, log, spec)?;
    }
    // One write, so that the reports of VMs running side by side do not
    // interleave.
    let mut report = String::new();
    for p in &o.passed {
        report += &format!("  [{label}] PASS {p}\n");
    }
    for f in &o.failed {
        report += &format!("  [{label}] FAIL {f}\n");
    }
    report += &format!(
        "xtask: {label}: {} passed, {} failed in {:.0}s\n",
        o.passed.len(),
        o.failed.len(),
        started.elapsed().as_secs_f64()
    );
    eprint!("{report}");
    let mut failures = Vec::new();
    if !o.finished {
        failures.push(format!(
            "{label}: the scenario run did not finish (see {})",
            log.display()
        ));
    }
    if o.passed.is_empty() {
        failures.push(format!(
            "{label}: no scenario passed (see {})",
            log.display()
        ));
    }
    failures.extend(o.failed.iter().map(|f| format!("{label}: {f}")));
    // The explanation goes with the failures, at the end of the output
    // (where a CI log is read), not only in the serial log.
    if !failures.is_empty() && !o.logs.is_empty() {
        let skipped = o.logs.len().saturating_sub(MAX_LOG_LINES);
        if skipped > 0 {
            failures.push(format!(
                "{label}: log: ({skipped} earlier lines in {})",
                log.display()
            ));
        }
        failures.extend(
            o.logs[skipped..]
                .iter()
                .map(|l| format!("{label}: log: {l}")),
        );
    }
    Ok(Run {
        passed: o.passed,
        failed: o.failed,
        failures,
    })
}

/// The busybox scenario boots of `which` kernel ("all": every one), with
/// an initramfs holding the binaries of `bin_dir`.
pub fn scenario_boots(which: &str, bin_dir: &Path) -> Result<Vec<Boot>> {
    let kernels: Vec<&'static Kernel> = match which {
        "all" => KERNELS.iter().collect(),
        name => vec![KERNELS
            .iter()
            .find(|k| k.name == name)
            .with_context(|| format!("unknown kernel {name}: use 5.10, 6.1, 6.12 or all"))?],
    };
    let initrd = initramfs(bin_dir)?;
    Ok(kernels
        .into_iter()
        .map(|k| Boot {
            label: k.name.to_string(),
            kernel: k,
            initrd: initrd.clone(),
            log: vm_dir().join(format!("boot-{}.log", k.name)),
            spec: SCENARIOS_BOOT,
        })
        .collect())
}

/// Print the scenario boots' totals; fail naming every failure.
pub fn report_scenarios(runs: &[Run]) -> Result<()> {
    let passed: usize = runs.iter().map(|r| r.passed.len()).sum();
    let failed: usize = runs.iter().map(|r| r.failed.len()).sum();
    println!("vm: {passed} passed, {failed} failed");
    let failures: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.failures.iter().map(String::as_str))
        .collect();
    if !failures.is_empty() {
        bail!("VM tests failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

pub fn vm_test(which: &str, bin_dir: &Path, qemu: &Qemu) -> Result<()> {
    let boots = scenario_boots(which, bin_dir)?;
    report_scenarios(&run_boots(qemu, &boots)?)
}
