//! Test support: an in-process cluster of real hub replicas (RocksDB on disk in a
//! temporary directory, real gRPC and HTTP on loopback ports chosen by the OS), an HTTP
//! client for their API, and waiting on conditions with deadlines instead of sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ganymede_hub::{ApiLimits, Hub};
use ganymede_raft::{HubNode, RaftConfig, RaftHandle};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod browser;
pub mod flaky;
pub mod netns;
pub mod oidc_provider;
pub mod process;
pub mod slapd;
pub mod upstream;
pub mod webdriver;

/// The admin token every test cluster provisions.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The `CONFIGPROXY_AUTH_TOKEN` of every test cluster's routes API.
pub const PROXY_TOKEN: &str = "test-proxy-token-fedcba9876543210";

/// Waits until `condition` returns `Some`, polling every few milliseconds, and panics
/// with `what` if `patience` runs out.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {patience:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Routes every test's logs to the test harness's captured output (once per process).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Raft timings for tests: as in production, but snapshots come sooner.
#[derive(Clone, Debug)]
pub struct Timings {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_logs_since_last: u64,
    pub logs_kept_after_snapshot: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_logs_since_last: 10_000,
            logs_kept_after_snapshot: 1_000,
        }
    }
}

/// One running replica.
pub struct TestHub {
    pub node_id: u64,
    pub raft: RaftHandle,
    /// The replica's hub, for what only the spawner sees (server API tokens).
    pub hub: Hub,
    pub api: Api,
    /// configurable-http-proxy's routes API on this replica, with the proxy token.
    pub proxy_api: Api,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The fixed identity of a replica across restarts: its ports and data directory.
#[derive(Clone)]
struct Slot {
    node: HubNode,
    proxy_api_addr: String,
    data_dir: PathBuf,
}

/// An in-process cluster of hub replicas.
pub struct TestCluster {
    pub timings: Timings,
    /// The hub settings every replica starts with; tests without a spawner wait less for
    /// spawns and stops than a real hub would (`slow_*_timeout` of 300 ms).
    pub settings: ganymede_hub::HubSettings,
    /// Who may log in (the dummy authenticator, open, unless a test says otherwise).
    pub auth: ganymede_hub::AuthSettings,
    dir: tempfile::TempDir,
    slots: BTreeMap<u64, Slot>,
    initial_members: BTreeMap<u64, HubNode>,
    hubs: BTreeMap<u64, TestHub>,
}

/// The bin directory of the project's Python environment (`ops/venv.sh` makes it;
/// `ops/test.sh` runs that), checked to hold `tools`.
/// The checkout this test runs in: the nearest directory holding `Cargo.lock` above
/// the running package (cargo and nextest set `CARGO_MANIFEST_DIR` at run time). Not
/// the compile-time path: a test binary reused from a shared target directory may have
/// been built in another checkout.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map_or_else(|| package.join("../.."), Path::to_path_buf)
}

pub fn venv_bin(tools: &[&str]) -> PathBuf {
    let venv = std::env::var("GANYMEDE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".venv"));
    let bin = venv.join("bin");
    for tool in tools {
        assert!(
            bin.join(tool).is_file(),
            "{tool} is not installed in {}: run ops/venv.sh (ops/test.sh does)",
            venv.display()
        );
    }
    bin
}

/// Hub settings for tests: JupyterHub's defaults, but short waits for spawns and stops.
pub fn test_settings() -> ganymede_hub::HubSettings {
    ganymede_hub::HubSettings {
        slow_spawn_timeout: Duration::from_millis(300),
        slow_stop_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], process::free_port()))
}

impl TestCluster {
    /// Starts `voters` replicas as a new cluster and waits until it has a leader and
    /// the admin token works on every replica.
    pub async fn start(voters: u64) -> TestCluster {
        Self::start_with(voters, Timings::default()).await
    }

    pub async fn start_with(voters: u64, timings: Timings) -> TestCluster {
        Self::start_with_settings(voters, timings, test_settings()).await
    }

