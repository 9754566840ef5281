//! Turning a kernel `struct path` (the cwd, a dirfd, an fd) into a string,
//! so that relative and fd-based operations are reported with absolute
//! paths even when the process is gone before the agent reads the record.
//!
//! The walk follows `dentry->d_parent` up to the mount root, then crosses to
//! the parent mount (`struct mount`) until the root of the mount tree: the
//! path as seen from the host's root, also for processes in a chroot or
//! mount namespace.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated as gen};
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use guardrail_common::PATH_MAX;

use crate::{off, task};

/// Path components plus mount crossings walked before giving up.
const MAX_DEPTH: u32 = 40;
const NAME_MAX: usize = 255;
pub const AT_FDCWD: i32 = -100;

#[repr(C)]
pub struct PathBuf {
    /// Start of the path assembled so far. Kept in map memory, not a
    /// register, on purpose: the verifier then sees an unknown but bounded
    /// value at each step and can prune the walk's branches, instead of
    /// tracking every possible position through every iteration.
    pos: u64,
    bytes: [u8; PATH_MAX + NAME_MAX + 1],
}

/// Where paths are assembled, back to front.
#[map]
static PATHBUF: PerCpuArray<PathBuf> = PerCpuArray::with_max_entries(1, 0);

/// fmode_t bits (`struct file.f_mode`): opened for reading, for
/// writing; an `O_PATH` handle, which reads nothing.
pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;
pub const FMODE_PATH: u32 = 0x4000;

/// A `T` at `offset` in the kernel object at `base`.
#[inline(always)]
pub unsafe fn read<T>(base: u64, offset: u32) -> Option<T> {
    bpf_probe_read_kernel((base + offset as u64) as *const T).ok()
}

/// The (vfsmount, dentry) of the `struct path` at `path`.
#[inline(always)]
unsafe fn read_path(path: u64) -> Option<(u64, u64)> {
    let (mnt, dentry) = (off!(path_mnt), off!(path_dentry));
    if dentry == mnt + 8 {
        // Neighbours in `struct path` on every kernel: one helper call.
        let both: [u64; 2] = read(path, mnt)?;
        return Some((both[0], both[1]));
    }
    Some((read(path, mnt)?, read(path, dentry)?))
}

/// What a mount (`vfsmnt`) says of itself.
struct MountView {
    /// Its root dentry.
    root: u64,
    /// Its `struct mount`.
    mount: u64,
    /// The `struct mount` it is attached to: itself for a tree's root.
    parent: u64,
    /// The dentry of `parent` it is attached at.
    mountpoint: u64,
}

#[inline(always)]
unsafe fn read_mount(vfsmnt: u64) -> Option<MountView> {
    let mount = vfsmnt - off!(mount_mnt) as u64;
    let (parent_at, point_at) = (off!(mount_parent), off!(mount_mountpoint));
    let root_at = off!(mount_mnt) + off!(vfsmount_root);
    if point_at == parent_at + 8 && root_at == point_at + 8 {
        // Neighbours in `struct mount` (`mnt_parent`, `mnt_mountpoint`,
        // then the `vfsmount` that starts with its root) on every kernel:
        // one helper call instead of three.
        let m: [u64; 3] = read(mount, parent_at)?;
        return Some(MountView {
            root: m[2],
            mount,
            parent: m[0],
            mountpoint: m[1],
        });
    }
    Some(MountView {
        root: read(vfsmnt, off!(vfsmount_root))?,
        mount,
        parent: read(mount, parent_at)?,
        mountpoint: read(mount, point_at)?,
    })
}

/// A walked path: `len` bytes in the per-CPU buffer starting at `start`.
pub struct Walked {
    pub start: *const u8,
    pub len: usize,
    pub complete: bool,
}

/// The `struct path` the current task's cwd is, as (vfsmount, dentry).
#[inline(always)]
fn cwd() -> Option<(u64, u64)> {
    unsafe {
        let fs: u64 = task::field(task::current(), off!(task_fs)).ok()?;
        let pwd = fs + off!(fs_pwd) as u64;
        read_path(pwd)
    }
}

/// The current task's root (`fs->root`) as (vfsmount, dentry), when it
/// is not the root of its mount tree: a chroot. `None` for a process at
/// the root (and when the offsets are unknown).
#[inline(always)]
pub fn changed_root() -> Option<(u64, u64)> {
    if off!(task_fs) == 0 || off!(fs_root) == 0 {
        return None;
    }
    unsafe {
        let fs: u64 = task::field(task::current(), off!(task_fs)).ok()?;
        let (root_mnt, root_dentry) = if task::typed() {
            (
                task::field(fs, off!(fs_root) + off!(path_mnt)).ok()?,
                task::field(fs, off!(fs_root) + off!(path_dentry)).ok()?,
            )
        } else {
            read_path(fs + off!(fs_root) as u64)?
        };
        // The root of the mount tree is reached by crossing mount roots
        // only (the host's / is itself mounted on the initial rootfs);
        // any directory that is not a mount root on the way is a chroot.
        // Asked on every record: one helper read per mount crossed.
        let (mut mnt, mut dentry) = (root_mnt, root_dentry);
        for _ in 0..8 {
            let m = read_mount(mnt)?;
            if dentry != m.root {
                return Some((root_mnt, root_dentry));
            }
            if m.parent == m.mount {
                return None;
            }
            dentry = m.mountpoint;
            mnt = m.parent + off!(mount_mnt) as u64;
        }
        Some((root_mnt, root_dentry))
    }
}

