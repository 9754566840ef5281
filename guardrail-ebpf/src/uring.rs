//! io_uring made visible: a process that sets up a ring can submit file
//! operations the syscall tracepoints never see, so setting one up is an
//! event of its own (which rules can allow-list by program), and the file
//! operations submitted through a ring are reported like their syscalls.
//!
//! A request is read when it is submitted (`io_uring_submit_req`, named
//! `io_uring_submit_sqe` before 6.3): the op's command is prepared by then
//! and holds the kernel's own copy of its paths (`struct filename`), so a
//! submitter cannot change them afterwards. The record is parked by request
//! and completed with the result when the request completes
//! (`io_uring_complete`), the way syscall records are parked from enter to
//! exit; where the completion does not name the request (5.10's later
//! stable kernels), by its ring and `user_data`. Every offset comes from
//! the running kernel's BTF ([`UringOffsets`]); kernels whose submission
//! tracepoint carries no request pointer get neither program.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, generated as gen},
    macros::{map, raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use guardrail_common::{
    counter, flags, syscalls, uring_op, EventHeader, RecordKind, UringOffsets, SCRATCH_DATA_SIZE,
    URING_PARKED_DATA,
};

use crate::record::{self, Record};
use crate::{
    count, global, BPF_F_NO_PREALLOC, CAPTURE_READ_OPENS, SCRATCH, URING_CREATE_OFFSETS,
    URING_REGISTER_OFFSETS, WRITE_INTENT,
};

/// Filled in by the agent from BTF and the tracepoints' format files.
#[no_mangle]
static URING: UringOffsets = UringOffsets {
    present: 0,
    req_cmd: 0,
    tp_submit_req: 0,
    tp_submit_opcode: 0,
    tp_complete_req: 0,
    tp_complete_res: 0,
    filename_name: 0,
    open_dfd: 0,
    open_filename: 0,
    open_how: 0,
    open_file_slot: 0,
    rename_old_dfd: 0,
    rename_new_dfd: 0,
    rename_oldpath: 0,
    rename_newpath: 0,
    rename_flags: 0,
    unlink_dfd: 0,
    unlink_flags: 0,
    unlink_filename: 0,
    link_old_dfd: 0,
    link_new_dfd: 0,
    link_oldpath: 0,
    link_newpath: 0,
    link_flags: 0,
    req_flags: 0,
    req_cqe_fd: 0,
    ftrunc_len: 0,
    task_flags: 0,
    task_worker_private: 0,
    worker_cur_work: 0,
    req_work: 0,
    mkdir_dfd: 0,
    mkdir_mode: 0,
    mkdir_filename: 0,
    xattr_filename: 0,
    xattr_flags: 0,
    xattr_kname: 0,
    xattr_kvalue: 0,
    xattr_size: 0,
    xattr_name_name: 0,
    symlink_new_dfd: 0,
    symlink_oldpath: 0,
    symlink_newpath: 0,
    complete_by_user_data: 0,
    tp_submit_ctx: 0,
    tp_submit_user_data: 0,
    tp_complete_ctx: 0,
    tp_complete_user_data: 0,
    _pad: 0,
};

/// One field of [`URING`], read on its own (see `off!`).
macro_rules! uoff {
    ($field:ident) => {{
        // SAFETY: a read of a .rodata global the agent filled in.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(URING.$field)) };
        value
    }};
}

/// Records of submitted requests until they complete, by request address
/// (or ring and user_data: [`user_data_key`]), in two sizes. Entries are
/// allocated and copied whole on every submission: a whole record (20 KiB)
/// cost more than the operation itself (measured: 12 µs per file created),
/// so a record whose strings fit in [`URING_PARKED_DATA`] bytes is parked
/// short, and only a longer one whole.
#[map]
static URING_PARKED: HashMap<u64, ParkedRequest> =
    HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);
#[map]
static URING_PENDING: HashMap<u64, Record> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// The first [`URING_PARKED_DATA`] bytes of a [`Record`]: its header and
/// the strings read at submission.
#[repr(C)]
struct ParkedRequest {
    header: EventHeader,
    data: [u8; URING_PARKED_DATA],
}

