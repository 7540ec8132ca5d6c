//! [`Store`]: the RocksDB database of one replica.

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ganymede_model::{ClusterInfo, Key, Sequenced, State};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::layout::{self, key_u64, u64_key};

/// What can go wrong with a replica's storage. Every variant names the data directory
/// or the row, so that an operator can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the database in {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("data directory {path} belongs to node {found}, not node {expected}")]
    WrongNode { path: PathBuf, found: u64, expected: u64 },
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("blocking storage task failed: {0}")]
    Join(String),
}

/// The state machine as persisted: the rows folded back into a [`State`], plus the
/// Raft-owned metadata stored next to them (opaque here).
#[derive(Debug, Default)]
pub struct LoadedState {
    pub state: State,
    pub applied: Option<Vec<u8>>,
    pub membership: Option<Vec<u8>>,
}

/// One applied log entry's worth of changes to the state machine tables.
pub struct AppliedWrite<'a> {
    /// The state after the entry was applied; rows are copied from it.
    pub state: &'a State,
    pub events: &'a [Sequenced],
    /// Raft's applied log id (opaque).
    pub applied: &'a [u8],
    /// Raft's membership, when the entry changed it (opaque).
    pub membership: Option<&'a [u8]>,
}

/// A raw key and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// The counters of a [`State`], kept in one meta row.
#[derive(Serialize, Deserialize)]
struct Counters {
    event_seq: u64,
    route_seq: u64,
    last_token_id: u64,
    last_spawn_id: u64,
}

/// A replica's database. Cheap to clone; all methods are blocking (call them from
/// `spawn_blocking` in async code).
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    path: PathBuf,
    node_id: u64,
}

/// A [`Store`] reference for helpers that must not keep the database open (it must be
/// closed before the process exits).
#[derive(Clone)]
pub struct WeakStore {
    db: std::sync::Weak<DB>,
    path: PathBuf,
    node_id: u64,
}

/// Bytes of memtables the whole database may hold before it flushes.
const MEMTABLE_BUDGET: usize = 32 * 1024 * 1024;
/// Bytes of blocks, indexes and filters the whole database may cache.
const BLOCK_CACHE: usize = 32 * 1024 * 1024;

impl WeakStore {
    pub fn upgrade(&self) -> Option<Store> {
        Some(Store {
            db: self.db.upgrade()?,
            path: self.path.clone(),
            node_id: self.node_id,
        })
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

fn to_json<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| corrupt(table, err))
}

fn from_json<T: for<'de> Deserialize<'de>>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| corrupt(table, err))
}

