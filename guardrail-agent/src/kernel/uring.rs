//! Capturing file operations submitted through io_uring.
//!
//! The syscall tracepoints never fire for them. The probes read each
//! request when it is submitted (the op's prepared command, which holds
//! the kernel's own copy of its paths) and report it, with its result,
//! when it completes: as the syscall that does the same, marked as having
//! come through io_uring. Everything they read is located here, from the
//! running kernel's BTF and the tracepoints' format files; a kernel that
//! lacks a piece gets nothing attached for what needs it, and a warning
//! says what is not seen (docs/events.md#io_uring).

use std::path::Path;

use anyhow::Result;
use aya::Ebpf;
use guardrail_common::{uring_op, UringOffsets};
use tracing::warn;

use super::attach::{attach_raw, attach_tracepoint, AttachTo};
use super::btf::{self, Btf, BtfError};
use super::tracefs;

/// What the probes need to follow io_uring requests on this kernel.
#[derive(Clone, Debug, Default)]
pub struct UringCapture {
    pub offsets: UringOffsets,
    /// The submission tracepoint (`io_uring_submit_req`, before 6.3
    /// `io_uring_submit_sqe`), when it carries the request.
    submit: Option<&'static str>,
    /// Ops this kernel cannot report, and why.
    pub unseen: Vec<String>,
    /// The raw tracepoint programs fit this kernel's prototypes (the
    /// io_uring of 5.15, matched by user_data): they are used with the
    /// raw syscall probes, pinnable where tracepoints are not.
    raw_fits: bool,
}

/// How a completion is matched to the submission it ends (offsets in the
/// tracepoint records).
enum Matched {
    /// `io_uring_complete` names the request (as on Debian's 6.1).
    ByRequest(u32),
    /// It names only the ring and the submitter's `user_data` (the
    /// io_uring of 5.15, which 5.10's later stable kernels carry: Debian's
    /// 5.10.223).
    ByUserData {
        submit_ctx: u32,
        submit_user_data: u32,
        complete_ctx: u32,
        complete_user_data: u32,
    },
}

/// The ops reported, with the command struct each is read from.
const OPS: &[(u32, &str, &str)] = &[
    (uring_op::OPENAT, "openat", "io_open"),
    (uring_op::OPENAT2, "openat2", "io_open"),
    (uring_op::RENAMEAT, "renameat", "io_rename"),
    (uring_op::UNLINKAT, "unlinkat", "io_unlink"),
    (uring_op::MKDIRAT, "mkdirat", "io_mkdir"),
    (uring_op::SYMLINKAT, "symlinkat", "io_link (io_symlink)"),
    (uring_op::LINKAT, "linkat", "io_link (io_hardlink)"),
    (uring_op::FTRUNCATE, "ftruncate", "io_ftrunc"),
    (uring_op::SETXATTR, "setxattr", "io_xattr"),
    (uring_op::FSETXATTR, "fsetxattr", "io_xattr"),
];

/// Offsets of `opcode`, `nr_files`, `nr_bufs` and `ret` in the
/// `io_uring_register` tracepoint record, when the kernel has it.
pub fn register_offsets(tracefs: &Path) -> Option<[u32; 4]> {
    let field = |f: &str| tracefs::field_offset(tracefs, "io_uring", "io_uring_register", f);
    Some([
        field("opcode")?,
        field("nr_files")?,
        field("nr_bufs")?,
        field("ret")?,
    ])
}

