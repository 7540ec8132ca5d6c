//! The audit record: every committed event, told as who did what to what, with what
//! outcome, from where and when. Events are the record's source of truth (they are
//! replicated, so every replica tells the same story in the same order); this module
//! only says them in an operator's words — and never with a secret or a hash in them.

use serde::{Deserialize, Serialize};

use crate::{Event, Sequenced, Timestamp, TokenOwner};

/// Who proposed a command, and from where: carried with the command through the log.
/// Unknown fields are tolerated: a newer replica may say more about an origin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `user:<name>`, `service:<name>`, `replica:<node id>` (the hub's own work, such as
    /// a spawner's report) or `anonymous` (a request nobody was logged in for).
    pub actor: String,
    /// The API token the actor used, if any (its public id, `a<id>` in the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u64>,
    /// The client's address, as the edge forwarded it or as the hub saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl Origin {
    pub fn replica(node_id: u64) -> Origin {
        Origin {
            actor: format!("replica:{node_id}"),
            ..Origin::default()
        }
    }

    pub fn anonymous(ip: Option<String>) -> Origin {
        Origin {
            actor: "anonymous".into(),
            token_id: None,
            ip,
        }
    }

    pub fn actor_of(owner: &TokenOwner) -> String {
        match owner {
            TokenOwner::User(name) => format!("user:{name}"),
            TokenOwner::Service(name) => format!("service:{name}"),
        }
    }
}

/// Longest action and target an audit record keeps (characters).
pub const MAX_ACTION: usize = 64;
pub const MAX_TARGET: usize = 256;

/// `text` cut to at most `max` characters, marked with `…` when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What an operator did to the cluster itself: things that change no replicated state
/// (membership lives in Raft's own entries; a backup only reads), recorded for the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    AddNode,
    RemoveNode,
    TransferLeader,
    Backup,
}

impl AdminAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::AddNode => "cluster.add_node",
            AdminAction::RemoveNode => "cluster.remove_node",
            AdminAction::TransferLeader => "cluster.transfer_leader",
            AdminAction::Backup => "cluster.backup",
        }
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The event's sequence number: the same on every replica, and where to resume.
    pub seq: u64,
    /// Milliseconds since the epoch, as the proposing replica's clock said; `None` for
    /// the few events that carry no time.
    pub at: Option<Timestamp>,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// What happened, as `<thing>.<verb>`: `user.create`, `session.start` (a login),
    /// `token.issue`, `server.spawn`, `request.deny`…
    pub action: &'static str,
    /// What it happened to: a user, `user/server`, a token id, a route path…
    pub target: String,
    /// `ok` for a change that was made; `denied` or `failed` otherwise, with a reason
    /// where there is one (`failed: <why>`).
    pub outcome: String,
}

/// Whether the event only records activity (last-seen times): telemetry that the
/// audit view leaves out.
pub fn is_activity(event: &Event) -> bool {
    matches!(
        event,
        Event::ActivityRecorded { .. } | Event::ApiActivityRecorded { .. }
    )
}

/// The audit record of one committed event.
pub fn record(sequenced: &Sequenced) -> AuditRecord {
    let (action, target, at, outcome) = describe(&sequenced.event);
    let origin = sequenced.origin.clone().unwrap_or_else(|| Origin {
        actor: "unknown".into(),
        ..Origin::default()
    });
    AuditRecord {
        seq: sequenced.seq,
        at,
        actor: origin.actor,
        token_id: origin.token_id,
        ip: origin.ip,
        action,
        target,
        outcome: outcome.unwrap_or_else(|| "ok".into()),
    }
}

fn server_target(user: &str, server: &str) -> String {
    if server.is_empty() {
        user.to_owned()
    } else {
        format!("{user}/{server}")
    }
}

