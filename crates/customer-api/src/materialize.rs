//! Reads the derived topics into the [`Store`]: one consumer per topic (read_committed, every
//! partition, no consumer group: every replica holds every customer), each handing what it read
//! to one writer that commits batches with their offsets. A restart resumes from the stored
//! offsets when the topics still hold what follows them, and rebuilds from the beginning when
//! not. The API is ready once every partition of every topic reached its end once after start.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use omnistream_runtime::kafka::ReadToEndContext;
use omnistream_runtime::server::Health;
use omnistream_schema_registry::SchemaLearner;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::changes::ChangeFeed;
use crate::store::{Batch, Change, Source, Store, StoreError, incoming};

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

    pub fn topic_caught_up(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            info!("caught up with every derived topic: ready");
            self.health.set_ready(true);
        }
    }
}

/// What a reader hands the writer.
#[derive(Debug)]
pub enum Update {
    /// A record read, and the next offset of its partition.
    Record { topic: Arc<str>, partition: i32, next_offset: i64, change: Change },
    /// The reader reached the end of each of its partitions once: ready when it is stored.
    CaughtUp,
    /// The reader is at the end of this partition now (it read everything the broker holds):
    /// the store is up to date with it as of now (see [`resume_positions`]).
    AtEnd { topic: Arc<str>, partition: i32 },
}

