//! Table tests, and the properties `tests/fuzz`'s `cookie_token` target checks, as
//! proptests so that plain `cargo test` runs them too.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

use super::*;

const LOGIN_COOKIE: &str = "jupyterhub-hub-login";
const XSRF_COOKIE: &str = "_xsrf";

#[test]
fn authorization_schemes() {
    assert_eq!(token_from_header("token abc"), Some("abc"));
    assert_eq!(token_from_header("Bearer abc"), Some("abc"));
    assert_eq!(token_from_header("TOKEN   abc "), Some("abc"));
    assert_eq!(token_from_header("Basic abc"), None);
    assert_eq!(token_from_header("token"), None);
    assert_eq!(token_from_header("abc"), None);
}

#[test]
fn chp_reads_token_then_one_word() {
    assert_eq!(chp_token_from_header("token abc"), Some("abc"));
    assert_eq!(chp_token_from_header("  token \t abc def"), Some("abc"));
    assert_eq!(chp_token_from_header("tokenabc"), None);
    assert_eq!(chp_token_from_header("Token abc"), None);
    assert_eq!(chp_token_from_header("token "), None);
    assert_eq!(chp_token_from_header("bearer abc"), None);
}

#[test]
fn basic_credentials_are_form_decoded() {
    let header = format!("Basic {}", STANDARD.encode("service-x:s%3Acret+2"));
    assert_eq!(
        basic_credentials(&header),
        Some(("service-x".into(), "s:cret 2".into()))
    );
    assert_eq!(basic_credentials("token abc"), None);
    assert_eq!(basic_credentials("Basic !!!"), None);
    assert_eq!(
        basic_credentials(&format!("Basic {}", STANDARD.encode("no-colon"))),
        None
    );
}

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
    assert_eq!(format!("{key:?}"), "CookieKey(<redacted>)");
}

/// Found by `tests/fuzz`'s `cookie_token`: `now - issued` overflowed for an `issued` of
/// the client's choosing, before the signature was checked — a panic wherever overflow
/// checks are on (the dev profile the binaries are built with), from an unsigned cookie.
#[test]
fn t90_issue_cookie_issued_time_overflow() {
    let key = CookieKey::derive("secret");
    for issued in [i64::MIN, -6_301_141_527_380_826_080, i64::MAX] {
        let forged = format!("v1|616263|{issued}|{}", "00".repeat(32));
        assert_eq!(key.verify(LOGIN_COOKIE, &forged, 1_700_000_000, 60), None);
    }
    let signed = key.sign(LOGIN_COOKIE, "abc", 7_954_882_445_358_199_184);
    assert_eq!(key.verify(LOGIN_COOKIE, &signed, -6_301_141_527_380_826_080, 0), None);
    let signed = key.sign(LOGIN_COOKIE, "abc", i64::MIN);
    assert_eq!(key.verify(LOGIN_COOKIE, &signed, i64::MAX, i64::MAX), None);
    assert_eq!(key.verify(LOGIN_COOKIE, &signed, i64::MIN, 0), Some("abc".into()));
}

/// Found by `tests/fuzz`'s `cookie_token`: `%+1` in a Basic credential decoded to the
/// byte 1 (`u8::from_str_radix` takes a sign) where Python's `unquote_plus`, which
/// OAuth clients encode for, keeps `% 1`.
#[test]
fn t90_issue_basic_credentials_percent_before_a_sign() {
    let header = format!("Basic {}", STANDARD.encode("id:%+11%-1%2"));
    assert_eq!(basic_credentials(&header), Some(("id".into(), "% 11%-1%2".into())));
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
    let header = ["a=1; _xsrf=\"tok\"; jupyterhub-hub-login=v1|x", "b=2; a=3"];
    assert_eq!(cookie_value(header, "_xsrf"), Some("tok"));
    assert_eq!(cookie_value(header, LOGIN_COOKIE), Some("v1|x"));
    assert_eq!(cookie_value(header, "a"), Some("1"), "the first one");
    assert_eq!(cookie_value(header, "b"), Some("2"));
    assert_eq!(cookie_value(header, "c"), None);
}

