//! Spawning as reconciliation (DESIGN §3). The replicated server record is the desired
//! state; the spawner's `poll` is the observed state; this replica's reconciler moves
//! the servers placed on it (`Server::node`) from one to the other:
//!
//! - a pending spawn with this replica's fresh credentials is started: the spawner
//!   launches it, its progress and spawner state are committed, `<url><prefix>api` is
//!   polled (backoff capped at 100 ms) until it answers, and `MarkServerReady` adds the
//!   route; any failure stops what was started and commits `MarkServerFailed` with why;
//! - a pending spawn without credentials (this replica restarted meanwhile) fails;
//! - a running server is polled every `poll_interval`; one that died is marked failed
//!   (its route goes with it);
//! - a pending stop is carried out, then `MarkServerStopped`;
//! - processes nobody's record wants any more are swept (after a restart, say).
//!
//! The leader also fails the servers of a replica it has not heard from for
//! `owner_timeout`: a local server dies with its replica, so its record must not stay
//! "running" or "pending" forever. Every report carries the spawn's `spawn_id`; the
//! model refuses those about an attempt that is no longer current, so a deposed or
//! late reconciler cannot undo anything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ganymede_model::{Command, Rejection, ServerPhase, oauth};
use ganymede_raft::{Applied, ProposeError};
use ganymede_spawner::{Observed, Progress, SpawnRef, SpawnSpec, Spawner, Started};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::render::now_millis;
use crate::{Hub, metrics};

/// How spawns are run and watched (JupyterHub's `Spawner` timing options and how a
/// server reaches the hub).
#[derive(Clone, Debug)]
pub struct SpawnSettings {
    /// How long the spawner may take to launch a server.
    pub start_timeout: Duration,
    /// How long a launched server may take to answer at `<prefix>api`.
    pub http_timeout: Duration,
    /// How often running servers are polled.
    pub poll_interval: Duration,
    /// The hub API as servers reach it (`$JUPYTERHUB_API_URL`).
    pub hub_api_url: String,
    /// `$JUPYTERHUB_PUBLIC_URL`; empty when not configured.
    pub public_url: String,
    /// The leader fails the servers of a replica silent for this long.
    pub owner_timeout: Duration,
}

impl Default for SpawnSettings {
    fn default() -> Self {
        SpawnSettings {
            start_timeout: Duration::from_secs(60),
            http_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(10),
            hub_api_url: "http://127.0.0.1:8081/hub/api".into(),
            public_url: String::new(),
            owner_timeout: Duration::from_secs(10),
        }
    }
}

type Key = (String, String);

/// One server of the record, as the reconciler looks at it.
#[derive(Clone, Debug)]
struct Desired {
    user: String,
    server: String,
    spawn_id: u64,
    phase: ServerPhase,
    node: Option<u64>,
    state: serde_json::Value,
}

pub struct Reconciler {
    hub: Hub,
    spawner: Arc<dyn Spawner>,
    settings: Arc<SpawnSettings>,
    http: reqwest::Client,
    starting: HashMap<Key, (u64, JoinHandle<()>)>,
    stopping: HashMap<Key, (u64, JoinHandle<()>)>,
    next_poll: HashMap<Key, (u64, Instant)>,
    leading_since: Option<Instant>,
    next_sweep: Instant,
}

impl Reconciler {
    pub fn new(hub: Hub, spawner: Arc<dyn Spawner>, settings: SpawnSettings) -> Reconciler {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Reconciler {
            hub,
            spawner,
            settings: Arc::new(settings),
            http,
            starting: HashMap::new(),
            stopping: HashMap::new(),
            next_poll: HashMap::new(),
            leading_since: None,
            next_sweep: Instant::now(),
        }
    }

    /// Reconciles until `shutdown`, then stops this replica's servers (they would die
    /// with the process anyway) and records that they stopped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut applied = self.hub.raft.subscribe_applied();
        // Act on the cluster's state, not on a log this replica is still replaying.
        while !shutdown.is_cancelled() && self.hub.raft.read(|_| ()).await.is_err() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        while !shutdown.is_cancelled() {
            self.tick().await;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = applied.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        self.stop_all().await;
    }

