//! Table tests of scope expansion, intersection and the access decision, against the
//! behaviour JupyterHub 6.1.1 documents and was observed to have.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::state::{Group, Service, User};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn state() -> State {
    let mut state = State::default();
    for (name, admin) in [("alice", false), ("bob", false), ("root", true)] {
        state.users.insert(
            name.into(),
            User {
                name: name.into(),
                admin,
                created: 0,
                last_activity: None,
                servers: Default::default(),
            },
        );
    }
    state.groups.insert(
        "students".into(),
        Group {
            name: "students".into(),
            users: BTreeSet::from(["alice".to_owned()]),
            properties: serde_json::json!({}),
        },
    );
    state.services.insert(
        "culler".into(),
        Service {
            name: "culler".into(),
            admin: false,
            roles: BTreeSet::new(),
            created: 0,
        },
    );
    state
}

fn token(owner: TokenOwner, scopes: &[&str]) -> Token {
    Token {
        id: 1,
        hash: "h".into(),
        owner,
        scopes: strings(scopes),
        note: String::new(),
        created: 0,
        expires_at: None,
        last_activity: None,
        session_id: None,
        oauth_client: None,
    }
}

fn expanded(scopes: &[&str], subject: Subject<'_>) -> Vec<String> {
    expand(&strings(scopes), subject, Some("alice/gpu"))
        .expect("valid scopes")
        .to_strings()
}

#[test]
fn subscopes_inherit_the_filter() {
    assert_eq!(
        expanded(&["users!user=alice"], Subject::User("x")),
        strings(&[
            "list:users!user=alice",
            "read:users!user=alice",
            "read:users:activity!user=alice",
            "read:users:groups!user=alice",
            "read:users:name!user=alice",
            "users!user=alice",
            "users:activity!user=alice",
        ])
    );
}

#[test]
fn server_filters_do_not_reach_read_users() {
    assert_eq!(
        expanded(&["servers!server=alice/gpu"], Subject::User("x")),
        strings(&[
            "delete:servers!server=alice/gpu",
            "read:servers!server=alice/gpu",
            "servers!server=alice/gpu",
            "start:servers!server=alice/gpu",
        ])
    );
    assert!(expanded(&["read:servers"], Subject::User("x")).contains(&"read:users:name".to_owned()));
}

#[test]
fn self_is_the_users_own_things() {
    let scopes = expanded(&["self"], Subject::User("alice"));
    for expected in [
        "read:users!user=alice",
        "servers!user=alice",
        "start:servers!user=alice",
        "tokens!user=alice",
        "read:tokens!user=alice",
        "access:servers!user=alice",
        "users:activity!user=alice",
        "read:users:shares!user=alice",
    ] {
        assert!(
            scopes.contains(&expected.to_owned()),
            "{expected} missing from {scopes:?}"
        );
    }
    assert!(scopes.iter().all(|s| s.ends_with("!user=alice")));
    assert!(expanded(&["self"], Subject::Service("culler")).is_empty());
}

#[test]
fn bare_filters_bind_to_the_owner_and_client() {
    assert_eq!(
        expanded(
            &["read:users:activity!user", "access:servers!server"],
            Subject::User("alice")
        ),
        strings(&["access:servers!server=alice/gpu", "read:users:activity!user=alice"])
    );
    assert_eq!(
        expanded(&["read:services!service"], Subject::Service("culler")),
        strings(&["read:services!service=culler", "read:services:name!service=culler"])
    );
    assert!(matches!(
        expand(&strings(&["read:users!user"]), Subject::Service("culler"), None),
        Err(ScopeError::Unresolvable { .. })
    ));
    assert!(matches!(
        expand(&strings(&["access:servers!server"]), Subject::User("alice"), None),
        Err(ScopeError::Unresolvable { .. })
    ));
}

