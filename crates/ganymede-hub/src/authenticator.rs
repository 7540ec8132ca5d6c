//! Who may log in. One enum, chosen by configuration (`auth.authenticator`, or
//! `GANYMEDE_AUTHENTICATOR`): `dummy` — any user name, and the shared password if one is
//! configured — as JupyterHub's `DummyAuthenticator`; `native` — accounts with argon2
//! password hashes in the replicated state, sign-up with admin approval and lockout, as
//! jupyterhub-nativeauthenticator. Allowed and admin users apply to every authenticator.

use std::collections::BTreeSet;
use std::time::Duration;

use ganymede_model::{Command, Secret, names};
use ganymede_raft::RaftHandle;
use tracing::warn;

use crate::native;

/// The configured authenticator.
#[derive(Clone, Debug)]
pub enum Authenticator {
    /// Any user name; the password must equal the shared one when it is set.
    Dummy { password: Option<Secret> },
    /// Accounts that sign up at `/hub/signup` and log in with their password.
    Native(NativeSettings),
    /// Users of an LDAP directory.
    Ldap(crate::ldap::LdapSettings),
    /// Users of an OpenID Connect provider (browser logins only).
    Oidc(crate::oidc::OidcSettings),
}

/// A successful login: who, and whether the authenticator says they are an admin
/// (`None`: it has no opinion; `admin_users` still apply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub name: String,
    pub admin: Option<bool>,
}

/// jupyterhub-nativeauthenticator's settings of the same names.
#[derive(Clone, Debug)]
pub struct NativeSettings {
    /// Sign-ups need no admin approval.
    pub open_signup: bool,
    pub minimum_password_length: usize,
    /// Wrong passwords in a row before the account is locked; 0 never locks.
    pub allowed_failed_logins: u32,
    /// How long a lock lasts.
    pub seconds_before_next_try: Duration,
}

impl Default for NativeSettings {
    fn default() -> Self {
        NativeSettings {
            open_signup: false,
            minimum_password_length: 8,
            allowed_failed_logins: 5,
            seconds_before_next_try: Duration::from_secs(600),
        }
    }
}

/// Login settings: the authenticator and JupyterHub's `allowed_users`/`admin_users`.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub authenticator: Authenticator,
    /// Empty: everyone the authenticator accepts.
    pub allowed_users: BTreeSet<String>,
    /// Made admin when they log in (and always allowed).
    pub admin_users: BTreeSet<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            authenticator: Authenticator::Dummy { password: None },
            allowed_users: BTreeSet::new(),
            admin_users: BTreeSet::new(),
        }
    }
}

/// Why a login was refused; the page says no more than "invalid" either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginRefused {
    InvalidCredentials,
    NotAllowed,
    /// Native: the account waits for an admin's approval.
    NotAuthorized,
    /// Native: too many failed logins; retry after this many seconds.
    Locked {
        retry_after_secs: i64,
    },
    /// The hub could not check (no quorum, directory or provider down).
    Unavailable,
    /// OpenID: the claimed user name belongs to another identity.
    NameTaken,
}

impl LoginRefused {
    /// What the login page says.
    pub fn message(&self) -> String {
        match self {
            LoginRefused::InvalidCredentials => "Invalid username or password".into(),
            LoginRefused::NotAllowed => "You are not allowed to use this hub".into(),
            LoginRefused::NotAuthorized => "Your account has not been authorized by an admin yet.".into(),
            LoginRefused::Locked { retry_after_secs } => format!(
                "Too many failed login attempts. Try again in {} minute(s).",
                (retry_after_secs + 59) / 60
            ),
            LoginRefused::Unavailable => "The hub cannot check your login right now. Try again.".into(),
            LoginRefused::NameTaken => {
                "This user name belongs to another account of the identity provider. Ask an admin.".into()
            }
        }
    }
}

fn same_secret(a: &str, b: &str) -> bool {
    // Constant time in the length of the shorter input: no early exit on a mismatch.
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn name(&self) -> &'static str {
        match self {
            Authenticator::Dummy { .. } => "dummy",
            Authenticator::Native(_) => "native",
            Authenticator::Ldap(_) => "ldap",
            Authenticator::Oidc(_) => "oidc",
        }
    }
}

impl AuthSettings {
    /// The native authenticator's settings, if it is the one configured.
    pub fn native(&self) -> Option<&NativeSettings> {
        match &self.authenticator {
            Authenticator::Native(settings) => Some(settings),
            Authenticator::Dummy { .. } | Authenticator::Ldap(_) | Authenticator::Oidc(_) => None,
        }
    }

