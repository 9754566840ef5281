//! [`ProcessView`]: a table of processes kept by the kernel's fork, exec
//! and exit records, so that every event names the program its process
//! ran at that moment (a forked child runs its parent's until it execs),
//! who created it and who created them, and short-lived processes keep
//! their identity after they are gone. /proc is asked only about
//! processes older than the agent.

use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::idmap::IdMap;
use guardrail_engine::event::{Ancestor, ObjectId};
use guardrail_engine::interpret::{Attribution, Lineage, ProcessView};

pub struct ProcFs {
    procs: IdMap<u32, Proc>,
    last_prune: Duration,
    /// Directories resolved lately: a storm on one file resolves its
    /// directory once, not once per event.
    resolved: foldhash::HashMap<String, String>,
    /// Objects of paths looked up lately, same lifetime: the final
    /// symlink not followed (`[0]`) and followed (`[1]`), so that a hit
    /// is looked up by the borrowed path (a key made per event was an
    /// allocation and a free per event).
    objects: [foldhash::HashMap<String, ObjectId>; 2],
    resolved_at: Duration,
    /// Nanoseconds per clock tick (USER_HZ), the unit of start times in
    /// /proc and in process ids.
    ns_per_tick: u64,
    cgroups: crate::cgroups::Cgroups,
    users: NamesFile,
    groups: NamesFile,
    /// Attributions made, by cgroup id, uid and gid: the events of one
    /// service share one (its five names were five reference counts per
    /// event). Emptied when the names or the cgroups are read again, and
    /// when full.
    attributions: IdMap<(u64, u32, u32), Arc<Attribution>>,
    /// Lineages assembled since the table last changed, by pid and depth:
    /// the events of a busy process share one (building a lineage of 8
    /// is 9 lookups and ~27 reference counts). Any fork, exec or removal
    /// forgets them all.
    lineages: IdMap<u32, (usize, Lineage)>,
    /// The ancestors each process's children see, by the process's pid
    /// (see [`Family`]): siblings share one list and its JSON. Checked
    /// against the table when used, so no change needs to forget them.
    families: IdMap<u32, Family>,
    /// Terminal names by device number.
    ttys: IdMap<u32, Arc<str>>,
    ids: ProcessIds,
    /// Program paths, shared: a pool of 30,000 workers of one program
    /// holds its path once, not 30,000 times.
    programs: foldhash::HashSet<Arc<str>>,
    /// The table's capacity when memory was last handed back.
    trimmed_at_capacity: usize,
}

/// Bound on the shared program paths; full, it starts over (the paths
/// processes hold stay theirs).
const PROGRAMS_MAX: usize = 4096;

/// Bound on the lineage cache; full, it starts over.
const LINEAGES_MAX: usize = 4096;

/// The ancestors a process's children see: the process itself, then its
/// ancestors, nearest first, to a depth. An exec storm's children (or a
/// pool's workers) were each given a list built afresh and serialised
/// afresh, a quarter of the agent's work per exec; built once per parent,
/// one list and its JSON serve them all.
struct Family {
    depth: usize,
    ancestors: guardrail_engine::event::Ancestors,
    /// Start time of each ancestor (`ancestors[i]`): with pid, program
    /// and script, what makes the list still true of the table.
    starts: Box<[u64]>,
    truncated: bool,
}

/// Bound on the families remembered; full, they start over.
const FAMILIES_MAX: usize = 4096;

/// /etc/passwd or /etc/group as names by id, read again when the file
/// changes (checked at most once a second).
struct NamesFile {
    path: &'static str,
    names: guardrail_engine::attribution::IdNames,
    mtime: Option<std::time::SystemTime>,
    /// When the file was last looked at ([`clock::coarse`]).
    checked: Option<Duration>,
}

impl NamesFile {
    fn new(path: &'static str) -> NamesFile {
        NamesFile {
            path,
            names: Default::default(),
            mtime: None,
            checked: None,
        }
    }

    /// Read the file again if it changed (looked at once a second);
    /// whether it was read.
    fn refresh(&mut self) -> bool {
        if self
            .checked
            .is_some_and(|at| clock::since(at) < Duration::from_secs(1))
        {
            return false;
        }
        self.checked = Some(clock::coarse());
        let mtime = std::fs::metadata(self.path).and_then(|m| m.modified()).ok();
        if mtime == self.mtime {
            return false;
        }
        self.mtime = mtime;
        let text = std::fs::read_to_string(self.path).unwrap_or_default();
        self.names = guardrail_engine::attribution::IdNames::parse(&text);
        true
    }

    fn get(&self, id: u32) -> Option<Arc<str>> {
        self.names.get(id)
    }
}

/// Bound on the attributions remembered; full, they start over.
const ATTRIBUTIONS_MAX: usize = 4096;

