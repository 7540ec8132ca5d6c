//! Real `ganymede hub` processes: started from generated configs on free loopback
//! ports, killed with SIGKILL, restarted, and queried over the API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::eventually;

/// The admin token process clusters provision.
pub const PROCESS_ADMIN_TOKEN: &str = "it-admin-token-5f1e0c9a7b3d";
/// The routes API token (`CONFIGPROXY_AUTH_TOKEN`), which edges also present.
pub const PROCESS_PROXY_TOKEN: &str = "it-proxy-token-0d9c8b7a6f5e";

/// The binary under test: `$GANYMEDE_BIN`, or `ganymede` next to this test's `deps/`.
pub fn ganymede_bin() -> PathBuf {
    if let Ok(path) = std::env::var("GANYMEDE_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps, other binaries in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let candidates = [
        exe.parent().map(|dir| dir.join("ganymede")),
        exe.parent().and_then(Path::parent).map(|dir| dir.join("ganymede")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .expect("the ganymede binary is missing: run `cargo build --bin ganymede` first (ops/test.sh does)")
}

/// The test single-user server, built beside the `ganymede` binary.
pub fn test_singleuser_bin() -> PathBuf {
    let bin = ganymede_bin().with_file_name("ganymede-test-singleuser");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --bin ganymede-test-singleuser` first (ops/test.sh does)",
        bin.display()
    );
    bin
}

/// Live processes whose environment has `HOME` under `dir`: the servers a cluster in
/// `dir` started (their homes are under its data directories), and their children.
pub fn processes_with_home_under(dir: &Path) -> Vec<u32> {
    let needle = format!("HOME={}", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            alive
                && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                    environ
                        .split(|b| *b == 0)
                        .any(|entry| entry.starts_with(needle.as_bytes()))
                })
        })
        .collect()
}

fn environ_has(pid: u32, prefix: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|b| *b == 0)
            .any(|entry| entry.starts_with(prefix.as_bytes()))
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// [`processes_with_home_under`] but the replicas' warm interpreters (prefork): the
/// servers and their children. (A forked server shows its interpreter's environment
/// in `/proc`, so an interpreter is the marked process whose parent is not marked.)
pub fn servers_with_home_under(dir: &Path) -> Vec<u32> {
    let marker = format!("{}=", ganymede_spawner::PREFORK_MARKER);
    processes_with_home_under(dir)
        .into_iter()
        .filter(|pid| {
            let interpreter =
                environ_has(*pid, &marker) && !parent_of(*pid).is_some_and(|parent| environ_has(parent, &marker));
            !interpreter
        })
        .collect()
}

/// Starts `ganymede <args> <config>` with `env`, its output appended to `log`.
fn spawn_logged(launcher: &[String], args: &[&str], config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut command = match launcher.split_first() {
        // `ip netns exec` execs the program: the child's pid is the hub's.
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(ganymede_bin());
            command
        }
        None => Command::new(ganymede_bin()),
    };
    command
        .args(args)
        .arg(config)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("spawn ganymede {args:?}: {err}"))
}

/// Appends `lines` to a config file: they land in its last section (`[events]` for a
/// hub, `[edge]` for an edge).
pub fn append_config(config: &Path, lines: &str) {
    let mut text = std::fs::read_to_string(config).expect("read config");
    text.push_str(lines);
    std::fs::write(config, text).expect("write config");
}

/// A port that is free now and that the kernel will not hand out as the local port of
/// an outgoing connection meanwhile: chosen below the ephemeral range (Linux's default
/// starts at 32768), where port 0 would pick. A port from port 0 can be taken by some
/// client's connection before a restarted replica binds it again.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    // Spread the processes nextest runs at once over the range; step through it within one.
    let seed = std::process::id().wrapping_mul(7919) ^ std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(0, seed % SPAN + 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

pub struct HubProcess {
    pub node_id: u64,
    pub api_port: u16,
    pub raft_port: u16,
    /// configurable-http-proxy's routes API.
    pub proxy_port: u16,
    /// The edge feed: gRPC and ZeroMQ.
    pub feed_port: u16,
    pub events_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The address it binds and is reached at: loopback, or its network namespace's.
    pub host: String,
    /// What it is started under (`ip netns exec <ns>`), if anything.
    launcher: Vec<String>,
    child: Option<Child>,
}

/// A cluster of hub processes in a temporary directory.
pub struct EdgeProcess {
    pub port: u16,
    pub metrics_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub hubs: Vec<HubProcess>,
    pub edges: Vec<EdgeProcess>,
    client: reqwest::Client,
}

impl ProcessCluster {
    pub fn new(size: u64) -> ProcessCluster {
        Self::on_hosts((1..=size).map(|_| ("127.0.0.1".to_owned(), Vec::new())).collect())
    }

    /// Hubs in network namespaces: each on its namespace's address, started through
    /// its launcher (see [`crate::netns::Network`]).
    pub fn in_network(network: &crate::netns::Network) -> ProcessCluster {
        Self::on_hosts(
            (1..=network.nodes())
                .map(|node| (crate::netns::host(node), network.launcher(node)))
                .collect(),
        )
    }

    fn on_hosts(hosts: Vec<(String, Vec<String>)>) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let hubs: Vec<HubProcess> = (1..=hosts.len() as u64)
            .zip(hosts)
            .map(|(node_id, (host, launcher))| HubProcess {
                node_id,
                api_port: free_port(),
                raft_port: free_port(),
                proxy_port: free_port(),
                feed_port: free_port(),
                events_port: free_port(),
                config: dir.path().join(format!("hub{node_id}.toml")),
                log: dir.path().join(format!("hub{node_id}.log")),
                host,
                launcher,
                child: None,
            })
            .collect();
        let members: Vec<String> = hubs
            .iter()
            .map(|h| {
                format!(
                    "{{ node_id = {}, raft_addr = \"{}:{}\", api_addr = \"{}:{}\" }}",
                    h.node_id, h.host, h.raft_port, h.host, h.api_port
                )
            })
            .collect();
        for hub in &hubs {
            let config = format!(
                "[hub]\nnode_id = {}\ndata_dir = \"{}\"\napi_bind = \"{}:{}\"\nraft_bind = \"{}:{}\"\nlog = \"info\"\n\n[cluster]\ninitial_members = [{}]\n{}",
                hub.node_id,
                dir.path().join(format!("hub{}", hub.node_id)).display(),
                hub.host,
                hub.api_port,
                hub.host,
                hub.raft_port,
                members.join(", "),
                hub.feed_config(),
            );
            std::fs::write(&hub.config, config).expect("write config");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        ProcessCluster {
            dir,
            hubs,
            edges: Vec::new(),
            client,
        }
    }

    /// Makes every hub dial replica `node_id`'s Raft port at `addr` instead (a relay in
    /// front of it, see [`crate::flaky`]): rewrites the members in every config, before
    /// the hubs start.
    pub fn dial_raft_through(&self, node_id: u64, addr: &str) {
        let hub = self.hub(node_id);
        let direct = format!("raft_addr = \"{}:{}\"", hub.host, hub.raft_port);
        for other in &self.hubs {
            let text = std::fs::read_to_string(&other.config).expect("read config");
            assert!(
                text.contains(&direct),
                "{} does not name {direct}",
                other.config.display()
            );
            let text = text.replace(&direct, &format!("raft_addr = \"{addr}\""));
            std::fs::write(&other.config, text).expect("write config");
        }
    }

    /// Appends a `[spawner]` section to every hub's config (before they start).
    pub fn configure_spawner(&self, lines: &str) {
        for hub in &self.hubs {
            append_config(&hub.config, &format!("\n[spawner]\n{lines}\n"));
        }
    }

    /// A request with the admin token and a JSON body.
    pub async fn send(
        &self,
        node_id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .client
            .request(method, self.url(node_id, path))
            .header("authorization", format!("token {PROCESS_ADMIN_TOKEN}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    /// Adds hub `N+1` with no initial members: started, it waits to be added with
    /// `ganymede cluster add`. Returns its node id.
    pub fn add_joining_hub(&mut self) -> u64 {
        let node_id = self.hubs.len() as u64 + 1;
        let hub = HubProcess {
            node_id,
            api_port: free_port(),
            raft_port: free_port(),
            proxy_port: free_port(),
            feed_port: free_port(),
            events_port: free_port(),
            config: self.dir.path().join(format!("hub{node_id}.toml")),
            log: self.dir.path().join(format!("hub{node_id}.log")),
            host: "127.0.0.1".into(),
            launcher: Vec::new(),
            child: None,
        };
        let config = format!(
            "[hub]\nnode_id = {node_id}\ndata_dir = \"{}\"\napi_bind = \"127.0.0.1:{}\"\nraft_bind = \"127.0.0.1:{}\"\n{}",
            self.dir.path().join(format!("hub{node_id}")).display(),
            hub.api_port,
            hub.raft_port,
            hub.feed_config(),
        );
        std::fs::write(&hub.config, config).expect("write config");
        self.hubs.push(hub);
        node_id
    }

    pub fn hub(&self, node_id: u64) -> &HubProcess {
        &self.hubs[(node_id - 1) as usize]
    }

    pub fn data_dir(&self, node_id: u64) -> PathBuf {
        self.dir.path().join(format!("hub{node_id}"))
    }

    pub fn start(&mut self, node_id: u64) {
        let hub = &mut self.hubs[(node_id - 1) as usize];
        assert!(hub.child.is_none(), "hub{node_id} is already running");
        let child = spawn_logged(
            &hub.launcher,
            &["hub", "--config"],
            &hub.config,
            &hub.log,
            &[
                ("GANYMEDE_ADMIN_TOKEN", PROCESS_ADMIN_TOKEN),
                ("CONFIGPROXY_AUTH_TOKEN", PROCESS_PROXY_TOKEN),
            ],
        );
        hub.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for node_id in 1..=self.hubs.len() as u64 {
            self.start(node_id);
        }
    }

    /// SIGKILL, as when a machine dies.
    pub fn kill9(&mut self, node_id: u64) {
        let hub = &mut self.hubs[(node_id - 1) as usize];
        if let Some(mut child) = hub.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    /// Whether hub `node_id`'s process has exited by itself (and with what status); a
    /// process that exited is reaped and no longer running.
    pub fn exited(&mut self, node_id: u64) -> Option<std::process::ExitStatus> {
        let hub = &mut self.hubs[(node_id - 1) as usize];
        let status = hub.child.as_mut()?.try_wait().ok()??;
        hub.child = None;
        Some(status)
    }

    /// Hub `node_id`'s process id while it runs (to pause it with SIGSTOP, say).
    pub fn pid(&self, node_id: u64) -> Option<u32> {
        self.hub(node_id).child.as_ref().map(Child::id)
    }

    pub fn is_running(&self, node_id: u64) -> bool {
        self.hub(node_id).child.is_some()
    }

    pub fn url(&self, node_id: u64, path: &str) -> String {
        format!("http://{}:{}{path}", self.hub(node_id).host, self.hub(node_id).api_port)
    }

    pub async fn request(&self, node_id: u64, method: reqwest::Method, path: &str) -> Option<(u16, Value)> {
        let response = self
            .client
            .request(method, self.url(node_id, path))
            .header("authorization", format!("token {PROCESS_ADMIN_TOKEN}"))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    /// Hub `node_id`'s Prometheus page (`/hub/metrics`, with the admin token).
    pub async fn hub_metrics(&self, node_id: u64) -> Option<String> {
        let response = self
            .client
            .get(self.url(node_id, "/hub/metrics"))
            .header("authorization", format!("token {PROCESS_ADMIN_TOKEN}"))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())?;
        response.text().await.ok()
    }

    /// The leader every running hub agrees on, once they do.
    pub async fn leader(&self) -> u64 {
        let agreed = tokio::time::timeout(Duration::from_secs(30), self.agreed_leader()).await;
        match agreed {
            Ok(leader) => leader,
            // Say why: a hub that never came up usually wrote the reason in its log.
            Err(_) => panic!(
                "timed out after 30s waiting for running hubs to agree on a leader; hub logs:\n{}",
                self.logs()
            ),
        }
    }

    async fn agreed_leader(&self) -> u64 {
        eventually("running hubs agree on a leader", Duration::from_secs(3600), || async {
            let mut leader = None;
            for hub in self.hubs.iter().filter(|h| h.child.is_some()) {
                let (status, body) = self
                    .request(hub.node_id, reqwest::Method::GET, "/hub/api/ganymede/cluster")
                    .await?;
                if status != 200 {
                    return None;
                }
                let this = body["leader_id"].as_u64()?;
                if leader.is_some_and(|l| l != this) || !self.is_running(this) {
                    return None;
                }
                leader = Some(this);
            }
            leader
        })
        .await
    }

    pub fn logs(&self) -> String {
        self.hubs
            .iter()
            .map(|h| std::fs::read_to_string(&h.log).unwrap_or_default())
            .collect()
    }
}

impl HubProcess {
    fn feed_config(&self) -> String {
        format!(
            "\n[proxy]\napi_bind = \"{host}:{}\"\n\n[events]\ngrpc_bind = \"{host}:{}\"\npub_bind = \"{host}:{}\"\n",
            self.proxy_port,
            self.feed_port,
            self.events_port,
            host = self.host
        )
    }

    /// This hub as an `[edge] hubs` entry.
    pub fn edge_entry(&self) -> String {
        format!(
            "{{ api = \"{host}:{}\", grpc = \"{host}:{}\", events = \"{host}:{}\" }}",
            self.api_port,
            self.feed_port,
            self.events_port,
            host = self.host
        )
    }
}

impl ProcessCluster {
    /// Adds an edge that knows every hub (and `extra_hubs`, raw `[edge] hubs` entries);
    /// returns its index. Start it with [`ProcessCluster::start_edge`].
    pub fn add_edge(&mut self, extra_hubs: &[String]) -> usize {
        let hubs: Vec<String> = self
            .hubs
            .iter()
            .map(HubProcess::edge_entry)
            .chain(extra_hubs.iter().cloned())
            .collect();
        self.add_edge_with_hubs(&hubs)
    }

    /// Adds an edge that knows exactly `hubs` (raw `[edge] hubs` entries).
    pub fn add_edge_with_hubs(&mut self, hubs: &[String]) -> usize {
        let index = self.edges.len();
        let edge = EdgeProcess {
            port: free_port(),
            metrics_port: free_port(),
            config: self.dir.path().join(format!("edge{index}.toml")),
            log: self.dir.path().join(format!("edge{index}.log")),
            child: None,
        };
        let config = format!(
            "[edge]\nname = \"edge{index}\"\nbind = \"127.0.0.1:{}\"\nmetrics_bind = \"127.0.0.1:{}\"\nhubs = [{}]\nhealth_interval = \"250ms\"\nactivity_interval = \"300ms\"\n",
            edge.port,
            edge.metrics_port,
            hubs.join(", ")
        );
        std::fs::write(&edge.config, config).expect("write edge config");
        self.edges.push(edge);
        index
    }

    pub fn start_edge(&mut self, index: usize) {
        let edge = &mut self.edges[index];
        assert!(edge.child.is_none(), "edge{index} is already running");
        let child = spawn_logged(
            &[],
            &["edge", "--config"],
            &edge.config,
            &edge.log,
            &[("CONFIGPROXY_AUTH_TOKEN", PROCESS_PROXY_TOKEN)],
        );
        edge.child = Some(child);
    }

    pub fn kill_edge(&mut self, index: usize) {
        if let Some(mut child) = self.edges[index].child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    /// The edge's process id while it runs (for RSS and the like).
    pub fn edge_pid(&self, index: usize) -> Option<u32> {
        self.edges[index].child.as_ref().map(Child::id)
    }

    pub fn edge_url(&self, index: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.edges[index].port)
    }

    /// The edge's route table as it reports it: `(route_seq, {path: target})`.
    pub async fn edge_routes(&self, index: usize) -> Option<(u64, std::collections::BTreeMap<String, String>)> {
        let url = format!("http://127.0.0.1:{}/routes", self.edges[index].metrics_port);
        let body: Value = self.client.get(url).send().await.ok()?.json().await.ok()?;
        let routes = body["routes"]
            .as_object()?
            .iter()
            .map(|(path, target)| (path.clone(), target.as_str().unwrap_or_default().to_owned()))
            .collect();
        Some((body["route_seq"].as_u64()?, routes))
    }

    /// One counter or gauge from the edge's metrics page (summed over labels).
    pub async fn edge_metric(&self, index: usize, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.edges[index].metrics_port);
        let text = self.client.get(url).send().await.ok()?.text().await.ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|line| line.split(['{', ' ']).next() == Some(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The hubs' route table through hub `node_id`'s routes API: `{path: target}`.
    pub async fn hub_routes(&self, node_id: u64) -> Option<std::collections::BTreeMap<String, String>> {
        let hub = self.hub(node_id);
        read_routes(&self.client, &format!("http://{}:{}", hub.host, hub.proxy_port)).await
    }

    /// `POST` (with a target) or `DELETE` (without) a route through hub `node_id`'s
    /// routes API; the status, or `None` when the hub did not answer.
    pub async fn set_route(&self, node_id: u64, path: &str, target: Option<&str>) -> Option<u16> {
        let url = format!(
            "http://{}:{}/api/routes{path}",
            self.hub(node_id).host,
            self.hub(node_id).proxy_port
        );
        let request = match target {
            Some(target) => self.client.post(url).json(&serde_json::json!({ "target": target })),
            None => self.client.delete(url),
        };
        let response = request
            .header("authorization", format!("token {PROCESS_PROXY_TOKEN}"))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    pub fn edge_logs(&self) -> String {
        self.edges
            .iter()
            .map(|edge| std::fs::read_to_string(&edge.log).unwrap_or_default())
            .collect()
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for edge in &mut self.edges {
            if let Some(mut child) = edge.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for hub in &mut self.hubs {
            if let Some(mut child) = hub.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The route table through a routes API at `base` (`http://host:port`), as
/// `{path: target}`; `None` without a successful answer.
pub async fn read_routes(client: &reqwest::Client, base: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let response = client
        .get(format!("{base}/api/routes"))
        .header("authorization", format!("token {PROCESS_PROXY_TOKEN}"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    Some(
        body.as_object()?
            .iter()
            .map(|(path, data)| (path.clone(), data["target"].as_str().unwrap_or_default().to_owned()))
            .collect(),
    )
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM` in
/// `/proc/<pid>/status`), in MiB; `None` once it has gone.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The sum of the samples of `name` in a Prometheus text page whose labels include
/// every one of `labels`; `None` when there is no such sample.
pub fn metric_sum(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name).then_some(())?;
            let has_all = labels
                .iter()
                .all(|(key, wanted)| label_text.split(',').any(|pair| pair == format!("{key}=\"{wanted}\"")));
            has_all.then_some(())?;
            value.parse::<f64>().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
