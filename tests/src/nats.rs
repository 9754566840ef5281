//! A real nats-server (Debian's `nats-server`, installed by `cargo xtask
//! test`) and a reader of the stream the agents publish to, for the NATS
//! output's and the fleet's tests.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::{free_port, wait_until};

/// The stream the nats outputs create by default.
pub const STREAM: &str = "GUARDRAIL";

/// A nats-server with JetStream on a free port of 127.0.0.1, storing in
/// a directory; extra arguments make it, e.g., one node of a cluster.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl NatsServer {
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let mut s = Self::not_started(free_port(), dir, args);
        s.restart();
        s
    }

    /// A server that will listen on `port` once [`Self::restart`] starts
    /// it (agents configured with its URL meanwhile find nobody there).
    pub fn not_started(port: u16, dir: &Path, args: &[&str]) -> Self {
        Self {
            child: None,
            port,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and store.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server, installed by cargo xtask test)");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            "nats-server to accept connections",
            Duration::from_secs(120),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// SIGKILL: no goodbye to the clients or the other nodes.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A runtime for the test's own NATS client calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every record of [`STREAM`] in stream order (subject, record: a message
/// holds one or more, one per line), read
/// as the client `opts` makes; none while the stream does not exist. A
/// server or cluster that does not answer now (a node just died, leaders
/// being elected, a loaded machine) is asked again, for up to 120 s.
pub fn read_stream(url: &str, opts: async_nats::ConnectOptions) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match runtime().block_on(read_stream_once(url, opts.clone())) {
            Ok(messages) => return messages,
            Err(e) => assert!(
                Instant::now() < deadline,
                "reading stream {STREAM} from {url} for 120 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

async fn read_stream_once(
    url: &str,
    opts: async_nats::ConnectOptions,
) -> Result<Vec<(String, String)>, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let client = opts
        .connect(url)
        .await
        .map_err(|e| fail("connecting", &e))?;
    let js = async_nats::jetstream::new(client);
    let mut stream = match js.get_stream(STREAM).await {
        Ok(stream) => stream,
        Err(e) if e.to_string().contains("not found") => return Ok(vec![]),
        Err(e) => return Err(fail("getting the stream", &e)),
    };
    let info = stream.info().await.map_err(|e| fail("stream info", &e))?;
    let n = info.state.messages as usize;
    if n == 0 {
        return Ok(vec![]);
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| fail("creating a consumer", &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| fail("consuming", &e))?;
    let mut out = Vec::with_capacity(n);
    let mut messages_read = 0;
    while messages_read < n {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| {
                format!(
                    "message {} of {n} not delivered within 30 s",
                    messages_read + 1
                )
            })?
            .ok_or("the consumer ended")?
            .map_err(|e| fail("a message", &e))?;
        messages_read += 1;
        let payload = std::str::from_utf8(&m.payload).map_err(|e| fail("payload", &e))?;
        out.extend(
            payload
                .lines()
                .map(|record| (m.subject.to_string(), record.to_string())),
        );
    }
    Ok(out)
}
