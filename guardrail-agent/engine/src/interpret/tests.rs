use super::*;
use crate::interpret::paths::inside_root;
use crate::interpret::paths::own_proc;
use std::collections::HashMap;

#[derive(Default)]
struct Table {
    cwd: HashMap<u32, String>,
    fds: HashMap<(u32, i32), String>,
    exes: HashMap<u32, String>,
    host_ns: Option<u64>,
}

impl ProcessView for Table {
    fn host_mount_namespace(&mut self) -> Option<u64> {
        self.host_ns
    }
    fn dir_of(&mut self, pid: u32, dirfd: Option<i32>) -> Option<String> {
        match dirfd {
            None => self.cwd.get(&pid).cloned(),
            Some(fd) => self.fds.get(&(pid, fd)).cloned(),
        }
    }
    fn fd_path(&mut self, pid: u32, fd: i32) -> Option<String> {
        self.fds.get(&(pid, fd)).cloned()
    }
    fn exe(&mut self, pid: u32) -> Option<std::sync::Arc<str>> {
        self.exes.get(&pid).map(|e| e.as_str().into())
    }
    fn exec_happened(&mut self, pid: u32, exe: &str) {
        self.exes.insert(pid, exe.into());
    }
}

fn rec(nr: u32, args: [u64; 6], ret: i64, s0: &[u8], s1: &[u8]) -> RawRecord {
    RawRecord {
        dir0: vec![],
        dir1: vec![],
        header: EventHeader {
            syscall: nr,
            args,
            ret,
            pid: 10,
            tid: 10,
            ..Default::default()
        },
        str0: s0.to_vec(),
        str1: s1.to_vec(),
    }
}

fn table() -> Table {
    let mut t = Table::default();
    t.cwd.insert(10, "/home/u".into());
    t.fds.insert((10, 5), "/srv/data".into());
    t
}

#[test]
fn a_directory_is_named_from_inside_its_chroot() {
    assert_eq!(inside_root("/srv/jail", "/srv/jail").as_deref(), Some("/"));
    assert_eq!(
        inside_root("/srv/jail/", "/srv/jail/sub").as_deref(),
        Some("/sub")
    );
    // A sibling sharing the prefix, and a cwd left outside the root.
    assert_eq!(inside_root("/srv/jail", "/srv/jailbreak"), None);
    assert_eq!(inside_root("/srv/jail", "/tmp"), None);
}

