//! `ops/local/cluster.sh`: the laptop cluster's verbs, on its fixed ports.

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    ganymede_testkit::repo_root().join("ops/local/cluster.sh")
}

fn cluster_sh(dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .env("GANYMEDE_LOCAL_DIR", dir)
        .env_remove("GANYMEDE_ADMIN_TOKEN")
        .output()
        .expect("run cluster.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cluster.sh {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `status` lines as (name, up, role).
fn status(dir: &std::path::Path) -> Vec<(String, String, String)> {
    cluster_sh(dir, &["status"])
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "status line {line:?}");
            (parts[0].into(), parts[1].into(), parts[2].into())
        })
        .collect()
}

struct Down<'a>(&'a std::path::Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .env("GANYMEDE_LOCAL_DIR", self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_status_kill_start_down_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _down = Down(dir.path());
    cluster_sh(dir.path(), &["up"]);
    let lines = status(dir.path());
    assert_eq!(
        lines.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["hub1", "hub2", "hub3", "edge1", "edge2"]
    );
    assert!(lines.iter().all(|l| l.1 == "up"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.2 == "edge").count(), 2, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.2 == "leader").count(), 1, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.2 == "follower").count(), 2, "{lines:?}");

    // --- kill the leader: it shows down, another hub leads
    let leader = lines.iter().find(|l| l.2 == "leader").expect("leader").0.clone();
    cluster_sh(dir.path(), &["kill", &leader]);
    let lines = status(dir.path());
    assert!(lines.iter().any(|l| l.0 == leader && l.1 == "down"), "{lines:?}");

    // --- start it again: it answers, and a write made through it survives down/up
    cluster_sh(dir.path(), &["start", &leader]);
    let token = std::fs::read_to_string(dir.path().join("admin-token")).expect("generated admin token");
    let port = 8080 + leader.trim_start_matches("hub").parse::<u16>().expect("hub number");
    let client = reqwest::Client::new();
    let auth = format!("token {}", token.trim());
    let created = client
        .post(format!("http://127.0.0.1:{port}/hub/api/users/kept"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    cluster_sh(dir.path(), &["down"]);
    assert!(status(dir.path()).iter().all(|l| l.1 == "down"));
    cluster_sh(dir.path(), &["up"]);
    let got = client
        .get("http://127.0.0.1:8083/hub/api/users/kept")
        .header("authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(got.status().as_u16(), 200);
    assert!(cluster_sh(dir.path(), &["logs", "hub1"]).contains("hub listening"));

    // --- the routes API on 8091-8093 with the generated CONFIGPROXY_AUTH_TOKEN
    let proxy_token = std::fs::read_to_string(dir.path().join("proxy-token")).expect("generated proxy token");
    let proxy_auth = format!("token {}", proxy_token.trim());
    let added = client
        .post("http://127.0.0.1:8091/api/routes/user/kept")
        .header("authorization", &proxy_auth)
        .json(&serde_json::json!({"target": "http://127.0.0.1:9999"}))
        .send()
        .await
        .expect("add route");
    assert_eq!(added.status().as_u16(), 201);
    let routes: serde_json::Value = client
        .get("http://127.0.0.1:8093/api/routes")
        .header("authorization", &proxy_auth)
        .send()
        .await
        .expect("routes")
        .json()
        .await
        .expect("json");
    assert_eq!(routes["/user/kept"]["target"], "http://127.0.0.1:9999", "{routes}");

    // --- the edges on 8000 and 8010 route it; an edge killed and started again too
    let upstream = ganymede_testkit::upstream::Upstream::start("kept").await;
    let added = client
        .post("http://127.0.0.1:8092/api/routes/user/kept")
        .header("authorization", &proxy_auth)
        .json(&serde_json::json!({"target": upstream.target()}))
        .send()
        .await
        .expect("re-add route");
    assert_eq!(added.status().as_u16(), 201);
    cluster_sh(dir.path(), &["kill", "edge2"]);
    assert!(status(dir.path()).iter().any(|l| l.0 == "edge2" && l.1 == "down"));
    cluster_sh(dir.path(), &["start", "edge2"]);
    for port in [8000, 8010] {
        let url = format!("http://127.0.0.1:{port}/user/kept/lab");
        crate::support::eventually(
            "the edge to route /user/kept",
            std::time::Duration::from_secs(20),
            || async {
                let response = client.get(&url).send().await.ok()?;
                (response.headers().get("x-upstream")? == "kept").then_some(())
            },
        )
        .await;
    }
}
