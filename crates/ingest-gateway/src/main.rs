//! `ingest-gateway`: touchpoint events over HTTP into Kafka (SPEC 5).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use omnistream_ingest_gateway::{Gateway, GatewayArgs, router};
use omnistream_runtime::server::{self, admin_router, run_process};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::warn;

fn main() -> ExitCode {
    run_process("ingest-gateway", serve(GatewayArgs::parse()))
}

async fn serve(args: GatewayArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let gateway = Arc::new(Gateway::new(&args, &mut registry)?);
    if gateway.is_open() {
        warn!("no API keys configured (GATEWAY_API_KEYS): anyone who reaches the gateway can publish");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(server::cancel_on_signal(shutdown.clone(), args.shutdown.grace()));
    tokio::spawn(gateway.clone().watch_kafka(Duration::from_secs(1), shutdown.clone()));

    let admin = admin_router(Arc::new(registry), gateway.health.clone());
    let public = router(gateway.clone(), args.max_body_bytes).merge(admin.clone());
    server::serve_http(public, args.http_addr, admin, args.admin_addr, shutdown).await?;
    // Whatever a request could not wait for is flushed before exiting.
    tokio::task::spawn_blocking(move || gateway.flush(Duration::from_secs(10))).await?;
    Ok(())
}
