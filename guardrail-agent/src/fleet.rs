//! The fleet (docs/fleet.md): rule sets pushed centrally to a JetStream
//! key-value bucket, one key per group of hosts, and each host's status
//! in another bucket and on `<prefix>.<host>.status`.
//!
//! The agent side runs on its own thread with its own runtime, like the
//! NATS output's publisher: the event path never waits on the network.
//! The thread only *receives* rule sets and hands them to the agent's main
//! loop, which validates and applies them through the same reload path as
//! a changed rules file (crate::reload); what happened comes back here in
//! [`CentralState`] and goes out in the next status report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::config::nats::{check_urls, shown};
use crate::config::FleetSection;
use crate::protocol::Status;
use crate::protocol::{CentralSummary, FleetSnapshot};
use crate::trust::{self, Policy, RealFs};
use guardrail_engine::rules::eval::Enforcement;

/// Rule sets kept per key (what was pushed before, for `nats kv history`).
pub const RULES_HISTORY: i64 = 10;

/// What identifies a rule set: the SHA-256 of the bytes pushed.
pub fn rules_hash(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        guardrail_engine::chain::lower_hex(&Sha256::digest(bytes))
    )
}

/// How a central rule set is named in errors and in `guardrail rules list`.
pub fn origin(bucket: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("nats:{bucket}/{key}"))
}

/// Credentials for NATS, each from a file (never shown, never logged).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

impl Credentials {
    fn file(&self) -> Option<&Path> {
        self.creds
            .as_deref()
            .or(self.nkey.as_deref())
            .or(self.token_file.as_deref())
    }

    /// The agent trusts a credential file only if only root can read or
    /// replace it (docs/security.md): whoever reads it can act as this
    /// host on NATS, whoever replaces it can point the agent elsewhere.
    pub fn check_trusted(&self, policy: &Policy) -> Result<()> {
        if let Some(f) = self.file() {
            trust::refuse(trust::check_credentials(&RealFs::new(), policy, f))?;
        }
        Ok(())
    }

    pub async fn options(&self) -> Result<async_nats::ConnectOptions> {
        Ok(if let Some(p) = &self.creds {
            async_nats::ConnectOptions::with_credentials_file(p)
                .await
                .with_context(|| format!("credentials file {}", p.display()))?
        } else if let Some(p) = &self.nkey {
            async_nats::ConnectOptions::with_nkey(read_secret(p, "nkey seed")?)
        } else if let Some(p) = &self.token_file {
            async_nats::ConnectOptions::with_token(read_secret(p, "token")?)
        } else {
            async_nats::ConnectOptions::new()
        })
    }
}

fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let text = text.trim().to_string();
    anyhow::ensure!(
        !text.is_empty(),
        "the {what} file {} is empty",
        path.display()
    );
    Ok(text)
}

/// Connect to `url` (comma-separated) once, failing fast.
pub async fn connect(url: &str, creds: &Credentials, name: &str) -> Result<async_nats::Client> {
    let urls = check_urls(url).map_err(anyhow::Error::msg)?;
    creds
        .options()
        .await?
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(urls.clone())
        .await
        .with_context(|| format!("cannot connect to {}", shown(&urls)))
}

/// What the watcher saw on the rules key.
#[derive(Debug)]
pub enum Update {
    Put { revision: u64, value: Vec<u8> },
    Deleted { revision: u64 },
}

