//! Event kinds as rules name them (`on = ["file.write"]`), as bits: a
//! kind's bit is its position in the operation catalogue
//! ([`guardrail_common::catalogue`]).

use guardrail_common::catalogue::OPERATIONS;

use crate::event::Body;
use crate::interpret::is_write_flags;

/// Every kind, in bit order (the operation catalogue's order).
pub const KINDS: &[&str] = &{
    let mut kinds = [""; OPERATIONS.len()];
    let mut i = 0;
    while i < OPERATIONS.len() {
        kinds[i] = OPERATIONS[i].kind;
        i += 1;
    }
    kinds
};

fn bit(name: &str) -> u32 {
    KINDS.iter().position(|k| *k == name).map_or(0, |i| 1 << i)
}

/// The bit of `prefix` + `op` (`perm.` + `chmod`), without making the
/// name: this runs for every event.
fn bit_of(prefix: &str, op: &str) -> u32 {
    KINDS
        .iter()
        .position(|k| k.strip_prefix(prefix) == Some(op))
        .map_or(0, |i| 1 << i)
}

/// The bits of a name from `on`: a kind, `file.*`, `perm.*` or `*`.
pub fn mask_of(name: &str) -> Option<u32> {
    match name {
        "*" => Some(u32::MAX),
        "file.*" | "perm.*" => {
            let prefix = &name[..name.len() - 1];
            Some(
                KINDS
                    .iter()
                    .filter(|k| k.starts_with(prefix))
                    .map(|k| bit(k))
                    .sum(),
            )
        }
        _ => KINDS.contains(&name).then(|| bit(name)),
    }
}

/// The closest of `candidates` to a misspelt `name`, if any is close.
pub fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(name, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Every kind an event belongs to: an open that writes is `file.open` and
/// `file.write`; a truncate is `file.truncate` and `file.write`.
pub fn mask_of_event(body: &Body) -> u32 {
    match body {
        Body::Exec { .. } => mask_of_op(BodyKind::Exec, "exec", false, false),
        Body::File { file, .. } => mask_of_op(
            BodyKind::File,
            &file.op,
            is_write_flags(&file.flags),
            file.flags.iter().any(|f| f == "create"),
        ),
        Body::Perm { perm, .. } => mask_of_op(BodyKind::Perm, &perm.op, false, false),
        Body::Uring { uring, .. } => mask_of_op(BodyKind::Uring, &uring.op, false, false),
        Body::Loss { .. } => 0,
    }
}

/// The kinds of events that carry a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Exec,
    File,
    Perm,
    Uring,
}

/// [`mask_of_event`] from what decides it: the event's kind, its `op`,
/// and for an open whether its flags write (`write`) and create.
pub fn mask_of_op(kind: BodyKind, op: &str, write: bool, create: bool) -> u32 {
    match kind {
        BodyKind::Exec => bit("exec"),
        BodyKind::File => match op {
            "open" => {
                let mut m = bit("file.open");
                if write {
                    m |= bit("file.write");
                } else {
                    m |= bit("file.read");
                }
                if create {
                    m |= bit("file.create");
                }
                m
            }
            "truncate" => bit("file.truncate") | bit("file.write"),
            // A new directory is a new name in its parent, as the kernel
            // decides it (path_mkdir: create).
            "mkdir" => bit("file.mkdir") | bit("file.create"),
            // Every call that changes what is mounted where.
            "mount" | "umount" | "pivot_root" | "move_mount" => bit("file.mount"),
            op => bit_of("file.", op),
        },
        BodyKind::Perm => bit_of("perm.", op),
        BodyKind::Uring => bit_of("uring.", op),
    }
}

/// Whether a deny rule's `fallback = "revert"` can undo an event of these
/// kinds (the catalogue's revertable kinds: mode and owner changes).
pub fn revertable_mask(event: u32) -> bool {
    OPERATIONS
        .iter()
        .enumerate()
        .any(|(bit, operation)| operation.revertable && event & (1 << bit) != 0)
}

/// The name of the first kind in `mask` the event has (for explanations).
pub fn name_in(mask: u32, event_mask: u32) -> &'static str {
    let both = mask & event_mask;
    KINDS
        .iter()
        .enumerate()
        .find(|(i, _)| both & (1 << i) != 0)
        .map_or("", |(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_their_family() {
        let file = mask_of("file.*").unwrap();
        assert_eq!(
            file & mask_of("file.rename").unwrap(),
            mask_of("file.rename").unwrap()
        );
        assert_eq!(file & mask_of("perm.chmod").unwrap(), 0);
        assert_eq!(mask_of("file.wirte"), None);
        assert_eq!(closest("file.wirte", KINDS), Some("file.write"));
        assert_eq!(closest("perm.chmode", KINDS), Some("perm.chmod"));
        assert_eq!(closest("network", KINDS), None);
    }
}
