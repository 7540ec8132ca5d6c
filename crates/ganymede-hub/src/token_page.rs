//! `/hub/token`: a user's API tokens — list, create (the token is shown once) and
//! revoke — as plain forms carrying the session's `_xsrf`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ganymede_model::{Command, Event, Token, TokenOwner, TokenRequest};
use ganymede_raft::Applied;
use serde::Deserialize;

use crate::Hub;
use crate::auth::BrowserSession;
use crate::pages::{escape, page, session_user};
use crate::render::{iso, now_millis};
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
    let key = hub.cookie_key().await.ok_or_else(|| {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "<p>The hub is starting.</p>",
        )
    })?;
    let xsrf = key.xsrf_token(&session.session_id);
    Ok((session, xsrf))
}

pub(crate) fn forged() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "<p>This form expired or did not come from this hub. Reload the page and try again.</p>",
    )
}

fn render(hub: &Hub, user: &str, xsrf: &str, created: Option<&str>) -> Response {
    let owner = TokenOwner::User(user.to_owned());
    let now = now_millis();
    let rows: String = hub.raft.read_local(|state| {
        state
            .tokens_of(&owner)
            .filter(|token| !token.is_expired(now))
            .map(|token: &Token| {
                let expires = token.expires_at.map_or_else(|| "never".to_owned(), |t| text(iso(t)));
                let last = token.last_activity.map_or_else(|| "never".to_owned(), |t| text(iso(t)));
                format!(
                    "<tr id=\"token-{id}\"><td>{note}</td><td>{last}</td><td>{created}</td><td>{expires}</td>\
                     <td><form method=\"post\" action=\"/hub/token/{id}/revoke\">\
                     <input type=\"hidden\" name=\"_xsrf\" value=\"{xsrf}\">\
                     <button type=\"submit\">Revoke</button></form></td></tr>",
                    id = token.public_id(),
                    note = escape(&token.note),
                    created = text(iso(token.created)),
                    xsrf = escape(xsrf),
                )
            })
            .collect()
    });
    let fresh = created.map_or_else(String::new, |token| {
        format!(
            "<div id=\"new-token\"><p>Your new API token (copy it now: it is not shown again):</p>\
             <pre id=\"token-value\">{}</pre></div>",
            escape(token)
        )
    });
    let body = format!(
        "<h1>API tokens</h1>{fresh}\
         <form method=\"post\" action=\"/hub/token\" id=\"request-token-form\">\
         <input type=\"hidden\" name=\"_xsrf\" value=\"{xsrf}\">\
         <label>Note: <input name=\"note\" id=\"token-note\" maxlength=\"1000\"></label>\
         <label>Expires in: <select name=\"expires_in\" id=\"token-expiration-seconds\">\
         <option value=\"\">Never</option><option value=\"3600\">1 hour</option>\
         <option value=\"86400\">1 day</option><option value=\"604800\">1 week</option></select></label>\
         <button type=\"submit\">Request new API token</button></form>\
         <h2>Your tokens</h2><table id=\"api-tokens\"><tr><th>Note</th><th>Last used</th><th>Created</th>\
         <th>Expires</th><th></th></tr>{rows}</table>",
        xsrf = escape(xsrf),
    );
    page(StatusCode::OK, "API tokens", &body)
}

fn text(value: serde_json::Value) -> String {
    value.as_str().map(escape).unwrap_or_default()
}

async fn token_page(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match signed_in(&hub, &headers, "/hub/token").await {
        Ok((session, xsrf)) => render(&hub, &session.user, &xsrf, None),
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
                return page(
                    StatusCode::BAD_REQUEST,
                    "API tokens",
                    "<p class=\"error\">Invalid expiry.</p>",
                );
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
                return page(StatusCode::SERVICE_UNAVAILABLE, "API tokens", "<p>Try again.</p>");
            }
            render(&hub, &session.user, &xsrf, Some(&token))
        }
        Ok(other) => page(
            StatusCode::BAD_REQUEST,
            "API tokens",
            &format!(
                "<p class=\"error\">The token was not created: {}</p>",
                escape(&format!("{other:?}"))
            ),
        ),
        Err(err) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "API tokens",
            &format!("<p class=\"error\">{}</p>", escape(&err.to_string())),
        ),
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
        return page(StatusCode::NOT_FOUND, "API tokens", "<p>No such token.</p>");
    };
    if let Err(err) = hub.raft.propose(Command::RevokeToken { id, at: now_millis() }).await {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "API tokens",
            &format!("<p class=\"error\">{}</p>", escape(&err.to_string())),
        );
    }
    let _ = hub.raft.read(|_| ()).await;
    Redirect::to("/hub/token").into_response()
}
