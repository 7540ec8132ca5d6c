//! Column families and key encodings.

/// Raft log entries, keyed by big-endian index so that RocksDB's order is log order.
pub const RAFT_LOG: &str = "raft_log";
/// Raft's own metadata: vote, committed log id, last purged log id.
pub const RAFT_META: &str = "raft_meta";
pub const USERS: &str = "users";
pub const GROUPS: &str = "groups";
pub const SERVICES: &str = "services";
pub const TOKENS: &str = "tokens";
pub const ROUTES: &str = "routes";
/// Login sessions, keyed by the hash of their secret.
pub const SESSIONS: &str = "sessions";
/// OAuth clients by client id.
pub const OAUTH_CLIENTS: &str = "oauth_clients";
/// Unredeemed OAuth codes, keyed by the hash of the code.
pub const OAUTH_CODES: &str = "oauth_codes";
/// The native authenticator's accounts by user name.
pub const ACCOUNTS: &str = "accounts";
/// External identities (`<issuer>#<sub>`) → user name.
pub const IDENTITIES: &str = "identities";
/// The event log, keyed by big-endian event sequence number.
pub const EVENTS: &str = "events";
/// Route events only: big-endian `route_seq` → big-endian event `seq`.
pub const ROUTE_INDEX: &str = "route_index";
/// Replica metadata: node id, applied log id, membership, counters, cluster info, the
/// current snapshot.
pub const META: &str = "meta";

pub const ALL: [&str; 15] = [
    RAFT_LOG,
    RAFT_META,
    USERS,
    GROUPS,
    SERVICES,
    TOKENS,
    ROUTES,
    SESSIONS,
    OAUTH_CLIENTS,
    OAUTH_CODES,
    ACCOUNTS,
    IDENTITIES,
    EVENTS,
    ROUTE_INDEX,
    META,
];
/// The tables that hold the state machine's rows; replaced wholesale by a snapshot.
pub const STATE_TABLES: [&str; 12] = [
    USERS,
    GROUPS,
    SERVICES,
    TOKENS,
    ROUTES,
    SESSIONS,
    OAUTH_CLIENTS,
    OAUTH_CODES,
    ACCOUNTS,
    IDENTITIES,
    EVENTS,
    ROUTE_INDEX,
];

pub const META_NODE_ID: &[u8] = b"node_id";
pub const META_APPLIED: &[u8] = b"applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_COUNTERS: &[u8] = b"counters";
pub const META_CLUSTER: &[u8] = b"cluster";
pub const META_SNAPSHOT: &[u8] = b"snapshot";
/// The lowest event seq still in the event log (events below it were compacted).
pub const META_EVENTS_FLOOR: &[u8] = b"events_floor";

pub fn u64_key(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub fn key_u64(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}
