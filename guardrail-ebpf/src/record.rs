//! Assembling records: header, user strings, argv, and submission.

use aya_ebpf::helpers::generated as gen;
use guardrail_common::{
    counter, flags, syscalls, EventHeader, PendingSyscall, ARGV_MAX, DATA_OFFSET_MASK, HEADER_SIZE,
    PATH_MAX, SCRATCH_DATA_SIZE,
};

use crate::{count, fill_common, global, task, EVENTS, SCRATCH, WAKEUP_BYTES};

#[repr(C)]
pub struct Record {
    pub header: EventHeader,
    pub data: [u8; SCRATCH_DATA_SIZE],
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Copy a NUL-terminated user string to `data[offset..]`. Returns the bytes
/// copied without the NUL, and whether the string was cut or unreadable.
#[inline(always)]
fn read_user_str(rec: &mut Record, offset: usize, src: u64) -> (usize, bool, bool) {
    if src == 0 {
        return (0, false, true);
    }
    let dst = unsafe { rec.data.as_mut_ptr().add(offset & DATA_OFFSET_MASK) };
    let n = unsafe { gen::bpf_probe_read_user_str(dst.cast(), PATH_MAX as u32, src as *const _) };
    if n <= 0 {
        return (0, false, true);
    }
    let n = n as usize;
    // The helper returns PATH_MAX when it had to cut (it always NUL-terminates).
    (n - 1, n >= PATH_MAX, false)
}

/// Copy the paths a syscall names, as its argument layout says.
#[inline(always)]
fn read_paths(rec: &mut Record, nr: u32, args: &[u64; 6]) {
    let layout = match syscalls::arg_layout(nr) {
        Some(l) => l,
        None => return,
    };
    let mut len0 = 0;
    if let Some(&p) = args.get(layout.path0 as usize) {
        let (n, cut, bad) = read_user_str(rec, 0, p);
        len0 = n;
        rec.header.str_len[0] = n as u32;
        set_flags(&mut rec.header, cut, bad, flags::STR0_TRUNCATED, flags::STR0_UNREADABLE);
    }
    if let Some(&p) = args.get(layout.path1 as usize) {
        let (n, cut, bad) = read_user_str(rec, len0, p);
        rec.header.str_len[1] = n as u32;
        set_flags(&mut rec.header, cut, bad, flags::STR1_TRUNCATED, flags::STR1_UNREADABLE);
    }
}

#[inline(always)]
fn set_flags(h: &mut EventHeader, cut: bool, bad: bool, cut_flag: u32, bad_flag: u32) {
    if cut {
        h.flags |= cut_flag;
    }
    if bad {
        h.flags |= bad_flag;
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
    let offset = rec.header.str_len[0] as usize & DATA_OFFSET_MASK;
    let dst = unsafe { rec.data.as_mut_ptr().add(offset) };
    let rc = unsafe { gen::bpf_probe_read_user(dst.cast(), len as u32, start as *const _) };
    if rc < 0 {
        rec.header.flags |= flags::ARGV_UNREADABLE;
        return;
    }
    rec.header.str_len[1] = len as u32;
}

/// Submit `rec`'s header and string data to the ring buffer.
#[inline(always)]
fn submit(rec: &mut Record) {
    let data_len = (rec.header.str_len[0] + rec.header.str_len[1]) as usize;
    rec.header.data_len = data_len as u32;
    // An explicit bound the verifier can see: never past the record.
    let len = HEADER_SIZE + data_len;
    let len = if len > core::mem::size_of::<Record>() {
        core::mem::size_of::<Record>()
    } else {
        len
    };
    let wake = global(&WAKEUP_BYTES);
    let flags = if wake == 0 || EVENTS.query(BPF_RB_AVAIL_DATA) >= wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let bytes = unsafe { core::slice::from_raw_parts((rec as *const Record).cast::<u8>(), len) };
    match EVENTS.output::<[u8]>(bytes, flags) {
        Ok(()) => count(counter::SUBMITTED),
        Err(_) => count(counter::RINGBUF_DROPS),
    }
}

pub fn emit_syscall(pending: &PendingSyscall, ret: i64) -> Result<(), i64> {
    let rec = match SCRATCH.get_ptr_mut(0) {
        Some(r) => unsafe { &mut *r },
        None => return Err(0),
    };
    rec.header = EventHeader {
        syscall: pending.syscall,
        enter_ns: pending.enter_ns,
        args: pending.args,
        old_ids: pending.old_ids,
        ret,
        ..EventHeader::default()
    };
    fill_common(&mut rec.header);
    read_paths(rec, pending.syscall, &pending.args);
    submit(rec);
    Ok(())
}

/// Report a successful exec from the new image.
pub fn emit_exec(pending: &PendingSyscall, filename: *const u8) -> Result<(), i64> {
    let rec = match SCRATCH.get_ptr_mut(0) {
        Some(r) => unsafe { &mut *r },
        None => return Err(0),
    };
    rec.header = EventHeader {
        syscall: pending.syscall,
        enter_ns: pending.enter_ns,
        args: pending.args,
        old_ids: pending.old_ids,
        ret: 0,
        ..EventHeader::default()
    };
    fill_common(&mut rec.header);
    let dst = rec.data.as_mut_ptr();
    let n = unsafe { gen::bpf_probe_read_kernel_str(dst.cast(), PATH_MAX as u32, filename.cast()) };
    if n > 0 {
        rec.header.str_len[0] = (n - 1) as u32;
    } else {
        rec.header.flags |= flags::STR0_UNREADABLE;
    }
    read_argv(rec);
    submit(rec);
    Ok(())
}
