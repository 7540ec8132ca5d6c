//! The audit log's hub side: every request runs with an origin (its client's address,
//! then its caller once authenticated) that the proposals it makes carry into the log;
//! refused requests (403) are put on the record too, at a bounded rate; and admins read
//! the record at `GET /hub/api/ganymede/events`.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ganymede_model::Command;
use ganymede_model::audit::{self, AuditRecord, Origin};
use tokio::time::Instant;

use crate::Hub;

/// Denied requests recorded per replica: a burst of this many…
const DENIED_BURST: f64 = 20.0;
/// …then this many per second. A client hammering forbidden URLs must not fill the log.
const DENIED_PER_SECOND: f64 = 2.0;

/// A token bucket for denied-request records; what it turns away is counted, and the
/// count travels with the next record that gets through.
pub struct DeniedLimiter {
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl Default for DeniedLimiter {
    fn default() -> Self {
        DeniedLimiter {
            bucket: Mutex::new(Bucket {
                tokens: DENIED_BURST,
                refilled: Instant::now(),
                suppressed: 0,
            }),
        }
    }
}

impl DeniedLimiter {
    /// `Some(suppressed since the last record)` when this one may be recorded.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * DENIED_PER_SECOND).min(DENIED_BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }
}

/// The client's address: the last `X-Forwarded-For` entry — the one the edge appended
/// for the connection it took (earlier entries are whatever the client wrote) — as
/// tornado's `xheaders` reads it for JupyterHub; else the connection's peer. A client
/// that reaches a hub directly can still write its own: keep hubs' API ports for edges
/// and operators (ops/k8s' NetworkPolicies do).
pub(crate) fn client_ip(request: &Request) -> Option<String> {
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .map(str::trim)
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned);
    forwarded.or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string())
    })
}

/// Runs the request in an origin scope, and records it if it was refused.
pub(crate) async fn request_origin(State(hub): State<Hub>, request: Request, next: axum::middleware::Next) -> Response {
    let ip = client_ip(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (response, origin) = ganymede_raft::origin::scope(Origin::anonymous(ip), async move {
        let response = next.run(request).await;
        (response, ganymede_raft::origin::current())
    })
    .await;
    if response.status() == StatusCode::FORBIDDEN
        && let Some(origin) = origin
    {
        record_denied(&hub, origin, method.as_str(), &path);
    }
    response
}

fn record_denied(hub: &Hub, origin: Origin, method: &str, path: &str) {
    let Some(suppressed) = hub.denied.admit(Instant::now()) else {
        return;
    };
    // The method and the path: the route pattern is not known outside the router.
    let command = Command::RecordDenied {
        action: method.to_owned(),
        target: audit::bounded(path, audit::MAX_TARGET),
        status: StatusCode::FORBIDDEN.as_u16(),
        suppressed,
        at: crate::render::now_millis(),
    };
    // Not on the request's time: the client has its answer.
    let hub = hub.clone();
    tokio::spawn(ganymede_raft::origin::scope(origin, async move {
        propose_for_the_record(&hub, command).await;
    }));
}

/// Puts an operator's action on the cluster (a membership change, a backup) on the
/// audit record, as the current request's caller.
pub async fn record_admin_action(hub: &Hub, action: audit::AdminAction, target: String) {
    let command = Command::RecordAdminAction {
        action,
        target: audit::bounded(&target, audit::MAX_TARGET),
        at: crate::render::now_millis(),
    };
    propose_for_the_record(hub, command).await;
}

/// Proposes a command that only adds to the audit record. What it records happened
/// whether or not the record commits, so a failure is logged, not returned; and it is
/// bounded by the proposal's timeout (`cluster.request_timeout`) and by the replica's
/// life: it must not hold the replica (and its database) open after shutdown.
async fn propose_for_the_record(hub: &Hub, command: Command) {
    let kind = command.kind();
    let stopping = hub.shutdown_token();
    tokio::select! {
        proposed = hub.raft.propose(command) => {
            if let Err(err) = proposed {
                tracing::warn!(error = %err, kind, "cannot add to the audit record");
            }
        }
        () = stopping.cancelled() => {}
    }
}

/// The most records one page of the events API holds.
pub const MAX_PAGE: usize = 1000;

/// One page of the audit record: events after `since`, oldest first.
#[derive(serde::Serialize)]
pub struct AuditPage {
    pub events: Vec<AuditRecord>,
    /// Where the next page starts (`since` for the next call): the last seq given, or
    /// `since` again when there was nothing new.
    pub next_since: u64,
    /// The oldest seq this replica still holds: the record is compacted with the event
    /// log, and a reader further behind than this has missed records.
    pub oldest_kept: u64,
}

/// One page of the record from this replica's event log; the error is the store's.
pub fn page(hub: &Hub, since: u64, limit: usize) -> Result<AuditPage, String> {
    let events = hub
        .raft
        .events_after(since, limit.clamp(1, MAX_PAGE))
        .map_err(|err| err.to_string())?;
    // Activity (routes, servers, tokens and users last seen) is committed every second
    // while anyone works, including by whoever reads this record: telemetry, not
    // anyone's action. It is skipped, but the page still moves past it.
    let records: Vec<AuditRecord> = events
        .iter()
        .filter(|event| !audit::is_activity(&event.event))
        .map(audit::record)
        .collect();
    // The floor after the events: compaction only raises it, so a page that lost
    // records to a compaction running meanwhile says so (at worst it warns of a gap
    // that its events do cover; never the other way round).
    let oldest_kept = hub.raft.events_floor().map_err(|err| err.to_string())?;
    Ok(AuditPage {
        next_since: events.last().map_or(since, |event| event.seq),
        oldest_kept,
        events: records,
    })
}

/// How long `wait` may hold an events request open for new records.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_records_are_rate_limited_and_say_how_many_were_left_out() {
        let limiter = DeniedLimiter::default();
        let start = Instant::now();
        let admitted = (0..25).filter(|_| limiter.admit(start).is_some()).count();
        assert_eq!(admitted, 20);
        // Half a second later there is room for one more, which carries the count.
        assert_eq!(limiter.admit(start + Duration::from_millis(500)), Some(5));
        assert_eq!(limiter.admit(start + Duration::from_millis(500)), None);
        assert_eq!(limiter.admit(start + Duration::from_secs(10)), Some(1));
    }
}
