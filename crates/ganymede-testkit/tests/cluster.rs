//! Cluster behaviour with real replicas in one process: RocksDB on disk, gRPC and HTTP
//! on loopback. Replicas are killed and restarted; every wait has a deadline.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ganymede_testkit::{ADMIN_TOKEN, TestCluster, Timings, eventually};
use serde_json::json;
use tracing::info;

const PATIENCE: Duration = Duration::from_secs(30);

fn names_in(list: &serde_json::Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|user| user["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_write_through_any_replica_read_from_every_replica() {
    let cluster = TestCluster::start(3).await;
    for writer in 1..=3u64 {
        // --- a write through each replica is visible at once on every replica
        let name = format!("user{writer}");
        let (status, body) = cluster
            .hub(writer)
            .api
            .post(&format!("/hub/api/users/{name}"), json!({}))
            .await
            .expect("post");
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["name"], name);
        for reader in 1..=3u64 {
            let (status, body) = cluster
                .hub(reader)
                .api
                .get(&format!("/hub/api/users/{name}"))
                .await
                .expect("get");
            assert_eq!(
                status, 200,
                "replica {reader} must see {name} written through {writer}: {body}"
            );
            assert_eq!(body["kind"], "user");
        }
    }
    // --- bulk create, list, rename, delete
    let (status, body) = cluster
        .hub(2)
        .api
        .post(
            "/hub/api/users",
            json!({"usernames": ["Bulk1", "bulk2"], "admin": true}),
        )
        .await
        .expect("bulk");
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        names_in(&body),
        BTreeSet::from(["bulk1".into(), "bulk2".into()]),
        "names are normalized"
    );
    let (status, body) = cluster
        .hub(3)
        .api
        .patch("/hub/api/users/bulk1", json!({"name": "bulk-one", "admin": false}))
        .await
        .expect("patch");
    assert_eq!(
        (status, body["name"].as_str(), body["admin"].as_bool()),
        (200, Some("bulk-one"), Some(false)),
        "{body}"
    );
    let (status, _) = cluster.hub(1).api.delete("/hub/api/users/bulk2").await.expect("delete");
    assert_eq!(status, 204);
    let (status, body) = cluster.hub(1).api.get("/hub/api/users").await.expect("list");
    assert_eq!(status, 200);
    assert_eq!(
        names_in(&body),
        BTreeSet::from(["user1".into(), "user2".into(), "user3".into(), "bulk-one".into()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_leader_killed_under_writes_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let writer_node = (1..=3).find(|id| *id != leader).expect("a follower");
    let api = cluster.hub(writer_node).api.clone();

    info!("--- a stream of writes through a follower");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0;
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{i}");
                match api.post(&format!("/hub/api/users/{name}"), json!({})).await {
                    Ok((201, _)) => acknowledged.push(name),
                    _ => failed += 1,
                }
            }
            (acknowledged, failed)
        })
    };
    eventually("some writes acknowledged", PATIENCE, || async {
        let (_, body) = cluster.hub(writer_node).api.get("/hub/api/users").await.ok()?;
        (names_in(&body).len() >= 20).then_some(())
    })
    .await;

    info!("--- kill the leader");
    cluster.kill(leader).await;
    let before_kill = cluster.hub(writer_node).raft.read_local(|s| s.users.len());
    eventually("writes accepted again after the election", PATIENCE, || async {
        let now = cluster.hub(writer_node).raft.read_local(|s| s.users.len());
        (now >= before_kill + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, failed) = writer.await.expect("writer");
    info!(acknowledged = acknowledged.len(), failed, "writes done");
    assert!(
        acknowledged.len() >= 40,
        "writes continued: {} acknowledged",
        acknowledged.len()
    );

    info!("--- every acknowledged write is on the two survivors");
    for node in (1..=3).filter(|id| *id != leader) {
        let (_, body) = cluster
            .hub(node)
            .api
            .get("/hub/api/users?limit=200")
            .await
            .expect("list");
        let _ = body;
        let present = cluster
            .hub(node)
            .raft
            .read(|s| acknowledged.iter().filter(|n| s.users.contains_key(*n)).count())
            .await
            .expect("read");
        assert_eq!(present, acknowledged.len(), "replica {node} lost acknowledged writes");
    }

    info!("--- the killed replica restarts from its data dir and catches up");
    cluster.start_node(leader).await;
    let restarted = cluster.hub(leader);
    eventually(
        "the restarted replica has every acknowledged write",
        PATIENCE,
        || async {
            let present = restarted
                .raft
                .read_local(|s| acknowledged.iter().all(|n| s.users.contains_key(n)));
            present.then_some(())
        },
    )
    .await;
    let (status, _) = restarted
        .api
        .get(&format!("/hub/api/users/{}", acknowledged[acknowledged.len() - 1]))
        .await
        .expect("get");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_full_restart_keeps_state_and_a_lagging_replica_catches_up_by_snapshot() {
    let timings = Timings {
        snapshot_logs_since_last: 50,
        logs_kept_after_snapshot: 5,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(3, timings).await;
    let api = cluster.hub(1).api.clone();
    for i in 0..10 {
        assert_eq!(
            api.post(&format!("/hub/api/users/early{i}"), json!({}))
                .await
                .expect("post")
                .0,
            201
        );
    }

    info!("--- replica 3 falls behind while the log moves on and is purged");
    let behind = cluster.hub(1).raft.status().last_log_index.expect("a log");
    cluster.kill(3).await;
    let survivor = cluster.hub(1).api.clone();
    for i in 0..150 {
        let (status, body) = survivor
            .post(&format!("/hub/api/users/late{i}"), json!({}))
            .await
            .expect("post");
        assert_eq!(status, 201, "{body}");
    }
    let leader = cluster.wait_for_leader().await;
    cluster.hub(leader).raft.snapshot_now().await.expect("snapshot");
    // The leader postpones a purge while a replication to replica 3 is in flight; more
    // writes give it the next chance.
    let mut extra = 0;
    eventually(
        "the leader purged its log past where replica 3 stopped",
        PATIENCE,
        || {
            extra += 1;
            let api = survivor.clone();
            let raft = cluster.hub(leader).raft.clone();
            async move {
                api.post(&format!("/hub/api/users/extra{extra}"), json!({}))
                    .await
                    .ok()?;
                raft.status()
                    .purged_index
                    .filter(|purged| *purged > behind + 10)
                    .map(|_| ())
            }
        },
    )
    .await;
    let expected = cluster.hub(leader).raft.read(|s| s.users.len()).await.expect("read");
    cluster.start_node(3).await;
    eventually("replica 3 caught up", PATIENCE, || async {
        cluster
            .hub(3)
            .raft
            .read_local(|s| (s.users.len() == expected).then_some(()))
    })
    .await;
    let first_event = cluster.hub(3).raft.events_after(0, 1).expect("events");
    assert!(
        first_event.first().is_some_and(|event| event.seq > 1),
        "replica 3 must have caught up by snapshot (its event log starts after the snapshot)"
    );

    info!("--- restart every replica: state is intact");
    for node in 1..=3 {
        cluster.kill(node).await;
    }
    for node in 1..=3 {
        cluster.start_node(node).await;
    }
    cluster.wait_for_leader().await;
    for node in 1..=3 {
        cluster.wait_until_serving(node).await;
        let (status, body) = cluster
            .hub(node)
            .api
            .get("/hub/api/users?limit=200")
            .await
            .expect("list");
        assert_eq!(status, 200);
        assert_eq!(names_in(&body).len(), expected, "replica {node} after a full restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_membership_changes_without_downtime() {
    let mut cluster = TestCluster::start(3).await;
    let api = cluster.hub(2).api.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                statuses.push(
                    api.post(&format!("/hub/api/users/m{i}"), json!({}))
                        .await
                        .map(|(s, _)| s)
                        .unwrap_or(0),
                );
            }
            statuses
        })
    };

    info!("--- add a 4th replica: learner, then voter");
    let node4 = cluster.start_new_node(4).await;
    let body = json!({"node_id": 4, "raft_addr": node4.raft_addr, "api_addr": node4.api_addr});
    let (status, reply) = cluster
        .hub(3)
        .api
        .post("/hub/api/ganymede/cluster/nodes", body)
        .await
        .expect("add");
    assert_eq!(status, 200, "{reply}");
    let voters: BTreeSet<u64> = reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["voter"] == json!(true))
        .filter_map(|m| m["node_id"].as_u64())
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3, 4]));

    info!("--- remove replica 1 (it may be the leader)");
    let (status, reply) = cluster
        .hub(4)
        .api
        .delete("/hub/api/ganymede/cluster/nodes/1")
        .await
        .expect("remove");
    assert_eq!(status, 200, "{reply}");
    cluster.kill(1).await;
    let leader = cluster.wait_for_leader().await;
    assert_ne!(leader, 1);
    // Replica 4's own view follows once the change has replicated to it.
    eventually("replica 4 sees members 2, 3, 4", PATIENCE, || async {
        let members: BTreeSet<u64> = cluster.hub(4).raft.status().members.iter().map(|m| m.node_id).collect();
        (members == BTreeSet::from([2, 3, 4])).then_some(())
    })
    .await;

    eventually("the new replica has the writes", PATIENCE, || async {
        cluster.hub(4).raft.read_local(|s| (s.users.len() >= 20).then_some(()))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let statuses = writer.await.expect("writer");
    let failures = statuses.iter().filter(|s| **s != 201).count();
    info!(writes = statuses.len(), failures, "membership changes done");
    assert_eq!(
        failures, 0,
        "every write succeeded through membership changes: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_concurrent_conflicting_creates_exactly_one_wins() {
    let cluster = TestCluster::start(3).await;
    for round in 0..20 {
        let name = format!("alice{round}");
        let path = format!("/hub/api/users/{name}");
        let (a, b) = tokio::join!(
            cluster.hub(1).api.post(&path, json!({})),
            cluster.hub(3).api.post(&path, json!({}))
        );
        let mut statuses = [a.expect("a").0, b.expect("b").0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}");
    }
    let (status, body) = cluster
        .hub(2)
        .api
        .post("/hub/api/users/alice0", json!({}))
        .await
        .expect("post");
    assert_eq!(status, 409);
    assert_eq!(body, json!({"status": 409, "message": "User alice0 already exists"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t60_bad_input_gets_clear_json_errors() {
    let cluster = TestCluster::start(1).await;
    let api = &cluster.hub(1).api;
    let check = |status: u16, body: &serde_json::Value, expected: u16, mention: &str| {
        assert_eq!(status, expected, "{body}");
        assert_eq!(body["status"], json!(expected), "JupyterHub's error shape: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(mention),
            "message {message:?} should mention {mention:?}"
        );
    };
    let (s, b) = api
        .raw(reqwest::Method::POST, "/hub/api/users", b"{not json".to_vec())
        .await
        .expect("raw");
    check(s, &b, 400, "Malformed JSON");
    let (s, b) = api
        .post("/hub/api/users", json!({"usernames": ["x"], "admn": true}))
        .await
        .expect("post");
    check(s, &b, 400, "admn");
    let (s, b) = api
        .post("/hub/api/users", json!({"usernames": "x"}))
        .await
        .expect("post");
    check(s, &b, 400, "usernames");
    let (s, b) = api
        .post("/hub/api/users", json!({"usernames": []}))
        .await
        .expect("post");
    check(s, &b, 400, "at least one");
    let (s, b) = api.post("/hub/api/users/a%2Fb", json!({})).await.expect("post");
    check(s, &b, 400, "Invalid username");
    let (s, b) = api.post("/hub/api/users/%20padded", json!({})).await.expect("post");
    check(s, &b, 400, "Invalid username");
    let (s, b) = api
        .patch("/hub/api/users/nobody", json!({"groups": []}))
        .await
        .expect("patch");
    check(s, &b, 400, "groups");
    let huge = format!("{{\"usernames\": [\"{}\"]}}", "x".repeat(2 * 1024 * 1024));
    let (s, b) = api
        .raw(reqwest::Method::POST, "/hub/api/users", huge.into_bytes())
        .await
        .expect("raw");
    check(s, &b, 413, "too large");
    let (s, b) = api.get("/hub/api/users/nobody").await.expect("get");
    check(s, &b, 404, "nobody");
    let (s, b) = api.get("/hub/api/no/such/endpoint").await.expect("get");
    assert_eq!((s, b), (404, json!({"status": 404, "message": null})));

    // --- credentials: missing or wrong → 403, never 401
    for token in [None, Some("wrong-token")] {
        let (s, b) = api.with_token(token).get("/hub/api/user").await.expect("get");
        check(s, &b, 403, "Missing or invalid credentials");
    }
    let (s, b) = api.with_token(None).get("/hub/api").await.expect("version");
    assert_eq!(s, 200);
    assert!(b["version"].as_str().is_some_and(|v| v.starts_with("6.")), "{b}");

    // --- every response names the JupyterHub version (PEP 440, major 6); health needs no token
    let client = reqwest::Client::new();
    for path in ["/hub/api", "/hub/api/", "/hub/health", "/hub/api/users/nobody"] {
        let response = client.get(format!("{}{path}", api.base)).send().await.expect("get");
        let version = response
            .headers()
            .get("x-jupyterhub-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert!(
            version.as_deref().is_some_and(|v| v.starts_with("6.1.1+ganymede.")),
            "{path}: {version:?}"
        );
    }
    let health = client
        .get(format!("{}/hub/health", api.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    assert!(health.text().await.expect("body").is_empty());

    // --- bearer works like token
    let response = client
        .get(format!("{}/hub/api/user", api.base))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("bearer");
    assert_eq!(response.status().as_u16(), 200);

    // --- the admin service's identity
    let (s, b) = api.get("/hub/api/user").await.expect("whoami");
    assert_eq!(s, 200);
    assert_eq!(
        (b["kind"].as_str(), b["name"].as_str(), b["admin"].as_bool()),
        (Some("service"), Some("admin"), Some(true))
    );
    assert!(b["token_id"].as_str().is_some_and(|id| id.starts_with('a')), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t70_no_token_in_the_clear_on_disk() {
    let cluster = TestCluster::start(3).await;
    let api = &cluster.hub(1).api;
    assert_eq!(
        api.post("/hub/api/users/secretive", json!({})).await.expect("post").0,
        201
    );
    // Flush memtables so that everything is in files, not only in the WAL.
    for hub in cluster.running() {
        hub.raft.snapshot_now().await.ok();
    }
    let needle = ADMIN_TOKEN.as_bytes();
    let mut scanned = 0;
    for entry in walk(cluster.root_dir()) {
        let bytes = std::fs::read(&entry).expect("read");
        scanned += bytes.len();
        assert!(
            !bytes.windows(needle.len()).any(|window| window == needle),
            "the admin token is in the clear in {}",
            entry.display()
        );
    }
    assert!(scanned > 0, "the scan read the data directories");

    // --- decoded rows: no token anywhere, and the hash is where tokens live
    let mut cluster = cluster;
    let hash = ganymede_hub::tokens::hash_token(ADMIN_TOKEN);
    for node in 1..=3 {
        cluster.kill(node).await;
        let store = ganymede_store::Store::open(&cluster.data_dir(node), node).expect("reopen store");
        let mut hash_found = false;
        for (table, rows) in store.dump().expect("dump") {
            for (key, value) in rows {
                let text = format!("{}{}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
                assert!(
                    !text.contains(ADMIN_TOKEN),
                    "replica {node}: the admin token is in the clear in {table}"
                );
                hash_found |= text.contains(&hash);
            }
        }
        assert!(hash_found, "replica {node}: the token hash is stored");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t80_a_wiped_first_replica_rejoins_instead_of_founding_a_second_cluster() {
    let mut cluster = TestCluster::start(3).await;
    for i in 0..5 {
        assert_eq!(
            cluster
                .hub(2)
                .api
                .post(&format!("/hub/api/users/before{i}"), json!({}))
                .await
                .expect("post")
                .0,
            201
        );
    }
    let term_before = cluster.hub(2).raft.status().term;

    info!("--- replica 1, the one that founded the cluster, loses its disk");
    cluster.kill(1).await;
    std::fs::remove_dir_all(cluster.data_dir(1)).expect("wipe");
    cluster.start_node(1).await;

    info!("--- it is replicated to, rather than electing itself in a cluster of its own");
    eventually("replica 1 has the cluster's users again", PATIENCE, || async {
        cluster.hub(1).raft.read_local(|s| (s.users.len() == 5).then_some(()))
    })
    .await;
    let leader = cluster.wait_for_leader().await;
    let statuses: Vec<_> = cluster.running().map(|hub| hub.raft.status()).collect();
    assert!(
        statuses
            .iter()
            .all(|s| s.leader_id == Some(leader) && s.members.len() == 3),
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| s.term >= term_before));
    let (status, _) = cluster
        .hub(1)
        .api
        .post("/hub/api/users/after", json!({}))
        .await
        .expect("post");
    assert_eq!(status, 201);
    let (status, _) = cluster.hub(3).api.get("/hub/api/users/after").await.expect("get");
    assert_eq!(status, 200);
}

/// Session 8's bug: a follower sends its forward queue from inside its callers' futures,
/// and a caller cancelled mid-send (an HTTP client hanging up) never gave its sending
/// slot back; after four, nobody sent the queue again and every proposal forwarded from
/// that replica waited for ever. Here hundreds of forwarded proposals are cancelled a
/// millisecond in (well inside the round trip to the leader and its fsync), and the
/// follower must still forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t90_issue_cancelled_forwarders_leave_the_follower_forwarding() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let raft = cluster.hub(follower).raft.clone();
    let create = |name: String| ganymede_model::Command::CreateUsers {
        names: vec![name],
        admin: false,
        at: 1,
    };
    let mut cancelled = 0;
    for round in 0..50 {
        let proposals = (0..8).map(|i| {
            let raft = raft.clone();
            let command = create(format!("cancelled-{round}-{i}"));
            async move { tokio::time::timeout(Duration::from_millis(1), raft.propose(command)).await }
        });
        cancelled += futures::future::join_all(proposals)
            .await
            .iter()
            .filter(|outcome| outcome.is_err())
            .count();
    }
    info!(cancelled, "forwarded proposals cancelled mid-flight");
    assert!(
        cancelled > 4,
        "too few cancellations ({cancelled}) to have tested anything"
    );
    let applied = tokio::time::timeout(Duration::from_secs(10), raft.propose(create("after".into())))
        .await
        .expect("the follower forwards again (it stalled before the fix)");
    assert!(applied.is_ok(), "{applied:?}");
    // What was cancelled may or may not have been committed, but the replicas agree.
    let names = |node: u64| {
        cluster
            .hub(node)
            .raft
            .read_local(|state| state.users.keys().cloned().collect::<BTreeSet<String>>())
    };
    eventually(
        "the replicas to agree on the users",
        Duration::from_secs(10),
        || async { (names(1) == names(2) && names(2) == names(3) && names(1).contains("after")).then_some(()) },
    )
    .await;
}
