//! Route activity as configurable-http-proxy counts it (a response below 300), kept per
//! worker (no shared lock on the request path) and reported to the hubs in batches:
//! the hub commits one command per batch, never one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ganymede_events::HubClients;
use ganymede_proto::edge::v1::{ActivityReport, RouteActivity};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Routes per report (half what the hubs accept).
const REPORT_CHUNK: usize = ganymede_events::MAX_ROUTES_PER_REPORT / 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Use {
    pub last_ms: i64,
    pub requests: u64,
}

impl Use {
    fn merge(&mut self, other: Use) {
        self.last_ms = self.last_ms.max(other.last_ms);
        self.requests += other.requests;
    }
}

type Shard = Mutex<HashMap<Arc<str>, Use>>;

#[derive(Debug)]
pub struct Activity {
    shards: Vec<Shard>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Use>> {
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Activity {
    pub fn new(workers: usize) -> Activity {
        Activity {
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    pub fn record(&self, worker: usize, route: &Arc<str>, at_ms: i64) {
        let shard = &self.shards[worker % self.shards.len()];
        lock(shard).entry(route.clone()).or_default().merge(Use {
            last_ms: at_ms,
            requests: 1,
        });
    }

    /// Everything counted since the last take, merged across workers.
    pub fn take(&self) -> HashMap<Arc<str>, Use> {
        let mut all: HashMap<Arc<str>, Use> = HashMap::new();
        for shard in &self.shards {
            for (route, route_use) in std::mem::take(&mut *lock(shard)) {
                all.entry(route).or_default().merge(route_use);
            }
        }
        all
    }

    /// Puts back what could not be reported, to go with the next report.
    pub fn restore(&self, unsent: HashMap<Arc<str>, Use>) {
        let mut shard = lock(&self.shards[0]);
        for (route, route_use) in unsent {
            shard.entry(route).or_default().merge(route_use);
        }
    }
}

/// Reports every `interval` until `shutdown`, and once more on the way out.
pub async fn report(
    activity: Arc<Activity>,
    clients: HubClients,
    edge: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let batch = activity.take();
        if !batch.is_empty() {
            let entries: Vec<(Arc<str>, Use)> = batch.into_iter().collect();
            let mut unsent = HashMap::new();
            for chunk in entries.chunks(REPORT_CHUNK) {
                let report = ActivityReport {
                    edge: edge.clone(),
                    routes: chunk
                        .iter()
                        .map(|(path, route_use)| RouteActivity {
                            path: path.to_string(),
                            last_activity_ms: route_use.last_ms,
                            requests: route_use.requests,
                            bytes: 0,
                        })
                        .collect(),
                };
                match clients.report_activity(report).await {
                    Ok(()) => metrics::counter!("ganymede_edge_activity_reports_total").increment(1),
                    Err(status) => {
                        debug!(error = %status.message(), "activity report failed; keeping it for the next one");
                        metrics::counter!("ganymede_edge_activity_report_failures_total").increment(1);
                        unsent.extend(chunk.iter().cloned());
                    }
                }
            }
            activity.restore(unsent);
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_across_workers_and_restores_what_was_not_sent() {
        let activity = Activity::new(2);
        let alice: Arc<str> = Arc::from("/user/alice");
        activity.record(0, &alice, 10);
        activity.record(1, &alice, 30);
        activity.record(3, &alice, 20);
        let taken = activity.take();
        assert_eq!(
            taken[&alice],
            Use {
                last_ms: 30,
                requests: 3
            }
        );
        assert!(activity.take().is_empty());
        activity.restore(taken);
        activity.record(1, &alice, 5);
        assert_eq!(
            activity.take()[&alice],
            Use {
                last_ms: 30,
                requests: 4
            }
        );
    }
}
