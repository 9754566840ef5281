//! Fields of the current `task_struct` and its credentials.
//!
//! Their offsets differ between kernels, so they come from the agent, which
//! reads them from the running kernel's BTF ([`crate::OFFSETS`]). With no
//! offsets the probes report only what helpers give.
//!
//! Where the kernel has `bpf_get_current_task_btf` (5.11+, `TASK_BTF`),
//! the current task is a typed pointer: each field, and each field of an
//! object a typed pointer field leads to (its credentials, parent,
//! namespaces, files), is a plain load the kernel guards against faults,
//! instead of a helper call (about 15 ns each). Only whole scalar or
//! pointer members are loaded so: the verifier refuses a load that spans
//! two members, and a pointer it does not type (to a pointer, an array
//! of bytes, or reached by container_of) is read by the helper as before.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_get_current_uid_gid, bpf_probe_read_kernel, generated as gen,
};
use guardrail_common::{flags, EventHeader};

use crate::off;

#[inline(always)]
unsafe fn read<T>(base: u64, offset: u32) -> Result<T, i64> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).map_err(|e| e as i64)
}

/// Whether [`current`] is a typed pointer (see the module's comment).
#[inline(always)]
pub fn typed() -> bool {
    crate::global(&crate::TASK_BTF) != 0
}

/// The current task: a typed pointer where the kernel offers one.
#[inline(always)]
pub fn current() -> u64 {
    if typed() {
        unsafe { gen::bpf_get_current_task_btf() as u64 }
    } else {
        unsafe { bpf_get_current_task() }
    }
}

/// The `T` (one whole scalar or pointer member) at `offset` in `base`,
/// which is [`current`] or was loaded by this function from an object it
/// leads to: a plain load where those are typed, else a helper read.
#[inline(always)]
pub unsafe fn field<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
    if typed() {
        Ok(core::ptr::read_volatile(
            (base as *const u8).add(offset as usize).cast::<T>(),
        ))
    } else {
        read(base, offset)
    }
}

/// The pointer member at `offset` in `base` (as [`field`]); None when
/// it is null.
#[inline(always)]
unsafe fn pointer(base: u64, offset: u32) -> Option<u64> {
    field::<u64>(base, offset).ok().filter(|&p| p != 0)
}

/// The current syscall's six arguments, from the task's saved registers
/// (`bpf_task_pt_regs`, 5.15+, with typed tasks only: see
/// `crate::EXIT_ONLY`): what the `syscalls:sys_enter_*` record copied at
/// entry, still there at exit (x86-64: di, si, dx, r10, r8, r9).
#[inline(always)]
pub fn syscall_args() -> Option<[u64; 6]> {
    let regs = unsafe { gen::bpf_task_pt_regs(gen::bpf_get_current_task_btf()) } as u64;
    if regs == 0 {
        return None;
    }
    let offsets = off!(regs_args);
    let mut args = [0u64; 6];
    for (slot, offset) in args.iter_mut().zip(offsets) {
        // SAFETY: a typed `pt_regs`; the kernel guards the load.
        *slot = unsafe { core::ptr::read_volatile((regs + offset as u64) as *const u64) };
    }
    Some(args)
}

/// (uid, gid, euid, egid) of the current task; euid/egid fall back to the
/// real ids when the kernel's offsets are unknown.
#[inline(always)]
pub fn current_ids() -> [u32; 4] {
    let ug = bpf_get_current_uid_gid();
    let (uid, gid) = (ug as u32, (ug >> 32) as u32);
    let (euid, egid) = effective_ids().unwrap_or((uid, gid));
    [uid, gid, euid, egid]
}

#[inline(always)]
fn effective_ids() -> Result<(u32, u32), i64> {
    if off!(task_cred) == 0 {
        return Err(0);
    }
    unsafe {
        let cred: u64 = field(current(), off!(task_cred))?;
        let (euid, egid) = (off!(cred_euid), off!(cred_egid));
        if typed() {
            return Ok((field(cred, euid)?, field(cred, egid)?));
        }
        if egid == euid + 4 {
            // Neighbours in `struct cred` on every kernel: one helper call.
            let both: [u32; 2] = read(cred, euid)?;
            return Ok((both[0], both[1]));
        }
        Ok((read(cred, euid)?, read(cred, egid)?))
    }
}

