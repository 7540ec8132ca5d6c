//! The edge's route table: an immutable value (cheap to clone, structurally shared)
//! that the request path reads without a lock, and its longest-prefix lookup.

use std::sync::Arc;

use percent_encoding::percent_decode_str;

/// Where a route sends requests, parsed once when the route arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    Http {
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port` as the target gave it.
        authority: String,
        /// The target's path without a trailing `/` (`""` for none); the request's
        /// whole path is appended to it, as configurable-http-proxy does.
        base_path: String,
    },
    /// A target that cannot be used (configurable-http-proxy answers 500 for these).
    Invalid { target: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Upstream {
    pub fn parse(target: &str) -> Upstream {
        let invalid = || Upstream::Invalid {
            target: target.to_owned(),
        };
        let (scheme, rest) = if let Some(rest) = target.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = target.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return invalid();
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
            return invalid();
        }
        Upstream::Http {
            scheme,
            authority: authority.to_owned(),
            base_path: path.trim_end_matches('/').to_owned(),
        }
    }
}

/// One route as the edge holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The route key, e.g. `/user/alice` (or `/hub.example.org/user/alice` under host routing).
    pub path: Arc<str>,
    pub target: Arc<str>,
    pub upstream: Upstream,
}

impl RouteEntry {
    pub fn new(path: &str, target: &str) -> RouteEntry {
        RouteEntry {
            path: Arc::from(normalize_key(path)),
            target: Arc::from(target),
            upstream: Upstream::parse(target),
        }
    }
}

/// A route key in configurable-http-proxy's form: a leading `/`, no trailing `/`, empty
/// segments dropped (`/` itself is the default route).
pub fn normalize_key(path: &str) -> String {
    let mut key = String::with_capacity(path.len() + 1);
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        key.push('/');
        key.push_str(segment);
    }
    if key.is_empty() {
        key.push('/');
    }
    key
}

/// The routes as of one `route_seq`.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: imbl::HashMap<Arc<str>, Arc<RouteEntry>>,
    route_seq: u64,
}

impl RouteTable {
    pub fn new(route_seq: u64, routes: impl IntoIterator<Item = RouteEntry>) -> RouteTable {
        RouteTable {
            routes: routes
                .into_iter()
                .map(|entry| (entry.path.clone(), Arc::new(entry)))
                .collect(),
            route_seq,
        }
    }

    pub fn route_seq(&self) -> u64 {
        self.route_seq
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Arc<RouteEntry>> {
        self.routes.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<RouteEntry>> {
        self.routes.values()
    }

    pub(crate) fn insert(&mut self, entry: RouteEntry) {
        self.routes.insert(entry.path.clone(), Arc::new(entry));
    }

    pub(crate) fn remove(&mut self, path: &str) {
        self.routes.remove(normalize_key(path).as_str());
    }

    pub(crate) fn set_route_seq(&mut self, route_seq: u64) {
        self.route_seq = route_seq;
    }

    /// The route for a request: the longest route key made of whole leading segments of
    /// the percent-decoded path (the query is not part of `path`). Under host routing the
    /// host (without its port) comes first, as if it were the path's first segments, and
    /// `/` stays the global fallback.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Arc<RouteEntry>> {
        let decoded = percent_decode_str(path).decode_utf8_lossy();
        let mut key = String::with_capacity(decoded.len() + host.map_or(0, str::len) + 2);
        // Where each candidate prefix ends, shortest first.
        let mut ends: [usize; 16] = [0; 16];
        let mut count = 0;
        // The host is split like the path (as CHP, which prefixes it to the path): a
        // `/` in a Host header must not make the shallow search differ from the deep one.
        let segments = host
            .map(|host| host.split(':').next().unwrap_or(host))
            .into_iter()
            .flat_map(|host| host.split('/'))
            .chain(decoded.split('/'))
            .filter(|segment| !segment.is_empty());
        for segment in segments {
            key.push('/');
            key.push_str(segment);
            if count < ends.len() {
                ends[count] = key.len();
                count += 1;
            } else {
                // Deep paths: keep the last slots moving so the longest prefixes are tried.
                ends.copy_within(1.., 0);
                ends[ends.len() - 1] = key.len();
            }
        }
        for &end in ends[..count].iter().rev() {
            if let Some(entry) = self.routes.get(&key[..end]) {
                return Some(entry);
            }
        }
        if count == ends.len() {
            // More than 16 segments: the shallow prefixes were not remembered; walk them.
            let mut end = key.len();
            while let Some(slash) = key[..end].rfind('/') {
                if slash == 0 {
                    break;
                }
                end = slash;
                if let Some(entry) = self.routes.get(&key[..end]) {
                    return Some(entry);
                }
            }
        }
        self.routes.get("/")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table(paths: &[&str]) -> RouteTable {
        RouteTable::new(
            1,
            paths
                .iter()
                .map(|path| RouteEntry::new(path, &format!("http://127.0.0.1:1{}", path.len()))),
        )
    }

    fn found(table: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        table.lookup(host, path).map(|entry| entry.path.to_string())
    }

    #[test]
    fn longest_prefix_on_whole_segments_like_chp() {
        let routes = table(&["/user/alice", "/user/alice/lab", "/user/u sp", "/hub"]);
        let cases = [
            ("/user/alice", Some("/user/alice")),
            ("/user/alice/", Some("/user/alice")),
            ("/user/alice/tree", Some("/user/alice")),
            ("/user/alice/lab/x", Some("/user/alice/lab")),
            ("/user/alicex/", None),
            ("/USER/alice/", None),
            ("/user/u%20sp/api", Some("/user/u sp")),
            ("//user//alice", Some("/user/alice")),
            ("/", None),
            ("", None),
        ];
        for (path, expected) in cases {
            assert_eq!(found(&routes, None, path).as_deref(), expected, "{path}");
        }
        let with_default = table(&["/", "/user/alice"]);
        assert_eq!(found(&with_default, None, "/user/bob/").as_deref(), Some("/"));
        assert_eq!(
            found(&with_default, None, "/user/alice/a").as_deref(),
            Some("/user/alice")
        );
    }

    #[test]
    fn host_routing_puts_the_host_first_and_keeps_the_default() {
        let routes = table(&["/", "/alice.hub.org/", "/alice.hub.org/api"]);
        assert_eq!(
            found(&routes, Some("alice.hub.org:8443"), "/lab").as_deref(),
            Some("/alice.hub.org")
        );
        assert_eq!(
            found(&routes, Some("alice.hub.org"), "/api/kernels").as_deref(),
            Some("/alice.hub.org/api")
        );
        assert_eq!(found(&routes, Some("bob.hub.org"), "/lab").as_deref(), Some("/"));
    }

    #[test]
    fn deep_paths_still_find_shallow_routes() {
        let routes = table(&["/user/alice", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r"]);
        let deep = format!("/user/alice{}", "/x".repeat(40));
        assert_eq!(found(&routes, None, &deep).as_deref(), Some("/user/alice"));
        assert_eq!(
            found(&routes, None, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t").as_deref(),
            Some("/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r")
        );
    }

    #[test]
    fn targets_parse_once() {
        assert_eq!(
            Upstream::parse("http://127.0.0.1:9000/base/?x=1"),
            Upstream::Http {
                scheme: Scheme::Http,
                authority: "127.0.0.1:9000".into(),
                base_path: "/base".into()
            }
        );
        assert_eq!(
            Upstream::parse("https://h"),
            Upstream::Http {
                scheme: Scheme::Https,
                authority: "h".into(),
                base_path: "".into()
            }
        );
        for bad in ["ftp://x", "http://", "x", "http://u:p@h/"] {
            assert!(matches!(Upstream::parse(bad), Upstream::Invalid { .. }), "{bad}");
        }
    }

    fn naive(routes: &[String], path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        (0..=segments.len())
            .rev()
            .map(|n| normalize_key(&segments[..n].join("/")))
            .find(|key| routes.contains(key))
    }

    /// Found by `tests/fuzz`'s `route_match`: under host routing a Host with a `/` was
    /// one segment for paths of up to 16 segments and several for deeper ones, so the
    /// same host reached another route depending on the path's depth.
    #[test]
    fn t90_issue_a_host_with_a_slash_is_split_like_the_path() {
        let routes = table(&["/", "/ab"]);
        assert_eq!(found(&routes, Some("ab/a"), "/").as_deref(), Some("/ab"));
        let deep = "/x".repeat(20);
        assert_eq!(found(&routes, Some("ab/a"), &deep).as_deref(), Some("/ab"));
        assert_eq!(found(&routes, Some("ab.org/a:80"), "/").as_deref(), Some("/"));
    }

    /// The specification, spelled out for host routing and encoded paths.
    fn naive_with_host(routes: &[String], host: Option<&str>, path: &str) -> Option<String> {
        let decoded = percent_decode_str(path).decode_utf8_lossy();
        let full = match host {
            Some(host) => format!("/{}/{decoded}", host.split(':').next().unwrap_or(host)),
            None => decoded.into_owned(),
        };
        naive(routes, &full)
    }

    proptest! {
        /// The property `tests/fuzz`'s `route_match` target checks, with hosts (a `/` or
        /// a port in them) and percent-encoded segments.
        #[test]
        fn lookup_with_hosts_agrees_with_a_naive_search(
            routes in proptest::collection::vec("(/(a|b|h|h.o| |é)){0,4}", 0..12),
            host in proptest::option::of("(a|b|h|h.o|/|:8|%2F){1,4}"),
            path in "(/(a|b|%2F|%20|%C3%A9|%C3|)){0,20}",
        ) {
            let keys: Vec<String> = routes.iter().map(|r| normalize_key(r)).collect();
            let table = RouteTable::new(1, keys.iter().map(|k| RouteEntry::new(k, "http://h")));
            prop_assert_eq!(
                found(&table, host.as_deref(), &path),
                naive_with_host(&keys, host.as_deref(), &path)
            );
        }

        #[test]
        fn lookup_agrees_with_a_naive_search(
            routes in proptest::collection::vec("(/[abc]{1,2}){0,4}", 0..20),
            path in "(/[abc]{0,2}){0,24}",
        ) {
            let keys: Vec<String> = routes.iter().map(|r| normalize_key(r)).collect();
            let table = RouteTable::new(1, keys.iter().map(|k| RouteEntry::new(k, "http://h")));
            prop_assert_eq!(found(&table, None, &path), naive(&keys, &path));
        }
    }
}
