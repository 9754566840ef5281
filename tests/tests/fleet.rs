//! The fleet with real nats-servers (Debian's `nats-server`, installed by
//! `cargo xtask test`): rule sets pushed with `guardrail fleet rules push`
//! reach every agent and are in force; a broken set, a malformed message
//! in the rules bucket and a set that would lift a local rule are refused
//! by every agent, with the error in `guardrail fleet status`, and the
//! rules in force stay; credential files others can read are refused;
//! and a three-node cluster with an R3 stream loses nothing when a node
//! is killed during a storm.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use guardrail_tests::nats::{runtime, NatsServer};
use guardrail_tests::{
    assert_success, bin, free_port, log_verify, log_verify_nats, trusted_tempdir, wait_until,
    Agent, BoundedOutput, Launch,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(120);
const TOKEN: &str = "fleet-s3cret";
const BUCKET: &str = "guardrail-rules";

/// A root-only file holding the token.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `guardrail fleet --url URL --token-file T ARGS…`.
fn fleet(url: &str, token: &Path, args: &[&str]) -> Output {
    Command::new(bin("guardrail"))
        .args(["fleet", "--url", url, "--token-file"])
        .arg(token)
        .args(args)
        .bounded_output()
        .expect("running guardrail fleet")
}

/// Write `text` as a rules file and push it with the CLI as `group`.
fn push(url: &str, token: &Path, dir: &Path, group: &str, text: &str) -> Output {
    let file = dir.join(format!("push-{group}.toml"));
    std::fs::write(&file, text).unwrap();
    fleet(
        url,
        token,
        &["rules", "push", file.to_str().unwrap(), "--key", group],
    )
}

/// Put raw bytes as `group`'s rule set, past the CLI's validation (a hand
/// edit with `nats kv put`, an older client, a corrupted message).
fn put_raw(url: &str, group: &str, value: &[u8]) {
    runtime().block_on(async {
        let client = async_nats::ConnectOptions::with_token(TOKEN.into())
            .connect(url)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value(BUCKET).await.unwrap();
        kv.put(group, value.to_vec().into()).await.unwrap();
    });
}

/// `guardrail fleet status --json`: every host's row (exit status 1 when
/// a host does not run its group's pushed set, which is the point of some
/// checks here, so it is not asserted).
fn fleet_status(url: &str, token: &Path) -> Vec<Value> {
    let out = fleet(url, token, &["status", "--json"]);
    if out.stdout.is_empty() {
        return vec![];
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("fleet status --json: {e}: {out:?}"))
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [Value], host: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["host"] == host)
}

fn hash_of(text: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(text)))
}

fn rule(id: &str, path: &Path) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ndescription = \"central\"\non = [\"perm.chmod\"]\npath = [\"{}\"]\nseverity = \"high\"\n",
        path.display()
    )
}

/// chmod `file` and wait until `agent` printed its event; the rule that
/// decided on it, if any.
fn decided_by(agent: &Agent, file: &Path, mode: u32) -> Value {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
    let want = format!("{mode:o}");
    let events = agent.collect_until(DEADLINE, |e| {
        e["perm"]["op"] == "chmod"
            && e["perm"]["path"] == file.to_str().unwrap()
            && e["perm"]["mode"]
                .as_str()
                .is_some_and(|m| m.ends_with(&want))
    });
    events.last().unwrap()["decision"]["rule"].clone()
}

/// Every host's latest status has `hash` in force.
fn wait_in_force(url: &str, token: &Path, hosts: &[&str], hash: &str) {
    wait_until(&format!("every host to apply {hash}"), DEADLINE, || {
        let rows = fleet_status(url, token);
        hosts
            .iter()
            .all(|h| row(&rows, h).is_some_and(|r| r["rules_hash"] == hash))
    });
}