    pub async fn start_with_settings(
        voters: u64,
        timings: Timings,
        settings: ganymede_hub::HubSettings,
    ) -> TestCluster {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = TestCluster {
            timings,
            settings,
            auth: ganymede_hub::AuthSettings::default(),
            dir,
            slots: BTreeMap::new(),
            initial_members: BTreeMap::new(),
            hubs: BTreeMap::new(),
        };
        for node_id in 1..=voters {
            let slot = cluster.new_slot(node_id);
            cluster.initial_members.insert(node_id, slot.node.clone());
        }
        for node_id in 1..=voters {
            cluster.start_node(node_id).await;
        }
        cluster.wait_for_leader().await;
        for node_id in 1..=voters {
            cluster.wait_until_serving(node_id).await;
        }
        cluster
    }

    fn new_slot(&mut self, node_id: u64) -> Slot {
        let slot = Slot {
            node: HubNode {
                raft_addr: free_addr().to_string(),
                api_addr: free_addr().to_string(),
            },
            proxy_api_addr: free_addr().to_string(),
            data_dir: self.dir.path().join(format!("hub{node_id}")),
        };
        self.slots.insert(node_id, slot.clone());
        slot
    }

    /// Starts (or restarts) replica `node_id` on its ports and data directory.
    pub async fn start_node(&mut self, node_id: u64) {
        let slot = self.slots.get(&node_id).expect("known node").clone();
        let api_listener = bind_retrying(&slot.node.api_addr).await;
        let proxy_listener = bind_retrying(&slot.proxy_api_addr).await;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let config = RaftConfig {
            node_id,
            node: slot.node.clone(),
            data_dir: slot.data_dir.clone(),
            initial_members: self.initial_members.clone(),
            heartbeat_interval: self.timings.heartbeat_interval,
            election_timeout_min: self.timings.election_timeout_min,
            election_timeout_max: self.timings.election_timeout_max,
            snapshot_logs_since_last: self.timings.snapshot_logs_since_last,
            logs_kept_after_snapshot: self.timings.logs_kept_after_snapshot,
            request_timeout: Duration::from_secs(10),
            peer_tls: None,
            max_connections: 1024,
        };
        // A replica killed a moment ago may still be closing its database (openraft's
        // tasks wind down after `shutdown` returns): retry while RocksDB says it is locked.
        let mut attempts = 0;
        let raft = loop {
            let raft_listener = bind_retrying(&slot.node.raft_addr).await;
            match RaftHandle::start(config.clone(), raft_listener, &tasks, shutdown.clone()).await {
                Ok(raft) => break raft,
                Err(err) if attempts < 80 && format!("{err:?}").contains("lock") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => panic!("start replica {node_id}: {err}"),
            }
        };
        tasks.spawn(ganymede_hub::provision(
            raft.clone(),
            Some(ADMIN_TOKEN.into()),
            shutdown.clone(),
        ));
        let hub = Hub::new(
            raft.clone(),
            ApiLimits::default(),
            self.settings.clone(),
            self.auth.clone(),
        )
        .with_shutdown(shutdown.clone());
        tasks.spawn(hub.clone().run_background(shutdown.clone()));
        for (listener, app) in [
            (api_listener, ganymede_hub::router(hub.clone())),
            (
                proxy_listener,
                ganymede_hub::proxy_router(hub.clone(), PROXY_TOKEN.into()),
            ),
        ] {
            let serve_shutdown = shutdown.clone();
            tasks.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(serve_shutdown.cancelled_owned())
                    .await;
            });
        }
        let api = Api::new(format!("http://{}", slot.node.api_addr));
        let proxy_api = Api::new(format!("http://{}", slot.proxy_api_addr)).with_token(Some(PROXY_TOKEN));
        self.hubs.insert(
            node_id,
            TestHub {
                node_id,
                raft,
                hub,
                api,
                proxy_api,
                shutdown,
                tasks,
            },
        );
    }

    /// Stops replica `node_id` abruptly: its listeners close and Raft stops, as when the
    /// process dies; its data directory stays.
    /// Returns once the replica's database is closed, so it can be reopened at once.
    pub async fn kill(&mut self, node_id: u64) {
        let hub = self.hubs.remove(&node_id).expect("running node");
        let store = hub.raft.weak_store();
        hub.shutdown.cancel();
        hub.raft.shutdown().await;
        hub.tasks.close();
        hub.tasks.wait().await;
        drop(hub);
        // Connection tasks of the gRPC and HTTP servers can outlive their servers by a
        // moment, each holding the replica: its database closes when the last goes.
        eventually(
            &format!("replica {node_id}'s database to close"),
            Duration::from_secs(10),
            || async { store.upgrade().is_none().then_some(()) },
        )
        .await;
    }

    /// Adds a fresh replica with no initial members (it waits to be added).
    pub async fn start_new_node(&mut self, node_id: u64) -> HubNode {
        let slot = self.new_slot(node_id);
        let saved = std::mem::take(&mut self.initial_members);
        self.start_node(node_id).await;
        self.initial_members = saved;
        slot.node
    }

    /// Stops every running replica and closes its database.
    pub async fn stop_all(&mut self) {
        let running: Vec<u64> = self.hubs.keys().copied().collect();
        for node_id in running {
            self.kill(node_id).await;
        }
    }

    pub fn hub(&self, node_id: u64) -> &TestHub {
        self.hubs.get(&node_id).expect("running node")
    }

    pub fn running(&self) -> impl Iterator<Item = &TestHub> {
        self.hubs.values()
    }

    pub fn data_dir(&self, node_id: u64) -> PathBuf {
        self.slots[&node_id].data_dir.clone()
    }

    pub fn root_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until every running replica agrees on one leader, and returns it.
    pub async fn wait_for_leader(&self) -> u64 {
        eventually(
            "a leader all running replicas agree on",
            Duration::from_secs(20),
            || async {
                let leaders: Vec<Option<u64>> = self.hubs.values().map(|hub| hub.raft.status().leader_id).collect();
                let first = (*leaders.first()?)?;
                (leaders.iter().all(|leader| *leader == Some(first)) && self.hubs.contains_key(&first)).then_some(first)
            },
        )
        .await
    }

    /// Waits until replica `node_id` answers authenticated API calls.
    pub async fn wait_until_serving(&self, node_id: u64) {
        let api = &self.hub(node_id).api;
        eventually("the admin token works", Duration::from_secs(20), || async {
            let (status, _) = api.get("/hub/api/user").await.ok()?;
            (status == 200).then_some(())
        })
        .await
    }
}