/// The central rule set in force, and the last one refused: kept by the
/// main loop, reported by the fleet thread.
#[derive(Clone, Debug, Default)]
pub struct CentralState {
    pub applied: Option<Applied>,
    pub rejected: Option<Rejected>,
    /// The key was deleted; the last applied set stays in force.
    pub deleted_revision: Option<u64>,
    /// Watching the rules key now.
    pub connected: bool,
    /// Why the thread cannot reach the bucket now.
    pub connection_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Applied {
    pub revision: u64,
    pub hash: String,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct Rejected {
    pub revision: u64,
    pub hash: String,
    pub error: String,
}

impl CentralState {
    pub fn summary(&self) -> CentralSummary {
        CentralSummary {
            rules_hash: self.applied.as_ref().map(|a| a.hash.clone()),
            rules_revision: self.applied.as_ref().map(|a| a.revision),
            rejected_hash: self.rejected.as_ref().map(|r| r.hash.clone()),
            rejected_revision: self.rejected.as_ref().map(|r| r.revision),
            rules_error: self.rejected.as_ref().map(|r| r.error.clone()),
            rules_deleted: self.deleted_revision.is_some(),
        }
    }

    /// Whether this revision was already applied or refused (a watcher
    /// delivers the current value again after each reconnection).
    pub fn seen(&self, revision: u64) -> bool {
        self.applied
            .as_ref()
            .is_some_and(|a| a.revision == revision)
            || self
                .rejected
                .as_ref()
                .is_some_and(|r| r.revision == revision)
            || self.deleted_revision == Some(revision)
    }
}

/// One host's report, the value of its key in the status bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    pub version: String,
    /// RFC 3339, when this report was sent.
    pub last_seen: String,
    pub rules_key: String,
    #[serde(flatten)]
    pub central: CentralSummary,
    /// Rules in force, local and central.
    pub rules_in_force: usize,
    pub bpf_lsm: bool,
    pub enforcement: Enforcement,
    pub events_total: u64,
    /// Records the kernel could not deliver.
    pub lost_kernel: u64,
    /// Events outputs dropped (queue or spool full).
    pub lost_outputs: u64,
}

impl HostStatus {
    fn of(host: &str, key: &str, status: &Status, central: &CentralState) -> Self {
        Self {
            host: host.into(),
            version: status.version.clone(),
            last_seen: jiff::Timestamp::now().to_string(),
            rules_key: key.into(),
            central: central.summary(),
            rules_in_force: status.rules,
            bpf_lsm: status.capabilities.bpf_lsm,
            enforcement: status.enforcement,
            events_total: status.events_total,
            lost_kernel: status.lost_total,
            lost_outputs: status.outputs.iter().map(|o| o.dropped).sum(),
        }
    }
}

/// The agent's end of the fleet: updates to apply, state to report.
pub struct Fleet {
    pub updates: mpsc::UnboundedReceiver<Update>,
    pub state: Arc<Mutex<CentralState>>,
    pub origin: PathBuf,
    servers: String,
    rules_bucket: String,
    rules_key: String,
    kick: Arc<Notify>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    /// Start watching in the background (a server that is down is
    /// retried, and said in status). The credential file was checked with
    /// the configuration (crate::reload).
    pub fn start(cfg: &FleetSection, hostname: &str, status: Arc<Mutex<Status>>) -> Result<Self> {
        let creds = Credentials {
            creds: cfg.creds.clone(),
            nkey: cfg.nkey.clone(),
            token_file: cfg.token_file.clone(),
        };
        if let Some(f) = creds.file() {
            // Read once now so that a wrong path stops the start.
            std::fs::metadata(f).with_context(|| format!("[fleet]: {}", f.display()))?;
        }
        let (tx, updates) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(CentralState::default()));
        let kick = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let host = cfg
            .host
            .clone()
            .unwrap_or_else(|| crate::outputs::nats::default_host(hostname));
        let watcher = Watcher {
            cfg: cfg.clone(),
            creds,
            host,
            tx,
            state: state.clone(),
            status,
            kick: kick.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || watcher.run())
            .context("starting the fleet thread")?;
        Ok(Self {
            updates,
            state,
            origin: origin(&cfg.rules_bucket, &cfg.rules_key),
            servers: check_urls(&cfg.url)
                .map(|urls| shown(&urls))
                .unwrap_or_default(),
            rules_bucket: cfg.rules_bucket.clone(),
            rules_key: cfg.rules_key.clone(),
            kick,
            stop,
            thread: Some(thread),
        })
    }

    /// What `guardrail status` shows of the fleet.
    pub fn snapshot(&self) -> FleetSnapshot {
        let c = self.state.lock().unwrap();
        FleetSnapshot {
            servers: self.servers.clone(),
            rules_bucket: self.rules_bucket.clone(),
            rules_key: self.rules_key.clone(),
            connected: c.connected,
            connection_error: c.connection_error.clone(),
            central: c.summary(),
        }
    }

