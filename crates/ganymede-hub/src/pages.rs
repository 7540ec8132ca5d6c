//! The hub's pages under `/hub/`: login (a form with XSRF), logout, spawn and its
//! progress, the "server not running" page and error pages; rendered from the
//! templates in `templates/` (see `crate::templates`).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use ganymede_model::{Command, Rejection, ServerPhase};
use ganymede_raft::Applied;
use serde::Deserialize;
use tracing::{info, warn};

use crate::Hub;
use crate::authenticator::LoginRefused;
use crate::render::{now_millis, server_url};
use crate::session::{
    COOKIE_MAX_AGE_SECS, LOGIN_COOKIE, SESSION_ID_COOKIE, XSRF_COOKIE, cookie, hash_session_secret, is_local_path,
};
use crate::templates::{alert, message, render};
use crate::tokens::new_token;
use minijinja::context;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/hub/", get(|| async { Redirect::to("/hub/home") }))
        .route("/hub/login", get(login_page).post(login))
        .route("/hub/logout", get(logout))
        .merge(crate::token_page::routes())
        .merge(crate::native::routes())
        .merge(crate::home::routes())
        .merge(crate::oidc::routes())
        .route("/", get(|| async { Redirect::to("/hub/") }))
        .route("/user/{*rest}", get(user_to_hub))
        .route("/hub/error/{code}", get(error_page))
        .route("/hub/security/csp-report", axum::routing::post(csp_report))
        .route("/hub/user/{name}", get(user_url))
        .route("/hub/user/{name}/", get(user_url))
        .route("/hub/user/{name}/{*rest}", get(user_url_rest))
        .route("/hub/user-redirect/{*rest}", get(user_redirect))
        .route("/hub/spawn", get(spawn_own))
        .route("/hub/spawn/{name}", get(spawn_default))
        .route("/hub/spawn/{name}/{server}", get(spawn_named))
        .route("/hub/spawn-pending/{name}", get(pending_default))
        .route("/hub/spawn-pending/{name}/{server}", get(pending_named))
}

/// `/user/<name>/…` reached the hub, not the server: the edge had no route for it (the
/// server is not running). As JupyterHub, send it to `/hub/user/<name>/…`, which says so.
async fn user_to_hub(uri: axum::http::Uri) -> Redirect {
    let query = uri.query().map_or_else(String::new, |q| format!("?{q}"));
    Redirect::to(&format!("/hub{}{query}", uri.path()))
}

/// What an error page says for a status.
fn error_text(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "The page you were looking for does not exist.",
        424 | 502 | 503 => {
            "The server you were looking for is not running or not reachable. It may be starting or stopping."
        }
        504 => "The server you were looking for took too long to answer.",
        _ => "Something went wrong.",
    }
}

fn error_response(status: StatusCode) -> Response {
    render(
        status,
        "error.html",
        context! {
            title => format!("{} error", status.as_u16()),
            code => status.as_u16(),
            reason => status.canonical_reason().unwrap_or("Error"),
            text => error_text(status),
        },
    )
}

/// `/hub/error/<code>`: where configurable-http-proxy sends the requests it cannot serve
/// (`--error-target`); answered with that status.
async fn error_page(axum::extract::Path(code): axum::extract::Path<String>) -> Response {
    let status = code
        .parse::<u16>()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|status| status.is_client_error() || status.is_server_error())
        .unwrap_or(StatusCode::NOT_FOUND);
    error_response(status)
}

/// Unknown paths outside the API get a page, not JSON.
pub async fn not_found_page() -> Response {
    error_response(StatusCode::NOT_FOUND)
}

/// Content-Security-Policy violation reports from browsers: noted, nothing kept.
async fn csp_report(body: axum::body::Bytes) -> StatusCode {
    tracing::debug!(bytes = body.len(), "CSP violation report");
    crate::metrics::csp_report();
    StatusCode::NO_CONTENT
}

/// Whether the logged-in browser may act on `name`'s server `server` with `scope`.
fn may(hub: &Hub, session_user: &str, scope: &str, name: &str, server: &str) -> bool {
    let roles = &hub.settings.roles;
    hub.raft.read_local(|state| {
        let owner = ganymede_model::TokenOwner::User(session_user.to_owned());
        roles.owner_scopes(state, &owner).allows(
            scope,
            ganymede_model::rbac::Resource::Server { user: name, server },
            state,
        )
    })
}

