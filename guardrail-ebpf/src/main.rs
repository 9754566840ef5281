//! guardrail's kernel probes.
//!
//! Capture uses only stable interfaces so that one object runs on every
//! supported kernel (5.10 → 6.18): the `syscalls:sys_{enter,exit}_*`
//! tracepoints (whose argument layout is fixed by the syscall ABI),
//! `sched:sched_process_exec`, and helpers. The few `task_struct`/`cred`
//! fields we read come from offsets the agent resolves from the running
//! kernel's BTF at load time ([`KernelOffsets`]).
//!
//! One enter and one exit program serve every watched syscall: the enter
//! side parks the arguments per thread, the exit side writes one record
//! with the result. Exec is the exception, because a successful exec
//! replaces the memory its arguments live in: its record is built at entry
//! and completed when the new image starts (or the call fails).
#![no_std]
#![no_main]

mod enforce;
mod inode;
mod kfunc;
mod lifecycle;
mod lineage;
mod parked;
mod path;
mod raw_syscalls;
mod reads;
mod record;
mod state;
mod task;
mod uring;
mod verdicts;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use guardrail_common::{
    counter, pending_flags, syscalls, EventHeader, KernelOffsets, PendingSyscall, RecordKind,
};

use record::Record;

/// The agent's own thread group: its file activity is not audited.
#[no_mangle]
static AGENT_TGID: u32 = 0;
/// Non-zero: the agent may not be signalled or traced by other processes
/// (see enforce::hooks::protects). Set by the agent from its config.
#[no_mangle]
static SELF_PROTECT: u8 = 0;
/// When non-zero, capture only this thread group (`guardrail-agent --only-pid`).
#[no_mangle]
static ONLY_TGID: u32 = 0;
/// Non-zero where the kernel has `bpf_get_current_task_btf` (5.11+): the
/// current task is then a typed pointer whose fields the program loads
/// directly, with no helper call per field (see `task`). Zero on older
/// kernels, where those branches are dead code the verifier drops.
#[no_mangle]
static TASK_BTF: u8 = 0;
/// Where the kernel has the kfunc `bpf_rdonly_cast` (6.2+), and
/// `TASK_BTF` is set: the BTF id of a struct with a `struct file *`
/// member at [`FILE_CAST_OFFSET`] (`struct kiocb`'s `ki_filp`). An fd's
/// slot in the fd table, cast as that struct, gives its file as a typed
/// pointer: the file and its inode are then plain loads instead of helper
/// calls (see `reads`). Zero elsewhere.
#[no_mangle]
static FILE_CAST_BTF_ID: u32 = 0;
#[no_mangle]
static FILE_CAST_OFFSET: u32 = 0;
/// Non-zero where the syscall probes are per-syscall tracepoints and the
/// kernel has `bpf_task_pt_regs` (5.15+) and typed tasks: a call that
/// `syscalls::parked_at_entry` does not name gets no entry program (the
/// agent attaches none), and its exit reads the arguments from the task's
/// saved registers. The entry's tracepoint run was about a third of the
/// probes' cost on a chmod storm.
#[no_mangle]
static EXIT_ONLY: u8 = 0;
/// Read-only opens are dropped in the kernel unless a rule asks for them.
#[no_mangle]
static CAPTURE_READ_OPENS: u8 = 0;
/// Wake the reader only once this many bytes wait in the ring buffer; the
/// agent drains on a timer otherwise. Waking on every record costs a few
/// microseconds per syscall.
#[no_mangle]
static WAKEUP_BYTES: u64 = 0;
/// Offset of `old_pid` in the `sched_process_exec` tracepoint record, read
/// by the agent from the tracepoint's format file.
#[no_mangle]
static EXEC_OLD_PID_OFFSET: u32 = 16;
/// Offset of the `__data_loc` of `filename` in the same record.
#[no_mangle]
static EXEC_FILENAME_OFFSET: u32 = 8;
/// Offsets of `fd`, `flags` and `sq_entries` in the `io_uring_create`
/// tracepoint record, from its format file.
#[no_mangle]
static URING_CREATE_OFFSETS: [u32; 3] = [8, 32, 24];
/// Offsets of `opcode`, `nr_files`, `nr_bufs` and `ret` in the
/// `io_uring_register` tracepoint record, from its format file.
#[no_mangle]
static URING_REGISTER_OFFSETS: [u32; 4] = [16, 20, 24, 32];
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_real_parent: 0,
    task_tgid: 0,
    task_loginuid: 0,
    task_cred: 0,
    cred_euid: 0,
    cred_egid: 0,
    cred_cap_effective: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    task_fs: 0,
    fs_pwd: 0,
    fs_root: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_fd: 0,
    fdt_max_fds: 0,
    file_f_path: 0,
    file_f_inode: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    qstr_len: 0,
    qstr_name: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    mm_exe_file: 0,
    dentry_inode: 0,
    dentry_sb: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    file_f_mode: 0,
    bprm_file: 0,
    cred_uid: 0,
    iattr_valid: 0,
    task_start_boottime: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    bpf_map_id: 0,
    task_group_leader: 0,
    task_sessionid: 0,
    task_signal: 0,
    signal_tty: 0,
    tty_index: 0,
    tty_driver: 0,
    driver_major: 0,
    driver_minor_start: 0,
    regs_args: [0; 6],
    regs_orig_ax: 0,
    task_ti_status: 0,
    bprm_filename: 0,
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Where records are assembled: too large for the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Hash maps allocated entry by entry, not all at load (the tables of
/// calls and io_uring requests in flight).
const BPF_F_NO_PREALLOC: u32 = 1;
/// What the LSM hooks refuse an operation with (see `enforce`).
const EPERM: i64 = 1;
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const WRITE_INTENT: u64 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;

/// Offsets in every `syscalls:*` tracepoint record (fixed by the syscall
/// tracepoint class: 8 bytes of common fields, then the syscall number).
const TP_SYSCALL_NR: usize = 8;
const TP_ARGS: usize = 16;
const TP_RET: usize = 16;

/// One field of [`OFFSETS`], read on its own: copying the whole struct
/// would put it on the 512-byte BPF stack of every caller.
macro_rules! off {
    ($field:ident) => {{
        // SAFETY: a read of a .rodata global the agent filled in.
        #[allow(unused_unsafe)]
        let value =
            unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::OFFSETS.$field)) };
        value
    }};
}
pub(crate) use off;

