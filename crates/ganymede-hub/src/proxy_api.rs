//! configurable-http-proxy's REST API (`/api/routes`), served by every hub replica on
//! its own port, so that a stock JupyterHub (`ConfigurableHTTPProxy` with
//! `should_start=False`) can drive a Ganymede edge tier. Route changes are commands in
//! the Raft log like everything else; reads are linearizable.
//!
//! Kept to CHP's observable behaviour: `Authorization: token <t>` (else 403 with an
//! empty body), paths URI-decoded then normalized (leading `/`, no trailing `/`),
//! `POST` is an upsert answering 201 with an empty body, `DELETE` answers 204 or 404,
//! `GET` returns `{path: {target, …data, last_activity}}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ganymede_model::{Command, Route, names};
use ganymede_raft::Applied;
use serde_json::{Map, Value};

use crate::Hub;
use crate::render::now_millis;

#[derive(Clone)]
struct ProxyApi {
    hub: Hub,
    auth_token: Arc<String>,
}

/// The routes API, answering only callers that present `auth_token`.
pub fn proxy_router(hub: Hub, auth_token: String) -> Router {
    let state = ProxyApi {
        hub,
        auth_token: Arc::new(auth_token),
    };
    let max_body_bytes = state.hub.limits.max_body_bytes;
    Router::new()
        .route("/api/routes", get(list_routes).post(add_default_route))
        .route("/api/routes/", get(list_routes).post(add_default_route))
        .route(
            "/api/routes/{*path}",
            get(get_route).post(add_route).delete(delete_route),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// CHP reads the token with the pattern `token\s+(\S+)`; anything else is a bare 403.
async fn require_token(State(api): State<ProxyApi>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(ganymede_model::credentials::chp_token_from_header);
    if presented.is_some_and(|token| constant_time_eq(token.as_bytes(), api.auth_token.as_bytes())) {
        // Route changes made here are the proxy API token holder's, on the audit record.
        let origin = ganymede_model::audit::Origin {
            actor: "proxy_api".into(),
            token_id: None,
            ip: crate::audit::client_ip(&request),
        };
        ganymede_raft::origin::scope(origin, next.run(request)).await
    } else {
        StatusCode::FORBIDDEN.into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// CHP's JSON for one route: the POSTed data with `target` and `last_activity`.
fn route_json(route: &Route) -> Value {
    let mut object = match &route.data {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    object.insert("target".into(), Value::String(route.target.clone()));
    let last_activity = chrono::DateTime::from_timestamp_millis(route.last_activity)
        .map(|time| Value::String(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
        .unwrap_or(Value::Null);
    object.insert("last_activity".into(), last_activity);
    Value::Object(object)
}

fn parse_datestamp(text: &str) -> Option<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
        })
        .map(|naive| naive.and_utc().timestamp_millis())
}

async fn list_routes(
    State(api): State<ProxyApi>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let inactive_since = match query.get("inactive_since").or_else(|| query.get("inactiveSince")) {
        Some(text) => match parse_datestamp(text) {
            Some(millis) => Some(millis),
            None => {
                return text_error(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid datestamp '{text}' must be ISO8601."),
                );
            }
        },
        None => None,
    };
    let routes = api
        .hub
        .raft
        .read(|state| {
            state
                .routes
                .values()
                .filter(|route| inactive_since.is_none_or(|since| route.last_activity < since))
                .map(|route| (route.path.clone(), route_json(route)))
                .collect::<Map<String, Value>>()
        })
        .await;
    match routes {
        Ok(routes) => axum::Json(Value::Object(routes)).into_response(),
        Err(err) => text_error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn get_route(State(api): State<ProxyApi>, Path(path): Path<String>) -> Response {
    let path = names::normalize_route_path(&path);
    match api.hub.raft.read(|state| state.routes.get(&path).map(route_json)).await {
        Ok(Some(route)) => axum::Json(route).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(err) => text_error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn add_default_route(State(api): State<ProxyApi>, body: Bytes) -> Response {
    upsert(api, "/".into(), body).await
}

async fn add_route(State(api): State<ProxyApi>, Path(path): Path<String>, body: Bytes) -> Response {
    upsert(api, names::normalize_route_path(&path), body).await
}

async fn upsert(api: ProxyApi, path: String, body: Bytes) -> Response {
    let Ok(Value::Object(mut data)) = serde_json::from_slice::<Value>(&body) else {
        return text_error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    let Some(Value::String(target)) = data.remove("target") else {
        return text_error(StatusCode::BAD_REQUEST, "Must specify 'target' as string");
    };
    let command = Command::AddRoute {
        path,
        target,
        data: Value::Object(data),
        at: now_millis(),
    };
    match api.hub.raft.propose(command).await {
        Ok(Applied::Events(_) | Applied::Nothing) => StatusCode::CREATED.into_response(),
        Ok(Applied::Rejected(rejection)) => text_error(StatusCode::BAD_REQUEST, rejection.to_string()),
        Err(err) => text_error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn delete_route(State(api): State<ProxyApi>, Path(path): Path<String>) -> Response {
    let path = names::normalize_route_path(&path);
    match api
        .hub
        .raft
        .propose(Command::RemoveRoute { path, at: now_millis() })
        .await
    {
        Ok(Applied::Events(events)) if !events.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(Applied::Events(_) | Applied::Nothing) => StatusCode::NOT_FOUND.into_response(),
        Ok(Applied::Rejected(rejection)) => text_error(StatusCode::BAD_REQUEST, rejection.to_string()),
        Err(err) => text_error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datestamps_like_javascript_dates() {
        assert_eq!(parse_datestamp("2026-11-25T18:48:42.171Z"), Some(1_795_632_522_171));
        assert_eq!(parse_datestamp("2026-11-25T18:48:42.171000"), Some(1_795_632_522_171));
        assert!(parse_datestamp("2026-11-25").is_some());
        assert_eq!(parse_datestamp("yesterday"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
