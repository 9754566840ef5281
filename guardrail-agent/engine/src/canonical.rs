//! Canonical paths: every path in an event names the object without `.`,
//! `..` or `//` components and with symlinked directories resolved, so
//! that a rule on `/etc/crontab` decides `cd /etc/ssh && echo >> ../crontab`
//! too. The kernel's own answer is used where the probes have one (a walk
//! from the opened file); otherwise the agent completes the string the
//! program passed, and the event says which happened ([`PathSource`]).

use serde::{Deserialize, Serialize};

/// How an event's path was made canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathSource {
    /// Walked in the kernel from the object itself (the opened file, the
    /// mapped executable, the fd of an f* call): what the kernel acted on.
    Kernel,
    /// The agent resolved the directories on the live file system when it
    /// read the record (the final component kept as given, or followed
    /// where the call follows it): right unless a directory on the path
    /// was moved or re-pointed in the moment between.
    Agent,
    /// The parent directory no longer existed when the agent looked (or
    /// the name is not valid UTF-8): only `.`, `..` and `//` were removed
    /// from the text.
    Lexical,
}

/// Whether the call acts on what a final symlink points to (chmod, chown,
/// truncate, exec) or on the name itself (unlink, rename, link, symlink,
/// lchown, mknod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalComponent {
    Follow,
    Keep,
}

/// The file system as it is now, for the agent's completion.
pub trait Resolve {
    /// `realpath(3)` of `path`: every symlink and `..` resolved; `None`
    /// when some component does not exist.
    fn realpath(&mut self, path: &str) -> Option<String>;
    /// `realpath(3)` of `path` as a process whose root is the directory
    /// `root` resolves it (absolute symlinks and `..` stay inside the
    /// root), named from the host's root.
    fn realpath_in(&mut self, _root: &str, _path: &str) -> Option<String> {
        None
    }
    /// `realpath(3)` of directory `dir`, then `name` in it.
    fn realpath_join(&mut self, dir: &str, name: &str) -> Option<String> {
        self.realpath(dir).map(|d| join_name(&d, name))
    }
}

/// `name` in the canonical directory `dir`.
pub fn join_name(dir: &str, name: &str) -> String {
    let mut out = String::with_capacity(dir.len() + 1 + name.len());
    out.push_str(dir);
    if !dir.ends_with('/') {
        out.push('/');
    }
    out.push_str(name);
    out
}

/// The file system as a process in a chroot at `root` sees it: symlinks
/// resolved inside the root.
struct InRoot<'a> {
    root: &'a str,
    fs: &'a mut dyn Resolve,
}

impl Resolve for InRoot<'_> {
    fn realpath(&mut self, path: &str) -> Option<String> {
        self.fs.realpath_in(self.root, path)
    }
}

/// Nothing to resolve with: completion falls back to the lexical form.
pub struct NoFileSystem;

impl Resolve for NoFileSystem {
    fn realpath(&mut self, _: &str) -> Option<String> {
        None
    }
}

/// `.`, `..` and empty components removed from an absolute path by its
/// text alone (`..` at the root stays at the root, as the kernel does).
pub fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return "/".into();
    }
    let mut out = String::with_capacity(path.len());
    for part in parts {
        out.push('/');
        out.push_str(part);
    }
    out
}

/// Complete an absolute path the agent has only as a string: resolve its
/// directories on the live file system, keep or follow the final
/// component as the call does.
/// `path` must be absolute; anything else is returned as it is.
pub fn complete(path: &str, last: FinalComponent, fs: &mut dyn Resolve) -> (String, PathSource) {
    if !path.starts_with('/') {
        return (path.to_string(), PathSource::Lexical);
    }
    // Names that were not UTF-8 (`\xff`) and backslashes (`\\`) are
    // escaped in events: the escaped text names no file, so only the text
    // can be cleaned.
    if path.contains('\\') {
        return (lexical(path), PathSource::Lexical);
    }
    if last == FinalComponent::Follow {
        if let Some(real) = fs.realpath(path) {
            return (real, PathSource::Agent);
        }
    }
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if matches!(name, "" | "." | "..") {
        // A directory named by `.`/`..` or a trailing slash: the whole
        // path is a directory to resolve.
        return match fs.realpath(path) {
            Some(real) => (real, PathSource::Agent),
            None => (lexical(path), PathSource::Lexical),
        };
    }
    let parent = if parent.is_empty() { "/" } else { parent };
    match fs.realpath_join(parent, name) {
        Some(named) => (named, PathSource::Agent),
        None => (lexical(path), PathSource::Lexical),
    }
}

