//! Events: the facts a committed command produced. They are numbered contiguously on
//! every replica (`seq`), route events also on their own counter (`route_seq`), and they
//! are what subscribers — edges, audit readers — consume.

use serde::{Deserialize, Serialize};

use crate::accounts::Account;
use crate::command::{TokenUse, UserActivity};
use crate::oauth::{OAuthClient, OAuthCode};
use crate::state::{Route, Secret, Service, Session, State, Timestamp, Token, TokenOwner};

/// One fact about the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    ClusterInitialized {
        cluster_secret: Secret,
        at: Timestamp,
    },
    UserCreated {
        name: String,
        admin: bool,
        at: Timestamp,
    },
    UserRenamed {
        from: String,
        to: String,
        at: Timestamp,
    },
    UserAdminChanged {
        name: String,
        admin: bool,
        at: Timestamp,
    },
    UserDeleted {
        name: String,
        at: Timestamp,
    },
    ServiceUpserted {
        service: Service,
    },
    ServiceDeleted {
        name: String,
        at: Timestamp,
    },
    SessionStarted {
        hash: String,
        session: Session,
    },
    SessionEnded {
        hash: String,
        at: Timestamp,
    },
    TokenIssued {
        token: Token,
    },
    TokenRevoked {
        id: u64,
        at: Timestamp,
    },
    ServerSpawnRequested {
        user: String,
        server: String,
        spawn_id: u64,
        user_options: serde_json::Value,
        #[serde(default)]
        node: Option<u64>,
        at: Timestamp,
    },
    ServerSpawnProgress {
        user: String,
        server: String,
        spawn_id: u64,
        step: crate::state::SpawnStep,
        #[serde(default)]
        spawner_state: Option<serde_json::Value>,
    },
    ServerReady {
        user: String,
        server: String,
        spawn_id: u64,
        url: String,
        at: Timestamp,
    },
    ServerStopRequested {
        user: String,
        server: String,
        spawn_id: u64,
        at: Timestamp,
    },
    ServerStopped {
        user: String,
        server: String,
        spawn_id: u64,
        reason: Option<String>,
        at: Timestamp,
    },
    RouteAdded {
        route: Route,
    },
    RouteRemoved {
        path: String,
        at: Timestamp,
    },
    /// Newer activity: routes' `last_activity`, and users' (with their server's) where a
    /// route belongs to a user's server.
    ActivityRecorded {
        routes: Vec<(String, Timestamp)>,
        servers: Vec<ServerActivity>,
    },
    ServerCreated {
        user: String,
        server: String,
        display_name: String,
        user_options: serde_json::Value,
        at: Timestamp,
    },
    /// A stopped named server renamed (`server` → `new_name`, possibly the same) or edited.
    ServerUpdated {
        user: String,
        server: String,
        new_name: String,
        display_name: String,
        user_options: serde_json::Value,
        at: Timestamp,
    },
    /// A stop that should delete the named server once it has stopped.
    ServerRemovalRequested {
        user: String,
        server: String,
        at: Timestamp,
    },
    ServerRemoved {
        user: String,
        server: String,
        at: Timestamp,
    },
    GroupCreated {
        name: String,
        users: Vec<String>,
        at: Timestamp,
    },
    GroupDeleted {
        name: String,
        at: Timestamp,
    },
    GroupMembersChanged {
        name: String,
        added: Vec<String>,
        removed: Vec<String>,
        at: Timestamp,
    },
    GroupPropertiesSet {
        name: String,
        properties: serde_json::Value,
        at: Timestamp,
    },
    /// Newer activity reported to the API: only what moves a timestamp forward.
    ApiActivityRecorded {
        users: Vec<UserActivity>,
        tokens: Vec<TokenUse>,
    },
    /// A server's API token, issued with its spawn (the token itself is `TokenIssued`).
    ServerTokenAssigned {
        user: String,
        server: String,
        token_id: u64,
    },
    #[serde(rename = "oauth_client_registered")]
    OAuthClientRegistered {
        client: OAuthClient,
    },
    #[serde(rename = "oauth_client_deleted")]
    OAuthClientDeleted {
        id: String,
        at: Timestamp,
    },
    #[serde(rename = "oauth_code_issued")]
    OAuthCodeIssued {
        hash: String,
        code: OAuthCode,
    },
    /// Redeemed or expired.
    #[serde(rename = "oauth_code_removed")]
    OAuthCodeRemoved {
        hash: String,
        at: Timestamp,
    },
    AccountCreated {
        account: Account,
    },
    PasswordChanged {
        name: String,
        password_hash: String,
        at: Timestamp,
    },
    AccountAuthorized {
        name: String,
        authorized: bool,
        at: Timestamp,
    },
    AccountDeleted {
        name: String,
        at: Timestamp,
    },
    /// A failed login; `locked_until` is set when it locked the account.
    LoginFailed {
        name: String,
        failed_logins: u32,
        locked_until: Option<Timestamp>,
        at: Timestamp,
    },
    LoginFailuresCleared {
        name: String,
        at: Timestamp,
    },
    IdentityBound {
        identity: String,
        user: String,
        at: Timestamp,
    },
    /// A request the hub refused (403), for the audit record; no state changes.
    RequestDenied {
        action: String,
        target: String,
        status: u16,
        suppressed: u64,
        at: Timestamp,
    },
    /// An operator's action on the cluster itself, for the audit record; no state changes.
    AdminActionTaken {
        action: crate::audit::AdminAction,
        target: String,
        at: Timestamp,
    },
}

