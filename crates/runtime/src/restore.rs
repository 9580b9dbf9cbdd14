//! Reads changelog partitions into [`RestoredPartition`]s before their input is processed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::RuntimeError;
use crate::config::RuntimeConfig;
use crate::engine::RestoredPartition;
use crate::kafka::ReadToEndContext;
use crate::metrics::Metrics;
use crate::processor::Processor;
use crate::server::Health;

pub(crate) type RestoredPartitions<S> = HashMap<i32, RestoredPartition<S>>;

/// How long a restore may take before the service gives up and exits (to be restarted).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long asking a changelog partition's offsets may take (liveness is not ticked meanwhile);
/// a partition whose offsets do not come in time is read to its end as if it had records.
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads changelog partitions from the beginning to their end (the last stable offset, as
/// read_committed) with an assign-only consumer, within [`RESTORE_TIMEOUT`]; every poll ticks
/// `health`, so a long restore does not fail liveness (the timeout bounds a stuck one).
pub(crate) fn read_changelog<P: Processor>(
    processor: &P,
    config: &RuntimeConfig,
    partitions: &[i32],
    horizon_ms: i64,
    metrics: &Metrics,
    health: &Health,
) -> Result<RestoredPartitions<P::State>, RuntimeError> {
    let mut client = config.kafka.client_config()?;
    set_restore_consumer(&mut client, config);
    let reader: BaseConsumer<ReadToEndContext> =
        client.create_with_context(ReadToEndContext { reader: "changelog reader" })?;
    let mut restored: RestoredPartitions<P::State> =
        partitions.iter().map(|p| (*p, RestoredPartition::default())).collect();
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    // An empty partition (a first start) is not read: reading one to its end cost over half a
    // second (an offset lookup, then a fetch), asking its offsets one round trip. One whose
    // offsets do not come is read as before, within the restore's own timeout.
    let mut remaining: HashSet<i32> = HashSet::new();
    for partition in partitions {
        health.tick();
        match reader.fetch_watermarks(&config.changelog_topic, *partition, OFFSETS_TIMEOUT) {
            Ok((low, high)) if high <= low => {}
            _ => {
                remaining.insert(*partition);
            }
        }
    }
    if remaining.is_empty() {
        return Ok(restored);
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &remaining {
        assignment.add_partition_offset(&config.changelog_topic, *partition, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(RuntimeError::Restore(format!(
                "changelog partitions {remaining:?} not read to the end in {} s",
                RESTORE_TIMEOUT.as_secs()
            )));
        }
        health.tick();
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                remaining.remove(&partition);
            }
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => {
                metrics.restored_records.inc();
                let Some(key) = message.key() else { continue };
                restored
                    .entry(message.partition())
                    .or_default()
                    .read(processor, key, message.payload(), horizon_ms)
                    .map_err(|e| {
                        RuntimeError::Restore(format!(
                            "changelog record {}@{}: {e}",
                            message.partition(),
                            message.offset()
                        ))
                    })?;
            }
        }
    }
    Ok(restored)
}

fn set_restore_consumer(client: &mut ClientConfig, config: &RuntimeConfig) {
    client
        .set("group.id", format!("{}-restore", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "20")
        .set("isolation.level", "read_committed")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "16384");
}
