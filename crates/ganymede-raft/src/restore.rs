//! Seeding a new one-node cluster from a [`Backup`] (offline, before its hub starts).
//!
//! The new replica's database is written as if it had just installed a snapshot of the
//! backup at the backup's log index, in a cluster of its own whose only voter it is:
//!
//! - the state tables hold the backup's state, with the applied log id
//!   `(term 0, this node, backup's index)` and the membership `{this node}` (its
//!   addresses as the hub's configuration gives them);
//! - the log is purged up to that log id and it is the committed one; there is no vote;
//! - a snapshot of that position is stored, so that replicas added later receive the
//!   state as a snapshot (they cannot replay it from a log that never held it).
//!
//! openraft then starts the node as an initialized cluster (so the hub's bootstrap does
//! not `initialize` anything over it); its first election is term 1, whose entries follow
//! the restored index. The old cluster's terms and membership are gone; its indexes go
//! on, so the new cluster's applied index starts where the backup was taken.
//!
//! Before returning, the written state is read back from RocksDB and its digest compared
//! with the backup's: the restored replica provably holds the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ganymede_model::ServerPhase;
use ganymede_store::Store;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder};
use openraft::vote::RaftLeaderIdExt;

use crate::backup::{Backup, BackupError, state_digest};
use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::{HubNode, LogId, StoredMembership, TypeConfig};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("data directory {path} is not empty: a restore only seeds a new replica (move it away, or choose another)")]
    NotEmpty { path: PathBuf },
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] ganymede_store::StoreError),
    #[error("cannot write the replica's raft state: {0}")]
    Raft(String),
    #[error(
        "the restored database's state digests to {found}, the backup's to {expected}; the data directory was removed"
    )]
    Verify { expected: String, found: String },
}

/// What a restore wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub node_id: u64,
    /// The new cluster's applied index: the backup's.
    pub applied_index: u64,
    /// The restored state's digest, read back from the database (the backup's).
    pub state_digest: String,
    pub users: usize,
    pub groups: usize,
    pub services: usize,
    pub tokens: usize,
    /// Servers the backup has running or on their way up or down. Their processes
    /// belong to the old cluster: the new one marks them failed (or stopped) once its
    /// reconciler finds them not running or placed on a replica that is not a member.
    pub active_servers: usize,
}

/// Seeds `data_dir` (absent or empty) with `backup` as the database of node `node_id`,
/// the only member of a new cluster, reachable at `node`. On any error, what was
/// written is removed again.
pub async fn restore(backup: &Backup, node_id: u64, node: HubNode, data_dir: &Path) -> Result<Restored, RestoreError> {
    let data_dir_error = |source| RestoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let existed = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty {
                    path: data_dir.to_owned(),
                });
            }
            true
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => return Err(data_dir_error(err)),
    };
    let outcome = seed(backup, node_id, node, data_dir).await;
    if outcome.is_err() {
        // Leave nothing half-written that a hub could start from.
        let leftover = if existed {
            data_dir.join("db")
        } else {
            data_dir.to_owned()
        };
        let _ = std::fs::remove_dir_all(leftover);
    }
    outcome
}

async fn seed(backup: &Backup, node_id: u64, node: HubNode, data_dir: &Path) -> Result<Restored, RestoreError> {
    let state = backup.state()?;
    let raft_error = |err: std::io::Error| RestoreError::Raft(err.to_string());

    let log_id = LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, node_id),
        backup.header.applied_index,
    );
    let membership = openraft::Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, node)]))
        .map_err(|err| RestoreError::Raft(err.to_string()))?;
    let membership = StoredMembership::new(Some(log_id), membership);

    let store = Store::open(data_dir, node_id)?;
    store.replace_state(&state, &encode(&Some(log_id))?, &encode(&membership)?)?;
    let mut log = LogStore::new(store.clone());
    log.purge(log_id).await.map_err(raft_error)?;
    log.save_committed(Some(log_id)).await.map_err(raft_error)?;
    let mut state_machine = StateMachine::open(store.clone()).map_err(raft_error)?;
    state_machine.build_snapshot().await.map_err(raft_error)?;
    drop((log, state_machine));

    let loaded = store.load_state()?;
    let found = state_digest(&loaded.state).map_err(|err| RestoreError::Raft(err.to_string()))?;
    if found != backup.header.state_digest {
        return Err(RestoreError::Verify {
            expected: backup.header.state_digest.clone(),
            found,
        });
    }
    store.sync()?;
    let active_servers = state
        .users
        .values()
        .flat_map(|user| user.servers.values())
        .filter(|server| server.phase != ServerPhase::Stopped)
        .count();
    Ok(Restored {
        data_dir: data_dir.to_owned(),
        node_id,
        applied_index: backup.header.applied_index,
        state_digest: found,
        users: state.users.len(),
        groups: state.groups.len(),
        services: state.services.len(),
        tokens: state.tokens.len(),
        active_servers,
    })
}