const _: () = assert!(
    core::mem::offset_of!(ParkedRequest, data) == core::mem::offset_of!(Record, data)
        && URING_PARKED_DATA <= SCRATCH_DATA_SIZE
);
/// `REQ_F_FIXED_FILE`: `IOSQE_FIXED_FILE` (UAPI bit 0) kept in the request.
const REQ_F_FIXED_FILE: u32 = 1;

#[tracepoint]
pub fn guardrail_uring_create(ctx: TracePointContext) -> u32 {
    let _ = on_create(&ctx);
    0
}

#[tracepoint]
pub fn guardrail_uring_register(ctx: TracePointContext) -> u32 {
    let _ = on_register(&ctx);
    0
}

#[tracepoint]
pub fn guardrail_uring_submit(ctx: TracePointContext) -> u32 {
    let _ = on_submit(&ctx);
    0
}

#[tracepoint]
pub fn guardrail_uring_complete(ctx: TracePointContext) -> u32 {
    let _ = on_complete(&ctx);
    0
}

/// The submitting process is audited (see `crate::audited`).
#[inline(always)]
fn watched_process() -> bool {
    crate::audited((bpf_get_current_pid_tgid() >> 32) as u32)
}

// The same two as raw tracepoints (pinnable before 5.15; see
// `raw_syscalls`). io_uring_create: TP_PROTO(int fd, void *ctx,
// u32 sq_entries, u32 cq_entries, u32 flags), unchanged since 5.5.
#[raw_tracepoint(tracepoint = "io_uring_create")]
pub fn guardrail_raw_uring_create(ctx: RawTracePointContext) -> i32 {
    let (fd, entries, flags): (u64, u64, u64) = (ctx.arg(0), ctx.arg(2), ctx.arg(4));
    let _ = created(fd as u32, flags as u32, entries as u32);
    0
}

// io_uring_register: TP_PROTO(void *ctx, unsigned opcode, unsigned
// nr_files, unsigned nr_bufs, long ret); before 5.18 a `bool eventfd`
// came before `ret`. The agent attaches the one matching the kernel's
// prototype (BTF): a raw tracepoint program may not read past its
// tracepoint's last argument.
#[raw_tracepoint(tracepoint = "io_uring_register")]
pub fn guardrail_raw_uring_register(ctx: RawTracePointContext) -> i32 {
    let (opcode, files, bufs, ret): (u64, u64, u64, i64) =
        (ctx.arg(1), ctx.arg(2), ctx.arg(3), ctx.arg(4));
    let _ = registered(opcode as u32, files as u32, bufs as u32, ret);
    0
}

#[raw_tracepoint(tracepoint = "io_uring_register")]
pub fn guardrail_raw_uring_register_eventfd(ctx: RawTracePointContext) -> i32 {
    let (opcode, files, bufs, ret): (u64, u64, u64, i64) =
        (ctx.arg(1), ctx.arg(2), ctx.arg(3), ctx.arg(5));
    let _ = registered(opcode as u32, files as u32, bufs as u32, ret);
    0
}

fn on_create(ctx: &TracePointContext) -> Result<(), i64> {
    let [fd_at, flags_at, entries_at] = global(&URING_CREATE_OFFSETS);
    let field = |at: u32| unsafe { ctx.read_at::<u32>(at as usize) }.map_err(|e| e as i64);
    created(field(fd_at)?, field(flags_at)?, field(entries_at)?)
}

#[inline(always)]
fn created(fd: u32, flags: u32, entries: u32) -> Result<(), i64> {
    if !watched_process() {
        return Ok(());
    }
    record::emit_record(
        RecordKind::UringSetup,
        [
            fd as i32 as i64 as u64,
            flags as u64,
            entries as u64,
            0,
            0,
            0,
        ],
        fd as i32 as i64,
    )
}

/// Files and buffers registered with a ring are used by requests that
/// name them by index: which the set-up does not show.
fn on_register(ctx: &TracePointContext) -> Result<(), i64> {
    let [opcode_at, files_at, bufs_at, ret_at] = global(&URING_REGISTER_OFFSETS);
    let field = |at: u32| unsafe { ctx.read_at::<u32>(at as usize) }.map_err(|e| e as i64);
    let (opcode, files, bufs) = (field(opcode_at)?, field(files_at)?, field(bufs_at)?);
    let ret = unsafe { ctx.read_at::<i64>(ret_at as usize) }.map_err(|e| e as i64)?;
    registered(opcode, files, bufs, ret)
}

