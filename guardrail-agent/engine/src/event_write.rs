//! Writing an event's JSON line: the very bytes `serde_json::to_writer`
//! writes for the derived form, written straight.
//!
//! serde_json escapes every key and every string byte by byte and takes
//! the flattened body through its map plumbing: under a chmod storm that
//! was a quarter of the agent's CPU. The members every file and
//! permission event carries are written here, keys as constants, strings
//! copied whole when they hold nothing to escape. Rare members (an exec's
//! or a ring's details, a decision, a mount, ids and capabilities) are
//! handed to serde_json, whose compact form does not depend on where a
//! value sits. The tests compare both writers over generated events.

use crate::canonical::PathSource;
use crate::event::{
    Body, Event, FileDetails, ObjectId, PermDetails, Process, ProcessJson, SyscallResult, Via,
};

impl Event {
    /// Appends this event's JSON to `out`, as `serde_json::to_writer`
    /// would. Returns where a process named by reference closes (the
    /// offset of its `}` from where this event starts), if it was.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<Option<usize>> {
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        uint(out, self.seq);
        out.extend_from_slice(b",\"time\":");
        string(out, &self.time);
        out.extend_from_slice(b",\"ktime_ns\":");
        uint(out, self.ktime_ns);
        if let Some(via) = self.via {
            out.extend_from_slice(match via {
                Via::Syscall => b",\"via\":\"syscall\"".as_slice(),
                Via::IoUring => b",\"via\":\"io_uring\"",
            });
        }
        let reference_end = match &self.body {
            Body::Exec {
                syscall,
                process,
                result,
                exec,
            } => {
                let end = head(out, b"exec", syscall, process, result, start)?;
                out.extend_from_slice(b",\"exec\":");
                serde_json::to_writer(&mut *out, exec)?;
                end
            }
            Body::File {
                syscall,
                process,
                result,
                file,
            } => {
                let end = head(out, b"file", syscall, process, result, start)?;
                out.extend_from_slice(b",\"file\":");
                file_details(out, file)?;
                end
            }
            Body::Perm {
                syscall,
                process,
                result,
                perm,
            } => {
                let end = head(out, b"perm", syscall, process, result, start)?;
                out.extend_from_slice(b",\"perm\":");
                perm_details(out, perm)?;
                end
            }
            Body::Uring {
                syscall,
                process,
                result,
                uring,
            } => {
                let end = head(out, b"uring", syscall, process, result, start)?;
                out.extend_from_slice(b",\"uring\":");
                serde_json::to_writer(&mut *out, uring)?;
                end
            }
            Body::Loss { loss } => {
                out.extend_from_slice(b",\"kind\":\"loss\",\"loss\":");
                serde_json::to_writer(&mut *out, loss)?;
                None
            }
        };
        if let Some(decision) = &self.decision {
            out.extend_from_slice(b",\"decision\":");
            serde_json::to_writer(&mut *out, decision)?;
        }
        strings_unless_empty(out, b",\"redacted\":", &self.redacted);
        out.push(b'}');
        Ok(reference_end)
    }
}

/// `kind`, `syscall`, `process` and `result`; where a reference closes.
fn head(
    out: &mut Vec<u8>,
    kind: &[u8],
    syscall: &str,
    process: &Process,
    result: &SyscallResult,
    start: usize,
) -> serde_json::Result<Option<usize>> {
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\",\"syscall\":");
    string(out, syscall);
    out.extend_from_slice(b",\"process\":");
    let end = match &process.json {
        ProcessJson::Whole(json) => {
            out.extend_from_slice(json.get().as_bytes());
            None
        }
        // As `Process::serialize_cached` writes it.
        ProcessJson::Ref { pv, .. } => {
            out.extend_from_slice(b"{\"pid\":");
            uint(out, process.pid.into());
            out.extend_from_slice(b",\"tid\":");
            uint(out, process.tid.into());
            out.extend_from_slice(b",\"id\":");
            match &process.id {
                Some(id) => string(out, id),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"pv\":");
            uint(out, *pv);
            let end = out.len() - start;
            out.push(b'}');
            Some(end)
        }
        ProcessJson::None => {
            serde_json::to_writer(&mut *out, process)?;
            None
        }
    };
    out.extend_from_slice(b",\"result\":{\"ok\":");
    boolean(out, result.ok);
    out.extend_from_slice(b",\"ret\":");
    out.extend_from_slice(itoa::Buffer::new().format(result.ret).as_bytes());
    out.extend_from_slice(b",\"errno\":");
    match &result.errno {
        Some(errno) => string(out, errno),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(end)
}

