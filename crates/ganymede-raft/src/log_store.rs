//! openraft's log storage on [`ganymede_store::Store`].
//!
//! Appends are written at once (so readers see them) and made durable by one syncer
//! thread that fsyncs the WAL once for every batch of appends waiting on it — group
//! commit — and only then tells Raft the entries are flushed, in order.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;

use ganymede_store::Store;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, entry::RaftEntry};

use crate::types::{Entry, LogId, TypeConfig, Vote};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// The Raft log of one replica. Cloning shares the database and the syncer.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    /// Flush callbacks waiting for the next WAL sync; the syncer thread owns the
    /// receiving end and exits when the last `LogStore` clone is dropped.
    syncer: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(store: Store) -> LogStore {
        let (syncer, pending) = mpsc::channel::<IOFlushed<TypeConfig>>();
        // The syncer must not keep the database open: it has to close before exit.
        let sync_store = store.downgrade();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                while let Ok(first) = pending.recv() {
                    let mut batch = vec![first];
                    batch.extend(pending.try_iter());
                    let result = match sync_store.upgrade() {
                        Some(store) => store.sync().map_err(io::Error::other),
                        None => Err(io::Error::other("the database is closed")),
                    };
                    for callback in batch {
                        callback.io_completed(
                            result
                                .as_ref()
                                .map(|_| ())
                                .map_err(|err| io::Error::other(err.to_string())),
                        );
                    }
                }
            })
            .expect("spawning the log sync thread");
        LogStore { store, syncer }
    }
}

fn io_err(err: ganymede_store::StoreError) -> io::Error {
    io::Error::other(err)
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_bounds(&range);
        let rows = self.store.log_range(start, end).map_err(io_err)?;
        rows.iter().map(|(_, bytes)| decode(bytes)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.store
            .raft_meta(VOTE)
            .map_err(io_err)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self
            .store
            .raft_meta(LAST_PURGED)
            .map_err(io_err)?
            .map(|bytes| decode(&bytes))
            .transpose()?;
        let last = match self.store.last_log().map_err(io_err)? {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes)?.log_id()),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.store.put_raft_meta(VOTE, &encode(vote)?).map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced on purpose: it only lets a restart re-apply sooner; losing it is safe.
        self.store
            .put_raft_meta(COMMITTED, &encode(&committed)?)
            .map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .store
            .raft_meta(COMMITTED)
            .map_err(io_err)?
            .map(|bytes| decode(&bytes))
            .transpose()?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        crate::failpoints::check(crate::failpoints::LOG_APPEND, self.store.node_id())?;
        let rows = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, encode(&entry)?)))
            .collect::<io::Result<Vec<_>>>()?;
        self.store.append_log_unsynced(rows).map_err(io_err)?;
        self.syncer
            .send(callback)
            .map_err(|_| io::Error::other("the log sync thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |log_id| log_id.index + 1);
        self.store.truncate_log_from(from).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        crate::failpoints::check(crate::failpoints::PURGE, self.store.node_id())?;
        self.store
            .purge_log_through(log_id.index, &encode(&log_id)?)
            .map_err(io_err)
    }
}
