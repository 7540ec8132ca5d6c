//! openraft's state machine: applies committed commands with `ganymede_model::apply`,
//! keeps the resulting [`State`] in memory for reads, and persists the touched rows and
//! events through [`ganymede_store::Store`].

use std::io;
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use ganymede_model::State;
use ganymede_store::{AppliedWrite, Store};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::failpoints;
use crate::types::{Applied, LogId, Proposal, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

/// How many events a replica keeps behind its latest snapshot for readers that catch up
/// by sequence number (edges, audit); further behind, they take a snapshot.
const EVENTS_KEPT_BEHIND_SNAPSHOT: u64 = 100_000;

/// What the application may read: the state as of the last applied entry.
#[derive(Debug)]
pub struct SharedState {
    state: RwLock<State>,
    /// The index of the last applied entry, for waiters (followers serving reads).
    applied_index: watch::Sender<u64>,
    /// The state's `route_seq`, for the route event publisher.
    route_seq: watch::Sender<u64>,
}

impl SharedState {
    /// Runs `read` against the current state. Keep it short: apply waits for it.
    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        let guard = self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&guard)
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied_index.borrow()
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    pub fn subscribe_route_seq(&self) -> watch::Receiver<u64> {
        self.route_seq.subscribe()
    }
}

/// The most entries applied in one batch.
const APPLY_BATCH: usize = 512;

/// What a snapshot holds, written straight from the live state (no copy).
#[derive(Serialize)]
struct SnapshotPayloadRef<'a> {
    state: &'a State,
    last_applied: Option<LogId>,
    membership: &'a StoredMembership,
    recent_proposals: &'a RecentProposals,
}

/// A snapshot's content: the whole state plus the Raft position it reflects.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    #[serde(default)]
    recent_proposals: RecentProposals,
}

/// A snapshot's metadata and serialized payload.
type StoredSnapshot = (SnapshotMeta, Vec<u8>);

/// The Raft-side position of the state machine.
#[derive(Default)]
struct Position {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    recent: RecentProposals,
}

/// How many proposal outcomes are remembered for deduplicating retries. Retries come
/// within a request timeout (seconds), far fewer proposals than this.
const RECENT_PROPOSALS: usize = 10_000;

/// The outcomes of the latest proposals, by proposal id: a retried proposal gets its
/// first outcome back instead of being applied again. Part of snapshots; after a
/// restart from the tables alone it starts empty (see ARCHITECTURE.md).
#[derive(Default, Serialize, Deserialize)]
struct RecentProposals {
    order: std::collections::VecDeque<u64>,
    outcomes: std::collections::HashMap<u64, Applied>,
}

impl RecentProposals {
    fn get(&self, id: u64) -> Option<&Applied> {
        self.outcomes.get(&id)
    }

    fn remember(&mut self, id: u64, outcome: Applied) {
        if self.outcomes.insert(id, outcome).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_PROPOSALS {
            if let Some(oldest) = self.order.pop_front() {
                self.outcomes.remove(&oldest);
            }
        }
    }
}

