//! Failed-login rate limiting for every authenticator (the native one also locks
//! accounts, in the replicated state; LDAP, the dummy's shared password and the token
//! request's `auth` body have nothing else): per replica, in memory, by user name and
//! by client address. A name or an address with too many failures within the window
//! is refused with 429 *before* the authenticator is asked, so guessing costs neither
//! an argon2 hash nor an LDAP bind. A success clears the name's count, not the
//! address's. Memory is bounded: each table holds at most [`MAX_KEYS`] entries, the
//! oldest dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::authenticator::LoginRefused;

/// Entries per table (names, addresses).
pub const MAX_KEYS: usize = 10_000;

/// How many failures a name or an address may have within a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed logins for one user name; 0: unlimited.
    pub per_name: u32,
    /// Failed logins from one client address; 0: unlimited.
    pub per_ip: u32,
    /// The window the failures are counted in (from the first one).
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_name: 10,
            per_ip: 50,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Default)]
struct Table(HashMap<String, Window>);

impl Table {
    /// Seconds until `key` may try again, if it has used up `limit` in this window.
    fn blocked(&self, key: &str, limit: u32, window: Duration, now: Instant) -> Option<u64> {
        let entry = self.0.get(key)?;
        let ends = entry.started + window;
        (limit > 0 && entry.failures >= limit && ends > now).then(|| ends.duration_since(now).as_secs().max(1))
    }

    fn fail(&mut self, key: &str, window: Duration, now: Instant) {
        if let Some(entry) = self.0.get_mut(key) {
            if entry.started + window <= now {
                *entry = Window {
                    started: now,
                    failures: 0,
                };
            }
            entry.failures = entry.failures.saturating_add(1);
            return;
        }
        if self.0.len() >= MAX_KEYS {
            self.0.retain(|_, entry| entry.started + window > now);
        }
        if self.0.len() >= MAX_KEYS
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, entry)| entry.started)
                .map(|(key, _)| key.clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(
            key.to_owned(),
            Window {
                started: now,
                failures: 1,
            },
        );
    }
}

/// The limiter of one replica.
#[derive(Default)]
pub struct LoginLimiter {
    limits: LoginLimits,
    tables: Mutex<(Table, Table)>,
}

