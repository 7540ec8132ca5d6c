//! `ganymede_raft_*` metrics: what an operator needs to see a replica's place in the
//! cluster (term, leader, role, how recently a majority acknowledged it), how far its
//! log, commits and applies have come, how far each follower is behind the leader, how
//! long proposals take to commit and how big and slow snapshots are. Labels are node
//! ids of members: a bounded set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::Instant as _;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::types::{LogId, Raft, TypeConfig};

/// How often the database's size is measured.
const STORE_SIZE_EVERY: Duration = Duration::from_secs(15);
/// Openraft's metrics change on every commit; the gauges follow at most this often.
const AT_MOST_EVERY: Duration = Duration::from_millis(250);
/// Re-published this often even without a change: ages (the quorum acknowledgement's)
/// grow while nothing happens, which is exactly when they matter.
const AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// The figures of one look at openraft's metrics, copied out so the watch is not
/// borrowed while they are published.
#[derive(Debug, Default, PartialEq)]
struct Figures {
    term: u64,
    leader: Option<u64>,
    is_leader: bool,
    /// Seconds since a majority acknowledged this leader; `None` unless leading.
    quorum_ack_age: Option<f64>,
    last_log: u64,
    committed: u64,
    applied: u64,
    snapshot: u64,
    purged: u64,
    voters: usize,
    /// On the leader: each other member's distance behind the leader's last log entry.
    lag: BTreeMap<u64, u64>,
}

fn look(m: &openraft::RaftMetrics<TypeConfig>, node_id: u64) -> Figures {
    let index = |log_id: &Option<LogId>| log_id.as_ref().map_or(0, |id| id.index);
    let is_leader = m.current_leader == Some(node_id) && m.state == ServerState::Leader;
    let last_log = m.last_log_index.unwrap_or(0);
    let lag = match (&m.replication, is_leader) {
        (Some(replication), true) => replication
            .iter()
            .filter(|(peer, _)| **peer != node_id)
            .map(|(peer, matched)| (*peer, last_log.saturating_sub(index(matched))))
            .collect(),
        _ => BTreeMap::new(),
    };
    Figures {
        term: m.current_term,
        leader: m.current_leader,
        is_leader,
        quorum_ack_age: is_leader
            .then(|| m.last_quorum_acked.as_ref().map(|acked| acked.elapsed().as_secs_f64()))
            .flatten(),
        last_log,
        committed: index(&m.cluster_committed),
        applied: index(&m.last_applied),
        snapshot: index(&m.snapshot),
        purged: index(&m.purged),
        voters: m.membership_config.membership().voter_ids().count(),
        lag,
    }
}

/// Counts a leader change when a leader other than the last one known takes over:
/// neither learning of the first leader nor an election in between (no leader for a
/// moment) is a change.
#[derive(Default)]
struct LeaderChanges {
    last_known: Option<u64>,
}

impl LeaderChanges {
    fn observe(&mut self, leader: Option<u64>) -> bool {
        let Some(leader) = leader else { return false };
        let changed = self.last_known.is_some_and(|known| known != leader);
        self.last_known = Some(leader);
        changed
    }
}

/// Keeps the gauges in step with openraft's metrics until `shutdown`.
pub(crate) async fn export(raft: Raft, store: ganymede_store::WeakStore, node_id: u64, shutdown: CancellationToken) {
    let mut watched = raft.metrics();
    let mut measure_store = tokio::time::interval(STORE_SIZE_EVERY);
    measure_store.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(AT_LEAST_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = LeaderChanges::default();
    // Peers this replica has reported lag for: zeroed once they are no longer
    // replicated to (it stopped leading, or they left), so old figures do not linger.
    let mut lag_reported: BTreeSet<u64> = BTreeSet::new();
    metrics::counter!("ganymede_raft_leader_changes_total").increment(0);
    loop {
        let figures = look(&watched.borrow_and_update(), node_id);
        if changes.observe(figures.leader) {
            metrics::counter!("ganymede_raft_leader_changes_total").increment(1);
        }
        publish(&figures, &mut lag_reported);
        tokio::select! {
            changed = watched.changed() => if changed.is_err() { return },
            _ = refresh.tick() => {}
            _ = measure_store.tick() => {
                // Weakly held: a replica that shuts down closes its database.
                let Some(store) = store.upgrade() else { return };
                if let Ok(bytes) = tokio::task::spawn_blocking(move || store.size_bytes()).await {
                    metrics::gauge!("ganymede_store_bytes").set(bytes as f64);
                }
            }
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(AT_MOST_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn publish(figures: &Figures, lag_reported: &mut BTreeSet<u64>) {
    metrics::gauge!("ganymede_raft_term").set(figures.term as f64);
    metrics::gauge!("ganymede_raft_leader").set(figures.leader.unwrap_or(0) as f64);
    metrics::gauge!("ganymede_raft_is_leader").set(if figures.is_leader { 1.0 } else { 0.0 });
    // 0 on replicas that do not lead; alert rules pair it with is_leader.
    metrics::gauge!("ganymede_raft_quorum_ack_age_seconds").set(figures.quorum_ack_age.unwrap_or(0.0));
    metrics::gauge!("ganymede_raft_last_log_index").set(figures.last_log as f64);
    metrics::gauge!("ganymede_raft_committed_index").set(figures.committed as f64);
    metrics::gauge!("ganymede_raft_applied_index").set(figures.applied as f64);
    metrics::gauge!("ganymede_raft_snapshot_index").set(figures.snapshot as f64);
    metrics::gauge!("ganymede_raft_purged_index").set(figures.purged as f64);
    metrics::gauge!("ganymede_raft_voters").set(figures.voters as f64);
    for (peer, lag) in &figures.lag {
        metrics::gauge!("ganymede_raft_replication_lag", "peer" => peer.to_string()).set(*lag as f64);
    }
    for gone in lag_reported.iter().filter(|peer| !figures.lag.contains_key(peer)) {
        metrics::gauge!("ganymede_raft_replication_lag", "peer" => gone.to_string()).set(0.0);
    }
    *lag_reported = figures.lag.keys().copied().collect();
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

#[cfg(test)]
mod tests {
    use super::LeaderChanges;

    #[test]
    fn only_a_different_leader_is_a_leader_change() {
        let mut changes = LeaderChanges::default();
        let seen: Vec<bool> = [None, Some(1), Some(1), None, Some(1), None, Some(2), Some(3), Some(3)]
            .into_iter()
            .map(|leader| changes.observe(leader))
            .collect();
        assert_eq!(seen, [false, false, false, false, false, false, true, true, false]);
    }
}
