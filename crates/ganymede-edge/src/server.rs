//! Wiring: the listener and its connections, the route subscriber, hub health checks,
//! and the metrics page; ordered shutdown.

use std::sync::Arc;
use std::time::Duration;

use self::errors::Error;
use ganymede_events::{Subscriber, SubscriberConfig};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::EdgeConfig;
use crate::activity::Activity;
use crate::hubs::HubPool;
use crate::pages::{Body, full};
use crate::proxy::Proxy;
use crate::tls::Tls;

mod errors {
    /// Why the edge could not start.
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        #[error("cannot listen on {addr}: {source}")]
        Bind {
            addr: std::net::SocketAddr,
            source: std::io::Error,
        },
        #[error("bad hub address: {0}")]
        Hub(String),
        #[error("cannot install the metrics recorder: {0}")]
        Metrics(String),
        #[error(transparent)]
        Tls(#[from] crate::tls::TlsError),
    }
}

pub use self::errors::Error as EdgeError;

/// Runs an edge until `shutdown`: binds first (a busy port fails at once), then serves.
/// `token` is the edge token (`CONFIGPROXY_AUTH_TOKEN`) presented to the hubs.
pub async fn run(config: EdgeConfig, token: String, shutdown: CancellationToken) -> Result<(), Error> {
    let bind_error = |source| Error::Bind {
        addr: config.bind,
        source,
    };
    // One listener per worker thread on the same port (SO_REUSEPORT: the kernel spreads
    // connections), each served by its own single-threaded runtime with its own upstream
    // pool — no cross-thread wake-ups on the request path, like nginx's workers.
    let tls = config.tls.clone().map(Tls::new).transpose()?.map(Arc::new);
    let workers = config.workers.max(1);
    let first = reuseport_listener(config.bind).map_err(bind_error)?;
    let local = first.local_addr().map_err(bind_error)?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(reuseport_listener(local).map_err(bind_error)?);
    }
    let metrics_listener = match config.metrics_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?,
        ),
        None => None,
    };
    let recorder = metrics_listener.as_ref().map(|_| install_recorder()).transpose()?;
    info!(addr = %local, workers, "edge listening");

    let tasks = TaskTracker::new();
    let subscriber = Subscriber::new(SubscriberConfig {
        hubs: config.hubs.iter().map(|hub| hub.feed.clone()).collect(),
        token,
        repair_delay: Duration::from_millis(20),
        silence_poll: Duration::from_secs(2),
        grpc_ca: config.hubs_ca.clone(),
        grpc_identity: config.hubs_identity.clone(),
    })
    .map_err(|err| Error::Hub(err.to_string()))?;
    let table = subscriber.table();
    let newest_seen = subscriber.newest_seen();
    let activity = Arc::new(Activity::new(workers));
    tasks.spawn(crate::activity::report(
        activity.clone(),
        subscriber.clients(),
        config.name.clone(),
        config.activity_interval,
        shutdown.clone(),
    ));
    tasks.spawn(subscriber.run(shutdown.clone()));
    if let Some(tls) = &tls {
        tasks.spawn(reload_on_sighup(tls.clone(), shutdown.clone()));
    }

    let client = upstream_client(&config);
    let hubs = Arc::new(HubPool::new(config.hubs.iter().map(|hub| hub.api.clone())));
    tasks.spawn(
        hubs.clone()
            .check_health(client.clone(), config.health_interval, shutdown.clone()),
    );

    if let (Some(listener), Some(handle)) = (metrics_listener, recorder) {
        let lag_table = table.clone();
        let routes_table = table.clone();
        // The subscriber sets the table's gauges as it changes; heartbeats move only the
        // newest known route_seq, so the lag is computed when scraped.
        let refresh = move || {
            let applied = lag_table.load().route_seq();
            let newest = newest_seen.load(std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!("ganymede_edge_route_seq_newest").set(newest as f64);
            metrics::gauge!("ganymede_edge_route_seq_lag").set(newest.saturating_sub(applied) as f64);
        };
        // The table as this edge holds it, for convergence checks against the hubs'.
        let routes = move || {
            let table = routes_table.load();
            let routes: serde_json::Map<String, serde_json::Value> = table
                .iter()
                .map(|entry| (entry.path.to_string(), entry.target.to_string().into()))
                .collect();
            serde_json::json!({"route_seq": table.route_seq(), "routes": routes}).to_string()
        };
        tasks.spawn(serve_metrics(listener, handle, shutdown.clone(), refresh, routes));
    }

    let mut threads = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let listener = listener.into_std().map_err(bind_error)?;
        let worker = Worker {
            index,
            activity: activity.clone(),
            tls: tls.clone(),
            config: config.clone(),
            table: table.clone(),
            hubs: hubs.clone(),
            shutdown: shutdown.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("edge-worker-{index}"))
            .spawn(move || worker.run(listener))
            .map_err(bind_error)?;
        threads.push(thread);
    }
    shutdown.cancelled().await;
    info!("edge shutting down");
    let joined = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    });
    let _ = tokio::time::timeout(config.shutdown_grace * 2, joined).await;
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait()).await.is_err() {
        warn!("edge tasks did not stop within the grace period");
    }
    Ok(())
}

