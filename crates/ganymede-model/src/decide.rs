//! The state machine's logic: [`decide`] turns a command into events or a rejection
//! without changing anything; [`evolve`] folds one event into the state; [`apply`] does
//! both and numbers the events.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::command::{Command, SpawnLimits, TokenRequest, TokenUse, UserActivity};
use crate::event::{Event, Sequenced};
use crate::names;
use crate::oauth::{self as oauth_model, OAuthClient, OAuthClientOwner};
use crate::state::{
    ClusterInfo, Group, Route, Server, ServerPhase, Service, Session, SpawnStep, State, Timestamp, Token, TokenOwner,
    User, route_key_for,
};

/// Why a command was refused. Refusals change nothing and are returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rejection {
    #[error("the cluster is already initialized")]
    AlreadyInitialized,
    #[error("no user names given")]
    NoUserNames,
    #[error("invalid user name: {name:?}")]
    InvalidUserName { name: String },
    #[error("user {name} already exists")]
    UserExists { name: String },
    #[error("all {count} users already exist")]
    AllUsersExist { count: usize },
    #[error("no such user: {name}")]
    UserNotFound { name: String },
    #[error("invalid server name: {name:?}")]
    InvalidServerName { name: String },
    #[error("no such server: {user}/{server}")]
    ServerNotFound { user: String, server: String },
    #[error("{user}'s server {server:?} is already active")]
    ServerActive { user: String, server: String },
    #[error("{user}'s server {server:?} is not running")]
    ServerNotRunning { user: String, server: String },
    #[error("{user} has a server that is starting or stopping")]
    ServerPending { user: String },
    #[error("spawn {spawn_id} of {user}/{server} is not the current attempt")]
    StaleSpawn {
        user: String,
        server: String,
        spawn_id: u64,
    },
    #[error("invalid service name: {name:?}")]
    InvalidServiceName { name: String },
    #[error("token hash is already in use")]
    TokenExists,
    #[error("no such token: a{id}")]
    TokenNotFound { id: u64 },
    #[error("no such service: {name}")]
    ServiceNotFound { name: String },
    #[error("invalid route path: {path:?}")]
    InvalidRoutePath { path: String },
    #[error("invalid route target: {target:?}")]
    InvalidRouteTarget { target: String },
    #[error("{user} already has a server named {server:?}")]
    ServerExists { user: String, server: String },
    #[error("the default server cannot be removed")]
    CannotRemoveDefaultServer,
    #[error("{limit} servers are already starting")]
    TooManyPendingSpawns { limit: u32 },
    #[error("{limit} servers are already active")]
    TooManyActiveServers { limit: u32 },
    #[error("{user} already has {limit} named servers")]
    NamedServerLimit { user: String, limit: u32 },
    #[error("invalid group name: {name:?}")]
    InvalidGroupName { name: String },
    #[error("group {name} already exists")]
    GroupExists { name: String },
    #[error("no such group: {name}")]
    GroupNotFound { name: String },
    #[error("invalid OAuth client or client secret")]
    InvalidOAuthClient,
    #[error("no such OAuth client: {id}")]
    OAuthClientNotFound { id: String },
    #[error("invalid grant: {reason}")]
    InvalidGrant { reason: String },
    #[error("no such account: {name}")]
    AccountNotFound { name: String },
    #[error("account {name} already exists")]
    AccountExists { name: String },
    #[error("user {user} belongs to another identity")]
    IdentityConflict { user: String },
}