#[derive(Clone)]
pub struct StateMachine {
    store: Store,
    shared: Arc<SharedState>,
    position: Arc<Mutex<Position>>,
    /// The latest snapshot built or installed, as Raft will ask for it again.
    current_snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Applies one proposal, or answers a retried one with its first outcome. New events
/// are appended to `events`.
fn apply_proposal(
    state: &mut State,
    recent: &mut RecentProposals,
    proposal: &Proposal,
    events: &mut Vec<ganymede_model::Sequenced>,
) -> Applied {
    if let Some(first) = recent.get(proposal.id) {
        return first.clone();
    }
    let outcome = match ganymede_model::apply(state, &proposal.command) {
        Ok(mut new_events) => {
            for event in &mut new_events {
                event.origin.clone_from(&proposal.origin);
            }
            events.extend(new_events.iter().cloned());
            Applied::Events(new_events)
        }
        // Nothing changed but the applied position.
        Err(rejection) => Applied::Rejected(rejection),
    };
    recent.remember(proposal.id, outcome.clone());
    outcome
}

/// The proposal memory as replicas that never restarted have it: the snapshot's memory,
/// then the proposals applied after the snapshot replayed on the snapshot's state, in
/// log order. Starting from the snapshot's memory alone, a retry committed twice across
/// this replica's restart (the second copy after the restart) would be applied here and
/// skipped everywhere else: the replicas' states would differ for good (found by the
/// nemesis, `t40`: a token issued twice on one replica). Where the log does not hold
/// every entry since the snapshot (a restore, an interrupted snapshot install), the
/// snapshot's memory is kept: no retry can straddle those.
fn remembered_after_restart(
    store: &Store,
    (mut state, mut recent, snapshot_index): (State, RecentProposals, u64),
    position: &Position,
    loaded: &State,
) -> io::Result<RecentProposals> {
    let applied_index = position.last_applied.map_or(0, |log_id| log_id.index);
    if applied_index <= snapshot_index {
        return Ok(recent);
    }
    let rows = store
        .log_range(snapshot_index + 1, applied_index + 1)
        .map_err(io::Error::other)?;
    let complete = rows.len() as u64 == applied_index - snapshot_index
        && rows.first().is_some_and(|(index, _)| *index == snapshot_index + 1);
    if !complete {
        tracing::info!(
            snapshot_index,
            applied_index,
            "the log does not hold every entry since the snapshot; remembering the snapshot's proposals only"
        );
        return Ok(recent);
    }
    let mut events = Vec::new();
    for (_, bytes) in rows {
        let entry: crate::types::Entry = decode(&bytes)?;
        if let EntryPayload::Normal(proposal) = entry.payload {
            apply_proposal(&mut state, &mut recent, &proposal, &mut events);
            events.clear();
        }
    }
    if state != *loaded {
        tracing::error!(
            snapshot_index,
            applied_index,
            "replaying the log since the snapshot does not give the stored state"
        );
    }
    Ok(recent)
}

impl StateMachine {
    /// The outcome remembered for proposal `id`, if it is recent enough.
    #[cfg(test)]
    pub(crate) fn remembered(&self, id: u64) -> Option<Applied> {
        lock(&self.position).recent.get(id).cloned()
    }