/// The `struct file` open file `fd` of the current task is.
#[inline(always)]
pub fn fd_file(fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    unsafe {
        let files: u64 = task::field(task::current(), off!(task_files)).ok()?;
        let fdt: u64 = task::field(files, off!(files_fdt)).ok()?;
        if task::typed() {
            // The slot is a pointer in an array the verifier does not
            // type: read by the helper.
            let file: u64 = read(typed_slot(fdt, fd)?, 0)?;
            return (file != 0).then_some(file);
        }
        let (max_at, array_at) = (off!(fdt_max_fds), off!(fdt_fd));
        let (max, array) = if max_at == 0 && array_at == 8 {
            // `struct fdtable` starts with both on every kernel: one
            // helper call.
            let head: [u64; 2] = read(fdt, 0)?;
            (head[0] as u32, head[1])
        } else {
            (read::<u32>(fdt, max_at)?, read::<u64>(fdt, array_at)?)
        };
        if fd as u32 >= max {
            return None;
        }
        let file: u64 = read(array, fd as u32 * 8)?;
        (file != 0).then_some(file)
    }
}

/// Like [`fd_file`], as a pointer the verifier types (a `struct file`,
/// read-only), whose fields and whose objects' fields are plain loads;
/// None unless the kernel has the cast for it (`FILE_CAST_BTF_ID`, which
/// the agent sets only with `TASK_BTF`).
#[inline(always)]
pub fn fd_file_typed(fd: i32) -> Option<u64> {
    let cast_id = crate::global(&crate::FILE_CAST_BTF_ID);
    if cast_id == 0 || fd < 0 {
        return None;
    }
    unsafe {
        let files: u64 = task::field(task::current(), off!(task_files)).ok()?;
        let fdt: u64 = task::field(files, off!(files_fdt)).ok()?;
        // The slot is a `struct file *` in an array the verifier does not
        // type: cast it as the member of a struct it does.
        let at = crate::global(&crate::FILE_CAST_OFFSET);
        let holder = crate::kfunc::rdonly_cast(typed_slot(fdt, fd)? - at as u64, cast_id);
        let file: u64 = task::field(holder, at).ok()?;
        (file != 0).then_some(file)
    }
}

/// The address of `fd`'s slot in the typed fd table `fdt` (plain loads,
/// see `task`); None past its end.
#[inline(always)]
unsafe fn typed_slot(fdt: u64, fd: i32) -> Option<u64> {
    let max: u32 = task::field(fdt, off!(fdt_max_fds)).ok()?;
    if fd as u32 >= max {
        return None;
    }
    let array: u64 = task::field(fdt, off!(fdt_fd)).ok()?;
    Some(array + fd as u64 * 8)
}

/// The `struct path` open file `fd` of the current task refers to.
#[inline(always)]
pub fn fd_path(fd: i32) -> Option<(u64, u64)> {
    if off!(task_fs) == 0 {
        // The task's offsets are unknown on this kernel.
        return None;
    }
    let file = fd_file(fd)?;
    unsafe {
        let path = file + off!(file_f_path) as u64;
        read_path(path)
    }
}

/// The directory a `*at` call's relative path is relative to, as
/// (vfsmount, dentry): `dirfd`, or the cwd for AT_FDCWD (which the
/// non-`at` calls pass too).
#[inline(always)]
pub fn dir_at(dirfd: i32) -> Option<(u64, u64)> {
    if off!(task_fs) == 0 {
        return None;
    }
    if dirfd == AT_FDCWD {
        cwd()
    } else {
        fd_path(dirfd)
    }
}

/// [`dir_at`], walked.
#[inline(always)]
pub fn dir_of(dirfd: i32) -> Option<Walked> {
    let (mnt, dentry) = dir_at(dirfd)?;
    walk(mnt, dentry)
}

/// The current task's executable (`mm->exe_file`).
#[inline(always)]
pub fn of_exe() -> Option<Walked> {
    if off!(task_fs) == 0 {
        return None;
    }
    let file = task::exe_file()?;
    let (mnt, dentry) = unsafe { read_path(file + off!(file_f_path) as u64)? };
    walk(mnt, dentry)
}

/// (device, inode) of `dentry`.
#[inline(always)]
pub fn object_of(dentry: u64) -> Option<(u32, u64)> {
    if off!(dentry_sb) == 0 {
        return None;
    }
    unsafe {
        let sb: u64 = read(dentry, off!(dentry_sb))?;
        let inode: u64 = read(dentry, off!(dentry_inode))?;
        if inode == 0 {
            return None;
        }
        Some((read(sb, off!(sb_dev))?, read(inode, off!(inode_ino))?))
    }
}

