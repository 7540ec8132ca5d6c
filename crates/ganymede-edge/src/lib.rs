//! `ganymede edge`: a stateless proxy. It follows the hubs' route log
//! (`ganymede-events`), routes each request by the longest matching path prefix to its
//! target, and sends everything else to a healthy hub replica.

mod activity;
mod hubs;
mod pages;
mod proxy;
mod server;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

pub use ganymede_events::HubEndpoint;
pub use server::{EdgeError, run};
pub use tls::{TlsError, TlsFiles};

/// One hub replica as an edge sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubAddrs {
    /// The hub's HTTP address (`host:port`) for requests without a route.
    pub api: String,
    /// The edge feed: gRPC (`http://host:port`) and ZeroMQ (`tcp://host:port`).
    pub feed: HubEndpoint,
}

/// A validated edge configuration.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// A name for this edge in logs and activity reports.
    pub name: String,
    pub bind: SocketAddr,
    /// Serve HTTPS (ALPN h2, http/1.1) with these PEM files; reloaded on SIGHUP.
    pub tls: Option<TlsFiles>,
    /// Worker threads, each with its own listener (SO_REUSEPORT) and runtime.
    pub workers: usize,
    /// Prometheus metrics (`/metrics`); none to serve none.
    pub metrics_bind: Option<SocketAddr>,
    pub hubs: Vec<HubAddrs>,
    /// The CA (PEM) of the hubs' edge-feed gRPC certificates; `None` for plaintext.
    pub hubs_ca: Option<Vec<u8>>,
    /// The certificate and key (PEM) presented to hubs whose feed asks for one.
    pub hubs_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Route on `Host` first (per-user subdomains), like CHP's `--host-routing`.
    pub host_routing: bool,
    /// Slowloris protection: a client must send a request's headers within this.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    pub upstream_connect_timeout: Duration,
    /// Time allowed for an upstream's response headers (504 after it).
    pub upstream_response_timeout: Duration,
    /// Upstream keep-alive connections idle longer than this are closed.
    pub upstream_idle_timeout: Duration,
    /// How often route activity is reported to the hubs.
    pub activity_interval: Duration,
    /// How often each hub's `/hub/health` is checked.
    pub health_interval: Duration,
    /// How long open requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl EdgeConfig {
    pub fn new(bind: SocketAddr, hubs: Vec<HubAddrs>) -> EdgeConfig {
        EdgeConfig {
            name: "edge".into(),
            bind,
            tls: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            metrics_bind: None,
            hubs,
            hubs_ca: None,
            hubs_identity: None,
            host_routing: false,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(300),
            upstream_idle_timeout: Duration::from_secs(60),
            activity_interval: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
