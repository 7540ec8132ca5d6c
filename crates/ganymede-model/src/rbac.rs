//! JupyterHub's role-based access control, as pure functions: scope names and their
//! subscope tree, filters (`!user=`, `!group=`, `!server=`, `!service=` and the bare
//! forms), the `self` and `inherit` metascopes, roles (the four defaults plus custom ones
//! from configuration), a token's effective scopes, and the access decision that gives
//! 403 for a scope not held and 404 for one held only for other resources.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::state::{State, Token, TokenOwner};

/// Every scope JupyterHub 6.1.1 knows (custom scopes, `custom:…`, come on top).
pub const SCOPE_NAMES: &[&str] = &[
    "(no_scope)",
    "self",
    "inherit",
    "admin-ui",
    "admin:users",
    "admin:auth_state",
    "users",
    "delete:users",
    "list:users",
    "read:users",
    "read:users:name",
    "read:users:groups",
    "read:users:activity",
    "read:roles",
    "read:roles:users",
    "read:roles:services",
    "read:roles:groups",
    "users:activity",
    "admin:servers",
    "admin:server_state",
    "servers",
    "read:servers",
    "start:servers",
    "delete:servers",
    "tokens",
    "read:tokens",
    "admin:groups",
    "groups",
    "list:groups",
    "read:groups",
    "read:groups:name",
    "delete:groups",
    "admin:services",
    "list:services",
    "read:services",
    "read:services:name",
    "read:hub",
    "access:servers",
    "access:services",
    "users:shares",
    "read:users:shares",
    "groups:shares",
    "read:groups:shares",
    "read:shares",
    "shares",
    "proxy",
    "shutdown",
    "read:metrics",
];

/// The scopes a scope implies directly (holding the parent grants the children).
fn children(scope: &str) -> &'static [&'static str] {
    match scope {
        "admin:users" => &["admin:auth_state", "users", "read:roles:users", "delete:users"],
        "users" => &["read:users", "list:users", "users:activity"],
        "list:users" => &["read:users:name"],
        "read:users" => &["read:users:name", "read:users:groups", "read:users:activity"],
        "read:roles" => &["read:roles:users", "read:roles:services", "read:roles:groups"],
        "users:activity" => &["read:users:activity"],
        "admin:servers" => &["admin:server_state", "servers"],
        "servers" => &["read:servers", "start:servers", "delete:servers"],
        "read:servers" => &["read:users:name"],
        "tokens" => &["read:tokens"],
        "admin:groups" => &["groups", "read:roles:groups", "delete:groups"],
        "groups" => &["read:groups", "list:groups"],
        "list:groups" => &["read:groups:name"],
        "read:groups" => &["read:groups:name"],
        "admin:services" => &["list:services", "read:services", "read:roles:services"],
        "list:services" => &["read:services:name"],
        "read:services" => &["read:services:name"],
        "users:shares" => &["read:users:shares"],
        "groups:shares" => &["read:groups:shares"],
        "shares" => &["access:servers", "read:shares", "users:shares", "groups:shares"],
        _ => &[],
    }
}

/// What `self` stands for: these scopes (and their subscopes) on the user's own things.
const SELF_SCOPES: &[&str] = &[
    "read:users",
    "users:shares",
    "read:shares",
    "users:activity",
    "servers",
    "tokens",
    "access:servers",
];

fn is_known_scope(name: &str) -> bool {
    SCOPE_NAMES.contains(&name) || is_custom_scope(name)
}

/// `^custom:[a-z0-9][a-z0-9_\-\*:]+[a-z0-9_\*]$`
fn is_custom_scope(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("custom:") else {
        return false;
    };
    let bytes = rest.as_bytes();
    let middle_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*:".contains(b);
    let last_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_*".contains(b);
    bytes.len() >= 3
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..bytes.len() - 1].iter().all(middle_ok)
        && last_ok(&bytes[bytes.len() - 1])
}

