//! One BPF-LSM program per hook. Each finds the object the hook is about,
//! asks [`super::decide`], and otherwise returns the previous verdict
//! unchanged. Argument positions are the hooks' (see
//! include/linux/lsm_hook_defs.h); the previous verdict is the argument
//! after the last one, and path_rename's count differs between kernels, so
//! the agent loads the variant that matches.

use aya_ebpf::macros::lsm;
use aya_ebpf::programs::LsmContext;
use guardrail_common::enforce::op;

use super::{
    decide, is_canary, map_access_refused, mount_would_change_a_rule, move_would_change_a_rule,
    pivot_would_change_a_rule, read, umount_would_change_a_rule,
};
use crate::off;
use crate::path::FMODE_WRITE;

/// The previous LSM's verdict, or ours.
#[inline(always)]
fn verdict(previous: i32, ours: i32) -> i32 {
    if previous != 0 {
        previous
    } else {
        ours
    }
}

/// (vfsmount, dentry) of a `struct path *`.
#[inline(always)]
fn path_parts(path: u64) -> (u64, u64) {
    unsafe {
        (
            read(path, off!(path_mnt)).unwrap_or(0),
            read(path, off!(path_dentry)).unwrap_or(0),
        )
    }
}

/// The mount of a directory path, for a dentry inside it.
#[inline(always)]
fn mnt_of(dir_path: u64) -> u64 {
    path_parts(dir_path).0
}

#[lsm(hook = "file_open")]
pub fn guardrail_file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let file: u64 = ctx.arg(0);
    let mode: u32 = unsafe { read(file, off!(file_f_mode)) }.unwrap_or(0);
    let (mnt, dentry) = path_parts(file + off!(file_f_path) as u64);
    if mode & FMODE_WRITE != 0 && is_canary(dentry) {
        return verdict(previous, -1);
    }
    let what = if mode & FMODE_WRITE != 0 {
        op::OPEN_WRITE
    } else {
        op::OPEN_READ
    };
    let ours = decide(what, mnt, dentry, false);
    if ours != 0 && previous == 0 && what == op::OPEN_READ {
        crate::reads::note_refused(mnt, dentry);
    }
    verdict(previous, ours)
}

#[lsm(hook = "bprm_check_security")]
pub fn guardrail_bprm_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let bprm: u64 = ctx.arg(0);
    let file: u64 = unsafe { read(bprm, off!(bprm_file)) }.unwrap_or(0);
    if file == 0 {
        return previous;
    }
    let (mnt, dentry) = path_parts(file + off!(file_f_path) as u64);
    verdict(previous, decide(op::EXEC, mnt, dentry, false))
}

#[lsm(hook = "path_unlink")]
pub fn guardrail_path_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let dir: u64 = ctx.arg(0);
    let dentry: u64 = ctx.arg(1);
    verdict(previous, decide(op::UNLINK, mnt_of(dir), dentry, false))
}

#[lsm(hook = "path_rmdir")]
pub fn guardrail_path_rmdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let dir: u64 = ctx.arg(0);
    let dentry: u64 = ctx.arg(1);
    verdict(previous, decide(op::RMDIR, mnt_of(dir), dentry, false))
}

#[lsm(hook = "path_mknod")]
pub fn guardrail_path_mknod(ctx: LsmContext) -> i32 {
    // Also called for open(O_CREAT) of a new file (may_o_create).
    let previous: i32 = ctx.arg(4);
    let dir: u64 = ctx.arg(0);
    let dentry: u64 = ctx.arg(1);
    verdict(
        previous,
        decide(op::CREATE | op::MKNOD, mnt_of(dir), dentry, false),
    )
}

#[lsm(hook = "path_mkdir")]
pub fn guardrail_path_mkdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let dir: u64 = ctx.arg(0);
    let dentry: u64 = ctx.arg(1);
    verdict(
        previous,
        decide(op::MKDIR | op::CREATE, mnt_of(dir), dentry, false),
    )
}

#[lsm(hook = "path_symlink")]
pub fn guardrail_path_symlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let dir: u64 = ctx.arg(0);
    let dentry: u64 = ctx.arg(1);
    verdict(
        previous,
        decide(op::SYMLINK | op::CREATE, mnt_of(dir), dentry, false),
    )
}

#[lsm(hook = "path_link")]
pub fn guardrail_path_link(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let old_dentry: u64 = ctx.arg(0);
    let new_dir: u64 = ctx.arg(1);
    let new_dentry: u64 = ctx.arg(2);
    // A new name for a protected file is a way around rules on its path;
    // a new name inside a protected directory is a creation there.
    let mnt = mnt_of(new_dir);
    let r = decide(op::LINK, 0, old_dentry, false);
    if r != 0 {
        return verdict(previous, r);
    }
    verdict(
        previous,
        decide(op::LINK | op::CREATE, mnt, new_dentry, false),
    )
}