#[inline(always)]
fn registered(opcode: u32, files: u32, bufs: u32, ret: i64) -> Result<(), i64> {
    if !watched_process() {
        return Ok(());
    }
    record::emit_record(
        RecordKind::UringRegister,
        [opcode as u64, files as u64, bufs as u64, 0, 0, 0],
        ret,
    )
}

/// `PF_IO_WORKER` in `task_struct.flags` (5.12+).
const PF_IO_WORKER: u32 = 0x10;

/// The request the current task performs when it is an io-wq worker.
#[inline(always)]
pub fn worker_request() -> Option<u64> {
    if uoff!(task_flags) == 0 {
        return None;
    }
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task();
        let flags: u32 = kread(task, uoff!(task_flags)).ok()?;
        if flags & PF_IO_WORKER == 0 {
            return None;
        }
        let worker: u64 = kread(task, uoff!(task_worker_private)).ok()?;
        let work: u64 = kread(worker, uoff!(worker_cur_work)).ok()?;
        (worker != 0 && work != 0).then(|| work - uoff!(req_work) as u64)
    }
}

#[inline(always)]
unsafe fn kread<T>(base: u64, offset: u32) -> Result<T, i64> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i64)
}

/// The kernel's copy of a path: `struct filename *` → its `name`.
#[inline(always)]
fn filename(cmd: u64, at: u32) -> u64 {
    unsafe {
        let f: u64 = kread(cmd, at).unwrap_or(0);
        if f == 0 {
            return 0;
        }
        kread(f, uoff!(filename_name)).unwrap_or(0)
    }
}

fn on_submit(ctx: &TracePointContext) -> Result<(), i64> {
    let read = |at: u32| unsafe { ctx.read_at::<u64>(at as usize) }.map_err(|e| e as i64);
    let by_user_data = if uoff!(complete_by_user_data) == 0 {
        None
    } else {
        let key = user_data_key(read(uoff!(tp_submit_ctx))?, read(uoff!(tp_submit_user_data))?);
        forget_reused(key);
        Some(key)
    };
    if !watched_process() {
        return Ok(());
    }
    let opcode = unsafe { ctx.read_at::<u8>(uoff!(tp_submit_opcode) as usize) }
        .map_err(|e| e as i64)? as u32;
    if opcode >= 64 || uoff!(present) & (1u64 << opcode) == 0 {
        return Ok(());
    }
    let req = read(uoff!(tp_submit_req))?;
    submitted(opcode, req, by_user_data.unwrap_or(req))
}

/// The submission as a raw tracepoint (pinnable before 5.15), where the
/// kernel has the io_uring of 5.15: TP_PROTO(void *ctx, void *req,
/// u8 opcode, u64 user_data, u32 flags, bool force_nonblock,
/// bool sq_thread). Its completions name no request.
#[raw_tracepoint(tracepoint = "io_uring_submit_sqe")]
pub fn guardrail_raw_uring_submit(ctx: RawTracePointContext) -> i32 {
    let (ring, req, opcode, data): (u64, u64, u64, u64) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    let key = user_data_key(ring, data);
    forget_reused(key);
    if !watched_process() {
        return 0;
    }
    let opcode = opcode as u8 as u32;
    if opcode < 64 && uoff!(present) & (1u64 << opcode) != 0 {
        let _ = submitted(opcode, req, key);
    }
    0
}

/// Its completion: TP_PROTO(void *ctx, u64 user_data, int res,
/// unsigned cflags).
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn guardrail_raw_uring_complete(ctx: RawTracePointContext) -> i32 {
    let (ring, data, res): (u64, u64, u64) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    completed(user_data_key(ring, data), worker_request().unwrap_or(0), res as i32);
    0
}

/// What a request is parked under where the completion record does not
/// name it: its ring and the `user_data` the submitter gave it. The ring's
/// address is scrambled first (Fibonacci hashing): rings allocated side by
/// side differ in a few low bits, which small user_data values would
/// otherwise cancel (0 on one ring and 0x800 on its neighbour).
#[inline(always)]
fn user_data_key(ring: u64, data: u64) -> u64 {
    ring.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ data
}

