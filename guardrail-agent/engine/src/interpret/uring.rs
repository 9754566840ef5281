//! io_uring set-up and registration records (`io_uring:` tracepoints).

use super::*;

/// io_uring setup flags (IORING_SETUP_*), bit by bit.
const URING_SETUP_FLAGS: [&str; 17] = [
    "iopoll",
    "sqpoll",
    "sq_aff",
    "cqsize",
    "clamp",
    "attach_wq",
    "r_disabled",
    "submit_all",
    "coop_taskrun",
    "taskrun_flag",
    "sqe128",
    "cqe32",
    "single_issuer",
    "defer_taskrun",
    "no_mmap",
    "registered_fd_only",
    "no_sqarray",
];

/// A process set up an io_uring instance.
pub fn interpret_uring_setup(rec: &RawRecord, view: &mut dyn ProcessView) -> Body {
    let h = &rec.header;
    let flags = h.args[1];
    let exe = view.exe(h.pid);
    Body::Uring {
        syscall: "io_uring_setup".into(),
        process: process_of(h, view, exe),
        result: SyscallResult {
            ok: true,
            ret: h.ret,
            errno: None,
        },
        uring: UringDetails {
            op: "setup".into(),
            fd: Some(h.args[0] as i32),
            sq_entries: Some(h.args[2] as u32),
            flags: (0..64)
                .filter(|bit| flags & (1u64 << bit) != 0)
                .map(|bit| match URING_SETUP_FLAGS.get(bit) {
                    Some(name) => name.to_string(),
                    None => format!("flag_{bit}"),
                })
                .collect(),
            register: None,
        },
    }
}

/// io_uring_register(2) opcodes (IORING_REGISTER_*), by number.
const URING_REGISTER_OPCODES: [&str; 34] = [
    "buffers",
    "unregister_buffers",
    "files",
    "unregister_files",
    "eventfd",
    "unregister_eventfd",
    "files_update",
    "eventfd_async",
    "probe",
    "personality",
    "unregister_personality",
    "restrictions",
    "enable_rings",
    "files2",
    "files_update2",
    "buffers2",
    "buffers_update",
    "iowq_aff",
    "unregister_iowq_aff",
    "iowq_max_workers",
    "ring_fds",
    "unregister_ring_fds",
    "pbuf_ring",
    "unregister_pbuf_ring",
    "sync_cancel",
    "file_alloc_range",
    "pbuf_status",
    "napi",
    "unregister_napi",
    "clock",
    "clone_buffers",
    "send_msg_ring",
    "zcrx_ifq",
    "resize_rings",
];

/// A process registered (or unregistered) resources with a ring.
pub fn interpret_uring_register(rec: &RawRecord, view: &mut dyn ProcessView) -> Body {
    let h = &rec.header;
    // IORING_REGISTER_USE_REGISTERED_RING: the ring named by index.
    let opcode = h.args[0] as u32 & !(1 << 31);
    let exe = view.exe(h.pid);
    Body::Uring {
        syscall: "io_uring_register".into(),
        process: process_of(h, view, exe),
        result: SyscallResult {
            ok: h.ret >= 0,
            ret: h.ret,
            errno: (h.ret < 0).then(|| errno_name(h.ret.saturating_neg())),
        },
        uring: UringDetails {
            op: "register".into(),
            register: Some(UringRegister {
                opcode: URING_REGISTER_OPCODES
                    .get(opcode as usize)
                    .map_or_else(|| format!("opcode_{opcode}"), |n| n.to_string()),
                files: h.args[1] as u32,
                buffers: h.args[2] as u32,
            }),
            ..Default::default()
        },
    }
}
