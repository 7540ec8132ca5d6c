//! The OAuth provider's and the native authenticator's rules, decided and folded.

use super::*;
use crate::accounts::Account;
use crate::oauth::{CODE_LIFETIME_MILLIS, OAuthCode};

const T0: i64 = 1_700_000_000_000;

fn run(state: &mut State, command: Command) -> Result<Vec<String>, Rejection> {
    apply(state, &command).map(|events| {
        events
            .iter()
            .map(|sequenced| {
                let value = serde_json::to_value(&sequenced.event).expect("events serialize");
                value["type"].as_str().expect("tagged").to_owned()
            })
            .collect()
    })
}

fn ok(state: &mut State, command: Command) -> Vec<String> {
    let shown = format!("{command:?}");
    run(state, command).unwrap_or_else(|rejection| panic!("{shown} rejected: {rejection}"))
}

/// alice exists and has started her default server with API token hash `srv`.
fn alice_spawned() -> State {
    let mut state = State::default();
    ok(
        &mut state,
        Command::CreateUsers {
            names: vec!["alice".into(), "bob".into()],
            admin: false,
            at: T0,
        },
    );
    ok(&mut state, spawn_with_token("srv", T0));
    state
}

fn spawn_with_token(hash: &str, at: i64) -> Command {
    Command::RequestSpawn {
        user: "alice".into(),
        server: "".into(),
        user_options: serde_json::json!({}),
        limits: Default::default(),
        api_token_hash: Some(hash.into()),
        node: None,
        at,
    }
}

fn code(session: &str, challenge: Option<&str>, at: i64) -> OAuthCode {
    OAuthCode {
        client_id: "jupyterhub-user-alice".into(),
        user: "alice".into(),
        session_id: Some(session.into()),
        scopes: vec!["access:servers!server=alice/".into()],
        redirect_uri: "/user/alice/oauth_callback".into(),
        code_challenge: challenge.map(String::from),
        expires_at: at + CODE_LIFETIME_MILLIS,
    }
}

fn redeem(code_hash: &str, token_hash: &str, challenge: Option<&str>, at: i64) -> Command {
    Command::RedeemOAuthCode {
        hash: code_hash.into(),
        client_id: "jupyterhub-user-alice".into(),
        client_secret_hash: "srv".into(),
        redirect_uri: "/user/alice/oauth_callback".into(),
        pkce_challenge: challenge.map(String::from),
        token_hash: token_hash.into(),
        token_expires_at: Some(at + 1000),
        at,
    }
}

fn issue(hash: &str, code: OAuthCode, at: i64) -> Command {
    Command::IssueOAuthCode {
        hash: hash.into(),
        code,
        at,
    }
}

#[test]
fn a_spawn_gets_an_api_token_and_an_oauth_client_that_the_stop_takes_away() {
    let mut state = alice_spawned();
    let server = &state.users["alice"].servers[""];
    let token_id = server.api_token_id.expect("server token");
    let token = &state.tokens[&token_id];
    assert_eq!(token.note, "Server at /user/alice/");
    assert_eq!(
        token.scopes,
        ["access:servers!server=alice/", "users:activity!user=alice"]
    );
    let client = &state.oauth_clients["jupyterhub-user-alice"];
    assert_eq!(client.redirect_uri, "/user/alice/oauth_callback");
    assert_eq!(client.secret_hash, "srv");
    assert_eq!(client.access_scope(), "access:servers!server=alice/");

    ok(&mut state, issue("c1", code("s1", None, T0), T0));
    ok(&mut state, redeem("c1", "oauth1", None, T0 + 1));
    assert_eq!(state.tokens.len(), 2);

    let events = ok(
        &mut state,
        Command::MarkServerFailed {
            user: "alice".into(),
            server: "".into(),
            spawn_id: 1,
            reason: "boom".into(),
            at: T0 + 2,
        },
    );
    assert_eq!(
        events,
        [
            "token_revoked",
            "token_revoked",
            "oauth_client_deleted",
            "server_stopped"
        ],
        "the server token, the client's OAuth token, the client"
    );
    assert!(state.tokens.is_empty());
    assert!(state.oauth_clients.is_empty());
    assert_eq!(state.users["alice"].servers[""].api_token_id, None);

    // The next spawn gets fresh credentials; the old token hash stays dead.
    ok(&mut state, spawn_with_token("srv2", T0 + 3));
    assert!(state.token_by_hash("srv").is_none());
    assert_eq!(state.oauth_clients["jupyterhub-user-alice"].secret_hash, "srv2");
}

