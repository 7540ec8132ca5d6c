//! Commands: what a replica proposes to the Raft log. A command carries every input its
//! outcome depends on, including the time and any random material, so that applying it
//! is deterministic.

use serde::{Deserialize, Serialize};

use crate::oauth::{OAuthClient, OAuthCode};
use crate::state::{Secret, Timestamp, TokenOwner};

/// A request to change the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Fix the cluster secret; the first command every new cluster commits.
    InitializeCluster {
        cluster_secret: Secret,
        at: Timestamp,
    },
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
    DeleteUser {
        name: String,
        at: Timestamp,
    },
    /// Create the service if it does not exist, or bring its admin flag and roles in line.
    EnsureService {
        name: String,
        admin: bool,
        roles: Vec<String>,
        at: Timestamp,
    },
    /// A user logged in: a session whose secret hashes to `hash`. The user's expired
    /// sessions are dropped at the same time.
    StartSession {
        hash: String,
        user: String,
        session_id: String,
        expires_at: Timestamp,
        at: Timestamp,
    },
    /// Logout: the session ends on every replica.
    EndSession {
        hash: String,
        at: Timestamp,
    },
    /// Delete a service with its tokens.
    DeleteService {
        name: String,
        at: Timestamp,
    },
    /// Store a new token (its hash only). The id is assigned by the state machine.
    IssueToken(TokenRequest),
    /// Revoke one token.
    RevokeToken {
        id: u64,
        at: Timestamp,
    },
    /// Ask for a server to start; creates a named server on first use.
    RequestSpawn {
        user: String,
        server: String,
        user_options: serde_json::Value,
        /// The hub's throttles, checked against the replicated state so that they hold
        /// cluster-wide.
        #[serde(default)]
        limits: SpawnLimits,
        /// Hash of the server's new API token (`$JUPYTERHUB_API_TOKEN`), which the
        /// spawning replica keeps in memory; with it the server gets its token and its
        /// OAuth client, both dropped when it stops.
        #[serde(default)]
        api_token_hash: Option<String>,
        /// The replica that will run the server (the one proposing).
        #[serde(default)]
        node: Option<u64>,
        at: Timestamp,
    },
    /// Create a named server without starting it (`PUT …/servers/{s}`).
    CreateServer {
        user: String,
        server: String,
        display_name: Option<String>,
        user_options: serde_json::Value,
        #[serde(default)]
        limits: SpawnLimits,
        at: Timestamp,
    },
    /// Rename a stopped named server and/or change how it is shown or started.
    UpdateServer {
        user: String,
        server: String,
        rename: Option<String>,
        display_name: Option<String>,
        user_options: Option<serde_json::Value>,
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
    /// The spawner's progress on spawn `spawn_id`, and what it needs to find it again.
    ReportSpawnProgress {
        user: String,
        server: String,
        spawn_id: u64,
        progress: u8,
        message: String,
        #[serde(default)]
        spawner_state: Option<serde_json::Value>,
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
        /// Delete the named server once it has stopped (`{"remove": true}`).
        #[serde(default)]
        remove: bool,
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
    RemoveRoute {
        path: String,
        at: Timestamp,
    },
    /// One batch of activity an edge saw: the newest use of each route. Updates the
    /// routes' `last_activity` and, for a user's server route, the user's and server's.
    RecordActivity {
        routes: Vec<RouteUse>,
        at: Timestamp,
    },
    /// Create groups, optionally with members; rejected if any exists.
    CreateGroups {
        names: Vec<String>,
        users: Vec<String>,
        at: Timestamp,
    },
    DeleteGroup {
        name: String,
        at: Timestamp,
    },
    /// Add and remove members of a group (unknown users are rejected).
    ChangeGroupMembers {
        name: String,
        add: Vec<String>,
        remove: Vec<String>,
        at: Timestamp,
    },
    /// Replace a group's free-form properties.
    SetGroupProperties {
        name: String,
        properties: serde_json::Value,
        at: Timestamp,
    },
    /// Activity one replica saw through its API in the last second (activity POSTs,
    /// token use), coalesced so that Raft sees at most one such command per replica per
    /// second.
    RecordApiActivity {
        users: Vec<UserActivity>,
        tokens: Vec<TokenUse>,
        at: Timestamp,
    },
    /// Create or replace an OAuth client (a service's; servers get theirs at spawn).
    #[serde(rename = "register_oauth_client")]
    RegisterOAuthClient {
        client: OAuthClient,
        at: Timestamp,
    },
    /// Delete an OAuth client with its codes and every token it issued.
    #[serde(rename = "delete_oauth_client")]
    DeleteOAuthClient {
        id: String,
        at: Timestamp,
    },
    /// A user authorized a client: remember the code (by its hash) for five minutes.
    /// Expired codes are dropped at the same time.
    #[serde(rename = "issue_oauth_code")]
    IssueOAuthCode {
        hash: String,
        code: OAuthCode,
        at: Timestamp,
    },
    /// Trade a code for an access token, once: the client must authenticate and repeat
    /// the redirect URI, and present the PKCE challenge's verifier if there was one.
    #[serde(rename = "redeem_oauth_code")]
    RedeemOAuthCode {
        hash: String,
        client_id: String,
        client_secret_hash: String,
        redirect_uri: String,
        /// `BASE64URL(SHA256(code_verifier))`, computed by the proposer.
        pkce_challenge: Option<String>,
        token_hash: String,
        token_expires_at: Option<Timestamp>,
        at: Timestamp,
    },
    /// Native authenticator: a new account.
    SignUp {
        name: String,
        password_hash: String,
        authorized: bool,
        at: Timestamp,
    },
    /// Native authenticator: a new password (also lifts a lockout).
    SetPassword {
        name: String,
        password_hash: String,
        at: Timestamp,
    },
    /// Native authenticator: an admin approves (or withdraws approval of) an account.
    AuthorizeAccount {
        name: String,
        authorized: bool,
        at: Timestamp,
    },
    /// Native authenticator: an admin discards a sign-up.
    DeleteAccount {
        name: String,
        at: Timestamp,
    },
    /// Native authenticator: a wrong password. After `max_failures` in a row the account
    /// is locked for `lock_millis`.
    RecordLoginFailure {
        name: String,
        max_failures: u32,
        lock_millis: Timestamp,
        at: Timestamp,
    },
    /// Bind an external identity (`<issuer>#<sub>`) to a user name on first login.
    /// Rejected if either is already bound to another.
    BindIdentity {
        identity: String,
        user: String,
        at: Timestamp,
    },
    /// Native authenticator: a successful login clears earlier failures.
    ClearLoginFailures {
        name: String,
        at: Timestamp,
    },
    /// Put a refused request (403) on the audit record. Changes nothing else; replicas
    /// send these rate-limited, `suppressed` counting the ones left out since the last.
    RecordDenied {
        /// What was attempted: the request's method.
        action: String,
        /// The path it was attempted on.
        target: String,
        status: u16,
        suppressed: u64,
        at: Timestamp,
    },
    /// Put an operator's action outside the replicated state on the audit record: a
    /// membership change, a leadership transfer, a backup. Changes nothing else.
    RecordAdminAction {
        action: crate::audit::AdminAction,
        target: String,
        at: Timestamp,
    },
}

/// Cluster-wide throttles on starting servers; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnLimits {
    /// JupyterHub's `concurrent_spawn_limit`: servers starting at once.
    pub concurrent_spawns: Option<u32>,
    /// JupyterHub's `active_server_limit`: servers running or pending.
    pub active_servers: Option<u32>,
    /// JupyterHub's `named_server_limit_per_user`.
    pub named_servers_per_user: Option<u32>,
}

