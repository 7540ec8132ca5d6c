//! Ganymede's extension: cluster membership under `/hub/api/ganymede/cluster` (admin).

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use ganymede_model::audit::AdminAction;
use ganymede_raft::{ClusterStatus, HubNode};
use serde::Deserialize;

use super::ApiJson;
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/ganymede/cluster", get(status))
        .route("/ganymede/cluster/nodes", axum::routing::post(add_node))
        .route("/ganymede/cluster/nodes/{node_id}", delete(remove_node))
        .route(
            "/ganymede/cluster/transfer-leader",
            axum::routing::post(transfer_leader),
        )
}

async fn status(State(hub): State<Hub>, caller: Caller) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require_everywhere("read:hub")?;
    Ok(Json(hub.raft.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNodeBody {
    node_id: u64,
    raft_addr: String,
    api_addr: String,
    /// Promote to voter once caught up (default), or stay a learner.
    #[serde(default = "default_true")]
    voter: bool,
}

fn default_true() -> bool {
    true
}

async fn add_node(
    State(hub): State<Hub>,
    caller: Caller,
    ApiJson(body): ApiJson<AddNodeBody>,
) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require_everywhere("admin:servers")?;
    let host_port = body
        .raft_addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0));
    if !host_port {
        return Err(ApiError::bad_request(format!(
            "raft_addr must be host:port, not {:?}",
            body.raft_addr
        )));
    }
    let target = format!(
        "node {} at {} ({})",
        body.node_id,
        body.raft_addr,
        if body.voter { "voter" } else { "learner" }
    );
    let node = HubNode {
        raft_addr: body.raft_addr,
        api_addr: body.api_addr,
    };
    let status = hub.raft.add_node(body.node_id, node, body.voter).await?;
    crate::audit::record_admin_action(&hub, AdminAction::AddNode, target).await;
    Ok(Json(status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    node_id: u64,
}

/// Hands leadership to another voter (before maintenance on the leader's machine).
async fn transfer_leader(
    State(hub): State<Hub>,
    caller: Caller,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require_everywhere("admin:servers")?;
    let status = hub.raft.transfer_leader(body.node_id).await?;
    crate::audit::record_admin_action(&hub, AdminAction::TransferLeader, format!("node {}", body.node_id)).await;
    Ok(Json(status))
}

async fn remove_node(
    State(hub): State<Hub>,
    caller: Caller,
    Path(node_id): Path<u64>,
) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require_everywhere("admin:servers")?;
    let status = hub.raft.remove_node(node_id).await?;
    crate::audit::record_admin_action(&hub, AdminAction::RemoveNode, format!("node {node_id}")).await;
    Ok(Json(status))
}