/// The key a user name is counted under: what the authenticator would make of it,
/// bounded (a megabyte of name must not become a megabyte of key).
fn name_key(username: &str) -> String {
    username.trim().to_lowercase().chars().take(256).collect()
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        LoginLimiter {
            limits,
            tables: Mutex::default(),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, (Table, Table)> {
        // A panic while holding the lock leaves counts, nothing inconsistent.
        self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(seconds)` when `username` or `ip` may not try now.
    pub fn check(&self, username: &str, ip: Option<&str>) -> Result<(), u64> {
        self.check_at(username, ip, Instant::now())
    }

    fn check_at(&self, username: &str, ip: Option<&str>, now: Instant) -> Result<(), u64> {
        let tables = self.tables();
        let LoginLimits {
            per_name,
            per_ip,
            window,
        } = self.limits;
        let by_name = tables.0.blocked(&name_key(username), per_name, window, now);
        let by_ip = ip.and_then(|ip| tables.1.blocked(ip, per_ip, window, now));
        match by_name.max(by_ip) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    /// Counts a refused login.
    pub fn failed(&self, username: &str, ip: Option<&str>) {
        self.failed_at(username, ip, Instant::now());
    }

    fn failed_at(&self, username: &str, ip: Option<&str>, now: Instant) {
        let window = self.limits.window;
        let mut tables = self.tables();
        if self.limits.per_name > 0 {
            tables.0.fail(&name_key(username), window, now);
        }
        if let Some(ip) = ip.filter(|_| self.limits.per_ip > 0) {
            tables.1.fail(ip, window, now);
        }
    }

    /// A login succeeded: the name starts afresh.
    pub fn succeeded(&self, username: &str) {
        self.tables().0.0.remove(&name_key(username));
    }

    /// Entries held (names, addresses).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let tables = self.tables();
        (tables.0.0.len(), tables.1.0.len())
    }
}

/// The client address of the request being served (the audit scope's: the edge's
/// `X-Forwarded-For` entry, else the peer).
pub fn client_ip() -> Option<String> {
    ganymede_raft::origin::current().and_then(|origin| origin.ip)
}

/// Whether a refusal counts as a failed attempt: a wrong password or a name that may
/// not log in. A locked or unapproved account, a directory that is down and the like
/// were not a guess (the native lockout answers before any password is checked): a
/// user waiting for their lock to lift must not be locked out further by this limiter.
pub fn counts(refused: &LoginRefused) -> bool {
    match refused {
        LoginRefused::InvalidCredentials | LoginRefused::NotAllowed => true,
        LoginRefused::Locked { .. }
        | LoginRefused::NotAuthorized
        | LoginRefused::Unavailable
        | LoginRefused::NameTaken => false,
    }
}

/// What a refused client is told.
pub fn message(retry_after_secs: u64) -> String {
    format!(
        "Too many failed sign-in attempts. Try again in {} minute(s).",
        retry_after_secs.div_ceil(60)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_name: u32, per_ip: u32) -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            per_name,
            per_ip,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_name_is_limited_across_addresses_and_a_success_clears_it() {
        let limiter = limiter(3, 0);
        let now = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.check_at("Alice", Some(&format!("10.0.0.{i}")), now), Ok(()));
            limiter.failed_at(" alice", Some(&format!("10.0.0.{i}")), now);
        }
        assert_eq!(limiter.check_at("ALICE", Some("10.0.0.9"), now), Err(60));
        assert_eq!(limiter.check_at("bob", Some("10.0.0.1"), now), Ok(()));
        // The window ends.
        let later = now + Duration::from_secs(61);
        assert_eq!(limiter.check_at("alice", None, later), Ok(()));
        limiter.failed_at("alice", None, later);
        assert_eq!(limiter.check_at("alice", None, later), Ok(()), "a new window");
        limiter.succeeded("alice");
        assert_eq!(limiter.sizes().0, 0);
    }

    #[test]
    fn an_address_is_limited_across_names() {
        let limiter = limiter(0, 5);
        let now = Instant::now();
        for i in 0..5 {
            limiter.failed_at(&format!("user{i}"), Some("10.0.0.1"), now);
        }
        assert_eq!(limiter.check_at("someone-else", Some("10.0.0.1"), now), Err(60));
        assert_eq!(limiter.check_at("someone-else", Some("10.0.0.2"), now), Ok(()));
        assert_eq!(limiter.check_at("someone-else", None, now), Ok(()));
    }

    #[test]
    fn memory_is_bounded_whatever_is_sprayed() {
        let limiter = limiter(3, 3);
        let now = Instant::now();
        let huge = "x".repeat(1 << 20);
        limiter.failed_at(&huge, Some("10.0.0.1"), now);
        for i in 0..(MAX_KEYS + 500) {
            limiter.failed_at(&format!("name{i}"), Some(&format!("ip{i}")), now);
        }
        let (names, ips) = limiter.sizes();
        assert!(names <= MAX_KEYS && ips <= MAX_KEYS, "{names} {ips}");
        assert!(limiter.tables().0.0.keys().all(|key| key.len() <= 256));
    }

    #[test]
    fn only_guesses_count_not_locks_or_outages() {
        assert!(counts(&LoginRefused::InvalidCredentials));
        assert!(counts(&LoginRefused::NotAllowed));
        assert!(!counts(&LoginRefused::Locked { retry_after_secs: 5 }));
        assert!(!counts(&LoginRefused::NotAuthorized));
        assert!(!counts(&LoginRefused::Unavailable));
    }

    #[test]
    fn the_message_rounds_up_to_minutes() {
        assert_eq!(
            message(61),
            "Too many failed sign-in attempts. Try again in 2 minute(s)."
        );
    }
}
