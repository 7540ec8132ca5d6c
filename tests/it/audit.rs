//! The audit record on a real cluster: a login, token creations, a refused request and
//! a spawn, each with its actor, in the same order on every replica; admins only; and
//! `ganymede events --follow` streaming across a replica's death.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::spawning::{client, spawner_lines};
use crate::support::{ADMIN_TOKEN, ProcessCluster, append_config, eventually, ganymede_bin};

/// Logs `name` in through replica `node`'s login form (the dummy authenticator).
async fn login(cluster: &ProcessCluster, node: u64, name: &str) {
    let http = client();
    let form = http
        .get(cluster.url(node, "/hub/login"))
        .send()
        .await
        .expect("login page");
    let xsrf = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| cookie.strip_prefix("_xsrf="))
        .and_then(|rest| rest.split(';').next())
        .expect("an _xsrf cookie")
        .to_owned();
    let answer = http
        .post(cluster.url(node, "/hub/login"))
        .header("cookie", format!("_xsrf={xsrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={name}&password=anything&_xsrf={xsrf}"))
        .send()
        .await
        .expect("login");
    assert!(answer.status().is_redirection(), "login: {:?}", answer.text().await);
}

/// The whole record as replica `node` has it, with `token`.
async fn record(cluster: &ProcessCluster, node: u64, token: &str) -> Option<(u16, Value)> {
    let answer = client()
        .get(cluster.url(node, "/hub/api/ganymede/events?since=0&limit=1000"))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.ok()?))
}

fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().cloned().unwrap_or_default()
}

