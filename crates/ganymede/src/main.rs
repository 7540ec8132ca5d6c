//! The `ganymede` binary: parses arguments, sets up logging, and hands over to the
//! subcommand. The work lives in the library crates.

mod admin_cli;
mod backup;
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
        /// Log lines for people (`human`) or one JSON object per line (`json`); overrides
        /// `hub.log_format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Run one edge proxy (routes users' traffic; stateless, follows the hubs).
    Edge {
        /// The TOML configuration file (see ops/edge.example.toml); optional.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one configuration key, e.g. `--set edge.bind=127.0.0.1:8010`; repeatable.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        sets: Vec<String>,
        /// Log lines for people (`human`) or one JSON object per line (`json`); overrides
        /// `edge.log_format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Inspect or change the cluster's membership through any hub replica.
    Cluster {
        #[command(flatten)]
        target: cluster_cli::Target,
        #[command(subcommand)]
        action: cluster_cli::Action,
    },
    /// Issue, list and revoke users' API tokens through any hub replica.
    Token {
        #[command(flatten)]
        target: cluster_cli::Target,
        #[command(subcommand)]
        action: admin_cli::TokenAction,
    },
    /// Create and list users, make them admins, through any hub replica.
    User {
        #[command(flatten)]
        target: cluster_cli::Target,
        #[command(subcommand)]
        action: admin_cli::UserAction,
    },
    /// Print the audit record (every committed change and refused request: who, what,
    /// from where); `--follow` keeps streaming, `--since` resumes.
    Events(admin_cli::EventsArgs),
    /// Save a consistent copy of the whole replicated state (mode 0600: it holds token
    /// hashes and the cluster secret) through any live hub replica.
    Backup(backup::BackupArgs),
    /// Seed a new replica's data directory from a backup (offline): started, it is a new
    /// one-node cluster with the backup's state.
    Restore(backup::RestoreArgs),
    /// Run a whole system on this machine: one hub, one edge on :8000, JupyterLab
    /// (installed into ./.venv on first run) started by the local spawner.
    Dev(dev::DevArgs),
    /// Create the cluster CA (once) and a certificate signed by it, for TLS.
    Certs(certs::CertsArgs),
    /// List every configuration key with the environment variable that overrides it.
    ConfigKeys,
}

/// How a hub or an edge writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Installs the process's logger: `filter` (unless `RUST_LOG` says otherwise), in
/// `format`. `what` names the setting `filter` came from, for the error.
pub fn init_logging(filter: &str, format: LogFormat, what: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .with_context(|| format!("{what} is not a valid log filter"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    match format {
        LogFormat::Human => builder.init(),
        // Spans (the node, the request) ride along as fields of each line.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
    Ok(())
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
            Commands::Hub {
                config,
                sets,
                log_format,
            } => {
                let config = config::load(config.as_deref(), std::env::vars(), &sets)?;
                init_logging(&config.log, log_format.unwrap_or(config.log_format), "hub.log")?;
                let secret = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
                hub::run(config, secret("GANYMEDE_ADMIN_TOKEN"), secret("CONFIGPROXY_AUTH_TOKEN")).await
            }
            Commands::Edge {
                config,
                sets,
                log_format,
            } => {
                let (config, log, format) = edge_config::load(config.as_deref(), std::env::vars(), &sets)?;
                init_logging(&log, log_format.unwrap_or(format), "edge.log")?;
                let token = std::env::var("CONFIGPROXY_AUTH_TOKEN")
                    .ok()
                    .filter(|token| !token.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("CONFIGPROXY_AUTH_TOKEN must be set: the edge presents it to the hubs")
                    })?;
                edge::run(config, token).await
            }
            Commands::Cluster { target, action } => cluster_cli::run(target, action).await,
            Commands::Token { target, action } => admin_cli::token(target, action).await,
            Commands::User { target, action } => admin_cli::user(target, action).await,
            Commands::Events(args) => admin_cli::events(args).await,
            Commands::Backup(args) => backup::backup(args).await,
            Commands::Restore(args) => backup::restore(args).await,
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

/// `println!` for the commands' output, without its panic when the reader has gone
/// (`ganymede events --follow | head`): a closed pipe ends the command quietly, as it
/// ends other Unix tools.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}
pub(crate) use out;

pub(crate) fn write_stdout(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ganymede: cannot write the output: {err}");
        std::process::exit(1);
    }
}
