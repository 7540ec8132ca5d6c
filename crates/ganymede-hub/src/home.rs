//! The signed-in pages that act through the REST API from the browser, as JupyterHub's
//! do: `/hub/home` (start, stop and open the default server; add, start, stop and
//! delete named servers) and `/hub/admin` (users and their servers, paginated; add,
//! start, stop, delete). Buttons call the API with the session cookie and the page's
//! XSRF token in `X-XSRFToken`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use ganymede_model::rbac::ScopeSet;
use ganymede_model::{Server, ServerPhase, TokenOwner, User};
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

use crate::Hub;
use crate::render::{quote, server_url};
use crate::templates::{message, render};
use crate::token_page::signed_in;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/hub/home", get(home))
        .route("/hub/admin", get(admin))
}

fn status_of(server: &Server) -> &'static str {
    match server.phase {
        ServerPhase::Running => "running",
        ServerPhase::PendingSpawn => "starting",
        ServerPhase::PendingStop => "stopping",
        ServerPhase::Stopped => "stopped",
    }
}

fn pending_link(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/hub/spawn-pending/{}", quote(user))
    } else {
        format!("/hub/spawn-pending/{}/{}", quote(user), quote(server))
    }
}

fn spawn_link(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/hub/spawn/{}", quote(user))
    } else {
        format!("/hub/spawn/{}/{}", quote(user), quote(server))
    }
}

/// A server as the home page shows it; the template picks the links and buttons by
/// `state`.
#[derive(Serialize)]
struct ServerView {
    name: String,
    display_name: String,
    state: &'static str,
    url: String,
    spawn_url: String,
    pending_url: String,
    last_activity: Option<String>,
}

impl ServerView {
    fn new(user: &str, name: &str, server: Option<&Server>) -> Self {
        Self {
            name: name.to_owned(),
            display_name: server.map_or_else(|| name.to_owned(), |s| s.display_name.clone()),
            state: server.map_or("stopped", status_of),
            url: server_url(user, name),
            spawn_url: spawn_link(user, name),
            pending_url: pending_link(user, name),
            last_activity: server.and_then(|s| s.last_activity).map(iso_text),
        }
    }
}

fn iso_text(millis: i64) -> String {
    crate::render::iso(millis).as_str().unwrap_or_default().to_owned()
}

async fn home(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    let (session, xsrf) = match signed_in(&hub, &headers, "/hub/home").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let roles = &hub.settings.roles;
    let found = hub.raft.read_local(|state| {
        let user = state.users.get(&session.user)?;
        let scopes = roles.owner_scopes(state, &TokenOwner::User(session.user.clone()));
        let named: Option<Vec<ServerView>> = hub.settings.allow_named_servers.then(|| {
            user.servers
                .values()
                .filter(|server| !server.name.is_empty())
                .map(|server| ServerView::new(&user.name, &server.name, Some(server)))
                .collect()
        });
        Some((
            ServerView::new(&user.name, "", user.servers.get("")),
            named,
            scopes.holds("admin-ui"),
        ))
    });
    let Some((default_server, named_servers, is_admin)) = found else {
        return message(StatusCode::NOT_FOUND, "Not found", "No such user.");
    };
    render(
        StatusCode::OK,
        "home.html",
        context! {
            title => "Home",
            xsrf,
            user => session.user,
            default_server => Serde(default_server),
            named_servers => Serde(named_servers),
            is_admin,
            native => hub.auth.native().is_some(),
        },
    )
}

#[derive(Deserialize, Default)]
struct AdminQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize)]
struct UserRow {
    name: String,
    admin: bool,
    state: &'static str,
    last_activity: Option<String>,
}

impl UserRow {
    fn new(user: &User) -> Self {
        Self {
            name: user.name.clone(),
            admin: user.admin,
            state: user.servers.get("").map_or("stopped", status_of),
            last_activity: user.last_activity.map(iso_text),
        }
    }
}

#[derive(Serialize)]
struct GroupRow {
    name: String,
    members: usize,
}

async fn admin(State(hub): State<Hub>, headers: HeaderMap, Query(query): Query<AdminQuery>) -> Response {
    let (session, xsrf) = match signed_in(&hub, &headers, "/hub/admin").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let roles = &hub.settings.roles;
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let offset = query.offset;
    let rendered = hub.raft.read_local(|state| {
        let scopes: ScopeSet = roles.owner_scopes(state, &TokenOwner::User(session.user.clone()));
        if !scopes.holds("admin-ui") {
            return None;
        }
        let total = state.users.len();
        let users: Vec<UserRow> = state
            .users
            .values()
            .skip(offset)
            .take(limit)
            .map(UserRow::new)
            .collect();
        let groups: Vec<GroupRow> = state
            .groups
            .values()
            .map(|group| GroupRow {
                name: group.name.clone(),
                members: group.users.len(),
            })
            .collect();
        Some((total, users, groups))
    });
    let Some((total, users, groups)) = rendered else {
        return message(StatusCode::FORBIDDEN, "Forbidden", "The admin page is for admins.");
    };
    let last = (offset + limit).min(total);
    render(
        StatusCode::OK,
        "admin.html",
        context! {
            title => "Admin",
            xsrf,
            admin_name => session.user,
            users => Serde(users),
            groups => Serde(groups),
            total,
            first => if total == 0 { 0 } else { offset + 1 },
            last,
            previous_url => (offset > 0).then(|| {
                format!("/hub/admin?offset={}&limit={limit}", offset.saturating_sub(limit))
            }),
            next_url => (last < total).then(|| format!("/hub/admin?offset={last}&limit={limit}")),
        },
    )
}
