//! Spawning through real processes: hubs with the local spawner start the test
//! single-user server (which speaks jupyterhub-singleuser's hub protocol), the edges
//! route to it, and the records converge when the replica that runs a server dies.

use std::time::Duration;

use ganymede_testkit::process::{processes_with_home_under, test_singleuser_bin};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ProcessCluster, eventually};

const DEADLINE: Duration = Duration::from_secs(30);

/// A `[spawner]` section: the test server for most users; `silent` never listens,
/// `exits` dies at once, `elsewhere` serves the wrong prefix.
pub(crate) fn spawner_lines(extra: &str) -> String {
    let test_server = test_singleuser_bin();
    let script = format!(
        "case \"$JUPYTERHUB_USER\" in \
           silent) exec sleep 600;; \
           exits) echo 'ImportError: no module named jupyterlab' >&2; exit 3;; \
           elsewhere) GANYMEDE_TEST_PREFIX=/elsewhere/ exec {bin};; \
           slow*) GANYMEDE_TEST_LISTEN_DELAY=1 exec {bin};; \
           *) exec {bin};; \
         esac",
        bin = test_server.display()
    );
    format!(
        "cmd = [\"sh\", \"-c\", {script:?}]\npoll_interval = \"300ms\"\nstop_timeout = \"2s\"\nowner_timeout = \"3s\"\n\
         environment = {{ JUPYTERHUB_ACTIVITY_INTERVAL = \"1\" }}\n{extra}"
    )
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) async fn create_user(cluster: &ProcessCluster, name: &str) -> String {
    let (status, _) = cluster
        .send(1, Method::POST, &format!("/hub/api/users/{name}"), Some(json!({})))
        .await
        .expect("create user");
    assert_eq!(status, 201);
    let (status, token) = cluster
        .send(
            1,
            Method::POST,
            &format!("/hub/api/users/{name}/tokens"),
            Some(json!({})),
        )
        .await
        .expect("token");
    assert_eq!(status, 201);
    token["token"].as_str().expect("token").to_owned()
}

/// `POST /hub/api/users/<user>/server` through replica `node`: the status and body, or
/// `None` when the replica did not answer.
pub(crate) async fn start_server(cluster: &ProcessCluster, node: u64, user: &str) -> Option<(u16, Value)> {
    cluster
        .send(
            node,
            Method::POST,
            &format!("/hub/api/users/{user}/server"),
            Some(json!({})),
        )
        .await
}

async fn server_of(cluster: &ProcessCluster, node_id: u64, user: &str) -> Option<Value> {
    let (status, model) = cluster
        .request(
            node_id,
            Method::GET,
            &format!("/hub/api/users/{user}?include_stopped_servers=1"),
        )
        .await?;
    (status == 200).then(|| model["servers"][""].clone())
}

