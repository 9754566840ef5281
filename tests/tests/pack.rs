//! The **shipped** default pack against real syscalls on real paths, one
//! technique at a time: the trigger is decided by the right rule (with the
//! program and its lineage in the event), a look-alike is not, and the same
//! files delivered by a real package (built here with dpkg-deb, installed
//! with dpkg) are not.
//!
//! Host files are touched the least way that counts: an existing file is
//! opened for appending and nothing is written; a new file is created and
//! removed; a test account is added and deleted.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use guardrail_tests::{assert_success, is_marker, marker, Agent, BoundedOutput};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn shipped_agent(dir: &Path) -> Agent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/guardrail.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replace(
        "path = \"/var/log/guardrail/audit.jsonl\"",
        &format!("path = \"{}\"", dir.join("audit.jsonl").display()),
    );
    Agent::start_with_config(&text, &[])
}

/// Everything the agent delivered up to a fresh marker (in a directory of
/// its own, so no earlier marker ends the wait).
fn events_until_now(agent: &Agent, dir: &Path) -> Vec<Value> {
    static PHASE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PHASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let phase = dir.join(format!("phase-{n}"));
    std::fs::create_dir(&phase).unwrap();
    let done = marker(&phase);
    std::fs::write(&done, b"").unwrap();
    agent.collect_until(WAIT, |e| is_marker(e, &done))
}

fn names(e: &Value, path: &str) -> bool {
    let section = if e["kind"] == "perm" { "perm" } else { "file" };
    e[section]["path"] == path || e[section]["new_path"] == path
}

fn decided_by(e: &Value, rule: &str) -> bool {
    e["decision"]["rule"] == rule
        || e["decision"]["also"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r == rule))
}

