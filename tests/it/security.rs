//! Security hardening, black-box (issue 7, item 6; `tests/SECURITY.md` is the checklist
//! that says which test guards which requirement): the hub's HTTP limits (slow and
//! oversized request heads, bodies, connection floods), failed-login rate limiting and
//! bounded failed-login logs, XSRF on every form and cookie-authenticated API call,
//! redirects that stay on the site, CSP and cookie flags, logout that stops other tabs
//! from minting OAuth codes, WebSocket upgrades that reach only their route's server,
//! and no token or password in the clear in data directories, backups or logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganymede_testkit::browser::{Jar, browser, get_with, log_in, set_cookies};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use ganymede_testkit::process::metric_sum;

use crate::support::{ADMIN_TOKEN, ProcessCluster, append_config, eventually, ganymede_bin};

/// Puts `lines` at the top of every hub's `[hub]` section (the generated configs end
/// with other sections, so appending cannot reach it).
fn hub_keys(cluster: &ProcessCluster, lines: &str) {
    for hub in &cluster.hubs {
        let text = std::fs::read_to_string(&hub.config).expect("hub config");
        let text = text.replacen("[hub]\n", &format!("[hub]\n{lines}\n"), 1);
        std::fs::write(&hub.config, text).expect("write hub config");
    }
}

/// Writes `request` on a fresh connection and reads until the peer closes or
/// `patience` passes; what came back, and whether the peer closed.
async fn raw(port: u16, request: &[u8], patience: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_until_closed(&mut stream, patience).await
}

