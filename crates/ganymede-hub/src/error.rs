//! API errors in JupyterHub's shape: `{"status": <code>, "message": <text or null>}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ganymede_model::Rejection;
use ganymede_raft::{ProposeError, ReadError};

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: Some(message.into()),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: None,
        }
    }

    /// JupyterHub's answer to a missing or unknown token: 403, never 401.
    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Missing or invalid credentials.")
    }

    pub fn requires_scope(scopes: &[&str]) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!(
                "Action is not authorized with current scopes; requires any of [{}]",
                scopes.join(", ")
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "status": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let status = match &rejection {
            Rejection::UserExists { .. } | Rejection::AllUsersExist { .. } | Rejection::TokenExists => {
                StatusCode::CONFLICT
            }
            Rejection::UserNotFound { .. }
            | Rejection::ServerNotFound { .. }
            | Rejection::TokenNotFound { .. }
            | Rejection::ServiceNotFound { .. } => StatusCode::NOT_FOUND,
            Rejection::AlreadyInitialized => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &rejection {
            Rejection::UserExists { name } => format!("User {name} already exists"),
            Rejection::AllUsersExist { count } => format!("All {count} users already exist"),
            Rejection::UserNotFound { name } => format!("No such user: {name}"),
            Rejection::InvalidUserName { name } => format!("Invalid username: {name}"),
            Rejection::InvalidServerName { name } => format!("Invalid server_name: '{name}'"),
            other => other.to_string(),
        };
        ApiError::new(status, message)
    }
}

impl From<ProposeError> for ApiError {
    fn from(err: ProposeError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the hub cluster could not commit the change: {err}"),
        )
    }
}

impl From<ReadError> for ApiError {
    fn from(err: ReadError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the hub cluster could not serve the read: {err}"),
        )
    }
}
