//! Who is calling and what they may do: the `Authorization: token …` / `bearer …`
//! header resolved to a token, its owner and its effective scopes (JupyterHub's RBAC,
//! `ganymede_model::rbac`). The hub API takes only the header (no `?token=`), as
//! JupyterHub does.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use ganymede_model::audit::Origin;
use ganymede_model::rbac::{Access, Resource, Roles, ScopeSet};
use ganymede_model::{State, TokenOwner};

/// Parsed in the model, where it is fuzzed (`tests/fuzz`).
pub use ganymede_model::credentials::token_from_header;

use crate::Hub;
use crate::error::ApiError;
use crate::session::{COOKIE_MAX_AGE_SECS, LOGIN_COOKIE, cookie, hash_session_secret};
use crate::tokens::hash_token;

/// Notes of the tokens JupyterHub gives single-user servers; their use is not the
/// user's activity.
pub const SERVER_TOKEN_NOTE_PREFIX: &str = "Server at ";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: TokenOwner,
    /// The token used; `None` for a browser's session cookie.
    pub token_id: Option<u64>,
    /// The browser session's public id, for cookie-authenticated calls.
    pub session_id: Option<String>,
    pub scopes: ScopeSet,
    /// Whether the owner is an admin user or an admin service.
    pub owner_is_admin: bool,
}

impl Caller {
    pub fn is_user(&self, name: &str) -> bool {
        matches!(&self.owner, TokenOwner::User(own) if own == name)
    }

    /// JupyterHub's `needs_scope`: 403 when none of `needed` is held, 404 when one is
    /// held but not for `resource`.
    pub fn authorize(&self, state: &State, needed: &[&str], resource: Resource<'_>) -> Result<(), ApiError> {
        match self.scopes.access(needed, resource, state) {
            Access::Granted => Ok(()),
            Access::NotFound => Err(ApiError::no_access()),
            Access::Forbidden => Err(ApiError::requires_scope(needed)),
        }
    }

    /// What this caller may see of `state`.
    pub fn view<'a>(&'a self, state: &'a State, roles: &'a Roles) -> crate::render::View<'a> {
        crate::render::View {
            scopes: &self.scopes,
            state,
            roles,
        }
    }

    /// 403 unless `scope` is held without a filter (hub-wide actions).
    pub fn require_everywhere(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.holds_everywhere(scope) {
            Ok(())
        } else {
            Err(ApiError::requires_scope(&[scope]))
        }
    }

    /// 403 unless one of `needed` is held at all (list endpoints filter items after).
    pub fn require_any(&self, needed: &[&str]) -> Result<(), ApiError> {
        if needed.iter().any(|scope| self.scopes.holds(scope)) {
            Ok(())
        } else {
            Err(ApiError::requires_scope(needed))
        }
    }
}

/// The caller a token hash stands for, and whether its use counts as its user's activity.
fn resolve(state: &State, roles: &Roles, hash: &str, now: i64) -> Option<(Caller, bool)> {
    let token = state.token_by_hash(hash).filter(|token| !token.is_expired(now))?;
    let owner_is_admin = match &token.owner {
        TokenOwner::User(name) => state.users.get(name)?.admin,
        TokenOwner::Service(name) => state.services.get(name)?.admin,
    };
    let is_user_activity =
        matches!(token.owner, TokenOwner::User(_)) && !token.note.starts_with(SERVER_TOKEN_NOTE_PREFIX);
    let caller = Caller {
        owner: token.owner.clone(),
        token_id: Some(token.id),
        session_id: token.session_id.clone(),
        scopes: roles.token_scopes(state, token),
        owner_is_admin,
    };
    Some((caller, is_user_activity))
}

impl FromRequestParts<Hub> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Hub) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let Some(token) = header.and_then(token_from_header) else {
            let caller = cookie_caller(parts, hub).await?;
            ganymede_raft::origin::set_actor(Origin::actor_of(&caller.owner), None);
            return Ok(caller);
        };
        let hash = hash_token(token);
        let now = crate::render::now_millis();
        let roles = &hub.settings.roles;
        // This replica's state first; a miss may only mean the token was issued a moment
        // ago through another replica, so confirm a miss with a linearizable read.
        let resolved = match hub.raft.read_local(|state| resolve(state, roles, &hash, now)) {
            Some(found) => found,
            None => hub
                .raft
                .read(|state| resolve(state, roles, &hash, now))
                .await?
                .ok_or_else(ApiError::invalid_credentials)?,
        };
        let (caller, is_user_activity) = resolved;
        if let Some(id) = caller.token_id {
            hub.activity.token(id, now);
        }
        if is_user_activity && let TokenOwner::User(name) = &caller.owner {
            hub.activity.user(name, now);
        }
        ganymede_raft::origin::set_actor(Origin::actor_of(&caller.owner), caller.token_id);
        Ok(caller)
    }
}