/// path_rename with the previous verdict in argument `previous`.
#[inline(always)]
fn path_rename(ctx: &LsmContext, previous: i32) -> i32 {
    let old_dir: u64 = ctx.arg(0);
    let old_dentry: u64 = ctx.arg(1);
    let new_dir: u64 = ctx.arg(2);
    let new_dentry: u64 = ctx.arg(3);
    // Path integrity, whatever operations the rules name: moving a
    // protected object or a directory above one away (then re-creating
    // the path), or renaming something over them, changes what the rule's
    // path means.
    let r = move_would_change_a_rule(old_dentry);
    if r != 0 {
        return verdict(previous, r);
    }
    let r = move_would_change_a_rule(new_dentry);
    if r != 0 {
        return verdict(previous, r);
    }
    let r = decide(op::RENAME, mnt_of(old_dir), old_dentry, false);
    if r != 0 {
        return verdict(previous, r);
    }
    // Both ends: moving something over (or into) a protected place.
    verdict(
        previous,
        decide(op::RENAME, mnt_of(new_dir), new_dentry, false),
    )
}

/// Linux before 5.19: four arguments.
#[lsm(hook = "path_rename")]
pub fn guardrail_path_rename4(ctx: LsmContext) -> i32 {
    path_rename(&ctx, ctx.arg(4))
}

/// Linux 5.19 and later added `flags`: five arguments. The agent loads the
/// program that matches the running kernel's prototype (from BTF); the
/// verifier refuses a computed offset into the context.
#[lsm(hook = "path_rename")]
pub fn guardrail_path_rename5(ctx: LsmContext) -> i32 {
    path_rename(&ctx, ctx.arg(5))
}

const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
const MS_MOVE: u64 = 8192;
const MS_UNBINDABLE: u64 = 1 << 17;
const MS_PRIVATE: u64 = 1 << 18;
const MS_SLAVE: u64 = 1 << 19;
const MS_SHARED: u64 = 1 << 20;

/// Mounts over a protected object, a directory above one or anything in
/// a protected subtree, in any mount namespace: `mount --bind`, a new
/// file system, `MS_MOVE`. Remounts and propagation changes leave what a
/// path resolves to as it is (systemd remounts / at boot and shutdown).
#[lsm(hook = "sb_mount")]
pub fn guardrail_sb_mount(ctx: LsmContext) -> i32 {
    // (dev_name, path, type, flags, data)
    let previous: i32 = ctx.arg(5);
    let flags: u64 = ctx.arg(3);
    let keeps_paths = flags & MS_REMOUNT != 0
        || (flags & (MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE) != 0
            && flags & (MS_BIND | MS_MOVE) == 0);
    if keeps_paths {
        return previous;
    }
    let (mnt, dentry) = path_parts(ctx.arg(1));
    verdict(previous, mount_would_change_a_rule(mnt, dentry))
}

/// The new mount API's way to attach a mount (fsmount + move_mount).
#[lsm(hook = "move_mount")]
pub fn guardrail_move_mount(ctx: LsmContext) -> i32 {
    // (from_path, to_path)
    let previous: i32 = ctx.arg(2);
    let (mnt, dentry) = path_parts(ctx.arg(1));
    verdict(previous, mount_would_change_a_rule(mnt, dentry))
}

/// Unmounting what the rules' paths run through, in the host's mount
/// namespace (see [`umount_would_change_a_rule`]).
#[lsm(hook = "sb_umount")]
pub fn guardrail_sb_umount(ctx: LsmContext) -> i32 {
    // (mnt, flags)
    let previous: i32 = ctx.arg(2);
    verdict(previous, umount_would_change_a_rule(ctx.arg(0)))
}

/// A file descriptor for a BPF map (by id, from a pin, or at creation):
/// guardrail's own are writable by guardrail's programs only.
#[lsm(hook = "bpf_map")]
pub fn guardrail_bpf_map(ctx: LsmContext) -> i32 {
    // (map, fmode)
    let previous: i32 = ctx.arg(2);
    let fmode: u32 = ctx.arg(1);
    verdict(previous, map_access_refused(ctx.arg(0), fmode & FMODE_WRITE != 0))
}

/// pivot_root(2): see [`pivot_would_change_a_rule`].
#[lsm(hook = "sb_pivotroot")]
pub fn guardrail_sb_pivotroot(ctx: LsmContext) -> i32 {
    // (old_path = put_old, new_path = new_root)
    let previous: i32 = ctx.arg(2);
    let (old_mnt, old_dentry) = path_parts(ctx.arg(0));
    let (new_mnt, new_dentry) = path_parts(ctx.arg(1));
    verdict(
        previous,
        pivot_would_change_a_rule(new_mnt, new_dentry, old_mnt, old_dentry),
    )
}

#[lsm(hook = "path_truncate")]
pub fn guardrail_path_truncate(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let (mnt, dentry) = path_parts(ctx.arg(0));
    verdict(previous, decide(op::TRUNCATE, mnt, dentry, false))
}