#[inline(always)]
pub(crate) fn global<T: Copy>(value: &T) -> T {
    // SAFETY: globals live in .rodata, which the agent fills in before load;
    // the volatile read stops the compiler from folding the default.
    unsafe { core::ptr::read_volatile(value) }
}

/// A field of the tracepoint record, loaded directly: far cheaper than a
/// `bpf_probe_read` helper call. Only for the syscall number and the
/// first eight bytes after it (arg 0 / return value), which every attached
/// record has: the kernel refuses to attach a program whose loads reach
/// past a tracepoint's record.
#[inline(always)]
fn tp<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: inside the syscall tracepoint record, aligned for T.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

#[tracepoint]
pub fn guardrail_sys_enter(ctx: TracePointContext) -> u32 {
    let _ = on_enter(&ctx);
    0
}

#[tracepoint]
pub fn guardrail_sys_exit(ctx: TracePointContext) -> u32 {
    let _ = on_exit(&ctx);
    0
}

#[tracepoint]
pub fn guardrail_exec(ctx: TracePointContext) -> u32 {
    let _ = on_exec(&ctx);
    0
}

fn on_enter(ctx: &TracePointContext) -> Result<(), i64> {
    let nr = tp::<i32>(ctx, TP_SYSCALL_NR) as u32;
    // Arguments are read with the helper: a direct load past the smallest
    // attached record (setuid's single argument) makes the kernel refuse
    // to attach the program to that tracepoint.
    enter(
        nr,
        |i| unsafe { ctx.read_at::<u64>(TP_ARGS + 8 * i) }.map_err(|e| e as i64),
        // All six in one helper call rather than six: each call costs tens
        // of nanoseconds on every watched syscall. A record with fewer
        // arguments yields bytes past them, which nothing reads.
        || unsafe { ctx.read_at::<[u64; 6]>(TP_ARGS) }.map_err(|e| e as i64),
    )
}

