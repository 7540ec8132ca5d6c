//! Cookie and token parsing (`ganymede_model::credentials`): `Authorization` headers
//! (hub API, CHP API, OAuth clients' HTTP Basic), `Cookie` headers, signed cookies and
//! login `next` targets — all straight from the client.
//!
//! Properties: a token parsed from any header is non-empty and trimmed (CHP's has no
//! white space) and a token written into a header is read back; Basic credentials are
//! form-decoded exactly as Python's `unquote_plus` does, and encoding then decoding
//! gives them back; a cookie is the first of its name; a signed cookie verifies
//! exactly while it is fresh and only under its own name and key, no altered or
//! forged string verifies as another value, and nothing panics on any input; a `next`
//! target judged local resolves, in a browser's URL parser, to this site.
//!
//! Input: text lines, each a case —
//! `header <Authorization value>`, `token <t>` (written under each scheme, read back),
//! `basic <id>:<secret>` (form-encoded, Basic-encoded, read back; and the raw text
//! Basic-encoded, decoded like `unquote_plus`), `cookie <name>=<value>` (the pairs
//! make two `Cookie` headers; `name <n>` asks for one), `signed <issued> <now>
//! <max_age> <value>` (then `edit <index> <char>` alters it), `forged <now> <max_age>
//! <cookie>`, `next <target>`.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ganymede_model::credentials::{
    CookieKey, basic_credentials, chp_token_from_header, cookie_value, is_local_path, token_from_header,
};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "jupyterhub-hub-login";

