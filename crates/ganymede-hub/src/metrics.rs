//! JupyterHub's Prometheus metrics, with the names, types, labels and buckets of
//! `jupyterhub/metrics.py` (6.1), so that dashboards and alerts written for JupyterHub
//! work unchanged against a Ganymede cluster.
//!
//! Per-replica metrics (requests, logins, spawns, stops, polls) are recorded by the
//! replica that did the work, so `sum()` over replicas is the cluster's figure. The
//! cluster-wide gauges (`running_servers`, `total_users`, `active_users`) are computed
//! from the replicated state by the **leader only**; every other replica reports 0, so
//! `sum()` (what the jupyterhub/grafana-dashboards panels use) and `max()` are right
//! and a failover moves the figure from one replica to the next.
//!
//! Not exported: `check_routes_duration_seconds`, `proxy_poll_duration_seconds` and
//! `init_spawners_duration_seconds` measure JupyterHub's reconciliation with an
//! external proxy and its database at start; edges follow the event log instead
//! (`ganymede_edge_route_seq*`), and a replica adopts nothing at start.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// prometheus_client's default buckets, which JupyterHub's other histograms use.
const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const SPAWN_BUCKETS: [f64; 12] = [0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0];
const EVENT_LOOP_BUCKETS: [f64; 15] = [
    0.05, 0.055, 0.06, 0.065, 0.07, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Ganymede's own latencies are far below a second when all is well: finer buckets.
const FAST_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// The histograms that use [`FAST_BUCKETS`].
const FAST_HISTOGRAMS: [&str; 2] = ["ganymede_store_wal_sync_seconds", "ganymede_raft_propose_seconds"];
/// How often the event-loop probe ticks (JupyterHub's `event_loop_interval_resolution`).
const EVENT_LOOP_RESOLUTION: Duration = Duration::from_millis(50);

/// The metric names, under `$JUPYTERHUB_METRICS_PREFIX` (default `jupyterhub`).
pub struct Names {
    pub request_duration: String,
    pub spawn_duration: String,
    pub running_servers: String,
    pub total_users: String,
    pub active_users: String,
    pub login_duration: String,
    pub logout_duration: String,
    pub csp_reports: String,
    pub proxy_add_duration: String,
    pub proxy_delete_duration: String,
    pub server_poll_duration: String,
    pub server_stop: String,
    pub hub_startup_duration: String,
    pub event_loop_interval: String,
}

pub static NAMES: LazyLock<Names> = LazyLock::new(|| {
    let prefix = std::env::var("JUPYTERHUB_METRICS_PREFIX")
        .ok()
        .filter(|prefix| !prefix.is_empty())
        .unwrap_or_else(|| "jupyterhub".into());
    let name = |suffix: &str| format!("{prefix}_{suffix}");
    Names {
        request_duration: name("request_duration_seconds"),
        spawn_duration: name("server_spawn_duration_seconds"),
        running_servers: name("running_servers"),
        total_users: name("total_users"),
        active_users: name("active_users"),
        login_duration: name("login_duration_seconds"),
        logout_duration: name("logout_duration_seconds"),
        csp_reports: name("csp_reports_total"),
        proxy_add_duration: name("proxy_add_duration_seconds"),
        proxy_delete_duration: name("proxy_delete_duration_seconds"),
        server_poll_duration: name("server_poll_duration_seconds"),
        server_stop: name("server_stop_seconds"),
        hub_startup_duration: name("hub_startup_duration_seconds"),
        event_loop_interval: name("event_loop_interval_seconds"),
    }
});

/// Buckets from a comma-separated environment variable, as JupyterHub reads
/// `$JUPYTERHUB_SERVER_{SPAWN,STOP}_DURATION_SECONDS_BUCKETS`; `default` when unset or
/// unreadable (`+Inf` is always added by the exporter, and dropped here if given).
fn buckets_from_env(variable: &str, default: &[f64]) -> Vec<f64> {
    let value = std::env::var(variable).ok();
    buckets_from(variable, value.as_deref(), default)
}

fn buckets_from(variable: &str, value: Option<&str>, default: &[f64]) -> Vec<f64> {
    let Some(text) = value else {
        return default.to_vec();
    };
    let parsed: Result<Vec<f64>, _> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("inf") && !s.eq_ignore_ascii_case("+inf"))
        .map(str::parse::<f64>)
        .collect();
    match parsed {
        Ok(buckets) if !buckets.is_empty() && buckets.windows(2).all(|w| w[0] < w[1]) => buckets,
        _ => {
            tracing::warn!(variable, value = %text, "not an increasing list of numbers: default buckets used");
            default.to_vec()
        }
    }
}

