//! `decide` and `evolve` for the OAuth provider: clients, codes, and the tokens codes
//! turn into.

use super::{Rejection, existing_user};
use crate::command::Command;
use crate::event::Event;
use crate::oauth::OAuthClientOwner;
use crate::state::{State, Timestamp, Token, TokenOwner};

pub(super) fn decide(state: &State, command: &Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::RegisterOAuthClient { client, at } => {
            if client.id.is_empty() || client.redirect_uri.is_empty() {
                return Err(Rejection::InvalidOAuthClient);
            }
            let mut client = client.clone();
            client.created = state.oauth_clients.get(&client.id).map_or(*at, |old| old.created);
            Ok(vec![Event::OAuthClientRegistered { client }])
        }
        Command::DeleteOAuthClient { id, at } => {
            if !state.oauth_clients.contains_key(id) {
                return Err(Rejection::OAuthClientNotFound { id: id.clone() });
            }
            Ok(delete_client_events(state, id, *at))
        }
        Command::IssueOAuthCode { hash, code, at } => {
            if !state.oauth_clients.contains_key(&code.client_id) {
                return Err(Rejection::OAuthClientNotFound {
                    id: code.client_id.clone(),
                });
            }
            existing_user(state, &code.user)?;
            if state.oauth_codes.contains_key(hash) {
                return Err(Rejection::TokenExists);
            }
            let mut events: Vec<Event> = state
                .oauth_codes
                .iter()
                .filter(|(_, code)| code.expires_at <= *at)
                .map(|(hash, _)| Event::OAuthCodeRemoved {
                    hash: hash.clone(),
                    at: *at,
                })
                .collect();
            events.push(Event::OAuthCodeIssued {
                hash: hash.clone(),
                code: code.clone(),
            });
            Ok(events)
        }
        Command::RedeemOAuthCode {
            hash,
            client_id,
            client_secret_hash,
            redirect_uri,
            pkce_challenge,
            token_hash,
            token_expires_at,
            at,
        } => {
            let client = state
                .oauth_clients
                .get(client_id)
                .filter(|client| client.secret_hash == *client_secret_hash)
                .ok_or(Rejection::InvalidOAuthClient)?;
            let invalid = |reason: &str| Rejection::InvalidGrant {
                reason: reason.to_owned(),
            };
            let code = state
                .oauth_codes
                .get(hash)
                .filter(|code| code.client_id == client.id)
                .ok_or_else(|| invalid("invalid code"))?;
            if code.expires_at <= *at {
                return Err(invalid("code expired"));
            }
            if code.redirect_uri != *redirect_uri {
                return Err(invalid("redirect_uri does not match"));
            }
            if let Some(challenge) = &code.code_challenge
                && pkce_challenge.as_ref() != Some(challenge)
            {
                return Err(invalid("code_verifier does not match the code_challenge"));
            }
            existing_user(state, &code.user)?;
            if state.token_ids_by_hash.contains_key(token_hash) {
                return Err(Rejection::TokenExists);
            }
            let token = Token {
                id: state.last_token_id + 1,
                hash: token_hash.clone(),
                owner: TokenOwner::User(code.user.clone()),
                scopes: code.scopes.clone(),
                note: String::new(),
                created: *at,
                expires_at: *token_expires_at,
                last_activity: None,
                session_id: code.session_id.clone(),
                oauth_client: Some(client.id.clone()),
            };
            Ok(vec![
                Event::OAuthCodeRemoved {
                    hash: hash.clone(),
                    at: *at,
                },
                Event::TokenIssued { token },
            ])
        }
        _ => Ok(vec![]),
    }
}

/// Deleting a client takes its codes and every token it issued with it (JupyterHub's
/// database cascade).
pub(super) fn delete_client_events(state: &State, id: &str, at: Timestamp) -> Vec<Event> {
    let mut events: Vec<Event> = state
        .tokens
        .values()
        .filter(|token| token.oauth_client.as_deref() == Some(id))
        .map(|token| Event::TokenRevoked { id: token.id, at })
        .collect();
    events.extend(
        state
            .oauth_codes
            .iter()
            .filter(|(_, code)| code.client_id == id)
            .map(|(hash, _)| Event::OAuthCodeRemoved { hash: hash.clone(), at }),
    );
    events.push(Event::OAuthClientDeleted { id: id.to_owned(), at });
    events
}

/// The clients that belong to a service.
pub(super) fn service_clients<'a>(state: &'a State, service: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    state
        .oauth_clients
        .values()
        .filter(move |client| matches!(&client.owner, OAuthClientOwner::Service { name } if name == service))
        .map(|client| client.id.as_str())
}

pub(super) fn evolve(state: &mut State, event: &Event) {
    match event {
        Event::OAuthClientRegistered { client } => {
            state.oauth_clients.insert(client.id.clone(), client.clone());
        }
        Event::OAuthClientDeleted { id, .. } => {
            state.oauth_clients.remove(id);
        }
        Event::OAuthCodeIssued { hash, code } => {
            state.oauth_codes.insert(hash.clone(), code.clone());
        }
        Event::OAuthCodeRemoved { hash, .. } => {
            state.oauth_codes.remove(hash);
        }
        _ => {}
    }
}
