//! TLS on the edge: certificates from `ganymede certs`, ALPN h2 and http/1.1, and a
//! SIGHUP reload that new handshakes see while open connections carry on.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ganymede_testkit::upstream::Upstream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{ProcessCluster, append_config, eventually, ganymede_bin};

/// `ganymede certs --name <name>` for localhost and 127.0.0.1 into `out`.
fn certs(out: &Path, name: &str) {
    let status = Command::new(ganymede_bin())
        .args(["certs", "--name", name, "--hosts", "localhost,127.0.0.1", "--out"])
        .arg(out)
        .status()
        .expect("ganymede certs");
    assert!(status.success());
}

fn hangup(pid: &str) {
    assert!(
        Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .expect("kill")
            .success()
    );
}

fn connector(ca: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(port: u16, ca: &Path, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector(ca, alpn).connect(name, tcp).await
}

/// One HTTP/1.1 request on a kept-alive connection; the response head and body.
async fn get(stream: &mut TlsStream<TcpStream>, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "connection closed mid-response");
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .expect("content-length");
            if buffer.len() >= end + 4 + length {
                return (head, text[end + 4..end + 4 + length].to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn_and_a_sighup_reload_that_keeps_connections() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;
    let first = cluster.dir.path().join("ca1");
    let second = cluster.dir.path().join("ca2");
    certs(&first, "edge");
    certs(&second, "edge");
    let live = cluster.dir.path().join("live");
    std::fs::create_dir_all(&live).expect("dir");
    for file in ["edge.pem", "edge-key.pem"] {
        std::fs::copy(first.join(file), live.join(file)).expect("copy");
    }
    let edge = cluster.add_edge(&[]);
    append_config(
        &cluster.edges[edge].config,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            live.join("edge.pem").display().to_string(),
            live.join("edge-key.pem").display().to_string()
        ),
    );
    cluster.start_edge(edge);
    let alice = Upstream::start("alice").await;
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some(&alice.target())).await,
        Some(201)
    );
    eventually("the route on the edge", Duration::from_secs(20), || async {
        let (_, routes) = cluster.edge_routes(edge).await?;
        routes.contains_key("/user/alice").then_some(())
    })
    .await;
    let port = cluster.edges[edge].port;
    let ca1 = first.join("ca.pem");
    let ca2 = second.join("ca.pem");

    let mut kept = eventually("a TLS connection", Duration::from_secs(20), || async {
        connect(port, &ca1, &[b"http/1.1"]).await.ok()
    })
    .await;
    let (head, body) = get(&mut kept, "/user/alice/api/status").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-upstream: alice"), "{head}");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("upstream json");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-port"], "443");

    let h2 = connect(port, &ca1, &[b"h2", b"http/1.1"]).await.expect("h2 handshake");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // A certificate from another CA, then SIGHUP: new handshakes get it; the open
    // connection carries on.
    for file in ["edge.pem", "edge-key.pem"] {
        std::fs::copy(second.join(file), live.join(file)).expect("copy");
    }
    let pid = cluster.edge_pid(edge).expect("edge pid").to_string();
    hangup(&pid);
    eventually(
        "new handshakes to use the new certificate",
        Duration::from_secs(20),
        || async { connect(port, &ca2, &[b"http/1.1"]).await.ok() },
    )
    .await;
    assert!(
        connect(port, &ca1, &[b"http/1.1"]).await.is_err(),
        "the old certificate is gone"
    );
    let (head, _) = get(&mut kept, "/user/alice/tree").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // A broken file on reload keeps the working certificate.
    std::fs::write(live.join("edge.pem"), "not a certificate").expect("write");
    hangup(&pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fresh = connect(port, &ca2, &[b"http/1.1"]).await.expect("still serving");
    let (head, _) = get(&mut fresh, "/user/alice/").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let log = cluster.edge_logs();
    assert!(log.contains("TLS reload failed"), "{log}");
}

