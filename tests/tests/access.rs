//! Control-socket access: root only by default; with `socket_group`, root
//! and that group's members; nobody else, whatever they try.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use guardrail_tests::{bin, Agent, BoundedOutput};

/// The CLI copied where any user can run it: the checkout may sit in a
/// directory other users cannot enter, which must not decide these tests.
fn public_cli() -> &'static Path {
    static CLI: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &CLI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = dir.path().join("guardrail");
        std::fs::copy(bin("guardrail"), &cli).unwrap();
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, cli)
    })
    .1
}

fn status_as(agent: &Agent, uid: u32, gid: u32) -> Output {
    Command::new(public_cli())
        .arg("--socket")
        .arg(&agent.socket)
        .args(["status", "--json"])
        .uid(uid)
        .gid(gid)
        .bounded_output()
        .unwrap()
}

/// Let everyone reach the socket's directory, so that only the socket's
/// own permissions (and the agent's credential check) decide.
fn open_dir(agent: &Agent) {
    let dir = agent.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn unprivileged_users_are_refused_by_default() {
    let agent = Agent::start(&[]);
    open_dir(&agent);
    let out = status_as(&agent, 65534, 65534);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the agent") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(status_as(&agent, 0, 0).status.success());
    agent.stop();
}

#[test]
fn the_socket_group_may_read_and_others_may_not() {
    let agent = Agent::start_with_config("[agent]\nsocket_group = \"nogroup\"\n", &[]);
    open_dir(&agent);
    let meta = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let member = status_as(&agent, 65534, 65534);
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    let stranger = status_as(&agent, 65533, 65533);
    assert!(!stranger.status.success());
    agent.stop();
}
