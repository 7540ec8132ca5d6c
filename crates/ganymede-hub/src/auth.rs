//! Who is calling and what they may do: the `Authorization: token …` / `bearer …`
//! header resolved to a token, its owner and its effective scopes (JupyterHub's RBAC,
//! `ganymede_model::rbac`). The hub API takes only the header (no `?token=`), as
//! JupyterHub does.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ganymede_model::rbac::{Access, Resource, Roles, ScopeSet};
use ganymede_model::{State, TokenOwner};

use crate::Hub;
use crate::error::ApiError;
use crate::tokens::hash_token;

/// Notes of the tokens JupyterHub gives single-user servers; their use is not the
/// user's activity.
pub const SERVER_TOKEN_NOTE_PREFIX: &str = "Server at ";

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: TokenOwner,
    pub token_id: u64,
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

/// The token in an `Authorization` header, if the scheme is `token` or `bearer`.
pub fn token_from_header(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then_some(token)
        .filter(|t| !t.is_empty())
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
        token_id: token.id,
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
        let token = header
            .and_then(token_from_header)
            .ok_or_else(ApiError::invalid_credentials)?;
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
        hub.activity.token(caller.token_id, now);
        if is_user_activity && let TokenOwner::User(name) = &caller.owner {
            hub.activity.user(name, now);
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::token_from_header;

    #[test]
    fn authorization_schemes() {
        assert_eq!(token_from_header("token abc"), Some("abc"));
        assert_eq!(token_from_header("Bearer abc"), Some("abc"));
        assert_eq!(token_from_header("TOKEN   abc "), Some("abc"));
        assert_eq!(token_from_header("Basic abc"), None);
        assert_eq!(token_from_header("token"), None);
        assert_eq!(token_from_header("abc"), None);
    }
}
