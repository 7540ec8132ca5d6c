//! A user's servers: `/users/{name}/server` (the default one) and
//! `/users/{name}/servers/{server}` — start, stop, create, rename, remove, the server
//! model and spawn progress as `text/event-stream`. Starting and stopping are requests
//! recorded in the replicated state; the spawner carries them out and reports back.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ganymede_model::rbac::Resource;
use ganymede_model::{Command, Rejection, Server, ServerPhase};
use ganymede_raft::Applied;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, OptionalApiJson, empty};
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::{self, now_millis};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route(
            "/users/{name}/server",
            get(get_default)
                .post(start_default)
                .patch(update_default)
                .delete(stop_default),
        )
        .route(
            "/users/{name}/servers/{server}",
            get(get_named)
                .post(start_named)
                .put(create_named)
                .patch(update_named)
                .delete(stop_named),
        )
        .route("/users/{name}/server/progress", get(progress_default))
        .route("/users/{name}/servers/{server}/progress", get(progress_named))
}

/// How often a handler waiting for a spawn or stop looks at the state again.
const WAIT_STEP: Duration = Duration::from_millis(25);

/// Checks `scope` on the server and returns it as it is now (`None` if it does not exist
/// yet; the user must).
async fn authorized_server(
    hub: &Hub,
    caller: &Caller,
    scope: &str,
    user: &str,
    server: &str,
) -> Result<Option<Server>, ApiError> {
    hub.raft
        .read(|state| {
            caller.authorize(state, &[scope], Resource::Server { user, server })?;
            let owner = state.users.get(user).ok_or_else(|| ApiError::no_such_user(user))?;
            Ok(owner.servers.get(server).cloned())
        })
        .await?
}

async fn get_default(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    get_server(hub, caller, name, String::new()).await
}

async fn get_named(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, server)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    get_server(hub, caller, name, server).await
}

async fn get_server(hub: Hub, caller: Caller, name: String, server: String) -> Result<Json<Value>, ApiError> {
    let found = authorized_server(&hub, &caller, "read:servers", &name, &server).await?;
    // Every user has a default server, started or not.
    let found = found.or_else(|| server.is_empty().then(|| Server::stopped("")));
    let found =
        found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{name} has no server named '{server}'")))?;
    Ok(Json(render::server(&name, &found)))
}

async fn start_default(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalApiJson(body): OptionalApiJson<Value>,
) -> Result<Response, ApiError> {
    start(hub, caller, name, String::new(), body).await
}

async fn start_named(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, server)): Path<(String, String)>,
    OptionalApiJson(body): OptionalApiJson<Value>,
) -> Result<Response, ApiError> {
    start(hub, caller, name, server, body).await
}

/// JupyterHub 6's `ServerRequest` (`{display_name?, user_options?}`), or, when it has
/// neither key, the whole body as the user options; no body reuses the last options.
fn user_options_of(body: Option<Value>, previous: Option<&Server>) -> Result<Value, ApiError> {
    let previous = || previous.map_or_else(|| json!({}), |s| s.user_options.clone());
    match body {
        None | Some(Value::Null) => Ok(previous()),
        Some(Value::Object(mut fields)) => {
            if fields.contains_key("user_options") || fields.contains_key("display_name") {
                match fields.remove("user_options") {
                    None | Some(Value::Null) => Ok(previous()),
                    Some(options @ Value::Object(_)) => Ok(options),
                    Some(_) => Err(ApiError::bad_request("user_options must be a dict")),
                }
            } else {
                Ok(Value::Object(fields))
            }
        }
        Some(_) => Err(ApiError::bad_request("body must be a JSON dict")),
    }
}

