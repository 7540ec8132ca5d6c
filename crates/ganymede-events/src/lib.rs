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
