//! Activity without flooding Raft: activity POSTs, token use and the edges' route
//! activity reports are gathered in memory per replica and committed once a second at
//! most (one `RecordApiActivity` and one `RecordActivity`). A read on any replica sees
//! them once those commands commit (within about a second).
//!
//! However many reports come in, what is held is one time per existing user, server,
//! token and route: the callers only gather for things the state has, so a flood
//! costs CPU, never memory or Raft log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ganymede_model::{Command, RouteUse, Timestamp, TokenUse, UserActivity};
use ganymede_raft::RaftHandle;
use tokio_util::sync::CancellationToken;

/// How often gathered activity is committed.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pending {
    /// user → (newest user activity, newest activity per server).
    users: BTreeMap<String, (Option<Timestamp>, BTreeMap<String, Timestamp>)>,
    tokens: BTreeMap<u64, Timestamp>,
    /// route path → newest request an edge saw on it.
    routes: BTreeMap<String, Timestamp>,
}

/// What this replica has seen and not yet committed.
#[derive(Default)]
pub struct ActivityBatcher {
    pending: Mutex<Pending>,
}

fn newest(slot: &mut Option<Timestamp>, when: Timestamp) {
    *slot = Some(slot.map_or(when, |seen| seen.max(when)));
}

impl ActivityBatcher {
    pub fn user(&self, user: &str, when: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = pending.users.entry(user.to_owned()).or_default();
        newest(&mut entry.0, when);
    }

    pub fn server(&self, user: &str, server: &str, when: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = pending.users.entry(user.to_owned()).or_default();
        let slot = entry.1.entry(server.to_owned()).or_insert(when);
        *slot = (*slot).max(when);
    }

    pub fn token(&self, id: u64, when: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = pending.tokens.entry(id).or_insert(when);
        *slot = (*slot).max(when);
    }

    /// An edge saw requests answered on these routes, each last at its time.
    pub fn routes(&self, uses: impl IntoIterator<Item = (String, Timestamp)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (path, when) in uses {
            let slot = pending.routes.entry(path).or_insert(when);
            *slot = (*slot).max(when);
        }
    }

    /// How many users, tokens and routes wait for the next commit.
    #[cfg(test)]
    fn pending_len(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.users.len() + pending.tokens.len() + pending.routes.len()
    }

    fn take(&self) -> Vec<Command> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let at = crate::render::now_millis();
        let mut commands = Vec::new();
        if !taken.routes.is_empty() {
            commands.push(Command::RecordActivity {
                routes: taken
                    .routes
                    .into_iter()
                    .map(|(path, last_activity)| RouteUse { path, last_activity })
                    .collect(),
                at,
            });
        }
        if taken.users.is_empty() && taken.tokens.is_empty() {
            return commands;
        }
        commands.push(Command::RecordApiActivity {
            users: taken
                .users
                .into_iter()
                .map(|(user, (last_activity, servers))| UserActivity {
                    user,
                    last_activity,
                    servers: servers.into_iter().collect(),
                })
                .collect(),
            tokens: taken
                .tokens
                .into_iter()
                .map(|(id, last_activity)| TokenUse { id, last_activity })
                .collect(),
            at,
        });
        commands
    }

    /// Commits gathered activity every [`FLUSH_INTERVAL`] until `shutdown`, then once
    /// more. A failed commit is dropped: activity is advisory and the next report
    /// carries a newer time anyway.
    pub async fn run(&self, raft: RaftHandle, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            for command in self.take() {
                // The last flush races Raft's own shutdown: give it a moment, not the
                // full request timeout.
                let patience = if stopping {
                    FLUSH_INTERVAL / 2
                } else {
                    FLUSH_INTERVAL * 10
                };
                match tokio::time::timeout(patience, raft.propose(command)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::debug!(error = %err, "activity not committed"),
                    Err(_) => tracing::debug!("activity not committed in time"),
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_per_user_server_and_token() {
        let batcher = ActivityBatcher::default();
        batcher.user("alice", 5);
        batcher.user("alice", 3);
        batcher.server("alice", "", 7);
        batcher.server("alice", "", 6);
        batcher.token(1, 2);
        batcher.token(1, 9);
        let taken = batcher.take();
        let [Command::RecordApiActivity { users, tokens, .. }] = taken.as_slice() else {
            panic!("one command, not {taken:?}");
        };
        assert_eq!(
            users,
            &vec![UserActivity {
                user: "alice".into(),
                last_activity: Some(5),
                servers: vec![("".into(), 7)],
            }]
        );
        assert_eq!(
            tokens,
            &vec![TokenUse {
                id: 1,
                last_activity: 9
            }]
        );
        assert!(batcher.take().is_empty());
    }

    #[test]
    fn a_flood_of_route_reports_holds_one_time_per_route_and_makes_one_command() {
        let batcher = ActivityBatcher::default();
        for report in 0..1_000i64 {
            batcher.routes((0..50).map(|route| (format!("/user/u{route}/"), report * 10 + route)));
        }
        assert_eq!(batcher.pending_len(), 50);
        let taken = batcher.take();
        let [Command::RecordActivity { routes, .. }] = taken.as_slice() else {
            panic!("one command, not {taken:?}");
        };
        assert_eq!(routes.len(), 50);
        assert!(routes.iter().all(|route| route.last_activity
            == 9_990 + route.path[7..route.path.len() - 1].parse::<i64>().unwrap_or(-1_000_000)));
        assert!(batcher.take().is_empty());
        assert_eq!(batcher.pending_len(), 0);
    }
}
