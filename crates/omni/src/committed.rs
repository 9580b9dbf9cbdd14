//! Reading a whole topic as it is committed now: what `omni` commands that look back use.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use omnistream_runtime::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

/// A read_committed consumer of every partition of `topic` from its beginning (a group of its
/// own, named after `label`, that commits nothing), and the number of partitions; it reports
/// each partition's end.
pub fn from_beginning(kafka: &KafkaArgs, topic: &str, label: &str) -> anyhow::Result<(BaseConsumer, usize)> {
    let consumer: BaseConsumer = kafka
        .client_config()?
        .set("group.id", format!("omni-{label}-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .context("cannot create the Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok((consumer, partitions.len()))
}

/// Calls `each` with every committed record of `topic`, in offset order per partition, until
/// every partition's end.
pub fn each_to_end(
    kafka: &KafkaArgs,
    topic: &str,
    label: &str,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (consumer, partitions) = from_beginning(kafka, topic, label)?;
    let mut at_end = HashSet::new();
    while at_end.len() < partitions {
        match consumer.poll(Duration::from_secs(1)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
            Some(Ok(message)) => each(&message)?,
        }
    }
    Ok(())
}