/// A Prometheus recorder builder with JupyterHub's buckets; the hub binary installs it.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    let names = &*NAMES;
    PrometheusBuilder::new()
        .set_buckets(&DEFAULT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(names.spawn_duration.clone()),
            &buckets_from_env("JUPYTERHUB_SERVER_SPAWN_DURATION_SECONDS_BUCKETS", &SPAWN_BUCKETS),
        )?
        .set_buckets_for_metric(
            Matcher::Full(names.server_stop.clone()),
            &buckets_from_env("JUPYTERHUB_SERVER_STOP_DURATION_SECONDS_BUCKETS", &DEFAULT_BUCKETS),
        )?
        .set_buckets_for_metric(Matcher::Full(names.event_loop_interval.clone()), &EVENT_LOOP_BUCKETS)
        .and_then(|builder| {
            FAST_HISTOGRAMS.iter().try_fold(builder, |builder, name| {
                builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), &FAST_BUCKETS)
            })
        })
}

/// Describes every metric and creates each status label set at zero, as JupyterHub
/// does, so that dashboards and alerts see the series before the first event.
pub fn describe() {
    let names = &*NAMES;
    metrics::describe_histogram!(
        names.request_duration.clone(),
        metrics::Unit::Seconds,
        "Request duration for all HTTP requests"
    );
    metrics::describe_histogram!(
        names.spawn_duration.clone(),
        metrics::Unit::Seconds,
        "Time taken for server spawning operation"
    );
    metrics::describe_gauge!(
        names.running_servers.clone(),
        "The number of user servers currently running (the leader's count; 0 on other replicas)"
    );
    metrics::describe_gauge!(
        names.total_users.clone(),
        "Total number of users (the leader's count; 0 on other replicas)"
    );
    metrics::describe_gauge!(
        names.active_users.clone(),
        "Number of users who were active in the given time period (the leader's count; 0 on other replicas)"
    );
    metrics::describe_histogram!(
        names.login_duration.clone(),
        metrics::Unit::Seconds,
        "Duration for all authentication attempts"
    );
    metrics::describe_histogram!(
        names.logout_duration.clone(),
        metrics::Unit::Seconds,
        "Duration for all logout requests"
    );
    metrics::describe_counter!(names.csp_reports.clone(), "Content security policy violation reports");
    metrics::describe_histogram!(
        names.proxy_add_duration.clone(),
        metrics::Unit::Seconds,
        "Duration for adding user routes to the proxy (committing the route)"
    );
    metrics::describe_histogram!(
        names.proxy_delete_duration.clone(),
        metrics::Unit::Seconds,
        "Duration for deleting user routes from the proxy (committing the removal)"
    );
    metrics::describe_histogram!(
        names.server_poll_duration.clone(),
        metrics::Unit::Seconds,
        "Time taken to poll if server is running"
    );
    metrics::describe_histogram!(
        names.server_stop.clone(),
        metrics::Unit::Seconds,
        "Time taken for server stopping operation"
    );
    metrics::describe_histogram!(
        names.hub_startup_duration.clone(),
        metrics::Unit::Seconds,
        "Time taken for Hub to start"
    );
    metrics::describe_histogram!(
        names.event_loop_interval.clone(),
        metrics::Unit::Seconds,
        "Distribution of measured event loop intervals"
    );

    for status in ["success", "failure", "error"] {
        let _ = metrics::histogram!(names.spawn_duration.clone(), "status" => status, "reason" => "");
    }
    for reason in [
        SpawnRefusal::Throttled,
        SpawnRefusal::TooManyUsers,
        SpawnRefusal::AlreadyPending,
    ] {
        let _ = metrics::histogram!(names.spawn_duration.clone(), "status" => "failure", "reason" => reason.label());
    }
    for status in ["success", "failure"] {
        let _ = metrics::histogram!(names.login_duration.clone(), "status" => status);
        let _ = metrics::histogram!(names.proxy_add_duration.clone(), "status" => status);
        let _ = metrics::histogram!(names.proxy_delete_duration.clone(), "status" => status);
        let _ = metrics::histogram!(names.server_stop.clone(), "status" => status);
    }
    for status in ["running", "stopped"] {
        let _ = metrics::histogram!(names.server_poll_duration.clone(), "status" => status);
    }
    let _ = metrics::histogram!(names.logout_duration.clone());
    metrics::counter!(names.csp_reports.clone()).increment(0);
    metrics::gauge!(names.running_servers.clone()).set(0.0);
    metrics::gauge!(names.total_users.clone()).set(0.0);
    for period in ACTIVE_PERIODS {
        metrics::gauge!(names.active_users.clone(), "period" => period.0).set(0.0);
    }
}

