//! JSON models as JupyterHub renders them (`kind`, ISO 8601 timestamps with
//! microseconds and `Z`, `null` for missing values).

use ganymede_model::{Server, ServerPhase, Timestamp, User, route_path_for};
use serde_json::{Value, json};

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

fn pending(server: &Server) -> Value {
    match server.phase {
        ServerPhase::PendingSpawn => json!("spawn"),
        ServerPhase::PendingStop => json!("stop"),
        _ => Value::Null,
    }
}

pub fn server(user: &str, server: &Server) -> Value {
    let url = route_path_for(user, &server.name);
    let progress_url = if server.name.is_empty() {
        format!("/hub/api/users/{user}/server/progress")
    } else {
        format!("/hub/api/users/{user}/servers/{}/progress", server.name)
    };
    json!({
        "name": server.name,
        "display_name": server.name,
        "full_name": format!("{user}/{}", server.name),
        "last_activity": iso_opt(server.last_activity),
        "started": iso_opt(server.started),
        "pending": pending(server),
        "ready": server.phase == ServerPhase::Running,
        "stopped": server.phase == ServerPhase::Stopped,
        "url": url,
        "user_options": server.user_options,
        "progress_url": progress_url,
        "full_url": Value::Null,
        "full_progress_url": Value::Null,
    })
}

/// The full user model, as a holder of `read:users` and `read:servers` sees it.
pub fn user(user: &User) -> Value {
    let default_server = user.servers.get("");
    let servers: serde_json::Map<String, Value> = user
        .active_servers()
        .map(|s| (s.name.clone(), server(&user.name, s)))
        .collect();
    let roles = if user.admin {
        json!(["admin", "user"])
    } else {
        json!(["user"])
    };
    json!({
        "kind": "user",
        "name": user.name,
        "admin": user.admin,
        "roles": roles,
        "groups": [],
        "server": default_server
            .filter(|s| s.phase == ServerPhase::Running)
            .map(|_| route_path_for(&user.name, "")),
        "pending": default_server.map_or(Value::Null, pending),
        "created": iso(user.created),
        "last_activity": iso_opt(user.last_activity),
        "servers": servers,
        "user_info": Value::Null,
        "auth_state": Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_jupyterhubs_iso_format() {
        assert_eq!(iso(1_764_096_522_171), json!("2025-11-25T18:48:42.171000Z"));
        assert_eq!(iso_opt(None), Value::Null);
    }
}
