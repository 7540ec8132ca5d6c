//! Route events from hubs to edges (DESIGN.md §4, the ZeroMQ "clone" pattern): every
//! hub publishes each committed route event, signed, plus a heartbeat; an edge loads a
//! snapshot over gRPC, subscribes to every hub, applies events strictly in order, and
//! repairs gaps over gRPC. ZeroMQ is best-effort (no CURVE, silent drops at 100k queued,
//! slow joiners); sequence numbers, HMACs and repair make it safe to use.

mod follower;
mod publisher;
mod service;
mod subscriber;
mod table;
mod wire;

pub use follower::{Follower, Offer};
pub use publisher::{Publisher, RouteSource};
pub use service::RoutesService;
pub use subscriber::{HubClients, HubEndpoint, Subscriber, SubscriberConfig};
pub use table::{RouteEntry, RouteTable, Scheme, Upstream, normalize_key};
pub use wire::{EventsKey, Message, WireError, decode, encode_event, encode_heartbeat};

/// The gRPC metadata key and scheme an edge authenticates with (`token <t>`, like the
/// configurable-http-proxy API).
pub const AUTHORIZATION: &str = "authorization";

/// Feed requests a hub serves at once on one edge connection (an edge makes a few:
/// a snapshot or a range repair, and an activity report).
pub const MAX_REQUESTS_PER_CONNECTION: usize = 16;

/// Routes one activity report may name: an edge splits bigger batches, a hub refuses
/// bigger reports (`InvalidArgument`).
pub const MAX_ROUTES_PER_REPORT: usize = 10_000;
