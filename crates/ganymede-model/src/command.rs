//! Commands: what a replica proposes to the Raft log. A command carries every input its
//! outcome depends on, including the time and any random material, so that applying it
//! is deterministic.

use serde::{Deserialize, Serialize};

use crate::state::{Secret, Timestamp, TokenOwner};

/// A request to change the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Fix the cluster secret; the first command every new cluster commits.
    InitializeCluster { cluster_secret: Secret, at: Timestamp },
    /// Create users (names already normalized). Existing names are skipped; if every
    /// name exists the command is rejected, as JupyterHub's `POST /users` does.
    CreateUsers {
        names: Vec<String>,
        admin: bool,
        at: Timestamp,
    },
    /// Rename a user and/or change their admin flag.
    UpdateUser {
        name: String,
        rename: Option<String>,
        admin: Option<bool>,
        at: Timestamp,
    },
    /// Delete a user with their tokens; running servers are marked stopped and lose
    /// their routes (the spawner reconciles the processes away).
    DeleteUser { name: String, at: Timestamp },
    /// Create the service if it does not exist, or bring its admin flag and roles in line.
    EnsureService {
        name: String,
        admin: bool,
        roles: Vec<String>,
        at: Timestamp,
    },
    /// Store a new token (its hash only). The id is assigned by the state machine.
    IssueToken(TokenRequest),
    /// Revoke one token.
    RevokeToken { id: u64, at: Timestamp },
    /// Ask for a server to start; creates a named server on first use.
    RequestSpawn {
        user: String,
        server: String,
        user_options: serde_json::Value,
        at: Timestamp,
    },
    /// The spawner reports that spawn `spawn_id` is up and reachable at `url`.
    MarkServerReady {
        user: String,
        server: String,
        spawn_id: u64,
        url: String,
        at: Timestamp,
    },
    /// The spawner reports that spawn `spawn_id` failed (or its process died).
    MarkServerFailed {
        user: String,
        server: String,
        spawn_id: u64,
        reason: String,
        at: Timestamp,
    },
    /// Ask for a running or pending server to stop.
    RequestStop {
        user: String,
        server: String,
        at: Timestamp,
    },
    /// The spawner reports that spawn `spawn_id` has stopped.
    MarkServerStopped {
        user: String,
        server: String,
        spawn_id: u64,
        at: Timestamp,
    },
    /// Add or replace a proxy route (configurable-http-proxy's `POST /api/routes/<path>`).
    AddRoute {
        path: String,
        target: String,
        data: serde_json::Value,
        at: Timestamp,
    },
    /// Remove a proxy route; removing a missing route is a no-op, as in CHP.
    RemoveRoute { path: String, at: Timestamp },
    /// One batch of activity an edge saw: the newest use of each route. Updates the
    /// routes' `last_activity` and, for a user's server route, the user's and server's.
    RecordActivity { routes: Vec<RouteUse>, at: Timestamp },
}

/// The newest request through one route that counts as activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteUse {
    pub path: String,
    pub last_activity: Timestamp,
}

/// The parts of a new API token that the proposer chooses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub hash: String,
    pub owner: TokenOwner,
    pub scopes: Vec<String>,
    pub note: String,
    pub expires_at: Option<Timestamp>,
    pub at: Timestamp,
}

impl Command {
    /// The time the proposer stamped on the command.
    pub fn at(&self) -> Timestamp {
        match self {
            Command::InitializeCluster { at, .. }
            | Command::CreateUsers { at, .. }
            | Command::UpdateUser { at, .. }
            | Command::DeleteUser { at, .. }
            | Command::EnsureService { at, .. }
            | Command::IssueToken(TokenRequest { at, .. })
            | Command::RevokeToken { at, .. }
            | Command::RequestSpawn { at, .. }
            | Command::MarkServerReady { at, .. }
            | Command::MarkServerFailed { at, .. }
            | Command::RequestStop { at, .. }
            | Command::MarkServerStopped { at, .. }
            | Command::AddRoute { at, .. }
            | Command::RemoveRoute { at, .. }
            | Command::RecordActivity { at, .. } => *at,
        }
    }

    /// A short name for logs and metrics (a bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::InitializeCluster { .. } => "initialize_cluster",
            Command::CreateUsers { .. } => "create_users",
            Command::UpdateUser { .. } => "update_user",
            Command::DeleteUser { .. } => "delete_user",
            Command::EnsureService { .. } => "ensure_service",
            Command::IssueToken(_) => "issue_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::RequestSpawn { .. } => "request_spawn",
            Command::MarkServerReady { .. } => "mark_server_ready",
            Command::MarkServerFailed { .. } => "mark_server_failed",
            Command::RequestStop { .. } => "request_stop",
            Command::MarkServerStopped { .. } => "mark_server_stopped",
            Command::AddRoute { .. } => "add_route",
            Command::RemoveRoute { .. } => "remove_route",
            Command::RecordActivity { .. } => "record_activity",
        }
    }
}

/// Log lines show what a command is, never the secrets it may carry.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::CreateUsers { names, .. } => write!(f, "create_users({})", names.join(",")),
            Command::UpdateUser { name, .. } | Command::DeleteUser { name, .. } => {
                write!(f, "{}({name})", self.kind())
            }
            Command::RequestSpawn { user, server, .. }
            | Command::RequestStop { user, server, .. }
            | Command::MarkServerReady { user, server, .. }
            | Command::MarkServerFailed { user, server, .. }
            | Command::MarkServerStopped { user, server, .. } => {
                write!(f, "{}({user}/{server})", self.kind())
            }
            Command::AddRoute { path, .. } | Command::RemoveRoute { path, .. } => {
                write!(f, "{}({path})", self.kind())
            }
            _ => f.write_str(self.kind()),
        }
    }
}
