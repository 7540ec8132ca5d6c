//! openraft's type configuration for Ganymede.

use ganymede_model::{Command, Rejection, Sequenced};
use serde::{Deserialize, Serialize};

/// What a replica is, as the cluster membership records it: where its peers reach its
/// Raft service, and where clients reach its HTTP API (for status and tooling).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubNode {
    pub raft_addr: String,
    pub api_addr: String,
}

/// The outcome of applying one log entry, sent back to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry: nothing for a client.
    #[default]
    Nothing,
    /// The command was accepted and produced these events.
    Events(Vec<Sequenced>),
    /// The command was refused; nothing changed.
    Rejected(Rejection),
}

/// A command as it travels through the log, with the id its proposer gave it. A
/// proposer that cannot tell whether its proposal was committed (the leader died or
/// stepped down with it in flight) proposes it again under the same id; the state
/// machine recognizes the id and answers with the first outcome instead of applying
/// the command twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub command: Command,
    /// Who asked for it, for the audit record.
    #[serde(default)]
    pub origin: Option<ganymede_model::audit::Origin>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (proposal {:x})", self.command, self.id)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        Node = HubNode,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
