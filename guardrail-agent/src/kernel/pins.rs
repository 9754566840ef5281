//! Pinned kernel state: the maps and links that keep enforcing and
//! capturing while no agent runs, and their hand-over from one agent to the
//! next.
//!
//! Layout under the root (default `/sys/fs/bpf/guardrail`, on bpffs):
//!
//! ```text
//! abi-<N>/maps/<MAP>          every map of guardrail_common::pinned::MAPS
//! abi-<N>/links-<ns>/<prog>@<target>
//!                             the links of the agent that started at <ns>
//! abi-<N>/retired-<ns>/<MAP>  maps set aside because they could not be
//!                             adopted; removed once the new links enforce
//! ```
//!
//! A link pin keeps its program attached after the agent's fds are gone
//! (SIGKILL, OOM, crash); a map pin keeps the rules, the ring buffer and
//! its counters. A starting agent reuses the maps, attaches its own
//! programs next to the pinned ones, and only then removes the previous
//! links, so that some program enforces at every moment.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, Map, MapData, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use guardrail_common::{pinned, ABI_VERSION};
use tracing::{info, warn};

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/guardrail";
const BPFFS_MAGIC: libc::c_long = 0xcafe_4a11;

/// What a starting agent found in its state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing pinned: a first start, or after `--unload` or a reboot.
    Nothing,
    /// A complete state written by a build with this layout.
    Adoptable,
    /// Pins that must not be adopted (why): they keep enforcing until
    /// this agent's programs do, then they go.
    Unusable(String),
}

/// The state directory of this build's ABI, owned by this agent.
pub struct StateDir {
    root: PathBuf,
    dir: PathBuf,
    /// This run's link directory.
    links: PathBuf,
    /// Held for the agent's life: one owner at a time.
    _lock: File,
}

/// Monotonic ns, the clock of `bpf_ktime_get_ns` and of records.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as libc::c_long == BPFFS_MAGIC }
}

