//! The hub's gRPC service for edges: snapshots of the route table, the event log since a
//! sequence number (gap repair), and activity reports.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use ganymede_proto::edge::v1::{
    ActivityReply, ActivityReport, RouteEventsSinceReply, RouteEventsSinceRequest, RouteSnapshotChunk,
    RouteSnapshotRequest, routes_server,
};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::AUTHORIZATION;
use crate::publisher::RouteSource;

/// Routes per snapshot message (a route is ~100 bytes: ~100 kB per message).
const SNAPSHOT_CHUNK: usize = 1000;
const MAX_EVENTS_PER_REPLY: usize = 10_000;
/// A repair reply stops after the event that takes it past this many bytes: a gap of
/// large events is fetched in several replies, not held whole on both sides.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

pub struct RoutesService<S> {
    source: Arc<S>,
    token: String,
}

impl<S: RouteSource> RoutesService<S> {
    /// Edges authenticate with `token`, sent as `authorization: token <t>`.
    pub fn new(source: Arc<S>, token: String) -> routes_server::RoutesServer<RoutesService<S>> {
        routes_server::RoutesServer::new(RoutesService { source, token })
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("token ").or_else(|| value.strip_prefix("bearer ")))
            .unwrap_or("");
        if bool::from(given.trim().as_bytes().ct_eq(self.token.as_bytes())) && !self.token.is_empty() {
            Ok(())
        } else {
            metrics::counter!("ganymede_events_denied_total").increment(1);
            Err(Status::permission_denied("bad or missing edge token"))
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<RouteSnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl<S: RouteSource> routes_server::Routes for RoutesService<S> {
    type RouteSnapshotStream = ChunkStream;

    async fn route_snapshot(
        &self,
        request: Request<RouteSnapshotRequest>,
    ) -> Result<Response<Self::RouteSnapshotStream>, Status> {
        self.check(&request)?;
        let key = self
            .source
            .events_key()
            .ok_or_else(|| Status::unavailable("the cluster has no secret yet"))?;
        let (route_seq, routes) = self.source.snapshot();
        metrics::counter!("ganymede_events_snapshots_served_total").increment(1);
        let mut chunks: Vec<RouteSnapshotChunk> = routes
            .chunks(SNAPSHOT_CHUNK)
            .map(|routes| RouteSnapshotChunk {
                route_seq,
                routes: routes.to_vec(),
                events_key: Vec::new(),
                last: false,
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(RouteSnapshotChunk {
                route_seq,
                ..Default::default()
            });
        }
        chunks[0].events_key = key.as_bytes().to_vec();
        if let Some(last) = chunks.last_mut() {
            last.last = true;
        }
        Ok(Response::new(Box::pin(futures::stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn route_events_since(
        &self,
        request: Request<RouteEventsSinceRequest>,
    ) -> Result<Response<RouteEventsSinceReply>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        let latest_route_seq = *self.source.subscribe_route_seq().borrow();
        let limit = (request.limit as usize).clamp(1, MAX_EVENTS_PER_REPLY);
        let reply = match self.source.events_after(request.after, limit) {
            Ok(Some(mut events)) => {
                let mut bytes = 0;
                let within = events
                    .iter()
                    .position(|event| {
                        bytes += prost::Message::encoded_len(event);
                        bytes > MAX_REPLY_BYTES
                    })
                    .map_or(events.len(), |over| over + 1);
                events.truncate(within);
                RouteEventsSinceReply {
                    compacted: false,
                    events,
                    latest_route_seq,
                }
            }
            Ok(None) => RouteEventsSinceReply {
                compacted: true,
                events: Vec::new(),
                latest_route_seq,
            },
            Err(err) => return Err(Status::internal(err)),
        };
        Ok(Response::new(reply))
    }

    async fn report_activity(&self, request: Request<ActivityReport>) -> Result<Response<ActivityReply>, Status> {
        self.check(&request)?;
        let report = request.into_inner();
        if report.routes.len() > crate::MAX_ROUTES_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "an activity report may name at most {} routes, not {}",
                crate::MAX_ROUTES_PER_REPORT,
                report.routes.len()
            )));
        }
        self.source.record_activity(report).await.map_err(Status::unavailable)?;
        Ok(Response::new(ActivityReply {}))
    }
}
