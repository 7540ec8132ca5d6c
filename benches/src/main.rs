//! `ganymede-bench`: scenario benchmarks. Every run is bounded in count and time and
//! stops by itself; results are printed as a table and as one JSON line.
//!
//! - `writes`: replicated write throughput and commit latency, 3 replicas on loopback
//!   with fsync on, proposals from N concurrent clients through one replica's
//!   `RaftHandle` (the path every API write takes, minus HTTP).
//! - `failover`: time from `kill -9` of the leader process to the first acknowledged
//!   write through a surviving hub's HTTP API, over several trials.
//! - `propagation`: a route committed through the routes API → served by every edge
//!   (3 hubs, 4 edges), p50/p99.
//! - `scale`: 100,000 routes: edge RSS, lookup latency with few and many routes, and an
//!   edge's cold start from a snapshot.
//! - The proxy data path against configurable-http-proxy and nginx is
//!   `benches/proxy/run.sh` (it drives wrk, nginx and node).

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ganymede_model::Command;
use ganymede_testkit::TestCluster;
use ganymede_testkit::process::ProcessCluster;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Replicated write throughput and latency at several concurrencies.
    Writes {
        /// Concurrent clients, comma-separated.
        #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
        clients: Vec<usize>,
        /// How long to measure each concurrency.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        /// Which replica the clients talk to: `leader` or `follower` (forwarded).
        #[arg(long, default_value = "leader")]
        through: String,
    },
    /// Leader failover time over real processes.
    Failover {
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// Route propagation: commit → served by every edge.
    Propagation {
        #[arg(long, default_value_t = 200)]
        routes: usize,
        #[arg(long, default_value_t = 4)]
        edges: usize,
    },
    /// An edge with many routes: memory, lookup cost, cold start.
    Scale {
        #[arg(long, default_value_t = 100_000)]
        routes: usize,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        _ => Err(format!("bad duration unit in {text:?}")),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Writes {
            clients,
            duration,
            through,
        } => writes(clients, duration, &through).await,
        Scenario::Failover { trials } => failover(trials).await,
        Scenario::Propagation { routes, edges } => propagation(routes, edges).await,
        Scenario::Scale { routes } => scale(routes).await,
    }
}

async fn writes(concurrencies: Vec<usize>, duration: Duration, through: &str) -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let node = if through == "follower" {
        (1..=3).find(|id| *id != leader).unwrap_or(leader)
    } else {
        leader
    };
    let raft = cluster.hub(node).raft.clone();
    println!("replicated writes: 3 replicas, fsync on, proposals through node {node} ({through})");
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>10}",
        "clients", "commits/s", "p50 ms", "p99 ms", "errors"
    );
    let mut results = Vec::new();
    for (round, clients) in concurrencies.into_iter().enumerate() {
        let start = Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let raft = raft.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0u64;
                    // Bounded: stops at the deadline or after a million proposals.
                    for i in 0..1_000_000u64 {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let command = Command::CreateUsers {
                            names: vec![format!("r{round}-c{client}-{i}")],
                            admin: false,
                            at: 1_700_000_000_000,
                        };
                        let sent = Instant::now();
                        match raft.propose(command).await {
                            Ok(ganymede_raft::Applied::Events(_)) => latencies.push(sent.elapsed()),
                            _ => errors += 1,
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (mut l, e) = task.await?;
            latencies.append(&mut l);
            errors += e;
        }
        let elapsed = start.elapsed();
        latencies.sort();
        let rate = latencies.len() as f64 / elapsed.as_secs_f64();
        let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
        println!(
            "{clients:>8} {rate:>12.0} {:>10.2} {:>10.2} {errors:>10}",
            ms(p50),
            ms(p99)
        );
        results.push(serde_json::json!({"clients": clients, "commits_per_s": rate, "p50_ms": ms(p50), "p99_ms": ms(p99), "errors": errors}));
    }
    println!(
        "{}",
        serde_json::json!({"scenario": "writes", "through": through, "results": results})
    );
    Ok(())
}

