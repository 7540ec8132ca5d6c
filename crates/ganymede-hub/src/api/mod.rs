//! Routes under `/hub`: JupyterHub's REST API and Ganymede's extensions.

mod cluster;
mod users;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::{Hub, JUPYTERHUB_VERSION};

pub fn router(hub: Hub) -> Router {
    let max_body_bytes = hub.limits.max_body_bytes;
    let api = Router::new()
        .route("/", get(version))
        .route("/health", get(health).head(health))
        .merge(users::routes())
        .merge(cluster::routes())
        .fallback(not_found);
    // Both `/hub/api` (single-user servers) and `/hub/api/` (the idle culler) are the
    // version endpoint; the nested "/" answers the first.
    Router::new()
        .nest("/hub/api", api)
        .route("/hub/api/", get(version))
        .route("/hub/health", get(health).head(health))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(version_header))
        .with_state(hub)
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

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// A JSON body whose every failure (malformed, wrong type, unknown field, too large,
/// wrong content type) is answered in JupyterHub's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::JsonDataError(err) => format!("Invalid JSON body: {}", err.body_text()),
        JsonRejection::JsonSyntaxError(err) => format!("Malformed JSON body: {}", err.body_text()),
        JsonRejection::MissingJsonContentType(_) => "Request body must be JSON (Content-Type: application/json)".into(),
        other if status == StatusCode::PAYLOAD_TOO_LARGE => format!("Request body too large: {}", other.body_text()),
        other => other.body_text(),
    };
    // axum answers a JSON body that does not fit the type with 422; JupyterHub says 400.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, message)
}

/// An optional JSON body: absent or empty means `None`.
pub struct OptionalApiJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                ApiError::new(
                    rejection.status(),
                    format!("Cannot read request body: {}", rejection.body_text()),
                )
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(None));
        }
        serde_json::from_slice(&bytes)
            .map(|value| OptionalApiJson(Some(value)))
            .map_err(|err| ApiError::bad_request(format!("Invalid JSON body: {err}")))
    }
}
