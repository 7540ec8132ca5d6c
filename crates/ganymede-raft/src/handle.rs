//! [`RaftHandle`]: what the rest of Ganymede uses to replicate. Any replica may
//! propose (a follower forwards to the leader over gRPC, invisibly to the caller), read
//! linearizably (a follower asks the leader for a read index and waits until it has
//! applied that far), and change membership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ganymede_model::{Command, State};
use ganymede_proto::raft::v1::{
    AdminRequest, ProposeRequest, ReadIndexRequest, cluster_client::ClusterClient, cluster_server::ClusterServer,
    raft_server::RaftServer,
};
use ganymede_store::Store;
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::log_store::LogStore;
use crate::network::{Channels, NetworkFactory, decode, encode, never_sent};
use crate::server::{ClusterService, RaftService};
use crate::state_machine::{SharedState, StateMachine};
use crate::types::{Applied, HubNode, Proposal, Raft};

/// How a replica takes part in the cluster.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub node_id: u64,
    /// This replica's own addresses, as its peers and clients should use them.
    pub node: HubNode,
    pub data_dir: PathBuf,
    /// The static peer list a brand-new cluster starts from (this node included).
    /// Empty for a node that joins an existing cluster through `cluster add`.
    pub initial_members: BTreeMap<u64, HubNode>,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many log entries.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind a snapshot, so that a briefly lagging follower catches
    /// up from the log rather than by snapshot.
    pub logs_kept_after_snapshot: u64,
    /// How long a proposal or a read may wait for a leader before giving up.
    pub request_timeout: Duration,
    /// Mutual TLS between replicas; `None`: plaintext.
    pub peer_tls: Option<PeerTls>,
    /// Connections the Raft port keeps open at once; more are closed at once.
    pub max_connections: usize,
}

/// Mutual TLS between replicas (PEM): this replica's certificate and key, and the
/// cluster CA that signs every replica's. With it the Raft port speaks only TLS and
/// refuses a peer without a certificate from that CA, and this replica dials its peers
/// the same way.
#[derive(Clone)]
pub struct PeerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

// Not derived: the key stays out of logs.
impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] ganymede_store::StoreError),
    #[error("cannot load the state machine: {0}")]
    StateMachine(std::io::Error),
    #[error("invalid raft timing: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader could be reached within {0:?}")]
    NoLeader(Duration),
    /// The command may or may not have been committed (the leader changed or died
    /// after it was sent). Retrying blindly could apply it twice.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("this replica is shutting down: {0}")]
    Stopped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no leader confirmed the read within {0:?}")]
    NoLeader(Duration),
    #[error("this replica is shutting down: {0}")]
    Stopped(String),
}

/// A replica's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// The last log index covered by this replica's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Log entries up to this index have been purged from this replica's log.
    pub purged_index: Option<u64>,
    /// Whether this replica belongs to an initialized cluster (knows any voter).
    pub initialized: bool,
    pub members: Vec<MemberStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node_id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

/// The answer of a replica asked to act as the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Forwarded<T> {
    Done(T),
    NotLeader,
    Failed(String),
}

/// A membership change or status query, run on the leader (status: on any replica).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Admin {
    Status,
    AddNode { node_id: u64, node: HubNode, voter: bool },
    RemoveNode { node_id: u64 },
    TransferLeader { to: u64 },
}

pub(crate) struct Inner {
    raft: Raft,
    node_id: u64,
    shared: Arc<SharedState>,
    channels: Channels,
    config: RaftConfig,
    store: Store,
    /// Proposals waiting to be forwarded to the leader in one RPC.
    forward_queue: std::sync::Mutex<Vec<PendingForward>>,
    /// Forwarding RPCs under way; at most `MAX_FORWARDS_IN_FLIGHT`.
    forwards_in_flight: std::sync::atomic::AtomicUsize,
}

/// A proposal waiting in the forward queue, and where its outcome goes.
struct PendingForward {
    proposal: Proposal,
    reply: tokio::sync::oneshot::Sender<ForwardOutcome>,
}

