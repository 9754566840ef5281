//! Webhook output: one HTTP POST of JSON per event, retried with
//! exponential backoff.
//!
//! Guarantee (docs/outputs.md): each event that entered the queue is
//! POSTed until the server answers 2xx, up to `1 + retries` attempts, in
//! queue order; then it is counted as failed. Retried: connection errors,
//! timeouts, 408, 429 and 5xx. Not retried: other answers (a 4xx means the
//! request itself is wrong). An event is sent twice only if a 2xx answer
//! was lost on the way back (e.g. a timeout after the server accepted it).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::{details, severity_name, Delivery, Sink};
use crate::config::{OutputSection, WebhookFormat};
use crate::outputs::Published;
use guardrail_engine::event::Event;

pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_RETRIES: u32 = 5;
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;

pub struct Webhook {
    agent: ureq::Agent,
    url: String,
    /// scheme://host[:port], for messages: the rest of a webhook URL is
    /// often its secret (Slack's are).
    shown: String,
    format: WebhookFormat,
    headers: BTreeMap<String, String>,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    hostname: String,
}

/// A failed attempt, and whether another may succeed.
struct Failure {
    retry: bool,
    message: String,
}

fn shown(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials in the authority are not shown either.
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    format!("{scheme}://{host}")
}

impl Webhook {
    pub fn new(cfg: &OutputSection, hostname: String) -> Result<Self> {
        let url = cfg
            .url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a webhook needs `url`"))?;
        let timeout = Duration::from_millis(cfg.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            // A redirected POST would resend the body and headers
            // somewhere else.
            .redirects(0)
            .user_agent(concat!("guardrail/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            agent,
            shown: shown(&url),
            url,
            format: cfg.format.unwrap_or_default(),
            headers: cfg.headers.clone().unwrap_or_default(),
            retries: cfg.retries.unwrap_or(DEFAULT_RETRIES),
            backoff: Duration::from_millis(cfg.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS)),
            max_backoff: Duration::from_millis(
                cfg.max_backoff_ms.unwrap_or(DEFAULT_MAX_BACKOFF_MS),
            ),
            hostname,
        })
    }

    fn post(&self, body: &str) -> Result<(), Failure> {
        let mut req = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        match req.send_string(body) {
            Ok(resp) => {
                let status = resp.status();
                // Read the answer so that the connection can be reused.
                let _ = resp.into_string();
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(Failure {
                        retry: false,
                        message: format!("{}: HTTP {status}", self.shown),
                    })
                }
            }
            Err(ureq::Error::Status(status, resp)) => {
                let _ = resp.into_string();
                Err(Failure {
                    retry: status >= 500 || status == 429 || status == 408,
                    message: format!("{}: HTTP {status}", self.shown),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                let mut message = format!("{}: {}", self.shown, t.kind());
                if let Some(m) = t.message() {
                    message.push_str(": ");
                    message.push_str(m);
                }
                if let Some(source) = std::error::Error::source(&t) {
                    message.push_str(&format!(": {source}"));
                }
                Err(Failure {
                    retry: true,
                    message,
                })
            }
        }
    }

    /// The wait before retry number `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(self.max_backoff)
    }
}

impl Sink for Webhook {
    fn deliver(&mut self, p: &Published, d: &Delivery) -> Result<(), String> {
        let body = match self.format {
            WebhookFormat::Json => p.json.to_string(),
            WebhookFormat::Slack => slack(&p.event, &self.hostname),
        };
        let mut retry = 0;
        loop {
            let failure = match self.post(&body) {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            if !failure.retry || retry >= self.retries {
                return Err(failure.message);
            }
            // Stopping: the first attempt is made, no more waiting.
            if !d.sleep(self.backoff(retry)) {
                return Err(format!("{} (agent stopping)", failure.message));
            }
            d.stats
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            retry += 1;
        }
    }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `{"text": …}`: what Slack-compatible incoming webhooks accept.
pub fn slack(event: &Event, hostname: &str) -> String {
    let head = match &event.decision {
        Some(d) => format!(
            "*guardrail* on `{}`: rule `{}` {} ({})",
            slack_escape(hostname),
            slack_escape(&d.rule),
            d.outcome,
            severity_name(d.severity)
        ),
        None => format!("*guardrail* on `{}`", slack_escape(hostname)),
    };
    let text = format!("{head}\n```{}```", slack_escape(&details(event)));
    serde_json::json!({ "text": text }).to_string()
}
