//! Killing the leader process under a stream of writes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, ProcessCluster, eventually};

async fn user_names(cluster: &ProcessCluster, node_id: u64) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let mut offset = 0;
    loop {
        let path = format!("/hub/api/users?offset={offset}&limit=200");
        let (status, body) = cluster.request(node_id, reqwest::Method::GET, &path).await?;
        if status != 200 {
            return None;
        }
        let page: Vec<&Value> = body.as_array()?.iter().collect();
        names.extend(page.iter().filter_map(|u| u["name"].as_str().map(str::to_owned)));
        if page.len() < 200 {
            return Some(names);
        }
        offset += 200;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_leader_under_writes_then_restart_it() {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    let leader = cluster.leader().await;
    let writer = (1..=3).find(|id| *id != leader).expect("follower");

    // --- writes through a follower; the leader is SIGKILLed half way
    let mut acknowledged = Vec::new();
    let mut failures_after_kill = 0;
    let mut killed_at = None;
    for i in 0..400 {
        if i == 100 {
            cluster.kill9(leader);
            killed_at = Some(acknowledged.len());
        }
        let name = format!("p{i}");
        match cluster
            .request(writer, reqwest::Method::POST, &format!("/hub/api/users/{name}"))
            .await
        {
            Some((201, _)) => acknowledged.push(name),
            _ => failures_after_kill += 1,
        }
    }
    let killed_at = killed_at.expect("killed");
    assert!(
        acknowledged.len() > killed_at + 200,
        "writes resumed after the kill: {} acknowledged",
        acknowledged.len()
    );

    // --- every acknowledged write is on both survivors
    for node in (1..=3).filter(|id| *id != leader) {
        let names = user_names(&cluster, node).await.expect("list users");
        let missing: Vec<_> = acknowledged.iter().filter(|n| !names.contains(*n)).collect();
        assert!(missing.is_empty(), "hub{node} lost acknowledged writes: {missing:?}");
    }

    // --- the killed hub restarts from its data dir and catches up
    cluster.start(leader);
    eventually(
        "the restarted hub has every acknowledged write",
        Duration::from_secs(30),
        || async {
            let names = user_names(&cluster, leader).await?;
            acknowledged.iter().all(|n| names.contains(n)).then_some(())
        },
    )
    .await;
    eprintln!(
        "failover: {} acknowledged, {failures_after_kill} failed while no leader answered",
        acknowledged.len()
    );

    // --- no token in the clear in the logs
    let logs = cluster.logs();
    assert!(logs.contains("hub listening"), "the logs were captured");
    assert!(!logs.contains(ADMIN_TOKEN), "the admin token appears in a log");
    assert!(!logs.contains("panicked"), "a hub panicked:\n{logs}");
}

/// JupyterHub's `POST /shutdown`, sent to one replica, stops that replica cleanly; the
/// others keep serving writes, and it rejoins when started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_through_the_api_stops_one_replica_and_the_cluster_goes_on() {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .request(leader, reqwest::Method::POST, "/hub/api/shutdown")
        .await
        .expect("shutdown answers");
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["message"], "Shutting down Hub");
    let exit = eventually("the replica exits by itself", Duration::from_secs(30), || {
        let status = cluster.exited(leader);
        async move { status }
    })
    .await;
    assert!(
        exit.success(),
        "a clean exit, not a crash: {exit:?}\n{}",
        cluster.logs()
    );
    let other = (1..=3).find(|id| *id != leader).expect("another replica");
    eventually(
        "the others elect a leader and take writes",
        Duration::from_secs(30),
        || async {
            let (status, _) = cluster
                .request(other, reqwest::Method::POST, "/hub/api/users/after-shutdown")
                .await?;
            (status == 201).then_some(())
        },
    )
    .await;
    cluster.start(leader);
    eventually(
        "the stopped replica rejoins and catches up",
        Duration::from_secs(30),
        || async {
            let (status, _) = cluster
                .request(leader, reqwest::Method::GET, "/hub/api/users/after-shutdown")
                .await?;
            (status == 200).then_some(())
        },
    )
    .await;
}