async fn failover(trials: usize) -> anyhow::Result<()> {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    let mut times = Vec::new();
    for trial in 0..trials {
        let leader = cluster.leader().await;
        let survivor = (1..=3).find(|id| *id != leader).unwrap_or(1);
        // Make sure the survivor serves writes before the kill.
        let path = format!("/hub/api/users/warm{trial}");
        anyhow::ensure!(
            cluster
                .request(survivor, reqwest::Method::POST, &path)
                .await
                .map(|r| r.0)
                == Some(201),
            "warm-up write failed"
        );
        let killed = Instant::now();
        cluster.kill9(leader);
        let mut attempt = 0;
        let first_ack = loop {
            attempt += 1;
            let path = format!("/hub/api/users/after{trial}-{attempt}");
            if cluster
                .request(survivor, reqwest::Method::POST, &path)
                .await
                .map(|r| r.0)
                == Some(201)
            {
                break killed.elapsed();
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "no write acknowledged 30 s after the kill"
            );
        };
        println!(
            "trial {trial:>2}: killed hub{leader}, first acknowledged write after {:.0} ms",
            ms(first_ack)
        );
        times.push(first_ack);
        cluster.start(leader);
        cluster.leader().await;
    }
    times.sort();
    let (p50, p99, max) = (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or_default(),
    );
    println!(
        "failover over {trials} trials: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(p50),
        ms(p99),
        ms(max)
    );
    println!(
        "{}",
        serde_json::json!({"scenario": "failover", "trials": trials, "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max)})
    );
    Ok(())
}

/// A cluster of 3 hubs and `edges` edges, with every edge's table loaded.
async fn edge_cluster(edges: usize) -> ProcessCluster {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    cluster.leader().await;
    for _ in 0..edges {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    for edge in 0..edges {
        ganymede_testkit::eventually("the edge to load its table", Duration::from_secs(30), || {
            cluster.edge_routes(edge)
        })
        .await;
    }
    cluster
}

/// Whether `url` is answered by the upstream (marked `x-upstream`).
async fn upstream_serves(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(response) => response.headers().contains_key("x-upstream"),
        Err(_) => false,
    }
}

async fn propagation(routes: usize, edges: usize) -> anyhow::Result<()> {
    let cluster = edge_cluster(edges).await;
    let upstream = ganymede_testkit::upstream::Upstream::start("bench").await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut samples = Vec::with_capacity(routes);
    let deadline = Instant::now() + Duration::from_secs(120);
    for index in 0..routes {
        if Instant::now() > deadline {
            break;
        }
        let path = format!("/user/p{index}");
        // Through a follower's routes API half the time: forwarding is part of the path.
        let hub = 1 + (index % 3) as u64;
        let status = cluster.set_route(hub, &path, Some(&upstream.target())).await;
        anyhow::ensure!(status == Some(201), "route add answered {status:?}");
        let committed = Instant::now();
        let urls: Vec<String> = (0..edges)
            .map(|edge| cluster.edge_url(edge, &format!("{path}/x")))
            .collect();
        let mut pending: Vec<&String> = urls.iter().collect();
        while !pending.is_empty() {
            let checks = futures::future::join_all(pending.iter().map(|url| upstream_serves(&client, url))).await;
            pending = pending
                .into_iter()
                .zip(checks)
                .filter(|(_, served)| !served)
                .map(|(url, _)| url)
                .collect();
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(10),
                "route {path} never reached every edge"
            );
        }
        samples.push(committed.elapsed());
    }
    samples.sort();
    println!(
        "route propagation, 3 hubs, {edges} edges, {} routes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 < 10 ms)",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0)),
    );
    println!(
        "{}",
        serde_json::json!({"scenario": "propagation", "edges": edges, "routes": samples.len(),
            "p50_ms": ms(percentile(&samples, 0.5)), "p99_ms": ms(percentile(&samples, 0.99))})
    );
    Ok(())
}