/// What a `struct path` the kernel handed a hook refers to.
#[inline(always)]
pub fn of_path(vfsmnt: u64, dentry: u64) -> Option<Walked> {
    if off!(task_fs) == 0 {
        return None;
    }
    walk(vfsmnt, dentry)
}

/// The path of (`vfsmnt`, `dentry`), walked into the per-CPU buffer.
#[inline(always)]
fn walk(vfsmnt: u64, dentry: u64) -> Option<Walked> {
    let packed = walk_packed(vfsmnt, dentry);
    if packed < 0 {
        return None;
    }
    let buf = PATHBUF.get_ptr_mut(0)?;
    let bytes = unsafe { core::ptr::addr_of_mut!((*buf).bytes).cast::<u8>() };
    let pos = packed as usize & (PATH_MAX - 1);
    Some(Walked {
        start: unsafe { bytes.add(pos) },
        len: PATH_MAX - 1 - pos,
        complete: packed & WALK_COMPLETE != 0,
    })
}

/// Set in [`walk_packed`]'s result when the walk reached the root.
const WALK_COMPLETE: i64 = 1 << 32;

/// The walk itself: a *global* function (exported, so its BTF linkage is
/// global), which the kernel's verifier checks once per program with
/// unknown arguments instead of once per call site and state (about
/// 13,000 instructions each time: the syscall exit's program went from
/// 150,591 to 47,421). A global function may only take and return plain
/// numbers, hence the packed result: the path's start in the per-CPU
/// buffer, with [`WALK_COMPLETE`]; negative when nothing was walked. (A
/// Rust `Option` here would also put a type into the program's BTF that
/// the kernel rejects.)
#[no_mangle]
#[inline(never)]
pub extern "C" fn walk_packed(vfsmnt: u64, dentry: u64) -> i64 {
    match walk_into(vfsmnt, dentry) {
        Some((pos, true)) => pos as i64 | WALK_COMPLETE,
        Some((pos, false)) => pos as i64,
        None => -1,
    }
}

/// [`walk_packed`]'s body: the path's start in the buffer, and whether
/// the walk reached the root.
#[inline(always)]
fn walk_into(vfsmnt: u64, mut dentry: u64) -> Option<(usize, bool)> {
    let buf = PATHBUF.get_ptr_mut(0)?;
    let pos_slot = unsafe { core::ptr::addr_of_mut!((*buf).pos) };
    let bytes = unsafe { core::ptr::addr_of_mut!((*buf).bytes).cast::<u8>() };
    let set_pos = |p: usize| unsafe { core::ptr::write_volatile(pos_slot, p as u64) };
    let get_pos = || unsafe { core::ptr::read_volatile(pos_slot) as usize & (PATH_MAX - 1) };
    set_pos(PATH_MAX - 1);
    // The path ends at bytes[PATH_MAX - 1], which is never written: the
    // walk writes "/name" pieces in front of the current start.
    let mut complete = false;
    // `d_parent` and `d_name` (hash, length, name) are neighbours in
    // `struct dentry` on every kernel: one helper call per component
    // reads all three instead of three calls.
    let (parent_at, name_at) = (off!(dentry_parent), off!(dentry_name));
    let together = name_at == parent_at + 8 && off!(qstr_len) == 4 && off!(qstr_name) == 8;
    // A mount is read once, not once per component.
    let mut m = unsafe { read_mount(vfsmnt)? };
    for _ in 0..MAX_DEPTH {
        let (parent, len, ptr) = if together {
            let d: [u64; 3] = unsafe { read(dentry, parent_at)? };
            (d[0], (d[1] >> 32) as usize & NAME_MAX, d[2])
        } else {
            let name = dentry + name_at as u64;
            unsafe {
                (
                    read::<u64>(dentry, parent_at)?,
                    read::<u32>(name, off!(qstr_len))? as usize & NAME_MAX,
                    read::<u64>(name, off!(qstr_name))?,
                )
            }
        };
        // Its own parent but no mount root: a pseudo file (memfd, the
        // files behind anonymous mappings) or a detached tree. Its own name
        // is all the path there is ("/memfd:payload"), as /proc shows it.
        let detached = dentry == parent && dentry != m.root;
        if dentry == m.root {
            if m.parent == m.mount {
                complete = true;
                break;
            }
            dentry = m.mountpoint;
            m = unsafe { read_mount(m.parent + off!(mount_mnt) as u64)? };
            continue;
        }
        let pos = get_pos();
        if len + 1 > pos {
            break;
        }
        let start = (pos - len) & (PATH_MAX - 1);
        let rc = unsafe {
            gen::bpf_probe_read_kernel(bytes.add(start).cast(), len as u32, ptr as *const _)
        };
        if rc < 0 {
            break;
        }
        let slash = (start - 1) & (PATH_MAX - 1);
        unsafe { *bytes.add(slash) = b'/' };
        set_pos(slash);
        if detached {
            complete = true;
            break;
        }
        dentry = parent;
    }
    let mut pos = get_pos();
    if pos == PATH_MAX - 1 {
        pos -= 1;
        unsafe { *bytes.add(pos) = b'/' };
    }
    Some((pos, complete))
}
