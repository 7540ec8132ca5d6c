//! The OpenID Connect authenticator (oauthenticator's `GenericOAuthenticator`, on the
//! `openidconnect` crate): `/hub/oauth_login` sends the browser to the provider with a
//! state, a nonce and a PKCE challenge kept in a signed, short-lived cookie;
//! `/hub/oauth_callback` redeems the code, verifies the ID token (signature, issuer,
//! audience, expiry, nonce) and logs the user in.
//!
//! Users are keyed by the issuer's stable `sub`: the first login binds `<issuer>#<sub>`
//! to a user name (from `username_claim`), in the replicated state, and every later
//! login of that subject is that user — whatever the other claims say. Email is never
//! used to decide who someone is.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ganymede_model::{Command, Rejection, Secret};
use ganymede_raft::Applied;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::Hub;
use crate::authenticator::{Login, LoginRefused, normalized};
use crate::pages::{is_https, set_cookie};
use crate::render::now_millis;
use crate::session::cookie;
use crate::templates::alert_with_link;

/// The cookie that carries one login's state between the two redirects.
const STATE_COOKIE: &str = "oauthenticator-state";
const STATE_MAX_AGE_SECS: i64 = 600;

/// The provider and how to use it.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// The issuer, e.g. `https://accounts.example.org` (discovery is at
    /// `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// From `GANYMEDE_OIDC_CLIENT_SECRET` only.
    pub client_secret: Option<Secret>,
    /// This hub's callback as the provider knows it, e.g.
    /// `https://hub.example.org/hub/oauth_callback`.
    pub redirect_url: String,
    /// Beyond `openid`.
    pub scopes: Vec<String>,
    /// The claim that names a user the first time they log in (`preferred_username`,
    /// falling back to `sub`).
    pub username_claim: String,
    /// The claim with the user's groups.
    pub groups_claim: String,
    /// When set, only members of these groups may log in.
    pub allowed_groups: Vec<String>,
    /// Members of these groups are admins, and the others are not.
    pub admin_groups: Vec<String>,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            redirect_url: String::new(),
            scopes: vec!["profile".into(), "email".into()],
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
        }
    }
}

/// The provider's metadata, discovered on first use (the provider may be down when the
/// hub starts) and kept.
#[derive(Default)]
pub struct Discovery {
    metadata: Mutex<Option<CoreProviderMetadata>>,
}

fn http_client() -> Result<openidconnect::reqwest::Client, LoginRefused> {
    // No redirects: an ID provider that redirects its own endpoints is misconfigured,
    // and following them would let it point the hub anywhere.
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|_| LoginRefused::Unavailable)
}

impl Discovery {
    async fn metadata(&self, settings: &OidcSettings) -> Result<CoreProviderMetadata, LoginRefused> {
        let mut cached = self.metadata.lock().await;
        if let Some(metadata) = cached.as_ref() {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(settings.issuer.clone()).map_err(|_| LoginRefused::Unavailable)?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http_client()?)
            .await
            .map_err(|err| {
                warn!(error = %err, issuer = %settings.issuer, "OpenID provider discovery failed");
                LoginRefused::Unavailable
            })?;
        *cached = Some(metadata.clone());
        Ok(metadata)
    }
}

/// The client for the discovered provider: its endpoints, this hub's id, secret and
/// callback.
type ProviderClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

