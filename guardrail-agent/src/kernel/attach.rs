//! Loading and attaching the probes' programs: the verifier's time is
//! reported (on a slow machine it is most of the start-up), and every
//! attachment is pinned where the kernel makes it a BPF link, so that it
//! outlives the agent.

use std::time::Instant;

use anyhow::{Context, Result};
use aya::programs::{links::FdLink, RawTracePoint, TracePoint};
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
    timed(program, || prog.load()).with_context(|| format!("verifying {program}"))?;
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
    timed(program, || prog.load()).with_context(|| format!("verifying {program}"))?;
    let id = prog
        .attach(tp)
        .with_context(|| format!("attaching raw tracepoint {tp}"))?;
    if links.pinning() {
        links.keep(&format!("{program}@{tp}"), prog.take_link(id)?.into())?;
    }
    attached.push(format!("raw/{tp}"));
    Ok(())
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