/// Why a scope, role or token request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScopeError {
    #[error("Scope '{0}' does not exist")]
    Unknown(String),
    #[error("Scope 'all' is now called 'inherit'")]
    AllIsInherit,
    #[error("Invalid filter in scope '{0}'")]
    BadFilter(String),
    #[error("Scope '{scope}' cannot be resolved here: {why}")]
    Unresolvable { scope: String, why: &'static str },
    #[error("Role '{0}' does not exist")]
    UnknownRole(String),
    #[error("Invalid role name: '{0}'")]
    InvalidRoleName(String),
}

/// A resource filter on a scope: the scope applies only to what the filter names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    User(String),
    Group(String),
    /// `user/server`; the default server is `user/`.
    Server(String),
    Service(String),
}

impl Filter {
    fn render(&self) -> String {
        match self {
            Filter::User(name) => format!("!user={name}"),
            Filter::Group(name) => format!("!group={name}"),
            Filter::Server(name) => format!("!server={name}"),
            Filter::Service(name) => format!("!service={name}"),
        }
    }
}

/// A filter as written, before bare forms are resolved against a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Written {
    None,
    Filter(Filter),
    /// `!user`, `!server`, `!service`: the owner or the issuing client.
    BareUser,
    BareServer,
    BareService,
}

/// Splits `scope!kind=value` and checks both halves.
fn parse(raw: &str) -> Result<(&str, Written), ScopeError> {
    let (name, filter) = match raw.split_once('!') {
        Some((name, filter)) => (name, Some(filter)),
        None => (raw, None),
    };
    if name == "all" {
        return Err(ScopeError::AllIsInherit);
    }
    if !is_known_scope(name) {
        return Err(ScopeError::Unknown(raw.to_owned()));
    }
    let written = match filter {
        None => Written::None,
        Some("user") => Written::BareUser,
        Some("server") => Written::BareServer,
        Some("service") => Written::BareService,
        Some(filter) => {
            let (kind, value) = filter
                .split_once('=')
                .ok_or_else(|| ScopeError::BadFilter(raw.to_owned()))?;
            if value.is_empty() {
                return Err(ScopeError::BadFilter(raw.to_owned()));
            }
            let value = value.to_owned();
            Written::Filter(match kind {
                "user" => Filter::User(value),
                "group" => Filter::Group(value),
                "service" => Filter::Service(value),
                "server" if value.contains('/') => Filter::Server(value),
                _ => return Err(ScopeError::BadFilter(raw.to_owned())),
            })
        }
    };
    Ok((name, written))
}

/// Checks that every scope in `raw` is well-formed (names known, filters valid).
pub fn validate(raw: &[String]) -> Result<(), ScopeError> {
    for scope in raw {
        if scope != "inherit" {
            parse(scope)?;
        }
    }
    Ok(())
}

/// Whom scopes are expanded for: resolves `self` and the bare filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    User(&'a str),
    Service(&'a str),
}

impl<'a> Subject<'a> {
    pub fn of(owner: &'a TokenOwner) -> Self {
        match owner {
            TokenOwner::User(name) => Subject::User(name),
            TokenOwner::Service(name) => Subject::Service(name),
        }
    }
}

/// How far one held scope reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Unfiltered: everything.
    All,
    /// Only what one of these filters names.
    Only(BTreeSet<Filter>),
}

/// Something an action is about, as `needs_scope` builds it from the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// The hub itself (no resource in the path).
    Hub,
    User(&'a str),
    Server {
        user: &'a str,
        server: &'a str,
    },
    Group(&'a str),
    Service(&'a str),
}

/// The outcome of an access check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// The scope is held, but only for other resources: JupyterHub answers 404.
    NotFound,
    /// The scope is not held at all: 403.
    Forbidden,
}

/// A set of expanded scopes (every implied subscope present), each with its reach. An
/// unfiltered scope subsumes every filtered copy of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: BTreeMap<String, Reach>,
}

