//! `ganymede hub`: binds the listeners, starts Raft and the API, provisions the cluster
//! secret and the operator's admin token, and shuts down in order on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ganymede_hub::{ApiLimits, Hub};
use ganymede_raft::{HubNode, RaftConfig, RaftHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::HubConfig;

/// How long in-flight requests may take to finish once shutdown starts.
const GRACE: Duration = Duration::from_secs(5);

pub async fn run(config: HubConfig, admin_token: Option<String>, proxy_token: Option<String>) -> anyhow::Result<()> {
    let starting = std::time::Instant::now();
    if admin_token.as_ref().is_some_and(|token| token.len() < 8) {
        anyhow::bail!("GANYMEDE_ADMIN_TOKEN must be at least 8 characters");
    }

    let api_listener = tokio::net::TcpListener::bind(config.api_bind)
        .await
        .with_context(|| format!("cannot listen on hub.api_bind {}", config.api_bind))?;
    let raft_listener = tokio::net::TcpListener::bind(config.raft_bind)
        .await
        .with_context(|| format!("cannot listen on hub.raft_bind {}", config.raft_bind))?;
    let proxy_listener = match &proxy_token {
        Some(_) => Some(
            tokio::net::TcpListener::bind(config.proxy_api_bind)
                .await
                .with_context(|| format!("cannot listen on proxy.api_bind {}", config.proxy_api_bind))?,
        ),
        None => {
            warn!("CONFIGPROXY_AUTH_TOKEN is not set: the configurable-http-proxy routes API is not served");
            None
        }
    };
    let edge_feed = match &proxy_token {
        Some(_) => {
            let grpc = tokio::net::TcpListener::bind(config.events_grpc_bind)
                .await
                .with_context(|| format!("cannot listen on events.grpc_bind {}", config.events_grpc_bind))?;
            let publisher = ganymede_events::Publisher::bind(config.events_pub_bind)
                .await
                .with_context(|| format!("cannot listen on events.pub_bind {}", config.events_pub_bind))?;
            Some((grpc, publisher))
        }
        None => None,
    };
    let api_addr = api_listener.local_addr()?;
    let raft_addr = raft_listener.local_addr()?;
    info!(node_id = config.node_id, %api_addr, %raft_addr, data_dir = %config.data_dir.display(), "hub listening");

    let node = HubNode {
        raft_addr: config.advertise_raft.clone().unwrap_or_else(|| raft_addr.to_string()),
        api_addr: config.advertise_api.clone().unwrap_or_else(|| api_addr.to_string()),
    };
    let initial_members = config
        .initial_members
        .values()
        .map(|m| {
            (
                m.node_id,
                HubNode {
                    raft_addr: m.raft_addr.clone(),
                    api_addr: m.api_addr.clone(),
                },
            )
        })
        .collect();
    let raft_config = RaftConfig {
        node_id: config.node_id,
        node,
        data_dir: config.data_dir.clone(),
        initial_members,
        heartbeat_interval: config.heartbeat_interval,
        election_timeout_min: config.election_timeout_min,
        election_timeout_max: config.election_timeout_max,
        snapshot_logs_since_last: config.snapshot_logs_since_last,
        logs_kept_after_snapshot: config.logs_kept_after_snapshot,
        request_timeout: config.request_timeout,
        peer_tls: match &config.peer_tls {
            Some((cert, key, ca)) => {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path).with_context(|| format!("cluster TLS: cannot read {}", path.display()))
                };
                Some(ganymede_raft::PeerTls {
                    cert_pem: read(cert)?,
                    key_pem: read(key)?,
                    ca_pem: read(ca)?,
                })
            }
            None => None,
        },
        max_connections: config.serve_limits.max_connections,
    };

    let shutdown = CancellationToken::new();
    // Raft outlives the rest: the reconciler reports its servers stopped through it.
    let raft_shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // One recorder per process, with JupyterHub's buckets, installed before Raft starts:
    // metrics registered before it (the leader-change counter, the first WAL syncs)
    // would go to no recorder and never be exported.
    let metrics = match ganymede_hub::metrics::prometheus_builder().and_then(|builder| builder.install_recorder()) {
        Ok(handle) => {
            ganymede_hub::metrics::describe();
            // Histograms keep raw samples until a scrape or an upkeep folds them into
            // buckets: without upkeep an unscraped hub's memory would grow for ever.
            let (upkeep, shutdown) = (handle.clone(), shutdown.clone());
            tasks.spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = ticks.tick() => upkeep.run_upkeep(),
                    }
                }
            });
            Some(handle)
        }
        Err(err) => {
            tracing::warn!(error = %err, "no Prometheus recorder: /hub/metrics will be empty");
            None
        }
    };
    let raft = RaftHandle::start(raft_config, raft_listener, &tasks, raft_shutdown.clone())
        .await
        .context("cannot start the replica")?;

    tasks.spawn(ganymede_hub::provision(raft.clone(), admin_token, shutdown.clone()));
    tasks.spawn(stop_on_signal(shutdown.clone()));

    let hub = Hub::new(
        raft.clone(),
        ApiLimits {
            max_body_bytes: config.max_body_bytes,
            login: config.login_limits.clone(),
        },
        config.settings.clone(),
        config.auth.clone(),
    )
    .with_shutdown(shutdown.clone());
    let hub = match metrics {
        Some(handle) => hub.with_metrics(handle),
        None => hub,
    };
    tasks.spawn(hub.clone().run_background(shutdown.clone()));
    let reconciler = start_reconciler(&config, &hub, api_addr)?;
    if let (Some((grpc, publisher)), Some(token)) = (edge_feed, &proxy_token) {
        let feed = Arc::new(ganymede_hub::EdgeFeed::new(raft.clone(), hub.activity.clone()));
        info!(grpc = %grpc.local_addr()?, events = publisher.endpoint(), "edge feed listening");
        tasks.spawn(publisher.run(feed.clone(), shutdown.clone()));
        let incoming = ganymede_raft::incoming::bounded(grpc, config.serve_limits.max_connections, "feed");
        let service = ganymede_events::RoutesService::new(feed, token.clone());
        // Requests beyond this on one connection wait their turn (HTTP/2 flow control
        // holds their bodies back), so that one edge cannot hold many snapshots or
        // reports in memory at once.
        let mut server = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(ganymede_events::MAX_REQUESTS_PER_CONNECTION);
        if let Some((cert, key)) = &config.events_tls {
            let read = |path: &std::path::PathBuf| {
                std::fs::read(path).with_context(|| format!("cannot read the edge feed's TLS file {}", path.display()))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &config.events_client_ca {
                // Mutual TLS: an edge without a certificate from this CA gets no feed.
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            server = server
                .tls_config(tls)
                .context("events.tls_cert/tls_key do not make a TLS configuration")?;
        }
        let serve_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = server
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, serve_shutdown.cancelled_owned())
                .await;
            if let Err(err) = served {
                warn!(error = %err, "edge feed gRPC stopped");
            }
        });
    }
    if let (Some(listener), Some(token)) = (proxy_listener, proxy_token) {
        info!(addr = %listener.local_addr()?, "routes API (configurable-http-proxy) listening");
        let app = ganymede_hub::proxy_router(hub.clone(), token);
        tasks.spawn(ganymede_hub::serve(
            listener,
            app,
            config.serve_limits.clone(),
            shutdown.clone(),
        ));
    }
    // A replica whose storage failed cannot serve again (openraft has stopped): shut
    // down and exit non-zero, so that the supervisor restarts it from what is on disk,
    // rather than answer 503 for ever.
    let fault = Arc::new(std::sync::OnceLock::<String>::new());
    {
        let (raft, shutdown, fault) = (raft.clone(), shutdown.clone(), fault.clone());
        tasks.spawn(async move {
            tokio::select! {
                reason = raft.stopped_by_fault() => {
                    error!(%reason, "raft stopped on a fault; shutting down");
                    let _ = fault.set(reason);
                    shutdown.cancel();
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
    let app = ganymede_hub::router(hub);
    {
        // JupyterHub's startup time ends when it serves with its database ready; a
        // replica's, when it serves with a leader known.
        let (raft, shutdown) = (raft.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                leader = raft.wait_for_leader(Duration::from_secs(3600)) => if leader.is_some() {
                    ganymede_hub::metrics::hub_started(starting.elapsed());
                },
                () = shutdown.cancelled() => {}
            }
        });
    }
    // Handlers see the peer's address (the audit record's source IP for clients that
    // come direct); slowloris, oversized heads and connection floods are bounded.
    ganymede_hub::serve(api_listener, app, config.serve_limits.clone(), shutdown.clone()).await;
    shutdown.cancel();
    info!("shutting down");
    if let Some((stop, task)) = reconciler {
        stop.cancel();
        if tokio::time::timeout(Duration::from_secs(60), task).await.is_err() {
            warn!("the spawner did not stop its servers within 60 s");
        }
    }
    raft_shutdown.cancel();
    raft.shutdown().await;
    tasks.close();
    if tokio::time::timeout(GRACE, tasks.wait()).await.is_err() {
        warn!("some tasks did not stop within the grace period");
    }
    match fault.get() {
        Some(reason) => anyhow::bail!("raft stopped on a fault: {reason}"),
        None => Ok(()),
    }
}

/// The local spawner and its reconciler, unless `spawner.kind = "none"`.
fn start_reconciler(
    config: &HubConfig,
    hub: &Hub,
    api_addr: std::net::SocketAddr,
) -> anyhow::Result<Option<(CancellationToken, tokio::task::JoinHandle<()>)>> {
    let Some(mut local) = config.spawner.local.clone() else {
        info!("no spawner: servers stay pending until something reports on them");
        return Ok(None);
    };
    if let Some(name) = &config.spawner.run_as {
        local.run_as = Some(ganymede_spawner::RunAs::lookup(name).with_context(|| format!("spawner.user {name:?}"))?);
    }
    local.instance = spawn_instance(&config.data_dir, config.node_id);
    let connect = match &config.advertise_api {
        Some(advertised) => advertised.clone(),
        None if api_addr.ip().is_unspecified() => format!("127.0.0.1:{}", api_addr.port()),
        None => api_addr.to_string(),
    };
    let mut timing = config.spawner.timing.clone();
    timing.hub_api_url = config
        .spawner
        .hub_connect_url
        .clone()
        .unwrap_or_else(|| format!("http://{connect}/hub/api"));
    info!(cmd = ?local.cmd, hub_api = %timing.hub_api_url, logs = %local.logs.display(), "local spawner");
    let spawner = ganymede_spawner::LocalProcessSpawner::new(local).context("cannot start the spawner")?;
    let stop = CancellationToken::new();
    let reconciler = ganymede_hub::Reconciler::new(hub.clone(), Arc::new(spawner), timing);
    Ok(Some((stop.clone(), tokio::spawn(reconciler.run(stop)))))
}

/// What marks this replica's server processes among others on the machine: stable
/// across restarts (it is how a restarted replica finds them), distinct per data
/// directory. FNV-1a, hex.
fn spawn_instance(data_dir: &std::path::Path, node_id: u64) -> String {
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.to_string_lossy().bytes().chain(node_id.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub(crate) async fn stop_on_signal(shutdown: CancellationToken) {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(err) => {
            warn!(error = %err, "cannot watch SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT"),
        _ = terminate.recv() => info!("SIGTERM"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}
