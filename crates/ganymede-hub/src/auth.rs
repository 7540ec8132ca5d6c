//! Who is calling: the `Authorization: token …` / `bearer …` header resolved to a token
//! and its owner. The hub API takes only the header (no `?token=`), as JupyterHub does.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ganymede_model::{State, Token, TokenOwner};

use crate::Hub;
use crate::error::ApiError;
use crate::tokens::hash_token;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: TokenOwner,
    pub admin: bool,
    pub token_id: u64,
}

impl Caller {
    pub fn is_user(&self, name: &str) -> bool {
        matches!(&self.owner, TokenOwner::User(own) if own == name)
    }

    /// Admin-only actions; the scope named is what JupyterHub would ask for.
    pub fn require_admin(&self, scope: &str) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::requires_scope(&[scope]))
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

fn resolve(state: &State, hash: &str, now: i64) -> Option<Caller> {
    let token: &Token = state.token_by_hash(hash).filter(|token| !token.is_expired(now))?;
    let admin = match &token.owner {
        TokenOwner::User(name) => state.users.get(name)?.admin,
        TokenOwner::Service(name) => state.services.get(name)?.admin,
    };
    Some(Caller {
        owner: token.owner.clone(),
        admin,
        token_id: token.id,
    })
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
        // This replica's state first; a miss may only mean the token was issued a moment
        // ago through another replica, so confirm a miss with a linearizable read.
        if let Some(caller) = hub.raft.read_local(|state| resolve(state, &hash, now)) {
            return Ok(caller);
        }
        hub.raft
            .read(|state| resolve(state, &hash, now))
            .await?
            .ok_or_else(ApiError::invalid_credentials)
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
