//! The nemesis over the rest of the surface, with edges in the loop: while hubs are
//! killed and paused and edges killed, clients through every replica issue and revoke
//! tokens, add and delete proxy routes (configurable-http-proxy's API), start and stop
//! servers (the test single-user server), and reach those servers through the edges.
//!
//! Tokens and routes are records, checked for linearizability like users are. Servers
//! are checked by what must hold once the faults heal: no server left pending, exactly
//! one process for every ready server and none for any other (no orphans), the hubs'
//! route table holding exactly the ready servers' routes, every edge's table equal to
//! the hubs', and every ready server reachable through every edge. During the run, an
//! edge must never hand a request for one user's server to another user's server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ganymede_history::{Outcome, RecordInput, RecordOutput, Recorder};
use ganymede_testkit::process::{PROCESS_PROXY_TOKEN, read_routes, servers_with_home_under};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Down, REQUEST_TIMEOUT, check_history, converge, hub_warnings, nemesis, profile};
use crate::spawning::spawner_lines;
use crate::support::{ADMIN_TOKEN, ProcessCluster};

/// Users with a server each, which clients start and stop and reach through edges.
const SERVER_USERS: usize = 4;
/// Proxy routes the clients contend on.
const ROUTES: usize = 4;
/// How long after healing servers may take to settle: past the spawner's timeouts
/// (`http_timeout` 10 s, `owner_timeout` 3 s) with room for a restarted replica.
const SETTLE: Duration = Duration::from_secs(90);

type TokenInput = RecordInput<bool>;
type TokenOutput = RecordOutput<bool>;
type RouteInput = RecordInput<String>;
type RouteOutput = RecordOutput<String>;

fn server_user(index: usize) -> String {
    format!("srv-{index}")
}

fn route_path(index: usize) -> String {
    format!("/nemesis/r{index}")
}

/// What the clients share: where things are, what has been seen, and the histories.
struct Shared {
    hubs: Vec<String>,
    proxies: Vec<String>,
    edges: Vec<String>,
    /// Each server user's own token (to reach their server through an edge).
    user_tokens: Vec<String>,
    hubs_down: Arc<Down>,
    edges_down: Arc<Down>,
    /// Tokens whose issue was acknowledged, as `(user, id)`.
    tokens: Mutex<Vec<(String, String)>>,
    token_history: Recorder<TokenInput, TokenOutput>,
    route_history: Recorder<RouteInput, RouteOutput>,
    /// Answers to the operations that are not records (server starts and stops, edge
    /// requests), by kind and status.
    tally: Mutex<BTreeMap<String, u64>>,
    /// Requests an edge handed to the wrong user's server.
    misrouted: Mutex<Vec<String>>,
}

impl Shared {
    fn count(&self, what: String) {
        if let Ok(mut tally) = self.tally.lock() {
            *tally.entry(what).or_default() += 1;
        }
    }
}

async fn token_operation(shared: &Shared, http: &reqwest::Client, rng: &mut StdRng, client: u64, hub: &str) {
    let known = shared.tokens.lock().map(|tokens| tokens.clone()).unwrap_or_default();
    if known.is_empty() || rng.random_bool(0.35) {
        let user = server_user(rng.random_range(0..SERVER_USERS));
        let answer = http
            .post(format!("{hub}/hub/api/users/{user}/tokens"))
            .header("authorization", format!("token {ADMIN_TOKEN}"))
            .json(&json!({ "note": "nemesis" }))
            .send()
            .await;
        let issued = match answer {
            Ok(response) if response.status() == 201 => response.json::<Value>().await.ok(),
            _ => None,
        };
        // Nobody can ask about a token before its id is out, so its issue is recorded
        // when the answer comes: any later operation on it starts after that.
        if let Some(id) = issued.as_ref().and_then(|body| body["id"].as_str()) {
            let op = shared.token_history.invoke(client, id, RecordInput::Create(true));
            shared.token_history.returned(op, RecordOutput::Created);
            if let Ok(mut tokens) = shared.tokens.lock() {
                tokens.push((user, id.to_owned()));
            }
        } else {
            shared.count("token issue without an answer".into());
        }
        return;
    }
    let (user, id) = &known[rng.random_range(0..known.len())];
    let url = format!("{hub}/hub/api/users/{user}/tokens/{id}");
    let (input, request) = if rng.random_bool(0.3) {
        (RecordInput::Delete, http.delete(&url))
    } else {
        (RecordInput::Read, http.get(&url))
    };
    let op = shared.token_history.invoke(client, id, input.clone());
    let status = request
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .send()
        .await
        .map(|response| response.status().as_u16());
    let output = match (&input, status) {
        (RecordInput::Read, Ok(200)) => Some(RecordOutput::Value(Some(true))),
        (RecordInput::Read, Ok(404)) => Some(RecordOutput::Value(None)),
        (RecordInput::Delete, Ok(204)) => Some(RecordOutput::Deleted),
        (RecordInput::Delete, Ok(404)) => Some(RecordOutput::Missing),
        _ => None,
    };
    match output {
        Some(output) => shared.token_history.returned(op, output),
        None => shared.token_history.unknown(op),
    }
}

