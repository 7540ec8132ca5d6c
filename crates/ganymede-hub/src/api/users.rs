//! `/hub/api/user`, `/hub/api/users…` and user activity.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ganymede_model::rbac::Resource;
use ganymede_model::{Command, Event, Rejection, ServerPhase, TokenOwner, User, names};
use ganymede_raft::Applied;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, ApiQuery, OptionalApiJson, Page, PageQuery, as_written, empty, flag};
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::{ServerFilter, now_millis, parse_iso};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/user", get(whoami))
        .route("/users", get(list_users).post(create_users))
        .route(
            "/users/{name}",
            get(get_user).post(create_user).patch(update_user).delete(delete_user),
        )
        .route("/users/{name}/activity", post(record_activity))
}

/// Any of these lets a caller see a user.
const READ_USER: &[&str] = &[
    "read:users",
    "read:users:name",
    "read:servers",
    "read:users:groups",
    "read:users:activity",
    "read:roles:users",
];

async fn whoami(State(hub): State<Hub>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let roles = &hub.settings.roles;
    let model = hub
        .raft
        .read(|state| {
            let view = caller.view(state, roles);
            match &caller.owner {
                TokenOwner::User(name) => state.users.get(name).map(|user| {
                    // Whoever holds a token may identify its owner.
                    let mut model = view.user(user, ServerFilter::Active).unwrap_or_else(|| json!({}));
                    model["kind"] = json!("user");
                    model["name"] = json!(user.name);
                    model["admin"] = json!(user.admin);
                    model["groups"] = json!(state.groups_of(name).collect::<Vec<_>>());
                    if model.get("user_info").is_none() {
                        model["user_info"] = Value::Null;
                    }
                    model
                }),
                TokenOwner::Service(name) => state.services.get(name).map(|service| {
                    let mut model = view.service(service).unwrap_or_else(|| json!({}));
                    model["kind"] = json!("service");
                    model["name"] = json!(service.name);
                    model["admin"] = json!(service.admin);
                    model
                }),
            }
        })
        .await?
        .ok_or_else(ApiError::invalid_credentials)?;
    let mut model = model;
    model["scopes"] = json!(caller.scopes.to_strings());
    model["token_id"] = json!(caller.token_id.map(|id| format!("a{id}")));
    model["session_id"] = json!(caller.session_id);
    Ok(Json(model))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(flatten)]
    page: PageQuery,
    name_filter: Option<String>,
    state: Option<String>,
    sort: Option<String>,
    include_stopped_servers: Option<String>,
}

/// `?state=`: which users a listing keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StateFilter {
    Active,
    Ready,
    Inactive,
}

fn state_filter(value: Option<&str>) -> Result<Option<StateFilter>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some("active") => Ok(Some(StateFilter::Active)),
        Some("ready") => Ok(Some(StateFilter::Ready)),
        Some("inactive") => Ok(Some(StateFilter::Inactive)),
        Some(other) => Err(ApiError::bad_request(format!(
            "Unrecognized state filter: {other:?}. Must be one of active, ready, inactive"
        ))),
    }
}

fn keeps(filter: Option<StateFilter>, user: &User) -> bool {
    let has = |phase: fn(ServerPhase) -> bool| user.servers.values().any(|s| phase(s.phase));
    match filter {
        None => true,
        Some(StateFilter::Active) => has(|p| p != ServerPhase::Stopped),
        Some(StateFilter::Ready) => has(|p| p == ServerPhase::Running),
        Some(StateFilter::Inactive) => !has(|p| p != ServerPhase::Stopped),
    }
}

#[derive(Clone, Copy)]
enum SortKey {
    Id,
    Name,
    LastActivity,
}

fn sort_order(value: Option<&str>) -> Result<(SortKey, bool), ApiError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok((SortKey::Id, false));
    };
    let (descending, key) = match value.strip_prefix('-') {
        Some(key) => (true, key),
        None => (false, value),
    };
    let key = match key {
        "id" => SortKey::Id,
        "name" => SortKey::Name,
        "last_activity" => SortKey::LastActivity,
        _ => {
            return Err(ApiError::bad_request(format!(
                "sort must be one of id, name, last_activity (prefix '-' for descending), not {value:?}"
            )));
        }
    };
    Ok((key, descending))
}

