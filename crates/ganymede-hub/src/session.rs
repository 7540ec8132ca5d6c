//! Browser sessions as JupyterHub keeps them: the `jupyterhub-hub-login` cookie (signed,
//! path `/hub/`) holds a session secret whose hash names a replicated [`Session`]; the
//! plain `jupyterhub-session-id` cookie (path `/`) holds the public session id; `_xsrf`
//! protects forms and cookie-authenticated API calls. Signatures use a key derived from
//! the replicated cluster secret, so any replica accepts a cookie another one set.
//!
//! [`Session`]: ganymede_model::Session

/// Pure parsing and signing live in the model, where they are fuzzed (`tests/fuzz`).
pub use ganymede_model::credentials::{CookieKey, is_local_path};
use sha2::{Digest, Sha256};

/// `jupyterhub-hub-login`.
pub const LOGIN_COOKIE: &str = "jupyterhub-hub-login";
/// `jupyterhub-session-id`.
pub const SESSION_ID_COOKIE: &str = "jupyterhub-session-id";
/// `_xsrf`.
pub const XSRF_COOKIE: &str = "_xsrf";
/// JupyterHub's `cookie_max_age_days` (14): how long a login lasts.
pub const COOKIE_MAX_AGE_SECS: i64 = 14 * 86_400;

/// The stored form of a session secret.
pub fn hash_session_secret(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"ganymede-session-v1:");
    hasher.update(secret.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    let values = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok());
    ganymede_model::credentials::cookie_value(values, name)
}

#[cfg(test)]
mod tests {
    use super::*;

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
