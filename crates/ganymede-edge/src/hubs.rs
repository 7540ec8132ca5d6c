//! The hub replicas that take requests without a route: active health checks on
//! `/hub/health`, passive ejection when a connection is refused, round-robin over the
//! healthy ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::pages::{Body, full};

#[derive(Debug)]
pub struct Hub {
    pub authority: String,
    healthy: AtomicBool,
}

#[derive(Debug)]
pub struct HubPool {
    hubs: Vec<Hub>,
    next: AtomicUsize,
}

impl HubPool {
    pub fn new(authorities: impl IntoIterator<Item = String>) -> HubPool {
        HubPool {
            hubs: authorities
                .into_iter()
                .map(|authority| Hub {
                    authority,
                    // Assume healthy until a check says otherwise, so that the first
                    // requests after start are not refused.
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hubs.is_empty()
    }

    /// The hubs to try for one request, healthy ones first (round-robin), then the
    /// rest: a health check may be stale, and trying costs only a refused connection.
    pub fn candidates(&self) -> Vec<&Hub> {
        let count = self.hubs.len();
        if count == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let ordered = (0..count).map(|offset| &self.hubs[(start + offset) % count]);
        let (mut healthy, unhealthy): (Vec<&Hub>, Vec<&Hub>) =
            ordered.partition(|hub| hub.healthy.load(Ordering::Relaxed));
        healthy.extend(unhealthy);
        healthy
    }

    pub fn healthy_count(&self) -> usize {
        self.hubs
            .iter()
            .filter(|hub| hub.healthy.load(Ordering::Relaxed))
            .count()
    }

    /// Passive ejection: the hub refused a connection.
    pub fn eject(&self, hub: &Hub) {
        if hub.healthy.swap(false, Ordering::Relaxed) {
            info!(hub = %hub.authority, "hub ejected: connection failed");
        }
        metrics::gauge!("ganymede_edge_healthy_hubs").set(self.healthy_count() as f64);
    }

    /// Checks every hub every `interval` until `shutdown`.
    pub async fn check_health(
        self: Arc<Self>,
        client: Client<HttpConnector, Body>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let checks = self.hubs.iter().map(|hub| {
                let client = client.clone();
                async move {
                    let healthy = match format!("http://{}/hub/health", hub.authority).parse::<Uri>() {
                        Ok(uri) => {
                            let request = Request::get(uri).body(full(""));
                            match request {
                                Ok(request) => matches!(
                                    tokio::time::timeout(interval.max(Duration::from_millis(500)), client.request(request)).await,
                                    Ok(Ok(response)) if response.status() == StatusCode::OK
                                ),
                                Err(_) => false,
                            }
                        }
                        Err(_) => false,
                    };
                    let was = hub.healthy.swap(healthy, Ordering::Relaxed);
                    if was != healthy {
                        info!(hub = %hub.authority, healthy, "hub health changed");
                    }
                }
            });
            futures::future::join_all(checks).await;
            metrics::gauge!("ganymede_edge_healthy_hubs").set(self.healthy_count() as f64);
        }
    }
}