async fn spawn_own(State(hub): State<Hub>, headers: HeaderMap, Query(query): Query<NextQuery>) -> Response {
    match session_user(&hub, &headers).await {
        Some(session) => spawn(hub, headers, session.user, String::new(), query.next).await,
        None => login_redirect("/hub/spawn"),
    }
}

async fn spawn_default(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(query): Query<NextQuery>,
) -> Response {
    spawn(hub, headers, name, String::new(), query.next).await
}

async fn spawn_named(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path((name, server)): axum::extract::Path<(String, String)>,
    Query(query): Query<NextQuery>,
) -> Response {
    spawn(hub, headers, name, server, query.next).await
}

/// `/hub/<page>/<name>[/<server>]`, names quoted.
fn server_page(page: &str, name: &str, server: &str) -> String {
    let mut path = format!("/hub/{page}/{}", crate::render::quote(name));
    if !server.is_empty() {
        path.push('/');
        path.push_str(&crate::render::quote(server));
    }
    path
}

fn spawn_path(name: &str, server: &str) -> String {
    server_page("spawn", name, server)
}

fn pending_path(name: &str, server: &str) -> String {
    server_page("spawn-pending", name, server)
}

/// The browser's session, if it may use `scope` on the server; otherwise the answer: a
/// login that comes back to this page (`here`), or 403.
async fn server_session(
    hub: &Hub,
    headers: &HeaderMap,
    scope: &str,
    name: &str,
    server: &str,
    here: fn(&str, &str) -> String,
) -> Result<crate::auth::BrowserSession, Response> {
    let Some(session) = session_user(hub, headers).await else {
        return Err(login_redirect(&here(name, server)));
    };
    if !may(hub, &session.user, scope, name, server) {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "You may not use this server.",
        ));
    }
    Ok(session)
}

/// `GET /hub/spawn/…`: starts the server (no options form yet) and shows its progress;
/// a running server is simply visited.
async fn spawn(hub: Hub, headers: HeaderMap, name: String, server: String, next: Option<String>) -> Response {
    if let Err(response) = server_session(&hub, &headers, "start:servers", &name, &server, spawn_path).await {
        return response;
    }
    let phase = hub.raft.read_local(|state| {
        state
            .users
            .get(&name)
            .map(|user| user.servers.get(&server).map(|s| s.phase))
    });
    let target = next
        .filter(|next| is_local_path(next))
        .unwrap_or_else(|| server_url(&name, &server));
    match phase {
        None => return message(StatusCode::NOT_FOUND, "Not found", "No such user."),
        Some(Some(ServerPhase::Running)) => return Redirect::to(&target).into_response(),
        Some(Some(ServerPhase::PendingSpawn)) => return Redirect::to(&pending_path(&name, &server)).into_response(),
        Some(Some(ServerPhase::PendingStop)) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Server stopping",
                "Your server is stopping. Try again in a moment.",
            );
        }
        Some(_) => {}
    }
    if !server.is_empty() && !hub.settings.allow_named_servers {
        return message(StatusCode::BAD_REQUEST, "Not allowed", "Named servers are not enabled.");
    }
    match hub.request_spawn(&name, &server, serde_json::json!({})).await {
        Ok(Applied::Rejected(Rejection::ServerActive { .. })) | Ok(Applied::Events(_)) | Ok(Applied::Nothing) => {
            Redirect::to(&pending_path(&name, &server)).into_response()
        }
        Ok(Applied::Rejected(rejection)) => {
            let error = crate::error::ApiError::from(rejection);
            let message = error.message.unwrap_or_default();
            alert(error.status, "Cannot start", &message)
        }
        Err(err) => alert(StatusCode::SERVICE_UNAVAILABLE, "Cannot start", &err.to_string()),
    }
}

async fn pending_default(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    pending(hub, headers, name, String::new()).await
}

async fn pending_named(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path((name, server)): axum::extract::Path<(String, String)>,
) -> Response {
    pending(hub, headers, name, server).await
}

