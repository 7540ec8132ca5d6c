//! Routes under `/hub`: JupyterHub's REST API and Ganymede's extensions.

mod backup;
mod cluster;
mod events;
mod groups;
mod misc;
mod servers;
mod tokens;
mod users;

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{Hub, JUPYTERHUB_VERSION};

pub fn router(hub: Hub) -> Router {
    let max_body_bytes = hub.limits.max_body_bytes;
    let api = Router::new()
        .route("/", get(version))
        .route("/health", get(health).head(health))
        .route("/metrics", get(metrics))
        .merge(users::routes())
        .merge(servers::routes())
        .merge(tokens::routes())
        .merge(groups::routes())
        .merge(misc::routes())
        .merge(cluster::routes())
        .merge(backup::routes())
        .merge(events::routes())
        .merge(crate::oauth_provider::routes())
        .fallback(not_found);
    // Both `/hub/api` (single-user servers) and `/hub/api/` (the idle culler) are the
    // version endpoint; the nested "/" answers the first.
    Router::new()
        .nest("/hub/api", api)
        .route("/hub/api/", get(version))
        .route("/hub/health", get(health).head(health))
        .route("/hub/metrics", get(metrics))
        .merge(crate::pages::routes())
        .route_layer(axum::middleware::from_fn(record_request))
        .fallback(crate::pages::not_found_page)
        .layer(axum::middleware::from_fn(method_errors))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(version_header))
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            crate::audit::request_origin,
        ))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(hub)
}

/// The header a request's id travels in: set by the edge that forwarded it (or by the
/// client), made here otherwise, and returned on the response.
const REQUEST_ID: &str = "x-request-id";

/// One span per request, carrying its id, so that every log line the request causes
/// (on this replica, and on the edge that forwarded it) can be found by it.
async fn request_span(mut request: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_request_id(id))
        .map(str::to_owned);
    let id = given.unwrap_or_else(new_request_id);
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    // At ERROR level so the filter never drops it: a hub logging only warnings must
    // still say which request each warning belongs to.
    let span = tracing::error_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// An id a client may choose: short, and nothing that could forge a log line.
pub(crate) fn is_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `jupyterhub_request_duration_seconds` for every request that matched a route (the
/// route's pattern names its handler; unmatched paths would make the labels unbounded).
async fn record_request(request: Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    if let Some(route) = route {
        crate::metrics::request(method, &route, response.status().as_u16(), started.elapsed());
    }
    response
}

/// Every response says which JupyterHub it speaks for; single-user servers check it.
async fn version_header(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-jupyterhub-version", HeaderValue::from_static(JUPYTERHUB_VERSION));
    response
}

async fn version() -> Response {
    let mut response = Json(serde_json::json!({ "version": JUPYTERHUB_VERSION })).into_response();
    response
        .headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

/// Liveness: answers while the process serves HTTP, without touching Raft.
async fn health() -> impl IntoResponse {
    (StatusCode::OK, [("content-type", "text/html; charset=UTF-8")], "")
}

/// Prometheus' scrape (`/hub/metrics`, `/hub/api/metrics`): `read:metrics` unless
/// `authenticate_prometheus` is off, as in JupyterHub.
async fn metrics(
    axum::extract::State(hub): axum::extract::State<Hub>,
    caller: Result<crate::auth::Caller, ApiError>,
) -> Result<Response, ApiError> {
    if hub.settings.authenticate_prometheus {
        caller?.require_everywhere("read:metrics")?;
    }
    Ok((
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        hub.render_metrics(),
    )
        .into_response())
}

/// A method a path does not have: JupyterHub's JSON error (axum's 405 has no body), and
/// `OPTIONS` answered with the `Allow` list, as JupyterHub's API handlers do.
async fn method_errors(request: Request, next: axum::middleware::Next) -> Response {
    let options = request.method() == axum::http::Method::OPTIONS;
    let api = request.uri().path().starts_with("/hub/api");
    let response = next.run(request).await;
    if !api || response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let mut answer = if options {
        empty(StatusCode::OK)
    } else {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response()
    };
    if let Some(allow) = allow {
        answer.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    answer
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// A JSON body whose every failure (malformed, wrong type, unknown field, too large) is
/// answered in JupyterHub's error shape. Like JupyterHub, the body is parsed whatever
/// its `Content-Type` says: token-authenticated callers (curl `-d`) often send it as a
/// form, and cookie-authenticated form posts are already refused before this.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match OptionalApiJson::<T>::from_request(request, state).await? {
            OptionalApiJson(Some(value)) => Ok(ApiJson(value)),
            OptionalApiJson(None) => Err(ApiError::bad_request("A JSON request body is required")),
        }
    }
}

/// Query parameters as JupyterHub (tornado's `get_argument`) reads them: a parameter
/// given twice takes its last value; every failure is a JSON 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let last_wins: std::collections::BTreeMap<String, String> =
            form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        serde_json::to_value(last_wins)
            .and_then(serde_json::from_value)
            .map(ApiQuery)
            .map_err(|err| ApiError::bad_request(format!("Invalid query: {err}")))
    }
}

/// An optional JSON body: absent or empty means `None`.
pub struct OptionalApiJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("Request body too large: {}", rejection.body_text())
                } else {
                    format!("Cannot read request body: {}", rejection.body_text())
                };
                ApiError::new(status, message)
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(None));
        }
        // With the path of a misfit field in the message, as axum's `Json` gives it.
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map(|value| OptionalApiJson(Some(value)))
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if inner.is_data() {
                    ApiError::bad_request(format!("Invalid JSON body: {path}: {inner}"))
                } else {
                    ApiError::bad_request(format!("Malformed JSON body: {inner}"))
                }
            })
    }
}

