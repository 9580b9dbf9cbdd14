//! `omni dlq replay`: after a fix (a new release that accepts what the old one refused), publish
//! the dead-lettered records back to the events topic. Every service dead-letters a bad record on
//! its own, so one input record can sit in the DLQ once per service: each is replayed once, by
//! its source coordinates. Records the current rules still refuse stay where they are.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use omnistream_model::decode_and_validate;
use omnistream_model::topics::{EVENTS, EVENTS_DLQ};
use omnistream_runtime::KafkaArgs;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

use crate::publisher::Publisher;
use omnistream_runtime::trace::TraceContext;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Dead-letter topic to read (from the beginning, read_committed).
    #[arg(long, default_value = EVENTS_DLQ)]
    dlq_topic: String,
    /// Topic to publish the records to.
    #[arg(long, env = "EVENTS_TOPIC", default_value = EVENTS)]
    events_topic: String,
    /// Only records dead-lettered with this `error.code` (repeatable); default: all.
    #[arg(long = "error-code")]
    error_codes: Vec<String>,
    /// Only records dead-lettered at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Count what would be replayed without publishing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Default)]
struct Counts {
    read: u64,
    skipped_filter: u64,
    duplicate: u64,
    still_invalid: u64,
    replayed: u64,
}

fn header<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>, key: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(h.value?).ok())
}

pub async fn replay(kafka: &KafkaArgs, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if !args.dry_run {
        crate::avro::prepare(&args.events_topic, omnistream_model::RecordKind::TouchpointEvent)?;
    }
    let (consumer, partitions) = crate::committed::from_beginning(kafka, &args.dlq_topic, "dlq-replay")?;

    let mut publisher = if args.dry_run { None } else { Some(Publisher::new(kafka, &args.events_topic)?) };
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut counts = Counts::default();
    let since = args.since.map(|t| t.timestamp_millis());
    while at_end.len() < partitions {
        let message = match consumer.poll(Duration::from_secs(1)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
                continue;
            }
            Some(Err(error)) => return Err(error).context("reading the dead-letter topic"),
            Some(Ok(message)) => message,
        };
        counts.read += 1;
        let code = header(&message, "error.code").unwrap_or("");
        let wanted_code = args.error_codes.is_empty() || args.error_codes.iter().any(|c| c == code);
        let recent = since.is_none_or(|since| message.timestamp().to_millis().is_some_and(|t| t >= since));
        if !wanted_code || !recent {
            counts.skipped_filter += 1;
            continue;
        }
        // Identified by where it came from; a record without those headers stands for itself.
        let source = match (
            header(&message, "source.topic"),
            header(&message, "source.partition"),
            header(&message, "source.offset"),
        ) {
            (Some(topic), Some(partition), Some(offset)) => {
                (topic.to_owned(), partition.to_owned(), offset.to_owned())
            }
            _ => (args.dlq_topic.clone(), message.partition().to_string(), message.offset().to_string()),
        };
        if !seen.insert(source) {
            counts.duplicate += 1;
            continue;
        }
        let Some(value) = message.payload() else {
            counts.still_invalid += 1;
            continue;
        };
        let event = match decode_and_validate(crate::avro::readable(value), chrono::Utc::now()) {
            Ok(event) => event,
            Err(rejection) => {
                counts.still_invalid += 1;
                eprintln!("{}@{}: still refused: {rejection}", message.partition(), message.offset());
                continue;
            }
        };
        // Keyed by its customer_id, as SPEC 3 wants: a record dead-lettered for `key_mismatch`
        // (or for having no key) is valid and only needed the right key.
        counts.replayed += 1;
        if let Some(publisher) = publisher.as_mut() {
            // The dead letter kept the event's trace context: the replay goes on in that trace.
            let trace = TraceContext::from_record(message.headers());
            publisher.send_traced(&event.customer_id, value, trace.as_deref()).await?;
        }
    }
    if let Some(publisher) = publisher {
        publisher.finish().await?;
    }
    eprintln!(
        "{} {} records to {} ({} read, {} filtered out, {} copies of the same source record, {} still refused)",
        if args.dry_run { "would replay" } else { "replayed" },
        counts.replayed,
        args.events_topic,
        counts.read,
        counts.skipped_filter,
        counts.duplicate,
        counts.still_invalid
    );
    Ok(ExitCode::SUCCESS)
}