#[test]
fn a_code_is_redeemed_once_by_its_own_client_with_its_own_redirect_uri() {
    let mut state = alice_spawned();
    ok(&mut state, issue("c1", code("s1", None, T0), T0));
    let mut wrong_secret = redeem("c1", "t1", None, T0);
    if let Command::RedeemOAuthCode { client_secret_hash, .. } = &mut wrong_secret {
        *client_secret_hash = "guess".into();
    }
    assert_eq!(run(&mut state, wrong_secret), Err(Rejection::InvalidOAuthClient));
    let mut wrong_redirect = redeem("c1", "t1", None, T0);
    if let Command::RedeemOAuthCode { redirect_uri, .. } = &mut wrong_redirect {
        *redirect_uri = "/user/alice/evil".into();
    }
    assert!(matches!(
        run(&mut state, wrong_redirect),
        Err(Rejection::InvalidGrant { .. })
    ));

    assert_eq!(
        ok(&mut state, redeem("c1", "t1", None, T0)),
        ["oauth_code_removed", "token_issued"]
    );
    let token = state.token_by_hash("t1").expect("issued");
    assert_eq!(token.owner, TokenOwner::User("alice".into()));
    assert_eq!(token.session_id.as_deref(), Some("s1"));
    assert_eq!(token.oauth_client.as_deref(), Some("jupyterhub-user-alice"));
    assert_eq!(token.expires_at, Some(T0 + 1000));

    assert!(matches!(
        run(&mut state, redeem("c1", "t2", None, T0)),
        Err(Rejection::InvalidGrant { .. })
    ));
    assert!(matches!(
        run(&mut state, redeem("nope", "t2", None, T0)),
        Err(Rejection::InvalidGrant { .. })
    ));
}

#[test]
fn codes_expire_after_five_minutes_and_are_swept() {
    let mut state = alice_spawned();
    ok(&mut state, issue("old", code("s1", None, T0), T0));
    let late = T0 + CODE_LIFETIME_MILLIS;
    assert!(matches!(
        run(&mut state, redeem("old", "t1", None, late)),
        Err(Rejection::InvalidGrant { .. })
    ));
    assert_eq!(
        ok(&mut state, issue("new", code("s1", None, late), late)),
        ["oauth_code_removed", "oauth_code_issued"]
    );
    assert_eq!(state.oauth_codes.keys().collect::<Vec<_>>(), ["new"]);
}

#[test]
fn pkce_verifier_must_match_the_challenge_when_one_was_sent() {
    let mut state = alice_spawned();
    ok(&mut state, issue("c1", code("s1", Some("challenge"), T0), T0));
    assert!(matches!(
        run(&mut state, redeem("c1", "t1", None, T0)),
        Err(Rejection::InvalidGrant { .. })
    ));
    assert!(matches!(
        run(&mut state, redeem("c1", "t1", Some("other"), T0)),
        Err(Rejection::InvalidGrant { .. })
    ));
    ok(&mut state, redeem("c1", "t1", Some("challenge"), T0));
}

#[test]
fn logout_revokes_the_session_oauth_tokens_only() {
    let mut state = alice_spawned();
    let session = |hash: &str, id: &str| Command::StartSession {
        hash: hash.into(),
        user: "alice".into(),
        session_id: id.into(),
        expires_at: T0 + 10_000,
        at: T0,
    };
    ok(&mut state, session("h1", "s1"));
    ok(&mut state, session("h2", "s2"));
    ok(&mut state, issue("c1", code("s1", None, T0), T0));
    ok(&mut state, redeem("c1", "tab1", None, T0));
    ok(&mut state, issue("c2", code("s2", None, T0), T0));
    ok(&mut state, redeem("c2", "tab2", None, T0));
    let events = ok(
        &mut state,
        Command::EndSession {
            hash: "h1".into(),
            at: T0 + 1,
        },
    );
    assert_eq!(events, ["token_revoked", "session_ended"]);
    assert!(state.token_by_hash("tab1").is_none());
    assert!(
        state.token_by_hash("tab2").is_some(),
        "another session's token survives"
    );
    assert!(
        state.token_by_hash("srv").is_some(),
        "the server token is not the session's"
    );
}

#[test]
fn revoking_an_oauth_token_revokes_its_siblings_from_the_same_client() {
    let mut state = alice_spawned();
    ok(&mut state, issue("c1", code("s1", None, T0), T0));
    ok(&mut state, redeem("c1", "a", None, T0));
    ok(&mut state, issue("c2", code("s2", None, T0), T0));
    ok(&mut state, redeem("c2", "b", None, T0));
    let id = state.token_by_hash("a").expect("a").id;
    assert_eq!(
        ok(&mut state, Command::RevokeToken { id, at: T0 }),
        ["token_revoked", "token_revoked"]
    );
    assert!(state.token_by_hash("b").is_none());
    assert!(state.token_by_hash("srv").is_some());
}

