//! A hub replica's HTTP face: JupyterHub's REST API under `/hub/api` on axum, with
//! token authentication and errors in JupyterHub's JSON shape. Every write becomes a
//! command proposed through [`ganymede_raft::RaftHandle`]; reads are linearizable.
//!
//! This crate is the only one that knows HTTP status codes.

mod activity;
mod api;
mod audit;
mod auth;
pub mod authenticator;
mod edge_feed;
mod error;
mod home;
pub mod ldap;
mod login_limit;
pub mod metrics;
mod native;
mod oauth_provider;
pub mod oidc;
mod pages;
mod provision;
mod proxy_api;
mod reconciler;
mod render;
mod serve;
pub mod session;
mod spawn_tokens;
mod templates;
mod token_page;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ganymede_model::SpawnLimits;
use ganymede_model::rbac::Roles;
use ganymede_raft::RaftHandle;
use tokio_util::sync::CancellationToken;

pub use activity::ActivityBatcher;
pub use authenticator::{AuthSettings, Authenticator, Login, NativeSettings};
pub use edge_feed::EdgeFeed;
pub use error::ApiError;
pub use ldap::LdapSettings;
pub use login_limit::LoginLimits;
pub use oidc::OidcSettings;
pub use provision::provision;
pub use proxy_api::proxy_router;
pub use reconciler::{Reconciler, SpawnSettings};
pub use serve::{ServeLimits, serve};
pub use spawn_tokens::ServerTokens;

/// The version this hub reports. Single-user servers parse it with PEP 440 and warn
/// (or worse) when its major differs from theirs, so it is JupyterHub's 6.x with our
/// own version as a local label.
pub const JUPYTERHUB_VERSION: &str = concat!("6.1.1+ganymede.", env!("CARGO_PKG_VERSION"));

/// Limits the API enforces on its callers.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Failed logins allowed per user name and per client address.
    pub login: LoginLimits,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_body_bytes: 1024 * 1024,
            login: LoginLimits::default(),
        }
    }
}

/// How the hub behaves: JupyterHub's settings of the same names. Every replica must be
/// configured alike (roles and limits are applied on whichever replica takes a request).
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// The default roles plus custom ones.
    pub roles: Roles,
    /// `concurrent_spawn_limit`, `active_server_limit`, `named_server_limit_per_user`.
    pub spawn_limits: SpawnLimits,
    /// How long `POST …/server` waits for a server to be ready before answering 202.
    pub slow_spawn_timeout: Duration,
    /// How long `DELETE …/server` waits for a server to stop before answering 202.
    pub slow_stop_timeout: Duration,
    /// `allow_named_servers`.
    pub allow_named_servers: bool,
    /// `token_expires_in_max_seconds`: the longest `expires_in` a token may ask for.
    pub token_expires_in_max: Option<Duration>,
    /// `authenticate_prometheus`: whether `/hub/metrics` needs `read:metrics`.
    pub authenticate_prometheus: bool,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            roles: Roles::default(),
            spawn_limits: SpawnLimits {
                concurrent_spawns: Some(100),
                active_servers: None,
                named_servers_per_user: None,
            },
            slow_spawn_timeout: Duration::from_secs(10),
            slow_stop_timeout: Duration::from_secs(10),
            allow_named_servers: true,
            token_expires_in_max: None,
            authenticate_prometheus: true,
        }
    }
}

/// What every handler needs.
#[derive(Clone)]
pub struct Hub {
    pub raft: RaftHandle,
    pub limits: Arc<ApiLimits>,
    pub settings: Arc<HubSettings>,
    pub auth: Arc<AuthSettings>,
    pub activity: Arc<ActivityBatcher>,
    /// The OpenID provider's metadata, once discovered.
    pub oidc: Arc<oidc::Discovery>,
    /// Plaintext API tokens of the servers this replica asked to start.
    pub server_tokens: Arc<ServerTokens>,
    /// Stops this replica (`POST /shutdown`); set by whoever runs the hub.
    shutdown: Option<CancellationToken>,
    /// What `/hub/metrics` serves: the process's Prometheus recorder, if one is installed.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Derived from the replicated cluster secret once it is known.
    cookie_key: Arc<std::sync::OnceLock<session::CookieKey>>,
    /// Bounds how many refused requests this replica puts on the audit record.
    pub(crate) denied: Arc<audit::DeniedLimiter>,
    /// Failed logins by name and address (per replica).
    pub(crate) logins: Arc<login_limit::LoginLimiter>,
}