/// The trigger on `path` was decided by `rule`, naming the program and its
/// lineage.
fn assert_decided(events: &[Value], rule: &str, path: &str) {
    let hit = events
        .iter()
        .find(|e| names(e, path) && decided_by(e, rule))
        .unwrap_or_else(|| {
            let about: Vec<&Value> = events.iter().filter(|e| names(e, path)).collect();
            panic!("{rule} did not decide on {path}; its events: {about:#?}")
        });
    assert!(
        hit["process"]["exe"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{hit:#}"
    );
    assert!(
        hit["process"]["ancestors"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "the lineage is in the event: {hit:#}"
    );
}

/// Events about `path` were seen, and none was decided by `rule`.
fn assert_quiet(events: &[Value], rule: &str, path: &str) {
    let about: Vec<&Value> = events.iter().filter(|e| names(e, path)).collect();
    assert!(
        !about.is_empty(),
        "no event about {path}: the look-alike proves nothing"
    );
    let loud: Vec<&&Value> = about.iter().filter(|e| decided_by(e, rule)).collect();
    assert!(
        loud.is_empty(),
        "{rule} fired on look-alike {path}: {loud:#?}"
    );
}

/// Open an existing file for appending and write nothing (a write-capable
/// open is what the rules decide on); create it (and say so) if missing.
fn touch_for_write(path: &Path) -> bool {
    let existed = path.exists();
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} for append: {e}", path.display()));
    !existed
}

/// Open for append, then remove it again if it did not exist before.
fn append_open(path: &Path) {
    if touch_for_write(path) {
        std::fs::remove_file(path).unwrap();
    }
}

fn create_and_remove(path: &Path) {
    std::fs::write(path, b"# guardrail test\n").unwrap();
    std::fs::remove_file(path).unwrap();
}

/// A directory the test needed: made if missing, removed again (when
/// empty) if the test made it.
struct NeededDir(PathBuf, bool);

impl NeededDir {
    fn at(path: &str) -> NeededDir {
        let p = PathBuf::from(path);
        let made = !p.exists();
        std::fs::create_dir_all(&p).unwrap();
        NeededDir(p, made)
    }
}

impl Drop for NeededDir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .bounded_output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    assert_success(&out);
    out
}

fn home_of(user: &str) -> PathBuf {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let home = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| panic!("{user} is not in /etc/passwd"));
    Path::new(&home).canonicalize().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn login_persistence_pam_resolver_and_privilege_policy() {
    let dir = guardrail_tests::trusted_tempdir();
    let agent = shipped_agent(dir.path());
    let me = std::process::id();
    let root_rc = home_of("root").join(".bashrc");
    let profile_d = PathBuf::from(format!("/etc/profile.d/grtest-{me}.sh"));
    let motd = PathBuf::from(format!("/etc/update-motd.d/99-grtest-{me}"));
    let pam = PathBuf::from(format!("/etc/pam.d/grtest-{me}"));
    let module_dir = Path::new("/usr/lib/x86_64-linux-gnu/security");
    let module = module_dir.join(format!("pam_grtest{me}.so"));
    let sudoers = PathBuf::from(format!("/etc/sudoers.d/grtest-{me}"));
    let polkit_dir = Path::new("/etc/polkit-1/rules.d");
    let polkit = polkit_dir.join(format!("00-grtest-{me}.rules"));
    // Made (and removed) where the host lacks them: locals drop in reverse
    // order, so rules.d goes before polkit-1.
    let _motd_dir = NeededDir::at("/etc/update-motd.d");
    let _pam_dir = NeededDir::at("/etc/pam.d");
    let _module_dir = NeededDir::at("/usr/lib/x86_64-linux-gnu/security");
    let _sudoers_dir = NeededDir::at("/etc/sudoers.d");
    let _polkit = NeededDir::at("/etc/polkit-1");
    let _polkit_rules = NeededDir::at("/etc/polkit-1/rules.d");
    let lookalikes = [
        PathBuf::from(format!("/etc/profile.grtest-{me}")),
        PathBuf::from(format!("/etc/environment.grtest-{me}")),
        PathBuf::from(format!("/etc/pam.d.grtest-{me}")),
        PathBuf::from(format!("/usr/lib/x86_64-linux-gnu/grtest-security-{me}.so")),
        PathBuf::from(format!("/etc/hosts.grtest-{me}")),
        PathBuf::from(format!("/etc/sudoers.grtest-{me}")),
    ];
    // Triggers.
    append_open(Path::new("/etc/profile"));
    append_open(Path::new("/etc/bash.bashrc"));
    append_open(Path::new("/etc/environment"));
    append_open(Path::new("/etc/rc.local"));
    append_open(&root_rc);
    create_and_remove(&profile_d);
    create_and_remove(&motd);
    create_and_remove(&pam);
    create_and_remove(&module);
    append_open(Path::new("/etc/hosts"));
    append_open(Path::new("/etc/nsswitch.conf"));
    create_and_remove(&sudoers);
    create_and_remove(&polkit);
    // Look-alikes: neighbours with similar names.
    for l in &lookalikes {
        create_and_remove(l);
    }
    let events = events_until_now(&agent, dir.path());
    for p in [
        "/etc/profile",
        "/etc/bash.bashrc",
        "/etc/environment",
        "/etc/rc.local",
        s(&root_rc),
        s(&profile_d),
        s(&motd),
    ] {
        assert_decided(&events, "login-persistence", p);
    }
    assert_decided(&events, "pam-config", s(&pam));
    assert_decided(&events, "pam-config", s(&module));
    assert_decided(&events, "name-resolution", "/etc/hosts");
    assert_decided(&events, "name-resolution", "/etc/nsswitch.conf");
    assert_decided(&events, "privilege-policy", s(&sudoers));
    assert_decided(&events, "privilege-policy", s(&polkit));
    for (rule, l) in [
        "login-persistence",
        "login-persistence",
        "pam-config",
        "pam-config",
        "name-resolution",
        "privilege-policy",
    ]
    .iter()
    .zip(&lookalikes)
    {
        assert_quiet(&events, rule, s(l));
        let quiet_everywhere = events
            .iter()
            .filter(|e| names(e, s(l)))
            .all(|e| e["decision"].is_null());
        assert!(quiet_everywhere, "no rule decides on {}", l.display());
    }
    agent.stop();
}

/// A package that delivers files to the watched places: dpkg writes them
/// (as `*.dpkg-new`, renamed into place) and none of it is decided.
#[test]
fn the_same_files_from_a_package_are_quiet() {
    let dir = guardrail_tests::trusted_tempdir();
    let agent = shipped_agent(dir.path());
    let pkg = "grtest-pack-files";
    let root = dir.path().join("pkg");
    let files = [
        format!("etc/profile.d/{pkg}.sh"),
        format!("etc/pam.d/{pkg}"),
        format!("etc/sudoers.d/{pkg}"),
        format!("etc/systemd/user/{pkg}.service"),
    ];
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {pkg}\nVersion: 1.0\nArchitecture: all\nMaintainer: guardrail tests <tests@example.invalid>\nDescription: guardrail test package\n"
        ),
    )
    .unwrap();
    for f in &files {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "# guardrail test\n").unwrap();
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let s = root.join(&files[2]);
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let deb = dir.path().join(format!("{pkg}.deb"));
    run(&[
        "dpkg-deb",
        "--root-owner-group",
        "--build",
        s(&root),
        s(&deb),
    ]);
    dpkg(&["-i", s(&deb)]);
    let events = events_until_now(&agent, dir.path());
    dpkg(&["--purge", pkg]);
    for (rule, f) in [
        "login-persistence",
        "pam-config",
        "privilege-policy",
        "systemd-user-units",
    ]
    .iter()
    .zip(&files)
    {
        let path = format!("/{f}");
        assert_quiet(&events, rule, &path);
    }
    agent.stop();
}

