//! The real thing: the local spawner starts the real `jupyterhub-singleuser` (JupyterLab
//! from PyPI), the edges route to it, a real ipykernel runs code through the edge's
//! WebSocket path, and it keeps running while the hub leader is killed.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ganymede_testkit::venv_bin;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{ProcessCluster, eventually};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Runs `code` on the kernel behind `socket` and returns what it printed.
async fn execute(socket: &mut Socket, code: &str, n: u32) -> String {
    let msg_id = format!("execute-{n}");
    let request = json!({
        "header": {
            "msg_id": msg_id, "username": "alice", "session": "ganymede-it",
            "msg_type": "execute_request", "version": "5.3", "date": "2026-11-26T00:00:00Z",
        },
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {
            "code": code, "silent": false, "store_history": true, "user_expressions": {},
            "allow_stdin": false, "stop_on_error": true,
        },
    });
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .expect("send execute_request");
    let mut printed = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the kernel to answer within 60 s");
        let Some(Ok(Message::Text(text))) = next else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap_or_default();
        if message["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        match message["msg_type"].as_str() {
            Some("stream") => printed.push_str(message["content"]["text"].as_str().unwrap_or_default()),
            Some("error") => panic!("the kernel raised: {}", message["content"]),
            Some("status") if message["content"]["execution_state"] == "idle" => return printed,
            _ => {}
        }
    }
}

