//! `ganymede backup` and `ganymede restore` with the real binary: a backup of a live
//! follower while writes go on, restored into a fresh one-node cluster that holds the
//! same state (same digest), serves the API with the old tokens, converges the servers
//! that were running in the old cluster, and takes new writes; a backup of a replica
//! that lost its majority (`--local`); and the refusals (a non-empty data directory, a
//! damaged file, a bad token).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::spawning::{create_user, spawner_lines, start_server};
use crate::support::{ADMIN_TOKEN, ProcessCluster, eventually, ganymede_bin};

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `ganymede <args>` to completion: (success, stdout, stderr).
async fn ganymede(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(ganymede_bin())
        .args(args)
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("GANYMEDE_HUB_URL")
        .output()
        .await
        .expect("run ganymede");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `(applied_index, state_digest)` of hub `node_id`.
async fn digest(cluster: &ProcessCluster, node_id: u64) -> Option<(u64, String)> {
    let (status, body) = cluster
        .request(node_id, Method::GET, "/hub/api/ganymede/digest")
        .await?;
    (status == 200).then_some(())?;
    Some((
        body["applied_index"].as_u64()?,
        body["state_digest"].as_str()?.to_owned(),
    ))
}

async fn user_names(cluster: &ProcessCluster, node_id: u64) -> Vec<String> {
    let (status, body) = cluster
        .request(node_id, Method::GET, "/hub/api/users")
        .await
        .expect("list users");
    assert_eq!(status, 200, "{body}");
    let mut names: Vec<String> = body
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|user| user["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

async fn default_server(cluster: &ProcessCluster, node_id: u64, user: &str) -> Value {
    let path = format!("/hub/api/users/{user}?include_stopped_servers=1");
    let (status, body) = cluster.request(node_id, Method::GET, &path).await.expect("user");
    assert_eq!(status, 200, "{body}");
    body["servers"][""].clone()
}

fn is_stopped(server: &Value) -> bool {
    server.is_null() || server["stopped"] == true
}

/// Whether the API answers at all (the version endpoint needs no token, so polling it
/// changes nothing: a token's use is recorded as activity, which is state).
async fn answers(cluster: &ProcessCluster, node_id: u64) -> bool {
    reqwest::get(cluster.url(node_id, "/hub/api/"))
        .await
        .is_ok_and(|response| response.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_backup_restores_into_a_new_cluster_with_the_same_state() {
    let started = std::time::Instant::now();
    // --- a 3-node cluster with users, a group, a token, a stopped and a running server
    let mut source = ProcessCluster::new(3);
    source.configure_spawner(&spawner_lines(""));
    source.start_all();
    let leader = source.leader().await;
    let alice_token = create_user(&source, "alice").await;
    create_user(&source, "bob").await;
    let (status, body) = source
        .send(
            1,
            Method::POST,
            "/hub/api/groups/staff",
            Some(json!({ "users": ["alice", "bob"] })),
        )
        .await
        .expect("group");
    assert_eq!(status, 201, "{body}");
    let (status, body) = start_server(&source, 1, "bob").await.expect("start bob");
    assert_eq!(status, 201, "{body}");
    let (status, body) = source
        .request(1, Method::DELETE, "/hub/api/users/bob/server")
        .await
        .expect("stop bob");
    assert!(status == 204 || status == 202, "{status} {body}");
    eventually("bob's server to stop", DEADLINE, || async {
        is_stopped(&default_server(&source, 2, "bob").await).then_some(())
    })
    .await;
    // Alice's server runs on hub 2 (it was started there) and is still running at the
    // backup; the restored cluster's node 1 is not that replica.
    let (status, body) = start_server(&source, 2, "alice").await.expect("start alice");
    assert_eq!(status, 201, "{body}");

    // --- the replicas agree on the state's digest at one index
    eventually("the three replicas to report one digest", DEADLINE, || async {
        let digests = futures::future::join_all((1..=3).map(|id| digest(&source, id))).await;
        let first = digests[0].clone()?;
        digests.iter().all(|d| d.as_ref() == Some(&first)).then_some(())
    })
    .await;

    // --- a backup through a follower, while a client keeps creating users w0, w1, …
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        let url = source.url(leader, "/hub/api/users");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..150 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let response = client
                    .post(format!("{url}/w{i:03}"))
                    .header("authorization", format!("token {ADMIN_TOKEN}"))
                    .send()
                    .await
                    .expect("create a user");
                assert_eq!(response.status(), 201);
                acknowledged.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    eventually("the writer to get going", DEADLINE, || async {
        (acknowledged.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let acknowledged_before = acknowledged.load(Ordering::SeqCst);
    let file = source.dir.path().join("cluster.backup");
    let file_arg = file.display().to_string();
    let taking = std::time::Instant::now();
    let (ok, stdout, stderr) = ganymede(&[
        "backup",
        "--url",
        &source.url(follower, ""),
        "--out",
        &file_arg,
        "--json",
    ])
    .await;
    let took = taking.elapsed();
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    assert!(ok, "ganymede backup: {stdout}{stderr}");
    let saved: Value = serde_json::from_str(&stdout).expect("backup --json");
    let backup_index = saved["applied_index"].as_u64().expect("applied_index");
    let backup_digest = saved["state_digest"].as_str().expect("state_digest").to_owned();
    assert_eq!(saved["node_id"].as_u64(), Some(follower), "{saved}");
    assert_eq!(
        saved["bytes"].as_u64(),
        Some(std::fs::metadata(&file).expect("file").len())
    );
    assert_eq!(
        std::fs::metadata(&file).expect("file").permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = std::fs::read_dir(source.dir.path())
        .expect("dir")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    eprintln!("backup at index {backup_index} ({} bytes) in {took:?}", saved["bytes"]);
    // The backup is on the audit record, by the admin who took it.
    eventually("the backup on the audit record", DEADLINE, || async {
        let (_, page) = source
            .request(1, Method::GET, "/hub/api/ganymede/events?since=0&limit=1000")
            .await?;
        page["events"]
            .as_array()?
            .iter()
            .any(|event| {
                event["action"] == "cluster.backup"
                    && event["target"] == format!("applied index {backup_index}").as_str()
                    && event["actor"] == "service:admin"
            })
            .then_some(())
    })
    .await;

    // --- restore into a fresh one-node cluster's empty data directory
    let mut restored = ProcessCluster::new(1);
    // A longer owner timeout than the source's: the digest is compared before the new
    // leader gives up on the servers placed on the old cluster's replicas.
    restored.configure_spawner(&spawner_lines("").replace("owner_timeout = \"3s\"", "owner_timeout = \"8s\""));
    let config = restored.hub(1).config.display().to_string();
    let (ok, stdout, stderr) = ganymede(&["restore", "--from", &file_arg, "--config", &config, "--json"]).await;
    assert!(ok, "ganymede restore: {stdout}{stderr}");
    let summary: Value = serde_json::from_str(&stdout).expect("restore --json");
    assert_eq!(summary["state_digest"], backup_digest.as_str(), "{summary}");
    assert_eq!(summary["applied_index"].as_u64(), Some(backup_index), "{summary}");
    assert_eq!(summary["active_servers"].as_u64(), Some(1), "{summary}");

    // --- started, it holds exactly the backup's state
    restored.start(1);
    eventually("the restored hub to answer", DEADLINE, || async {
        answers(&restored, 1).await.then_some(())
    })
    .await;
    let (index, digest_now) = digest(&restored, 1).await.expect("restored digest");
    assert_eq!(digest_now, backup_digest, "the restored state differs from the backup");
    assert!(index >= backup_index, "{index} < {backup_index}");
    assert_eq!(restored.leader().await, 1);
    let (status, cluster) = restored
        .request(1, Method::GET, "/hub/api/ganymede/cluster")
        .await
        .expect("status");
    assert_eq!(status, 200);
    assert_eq!(cluster["members"].as_array().map(Vec::len), Some(1), "{cluster}");

    // Consistent: the writer's users are a prefix w000…w(k-1), at least those it had
    // acknowledged before the backup began (the backup reads after a read barrier).
    let names = user_names(&restored, 1).await;
    let written: Vec<&String> = names.iter().filter(|name| name.starts_with('w')).collect();
    let expected: Vec<String> = (0..written.len()).map(|i| format!("w{i:03}")).collect();
    assert_eq!(
        written.iter().map(|name| name.as_str()).collect::<Vec<_>>(),
        expected,
        "not a prefix"
    );
    assert!(
        written.len() as u64 >= acknowledged_before,
        "{} users in the backup, {acknowledged_before} acknowledged before it",
        written.len()
    );
    assert!(names.contains(&"alice".to_owned()) && names.contains(&"bob".to_owned()));
    let (status, group) = restored
        .request(1, Method::GET, "/hub/api/groups/staff")
        .await
        .expect("group");
    assert_eq!((status, group["users"].clone()), (200, json!(["alice", "bob"])));
    // Alice's token from the old cluster still authenticates her.
    let whoami = reqwest::Client::new()
        .get(restored.url(1, "/hub/api/user"))
        .header("authorization", format!("token {alice_token}"))
        .send()
        .await
        .expect("whoami");
    assert_eq!(whoami.status(), 200);
    let whoami: Value = whoami.json().await.expect("json");
    assert_eq!(whoami["name"], "alice");

    // --- the server that was running in the old cluster is failed by the new one
    let converging = std::time::Instant::now();
    let server = eventually("alice's old server to be given up", DEADLINE, || async {
        let server = default_server(&restored, 1, "alice").await;
        is_stopped(&server).then_some(server)
    })
    .await;
    eprintln!("alice's old server stopped after {:?}: {server}", converging.elapsed());

    // --- and it takes new writes and starts servers
    let (status, body) = restored
        .send(1, Method::POST, "/hub/api/users/after-restore", Some(json!({})))
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    let (status, body) = start_server(&restored, 1, "bob").await.expect("start bob");
    assert_eq!(status, 201, "{body}");
    let (status, body) = start_server(&restored, 1, "alice").await.expect("start alice");
    assert_eq!(status, 201, "{body}");
    eprintln!("whole test: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_a_majority_backs_up_locally_and_restore_refuses_what_it_must() {
    let mut source = ProcessCluster::new(3);
    source.start_all();
    source.leader().await;
    let (status, body) = source
        .send(1, Method::POST, "/hub/api/users/kept", Some(json!({})))
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    let dir = source.dir.path().to_owned();

    // --- a bad token: refused, nothing written
    let other = dir.join("other.backup").display().to_string();
    let (ok, _, stderr) = ganymede(&[
        "backup",
        "--url",
        &source.url(1, ""),
        "--token",
        "not-a-token",
        "--out",
        &other,
    ])
    .await;
    assert!(!ok);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(!Path::new(&other).exists());

    // --- two of three replicas are lost for good: no leader, but hub 1 can still save
    // the state it has applied (`--local`: no read barrier). (A read through hub 1
    // first: it has then applied `kept`, wherever the leader was.)
    let (status, _) = source
        .request(1, Method::GET, "/hub/api/users/kept")
        .await
        .expect("read");
    assert_eq!(status, 200);
    source.kill9(2);
    source.kill9(3);
    let file = dir.join("survivor.backup");
    let file_arg = file.display().to_string();
    let (ok, stdout, stderr) = ganymede(&["backup", "--url", &source.url(1, ""), "--local", "--out", &file_arg]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("applied index"), "{stdout}");

    // --- a data directory in use (here: the running hub's own) is refused, untouched
    let used = source.data_dir(1).display().to_string();
    let (ok, _, stderr) = ganymede(&["restore", "--from", &file_arg, "--data-dir", &used]).await;
    assert!(!ok);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert!(source.data_dir(1).join("db").is_dir());

    // --- damaged files: truncated, altered, not a backup at all
    let bytes = std::fs::read(&file).expect("backup");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            "altered",
            {
                let mut altered = bytes.clone();
                let at = altered.len() - 2;
                altered[at] ^= 0x20;
                altered
            },
            "digests to",
        ),
        ("foreign", b"PK\x03\x04 a zip file".to_vec(), "not a Ganymede backup"),
    ];
    for (name, damaged, expected) in cases {
        let path = dir.join(format!("{name}.backup"));
        std::fs::write(&path, damaged).expect("write");
        let target = dir.join(format!("restore-{name}"));
        let (ok, _, stderr) = ganymede(&[
            "restore",
            "--from",
            &path.display().to_string(),
            "--data-dir",
            &target.display().to_string(),
        ])
        .await;
        assert!(!ok, "{name}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!target.exists(), "{name}: the data directory was created");
    }

    // --- a replica bound to a wildcard address without an advertised one: the new
    // cluster's membership would name an address nobody can dial
    let wildcard = dir.join("wildcard.toml");
    let wildcard_dir = dir.join("restore-wildcard");
    std::fs::write(
        &wildcard,
        format!(
            "[hub]\nnode_id = 1\ndata_dir = {:?}\nraft_bind = \"0.0.0.0:8281\"\n",
            wildcard_dir.display().to_string()
        ),
    )
    .expect("write config");
    let (ok, _, stderr) = ganymede(&[
        "restore",
        "--from",
        &file_arg,
        "--config",
        &wildcard.display().to_string(),
    ])
    .await;
    assert!(!ok);
    assert!(stderr.contains("set hub.advertise_raft"), "{stderr}");
    assert!(!wildcard_dir.exists(), "the data directory was created");

    // --- an intact one restores into an empty directory (and not twice)
    let target = dir.join("restored");
    std::fs::create_dir(&target).expect("mkdir");
    let target_arg = target.display().to_string();
    let (ok, stdout, stderr) = ganymede(&["restore", "--from", &file_arg, "--data-dir", &target_arg]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("the only member of a new cluster"), "{stdout}");
    assert!(stdout.contains(" 1 users"), "the survivor's state has `kept`: {stdout}");
    let (ok, _, stderr) = ganymede(&["restore", "--from", &file_arg, "--data-dir", &target_arg]).await;
    assert!(!ok);
    assert!(stderr.contains("is not empty"), "{stderr}");
}
