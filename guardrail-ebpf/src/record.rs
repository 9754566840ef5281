//! Assembling records: header, strings, and submission.

use aya_ebpf::helpers::generated as gen;
use guardrail_common::{
    counter, flags, pending_flags, syscalls, EventHeader, PendingSyscall, ARGV_MAX,
    DATA_OFFSET_MASK, HEADER_SIZE, PATH_MAX, SCRATCH_DATA_SIZE,
};

use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;

use crate::path::{self, Walked};
use crate::{count, fill_common, global, task, EVENTS, SCRATCH, WAKEUP_BYTES};

#[repr(C)]
pub struct Record {
    pub header: EventHeader,
    pub data: [u8; SCRATCH_DATA_SIZE],
}

/// Zero `*p` eight bytes at a time. `write_bytes` compiles to a call to
/// the BPF target's `memset`, a loop of five instructions per byte: for a
/// header and a walk plan, about 1,300 instructions on every record.
/// Volatile stores keep LLVM from turning these back into that call.
#[inline(always)]
pub(crate) fn zero<T>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0 && core::mem::align_of::<T>() >= 8) };
    let words = p.cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: inside `*p`, which is 8-aligned and a multiple of 8 long.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

impl Record {
    /// Where the next string goes: after the ones already written.
    #[inline(always)]
    pub(crate) fn end(&self) -> usize {
        let l = self.header.str_len;
        (l[0] + l[1] + l[2] + l[3]) as usize
    }

    #[inline(always)]
    fn at(&mut self, offset: usize) -> *mut u8 {
        unsafe { self.data.as_mut_ptr().add(offset & DATA_OFFSET_MASK) }
    }

    /// Append a NUL-terminated user string as string `slot`.
    #[inline(always)]
    fn user_str(&mut self, slot: usize, src: u64, cut_flag: u32, bad_flag: u32) {
        if src == 0 {
            self.header.flags |= bad_flag;
            return;
        }
        let dst = self.at(self.end());
        let n =
            unsafe { gen::bpf_probe_read_user_str(dst.cast(), PATH_MAX as u32, src as *const _) };
        if n <= 0 {
            self.header.flags |= bad_flag;
            return;
        }
        // The helper returns PATH_MAX both for a string that filled the
        // buffer exactly (4095 bytes, the longest path the kernel accepts)
        // and for one it had to cut; the byte after tells which. The NUL
        // itself is not kept.
        if n as usize >= PATH_MAX {
            let mut next = 1u8;
            let after = (src + (PATH_MAX - 1) as u64) as *const _;
            unsafe { gen::bpf_probe_read_user((&mut next as *mut u8).cast(), 1, after) };
            if next != 0 {
                self.header.flags |= cut_flag;
            }
        }
        if let Some(len) = self.header.str_len.get_mut(slot) {
            *len = (n - 1) as u32;
        }
    }

    /// Append a NUL-terminated kernel string as string `slot` (io_uring:
    /// the kernel's own copy of a path, at most PATH_MAX with its NUL).
    #[inline(always)]
    pub fn kernel_str(&mut self, slot: usize, src: u64, bad_flag: u32) {
        let dst = self.at(self.end());
        let n =
            unsafe { gen::bpf_probe_read_kernel_str(dst.cast(), PATH_MAX as u32, src as *const _) };
        if src == 0 || n <= 0 {
            self.header.flags |= bad_flag;
            return;
        }
        if let Some(len) = self.header.str_len.get_mut(slot) {
            *len = (n - 1) as u32;
        }
    }

    /// Append `len` kernel bytes at `src` as string `slot`.
    #[inline(always)]
    fn kernel_bytes(&mut self, slot: usize, src: *const u8, len: usize) -> bool {
        let len = if len > PATH_MAX { PATH_MAX } else { len };
        let dst = self.at(self.end());
        if unsafe { gen::bpf_probe_read_kernel(dst.cast(), len as u32, src.cast()) } < 0 {
            return false;
        }
        if let Some(l) = self.header.str_len.get_mut(slot) {
            *l = len as u32;
        }
        true
    }

