//! Prometheus metrics on a local address (`[metrics] listen`, off by
//! default): what the agent saw, decided and lost.
//!
//! Counters the event path updates live here; totals the agent already
//! keeps for `guardrail status` (kernel losses, audit log) are read from
//! the status snapshot at scrape time, so the two never disagree.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::protocol::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HitLabels {
    rule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    rule: String,
    fallback: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    events: Family<KindLabel, Counter>,
    rule_hits: Family<HitLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    evaluation: Histogram,
    delay: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(status: Arc<Mutex<Status>>) -> Self {
        let mut registry = Registry::with_prefix("guardrail");
        let events = Family::<KindLabel, Counter>::default();
        registry.register(
            "events",
            "Events delivered by the probes, by kind",
            events.clone(),
        );
        let rule_hits = Family::<HitLabels, Counter>::default();
        registry.register(
            "rule_hits",
            "Rule decisions, by rule and outcome (alerted, denied, killed, reverted, monitored, …)",
            rule_hits.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "enforcement_fallbacks",
            "Kill/deny decisions the kernel could not enforce here, by rule and the fallback used",
            fallbacks.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reloads",
            "Configuration reloads, by result (ok, failed)",
            reloads.clone(),
        );
        // 1 µs … 32 ms.
        let evaluation = Histogram::new(exponential_buckets(1e-6, 2.0, 16));
        registry.register(
            "rule_evaluation_seconds",
            "Time to evaluate the rules for one event, enforcement facts included",
            evaluation.clone(),
        );
        // 10 µs … about 1.3 s.
        let delay = Histogram::new(exponential_buckets(1e-5, 1.5, 30));
        registry.register(
            "event_delay_seconds",
            "Kernel timestamp of an event to the moment the agent hands it to the audit log and other outputs",
            delay.clone(),
        );
        registry.register_collector(Box::new(StatusCollector(status)));
        Self {
            registry,
            events,
            rule_hits,
            fallbacks,
            reloads,
            evaluation,
            delay,
        }
    }

    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn decision(&self, d: &guardrail_engine::event::Decision) {
        self.rule_hits
            .get_or_create(&HitLabels {
                rule: d.rule.clone(),
                outcome: d.outcome.to_string(),
            })
            .inc();
        if let Some(fallback) = &d.fallback {
            self.fallbacks
                .get_or_create(&FallbackLabels {
                    rule: d.rule.clone(),
                    fallback: fallback.to_string(),
                })
                .inc();
        }
    }

    pub fn evaluated(&self, took: Duration) {
        self.evaluation.observe(took.as_secs_f64());
    }

    pub fn delayed(&self, ns: u64) {
        self.delay.observe(ns as f64 * 1e-9);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Totals kept in the status snapshot, read at each scrape.
#[derive(Debug)]
struct StatusCollector(Arc<Mutex<Status>>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabel {
    output: String,
}

/// One family per counter, one sample per `[[output]]`.
fn output_counters(
    encoder: &mut DescriptorEncoder,
    outputs: &[crate::outputs::OutputSnapshot],
) -> Result<(), std::fmt::Error> {
    type Field = fn(&crate::outputs::OutputSnapshot) -> u64;
    let families: [(&str, &str, Field); 4] = [
        ("output_sent", "Events an output delivered", |o| o.sent),
        (
            "output_failed",
            "Events an output gave up on after its retries",
            |o| o.failed,
        ),
        (
            "output_dropped",
            "Events dropped because an output's queue was full",
            |o| o.dropped,
        ),
        (
            "output_retries",
            "Delivery attempts repeated after a failure",
            |o| o.retries,
        ),
    ];
    if outputs.is_empty() {
        return Ok(());
    }
    for (name, help, field) in families {
        let probe = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
        for o in outputs {
            let label = OutputLabel {
                output: o.name.clone(),
            };
            ConstCounter::new(field(o)).encode(family.encode_family(&label)?)?;
        }
    }
    Ok(())
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap().clone();
        let e = &mut encoder;
        counter(
            e,
            "kernel_lost_ringbuf",
            "Records the probes could not put in the full ring buffer",
            s.lost_ringbuf,
        )?;
        counter(
            e,
            "kernel_lost_inflight",
            "Syscalls not captured because the in-flight table was full",
            s.lost_inflight,
        )?;
        counter(
            e,
            "decode_errors",
            "Ring buffer records the agent could not decode",
            s.decode_errors,
        )?;
        if let Some(log) = &s.audit_log {
            counter(
                e,
                "audit_log_written",
                "Records written to the audit log",
                log.written,
            )?;
            counter(
                e,
                "audit_log_lost",
                "Records the audit log could not write or buffer (reported as log_gap)",
                log.lost,
            )?;
            counter(
                e,
                "audit_log_failed_writes",
                "Audit log write attempts that failed (records stay buffered)",
                log.failed_writes,
            )?;
            gauge(
                e,
                "audit_log_buffered_bytes",
                "Bytes waiting in memory for the audit log",
                log.buffered_bytes as i64,
            )?;
        }
        output_counters(e, &s.outputs)?;
        counter(
            e,
            "redacted_events",
            "Events in which a secret was redacted",
            s.redacted_events,
        )?;
        gauge(
            e,
            "bpf_lsm",
            "1 when deny and kill act in the kernel (BPF-LSM proven by the canary)",
            i64::from(s.capabilities.bpf_lsm),
        )?;
        gauge(e, "rules", "Rules in force", s.rules as i64)?;
        gauge(
            e,
            "tail_clients",
            "Connected `guardrail tail` clients",
            s.tail_clients as i64,
        )?;
        Ok(())
    }
}

/// Serve `GET /metrics` on `listener` until the agent exits. A minimal
/// HTTP/1.1 responder: one request per connection, nothing else served.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), respond(stream, &metrics)).await;
        });
    }
}

async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() > 16 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body, content_type) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "only /metrics is served\n".to_string(),
            "text/plain",
        ),
        _ => (
            "405 Method Not Allowed",
            "only GET is served\n".to_string(),
            "text/plain",
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_with_its_labels() {
        let status = Arc::new(Mutex::new(Status {
            lost_ringbuf: 7,
            ..Default::default()
        }));
        let m = Metrics::new(status);
        m.event("file");
        m.event("file");
        m.reload(false);
        m.evaluated(Duration::from_micros(3));
        let text = m.render();
        assert!(
            text.contains("guardrail_events_total{kind=\"file\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("guardrail_reloads_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("guardrail_kernel_lost_ringbuf_total 7"),
            "{text}"
        );
        assert!(
            text.contains("guardrail_rule_evaluation_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
