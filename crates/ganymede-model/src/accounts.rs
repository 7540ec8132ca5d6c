//! The native authenticator's accounts: users who sign up with a password, are let in
//! by an admin, and are locked out for a while after repeated failed logins
//! (jupyterhub-nativeauthenticator's behaviour).

use serde::{Deserialize, Serialize};

use crate::state::Timestamp;

/// One account. The password is kept as an argon2 PHC string only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    pub password_hash: String,
    /// Whether an admin has approved the sign-up (or it needed no approval).
    pub authorized: bool,
    pub created: Timestamp,
    /// Failed logins since the last success or lockout.
    pub failed_logins: u32,
    /// Logins are refused until then.
    pub locked_until: Option<Timestamp>,
}

impl Account {
    pub fn is_locked(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }
}