#[test]
fn an_unfiltered_scope_subsumes_filtered_copies() {
    assert_eq!(
        expanded(&["read:users:name!user=alice", "read:users:name"], Subject::User("x")),
        strings(&["read:users:name"])
    );
    assert_eq!(
        expanded(
            &["read:users:name!user=alice", "read:users:name!user=bob"],
            Subject::User("x")
        ),
        strings(&["read:users:name!user=alice", "read:users:name!user=bob"])
    );
}

#[test]
fn invalid_scopes_are_named() {
    for (raw, expected) in [
        ("all", ScopeError::AllIsInherit),
        ("read:everything", ScopeError::Unknown("read:everything".into())),
        ("read:users!user=", ScopeError::BadFilter("read:users!user=".into())),
        (
            "read:users!nobody=x",
            ScopeError::BadFilter("read:users!nobody=x".into()),
        ),
        ("read:users!userx", ScopeError::BadFilter("read:users!userx".into())),
        (
            "servers!server=alice",
            ScopeError::BadFilter("servers!server=alice".into()),
        ),
        ("custom:", ScopeError::Unknown("custom:".into())),
    ] {
        assert_eq!(validate(&strings(&[raw])), Err(expected), "{raw}");
    }
    assert_eq!(validate(&strings(&["custom:my-thing:*", "inherit", "self"])), Ok(()));
    assert_eq!(validate(&strings(&["read:users!group=students"])), Ok(()));
}

#[test]
fn access_is_403_without_the_scope_and_404_with_it_elsewhere() {
    let state = state();
    let alice = Roles::default().owner_scopes(&state, &TokenOwner::User("alice".into()));
    let cases = [
        (&["read:users"][..], Resource::User("alice"), Access::Granted),
        (&["read:users"][..], Resource::User("bob"), Access::NotFound),
        (&["list:users"][..], Resource::Hub, Access::Forbidden),
        (&["read:users"][..], Resource::Hub, Access::NotFound),
        (&["admin:users"][..], Resource::User("alice"), Access::Forbidden),
        (&["delete:users"][..], Resource::User("alice"), Access::Forbidden),
        (
            &["start:servers"][..],
            Resource::Server {
                user: "alice",
                server: "gpu",
            },
            Access::Granted,
        ),
        (
            &["start:servers"][..],
            Resource::Server {
                user: "bob",
                server: "",
            },
            Access::NotFound,
        ),
        (
            &["read:groups", "read:groups:name"][..],
            Resource::Group("students"),
            Access::Forbidden,
        ),
        (&["read:metrics"][..], Resource::Hub, Access::Forbidden),
    ];
    for (needed, resource, expected) in cases {
        assert_eq!(
            alice.access(needed, resource, &state),
            expected,
            "{needed:?} on {resource:?}"
        );
    }
    let root = Roles::default().owner_scopes(&state, &TokenOwner::User("root".into()));
    for (needed, resource) in [
        (&["admin:users"][..], Resource::User("bob")),
        (&["list:users"][..], Resource::Hub),
        (&["read:metrics"][..], Resource::Hub),
        (&["delete:groups"][..], Resource::Group("students")),
        (&["read:services"][..], Resource::Service("culler")),
    ] {
        assert_eq!(root.access(needed, resource, &state), Access::Granted, "{needed:?}");
    }
}

#[test]
fn group_filters_reach_members_and_their_servers() {
    let state = state();
    let set = expand(&strings(&["servers!group=students"]), Subject::User("x"), None).expect("valid");
    let alice_server = Resource::Server {
        user: "alice",
        server: "",
    };
    let bob_server = Resource::Server {
        user: "bob",
        server: "",
    };
    assert!(set.allows("delete:servers", alice_server, &state));
    assert!(!set.allows("delete:servers", bob_server, &state));
    assert!(set.allows("read:users:name", Resource::User("alice"), &state));
    assert!(!set.allows("read:groups", Resource::Group("students"), &state));
    let group = expand(&strings(&["read:groups!group=students"]), Subject::User("x"), None).expect("valid");
    assert!(group.allows("read:groups", Resource::Group("students"), &state));
}

