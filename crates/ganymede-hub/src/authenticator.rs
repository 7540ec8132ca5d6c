//! Who may log in. One enum, chosen by configuration (`auth.authenticator`, or
//! `GANYMEDE_AUTHENTICATOR`): for now `dummy` — any user name, and the shared password
//! if one is configured — as JupyterHub's `DummyAuthenticator`. Allowed and admin users
//! apply to every authenticator.

use std::collections::BTreeSet;

use ganymede_model::{Secret, names};

/// The configured authenticator.
#[derive(Clone, Debug)]
pub enum Authenticator {
    /// Any user name; the password must equal the shared one when it is set.
    Dummy { password: Option<Secret> },
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
}

fn same_secret(a: &str, b: &str) -> bool {
    // Constant time in the length of the shorter input: no early exit on a mismatch.
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn name(&self) -> &'static str {
        match self {
            Authenticator::Dummy { .. } => "dummy",
        }
    }
}

impl AuthSettings {
    /// Checks a login form; on success the normalized user name.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<String, LoginRefused> {
        let name = names::normalize_user_name(username.trim());
        if !names::is_valid_user_name(&name) {
            return Err(LoginRefused::InvalidCredentials);
        }
        match &self.authenticator {
            Authenticator::Dummy { password: shared } => {
                if let Some(shared) = shared
                    && !same_secret(shared.expose(), password)
                {
                    return Err(LoginRefused::InvalidCredentials);
                }
            }
        }
        if !self.allowed_users.is_empty() && !self.allowed_users.contains(&name) && !self.admin_users.contains(&name) {
            return Err(LoginRefused::NotAllowed);
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn dummy_accepts_any_name_and_checks_the_shared_password() {
        let open = AuthSettings::default();
        assert_eq!(block(open.authenticate(" Alice ", "anything")), Ok("alice".into()));
        assert_eq!(
            block(open.authenticate("a/b", "x")),
            Err(LoginRefused::InvalidCredentials)
        );
        let guarded = AuthSettings {
            authenticator: Authenticator::Dummy {
                password: Some("s3cret".into()),
            },
            allowed_users: ["alice".to_owned()].into(),
            admin_users: ["root".to_owned()].into(),
        };
        assert_eq!(block(guarded.authenticate("alice", "s3cret")), Ok("alice".into()));
        assert_eq!(
            block(guarded.authenticate("alice", "s3cre")),
            Err(LoginRefused::InvalidCredentials)
        );
        assert_eq!(
            block(guarded.authenticate("bob", "s3cret")),
            Err(LoginRefused::NotAllowed)
        );
        assert_eq!(block(guarded.authenticate("root", "s3cret")), Ok("root".into()));
    }
}
