//! Browser sessions on a 3-replica cluster: log in on one replica, use the cookie on the
//! others, log out on a third and the cookie is refused everywhere. XSRF on forms and on
//! cookie-authenticated API calls, no open redirect, the dummy authenticator's shared
//! password, allowed and admin users.

use std::time::Duration;

use ganymede_hub::{AuthSettings, Authenticator};
use ganymede_testkit::browser::{browser, get_with, log_in, set_cookies};
use ganymede_testkit::{TestCluster, Timings, eventually, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_login_on_one_replica_works_on_all_and_logout_ends_it_everywhere() {
    let mut cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    // Replicas are configured alike: restart them with the shared password and lists.
    cluster.auth = AuthSettings {
        authenticator: Authenticator::Dummy {
            password: Some("open-sesame".into()),
        },
        allowed_users: ["alice".to_owned()].into(),
        admin_users: ["root".to_owned()].into(),
    };
    for node in 1..=3 {
        cluster.kill(node).await;
        cluster.start_node(node).await;
    }
    for node in 1..=3 {
        cluster.wait_until_serving(node).await;
    }
    let base = |node: u64| cluster.hub(node).api.base.clone();

    // --- the login page: a form with XSRF, never framed
    let page = browser()
        .get(format!("{}/hub/login", base(1)))
        .send()
        .await
        .expect("page");
    let csp = page.headers().get("content-security-policy").cloned();
    assert!(csp.is_some_and(|v| v.to_str().unwrap_or_default().contains("frame-ancestors 'none'")));
    let xsrf_cookie = set_cookies(page.headers())
        .into_iter()
        .find(|(n, _, _)| n == "_xsrf")
        .expect("_xsrf set");
    assert!(
        xsrf_cookie.2.contains("Path=/hub/") && xsrf_cookie.2.contains("HttpOnly"),
        "{}",
        xsrf_cookie.2
    );

    // --- error pages: HTML with the status (CHP's error target), also for unknown pages
    for (path, status) in [
        ("/hub/error/503", 503),
        ("/hub/error/404", 404),
        ("/hub/error/x", 404),
        ("/hub/nothing-here", 404),
    ] {
        let response = browser()
            .get(format!("{}{path}", base(2)))
            .send()
            .await
            .expect("error page");
        assert_eq!(response.status(), status, "{path}");
        assert!(
            response
                .text()
                .await
                .expect("html")
                .contains(&format!("<h1>{status} :")),
            "{path}"
        );
    }
    let report = browser()
        .post(format!("{}/hub/security/csp-report", base(2)))
        .body("{}")
        .send()
        .await
        .expect("csp report");
    assert_eq!(report.status(), 204);

    // --- a forged form (no or wrong _xsrf) is refused
    let forged = browser()
        .post(format!("{}/hub/login", base(1)))
        .form(&[("username", "alice"), ("password", "open-sesame"), ("_xsrf", "x")])
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 403);
    // --- bad password, user not allowed: a clear page and 403
    let (response, _) = log_in(&base(1), "alice", "wrong", "/hub/home").await;
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .expect("html")
            .contains("Invalid username or password")
    );
    let (response, _) = log_in(&base(1), "mallory", "open-sesame", "/hub/home").await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.expect("html").contains("not allowed"));
    let long_name = "x".repeat(5000);
    let (response, _) = log_in(&base(1), &long_name, "wrong", "/hub/home").await;
    assert_eq!(response.status(), 403);

    // --- log in on replica 1: cookies as JupyterHub sets them, redirect to next only if local
    let (response, jar) = log_in(&base(1), "Alice", "open-sesame", "%2Fuser%2Falice%2Flab").await;
    assert_eq!(response.status(), 303, "a redirect after the form post");
    assert_eq!(response.headers()["location"], "/user/alice/lab");
    let sets = set_cookies(response.headers());
    let login_cookie = sets
        .iter()
        .find(|(n, _, _)| n == "jupyterhub-hub-login")
        .expect("login cookie");
    assert!(login_cookie.2.contains("Path=/hub/") && login_cookie.2.contains("HttpOnly"));
    let session_cookie = sets
        .iter()
        .find(|(n, _, _)| n == "jupyterhub-session-id")
        .expect("session id");
    assert!(session_cookie.2.contains("Path=/;") || session_cookie.2.ends_with("Path=/"));
    for next in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
    ] {
        let (response, _) = log_in(&base(1), "alice", "open-sesame", next).await;
        assert_eq!(
            response.headers()["location"],
            "/hub/home",
            "next={next} must not leave the site"
        );
    }

    // --- the cookie works on replicas 2 and 3
    for node in [2, 3] {
        let home = get_with(&format!("{}/hub/home", base(node)), &jar).await;
        assert_eq!(home.status(), 200, "replica {node}");
        assert!(
            home.text()
                .await
                .expect("html")
                .contains("Signed in as <strong>alice</strong>")
        );
    }
    // --- a stopped server's URL reaching the hub: 424, JSON for API calls, a page otherwise
    let stopped = get_with(&format!("{}/hub/user/alice/api/status", base(2)), &jar).await;
    assert_eq!(stopped.status(), 424);
    let body: serde_json::Value = stopped.json().await.expect("json");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("JupyterHub server no longer running at /user/alice/api/status")
            && message.contains("/hub/spawn/alice"),
        "{body}"
    );
    let stopped = get_with(&format!("{}/hub/user/alice/lab", base(3)), &jar).await;
    assert_eq!(stopped.status(), 424);
    assert!(
        stopped
            .text()
            .await
            .expect("html")
            .contains("href=\"/hub/spawn/alice?next=")
    );
    let fell_through = browser()
        .get(format!("{}/user/alice/api/status?x=1", base(1)))
        .send()
        .await
        .expect("no route");
    assert_eq!(fell_through.headers()["location"], "/hub/user/alice/api/status?x=1");
    let anonymous = browser()
        .get(format!("{}/hub/user/alice/lab", base(1)))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.headers()["location"], "/hub/login?next=/hub/user/alice/lab");
    let shared = get_with(&format!("{}/hub/user-redirect/tree/notes.ipynb", base(1)), &jar).await;
    assert_eq!(shared.headers()["location"], "/user/alice/tree/notes.ipynb");

    // --- cookie-authenticated API calls: XSRF as JupyterHub checks it
    let api = |node: u64, path: &str| format!("{}/hub/api{path}", base(node));
    let me = get_with(&api(2, "/user"), &jar).await;
    assert_eq!(me.status(), 200, "a plain GET (no Sec-Fetch-Mode) needs no XSRF");
    let me: serde_json::Value = me.json().await.expect("json");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["session_id"].as_str(), jar.get("jupyterhub-session-id"));
    assert!(me["token_id"].is_null());
    let cors = browser()
        .get(api(3, "/user"))
        .header("cookie", jar.header())
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .expect("cors");
    assert_eq!(cors.status(), 403);
    let body: serde_json::Value = cors.json().await.expect("json");
    assert_eq!(body["message"], "'_xsrf' argument missing from GET");
    let xsrf = jar.get("_xsrf").expect("session _xsrf").to_owned();
    let with_xsrf = browser()
        .get(api(3, "/user"))
        .header("cookie", jar.header())
        .header("sec-fetch-mode", "cors")
        .header("x-xsrftoken", &xsrf)
        .send()
        .await
        .expect("cors+xsrf");
    assert_eq!(with_xsrf.status(), 200);
    let start = browser()
        .post(api(2, "/users/alice/server"))
        .header("cookie", jar.header())
        .header("x-xsrftoken", &xsrf)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 202, "alice may start her server from the browser");
    // --- the spawn pages: a pending server shows a progress bar fed by the event stream
    let spawn = get_with(&format!("{}/hub/spawn", base(1)), &jar).await;
    assert_eq!(spawn.headers()["location"], "/hub/spawn-pending/alice");
    let pending = get_with(&format!("{}/hub/spawn-pending/alice", base(3)), &jar).await;
    assert_eq!(pending.status(), 200);
    let html = pending.text().await.expect("html");
    let progress_url = html
        .split("data-progress-url=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a progress URL on the page")
        .replace("&amp;", "&");
    assert!(
        progress_url.starts_with("/hub/api/users/alice/server/progress?_xsrf="),
        "{progress_url}"
    );
    let mut stream = browser()
        .get(format!("{}{progress_url}", base(2)))
        .header("cookie", jar.header())
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .expect("event stream");
    assert_eq!(stream.status(), 200, "EventSource with the page's XSRF token");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("an event in time")
        .expect("chunk")
        .expect("data");
    assert!(String::from_utf8_lossy(&first).contains("Server requested"));
    drop(stream);

    let forged = browser()
        .post(api(2, "/users/alice/server"))
        .header("cookie", jar.header())
        .header("x-xsrftoken", &xsrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .expect("form post");
    assert_eq!(forged.status(), 403, "a form content type drops the cookie user");
    let no_xsrf = browser()
        .delete(api(2, "/users/alice/server"))
        .header("cookie", jar.header())
        .send()
        .await
        .expect("delete");
    assert_eq!(no_xsrf.status(), 403);

    // --- a token for a password, no other credentials (as JupyterHub's `auth` body)
    let tokens = api(1, "/users/alice/tokens");
    let minted = browser()
        .post(&tokens)
        .json(&serde_json::json!({"auth": {"username": "alice", "password": "open-sesame"}, "note": "cli"}))
        .send()
        .await
        .expect("token by password");
    assert_eq!(minted.status(), 201);
    let minted: serde_json::Value = minted.json().await.expect("json");
    assert_eq!(minted["user"], "alice");
    for auth in [
        serde_json::json!({"username": "alice", "password": "nope"}),
        serde_json::json!({"username": "mallory", "password": "open-sesame"}),
    ] {
        let refused = browser()
            .post(&tokens)
            .json(&serde_json::json!({ "auth": auth }))
            .send()
            .await
            .expect("refused");
        assert!(
            matches!(refused.status().as_u16(), 403 | 404),
            "{auth}: {}",
            refused.status()
        );
    }

    // --- the token page: create (shown once), list, revoke, all with the session's _xsrf
    let page = get_with(&format!("{}/hub/token", base(1)), &jar).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!("name=\"_xsrf\" value=\"{xsrf}\"")),
        "the page's forms carry the session's _xsrf"
    );
    let post_form = |url: String, fields: Vec<(&'static str, String)>| {
        let cookies = jar.header();
        async move {
            browser()
                .post(url)
                .header("cookie", cookies)
                .form(&fields)
                .send()
                .await
                .expect("form post")
        }
    };
    let forged = post_form(
        format!("{}/hub/token", base(2)),
        vec![("_xsrf", "nope".into()), ("note", "evil".into())],
    )
    .await;
    assert_eq!(forged.status(), 403);
    let created = post_form(
        format!("{}/hub/token", base(2)),
        vec![
            ("_xsrf", xsrf.clone()),
            ("note", "laptop <script>".into()),
            ("expires_in", "3600".into()),
        ],
    )
    .await;
    assert_eq!(created.status(), 200);
    let html = created.text().await.expect("html");
    assert!(html.contains("laptop &lt;script&gt;"), "notes are escaped");
    let secret = html
        .split("<pre id=\"token-value\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new token, once")
        .to_owned();
    let with_token = cluster.hub(3).api.with_token(Some(&secret));
    let (status, me) = with_token.get("/hub/api/user").await.expect("whoami");
    assert_eq!((status, me["name"].as_str()), (200, Some("alice")));
    let id = me["token_id"].as_str().expect("token id").to_owned();
    let revoked = post_form(
        format!("{}/hub/token/{id}/revoke", base(1)),
        vec![("_xsrf", xsrf.clone())],
    )
    .await;
    assert_eq!(revoked.headers()["location"], "/hub/token");
    let (status, _) = cluster
        .hub(1)
        .api
        .with_token(Some(&secret))
        .get("/hub/api/user")
        .await
        .expect("whoami");
    assert_eq!(status, 403, "revoked from the page");

    // --- admin_users are made admin at login
    let (response, root_jar) = log_in(&base(2), "root", "open-sesame", "%2Fhub%2Fhome").await;
    assert_eq!(response.status(), 303);
    let root: serde_json::Value = get_with(&api(1, "/users/root"), &root_jar)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(root["admin"], true, "{root}");
    let spawn = get_with(&format!("{}/hub/spawn/alice", base(3)), &root_jar).await;
    assert_eq!(
        spawn.headers()["location"],
        "/hub/spawn-pending/alice",
        "already pending: shown"
    );
    let spawn = get_with(&format!("{}/hub/spawn", base(3)), &root_jar).await;
    assert_eq!(
        spawn.headers()["location"],
        "/hub/spawn-pending/root",
        "a new spawn requested"
    );

    // --- log out on replica 3: cookies cleared, the session refused on every replica
    let out = get_with(&format!("{}/hub/logout", base(3)), &jar).await;
    assert_eq!(out.headers()["location"], "/hub/login");
    let cleared: Vec<String> = set_cookies(out.headers())
        .into_iter()
        .filter(|(_, value, full)| value.is_empty() && full.contains("Max-Age=0"))
        .map(|(name, _, _)| name)
        .collect();
    for name in ["jupyterhub-hub-login", "jupyterhub-session-id", "_xsrf"] {
        assert!(cleared.iter().any(|n| n == name), "{name} cleared: {cleared:?}");
    }
    for node in 1..=3 {
        let header = jar.header();
        let url = format!("{}/hub/home", base(node));
        eventually(
            &format!("replica {node} refuses the ended session"),
            Duration::from_secs(2),
            || async {
                let home = browser().get(&url).header("cookie", &header).send().await.ok()?;
                (home.status() == 303 || home.status() == 302).then_some(())
            },
        )
        .await;
        let me = get_with(&api(node, "/user"), &jar).await;
        assert_eq!(me.status(), 403, "replica {node}");
    }
    // root's own session is untouched.
    let home = get_with(&format!("{}/hub/home", base(1)), &root_jar).await;
    assert_eq!(home.status(), 200);
}