/// Make sure `root`'s parent is a BPF filesystem, mounting one at
/// /sys/fs/bpf when nothing is mounted there (fresh boots without systemd).
fn ensure_bpffs(root: &Path) -> Result<()> {
    let parent = root.parent().unwrap_or(Path::new("/"));
    if is_bpffs(parent) {
        return Ok(());
    }
    if parent != Path::new("/sys/fs/bpf") {
        bail!(
            "{} is not on a BPF filesystem (bpffs); pin under /sys/fs/bpf or mount one with \
             `mount -t bpf bpf {}`",
            root.display(),
            parent.display()
        );
    }
    std::fs::create_dir_all(parent).ok();
    let ret = unsafe {
        // SAFETY: constant C strings.
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    // Another agent or systemd may have mounted it in the meantime.
    if ret != 0 && !is_bpffs(parent) {
        bail!(
            "no BPF filesystem at /sys/fs/bpf and mounting one failed ({}); mount it with \
             `mount -t bpf bpf /sys/fs/bpf`",
            std::io::Error::last_os_error()
        );
    }
    info!("mounted a BPF filesystem at /sys/fs/bpf for the pinned state");
    Ok(())
}

fn mkdir_private(path: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("creating {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Take the owner lock of `dir`, or say who holds it.
pub(super) fn lock(dir: &Path) -> Result<File> {
    let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: a valid fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let owner = read_state(&dir.join("maps"))
            .map(|s| s[pinned::OWNER_PID as usize])
            .unwrap_or(0);
        bail!(
            "another guardrail-agent (pid {owner}) owns the pinned state in {}: stop it first \
             (two agents would take each other's records)",
            dir.display()
        );
    }
    Ok(file)
}

/// The slots of a pinned AGENT_STATE map in `maps`.
fn read_state(maps: &Path) -> Result<[u64; pinned::SLOTS as usize]> {
    let data = MapData::from_pin(maps.join("AGENT_STATE"))?;
    let array: Array<MapData, u64> = Array::try_from(Map::Array(data))?;
    let mut slots = [0; pinned::SLOTS as usize];
    for (i, s) in slots.iter_mut().enumerate() {
        *s = array.get(&(i as u32), 0)?;
    }
    Ok(slots)
}

/// Records waiting in a pinned ring buffer that will not be read: counted
/// so that the loss they are is reported.
fn count_unread(maps: &Path) -> u64 {
    let Ok(data) = MapData::from_pin(maps.join("EVENTS")) else {
        return 0;
    };
    let Ok(mut ring) = RingBuf::try_from(Map::RingBuf(data)) else {
        return 0;
    };
    let mut n = 0;
    while ring.next().is_some() {
        n += 1;
    }
    n
}

impl StateDir {
    /// Open (creating) this build's state directory under `root` and take
    /// ownership of it.
    pub fn open(root: &Path) -> Result<Self> {
        ensure_bpffs(root)?;
        mkdir_private(root)?;
        let dir = root.join(format!("abi-{ABI_VERSION}"));
        mkdir_private(&dir)?;
        let lock = lock(&dir)?;
        let links = dir.join(format!("links-{}", monotonic_ns()));
        Ok(Self {
            root: root.to_path_buf(),
            dir,
            links,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// States pinned by builds of other ABI versions: never adopted,
    /// removed once this agent enforces.
    pub fn others(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| *p != self.dir)
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn maps(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Whether the maps pinned here can be adopted with `ring_bytes` of
    /// ring buffer.
    pub fn inspect(&self, ring_bytes: u32) -> Found {
        let present: Vec<&str> = pinned::MAPS
            .iter()
            .copied()
            .filter(|m| self.map_path(m).exists())
            .collect();
        if present.is_empty() {
            return Found::Nothing;
        }
        // A build with other layouts may pin other maps: say so, rather
        // than call its complete state half-written.
        let other_layout = |mark: u64| mark != 0 && mark != pinned::layout_mark();
        if read_state(&self.maps()).is_ok_and(|s| other_layout(s[pinned::COMPLETE as usize])) {
            return Found::Unusable("written by a build with other map layouts".into());
        }
        if present.len() < pinned::MAPS.len() {
            let missing: Vec<&str> = pinned::MAPS
                .iter()
                .copied()
                .filter(|m| !present.contains(m))
                .collect();
            return Found::Unusable(format!("half-written: {} not pinned", missing.join(", ")));
        }
        let state = match read_state(&self.maps()) {
            Ok(s) => s,
            Err(e) => return Found::Unusable(format!("its AGENT_STATE is unreadable ({e:#})")),
        };
        if state[pinned::COMPLETE as usize] != pinned::layout_mark() {
            return Found::Unusable(
                "half-written, or written by a build with other map layouts".into(),
            );
        }
        let pinned_ring = state[pinned::RING_BYTES as usize];
        if pinned_ring != ring_bytes as u64 {
            return Found::Unusable(format!(
                "its ring buffer has {pinned_ring} bytes and capture.ring_buffer_bytes asks for {ring_bytes}"
            ));
        }
        Found::Adoptable
    }

    /// Move unusable maps out of the way, so that this agent creates new
    /// ones; the programs still attached keep using them until
    /// [`StateDir::retire`].
    pub fn set_aside(&self) -> Result<()> {
        if !self.maps().exists() {
            return Ok(());
        }
        let to = self.dir.join(format!("retired-{}", monotonic_ns()));
        std::fs::rename(self.maps(), &to)
            .with_context(|| format!("moving {} aside", self.maps().display()))
    }

    /// Create the directories this run pins into.
    pub fn prepare(&self) -> Result<()> {
        mkdir_private(&self.maps())?;
        mkdir_private(&self.links)
    }

    /// Pin `link` as `name` in this run's link directory.
    pub fn pin_link(&self, link: FdLink, name: &str) -> Result<PinnedLink> {
        let path = self.links.join(name.replace('/', ":"));
        link.pin(&path)
            .with_context(|| format!("pinning {}", path.display()))
    }

    /// This run's programs enforce and capture: remove every older link
    /// (their programs detach), the maps set aside, and the state of other
    /// ABI versions. Returns the records left unread in rings that go.
    pub fn retire(&self) -> Result<u64> {
        let mut unread = 0;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("links-") && path != self.links {
                remove_tree(&path)?;
            } else if name.starts_with("retired-") {
                unread += count_unread(&path);
                remove_tree(&path)?;
            }
        }
        for entry in std::fs::read_dir(&self.root)?.flatten() {
            let path = entry.path();
            if path != self.dir {
                // Another ABI's state: its records cannot be decoded here.
                unread += count_unread(&path.join("maps"));
                warn!(
                    "removing the pinned state of another guardrail build ({})",
                    path.display()
                );
                remove_tree(&path)?;
            }
        }
        Ok(unread)
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// `guardrail-agent --unload`: detach everything guardrail pinned under
/// `root` and free its maps. Refused while an agent owns the state. Returns
/// once the programs are gone from the kernel (false: nothing was pinned).
pub fn unload(root: &Path) -> Result<bool> {
    if !root.exists() {
        return Ok(false);
    }
    let mut locks = Vec::new();
    let mut programs = Vec::new();
    for entry in std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .flatten()
    {
        if entry.path().is_dir() {
            locks.push(lock(&entry.path()).context("the agent is running")?);
            programs.extend(pinned_programs(&entry.path()));
        }
    }
    remove_tree(root)?;
    // The kernel frees an unpinned link after an RCU grace period, and
    // detaches its program then: wait for it, so that nothing guardrail
    // enforced is still enforced when this returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while programs.iter().any(|&id| program_exists(id)) {
        if std::time::Instant::now() > deadline {
            bail!("guardrail's programs are still attached 30 s after their pins were removed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(true)
}

/// Ids of the programs behind the link pins of a state directory.
fn pinned_programs(dir: &Path) -> Vec<u32> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("links-") {
            continue;
        }
        for pin in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(link) = PinnedLink::from_pin(pin.path()) {
                let fd: FdLink = link.into();
                if let Ok(info) = fd.info() {
                    ids.push(info.program_id());
                }
            }
        }
    }
    ids
}

/// Whether the kernel still has program `id` (BPF_PROG_GET_FD_BY_ID).
fn program_exists(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    // union bpf_attr for *_GET_FD_BY_ID: the id, next_id, open_flags.
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: a valid attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: the fd the kernel just returned.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

/// The links this run attaches: pinned when the state is kept.
pub struct Links<'a> {
    state: Option<&'a StateDir>,
    /// Held while the agent runs: the links then outlive even an unmount
    /// of the BPF filesystem (which would release the pins).
    pub pinned: Vec<PinnedLink>,
    /// Attachments this kernel cannot pin (tracepoints before 5.15, which
    /// attach through a perf event, not a BPF link): they lapse with the
    /// agent.
    pub unpinnable: Vec<String>,
}

impl<'a> Links<'a> {
    pub fn new(state: Option<&'a StateDir>) -> Self {
        Self {
            state,
            pinned: Vec::new(),
            unpinnable: Vec::new(),
        }
    }

    /// Whether links must be taken from their program and pinned.
    pub fn pinning(&self) -> bool {
        self.state.is_some()
    }

    /// Whether tracepoint attachments are BPF links this kernel can pin.
    pub fn tracepoints_pinnable(&self) -> bool {
        aya::features().bpf_perf_link()
    }

    /// Pin `link` (taken from its program) as `name`.
    pub fn keep(&mut self, name: &str, link: FdLink) -> Result<()> {
        if let Some(state) = self.state {
            self.pinned.push(state.pin_link(link, name)?);
        }
        Ok(())
    }

    /// An attachment that stays with the agent's fds.
    pub fn not_pinnable(&mut self, name: &str) {
        if self.state.is_some() {
            self.unpinnable.push(name.to_string());
        }
    }
}

/// What is pinned under `root` while no agent runs, for `guardrail doctor`
/// (None: nothing).
pub fn describe(root: &Path) -> Option<String> {
    let entries = std::fs::read_dir(root).ok()?;
    let mut parts = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(state) = read_state(&dir.join("maps")) else {
            parts.push(format!("{}: maps unreadable or missing", dir.display()));
            continue;
        };
        let idle_s =
            monotonic_ns().saturating_sub(state[pinned::LAST_SEEN_NS as usize]) / 1_000_000_000;
        let how = if state[pinned::STOPPED_CLEANLY as usize] != 0 {
            "stopped cleanly"
        } else {
            "crashed or was killed"
        };
        parts.push(format!(
            "{}: the rules last in force are enforced and records wait in the ring buffer \
             ({} bytes); no agent for {idle_s} s (pid {} {how})",
            dir.display(),
            state[pinned::RING_BYTES as usize],
            state[pinned::OWNER_PID as usize],
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
