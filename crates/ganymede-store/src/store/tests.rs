//! Storage tests on a real RocksDB in a temporary directory.

use std::os::unix::fs::PermissionsExt;

use ganymede_model::{Command, State, TokenOwner, TokenRequest, apply};

use super::*;

const T0: i64 = 1_700_000_000_000;

fn commands() -> Vec<Command> {
    let route = |path: &str| Command::AddRoute {
        path: path.into(),
        target: "http://127.0.0.1:1".into(),
        data: serde_json::json!({"x": 1}),
        at: T0,
    };
    vec![
        Command::InitializeCluster {
            cluster_secret: "ab".repeat(32).into(),
            at: T0,
        },
        Command::CreateUsers {
            names: vec!["alice".into(), "bob".into()],
            admin: false,
            at: T0,
        },
        Command::EnsureService {
            name: "admin".into(),
            admin: true,
            roles: vec!["admin".into()],
            at: T0,
        },
        Command::IssueToken(TokenRequest {
            hash: "hash-1".into(),
            owner: TokenOwner::User("alice".into()),
            scopes: vec![],
            note: "n".into(),
            expires_at: None,
            at: T0,
        }),
        route("/a"),
        Command::StartSession {
            hash: "session-hash".into(),
            user: "alice".into(),
            session_id: "sid".into(),
            expires_at: T0 + 1,
            at: T0,
        },
        Command::CreateGroups {
            names: vec!["students".into(), "gone".into()],
            users: vec!["alice".into()],
            at: T0,
        },
        Command::DeleteGroup {
            name: "gone".into(),
            at: T0,
        },
        Command::RequestSpawn {
            user: "alice".into(),
            server: "".into(),
            user_options: serde_json::json!({}),
            limits: Default::default(),
            api_token_hash: Some("server-token-hash".into()),
            node: None,
            at: T0,
        },
        Command::RegisterOAuthClient {
            client: ganymede_model::oauth::OAuthClient {
                id: "service-admin".into(),
                description: "admin".into(),
                secret_hash: "client-secret-hash".into(),
                redirect_uri: "/services/admin/oauth_callback".into(),
                allowed_scopes: vec![],
                owner: ganymede_model::oauth::OAuthClientOwner::Service { name: "admin".into() },
                created: T0,
            },
            at: T0,
        },
        Command::IssueOAuthCode {
            hash: "code-hash".into(),
            code: ganymede_model::oauth::OAuthCode {
                client_id: "service-admin".into(),
                user: "bob".into(),
                session_id: None,
                scopes: vec![],
                redirect_uri: "/services/admin/oauth_callback".into(),
                code_challenge: None,
                expires_at: T0 + 1,
            },
            at: T0,
        },
        Command::BindIdentity {
            identity: "http://issuer#sub-bob".into(),
            user: "bob".into(),
            at: T0,
        },
        Command::SignUp {
            name: "bob".into(),
            password_hash: "$argon2id$x".into(),
            authorized: true,
            at: T0,
        },
        Command::MarkServerReady {
            user: "alice".into(),
            server: "".into(),
            spawn_id: 1,
            url: "http://127.0.0.1:2".into(),
            at: T0,
        },
        route("/b"),
        Command::RemoveRoute {
            path: "/a".into(),
            at: T0,
        },
        Command::UpdateUser {
            name: "bob".into(),
            rename: Some("robert".into()),
            admin: Some(true),
            at: T0,
        },
        Command::DeleteUser {
            name: "alice".into(),
            at: T0,
        },
    ]
}

/// Applies the commands one by one, writing each outcome to the store like the state
/// machine does, and returns the final in-memory state.
fn apply_all(store: &Store, commands: &[Command]) -> State {
    let mut state = State::default();
    for (index, command) in commands.iter().enumerate() {
        let events = apply(&mut state, command).expect("command accepted");
        let applied = format!("applied-{index}");
        store
            .write_applied(&[AppliedWrite {
                state: &state,
                events: &events,
                applied: applied.as_bytes(),
                membership: None,
            }])
            .expect("write applied");
    }
    state
}

#[test]
fn data_dir_is_private_and_bound_to_its_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub1");
    drop(Store::open(&data, 1).expect("open"));
    let mode = std::fs::metadata(&data).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    drop(Store::open(&data, 1).expect("reopen as the same node"));
    let err = Store::open(&data, 2).expect_err("another node must be refused");
    assert!(
        matches!(
            err,
            StoreError::WrongNode {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), 1).expect("open"));
    // Point CURRENT at a manifest that does not exist, as a torn copy might.
    std::fs::write(dir.path().join("db/CURRENT"), "MANIFEST-999999\n").expect("write");
    let err = Store::open(dir.path(), 1).expect_err("corrupt database must not open");
    let message = err.to_string();
    assert!(message.contains("cannot open the database"), "{message}");
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
}

