//! `/hub/metrics` on every replica of a real cluster: JupyterHub's metric names, labels
//! and buckets after a scripted scenario, the cluster-wide gauges on the leader only
//! (so that sums over replicas are right), and Ganymede's own Raft metrics.

use std::time::Duration;

use ganymede_testkit::process::metric_sum;
use reqwest::Method;
use serde_json::json;

use crate::spawning::{create_user, spawner_lines, start_server};
use crate::support::{ProcessCluster, eventually};

/// The pages of every hub, once each answers.
async fn pages(cluster: &ProcessCluster) -> Vec<(u64, String)> {
    let mut pages = Vec::new();
    for hub in &cluster.hubs {
        let page = eventually("a metrics page", Duration::from_secs(20), || {
            cluster.hub_metrics(hub.node_id)
        })
        .await;
        pages.push((hub.node_id, page));
    }
    pages
}

fn sum_over(pages: &[(u64, String)], name: &str, labels: &[(&str, &str)]) -> f64 {
    pages
        .iter()
        .filter_map(|(_, page)| metric_sum(page, name, labels))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_exports_jupyterhubs_metrics_and_the_leader_the_cluster_gauges() {
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&spawner_lines(""));
    cluster.start_all();
    cluster.leader().await;

    // Without a token: JupyterHub's `authenticate_prometheus` default.
    let anonymous = reqwest::get(cluster.url(1, "/hub/metrics")).await.expect("metrics");
    assert_eq!(anonymous.status(), 403);

    // Before anything happens, the status series exist at zero.
    let page = eventually("a metrics page", Duration::from_secs(20), || cluster.hub_metrics(1)).await;
    for (status, reason) in [
        ("success", ""),
        ("failure", "throttled"),
        ("failure", "too-many-users"),
        ("error", ""),
    ] {
        assert_eq!(
            metric_sum(
                &page,
                "jupyterhub_server_spawn_duration_seconds_count",
                &[("status", status), ("reason", reason)]
            ),
            Some(0.0),
            "{status}/{reason} in\n{page}"
        );
    }
    // JupyterHub's spawn buckets, not the default ones.
    assert!(
        page.contains("jupyterhub_server_spawn_duration_seconds_bucket{status=\"success\",reason=\"\",le=\"600\"}")
            || metric_sum(
                &page,
                "jupyterhub_server_spawn_duration_seconds_bucket",
                &[("status", "success"), ("le", "600")]
            )
            .is_some(),
        "{page}"
    );
    assert!(
        page.contains("# TYPE jupyterhub_request_duration_seconds histogram"),
        "{page}"
    );

    // The scenario: two users, both servers started (through different replicas), one stopped.
    // slowbob's server takes a second to listen: the spawn duration must include it.
    for name in ["alice", "slowbob"] {
        let token = create_user(&cluster, name).await;
        // A request with their own token makes them active, as in JupyterHub.
        let whoami = reqwest::Client::new()
            .get(cluster.url(1, "/hub/api/user"))
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .expect("whoami");
        assert_eq!(whoami.status(), 200);
    }
    for (node, name) in [(2, "alice"), (3, "slowbob")] {
        let (status, body) = start_server(&cluster, node, name).await.expect("start");
        assert!(status == 201 || status == 202, "{status} {body}");
    }
    eventually("both servers ready", Duration::from_secs(30), || async {
        let (_, users) = cluster.request(1, Method::GET, "/hub/api/users?state=ready").await?;
        (users.as_array()?.len() == 2).then_some(())
    })
    .await;
    let (status, _) = cluster
        .send(1, Method::DELETE, "/hub/api/users/slowbob/server", Some(json!({})))
        .await
        .expect("stop");
    assert!(status == 204 || status == 202, "{status}");

    // The cluster gauges are recounted every 10 s, by the leader alone.
    let (pages, leader) = eventually(
        "the leader's gauges to count the scenario",
        Duration::from_secs(40),
        || async {
            let pages = pages(&cluster).await;
            let leader = cluster.leader().await;
            let leader_page = &pages.iter().find(|(node, _)| *node == leader)?.1;
            let settled = metric_sum(leader_page, "jupyterhub_running_servers", &[]) == Some(1.0)
                && metric_sum(leader_page, "jupyterhub_total_users", &[]) == Some(2.0)
                && metric_sum(leader_page, "jupyterhub_active_users", &[("period", "24h")]) == Some(2.0)
                && sum_over(&pages, "jupyterhub_server_stop_seconds_count", &[("status", "success")]) == 1.0
                && sum_over(
                    &pages,
                    "jupyterhub_proxy_delete_duration_seconds_count",
                    &[("status", "success")],
                ) == 1.0
                && sum_over(
                    &pages,
                    "jupyterhub_server_spawn_duration_seconds_count",
                    &[("status", "success")],
                ) == 2.0;
            settled.then_some((pages, leader))
        },
    )
    .await;
    for (node, page) in &pages {
        if *node != leader {
            assert_eq!(
                metric_sum(page, "jupyterhub_running_servers", &[]),
                Some(0.0),
                "hub {node}"
            );
            assert_eq!(metric_sum(page, "jupyterhub_total_users", &[]), Some(0.0), "hub {node}");
        }
        // Each replica's own Raft view.
        let is_leader = metric_sum(page, "ganymede_raft_is_leader", &[]);
        assert_eq!(is_leader, Some(if *node == leader { 1.0 } else { 0.0 }), "hub {node}");
        assert_eq!(
            metric_sum(page, "ganymede_raft_leader", &[]),
            Some(leader as f64),
            "hub {node}"
        );
        assert!(
            metric_sum(page, "ganymede_raft_applied_index", &[]).unwrap_or(0.0) > 0.0,
            "hub {node}"
        );
        assert!(
            metric_sum(page, "ganymede_store_wal_sync_seconds_count", &[]).unwrap_or(0.0) > 0.0,
            "hub {node}"
        );
        assert!(
            metric_sum(page, "jupyterhub_event_loop_interval_seconds_count", &[]).unwrap_or(0.0) > 0.0,
            "hub {node}"
        );
    }
    // Sums over replicas are the cluster's figures.
    assert_eq!(sum_over(&pages, "jupyterhub_running_servers", &[]), 1.0);
    assert_eq!(
        sum_over(
            &pages,
            "jupyterhub_server_spawn_duration_seconds_count",
            &[("status", "success")]
        ),
        2.0
    );
    let spawn_seconds = sum_over(
        &pages,
        "jupyterhub_server_spawn_duration_seconds_sum",
        &[("status", "success")],
    );
    assert!(
        (1.0..30.0).contains(&spawn_seconds),
        "spawn durations sum to {spawn_seconds} s; slowbob's alone took over 1 s"
    );
    assert_eq!(
        sum_over(
            &pages,
            "jupyterhub_proxy_add_duration_seconds_count",
            &[("status", "success")]
        ),
        2.0
    );
    assert_eq!(
        sum_over(
            &pages,
            "jupyterhub_proxy_delete_duration_seconds_count",
            &[("status", "success")]
        ),
        1.0
    );
    // Requests are labelled with JupyterHub's handler classes, on the replica that took them.
    let page_of = |node: u64| &pages.iter().find(|(n, _)| *n == node).expect("page").1;
    assert_eq!(
        metric_sum(
            page_of(2),
            "jupyterhub_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("handler", "jupyterhub.apihandlers.users.UserServerAPIHandler"),
            ]
        ),
        Some(1.0),
        "{}",
        page_of(2)
    );
    assert!(
        metric_sum(
            page_of(1),
            "jupyterhub_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("handler", "jupyterhub.apihandlers.users.UserAPIHandler"),
                ("code", "201")
            ]
        )
        .is_some_and(|count| count >= 2.0),
        "{}",
        page_of(1)
    );
}