async fn list_users(
    State(hub): State<Hub>,
    caller: Caller,
    headers: HeaderMap,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&["list:users"])?;
    let page = Page::new(&query.page, &headers)?;
    let filter = state_filter(query.state.as_deref())?;
    let (sort, descending) = sort_order(query.sort.as_deref())?;
    let servers = match filter {
        Some(StateFilter::Ready) => ServerFilter::Ready,
        _ if flag(&query.include_stopped_servers) => ServerFilter::All,
        _ => ServerFilter::Active,
    };
    let name_filter = query.name_filter.map(|f| f.to_lowercase());
    let roles = &hub.settings.roles;
    let (items, total) = hub
        .raft
        .read(|state| {
            let mut matching: Vec<&User> = state
                .users
                .values()
                .filter(|user| caller.scopes.allows("list:users", Resource::User(&user.name), state))
                .filter(|user| {
                    name_filter
                        .as_ref()
                        .is_none_or(|f| user.name.to_lowercase().contains(f.as_str()))
                })
                .filter(|user| keeps(filter, user))
                .collect();
            match sort {
                SortKey::Id => matching.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name))),
                SortKey::Name => {}
                SortKey::LastActivity => matching.sort_by_key(|user| user.last_activity),
            }
            if descending {
                matching.reverse();
            }
            let view = caller.view(state, roles);
            let items: Vec<Value> = page
                .slice(&matching)
                .into_iter()
                .filter_map(|user| view.user(user, servers))
                .collect();
            (items, matching.len())
        })
        .await?;
    Ok(page.respond(Value::Array(items), total, &headers, &uri))
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

/// Checks `scope` on user `name` and says whether that user is an admin.
async fn authorized_target_is_admin(hub: &Hub, caller: &Caller, scope: &str, name: &str) -> Result<bool, ApiError> {
    hub.raft
        .read(|state| {
            caller.authorize(state, &[scope], Resource::User(name))?;
            state
                .users
                .get(name)
                .map(|user| user.admin)
                .ok_or_else(|| ApiError::no_such_user(name))
        })
        .await?
}

/// Only an admin may make or touch admins: `admin:users` alone must not be a way to
/// full admin (JupyterHub CVE-2024-41942).
fn require_admin_owner(caller: &Caller) -> Result<(), ApiError> {
    if caller.owner_is_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Only admins can grant or modify admin permissions",
        ))
    }
}

