//! The control socket's messages, as the agent serves them and the
//! `guardrail` CLI reads them: one JSON request per connection, answered
//! by one JSON value (`status`, `rules`) or a stream of lines (`tail`).

use serde::{Deserialize, Serialize};

use guardrail_engine::filter::TailFilter;

use crate::kernel::capabilities::Capabilities;

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
    pub action: guardrail_engine::rules::spec::Action,
    pub mode: guardrail_engine::rules::spec::Mode,
    pub severity: guardrail_engine::rules::spec::Severity,
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
    pub enforcement: guardrail_engine::rules::eval::Enforcement,
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
    pub fleet: Option<FleetSnapshot>,
}

/// The agent's end of the fleet as `guardrail status` shows it: the one
/// place that can say a host does not reach NATS (`fleet status` only
/// hears hosts that do).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    /// The servers, without credentials.
    pub servers: String,
    pub rules_bucket: String,
    pub rules_key: String,
    pub connected: bool,
    /// Why NATS or the rules bucket cannot be reached (retried).
    pub connection_error: Option<String>,
    #[serde(flatten)]
    pub central: CentralSummary,
}

/// The central rule set in force and the last one refused, as both the
/// host's own status and its report to the fleet show them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CentralSummary {
    /// The central rule set in force (None: none applied yet).
    pub rules_hash: Option<String>,
    pub rules_revision: Option<u64>,
    /// The latest central set refused, and why (file:line:column: …).
    pub rejected_hash: Option<String>,
    pub rejected_revision: Option<u64>,
    pub rules_error: Option<String>,
    /// The key was deleted; the last applied set stays in force.
    pub rules_deleted: bool,
}