/// `ops/prometheus/…` in this checkout.
fn ops_prometheus(file: &str) -> std::path::PathBuf {
    ganymede_testkit::repo_root().join("ops/prometheus").join(file)
}

/// promtool accepts the shipped configuration and rules, and the rules' own unit
/// tests (each alert fires on trouble and stays quiet on a healthy cluster) pass.
#[test]
fn promtool_accepts_the_shipped_configuration_and_alert_rules() {
    for args in [
        vec!["check", "config", "--syntax-only"],
        vec!["check", "rules"],
        vec!["test", "rules"],
    ] {
        let file = match args[0..2] {
            ["check", "config"] => "prometheus.yml",
            ["check", "rules"] => "alerts.yml",
            _ => "alerts.test.yml",
        };
        let output = std::process::Command::new("promtool")
            .args(&args)
            .arg(ops_prometheus(file))
            .output()
            .expect("promtool (ops/setup.sh installs Debian's prometheus)");
        assert!(
            output.status.success(),
            "promtool {args:?} {file}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// One instant query against Prometheus' HTTP API: the result vector.
async fn query(http: &reqwest::Client, prometheus: &str, promql: &str) -> Option<Vec<serde_json::Value>> {
    let response = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    (body["status"] == "success").then_some(())?;
    body["data"]["result"].as_array().cloned()
}

/// The single value of an instant query, when it has exactly one series.
async fn scalar(http: &reqwest::Client, prometheus: &str, promql: &str) -> Option<f64> {
    let result = query(http, prometheus, promql).await?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_cluster_and_answers_the_dashboards_queries() {
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&spawner_lines(""));
    cluster.start_all();
    cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);

    // Prometheus scrapes every second; the hubs carry the labels Zero to JupyterHub's
    // service discovery gives the hub, so the dashboards' selectors match unchanged.
    let port = ganymede_testkit::process::free_port();
    let hub_targets: Vec<String> = cluster
        .hubs
        .iter()
        .map(|hub| format!("\"127.0.0.1:{}\"", hub.api_port))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules:?}\n\
         scrape_configs:\n\
         \x20 - job_name: ganymede-hub\n    metrics_path: /hub/metrics\n\
         \x20   authorization:\n      type: token\n      credentials: {token:?}\n\
         \x20   static_configs:\n      - targets: [{hubs}]\n        labels: {{app: jupyterhub, namespace: ganymede}}\n\
         \x20 - job_name: ganymede-edge\n    metrics_path: /metrics\n\
         \x20   static_configs:\n      - targets: [\"127.0.0.1:{edge_metrics}\"]\n",
        rules = ops_prometheus("alerts.yml").display().to_string(),
        token = crate::support::ADMIN_TOKEN,
        hubs = hub_targets.join(", "),
        edge_metrics = cluster.edges[edge].metrics_port,
    );
    let config_path = cluster.dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("config");
    let log = std::fs::File::create(cluster.dir.path().join("prometheus.log")).expect("log");
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            cluster.dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (ops/setup.sh installs Debian's prometheus)");
    let prometheus = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    eventually(
        "Prometheus to scrape all three hubs and the edge",
        Duration::from_secs(60),
        || async { (scalar(&http, &prometheus, "sum(up)").await? == 4.0).then_some(()) },
    )
    .await;

    // Traffic through the edge, for its panels (early: a rate needs two scrapes). Twice:
    // the edge's series exist from its first request on, and a rate over a series seen
    // only once the requests were made is zero (a latency quantile of NaN).
    for round in 1..=2 {
        for _ in 0..3 {
            let through_edge = http
                .get(cluster.edge_url(edge, "/hub/api/"))
                .send()
                .await
                .expect("through the edge");
            assert_eq!(through_edge.status(), 200);
        }
        eventually(
            "Prometheus to see the edge's requests",
            Duration::from_secs(20),
            || async {
                let promql = "sum(ganymede_edge_requests_total{job=\"ganymede-edge\"})";
                (scalar(&http, &prometheus, promql).await? >= f64::from(3 * round)).then_some(())
            },
        )
        .await;
    }
    // The scenario: alice and bob are active and start servers; bob stops his; a
    // server that exits at once fails to start.
    for name in ["alice", "bob"] {
        let token = create_user(&cluster, name).await;
        let whoami = http
            .get(cluster.url(1, "/hub/api/user"))
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .expect("whoami");
        assert_eq!(whoami.status(), 200);
    }
    create_user(&cluster, "exits").await;
    for (node, name) in [(1, "alice"), (2, "bob"), (3, "exits")] {
        start_server(&cluster, node, name).await.expect("start");
    }
    eventually("alice and bob ready", Duration::from_secs(30), || async {
        let (_, users) = cluster.request(1, Method::GET, "/hub/api/users?state=ready").await?;
        (users.as_array()?.len() == 2).then_some(())
    })
    .await;
    let (status, _) = cluster
        .send(2, Method::DELETE, "/hub/api/users/bob/server", Some(json!({})))
        .await
        .expect("stop");
    assert!(status == 204 || status == 202, "{status}");
    // Who was active, from the API: the expected value of the active-users panels.
    let active_per_api = || async {
        let (_, users) = cluster.request(1, Method::GET, "/hub/api/users").await?;
        let active = users
            .as_array()?
            .iter()
            .filter(|user| !user["last_activity"].is_null())
            .count();
        Some(active as f64)
    };
    // The panels' queries (jupyterhub/grafana-dashboards), with $hub = ganymede.
    let hub = "app=\"jupyterhub\", namespace=~\"ganymede\"";
    eventually(
        "the running-servers panel to show alice's server",
        Duration::from_secs(40),
        || async {
            let promql = format!("sum(jupyterhub_running_servers{{{hub}}})");
            (scalar(&http, &prometheus, &promql).await? == 1.0).then_some(())
        },
    )
    .await;
    eventually("the active-users panels", Duration::from_secs(40), || async {
        let active = active_per_api().await?;
        (active >= 2.0).then_some(())?;
        for period in ["24h", "7d", "30d"] {
            let promql = format!("max(jupyterhub_active_users{{period=\"{period}\", {hub}}})");
            (scalar(&http, &prometheus, &promql).await? == active).then_some(())?;
        }
        Some(())
    })
    .await;
    eventually("the spawn-duration quantile", Duration::from_secs(30), || async {
        let promql = format!(
            "histogram_quantile(0.99, sum by (le) (increase(jupyterhub_server_spawn_duration_seconds_bucket{{status=\"success\", {hub}}}[5m])))"
        );
        let quantile = scalar(&http, &prometheus, &promql).await?;
        // Both spawns took well under the 10 s bucket (test servers start in milliseconds).
        (quantile > 0.0 && quantile <= 10.0).then_some(())
    })
    .await;
    eventually("the start-failures panel to show the failed spawn", Duration::from_secs(30), || async {
        let promql = format!(
            "sum(increase(jupyterhub_server_spawn_duration_seconds_count{{status!=\"success\", {hub}}}[2m])) by (status)"
        );
        let result = query(&http, &prometheus, &promql).await?;
        let error = result.iter().find(|series| series["metric"]["status"] == "error")?;
        (error["value"][1].as_str()?.parse::<f64>().ok()? >= 1.0).then_some(())
    })
    .await;
    eventually("the response-codes panel", Duration::from_secs(30), || async {
        let promql = format!("sum(increase(jupyterhub_request_duration_seconds_count{{{hub}}}[2m])) by (code)");
        let result = query(&http, &prometheus, &promql).await?;
        result
            .iter()
            .any(|series| series["metric"]["code"] == "201")
            .then_some(())
    })
    .await;
    // Ganymede's own: one leader, the one the hubs name; the edge has every route change.
    assert_eq!(
        scalar(&http, &prometheus, "sum(ganymede_raft_is_leader)").await,
        Some(1.0)
    );
    eventually(
        "Prometheus to name the leader the hubs name",
        Duration::from_secs(30),
        || async {
            let leading = query(&http, &prometheus, "ganymede_raft_is_leader == 1").await?;
            let leader_port = cluster.hub(cluster.leader().await).api_port;
            let instance = leading.first()?["metric"]["instance"].as_str()?.to_owned();
            (instance == format!("127.0.0.1:{leader_port}")).then_some(())
        },
    )
    .await;
    // What GanymedeNoLeader checks: a replica leads and a majority acknowledged it lately.
    eventually(
        "a leader acknowledged by a majority",
        Duration::from_secs(30),
        || async {
            let promql = "max by (job) ((ganymede_raft_is_leader{job=\"ganymede-hub\"} == bool 1) \
                      * (ganymede_raft_quorum_ack_age_seconds{job=\"ganymede-hub\"} < bool 5))";
            (scalar(&http, &prometheus, promql).await? == 1.0).then_some(())
        },
    )
    .await;
    eventually("the edge to be level with the hubs' route changes", Duration::from_secs(30), || async {
        let promql = "scalar(max(ganymede_events_published_route_seq{job=\"ganymede-hub\"})) - ganymede_edge_route_seq{job=\"ganymede-edge\"}";
        (scalar(&http, &prometheus, promql).await? == 0.0).then_some(())
    })
    .await;
    // An edge subscribes to every hub: each of the three counts it once.
    eventually(
        "every hub to count the edge as a subscriber",
        Duration::from_secs(30),
        || async {
            let counts = query(&http, &prometheus, "ganymede_events_subscribers{job=\"ganymede-hub\"}").await?;
            let ones = counts
                .iter()
                .filter(|series| series["value"][1].as_str() == Some("1"))
                .count();
            (counts.len() == 3 && ones == 3).then_some(())
        },
    )
    .await;
    // Every query of Ganymede's own dashboard runs, and all but the one about what this
    // scenario did not do (build a snapshot) show data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ganymede_testkit::repo_root().join("ops/grafana/ganymede.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let may_be_empty = ["Snapshot size"];
    let mut empty = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let promql = target["expr"].as_str().expect("expr").replace("$__rate_interval", "1m");
            let result = query(&http, &prometheus, &promql)
                .await
                .unwrap_or_else(|| panic!("{}: {promql} does not run", panel["title"]));
            // A quantile of nothing is NaN: a series, but no data.
            let no_data = result
                .iter()
                .all(|series| series["value"][1].as_str().is_none_or(|value| value == "NaN"));
            if no_data {
                empty.push(panel["title"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    assert!(
        empty.iter().all(|title| may_be_empty.contains(&title.as_str())),
        "panels without data: {empty:?}"
    );

    // Every alert rule evaluates against the real series without error.
    let rules: serde_json::Value = http
        .get(format!("{prometheus}/api/v1/rules"))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules json");
    let evaluated: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(evaluated.len(), 6, "{rules}");
    for rule in evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}
