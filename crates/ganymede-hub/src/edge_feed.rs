//! What a hub replica offers the edges (`ganymede-events`): its route table, its route
//! event log, and the events key derived from the cluster secret.

use futures::future::BoxFuture;
use ganymede_events::{EventsKey, RouteSource};
use ganymede_model::{Command, Event, RouteUse, Sequenced};
use ganymede_proto::edge::v1::{ActivityReport, Route, RouteEvent, route_event::Change};
use ganymede_raft::RaftHandle;
use tokio::sync::watch;

/// Routes per activity report: an edge splits bigger batches.
pub const MAX_ROUTES_PER_REPORT: usize = 10_000;

pub struct EdgeFeed {
    raft: RaftHandle,
}

impl EdgeFeed {
    pub fn new(raft: RaftHandle) -> EdgeFeed {
        EdgeFeed { raft }
    }
}

/// Only routing data crosses to an edge: path and target, never the route's free-form
/// data, users or tokens.
fn route_event(sequenced: Sequenced) -> Option<RouteEvent> {
    let route_seq = sequenced.route_seq?;
    let change = match sequenced.event {
        Event::RouteAdded { route } => Change::Added(Route {
            path: route.path,
            target: route.target,
        }),
        Event::RouteRemoved { path, .. } => Change::Removed(path),
        _ => return None,
    };
    Some(RouteEvent {
        route_seq,
        change: Some(change),
    })
}

impl RouteSource for EdgeFeed {
    fn events_key(&self) -> Option<EventsKey> {
        self.raft.read_local(|state| {
            state
                .cluster
                .as_ref()
                .map(|cluster| EventsKey::derive(cluster.cluster_secret.expose()))
        })
    }

    fn subscribe_route_seq(&self) -> watch::Receiver<u64> {
        self.raft.subscribe_route_seq()
    }

    fn snapshot(&self) -> (u64, Vec<Route>) {
        self.raft.read_local(|state| {
            let routes = state
                .routes
                .values()
                .map(|route| Route {
                    path: route.path.clone(),
                    target: route.target.clone(),
                })
                .collect();
            (state.route_seq, routes)
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Option<Vec<RouteEvent>>, String> {
        let events = self
            .raft
            .route_events_after(after, limit)
            .map_err(|err| err.to_string())?;
        Ok(events.map(|events| events.into_iter().filter_map(route_event).collect()))
    }

    /// One command per report, however many requests it counts (never one per request).
    fn record_activity(&self, report: ActivityReport) -> BoxFuture<'static, Result<(), String>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            if report.routes.len() > MAX_ROUTES_PER_REPORT {
                return Err(format!(
                    "an activity report may name at most {MAX_ROUTES_PER_REPORT} routes"
                ));
            }
            let routes: Vec<RouteUse> = report
                .routes
                .into_iter()
                .filter(|route| !route.path.is_empty())
                .map(|route| RouteUse {
                    path: route.path,
                    last_activity: route.last_activity_ms,
                })
                .collect();
            if routes.is_empty() {
                return Ok(());
            }
            let command = Command::RecordActivity {
                routes,
                at: crate::render::now_millis(),
            };
            raft.propose(command).await.map(|_| ()).map_err(|err| err.to_string())
        })
    }
}
