//! `ganymede edge`: logging, signals, and the edge's run loop.

use anyhow::Context;
use ganymede_edge::EdgeConfig;
use tokio_util::sync::CancellationToken;

pub async fn run(config: EdgeConfig, log: String, token: String) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log))
        .context("edge.log is not a valid log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(crate::hub::stop_on_signal(shutdown.clone()));
    let result = ganymede_edge::run(config, token, shutdown.clone()).await;
    shutdown.cancel();
    let _ = signals.await;
    result.context("edge failed")
}
