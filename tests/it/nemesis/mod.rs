//! The nemesis: concurrent clients create, change, read and delete users through every
//! replica while the cluster is broken in one of three ways — replicas killed with
//! SIGKILL and restarted or paused with SIGSTOP for longer than an election timeout
//! (`t10`), the network between replicas' namespaces cut (`t20`), or the links between
//! replicas made flaky by relays that delay, stall and reset (`t50`). Every operation is
//! recorded as invoked and then answered (a definite result) or unknown (no answer: a
//! timeout, a reset, a 5xx), and the history is checked for linearizability per user;
//! after the faults heal, every replica must hold the same state. `t30` crashes replicas
//! mid-burst and counts acknowledged writes; `surface::t40` does the rest of the API
//! (tokens, proxy routes, servers) with edges in the loop.
//!
//! The short profile runs in CI; `GANYMEDE_NEMESIS_SECS` and `GANYMEDE_NEMESIS_REPLICAS`
//! make a long one (`ops/nemesis.sh`). A history that fails is saved as JSON under
//! `$CARGO_TARGET_DIR/nemesis/` (or the system's temporary directory).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ganymede_history::{KeyedRecord, Outcome, RecordInput, RecordOutput, Recorder};
use ganymede_testkit::flaky::{FlakyRelay, LinkFaults};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, ProcessCluster, eventually};

mod surface;

type Input = RecordInput<bool>;
type Output = RecordOutput<bool>;

/// Users the clients contend on: few, so that operations overlap.
const KEYS: usize = 5;
/// A client's patience with one request: long enough for a failover, short enough that
/// a request to a paused replica is given up and counted unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The most search steps the checker spends on one user's history.
const CHECK_BUDGET: u64 = 20_000_000;

struct Profile {
    replicas: u64,
    clients: u64,
    load: Duration,
    seed: u64,
}

fn profile() -> Profile {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    Profile {
        replicas: number("GANYMEDE_NEMESIS_REPLICAS", 3),
        clients: number("GANYMEDE_NEMESIS_CLIENTS", 6),
        load: Duration::from_secs(number("GANYMEDE_NEMESIS_SECS", 20)),
        seed: number(
            "GANYMEDE_NEMESIS_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_millis() as u64),
        ),
    }
}

fn key_name(index: usize) -> String {
    format!("nemesis-{index}")
}

/// One operation against one replica, as the REST API answers it. `None`: no definite
/// answer, so the operation may or may not have happened.
async fn perform(http: &reqwest::Client, base: &str, name: &str, input: &Input) -> Option<Output> {
    let url = format!("{base}/hub/api/users/{name}");
    let request = match input {
        RecordInput::Create(admin) => http.post(&url).json(&json!({ "admin": admin })),
        RecordInput::Write(admin) => http.patch(&url).json(&json!({ "admin": admin })),
        RecordInput::Delete => http.delete(&url),
        RecordInput::Read => http.get(&url),
        RecordInput::Put(_) | RecordInput::Discard => panic!("users are not upserted: {input:?}"),
    };
    let response = request
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match (input, status) {
        (RecordInput::Create(_), 201) => Some(RecordOutput::Created),
        (RecordInput::Create(_), 409) => Some(RecordOutput::Exists),
        (RecordInput::Write(_), 200) => Some(RecordOutput::Written),
        (RecordInput::Write(_) | RecordInput::Delete, 404) => Some(RecordOutput::Missing),
        (RecordInput::Delete, 204) => Some(RecordOutput::Deleted),
        (RecordInput::Read, 200) => Some(RecordOutput::Value(Some(body["admin"].as_bool()?))),
        (RecordInput::Read, 404) => Some(RecordOutput::Value(None)),
        // 5xx (no leader in time, stopping) and anything unexpected: not a definite answer.
        _ => None,
    }
}

fn random_input(rng: &mut StdRng) -> Input {
    match rng.random_range(0..10) {
        0..=1 => RecordInput::Create(rng.random_bool(0.5)),
        2..=3 => RecordInput::Write(rng.random_bool(0.5)),
        4 => RecordInput::Delete,
        _ => RecordInput::Read,
    }
}

/// Which replicas are down (killed or paused): clients leave them alone, so that the
/// history is not filled with requests that never reached anyone.
struct Down(Vec<AtomicBool>);

impl Down {
    fn set(&self, node_id: u64, down: bool) {
        self.0[(node_id - 1) as usize].store(down, Ordering::SeqCst);
    }

    fn is_down(&self, node_id: u64) -> bool {
        self.0[(node_id - 1) as usize].load(Ordering::SeqCst)
    }
}

