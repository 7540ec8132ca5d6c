//! The real `jupyterhub-idle-culler` (PyPI) against a 3-replica cluster, with a service
//! token holding exactly the scopes its README asks for. Servers are started through the
//! API; a stand-in spawner (this test) reports them ready — an hour ago, so that they
//! are idle — and reports stops as done, as the local spawner will.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ganymede_model::rbac::{Role, Roles};
use ganymede_model::{Command, ServerPhase};
use ganymede_testkit::{TestCluster, Timings, eventually, test_settings, venv_bin};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CULLER_TOKEN: &str = "culler-service-token-5e1d0c";
const PATIENCE: Duration = Duration::from_secs(60);

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn iso_now() -> String {
    let millis = now_millis();
    let seconds = millis / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}000Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        millis % 1000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_the_real_idle_culler_culls_idle_servers_and_users_never_active_ones() {
    let culler = venv_bin(&["jupyterhub-idle-culler"]).join("jupyterhub-idle-culler");
    let mut settings = test_settings();
    settings.slow_stop_timeout = Duration::from_secs(5);
    settings.roles = Roles::with_custom(vec![Role {
        name: "idle-culler".into(),
        scopes: [
            "list:users",
            "read:users:activity",
            "read:servers",
            "delete:servers",
            "admin:users",
        ]
        .map(String::from)
        .to_vec(),
        services: vec!["culler".into()],
        ..Role::default()
    }])
    .expect("valid role");
    let cluster = TestCluster::start_with_settings(3, Timings::default(), settings).await;
    let admin = cluster.hub(1).api.clone();
    let (status, reply) = admin
        .post("/hub/api/services/culler", json!({"api_token": CULLER_TOKEN}))
        .await
        .expect("service");
    assert_eq!(status, 201, "{reply}");
    let (status, _) = admin
        .post("/hub/api/users", json!({"usernames": ["idle1", "idle2", "busy"]}))
        .await
        .expect("users");
    assert_eq!(status, 201);
    let (status, _) = admin
        .post("/hub/api/users/boss", json!({"admin": true}))
        .await
        .expect("admin");
    assert_eq!(status, 201);

    // --- servers: started through the API, reported ready an hour ago by the stand-in
    let hour_ago = now_millis() - 3_600_000;
    for (user, server) in [
        ("idle1", ""),
        ("idle2", ""),
        ("idle2", "gpu"),
        ("busy", ""),
        ("boss", ""),
    ] {
        let path = if server.is_empty() {
            format!("/hub/api/users/{user}/server")
        } else {
            format!("/hub/api/users/{user}/servers/{server}")
        };
        let (status, _) = admin.post(&path, json!({})).await.expect("start");
        assert_eq!(status, 202, "{path}");
        let spawn_id = cluster
            .hub(1)
            .raft
            .read(|state| state.users[user].servers[server].spawn_id)
            .await
            .expect("read")
            .expect("spawn id");
        cluster
            .hub(1)
            .raft
            .propose(Command::MarkServerReady {
                user: user.into(),
                server: server.into(),
                spawn_id,
                url: "http://127.0.0.1:9".into(),
                at: hour_ago,
            })
            .await
            .expect("ready");
    }

    // --- the stand-in spawner: a stop requested is a stop done
    let stop = CancellationToken::new();
    let spawner = tokio::spawn({
        let raft = cluster.hub(2).raft.clone();
        let stop = stop.clone();
        async move {
            while !stop.is_cancelled() {
                let stopping: Vec<(String, String, u64)> = raft.read_local(|state| {
                    state
                        .users
                        .values()
                        .flat_map(|u| u.servers.values().map(move |s| (u, s)))
                        .filter(|(_, s)| s.phase == ServerPhase::PendingStop)
                        .filter_map(|(u, s)| Some((u.name.clone(), s.name.clone(), s.spawn_id?)))
                        .collect()
                });
                for (user, server, spawn_id) in stopping {
                    let _ = raft
                        .propose(Command::MarkServerStopped {
                            user,
                            server,
                            spawn_id,
                            at: now_millis(),
                        })
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // --- busy's server reports activity, as jupyterhub-singleuser does
    let activity = tokio::spawn({
        let api = cluster.hub(3).api.clone();
        let stop = stop.clone();
        async move {
            while !stop.is_cancelled() {
                let now = iso_now();
                let _ = api
                    .post(
                        "/hub/api/users/busy/activity",
                        json!({"last_activity": now, "servers": {"": {"last_activity": now}}}),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    // Users were created just now; the culler judges them by `created` once their
    // servers are gone, so let them age past the timeout. The timeout leaves room for
    // busy's reports: one every 0.5 s, committed within a second.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut child = tokio::process::Command::new(&culler)
        .args([
            "--timeout=4",
            "--cull-every=1",
            "--remove-named-servers=true",
            "--cull-users=true",
            "--cull-admin-users=false",
            "--concurrency=4",
        ])
        .env("JUPYTERHUB_API_URL", format!("{}/hub/api", cluster.hub(2).api.base))
        .env("JUPYTERHUB_API_TOKEN", CULLER_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start jupyterhub-idle-culler");

    let users_left = || async {
        let (_, users) = admin.get("/hub/api/users?include_stopped_servers=1").await.ok()?;
        Some(
            users
                .as_array()?
                .iter()
                .filter_map(|u| Some((u["name"].as_str()?.to_owned(), u["servers"].clone())))
                .collect::<Vec<_>>(),
        )
    };
    eventually("the culler removes idle1 and idle2", PATIENCE, || async {
        let left = users_left().await?;
        let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
        (!names.contains(&"idle1") && !names.contains(&"idle2")).then_some(())
    })
    .await;
    // A few more passes (one a second): the active server and the admin stay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = users_left().await.expect("users");
    let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"busy") && names.contains(&"boss"), "{names:?}");
    let busy = &left.iter().find(|(n, _)| n == "busy").expect("busy").1;
    assert_eq!(busy[""]["ready"], true, "busy's server was never culled: {busy}");
    let boss = &left.iter().find(|(n, _)| n == "boss").expect("boss").1;
    assert_eq!(
        boss[""]["stopped"], true,
        "boss's idle server is culled, boss is not: {boss}"
    );

    stop.cancel();
    let _ = child.start_kill();
    let output = child.wait_with_output().await.expect("culler output");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("Traceback"), "the culler hit an error:\n{log}");
    let _ = tokio::join!(spawner, activity);
}