/// RocksDB must be closed before the process exits: a database whose background threads
/// outlive the C++ statics aborts the process ("pthread lock: Invalid argument"). So a
/// cluster dropped at the end of a test shuts its replicas down first.
impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.hubs.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(self.stop_all()));
            }
            _ => eprintln!("TestCluster dropped outside a multi-thread runtime: replicas not shut down"),
        }
    }
}

async fn bind_retrying(addr: &str) -> tokio::net::TcpListener {
    eventually(&format!("binding {addr}"), Duration::from_secs(10), || async {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await
}

/// A small client for a hub's API, authenticated with the admin token unless told
/// otherwise.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(base: String) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Api {
            base,
            client,
            token: Some(ADMIN_TOKEN.into()),
        }
    }

    /// The token this client sends.
    pub fn token_value(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The same API with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.request_with_headers(method, path, body, &[]).await
    }

    /// A request with extra headers; `path` may also be an absolute URL (a `next.url`).
    pub async fn request_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self.client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("token {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, value))
    }

    /// Sends raw bytes with a content type, for malformed-input tests.
    /// Sends `body` as it is, on a connection of its own: a server that refuses a body
    /// (413) closes the connection, and a pooled one would fail the next request.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut request = client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("token {token}"));
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::DELETE, path, None).await
    }
}