/// The progress bar, fed by the progress event stream (cookie-authenticated, with the
/// session's XSRF token in the URL as JupyterHub's page does); on ready it moves on to
/// the server.
async fn pending(hub: Hub, headers: HeaderMap, name: String, server: String) -> Response {
    let session = match server_session(&hub, &headers, "read:servers", &name, &server, pending_path).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let phase = hub.server_phase(&name, &server);
    match phase {
        Some(ServerPhase::Running) => return Redirect::to(&server_url(&name, &server)).into_response(),
        Some(ServerPhase::PendingSpawn) => {}
        _ => {
            return Redirect::to(&spawn_path(&name, &server)).into_response();
        }
    }
    let Some(key) = hub.cookie_key().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "The hub is starting.");
    };
    let progress = if server.is_empty() {
        format!("/hub/api/users/{}/server/progress", crate::render::quote(&name))
    } else {
        format!(
            "/hub/api/users/{}/servers/{}/progress",
            crate::render::quote(&name),
            crate::render::quote(&server)
        )
    };
    let progress_url = format!("{progress}?_xsrf={}", key.xsrf_token(&session.session_id));
    render(
        StatusCode::OK,
        "spawn_pending.html",
        context! {title => "Starting", progress_url},
    )
}

/// A request for a user's server that reached the hub: the server is not running (the
/// edge had no route for it). JupyterHub answers 424 — JSON for API-like requests, a
/// page offering to start the server otherwise; a browser that is not logged in is sent
/// to log in first.
async fn user_url(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    not_running(&hub, &headers, name, String::new()).await
}

async fn user_url_rest(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path((name, rest)): axum::extract::Path<(String, String)>,
) -> Response {
    not_running(&hub, &headers, name, rest).await
}

pub(crate) fn login_redirect(next: &str) -> Response {
    Redirect::to(&format!("/hub/login?next={}", url_quote(next))).into_response()
}

async fn not_running(hub: &Hub, headers: &HeaderMap, name: String, rest: String) -> Response {
    let path = format!("/user/{}/{rest}", crate::render::quote(&name));
    if session_user(hub, headers).await.is_none() {
        return login_redirect(&format!("/hub{path}"));
    }
    // `/user/alice/gpu/…` is the named server `gpu` when alice has one.
    let first = rest.split('/').next().unwrap_or_default().to_owned();
    let (server, phase) = hub
        .raft
        .read_local(|state| {
            let user = state.users.get(&name)?;
            let server = if !first.is_empty() && user.servers.contains_key(&first) {
                first.clone()
            } else {
                String::new()
            };
            let phase = user.servers.get(&server).map(|s| s.phase);
            Some((server, phase))
        })
        .unwrap_or_default();
    let spawn_path = spawn_path(&name, &server);
    match phase {
        // Started meanwhile: back to the server (the edge routes it now).
        Some(ServerPhase::Running) => return Redirect::to(&path).into_response(),
        Some(ServerPhase::PendingSpawn) => {
            return Redirect::to(&pending_path(&name, &server)).into_response();
        }
        _ => {}
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = if is_https(headers) { "https" } else { "http" };
    let spawn_url = format!("{scheme}://{host}{spawn_path}");
    let api_like = rest.split('/').any(|segment| segment == "api")
        || headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|accept| accept.contains("application/json") && !accept.contains("text/html"));
    if api_like {
        let message = format!("JupyterHub server no longer running at {path}. Restart the server at {spawn_url}");
        return crate::error::ApiError::new(StatusCode::FAILED_DEPENDENCY, message).into_response();
    }
    render(
        StatusCode::FAILED_DEPENDENCY,
        "not_running.html",
        context! {
            title => "Server not running",
            spawn_url => format!("{spawn_path}?next={}", url_quote(&path)),
            path,
        },
    )
}

/// `/hub/user-redirect/<path>` → `/user/<me>/<path>` (JupyterLab's share links).
async fn user_redirect(
    State(hub): State<Hub>,
    headers: HeaderMap,
    axum::extract::Path(rest): axum::extract::Path<String>,
) -> Response {
    match session_user(&hub, &headers).await {
        Some(session) => Redirect::to(&format!("/user/{}/{rest}", crate::render::quote(&session.user))).into_response(),
        None => login_redirect(&format!("/hub/user-redirect/{rest}")),
    }
}