/// A submission, of any op and by any process, under the key of a record
/// still parked: its submitter reused the user_data on that ring before
/// the earlier request completed, and either completion could take the
/// record. It is removed, and counted as lost (`pending_drops`).
#[inline(always)]
fn forget_reused(key: u64) {
    if URING_PARKED.remove(&key).is_ok() || URING_PENDING.remove(&key).is_ok() {
        count(counter::PENDING_DROPS);
    }
}

/// Park the record of request `req` (op `opcode`, one the probes read)
/// under `key` until it completes.
#[inline(always)]
fn submitted(opcode: u32, req: u64, key: u64) -> Result<(), i64> {
    let cmd = req + uoff!(req_cmd) as u64;
    // Read-only opens are dropped here, as at syscall entry, unless reads
    // are watched: then the completion keeps one that opened a watched
    // file or was refused ([`read_unwatched`]).
    let mut open_flags = 0u64;
    if opcode == uring_op::OPENAT || opcode == uring_op::OPENAT2 {
        open_flags = unsafe { kread::<u64>(cmd, uoff!(open_how))? };
        if read_only_open(open_flags) && !crate::reads::active() {
            return Ok(());
        }
    }
    let rec = record::header_only(RecordKind::Syscall).ok_or(0i64)?;
    rec.header.flags |= flags::VIA_IO_URING;
    rec.header.enter_ns = unsafe { bpf_ktime_get_ns() };
    rec.header.args = [0; 6];
    match opcode {
        uring_op::OPENAT | uring_op::OPENAT2 => {
            let dfd: i32 = unsafe { kread(cmd, uoff!(open_dfd))? };
            let mode: u64 = unsafe { kread(cmd, uoff!(open_how) + 8)? };
            let slot: u32 = unsafe { kread(cmd, uoff!(open_file_slot))? };
            rec.header.syscall = if opcode == uring_op::OPENAT {
                syscalls::OPENAT
            } else {
                syscalls::OPENAT2
            };
            // args[4]: the registered-file slot (0: an fd is returned).
            rec.header.args = [dfd as i64 as u64, 0, open_flags, mode, slot as u64, 0];
            rec.kernel_str(
                0,
                filename(cmd, uoff!(open_filename)),
                flags::STR0_UNREADABLE,
            );
        }
        uring_op::UNLINKAT => {
            let dfd: i32 = unsafe { kread(cmd, uoff!(unlink_dfd))? };
            let fl: i32 = unsafe { kread(cmd, uoff!(unlink_flags))? };
            rec.header.syscall = syscalls::UNLINKAT;
            rec.header.args = [dfd as i64 as u64, 0, fl as u32 as u64, 0, 0, 0];
            rec.kernel_str(
                0,
                filename(cmd, uoff!(unlink_filename)),
                flags::STR0_UNREADABLE,
            );
        }
        uring_op::MKDIRAT => {
            let dfd: i32 = unsafe { kread(cmd, uoff!(mkdir_dfd))? };
            let mode: u16 = unsafe { kread(cmd, uoff!(mkdir_mode))? };
            rec.header.syscall = syscalls::MKDIRAT;
            rec.header.args = [dfd as i64 as u64, 0, mode as u64, 0, 0, 0];
            rec.kernel_str(
                0,
                filename(cmd, uoff!(mkdir_filename)),
                flags::STR0_UNREADABLE,
            );
        }
        uring_op::RENAMEAT | uring_op::LINKAT => {
            // Two paths, each relative to its own dirfd: struct io_rename
            // and struct io_link have the same fields.
            let rename = opcode == uring_op::RENAMEAT;
            let at = |in_rename: u32, in_link: u32| if rename { in_rename } else { in_link };
            let old: i32 = unsafe { kread(cmd, at(uoff!(rename_old_dfd), uoff!(link_old_dfd)))? };
            let new: i32 = unsafe { kread(cmd, at(uoff!(rename_new_dfd), uoff!(link_new_dfd)))? };
            let fl: i32 = unsafe { kread(cmd, at(uoff!(rename_flags), uoff!(link_flags)))? };
            rec.header.syscall = if rename {
                syscalls::RENAMEAT2
            } else {
                syscalls::LINKAT
            };
            rec.header.args = [
                old as i64 as u64,
                0,
                new as i64 as u64,
                0,
                fl as u32 as u64,
                0,
            ];
            let (oldpath, newpath) = if rename {
                (uoff!(rename_oldpath), uoff!(rename_newpath))
            } else {
                (uoff!(link_oldpath), uoff!(link_newpath))
            };
            rec.kernel_str(0, filename(cmd, oldpath), flags::STR0_UNREADABLE);
            rec.kernel_str(1, filename(cmd, newpath), flags::STR1_UNREADABLE);
        }
        uring_op::SYMLINKAT => {
            // symlinkat(target, newdirfd, linkpath)
            let new: i32 = unsafe { kread(cmd, uoff!(symlink_new_dfd))? };
            rec.header.syscall = syscalls::SYMLINKAT;
            rec.header.args = [0, new as i64 as u64, 0, 0, 0, 0];
            let target = filename(cmd, uoff!(symlink_oldpath));
            rec.kernel_str(0, target, flags::STR0_UNREADABLE);
            let link = filename(cmd, uoff!(symlink_newpath));
            rec.kernel_str(1, link, flags::STR1_UNREADABLE);
        }
        uring_op::FTRUNCATE => {
            let len: u64 = unsafe { kread(cmd, uoff!(ftrunc_len))? };
            rec.header.syscall = syscalls::FTRUNCATE;
            rec.header.args = [0, len, 0, 0, 0, 0];
            request_fd(rec, req)?;
        }
        uring_op::SETXATTR | uring_op::FSETXATTR => {
            // Prepared: the kernel's copies of the name and the value.
            let kname: u64 = unsafe { kread(cmd, uoff!(xattr_kname))? };
            let kvalue: u64 = unsafe { kread(cmd, uoff!(xattr_kvalue))? };
            let size: u64 = unsafe { kread(cmd, uoff!(xattr_size))? };
            let fl: u32 = unsafe { kread(cmd, uoff!(xattr_flags))? };
            rec.header.args = [0, 0, 0, size, fl as u64, 0];
            if opcode == uring_op::SETXATTR {
                rec.header.syscall = syscalls::SETXATTR;
                rec.kernel_str(
                    0,
                    filename(cmd, uoff!(xattr_filename)),
                    flags::STR0_UNREADABLE,
                );
            } else {
                rec.header.syscall = syscalls::FSETXATTR;
                request_fd(rec, req)?;
            }
            let name = if kname == 0 {
                0
            } else {
                kname + uoff!(xattr_name_name) as u64
            };
            rec.kernel_str(1, name, flags::STR1_UNREADABLE);
            let caps = if size >= 12 && kvalue != 0 {
                unsafe { bpf_probe_read_kernel(kvalue as *const [u32; 5]) }.ok()
            } else {
                None
            };
            record::xattr_caps(rec, caps);
        }
        _ => return Ok(()),
    }
    let Some(rec) = SCRATCH.get_ptr(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's record, assembled above; a ParkedRequest is its
    // prefix (same header, then the first bytes of its data).
    let parked = unsafe {
        if (*rec).end() <= URING_PARKED_DATA {
            URING_PARKED.insert(&key, &*rec.cast::<ParkedRequest>(), 0)
        } else {
            URING_PENDING.insert(&key, &*rec, 0)
        }
    };
    if parked.is_err() {
        count(counter::PENDING_DROPS);
    }
    Ok(())
}

/// The fd request `req` names, as argument 0 and walked as string 0 (as
/// the syscall's is): a request gets its file only when it is issued.
/// A registered file's index is no fd: -1, and no path.
#[inline(always)]
fn request_fd(rec: &mut Record, req: u64) -> Result<(), i64> {
    let req_flags: u32 = unsafe { kread(req, uoff!(req_flags))? };
    if req_flags & REQ_F_FIXED_FILE == 0 {
        let fd: i32 = unsafe { kread(req, uoff!(req_cqe_fd))? };
        rec.header.args[0] = fd as i64 as u64;
        record::walked_fd(rec, 0, fd);
    } else {
        rec.header.args[0] = u64::MAX;
        rec.header.flags |= flags::walk_incomplete(0);
    }
    Ok(())
}

/// An open that only reads, not captured for itself (`capture.read_opens`
/// is off).
#[inline(always)]
fn read_only_open(open_flags: u64) -> bool {
    open_flags & WRITE_INTENT == 0 && global(&CAPTURE_READ_OPENS) == 0
}

/// A read-only open kept only for the read watch is dropped unless the
/// LSM hook refused it or it opened a watched file, as its syscall form
/// is (`crate::watched_read`). A registered slot (`file_index`) is not
/// looked up: only its refusal is reported.
#[inline(always)]
fn read_unwatched(rec: &Record, ret: i64) -> bool {
    let args = rec.header.args;
    if !syscalls::returns_opened_fd(rec.header.syscall) || !read_only_open(args[2]) {
        return false;
    }
    if rec.header.verdict_rule != 0 {
        // An inline submission's refusal also left a note for a syscall
        // exit that will not come: not another call's.
        let _ = crate::reads::take_refused(bpf_get_current_pid_tgid());
        return false;
    }
    !(ret >= 0 && args[4] == 0 && crate::reads::watched(ret as i32))
}

fn on_complete(ctx: &TracePointContext) -> Result<(), i64> {
    let read = |at: u32| unsafe { ctx.read_at::<u64>(at as usize) }.map_err(|e| e as i64);
    let (key, req) = if uoff!(complete_by_user_data) == 0 {
        let req = read(uoff!(tp_complete_req))?;
        (req, req)
    } else {
        // The request is known only to the io-wq worker performing it
        // (which posts its completion); an inline completion's verdict is
        // the thread's.
        let key = user_data_key(read(uoff!(tp_complete_ctx))?, read(uoff!(tp_complete_user_data))?);
        (key, worker_request().unwrap_or(0))
    };
    let res =
        unsafe { ctx.read_at::<i32>(uoff!(tp_complete_res) as usize) }.map_err(|e| e as i64)?;
    completed(key, req, res);
    Ok(())
}

/// The request parked under `key` (request `req`, 0 where unknown)
/// completed with `res`: its record goes out.
#[inline(always)]
fn completed(key: u64, req: u64, res: i32) {
    if let Some(parked) = URING_PARKED.get_ptr(&key) {
        // Completed in this CPU's record, which has the room to walk.
        let Some(rec) = SCRATCH.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: both are map values at least a ParkedRequest long; the
        // entry is this request's until it is removed below.
        let copied = unsafe {
            gen::bpf_probe_read_kernel(
                rec.cast(),
                core::mem::size_of::<ParkedRequest>() as u32,
                parked.cast(),
            )
        };
        let _ = URING_PARKED.remove(&key);
        if copied == 0 {
            complete(unsafe { &mut *rec }, req, res as i64);
        } else {
            count(counter::PENDING_DROPS);
        }
        return;
    }
    let Some(rec) = URING_PENDING.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: the entry is this request's until it is removed below.
    complete(unsafe { &mut *rec }, req, res as i64);
    let _ = URING_PENDING.remove(&key);
}

#[inline(always)]
fn complete(rec: &mut Record, req: u64, ret: i64) {
    rec.header.ret = ret;
    rec.header.exit_ns = unsafe { bpf_ktime_get_ns() };
    // An io-wq worker files its verdicts under the request (another
    // thread may post the completion); otherwise the LSM hooks ran in the
    // thread posting the completion (the submitter or the SQPOLL thread).
    record::take_verdict_of(&mut rec.header, req);
    if rec.header.verdict_rule == 0 {
        record::take_verdict(&mut rec.header);
    }
    if read_unwatched(rec, ret) {
        return;
    }
    walk_paths(rec, ret);
    record::submit(rec);
}

/// Plan and walk the directories of a completed request's relative paths,
/// or what its open opened (`ret`: its result).
#[inline(never)]
fn walk_paths(rec: &mut Record, ret: i64) {
    let nr = rec.header.syscall;
    // String 0 of an fd's operation was walked at submission.
    if matches!(nr, syscalls::FTRUNCATE | syscalls::FSETXATTR) {
        return;
    }
    let Some(layout) = syscalls::path_op_layout(nr) else {
        return;
    };
    let args = rec.header.args;
    let opened = syscalls::returns_opened_fd(nr) && ret >= 0 && args[4] == 0;
    record::clear_plan();
    record::walk_dirs(rec, layout, &args, if opened { ret as i32 } else { -1 }, false);
    record::walk_planned(rec);
}
