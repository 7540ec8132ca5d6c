//! The OpenID Connect authenticator against a real provider (npm `oidc-provider`, run
//! by `ops/oidc/provider.mjs`) on a 3-replica cluster: a login that starts on one
//! replica and comes back to another; users keyed by the issuer's `sub`, never by email
//! (alice and bob share an address); groups allowing and granting admin; a name bound
//! to one subject refused to another; a forged callback; a provider that is down.

use ganymede_hub::{AuthSettings, Authenticator, OidcSettings};
use ganymede_testkit::browser::{Jar, get_with};
use ganymede_testkit::oidc_provider::OidcProvider;
use ganymede_testkit::{TestCluster, Timings, test_settings};

const CLIENT_ID: &str = "ganymede-hub";
const CLIENT_SECRET: &str = "ganymede-hub-client-secret";

async fn configure(cluster: &mut TestCluster, settings: OidcSettings) {
    cluster.auth = AuthSettings {
        authenticator: Authenticator::Oidc(settings),
        allowed_users: Default::default(),
        admin_users: Default::default(),
    };
    for node in 1..=3 {
        cluster.kill(node).await;
        cluster.start_node(node).await;
    }
    for node in 1..=3 {
        cluster.wait_until_serving(node).await;
    }
}

fn settings(issuer: &str, redirect: &str) -> OidcSettings {
    OidcSettings {
        issuer: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(CLIENT_SECRET.into()),
        redirect_url: redirect.into(),
        scopes: vec!["profile".into(), "email".into(), "groups".into()],
        allowed_groups: vec!["staff".into(), "students".into()],
        admin_groups: vec!["staff".into()],
        ..Default::default()
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A browser logging in: from the hub's login button through the provider's form, back
/// to the hub's callback. Returns the callback's response and the browser's cookies.
async fn oidc_login(hub: &str, user: &str, password: &str) -> (reqwest::Response, Jar) {
    let mut jar = Jar(Vec::new());
    let mut url = format!("{hub}/hub/oauth_login?next=/hub/home");
    for _ in 0..12 {
        let response = get_with(&url, &jar).await;
        jar.take(response.headers());
        if url.contains("/hub/oauth_callback") {
            return (response, jar);
        }
        if response.status().is_redirection() {
            let next = location(&response);
            url = if next.starts_with('/') {
                let origin: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                format!("{origin}{next}")
            } else {
                next
            };
            continue;
        }
        let page = response.text().await.unwrap_or_default();
        assert!(
            page.contains("name=\"password\""),
            "expected the provider's form at {url}: {page}"
        );
        let posted = ganymede_testkit::browser::browser()
            .post(&url)
            .header("cookie", jar.header())
            .form(&[("login", user), ("password", password)])
            .send()
            .await
            .expect("the provider's form");
        jar.take(posted.headers());
        assert_eq!(posted.status(), 303, "{user} logs in at the provider");
        url = location(&posted);
    }
    panic!("the login did not come back to the hub (last at {url})");
}

async fn admin_flag(cluster: &TestCluster, name: &str) -> Option<bool> {
    let (_, user) = cluster
        .hub(1)
        .api
        .get(&format!("/hub/api/users/{name}"))
        .await
        .expect("user");
    user["admin"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_oidc_logins_keyed_by_subject_with_groups_across_replicas() {
    let mut cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    let hub = |node: u64| cluster.hub(node).api.base.clone();
    // The provider sends browsers back to replica 2; they start at replica 1.
    let callback = format!("{}/hub/oauth_callback", hub(2));
    let mut provider = OidcProvider::start(CLIENT_ID, CLIENT_SECRET, &callback).await;
    configure(&mut cluster, settings(&provider.issuer, &callback)).await;
    let hub = |node: u64| cluster.hub(node).api.base.clone();

    let page = get_with(&format!("{}/hub/login", hub(1)), &Jar(Vec::new())).await;
    assert!(page.text().await.expect("html").contains("/hub/oauth_login?next="));

    let (back, alice) = oidc_login(&hub(1), "alice", "alice-pw").await;
    assert_eq!(back.status(), 303, "{:?}", back.text().await);
    assert_eq!(location(&back), "/hub/home");
    let home = get_with(&format!("{}/hub/home", hub(3)), &alice).await;
    assert!(
        home.text()
            .await
            .expect("home")
            .contains("Signed in as <strong>alice</strong>")
    );
    assert_eq!(admin_flag(&cluster, "alice").await, Some(true), "staff are admins");

    // Same email, different subject: a different user.
    let (back, _) = oidc_login(&hub(1), "bob", "bob-pw").await;
    assert_eq!(back.status(), 303);
    assert_eq!(admin_flag(&cluster, "bob").await, Some(false));
    let identities = cluster.hub(3).raft.read_local(|state| state.identities.clone());
    assert_eq!(identities.len(), 2, "{identities:?}");
    assert_eq!(identities[&format!("{}#sub-alice-0001", provider.issuer)], "alice");
    assert_eq!(identities[&format!("{}#sub-bob-0002", provider.issuer)], "bob");

    // A callback that did not start here is refused.
    let forged = get_with(
        &format!("{}/hub/oauth_callback?code=abc&state=xyz", hub(2)),
        &Jar(Vec::new()),
    )
    .await;
    assert_eq!(forged.status(), 400);

    // Only staff now: bob gets a clear refusal.
    let mut staff_only = settings(&provider.issuer, &callback);
    staff_only.allowed_groups = vec!["staff".into()];
    configure(&mut cluster, staff_only).await;
    let hub = |node: u64| cluster.hub(node).api.base.clone();
    let (back, _) = oidc_login(&hub(1), "bob", "bob-pw").await;
    assert_eq!(back.status(), 403);
    assert!(back.text().await.expect("page").contains("not allowed"));

    // Another provider (another issuer) whose alice claims the name "alice": refused,
    // because "alice" is bound to the first issuer's subject.
    provider.stop().await;
    let mut impostor = OidcProvider::start(CLIENT_ID, CLIENT_SECRET, &callback).await;
    configure(&mut cluster, settings(&impostor.issuer, &callback)).await;
    let hub = |node: u64| cluster.hub(node).api.base.clone();
    let (back, _) = oidc_login(&hub(1), "alice", "alice-pw").await;
    assert_eq!(back.status(), 403);
    assert!(back.text().await.expect("page").contains("belongs to another account"));

    // The provider down (and not yet discovered): a clear 503, not a hang.
    let issuer = impostor.issuer.clone();
    impostor.stop().await;
    configure(&mut cluster, settings(&issuer, &callback)).await;
    let hub = |node: u64| cluster.hub(node).api.base.clone();
    let down = get_with(&format!("{}/hub/oauth_login", hub(1)), &Jar(Vec::new())).await;
    assert_eq!(down.status(), 503);
}