/// The edge feed over TLS: an edge with the cluster CA loads the table; an edge that
/// speaks plaintext to it gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_feed_speaks_tls_to_edges_that_trust_the_cluster_ca() {
    let mut cluster = ProcessCluster::new(1);
    let certs_dir = cluster.dir.path().join("feed-certs");
    certs(&certs_dir, "hub1");
    // The hub's config ends with its [events] section.
    let hub_config = cluster.hub(1).config.clone();
    append_config(
        &hub_config,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            certs_dir.join("hub1.pem").display().to_string(),
            certs_dir.join("hub1-key.pem").display().to_string()
        ),
    );
    cluster.start_all();
    cluster.leader().await;
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some("http://127.0.0.1:9")).await,
        Some(201)
    );

    let trusting = cluster.add_edge(&[]);
    append_config(
        &cluster.edges[trusting].config,
        &format!("hubs_ca = {:?}\n", certs_dir.join("ca.pem").display().to_string()),
    );
    let plaintext = cluster.add_edge(&[]);
    cluster.start_edge(trusting);
    cluster.start_edge(plaintext);
    eventually("the TLS edge to load the table", Duration::from_secs(20), || async {
        let (_, routes) = cluster.edge_routes(trusting).await?;
        routes.contains_key("/user/alice").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (seq, routes) = cluster.edge_routes(plaintext).await.expect("plaintext edge answers");
    assert_eq!(
        (seq, routes.len()),
        (0, 0),
        "a plaintext edge got routes from a TLS feed"
    );
    assert_eq!(
        cluster.edge_metric(plaintext, "ganymede_edge_snapshots_total").await,
        None
    );
}

/// Mutual TLS between replicas: with `[cluster] tls_*` set, replicas elect a leader and
/// forward writes to it over TLS with certificates from the cluster CA; the Raft port
/// refuses plaintext, and a TLS client that trusts the CA but shows no certificate of
/// its own gets nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_speak_mutual_tls_and_refuse_plaintext_and_clients_without_a_certificate() {
    let mut cluster = ProcessCluster::new(3);
    let certs_dir = cluster.dir.path().join("cluster-certs");
    for node in 1..=3u64 {
        certs(&certs_dir, &format!("hub{node}"));
        let config = cluster.hub(node).config.clone();
        let text = std::fs::read_to_string(&config).expect("config");
        let tls = format!(
            "[cluster]\ntls_cert = {:?}\ntls_key = {:?}\ntls_ca = {:?}\n",
            certs_dir.join(format!("hub{node}.pem")).display().to_string(),
            certs_dir.join(format!("hub{node}-key.pem")).display().to_string(),
            certs_dir.join("ca.pem").display().to_string()
        );
        assert!(text.contains("[cluster]\n"));
        std::fs::write(&config, text.replacen("[cluster]\n", &tls, 1)).expect("write config");
    }
    cluster.start_all();
    let leader = cluster.leader().await;
    let follower = leader % 3 + 1;

    // A write through a follower is forwarded to the leader over mutual TLS.
    let (status, body) = cluster
        .send(
            follower,
            reqwest::Method::POST,
            "/hub/api/users/tls-alice",
            Some(serde_json::json!({})),
        )
        .await
        .expect("the follower answers");
    assert_eq!(status, 201, "{body}");
    for node in 1..=3u64 {
        eventually("the user on every replica", Duration::from_secs(10), || async {
            let (status, _) = cluster
                .request(node, reqwest::Method::GET, "/hub/api/users/tls-alice")
                .await?;
            (status == 200).then_some(())
        })
        .await;
    }

    let raft_port = cluster.hub(leader).raft_port;
    // Plaintext HTTP/2 (what an untrusting gRPC peer sends first): no HTTP/2 answer.
    let mut plain = TcpStream::connect(("127.0.0.1", raft_port)).await.expect("connect");
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read(&mut answer))
        .await
        .expect("the port answers or closes");
    if let Ok(n) = read {
        assert!(
            n == 0 || answer[0] == 0x15,
            "plaintext got an answer that is not a TLS alert: {:?}",
            &answer[..n]
        );
    }

    // TLS that trusts the CA but has no client certificate: the handshake ends in an
    // alert, so a request gets no answer.
    let ca = certs_dir.join("ca.pem");
    if let Ok(mut stream) = connect(raft_port, &ca, &[b"h2"]).await {
        let _ = stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await;
        let mut answer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .expect("the port answers or closes");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a client without a certificate got an answer: {read:?}"
        );
    }
    let log = cluster.logs();
    assert!(!log.contains("BEGIN PRIVATE KEY"), "a key in the logs");
}

/// Mutual TLS on the edge feed: with `events.tls_client_ca`, an edge that presents a
/// certificate from the cluster CA loads the table; one that trusts the hubs but shows
/// no certificate, or one from another CA, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_feed_asks_edges_for_a_certificate_from_the_cluster_ca() {
    let mut cluster = ProcessCluster::new(1);
    let certs_dir = cluster.dir.path().join("feed-certs");
    let strangers = cluster.dir.path().join("other-ca");
    certs(&certs_dir, "hub1");
    certs(&certs_dir, "edge");
    certs(&strangers, "edge");
    let file = |dir: &Path, name: &str| dir.join(name).display().to_string();
    // The hub's config ends with its [events] section.
    let hub_config = cluster.hub(1).config.clone();
    append_config(
        &hub_config,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            file(&certs_dir, "hub1.pem"),
            file(&certs_dir, "hub1-key.pem"),
            file(&certs_dir, "ca.pem")
        ),
    );
    cluster.start_all();
    cluster.leader().await;
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some("http://127.0.0.1:9")).await,
        Some(201)
    );

    let mut edges = Vec::new();
    for identity in [Some(&certs_dir), None, Some(&strangers)] {
        let edge = cluster.add_edge(&[]);
        let mut lines = format!("hubs_ca = {:?}\n", file(&certs_dir, "ca.pem"));
        if let Some(dir) = identity {
            lines.push_str(&format!(
                "hubs_client_cert = {:?}\nhubs_client_key = {:?}\n",
                file(dir, "edge.pem"),
                file(dir, "edge-key.pem")
            ));
        }
        append_config(&cluster.edges[edge].config, &lines);
        cluster.start_edge(edge);
        edges.push(edge);
    }
    eventually(
        "the edge with a certificate to load the table",
        Duration::from_secs(20),
        || async {
            let (_, routes) = cluster.edge_routes(edges[0]).await?;
            routes.contains_key("/user/alice").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (edge, who) in [(edges[1], "no certificate"), (edges[2], "another CA's certificate")] {
        let (seq, routes) = cluster.edge_routes(edge).await.expect("the edge answers");
        assert_eq!((seq, routes.len()), (0, 0), "an edge with {who} got routes");
        assert_eq!(cluster.edge_metric(edge, "ganymede_edge_snapshots_total").await, None);
    }
}
