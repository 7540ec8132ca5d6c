//! `decide` and `evolve` for the native authenticator's accounts.

use super::Rejection;
use crate::accounts::Account;
use crate::command::Command;
use crate::event::Event;
use crate::names;
use crate::state::State;

pub(super) fn decide(state: &State, command: &Command) -> Result<Vec<Event>, Rejection> {
    let existing = |name: &str| {
        state
            .accounts
            .get(name)
            .ok_or_else(|| Rejection::AccountNotFound { name: name.to_owned() })
    };
    match command {
        Command::SignUp {
            name,
            password_hash,
            authorized,
            at,
        } => {
            if !names::is_valid_user_name(name) {
                return Err(Rejection::InvalidUserName { name: name.clone() });
            }
            if state.accounts.contains_key(name) {
                return Err(Rejection::AccountExists { name: name.clone() });
            }
            Ok(vec![Event::AccountCreated {
                account: Account {
                    name: name.clone(),
                    password_hash: password_hash.clone(),
                    authorized: *authorized,
                    created: *at,
                    failed_logins: 0,
                    locked_until: None,
                },
            }])
        }
        Command::SetPassword {
            name,
            password_hash,
            at,
        } => {
            existing(name)?;
            Ok(vec![Event::PasswordChanged {
                name: name.clone(),
                password_hash: password_hash.clone(),
                at: *at,
            }])
        }
        Command::AuthorizeAccount { name, authorized, at } => {
            let account = existing(name)?;
            Ok(if account.authorized == *authorized {
                vec![]
            } else {
                vec![Event::AccountAuthorized {
                    name: name.clone(),
                    authorized: *authorized,
                    at: *at,
                }]
            })
        }
        Command::DeleteAccount { name, at } => {
            existing(name)?;
            Ok(vec![Event::AccountDeleted {
                name: name.clone(),
                at: *at,
            }])
        }
        Command::RecordLoginFailure {
            name,
            max_failures,
            lock_millis,
            at,
        } => {
            let account = existing(name)?;
            if account.is_locked(*at) {
                return Ok(vec![]);
            }
            let failed_logins = account.failed_logins.saturating_add(1);
            let locks = *max_failures > 0 && failed_logins >= *max_failures;
            Ok(vec![Event::LoginFailed {
                name: name.clone(),
                failed_logins: if locks { 0 } else { failed_logins },
                locked_until: locks.then(|| at.saturating_add(*lock_millis)),
                at: *at,
            }])
        }
        Command::ClearLoginFailures { name, at } => {
            let account = existing(name)?;
            Ok(if account.failed_logins == 0 && account.locked_until.is_none() {
                vec![]
            } else {
                vec![Event::LoginFailuresCleared {
                    name: name.clone(),
                    at: *at,
                }]
            })
        }
        Command::BindIdentity { identity, user, at } => {
            match state.identities.get(identity) {
                Some(bound) if bound == user => return Ok(vec![]),
                Some(_) => return Err(Rejection::IdentityConflict { user: user.clone() }),
                None => {}
            }
            if state.identities.values().any(|bound| bound == user) {
                return Err(Rejection::IdentityConflict { user: user.clone() });
            }
            if !names::is_valid_user_name(user) {
                return Err(Rejection::InvalidUserName { name: user.clone() });
            }
            Ok(vec![Event::IdentityBound {
                identity: identity.clone(),
                user: user.clone(),
                at: *at,
            }])
        }
        _ => Ok(vec![]),
    }
}

pub(super) fn evolve(state: &mut State, event: &Event) {
    match event {
        Event::AccountCreated { account } => {
            state.accounts.insert(account.name.clone(), account.clone());
        }
        Event::PasswordChanged {
            name, password_hash, ..
        } => {
            if let Some(account) = state.accounts.get_mut(name) {
                account.password_hash = password_hash.clone();
                account.failed_logins = 0;
                account.locked_until = None;
            }
        }
        Event::AccountAuthorized { name, authorized, .. } => {
            if let Some(account) = state.accounts.get_mut(name) {
                account.authorized = *authorized;
            }
        }
        Event::AccountDeleted { name, .. } => {
            state.accounts.remove(name);
        }
        Event::LoginFailed {
            name,
            failed_logins,
            locked_until,
            ..
        } => {
            if let Some(account) = state.accounts.get_mut(name) {
                account.failed_logins = *failed_logins;
                if locked_until.is_some() {
                    account.locked_until = *locked_until;
                }
            }
        }
        Event::IdentityBound { identity, user, .. } => {
            state.identities.insert(identity.clone(), user.clone());
        }
        Event::LoginFailuresCleared { name, .. } => {
            if let Some(account) = state.accounts.get_mut(name) {
                account.failed_logins = 0;
                account.locked_until = None;
            }
        }
        _ => {}
    }
}
