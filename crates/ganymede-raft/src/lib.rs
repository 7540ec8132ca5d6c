//! Replication for a hub replica: openraft wired to Ganymede's RocksDB store and to a
//! tonic network. This is the only crate that names openraft (its alphas break APIs);
//! everything above talks to a [`RaftHandle`]: propose a command from any replica,
//! read linearizably, change membership, watch the cluster.

mod backup;
pub mod failpoints;
mod handle;
pub mod incoming;
mod log_store;
mod network;
mod observe;
pub mod origin;
mod restore;
mod server;
mod state_machine;
mod types;

pub use backup::{BACKUP_FORMAT, BACKUP_VERSION, Backup, BackupError, BackupHeader, StateDigest, state_digest};
pub use handle::{ClusterStatus, MemberStatus, PeerTls, ProposeError, RaftConfig, RaftHandle, ReadError, StartError};
pub use restore::{RestoreError, Restored, restore};
pub use state_machine::SharedState;
pub use types::Applied;
pub use types::HubNode;

#[cfg(test)]
mod tests;