impl ScopeSet {
    fn add(&mut self, name: &str, filter: Option<Filter>) {
        match (self.scopes.get_mut(name), filter) {
            (Some(Reach::All), _) => {}
            (Some(reach), None) => *reach = Reach::All,
            (Some(Reach::Only(filters)), Some(filter)) => {
                filters.insert(filter);
            }
            (None, None) => {
                self.scopes.insert(name.to_owned(), Reach::All);
            }
            (None, Some(filter)) => {
                self.scopes
                    .insert(name.to_owned(), Reach::Only(BTreeSet::from([filter])));
            }
        }
    }

    /// Adds `name` with `filter` and everything it implies. A `!server=` filter does not
    /// reach the `read:users…` subscopes (a server's holder may not read its user).
    fn add_implied(&mut self, name: &str, filter: &Option<Filter>) {
        if matches!(filter, Some(Filter::Server(_))) && name.starts_with("read:users") {
            return;
        }
        self.add(name, filter.clone());
        for child in children(name) {
            self.add_implied(child, filter);
        }
    }

    fn union(&mut self, other: &ScopeSet) {
        for (name, reach) in &other.scopes {
            match reach {
                Reach::All => self.add(name, None),
                Reach::Only(filters) => {
                    for filter in filters {
                        self.add(name, Some(filter.clone()));
                    }
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Whether `name` is held with any reach.
    pub fn holds(&self, name: &str) -> bool {
        self.scopes.contains_key(name)
    }

    /// Whether `name` is held unfiltered.
    pub fn holds_everywhere(&self, name: &str) -> bool {
        matches!(self.scopes.get(name), Some(Reach::All))
    }

    pub fn reach(&self, name: &str) -> Option<&Reach> {
        self.scopes.get(name)
    }

    /// The scopes as JupyterHub lists them: sorted, `scope` or `scope!kind=value`.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, reach) in &self.scopes {
            match reach {
                Reach::All => out.push(name.clone()),
                Reach::Only(filters) => out.extend(filters.iter().map(|f| format!("{name}{}", f.render()))),
            }
        }
        out.sort();
        out
    }

    /// What both sets allow. Filters meet where one names part of the other: a user
    /// and one of their servers meet at the server; a group and one of its members at
    /// the member.
    pub fn intersect(&self, other: &ScopeSet, state: &State) -> ScopeSet {
        let mut out = ScopeSet::default();
        for (name, mine) in &self.scopes {
            let Some(theirs) = other.scopes.get(name) else { continue };
            match (mine, theirs) {
                (Reach::All, reach) | (reach, Reach::All) => {
                    out.scopes.insert(name.clone(), reach.clone());
                }
                (Reach::Only(a), Reach::Only(b)) => {
                    let mut met = BTreeSet::new();
                    for x in a {
                        for y in b {
                            if let Some(filter) = meet(x, y, state).or_else(|| meet(y, x, state)) {
                                met.insert(filter);
                            }
                        }
                    }
                    if !met.is_empty() {
                        out.scopes.insert(name.clone(), Reach::Only(met));
                    }
                }
            }
        }
        out
    }

    /// Whether `name` reaches `resource`.
    pub fn allows(&self, name: &str, resource: Resource<'_>, state: &State) -> bool {
        match self.scopes.get(name) {
            None => false,
            Some(Reach::All) => true,
            Some(Reach::Only(filters)) => filters.iter().any(|filter| covers(filter, resource, state)),
        }
    }

    /// JupyterHub's `needs_scope`: granted if any of `needed` reaches `resource`; 404 if
    /// one is held but only elsewhere; 403 if none is held at all.
    pub fn access(&self, needed: &[&str], resource: Resource<'_>, state: &State) -> Access {
        if needed.iter().any(|name| self.allows(name, resource, state)) {
            Access::Granted
        } else if needed.iter().any(|name| self.holds(name)) {
            Access::NotFound
        } else {
            Access::Forbidden
        }
    }

    /// Whether every scope in `self` is within `other` (a token may not carry more
    /// than its requester holds).
    pub fn is_within(&self, other: &ScopeSet, state: &State) -> bool {
        self.scopes
            .iter()
            .all(|(name, reach)| match (reach, other.scopes.get(name)) {
                (_, None) => false,
                (_, Some(Reach::All)) => true,
                (Reach::All, Some(Reach::Only(_))) => false,
                (Reach::Only(mine), Some(Reach::Only(theirs))) => mine
                    .iter()
                    .all(|filter| theirs.iter().any(|outer| filter_within(filter, outer, state))),
            })
    }
}

/// The filter both `narrow` and `wide` allow, when `narrow` lies within `wide`.
fn meet(narrow: &Filter, wide: &Filter, state: &State) -> Option<Filter> {
    filter_within(narrow, wide, state).then(|| narrow.clone())
}

fn filter_within(narrow: &Filter, wide: &Filter, state: &State) -> bool {
    if narrow == wide {
        return true;
    }
    match (narrow, wide) {
        (Filter::Server(server), Filter::User(user)) => server_owner(server) == user,
        (Filter::User(user), Filter::Group(group)) => is_member(state, user, group),
        (Filter::Server(server), Filter::Group(group)) => is_member(state, server_owner(server), group),
        _ => false,
    }
}

fn server_owner(full_name: &str) -> &str {
    full_name.split_once('/').map_or(full_name, |(user, _)| user)
}

fn is_member(state: &State, user: &str, group: &str) -> bool {
    state.groups.get(group).is_some_and(|g| g.users.contains(user))
}

/// Whether `filter` names `resource`: a user filter covers the user's servers, a group
/// filter its members and their servers.
fn covers(filter: &Filter, resource: Resource<'_>, state: &State) -> bool {
    match (filter, resource) {
        (Filter::User(name), Resource::User(user)) => name == user,
        (Filter::User(name), Resource::Server { user, .. }) => name == user,
        (Filter::Server(full), Resource::Server { user, server }) => full.split_once('/') == Some((user, server)),
        (Filter::Group(name), Resource::Group(group)) => name == group,
        (Filter::Group(name), Resource::User(user) | Resource::Server { user, .. }) => is_member(state, user, name),
        (Filter::Service(name), Resource::Service(service)) => name == service,
        _ => false,
    }
}

/// Expands written scopes for `subject`: subscopes added, `self` and bare filters
/// resolved. `client_server` is the `user/server` of the OAuth client that issued a
/// token, which `!server` refers to. `inherit` is not expanded here (see
/// [`Roles::token_scopes`]); a bare filter with nothing to refer to is an error.
pub fn expand(raw: &[String], subject: Subject<'_>, client_server: Option<&str>) -> Result<ScopeSet, ScopeError> {
    let mut set = ScopeSet::default();
    for scope in raw {
        if scope == "inherit" {
            continue;
        }
        if scope == "self" {
            if let Subject::User(me) = subject {
                for name in SELF_SCOPES {
                    set.add_implied(name, &Some(Filter::User(me.to_owned())));
                }
            }
            continue;
        }
        let (name, written) = parse(scope)?;
        let unresolvable = |why| ScopeError::Unresolvable {
            scope: scope.clone(),
            why,
        };
        let filter = match (written, subject) {
            (Written::None, _) => None,
            (Written::Filter(filter), _) => Some(filter),
            (Written::BareUser, Subject::User(me)) => Some(Filter::User(me.to_owned())),
            (Written::BareUser, Subject::Service(_)) => return Err(unresolvable("a service is not a user")),
            (Written::BareService, Subject::Service(me)) => Some(Filter::Service(me.to_owned())),
            (Written::BareService, Subject::User(_)) => return Err(unresolvable("a user is not a service")),
            (Written::BareServer, _) => match client_server {
                Some(server) => Some(Filter::Server(server.to_owned())),
                None => return Err(unresolvable("no server issued this token")),
            },
        };
        set.add_implied(name, &filter);
    }
    Ok(set)
}

/// The scopes every token of `subject` gets so that its holder can identify itself.
pub fn identify_scopes(subject: Subject<'_>) -> ScopeSet {
    let mut set = ScopeSet::default();
    match subject {
        Subject::User(me) => {
            set.add("read:users:name", Some(Filter::User(me.to_owned())));
            set.add("read:users:groups", Some(Filter::User(me.to_owned())));
        }
        Subject::Service(me) => set.add("read:services:name", Some(Filter::Service(me.to_owned()))),
    }
    set
}

/// A role: named scopes, and (for custom roles from configuration) whom it is given to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub services: Vec<String>,
}

/// `^[a-z][a-z0-9\-_~\.]{1,253}[a-z0-9]$`
pub fn is_valid_role_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 3
        && bytes.len() <= 255
        && bytes[0].is_ascii_lowercase()
        && bytes[1..bytes.len() - 1]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_~.".contains(b))
        && (bytes[bytes.len() - 1].is_ascii_lowercase() || bytes[bytes.len() - 1].is_ascii_digit())
}

