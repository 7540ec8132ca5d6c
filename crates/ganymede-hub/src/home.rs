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
use serde::Deserialize;

use crate::Hub;
use crate::pages::{escape, page, page_with_xsrf};
use crate::render::{quote, server_url};
use crate::token_page::signed_in;

pub fn routes() -> Router<Hub> {
    Router::new()
        .route("/hub/home", get(home))
        .route("/hub/admin", get(admin))
}

/// The page script: `api(method, path, body)` with the XSRF header, and the buttons'
/// handlers, found by their `data-action`.
const SCRIPT: &str = r#"<script>
(function () {
  var xsrf = document.body.dataset.xsrf;
  function api(method, path, body) {
    var init = { method: method, credentials: 'same-origin', headers: { 'X-XSRFToken': xsrf } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch('/hub/api' + path, init).then(function (response) {
      if (!response.ok && response.status !== 202) {
        return response.json().catch(function () { return {}; }).then(function (error) {
          throw new Error(error.message || ('HTTP ' + response.status));
        });
      }
      return response;
    });
  }
  function say(text) {
    var box = document.getElementById('message');
    box.textContent = text;
    box.className = 'error';
  }
  // Reload once the server is no longer on its way down (or up).
  function settle(userPath, server) {
    var tries = 0;
    (function poll() {
      api('GET', userPath).then(function (r) { return r.json(); }).then(function (user) {
        var s = (user.servers || {})[server];
        if ((!s || !s.pending) || ++tries > 600) { window.location.reload(); }
        else { setTimeout(poll, 250); }
      }).catch(function () { window.location.reload(); });
    })();
  }
  document.addEventListener('click', function (event) {
    var button = event.target.closest('[data-action]');
    if (!button) { return; }
    event.preventDefault();
    var d = button.dataset, userPath = '/users/' + encodeURIComponent(d.user);
    var serverPath = d.server ? userPath + '/servers/' + encodeURIComponent(d.server) : userPath + '/server';
    button.disabled = true;
    var done;
    switch (d.action) {
      case 'start': done = api('POST', serverPath, {}).then(function () { settle(userPath, d.server || ''); }); break;
      case 'stop': done = api('DELETE', serverPath).then(function () { settle(userPath, d.server || ''); }); break;
      case 'remove': done = api('DELETE', serverPath, { remove: true }).then(function () { settle(userPath, d.server); }); break;
      case 'delete-user':
        if (!window.confirm('Delete user ' + d.user + '?')) { button.disabled = false; return; }
        done = api('DELETE', userPath).then(function () { window.location.reload(); }); break;
      case 'add-server':
        var name = document.getElementById('new-server-name').value.trim();
        window.location.href = '/hub/spawn/' + encodeURIComponent(d.user) + '/' + encodeURIComponent(name);
        return;
      case 'add-users':
        var names = document.getElementById('new-users').value.split(/\s+/).filter(Boolean);
        var admin = document.getElementById('new-users-admin').checked;
        done = api('POST', '/users', { usernames: names, admin: admin }).then(function () { window.location.reload(); });
        break;
      default: return;
    }
    done.catch(function (error) { button.disabled = false; say(error.message); });
  });
})();
</script>"#;

fn status_of(server: &Server) -> &'static str {
    match server.phase {
        ServerPhase::Running => "running",
        ServerPhase::PendingSpawn => "starting",
        ServerPhase::PendingStop => "stopping",
        ServerPhase::Stopped => "stopped",
    }
}

