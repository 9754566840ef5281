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