/// Activity on one user's server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerActivity {
    pub user: String,
    pub server: String,
    pub last_activity: Timestamp,
}

/// An event with its place in the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequenced {
    pub seq: u64,
    /// Set on route events only.
    pub route_seq: Option<u64>,
    pub event: Event,
    /// Who proposed the command that made the event, and from where: the audit
    /// record's actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::audit::Origin>,
}

/// A row of the state that an event changes: what a store must rewrite after applying it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Cluster,
    User(String),
    Service(String),
    Token(u64),
    Route(String),
    Group(String),
    Session(String),
    OAuthClient(String),
    OAuthCode(String),
    Account(String),
    Identity(String),
    /// Group rows that name a user who was renamed or deleted; groups are few, so the
    /// store rewrites them all.
    Groups,
}

impl Event {
    pub fn is_route_event(&self) -> bool {
        matches!(self, Event::RouteAdded { .. } | Event::RouteRemoved { .. })
    }

    /// The rows this event changed, given the state right after it was applied.
    /// Counters (`event_seq`, `route_seq`, id allocators) change with every event and
    /// are not listed.
    pub fn touched(&self, state_after: &State) -> Vec<Key> {
        match self {
            Event::ClusterInitialized { .. } => vec![Key::Cluster],
            Event::UserCreated { name, .. } | Event::UserAdminChanged { name, .. } => {
                vec![Key::User(name.clone())]
            }
            Event::UserDeleted { name, .. } => vec![Key::User(name.clone()), Key::Groups],
            Event::UserRenamed { from, to, .. } => {
                // A rename moves the user's tokens to the new owner name.
                let owner = TokenOwner::User(to.clone());
                let mut keys = vec![
                    Key::User(from.clone()),
                    Key::User(to.clone()),
                    Key::Groups,
                    Key::Account(from.clone()),
                    Key::Account(to.clone()),
                ];
                keys.extend(state_after.tokens_of(&owner).map(|token| Key::Token(token.id)));
                keys.extend(
                    state_after
                        .identities
                        .iter()
                        .filter(|(_, user)| *user == to)
                        .map(|(identity, _)| Key::Identity(identity.clone())),
                );
                keys.extend(
                    state_after
                        .sessions
                        .iter()
                        .filter(|(_, session)| session.user == *to)
                        .map(|(hash, _)| Key::Session(hash.clone())),
                );
                keys
            }
            Event::ServiceUpserted { service } => vec![Key::Service(service.name.clone())],
            Event::ServiceDeleted { name, .. } => vec![Key::Service(name.clone())],
            Event::SessionStarted { hash, .. } | Event::SessionEnded { hash, .. } => vec![Key::Session(hash.clone())],
            Event::TokenIssued { token } => vec![Key::Token(token.id)],
            Event::TokenRevoked { id, .. } => vec![Key::Token(*id)],
            Event::ServerSpawnRequested { user, .. }
            | Event::ServerSpawnProgress { user, .. }
            | Event::ServerReady { user, .. }
            | Event::ServerStopRequested { user, .. }
            | Event::ServerStopped { user, .. } => vec![Key::User(user.clone())],
            Event::RouteAdded { route } => vec![Key::Route(route.path.clone())],
            Event::RouteRemoved { path, .. } => vec![Key::Route(path.clone())],
            Event::ServerCreated { user, .. }
            | Event::ServerUpdated { user, .. }
            | Event::ServerRemovalRequested { user, .. }
            | Event::ServerRemoved { user, .. } => vec![Key::User(user.clone())],
            Event::GroupCreated { name, .. }
            | Event::GroupDeleted { name, .. }
            | Event::GroupMembersChanged { name, .. }
            | Event::GroupPropertiesSet { name, .. } => vec![Key::Group(name.clone())],
            Event::ApiActivityRecorded { users, tokens } => {
                let mut keys: Vec<Key> = users.iter().map(|activity| Key::User(activity.user.clone())).collect();
                keys.extend(tokens.iter().map(|token_use| Key::Token(token_use.id)));
                keys
            }
            Event::ServerTokenAssigned { user, .. } => vec![Key::User(user.clone())],
            Event::OAuthClientRegistered { client } => vec![Key::OAuthClient(client.id.clone())],
            Event::OAuthClientDeleted { id, .. } => vec![Key::OAuthClient(id.clone())],
            Event::OAuthCodeIssued { hash, .. } | Event::OAuthCodeRemoved { hash, .. } => {
                vec![Key::OAuthCode(hash.clone())]
            }
            Event::AccountCreated { account } => vec![Key::Account(account.name.clone())],
            Event::PasswordChanged { name, .. }
            | Event::AccountAuthorized { name, .. }
            | Event::AccountDeleted { name, .. }
            | Event::LoginFailed { name, .. }
            | Event::LoginFailuresCleared { name, .. } => vec![Key::Account(name.clone())],
            Event::IdentityBound { identity, .. } => vec![Key::Identity(identity.clone())],
            Event::RequestDenied { .. } | Event::AdminActionTaken { .. } => Vec::new(),
            Event::ActivityRecorded { routes, servers } => {
                let mut keys: Vec<Key> = routes.iter().map(|(path, _)| Key::Route(path.clone())).collect();
                keys.extend(servers.iter().map(|activity| Key::User(activity.user.clone())));
                keys.sort();
                keys.dedup();
                keys
            }
        }
    }
}