/// The first record after position `from` with this action and target.
fn find(events: &[Value], from: usize, action: &str, target: &str) -> Option<(usize, Value)> {
    events
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, event)| event["action"] == action && event["target"] == target)
        .map(|(at, event)| (at, event.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_record_names_who_did_what_in_the_same_order_on_every_replica() {
    let mut cluster = ProcessCluster::new(3);
    for hub in &cluster.hubs {
        append_config(&hub.config, "\n[auth]\nauthenticator = \"dummy\"\n");
    }
    cluster.configure_spawner(&spawner_lines(""));
    cluster.start_all();
    cluster.leader().await;
    let http = client();

    // A login through replica 2; a token for alice made by the operator's admin token
    // through replica 3, and one alice makes with it through replica 1.
    login(&cluster, 2, "alice").await;
    let (status, first) = cluster
        .send(
            3,
            Method::POST,
            "/hub/api/users/alice/tokens",
            Some(json!({"note": "by admin"})),
        )
        .await
        .expect("token");
    assert_eq!(status, 201, "{first}");
    let alices = first["token"].as_str().expect("token").to_owned();
    let first_id = first["id"].as_str().expect("id").to_owned();
    let second = http
        .post(cluster.url(1, "/hub/api/users/alice/tokens"))
        .header("authorization", format!("token {alices}"))
        .json(&json!({"note": "her own"}))
        .send()
        .await
        .expect("token");
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.expect("json");
    let second_id = second["id"].as_str().expect("id").to_owned();

    // alice may not list users, nor read the record.
    let denied = http
        .get(cluster.url(2, "/hub/api/users"))
        .header("authorization", format!("token {alices}"))
        .send()
        .await
        .expect("users");
    assert_eq!(denied.status(), 403);
    let (status, _) = record(&cluster, 1, &alices).await.expect("record");
    assert_eq!(status, 403);
    eventually("the refusals on the record", Duration::from_secs(20), || async {
        let (_, page) = record(&cluster, 1, ADMIN_TOKEN).await?;
        let denials = events(&page)
            .iter()
            .filter(|event| event["action"] == "request.deny" && event["actor"] == "user:alice")
            .count();
        (denials >= 2).then_some(())
    })
    .await;

    // A spawn through replica 1.
    let spawned = http
        .post(cluster.url(1, "/hub/api/users/alice/server"))
        .header("authorization", format!("token {alices}"))
        .json(&json!({}))
        .send()
        .await
        .expect("spawn");
    assert!(spawned.status() == 201 || spawned.status() == 202);

    // Every replica tells the same story, in the same order, once it has caught up.
    let story = eventually("every replica to record the spawn", Duration::from_secs(30), || async {
        let mut pages = Vec::new();
        for node in 1..=3 {
            let (status, page) = record(&cluster, node, ADMIN_TOKEN).await?;
            assert_eq!(status, 200, "{page}");
            let list = events(&page);
            find(&list, 0, "server.ready", "alice")?;
            pages.push(list);
        }
        // Records keep coming (activity is left out, but not everything else): compare
        // what all three hold.
        let shared = pages.iter().filter_map(|page| page.last()?["seq"].as_u64()).min()?;
        let upto = |page: &Vec<Value>| -> Vec<Value> {
            page.iter()
                .filter(|event| event["seq"].as_u64().is_some_and(|seq| seq <= shared))
                .cloned()
                .collect()
        };
        let first = upto(&pages[0]);
        find(&first, 0, "server.ready", "alice")?;
        pages.iter().all(|page| upto(page) == first).then_some(first)
    })
    .await;

    let (login_at, login) = find(&story, 0, "session.start", "alice").expect("the login");
    assert_eq!(login["actor"], "user:alice", "{login}");
    assert_eq!(login["ip"], "127.0.0.1", "{login}");
    let (admin_token_at, by_admin) =
        find(&story, login_at, "token.issue", &format!("{first_id} (user:alice)")).expect("the admin's token");
    assert_eq!(by_admin["actor"], "service:admin", "{by_admin}");
    let (own_token_at, own) = find(
        &story,
        admin_token_at,
        "token.issue",
        &format!("{second_id} (user:alice)"),
    )
    .expect("her own token");
    assert_eq!(own["actor"], "user:alice", "{own}");
    assert_eq!(format!("a{}", own["token_id"]), first_id, "{own}");
    let (denied_at, denial) = find(&story, own_token_at, "request.deny", "GET /hub/api/users").expect("the refusal");
    assert_eq!(denial["actor"], "user:alice", "{denial}");
    assert!(
        denial["outcome"].as_str().is_some_and(|o| o.starts_with("denied: 403")),
        "{denial}"
    );
    let (spawn_at, spawn) = find(&story, denied_at, "server.spawn", "alice").expect("the spawn");
    assert_eq!(spawn["actor"], "user:alice", "{spawn}");
    let (_, ready) = find(&story, spawn_at, "server.ready", "alice").expect("ready");
    // The spawner's report: the replica that took the request runs the server.
    assert_eq!(ready["actor"], "replica:1", "{ready}");
    // Nothing secret on the record.
    let text = serde_json::to_string(&story).expect("json");
    assert!(!text.contains(&alices), "a token on the record");

    // A reader that goes away (`ganymede events | head`) ends the command quietly.
    let mut hasty = Command::new(ganymede_bin())
        .args(["events", "--json", "--url", &cluster.url(1, "")])
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ganymede events");
    drop(hasty.stdout.take());
    let output = hasty.wait_with_output().expect("ganymede events");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));

    // `ganymede events --follow`, given two replicas, keeps streaming when the first dies.
    let last_seq = story.last().and_then(|event| event["seq"].as_u64()).expect("a seq");
    let urls = format!("{},{}", cluster.url(1, ""), cluster.url(2, ""));
    let mut follower = Command::new(ganymede_bin())
        .args([
            "events",
            "--follow",
            "--json",
            "--since",
            &last_seq.to_string(),
            "--url",
            &urls,
        ])
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ganymede events");
    let stdout = follower.stdout.take().expect("stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str(&line)
                && lines_tx.send(value).is_err()
            {
                return;
            }
        }
    });
    let mut wait_for_user = async |name: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let line = tokio::time::timeout_at(deadline, lines.recv())
                .await
                .unwrap_or_else(|_| panic!("{name}'s creation never streamed"))
                .expect("the follower stopped");
            if line["action"] == "user.create" && line["target"] == name {
                return line;
            }
        }
    };
    let (status, _) = cluster
        .send(3, Method::POST, "/hub/api/users/bob", Some(json!({})))
        .await
        .expect("bob");
    assert_eq!(status, 201);
    assert_eq!(wait_for_user("bob").await["actor"], "service:admin");
    cluster.kill9(1);
    cluster.leader().await;
    eventually("carol to be created", Duration::from_secs(20), || async {
        let (status, _) = cluster
            .send(3, Method::POST, "/hub/api/users/carol", Some(json!({})))
            .await?;
        (status == 201 || status == 409).then_some(())
    })
    .await;
    wait_for_user("carol").await;
    let _ = follower.kill();
    let _ = follower.wait();
}
