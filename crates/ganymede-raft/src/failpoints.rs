//! Failpoints for the fault tests (issue 7) at the storage steps a crash or a disk error
//! can interrupt: log append, apply, snapshot build and install, purge. They exist only
//! with the `failpoints` feature, which `ganymede-testkit` turns on; without it a check
//! is an empty inline function and the `fail` crate is not built.
//!
//! A point is armed for one replica, as `<point>@<node_id>`, because an in-process
//! cluster runs several replicas in one process. Actions are the `fail` crate's:
//! `return` fails the storage call with an I/O error (openraft then stops that replica,
//! as it would on a failing disk), `panic`, and counts or odds (`1*return`,
//! `20%return`). The blocking actions (`sleep`, `pause`) would stall a runtime worker
//! that other replicas share: tests do not use them.

/// Before a batch of entries is written to the log.
pub const LOG_APPEND: &str = "log.append";
/// Before a batch of committed entries changes the state.
pub const APPLY: &str = "apply";
/// After a batch of committed entries is written to the database, before the clients
/// that proposed them hear the outcome.
pub const APPLY_WRITTEN: &str = "apply.written";
/// Before a snapshot is built.
pub const SNAPSHOT_BUILD: &str = "snapshot.build";
/// Before a snapshot received from the leader replaces the state.
pub const SNAPSHOT_INSTALL: &str = "snapshot.install";
/// After a received snapshot has replaced the state, before the snapshot is stored.
pub const SNAPSHOT_INSTALL_STATE_WRITTEN: &str = "snapshot.install.state_written";
/// Before the log is purged up to a snapshot.
pub const PURGE: &str = "log.purge";

/// Every point, for tests that go through them all.
pub const ALL: [&str; 7] = [
    LOG_APPEND,
    APPLY,
    APPLY_WRITTEN,
    SNAPSHOT_BUILD,
    SNAPSHOT_INSTALL,
    SNAPSHOT_INSTALL_STATE_WRITTEN,
    PURGE,
];

/// The failpoint's name for one replica.
pub fn name(point: &str, node_id: u64) -> String {
    format!("{point}@{node_id}")
}

/// Arms `point` on replica `node_id` with `actions` (the `fail` crate's syntax).
#[cfg(feature = "failpoints")]
pub fn arm(point: &str, node_id: u64, actions: &str) -> Result<(), String> {
    fail::cfg(name(point, node_id), actions)
}

/// Disarms `point` on replica `node_id`.
#[cfg(feature = "failpoints")]
pub fn disarm(point: &str, node_id: u64) {
    fail::remove(name(point, node_id));
}

/// `Err` when `point` is armed to fail on replica `node_id`.
#[inline]
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn check(point: &str, node_id: u64) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(arg) = fail::eval(&name(point, node_id), |arg| arg) {
        return Err(std::io::Error::other(format!(
            "failpoint {point} on node {node_id}{}",
            arg.map(|arg| format!(": {arg}")).unwrap_or_default()
        )));
    }
    Ok(())
}
