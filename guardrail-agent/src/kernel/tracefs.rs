//! Tracepoints as tracefs describes them: which exist, and field offsets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TRACEFS: &str = "/sys/kernel/tracing";

/// The tracefs mount, which moved from debugfs to its own mount in 4.1.
pub fn root() -> Option<PathBuf> {
    [TRACEFS, "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Find tracefs, mounting it at /sys/kernel/tracing when it is not mounted
/// (minimal systems and containers often lack the mount, and the agent
/// runs as root anyway).
pub fn root_or_mount() -> std::io::Result<PathBuf> {
    find_or_mount(root, mount_tracefs, Duration::from_secs(10))
}

/// How long to wait for a mount that someone else made to show its
/// `events` directory.
const POLL: Duration = Duration::from_millis(20);

/// `find`, else `mount` and `find` again. Another agent, systemd's
/// `sys-kernel-tracing.mount` or a tracing tool may mount tracefs between
/// our look and our mount — the kernel then refuses ours (EBUSY: the same
/// file system on the same place) — so a failed mount is a success when
/// tracefs shows up within `patience` anyway.
fn find_or_mount(
    find: impl Fn() -> Option<PathBuf>,
    mount: impl FnOnce() -> std::io::Result<()>,
    patience: Duration,
) -> std::io::Result<PathBuf> {
    if let Some(root) = find() {
        return Ok(root);
    }
    if let Err(mount_error) = mount() {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(root) = find() {
                tracing::debug!("tracefs was mounted by someone else meanwhile ({mount_error})");
                return Ok(root);
            }
            if Instant::now() >= deadline {
                return Err(mount_error);
            }
            std::thread::sleep(POLL);
        }
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    find().ok_or_else(|| std::io::Error::other("tracefs mounted but has no events directory"))
}

fn mount_tracefs() -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fs) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn exists(root: &Path, category: &str, name: &str) -> bool {
    root.join("events").join(category).join(name).is_dir()
}

/// Byte offset of `field` in a tracepoint's record, from its `format` file.
pub fn field_offset(root: &Path, category: &str, name: &str, field: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(root.join("events").join(category).join(name).join("format"))
            .ok()?;
    parse_field_offset(&text, field)
}

/// Parse a tracefs `format` text, e.g.
/// `field:pid_t old_pid; offset:16; size:4; signed:1;` (tab-separated).
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line.split("offset:").nth(1)?.split(';').next()?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC_FORMAT: &str = "name: sched_process_exec
ID: 312
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:__data_loc char[] filename;	offset:8;	size:4;	signed:0;
	field:pid_t pid;	offset:12;	size:4;	signed:1;
	field:pid_t old_pid;	offset:16;	size:4;	signed:1;
";

    #[test]
    fn a_mount_refused_because_someone_else_mounted_it_is_a_success() {
        // The first look finds nothing; our mount loses the race (EBUSY);
        // the winner's mount shows up a moment later.
        let looks = std::cell::Cell::new(0);
        let find = || {
            looks.set(looks.get() + 1);
            (looks.get() >= 3).then(|| PathBuf::from("/sys/kernel/tracing"))
        };
        let ebusy = || Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        let root = find_or_mount(find, ebusy, Duration::from_secs(60)).unwrap();
        assert_eq!(root, Path::new("/sys/kernel/tracing"));
    }

    #[test]
    fn a_mount_that_fails_with_nobody_else_mounting_is_an_error() {
        let eperm = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        let err = find_or_mount(|| None, eperm, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn finds_fields_by_exact_name() {
        assert_eq!(parse_field_offset(EXEC_FORMAT, "old_pid"), Some(16));
        assert_eq!(parse_field_offset(EXEC_FORMAT, "pid"), Some(12));
        assert_eq!(parse_field_offset(EXEC_FORMAT, "filename"), Some(8));
        assert_eq!(parse_field_offset(EXEC_FORMAT, "comm"), None);
    }
}
