//! `/users/{name}/tokens…`: a user's API tokens. A token may carry at most what its
//! requester holds, and is always intersected with its owner's scopes when used.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ganymede_model::rbac::{self, Resource, Subject};
use ganymede_model::{Command, Event, Token, TokenOwner, TokenRequest};
use ganymede_raft::Applied;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{OptionalApiJson, empty};
use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::now_millis;
use crate::tokens::{hash_token, new_token};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/users/{name}/tokens", get(list_tokens).post(create_token))
        .route("/users/{name}/tokens/{id}", get(get_token).delete(revoke_token))
}

/// The longest lifetime a token may ask for: a hundred years, in seconds.
const MAX_EXPIRES_IN: u64 = 100 * 365 * 24 * 3600;

fn no_such_token(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No such token: {id}"))
}

async fn list_tokens(
    State(hub): State<Hub>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let roles = &hub.settings.roles;
    let now = now_millis();
    hub.raft
        .read(|state| {
            caller.authorize(state, &["read:tokens"], Resource::User(&name))?;
            if !state.users.contains_key(&name) {
                return Err(ApiError::no_such_user(&name));
            }
            let view = caller.view(state, roles);
            let owner = TokenOwner::User(name.clone());
            let tokens: Vec<Value> = state
                .tokens_of(&owner)
                .filter(|token| !token.is_expired(now))
                .map(|token| view.token(token))
                .collect();
            Ok(Json(json!({ "api_tokens": tokens })))
        })
        .await?
}

#[derive(Deserialize, Default)]
struct CreateTokenBody {
    note: Option<String>,
    expires_in: Option<Value>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    /// `{"username", "password"}` checked by the authenticator, instead of a token.
    auth: Option<LoginBody>,
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    #[serde(default)]
    password: String,
}

/// Whoever the request authenticates as: its token or cookie, or else the `auth` body
/// (JupyterHub lets a user get a token with their password).
async fn requester(hub: &Hub, caller: Result<Caller, ApiError>, auth: Option<&LoginBody>) -> Result<Caller, ApiError> {
    let (Err(no_credentials), Some(auth)) = (&caller, auth) else {
        return caller;
    };
    let ip = crate::login_limit::client_ip();
    if let Err(retry_after) = hub.logins.check(&auth.username, ip.as_deref()) {
        tracing::warn!(user = %crate::pages::loggable(&auth.username), "token request refused: too many failed logins");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            crate::login_limit::message(retry_after),
        ));
    }
    let name = match hub.auth.authenticate(&hub.raft, &auth.username, &auth.password).await {
        Ok(login) => {
            hub.logins.succeeded(&auth.username);
            login.name
        }
        Err(refused) => {
            if crate::login_limit::counts(&refused) {
                hub.logins.failed(&auth.username, ip.as_deref());
            }
            tracing::warn!(user = %crate::pages::loggable(&auth.username), reason = ?refused, "failed login (token request)");
            return Err(no_credentials.clone());
        }
    };
    let owner = TokenOwner::User(name.clone());
    let roles = &hub.settings.roles;
    let found = hub
        .raft
        .read(|state| {
            state.users.get(&name).map(|user| Caller {
                scopes: roles.owner_scopes(state, &owner),
                owner: owner.clone(),
                token_id: None,
                session_id: None,
                owner_is_admin: user.admin,
            })
        })
        .await?;
    found.ok_or_else(ApiError::invalid_credentials)
}

