//! Edges: real `ganymede edge` processes following real hubs. Routes added through any
//! hub reach every edge; edges ride through a hub failover and the loss of every hub;
//! a forged or lossy event stream never leaves an edge with a wrong table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ganymede_events::{EventsKey, encode_event, encode_heartbeat};
use ganymede_proto::edge::v1::{Route, RouteEvent, route_event::Change};
use ganymede_testkit::upstream::Upstream;
use rand::Rng;
use tokio_tungstenite::tungstenite::Message;
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::support::{ProcessCluster, append_config, eventually};

const DEADLINE: Duration = Duration::from_secs(20);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Which upstream answered `url` through an edge (`None`: not an upstream).
async fn served_by(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    response
        .headers()
        .get("x-upstream")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Waits until the edge's table equals the hubs' (read through hub `node_id`).
async fn converged(cluster: &ProcessCluster, edge: usize, node_id: u64) -> BTreeMap<String, String> {
    eventually("the edge's table to equal the hubs'", DEADLINE, || async {
        let hub = cluster.hub_routes(node_id).await?;
        let (_, edge) = cluster.edge_routes(edge).await?;
        (hub == edge).then_some(edge)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_added_through_any_hub_reach_every_edge_and_leave_them() {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    cluster.leader().await;
    let alice = Upstream::start("alice").await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    let client = client();

    assert_eq!(
        cluster.set_route(2, "/user/alice", Some(&alice.target())).await,
        Some(201)
    );
    for edge in 0..2 {
        let url = cluster.edge_url(edge, "/user/alice/lab?x=1");
        eventually("the route to reach the edge", DEADLINE, || async {
            (served_by(&client, &url).await.as_deref() == Some("alice")).then_some(())
        })
        .await;
        converged(&cluster, edge, 1).await;
    }

    // Headers as configurable-http-proxy sets them; Host and the full path kept.
    let seen: serde_json::Value = client
        .get(cluster.edge_url(0, "/user/alice/api/contents?type=notebook"))
        .header("host", "hub.example.org:8443")
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["uri"], "/user/alice/api/contents?type=notebook");
    assert_eq!(seen["headers"]["host"], "hub.example.org:8443");
    assert_eq!(seen["headers"]["x-forwarded-for"], "10.9.9.9,127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-port"], "8443");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], "hub.example.org:8443");

    // Paths without a route go to a hub.
    let health = client
        .get(cluster.edge_url(1, "/hub/health"))
        .send()
        .await
        .expect("hub via edge");
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-jupyterhub-version"));

    assert_eq!(cluster.set_route(3, "/user/alice", None).await, Some(204));
    for edge in 0..2 {
        let url = cluster.edge_url(edge, "/user/alice/lab");
        eventually("the route to leave the edge", DEADLINE, || async {
            served_by(&client, &url).await.is_none().then_some(())
        })
        .await;
        let table = converged(&cluster, edge, 2).await;
        assert!(table.is_empty(), "{table:?}");
    }
}

