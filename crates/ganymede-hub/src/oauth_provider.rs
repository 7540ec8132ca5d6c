//! The hub as an OAuth2 provider, as single-user servers and services expect it
//! (JupyterHub's `/hub/api/oauth2/authorize` and `/hub/api/oauth2/token`, on oauthlib):
//! authorization codes for logged-in browsers, redeemed once by the client that asked,
//! on any replica, for an access token tied to the browser's session.

use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ganymede_model::oauth::{CODE_LIFETIME_MILLIS, OAuthClient, OAuthClientOwner, OAuthCode};
use ganymede_model::rbac::{Resource, Subject, resolve_for_token};
use ganymede_model::{Command, Rejection, TokenOwner};
use ganymede_raft::Applied;
use minijinja::context;
use minijinja::value::Serde;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::Hub;
use crate::auth::browser_session;
use crate::pages::{login_redirect, url_quote};
use crate::render::now_millis;
use crate::session::COOKIE_MAX_AGE_SECS;
use crate::templates::{alert, message, render};
use crate::tokens::hash_token;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/oauth2/authorize", get(authorize).post(authorize_confirmed))
        .route("/oauth2/token", post(token))
}

/// oauthlib's token and code format: 30 characters of `[A-Za-z0-9]` (178 bits).
pub fn new_oauth_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..30)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// PKCE S256: `BASE64URL(SHA256(verifier))`, no padding.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[derive(Debug, Default, Deserialize)]
struct AuthorizeParams {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
    /// The confirmation form's XSRF token.
    #[serde(default, rename = "_xsrf")]
    xsrf: Option<String>,
}

async fn authorize(
    State(hub): State<Hub>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    let Some(session) = browser_session(&hub, &headers).await else {
        // Back here after logging in.
        let here = uri
            .path_and_query()
            .map_or("/hub/api/oauth2/authorize", |pq| pq.as_str());
        return login_redirect(here);
    };
    grant(&hub, &session, params, false).await
}

/// The confirmation page's form, posted back with the same parameters.
async fn authorize_confirmed(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Form(params): Form<AuthorizeParams>,
) -> Response {
    let Some(session) = browser_session(&hub, &headers).await else {
        return login_redirect("/hub/home");
    };
    let expected = hub.cookie_key().await.map(|key| key.xsrf_token(&session.session_id));
    if expected.is_none() || params.xsrf != expected {
        return alert(
            StatusCode::FORBIDDEN,
            "Authorization failed",
            "The authorization form expired. Go back and try again.",
        );
    }
    grant(&hub, &session, params, true).await
}

/// The client named in a request, from this replica's state or, for a client
/// registered a moment ago elsewhere (a server that just started), a linearizable read.
async fn find_client(hub: &Hub, id: &str) -> Option<OAuthClient> {
    let find = |state: &ganymede_model::State| state.oauth_clients.get(id).cloned();
    match hub.raft.read_local(find) {
        Some(client) => Some(client),
        None => hub.raft.read(find).await.ok().flatten(),
    }
}

/// Where an error goes once the redirect URI is known to be the client's own: back to
/// the client, as RFC 6749 §4.1.2.1 says.
fn error_redirect(redirect_uri: &str, error: &str, description: &str, state: Option<&str>) -> Response {
    let mut target = format!(
        "{redirect_uri}{}error={error}&error_description={}",
        if redirect_uri.contains('?') { '&' } else { '?' },
        url_quote(description)
    );
    if let Some(state) = state {
        target.push_str(&format!("&state={}", url_quote(state)));
    }
    found(&target)
}

/// `302 Found`, what oauthlib (and so every OAuth client of JupyterHub) sees.
fn found(target: &str) -> Response {
    match header::HeaderValue::from_str(target) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => alert(StatusCode::BAD_REQUEST, "Authorization failed", "Invalid redirect."),
    }
}