async fn start(
    hub: Hub,
    caller: Caller,
    name: String,
    server: String,
    body: Option<Value>,
) -> Result<Response, ApiError> {
    if !server.is_empty() && !hub.settings.allow_named_servers {
        return Err(ApiError::bad_request("Named servers are not enabled."));
    }
    let current = authorized_server(&hub, &caller, "start:servers", &name, &server).await?;
    match current.as_ref().map(|s| s.phase) {
        // JupyterHub's API answers a second start with 202 and records nothing.
        Some(ServerPhase::PendingSpawn) => {
            return Ok(empty(StatusCode::ACCEPTED));
        }
        Some(ServerPhase::Running) => {
            return Err(ApiError::bad_request(format!(
                "{} is already running",
                crate::error::log_name(&name, &server)
            )));
        }
        Some(ServerPhase::PendingStop) => {
            return Err(ApiError::bad_request(format!(
                "{} is pending stop",
                crate::error::log_name(&name, &server)
            )));
        }
        Some(ServerPhase::Stopped) | None => {}
    }
    let user_options = user_options_of(body, current.as_ref())?;
    let spawn_id = match hub.request_spawn(&name, &server, user_options).await? {
        Applied::Rejected(Rejection::ServerActive { .. }) => return Ok(empty(StatusCode::ACCEPTED)),
        Applied::Rejected(rejection) => return Err(rejection.into()),
        Applied::Events(events) => events.iter().find_map(|e| match &e.event {
            ganymede_model::Event::ServerSpawnRequested { spawn_id, .. } => Some(*spawn_id),
            _ => None,
        }),
        Applied::Nothing => None,
    };
    // Wait a little for the spawner: JupyterHub answers 201 when the server came up
    // within `slow_spawn_timeout`, 202 when it is still starting.
    let deadline = tokio::time::Instant::now() + hub.settings.slow_spawn_timeout;
    loop {
        let now = hub.raft.read_local(|state| {
            state
                .users
                .get(&name)
                .and_then(|u| u.servers.get(&server))
                .map(|s| (s.phase, s.spawn_id))
        });
        match now {
            Some((ServerPhase::Running, id)) if id == spawn_id => return Ok(empty(StatusCode::CREATED)),
            Some((ServerPhase::Stopped, id)) if id == spawn_id => {
                let why = hub
                    .raft
                    .read_local(|state| state.users.get(&name)?.servers.get(&server)?.failure.clone())
                    .unwrap_or_else(|| "the server stopped before it was ready".into());
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Spawn failed for {}: {why}", crate::error::log_name(&name, &server)),
                ));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(empty(StatusCode::ACCEPTED));
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

#[derive(Deserialize, Default)]
struct CreateServerBody {
    display_name: Option<String>,
    user_options: Option<Value>,
}

async fn create_named(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, server)): Path<(String, String)>,
    OptionalApiJson(body): OptionalApiJson<CreateServerBody>,
) -> Result<Response, ApiError> {
    if !hub.settings.allow_named_servers {
        return Err(ApiError::bad_request("Named servers are not enabled."));
    }
    authorized_server(&hub, &caller, "start:servers", &name, &server).await?;
    let body = body.unwrap_or_default();
    let user_options = match body.user_options {
        None | Some(Value::Null) => json!({}),
        Some(options @ Value::Object(_)) => options,
        Some(_) => return Err(ApiError::bad_request("user_options must be a dict")),
    };
    let command = Command::CreateServer {
        user: name.clone(),
        server: server.clone(),
        display_name: body.display_name,
        user_options,
        limits: hub.settings.spawn_limits.clone(),
        at: now_millis(),
    };
    match hub.raft.propose(command).await? {
        Applied::Rejected(Rejection::NamedServerLimit { user, limit }) => Err(ApiError::bad_request(format!(
            "User {user} already has the maximum of {limit} named servers.  One must be deleted before a new server can be created"
        ))),
        Applied::Rejected(rejection) => Err(rejection.into()),
        _ => {
            let created = read_server(&hub, &name, &server).await?;
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
    }
}

async fn read_server(hub: &Hub, name: &str, server: &str) -> Result<Value, ApiError> {
    hub.raft
        .read(|state| {
            state
                .users
                .get(name)
                .and_then(|u| u.servers.get(server))
                .map(|s| render::server(name, s))
        })
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{name} has no server named '{server}'")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateServerBody {
    name: Option<String>,
    display_name: Option<String>,
    user_options: Option<Value>,
}

async fn update_default(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpdateServerBody>,
) -> Result<Json<Value>, ApiError> {
    update(hub, caller, name, String::new(), body).await
}

async fn update_named(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, server)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateServerBody>,
) -> Result<Json<Value>, ApiError> {
    update(hub, caller, name, server, body).await
}

async fn update(
    hub: Hub,
    caller: Caller,
    name: String,
    server: String,
    body: UpdateServerBody,
) -> Result<Json<Value>, ApiError> {
    authorized_server(&hub, &caller, "start:servers", &name, &server).await?;
    let user_options = match body.user_options {
        None | Some(Value::Null) => None,
        Some(options @ Value::Object(_)) => Some(options),
        Some(_) => return Err(ApiError::bad_request("user_options must be a dict")),
    };
    let new_name = body.name.clone().unwrap_or_else(|| server.clone());
    let command = Command::UpdateServer {
        user: name.clone(),
        server: server.clone(),
        rename: body.name,
        display_name: body.display_name,
        user_options,
        at: now_millis(),
    };
    match hub.raft.propose(command).await? {
        Applied::Rejected(Rejection::ServerActive { user, server }) => Err(ApiError::bad_request(format!(
            "Server {} is active; stop it before changing it",
            crate::error::log_name(&user, &server)
        ))),
        Applied::Rejected(rejection) => Err(rejection.into()),
        _ => Ok(Json(read_server(&hub, &name, &new_name).await?)),
    }
}

#[derive(Deserialize, Default)]
struct StopBody {
    #[serde(default)]
    remove: bool,
}

async fn stop_default(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalApiJson(body): OptionalApiJson<StopBody>,
) -> Result<Response, ApiError> {
    if body.is_some_and(|b| b.remove) {
        return Err(ApiError::bad_request("Cannot delete the default server"));
    }
    stop(hub, caller, name, String::new(), false).await
}