/// Why a spawn was refused before it began (JupyterHub's `ServerSpawnFailureReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnRefusal {
    /// `concurrent_spawn_limit` reached (429).
    Throttled,
    /// `active_server_limit` reached (429).
    TooManyUsers,
    /// The server is already starting (400).
    AlreadyPending,
}

impl SpawnRefusal {
    fn label(self) -> &'static str {
        match self {
            SpawnRefusal::Throttled => "throttled",
            SpawnRefusal::TooManyUsers => "too-many-users",
            SpawnRefusal::AlreadyPending => "already-pending",
        }
    }
}

/// A spawn refused before it began.
pub fn spawn_refused(reason: SpawnRefusal, took: Duration) {
    metrics::histogram!(NAMES.spawn_duration.clone(), "status" => "failure", "reason" => reason.label())
        .record(took.as_secs_f64());
}

/// How a spawn that began ended: ready (`success`), or not (`error`: the server
/// failed to start or answer, as JupyterHub labels a spawner's exception).
pub fn spawn_finished(ready: bool, took: Duration) {
    let status = if ready { "success" } else { "error" };
    metrics::histogram!(NAMES.spawn_duration.clone(), "status" => status, "reason" => "").record(took.as_secs_f64());
}

pub fn login(success: bool, took: Duration) {
    let status = if success { "success" } else { "failure" };
    metrics::histogram!(NAMES.login_duration.clone(), "status" => status).record(took.as_secs_f64());
}

pub fn logout(took: Duration) {
    metrics::histogram!(NAMES.logout_duration.clone()).record(took.as_secs_f64());
}

pub fn csp_report() {
    metrics::counter!(NAMES.csp_reports.clone()).increment(1);
}

/// A route committed (added when a server is marked ready) or not.
pub fn proxy_add(success: bool, took: Duration) {
    let status = if success { "success" } else { "failure" };
    metrics::histogram!(NAMES.proxy_add_duration.clone(), "status" => status).record(took.as_secs_f64());
}

/// A route removal committed (with a server's stop) or not.
pub fn proxy_delete(success: bool, took: Duration) {
    let status = if success { "success" } else { "failure" };
    metrics::histogram!(NAMES.proxy_delete_duration.clone(), "status" => status).record(took.as_secs_f64());
}

pub fn server_poll(running: bool, took: Duration) {
    let status = if running { "running" } else { "stopped" };
    metrics::histogram!(NAMES.server_poll_duration.clone(), "status" => status).record(took.as_secs_f64());
}

pub fn server_stop(success: bool, took: Duration) {
    let status = if success { "success" } else { "failure" };
    metrics::histogram!(NAMES.server_stop.clone(), "status" => status).record(took.as_secs_f64());
}

/// From the process's start to serving with a leader known.
pub fn hub_started(took: Duration) {
    metrics::histogram!(NAMES.hub_startup_duration.clone()).record(took.as_secs_f64());
}

/// A request answered: `handler` is JupyterHub's handler class for the route when
/// there is one (so its dashboards' per-handler panels work), else the route pattern.
pub fn request(method: &str, route: &str, code: u16, took: Duration) {
    metrics::histogram!(
        NAMES.request_duration.clone(),
        "method" => method.to_owned(),
        "handler" => handler_name(route),
        "code" => code.to_string()
    )
    .record(took.as_secs_f64());
}

