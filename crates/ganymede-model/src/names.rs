//! JupyterHub's naming rules: how user names are normalized and which user, server and
//! route names are acceptable. The hub applies these before proposing; `decide` applies
//! them again so that no replica can be talked into committing an invalid name.

/// The longest user name we accept. JupyterHub has no hard limit, but names end up in
/// URLs, cookie names and OAuth client ids; 255 keeps all of those well-formed.
pub const MAX_USER_NAME_LEN: usize = 255;

/// JupyterHub 6 limits named servers to 30 characters.
pub const MAX_SERVER_NAME_LEN: usize = 30;

/// The default `Authenticator.normalize_username`: user names are case-insensitive and
/// stored lowercase.
pub fn normalize_user_name(raw: &str) -> String {
    raw.to_lowercase()
}

/// Whether an already normalized user name is acceptable: not empty, no `/` (it would
/// change the meaning of `/user/<name>/`), no surrounding white space, no control
/// characters.
pub fn is_valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && !name.contains('/')
        && name.trim() == name
        && !name.chars().any(char::is_control)
}

/// Whether `name` is a valid *named* server name: `^[a-z][a-z0-9]*(-[a-z0-9]+)*$`,
/// 1–30 characters. The default server's name is `""` and is not a named server.
pub fn is_valid_server_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_SERVER_NAME_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut previous_was_dash = false;
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => previous_was_dash = false,
            b'-' if !previous_was_dash => previous_was_dash = true,
            _ => return false,
        }
    }
    !previous_was_dash
}

/// configurable-http-proxy's route keys: a leading `/`, no trailing `/` (but `/` itself
/// is the default route). `user/alice/` and `/user/alice` are the same route.
pub fn normalize_route_path(raw: &str) -> String {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Whether a proxy route path (configurable-http-proxy's "routespec") is acceptable:
/// absolute, no empty or dot segments, no control characters. Spaces are allowed: CHP
/// stores percent-decoded keys (`/user/u%20sp` is `/user/u sp`).
pub fn is_valid_route_path(path: &str) -> bool {
    if !path.starts_with('/') || path.len() > 2048 {
        return false;
    }
    if path.chars().any(char::is_control) {
        return false;
    }
    // One leading `/` only: `//user/alice` has an empty segment, and the edge (which
    // drops empty segments) would key it as `/user/alice`, another route of the hub's.
    let inner = path[1..].trim_end_matches('/');
    inner.is_empty()
        || inner
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Percent-encodes everything but `[A-Za-z0-9_.~@-]`, as Python's `urllib.parse.quote`
/// with `safe="@~"` does for the names JupyterHub puts in URLs, cookie names and
/// OAuth client ids.
pub fn url_quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"_.-~@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_jupyterhub() {
        assert_eq!(normalize_user_name("Alice"), "alice");
        for good in ["alice", "a", "bob.smith", "carol@example.org", "dave-1", "ünïcode"] {
            assert!(is_valid_user_name(good), "{good:?} should be valid");
        }
        let too_long = "x".repeat(MAX_USER_NAME_LEN + 1);
        for bad in [
            "",
            "a/b",
            " alice",
            "alice ",
            "al\nice",
            "al\u{0}ice",
            too_long.as_str(),
        ] {
            assert!(!is_valid_user_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn server_names_follow_jupyterhub_6() {
        for good in ["a", "lab", "gpu-2", "a1-b2-c3", &"a".repeat(30)] {
            assert!(is_valid_server_name(good), "{good:?} should be valid");
        }
        let too_long = "a".repeat(31);
        for bad in [
            "",
            "1lab",
            "-lab",
            "lab-",
            "la--b",
            "Lab",
            "la_b",
            "la b",
            too_long.as_str(),
        ] {
            assert!(!is_valid_server_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn route_paths_normalize_like_chp() {
        assert_eq!(normalize_route_path("/user/alice/"), "/user/alice");
        assert_eq!(normalize_route_path("user/alice"), "/user/alice");
        assert_eq!(normalize_route_path("/"), "/");
        assert_eq!(normalize_route_path(""), "/");
    }

    #[test]
    fn route_paths() {
        for good in ["/", "/user/alice/", "/user/alice", "/services/x/y/", "/user/u sp"] {
            assert!(is_valid_route_path(good), "{good:?} should be valid");
        }
        for bad in ["", "user/alice", "/user//alice", "/user/../x", "/a\n", "/a\t"] {
            assert!(!is_valid_route_path(bad), "{bad:?} should be invalid");
        }
    }

    /// Found by `tests/fuzz`'s `chp_path`: `POST /api/routes//user/alice` was accepted as
    /// the key `//user/alice`, which the edges (dropping empty segments) keyed as
    /// `/user/alice`: two routes on the hubs, one on the edges, and deleting either
    /// removed the edges' only one.
    #[test]
    fn t90_issue_route_keys_with_a_leading_empty_segment() {
        for bad in ["//user/alice", "///user/alice/", "// "] {
            assert!(!is_valid_route_path(bad), "{bad:?} should be invalid");
        }
        assert!(
            is_valid_route_path("/user/alice//"),
            "trailing slashes are normalized away"
        );
    }

    fn segments(path: &str) -> Vec<&str> {
        path.split('/').filter(|segment| !segment.is_empty()).collect()
    }

    proptest::proptest! {
        /// The properties `tests/fuzz`'s `chp_path` target checks on the CHP API's keys.
        #[test]
        fn route_keys_are_normal_and_accepted_ones_have_no_empty_or_dot_segments(
            raw in "[/a.\\ %\n]{0,12}",
        ) {
            let key = normalize_route_path(&raw);
            proptest::prop_assert!(key.starts_with('/'));
            proptest::prop_assert!(key == "/" || !key.ends_with('/'));
            proptest::prop_assert_eq!(normalize_route_path(&key), key.clone());
            proptest::prop_assert_eq!(segments(&key), segments(&raw));
            if is_valid_route_path(&key) && key != "/" {
                for segment in key[1..].split('/') {
                    proptest::prop_assert!(!segment.is_empty() && segment != "." && segment != "..", "{:?}", key);
                }
                proptest::prop_assert!(!key.chars().any(char::is_control));
            }
        }

        /// A server's route key is accepted and made of the link's decoded segments
        /// (user names `.` and `..` excepted: see `is_valid_user_name`'s callers).
        #[test]
        fn server_route_keys_are_valid_routes(user in "[a-zA-Z0-9 %?#@é.]{1,8}", named in proptest::bool::ANY) {
            let user = normalize_user_name(&user);
            proptest::prop_assume!(is_valid_user_name(&user) && user != "." && user != "..");
            let key = crate::state::route_key_for(&user, if named { "gpu" } else { "" });
            proptest::prop_assert!(is_valid_route_path(&key), "{:?}", key);
            proptest::prop_assert_eq!(normalize_route_path(&key), key.clone());
            let link = crate::state::route_path_for(&url_quote(&user), if named { "gpu" } else { "" });
            let decoded: Vec<String> = segments(&link).iter().map(|s| percent_decode(s)).collect();
            proptest::prop_assert_eq!(decoded, segments(&key));
        }
    }

    /// `%XX` → byte, for the test above (the edge decodes with `percent-encoding`).
    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("url_quote writes two hex digits"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8 in, utf-8 out")
    }
}
