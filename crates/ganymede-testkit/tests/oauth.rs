//! The hub as an OAuth2 provider on a 3-replica cluster: a server's client is registered
//! at spawn and dropped at stop; codes are issued on one replica and redeemed on
//! another, once, with PKCE; access tokens carry the browser's session and die with it.
//! Then the real `jupyterhub-singleuser` (PyPI) logs a browser in through the flow.

use std::process::Stdio;
use std::time::Duration;

use ganymede_model::{Command, ServerPhase};
use ganymede_testkit::browser::{Jar, browser, get_with, log_in};
use ganymede_testkit::{TestCluster, Timings, eventually, test_settings, venv_bin};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);
const VERIFIER: &str = "ganymede-pkce-verifier_0123456789.abcdefghijk~";
const CHALLENGE: &str = "Qo-cbpZZIfaKNFT0Z-FAvuQAr8HgB1ma5NXgh0atu58";
const CALLBACK: &str = "/user/alice/oauth_callback";

fn authorize_url(base: &str, client_id: &str, redirect_uri: &str, extra: &str) -> String {
    format!(
        "{base}/hub/api/oauth2/authorize?client_id={client_id}&redirect_uri={}&response_type=code&state=s7{extra}",
        redirect_uri.replace('/', "%2F")
    )
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The `code` of a redirect to the client's callback.
fn code_of(location: &str) -> String {
    location
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {location}"))
        .to_owned()
}

async fn redeem(base: &str, form: &[(&str, String)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = browser().post(format!("{base}/hub/api/oauth2/token")).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Starts `user`'s default server through replica 1's API and returns its API token,
/// which only that replica holds.
async fn start_server(cluster: &TestCluster, user: &str) -> (u64, String) {
    let (status, reply) = cluster
        .hub(1)
        .api
        .post(&format!("/hub/api/users/{user}/server"), json!({}))
        .await
        .expect("start");
    assert_eq!(status, 202, "{reply}");
    let spawn_id = cluster
        .hub(1)
        .raft
        .read_local(|state| state.users[user].servers[""].spawn_id)
        .expect("a spawn id");
    let token = cluster
        .hub(1)
        .hub
        .server_token(user, "", spawn_id)
        .expect("the spawning replica keeps the server's token");
    (spawn_id, token.expose().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_codes_are_issued_once_redeemed_anywhere_and_die_with_the_session() {
    let cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    let base = |node: u64| cluster.hub(node).api.base.clone();
    let admin = cluster.hub(1).api.clone();
    let (status, _) = admin
        .post("/hub/api/users", json!({"usernames": ["alice", "bob"]}))
        .await
        .expect("users");
    assert_eq!(status, 201);
    let (spawn_id, server_token) = start_server(&cluster, "alice").await;

    // The server's token is what JupyterHub gives it: its activity and access, no more.
    let server_api = cluster.hub(2).api.with_token(Some(&server_token));
    let (status, me) = eventually("the server token works on replica 2", PATIENCE, || async {
        let (status, me) = server_api.get("/hub/api/user").await.ok()?;
        (status == 200).then_some((status, me))
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "alice");
    let scopes: Vec<&str> = me["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(scopes.contains(&"access:servers!server=alice/"), "{scopes:?}");
    assert!(scopes.contains(&"users:activity!user=alice"), "{scopes:?}");
    assert!(
        !scopes.iter().any(|s| s.starts_with("admin") || s.starts_with("tokens")),
        "{scopes:?}"
    );

    // Not logged in: to the login page, coming back here afterwards.
    let anonymous = browser()
        .get(authorize_url(&base(1), "jupyterhub-user-alice", CALLBACK, ""))
        .send()
        .await
        .expect("authorize");
    assert!(anonymous.status().is_redirection());
    let login = location(&anonymous);
    assert!(
        login.starts_with("/hub/login?next=/hub/api/oauth2/authorize%3Fclient_id%3Djupyterhub-user-alice"),
        "{login}"
    );

    let (_, alice) = log_in(&base(1), "alice", "x", "/hub/home").await;
    let session_id = alice.get("jupyterhub-session-id").expect("session id").to_owned();

    // Bad client, bad redirect URI, PKCE "plain": refused, never redirected elsewhere.
    let unknown = get_with(&authorize_url(&base(1), "nobody", CALLBACK, ""), &alice).await;
    assert_eq!(unknown.status(), 400);
    let elsewhere = get_with(
        &authorize_url(&base(1), "jupyterhub-user-alice", "https://evil.example/cb", ""),
        &alice,
    )
    .await;
    assert_eq!(elsewhere.status(), 400);
    let plain = get_with(
        &authorize_url(
            &base(1),
            "jupyterhub-user-alice",
            CALLBACK,
            "&code_challenge=abcdefghijabcdefghijabcdefghijabcdefghij123&code_challenge_method=plain",
        ),
        &alice,
    )
    .await;
    assert_eq!(plain.status(), 302);
    assert!(location(&plain).starts_with("/user/alice/oauth_callback?error=invalid_request"));

    // Bob may not use alice's server.
    let (_, bob) = log_in(&base(2), "bob", "x", "/hub/home").await;
    let denied = get_with(&authorize_url(&base(2), "jupyterhub-user-alice", CALLBACK, ""), &bob).await;
    assert_eq!(denied.status(), 403);

    // Alice, on her own server: no consent page, a code for the callback.
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let granted = get_with(
        &authorize_url(&base(1), "jupyterhub-user-alice", CALLBACK, &pkce),
        &alice,
    )
    .await;
    assert_eq!(granted.status(), 302);
    let target = location(&granted);
    assert!(target.starts_with("/user/alice/oauth_callback?code="), "{target}");
    assert!(target.ends_with("&state=s7"), "{target}");
    let code = code_of(&target);
    assert_eq!(code.len(), 30);

    // Redeemed on replica 3: wrong secret, wrong verifier and no verifier fail first.
    let form = |secret: &str, verifier: Option<&str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", "jupyterhub-user-alice".to_owned()),
            ("client_secret", secret.to_owned()),
            ("redirect_uri", CALLBACK.to_owned()),
            ("code", code.clone()),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier.to_owned()));
        }
        form
    };
    let (status, error) = redeem(&base(3), &form("wrong-secret", Some(VERIFIER)), None).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (401, Some("invalid_client")),
        "{error}"
    );
    let (status, error) = redeem(&base(3), &form(&server_token, Some(&"x".repeat(43))), None).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant")),
        "{error}"
    );
    let (status, error) = redeem(&base(3), &form(&server_token, None), None).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant")),
        "{error}"
    );
    let good = form(&server_token, Some(VERIFIER));
    let (status, granted) = redeem(&base(3), &good, None).await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], 1_209_600);
    let scope = granted["scope"].as_str().expect("scope");
    assert!(scope.contains("access:servers!server=alice/"), "{scope}");
    let access_token = granted["access_token"].as_str().expect("token").to_owned();
    assert_eq!(access_token.len(), 30);
    // On the audit record the client that redeemed the code issued the token.
    eventually("the token's issue on replica 1's audit record", PATIENCE, || async {
        let (status, record) = admin.get("/hub/api/ganymede/events?since=0&limit=1000").await.ok()?;
        assert_eq!(status, 200, "{record}");
        let issued_by_client = record["events"]
            .as_array()?
            .iter()
            .filter(|event| event["action"] == "token.issue" && event["actor"] == "oauth_client:jupyterhub-user-alice")
            .count();
        (issued_by_client == 1).then_some(())
    })
    .await;
    let (status, error) = redeem(&base(2), &good, None).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code works once: {error}"
    );

    // The token identifies alice, with her browser's session, on any replica.
    let user_api = cluster.hub(2).api.with_token(Some(&access_token));
    let (status, me) = user_api.get("/hub/api/user").await.expect("user");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "user");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["session_id"], session_id.as_str());
    let scopes: Vec<&str> = me["scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(scopes.contains(&"access:servers!server=alice/"), "{scopes:?}");
    let (_, tokens) = admin.get("/hub/api/users/alice/tokens").await.expect("tokens");
    let oauth_token = tokens["api_tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["session_id"] == session_id.as_str())
        .expect("the OAuth token is listed")
        .clone();
    assert_eq!(oauth_token["oauth_client"], "Server at /user/alice/");

    // Logging out (on replica 2) revokes the session's OAuth tokens everywhere
    // (CVE-2021-41247); the server's own token lives on.
    let out = get_with(&format!("{}/hub/logout", base(2)), &alice).await;
    assert!(out.status().is_redirection());
    for node in 1..=3 {
        let api = cluster.hub(node).api.with_token(Some(&access_token));
        eventually("the OAuth token is refused after logout", PATIENCE, || async {
            (api.get("/hub/api/user").await.ok()?.0 == 403).then_some(())
        })
        .await;
    }
    assert_eq!(server_api.get("/hub/api/user").await.expect("user").0, 200);

    // A stopped server loses its client and token: no more codes for it.
    cluster
        .hub(1)
        .raft
        .propose(Command::MarkServerFailed {
            user: "alice".into(),
            server: "".into(),
            spawn_id,
            reason: "test".into(),
            at: 1,
        })
        .await
        .expect("stop");
    let (_, alice_again) = log_in(&base(1), "alice", "x", "/hub/home").await;
    let gone = get_with(
        &authorize_url(&base(1), "jupyterhub-user-alice", CALLBACK, ""),
        &alice_again,
    )
    .await;
    assert_eq!(gone.status(), 400);
    eventually("the server token is revoked", PATIENCE, || async {
        (server_api.get("/hub/api/user").await.ok()?.0 == 403).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_a_service_client_asks_for_consent_and_authenticates_with_basic_auth() {
    let cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    let base = |node: u64| cluster.hub(node).api.base.clone();
    let admin = cluster.hub(1).api.clone();
    let (status, reply) = admin
        .post(
            "/hub/api/services/grader",
            json!({
                "api_token": "grader-secret-token",
                "url": "http://127.0.0.1:1/",
                "oauth_client_allowed_scopes": ["read:users:groups!user"],
            }),
        )
        .await
        .expect("service");
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = admin
        .post(
            "/hub/api/services/bad",
            json!({"api_token": "bad-service-token", "url": "http://x/", "oauth_client_allowed_scopes": ["no:such"]}),
        )
        .await
        .expect("service");
    assert_eq!(status, 400, "{reply}");
    let (status, _) = admin
        .post("/hub/api/users/carol", json!({"admin": true}))
        .await
        .expect("carol");
    assert_eq!(status, 201);
    let callback = "/services/grader/oauth_callback";
    let (_, carol) = log_in(&base(2), "carol", "x", "/hub/home").await;

    // Not carol's server: the consent page, whose form carries her XSRF token.
    let consent = get_with(&authorize_url(&base(2), "service-grader", callback, ""), &carol).await;
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.expect("html");
    assert!(
        html.contains("Authorize access") && html.contains("access:services!service=grader"),
        "{html}"
    );
    let xsrf = carol.get("_xsrf").expect("xsrf").to_owned();
    assert!(html.contains(&format!("name=\"_xsrf\" value=\"{xsrf}\"")), "{html}");
    let scope = "access:services!service=grader read:users:groups!user=carol read:users:name!user=carol";
    let post = |xsrf: String| {
        let jar_header = carol.header();
        let url = format!("{}/hub/api/oauth2/authorize", base(2));
        async move {
            browser()
                .post(url)
                .header("cookie", jar_header)
                .form(&[
                    ("_xsrf", xsrf.as_str()),
                    ("client_id", "service-grader"),
                    ("redirect_uri", callback),
                    ("response_type", "code"),
                    ("scope", scope),
                    ("state", "s7"),
                ])
                .send()
                .await
                .expect("consent")
        }
    };
    assert_eq!(
        post("forged".into()).await.status(),
        403,
        "the form needs the XSRF token"
    );
    let approved = post(xsrf).await;
    assert_eq!(approved.status(), 302);
    let code = code_of(&location(&approved));
    let (status, granted) = redeem(
        &base(3),
        &[
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", callback.to_owned()),
        ],
        Some(("service-grader", "grader-secret-token")),
    )
    .await;
    assert_eq!(status, 200, "{granted}");
    let token = granted["access_token"].as_str().expect("token");
    let (status, me) = cluster
        .hub(1)
        .api
        .with_token(Some(token))
        .get("/hub/api/user")
        .await
        .expect("user");
    assert_eq!(status, 200);
    assert_eq!(me["name"], "carol");
    assert_eq!(me["groups"], json!([]), "read:users:groups was granted");

    // A scope the client may not ask for is refused back to the client.
    let greedy = get_with(
        &authorize_url(&base(2), "service-grader", callback, "&scope=admin:users"),
        &carol,
    )
    .await;
    assert_eq!(greedy.status(), 302);
    assert!(
        location(&greedy).contains("error=invalid_scope"),
        "{}",
        location(&greedy)
    );

    // Deleting the service deletes its client and what it issued.
    let (status, _) = admin.delete("/hub/api/services/grader").await.expect("delete");
    assert_eq!(status, 200);
    eventually("the service's OAuth token is revoked", PATIENCE, || async {
        (cluster
            .hub(3)
            .api
            .with_token(Some(token))
            .get("/hub/api/user")
            .await
            .ok()?
            .0
            == 403)
            .then_some(())
    })
    .await;
}

/// Follows a browser's redirects from `url`, sending `/hub/…` to the hub and `/user/…`
/// to the single-user server (what the edge does), keeping cookies in `jar`.
async fn browse(url: &str, hub: &str, server: &str, jar: &mut Jar) -> reqwest::Response {
    let mut url = url.to_owned();
    for _ in 0..10 {
        let response = get_with(&url, jar).await;
        jar.take(response.headers());
        if !response.status().is_redirection() {
            return response;
        }
        let next = location(&response);
        url = if next.starts_with("http") {
            next
        } else if next.starts_with("/hub/") {
            format!("{hub}{next}")
        } else {
            format!("{server}{next}")
        };
    }
    panic!("too many redirects, last at {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_the_real_jupyterhub_singleuser_logs_a_browser_in_through_oauth() {
    let bin = venv_bin(&["jupyterhub-singleuser"]);
    a_single_user_server_logs_a_browser_in(
        &bin.join("jupyterhub-singleuser"),
        &["--ServerApp.allow_root=True", "--ServerApp.log_level=INFO"],
        "JupyterLab",
    )
    .await;
}

/// The test single-user server (benchmarks and tests start hundreds) speaks the same
/// OAuth client flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t31_the_test_single_user_server_logs_a_browser_in_through_oauth() {
    a_single_user_server_logs_a_browser_in(
        &ganymede_testkit::process::test_singleuser_bin(),
        &[],
        "<p id=\"who\">alice</p>",
    )
    .await;
}

/// Runs `program` as alice's server (this test is the spawner), logs a browser in at
/// the hub and opens her server, which sends it through the hub's OAuth flow and must
/// then show `page_says`; the token carries the session, activity reaches the hub, and
/// logging out revokes the token.
async fn a_single_user_server_logs_a_browser_in(program: &std::path::Path, args: &[&str], page_says: &str) {
    let bin = program.parent().expect("the program's directory").to_owned();
    let cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    let admin = cluster.hub(1).api.clone();
    let (status, _) = admin.post("/hub/api/users/alice", json!({})).await.expect("alice");
    assert_eq!(status, 201);
    let (spawn_id, server_token) = start_server(&cluster, "alice").await;

    // This test is the spawner: JupyterHub's environment, the server's API on replica 3.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        listener.local_addr().expect("addr").port()
    };
    let work = tempfile::tempdir().expect("workdir");
    let api_url = format!("{}/hub/api", cluster.hub(3).api.base);
    let server_url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(work.path().join("singleuser.log")).expect("log");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(work.path())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", work.path())
        .env("JUPYTER_RUNTIME_DIR", work.path().join("runtime"))
        .env("JUPYTERHUB_API_TOKEN", &server_token)
        .env("JUPYTERHUB_CLIENT_ID", "jupyterhub-user-alice")
        .env("JUPYTERHUB_API_URL", &api_url)
        .env("JUPYTERHUB_ACTIVITY_URL", format!("{api_url}/users/alice/activity"))
        .env("JUPYTERHUB_BASE_URL", "/")
        .env("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
        .env("JUPYTERHUB_SERVICE_URL", format!("{server_url}/user/alice/"))
        .env("JUPYTERHUB_USER", "alice")
        .env("JUPYTERHUB_SERVER_NAME", "")
        .env("JUPYTERHUB_OAUTH_CALLBACK_URL", CALLBACK)
        .env(
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
            r#"["access:servers!server=alice/", "access:servers!user=alice"]"#,
        )
        .env("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", "[]")
        .env("JUPYTERHUB_HOST", "")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("jupyterhub-singleuser starts");
    let probe = browser();
    let ready = async {
        eventually("jupyterhub-singleuser answers", PATIENCE, || async {
            let response = probe.get(format!("{server_url}/user/alice/api")).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await
    };
    tokio::select! {
        () = ready => {}
        status = child.wait() => {
            let log = std::fs::read_to_string(work.path().join("singleuser.log")).unwrap_or_default();
            panic!("jupyterhub-singleuser exited with {status:?}:\n{log}");
        }
    }
    cluster
        .hub(1)
        .raft
        .propose(Command::MarkServerReady {
            user: "alice".into(),
            server: "".into(),
            spawn_id,
            url: server_url.clone(),
            at: 1,
        })
        .await
        .expect("ready");

    // The browser logs in on replica 2 and opens her server.
    let hub = cluster.hub(2).api.base.clone();
    let (_, mut jar) = log_in(&hub, "alice", "x", "/hub/home").await;
    let session_id = jar.get("jupyterhub-session-id").expect("session").to_owned();
    let lab = browse(&format!("{server_url}/user/alice/lab"), &hub, &server_url, &mut jar).await;
    let status = lab.status();
    let html = lab.text().await.unwrap_or_default();
    if status != 200 {
        let log = std::fs::read_to_string(work.path().join("singleuser.log")).unwrap_or_default();
        panic!("JupyterLab answered {status}: {html}\n--- singleuser log:\n{log}");
    }
    assert!(html.contains(page_says), "{html}");
    assert!(
        jar.get("jupyterhub-user-alice").is_some(),
        "the server set its own login cookie"
    );
    let has_session_token = |session_id: String| {
        cluster.hub(3).raft.read_local(move |state| {
            state.tokens.values().any(|token| {
                token.session_id.as_deref() == Some(&session_id)
                    && token.oauth_client.as_deref() == Some("jupyterhub-user-alice")
            })
        })
    };
    assert!(
        has_session_token(session_id.clone()),
        "the OAuth token carries the session"
    );

    // The server's activity reports reach the hub with its token.
    eventually("alice's server reported activity", PATIENCE, || async {
        let (_, user) = admin.get("/hub/api/users/alice").await.ok()?;
        user["servers"][""]["last_activity"].is_string().then_some(())
    })
    .await;

    // Logout at the hub ends the OAuth token.
    let out = get_with(&format!("{hub}/hub/logout"), &jar).await;
    assert!(out.status().is_redirection());
    eventually("the OAuth token is revoked", PATIENCE, || async {
        (!has_session_token(session_id.clone())).then_some(())
    })
    .await;

    let _ = child.start_kill();
    let _ = child.wait().await;
    cluster
        .hub(1)
        .raft
        .propose(Command::MarkServerStopped {
            user: "alice".into(),
            server: "".into(),
            spawn_id,
            at: 2,
        })
        .await
        .expect("stopped");
    let phase = cluster
        .hub(1)
        .raft
        .read_local(|state| state.users["alice"].servers[""].phase);
    assert_eq!(phase, ServerPhase::Stopped);
}
