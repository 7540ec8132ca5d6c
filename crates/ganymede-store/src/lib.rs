//! A hub replica's durable storage: one RocksDB database with a column family per
//! concern — the Raft log and Raft metadata, one table per kind of entity, the event log
//! with its route index, and replica metadata. This is the only crate that knows the key
//! layout; it knows nothing of Raft's types (it stores them as opaque bytes) so that
//! openraft stays behind `ganymede-raft`.
//!
//! Durability: Raft log appends and vote writes are synced to the WAL before they
//! return. State-machine writes are atomic but not synced one by one: after a crash the
//! database holds a prefix of them, and Raft re-applies the rest from the (synced) log.

mod layout;
mod store;

pub use store::{AppliedWrite, LoadedState, Row, Store, StoreError, WeakStore};
