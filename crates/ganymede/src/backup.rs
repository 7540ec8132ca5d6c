//! `ganymede backup` (a consistent copy of the replicated state, through any live hub
//! replica's API) and `ganymede restore` (offline: seeds the data directory of a hub that
//! then starts as a new one-node cluster with that state).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use ganymede_raft::{Backup, HubNode};
use serde_json::{Value, json};

use crate::cluster_cli::Target;

/// The secret-bearing file's permissions: the owner's only.
const PRIVATE: u32 = 0o600;

#[derive(Args)]
#[command(
    after_help = "The file holds every token's, session's and password's hash and the cluster secret \
                  (which signs login cookies): it is written with mode 0600; keep it as you keep the \
                  hubs' data directories."
)]
pub struct BackupArgs {
    #[command(flatten)]
    target: Target,
    /// Where to write the backup (written to a temporary file beside it, checked, then
    /// renamed over it; mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// Save the replica's state as applied so far, without a leader's read barrier: for a
    /// cluster that has lost its majority (the state may miss the latest writes).
    #[arg(long)]
    local: bool,
    /// Print what was saved as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    after_help = "Restore seeds a ONE-node cluster: start the hub with the same configuration, \
                  then grow it with `ganymede cluster add`. Servers the backup has running belong to the old \
                  cluster; the new one marks them failed once its reconciler finds them gone (at once on \
                  this node, after spawner.owner_timeout for servers placed on other nodes)."
)]
pub struct RestoreArgs {
    /// A file written by `ganymede backup`.
    #[arg(long)]
    from: PathBuf,
    /// The configuration of the hub that will run on the restored data (node id, data
    /// directory, addresses), as for `ganymede hub`; optional.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one configuration key, e.g. `--set hub.node_id=2`; repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// The data directory to seed instead of the configuration's `hub.data_dir`. It must
    /// not exist or be empty.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print what was restored as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let url = format!(
        "{}/hub/api/ganymede/backup{}",
        args.target.url.trim_end_matches('/'),
        if args.local { "?local=1" } else { "" }
    );
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(600))
        .build()?;
    let mut response = client
        .get(&url)
        .header("authorization", format!("token {}", args.target.token))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.target.url))?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body.get("message").and_then(Value::as_str).unwrap_or("(no message)");
        anyhow::bail!("the hub refused the backup: {status}: {message}");
    }

    let tmp = temporary_beside(&args.out)?;
    let saved = async {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        while let Some(chunk) = response.chunk().await.context("the backup's download broke off")? {
            file.write_all(&chunk)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        // What is on disk is what gets checked: a complete, intact backup.
        let bytes = std::fs::read(&tmp).with_context(|| format!("cannot read back {}", tmp.display()))?;
        let backup = Backup::from_bytes(&bytes).context("the downloaded backup is not intact")?;
        std::fs::rename(&tmp, &args.out)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), args.out.display()))?;
        sync_parent(&args.out)?;
        anyhow::Ok((backup, bytes.len()))
    }
    .await;
    let (backup, size) = match saved {
        Ok(saved) => saved,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
    };
    let header = &backup.header;
    if args.json {
        let summary = json!({
            "path": args.out,
            "node_id": header.node_id,
            "applied_index": header.applied_index,
            "applied_term": header.applied_term,
            "taken_at": header.taken_at,
            "bytes": size,
            "state_digest": header.state_digest,
            "ganymede_version": header.ganymede_version,
        });
        crate::out!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        crate::out!(
            "saved {} ({size} bytes, mode 0600): node {}'s state at applied index {} (term {}), {}",
            args.out.display(),
            header.node_id,
            header.applied_index,
            header.applied_term,
            header.state_digest,
        );
    }
    Ok(())
}

/// A fresh name in `path`'s directory, so that the final rename is atomic.
fn temporary_beside(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("--out {} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync directory {}", parent.display()))
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let mut config = crate::config::load(args.config.as_deref(), std::env::vars(), &args.sets)?;
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    let others: Vec<String> = config
        .initial_members
        .keys()
        .filter(|id| **id != config.node_id)
        .map(u64::to_string)
        .collect();
    if !others.is_empty() {
        anyhow::bail!(
            "cluster.initial_members lists node(s) {}: a restore seeds a one-node cluster; list only this node \
             (or none), start it, then add the other replicas with `ganymede cluster add`",
            others.join(", ")
        );
    }
    // The membership the new cluster starts with names this node as a founding cluster
    // would: its `initial_members` entry, else its advertised (or bound) addresses.
    let node = match config.initial_members.get(&config.node_id) {
        Some(member) => HubNode {
            raft_addr: member.raft_addr.clone(),
            api_addr: member.api_addr.clone(),
        },
        None => {
            if config.advertise_raft.is_none() && config.raft_bind.port() == 0 {
                anyhow::bail!("hub.raft_bind has port 0: set hub.advertise_raft, the address peers will use");
            }
            // The membership would name an address no peer can dial, for ever.
            if config.advertise_raft.is_none() && config.raft_bind.ip().is_unspecified() {
                anyhow::bail!(
                    "hub.raft_bind {} is a wildcard address: set hub.advertise_raft, the address peers will use",
                    config.raft_bind
                );
            }
            if config.advertise_api.is_none() && config.api_bind.ip().is_unspecified() {
                anyhow::bail!(
                    "hub.api_bind {} is a wildcard address: set hub.advertise_api, the address peers and edges will use",
                    config.api_bind
                );
            }
            HubNode {
                raft_addr: config
                    .advertise_raft
                    .clone()
                    .unwrap_or_else(|| config.raft_bind.to_string()),
                api_addr: config
                    .advertise_api
                    .clone()
                    .unwrap_or_else(|| config.api_bind.to_string()),
            }
        }
    };

    let bytes = std::fs::read(&args.from).with_context(|| format!("cannot read {}", args.from.display()))?;
    let backup = Backup::from_bytes(&bytes).with_context(|| format!("{} cannot be restored", args.from.display()))?;
    let restored = ganymede_raft::restore(&backup, config.node_id, node.clone(), &config.data_dir)
        .await
        .context("restore failed")?;
    let header = &backup.header;
    if args.json {
        let summary = json!({
            "data_dir": restored.data_dir,
            "node_id": restored.node_id,
            "raft_addr": node.raft_addr,
            "api_addr": node.api_addr,
            "applied_index": restored.applied_index,
            "state_digest": restored.state_digest,
            "from_node_id": header.node_id,
            "from_applied_term": header.applied_term,
            "users": restored.users,
            "groups": restored.groups,
            "services": restored.services,
            "tokens": restored.tokens,
            "active_servers": restored.active_servers,
        });
        crate::out!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    crate::out!(
        "restored {} into {} as node {} (raft {}, api {}), the only member of a new cluster",
        args.from.display(),
        restored.data_dir.display(),
        restored.node_id,
        node.raft_addr,
        node.api_addr,
    );
    crate::out!(
        "  node {}'s state at applied index {}: {} users, {} groups, {} services, {} tokens; {}",
        header.node_id,
        restored.applied_index,
        restored.users,
        restored.groups,
        restored.services,
        restored.tokens,
        restored.state_digest,
    );
    if restored.active_servers > 0 {
        crate::out!(
            "  {} server(s) were running in the old cluster: the new one will mark them failed",
            restored.active_servers
        );
    }
    crate::out!("start its hub with this configuration, then add replicas with `ganymede cluster add`");
    Ok(())
}
