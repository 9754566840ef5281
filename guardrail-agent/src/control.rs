//! The local control socket: newline-delimited JSON between the agent and
//! the `guardrail` CLI. A client sends one request line; the agent answers
//! with one line (`status`) or a stream of event lines (`tail`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tracing::{debug, error, warn};

use crate::outputs::Published;
use crate::protocol::{
    ErrorReply, Request, RuleSummary, Status, StreamStart, TailSkipped, TailStart,
};
use guardrail_engine::rules::RuleSet;

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
