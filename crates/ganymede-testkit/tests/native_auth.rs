//! The native authenticator on a 3-replica cluster: sign-up on one replica, approval by
//! an admin on another, login on a third; failed logins counted cluster-wide until the
//! account locks, and the lock lifting by itself; password changes by the user and by an
//! admin; the password itself never stored.

use std::time::Duration;

use ganymede_hub::{AuthSettings, Authenticator, NativeSettings};
use ganymede_testkit::browser::{Jar, browser, log_in};
use ganymede_testkit::{TestCluster, Timings, eventually, test_settings};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(30);
const LOCK: Duration = Duration::from_secs(3);

/// Posts a form the way a browser does after loading `page`: with the `_xsrf` cookie
/// that page set (anonymous) or the session's (signed in).
async fn post_form(base: &str, page: &str, action: &str, jar: &mut Jar, fields: &[(&str, &str)]) -> (u16, String) {
    let loaded = browser()
        .get(format!("{base}{page}"))
        .header("cookie", jar.header())
        .send()
        .await
        .expect("page");
    jar.take(loaded.headers());
    let xsrf = jar.get("_xsrf").expect("an _xsrf cookie").to_owned();
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("_xsrf", &xsrf));
    let response = browser()
        .post(format!("{base}{action}"))
        .header("cookie", jar.header())
        .form(&form)
        .send()
        .await
        .expect("post");
    jar.take(response.headers());
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn sign_up(base: &str, name: &str, password: &str, confirmation: &str) -> (u16, String) {
    let mut jar = Jar(Vec::new());
    post_form(
        base,
        "/hub/signup",
        "/hub/signup",
        &mut jar,
        &[
            ("username", name),
            ("signup_password", password),
            ("signup_password_confirmation", confirmation),
        ],
    )
    .await
}