fn rss_mib(pid: u32) -> f64 {
    ganymede_testkit::process::memory_mib(pid).map_or(0.0, |(rss, _)| rss)
}

/// Mean latency of `count` sequential requests through the edge.
async fn lookup_latency(client: &reqwest::Client, url: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..count {
        let response = client.get(url).send().await?;
        anyhow::ensure!(response.headers().contains_key("x-upstream"), "not routed: {url}");
        response.bytes().await?;
    }
    Ok(started.elapsed() / count as u32)
}

async fn scale(routes: usize) -> anyhow::Result<()> {
    let mut cluster = edge_cluster(1).await;
    let upstream = ganymede_testkit::upstream::Upstream::start("bench").await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let pid = cluster.edge_pid(0).ok_or_else(|| anyhow::anyhow!("edge not running"))?;
    anyhow::ensure!(cluster.set_route(1, "/user/probe", Some(&upstream.target())).await == Some(201));
    let probe = cluster.edge_url(0, "/user/probe/api/status");
    ganymede_testkit::eventually("the probe route", Duration::from_secs(10), || async {
        upstream_serves(&client, &probe).await.then_some(())
    })
    .await;
    lookup_latency(&client, &probe, 200).await?;
    let few = lookup_latency(&client, &probe, 2000).await?;
    let rss_before = rss_mib(pid);

    let started = Instant::now();
    let target = upstream.target();
    let mut next = 0usize;
    while next < routes {
        let batch: Vec<usize> = (next..(next + 256).min(routes)).collect();
        next += batch.len();
        let adds = batch.iter().map(|index| {
            let path = format!("/user/u{index}");
            let cluster = &cluster;
            let target = &target;
            async move { cluster.set_route(1 + (*index % 3) as u64, &path, Some(target)).await }
        });
        for status in futures::future::join_all(adds).await {
            anyhow::ensure!(status == Some(201), "route add answered {status:?}");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "adding routes took too long"
        );
    }
    let added_in = started.elapsed();
    let expected = routes + 1;
    ganymede_testkit::eventually("the edge to hold every route", Duration::from_secs(60), || async {
        let (_, table) = cluster.edge_routes(0).await?;
        (table.len() == expected).then_some(())
    })
    .await;
    lookup_latency(&client, &probe, 200).await?;
    let many = lookup_latency(&client, &probe, 2000).await?;
    let rss_after = rss_mib(pid);

    // Cold start: a fresh edge process loads the whole table from a hub's snapshot.
    cluster.kill_edge(0);
    let restarted = Instant::now();
    cluster.start_edge(0);
    let last = cluster.edge_url(0, &format!("/user/u{}/x", routes - 1));
    ganymede_testkit::eventually(
        "the restarted edge to serve the last route",
        Duration::from_secs(60),
        || async { upstream_serves(&client, &last).await.then_some(()) },
    )
    .await;
    let cold_start = restarted.elapsed();
    let rss_cold = cluster.edge_pid(0).map_or(0.0, rss_mib);

    println!(
        "{routes} routes added through the routes API in {:.1} s ({:.0}/s)",
        added_in.as_secs_f64(),
        routes as f64 / added_in.as_secs_f64()
    );
    println!(
        "edge RSS: {rss_before:.1} MiB with 1 route, {rss_after:.1} MiB with {expected} (goal < 150 MB); {rss_cold:.1} MiB after a cold start"
    );
    println!(
        "sequential request through the edge: {:.3} ms with 1 route, {:.3} ms with {expected} (lookup cost flat)",
        ms(few),
        ms(many)
    );
    println!(
        "cold start to serving the full table: {:.0} ms (goal < 1 s)",
        ms(cold_start)
    );
    println!(
        "{}",
        serde_json::json!({"scenario": "scale", "routes": routes, "rss_mib_one": rss_before, "rss_mib_all": rss_after,
            "rss_mib_cold": rss_cold, "request_ms_one": ms(few), "request_ms_all": ms(many), "cold_start_ms": ms(cold_start)})
    );
    Ok(())
}
