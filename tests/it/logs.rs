//! Logs an operator can search: `log_format = "json"` writes one JSON object per line,
//! and every line a request causes carries its id — the one the edge gave it on the
//! way to the hub, or the client's own — which the response returns.

use std::time::Duration;

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, ProcessCluster, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_from_the_edge_to_the_hub() {
    let mut cluster = ProcessCluster::new(1);
    let config = std::fs::read_to_string(&cluster.hubs[0].config).expect("config");
    std::fs::write(
        &cluster.hubs[0].config,
        config.replacen("log = \"info\"", "log = \"info\"\nlog_format = \"json\"", 1),
    )
    .expect("config");
    cluster.start_all();
    cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // A client's own id is kept and returned.
    let answer = http
        .get(cluster.url(1, "/hub/api/"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("version");
    assert_eq!(answer.headers()["x-request-id"], "client-chosen-42");

    // Through the edge, without one: the edge makes one, the hub logs under it, and the
    // client gets it back. (Shutdown is a request that logs a warning; it stops the hub.)
    eventually("the edge to reach the hub", Duration::from_secs(20), || async {
        let response = http.get(cluster.edge_url(edge, "/hub/api/")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let shutdown = http
        .post(cluster.edge_url(edge, "/hub/api/shutdown"))
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("shutdown");
    assert_eq!(shutdown.status(), 202);
    let id = shutdown.headers()["x-request-id"].to_str().expect("an id").to_owned();
    // The edge's format (`<8 hex>-<hex>`), not one the hub would make (16 hex digits).
    assert!(id.contains('-'), "{id} is not an edge-made id");

    // Read the log once the hub has exited, so every line is written.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.exited(1).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the hub did not exit after the shutdown request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&cluster.hubs[0].log).expect("hub log");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    let logged = lines
        .iter()
        .find(|line| line["fields"]["message"] == "shutdown requested through the API")
        .unwrap_or_else(|| panic!("no shutdown line in\n{log}"));
    assert_eq!(logged["level"], "WARN");
    assert_eq!(logged["span"]["name"], "request");
    assert_eq!(logged["span"]["id"], id.as_str(), "{logged}");
    assert_eq!(logged["span"]["path"], "/hub/api/shutdown", "{logged}");
}
