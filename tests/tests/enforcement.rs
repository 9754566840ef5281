//! Enforcement on this host. Where the kernel has no usable BPF-LSM (the
//! CI host refuses LSM programs), deny must not be pretended: the agent
//! says so once, status shows it, and events carry the fallback. Where
//! BPF-LSM works, the VM tests (`cargo xtask vm-test`) prove the deny.

use std::time::Duration;

use guardrail_tests::Agent;

#[test]
fn deny_is_never_pretended_where_the_kernel_cannot_deny() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let file = d.join("protected");
    std::fs::write(&file, b"original").unwrap();
    let rules = format!(
        "[[rule]]\nid = \"protect\"\non = [\"file.write\"]\npath = [\"{}\"]\naction = \"deny\"\n",
        file.display()
    );
    let agent = Agent::start_with_config(&rules, &[]);
    let status = agent.status();
    let can_deny = status["enforcement"]["deny"] == true;
    assert_eq!(status["capabilities"]["bpf_lsm"], can_deny);
    std::fs::write(&file, b"changed").unwrap_or(());
    let events = agent.collect_until(Duration::from_secs(20), |e| {
        e["file"]["path"] == file.to_str().unwrap() && e["file"]["op"] == "open"
    });
    let decision = &events.last().unwrap()["decision"];
    assert_eq!(decision["rule"], "protect");
    if can_deny {
        assert_eq!(decision["outcome"], "denied");
        assert_eq!(std::fs::read(&file).unwrap(), b"original");
    } else {
        // The write happened, and the event says exactly that.
        assert_eq!(std::fs::read(&file).unwrap(), b"changed");
        assert_eq!(decision["outcome"], "alerted");
        assert_eq!(decision["fallback"], "alert");
        let note = status["capabilities"]["bpf_lsm_note"].as_str().unwrap();
        assert!(!note.is_empty());
    }
    agent.stop();
}

/// Without BPF-LSM, `fallback = "revert"` puts the mode and owner back.
#[test]
fn revert_restores_mode_and_owner_where_the_kernel_cannot_deny() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let file = d.join("policy");
    std::fs::write(&file, b"x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let rules = format!(
        "[[rule]]\nid = \"keep-policy\"\non = [\"perm.chmod\", \"perm.chown\"]\npath = [\"{}\"]\naction = \"deny\"\nfallback = \"revert\"\n",
        file.display()
    );
    let agent = Agent::start_with_config(&rules, &[]);
    if agent.status()["enforcement"]["deny"] == true {
        eprintln!("this kernel denies: the VM tests cover it");
        return;
    }
    let path = file.to_str().unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4777)).unwrap();
    let events = agent.collect_until(Duration::from_secs(20), |e| {
        e["perm"]["path"] == path && e["perm"]["op"] == "chmod"
    });
    let d1 = &events.last().unwrap()["decision"];
    assert_eq!(d1["outcome"], "reverted", "{d1}");
    assert_eq!(d1["fallback"], "revert");
    assert_eq!(d1["reverted"]["mode"], "0640");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o640);

    std::os::unix::fs::chown(&file, Some(1000), Some(1000)).unwrap();
    let events = agent.collect_until(Duration::from_secs(20), |e| {
        e["perm"]["path"] == path && e["perm"]["op"] == "chown"
    });
    assert_eq!(events.last().unwrap()["decision"]["outcome"], "reverted");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(
        meta.mode() & 0o7777,
        0o640,
        "chown's clearing of bits is undone too"
    );
    agent.stop();
}
