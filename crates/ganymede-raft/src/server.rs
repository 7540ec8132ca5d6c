//! The gRPC services a replica serves to its peers: openraft's RPCs (`Raft`) and the
//! client-side forwarding and administration (`Cluster`).

use std::io::Cursor;

use futures::StreamExt;
use ganymede_proto::raft::v1::{
    AdminReply, AdminRequest, ProposeReply, ProposeRequest, RaftMessage, ReadIndexReply, ReadIndexRequest,
    SnapshotChunk, cluster_server, raft_server,
};
use tonic::{Request, Response, Status, Streaming};

use crate::handle::{Admin, Forwarded, Inner};
use crate::network::{decode, encode};
use crate::types::{Raft, Snapshot, SnapshotMeta, Vote};

fn bad_request(err: std::io::Error) -> Status {
    Status::invalid_argument(err.to_string())
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    encode(value).map_err(|err| Status::internal(err.to_string()))
}

pub struct RaftService {
    pub raft: Raft,
    pub node_id: u64,
}

impl RaftService {
    fn check_target(&self, target: u64) -> Result<(), Status> {
        if target != self.node_id {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {target}",
                self.node_id
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        self.check_target(message.target_node_id)?;
        let rpc = decode(&message.payload).map_err(bad_request)?;
        let result = self.raft.append_entries(rpc).await.map_err(|err| err.to_string());
        Ok(Response::new(RaftMessage {
            target_node_id: message.target_node_id,
            payload: encoded(&result)?,
        }))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        self.check_target(message.target_node_id)?;
        let rpc = decode(&message.payload).map_err(bad_request)?;
        let result = self.raft.vote(rpc).await.map_err(|err| err.to_string());
        Ok(Response::new(RaftMessage {
            target_node_id: message.target_node_id,
            payload: encoded(&result)?,
        }))
    }

    async fn transfer_leader(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        self.check_target(message.target_node_id)?;
        let rpc = decode(&message.payload).map_err(bad_request)?;
        let result = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(|err| err.to_string());
        Ok(Response::new(RaftMessage {
            target_node_id: message.target_node_id,
            payload: encoded(&result)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_target(first.target_node_id)?;
        let vote: Vote = decode(&first.vote).map_err(bad_request)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad_request)?;
        let mut data = first.data;
        while let Some(chunk) = chunks.next().await {
            data.extend_from_slice(&chunk?.data);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: Cursor::new(data),
        };
        let result = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|err| err.to_string());
        Ok(Response::new(RaftMessage {
            target_node_id: self.node_id,
            payload: encoded(&result)?,
        }))
    }
}

pub struct ClusterService {
    pub inner: std::sync::Arc<Inner>,
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterService {
    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        let commands: Vec<crate::types::Proposal> = decode(&request.into_inner().commands).map_err(bad_request)?;
        // Proposed concurrently, so that openraft appends them as one batch.
        let outcomes =
            futures::future::join_all(commands.into_iter().map(|command| self.inner.propose_locally(command))).await;
        Ok(Response::new(ProposeReply {
            outcomes: encoded(&outcomes)?,
        }))
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexReply>, Status> {
        match self.inner.read_index_locally().await {
            Forwarded::Done(read_index) => Ok(Response::new(ReadIndexReply { read_index })),
            Forwarded::NotLeader => Err(Status::failed_precondition("not the leader")),
            Forwarded::Failed(message) => Err(Status::unavailable(message)),
        }
    }

    async fn admin(&self, request: Request<AdminRequest>) -> Result<Response<AdminReply>, Status> {
        let admin: Admin = decode(&request.into_inner().request).map_err(bad_request)?;
        let reply = self.inner.admin_locally(admin).await;
        Ok(Response::new(AdminReply {
            reply: encoded(&reply)?,
        }))
    }
}
