//! The hub side: publishes every committed route event, signed, on a ZeroMQ PUB socket,
//! and a heartbeat with the newest `route_seq` every second.
//!
//! Edges do not reach the PUB socket itself: it listens on an ephemeral loopback port,
//! and the public `events.pub_bind` port relays to it, one relay per edge. zeromq 0.7
//! queues up to 100,000 messages for each subscriber that does not read (no option
//! lowers it): with 2 kB routes a paused edge cost a hub some 200 MB, and anyone able
//! to connect could open many. The relay reads the PUB side at once, so zeromq's
//! queue stays empty, holds at most [`SUBSCRIBER_BACKLOG`] bytes for a slow edge and
//! then closes the connection (the edge reconnects and repairs the gap over gRPC),
//! and takes at most [`MAX_SUBSCRIBERS`] edges at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use ganymede_proto::edge::v1::{ActivityReport, Route, RouteEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zeromq::{PubSocket, Socket, SocketEvent, SocketSend, ZmqMessage};

use crate::wire::{EventsKey, encode_event, encode_heartbeat};

const HEARTBEAT: Duration = Duration::from_secs(1);
/// Events read from the store per batch while catching up.
const BATCH: usize = 1024;
/// Bytes a relay holds for an edge that does not read before it closes the connection.
pub const SUBSCRIBER_BACKLOG: usize = 8 * 1024 * 1024;
/// Edges relayed at once; more are closed as they connect.
pub const MAX_SUBSCRIBERS: usize = 1024;

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
    /// The public port edges connect to, relayed to `socket`'s loopback port (taken
    /// by `run`).
    listener: Option<TcpListener>,
    internal: SocketAddr,
    /// Peers connecting and leaving: the subscriber count operators watch.
    monitor: futures::channel::mpsc::Receiver<SocketEvent>,
}