#[test]
fn default_server_filters_carry_a_trailing_slash() {
    let state = state();
    let set = expand(&strings(&["access:servers!server=alice/"]), Subject::User("x"), None).expect("valid");
    assert!(set.allows(
        "access:servers",
        Resource::Server {
            user: "alice",
            server: ""
        },
        &state
    ));
    assert!(!set.allows(
        "access:servers",
        Resource::Server {
            user: "alice",
            server: "gpu"
        },
        &state
    ));
}

#[test]
fn token_scopes_are_intersected_with_the_owners() {
    let state = state();
    let roles = Roles::default();
    // alice asks for more than she has: only her own part survives.
    let greedy = token(TokenOwner::User("alice".into()), &["read:users", "admin:users"]);
    assert_eq!(
        roles.token_scopes(&state, &greedy).to_strings(),
        strings(&[
            "read:users!user=alice",
            "read:users:activity!user=alice",
            "read:users:groups!user=alice",
            "read:users:name!user=alice",
            "users:activity!user=alice",
        ])
    );
    // The server token JupyterHub issues, as observed.
    let server = token(
        TokenOwner::User("alice".into()),
        &["users:activity!user=alice", "access:servers!server=alice/"],
    );
    assert_eq!(
        roles.token_scopes(&state, &server).to_strings(),
        strings(&[
            "access:servers!server=alice/",
            "read:users:activity!user=alice",
            "read:users:groups!user=alice",
            "read:users:name!user=alice",
            "users:activity!user=alice",
        ])
    );
    // inherit follows the owner, including a later promotion.
    let inherit = token(TokenOwner::User("alice".into()), &["inherit"]);
    assert!(!roles.token_scopes(&state, &inherit).holds("admin:users"));
    let mut promoted = state.clone();
    if let Some(alice) = promoted.users.get_mut("alice") {
        alice.admin = true;
    }
    assert!(roles.token_scopes(&promoted, &inherit).holds_everywhere("admin:users"));
    // A service with no roles holds only its identify scope.
    let culler = token(TokenOwner::Service("culler".into()), &["list:users"]);
    assert!(roles.token_scopes(&state, &culler).is_empty());
}

#[test]
fn the_culler_role_works_through_custom_roles() {
    let state = state();
    let roles = Roles::with_custom(vec![Role {
        name: "idle-culler".into(),
        scopes: strings(&[
            "list:users",
            "read:users:activity",
            "read:servers",
            "delete:servers",
            "admin:users",
        ]),
        services: strings(&["culler"]),
        ..Role::default()
    }])
    .expect("valid role");
    let culler = token(TokenOwner::Service("culler".into()), &["inherit"]);
    let scopes = roles.token_scopes(&state, &culler);
    for needed in [
        "list:users",
        "read:servers",
        "delete:servers",
        "delete:users",
        "read:users:name",
    ] {
        assert!(scopes.holds_everywhere(needed), "{needed}");
    }
    assert!(!scopes.holds("read:metrics"));
    assert_eq!(roles.service_roles(&state, "culler"), strings(&["idle-culler"]));
}

#[test]
fn custom_roles_are_validated_and_given_through_groups() {
    assert_eq!(
        Roles::with_custom(vec![Role {
            name: "Bad Name".into(),
            ..Role::default()
        }]),
        Err(ScopeError::InvalidRoleName("Bad Name".into()))
    );
    assert!(
        Roles::with_custom(vec![Role {
            name: "teacher".into(),
            scopes: strings(&["read:nothing"]),
            ..Role::default()
        }])
        .is_err()
    );
    let state = state();
    let roles = Roles::with_custom(vec![Role {
        name: "grader".into(),
        scopes: strings(&["read:users!group=students", "custom:grade"]),
        groups: strings(&["students"]),
        ..Role::default()
    }])
    .expect("valid role");
    assert_eq!(roles.user_roles(&state, "alice"), strings(&["grader", "user"]));
    assert_eq!(roles.user_roles(&state, "bob"), strings(&["user"]));
    assert_eq!(roles.user_roles(&state, "root"), strings(&["admin", "user"]));
    assert_eq!(roles.group_roles("students"), strings(&["grader"]));
    let alice = roles.owner_scopes(&state, &TokenOwner::User("alice".into()));
    assert!(alice.holds_everywhere("custom:grade"));
    assert!(alice.allows("read:users", Resource::User("alice"), &state));
}