async fn stop_named(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, server)): Path<(String, String)>,
    OptionalApiJson(body): OptionalApiJson<StopBody>,
) -> Result<Response, ApiError> {
    let remove = body.is_some_and(|b| b.remove);
    stop(hub, caller, name, server, remove).await
}

async fn stop(hub: Hub, caller: Caller, name: String, server: String, remove: bool) -> Result<Response, ApiError> {
    let current = authorized_server(&hub, &caller, "delete:servers", &name, &server).await?;
    let Some(current) = current else {
        if server.is_empty() {
            // A default server that never ran is "already stopped".
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{name} has no server named '{server}'"),
        ));
    };
    if current.phase == ServerPhase::Stopped && !remove {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let command = Command::RequestStop {
        user: name.clone(),
        server: server.clone(),
        remove,
        at: now_millis(),
    };
    match hub.raft.propose(command).await? {
        Applied::Rejected(Rejection::ServerNotRunning { .. }) => {}
        Applied::Rejected(rejection) => return Err(rejection.into()),
        _ => {}
    }
    let deadline = tokio::time::Instant::now() + hub.settings.slow_stop_timeout;
    loop {
        let phase = hub.server_phase(&name, &server);
        if matches!(phase, None | Some(ServerPhase::Stopped)) {
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(empty(StatusCode::ACCEPTED));
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

async fn progress_default(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    progress(hub, caller, name, String::new()).await
}

async fn progress_named(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, server)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    progress(hub, caller, name, server).await
}

fn ready_event(name: &str, server: &str) -> Value {
    let url = render::server_url(name, server);
    json!({
        "progress": 100,
        "ready": true,
        "message": format!("Server ready at {url}"),
        "html_message": format!("Server ready at <a href=\"{url}\">{url}</a>"),
        "url": url,
    })
}

/// Spawn progress as `text/event-stream`: "Server requested", then the spawner's
/// progress, then ready or failed. A ready server gets only the ready event; one that is
/// neither ready nor starting gets 400.
async fn progress(hub: Hub, caller: Caller, name: String, server: String) -> Result<Response, ApiError> {
    let current = authorized_server(&hub, &caller, "read:servers", &name, &server)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{name} has no server named '{server}'")))?;
    let full_name = if server.is_empty() {
        name.clone()
    } else {
        format!("{name}/{server}")
    };
    let spawn_id = current.spawn_id;
    let events: Vec<Value> = match current.phase {
        ServerPhase::Running => vec![ready_event(&name, &server)],
        ServerPhase::PendingSpawn => vec![json!({"progress": 0, "message": "Server requested"})],
        // As JupyterHub: the last spawn failed, and the stream says why.
        ServerPhase::Stopped if current.failure.is_some() => vec![json!({
            "progress": 100,
            "failed": true,
            "message": format!("Spawn failed: {}", current.failure.clone().unwrap_or_default()),
        })],
        ServerPhase::Stopped | ServerPhase::PendingStop => {
            return Err(ApiError::bad_request(format!("{full_name} is not starting...")));
        }
    };
    let done = current.phase != ServerPhase::PendingSpawn;
    // (queued events, finished, how many of the record's progress steps were sent)
    let stream = futures::stream::unfold(
        (events.into_iter(), done, 0usize),
        move |(mut queued, finished, sent)| {
            let hub = hub.clone();
            let name = name.clone();
            let server = server.clone();
            async move {
                if let Some(event) = queued.next() {
                    return Some((event, (queued, finished, sent)));
                }
                if finished {
                    return None;
                }
                loop {
                    let now = hub.raft.read_local(|state| {
                        state
                            .users
                            .get(&name)
                            .and_then(|u| u.servers.get(&server))
                            .map(|s| (s.phase, s.spawn_id, s.progress.clone(), s.failure.clone()))
                    });
                    let (phase, id, steps, failure) = match now {
                        Some((phase, id, steps, failure)) if id == spawn_id => (phase, id, steps, failure),
                        _ => (ServerPhase::Stopped, None, Vec::new(), None),
                    };
                    // The spawner's messages first, as they were committed.
                    if let Some(step) = steps.get(sent) {
                        let event = json!({"progress": step.progress, "message": step.message});
                        return Some((event, (queued, false, sent + 1)));
                    }
                    let event = match phase {
                        ServerPhase::Running => ready_event(&name, &server),
                        ServerPhase::PendingSpawn => {
                            tokio::time::sleep(WAIT_STEP * 4).await;
                            continue;
                        }
                        _ => {
                            let why = failure
                                .filter(|_| id.is_some())
                                .unwrap_or_else(|| "the server stopped before it was ready".into());
                            json!({"progress": 100, "failed": true, "message": format!("Spawn failed: {why}")})
                        }
                    };
                    return Some((event, (queued, true, sent)));
                }
            }
        },
    );
    let stream = futures::StreamExt::map(stream, |event| {
        Ok::<_, Infallible>(SseEvent::default().data(event.to_string()))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(8)))
        .into_response();
    response
        .headers_mut()
        .insert("cache-control", axum::http::HeaderValue::from_static("no-cache"));
    Ok(response)
}
