//! `/hub/api/user` and `/hub/api/users…`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ganymede_model::{Command, Rejection, TokenOwner, names};
use ganymede_raft::Applied;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, OptionalApiJson};
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::{self, now_millis};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/user", get(whoami))
        .route("/users", get(list_users).post(create_users))
        .route(
            "/users/{name}",
            get(get_user).post(create_user).patch(update_user).delete(delete_user),
        )
}

/// The scopes of the default `user` role (`self`), expanded for one user.
fn self_scopes(name: &str) -> Vec<String> {
    let mut scopes: Vec<String> = [
        "access:servers",
        "delete:servers",
        "read:servers",
        "read:shares",
        "read:tokens",
        "read:users",
        "read:users:activity",
        "read:users:groups",
        "read:users:name",
        "read:users:shares",
        "servers",
        "start:servers",
        "tokens",
        "users:activity",
        "users:shares",
    ]
    .iter()
    .map(|scope| format!("{scope}!user={name}"))
    .collect();
    scopes.sort();
    scopes
}

/// The scopes of the `admin` role.
const ADMIN_SCOPES: &[&str] = &[
    "access:servers",
    "access:services",
    "admin-ui",
    "admin:groups",
    "admin:servers",
    "admin:services",
    "admin:users",
    "list:services",
    "proxy",
    "read:hub",
    "read:metrics",
    "read:roles",
    "read:services",
    "shares",
    "shutdown",
    "tokens",
];

async fn whoami(State(hub): State<Hub>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let token_id = format!("a{}", caller.token_id);
    let model = hub
        .raft
        .read(|state| match &caller.owner {
            TokenOwner::User(name) => state.users.get(name).map(|user| {
                let mut model = render::user(user);
                let mut scopes = self_scopes(name);
                if user.admin {
                    scopes.extend(ADMIN_SCOPES.iter().map(|s| s.to_string()));
                    scopes.sort();
                }
                model["scopes"] = json!(scopes);
                model
            }),
            TokenOwner::Service(name) => state.services.get(name).map(|service| {
                let scopes: Vec<&str> = if service.admin { ADMIN_SCOPES.to_vec() } else { vec![] };
                json!({
                    "kind": "service",
                    "name": service.name,
                    "admin": service.admin,
                    "roles": service.roles,
                    "scopes": scopes,
                })
            }),
        })
        .await?
        .ok_or_else(ApiError::invalid_credentials)?;
    let mut model = model;
    model["token_id"] = json!(token_id);
    model["session_id"] = Value::Null;
    Ok(Json(model))
}

#[derive(Deserialize)]
struct ListQuery {
    offset: Option<String>,
    limit: Option<String>,
    name_filter: Option<String>,
}

/// JupyterHub's page limit: anything above is clamped, and it is the default too when
/// the client did not ask for pagination.
const MAX_PAGE: usize = 200;

fn parse_count(value: &Option<String>, name: &str) -> Result<Option<usize>, ApiError> {
    value
        .as_deref()
        .map(|text| {
            text.trim()
                .parse::<i64>()
                .map(|n| n.unsigned_abs() as usize)
                .map_err(|_| ApiError::bad_request(format!("{name} must be an integer, not {text:?}")))
        })
        .transpose()
}

fn wants_pagination(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| {
            accept.split(',').any(|item| {
                item.trim()
                    .eq_ignore_ascii_case("application/jupyterhub-pagination+json")
            })
        })
}