/// Decides what a command means in `state`: the events it produces, in order, or why it
/// cannot happen. Pure: same state and command, same answer, on every replica.
pub fn decide(state: &State, command: &Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::InitializeCluster { cluster_secret, at } => {
            if state.cluster.is_some() {
                return Err(Rejection::AlreadyInitialized);
            }
            Ok(vec![Event::ClusterInitialized {
                cluster_secret: cluster_secret.clone(),
                at: *at,
            }])
        }
        Command::CreateUsers { names, admin, at } => {
            if names.is_empty() {
                return Err(Rejection::NoUserNames);
            }
            if let Some(bad) = names.iter().find(|name| !names::is_valid_user_name(name)) {
                return Err(Rejection::InvalidUserName { name: bad.clone() });
            }
            let mut fresh: Vec<&String> = Vec::new();
            for name in names {
                if !state.users.contains_key(name) && !fresh.contains(&name) {
                    fresh.push(name);
                }
            }
            if fresh.is_empty() {
                return Err(match names.as_slice() {
                    [only] => Rejection::UserExists { name: only.clone() },
                    _ => Rejection::AllUsersExist { count: names.len() },
                });
            }
            Ok(fresh
                .into_iter()
                .map(|name| Event::UserCreated {
                    name: name.clone(),
                    admin: *admin,
                    at: *at,
                })
                .collect())
        }
        Command::UpdateUser {
            name,
            rename,
            admin,
            at,
        } => {
            let user = existing_user(state, name)?;
            let mut events = Vec::new();
            if let Some(new_name) = rename.as_ref().filter(|new_name| *new_name != name) {
                if !names::is_valid_user_name(new_name) {
                    return Err(Rejection::InvalidUserName { name: new_name.clone() });
                }
                if state.users.contains_key(new_name) {
                    return Err(Rejection::UserExists { name: new_name.clone() });
                }
                // Routes and OAuth clients are named after the user; renaming under a
                // live server would strand them.
                if let Some(server) = user.active_servers().next() {
                    return Err(Rejection::ServerActive {
                        user: name.clone(),
                        server: server.name.clone(),
                    });
                }
                events.push(Event::UserRenamed {
                    from: name.clone(),
                    to: new_name.clone(),
                    at: *at,
                });
            }
            if let Some(admin) = admin.filter(|admin| *admin != user.admin) {
                let current = rename.clone().unwrap_or_else(|| name.clone());
                events.push(Event::UserAdminChanged {
                    name: current,
                    admin,
                    at: *at,
                });
            }
            Ok(events)
        }
        Command::DeleteUser { name, at } => {
            let user = existing_user(state, name)?;
            if user
                .servers
                .values()
                .any(|server| matches!(server.phase, ServerPhase::PendingSpawn | ServerPhase::PendingStop))
            {
                return Err(Rejection::ServerPending { user: name.clone() });
            }
            let mut events = Vec::new();
            for server in user.active_servers() {
                events.extend(stop_events(state, name, server, None, *at));
            }
            let owner = TokenOwner::User(name.clone());
            events.extend(
                state
                    .tokens_of(&owner)
                    .map(|token| Event::TokenRevoked { id: token.id, at: *at }),
            );
            events.extend(
                state
                    .sessions
                    .iter()
                    .filter(|(_, session)| session.user == *name)
                    .map(|(hash, _)| Event::SessionEnded {
                        hash: hash.clone(),
                        at: *at,
                    }),
            );
            if state.accounts.contains_key(name) {
                events.push(Event::AccountDeleted {
                    name: name.clone(),
                    at: *at,
                });
            }
            events.push(Event::UserDeleted {
                name: name.clone(),
                at: *at,
            });
            Ok(events)
        }
        Command::EnsureService { name, admin, roles, at } => {
            if !names::is_valid_user_name(name) {
                return Err(Rejection::InvalidServiceName { name: name.clone() });
            }
            let roles = roles.iter().cloned().collect();
            let service = match state.services.get(name) {
                Some(existing) if existing.admin == *admin && existing.roles == roles => {
                    return Ok(vec![]);
                }
                Some(existing) => Service {
                    admin: *admin,
                    roles,
                    ..existing.clone()
                },
                None => Service {
                    name: name.clone(),
                    admin: *admin,
                    roles,
                    created: *at,
                },
            };
            Ok(vec![Event::ServiceUpserted { service }])
        }
        Command::StartSession {
            hash,
            user,
            session_id,
            expires_at,
            at,
        } => {
            existing_user(state, user)?;
            if state.sessions.contains_key(hash) {
                return Err(Rejection::TokenExists);
            }
            let mut events: Vec<Event> = state
                .sessions
                .iter()
                .filter(|(_, session)| session.user == *user && session.expires_at <= *at)
                .map(|(hash, _)| Event::SessionEnded {
                    hash: hash.clone(),
                    at: *at,
                })
                .collect();
            events.push(Event::SessionStarted {
                hash: hash.clone(),
                session: Session {
                    user: user.clone(),
                    session_id: session_id.clone(),
                    created: *at,
                    expires_at: *expires_at,
                },
            });
            Ok(events)
        }
        Command::EndSession { hash, at } => {
            let Some(session) = state.sessions.get(hash) else {
                return Ok(vec![]);
            };
            // The session's OAuth tokens die with it, so that another tab cannot keep
            // using a server after logout (CVE-2021-41247).
            let mut events: Vec<Event> = state
                .tokens
                .values()
                .filter(|token| token.session_id.as_ref() == Some(&session.session_id))
                .map(|token| Event::TokenRevoked { id: token.id, at: *at })
                .collect();
            events.push(Event::SessionEnded {
                hash: hash.clone(),
                at: *at,
            });
            Ok(events)
        }
        Command::DeleteService { name, at } => {
            if !state.services.contains_key(name) {
                return Err(Rejection::ServiceNotFound { name: name.clone() });
            }
            let owner = TokenOwner::Service(name.clone());
            let mut events: Vec<Event> = state
                .tokens_of(&owner)
                .map(|token| Event::TokenRevoked { id: token.id, at: *at })
                .collect();
            for client in oauth::service_clients(state, name) {
                events.extend(oauth::delete_client_events(state, client, *at));
            }
            events.push(Event::ServiceDeleted {
                name: name.clone(),
                at: *at,
            });
            Ok(events)
        }
        Command::IssueToken(TokenRequest {
            hash,
            owner,
            scopes,
            note,
            expires_at,
            at,
        }) => {
            match owner {
                TokenOwner::User(name) => {
                    existing_user(state, name)?;
                }
                TokenOwner::Service(name) => {
                    if !state.services.contains_key(name) {
                        return Err(Rejection::ServiceNotFound { name: name.clone() });
                    }
                }
            }
            if state.token_ids_by_hash.contains_key(hash) {
                return Err(Rejection::TokenExists);
            }
            let token = Token {
                id: state.last_token_id + 1,
                hash: hash.clone(),
                owner: owner.clone(),
                scopes: scopes.clone(),
                note: note.clone(),
                created: *at,
                expires_at: *expires_at,
                last_activity: None,
                session_id: None,
                oauth_client: None,
            };
            Ok(vec![Event::TokenIssued { token }])
        }
        Command::RevokeToken { id, at } => {
            let token = state.tokens.get(id).ok_or(Rejection::TokenNotFound { id: *id })?;
            // Revoking an OAuth token revokes every token its owner got from the same
            // client, as JupyterHub does.
            let Some(client) = &token.oauth_client else {
                return Ok(vec![Event::TokenRevoked { id: *id, at: *at }]);
            };
            Ok(state
                .tokens_of(&token.owner)
                .filter(|sibling| sibling.oauth_client.as_ref() == Some(client))
                .map(|sibling| Event::TokenRevoked {
                    id: sibling.id,
                    at: *at,
                })
                .collect())
        }
        Command::RequestSpawn {
            user,
            server,
            user_options,
            limits,
            api_token_hash,
            node,
            at,
        } => {
            let owner = existing_user(state, user)?;
            if !server.is_empty() && !names::is_valid_server_name(server) {
                return Err(Rejection::InvalidServerName { name: server.clone() });
            }
            match owner.servers.get(server) {
                Some(existing) if existing.phase != ServerPhase::Stopped => {
                    return Err(Rejection::ServerActive {
                        user: user.clone(),
                        server: server.clone(),
                    });
                }
                Some(_) => {}
                None => check_named_server_limit(owner, server, limits)?,
            }
            check_spawn_limits(state, limits)?;
            let mut events = vec![Event::ServerSpawnRequested {
                user: user.clone(),
                server: server.clone(),
                spawn_id: state.last_spawn_id + 1,
                user_options: user_options.clone(),
                node: *node,
                at: *at,
            }];
            if let Some(hash) = api_token_hash {
                events.extend(server_credentials(state, user, server, hash, *at)?);
            }
            Ok(events)
        }
        Command::MarkServerReady {
            user,
            server,
            spawn_id,
            url,
            at,
        } => {
            pending_attempt(state, user, server, *spawn_id)?;
            if !is_valid_target(url) {
                return Err(Rejection::InvalidRouteTarget { target: url.clone() });
            }
            let route = Route {
                path: route_key_for(user, server),
                target: url.clone(),
                data: serde_json::json!({ "user": user, "server_name": server }),
                created: *at,
                last_activity: *at,
            };
            Ok(vec![
                Event::ServerReady {
                    user: user.clone(),
                    server: server.clone(),
                    spawn_id: *spawn_id,
                    url: url.clone(),
                    at: *at,
                },
                Event::RouteAdded { route },
            ])
        }
        Command::ReportSpawnProgress {
            user,
            server,
            spawn_id,
            progress,
            message,
            spawner_state,
            ..
        } => {
            pending_attempt(state, user, server, *spawn_id)?;
            Ok(vec![Event::ServerSpawnProgress {
                user: user.clone(),
                server: server.clone(),
                spawn_id: *spawn_id,
                step: SpawnStep {
                    progress: (*progress).min(100),
                    message: bounded(message, MAX_PROGRESS_MESSAGE),
                },
                spawner_state: spawner_state.clone(),
            }])
        }
        Command::MarkServerFailed {
            user,
            server,
            spawn_id,
            reason,
            at,
        } => {
            let current = active_attempt(state, user, server, *spawn_id)?;
            Ok(stop_events(
                state,
                user,
                current,
                Some(bounded(reason, MAX_PROGRESS_MESSAGE)),
                *at,
            ))
        }
        Command::RequestStop {
            user,
            server,
            remove,
            at,
        } => {
            let owner = existing_user(state, user)?;
            let current = owner.servers.get(server).ok_or_else(|| Rejection::ServerNotFound {
                user: user.clone(),
                server: server.clone(),
            })?;
            if *remove && server.is_empty() {
                return Err(Rejection::CannotRemoveDefaultServer);
            }
            let removal = Event::ServerRemovalRequested {
                user: user.clone(),
                server: server.clone(),
                at: *at,
            };
            match (current.phase, current.spawn_id) {
                (ServerPhase::Stopped, _) if *remove => Ok(vec![Event::ServerRemoved {
                    user: user.clone(),
                    server: server.clone(),
                    at: *at,
                }]),
                (ServerPhase::PendingStop, _) if *remove => Ok(vec![removal]),
                (ServerPhase::PendingSpawn | ServerPhase::Running, Some(spawn_id)) => {
                    let mut events = vec![Event::ServerStopRequested {
                        user: user.clone(),
                        server: server.clone(),
                        spawn_id,
                        at: *at,
                    }];
                    if current.phase == ServerPhase::Running {
                        // Stop routing at once: the server is going away.
                        events.push(Event::RouteRemoved {
                            path: route_key_for(user, server),
                            at: *at,
                        });
                    }
                    if *remove {
                        events.push(removal);
                    }
                    Ok(events)
                }
                _ => Err(Rejection::ServerNotRunning {
                    user: user.clone(),
                    server: server.clone(),
                }),
            }
        }
        Command::MarkServerStopped {
            user,
            server,
            spawn_id,
            at,
        } => {
            let current = active_attempt(state, user, server, *spawn_id)?;
            Ok(stop_events(state, user, current, None, *at))
        }
        Command::AddRoute { path, target, data, at } => {
            if !names::is_valid_route_path(path) || names::normalize_route_path(path) != *path {
                return Err(Rejection::InvalidRoutePath { path: path.clone() });
            }
            if !is_valid_target(target) {
                return Err(Rejection::InvalidRouteTarget { target: target.clone() });
            }
            let created = state.routes.get(path).map_or(*at, |existing| existing.created);
            // An upsert, as in CHP: re-adding a route resets its last_activity.
            let route = Route {
                path: path.clone(),
                target: target.clone(),
                data: data.clone(),
                created,
                last_activity: *at,
            };
            Ok(vec![Event::RouteAdded { route }])
        }
        Command::RemoveRoute { path, at } => {
            if !state.routes.contains_key(path) {
                return Ok(vec![]);
            }
            Ok(vec![Event::RouteRemoved {
                path: path.clone(),
                at: *at,
            }])
        }
        Command::RecordActivity { routes, at } => Ok(record_activity(state, routes, *at)),
        Command::CreateServer {
            user,
            server,
            display_name,
            user_options,
            limits,
            at,
        } => {
            let owner = existing_user(state, user)?;
            if !names::is_valid_server_name(server) {
                return Err(Rejection::InvalidServerName { name: server.clone() });
            }
            if owner.servers.contains_key(server) {
                return Err(Rejection::ServerExists {
                    user: user.clone(),
                    server: server.clone(),
                });
            }
            check_named_server_limit(owner, server, limits)?;
            Ok(vec![Event::ServerCreated {
                user: user.clone(),
                server: server.clone(),
                display_name: display_name.clone().unwrap_or_else(|| server.clone()),
                user_options: user_options.clone(),
                at: *at,
            }])
        }
        Command::UpdateServer {
            user,
            server,
            rename,
            display_name,
            user_options,
            at,
        } => {
            let owner = existing_user(state, user)?;
            let current = owner.servers.get(server).ok_or_else(|| Rejection::ServerNotFound {
                user: user.clone(),
                server: server.clone(),
            })?;
            if current.phase != ServerPhase::Stopped {
                return Err(Rejection::ServerActive {
                    user: user.clone(),
                    server: server.clone(),
                });
            }
            let new_name = rename.clone().unwrap_or_else(|| server.clone());
            if new_name != *server {
                if server.is_empty() || !names::is_valid_server_name(&new_name) {
                    return Err(Rejection::InvalidServerName { name: new_name });
                }
                if owner.servers.contains_key(&new_name) {
                    return Err(Rejection::ServerExists {
                        user: user.clone(),
                        server: new_name,
                    });
                }
            }
            let display_name = match display_name {
                Some(display_name) => display_name.clone(),
                // A renamed server that was shown by its name keeps being so.
                None if current.display_name == current.name => new_name.clone(),
                None => current.display_name.clone(),
            };
            Ok(vec![Event::ServerUpdated {
                user: user.clone(),
                server: server.clone(),
                new_name,
                display_name,
                user_options: user_options.clone().unwrap_or_else(|| current.user_options.clone()),
                at: *at,
            }])
        }
        Command::CreateGroups { names, users, at } => {
            if names.is_empty() {
                return Err(Rejection::InvalidGroupName { name: String::new() });
            }
            for name in names {
                if !names::is_valid_user_name(name) {
                    return Err(Rejection::InvalidGroupName { name: name.clone() });
                }
                if state.groups.contains_key(name) {
                    return Err(Rejection::GroupExists { name: name.clone() });
                }
            }
            for user in users {
                existing_user(state, user)?;
            }
            let mut members = users.clone();
            members.sort();
            members.dedup();
            let mut seen = std::collections::BTreeSet::new();
            Ok(names
                .iter()
                .filter(|name| seen.insert(name.as_str()))
                .map(|name| Event::GroupCreated {
                    name: name.clone(),
                    users: members.clone(),
                    at: *at,
                })
                .collect())
        }
        Command::DeleteGroup { name, at } => {
            existing_group(state, name)?;
            Ok(vec![Event::GroupDeleted {
                name: name.clone(),
                at: *at,
            }])
        }
        Command::ChangeGroupMembers { name, add, remove, at } => {
            let group = existing_group(state, name)?;
            for user in add {
                existing_user(state, user)?;
            }
            let mut added: Vec<String> = add.iter().filter(|u| !group.users.contains(*u)).cloned().collect();
            added.sort();
            added.dedup();
            let mut removed: Vec<String> = remove.iter().filter(|u| group.users.contains(*u)).cloned().collect();
            removed.sort();
            removed.dedup();
            if added.is_empty() && removed.is_empty() {
                return Ok(vec![]);
            }
            Ok(vec![Event::GroupMembersChanged {
                name: name.clone(),
                added,
                removed,
                at: *at,
            }])
        }
        Command::SetGroupProperties { name, properties, at } => {
            existing_group(state, name)?;
            Ok(vec![Event::GroupPropertiesSet {
                name: name.clone(),
                properties: properties.clone(),
                at: *at,
            }])
        }
        Command::RecordApiActivity { users, tokens, at } => Ok(record_api_activity(state, users, tokens, *at)),
        Command::RegisterOAuthClient { .. }
        | Command::DeleteOAuthClient { .. }
        | Command::IssueOAuthCode { .. }
        | Command::RedeemOAuthCode { .. } => oauth::decide(state, command),
        Command::SignUp { .. }
        | Command::SetPassword { .. }
        | Command::AuthorizeAccount { .. }
        | Command::DeleteAccount { .. }
        | Command::RecordLoginFailure { .. }
        | Command::ClearLoginFailures { .. }
        | Command::BindIdentity { .. } => accounts::decide(state, command),
        Command::RecordDenied {
            action,
            target,
            status,
            suppressed,
            at,
        } => Ok(vec![Event::RequestDenied {
            action: crate::audit::bounded(action, crate::audit::MAX_ACTION),
            target: crate::audit::bounded(target, crate::audit::MAX_TARGET),
            status: *status,
            suppressed: *suppressed,
            at: *at,
        }]),
        Command::RecordAdminAction { action, target, at } => Ok(vec![Event::AdminActionTaken {
            action: *action,
            target: crate::audit::bounded(target, crate::audit::MAX_TARGET),
            at: *at,
        }]),
    }
}

