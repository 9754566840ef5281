//! Loading and attaching the probes' programs: the verifier's time is
//! reported (on a slow machine it is most of the start-up), and every
//! attachment is pinned where the kernel makes it a BPF link, so that it
//! outlives the agent.

use std::time::Instant;

use anyhow::{Context, Result};
use aya::programs::{links::FdLink, Program, RawTracePoint, TracePoint};
use aya::Ebpf;
use tracing::debug;

use super::pins::Links;

/// Where attachments go: the links to pin, and the list of what is
/// attached (for `guardrail status`).
pub(super) type AttachTo<'a, 'p> = (&'a mut Links<'p>, &'a mut Vec<String>);

/// Load tracepoint program `program` and attach it to `category/tp` for
/// each of `tps`; each attachment is pinned where it can be (see
/// [`keep_tracepoint`]) and listed as attached.
pub(super) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    (links, attached): &mut AttachTo<'_, '_>,
    program: &str,
    category: &str,
    tps: &[&str],
) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the object"))?
        .try_into()?;
    if prog.fd().is_err() {
        timed(program, || prog.load()).with_context(|| format!("verifying {program}"))?;
    }
    let started = Instant::now();
    for tp in tps {
        let id = prog
            .attach(category, tp)
            .with_context(|| format!("attaching {category}/{tp}"))?;
        keep_tracepoint(links, prog, id, &format!("{program}@{tp}"))?;
        attached.push(format!("{category}/{tp}"));
    }
    debug!(
        program,
        tracepoints = tps.len(),
        ms = started.elapsed().as_millis() as u64,
        "attached"
    );
    Ok(())
}

/// Load raw tracepoint program `program` and attach it to `tp`, pinned
/// (raw tracepoints are BPF links on every supported kernel).
pub(super) fn attach_raw(
    ebpf: &mut Ebpf,
    (links, attached): &mut AttachTo<'_, '_>,
    program: &str,
    tp: &str,
) -> Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the object"))?
        .try_into()?;
    if prog.fd().is_err() {
        timed(program, || prog.load()).with_context(|| format!("verifying {program}"))?;
    }
    let id = prog
        .attach(tp)
        .with_context(|| format!("attaching raw tracepoint {tp}"))?;
    if links.pinning() {
        links.keep(&format!("{program}@{tp}"), prog.take_link(id)?.into())?;
    }
    attached.push(format!("raw/{tp}"));
    Ok(())
}

/// Verify tracepoint and raw tracepoint programs before they are
/// attached, the first of `programs` on a thread of its own and the rest
/// on this one: the kernel verifies programs independently, and the
/// syscall exit's program alone was most of the start-up. The attach
/// functions above then skip the loading.
pub(super) fn verify_ahead(ebpf: &mut Ebpf, programs: &[&str]) -> Result<()> {
    let Some(first) = programs.first() else {
        return Ok(());
    };
    let (mut alone, rest): (Vec<_>, Vec<_>) = ebpf
        .programs_mut()
        .filter(|(name, _)| programs.contains(name))
        .partition(|(name, _)| name == first);
    std::thread::scope(|threads| {
        let alone = alone.pop().map(|(name, prog)| {
            std::thread::Builder::new()
                .name("verify".into())
                .spawn_scoped(threads, move || verify(name, prog))
        });
        let rest = rest
            .into_iter()
            .try_for_each(|(name, prog)| verify(name, prog));
        if let Some(alone) = alone {
            alone
                .context("starting a verifier thread")?
                .join()
                .map_err(|_| anyhow::anyhow!("the verifier thread panicked"))??;
        }
        rest
    })
}

/// The line of a refused load's verifier log that says why: the last one
/// before the verifier's statistics (the log runs to thousands of lines,
/// too many for a warning).
pub(super) fn verifier_verdict(log: &str) -> &str {
    let statistics = ["verification time", "stack depth", "processed "];
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty() && !l.starts_with(':') && !statistics.iter().any(|s| l.starts_with(s))
        })
        .unwrap_or(log)
}

fn verify(name: &str, prog: &mut Program) -> Result<()> {
    match prog {
        Program::TracePoint(p) => timed(name, || p.load()),
        Program::RawTracePoint(p) => timed(name, || p.load()),
        _ => anyhow::bail!("{name} is not a tracepoint program"),
    }
    .with_context(|| format!("verifying {name}"))
}

/// Run the kernel's verifier on one program (`load`), saying how long it
/// took: on a slow machine, verification is most of the start-up.
pub(super) fn timed<T, E>(program: &str, load: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    crate::notify::starting(&format!("verifying {program}"));
    let started = Instant::now();
    let result = load();
    debug!(
        program,
        ms = started.elapsed().as_millis() as u64,
        "verified"
    );
    result
}

/// Pin a tracepoint attachment where the kernel makes it a BPF link;
/// elsewhere it stays with the program (and the agent).
fn keep_tracepoint(
    links: &mut Links,
    prog: &mut TracePoint,
    id: aya::programs::trace_point::TracePointLinkId,
    name: &str,
) -> Result<()> {
    if !links.pinning() {
        return Ok(());
    }
    if !links.tracepoints_pinnable() {
        links.not_pinnable(name);
        return Ok(());
    }
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .with_context(|| format!("{name} is not a BPF link"))?;
    links.keep(name, link)
}

#[cfg(test)]
mod tests {
    use super::verifier_verdict;

    #[test]
    fn a_refusal_is_told_by_the_verifier_line_that_says_why() {
        let log = "verifying guardrail_sys_exit: the BPF_PROG_LOAD syscall returned \
                   Permission denied (os error 13). Verifier output: 0: R1=ctx() R10=fp0\n\
                   ; return refused_read(nr, ret, pid_tgid); @ main.rs:381\n\
                   calling kernel function vfs_open is not allowed\n\
                   verification time 257485 usec\n\
                   stack depth 56+104+0\n\
                   processed 28731 insns (limit 1000000) max_states_per_insn 15\n\
                   : Permission denied (os error 13)";
        assert_eq!(
            verifier_verdict(log),
            "calling kernel function vfs_open is not allowed"
        );
        assert_eq!(verifier_verdict("no log at all"), "no log at all");
    }
}
