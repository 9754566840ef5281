//! Harness for the host integration tests: starts the real `guardrail-agent`
//! (which loads the real probes) and collects the events it prints.
//!
//! The tests need root and a kernel with BPF tracepoints and ring buffers;
//! they fail, rather than skip, without them, so that a green run means the
//! probes really ran.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod nats;

/// A binary of this workspace, next to the test executable's deps folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo xtask test` (it builds the binaries first)",
        path.display()
    );
    path
}

/// How long a command a test runs may take: any longer and it hangs.
const COMMAND_DEADLINE: Duration = Duration::from_secs(600);

/// [`Command::output`] that cannot hang a run: after [`COMMAND_DEADLINE`]
/// the command is killed and the test fails naming it. One `guardrail
/// fleet status` that never returned used up a whole CI run's time, and
/// with it every later suite's result.
pub trait BoundedOutput {
    fn bounded_output(&mut self) -> std::io::Result<std::process::Output>;
}

impl BoundedOutput for Command {
    fn bounded_output(&mut self) -> std::io::Result<std::process::Output> {
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(COMMAND_DEADLINE) {
            Ok(output) => output,
            Err(_) => {
                // SAFETY: signalling a child this test started, not yet reaped.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("{self:?} did not finish within {COMMAND_DEADLINE:?}")
            }
        }
    }
}

/// Panic with what the command printed unless it succeeded.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// chmod `file` to 4755 and wait for the event (20 s at most); return its
/// decision. The file is put back to 0644 after.
pub fn setuid_decision(agent: &Agent, file: &Path) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let chmod =
        |mode| std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
    chmod(0o4755);
    let events = agent.collect_until(Duration::from_secs(20), |e| {
        e["perm"]["op"] == "chmod"
            && e["perm"]["path"] == file.to_str().unwrap()
            && e["perm"]["mode"] == "4755"
    });
    chmod(0o644);
    events.last().unwrap()["decision"].clone()
}

/// `guardrail rules test CANDIDATE --events LOG --json`: the replay's
/// report (the command must succeed).
pub fn rules_test(candidate: &Path, events: &Path) -> Value {
    let out = Command::new(bin("guardrail"))
        .args(["rules", "test"])
        .arg(candidate)
        .arg("--events")
        .arg(events)
        .arg("--json")
        .bounded_output()
        .expect("running guardrail rules test");
    assert_success(&out);
    serde_json::from_slice(&out.stdout).expect("rules test --json prints JSON")
}

/// `guardrail log search ARGS…` (it must succeed): the JSON lines it
/// printed, and what it said on standard error.
pub fn log_search(args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new(bin("guardrail"))
        .args(["log", "search"])
        .args(args)
        .bounded_output()
        .expect("running guardrail log search");
    assert_success(&out);
    let found = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("log search --json prints JSON lines"))
        .collect();
    (found, String::from_utf8(out.stderr).unwrap())
}

/// `guardrail log verify FILE…`, oldest file first.
pub fn log_verify<P: AsRef<Path>>(files: &[P]) -> std::process::Output {
    Command::new(bin("guardrail"))
        .args(["log", "verify"])
        .args(files.iter().map(|f| f.as_ref()))
        .bounded_output()
        .expect("running guardrail log verify")
}

/// `guardrail log verify --nats URL --host HOST`, with more arguments.
pub fn log_verify_nats(url: &str, host: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("guardrail"))
        .args(["log", "verify", "--nats", url, "--host", host])
        .args(args)
        .bounded_output()
        .expect("running guardrail log verify --nats")
}

/// Poll `ok` every 100 ms until it holds; panic naming `what` after
/// `timeout`. Deadlines are generous: a loaded 2-core machine must not
/// fail a check that is about correctness, not speed.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where agents' configurations live during the tests. The agent trusts
/// only files that only root can change, on paths only root can change
/// (docs/security.md): not under /tmp, which anyone may write.
pub const TRUSTED_ROOT: &str = "/run/guardrail-tests";

/// A fresh directory (0700) in [`TRUSTED_ROOT`] (root's, 0755), removed
/// when dropped: a place for configurations and rules files the agent
/// accepts.
pub fn trusted_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let root = Path::new(TRUSTED_ROOT);
    std::fs::create_dir_all(root).expect("creating the trusted test directory");
    std::os::unix::fs::chown(root, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    tempfile::Builder::new()
        .prefix("agent-")
        .tempdir_in(root)
        .expect("temp dir in the trusted test directory")
}

pub fn require_root() {
    // SAFETY: no arguments.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the host integration tests load eBPF programs: run them as root"
    );
}

