//! Scope parsing and expansion (`ganymede_model::rbac`): scopes come from token
//! requests, OAuth authorizations and role configuration.
//!
//! Properties: `validate` accepts exactly what `expand` can parse; expansion is
//! idempotent (expanding the listed result gives it back) and monotone (more scopes
//! never reach less, on any resource); union is order-free; resolving bare filters for
//! storage and expanding later equals expanding at once; an intersection is within both
//! sides and symmetric; a token never holds more than its owner; `access` says 403 only
//! when no needed scope is held and grants only what `allows`.
//!
//! Input: text lines `a <scope>` and `b <scope>` (two requests), `service` (they are a
//! service's, `culler`, rather than `alice`'s), `client <user/server>` (the OAuth
//! client's server that `!server` names; it must hold a `/`, as servers' do) and
//! `admin` (the owner is an admin); other lines are ignored.

#![no_main]

use std::collections::BTreeSet;

use ganymede_model::rbac::{Access, Resource, Roles, ScopeSet, Subject, expand, resolve_for_token, validate};
use ganymede_model::{Group, Service, State, Token, TokenOwner, User};
use libfuzzer_sys::fuzz_target;

fn state(owner_admin: bool) -> State {
    let mut state = State::default();
    for name in ["alice", "bob"] {
        state.users.insert(
            name.into(),
            User {
                name: name.into(),
                admin: owner_admin && name == "alice",
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
            admin: owner_admin,
            roles: BTreeSet::new(),
            created: 0,
        },
    );
    state
}

const RESOURCES: [Resource<'static>; 8] = [
    Resource::Hub,
    Resource::User("alice"),
    Resource::User("bob"),
    Resource::Server {
        user: "alice",
        server: "",
    },
    Resource::Server {
        user: "alice",
        server: "gpu",
    },
    Resource::Server {
        user: "bob",
        server: "",
    },
    Resource::Group("students"),
    Resource::Service("culler"),
];

fn names_of(set: &ScopeSet) -> BTreeSet<String> {
    set.to_strings()
        .iter()
        .map(|s| s.split_once('!').map_or(s.as_str(), |(name, _)| name).to_owned())
        .collect()
}

/// `narrow` reaches nothing `wide` does not, on any resource we know.
fn reaches_within(narrow: &ScopeSet, wide: &ScopeSet, state: &State) {
    for name in names_of(narrow) {
        for resource in RESOURCES {
            if narrow.allows(&name, resource, state) {
                assert!(wide.allows(&name, resource, state), "{name} on {resource:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (mut a, mut b, mut service, mut client_server, mut owner_admin) = (Vec::new(), Vec::new(), false, None, false);
    for line in text.lines() {
        match line.split_once(' ').unwrap_or((line, "")) {
            ("a", scope) => a.push(scope.to_owned()),
            ("b", scope) => b.push(scope.to_owned()),
            ("service", _) => service = true,
            ("client", server) if server.contains('/') => client_server = Some(server),
            ("admin", _) => owner_admin = true,
            _ => {}
        }
    }
    let state = state(owner_admin);
    let subject = if service {
        Subject::Service("culler")
    } else {
        Subject::User("alice")
    };
    let both: Vec<String> = a.iter().chain(&b).cloned().collect();
    let reversed: Vec<String> = b.iter().chain(&a).cloned().collect();

    let expanded_a = expand(&a, subject, client_server);
    // Whatever expands was valid; whatever is invalid does not expand.
    if expanded_a.is_ok() {
        assert_eq!(validate(&a), Ok(()));
    }
    if let Err(err) = validate(&a) {
        assert!(expanded_a.is_err(), "{err}");
    }
    let Ok(expanded_a) = expanded_a else { return };

    // Idempotent: the listed scopes expand to the same set, for anyone.
    let listed = expanded_a.to_strings();
    assert_eq!(expand(&listed, subject, None).as_ref(), Ok(&expanded_a), "{listed:?}");
    assert_eq!(expand(&listed, Subject::User("bob"), None).as_ref(), Ok(&expanded_a));

    // Resolving for storage, then expanding without the issuing client, is the same.
    let stored = resolve_for_token(&a, subject, client_server).expect("expandable scopes resolve");
    assert_eq!(expand(&stored, subject, None).as_ref(), Ok(&expanded_a), "{stored:?}");

    assert_eq!(expanded_a.intersect(&expanded_a, &state), expanded_a);

    let Ok(expanded_b) = expand(&b, subject, client_server) else {
        return;
    };
    let union = expand(&both, subject, client_server).expect("both sides expand");
    // Monotone, and order does not matter.
    assert!(expanded_a.is_within(&union, &state));
    assert!(expanded_b.is_within(&union, &state));
    reaches_within(&expanded_a, &union, &state);
    assert_eq!(expand(&reversed, subject, client_server).as_ref(), Ok(&union));

    // The intersection is within both and the same either way round.
    let met = expanded_a.intersect(&expanded_b, &state);
    assert_eq!(met, expanded_b.intersect(&expanded_a, &state));
    assert!(met.is_within(&expanded_a, &state) && met.is_within(&expanded_b, &state));
    reaches_within(&met, &expanded_a, &state);
    reaches_within(&met, &expanded_b, &state);

    // `access` agrees with `allows` and `holds`.
    let needed: Vec<String> = names_of(&expanded_b).into_iter().take(3).collect();
    let needed: Vec<&str> = needed.iter().map(String::as_str).collect();
    for resource in RESOURCES {
        match expanded_a.access(&needed, resource, &state) {
            Access::Granted => assert!(needed.iter().any(|n| expanded_a.allows(n, resource, &state))),
            Access::NotFound => assert!(needed.iter().any(|n| expanded_a.holds(n))),
            Access::Forbidden => assert!(!needed.iter().any(|n| expanded_a.holds(n))),
        }
    }

    // A token holds no more than its owner, whatever it asked for.
    if client_server.is_none() {
        let roles = Roles::default();
        let owner = match subject {
            Subject::User(name) => TokenOwner::User(name.into()),
            Subject::Service(name) => TokenOwner::Service(name.into()),
        };
        let token = Token {
            id: 1,
            hash: "h".into(),
            owner: owner.clone(),
            scopes: stored,
            note: String::new(),
            created: 0,
            expires_at: None,
            last_activity: None,
            session_id: None,
            oauth_client: None,
        };
        let held = roles.owner_scopes(&state, &owner);
        let token_scopes = roles.token_scopes(&state, &token);
        assert!(token_scopes.is_within(&held, &state));
        reaches_within(&token_scopes, &held, &state);
    }
});
