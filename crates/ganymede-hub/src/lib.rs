//! A hub replica's HTTP face: JupyterHub's REST API under `/hub/api` on axum, with
//! token authentication and errors in JupyterHub's JSON shape. Every write becomes a
//! command proposed through [`ganymede_raft::RaftHandle`]; reads are linearizable.
//!
//! This crate is the only one that knows HTTP status codes.

mod api;
mod auth;
mod edge_feed;
mod error;
mod provision;
mod proxy_api;
mod render;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use ganymede_raft::RaftHandle;

pub use edge_feed::EdgeFeed;
pub use error::ApiError;
pub use provision::provision;
pub use proxy_api::proxy_router;

/// The version this hub reports. Single-user servers parse it with PEP 440 and warn
/// (or worse) when its major differs from theirs, so it is JupyterHub's 6.x with our
/// own version as a local label.
pub const JUPYTERHUB_VERSION: &str = concat!("6.1.1+ganymede.", env!("CARGO_PKG_VERSION"));

/// Limits the API enforces on its callers.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// What every handler needs.
#[derive(Clone)]
pub struct Hub {
    pub raft: RaftHandle,
    pub limits: Arc<ApiLimits>,
}

/// The hub's HTTP routes.
pub fn router(hub: Hub) -> Router {
    api::router(hub)
}