/// JupyterHub's handler class for a route pattern (axum's `MatchedPath`); the pattern
/// itself for routes JupyterHub does not have. Bounded either way: patterns, not paths.
pub fn handler_name(route: &str) -> String {
    let class = match route {
        "/hub/api" | "/hub/api/" => "jupyterhub.apihandlers.hub.RootAPIHandler",
        "/hub/api/info" => "jupyterhub.apihandlers.hub.InfoAPIHandler",
        "/hub/api/shutdown" => "jupyterhub.apihandlers.hub.ShutdownAPIHandler",
        "/hub/api/user" => "jupyterhub.apihandlers.users.SelfAPIHandler",
        "/hub/api/users" => "jupyterhub.apihandlers.users.UserListAPIHandler",
        "/hub/api/users/{name}" => "jupyterhub.apihandlers.users.UserAPIHandler",
        "/hub/api/users/{name}/server" | "/hub/api/users/{name}/servers/{server}" => {
            "jupyterhub.apihandlers.users.UserServerAPIHandler"
        }
        "/hub/api/users/{name}/server/progress" | "/hub/api/users/{name}/servers/{server}/progress" => {
            "jupyterhub.apihandlers.users.SpawnProgressAPIHandler"
        }
        "/hub/api/users/{name}/tokens" => "jupyterhub.apihandlers.users.UserTokenListAPIHandler",
        "/hub/api/users/{name}/tokens/{id}" => "jupyterhub.apihandlers.users.UserTokenAPIHandler",
        "/hub/api/users/{name}/activity" => "jupyterhub.apihandlers.users.ActivityAPIHandler",
        "/hub/api/groups" => "jupyterhub.apihandlers.groups.GroupListAPIHandler",
        "/hub/api/groups/{group}" => "jupyterhub.apihandlers.groups.GroupAPIHandler",
        "/hub/api/groups/{group}/users" => "jupyterhub.apihandlers.groups.GroupUsersAPIHandler",
        "/hub/api/groups/{group}/properties" => "jupyterhub.apihandlers.groups.GroupPropertiesAPIHandler",
        "/hub/api/services" => "jupyterhub.apihandlers.services.ServiceListAPIHandler",
        "/hub/api/services/{service}" => "jupyterhub.apihandlers.services.ServiceAPIHandler",
        "/hub/api/proxy" => "jupyterhub.apihandlers.proxy.ProxyAPIHandler",
        "/hub/api/authorizations/token" => "jupyterhub.apihandlers.auth.TokenAPIHandler",
        "/hub/api/oauth2/authorize" => "jupyterhub.apihandlers.auth.OAuthAuthorizeHandler",
        "/hub/api/oauth2/token" => "jupyterhub.apihandlers.auth.OAuthTokenHandler",
        "/hub/api/metrics" | "/hub/metrics" => "jupyterhub.handlers.metrics.MetricsHandler",
        "/hub/api/health" | "/hub/health" => "jupyterhub.handlers.pages.HealthCheckHandler",
        "/hub/" => "jupyterhub.handlers.pages.RootHandler",
        "/hub/login" => "jupyterhub.handlers.login.LoginHandler",
        "/hub/logout" => "jupyterhub.handlers.login.LogoutHandler",
        "/hub/home" => "jupyterhub.handlers.pages.HomeHandler",
        "/hub/token" => "jupyterhub.handlers.pages.TokenPageHandler",
        "/hub/admin" => "jupyterhub.handlers.pages.AdminHandler",
        "/hub/spawn" | "/hub/spawn/{name}" | "/hub/spawn/{name}/{server}" => "jupyterhub.handlers.pages.SpawnHandler",
        "/hub/spawn-pending/{name}" | "/hub/spawn-pending/{name}/{server}" => {
            "jupyterhub.handlers.pages.SpawnPendingHandler"
        }
        "/hub/security/csp-report" => "jupyterhub.handlers.base.CSPReportHandler",
        "/hub/user/{name}" | "/hub/user/{name}/" | "/hub/user/{name}/{*rest}" => {
            "jupyterhub.handlers.base.UserUrlHandler"
        }
        "/hub/user-redirect/{*rest}" => "jupyterhub.handlers.base.UserRedirectHandler",
        "/hub/error/{code}" => "jupyterhub.handlers.pages.ProxyErrorHandler",
        other => return other.to_owned(),
    };
    class.to_owned()
}

/// The `period` labels of `active_users` and how far back each looks.
const ACTIVE_PERIODS: [(&str, Duration); 3] = [
    ("24h", Duration::from_secs(24 * 3600)),
    ("7d", Duration::from_secs(7 * 24 * 3600)),
    ("30d", Duration::from_secs(30 * 24 * 3600)),
];

/// The cluster-wide gauges, from one replica's view of the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterGauges {
    pub running_servers: u64,
    pub total_users: u64,
    /// Users active within each of `ACTIVE_PERIODS`, in its order.
    pub active_users: [u64; 3],
}

