//! Trust only what only root can change: the configuration, the rules
//! files it includes, and every directory on their paths up to `/` must be
//! owned by root (or the agent's own user) and writable by nobody else,
//! like sudo refuses a sudoers file others can write and sshd's
//! StrictModes. The agent reloads these files when they change: a file
//! anyone can write would let anyone switch every guardrail off.
//!
//! The judgement is a pure function of what a [`StatProvider`] reports
//! (owners, modes, symlink targets), so that it is tested without the
//! disk; [`RealFs`] asks the kernel (lstat, readlink).

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use guardrail_engine::rules::users::Names;
use guardrail_engine::rules::RuleSet;

const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFDIR: u32 = 0o040_000;
const S_ISVTX: u32 = 0o1000;
const S_IWGRP: u32 = 0o020;
const S_IWOTH: u32 = 0o002;

/// Symlinks followed on one path before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// What lstat says about one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
}

impl Meta {
    fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// Where the facts come from: the disk, or a test's table.
pub trait StatProvider {
    /// Like lstat(2): a symlink is described, not followed.
    fn lstat(&self, path: &Path) -> std::io::Result<Meta>;
    fn read_link(&self, path: &Path) -> std::io::Result<PathBuf>;
    fn user_name(&self, uid: u32) -> Option<String>;
    fn group_name(&self, gid: u32) -> Option<String>;
}

/// The real file system and /etc/passwd, /etc/group.
pub struct RealFs {
    names: Names,
}

impl RealFs {
    pub fn new() -> Self {
        Self {
            names: Names::system(),
        }
    }
}

impl Default for RealFs {
    fn default() -> Self {
        Self::new()
    }
}

impl StatProvider for RealFs {
    fn lstat(&self, path: &Path) -> std::io::Result<Meta> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        Ok(Meta {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        })
    }

    fn read_link(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::read_link(path)
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        self.names.user_name(uid).map(String::from)
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        self.names.group_name(gid).map(String::from)
    }
}

/// A group whose members administer guardrail (`[agent] admin_group`):
/// rules files and directories may be writable by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminGroup {
    pub name: String,
    pub gid: u32,
}

impl AdminGroup {
    /// The configured group, looked up on this host.
    pub fn resolve(name: &str, names: &Names) -> Result<Self, UnknownGroup> {
        let gid = names.group(name).ok_or_else(|| UnknownGroup(name.into()))?;
        Ok(Self {
            name: name.into(),
            gid,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("agent.admin_group: no group named {0:?} on this host")]
pub struct UnknownGroup(pub String);

/// Who may own and write what the agent trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Trusted owners: root, and the user the agent runs as.
    pub owners: Vec<u32>,
    pub admin: Option<AdminGroup>,
}

impl Policy {
    /// The agent's own policy: root and its effective user.
    pub fn agent(admin: Option<AdminGroup>) -> Self {
        // SAFETY: no arguments.
        let euid = unsafe { libc::geteuid() };
        let mut owners = vec![0];
        if euid != 0 {
            owners.push(euid);
        }
        Self { owners, admin }
    }

    /// How the root-run agent would judge files, whoever asks (`guardrail
    /// rules check` run by a user must not trust that user's files).
    pub fn root(admin: Option<AdminGroup>) -> Self {
        Self {
            owners: vec![0],
            admin,
        }
    }
}

/// What a checked file is to the agent: it says what an attacker who can
/// change it gains, and whether the admin group may write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The configuration names the admin group, turns redaction and
    /// self-protection on or off, and says where the audit log goes: only
    /// root may change it, the admin group included.
    Configuration,
    /// An included rules file, or a directory an include pattern reads.
    Rules,
    /// The audit log's directory (warned about, not refused).
    AuditLog,
    /// A NATS credentials, nkey or token file (`[fleet]`, nats outputs).
    Credentials,
}

impl Role {
    fn stake(self) -> &'static str {
        match self {
            Role::Configuration => "change the configuration and rules the agent enforces",
            Role::Rules => "change the rules the agent enforces",
            Role::AuditLog => "remove or replace the audit log",
            Role::Credentials => {
                "replace the credentials this host uses on NATS, and with them where its rules come from"
            }
        }
    }

