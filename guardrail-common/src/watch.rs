//! The read watch set: files whose read-only opens are captured (rules of
//! kind `file.read`). Every other read-only open is dropped in the kernel.
//!
//! Entries are [`crate::enforce::InodeKey`]s (device, inode, generation):
//! a watched file is seen under every name it has (hard links, renames,
//! bind mounts). Each watched file has a second entry with device
//! [`ANY_DEVICE`]: the probes look the inode number up first, which needs
//! fewer kernel reads than the device, and only the rare hit pays for the
//! exact check. Like the enforcement maps, a new set is written under the
//! inactive generation and put in force by one update of
//! `READ_WATCH_STATE`'s single word.

/// Value bit of a `READ_WATCH` entry: the file is watched.
pub const FILE: u8 = 1 << 0;

/// The device of the inode-number-only entries. No file system has it:
/// the kernel's device numbers 0:0 name no device.
pub const ANY_DEVICE: u64 = 0;

/// Bits of the `READ_WATCH_STATE` word.
pub const GENERATION: u64 = 1 << 0;
/// The generation in force watches something (else nothing is looked up).
pub const ACTIVE: u64 = 1 << 1;

/// Entries the kernel map holds, for both generations together (a reload
/// writes the new set before the old one is removed), two per file.
pub const MAX_ENTRIES: u32 = 65536;

/// A read-only open the BPF-LSM `file_open` hook refused: what it would
/// have opened and when (`REFUSED`, by thread). The open was dropped at
/// entry as a plain read and returns no fd, so the call's exit reports it
/// from this. Pinned: during a hand-over the old and the new programs
/// both run, and the first exit to take the note reports it, once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    pub vfsmnt: u64,
    pub dentry: u64,
    pub ktime_ns: u64,
}

/// Words of one generation's bitmap over inode numbers
/// (`READ_WATCH_BITS`: generation `g`'s words start at `g * BITMAP_WORDS`).
/// A watched file's bit is set in its generation's bitmap, so that the
/// probes pass over nearly every unwatched open on one array load
/// instead of a hash lookup: with a thousand watched files, about 1.5%
/// of other inode numbers share a set bit and pay the lookup.
pub const BITMAP_WORDS: u32 = 1024;

/// Where inode number `ino` is in a generation's bitmap (of
/// `BITMAP_WORDS * 64` bits): its word and the bit in that word, from
/// the top bits of a multiplicative hash, so that neighbouring numbers
/// spread.
#[inline(always)]
pub const fn bit_of(ino: u64) -> (u32, u64) {
    let bit = (ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u32;
    (bit >> 6, 1 << (bit & 63))
}