/// Whether process `tgid` is audited: not the agent, and only the one
/// process `--only-pid` names, if any.
#[inline(always)]
pub(crate) fn audited(tgid: u32) -> bool {
    let only = global(&ONLY_TGID);
    tgid != global(&AGENT_TGID) && (only == 0 || tgid == only)
}

/// A watched syscall `nr` is entered: park its arguments (`arg(i)` reads
/// argument `i`, `all()` the six) for its exit, unless it is a read-only
/// open nobody asked for.
#[inline(always)]
fn enter(
    nr: u32,
    arg: impl Fn(usize) -> Result<u64, i64>,
    all: impl Fn() -> Result<[u64; 6], i64>,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !audited((pid_tgid >> 32) as u32) || exit_only(nr) {
        return Ok(());
    }
    // The upgrade test's build: one more comparison, so that the kernel
    // loads other programs (see the `upgrade-test-variant` feature).
    #[cfg(feature = "upgrade-test-variant")]
    if nr == u32::MAX {
        return Ok(());
    }
    // The hot path: a read-only open (the commonest syscall we watch) is
    // dropped before anything else is read.
    if let Some(i) = syscalls::open_flags_arg(nr) {
        if nr != syscalls::OPENAT2 && global(&CAPTURE_READ_OPENS) == 0 {
            let flags = arg(i as usize).unwrap_or(WRITE_INTENT);
            if flags & WRITE_INTENT == 0 {
                return Ok(());
            }
        }
    }
    let mut args = all()?;
    if nr == syscalls::OPENAT2 {
        openat2_how(&mut args);
    }
    if nr == syscalls::CAPSET {
        // struct __user_cap_data_struct[2]: {effective, permitted, inheritable} × 2.
        let data = args[1] as *const [u32; 6];
        let d = unsafe { bpf_probe_read_user(data) }.unwrap_or([0; 6]);
        args[2] = d[0] as u64 | (d[3] as u64) << 32;
        args[3] = d[1] as u64 | (d[4] as u64) << 32;
        args[4] = d[2] as u64 | (d[5] as u64) << 32;
        args[5] = task::effective_caps();
    }
    if syscalls::is_mount_family(nr) {
        mount_facts(nr, &mut args);
    }
    if syscalls::is_exec(nr) {
        // Unchanged by the exec: read once here, for the new image's
        // record (whose argv comes from the new image, not these
        // pointers).
        let (session, tty) = task::session_and_tty();
        args[syscalls::exec_args::SESSION_ARG] = session as u64;
        args[syscalls::exec_args::TTY_ARG] = tty as u64;
    }
    if let Some(i) = syscalls::open_flags_arg(nr) {
        if !open_captured(args[i as usize]) {
            return Ok(());
        }
    }
    let enter_ns = unsafe { bpf_ktime_get_ns() };
    let old_ids = task::current_ids();
    let pending = PendingSyscall {
        syscall: nr,
        flags: 0,
        enter_ns,
        args,
        old_ids,
    };
    if !parked::park(pid_tgid, &pending) {
        count(counter::PENDING_DROPS);
    }
    Ok(())
}

/// openat2 passes flags and mode in a `struct open_how` (u64 flags, u64
/// mode, u64 resolve): read them to where openat has them.
#[inline(always)]
fn openat2_how(args: &mut [u64; 6]) {
    let how = args[2] as *const u64;
    args[2] = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
    args[3] = unsafe { bpf_probe_read_user(how.add(1)) }.unwrap_or(0);
}