/// Creates alice and her token through replica `via`, starts her server there (so that
/// replica owns it), and waits until `observer` says it is ready; her token.
async fn start_alice(cluster: &ProcessCluster, via: u64, observer: u64) -> String {
    let (status, _) = cluster
        .send(via, Method::POST, "/hub/api/users/alice", Some(json!({})))
        .await
        .expect("alice");
    assert_eq!(status, 201);
    let (_, token) = cluster
        .send(via, Method::POST, "/hub/api/users/alice/tokens", Some(json!({})))
        .await
        .expect("token");
    let token = token["token"].as_str().expect("a token").to_owned();
    let (status, body) = cluster
        .send(via, Method::POST, "/hub/api/users/alice/server", Some(json!({})))
        .await
        .expect("start");
    assert!(matches!(status, 201 | 202), "{status} {body}");
    eventually("JupyterLab to be ready", Duration::from_secs(120), || async {
        let (_, user) = cluster.request(observer, Method::GET, "/hub/api/users/alice").await?;
        (user["servers"][""]["ready"] == true).then_some(())
    })
    .await;
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_runs_code_through_the_edge_and_outlives_the_hub_leader() {
    let bin = venv_bin(&["jupyterhub-singleuser"]);
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&format!(
        "cmd = [{:?}]\nowner_timeout = \"3s\"\nstop_timeout = \"5s\"\nhttp_timeout = \"90s\"\nstart_timeout = \"90s\"",
        bin.join("jupyterhub-singleuser").display().to_string()
    ));
    cluster.start_all();
    let leader = cluster.leader().await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    // The server runs on a replica that is not the leader.
    let owner = (1..=3).find(|id| *id != leader).expect("a follower");
    let token = start_alice(&cluster, owner, leader).await;

    // jupyter_server's API through each edge, with alice's token.
    let http = client();
    for edge in 0..2 {
        let status: Value = eventually("JupyterLab through the edge", Duration::from_secs(30), || async {
            let response = http
                .get(cluster.edge_url(edge, "/user/alice/api/status"))
                .header("authorization", format!("token {token}"))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())?;
            response.json().await.ok()
        })
        .await;
        assert!(status.get("started").is_some(), "{status}");
    }
    let kernel: Value = http
        .post(cluster.edge_url(1, "/user/alice/api/kernels"))
        .header("authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .expect("start a kernel")
        .json()
        .await
        .expect("kernel model");
    let kernel_id = kernel["id"].as_str().expect("kernel id");
    let url = cluster
        .edge_url(1, &format!("/user/alice/api/kernels/{kernel_id}/channels"))
        .replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().expect("ws request");
    request
        .headers_mut()
        .insert("authorization", format!("token {token}").parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("kernel websocket through the edge");
    assert_eq!(execute(&mut socket, "print(6*7)", 1).await.trim(), "42");

    // The leader dies; the notebook session does not notice.
    cluster.kill9(leader);
    assert_eq!(execute(&mut socket, "print(6*7 + 1)", 2).await.trim(), "43");
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    assert_eq!(
        execute(&mut socket, "print('still here')", 3).await.trim(),
        "still here"
    );
    drop(socket);

    // After the failover the user stops and starts again.
    let (status, _) = cluster
        .send(new_leader, Method::DELETE, "/hub/api/users/alice/server", None)
        .await
        .expect("stop");
    assert!(matches!(status, 202 | 204), "{status}");
    eventually("the server to stop", Duration::from_secs(60), || async {
        let (_, user) = cluster.request(new_leader, Method::GET, "/hub/api/users/alice").await?;
        user["servers"].get("").is_none().then_some(())
    })
    .await;
    let (status, body) = cluster
        .send(owner, Method::POST, "/hub/api/users/alice/server", Some(json!({})))
        .await
        .expect("start again");
    assert!(matches!(status, 201 | 202), "{status} {body}");
    eventually("JupyterLab to be ready again", Duration::from_secs(120), || async {
        let (_, user) = cluster.request(new_leader, Method::GET, "/hub/api/users/alice").await?;
        (user["servers"][""]["ready"] == true).then_some(())
    })
    .await;
    let (status, _) = cluster
        .send(owner, Method::DELETE, "/hub/api/users/alice/server", None)
        .await
        .expect("stop");
    assert!(matches!(status, 202 | 204), "{status}");
    eventually("nothing left running", Duration::from_secs(60), || async {
        ganymede_testkit::process::processes_with_home_under(&cluster.data_dir(owner))
            .is_empty()
            .then_some(())
    })
    .await;
}

/// With prefork, a replica's servers are children of its warm interpreter: a replica
/// killed with SIGKILL still takes the interpreter, its servers and their kernels along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_takes_its_warm_interpreter_servers_and_kernels_along() {
    let bin = venv_bin(&["jupyterhub-singleuser"]);
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&format!(
        "cmd = [{:?}]\nprefork = true\nowner_timeout = \"3s\"\nstop_timeout = \"5s\"\nhttp_timeout = \"90s\"\nstart_timeout = \"90s\"",
        bin.join("jupyterhub-singleuser").display().to_string()
    ));
    cluster.start_all();
    let leader = cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);
    let owner = (1..=3).find(|id| *id != leader).expect("a follower");
    eventually("the owner's warm interpreter", Duration::from_secs(90), || async {
        std::fs::read_to_string(&cluster.hub(owner).log)
            .is_ok_and(|log| log.contains("warm interpreter ready"))
            .then_some(())
    })
    .await;
    let token = start_alice(&cluster, owner, leader).await;
    let log = std::fs::read_to_string(&cluster.hub(owner).log).expect("owner's log");
    assert!(
        log.contains("server process started from the warm interpreter"),
        "{log}"
    );

    let http = client();
    let kernel: Value = eventually("a kernel through the edge", Duration::from_secs(30), || async {
        let response = http
            .post(cluster.edge_url(edge, "/user/alice/api/kernels"))
            .header("authorization", format!("token {token}"))
            .json(&json!({"name": "python3"}))
            .send()
            .await
            .ok()?;
        (response.status() == 201).then_some(())?;
        response.json().await.ok()
    })
    .await;
    assert!(kernel["id"].is_string(), "{kernel}");
    let home = cluster.data_dir(owner);
    // The interpreter, the server and the kernel.
    eventually("three processes", Duration::from_secs(30), || async {
        (ganymede_testkit::process::processes_with_home_under(&home).len() >= 3).then_some(())
    })
    .await;

    cluster.kill9(owner);
    eventually(
        "nothing of the killed replica left running",
        Duration::from_secs(30),
        || async {
            ganymede_testkit::process::processes_with_home_under(&home)
                .is_empty()
                .then_some(())
        },
    )
    .await;
    // The leader fails the dead replica's server; alice can start again elsewhere.
    eventually("the server record to converge", Duration::from_secs(60), || async {
        let (_, user) = cluster.request(leader, Method::GET, "/hub/api/users/alice").await?;
        user["servers"].get("").is_none().then_some(())
    })
    .await;
}