/// How long resolved directories are trusted without an event that says
/// a directory changed (mounts, for one, are not events).
const RESOLVED_FOR: Duration = Duration::from_secs(1);
/// Bound on the resolution cache; full, it starts over.
const RESOLVED_MAX: usize = 4096;

/// One process as the table knows it.
struct Proc {
    /// None: a process with no program file (a kernel thread), or one the
    /// agent could not learn.
    exe: Option<Arc<str>>,
    /// The script it runs, when `exe` is an interpreter.
    script: Option<Arc<str>>,
    /// Start time in clock ticks since boot ([`UNKNOWN_START`]: unknown),
    /// the second half of its `PID@START` id. The id's text is made when a
    /// lineage names the process (see [`ProcessIds`]): a table of 30,000
    /// idle processes held 30,000 of them, 48 bytes of heap each.
    start: u64,
    /// The process that created it (0: unknown).
    parent: u32,
    /// When its exit record arrived (seconds of the coarse clock; 0: it
    /// runs). Kept a while after: records of its children (naming it as
    /// parent) may still be on their way.
    exited_at: u32,
    /// When the kernel last said something about it (fork, exec; seconds
    /// of the coarse clock).
    learned_at: u32,
    /// Login session and controlling terminal (see [`Terminal`]).
    terminal: Terminal,
}

/// Seconds of the coarse clock, as the table keeps its times: a table of
/// 30,000 processes holds two per process.
fn now_s() -> u32 {
    clock::coarse().as_secs() as u32
}

/// Whether `at` ([`now_s`]) is less than `keep` ago.
fn within(at: u32, keep: Duration) -> bool {
    now_s().saturating_sub(at) < keep.as_secs() as u32
}

/// A process's login session id and controlling terminal, as of its last
/// exec (or its creator's, inherited at fork): they change without an
/// exec only by setsid(2) or TIOCSCTTY, which are not captured. Numbers,
/// not names: the table holds one per process.
#[derive(Clone, Copy, Debug)]
struct Terminal {
    /// `u32::MAX`: unset.
    session: u32,
    /// `major << 20 | minor`; 0: none.
    tty: u32,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            session: u32::MAX,
            tty: 0,
        }
    }
}

impl Terminal {
    fn new(session: Option<u32>, tty: Option<(u32, u32)>) -> Terminal {
        Terminal {
            session: session.unwrap_or(u32::MAX),
            tty: tty.map_or(0, |(major, minor)| major << 20 | (minor & 0xfffff)),
        }
    }
}

/// The name of a terminal by device number (`major`, `minor`), as
/// /dev names it: `pts/3`, `tty1`, `ttyS0`, `console`; `MAJOR:MINOR`
/// for others.
pub fn tty_name(major: u32, minor: u32) -> String {
    match (major, minor) {
        (136..=143, m) => format!("pts/{}", (major - 136) * 256 + m),
        (4, m) if m < 64 => format!("tty{m}"),
        (4, m) => format!("ttyS{}", m - 64),
        (5, 0) => "tty".into(),
        (5, 1) => "console".into(),
        (major, minor) => format!("{major}:{minor}"),
    }
}

/// Terminal names by device number (`major << 20 | minor`): a handful
/// per host, shared by every process on them.
fn tty_arc(cache: &mut IdMap<u32, Arc<str>>, dev: u32) -> Arc<str> {
    cache
        .entry(dev)
        .or_insert_with(|| tty_name(dev >> 20, dev & 0xfffff).into())
        .clone()
}

/// How often the table is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// How long an exited process stays in the table.
const KEEP_EXITED: Duration = Duration::from_secs(30);
/// A process whose exit record was lost (ring buffer full) is dropped when
/// /proc no longer shows it and the kernel said nothing about it for this
/// long.
const KEEP_UNSEEN: Duration = Duration::from_secs(60);

impl Default for ProcFs {
    fn default() -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            procs: IdMap::default(),
            last_prune: clock::coarse(),
            resolved: Default::default(),
            objects: Default::default(),
            resolved_at: clock::coarse(),
            ns_per_tick: 1_000_000_000 / if hz > 0 { hz as u64 } else { 100 },
            cgroups: Default::default(),
            users: NamesFile::new("/etc/passwd"),
            groups: NamesFile::new("/etc/group"),
            attributions: IdMap::default(),
            lineages: IdMap::default(),
            families: IdMap::default(),
            ttys: IdMap::default(),
            ids: ProcessIds::default(),
            programs: Default::default(),
            trimmed_at_capacity: 0,
        }
    }
}

fn readlink(path: String) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| guardrail_engine::interpret::text(p.as_os_str().as_encoded_bytes()))
}

/// [`Proc::start`] of a process whose start time is unknown (no id).
const UNKNOWN_START: u64 = u64::MAX;