/// Whether an open with `flags` is recorded from its own arguments: one
/// that can write, or any with `capture.read_opens`. Any other is a
/// read-only open, dropped unless it reads a watched file (see `reads`).
#[inline(always)]
fn open_captured(flags: u64) -> bool {
    flags & WRITE_INTENT != 0 || global(&CAPTURE_READ_OPENS) != 0
}

/// What the agent needs of a mount-family call and cannot read itself
/// (see `syscalls::mount_args`): the caller's mount namespace, and the
/// type of file system `mount` attaches.
#[inline(always)]
fn mount_facts(nr: u32, args: &mut [u64; 6]) {
    use syscalls::mount_args::*;
    if nr == syscalls::MOUNT {
        let mut fstype = [0u8; FSTYPE_MAX];
        // NULL for a bind, move or remount: the type stays empty.
        let _ = unsafe {
            aya_ebpf::helpers::bpf_probe_read_user_str_bytes(args[2] as *const u8, &mut fstype)
        };
        let [a, b] = FSTYPE_ARGS;
        args[a] = u64::from_le_bytes([
            fstype[0], fstype[1], fstype[2], fstype[3], fstype[4], fstype[5], fstype[6], fstype[7],
        ]);
        args[b] = u64::from_le_bytes([
            fstype[8], fstype[9], fstype[10], fstype[11], fstype[12], fstype[13], fstype[14],
            fstype[15],
        ]);
    }
    args[MNT_NS_ARG] = task::current_mnt_ns().unwrap_or(0);
}

fn on_exit(ctx: &TracePointContext) -> Result<(), i64> {
    exit(
        tp::<i32>(ctx, TP_SYSCALL_NR) as u32,
        tp::<i64>(ctx, TP_RET),
    )
}

/// A watched syscall `nr` returns `ret`: write the record of what was
/// parked at its entry.
#[inline(always)]
fn exit(nr: u32, ret: i64) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if exit_only(nr) {
        return unparked_exit(nr, ret, pid_tgid);
    }
    let Some(parked) = parked::parked(pid_tgid) else {
        if !syscalls::returns_opened_fd(nr) {
            return Ok(());
        }
        return dropped_open(nr, ret, pid_tgid);
    };
    // Enter and exit from different syscalls: the exit of the parked one
    // was missed (e.g. the probes attached mid-call). A successful exec
    // was already reported by `on_exec`.
    let pending = parked.call();
    let result = if pending.syscall != nr || (syscalls::is_exec(nr) && ret == 0) {
        Ok(())
    } else {
        record::emit_syscall(pending, ret)
    };
    parked.take();
    result
}

/// Whether call `nr` runs no entry program (see [`EXIT_ONLY`]).
#[inline(always)]
fn exit_only(nr: u32) -> bool {
    global(&EXIT_ONLY) != 0 && !syscalls::parked_at_entry(nr)
}

/// A call with no entry program returns `ret`: its record, with the
/// arguments read now from the task's saved registers. Only a refused
/// call takes the verdict filed for its thread: a refusal by the LSM
/// hooks files one during the call itself (over any older one), while a
/// verdict left by a call that wrote no record is older than this call
/// and is dropped, not reported with it.
#[inline(always)]
fn unparked_exit(nr: u32, ret: i64, pid_tgid: u64) -> Result<(), i64> {
    if !audited((pid_tgid >> 32) as u32) || !state::emitting() {
        return Ok(());
    }
    let Some(mut args) = task::syscall_args() else {
        // Counted with the calls that could not be parked: the same loss.
        count(counter::PENDING_DROPS);
        return Ok(());
    };
    if let Some(i) = syscalls::open_flags_arg(nr) {
        if nr == syscalls::OPENAT2 {
            openat2_how(&mut args);
        }
        if !open_captured(args[i as usize]) {
            return dropped_open(nr, ret, pid_tgid);
        }
        if ret == -EPERM {
            // The `file_open` hook notes every refused open it cannot
            // tell parked (nothing is, here); this one is reported with
            // its own arguments and verdict, so its note is dropped
            // rather than left for a later read-only open to take.
            let _ = reads::take_refused(pid_tgid);
        }
    }
    let pending = PendingSyscall {
        syscall: nr,
        flags: pending_flags::UNPARKED,
        enter_ns: if ret == -EPERM { 0 } else { u64::MAX },
        args,
        // None of these calls changes them: read now, they are the ids
        // the call ran with.
        old_ids: task::current_ids(),
    };
    record::emit_syscall(&pending, ret)
}

