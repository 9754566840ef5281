//! `cargo xtask package`: the Debian package, staged from the release
//! binaries and `packaging/` and built with `dpkg-deb`; and the package
//! test: install, upgrade (configuration kept), remove and purge in a
//! Debian 12 chroot made by debootstrap (cached under target/package/).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::{root, run};

const PACKAGE: &str = "guardrail";
const MIRROR: &str = "http://deb.debian.org/debian";
const CONFFILE: &str = "etc/guardrail/guardrail.toml";

fn package_dir() -> PathBuf {
    root().join("target/package")
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The newest `GLIBC_2.N` symbol version a binary needs: its libc6
/// dependency (what dpkg-shlibdeps would compute for these binaries).
fn glibc_needed(binary: &Path) -> Result<String> {
    let bytes = std::fs::read(binary)?;
    let needle = b"GLIBC_2.";
    let newest = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(i, _)| {
            let digits: String = bytes[i + needle.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| b as char)
                .collect();
            digits.parse::<u32>().ok()
        })
        .max()
        .context("no GLIBC symbol versions in the binary")?;
    Ok(format!("2.{newest}"))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Build `target/package/guardrail_VERSION_ARCH.deb` from the release
/// binaries in `bin_dir`; `version` defaults to the workspace's.
pub fn package(bin_dir: &Path, version: Option<&str>) -> Result<PathBuf> {
    let agent = bin_dir.join("guardrail-agent");
    let cli = bin_dir.join("guardrail");
    let version = match version {
        Some(v) => v.to_string(),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let stage = package_dir().join(format!("{PACKAGE}_{version}_{arch}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let src = root().join("packaging");

    install(&agent, &stage.join("usr/sbin/guardrail-agent"), 0o755)?;
    install(&cli, &stage.join("usr/bin/guardrail"), 0o755)?;
    install(
        &src.join("guardrail-agent.service"),
        &stage.join("usr/lib/systemd/system/guardrail-agent.service"),
        0o644,
    )?;
    install(
        &root().join("config/guardrail.toml"),
        &stage.join(CONFFILE),
        0o644,
    )?;

    // Man pages and completions come from the binaries' own clap
    // definitions, so they never disagree with --help.
    let man = package_dir().join("man");
    if man.exists() {
        std::fs::remove_dir_all(&man)?;
    }
    run(Command::new(&cli).arg("man").arg(&man))?;
    run(Command::new(&agent).arg("--man").arg(&man))?;
    for entry in std::fs::read_dir(&man)? {
        let page = entry?.path();
        let section = page.extension().and_then(|e| e.to_str()).unwrap_or("1");
        let dest = stage
            .join(format!("usr/share/man/man{section}"))
            .join(page.file_name().unwrap());
        install(&page, &dest, 0o644)?;
        run(Command::new("gzip").args(["-9n"]).arg(&dest))?;
    }
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/guardrail"),
        ("zsh", "usr/share/zsh/vendor-completions/_guardrail"),
        ("fish", "usr/share/fish/vendor_completions.d/guardrail.fish"),
    ] {
        let script = output(Command::new(&cli).args(["completions", shell]))?;
        write(&stage.join(path), &script, 0o644)?;
    }

    let doc = stage.join("usr/share/doc/guardrail");
    install(&src.join("debian/copyright"), &doc.join("copyright"), 0o644)?;
    install(&root().join("README.md"), &doc.join("README.md"), 0o644)?;
    for entry in std::fs::read_dir(root().join("docs"))? {
        let file = entry?.path();
        install(
            &file,
            &doc.join("docs").join(file.file_name().unwrap()),
            0o644,
        )?;
    }

    let debian = stage.join("DEBIAN");
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        install(
            &src.join("debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    write(&debian.join("conffiles"), &format!("/{CONFFILE}\n"), 0o644)?;
    // Directories were made under whatever umask xtask runs with; the
    // agent refuses a configuration in a group- or world-writable one
    // (docs/security.md), so none may be. Files have their modes already.
    run(Command::new("chmod").args(["-R", "go-w"]).arg(&stage))?;
    // Checksums of everything but the conffile, as dh_md5sums writes them.
    let sums = output(
        Command::new("sh")
            .arg("-c")
            .arg("find usr -type f | LC_ALL=C sort | xargs md5sum")
            .current_dir(&stage),
    )?;
    write(&debian.join("md5sums"), &sums, 0o644)?;
    let size_kib = output(
        Command::new("du")
            .args(["-sk", "--exclude=DEBIAN"])
            .arg(&stage),
    )?
    .split_whitespace()
    .next()
    .unwrap_or("0")
    .to_string();
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: guardrail developers <guardrail@localhost>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6 (>= {glibc}), libgcc-s1, procps\n\
         Recommends: systemd\n\
         Section: admin\n\
         Priority: optional\n\
         Description: Linux host audit sensor with live guardrails\n \
         guardrail captures exec, file and permission changes with eBPF, checks\n \
         them against rules, writes a tamper-evident audit log, alerts, and\n \
         enforces in the kernel: deny through BPF-LSM or kill the offender.\n",
        glibc = glibc_needed(&agent)?.max(glibc_needed(&cli)?),
    );
    write(&debian.join("control"), &control, 0o644)?;

    let deb = package_dir().join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

/// A minimal Debian 12 tree with systemd (whose units the service's unit
/// is verified against) and procps (a dependency), made once and copied
/// for every test.
pub fn chroot_template() -> Result<PathBuf> {
    let template = package_dir().join("bookworm-minbase-systemd-procps");
    if template.join("usr/bin/dpkg").exists() {
        return Ok(template);
    }
    let partial = package_dir().join("bookworm-minbase-systemd-procps.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    run(Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd,procps", "bookworm"])
        .arg(&partial)
        .arg(MIRROR))?;
    std::fs::rename(&partial, &template)?;
    Ok(template)
}

struct Chroot {
    dir: PathBuf,
}

impl Chroot {
    fn new(template: &Path) -> Result<Self> {
        let dir = package_dir().join("chroot");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        run(Command::new("cp").arg("-a").arg(template).arg(&dir))?;
        Ok(Self { dir })
    }

    /// Run a shell command inside, returning its standard output.
    fn sh(&self, script: &str) -> Result<String> {
        output(
            Command::new("chroot")
                .arg(&self.dir)
                .args(["/bin/sh", "-c", script])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        )
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p.trim_start_matches('/'))
    }

    fn exists(&self, p: &str) -> bool {
        self.path(p).symlink_metadata().is_ok()
    }

    fn install(&self, deb: &Path) -> Result<String> {
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(deb, self.path("/tmp").join(&name))?;
        self.sh(&format!("dpkg -i /tmp/{name} </dev/null"))
    }

    fn status(&self) -> Result<String> {
        Ok(self
            .sh(&format!(
                "dpkg-query -W -f='${{Status}} ${{Version}}' {PACKAGE} 2>/dev/null || true"
            ))?
            .trim()
            .to_string())
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prints one `package: PASS|FAIL <check>` line per check, like the VM
/// tests; fails when any check failed.
struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
            println!("package: PASS {name}");
        } else {
            println!("package: FAIL {name}: {}", detail());
            self.failed.push(name.to_string());
        }
    }
}

pub fn package_test(bin_dir: &Path) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let first = package(bin_dir, Some(version))?;
    // The same software as a later version: what an upgrade sees.
    let upgrade = package(bin_dir, Some(&format!("{version}+upgrade1")))?;
    let template = chroot_template()?;
    let root = Chroot::new(&template)?;
    let mut c = Checks {
        failed: vec![],
        passed: 0,
    };

    root.install(&first)?;
    let status = root.status()?;
    c.check(
        "install",
        status == format!("install ok installed {version}"),
        || status.clone(),
    );
    for file in [
        "/usr/sbin/guardrail-agent",
        "/usr/bin/guardrail",
        "/usr/lib/systemd/system/guardrail-agent.service",
        "/etc/guardrail/guardrail.toml",
        "/usr/share/man/man8/guardrail-agent.8.gz",
        "/usr/share/man/man1/guardrail.1.gz",
        "/usr/share/man/man1/guardrail-doctor.1.gz",
        "/usr/share/bash-completion/completions/guardrail",
        "/usr/share/zsh/vendor-completions/_guardrail",
        "/usr/share/doc/guardrail/copyright",
    ] {
        c.check(&format!("installed {file}"), root.exists(file), || {
            "missing".into()
        });
    }
    let log_mode = std::fs::metadata(root.path("/var/log/guardrail"))
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0);
    c.check("log directory 0750", log_mode == 0o750, || {
        format!("{log_mode:o}")
    });
    c.check(
        "service enabled",
        root.exists("/etc/systemd/system/multi-user.target.wants/guardrail-agent.service"),
        || "no multi-user.target.wants link".into(),
    );
    // What the agent trusts, only root can change (--check-config below
    // checks the configuration's path too).
    let loose = root.sh(
        "find /etc/guardrail /usr/sbin/guardrail-agent /usr/bin/guardrail \
         /usr/lib/systemd/system/guardrail-agent.service \
         \\( ! -user root -o ! -group root -o -perm /022 \\) -print",
    );
    c.check(
        "installed files only root can change",
        loose.as_ref().is_ok_and(|o| o.trim().is_empty()),
        || format!("{loose:?}"),
    );
    // The binaries run on a plain Debian 12: every library they need is
    // there, and the shipped configuration is valid and trusted.
    let checked = root.sh("guardrail-agent --check-config --config /etc/guardrail/guardrail.toml");
    c.check(
        "shipped config valid",
        checked.as_ref().is_ok_and(|o| {
            o.starts_with(&format!(
                "configuration is valid: {} rules",
                shipped_rules()
            ))
        }),
        || format!("{checked:?}"),
    );
    let version_line = root.sh("guardrail --version");
    c.check(
        "cli runs",
        version_line
            .as_ref()
            .is_ok_and(|o| o.trim() == format!("guardrail {version}")),
        || format!("{version_line:?}"),
    );
    let verify = output(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.dir.display()))
            .arg("guardrail-agent.service"),
    );
    c.check("unit verifies", verify.is_ok(), || format!("{verify:?}"));

    // Upgrade: the operator's configuration stays as they left it.
    let marker = "# changed by the operator\n";
    let conf = root.path(&format!("/{CONFFILE}"));
    let edited = format!("{}{marker}", std::fs::read_to_string(&conf)?);
    std::fs::write(&conf, &edited)?;
    let upgraded = root.install(&upgrade);
    c.check("upgrade runs", upgraded.is_ok(), || format!("{upgraded:?}"));
    let status = root.status()?;
    c.check(
        "upgrade installed",
        status == format!("install ok installed {version}+upgrade1"),
        || status.clone(),
    );
    c.check(
        "upgrade keeps config",
        std::fs::read_to_string(&conf).ok().as_deref() == Some(edited.as_str()),
        || "the edited configuration changed".into(),
    );
    c.check(
        "upgrade leaves no config copies",
        !root.exists(&format!("/{CONFFILE}.dpkg-dist"))
            && !root.exists(&format!("/{CONFFILE}.dpkg-new")),
        || "a .dpkg-dist or .dpkg-new file appeared".into(),
    );

    // Remove keeps the configuration; purge takes it and the logs.
    root.sh(&format!("dpkg -r {PACKAGE}"))?;
    let status = root.status()?;
    c.check(
        "remove",
        status.starts_with("deinstall ok config-files")
            && !root.exists("/usr/sbin/guardrail-agent")
            && !root.exists("/usr/bin/guardrail"),
        || status.clone(),
    );
    c.check(
        "remove keeps config",
        std::fs::read_to_string(&conf).ok().as_deref() == Some(edited.as_str()),
        || "the configuration is gone or changed".into(),
    );
    root.sh(&format!("dpkg -P {PACKAGE}"))?;
    let status = root.status()?;
    c.check(
        "purge",
        status.is_empty() || status.starts_with("unknown"),
        || status.clone(),
    );
    c.check(
        "purge removes config and logs",
        !root.exists("/etc/guardrail") && !root.exists("/var/log/guardrail"),
        || "/etc/guardrail or /var/log/guardrail left behind".into(),
    );
    c.check(
        "purge removes the enablement",
        !root.exists("/etc/systemd/system/multi-user.target.wants/guardrail-agent.service"),
        || "multi-user.target.wants link left".into(),
    );

    println!("package: {} passed, {} failed", c.passed, c.failed.len());
    ensure!(
        c.failed.is_empty(),
        "package checks failed: {}",
        c.failed.join(", ")
    );
    Ok(())
}

/// How many rules the shipped configuration defines.
fn shipped_rules() -> usize {
    std::fs::read_to_string(crate::root().join("config/guardrail.toml"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim() == "[[rule]]")
        .count()
}
