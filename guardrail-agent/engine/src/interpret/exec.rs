//! Exec records: the program run (as the kernel named it, made
//! absolute), its arguments, and what the process table learns from it.

use guardrail_common::{flags, syscalls as sc};

use super::paths::Resolved;
use super::*;
use crate::canonical::PathSource;

const AT_EMPTY_PATH: u64 = 0x1000;

/// An exec: `path0` is the program argument made absolute.
pub(super) fn body(call: &Call, path0: Option<Resolved>, view: &mut dyn ProcessView) -> Body {
    let (rec, h, a) = (call.rec, call.h, call.a);
    // execveat(fd, "", …, AT_EMPTY_PATH) runs the open file `fd`.
    let exec_fd = (call.nr == sc::EXECVEAT && a[4] & AT_EMPTY_PATH != 0).then(|| as_fd(a[0]));
    let fd_exec = exec_fd.is_some() && rec.str0.is_empty();
    let program = match &path0 {
        _ if fd_exec => Resolved {
            path: view
                .fd_path(h.pid, as_fd(a[0]))
                .unwrap_or_else(|| format!("fd:{}", as_fd(a[0]))),
            raw: None,
            resolved: true,
            source: Some(PathSource::Agent),
        },
        // The kernel's executable is the program itself unless it was
        // a script (then it is the interpreter).
        Some(p) if !rec.dir1.is_empty() && p.path.as_bytes() == rec.dir1.as_slice() => {
            Resolved::walked(&rec.dir1, &rec.str0)
        }
        Some(p) => Resolved {
            path: p.path.clone(),
            raw: p.raw.clone(),
            resolved: p.resolved,
            source: p.source,
        },
        None => Resolved {
            path: String::new(),
            raw: None,
            resolved: false,
            source: None,
        },
    };
    if h.ret == 0 {
        // The kernel's exe (symlinks resolved, the interpreter for a
        // script) when the probes could walk it.
        let exe = if rec.dir1.is_empty() {
            program.path.clone()
        } else {
            text(&rec.dir1)
        };
        view.exec_happened(h.pid, &exe);
        if h.flags & flags::EXEC_TERMINAL != 0 {
            let session = a[sc::exec_args::SESSION_ARG] as u32;
            let tty = a[sc::exec_args::TTY_ARG] as u32;
            view.terminal_at_exec(
                h.pid,
                (session != u32::MAX).then_some(session),
                (tty != 0).then_some((tty >> 20, tty & 0xfffff)),
            );
        }
        if exe != program.path {
            // A script: its interpreter is the exe, the script is what ran.
            view.script_ran(h.pid, &program.path);
        }
    }
    let exe_now = view
        .exe(h.pid)
        .or_else(|| Some(program.path.as_str().into()));
    let process = process_of(h, view, exe_now);
    // The argument area is NUL-terminated arguments; a cut one has no
    // final NUL.
    let area = rec.str1.strip_suffix(&[0]).unwrap_or(&rec.str1);
    let argv = if area.is_empty() {
        Vec::new()
    } else {
        area.split(|&b| b == 0).map(text).collect()
    };
    Body::Exec {
        syscall: call.syscall.clone(),
        exec: ExecDetails {
            path: program.path,
            raw_path: program.raw,
            path_source: program.source,
            argv,
            argv_truncated: h.flags & flags::STR1_TRUNCATED != 0,
            // Failed execs keep no argv: it is read from the new image.
            argv_unavailable: h.ret != 0 || h.flags & flags::ARGV_UNREADABLE != 0,
            cwd: if rec.dir0.is_empty() {
                view.dir_of(h.pid, None)
            } else {
                Some(text(&rec.dir0))
            },
            fd: exec_fd,
        },
        process,
        result: call.result.clone(),
    }
}