/// [`complete`] for a process whose root is the directory `root` (named
/// from the host's root): `path` is absolute in that root, the answer
/// absolute in the host's.
pub fn complete_in(
    root: &str,
    path: &str,
    last: FinalComponent,
    fs: &mut dyn Resolve,
) -> (String, PathSource) {
    if root == "/" {
        return complete(path, last, fs);
    }
    match complete(path, last, &mut InRoot { root, fs }) {
        (real, PathSource::Agent) => (real, PathSource::Agent),
        // Only the text: `..` cannot climb above the root.
        (clean, source) => (format!("{}{clean}", root.trim_end_matches('/')), source),
    }
}

/// `dir` (a directory the kernel walked, so already canonical) joined
/// with the leading `.` and `..` components of the relative path `rel`,
/// which are consumed by the text alone: a `..` of a walked directory is
/// its parent, also when the directory was removed (and its path
/// re-created as something else) since. The rest of `rel` is returned.
pub fn climb<'a>(dir: &str, rel: &'a str) -> (String, &'a str) {
    let mut dir = dir.trim_end_matches('/').to_string();
    let mut rest = rel;
    loop {
        let (part, after) = rest.split_once('/').unwrap_or((rest, ""));
        match part {
            "." | "" if !rest.is_empty() => {}
            ".." => {
                let cut = dir.rfind('/').unwrap_or(0);
                dir.truncate(cut);
            }
            _ => break,
        }
        rest = after;
    }
    if dir.is_empty() {
        dir.push('/');
    }
    (dir, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A file system of directories and symlinks, resolved the way the
    /// kernel resolves them.
    struct Tree {
        dirs: Vec<&'static str>,
        files: Vec<&'static str>,
        links: HashMap<&'static str, &'static str>,
    }

    impl Resolve for Tree {
        fn realpath(&mut self, path: &str) -> Option<String> {
            let mut out: Vec<String> = Vec::new();
            let mut todo: Vec<String> = path.split('/').rev().map(String::from).collect();
            let mut hops = 0;
            while let Some(part) = todo.pop() {
                match part.as_str() {
                    "" | "." => continue,
                    ".." => {
                        out.pop();
                        continue;
                    }
                    _ => {}
                }
                let here =
                    format!("/{}", [out.join("/"), part.clone()].join("/")).replace("//", "/");
                if let Some(target) = self.links.get(here.as_str()) {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if target.starts_with('/') {
                        out.clear();
                    }
                    todo.extend(target.split('/').rev().map(String::from));
                } else if self.dirs.contains(&here.as_str()) || self.files.contains(&here.as_str())
                {
                    out.push(part);
                } else {
                    return None;
                }
            }
            Some(format!("/{}", out.join("/")))
        }
    }

    fn tree() -> Tree {
        Tree {
            dirs: vec!["/x", "/x/prot", "/x/sub", "/x/elsewhere", "/etc"],
            files: vec!["/x/prot/a.conf", "/etc/real"],
            links: HashMap::from([
                ("/x/elsewhere/link", "/x/prot"),
                ("/x/rel", "prot"),
                ("/etc/alias", "real"),
            ]),
        }
    }

    #[test]
    fn lexical_removes_dots_and_double_slashes() {
        assert_eq!(lexical("/x/sub/../prot/a.conf"), "/x/prot/a.conf");
        assert_eq!(lexical("/x/prot/./b.conf"), "/x/prot/b.conf");
        assert_eq!(lexical("/x//prot//c.conf"), "/x/prot/c.conf");
        assert_eq!(lexical("/../.."), "/");
        assert_eq!(lexical("/a/b/"), "/a/b");
    }

    #[test]
    fn every_spelling_of_a_file_completes_to_one_path() {
        let mut t = tree();
        for spelled in [
            "/x/sub/../prot/a.conf",
            "/x/prot/./a.conf",
            "/x//prot//a.conf",
            "/x/elsewhere/link/a.conf",
            "/x/rel/a.conf",
            "/x/elsewhere/link/../prot/a.conf",
        ] {
            for last in [FinalComponent::Keep, FinalComponent::Follow] {
                assert_eq!(
                    complete(spelled, last, &mut t),
                    ("/x/prot/a.conf".to_string(), PathSource::Agent),
                    "{spelled} {last:?}"
                );
            }
        }
    }

    #[test]
    fn a_final_symlink_is_followed_only_when_the_call_follows_it() {
        let mut t = tree();
        assert_eq!(
            complete("/etc/alias", FinalComponent::Follow, &mut t).0,
            "/etc/real"
        );
        assert_eq!(
            complete("/etc/alias", FinalComponent::Keep, &mut t).0,
            "/etc/alias"
        );
    }

    #[test]
    fn a_file_that_is_gone_keeps_its_resolved_directory() {
        // unlink: the name no longer exists, its directory does.
        let (path, source) = complete("/x/sub/../prot/gone", FinalComponent::Follow, &mut tree());
        assert_eq!(path, "/x/prot/gone");
        assert_eq!(source, PathSource::Agent);
    }

    #[test]
    fn a_directory_that_is_gone_leaves_the_lexical_form_and_says_so() {
        let (path, source) = complete("/gone/dir/../f", FinalComponent::Keep, &mut tree());
        assert_eq!(path, "/gone/f");
        assert_eq!(source, PathSource::Lexical);
    }

    #[test]
    fn names_that_are_not_utf8_are_only_cleaned() {
        let (path, source) = complete("/x//a\\xffb", FinalComponent::Keep, &mut tree());
        assert_eq!(path, "/x/a\\xffb");
        assert_eq!(source, PathSource::Lexical);
    }

    #[test]
    fn a_relative_path_is_left_alone() {
        assert_eq!(
            complete("x/../y", FinalComponent::Keep, &mut tree()),
            ("x/../y".to_string(), PathSource::Lexical)
        );
    }

    #[test]
    fn dot_dot_as_the_last_component_resolves_the_directory() {
        assert_eq!(
            complete("/x/elsewhere/link/..", FinalComponent::Keep, &mut tree()).0,
            "/x"
        );
    }

    #[test]
    fn leading_dot_dots_climb_the_walked_directory_by_its_text() {
        assert_eq!(climb("/d/work", "../prot/a"), ("/d".to_string(), "prot/a"));
        assert_eq!(climb("/d/work", "./../../a"), ("/".to_string(), "a"));
        assert_eq!(climb("/", "../../a"), ("/".to_string(), "a"));
        assert_eq!(climb("/d", "a/../b"), ("/d".to_string(), "a/../b"));
        assert_eq!(climb("/d", ".."), ("/".to_string(), ""));
    }

    /// A chroot at /x whose /link points (absolutely) at /prot.
    struct Jail;

    impl Resolve for Jail {
        fn realpath(&mut self, path: &str) -> Option<String> {
            // The host's view: /link does not exist at the host's root.
            (path == "/x/prot").then(|| path.to_string())
        }
        fn realpath_in(&mut self, root: &str, path: &str) -> Option<String> {
            assert_eq!(root, "/x");
            match path {
                "/link" | "/prot" | "/link/../prot" => Some("/x/prot".into()),
                _ => None,
            }
        }
    }

    #[test]
    fn a_chroots_absolute_path_is_completed_inside_the_chroot() {
        assert_eq!(
            complete_in("/x", "/link/a", FinalComponent::Keep, &mut Jail),
            ("/x/prot/a".to_string(), PathSource::Agent)
        );
        assert_eq!(
            complete_in("/x", "/gone/../../a", FinalComponent::Keep, &mut Jail),
            ("/x/a".to_string(), PathSource::Lexical)
        );
        assert_eq!(
            complete_in("/", "/x/prot/a", FinalComponent::Keep, &mut Jail),
            ("/x/prot/a".to_string(), PathSource::Agent)
        );
    }
}
