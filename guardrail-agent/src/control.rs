//! The local control socket: newline-delimited JSON between the agent and
//! the `guardrail` CLI. A client sends one request line; the agent answers
//! with one line (`status`) or a stream of event lines (`tail`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tracing::{debug, error, warn};

use crate::event::Event;
use crate::filter::TailFilter;
use crate::kernel::capabilities::Capabilities;
use crate::rules::RuleSet;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Tail {
        #[serde(default)]
        filter: TailFilter,
        /// Begin the stream with a [`TailStart`] line.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        announce: bool,
    },
    /// The rules in force, with hit counts.
    Rules,
}

/// One rule in force, as `guardrail rules list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleSummary {
    pub id: String,
    pub action: crate::rules::spec::Action,
    pub mode: crate::rules::spec::Mode,
    pub severity: crate::rules::spec::Severity,
    pub description: String,
    /// Events this rule decided since it was loaded.
    pub hits: u64,
    /// file:line of its definition.
    pub origin: String,
}

/// The outcome of the latest configuration (re)load.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReloadStatus {
    pub ok: bool,
    pub time: String,
    /// Every problem found, one per line, with file:line:column. The rules
    /// in force are the previous ones.
    pub error: Option<String>,
}

/// One line of a tail stream that is not an event: the client fell behind
/// and `skipped` events were not sent to it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TailSkipped {
    pub tail_skipped: u64,
}

/// The first line of a tail stream when the client asked for it: where
/// the stream starts, so that a client can join the audit log's history
/// to it without a gap or a repeat (`guardrail tail --since`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TailStart {
    pub tail_start: StreamStart,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamStart {
    /// Every event of this agent run with a greater `seq` will be sent
    /// (those up to it may or may not be): history must reach it.
    pub after_seq: u64,
    /// When this agent run started (RFC 3339): its events are no older,
    /// the previous run's are, and `seq` restarts at 1 with each run.
    pub agent_started: String,
}

/// An error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorReply {
    pub error: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub capabilities: Capabilities,
    pub tracepoints_attached: usize,
    /// Which probes run (see `probes::probes_id`).
    #[serde(default)]
    pub probes: String,
    pub ring_buffer_bytes: u32,
    pub events_total: u64,
    /// Events per second over the last few seconds.
    pub events_per_s: f64,
    /// Records the kernel could not deliver (ring buffer full or in-flight
    /// table full), since start.
    pub lost_total: u64,
    pub lost_ringbuf: u64,
    pub lost_inflight: u64,
    /// Ring buffer bytes written and not yet read and committed (at the
    /// last drain tick): 0 when the agent has caught up.
    #[serde(default)]
    pub ring_backlog_bytes: u64,
    /// Fork and exit records the kernel could not deliver (ring buffer
    /// full): the process table asked /proc instead, after the fact.
    #[serde(default)]
    pub lost_process_records: u64,
    /// Processes in the agent's table.
    #[serde(default)]
    pub processes_tracked: usize,
    /// Records the agent could not decode (bug or version mismatch).
    pub decode_errors: u64,
    pub tail_clients: usize,
    pub config_file: Option<String>,
    pub rules: usize,
    /// Events a rule decided on.
    pub decisions: u64,
    /// What the kernel enforces here; kill/deny rules fall back otherwise.
    pub enforcement: crate::rules::eval::Enforcement,
    pub last_reload: Option<ReloadStatus>,
    pub audit_log: Option<crate::audit::writer::AuditSnapshot>,
    /// Secret redaction is on (`[redaction] enabled`).
    pub redaction_enabled: bool,
    /// Events in which a secret was redacted.
    pub redacted_events: u64,
    /// Each `[[output]]`: sent, failed, dropped (queue full), retries,
    /// queued, last error.
    #[serde(default)]
    pub outputs: Vec<crate::outputs::OutputSnapshot>,
    /// The pinned state (None: `--ephemeral`).
    #[serde(default)]
    pub continuity: Option<crate::kernel::probes::Continuity>,
    /// Processes the kernel could not mark as descendants of an exempt
    /// ancestor (`ancestor_exe_not`, lineage table full): kill and deny
    /// rules judge them as not exempt.
    #[serde(default)]
    pub lineage_marks_lost: u64,
    /// The files `file.read` rules watch in the kernel (None: the probes
    /// have no read watch set).
    #[serde(default)]
    pub read_watch: Option<crate::kernel::watch::WatchStatus>,
    /// The central rules (`[fleet]`): whether NATS is reachable, the set
    /// in force and the last refused. None without `[fleet]`.
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetSnapshot>,
}

/// A serialised event shared by every tail client.
#[derive(Clone)]
pub struct Published {
    pub event: Arc<Event>,
    pub json: Arc<str>,
}

pub struct ControlServer {
    pub status: Arc<Mutex<Status>>,
    pub events: broadcast::Sender<Published>,
    pub rules: Arc<Mutex<Arc<RuleSet>>>,
    pub access: Access,
    /// The pipeline's latest published `seq` (see `Pipeline`).
    pub last_published: Arc<std::sync::atomic::AtomicU64>,
    /// RFC 3339, taken before the agent emitted anything.
    pub started_at: String,
}