/// Raft's values as the state machine stores them (opaque to the store).
fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RestoreError> {
    serde_json::to_vec(value).map_err(|err| RestoreError::Raft(err.to_string()))
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogReader, RaftStateMachine};

    use ganymede_model::State;

    use super::*;
    use crate::backup::{BACKUP_FORMAT, BACKUP_VERSION, BackupHeader};

    fn backup_at(index: u64, state: &State) -> Backup {
        let bytes = serde_json::to_vec(state).expect("serialize");
        let header = BackupHeader {
            format: BACKUP_FORMAT.into(),
            version: BACKUP_VERSION,
            ganymede_version: "test".into(),
            node_id: 3,
            applied_index: index,
            applied_term: 5,
            taken_at: 0,
            state_bytes: bytes.len() as u64,
            state_digest: state_digest(state).expect("digest"),
        };
        let mut file = serde_json::to_vec(&header).expect("header");
        file.push(b'\n');
        file.extend_from_slice(&bytes);
        Backup::from_bytes(&file).expect("backup")
    }

    #[tokio::test]
    async fn a_restored_replica_is_an_initialized_one_node_cluster_at_the_backups_index() {
        let mut state = State::default();
        ganymede_model::apply(
            &mut state,
            &ganymede_model::Command::CreateUsers {
                names: vec!["alice".into()],
                admin: true,
                at: 1,
            },
        )
        .expect("create");
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("hub1");
        let node = HubNode {
            raft_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
        };
        let restored = restore(&backup_at(42, &state), 1, node.clone(), &data_dir)
            .await
            .expect("restore");
        assert_eq!((restored.applied_index, restored.users), (42, 1));

        let store = Store::open(&data_dir, 1).expect("reopen");
        let mut log = LogStore::new(store.clone());
        let log_state = log.get_log_state().await.expect("log state");
        assert_eq!(log_state.last_purged_log_id.map(|id| id.index), Some(42));
        assert_eq!(log_state.last_log_id, log_state.last_purged_log_id);
        assert_eq!(log.read_vote().await.expect("vote"), None);
        let mut state_machine = StateMachine::open(store.clone()).expect("state machine");
        let (applied, membership) = state_machine.applied_state().await.expect("applied");
        assert_eq!(applied.map(|id| (id.index, id.leader_id.term)), Some((42, 0)));
        assert_eq!(membership.membership().voter_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(membership.membership().get_node(&1), Some(&node));
        let snapshot = state_machine
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("a snapshot for replicas added later");
        assert_eq!(snapshot.meta.last_log_id, applied);
        assert_eq!(state_machine.shared().read(Clone::clone), state);

        // A second restore into the same directory is refused and leaves it alone.
        drop((log, state_machine, store));
        let err = restore(&backup_at(42, &state), 1, node, &data_dir)
            .await
            .expect_err("not empty");
        assert!(matches!(err, RestoreError::NotEmpty { .. }), "{err}");
        assert!(data_dir.join("db").is_dir());
    }

    fn raft_config(node_id: u64, node: &HubNode, data_dir: &Path, initial: &[u64]) -> crate::RaftConfig {
        crate::RaftConfig {
            node_id,
            node: node.clone(),
            data_dir: data_dir.to_owned(),
            initial_members: initial.iter().map(|id| (*id, node.clone())).collect(),
            heartbeat_interval: std::time::Duration::from_millis(50),
            election_timeout_min: std::time::Duration::from_millis(150),
            election_timeout_max: std::time::Duration::from_millis(300),
            snapshot_logs_since_last: 10_000,
            logs_kept_after_snapshot: 2_000,
            request_timeout: std::time::Duration::from_secs(10),
            peer_tls: None,
            max_connections: 1024,
        }
    }

    async fn hub_node() -> (tokio::net::TcpListener, HubNode) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let node = HubNode {
            raft_addr: addr.clone(),
            api_addr: addr,
        };
        (listener, node)
    }

    /// The restored replica founds nothing (it is a cluster already), leads at once,
    /// holds the backup's state, takes writes after the backup's index, and a replica
    /// added later receives the state (by snapshot: the log never held it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_replica_leads_serves_and_grows() {
        let mut state = State::default();
        ganymede_model::apply(
            &mut state,
            &ganymede_model::Command::CreateUsers {
                names: vec!["alice".into(), "bob".into()],
                admin: false,
                at: 1,
            },
        )
        .expect("create");
        let dir = tempfile::tempdir().expect("tempdir");
        let (listener1, node1) = hub_node().await;
        let (listener2, node2) = hub_node().await;
        restore(&backup_at(500, &state), 1, node1.clone(), &dir.path().join("hub1"))
            .await
            .expect("restore");

        let tasks = tokio_util::task::TaskTracker::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let config = raft_config(1, &node1, &dir.path().join("hub1"), &[1]);
        let hub1 = crate::RaftHandle::start(config, listener1, &tasks, shutdown.clone())
            .await
            .expect("start restored");
        assert_eq!(hub1.wait_for_leader(std::time::Duration::from_secs(10)).await, Some(1));
        assert_eq!(hub1.read(|s| s.clone()).await.expect("read"), state);
        let outcome = hub1
            .propose(ganymede_model::Command::CreateUsers {
                names: vec!["carol".into()],
                admin: false,
                at: 2,
            })
            .await
            .expect("write");
        assert!(matches!(outcome, crate::Applied::Events(_)), "{outcome:?}");
        let status = hub1.status();
        assert!(status.last_applied_index > Some(500), "{status:?}");
        assert_eq!(status.members.len(), 1);
        // A backup of the restored cluster: at its applied entry, in its own first term.
        let backup = hub1.backup().await.expect("backup");
        let digest = hub1.state_digest().await.expect("digest");
        assert_eq!(
            (
                backup.header.applied_index,
                backup.header.applied_term,
                &backup.header.state_digest
            ),
            (digest.applied_index, 1, &digest.state_digest)
        );
        assert_eq!(backup.state().expect("state").users.len(), 3);

        let config = raft_config(2, &node2, &dir.path().join("hub2"), &[]);
        let hub2 = crate::RaftHandle::start(config, listener2, &tasks, shutdown.clone())
            .await
            .expect("start joining");
        hub1.add_node(2, node2, true).await.expect("add node 2");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while hub2.read_local(|s| s.users.len()) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "node 2 never caught up");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            hub2.read_local(|s| state_digest(s).expect("digest")),
            hub1.read_local(|s| state_digest(s).expect("digest"))
        );

        hub2.shutdown().await;
        hub1.shutdown().await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