/// Faults injected, by kind.
type Faults = BTreeMap<&'static str, u64>;

fn signal(cluster: &ProcessCluster, node_id: u64, signal: rustix::process::Signal) {
    let pid = cluster.pid(node_id).expect("a running hub");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("signal the hub");
}

/// Injects one fault after another until `until`, each healed before the next.
/// With `edges_down`, one fault in five kills an edge (SIGKILL) and restarts it instead.
async fn nemesis(
    cluster: &mut ProcessCluster,
    down: &Down,
    edges_down: Option<&Down>,
    rng: &mut StdRng,
    until: Instant,
) -> Faults {
    let mut faults = Faults::new();
    let replicas = cluster.hubs.len() as u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        if let Some(edges_down) = edges_down.filter(|_| rng.random_bool(0.2)) {
            let edge = rng.random_range(0..cluster.edges.len());
            edges_down.set(edge as u64 + 1, true);
            cluster.kill_edge(edge);
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
            cluster.start_edge(edge);
            *faults.entry("kill -9 edge").or_default() += 1;
            edges_down.set(edge as u64 + 1, false);
            continue;
        }
        // Half the faults hit the leader: that is where a failover loses or repeats writes.
        let leader = cluster.leader().await;
        let target = if rng.random_bool(0.5) {
            leader
        } else {
            rng.random_range(1..=replicas)
        };
        let role = if target == leader { "leader" } else { "follower" };
        if rng.random_bool(0.5) {
            down.set(target, true);
            cluster.kill9(target);
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
            cluster.start(target);
            *faults
                .entry(if role == "leader" {
                    "kill -9 leader"
                } else {
                    "kill -9 follower"
                })
                .or_default() += 1;
            wait_until_serving(cluster, target).await;
            down.set(target, false);
        } else {
            down.set(target, true);
            signal(cluster, target, rustix::process::Signal::STOP);
            // Longer than the election timeout (150–300 ms): the others move on.
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
            signal(cluster, target, rustix::process::Signal::CONT);
            *faults
                .entry(if role == "leader" {
                    "pause leader"
                } else {
                    "pause follower"
                })
                .or_default() += 1;
            down.set(target, false);
        }
    }
    faults
}

/// Cuts the network between replicas after one another until `until`, each cut healed
/// before the next: the leader isolated on its own, a random minority split off, and a
/// bridge (two sides that each reach one replica in the middle, but not each other).
async fn partitioner(
    cluster: &ProcessCluster,
    network: &ganymede_testkit::netns::Network,
    rng: &mut StdRng,
    until: Instant,
) -> Faults {
    let mut faults = Faults::new();
    let replicas = network.nodes();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let leader = cluster.leader().await;
        let mut others: Vec<u64> = (1..=replicas).filter(|id| *id != leader).collect();
        for at in (1..others.len()).rev() {
            others.swap(at, rng.random_range(0..=at));
        }
        let kind = match rng.random_range(0..3) {
            0 => {
                network.partition(&[vec![leader], others]);
                "leader isolated"
            }
            1 => {
                // A minority with or without the leader.
                let mut everyone: Vec<u64> = (1..=replicas).collect();
                for at in (1..everyone.len()).rev() {
                    everyone.swap(at, rng.random_range(0..=at));
                }
                let minority = everyone.split_off(everyone.len() - (replicas as usize - 1) / 2);
                network.partition(&[everyone, minority]);
                "majority/minority split"
            }
            _ => {
                // The bridge: one replica in the middle reaches everyone; the two sides
                // (the leader on one) reach the middle but not each other.
                others.pop();
                let mut left = vec![leader];
                let mut right = Vec::new();
                for (at, node) in others.into_iter().enumerate() {
                    if at % 2 == 0 { right.push(node) } else { left.push(node) }
                }
                for a in &left {
                    for b in &right {
                        network.cut(*a, *b);
                    }
                }
                "bridge"
            }
        };
        *faults.entry(kind).or_default() += 1;
        // Long enough for elections on the majority side and timeouts on the other.
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        network.heal();
    }
    faults
}

async fn wait_until_serving(cluster: &ProcessCluster, node_id: u64) {
    eventually("the restarted hub to answer", Duration::from_secs(30), || async {
        let (status, _) = cluster
            .request(node_id, reqwest::Method::GET, "/hub/api/ganymede/digest")
            .await?;
        (status == 200).then_some(())
    })
    .await;
}