    /// Loads the persisted state machine and its latest snapshot.
    pub fn open(store: Store) -> io::Result<StateMachine> {
        let loaded = store.load_state().map_err(io::Error::other)?;
        let position = Position {
            last_applied: loaded.applied.as_deref().map(decode).transpose()?.flatten(),
            membership: loaded
                .membership
                .as_deref()
                .map(decode)
                .transpose()?
                .unwrap_or_default(),
            recent: RecentProposals::default(),
        };
        let mut position = position;
        let (current_snapshot, base) = match store.snapshot().map_err(io::Error::other)? {
            Some(bytes) => {
                let payload: SnapshotPayload = decode(&bytes)?;
                let meta = SnapshotMeta {
                    last_log_id: payload.last_applied,
                    last_membership: payload.membership,
                };
                let index = payload.last_applied.map_or(0, |log_id| log_id.index);
                (Some((meta, bytes)), (payload.state, payload.recent_proposals, index))
            }
            None => (None, (State::default(), RecentProposals::default(), 0)),
        };
        position.recent = remembered_after_restart(&store, base, &position, &loaded.state)?;
        let applied_index = position.last_applied.map_or(0, |log_id| log_id.index);
        let route_seq = loaded.state.route_seq;
        Ok(StateMachine {
            store,
            shared: Arc::new(SharedState {
                state: RwLock::new(loaded.state),
                applied_index: watch::Sender::new(applied_index),
                route_seq: watch::Sender::new(route_seq),
            }),
            position: Arc::new(Mutex::new(position)),
            current_snapshot: Arc::new(Mutex::new(current_snapshot)),
        })
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let position = lock(&self.position);
        Ok((position.last_applied, position.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Entries that are ready together are applied together: one lock, one RocksDB
        // batch. A batch writes each touched row once, with its final value.
        let mut chunks = (&mut entries).ready_chunks(APPLY_BATCH);
        while let Some(chunk) = chunks.next().await {
            failpoints::check(failpoints::APPLY, self.store.node_id())?;
            let mut responses = Vec::with_capacity(chunk.len());
            let (applied_index, route_seq) = {
                // The position moves under the state lock, so that a snapshot built
                // concurrently sees a state and a position that belong together.
                let mut state = self
                    .shared
                    .state
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut position = lock(&self.position);
                let mut events = Vec::new();
                let mut membership_changed = false;
                for item in chunk {
                    let (entry, responder) = item?;
                    let outcome = match entry.payload {
                        EntryPayload::Blank => Applied::Nothing,
                        EntryPayload::Membership(membership) => {
                            position.membership = StoredMembership::new(Some(entry.log_id), membership);
                            membership_changed = true;
                            Applied::Nothing
                        }
                        EntryPayload::Normal(proposal) => {
                            apply_proposal(&mut state, &mut position.recent, &proposal, &mut events)
                        }
                    };
                    position.last_applied = Some(entry.log_id);
                    responses.push((responder, outcome));
                }
                let applied = encode(&position.last_applied)?;
                let membership = if membership_changed {
                    Some(encode(&position.membership)?)
                } else {
                    None
                };
                let write = AppliedWrite {
                    state: &state,
                    events: &events,
                    applied: &applied,
                    membership: membership.as_deref(),
                };
                self.store.write_applied(&[write]).map_err(io::Error::other)?;
                (position.last_applied.map_or(0, |log_id| log_id.index), state.route_seq)
            };
            failpoints::check(failpoints::APPLY_WRITTEN, self.store.node_id())?;
            self.shared.applied_index.send_replace(applied_index);
            self.shared
                .route_seq
                .send_if_modified(|seq| std::mem::replace(seq, route_seq) != route_seq);
            for (responder, outcome) in responses {
                if let Some(responder) = responder {
                    responder.send(outcome);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        failpoints::check(failpoints::SNAPSHOT_INSTALL, self.store.node_id())?;
        let bytes = snapshot.into_inner();
        let payload: SnapshotPayload = decode(&bytes)?;
        {
            let mut state = self
                .shared
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.store
                .replace_state(
                    &payload.state,
                    &encode(&meta.last_log_id)?,
                    &encode(&meta.last_membership)?,
                )
                .map_err(io::Error::other)?;
            failpoints::check(failpoints::SNAPSHOT_INSTALL_STATE_WRITTEN, self.store.node_id())?;
            self.store.put_snapshot(&bytes).map_err(io::Error::other)?;
            *state = payload.state;
            self.shared.route_seq.send_replace(state.route_seq);
            *lock(&self.position) = Position {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                recent: payload.recent_proposals,
            };
        }
        *lock(&self.current_snapshot) = Some((meta.clone(), bytes));
        self.shared
            .applied_index
            .send_replace(meta.last_log_id.map_or(0, |log_id| log_id.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.current_snapshot).as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: std::io::Cursor::new(bytes.clone()),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        failpoints::check(failpoints::SNAPSHOT_BUILD, self.store.node_id())?;
        let started = std::time::Instant::now();
        // One consistent view: apply holds the state lock while it moves the position.
        let (bytes, meta, event_seq) = {
            let state = self
                .shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let position = lock(&self.position);
            let payload = SnapshotPayloadRef {
                state: &state,
                last_applied: position.last_applied,
                membership: &position.membership,
                recent_proposals: &position.recent,
            };
            let bytes = encode(&payload)?;
            let meta = SnapshotMeta {
                last_log_id: position.last_applied,
                last_membership: position.membership.clone(),
            };
            (bytes, meta, state.event_seq)
        };
        // The log behind this snapshot may be purged next; the tables must not be behind it.
        self.store.sync().map_err(io::Error::other)?;
        self.store.put_snapshot(&bytes).map_err(io::Error::other)?;
        if event_seq > EVENTS_KEPT_BEHIND_SNAPSHOT {
            self.store
                .compact_events_before(event_seq - EVENTS_KEPT_BEHIND_SNAPSHOT)
                .map_err(io::Error::other)?;
        }
        *lock(&self.current_snapshot) = Some((meta.clone(), bytes.clone()));
        crate::observe::snapshot_built(bytes.len(), started.elapsed());
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(bytes),
        })
    }
}