impl ClusterGauges {
    /// Counts from the state: servers that are ready, users, and users whose last
    /// activity is within each period of `now_millis`.
    pub fn of(state: &ganymede_model::State, now_millis: i64) -> ClusterGauges {
        let mut gauges = ClusterGauges {
            total_users: state.users.len() as u64,
            ..ClusterGauges::default()
        };
        for user in state.users.values() {
            gauges.running_servers += user
                .servers
                .values()
                .filter(|server| server.phase == ganymede_model::ServerPhase::Running)
                .count() as u64;
            // The user's own last activity, as JupyterHub counts: activity reported
            // for a server moves it too, but a server's start alone does not.
            if let Some(last) = user.last_activity {
                for (count, (_, period)) in gauges.active_users.iter_mut().zip(ACTIVE_PERIODS) {
                    if now_millis - last <= period.as_millis() as i64 {
                        *count += 1;
                    }
                }
            }
        }
        gauges
    }

    pub fn publish(&self) {
        let names = &*NAMES;
        metrics::gauge!(names.running_servers.clone()).set(self.running_servers as f64);
        metrics::gauge!(names.total_users.clone()).set(self.total_users as f64);
        for (count, (period, _)) in self.active_users.iter().zip(ACTIVE_PERIODS) {
            metrics::gauge!(names.active_users.clone(), "period" => period).set(*count as f64);
        }
    }
}

/// Measures how late a 50 ms tick of the runtime comes, as JupyterHub measures its
/// event loop: a busy or blocked runtime shows as long intervals.
pub async fn measure_event_loop(shutdown: tokio_util::sync::CancellationToken) {
    let histogram = metrics::histogram!(NAMES.event_loop_interval.clone());
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVENT_LOOP_RESOLUTION) => {}
            () = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let tick = now - last;
        last = now;
        let delay = if tick < 2 * EVENT_LOOP_RESOLUTION {
            EVENT_LOOP_RESOLUTION
        } else {
            tick - EVENT_LOOP_RESOLUTION
        };
        histogram.record(delay.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_lists_from_the_environment_must_be_increasing_numbers() {
        let read = |value: Option<&str>| buckets_from("TEST_BUCKETS", value, &[9.0]);
        assert_eq!(read(Some("1, 2,4,inf")), vec![1.0, 2.0, 4.0]);
        assert_eq!(read(Some("2,1")), vec![9.0]);
        assert_eq!(read(Some("one")), vec![9.0]);
        assert_eq!(read(Some("")), vec![9.0]);
        assert_eq!(read(None), vec![9.0]);
    }

    #[test]
    fn cluster_gauges_count_ready_servers_users_and_recent_activity() {
        use ganymede_model::{Server, ServerPhase, State, User};
        const DAY: i64 = 24 * 3600 * 1000;
        let now = 100 * DAY;
        let user = |name: &str, last_activity: Option<i64>, phases: &[ServerPhase], server_activity: Option<i64>| {
            let servers = phases
                .iter()
                .enumerate()
                .map(|(i, phase)| {
                    let mut server = Server::stopped(&i.to_string());
                    server.phase = *phase;
                    server.last_activity = server_activity;
                    (i.to_string(), server)
                })
                .collect();
            let user = User {
                name: name.into(),
                admin: false,
                created: 0,
                last_activity,
                servers,
            };
            (name.to_owned(), user)
        };
        let users = [
            // An hour ago, with one running and one starting server.
            user(
                "a",
                Some(now - DAY / 24),
                &[ServerPhase::Running, ServerPhase::PendingSpawn],
                None,
            ),
            // Three days ago (a server's own timestamp does not count).
            user("b", Some(now - 3 * DAY), &[ServerPhase::Running], Some(now - DAY / 2)),
            // Ten days ago; a stopped and a stopping server.
            user(
                "c",
                Some(now - 10 * DAY),
                &[ServerPhase::Stopped, ServerPhase::PendingStop],
                None,
            ),
            // Never.
            user("d", None, &[], None),
        ]
        .into_iter()
        .collect();
        let state = State {
            users,
            ..State::default()
        };
        let gauges = ClusterGauges::of(&state, now);
        assert_eq!(
            gauges,
            ClusterGauges {
                running_servers: 2,
                total_users: 4,
                active_users: [1, 2, 3],
            }
        );
    }

    #[test]
    fn known_routes_are_named_as_jupyterhub_names_their_handlers() {
        assert_eq!(
            handler_name("/hub/api/users/{name}"),
            "jupyterhub.apihandlers.users.UserAPIHandler"
        );
        assert_eq!(
            handler_name("/hub/api/users/{name}/servers/{server}"),
            "jupyterhub.apihandlers.users.UserServerAPIHandler"
        );
        assert_eq!(handler_name("/hub/api/ganymede/cluster"), "/hub/api/ganymede/cluster");
    }
}
