//! `ingest-gateway`: touchpoint events over HTTP into Kafka (SPEC 5).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use omnistream_ingest_gateway::{Gateway, GatewayArgs, router};
use omnistream_runtime::logging::{self, LogFormat};
use omnistream_runtime::server::{self, admin_router};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    logging::init(LogFormat::Json);
    let args = GatewayArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => {
            info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = format!("{e:#}"), "stopping on error");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: GatewayArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let gateway = Arc::new(Gateway::new(&args, &mut registry)?);
    if gateway.is_open() {
        warn!("no API keys configured (GATEWAY_API_KEYS): anyone who reaches the gateway can publish");
    }
    let registry = Arc::new(registry);
    let shutdown = CancellationToken::new();
    tokio::spawn(server::cancel_on_signal(shutdown.clone()));
    tokio::spawn(gateway.clone().watch_kafka(Duration::from_secs(1), shutdown.clone()));

    let admin = admin_router(registry.clone(), gateway.health.clone());
    let public = router(gateway.clone(), args.max_body_bytes).merge(admin.clone());
    let public_listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("bind {}", args.http_addr))?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("bind {}", args.admin_addr))?;
    info!(
        http = %public_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        topic = %args.events_topic,
        "ingest-gateway listening"
    );
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    // In-flight requests finish (and get their acknowledgements) before the server returns.
    axum::serve(public_listener, public).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await?;
    shutdown.cancel();
    admin_server.await??;
    let gateway_for_flush = gateway.clone();
    tokio::task::spawn_blocking(move || gateway_for_flush.flush(Duration::from_secs(10))).await?;
    Ok(())
}