/// Every host refused the set `hash`, with an error containing `want`;
/// its rows say the host does not run the pushed set. The rows.
fn wait_refused(url: &str, token: &Path, hosts: &[&str], hash: &str, want: &str) -> Vec<Value> {
    let mut rows = vec![];
    wait_until(&format!("every host to refuse {hash}"), DEADLINE, || {
        rows = fleet_status(url, token);
        hosts
            .iter()
            .all(|h| row(&rows, h).is_some_and(|r| r["rejected_hash"] == hash))
    });
    for h in hosts {
        let r = row(&rows, h).unwrap();
        let error = r["rules_error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{h}: {error:?} lacks {want:?}");
        assert_eq!(r["in_sync"], false, "{h}: {r}");
    }
    rows
}

/// The `fleet` part of the agent's own status, once `ok` holds of it.
fn wait_local_fleet(agent: &Agent, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut fleet = Value::Null;
    wait_until(
        &format!("guardrail status to show {what}"),
        DEADLINE,
        || {
            fleet = agent.status()["fleet"].clone();
            ok(&fleet)
        },
    );
    fleet
}

fn agent_config(url: &str, token: &Path, host: &str, local: &str) -> String {
    format!(
        "{local}\n[fleet]\nurl = \"{url}\"\ntoken_file = \"{}\"\nrules_key = \"web\"\nhost = \"{host}\"\nstatus_interval_s = 1\n",
        token.display()
    )
}

#[test]
fn pushed_rules_reach_every_agent_and_broken_ones_are_refused_by_all() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &["--auth", TOKEN]);
    let url = server.url();
    let token = token_file(dir.path());
    let files = ["local", "one", "two", "three"].map(|n| {
        let p = dir.path().join(n);
        std::fs::write(&p, b"").unwrap();
        p
    });
    let [local_file, one, two, three] = &files;

    // Invalid rules are never pushed: the CLI validates them first.
    let out = push(
        &url,
        &token,
        dir.path(),
        "web",
        "[[rule]]\nid = \"typo\"\non = [\"perm.chmode\"]\n",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("push-web.toml:3:") && err.contains("not pushed"),
        "{err}"
    );
    // A wrong token cannot push.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "nope\n").unwrap();
    let v1 = rule("central-one", one);
    let out = push(&url, &wrong, dir.path(), "web", &v1);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_ascii_lowercase()
            .contains("authorization"),
        "{out:?}"
    );

    assert_success(&push(&url, &token, dir.path(), "web", &v1));
    let hosts = ["alpha", "bravo"];
    let local = rule("local-guard", local_file);
    let agents: Vec<Agent> = hosts
        .iter()
        .map(|h| {
            Agent::launch(
                &agent_config(&url, &token, h, &local),
                &[],
                &Launch::default(),
            )
        })
        .collect();
    wait_in_force(&url, &token, &hosts, &hash_of(v1.as_bytes()));
    let rows = fleet_status(&url, &token);
    for h in hosts {
        let r = row(&rows, h).unwrap();
        assert_eq!(r["in_sync"], true, "{r}");
        assert_eq!(r["rules_key"], "web");
        assert!(r["age_s"].as_u64() < Some(60), "{r}");
        assert!(r["rules_error"].is_null(), "{r}");
    }
    // Each host says the same in its own status.
    for a in &agents {
        let f = wait_local_fleet(a, "the set in force", |f| {
            f["rules_hash"] == hash_of(v1.as_bytes())
        });
        assert_eq!(f["connected"], true, "{f}");
        assert_eq!(f["servers"], url.as_str(), "{f}");
        assert_eq!(f["rules_key"], "web", "{f}");
    }
    for a in &agents {
        assert_eq!(decided_by(a, one, 0o600), "central-one");
        assert_eq!(decided_by(a, local_file, 0o600), "local-guard");
    }

    // A new set replaces the old central one as a whole.
    let v2 = rule("central-two", two);
    assert_success(&push(&url, &token, dir.path(), "web", &v2));
    wait_in_force(&url, &token, &hosts, &hash_of(v2.as_bytes()));
    for a in &agents {
        assert_eq!(decided_by(a, two, 0o600), "central-two");
        let out = a.cli(&["rules", "list", "--json"]);
        assert_success(&out);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"central-two") && ids.contains(&"local-guard"));
        assert!(!ids.contains(&"central-one"), "{ids:?}");
    }

    // Broken (past the CLI): refused by every agent with line and column,
    // the set in force stays.
    let broken = format!(
        "{}\n[[rule]]\nid = \"central-three\"\non = [\"perm.chmode\"]\n",
        rule("central-two", two)
    );
    put_raw(&url, "web", broken.as_bytes());
    wait_refused(
        &url,
        &token,
        &hosts,
        &hash_of(broken.as_bytes()),
        "nats:guardrail-rules/web:10:",
    );
    // Malformed: not text at all.
    let garbage = [0xffu8, 0xfe, 0x00, 0x80, b'[', b'['];
    put_raw(&url, "web", &garbage);
    wait_refused(&url, &token, &hosts, &hash_of(&garbage), "not UTF-8");
    // A central set may not lift or replace a local rule.
    let lifts = format!(
        "{}\n[[rule]]\nid = \"lift\"\non = [\"perm.chmod\"]\npath = [\"{}\"]\naction = \"allow\"\nexempts = [\"local-guard\"]\n",
        rule("central-three", three),
        local_file.display()
    );
    put_raw(&url, "web", lifts.as_bytes());
    wait_refused(
        &url,
        &token,
        &hosts,
        &hash_of(lifts.as_bytes()),
        "never lift a local one",
    );
    let replaces = rule("local-guard", three);
    put_raw(&url, "web", replaces.as_bytes());
    wait_refused(
        &url,
        &token,
        &hosts,
        &hash_of(replaces.as_bytes()),
        "used twice",
    );
    // Through all of it: the last good set and the local rules act, on
    // every agent, and the human view says which host is not in sync.
    let out = fleet(&url, &token, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alpha") && text.contains("bravo") && text.contains("NO"),
        "{text}"
    );
    for r in fleet_status(&url, &token) {
        assert_eq!(r["rules_hash"], hash_of(v2.as_bytes()), "{r}");
    }
    for a in &agents {
        assert_eq!(decided_by(a, two, 0o644), "central-two");
        assert_eq!(decided_by(a, local_file, 0o644), "local-guard");
        assert!(decided_by(a, three, 0o600).is_null());
    }
    // A good set after the bad ones is applied again.
    let v3 = rule("central-three", three);
    assert_success(&push(&url, &token, dir.path(), "web", &v3));
    wait_in_force(&url, &token, &hosts, &hash_of(v3.as_bytes()));
    for a in &agents {
        assert_eq!(decided_by(a, three, 0o644), "central-three");
    }
    for r in fleet_status(&url, &token) {
        assert_eq!(r["in_sync"], true, "{r}");
        assert!(r["rules_error"].is_null(), "{r}");
    }
    for a in agents {
        a.stop();
    }
}

