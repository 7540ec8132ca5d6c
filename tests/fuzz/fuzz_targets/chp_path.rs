//! configurable-http-proxy's routes API path handling (`/api/routes/<path>`: decoded by
//! axum, then `names::normalize_route_path`, then `decide`'s `is_valid_route_path`), and
//! the route keys the hub makes for servers (`route_key_for`, the links `server_url`).
//!
//! Properties: a key has a leading `/`, no trailing `/`, the same segments as the path it
//! came from, and normalizing it again changes nothing; a key `decide` accepts has no
//! empty, `.` or `..` segment and no control character, the edge stores it under the same
//! key, and the edge sends a request to it only if the request's decoded path starts with
//! the key's segments (a route never captures a sibling, and never what is above it); the
//! link to a user's server reaches that server's route through the edge, and a browser
//! leaves it as it is — except for the user names `.` and `..`, which browsers resolve
//! away (JupyterHub's rules allow them; see the note in `names.rs`).
//!
//! Input: text lines `api <what follows /api/routes/ on the wire>`, `request <a path
//! an edge receives>`, `user <name>` and `server <name>`; other lines are ignored.

#![no_main]

use ganymede_events::{RouteEntry, RouteTable, normalize_key};
use ganymede_model::names::{
    is_valid_route_path, is_valid_server_name, is_valid_user_name, normalize_route_path, normalize_user_name, url_quote,
};
use ganymede_model::route_path_for;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// What a client escapes in a path segment (everything but unreserved characters).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn encode(key: &str) -> String {
    segments(key)
        .iter()
        .map(|s| format!("/{}", utf8_percent_encode(s, SEGMENT)))
        .collect()
}

fn check_accepted_key(key: &str, requests: &[&str]) {
    assert_eq!(normalize_key(key), key, "the edge keys it differently");
    assert!(!key.chars().any(char::is_control));
    if key != "/" {
        for segment in key[1..].split('/') {
            assert!(!segment.is_empty() && segment != "." && segment != "..", "{key:?}");
        }
    }
    // A sibling and the parent next to it, as other users' routes would be.
    let sibling = format!("{key}x");
    let parent = match key.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(at) => key[..at].to_owned(),
    };
    let table = RouteTable::new(
        1,
        [key, sibling.as_str(), parent.as_str()]
            .into_iter()
            .map(|k| RouteEntry::new(k, "http://127.0.0.1:1")),
    );
    let under = format!("{}/lab/tree", encode(key));
    assert_eq!(
        table.lookup(None, &under).map(|e| e.path.to_string()).as_deref(),
        Some(key)
    );
    for request in requests {
        if let Some(found) = table.lookup(None, request) {
            let decoded = percent_decode_str(request).decode_utf8_lossy();
            let requested = segments(&decoded);
            let route = segments(&found.path);
            assert!(requested.starts_with(&route), "{request:?} went to {:?}", found.path);
        }
    }
}

/// The model's `route_key_for` (not exported): the server's path, normalized.
fn route_key_for(user: &str, server: &str) -> String {
    normalize_route_path(&route_path_for(user, server))
}

fn check_server_link(user: &str, server: &str) {
    let key = route_key_for(user, server);
    assert!(is_valid_route_path(&key) || user == "." || user == "..", "{key:?}");
    assert_eq!(normalize_key(&key), key);
    // What `render::server_url` links to.
    let link = route_path_for(&url_quote(user), &url_quote(server));
    let others = [
        route_key_for("alice", ""),
        route_key_for(&format!("{user}x"), server),
        route_key_for(user, "gpu"),
    ];
    let table = RouteTable::new(
        1,
        std::iter::once(&key)
            .chain(&others)
            .map(|k| RouteEntry::new(k, "http://127.0.0.1:1")),
    );
    let found = table.lookup(None, &format!("{link}lab"));
    assert_eq!(found.map(|e| e.path.to_string()), Some(key.clone()), "{link}");
    let base = url::Url::parse("https://hub.example/hub/home").expect("base");
    let followed = base.join(&link).expect("a path joins");
    if user != "." && user != ".." {
        assert_eq!(followed.path(), link, "a browser rewrites the link");
        assert_eq!(followed.host_str(), Some("hub.example"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (mut raws, mut requests, mut user, mut server) = (Vec::new(), Vec::new(), None, "");
    for line in text.lines() {
        if let Some(raw) = line.strip_prefix("api ") {
            raws.push(raw);
        } else if let Some(request) = line.strip_prefix("request ") {
            requests.push(request);
        } else if let Some(name) = line.strip_prefix("user ") {
            user = Some(name);
        } else if let Some(name) = line.strip_prefix("server ") {
            server = name;
        }
    }
    for raw in raws {
        // axum's `Path` answers 400 for a path that is not UTF-8 once decoded.
        let Ok(decoded) = percent_decode_str(raw).decode_utf8() else {
            continue;
        };
        let key = normalize_route_path(&decoded);
        assert!(key.starts_with('/'));
        assert!(key == "/" || !key.ends_with('/'), "{key:?}");
        assert_eq!(normalize_route_path(&key), key);
        assert_eq!(segments(&key), segments(&decoded));
        if is_valid_route_path(&key) {
            check_accepted_key(&key, &requests);
        }
    }
    if let Some(user) = user {
        let user = normalize_user_name(user);
        if is_valid_user_name(&user) && (server.is_empty() || is_valid_server_name(server)) {
            check_server_link(&user, server);
        }
    }
});