#[test]
fn relative_openat_resolves_against_dirfd() {
    let r = rec(sc::OPENAT, [5, 0, 0o1101, 0o640, 0, 0], 3, b"out.txt", b"");
    let Some(Body::File { file, result, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(file.path.as_deref(), Some("/srv/data/out.txt"));
    assert_eq!(file.raw_path.as_deref(), Some("out.txt"));
    assert_eq!(file.flags, ["write", "create", "truncate"]);
    assert_eq!(file.mode.as_deref(), Some("0640"));
    assert!(result.ok);
}

#[test]
fn cwd_relative_rename_resolves_both_paths() {
    let fdcwd = AT_FDCWD as u32 as u64 | 0xffff_ffff_0000_0000;
    let r = rec(sc::RENAMEAT, [fdcwd, 0, fdcwd, 0, 0, 0], 0, b"a", b"./b");
    let Some(Body::File { file, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(file.op, "rename");
    assert_eq!(file.path.as_deref(), Some("/home/u/a"));
    assert_eq!(file.new_path.as_deref(), Some("/home/u/b"));
}

#[test]
fn kernel_resolved_directory_wins_over_procfs() {
    let mut r = rec(
        sc::UNLINKAT,
        [AT_FDCWD as u64, 0, 0, 0, 0, 0],
        0,
        b"rc",
        b"",
    );
    r.dir0 = b"/tmp/jobs".to_vec();
    // The process is gone: /proc knows nothing.
    let Some(Body::File { file, .. }) = interpret(&r, &mut Table::default()) else {
        panic!()
    };
    assert_eq!(file.path.as_deref(), Some("/tmp/jobs/rc"));
    assert!(file.resolved);
}

/// mount(2): the mount point and a bind's source named canonically,
/// the file system type and flags decoded, the caller's namespace
/// told apart from the host's and from the service manager's.
#[test]
fn a_mount_names_its_mount_point_source_type_and_namespace() {
    let mut fstype = [0u8; 16];
    fstype[..5].copy_from_slice(b"tmpfs");
    let word = |i: usize| u64::from_le_bytes(fstype[i..i + 8].try_into().unwrap());
    let mut t = table();
    t.host_ns = Some(4026531841);
    t.exes.insert(1, "/usr/lib/systemd/systemd".into());
    let r = rec(
        sc::MOUNT,
        [0, 0, word(0), 0, word(8), 4026531841],
        0,
        b"../x//prot/",
        b"none",
    );
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    assert_eq!(file.op, "mount");
    assert_eq!(file.path.as_deref(), Some("/home/x/prot"));
    let m = file.mount.unwrap();
    assert_eq!(m.fstype.as_deref(), Some("tmpfs"));
    assert_eq!(m.source.as_deref(), Some("none"));
    assert_eq!(m.namespace.as_deref(), Some("host"));
    assert!(m.changes_what_paths_mean());

    const BIND_REC: u64 = 4096 | 1 << 14;
    let r = rec(
        sc::MOUNT,
        [0, 0, 0, BIND_REC, 0, 77],
        0,
        b"/srv/b",
        b"evil/./dir",
    );
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    let m = file.mount.unwrap();
    assert_eq!(m.source.as_deref(), Some("/home/u/evil/dir"));
    assert_eq!(m.flags, ["bind", "rec"]);
    assert_eq!(m.fstype, None);
    assert_eq!(m.namespace.as_deref(), Some("private"));

    // PID 1's program in a namespace of its own: a service's sandbox.
    t.exes.insert(10, "/usr/lib/systemd/systemd".into());
    let r = rec(sc::MOUNT, [0, 0, 0, 4096, 0, 77], 0, b"/etc", b"/etc");
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    let m = file.mount.unwrap();
    assert_eq!(m.namespace.as_deref(), Some("service"));
    assert!(!m.changes_what_paths_mean());

    // A remount changes no path's meaning.
    let r = rec(sc::MOUNT, [0, 0, 0, 32 | 1, 0, 0], 0, b"/", b"");
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    let m = file.mount.unwrap();
    assert_eq!(m.flags, ["remount", "rdonly"]);
    assert_eq!(m.namespace, None);
    assert!(!m.changes_what_paths_mean());
}

#[test]
fn unmount_move_mount_and_pivot_root_name_what_they_change() {
    let mut t = table();
    let r = rec(sc::UMOUNT2, [0, 2, 0, 0, 0, 0], 0, b"mnt", b"");
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    assert_eq!(
        (file.op.as_ref(), file.path.as_deref()),
        ("umount", Some("/home/u/mnt"))
    );
    assert_eq!(file.mount.unwrap().flags, ["detach"]);

    // move_mount(fd 7, "", AT_FDCWD, "/x/prot", MOVE_MOUNT_F_EMPTY_PATH)
    let r = rec(
        sc::MOVE_MOUNT,
        [7, 0, -100i64 as u64, 0, 4, 0],
        0,
        b"/x/prot",
        b"",
    );
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    assert_eq!(
        (file.op.as_ref(), file.path.as_deref()),
        ("move_mount", Some("/x/prot"))
    );
    assert_eq!(file.mount.unwrap().source.as_deref(), Some("fd:7"));

    let r = rec(sc::PIVOT_ROOT, [0; 6], 0, b"/new", b"/new/old");
    let Some(Body::File { file, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    assert_eq!(file.op, "pivot_root");
    assert_eq!(file.new_path.as_deref(), Some("/new/old"));
}

#[test]
fn a_successful_open_names_the_file_the_kernel_opened() {
    let mut r = rec(
        sc::OPENAT,
        [5, 0, 0o2101, 0o644, 0, 0],
        3,
        b"../prot//a.conf",
        b"",
    );
    r.header.flags = flags::OBJECT0_WALKED;
    r.dir0 = b"/x/prot/a.conf".to_vec();
    let Some(Body::File { file, .. }) = interpret(&r, &mut Table::default()) else {
        panic!()
    };
    assert_eq!(file.path.as_deref(), Some("/x/prot/a.conf"));
    assert_eq!(file.raw_path.as_deref(), Some("../prot//a.conf"));
    assert_eq!(file.path_source, Some(PathSource::Kernel));
}

#[test]
fn a_path_only_the_string_names_is_completed_and_says_so() {
    let mut r = rec(
        sc::UNLINKAT,
        [AT_FDCWD as u64, 0, 0, 0, 0, 0],
        0,
        b"../prot/./a",
        b"",
    );
    r.dir0 = b"/x/sub".to_vec();
    // Nothing to resolve directories with here: the lexical form.
    let Some(Body::File { file, .. }) = interpret(&r, &mut Table::default()) else {
        panic!()
    };
    assert_eq!(file.path.as_deref(), Some("/x/prot/a"));
    assert_eq!(file.raw_path.as_deref(), Some("../prot/./a"));
    assert_eq!(file.path_source, Some(PathSource::Lexical));
}

#[test]
fn failed_unlink_names_errno_and_unresolvable_path_is_flagged() {
    let r = rec(sc::UNLINK, [0; 6], -13, b"x", b"");
    let mut t = Table::default();
    let Some(Body::File { file, result, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    assert!(!result.ok);
    assert_eq!(result.errno.as_deref(), Some("EACCES"));
    assert!(!file.resolved);
    assert_eq!(file.path.as_deref(), Some("x"));
}

#[test]
fn chmod_decodes_mode_bits() {
    let r = rec(sc::CHMOD, [0, 0o4777, 0, 0, 0, 0], 0, b"/usr/bin/x", b"");
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(perm.mode.as_deref(), Some("4777"));
    assert_eq!(perm.mode_bits, ["setuid", "world_writable"]);
}

#[test]
fn chown_minus_one_means_unchanged() {
    let r = rec(
        sc::FCHOWNAT,
        [0, 0, 1000, u32::MAX as u64, 0, 0],
        0,
        b"/f",
        b"",
    );
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(
        perm.owner,
        Some(Owner {
            uid: Some(1000),
            gid: None
        })
    );
}

#[test]
fn file_capabilities_are_decoded_only_for_security_capability() {
    use sc::xattr_caps::*;
    let mut args = [0u64; 6];
    args[3] = 20;
    args[MAGIC_ARG] = 0x0200_0001;
    args[PERMITTED_ARG] = 1 << 13 | 1 << 33;
    let r = rec(sc::SETXATTR, args, 0, b"/f", b"security.capability");
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(perm.op, "setxattr");
    assert_eq!(perm.path.as_deref(), Some("/f"));
    let x = perm.xattr.unwrap();
    assert_eq!(x.name, "security.capability");
    let caps = x.file_caps.unwrap();
    assert_eq!(caps.permitted, ["cap_net_raw", "cap_mac_admin"]);
    assert!(caps.effective && caps.inheritable.is_empty());
    // Revision 1 has one word per set; another attribute has none.
    args[MAGIC_ARG] = 0x0100_0000;
    args[3] = 12;
    let r = rec(sc::SETXATTR, args, 0, b"/f", b"security.capability");
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    let caps = perm.xattr.unwrap().file_caps.unwrap();
    assert_eq!(caps.permitted, ["cap_net_raw"]);
    assert!(!caps.effective);
    let r = rec(sc::SETXATTR, args, 0, b"/f", b"user.x");
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(perm.xattr.unwrap().file_caps, None);
}

#[test]
fn setuid_to_root_is_flagged() {
    let mut r = rec(sc::SETRESUID, [0, 0, u32::MAX as u64, 0, 0, 0], 0, b"", b"");
    r.header.old_ids = [1000, 1000, 1000, 1000];
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    let ids = perm.ids.unwrap();
    assert_eq!(ids.requested, [0, 0, -1]);
    assert!(ids.to_root);
}

#[test]
fn exec_splits_argv_and_learns_the_exe() {
    let r = rec(sc::EXECVE, [0; 6], 0, b"/bin/echo", b"echo\0hello world\0");
    let mut t = table();
    let Some(Body::Exec { exec, process, .. }) = interpret(&r, &mut t) else {
        panic!()
    };
    assert_eq!(exec.argv, ["echo", "hello world"]);
    assert_eq!(process.exe.as_deref(), Some("/bin/echo"));
    assert_eq!(t.exes.get(&10).map(String::as_str), Some("/bin/echo"));
}

#[test]
fn capset_reports_gained_caps() {
    let mut r = rec(
        sc::CAPSET,
        [0, 0, 1 << 21 | 1, 1 << 21 | 1, 0, 1],
        0,
        b"",
        b"",
    );
    r.header.flags = flags::TASK_FIELDS;
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    let caps = perm.caps.unwrap();
    assert_eq!(caps.gained.unwrap(), ["cap_sys_admin"]);
}

#[test]
fn non_utf8_bytes_are_escaped_not_replaced() {
    assert_eq!(text(b"a\xffb"), "a\\xffb");
}

#[test]
fn proc_self_names_the_process_not_the_agent() {
    assert_eq!(own_proc("/proc/self/exe", 42).unwrap(), "/proc/42/exe");
    assert_eq!(own_proc("/proc/self", 42).unwrap(), "/proc/42");
    assert_eq!(
        own_proc("/proc/thread-self/fd/3", 42).unwrap(),
        "/proc/42/task/42/fd/3"
    );
    assert_eq!(own_proc("/proc/selfish", 42), None);
    assert_eq!(own_proc("/proc/7/exe", 42), None);
    assert_eq!(own_proc("/etc/passwd", 42), None);
    let r = rec(
        sc::CHMOD,
        [0, 0o600, 0, 0, 0, 0],
        0,
        b"/proc/self/fd/3",
        b"",
    );
    let Some(Body::Perm { perm, .. }) = interpret(&r, &mut table()) else {
        panic!()
    };
    assert_eq!(perm.path.as_deref(), Some("/proc/10/fd/3"));
    assert_eq!(perm.raw_path.as_deref(), Some("/proc/self/fd/3"));
}

#[test]
fn a_backslash_is_escaped_so_no_two_names_share_a_text() {
    assert_eq!(text(b"a\\xffb"), "a\\\\xffb");
    assert_ne!(text(b"a\\xffb"), text(b"a\xffb"));
    assert_eq!(text("é\\".as_bytes()), "é\\\\");
}

#[test]
fn text_is_borrowed_only_when_it_would_be_the_same() {
    for bytes in [
        &b"/etc/passwd"[..],
        b"a\\xffb",
        b"a\xffb",
        "é\\".as_bytes(),
        "é".as_bytes(),
        b"",
    ] {
        let cow = text_cow(bytes);
        assert_eq!(cow, text(bytes));
        assert_eq!(
            matches!(cow, std::borrow::Cow::Borrowed(_)),
            std::str::from_utf8(bytes).is_ok_and(|s| !s.contains('\\')),
            "{bytes:?}"
        );
    }
}

#[test]
fn a_mode_is_four_octal_digits_of_its_permission_bits() {
    use crate::interpret::octal;
    assert_eq!(octal(0o100644), "0644");
    assert_eq!(octal(0o4755), "4755");
    assert_eq!(octal(0o7777), "7777");
    assert_eq!(octal(0), "0000");
    // The table holds every mode as the formatter writes it, type bits
    // dropped.
    for mode in 0..=0o7777u64 {
        assert_eq!(octal(mode), format!("{mode:04o}"));
        assert_eq!(octal(0o170000 | mode), format!("{mode:04o}"));
    }
}

#[test]
fn each_event_names_its_own_task_while_the_last_name_is_remembered() {
    let mut t = table();
    let named = |name: &[u8]| {
        let mut r = rec(sc::CHMOD, [0, 0o644, 0, 0, 0, 0], 0, b"/f", b"");
        r.header.comm[..name.len()].copy_from_slice(name);
        r
    };
    let names: [&[u8]; 7] = [
        b"storm",
        b"storm",
        b"bash",
        b"a\\b\xff",
        b"",
        b"storm",
        b"fifteen-bytes-x",
    ];
    for name in names {
        let body = interpret(&named(name), &mut t).unwrap();
        let comm = &body.process().unwrap().comm;
        assert_eq!(&**comm, crate::interpret::text(name), "{name:?}");
    }
}
