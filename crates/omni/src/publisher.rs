//! Publishing to Kafka with an idempotent producer, bounded in flight, and `omni produce`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use omnistream_model::catalog::parse_catalog_event_json;
use omnistream_model::{encode_event, encode_record, parse_event_json};
use omnistream_runtime::KafkaArgs;
use omnistream_runtime::trace::TraceContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::producer::future_producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Most deliveries awaited at once; beyond it `send` waits for the oldest.
const MAX_IN_FLIGHT: usize = 50_000;

/// An idempotent, `acks=all` producer that counts acknowledged deliveries.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    in_flight: FuturesUnordered<DeliveryFuture>,
    pub delivered: u64,
}

impl Publisher {
    pub fn new(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Self> {
        let producer: FutureProducer =
            kafka.idempotent_producer_config()?.create().context("cannot create the Kafka producer")?;
        Ok(Self { producer, topic: topic.to_owned(), in_flight: FuturesUnordered::new(), delivered: 0 })
    }

    /// Enqueues one record; waits for deliveries when librdkafka's queue is full.
    /// An omnistream record in single-object encoding goes out in the topic's wire format
    /// (`--wire-format`); other bytes as they are.
    pub async fn send(&mut self, key: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.send_traced(key, payload, None).await
    }

    /// As `send`, with a W3C trace context as the record's headers.
    pub async fn send_traced(
        &mut self,
        key: &str,
        payload: &[u8],
        trace: Option<&TraceContext>,
    ) -> anyhow::Result<()> {
        let payload = crate::avro::wire_bytes(&self.topic, payload)?;
        loop {
            let mut record = FutureRecord::to(&self.topic).key(key).payload(payload.as_ref());
            if let Some(trace) = trace {
                let headers =
                    trace.headers().fold(OwnedHeaders::new_with_capacity(2), |headers, (key, value)| {
                        headers.insert(Header { key, value: Some(value) })
                    });
                record = record.headers(headers);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if !self.reap_one().await? {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((error, _)) => return Err(error).context("cannot enqueue a record"),
            }
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.reap_one().await?;
        }
        Ok(())
    }

    async fn reap_one(&mut self) -> anyhow::Result<bool> {
        match self.in_flight.next().await {
            None => Ok(false),
            Some(Ok(Ok(_))) => {
                self.delivered += 1;
                Ok(true)
            }
            Some(Ok(Err((error, _)))) => Err(error).context("Kafka did not acknowledge a record"),
            Some(Err(_)) => bail!("the producer dropped a delivery"),
        }
    }

    /// Waits until Kafka acknowledged every record sent; returns how many it acknowledged.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        while self.reap_one().await? {}
        self.producer.flush(Duration::from_secs(30)).context("flush")?;
        Ok(self.delivered)
    }
}

/// What the lines of an `omni produce` file are.
#[derive(Debug, Clone, Copy)]
pub enum Lines {
    /// Touchpoint events (SPEC 2), keyed by customer.
    Touchpoint,
    /// Catalog events, keyed by product.
    Catalog,
}

/// `omni produce`: validates each line, publishes the valid ones, names the rejected ones.
pub async fn produce_file(
    kafka: &KafkaArgs,
    file: &Path,
    topic: &str,
    lines: Lines,
) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(BufReader::new(opened))
    };
    let kind = match lines {
        Lines::Touchpoint => omnistream_model::RecordKind::TouchpointEvent,
        Lines::Catalog => omnistream_model::RecordKind::CatalogEvent,
    };
    crate::avro::prepare(topic, kind)?;
    let mut publisher = Publisher::new(kafka, topic)?;
    let mut rejected = 0u64;
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let line = line.with_context(|| format!("cannot read line {line_number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let now = chrono::Utc::now();
        // A record that passed validation but cannot be encoded is a bug, not a bad line: `?` below.
        let parsed = match lines {
            Lines::Touchpoint => {
                parse_event_json(&line, now).map(|event| (event.customer_id.clone(), encode_event(&event)))
            }
            Lines::Catalog => parse_catalog_event_json(&line, now)
                .map(|event| (event.product_id.clone(), encode_record(&event))),
        };
        match parsed {
            Ok((key, bytes)) => publisher.send(&key, &bytes?).await?,
            Err(rejection) => {
                rejected += 1;
                for error in &rejection.0 {
                    eprintln!("line {line_number}: {} at {}: {}", error.code, error.field, error.message);
                }
            }
        }
    }
    let published = publisher.finish().await?;
    let what = match lines {
        Lines::Touchpoint => "events",
        Lines::Catalog => "catalog events",
    };
    eprintln!("published {published} {what} to {topic}, rejected {rejected} lines");
    Ok(if rejected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