/// A read-only open nobody asked to capture (see [`open_captured`])
/// returns `ret`: recorded only if it opened a watched file, or the LSM
/// hook refused it (-EPERM; see `reads`). (Refused reads whatever rule
/// refused them: `file.open` deny rules need no watch set.)
#[inline(always)]
fn dropped_open(nr: u32, ret: i64, pid_tgid: u64) -> Result<(), i64> {
    if ret == -EPERM {
        return refused_read(nr, ret, pid_tgid);
    }
    if ret >= 0 {
        if let Some(generation) = reads::watching() {
            return watched_read(nr, ret, pid_tgid, generation);
        }
    }
    Ok(())
}

/// A dropped read-only open that the LSM hook refused (`ret`, -EPERM):
/// reported if the hook noted it (see `reads`).
#[inline(never)]
fn refused_read(nr: u32, ret: i64, pid_tgid: u64) -> Result<(), i64> {
    match reads::take_refused(pid_tgid) {
        Some(refused) => record::emit_refused_read(nr, ret, &refused),
        None => Ok(()),
    }
}

/// A dropped read-only open that returned fd `fd` while watch set
/// `generation` is in force: reported if what it opened is watched.
#[inline(always)]
fn watched_read(nr: u32, fd: i64, pid_tgid: u64, generation: u32) -> Result<(), i64> {
    if !audited((pid_tgid >> 32) as u32) || !reads::watched_in(generation, fd as i32) {
        return Ok(());
    }
    record::emit_watched_read(nr, fd)
}

/// A successful exec: the new image is in place. The record takes the
/// program name from the tracepoint (kernel memory, as the kernel resolved
/// it) and argv from the new image's argument area, so neither can be
/// swapped by another thread of the old image.
fn on_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let old_tid = unsafe { ctx.read_at::<i32>(global(&EXEC_OLD_PID_OFFSET) as usize) }
        .map_err(|e| e as i64)?;
    exec(old_tid, || {
        let filename_loc =
            unsafe { ctx.read_at::<u32>(global(&EXEC_FILENAME_OFFSET) as usize) }
                .map_err(|e| e as i64)?;
        Ok(unsafe {
            ctx.as_ptr()
                .cast::<u8>()
                .add((filename_loc & 0xffff) as usize)
        })
    })
}

/// Thread `old_tid` (the id it had before the exec: the thread that
/// called it) now runs `filename()` (kernel memory).
#[inline(always)]
fn exec(old_tid: i32, filename: impl FnOnce() -> Result<*const u8, i64>) -> Result<(), i64> {
    let key = (bpf_get_current_pid_tgid() & !0xffff_ffff) | old_tid as u32 as u64;
    let pending = match parked::parked(key) {
        Some(p) => *p.call(),
        None => return Ok(()),
    };
    // Removed before anything can fail: after an exec from a thread other
    // than the leader, that thread's id is gone, and its exit is never
    // seen under it.
    parked::forget(key);
    record::emit_exec(&pending, filename()?)
}

/// Fill the fields every record carries from the current task (`ids`: its
/// ids if already known, see `task::fill_ids`).
#[inline(always)]
fn fill_common(h: &mut EventHeader, ids: Option<[u32; 4]>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    h.kind = RecordKind::Syscall as u32;
    h.pid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.exit_ns = unsafe { bpf_ktime_get_ns() };
    h.cgroup_id = unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() };
    // Straight into the record: no 16-byte copy through the stack.
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_comm(h.comm.as_mut_ptr().cast(), 16) };
    task::fill_ids(h, ids);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