/// A browser's login session, from its `jupyterhub-hub-login` cookie.
#[derive(Clone, Debug)]
pub struct BrowserSession {
    pub user: String,
    pub session_id: String,
    /// The hash that names the session in the replicated state.
    pub hash: String,
}

/// The session a browser's signed login cookie stands for, if it is valid, unexpired and
/// still in the replicated state (a logout anywhere ends it everywhere).
pub async fn browser_session(hub: &Hub, headers: &HeaderMap) -> Option<BrowserSession> {
    let signed = cookie(headers, LOGIN_COOKIE)?;
    let key = hub.cookie_key().await?;
    let now = crate::render::now_millis();
    let secret = key.verify(LOGIN_COOKIE, signed, now / 1000, COOKIE_MAX_AGE_SECS)?;
    let hash = hash_session_secret(&secret);
    let find = |state: &State| {
        state
            .sessions
            .get(&hash)
            .filter(|session| session.expires_at > now && state.users.contains_key(&session.user))
            .map(|session| (session.user.clone(), session.session_id.clone()))
    };
    let (user, session_id) = match hub.raft.read_local(find) {
        Some(found) => found,
        None => hub.raft.read(find).await.ok()??,
    };
    ganymede_raft::origin::set_actor(format!("user:{user}"), None);
    Some(BrowserSession { user, session_id, hash })
}

/// JupyterHub's rule for when a cookie-authenticated API call must carry the XSRF token:
/// every method but HEAD and OPTIONS, GET included, unless the browser says it is a
/// navigation (or says nothing), a WebSocket, or a same-origin no-cors read.
fn needs_xsrf(method: &Method, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let read_only = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if matches!(*method, Method::HEAD | Method::OPTIONS) {
        return false;
    }
    match header("sec-fetch-mode") {
        None | Some("navigate") if read_only => false,
        Some("websocket") => false,
        Some("no-cors") if read_only && header("sec-fetch-site") == Some("same-origin") => false,
        _ => true,
    }
}

/// The XSRF token a request carries: `_xsrf` in the query, or `X-XSRFToken` /
/// `X-CSRFToken`.
fn presented_xsrf(parts: &Parts) -> Option<String> {
    for name in ["x-xsrftoken", "x-csrftoken"] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(value.to_owned());
        }
    }
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("_xsrf="))
        .map(str::to_owned)
}

/// A browser calling the API with its login cookie: the user's full scopes, after the
/// XSRF and content-type checks JupyterHub makes.
async fn cookie_caller(parts: &Parts, hub: &Hub) -> Result<Caller, ApiError> {
    let session = browser_session(hub, &parts.headers)
        .await
        .ok_or_else(ApiError::invalid_credentials)?;
    if parts.method == Method::POST
        && let Some(content_type) = parts.headers.get(axum::http::header::CONTENT_TYPE)
        && !content_type
            .to_str()
            .is_ok_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"))
    {
        // A form post with a cookie is how cross-site forgery looks: no cookie user.
        return Err(ApiError::invalid_credentials());
    }
    if needs_xsrf(&parts.method, &parts.headers) {
        let key = hub.cookie_key().await.ok_or_else(ApiError::invalid_credentials)?;
        let presented = presented_xsrf(parts);
        if presented.as_deref() != Some(key.xsrf_token(&session.session_id).as_str()) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!("'_xsrf' argument missing from {}", parts.method),
            ));
        }
    }
    let roles = &hub.settings.roles;
    let owner = TokenOwner::User(session.user.clone());
    let (scopes, owner_is_admin) = hub.raft.read_local(|state| {
        (
            roles.owner_scopes(state, &owner),
            state.users.get(&session.user).is_some_and(|u| u.admin),
        )
    });
    hub.activity.user(&session.user, crate::render::now_millis());
    Ok(Caller {
        owner,
        token_id: None,
        session_id: Some(session.session_id),
        scopes,
        owner_is_admin,
    })
}
