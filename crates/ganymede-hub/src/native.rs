//! The native authenticator's pages (jupyterhub-nativeauthenticator's): `/hub/signup`,
//! `/hub/authorize` where admins approve sign-ups, and `/hub/change-password` (an admin
//! may also set another user's). Passwords are hashed with argon2id (PHC strings, a
//! fresh salt each) off the async threads; only the hash is replicated.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ganymede_model::{Command, Rejection};
use ganymede_raft::Applied;
use minijinja::context;
use minijinja::value::Serde;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::Hub;
use crate::authenticator::{NativeSettings, normalized};
use crate::pages::{anonymous_xsrf, is_https, set_cookie};
use crate::render::now_millis;
use crate::session::{XSRF_COOKIE, cookie};
use crate::templates::{alert, message, render};
use crate::token_page::{forged, signed_in};

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/hub/signup", get(signup_page).post(signup))
        .route("/hub/authorize", get(authorize_page))
        .route("/hub/authorize/{name}", post(authorize))
        .route("/hub/change-password", get(change_own_page).post(change_own))
        .route("/hub/change-password/{name}", get(change_other_page).post(change_other))
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Hashing is deliberately slow (tens of milliseconds): not on the async threads.
pub async fn hash_password_off_thread(password: String) -> Option<String> {
    tokio::task::spawn_blocking(move || hash_password(&password).ok())
        .await
        .ok()
        .flatten()
}

/// Whether `password` matches `hash`. With no hash, the check runs against a fixed one
/// and fails, taking as long as a real check.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        static DECOY: OnceLock<String> = OnceLock::new();
        let decoy = DECOY.get_or_init(|| hash_password("decoy password").unwrap_or_default());
        let (phc, real) = match &hash {
            Some(hash) => (hash.as_str(), true),
            None => (decoy.as_str(), false),
        };
        let matches = PasswordHash::new(phc)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok());
        matches && real
    })
    .await
    .unwrap_or(false)
}

fn not_native() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "This hub does not keep its own accounts.",
    )
}

/// The sign-up page, with what happened to the last attempt (`(text, is_error)`).
fn signup_page_for(status: StatusCode, xsrf: &str, outcome: Option<(&str, bool)>) -> Response {
    render(
        status,
        "signup.html",
        context! {
            title => "Sign up",
            form_xsrf => xsrf,
            message => outcome.map(|(text, _)| text),
            error => outcome.is_some_and(|(_, error)| error),
        },
    )
}

async fn signup_page(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if hub.auth.native().is_none() {
        return not_native();
    }
    let (xsrf, fresh) = anonymous_xsrf(&headers);
    let mut response = signup_page_for(StatusCode::OK, &xsrf, None);
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(XSRF_COOKIE, &xsrf, "/hub/", Some(3600), is_https(&headers)),
        );
    }
    response
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    signup_password: String,
    #[serde(default)]
    signup_password_confirmation: String,
    #[serde(default, rename = "_xsrf")]
    xsrf: String,
}

/// Why a new password is not acceptable.
fn check_new_password(settings: &NativeSettings, password: &str, confirmation: &str) -> Result<(), String> {
    if password.chars().count() < settings.minimum_password_length {
        return Err(format!(
            "The password must be at least {} characters long.",
            settings.minimum_password_length
        ));
    }
    if password.len() > 1024 {
        return Err("The password is too long.".into());
    }
    if password != confirmation {
        return Err("The passwords do not match.".into());
    }
    Ok(())
}