    /// Append a path the kernel walked as string `slot`.
    #[inline(always)]
    pub fn walked(&mut self, slot: usize, walked: Option<Walked>) {
        let ok = match walked {
            Some(w) => self.kernel_bytes(slot, w.start, w.len) && w.complete,
            None => false,
        };
        if !ok {
            self.header.flags |= flags::walk_incomplete(slot);
        }
    }

    /// The first byte of string `slot` (0 or 1, already written), if any.
    #[inline(always)]
    fn first_byte(&self, slot: usize) -> Option<u8> {
        let l = self.header.str_len;
        let start = match slot {
            0 => 0,
            _ => l[0] as usize,
        };
        let len = if slot == 0 { l[0] } else { l[1] };
        if len == 0 {
            return None;
        }
        self.data.get(start & DATA_OFFSET_MASK).copied()
    }

    /// Whether string `slot` (already written) is a relative path.
    #[inline(always)]
    fn is_relative(&self, slot: usize) -> bool {
        self.first_byte(slot).is_some_and(|b| b != b'/')
    }

    /// Whether string `slot` (already written) is an absolute path.
    #[inline(always)]
    fn is_absolute(&self, slot: usize) -> bool {
        self.first_byte(slot) == Some(b'/')
    }
}

/// The paths a record still needs walked, by string, until
/// [`walk_planned`] walks them all from one place. The walk's 40-step loop
/// costs the verifier about 13,000 instructions each time it is checked,
/// and it is checked once per way of reaching it: walked where each path
/// was found, the syscall exit's program took 695,000 of the 1,000,000
/// instructions the verifier allows (1.5 s of the agent's start-up on
/// 6.18, minutes under emulation); planned, 155,811.
#[repr(C)]
pub struct WalkPlan {
    /// (vfsmount, dentry) to walk as strings 0, 2 and 3; a zero dentry:
    /// nothing to walk.
    at: [[u64; 2]; 3],
    /// A user string to read as string 1 once string 0 is walked
    /// (fsetxattr's attribute name); 0: none.
    name1: u64,
}

#[map]
static WALK_PLAN: PerCpuArray<WalkPlan> = PerCpuArray::with_max_entries(1, 0);

/// Forget whatever an earlier record on this CPU planned and did not walk
/// (one given up half-way).
#[inline(always)]
pub fn clear_plan() {
    if let Some(p) = WALK_PLAN.get_ptr_mut(0) {
        zero(p);
    }
}

impl Record {
    /// Walk `at` (vfsmount, dentry) as string `slot` (0, 2 or 3) in
    /// [`walk_planned`]; a path that could not be found is flagged now.
    #[inline(always)]
    pub fn plan_walk(&mut self, slot: usize, at: Option<(u64, u64)>) {
        let i = match slot {
            0 => 0,
            2 => 1,
            _ => 2,
        };
        // The path is looked at before the plan is: looked up first, the
        // plan's pointer made the compiler read a `None`'s (unwritten)
        // value, which kernels before 6.3 refuse.
        if let Some((mnt, dentry)) = at {
            if dentry != 0 {
                if let Some(p) = WALK_PLAN.get_ptr_mut(0) {
                    // SAFETY: this CPU's plan.
                    unsafe { core::ptr::write_volatile(&mut (*p).at[i], [mnt, dentry]) };
                    return;
                }
            }
        }
        self.header.flags |= flags::walk_incomplete(slot);
    }
}

/// Walk the paths planned for `rec`, in string order, and forget them.
/// Its own function, called once per record: the verifier checks the walk
/// here once, whatever the record went through before.
#[inline(never)]
pub fn walk_planned(rec: &mut Record) {
    let Some(p) = WALK_PLAN.get_ptr_mut(0) else {
        return;
    };
    walk_slot(rec, p, 0, 0);
    // SAFETY: this CPU's plan.
    let name1 = unsafe { core::ptr::read_volatile(&(*p).name1) };
    if name1 != 0 {
        unsafe { core::ptr::write_volatile(&mut (*p).name1, 0) };
        rec.user_str(1, name1, flags::STR1_TRUNCATED, flags::STR1_UNREADABLE);
    }
    walk_slot(rec, p, 1, 2);
    walk_slot(rec, p, 2, 3);
}

