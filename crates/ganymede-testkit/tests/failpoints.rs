//! Failpoints (issue 7): a storage step fails on one replica — log append, apply (before
//! the batch is written, or after it is written but before anyone hears), snapshot build,
//! snapshot install (before it, or between the new state and the stored snapshot), log
//! purge. The replica's Raft must stop on the fault and say why, never limp on; the
//! others must go on committing; restarted from its data directory, the replica must
//! rejoin, and every replica must end with one state holding every acknowledged write.
//!
//! Failpoints are process-wide: the tests here take turns (nextest runs each in its own
//! process anyway).

use std::collections::BTreeSet;
use std::time::Duration;

use ganymede_raft::failpoints;
use ganymede_testkit::{TestCluster, Timings, eventually};
use serde_json::json;
use tracing::info;

const PATIENCE: Duration = Duration::from_secs(30);

/// One test at a time in this process: failpoints are global.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    Leader,
    Follower,
    /// A follower that was down while the log moved past a snapshot and was purged:
    /// it catches up by installing the leader's snapshot.
    LaggingFollower,
}

/// Disarms the failpoint however the test ends, so that a failing test does not leave
/// it armed for the next one.
struct Armed(&'static str, u64);

impl Drop for Armed {
    fn drop(&mut self) {
        failpoints::disarm(self.0, self.1);
    }
}

/// Creates users through the replicas other than `victim`, one after another, until
/// `done` holds; the names that were acknowledged.
async fn write_until(
    cluster: &TestCluster,
    victim: u64,
    prefix: &str,
    mut done: impl FnMut(usize) -> bool,
) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let survivors: Vec<u64> = cluster
        .running()
        .map(|hub| hub.node_id)
        .filter(|id| *id != victim)
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut attempt = 0usize;
    while !done(acknowledged.len()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix}: gave up after {attempt} writes ({} acknowledged)",
            acknowledged.len()
        );
        let name = format!("{prefix}{attempt}");
        let via = survivors[attempt % survivors.len()];
        attempt += 1;
        match cluster
            .hub(via)
            .api
            .post(&format!("/hub/api/users/{name}"), json!({}))
            .await
        {
            Ok((201, _)) => acknowledged.push(name),
            // No leader for a moment (the victim led): try again.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acknowledged
}

async fn fault(point: &'static str, victim: Victim) {
    let _turn = TURN.lock().await;
    // Snapshots and purges every few dozen entries, so that every point is reached.
    let timings = Timings {
        snapshot_logs_since_last: 30,
        logs_kept_after_snapshot: 5,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(3, timings).await;
    let leader = cluster.wait_for_leader().await;
    let target = match victim {
        Victim::Leader => leader,
        Victim::Follower | Victim::LaggingFollower => leader % 3 + 1,
    };
    let mut acknowledged = write_until(&cluster, target, "before", |acked| acked >= 10).await;

    if victim == Victim::LaggingFollower {
        info!("--- replica {target} falls behind while the log moves past a snapshot");
        let behind = cluster.hub(target).raft.status().last_applied_index.unwrap_or_default();
        cluster.kill(target).await;
        acknowledged.extend(write_until(&cluster, target, "behind", |acked| acked >= 80).await);
        let leader = cluster.wait_for_leader().await;
        cluster.hub(leader).raft.snapshot_now().await.expect("snapshot");
        let mut more = 0;
        eventually("the leader to purge past the lagging replica", PATIENCE, || {
            more += 1;
            let (api, raft) = (cluster.hub(leader).api.clone(), cluster.hub(leader).raft.clone());
            async move {
                if let Ok((201, _)) = api.post(&format!("/hub/api/users/purge{more}"), json!({})).await {
                    // Acknowledged, but checked below only through the other writes.
                }
                raft.status()
                    .purged_index
                    .filter(|purged| *purged > behind + 10)
                    .map(|_| ())
            }
        })
        .await;
        failpoints::arm(point, target, "return").expect("arm");
        cluster.start_node(target).await;
    } else {
        failpoints::arm(point, target, "return").expect("arm");
    }
    let _armed = Armed(point, target);

    info!("--- {point} fails on replica {target} ({victim:?})");
    let raft = cluster.hub(target).raft.clone();
    let stopped = tokio::spawn(async move { raft.stopped_by_fault().await });
    acknowledged.extend(write_until(&cluster, target, "during", |_| stopped.is_finished()).await);
    let reason = stopped.await.expect("the watcher");
    assert!(
        reason.contains(&failpoints::name(point, target)) || reason.contains("failpoint"),
        "replica {target} stopped, but not for the failpoint: {reason}"
    );
    // The others go on without it.
    acknowledged.extend(write_until(&cluster, target, "after", |acked| acked >= 20).await);

    info!("--- replica {target} restarts from disk and rejoins");
    failpoints::disarm(point, target);
    cluster.kill(target).await;
    cluster.start_node(target).await;
    cluster.wait_until_serving(target).await;
    acknowledged.extend(write_until(&cluster, target, "rejoined", |acked| acked >= 5).await);

    // One state everywhere: the same applied index and digest, with every write that was
    // acknowledged.
    let digests = eventually("the replicas to converge", PATIENCE, || async {
        let mut digests = BTreeSet::new();
        for node in 1..=3 {
            let digest = cluster.hub(node).raft.state_digest().await.ok()?;
            digests.insert((digest.applied_index, digest.state_digest));
        }
        (digests.len() == 1).then_some(digests)
    })
    .await;
    for node in 1..=3 {
        let users = cluster
            .hub(node)
            .raft
            .read_local(|state| state.users.keys().cloned().collect::<BTreeSet<_>>());
        let lost: Vec<&String> = acknowledged.iter().filter(|name| !users.contains(*name)).collect();
        assert!(lost.is_empty(), "replica {node} lost acknowledged writes: {lost:?}");
    }
    info!(?digests, acknowledged = acknowledged.len(), "{point}: converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_append_fails_on_the_leader() {
    fault(failpoints::LOG_APPEND, Victim::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_append_fails_on_a_follower() {
    fault(failpoints::LOG_APPEND, Victim::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_fails_on_the_leader() {
    fault(failpoints::APPLY, Victim::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_fails_on_a_follower() {
    fault(failpoints::APPLY, Victim::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_fails_after_writing_on_the_leader() {
    fault(failpoints::APPLY_WRITTEN, Victim::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_fails_after_writing_on_a_follower() {
    fault(failpoints::APPLY_WRITTEN, Victim::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_build_fails_on_a_follower() {
    fault(failpoints::SNAPSHOT_BUILD, Victim::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_install_fails_on_a_lagging_follower() {
    fault(failpoints::SNAPSHOT_INSTALL, Victim::LaggingFollower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_install_fails_between_state_and_snapshot() {
    fault(failpoints::SNAPSHOT_INSTALL_STATE_WRITTEN, Victim::LaggingFollower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_purge_fails_on_the_leader() {
    fault(failpoints::PURGE, Victim::Leader).await;
}