    fn desired(&self) -> Vec<Desired> {
        self.hub.raft.read_local(|state| {
            state
                .users
                .values()
                .flat_map(|user| {
                    user.servers.values().filter_map(move |server| {
                        Some(Desired {
                            user: user.name.clone(),
                            server: server.name.clone(),
                            spawn_id: server.spawn_id?,
                            phase: server.phase,
                            node: server.node,
                            state: server.spawner_state.clone(),
                        })
                    })
                })
                .filter(|desired| desired.phase != ServerPhase::Stopped)
                .collect()
        })
    }

    async fn tick(&mut self) {
        let me = self.hub.raft.node_id();
        let desired = self.desired();
        let mine: Vec<&Desired> = desired.iter().filter(|d| d.node == Some(me)).collect();
        // A job is forgotten once the record has moved on, not when it ends: this
        // replica may apply the job's own report a moment after the job is done, and
        // must not start (or stop) the same attempt twice meanwhile.
        let in_phase = |phase: ServerPhase| -> BTreeSet<(Key, u64)> {
            mine.iter()
                .filter(|d| d.phase == phase)
                .map(|d| ((d.user.clone(), d.server.clone()), d.spawn_id))
                .collect()
        };
        let (pending, stopping) = (in_phase(ServerPhase::PendingSpawn), in_phase(ServerPhase::PendingStop));
        self.starting
            .retain(|key, (id, task)| !task.is_finished() || pending.contains(&(key.clone(), *id)));
        self.stopping
            .retain(|key, (id, task)| !task.is_finished() || stopping.contains(&(key.clone(), *id)));
        let wanted: BTreeSet<Key> = mine.iter().map(|d| (d.user.clone(), d.server.clone())).collect();
        self.next_poll.retain(|key, _| wanted.contains(key));
        for desired in &mine {
            let key = (desired.user.clone(), desired.server.clone());
            match desired.phase {
                ServerPhase::PendingSpawn => {
                    if self.starting.get(&key).is_some_and(|(id, _)| *id == desired.spawn_id) {
                        continue;
                    }
                    let job = StartJob {
                        hub: self.hub.clone(),
                        spawner: self.spawner.clone(),
                        settings: self.settings.clone(),
                        http: self.http.clone(),
                        user: desired.user.clone(),
                        server: desired.server.clone(),
                        spawn_id: desired.spawn_id,
                        noticed: Instant::now(),
                    };
                    self.starting.insert(key, (desired.spawn_id, tokio::spawn(job.run())));
                }
                ServerPhase::PendingStop => {
                    if self.stopping.get(&key).is_some_and(|(id, _)| *id == desired.spawn_id) {
                        continue;
                    }
                    // A start still under way is abandoned; the stop takes what it launched.
                    if let Some((_, task)) = self.starting.remove(&key) {
                        task.abort();
                    }
                    let spawn_id = desired.spawn_id;
                    let (hub, spawner, desired) = (self.hub.clone(), self.spawner.clone(), (*desired).clone());
                    let task = tokio::spawn(async move {
                        let stopping = Instant::now();
                        let stopped = stop_spawn(&spawner, &desired).await;
                        metrics::server_stop(stopped, stopping.elapsed());
                        let deleting = Instant::now();
                        let reported = report(
                            &hub,
                            Command::MarkServerStopped {
                                user: desired.user.clone(),
                                server: desired.server.clone(),
                                spawn_id: desired.spawn_id,
                                at: now_millis(),
                            },
                        )
                        .await;
                        metrics::proxy_delete(matches!(reported, Some(Applied::Events(_))), deleting.elapsed());
                    });
                    self.stopping.insert(key, (spawn_id, task));
                }
                ServerPhase::Running => self.watch(key, desired).await,
                ServerPhase::Stopped => {}
            }
        }
        self.fail_orphans(&desired).await;
        if Instant::now() >= self.next_sweep {
            self.next_sweep = Instant::now() + Duration::from_secs(15);
            let keep: BTreeSet<u64> = mine.iter().map(|d| d.spawn_id).collect();
            let swept = self.spawner.sweep(&move |id| keep.contains(&id)).await;
            if !swept.is_empty() {
                warn!(?swept, "stopped servers whose record no longer wants them");
            }
        }
    }