fn check_named_server_limit(owner: &User, server: &str, limits: &SpawnLimits) -> Result<(), Rejection> {
    if server.is_empty() {
        return Ok(());
    }
    match limits.named_servers_per_user {
        Some(limit) if owner.servers.keys().filter(|name| !name.is_empty()).count() >= limit as usize => {
            Err(Rejection::NamedServerLimit {
                user: owner.name.clone(),
                limit,
            })
        }
        _ => Ok(()),
    }
}

fn check_spawn_limits(state: &State, limits: &SpawnLimits) -> Result<(), Rejection> {
    if let Some(limit) = limits.concurrent_spawns
        && state.pending_spawns() >= limit as usize
    {
        return Err(Rejection::TooManyPendingSpawns { limit });
    }
    if let Some(limit) = limits.active_servers
        && state.active_servers() >= limit as usize
    {
        return Err(Rejection::TooManyActiveServers { limit });
    }
    Ok(())
}

fn existing_group<'a>(state: &'a State, name: &str) -> Result<&'a Group, Rejection> {
    state
        .groups
        .get(name)
        .ok_or_else(|| Rejection::GroupNotFound { name: name.to_owned() })
}

/// Keeps what moves a user's, server's or token's timestamp forward, clamped to the
/// command's time; things that are gone by now are ignored.
fn record_api_activity(state: &State, users: &[UserActivity], tokens: &[TokenUse], at: Timestamp) -> Vec<Event> {
    let newer = |seen: Option<Timestamp>, when: Timestamp| seen.is_none_or(|seen| when > seen);
    let mut kept_users = Vec::new();
    for activity in users {
        let Some(user) = state.users.get(&activity.user) else {
            continue;
        };
        let last_activity = activity
            .last_activity
            .map(|when| when.min(at))
            .filter(|when| newer(user.last_activity, *when));
        let servers: Vec<(String, Timestamp)> = activity
            .servers
            .iter()
            .filter_map(|(name, when)| {
                let server = user.servers.get(name)?;
                let when = (*when).min(at);
                newer(server.last_activity, when).then(|| (name.clone(), when))
            })
            .collect();
        if last_activity.is_some() || !servers.is_empty() {
            kept_users.push(UserActivity {
                user: activity.user.clone(),
                last_activity,
                servers,
            });
        }
    }
    let kept_tokens: Vec<TokenUse> = tokens
        .iter()
        .filter_map(|token_use| {
            let token = state.tokens.get(&token_use.id)?;
            let when = token_use.last_activity.min(at);
            newer(token.last_activity, when).then_some(TokenUse {
                id: token_use.id,
                last_activity: when,
            })
        })
        .collect();
    if kept_users.is_empty() && kept_tokens.is_empty() {
        return Vec::new();
    }
    vec![Event::ApiActivityRecorded {
        users: kept_users,
        tokens: kept_tokens,
    }]
}

