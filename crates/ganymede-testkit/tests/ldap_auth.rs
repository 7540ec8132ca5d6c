//! The LDAP authenticator against a real `slapd` (Debian's OpenLDAP) on a 3-replica
//! cluster: bind by DN template and by search, allowed groups, admin groups granting
//! and taking admin, injection attempts, an empty password, and a directory that is down.

use ganymede_hub::{AuthSettings, Authenticator, LdapSettings};
use ganymede_testkit::browser::log_in;
use ganymede_testkit::slapd::{ROOT_DN, ROOT_PASSWORD, Slapd};
use ganymede_testkit::{TestCluster, Timings, test_settings};
use serde_json::json;

const PEOPLE: &str = "ou=people,dc=example,dc=org";
const JUPYTER: &str = "cn=jupyter,ou=groups,dc=example,dc=org";
const ADMINS: &str = "cn=hub-admins,ou=groups,dc=example,dc=org";

fn person(uid: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {password}\n\n"
    )
}

fn directory() -> String {
    let mut ldif = format!("dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n");
    ldif.push_str("dn: ou=groups,dc=example,dc=org\nobjectClass: organizationalUnit\nou: groups\n\n");
    ldif.push_str(&person("alice", "alice-ldap-pw"));
    ldif.push_str(&person("bob", "bob-ldap-pw"));
    ldif.push_str(&person("carol", "carol-ldap-pw"));
    ldif.push_str(&format!(
        "dn: {JUPYTER}\nobjectClass: groupOfNames\ncn: jupyter\nmember: uid=alice,{PEOPLE}\nmember: uid=bob,{PEOPLE}\n\n"
    ));
    ldif.push_str(&format!(
        "dn: {ADMINS}\nobjectClass: groupOfNames\ncn: hub-admins\nmember: uid=alice,{PEOPLE}\n\n"
    ));
    ldif
}

async fn restart_with(cluster: &mut TestCluster, settings: LdapSettings) {
    cluster.auth = AuthSettings {
        authenticator: Authenticator::Ldap(settings),
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

/// `(status, page text)` of a login form post.
async fn login(base: &str, user: &str, password: &str) -> (u16, String) {
    let (response, _) = log_in(base, user, password, "/hub/home").await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_bind_templates_groups_admin_mapping_and_a_directory_that_is_down() {
    let mut slapd = Slapd::start(&directory()).await;
    let mut cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    // bob starts out an admin; the directory will say otherwise at his login.
    let (status, _) = cluster
        .hub(1)
        .api
        .post("/hub/api/users/bob", json!({"admin": true}))
        .await
        .expect("bob");
    assert_eq!(status, 201);
    restart_with(
        &mut cluster,
        LdapSettings {
            url: slapd.url.clone(),
            bind_dn_templates: vec![format!("uid={{username}},{PEOPLE}")],
            allowed_groups: vec![JUPYTER.into()],
            admin_groups: vec![ADMINS.into()],
            ..Default::default()
        },
    )
    .await;
    let base = |node: u64| cluster.hub(node).api.base.clone();
    let admin_flag = |name: &'static str| {
        let api = cluster.hub(3).api.clone();
        async move {
            let (_, user) = api.get(&format!("/hub/api/users/{name}")).await.expect("user");
            user["admin"].as_bool()
        }
    };

    let (status, page) = login(&base(1), "alice", "alice-ldap-pw").await;
    assert_eq!(status, 303, "{page}");
    assert_eq!(admin_flag("alice").await, Some(true), "in the admin group");
    let (status, _) = login(&base(2), "Bob", "bob-ldap-pw").await;
    assert_eq!(status, 303);
    assert_eq!(
        admin_flag("bob").await,
        Some(false),
        "not in the admin group: no longer admin"
    );

    for (user, password, says) in [
        ("carol", "carol-ldap-pw", "not allowed"),
        ("alice", "wrong", "Invalid username or password"),
        ("nobody", "whatever", "Invalid username or password"),
        ("alice", "", "Invalid username or password"),
        ("alice,ou=people", "alice-ldap-pw", "Invalid username or password"),
    ] {
        let (status, page) = login(&base(2), user, password).await;
        assert_eq!(status, 403, "{user}: {page}");
        assert!(page.contains(says), "{user}/{password}: {page}");
    }
    let (_, users) = cluster.hub(1).api.get("/hub/api/users").await.expect("users");
    assert!(
        !users.to_string().contains("carol"),
        "a refused login creates no user: {users}"
    );

    slapd.stop();
    let (status, page) = login(&base(3), "alice", "alice-ldap-pw").await;
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("cannot check your login"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_dn_by_search_as_a_search_user_with_filter_injection_refused() {
    let slapd = Slapd::start(&directory()).await;
    let mut cluster = TestCluster::start_with_settings(3, Timings::default(), test_settings()).await;
    restart_with(
        &mut cluster,
        LdapSettings {
            url: slapd.url.clone(),
            user_search_base: Some(PEOPLE.into()),
            user_attribute: "uid".into(),
            search_bind_dn: Some(ROOT_DN.into()),
            search_bind_password: Some(ROOT_PASSWORD.into()),
            ..Default::default()
        },
    )
    .await;
    let base = cluster.hub(2).api.base.clone();
    assert_eq!(
        login(&base, "carol", "carol-ldap-pw").await.0,
        303,
        "no group limits here"
    );
    // `*` would match every entry if it reached the filter unescaped.
    for injected in ["*", "a*", "alice)(uid=*"] {
        let (status, page) = login(&base, injected, "alice-ldap-pw").await;
        assert_eq!(status, 403, "{injected}: {page}");
    }
}