/// A read of the whole table is a read of every route the clients contend on, all
/// within the one request's interval.
async fn read_all_routes(shared: &Shared, http: &reqwest::Client, client: u64, proxy: &str) -> bool {
    let ops: Vec<_> = (0..ROUTES)
        .map(|index| {
            (
                index,
                shared
                    .route_history
                    .invoke(client, &route_path(index), RecordInput::Read),
            )
        })
        .collect();
    match read_routes(http, proxy).await {
        Some(table) => {
            for (index, op) in ops {
                let value = table.get(&route_path(index)).cloned();
                shared.route_history.returned(op, RecordOutput::Value(value));
            }
            true
        }
        None => {
            for (_, op) in ops {
                shared.route_history.unknown(op);
            }
            false
        }
    }
}

async fn route_operation(shared: &Shared, http: &reqwest::Client, rng: &mut StdRng, client: u64, proxy: &str) {
    if rng.random_bool(0.4) {
        read_all_routes(shared, http, client, proxy).await;
        return;
    }
    let path = route_path(rng.random_range(0..ROUTES));
    let url = format!("{proxy}/api/routes{path}");
    let (input, request) = if rng.random_bool(0.7) {
        // Targets nobody listens on: the routes are data here, not traffic.
        let target = format!("http://127.0.0.1:{}", rng.random_range(1..4));
        (
            RecordInput::Put(target.clone()),
            http.post(&url).json(&json!({ "target": target })),
        )
    } else {
        (RecordInput::Discard, http.delete(&url))
    };
    let op = shared.route_history.invoke(client, &path, input.clone());
    let status = request
        .header("authorization", format!("token {PROCESS_PROXY_TOKEN}"))
        .send()
        .await
        .map(|response| response.status().as_u16());
    match (&input, status) {
        (RecordInput::Put(_), Ok(201)) => shared.route_history.returned(op, RecordOutput::Written),
        (RecordInput::Discard, Ok(204)) => shared.route_history.returned(op, RecordOutput::Deleted),
        _ => shared.route_history.unknown(op),
    }
}

async fn server_operation(shared: &Shared, http: &reqwest::Client, rng: &mut StdRng, hub: &str) {
    let user = server_user(rng.random_range(0..SERVER_USERS));
    let url = format!("{hub}/hub/api/users/{user}/server");
    let (kind, request) = if rng.random_bool(0.6) {
        ("start", http.post(&url).json(&json!({})))
    } else {
        ("stop", http.delete(&url))
    };
    let answer = request
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .send()
        .await;
    shared.count(match answer {
        // A server error says why: worth telling apart in the tally.
        Ok(response) if response.status().is_server_error() => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            format!("server {kind} {status} {}", body["message"])
        }
        Ok(response) => format!("server {kind} {}", response.status().as_u16()),
        Err(_) => format!("server {kind} without an answer"),
    });
}

/// A request for a user's server through an edge, as that user. Whatever answers, it
/// must not be another user's server.
async fn edge_request(shared: &Shared, http: &reqwest::Client, rng: &mut StdRng, edge: &str) {
    let index = rng.random_range(0..SERVER_USERS);
    let user = server_user(index);
    let answer = http
        .get(format!("{edge}/user/{user}/api/whoami"))
        .header("authorization", format!("token {}", shared.user_tokens[index]))
        .send()
        .await;
    let Ok(response) = answer else {
        shared.count("edge request without an answer".into());
        return;
    };
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get("x-ganymede-test-user")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if served_by.as_ref().is_some_and(|owner| *owner != user)
        && let Ok(mut misrouted) = shared.misrouted.lock()
    {
        misrouted.push(format!("/user/{user}/ through {edge} reached {served_by:?}'s server"));
    }
    shared.count(format!("edge {status}"));
}

async fn surface_client(shared: Arc<Shared>, client: u64, mut rng: StdRng, until: Instant) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut count = 0;
    while Instant::now() < until {
        let hub = rng.random_range(1..=shared.hubs.len() as u64);
        let edge = rng.random_range(1..=shared.edges.len() as u64);
        match rng.random_range(0..20) {
            _ if shared.hubs_down.is_down(hub) => continue,
            0..=5 => token_operation(&shared, &http, &mut rng, client, &shared.hubs[(hub - 1) as usize]).await,
            6..=11 => route_operation(&shared, &http, &mut rng, client, &shared.proxies[(hub - 1) as usize]).await,
            12..=14 => server_operation(&shared, &http, &mut rng, &shared.hubs[(hub - 1) as usize]).await,
            _ if shared.edges_down.is_down(edge) => continue,
            _ => edge_request(&shared, &http, &mut rng, &shared.edges[(edge - 1) as usize]).await,
        }
        count += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..20))).await;
    }
    count
}

