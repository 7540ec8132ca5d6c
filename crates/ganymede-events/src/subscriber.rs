//! The edge side: loads a snapshot, subscribes to every hub's PUB socket, applies events
//! in order through a [`Follower`], repairs gaps over gRPC, and swaps the finished table
//! into an `ArcSwap` that the request path reads without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::StreamExt;
use ganymede_proto::edge::v1::{
    ActivityReport, RouteEventsSinceRequest, RouteSnapshotRequest, routes_client::RoutesClient,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket};

use crate::AUTHORIZATION;
use crate::follower::{Follower, Offer};
use crate::table::{RouteEntry, RouteTable};
use crate::wire::{EventsKey, Message, WireError, decode};

/// Messages from the hubs' streams waiting for the follower.
const MESSAGES_QUEUED: usize = 1024;

/// Where to reach one hub replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubEndpoint {
    /// gRPC, e.g. `http://127.0.0.1:8381`.
    pub grpc: String,
    /// ZeroMQ PUB, e.g. `tcp://127.0.0.1:8481`.
    pub events: String,
}

#[derive(Clone, Debug)]
pub struct SubscriberConfig {
    pub hubs: Vec<HubEndpoint>,
    /// The edge token (`CONFIGPROXY_AUTH_TOKEN`).
    pub token: String,
    /// How long to wait for a missing event to arrive from another hub before repairing.
    pub repair_delay: Duration,
    /// With no message from any hub for this long, poll a hub over gRPC.
    pub silence_poll: Duration,
    /// The CA (PEM) that signed the hubs' gRPC certificates; `None` for plaintext.
    pub grpc_ca: Option<Vec<u8>>,
    /// The certificate and key (PEM) this edge presents to hubs that ask for one
    /// (mutual TLS, `events.tls_client_ca`).
    pub grpc_identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The gRPC clients of every hub, with the edge token attached to each call.
#[derive(Clone)]
pub struct HubClients {
    clients: Vec<RoutesClient<Channel>>,
    token: Arc<str>,
    next: Arc<AtomicU64>,
}

impl HubClients {
    pub fn new(
        hubs: &[HubEndpoint],
        token: &str,
        grpc_ca: Option<&[u8]>,
        grpc_identity: Option<(&[u8], &[u8])>,
    ) -> Result<HubClients, tonic::transport::Error> {
        let mut clients = Vec::new();
        for hub in hubs {
            let mut endpoint = Endpoint::from_shared(hub.grpc.clone())?;
            if let Some(ca) = grpc_ca {
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca));
                if let Some((cert, key)) = grpc_identity {
                    tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                endpoint = endpoint.tls_config(tls)?;
            }
            let channel = endpoint
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .connect_lazy();
            clients.push(
                RoutesClient::new(channel)
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .max_encoding_message_size(16 * 1024 * 1024),
            );
        }
        Ok(HubClients {
            clients,
            token: Arc::from(token),
            next: Arc::default(),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = format!("token {}", self.token).parse() {
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        request
    }

    /// The hubs in the order to try them: round-robin, so that one dead hub is not
    /// always asked first.
    fn rotation(&self) -> impl Iterator<Item = RoutesClient<Channel>> + '_ {
        let start = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        let count = self.clients.len();
        (0..count).map(move |offset| self.clients[(start + offset) % count].clone())
    }

    /// Sends an activity report to the first hub that takes it.
    pub async fn report_activity(&self, report: ActivityReport) -> Result<(), tonic::Status> {
        let mut last = tonic::Status::unavailable("no hubs configured");
        for mut client in self.rotation() {
            match client.report_activity(self.request(report.clone())).await {
                Ok(_) => return Ok(()),
                // Every hub would say the same.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                    ) =>
                {
                    return Err(status);
                }
                Err(status) => last = status,
            }
        }
        Err(last)
    }

    async fn snapshot(
        &self,
        client: &mut RoutesClient<Channel>,
    ) -> Result<(u64, EventsKey, Vec<RouteEntry>), tonic::Status> {
        let mut stream = client
            .route_snapshot(self.request(RouteSnapshotRequest {}))
            .await?
            .into_inner();
        let mut routes = Vec::new();
        let mut key = None;
        let mut route_seq = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if key.is_none() {
                key = EventsKey::from_bytes(&chunk.events_key);
                route_seq = chunk.route_seq;
            }
            routes.extend(
                chunk
                    .routes
                    .iter()
                    .map(|route| RouteEntry::new(&route.path, &route.target)),
            );
            if chunk.last {
                let key = key.ok_or_else(|| tonic::Status::internal("snapshot without an events key"))?;
                return Ok((route_seq, key, routes));
            }
        }
        Err(tonic::Status::unavailable("snapshot stream ended early"))
    }
}

pub struct Subscriber {
    config: SubscriberConfig,
    clients: HubClients,
    table: Arc<ArcSwap<RouteTable>>,
    /// The newest `route_seq` announced by any hub (for the lag gauge).
    newest_seen: Arc<AtomicU64>,
}

impl Subscriber {
    pub fn new(config: SubscriberConfig) -> Result<Subscriber, tonic::transport::Error> {
        let identity = config
            .grpc_identity
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice()));
        let clients = HubClients::new(&config.hubs, &config.token, config.grpc_ca.as_deref(), identity)?;
        Ok(Subscriber {
            config,
            clients,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            newest_seen: Arc::default(),
        })
    }

    /// The live table: `load()` it per request.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.table.clone()
    }

    /// The newest `route_seq` any hub has announced, as it changes.
    pub fn newest_seen(&self) -> Arc<AtomicU64> {
        self.newest_seen.clone()
    }

    pub fn clients(&self) -> HubClients {
        self.clients.clone()
    }

    /// Follows the hubs until `shutdown`; keeps the last table when no hub answers.
    pub async fn run(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let mut follower = Follower::default();
        let Some(key) = self.bootstrap(&mut follower, &shutdown).await else {
            return;
        };
        let key = Arc::new(key);
        // Decoded messages waiting for the follower. Small: when it is full the hubs'
        // streams wait, the hubs' PUB queues fill and drop, and a repair fetches what
        // was dropped; a deep queue would only hold the same events in memory (a
        // paused edge woke up to some 100 MB of them with 65,536 places).
        let (sender, mut receiver) = mpsc::channel::<Message>(MESSAGES_QUEUED);
        for hub in &self.config.hubs {
            tasks.spawn(subscribe(
                hub.events.clone(),
                key.clone(),
                sender.clone(),
                shutdown.clone(),
            ));
        }
        drop(sender);
        let mut last_message = Instant::now();
        let mut behind_since: Option<Instant> = None;
        let mut poll = tokio::time::interval(self.config.silence_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let repair_at = behind_since.map(|since| since + self.config.repair_delay);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = receiver.recv() => {
                    let Some(message) = message else { break };
                    last_message = Instant::now();
                    let before = follower.route_seq();
                    self.take(&mut follower, message);
                    // Take whatever else is already queued before publishing the table.
                    for _ in 0..4096 {
                        match receiver.try_recv() {
                            Ok(message) => self.take(&mut follower, message),
                            Err(_) => break,
                        }
                    }
                    if follower.route_seq() != before {
                        self.publish(&follower);
                    }
                }
                _ = sleep_until(repair_at) => {
                    self.repair(&mut follower).await;
                }
                _ = poll.tick() => {
                    if last_message.elapsed() >= self.config.silence_poll {
                        // No hub has been heard from: ask one (a hub restarted, or the
                        // PUB sockets are unreachable while gRPC works).
                        self.repair(&mut follower).await;
                    }
                }
            }
            behind_since = match (follower.behind(), behind_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
        }
        tasks.close();
        tasks.wait().await;
    }

    fn take(&self, follower: &mut Follower, message: Message) {
        match message {
            Message::Event(event) => match follower.offer(event) {
                Offer::Applied(held) => {
                    metrics::counter!("ganymede_edge_route_events_applied_total").increment(1 + held as u64);
                }
                Offer::Duplicate => {
                    metrics::counter!("ganymede_edge_route_events_duplicate_total").increment(1);
                }
                Offer::Gap => {}
            },
            Message::Heartbeat { route_seq } => follower.heartbeat(route_seq),
        }
        self.newest_seen.store(follower.newest_seen(), Ordering::Relaxed);
    }

    fn publish(&self, follower: &Follower) {
        let table = follower.table().clone();
        metrics::gauge!("ganymede_edge_routes").set(table.len() as f64);
        metrics::gauge!("ganymede_edge_route_seq").set(table.route_seq() as f64);
        metrics::gauge!("ganymede_edge_route_seq_newest").set(follower.newest_seen() as f64);
        self.table.store(Arc::new(table));
    }

    async fn bootstrap(&self, follower: &mut Follower, shutdown: &CancellationToken) -> Option<EventsKey> {
        let mut attempts = 0u32;
        loop {
            for mut client in self.clients.rotation() {
                match self.clients.snapshot(&mut client).await {
                    Ok((route_seq, key, routes)) => {
                        let count = routes.len();
                        follower.load_snapshot(route_seq, routes);
                        metrics::counter!("ganymede_edge_snapshots_total").increment(1);
                        self.publish(follower);
                        info!(route_seq, routes = count, "route table loaded");
                        return Some(key);
                    }
                    Err(status) => {
                        if attempts.is_multiple_of(25) {
                            warn!(error = %status.message(), "no route snapshot yet");
                        }
                    }
                }
            }
            attempts += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Fetches what is missing from the first hub that has it.
    async fn repair(&self, follower: &mut Follower) {
        let before = follower.route_seq();
        'hubs: for mut client in self.clients.rotation() {
            loop {
                let request = RouteEventsSinceRequest {
                    after: follower.route_seq(),
                    limit: 10_000,
                };
                let reply = match client.route_events_since(self.clients.request(request)).await {
                    Ok(reply) => reply.into_inner(),
                    Err(status) => {
                        debug!(error = %status.message(), "repair: hub unavailable");
                        continue 'hubs;
                    }
                };
                follower.heartbeat(reply.latest_route_seq);
                if reply.compacted {
                    match self.clients.snapshot(&mut client).await {
                        Ok((route_seq, _key, routes)) => {
                            follower.load_snapshot(route_seq, routes);
                            metrics::counter!("ganymede_edge_snapshots_total").increment(1);
                        }
                        Err(_) => continue 'hubs,
                    }
                } else {
                    let got = reply.events.len();
                    for event in reply.events {
                        follower.offer(event);
                    }
                    if got == 0 {
                        // This hub has nothing newer; another may (it lags, or we do).
                        if follower.behind() {
                            continue 'hubs;
                        }
                        break 'hubs;
                    }
                }
                if !follower.behind() {
                    break 'hubs;
                }
            }
        }
        if follower.route_seq() != before {
            metrics::counter!("ganymede_edge_gap_repairs_total").increment(1);
            self.publish(follower);
        }
        if follower.behind() && follower.newest_seen() > follower.route_seq() {
            // Nobody had what a heartbeat promised (it came from a hub now gone). Forget
            // the promise; the next heartbeat renews it if it still holds.
            follower.forget_newest();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One hub's PUB stream: connect (retrying quickly, unlike zeromq's own backoff that
/// grows to 30 s), verify, forward; on disconnect start over with a fresh socket.
async fn subscribe(endpoint: String, key: Arc<EventsKey>, sender: mpsc::Sender<Message>, shutdown: CancellationToken) {
    loop {
        let mut options = SocketOptions::default();
        options.connect_timeout(Duration::from_secs(1));
        let mut socket = SubSocket::with_options(options);
        let mut monitor = socket.monitor();
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = async {
                socket.subscribe("").await?;
                socket.connect(&endpoint).await
            } => connected,
        };
        if let Err(err) = connected {
            debug!(%endpoint, error = %err, "cannot subscribe yet");
            drop(socket);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
            }
        }
        debug!(%endpoint, "subscribed");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = monitor.next() => {
                    if matches!(event, Some(SocketEvent::Disconnected(_)) | None) {
                        debug!(%endpoint, "publisher disconnected");
                        break;
                    }
                }
                received = socket.recv() => {
                    let frames: Vec<Bytes> = match received {
                        Ok(message) => message.into_vec(),
                        Err(err) => {
                            debug!(%endpoint, error = %err, "receive failed");
                            break;
                        }
                    };
                    match decode(&key, &frames) {
                        Ok(message) => {
                            if sender.send(message).await.is_err() {
                                return;
                            }
                        }
                        Err(WireError::BadHmac) => {
                            metrics::counter!("ganymede_edge_bad_hmac_total").increment(1);
                        }
                        Err(err) => {
                            debug!(%endpoint, error = %err, "malformed message");
                            metrics::counter!("ganymede_edge_malformed_messages_total").increment(1);
                        }
                    }
                }
            }
        }
        drop(socket);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
