//! Browser sessions as JupyterHub keeps them: the `jupyterhub-hub-login` cookie (signed,
//! path `/hub/`) holds a session secret whose hash names a replicated [`Session`]; the
//! plain `jupyterhub-session-id` cookie (path `/`) holds the public session id; `_xsrf`
//! protects forms and cookie-authenticated API calls. Signatures use a key derived from
//! the replicated cluster secret, so any replica accepts a cookie another one set.
//!
//! [`Session`]: ganymede_model::Session

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `jupyterhub-hub-login`.
pub const LOGIN_COOKIE: &str = "jupyterhub-hub-login";
/// `jupyterhub-session-id`.
pub const SESSION_ID_COOKIE: &str = "jupyterhub-session-id";
/// `_xsrf`.
pub const XSRF_COOKIE: &str = "_xsrf";
/// JupyterHub's `cookie_max_age_days` (14): how long a login lasts.
pub const COOKIE_MAX_AGE_SECS: i64 = 14 * 86_400;

/// The key cookies are signed with, derived from the cluster secret (domain-separated,
/// so a cookie signature says nothing about the events key).
#[derive(Clone)]
pub struct CookieKey([u8; 32]);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(<redacted>)")
    }
}

impl CookieKey {
    pub fn derive(cluster_secret: &str) -> CookieKey {
        let mut hasher = Sha256::new();
        hasher.update(b"ganymede-cookie-v1:");
        hasher.update(cluster_secret.as_bytes());
        CookieKey(hasher.finalize().into())
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// `name=value` signed at `issued` (seconds): `v1|<hex value>|<issued>|<hex mac>`.
    /// The name is signed too, so one cookie cannot stand in for another.
    pub fn sign(&self, name: &str, value: &str, issued: i64) -> String {
        let issued = issued.to_string();
        let mac = self.mac(&[name.as_bytes(), value.as_bytes(), issued.as_bytes()]);
        format!(
            "v1|{}|{issued}|{}",
            hex::encode(value),
            hex::encode(mac.finalize().into_bytes())
        )
    }

    /// The value of a cookie signed by [`sign`](Self::sign) for `name`, if the
    /// signature holds and it is at most `max_age` seconds old at `now`.
    pub fn verify(&self, name: &str, signed: &str, now: i64, max_age: i64) -> Option<String> {
        let mut parts = signed.split('|');
        let (Some("v1"), Some(value), Some(issued), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let value = String::from_utf8(hex::decode(value).ok()?).ok()?;
        let issued_at: i64 = issued.parse().ok()?;
        if now - issued_at > max_age || issued_at > now + 300 {
            return None;
        }
        let expected = self.mac(&[name.as_bytes(), value.as_bytes(), issued.as_bytes()]);
        expected.verify_slice(&hex::decode(mac).ok()?).ok()?;
        Some(value)
    }

    /// The XSRF token of a session (or of an anonymous browser's `_xsrf` id): derived,
    /// so it need not be stored, and tied to that session alone.
    pub fn xsrf_token(&self, session_id: &str) -> String {
        let mac = self.mac(&[b"xsrf", session_id.as_bytes()]);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// The stored form of a session secret.
pub fn hash_session_secret(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"ganymede-session-v1:");
    hasher.update(secret.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// Whether a `next` target is a path on this site: absolute path, not `//host` or
/// `/\host` (which browsers treat as another origin), no scheme, no control characters.
pub fn is_local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_cookies_verify_only_unchanged_fresh_and_for_their_name() {
        let key = CookieKey::derive("secret");
        let signed = key.sign(LOGIN_COOKIE, "abc", 1_000);
        assert_eq!(key.verify(LOGIN_COOKIE, &signed, 1_000, 60), Some("abc".into()));
        assert_eq!(key.verify(LOGIN_COOKIE, &signed, 1_061, 60), None, "too old");
        assert_eq!(
            key.verify(XSRF_COOKIE, &signed, 1_000, 60),
            None,
            "another cookie's name"
        );
        assert_eq!(
            CookieKey::derive("other").verify(LOGIN_COOKIE, &signed, 1_000, 60),
            None
        );
        let tampered = signed.replacen("|1000|", "|1001|", 1);
        assert_eq!(key.verify(LOGIN_COOKIE, &tampered, 1_001, 60), None);
        assert_eq!(key.verify(LOGIN_COOKIE, "garbage", 1_000, 60), None);
        assert_ne!(key.xsrf_token("s1"), key.xsrf_token("s2"));
    }

    #[test]
    fn next_must_stay_on_this_site() {
        for good in ["/hub/home", "/user/alice/lab?x=1"] {
            assert!(is_local_path(good), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "hub/home",
            "",
            "/a\r\nb",
        ] {
            assert!(!is_local_path(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "cookie",
            "a=1; _xsrf=\"tok\"; jupyterhub-hub-login=v1|x".parse().expect("header"),
        );
        assert_eq!(cookie(&headers, "_xsrf"), Some("tok"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("v1|x"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