async fn list_users(
    State(hub): State<Hub>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("list:users")?;
    let offset = parse_count(&query.offset, "offset")?.unwrap_or(0);
    let limit = parse_count(&query.limit, "limit")?
        .unwrap_or(MAX_PAGE)
        .clamp(1, MAX_PAGE);
    let filter = query.name_filter.map(|f| f.to_lowercase());
    let (items, total) = hub
        .raft
        .read(|state| {
            let matching: Vec<_> = state
                .users
                .values()
                .filter(|user| {
                    filter
                        .as_ref()
                        .is_none_or(|f| user.name.to_lowercase().contains(f.as_str()))
                })
                .collect();
            let items: Vec<Value> = matching
                .iter()
                .skip(offset)
                .take(limit)
                .map(|user| render::user(user))
                .collect();
            (items, matching.len())
        })
        .await?;
    if !wants_pagination(&headers) {
        return Ok(Json(Value::Array(items)));
    }
    let next = (offset + limit < total).then(|| {
        let path = uri.path();
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        json!({
            "offset": offset + limit,
            "limit": limit,
            "url": format!("http://{host}{path}?offset={}&limit={limit}", offset + limit),
        })
    });
    Ok(Json(json!({
        "items": items,
        "_pagination": { "offset": offset, "limit": limit, "total": total, "next": next },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUsersBody {
    usernames: Vec<String>,
    #[serde(default)]
    admin: bool,
}

fn normalized(raw: &str) -> Result<String, ApiError> {
    let name = names::normalize_user_name(raw);
    if !names::is_valid_user_name(&name) {
        return Err(ApiError::bad_request(format!("Invalid username: {raw}")));
    }
    Ok(name)
}

/// Renders the users a `CreateUsers` produced, from its events (this replica may not
/// have applied them yet when the leader answers).
fn created_users(applied: Applied) -> Result<Vec<Value>, ApiError> {
    match applied {
        Applied::Events(events) => Ok(events
            .into_iter()
            .filter_map(|e| match e.event {
                ganymede_model::Event::UserCreated { name, admin, at } => Some(render::user(&ganymede_model::User {
                    name,
                    admin,
                    created: at,
                    last_activity: None,
                    servers: Default::default(),
                })),
                _ => None,
            })
            .collect()),
        Applied::Rejected(rejection) => Err(rejection.into()),
        Applied::Nothing => Ok(Vec::new()),
    }
}

async fn create_users(
    State(hub): State<Hub>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUsersBody>,
) -> Result<Response, ApiError> {
    caller.require_admin("admin:users")?;
    if body.usernames.is_empty() {
        return Err(ApiError::bad_request("Must specify at least one user to create"));
    }
    let names = body
        .usernames
        .iter()
        .map(|raw| normalized(raw))
        .collect::<Result<Vec<_>, _>>()?;
    let applied = hub
        .raft
        .propose(Command::CreateUsers {
            names,
            admin: body.admin,
            at: now_millis(),
        })
        .await?;
    let users = created_users(applied)?;
    Ok((StatusCode::CREATED, Json(users)).into_response())
}

async fn get_user(State(hub): State<Hub>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    if !caller.admin && !caller.is_user(&name) {
        // JupyterHub hides other users behind a 404 when the scope is held for oneself only.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No access to resources or resources not found",
        ));
    }
    hub.raft
        .read(|state| state.users.get(&name).map(render::user))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such user: {name}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateUserBody {
    #[serde(default)]
    admin: bool,
}

async fn create_user(
    State(hub): State<Hub>,
    caller: Caller,
    Path(raw): Path<String>,
    OptionalApiJson(body): OptionalApiJson<CreateUserBody>,
) -> Result<Response, ApiError> {
    caller.require_admin("admin:users")?;
    let name = normalized(&raw)?;
    let admin = body.unwrap_or_default().admin;
    let applied = hub
        .raft
        .propose(Command::CreateUsers {
            names: vec![name],
            admin,
            at: now_millis(),
        })
        .await?;
    let mut users = created_users(applied)?;
    let user = users
        .pop()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "user not created"))?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUserBody {
    name: Option<String>,
    admin: Option<bool>,
}

async fn update_user(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin("admin:users")?;
    let rename = body.name.as_deref().map(normalized).transpose()?;
    let target = rename.clone().unwrap_or_else(|| name.clone());
    let command = Command::UpdateUser {
        name: name.clone(),
        rename,
        admin: body.admin,
        at: now_millis(),
    };
    match hub.raft.propose(command).await? {
        Applied::Rejected(Rejection::UserExists { name }) => Err(ApiError::bad_request(format!(
            "User {name} already exists, username must be unique"
        ))),
        Applied::Rejected(rejection) => Err(rejection.into()),
        Applied::Events(_) | Applied::Nothing => hub
            .raft
            .read(|state| state.users.get(&target).map(render::user))
            .await?
            .map(Json)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such user: {target}"))),
    }
}

async fn delete_user(State(hub): State<Hub>, caller: Caller, Path(name): Path<String>) -> Result<Response, ApiError> {
    caller.require_admin("delete:users")?;
    if caller.is_user(&name) {
        return Err(ApiError::bad_request("Cannot delete yourself!"));
    }
    match hub.raft.propose(Command::DeleteUser { name, at: now_millis() }).await? {
        Applied::Rejected(rejection) => Err(rejection.into()),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