/// The server through an edge, as its user: the test server names who it served.
async fn through_edge(cluster: &ProcessCluster, edge: usize, user: &str, token: &str) -> Option<Value> {
    let response = client()
        .get(cluster.edge_url(edge, &format!("/user/{user}/api/whoami")))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_through_any_hub_reach_both_edges_and_converge_when_their_replica_dies() {
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&spawner_lines("http_timeout = \"60s\""));
    cluster.start_all();
    cluster.leader().await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    let alice = create_user(&cluster, "alice").await;
    create_user(&cluster, "silent").await;

    // Started through hub 2, which runs it: ready within slow_spawn_timeout → 201.
    let (status, body) = start_server(&cluster, 2, "alice").await.expect("start");
    assert_eq!(status, 201, "{body}");
    let server = server_of(&cluster, 1, "alice").await.expect("alice");
    assert_eq!(
        (server["ready"].as_bool(), server["url"].as_str()),
        (Some(true), Some("/user/alice/"))
    );
    for edge in 0..2 {
        let seen = eventually("alice's server through the edge", DEADLINE, || {
            through_edge(&cluster, edge, "alice", &alice)
        })
        .await;
        assert_eq!(seen["user"], "alice", "{seen}");
    }
    // The server reports activity with its own token (every second here).
    eventually("the server's activity to be recorded", DEADLINE, || async {
        let server = server_of(&cluster, 3, "alice").await?;
        let started = server["started"].as_str()?.to_owned();
        let last = server["last_activity"].as_str()?.to_owned();
        (last > started).then_some(())
    })
    .await;
    let progress = progress_events(&cluster, 1, "alice").await;
    assert_eq!(
        progress.last().map(|e| e["ready"].clone()),
        Some(json!(true)),
        "{progress:?}"
    );

    // A server that never answers stays pending (http_timeout is long here).
    let (status, _) = start_server(&cluster, 2, "silent").await.expect("start");
    assert_eq!(status, 202);
    let homes = cluster.data_dir(2);
    eventually("both servers' processes to run", DEADLINE, || async {
        (processes_with_home_under(&homes).len() >= 2).then_some(())
    })
    .await;

    // The replica that runs both dies: the records converge, routes leave the edges,
    // and no process is left behind.
    cluster.kill9(2);
    for user in ["alice", "silent"] {
        let server = eventually("the server to be marked stopped", Duration::from_secs(60), || async {
            let server = server_of(&cluster, 1, user).await?;
            (server["stopped"] == true || server.is_null()).then_some(server)
        })
        .await;
        assert!(server.get("pending").is_none_or(Value::is_null), "{server}");
    }
    for edge in 0..2 {
        eventually("alice's route to leave the edge", DEADLINE, || async {
            let (_, routes) = cluster.edge_routes(edge).await?;
            (!routes.contains_key("/user/alice")).then_some(())
        })
        .await;
    }
    eventually("no server process left", DEADLINE, || async {
        processes_with_home_under(&homes).is_empty().then_some(())
    })
    .await;

    // The user starts again, elsewhere.
    let (status, body) = start_server(&cluster, 3, "alice").await.expect("start again");
    assert_eq!(status, 201, "{body}");
    let seen = eventually("alice's new server through edge 1", DEADLINE, || {
        through_edge(&cluster, 1, "alice", &alice)
    })
    .await;
    assert_eq!(seen["user"], "alice");

    // Hub 2 comes back: it starts nothing and stops nothing that is not its own.
    cluster.start(2);
    cluster.leader().await;
    let (status, _) = cluster
        .send(2, Method::DELETE, "/hub/api/users/alice/server", None)
        .await
        .expect("stop");
    assert!(matches!(status, 202 | 204), "{status}");
    let homes3 = cluster.data_dir(3);
    eventually("the stopped server's process to be gone", DEADLINE, || async {
        processes_with_home_under(&homes3).is_empty().then_some(())
    })
    .await;
    for edge in 0..2 {
        eventually("alice's route to leave the edge", DEADLINE, || async {
            let (_, routes) = cluster.edge_routes(edge).await?;
            (!routes.contains_key("/user/alice")).then_some(())
        })
        .await;
    }
}

