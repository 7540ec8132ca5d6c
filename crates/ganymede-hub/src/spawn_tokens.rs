//! Asking for a server to start, with the credentials it will run with: a fresh API
//! token (`$JUPYTERHUB_API_TOKEN`, also its OAuth client secret). Only the token's hash
//! is replicated; the plaintext stays in this replica's memory for the spawner that
//! starts the process here, and is gone if this replica restarts before it does (the
//! spawn then fails and is retried with new credentials).

use std::collections::HashMap;
use std::sync::Mutex;

use ganymede_model::{Command, Rejection, Secret};
use ganymede_raft::{Applied, ProposeError};

use crate::Hub;
use crate::metrics::SpawnRefusal;
use crate::render::now_millis;
use crate::tokens::{hash_token, new_token};

/// Plaintext server tokens by hash, from the moment a spawn is proposed until this
/// replica's spawner takes its token (the record names the token, and so the hash).
#[derive(Default)]
pub struct ServerTokens {
    tokens: Mutex<HashMap<String, Secret>>,
}

impl ServerTokens {
    fn insert(&self, hash: String, token: Secret) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(hash, token);
        }
    }

    fn remove(&self, hash: &str) -> Option<Secret> {
        self.tokens.lock().ok()?.remove(hash)
    }

    fn peek(&self, hash: &str) -> Option<Secret> {
        self.tokens.lock().ok()?.get(hash).cloned()
    }
}

impl Hub {
    /// Proposes `RequestSpawn` with new server credentials, placed on this replica; the
    /// plaintext token is kept for [`Hub::take_server_token`].
    pub async fn request_spawn(
        &self,
        user: &str,
        server: &str,
        user_options: serde_json::Value,
    ) -> Result<Applied, ProposeError> {
        let asked = std::time::Instant::now();
        let token = new_token();
        let command = Command::RequestSpawn {
            user: user.to_owned(),
            server: server.to_owned(),
            user_options,
            limits: self.settings.spawn_limits.clone(),
            api_token_hash: Some(hash_token(&token)),
            node: Some(self.raft.node_id()),
            at: now_millis(),
        };
        // Kept before proposing: this replica's reconciler may see the spawn applied
        // before the proposal returns.
        let hash = hash_token(&token);
        self.server_tokens.insert(hash.clone(), token.into());
        let applied = self.raft.propose(command).await;
        // Refused: no spawn will ask for it. (On an error the spawn may have been
        // committed after all; the token stays for it.)
        if matches!(applied, Ok(Applied::Rejected(_) | Applied::Nothing)) {
            self.server_tokens.remove(&hash);
        }
        let refusal = match &applied {
            Ok(Applied::Rejected(Rejection::TooManyPendingSpawns { .. })) => Some(SpawnRefusal::Throttled),
            Ok(Applied::Rejected(Rejection::TooManyActiveServers { .. })) => Some(SpawnRefusal::TooManyUsers),
            _ => None,
        };
        if let Some(refusal) = refusal {
            crate::metrics::spawn_refused(refusal, asked.elapsed());
        }
        let applied = applied?;
        Ok(applied)
    }

    /// The hash of the API token spawn `spawn_id` runs with, from the record.
    fn server_token_hash(&self, user: &str, server: &str, spawn_id: u64) -> Option<String> {
        self.raft.read_local(|state| {
            let record = state.users.get(user)?.servers.get(server)?;
            if record.spawn_id != Some(spawn_id) {
                return None;
            }
            Some(state.tokens.get(&record.api_token_id?)?.hash.clone())
        })
    }

    /// Hands the API token of spawn `spawn_id` to the spawner, once: after that it
    /// lives only in the server's environment. `None` if this replica did not request
    /// the spawn or restarted since.
    pub fn take_server_token(&self, user: &str, server: &str, spawn_id: u64) -> Option<Secret> {
        self.server_tokens
            .remove(&self.server_token_hash(user, server, spawn_id)?)
    }

    /// The API token of spawn `spawn_id`, if this replica requested it and no spawner
    /// has taken it yet.
    pub fn server_token(&self, user: &str, server: &str, spawn_id: u64) -> Option<Secret> {
        self.server_tokens
            .peek(&self.server_token_hash(user, server, spawn_id)?)
    }
}