#[test]
fn service_clients_go_with_their_service() {
    let mut state = alice_spawned();
    ok(
        &mut state,
        Command::EnsureService {
            name: "grader".into(),
            admin: false,
            roles: vec![],
            at: T0,
        },
    );
    let client = OAuthClient {
        id: "service-grader".into(),
        description: "grader".into(),
        secret_hash: "gs".into(),
        redirect_uri: "/services/grader/oauth_callback".into(),
        allowed_scopes: vec![],
        owner: OAuthClientOwner::Service { name: "grader".into() },
        created: 0,
    };
    ok(
        &mut state,
        Command::RegisterOAuthClient {
            client: client.clone(),
            at: T0,
        },
    );
    assert_eq!(state.oauth_clients["service-grader"].created, T0);
    assert_eq!(
        state.oauth_clients["service-grader"].access_scope(),
        "access:services!service=grader"
    );
    ok(
        &mut state,
        Command::DeleteService {
            name: "grader".into(),
            at: T0,
        },
    );
    assert!(!state.oauth_clients.contains_key("service-grader"));
}

fn sign_up(name: &str) -> Command {
    Command::SignUp {
        name: name.into(),
        password_hash: "$argon2id$one".into(),
        authorized: false,
        at: T0,
    }
}

fn fail(name: &str, at: i64) -> Command {
    Command::RecordLoginFailure {
        name: name.into(),
        max_failures: 3,
        lock_millis: 600_000,
        at,
    }
}

#[test]
fn accounts_sign_up_once_and_wait_for_approval() {
    let mut state = State::default();
    ok(&mut state, sign_up("carol"));
    assert_eq!(
        run(&mut state, sign_up("carol")),
        Err(Rejection::AccountExists { name: "carol".into() })
    );
    assert_eq!(
        run(&mut state, sign_up("a/b")),
        Err(Rejection::InvalidUserName { name: "a/b".into() })
    );
    assert!(!state.accounts["carol"].authorized);
    let approve = Command::AuthorizeAccount {
        name: "carol".into(),
        authorized: true,
        at: T0,
    };
    assert_eq!(ok(&mut state, approve.clone()), ["account_authorized"]);
    assert!(ok(&mut state, approve).is_empty(), "approving twice changes nothing");
    assert!(state.accounts["carol"].authorized);
}

#[test]
fn repeated_failures_lock_an_account_for_a_while() {
    let mut state = State::default();
    ok(&mut state, sign_up("carol"));
    ok(&mut state, fail("carol", T0));
    ok(&mut state, fail("carol", T0 + 1));
    assert!(!state.accounts["carol"].is_locked(T0 + 2));
    ok(&mut state, fail("carol", T0 + 2));
    let account: &Account = &state.accounts["carol"];
    assert!(account.is_locked(T0 + 3));
    assert!(!account.is_locked(T0 + 2 + 600_000), "the lock lifts by itself");
    assert!(
        ok(&mut state, fail("carol", T0 + 4)).is_empty(),
        "failures while locked are not counted"
    );
    // A new password lifts the lock.
    ok(
        &mut state,
        Command::SetPassword {
            name: "carol".into(),
            password_hash: "$argon2id$two".into(),
            at: T0 + 5,
        },
    );
    assert!(!state.accounts["carol"].is_locked(T0 + 6));
    ok(&mut state, fail("carol", T0 + 7));
    assert_eq!(state.accounts["carol"].failed_logins, 1);
    ok(
        &mut state,
        Command::ClearLoginFailures {
            name: "carol".into(),
            at: T0 + 8,
        },
    );
    assert_eq!(state.accounts["carol"].failed_logins, 0);
}

#[test]
fn deleting_or_renaming_a_user_carries_the_account_along() {
    let mut state = State::default();
    ok(
        &mut state,
        Command::CreateUsers {
            names: vec!["carol".into(), "dave".into()],
            admin: false,
            at: T0,
        },
    );
    ok(&mut state, sign_up("carol"));
    ok(&mut state, sign_up("dave"));
    ok(
        &mut state,
        Command::UpdateUser {
            name: "carol".into(),
            rename: Some("caroline".into()),
            admin: None,
            at: T0,
        },
    );
    assert!(state.accounts.contains_key("caroline") && !state.accounts.contains_key("carol"));
    ok(
        &mut state,
        Command::DeleteUser {
            name: "dave".into(),
            at: T0,
        },
    );
    assert!(!state.accounts.contains_key("dave"));
}

#[test]
fn an_identity_binds_one_user_name_and_keeps_it() {
    let mut state = State::default();
    let bind = |identity: &str, user: &str| Command::BindIdentity {
        identity: identity.into(),
        user: user.into(),
        at: T0,
    };
    assert_eq!(ok(&mut state, bind("iss#1", "alice")), ["identity_bound"]);
    assert!(
        ok(&mut state, bind("iss#1", "alice")).is_empty(),
        "binding again is a no-op"
    );
    assert_eq!(
        run(&mut state, bind("iss#2", "alice")),
        Err(Rejection::IdentityConflict { user: "alice".into() }),
        "another subject cannot take alice's name"
    );
    assert_eq!(
        run(&mut state, bind("iss#1", "alicia")),
        Err(Rejection::IdentityConflict { user: "alicia".into() }),
        "nor does a subject get a second name"
    );
}
