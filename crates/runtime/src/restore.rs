//! Reads changelog partitions into [`RestoredPartition`]s before their input is processed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::warn;

use crate::RuntimeError;
use crate::config::RuntimeConfig;
use crate::engine::{ChangelogPartition, RestoredPartition};
use crate::kafka::ReadToEndContext;
use crate::metrics::Metrics;
use crate::processor::Processor;
use crate::server::Health;

pub(crate) type RestoredPartitions<S> = HashMap<i32, RestoredPartition<S>>;

/// How long a restore may take before the service gives up and exits (to be restarted).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long asking a changelog partition's offsets may take (liveness is not ticked meanwhile);
/// offsets that do not come in time are asked again, within [`RESTORE_TIMEOUT`].
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the end of a transaction still open on a changelog partition is asked for.
const DECIDED_POLL: Duration = Duration::from_millis(100);

/// Reads changelog partitions from the beginning to their end with an assign-only read_committed
/// consumer, within [`RESTORE_TIMEOUT`]; every poll ticks `health`, so a long restore does not
/// fail liveness (the timeout bounds a stuck one).
///
/// "The end" is the high watermark when the restore starts, not the first end of partition a
/// read_committed reader meets: that one is the last stable offset, which stops short of a
/// transaction whose commit marker is not written yet. The offsets the input resumes from may
/// be that transaction's already (the coordinator writes each partition's marker on its own, and
/// on three nodes `make chaos` saw the changelog's come after the offsets' one), and restoring
/// without its records lost a customer's last events and wrote their versions twice. So the
/// reader is assigned only once every transaction that was open on the partition is decided (a
/// zombie's is aborted within the transaction timeout).
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
    // A partition with no record in the changelog restores to nothing: the caller takes a
    // partition missing from the result as empty.
    let mut readers: HashMap<i32, ChangelogPartition> = HashMap::new();
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let ends = changelog_ends(config, partitions, deadline, health)?;
    // An empty partition (a first start) is not read: reading one to its end cost over half a
    // second (an offset lookup, then a fetch), asking its offsets one round trip.
    let mut remaining: HashSet<i32> = ends.keys().copied().collect();
    if remaining.is_empty() {
        return Ok(RestoredPartitions::new());
    }
    wait_until_decided(&reader, &config.changelog_topic, &ends, deadline, health)?;
    let mut assignment = TopicPartitionList::new();
    for partition in &remaining {
        assignment.add_partition_offset(&config.changelog_topic, *partition, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    let mut last_error: Option<String> = None;
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
            // An end of partition short of the recorded end (a new leader whose high watermark
            // still lags) is not the end: librdkafka reports the next one again.
            Some(Err(KafkaError::PartitionEOF(partition)))
                if position(&reader, &config.changelog_topic, partition) >= ends[&partition] =>
            {
                remaining.remove(&partition);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            // librdkafka recovers from consumer errors by itself (a broker down, a leader
            // moving); the restore's deadline bounds one that lasts. Logged when it changes.
            Some(Err(error)) => {
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    warn!(error = %text, "changelog reader error; reading on");
                    last_error = Some(text);
                }
            }
            Some(Ok(message)) => {
                metrics.restored_records.inc();
                let Some(key) = message.key() else { continue };
                let position = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|header| header.key == crate::changelog::POSITION_HEADER)
                        .and_then(|header| header.value)
                });
                readers
                    .entry(message.partition())
                    .or_default()
                    .read(message.offset(), key, message.payload(), position, horizon_ms)
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
    // The reader's buffers go before the records are decoded.
    drop(reader);
    readers
        .into_iter()
        .map(|(partition, records)| {
            let restored = records
                .finish(processor, config.idle_state, config.changelog_ids_layout, || health.tick())
                .map_err(|e| RuntimeError::Restore(format!("changelog partition {partition}: {e}")))?;
            Ok((partition, restored))
        })
        .collect()
}

/// What a restore fetches at a time: 8 MiB, or the largest record the client may send
/// (`message.max.bytes`, raised with `-X`) if that is more.
fn fetch_max_bytes(client: &ClientConfig) -> usize {
    const FETCH_MAX_BYTES: usize = 8 << 20;
    client
        .get("message.max.bytes")
        .and_then(|value| value.parse().ok())
        .map_or(FETCH_MAX_BYTES, |max: usize| max.max(FETCH_MAX_BYTES))
}

