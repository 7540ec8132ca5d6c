//! `/groups…`: groups, their members and properties.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use ganymede_model::rbac::Resource;
use ganymede_model::{Command, Group, Rejection};
use ganymede_raft::Applied;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiJson, ApiQuery, OptionalApiJson, Page, PageQuery, as_written, empty};
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::now_millis;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/groups", get(list_groups).post(create_groups))
        .route(
            "/groups/{group}",
            get(get_group).post(create_group).delete(delete_group),
        )
        .route(
            "/groups/{group}/users",
            axum::routing::post(add_members).delete(remove_members),
        )
        .route("/groups/{group}/properties", put(set_properties))
}

fn no_such_group(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No such group: {name}"))
}

/// Unknown members are the request's fault here (400), not a missing resource.
fn member_rejection(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::UserNotFound { name } => ApiError::bad_request(format!("No such user: {name}")),
        other => other.into(),
    }
}

async fn list_groups(
    State(hub): State<Hub>,
    caller: Caller,
    headers: HeaderMap,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(&["list:groups"])?;
    let page = Page::new(&query, &headers)?;
    let roles = &hub.settings.roles;
    let (items, total) = hub
        .raft
        .read(|state| {
            let visible: Vec<&Group> = state
                .groups
                .values()
                .filter(|g| caller.scopes.allows("list:groups", Resource::Group(&g.name), state))
                .collect();
            let view = caller.view(state, roles);
            let items: Vec<Value> = page.slice(&visible).into_iter().filter_map(|g| view.group(g)).collect();
            (items, visible.len())
        })
        .await?;
    Ok(page.respond(Value::Array(items), total, &headers, &uri))
}

/// The groups as the cluster has them now, or else as `written` holds them (see
/// `as_written`: a write's answer must not say its group is gone).
async fn render_groups(
    hub: &Hub,
    caller: &Caller,
    names: &[String],
    written: &ganymede_model::State,
) -> Result<Vec<Value>, ApiError> {
    let roles = &hub.settings.roles;
    Ok(hub
        .raft
        .read(|state| {
            let view = caller.view(state, roles);
            names
                .iter()
                .filter_map(|n| state.groups.get(n).or_else(|| written.groups.get(n)))
                .filter_map(|g| view.group(g))
                .collect()
        })
        .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroupsBody {
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

async fn create_groups(
    State(hub): State<Hub>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateGroupsBody>,
) -> Result<Response, ApiError> {
    caller.require_everywhere("admin:groups")?;
    if body.groups.is_empty() {
        return Err(ApiError::bad_request("Must specify at least one group to create"));
    }
    create(hub, caller, body.groups, body.users).await
}

async fn create(hub: Hub, caller: Caller, names: Vec<String>, users: Vec<String>) -> Result<Response, ApiError> {
    let command = Command::CreateGroups {
        names: names.clone(),
        users,
        at: now_millis(),
    };
    match hub.raft.propose(command).await? {
        Applied::Rejected(rejection) => Err(member_rejection(rejection)),
        applied => {
            let written = as_written(|_| {}, &applied);
            let groups = render_groups(&hub, &caller, &names, &written).await?;
            Ok((StatusCode::CREATED, Json(groups)).into_response())
        }
    }
}

async fn get_group(State(hub): State<Hub>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let roles = &hub.settings.roles;
    hub.raft
        .read(|state| {
            caller.authorize(
                state,
                &["read:groups", "read:groups:name", "read:roles:groups"],
                Resource::Group(&name),
            )?;
            let group = state.groups.get(&name).ok_or_else(|| no_such_group(&name))?;
            caller
                .view(state, roles)
                .group(group)
                .map(Json)
                .ok_or_else(ApiError::no_access)
        })
        .await?
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MembersBody {
    #[serde(default)]
    users: Vec<String>,
}

async fn create_group(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalApiJson(body): OptionalApiJson<MembersBody>,
) -> Result<Response, ApiError> {
    hub.raft
        .read(|state| caller.authorize(state, &["admin:groups"], Resource::Group(&name)))
        .await??;
    let response = create(hub, caller, vec![name], body.unwrap_or_default().users).await?;
    // POST /groups/{name} answers the group itself, not a list.
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut list: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    let group = list.pop().unwrap_or(Value::Null);
    Ok((parts.status, Json(group)).into_response())
}

async fn delete_group(State(hub): State<Hub>, caller: Caller, Path(name): Path<String>) -> Result<Response, ApiError> {
    hub.raft
        .read(|state| {
            caller.authorize(state, &["delete:groups"], Resource::Group(&name))?;
            state.groups.get(&name).map(|_| ()).ok_or_else(|| no_such_group(&name))
        })
        .await??;
    match hub
        .raft
        .propose(Command::DeleteGroup { name, at: now_millis() })
        .await?
    {
        Applied::Rejected(Rejection::GroupNotFound { .. }) | Applied::Events(_) | Applied::Nothing => {
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Applied::Rejected(rejection) => Err(rejection.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredMembersBody {
    users: Vec<String>,
}

async fn change_members(
    hub: Hub,
    caller: Caller,
    name: String,
    add: Vec<String>,
    remove: Vec<String>,
) -> Result<Json<Value>, ApiError> {
    let before = hub
        .raft
        .read(|state| {
            caller.authorize(state, &["groups"], Resource::Group(&name))?;
            state.groups.get(&name).cloned().ok_or_else(|| no_such_group(&name))
        })
        .await??;
    let command = Command::ChangeGroupMembers {
        name: name.clone(),
        add,
        remove,
        at: now_millis(),
    };
    let applied = hub.raft.propose(command).await?;
    if let Applied::Rejected(rejection) = applied {
        return Err(member_rejection(rejection));
    }
    let written = as_written(
        |scratch| {
            scratch.groups.insert(name.clone(), before);
        },
        &applied,
    );
    render_groups(&hub, &caller, std::slice::from_ref(&name), &written)
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| no_such_group(&name))
}

async fn add_members(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RequiredMembersBody>,
) -> Result<Json<Value>, ApiError> {
    change_members(hub, caller, name, body.users, Vec::new()).await
}

async fn remove_members(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RequiredMembersBody>,
) -> Result<Json<Value>, ApiError> {
    change_members(hub, caller, name, Vec::new(), body.users).await
}

async fn set_properties(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(properties): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    if !properties.is_object() {
        return Err(ApiError::bad_request("group properties must be a JSON dict"));
    }
    let before = hub
        .raft
        .read(|state| {
            caller.authorize(state, &["groups"], Resource::Group(&name))?;
            state.groups.get(&name).cloned().ok_or_else(|| no_such_group(&name))
        })
        .await??;
    let command = Command::SetGroupProperties {
        name: name.clone(),
        properties,
        at: now_millis(),
    };
    let applied = hub.raft.propose(command).await?;
    if let Applied::Rejected(rejection) = applied {
        return Err(rejection.into());
    }
    let written = as_written(
        |scratch| {
            scratch.groups.insert(name.clone(), before);
        },
        &applied,
    );
    render_groups(&hub, &caller, std::slice::from_ref(&name), &written)
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| no_such_group(&name))
}
