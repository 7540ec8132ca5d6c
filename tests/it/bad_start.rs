//! A hub that cannot start says why, in words, and exits non-zero — never a panic or a hang.

use std::process::Command;

use crate::support::{ProcessCluster, ganymede_bin};

fn run_hub(args: &[&str]) -> (bool, String) {
    let output = Command::new(ganymede_bin())
        .arg("hub")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run ganymede hub");
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("panicked"), "ganymede panicked: {text}");
    (output.status.success(), text)
}

#[test]
fn config_mistakes_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[hub]\nnode_idd = 1\n").expect("write");
    let (ok, text) = run_hub(&["--config", config.to_str().expect("utf8")]);
    assert!(!ok);
    assert!(text.contains("node_idd"), "{text}");

    let (ok, text) = run_hub(&["--config", dir.path().join("absent.toml").to_str().expect("utf8")]);
    assert!(!ok);
    assert!(text.contains("absent.toml"), "{text}");

    let (ok, text) = run_hub(&["--set", "raft.election_timeout_min=soon"]);
    assert!(!ok);
    assert!(text.contains("raft.election_timeout_min"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_data_dir_is_refused_with_a_reason() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start(1);
    cluster.leader().await;
    cluster.kill9(1);

    // --- a data dir that belongs to another node
    let config = cluster.hub(1).config.clone();
    let data_dir = format!("hub.data_dir={}", cluster.data_dir(1).display());
    let (ok, text) = run_hub(&[
        "--set",
        "hub.node_id=2",
        "--set",
        &data_dir,
        "--set",
        "hub.api_bind=127.0.0.1:0",
        "--set",
        "hub.raft_bind=127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(text.contains("belongs to node 1"), "{text}");

    // --- a corrupt database
    std::fs::write(cluster.data_dir(1).join("db/CURRENT"), "MANIFEST-999999\n").expect("corrupt");
    let (ok, text) = run_hub(&["--config", config.to_str().expect("utf8")]);
    assert!(!ok);
    assert!(text.contains("cannot open the database"), "{text}");

    // --- a port already in use
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let data = cluster.dir.path().join("fresh");
    let (ok, text) = run_hub(&[
        "--set",
        &format!("hub.api_bind=127.0.0.1:{port}"),
        "--set",
        &format!("hub.data_dir={}", data.display()),
    ]);
    assert!(!ok);
    assert!(text.contains("hub.api_bind"), "{text}");
}
