//! Asking for a server to start, with the credentials it will run with: a fresh API
//! token (`$JUPYTERHUB_API_TOKEN`, also its OAuth client secret). Only the token's hash
//! is replicated; the plaintext stays in this replica's memory for the spawner that
//! starts the process here, and is gone if this replica restarts before it does (the
//! spawn then fails and is retried with new credentials).

use std::collections::HashMap;
use std::sync::Mutex;

use ganymede_model::{Command, Event, Secret};
use ganymede_raft::{Applied, ProposeError};

use crate::Hub;
use crate::render::now_millis;
use crate::tokens::{hash_token, new_token};

/// Plaintext server tokens by `(user, server)`, with the spawn they belong to.
#[derive(Default)]
pub struct ServerTokens {
    tokens: Mutex<HashMap<(String, String), (u64, Secret)>>,
}

impl ServerTokens {
    fn insert(&self, user: &str, server: &str, spawn_id: u64, token: Secret) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert((user.to_owned(), server.to_owned()), (spawn_id, token));
        }
    }

    /// The API token of spawn `spawn_id`, if this replica requested it.
    pub fn get(&self, user: &str, server: &str, spawn_id: u64) -> Option<Secret> {
        let tokens = self.tokens.lock().ok()?;
        let (id, token) = tokens.get(&(user.to_owned(), server.to_owned()))?;
        (*id == spawn_id).then(|| token.clone())
    }
}

impl Hub {
    /// Proposes `RequestSpawn` with new server credentials; on success the plaintext
    /// token is kept for [`ServerTokens::get`].
    pub async fn request_spawn(
        &self,
        user: &str,
        server: &str,
        user_options: serde_json::Value,
    ) -> Result<Applied, ProposeError> {
        let token = new_token();
        let command = Command::RequestSpawn {
            user: user.to_owned(),
            server: server.to_owned(),
            user_options,
            limits: self.settings.spawn_limits.clone(),
            api_token_hash: Some(hash_token(&token)),
            at: now_millis(),
        };
        let applied = self.raft.propose(command).await?;
        if let Applied::Events(events) = &applied
            && let Some(spawn_id) = events.iter().find_map(|e| match &e.event {
                Event::ServerSpawnRequested { spawn_id, .. } => Some(*spawn_id),
                _ => None,
            })
        {
            self.server_tokens.insert(user, server, spawn_id, token.into());
        }
        Ok(applied)
    }
}
