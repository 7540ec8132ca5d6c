//! Backups: a replica's whole replicated [`State`] as of one applied log entry, taken
//! while the cluster runs, and the state digest that lets two replicas (or a backup and
//! the cluster restored from it) be compared.
//!
//! A backup is a logical export, not a copy of RocksDB's files: the database also holds
//! the old cluster's Raft log, vote and membership, which a restore would have to undo,
//! and its column families are an internal layout. The file is
//!
//! ```text
//! {"format":"ganymede-backup","version":1,"applied_index":…,"state_digest":"sha256:…",…}\n
//! <state_bytes bytes: the State as JSON>
//! ```
//!
//! The state is read on openraft's state-machine worker, between two applies, so it and
//! the applied log id belong together. The digest is SHA-256 over exactly those bytes,
//! the canonical serialization of [`State`] (its maps are ordered), so a truncated or
//! altered file is refused, and a restored replica can prove it holds the same state.
//!
//! What the digest covers is the replicated application state: users and their servers,
//! groups, services, tokens (hashes), routes, sessions (hashes), OAuth clients and codes,
//! native accounts, external identities, the cluster secret and the counters
//! (`event_seq`, `route_seq`, last token and spawn ids). It leaves out what belongs to
//! Raft or to one replica and legitimately differs after a restore: log ids and terms,
//! the membership and the replicas' addresses, the memory of recent proposal ids, the
//! event log itself (only its counters are state), snapshots, and what a replica keeps
//! in memory (activity not yet committed, servers' plaintext tokens).

use ganymede_model::State;
use openraft::storage::RaftStateMachine;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::handle::{RaftHandle, ReadError};
use crate::state_machine::StateMachine;

/// The first field of every backup file.
pub const BACKUP_FORMAT: &str = "ganymede-backup";
/// The version of the file layout this binary writes and reads.
pub const BACKUP_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no leader confirmed the backup's read: {0}")]
    Read(#[from] ReadError),
    #[error("this replica's state machine is not available: {0}")]
    Stopped(String),
    #[error("cannot read the state machine: {0}")]
    StateMachine(std::io::Error),
    #[error("cannot serialize the state: {0}")]
    Serialize(serde_json::Error),
    #[error("not a Ganymede backup (no header line)")]
    NoHeader,
    #[error("not a Ganymede backup: bad header: {0}")]
    BadHeader(serde_json::Error),
    #[error("not a Ganymede backup (format {0:?})")]
    WrongFormat(String),
    #[error("backup version {found} is not supported (this ganymede reads version {BACKUP_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("the backup is truncated: its header announces {expected} bytes of state, the file has {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("the backup is corrupt: {found} bytes of state where its header announces {expected}")]
    Oversized { expected: u64, found: u64 },
    #[error("the backup is corrupt: its state digests to {found}, its header says {expected}")]
    DigestMismatch { expected: String, found: String },
    #[error("the backup's state does not parse (made by ganymede {made_by}): {source}")]
    BadState { made_by: String, source: serde_json::Error },
}

/// What a backup file says about itself (its first line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// The file layout's version ([`BACKUP_VERSION`]).
    pub version: u32,
    /// The version of the ganymede binary that took the backup.
    pub ganymede_version: String,
    /// The replica that took it.
    pub node_id: u64,
    /// The log index the state reflects (every entry up to it, nothing after it).
    pub applied_index: u64,
    /// The term of the entry at `applied_index`.
    pub applied_term: u64,
    /// When it was taken, milliseconds since the Unix epoch.
    pub taken_at: i64,
    /// The length of the state that follows the header line.
    pub state_bytes: u64,
    /// [`state_digest`] of the state: `sha256:<hex>`.
    pub state_digest: String,
}

/// A backup: the header and the state's canonical JSON, checked against each other.
#[derive(Clone, Debug)]
pub struct Backup {
    pub header: BackupHeader,
    state: Vec<u8>,
}