fn button(action: &str, user: &str, server: Option<&str>, label: &str, id: Option<&str>) -> String {
    format!(
        "<button type=\"button\" data-action=\"{action}\" data-user=\"{user}\"{server}{id}>{label}</button>",
        user = escape(user),
        server = server.map_or_else(String::new, |s| format!(" data-server=\"{}\"", escape(s))),
        id = id.map_or_else(String::new, |id| format!(" id=\"{id}\"")),
        label = escape(label),
    )
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

/// The default server's controls on the home page.
fn default_server_controls(user: &str, server: Option<&Server>) -> String {
    let phase = server.map_or(ServerPhase::Stopped, |s| s.phase);
    let controls = match phase {
        ServerPhase::Stopped => format!(
            "<a id=\"start\" class=\"button\" href=\"{}\">Start My Server</a>",
            escape(&spawn_link(user, ""))
        ),
        ServerPhase::PendingSpawn => format!(
            "<a id=\"pending\" href=\"{}\">Your server is starting…</a> {}",
            escape(&pending_link(user, "")),
            button("stop", user, None, "Stop My Server", Some("stop"))
        ),
        ServerPhase::Running => format!(
            "<a id=\"my-server\" class=\"button\" href=\"{}\">My Server</a> {}",
            escape(&server_url(user, "")),
            button("stop", user, None, "Stop My Server", Some("stop"))
        ),
        ServerPhase::PendingStop => "<span id=\"stopping\">Your server is stopping…</span>".to_owned(),
    };
    format!(
        "<div id=\"default-server\" data-state=\"{}\">{controls}</div>",
        server.map_or("stopped", status_of)
    )
}

fn named_servers_table(user: &User) -> String {
    let rows: String = user
        .servers
        .values()
        .filter(|server| !server.name.is_empty())
        .map(|server| {
            let name = &server.name;
            let actions = match server.phase {
                ServerPhase::Stopped => format!(
                    "<a class=\"start\" href=\"{}\">start</a> {}",
                    escape(&spawn_link(&user.name, name)),
                    button("remove", &user.name, Some(name), "delete", None)
                ),
                ServerPhase::Running | ServerPhase::PendingSpawn => {
                    button("stop", &user.name, Some(name), "stop", None)
                }
                ServerPhase::PendingStop => "stopping…".to_owned(),
            };
            let link = match server.phase {
                ServerPhase::Running => format!(
                    "<a href=\"{url}\">{url}</a>",
                    url = escape(&server_url(&user.name, name))
                ),
                ServerPhase::PendingSpawn => {
                    format!("<a href=\"{}\">starting…</a>", escape(&pending_link(&user.name, name)))
                }
                _ => String::new(),
            };
            let activity = server
                .last_activity
                .map(|t| crate::render::iso(t).as_str().unwrap_or_default().to_owned())
                .unwrap_or_else(|| "Never".into());
            format!(
                "<tr data-server=\"{server}\" data-state=\"{state}\"><td>{display}</td><td>{link}</td>\
                 <td class=\"activity\">{activity}</td><td>{actions}</td></tr>",
                server = escape(name),
                state = status_of(server),
                display = escape(&server.display_name),
            )
        })
        .collect();
    format!(
        "<h2>Named servers</h2><table id=\"named-servers\">\
         <tr><th>Server name</th><th>URL</th><th>Last activity</th><th>Actions</th></tr>{rows}\
         <tr><td><input id=\"new-server-name\" placeholder=\"Name your server\" aria-label=\"server name\"></td>\
         <td colspan=\"3\">{add}</td></tr></table>",
        add = button("add-server", &user.name, None, "Add New Server", Some("new-server-btn")),
    )
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
        Some((
            default_server_controls(&user.name, user.servers.get("")),
            hub.settings.allow_named_servers.then(|| named_servers_table(user)),
            scopes.holds("admin-ui"),
        ))
    });
    let Some((default_server, named, is_admin)) = found else {
        return page(StatusCode::NOT_FOUND, "Not found", "<p>No such user.</p>");
    };
    let mut links = vec!["<a href=\"/hub/token\" id=\"tokens\">Token</a>".to_owned()];
    if is_admin {
        links.push("<a href=\"/hub/admin\" id=\"admin\">Admin</a>".into());
    }
    if hub.auth.native().is_some() {
        links.push("<a href=\"/hub/change-password\" id=\"change-password\">Change password</a>".into());
    }
    links.push("<a href=\"/hub/logout\" id=\"logout\">Sign out</a>".into());
    let body = format!(
        "<h1>Home</h1><p id=\"signed-in\">Signed in as <strong>{user}</strong>.</p>\
         <p id=\"message\" role=\"alert\"></p>{default_server}{named}<p>{links}</p>{SCRIPT}",
        user = escape(&session.user),
        named = named.unwrap_or_default(),
        links = links.join(" · "),
    );
    page_with_xsrf(StatusCode::OK, "Home", &body, &xsrf)
}

#[derive(Deserialize, Default)]
struct AdminQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
}

fn user_row(user: &User) -> String {
    let server = user.servers.get("");
    let state = server.map_or("stopped", status_of);
    let action = match server.map(|s| s.phase) {
        Some(ServerPhase::Running | ServerPhase::PendingSpawn) => button("stop", &user.name, None, "Stop Server", None),
        Some(ServerPhase::PendingStop) => "stopping…".to_owned(),
        _ => button("start", &user.name, None, "Start Server", None),
    };
    let activity = user
        .last_activity
        .map(|t| crate::render::iso(t).as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "Never".into());
    format!(
        "<tr data-user=\"{name}\" data-state=\"{state}\"><td>{name}</td><td>{admin}</td>\
         <td class=\"state\">{state}</td><td>{activity}</td><td>{action} {delete}</td></tr>",
        name = escape(&user.name),
        admin = if user.admin { "admin" } else { "" },
        delete = button("delete-user", &user.name, None, "Delete User", None),
    )
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
        let rows: String = state.users.values().skip(offset).take(limit).map(user_row).collect();
        let groups: String = state
            .groups
            .values()
            .map(|group| {
                format!(
                    "<li data-group=\"{name}\">{name} ({count} members)</li>",
                    name = escape(&group.name),
                    count = group.users.len()
                )
            })
            .collect();
        Some((total, rows, groups))
    });
    let Some((total, rows, groups)) = rendered else {
        return page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "<p>The admin page is for admins.</p>",
        );
    };
    let shown_to = (offset + limit).min(total);
    let mut pager = String::new();
    if offset > 0 {
        pager.push_str(&format!(
            "<a id=\"previous\" href=\"/hub/admin?offset={}&amp;limit={limit}\">Previous</a> ",
            offset.saturating_sub(limit)
        ));
    }
    if shown_to < total {
        pager.push_str(&format!(
            "<a id=\"next\" href=\"/hub/admin?offset={shown_to}&amp;limit={limit}\">Next</a>"
        ));
    }
    let body = format!(
        "<h1>Admin</h1><p id=\"message\" role=\"alert\"></p>\
         <h2>Users</h2><p id=\"showing\">Users {from}–{shown_to} of {total}</p>\
         <table id=\"users\"><tr><th>User</th><th>Admin</th><th>Server</th><th>Last activity</th><th>Actions</th></tr>\
         {rows}</table><p>{pager}</p>\
         <h2>Add users</h2><p><textarea id=\"new-users\" aria-label=\"user names, one per line\"></textarea>\
         <label><input type=\"checkbox\" id=\"new-users-admin\"> Admin</label>{add}</p>\
         <h2>Groups</h2><ul id=\"groups\">{groups}</ul>\
         <p><a href=\"/hub/home\">Home</a></p>{SCRIPT}",
        from = if total == 0 { 0 } else { offset + 1 },
        add = button("add-users", &session.user, None, "Add Users", Some("add-users")),
    );
    page_with_xsrf(StatusCode::OK, "Admin", &body, &xsrf)
}
