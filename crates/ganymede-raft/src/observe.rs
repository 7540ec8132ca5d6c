//! `ganymede_raft_*` metrics: what an operator needs to see a replica's place in the
//! cluster (term, leader, role), how far its log, commits and applies have come, how
//! far each follower is behind the leader, how long proposals take to commit and how
//! big and slow snapshots are. Labels are node ids of members: a bounded set.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::types::{LogId, Raft};

/// How often the database's size is measured.
const STORE_SIZE_EVERY: Duration = Duration::from_secs(15);

/// Keeps the gauges in step with openraft's metrics until `shutdown`.
pub(crate) async fn export(raft: Raft, store: ganymede_store::WeakStore, node_id: u64, shutdown: CancellationToken) {
    let mut watched = raft.metrics();
    let mut measure_store = tokio::time::interval(STORE_SIZE_EVERY);
    measure_store.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader: Option<u64> = None;
    // Followers this replica reported lag for while it led: zeroed when it stops leading,
    // so a deposed leader's last figures do not linger.
    let mut lag_reported: BTreeSet<u64> = BTreeSet::new();
    metrics::counter!("ganymede_raft_leader_changes_total").increment(0);
    loop {
        {
            let m = watched.borrow_and_update();
            if m.current_leader != leader {
                if leader.is_some() || m.current_leader.is_some() {
                    metrics::counter!("ganymede_raft_leader_changes_total").increment(1);
                }
                leader = m.current_leader;
            }
            let index = |log_id: Option<LogId>| log_id.map_or(0.0, |id| id.index as f64);
            let is_leader = m.current_leader == Some(node_id) && m.state == ServerState::Leader;
            metrics::gauge!("ganymede_raft_term").set(m.current_term as f64);
            metrics::gauge!("ganymede_raft_leader").set(m.current_leader.unwrap_or(0) as f64);
            metrics::gauge!("ganymede_raft_is_leader").set(if is_leader { 1.0 } else { 0.0 });
            metrics::gauge!("ganymede_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("ganymede_raft_committed_index").set(index(m.cluster_committed));
            metrics::gauge!("ganymede_raft_applied_index").set(index(m.last_applied));
            metrics::gauge!("ganymede_raft_snapshot_index").set(index(m.snapshot));
            metrics::gauge!("ganymede_raft_purged_index").set(index(m.purged));
            let voters = m.membership_config.membership().voter_ids().count();
            metrics::gauge!("ganymede_raft_voters").set(voters as f64);
            let last = m.last_log_index.unwrap_or(0);
            match (&m.replication, is_leader) {
                (Some(replication), true) => {
                    for (peer, matched) in replication.iter().filter(|(peer, _)| **peer != node_id) {
                        let lag = last.saturating_sub(matched.map_or(0, |id| id.index));
                        metrics::gauge!("ganymede_raft_replication_lag", "peer" => peer.to_string()).set(lag as f64);
                        lag_reported.insert(*peer);
                    }
                }
                _ => {
                    for peer in std::mem::take(&mut lag_reported) {
                        metrics::gauge!("ganymede_raft_replication_lag", "peer" => peer.to_string()).set(0.0);
                    }
                }
            }
        }
        tokio::select! {
            changed = watched.changed() => if changed.is_err() { return },
            _ = measure_store.tick() => {
                // Weakly held: a replica that shuts down closes its database.
                let Some(store) = store.upgrade() else { return };
                if let Ok(bytes) = tokio::task::spawn_blocking(move || store.size_bytes()).await {
                    metrics::gauge!("ganymede_store_bytes").set(bytes as f64);
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// A proposal's round trip from this replica: forwarded or not, until applied.
pub(crate) fn proposal_committed(took: Duration) {
    metrics::histogram!("ganymede_raft_propose_seconds").record(took.as_secs_f64());
}

/// A snapshot built: its size and how long it took (encoding, syncing, storing).
pub(crate) fn snapshot_built(bytes: usize, took: Duration) {
    metrics::gauge!("ganymede_raft_snapshot_bytes").set(bytes as f64);
    metrics::histogram!("ganymede_raft_snapshot_build_seconds").record(took.as_secs_f64());
}