#[test]
fn raft_log_append_read_truncate_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    assert_eq!(store.last_log().expect("last"), None);
    store
        .append_log((1..=10).map(|i| (i, format!("e{i}").into_bytes())))
        .expect("append");
    let range = store.log_range(3, 6).expect("range");
    assert_eq!(range.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(range[0].1, b"e3");
    store.truncate_log_from(8).expect("truncate");
    assert_eq!(store.last_log().expect("last").map(|(i, _)| i), Some(7));
    store.purge_log_through(4, b"p4").expect("purge");
    assert_eq!(
        store.log_range(0, 100).expect("range").first().map(|(i, _)| *i),
        Some(5)
    );
    assert_eq!(
        store.raft_meta("last_purged").expect("meta").as_deref(),
        Some(&b"p4"[..])
    );
    store.put_raft_meta("vote", b"v").expect("vote");
    drop(store);
    let store = Store::open(dir.path(), 1).expect("reopen");
    assert_eq!(store.raft_meta("vote").expect("meta").as_deref(), Some(&b"v"[..]));
    assert_eq!(store.last_log().expect("last").map(|(i, _)| i), Some(7));
}

#[test]
fn applied_state_survives_reopen_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let state = apply_all(&store, &commands());
    assert!(state.accounts.contains_key("robert"), "the account followed the rename");
    assert_eq!(
        state.identities["http://issuer#sub-bob"], "robert",
        "so did the identity"
    );
    assert!(state.oauth_clients.contains_key("service-admin") && state.oauth_codes.contains_key("code-hash"));
    assert!(
        !state.oauth_clients.contains_key("jupyterhub-user-alice"),
        "deleting alice stopped her server and dropped its client"
    );
    let membership_change = AppliedWrite {
        state: &state,
        events: &[],
        applied: b"applied-m",
        membership: Some(b"members"),
    };
    store.write_applied(&[membership_change]).expect("membership");
    drop(store);
    let store = Store::open(dir.path(), 1).expect("reopen");
    let loaded = store.load_state().expect("load");
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.applied.as_deref(), Some(&b"applied-m"[..]));
    assert_eq!(loaded.membership.as_deref(), Some(&b"members"[..]));
}

#[test]
fn event_log_and_route_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let state = apply_all(&store, &commands());
    let events = store.events_after(0, 1000).expect("events");
    assert_eq!(events.len() as u64, state.event_seq);
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    let routes = store
        .route_events_after(0, 1000)
        .expect("routes")
        .expect("not compacted");
    assert_eq!(
        routes.iter().filter_map(|e| e.route_seq).collect::<Vec<_>>(),
        (1..=state.route_seq).collect::<Vec<_>>()
    );
    assert_eq!(store.route_events_after(2, 1).expect("routes").expect("kept").len(), 1);
    assert_eq!(
        store.route_events_after(state.route_seq, 10).expect("routes"),
        Some(vec![])
    );

    // Compact below the third route event: earlier positions need a snapshot.
    let third = routes[2].seq;
    store.compact_events_before(third).expect("compact");
    assert_eq!(store.events_floor().expect("floor"), third);
    assert_eq!(store.route_events_after(0, 10).expect("routes"), None);
    assert_eq!(store.route_events_after(1, 10).expect("routes"), None);
    let tail = store.route_events_after(2, 10).expect("routes").expect("kept");
    assert_eq!(tail.first().and_then(|e| e.route_seq), Some(3));
    assert_eq!(
        store.events_after(0, 1).expect("events").first().map(|e| e.seq),
        Some(third)
    );
}

#[test]
fn replacing_state_is_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    apply_all(&store, &commands());
    let mut other = State::default();
    apply(
        &mut other,
        &Command::CreateUsers {
            names: vec!["zed".into()],
            admin: true,
            at: T0,
        },
    )
    .expect("create");
    store
        .replace_state(&other, b"applied-s", b"members-s")
        .expect("replace");
    let loaded = store.load_state().expect("load");
    assert_eq!(loaded.state, other);
    assert_eq!(loaded.applied.as_deref(), Some(&b"applied-s"[..]));
    assert_eq!(store.events_floor().expect("floor"), other.event_seq + 1);
    assert!(store.events_after(0, 10).expect("events").is_empty());
}