/// Whether the browser reached us over HTTPS (directly or through the edge).
pub(crate) fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure under HTTPS.
pub(crate) fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<i64>, secure: bool) -> HeaderValue {
    let mut text = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(max_age) = max_age {
        text.push_str(&format!("; Max-Age={max_age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn clear_cookie(name: &str, path: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}=; Path={path}; Max-Age=0; HttpOnly"))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

fn next_or_home(next: Option<&str>) -> String {
    next.filter(|next| is_local_path(next))
        .map_or_else(|| "/hub/home".to_owned(), str::to_owned)
}

/// The user a browser is logged in as, from its `jupyterhub-hub-login` cookie.
pub async fn session_user(hub: &Hub, headers: &HeaderMap) -> Option<crate::auth::BrowserSession> {
    crate::auth::browser_session(hub, headers).await
}

/// The sign-in page: the username/password form, or (with an external identity
/// provider) the link to it.
fn login_page_for(hub: &Hub, status: StatusCode, next: &str, xsrf: &str, error: Option<&str>) -> Response {
    render(
        status,
        "login.html",
        context! {
            title => "Sign in",
            next_quoted => url_quote(next),
            form_xsrf => xsrf,
            error,
            signup => hub.auth.native().is_some(),
            external => matches!(hub.auth.authenticator, crate::Authenticator::Oidc(_)),
        },
    )
}

/// Percent-encodes a query value.
pub(crate) fn url_quote(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The anonymous XSRF token of a browser: the `_xsrf` cookie it has, or a new one.
pub(crate) fn anonymous_xsrf(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, XSRF_COOKIE).filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(token) => (token.to_owned(), false),
        None => (new_token(), true),
    }
}

async fn login_page(State(hub): State<Hub>, headers: HeaderMap, Query(query): Query<NextQuery>) -> Response {
    let next = next_or_home(query.next.as_deref());
    if session_user(&hub, &headers).await.is_some() {
        return Redirect::to(&next).into_response();
    }
    let (xsrf, fresh) = anonymous_xsrf(&headers);
    let mut response = login_page_for(&hub, StatusCode::OK, &next, &xsrf, None);
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(XSRF_COOKIE, &xsrf, "/hub/", Some(3600), is_https(&headers)),
        );
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_xsrf")]
    xsrf: String,
}

/// What a log line may show of a user-supplied name: bounded and printable.
pub(crate) fn loggable(name: &str) -> String {
    let shown: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().count() > 64 {
        format!("{shown}…")
    } else {
        shown
    }
}

async fn login(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = next_or_home(query.next.as_deref());
    let (xsrf, _) = anonymous_xsrf(&headers);
    if form.xsrf.is_empty() || cookie(&headers, XSRF_COOKIE) != Some(form.xsrf.as_str()) {
        return login_page_for(
            &hub,
            StatusCode::FORBIDDEN,
            &next,
            &xsrf,
            Some("Your sign-in form expired. Please try again."),
        );
    }
    let started = std::time::Instant::now();
    let ip = crate::login_limit::client_ip();
    if let Err(retry_after) = hub.logins.check(&form.username, ip.as_deref()) {
        warn!(user = %loggable(&form.username), "login refused: too many failed attempts");
        metrics_login(started, false);
        let text = crate::login_limit::message(retry_after);
        let mut response = login_page_for(&hub, StatusCode::TOO_MANY_REQUESTS, &next, &xsrf, Some(&text));
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    let (name, admin) = match hub.auth.authenticate(&hub.raft, &form.username, &form.password).await {
        Ok(login) => {
            hub.logins.succeeded(&form.username);
            (login.name, login.admin)
        }
        Err(refused) => {
            if crate::login_limit::counts(&refused) {
                hub.logins.failed(&form.username, ip.as_deref());
            }
            warn!(user = %loggable(&form.username), reason = ?refused, "failed login");
            metrics_login(started, false);
            let status = if refused == LoginRefused::Unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::FORBIDDEN
            };
            return login_page_for(&hub, status, &next, &xsrf, Some(&refused.message()));
        }
    };
    let login = crate::authenticator::Login { name, admin };
    let response = finish_login(&hub, &headers, &login, &next).await;
    metrics_login(started, response.status().is_redirection());
    response
}