/// Requests in a loop until `stop`: (ok, failed) counts.
fn traffic(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let client = client();
        let (mut ok, mut failed) = (0, 0);
        // Bounded: at most 20k requests or until stopped.
        for _ in 0..20_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_ride_through_a_hub_failover_and_the_loss_of_every_hub() {
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    let leader = cluster.leader().await;
    let alice = Upstream::start("alice").await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    let client = client();
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some(&alice.target())).await,
        Some(201)
    );
    for edge in 0..2 {
        converged(&cluster, edge, 1).await;
    }

    // A websocket opened before the failover keeps working through it.
    let ws_url = format!(
        "ws://127.0.0.1:{}/user/alice/api/kernels/k1/channels",
        cluster.edges[0].port
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("websocket through the edge");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("before")).await.expect("send");
    assert_eq!(
        socket.next().await.expect("echo").expect("frame"),
        Message::text("before")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let user = traffic(cluster.edge_url(0, "/user/alice/api/status"), stop.clone());
    let hub = traffic(cluster.edge_url(1, "/hub/health"), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill9(leader);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    // Route changes keep flowing from the new leader to both edges.
    let bob = Upstream::start("bob").await;
    let survivor = (1..=3).find(|&n| n != leader).expect("a survivor");
    assert_eq!(
        cluster.set_route(survivor, "/user/bob", Some(&bob.target())).await,
        Some(201)
    );
    for edge in 0..2 {
        converged(&cluster, edge, survivor).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (user_ok, user_failed) = user.await.expect("user traffic");
    let (hub_ok, hub_failed) = hub.await.expect("hub traffic");
    assert!(user_ok > 0 && hub_ok > 0, "traffic flowed: {user_ok} {hub_ok}");
    assert_eq!(user_failed, 0, "no proxied request to a user route fails");
    assert_eq!(hub_failed, 0, "two hubs answered all along: {hub_ok} ok");

    socket.send(Message::text("after")).await.expect("send after failover");
    assert_eq!(
        socket.next().await.expect("echo").expect("frame"),
        Message::text("after")
    );

    // Every hub gone: the edges keep routing what they have.
    for node_id in 1..=3 {
        cluster.kill9(node_id);
    }
    for edge in 0..2 {
        assert_eq!(
            served_by(&client, &cluster.edge_url(edge, "/user/bob/tree"))
                .await
                .as_deref(),
            Some("bob")
        );
    }
    let no_hub = client
        .get(cluster.edge_url(0, "/hub/home"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("answer without hubs");
    assert_eq!(no_hub.status(), 503);
    let body: serde_json::Value = no_hub.json().await.expect("json error");
    assert_eq!(body["status"], 503);
    socket.send(Message::text("alone")).await.expect("send without hubs");
    assert_eq!(
        socket.next().await.expect("echo").expect("frame"),
        Message::text("alone")
    );

    // Hubs back; a restarted edge serves the whole table promptly.
    cluster.start_all();
    cluster.leader().await;
    cluster.kill_edge(1);
    let restarted = Instant::now();
    cluster.start_edge(1);
    let url = cluster.edge_url(1, "/user/bob/");
    eventually("the restarted edge to serve the table", DEADLINE, || async {
        (served_by(&client, &url).await.as_deref() == Some("bob")).then_some(())
    })
    .await;
    println!("restarted edge served the table after {:?}", restarted.elapsed());
    converged(&cluster, 1, 2).await;
}

/// A forger publishes on an endpoint the edge subscribes to, signed with the wrong key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_changes_nothing() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;
    let mut forger = PubSocket::new();
    let endpoint = forger.bind("tcp://127.0.0.1:0").await.expect("bind forger");
    let forger_port = endpoint.to_string().rsplit(':').next().expect("port").to_owned();
    let nowhere = ganymede_testkit::process::free_port();
    let edge = cluster.add_edge(&[format!(
        "{{ api = \"127.0.0.1:{nowhere}\", grpc = \"127.0.0.1:{nowhere}\", events = \"127.0.0.1:{forger_port}\" }}"
    )]);
    cluster.start_edge(edge);
    let (route_seq, _) = eventually("the edge to load a table", DEADLINE, || cluster.edge_routes(edge)).await;

    let wrong_key = EventsKey::derive("not the cluster secret");
    let forged = RouteEvent {
        route_seq: route_seq + 1,
        change: Some(Change::Added(Route {
            path: "/user/mallory".into(),
            target: "http://127.0.0.1:1".into(),
        })),
    };
    // Keep publishing until the edge has seen (and dropped) some: a subscriber joins late.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let frames: [Vec<Bytes>; 2] = [encode_event(&wrong_key, &forged), encode_heartbeat(&wrong_key, 1_000)];
        for frames in frames {
            forger
                .send(ZmqMessage::try_from(frames).expect("frames"))
                .await
                .expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dropped = cluster.edge_metric(edge, "ganymede_edge_bad_hmac_total").await;
        if dropped.is_some_and(|dropped| dropped >= 2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the edge never dropped a forged message");
    }
    let (seq_after, table) = cluster.edge_routes(edge).await.expect("edge routes");
    assert_eq!(seq_after, route_seq);
    assert!(!table.contains_key("/user/mallory"), "{table:?}");
    let lag = cluster.edge_metric(edge, "ganymede_edge_route_seq_lag").await;
    assert_eq!(lag, Some(0.0), "a forged heartbeat promises nothing");

    // The real stream still flows.
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some("http://127.0.0.1:9")).await,
        Some(201)
    );
    let table = converged(&cluster, edge, 1).await;
    assert_eq!(table.len(), 1);
}

/// The only event stream the edge hears passes through a relay that drops, repeats and
/// reorders messages; gap repair over gRPC still leaves it with exactly the hubs' table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_converges_through_a_lossy_reordering_stream() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;

    let mut relay_out = PubSocket::new();
    let endpoint = relay_out.bind("tcp://127.0.0.1:0").await.expect("bind relay");
    let relay_port = endpoint.to_string().rsplit(':').next().expect("port").to_owned();
    let mut relay_in = SubSocket::new();
    relay_in.subscribe("").await.expect("subscribe");
    relay_in
        .connect(&format!("tcp://127.0.0.1:{}", cluster.hub(1).events_port))
        .await
        .expect("relay connects to the hub");
    let relayed = Arc::new(AtomicU64::new(0));
    let relay_count = relayed.clone();
    let relay = tokio::spawn(async move {
        let mut held: Option<ZmqMessage> = None;
        loop {
            let Ok(message) = relay_in.recv().await else { return };
            relay_count.fetch_add(1, Ordering::Relaxed);
            let roll: u8 = rand::rng().random_range(0..100);
            let mut out = Vec::new();
            match roll {
                0..25 => {}                                       // dropped
                25..40 => out.extend([message.clone(), message]), // repeated
                40..55 => held = Some(message),                   // sent after the next
                _ => out.push(message),
            }
            if roll >= 55 || (25..40).contains(&roll) {
                out.extend(held.take());
            }
            for message in out {
                let _ = relay_out.send(message).await;
            }
        }
    });
    let hub = cluster.hub(1);
    let entry = format!(
        "{{ api = \"127.0.0.1:{}\", grpc = \"127.0.0.1:{}\", events = \"127.0.0.1:{relay_port}\" }}",
        hub.api_port, hub.feed_port
    );
    let edge = cluster.add_edge_with_hubs(&[entry]);
    cluster.start_edge(edge);
    eventually("the edge to load a table", DEADLINE, || cluster.edge_routes(edge)).await;

    // Bounded workload: 300 route changes over 40 paths.
    let mut rng = rand::rng();
    let ops: Vec<(u32, bool)> = (0..300)
        .map(|_| (rng.random_range(0..40), rng.random_bool(0.7)))
        .collect();
    for (path, add) in ops {
        let path = format!("/user/u{path}");
        let target = format!("http://127.0.0.1:{}", 10_000 + rand::rng().random_range(0..1000));
        let status = cluster
            .set_route(1, &path, add.then_some(target.as_str()))
            .await
            .expect("hub answers");
        assert!(matches!(status, 201 | 204 | 404), "{status}");
    }
    let table = converged(&cluster, edge, 1).await;
    let (edge_seq, _) = cluster.edge_routes(edge).await.expect("edge");
    assert!(!table.is_empty());
    assert!(relayed.load(Ordering::Relaxed) > 0, "the relay carried the stream");
    let repairs = cluster
        .edge_metric(edge, "ganymede_edge_gap_repairs_total")
        .await
        .unwrap_or(0.0);
    assert!(
        repairs > 0.0,
        "a quarter of the events were dropped, so gaps were repaired"
    );
    println!("converged at route_seq {edge_seq} after {repairs} repairs");
    relay.abort();
}

/// Requests through an edge move the route's `last_activity` on the hubs (in batches),
/// as configurable-http-proxy's does: only responses below 300 count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_through_an_edge_reaches_the_hubs_routes_api() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;
    let alice = Upstream::start("alice").await;
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some(&alice.target())).await,
        Some(201)
    );
    converged(&cluster, edge, 1).await;
    let client = client();
    let routes_url = format!("http://127.0.0.1:{}/api/routes", cluster.hub(1).proxy_port);
    let last_activity = || async {
        let routes: serde_json::Value = client
            .get(&routes_url)
            .header(
                "authorization",
                format!("token {}", ganymede_testkit::process::PROCESS_PROXY_TOKEN),
            )
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        routes["/user/alice"]["last_activity"].as_str().map(str::to_owned)
    };
    let added = last_activity().await.expect("last_activity when added");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        served_by(&client, &cluster.edge_url(edge, "/user/alice/api/status"))
            .await
            .as_deref(),
        Some("alice")
    );
    let used = eventually("the route's activity to reach the hub", DEADLINE, || async {
        let now = last_activity().await?;
        (now > added).then_some(now)
    })
    .await;
    assert!(used > added, "{used} > {added}");
}