impl Publisher {
    /// Binds first, so that a busy port is an error at start-up, not later.
    pub async fn bind(addr: SocketAddr) -> Result<Publisher, zeromq::ZmqError> {
        let listener = TcpListener::bind(addr).await?;
        let mut socket = PubSocket::new();
        let monitor = socket.monitor();
        let zeromq::Endpoint::Tcp(_, port) = socket.bind("tcp://127.0.0.1:0").await? else {
            return Err(zeromq::ZmqError::Socket("PUB bound to a non-TCP endpoint"));
        };
        let internal = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Publisher {
            socket,
            addr: format!("tcp://{}", listener.local_addr()?),
            listener: Some(listener),
            internal,
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
        let relays = self
            .listener
            .take()
            .map(|listener| tokio::spawn(accept_subscribers(listener, self.internal, shutdown.clone())));
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
        if let Some(relays) = relays {
            relays.abort();
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

/// Takes edges on the public port until `shutdown`, each relayed to the PUB socket.
/// Dropping the set (at shutdown, or when this task is aborted) ends every relay.
async fn accept_subscribers(listener: TcpListener, internal: SocketAddr, shutdown: CancellationToken) {
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_SUBSCRIBERS));
    let mut relays = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
            // Reap finished relays so that the set does not grow with reconnections.
            Some(_) = relays.join_next(), if !relays.is_empty() => continue,
        };
        let edge = match accepted {
            Ok((edge, _)) => edge,
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin.
                debug!(error = %err, "events: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            metrics::counter!("ganymede_events_subscribers_refused_total").increment(1);
            continue;
        };
        relays.spawn(async move {
            relay(edge, internal, SUBSCRIBER_BACKLOG).await;
            drop(place);
        });
    }
}

/// Copies one edge's connection to the PUB socket and back. What the hub sends is read
/// at once and held here, at most `backlog` bytes: past that the edge is too slow, and
/// the connection is closed rather than held in memory.
async fn relay(edge: TcpStream, internal: SocketAddr, backlog: usize) {
    let Ok(hub) = TcpStream::connect(internal).await else {
        return;
    };
    let _ = (edge.set_nodelay(true), hub.set_nodelay(true));
    let (mut edge_read, mut edge_write) = edge.into_split();
    let (mut hub_read, mut hub_write) = hub.into_split();
    // The edge's side (greeting, subscriptions) is small: copied as it comes.
    let upstream = tokio::io::copy(&mut edge_read, &mut hub_write);
    tokio::pin!(upstream);
    let mut held: VecDeque<Bytes> = VecDeque::new();
    let mut held_bytes = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let front: &[u8] = held.front().map_or(&[], |bytes| bytes.as_ref());
        tokio::select! {
            read = hub_read.read(&mut chunk) => match read {
                Ok(0) | Err(_) => {
                    // The hub is going away: hand over what is held, briefly.
                    let flush = async {
                        for bytes in &held {
                            edge_write.write_all(bytes).await?;
                        }
                        edge_write.shutdown().await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
                    return;
                }
                Ok(read) => {
                    held.push_back(Bytes::copy_from_slice(&chunk[..read]));
                    held_bytes += read;
                    if held_bytes > backlog {
                        metrics::counter!("ganymede_events_slow_subscribers_closed_total").increment(1);
                        debug!(held_bytes, "events: closing a subscriber that does not read");
                        return;
                    }
                }
            },
            written = edge_write.write(front), if !front.is_empty() => match written {
                Ok(0) | Err(_) => return,
                Ok(written) => {
                    held_bytes -= written;
                    if let Some(bytes) = held.front_mut() {
                        bytes.advance(written);
                        if bytes.is_empty() {
                            held.pop_front();
                        }
                    }
                }
            },
            _ = &mut upstream => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in PUB side that writes `total` bytes (0, 1, 2, … mod 251) to whoever
    /// connects, and says how many it got written before the peer went away.
    async fn writer(total: usize) -> (SocketAddr, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let data: Vec<u8> = (0..total).map(|index| (index % 251) as u8).collect();
            let mut sent = 0;
            for piece in data.chunks(16 * 1024) {
                if stream.write_all(piece).await.is_err() {
                    break;
                }
                sent += piece.len();
            }
            sent
        });
        (addr, task)
    }

    async fn relayed(
        backlog: usize,
        total: usize,
    ) -> (TcpStream, tokio::task::JoinHandle<()>, tokio::task::JoinHandle<usize>) {
        let (internal, written) = writer(total).await;
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let public_addr = public.local_addr().expect("addr");
        let relay_task = tokio::spawn(async move {
            let (edge, _) = public.accept().await.expect("accept");
            relay(edge, internal, backlog).await;
        });
        let edge = TcpStream::connect(public_addr).await.expect("connect");
        (edge, relay_task, written)
    }

    #[tokio::test]
    async fn a_reading_subscriber_gets_every_byte_in_order() {
        let total = 6 * 1024 * 1024;
        // A backlog above the total: this reader may fall behind on a busy machine.
        let (mut edge, _relay, written) = relayed(2 * total, total).await;
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while got.len() < total {
            let read = tokio::time::timeout(Duration::from_secs(20), edge.read(&mut chunk))
                .await
                .expect("bytes keep coming")
                .expect("read");
            assert!(read > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..read]);
        }
        assert!(got.iter().enumerate().all(|(index, byte)| *byte == (index % 251) as u8));
        assert_eq!(written.await.expect("writer"), total);
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_closed_after_the_backlog() {
        let backlog = 1024 * 1024;
        // Far more than the backlog and both sockets' kernel buffers.
        let (_edge, relay_task, written) = relayed(backlog, 256 * 1024 * 1024).await;
        tokio::time::timeout(Duration::from_secs(20), relay_task)
            .await
            .expect("the relay gives up on a subscriber that does not read")
            .expect("relay task");
        let written = tokio::time::timeout(Duration::from_secs(20), written)
            .await
            .expect("the PUB side sees the connection close")
            .expect("writer");
        assert!(written < 64 * 1024 * 1024, "the relay stopped reading: {written} bytes");
    }
}
