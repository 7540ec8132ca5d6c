//! The hub side: publishes every committed route event, signed, on a ZeroMQ PUB socket,
//! and a heartbeat with the newest `route_seq` every second.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use ganymede_proto::edge::v1::{ActivityReport, Route, RouteEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zeromq::{PubSocket, Socket, SocketEvent, SocketSend, ZmqMessage};

use crate::wire::{EventsKey, encode_event, encode_heartbeat};

const HEARTBEAT: Duration = Duration::from_secs(1);
/// Events read from the store per batch while catching up.
const BATCH: usize = 1024;

/// What a hub replica offers to the events machinery: its route state and event log.
pub trait RouteSource: Send + Sync + 'static {
    /// The HMAC key; `None` until the cluster has its secret.
    fn events_key(&self) -> Option<EventsKey>;
    /// The newest applied `route_seq`, updated as entries apply.
    fn subscribe_route_seq(&self) -> watch::Receiver<u64>;
    /// The whole table and the `route_seq` it reflects, read consistently.
    fn snapshot(&self) -> (u64, Vec<Route>);
    /// Route events with `route_seq > after`, up to `limit`; `Ok(None)` when the log no
    /// longer reaches back that far.
    fn events_after(&self, after: u64, limit: usize) -> Result<Option<Vec<RouteEvent>>, String>;
    /// Takes one activity report from an edge (already checked against
    /// `MAX_ROUTES_PER_REPORT`); the hub decides when it reaches Raft.
    fn record_activity(&self, report: ActivityReport) -> BoxFuture<'static, Result<(), String>>;
}

/// A bound PUB socket, ready to run.
pub struct Publisher {
    socket: PubSocket,
    addr: String,
    /// Peers connecting and leaving: the subscriber count operators watch.
    monitor: futures::channel::mpsc::Receiver<SocketEvent>,
}

impl Publisher {
    /// Binds first, so that a busy port is an error at start-up, not later.
    pub async fn bind(addr: SocketAddr) -> Result<Publisher, zeromq::ZmqError> {
        let mut socket = PubSocket::new();
        let monitor = socket.monitor();
        let endpoint = socket.bind(&format!("tcp://{addr}")).await?;
        Ok(Publisher {
            socket,
            addr: endpoint.to_string(),
            monitor,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.addr
    }

    /// Publishes until `shutdown`. Starts from the current `route_seq`: an edge loads a
    /// snapshot first, and a gap is repaired over gRPC.
    pub async fn run<S: RouteSource>(mut self, source: std::sync::Arc<S>, shutdown: CancellationToken) {
        info!(endpoint = %self.addr, "publishing route events");
        let mut route_seq = source.subscribe_route_seq();
        let mut published = *route_seq.borrow_and_update();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut key = source.events_key();
        let mut subscribers: std::collections::HashSet<Vec<u8>> = Default::default();
        metrics::gauge!("ganymede_events_subscribers").set(0.0);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = futures::StreamExt::next(&mut self.monitor) => {
                    match event {
                        SocketEvent::Accepted(_, peer) => { subscribers.insert(peer.to_vec()); }
                        SocketEvent::Disconnected(peer) => { subscribers.remove(peer.as_ref()); }
                        _ => {}
                    }
                    metrics::gauge!("ganymede_events_subscribers").set(subscribers.len() as f64);
                    continue;
                }
                changed = route_seq.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = heartbeat.tick() => {}
            }
            if key.is_none() {
                key = source.events_key();
            }
            let Some(key) = &key else {
                continue;
            };
            let current = *route_seq.borrow_and_update();
            while published < current {
                match source.events_after(published, BATCH) {
                    Ok(Some(events)) if !events.is_empty() => {
                        for event in events {
                            published = event.route_seq;
                            self.send(encode_event(key, &event)).await;
                        }
                        metrics::gauge!("ganymede_events_published_route_seq").set(published as f64);
                    }
                    Ok(_) => {
                        // The log was compacted (a snapshot was installed): edges catch up
                        // from a snapshot when the heartbeat shows them behind.
                        debug!(published, current, "route events compacted; skipping ahead");
                        published = current;
                    }
                    Err(err) => {
                        warn!(error = %err, "cannot read route events");
                        break;
                    }
                }
            }
            self.send(encode_heartbeat(key, published)).await;
        }
        let errors = self.socket.close().await;
        if !errors.is_empty() {
            debug!(?errors, "closing the PUB socket");
        }
    }

    async fn send(&mut self, frames: Vec<bytes::Bytes>) {
        let Ok(message) = ZmqMessage::try_from(frames) else {
            return;
        };
        // PUB never blocks on a slow subscriber; it drops (and the edge repairs).
        if let Err(err) = self.socket.send(message).await {
            debug!(error = %err, "publish failed");
        } else {
            metrics::counter!("ganymede_events_published_total").increment(1);
        }
    }
}