impl Discovery {
    async fn client(&self, settings: &OidcSettings) -> Result<ProviderClient, LoginRefused> {
        let metadata = self.metadata(settings).await?;
        let redirect = RedirectUrl::new(settings.redirect_url.clone()).map_err(|_| {
            warn!("auth.oidc_redirect_url is not a URL");
            LoginRefused::Unavailable
        })?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            settings
                .client_secret
                .as_ref()
                .map(|secret| ClientSecret::new(secret.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }
}

fn settings(hub: &Hub) -> Option<(&OidcSettings, Arc<Discovery>)> {
    match &hub.auth.authenticator {
        crate::Authenticator::Oidc(settings) => Some((settings, hub.oidc.clone())),
        _ => None,
    }
}

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/hub/oauth_login", get(oauth_login))
        .route("/hub/oauth_callback", get(oauth_callback))
}

/// What the state cookie holds (signed, not secret from its own browser).
#[derive(Serialize, Deserialize)]
struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

fn failure(status: StatusCode, message: &str) -> Response {
    alert_with_link(status, "Sign in", message, ("/hub/oauth_login", "Try again"))
}

async fn oauth_login(State(hub): State<Hub>, headers: HeaderMap, Query(query): Query<NextQuery>) -> Response {
    let Some((settings, discovery)) = settings(&hub) else {
        return failure(StatusCode::NOT_FOUND, "This hub does not use an OpenID provider.");
    };
    let client = match discovery.client(settings).await {
        Ok(client) => client,
        Err(refused) => return failure(StatusCode::SERVICE_UNAVAILABLE, &refused.message()),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in &settings.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.url();
    let next = query
        .next
        .filter(|next| crate::session::is_local_path(next))
        .unwrap_or_else(|| "/hub/home".into());
    let login_state = LoginState {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        next,
    };
    let Some(key) = hub.cookie_key().await else {
        return failure(StatusCode::SERVICE_UNAVAILABLE, "The hub is starting.");
    };
    let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&login_state).unwrap_or_default());
    let signed = key.sign(STATE_COOKIE, &encoded, now_millis() / 1000);
    let mut response = Redirect::to(url.as_str()).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            STATE_COOKIE,
            &signed,
            "/hub/",
            Some(STATE_MAX_AGE_SECS),
            is_https(&headers),
        ),
    );
    response
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oauth_callback(State(hub): State<Hub>, headers: HeaderMap, Query(query): Query<CallbackQuery>) -> Response {
    let Some((settings, discovery)) = settings(&hub) else {
        return failure(StatusCode::NOT_FOUND, "This hub does not use an OpenID provider.");
    };
    if let Some(error) = &query.error {
        warn!(error = %crate::pages::loggable(error), "the OpenID provider refused the login");
        let description = query.error_description.as_deref().unwrap_or(error);
        return failure(
            StatusCode::FORBIDDEN,
            &format!("The identity provider refused: {}", crate::pages::loggable(description)),
        );
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer is missing its code or state.",
        );
    };
    let Some(key) = hub.cookie_key().await else {
        return failure(StatusCode::SERVICE_UNAVAILABLE, "The hub is starting.");
    };
    let login_state: Option<LoginState> = cookie(&headers, STATE_COOKIE)
        .and_then(|signed| key.verify(STATE_COOKIE, signed, now_millis() / 1000, STATE_MAX_AGE_SECS))
        .and_then(|encoded| URL_SAFE_NO_PAD.decode(encoded).ok())
        .and_then(|json| serde_json::from_slice(&json).ok());
    let Some(login_state) = login_state.filter(|saved| saved.state == state) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "This sign-in expired or did not start here. Try again.",
        );
    };
    let started = std::time::Instant::now();
    let login = match identify(&hub, settings, &discovery, code, &login_state).await {
        Ok(login) => login,
        Err(refused) => {
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), "OpenID login refused");
            let status = match refused {
                LoginRefused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::FORBIDDEN,
            };
            return failure(status, &refused.message());
        }
    };
    let mut response = crate::pages::finish_login(&hub, &headers, &login, &login_state.next).await;
    response.headers_mut().append(
        header::SET_COOKIE,
        header::HeaderValue::from_static("oauthenticator-state=; Path=/hub/; Max-Age=0; HttpOnly"),
    );
    response
}

/// The user the provider vouches for.
async fn identify(
    hub: &Hub,
    settings: &OidcSettings,
    discovery: &Discovery,
    code: String,
    login_state: &LoginState,
) -> Result<Login, LoginRefused> {
    let client = discovery.client(settings).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|_| LoginRefused::Unavailable)?
        .set_pkce_verifier(PkceCodeVerifier::new(login_state.verifier.clone()))
        .request_async(&http_client()?)
        .await
        .map_err(|err| {
            warn!(error = %err, "the OpenID code exchange failed");
            LoginRefused::InvalidCredentials
        })?;
    let id_token = tokens.id_token().ok_or_else(|| {
        warn!("the OpenID provider sent no ID token");
        LoginRefused::InvalidCredentials
    })?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(login_state.nonce.clone()))
        .map_err(|err| {
            warn!(error = %err, "the ID token did not verify");
            LoginRefused::InvalidCredentials
        })?;
    let subject = claims.subject().as_str().to_owned();
    // The token verified; its payload also carries the claims the core types do not
    // name (groups, custom user name claims).
    let payload: serde_json::Value = id_token
        .to_string()
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    let groups: Vec<String> = payload[&settings.groups_claim]
        .as_array()
        .map(|groups| groups.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if !settings.allowed_groups.is_empty() && !groups.iter().any(|g| settings.allowed_groups.contains(g)) {
        return Err(LoginRefused::NotAllowed);
    }
    let identity = format!("{}#{subject}", settings.issuer);
    let bound = hub
        .raft
        .read(|state| state.identities.get(&identity).cloned())
        .await
        .map_err(|_| LoginRefused::Unavailable)?;
    let name = match bound {
        Some(name) => name,
        None => {
            let claimed = payload[&settings.username_claim].as_str().unwrap_or(&subject);
            let name = normalized(claimed)?;
            let command = Command::BindIdentity {
                identity: identity.clone(),
                user: name.clone(),
                at: now_millis(),
            };
            match hub.raft.propose(command).await {
                Ok(Applied::Events(_) | Applied::Nothing) => {}
                Ok(Applied::Rejected(Rejection::IdentityConflict { .. })) => {
                    warn!(user = %name, "an OpenID subject claimed a name bound to another");
                    return Err(LoginRefused::NameTaken);
                }
                Ok(Applied::Rejected(_)) => return Err(LoginRefused::InvalidCredentials),
                Err(_) => return Err(LoginRefused::Unavailable),
            }
            info!(user = %name, "OpenID identity bound");
            name
        }
    };
    hub.auth.check_allowed(&name)?;
    let admin = if hub.auth.admin_users.contains(&name) {
        Some(true)
    } else if settings.admin_groups.is_empty() {
        None
    } else {
        Some(groups.iter().any(|g| settings.admin_groups.contains(g)))
    };
    Ok(Login { name, admin })
}
