//! JupyterHub's REST API on a real 3-replica cluster (in one process, RocksDB on disk):
//! the scope matrix (403 without a scope, 404 with it held only elsewhere), tokens,
//! servers and named servers, groups, activity and pagination. No spawner runs here:
//! where a test needs one, it reports through the replica's Raft handle as a spawner
//! would.

use std::time::Duration;

use ganymede_model::Command;
use ganymede_model::rbac::{Role, Roles};
use ganymede_testkit::{Api, TestCluster, Timings, eventually, test_settings};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

async fn ok(api: &Api, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = api.request(method.clone(), path, body).await.expect("request");
    assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
    body
}

/// A token for `user` holding `scopes`, made by the admin service.
async fn token_for(api: &Api, user: &str, scopes: &[&str]) -> String {
    let body = ok(
        api,
        Method::POST,
        &format!("/hub/api/users/{user}/tokens"),
        Some(json!({ "scopes": scopes, "note": "test" })),
    )
    .await;
    body["token"].as_str().expect("token in creation response").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_scope_matrix_403_without_the_scope_404_elsewhere() {
    let mut settings = test_settings();
    settings.roles = Roles::with_custom(vec![Role {
        name: "user-manager".into(),
        scopes: vec!["admin:users".into()],
        users: vec!["mgr".into()],
        ..Role::default()
    }])
    .expect("valid role");
    let cluster = TestCluster::start_with_settings(3, Timings::default(), settings).await;
    let admin = cluster.hub(1).api.clone();
    ok(
        &admin,
        Method::POST,
        "/hub/api/users",
        Some(json!({"usernames": ["alice", "bob", "carol", "mgr"]})),
    )
    .await;
    ok(
        &admin,
        Method::POST,
        "/hub/api/users/root",
        Some(json!({"admin": true})),
    )
    .await;
    ok(
        &admin,
        Method::POST,
        "/hub/api/groups/students",
        Some(json!({"users": ["alice"]})),
    )
    .await;

    // (method, path, body, the scope that grants it, the same scope filtered elsewhere
    // or None where JupyterHub takes no filter, an unrelated scope)
    type Row = (Method, &'static str, Option<Value>, &'static str, Option<&'static str>);
    let rows: Vec<Row> = vec![
        (
            Method::GET,
            "/hub/api/users/alice",
            None,
            "read:users",
            Some("read:users!user=bob"),
        ),
        (
            Method::GET,
            "/hub/api/users/alice/server",
            None,
            "read:servers",
            Some("read:servers!server=alice/gpu"),
        ),
        (
            Method::POST,
            "/hub/api/users/alice/server",
            None,
            "start:servers",
            Some("start:servers!user=bob"),
        ),
        (
            Method::GET,
            "/hub/api/users/alice/tokens",
            None,
            "read:tokens",
            Some("read:tokens!group=nobody"),
        ),
        (
            Method::POST,
            "/hub/api/users/alice/activity",
            Some(json!({"last_activity": "2026-01-01T00:00:00.000000Z"})),
            "users:activity",
            Some("users:activity!user=bob"),
        ),
        (
            Method::GET,
            "/hub/api/groups/students",
            None,
            "read:groups",
            Some("read:groups!group=staff"),
        ),
        (
            Method::POST,
            "/hub/api/groups/students/users",
            Some(json!({"users": ["bob"]})),
            "groups",
            Some("groups!group=staff"),
        ),
        (
            Method::PATCH,
            "/hub/api/users/alice",
            Some(json!({"admin": false})),
            "admin:users",
            Some("admin:users!user=bob"),
        ),
        (
            Method::DELETE,
            "/hub/api/users/alice/server",
            None,
            "delete:servers",
            Some("delete:servers!user=bob"),
        ),
        (
            Method::DELETE,
            "/hub/api/users/carol",
            None,
            "delete:users",
            Some("delete:users!user=bob"),
        ),
        (Method::GET, "/hub/api/users", None, "list:users", None),
        (Method::GET, "/hub/api/groups", None, "list:groups", None),
        (Method::GET, "/hub/api/services", None, "list:services", None),
        (Method::GET, "/hub/api/info", None, "read:hub", None),
        (Method::GET, "/hub/api/proxy", None, "proxy", None),
    ];
    for (method, path, body, scope, filtered) in rows {
        // Each through another replica: tokens issued on one are honoured on all.
        let unrelated = if scope == "read:hub" {
            "read:groups:name"
        } else {
            "read:hub"
        };
        let token = token_for(&admin, "root", &[unrelated]).await;
        let api = cluster.hub(2).api.with_token(Some(&token));
        let (status, reply) = api.request(method.clone(), path, body.clone()).await.expect("request");
        if method == Method::GET && path == "/hub/api/users/alice" {
            // Every token may read its owner's name (the identify scopes), so reading
            // another user is "held elsewhere": 404, as in JupyterHub.
            assert_eq!(status, 404, "{method} {path} with only {unrelated}: {reply}");
        } else {
            assert_eq!(status, 403, "{method} {path} with only {unrelated}: {reply}");
            assert!(
                reply["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("requires any of") && m.contains(scope)),
                "{method} {path}: {reply}"
            );
        }
        if let Some(filtered) = filtered {
            let token = token_for(&admin, "root", &[filtered]).await;
            let api = cluster.hub(3).api.with_token(Some(&token));
            let (status, reply) = api.request(method.clone(), path, body.clone()).await.expect("request");
            assert_eq!(status, 404, "{method} {path} with {filtered}: {reply}");
        }
        let token = token_for(&admin, "root", &[scope]).await;
        let api = cluster.hub(3).api.with_token(Some(&token));
        let (status, reply) = api.request(method.clone(), path, body.clone()).await.expect("request");
        assert!(
            (200..300).contains(&status),
            "{method} {path} with {scope}: {status} {reply}"
        );
    }

    // --- a list is filtered by the scope's filter, not refused
    let token = token_for(&admin, "root", &["list:users!group=students"]).await;
    let listed = ok(
        &cluster.hub(1).api.with_token(Some(&token)),
        Method::GET,
        "/hub/api/users",
        None,
    )
    .await;
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, vec!["alice", "bob"], "students are alice and (added above) bob");

    // --- user A never reads or acts on user B with the default role
    let alice = token_for(&admin, "alice", &["inherit"]).await;
    let alice = cluster.hub(2).api.with_token(Some(&alice));
    ok(&alice, Method::GET, "/hub/api/users/alice", None).await;
    for (method, path) in [
        (Method::GET, "/hub/api/users/bob"),
        (Method::GET, "/hub/api/users/bob/server"),
        (Method::POST, "/hub/api/users/bob/server"),
        (Method::DELETE, "/hub/api/users/bob/server"),
        (Method::GET, "/hub/api/users/bob/tokens"),
        (Method::POST, "/hub/api/users/bob/tokens"),
        (Method::POST, "/hub/api/users/bob/activity"),
    ] {
        let (status, reply) = alice
            .request(method.clone(), path, Some(json!({})))
            .await
            .expect("request");
        assert_eq!(status, 404, "alice: {method} {path}: {reply}");
    }
    for (method, path) in [
        (Method::GET, "/hub/api/users"),
        (Method::DELETE, "/hub/api/users/bob"),
        (Method::GET, "/hub/api/info"),
        (Method::GET, "/hub/api/proxy"),
    ] {
        let (status, reply) = alice.request(method.clone(), path, None).await.expect("request");
        assert_eq!(status, 403, "alice: {method} {path}: {reply}");
    }
    // --- what alice sees of herself: JupyterHub's model keys, her own scopes
    let me = ok(&alice, Method::GET, "/hub/api/user", None).await;
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str()),
        (Some("user"), Some("alice"))
    );
    assert_eq!(me["groups"], json!(["students"]));
    let scopes: Vec<&str> = me["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        scopes.contains(&"read:users!user=alice") && scopes.contains(&"access:servers!user=alice"),
        "{scopes:?}"
    );
    assert!(scopes.iter().all(|s| s.ends_with("!user=alice")), "{scopes:?}");
    assert!(me["token_id"].as_str().is_some_and(|id| id.starts_with('a')));

    // --- admin:users alone (a custom role) cannot make anyone admin (CVE-2024-41942),
    // nor touch an admin
    let user_admin = token_for(&admin, "mgr", &["inherit"]).await;
    let user_admin = cluster.hub(1).api.with_token(Some(&user_admin));
    let (status, _) = user_admin
        .patch("/hub/api/users/alice", json!({"admin": true}))
        .await
        .expect("patch");
    assert_eq!(status, 403);
    let (status, _) = user_admin
        .patch("/hub/api/users/root", json!({"name": "root2"}))
        .await
        .expect("patch");
    assert_eq!(status, 403);
    let (status, _) = user_admin
        .post("/hub/api/users", json!({"usernames": ["dave"], "admin": true}))
        .await
        .expect("post");
    assert_eq!(status, 403);
    let (status, _) = user_admin
        .patch("/hub/api/users/mgr", json!({"admin": true}))
        .await
        .expect("patch");
    assert_eq!(status, 403, "not even itself");
    // What the role does allow works.
    let (status, _) = user_admin
        .post("/hub/api/users", json!({"usernames": ["dave"]}))
        .await
        .expect("post");
    assert_eq!(status, 201);
    // ...but a token whose owner is an admin can.
    let root = token_for(&admin, "root", &["inherit"]).await;
    let root = cluster.hub(1).api.with_token(Some(&root));
    let (status, body) = root
        .patch("/hub/api/users/alice", json!({"admin": true}))
        .await
        .expect("patch");
    assert_eq!((status, body["admin"].as_bool()), (200, Some(true)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_tokens_never_exceed_their_requester_and_revocation_is_cluster_wide() {
    let cluster = TestCluster::start(3).await;
    let admin = cluster.hub(1).api.clone();
    ok(
        &admin,
        Method::POST,
        "/hub/api/users",
        Some(json!({"usernames": ["alice", "bob"]})),
    )
    .await;
    let alice = token_for(&admin, "alice", &["inherit"]).await;
    let alice = cluster.hub(1).api.with_token(Some(&alice));

    // --- alice makes a narrower token for herself; it works on another replica at once
    let (status, created) = alice
        .post(
            "/hub/api/users/alice/tokens",
            json!({"scopes": ["read:users!user"], "note": "narrow", "expires_in": 3600}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().expect("token").to_owned();
    assert_eq!(secret.len(), 32);
    assert_eq!(created["kind"], "api_token");
    assert_eq!(created["note"], "narrow");
    assert!(created["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let narrow = cluster.hub(3).api.with_token(Some(&secret));
    ok(&narrow, Method::GET, "/hub/api/users/alice", None).await;
    let (status, _) = narrow
        .post("/hub/api/users/alice/server", json!({}))
        .await
        .expect("start");
    assert_eq!(status, 403, "the narrow token cannot start servers");

    // --- more than she holds, unknown scopes, both scopes and roles: refused
    for (body, expected) in [
        (json!({"scopes": ["admin:users"]}), 403),
        (json!({"scopes": ["read:users"]}), 403),
        (json!({"scopes": ["all"]}), 400),
        (json!({"scopes": ["read:nothing"]}), 400),
        (json!({"scopes": ["read:users"], "roles": ["user"]}), 400),
        (json!({"roles": ["no-such-role"]}), 400),
        (json!({"expires_in": -5}), 400),
        (json!({"expires_in": "soon"}), 400),
    ] {
        let (status, reply) = alice
            .post("/hub/api/users/alice/tokens", body.clone())
            .await
            .expect("create");
        assert_eq!(status, expected, "{body}: {reply}");
        assert_eq!(reply["status"], expected, "JupyterHub's error shape: {reply}");
    }
    // A token of the narrow token cannot widen it either.
    let (status, _) = narrow
        .post("/hub/api/users/alice/tokens", json!({}))
        .await
        .expect("create");
    assert_eq!(status, 403, "inherit from a narrow token is more than it holds");

    // --- list, get, revoke through another replica; the token stops working everywhere
    let listed = ok(&alice, Method::GET, "/hub/api/users/alice/tokens", None).await;
    let tokens = listed["api_tokens"].as_array().expect("api_tokens");
    assert_eq!(tokens.len(), 2, "{listed}");
    assert!(
        tokens.iter().all(|t| t.get("token").is_none()),
        "never the secret again"
    );
    let id = created["id"].as_str().expect("id");
    let one = ok(&alice, Method::GET, &format!("/hub/api/users/alice/tokens/{id}"), None).await;
    assert_eq!(one["note"], "narrow");
    let (status, _) = alice.get("/hub/api/users/alice/tokens/a999").await.expect("get");
    assert_eq!(status, 404);
    let (status, _) = cluster
        .hub(2)
        .api
        .delete(&format!("/hub/api/users/bob/tokens/{id}"))
        .await
        .expect("delete");
    assert_eq!(status, 404, "alice's token is not bob's");
    let (status, _) = cluster
        .hub(2)
        .api
        .with_token(alice.token_value())
        .delete(&format!("/hub/api/users/alice/tokens/{id}"))
        .await
        .expect("delete");
    assert_eq!(status, 204);
    // The replica that took the revocation refuses the token at once; the others as
    // soon as they apply it (one heartbeat later: authentication reads local state).
    let (status, reply) = cluster
        .hub(2)
        .api
        .with_token(Some(&secret))
        .get("/hub/api/user")
        .await
        .expect("get");
    assert_eq!(
        (status, reply["message"].as_str()),
        (403, Some("Missing or invalid credentials."))
    );
    for node in [1, 3] {
        let api = cluster.hub(node).api.with_token(Some(&secret));
        eventually(
            &format!("replica {node} refuses the revoked token"),
            Duration::from_secs(2),
            || async { (api.get("/hub/api/user").await.ok()?.0 == 403).then_some(()) },
        )
        .await;
    }

    // --- an expiring token expires
    let (status, short) = alice
        .post("/hub/api/users/alice/tokens", json!({"expires_in": 1}))
        .await
        .expect("create");
    assert_eq!(status, 201);
    let short = cluster.hub(2).api.with_token(short["token"].as_str());
    ok(&short, Method::GET, "/hub/api/user", None).await;
    eventually("the 1 s token expires", PATIENCE, || async {
        (short.get("/hub/api/user").await.ok()?.0 == 403).then_some(())
    })
    .await;

    // --- admins may mint tokens for others; the note says who
    let (status, minted) = admin
        .post("/hub/api/users/bob/tokens", json!({}))
        .await
        .expect("create");
    assert_eq!(status, 201);
    assert_eq!(minted["note"], "Requested via api by service admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_servers_named_servers_progress_and_cluster_wide_limits() {
    let mut settings = test_settings();
    settings.spawn_limits.concurrent_spawns = Some(2);
    settings.spawn_limits.named_servers_per_user = Some(2);
    let cluster = TestCluster::start_with_settings(3, Timings::default(), settings).await;
    let admin = cluster.hub(1).api.clone();
    ok(
        &admin,
        Method::POST,
        "/hub/api/users",
        Some(json!({"usernames": ["alice", "bob", "carol"]})),
    )
    .await;

    // --- create a named server without starting it; names are checked
    let (status, gpu) = admin
        .request(
            Method::PUT,
            "/hub/api/users/alice/servers/gpu",
            Some(json!({"display_name": "GPU"})),
        )
        .await
        .expect("put");
    assert_eq!(status, 201, "{gpu}");
    assert_eq!(
        (gpu["name"].as_str(), gpu["display_name"].as_str()),
        (Some("gpu"), Some("GPU"))
    );
    assert_eq!(
        (gpu["ready"].as_bool(), gpu["stopped"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(gpu["url"], "/user/alice/gpu/");
    let (status, _) = admin
        .request(Method::PUT, "/hub/api/users/alice/servers/gpu", None)
        .await
        .expect("put");
    assert_eq!(status, 409);
    let (status, reply) = admin
        .request(Method::PUT, "/hub/api/users/alice/servers/GPU!", None)
        .await
        .expect("put");
    assert_eq!(
        (status, reply["message"].as_str()),
        (400, Some("Invalid server_name: 'GPU!'"))
    );
    // --- rename while stopped
    let renamed = ok(
        &admin,
        Method::PATCH,
        "/hub/api/users/alice/servers/gpu",
        Some(json!({"name": "tpu"})),
    )
    .await;
    assert_eq!(
        (renamed["name"].as_str(), renamed["display_name"].as_str()),
        (Some("tpu"), Some("GPU"))
    );
    let (status, _) = admin.get("/hub/api/users/alice/servers/gpu").await.expect("get");
    assert_eq!(status, 404);
    // --- the named-server limit
    ok(&admin, Method::PUT, "/hub/api/users/alice/servers/two", None).await;
    let (status, reply) = admin
        .request(Method::PUT, "/hub/api/users/alice/servers/three", None)
        .await
        .expect("put");
    assert_eq!(status, 400, "{reply}");

    // --- start: no spawner here, so it stays pending → 202, and again 202
    let (status, _) = cluster
        .hub(2)
        .api
        .post("/hub/api/users/alice/servers/tpu", json!({"size": "xl"}))
        .await
        .expect("start");
    assert_eq!(status, 202);
    let (status, _) = cluster
        .hub(3)
        .api
        .post("/hub/api/users/alice/servers/tpu", json!({}))
        .await
        .expect("start");
    assert_eq!(status, 202, "a spawn already pending is 202");
    let user = ok(&admin, Method::GET, "/hub/api/users/alice", None).await;
    assert_eq!(user["servers"]["tpu"]["pending"], "spawn", "{user}");
    assert_eq!(user["servers"]["tpu"]["user_options"], json!({"size": "xl"}));
    let (status, _) = admin
        .patch("/hub/api/users/alice/servers/tpu", json!({"name": "x1"}))
        .await
        .expect("patch");
    assert_eq!(status, 400, "no rename while active");

    // --- the progress stream: "Server requested", then ready when the spawner says so
    let progress = tokio::spawn({
        let base = cluster.hub(2).api.base.clone();
        async move {
            let response = reqwest::Client::new()
                .get(format!("{base}/hub/api/users/alice/servers/tpu/progress"))
                .header("authorization", format!("token {}", ganymede_testkit::ADMIN_TOKEN))
                .send()
                .await
                .expect("progress");
            let content_type = response.headers().get("content-type").cloned();
            (content_type, response.text().await.expect("stream ends"))
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spawn_id = cluster
        .hub(1)
        .raft
        .read(|state| state.users["alice"].servers["tpu"].spawn_id)
        .await
        .expect("read")
        .expect("a spawn id");
    cluster
        .hub(1)
        .raft
        .propose(Command::MarkServerReady {
            user: "alice".into(),
            server: "tpu".into(),
            spawn_id,
            url: "http://127.0.0.1:1".into(),
            at: chrono_now(),
        })
        .await
        .expect("ready");
    let (content_type, text) = tokio::time::timeout(PATIENCE, progress)
        .await
        .expect("in time")
        .expect("task");
    assert!(content_type.is_some_and(|c| c.to_str().unwrap_or_default().starts_with("text/event-stream")));
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).expect("json event"))
        .collect();
    assert_eq!(
        events.first().map(|e| e["message"].clone()),
        Some(json!("Server requested")),
        "{text}"
    );
    let last = events.last().expect("a final event");
    assert_eq!(
        (last["progress"].as_i64(), last["ready"].as_bool()),
        (Some(100), Some(true)),
        "{text}"
    );
    assert_eq!(last["url"], "/user/alice/tpu/");
    let (status, _) = admin
        .post("/hub/api/users/alice/servers/tpu", json!({}))
        .await
        .expect("start");
    assert_eq!(status, 400, "already running");
    let (status, _) = admin.get("/hub/api/users/bob/server/progress").await.expect("progress");
    assert_eq!(status, 404, "bob has no server");

    // --- the cluster-wide spawn limit counts pending spawns on every replica
    for (node, user) in [(1, "bob"), (2, "carol")] {
        let (status, _) = cluster
            .hub(node)
            .api
            .post(&format!("/hub/api/users/{user}/server"), json!({}))
            .await
            .expect("start");
        assert_eq!(status, 202, "{user}");
    }
    let (status, reply) = cluster
        .hub(3)
        .api
        .post("/hub/api/users/alice/server", json!({}))
        .await
        .expect("start");
    assert_eq!(status, 429, "two spawns pending cluster-wide: {reply}");
    let response = reqwest::Client::new()
        .post(format!("{}/hub/api/users/alice/server", cluster.hub(3).api.base))
        .header("authorization", format!("token {}", ganymede_testkit::ADMIN_TOKEN))
        .send()
        .await
        .expect("start");
    assert!(response.headers().get("retry-after").is_some());

    // --- stop with remove: 202 while stopping, removed when the spawner says stopped
    let (status, _) = admin
        .request(
            Method::DELETE,
            "/hub/api/users/alice/servers/tpu",
            Some(json!({"remove": true})),
        )
        .await
        .expect("stop");
    assert_eq!(status, 202);
    cluster
        .hub(2)
        .raft
        .propose(Command::MarkServerStopped {
            user: "alice".into(),
            server: "tpu".into(),
            spawn_id,
            at: chrono_now(),
        })
        .await
        .expect("stopped");
    eventually("tpu is removed", PATIENCE, || async {
        (admin.get("/hub/api/users/alice/servers/tpu").await.ok()?.0 == 404).then_some(())
    })
    .await;
    // A stopped named server is removed at once; stopping a stopped one is 204.
    let (status, _) = admin.delete("/hub/api/users/alice/servers/two").await.expect("stop");
    assert_eq!(status, 204);
    let (status, _) = admin
        .request(
            Method::DELETE,
            "/hub/api/users/alice/servers/two",
            Some(json!({"remove": true})),
        )
        .await
        .expect("remove");
    assert_eq!(status, 204);
    let (status, _) = admin.get("/hub/api/users/alice/servers/two").await.expect("get");
    assert_eq!(status, 404);
    let (status, _) = admin
        .request(
            Method::DELETE,
            "/hub/api/users/alice/server",
            Some(json!({"remove": true})),
        )
        .await
        .expect("remove default");
    assert_eq!(status, 400);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_groups_members_and_properties() {
    let cluster = TestCluster::start(3).await;
    let admin = cluster.hub(1).api.clone();
    ok(
        &admin,
        Method::POST,
        "/hub/api/users",
        Some(json!({"usernames": ["alice", "bob"]})),
    )
    .await;
    let (status, created) = admin
        .post(
            "/hub/api/groups",
            json!({"groups": ["students", "staff"], "users": ["alice"]}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{created}");
    assert_eq!(created.as_array().map(Vec::len), Some(2));
    let (status, _) = admin
        .post("/hub/api/groups", json!({"groups": ["staff"]}))
        .await
        .expect("again");
    assert_eq!(status, 409);
    let (status, reply) = admin
        .post("/hub/api/groups/x", json!({"users": ["nobody"]}))
        .await
        .expect("bad");
    assert_eq!(status, 400, "{reply}");
    let (status, _) = admin
        .post("/hub/api/groups", json!({"groups": []}))
        .await
        .expect("empty");
    assert_eq!(status, 400);

    let group = ok(
        &cluster.hub(2).api,
        Method::POST,
        "/hub/api/groups/students/users",
        Some(json!({"users": ["bob"]})),
    )
    .await;
    assert_eq!(group["users"], json!(["alice", "bob"]));
    let group = ok(
        &cluster.hub(3).api,
        Method::DELETE,
        "/hub/api/groups/students/users",
        Some(json!({"users": ["alice"]})),
    )
    .await;
    assert_eq!(group["users"], json!(["bob"]));
    let group = ok(
        &admin,
        Method::PUT,
        "/hub/api/groups/students/properties",
        Some(json!({"course": "ml"})),
    )
    .await;
    assert_eq!(group["properties"], json!({"course": "ml"}));
    let (status, _) = admin
        .request(Method::PUT, "/hub/api/groups/students/properties", Some(json!([1])))
        .await
        .expect("put");
    assert_eq!(status, 400);
    let bob = ok(&admin, Method::GET, "/hub/api/users/bob", None).await;
    assert_eq!(bob["groups"], json!(["students"]));
    let all = ok(&admin, Method::GET, "/hub/api/groups", None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));

    // --- a group role: members get the role's scopes (here through group filters)
    let (status, _) = admin.delete("/hub/api/groups/staff").await.expect("delete");
    assert_eq!(status, 204);
    let (status, _) = admin.get("/hub/api/groups/staff").await.expect("get");
    assert_eq!(status, 404);
    let (status, _) = admin.delete("/hub/api/groups/staff").await.expect("delete again");
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t45_services_made_and_removed_through_the_api() {
    let cluster = TestCluster::start(3).await;
    let admin = cluster.hub(1).api.clone();
    let token = "svc-token-0123456789";
    let (status, created) = admin
        .post("/hub/api/services/reporter", json!({"api_token": token}))
        .await
        .expect("create");
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["kind"].as_str(), created["name"].as_str()),
        (Some("service"), Some("reporter"))
    );
    let (status, _) = admin
        .post("/hub/api/services/reporter", json!({}))
        .await
        .expect("again");
    assert_eq!(status, 409);
    let (status, _) = admin
        .post("/hub/api/services/bad", json!({"api_token": "short"}))
        .await
        .expect("short");
    assert_eq!(status, 400);
    let (status, _) = admin
        .post("/hub/api/services/bad", json!({"bogus": "http://x"}))
        .await
        .expect("unknown");
    assert_eq!(status, 400, "fields JupyterHub does not have are refused, not ignored");
    let me = ok(
        &cluster.hub(2).api.with_token(Some(token)),
        Method::GET,
        "/hub/api/user",
        None,
    )
    .await;
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str()),
        (Some("service"), Some("reporter"))
    );
    assert_eq!(
        me["scopes"],
        json!([]),
        "no roles, no scopes (whoami still identifies it)"
    );
    let all = ok(&admin, Method::GET, "/hub/api/services", None).await;
    assert!(all.get("reporter").is_some() && all.get("admin").is_some(), "{all}");
    let (status, _) = admin.delete("/hub/api/services/admin").await.expect("delete admin");
    assert_eq!(status, 405, "the configured admin service stays");
    let (status, _) = cluster
        .hub(3)
        .api
        .delete("/hub/api/services/reporter")
        .await
        .expect("delete");
    assert_eq!(status, 200);
    let (status, _) = admin.get("/hub/api/services/reporter").await.expect("get");
    assert_eq!(status, 404);
    let (status, _) = cluster
        .hub(3)
        .api
        .with_token(Some(token))
        .get("/hub/api/user")
        .await
        .expect("whoami");
    assert_eq!(status, 403, "its token went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t50_activity_is_validated_coalesced_and_seen_on_every_replica() {
    let cluster = TestCluster::start(3).await;
    let admin = cluster.hub(1).api.clone();
    ok(&admin, Method::POST, "/hub/api/users/alice", None).await;
    ok(&admin, Method::PUT, "/hub/api/users/alice/servers/lab", None).await;
    let path = "/hub/api/users/alice/activity";
    for body in [
        json!([1, 2]),
        json!({}),
        json!({"last_activity": "not a time"}),
        json!({"last_activity": "2999-01-01T00:00:00Z"}),
        json!({"servers": {"nope": {"last_activity": "2026-01-01T00:00:00Z"}}}),
        json!({"servers": {"lab": {}}}),
        json!({"servers": 7}),
    ] {
        let (status, reply) = admin.post(path, body.clone()).await.expect("post");
        assert_eq!(status, 400, "{body}: {reply}");
    }
    let (status, _) = admin
        .post(
            "/hub/api/users/nobody/activity",
            json!({"last_activity": "2026-01-01T00:00:00Z"}),
        )
        .await
        .expect("post");
    assert_eq!(status, 404);

    let when = "2026-01-02T03:04:05.678000Z";
    let body = json!({"last_activity": when, "servers": {"lab": {"last_activity": when}}});
    // A single-user server resends the same time while idle: every one is accepted.
    for node in 1..=3 {
        let (status, reply) = cluster.hub(node).api.post(path, body.clone()).await.expect("post");
        assert_eq!(status, 200, "{reply}");
    }
    // An older report does not move it back.
    let older = json!({"last_activity": "2025-01-01T00:00:00Z"});
    ok(&cluster.hub(2).api, Method::POST, path, Some(older)).await;
    for node in 1..=3 {
        let api = cluster.hub(node).api.clone();
        eventually(&format!("replica {node} sees the activity"), PATIENCE, || async {
            let (_, user) = api.get("/hub/api/users/alice?include_stopped_servers").await.ok()?;
            (user["last_activity"] == when && user["servers"]["lab"]["last_activity"] == when).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t60_pagination_sorting_and_state_filters() {
    let cluster = TestCluster::start(3).await;
    let admin = cluster.hub(1).api.clone();
    let names = ["ann", "ben", "cat", "dan", "eve"];
    ok(
        &admin,
        Method::POST,
        "/hub/api/users",
        Some(json!({"usernames": names})),
    )
    .await;
    let paginated = [("accept", "application/json, application/jupyterhub-pagination+json")];
    let (status, page) = cluster
        .hub(2)
        .api
        .request_with_headers(Method::GET, "/hub/api/users?sort=-name&limit=2", None, &paginated)
        .await
        .expect("page");
    assert_eq!(status, 200, "{page}");
    let items: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(items, vec!["eve", "dan"]);
    assert_eq!(page["_pagination"]["total"], 5);
    let next = page["_pagination"]["next"]["url"]
        .as_str()
        .expect("next url")
        .to_owned();
    assert!(
        next.starts_with("http://127.0.0.1:") && next.contains("sort=-name") && next.contains("offset=2"),
        "{next}"
    );
    let (_, second) = cluster
        .hub(2)
        .api
        .request_with_headers(Method::GET, &next, None, &paginated)
        .await
        .expect("next");
    let items: Vec<&str> = second["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(items, vec!["cat", "ben"]);
    // Without the header: the bare list.
    let bare = ok(&admin, Method::GET, "/hub/api/users?name_filter=A&offset=-1", None).await;
    let items: Vec<&str> = bare
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(
        items,
        vec!["cat", "dan"],
        "name_filter is a case-insensitive substring; |offset| is used"
    );
    // State filters.
    ok(&admin, Method::POST, "/hub/api/users/ann/server", None).await;
    let active = ok(&admin, Method::GET, "/hub/api/users?state=active", None).await;
    assert_eq!(active.as_array().map(|a| a.len()), Some(1));
    let inactive = ok(&admin, Method::GET, "/hub/api/users?state=inactive", None).await;
    assert_eq!(inactive.as_array().map(|a| a.len()), Some(4));
    let ready = ok(&admin, Method::GET, "/hub/api/users?state=ready", None).await;
    assert_eq!(ready, json!([]));
    for bad in ["state=gone", "sort=age", "limit=x"] {
        let (status, reply) = admin.get(&format!("/hub/api/users?{bad}")).await.expect("get");
        assert_eq!(status, 400, "{bad}: {reply}");
    }
}

/// What schemathesis found against JupyterHub's behaviour: repeated query parameters
/// (the last wins), JSON bodies sent with another content type by token callers,
/// methods a path does not have (a JSON 405), `OPTIONS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t70_lenient_where_jupyterhub_is_lenient_and_json_errors_everywhere() {
    let cluster = TestCluster::start_with_settings(1, Timings::default(), test_settings()).await;
    let api = cluster.hub(1).api.clone();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", api.base);
    let token = format!("token {}", api.token_value().expect("admin token"));

    // curl -d: a form content type with a JSON body, as JupyterHub accepts from tokens.
    let created = client
        .post(url("/hub/api/users"))
        .header("authorization", &token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"usernames": ["u1", "u2", "u3"]}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 201);
    let empty = client
        .patch(url("/hub/api/users/u1"))
        .header("authorization", &token)
        .send()
        .await
        .expect("patch");
    assert_eq!(empty.status(), 400);
    let body: Value = empty.json().await.expect("json error");
    assert_eq!(body["status"], 400);

    let (status, users) = api
        .get("/hub/api/users?limit=1&limit=2&offset=5&offset=0")
        .await
        .expect("users");
    assert_eq!(status, 200);
    assert_eq!(
        users.as_array().map(Vec::len),
        Some(2),
        "the last limit and offset count: {users}"
    );

    let trace = client
        .request(Method::from_bytes(b"TRACE").expect("method"), url("/hub/api/users"))
        .header("authorization", &token)
        .send()
        .await
        .expect("trace");
    assert_eq!(trace.status(), 405);
    assert!(trace.headers().get("allow").is_some());
    let body: Value = trace.json().await.expect("a JSON 405");
    assert_eq!(body["status"], 405);
    let options = client
        .request(Method::OPTIONS, url("/hub/api/users"))
        .header("authorization", &token)
        .send()
        .await
        .expect("options");
    assert_eq!(options.status(), 200);
    assert!(options.headers().get("allow").is_some());

    let (status, info) = api.get("/hub/api/info").await.expect("info");
    assert_eq!(status, 200);
    assert!(
        info["python"].is_string() && info["sys_executable"].is_string(),
        "{info}"
    );
}

/// `/hub/metrics` needs `read:metrics` (admins have it; users do not), unless
/// `authenticate_prometheus` is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t80_metrics_need_read_metrics_unless_prometheus_is_trusted() {
    let cluster = TestCluster::start_with_settings(1, Timings::default(), test_settings()).await;
    let admin = cluster.hub(1).api.clone();
    let (status, _) = admin.post("/hub/api/users/alice", json!({})).await.expect("alice");
    assert_eq!(status, 201);
    let (_, token) = admin
        .post("/hub/api/users/alice/tokens", json!({}))
        .await
        .expect("token");
    let alice = admin.with_token(token["token"].as_str());
    for path in ["/hub/metrics", "/hub/api/metrics"] {
        assert_eq!(
            admin.with_token(None).get(path).await.expect("anonymous").0,
            403,
            "{path}"
        );
        assert_eq!(alice.get(path).await.expect("alice").0, 403, "{path}");
        let response = reqwest::Client::new()
            .get(format!("{}{path}", admin.base))
            .header(
                "authorization",
                format!("token {}", admin.token_value().expect("token")),
            )
            .send()
            .await
            .expect("admin");
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
    }
    drop(cluster);
    let mut open = test_settings();
    open.authenticate_prometheus = false;
    let cluster = TestCluster::start_with_settings(1, Timings::default(), open).await;
    let anonymous = cluster.hub(1).api.with_token(None);
    assert_eq!(anonymous.get("/hub/metrics").await.expect("open").0, 200);
}

/// A token asking to live for u64::MAX seconds overflowed the expiry computation (a
/// panic any user could cause); it is refused with JupyterHub's error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_issue_a_huge_expires_in_is_refused_not_a_panic() {
    let cluster = TestCluster::start(1).await;
    let api = &cluster.hub(1).api;
    assert_eq!(api.post("/hub/api/users/alice", json!({})).await.expect("user").0, 201);
    for huge in [json!(u64::MAX), json!(i64::MAX), json!(4_000_000_000u64)] {
        let (status, reply) = api
            .post("/hub/api/users/alice/tokens", json!({ "expires_in": huge }))
            .await
            .expect("the hub answers");
        assert_eq!((status, reply["status"].clone()), (400, json!(400)), "{huge}: {reply}");
    }
    let (status, reply) = api
        .post("/hub/api/users/alice/tokens", json!({ "expires_in": 3_000_000_000u64 }))
        .await
        .expect("the hub answers");
    assert_eq!(status, 201, "a century is allowed: {reply}");
}