async fn signup(State(hub): State<Hub>, headers: HeaderMap, Form(form): Form<SignupForm>) -> Response {
    let Some(settings) = hub.auth.native() else {
        return not_native();
    };
    let (xsrf, _) = anonymous_xsrf(&headers);
    let refuse = |status: StatusCode, text: &str| signup_page_for(status, &xsrf, Some((text, true)));
    if form.xsrf.is_empty() || cookie(&headers, XSRF_COOKIE) != Some(form.xsrf.as_str()) {
        return refuse(StatusCode::FORBIDDEN, "Your sign-up form expired. Please try again.");
    }
    let Ok(name) = normalized(&form.username) else {
        return refuse(StatusCode::BAD_REQUEST, "That user name is not valid.");
    };
    if let Err(message) = check_new_password(settings, &form.signup_password, &form.signup_password_confirmation) {
        return refuse(StatusCode::BAD_REQUEST, &message);
    }
    if hub.auth.check_allowed(&name).is_err() {
        return refuse(StatusCode::FORBIDDEN, "This user name is not allowed to sign up.");
    }
    let Some(password_hash) = hash_password_off_thread(form.signup_password).await else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "The password could not be stored.");
    };
    // Admins named in the configuration need nobody's approval (how the first admin
    // gets in).
    let authorized = settings.open_signup || hub.auth.admin_users.contains(&name);
    let command = Command::SignUp {
        name: name.clone(),
        password_hash,
        authorized,
        at: now_millis(),
    };
    match hub.raft.propose(command).await {
        Ok(Applied::Events(_)) => {
            info!(user = %name, authorized, "sign-up");
            let message = if authorized {
                "The sign-up was successful. You can now sign in."
            } else {
                "Your information has been sent to the admin. You can sign in once your account is authorized."
            };
            signup_page_for(StatusCode::OK, &xsrf, Some((message, false)))
        }
        Ok(Applied::Rejected(Rejection::AccountExists { .. })) => {
            refuse(StatusCode::CONFLICT, "That user name is already taken.")
        }
        Ok(Applied::Rejected(rejection)) => refuse(StatusCode::BAD_REQUEST, &rejection.to_string()),
        Ok(Applied::Nothing) | Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The hub cannot record your sign-up right now. Try again.",
        ),
    }
}

/// The signed-in admin and their XSRF token, or the response to send instead.
async fn admin_session(hub: &Hub, headers: &HeaderMap, here: &str) -> Result<(String, String), Response> {
    if hub.auth.native().is_none() {
        return Err(not_native());
    }
    let (session, xsrf) = signed_in(hub, headers, here).await?;
    let is_admin = hub
        .raft
        .read_local(|state| state.users.get(&session.user).is_some_and(|user| user.admin));
    if !is_admin {
        return Err(message(StatusCode::FORBIDDEN, "Forbidden", "Only admins can do this."));
    }
    Ok((session.user, xsrf))
}

async fn authorize_page(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    let (_, xsrf) = match admin_session(&hub, &headers, "/hub/authorize").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let accounts: Vec<AccountRow> = hub.raft.read_local(|state| {
        state
            .accounts
            .values()
            .map(|account| AccountRow {
                name: account.name.clone(),
                quoted: crate::render::quote(&account.name),
                authorized: account.authorized,
            })
            .collect()
    });
    render(
        StatusCode::OK,
        "accounts.html",
        context! {title => "Authorize users", form_xsrf => xsrf, accounts => Serde(accounts)},
    )
}

/// A native account on the authorize page.
#[derive(Serialize)]
struct AccountRow {
    name: String,
    /// The name as a path segment of the account's form action.
    quoted: String,
    authorized: bool,
}

#[derive(Deserialize)]
struct AuthorizeForm {
    #[serde(default)]
    action: String,
    #[serde(default, rename = "_xsrf")]
    xsrf: String,
}

async fn authorize(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<AuthorizeForm>,
) -> Response {
    let (admin, xsrf) = match admin_session(&hub, &headers, "/hub/authorize").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if form.xsrf != xsrf {
        return forged();
    }
    let at = now_millis();
    let command = match form.action.as_str() {
        "authorize" => Command::AuthorizeAccount {
            name: name.clone(),
            authorized: true,
            at,
        },
        "unauthorize" => Command::AuthorizeAccount {
            name: name.clone(),
            authorized: false,
            at,
        },
        "discard" => Command::DeleteAccount { name: name.clone(), at },
        _ => return alert(StatusCode::BAD_REQUEST, "Bad request", "Unknown action."),
    };
    match hub.raft.propose(command).await {
        Ok(Applied::Rejected(rejection)) => alert(StatusCode::NOT_FOUND, "Authorize users", &rejection.to_string()),
        Ok(_) => {
            info!(admin = %admin, user = %crate::pages::loggable(&name), action = %form.action, "account changed");
            Redirect::to("/hub/authorize").into_response()
        }
        Err(_) => alert(
            StatusCode::SERVICE_UNAVAILABLE,
            "Authorize users",
            "The hub cannot record this right now. Try again.",
        ),
    }
}

/// Whose password a change-password page sets: one's own (asks for the current one)
/// or, for an admin, another user's.
#[derive(Clone, Copy)]
enum Whose<'a> {
    Own,
    Other(&'a str),
}

