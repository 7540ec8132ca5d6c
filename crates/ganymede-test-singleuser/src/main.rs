//! A stand-in for `jupyterhub-singleuser` that starts in milliseconds and needs a few
//! MiB, so tests and benchmarks can run hundreds. It reads the same environment and
//! talks to the hub the same way: `GET $JUPYTERHUB_API_URL` at startup (version
//! check), activity reports to `$JUPYTERHUB_ACTIVITY_URL` at once and then every
//! `$JUPYTERHUB_ACTIVITY_INTERVAL` seconds, the OAuth2 authorization-code flow with
//! PKCE for browsers, and `GET /hub/api/user` to identify whoever holds a token.
//!
//! Under `$JUPYTERHUB_SERVICE_PREFIX` it serves `api` (the version, no auth, what the
//! hub's readiness poll asks), `api/status` and every other path (for the server's
//! user only: a page naming the user), `api/echo` (a WebSocket echo), and
//! `oauth_callback`. `GANYMEDE_TEST_PREFIX` serves another prefix instead (to test a
//! server that listens in the wrong place). `GANYMEDE_TEST_LISTEN_DELAY` (seconds) waits
//! that long before listening, like a server that takes its time to import.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

struct Config {
    user: String,
    server: String,
    prefix: String,
    api_url: String,
    api_token: String,
    client_id: String,
    callback: String,
    access_scopes: Vec<String>,
    activity_url: String,
    activity_interval: Duration,
}

#[derive(Clone)]
struct App {
    config: Arc<Config>,
    http: reqwest::Client,
    /// OAuth `state` → (PKCE verifier, where to go next).
    pending: Arc<Mutex<HashMap<String, (String, String)>>>,
    /// Access tokens already checked with the hub → whose.
    known: Arc<Mutex<HashMap<String, String>>>,
    /// When the server last served its user (milliseconds since the epoch): what it
    /// reports as its activity, as jupyter-server does. Readiness probes do not count.
    last_used: Arc<std::sync::atomic::AtomicU64>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() {
    let service_url = env("JUPYTERHUB_SERVICE_URL");
    let Some((bind, path)) = split_url(&service_url) else {
        eprintln!("JUPYTERHUB_SERVICE_URL must be set to http://host:port/prefix/ (got {service_url:?})");
        std::process::exit(2);
    };
    let prefix = std::env::var("GANYMEDE_TEST_PREFIX")
        .ok()
        .or_else(|| std::env::var("JUPYTERHUB_SERVICE_PREFIX").ok())
        .unwrap_or(path);
    let config = Config {
        user: env("JUPYTERHUB_USER"),
        server: env("JUPYTERHUB_SERVER_NAME"),
        prefix,
        api_url: env("JUPYTERHUB_API_URL").trim_end_matches('/').to_owned(),
        api_token: env("JUPYTERHUB_API_TOKEN"),
        client_id: env("JUPYTERHUB_CLIENT_ID"),
        callback: env("JUPYTERHUB_OAUTH_CALLBACK_URL"),
        access_scopes: serde_json::from_str(&env("JUPYTERHUB_OAUTH_ACCESS_SCOPES")).unwrap_or_default(),
        activity_url: env("JUPYTERHUB_ACTIVITY_URL"),
        activity_interval: Duration::from_secs_f64(
            env("JUPYTERHUB_ACTIVITY_INTERVAL")
                .parse::<f64>()
                .unwrap_or(300.0)
                .max(0.1),
        ),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(serve(config, bind)) {
        eprintln!("{err}");
        std::process::exit(1);
    }
}

/// `http://127.0.0.1:5000/user/alice/` → (`127.0.0.1:5000`, `/user/alice/`).
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let host = if host.starts_with(':') {
        format!("0.0.0.0{host}")
    } else {
        host.to_owned()
    };
    Some((host, path.to_owned()))
}

async fn serve(config: Config, bind: String) -> Result<(), String> {
    if let Some(delay) = std::env::var("GANYMEDE_TEST_LISTEN_DELAY")
        .ok()
        .and_then(|secs| secs.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
    {
        tokio::time::sleep(Duration::from_secs_f64(delay)).await;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|err| err.to_string())?;
    match http.get(&config.api_url).send().await {
        Ok(response) => {
            let version = response
                .headers()
                .get("x-jupyterhub-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown")
                .to_owned();
            println!("hub version {version}");
        }
        Err(err) => println!("cannot reach the hub at {}: {err}", config.api_url),
    }
    let app = App {
        config: Arc::new(config),
        http,
        pending: Default::default(),
        known: Default::default(),
        last_used: Arc::new(std::sync::atomic::AtomicU64::new(now_millis())),
    };
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    println!("listening on http://{bind}{}", app.config.prefix);
    tokio::spawn(report_activity(app.clone()));
    let router = Router::new().fallback(handle).with_state(app);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|err| err.to_string())?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            terminate.recv().await;
            println!("SIGTERM: stopping");
        })
        .await
        .map_err(|err| err.to_string())
}