    /// Report the status now (after a rule set was applied or refused).
    pub fn report_now(&self) {
        self.kick.notify_one();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.kick.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Watcher {
    cfg: FleetSection,
    creds: Credentials,
    host: String,
    tx: mpsc::UnboundedSender<Update>,
    state: Arc<Mutex<CentralState>>,
    status: Arc<Mutex<Status>>,
    kick: Arc<Notify>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                warn!("fleet: cannot start a runtime: {e}");
                return;
            }
        };
        rt.block_on(async {
            let mut backoff = Duration::from_millis(200);
            while !self.stop.load(Ordering::Relaxed) {
                match self.session().await {
                    Ok(()) => break,
                    Err(e) => {
                        let e = format!("{e:#}");
                        let mut s = self.state.lock().unwrap();
                        if s.connection_error.as_ref() != Some(&e) {
                            warn!("fleet: {e}; retrying");
                        }
                        s.connected = false;
                        s.connection_error = Some(e);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.kick.notified() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// One connection: watch the rules key and report status until stopped
    /// (Ok) or the connection fails.
    async fn session(&self) -> Result<()> {
        let cfg = &self.cfg;
        let client = connect(&cfg.url, &self.creds, &format!("guardrail {}", self.host)).await?;
        let js = jetstream::new(client.clone());
        let rules = js.get_key_value(&cfg.rules_bucket).await.with_context(|| {
            format!(
                "rules bucket {}: push a rule set first (`guardrail fleet rules push FILE --key {}`)",
                cfg.rules_bucket, cfg.rules_key
            )
        })?;
        let status_kv = open_or_create_bucket(&js, &cfg.status_bucket, 1).await?;
        let mut watch = rules
            .watch_with_history(&cfg.rules_key)
            .await
            .with_context(|| format!("watching {}/{}", cfg.rules_bucket, cfg.rules_key))?;
        {
            let mut s = self.state.lock().unwrap();
            s.connected = true;
            s.connection_error = None;
        }
        info!(
            bucket = %cfg.rules_bucket,
            key = %cfg.rules_key,
            "fleet: watching the central rule set"
        );
        let subject = format!("{}.{}.status", cfg.subject_prefix, self.host);
        let mut tick = tokio::time::interval(Duration::from_secs(cfg.status_interval_s));
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::select! {
                entry = watch.next() => {
                    let entry = entry
                        .context("the rules watch ended")?
                        .context("watching the rules key")?;
                    let update = match entry.operation {
                        kv::Operation::Put => Update::Put {
                            revision: entry.revision,
                            value: entry.value.to_vec(),
                        },
                        kv::Operation::Delete | kv::Operation::Purge => Update::Deleted {
                            revision: entry.revision,
                        },
                    };
                    if self.tx.send(update).is_err() {
                        return Ok(());
                    }
                }
                _ = tick.tick() => self.report(&client, &status_kv, &subject).await?,
                _ = self.kick.notified() => self.report(&client, &status_kv, &subject).await?,
            }
        }
    }

    async fn report(
        &self,
        client: &async_nats::Client,
        status_kv: &kv::Store,
        subject: &str,
    ) -> Result<()> {
        let report = {
            let status = self.status.lock().unwrap();
            let central = self.state.lock().unwrap();
            HostStatus::of(&self.host, &self.cfg.rules_key, &status, &central)
        };
        let body: bytes::Bytes = serde_json::to_vec(&report)?.into();
        client
            .publish(subject.to_string(), body.clone())
            .await
            .context("publishing status")?;
        status_kv
            .put(&self.host, body)
            .await
            .with_context(|| format!("status bucket {}", self.cfg.status_bucket))?;
        Ok(())
    }
}

/// The bucket `name`, created when missing with `history` values per key
/// (an existing bucket is used as it is). Created as the stream a
/// key-value bucket is, directly: the client's own `create_key_value`
/// first asks for account information that nats-server 2.9 (Debian 12)
/// answers in a form this client does not read.
async fn open_or_create_bucket(
    js: &jetstream::Context,
    name: &str,
    history: i64,
) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create bucket {name}"))?;
    js.get_key_value(name)
        .await
        .with_context(|| format!("bucket {name}"))
}

/// `guardrail fleet rules push`: put `text` (validated by the caller) as
/// `key`, creating the bucket when missing. Returns the revision.
pub async fn push(client: async_nats::Client, bucket: &str, key: &str, text: &str) -> Result<u64> {
    let js = jetstream::new(client);
    let store = open_or_create_bucket(&js, bucket, RULES_HISTORY).await?;
    store
        .put(key, text.to_string().into())
        .await
        .with_context(|| format!("putting {bucket}/{key}"))
}

/// One host in `guardrail fleet status`.
#[derive(Debug, Serialize)]
pub struct FleetRow {
    #[serde(flatten)]
    pub status: HostStatus,
    /// The hash of what is pushed now for the host's key.
    pub pushed_hash: Option<String>,
    /// The host applied what is pushed now.
    pub in_sync: bool,
    /// Seconds since the host's last report.
    pub age_s: Option<u64>,
}

/// Every host's latest report, with whether it runs the pushed rules.
pub async fn fleet_status(
    client: async_nats::Client,
    rules_bucket: &str,
    status_bucket: &str,
) -> Result<Vec<FleetRow>> {
    let js = jetstream::new(client);
    let status = js
        .get_key_value(status_bucket)
        .await
        .with_context(|| format!("status bucket {status_bucket}: no host has reported yet"))?;
    let rules = js.get_key_value(rules_bucket).await.ok();
    let mut keys = bucket_keys(&status)
        .await
        .with_context(|| format!("listing the hosts in {status_bucket}"))?;
    keys.sort();
    let now = jiff::Timestamp::now();
    let mut pushed: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut rows = Vec::new();
    for k in keys {
        let Some(v) = status.get(&k).await? else {
            continue;
        };
        let Ok(s) = serde_json::from_slice::<HostStatus>(&v) else {
            warn!("status of {k} is not a guardrail status report; skipped");
            continue;
        };
        if !pushed.contains_key(&s.rules_key) {
            let h = match &rules {
                Some(r) => r.get(&s.rules_key).await?.map(|v| rules_hash(&v)),
                None => None,
            };
            pushed.insert(s.rules_key.clone(), h);
        }
        let pushed_hash = pushed[&s.rules_key].clone();
        let age_s = s
            .last_seen
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| now.duration_since(t).as_secs().max(0) as u64);
        rows.push(FleetRow {
            in_sync: pushed_hash.is_some() && pushed_hash == s.central.rules_hash,
            pushed_hash,
            age_s,
            status: s,
        });
    }
    Ok(rows)
}

/// The keys of `store`, from its stream's subjects in one request per
/// page. `Store::keys` reads them with an ordered consumer that ends on a
/// message with nothing pending, and hosts replace their status every few
/// seconds: a message counted as pending can be replaced before it is
/// delivered, and the listing then waits for the client's check on an idle
/// heartbeat. A `fleet status` in the fleet suite never returned, most
/// likely this way; a stream info request has no such wait.
async fn bucket_keys(store: &kv::Store) -> Result<Vec<String>> {
    let filter = format!("{}>", store.prefix);
    let subjects: Vec<(String, usize)> = store
        .stream
        .info_with_subjects(&filter)
        .await?
        .try_collect()
        .await?;
    Ok(subjects
        .into_iter()
        .filter_map(|(subject, _)| subject.strip_prefix(&store.prefix).map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_refused_without_being_repeated() {
        let err =
            check_urls("nats://127.0.0.1:4222, nats://ops:hunter2@10.0.0.2:4222").unwrap_err();
        assert!(err.contains("nats://10.0.0.2:4222"), "{err}");
        assert!(err.contains("token_file"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("ops"), "{err}");
        assert_eq!(check_urls("nats://a:4222,tls://b:4443").unwrap().len(), 2);
        assert!(check_urls("http://a:4222").is_err());
    }
}
