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
