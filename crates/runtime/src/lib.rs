//! omnistream's shared runtime. A service is a pure [`Processor`]; this crate does the Kafka work
//! once, properly: consume-transform-produce in Kafka transactions (one `transactional.id` per
//! instance plus the consumer group metadata, KIP-447), per-partition state restored from a
//! compacted changelog before a partition is processed, dedupe of `event_id`s, a dead-letter
//! topic, the admin server (health, readiness, metrics), JSON logs and graceful shutdown.

pub mod admin;
pub mod auth;
pub mod changelog;
pub mod config;
mod context;
mod driver;
mod engine;
pub mod erasure;
mod handoff;
pub mod kafka;
pub mod logging;
pub mod lookup;
mod lookup_reader;
pub mod memory;
pub mod metrics;
pub mod processor;
pub mod rate_limit;
mod record_compression;
pub mod record_limits;
mod restore;
pub mod rules_file;
mod run;
pub mod server;
mod store;
pub mod testing;
mod topic_codec;
pub mod trace;

pub use config::{IdsLayout, RuntimeArgs, RuntimeConfig, ServiceInfo};
pub use engine::CAUSE_HEADER;
pub use kafka::KafkaArgs;
pub use lookup::{LookupInput, LookupScope, Lookups};
pub use omnistream_model::OutputRecord;
pub use processor::{Output, Partitioning, Processor};
pub use rules_file::{RulesError, read_rules};
pub use run::run_service;
pub use store::{Entry, Footprint, event_id_hash};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