/// `PID@START`, written from the end of a stack buffer: every new
/// process gets one, and `format!` was half the cost of making it.
fn process_id(pid: u32, start_ticks: u64) -> Arc<str> {
    // u32::MAX has 10 digits, u64::MAX 20.
    const LONGEST: usize = 10 + 1 + 20;
    let mut buf = [0u8; LONGEST];
    let mut at = digits_before(&mut buf, LONGEST, start_ticks);
    at -= 1;
    buf[at] = b'@';
    at = digits_before(&mut buf, at, pid as u64);
    Arc::from(std::str::from_utf8(&buf[at..]).expect("ASCII digits and @"))
}

/// Write `n` in decimal so that it ends at `end`; returns where it starts.
fn digits_before(buf: &mut [u8], mut end: usize, mut n: u64) -> usize {
    loop {
        end -= 1;
        buf[end] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return end;
        }
    }
}

/// Bound on the remembered process ids; full, it starts over.
const IDS_MAX: usize = 4096;

/// The `PID@START` ids lineages named lately, by pid: the ancestors of a
/// busy process (its shell, sshd, systemd) are named in every lineage
/// assembled, and their ids are made once, not per lineage. The start
/// time is kept with each, so a reused pid gets its own id.
#[derive(Default)]
struct ProcessIds(IdMap<u32, (u64, Arc<str>)>);

impl ProcessIds {
    /// The id of `pid` started at `start`; None when the start is unknown.
    fn of(&mut self, pid: u32, start: u64) -> Option<Arc<str>> {
        if start == UNKNOWN_START {
            return None;
        }
        if let Some((known, id)) = self.0.get(&pid) {
            if *known == start {
                return Some(id.clone());
            }
        }
        if self.0.len() >= IDS_MAX {
            self.0.clear();
        }
        let id = process_id(pid, start);
        self.0.insert(pid, (start, id.clone()));
        Some(id)
    }
}

/// The parent pid and start time (clock ticks since boot) in a
/// /proc/PID/stat line; the command name in parentheses may hold spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let fields = stat_fields(stat)?;
    // The fields start at field 3 (state): ppid is field 4, starttime 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// The fields of a /proc/PID/stat line after the command name.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// The controlling terminal in a /proc/PID/stat line (`tty_nr`, field 7),
/// as (major, minor); None for none.
pub fn stat_tty(stat: &str) -> Option<(u32, u32)> {
    let nr: u32 = stat_fields(stat)?.get(4)?.parse().ok()?;
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    (nr != 0).then_some((major, minor))
}

impl ProcFs {
    /// Every process running now, from /proc: called once the probes are
    /// attached, so that a process is either seeded here or born in a fork
    /// record that follows.
    pub fn seed(&mut self) {
        for pid in pids() {
            // A fork record processed meanwhile knows better.
            if !self.procs.contains_key(&pid) {
                if let Some(p) = self.learn_from_proc(pid) {
                    self.procs.insert(pid, p);
                }
            }
        }
        self.lineages.clear();
    }