#[test]
fn a_credential_file_others_can_read_is_refused() {
    let dir = trusted_tempdir();
    let token = token_file(dir.path());
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("guardrail.toml");
    std::fs::write(
        &config,
        agent_config("nats://127.0.0.1:4222", &token, "india", ""),
    )
    .unwrap();
    let check = || {
        Command::new(bin("guardrail-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .bounded_output()
            .unwrap()
    };
    let out = check();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} is readable by others", token.display()))
            && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_success(&check());
}

// ---- a three-node cluster -------------------------------------------------

/// Every message of stream GUARDRAIL, in stream order: subject, payload.
fn read_stream(url: &str) -> Vec<(String, String)> {
    guardrail_tests::nats::read_stream(url, async_nats::ConnectOptions::new())
}

fn records_of(all: &[(String, String)], host: &str) -> Vec<(String, Value)> {
    let prefix = format!("guardrail.{host}.");
    all.iter()
        .filter(|(subject, _)| subject.starts_with(&prefix))
        .map(|(_, payload)| (payload.clone(), serde_json::from_str(payload).unwrap()))
        .collect()
}

fn nats_output(agent: &Agent) -> Value {
    agent.status()["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "nats")
        .cloned()
        .expect("a nats output in status")
}

#[test]
fn a_three_node_cluster_with_an_r3_stream_loses_nothing_when_a_node_dies_mid_storm() {
    let dir = trusted_tempdir();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_urls = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<NatsServer> = (0..3)
        .map(|i| {
            NatsServer::start(
                &dir.path().join(format!("store-{i}")),
                &[
                    "--server_name",
                    &format!("n{i}"),
                    "--cluster_name",
                    "guardrail-test",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes",
                    &route_urls,
                ],
            )
        })
        .collect();
    let urls = nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let config = format!(
        "[[output]]\ntype = \"nats\"\nurl = \"{urls}\"\nhost = \"kilo\"\nreplicas = 3\nspool_dir = \"{}\"\nqueue = 200000\n",
        dir.path().join("spool").display()
    );
    let agent = Agent::launch(
        &config,
        &[],
        &Launch {
            quiet: true,
            ..Default::default()
        },
    );
    let target = dir.path().join("stormed");
    std::fs::write(&target, b"").unwrap();
    let script = format!(
        "end=$(( $(date +%s) + 25 )); while [ $(date +%s) -lt $end ]; do \
         for i in 1 2 3 4 5 6 7 8 9 10; do chmod 600 {f}; chmod 644 {f}; done; done",
        f = target.display()
    );
    let mut storm = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    // The cluster elects its leaders, the stream is created with three
    // replicas, and events flow; then a node dies mid-storm.
    wait_until("the output to publish to the cluster", DEADLINE, || {
        nats_output(&agent)["sent"].as_u64() > Some(500)
    });
    nodes[0].kill();
    let before = nats_output(&agent)["sent"].as_u64().unwrap();
    wait_until("the output to go on publishing", DEADLINE, || {
        nats_output(&agent)["sent"].as_u64().unwrap() > before + 500
    });
    assert!(storm.wait().unwrap().success());
    // A marker after the storm: when it is in the stream, so is
    // everything before it.
    let marker = dir.path().join("marker");
    std::fs::write(&marker, b"").unwrap();
    let survivor = nodes[1].url();
    let mut records = vec![];
    wait_until("the marker in the stream", DEADLINE, || {
        records = records_of(&read_stream(&survivor), "kilo");
        records
            .iter()
            .any(|(_, v)| v["file"]["path"] == marker.to_str().unwrap())
    });
    // Every event of the pipeline up to the marker, once each. In a
    // fail-over a message in flight can be lost while later ones are
    // stored: its resend is stored after them (the chain, not the
    // stream, gives each record its place).
    let seqs: Vec<u64> = records
        .iter()
        .map(|(_, v)| v["seq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    let want: Vec<u64> = (1..=*sorted.last().unwrap()).collect();
    assert_eq!(sorted, want, "events missing or repeated");
    let late = seqs
        .iter()
        .scan(0, |max, &s| {
            let stored_late = s < *max;
            *max = s.max(*max);
            Some(stored_late)
        })
        .filter(|&l| l)
        .count();
    // The stream verifies as one chain, and `log verify` names the
    // records stored late, if any.
    let verified = log_verify_nats(&survivor, "kilo", &[]);
    assert_success(&verified);
    let said = String::from_utf8_lossy(&verified.stdout).to_string();
    eprintln!("log verify --nats: {said}");
    if late == 0 {
        assert!(!said.contains("stored after"), "{said}");
    } else {
        assert!(
            said.contains(&format!(
                "{late} records were stored after records that follow them"
            )),
            "{late} stored late: {said}"
        );
    }
    // The records are the audit log's lines: exported in chain order,
    // they verify as one chain (a record missing, repeated or out of
    // order breaks it).
    let mut in_chain_order = records.clone();
    in_chain_order.sort_by_key(|(_, v)| v["seq"].as_u64());
    let export = dir.path().join("kilo.jsonl");
    let text: String = in_chain_order
        .iter()
        .map(|(p, _)| format!("{p}\n"))
        .collect();
    std::fs::write(&export, text).unwrap();
    assert_success(&log_verify(&[&export]));
    let out = nats_output(&agent);
    assert_eq!(out["dropped"], 0, "{out}");
    let replicas = runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&survivor).await.unwrap());
        js.get_stream("GUARDRAIL")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .num_replicas
    });
    assert_eq!(replicas, 3);
    agent.stop();
}

