//! `ganymede cluster status|add|remove`: membership through any hub's API; the status
//! also asks every member for its own view (role, leader, applied index, lag).

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct Target {
    /// Any hub replica's API address.
    #[arg(long, env = "GANYMEDE_HUB_URL", default_value = "http://127.0.0.1:8081")]
    pub(crate) url: String,
    /// An admin token.
    #[arg(long, env = "GANYMEDE_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
}

#[derive(Subcommand)]
pub enum Action {
    /// This replica's view (role, leader, term, members), then every member's own: role,
    /// leader, applied index and lag behind the leader's log (or unreachable).
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a replica: it joins as a learner, catches up, then becomes a voter.
    Add {
        #[arg(long)]
        node_id: u64,
        /// The new replica's gRPC address (its hub.raft_bind), host:port.
        #[arg(long)]
        raft_addr: String,
        /// The new replica's API address (its hub.api_bind), host:port.
        #[arg(long)]
        api_addr: String,
        /// Keep it a learner (no vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a replica (voter or learner).
    Remove {
        #[arg(long)]
        node_id: u64,
    },
    /// Hand leadership to another voter now (before stopping the leader's machine);
    /// returns once it leads.
    TransferLeader {
        #[arg(long)]
        node_id: u64,
    },
}

pub async fn run(target: Target, action: Action) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let base = format!("{}/hub/api/ganymede/cluster", target.url.trim_end_matches('/'));
    let request = match &action {
        Action::Status { .. } => client.get(&base),
        Action::Add {
            node_id,
            raft_addr,
            api_addr,
            learner,
        } => client.post(format!("{base}/nodes")).json(&json!({
            "node_id": node_id, "raft_addr": raft_addr, "api_addr": api_addr, "voter": !learner,
        })),
        Action::Remove { node_id } => client.delete(format!("{base}/nodes/{node_id}")),
        Action::TransferLeader { node_id } => client
            .post(format!("{base}/transfer-leader"))
            .json(&json!({ "node_id": node_id })),
    };
    let mut body = ask(request, &target.token, &target.url).await?;
    if matches!(action, Action::Status { .. }) {
        body["replicas"] = Value::Array(replicas(&client, &target, &body).await);
    }
    if matches!(action, Action::Status { json: true }) {
        crate::out!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    print_status(&body);
    Ok(())
}

/// Sends `request` to the hub at `url` with `token`: its JSON answer (`null` when
/// empty), or the hub's `message` as a [`HubRefused`] on an error status.
pub(crate) async fn ask(request: reqwest::RequestBuilder, token: &str, url: &str) -> anyhow::Result<Value> {
    let response = request
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.context("reading the hub's answer")?;
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("the hub's answer is not JSON ({status})"))?
    };
    if !status.is_success() {
        let message = body.get("message").and_then(Value::as_str).unwrap_or("(no message)");
        return Err(HubRefused {
            status: status.as_u16(),
            message: format!("{status}: {message}"),
        }
        .into());
    }
    Ok(body)
}

/// The hub answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct HubRefused {
    pub(crate) status: u16,
    message: String,
}

/// Every member's own view, asked of it directly (briefly: a dead replica must not hold
/// the status up): role, term, who it thinks leads, how far it has applied, and how far
/// behind the leader's log that is.
async fn replicas(client: &reqwest::Client, target: &Target, status: &Value) -> Vec<Value> {
    let scheme = if target.url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let members: Vec<(u64, String)> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|member| Some((member["node_id"].as_u64()?, member["api_addr"].as_str()?.to_owned())))
        .collect();
    let views = member_views(client, target, scheme, &members).await;
    let leader_log = views
        .iter()
        .find(|view| view["role"] == "leader")
        .and_then(|view| view["last_log_index"].as_u64());
    views
        .into_iter()
        .map(|mut view| {
            if let (Some(leader_log), Some(applied)) = (leader_log, view["last_applied_index"].as_u64()) {
                view["lag"] = json!(leader_log.saturating_sub(applied));
            }
            view
        })
        .collect()
}

async fn member_views(
    client: &reqwest::Client,
    target: &Target,
    scheme: &str,
    members: &[(u64, String)],
) -> Vec<Value> {
    let asks = members.iter().map(|(node_id, api_addr)| async move {
        let request = client
            .get(format!("{scheme}://{api_addr}/hub/api/ganymede/cluster"))
            .timeout(std::time::Duration::from_secs(2));
        match ask(request, &target.token, api_addr).await {
            Ok(view) => json!({
                "node_id": node_id,
                "reachable": true,
                "role": view["role"],
                "term": view["term"],
                "leader_id": view["leader_id"],
                "last_log_index": view["last_log_index"],
                "last_applied_index": view["last_applied_index"],
            }),
            Err(err) => json!({ "node_id": node_id, "reachable": false, "error": format!("{err:#}") }),
        }
    });
    // One after another: a handful of replicas, each answering in milliseconds or
    // refusing the connection at once; a hung one costs its 2 s.
    let mut views = Vec::with_capacity(members.len());
    for ask in asks {
        views.push(ask.await);
    }
    views
}

fn print_status(status: &Value) {
    let field = |name: &str| status.get(name).map(|v| v.to_string()).unwrap_or_default();
    crate::out!(
        "node {} is {} (leader {}, term {}, applied {})",
        field("node_id"),
        status.get("role").and_then(Value::as_str).unwrap_or("?"),
        field("leader_id"),
        field("term"),
        field("last_applied_index"),
    );
    for member in status.get("members").and_then(Value::as_array).into_iter().flatten() {
        let voter = member.get("voter").and_then(Value::as_bool).unwrap_or(false);
        crate::out!(
            "  node {:>3}  {:7}  api {}  raft {}",
            member.get("node_id").map(|v| v.to_string()).unwrap_or_default(),
            if voter { "voter" } else { "learner" },
            member.get("api_addr").and_then(Value::as_str).unwrap_or("?"),
            member.get("raft_addr").and_then(Value::as_str).unwrap_or("?"),
        );
    }
    for view in status.get("replicas").and_then(Value::as_array).into_iter().flatten() {
        let node = view["node_id"].to_string();
        if view["reachable"] == true {
            crate::out!(
                "  replica {node:>3}: {:9} term {} leader {} applied {} lag {}",
                view["role"].as_str().unwrap_or("?"),
                view["term"],
                view["leader_id"],
                view["last_applied_index"],
                view.get("lag").map(Value::to_string).unwrap_or_else(|| "?".into()),
            );
        } else {
            crate::out!(
                "  replica {node:>3}: unreachable ({})",
                view["error"].as_str().unwrap_or("?")
            );
        }
    }
}
