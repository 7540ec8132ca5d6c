//! Ganymede's extension: backups and state digests under `/hub/api/ganymede/` (admin).
//!
//! - `GET /ganymede/backup` — the whole replicated state as of one applied entry, after a
//!   read barrier (see `ganymede_raft::Backup` for the file). It holds token, session and
//!   password hashes and the cluster secret, so it takes every scope of the `admin`
//!   role, and it is never cached. `?local=1` skips the read barrier: this replica's
//!   state as applied so far, for a cluster that has lost its majority (no leader).
//! - `GET /ganymede/digest` — this replica's applied index and state digest: two
//!   replicas (or a backup and the cluster restored from it) at one index agree.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ganymede_model::rbac::ADMIN_ROLE_SCOPES;
use ganymede_raft::{BackupError, StateDigest};
use serde::Deserialize;
use tracing::info;

use super::{ApiQuery, flag};
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/ganymede/backup", get(backup))
        .route("/ganymede/digest", get(digest))
}

fn backup_error(err: BackupError) -> ApiError {
    match err {
        BackupError::Read(read) => read.into(),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot take a backup: {other}"),
        ),
    }
}

#[derive(Deserialize)]
struct BackupQuery {
    /// `local=1`: this replica's applied state, without a leader's read barrier.
    local: Option<String>,
}

async fn backup(
    State(hub): State<Hub>,
    caller: Caller,
    ApiQuery(query): ApiQuery<BackupQuery>,
) -> Result<Response, ApiError> {
    // Everything the admin role may do, everywhere: the file is the whole hub.
    for scope in ADMIN_ROLE_SCOPES {
        caller.require_everywhere(scope)?;
    }
    let backup = if flag(&query.local) {
        hub.raft.backup_local().await
    } else {
        hub.raft.backup().await
    };
    let backup = backup.map_err(backup_error)?;
    let bytes = backup.to_bytes().map_err(backup_error)?;
    let header = &backup.header;
    info!(
        applied_index = header.applied_index,
        applied_term = header.applied_term,
        bytes = bytes.len(),
        state_digest = %header.state_digest,
        "backup taken"
    );
    // Off the response's time: a `--local` backup may come from a replica that cannot
    // reach a majority, where the record would wait out the proposal timeout.
    let target = format!(
        "applied index {}{}",
        header.applied_index,
        if flag(&query.local) { " (local)" } else { "" }
    );
    let origin = ganymede_raft::origin::current().unwrap_or_default();
    let recorder = hub.clone();
    tokio::spawn(ganymede_raft::origin::scope(origin, async move {
        crate::audit::record_admin_action(&recorder, ganymede_model::audit::AdminAction::Backup, target).await;
    }));
    let disposition = format!("attachment; filename=\"ganymede-{}.backup\"", header.applied_index);
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

async fn digest(State(hub): State<Hub>, caller: Caller) -> Result<Json<StateDigest>, ApiError> {
    // Hashing the whole state is work: admins only, like the backup it is compared with.
    for scope in ADMIN_ROLE_SCOPES {
        caller.require_everywhere(scope)?;
    }
    Ok(Json(hub.raft.state_digest().await.map_err(backup_error)?))
}