/// A host that cannot reach NATS cannot say so to `fleet status`: its own
/// status says it (without credentials), its local rules stay in force,
/// and once the server is there and a set is pushed, it connects and
/// applies it.
#[test]
fn an_agent_that_cannot_reach_nats_says_why_in_its_status_and_connects_later() {
    let dir = trusted_tempdir();
    let token = token_file(dir.path());
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let local_file = dir.path().join("local");
    std::fs::write(&local_file, b"").unwrap();
    let agent = Agent::launch(
        &agent_config(&url, &token, "november", &rule("local-guard", &local_file)),
        &[],
        &Launch::default(),
    );
    let f = wait_local_fleet(&agent, "that NATS is unreachable", |f| {
        f["connection_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("cannot connect to {url}")))
    });
    assert_eq!(f["connected"], false, "{f}");
    assert!(f["rules_hash"].is_null(), "{f}");
    assert!(!f.to_string().contains(TOKEN), "{f}");
    let out = agent.cli(&["status"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT CONNECTED, retrying"), "{text}");
    assert!(text.contains("local rules only"), "{text}");
    assert_eq!(decided_by(&agent, &local_file, 0o600), "local-guard");

    // The server comes (on the configured port) without a rules bucket:
    // that is the error now, with what to do.
    let mut server = NatsServer::not_started(port, &dir.path().join("store"), &["--auth", TOKEN]);
    server.restart();
    wait_local_fleet(&agent, "that no rule set was pushed", |f| {
        f["connection_error"]
            .as_str()
            .is_some_and(|e| e.contains("push a rule set first"))
    });
    let central_file = dir.path().join("central");
    std::fs::write(&central_file, b"").unwrap();
    let v1 = rule("central-one", &central_file);
    assert_success(&push(&url, &token, dir.path(), "web", &v1));
    let f = wait_local_fleet(&agent, "the pushed set in force", |f| {
        f["rules_hash"] == hash_of(v1.as_bytes())
    });
    assert_eq!(f["connected"], true, "{f}");
    assert!(f["connection_error"].is_null(), "{f}");
    assert_eq!(decided_by(&agent, &central_file, 0o600), "central-one");
    agent.stop();
}

/// `guardrail fleet tail`: every host's live events, from the nats
/// outputs' subjects; `--host` keeps one host's.
#[test]
fn fleet_tail_shows_every_hosts_events_and_host_keeps_one() {
    let dir = trusted_tempdir();
    let server = NatsServer::start(&dir.path().join("store"), &[]);
    let url = server.url();
    // Made before the agents start: only the chmods below are its events.
    let file = dir.path().join("touched");
    std::fs::write(&file, b"").unwrap();
    let hosts = ["lima", "mike"];
    let agents: Vec<Agent> = hosts
        .iter()
        .map(|h| {
            Agent::launch(
                &format!(
                    "[[output]]\ntype = \"nats\"\nurl = \"{url}\"\nhost = \"{h}\"\nspool_dir = \"{}\"\n",
                    dir.path().join(format!("{h}-spool")).display()
                ),
                &[],
                &Launch::default(),
            )
        })
        .collect();
    // Live events only: keep making them until the tail has its count.
    let tail = |extra: &[&str], count: usize| -> Vec<Value> {
        let mut child = Command::new(bin("guardrail"))
            .args(["fleet", "--url", &url, "tail", "--json", "--path"])
            .arg(&file)
            .args(["-n", &count.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running guardrail fleet tail");
        let mut mode = 0o600;
        wait_until("fleet tail to show its events", DEADLINE, || {
            mode ^= 0o040;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            child.try_wait().unwrap().is_some()
        });
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = tail(&[], 20);
    assert_eq!(all.len(), 20);
    for h in hosts {
        assert!(
            all.iter().any(|l| l["host"] == h),
            "no event of {h}: {all:#?}"
        );
    }
    for l in &all {
        assert_eq!(l["event"]["perm"]["path"], file.to_str().unwrap(), "{l}");
    }
    let one = tail(&["--host", "lima"], 6);
    assert_eq!(one.len(), 6);
    assert!(one.iter().all(|l| l["host"] == "lima"), "{one:#?}");
    for a in agents {
        a.stop();
    }
}