fn set_restore_consumer(client: &mut ClientConfig, config: &RuntimeConfig) {
    let fetch_max_bytes = fetch_max_bytes(client);
    client
        .set("group.id", format!("{}-restore", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "20")
        .set("isolation.level", "read_committed")
        // A fetch's batches are all decompressed as it arrives, before the queue's limit below
        // applies: with 100 MiB fetches (10 MiB a partition) a profile-updater restore of
        // 100,000 customers peaked 160 MiB higher (bench/results/2026-12-07-restore-peak.md).
        // librdkafka refuses a fetch limit below the producer's `message.max.bytes`.
        .set("fetch.max.bytes", fetch_max_bytes.to_string())
        .set("max.partition.fetch.bytes", "1048576")
        .set("queued.max.messages.kbytes", "16384")
        // As the processing consumer's (run.rs): a full prefetch queue stopped fetching for 1 s
        // (the default), and a restore drains its queue far sooner: a profile of a restore found
        // the process on a fifth of a core, waiting.
        .set("fetch.queue.backoff.ms", "20");
}

/// The high watermark (read_uncommitted: open transactions included) of every changelog partition
/// that has records, each asked again until it comes (a leader being elected) or `deadline`.
fn changelog_ends(
    config: &RuntimeConfig,
    partitions: &[i32],
    deadline: Instant,
    health: &Health,
) -> Result<HashMap<i32, i64>, RuntimeError> {
    let mut client = config.kafka.client_config()?;
    client.set("isolation.level", "read_uncommitted");
    let asker: BaseConsumer<ReadToEndContext> =
        client.create_with_context(ReadToEndContext { reader: "changelog offsets" })?;
    let mut ends = HashMap::new();
    for partition in partitions {
        loop {
            health.tick();
            match asker.fetch_watermarks(&config.changelog_topic, *partition, OFFSETS_TIMEOUT) {
                Ok((low, high)) => {
                    if high > low {
                        ends.insert(*partition, high);
                    }
                    break;
                }
                Err(error) if Instant::now() < deadline => {
                    warn!(%error, partition, "changelog offsets not known yet; asking again");
                    std::thread::sleep(DECIDED_POLL);
                }
                Err(error) => {
                    return Err(RuntimeError::Restore(format!(
                        "changelog partition {partition}'s offsets not known in {} s: {error}",
                        RESTORE_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }
    Ok(ends)
}

/// Waits until the last stable offset of every partition in `ends` has reached its end: every
/// transaction open on it then is decided, so the reader's end of partition is the end.
fn wait_until_decided(
    reader: &BaseConsumer<ReadToEndContext>,
    topic: &str,
    ends: &HashMap<i32, i64>,
    deadline: Instant,
    health: &Health,
) -> Result<(), RuntimeError> {
    let mut undecided: Vec<(i32, i64)> = ends.iter().map(|(partition, end)| (*partition, *end)).collect();
    while !undecided.is_empty() {
        // The reader is read_committed: its high watermark is the last stable offset. One whose
        // offsets do not come is asked again.
        undecided.retain(|(partition, end)| {
            health.tick();
            !matches!(reader.fetch_watermarks(topic, *partition, OFFSETS_TIMEOUT),
                Ok((_, stable)) if stable >= *end)
        });
        if undecided.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Restore(format!(
                "transactions on changelog partitions {undecided:?} (partition, end) not decided in {} s",
                RESTORE_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(DECIDED_POLL);
    }
    Ok(())
}

/// The reader's position in `partition` (control records included), or -1 when unknown.
fn position(reader: &BaseConsumer<ReadToEndContext>, topic: &str, partition: i32) -> i64 {
    let positions = reader.position().ok();
    match positions.as_ref().and_then(|list| list.find_partition(topic, partition)).map(|e| e.offset()) {
        Some(Offset::Offset(offset)) => offset,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_fetches_8_mib_at_a_time_or_the_largest_record_the_client_may_send() {
        let mut client = ClientConfig::new();
        assert_eq!(fetch_max_bytes(&client), 8 << 20);
        client.set("message.max.bytes", "20000000");
        assert_eq!(fetch_max_bytes(&client), 20_000_000, "librdkafka refuses a smaller fetch limit");
    }
}