    fn admin_may_write(self) -> bool {
        !matches!(self, Role::Configuration)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Flaw {
    /// Writable by others. `shared`: a sticky directory like /tmp, which is
    /// meant to be world-writable: move the file instead.
    WritableByOthers { shared: bool },
    /// Writable by a group that is not the admin group.
    WritableByGroup { group: String },
    /// Owned by someone other than root (or the agent's user).
    Owner { symlink: bool },
    /// lstat or readlink failed for another reason than absence.
    Unreadable(String),
    /// More than [`MAX_LINKS`] symlinks.
    TooManyLinks,
    /// A secret readable by others than its owner's group, or by a group
    /// other than root's.
    Readable,
}

/// One reason not to trust `subject`: `path` (the subject itself, a
/// directory above it, or a symlink on the way) is open to others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// The file the agent would trust.
    pub subject: PathBuf,
    pub role: Role,
    pub owner: String,
    pub mode: u32,
    pub flaw: Flaw,
    /// The admin group, named in the fix for a group-writable rules file.
    pub admin_hint: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let facts = format!("(owner {}, mode {:04o})", self.owner, self.mode & 0o7777);
        let stake = self.role.stake();
        match &self.flaw {
            Flaw::WritableByOthers { shared: false } => write!(
                f,
                "{path} is writable by others {facts}: anyone could {stake}; fix: chmod o-w {path}"
            ),
            Flaw::WritableByOthers { shared: true } => write!(
                f,
                "{path} is writable by others {facts}: anyone could {stake} by replacing what is in it; \
                 fix: move {} into a directory only root can write, such as /etc/guardrail",
                self.subject.display()
            ),
            Flaw::WritableByGroup { group } => {
                write!(
                    f,
                    "{path} is writable by group {group} {facts}: its members could {stake}; fix: chmod g-w {path}"
                )?;
                if self.admin_hint {
                    write!(
                        f,
                        " (or, if they administer guardrail, set admin_group = \"{group}\" in [agent])"
                    )?;
                }
                Ok(())
            }
            Flaw::Owner { symlink: false } => write!(
                f,
                "{path} is not owned by root {facts}: its owner could {stake}; fix: chown root {path}"
            ),
            Flaw::Owner { symlink: true } => write!(
                f,
                "{path} is a symlink not owned by root {facts}: its owner could {stake}; fix: chown -h root {path}"
            ),
            Flaw::Unreadable(e) => write!(
                f,
                "{path}: cannot check who may change it ({e}), so {} is not trusted",
                self.subject.display()
            ),
            Flaw::Readable => write!(
                f,
                "{path} is readable by others than root {facts}: anyone who reads it can act as this host on NATS; fix: chmod 600 {path}"
            ),
            Flaw::TooManyLinks => write!(
                f,
                "{path}: more than {MAX_LINKS} symlinks on the way to {}",
                self.subject.display()
            ),
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct Untrusted(pub Vec<Problem>);

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_user(fs: &dyn StatProvider, uid: u32) -> String {
    fs.user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

fn describe_group(fs: &dyn StatProvider, gid: u32) -> String {
    fs.group_name(gid).unwrap_or_else(|| format!("gid {gid}"))
}

/// What is wrong with one path component, judged on its own.
fn judge(
    fs: &dyn StatProvider,
    policy: &Policy,
    role: Role,
    subject: &Path,
    path: &Path,
    meta: Meta,
) -> Vec<Problem> {
    let problem = |flaw, admin_hint| Problem {
        path: path.to_path_buf(),
        subject: subject.to_path_buf(),
        role,
        owner: describe_user(fs, meta.uid),
        mode: meta.mode,
        flaw,
        admin_hint,
    };
    let mut out = Vec::new();
    if !policy.owners.contains(&meta.uid) {
        out.push(problem(
            Flaw::Owner {
                symlink: meta.is_symlink(),
            },
            false,
        ));
    }
    // A symlink's own mode is always 0777 and means nothing: who may
    // change it is decided by its directory, checked on the way here.
    if meta.is_symlink() {
        return out;
    }
    let admin = policy
        .admin
        .as_ref()
        .filter(|_| role.admin_may_write())
        .is_some_and(|a| a.gid == meta.gid);
    if meta.mode & S_IWOTH != 0 {
        // Sticky only stops others from removing what they do not own;
        // like sshd, a file under /tmp is refused all the same. (Anyone
        // includes the group: one problem, not two.)
        let shared = meta.is_dir() && meta.mode & S_ISVTX != 0;
        out.push(problem(Flaw::WritableByOthers { shared }, false));
    } else if meta.mode & S_IWGRP != 0 && !admin {
        out.push(problem(
            Flaw::WritableByGroup {
                group: describe_group(fs, meta.gid),
            },
            role.admin_may_write(),
        ));
    }
    out
}

/// Check `subject` (absolute) and every directory and symlink on its path
/// from `/`. Symlinks are followed only after they passed themselves, and
/// their target is checked the same way, component by component. A
/// component that does not exist ends the walk without a problem: loading
/// the file reports its absence, and a missing include directory is an
/// empty one whose existing parents were checked.
pub fn check_path(
    fs: &dyn StatProvider,
    policy: &Policy,
    subject: &Path,
    role: Role,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let unreadable = |path: &Path, e: std::io::Error| Problem {
        path: path.to_path_buf(),
        subject: subject.to_path_buf(),
        role,
        owner: "unknown".into(),
        mode: 0,
        flaw: Flaw::Unreadable(e.to_string()),
        admin_hint: false,
    };
    let root = Path::new("/");
    match fs.lstat(root) {
        Ok(meta) => problems.extend(judge(fs, policy, role, subject, root, meta)),
        Err(e) => return vec![unreadable(root, e)],
    }
    let mut pending: VecDeque<OsString> = components(subject);
    let mut current = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // `current` has no symlinks left in it: its parent is the
            // directory `..` names.
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let meta = match fs.lstat(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                problems.push(unreadable(&next, e));
                break;
            }
        };
        problems.extend(judge(fs, policy, role, subject, &next, meta));
        if !meta.is_symlink() {
            current = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            problems.push(Problem {
                flaw: Flaw::TooManyLinks,
                ..unreadable(&next, std::io::Error::other(""))
            });
            break;
        }
        let target = match fs.read_link(&next) {
            Ok(t) => t,
            Err(e) => {
                problems.push(unreadable(&next, e));
                break;
            }
        };
        if target.is_absolute() {
            current = PathBuf::from("/");
        }
        // The target's components come before what is left of the path;
        // a relative target starts in the link's directory (`current`).
        for c in components(&target).into_iter().rev() {
            pending.push_front(c);
        }
    }
    problems
}

/// Normal and `..` components; `/` and `.` say nothing to the walk.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// A relative path as the agent would open it: from its working directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Problems common to several paths (a shared parent directory) once.
fn dedup(problems: Vec<Problem>) -> Vec<Problem> {
    let mut seen = HashSet::new();
    problems
        .into_iter()
        .filter(|p| seen.insert((p.path.clone(), p.flaw.clone())))
        .collect()
}

/// The configuration file, before it is read: the admin group it may
/// name does not apply to it.
pub fn check_config(fs: &dyn StatProvider, policy: &Policy, config: &Path) -> Vec<Problem> {
    dedup(check_path(
        fs,
        policy,
        &absolute(config),
        Role::Configuration,
    ))
}

/// A NATS credential file: no one but root may change it or the
/// directories above it (like the configuration), and no one but root may
/// read it.
pub fn check_credentials(fs: &dyn StatProvider, policy: &Policy, file: &Path) -> Vec<Problem> {
    let file = absolute(file);
    let mut problems = check_path(fs, policy, &file, Role::Credentials);
    if let Ok(meta) = fs.lstat(&file) {
        let group_reads = meta.mode & 0o040 != 0 && meta.gid != 0;
        if !meta.is_symlink() && (meta.mode & 0o004 != 0 || group_reads) {
            problems.push(Problem {
                path: file.clone(),
                subject: file.clone(),
                role: Role::Credentials,
                owner: describe_user(fs, meta.uid),
                mode: meta.mode,
                flaw: Flaw::Readable,
                admin_hint: false,
            });
        }
    }
    dedup(problems)
}

/// Every file `set` was read from besides `config`, and every directory
/// an include pattern reads (anyone who can write it could add a file).
pub fn check_included(
    fs: &dyn StatProvider,
    policy: &Policy,
    config: &Path,
    set: &RuleSet,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for file in set.files.iter().filter(|f| f.as_path() != config) {
        problems.extend(check_path(fs, policy, &absolute(file), Role::Rules));
    }
    for dir in &set.dirs {
        problems.extend(check_path(fs, policy, &absolute(dir), Role::Rules));
    }
    dedup(problems)
}

/// The configuration and everything it includes.
pub fn check_all(
    fs: &dyn StatProvider,
    policy: &Policy,
    config: &Path,
    set: &RuleSet,
) -> Vec<Problem> {
    let mut problems = check_config(fs, policy, config);
    problems.extend(check_included(fs, policy, config, set));
    dedup(problems)
}

/// `Err` with every problem, if there are any.
pub fn refuse(problems: Vec<Problem>) -> Result<(), Untrusted> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Untrusted(problems))
    }
}