/// A replica's state digest at its applied log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub node_id: u64,
    pub applied_index: u64,
    pub applied_term: u64,
    /// `sha256:<hex>` over the canonical JSON of the state (see the module docs).
    pub state_digest: String,
}

/// Writes bytes into a SHA-256 as they are serialized, so that a digest of a large
/// state costs no copy of it.
struct Hashing(Sha256);

impl std::io::Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex_digest(hash: Sha256) -> String {
    let bytes = hash.finalize();
    let mut text = String::with_capacity(7 + 2 * bytes.len());
    text.push_str("sha256:");
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The digest of `state`: `sha256:<hex>` over its canonical JSON serialization.
pub fn state_digest(state: &State) -> Result<String, serde_json::Error> {
    let mut hashing = Hashing(Sha256::new());
    serde_json::to_writer(&mut hashing, state)?;
    Ok(hex_digest(hashing.0))
}

fn digest_of_bytes(bytes: &[u8]) -> String {
    hex_digest(Sha256::new_with_prefix(bytes))
}

impl Backup {
    /// Reads a backup file's bytes, refusing anything that is not a complete, intact
    /// backup of a version this binary reads.
    pub fn from_bytes(bytes: &[u8]) -> Result<Backup, BackupError> {
        let newline = bytes.iter().position(|b| *b == b'\n').ok_or(BackupError::NoHeader)?;
        let (line, rest) = (&bytes[..newline], &bytes[newline + 1..]);
        let header: BackupHeader = serde_json::from_slice(line).map_err(BackupError::BadHeader)?;
        if header.format != BACKUP_FORMAT {
            return Err(BackupError::WrongFormat(header.format));
        }
        if header.version != BACKUP_VERSION {
            return Err(BackupError::UnsupportedVersion { found: header.version });
        }
        let found = rest.len() as u64;
        if found < header.state_bytes {
            return Err(BackupError::Truncated {
                expected: header.state_bytes,
                found,
            });
        }
        if found > header.state_bytes {
            return Err(BackupError::Oversized {
                expected: header.state_bytes,
                found,
            });
        }
        let digest = digest_of_bytes(rest);
        if digest != header.state_digest {
            return Err(BackupError::DigestMismatch {
                expected: header.state_digest,
                found: digest,
            });
        }
        Ok(Backup {
            header,
            state: rest.to_vec(),
        })
    }

    /// The file's bytes: the header line, then the state.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BackupError> {
        let mut bytes = serde_json::to_vec(&self.header).map_err(BackupError::Serialize)?;
        bytes.reserve(1 + self.state.len());
        bytes.push(b'\n');
        bytes.extend_from_slice(&self.state);
        Ok(bytes)
    }

    /// The state, parsed.
    pub fn state(&self) -> Result<State, BackupError> {
        serde_json::from_slice(&self.state).map_err(|source| BackupError::BadState {
            made_by: self.header.ganymede_version.clone(),
            source,
        })
    }
}

impl RaftHandle {
    /// Takes a backup on this replica: after a linearizable read barrier (so it holds
    /// every write acknowledged before the call, whichever replica took it), the state
    /// exactly as of one applied entry.
    pub async fn backup(&self) -> Result<Backup, BackupError> {
        self.read(|_| ()).await?;
        self.backup_local().await
    }

    /// Takes a backup of this replica's state as applied so far, without asking a
    /// leader: still one consistent point of the log, but possibly behind the latest
    /// acknowledged writes. For a cluster that has lost its majority.
    pub async fn backup_local(&self) -> Result<Backup, BackupError> {
        let (node_id, applied_index, applied_term, state) = self.at_applied(serde_json::to_vec).await?;
        let state = state.map_err(BackupError::Serialize)?;
        let taken_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        let header = BackupHeader {
            format: BACKUP_FORMAT.into(),
            version: BACKUP_VERSION,
            ganymede_version: env!("CARGO_PKG_VERSION").into(),
            node_id,
            applied_index,
            applied_term,
            taken_at,
            state_bytes: state.len() as u64,
            state_digest: digest_of_bytes(&state),
        };
        Ok(Backup { header, state })
    }

