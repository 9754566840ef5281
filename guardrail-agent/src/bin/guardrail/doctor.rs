//! `guardrail doctor`: what this host supports, and what each rule will
//! do on it.

use super::*;
use crate::rules::load_or_report;
use crate::rules::trust_report;
use crate::status::continuity_line;

/// What the kernel allows for BPF-LSM, best evidence first: the running
/// agent's canary, then a trial load (root only), then the LSM list.
pub(crate) async fn lsm_evidence(
    socket: &std::path::Path,
    facts: &HostFacts,
    no_load: bool,
) -> (LsmState, Option<Check>) {
    let running = reply(socket, &Request::Status).await.ok();
    if let Some(s) = running.and_then(|line| serde_json::from_str::<Status>(&line).ok()) {
        let agent = Check {
            level: Level::Ok,
            what: "agent",
            detail: format!(
                "guardrail-agent {} running (pid {}), {} tracepoints attached; pinned state: {}",
                s.version,
                s.pid,
                s.tracepoints_attached,
                continuity_line(s.continuity.as_ref())
            ),
        };
        let lsm = match s.capabilities.bpf_lsm_note {
            None if s.capabilities.bpf_lsm => LsmState::Proven,
            note => LsmState::Refused(note.unwrap_or_default()),
        };
        return (lsm, Some(agent));
    }
    if no_load || !facts.root {
        return (LsmState::from_facts(facts), None);
    }
    let opts = ProbeOptions {
        ring_buffer_bytes: 4096,
        wakeup_bytes: 4096,
        capture_read_opens: false,
        // Capture only this short-lived process: nobody else pays.
        only_tgid: std::process::id(),
        self_protect: false,
        // A trial: nothing may outlive it, nor touch the agent's state.
        pin_root: None,
        syscall_probes: Default::default(),
    };
    match Probes::load(&opts) {
        Ok((probes, _ring, enforcer)) => {
            let mut detail = format!("trial load: {} tracepoints attached", probes.attached.len());
            if !probes.missing.is_empty() {
                detail += &format!("; not on this kernel: {}", probes.missing.join(", "));
            }
            let check = Check {
                level: Level::Ok,
                what: "probes",
                detail,
            };
            let lsm = match enforcer {
                Ok(_) => LsmState::Proven,
                Err(why) => LsmState::Refused(why),
            };
            (lsm, Some(check))
        }
        Err(e) => (
            LsmState::from_facts(facts),
            Some(Check {
                level: Level::Fail,
                what: "probes",
                detail: format!("the probes do not load: {e:#}"),
            }),
        ),
    }
}

pub(crate) async fn doctor(
    socket: &std::path::Path,
    config: &std::path::Path,
    no_load: bool,
    json: bool,
) -> Result<()> {
    let facts = HostFacts::gather();
    let (lsm, evidence) = lsm_evidence(socket, &facts, no_load).await;
    let mut checks = guardrail_agent::doctor::checks(&facts, &lsm);
    let agent_runs = evidence.as_ref().is_some_and(|c| c.what == "agent");
    checks.extend(evidence);
    if !agent_runs {
        let root = std::path::Path::new(guardrail_agent::kernel::pins::DEFAULT_ROOT);
        if let Some(detail) = guardrail_agent::kernel::pins::describe(root) {
            checks.push(Check {
                level: Level::Warn,
                what: "pinned",
                detail: format!(
                    "{detail}. Start the agent to read them, or `guardrail-agent --unload` to remove guardrail from the kernel"
                ),
            });
        }
    }
    let rules = if config.exists() {
        Some(load_or_report(config)?)
    } else {
        None
    };
    if let Some(set) = &rules {
        // The agent refuses to start with these.
        let untrusted = trust_report(config, set);
        if untrusted.is_empty() {
            checks.push(Check {
                level: Level::Ok,
                what: "config files",
                detail: format!(
                    "{} and what it includes: only root can change them",
                    config.display()
                ),
            });
        }
        checks.extend(untrusted.into_iter().map(|detail| Check {
            level: Level::Fail,
            what: "config files",
            detail,
        }));
    }
    let effects = rules
        .as_ref()
        .map(|set| rule_effects(set, &lsm))
        .unwrap_or_default();
    if json {
        let report = serde_json::json!({
            "host": facts,
            "bpf_lsm": lsm,
            "checks": checks,
            "config": config,
            "rules": effects,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &checks {
            let mark = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{mark} {:<12} {}", c.what, c.detail);
        }
        match &rules {
            None => println!(
                "\n{}: not found; the agent would run without rules",
                config.display()
            ),
            Some(set) => {
                println!(
                    "\n{} rules in {} on this host:",
                    set.rules.len(),
                    config.display()
                );
                for line in &effects {
                    println!("  {line}");
                }
            }
        }
    }
    if checks.iter().any(|c| c.level == Level::Fail) {
        return Err(Exit::Unfit.into());
    }
    Ok(())
}
