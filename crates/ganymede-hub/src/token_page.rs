//! `/hub/token`: a user's API tokens — list, create (the token is shown once) and
//! revoke — as plain forms carrying the session's `_xsrf`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ganymede_model::{Command, Event, Token, TokenOwner, TokenRequest};
use ganymede_raft::Applied;
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

use crate::Hub;
use crate::auth::BrowserSession;
use crate::pages::session_user;
use crate::render::{iso, now_millis};
use crate::templates::{alert, message, render};
use crate::tokens::{hash_token, new_token};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/hub/token", get(token_page).post(create))
        .route("/hub/token/{id}/revoke", post(revoke))
}

/// The logged-in browser and its XSRF token, or the way to the login page (and back
/// to `here`).
pub(crate) async fn signed_in(
    hub: &Hub,
    headers: &HeaderMap,
    here: &str,
) -> Result<(BrowserSession, String), Response> {
    let session = session_user(hub, headers)
        .await
        .ok_or_else(|| crate::pages::login_redirect(here))?;
    let key = hub
        .cookie_key()
        .await
        .ok_or_else(|| message(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "The hub is starting."))?;
    let xsrf = key.xsrf_token(&session.session_id);
    Ok((session, xsrf))
}

pub(crate) fn forged() -> Response {
    alert(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "This form expired or did not come from this hub. Reload the page and try again.",
    )
}

/// A token as the token page lists it (never its secret, which only exists at creation).
#[derive(Serialize)]
struct TokenRow {
    id: String,
    note: String,
    created: String,
    last_activity: Option<String>,
    expires_at: Option<String>,
}

fn show(hub: &Hub, user: &str, xsrf: &str, created: Option<&str>) -> Response {
    let owner = TokenOwner::User(user.to_owned());
    let now = now_millis();
    let tokens: Vec<TokenRow> = hub.raft.read_local(|state| {
        state
            .tokens_of(&owner)
            .filter(|token| !token.is_expired(now))
            .map(|token: &Token| TokenRow {
                id: token.public_id(),
                note: token.note.clone(),
                created: text(iso(token.created)),
                last_activity: token.last_activity.map(|t| text(iso(t))),
                expires_at: token.expires_at.map(|t| text(iso(t))),
            })
            .collect()
    });
    render(
        StatusCode::OK,
        "token.html",
        context! {title => "API tokens", form_xsrf => xsrf, new_token => created, tokens => Serde(tokens)},
    )
}

fn text(value: serde_json::Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

async fn token_page(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match signed_in(&hub, &headers, "/hub/token").await {
        Ok((session, xsrf)) => show(&hub, &session.user, &xsrf, None),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default, rename = "_xsrf")]
    xsrf: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    expires_in: String,
}

async fn create(State(hub): State<Hub>, headers: HeaderMap, Form(form): Form<CreateForm>) -> Response {
    let (session, xsrf) = match signed_in(&hub, &headers, "/hub/token").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if form.xsrf != xsrf {
        return forged();
    }
    let expires_in: Option<i64> = match form.expires_in.trim() {
        "" => None,
        seconds => match seconds.parse::<i64>() {
            Ok(seconds) if seconds > 0 => Some(seconds),
            _ => {
                return alert(StatusCode::BAD_REQUEST, "API tokens", "Invalid expiry.");
            }
        },
    };
    let now = now_millis();
    let note = if form.note.trim().is_empty() {
        "Requested via token page".to_owned()
    } else {
        form.note.chars().take(1000).collect()
    };
    let token = new_token();
    let command = Command::IssueToken(TokenRequest {
        hash: hash_token(&token),
        owner: TokenOwner::User(session.user.clone()),
        scopes: vec!["inherit".into()],
        note,
        expires_at: expires_in.map(|seconds| now + seconds.saturating_mul(1000)),
        at: now,
    });
    match hub.raft.propose(command).await {
        Ok(Applied::Events(events)) if events.iter().any(|e| matches!(e.event, Event::TokenIssued { .. })) => {
            // Show the list as this replica has it, including the new token.
            if hub.raft.read(|_| ()).await.is_err() {
                return alert(StatusCode::SERVICE_UNAVAILABLE, "API tokens", "Try again.");
            }
            show(&hub, &session.user, &xsrf, Some(&token))
        }
        Ok(other) => alert(
            StatusCode::BAD_REQUEST,
            "API tokens",
            &format!("The token was not created: {other:?}"),
        ),
        Err(err) => alert(StatusCode::SERVICE_UNAVAILABLE, "API tokens", &err.to_string()),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default, rename = "_xsrf")]
    xsrf: String,
}

async fn revoke(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(public_id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    let (session, xsrf) = match signed_in(&hub, &headers, "/hub/token").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if form.xsrf != xsrf {
        return forged();
    }
    let owner = TokenOwner::User(session.user.clone());
    let id = Token::parse_public_id(&public_id).filter(|id| {
        hub.raft
            .read_local(|state| state.tokens.get(id).is_some_and(|token| token.owner == owner))
    });
    let Some(id) = id else {
        return message(StatusCode::NOT_FOUND, "API tokens", "No such token.");
    };
    if let Err(err) = hub.raft.propose(Command::RevokeToken { id, at: now_millis() }).await {
        return alert(StatusCode::SERVICE_UNAVAILABLE, "API tokens", &err.to_string());
    }
    let _ = hub.raft.read(|_| ()).await;
    Redirect::to("/hub/token").into_response()
}