    /// This replica's state digest at its applied entry (no read barrier: it describes
    /// this replica, which may be a little behind the leader).
    pub async fn state_digest(&self) -> Result<StateDigest, BackupError> {
        let (node_id, applied_index, applied_term, digest) = self.at_applied(state_digest).await?;
        Ok(StateDigest {
            node_id,
            applied_index,
            applied_term,
            state_digest: digest.map_err(BackupError::Serialize)?,
        })
    }

    /// Runs `read` on the state together with the applied log id it belongs to: on
    /// openraft's state-machine worker, which applies entries one batch at a time, so
    /// no apply runs in between. Keep `read` short: applies wait for it (as they wait for
    /// a snapshot being serialized).
    async fn at_applied<T: Send + 'static>(
        &self,
        read: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<(u64, u64, u64, T), BackupError> {
        let node_id = self.node_id();
        let (applied, value) = self
            .raft()
            .with_state_machine(move |sm: &mut StateMachine| {
                Box::pin(async move {
                    let applied = sm.applied_state().await.map(|(applied, _)| applied);
                    let value = sm.shared().read(read);
                    applied.map(|applied| (applied, value))
                })
            })
            .await
            .map_err(|fatal| BackupError::Stopped(fatal.to_string()))?
            .map_err(BackupError::StateMachine)?;
        let (index, term) = applied.map_or((0, 0), |log_id| (log_id.index, log_id.leader_id.term));
        Ok((node_id, index, term, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_of(state: &State) -> Vec<u8> {
        let bytes = serde_json::to_vec(state).expect("serialize");
        let backup = Backup {
            header: BackupHeader {
                format: BACKUP_FORMAT.into(),
                version: BACKUP_VERSION,
                ganymede_version: "test".into(),
                node_id: 1,
                applied_index: 7,
                applied_term: 2,
                taken_at: 0,
                state_bytes: bytes.len() as u64,
                state_digest: digest_of_bytes(&bytes),
            },
            state: bytes,
        };
        backup.to_bytes().expect("to bytes")
    }

    fn sample_state() -> State {
        let mut state = State::default();
        ganymede_model::apply(
            &mut state,
            &ganymede_model::Command::CreateUsers {
                names: vec!["alice".into(), "bob".into()],
                admin: false,
                at: 1,
            },
        )
        .expect("create users");
        state
    }

    #[test]
    fn a_backup_round_trips_and_its_digest_is_the_states() {
        let state = sample_state();
        let bytes = backup_of(&state);
        let backup = Backup::from_bytes(&bytes).expect("read back");
        assert_eq!(backup.state().expect("state"), state);
        assert_eq!(backup.header.state_digest, state_digest(&state).expect("digest"));
        assert_eq!(backup.to_bytes().expect("to bytes"), bytes);
        assert_ne!(
            state_digest(&state).expect("digest"),
            state_digest(&State::default()).expect("digest")
        );
    }

    #[test]
    fn damaged_files_are_refused_with_what_is_wrong() {
        let bytes = backup_of(&sample_state());
        let check = |bytes: &[u8], expected: &str| {
            let err = Backup::from_bytes(bytes).expect_err("refused").to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        };
        check(&bytes[..bytes.len() - 10], "truncated");
        check(&bytes[..20], "not a Ganymede backup");
        check(b"", "no header line");
        check(b"{\"format\":\"tar\"}\n", "bad header");
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"xx");
        check(&longer, "corrupt");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x01;
        check(&flipped, "digests to");
        let newer = String::from_utf8(bytes.clone())
            .expect("utf-8")
            .replacen("\"version\":1", "\"version\":9", 1);
        check(newer.as_bytes(), "version 9 is not supported");
    }
}
