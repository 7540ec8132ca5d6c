//! The edge's route matcher (`RouteTable::lookup`) and target parser (`Upstream::parse`).
//!
//! Properties: the route found is the longest key made of whole leading segments of
//! `/` + host (without its port, under host routing) + the percent-decoded path, `/`
//! being the fallback — compared with a brute-force search over every prefix; a parsed
//! target has a non-empty authority without userinfo or white space and a base path
//! without a trailing `/`, query or fragment, and writing it back parses the same.
//!
//! Input: text lines `route <key>` (as added: decoded, normalized by the edge),
//! `host <Host header>` (host routing on), `path <request path as on the wire>` and
//! `target <route target>`; other lines are ignored.

#![no_main]

use ganymede_events::{RouteEntry, RouteTable, Scheme, Upstream, normalize_key};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;

/// The specification, spelled out: every prefix of whole segments, longest first.
fn brute_force(keys: &[String], host: Option<&str>, path: &str) -> Option<String> {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let full = match host {
        Some(host) => format!("/{}/{decoded}", host.split(':').next().unwrap_or(host)),
        None => decoded.into_owned(),
    };
    let segments: Vec<&str> = full.split('/').filter(|s| !s.is_empty()).collect();
    (0..=segments.len())
        .rev()
        .map(|n| normalize_key(&segments[..n].join("/")))
        .find(|key| keys.contains(key))
}

fn check_target(target: &str) {
    match Upstream::parse(target) {
        Upstream::Invalid { target: kept } => assert_eq!(kept, target),
        Upstream::Http {
            scheme,
            authority,
            base_path,
        } => {
            assert!(!authority.is_empty() && !authority.contains('@'));
            assert!(!authority.contains(char::is_whitespace) && !authority.contains(['/', '?', '#']));
            assert!(!base_path.ends_with('/') && !base_path.contains(['?', '#']));
            assert!(base_path.is_empty() || base_path.starts_with('/'));
            let scheme_text = match scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            };
            let written = format!("{scheme_text}://{authority}{base_path}");
            assert!(target.starts_with(&written));
            assert_eq!(
                Upstream::parse(&written),
                Upstream::Http {
                    scheme,
                    authority,
                    base_path
                }
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (mut keys, mut host, mut paths) = (Vec::new(), None, Vec::new());
    for line in text.lines() {
        if let Some(key) = line.strip_prefix("route ") {
            keys.push(normalize_key(key));
        } else if let Some(value) = line.strip_prefix("host ") {
            host = Some(value);
        } else if let Some(path) = line.strip_prefix("path ") {
            paths.push(path);
        } else if let Some(target) = line.strip_prefix("target ") {
            check_target(target);
        }
    }
    let table = RouteTable::new(1, keys.iter().map(|key| RouteEntry::new(key, "http://127.0.0.1:1")));
    for key in &keys {
        assert_eq!(
            table.get(key).map(|entry| entry.path.to_string()).as_deref(),
            Some(key.as_str())
        );
    }
    for path in paths {
        let found = table.lookup(host, path).map(|entry| entry.path.to_string());
        assert_eq!(
            found,
            brute_force(&keys, host, path),
            "host {host:?} path {path:?} routes {keys:?}"
        );
    }
});
