//! How credentials arrive in requests, parsed without I/O so that they can be fuzzed
//! apart from the hub: the `Authorization` header's schemes (JupyterHub's `token`/`bearer`,
//! configurable-http-proxy's `token`, OAuth clients' HTTP Basic), the `Cookie` header,
//! cookies signed with a key derived from the cluster secret, XSRF tokens, and the
//! `next` targets a login may redirect to. The hub wires these to HTTP; everything here
//! is a pure function of its arguments.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The token in a hub API `Authorization` header, if the scheme is `token` or `bearer`
/// (any case), as JupyterHub's `(?:token|bearer)\s+(.+)` reads it.
pub fn token_from_header(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then_some(token)
        .filter(|t| !t.is_empty())
}

/// The token in a configurable-http-proxy API `Authorization` header: CHP reads it with
/// the pattern `token\s+(\S+)`.
pub fn chp_token_from_header(value: &str) -> Option<&str> {
    value
        .trim()
        .strip_prefix("token")
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .and_then(|rest| rest.split_whitespace().next())
}

/// An OAuth client's id and secret from an HTTP Basic `Authorization` header
/// (`client_secret_basic`, RFC 6749 §2.3.1: each part form-urlencoded, then
/// `base64(id:secret)`).
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_unquote(id), form_unquote(secret)))
}

/// `application/x-www-form-urlencoded` decoding of one component, as Python's
/// `unquote_plus`: `+` is a space, `%XX` (two hex digits) a byte, any other `%` itself.
fn form_unquote(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // Two hex digits, nothing else: `from_str_radix` also takes a sign, and read
            // `%+1` as the byte 1 where Python keeps `% 1`.
            b'%' => match (hex_digit(bytes.get(i + 1)), hex_digit(bytes.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(byte: Option<&u8>) -> Option<u8> {
    byte.and_then(|&b| (b as char).to_digit(16)).map(|digit| digit as u8)
}

/// The value of cookie `name` among a request's `Cookie` header values (the first one
/// that names it), without surrounding quotes.
pub fn cookie_value<'a>(header_values: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    header_values
        .into_iter()
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
        let expected = self.mac(&[name.as_bytes(), value.as_bytes(), issued.as_bytes()]);
        expected.verify_slice(&hex::decode(mac).ok()?).ok()?;
        // In i128: `issued` is the client's, and `now - issued` overflowed an i64 (a
        // panic where overflow checks are on) before the signature was even checked.
        let age = i128::from(now) - i128::from(issued_at);
        (age <= i128::from(max_age) && age >= -300).then_some(value)
    }

    /// The XSRF token of a session (or of an anonymous browser's `_xsrf` id): derived,
    /// so it need not be stored, and tied to that session alone.
    pub fn xsrf_token(&self, session_id: &str) -> String {
        let mac = self.mac(&[b"xsrf", session_id.as_bytes()]);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

#[cfg(test)]
mod tests;