#[test]
fn intersection_meets_users_with_their_servers_and_groups_with_members() {
    let state = state();
    let set = |raw: &[&str]| expand(&strings(raw), Subject::User("x"), None).expect("valid");
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (
            &["servers!user=alice"],
            &["servers!server=alice/gpu"],
            &["servers!server=alice/gpu"],
        ),
        (
            &["read:users!group=students"],
            &["read:users!user=alice"],
            &["read:users!user=alice"],
        ),
        (&["read:users!group=students"], &["read:users!user=bob"], &[]),
        (&["read:users!user=alice"], &["read:users!user=bob"], &[]),
        (&["proxy"], &["proxy"], &["proxy"]),
        (&["proxy"], &["shutdown"], &[]),
    ];
    for (a, b, expected) in cases {
        let met = set(a).intersect(&set(b), &state);
        let name = a[0].split('!').next().unwrap_or_default();
        let mine: Vec<String> = met
            .to_strings()
            .into_iter()
            .filter(|s| s.split('!').next() == Some(name))
            .collect();
        assert_eq!(mine, strings(expected), "{a:?} ∩ {b:?}");
    }
}

#[test]
fn resolving_for_storage_binds_bare_filters() {
    assert_eq!(
        resolve_for_token(
            &strings(&["users:activity!user", "access:servers!server", "read:hub"]),
            Subject::User("alice"),
            Some("alice/")
        ),
        Ok(strings(&[
            "users:activity!user=alice",
            "access:servers!server=alice/",
            "read:hub"
        ]))
    );
    assert!(resolve_for_token(&strings(&["read:users!service"]), Subject::User("alice"), None).is_err());
}

#[test]
fn role_names() {
    for good in ["user", "idle-culler", "a.b_c~d1"] {
        assert!(is_valid_role_name(good), "{good}");
    }
    for bad in ["", "ab", "Admin", "1role", "role-", "ro le"] {
        assert!(!is_valid_role_name(bad), "{bad}");
    }
}

fn any_scope() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = SCOPE_NAMES
        .iter()
        .copied()
        .filter(|n| !["self", "inherit"].contains(n))
        .collect();
    let filters = prop_oneof![
        Just(String::new()),
        Just("!user=alice".to_owned()),
        Just("!user=bob".to_owned()),
        Just("!group=students".to_owned()),
        Just("!server=alice/".to_owned()),
        Just("!server=bob/gpu".to_owned()),
    ];
    (proptest::sample::select(names), filters).prop_map(|(name, filter)| format!("{name}{filter}"))
}

proptest! {
    /// Intersection never grants what either side does not, on any resource.
    #[test]
    fn intersection_is_within_both(a in proptest::collection::vec(any_scope(), 0..6), b in proptest::collection::vec(any_scope(), 0..6)) {
        let state = state();
        let a = expand(&a, Subject::User("x"), None).expect("valid");
        let b = expand(&b, Subject::User("x"), None).expect("valid");
        let met = a.intersect(&b, &state);
        prop_assert!(met.is_within(&a, &state));
        prop_assert!(met.is_within(&b, &state));
        let resources = [
            Resource::Hub,
            Resource::User("alice"),
            Resource::User("bob"),
            Resource::Server { user: "alice", server: "" },
            Resource::Server { user: "bob", server: "gpu" },
            Resource::Group("students"),
        ];
        for name in SCOPE_NAMES {
            for resource in resources {
                if met.allows(name, resource, &state) {
                    prop_assert!(a.allows(name, resource, &state) && b.allows(name, resource, &state));
                }
            }
        }
        prop_assert_eq!(a.intersect(&a, &state), a.clone());
    }
}

