//! The Raft network over tonic: one lazily connected channel per peer address, reused
//! for every RPC, with openraft's messages serde-encoded inside protobuf envelopes.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganymede_proto::raft::v1::{RaftMessage, SnapshotChunk, raft_client::RaftClient};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::handle::PeerTls;
use crate::types::{HubNode, Snapshot, SnapshotData, TypeConfig, Vote};

/// Snapshots travel in pieces of this size.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// How long to wait for a TCP connection to a peer before calling it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Channels to peers, by address; shared by the Raft network and the forwarding client.
/// With TLS, every channel presents this replica's certificate and trusts only the
/// cluster CA.
#[derive(Clone, Default)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl Channels {
    pub fn new(tls: Option<&PeerTls>) -> Channels {
        Channels {
            by_addr: Arc::default(),
            tls: tls.map(|tls| {
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                    .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            }),
        }
    }

    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.by_addr.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = match &self.tls {
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone())?,
            None => Endpoint::from_shared(format!("http://{addr}"))?,
        };
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    serde_json::from_slice(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// Whether a failed call certainly never reached the peer (so retrying it elsewhere
/// cannot apply it twice).
pub fn never_sent(status: &tonic::Status) -> bool {
    let text = format!("{status:?}").to_lowercase();
    status.code() == tonic::Code::Unavailable
        && (text.contains("connect") || text.contains("connection refused") || text.contains("dns"))
        && !text.contains("reset")
}

fn rpc_error(status: tonic::Status) -> RPCError<TypeConfig> {
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        RPCError::Network(NetworkError::new(&status))
    }
}

pub struct NetworkFactory {
    pub channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &HubNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self
                .channels
                .get(&node.raft_addr)
                .map(RaftClient::new)
                .map_err(|err| err.to_string()),
        }
    }
}

pub struct PeerConnection {
    target: u64,
    /// An address that does not parse stays an error, reported on every call.
    client: Result<RaftClient<Channel>, String>,
}

impl PeerConnection {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|err| RPCError::Unreachable(Unreachable::from_string(err)))
    }

    fn message<T: serde::Serialize>(
        &self,
        body: &T,
        option: &RPCOption,
    ) -> Result<tonic::Request<RaftMessage>, RPCError<TypeConfig>> {
        let payload = encode(body).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        let mut request = tonic::Request::new(RaftMessage {
            target_node_id: self.target,
            payload,
        });
        request.set_timeout(option.hard_ttl());
        Ok(request)
    }
}

/// The remote side answers `Result<reply, error text>`.
fn reply<T: serde::de::DeserializeOwned>(message: RaftMessage) -> Result<T, RPCError<TypeConfig>> {
    let result: Result<T, String> =
        decode(&message.payload).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
    result.map_err(|err| RPCError::Unreachable(Unreachable::from_string(err)))
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = self.message(&rpc, &option)?;
        let response = self.client()?.append_entries(request).await.map_err(rpc_error)?;
        reply(response.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = self.message(&rpc, &option)?;
        let response = self.client()?.vote(request).await.map_err(rpc_error)?;
        reply(response.into_inner())
    }

    async fn transfer_leader(
        &mut self,
        rpc: openraft::raft::TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<openraft::raft::TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = self.message(&rpc, &option)?;
        let response = self.client()?.transfer_leader(request).await.map_err(rpc_error)?;
        reply(response.into_inner())
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let network_error = |err: io::Error| StreamingError::Network(NetworkError::new(&err));
        let vote = encode(&vote).map_err(network_error)?;
        let meta = encode(&snapshot.meta).map_err(network_error)?;
        let data = snapshot.snapshot.into_inner();
        let mut chunks: Vec<SnapshotChunk> = data
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .map(|piece| SnapshotChunk {
                target_node_id: self.target,
                vote: vec![],
                meta: vec![],
                data: piece.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(SnapshotChunk {
                target_node_id: self.target,
                vote: vec![],
                meta: vec![],
                data: vec![],
            });
        }
        chunks[0].vote = vote;
        chunks[0].meta = meta;
        let mut client = self.client().map_err(StreamingError::from)?;
        let call = client.install_snapshot(futures::stream::iter(chunks));
        tokio::select! {
            response = call => {
                let response = response.map_err(|status| StreamingError::from(rpc_error(status)))?;
                reply(response.into_inner()).map_err(StreamingError::from)
            }
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}