/// The change-password page posting to `action`, with the outcome of the last attempt
/// (`(text, is_error)`).
fn change_page(status: StatusCode, action: &str, xsrf: &str, whose: Whose, outcome: Option<(&str, bool)>) -> Response {
    let (own, name) = match whose {
        Whose::Own => (true, None),
        Whose::Other(name) => (false, Some(name)),
    };
    render(
        status,
        "change_password.html",
        context! {
            title => "Change password",
            action,
            form_xsrf => xsrf,
            own,
            name,
            message => outcome.map(|(text, _)| text),
            error => outcome.is_some_and(|(_, error)| error),
        },
    )
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirmation: String,
    #[serde(default, rename = "_xsrf")]
    xsrf: String,
}

async fn change_own_page(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if hub.auth.native().is_none() {
        return not_native();
    }
    match signed_in(&hub, &headers, "/hub/change-password").await {
        Ok((_, xsrf)) => change_page(StatusCode::OK, "/hub/change-password", &xsrf, Whose::Own, None),
        Err(response) => response,
    }
}

async fn change_own(State(hub): State<Hub>, headers: HeaderMap, Form(form): Form<ChangeForm>) -> Response {
    let Some(settings) = hub.auth.native() else {
        return not_native();
    };
    let (session, xsrf) = match signed_in(&hub, &headers, "/hub/change-password").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if form.xsrf != xsrf {
        return forged();
    }
    let action = "/hub/change-password";
    let current = hub
        .raft
        .read_local(|state| state.accounts.get(&session.user).map(|a| a.password_hash.clone()));
    if current.is_none() || !verify_password(form.old_password.clone(), current).await {
        return change_page(
            StatusCode::FORBIDDEN,
            action,
            &xsrf,
            Whose::Own,
            Some(("Your current password is wrong.", true)),
        );
    }
    set_password(&hub, settings, &session.user, form, action, &xsrf, Whose::Own).await
}

async fn change_other_page(State(hub): State<Hub>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let action = format!("/hub/change-password/{}", crate::render::quote(&name));
    match admin_session(&hub, &headers, &action).await {
        Ok((_, xsrf)) => change_page(StatusCode::OK, &action, &xsrf, Whose::Other(&name), None),
        Err(response) => response,
    }
}

async fn change_other(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let action = format!("/hub/change-password/{}", crate::render::quote(&name));
    let (_, xsrf) = match admin_session(&hub, &headers, &action).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if form.xsrf != xsrf {
        return forged();
    }
    let Some(settings) = hub.auth.native() else {
        return not_native();
    };
    set_password(&hub, settings, &name, form, &action, &xsrf, Whose::Other(&name)).await
}

async fn set_password(
    hub: &Hub,
    settings: &NativeSettings,
    name: &str,
    form: ChangeForm,
    action: &str,
    xsrf: &str,
    whose: Whose<'_>,
) -> Response {
    let say =
        |status: StatusCode, text: &str, error: bool| change_page(status, action, xsrf, whose, Some((text, error)));
    if let Err(message) = check_new_password(settings, &form.new_password, &form.new_password_confirmation) {
        return say(StatusCode::BAD_REQUEST, &message, true);
    }
    let Some(password_hash) = hash_password_off_thread(form.new_password).await else {
        return say(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The password could not be stored.",
            true,
        );
    };
    let command = Command::SetPassword {
        name: name.to_owned(),
        password_hash,
        at: now_millis(),
    };
    match hub.raft.propose(command).await {
        Ok(Applied::Events(_)) => {
            info!(user = %crate::pages::loggable(name), "password changed");
            say(StatusCode::OK, "The password has been changed.", false)
        }
        Ok(Applied::Rejected(rejection)) => say(StatusCode::NOT_FOUND, &rejection.to_string(), true),
        Ok(Applied::Nothing) | Err(_) => say(
            StatusCode::SERVICE_UNAVAILABLE,
            "The hub cannot record this right now. Try again.",
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_fresh_salt_and_verify() {
        let first = hash_password("correct horse").expect("hash");
        let second = hash_password("correct horse").expect("hash");
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "a fresh salt each time");
        assert!(!first.contains("correct horse"));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        assert!(runtime.block_on(verify_password("correct horse".into(), Some(first.clone()))));
        assert!(!runtime.block_on(verify_password("wrong".into(), Some(first))));
        assert!(!runtime.block_on(verify_password("decoy password".into(), None)));
        assert!(!runtime.block_on(verify_password("x".into(), Some("not a hash".into()))));
    }

    #[test]
    fn new_passwords_are_checked() {
        let settings = NativeSettings::default();
        assert!(check_new_password(&settings, "short", "short").is_err());
        assert!(check_new_password(&settings, "long enough", "long enougH").is_err());
        assert_eq!(check_new_password(&settings, "long enough", "long enough"), Ok(()));
    }
}