/// How to run the agent, beyond its configuration.
#[derive(Default)]
pub struct Launch {
    /// A program (and its arguments) that runs the agent, e.g. `setpriv …`.
    pub wrapper: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Do not print events (`--print none`): for loads whose events the
    /// test does not read.
    pub quiet: bool,
    /// This control socket instead of one in the agent's temp dir.
    pub socket: Option<PathBuf>,
    /// Pin the probes, rules and ring buffer here (on bpffs), as a service
    /// does; None: `--ephemeral`, so that the many agents of the tests
    /// leave nothing behind and never adopt each other's state.
    pub state_dir: Option<PathBuf>,
}

pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    pub config: PathBuf,
    events: Receiver<Value>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Start an agent printing JSON events, and wait until its probes are
    /// attached (it binds its socket only after that).
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_with_config("", extra)
    }

    /// Start an agent whose config file holds `config` (rules included).
    pub fn start_with_config(config_text: &str, extra: &[&str]) -> Agent {
        Self::launch(config_text, extra, &Launch::default())
    }

    /// Start an agent as `launch` says (under a wrapper such as `setpriv`,
    /// with extra environment).
    pub fn launch(config_text: &str, extra: &[&str], launch: &Launch) -> Agent {
        require_root();
        // Not under /tmp: the agent refuses a configuration others could
        // replace.
        let dir = trusted_tempdir();
        let socket = launch
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("guardrail.sock"));
        let config = dir.path().join("guardrail.toml");
        // Each agent its own audit log, unless the test configures one.
        let config_text = if config_text.contains("[audit_log]") {
            config_text.to_string()
        } else {
            format!(
                "[audit_log]\npath = \"{}\"\n{config_text}",
                dir.path().join("audit.jsonl").display()
            )
        };
        std::fs::write(&config, config_text).unwrap();
        let mut command = match launch.wrapper.split_first() {
            None => Command::new(bin("guardrail-agent")),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("guardrail-agent"));
                c
            }
        };
        let mut child = command
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .args(["--print", if launch.quiet { "none" } else { "json" }])
            .args(match &launch.state_dir {
                None => vec!["--ephemeral".into()],
                Some(dir) => vec!["--state-dir".into(), dir.clone().into_os_string()],
            })
            .args(extra)
            // `cargo xtask test` runs the capture suites a second time with
            // the raw syscall probes (those kernels before 5.15 use).
            .args(match std::env::var("GUARDRAIL_TEST_SYSCALL_PROBES") {
                Ok(how) if !extra.contains(&"--syscall-probes") => {
                    vec!["--syscall-probes".to_string(), how]
                }
                _ => vec![],
            })
            .env("GUARDRAIL_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting guardrail-agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent printed a non-JSON line ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("guardrail-agent exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "agent did not start within 120 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Agent {
            child,
            socket,
            config,
            events: rx,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Events until one matches `done` (included), or panic after `timeout`.
    pub fn collect_until(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    let stop = done(&v);
                    seen.push(v);
                    if stop {
                        return seen;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no matching event within {timeout:?}; {} events seen, last: {:?}",
                    seen.len(),
                    seen.last()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!("the agent stopped printing"),
            }
        }
    }

    /// Every event that arrives within `window`.
    pub fn collect_for(&self, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(v) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            seen.push(v);
        }
        seen
    }

    /// Stop reading what the agent prints: the reader drops its end of
    /// the pipe at the next line, as a `guardrail-agent --print json | head`
    /// does.
    pub fn stop_reading(&mut self) {
        self.events = mpsc::channel().1;
    }

    /// The agent process has not exited.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and the agent must exit 0 with its socket removed.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "agent exited with {status} after SIGTERM");
        assert!(!self.socket.exists(), "agent left its socket behind");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique marker path: tests end their workloads by creating it, and
/// wait for that event, so they know everything before it was delivered.
pub fn marker(dir: &Path) -> PathBuf {
    dir.join(format!(".done-{}", std::process::id()))
}

pub fn is_marker(e: &Value, marker: &Path) -> bool {
    e["kind"] == "file" && e["file"]["path"] == marker.to_str().unwrap()
}

pub fn gettid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

pub fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

impl Agent {
    /// Run the `guardrail` CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("guardrail"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .bounded_output()
            .expect("running guardrail")
    }

    /// `guardrail status --json`.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// A TCP port nothing listens on now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that changes file modes when released, and exits: a
/// storm whose size the test knows exactly.
pub struct ChmodStorm {
    pub pid: i32,
    go: i32,
}

