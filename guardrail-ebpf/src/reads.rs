//! Reads of watched files (`file.read` rules).
//!
//! A read-only open is dropped before anything but its flags is read (at
//! its exit where calls are read there only, see `crate::EXIT_ONLY`; else
//! at its entry): watching reads must not make every open expensive. When
//! such an open returns an fd and the watch set is active, the exit side
//! looks the opened file's inode number up, and only on a hit its device.
//! For an unwatched file that is the fd table (plain loads where the task
//! is typed, 5.11+: see `task`), three kernel reads (the fd's slot, the
//! file's inode, its number: plain loads too where the kernel can type
//! the slot, 6.2+, see `path::fd_file_typed`) and one bitmap load (the
//! rare number whose bit is set pays a hash lookup).
//! A hit is recorded from the fd (see `flags::WATCHED_READ`).

use aya_ebpf::macros::map;
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use aya_ebpf::maps::{Array, HashMap, LruHashMap};
use guardrail_common::enforce::InodeKey;
use guardrail_common::watch::{self, Refused};

use crate::path::{self, read, FMODE_PATH, FMODE_READ, FMODE_WRITE};
use crate::task;
use crate::off;

/// The watched files and directories of both generations.
#[map]
static READ_WATCH: HashMap<InodeKey, u8> = HashMap::with_max_entries(watch::MAX_ENTRIES, 0);

/// Each generation's bitmap over the inode numbers it watches (see
/// `watch::BITMAP_WORDS`), checked before `READ_WATCH`.
#[map]
static READ_WATCH_BITS: Array<u64> = Array::with_max_entries(2 * watch::BITMAP_WORDS, 0);

/// One word: the generation in force and whether it watches anything
/// (`watch::GENERATION | ACTIVE`), flipped in one update.
#[map]
static READ_WATCH_STATE: Array<u64> = Array::with_max_entries(1, 0);

/// Refused reads by thread (`pid_tgid`), taken by the call's exit; an LRU
/// map, so one whose exit never comes cannot fill it.
#[map]
static REFUSED: LruHashMap<u64, Refused> = LruHashMap::with_max_entries(4096, 0);

/// Files the current thread's read-only open of (`vfsmnt`, `dentry`) was
/// refused (called by the `file_open` hook). Not for a parked call (an
/// exec; where opens are parked at their entry, one that can write or any
/// with `capture.read_opens`), reported from its own entry with the
/// verdict, nor for an io-wq worker, which never exits a syscall. Where
/// opens are read at their exit only, nothing is parked and every refused
/// open that cannot write is noted, `O_RDONLY|O_CREAT` too: the exit of
/// one that is reported from its own arguments drops the note.
#[inline(always)]
pub fn note_refused(vfsmnt: u64, dentry: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if crate::uring::worker_request().is_some()
        || crate::parked::parked(pid_tgid).is_some()
    {
        return;
    }
    // When the verdict was filed (in this hook call, just before): the
    // exit takes that verdict and no older one.
    let Some(verdict) = (unsafe { crate::verdicts::VERDICTS.get(&pid_tgid) }) else {
        return;
    };
    let refused = Refused {
        vfsmnt,
        dentry,
        ktime_ns: verdict.ktime_ns,
    };
    let _ = REFUSED.insert(&pid_tgid, &refused, 0);
}

/// A refused open returns at once (well within a second, even in a slow
/// VM): a note older than this was left by a
/// call whose exit did not take it (an open submitted inline through
/// io_uring) and is not this call's.
pub const REFUSED_MAX_AGE_NS: u64 = 1_000_000_000;

/// The read-only open of the current thread the LSM hook refused just
/// now, if any.
#[inline(always)]
pub fn take_refused(pid_tgid: u64) -> Option<Refused> {
    let refused = *unsafe { REFUSED.get(&pid_tgid) }?;
    let _ = REFUSED.remove(&pid_tgid);
    let age = unsafe { bpf_ktime_get_ns() }.saturating_sub(refused.ktime_ns);
    (age <= REFUSED_MAX_AGE_NS).then_some(refused)
}

/// The generation of the watch set in force, if it watches anything (one
/// array lookup). Read once per call: the exit path hands it to
/// [`watched_in`] rather than reading it again.
#[inline(always)]
pub fn watching() -> Option<u32> {
    let state = *READ_WATCH_STATE.get(0)?;
    (state & watch::ACTIVE != 0).then_some((state & watch::GENERATION) as u32)
}

/// Whether any read is watched now.
#[inline(always)]
pub fn active() -> bool {
    watching().is_some()
}

/// Whether the file open as `fd` (just opened, read-only) is watched by
/// the generation in force.
#[inline(always)]
pub fn watched(fd: i32) -> bool {
    watching().is_some_and(|generation| watched_in(generation, fd))
}

/// Whether the file open as `fd` (just opened, read-only) is watched by
/// `generation`. Inline, as is everything up to it on the exit path: a
/// call there costs more than the checks it holds (docs/performance.md).
#[inline(always)]
pub fn watched_in(generation: u32, fd: i32) -> bool {
    watched_inner(generation, fd).unwrap_or(false)
}

#[inline(always)]
fn watched_inner(generation: u32, fd: i32) -> Option<bool> {
    if off!(inode_sb) == 0 || off!(task_files) == 0 {
        return Some(false);
    }
    // A typed file where the kernel can cast its fd's slot (6.2+): every
    // read below is then a plain load; else a helper call each.
    let (file, typed) = match path::fd_file_typed(fd) {
        Some(file) => (file, true),
        None if crate::global(&crate::FILE_CAST_BTF_ID) != 0 => return Some(false),
        None => (path::fd_file(fd)?, false),
    };
    let inode: u64 = load(typed, file, off!(file_f_inode))?;
    if inode == 0 {
        return Some(false);
    }
    let ino: u64 = load(typed, inode, off!(inode_ino))?;
    // By inode number first, in the bitmap: the one load nearly every
    // read-only open ends with; then in the map.
    let (word, bit) = watch::bit_of(ino);
    if *READ_WATCH_BITS.get(generation * watch::BITMAP_WORDS + word)? & bit == 0 {
        return Some(false);
    }
    let mut key = InodeKey {
        dev: watch::ANY_DEVICE,
        ino,
        generation,
        _pad: 0,
    };
    unsafe { READ_WATCH.get(&key) }?;
    let sb: u64 = load(typed, inode, off!(inode_sb))?;
    key.dev = load::<u32>(typed, sb, off!(sb_dev))? as u64;
    if !unsafe { READ_WATCH.get(&key) }.is_some_and(|v| v & watch::FILE != 0) {
        return Some(false);
    }
    // Only now, for a watched file: an open that can write was parked at
    // entry and reported as such (if its entry was lost it is no read);
    // an O_PATH handle (anyone may take one) cannot read the content.
    let mode: u32 = load(typed, file, off!(file_f_mode))?;
    Some(mode & (FMODE_READ | FMODE_WRITE | FMODE_PATH) == FMODE_READ)
}

/// The `T` at `offset` in `base`: a plain load where `base` was reached
/// from a typed file, else a helper read.
#[inline(always)]
fn load<T: Copy>(typed: bool, base: u64, offset: u32) -> Option<T> {
    unsafe {
        if typed {
            task::field(base, offset).ok()
        } else {
            read(base, offset)
        }
    }
}