async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(read)) => seen.extend_from_slice(&chunk[..read]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

/// Signs `name` up with `password` through the native authenticator's form.
async fn sign_up(base: &str, name: &str, password: &str) -> u16 {
    let client = browser();
    let page = client
        .get(format!("{base}/hub/signup"))
        .send()
        .await
        .expect("signup page");
    let mut jar = Jar(Vec::new());
    jar.take(page.headers());
    let xsrf = jar.get("_xsrf").expect("_xsrf").to_owned();
    client
        .post(format!("{base}/hub/signup"))
        .header("cookie", jar.header())
        .form(&[
            ("username", name),
            ("signup_password", password),
            ("signup_password_confirmation", password),
            ("_xsrf", xsrf.as_str()),
        ])
        .send()
        .await
        .expect("signup")
        .status()
        .as_u16()
}

fn content_security_policy(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The hub's API listener had none of a public HTTP server's limits (`axum::serve`
/// sets no header deadline and no connection bound): a client sending half a request
/// head held its connection for ever, idle keep-alive connections were never closed,
/// and any number of connections were taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_issue_hub_api_bounds_slow_heads_big_heads_bodies_and_connection_floods() {
    let mut cluster = ProcessCluster::new(1);
    hub_keys(
        &cluster,
        "header_read_timeout = \"1s\"\nmax_connections = 16\nmax_header_bytes = 16384\nmax_body_bytes = 4096",
    );
    cluster.start_all();
    cluster.leader().await;
    let port = cluster.hub(1).api_port;

    // --- slowloris: half a request head, then nothing; the hub hangs up
    let (_, closed) = raw(
        port,
        b"GET /hub/api HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "the hub kept a stalled request head open");

    // --- an idle kept-alive connection is closed too, after an answered request
    let (answer, closed) = raw(
        port,
        b"GET /hub/api HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "the hub kept an idle connection open");

    // --- a head over the limit: 431, not a buffer that grows
    let huge = format!(
        "GET /hub/api HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (answer, _) = raw(port, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // --- a body over the limit: 413 in JupyterHub's JSON shape
    let response = reqwest::Client::new()
        .post(cluster.url(1, "/hub/api/users"))
        .header("authorization", format!("token {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(format!("{{\"usernames\": [\"{}\"]}}", "x".repeat(8192)))
        .send()
        .await
        .expect("big body");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], 413, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");

    // --- a connection flood: the connections beyond the bound get a clear 503 at once
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(b"GET /hub/api HTTP/1.1\r\n").await.expect("write");
        held.push(stream);
    }
    let (answer, closed) = raw(
        port,
        b"GET /hub/api HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("\"status\": 503") && answer.contains("Too many connections"),
        "{answer}"
    );
    assert!(closed);
    // The stalled ones time out, and the hub serves again.
    for stream in &mut held {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(closed, "a held connection outlived the head deadline");
    }
    drop(held);
    eventually("the hub to serve again", Duration::from_secs(10), || async {
        let (status, _) = cluster.request(1, Method::GET, "/hub/api/user").await?;
        (status == 200).then_some(())
    })
    .await;

    // --- the gRPC ports (Raft, edge feed) keep as many connections open and close the
    // next one at once; freed places are taken again
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    for (name, port) in [("raft", cluster.hub(1).raft_port), ("feed", cluster.hub(1).feed_port)] {
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
        }
        let (_, closed) = raw(port, PREFACE, Duration::from_secs(5)).await;
        assert!(closed, "the {name} port kept a connection past its bound");
        drop(held);
        eventually(
            &format!("the {name} port to take connections again"),
            Duration::from_secs(10),
            || async {
                let (answer, closed) = raw(port, PREFACE, Duration::from_millis(500)).await;
                (!closed && !answer.is_empty()).then_some(())
            },
        )
        .await;
    }
}

/// Failed logins are limited per name and per address for every authenticator (here
/// the native one with its own lockout off, as LDAP has none), through the login form
/// and the token request's `auth` body; the limit is a 429 with a page or JSON that
/// says so, and the log names a bounded, printable user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_issue_failed_logins_are_rate_limited_for_every_authenticator() {
    let mut cluster = ProcessCluster::new(1);
    append_config(
        &cluster.hub(1).config,
        "\n[auth]\nopen_signup = true\nallowed_failed_logins = 0\nlogin_failures_per_name = 3\nlogin_failures_per_ip = 8\n",
    );
    cluster.start_all();
    cluster.leader().await;
    let base = cluster.url(1, "");
    assert_eq!(sign_up(&base, "alice", "correct horse battery").await, 200);

    // --- three wrong passwords, then even the right one is refused for a while
    for _ in 0..3 {
        let (response, _) = log_in(&base, "alice", "wrong password", "/hub/home").await;
        assert_eq!(response.status(), 403);
    }
    let (response, _) = log_in(&base, "alice", "correct horse battery", "/hub/home").await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    let html = response.text().await.expect("html");
    assert!(html.contains("Too many failed sign-in attempts"), "{html}");
    // The token request's password check is the same door.
    let response = browser()
        .post(cluster.url(1, "/hub/api/users/alice/tokens"))
        .json(&json!({"auth": {"username": "alice", "password": "correct horse battery"}}))
        .send()
        .await
        .expect("token by password");
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], 429, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("Too many failed")),
        "{body}"
    );

    // --- one address spraying names is limited; another address is not
    let spray = |name: String, from: &'static str| {
        let url = cluster.url(1, "/hub/api/users/x/tokens");
        async move {
            browser()
                .post(url)
                .header("x-forwarded-for", from)
                .json(&json!({"auth": {"username": name, "password": "guess"}}))
                .send()
                .await
                .expect("spray")
                .status()
                .as_u16()
        }
    };
    for i in 0..8 {
        assert_eq!(spray(format!("user{i}"), "10.9.9.9").await, 403);
    }
    assert_eq!(spray("user-new".into(), "10.9.9.9").await, 429);
    assert_eq!(spray("user-new".into(), "10.9.9.10").await, 403);

    // --- a huge name with a forged log line: the log gets a bounded, printable name
    let forged = format!("{}\nFORGED failed login for admin", "n".repeat(100_000));
    let (response, _) = log_in(&base, &forged.replace('\n', "%0A"), "x", "/hub/home").await;
    assert!(matches!(response.status().as_u16(), 403 | 429));
    let logs = cluster.logs();
    assert!(
        logs.lines().all(|line| line.len() < 2_000),
        "a log line longer than 2000 bytes"
    );
    assert!(
        !logs.lines().any(|line| line.starts_with("FORGED")),
        "a forged log line"
    );
}