async fn grant(hub: &Hub, session: &crate::auth::BrowserSession, params: AuthorizeParams, confirmed: bool) -> Response {
    let Some(client) = find_client(hub, &params.client_id).await else {
        return alert(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "Invalid client_id: no such OAuth client.",
        );
    };
    // Never redirect anywhere but the client's registered URI.
    let redirect_uri = params
        .redirect_uri
        .clone()
        .unwrap_or_else(|| client.redirect_uri.clone());
    if redirect_uri != client.redirect_uri {
        return alert(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "Mismatching redirect URI.",
        );
    }
    let state_param = params.state.as_deref();
    if params.response_type != "code" {
        return error_redirect(
            &redirect_uri,
            "unsupported_response_type",
            "only 'code' is supported",
            state_param,
        );
    }
    if params.code_challenge.is_some() && params.code_challenge_method.as_deref() != Some("S256") {
        return error_redirect(
            &redirect_uri,
            "invalid_request",
            "code_challenge_method must be S256",
            state_param,
        );
    }
    if let Some(challenge) = &params.code_challenge
        && !(43..=128).contains(&challenge.len())
    {
        return error_redirect(
            &redirect_uri,
            "invalid_request",
            "malformed code_challenge",
            state_param,
        );
    }
    let user = session.user.clone();
    let server_of_client = match &client.owner {
        OAuthClientOwner::Server { user, server } => Some(format!("{user}/{server}")),
        OAuthClientOwner::Service { .. } => None,
    };
    // What the token will carry: what was asked for (or the client's default), bound to
    // this user and client, plus identity and access to the client's resource.
    let requested: Vec<String> = match params.scope.as_deref().map(str::split_whitespace) {
        Some(scopes) if params.scope.as_deref().is_some_and(|s| !s.trim().is_empty()) => {
            scopes.map(String::from).collect()
        }
        _ => client.allowed_scopes.clone(),
    };
    let subject = Subject::User(&user);
    let bind = |raw: &[String]| resolve_for_token(raw, subject, server_of_client.as_deref());
    let access = client.access_scope();
    let identify = [
        format!("read:users:name!user={user}"),
        format!("read:users:groups!user={user}"),
    ];
    let (Ok(requested), Ok(allowed)) = (bind(&requested), bind(&client.allowed_scopes)) else {
        return error_redirect(&redirect_uri, "invalid_scope", "unknown scope", state_param);
    };
    if let Some(extra) = requested
        .iter()
        .find(|scope| !allowed.contains(scope) && **scope != access && !identify.contains(scope))
    {
        return error_redirect(
            &redirect_uri,
            "invalid_scope",
            &format!("scope {extra} is not allowed for this client"),
            state_param,
        );
    }
    let mut scopes: Vec<String> = requested;
    scopes.push(access.clone());
    scopes.extend(identify);
    scopes.sort();
    scopes.dedup();

    let roles = &hub.settings.roles;
    let may_access = hub.raft.read_local(|state| {
        let held = roles.owner_scopes(state, &TokenOwner::User(user.clone()));
        match &client.owner {
            OAuthClientOwner::Server { user: owner, server } => {
                held.allows("access:servers", Resource::Server { user: owner, server }, state)
            }
            OAuthClientOwner::Service { name } => held.allows("access:services", Resource::Service(name), state),
        }
    });
    if !may_access {
        warn!(user = %user, client = %client.id, "OAuth authorization refused: no access scope");
        return alert(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("You do not have permission to access {}.", client.description),
        );
    }
    let own_server = matches!(&client.owner, OAuthClientOwner::Server { user: owner, .. } if *owner == user);
    if !own_server && !confirmed {
        return confirmation_page(hub, session, &client, &params, &redirect_uri, &scopes).await;
    }

    let code = new_oauth_secret();
    let at = now_millis();
    let command = Command::IssueOAuthCode {
        hash: hash_token(&code),
        code: OAuthCode {
            client_id: client.id.clone(),
            user: user.clone(),
            session_id: Some(session.session_id.clone()),
            scopes,
            redirect_uri: redirect_uri.clone(),
            code_challenge: params.code_challenge.clone(),
            expires_at: at + CODE_LIFETIME_MILLIS,
        },
        at,
    };
    match hub.raft.propose(command).await {
        Ok(Applied::Events(_)) => {}
        Ok(Applied::Rejected(rejection)) => {
            return alert(StatusCode::BAD_REQUEST, "Authorization failed", &rejection.to_string());
        }
        Ok(Applied::Nothing) | Err(_) => {
            return alert(
                StatusCode::SERVICE_UNAVAILABLE,
                "Authorization failed",
                "The hub could not record the authorization. Try again.",
            );
        }
    }
    info!(user = %user, client = %client.id, "OAuth code issued");
    let mut target = format!(
        "{redirect_uri}{}code={code}",
        if redirect_uri.contains('?') { '&' } else { '?' }
    );
    if let Some(state) = state_param {
        target.push_str(&format!("&state={}", url_quote(state)));
    }
    found(&target)
}