/// Locate what the probes read, in the tracepoints' formats and the
/// kernel's BTF (`Err`: why it is unavailable); never fails: what is
/// missing is listed in `unseen` and left out.
pub fn resolve(tracefs: &Path, btf: Result<&Btf, &BtfError>) -> UringCapture {
    let mut cap = UringCapture::default();
    let submit = ["io_uring_submit_req", "io_uring_submit_sqe"]
        .into_iter()
        .find(|tp| tracefs::exists(tracefs, "io_uring", tp));
    let field = |tp: &str, f: &str| tracefs::field_offset(tracefs, "io_uring", tp, f);
    let complete = |f: &str| field("io_uring_complete", f);
    // A completion is matched to its submission by the request where the
    // completion record names it, by ring and user_data otherwise.
    let matched = |tp: &str| match complete("req") {
        Some(req) => Some(Matched::ByRequest(req)),
        None => Some(Matched::ByUserData {
            submit_ctx: field(tp, "ctx")?,
            submit_user_data: field(tp, "user_data")?,
            complete_ctx: complete("ctx")?,
            complete_user_data: complete("user_data")?,
        }),
    };
    let tps = submit.and_then(|tp| {
        Some((
            field(tp, "req")?,
            field(tp, "opcode")?,
            matched(tp)?,
            complete("res")?,
        ))
    });
    let Some((sreq, sop, matched, cres)) = tps else {
        cap.unseen.push(
            "all ops: the io_uring tracepoints of this kernel do not carry the request \
             (before Linux 5.15, but for 5.10's later stable kernels) or are absent"
                .into(),
        );
        return cap;
    };
    let btf = match btf {
        Ok(b) => b,
        Err(e) => {
            cap.unseen
                .push(format!("all ops: kernel BTF unavailable ({e})"));
            return cap;
        }
    };
    let m = |s: &str, f: &str| btf::member_offset(btf, s, f).ok();
    // The op's command: `io_kiocb.cmd`, or on older kernels a union of
    // per-op structs in its place (`open` is one of them).
    let req_cmd = m("io_kiocb", "cmd").or_else(|| m("io_kiocb", "open"));
    let (Some(req_cmd), Some(filename_name)) = (req_cmd, m("filename", "name")) else {
        cap.unseen
            .push("all ops: BTF has no io_kiocb.cmd (or .open) or filename.name".into());
        return cap;
    };
    let o = &mut cap.offsets;
    *o = UringOffsets {
        req_cmd,
        tp_submit_req: sreq,
        tp_submit_opcode: sop,
        tp_complete_res: cres,
        filename_name,
        ..Default::default()
    };
    match matched {
        Matched::ByRequest(req) => o.tp_complete_req = req,
        Matched::ByUserData {
            submit_ctx,
            submit_user_data,
            complete_ctx,
            complete_user_data,
        } => {
            o.complete_by_user_data = 1;
            o.tp_submit_ctx = submit_ctx;
            o.tp_submit_user_data = submit_user_data;
            o.tp_complete_ctx = complete_ctx;
            o.tp_complete_user_data = complete_user_data;
        }
    }
    let mut found = |op: u32, fields: Option<()>| {
        if fields.is_some() {
            o.present |= 1 << op;
        }
    };
    let open = (|| {
        o.open_dfd = m("io_open", "dfd")?;
        o.open_filename = m("io_open", "filename")?;
        o.open_how = m("io_open", "how")? + m("open_how", "flags")?;
        o.open_file_slot = m("io_open", "file_slot")?;
        Some(())
    })();
    let rename = (|| {
        o.rename_old_dfd = m("io_rename", "old_dfd")?;
        o.rename_new_dfd = m("io_rename", "new_dfd")?;
        o.rename_oldpath = m("io_rename", "oldpath")?;
        o.rename_newpath = m("io_rename", "newpath")?;
        o.rename_flags = m("io_rename", "flags")?;
        Some(())
    })();
    let unlink = (|| {
        o.unlink_dfd = m("io_unlink", "dfd")?;
        o.unlink_flags = m("io_unlink", "flags")?;
        o.unlink_filename = m("io_unlink", "filename")?;
        Some(())
    })();
    let mkdir = (|| {
        o.mkdir_dfd = m("io_mkdir", "dfd")?;
        o.mkdir_mode = m("io_mkdir", "mode")?;
        o.mkdir_filename = m("io_mkdir", "filename")?;
        Some(())
    })();
    // One struct io_link for both, or (older) io_hardlink and io_symlink.
    let hardlink = |f: &str| m("io_link", f).or_else(|| m("io_hardlink", f));
    let link = (|| {
        o.link_old_dfd = hardlink("old_dfd")?;
        o.link_new_dfd = hardlink("new_dfd")?;
        o.link_oldpath = hardlink("oldpath")?;
        o.link_newpath = hardlink("newpath")?;
        o.link_flags = hardlink("flags")?;
        Some(())
    })();
    let symlink_field = |f: &str| m("io_link", f).or_else(|| m("io_symlink", f));
    let symlink = (|| {
        o.symlink_new_dfd = symlink_field("new_dfd")?;
        o.symlink_oldpath = symlink_field("oldpath")?;
        o.symlink_newpath = symlink_field("newpath")?;
        Some(())
    })();
    // The fd a request names until it is issued (ftruncate, fsetxattr).
    let req_fd = (|| {
        o.req_flags = m("io_kiocb", "flags")?;
        o.req_cqe_fd = m("io_kiocb", "cqe")? + m("io_cqe", "fd")?;
        Some(())
    })();
    let ftrunc = req_fd.and_then(|()| {
        o.ftrunc_len = m("io_ftrunc", "len")?;
        Some(())
    });
    // struct xattr_ctx became kernel_xattr_ctx in 6.13.
    let xattr = (|| {
        let ctx = m("io_xattr", "ctx")?;
        let c = |f: &str| m("kernel_xattr_ctx", f).or_else(|| m("xattr_ctx", f));
        o.xattr_filename = m("io_xattr", "filename")?;
        o.xattr_kname = ctx + c("kname")?;
        o.xattr_kvalue = ctx + c("kvalue")?;
        o.xattr_size = ctx + c("size")?;
        o.xattr_flags = ctx + c("flags")?;
        o.xattr_name_name = m("xattr_name", "name")?;
        Some(())
    })();
    // Optional: without it, verdicts on requests an io-wq worker performs
    // are found only when the worker posts the completion itself.
    let worker = (|| {
        let task = |f: &str| m("task_struct", f);
        o.task_worker_private = task("worker_private").or_else(|| task("pf_io_worker"))?;
        o.worker_cur_work = m("io_worker", "cur_work")?;
        o.req_work = m("io_kiocb", "work")?;
        o.task_flags = task("flags")?;
        Some(())
    })();
    if worker.is_none() {
        o.task_flags = 0;
    }
    // open_how.mode follows flags (both u64): the probes read it at +8.
    let mode_after_flags = m("open_how", "mode") == m("open_how", "flags").map(|f| f + 8);
    found(uring_op::OPENAT, open.filter(|_| mode_after_flags));
    found(uring_op::OPENAT2, open.filter(|_| mode_after_flags));
    found(uring_op::RENAMEAT, rename);
    found(uring_op::UNLINKAT, unlink);
    found(uring_op::MKDIRAT, mkdir);
    found(uring_op::SYMLINKAT, symlink);
    found(uring_op::LINKAT, link);
    found(uring_op::FTRUNCATE, ftrunc);
    found(uring_op::SETXATTR, xattr);
    found(uring_op::FSETXATTR, xattr.and(req_fd));
    for (op, name, strukt) in OPS {
        if cap.offsets.present & (1 << op) == 0 {
            cap.unseen.push(format!(
                "{name}: this kernel has no struct {strukt} with the fields read \
                 (setxattr and fsetxattr through io_uring exist from Linux 5.19, \
                 ftruncate from 6.9)"
            ));
        }
    }
    cap.submit = submit;
    cap.raw_fits = submit == Some("io_uring_submit_sqe")
        && cap.offsets.complete_by_user_data != 0
        && btf::raw_tracepoint_args(btf, "io_uring_submit_sqe") == Some(7)
        && btf::raw_tracepoint_args(btf, "io_uring_complete") == Some(4);
    cap
}