/// dpkg, waiting for the lock if another apt or dpkg holds it.
fn dpkg(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .bounded_output()
            .unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("lock") && Instant::now() < deadline,
            "dpkg {args:?}: {err}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A user account for the test, deleted with its home when dropped.
struct TestUser(String);

impl TestUser {
    fn add(name: &str) -> TestUser {
        let _ = Command::new("userdel").args(["-r", name]).bounded_output();
        run(&["useradd", "-m", "-s", "/bin/sh", name]);
        TestUser(name.into())
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-r", &self.0])
            .bounded_output();
    }
}

/// Held by the tests that add and remove accounts and by those that read
/// the account files: useradd and userdel replace /etc/shadow (a new file
/// renamed over it), and a read of the new file in the moments before the
/// agent has put it in the read watch set is not captured, as documented.
/// The tests in this file run in parallel threads; these do not overlap.
static ACCOUNT_FILES: Mutex<()> = Mutex::new(());

fn account_files() -> MutexGuard<'static, ()> {
    // A test that failed while holding it does not fail the others.
    ACCOUNT_FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A user added while the agent runs: its home comes from /etc/passwd on
/// the reload the change causes, and then its authorized_keys, shell
/// history and user units are watched like root's.
#[test]
fn every_users_home_from_passwd_keys_history_and_user_units() {
    let _accounts = account_files();
    let dir = guardrail_tests::trusted_tempdir();
    let agent = shipped_agent(dir.path());
    let user = TestUser::add(&format!("grtest-h{}", std::process::id() % 100_000));
    let home = home_of(&user.0);
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let keys = ssh.join("authorized_keys");

    // The reload after useradd's change of /etc/passwd is asynchronous:
    // add the key until the agent decides on it.
    let deadline = Instant::now() + WAIT;
    let events = loop {
        std::fs::write(&keys, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIgrtest test\n").unwrap();
        let events = events_until_now(&agent, dir.path());
        if events
            .iter()
            .any(|e| names(e, s(&keys)) && decided_by(e, "ssh-authorized-keys"))
        {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "{} never decided after the account was added",
            keys.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_decided(&events, "ssh-authorized-keys", s(&keys));

    // Look-alikes: known_hosts, a backup of the keys.
    let known = ssh.join("known_hosts");
    std::fs::write(&known, "").unwrap();
    std::fs::write(ssh.join("authorized_keys.bak"), "").unwrap();
    // User units and the history.
    let units = home.join(".config/systemd/user");
    std::fs::create_dir_all(&units).unwrap();
    let unit = units.join("grtest.service");
    std::fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
    let unit_lookalike = home.join(".config/grtest.conf");
    std::fs::write(&unit_lookalike, "").unwrap();
    let hist = home.join(".bash_history");
    std::fs::write(&hist, "ls\n").unwrap();
    // bash rewriting its own history (readline: a temporary file renamed
    // over it) is the legitimate look-alike.
    run(&[
        "bash",
        "-c",
        &format!(
            "set -o history; HISTFILE={}; history -s 'echo hi'; history -w",
            hist.display()
        ),
    ]);
    let mut events = events_until_now(&agent, dir.path());
    assert_quiet(&events, "history-tampering", s(&hist));
    // Covering tracks: the history pointed at /dev/null, another truncated,
    // a third deleted.
    run(&["ln", "-sf", "/dev/null", s(&hist)]);
    let zsh = home.join(".zsh_history");
    std::fs::write(&zsh, "x\n").unwrap();
    run(&["truncate", "-s", "0", s(&zsh)]);
    let py = home.join(".python_history");
    std::fs::write(&py, "x\n").unwrap();
    run(&["rm", "-f", s(&py)]);
    events.extend(events_until_now(&agent, dir.path()));
    assert_quiet(&events, "ssh-authorized-keys", s(&known));
    assert_quiet(
        &events,
        "ssh-authorized-keys",
        s(&ssh.join("authorized_keys.bak")),
    );
    assert_decided(&events, "systemd-user-units", s(&unit));
    assert_quiet(&events, "systemd-user-units", s(&unit_lookalike));
    assert_decided(&events, "history-tampering", s(&hist));
    assert_decided(&events, "history-tampering", s(&zsh));
    assert_decided(&events, "history-tampering", s(&py));
    // Creating a history is not tampering with one.
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| names(e, s(&zsh)) && e["file"]["op"] == "open")
        .collect();
    assert!(!created.is_empty());
    assert!(created.iter().all(|e| !decided_by(e, "history-tampering")));
    // Deleting the account (userdel -r) takes its keys and histories
    // with it: not tampering.
    drop(user);
    let gone = events_until_now(&agent, dir.path());
    for p in [&keys, &zsh] {
        assert_quiet(&gone, "ssh-authorized-keys", s(p));
        assert_quiet(&gone, "history-tampering", s(p));
    }
    agent.stop();
}

/// A file the test needed: written if missing (and removed again), left
/// as it is if the host has it.
struct NeededFile(PathBuf, bool);

impl NeededFile {
    fn at(path: &Path, content: &[u8]) -> NeededFile {
        let made = !path.exists();
        if made {
            std::fs::write(path, content).unwrap();
        }
        NeededFile(path.to_path_buf(), made)
    }
}

impl Drop for NeededFile {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Reads of `path` by `exe` were seen, and none was decided by `rule`.
fn assert_read_quiet(events: &[Value], rule: &str, path: &str, exe: &str) {
    let about: Vec<&Value> = events
        .iter()
        .filter(|e| names(e, path) && e["process"]["exe"] == exe)
        .collect();
    assert!(
        !about.is_empty(),
        "no read of {path} by {exe}: the look-alike proves nothing"
    );
    let loud: Vec<&&Value> = about.iter().filter(|e| decided_by(e, rule)).collect();
    assert!(
        loud.is_empty(),
        "{rule} fired on {exe} reading {path}: {loud:#?}"
    );
}

/// Credential access: secrets read by a script are decided (with the
/// reading program and its lineage); the same files read by their owners,
/// and their public neighbours, are not.
#[test]
fn credential_reads() {
    let _accounts = account_files();
    let dir = guardrail_tests::trusted_tempdir();
    let me = std::process::id();
    let root = home_of("root");
    // What the rules watch must exist when the agent compiles its watch
    // set; made (and removed) where the host lacks it. Locals drop in
    // reverse order: files before their directories.
    let _ssh = NeededDir::at(s(&root.join(".ssh")));
    let _aws = NeededDir::at(s(&root.join(".aws")));
    let _kube = NeededDir::at(s(&root.join(".kube")));
    let _config = NeededDir::at(s(&root.join(".config")));
    let _gcloud = NeededDir::at(s(&root.join(".config/gcloud")));
    let _k8s = NeededDir::at("/etc/kubernetes");
    let _pki = NeededDir::at("/etc/kubernetes/pki");
    let user_key = root.join(format!(".ssh/id_grtest{me}"));
    let user_pub = root.join(format!(".ssh/id_grtest{me}.pub"));
    let host_key = PathBuf::from(format!("/etc/ssh/ssh_host_grtest{me}_key"));
    let host_pub = PathBuf::from(format!("/etc/ssh/ssh_host_grtest{me}_key.pub"));
    let aws = root.join(".aws/credentials");
    let kube = root.join(".kube/config");
    let gcloud = root.join(format!(".config/gcloud/grtest-{me}.db"));
    let k8s_key = PathBuf::from(format!("/etc/kubernetes/pki/grtest-{me}.key"));
    let k8s_crt = PathBuf::from(format!("/etc/kubernetes/pki/grtest-{me}.crt"));
    let _files: Vec<NeededFile> = [
        &user_key, &user_pub, &host_key, &host_pub, &aws, &kube, &gcloud, &k8s_key, &k8s_crt,
    ]
    .into_iter()
    .map(|p| NeededFile::at(p, b"guardrail test\n"))
    .collect();
    let agent = shipped_agent(dir.path());

    // Triggers: a script's cat.
    let secrets = [
        ("credential-read", PathBuf::from("/etc/shadow")),
        ("credential-read", PathBuf::from("/etc/gshadow")),
        ("ssh-host-key-read", host_key.clone()),
        ("ssh-private-key-read", user_key.clone()),
        ("cloud-credential-read", aws.clone()),
        ("cloud-credential-read", kube.clone()),
        ("cloud-credential-read", gcloud.clone()),
        ("cloud-credential-read", k8s_key.clone()),
    ];
    for (_, p) in &secrets {
        run(&["/usr/bin/cat", s(p)]);
    }
    // Look-alikes: the owners read the same files; public neighbours in
    // the same watched directories are read by the same script.
    run(&["/usr/bin/passwd", "-S", "root"]);
    run(&["/usr/bin/chage", "-l", "root"]);
    // ssh-keygen reads the key and refuses it (not a real key): the read
    // is what counts.
    let _ = Command::new("/usr/bin/ssh-keygen")
        .args(["-y", "-f", s(&host_key)])
        .bounded_output()
        .unwrap();
    for p in [&user_pub, &host_pub, &k8s_crt] {
        run(&["/usr/bin/cat", s(p)]);
    }
    let events = events_until_now(&agent, dir.path());
    for (rule, p) in &secrets {
        assert_decided(&events, rule, s(p));
    }
    assert_read_quiet(&events, "credential-read", "/etc/shadow", "/usr/bin/passwd");
    assert_read_quiet(&events, "credential-read", "/etc/shadow", "/usr/bin/chage");
    assert_read_quiet(
        &events,
        "ssh-host-key-read",
        s(&host_key),
        "/usr/bin/ssh-keygen",
    );
    // The public neighbours are not watched at all: their reads never
    // leave the kernel (the marker proves the events up to now were read).
    for p in [&host_pub, &user_pub, &k8s_crt] {
        let about: Vec<&Value> = events.iter().filter(|e| names(e, s(p))).collect();
        assert!(
            about.is_empty(),
            "a read of {} was captured: {about:#?}",
            p.display()
        );
    }
    agent.stop();
}