/// Walk plan entry `i` as string `slot`, if one is planned. Its own
/// function too: the ways a walk can end (complete, cut, unreadable) meet
/// again at its return, so that the next slot is verified once, not once
/// for each of them.
#[inline(never)]
fn walk_slot(rec: &mut Record, p: *mut WalkPlan, i: usize, slot: usize) {
    // SAFETY: this CPU's plan.
    let [mnt, dentry] = unsafe { core::ptr::read_volatile(&(*p).at[i]) };
    if dentry == 0 {
        return;
    }
    unsafe { core::ptr::write_volatile(&mut (*p).at[i], [0, 0]) };
    rec.walked(slot, path::of_path(mnt, dentry));
}

/// Open file `fd` as string `slot`, walked in [`walk_planned`], and the
/// object it refers to by device and inode (the same file under every
/// name: hard links, bind mounts). The fd is looked up once for both.
#[inline(always)]
pub fn plan_fd(rec: &mut Record, slot: usize, fd: i32) {
    let path = path::fd_path(fd);
    rec.plan_walk(slot, path);
    object_of(rec, path);
}

/// The object of `path` (vfsmount, dentry), if any, into the header.
#[inline(always)]
fn object_of(rec: &mut Record, path: Option<(u64, u64)>) {
    if let Some((dev, ino)) = path.and_then(|(_, dentry)| path::object_of(dentry)) {
        rec.header.obj_dev = dev;
        rec.header.obj_ino = ino;
        rec.header.flags |= flags::OBJECT_ID;
    }
}

/// Open file `fd` as string `slot`, walked now, and the object it refers
/// to (see [`plan_fd`]): for a record with this one walk.
#[inline(always)]
pub fn walked_fd(rec: &mut Record, slot: usize, fd: i32) {
    let path = path::fd_path(fd);
    rec.walked(slot, path.and_then(|(mnt, dentry)| path::of_path(mnt, dentry)));
    object_of(rec, path);
}

/// The dirfd argument at `index`, AT_FDCWD for calls without one.
#[inline(always)]
fn dirfd(args: &[u64; 6], index: u8) -> i32 {
    args.get(index as usize)
        .map_or(path::AT_FDCWD, |&a| a as i32)
}

/// Copy the paths a syscall names, as its argument layout says, and plan
/// the walks of those it names by fd and of the directories relative ones
/// are relative to.
#[inline(always)]
fn read_paths(rec: &mut Record, nr: u32, args: &[u64; 6], ret: i64) {
    let Some(layout) = syscalls::arg_layout(nr) else {
        return;
    };
    let mut by_fd = false;
    if let Some(&p) = args.get(layout.path0 as usize) {
        rec.user_str(0, p, flags::STR0_TRUNCATED, flags::STR0_UNREADABLE);
    } else if matches!(
        nr,
        syscalls::FTRUNCATE | syscalls::FCHMOD | syscalls::FCHOWN | syscalls::FSETXATTR
    ) {
        by_fd = true;
        plan_fd(rec, 0, args[0] as i32);
    }
    if syscalls::is_setxattr(nr) {
        if by_fd {
            // After string 0, which is walked later.
            if let Some(p) = WALK_PLAN.get_ptr_mut(0) {
                // SAFETY: this CPU's plan.
                unsafe { core::ptr::write_volatile(&mut (*p).name1, args[1]) };
            }
        } else {
            rec.user_str(1, args[1], flags::STR1_TRUNCATED, flags::STR1_UNREADABLE);
        }
        let caps: Option<[u32; 5]> = if args[3] >= 12 {
            unsafe { aya_ebpf::helpers::bpf_probe_read_user(args[2] as *const [u32; 5]) }.ok()
        } else {
            None
        };
        xattr_caps(rec, caps);
    }
    if let Some(&p) = args.get(layout.path1 as usize) {
        rec.user_str(1, p, flags::STR1_TRUNCATED, flags::STR1_UNREADABLE);
    }
    let opened = syscalls::returns_opened_fd(nr) && ret >= 0;
    walk_dirs(rec, layout, args, if opened { ret as i32 } else { -1 }, by_fd);
}

