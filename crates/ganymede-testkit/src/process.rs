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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct HubProcess {
    pub node_id: u64,
    pub api_port: u16,
    pub raft_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A cluster of hub processes in a temporary directory.
pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub hubs: Vec<HubProcess>,
    client: reqwest::Client,
}

impl ProcessCluster {
    pub fn new(size: u64) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let hubs: Vec<HubProcess> = (1..=size)
            .map(|node_id| HubProcess {
                node_id,
                api_port: free_port(),
                raft_port: free_port(),
                config: dir.path().join(format!("hub{node_id}.toml")),
                log: dir.path().join(format!("hub{node_id}.log")),
                child: None,
            })
            .collect();
        let members: Vec<String> = hubs
            .iter()
            .map(|h| {
                format!(
                    "{{ node_id = {}, raft_addr = \"127.0.0.1:{}\", api_addr = \"127.0.0.1:{}\" }}",
                    h.node_id, h.raft_port, h.api_port
                )
            })
            .collect();
        for hub in &hubs {
            let config = format!(
                "[hub]\nnode_id = {}\ndata_dir = \"{}\"\napi_bind = \"127.0.0.1:{}\"\nraft_bind = \"127.0.0.1:{}\"\nlog = \"info\"\n\n[cluster]\ninitial_members = [{}]\n",
                hub.node_id,
                dir.path().join(format!("hub{}", hub.node_id)).display(),
                hub.api_port,
                hub.raft_port,
                members.join(", ")
            );
            std::fs::write(&hub.config, config).expect("write config");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        ProcessCluster { dir, hubs, client }
    }

    /// Adds hub `N+1` with no initial members: started, it waits to be added with
    /// `ganymede cluster add`. Returns its node id.
    pub fn add_joining_hub(&mut self) -> u64 {
        let node_id = self.hubs.len() as u64 + 1;
        let hub = HubProcess {
            node_id,
            api_port: free_port(),
            raft_port: free_port(),
            config: self.dir.path().join(format!("hub{node_id}.toml")),
            log: self.dir.path().join(format!("hub{node_id}.log")),
            child: None,
        };
        let config = format!(
            "[hub]\nnode_id = {node_id}\ndata_dir = \"{}\"\napi_bind = \"127.0.0.1:{}\"\nraft_bind = \"127.0.0.1:{}\"\n",
            self.dir.path().join(format!("hub{node_id}")).display(),
            hub.api_port,
            hub.raft_port,
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&hub.log)
            .expect("log file");
        let child = Command::new(ganymede_bin())
            .args(["hub", "--config"])
            .arg(&hub.config)
            .env("GANYMEDE_ADMIN_TOKEN", PROCESS_ADMIN_TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ganymede hub");
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

    pub fn is_running(&self, node_id: u64) -> bool {
        self.hub(node_id).child.is_some()
    }

    pub fn url(&self, node_id: u64, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.hub(node_id).api_port)
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

    /// The leader every running hub agrees on, once they do.
    pub async fn leader(&self) -> u64 {
        eventually("running hubs agree on a leader", Duration::from_secs(30), || async {
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

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for hub in &mut self.hubs {
            if let Some(mut child) = hub.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
