//! The entities a hub replica owns, and [`State`], the whole of them. `State` is what
//! `evolve` folds events into and what a snapshot carries.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, chosen by the proposing replica.
pub type Timestamp = i64;

/// A person who can log in and own servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub created: Timestamp,
    pub last_activity: Option<Timestamp>,
    /// Keyed by server name; the default server is `""`. A server exists here once it
    /// has been requested, and stays (stopped) after it stops, as in JupyterHub.
    pub servers: BTreeMap<String, Server>,
}

impl User {
    /// Servers that are running or on their way up or down.
    pub fn active_servers(&self) -> impl Iterator<Item = &Server> {
        self.servers
            .values()
            .filter(|server| server.phase != ServerPhase::Stopped)
    }
}

/// Where a server is in its life. Transitions: Stopped → PendingSpawn → Running →
/// PendingStop → Stopped; a failed spawn goes PendingSpawn → Stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerPhase {
    Stopped,
    PendingSpawn,
    Running,
    PendingStop,
}

/// One single-user server of a user (JupyterHub's `Spawner` row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    /// What the home page shows (JupyterHub 6's `display_name`); the name by default.
    #[serde(default)]
    pub display_name: String,
    pub phase: ServerPhase,
    /// Identifies one attempt to run this server; every spawner action is idempotent on
    /// it, and reports about an older attempt are rejected as stale.
    pub spawn_id: Option<u64>,
    /// Where the running server listens, e.g. `http://127.0.0.1:51234`.
    pub url: Option<String>,
    pub user_options: serde_json::Value,
    pub started: Option<Timestamp>,
    pub last_activity: Option<Timestamp>,
    /// The server's own API token (`$JUPYTERHUB_API_TOKEN`) while it is active; it is
    /// revoked, with the server's OAuth client, when the server stops.
    #[serde(default)]
    pub api_token_id: Option<u64>,
    /// Set by a stop that asked for the named server to be deleted once stopped.
    #[serde(default)]
    pub remove_on_stop: bool,
    /// The hub replica that runs the current attempt (a local process belongs to the
    /// machine that started it); its reconciler owns the attempt.
    #[serde(default)]
    pub node: Option<u64>,
    /// What the spawner needs to find the attempt again (pid, port, pod name…).
    #[serde(default)]
    pub spawner_state: serde_json::Value,
    /// The current attempt's progress, oldest first (the progress bar's messages).
    #[serde(default)]
    pub progress: Vec<SpawnStep>,
    /// Why the last attempt failed, until the next one starts.
    #[serde(default)]
    pub failure: Option<String>,
}

/// One message on a spawn's progress bar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnStep {
    /// 0–100.
    pub progress: u8,
    pub message: String,
}

impl Server {
    pub fn stopped(name: &str) -> Self {
        Server {
            name: name.to_owned(),
            display_name: name.to_owned(),
            phase: ServerPhase::Stopped,
            spawn_id: None,
            url: None,
            user_options: serde_json::Value::Object(Default::default()),
            started: None,
            last_activity: None,
            api_token_id: None,
            remove_on_stop: false,
            node: None,
            spawner_state: serde_json::Value::Null,
            progress: Vec::new(),
            failure: None,
        }
    }
}

/// A named set of users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub users: BTreeSet<String>,
    pub properties: serde_json::Value,
}

/// Who a token acts for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenOwner {
    User(String),
    Service(String),
}

/// An API token. Only a hash of the secret is ever stored; the plaintext goes back to
/// whoever asked for it and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Shown to clients as `a<id>`, as JupyterHub does.
    pub id: u64,
    /// Hex SHA-256 of the token; tokens are 128 random bits, so no salt or stretching is
    /// needed for them to be unguessable from the hash.
    pub hash: String,
    pub owner: TokenOwner,
    pub scopes: Vec<String>,
    pub note: String,
    pub created: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_activity: Option<Timestamp>,
    /// For tokens issued through OAuth in a browser session: that session's public id,
    /// so that logging out revokes them (CVE-2021-41247).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The OAuth client that issued this token; deleting the client revokes it.
    #[serde(default)]
    pub oauth_client: Option<String>,
}

impl Token {
    /// JupyterHub's public token id.
    pub fn public_id(&self) -> String {
        format!("a{}", self.id)
    }