/// The edge's own answers: 503 for a dead server, 504 for a slow one (HTML or JSON by
/// `Accept`), 431 for oversized headers, h2c, and a connection that never finishes its
/// headers (slowloris) or sits idle is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_limits_and_timeouts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    append_config(
        &cluster.edges[edge].config,
        "header_read_timeout = \"1s\"\nupstream_response_timeout = \"1s\"\nmax_header_bytes = 8192\n",
    );
    cluster.start_edge(edge);
    let slow = Upstream::start("slow").await;
    let dead = format!("http://127.0.0.1:{}", ganymede_testkit::process::free_port());
    assert_eq!(cluster.set_route(1, "/user/dead", Some(&dead)).await, Some(201));
    assert_eq!(
        cluster.set_route(1, "/user/slow", Some(&slow.target())).await,
        Some(201)
    );
    converged(&cluster, edge, 1).await;
    let client = client();

    let html = client
        .get(cluster.edge_url(edge, "/user/dead/lab"))
        .send()
        .await
        .expect("dead");
    assert_eq!(html.status(), 503);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(html.text().await.expect("body").contains("appears to be down"));
    let json = client
        .get(cluster.edge_url(edge, "/user/dead/api/status"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("dead json");
    assert_eq!(json.status(), 503);
    let body: serde_json::Value = json.json().await.expect("json");
    assert_eq!(body["status"], 503);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let late = client
        .get(cluster.edge_url(edge, "/user/slow/slow/3000"))
        .send()
        .await
        .expect("slow");
    assert_eq!(late.status(), 504);
    let quick = client
        .get(cluster.edge_url(edge, "/user/slow/slow/10"))
        .send()
        .await
        .expect("quick");
    assert_eq!(quick.status(), 200);

    let huge = client
        .get(cluster.edge_url(edge, "/user/slow/x"))
        .header("x-big", "a".repeat(16 * 1024))
        .send()
        .await
        .expect("big headers get an answer");
    assert_eq!(huge.status(), 431);

    // HTTP/2 with prior knowledge (h2c) is proxied too.
    let h2 = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--http2-prior-knowledge",
        ])
        .arg(cluster.edge_url(edge, "/user/slow/slow/1"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "2 200");

    // Slowloris: half a request head, then nothing; the edge hangs up.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", cluster.edges[edge].port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /user/slow/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the edge kept a stalled connection open");

    // An idle keep-alive connection is closed after the same timeout.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", cluster.edges[edge].port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /user/slow/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the edge kept an idle connection open");
    let answer = String::from_utf8_lossy(&buffer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Host routing (per-user subdomains, as with JupyterHub's `subdomain_host`): routes are
/// keyed `/<host>/<path>` like configurable-http-proxy's, and `/` stays the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routing_sends_each_subdomain_to_its_server() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    append_config(&cluster.edges[edge].config, "host_routing = true\n");
    cluster.start_edge(edge);
    let alice = Upstream::start("alice").await;
    let hub = Upstream::start("default").await;
    assert_eq!(
        cluster.set_route(1, "/alice.hub.test/", Some(&alice.target())).await,
        Some(201)
    );
    assert_eq!(cluster.set_route(1, "/", Some(&hub.target())).await, Some(201));
    converged(&cluster, edge, 1).await;
    let client = client();
    let as_host = |host: &str, path: &str| {
        client
            .get(cluster.edge_url(edge, path))
            .header("host", host.to_owned())
            .send()
    };
    let cases = [
        ("alice.hub.test:8000", "/lab", "alice"),
        ("alice.hub.test", "/api/kernels", "alice"),
        ("bob.hub.test", "/lab", "default"),
        ("hub.test", "/alice.hub.test/lab", "default"),
    ];
    for (host, path, expected) in cases {
        let response = as_host(host, path).await.expect("request");
        let served = response
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(served.as_deref(), Some(expected), "{host}{path}");
    }
}