/// `JUPYTERHUB_USER` of a live process.
fn user_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|byte| *byte == 0)
        .find_map(|entry| entry.strip_prefix(b"JUPYTERHUB_USER="))
        .map(|user| String::from_utf8_lossy(user).into_owned())
}

/// What must hold once servers have settled, or what does not yet.
async fn servers_settled(cluster: &ProcessCluster, user_tokens: &[String]) -> Result<BTreeSet<String>, String> {
    let mut ready = BTreeSet::new();
    for index in 0..SERVER_USERS {
        let user = server_user(index);
        let Some((200, model)) = cluster
            .request(1, reqwest::Method::GET, &format!("/hub/api/users/{user}"))
            .await
        else {
            return Err(format!("hub 1 did not answer for {user}"));
        };
        let server = &model["servers"][""];
        if server.is_null() {
            continue;
        }
        if !server["pending"].is_null() {
            return Err(format!("{user}'s server is pending: {server}"));
        }
        if server["ready"] == true {
            ready.insert(user);
        }
    }
    let mut processes: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for node in 1..=cluster.hubs.len() as u64 {
        for pid in servers_with_home_under(&cluster.data_dir(node)) {
            let user = user_of(pid).unwrap_or_else(|| format!("(pid {pid} without JUPYTERHUB_USER)"));
            processes.entry(user).or_default().push(pid);
        }
    }
    let running: BTreeSet<String> = processes.keys().cloned().collect();
    if running != ready || processes.values().any(|pids| pids.len() != 1) {
        return Err(format!("ready servers {ready:?}, but server processes {processes:?}"));
    }
    let hub_routes = cluster.hub_routes(1).await.ok_or("hub 1's routes API did not answer")?;
    let user_routes: BTreeSet<String> = hub_routes
        .keys()
        .filter_map(|path| path.strip_prefix("/user/"))
        .map(str::to_owned)
        .collect();
    if user_routes != ready {
        return Err(format!("ready servers {ready:?}, but user routes {user_routes:?}"));
    }
    for edge in 0..cluster.edges.len() {
        let (_, table) = cluster
            .edge_routes(edge)
            .await
            .ok_or(format!("edge {edge} did not answer"))?;
        if table != hub_routes {
            return Err(format!("edge {edge} routes {table:?}, the hubs' {hub_routes:?}"));
        }
    }
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| err.to_string())?;
    for user in &ready {
        let index: usize = user.trim_start_matches("srv-").parse().map_err(|_| "a user name")?;
        for edge in 0..cluster.edges.len() {
            let response = http
                .get(cluster.edge_url(edge, &format!("/user/{user}/api/whoami")))
                .header("authorization", format!("token {}", user_tokens[index]))
                .send()
                .await
                .map_err(|err| format!("{user} through edge {edge}: {err}"))?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status != 200 || body["user"] != user.as_str() {
                return Err(format!("{user} through edge {edge}: {status} {body}"));
            }
        }
    }
    Ok(ready)
}