/// What became of a forwarded proposal.
enum ForwardOutcome {
    Answered(Forwarded<Applied>),
    /// It never reached a leader: safe to retry.
    NotSent,
    /// It may or may not have been committed.
    Unknown(String),
}

/// Forwarding RPCs that may be under way at once; proposals arriving meanwhile queue up
/// and go together in the next one, so a busy follower sends few, large batches.
const MAX_FORWARDS_IN_FLIGHT: usize = 4;
/// How long a forwarded proposal waits before it checks that someone sends the queue.
const FORWARD_NUDGE: Duration = Duration::from_millis(200);

/// One forwarding slot, returned when dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
/// The most proposals in one forwarding RPC.
const MAX_FORWARD_BATCH: usize = 512;

/// A handle on this replica's Raft node. Cheap to clone.
#[derive(Clone)]
pub struct RaftHandle {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Short pause between attempts while an election settles.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

impl RaftHandle {
    /// Opens the store in `config.data_dir`, starts Raft, serves the replica's gRPC on
    /// `listener` until `shutdown`, and bootstraps a new cluster when this node is the
    /// first of `initial_members` and nobody has one yet.
    pub async fn start(
        config: RaftConfig,
        listener: tokio::net::TcpListener,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<RaftHandle, StartError> {
        let (data_dir, node_id) = (config.data_dir.clone(), config.node_id);
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, node_id))
            .await
            .map_err(|err| StartError::Raft(err.to_string()))??;
        let log_store = LogStore::new(store.clone());
        let state_machine = StateMachine::open(store.clone()).map_err(StartError::StateMachine)?;
        let shared = state_machine.shared();
        let channels = Channels::new(config.peer_tls.as_ref());
        let millis = |duration: Duration| duration.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: "ganymede".into(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|err| StartError::Config(err.to_string()))?;
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            NetworkFactory {
                channels: channels.clone(),
            },
            log_store,
            state_machine,
        )
        .await
        .map_err(|err| StartError::Raft(err.to_string()))?;

