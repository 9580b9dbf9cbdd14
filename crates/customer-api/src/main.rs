//! `customer-api`: one customer across the derived topics, over HTTP (SPEC 6).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use omnistream_customer_api::access::Access;
use omnistream_customer_api::changes::ChangeFeed;
use omnistream_customer_api::materialize::{
    CatchUp, TopicReader, Update, resume_positions, tombstone_retention, write_updates,
};
use omnistream_customer_api::store::Store;
use omnistream_customer_api::{Api, ApiArgs, ApiMetrics, router};
use omnistream_runtime::rate_limit::RateLimit;
use omnistream_runtime::server::{self, Health, admin_router, run_process};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Updates the readers may hold for the writer: at most one full batch waits.
const PENDING_UPDATES: usize = 2_000;

fn main() -> ExitCode {
    run_process("customer-api", serve(ApiArgs::parse()))
}

/// The store's directory: the one given, or a temporary one removed when the API stops.
struct StoreDir {
    path: PathBuf,
    temporary: bool,
}

impl StoreDir {
    fn new(given: Option<PathBuf>) -> anyhow::Result<Self> {
        let (path, temporary) = match given {
            Some(path) => (path, false),
            None => {
                let path = std::env::temp_dir().join(format!("customer-api-{}", std::process::id()));
                warn!(path = %path.display(), "no --store-dir: a temporary store, read from the beginning of the topics at every start");
                (path, true)
            }
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, temporary })
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn serve(args: ApiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate_limit.is_finite() && args.rate_limit >= 0.0,
        "--rate-limit must be requests per second, 0 or more (0 turns it off); got {}",
        args.rate_limit
    );
    anyhow::ensure!(
        args.rate_limit == 0.0 || args.rate_limit_burst >= 1.0,
        "--rate-limit-burst must be at least 1; got {}",
        args.rate_limit_burst
    );
    let access = Access::new(
        args.api_keys.iter().map(String::as_str),
        args.api_key_scopes.iter().map(String::as_str),
        RateLimit { per_second: args.rate_limit, burst: args.rate_limit_burst },
    )?;
    if access.is_open() {
        warn!("no CUSTOMER_API_KEYS: anyone who can reach the API reads every customer");
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(ApiMetrics::register(&mut registry));
    let health = Arc::new(Health::new("catching up with the derived topics"));
    let store_dir = StoreDir::new(args.store_dir.clone())?;
    let store = Arc::new(Store::open(
        &store_dir.path.join("customer-api.redb"),
        args.store_cache_mib << 20,
        args.ledger_entries,
    )?);
    let shutdown = CancellationToken::new();
    tokio::spawn(server::cancel_on_signal(shutdown.clone(), args.shutdown.grace()));

    let client = args.kafka.client_config()?;
    let schemas = Arc::new(args.schema_registry.learner()?);
    let topics = args.topics();
    let topic_names: Vec<&str> = topics.iter().map(|(_, topic)| *topic).collect();
    let retention = tombstone_retention(&client, &topic_names).await;
    let resume = {
        let (store, client, health, stop) = (store.clone(), client.clone(), health.clone(), shutdown.clone());
        let names: Vec<String> = topic_names.iter().map(|t| (*t).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            resume_positions(&store, &client, &names, retention, &health, &stop)
        })
        .await??
    };

    let catch_up = CatchUp::new(topics.len(), health.clone());
    let (updates, pending) = std::sync::mpsc::sync_channel::<Update>(PENDING_UPDATES);
    let changes = ChangeFeed::new(shutdown.clone());
    let writer = {
        let (store, stop, changes) = (store.clone(), shutdown.clone(), changes.clone());
        tokio::task::spawn_blocking(move || {
            let result = write_updates(&store, &pending, &catch_up, &changes);
            // A store that cannot be written stops the API: an orchestrator restarts it.
            stop.cancel();
            result
        })
    };
    let mut readers = Vec::new();
    for (source, topic) in topics {
        let reader = TopicReader {
            source,
            topic: topic.to_owned(),
            config: client.clone(),
            resume: resume
                .iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, partition), next)| (*partition, *next))
                .collect(),
            updates: updates.clone(),
            metrics: metrics.topic(topic),
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
    // The writer stops once every reader has dropped its sender.
    drop(updates);
    tokio::spawn({
        let (store, metrics, stop) = (store.clone(), metrics.clone(), shutdown.clone());
        async move {
            while !stop.is_cancelled() {
                match store.customers() {
                    Ok(customers) => metrics.set_customers(customers),
                    Err(error) => warn!(%error, "cannot count the customers held"),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });

    let registry = Arc::new(registry);
    let admin = admin_router(registry, health.clone());
    let defaults = omnistream_customer_api::ReachabilityDefaults::from_args(&args);
    let api = Arc::new(Api { access, store, metrics, defaults, changes });
    let public = router(api).merge(admin.clone());
    let served = server::serve_http(public, args.http_addr, admin, args.admin_addr, shutdown.clone()).await;
    // A port that cannot be bound (or a server that failed) must stop the topic readers too.
    shutdown.cancel();
    served?;
    for reader in readers {
        reader.await?.context("reading a derived topic")?;
    }
    writer.await?.context("writing the store")?;
    Ok(())
}
