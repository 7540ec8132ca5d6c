//! The LDAP authenticator, as jupyterhub-ldapauthenticator: bind as the user — with a
//! DN from `bind_dn_template`, or found by a search (`user_search_base`,
//! `user_attribute`, optionally as a search user) — then check group membership for
//! `allowed_groups` and `admin_groups`. User input is escaped for DNs and filters, and an
//! empty password is refused before any bind (LDAP would take it as an anonymous bind
//! and "succeed").

use std::time::Duration;

use ganymede_model::Secret;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};
use tracing::warn;

use crate::authenticator::LoginRefused;

/// Where and how to check passwords.
#[derive(Clone, Debug)]
pub struct LdapSettings {
    /// `ldap://host:port` (plain LDAP; see the note in ARCHITECTURE.md on TLS).
    pub url: String,
    /// DNs to try binding as, with `{username}` replaced, e.g.
    /// `uid={username},ou=people,dc=example,dc=org`.
    pub bind_dn_templates: Vec<String>,
    /// Instead of templates: find the user's DN under this base…
    pub user_search_base: Option<String>,
    /// … by this attribute (`uid`, `sAMAccountName`).
    pub user_attribute: String,
    /// Who searches (anonymous when unset); the password comes from the environment.
    pub search_bind_dn: Option<String>,
    pub search_bind_password: Option<Secret>,
    /// Group DNs; when set, only their members may log in.
    pub allowed_groups: Vec<String>,
    /// Group DNs whose members are admins (and the others are not).
    pub admin_groups: Vec<String>,
    pub timeout: Duration,
}

impl Default for LdapSettings {
    fn default() -> Self {
        LdapSettings {
            url: "ldap://127.0.0.1:389".into(),
            bind_dn_templates: Vec::new(),
            user_search_base: None,
            user_attribute: "uid".into(),
            search_bind_dn: None,
            search_bind_password: None,
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a successful LDAP login found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapLogin {
    /// `Some` when `admin_groups` is configured: whether the user is in one.
    pub admin: Option<bool>,
}

/// One connection, driven by a task that ends when the connection closes.
struct Connection {
    ldap: Ldap,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    async fn open(settings: &LdapSettings) -> Result<Connection, LoginRefused> {
        let conn_settings = LdapConnSettings::new().set_conn_timeout(settings.timeout);
        let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &settings.url)
            .await
            .map_err(|err| {
                warn!(error = %err, url = %settings.url, "LDAP server unreachable");
                LoginRefused::Unavailable
            })?;
        let driver = tokio::spawn(async move {
            if let Err(err) = conn.drive().await {
                tracing::debug!(error = %err, "LDAP connection ended");
            }
        });
        ldap.with_timeout(settings.timeout);
        Ok(Connection { ldap, driver })
    }

    /// Whether `dn`/`password` binds.
    async fn bind(&mut self, dn: &str, password: &str) -> Result<bool, LoginRefused> {
        match self.ldap.simple_bind(dn, password).await {
            Ok(result) => Ok(result.rc == 0),
            Err(err) => {
                warn!(error = %err, "LDAP bind failed");
                Err(LoginRefused::Unavailable)
            }
        }
    }

    async fn search(&mut self, base: &str, scope: Scope, filter: &str) -> Result<Vec<SearchEntry>, LoginRefused> {
        match self.ldap.search(base, scope, filter, vec!["1.1"]).await {
            Ok(result) => {
                let ldap3::SearchResult(entries, outcome) = result;
                // 32: no such object (a missing base or group is "not found").
                if outcome.rc != 0 && outcome.rc != 32 {
                    warn!(rc = outcome.rc, text = %outcome.text, "LDAP search failed");
                    return Err(LoginRefused::Unavailable);
                }
                Ok(entries.into_iter().map(SearchEntry::construct).collect())
            }
            Err(err) => {
                warn!(error = %err, "LDAP search failed");
                Err(LoginRefused::Unavailable)
            }
        }
    }

    async fn close(mut self) {
        let _ = self.ldap.unbind().await;
        let _ = self.driver.await;
    }
}

/// The DN to bind as, found by searching; `None` if there is not exactly one.
async fn look_up_dn(settings: &LdapSettings, base: &str, username: &str) -> Result<Option<String>, LoginRefused> {
    let mut connection = Connection::open(settings).await?;
    if let Some(dn) = &settings.search_bind_dn {
        let password = settings.search_bind_password.as_ref().map_or("", |p| p.expose());
        if !connection.bind(dn, password).await? {
            warn!("the LDAP search user could not bind");
            connection.close().await;
            return Err(LoginRefused::Unavailable);
        }
    }
    let filter = format!("({}={})", settings.user_attribute, ldap_escape(username));
    let entries = connection.search(base, Scope::Subtree, &filter).await;
    connection.close().await;
    let mut entries = entries?;
    Ok(if entries.len() == 1 {
        entries.pop().map(|entry| entry.dn)
    } else {
        None
    })
}

/// Checks `username`/`password` against the directory.
pub async fn authenticate(settings: &LdapSettings, username: &str, password: &str) -> Result<LdapLogin, LoginRefused> {
    if password.is_empty() {
        return Err(LoginRefused::InvalidCredentials);
    }
    let candidates: Vec<String> = match &settings.user_search_base {
        Some(base) => look_up_dn(settings, base, username).await?.into_iter().collect(),
        None => settings
            .bind_dn_templates
            .iter()
            .map(|template| template.replace("{username}", &dn_escape(username)))
            .collect(),
    };
    let mut connection = Connection::open(settings).await?;
    let mut bound = None;
    for dn in candidates {
        if connection.bind(&dn, password).await? {
            bound = Some(dn);
            break;
        }
    }
    let Some(dn) = bound else {
        connection.close().await;
        return Err(LoginRefused::InvalidCredentials);
    };
    let filter = format!(
        "(|(member={dn})(uniqueMember={dn})(memberUid={user}))",
        dn = ldap_escape(dn.as_str()),
        user = ldap_escape(username)
    );
    let allowed =
        settings.allowed_groups.is_empty() || member_of(&mut connection, &settings.allowed_groups, &filter).await?;
    let admin = if settings.admin_groups.is_empty() {
        None
    } else {
        Some(member_of(&mut connection, &settings.admin_groups, &filter).await?)
    };
    connection.close().await;
    if !allowed {
        return Err(LoginRefused::NotAllowed);
    }
    Ok(LdapLogin { admin })
}

/// Whether the bound user is in one of `groups` (a base-scope search of each group for
/// the user as `member`, `uniqueMember` or `memberUid`).
async fn member_of(connection: &mut Connection, groups: &[String], filter: &str) -> Result<bool, LoginRefused> {
    for group in groups {
        if !connection.search(group, Scope::Base, filter).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