        let (raft_for_metrics, store_for_metrics) = (raft.clone(), store.downgrade());
        let inner = Arc::new(Inner {
            forward_queue: Default::default(),
            forwards_in_flight: Default::default(),
            raft: raft.clone(),
            node_id,
            shared,
            channels,
            config,
            store,
        });
        let incoming = crate::incoming::bounded(listener, inner.config.max_connections, "raft");
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &inner.config.peer_tls {
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca_pem));
            server = server
                .tls_config(tls)
                .map_err(|err| StartError::Config(format!("peer TLS: {err}")))?;
        }
        let router = server
            .add_service(RaftServer::new(RaftService { raft, node_id }))
            .add_service(ClusterServer::new(ClusterService { inner: inner.clone() }));
        let serve_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = router
                .serve_with_incoming_shutdown(incoming, serve_shutdown.cancelled_owned())
                .await
            {
                warn!(error = %err, "raft grpc server stopped");
            }
        });

        tasks.spawn(crate::observe::export(
            raft_for_metrics,
            store_for_metrics,
            node_id,
            shutdown.clone(),
        ));
        let handle = RaftHandle { inner };
        handle.inner.bootstrap_if_new().await;
        Ok(handle)
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Proposes `command` from this replica; it is committed by whichever replica leads.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        self.inner.propose(command).await
    }

    /// Runs `read` against state that reflects every write acknowledged before the call.
    pub async fn read<T>(&self, read: impl FnOnce(&State) -> T) -> Result<T, ReadError> {
        self.inner.linearize().await?;
        Ok(self.inner.shared.read(read))
    }

    /// Runs `read` against this replica's state as applied so far, without asking the
    /// leader: for hot paths (token lookups) where a few milliseconds of lag are fine.
    pub fn read_local<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        self.inner.shared.read(read)
    }

    /// This replica's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        self.inner.status()
    }

    /// Whether this replica leads the cluster right now.
    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.metrics();
        metrics.current_leader == Some(self.inner.node_id) && matches!(metrics.state, ServerState::Leader)
    }

    /// Whether this replica leads and a majority acknowledged it within `within`: a
    /// leader cut off from the others still believes it leads until its lease runs out,
    /// and must not speak for the cluster meanwhile.
    pub fn leads_with_quorum(&self, within: Duration) -> bool {
        use openraft::Instant as _;
        let metrics = self.inner.metrics();
        metrics.current_leader == Some(self.inner.node_id)
            && matches!(metrics.state, ServerState::Leader)
            && metrics
                .last_quorum_acked
                .as_ref()
                .is_some_and(|acked| acked.elapsed() <= within)
    }

    /// On the leader: the other members that have not acknowledged a heartbeat or an
    /// append for `longer_than` (or never since this replica leads), i.e. that are
    /// probably down. `None` on any other replica. A new leader has heard from nobody
    /// yet: callers wait `longer_than` into a leadership before believing this.
    pub fn silent_members(&self, longer_than: Duration) -> Option<Vec<u64>> {
        use openraft::Instant as _;
        let metrics = self.inner.metrics();
        if metrics.current_leader != Some(self.inner.node_id) {
            return None;
        }
        let heartbeat = metrics.heartbeat.as_ref()?;
        Some(
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.inner.node_id)
                .filter(|id| match heartbeat.get(id) {
                    Some(Some(acked)) => acked.elapsed() > longer_than,
                    _ => true,
                })
                .collect(),
        )
    }

    /// Adds a replica: as a learner that catches up first, then (if `voter`) as a voter.
    pub async fn add_node(&self, node_id: u64, node: HubNode, voter: bool) -> Result<ClusterStatus, ProposeError> {
        self.inner.admin(Admin::AddNode { node_id, node, voter }).await
    }

    /// Removes a replica (voter or learner) from the cluster.
    pub async fn remove_node(&self, node_id: u64) -> Result<ClusterStatus, ProposeError> {
        self.inner.admin(Admin::RemoveNode { node_id }).await
    }

    /// Hands leadership to voter `to` (e.g. before stopping the leader's machine); the
    /// answer comes once `to` leads, or with an error when it did not take over in time.
    pub async fn transfer_leader(&self, to: u64) -> Result<ClusterStatus, ProposeError> {
        self.inner.admin(Admin::TransferLeader { to }).await?;
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let mut metrics = self.inner.raft.metrics();
        loop {
            if metrics.borrow_watched().current_leader == Some(to) {
                return Ok(self.status());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(ProposeError::OutcomeUnknown(format!(
                        "node {to} did not take over as leader in time"
                    )));
                }
            }
        }
    }

    /// Waits until this replica knows a leader (itself included), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let mut metrics = self.inner.raft.metrics();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = metrics.borrow_watched().current_leader {
                return Some(leader);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or Raft stopped: no leader will come.
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Events after `seq`, from this replica's event log.
    pub fn events_after(
        &self,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<ganymede_model::Sequenced>, ganymede_store::StoreError> {
        self.inner.store.events_after(seq, limit)
    }

    /// The oldest event seq this replica's event log still holds.
    pub fn events_floor(&self) -> Result<u64, ganymede_store::StoreError> {
        self.inner.store.events_floor()
    }

    /// The newest applied log index, as it changes: wakes whoever reacts to state.
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.subscribe_applied()
    }

    /// The newest applied `route_seq`, as it changes.
    pub fn subscribe_route_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.subscribe_route_seq()
    }

    /// Up to `limit` route events after `route_seq`, from this replica's event log;
    /// `None` when the log no longer reaches back that far.
    pub fn route_events_after(
        &self,
        route_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ganymede_model::Sequenced>>, ganymede_store::StoreError> {
        self.inner.store.route_events_after(route_seq, limit)
    }

    /// Asks Raft to build a snapshot now and purge the log behind it (operators, tests).
    pub async fn snapshot_now(&self) -> Result<(), ProposeError> {
        let raft = &self.inner.raft;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|err| ProposeError::Stopped(err.to_string()))?;
        let applied = self.inner.shared.applied_index();
        raft.wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "snapshot built")
            .await
            .map_err(|err| ProposeError::Stopped(err.to_string()))?;
        raft.trigger()
            .purge_log(applied)
            .await
            .map_err(|err| ProposeError::Stopped(err.to_string()))?;
        Ok(())
    }

    /// Resolves when this replica's Raft has stopped on a fault (a storage error, a
    /// panic), with the reason; never on a shutdown. A replica that cannot write its log
    /// or apply what was committed cannot serve again: the binary exits, so that its
    /// supervisor restarts it from what is on disk.
    pub async fn stopped_by_fault(&self) -> String {
        use openraft::errors::Fatal;
        let mut metrics = self.inner.raft.metrics();
        loop {
            match &metrics.borrow_watched().running_state {
                Err(Fatal::Stopped) => break,
                Err(fatal) => return fatal.to_string(),
                Ok(()) => {}
            }
            if metrics.changed().await.is_err() {
                break;
            }
        }
        // Stopped on purpose, or without saying why: not a fault.
        std::future::pending().await
    }

    /// Stops Raft (the gRPC server stops with the shutdown token) and waits, up to a few
    /// seconds, until Raft's tasks have let go of the database, so that it closes when
    /// this handle is dropped and can be reopened at once.
    pub async fn shutdown(&self) {
        if let Err(err) = self.inner.raft.shutdown().await {
            warn!(error = %err, "raft shutdown");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.inner.store.holders() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A reference to the database that does not keep it open: tells a caller that
    /// restarts a replica in the same process when the old one has let go of its files.
    pub fn weak_store(&self) -> ganymede_store::WeakStore {
        self.inner.store.downgrade()
    }

    /// The store path, for tools that inspect what is on disk.
    pub fn data_dir(&self) -> &std::path::Path {
        self.inner.store.path()
    }

    /// openraft itself, for this crate's other modules (backups).
    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }
}

