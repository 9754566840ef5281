//! Resolving user and group names for rules, from /etc/passwd and
//! /etc/group (when the rules load, not per event).

use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct Names {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
    /// Group name → member user names, from /etc/group's fourth field.
    members: HashMap<String, Vec<String>>,
    /// (user, home directory) in /etc/passwd order: what `~*/` and
    /// `~name/` in path patterns expand to.
    homes: Vec<(String, String)>,
}

fn parse_homes(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let home = f.get(5)?.trim_end_matches('/');
            // A home of "/" (or none) would turn `~*/.bashrc` into a
            // path directly under the root: kept, as "/" itself.
            let home = if home.is_empty() { "/" } else { home };
            Some((f.first()?.to_string(), home.to_string()))
        })
        .collect()
}

fn parse_members(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)?
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            Some((f.first()?.to_string(), members))
        })
        .collect()
}

fn parse(text: &str) -> HashMap<String, u32> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// The alphabetically first name for `id`: a stable answer where names
/// share an id.
fn first_named(map: &HashMap<String, u32>, id: u32) -> Option<&str> {
    map.iter()
        .filter(|(_, &v)| v == id)
        .map(|(k, _)| k.as_str())
        .min()
}

impl Names {
    pub fn from_files(passwd: &Path, group: &Path) -> Self {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let group = read(group);
        let passwd = read(passwd);
        Names {
            users: parse(&passwd),
            groups: parse(&group),
            members: parse_members(&group),
            homes: parse_homes(&passwd),
        }
    }

    pub fn system() -> Self {
        Self::from_files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    pub fn from_text(passwd: &str, group: &str) -> Self {
        Names {
            users: parse(passwd),
            groups: parse(group),
            members: parse_members(group),
            homes: parse_homes(passwd),
        }
    }

    pub fn user(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }

    /// The name of user `uid` (the first listed, if several share it).
    pub fn user_name(&self, uid: u32) -> Option<&str> {
        first_named(&self.users, uid)
    }

    pub fn group_name(&self, gid: u32) -> Option<&str> {
        first_named(&self.groups, gid)
    }

    /// Every distinct home directory, in /etc/passwd order.
    pub fn homes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (_, h) in &self.homes {
            if !out.contains(&h.as_str()) {
                out.push(h);
            }
        }
        out
    }

    /// The home directory of user `name`.
    pub fn home_of(&self, name: &str) -> Option<&str> {
        self.homes
            .iter()
            .find(|(u, _)| u == name)
            .map(|(_, h)| h.as_str())
    }

    /// The uids listed as members of group `name`.
    pub fn member_uids(&self, name: &str) -> Vec<u32> {
        self.members
            .get(name)
            .map(|m| m.iter().filter_map(|u| self.user(u)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group_lines() {
        let n = Names::from_text(
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            "root:x:0:\nadm:x:4:alice\n",
        );
        assert_eq!(n.user("alice"), Some(1000));
        assert_eq!(n.user("bob"), None);
        assert_eq!(n.group("adm"), Some(4));
        assert_eq!(n.user_name(1000), Some("alice"));
        assert_eq!(n.group_name(4), Some("adm"));
        assert_eq!(n.group_name(5), None);
        assert_eq!(n.homes(), vec!["/root", "/home/alice"]);
        assert_eq!(n.home_of("alice"), Some("/home/alice"));
    }
}