/// `ganymede_store_wal_sync_seconds`: how long the disk took to make writes durable
/// (every commit waits for one).
fn wal_synced(started: std::time::Instant) {
    metrics::histogram!("ganymede_store_wal_sync_seconds").record(started.elapsed().as_secs_f64());
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl Store {
    /// Opens (creating if needed) the database of node `node_id` in `dir`. The directory
    /// is created `0700`; a directory that belongs to another node is refused.
    pub fn open(dir: &Path, node_id: u64) -> Result<Store, StoreError> {
        let data_dir_error = |source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(data_dir_error)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(data_dir_error)?;
        let path = dir.join("db");

        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Refuse to limp along on a damaged database: report it instead.
        options.set_paranoid_checks(true);
        options.set_keep_log_file_num(4);
        // One bound on memtables across all column families (RocksDB's default is
        // 64 MB per family, each): a burst of writes flushes sooner instead of
        // growing the replica's memory with the number of families.
        options.set_db_write_buffer_size(MEMTABLE_BUDGET);
        // One block cache for every family, with their indexes and filters in it:
        // RocksDB otherwise gives each family its own 32 MB cache (15 families: a hub
        // grew to ~580 MB under a flood of route writes) and keeps every table's
        // index outside any bound.
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut tables = rocksdb::BlockBasedOptions::default();
        tables.set_block_cache(&cache);
        tables.set_cache_index_and_filter_blocks(true);
        tables.set_pin_l0_filter_and_index_blocks_in_cache(true);
        options.set_block_based_table_factory(&tables);
        let families = layout::ALL.iter().map(|name| {
            let mut cf_options = Options::default();
            cf_options.set_write_buffer_size(MEMTABLE_BUDGET / 2);
            cf_options.set_block_based_table_factory(&tables);
            cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, cf_options)
        });
        let db = DB::open_cf_descriptors(&options, &path, families).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Store {
            db: Arc::new(db),
            path: dir.to_owned(),
            node_id,
        };

        match store.db.get_cf(store.cf(layout::META), layout::META_NODE_ID)? {
            Some(bytes) => {
                let found = key_u64(&bytes).ok_or_else(|| corrupt(layout::META, "node id is not 8 bytes"))?;
                if found != node_id {
                    return Err(StoreError::WrongNode {
                        path: dir.to_owned(),
                        found,
                        expected: node_id,
                    });
                }
            }
            None => store.db.put_cf_opt(
                store.cf(layout::META),
                layout::META_NODE_ID,
                u64_key(node_id),
                &synced(),
            )?,
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node this database belongs to.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// A reference that does not keep the database open.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore {
            db: Arc::downgrade(&self.db),
            path: self.path.clone(),
            node_id: self.node_id,
        }
    }

    /// How many `Store` values share this database; it closes when the last one drops.
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.db)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("every column family is created at open")
    }

    // ---- Raft log -------------------------------------------------------------------

    /// Appends (or overwrites) log entries, synced to the WAL before returning.
    pub fn append_log(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<(), StoreError> {
        let batch = self.log_batch(entries);
        let started = std::time::Instant::now();
        self.db.write_opt(batch, &synced())?;
        wal_synced(started);
        Ok(())
    }

    /// Appends log entries without waiting for the disk: they are readable at once and
    /// durable after the next [`Store::sync`], which lets one fsync cover many appends.
    pub fn append_log_unsynced(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.db.write(self.log_batch(entries))?;
        Ok(())
    }

    fn log_batch(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> WriteBatch {
        let mut batch = WriteBatch::default();
        let cf = self.cf(layout::RAFT_LOG);
        for (index, bytes) in entries {
            batch.put_cf(cf, u64_key(index), bytes);
        }
        batch
    }

    /// Log entries with `start <= index < end`, in order.
    pub fn log_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut entries = Vec::new();
        let start_key = u64_key(start);
        for item in self.db.iterator_cf(
            self.cf(layout::RAFT_LOG),
            IteratorMode::From(&start_key, Direction::Forward),
        ) {
            let (key, value) = item?;
            let index = key_u64(&key).ok_or_else(|| corrupt(layout::RAFT_LOG, "bad key"))?;
            if index >= end {
                break;
            }
            entries.push((index, value.into_vec()));
        }
        Ok(entries)
    }

    /// The last log entry, if any.
    pub fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self.db.iterator_cf(self.cf(layout::RAFT_LOG), IteratorMode::End).next() {
            Some(item) => {
                let (key, value) = item?;
                let index = key_u64(&key).ok_or_else(|| corrupt(layout::RAFT_LOG, "bad key"))?;
                Ok(Some((index, value.into_vec())))
            }
            None => Ok(None),
        }
    }

    /// Removes log entries with index `>= from` (a conflicting suffix), synced.
    pub fn truncate_log_from(&self, from: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(layout::RAFT_LOG), u64_key(from), u64_key(u64::MAX));
        // delete_range's end is exclusive; u64::MAX is never a real index.
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Records `last_purged` (opaque) and removes entries with index `<= through`.
    pub fn purge_log_through(&self, through: u64, last_purged: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(layout::RAFT_META), b"last_purged", last_purged, &synced())?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(layout::RAFT_LOG),
            u64_key(0),
            u64_key(through.saturating_add(1)),
        );
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Reads one Raft metadata value (`vote`, `committed`, `last_purged`).
    pub fn raft_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(layout::RAFT_META), key.as_bytes())?)
    }

    /// Writes one Raft metadata value, synced.
    pub fn put_raft_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(layout::RAFT_META), key.as_bytes(), value, &synced())?;
        Ok(())
    }

    // ---- State machine ----------------------------------------------------------------

    /// Folds the state tables back into a [`State`].
    pub fn load_state(&self) -> Result<LoadedState, StoreError> {
        let mut state = State::default();
        for value in self.values(layout::USERS)? {
            let user: ganymede_model::User = from_json(layout::USERS, &value)?;
            state.users.insert(user.name.clone(), user);
        }
        for value in self.values(layout::GROUPS)? {
            let group: ganymede_model::Group = from_json(layout::GROUPS, &value)?;
            state.groups.insert(group.name.clone(), group);
        }
        for value in self.values(layout::SERVICES)? {
            let service: ganymede_model::Service = from_json(layout::SERVICES, &value)?;
            state.services.insert(service.name.clone(), service);
        }
        for value in self.values(layout::TOKENS)? {
            let token: ganymede_model::Token = from_json(layout::TOKENS, &value)?;
            state.token_ids_by_hash.insert(token.hash.clone(), token.id);
            state.tokens.insert(token.id, token);
        }
        for value in self.values(layout::ROUTES)? {
            let route: ganymede_model::Route = from_json(layout::ROUTES, &value)?;
            state.routes.insert(route.path.clone(), route);
        }
        for value in self.values(layout::SESSIONS)? {
            let (hash, session): (String, ganymede_model::Session) = from_json(layout::SESSIONS, &value)?;
            state.sessions.insert(hash, session);
        }
        for value in self.values(layout::OAUTH_CLIENTS)? {
            let client: ganymede_model::oauth::OAuthClient = from_json(layout::OAUTH_CLIENTS, &value)?;
            state.oauth_clients.insert(client.id.clone(), client);
        }
        for value in self.values(layout::OAUTH_CODES)? {
            let (hash, code): (String, ganymede_model::oauth::OAuthCode) = from_json(layout::OAUTH_CODES, &value)?;
            state.oauth_codes.insert(hash, code);
        }
        for value in self.values(layout::ACCOUNTS)? {
            let account: ganymede_model::accounts::Account = from_json(layout::ACCOUNTS, &value)?;
            state.accounts.insert(account.name.clone(), account);
        }
        for value in self.values(layout::IDENTITIES)? {
            let (identity, user): (String, String) = from_json(layout::IDENTITIES, &value)?;
            state.identities.insert(identity, user);
        }
        let meta = self.cf(layout::META);
        if let Some(bytes) = self.db.get_cf(meta, layout::META_COUNTERS)? {
            let counters: Counters = from_json(layout::META, &bytes)?;
            state.event_seq = counters.event_seq;
            state.route_seq = counters.route_seq;
            state.last_token_id = counters.last_token_id;
            state.last_spawn_id = counters.last_spawn_id;
        }
        if let Some(bytes) = self.db.get_cf(meta, layout::META_CLUSTER)? {
            state.cluster = Some(from_json::<ClusterInfo>(layout::META, &bytes)?);
        }
        Ok(LoadedState {
            state,
            applied: self.db.get_cf(meta, layout::META_APPLIED)?,
            membership: self.db.get_cf(meta, layout::META_MEMBERSHIP)?,
        })
    }

    fn values(&self, table: &'static str) -> Result<Vec<Box<[u8]>>, StoreError> {
        self.db
            .iterator_cf(self.cf(table), IteratorMode::Start)
            .map(|item| item.map(|(_, value)| value).map_err(StoreError::from))
            .collect()
    }

    /// Writes what applying entries changed, in one atomic batch: the touched rows,
    /// the new events, the counters and the applied log id. Not synced (see the crate
    /// docs): a crash loses a suffix of applies, which Raft replays from its log.
    pub fn write_applied(&self, writes: &[AppliedWrite<'_>]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for write in writes {
            self.stage_applied(&mut batch, write)?;
        }
        self.db.write(batch)?;
        Ok(())
    }

    fn stage_applied(&self, batch: &mut WriteBatch, write: &AppliedWrite<'_>) -> Result<(), StoreError> {
        let state = write.state;
        let mut touched: Vec<Key> = write
            .events
            .iter()
            .flat_map(|event| event.event.touched(state))
            .collect();
        touched.sort();
        touched.dedup();
        for key in &touched {
            self.stage_row(batch, state, key)?;
        }
        for event in write.events {
            batch.put_cf(
                self.cf(layout::EVENTS),
                u64_key(event.seq),
                to_json(layout::EVENTS, event)?,
            );
            if let Some(route_seq) = event.route_seq {
                batch.put_cf(self.cf(layout::ROUTE_INDEX), u64_key(route_seq), u64_key(event.seq));
            }
        }
        let meta = self.cf(layout::META);
        batch.put_cf(meta, layout::META_COUNTERS, to_json(layout::META, &counters_of(state))?);
        batch.put_cf(meta, layout::META_APPLIED, write.applied);
        if let Some(membership) = write.membership {
            batch.put_cf(meta, layout::META_MEMBERSHIP, membership);
        }
        Ok(())
    }

    fn stage_row(&self, batch: &mut WriteBatch, state: &State, key: &Key) -> Result<(), StoreError> {
        fn put_or_delete<T: Serialize>(
            store: &Store,
            batch: &mut WriteBatch,
            table: &'static str,
            key: &[u8],
            value: Option<&T>,
        ) -> Result<(), StoreError> {
            let cf = store.cf(table);
            match value {
                Some(value) => batch.put_cf(cf, key, to_json(table, value)?),
                None => batch.delete_cf(cf, key),
            }
            Ok(())
        }
        match key {
            Key::Cluster => put_or_delete(self, batch, layout::META, layout::META_CLUSTER, state.cluster.as_ref()),
            Key::User(name) => put_or_delete(self, batch, layout::USERS, name.as_bytes(), state.users.get(name)),
            Key::Service(name) => {
                put_or_delete(self, batch, layout::SERVICES, name.as_bytes(), state.services.get(name))
            }
            Key::Token(id) => put_or_delete(self, batch, layout::TOKENS, &u64_key(*id), state.tokens.get(id)),
            Key::Route(path) => put_or_delete(self, batch, layout::ROUTES, path.as_bytes(), state.routes.get(path)),
            Key::Session(hash) => put_or_delete(
                self,
                batch,
                layout::SESSIONS,
                hash.as_bytes(),
                state.sessions.get(hash).map(|session| (hash, session)).as_ref(),
            ),
            Key::Group(name) => put_or_delete(self, batch, layout::GROUPS, name.as_bytes(), state.groups.get(name)),
            Key::OAuthClient(id) => put_or_delete(
                self,
                batch,
                layout::OAUTH_CLIENTS,
                id.as_bytes(),
                state.oauth_clients.get(id),
            ),
            Key::OAuthCode(hash) => put_or_delete(
                self,
                batch,
                layout::OAUTH_CODES,
                hash.as_bytes(),
                state.oauth_codes.get(hash).map(|code| (hash, code)).as_ref(),
            ),
            Key::Identity(identity) => put_or_delete(
                self,
                batch,
                layout::IDENTITIES,
                identity.as_bytes(),
                state.identities.get(identity).map(|user| (identity, user)).as_ref(),
            ),
            Key::Account(name) => {
                put_or_delete(self, batch, layout::ACCOUNTS, name.as_bytes(), state.accounts.get(name))
            }
            Key::Groups => {
                for (name, group) in &state.groups {
                    put_or_delete(self, batch, layout::GROUPS, name.as_bytes(), Some(group))?;
                }
                Ok(())
            }
        }
    }

    /// Makes every write so far durable (used before a snapshot lets the log be purged).
    pub fn sync(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.db.flush_wal(true)?;
        wal_synced(started);
        Ok(())
    }

    /// The bytes the database holds on disk (live SST files) and in memtables, over
    /// every column family: what `ganymede_store_bytes` reports.
    pub fn size_bytes(&self) -> u64 {
        layout::ALL
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .map(|cf| {
                ["rocksdb.live-sst-files-size", "rocksdb.size-all-mem-tables"]
                    .iter()
                    .filter_map(|property| self.db.property_int_value_cf(cf, *property).ok().flatten())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Replaces the whole state machine with `state` (installing a snapshot), atomically
    /// and synced. The event log restarts at the snapshot's event sequence: events before
    /// it are not known here.
    pub fn replace_state(&self, state: &State, applied: &[u8], membership: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for table in layout::STATE_TABLES {
            let cf = self.cf(table);
            for item in self.db.iterator_cf(cf, IteratorMode::Start) {
                batch.delete_cf(cf, item?.0);
            }
        }
        let users: Vec<Key> = state.users.keys().cloned().map(Key::User).collect();
        let services = state.services.keys().cloned().map(Key::Service);
        let tokens = state.tokens.keys().copied().map(Key::Token);
        let routes = state.routes.keys().cloned().map(Key::Route);
        let sessions = state.sessions.keys().cloned().map(Key::Session);
        let clients = state.oauth_clients.keys().cloned().map(Key::OAuthClient);
        let codes = state.oauth_codes.keys().cloned().map(Key::OAuthCode);
        let accounts = state.accounts.keys().cloned().map(Key::Account);
        let identities = state.identities.keys().cloned().map(Key::Identity);
        for key in users
            .into_iter()
            .chain(services)
            .chain(tokens)
            .chain(routes)
            .chain(sessions)
            .chain(clients)
            .chain(codes)
            .chain(accounts)
            .chain(identities)
            .chain([Key::Groups, Key::Cluster])
        {
            self.stage_row(&mut batch, state, &key)?;
        }
        let meta = self.cf(layout::META);
        if state.cluster.is_none() {
            batch.delete_cf(meta, layout::META_CLUSTER);
        }
        batch.put_cf(meta, layout::META_COUNTERS, to_json(layout::META, &counters_of(state))?);
        batch.put_cf(meta, layout::META_APPLIED, applied);
        batch.put_cf(meta, layout::META_MEMBERSHIP, membership);
        batch.put_cf(meta, layout::META_EVENTS_FLOOR, u64_key(state.event_seq + 1));
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Stores the current snapshot (opaque), synced.
    pub fn put_snapshot(&self, snapshot: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(layout::META), layout::META_SNAPSHOT, snapshot, &synced())?;
        Ok(())
    }

    pub fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(layout::META), layout::META_SNAPSHOT)?)
    }

    // ---- Event log ----------------------------------------------------------------------

    /// The lowest event seq the log still holds; older events were compacted away.
    pub fn events_floor(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(layout::META), layout::META_EVENTS_FLOOR)?
            .and_then(|bytes| key_u64(&bytes))
            .unwrap_or(1))
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Sequenced>, StoreError> {
        let start = u64_key(after.saturating_add(1));
        self.db
            .iterator_cf(self.cf(layout::EVENTS), IteratorMode::From(&start, Direction::Forward))
            .take(limit)
            .map(|item| {
                let (_, value) = item?;
                from_json(layout::EVENTS, &value)
            })
            .collect()
    }

    /// Up to `limit` route events with `route_seq > after`, in order; `None` when the
    /// log no longer reaches back that far (the caller needs a snapshot).
    pub fn route_events_after(&self, after: u64, limit: usize) -> Result<Option<Vec<Sequenced>>, StoreError> {
        let current = match self.db.get_cf(self.cf(layout::META), layout::META_COUNTERS)? {
            Some(bytes) => from_json::<Counters>(layout::META, &bytes)?.route_seq,
            None => 0,
        };
        if after >= current {
            return Ok(Some(Vec::new()));
        }
        let index = self.cf(layout::ROUTE_INDEX);
        let start = u64_key(after + 1);
        let mut events = Vec::new();
        let rows = self
            .db
            .iterator_cf(index, IteratorMode::From(&start, Direction::Forward))
            .take(limit);
        for (expected, item) in (after + 1..).zip(rows) {
            let (key, value) = item?;
            if key_u64(&key) != Some(expected) {
                // The rows the caller needs next were compacted away.
                return Ok(None);
            }
            let seq = key_u64(&value).ok_or_else(|| corrupt(layout::ROUTE_INDEX, "bad value"))?;
            let Some(bytes) = self.db.get_cf(self.cf(layout::EVENTS), u64_key(seq))? else {
                return Ok(None);
            };
            events.push(from_json(layout::EVENTS, &bytes)?);
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(events))
    }

    /// Drops events with `seq < floor` (and their route index rows), keeping the log
    /// bounded; readers that are further behind take a snapshot instead.
    pub fn compact_events_before(&self, floor: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(layout::EVENTS), u64_key(0), u64_key(floor));
        let mut last_route_seq_below = None;
        for item in self.db.iterator_cf(self.cf(layout::ROUTE_INDEX), IteratorMode::Start) {
            let (key, value) = item?;
            match key_u64(&value) {
                Some(seq) if seq < floor => last_route_seq_below = key_u64(&key),
                _ => break,
            }
        }
        if let Some(route_seq) = last_route_seq_below {
            batch.delete_range_cf(self.cf(layout::ROUTE_INDEX), u64_key(0), u64_key(route_seq + 1));
        }
        batch.put_cf(self.cf(layout::META), layout::META_EVENTS_FLOOR, u64_key(floor));
        self.db.write(batch)?;
        Ok(())
    }

    /// Every row of every table, decoded as text where possible: for tests and tools
    /// that check what the database holds (e.g. that no secret is stored in the clear).
    pub fn dump(&self) -> Result<BTreeMap<String, Vec<Row>>, StoreError> {
        let mut tables = BTreeMap::new();
        for name in layout::ALL {
            let rows = self
                .db
                .iterator_cf(self.cf(name), IteratorMode::Start)
                .map(|item| item.map(|(key, value)| (key.into_vec(), value.into_vec())))
                .collect::<Result<Vec<_>, _>>()?;
            tables.insert(name.to_owned(), rows);
        }
        Ok(tables)
    }
}

fn counters_of(state: &State) -> Counters {
    Counters {
        event_seq: state.event_seq,
        route_seq: state.route_seq,
        last_token_id: state.last_token_id,
        last_spawn_id: state.last_spawn_id,
    }
}

#[cfg(test)]
mod tests;
