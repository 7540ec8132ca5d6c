//! The hub's pages in real headless Chromium (Debian's `chromium` through
//! `chromedriver`) against a 3-replica cluster: log in, see home, create a token, use
//! the admin page to list users and start and stop a server (its buttons call the API
//! with the session cookie and the XSRF header), stop one's own server from home, log
//! out. A stand-in spawner (this test) reports servers ready and stopped.

use std::time::Duration;

use ganymede_model::{Command, ServerPhase};
use ganymede_testkit::webdriver::Chromium;
use ganymede_testkit::{TestCluster, Timings, eventually, test_settings};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

/// Reports every pending spawn ready and every pending stop done, as a spawner would,
/// until `stop`.
fn stand_in_spawner(raft: ganymede_raft::RaftHandle, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let pending: Vec<(String, String, u64, ServerPhase)> = raft.read_local(|state| {
                state
                    .users
                    .values()
                    .flat_map(|user| {
                        user.servers.values().filter_map(|server| {
                            let spawn_id = server.spawn_id?;
                            matches!(server.phase, ServerPhase::PendingSpawn | ServerPhase::PendingStop)
                                .then(|| (user.name.clone(), server.name.clone(), spawn_id, server.phase))
                        })
                    })
                    .collect()
            });
            for (user, server, spawn_id, phase) in pending {
                let command = if phase == ServerPhase::PendingSpawn {
                    Command::MarkServerReady {
                        user,
                        server,
                        spawn_id,
                        url: "http://127.0.0.1:9".into(),
                        at: 1,
                    }
                } else {
                    Command::MarkServerStopped {
                        user,
                        server,
                        spawn_id,
                        at: 1,
                    }
                };
                let _ = raft.propose(command).await;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_log_in_home_token_admin_page_and_log_out_in_chromium() {
    let cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    let admin_api = cluster.hub(1).api.clone();
    let (status, _) = admin_api
        .post("/hub/api/users", json!({"usernames": ["alice", "bob"]}))
        .await
        .expect("users");
    assert_eq!(status, 201);
    let (status, _) = admin_api
        .post("/hub/api/users/root", json!({"admin": true}))
        .await
        .expect("root");
    assert_eq!(status, 201);
    let stop_spawner = CancellationToken::new();
    let spawner = stand_in_spawner(cluster.hub(1).raft.clone(), stop_spawner.clone());
    let base = cluster.hub(2).api.base.clone();
    let browser = Chromium::start().await;

    // --- log in
    browser.goto(&format!("{base}/hub/home")).await;
    browser.find("#username_input", PATIENCE).await;
    assert!(
        browser.current_url().await.contains("/hub/login?next="),
        "home needs a login"
    );
    browser.type_into("#username_input", "root").await;
    browser.type_into("#password_input", "anything").await;
    browser.click("#login_submit").await;
    browser.wait_for_text("Signed in as root", PATIENCE).await;
    assert!(browser.current_url().await.ends_with("/hub/home"));
    let state = browser
        .execute(
            "return document.getElementById('default-server').dataset.state;",
            vec![],
        )
        .await;
    assert_eq!(state, "stopped");

    // --- a token from the token page works on the API
    browser.click("#tokens").await;
    browser.type_into("#token-note", "made in chromium").await;
    browser.click("#request-token-form button[type=submit]").await;
    let token = browser.text("#token-value").await;
    assert_eq!(token.len(), 32, "{token:?}");
    let (status, me) = cluster
        .hub(3)
        .api
        .with_token(Some(&token))
        .get("/hub/api/user")
        .await
        .expect("user");
    assert_eq!((status, me["name"].as_str()), (200, Some("root")));
    assert!(browser.source().await.contains("made in chromium"));

    // --- the admin page lists users; its buttons start and stop alice's server
    browser.goto(&format!("{base}/hub/home")).await;
    browser.click("#admin").await;
    browser.wait_for_text("Users 1–3 of 3", PATIENCE).await;
    for user in ["alice", "bob", "root"] {
        browser
            .find(&format!("#users tr[data-user=\"{user}\"]"), PATIENCE)
            .await;
    }
    browser
        .click("#users tr[data-user=\"alice\"] button[data-action=\"start\"]")
        .await;
    browser
        .find("#users tr[data-user=\"alice\"][data-state=\"running\"]", PATIENCE)
        .await;
    browser
        .click("#users tr[data-user=\"alice\"] button[data-action=\"stop\"]")
        .await;
    browser
        .find("#users tr[data-user=\"alice\"][data-state=\"stopped\"]", PATIENCE)
        .await;
    let phase = cluster
        .hub(3)
        .raft
        .read_local(|state| state.users["alice"].servers[""].phase);
    assert_eq!(phase, ServerPhase::Stopped);

    // --- one's own server, stopped from home
    let (status, _) = admin_api
        .post("/hub/api/users/root/server", json!({}))
        .await
        .expect("start");
    assert!(status == 201 || status == 202);
    eventually("root's server runs", PATIENCE, || async {
        let phase = cluster
            .hub(2)
            .raft
            .read_local(|state| state.users["root"].servers.get("").map(|s| s.phase));
        (phase == Some(ServerPhase::Running)).then_some(())
    })
    .await;
    browser.goto(&format!("{base}/hub/home")).await;
    browser
        .find("#default-server[data-state=\"running\"] #my-server", PATIENCE)
        .await;
    browser.click("#stop").await;
    browser
        .find("#default-server[data-state=\"stopped\"] #start", PATIENCE)
        .await;

    // --- log out: back to the login page, and home needs a login again
    browser.click("#logout").await;
    browser.find("#username_input", PATIENCE).await;
    browser.goto(&format!("{base}/hub/home")).await;
    browser.find("#username_input", PATIENCE).await;
    assert!(browser.current_url().await.contains("/hub/login"));

    browser.quit().await;
    stop_spawner.cancel();
    let _ = spawner.await;
}
