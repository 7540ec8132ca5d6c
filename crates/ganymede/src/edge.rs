//! `ganymede edge`: signals and the edge's run loop.

use anyhow::Context;
use ganymede_edge::EdgeConfig;
use tokio_util::sync::CancellationToken;

pub async fn run(config: EdgeConfig, token: String) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(crate::hub::stop_on_signal(shutdown.clone()));
    let result = ganymede_edge::run(config, token, shutdown.clone()).await;
    shutdown.cancel();
    let _ = signals.await;
    result.context("edge failed")
}
