//! `customer-api`: one customer across the derived topics, over HTTP (SPEC 6).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use omnistream_customer_api::materialize::{CatchUp, TopicReader};
use omnistream_customer_api::store::Store;
use omnistream_customer_api::{Api, ApiArgs, ApiMetrics, router};
use omnistream_runtime::server::{self, Health, admin_router, run_process};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    run_process("customer-api", serve(ApiArgs::parse()))
}

async fn serve(args: ApiArgs) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(ApiMetrics::register(&mut registry));
    let health = Arc::new(Health::new("catching up with the derived topics"));
    let store = Arc::new(Store::new(args.ledger_entries));
    let shutdown = CancellationToken::new();
    tokio::spawn(server::cancel_on_signal(shutdown.clone(), args.shutdown.grace()));

    let client = args.kafka.client_config()?;
    let schemas = Arc::new(args.schema_registry.learner()?);
    let topics = args.topics();
    let catch_up = Arc::new(CatchUp::new(topics.len(), health.clone()));
    let mut readers = Vec::new();
    for (source, topic) in topics {
        let reader = TopicReader {
            source,
            topic: topic.to_owned(),
            config: client.clone(),
            store: store.clone(),
            metrics: metrics.topic(topic),
            catch_up: catch_up.clone(),
            health: health.clone(),
            schemas: schemas.clone(),
        };
        let stop = shutdown.clone();
        readers.push(tokio::task::spawn_blocking(move || {
            let result = reader.run(&stop);
            // A reader that cannot read stops the API: an orchestrator restarts it.
            stop.cancel();
            result
        }));
    }
    tokio::spawn({
        let (store, metrics, stop) = (store.clone(), metrics.clone(), shutdown.clone());
        async move {
            while !stop.is_cancelled() {
                metrics.set_customers(store.len());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });

    let registry = Arc::new(registry);
    let admin = admin_router(registry, health.clone());
    let defaults = omnistream_customer_api::ReachabilityDefaults::from_args(&args);
    let api = Arc::new(Api { store, metrics, defaults });
    let public = router(api).merge(admin.clone());
    let served = server::serve_http(public, args.http_addr, admin, args.admin_addr, shutdown.clone()).await;
    // A port that cannot be bound (or a server that failed) must stop the topic readers too.
    shutdown.cancel();
    served?;
    for reader in readers {
        reader.await?.context("reading a derived topic")?;
    }
    Ok(())
}
