//! Reads the derived topics into the [`Store`]: one consumer per topic (read_committed, every
//! partition from the beginning, no consumer group: every replica holds every customer). The API
//! is ready once every partition of every topic reached its end once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use omnistream_runtime::kafka::ReadToEndContext;
use omnistream_runtime::server::Health;
use omnistream_schema_registry::SchemaLearner;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{Source, Store, decode};

/// How often each topic's lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// One topic's metrics.
#[derive(Debug, Clone, Default)]
pub struct TopicMetrics {
    pub records: Counter,
    pub undecodable: Counter,
    pub lag: Gauge,
}

/// Counts topics still catching up; readiness follows it.
#[derive(Debug)]
pub struct CatchUp {
    remaining: AtomicUsize,
    health: Arc<Health>,
}

impl CatchUp {
    pub fn new(topics: usize, health: Arc<Health>) -> Self {
        Self { remaining: AtomicUsize::new(topics), health }
    }

    fn topic_caught_up(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            info!("caught up with every derived topic: ready");
            self.health.set_ready(true);
        }
    }
}

/// Everything one topic's reader needs.
#[derive(Debug)]
pub struct TopicReader {
    pub source: Source,
    pub topic: String,
    pub config: ClientConfig,
    pub store: Arc<Store>,
    pub metrics: TopicMetrics,
    pub catch_up: Arc<CatchUp>,
    pub health: Arc<Health>,
    /// Learns the schema ids of records in the Confluent wire format.
    pub schemas: Arc<SchemaLearner>,
}

impl TopicReader {
    /// Reads until `shutdown`, on the calling thread.
    pub fn run(self, shutdown: &CancellationToken) -> Result<(), KafkaError> {
        let consumer: BaseConsumer<ReadToEndContext> = self
            .config
            .clone()
            // No group is joined (partitions are assigned) and nothing is committed; librdkafka
            // still wants a group id for an assignment.
            .set("group.id", "customer-api")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create_with_context(ReadToEndContext { reader: "customer-api" })?;
        let partitions = self.wait_for_partitions(&consumer, shutdown);
        if partitions.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            assignment.add_partition_offset(&self.topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        info!(topic = %self.topic, partitions = partitions.len(), "reading from the beginning");
        let mut at_end_once: HashSet<i32> = HashSet::new();
        let mut caught_up = false;
        let mut last_lag: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            self.health.tick();
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => {
                    // A record of a schema id not known yet holds this topic's reader (the views
                    // of the other topics go on) until the registry tells it; never skipped.
                    if let Some(bytes) = message.payload()
                        && !self.schemas.wait_until_ready(bytes, || {
                            self.health.tick();
                            !shutdown.is_cancelled()
                        })
                    {
                        break;
                    }
                    self.apply(&message);
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end_once.insert(partition);
                    if !caught_up && at_end_once.len() == partitions.len() {
                        caught_up = true;
                        info!(topic = %self.topic, "caught up");
                        self.catch_up.topic_caught_up();
                    }
                }
                Some(Err(error)) => warn!(topic = %self.topic, error = %error, "consumer error"),
            }
            if last_lag.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
                last_lag = Some(Instant::now());
                // Unknown (the broker does not answer) keeps the last value rather than 0.
                if let Some(lag) = self.lag(&consumer, &partitions) {
                    self.metrics.lag.set(lag);
                }
            }
        }
        Ok(())
    }

    fn apply(&self, message: &rdkafka::message::BorrowedMessage<'_>) {
        self.metrics.records.inc();
        let Some(Ok(customer_id)) = message.key_view::<str>() else {
            self.metrics.undecodable.inc();
            warn!(topic = %self.topic, offset = message.offset(), "record without a UTF-8 customer id key");
            return;
        };
        let record = match message.payload() {
            None => None,
            Some(bytes) => match decode(self.source, bytes) {
                Ok(decoded) => Some(decoded),
                Err(error) => {
                    self.metrics.undecodable.inc();
                    warn!(topic = %self.topic, partition = message.partition(), offset = message.offset(), error, "record does not decode; skipped");
                    return;
                }
            },
        };
        self.store.apply(self.source, customer_id, record);
    }

    /// The topic's partitions, waiting while it does not exist yet.
    fn wait_for_partitions(
        &self,
        consumer: &BaseConsumer<ReadToEndContext>,
        shutdown: &CancellationToken,
    ) -> Vec<i32> {
        let mut warned = false;
        while !shutdown.is_cancelled() {
            self.health.tick();
            let partitions: Vec<i32> = consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
                .ok()
                .and_then(|metadata| {
                    metadata
                        .topics()
                        .first()
                        .filter(|t| t.error().is_none())
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                })
                .unwrap_or_default();
            if !partitions.is_empty() {
                return partitions;
            }
            if !warned {
                warn!(topic = %self.topic, "topic not found (yet); waiting for it");
                warned = true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Vec::new()
    }

    /// Records between each partition's position and its end, summed (transaction markers
    /// included: about one per partition at rest); `None` when an end cannot be read.
    fn lag(&self, consumer: &BaseConsumer<ReadToEndContext>, partitions: &[i32]) -> Option<i64> {
        let positions = consumer.position().ok()?;
        let mut lag = 0;
        for partition in partitions {
            let (_, high) =
                consumer.fetch_watermarks(&self.topic, *partition, Duration::from_secs(1)).ok()?;
            let position = positions
                .find_partition(&self.topic, *partition)
                .and_then(|e| e.offset().to_raw())
                .filter(|offset| *offset >= 0)
                .unwrap_or(0);
            lag += (high - position).max(0);
        }
        Some(lag)
    }
}
