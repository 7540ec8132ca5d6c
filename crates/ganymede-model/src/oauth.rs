//! The hub as an OAuth2 provider (JupyterHub's `/hub/api/oauth2/*`): the clients that may
//! ask for a user's identity — one per single-user server, one per service that wants
//! it — and the short-lived authorization codes the browser carries back to them.

use serde::{Deserialize, Serialize};

use crate::names::url_quote;
use crate::state::Timestamp;

/// How long an authorization code may wait to be redeemed (oauthlib's and JupyterHub's
/// five minutes).
pub const CODE_LIFETIME_MILLIS: Timestamp = 5 * 60 * 1000;

/// What a client stands for; it decides which `access:` scope a user needs to use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OAuthClientOwner {
    /// A user's single-user server; registered at spawn, deleted when it stops.
    Server {
        user: String,
        server: String,
    },
    Service {
        name: String,
    },
}

/// A registered OAuth client (JupyterHub's `OAuthClient` row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// `client_id`, e.g. `jupyterhub-user-alice`.
    pub id: String,
    /// Shown as a token's `oauth_client`, e.g. `Server at /user/alice/`.
    pub description: String,
    /// Hash of the client secret (for servers, of their API token); never the secret.
    pub secret_hash: String,
    /// The one redirect URI the client may use, compared exactly (relative for servers).
    pub redirect_uri: String,
    /// Scopes the client may ask for beyond identity and access.
    pub allowed_scopes: Vec<String>,
    pub owner: OAuthClientOwner,
    pub created: Timestamp,
}

impl OAuthClient {
    /// The scope a user needs to be let through this client, with the filter that
    /// names what it guards: `access:servers!server=alice/` or
    /// `access:services!service=grader`.
    pub fn access_scope(&self) -> String {
        match &self.owner {
            OAuthClientOwner::Server { user, server } => format!("access:servers!server={user}/{server}"),
            OAuthClientOwner::Service { name } => format!("access:services!service={name}"),
        }
    }
}

/// An issued, unredeemed authorization code. Stored under the hash of the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthCode {
    pub client_id: String,
    pub user: String,
    /// The browser session that authorized it; the access token inherits it.
    pub session_id: Option<String>,
    /// Scopes the access token will carry (already bound to the user and client).
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    /// PKCE: `BASE64URL(SHA256(code_verifier))` when the client sent a challenge
    /// (only S256 is accepted).
    pub code_challenge: Option<String>,
    pub expires_at: Timestamp,
}

/// The client id JupyterHub gives a server: `jupyterhub-user-<name>[-<server>]`, quoted.
pub fn server_client_id(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("jupyterhub-user-{}", url_quote(user))
    } else {
        format!("jupyterhub-user-{}-{}", url_quote(user), url_quote(server))
    }
}

/// The URL prefix a server is served under, quoted as JupyterHub's `user.url` is:
/// `/user/alice/` or `/user/alice/gpu/`.
pub fn server_prefix(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/user/{}/", url_quote(user))
    } else {
        format!("/user/{}/{}/", url_quote(user), url_quote(server))
    }
}

/// A server's `$JUPYTERHUB_OAUTH_CALLBACK_URL`: relative, under its prefix.
pub fn server_callback_path(user: &str, server: &str) -> String {
    format!("{}oauth_callback", server_prefix(user, server))
}

/// The description of a server's client and the note of its API token.
pub fn server_description(user: &str, server: &str) -> String {
    format!("Server at {}", server_prefix(user, server))
}

/// The scopes JupyterHub's `server` role gives a server's API token, bound to it.
pub fn server_token_scopes(user: &str, server: &str) -> Vec<String> {
    vec![
        format!("access:servers!server={user}/{server}"),
        format!("users:activity!user={user}"),
    ]
}