/// Services allocate per record (decoded values, keys, outputs); mimalloc is several times
/// cheaper than glibc's allocator on that path. Its `override` feature makes it the C `malloc`
/// too, so librdkafka's per-message allocations take the same path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Why a service stops with a non-zero exit code.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] kafka::ConfigError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("fatal transactional error (fenced or the like): {0}")]
    Fatal(KafkaError),
    #[error(transparent)]
    TopicCodec(#[from] topic_codec::TopicCodecError),
    #[error("table or broadcast input: {0}")]
    Lookup(String),
    #[error("state handoff: {0}")]
    Handoff(String),
    #[error("state restore failed: {0}")]
    Restore(String),
    #[error(
        "topic {0} does not exist (the broker creates none by itself): create the service's topics first, e.g. `omni topics create`"
    )]
    MissingTopic(String),
    #[error("topic {side} has {sides} partitions and the input {input} {events}: they must be equal")]
    NotCoPartitioned { side: String, sides: usize, input: String, events: usize },
    #[error("schema registry: {0}")]
    SchemaRegistry(#[from] omnistream_schema_registry::RegistryError),
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
    #[error("the last commit before stopping had an unknown outcome; a restart restores from Kafka")]
    UnknownOutcome,
    #[error("{0} panicked: {1}")]
    Panicked(&'static str, String),
}

/// The transactional producer of a service instance, its changelog's batches in their own codec.
pub(crate) struct TxnProducer {
    /// Declared first, so dropped before the client it belongs to.
    _changelog_codec: topic_codec::TopicCodec,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl TxnProducer {
    fn create(client: &ClientConfig, config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let producer: ThreadedProducer<DefaultProducerContext> = client.create()?;
        // Before anything is sent: the codec of a topic's first handle is the one librdkafka keeps.
        let changelog_codec = topic_codec::TopicCodec::set(
            producer.client().native_client(),
            &config.changelog_topic,
            config.changelog_compression,
        )?;
        Ok(Self { _changelog_codec: changelog_codec, producer })
    }
}

impl std::ops::Deref for TxnProducer {
    type Target = ThreadedProducer<DefaultProducerContext>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

/// How many times a commit that timed out is called again before its outcome counts as unknown.
pub const COMMIT_RESUMES: u32 = 2;

/// Commits the producer's open transaction; a call that times out is called again, at most
/// `resumes` times (each resume told to `on_resume` first and ticking liveness: the call came
/// back), every call guarded by `health` (`Health::guard_call`) for twice `timeout` plus
/// `call_margin` (rust-rdkafka flushes for up to `timeout`, then commits for up to `timeout`).
/// librdkafka goes on with a timed-out commit in the background and a new call resumes it
/// ("retry call to resume"): its EndTxn request follows the coordinator to the broker that takes
/// over. Giving up at once instead (a new producer, whose `init_transactions` aborts the
/// transaction) let Kafka 4.1's coordinator failover commit a transaction on some partitions and
/// abort it on others (docs/runtime.md, "Transactions the brokers commit in part").
pub fn commit_resuming<P: Producer<C>, C: rdkafka::producer::ProducerContext>(
    producer: &P,
    health: &server::Health,
    timeout: std::time::Duration,
    call_margin: std::time::Duration,
    resumes: u32,
    mut on_resume: impl FnMut(&KafkaError),
) -> Result<(), KafkaError> {
    let mut resumed = 0;
    loop {
        let error = match health.guard_call("commit_transaction", timeout * 2 + call_margin, || {
            producer.commit_transaction(timeout)
        }) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let resumable = match &error {
            KafkaError::Transaction(rd) => rd.is_retriable() && !rd.is_fatal() && !rd.txn_requires_abort(),
            // rust-rdkafka's flush before the commit: calling again waits for it again.
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => true,
            _ => false,
        };
        if !resumable || resumed == resumes {
            return Err(error);
        }
        resumed += 1;
        health.tick();
        on_resume(&error);
    }
}

/// How long creating the transactional producer keeps trying while the coordinator cannot
/// answer; each attempt (at most the transaction timeout) ticks liveness. A coordinator whose
/// transaction log is below its min ISR answers nothing else until a replica catches up: at
/// 90 s, services on a loaded machine exited and restarted again and again (`make chaos`), each
/// restart a rebalance of the service's other instances. The consumer's `max.poll.interval.ms`
/// (600 s, `run.rs`) leaves room for it and a restore: the member keeps its partitions.
const INIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(240);

/// `init_transactions` errors no wait cures: the configuration or the broker's refusal.
const PERMANENT_INIT_ERRORS: [RDKafkaErrorCode; 6] = [
    RDKafkaErrorCode::InvalidTransactionTimeout,
    RDKafkaErrorCode::UnsupportedFeature,
    RDKafkaErrorCode::NotConfigured,
    RDKafkaErrorCode::InvalidArgument,
    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
];

/// Creates the instance's transactional producer and initializes transactions, which fences an
/// earlier producer with the same `transactional.id` and aborts its open transaction.
pub(crate) fn create_transactional_producer(
    config: &RuntimeConfig,
    health: &server::Health,
) -> Result<TxnProducer, RuntimeError> {
    let transaction_timeout = config.transaction_timeout.as_millis();
    let mut client = config.kafka.client_config()?;
    client
        .set("transactional.id", config.transactional_id())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("transaction.timeout.ms", transaction_timeout.to_string())
        // Must stay below the transaction timeout (librdkafka refuses otherwise).
        .set("message.timeout.ms", (transaction_timeout * 9 / 10).to_string())
        .set("linger.ms", "5")
        .set("compression.type", config.compression.codec())
        .set("queue.buffering.max.messages", "1000000")
        // librdkafka buffers up to 1 GiB by default; large outputs (a profile per event) filled it
        // faster than the broker took them. Beyond 32 MiB, sending waits (backpressure): more
        // did not add throughput here, only memory.
        .set("queue.buffering.max.kbytes", "32768")
        .set("partitioner", "murmur2_random")
        // The coordinator answers CONCURRENT_TRANSACTIONS while it writes the previous
        // transaction's markers; the default 100 ms backoff would add that much to every commit.
        .set("retry.backoff.ms", "5")
        .set("retry.backoff.max.ms", "100");
    // A coordinator moving, loading or still writing the last transaction's markers (often the
    // reason for a reset, and usual while a broker restarts) answers with errors worth waiting
    // out; a producer left in a fatal state is replaced. Only a misconfiguration exits at once.
    let deadline = std::time::Instant::now() + INIT_DEADLINE;
    let mut attempt = 0_u32;
    let mut producer = TxnProducer::create(&client, config)?;
    loop {
        health.tick();
        let error = match producer.init_transactions(config.transaction_timeout) {
            Ok(()) => return Ok(producer),
            Err(error) => error,
        };
        let KafkaError::Transaction(rd) = &error else { return Err(RuntimeError::Fatal(error)) };
        if PERMANENT_INIT_ERRORS.contains(&rd.code()) || std::time::Instant::now() >= deadline {
            return Err(RuntimeError::Fatal(error));
        }
        attempt += 1;
        tracing::warn!(%error, attempt, fatal = rd.is_fatal(), "init_transactions failed; trying again");
        std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt.min(6))));
        if rd.is_fatal() {
            producer = TxnProducer::create(&client, config)?;
        }
    }
}