/// Who may use the socket: root, and the members of one group if
/// configured. Checked on the peer's credentials (SO_PEERCRED) as well as
/// by the socket's file mode.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub gid: Option<u32>,
    /// Users listed as members of that group in /etc/group.
    pub members: Vec<u32>,
}

impl Access {
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0
            || self
                .gid
                .is_some_and(|g| g == gid || self.members.contains(&uid))
    }
}

impl ControlServer {
    pub fn bind(path: &Path, access: &Access) -> Result<std::os::unix::net::UnixListener> {
        if let Some(dir) = path.parent() {
            // Only root, and the socket group if there is one, may reach
            // the socket: 0700 or 0750 when the agent makes the directory.
            crate::trust::create_private_dir(dir, access.gid)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "{} is in use by a running agent; stop it or pass --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        // Events reveal what every process on the host does: root only, or
        // root and one group.
        match access.gid {
            None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?,
            Some(gid) => {
                std::os::unix::fs::chown(path, Some(0), Some(gid))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            }
        }
        Ok(listener)
    }

    /// Serve `listener` on a thread and runtime of its own: under an event
    /// storm the agent's main loop is busy draining the ring buffer, and
    /// `status` must not wait for a batch of events to finish.
    pub fn serve_on_own_thread(
        self: Arc<Self>,
        listener: std::os::unix::net::UnixListener,
    ) -> Result<()> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the control socket's runtime")?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match UnixListener::from_std(listener) {
                        Ok(listener) => self.serve(listener).await,
                        Err(e) => error!("control socket: {e}"),
                    }
                })
            })
            .context("starting the control socket's thread")?;
        Ok(())
    }

    async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.handle(stream).await {
                            debug!("control client: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn handle(&self, stream: UnixStream) -> Result<()> {
        let cred = stream.peer_cred()?;
        let (read, mut write) = stream.into_split();
        if !self.access.allows(cred.uid(), cred.gid()) {
            warn!(uid = cred.uid(), pid = ?cred.pid(), "control socket: refused a client that is neither root nor in the socket group");
            let error =
                "not permitted: the control socket is for root and the configured socket_group"
                    .into();
            return reply(&mut write, &ErrorReply { error }).await;
        }
        let mut lines = BufReader::new(read).lines();
        let Some(line) = lines.next_line().await? else {
            return Ok(());
        };
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                return reply(
                    &mut write,
                    &ErrorReply {
                        error: format!("bad request: {e}"),
                    },
                )
                .await;
            }
        };
        match request {
            Request::Rules => {
                let set = self.rules.lock().unwrap().clone();
                let list: Vec<RuleSummary> = set
                    .rules
                    .iter()
                    .map(|r| RuleSummary {
                        id: r.id.clone(),
                        action: r.action,
                        mode: r.mode,
                        severity: r.severity,
                        description: r.description.clone(),
                        hits: r.hits.load(std::sync::atomic::Ordering::Relaxed),
                        origin: r.origin.clone(),
                    })
                    .collect();
                reply(&mut write, &list).await
            }
            Request::Status => {
                let mut status = self.status.lock().unwrap().clone();
                status.tail_clients = self.events.receiver_count();
                reply(&mut write, &status).await
            }
            Request::Tail { filter, announce } => {
                let filter = match filter.compile() {
                    Ok(f) => f,
                    Err(e) => {
                        return reply(
                            &mut write,
                            &ErrorReply {
                                error: e.to_string(),
                            },
                        )
                        .await
                    }
                };
                let mut rx = self.events.subscribe();
                if announce {
                    // Read after subscribing: every event stored later is
                    // sent later, so reaches this subscriber.
                    let after_seq = self
                        .last_published
                        .load(std::sync::atomic::Ordering::SeqCst);
                    let start = TailStart {
                        tail_start: StreamStart {
                            after_seq,
                            agent_started: self.started_at.clone(),
                        },
                    };
                    reply(&mut write, &start).await?;
                }
                loop {
                    match rx.recv().await {
                        Ok(p) => {
                            if filter.matches(&p.event) {
                                write.write_all(p.json.as_bytes()).await?;
                                write.write_all(b"\n").await?;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            reply(&mut write, &TailSkipped { tail_skipped: n }).await?;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
        }
    }
}

async fn reply<T: Serialize>(w: &mut tokio::net::unix::OwnedWriteHalf, value: &T) -> Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    Ok(())
}

/// Client side: send `request`, return the connected reader.
pub async fn request(
    socket: &Path,
    request: &Request,
) -> Result<tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot connect to the agent at {} (is guardrail-agent running, and are you root?)",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    // The agent reads one request per connection; closing our side now is
    // part of the protocol.
    drop(write);
    Ok(BufReader::new(read).lines())
}

#[cfg(test)]
mod tests {
    use super::Access;

    #[test]
    fn root_always_group_members_when_configured() {
        let none = Access::default();
        assert!(none.allows(0, 0));
        assert!(!none.allows(1000, 1000));
        let group = Access {
            gid: Some(50),
            members: vec![1001],
        };
        assert!(group.allows(1000, 50), "primary group");
        assert!(group.allows(1001, 1001), "listed member");
        assert!(!group.allows(1002, 1002));
    }
}