/// What a setxattr value holds if it is file capabilities (a
/// `vfs_cap_data`: magic, then permitted and inheritable of the low and
/// the high word), into the record's arguments (see
/// `syscalls::xattr_caps`); the agent decodes it only for
/// `security.capability`.
#[inline(always)]
pub fn xattr_caps(rec: &mut Record, value: Option<[u32; 5]>) {
    use syscalls::xattr_caps::*;
    let v = value.unwrap_or([0; 5]);
    rec.header.args[MAGIC_ARG] = v[0] as u64;
    rec.header.args[PERMITTED_ARG] = v[1] as u64 | (v[3] as u64) << 32;
    rec.header.args[INHERITABLE_ARG] = v[2] as u64 | (v[4] as u64) << 32;
}

/// After the names, plan the walks of what an open opened (`opened`, the
/// fd it returned; negative for none), else of the directories relative
/// names are relative to; `by_fd`: string 0 is an fd's path, planned but
/// not walked yet (an absolute path).
#[inline(always)]
pub fn walk_dirs(
    rec: &mut Record,
    layout: syscalls::ArgLayout,
    args: &[u64; 6],
    opened: i32,
    by_fd: bool,
) {
    if opened >= 0 {
        let fd = opened;
        // What was opened, from the fd: however the path was spelled
        // (`..`, `//`, a symlinked directory, a bind mount), this is the
        // file the kernel opened.
        rec.header.flags |= flags::OBJECT0_WALKED;
        plan_fd(rec, 2, fd);
        return;
    }
    // In a chroot, an absolute path starts at the process's root, and a
    // relative one cannot climb above it.
    let chroot = path::changed_root();
    if chroot.is_some() {
        rec.header.flags |= flags::ROOT_CHANGED;
    }
    let relative0 = !by_fd && rec.is_relative(0);
    if relative0 {
        rec.plan_walk(2, path::dir_at(dirfd(args, layout.dirfd0)));
    } else if let (true, Some(root)) = (by_fd || rec.is_absolute(0), chroot) {
        rec.plan_walk(2, Some(root));
    }
    // symlink's first string is the link's content, never resolved; a
    // call without a second path (setxattr: an attribute's name) has
    // nothing to walk for it. A relative first path in a chroot needs the
    // root too (an absolute symlink on its way starts there): string 3
    // carries it unless a relative second path needs a directory of its
    // own.
    let has_path1 = layout.path1 != syscalls::NONE;
    let relative1 = has_path1 && rec.is_relative(1);
    let own_dir1 = relative1 && dirfd(args, layout.dirfd1) != dirfd(args, layout.dirfd0);
    match chroot {
        Some(root) if (has_path1 && rec.is_absolute(1)) || (relative0 && !own_dir1) => {
            rec.header.flags |= flags::ROOT_IN_STR3;
            rec.plan_walk(3, Some(root));
        }
        _ if relative1 => rec.plan_walk(3, path::dir_at(dirfd(args, layout.dirfd1))),
        _ => {}
    }
}

/// Copy the current (new) image's argument area after the program name.
#[inline(always)]
fn read_argv(rec: &mut Record) {
    let Some((start, end)) = task::arg_area() else {
        rec.header.flags |= flags::ARGV_UNREADABLE;
        return;
    };
    let mut len = end.saturating_sub(start) as usize;
    if len > ARGV_MAX {
        len = ARGV_MAX;
        rec.header.flags |= flags::STR1_TRUNCATED;
    }
    let dst = rec.at(rec.end());
    if unsafe { gen::bpf_probe_read_user(dst.cast(), len as u32, start as *const _) } < 0 {
        rec.header.flags |= flags::ARGV_UNREADABLE;
        return;
    }
    rec.header.str_len[1] = len as u32;
}