/// JupyterHub's page limit: anything above is clamped, and it is the default too when
/// the client did not ask for pagination.
pub const MAX_PAGE: usize = 200;

/// `offset` and `limit` as a client gave them.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    pub offset: Option<String>,
    pub limit: Option<String>,
}

/// One page of a listing, answered as a bare list or, when the client asked with
/// `Accept: application/jupyterhub-pagination+json`, with `_pagination` and an absolute
/// `next.url`.
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    paginated: bool,
}

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

impl Page {
    pub fn new(query: &PageQuery, headers: &HeaderMap) -> Result<Page, ApiError> {
        let offset = parse_count(&query.offset, "offset")?.unwrap_or(0);
        let limit = parse_count(&query.limit, "limit")?
            .unwrap_or(MAX_PAGE)
            .clamp(1, MAX_PAGE);
        let paginated = headers
            .get_all(axum::http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|accept| {
                accept.split(',').any(|item| {
                    item.trim()
                        .eq_ignore_ascii_case("application/jupyterhub-pagination+json")
                })
            });
        Ok(Page {
            offset,
            limit,
            paginated,
        })
    }

    /// The slice of `all` this page covers.
    pub fn slice<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all.iter().skip(self.offset).take(self.limit).cloned().collect()
    }

    /// The response: `items` as a list (or an object, for `/proxy`), `total` counted
    /// before paging. `next.url` is built from the URL the request arrived on, keeping
    /// its other parameters.
    pub fn respond(&self, items: Value, total: usize, headers: &HeaderMap, uri: &Uri) -> Json<Value> {
        if !self.paginated {
            return Json(items);
        }
        let next = (self.offset + self.limit < total).then(|| {
            let next_offset = self.offset + self.limit;
            json!({
                "offset": next_offset,
                "limit": self.limit,
                "url": next_url(headers, uri, next_offset, self.limit),
            })
        });
        Json(json!({
            "items": items,
            "_pagination": { "offset": self.offset, "limit": self.limit, "total": total, "next": next },
        }))
    }
}

fn next_url(headers: &HeaderMap, uri: &Uri, offset: usize, limit: usize) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or("localhost");
    let scheme = header("x-forwarded-proto")
        .filter(|proto| *proto == "https")
        .unwrap_or("http");
    let mut params: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("offset=") && !pair.starts_with("limit="))
        .map(str::to_owned)
        .collect();
    params.push(format!("offset={offset}"));
    params.push(format!("limit={limit}"));
    format!("{scheme}://{host}{}?{}", uri.path(), params.join("&"))
}

/// Whether a query flag such as `include_stopped_servers` is on: present and not `0`
/// or `false`, as JupyterHub reads it.
pub fn flag(value: &Option<String>) -> bool {
    value
        .as_deref()
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false"))
}

/// An empty response with JupyterHub's status for it (`text/plain`, no body).
pub fn empty(status: StatusCode) -> Response {
    (status, [("content-type", "text/plain; charset=UTF-8")], "").into_response()
}

/// A scratch state holding what `seed` puts in it (the object a write changed, as it was
/// before) with the write's own events (if `applied` has any) folded in: the object as
/// the write left it.
///
/// Writes answer with the object they changed, read after they commit; by then a
/// concurrent request may have deleted it. A write that took effect must not be answered
/// "not found" (or an error): the client would believe it had not happened. The nemesis
/// test's linearizability checker caught exactly this (a PATCH answered 404 whose change
/// a concurrent read had seen), so such answers fall back to this.
pub(crate) fn as_written(
    seed: impl FnOnce(&mut ganymede_model::State),
    applied: &ganymede_raft::Applied,
) -> ganymede_model::State {
    let mut scratch = ganymede_model::State::default();
    seed(&mut scratch);
    if let ganymede_raft::Applied::Events(events) = applied {
        for event in events {
            ganymede_model::evolve(&mut scratch, event);
        }
    }
    scratch
}

#[cfg(test)]
mod as_written_tests {
    use ganymede_model::{Event, Sequenced, User};
    use ganymede_raft::Applied;

    fn applied(seq: u64, event: Event) -> Applied {
        Applied::Events(vec![Sequenced {
            seq,
            route_seq: None,
            event,
            origin: None,
        }])
    }

    #[test]
    fn a_change_is_folded_into_the_object_as_it_was_before() {
        let before = User {
            name: "alice".into(),
            admin: false,
            created: 1,
            last_activity: Some(5),
            servers: Default::default(),
        };
        let events = applied(
            9,
            Event::UserAdminChanged {
                name: "alice".into(),
                admin: true,
                at: 10,
            },
        );
        let written = super::as_written(
            |scratch| {
                scratch.users.insert("alice".into(), before.clone());
            },
            &events,
        );
        let alice = &written.users["alice"];
        assert!(alice.admin);
        assert_eq!((alice.created, alice.last_activity), (1, Some(5)));
    }

    #[test]
    fn a_creation_alone_makes_the_object() {
        let events = applied(
            3,
            Event::UserCreated {
                name: "bob".into(),
                admin: false,
                at: 7,
            },
        );
        let written = super::as_written(|_| {}, &events);
        assert_eq!(written.users["bob"].created, 7);
    }
}