/// Every form that changes state and every cookie-authenticated API write needs the
/// session's XSRF token; every page is unframeable; cookies are HttpOnly and SameSite,
/// and Secure under HTTPS; every redirect parameter stays on the site; and logging out
/// stops the other tabs of that browser from getting OAuth codes (CVE-2021-41247).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xsrf_on_every_form_csp_cookie_flags_local_redirects_and_logout_ends_oauth() {
    let mut cluster = ProcessCluster::new(1);
    append_config(
        &cluster.hub(1).config,
        "\n[auth]\nopen_signup = true\nadmin_users = [\"root\"]\n\n[spawner]\nkind = \"none\"\n",
    );
    cluster.start_all();
    cluster.leader().await;
    let base = cluster.url(1, "");
    let url = |path: &str| cluster.url(1, path);
    assert_eq!(sign_up(&base, "alice", "correct horse battery").await, 200);
    assert_eq!(sign_up(&base, "root", "root password here").await, 200);
    // A forged sign-up (no _xsrf) is refused and leaves no account.
    let forged = browser()
        .post(url("/hub/signup"))
        .form(&[
            ("username", "eve"),
            ("signup_password", "eve password here"),
            ("signup_password_confirmation", "eve password here"),
        ])
        .send()
        .await
        .expect("forged signup");
    assert_eq!(forged.status(), 403);
    let (status, _) = cluster
        .request(1, Method::GET, "/hub/api/users/eve")
        .await
        .expect("eve");
    assert_eq!(status, 404);

    // --- cookies: HttpOnly and SameSite always, Secure when the browser came by HTTPS
    let client = browser();
    let page = client
        .get(url("/hub/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("login page");
    let mut https_jar = Jar(Vec::new());
    https_jar.take(page.headers());
    let xsrf = https_jar.get("_xsrf").expect("_xsrf").to_owned();
    let response = client
        .post(url("/hub/login"))
        .header("x-forwarded-proto", "https")
        .header("cookie", https_jar.header())
        .form(&[
            ("username", "alice"),
            ("password", "correct horse battery"),
            ("_xsrf", xsrf.as_str()),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 303);
    let cookies = set_cookies(response.headers());
    assert!(cookies.len() >= 3, "{cookies:?}");
    for (name, _, full) in &cookies {
        for flag in ["HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(full.contains(flag), "{name} lacks {flag}: {full}");
        }
    }
    let (_, alice) = log_in(&base, "alice", "correct horse battery", "/hub/home").await;
    let (_, root) = log_in(&base, "root", "root password here", "/hub/home").await;
    let alice_xsrf = alice.get("_xsrf").expect("session _xsrf").to_owned();
    let root_xsrf = root.get("_xsrf").expect("session _xsrf").to_owned();

    // --- every state-changing form refuses a missing or wrong _xsrf
    let post_form = |path: &str, jar: &Jar, fields: Fields| {
        let request = browser().post(url(path)).header("cookie", jar.header()).form(&fields);
        async move { request.send().await.expect("form post").status().as_u16() }
    };
    let forms: Vec<(&str, &Jar, Fields)> = vec![
        ("/hub/token", &alice, vec![("note", "forged".into())]),
        ("/hub/token/a1/revoke", &alice, vec![]),
        (
            "/hub/change-password",
            &alice,
            vec![
                ("old_password", "correct horse battery".into()),
                ("new_password", "hijacked password".into()),
                ("new_password_confirmation", "hijacked password".into()),
            ],
        ),
        (
            "/hub/change-password/alice",
            &root,
            vec![
                ("new_password", "hijacked password".into()),
                ("new_password_confirmation", "hijacked password".into()),
            ],
        ),
        ("/hub/authorize/alice", &root, vec![("action", "deauthorize".into())]),
        (
            "/hub/api/oauth2/authorize",
            &alice,
            vec![
                ("client_id", "jupyterhub-user-alice".into()),
                ("response_type", "code".into()),
            ],
        ),
    ];
    for (path, jar, fields) in forms {
        let mut wrong = fields.clone();
        wrong.push(("_xsrf", "0".repeat(32)));
        assert_eq!(post_form(path, jar, fields).await, 403, "{path} without _xsrf");
        assert_eq!(post_form(path, jar, wrong).await, 403, "{path} with a wrong _xsrf");
    }
    let (response, _) = log_in(&base, "alice", "correct horse battery", "/hub/home").await;
    assert_eq!(response.status(), 303, "the password was not changed by a forged form");

    // --- every cookie-authenticated API write refuses a missing XSRF header
    for (method, path, body) in [
        (Method::POST, "/hub/api/users/alice/tokens", json!({})),
        (Method::POST, "/hub/api/users/alice/server", json!({})),
        (Method::DELETE, "/hub/api/users/alice/server", json!({})),
        (Method::PATCH, "/hub/api/users/alice", json!({"name": "alice2"})),
        (
            Method::POST,
            "/hub/api/users/alice/activity",
            json!({"last_activity": "2020-01-01T00:00:00Z"}),
        ),
        (Method::DELETE, "/hub/api/users/alice", json!({})),
    ] {
        let status = browser()
            .request(method.clone(), url(path))
            .header("cookie", root.header())
            .json(&body)
            .send()
            .await
            .expect("api")
            .status();
        assert_eq!(status, 403, "{method} {path} with a cookie and no XSRF");
    }
    // The positive control: with the header, alice's own server starts (pending: no
    // spawner), which registers her server's OAuth client.
    let started = browser()
        .post(url("/hub/api/users/alice/server"))
        .header("cookie", alice.header())
        .header("x-xsrftoken", &alice_xsrf)
        .json(&json!({}))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), 202);

    // --- every page is unframeable
    for (path, jar) in [
        ("/hub/login", &alice),
        ("/hub/home", &alice),
        ("/hub/token", &alice),
        ("/hub/change-password", &alice),
        ("/hub/signup", &alice),
        ("/hub/admin", &root),
        ("/hub/authorize", &root),
        ("/hub/spawn-pending/alice", &alice),
        ("/hub/error/503", &alice),
        ("/hub/nothing-here", &alice),
        ("/hub/user/bob/lab", &alice),
    ] {
        let response = get_with(&url(path), jar).await;
        if response.status().is_redirection() {
            continue;
        }
        let csp = content_security_policy(&response);
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
    }

    // --- every redirect parameter stays on the site
    let evil = [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F%09%2Fevil.example",
        "%09%2F%2Fevil.example",
        "%20%2F%2Fevil.example",
        "http%3Aevil.example",
        "%2F%2F%2Fevil.example",
        "javascript%3Aalert(1)",
    ];
    for next in evil {
        let target = |response: &reqwest::Response| {
            response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let local =
            |location: &str| location.starts_with('/') && !location.starts_with("//") && !location.starts_with("/\\");
        let logged_in = get_with(&url(&format!("/hub/login?next={next}")), &alice).await;
        assert_eq!(target(&logged_in), "/hub/home", "GET /hub/login?next={next}");
        let (form, _) = log_in(&base, "alice", "correct horse battery", next).await;
        assert_eq!(target(&form), "/hub/home", "POST /hub/login?next={next}");
        let spawn = get_with(&url(&format!("/hub/spawn?next={next}")), &alice).await;
        assert!(local(&target(&spawn)), "/hub/spawn?next={next}: {}", target(&spawn));
        let out = browser()
            .get(url(&format!("/hub/logout?next={next}")))
            .send()
            .await
            .expect("logout");
        assert!(local(&target(&out)), "/hub/logout?next={next}: {}", target(&out));
    }
    let shared = get_with(&url("/hub/user-redirect//evil.example/x"), &alice).await;
    let location = shared.headers()["location"].to_str().expect("location").to_owned();
    assert!(location.starts_with("/user/alice/"), "{location}");
    // The OAuth provider redirects only to the client's registered URI.
    let elsewhere = get_with(
        &url("/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&response_type=code&redirect_uri=https%3A%2F%2Fevil.example%2Fcb"),
        &alice,
    )
    .await;
    assert_eq!(elsewhere.status(), 400);

    // --- logout ends the OAuth flow for every tab of the browser (CVE-2021-41247)
    let authorize = "/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&response_type=code&state=s";
    let tab = get_with(&url(authorize), &alice).await;
    assert_eq!(tab.status(), 302, "a code for alice's own server before logout");
    let location = tab.headers()["location"].to_str().expect("location").to_owned();
    assert!(
        location.contains("code=") && location.starts_with("/user/alice/"),
        "{location}"
    );
    let out = get_with(&url("/hub/logout"), &alice).await;
    assert!(out.status().is_redirection());
    let other_tab = get_with(&url(authorize), &alice).await;
    let location = other_tab
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with("/hub/login") && !location.contains("code="),
        "another tab got {} {location}",
        other_tab.status()
    );
    let me = get_with(&url("/hub/api/user"), &alice).await;
    assert_eq!(me.status(), 403, "the ended session's cookie works no more");
    // The admin's approval form works with its token (the control for the forged one).
    let approved = post_form(
        "/hub/authorize/alice",
        &root,
        vec![("action", "authorize".into()), ("_xsrf", root_xsrf)],
    )
    .await;
    assert!(approved == 303 || approved == 302 || approved == 200, "{approved}");
}