/// The users a `CreateUsers` produced, rendered once this replica has applied them.
async fn created_users(hub: &Hub, caller: &Caller, applied: Applied) -> Result<Vec<Value>, ApiError> {
    if let Applied::Rejected(rejection) = applied {
        return Err(rejection.into());
    }
    let names: Vec<String> = match &applied {
        Applied::Events(events) => events
            .iter()
            .filter_map(|e| match &e.event {
                Event::UserCreated { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let written = as_written(|_| {}, &applied);
    let roles = &hub.settings.roles;
    Ok(hub
        .raft
        .read(|state| {
            let view = caller.view(state, roles);
            names
                .iter()
                .filter_map(|name| as_now_or_written(state, &written, name))
                .filter_map(|user| view.user(user, ServerFilter::Active))
                .collect()
        })
        .await?)
}

/// The user as the cluster has it now, or else as the write left it (see `as_written`).
fn as_now_or_written<'a>(
    now: &'a ganymede_model::State,
    written: &'a ganymede_model::State,
    name: &str,
) -> Option<&'a User> {
    now.users.get(name).or_else(|| written.users.get(name))
}

async fn create_users(
    State(hub): State<Hub>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUsersBody>,
) -> Result<Response, ApiError> {
    caller.require_everywhere("admin:users")?;
    if body.admin {
        require_admin_owner(&caller)?;
    }
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
    let users = created_users(&hub, &caller, applied).await?;
    Ok((StatusCode::CREATED, Json(users)).into_response())
}

#[derive(Deserialize)]
struct GetUserQuery {
    include_stopped_servers: Option<String>,
}

async fn get_user(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<GetUserQuery>,
) -> Result<Json<Value>, ApiError> {
    let servers = if flag(&query.include_stopped_servers) {
        ServerFilter::All
    } else {
        ServerFilter::Active
    };
    let roles = &hub.settings.roles;
    hub.raft
        .read(|state| {
            caller.authorize(state, READ_USER, Resource::User(&name))?;
            let user = state.users.get(&name).ok_or_else(|| ApiError::no_such_user(&name))?;
            let view = caller.view(state, roles);
            view.user(user, servers).map(Json).ok_or_else(ApiError::no_access)
        })
        .await?
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
    let name = normalized(&raw)?;
    hub.raft
        .read(|state| caller.authorize(state, &["admin:users"], Resource::User(&name)))
        .await??;
    let admin = body.unwrap_or_default().admin;
    if admin {
        require_admin_owner(&caller)?;
    }
    let applied = hub
        .raft
        .propose(Command::CreateUsers {
            names: vec![name],
            admin,
            at: now_millis(),
        })
        .await?;
    let mut users = created_users(&hub, &caller, applied).await?;
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
    // The user before the change: to answer with, should it be gone after (as_written).
    let before = hub
        .raft
        .read(|state| {
            caller.authorize(state, &["admin:users"], Resource::User(&name))?;
            state
                .users
                .get(&name)
                .cloned()
                .ok_or_else(|| ApiError::no_such_user(&name))
        })
        .await??;
    let target_is_admin = before.admin;
    if target_is_admin || body.admin == Some(true) {
        require_admin_owner(&caller)?;
    }
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
        applied @ (Applied::Events(_) | Applied::Nothing) => {
            let written = as_written(
                |scratch| {
                    scratch.users.insert(name.clone(), before);
                },
                &applied,
            );
            let roles = &hub.settings.roles;
            hub.raft
                .read(|state| {
                    let view = caller.view(state, roles);
                    as_now_or_written(state, &written, &target).and_then(|user| view.user(user, ServerFilter::Active))
                })
                .await?
                .map(Json)
                .ok_or_else(|| ApiError::no_such_user(&target))
        }
    }
}

async fn delete_user(State(hub): State<Hub>, caller: Caller, Path(name): Path<String>) -> Result<Response, ApiError> {
    let target_is_admin = authorized_target_is_admin(&hub, &caller, "delete:users", &name).await?;
    if target_is_admin {
        require_admin_owner(&caller)?;
    }
    if caller.is_user(&name) {
        return Err(ApiError::bad_request("Cannot delete yourself!"));
    }
    match hub.raft.propose(Command::DeleteUser { name, at: now_millis() }).await? {
        Applied::Rejected(Rejection::ServerPending { user }) => Err(ApiError::bad_request(format!(
            "User {user}'s server is pending spawn or stop. Try again later."
        ))),
        Applied::Rejected(rejection) => Err(rejection.into()),
        _ => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

/// How far ahead of the hub's clock a reported time may be (JupyterHub: 59 minutes).
const MAX_FUTURE_MILLIS: i64 = 59 * 60 * 1000;

fn activity_time(value: Option<&Value>, what: &str) -> Result<Option<i64>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = value
        .as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{what}: last_activity must be an ISO8601 timestamp")))?;
    let when = parse_iso(text).ok_or_else(|| ApiError::bad_request(format!("{what}: invalid timestamp {text:?}")))?;
    if when > now_millis() + MAX_FUTURE_MILLIS {
        return Err(ApiError::bad_request(format!(
            "{what}: last_activity {text} is more than an hour in the future"
        )));
    }
    Ok(Some(when))
}

/// `POST /users/{name}/activity`: what single-user servers report. Gathered and
/// committed within a second; a repeated or older time is ignored when applied.
async fn record_activity(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalApiJson(body): OptionalApiJson<Value>,
) -> Result<Response, ApiError> {
    let server_names = hub
        .raft
        .read(|state| {
            caller.authorize(state, &["users:activity"], Resource::User(&name))?;
            state
                .users
                .get(&name)
                .map(|user| user.servers.keys().cloned().collect::<Vec<_>>())
                .ok_or_else(|| ApiError::no_such_user(&name))
        })
        .await??;
    let Some(Value::Object(body)) = body else {
        return Err(ApiError::bad_request("body must be a JSON dict"));
    };
    let last_activity = activity_time(body.get("last_activity"), "user")?;
    let servers = match body.get("servers") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(servers)) => servers.clone(),
        Some(_) => return Err(ApiError::bad_request("servers must be a dict")),
    };
    if last_activity.is_none() && servers.is_empty() {
        return Err(ApiError::bad_request("body has no activity"));
    }
    let mut server_times = Vec::new();
    for (server, activity) in &servers {
        if !server_names.contains(server) {
            return Err(ApiError::bad_request(format!(
                "No such server '{server}' for user {name}"
            )));
        }
        let when = activity_time(activity.get("last_activity"), server)?
            .ok_or_else(|| ApiError::bad_request(format!("server {server:?}: missing last_activity")))?;
        server_times.push((server.clone(), when));
    }
    if let Some(when) = last_activity {
        hub.activity.user(&name, when);
    }
    for (server, when) in server_times {
        hub.activity.server(&name, &server, when);
    }
    Ok((StatusCode::OK, [("content-type", "text/plain; charset=UTF-8")], "").into_response())
}