impl Inner {
    fn metrics(&self) -> openraft::RaftMetrics<crate::types::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    fn leader_node(&self) -> Option<(u64, HubNode)> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    fn cluster_client(&self, node: &HubNode) -> Result<ClusterClient<tonic::transport::Channel>, String> {
        self.channels
            .get(&node.raft_addr)
            .map(ClusterClient::new)
            .map_err(|err| err.to_string())
    }

    async fn bootstrap_if_new(&self) {
        let members = &self.config.initial_members;
        if members.keys().next() != Some(&self.node_id) {
            return;
        }
        match self.raft.is_initialized().await {
            Ok(false) => {}
            Ok(true) => return,
            Err(err) => {
                warn!(error = %err, "cannot tell whether raft is initialized");
                return;
            }
        }
        // A wiped first node must not found a second cluster next to the running one.
        for (peer_id, peer) in members.iter().filter(|(id, _)| **id != self.node_id) {
            if let Ok(Forwarded::Done(status)) = self.admin_on(peer, Admin::Status).await
                && status.initialized
            {
                info!(
                    peer_id,
                    "a peer already belongs to a cluster; waiting to be replicated to"
                );
                return;
            }
        }
        info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
        if let Err(err) = self.raft.initialize(members.clone()).await {
            warn!(error = %err, "initialize");
        }
    }

