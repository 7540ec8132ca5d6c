//! JSON models as JupyterHub renders them (`kind`, ISO 8601 timestamps with
//! microseconds and `Z`, `null` for missing values), showing only the keys the caller's
//! scopes reveal.

use ganymede_model::rbac::{Resource, Roles, ScopeSet};
use ganymede_model::{Group, Server, ServerPhase, Service, State, Timestamp, Token, TokenOwner, User, route_path_for};
use serde_json::{Map, Value, json};

pub fn now_millis() -> Timestamp {
    chrono::Utc::now().timestamp_millis()
}

pub fn iso(timestamp: Timestamp) -> Value {
    match chrono::DateTime::from_timestamp_millis(timestamp) {
        Some(time) => Value::String(time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        None => Value::Null,
    }
}

fn iso_opt(timestamp: Option<Timestamp>) -> Value {
    timestamp.map_or(Value::Null, iso)
}

/// Parses a client's timestamp as JupyterHub's `isoparse` does: ISO 8601, UTC when no
/// offset is given.
pub fn parse_iso(text: &str) -> Option<Timestamp> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc().timestamp_millis())
}

fn pending(server: &Server) -> Value {
    match server.phase {
        ServerPhase::PendingSpawn => json!("spawn"),
        ServerPhase::PendingStop => json!("stop"),
        _ => Value::Null,
    }
}

/// The URL path of a user's server (names percent-quoted as JupyterHub does, keeping
/// `@` and `~`).
pub fn server_url(user: &str, server: &str) -> String {
    route_path_for(&quote(user), &quote(server))
}

/// `urllib.parse.quote(name, safe="@~")`.
pub fn quote(name: &str) -> String {
    ganymede_model::names::url_quote(name)
}

pub fn server(user: &str, server: &Server) -> Value {
    let quoted_user = quote(user);
    let progress_url = if server.name.is_empty() {
        format!("/hub/api/users/{quoted_user}/server/progress")
    } else {
        format!("/hub/api/users/{quoted_user}/servers/{}/progress", quote(&server.name))
    };
    json!({
        "name": server.name,
        "display_name": if server.display_name.is_empty() { &server.name } else { &server.display_name },
        "full_name": format!("{user}/{}", server.name),
        "last_activity": iso_opt(server.last_activity),
        "started": iso_opt(server.started),
        "pending": pending(server),
        "ready": server.phase == ServerPhase::Running,
        "stopped": server.phase == ServerPhase::Stopped,
        "url": server_url(user, &server.name),
        "user_options": server.user_options,
        "progress_url": progress_url,
        "full_url": Value::Null,
        "full_progress_url": Value::Null,
    })
}

/// What a caller may see: their scopes and the state those are checked against.
pub struct View<'a> {
    pub scopes: &'a ScopeSet,
    pub state: &'a State,
    pub roles: &'a Roles,
}

/// Which servers a user model lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFilter {
    /// Ready or pending (JupyterHub's default).
    Active,
    Ready,
    /// Stopped ones too (`include_stopped_servers`).
    All,
}