/// SIGHUP re-reads the certificate and key: new handshakes use them, open connections
/// keep theirs. A bad file is logged and the old configuration kept.
async fn reload_on_sighup(tls: Arc<Tls>, shutdown: CancellationToken) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(err) => {
            warn!(error = %err, "cannot watch SIGHUP: certificates will not reload");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangups.recv() => match tls.reload() {
                Ok(()) => info!(cert = %tls.cert_path().display(), "TLS certificate reloaded"),
                Err(err) => warn!(error = %err, "TLS reload failed; keeping the previous certificate"),
            },
        }
    }
}

fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn upstream_client(config: &EdgeConfig) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.upstream_connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.upstream_idle_timeout)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// One worker thread: a current-thread runtime serving its own listener.
struct Worker {
    index: usize,
    activity: Arc<Activity>,
    tls: Option<Arc<Tls>>,
    config: EdgeConfig,
    table: Arc<arc_swap::ArcSwap<ganymede_events::RouteTable>>,
    hubs: Arc<HubPool>,
    shutdown: CancellationToken,
}

impl Worker {
    fn run(self, listener: std::net::TcpListener) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                warn!(error = %err, "cannot start an edge worker");
                self.shutdown.cancel();
                return;
            }
        };
        runtime.block_on(self.serve(listener));
    }

    async fn serve(self, listener: std::net::TcpListener) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                warn!(error = %err, "cannot adopt the listener");
                self.shutdown.cancel();
                return;
            }
        };
        let config = &self.config;
        let proxy = Arc::new(Proxy {
            table: self.table.clone(),
            hubs: self.hubs.clone(),
            client: upstream_client(config),
            host_routing: config.host_routing,
            response_timeout: config.upstream_response_timeout,
            scheme: if self.tls.is_some() { "https" } else { "http" },
            activity: self.activity.clone(),
            worker: self.index,
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .keep_alive_interval(Duration::from_secs(30));
        let builder = Arc::new(builder);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let open = metrics::gauge!("ganymede_edge_open_connections");
        loop {
            let (stream, remote) = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let proxy = proxy.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, remote).await) }
            });
            let open = open.clone();
            match &self.tls {
                None => {
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection.into_owned());
                    tokio::spawn(async move {
                        open.increment(1);
                        if let Err(err) = connection.await {
                            debug!(error = %err, "connection ended with an error");
                        }
                        open.decrement(1);
                    });
                }
                Some(tls) => {
                    // The handshake runs in the connection's task, under the same
                    // deadline as a request's headers (slow handshakes are slowloris too).
                    let acceptor = tls.acceptor();
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let deadline = config.header_read_timeout;
                    tokio::spawn(async move {
                        let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                debug!(error = %err, "TLS handshake failed");
                                metrics::counter!("ganymede_edge_tls_handshake_failures_total").increment(1);
                                return;
                            }
                            Err(_) => return,
                        };
                        open.increment(1);
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        if let Err(err) = watcher.watch(connection.into_owned()).await {
                            debug!(error = %err, "connection ended with an error");
                        }
                        open.decrement(1);
                    });
                }
            }
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(config.shutdown_grace) => warn!("connections still open after the grace period"),
        }
    }
}

fn install_recorder() -> Result<PrometheusHandle, Error> {
    const SECONDS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(SECONDS)
        .map_err(|err| Error::Metrics(err.to_string()))?
        .install_recorder()
        .map_err(|err| Error::Metrics(err.to_string()))?;
    // Gauges that otherwise appear with the first connection: dashboards and alerts
    // see them (at zero) from the start.
    metrics::gauge!("ganymede_edge_open_connections").set(0.0);
    metrics::gauge!("ganymede_edge_open_websockets").set(0.0);
    Ok(handle)
}

async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
    refresh: impl Fn() + Send + Sync + 'static,
    routes: impl Fn() -> String + Send + Sync + 'static,
) {
    let refresh = Arc::new(refresh);
    let routes = Arc::new(routes);
    let upkeep_handle = handle.clone();
    let upkeep_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = upkeep_shutdown.cancelled() => return,
                _ = ticks.tick() => upkeep_handle.run_upkeep(),
            }
        }
    });
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let handle = handle.clone();
        let refresh = refresh.clone();
        let routes = routes.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handle = handle.clone();
            let refresh = refresh.clone();
            let routes = routes.clone();
            async move {
                let response = if request.uri().path() == "/metrics" {
                    refresh();
                    let mut response = Response::new(full(handle.render()));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    response
                } else if request.uri().path() == "/routes" {
                    let mut response = Response::new(full(routes()));
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    response
                } else {
                    let mut response = Response::new(full("not found\n"));
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