    /// Polls a running server now and then; a dead one is marked failed.
    async fn watch(&mut self, key: Key, desired: &Desired) {
        let now = Instant::now();
        match self.next_poll.get(&key) {
            Some((id, at)) if *id == desired.spawn_id && *at > now => return,
            _ => {}
        }
        self.next_poll
            .insert(key, (desired.spawn_id, now + self.settings.poll_interval));
        let spawn = SpawnRef {
            user: &desired.user,
            server: &desired.server,
            spawn_id: desired.spawn_id,
            state: &desired.state,
        };
        let polling = Instant::now();
        let observed = self.spawner.poll(spawn).await;
        metrics::server_poll(observed == Observed::Running, polling.elapsed());
        if let Observed::Exited(why) = observed {
            warn!(user = %desired.user, server = %desired.server, spawn_id = desired.spawn_id, %why, "server died");
            let hub = self.hub.clone();
            let command = Command::MarkServerFailed {
                user: desired.user.clone(),
                server: desired.server.clone(),
                spawn_id: desired.spawn_id,
                reason: format!("The server stopped: it {why}"),
                at: now_millis(),
            };
            tokio::spawn(async move { report(&hub, command).await });
        }
    }

    /// On the leader: servers placed on a replica that has been silent for
    /// `owner_timeout` (or that left the cluster) did not survive it.
    async fn fail_orphans(&mut self, desired: &[Desired]) {
        if !self.hub.raft.is_leader() {
            self.leading_since = None;
            return;
        }
        let since = *self.leading_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.settings.owner_timeout {
            return;
        }
        let Some(silent) = self.hub.raft.silent_members(self.settings.owner_timeout) else {
            return;
        };
        let members: BTreeSet<u64> = self.hub.raft.status().members.iter().map(|m| m.node_id).collect();
        for orphan in desired.iter().filter(|d| {
            d.node
                .is_some_and(|node| silent.contains(&node) || !members.contains(&node))
        }) {
            let node = orphan.node.unwrap_or_default();
            let (user, server, spawn_id, at) = (
                orphan.user.clone(),
                orphan.server.clone(),
                orphan.spawn_id,
                now_millis(),
            );
            let command = if orphan.phase == ServerPhase::PendingStop {
                Command::MarkServerStopped {
                    user,
                    server,
                    spawn_id,
                    at,
                }
            } else {
                Command::MarkServerFailed {
                    user,
                    server,
                    spawn_id,
                    reason: format!("The hub replica that ran this server (node {node}) is gone"),
                    at,
                }
            };
            warn!(user = %orphan.user, server = %orphan.server, node, "failing a server whose replica is gone");
            report(&self.hub, command).await;
        }
    }