    /// What /proc says of `pid` now (it answers for now, not for the
    /// moment of an event: only for processes older than the agent).
    fn learn_from_proc(&mut self, pid: u32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (parent, start) = parse_stat(&stat)?;
        let session = std::fs::read_to_string(format!("/proc/{pid}/sessionid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&s| s != u32::MAX);
        Some(Proc {
            exe: readlink(format!("/proc/{pid}/exe")).map(|e| self.program(&e)),
            script: None,
            start,
            parent,
            exited_at: 0,
            learned_at: now_s(),
            terminal: Terminal::new(session, stat_tty(&stat)),
        })
    }

    /// Processes in the table.
    pub fn tracked(&self) -> usize {
        self.procs.len()
    }

    /// The table's entry for `pid`, from /proc if the agent has not met it.
    fn get(&mut self, pid: u32) -> Option<&Proc> {
        self.prune();
        if !self.procs.contains_key(&pid) {
            let p = self.learn_from_proc(pid)?;
            self.procs.insert(pid, p);
            self.lineages.clear();
        }
        self.procs.get(&pid)
    }

    /// [`ProcessView::lineage`] from the table, without the cache.
    fn assemble_lineage(&mut self, pid: u32, depth: usize) -> Lineage {
        let Some(me) = self.get(pid) else {
            return Lineage {
                truncated: true,
                ..Lineage::default()
            };
        };
        let (terminal, start, parent) = (me.terminal, me.start, me.parent);
        let mut lineage = Lineage {
            id: self.ids.of(pid, start),
            session: (terminal.session != u32::MAX).then_some(terminal.session),
            ..Lineage::default()
        };
        if terminal.tty != 0 {
            lineage.tty = Some(tty_arc(&mut self.ttys, terminal.tty));
        }
        let (ancestors, truncated) = self.ancestors_from(parent, depth);
        lineage.parent_id = ancestors.first().and_then(|a| a.id.clone());
        lineage.ancestors = ancestors;
        lineage.truncated = truncated;
        lineage
    }

    /// The ancestors the children of `first` see, to `depth` (and whether
    /// the chain goes on beyond them): the remembered [`Family`] while
    /// the table still says the same, otherwise built anew.
    fn ancestors_from(
        &mut self,
        first: u32,
        depth: usize,
    ) -> (guardrail_engine::event::Ancestors, bool) {
        if let Some(known) = self.families.get(&first) {
            if known.depth == depth && self.still_true(first, known) {
                return (known.ancestors.clone(), known.truncated);
            }
        }
        let mut ancestors = Vec::new();
        let mut starts = Vec::new();
        let truncated;
        let mut next = first;
        // Ancestors are looked up without /proc: a creator that is gone
        // and not in the table ends the chain (flagged), it is not guessed.
        loop {
            let p = self.procs.get(&next);
            if let Some(cut) = walk_ends(next, p.is_some(), ancestors.len(), depth) {
                truncated = cut;
                break;
            }
            let p = p.expect("walk_ends ends the walk at a process not in the table");
            ancestors.push(Ancestor {
                pid: next,
                id: self.ids.of(next, p.start),
                exe: p.exe.clone(),
                script: p.script.clone(),
            });
            starts.push(p.start);
            // pid 1's parent is 0; a loop (never in a real table) ends at
            // the depth limit.
            next = p.parent;
        }
        let ancestors: guardrail_engine::event::Ancestors = ancestors.into();
        if self.families.len() >= FAMILIES_MAX {
            self.families.clear();
        }
        self.families.insert(
            first,
            Family {
                depth,
                ancestors: ancestors.clone(),
                starts: starts.into(),
                truncated,
            },
        );
        (ancestors, truncated)
    }

    /// Whether the walk from `first` would build `family` again: the same
    /// processes (pid and start time) running the same programs, and the
    /// chain ending where it ended.
    fn still_true(&self, first: u32, family: &Family) -> bool {
        let mut next = first;
        for (a, &start) in family.ancestors.iter().zip(&family.starts[..]) {
            match self.procs.get(&next) {
                Some(p)
                    if a.pid == next
                        && p.start == start
                        && p.exe == a.exe
                        && p.script == a.script =>
                {
                    next = p.parent
                }
                _ => return false,
            }
        }
        // Ending elsewhere, or going on (a creator learned), is another list.
        let known = self.procs.contains_key(&next);
        walk_ends(next, known, family.ancestors.len(), family.depth) == Some(family.truncated)
    }

    fn prune(&mut self) {
        if clock::since(self.last_prune) < PRUNE_EVERY {
            return;
        }
        self.last_prune = clock::coarse();
        let before = self.procs.len();
        self.procs.retain(|pid, p| match p.exited_at {
            0 => {
                within(p.learned_at, KEEP_UNSEEN)
                    || std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
            at => within(at, KEEP_EXITED),
        });
        // A lineage may name a process just removed; when none was, every
        // remembered lineage still holds.
        if self.procs.len() != before {
            self.lineages.clear();
            self.procs.shrink_to_fit();
        }
        // When the table grew or shrank, give what it freed (its old
        // storage, the entries of the processes it forgot) back to the
        // system: the allocator would otherwise keep the peak of a burst
        // of processes for good.
        if self.procs.capacity() != self.trimmed_at_capacity {
            self.trimmed_at_capacity = self.procs.capacity();
            // SAFETY: no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
    }
}

/// Whether a walk up the chain that has listed `walked` ancestors ends
/// at `next` (`known`: the table has it): Some(cut) if it does (cut: the
/// chain goes on beyond what is listed), None if `next` is listed too.
fn walk_ends(next: u32, known: bool, walked: usize, depth: usize) -> Option<bool> {
    if next == 0 {
        // pid 1's parent: the whole chain is listed.
        Some(false)
    } else if !known || walked == depth {
        Some(true)
    } else {
        None
    }
}

impl ProcFs {
    /// `exe` as the table's shared copy.
    fn program(&mut self, exe: &str) -> Arc<str> {
        if let Some(known) = self.programs.get(exe) {
            return known.clone();
        }
        if self.programs.len() >= PROGRAMS_MAX {
            self.programs.clear();
        }
        let new: Arc<str> = exe.into();
        self.programs.insert(new.clone());
        new
    }

    /// `realpath(3)` of `path`, remembered for a moment: a storm on one
    /// file resolves its directory once, not once per event.
    fn resolved_dir(&mut self, path: &str) -> Option<&str> {
        if clock::since(self.resolved_at) >= RESOLVED_FOR || self.resolved.len() >= RESOLVED_MAX {
            self.paths_changed();
        }
        if !self.resolved.contains_key(path) {
            let real = std::fs::canonicalize(path)
                .ok()
                .map(|p| guardrail_engine::interpret::text(p.as_os_str().as_encoded_bytes()))?;
            // Only what exists is remembered: a directory made a moment
            // later (mkdir is not an event) must not stay unresolvable.
            self.resolved.insert(path.to_string(), real);
        }
        self.resolved.get(path).map(String::as_str)
    }
}

/// The host's mount namespace, by inode number: PID 1's, or where PID 1
/// cannot be inspected (a sandbox whose init is not ours), the agent's
/// own — the service unit gives the agent no namespace of its own. Read
/// once: neither changes namespace.
pub fn host_mount_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    static HOST: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        ["/proc/1/ns/mnt", "/proc/self/ns/mnt"]
            .iter()
            .find_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.ino())
    })
}

