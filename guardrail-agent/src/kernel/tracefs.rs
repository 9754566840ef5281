//! Tracepoints as tracefs describes them: which exist, and field offsets.

use std::path::{Path, PathBuf};

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
    if let Some(root) = root() {
        return Ok(root);
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fs) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    root().ok_or_else(|| std::io::Error::other("tracefs mounted but has no events directory"))
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
    fn finds_fields_by_exact_name() {
        assert_eq!(parse_field_offset(EXEC_FORMAT, "old_pid"), Some(16));
        assert_eq!(parse_field_offset(EXEC_FORMAT, "pid"), Some(12));
        assert_eq!(parse_field_offset(EXEC_FORMAT, "filename"), Some(8));
        assert_eq!(parse_field_offset(EXEC_FORMAT, "comm"), None);
    }
}
