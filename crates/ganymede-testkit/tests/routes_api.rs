//! configurable-http-proxy's routes API on every hub replica, replicated through Raft.

use ganymede_testkit::{TestCluster, eventually};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_posted_to_one_replica_are_served_by_all() {
    let cluster = TestCluster::start(3).await;

    // --- an upsert through hub 1: 201, empty body; the key is normalized like CHP's
    let (status, body) = cluster
        .hub(1)
        .proxy_api
        .post(
            "/api/routes/user/alice/",
            json!({"target": "http://127.0.0.1:9001", "user": "alice", "jupyterhub": true}),
        )
        .await
        .expect("post");
    assert_eq!((status, body), (201, serde_json::Value::Null));
    for node in 1..=3 {
        let (status, routes) = cluster.hub(node).proxy_api.get("/api/routes").await.expect("get");
        assert_eq!(status, 200);
        let route = &routes["/user/alice"];
        assert_eq!(route["target"], "http://127.0.0.1:9001", "hub {node}: {routes}");
        assert_eq!(route["user"], "alice");
        assert_eq!(route["jupyterhub"], true);
        assert!(
            route["last_activity"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{route}"
        );
    }
    // The route's creation is on the audit record as the proxy API token holder's.
    let (status, record) = cluster
        .hub(2)
        .api
        .get("/hub/api/ganymede/events?since=0&limit=1000")
        .await
        .expect("events");
    assert_eq!(status, 200, "{record}");
    assert!(
        record["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|event| event["action"] == "route.add"
                && event["target"] == "/user/alice"
                && event["actor"] == "proxy_api"),
        "{record}"
    );
    let (status, route) = cluster
        .hub(2)
        .proxy_api
        .get("/api/routes/user/alice")
        .await
        .expect("get one");
    assert_eq!(status, 200);
    assert_eq!(route["target"], "http://127.0.0.1:9001");

    // --- the default route, percent-decoding, and an upsert that replaces the target
    for (node, path, target) in [
        (2, "/api/routes", "http://127.0.0.1:8081"),
        (3, "/api/routes/user/u%20sp", "http://127.0.0.1:9002"),
        (3, "/api/routes/user/alice", "http://127.0.0.1:9003"),
    ] {
        let (status, _) = cluster
            .hub(node)
            .proxy_api
            .post(path, json!({"target": target}))
            .await
            .expect("post");
        assert_eq!(status, 201, "{path}");
    }
    let (_, routes) = cluster.hub(1).proxy_api.get("/api/routes").await.expect("get");
    let mut keys: Vec<&str> = routes.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["/", "/user/alice", "/user/u sp"]);
    assert_eq!(routes["/user/alice"]["target"], "http://127.0.0.1:9003");

    // --- inactive_since: routes last active before the given time
    let later = "2999-01-01T00:00:00.000Z";
    let (_, old) = cluster
        .hub(2)
        .proxy_api
        .get(&format!("/api/routes?inactive_since={later}"))
        .await
        .expect("get");
    assert_eq!(old.as_object().map(|o| o.len()), Some(3));
    let (_, none) = cluster
        .hub(2)
        .proxy_api
        .get("/api/routes?inactiveSince=2000-01-01T00:00:00Z")
        .await
        .expect("get");
    assert_eq!(none, json!({}));
    let (status, _) = cluster
        .hub(2)
        .proxy_api
        .get("/api/routes?inactive_since=yesterday")
        .await
        .expect("get");
    assert_eq!(status, 400);

    // --- delete: 204, then gone everywhere; a second delete is 404
    assert_eq!(
        cluster
            .hub(3)
            .proxy_api
            .delete("/api/routes/user/alice/")
            .await
            .expect("delete")
            .0,
        204
    );
    assert_eq!(
        cluster
            .hub(1)
            .proxy_api
            .delete("/api/routes/user/alice")
            .await
            .expect("delete")
            .0,
        404
    );
    for node in 1..=3 {
        let (status, _) = cluster
            .hub(node)
            .proxy_api
            .get("/api/routes/user/alice")
            .await
            .expect("get");
        assert_eq!(status, 404, "hub {node}");
    }

    // --- bad input and bad credentials
    let api = &cluster.hub(1).proxy_api;
    assert_eq!(
        api.post("/api/routes/x", json!({"nottarget": 1}))
            .await
            .expect("post")
            .0,
        400
    );
    assert_eq!(
        api.post("/api/routes/x", json!({"target": 5})).await.expect("post").0,
        400
    );
    assert_eq!(
        api.raw(reqwest::Method::POST, "/api/routes/x", b"{oops".to_vec())
            .await
            .expect("raw")
            .0,
        400
    );
    assert_eq!(
        api.post("/api/routes/x", json!({"target": "ftp://nope"}))
            .await
            .expect("post")
            .0,
        400
    );
    assert_eq!(
        api.request(reqwest::Method::PUT, "/api/routes/x", None)
            .await
            .expect("put")
            .0,
        405
    );
    assert_eq!(api.get("/api/other").await.expect("get").0, 404);
    for token in [None, Some("wrong")] {
        let (status, body) = api.with_token(token).get("/api/routes").await.expect("get");
        assert_eq!((status, body), (403, serde_json::Value::Null));
    }

    // --- route events are numbered contiguously on every replica
    let route_seqs = eventually(
        "every replica applied the route events",
        Duration::from_secs(10),
        || async {
            let seqs: Vec<u64> = cluster
                .running()
                .map(|hub| hub.raft.read_local(|s| s.route_seq))
                .collect();
            seqs.windows(2).all(|w| w[0] == w[1]).then_some(seqs)
        },
    )
    .await;
    assert_eq!(
        route_seqs[0], 5,
        "add, add default, add u sp, replace alice, remove alice"
    );
}
