//! Which service, container and user an event comes from: the systemd
//! unit and container a cgroup path names, and user and group names for
//! ids. Pure: the agent's process table supplies cgroup paths and the
//! passwd/group text.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A container a cgroup path shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// docker, containerd, cri-o, podman, kubernetes (a pod's cgroup whose
    /// runtime the path does not say).
    pub runtime: String,
    /// The container id (64 hex digits as the runtime names it).
    pub id: String,
}

/// Suffixes of systemd unit names that own cgroups.
const UNIT_SUFFIXES: [&str; 4] = [".service", ".scope", ".socket", ".mount"];

/// The innermost systemd unit in a cgroup path:
/// `/system.slice/nginx.service` → `nginx.service`,
/// `/user.slice/user-1000.slice/user@1000.service/app.slice/vte-1.scope`
/// → `vte-1.scope`, `/user.slice/user-1000.slice/session-4.scope` →
/// `session-4.scope`.
pub fn unit_of(cgroup: &str) -> Option<&str> {
    cgroup
        .rsplit('/')
        .find(|part| UNIT_SUFFIXES.iter().any(|s| part.ends_with(s)) && part.len() > 6)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container a cgroup path shows, for the layouts of the common
/// runtimes with systemd's and cgroupfs's drivers:
/// `…/docker-<id>.scope`, `/docker/<id>`, `…/cri-containerd-<id>.scope`,
/// `…/crio-<id>.scope`, `…/libpod-<id>.scope`, `/kubepods/…/<id>`.
pub fn container_of(cgroup: &str) -> Option<Container> {
    let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let scoped = part.strip_suffix(".scope").unwrap_or(part);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = scoped.strip_prefix(prefix) {
                if is_container_id(id) {
                    return Some(Container {
                        runtime: runtime.into(),
                        id: id.into(),
                    });
                }
            }
        }
        if is_container_id(part) && i > 0 {
            let runtime = if parts[0] == "docker" {
                "docker"
            } else if parts[0].starts_with("kubepods") {
                "kubernetes"
            } else {
                continue;
            };
            return Some(Container {
                runtime: runtime.into(),
                id: (*part).into(),
            });
        }
    }
    None
}

/// Names by numeric id, from /etc/passwd or /etc/group text: a list
/// sorted by id (a host's files list tens of ids; a binary search is
/// quicker than hashing, and every event names its user and group).
#[derive(Clone, Debug, Default)]
pub struct IdNames {
    names: Vec<(u32, Arc<str>)>,
}

impl IdNames {
    /// The first name listed for each id (`name:x:id:…` lines).
    pub fn parse(text: &str) -> IdNames {
        let mut names = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut f = line.split(':');
            let (Some(name), Some(id)) = (f.next(), f.nth(1)) else {
                continue;
            };
            if let Ok(id) = id.parse::<u32>() {
                names.push((id, Arc::from(name)));
            }
        }
        // A stable sort keeps each id's names in file order, and dedup
        // keeps the first of them.
        names.sort_by_key(|(id, _)| *id);
        names.dedup_by_key(|(id, _)| *id);
        IdNames { names }
    }

    /// The name of `id`; None for ids the file does not list (shown as
    /// the number only, never guessed).
    pub fn get(&self, id: u32) -> Option<Arc<str>> {
        let at = self.names.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        Some(self.names[at].1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4b1f0c7e8a3d2b6c9f0e1d2c3b4a59687766554433221100ffeeddccbbaa9988";

    #[test]
    fn units_are_the_innermost_service_or_scope() {
        assert_eq!(
            unit_of("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/vte-1.scope"),
            Some("vte-1.scope")
        );
        assert_eq!(
            unit_of("/user.slice/user-1000.slice/session-4.scope"),
            Some("session-4.scope")
        );
        assert_eq!(unit_of("/"), None);
        assert_eq!(unit_of("/user.slice"), None);
    }

    #[test]
    fn containers_of_each_runtime_and_driver() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), "docker"),
            (format!("/docker/{ID}"), "docker"),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{ID}.scope"),
                "containerd",
            ),
            (format!("/kubepods.slice/crio-{ID}.scope"), "cri-o"),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
            ),
            (format!("/kubepods/burstable/pod1234/{ID}"), "kubernetes"),
        ];
        for (path, runtime) in cases {
            let c = container_of(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(c.runtime, runtime, "{path}");
            assert_eq!(c.id, ID);
        }
        assert_eq!(container_of("/system.slice/nginx.service"), None);
        assert_eq!(container_of(&format!("/system.slice/{ID}")), None);
        assert_eq!(container_of("/docker-short.scope"), None);
    }

    #[test]
    fn names_by_id_take_the_first_listed_and_never_guess() {
        let names = IdNames::parse("root:x:0:0::/root:/bin/sh\n# c\nalice:x:1000:1000::/home/a:/bin/sh\nalias:x:1000:1000::/:/bin/sh\nbad line\n");
        assert_eq!(names.get(1000).as_deref(), Some("alice"));
        assert_eq!(names.get(0).as_deref(), Some("root"));
        assert_eq!(names.get(4242), None);
    }

    #[test]
    fn a_huge_cgroup_path_is_handled() {
        let long = format!("/{}/x.service", "a".repeat(4096));
        assert_eq!(unit_of(&long), Some("x.service"));
        assert_eq!(container_of(&long), None);
    }
}
