//! `ganymede dev`: one command brings up a hub, an edge and real JupyterLab, and
//! Ctrl-C (SIGTERM here) takes it all down again.

use std::time::Duration;

use ganymede_testkit::process::{free_port, processes_with_home_under};
use ganymede_testkit::venv_bin;
use serde_json::{Value, json};

use crate::support::{eventually, ganymede_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ganymede_dev_serves_jupyterlab_through_its_edge_and_stops_cleanly() {
    let venv = venv_bin(&["jupyterhub-singleuser", "jupyter-lab"])
        .parent()
        .expect("venv")
        .to_owned();
    let dir = tempfile::tempdir().expect("dir");
    let (port, hub_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("dev.out")).expect("log");
    let mut dev = tokio::process::Command::new(ganymede_bin())
        .args(["dev", "--dir"])
        .arg(dir.path().join("dev"))
        .arg("--venv")
        .arg(&venv)
        .args(["--port", &port.to_string(), "--hub-port", &hub_port.to_string()])
        .env_remove("GANYMEDE_ADMIN_TOKEN")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("ganymede dev");
    // Longer than the hub's slow_spawn_timeout (10 s), which a start request may wait.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let edge = |path: &str| format!("http://127.0.0.1:{port}{path}");
    eventually("the edge to serve the hub", Duration::from_secs(60), || async {
        let response = http.get(edge("/hub/api")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let admin = std::fs::read_to_string(dir.path().join("dev/admin-token")).expect("the admin token file");
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut request = http
            .request(method, edge(path))
            .header("authorization", format!("token {token}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let created = call(reqwest::Method::POST, "/hub/api/users/alice", &admin, Some(json!({})))
        .await
        .expect("alice");
    assert_eq!(created.status(), 201);
    let token: Value = call(
        reqwest::Method::POST,
        "/hub/api/users/alice/tokens",
        &admin,
        Some(json!({})),
    )
    .await
    .expect("token")
    .json()
    .await
    .expect("token json");
    let token = token["token"].as_str().expect("token").to_owned();
    let started = call(
        reqwest::Method::POST,
        "/hub/api/users/alice/server",
        &token,
        Some(json!({})),
    )
    .await
    .expect("start");
    assert!(matches!(started.status().as_u16(), 201 | 202), "{}", started.status());
    let status: Value = eventually("JupyterLab through the dev edge", Duration::from_secs(120), || async {
        let response = call(reqwest::Method::GET, "/user/alice/api/status", &token, None)
            .await
            .ok()?;
        (response.status() == 200).then_some(())?;
        response.json().await.ok()
    })
    .await;
    assert!(status.get("started").is_some(), "{status}");

    let pid = rustix::process::Pid::from_raw(dev.id().expect("pid") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let exit = tokio::time::timeout(Duration::from_secs(60), dev.wait())
        .await
        .expect("ganymede dev to stop within 60 s")
        .expect("exit status");
    assert!(
        exit.success(),
        "{exit}: {}",
        std::fs::read_to_string(dir.path().join("dev.out")).unwrap_or_default()
    );
    assert!(
        processes_with_home_under(dir.path()).is_empty(),
        "JupyterLab stopped with it"
    );
    assert!(
        http.get(edge("/hub/api")).send().await.is_err(),
        "the edge stopped with it"
    );
}
