//! `omni tail`: print a topic's records as JSON lines, decoding any omnistream Avro record.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use omnistream_model::{decode_any, value_to_json};
use omnistream_runtime::KafkaArgs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Topic to read.
    topic: String,
    /// Start from the earliest retained record instead of the end.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, short = 't')]
    timeout: Option<f64>,
    /// Wrap each value with topic, partition, offset, key and headers.
    #[arg(long)]
    meta: bool,
}

pub async fn run(kafka: &KafkaArgs, args: TailArgs) -> anyhow::Result<ExitCode> {
    let consumer: StreamConsumer = kafka
        .client_config()?
        .set("group.id", format!("omni-tail-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("cannot create the Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read metadata of {}", args.topic))?;
    let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {} does not exist", args.topic);
    let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(&args.topic, i32::try_from(partition)?, start)?;
    }
    consumer.assign(&assignment)?;

    let deadline = args.timeout.map(|seconds| Instant::now() + Duration::from_secs_f64(seconds));
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    while args.max.is_none_or(|max| printed < max) {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            break;
        }
        let message = match remaining {
            Some(remaining) => match tokio::time::timeout(remaining, consumer.recv()).await {
                Ok(message) => message?,
                Err(_) => break,
            },
            None => consumer.recv().await?,
        };
        let value = render_value(message.payload());
        let line = if args.meta {
            let headers: serde_json::Map<String, Value> = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), json!(h.value.map(String::from_utf8_lossy))))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().map(String::from_utf8_lossy),
                "headers": headers,
                "value": value,
            })
        } else {
            value
        };
        // A closed pipe (`omni tail ... | head`) ends the tail quietly.
        if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
            break;
        }
        printed += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// An omnistream Avro record as JSON; a tombstone as null; anything else (DLQ records) as its
/// bytes, lossily decoded as UTF-8.
fn render_value(payload: Option<&[u8]>) -> Value {
    match payload {
        None => Value::Null,
        Some(bytes) => match decode_any(crate::avro::readable(bytes)) {
            Ok((_, value)) => value_to_json(&value),
            Err(_) => json!({"undecoded": String::from_utf8_lossy(bytes)}),
        },
    }
}