/// A form's fields.
type Fields = Vec<(&'static str, String)>;

/// One upstream of the WebSocket test: records every request head it gets and answers
/// an upgrade with 101, then says its name on the raw connection (the edge splices
/// bytes, so the client reads exactly whose server it reached).
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let upgrade = head.to_ascii_lowercase().contains("upgrade: websocket");
                    seen.lock().expect("heads").push(head);
                    let answer = if upgrade {
                        format!(
                            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: x\r\n\r\nthis is {name}'s server"
                        )
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len())
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
                });
            }
        });
        Recorder { port, heads, task }
    }

    fn target(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn paths(&self) -> Vec<String> {
        self.heads
            .lock()
            .expect("heads")
            .iter()
            .filter_map(|head| head.split(' ').nth(1).map(str::to_owned))
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upgrade through the edge: the status line and what followed it.
async fn upgrade(port: u16, path: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.contains("'s server") || (text.contains("\r\n\r\n") && !text.starts_with("HTTP/1.1 101")) {
            return text;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => seen.extend_from_slice(&chunk[..read]),
            _ => return text,
        }
    }
}

/// Every WebSocket upgrade to a user's route reaches that route's server and no other;
/// an upgrade to a path with no route (a user without a server, a name that merely
/// starts like another's, dot segments, a route just removed) gets the hub's answer,
/// never a 101 from somebody's server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_reach_only_their_routes_server() {
    let mut cluster = ProcessCluster::new(1);
    cluster.start_all();
    cluster.leader().await;
    let alice = Recorder::start("alice").await;
    let bob = Recorder::start("bob").await;
    assert_eq!(
        cluster.set_route(1, "/user/alice", Some(&alice.target())).await,
        Some(201)
    );
    assert_eq!(cluster.set_route(1, "/user/bob", Some(&bob.target())).await, Some(201));
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);
    eventually("both routes on the edge", Duration::from_secs(20), || async {
        let (_, routes) = cluster.edge_routes(edge).await?;
        (routes.contains_key("/user/alice") && routes.contains_key("/user/bob")).then_some(())
    })
    .await;
    let port = cluster.edges[edge].port;

    // --- each user's upgrade reaches their own server
    let answer = upgrade(port, "/user/alice/api/kernels/k1/channels").await;
    assert!(
        answer.starts_with("HTTP/1.1 101") && answer.ends_with("this is alice's server"),
        "{answer}"
    );
    let answer = upgrade(port, "/user/bob/terminals/websocket/1").await;
    assert!(
        answer.starts_with("HTTP/1.1 101") && answer.ends_with("this is bob's server"),
        "{answer}"
    );

    // --- paths with no route never reach a user's server
    for path in [
        "/user/carol/api/kernels/k1/channels",
        "/user/alicex/api/kernels/k1/channels",
        "/user/ali/api/kernels/k1/channels",
        "/user/carol/../alice/api/kernels/k1/channels",
        "/user/./alice/api/kernels/k1/channels",
        "/user/carol/%2e%2e/alice/api/kernels/k1/channels",
        "/users/alice/api/kernels/k1/channels",
    ] {
        let answer = upgrade(port, path).await;
        assert!(!answer.starts_with("HTTP/1.1 101"), "{path}: {answer}");
        assert!(!answer.contains("'s server"), "{path}: {answer}");
    }
    // Routes are keyed by decoded paths (as configurable-http-proxy's): an encoded
    // slash names alice's route, and so reaches alice's server, nobody else's.
    let answer = upgrade(port, "/user%2falice/api/kernels/k1/channels").await;
    assert!(answer.ends_with("this is alice's server"), "{answer}");

    // --- a removed route is gone for upgrades too
    assert_eq!(cluster.set_route(1, "/user/bob", None).await, Some(204));
    eventually("bob's route to leave the edge", Duration::from_secs(20), || async {
        let (_, routes) = cluster.edge_routes(edge).await?;
        (!routes.contains_key("/user/bob")).then_some(())
    })
    .await;
    let answer = upgrade(port, "/user/bob/terminals/websocket/1").await;
    assert!(!answer.starts_with("HTTP/1.1 101"), "{answer}");

    let alice_paths = alice.paths();
    assert!(
        alice_paths
            .iter()
            .all(|p| p.starts_with("/user/alice/") || p.starts_with("/user%2falice/")),
        "alice's server saw {alice_paths:?}"
    );
    assert_eq!(alice_paths.len(), 2, "{alice_paths:?}");
    let bob_paths = bob.paths();
    assert_eq!(
        bob_paths,
        ["/user/bob/terminals/websocket/1"],
        "bob's server saw {bob_paths:?}"
    );
}

