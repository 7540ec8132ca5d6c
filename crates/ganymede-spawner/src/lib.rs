//! Starting single-user servers. A [`Spawner`] starts, observes and stops one server
//! per `spawn_id`; every call is idempotent on it, so a reconciler that lost track
//! (a restart, a failover) can re-observe before acting. What a spawner needs to find
//! its server again (pid, port, pod name…) is [`Started::state`], which the hub keeps
//! in the server's replicated record.

mod env;
mod local;
mod prefork;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use env::{DEFAULT_ENV_KEEP, jupyterhub_env};
pub use local::{LocalProcessSpawner, LocalSettings, RunAs, SPAWN_MARKER, processes_marked};
pub use prefork::{DEFAULT_PRELOAD, PREFORK_MARKER};

/// Everything a spawner needs to start one server, JupyterHub's `Spawner.get_env()`
/// inputs included.
#[derive(Clone, Serialize, Deserialize)]
pub struct SpawnSpec {
    pub user: String,
    /// `""` for the default server.
    pub server: String,
    pub spawn_id: u64,
    /// The server's API token (`$JUPYTERHUB_API_TOKEN`), also its OAuth client secret.
    pub api_token: String,
    /// The hub API as the server reaches it, e.g. `http://127.0.0.1:8081/hub/api`.
    pub hub_api_url: String,
    /// The hub's base URL without `hub/`, e.g. `/`.
    pub base_url: String,
    /// `/user/alice/` or `/user/alice/gpu/`: the server's base URL.
    pub service_prefix: String,
    /// `jupyterhub-user-alice`.
    pub client_id: String,
    /// `/user/alice/oauth_callback`.
    pub oauth_callback_url: String,
    /// Who may use the server (`$JUPYTERHUB_OAUTH_ACCESS_SCOPES`).
    pub oauth_access_scopes: Vec<String>,
    /// `$JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES`.
    pub oauth_client_allowed_scopes: Vec<String>,
    /// The hub's public origin (`$JUPYTERHUB_PUBLIC_URL`), `""` when not configured.
    pub public_url: String,
    pub user_options: serde_json::Value,
}

impl fmt::Debug for SpawnSpec {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnSpec")
            .field("user", &self.user)
            .field("server", &self.server)
            .field("spawn_id", &self.spawn_id)
            .field("api_token", &"<redacted>")
            .field("service_prefix", &self.service_prefix)
            .finish_non_exhaustive()
    }
}

/// A started server: where it listens and how to find it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// The route target, e.g. `http://127.0.0.1:51234` (no prefix).
    pub url: String,
    /// Spawner-specific, kept in the replicated server record.
    pub state: serde_json::Value,
}

/// One spawn as the hub's record knows it.
#[derive(Clone, Copy, Debug)]
pub struct SpawnRef<'a> {
    pub user: &'a str,
    pub server: &'a str,
    pub spawn_id: u64,
    /// [`Started::state`], or `Null` when the spawn never got that far.
    pub state: &'a serde_json::Value,
}

/// What `poll` saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    Running,
    /// Gone; why, for the user ("exited with status 1").
    Exited(String),
}

/// A step of a spawn, shown on the progress bar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0–100.
    pub progress: u8,
    pub message: String,
}

pub type ProgressSink = tokio::sync::mpsc::UnboundedSender<Progress>;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command could not be run at all (not found, not executable).
    #[error("could not run {command}: {reason}")]
    Command { command: String, reason: String },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Config(String),
}

/// Starts, observes and stops single-user servers. Each call is idempotent on
/// `spawn_id`: starting a spawn that is already running answers where it runs; stopping
/// one that is gone succeeds.
pub trait Spawner: Send + Sync + 'static {
    /// Launches the server and answers where it will listen; readiness is the caller's
    /// to wait for (it polls `<url><prefix>api`).
    fn start<'a>(
        &'a self,
        spec: &'a SpawnSpec,
        progress: &'a ProgressSink,
    ) -> BoxFuture<'a, Result<Started, SpawnError>>;

    /// Whether the spawn is still running.
    fn poll<'a>(&'a self, spawn: SpawnRef<'a>) -> BoxFuture<'a, Observed>;

    /// Stops the spawn (gracefully, then not) and everything it started.
    fn stop<'a>(&'a self, spawn: SpawnRef<'a>) -> BoxFuture<'a, Result<(), SpawnError>>;

    /// The spawns this spawner still runs that nobody asked for; `keep` says which
    /// spawn ids the record still wants. Used after a restart to leave nothing orphaned.
    fn sweep<'a>(&'a self, keep: &'a (dyn Fn(u64) -> bool + Send + Sync)) -> BoxFuture<'a, Vec<u64>>;
}

/// JupyterHub's extra environment for one spawn (`Spawner.environment`).
pub type Environment = BTreeMap<String, String>;
