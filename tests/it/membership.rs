//! `ganymede cluster add|remove|status` against real processes: a 4th hub joins, an old
//! one leaves, and writes keep succeeding.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, ProcessCluster, eventually, ganymede_bin};

fn cluster_cli(cluster: &ProcessCluster, via: u64, args: &[&str]) -> String {
    let output = Command::new(ganymede_bin())
        .arg("cluster")
        .arg("--url")
        .arg(cluster.url(via, ""))
        .args(args)
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run ganymede cluster");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ganymede cluster {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn voters(status: &Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["voter"] == Value::Bool(true))
        .filter_map(|m| m["node_id"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_hub_joins_and_an_old_one_leaves() {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    let leader = cluster.leader().await;

    // --- hub4 starts with no initial members and is added through hub2's API
    let joining = cluster.add_joining_hub();
    cluster.start(joining);
    let hub4 = cluster.hub(joining);
    let (raft_addr, api_addr) = (
        format!("127.0.0.1:{}", hub4.raft_port),
        format!("127.0.0.1:{}", hub4.api_port),
    );
    let text = cluster_cli(
        &cluster,
        2,
        &[
            "add",
            "--node-id",
            "4",
            "--raft-addr",
            &raft_addr,
            "--api-addr",
            &api_addr,
        ],
    );
    assert!(text.contains("node   4  voter"), "{text}");
    // hub4's own view follows once the membership change has replicated to it.
    eventually("hub4 sees four voters", Duration::from_secs(20), || async {
        let status: Value = serde_json::from_str(&cluster_cli(&cluster, joining, &["status", "--json"])).ok()?;
        (voters(&status) == vec![1, 2, 3, 4]).then_some(())
    })
    .await;
    assert_eq!(
        cluster
            .request(joining, reqwest::Method::POST, "/hub/api/users/via-hub4")
            .await
            .map(|r| r.0),
        Some(201)
    );

    // --- the leader is removed, then stopped; writes go on
    cluster_cli(&cluster, joining, &["remove", "--node-id", &leader.to_string()]);
    cluster.kill9(leader);
    let survivor = (1..=3).find(|id| *id != leader).expect("survivor");
    for i in 0..20 {
        let path = format!("/hub/api/users/after-removal{i}");
        assert_eq!(
            cluster
                .request(survivor, reqwest::Method::POST, &path)
                .await
                .map(|r| r.0),
            Some(201),
            "{path}"
        );
    }
    let status = eventually(
        "three voters without the removed hub",
        Duration::from_secs(20),
        || async {
            let text = Command::new(ganymede_bin())
                .args(["cluster", "--url", &cluster.url(joining, ""), "status", "--json"])
                .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
                .output()
                .ok()?;
            let status: Value = serde_json::from_slice(&text.stdout).ok()?;
            (voters(&status).len() == 3).then_some(status)
        },
    )
    .await;
    assert!(!voters(&status).contains(&leader), "{status}");
    assert_ne!(status["leader_id"].as_u64(), Some(leader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request_and_on_a_kill_and_the_status_names_the_true_leader() {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    let old = cluster.leader().await;
    let via = (1..=3).find(|id| *id != old).expect("a follower");
    let status: Value = serde_json::from_str(&cluster_cli(&cluster, via, &["status", "--json"])).expect("json");
    assert_eq!(status["leader_id"].as_u64(), Some(old), "{status}");
    let replicas = status["replicas"].as_array().expect("replicas").clone();
    assert_eq!(replicas.len(), 3, "{status}");
    assert!(
        replicas.iter().all(|r| r["reachable"] == true && r["lag"].is_u64()),
        "{status}"
    );

    // Leadership handed over on request: the status, once the call returns, names the
    // chosen voter everywhere.
    // To each other voter in turn: an election would pick the chosen one only by chance.
    let third = (1..=3).find(|id| *id != old && *id != via).expect("the third replica");
    for chosen in [third, via, old, third] {
        cluster_cli(&cluster, via, &["transfer-leader", "--node-id", &chosen.to_string()]);
        eventually(
            "every replica to follow the chosen leader",
            Duration::from_secs(10),
            || async {
                let status: Value = serde_json::from_str(&cluster_cli(&cluster, via, &["status", "--json"])).ok()?;
                let replicas = status["replicas"].as_array()?;
                replicas
                    .iter()
                    .all(|r| r["leader_id"].as_u64() == Some(chosen))
                    .then_some(())
            },
        )
        .await;
        assert_eq!(cluster.leader().await, chosen);
    }
    // Each transfer is on the audit record, by the admin, in order, on every replica.
    let wanted: Vec<String> = [third, via, old, third].iter().map(|id| format!("node {id}")).collect();
    for node in 1..=3 {
        eventually("the transfers on the audit record", Duration::from_secs(10), || async {
            let (_, page) = cluster
                .request(
                    node,
                    reqwest::Method::GET,
                    "/hub/api/ganymede/events?since=0&limit=1000",
                )
                .await?;
            let transfers: Vec<&Value> = page["events"]
                .as_array()?
                .iter()
                .filter(|event| event["action"] == "cluster.transfer_leader")
                .collect();
            let targets: Vec<String> = transfers
                .iter()
                .filter_map(|event| Some(event["target"].as_str()?.to_owned()))
                .collect();
            (targets == wanted && transfers.iter().all(|event| event["actor"] == "service:admin")).then_some(())
        })
        .await;
    }
    let chosen = third;
    // Bad input: not a member.
    let refused = Command::new(ganymede_bin())
        .args([
            "cluster",
            "--url",
            &cluster.url(via, ""),
            "transfer-leader",
            "--node-id",
            "9",
        ])
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a voter"),
        "{refused:?}"
    );
    let old = chosen;

    cluster.kill9(old);
    // The survivors elect a leader among themselves; the status, asked of either, names
    // it, and says the old one cannot be reached.
    let (status, new) = eventually("a status naming the new leader", Duration::from_secs(20), || async {
        let output = Command::new(ganymede_bin())
            .args(["cluster", "--url", &cluster.url(via, ""), "status", "--json"])
            .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .ok()?;
        let status: Value = serde_json::from_slice(&output.stdout).ok()?;
        let new = status["leader_id"].as_u64().filter(|id| *id != old)?;
        let leading = status["replicas"]
            .as_array()?
            .iter()
            .filter(|r| r["role"] == "leader")
            .filter_map(|r| r["node_id"].as_u64())
            .collect::<Vec<_>>();
        (leading == vec![new]).then_some((status, new))
    })
    .await;
    assert_ne!(new, old);
    let replicas = status["replicas"].as_array().expect("replicas");
    let dead = replicas
        .iter()
        .find(|r| r["node_id"] == old)
        .expect("the old leader's entry");
    assert_eq!(dead["reachable"], false, "{status}");
    for replica in replicas.iter().filter(|r| r["node_id"] != old) {
        assert_eq!(replica["leader_id"].as_u64(), Some(new), "{status}");
    }
    // The human form says the same.
    let text = cluster_cli(&cluster, via, &["status"]);
    assert!(text.contains(&format!("(leader {new},")), "{text}");
    assert!(text.contains(&format!("replica {old:>3}: unreachable")), "{text}");
}
