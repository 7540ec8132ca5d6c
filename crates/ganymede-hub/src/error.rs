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

    pub fn no_such_user(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("No such user: {name}"))
    }

    /// A scope held only for other resources, or a resource that does not exist: the
    /// two look alike on purpose.
    pub fn no_access() -> Self {
        Self::new(StatusCode::NOT_FOUND, "No access to resources or resources not found")
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
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // JupyterHub suggests a retry within a few seconds, jittered.
            let seconds = 10 + rand::random::<u8>() % 20;
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(u32::from(seconds)));
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let status = match &rejection {
            Rejection::UserExists { .. }
            | Rejection::AllUsersExist { .. }
            | Rejection::TokenExists
            | Rejection::GroupExists { .. }
            | Rejection::ServerExists { .. } => StatusCode::CONFLICT,
            Rejection::UserNotFound { .. }
            | Rejection::ServerNotFound { .. }
            | Rejection::TokenNotFound { .. }
            | Rejection::ServiceNotFound { .. }
            | Rejection::GroupNotFound { .. } => StatusCode::NOT_FOUND,
            Rejection::TooManyPendingSpawns { .. } | Rejection::TooManyActiveServers { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Rejection::AlreadyInitialized => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &rejection {
            Rejection::UserExists { name } => format!("User {name} already exists"),
            Rejection::AllUsersExist { count } => format!("All {count} users already exist"),
            Rejection::UserNotFound { name } => format!("No such user: {name}"),
            Rejection::InvalidUserName { name } => format!("Invalid username: {name}"),
            Rejection::InvalidServerName { name } => format!("Invalid server_name: '{name}'"),
            Rejection::ServerNotFound { user, server } => format!("{user} has no server named '{server}'"),
            Rejection::GroupNotFound { name } => format!("No such group: {name}"),
            Rejection::GroupExists { name } => format!("Group {name} already exists"),
            Rejection::ServerActive { user, server } => {
                format!("{} is already running", log_name(user, server))
            }
            Rejection::TooManyPendingSpawns { .. } => {
                "Too many users trying to log in right now. Try again soon.".into()
            }
            Rejection::TooManyActiveServers { .. } => "Active user limit exceeded. Try again in a few minutes.".into(),
            Rejection::NamedServerLimit { user, limit } => {
                format!(
                    "User {user} already has the maximum of {limit} named servers.  One must be deleted before a new server can be created"
                )
            }
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

/// How JupyterHub names a server in messages: `alice` for the default server,
/// `alice:lab` for a named one.
pub(crate) fn log_name(user: &str, server: &str) -> String {
    if server.is_empty() {
        user.to_owned()
    } else {
        format!("{user}:{server}")
    }
}