impl ProcessView for ProcFs {
    fn dir_of(&mut self, pid: u32, dirfd: Option<i32>) -> Option<String> {
        match dirfd {
            None => readlink(format!("/proc/{pid}/cwd")),
            Some(fd) => readlink(format!("/proc/{pid}/fd/{fd}")),
        }
    }

    fn fd_path(&mut self, pid: u32, fd: i32) -> Option<String> {
        readlink(format!("/proc/{pid}/fd/{fd}"))
    }

    fn exe(&mut self, pid: u32) -> Option<Arc<str>> {
        self.get(pid)?.exe.clone()
    }

    fn exec_happened(&mut self, pid: u32, exe: &str) {
        self.lineages.clear();
        let exe = self.program(exe);
        match self.procs.get_mut(&pid) {
            Some(p) => {
                p.exe = Some(exe);
                p.script = None;
                p.learned_at = now_s();
            }
            None => {
                // Met first at its exec: the rest from /proc, while it runs.
                let mut p = self.learn_from_proc(pid).unwrap_or(Proc {
                    exe: None,
                    script: None,
                    start: UNKNOWN_START,
                    parent: 0,
                    exited_at: 0,
                    learned_at: now_s(),
                    terminal: Terminal::default(),
                });
                p.exe = Some(exe);
                self.procs.insert(pid, p);
            }
        }
    }

    fn terminal_at_exec(&mut self, pid: u32, session: Option<u32>, tty: Option<(u32, u32)>) {
        self.lineages.clear();
        if let Some(p) = self.procs.get_mut(&pid) {
            p.terminal = Terminal::new(session, tty);
        }
    }

    fn script_ran(&mut self, pid: u32, script: &str) {
        self.lineages.clear();
        if let Some(p) = self.procs.get_mut(&pid) {
            p.script = Some(script.into());
        }
    }

    fn forked(&mut self, parent: u32, child: u32, start_ns: u64) {
        self.lineages.clear();
        let (exe, script, terminal) = self
            .get(parent)
            .map(|p| (p.exe.clone(), p.script.clone(), p.terminal))
            .unwrap_or_default();
        let start = match start_ns {
            0 => UNKNOWN_START,
            ns => ns / self.ns_per_tick,
        };
        self.procs.insert(
            child,
            Proc {
                exe,
                script,
                start,
                parent,
                exited_at: 0,
                learned_at: now_s(),
                terminal,
            },
        );
    }

    fn exited(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exited_at = now_s().max(1);
        }
    }

    fn lineage(&mut self, pid: u32, depth: usize) -> Lineage {
        self.prune();
        if let Some((d, known)) = self.lineages.get(&pid) {
            if *d == depth {
                return known.clone();
            }
        }
        let lineage = self.assemble_lineage(pid, depth);
        if self.lineages.len() >= LINEAGES_MAX {
            self.lineages.clear();
        }
        self.lineages.insert(pid, (depth, lineage.clone()));
        lineage
    }

    fn attribution(&mut self, cgroup_id: u64, uid: u32, gid: u32) -> Arc<Attribution> {
        let reread = self.users.refresh() | self.groups.refresh();
        if reread || self.attributions.len() >= ATTRIBUTIONS_MAX {
            self.attributions.clear();
        }
        let key = (cgroup_id, uid, gid);
        if let Some(known) = self.attributions.get(&key) {
            return known.clone();
        }
        let walks = self.cgroups.walks();
        let cgroup = self.cgroups.get(cgroup_id);
        let made = Arc::new(Attribution {
            user: self.users.get(uid),
            group: self.groups.get(gid),
            cgroup: cgroup.map(|c| c.path.clone()),
            unit: cgroup.and_then(|c| c.unit.clone()),
            container: cgroup.and_then(|c| c.container.clone()),
        });
        if self.cgroups.walks() != walks {
            // The cgroups were read again: what was made before may name
            // a path that is no longer there.
            self.attributions.clear();
        }
        // An unknown cgroup is not remembered: its next event asks the
        // cgroup table again, which reads the cgroups anew when due.
        if made.cgroup.is_some() {
            self.attributions.insert(key, made.clone());
        }
        made
    }

    fn realpath(&mut self, path: &str) -> Option<String> {
        self.resolved_dir(path).map(str::to_string)
    }

    fn realpath_join(&mut self, dir: &str, name: &str) -> Option<String> {
        self.resolved_dir(dir)
            .map(|d| guardrail_engine::canonical::join_name(d, name))
    }

    fn realpath_in(&mut self, root: &str, path: &str) -> Option<String> {
        realpath_in_root(root, path)
    }

    fn root_of(&mut self, pid: u32) -> Option<String> {
        readlink(format!("/proc/{pid}/root"))
    }

    fn paths_changed(&mut self) {
        self.resolved.clear();
        self.objects.iter_mut().for_each(|o| o.clear());
        self.resolved_at = clock::coarse();
    }

    fn host_mount_namespace(&mut self) -> Option<u64> {
        host_mount_namespace()
    }

    fn object_of(&mut self, path: &str, follow: bool) -> Option<ObjectId> {
        use std::os::unix::fs::MetadataExt;
        let cached = self.objects.iter().map(|o| o.len()).sum::<usize>();
        if clock::since(self.resolved_at) >= RESOLVED_FOR || cached >= RESOLVED_MAX {
            self.paths_changed();
        }
        if let Some(hit) = self.objects[follow as usize].get(path) {
            return Some(*hit);
        }
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
        .ok()?;
        let id = ObjectId::from_stat(meta.dev(), meta.ino());
        self.objects[follow as usize].insert(path.to_string(), id);
        Some(id)
    }
}