impl Hub {
    pub fn new(raft: RaftHandle, limits: ApiLimits, settings: HubSettings, auth: AuthSettings) -> Self {
        Hub {
            raft,
            logins: Arc::new(login_limit::LoginLimiter::new(limits.login.clone())),
            limits: Arc::new(limits),
            settings: Arc::new(settings),
            auth: Arc::new(auth),
            activity: Arc::new(ActivityBatcher::default()),
            server_tokens: Arc::default(),
            oidc: Arc::default(),
            shutdown: None,
            metrics: None,
            cookie_key: Arc::default(),
            denied: Arc::default(),
        }
    }

    /// Lets `POST /hub/api/shutdown` stop this replica by cancelling `shutdown`.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Serves `handle`'s metrics at `/hub/metrics` and `/hub/api/metrics`.
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The metrics text, in Prometheus' exposition format.
    pub fn render_metrics(&self) -> String {
        self.metrics.as_ref().map(|handle| handle.render()).unwrap_or_default()
    }

    /// Cancelled when this replica stops (never, for a hub run without `with_shutdown`).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone().unwrap_or_default()
    }

    /// Stops this replica a moment from now, once the current response is on its way.
    pub fn request_shutdown(&self) {
        if let Some(shutdown) = self.shutdown.clone() {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                shutdown.cancel();
            });
        }
    }

    /// Where `user`'s server `server` is in its life, as this replica has applied it.
    pub fn server_phase(&self, user: &str, server: &str) -> Option<ganymede_model::ServerPhase> {
        self.raft
            .read_local(|state| state.users.get(user)?.servers.get(server).map(|s| s.phase))
    }

    /// The key cookies are signed with; `None` until the cluster secret is committed.
    pub async fn cookie_key(&self) -> Option<session::CookieKey> {
        if let Some(key) = self.cookie_key.get() {
            return Some(key.clone());
        }
        let secret = self
            .raft
            .read_local(|state| state.cluster.as_ref().map(|c| c.cluster_secret.expose().to_owned()))?;
        Some(
            self.cookie_key
                .get_or_init(|| session::CookieKey::derive(&secret))
                .clone(),
        )
    }

    /// The hub's own background work (committing gathered activity, the cluster-wide
    /// gauges, the runtime's responsiveness); runs until `shutdown`.
    pub async fn run_background(self, shutdown: CancellationToken) {
        tokio::join!(
            self.activity.run(self.raft.clone(), shutdown.clone()),
            publish_cluster_gauges(self.raft.clone(), shutdown.clone()),
            metrics::measure_event_loop(shutdown),
        );
    }
}

/// How often the leader recounts users, running servers and active users.
const CLUSTER_GAUGES_EVERY: Duration = Duration::from_secs(10);

/// The leader publishes the cluster-wide gauges; the other replicas publish zeros (see
/// [`metrics`]).
async fn publish_cluster_gauges(raft: RaftHandle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(CLUSTER_GAUGES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // A leader cut off from the others believes it leads until its lease runs out;
        // it must not count alongside the new leader meanwhile.
        let gauges = if raft.leads_with_quorum(CLUSTER_GAUGES_EVERY / 2) {
            let now = render::now_millis();
            raft.read_local(|state| metrics::ClusterGauges::of(state, now))
        } else {
            metrics::ClusterGauges::default()
        };
        gauges.publish();
    }
}

/// The hub's HTTP routes.
pub fn router(hub: Hub) -> Router {
    api::router(hub)
}