/// Every token and password the test makes — API tokens, a password-minted token, the
/// native accounts' passwords, the login session's secret, tokens sent through an edge
/// in headers and in the query — is nowhere in the clear: not in the replicas' RocksDB
/// files and snapshots, not in a `ganymede backup`, not in hub or edge logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_password_in_the_clear_in_data_backups_or_logs() {
    let mut cluster = ProcessCluster::new(3);
    append_config(
        &cluster.hub(1).config,
        "\n[auth]\nopen_signup = true\n\n[raft]\nsnapshot_logs_since_last = 5\nlogs_kept_after_snapshot = 2\n",
    );
    for node in 2..=3 {
        append_config(
            &cluster.hub(node).config,
            "\n[auth]\nopen_signup = true\n\n[raft]\nsnapshot_logs_since_last = 5\nlogs_kept_after_snapshot = 2\n",
        );
    }
    cluster.start_all();
    cluster.leader().await;
    let edge = cluster.add_edge(&[]);
    cluster.start_edge(edge);
    let mut secrets: Vec<String> = vec![ADMIN_TOKEN.to_owned()];

    // --- passwords, sessions and tokens of every kind
    let password = "plaintext password 7f3a9c";
    assert_eq!(sign_up(&cluster.url(2, ""), "alice", password).await, 200);
    secrets.push(password.to_owned());
    let (response, jar) = log_in(&cluster.url(3, ""), "alice", password, "/hub/home").await;
    assert_eq!(response.status(), 303);
    let login_cookie = jar.get("jupyterhub-hub-login").expect("login cookie").to_owned();
    // `v1|<hex of the session secret>|<issued>|<mac>`: the secret itself, in hex and raw.
    let secret_hex = login_cookie.split('|').nth(1).expect("cookie value").to_owned();
    secrets.push(secret_hex.clone());
    if let Some(raw) = (0..secret_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    {
        secrets.push(raw);
    }
    let minted = browser()
        .post(cluster.url(1, "/hub/api/users/alice/tokens"))
        .json(&json!({"auth": {"username": "alice", "password": password}, "note": "by password"}))
        .send()
        .await
        .expect("token by password");
    assert_eq!(minted.status(), 201);
    let minted: Value = minted.json().await.expect("json");
    secrets.push(minted["token"].as_str().expect("token").to_owned());
    for (node, user) in [(1, "bob"), (2, "carol"), (3, "dave")] {
        cluster
            .send(node, Method::POST, &format!("/hub/api/users/{user}"), None)
            .await
            .expect("create user");
        let (status, token) = cluster
            .send(
                node,
                Method::POST,
                &format!("/hub/api/users/{user}/tokens"),
                Some(json!({})),
            )
            .await
            .expect("token");
        assert_eq!(status, 201, "{token}");
        secrets.push(token["token"].as_str().expect("token").to_owned());
    }
    // Tokens through the edge, in a header and in the query (clients still do both).
    for secret in &secrets[secrets.len() - 3..] {
        let _ = reqwest::Client::new()
            .get(cluster.edge_url(edge, "/hub/api/user"))
            .header("authorization", format!("token {secret}"))
            .send()
            .await;
        let _ = reqwest::Client::new()
            .get(cluster.edge_url(edge, &format!("/hub/api/user?token={secret}")))
            .send()
            .await;
    }
    // A failed login with a password as the user name ends up in a log line: that is
    // the user's mistake to make, not ours, so it is not among the secrets.

    // --- a backup, and enough writes for snapshots on every replica
    for i in 0..12 {
        cluster
            .send(1, Method::POST, &format!("/hub/api/users/filler{i}"), None)
            .await
            .expect("filler");
    }
    let backup = cluster.dir.path().join("cluster.backup");
    let output = tokio::process::Command::new(ganymede_bin())
        .args(["backup", "--url", &cluster.url(2, ""), "--out"])
        .arg(&backup)
        .env("GANYMEDE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("GANYMEDE_HUB_URL")
        .output()
        .await
        .expect("ganymede backup");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for node in 1..=3 {
        eventually("a snapshot on every replica", Duration::from_secs(20), || async {
            let page = cluster.hub_metrics(node).await?;
            let index = metric_sum(&page, "ganymede_raft_snapshot_index", &[])?;
            (index > 0.0).then_some(())
        })
        .await;
    }

    // --- scan everything the cluster wrote. Snapshots live in RocksDB, whose table
    // files are LZ4-compressed: the backup (the state's canonical JSON, the snapshot's
    // content) is what shows the decoded rows; the raw files show the WAL and the log.
    let mut files = Vec::new();
    for node in 1..=3 {
        files.extend(walk(&cluster.data_dir(node)));
    }
    files.push(backup.clone());
    files.extend(cluster.hubs.iter().map(|hub| hub.log.clone()));
    files.extend(cluster.edges.iter().map(|edge| edge.log.clone()));
    let backup_text = std::fs::read_to_string(&backup).expect("backup");
    assert!(backup_text.contains("alice"), "the backup holds the state");
    let mut scanned = 0;
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        scanned += bytes.len();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} holds a secret in the clear ({}…)",
                file.display(),
                &secret[..4.min(secret.len())]
            );
        }
    }
    assert!(scanned > 100_000, "only {scanned} bytes scanned");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}