/// The submit tracepoint to follow requests from, when this kernel has
/// what the request-following programs read.
fn submit_tracepoint(cap: &UringCapture) -> Option<&'static str> {
    cap.submit.filter(|_| cap.offsets.present != 0)
}

/// Whether the raw tracepoint programs follow requests: with the raw
/// syscall probes (`raw`), where they fit the kernel.
fn uses_raw(cap: &UringCapture, raw: bool) -> bool {
    raw && cap.raw_fits
}

/// The programs [`attach`] loads on this kernel (`raw`: the syscall
/// probes are raw tracepoints).
pub fn programs(cap: &UringCapture, raw: bool) -> &'static [&'static str] {
    match submit_tracepoint(cap) {
        Some(_) if uses_raw(cap, raw) => {
            &["guardrail_raw_uring_complete", "guardrail_raw_uring_submit"]
        }
        Some(_) => &["guardrail_uring_complete", "guardrail_uring_submit"],
        None => &[],
    }
}

/// Attach the request-following programs when this kernel has what they
/// read (as raw tracepoints with the raw syscall probes, where they fit);
/// warn about what is not seen either way.
pub fn attach(
    ebpf: &mut Ebpf,
    cap: &UringCapture,
    raw: bool,
    to: &mut AttachTo<'_, '_>,
) -> Result<()> {
    for unseen in &cap.unseen {
        warn!("file operations submitted through io_uring are not reported for {unseen}");
    }
    let Some(submit) = submit_tracepoint(cap) else {
        return Ok(());
    };
    if uses_raw(cap, raw) {
        attach_raw(ebpf, to, "guardrail_raw_uring_submit", submit)?;
        return attach_raw(
            ebpf,
            to,
            "guardrail_raw_uring_complete",
            "io_uring_complete",
        );
    }
    attach_tracepoint(ebpf, to, "guardrail_uring_submit", "io_uring", &[submit])?;
    attach_tracepoint(
        ebpf,
        to,
        "guardrail_uring_complete",
        "io_uring",
        &["io_uring_complete"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_has_its_io_uring_ops_located_or_named_as_unseen() {
        let Some(root) = tracefs::root() else {
            eprintln!("no tracefs: skipped");
            return;
        };
        let Ok(kernel) = btf::read(Path::new(btf::VMLINUX)) else {
            return;
        };
        let cap = resolve(&root, Ok(&kernel));
        for (op, name, _) in OPS {
            let seen = cap.offsets.present & (1 << op) != 0;
            let named = cap
                .unseen
                .iter()
                .any(|u| u.starts_with(name) || u.starts_with("all"));
            assert!(
                seen != named,
                "{name}: seen {seen}, unseen {:?}",
                cap.unseen
            );
        }
    }
}