impl View<'_> {
    fn may(&self, scope: &str, resource: Resource<'_>) -> bool {
        self.scopes.allows(scope, resource, self.state)
    }

    /// The user model, with the keys the caller's scopes reveal; `None` if none.
    pub fn user(&self, user: &User, servers: ServerFilter) -> Option<Value> {
        let me = Resource::User(&user.name);
        let mut model = Map::new();
        let full = self.may("read:users", me);
        let mut put = |key: &str, value: Value| {
            model.insert(key.to_owned(), value);
        };
        if full || self.may("read:users:name", me) {
            put("kind", json!("user"));
            put("name", json!(user.name));
            put("admin", json!(user.admin));
            put("user_info", Value::Null);
        }
        if full || self.may("read:roles:users", me) {
            put("roles", json!(self.roles.user_roles(self.state, &user.name)));
            put("admin", json!(user.admin));
        }
        if full || self.may("read:users:groups", me) {
            put("groups", json!(self.state.groups_of(&user.name).collect::<Vec<_>>()));
        }
        if full || self.may("read:users:activity", me) {
            put("last_activity", iso_opt(user.last_activity));
        }
        if full {
            let default_server = user.servers.get("");
            put(
                "server",
                default_server
                    .filter(|s| s.phase == ServerPhase::Running)
                    .map_or(Value::Null, |_| json!(server_url(&user.name, ""))),
            );
            put("pending", default_server.map_or(Value::Null, pending));
            put("created", iso(user.created));
        }
        if self.scopes.holds("read:servers") {
            let listed: Map<String, Value> = user
                .servers
                .values()
                .filter(|s| match servers {
                    ServerFilter::All => true,
                    ServerFilter::Active => s.phase != ServerPhase::Stopped,
                    ServerFilter::Ready => s.phase == ServerPhase::Running,
                })
                .filter(|s| {
                    self.may(
                        "read:servers",
                        Resource::Server {
                            user: &user.name,
                            server: &s.name,
                        },
                    )
                })
                .map(|s| (s.name.clone(), server(&user.name, s)))
                .collect();
            if self.may("read:servers", me) || !listed.is_empty() {
                model.insert("servers".into(), Value::Object(listed));
            }
        }
        if self.may("admin:auth_state", me) {
            model.insert("auth_state".into(), Value::Null);
        }
        if model.is_empty() {
            return None;
        }
        model.entry("kind").or_insert(json!("user"));
        model.entry("name").or_insert(json!(user.name));
        Some(Value::Object(model))
    }

    pub fn group(&self, group: &Group) -> Option<Value> {
        let me = Resource::Group(&group.name);
        let mut model = Map::new();
        if self.may("read:groups", me) {
            model.insert("users".into(), json!(group.users));
            model.insert("properties".into(), group.properties.clone());
        }
        if self.may("read:groups", me) || self.may("read:groups:name", me) {
            model.insert("name".into(), json!(group.name));
        }
        if self.may("read:roles:groups", me) {
            model.insert("roles".into(), json!(self.roles.group_roles(&group.name)));
        }
        if model.is_empty() {
            return None;
        }
        model.insert("kind".into(), json!("group"));
        model.entry("name").or_insert(json!(group.name));
        Some(Value::Object(model))
    }

    pub fn service(&self, service: &Service) -> Option<Value> {
        let me = Resource::Service(&service.name);
        let mut model = Map::new();
        if self.may("read:services", me) {
            model.insert("admin".into(), json!(service.admin));
            model.insert("url".into(), json!(""));
            model.insert("prefix".into(), json!(format!("/services/{}/", quote(&service.name))));
            model.insert("command".into(), json!([]));
            model.insert("pid".into(), json!(0));
            model.insert("info".into(), json!({}));
            model.insert("display".into(), json!(true));
        }
        if self.may("read:services", me) || self.may("read:services:name", me) {
            model.insert("name".into(), json!(service.name));
        }
        if self.may("read:roles:services", me) {
            model.insert(
                "roles".into(),
                json!(self.roles.service_roles(self.state, &service.name)),
            );
        }
        if model.is_empty() {
            return None;
        }
        model.insert("kind".into(), json!("service"));
        model.entry("name").or_insert(json!(service.name));
        Some(Value::Object(model))
    }

    /// The token model (never the token itself).
    pub fn token(&self, token: &Token) -> Value {
        let (owner_key, owner) = match &token.owner {
            TokenOwner::User(name) => ("user", name),
            TokenOwner::Service(name) => ("service", name),
        };
        json!({
            owner_key: owner,
            "id": token.public_id(),
            "kind": "api_token",
            "roles": [],
            "scopes": self.roles.token_scopes(self.state, token).to_strings(),
            "created": iso(token.created),
            "last_activity": iso_opt(token.last_activity),
            "expires_at": iso_opt(token.expires_at),
            "note": token.note,
            "session_id": token.session_id,
            "oauth_client": token.oauth_client.as_ref().map_or("JupyterHub", |id| {
                self.state
                    .oauth_clients
                    .get(id)
                    .map_or(id.as_str(), |client| client.description.as_str())
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_jupyterhubs_iso_format() {
        assert_eq!(iso(1_764_096_522_171), json!("2025-11-25T18:48:42.171000Z"));
        assert_eq!(iso_opt(None), Value::Null);
        assert_eq!(parse_iso("2025-11-25T18:48:42.171000Z"), Some(1_764_096_522_171));
        assert_eq!(parse_iso("2025-11-25T18:48:42.171"), Some(1_764_096_522_171));
        assert_eq!(parse_iso("2025-11-25T19:48:42.171+01:00"), Some(1_764_096_522_171));
        assert_eq!(parse_iso("yesterday"), None);
    }

    #[test]
    fn names_are_quoted_as_jupyterhub_quotes_them() {
        assert_eq!(quote("a b@c~d/é"), "a%20b@c~d%2F%C3%A9");
        assert_eq!(server_url("alice", ""), "/user/alice/");
        assert_eq!(server_url("a b", "gpu"), "/user/a%20b/gpu/");
    }
}