    /// Parses `a<N>` back into the numeric id.
    pub fn parse_public_id(public_id: &str) -> Option<u64> {
        public_id.strip_prefix('a')?.parse().ok()
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

/// A browser's login session (JupyterHub's `jupyterhub-hub-login` cookie). Keyed in the
/// state by a hash of the cookie's secret; the secret itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub user: String,
    /// The public session id (`jupyterhub-session-id`), which OAuth tokens issued in the
    /// session carry.
    pub session_id: String,
    pub created: Timestamp,
    pub expires_at: Timestamp,
}

/// A hub service: a non-human API client (the `admin` service holds the operator's
/// bootstrap token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub admin: bool,
    pub roles: BTreeSet<String>,
    pub created: Timestamp,
}

/// One proxy route: requests whose path starts with `path` go to `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: String,
    pub target: String,
    /// configurable-http-proxy's free-form route data (`user`, `server_name`, …).
    pub data: serde_json::Value,
    pub created: Timestamp,
    /// When the route was last (re)added or, once edges report it, last used.
    pub last_activity: Timestamp,
}

/// A secret value: serialized as itself (it must replicate), but never shown by `Debug`,
/// so that it cannot slip into a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Facts about the cluster itself, fixed at bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    /// Hex of 32 random bytes: the key for cookies and event HMACs. Like JupyterHub's
    /// `jupyterhub_cookie_secret` file, it lives in the (0700) data directory.
    pub cluster_secret: Secret,
    pub created: Timestamp,
}

/// Everything a hub replica knows, as of one point in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub cluster: Option<ClusterInfo>,
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub services: BTreeMap<String, Service>,
    pub tokens: BTreeMap<u64, Token>,
    /// Index from token hash to token id, for authenticating a request in one lookup.
    pub token_ids_by_hash: BTreeMap<String, u64>,
    pub routes: BTreeMap<String, Route>,
    /// Login sessions by the hash of their secret.
    #[serde(default)]
    pub sessions: BTreeMap<String, Session>,
    /// OAuth clients by client id.
    #[serde(default)]
    pub oauth_clients: BTreeMap<String, crate::oauth::OAuthClient>,
    /// Unredeemed OAuth authorization codes by the hash of the code.
    #[serde(default)]
    pub oauth_codes: BTreeMap<String, crate::oauth::OAuthCode>,
    /// The native authenticator's accounts by user name.
    #[serde(default)]
    pub accounts: BTreeMap<String, crate::accounts::Account>,
    /// External identities (an OpenID issuer and subject, `<issuer>#<sub>`) bound to the
    /// user they log in as: a user is the same person as long as the provider says so,
    /// whatever their other claims (email, preferred name) become.
    #[serde(default)]
    pub identities: BTreeMap<String, String>,
    /// The sequence number of the last event; events are numbered 1, 2, 3, … on every replica.
    pub event_seq: u64,
    /// The sequence number of the last route event, contiguous across route events only.
    pub route_seq: u64,
    pub last_token_id: u64,
    pub last_spawn_id: u64,
}

impl State {
    pub fn token_by_hash(&self, hash: &str) -> Option<&Token> {
        self.token_ids_by_hash.get(hash).and_then(|id| self.tokens.get(id))
    }

    /// The groups `user` belongs to, by name.
    pub fn groups_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.groups
            .values()
            .filter(move |group| group.users.contains(user))
            .map(|group| group.name.as_str())
    }

    /// Servers starting right now, cluster-wide (`concurrent_spawn_limit` counts these).
    pub fn pending_spawns(&self) -> usize {
        self.users
            .values()
            .flat_map(|user| user.servers.values())
            .filter(|server| server.phase == ServerPhase::PendingSpawn)
            .count()
    }

    /// Servers not stopped, cluster-wide (`active_server_limit` counts these).
    pub fn active_servers(&self) -> usize {
        self.users.values().map(|user| user.active_servers().count()).sum()
    }

    pub fn tokens_of<'a>(&'a self, owner: &'a TokenOwner) -> impl Iterator<Item = &'a Token> + 'a {
        self.tokens.values().filter(move |token| &token.owner == owner)
    }
}

/// The route key of a user's server: its URL path without the trailing slash, as
/// configurable-http-proxy stores it (`/user/alice`, `/user/alice/lab`).
pub fn route_key_for(user: &str, server: &str) -> String {
    crate::names::normalize_route_path(&route_path_for(user, server))
}

/// The URL path of a user's server: `/user/<name>/` for the default server,
/// `/user/<name>/<server>/` for a named one. User names are used as they are; the edge
/// matches on decoded path segments.
pub fn route_path_for(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/user/{user}/")
    } else {
        format!("/user/{user}/{server}/")
    }
}