fn file_details(out: &mut Vec<u8>, file: &FileDetails) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"op\":");
    string(out, &file.op);
    out.extend_from_slice(b",\"path\":");
    match &file.path {
        Some(path) => string(out, path),
        None => out.extend_from_slice(b"null"),
    }
    string_if_some(out, b",\"raw_path\":", file.raw_path.as_deref());
    path_source_if_some(out, b",\"path_source\":", file.path_source);
    out.extend_from_slice(b",\"resolved\":");
    boolean(out, file.resolved);
    object_if_some(out, file.object.as_ref());
    strings_unless_empty(out, b",\"aliases\":", &file.aliases);
    string_if_some(out, b",\"new_path\":", file.new_path.as_deref());
    path_source_if_some(out, b",\"new_path_source\":", file.new_path_source);
    string_if_some(out, b",\"target\":", file.target.as_deref());
    strings_unless_empty(out, b",\"flags\":", &file.flags);
    string_if_some(out, b",\"mode\":", file.mode.as_deref());
    if let Some(fd) = file.fd {
        out.extend_from_slice(b",\"fd\":");
        out.extend_from_slice(itoa::Buffer::new().format(fd).as_bytes());
    }
    if let Some(length) = file.length {
        out.extend_from_slice(b",\"length\":");
        uint(out, length);
    }
    strings_unless_empty(out, b",\"truncated\":", &file.truncated);
    if let Some(mount) = &file.mount {
        out.extend_from_slice(b",\"mount\":");
        serde_json::to_writer(&mut *out, mount)?;
    }
    out.push(b'}');
    Ok(())
}

fn perm_details(out: &mut Vec<u8>, perm: &PermDetails) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"op\":");
    string(out, &perm.op);
    string_if_some(out, b",\"path\":", perm.path.as_deref());
    string_if_some(out, b",\"raw_path\":", perm.raw_path.as_deref());
    path_source_if_some(out, b",\"path_source\":", perm.path_source);
    object_if_some(out, perm.object.as_ref());
    strings_unless_empty(out, b",\"aliases\":", &perm.aliases);
    if let Some(fd) = perm.fd {
        out.extend_from_slice(b",\"fd\":");
        out.extend_from_slice(itoa::Buffer::new().format(fd).as_bytes());
    }
    string_if_some(out, b",\"mode\":", perm.mode.as_deref());
    strings_unless_empty(out, b",\"mode_bits\":", &perm.mode_bits);
    if let Some(owner) = &perm.owner {
        out.extend_from_slice(b",\"owner\":");
        serde_json::to_writer(&mut *out, owner)?;
    }
    if let Some(ids) = &perm.ids {
        out.extend_from_slice(b",\"ids\":");
        serde_json::to_writer(&mut *out, ids)?;
    }
    if let Some(caps) = &perm.caps {
        out.extend_from_slice(b",\"caps\":");
        serde_json::to_writer(&mut *out, caps)?;
    }
    if let Some(xattr) = &perm.xattr {
        out.extend_from_slice(b",\"xattr\":");
        serde_json::to_writer(&mut *out, xattr)?;
    }
    strings_unless_empty(out, b",\"truncated\":", &perm.truncated);
    out.push(b'}');
    Ok(())
}

fn object_if_some(out: &mut Vec<u8>, object: Option<&ObjectId>) {
    let Some(object) = object else { return };
    out.extend_from_slice(b",\"object\":{\"dev\":\"");
    uint(out, object.dev >> 20);
    out.push(b':');
    uint(out, object.dev & 0xfffff);
    out.extend_from_slice(b"\",\"ino\":");
    uint(out, object.ino);
    out.extend_from_slice(b",\"kernel\":");
    boolean(out, object.kernel);
    out.push(b'}');
}

fn path_source_if_some(out: &mut Vec<u8>, key: &[u8], source: Option<PathSource>) {
    let Some(source) = source else { return };
    out.extend_from_slice(key);
    out.extend_from_slice(match source {
        PathSource::Kernel => b"\"kernel\"".as_slice(),
        PathSource::Agent => b"\"agent\"",
        PathSource::Lexical => b"\"lexical\"",
    });
}

fn string_if_some(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
    if let Some(s) = s {
        out.extend_from_slice(key);
        string(out, s);
    }
}

fn strings_unless_empty(out: &mut Vec<u8>, key: &[u8], list: &[String]) {
    let Some((first, rest)) = list.split_first() else {
        return;
    };
    out.extend_from_slice(key);
    out.push(b'[');
    string(out, first);
    for s in rest {
        out.push(b',');
        string(out, s);
    }
    out.push(b']');
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// A JSON string: copied whole when nothing in it needs escaping (nearly
/// always: paths, names, hashes), else escaped by serde_json itself.
fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("a string is always serialisable");
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// What serde_json escapes: `"`, `\` and control characters below 0x20.
/// Without an early exit, so the loop vectorises.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

#[cfg(test)]
mod tests;