/// A user's newest activity as reported to the API, and that of their servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserActivity {
    pub user: String,
    pub last_activity: Option<Timestamp>,
    /// `(server name, last activity)`.
    pub servers: Vec<(String, Timestamp)>,
}

/// The newest use of one token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUse {
    pub id: u64,
    pub last_activity: Timestamp,
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
            | Command::DeleteService { at, .. }
            | Command::StartSession { at, .. }
            | Command::EndSession { at, .. }
            | Command::IssueToken(TokenRequest { at, .. })
            | Command::RevokeToken { at, .. }
            | Command::RequestSpawn { at, .. }
            | Command::MarkServerReady { at, .. }
            | Command::MarkServerFailed { at, .. }
            | Command::ReportSpawnProgress { at, .. }
            | Command::RequestStop { at, .. }
            | Command::MarkServerStopped { at, .. }
            | Command::AddRoute { at, .. }
            | Command::RemoveRoute { at, .. }
            | Command::RecordActivity { at, .. }
            | Command::CreateServer { at, .. }
            | Command::UpdateServer { at, .. }
            | Command::CreateGroups { at, .. }
            | Command::DeleteGroup { at, .. }
            | Command::ChangeGroupMembers { at, .. }
            | Command::SetGroupProperties { at, .. }
            | Command::RecordApiActivity { at, .. }
            | Command::RegisterOAuthClient { at, .. }
            | Command::DeleteOAuthClient { at, .. }
            | Command::IssueOAuthCode { at, .. }
            | Command::RedeemOAuthCode { at, .. }
            | Command::SignUp { at, .. }
            | Command::SetPassword { at, .. }
            | Command::AuthorizeAccount { at, .. }
            | Command::DeleteAccount { at, .. }
            | Command::RecordLoginFailure { at, .. }
            | Command::ClearLoginFailures { at, .. }
            | Command::BindIdentity { at, .. }
            | Command::RecordDenied { at, .. }
            | Command::RecordAdminAction { at, .. } => *at,
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
            Command::DeleteService { .. } => "delete_service",
            Command::StartSession { .. } => "start_session",
            Command::EndSession { .. } => "end_session",
            Command::IssueToken(_) => "issue_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::RequestSpawn { .. } => "request_spawn",
            Command::MarkServerReady { .. } => "mark_server_ready",
            Command::MarkServerFailed { .. } => "mark_server_failed",
            Command::RequestStop { .. } => "request_stop",
            Command::MarkServerStopped { .. } => "mark_server_stopped",
            Command::ReportSpawnProgress { .. } => "report_spawn_progress",
            Command::AddRoute { .. } => "add_route",
            Command::RemoveRoute { .. } => "remove_route",
            Command::RecordActivity { .. } => "record_activity",
            Command::CreateServer { .. } => "create_server",
            Command::UpdateServer { .. } => "update_server",
            Command::CreateGroups { .. } => "create_groups",
            Command::DeleteGroup { .. } => "delete_group",
            Command::ChangeGroupMembers { .. } => "change_group_members",
            Command::SetGroupProperties { .. } => "set_group_properties",
            Command::RecordApiActivity { .. } => "record_api_activity",
            Command::RegisterOAuthClient { .. } => "register_oauth_client",
            Command::DeleteOAuthClient { .. } => "delete_oauth_client",
            Command::IssueOAuthCode { .. } => "issue_oauth_code",
            Command::RedeemOAuthCode { .. } => "redeem_oauth_code",
            Command::SignUp { .. } => "sign_up",
            Command::SetPassword { .. } => "set_password",
            Command::AuthorizeAccount { .. } => "authorize_account",
            Command::DeleteAccount { .. } => "delete_account",
            Command::RecordLoginFailure { .. } => "record_login_failure",
            Command::ClearLoginFailures { .. } => "clear_login_failures",
            Command::BindIdentity { .. } => "bind_identity",
            Command::RecordDenied { .. } => "record_denied",
            Command::RecordAdminAction { .. } => "record_admin_action",
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
            | Command::MarkServerStopped { user, server, .. }
            | Command::ReportSpawnProgress { user, server, .. }
            | Command::CreateServer { user, server, .. }
            | Command::UpdateServer { user, server, .. } => {
                write!(f, "{}({user}/{server})", self.kind())
            }
            Command::AddRoute { path, .. } | Command::RemoveRoute { path, .. } => {
                write!(f, "{}({path})", self.kind())
            }
            Command::DeleteGroup { name, .. }
            | Command::ChangeGroupMembers { name, .. }
            | Command::SetGroupProperties { name, .. } => write!(f, "{}({name})", self.kind()),
            Command::CreateGroups { names, .. } => write!(f, "create_groups({})", names.join(",")),
            Command::RegisterOAuthClient { client, .. } => write!(f, "register_oauth_client({})", client.id),
            Command::DeleteOAuthClient { id, .. } => write!(f, "delete_oauth_client({id})"),
            Command::SignUp { name, .. }
            | Command::SetPassword { name, .. }
            | Command::AuthorizeAccount { name, .. }
            | Command::DeleteAccount { name, .. }
            | Command::RecordLoginFailure { name, .. }
            | Command::ClearLoginFailures { name, .. } => write!(f, "{}({name})", self.kind()),
            _ => f.write_str(self.kind()),
        }
    }
}