/// Submit `rec`'s header and string data to the ring buffer.
#[inline(always)]
pub fn submit(rec: &mut Record) {
    if output(rec) {
        count(counter::SUBMITTED)
    } else {
        count(counter::RINGBUF_DROPS)
    }
}

/// Write `rec` into the ring buffer; false when it did not fit.
#[inline(always)]
fn output(rec: &mut Record) -> bool {
    let data_len = rec.end();
    rec.header.data_len = data_len as u32;
    // An explicit bound the verifier can see: never past the record.
    let len = HEADER_SIZE + data_len;
    let len = if len > core::mem::size_of::<Record>() {
        core::mem::size_of::<Record>()
    } else {
        len
    };
    // Wake the agent when this record takes the waiting data across the
    // threshold, not for every record above it: a wake-up is an
    // inter-processor interrupt (on a VM, an exit to the hypervisor) and
    // was the largest single cost of capture under load. An agent that is
    // behind keeps draining without being woken, and drains on its timer
    // anyway.
    let wake = global(&WAKEUP_BYTES);
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    let flags = if wake == 0 || (waiting < wake && waiting + len as u64 >= wake) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let bytes = unsafe { core::slice::from_raw_parts((rec as *const Record).cast::<u8>(), len) };
    EVENTS.output::<[u8]>(bytes, flags).is_ok()
}

#[inline(always)]
fn start(pending: &PendingSyscall, ret: i64) -> Option<&'static mut Record> {
    let rec = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    // Field by field, in place: a header built on the stack and copied
    // would cost 176 of the 512 bytes of stack the verifier allows.
    zero(&mut rec.header as *mut EventHeader);
    let h = &mut rec.header;
    h.syscall = pending.syscall;
    h.enter_ns = pending.enter_ns;
    h.args = pending.args;
    h.old_ids = pending.old_ids;
    h.ret = ret;
    let exec = syscalls::is_exec(pending.syscall);
    if exec {
        h.flags |= flags::EXEC_TERMINAL;
    }
    // The ids read when the call was entered are still the thread's,
    // unless the call changes credentials (an exec may too).
    let unchanged = !exec && !syscalls::is_cred_change(pending.syscall);
    fill_common(h, unchanged.then_some(pending.old_ids));
    take_verdict(h);
    if pending.flags & pending_flags::UNPARKED != 0 {
        // Its `enter_ns` only chose the verdict (see `main::unparked_exit`).
        h.enter_ns = h.exit_ns;
    }
    clear_plan();
    Some(rec)
}

/// What enforcement did to the current thread's operation since
/// `h.enter_ns`, if anything, into the header.
#[inline(always)]
pub fn take_verdict(h: &mut EventHeader) {
    take_verdict_of(h, aya_ebpf::helpers::bpf_get_current_pid_tgid());
}

/// The verdict filed under `key` (a thread's `pid_tgid`, or an io_uring
/// request's address), if any, since `h.enter_ns`.
#[inline(always)]
pub fn take_verdict_of(h: &mut EventHeader, key: u64) {
    let tid = key;
    if let Some(v) = unsafe { crate::verdicts::VERDICTS.get(&tid) } {
        if v.ktime_ns >= h.enter_ns {
            h.verdict_rule = v.rule;
            h.verdict_action = v.action;
            h.verdict_generation = v.generation;
        }
        let _ = crate::verdicts::VERDICTS.remove(&tid);
    }
}

pub fn emit_syscall(pending: &PendingSyscall, ret: i64) -> Result<(), i64> {
    let rec = start(pending, ret).ok_or(0)?;
    read_paths(rec, pending.syscall, &pending.args, ret);
    walk_planned(rec);
    submit(rec);
    Ok(())
}

/// A read-only open `nr` seen only at its exit: its arguments are gone
/// (a relative name's directory was the cwd, as far as the record says).
#[inline(always)]
fn read_open(nr: u32, enter_ns: u64) -> PendingSyscall {
    let mut args = [0u64; 6];
    if nr != syscalls::OPEN {
        args[0] = path::AT_FDCWD as i64 as u64;
    }
    PendingSyscall {
        syscall: nr,
        flags: 0,
        enter_ns,
        args,
        old_ids: task::current_ids(),
    }
}