/// Kills and pauses of hubs and kills of edges, under tokens, routes and servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_servers_tokens_and_routes_converge_on_hubs_and_edges_after_faults() {
    let profile = profile();
    let mut cluster = ProcessCluster::new(profile.replicas);
    cluster.configure_spawner(&spawner_lines("http_timeout = \"10s\""));
    eprintln!(
        "nemesis t40: {} replicas, 2 edges, {} clients, {:?} of faults, seed {}",
        profile.replicas, profile.clients, profile.load, profile.seed
    );
    cluster.start_all();
    cluster.leader().await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    let mut user_tokens = Vec::new();
    for index in 0..SERVER_USERS {
        user_tokens.push(crate::spawning::create_user(&cluster, &server_user(index)).await);
    }
    let shared = Arc::new(Shared {
        hubs: (1..=profile.replicas).map(|id| cluster.url(id, "")).collect(),
        proxies: cluster
            .hubs
            .iter()
            .map(|hub| format!("http://{}:{}", hub.host, hub.proxy_port))
            .collect(),
        edges: (0..cluster.edges.len())
            .map(|edge| cluster.edge_url(edge, ""))
            .collect(),
        user_tokens: user_tokens.clone(),
        hubs_down: Arc::new(Down((0..profile.replicas).map(|_| AtomicBool::new(false)).collect())),
        edges_down: Arc::new(Down((0..cluster.edges.len()).map(|_| AtomicBool::new(false)).collect())),
        tokens: Mutex::new(Vec::new()),
        token_history: Recorder::new(),
        route_history: Recorder::new(),
        tally: Mutex::new(BTreeMap::new()),
        misrouted: Mutex::new(Vec::new()),
    });

    let mut rng = StdRng::seed_from_u64(profile.seed);
    let until = Instant::now() + profile.load;
    let clients: Vec<_> = (1..=profile.clients)
        .map(|id| {
            tokio::spawn(surface_client(
                shared.clone(),
                id,
                StdRng::seed_from_u64(profile.seed.wrapping_add(id)),
                until,
            ))
        })
        .collect();
    let faults = nemesis(
        &mut cluster,
        &shared.hubs_down,
        Some(&shared.edges_down),
        &mut rng,
        until,
    )
    .await;
    let mut operations = 0;
    for client in clients {
        operations += client.await.expect("a client");
    }
    let healed = Instant::now();
    converge(&cluster).await;
    let converged = healed.elapsed();

    // --- servers settle: nothing pending, no orphan, routes on hubs and edges agree
    let deadline = Instant::now() + SETTLE;
    let ready = loop {
        match servers_settled(&cluster, &user_tokens).await {
            Ok(ready) => break ready,
            Err(why) => assert!(
                Instant::now() < deadline,
                "servers did not settle within {SETTLE:?} of healing: {why}\nhub warnings:\n{}",
                hub_warnings(&cluster)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let settled = healed.elapsed();
    let digests = converge(&cluster).await;

    // --- the final word on every token and route, through every replica
    let http = reqwest::Client::new();
    let tokens = shared.tokens.lock().map(|tokens| tokens.clone()).unwrap_or_default();
    for (node, (hub, proxy)) in shared.hubs.iter().zip(&shared.proxies).enumerate() {
        for (user, id) in &tokens {
            let op = shared.token_history.invoke(0, id, RecordInput::Read);
            let status = http
                .get(format!("{hub}/hub/api/users/{user}/tokens/{id}"))
                .header("authorization", format!("token {ADMIN_TOKEN}"))
                .send()
                .await
                .map(|response| response.status().as_u16());
            match status {
                Ok(200) => shared.token_history.returned(op, RecordOutput::Value(Some(true))),
                Ok(404) => shared.token_history.returned(op, RecordOutput::Value(None)),
                other => panic!("hub {} answered {other:?} for token {id} after healing", node + 1),
            }
        }
        assert!(
            read_all_routes(&shared, &http, 0, proxy).await,
            "hub {}'s routes API did not answer after healing",
            node + 1
        );
    }

    let token_history = shared.token_history.history();
    let route_history = shared.route_history.history();
    let unknown = token_history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Unknown))
        .count()
        + route_history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Unknown))
            .count();
    let (token_report, token_checked) = check_history(&format!("t40-tokens-seed-{}", profile.seed), &token_history);
    let (route_report, route_checked) = check_history(&format!("t40-routes-seed-{}", profile.seed), &route_history);
    let tally = shared.tally.lock().map(|tally| tally.clone()).unwrap_or_default();
    let misrouted = shared.misrouted.lock().map(|list| list.clone()).unwrap_or_default();
    eprintln!(
        "nemesis t40: {operations} operations in {:?} ({} token and {} route operations recorded, {unknown} unknown; \
         {} tokens issued); other answers {tally:?}; faults {faults:?}; replicas converged {converged:?} after healing, \
         servers settled {settled:?} ({} ready) at index {}; checked tokens in {token_checked:?}, routes in \
         {route_checked:?}: {} + {} anomalies; {} misrouted",
        profile.load,
        token_history.len(),
        route_history.len(),
        tokens.len(),
        ready.len(),
        digests[0].split(':').next().unwrap_or_default(),
        token_report.anomalies().len(),
        route_report.anomalies().len(),
        misrouted.len(),
    );
    assert!(
        misrouted.is_empty(),
        "edges handed requests to the wrong server: {misrouted:?}"
    );
    assert!(
        token_report.is_linearizable(),
        "tokens: not linearizable (seed {}): {:?}",
        profile.seed,
        token_report.anomalies()
    );
    assert!(
        route_report.is_linearizable(),
        "routes: not linearizable (seed {}): {:?}",
        profile.seed,
        route_report.anomalies()
    );
    assert!(faults.values().sum::<u64>() > 0, "no fault was injected");
    assert!(!tokens.is_empty(), "no token was issued");
    for kind in ["server start", "edge"] {
        assert!(
            tally.keys().any(|key| key.starts_with(kind)),
            "no {kind} was tried: {tally:?}"
        );
    }
}