/// JupyterHub's "Authorize access" page: what the client will be able to do, and a
/// form that posts the same request back with the user's XSRF token.
async fn confirmation_page(
    hub: &Hub,
    session: &crate::auth::BrowserSession,
    client: &OAuthClient,
    params: &AuthorizeParams,
    redirect_uri: &str,
    scopes: &[String],
) -> Response {
    let Some(key) = hub.cookie_key().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "The hub is starting.");
    };
    // The same request, posted back with the user's XSRF token.
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let xsrf = key.xsrf_token(&session.session_id);
    let scope = scopes.join(" ");
    fields.push(("_xsrf", &xsrf));
    fields.push(("client_id", &client.id));
    fields.push(("redirect_uri", redirect_uri));
    fields.push(("response_type", &params.response_type));
    fields.push(("scope", &scope));
    for (name, value) in [
        ("state", &params.state),
        ("code_challenge", &params.code_challenge),
        ("code_challenge_method", &params.code_challenge_method),
    ] {
        if let Some(value) = value {
            fields.push((name, value));
        }
    }
    render(
        StatusCode::OK,
        "consent.html",
        context! {
            title => "Authorize access",
            client => client.description.as_str(),
            user => session.user.as_str(),
            scopes => Serde(scopes),
            fields => Serde(fields),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
}

/// oauthlib's error body: `{"error", "error_description"}`.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (status, Json(json!({"error": error, "error_description": description}))).into_response();
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
}

/// Client credentials from the form or from HTTP Basic (`client_secret_basic`). The
/// `Authorization: token …` header single-user servers add is not a client credential.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if let (Some(id), Some(secret)) = (&form.client_id, &form.client_secret) {
        return Some((id.clone(), secret.clone()));
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    ganymede_model::credentials::basic_credentials(value)
}

/// RFC 7636: 43–128 characters of `[A-Za-z0-9-._~]`.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn token(State(hub): State<Hub>, headers: HeaderMap, Form(form): Form<TokenForm>) -> Response {
    if form.grant_type != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code is supported",
        );
    }
    let Some((client_id, client_secret)) = client_credentials(&headers, &form) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let (Some(code), Some(redirect_uri)) = (form.code.as_deref(), form.redirect_uri.as_deref()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code and redirect_uri are required",
        );
    };
    let pkce = match form.code_verifier.as_deref() {
        None => None,
        Some(verifier) if is_valid_verifier(verifier) => Some(pkce_challenge(verifier)),
        Some(_) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "malformed code_verifier");
        }
    };
    // The client is who redeems the code: the record commits only if its secret matched.
    ganymede_raft::origin::set_actor(
        format!(
            "oauth_client:{}",
            ganymede_model::audit::bounded(&client_id, ganymede_model::audit::MAX_TARGET)
        ),
        None,
    );
    let access_token = new_oauth_secret();
    let at = now_millis();
    let expires_in = COOKIE_MAX_AGE_SECS;
    let command = Command::RedeemOAuthCode {
        hash: hash_token(code),
        client_id: client_id.clone(),
        client_secret_hash: hash_token(&client_secret),
        redirect_uri: redirect_uri.to_owned(),
        pkce_challenge: pkce,
        token_hash: hash_token(&access_token),
        token_expires_at: Some(at + expires_in * 1000),
        at,
    };
    let events = match hub.raft.propose(command).await {
        Ok(Applied::Events(events)) => events,
        Ok(Applied::Rejected(Rejection::InvalidOAuthClient)) => {
            warn!(client = %crate::pages::loggable(&client_id), "OAuth token request with bad client credentials");
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        Ok(Applied::Rejected(Rejection::InvalidGrant { reason })) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &reason);
        }
        Ok(Applied::Rejected(rejection)) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &rejection.to_string());
        }
        Ok(Applied::Nothing) | Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the hub cluster could not commit the token",
            );
        }
    };
    let scope = events
        .iter()
        .find_map(|sequenced| match &sequenced.event {
            ganymede_model::Event::TokenIssued { token } => Some(token.scopes.join(" ")),
            _ => None,
        })
        .unwrap_or_default();
    let mut response = Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
    }))
    .into_response();
    no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_an_independent_computation() {
        // Python: base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        assert_eq!(
            pkce_challenge("ganymede-pkce-verifier_0123456789.abcdefghijk~"),
            "Qo-cbpZZIfaKNFT0Z-FAvuQAr8HgB1ma5NXgh0atu58"
        );
        assert!(is_valid_verifier("ganymede-pkce-verifier_0123456789.abcdefghijk~"));
        assert!(!is_valid_verifier("short"));
        assert!(!is_valid_verifier(&format!("{} x", "a".repeat(43))));
    }

    #[test]
    fn oauth_secrets_look_like_oauthlibs() {
        let code = new_oauth_secret();
        assert_eq!(code.len(), 30);
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(code, new_oauth_secret());
    }

    #[test]
    fn basic_client_credentials_are_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("service-x:s%3Acret");
        headers.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_str(&format!("Basic {encoded}")).expect("header"),
        );
        assert_eq!(
            client_credentials(&headers, &TokenForm::default()),
            Some(("service-x".into(), "s:cret".into()))
        );
        headers.insert(header::AUTHORIZATION, header::HeaderValue::from_static("token abc"));
        assert_eq!(client_credentials(&headers, &TokenForm::default()), None);
    }
}