impl ChmodStorm {
    /// A storm on a new empty file in a temporary directory, which lives as
    /// long as the returned guard.
    pub fn in_tempdir(calls: usize) -> (tempfile::TempDir, ChmodStorm) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("target");
        std::fs::write(&file, b"").unwrap();
        let storm = ChmodStorm::new(&file, calls);
        (dir, storm)
    }

    pub fn new(file: &Path, calls: usize) -> ChmodStorm {
        let path = cstr(file);
        // The child waits until released, then bursts.
        ChmodStorm::spawn(|go| {
            let mut b = 0u8;
            // SAFETY: async-signal-safe calls on our own pipe and path.
            unsafe {
                libc::read(go, (&mut b as *mut u8).cast(), 1);
                for i in 0..calls {
                    libc::chmod(path.as_ptr(), if i % 2 == 0 { 0o644 } else { 0o600 });
                }
            }
            0
        })
    }

    /// A child that sets mode 0600 on `per_release` of `files` each time it
    /// is released, in order, and exits after the last (1 if the test went
    /// away before releasing them all).
    pub fn paced(files: &[PathBuf], per_release: usize) -> ChmodStorm {
        let paths: Vec<std::ffi::CString> = files.iter().map(|f| cstr(f)).collect();
        ChmodStorm::spawn(|go| {
            let mut b = 0u8;
            for batch in paths.chunks(per_release) {
                // SAFETY: async-signal-safe calls on our own pipe and paths.
                unsafe {
                    if libc::read(go, (&mut b as *mut u8).cast(), 1) != 1 {
                        return 1;
                    }
                    for p in batch {
                        libc::chmod(p.as_ptr(), 0o600);
                    }
                }
            }
            0
        })
    }

    /// A child that, once released, changes `file`'s mode every `pause`
    /// or so until `stop` exists, then writes how many calls it made (in
    /// decimal) into `count` and exits: a storm that lasts as long as the
    /// test needs, whose size it learns at the end.
    pub fn until_stopped(file: &Path, pause: Duration, stop: &Path, count: &Path) -> ChmodStorm {
        let (path, stop, count) = (cstr(file), cstr(stop), cstr(count));
        let pause = libc::timespec {
            tv_sec: pause.as_secs() as libc::time_t,
            tv_nsec: pause.subsec_nanos() as libc::c_long,
        };
        ChmodStorm::spawn(|go| {
            let mut b = 0u8;
            let mut calls: u64 = 0;
            // SAFETY: async-signal-safe calls on our own pipe, paths and
            // stack buffer.
            unsafe {
                if libc::read(go, (&mut b as *mut u8).cast(), 1) != 1 {
                    return 1;
                }
                while libc::access(stop.as_ptr(), libc::F_OK) != 0 {
                    let mode = if calls.is_multiple_of(2) {
                        0o644
                    } else {
                        0o600
                    };
                    if libc::chmod(path.as_ptr(), mode) != 0 {
                        return 1;
                    }
                    calls += 1;
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                loop {
                    at -= 1;
                    digits[at] = b'0' + (calls % 10) as u8;
                    calls /= 10;
                    if calls == 0 {
                        break;
                    }
                }
                let fd = libc::open(
                    count.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o644,
                );
                let len = digits.len() - at;
                if fd < 0 || libc::write(fd, digits[at..].as_ptr().cast(), len) != len as isize {
                    return 1;
                }
                libc::close(fd);
            }
            0
        })
    }

    /// Fork a child that runs `child` with the reading end of the pipe
    /// [`ChmodStorm::release`] writes to, then exits with what it returns.
    /// `child` must use only async-signal-safe calls (the test is
    /// multi-threaded).
    fn spawn(child: impl FnOnce(i32) -> i32) -> ChmodStorm {
        let mut pipe = [0i32; 2];
        // SAFETY: creating a pipe into a local array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only runs `child` and exits.
        let pid = unsafe {
            match libc::fork() {
                0 => {
                    // Only the test holds the writing end: should it go
                    // away, the child reads the end of the pipe.
                    libc::close(pipe[1]);
                    libc::_exit(child(pipe[0]));
                }
                pid => pid,
            }
        };
        // SAFETY: closing the reading end, which is the child's.
        unsafe { libc::close(pipe[0]) };
        ChmodStorm { pid, go: pipe[1] }
    }

    pub fn release(&self) {
        // SAFETY: writing one byte to our pipe.
        unsafe { libc::write(self.go, b"x".as_ptr().cast(), 1) };
    }

    /// Reap the child; it must have exited 0.
    pub fn wait(&self) {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(status, 0);
    }
}