type Described = (&'static str, String, Option<Timestamp>, Option<String>);

fn describe(event: &Event) -> Described {
    let ok = |action: &'static str, target: String, at: Timestamp| (action, target, Some(at), None);
    match event {
        Event::ClusterInitialized { at, .. } => ok("cluster.initialize", String::new(), *at),
        Event::UserCreated { name, admin, at } => ok(
            if *admin { "user.create_admin" } else { "user.create" },
            name.clone(),
            *at,
        ),
        Event::UserRenamed { from, to, at } => ok("user.rename", format!("{from} -> {to}"), *at),
        Event::UserAdminChanged { name, admin, at } => ok(
            if *admin {
                "user.grant_admin"
            } else {
                "user.revoke_admin"
            },
            name.clone(),
            *at,
        ),
        Event::UserDeleted { name, at } => ok("user.delete", name.clone(), *at),
        Event::ServiceUpserted { service } => ("service.upsert", service.name.clone(), None, None),
        Event::ServiceDeleted { name, at } => ok("service.delete", name.clone(), *at),
        Event::SessionStarted { session, .. } => ok("session.start", session.user.clone(), session.created),
        Event::SessionEnded { at, .. } => ok("session.end", String::new(), *at),
        Event::TokenIssued { token } => ok(
            "token.issue",
            format!("a{} ({})", token.id, Origin::actor_of(&token.owner)),
            token.created,
        ),
        Event::TokenRevoked { id, at } => ok("token.revoke", format!("a{id}"), *at),
        Event::ServerSpawnRequested { user, server, at, .. } => ok("server.spawn", server_target(user, server), *at),
        Event::ServerSpawnProgress { user, server, step, .. } => (
            "server.progress",
            server_target(user, server),
            None,
            Some(format!("ok: {}%", step.progress)),
        ),
        Event::ServerReady { user, server, at, .. } => ok("server.ready", server_target(user, server), *at),
        Event::ServerStopRequested { user, server, at, .. } => ok("server.stop", server_target(user, server), *at),
        Event::ServerStopped {
            user,
            server,
            at,
            reason,
            ..
        } => (
            "server.stopped",
            server_target(user, server),
            Some(*at),
            reason
                .as_ref()
                .map(|why| format!("failed: {}", bounded(why, MAX_TARGET))),
        ),
        Event::RouteAdded { route } => ("route.add", route.path.clone(), None, None),
        Event::RouteRemoved { path, at } => ok("route.remove", path.clone(), *at),
        Event::ActivityRecorded { routes, servers } => (
            "activity.record",
            format!("{} routes, {} servers", routes.len(), servers.len()),
            None,
            None,
        ),
        Event::ServerCreated { user, server, at, .. } => ok("server.create", server_target(user, server), *at),
        Event::ServerUpdated { user, server, at, .. } => ok("server.update", server_target(user, server), *at),
        Event::ServerRemovalRequested { user, server, at } => {
            ok("server.remove_requested", server_target(user, server), *at)
        }
        Event::ServerRemoved { user, server, at } => ok("server.remove", server_target(user, server), *at),
        Event::GroupCreated { name, at, .. } => ok("group.create", name.clone(), *at),
        Event::GroupDeleted { name, at } => ok("group.delete", name.clone(), *at),
        Event::GroupMembersChanged { name, at, .. } => ok("group.change_members", name.clone(), *at),
        Event::GroupPropertiesSet { name, at, .. } => ok("group.set_properties", name.clone(), *at),
        Event::ApiActivityRecorded { users, tokens } => (
            "activity.record_api",
            format!("{} users, {} tokens", users.len(), tokens.len()),
            None,
            None,
        ),
        Event::ServerTokenAssigned { user, server, token_id } => (
            "server.assign_token",
            format!("{} a{token_id}", server_target(user, server)),
            None,
            None,
        ),
        Event::OAuthClientRegistered { client } => ("oauth_client.register", client.id.clone(), None, None),
        Event::OAuthClientDeleted { id, at } => ok("oauth_client.delete", id.clone(), *at),
        Event::OAuthCodeIssued { code, .. } => ("oauth_code.issue", code.client_id.clone(), None, None),
        Event::OAuthCodeRemoved { at, .. } => ok("oauth_code.remove", String::new(), *at),
        Event::AccountCreated { account } => ("account.create", account.name.clone(), None, None),
        Event::PasswordChanged { name, at, .. } => ok("account.change_password", name.clone(), *at),
        Event::AccountAuthorized { name, authorized, at } => ok(
            if *authorized {
                "account.authorize"
            } else {
                "account.unauthorize"
            },
            name.clone(),
            *at,
        ),
        Event::AccountDeleted { name, at } => ok("account.delete", name.clone(), *at),
        Event::LoginFailed {
            name, at, locked_until, ..
        } => (
            "login.fail",
            name.clone(),
            Some(*at),
            Some(
                if locked_until.is_some() {
                    "denied: locked"
                } else {
                    "denied"
                }
                .into(),
            ),
        ),
        Event::LoginFailuresCleared { name, at } => ok("login.clear_failures", name.clone(), *at),
        Event::IdentityBound { identity, user, at } => ok("identity.bind", format!("{identity} -> {user}"), *at),
        Event::RequestDenied {
            action,
            target,
            status,
            suppressed,
            at,
        } => (
            "request.deny",
            format!("{action} {target}"),
            Some(*at),
            Some(if *suppressed > 0 {
                format!("denied: {status} (and {suppressed} more not recorded)")
            } else {
                format!("denied: {status}")
            }),
        ),
        Event::AdminActionTaken { action, target, at } => ok(action.as_str(), target.clone(), *at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcd", 3), "ab…");
        assert_eq!(bounded("ééééé", 4), "ééé…");
    }

    #[test]
    fn a_denied_request_is_recorded_with_its_actor_and_no_more_than_bounded_text() {
        let sequenced = Sequenced {
            seq: 7,
            route_seq: None,
            event: Event::RequestDenied {
                action: "GET /hub/api/users".into(),
                target: "/hub/api/users".into(),
                status: 403,
                suppressed: 2,
                at: 1000,
            },
            origin: Some(Origin {
                actor: "user:alice".into(),
                token_id: Some(4),
                ip: Some("10.0.0.1".into()),
            }),
        };
        let record = record(&sequenced);
        assert_eq!(record.seq, 7);
        assert_eq!(record.actor, "user:alice");
        assert_eq!(record.token_id, Some(4));
        assert_eq!(record.action, "request.deny");
        assert_eq!(record.outcome, "denied: 403 (and 2 more not recorded)");
        assert_eq!(record.at, Some(1000));
    }

    #[test]
    fn records_never_carry_hashes() {
        let token = crate::Token {
            id: 3,
            hash: "deadbeefcafe".into(),
            owner: TokenOwner::User("bob".into()),
            scopes: vec!["read:users".into()],
            note: String::new(),
            created: 5,
            expires_at: None,
            last_activity: None,
            session_id: None,
            oauth_client: None,
        };
        let sequenced = Sequenced {
            seq: 1,
            route_seq: None,
            event: Event::TokenIssued { token },
            origin: None,
        };
        let text = serde_json::to_string(&record(&sequenced)).expect("json");
        assert!(!text.contains("deadbeef"), "{text}");
        assert!(text.contains("\"target\":\"a3 (user:bob)\""), "{text}");
    }
}
