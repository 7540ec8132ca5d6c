//! What every replica makes sure of at start: the cluster secret exists, and the
//! operator's admin token (if given) belongs to the `admin` service.

use std::time::Duration;

use ganymede_model::{Command, Rejection, TokenOwner, TokenRequest};
use ganymede_raft::{Applied, RaftHandle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::tokens::{hash_token, new_cluster_secret};

/// Makes sure the cluster has its secret and, when the operator gave one, that the
/// `admin` service holds the admin token. Idempotent: every replica runs it at start,
/// and whichever proposal loses the race is rejected harmlessly.
pub async fn provision(raft: RaftHandle, admin_token: Option<String>, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        match provision_once(&raft, admin_token.as_deref()).await {
            Ok(()) => return,
            Err(err) => tracing::debug!(error = %err, "provisioning not done yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn provision_once(raft: &RaftHandle, admin_token: Option<&str>) -> Result<(), String> {
    let now = crate::render::now_millis();
    if raft
        .read(|state| state.cluster.is_none())
        .await
        .map_err(|e| e.to_string())?
    {
        let command = Command::InitializeCluster {
            cluster_secret: new_cluster_secret().into(),
            at: now,
        };
        match raft.propose(command).await.map_err(|e| e.to_string())? {
            Applied::Rejected(Rejection::AlreadyInitialized) | Applied::Events(_) | Applied::Nothing => {}
            Applied::Rejected(other) => return Err(format!("cluster initialization refused: {other}")),
        }
        info!("cluster secret in place");
    }
    let Some(token) = admin_token else { return Ok(()) };
    let command = Command::EnsureService {
        name: "admin".into(),
        admin: true,
        roles: vec!["admin".into()],
        at: now,
    };
    if let Applied::Rejected(rejection) = raft.propose(command).await.map_err(|e| e.to_string())? {
        return Err(format!("admin service refused: {rejection}"));
    }
    let hash = hash_token(token);
    if raft
        .read(|state| state.token_by_hash(&hash).is_none())
        .await
        .map_err(|e| e.to_string())?
    {
        let command = Command::IssueToken(TokenRequest {
            hash,
            owner: TokenOwner::Service("admin".into()),
            scopes: vec!["inherit".into()],
            note: "GANYMEDE_ADMIN_TOKEN".into(),
            expires_at: None,
            at: now,
        });
        match raft.propose(command).await.map_err(|e| e.to_string())? {
            Applied::Rejected(Rejection::TokenExists) | Applied::Events(_) | Applied::Nothing => {}
            Applied::Rejected(other) => return Err(format!("admin token refused: {other}")),
        }
        info!("admin token provisioned for the admin service");
    }
    Ok(())
}
