//! `/info`, `/proxy` and `/services…`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use ganymede_model::rbac::Resource;
use serde_json::{Map, Value, json};

use super::{Page, PageQuery};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::{View, iso};
use crate::{Hub, JUPYTERHUB_VERSION};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/info", get(info))
        .route("/proxy", get(proxy_table).post(proxy_sync))
        .route("/services", get(list_services))
        .route("/services/{service}", get(get_service))
}

async fn info(caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_everywhere("read:hub")?;
    let ours = env!("CARGO_PKG_VERSION");
    Ok(Json(json!({
        "version": JUPYTERHUB_VERSION,
        "python": Value::Null,
        "sys_executable": Value::Null,
        "spawner": { "class": "ganymede.LocalProcessSpawner", "version": ours },
        "authenticator": { "class": "ganymede.Authenticator", "version": ours },
    })))
}

/// The routing table, as JupyterHub's `GET /proxy` shows it (paginated: an object).
async fn proxy_table(
    State(hub): State<Hub>,
    caller: Caller,
    headers: HeaderMap,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_everywhere("proxy")?;
    let page = Page::new(&query, &headers)?;
    let (items, total) = hub
        .raft
        .read(|state| {
            let all: Vec<_> = state.routes.values().collect();
            let items: Map<String, Value> = page
                .slice(&all)
                .into_iter()
                .map(|route| {
                    let mut data = route.data.clone();
                    if let Value::Object(fields) = &mut data {
                        fields.insert("last_activity".into(), iso(route.last_activity));
                    }
                    let spec = if route.path == "/" {
                        "/".to_owned()
                    } else {
                        format!("{}/", route.path)
                    };
                    (
                        spec.clone(),
                        json!({ "routespec": spec, "target": route.target, "data": data }),
                    )
                })
                .collect();
            (items, all.len())
        })
        .await?;
    Ok(page.respond(Value::Object(items), total, &headers, &uri))
}

/// Routes are replicated state that every edge follows, so there is nothing to
/// re-synchronise; answered as JupyterHub does.
async fn proxy_sync(caller: Caller) -> Result<StatusCode, ApiError> {
    caller.require_everywhere("proxy")?;
    Ok(StatusCode::OK)
}

async fn list_services(State(hub): State<Hub>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_any(&["list:services"])?;
    let roles = &hub.settings.roles;
    let services = hub
        .raft
        .read(|state| {
            let view = View {
                scopes: &caller.scopes,
                state,
                roles,
            };
            state
                .services
                .values()
                .filter(|s| caller.scopes.allows("list:services", Resource::Service(&s.name), state))
                .filter_map(|s| view.service(s).map(|model| (s.name.clone(), model)))
                .collect::<Map<String, Value>>()
        })
        .await?;
    Ok(Json(Value::Object(services)))
}

async fn get_service(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let roles = &hub.settings.roles;
    hub.raft
        .read(|state| {
            caller.authorize(
                state,
                &["read:services", "read:services:name", "read:roles:services"],
                Resource::Service(&name),
            )?;
            let service = state
                .services
                .get(&name)
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such service: {name}")))?;
            View {
                scopes: &caller.scopes,
                state,
                roles,
            }
            .service(service)
            .map(Json)
            .ok_or_else(ApiError::no_access)
        })
        .await?
}