/// Keeps only what moves a timestamp forward; an edge's clock ahead of the proposer's is
/// clamped to the command's time. Routes that are gone are ignored (the edge lagged).
fn record_activity(state: &State, uses: &[crate::command::RouteUse], at: Timestamp) -> Vec<Event> {
    let mut routes: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut servers: BTreeMap<(String, String), Timestamp> = BTreeMap::new();
    for route_use in uses {
        let Some(route) = state.routes.get(&route_use.path) else {
            continue;
        };
        let when = route_use.last_activity.min(at);
        if when > route.last_activity {
            let newest = routes.entry(route.path.clone()).or_insert(when);
            *newest = (*newest).max(when);
        }
        let user = route.data.get("user").and_then(|user| user.as_str());
        let server = route
            .data
            .get("server_name")
            .and_then(|server| server.as_str())
            .unwrap_or("");
        let Some(user) = user.and_then(|user| state.users.get(user)) else {
            continue;
        };
        let server_seen = user.servers.get(server).and_then(|server| server.last_activity);
        if user.last_activity.is_none_or(|seen| when > seen) || server_seen.is_none_or(|seen| when > seen) {
            let newest = servers.entry((user.name.clone(), server.to_owned())).or_insert(when);
            *newest = (*newest).max(when);
        }
    }
    if routes.is_empty() && servers.is_empty() {
        return Vec::new();
    }
    vec![Event::ActivityRecorded {
        routes: routes.into_iter().collect(),
        servers: servers
            .into_iter()
            .map(|((user, server), last_activity)| crate::event::ServerActivity {
                user,
                server,
                last_activity,
            })
            .collect(),
    }]
}

