//! The read watch set: files whose read-only opens are captured (rules of
//! kind `file.read`). Every other read-only open is dropped in the kernel.
//!
//! Entries are [`crate::enforce::InodeKey`]s (device, inode, generation):
//! a watched file is seen under every name it has (hard links, renames,
//! bind mounts). A directory entry watches the files directly inside it
//! (checked through the opened file's parent dentry), so that files
//! created there later are seen too; a recursive pattern marks every
//! directory of its subtree. Like the enforcement maps, a new set is
//! written under the inactive generation and put in force by one update
//! of [`READ_WATCH_STATE`'s][self] single word.

/// Value bits of a `READ_WATCH` entry.
pub const FILE: u8 = 1 << 0;
/// The entry is a directory: reads of the files directly inside it are
/// watched.
pub const CHILDREN: u8 = 1 << 1;

/// Bits of the `READ_WATCH_STATE` word.
pub const GENERATION: u64 = 1 << 0;
/// The generation in force watches something (else nothing is looked up).
pub const ACTIVE: u64 = 1 << 1;
/// The generation in force has directory entries: the opened file's
/// parent is looked up too.
pub const DIRS: u64 = 1 << 2;

/// Entries the kernel map holds, for both generations together (a reload
/// writes the new set before the old one is removed).
pub const MAX_ENTRIES: u32 = 65536;