/// Activity reports, as jupyterhub-singleuser sends them.
async fn report_activity(app: App) {
    let config = &app.config;
    if config.activity_url.is_empty() {
        return;
    }
    loop {
        let now = iso(app.last_used.load(std::sync::atomic::Ordering::Relaxed));
        let body = serde_json::json!({
            "servers": {config.server.as_str(): {"last_activity": now}},
            "last_activity": now,
        });
        let sent = app
            .http
            .post(&config.activity_url)
            .header(header::AUTHORIZATION, format!("token {}", config.api_token))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => println!("activity report refused: {}", response.status()),
            Err(err) => println!("activity report failed: {err}"),
        }
        tokio::time::sleep(config.activity_interval).await;
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn iso(millis: u64) -> String {
    let now = Duration::from_millis(millis);
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Every answer names whose server gave it (`x-ganymede-test-user`), so that a test
/// can tell a request routed to the wrong user's server from any other refusal.
async fn handle(State(app): State<App>, request: Request<Body>) -> Response {
    let owner = header::HeaderValue::from_str(&app.config.user).ok();
    let mut response = answer(app, request).await;
    if let Some(owner) = owner {
        response.headers_mut().insert("x-ganymede-test-user", owner);
    }
    response
}

async fn answer(app: App, request: Request<Body>) -> Response {
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(app.config.prefix.as_str()) else {
        return (StatusCode::NOT_FOUND, "not under this server's prefix").into_response();
    };
    match rest {
        "api" | "api/" => axum::Json(serde_json::json!({"version": "2.14.0"})).into_response(),
        "oauth_callback" => oauth_callback(app, request).await,
        "api/echo" => {
            let (mut parts, _) = request.into_parts();
            if identify(&app, &parts.headers, parts.uri.query()).await.is_none() {
                return StatusCode::FORBIDDEN.into_response();
            }
            match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(upgrade) => upgrade.on_upgrade(echo).into_response(),
                Err(rejection) => rejection.into_response(),
            }
        }
        _ => {
            let headers = request.headers().clone();
            match identify(&app, &headers, request.uri().query()).await {
                Some(user) => {
                    let body = serde_json::json!({
                        "user": user,
                        "server": app.config.server,
                        "path": path,
                    });
                    if rest.starts_with("api/") {
                        axum::Json(body).into_response()
                    } else {
                        axum::response::Html(format!(
                            "<!DOCTYPE html><title>test server</title><p id=\"who\">{}</p>",
                            escape(&user)
                        ))
                        .into_response()
                    }
                }
                None if rest.starts_with("api/") => StatusCode::FORBIDDEN.into_response(),
                None => start_login(&app, request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/")),
            }
        }
    }
}

async fn echo(mut socket: axum::extract::ws::WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => Message::Text(text),
            Message::Binary(bytes) => Message::Binary(bytes),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The user behind a request (token header, `?token=`, or our cookie), if it is this
/// server's user; asks the hub once per token.
async fn identify(app: &App, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token ").or_else(|| v.strip_prefix("Bearer ")))
        .map(str::to_owned);
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token=").map(str::to_owned))
    });
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(&format!("{}=", app.config.client_id))
                .map(str::to_owned)
        });
    let token = from_header.or(from_query).or(from_cookie)?;
    if let Some(user) = app.known.lock().ok()?.get(&token).cloned() {
        app.last_used.store(now_millis(), std::sync::atomic::Ordering::Relaxed);
        return Some(user);
    }
    let model: serde_json::Value = app
        .http
        .get(format!("{}/user", app.config.api_url))
        .header(header::AUTHORIZATION, format!("token {token}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let name = model.get("name")?.as_str()?.to_owned();
    let scopes: Vec<String> = model
        .get("scopes")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    // As jupyterhub-singleuser: the token's scopes must reach this server.
    let config = &app.config;
    let own = [
        "access:servers".to_owned(),
        format!("access:servers!user={}", config.user),
        format!("access:servers!server={}/{}", config.user, config.server),
    ];
    let allowed = scopes
        .iter()
        .any(|scope| config.access_scopes.contains(scope) || own.contains(scope));
    if !allowed {
        return None;
    }
    app.known.lock().ok()?.insert(token, name.clone());
    app.last_used.store(now_millis(), std::sync::atomic::Ordering::Relaxed);
    Some(name)
}

fn start_login(app: &App, next: &str) -> Response {
    let state = random_hex();
    let verifier = format!("{}{}", random_hex(), random_hex());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if let Ok(mut pending) = app.pending.lock() {
        pending.insert(state.clone(), (verifier, next.to_owned()));
    }
    let hub = app.config.api_url.trim_end_matches("/api");
    let hub_path = hub
        .find("://")
        .and_then(|at| hub[at + 3..].find('/').map(|p| &hub[at + 3 + p..]))
        .unwrap_or("/hub");
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("client_id", app.config.client_id.as_str()),
            ("redirect_uri", app.config.callback.as_str()),
            ("response_type", "code"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state.as_str()),
        ])
        .finish();
    Redirect::to(&format!("{hub_path}/api/oauth2/authorize?{query}")).into_response()
}