/// A login attempt: 303 to `next` on success, else the login page with a message.
async fn try_login(base: &str, name: &str, password: &str) -> (u16, String, Jar) {
    let (response, jar) = log_in(base, name, password, "/hub/home").await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default(), jar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_sign_up_approval_lockout_and_password_changes_across_replicas() {
    let mut cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    cluster.auth = AuthSettings {
        authenticator: Authenticator::Native(NativeSettings {
            open_signup: false,
            minimum_password_length: 8,
            allowed_failed_logins: 3,
            seconds_before_next_try: LOCK,
        }),
        allowed_users: Default::default(),
        admin_users: ["boss".to_owned()].into(),
    };
    for node in 1..=3 {
        cluster.kill(node).await;
        cluster.start_node(node).await;
    }
    for node in 1..=3 {
        cluster.wait_until_serving(node).await;
    }
    let base = |node: u64| cluster.hub(node).api.base.clone();

    // The login page offers the sign-up; bad sign-ups are refused with a reason.
    let page = browser()
        .get(format!("{}/hub/login", base(1)))
        .send()
        .await
        .expect("login page");
    assert!(page.text().await.expect("html").contains("href=\"/hub/signup\""));
    let (status, html) = sign_up(&base(1), "carol", "short", "short").await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("at least 8 characters"), "{html}");
    let (status, html) = sign_up(&base(1), "carol", "carol-password-1", "carol-password-2").await;
    assert_eq!(status, 400);
    assert!(html.contains("do not match"), "{html}");
    let forged = browser()
        .post(format!("{}/hub/signup", base(1)))
        .form(&[
            ("username", "mallory"),
            ("signup_password", "mallory-pw-1"),
            ("signup_password_confirmation", "mallory-pw-1"),
        ])
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 403, "a sign-up needs the form's XSRF token");

    // The configured admin needs no approval; carol does.
    let (status, html) = sign_up(&base(1), "Boss", "boss-password-1", "boss-password-1").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("You can now sign in"), "{html}");
    let (status, html) = sign_up(&base(2), "carol", "carol-password-1", "carol-password-1").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("sent to the admin"), "{html}");
    let (status, _) = sign_up(&base(3), "carol", "another-pass", "another-pass").await;
    assert_eq!(status, 409, "a name signs up once, cluster-wide");

    let (status, html, _) = try_login(&base(3), "carol", "carol-password-1").await;
    assert_eq!(status, 403);
    assert!(html.contains("not been authorized"), "{html}");

    // The admin approves carol on another replica.
    let (status, _, mut boss) = try_login(&base(2), "boss", "boss-password-1").await;
    assert_eq!(status, 303);
    let listing = browser()
        .get(format!("{}/hub/authorize", base(1)))
        .header("cookie", boss.header())
        .send()
        .await
        .expect("authorize page");
    assert_eq!(listing.status(), 200);
    let html = listing.text().await.expect("html");
    assert!(
        html.contains("data-user=\"carol\"") && html.contains("waiting"),
        "{html}"
    );
    let (status, _) = post_form(
        &base(1),
        "/hub/authorize",
        "/hub/authorize/carol",
        &mut boss,
        &[("action", "authorize")],
    )
    .await;
    assert_eq!(status, 303);
    let (status, html, _) = try_login(&base(3), "carol", "carol-password-1").await;
    assert_eq!(status, 303, "{html}");

    // carol is not an admin: the approval page is not hers.
    let (_, _, mut carol) = try_login(&base(1), "carol", "carol-password-1").await;
    let denied = browser()
        .get(format!("{}/hub/authorize", base(1)))
        .header("cookie", carol.header())
        .send()
        .await
        .expect("page");
    assert_eq!(denied.status(), 403);

    // Three wrong passwords, on three replicas, lock the account everywhere.
    for node in 1..=3 {
        let (status, html, _) = try_login(&base(node), "carol", "wrong-password").await;
        assert_eq!(status, 403);
        assert!(html.contains("Invalid username or password"), "{html}");
    }
    let (status, html, _) = try_login(&base(2), "carol", "carol-password-1").await;
    assert_eq!(status, 403);
    assert!(html.contains("Too many failed login attempts"), "{html}");
    eventually("the lock lifts by itself", PATIENCE, || async {
        (try_login(&base(1), "carol", "carol-password-1").await.0 == 303).then_some(())
    })
    .await;

    // carol changes her password (the current one is checked) …
    let (status, html) = post_form(
        &base(2),
        "/hub/change-password",
        "/hub/change-password",
        &mut carol,
        &[
            ("old_password", "nope-nope-nope"),
            ("new_password", "carol-password-2"),
            ("new_password_confirmation", "carol-password-2"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    let (status, html) = post_form(
        &base(2),
        "/hub/change-password",
        "/hub/change-password",
        &mut carol,
        &[
            ("old_password", "carol-password-1"),
            ("new_password", "carol-password-2"),
            ("new_password_confirmation", "carol-password-2"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(try_login(&base(3), "carol", "carol-password-1").await.0, 403);
    assert_eq!(try_login(&base(3), "carol", "carol-password-2").await.0, 303);

    // … and an admin can set it for her.
    let (status, html) = post_form(
        &base(3),
        "/hub/change-password/carol",
        "/hub/change-password/carol",
        &mut boss,
        &[
            ("new_password", "set-by-the-admin"),
            ("new_password_confirmation", "set-by-the-admin"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(try_login(&base(1), "carol", "set-by-the-admin").await.0, 303);

    // The password also gets a token through the API, as with any authenticator.
    let (status, reply) = cluster
        .hub(2)
        .api
        .with_token(None)
        .post(
            "/hub/api/users/carol/tokens",
            json!({"auth": {"username": "carol", "password": "set-by-the-admin"}, "note": "by password"}),
        )
        .await
        .expect("token");
    assert_eq!(status, 201, "{reply}");

    // No replica wrote a password anywhere in its data directory.
    for node in 1..=3 {
        let mut stack = vec![cluster.data_dir(node)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("data dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    for password in [
                        "carol-password-1",
                        "carol-password-2",
                        "set-by-the-admin",
                        "boss-password-1",
                    ] {
                        assert!(
                            !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
                            "{password} in {}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}
