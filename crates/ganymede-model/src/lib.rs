//! Ganymede's domain, with no I/O and no async: the entities a hub replica owns (users,
//! servers, groups, services, API tokens, routes), the commands that change them, the
//! events those commands produce, and the two pure functions that tie them together:
//! [`decide`] (may this command happen, and what happens?) and [`evolve`] (fold one
//! event into the state).
//!
//! Everything non-deterministic — timestamps, random secrets, token hashes — is chosen
//! by the proposing replica and carried inside the [`Command`], so that every replica
//! that applies the same log reaches the same [`State`] byte for byte.

pub mod accounts;
pub mod audit;
mod command;
pub mod credentials;
mod decide;
mod event;
pub mod names;
pub mod oauth;
pub mod rbac;
mod state;

pub use command::{Command, RouteUse, SpawnLimits, TokenRequest, TokenUse, UserActivity};
pub use decide::{Rejection, apply, decide, evolve};
pub use event::{Event, Key, Sequenced, ServerActivity};
pub use state::{
    ClusterInfo, Group, Route, Secret, Server, ServerPhase, Service, Session, SpawnStep, State, Timestamp, Token,
    TokenOwner, User, route_path_for,
};