/// Everything one topic's reader needs.
#[derive(Debug)]
pub struct TopicReader {
    pub source: Source,
    pub topic: String,
    pub config: ClientConfig,
    /// Where each partition resumes (the next offset); from the beginning when absent.
    pub resume: FxHashMap<i32, i64>,
    pub updates: SyncSender<Update>,
    pub metrics: TopicMetrics,
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
            // Seven readers prefetch at once: librdkafka's defaults (64 MiB queued, 50 MiB per
            // fetch) would outgrow the store's whole budget while catching up. A full queue
            // then holds fetching back 1 s by default, which halved the catch-up: 20 ms.
            .set("queued.max.messages.kbytes", "1024")
            .set("fetch.max.bytes", "1048576")
            .set("fetch.queue.backoff.ms", "20")
            // A fetch at the end of a partition waits this long on the broker: the end of each
            // partition (readiness) is known within it. The default 500 ms made a restart
            // ready in 1.5 s instead of 0.4 s.
            .set("fetch.wait.max.ms", "100")
            .create_with_context(ReadToEndContext { reader: "customer-api" })?;
        let partitions = self.wait_for_partitions(&consumer, shutdown);
        if partitions.is_empty() {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            let offset = self.resume.get(partition).map_or(Offset::Beginning, |next| Offset::Offset(*next));
            assignment.add_partition_offset(&self.topic, *partition, offset)?;
        }
        consumer.assign(&assignment)?;
        let resumed = partitions.iter().filter(|p| self.resume.contains_key(p)).count();
        info!(topic = %self.topic, partitions = partitions.len(), resumed, "reading");
        let topic: Arc<str> = Arc::from(self.topic.as_str());
        let mut at_end_once: HashSet<i32> = HashSet::new();
        // Partitions whose end the reader reached and that gave no record since.
        let mut at_end: HashSet<i32> = HashSet::new();
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
                    at_end.remove(&message.partition());
                    if let Some(change) = self.change(&message) {
                        let next_offset = message.offset() + 1;
                        let update = Update::Record {
                            topic: topic.clone(),
                            partition: message.partition(),
                            next_offset,
                            change,
                        };
                        if self.updates.send(update).is_err() {
                            break; // the writer stopped: the API stops
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end_once.insert(partition);
                    at_end.insert(partition);
                    if self.updates.send(Update::AtEnd { topic: topic.clone(), partition }).is_err() {
                        break;
                    }
                    if !caught_up && at_end_once.len() == partitions.len() {
                        caught_up = true;
                        info!(topic = %self.topic, "read to the end");
                        if self.updates.send(Update::CaughtUp).is_err() {
                            break;
                        }
                    }
                }
                Some(Err(error)) => warn!(topic = %self.topic, error = %error, "consumer error"),
            }
            if last_lag.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
                last_lag = Some(Instant::now());
                // Unknown (the broker does not answer) keeps the last value rather than 0.
                if let Some(lag) = self.lag(&consumer, &partitions) {
                    self.metrics.lag.set(lag);
                    // The broker answers and nothing came since the end: still up to date.
                    // (librdkafka reports an end once; a reader waiting on the registry, or one
                    // the broker does not answer, sends nothing and its partitions age.)
                    for partition in &at_end {
                        let update = Update::AtEnd { topic: topic.clone(), partition: *partition };
                        if self.updates.send(update).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The record checked and ready to store; `None` (counted, logged) when it cannot be.
    fn change(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Change> {
        self.metrics.records.inc();
        let Some(Ok(customer_id)) = message.key_view::<str>() else {
            self.metrics.undecodable.inc();
            warn!(topic = %self.topic, offset = message.offset(), "record without a UTF-8 customer id key");
            return None;
        };
        let record = match message.payload() {
            None => None,
            Some(bytes) => match incoming(self.source, bytes) {
                Ok(record) => Some(record),
                Err(error) => {
                    self.metrics.undecodable.inc();
                    warn!(topic = %self.topic, partition = message.partition(), offset = message.offset(), error, "record does not decode; skipped");
                    return None;
                }
            },
        };
        Some(Change {
            source: self.source,
            customer_id: customer_id.to_owned(),
            offset: message.offset(),
            record,
        })
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
            // Until a partition yields a record its position is unknown: where it resumed.
            let position = positions
                .find_partition(&self.topic, *partition)
                .and_then(|e| e.offset().to_raw())
                .filter(|offset| *offset >= 0)
                .unwrap_or_else(|| self.resume.get(partition).copied().unwrap_or(0));
            lag += (high - position).max(0);
        }
        Some(lag)
    }
}

/// Changes written per transaction at most: a transaction's pages stay in memory until it
/// commits.
const MAX_BATCH: usize = 2_000;
/// How often a commit is made durable (fsync): one per transaction made the disk's flush time
/// the catch-up's limit. A crash loses at most this much, offsets included, and reads it again.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// Writes what the readers read, in batches with their offsets, until every reader has
/// stopped; a topic counts as caught up once what its reader read to the end is stored.
pub fn write_updates(
    store: &Store,
    updates: &Receiver<Update>,
    catch_up: &CatchUp,
    changes: &ChangeFeed,
) -> Result<(), StoreError> {
    let mut last_durable = Instant::now();
    let mut pending_durable = false;
    loop {
        let first = match updates.recv_timeout(Duration::from_millis(200)) {
            Ok(update) => update,
            Err(RecvTimeoutError::Timeout) => {
                if pending_durable {
                    store.write(&Batch::default(), true)?;
                    (last_durable, pending_durable) = (Instant::now(), false);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                // A clean stop leaves everything read on disk.
                return if pending_durable { store.write(&Batch::default(), true) } else { Ok(()) };
            }
        };
        let mut batch = Batch::default();
        let mut caught_up = 0;
        let mut next = Some(first);
        while let Some(update) = next.take() {
            match update {
                Update::Record { topic, partition, next_offset, change } => {
                    batch.changes.push(change);
                    batch.positions.insert((topic, partition), next_offset);
                }
                Update::CaughtUp => caught_up += 1,
                Update::AtEnd { topic, partition } => {
                    batch.at_end.insert((topic, partition), chrono::Utc::now().timestamp_millis());
                }
            }
            if batch.changes.len() < MAX_BATCH {
                next = updates.try_recv().ok();
            }
        }
        let durable = last_durable.elapsed() >= DURABLE_EVERY;
        store.write(&batch, durable)?;
        changes.committed(batch.changes.iter().map(|change| change.customer_id.as_str()));
        if durable {
            (last_durable, pending_durable) = (Instant::now(), false);
        } else {
            pending_durable = true;
        }
        for _ in 0..caught_up {
            catch_up.topic_caught_up();
        }
    }
}

/// Kafka's default `delete.retention.ms`: how long a compacted topic keeps a tombstone.
const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The shortest time the compacted `topics` keep a tombstone (`delete.retention.ms`): a store
/// last written longer ago may have missed one, an erasure among them, and is rebuilt.
pub async fn tombstone_retention(config: &ClientConfig, topics: &[&str]) -> Duration {
    let admin: AdminClient<DefaultClientContext> = match config.create() {
        Ok(admin) => admin,
        Err(error) => {
            warn!(%error, "cannot ask the topics' delete.retention.ms; assuming Kafka's default");
            return DEFAULT_TOMBSTONE_RETENTION;
        }
    };
    let resources: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = match admin.describe_configs(&resources, &options).await {
        Ok(results) => results,
        Err(error) => {
            warn!(%error, "cannot ask the topics' delete.retention.ms; assuming Kafka's default");
            return DEFAULT_TOMBSTONE_RETENTION;
        }
    };
    results
        .into_iter()
        .filter_map(Result::ok)
        .filter(|resource| {
            resource
                .get("cleanup.policy")
                .and_then(|e| e.value.as_deref())
                .is_some_and(|p| p.contains("compact"))
        })
        .filter_map(|resource| resource.get("delete.retention.ms")?.value.as_deref()?.parse::<u64>().ok())
        .map(Duration::from_millis)
        .min()
        .unwrap_or(DEFAULT_TOMBSTONE_RETENTION)
}

/// Where each topic's reader resumes: the stored offsets when the store can go on from them,
/// otherwise nothing (the store is emptied and every topic read from the beginning). It cannot
/// when it was last written longer ago than `tombstone_retention`, when it holds a topic no
/// longer read, or when a partition's stored offset is no longer on the topic (records removed
/// by retention, or a topic deleted and created again).
pub fn resume_positions(
    store: &Store,
    config: &ClientConfig,
    topics: &[&str],
    tombstone_retention: Duration,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<FxHashMap<(String, i32), i64>, ResumeError> {
    let stored = store.offsets()?;
    if stored.is_empty() {
        info!("the store is empty: reading every topic from the beginning");
        return Ok(stored);
    }
    let consumer: BaseConsumer<ReadToEndContext> = config
        .clone()
        .set("group.id", "customer-api")
        .create_with_context(ReadToEndContext { reader: "customer-api" })?;
    let stale = loop {
        health.tick();
        match stale_reason(store, &consumer, &stored, topics, tombstone_retention) {
            Ok(reason) => break reason,
            Err(error) if shutdown.is_cancelled() => return Err(error.into()),
            Err(error) => {
                warn!(%error, "cannot check the stored offsets against the topics yet; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    match stale {
        Some(reason) => {
            warn!(reason, "rebuilding the store from the beginning of every topic");
            store.reset()?;
            Ok(FxHashMap::default())
        }
        None => {
            info!(partitions = stored.len(), "resuming from the stored offsets");
            Ok(stored)
        }
    }
}

/// Why the store cannot go on from its offsets, if it cannot; an error when the cluster does
/// not answer.
fn stale_reason(
    store: &Store,
    consumer: &BaseConsumer<ReadToEndContext>,
    stored: &FxHashMap<(String, i32), i64>,
    topics: &[&str],
    tombstone_retention: Duration,
) -> Result<Option<String>, KafkaError> {
    // A partition the store has not been up to date with for longer than the topics keep
    // tombstones may have missed one (an erasure among them).
    let fresh = store.fresh().ok().unwrap_or_default();
    let now = chrono::Utc::now();
    for (topic, partition) in stored.keys() {
        let at_end = fresh.get(&(topic.clone(), *partition));
        if at_end.is_none_or(|at| (now - *at).to_std().unwrap_or_default() > tombstone_retention) {
            return Ok(Some(format!(
                "{topic} partition {partition} was last read to its end {at_end:?}, longer ago than the topics keep tombstones ({} s)",
                tombstone_retention.as_secs()
            )));
        }
    }
    for ((topic, partition), next) in stored {
        if !topics.contains(&topic.as_str()) {
            return Ok(Some(format!("the store holds records of {topic}, a topic no longer read")));
        }
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let Some(found) = metadata.topics().first() else {
            return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition));
        };
        match found.error().map(RDKafkaErrorCode::from) {
            None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
            Some(code) => return Err(KafkaError::MetadataFetch(code)),
        }
        if found.error().is_some() || !found.partitions().iter().any(|p| p.id() == *partition) {
            return Ok(Some(format!("{topic} partition {partition} no longer exists")));
        }
        let (low, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(5))?;
        if *next < low {
            return Ok(Some(format!(
                "{topic} partition {partition} starts at offset {low}: the records from {next} on were removed"
            )));
        }
        if *next > high {
            return Ok(Some(format!(
                "{topic} partition {partition} ends at offset {high}, before the stored {next}: the topic was created again"
            )));
        }
    }
    Ok(None)
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}