async fn client(
    id: u64,
    bases: Arc<Vec<String>>,
    down: Arc<Down>,
    recorder: Recorder<Input, Output>,
    mut rng: StdRng,
    until: Instant,
) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("client");
    let mut count = 0;
    while Instant::now() < until {
        let node = rng.random_range(1..=bases.len() as u64);
        if down.is_down(node) {
            continue;
        }
        let key = key_name(rng.random_range(0..KEYS));
        let input = random_input(&mut rng);
        let op = recorder.invoke(id, &key, input.clone());
        match perform(&http, &bases[(node - 1) as usize], &key, &input).await {
            Some(output) => recorder.returned(op, output),
            None => recorder.unknown(op),
        }
        count += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..20))).await;
    }
    count
}

/// The hubs' first 200 warnings and errors, to say why a wait failed.
fn hub_warnings(cluster: &ProcessCluster) -> String {
    cluster
        .logs()
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .take(200)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every replica is at one applied index with one state digest; the
/// `index:digest` each replica reported.
async fn converge(cluster: &ProcessCluster) -> Vec<String> {
    // Every replica at one applied index with one state digest. Each
    // digest request records its token's activity, committed a moment later, so the
    // replicas are sampled until one sample finds them level.
    let mut last_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for node in 1..=cluster.hubs.len() as u64 {
            let answer = cluster
                .request(node, reqwest::Method::GET, "/hub/api/ganymede/digest")
                .await;
            seen.push(match answer {
                Some((200, body)) => format!(
                    "{}:{}",
                    body["applied_index"].as_u64().unwrap_or_default(),
                    body["state_digest"].as_str().unwrap_or_default()
                ),
                other => format!("{other:?}"),
            });
        }
        if seen.windows(2).all(|pair| pair[0] == pair[1]) && seen[0].contains(':') {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not converge within 60 s of healing; last seen (index:digest per replica): \
             {last_seen:#?}\n{seen:#?}\nhub logs:\n{}",
            hub_warnings(cluster)
        );
        last_seen = seen;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks a history of records for linearizability, key by key; one that is not is
/// saved as JSON (`<save_dir>/<file>.json`) for debugging. The report and the time
/// the check took.
fn check_history<V>(
    file: &str,
    history: &[ganymede_history::Operation<RecordInput<V>, RecordOutput<V>>],
) -> (ganymede_history::Report, Duration)
where
    V: Clone + Eq + std::hash::Hash + std::fmt::Debug + serde::Serialize,
{
    let checking = Instant::now();
    let report = ganymede_history::check(&KeyedRecord::<V>::default(), history, CHECK_BUDGET);
    let checked_in = checking.elapsed();
    if !report.is_linearizable() {
        let dir = save_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(format!("{file}.json"));
        ganymede_history::save_json(&path, history, &report).expect("save the history");
        eprintln!("nemesis: the failing history is saved to {}", path.display());
    }
    (report, checked_in)
}

fn save_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("nemesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_kills_and_pauses_leave_a_linearizable_history_and_equal_replicas() {
    let profile = profile();
    let mut cluster = ProcessCluster::new(profile.replicas);
    exercise("t10", &profile, &mut cluster, Faulty::Processes).await;
}

/// Each replica in its own network namespace, the links between them cut for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_partitions_leave_a_linearizable_history_and_equal_replicas() {
    if !ganymede_testkit::netns::in_own_namespace(
        "nemesis::t20_partitions_leave_a_linearizable_history_and_equal_replicas",
    ) {
        return;
    }
    let profile = profile();
    let network = ganymede_testkit::netns::Network::create(profile.replicas).expect("the replicas' network");
    let mut cluster = ProcessCluster::in_network(&network);
    exercise("t20", &profile, &mut cluster, Faulty::Network(&network)).await;
}

/// Flaky links: every replica's Raft port behind a relay that delays, stalls and cuts
/// what crosses it (the kernel here has no netem), so replication, votes and forwarded
/// proposals all cross flaky links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_flaky_links_leave_a_linearizable_history_and_equal_replicas() {
    let profile = profile();
    let mut cluster = ProcessCluster::new(profile.replicas);
    let mut relays = Vec::new();
    for node in 1..=profile.replicas {
        let hub = cluster.hub(node);
        let target = format!("{}:{}", hub.host, hub.raft_port).parse().expect("an address");
        let relay = FlakyRelay::start(target).await.expect("a relay");
        cluster.dial_raft_through(node, &relay.addr().to_string());
        relays.push(relay);
    }
    exercise("t50", &profile, &mut cluster, Faulty::Links(&relays)).await;
}

/// What the nemesis breaks.
enum Faulty<'a> {
    /// Kills and pauses replicas.
    Processes,
    /// Cuts links between replicas' network namespaces.
    Network(&'a ganymede_testkit::netns::Network),
    /// Makes the relays in front of replicas flaky.
    Links(&'a [FlakyRelay]),
}

/// Makes the links into a random set of replicas flaky, one spell after another until
/// `until`, each healed before the next: jitter, stalls (as after lost segments),
/// connection resets, or all three.
async fn flaker(relays: &[FlakyRelay], rng: &mut StdRng, until: Instant) -> Faults {
    let mut faults = Faults::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let (kind, spell) = match rng.random_range(0..4) {
            0 => (
                "jitter",
                LinkFaults {
                    jitter_ms: rng.random_range(20..100),
                    ..LinkFaults::default()
                },
            ),
            1 => (
                "loss (stalls)",
                LinkFaults {
                    jitter_ms: 10,
                    stall_per_mille: rng.random_range(50..300),
                    ..LinkFaults::default()
                },
            ),
            2 => (
                "resets",
                LinkFaults {
                    reset_per_mille: rng.random_range(10..60),
                    ..LinkFaults::default()
                },
            ),
            _ => (
                "jitter + loss + resets",
                LinkFaults {
                    jitter_ms: rng.random_range(10..50),
                    stall_per_mille: rng.random_range(20..150),
                    reset_per_mille: rng.random_range(5..30),
                },
            ),
        };
        let mut hit = 0;
        for relay in relays {
            if rng.random_bool(0.6) {
                relay.set(spell);
                hit += 1;
            }
        }
        if hit == 0 {
            relays[rng.random_range(0..relays.len())].set(spell);
        }
        *faults.entry(kind).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        for relay in relays {
            relay.heal();
        }
    }
    faults
}

/// Runs the clients against `cluster` under the faults, then checks the history and
/// the replicas.
async fn exercise(name: &str, profile: &Profile, cluster: &mut ProcessCluster, faulty: Faulty<'_>) {
    eprintln!(
        "nemesis {name}: {} replicas, {} clients, {:?} of faults, seed {}",
        profile.replicas, profile.clients, profile.load, profile.seed
    );
    cluster.start_all();
    cluster.leader().await;
    let bases: Arc<Vec<String>> = Arc::new((1..=profile.replicas).map(|id| cluster.url(id, "")).collect());
    let down = Arc::new(Down((0..profile.replicas).map(|_| AtomicBool::new(false)).collect()));
    let recorder: Recorder<Input, Output> = Recorder::new();
    let mut rng = StdRng::seed_from_u64(profile.seed);

    let started = Instant::now();
    let until = started + profile.load;
    let clients: Vec<_> = (1..=profile.clients)
        .map(|id| {
            tokio::spawn(client(
                id,
                bases.clone(),
                down.clone(),
                recorder.clone(),
                StdRng::seed_from_u64(profile.seed.wrapping_add(id)),
                until,
            ))
        })
        .collect();
    let faults = match faulty {
        Faulty::Network(network) => partitioner(cluster, network, &mut rng, until).await,
        Faulty::Processes => nemesis(cluster, &down, None, &mut rng, until).await,
        Faulty::Links(relays) => flaker(relays, &mut rng, until).await,
    };
    let mut operations = 0;
    for client in clients {
        operations += client.await.expect("a client");
    }
    let healed = Instant::now();

    let digests = converge(cluster).await;
    let convergence = healed.elapsed();

    // --- the final word on every user, read through every replica: pins down what the
    // unknown operations did, so a lost acknowledged write cannot hide
    let http = reqwest::Client::new();
    for node in 1..=profile.replicas {
        for index in 0..KEYS {
            let key = key_name(index);
            let op = recorder.invoke(0, &key, RecordInput::Read);
            match perform(&http, &bases[(node - 1) as usize], &key, &RecordInput::Read).await {
                Some(output) => recorder.returned(op, output),
                None => panic!("hub {node} does not answer a read of {key} after the faults healed"),
            }
        }
    }

    let history = recorder.history();
    let unknown = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Unknown))
        .count();
    let (report, checked_in) = check_history(&format!("{name}-seed-{}", profile.seed), &history);
    eprintln!(
        "nemesis {name}: {operations} operations ({unknown} unknown) in {:?}; faults {:?}; converged {convergence:?} after \
         healing at index {}; checked in {checked_in:?}: {} anomalies, {} inconclusive",
        profile.load,
        faults,
        digests[0].split(':').next().unwrap_or_default(),
        report.anomalies().len(),
        report.inconclusive().len(),
    );
    assert!(
        report.is_linearizable(),
        "the history is not linearizable (seed {}): {:?}",
        profile.seed,
        report.anomalies()
    );
    assert!(faults.values().sum::<u64>() > 0, "no fault was injected");
    assert!(operations > 0);

    // The checker sees what the clients saw: a read made up to have returned the user
    // before anyone asked to create it (the cluster starts empty) must be an anomaly.
    // (A lie later on could be explained by an unknown operation taking effect late.)
    let mut forged = history.clone();
    let first = forged
        .iter()
        .filter(|op| op.key == key_name(0))
        .min_by_key(|op| op.invoked)
        .expect("an operation")
        .clone();
    assert!(
        first.invoked > 0,
        "the first operation was invoked at the recorder's start"
    );
    let mut lie = first;
    lie.client = u64::MAX;
    lie.input = RecordInput::Read;
    lie.invoked = 0;
    lie.outcome = Outcome::Returned {
        output: RecordOutput::Value(Some(true)),
        returned: 0,
    };
    forged.push(lie);
    let forged_report = ganymede_history::check(&KeyedRecord::<bool>::default(), &forged, CHECK_BUDGET);
    assert_eq!(forged_report.anomalies().len(), 1, "{forged_report:?}");
}