/// `path` resolved as a process whose root is `root` resolves it
/// (openat2 with RESOLVE_IN_ROOT: absolute symlinks and `..` stay in the
/// root), named from the agent's root; `None` when a component does not
/// exist.
fn realpath_in_root(root: &str, path: &str) -> Option<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let c = |s: &str| std::ffi::CString::new(s).ok();
    let (root, path) = (c(root)?, c(path.trim_start_matches('/'))?);
    let path = if path.as_bytes().is_empty() {
        c(".")?
    } else {
        path
    };
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let dir = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return None;
    }
    // SAFETY: a fresh fd nobody else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    // `struct open_how` (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, NUL-terminated path, a live open_how of its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The process ids /proc lists now (none when it is not mounted).
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat =
            "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(stat), Some((17, 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn events_with_the_same_cgroup_and_ids_share_one_attribution() {
        let mut t = ProcFs::default();
        let root = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| crate::cgroups::cgroup2_root(&m))
            .expect("cgroup v2 is mounted");
        let root_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root).unwrap());
        let a = t.attribution(root_id, 0, 0);
        assert_eq!(a.cgroup.as_deref(), Some("/"));
        assert_eq!(a.user.as_deref(), Some("root"));
        assert!(Arc::ptr_eq(&a, &t.attribution(root_id, 0, 0)));
        let other = t.attribution(root_id, 0, 1);
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(other.user.as_deref(), Some("root"));
        // An unknown cgroup is asked for again each time (a new walk may
        // find it), not remembered as unknown.
        let unknown = t.attribution(u64::MAX, 0, 0);
        assert_eq!(unknown.cgroup, None);
        assert!(!Arc::ptr_eq(&unknown, &t.attribution(u64::MAX, 0, 0)));
    }

    fn table() -> ProcFs {
        let mut t = ProcFs::default();
        // Above the largest pid Linux hands out (2^22): /proc knows none of them.
        let (init, sshd, bash) = (5_000_001, 5_000_002, 5_000_003);
        t.procs.insert(
            init,
            Proc {
                exe: Some("/usr/lib/systemd/systemd".into()),
                script: None,
                start: 1,
                parent: 0,
                exited_at: 0,
                learned_at: now_s(),
                terminal: Terminal::default(),
            },
        );
        t.forked(init, sshd, 0);
        t.exec_happened(sshd, "/usr/sbin/sshd");
        t.forked(sshd, bash, 2 * t.ns_per_tick);
        t.exec_happened(bash, "/usr/bin/bash");
        t
    }

    #[test]
    fn a_forked_child_runs_its_parents_program_until_it_execs() {
        let mut t = table();
        t.forked(5_000_003, 5_000_004, 5 * t.ns_per_tick);
        assert_eq!(t.exe(5_000_004).as_deref(), Some("/usr/bin/bash"));
        t.exec_happened(5_000_004, "/usr/bin/curl");
        assert_eq!(t.exe(5_000_004).as_deref(), Some("/usr/bin/curl"));
        t.exited(5_000_004);
        assert_eq!(t.exe(5_000_004).as_deref(), Some("/usr/bin/curl"));
    }

    #[test]
    fn lineage_lists_the_creators_nearest_first_with_ids() {
        let mut t = table();
        t.forked(5_000_003, 5_000_004, 5 * t.ns_per_tick);
        t.exec_happened(5_000_004, "/usr/bin/curl");
        let l = t.lineage(5_000_004, 8);
        assert_eq!(l.id.as_deref(), Some("5000004@5"));
        assert_eq!(l.parent_id.as_deref(), Some("5000003@2"));
        let exes: Vec<_> = l.ancestors.iter().map(|a| a.exe.as_deref()).collect();
        assert_eq!(
            exes,
            [
                Some("/usr/bin/bash"),
                Some("/usr/sbin/sshd"),
                Some("/usr/lib/systemd/systemd")
            ]
        );
        assert!(!l.truncated);
        let short = t.lineage(5_000_004, 2);
        assert_eq!(short.ancestors.len(), 2);
        assert!(short.truncated);
    }

    #[test]
    fn a_reused_pid_is_a_new_process() {
        let mut t = table();
        t.forked(5_000_003, 5_000_004, 5 * t.ns_per_tick);
        t.exited(5_000_004);
        t.forked(5_000_002, 5_000_004, 9 * t.ns_per_tick);
        let l = t.lineage(5_000_004, 8);
        assert_eq!(l.id.as_deref(), Some("5000004@9"));
        assert_eq!(l.ancestors[0].exe.as_deref(), Some("/usr/sbin/sshd"));
    }

    #[test]
    fn a_remembered_lineage_follows_every_change_of_the_table() {
        let mut t = table();
        let (sshd, bash, curl) = (5_000_002, 5_000_003, 5_000_004);
        t.forked(bash, curl, 5 * t.ns_per_tick);
        let exes = |l: &Lineage| -> Vec<Option<String>> {
            l.ancestors
                .iter()
                .map(|a| a.exe.as_deref().map(String::from))
                .collect()
        };
        let first = t.lineage(curl, 8);
        assert!(
            guardrail_engine::event::Ancestors::ptr_eq(
                &first.ancestors,
                &t.lineage(curl, 8).ancestors
            ),
            "asked again with nothing changed: the same lineage"
        );
        // An ancestor execs: its new program in the lineage.
        t.exec_happened(bash, "/usr/bin/python3");
        assert_eq!(
            exes(&t.lineage(curl, 8))[0].as_deref(),
            Some("/usr/bin/python3")
        );
        // ... or turns out to run a script.
        t.script_ran(bash, "/usr/sbin/adduser");
        assert_eq!(
            t.lineage(curl, 8).ancestors[0].script.as_deref(),
            Some("/usr/sbin/adduser")
        );
        // Another depth is another lineage.
        assert_eq!(t.lineage(curl, 1).ancestors.len(), 1);
        assert_eq!(t.lineage(curl, 8).ancestors.len(), 3);
        // The pid is reused by a child of sshd.
        t.exited(curl);
        t.forked(sshd, curl, 9 * t.ns_per_tick);
        let reused = t.lineage(curl, 8);
        assert_eq!(reused.id.as_deref(), Some("5000004@9"));
        assert_eq!(exes(&reused)[0].as_deref(), Some("/usr/sbin/sshd"));
    }

    #[test]
    fn children_of_one_process_share_one_list_of_ancestors_while_it_holds() {
        let mut t = table();
        let (sshd, bash) = (5_000_002, 5_000_003);
        let (a, b, c) = (5_000_010, 5_000_011, 5_000_012);
        t.forked(bash, a, 5 * t.ns_per_tick);
        t.exec_happened(a, "/usr/bin/true");
        let first = t.lineage(a, 8);
        // A sibling forked and exec'd after it (every fork and exec
        // forgets the lineages made): the same list, not a copy.
        t.forked(bash, b, 6 * t.ns_per_tick);
        t.exec_happened(b, "/usr/bin/false");
        let second = t.lineage(b, 8);
        assert!(guardrail_engine::event::Ancestors::ptr_eq(
            &first.ancestors,
            &second.ancestors
        ));
        assert_eq!(second.id.as_deref(), Some("5000011@6"));
        assert_eq!(second.parent_id.as_deref(), Some("5000003@2"));
        // The parent execs: its next children see its new program.
        t.exec_happened(bash, "/usr/bin/python3");
        t.forked(bash, c, 7 * t.ns_per_tick);
        let third = t.lineage(c, 8);
        assert_eq!(third.ancestors[0].exe.as_deref(), Some("/usr/bin/python3"));
        assert_eq!(third.ancestors.len(), 3);
        // The parent's pid is reused by another child of sshd: the list
        // names the new process, not the old one.
        t.exited(bash);
        t.forked(sshd, bash, 8 * t.ns_per_tick);
        t.forked(bash, a, 9 * t.ns_per_tick);
        let reused = t.lineage(a, 8);
        assert_eq!(reused.parent_id.as_deref(), Some("5000003@8"));
        assert_eq!(reused.ancestors.len(), 3);
        // A list cut at an unknown creator is made again once the table
        // knows the creator.
        t.forked(5_100_000, 5_100_001, 10 * t.ns_per_tick);
        t.forked(5_100_001, 5_100_002, 11 * t.ns_per_tick);
        let cut = t.lineage(5_100_002, 8);
        assert_eq!(cut.ancestors.len(), 1);
        assert!(cut.truncated);
        t.forked(bash, 5_100_000, 3 * t.ns_per_tick);
        let whole = t.lineage(5_100_002, 8);
        assert_eq!(whole.ancestors.len(), 5);
        assert!(!whole.truncated);
        // A shorter depth is another list, cut and flagged.
        let short = t.lineage(5_100_002, 2);
        assert_eq!(short.ancestors.len(), 2);
        assert!(short.truncated);
        assert_eq!(t.lineage(5_100_002, 8).ancestors.len(), 5);
    }

    #[test]
    fn a_process_id_is_pid_at_start() {
        for (pid, start) in [(0, 0), (1, 7), (4_194_304, 98_765), (u32::MAX, u64::MAX)] {
            assert_eq!(&*process_id(pid, start), format!("{pid}@{start}"));
        }
    }

    #[test]
    fn an_entry_of_the_table_stays_small() {
        // The table holds every process of the host (docs/performance.md:
        // bytes per tracked process); an entry is its only cost, the
        // program paths being shared and ids made when a lineage names
        // the process.
        assert!(std::mem::size_of::<(u32, Proc)>() <= 72);
    }

    #[test]
    fn an_id_is_made_once_and_not_kept_for_a_reused_pid() {
        let mut t = table();
        t.forked(5_000_003, 5_000_004, 5 * t.ns_per_tick);
        let first = t.lineage(5_000_004, 8).parent_id.unwrap();
        t.exec_happened(5_000_004, "/usr/bin/curl");
        let again = t.lineage(5_000_004, 8).parent_id.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the parent's id made once");
        t.exited(5_000_003);
        t.forked(5_000_002, 5_000_003, 7 * t.ns_per_tick);
        t.forked(5_000_003, 5_000_005, 8 * t.ns_per_tick);
        assert_eq!(
            t.lineage(5_000_005, 8).parent_id.as_deref(),
            Some("5000003@7")
        );
    }

    #[test]
    fn an_unknown_creator_ends_the_chain_flagged() {
        let mut t = ProcFs::default();
        t.forked(5_100_000, 5_100_001, 0);
        let l = t.lineage(5_100_001, 8);
        assert!(l.ancestors.is_empty());
        assert!(l.truncated);
        assert_eq!(l.id, None);
    }

    #[test]
    fn a_chroots_symlinks_resolve_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("prot")).unwrap();
        std::os::unix::fs::symlink("/prot", root.join("link")).unwrap();
        let root_s = root.to_str().unwrap();
        assert_eq!(
            realpath_in_root(root_s, "/link/../../../prot"),
            Some(format!("{root_s}/prot"))
        );
        assert_eq!(
            realpath_in_root(root_s, "/link"),
            Some(format!("{root_s}/prot"))
        );
        assert_eq!(realpath_in_root(root_s, "/"), Some(root_s.to_string()));
        assert_eq!(realpath_in_root(root_s, "/missing/x"), None);
    }

    /// The login session and terminal the kernel reported at exec are the
    /// process's, inherited by its children; /proc's tty_nr decodes to
    /// the same names.
    #[test]
    fn a_session_and_terminal_follow_exec_and_fork() {
        let mut t = table();
        let (bash, child) = (5_000_003, 5_000_010);
        t.terminal_at_exec(bash, Some(4), Some((136, 2)));
        let l = t.lineage(bash, 8);
        assert_eq!((l.session, l.tty.as_deref()), (Some(4), Some("pts/2")));
        t.forked(bash, child, 3 * t.ns_per_tick);
        let l = t.lineage(child, 8);
        assert_eq!((l.session, l.tty.as_deref()), (Some(4), Some("pts/2")));
        // setsid + exec of a daemon: no terminal any more.
        t.exec_happened(child, "/usr/sbin/daemon");
        t.terminal_at_exec(child, Some(4), None);
        let l = t.lineage(child, 8);
        assert_eq!((l.session, l.tty), (Some(4), None));
        assert_eq!(tty_name(4, 1), "tty1");
        assert_eq!(tty_name(4, 65), "ttyS1");
        assert_eq!(tty_name(137, 3), "pts/259");
        assert_eq!(tty_name(5, 1), "console");
        // tty_nr 34818 = major 136, minor 2; 0 = none.
        let stat = |nr: u32| {
            format!("42 (a b) c) S 1 42 42 {nr} 42 4194560 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0")
        };
        assert_eq!(stat_tty(&stat(34818)), Some((136, 2)));
        assert_eq!(stat_tty(&stat(0)), None);
        assert_eq!(parse_stat(&stat(0)), Some((1, 99)));
    }
}
