//! What a hub replica offers the edges (`ganymede-events`): its route table, its route
//! event log, and the events key derived from the cluster secret.

use std::sync::Arc;

use futures::future::BoxFuture;
use ganymede_events::{EventsKey, RouteSource};
use ganymede_model::{Event, Sequenced};
use ganymede_proto::edge::v1::{ActivityReport, Route, RouteEvent, route_event::Change};
use ganymede_raft::RaftHandle;
use tokio::sync::watch;

pub struct EdgeFeed {
    raft: RaftHandle,
    activity: Arc<crate::ActivityBatcher>,
}

impl EdgeFeed {
    /// `activity` is the hub's batcher: edge reports are committed with the rest of
    /// the replica's activity, once a second.
    pub fn new(raft: RaftHandle, activity: Arc<crate::ActivityBatcher>) -> EdgeFeed {
        EdgeFeed { raft, activity }
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

    /// Gathered into the replica's activity batch, which commits once a second: a
    /// flood of reports (every edge reports each second, a broken one may report far
    /// more) never becomes a flood of Raft commands, and only routes the table has are
    /// held. Accepted means gathered: like a request's activity, it is advisory, and a
    /// replica that dies before its next commit loses at most a second of it.
    fn record_activity(&self, report: ActivityReport) -> BoxFuture<'static, Result<(), String>> {
        // (The feed service has refused reports over `MAX_ROUTES_PER_REPORT`.)
        let now = crate::render::now_millis();
        let mut routes = report.routes;
        self.raft
            .read_local(|state| routes.retain(|route| state.routes.contains_key(&route.path)));
        // An edge's clock may run ahead; activity is never in the future.
        self.activity.routes(
            routes
                .into_iter()
                .map(|route| (route.path, route.last_activity_ms.min(now))),
        );
        Box::pin(std::future::ready(Ok(())))
    }
}