/// Crash consistency: bursts of writes through every replica, a `kill -9` at a random
/// moment in each (of one replica, the leader or a follower, or of all three at once),
/// and a restart from the data directory. RocksDB must open cleanly every time, the
/// replica must rejoin, and no write that was acknowledged may be missing afterwards.
/// `GANYMEDE_CRASH_CYCLES` sets the number of cycles (CI: 20; the long run: 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_crashes_mid_burst_lose_no_acknowledged_write() {
    let cycles = std::env::var("GANYMEDE_CRASH_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20u64);
    let seed = profile().seed;
    let mut rng = StdRng::seed_from_u64(seed);
    eprintln!("crash: {cycles} cycles, seed {seed}");
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    cluster.leader().await;
    let bases: Arc<Vec<String>> = Arc::new((1..=3).map(|id| cluster.url(id, "")).collect());
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("client");
    let mut acknowledged: Vec<String> = Vec::new();
    let (mut attempted, mut kills) = (0u64, BTreeMap::<&str, u64>::new());
    for cycle in 0..cycles {
        // The burst: four writers, each creating users until the crash has happened.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4u64)
            .map(|writer| {
                let (http, bases, stop) = (http.clone(), bases.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut acked, mut tried) = (Vec::new(), 0u64);
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let name = format!("crash-{cycle}-{writer}-{n}");
                        n += 1;
                        tried += 1;
                        let base = &bases[((writer + n) % 3) as usize];
                        let created = perform(&http, base, &name, &RecordInput::Create(false)).await;
                        match created {
                            Some(RecordOutput::Created) => acked.push(name),
                            // A dead replica refuses at once: do not spin on it.
                            _ => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    (acked, tried)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        let leader = cluster.leader().await;
        let victims: Vec<u64> = match rng.random_range(0..5) {
            0 => vec![1, 2, 3],
            1 | 2 => vec![leader],
            _ => vec![(leader % 3) + 1],
        };
        let kind = match victims.len() {
            3 => "kill -9 all",
            _ if victims[0] == leader => "kill -9 leader",
            _ => "kill -9 follower",
        };
        *kills.entry(kind).or_default() += 1;
        for victim in &victims {
            cluster.kill9(*victim);
        }
        // Writes go on against the survivors for a moment, then the dead come back.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        for victim in &victims {
            cluster.start(*victim);
        }
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            let (acked, tried) = writer.await.expect("a writer");
            acknowledged.extend(acked);
            attempted += tried;
        }
        for victim in &victims {
            wait_until_serving(&cluster, *victim).await;
            assert!(
                cluster.exited(*victim).is_none(),
                "hub {victim} exited after restarting:\n{}",
                cluster.logs()
            );
        }
    }
    // Every acknowledged user, on every replica (reads go through the leader's barrier,
    // and each replica answers from its own applied state).
    cluster.leader().await;
    let mut lost = Vec::new();
    for node in 1..=3u64 {
        wait_until_serving(&cluster, node).await;
        for name in &acknowledged {
            let read = perform(&http, &bases[(node - 1) as usize], name, &RecordInput::Read).await;
            match read {
                Some(RecordOutput::Value(Some(_))) => {}
                other => lost.push(format!("{name} on hub {node}: {other:?}")),
            }
        }
    }
    eprintln!(
        "crash: {cycles} cycles, kills {kills:?}, {attempted} writes tried, {} acknowledged, {} lost",
        acknowledged.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost (seed {seed}): {lost:?}");
    assert!(!acknowledged.is_empty(), "no write was acknowledged");
}