#[lsm(hook = "path_chmod")]
pub fn guardrail_path_chmod(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let (mnt, dentry) = path_parts(ctx.arg(0));
    verdict(previous, decide(op::CHMOD, mnt, dentry, false))
}

#[lsm(hook = "path_chown")]
pub fn guardrail_path_chown(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let (mnt, dentry) = path_parts(ctx.arg(0));
    verdict(previous, decide(op::CHOWN, mnt, dentry, false))
}

/// Whether new credentials make a task that was not root, root.
#[inline(always)]
fn becomes_root(new: u64, old: u64) -> bool {
    let id = |cred: u64, off: u32| unsafe { read::<u32>(cred, off) }.unwrap_or(u32::MAX);
    let was = id(old, off!(cred_uid)) == 0 || id(old, off!(cred_euid)) == 0;
    let is = id(new, off!(cred_uid)) == 0 || id(new, off!(cred_euid)) == 0;
    is && !was
}

#[lsm(hook = "task_fix_setuid")]
pub fn guardrail_task_fix_setuid(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let new: u64 = ctx.arg(0);
    let old: u64 = ctx.arg(1);
    verdict(previous, decide(op::SETUID, 0, 0, becomes_root(new, old)))
}

#[lsm(hook = "task_fix_setgid")]
pub fn guardrail_task_fix_setgid(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    verdict(previous, decide(op::SETGID, 0, 0, false))
}

#[lsm(hook = "capset")]
pub fn guardrail_capset(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(5);
    verdict(previous, decide(op::CAPSET, 0, 0, false))
}

/// attr->ia_valid bits for an owner change.
const ATTR_UID: u32 = 1 << 1;
const ATTR_GID: u32 = 1 << 2;

/// Owner changes through inode_setattr, for kernels whose BPF trampolines
/// cannot take path_chown's by-value kuid_t/kgid_t arguments (5.10). No
/// mount is known here, so subtree walks stay within the filesystem.
#[inline(always)]
fn inode_setattr(dentry: u64, attr: u64, previous: i32) -> i32 {
    let valid: u32 = unsafe { read(attr, off!(iattr_valid)) }.unwrap_or(0);
    if valid & (ATTR_UID | ATTR_GID) == 0 {
        return previous;
    }
    verdict(previous, decide(op::CHOWN, 0, dentry, false))
}

/// Linux before 6.3: (dentry, attr).
#[lsm(hook = "inode_setattr")]
pub fn guardrail_inode_setattr2(ctx: LsmContext) -> i32 {
    inode_setattr(ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

/// Linux 6.3 and later: (idmap, dentry, attr).
#[lsm(hook = "inode_setattr")]
pub fn guardrail_inode_setattr3(ctx: LsmContext) -> i32 {
    inode_setattr(ctx.arg(1), ctx.arg(2), ctx.arg(3))
}

/// Extended attributes, file capabilities (`security.capability`)
/// among them. No mount is known here, so subtree walks stay within the
/// filesystem (as for inode_setattr).
#[inline(always)]
fn inode_setxattr(dentry: u64, previous: i32) -> i32 {
    verdict(previous, decide(op::SETXATTR, 0, dentry, false))
}

/// Linux before 5.12: (dentry, name, value, size, flags).
#[lsm(hook = "inode_setxattr")]
pub fn guardrail_inode_setxattr5(ctx: LsmContext) -> i32 {
    inode_setxattr(ctx.arg(0), ctx.arg(5))
}

/// Linux 5.12 and later: (mnt_userns or idmap, dentry, name, value, size,
/// flags).
#[lsm(hook = "inode_setxattr")]
pub fn guardrail_inode_setxattr6(ctx: LsmContext) -> i32 {
    inode_setxattr(ctx.arg(1), ctx.arg(6))
}

/// Self-protection: another process may not signal or trace the agent.
/// The agent itself and init (pid 1, which stops services) may; signal 0
/// (an existence check) always may.
#[inline(always)]
fn protects(target_task: u64) -> bool {
    let agent = crate::global(&crate::AGENT_TGID);
    if crate::global(&crate::SELF_PROTECT) == 0 || agent == 0 {
        return false;
    }
    let target: u32 = unsafe { read(target_task, off!(task_tgid)) }.unwrap_or(0);
    let me = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    target == agent && me != agent && me != 1
}

const SIGHUP: i32 = 1;

#[lsm(hook = "task_kill")]
pub fn guardrail_task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    let sig: i32 = ctx.arg(2);
    // SIGHUP only makes the agent re-read a configuration that self-
    // protection keeps unchanged; allowing it lets `systemctl reload`
    // (ExecReload runs kill, not init) work.
    if sig == 0 || sig == SIGHUP || !protects(ctx.arg(0)) {
        return previous;
    }
    verdict(previous, -1)
}

#[lsm(hook = "ptrace_access_check")]
pub fn guardrail_ptrace_access_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if !protects(ctx.arg(0)) {
        return previous;
    }
    verdict(previous, -1)
}
