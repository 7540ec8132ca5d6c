//! Real headless Chromium (Debian's `chromium`), driven through `chromedriver` with the
//! W3C WebDriver protocol — a handful of JSON calls over HTTP, so no client crate.
//! One [`Chromium`] is one chromedriver process with one browser session; both end
//! when it is dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The key W3C WebDriver names elements by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Chromium {
    driver: Child,
    base: String,
    client: reqwest::Client,
    /// The browser's own process, so that a test that panics does not leave it behind.
    browser_pid: Option<u32>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromedriver and a headless browser with an empty profile. Panics with a
    /// clear message when Chromium is not installed (`ops/setup.sh` installs it).
    pub async fn start() -> Chromium {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: run ops/setup.sh (it installs Debian's chromium and chromium-driver)"
            );
        }
        let port = crate::process::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut chromium = Chromium {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            browser_pid: None,
            _profile: profile,
        };
        crate::eventually("chromedriver is ready", Duration::from_secs(30), || async {
            let status: Value = chromium
                .client
                .get(format!("{}/status", chromium.base))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        let profile_dir = chromium._profile.path().display().to_string();
        // The flags the machine's notes give: no network beyond loopback, no first-run UI.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={profile_dir}"),
        ];
        let session = chromium
            .raw(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})),
            )
            .await;
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .to_owned();
        chromium.browser_pid = session["value"]["capabilities"]["goog:processID"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok());
        chromium.base = format!("{}/session/{id}", chromium.base);
        chromium
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_raw(method.clone(), path, body).await {
            Ok(value) => value,
            Err((error, message)) => panic!("WebDriver {method} {path}: {error}: {message}"),
        }
    }

    /// The answer, or WebDriver's error code and message.
    async fn try_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, Value)> {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("WebDriver {method} {path}: {err}"));
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if let Some(error) = value["value"]["error"].as_str() {
            return Err((error.to_owned(), value["value"]["message"].clone()));
        }
        Ok(value)
    }

    /// Finds `css` and acts on it, again while the page is still settling (the element
    /// is hidden, covered, or replaced), for up to 10 s.
    async fn act(&self, css: &str, action: &str, body: Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.find(css, Duration::from_secs(10)).await;
            let path = format!("/element/{element}/{action}");
            match self.try_raw(reqwest::Method::POST, &path, Some(body.clone())).await {
                Ok(_) => return,
                Err((error, _))
                    if matches!(
                        error.as_str(),
                        "element not interactable" | "element click intercepted" | "stale element reference"
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((error, message)) => panic!("WebDriver {action} on {css}: {error}: {message}"),
            }
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let value = self.raw(method, path, body).await;
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The element `css` selects, waiting up to `patience` for it to appear.
    pub async fn find(&self, css: &str, patience: Duration) -> String {
        crate::eventually(&format!("an element matching {css}"), patience, || async {
            let value = self
                .raw(
                    reqwest::Method::POST,
                    "/elements",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            value["value"]
                .as_array()
                .and_then(|elements| elements.first())
                .and_then(|element| element[ELEMENT_KEY].as_str())
                .map(str::to_owned)
        })
        .await
    }

    pub async fn click(&self, css: &str) {
        self.act(css, "click", json!({})).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.act(css, "value", json!({ "text": text })).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css, Duration::from_secs(10)).await;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Ends the session (chromedriver closes the browser), then the driver. Tests call
    /// it at the end; dropping only kills the driver.
    pub async fn quit(mut self) {
        let _ = self.client.delete(&self.base).send().await;
        // Let the browser exit by itself (reaping its helpers) before the driver goes.
        if let Some(pid) = self.browser_pid {
            let alive = || Path::new(&format!("/proc/{pid}")).exists();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while alive() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !alive() {
                self.browser_pid = None;
            }
        }
    }

    /// Waits until the page's text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str, patience: Duration) {
        crate::eventually(&format!("the page to say {needle:?}"), patience, || async {
            let text = self
                .execute("return document.body ? document.body.innerText : '';", vec![])
                .await;
            text.as_str().is_some_and(|t| t.contains(needle)).then_some(())
        })
        .await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Some(pid) = self.browser_pid {
            // Killing the driver orphans the browser; end it too (a no-op after quit).
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
    }
}