    /// Shutdown: this replica's servers stop with it; say so while Raft still runs.
    async fn stop_all(&mut self) {
        for (_, (_, task)) in self.starting.drain() {
            task.abort();
        }
        let me = self.hub.raft.node_id();
        let mine: Vec<Desired> = self.desired().into_iter().filter(|d| d.node == Some(me)).collect();
        let stops = mine.into_iter().map(|desired| {
            let (hub, spawner) = (self.hub.clone(), self.spawner.clone());
            async move {
                stop_spawn(&spawner, &desired).await;
                let (user, server, spawn_id, at) = (desired.user, desired.server, desired.spawn_id, now_millis());
                let command = if desired.phase == ServerPhase::PendingSpawn {
                    Command::MarkServerFailed {
                        user,
                        server,
                        spawn_id,
                        reason: "The hub replica that ran this server shut down".into(),
                        at,
                    }
                } else {
                    Command::MarkServerStopped {
                        user,
                        server,
                        spawn_id,
                        at,
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(3), hub.raft.propose(command)).await;
            }
        });
        futures::future::join_all(stops).await;
    }
}

/// Whether the spawner stopped the server.
async fn stop_spawn(spawner: &Arc<dyn Spawner>, desired: &Desired) -> bool {
    let spawn = SpawnRef {
        user: &desired.user,
        server: &desired.server,
        spawn_id: desired.spawn_id,
        state: &desired.state,
    };
    match spawner.stop(spawn).await {
        Ok(()) => true,
        Err(err) => {
            warn!(user = %desired.user, server = %desired.server, error = %err, "stopping a server failed");
            false
        }
    }
}

/// Commits a spawner's report, retrying while the cluster has no leader (a failover);
/// a refusal (the attempt is no longer current) ends it.
async fn report(hub: &Hub, command: Command) -> Option<Applied> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match hub.raft.propose(command.clone()).await {
            Ok(applied) => return Some(applied),
            Err(err @ ProposeError::Stopped(_)) => {
                warn!(error = %err, %command, "cannot report: this replica is stopping");
                return None;
            }
            Err(err) if Instant::now() >= deadline => {
                warn!(error = %err, %command, "cannot report");
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One spawn, from launch to ready (or to failed).
struct StartJob {
    hub: Hub,
    spawner: Arc<dyn Spawner>,
    settings: Arc<SpawnSettings>,
    http: reqwest::Client,
    user: String,
    server: String,
    spawn_id: u64,
    /// When this replica saw the committed request: a few milliseconds after the
    /// API took it, so the spawn duration is what JupyterHub measures.
    noticed: Instant,
}

impl StartJob {
    async fn run(self) {
        match self.start().await {
            Ok(()) => {}
            Err(reason) => {
                warn!(user = %self.user, server = %self.server, spawn_id = self.spawn_id, %reason, "spawn failed");
                metrics::spawn_finished(false, self.since_requested());
                // Nothing is left running.
                let null = serde_json::Value::Null;
                let spawn = self.spawn_ref(&null);
                if let Err(err) = self.spawner.stop(spawn).await {
                    warn!(error = %err, "cleaning up a failed spawn");
                }
                self.fail(reason).await;
            }
        }
    }

    fn since_requested(&self) -> Duration {
        self.noticed.elapsed()
    }

    fn spawn_ref<'a>(&'a self, state: &'a serde_json::Value) -> SpawnRef<'a> {
        SpawnRef {
            user: &self.user,
            server: &self.server,
            spawn_id: self.spawn_id,
            state,
        }
    }

    async fn fail(&self, reason: String) {
        let command = Command::MarkServerFailed {
            user: self.user.clone(),
            server: self.server.clone(),
            spawn_id: self.spawn_id,
            reason,
            at: now_millis(),
        };
        report(&self.hub, command).await;
    }

    async fn progress(&self, step: Progress, spawner_state: Option<serde_json::Value>) -> bool {
        let command = Command::ReportSpawnProgress {
            user: self.user.clone(),
            server: self.server.clone(),
            spawn_id: self.spawn_id,
            progress: step.progress,
            message: step.message,
            spawner_state,
            at: now_millis(),
        };
        !matches!(report(&self.hub, command).await, Some(Applied::Rejected(_)))
    }

    async fn start(&self) -> Result<(), String> {
        let Some(token) = self.hub.take_server_token(&self.user, &self.server, self.spawn_id) else {
            return Err("The hub replica that was starting this server restarted; start it again".into());
        };
        let (user, server) = (self.user.as_str(), self.server.as_str());
        let allowed_scopes = self.hub.raft.read_local(|state| {
            state
                .oauth_clients
                .get(&oauth::server_client_id(user, server))
                .map(|client| client.allowed_scopes.clone())
                .unwrap_or_default()
        });
        let prefix = oauth::server_prefix(user, server);
        let spec = SpawnSpec {
            user: user.to_owned(),
            server: server.to_owned(),
            spawn_id: self.spawn_id,
            api_token: token.expose().to_owned(),
            hub_api_url: self.settings.hub_api_url.clone(),
            base_url: "/".into(),
            service_prefix: prefix.clone(),
            client_id: oauth::server_client_id(user, server),
            oauth_callback_url: oauth::server_callback_path(user, server),
            oauth_access_scopes: vec![
                format!("access:servers!server={user}/{server}"),
                format!("access:servers!user={user}"),
            ],
            oauth_client_allowed_scopes: allowed_scopes,
            public_url: self.settings.public_url.clone(),
            user_options: serde_json::Value::Null,
        };
        // The spawner's own progress goes to the record as it comes.
        let (sink, mut steps) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let launching = tokio::time::timeout(self.settings.start_timeout, self.spawner.start(&spec, &sink));
        let forward = async {
            while let Some(step) = steps.recv().await {
                self.progress(step, None).await;
            }
        };
        let started: Started = tokio::select! {
            launched = launching => match launched {
                Err(_) => return Err(format!("The server did not start within {} s", self.settings.start_timeout.as_secs())),
                Ok(Err(err)) => return Err(format!("The server could not be started: {err}")),
                Ok(Ok(started)) => started,
            },
            () = forward => return Err("the spawner went away".into()),
        };
        drop(sink);
        while let Ok(step) = steps.try_recv() {
            self.progress(step, None).await;
        }
        let still_wanted = self
            .progress(
                Progress {
                    progress: 75,
                    message: "Server started; waiting for it to answer".into(),
                },
                Some(started.state.clone()),
            )
            .await;
        if !still_wanted {
            // Stopped meanwhile: the stop takes care of the process.
            return Ok(());
        }
        let probe = format!("{}{prefix}api", started.url);
        self.wait_until_answering(&probe, &started.state).await?;
        let ready = Command::MarkServerReady {
            user: user.to_owned(),
            server: server.to_owned(),
            spawn_id: self.spawn_id,
            url: started.url.clone(),
            at: now_millis(),
        };
        let adding = Instant::now();
        let reported = report(&self.hub, ready).await;
        metrics::proxy_add(matches!(reported, Some(Applied::Events(_))), adding.elapsed());
        match reported {
            Some(Applied::Events(_)) => {
                info!(user, server, spawn_id = self.spawn_id, url = %started.url, "server ready");
                metrics::spawn_finished(true, self.since_requested());
                Ok(())
            }
            Some(Applied::Rejected(Rejection::StaleSpawn { .. })) => {
                // Stopped while starting: nobody wants it.
                let spawn = self.spawn_ref(&started.state);
                let _ = self.spawner.stop(spawn).await;
                Ok(())
            }
            Some(other) => Err(format!("The server could not be marked ready: {other:?}")),
            None => Err("The server could not be marked ready: no leader".into()),
        }
    }

    /// Polls `probe` as JupyterHub's readiness check does (no redirects; any answer
    /// below 500 is "up", except a 404, which says the server listens somewhere else),
    /// with a short backoff so readiness is not seen late; gives up when the process
    /// dies or `http_timeout` passes.
    async fn wait_until_answering(&self, probe: &str, state: &serde_json::Value) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.http_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Observed::Exited(why) = self.spawner.poll(self.spawn_ref(state)).await {
                return Err(format!("The server {why}"));
            }
            let last = match self.http.get(probe).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                    format!("{probe} answered 404: is the server serving $JUPYTERHUB_SERVICE_PREFIX?")
                }
                Ok(response) if response.status().as_u16() < 500 => return Ok(()),
                Ok(response) => format!("{probe} answered {}", response.status()),
                Err(err) if err.is_connect() => format!("nothing listens at {probe}"),
                Err(err) => format!("{probe}: {err}"),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "The server did not answer within {} s ({last})",
                    self.settings.http_timeout.as_secs()
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_millis(100));
        }
    }
}
