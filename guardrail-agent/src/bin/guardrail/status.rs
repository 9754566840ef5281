//! `guardrail status`: what the running agent captures and enforces.

use super::*;

pub(crate) async fn status(socket: &std::path::Path, json: bool) -> Result<()> {
    let line = reply(socket, &Request::Status).await?;
    if json {
        println!("{line}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(&line)?;
    let c = &s.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!(
        "guardrail-agent {} (pid {}), up {}s",
        s.version, s.pid, s.uptime_s
    );
    println!("kernel            {}", c.kernel);
    if !s.probes.is_empty() {
        println!("probes            {}", s.probes);
    }
    match c.syscall_probes.as_str() {
        "" => println!("tracepoints       {} attached", s.tracepoints_attached),
        how => println!(
            "tracepoints       {} attached (syscalls: {how})",
            s.tracepoints_attached
        ),
    }
    println!("ring buffer       {} bytes", s.ring_buffer_bytes);
    println!("BTF task fields   {}", yes(c.btf));
    println!(
        "plain loads       tasks {}, files {}",
        yes(c.typed_tasks),
        yes(c.typed_files)
    );
    if let Some(note) = &c.typed_files_note {
        println!("                  files: {note}");
    }
    println!("BPF-LSM (deny)    {}", yes(c.bpf_lsm));
    if let Some(note) = &c.bpf_lsm_note {
        println!("                  {note}");
    }
    if !c.missing_syscalls.is_empty() {
        println!("not on this kernel {}", c.missing_syscalls.join(", "));
    }
    for unseen in &c.uring_unseen {
        println!("io_uring unseen    {unseen}");
    }
    println!(
        "events            {} ({:.1}/s)",
        s.events_total, s.events_per_s
    );
    println!(
        "lost              {} (ring buffer {}, in-flight table {})",
        s.lost_total, s.lost_ringbuf, s.lost_inflight
    );
    println!(
        "processes         {} tracked ({} fork/exit records lost)",
        s.processes_tracked, s.lost_process_records
    );
    println!("decode errors     {}", s.decode_errors);
    println!(
        "config            {} ({} rules, {} decisions)",
        s.config_file.as_deref().unwrap_or("none (defaults)"),
        s.rules,
        s.decisions
    );
    println!(
        "enforcement       deny {}, kill {}",
        if s.enforcement.deny {
            "in kernel"
        } else {
            "fallback"
        },
        if s.enforcement.kill {
            "in kernel"
        } else {
            "fallback"
        }
    );
    if let Some(r) = &s.last_reload {
        match &r.error {
            None => println!("last reload       ok at {}", r.time),
            Some(e) => println!(
                "last reload       FAILED at {} (previous rules in force):\n{e}",
                r.time
            ),
        }
    }
    if let Some(w) = s.read_watch.filter(|w| w.files > 0 || w.left_out > 0) {
        let left_out = if w.left_out > 0 {
            format!(
                ", {} left out (set full): their reads are not seen",
                w.left_out
            )
        } else {
            String::new()
        };
        println!("watched reads     {} files{left_out}", w.files);
    }
    if s.lineage_marks_lost > 0 {
        println!(
            "lineage           {} processes not marked (table full): not exempt by ancestor",
            s.lineage_marks_lost
        );
    }
    println!(
        "pinned state      {}",
        continuity_line(s.continuity.as_ref())
    );
    if let Some(f) = &s.fleet {
        for line in fleet_lines(f) {
            println!("{line}");
        }
    }
    match &s.audit_log {
        None => println!("audit log         off"),
        Some(a) => {
            let form = match a.process {
                Some(guardrail_agent::config::ProcessForm::Ref) => ", processes by reference",
                Some(guardrail_agent::config::ProcessForm::Full) => ", processes whole",
                None => "",
            };
            println!(
                "audit log         {}: {} written, {} lost{form}",
                a.path, a.written, a.lost
            );
            if let Some(e) = &a.last_error {
                println!("                  last error: {e}");
            }
        }
    }
    println!("tail clients      {}", s.tail_clients);
    println!(
        "redaction         {} ({} events redacted)",
        if s.redaction_enabled { "on" } else { "OFF" },
        s.redacted_events
    );
    for o in &s.outputs {
        println!(
            "output {:<10} {} sent, {} failed, {} dropped (queue or spool full), {} retries, {} queued",
            o.name, o.sent, o.failed, o.dropped, o.retries, o.queued
        );
        if let Some(b) = o.spooled_bytes {
            println!("                  spool: {b} bytes on disk");
        }
        if let Some(e) = &o.last_error {
            println!("                  last error: {e}");
        }
    }
    Ok(())
}

/// The central rules' part of `guardrail status`.
pub(crate) fn fleet_lines(f: &guardrail_agent::protocol::FleetSnapshot) -> Vec<String> {
    let mut lines = vec![format!(
        "fleet             {} ({}/{}): {}",
        f.servers,
        f.rules_bucket,
        f.rules_key,
        match (&f.connection_error, f.connected) {
            (Some(e), _) => format!("NOT CONNECTED, retrying: {e}"),
            (None, true) => "watching".to_string(),
            (None, false) => "connecting".to_string(),
        }
    )];
    lines.push(match (&f.central.rules_hash, f.central.rules_revision) {
        (Some(hash), Some(rev)) => {
            format!("                  central rules {hash} (revision {rev}) in force")
        }
        _ => "                  no central rule set applied: local rules only".to_string(),
    });
    if let (Some(rev), Some(e)) = (f.central.rejected_revision, &f.central.rules_error) {
        lines.push(format!("                  revision {rev} refused: {e}"));
    }
    lines
}

/// What survives the agent, in one line of `guardrail status`.
pub(crate) fn continuity_line(c: Option<&guardrail_agent::kernel::probes::Continuity>) -> String {
    let Some(c) = c else {
        return "none (--ephemeral): enforcement and capture end with the agent".into();
    };
    let mut line = c.state_dir.clone();
    match (&c.replaced, c.adopted) {
        (Some(why), _) => line += &format!("; replaced at start ({why})"),
        (None, true) => {
            line += &format!(
                "; adopted from pid {} ({}), unattended {} ms",
                c.previous_pid.unwrap_or(0),
                if c.previous_stopped_cleanly == Some(true) {
                    "stopped cleanly"
                } else {
                    "crashed or killed"
                },
                c.unattended_ms.unwrap_or(0)
            )
        }
        (None, false) => line += "; created at start",
    }
    if c.discarded_records > 0 {
        line += &format!("; {} records discarded", c.discarded_records);
    }
    if !c.not_pinned.is_empty() {
        line += &format!(
            "; {} tracepoints not pinnable here (capture pauses while no agent runs)",
            c.not_pinned.len()
        );
    }
    line
}