/// A server's API token and OAuth client, issued with its spawn. A client left by an
/// earlier attempt is replaced, with whatever it issued.
fn server_credentials(
    state: &State,
    user: &str,
    server: &str,
    token_hash: &str,
    at: Timestamp,
) -> Result<Vec<Event>, Rejection> {
    if state.token_ids_by_hash.contains_key(token_hash) {
        return Err(Rejection::TokenExists);
    }
    let client_id = oauth_model::server_client_id(user, server);
    let mut events = Vec::new();
    if state.oauth_clients.contains_key(&client_id) {
        events.extend(oauth::delete_client_events(state, &client_id, at));
    }
    let token = Token {
        id: state.last_token_id + 1,
        hash: token_hash.to_owned(),
        owner: TokenOwner::User(user.to_owned()),
        scopes: oauth_model::server_token_scopes(user, server),
        note: oauth_model::server_description(user, server),
        created: at,
        expires_at: None,
        last_activity: None,
        session_id: None,
        oauth_client: None,
    };
    events.push(Event::ServerTokenAssigned {
        user: user.to_owned(),
        server: server.to_owned(),
        token_id: token.id,
    });
    events.push(Event::TokenIssued { token });
    events.push(Event::OAuthClientRegistered {
        client: OAuthClient {
            id: client_id,
            description: oauth_model::server_description(user, server),
            secret_hash: token_hash.to_owned(),
            redirect_uri: oauth_model::server_callback_path(user, server),
            allowed_scopes: Vec::new(),
            owner: OAuthClientOwner::Server {
                user: user.to_owned(),
                server: server.to_owned(),
            },
            created: at,
        },
    });
    Ok(events)
}

