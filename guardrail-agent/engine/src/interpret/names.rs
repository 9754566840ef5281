//! Names for the numbers in records: errno values, open flags, modes,
//! capabilities and flag sets.

use std::borrow::Cow;

pub fn errno_name(errno: i64) -> crate::event::Name {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        31 => "EMLINK",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
        122 => "EDQUOT",
        _ => return format!("E{errno}").into(),
    };
    name.into()
}

pub fn open_flags(f: u64) -> Vec<String> {
    let mut v = Vec::new();
    v.push(match f & 3 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    });
    for (bit, name) in [
        (0o100, "create"),
        (0o200, "exclusive"),
        (0o1000, "truncate"),
        (0o2000, "append"),
        (0o200000, "directory"),
        (0o400000, "nofollow"),
        (0o2000000, "cloexec"),
        (0o10000000, "path"),
    ] {
        if f & bit != 0 && !(name == "directory" && f & 0o20000000 != 0) {
            v.push(name);
        }
    }
    // O_TMPFILE is __O_TMPFILE | O_DIRECTORY.
    if f & 0o20000000 != 0 {
        v.push("tmpfile");
    }
    v.into_iter().map(String::from).collect()
}

/// Whether decoded open flags may change the file (what `file.write`
/// rules match).
pub fn is_write_flags(flags: &[String]) -> bool {
    flags.iter().any(|f| is_write_flag(f))
}

/// One open flag that makes an open a write (see [`is_write_flags`]).
pub fn is_write_flag(flag: &str) -> bool {
    matches!(
        flag,
        "write" | "read_write" | "create" | "truncate" | "append" | "tmpfile"
    )
}

/// Every permission mode's four octal digits, made at compile time.
static OCTAL: [[u8; 4]; 4096] = {
    let mut table = [[0u8; 4]; 4096];
    let mut mode = 0;
    while mode < 4096 {
        let mut n = 0;
        while n < 4 {
            table[mode][3 - n] = b'0' + ((mode >> (3 * n)) & 7) as u8;
            n += 1;
        }
        mode += 1;
    }
    table
};

/// The permission bits of `mode` as four octal digits (`0644`): borrowed
/// from a table, so an event's mode costs no allocation (it was a fifth
/// of them under a chmod storm) and no formatter.
pub fn octal(mode: u64) -> Cow<'static, str> {
    let digits = &OCTAL[(mode & 0o7777) as usize];
    Cow::Borrowed(std::str::from_utf8(digits).expect("octal digits"))
}

pub fn mode_bits(mode: u64) -> Vec<String> {
    let mut v = Vec::new();
    for (bit, name) in [
        (0o4000, "setuid"),
        (0o2000, "setgid"),
        (0o1000, "sticky"),
        (0o0002, "world_writable"),
    ] {
        if mode & bit != 0 {
            v.push(name.to_string());
        }
    }
    v
}

pub const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

pub fn cap_names(set: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| set & (1u64 << bit) != 0)
        .map(|bit| match CAP_NAMES.get(bit) {
            Some(name) => format!("cap_{name}"),
            None => format!("cap_{bit}"),
        })
        .collect()
}

pub(super) fn flag_names(value: u64, names: &[(u64, &str)]) -> Vec<String> {
    names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}