/// The `admin` role's scopes.
pub const ADMIN_ROLE_SCOPES: &[&str] = &[
    "admin-ui",
    "admin:users",
    "admin:servers",
    "admin:services",
    "tokens",
    "admin:groups",
    "list:services",
    "read:services",
    "read:hub",
    "proxy",
    "shutdown",
    "access:services",
    "access:servers",
    "read:roles",
    "read:metrics",
    "shares",
];

/// The `server` role: what a single-user server's own token may do.
pub const SERVER_ROLE_SCOPES: &[&str] = &["users:activity!user", "access:servers!server"];

/// The roles of a hub: JupyterHub's defaults (`user`, `admin`, `server`, `token`) and
/// the custom ones configured. Every replica must be configured alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles {
    roles: BTreeMap<String, Role>,
}

impl Default for Roles {
    fn default() -> Self {
        let role = |name: &str, scopes: &[&str]| Role {
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Role::default()
        };
        let roles = [
            role("user", &["self"]),
            role("admin", ADMIN_ROLE_SCOPES),
            role("server", SERVER_ROLE_SCOPES),
            role("token", &["inherit"]),
        ];
        Roles {
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
        }
    }
}

impl Roles {
    /// The defaults plus `custom`. A custom role named like a default one replaces its
    /// scopes (JupyterHub lets configuration redefine `user`, for example) and adds its
    /// members.
    pub fn with_custom(custom: Vec<Role>) -> Result<Self, ScopeError> {
        let mut roles = Roles::default();
        for role in custom {
            if !is_valid_role_name(&role.name) {
                return Err(ScopeError::InvalidRoleName(role.name));
            }
            for scope in &role.scopes {
                if scope == "inherit" {
                    return Err(ScopeError::Unknown(scope.clone()));
                }
                if scope != "self" {
                    parse(scope)?;
                }
            }
            roles.roles.insert(role.name.clone(), role);
        }
        Ok(roles)
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// The roles a user has: `user`, `admin` when admin, and the custom roles given to
    /// them or to a group they belong to.
    pub fn user_roles(&self, state: &State, user: &str) -> Vec<String> {
        let Some(record) = state.users.get(user) else {
            return Vec::new();
        };
        let mut names = BTreeSet::from(["user".to_owned()]);
        if record.admin {
            names.insert("admin".to_owned());
        }
        let groups: Vec<&str> = state
            .groups
            .values()
            .filter(|g| g.users.contains(user))
            .map(|g| g.name.as_str())
            .collect();
        for role in self.roles.values() {
            if role.users.iter().any(|u| u == user) || role.groups.iter().any(|g| groups.contains(&g.as_str())) {
                names.insert(role.name.clone());
            }
        }
        names.into_iter().collect()
    }

    /// The custom roles given to a group.
    pub fn group_roles(&self, group: &str) -> Vec<String> {
        self.roles
            .values()
            .filter(|role| role.groups.iter().any(|g| g == group))
            .map(|role| role.name.clone())
            .collect()
    }

    /// A service's roles: those it was created with, `admin` when admin, and custom
    /// roles naming it.
    pub fn service_roles(&self, state: &State, service: &str) -> Vec<String> {
        let Some(record) = state.services.get(service) else {
            return Vec::new();
        };
        let mut names: BTreeSet<String> = record.roles.iter().cloned().collect();
        if record.admin {
            names.insert("admin".to_owned());
        }
        for role in self.roles.values() {
            if role.services.iter().any(|s| s == service) {
                names.insert(role.name.clone());
            }
        }
        names.into_iter().collect()
    }

    /// Expands roles for `subject`; unknown role names are ignored (a role removed from
    /// the configuration grants nothing).
    pub fn expand_roles(&self, names: &[String], subject: Subject<'_>) -> ScopeSet {
        let mut set = ScopeSet::default();
        for name in names {
            let Some(role) = self.roles.get(name) else { continue };
            // A bare `!server` has no server outside a token; such scopes are skipped.
            for scope in &role.scopes {
                if let Ok(expanded) = expand(std::slice::from_ref(scope), subject, None) {
                    set.union(&expanded);
                }
            }
        }
        set
    }

    /// Everything the owner of a token may do: the scopes of all its roles.
    pub fn owner_scopes(&self, state: &State, owner: &TokenOwner) -> ScopeSet {
        let subject = Subject::of(owner);
        let roles = match owner {
            TokenOwner::User(name) => self.user_roles(state, name),
            TokenOwner::Service(name) => self.service_roles(state, name),
        };
        self.expand_roles(&roles, subject)
    }

    /// A token's effective scopes: its own (`inherit` = the owner's) plus the identify
    /// scopes, intersected with what the owner holds now — so a demoted owner's tokens
    /// lose power at once.
    pub fn token_scopes(&self, state: &State, token: &Token) -> ScopeSet {
        let subject = Subject::of(&token.owner);
        let owner = self.owner_scopes(state, &token.owner);
        if token.scopes.iter().any(|s| s == "inherit") {
            return owner;
        }
        let mut own = ScopeSet::default();
        for scope in &token.scopes {
            // Stored scopes were validated and resolved at issue; one that no longer
            // parses (a custom scope dropped from configuration) grants nothing.
            if let Ok(expanded) = expand(std::slice::from_ref(scope), subject, None) {
                own.union(&expanded);
            }
        }
        own.union(&identify_scopes(subject));
        own.intersect(&owner, state)
    }
}

/// Resolves a token request's scopes for storage: bare filters bound to the owner (and
/// to `client_server` for `!server`), every scope checked. `inherit` stays as written.
pub fn resolve_for_token(
    raw: &[String],
    subject: Subject<'_>,
    client_server: Option<&str>,
) -> Result<Vec<String>, ScopeError> {
    let mut out = Vec::new();
    for scope in raw {
        if scope == "inherit" || scope == "self" {
            out.push(scope.clone());
            continue;
        }
        let (name, written) = parse(scope)?;
        let resolved = match (written, subject) {
            (Written::None, _) => name.to_owned(),
            (Written::Filter(filter), _) => format!("{name}{}", filter.render()),
            (Written::BareUser, Subject::User(me)) => format!("{name}!user={me}"),
            (Written::BareService, Subject::Service(me)) => format!("{name}!service={me}"),
            (Written::BareServer, _) if client_server.is_some() => {
                format!("{name}!server={}", client_server.unwrap_or_default())
            }
            _ => {
                return Err(ScopeError::Unresolvable {
                    scope: scope.clone(),
                    why: "the bare filter has nothing to refer to",
                });
            }
        };
        out.push(resolved);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