    /// Checks a login form; on success the normalized user name and what the
    /// authenticator says about admin rights.
    pub async fn authenticate(&self, raft: &RaftHandle, username: &str, password: &str) -> Result<Login, LoginRefused> {
        let name = normalized(username)?;
        let mut admin = None;
        match &self.authenticator {
            Authenticator::Dummy { password: shared } => check_shared(shared.as_ref(), password)?,
            Authenticator::Native(settings) => check_account(raft, settings, &name, password).await?,
            Authenticator::Ldap(settings) => admin = crate::ldap::authenticate(settings, &name, password).await?.admin,
            // The provider checks passwords, in the browser; there is none to check here.
            Authenticator::Oidc(_) => return Err(LoginRefused::InvalidCredentials),
        }
        self.check_allowed(&name)?;
        if self.admin_users.contains(&name) {
            admin = Some(true);
        }
        Ok(Login { name, admin })
    }

    /// `allowed_users` (admins are always allowed).
    pub fn check_allowed(&self, name: &str) -> Result<(), LoginRefused> {
        if !self.allowed_users.is_empty() && !self.allowed_users.contains(name) && !self.admin_users.contains(name) {
            return Err(LoginRefused::NotAllowed);
        }
        Ok(())
    }
}

/// The user name as the hub knows it, if it is acceptable at all.
pub fn normalized(username: &str) -> Result<String, LoginRefused> {
    let name = names::normalize_user_name(username.trim());
    if names::is_valid_user_name(&name) {
        Ok(name)
    } else {
        Err(LoginRefused::InvalidCredentials)
    }
}

fn check_shared(shared: Option<&Secret>, password: &str) -> Result<(), LoginRefused> {
    match shared {
        Some(shared) if !same_secret(shared.expose(), password) => Err(LoginRefused::InvalidCredentials),
        _ => Ok(()),
    }
}

/// The native authenticator's check: the account's argon2 hash, its approval, its lock.
/// Wrong passwords are counted in the replicated state, so a lock holds on every replica.
async fn check_account(
    raft: &RaftHandle,
    settings: &NativeSettings,
    name: &str,
    password: &str,
) -> Result<(), LoginRefused> {
    // A linearizable read: a password changed (or a lock set) through another replica
    // counts here at once, not a heartbeat later.
    let account = raft
        .read(|state| state.accounts.get(name).cloned())
        .await
        .map_err(|_| LoginRefused::Unavailable)?;
    let now = crate::render::now_millis();
    let Some(account) = account else {
        // As slow as a real check, so that timing does not tell which names exist.
        native::verify_password(password.to_owned(), None).await;
        return Err(LoginRefused::InvalidCredentials);
    };
    if let Some(until) = account.locked_until.filter(|_| account.is_locked(now)) {
        return Err(LoginRefused::Locked {
            retry_after_secs: (until - now + 999) / 1000,
        });
    }
    if !native::verify_password(password.to_owned(), Some(account.password_hash.clone())).await {
        if settings.allowed_failed_logins > 0 {
            let command = Command::RecordLoginFailure {
                name: name.to_owned(),
                max_failures: settings.allowed_failed_logins,
                lock_millis: settings.seconds_before_next_try.as_millis() as i64,
                at: now,
            };
            if let Err(err) = raft.propose(command).await {
                warn!(error = %err, "a failed login could not be counted");
            }
        }
        return Err(LoginRefused::InvalidCredentials);
    }
    if !account.authorized {
        return Err(LoginRefused::NotAuthorized);
    }
    if account.failed_logins > 0 {
        let command = Command::ClearLoginFailures {
            name: name.to_owned(),
            at: now,
        };
        if let Err(err) = raft.propose(command).await {
            warn!(error = %err, "failed logins could not be cleared");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_accepts_any_name_and_checks_the_shared_password() {
        assert_eq!(normalized(" Alice "), Ok("alice".into()));
        assert_eq!(normalized("a/b"), Err(LoginRefused::InvalidCredentials));
        assert_eq!(check_shared(None, "anything"), Ok(()));
        let shared = Secret::from("s3cret");
        assert_eq!(check_shared(Some(&shared), "s3cret"), Ok(()));
        assert_eq!(
            check_shared(Some(&shared), "s3cre"),
            Err(LoginRefused::InvalidCredentials)
        );
        let guarded = AuthSettings {
            authenticator: Authenticator::Dummy { password: None },
            allowed_users: ["alice".to_owned()].into(),
            admin_users: ["root".to_owned()].into(),
        };
        assert_eq!(guarded.check_allowed("alice"), Ok(()));
        assert_eq!(guarded.check_allowed("bob"), Err(LoginRefused::NotAllowed));
        assert_eq!(guarded.check_allowed("root"), Ok(()));
    }
}
