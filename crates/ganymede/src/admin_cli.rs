//! `ganymede token|user|events`: everyday administration through any hub's REST API
//! (JupyterHub's endpoints, plus Ganymede's audit record), with an admin token. Exit
//! status 0 on success, 1 on any error (the hub's message is printed), 2 on bad usage.

use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster_cli::{HubRefused, Target};

#[derive(Subcommand)]
pub enum TokenAction {
    /// Issue an API token for a user (yourself by default); prints the token once.
    Create {
        /// Whose token (default: the user the admin token belongs to).
        #[arg(long)]
        user: Option<String>,
        /// Scopes, e.g. `--scopes read:metrics` (repeatable or comma-separated; default:
        /// the owner's full permissions, as JupyterHub).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// A note shown in the token list.
        #[arg(long, default_value = "")]
        note: String,
        /// Expire after this long, e.g. `30d`, `12h` (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// List a user's tokens (ids, scopes, notes, last use; never the tokens).
    List {
        #[arg(long)]
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user's token by id (`a12`).
    Revoke {
        #[arg(long)]
        user: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Create users.
    Add {
        #[arg(required = true)]
        names: Vec<String>,
        /// Make them admins.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
    /// List users with their admin flag, last activity and servers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a user an admin (or, with --revoke, no longer one).
    Admin {
        name: String,
        #[arg(long)]
        revoke: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    target: Target,
    /// Start after this sequence number (0: the oldest record kept); what a previous
    /// run printed last, to resume.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Keep printing new records as they are committed (Ctrl-C stops). With several
    /// comma-separated `--url`s, moves on to the next replica when one stops answering.
    #[arg(long)]
    follow: bool,
    /// Records per request.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?)
}

/// Calls `path` under `/hub/api` on `url`; the hub's `message` on an error status.
async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = url.trim_end_matches('/');
    let mut request = http.request(method, format!("{url}/hub/api{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    crate::cluster_cli::ask(request, token, url).await
}

/// A 4xx: the request itself is wrong (token, parameters); asking again cannot help.
fn is_refusal(err: &anyhow::Error) -> bool {
    err.downcast_ref::<HubRefused>()
        .is_some_and(|refused| (400..500).contains(&refused.status))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    crate::out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn first_url(target: &Target) -> &str {
    target.url.split(',').next().unwrap_or(&target.url)
}

pub async fn token(target: Target, action: TokenAction) -> anyhow::Result<()> {
    let http = client()?;
    let url = first_url(&target);
    match action {
        TokenAction::Create {
            user,
            scopes,
            note,
            expires_in,
            json,
        } => {
            let user = match user {
                Some(user) => user,
                None => {
                    let me = call(&http, url, &target.token, Method::GET, "/user", None).await?;
                    if me["kind"] != "user" {
                        anyhow::bail!("the admin token belongs to a service: say whose token with --user");
                    }
                    me["name"].as_str().unwrap_or_default().to_owned()
                }
            };
            let mut body = json!({ "note": note });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            if let Some(expires_in) = expires_in {
                body["expires_in"] = json!(expires_in.as_secs());
            }
            let path = format!("/users/{}/tokens", encode(&user));
            let created = call(&http, url, &target.token, Method::POST, &path, Some(body)).await?;
            if json {
                return print_json(&created);
            }
            // The token alone on stdout, so that `$(ganymede token create …)` works; the
            // rest on stderr.
            eprintln!(
                "token {} for {user}, scopes {}",
                created["id"].as_str().unwrap_or("?"),
                created["scopes"]
            );
            crate::out!("{}", created["token"].as_str().unwrap_or_default());
        }
        TokenAction::List { user, json } => {
            let path = format!("/users/{}/tokens", encode(&user));
            let listed = call(&http, url, &target.token, Method::GET, &path, None).await?;
            if json {
                return print_json(&listed);
            }
            for token in listed["api_tokens"].as_array().into_iter().flatten() {
                crate::out!(
                    "{:8} {:24} last used {:24} {} {}",
                    token["id"].as_str().unwrap_or("?"),
                    token["created"].as_str().unwrap_or("?"),
                    token["last_activity"].as_str().unwrap_or("never"),
                    token["scopes"],
                    token["note"].as_str().unwrap_or_default(),
                );
            }
        }
        TokenAction::Revoke { user, id } => {
            let path = format!("/users/{}/tokens/{}", encode(&user), encode(&id));
            call(&http, url, &target.token, Method::DELETE, &path, None).await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

pub async fn user(target: Target, action: UserAction) -> anyhow::Result<()> {
    let http = client()?;
    let url = first_url(&target);
    match action {
        UserAction::Add { names, admin, json } => {
            let body = json!({ "usernames": names, "admin": admin });
            let created = call(&http, url, &target.token, Method::POST, "/users", Some(body)).await?;
            if json {
                return print_json(&created);
            }
            for user in created.as_array().into_iter().flatten() {
                crate::out!("created {}", user["name"].as_str().unwrap_or("?"));
            }
        }
        UserAction::List { json } => {
            let users = call(&http, url, &target.token, Method::GET, "/users", None).await?;
            if json {
                return print_json(&users);
            }
            for user in users.as_array().into_iter().flatten() {
                let servers: Vec<&str> = user["servers"]
                    .as_object()
                    .into_iter()
                    .flat_map(|servers| servers.keys())
                    .map(|name| if name.is_empty() { "(default)" } else { name.as_str() })
                    .collect();
                crate::out!(
                    "{:24} {:6} last active {:24} servers {}",
                    user["name"].as_str().unwrap_or("?"),
                    if user["admin"] == true { "admin" } else { "" },
                    user["last_activity"].as_str().unwrap_or("never"),
                    servers.join(","),
                );
            }
        }
        UserAction::Admin { name, revoke, json } => {
            let path = format!("/users/{}", encode(&name));
            let body = json!({ "admin": !revoke });
            let updated = call(&http, url, &target.token, Method::PATCH, &path, Some(body)).await?;
            if json {
                return print_json(&updated);
            }
            crate::out!(
                "{name} is {}an admin",
                if updated["admin"] == true { "" } else { "not " }
            );
        }
    }
    Ok(())
}

/// Prints the audit record; with `--follow`, for as long as it runs.
pub async fn events(args: EventsArgs) -> anyhow::Result<()> {
    if args.limit == 0 || args.limit > 1000 {
        anyhow::bail!("--limit must be between 1 and 1000");
    }
    let http = client()?;
    let urls: Vec<&str> = args.target.url.split(',').filter(|url| !url.is_empty()).collect();
    let mut at = 0;
    let mut since = args.since;
    let mut failures = 0u32;
    loop {
        let Some(url) = urls.get(at % urls.len().max(1)) else {
            anyhow::bail!("no --url given");
        };
        let wait = if args.follow { 25 } else { 0 };
        let path = format!("/ganymede/events?since={since}&limit={}&wait={wait}", args.limit);
        let page = match call(&http, url, &args.target.token, Method::GET, &path, None).await {
            Ok(page) => page,
            Err(err) if args.follow && !is_refusal(&err) => {
                // A replica going away is what following across a cluster is for.
                failures += 1;
                eprintln!("ganymede events: {err:#}; trying {}", urls[(at + 1) % urls.len()]);
                at += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        failures = 0;
        let oldest = page["oldest_kept"].as_u64().unwrap_or(1);
        if since > 0 && since + 1 < oldest {
            eprintln!(
                "ganymede events: records {}..{} were compacted away on this replica",
                since + 1,
                oldest - 1
            );
        }
        let records = page["events"].as_array().cloned().unwrap_or_default();
        for record in &records {
            if args.json {
                crate::out!("{}", serde_json::to_string(record)?);
            } else {
                crate::out!("{}", human(record));
            }
        }
        since = page["next_since"].as_u64().unwrap_or(since);
        if records.is_empty() && !args.follow {
            return Ok(());
        }
    }
}

fn human(record: &Value) -> String {
    let at = record["at"]
        .as_u64()
        .map(|millis| {
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(millis)).to_string()
        })
        .unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{:>8} {at:20} {:20} {:22} {} {}",
        record["seq"],
        record["actor"].as_str().unwrap_or("?"),
        record["action"].as_str().unwrap_or("?"),
        record["target"].as_str().unwrap_or_default(),
        record["outcome"].as_str().unwrap_or_default(),
    );
    if let Some(token) = record["token_id"].as_u64() {
        line.push_str(&format!(" token=a{token}"));
    }
    if let Some(ip) = record["ip"].as_str() {
        line.push_str(&format!(" ip={ip}"));
    }
    line
}

/// A path segment, percent-encoded (user names may hold `@`, `/`…).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