/// The current task's effective capability set (0 when unknown).
#[inline(always)]
pub fn effective_caps() -> u64 {
    if off!(task_cred) == 0 || off!(cred_cap_effective) == 0 {
        return 0;
    }
    unsafe {
        let task = bpf_get_current_task();
        match read::<u64>(task, off!(task_cred)) {
            Ok(cred) => read(cred, off!(cred_cap_effective)).unwrap_or(0),
            Err(_) => 0,
        }
    }
}

/// The current task's ids, parent and login uid into `h`. `known`: its
/// ids already read in this same syscall, which cannot have changed them
/// (only the task itself changes its credentials, through the calls
/// `syscalls::is_cred_change` lists and exec): three helper calls fewer.
#[inline(always)]
pub fn fill_ids(h: &mut EventHeader, known: Option<[u32; 4]>) {
    let [uid, gid, euid, egid] = match known {
        Some(ids) => ids,
        None => current_ids(),
    };
    h.uid = uid;
    h.gid = gid;
    h.euid = euid;
    h.egid = egid;
    h.auid = u32::MAX;
    if off!(task_cred) == 0 {
        return;
    }
    unsafe {
        let task = current();
        if let Ok(parent) = field::<u64>(task, off!(task_real_parent)) {
            h.ppid = field(parent, off!(task_tgid)).unwrap_or(0);
        }
        if off!(task_loginuid) != 0 {
            h.auid = field(task, off!(task_loginuid)).unwrap_or(u32::MAX);
        }
    }
    h.flags |= flags::TASK_FIELDS;
}

/// Start and end of the current image's argument area (`mm->arg_start`,
/// `mm->arg_end`): argv as the program received it.
#[inline(always)]
pub fn arg_area() -> Option<(u64, u64)> {
    if off!(task_mm) == 0 {
        return None;
    }
    unsafe {
        let mm = pointer(current(), off!(task_mm))?;
        Some((
            field(mm, off!(mm_arg_start)).ok()?,
            field(mm, off!(mm_arg_end)).ok()?,
        ))
    }
}

/// The current task's executable file (`mm->exe_file`); None for a
/// kernel thread, which has no memory map, and when the offsets are
/// unknown.
#[inline(always)]
pub fn exe_file() -> Option<u64> {
    if off!(task_mm) == 0 {
        return None;
    }
    unsafe { pointer(pointer(current(), off!(task_mm))?, off!(mm_exe_file)) }
}

/// The inode number of the current task's mount namespace.
#[inline(always)]
pub fn current_mnt_ns() -> Option<u64> {
    if off!(task_nsproxy) == 0 {
        return None;
    }
    unsafe {
        let nsproxy = pointer(current(), off!(task_nsproxy))?;
        let mnt_ns = pointer(nsproxy, off!(nsproxy_mnt_ns))?;
        match field::<u32>(mnt_ns, off!(mnt_ns_inum)).ok()? {
            0 => None,
            inum => Some(inum as u64),
        }
    }
}

/// The current task's login session id (`u32::MAX`: unset or unknown) and
/// controlling terminal's device number (`major << 20 | minor`; 0: none).
#[inline(always)]
pub fn session_and_tty() -> (u32, u32) {
    if off!(task_signal) == 0 {
        return (u32::MAX, 0);
    }
    unsafe {
        let task = current();
        let session = if off!(task_sessionid) != 0 {
            field::<u32>(task, off!(task_sessionid)).unwrap_or(u32::MAX)
        } else {
            u32::MAX
        };
        let tty = (|| -> Result<u32, i64> {
            let signal: u64 = field(task, off!(task_signal))?;
            let tty: u64 = field(signal, off!(signal_tty))?;
            if tty == 0 {
                return Ok(0);
            }
            let index: i32 = field(tty, off!(tty_index))?;
            let driver: u64 = field(tty, off!(tty_driver))?;
            let major: i32 = field(driver, off!(driver_major))?;
            let minor_start: i32 = field(driver, off!(driver_minor_start))?;
            Ok(((major as u32) << 20) | (minor_start + index) as u32 & 0xfffff)
        })()
        .unwrap_or(0);
        (session, tty)
    }
}