/// Python's `unquote_plus`, written differently from [`form_unquote`]: the oracle.
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
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` encoding of one component.
fn quote_plus(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn hostile_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('%'),
            Just('+'),
            Just('-'),
            Just(':'),
            Just(' '),
            Just('a'),
            Just('F'),
            Just('0'),
            Just('7'),
            Just('é'),
        ],
        0..10,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #[test]
    fn hub_tokens_round_trip_through_the_header(
        scheme in prop_oneof![Just("token"), Just("bearer"), Just("Token"), Just("BEARER")],
        space in "[ \t]{1,3}",
        token in "[!-~]([ !-~]{0,10}[!-~])?",
    ) {
        let header = format!(" {scheme}{space}{token} ");
        prop_assert_eq!(token_from_header(&header), Some(token.as_str()));
    }

    #[test]
    fn tokens_parsed_from_any_header_are_trimmed_and_nonempty(header in "\\PC{0,20}") {
        if let Some(token) = token_from_header(&header) {
            prop_assert!(!token.is_empty() && token.trim() == token && header.contains(token));
        }
        if let Some(token) = chp_token_from_header(&header) {
            prop_assert!(!token.is_empty() && !token.contains(char::is_whitespace));
            prop_assert!(header.trim_start().starts_with("token"));
        }
    }

    #[test]
    fn chp_tokens_are_the_first_word_after_token(
        space in "[ \t]{1,3}",
        token in "[!-~]{1,12}",
        rest in "( [!-~ ]{0,8})?",
    ) {
        let header = format!("token{space}{token}{rest}");
        prop_assert_eq!(chp_token_from_header(&header), Some(token.as_str()));
    }

    #[test]
    fn basic_credentials_decode_like_unquote_plus(id in hostile_text(), secret in hostile_text()) {
        let id = id.replace(':', "");
        let header = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        prop_assert_eq!(basic_credentials(&header), Some((unquote_plus(&id), unquote_plus(&secret))));
    }

    #[test]
    fn basic_credentials_round_trip(id in "\\PC{0,12}", secret in "\\PC{0,12}") {
        let header = format!("basic {}", STANDARD.encode(format!("{}:{}", quote_plus(&id), quote_plus(&secret))));
        prop_assert_eq!(basic_credentials(&header), Some((id, secret)));
    }

    #[test]
    fn cookies_are_the_first_of_their_name(
        pairs in proptest::collection::vec(("[a-c_-]{1,3}", "[a-zA-Z0-9|=]{0,6}"), 0..6),
        split in 0usize..6,
        name in "[a-c_-]{1,3}",
    ) {
        let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let split = split.min(joined.len());
        let headers = [joined[..split].join("; "), joined[split..].join(";")];
        let expected = pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
        prop_assert_eq!(cookie_value(headers.iter().map(String::as_str), &name), expected);
    }

    #[test]
    fn signed_cookies_verify_within_their_age(
        value in "\\PC{0,16}",
        issued in -1_000_000i64..1_000_000,
        age in -400i64..1_000,
        max_age in 0i64..600,
    ) {
        let key = CookieKey::derive("secret");
        let signed = key.sign(LOGIN_COOKIE, &value, issued);
        let now = issued + age;
        let fresh = age <= max_age && age >= -300;
        prop_assert_eq!(key.verify(LOGIN_COOKIE, &signed, now, max_age), fresh.then(|| value.clone()));
        prop_assert_eq!(key.verify(XSRF_COOKIE, &signed, now, max_age), None);
    }

    #[test]
    fn a_changed_cookie_never_verifies_as_another_value(
        value in "[a-z]{0,8}",
        at in any::<prop::sample::Index>(),
        replacement in prop_oneof![Just('0'), Just('A'), Just('|'), Just('-'), Just('9'), Just('f')],
    ) {
        let key = CookieKey::derive("secret");
        let signed = key.sign(LOGIN_COOKIE, &value, 1_000);
        let mut chars: Vec<char> = signed.chars().collect();
        let at = at.index(chars.len());
        chars[at] = replacement;
        let changed: String = chars.into_iter().collect();
        // Hex is read in either case, so a case change may still verify: as the same value.
        let verified = key.verify(LOGIN_COOKIE, &changed, 1_000, 60);
        prop_assert!(verified.is_none() || verified.as_deref() == Some(value.as_str()), "{changed}");
    }

    #[test]
    fn forged_cookies_are_refused_without_panicking(
        value in "[0-9a-f]{0,8}",
        issued in any::<i64>(),
        mac in "[0-9a-f]{0,64}",
        now in any::<i64>(),
        max_age in any::<i64>(),
    ) {
        let key = CookieKey::derive("secret");
        let forged = format!("v1|{value}|{issued}|{mac}");
        prop_assert_eq!(key.verify(LOGIN_COOKIE, &forged, now, max_age), None);
    }

    #[test]
    fn local_paths_resolve_on_this_site(
        next in proptest::collection::vec(
            prop_oneof![
                Just("/"), Just("\\"), Just("a"), Just("."), Just(":"), Just("@"), Just("%2F"),
                Just(" "), Just("\t"), Just("\n"), Just("#"), Just("?"), Just("\u{0}"),
                Just("é"), Just("\u{3000}"), Just("http:"), Just("evil.example"),
            ],
            0..8,
        ),
    ) {
        let next: String = next.concat();
        let base = url::Url::parse("https://hub.example/hub/login").expect("base");
        if is_local_path(&next) {
            let resolved = base.join(&next).expect("a local path resolves");
            prop_assert_eq!(resolved.scheme(), "https");
            prop_assert_eq!(resolved.host_str(), Some("hub.example"), "{:?} -> {}", next, resolved);
        }
    }
}