async fn create_token(
    State(hub): State<Hub>,
    caller: Result<Caller, ApiError>,
    Path(name): Path<String>,
    OptionalApiJson(body): OptionalApiJson<CreateTokenBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let caller = requester(&hub, caller, body.auth.as_ref()).await?;
    let now = now_millis();
    let expires_in = match body.expires_in {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64().filter(|s| *s > 0) {
            // Past a century the expiry date would not fit our clock's range (and
            // computing it overflowed: a panic any user could cause).
            Some(seconds) if seconds > MAX_EXPIRES_IN => {
                return Err(ApiError::bad_request(format!(
                    "expires_in must be at most {MAX_EXPIRES_IN} seconds"
                )));
            }
            Some(seconds) => Some(seconds),
            None => return Err(ApiError::bad_request("expires_in must be a positive integer")),
        },
        Some(_) => return Err(ApiError::bad_request("expires_in must be a positive integer")),
    };
    if let (Some(max), Some(asked)) = (hub.settings.token_expires_in_max, expires_in)
        && asked > max.as_secs()
    {
        return Err(ApiError::bad_request(format!(
            "expires_in: {asked} must not exceed {} seconds",
            max.as_secs()
        )));
    }
    if body.scopes.is_some() && body.roles.is_some() {
        return Err(ApiError::bad_request(
            "Specify only one of 'scopes' or 'roles', not both",
        ));
    }
    let roles = &hub.settings.roles;
    let requested: Vec<String> = match (&body.scopes, &body.roles) {
        (Some(scopes), _) => scopes.clone(),
        (None, Some(role_names)) => {
            let mut scopes = Vec::new();
            for role in role_names {
                let found = roles
                    .get(role)
                    .ok_or_else(|| ApiError::bad_request(format!("Role '{role}' does not exist")))?;
                scopes.extend(found.scopes.iter().cloned());
            }
            scopes
        }
        (None, None) => vec!["inherit".to_owned()],
    };
    let scopes = rbac::resolve_for_token(&requested, Subject::User(&name), None)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    hub.raft
        .read(|state| {
            caller.authorize(state, &["tokens"], Resource::User(&name))?;
            if !state.users.contains_key(&name) {
                return Err(ApiError::no_such_user(&name));
            }
            // What the token asks for must be within what the requester holds: a
            // token can never be a way to more power (`inherit` is the owner's all).
            let owner = TokenOwner::User(name.clone());
            let asked = if scopes.iter().any(|s| s == "inherit") {
                roles.owner_scopes(state, &owner)
            } else {
                rbac::expand(&scopes, Subject::User(&name), None)
                    .map_err(|err| ApiError::bad_request(err.to_string()))?
            };
            if !asked.is_within(&caller.scopes, state) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("Not assigning requested scopes {requested:?}: not held by the requester"),
                ));
            }
            Ok(())
        })
        .await??;
    let mut note = body
        .note
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "Requested via api".into());
    if !caller.is_user(&name) {
        let (kind, requester) = match &caller.owner {
            TokenOwner::User(n) => ("user", n),
            TokenOwner::Service(n) => ("service", n),
        };
        note.push_str(&format!(" by {kind} {requester}"));
    }
    let token = new_token();
    let command = Command::IssueToken(TokenRequest {
        hash: hash_token(&token),
        owner: TokenOwner::User(name.clone()),
        scopes,
        note,
        expires_at: expires_in
            .map(|seconds| now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX).saturating_mul(1000))),
        at: now,
    });
    let issued: Token = match hub.raft.propose(command).await? {
        Applied::Rejected(rejection) => return Err(rejection.into()),
        Applied::Events(events) => events
            .into_iter()
            .find_map(|e| match e.event {
                Event::TokenIssued { token } => Some(token),
                _ => None,
            })
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token not issued"))?,
        Applied::Nothing => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token not issued")),
    };
    let mut model = hub.raft.read(|state| caller.view(state, roles).token(&issued)).await?;
    model["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(model)).into_response())
}

/// The token `public_id` of user `name`, after checking `scope` on the user.
fn users_token<'a>(
    state: &'a ganymede_model::State,
    caller: &Caller,
    scope: &str,
    name: &str,
    public_id: &str,
) -> Result<&'a Token, ApiError> {
    caller.authorize(state, &[scope], Resource::User(name))?;
    if !state.users.contains_key(name) {
        return Err(ApiError::no_such_user(name));
    }
    Token::parse_public_id(public_id)
        .and_then(|id| state.tokens.get(&id))
        .filter(|token| token.owner == TokenOwner::User(name.to_owned()))
        .ok_or_else(|| no_such_token(public_id))
}

async fn get_token(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let roles = &hub.settings.roles;
    hub.raft
        .read(|state| {
            let token = users_token(state, &caller, "read:tokens", &name, &id)?;
            Ok(Json(caller.view(state, roles).token(token)))
        })
        .await?
}

async fn revoke_token(
    State(hub): State<Hub>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let token_id = hub
        .raft
        .read(|state| users_token(state, &caller, "tokens", &name, &id).map(|token| token.id))
        .await??;
    match hub
        .raft
        .propose(Command::RevokeToken {
            id: token_id,
            at: now_millis(),
        })
        .await?
    {
        Applied::Rejected(ganymede_model::Rejection::TokenNotFound { .. }) | Applied::Events(_) | Applied::Nothing => {
            // Answer once this replica has applied it: the token is refused here from now
            // on (other replicas follow within a heartbeat).
            hub.raft.read(|_| ()).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Applied::Rejected(rejection) => Err(rejection.into()),
    }
}
