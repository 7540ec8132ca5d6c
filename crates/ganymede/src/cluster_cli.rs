//! `ganymede cluster status|add|remove`: membership through any hub's API.

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
    /// Show this replica's view: its role, the leader, the members.
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
    };
    let response = request
        .header("authorization", format!("token {}", target.token))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", target.url))?;
    let status = response.status();
    let body: Value = response.json().await.context("the hub's answer is not JSON")?;
    if !status.is_success() {
        let message = body.get("message").and_then(Value::as_str).unwrap_or("(no message)");
        anyhow::bail!("{status}: {message}");
    }
    if matches!(action, Action::Status { json: true }) {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    print_status(&body);
    Ok(())
}

fn print_status(status: &Value) {
    let field = |name: &str| status.get(name).map(|v| v.to_string()).unwrap_or_default();
    println!(
        "node {} is {} (leader {}, term {}, applied {})",
        field("node_id"),
        status.get("role").and_then(Value::as_str).unwrap_or("?"),
        field("leader_id"),
        field("term"),
        field("last_applied_index"),
    );
    for member in status.get("members").and_then(Value::as_array).into_iter().flatten() {
        let voter = member.get("voter").and_then(Value::as_bool).unwrap_or(false);
        println!(
            "  node {:>3}  {:7}  api {}  raft {}",
            member.get("node_id").map(|v| v.to_string()).unwrap_or_default(),
            if voter { "voter" } else { "learner" },
            member.get("api_addr").and_then(Value::as_str).unwrap_or("?"),
            member.get("raft_addr").and_then(Value::as_str).unwrap_or("?"),
        );
    }
}
