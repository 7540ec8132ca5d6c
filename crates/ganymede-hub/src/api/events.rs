//! Ganymede's extension: the audit record at `GET /hub/api/ganymede/events` (admins).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::ApiQuery;
use crate::Hub;
use crate::audit::{self, AuditPage};
use crate::auth::Caller;
use crate::error::ApiError;

pub fn routes() -> Router<Hub> {
    Router::new().route("/ganymede/events", get(events))
}

/// Query values arrive as text (as tornado's `get_argument` gives them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Records after this seq (0: from the oldest kept).
    since: Option<String>,
    /// Records per page, 1..=1000 (default 200).
    limit: Option<String>,
    /// Seconds to wait for a new record when there is none yet (long polling, for
    /// `ganymede events --follow`); at most 30.
    wait: Option<String>,
}

fn number<T: std::str::FromStr>(name: &str, value: Option<&str>, default: T) -> Result<T, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{name} must be a number, not {text:?}"))),
    }
}

async fn events(
    State(hub): State<Hub>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    // The record names every user, address and action: admins only, as JupyterHub's
    // admin pages.
    caller.require_everywhere("admin:users")?;
    if !caller.owner_is_admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Only admins can read the audit log",
        ));
    }
    let since: u64 = number("since", query.since.as_deref(), 0)?;
    let limit: usize = number("limit", query.limit.as_deref(), 200)?;
    let wait: f64 = number("wait", query.wait.as_deref(), 0.0)?;
    if limit == 0 || limit > audit::MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {}",
            audit::MAX_PAGE
        )));
    }
    if !(wait.is_finite() && wait >= 0.0) {
        return Err(ApiError::bad_request("wait must be a number of seconds"));
    }
    let wait = Duration::from_secs_f64(wait.min(audit::MAX_WAIT.as_secs_f64()));
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = hub.raft.subscribe_applied();
    let stopping = hub.shutdown.clone().unwrap_or_default();
    let mut since = since;
    loop {
        let page = read_page(&hub, since, limit).await?;
        if !page.events.is_empty() || tokio::time::Instant::now() >= deadline || stopping.is_cancelled() {
            return Ok(Json(page));
        }
        // Only activity came (or nothing): wait on from there.
        since = page.next_since;
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, applied.changed()) => match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Ok(Json(page)),
            },
            // A replica stopping answers at once: graceful shutdown waits for requests.
            () = stopping.cancelled() => return Ok(Json(page)),
        }
    }
}

async fn read_page(hub: &Hub, since: u64, limit: usize) -> Result<AuditPage, ApiError> {
    let hub = hub.clone();
    tokio::task::spawn_blocking(move || audit::page(&hub, since, limit))
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
}