/// Any written scope: known and custom names with every kind of filter, bare filters,
/// `self`, `inherit`, and malformed ones.
fn any_written_scope() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = SCOPE_NAMES.to_vec();
    let name = prop_oneof![
        4 => proptest::sample::select(names).prop_map(str::to_owned),
        1 => "custom:[a-z0-9_*:-]{1,4}",
        1 => "[a-z:!=]{0,6}",
    ];
    let filter = prop_oneof![
        Just(String::new()),
        Just("!user".to_owned()),
        Just("!server".to_owned()),
        Just("!service".to_owned()),
        Just("!user=alice".to_owned()),
        Just("!user=a!b=c".to_owned()),
        Just("!group=students".to_owned()),
        Just("!server=alice/".to_owned()),
        Just("!server=bob/gpu".to_owned()),
        Just("!service=culler".to_owned()),
        Just("!user=".to_owned()),
        Just("!server=alice".to_owned()),
        "![a-z=/]{0,6}",
    ];
    (name, filter).prop_map(|(name, filter)| format!("{name}{filter}"))
}

fn any_subject() -> impl Strategy<Value = Subject<'static>> {
    prop_oneof![
        Just(Subject::User("alice")),
        Just(Subject::User("bob")),
        Just(Subject::Service("culler"))
    ]
}

proptest! {
    /// The properties `tests/fuzz`'s `scopes` target checks: `validate` agrees with
    /// `expand`; expansion is idempotent, monotone and order-free; resolving bare
    /// filters for storage and expanding later is expanding at once.
    #[test]
    fn expansion_is_idempotent_monotone_and_order_free(
        a in proptest::collection::vec(any_written_scope(), 0..5),
        b in proptest::collection::vec(any_written_scope(), 0..5),
        subject in any_subject(),
        client_server in proptest::option::of(prop_oneof![Just("alice/"), Just("alice/gpu")]),
    ) {
        let state = state();
        let expanded = expand(&a, subject, client_server);
        if validate(&a).is_err() {
            prop_assert!(expanded.is_err());
        }
        let Ok(expanded) = expanded else { return Ok(()) };
        prop_assert_eq!(validate(&a), Ok(()));
        prop_assert_eq!(expand(&expanded.to_strings(), Subject::User("bob"), None), Ok(expanded.clone()));
        let stored = resolve_for_token(&a, subject, client_server).expect("expandable scopes resolve");
        prop_assert_eq!(expand(&stored, subject, None), Ok(expanded.clone()));
        let Ok(other) = expand(&b, subject, client_server) else { return Ok(()) };
        let both: Vec<String> = a.iter().chain(&b).cloned().collect();
        let reversed: Vec<String> = b.iter().chain(&a).cloned().collect();
        let union = expand(&both, subject, client_server).expect("both sides expand");
        prop_assert!(expanded.is_within(&union, &state) && other.is_within(&union, &state));
        prop_assert_eq!(expand(&reversed, subject, client_server), Ok(union));
        prop_assert_eq!(expanded.intersect(&other, &state), other.intersect(&expanded, &state));
    }

    /// A token never holds more than its owner, whatever it asked for.
    #[test]
    fn tokens_hold_no_more_than_their_owner(
        scopes in proptest::collection::vec(any_written_scope(), 0..5),
        owner in prop_oneof![
            Just(TokenOwner::User("alice".into())),
            Just(TokenOwner::User("root".into())),
            Just(TokenOwner::Service("culler".into())),
        ],
    ) {
        let state = state();
        let roles = Roles::default();
        let Ok(stored) = resolve_for_token(&scopes, Subject::of(&owner), None) else { return Ok(()) };
        let mut token = token(owner.clone(), &[]);
        token.scopes = stored;
        let held = roles.owner_scopes(&state, &owner);
        prop_assert!(roles.token_scopes(&state, &token).is_within(&held, &state));
    }
}