/// The events that take a server from wherever it is to stopped, dropping its route,
/// its API token and its OAuth client (with the tokens that client issued).
fn stop_events(state: &State, user: &str, server: &Server, reason: Option<String>, at: i64) -> Vec<Event> {
    let mut events = Vec::new();
    let spawn_id = server.spawn_id.unwrap_or_default();
    if server.phase == ServerPhase::Running {
        events.push(Event::RouteRemoved {
            path: route_key_for(user, &server.name),
            at,
        });
    }
    if let Some(id) = server.api_token_id.filter(|id| state.tokens.contains_key(id)) {
        events.push(Event::TokenRevoked { id, at });
    }
    let client_id = oauth_model::server_client_id(user, &server.name);
    if state.oauth_clients.contains_key(&client_id) {
        events.extend(
            oauth::delete_client_events(state, &client_id, at)
                .into_iter()
                .filter(|event| !matches!(event, Event::TokenRevoked { id, .. } if Some(*id) == server.api_token_id)),
        );
    }
    events.push(Event::ServerStopped {
        user: user.to_owned(),
        server: server.name.clone(),
        spawn_id,
        reason,
        at,
    });
    if server.remove_on_stop {
        events.push(Event::ServerRemoved {
            user: user.to_owned(),
            server: server.name.clone(),
            at,
        });
    }
    events
}

fn existing_user<'a>(state: &'a State, name: &str) -> Result<&'a User, Rejection> {
    state
        .users
        .get(name)
        .ok_or_else(|| Rejection::UserNotFound { name: name.to_owned() })
}

/// The server whose current attempt is `spawn_id`; reports about older attempts are stale.
fn current_attempt<'a>(state: &'a State, user: &str, server: &str, spawn_id: u64) -> Result<&'a Server, Rejection> {
    let current = existing_user(state, user)?
        .servers
        .get(server)
        .ok_or_else(|| Rejection::ServerNotFound {
            user: user.to_owned(),
            server: server.to_owned(),
        })?;
    if current.spawn_id != Some(spawn_id) {
        return Err(Rejection::StaleSpawn {
            user: user.to_owned(),
            server: server.to_owned(),
            spawn_id,
        });
    }
    Ok(current)
}

/// Like [`current_attempt`], for reports about an attempt that is still starting.
fn pending_attempt<'a>(state: &'a State, user: &str, server: &str, spawn_id: u64) -> Result<&'a Server, Rejection> {
    let current = current_attempt(state, user, server, spawn_id)?;
    if current.phase != ServerPhase::PendingSpawn {
        return Err(Rejection::StaleSpawn {
            user: user.to_owned(),
            server: server.to_owned(),
            spawn_id,
        });
    }
    Ok(current)
}

/// Like [`current_attempt`], for reports that only make sense while the attempt is
/// not yet stopped (a second "stopped" report is stale).
fn active_attempt<'a>(state: &'a State, user: &str, server: &str, spawn_id: u64) -> Result<&'a Server, Rejection> {
    let current = current_attempt(state, user, server, spawn_id)?;
    if current.phase == ServerPhase::Stopped {
        return Err(Rejection::StaleSpawn {
            user: user.to_owned(),
            server: server.to_owned(),
            spawn_id,
        });
    }
    Ok(current)
}

/// A route target must be an absolute http(s) or ws(s) URL.
fn is_valid_target(target: &str) -> bool {
    let rest = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| target.strip_prefix(scheme));
    rest.is_some_and(|rest| {
        let authority = rest.split('/').next().unwrap_or_default();
        !authority.is_empty() && !target.chars().any(|c| c.is_control() || c.is_whitespace())
    })
}

