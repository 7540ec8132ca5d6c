//! A scripted browser for hub pages: a hand-kept cookie jar (so tests see exactly what
//! is sent), no automatic redirects, and the login form filled the way a person would.

use std::time::Duration;

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::redirect::Policy;

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `name=value` of every `Set-Cookie`, with the whole header for attribute checks.
pub fn set_cookies(headers: &HeaderMap) -> Vec<(String, String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|full| {
            let pair = full.split(';').next()?;
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.to_owned(), full.to_owned()))
        })
        .collect()
}

/// A GET from a browser holding `jar`'s cookies.
pub async fn get_with(url: &str, jar: &Jar) -> reqwest::Response {
    browser()
        .get(url)
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"))
}

/// A browser's cookie jar, kept by hand so that tests see exactly what is sent.
pub struct Jar(pub Vec<(String, String)>);

impl Jar {
    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn take(&mut self, headers: &HeaderMap) {
        for (name, value, _) in set_cookies(headers) {
            self.0.retain(|(n, _)| *n != name);
            if !value.is_empty() {
                self.0.push((name, value));
            }
        }
    }
}

/// Loads the login page (taking its `_xsrf`), then posts the form.
pub async fn log_in(base: &str, user: &str, password: &str, next: &str) -> (reqwest::Response, Jar) {
    let client = browser();
    let page = client
        .get(format!("{base}/hub/login"))
        .send()
        .await
        .expect("login page");
    assert_eq!(page.status(), 200);
    let mut jar = Jar(Vec::new());
    jar.take(page.headers());
    let xsrf = jar.get("_xsrf").expect("an anonymous _xsrf cookie").to_owned();
    let html = page.text().await.expect("html");
    assert!(html.contains(&format!("name=\"_xsrf\" value=\"{xsrf}\"")), "{html}");
    let response = client
        .post(format!("{base}/hub/login?next={next}"))
        .header("cookie", jar.header())
        .form(&[("username", user), ("password", password), ("_xsrf", xsrf.as_str())])
        .send()
        .await
        .expect("login");
    jar.take(response.headers());
    (response, jar)
}
