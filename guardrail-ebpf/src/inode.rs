//! Kernel objects as the maps know them: a dentry's (device, inode), and
//! the current task's executable. Shared by enforcement (rules on files
//! and programs) and lineage (marks set at exec of listed programs).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use guardrail_common::enforce::InodeKey;

use crate::off;

#[inline(always)]
unsafe fn read<T>(base: u64, offset: u32) -> Option<T> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).ok()
}

/// (dev, ino) of a dentry; ino 0 for a negative dentry (a name being
/// created).
#[inline(always)]
pub(crate) fn dentry_key(dentry: u64, generation: u32) -> Option<InodeKey> {
    unsafe {
        let sb: u64 = read(dentry, off!(dentry_sb))?;
        let dev: u32 = read(sb, off!(sb_dev))?;
        let inode: u64 = read(dentry, off!(dentry_inode))?;
        let ino: u64 = if inode == 0 {
            0
        } else {
            read(inode, off!(inode_ino))?
        };
        Some(InodeKey {
            dev: dev as u64,
            ino,
            generation,
            _pad: 0,
        })
    }
}

/// The current task's executable, as an exe-map key prefix.
#[inline(always)]
pub(crate) fn current_exe() -> Option<(u64, u64)> {
    let file = crate::task::exe_file()?;
    unsafe {
        let dentry: u64 = read(file + off!(file_f_path) as u64, off!(path_dentry))?;
        let key = dentry_key(dentry, 0)?;
        Some((key.dev, key.ino))
    }
}
