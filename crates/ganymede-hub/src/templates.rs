//! The hub's HTML: minijinja templates under `templates/`, compiled into the binary
//! (no files to ship, no build step), auto-escaped like Jinja2's markupsafe, and sent
//! with a CSP that forbids framing.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, Error, Output, State, UndefinedBehavior, context};
use serde::Serialize;

/// Every template, by the name the others `extends`/`include`/`import` it by.
const TEMPLATES: &[(&str, &str)] = &[
    ("page.html", include_str!("../templates/page.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("buttons.js", include_str!("../templates/buttons.js")),
    ("message.html", include_str!("../templates/message.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("signup.html", include_str!("../templates/signup.html")),
    ("accounts.html", include_str!("../templates/accounts.html")),
    (
        "change_password.html",
        include_str!("../templates/change_password.html"),
    ),
    ("home.html", include_str!("../templates/home.html")),
    ("admin.html", include_str!("../templates/admin.html")),
    ("token.html", include_str!("../templates/token.html")),
    ("spawn_pending.html", include_str!("../templates/spawn_pending.html")),
    ("not_running.html", include_str!("../templates/not_running.html")),
    ("consent.html", include_str!("../templates/consent.html")),
];

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // A misspelt variable is an error (caught by the tests that render every page),
    // while `{% if optional %}` still works.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_formatter(markupsafe_formatter);
    for (name, source) in TEMPLATES {
        if let Err(err) = env.add_template(name, source) {
            tracing::error!(template = name, error = %err, "template does not parse");
        }
    }
    env
});

/// minijinja's HTML escaping also turns `/` into `&#x2f;`; Jinja2's markupsafe (what
/// JupyterHub's pages, and the clients that scrape them, know) leaves URLs readable.
fn markupsafe_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if *state.auto_escape() == AutoEscape::Html && !value.is_safe() && !value.is_undefined() && !value.is_none() {
        let text = match value.as_str() {
            Some(text) => escape(text),
            None => escape(&value.to_string()),
        };
        out.write_str(&text).map_err(Error::from)
    } else {
        minijinja::escape_formatter(out, state, value)
    }
}

/// `&`, `<`, `>`, `"`, `'` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML of `template` with `context`, or the error that kept it from rendering.
pub fn render_html(template: &str, context: impl Serialize) -> Result<String, Error> {
    ENVIRONMENT.get_template(template)?.render(Serde(context))
}

/// A page: `template` rendered with `context` (which names the page's `title`, and
/// `xsrf` when the page's script calls the API), sent with `status`.
pub fn render(status: StatusCode, template: &str, context: impl Serialize) -> Response {
    match render_html(template, context) {
        Ok(html) => html_response(status, html),
        Err(err) => {
            tracing::error!(template, error = %err, "page could not be rendered");
            html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>500 error — JupyterHub</title>\
                 </head><body><h1>500 : Internal Server Error</h1><p>This page could not be shown.</p></body></html>"
                    .to_owned(),
            )
        }
    }
}

/// A page that says one thing.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    render(
        status,
        "message.html",
        context! {title, message => text, error => false},
    )
}

/// A page that says what went wrong (styled and announced as an alert).
pub fn alert(status: StatusCode, title: &str, text: &str) -> Response {
    render(status, "message.html", context! {title, message => text, error => true})
}

/// An alert with a way on (`href`, link text).
pub fn alert_with_link(status: StatusCode, title: &str, text: &str, link: (&str, &str)) -> Response {
    render(
        status,
        "message.html",
        context! {title, message => text, error => true, link => context! {href => link.0, text => link.1}},
    )
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'; report-uri /hub/security/csp-report"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, source) in TEMPLATES {
            let mut env = Environment::new();
            for (other, source) in TEMPLATES {
                env.add_template(other, source).ok();
            }
            if let Err(err) = env.add_template(name, source) {
                panic!("{name} does not parse: {err:#}");
            }
            assert!(ENVIRONMENT.get_template(name).is_ok(), "{name} is missing");
        }
    }

    #[test]
    fn values_are_escaped_as_markupsafe_does() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
        let html = render_html(
            "message.html",
            context! {title => "T", message => "<script>alert('x')</script> /hub/home", error => true},
        )
        .expect("renders");
        assert!(
            html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; /hub/home"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
    }

    #[test]
    fn what_users_typed_is_escaped_on_the_pages_that_show_it() {
        let hostile = "<img src=x onerror=alert(1)>";
        let token = render_html(
            "token.html",
            context! {
                title => "API tokens",
                form_xsrf => "x",
                new_token => None::<String>,
                tokens => vec![context! {
                    id => "a1", note => hostile, created => "2026-11-26T00:00:00Z",
                    last_activity => None::<String>, expires_at => None::<String>,
                }],
            },
        )
        .expect("renders");
        assert!(token.contains("&lt;img src=x onerror=alert(1)&gt;"), "{token}");
        assert!(!token.contains(hostile), "{token}");
        let consent = render_html(
            "consent.html",
            context! {
                title => "Authorize access", client => hostile, user => "alice",
                scopes => vec![hostile], fields => vec![vec!["state", "\"><script>"]],
            },
        )
        .expect("renders");
        assert!(!consent.contains(hostile), "{consent}");
        assert!(
            consent.contains("name=\"state\" value=\"&quot;&gt;&lt;script&gt;\""),
            "{consent}"
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_not_an_empty_string() {
        assert!(render_html("message.html", context! {title => "T"}).is_err());
    }

    #[test]
    fn a_page_that_cannot_render_is_a_500_not_a_panic() {
        let response = render(StatusCode::OK, "no-such-template.html", context! {});
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn the_xsrf_token_rides_on_the_body_only_when_given() {
        let with = render_html(
            "message.html",
            context! {title => "T", message => "m", error => false, xsrf => "abc"},
        )
        .expect("renders");
        assert!(with.contains("<body data-xsrf=\"abc\">"), "{with}");
        let without =
            render_html("message.html", context! {title => "T", message => "m", error => false}).expect("renders");
        assert!(without.contains("<body>"), "{without}");
    }
}
