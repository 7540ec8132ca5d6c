//! `/info`, `/proxy` and `/services…`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ganymede_model::oauth::{OAuthClient, OAuthClientOwner};
use ganymede_model::rbac::{Resource, Subject, resolve_for_token};
use ganymede_model::{Command, TokenOwner, TokenRequest};
use ganymede_raft::Applied;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiQuery, OptionalApiJson, Page, PageQuery, empty};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::{iso, now_millis};
use crate::tokens::hash_token;
use crate::{Hub, JUPYTERHUB_VERSION};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/info", get(info))
        .route("/proxy", get(proxy_table).post(proxy_sync))
        .route("/services", get(list_services))
        .route("/shutdown", axum::routing::post(shutdown))
        .route(
            "/services/{service}",
            get(get_service).post(create_service).delete(delete_service),
        )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ShutdownBody {
    #[serde(default)]
    servers: Option<bool>,
    /// The edges are their own processes with their own lifecycle: accepted, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    proxy: Option<bool>,
}

/// JupyterHub's `POST /shutdown`, for one replica of a cluster: this replica stops (the
/// others keep serving while a quorum remains), after stopping every server when
/// `servers` is true. Single-user servers outlive a replica by default, as they must
/// for failover.
async fn shutdown(
    State(hub): State<Hub>,
    caller: Caller,
    OptionalApiJson(body): OptionalApiJson<ShutdownBody>,
) -> Result<Response, ApiError> {
    caller.require_everywhere("shutdown")?;
    let body = body.unwrap_or_default();
    if body.servers == Some(true) {
        let active: Vec<(String, String)> = hub
            .raft
            .read(|state| {
                state
                    .users
                    .values()
                    .flat_map(|user| user.active_servers().map(|s| (user.name.clone(), s.name.clone())))
                    .collect()
            })
            .await?;
        for (user, server) in active {
            let command = Command::RequestStop {
                user,
                server,
                remove: false,
                at: now_millis(),
            };
            hub.raft.propose(command).await?;
        }
    }
    tracing::warn!(by = ?caller.owner, "shutdown requested through the API");
    hub.request_shutdown();
    Ok((StatusCode::ACCEPTED, Json(json!({"message": "Shutting down Hub"}))).into_response())
}

async fn info(caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_everywhere("read:hub")?;
    let ours = env!("CARGO_PKG_VERSION");
    Ok(Json(json!({
        "version": JUPYTERHUB_VERSION,
        // Strings, as clients expect; there is no Python in the hub.
        "python": format!("none (Ganymede {} is Rust)", env!("CARGO_PKG_VERSION")),
        "sys_executable": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
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
    ApiQuery(query): ApiQuery<PageQuery>,
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
            let view = caller.view(state, roles);
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
            caller
                .view(state, roles)
                .service(service)
                .map(Json)
                .ok_or_else(ApiError::no_access)
        })
        .await?
}

/// Services made through the API (JupyterHub's unmanaged services). With an
/// `api_token` and a URL or OAuth fields, the service is also an OAuth client whose
/// secret is that token, as in JupyterHub. `info`, `display` and `oauth_no_confirm` are
/// accepted and not kept.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateServiceBody {
    #[serde(default)]
    admin: bool,
    api_token: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    oauth_client_id: Option<String>,
    #[serde(default)]
    oauth_redirect_uri: Option<String>,
    #[serde(default)]
    oauth_client_allowed_scopes: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    info: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    display: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    oauth_no_confirm: Option<bool>,
}

impl CreateServiceBody {
    /// The OAuth client this spec asks for, if any.
    fn oauth_client(&self, name: &str, at: i64) -> Result<Option<OAuthClient>, ApiError> {
        let wants_oauth = self.url.is_some() || self.oauth_client_id.is_some() || self.oauth_redirect_uri.is_some();
        let Some(token) = self.api_token.as_deref().filter(|_| wants_oauth) else {
            return Ok(None);
        };
        // Kept as written: bare filters (`!user`) bind to whoever authorizes, later.
        resolve_for_token(&self.oauth_client_allowed_scopes, Subject::User("-"), Some("-/-"))
            .map_err(|err| ApiError::bad_request(format!("oauth_client_allowed_scopes: {err}")))?;
        let allowed_scopes = self.oauth_client_allowed_scopes.clone();
        Ok(Some(OAuthClient {
            id: self
                .oauth_client_id
                .clone()
                .unwrap_or_else(|| format!("service-{name}")),
            description: name.to_owned(),
            secret_hash: hash_token(token),
            redirect_uri: self
                .oauth_redirect_uri
                .clone()
                .unwrap_or_else(|| format!("/services/{}/oauth_callback", crate::render::quote(name))),
            allowed_scopes,
            owner: OAuthClientOwner::Service { name: name.to_owned() },
            created: at,
        }))
    }
}

/// Services that the configuration makes (the operator's `admin` service) cannot be
/// changed through the API.
const CONFIG_SERVICES: &[&str] = &["admin"];

async fn create_service(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalApiJson(body): OptionalApiJson<CreateServiceBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let exists = hub
        .raft
        .read(|state| {
            caller.authorize(state, &["admin:services"], Resource::Service(&name))?;
            Ok::<_, ApiError>(state.services.contains_key(&name))
        })
        .await??;
    if exists {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Service {name} already exists"),
        ));
    }
    if body.admin && !caller.owner_is_admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Only admins can create admin services",
        ));
    }
    if let Some(token) = &body.api_token
        && !(8..=64).contains(&token.len())
    {
        return Err(ApiError::bad_request("api_token must be 8 to 64 characters"));
    }
    let at = now_millis();
    let client = body.oauth_client(&name, at)?;
    let command = Command::EnsureService {
        name: name.clone(),
        admin: body.admin,
        roles: Vec::new(),
        at,
    };
    if let Applied::Rejected(rejection) = hub.raft.propose(command).await? {
        return Err(rejection.into());
    }
    if let Some(token) = &body.api_token {
        let command = Command::IssueToken(TokenRequest {
            hash: hash_token(token),
            owner: TokenOwner::Service(name.clone()),
            scopes: vec!["inherit".into()],
            note: "api_token of the service".into(),
            expires_at: None,
            at,
        });
        if let Applied::Rejected(rejection) = hub.raft.propose(command).await? {
            return Err(rejection.into());
        }
    }
    if let Some(client) = client
        && let Applied::Rejected(rejection) = hub.raft.propose(Command::RegisterOAuthClient { client, at }).await?
    {
        return Err(rejection.into());
    }
    let roles = &hub.settings.roles;
    let model = hub
        .raft
        .read(|state| {
            let view = caller.view(state, roles);
            state.services.get(&name).and_then(|s| view.service(s))
        })
        .await?
        .unwrap_or_else(|| json!({"kind": "service", "name": name}));
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

async fn delete_service(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    hub.raft
        .read(|state| {
            caller.authorize(state, &["admin:services"], Resource::Service(&name))?;
            if state.services.contains_key(&name) {
                Ok(())
            } else {
                Err(ApiError::new(StatusCode::NOT_FOUND, format!("No such service: {name}")))
            }
        })
        .await??;
    if CONFIG_SERVICES.contains(&name.as_str()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Service {name} is defined by the configuration and cannot be deleted"),
        ));
    }
    match hub
        .raft
        .propose(Command::DeleteService { name, at: now_millis() })
        .await?
    {
        Applied::Rejected(rejection) => Err(rejection.into()),
        _ => Ok(empty(StatusCode::OK)),
    }
}
