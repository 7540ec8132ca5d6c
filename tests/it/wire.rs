//! What an edge hears (issue 7's "edges receive routing data only"): every byte an edge
//! receives from a hub — the ZeroMQ route-event feed and the gRPC snapshot and gap
//! repair — goes through recording relays, while users get tokens, log in and start
//! servers. The recording holds the routes, and no token, token hash or server token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spawning::{create_user, spawner_lines, start_server};
use crate::support::{ADMIN_TOKEN, ProcessCluster, eventually};

/// A TCP relay on a free loopback port to `upstream`, keeping what flows back (hub →
/// edge) in `heard`. Ends with the test's runtime.
async fn recording_relay(upstream: u16, heard: Arc<Mutex<Vec<u8>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let heard = heard.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut in_read, mut in_write) = inbound.split();
                let (mut out_read, mut out_write) = outbound.split();
                let to_hub = tokio::io::copy(&mut in_read, &mut out_write);
                let from_hub = async {
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        let read = out_read.read(&mut buffer).await.unwrap_or(0);
                        if read == 0 {
                            break;
                        }
                        heard
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .extend_from_slice(&buffer[..read]);
                        if in_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = to_hub => {}
                    () = from_hub => {}
                }
            });
        }
    });
    port
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_hears_routes_and_never_a_token_or_a_hash() {
    let mut cluster = ProcessCluster::new(1);
    cluster.configure_spawner(&spawner_lines(""));
    cluster.start_all();
    cluster.leader().await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let hub = cluster.hub(1);
    let grpc = recording_relay(hub.feed_port, heard.clone()).await;
    let events = recording_relay(hub.events_port, heard.clone()).await;
    let entry = format!(
        "{{ api = \"127.0.0.1:{}\", grpc = \"127.0.0.1:{grpc}\", events = \"127.0.0.1:{events}\" }}",
        hub.api_port
    );
    let edge = cluster.add_edge_with_hubs(&[entry]);
    cluster.start_edge(edge);
    eventually("the edge to load a table", Duration::from_secs(30), || {
        cluster.edge_routes(edge)
    })
    .await;

    // Secrets: the admin's token, alice's own, and her server's (from its environment).
    let alice = create_user(&cluster, "alice").await;
    let (status, body) = start_server(&cluster, 1, "alice").await.expect("start");
    assert!(status == 201 || status == 202, "{status} {body}");
    eventually("alice's route at the edge", Duration::from_secs(30), || async {
        let (_, routes) = cluster.edge_routes(edge).await?;
        routes.contains_key("/user/alice").then_some(())
    })
    .await;
    let server_tokens: Vec<String> = ganymede_testkit::process::servers_with_home_under(cluster.dir.path())
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
        .flat_map(|environ| {
            environ
                .split(|b| *b == 0)
                .filter_map(|entry| entry.strip_prefix(b"JUPYTERHUB_API_TOKEN="))
                .map(|token| String::from_utf8_lossy(token).into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !server_tokens.is_empty(),
        "the server's token was not found in its environment"
    );
    // A route with data through the CHP API, and a stop: more of what edges do hear.
    assert_eq!(
        cluster.set_route(1, "/services/dash", Some("http://127.0.0.1:9")).await,
        Some(201)
    );
    let (status, _) = cluster
        .send(1, Method::DELETE, "/hub/api/users/alice/server", Some(json!({})))
        .await
        .expect("stop");
    assert!(status == 202 || status == 204, "{status}");
    eventually("alice's route gone at the edge", Duration::from_secs(30), || async {
        let (_, routes) = cluster.edge_routes(edge).await?;
        (!routes.contains_key("/user/alice") && routes.contains_key("/services/dash")).then_some(())
    })
    .await;

    let heard = heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    assert!(
        contains(&heard, "/user/alice"),
        "the relays heard no route ({} bytes)",
        heard.len()
    );
    assert!(contains(&heard, "/services/dash"));
    let mut secrets = vec![ADMIN_TOKEN.to_owned(), alice];
    secrets.extend(server_tokens);
    for secret in &secrets {
        let hash = ganymede_hub::tokens::hash_token(secret);
        assert!(!contains(&heard, secret), "a token went to the edge");
        assert!(!contains(&heard, &hash), "a token's hash went to the edge");
        // Hashes are also stored without their prefix in some rows: the hex alone.
        let hex = hash.trim_start_matches("sha256:");
        assert!(!contains(&heard, hex), "a token's hash went to the edge");
    }
    eprintln!("an edge heard {} bytes; no secret among them", heard.len());
}
