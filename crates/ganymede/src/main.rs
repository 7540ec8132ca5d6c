//! The `ganymede` binary: parses arguments, sets up logging, and hands over to the
//! subcommand. The work lives in the library crates.

mod certs;
mod cluster_cli;
mod config;
mod dev;
mod edge;
mod edge_config;
mod hub;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ganymede",
    version,
    about = "A highly available control plane for multi-user Jupyter"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one hub replica.
    Hub {
        /// The TOML configuration file (see ops/hub.example.toml); optional.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one configuration key, e.g. `--set hub.node_id=2`; repeatable.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Run one edge proxy (routes users' traffic; stateless, follows the hubs).
    Edge {
        /// The TOML configuration file (see ops/edge.example.toml); optional.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one configuration key, e.g. `--set edge.bind=127.0.0.1:8010`; repeatable.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Inspect or change the cluster's membership through any hub replica.
    Cluster {
        #[command(flatten)]
        target: cluster_cli::Target,
        #[command(subcommand)]
        action: cluster_cli::Action,
    },
    /// Run a whole system on this machine: one hub, one edge on :8000, JupyterLab
    /// (installed into ./.venv on first run) started by the local spawner.
    Dev(dev::DevArgs),
    /// Create the cluster CA (once) and a certificate signed by it, for TLS.
    Certs(certs::CertsArgs),
    /// List every configuration key with the environment variable that overrides it.
    ConfigKeys,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Only ring is compiled in; installing it explicitly keeps any later crate that
    // enables another provider from making rustls' choice ambiguous (a runtime panic).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ganymede: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Hub { config, sets } => {
                let config = config::load(config.as_deref(), std::env::vars(), &sets)?;
                let secret = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
                hub::run(config, secret("GANYMEDE_ADMIN_TOKEN"), secret("CONFIGPROXY_AUTH_TOKEN")).await
            }
            Commands::Edge { config, sets } => {
                let (config, log) = edge_config::load(config.as_deref(), std::env::vars(), &sets)?;
                let token = std::env::var("CONFIGPROXY_AUTH_TOKEN")
                    .ok()
                    .filter(|token| !token.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("CONFIGPROXY_AUTH_TOKEN must be set: the edge presents it to the hubs")
                    })?;
                edge::run(config, log, token).await
            }
            Commands::Cluster { target, action } => cluster_cli::run(target, action).await,
            Commands::Certs(args) => certs::run(args),
            Commands::Dev(args) => dev::run(args).await,
            Commands::ConfigKeys => {
                for (key, var) in config::keys().into_iter().chain(edge_config::keys()) {
                    println!("{key:40} {var}");
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ganymede: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