/// Create the agent's own directory `dir` (the audit log's, the control
/// socket's) so that only root gets in: 0700, or 0750 with group `reader`
/// when a group is configured to read what is inside. Missing parents get
/// the usual 0755 (less under a stricter umask), so that `reader` can pass
/// them. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path, reader: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mode = if reader.is_some() { 0o750 } else { 0o700 };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        // Another process made it in between: theirs, left as it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(gid) = reader {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
    }
    // The umask may have taken bits the reader needs; set them as said.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ROOT: u32 = 0;
    const ALICE: u32 = 1000;
    const STAFF: u32 = 50;
    const ADM: u32 = 4;

    /// A file system described by a table: path → (owner, group, mode),
    /// and symlink targets.
    #[derive(Default)]
    struct Table {
        entries: HashMap<PathBuf, Meta>,
        links: HashMap<PathBuf, PathBuf>,
    }

    impl Table {
        /// `/`, `/etc` and `/etc/guardrail` as a package installs them.
        fn standard() -> Self {
            let mut t = Table::default();
            t.dir("/", ROOT, ROOT, 0o755);
            t.dir("/etc", ROOT, ROOT, 0o755);
            t.dir("/etc/guardrail", ROOT, ROOT, 0o755);
            t.dir("/etc/guardrail/rules.d", ROOT, ROOT, 0o755);
            t.file("/etc/guardrail/guardrail.toml", ROOT, ROOT, 0o644);
            t.dir("/tmp", ROOT, ROOT, 0o1777);
            t
        }

        fn dir(&mut self, p: &str, uid: u32, gid: u32, mode: u32) {
            let meta = Meta {
                uid,
                gid,
                mode: S_IFDIR | mode,
            };
            self.entries.insert(p.into(), meta);
        }

        fn file(&mut self, p: &str, uid: u32, gid: u32, mode: u32) {
            let meta = Meta {
                uid,
                gid,
                mode: 0o100_000 | mode,
            };
            self.entries.insert(p.into(), meta);
        }

        fn link(&mut self, p: &str, uid: u32, target: &str) {
            let meta = Meta {
                uid,
                gid: uid,
                mode: S_IFLNK | 0o777,
            };
            self.entries.insert(p.into(), meta);
            self.links.insert(p.into(), target.into());
        }
    }

    impl StatProvider for Table {
        fn lstat(&self, path: &Path) -> std::io::Result<Meta> {
            self.entries
                .get(path)
                .copied()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }

        fn read_link(&self, path: &Path) -> std::io::Result<PathBuf> {
            self.links
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::InvalidInput.into())
        }

        fn user_name(&self, uid: u32) -> Option<String> {
            match uid {
                ROOT => Some("root".into()),
                ALICE => Some("alice".into()),
                _ => None,
            }
        }

        fn group_name(&self, gid: u32) -> Option<String> {
            match gid {
                ROOT => Some("root".into()),
                STAFF => Some("staff".into()),
                ADM => Some("adm".into()),
                _ => None,
            }
        }
    }

    fn policy() -> Policy {
        Policy::root(None)
    }

    fn with_admin(gid: u32, name: &str) -> Policy {
        Policy::root(Some(AdminGroup {
            name: name.into(),
            gid,
        }))
    }

    fn check(t: &Table, p: &Policy, path: &str, role: Role) -> Vec<String> {
        check_path(t, p, Path::new(path), role)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const RULE: &str = "/etc/guardrail/rules.d/x.toml";

    #[test]
    fn root_owned_files_in_root_owned_directories_pass() {
        let mut t = Table::standard();
        t.file(RULE, ROOT, ROOT, 0o644);
        let p = policy();
        assert_eq!(
            check(&t, &p, "/etc/guardrail/guardrail.toml", Role::Configuration),
            Vec::<String>::new()
        );
        assert_eq!(check(&t, &p, RULE, Role::Rules), Vec::<String>::new());
        // Read-only for everyone, setgid directories: still fine.
        t.file(RULE, ROOT, STAFF, 0o444);
        t.dir("/etc/guardrail/rules.d", ROOT, STAFF, 0o2755);
        assert_eq!(check(&t, &p, RULE, Role::Rules), Vec::<String>::new());
    }

    #[test]
    fn a_credential_file_must_be_roots_and_unreadable_to_others() {
        const CREDS: &str = "/etc/guardrail/nats.creds";
        let creds = |t: &Table, p: &Policy| -> Vec<String> {
            check_credentials(t, p, Path::new(CREDS))
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let mut t = Table::standard();
        t.file(CREDS, ROOT, ROOT, 0o600);
        assert_eq!(creds(&t, &policy()), Vec::<String>::new());
        t.file(CREDS, ROOT, ROOT, 0o644);
        assert_eq!(
            creds(&t, &policy()),
            vec![
                "/etc/guardrail/nats.creds is readable by others than root (owner root, mode 0644): \
                 anyone who reads it can act as this host on NATS; fix: chmod 600 /etc/guardrail/nats.creds"
            ]
        );
        // Group-readable by a group other than root's: refused as well,
        // even for the admin group (it administers rules, not identities).
        t.file(CREDS, ROOT, ADM, 0o640);
        assert_eq!(creds(&t, &with_admin(ADM, "adm")).len(), 1);
        // Owned by a user: that user could replace it.
        t.file(CREDS, ALICE, ROOT, 0o600);
        let problems = creds(&t, &policy());
        assert!(
            problems.len() == 1 && problems[0].contains("not owned by root"),
            "{problems:?}"
        );
        // In a directory others may write: refused like a configuration.
        t.file("/tmp/nats.creds", ROOT, ROOT, 0o600);
        let problems: Vec<String> = check_credentials(&t, &policy(), Path::new("/tmp/nats.creds"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            problems.len() == 1 && problems[0].contains("/tmp is writable by others"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_world_writable_file_is_refused_with_its_fix() {
        let mut t = Table::standard();
        t.file(RULE, ROOT, ROOT, 0o666);
        assert_eq!(
            check(&t, &policy(), RULE, Role::Rules),
            vec![
                "/etc/guardrail/rules.d/x.toml is writable by others (owner root, mode 0666): \
                  anyone could change the rules the agent enforces; \
                  fix: chmod o-w /etc/guardrail/rules.d/x.toml"
            ]
        );
    }

    #[test]
    fn a_group_writable_file_is_refused_unless_the_group_administers() {
        let mut t = Table::standard();
        t.file(RULE, ROOT, STAFF, 0o664);
        let refused = check(&t, &policy(), RULE, Role::Rules);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with(
                "/etc/guardrail/rules.d/x.toml is writable by group staff (owner root, mode 0664): \
                 its members could change the rules the agent enforces; fix: chmod g-w"
            ),
            "{refused:?}"
        );
        assert!(refused[0].ends_with("set admin_group = \"staff\" in [agent])"));
        assert_eq!(
            check(&t, &with_admin(STAFF, "staff"), RULE, Role::Rules),
            Vec::<String>::new()
        );
        // Another admin group does not cover staff.
        assert_eq!(
            check(&t, &with_admin(ADM, "adm"), RULE, Role::Rules).len(),
            1
        );
        // The rules directory may be the admins' too.
        t.file(RULE, ROOT, STAFF, 0o644);
        t.dir("/etc/guardrail/rules.d", ROOT, STAFF, 0o2775);
        assert_eq!(
            check(&t, &with_admin(STAFF, "staff"), RULE, Role::Rules),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_admin_group_may_not_write_the_configuration_that_names_it() {
        let mut t = Table::standard();
        t.file("/etc/guardrail/guardrail.toml", ROOT, STAFF, 0o664);
        let refused = check(
            &t,
            &with_admin(STAFF, "staff"),
            "/etc/guardrail/guardrail.toml",
            Role::Configuration,
        );
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].ends_with("fix: chmod g-w /etc/guardrail/guardrail.toml"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_parent_directory_writable_by_others_is_refused() {
        let mut t = Table::standard();
        t.dir("/etc/guardrail", ROOT, ROOT, 0o777);
        let refused = check(
            &t,
            &policy(),
            "/etc/guardrail/guardrail.toml",
            Role::Configuration,
        );
        assert_eq!(
            refused,
            vec![
                "/etc/guardrail is writable by others (owner root, mode 0777): \
                  anyone could change the configuration and rules the agent enforces; \
                  fix: chmod o-w /etc/guardrail"
            ]
        );
    }

    #[test]
    fn a_file_under_sticky_tmp_is_refused_and_told_to_move() {
        let mut t = Table::standard();
        // Even a root-only directory of root's inside /tmp.
        t.dir("/tmp/g", ROOT, ROOT, 0o700);
        t.file("/tmp/g/guardrail.toml", ROOT, ROOT, 0o600);
        let refused = check(&t, &policy(), "/tmp/g/guardrail.toml", Role::Configuration);
        assert_eq!(
            refused,
            vec!["/tmp is writable by others (owner root, mode 1777): anyone could change the \
                  configuration and rules the agent enforces by replacing what is in it; fix: \
                  move /tmp/g/guardrail.toml into a directory only root can write, such as /etc/guardrail"]
        );
    }

    #[test]
    fn a_symlink_is_followed_only_into_trusted_places() {
        let mut t = Table::standard();
        t.dir("/tmp/rules", ROOT, ROOT, 0o755);
        t.file("/tmp/rules/x.toml", ROOT, ROOT, 0o644);
        // The link is root's, in a root-only directory; its target is not.
        t.link(RULE, ROOT, "/tmp/rules/x.toml");
        let refused = check(&t, &policy(), RULE, Role::Rules);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("/tmp is writable by others (owner root, mode 1777)"),
            "{refused:?}"
        );
        assert!(
            refused[0].contains("move /etc/guardrail/rules.d/x.toml into"),
            "{refused:?}"
        );
        // A relative target into a trusted place passes.
        t.file("/etc/guardrail/shared.toml", ROOT, ROOT, 0o644);
        t.link(RULE, ROOT, "../shared.toml");
        assert_eq!(
            check(&t, &policy(), RULE, Role::Rules),
            Vec::<String>::new()
        );
        // The target itself is judged, not only its directories.
        t.file("/etc/guardrail/shared.toml", ROOT, ROOT, 0o646);
        let refused = check(&t, &policy(), RULE, Role::Rules);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("/etc/guardrail/shared.toml is writable by others"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_symlinked_directory_on_the_path_is_followed_and_judged() {
        let mut t = Table::standard();
        t.dir("/srv", ROOT, ROOT, 0o755);
        t.dir("/srv/rules", ALICE, ALICE, 0o755);
        t.file("/srv/rules/x.toml", ROOT, ROOT, 0o644);
        t.links.clear();
        t.entries.remove(Path::new("/etc/guardrail/rules.d"));
        t.link("/etc/guardrail/rules.d", ROOT, "/srv/rules");
        let refused = check(&t, &policy(), RULE, Role::Rules);
        assert_eq!(
            refused,
            vec![
                "/srv/rules is not owned by root (owner alice, mode 0755): its owner could \
                  change the rules the agent enforces; fix: chown root /srv/rules"
            ]
        );
    }

    #[test]
    fn a_symlink_owned_by_another_user_is_refused() {
        let mut t = Table::standard();
        t.file("/etc/guardrail/real.toml", ROOT, ROOT, 0o644);
        t.link(RULE, ALICE, "/etc/guardrail/real.toml");
        let refused = check(&t, &policy(), RULE, Role::Rules);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("/etc/guardrail/rules.d/x.toml is a symlink not owned by root"),
            "{refused:?}"
        );
        assert!(refused[0].ends_with("fix: chown -h root /etc/guardrail/rules.d/x.toml"));
    }

    #[test]
    fn an_owner_other_than_root_is_refused_unless_the_agent_runs_as_it() {
        let mut t = Table::standard();
        t.file(RULE, ALICE, ALICE, 0o644);
        assert_eq!(
            check(&t, &policy(), RULE, Role::Rules),
            vec![
                "/etc/guardrail/rules.d/x.toml is not owned by root (owner alice, mode 0644): \
                  its owner could change the rules the agent enforces; \
                  fix: chown root /etc/guardrail/rules.d/x.toml"
            ]
        );
        let as_alice = Policy {
            owners: vec![ROOT, ALICE],
            admin: None,
        };
        assert_eq!(
            check(&t, &as_alice, RULE, Role::Rules),
            Vec::<String>::new()
        );
        // An unknown owner is named by number; every flaw is reported.
        t.file(RULE, 4242, 4243, 0o664);
        let refused = check(&t, &policy(), RULE, Role::Rules);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused[0].contains("(owner uid 4242, mode 0664)"),
            "{refused:?}"
        );
        assert!(
            refused[1].contains("writable by group gid 4243"),
            "{refused:?}"
        );
    }

    #[test]
    fn symlink_loops_and_unreadable_components_are_refused() {
        let mut t = Table::standard();
        t.link("/etc/guardrail/a", ROOT, "b");
        t.link("/etc/guardrail/b", ROOT, "a");
        let refused = check(&t, &policy(), "/etc/guardrail/a", Role::Rules);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("more than 40 symlinks"), "{refused:?}");
    }

    #[test]
    fn a_missing_file_ends_the_walk_after_its_existing_parents() {
        let mut t = Table::standard();
        assert_eq!(
            check(&t, &policy(), "/etc/guardrail/conf.d/x.toml", Role::Rules),
            Vec::<String>::new()
        );
        t.dir("/etc/guardrail", ROOT, ROOT, 0o757);
        assert_eq!(
            check(&t, &policy(), "/etc/guardrail/conf.d/x.toml", Role::Rules).len(),
            1
        );
    }

    #[test]
    fn dot_dot_after_a_symlink_is_the_targets_parent() {
        let mut t = Table::standard();
        // /etc/guardrail/rules.d → /tmp/r; "rules.d/../x.toml" is /tmp/x.toml.
        t.dir("/tmp/r", ROOT, ROOT, 0o755);
        t.file("/tmp/x.toml", ROOT, ROOT, 0o644);
        t.entries.remove(Path::new("/etc/guardrail/rules.d"));
        t.link("/etc/guardrail/rules.d", ROOT, "/tmp/r");
        let refused = check(
            &t,
            &policy(),
            "/etc/guardrail/rules.d/../x.toml",
            Role::Rules,
        );
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("/tmp is writable"), "{refused:?}");
    }

    #[test]
    fn includes_and_include_directories_are_checked_and_shared_parents_named_once() {
        let mut t = Table::standard();
        t.dir("/etc/guardrail/rules.d", ROOT, ROOT, 0o777);
        t.file(RULE, ROOT, ROOT, 0o644);
        t.file("/etc/guardrail/rules.d/y.toml", ROOT, ROOT, 0o644);
        let set = RuleSet {
            files: vec![
                "/etc/guardrail/guardrail.toml".into(),
                RULE.into(),
                "/etc/guardrail/rules.d/y.toml".into(),
            ],
            dirs: vec!["/etc/guardrail/rules.d".into()],
            ..Default::default()
        };
        let config = Path::new("/etc/guardrail/guardrail.toml");
        assert_eq!(check_config(&t, &policy(), config), vec![]);
        let problems = check_included(&t, &policy(), config, &set);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, Path::new("/etc/guardrail/rules.d"));
        let all = check_all(&t, &policy(), config, &set);
        assert_eq!(all, problems);
        assert!(refuse(all).is_err());
        assert!(refuse(vec![]).is_ok());
    }

    #[test]
    fn private_directories_let_only_root_and_the_reader_group_in() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("a/log");
        create_private_dir(&private, None).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o7777, 0o700);
        let shared = dir.path().join("b/log");
        // SAFETY: no arguments.
        let gid = unsafe { libc::getegid() };
        create_private_dir(&shared, Some(gid)).unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o750, gid));
        // An existing directory is not changed.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&private, None).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o7777, 0o755);
    }

    #[test]
    fn the_real_provider_reads_owner_mode_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o646)).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let fs = RealFs::new();
        let meta = fs.lstat(&file).unwrap();
        assert_eq!(meta.mode & 0o7777, 0o646);
        // SAFETY: no arguments.
        assert_eq!(meta.uid, unsafe { libc::geteuid() });
        assert!(fs.lstat(&link).unwrap().is_symlink());
        assert_eq!(fs.read_link(&link).unwrap(), Path::new("f"));
        let problems = check_path(&fs, &Policy::agent(None), &link, Role::Rules);
        assert!(
            problems
                .iter()
                .any(|p| p.path == file && p.flaw == Flaw::WritableByOthers { shared: false }),
            "{problems:?}"
        );
    }
}