/// After an authenticator said yes: the user (created on first login, admin flag in
/// line), a replicated session, the hub's cookies, and a redirect to `next`.
pub(crate) async fn finish_login(
    hub: &Hub,
    headers: &HeaderMap,
    login: &crate::authenticator::Login,
    next: &str,
) -> Response {
    let name = &login.name;
    let secure = is_https(headers);
    let unavailable = |text: &str| alert(StatusCode::SERVICE_UNAVAILABLE, "Sign in", text);
    let (secret, session_id) = match open_session(hub, name, login.admin).await {
        Ok(opened) => opened,
        Err(message) => {
            warn!(user = %name, error = %message, "login could not be recorded");
            return unavailable(&message);
        }
    };
    info!(user = %name, "login");
    let Some(key) = hub.cookie_key().await else {
        return unavailable("The hub is starting.");
    };
    let now = now_millis() / 1000;
    let mut response = Redirect::to(next).into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &key.sign(LOGIN_COOKIE, &secret, now),
            "/hub/",
            None,
            secure,
        ),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SESSION_ID_COOKIE, &session_id, "/", None, secure),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(XSRF_COOKIE, &key.xsrf_token(&session_id), "/hub/", None, secure),
    );
    response
}

fn metrics_login(started: std::time::Instant, success: bool) {
    crate::metrics::login(success, started.elapsed());
}

/// Creates the user on first login and brings their admin flag in line with what the
/// authenticator said (`admin_users`, LDAP admin groups), then starts a replicated
/// session; returns the session secret and the public session id.
async fn open_session(hub: &Hub, name: &str, admin: Option<bool>) -> Result<(String, String), String> {
    // Whoever just logged in is who the session (and the user it may create) is for.
    ganymede_raft::origin::set_actor(format!("user:{name}"), None);
    let at = now_millis();
    let existing = hub
        .raft
        .read(|state| state.users.get(name).map(|user| user.admin))
        .await
        .map_err(|e| e.to_string())?;
    match existing {
        None => {
            let command = Command::CreateUsers {
                names: vec![name.to_owned()],
                admin: admin.unwrap_or(false),
                at,
            };
            match hub.raft.propose(command).await.map_err(|e| e.to_string())? {
                Applied::Rejected(Rejection::UserExists { .. }) | Applied::Events(_) | Applied::Nothing => {}
                Applied::Rejected(other) => return Err(other.to_string()),
            }
        }
        Some(current) if admin.is_some_and(|admin| admin != current) => {
            let command = Command::UpdateUser {
                name: name.to_owned(),
                rename: None,
                admin,
                at,
            };
            hub.raft.propose(command).await.map_err(|e| e.to_string())?;
        }
        Some(_) => {}
    }
    let secret = new_token();
    let session_id = new_token();
    let command = Command::StartSession {
        hash: hash_session_secret(&secret),
        user: name.to_owned(),
        session_id: session_id.clone(),
        expires_at: at + COOKIE_MAX_AGE_SECS * 1000,
        at,
    };
    match hub.raft.propose(command).await.map_err(|e| e.to_string())? {
        Applied::Rejected(rejection) => Err(rejection.to_string()),
        _ => {
            // Read-your-writes: this replica serves the redirect target next.
            hub.raft.read(|_| ()).await.map_err(|e| e.to_string())?;
            Ok((secret, session_id))
        }
    }
}

/// Ends the session everywhere and clears the hub's cookies, as JupyterHub's logout.
async fn logout(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    let started = std::time::Instant::now();
    if let Some(session) = session_user(&hub, &headers).await {
        let command = Command::EndSession {
            hash: session.hash.clone(),
            at: now_millis(),
        };
        match hub.raft.propose(command).await {
            Ok(_) => info!(user = %session.user, "logout"),
            Err(err) => {
                warn!(error = %err, "logout could not be recorded");
                return alert(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign out",
                    "The hub could not sign you out right now. Please try again.",
                );
            }
        }
    }
    let mut response = Redirect::to("/hub/login").into_response();
    let cookies = response.headers_mut();
    for (name, path) in [
        (LOGIN_COOKIE, "/hub/"),
        (SESSION_ID_COOKIE, "/"),
        (XSRF_COOKIE, "/hub/"),
        ("jupyterhub-services", "/services"),
    ] {
        cookies.append(header::SET_COOKIE, clear_cookie(name, path));
    }
    crate::metrics::logout(started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_log_a_bounded_printable_name() {
        assert_eq!(loggable("alice"), "alice");
        let long = "x".repeat(10_000);
        assert_eq!(loggable(&long).chars().count(), 65);
        assert_eq!(loggable("a\nforged log line"), "a?forged log line");
    }
}
