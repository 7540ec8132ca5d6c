//! openraft's storage conformance suite against our RocksDB log store and state machine.

use ganymede_store::Store;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1).expect("open store");
        let state_machine = StateMachine::open(store.clone()).expect("open state machine");
        Ok((dir, LogStore::new(store), state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_rocksdb() {
    Suite::test_all(RocksBuilder).await.expect("openraft's storage suite");
}

/// A proposal retried under the same id (its first outcome was lost with a leader) is
/// answered with the first outcome and changes nothing the second time, also after the
/// state machine was rebuilt from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_proposal_is_applied_once() {
    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use crate::types::{Applied, Entry, Proposal};

    let dir = tempfile::tempdir().expect("tempdir");
    let mut state_machine = StateMachine::open(Store::open(dir.path(), 1).expect("open")).expect("state machine");
    let create = |id: u64, name: &str| Proposal {
        id,
        origin: None,
        command: ganymede_model::Command::CreateUsers {
            names: vec![name.into()],
            admin: false,
            at: 1,
        },
    };
    let entry = |index: u64, proposal: Proposal| -> Entry {
        Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), proposal)
    };
    let apply = |sm: &mut StateMachine, entries: Vec<Entry>| {
        let mut sm = sm.clone();
        async move {
            let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
            sm.apply(stream).await.expect("apply");
        }
    };

    apply(
        &mut state_machine,
        vec![entry(1, create(7, "alice")), entry(2, create(7, "alice"))],
    )
    .await;
    let shared = state_machine.shared();
    assert_eq!(
        shared.read(|s| (s.users.len(), s.event_seq)),
        (1, 1),
        "the retry changed nothing"
    );
    let first = state_machine.remembered(7).expect("proposal 7 is remembered");
    assert!(
        matches!(first, Applied::Events(ref events) if events.len() == 1),
        "{first:?}"
    );
    // Without the id, the same command is a real second create, rejected as a duplicate.
    apply(&mut state_machine, vec![entry(3, create(8, "alice"))]).await;
    assert!(matches!(state_machine.remembered(8), Some(Applied::Rejected(_))));

    // A replica rebuilt from a snapshot still knows proposal 7's first outcome.
    let snapshot = state_machine.build_snapshot().await.expect("snapshot");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let mut other = StateMachine::open(Store::open(other_dir.path(), 2).expect("open")).expect("state machine");
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(other.remembered(7), Some(first));
    apply(
        &mut other,
        vec![entry(4, create(7, "alice")), entry(5, create(9, "bob"))],
    )
    .await;
    assert_eq!(other.shared().read(|s| (s.users.len(), s.event_seq)), (2, 2));
}

/// A replica restarted from its tables (no snapshot since the proposal) must still
/// remember the proposals it applied, as the replicas that never restarted do: else a
/// retry committed again after the restart is applied here and skipped elsewhere, and
/// the replicas' states part for good (the nemesis' `t40` found a token issued twice on
/// one replica of five).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_issue_a_restart_forgets_no_proposal_applied_since_the_snapshot() {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftStateMachine;

    use crate::types::{Applied, Entry, Proposal};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let proposal = |id: u64, name: &str| Proposal {
        id,
        origin: None,
        command: ganymede_model::Command::CreateUsers {
            names: vec![name.into()],
            admin: false,
            at: 1,
        },
    };
    let entries: Vec<Entry> = [(1, proposal(7, "alice")), (2, proposal(8, "bob"))]
        .into_iter()
        .map(|(index, proposal)| Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), proposal))
        .collect();
    // In the log (as Raft appended them) and applied.
    store
        .append_log_unsynced(
            entries
                .iter()
                .map(|entry| (entry.log_id.index, serde_json::to_vec(entry).expect("encode"))),
        )
        .expect("append");
    let mut state_machine = StateMachine::open(store.clone()).expect("state machine");
    let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
    state_machine.apply(stream).await.expect("apply");
    let first = state_machine.remembered(7).expect("proposal 7 is remembered");
    assert!(matches!(first, Applied::Events(_)), "{first:?}");
    drop(state_machine);

    // The restart: the state comes from the tables, the memory from the log.
    let restarted = StateMachine::open(store.clone()).expect("state machine");
    assert_eq!(restarted.remembered(7), Some(first));
    assert!(restarted.remembered(8).is_some());
    assert_eq!(restarted.shared().read(|s| s.users.len()), 2);
}