/// How many progress messages a server keeps (the oldest go first).
const MAX_PROGRESS_STEPS: usize = 32;
/// Progress messages and failure reasons are cut to this many characters.
const MAX_PROGRESS_MESSAGE: usize = 1000;

fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Folds one event into the state. Events come from `decide` (or a replica's own event
/// log), so they are trusted: an event that refers to something missing is ignored.
pub fn evolve(state: &mut State, sequenced: &Sequenced) {
    state.event_seq = sequenced.seq;
    if let Some(route_seq) = sequenced.route_seq {
        state.route_seq = route_seq;
    }
    match &sequenced.event {
        Event::ClusterInitialized { cluster_secret, at } => {
            state.cluster = Some(ClusterInfo {
                cluster_secret: cluster_secret.clone(),
                created: *at,
            });
        }
        Event::UserCreated { name, admin, at } => {
            state.users.insert(
                name.clone(),
                User {
                    name: name.clone(),
                    admin: *admin,
                    created: *at,
                    last_activity: None,
                    servers: Default::default(),
                },
            );
        }
        Event::UserRenamed { from, to, .. } => {
            if let Some(mut user) = state.users.remove(from) {
                user.name = to.clone();
                state.users.insert(to.clone(), user);
            }
            for group in state.groups.values_mut() {
                if group.users.remove(from) {
                    group.users.insert(to.clone());
                }
            }
            for session in state.sessions.values_mut().filter(|session| session.user == *from) {
                session.user = to.clone();
            }
            if let Some(mut account) = state.accounts.remove(from) {
                account.name = to.clone();
                state.accounts.insert(to.clone(), account);
            }
            for user in state.identities.values_mut().filter(|user| *user == from) {
                *user = to.clone();
            }
            let old_owner = TokenOwner::User(from.clone());
            for token in state.tokens.values_mut().filter(|token| token.owner == old_owner) {
                token.owner = TokenOwner::User(to.clone());
            }
        }
        Event::UserAdminChanged { name, admin, .. } => {
            if let Some(user) = state.users.get_mut(name) {
                user.admin = *admin;
            }
        }
        Event::UserDeleted { name, .. } => {
            state.users.remove(name);
            for group in state.groups.values_mut() {
                group.users.remove(name);
            }
        }
        Event::ServiceUpserted { service } => {
            state.services.insert(service.name.clone(), service.clone());
        }
        Event::TokenIssued { token } => {
            state.last_token_id = state.last_token_id.max(token.id);
            state.token_ids_by_hash.insert(token.hash.clone(), token.id);
            state.tokens.insert(token.id, token.clone());
        }
        Event::TokenRevoked { id, .. } => {
            if let Some(token) = state.tokens.remove(id) {
                state.token_ids_by_hash.remove(&token.hash);
            }
        }
        Event::ServerSpawnRequested {
            user,
            server,
            spawn_id,
            user_options,
            node,
            ..
        } => {
            state.last_spawn_id = state.last_spawn_id.max(*spawn_id);
            if let Some(owner) = state.users.get_mut(user) {
                let entry = owner
                    .servers
                    .entry(server.clone())
                    .or_insert_with(|| Server::stopped(server));
                entry.phase = ServerPhase::PendingSpawn;
                entry.spawn_id = Some(*spawn_id);
                entry.url = None;
                entry.user_options = user_options.clone();
                entry.node = *node;
                entry.spawner_state = serde_json::Value::Null;
                entry.progress.clear();
                entry.failure = None;
            }
        }
        Event::ServerSpawnProgress {
            user,
            server,
            step,
            spawner_state,
            ..
        } => {
            if let Some(entry) = server_mut(state, user, server) {
                if entry.progress.len() >= MAX_PROGRESS_STEPS {
                    entry.progress.remove(0);
                }
                entry.progress.push(step.clone());
                if let Some(spawner_state) = spawner_state {
                    entry.spawner_state = spawner_state.clone();
                }
            }
        }
        Event::ServerReady {
            user, server, url, at, ..
        } => {
            if let Some(entry) = server_mut(state, user, server) {
                entry.phase = ServerPhase::Running;
                entry.url = Some(url.clone());
                entry.started = Some(*at);
                entry.last_activity = Some(*at);
            }
        }
        Event::ServerStopRequested { user, server, .. } => {
            if let Some(entry) = server_mut(state, user, server) {
                entry.phase = ServerPhase::PendingStop;
            }
        }
        Event::ServerStopped {
            user,
            server,
            at,
            reason,
            ..
        } => {
            if let Some(entry) = server_mut(state, user, server) {
                entry.phase = ServerPhase::Stopped;
                entry.failure = reason.clone();
                entry.spawner_state = serde_json::Value::Null;
                entry.url = None;
                entry.api_token_id = None;
                entry.started = None;
                entry.last_activity = Some(*at);
            }
        }
        Event::RouteAdded { route } => {
            state.routes.insert(route.path.clone(), route.clone());
        }
        Event::RouteRemoved { path, .. } => {
            state.routes.remove(path);
        }
        Event::ActivityRecorded { routes, servers } => {
            for (path, when) in routes {
                if let Some(route) = state.routes.get_mut(path) {
                    route.last_activity = route.last_activity.max(*when);
                }
            }
            for activity in servers {
                if let Some(user) = state.users.get_mut(&activity.user) {
                    let when = activity.last_activity;
                    user.last_activity = Some(user.last_activity.map_or(when, |seen| seen.max(when)));
                    if let Some(server) = user.servers.get_mut(&activity.server) {
                        server.last_activity = Some(server.last_activity.map_or(when, |seen| seen.max(when)));
                    }
                }
            }
        }
        other => evolve_more(state, other),
    }
}

fn evolve_more(state: &mut State, event: &Event) {
    match event {
        Event::ServerTokenAssigned { user, server, token_id } => {
            if let Some(entry) = server_mut(state, user, server) {
                entry.api_token_id = Some(*token_id);
            }
        }
        Event::OAuthClientRegistered { .. }
        | Event::OAuthClientDeleted { .. }
        | Event::OAuthCodeIssued { .. }
        | Event::OAuthCodeRemoved { .. } => oauth::evolve(state, event),
        Event::AccountCreated { .. }
        | Event::PasswordChanged { .. }
        | Event::AccountAuthorized { .. }
        | Event::AccountDeleted { .. }
        | Event::LoginFailed { .. }
        | Event::LoginFailuresCleared { .. }
        | Event::IdentityBound { .. } => accounts::evolve(state, event),
        Event::RequestDenied { .. } | Event::AdminActionTaken { .. } => {}
        Event::ServerCreated {
            user,
            server,
            display_name,
            user_options,
            ..
        } => {
            if let Some(owner) = state.users.get_mut(user) {
                let mut entry = Server::stopped(server);
                entry.display_name = display_name.clone();
                entry.user_options = user_options.clone();
                owner.servers.insert(server.clone(), entry);
            }
        }
        Event::ServerUpdated {
            user,
            server,
            new_name,
            display_name,
            user_options,
            ..
        } => {
            if let Some(owner) = state.users.get_mut(user)
                && let Some(mut entry) = owner.servers.remove(server)
            {
                entry.name = new_name.clone();
                entry.display_name = display_name.clone();
                entry.user_options = user_options.clone();
                owner.servers.insert(new_name.clone(), entry);
            }
        }
        Event::ServerRemovalRequested { user, server, .. } => {
            if let Some(entry) = server_mut(state, user, server) {
                entry.remove_on_stop = true;
            }
        }
        Event::ServerRemoved { user, server, .. } => {
            if let Some(owner) = state.users.get_mut(user) {
                owner.servers.remove(server);
            }
        }
        Event::GroupCreated { name, users, .. } => {
            state.groups.insert(
                name.clone(),
                Group {
                    name: name.clone(),
                    users: users.iter().cloned().collect(),
                    properties: serde_json::Value::Object(Default::default()),
                },
            );
        }
        Event::GroupDeleted { name, .. } => {
            state.groups.remove(name);
        }
        Event::ServiceDeleted { name, .. } => {
            state.services.remove(name);
        }
        Event::SessionStarted { hash, session } => {
            state.sessions.insert(hash.clone(), session.clone());
        }
        Event::SessionEnded { hash, .. } => {
            state.sessions.remove(hash);
        }
        Event::GroupMembersChanged {
            name, added, removed, ..
        } => {
            if let Some(group) = state.groups.get_mut(name) {
                group.users.extend(added.iter().cloned());
                for user in removed {
                    group.users.remove(user);
                }
            }
        }
        Event::GroupPropertiesSet { name, properties, .. } => {
            if let Some(group) = state.groups.get_mut(name) {
                group.properties = properties.clone();
            }
        }
        Event::ApiActivityRecorded { users, tokens } => {
            for activity in users {
                let Some(user) = state.users.get_mut(&activity.user) else {
                    continue;
                };
                if let Some(when) = activity.last_activity {
                    user.last_activity = Some(user.last_activity.map_or(when, |seen| seen.max(when)));
                }
                for (name, when) in &activity.servers {
                    if let Some(server) = user.servers.get_mut(name) {
                        server.last_activity = Some(server.last_activity.map_or(*when, |seen| seen.max(*when)));
                    }
                }
            }
            for token_use in tokens {
                if let Some(token) = state.tokens.get_mut(&token_use.id) {
                    let when = token_use.last_activity;
                    token.last_activity = Some(token.last_activity.map_or(when, |seen| seen.max(when)));
                }
            }
        }
        _ => {}
    }
}

fn server_mut<'a>(state: &'a mut State, user: &str, server: &str) -> Option<&'a mut Server> {
    state.users.get_mut(user)?.servers.get_mut(server)
}

/// Decides `command` against `state` and, if accepted, folds the resulting events into
/// it, numbering them after the state's last event. Returns the numbered events.
pub fn apply(state: &mut State, command: &Command) -> Result<Vec<Sequenced>, Rejection> {
    let events = decide(state, command)?;
    let mut sequenced_events = Vec::with_capacity(events.len());
    for event in events {
        let route_seq = event.is_route_event().then_some(state.route_seq + 1);
        let sequenced = Sequenced {
            seq: state.event_seq + 1,
            route_seq,
            event,
            origin: None,
        };
        evolve(state, &sequenced);
        sequenced_events.push(sequenced);
    }
    Ok(sequenced_events)
}

mod accounts;
mod oauth;
#[cfg(test)]
mod oauth_tests;
#[cfg(test)]
mod tests;
