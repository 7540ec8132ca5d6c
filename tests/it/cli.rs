//! `ganymede user|token` against a real replica: what an operator scripts, with exit
//! codes and JSON output, and a clear error for a bad request.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, ProcessCluster, ganymede_bin};

fn run(cluster: &ProcessCluster, args: &[&str]) -> Output {
    Command::new(ganymede_bin())
        .args(&args[..1])
        .args(["--url", &cluster.url(1, "")])
        .args(&args[1..])
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run ganymede")
}

fn ok(cluster: &ProcessCluster, args: &[&str]) -> String {
    let output = run(cluster, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ganymede {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tokens_are_managed_from_the_command_line() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;

    let created: Value =
        serde_json::from_str(&ok(&cluster, &["user", "add", "alice", "prometheus", "--json"])).expect("json");
    assert_eq!(created.as_array().map(Vec::len), Some(2), "{created}");
    let admin: Value = serde_json::from_str(&ok(&cluster, &["user", "admin", "alice", "--json"])).expect("json");
    assert_eq!(admin["admin"], true, "{admin}");
    let listed: Value = serde_json::from_str(&ok(&cluster, &["user", "list", "--json"])).expect("json");
    let alice = listed
        .as_array()
        .and_then(|users| users.iter().find(|user| user["name"] == "alice"))
        .expect("alice listed");
    assert_eq!(alice["admin"], true);
    assert!(ok(&cluster, &["user", "list"]).contains("prometheus"));

    // A metrics-only token of an admin (who holds read:metrics; a token never has more
    // than its owner), printed alone so that scripts can capture it.
    let token = ok(
        &cluster,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--scopes",
            "read:metrics",
            "--note",
            "scraper",
        ],
    )
    .trim()
    .to_owned();
    let http = reqwest::Client::new();
    let with = |path: &str| {
        http.get(cluster.url(1, path))
            .header("authorization", format!("token {token}"))
            .send()
    };
    assert_eq!(with("/hub/metrics").await.expect("metrics").status(), 200);
    assert_eq!(with("/hub/api/users").await.expect("users").status(), 403);
    let tokens: Value =
        serde_json::from_str(&ok(&cluster, &["token", "list", "--user", "alice", "--json"])).expect("json");
    let listed = tokens["api_tokens"].as_array().expect("tokens");
    assert_eq!(listed.len(), 1, "{tokens}");
    // JupyterHub notes who made a token for someone else.
    assert_eq!(listed[0]["note"], "scraper by service admin");
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    assert!(!tokens.to_string().contains(&token), "a token list shows no token");

    ok(&cluster, &["token", "revoke", "--user", "alice", "--id", &id]);
    assert_eq!(with("/hub/metrics").await.expect("metrics").status(), 403);

    // Bad input: exit status 1 and the hub's own message.
    let missing = run(
        &cluster,
        &["token", "revoke", "--user", "prometheus", "--id", "a999999"],
    );
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("404"), "{stderr}");
    let nobody = run(&cluster, &["user", "admin", "nobody"]);
    assert_eq!(nobody.status.code(), Some(1));
    // Bad usage is clap's exit status 2.
    assert_eq!(
        run(&cluster, &["token", "create", "--expires-in", "soon"])
            .status
            .code(),
        Some(2)
    );
}