/// Python's `unquote_plus`, the oracle for Basic credentials.
fn unquote_plus(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn quote_plus(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn check_header(header: &str) {
    if let Some(token) = token_from_header(header) {
        assert!(!token.is_empty() && token.trim() == token && header.contains(token));
    }
    if let Some(token) = chp_token_from_header(header) {
        assert!(!token.is_empty() && !token.contains(char::is_whitespace));
        assert!(header.trim_start().starts_with("token"));
    }
    if let Some((id, secret)) = basic_credentials(header) {
        // Then the header was `Basic <base64 of id:secret>`: decode it the reference way.
        let encoded = header.trim().split_once(' ').expect("a scheme").1.trim();
        let decoded = String::from_utf8(STANDARD.decode(encoded).expect("base64")).expect("utf-8");
        let (raw_id, raw_secret) = decoded.split_once(':').expect("a colon");
        assert_eq!(
            (id, secret),
            (unquote_plus(raw_id), unquote_plus(raw_secret)),
            "{decoded:?}"
        );
    }
}

fn check_token(token: &str) {
    let trimmed = token.trim();
    for scheme in ["token", "bearer", "Token", "BEARER"] {
        let header = format!("{scheme} {token}");
        check_header(&header);
        assert_eq!(token_from_header(&header), Some(trimmed).filter(|t| !t.is_empty()));
    }
    let header = format!("token\t{token}");
    assert_eq!(chp_token_from_header(&header), trimmed.split_whitespace().next());
}

fn check_basic(raw: &str) {
    let header = format!("Basic {}", STANDARD.encode(raw));
    check_header(&header);
    let Some((id, secret)) = raw.split_once(':') else {
        assert_eq!(basic_credentials(&header), None);
        return;
    };
    assert_eq!(
        basic_credentials(&header),
        Some((unquote_plus(id), unquote_plus(secret)))
    );
    // And as a client writes them: form-encoded (so a `:` in the id is fine), then Basic.
    let header = format!(
        "basic {}",
        STANDARD.encode(format!("{}:{}", quote_plus(id), quote_plus(secret)))
    );
    assert_eq!(basic_credentials(&header), Some((id.to_owned(), secret.to_owned())));
}

fn check_cookies(pairs: &[(&str, &str)], names: &[&str]) {
    // Only pairs a browser would send: a name without `=`, `;` or surrounding space, a
    // value without `;`, surrounding space or quotes.
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(k, v)| {
            !k.is_empty()
                && !k.contains(['=', ';'])
                && k.trim() == *k
                && !v.contains(';')
                && v.trim() == *v
                && !v.starts_with('"')
                && !v.ends_with('"')
        })
        .collect();
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let split = joined.len() / 2;
    let headers = [joined[..split].join("; "), joined[split..].join(";")];
    for name in names.iter().chain(pairs.iter().map(|(k, _)| k)) {
        let expected = pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        assert_eq!(
            cookie_value(headers.iter().map(String::as_str), name),
            expected,
            "{headers:?}"
        );
    }
}

fn check_signed(fields: &str, edits: &[(usize, char)]) {
    let mut parts = fields.splitn(4, ' ');
    let (Some(Ok(issued)), Some(Ok(now)), Some(Ok(max_age))) = (
        parts.next().map(str::parse::<i64>),
        parts.next().map(str::parse::<i64>),
        parts.next().map(str::parse::<i64>),
    ) else {
        return;
    };
    let value = parts.next().unwrap_or_default();
    let key = CookieKey::derive("fuzz cluster secret");
    let signed = key.sign(NAME, value, issued);
    let age = now as i128 - issued as i128;
    let fresh = age <= max_age as i128 && age >= -300;
    let verified = key.verify(NAME, &signed, now, max_age);
    assert_eq!(verified.as_deref(), fresh.then_some(value), "age {age}, max {max_age}");
    assert_eq!(key.verify("_xsrf", &signed, now, max_age), None);
    assert_eq!(CookieKey::derive("another").verify(NAME, &signed, now, max_age), None);
    let mut chars: Vec<char> = signed.chars().collect();
    for &(at, replacement) in edits {
        let at = at % chars.len();
        chars[at] = replacement;
    }
    let changed: String = chars.into_iter().collect();
    let verified = key.verify(NAME, &changed, now, max_age);
    // Hex is read in either case: a case change may verify, as the same value.
    assert!(verified.is_none() || verified.as_deref() == Some(value), "{changed}");
}

fn check_forged(fields: &str) {
    let mut parts = fields.splitn(3, ' ');
    let (Some(Ok(now)), Some(Ok(max_age)), Some(cookie)) = (
        parts.next().map(str::parse::<i64>),
        parts.next().map(str::parse::<i64>),
        parts.next(),
    ) else {
        return;
    };
    let key = CookieKey::derive("fuzz cluster secret");
    // Without the key, nothing verifies, and no input panics.
    assert_eq!(key.verify(NAME, cookie, now, max_age), None, "{cookie}");
}

fn check_next(next: &str) {
    if is_local_path(next) {
        let base = url::Url::parse("https://hub.example/hub/login").expect("base");
        let resolved = base.join(next).expect("a local path resolves");
        assert_eq!(resolved.scheme(), "https");
        assert_eq!(resolved.host_str(), Some("hub.example"), "{next:?} -> {resolved}");
        assert_eq!(resolved.port(), None);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (mut pairs, mut names, mut signed, mut edits) = (Vec::new(), Vec::new(), None, Vec::new());
    for line in text.lines() {
        let (case, rest) = line.split_once(' ').unwrap_or((line, ""));
        match case {
            "header" => check_header(rest),
            "token" => check_token(rest),
            "basic" => check_basic(rest),
            "cookie" => pairs.push(rest.split_once('=').unwrap_or((rest, ""))),
            "name" => names.push(rest),
            "signed" => signed = Some(rest),
            "edit" => {
                if let Some((at, replacement)) = rest.split_once(' ')
                    && let (Ok(at), Some(replacement)) = (at.parse::<usize>(), replacement.chars().next())
                {
                    edits.push((at, replacement));
                }
            }
            "forged" => check_forged(rest),
            "next" => check_next(rest),
            _ => {}
        }
    }
    check_cookies(&pairs, &names);
    if let Some(fields) = signed {
        check_signed(fields, &edits);
    }
});