    async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let started = Instant::now();
        let outcome = self.propose_until_known(command).await;
        if outcome.is_ok() {
            crate::observe::proposal_committed(started.elapsed());
        }
        outcome
    }

    async fn propose_until_known(&self, command: Command) -> Result<Applied, ProposeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let origin = crate::origin::current().unwrap_or_else(|| ganymede_model::audit::Origin::replica(self.node_id));
        let proposal = Proposal {
            id: rand::random(),
            command,
            origin: Some(origin),
        };
        // Set when an attempt may have been committed: from then on only the same
        // proposal id may be retried (the state machine deduplicates it), and running out
        // of time is "outcome unknown", not "not committed".
        let mut unknown: Option<String> = None;
        loop {
            match self.propose_here(proposal.clone()).await {
                Ok(Forwarded::Done(applied)) => return Ok(applied),
                Ok(Forwarded::Failed(message)) => unknown = Some(message),
                Ok(Forwarded::NotLeader) => {}
                // This replica is shutting down: no retry can succeed here.
                Err(stopped) => {
                    return Err(match unknown {
                        Some(message) => ProposeError::OutcomeUnknown(message),
                        None => ProposeError::Stopped(stopped),
                    });
                }
            }
            if self.leader_node().is_some_and(|(id, _)| id != self.node_id) {
                match self.forward(proposal.clone()).await {
                    ForwardOutcome::Answered(Forwarded::Done(applied)) => return Ok(applied),
                    ForwardOutcome::Answered(Forwarded::Failed(message)) | ForwardOutcome::Unknown(message) => {
                        debug!(%message, "forwarded proposal's outcome unknown; retrying under the same id");
                        unknown = Some(message);
                    }
                    ForwardOutcome::Answered(Forwarded::NotLeader) => {
                        debug!("forwarded to a replica that no longer leads")
                    }
                    ForwardOutcome::NotSent => debug!("leader unreachable"),
                }
            }
            if Instant::now() >= deadline {
                return Err(match unknown {
                    Some(message) => ProposeError::OutcomeUnknown(message),
                    None => ProposeError::NoLeader(self.config.request_timeout),
                });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Queues `command` for the leader and makes sure someone sends the queue.
    async fn forward(&self, proposal: Proposal) -> ForwardOutcome {
        let (reply, mut outcome) = tokio::sync::oneshot::channel();
        lock(&self.forward_queue).push(PendingForward { proposal, reply });
        self.send_forward_queue().await;
        // Senders run inside their callers' futures, and a caller may be cancelled (an
        // HTTP client that hangs up): then nobody may be left to send what is queued.
        // A waiting caller looks again now and then and becomes a sender itself.
        loop {
            match tokio::time::timeout(FORWARD_NUDGE, &mut outcome).await {
                Ok(answer) => return answer.unwrap_or(ForwardOutcome::NotSent),
                Err(_) => self.send_forward_queue().await,
            }
        }
    }

    /// Sends queued proposals in batches while fewer than `MAX_FORWARDS_IN_FLIGHT`
    /// batches are under way; a caller that finds them all busy leaves its proposal to
    /// the senders, which look at the queue again before they stop.
    async fn send_forward_queue(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            if self.forwards_in_flight.fetch_add(1, SeqCst) >= MAX_FORWARDS_IN_FLIGHT {
                self.forwards_in_flight.fetch_sub(1, SeqCst);
                return;
            }
            // Given back however this sender ends, cancelled included: a slot lost to a
            // cancelled caller was never returned, and four of them stopped this replica
            // forwarding for good (proposals waited for ever: the 50-users test's stuck
            // spawns).
            let sending = InFlight(&self.forwards_in_flight);
            let batch: Vec<PendingForward> = {
                let mut queue = lock(&self.forward_queue);
                let take = queue.len().min(MAX_FORWARD_BATCH);
                queue.drain(..take).collect()
            };
            if !batch.is_empty() {
                self.send_forward_batch(batch).await;
            }
            drop(sending);
            if lock(&self.forward_queue).is_empty() {
                return;
            }
        }
    }

    async fn send_forward_batch(&self, batch: Vec<PendingForward>) {
        let (commands, replies): (Vec<Proposal>, Vec<_>) = batch.into_iter().map(|p| (p.proposal, p.reply)).unzip();
        let outcomes: Vec<ForwardOutcome> = match self.leader_node().filter(|(id, _)| *id != self.node_id) {
            None => replies.iter().map(|_| ForwardOutcome::NotSent).collect(),
            Some((_, leader)) => match self.forward_batch(&leader, &commands).await {
                Ok(answers) if answers.len() == commands.len() => {
                    answers.into_iter().map(ForwardOutcome::Answered).collect()
                }
                Ok(answers) => {
                    let message = format!("the leader answered {} of {} proposals", answers.len(), commands.len());
                    replies
                        .iter()
                        .map(|_| ForwardOutcome::Unknown(message.clone()))
                        .collect()
                }
                Err(status) if never_sent(&status) => replies.iter().map(|_| ForwardOutcome::NotSent).collect(),
                Err(status) => replies
                    .iter()
                    .map(|_| ForwardOutcome::Unknown(status.message().to_owned()))
                    .collect(),
            },
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    async fn forward_batch(
        &self,
        leader: &HubNode,
        commands: &[Proposal],
    ) -> Result<Vec<Forwarded<Applied>>, tonic::Status> {
        let mut client = self.cluster_client(leader).map_err(tonic::Status::unavailable)?;
        let bytes = encode(&commands).map_err(|err| tonic::Status::internal(err.to_string()))?;
        let mut request = tonic::Request::new(ProposeRequest { commands: bytes });
        request.set_timeout(self.config.request_timeout);
        let reply = client.propose(request).await?.into_inner();
        decode(&reply.outcomes).map_err(|err| tonic::Status::internal(err.to_string()))
    }

    /// Proposes on this replica only; `NotLeader` if it does not lead.
    pub(crate) async fn propose_locally(&self, proposal: Proposal) -> Forwarded<Applied> {
        self.propose_here(proposal).await.unwrap_or_else(Forwarded::Failed)
    }

    /// Like [`propose_locally`](Self::propose_locally), with `Err` when this replica's
    /// Raft has stopped (shutdown or a fatal error).
    async fn propose_here(&self, proposal: Proposal) -> Result<Forwarded<Applied>, String> {
        use openraft::errors::{ClientWriteError, RaftError};
        match self.raft.client_write(proposal).await {
            Ok(response) => Ok(Forwarded::Done(response.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(Forwarded::NotLeader),
            Err(RaftError::Fatal(fatal)) => Err(fatal.to_string()),
            Err(err) => Ok(Forwarded::Failed(err.to_string())),
        }
    }

    /// Confirms leadership with a quorum and returns the index a follower must have
    /// applied before it may serve a read.
    pub(crate) async fn read_index_locally(&self) -> Forwarded<u64> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read_log_id) => Forwarded::Done(read_log_id.index()),
            Err(err) if err.forward_to_leader().is_some() => Forwarded::NotLeader,
            Err(err) => Forwarded::Failed(err.to_string()),
        }
    }

    async fn linearize(&self) -> Result<(), ReadError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            match self.read_index_locally().await {
                Forwarded::Done(_) => return Ok(()),
                Forwarded::Failed(message) if self.raft.metrics().borrow_watched().running_state.is_err() => {
                    return Err(ReadError::Stopped(message));
                }
                Forwarded::Failed(_) | Forwarded::NotLeader => {}
            }
            if let Some((_, node)) = self.leader_node().filter(|(id, _)| *id != self.node_id)
                && let Some(read_index) = self.leader_read_index(&node).await
            {
                let mut applied = self.shared.subscribe_applied();
                if tokio::time::timeout_at(deadline, applied.wait_for(|index| *index >= read_index))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(ReadError::NoLeader(self.config.request_timeout));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn leader_read_index(&self, leader: &HubNode) -> Option<u64> {
        let mut client = self.cluster_client(leader).ok()?;
        let mut request = tonic::Request::new(ReadIndexRequest {});
        request.set_timeout(self.config.request_timeout);
        Some(client.read_index(request).await.ok()?.into_inner().read_index)
    }

    fn status(&self) -> ClusterStatus {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(node_id, node)| MemberStatus {
                node_id: *node_id,
                raft_addr: node.raft_addr.clone(),
                api_addr: node.api_addr.clone(),
                voter: voters.contains(node_id),
            })
            .collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ClusterStatus {
            node_id: self.node_id,
            role: role.to_owned(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
            initialized: !voters.is_empty(),
            members,
        }
    }

    async fn admin(&self, admin: Admin) -> Result<ClusterStatus, ProposeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let request = admin.clone();
            let outcome = match self.leader_node() {
                Some((leader, node)) if leader != self.node_id => match self.admin_on(&node, request).await {
                    Ok(outcome) => outcome,
                    Err(status) if never_sent(&status) => Forwarded::NotLeader,
                    Err(status) => Forwarded::Failed(status.message().to_owned()),
                },
                _ => self.admin_locally(request).await,
            };
            match outcome {
                Forwarded::Done(status) => return Ok(status),
                Forwarded::Failed(message) => return Err(ProposeError::OutcomeUnknown(message)),
                Forwarded::NotLeader => {}
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::NoLeader(self.config.request_timeout));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn admin_on(&self, node: &HubNode, admin: Admin) -> Result<Forwarded<ClusterStatus>, tonic::Status> {
        let mut client = self.cluster_client(node).map_err(tonic::Status::unavailable)?;
        let bytes = encode(&admin).map_err(|err| tonic::Status::internal(err.to_string()))?;
        let mut request = tonic::Request::new(AdminRequest { request: bytes });
        request.set_timeout(self.config.request_timeout);
        let reply = client.admin(request).await?.into_inner();
        decode(&reply.reply).map_err(|err| tonic::Status::internal(err.to_string()))
    }

    pub(crate) async fn admin_locally(&self, admin: Admin) -> Forwarded<ClusterStatus> {
        use openraft::errors::{ClientWriteError, RaftError};
        type TypeConfig = crate::types::TypeConfig;
        fn outcome<T>(result: Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>) -> Forwarded<()> {
            match result {
                Ok(_) => Forwarded::Done(()),
                Err(err) if err.forward_to_leader().is_some() => Forwarded::NotLeader,
                Err(err) => Forwarded::Failed(err.to_string()),
            }
        }
        let step = match admin {
            Admin::Status => Forwarded::Done(()),
            Admin::AddNode { node_id, node, voter } => {
                info!(node_id, ?node, voter, "adding a replica");
                match outcome(self.raft.add_learner(node_id, node, true).await) {
                    Forwarded::Done(()) if voter => outcome(
                        self.raft
                            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
                            .await,
                    ),
                    other => other,
                }
            }
            Admin::RemoveNode { node_id } => {
                info!(node_id, "removing a replica");
                let membership = self.metrics().membership_config.membership().clone();
                if membership.voter_ids().any(|id| id == node_id) {
                    outcome(
                        self.raft
                            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), false)
                            .await,
                    )
                } else if membership.get_node(&node_id).is_some() {
                    outcome(
                        self.raft
                            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                            .await,
                    )
                } else {
                    Forwarded::Failed(format!("node {node_id} is not a member"))
                }
            }
            Admin::TransferLeader { to } => {
                let metrics = self.metrics();
                if metrics.current_leader != Some(self.node_id) {
                    Forwarded::NotLeader
                } else if to == self.node_id {
                    Forwarded::Done(())
                } else if !metrics.membership_config.membership().voter_ids().any(|id| id == to) {
                    Forwarded::Failed(format!("node {to} is not a voter"))
                } else {
                    info!(to, "handing leadership over");
                    match self.raft.trigger().transfer_leader(to).await {
                        Ok(()) => Forwarded::Done(()),
                        Err(err) => Forwarded::Failed(err.to_string()),
                    }
                }
            }
        };
        match step {
            Forwarded::Done(()) => Forwarded::Done(self.status()),
            Forwarded::NotLeader => Forwarded::NotLeader,
            Forwarded::Failed(message) => Forwarded::Failed(message),
        }
    }
}
