//! `ganymede-bench`: scenario benchmarks. Every run is bounded in count and time and
//! stops by itself; results are printed as a table and as one JSON line.
//!
//! - `writes`: replicated write throughput and commit latency, 3 replicas on loopback
//!   with fsync on, proposals from N concurrent clients through one replica's
//!   `RaftHandle` (the path every API write takes, minus HTTP).
//! - `failover`: time from `kill -9` of the leader process to the first acknowledged
//!   write through a surviving hub's HTTP API, over several trials.

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