#[derive(Deserialize)]
struct Callback {
    code: String,
    state: String,
}

async fn oauth_callback(app: App, request: Request<Body>) -> Response {
    let Ok(Query(callback)) = Query::<Callback>::try_from_uri(request.uri()) else {
        return (StatusCode::BAD_REQUEST, "missing code or state").into_response();
    };
    let Some((verifier, next)) = app.pending.lock().ok().and_then(|mut p| p.remove(&callback.state)) else {
        return (StatusCode::BAD_REQUEST, "OAuth state does not match").into_response();
    };
    let form = [
        ("client_id", app.config.client_id.as_str()),
        ("client_secret", app.config.api_token.as_str()),
        ("grant_type", "authorization_code"),
        ("code", callback.code.as_str()),
        ("redirect_uri", app.config.callback.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let token: serde_json::Value = match app
        .http
        .post(format!("{}/oauth2/token", app.config.api_url))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => response.json().await.unwrap_or_default(),
        Ok(response) => {
            return (
                StatusCode::FORBIDDEN,
                format!("token request refused: {}", response.status()),
            )
                .into_response();
        }
        Err(err) => return (StatusCode::BAD_GATEWAY, format!("cannot reach the hub: {err}")).into_response(),
    };
    let Some(access_token) = token.get("access_token").and_then(|t| t.as_str()) else {
        return (StatusCode::FORBIDDEN, "no access token").into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("token {access_token}")
            .parse()
            .unwrap_or(header::HeaderValue::from_static("")),
    );
    if identify(&app, &headers, None).await.is_none() {
        return (StatusCode::FORBIDDEN, "this token may not use this server").into_response();
    }
    let cookie = format!(
        "{}={access_token}; Path={}; HttpOnly; SameSite=Lax",
        app.config.client_id, app.config.prefix
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