/// The progress stream of `user`'s default server, read to its end.
async fn progress_events(cluster: &ProcessCluster, node_id: u64, user: &str) -> Vec<Value> {
    let response = client()
        .get(cluster.url(node_id, &format!("/hub/api/users/{user}/server/progress")))
        .header("authorization", format!("token {}", crate::support::ADMIN_TOKEN))
        .send()
        .await
        .expect("progress");
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let mut response = response;
    let reading = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), reading).await;
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_servers_fail_within_their_timeout_with_a_clear_message_and_leave_nothing() {
    let mut cluster = ProcessCluster::new(1);
    cluster.configure_spawner(&spawner_lines("http_timeout = \"3s\""));
    cluster.start_all();
    cluster.leader().await;
    let homes = cluster.data_dir(1);
    for (user, expected) in [
        ("exits", "exited with status 3: ImportError: no module named jupyterlab"),
        ("silent", "did not answer within 3 s (nothing listens at"),
        (
            "elsewhere",
            "answered 404: is the server serving $JUPYTERHUB_SERVICE_PREFIX?",
        ),
    ] {
        create_user(&cluster, user).await;
        let (status, body) = start_server(&cluster, 1, user).await.expect("start");
        assert_eq!(status, 500, "{user}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{user}: {message}");
        let progress = progress_events(&cluster, 1, user).await;
        let last = progress.last().cloned().unwrap_or_default();
        assert_eq!(last["failed"], true, "{user}: {progress:?}");
        assert!(
            last["message"].as_str().unwrap_or_default().contains(expected),
            "{user}: {last}"
        );
        eventually("nothing left running", DEADLINE, || async {
            processes_with_home_under(&homes).is_empty().then_some(())
        })
        .await;
        // The user may try again (and fails the same way, cleanly).
        let server = server_of(&cluster, 1, user).await.expect("server");
        assert!(server.is_null() || server["stopped"] == true, "{server}");
    }
    drop(cluster);

    let mut cluster = ProcessCluster::new(1);
    cluster.configure_spawner("cmd = [\"no-such-singleuser\"]");
    cluster.start_all();
    cluster.leader().await;
    create_user(&cluster, "alice").await;
    let (status, body) = start_server(&cluster, 1, "alice").await.expect("start");
    assert_eq!(status, 500, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not run no-such-singleuser: not found on PATH"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_users_start_at_once_within_the_concurrent_spawn_limit() {
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&spawner_lines(""));
    for hub in &cluster.hubs {
        let text = std::fs::read_to_string(&hub.config).expect("config");
        std::fs::write(&hub.config, format!("{text}\n[servers]\nconcurrent_spawn_limit = 20\n")).expect("config");
    }
    cluster.start_all();
    cluster.leader().await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    let names: Vec<String> = (0..50).map(|i| format!("user{i:02}")).collect();
    let (status, _) = cluster
        .send(1, Method::POST, "/hub/api/users", Some(json!({ "usernames": names })))
        .await
        .expect("users");
    assert_eq!(status, 201);

    // Everyone at once, through all three hubs; 429s are retried, as a client would.
    let mut throttled = 0;
    let mut waiting: Vec<String> = names.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !waiting.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still not started: {waiting:?}");
        let attempts = waiting.iter().enumerate().map(|(i, name)| {
            let cluster = &cluster;
            async move {
                let node = (i % 3) as u64 + 1;
                let (status, body) = start_server(cluster, node, name).await.unwrap_or((0, Value::Null));
                (name.clone(), status, body)
            }
        });
        let outcomes = futures::future::join_all(attempts).await;
        waiting.clear();
        for (name, status, body) in outcomes {
            match status {
                201 | 202 => {}
                429 => {
                    throttled += 1;
                    waiting.push(name);
                }
                other => {
                    let logs: String = cluster
                        .logs()
                        .lines()
                        .filter(|line| line.contains(&name) || line.contains("WARN") || line.contains("ERROR"))
                        .map(|line| format!("{line}\n"))
                        .collect();
                    panic!("{name}: {other} {body}\n{logs}")
                }
            }
        }
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(throttled > 0, "50 starts against a limit of 20 must meet 429s");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, users) = cluster
            .request(1, Method::GET, "/hub/api/users?state=ready")
            .await
            .unwrap_or((0, Value::Null));
        if users.as_array().is_some_and(|ready| ready.len() == 50) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            // Say which servers are not ready and what the hubs logged about them.
            let (_, all) = cluster
                .request(1, Method::GET, "/hub/api/users")
                .await
                .unwrap_or((0, Value::Null));
            let not_ready: Vec<String> = all
                .as_array()
                .into_iter()
                .flatten()
                .filter(|user| user["servers"][""]["ready"] != true)
                .map(|user| format!("{}: {}", user["name"], user["servers"]))
                .collect();
            let logs: String = cluster
                .logs()
                .lines()
                .filter(|line| {
                    line.contains("WARN")
                        || line.contains("ERROR")
                        || not_ready.iter().any(|user| {
                            user.split(':')
                                .next()
                                .is_some_and(|name| line.contains(name.trim_matches('"')))
                        })
                })
                .map(|line| format!("{line}\n"))
                .collect();
            panic!("not ready after 120 s: {not_ready:#?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for edge in 0..2 {
        eventually("every route at the edge", Duration::from_secs(60), || async {
            let (_, routes) = cluster.edge_routes(edge).await?;
            (names.iter().all(|name| routes.contains_key(&format!("/user/{name}")))).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_idle_culler_stops_servers_nobody_uses() {
    let culler_bin = ganymede_testkit::venv_bin(&["jupyterhub-idle-culler"]).join("jupyterhub-idle-culler");
    let mut cluster = ProcessCluster::new(1);
    cluster.configure_spawner(&spawner_lines(""));
    cluster.start_all();
    cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);
    let alice = create_user(&cluster, "alice").await;
    create_user(&cluster, "bob").await;
    for user in ["alice", "bob"] {
        let (status, body) = start_server(&cluster, 1, user).await.expect("start");
        assert_eq!(status, 201, "{body}");
    }
    let log = std::fs::File::create(cluster.dir.path().join("culler.log")).expect("log");
    let mut culler = tokio::process::Command::new(culler_bin)
        .args(["--timeout=4", "--cull-every=1"])
        .arg(format!("--url={}", cluster.url(1, "/hub/api")))
        .env("JUPYTERHUB_API_TOKEN", crate::support::ADMIN_TOKEN)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("jupyterhub-idle-culler");

    // Alice works through the edge for a while (once her route has reached it); bob
    // does nothing.
    eventually("alice's route at the edge", DEADLINE, || {
        through_edge(&cluster, edge, "alice", &alice)
    })
    .await;
    let busy_until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < busy_until {
        assert!(
            through_edge(&cluster, edge, "alice", &alice).await.is_some(),
            "alice's server answers"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let alice_server = server_of(&cluster, 1, "alice").await.expect("alice");
    assert_eq!(
        alice_server["ready"], true,
        "a server in use is not culled: {alice_server}"
    );
    eventually("bob's idle server to be culled", DEADLINE, || async {
        is_stopped(&server_of(&cluster, 1, "bob").await?).then_some(())
    })
    .await;
    // Alice stops working: her server goes too.
    eventually("alice's server to be culled once idle", DEADLINE, || async {
        is_stopped(&server_of(&cluster, 1, "alice").await?).then_some(())
    })
    .await;
    let _ = culler.start_kill();
    let homes = cluster.data_dir(1);
    eventually("nothing left running", DEADLINE, || async {
        processes_with_home_under(&homes).is_empty().then_some(())
    })
    .await;
}

fn is_stopped(server: &Value) -> bool {
    server.is_null() || server["stopped"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_run_as_the_configured_unprivileged_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: switching users needs a hub running as root");
        return;
    }
    // An OS user of our own (removed at the end), and the test server where it can run it.
    let name = format!("gmd{}", std::process::id() % 100_000);
    let created = std::process::Command::new("useradd")
        .args(["--create-home", "--shell", "/usr/sbin/nologin", &name])
        .status()
        .expect("useradd");
    assert!(created.success(), "useradd {name}");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("userdel")
                .args(["--remove", &self.0])
                .status();
        }
    }
    let _remove = Remove(name.clone());
    let shared = tempfile::Builder::new().prefix("gmd-bin").tempdir().expect("dir");
    let bin = shared.path().join("ganymede-test-singleuser");
    std::fs::copy(test_singleuser_bin(), &bin).expect("copy the test server");
    for path in [shared.path(), bin.as_path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }

    let mut cluster = ProcessCluster::new(1);
    cluster.configure_spawner(&format!("cmd = [{:?}]\nuser = {name:?}", bin.display().to_string()));
    cluster.start_all();
    cluster.leader().await;
    create_user(&cluster, "alice").await;
    let (status, body) = start_server(&cluster, 1, "alice").await.expect("start");
    assert_eq!(status, 201, "{body}");
    let home = format!("/home/{name}");
    let pids = processes_with_home_under(std::path::Path::new(&home));
    assert_eq!(pids.len(), 1, "one server process with HOME={home}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).expect("status");
    let uid_line = status.lines().find(|line| line.starts_with("Uid:")).expect("Uid");
    let uid: u32 = uid_line
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert_ne!(uid, 0, "the server does not run as root: {uid_line}");
    let (status, _) = cluster
        .send(1, Method::DELETE, "/hub/api/users/alice/server", None)
        .await
        .expect("stop");
    assert!(matches!(status, 202 | 204));
    eventually("the server to stop", DEADLINE, || async {
        processes_with_home_under(std::path::Path::new(&home))
            .is_empty()
            .then_some(())
    })
    .await;
}