/// A read-only open of a watched file, from its exit (see
/// `flags::WATCHED_READ`): the call's arguments are gone, the file it
/// opened is walked from the returned fd.
#[inline(never)]
pub fn emit_watched_read(nr: u32, fd: i64) -> Result<(), i64> {
    let pending = read_open(nr, unsafe { gen::bpf_ktime_get_ns() });
    let rec = start(&pending, fd).ok_or(0)?;
    rec.header.flags |= flags::WATCHED_READ | flags::OBJECT0_WALKED;
    // One walk: no plan needed.
    walked_fd(rec, 2, fd as i32);
    submit(rec);
    Ok(())
}

/// A read-only open the LSM hook refused (see `watch::Refused`): like a
/// watched read, with the verdict, walked from what the hook saw.
#[inline(never)]
pub fn emit_refused_read(nr: u32, ret: i64, refused: &guardrail_common::watch::Refused) -> Result<(), i64> {
    // The verdict the hook filed with the refusal is this call's; an
    // older one (a stale entry) is not.
    let pending = read_open(nr, refused.ktime_ns);
    let rec = start(&pending, ret).ok_or(0)?;
    rec.header.enter_ns = refused.ktime_ns;
    rec.header.flags |= flags::WATCHED_READ | flags::OBJECT0_WALKED;
    rec.walked(2, path::of_path(refused.vfsmnt, refused.dentry));
    object_of(rec, Some((refused.vfsmnt, refused.dentry)));
    submit(rec);
    Ok(())
}

/// Report a successful exec from the new image: the program as the kernel
/// named it, the argument area, the cwd.
pub fn emit_exec(pending: &PendingSyscall, filename: *const u8) -> Result<(), i64> {
    let rec = start(pending, 0).ok_or(0)?;
    let dst = rec.at(0);
    let n = unsafe { gen::bpf_probe_read_kernel_str(dst.cast(), PATH_MAX as u32, filename.cast()) };
    if n > 0 {
        rec.header.str_len[0] = (n - 1) as u32;
    } else {
        rec.header.flags |= flags::STR0_UNREADABLE;
    }
    read_argv(rec);
    if path::changed_root().is_some() {
        rec.header.flags |= flags::ROOT_CHANGED;
    }
    rec.walked(2, path::dir_of(path::AT_FDCWD));
    rec.walked(3, path::of_exe());
    submit(rec);
    Ok(())
}

/// A record of `kind` about the current process, header only, for the
/// caller to complete.
#[inline(always)]
pub fn header_only(kind: guardrail_common::RecordKind) -> Option<&'static mut Record> {
    let rec = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    zero(&mut rec.header as *mut EventHeader);
    fill_common(&mut rec.header, None);
    rec.header.kind = kind as u32;
    Some(rec)
}

/// A record of `kind` about the current process with `args` and `ret`:
/// a header and no strings.
pub fn emit_record(
    kind: guardrail_common::RecordKind,
    args: [u64; 6],
    ret: i64,
) -> Result<(), i64> {
    let rec = header_only(kind).ok_or(0)?;
    let h = &mut rec.header;
    h.args = args;
    h.ret = ret;
    h.enter_ns = h.exit_ns;
    submit(rec);
    Ok(())
}

/// A fork (`pid` the new process, `ppid` its parent, `start` its start
/// time) or an exit (`pid`): a header and no strings.
pub fn emit_lifecycle(
    kind: guardrail_common::RecordKind,
    pid: u32,
    ppid: u32,
    start: u64,
) -> Result<(), i64> {
    let rec = header_only(kind).ok_or(0)?;
    let h = &mut rec.header;
    h.pid = pid;
    h.ppid = ppid;
    h.args[0] = start;
    if !output(rec) {
        count(counter::LIFECYCLE_DROPS);
    }
    Ok(())
}
