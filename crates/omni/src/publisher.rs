//! Publishing to Kafka with an idempotent producer, bounded in flight, and `omni produce`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use omnistream_model::{encode_event, parse_event_json};
use omnistream_runtime::KafkaArgs;
use rdkafka::error::KafkaError;
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
    pub async fn send(&mut self, key: &str, payload: &[u8]) -> anyhow::Result<()> {
        loop {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
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

/// `omni produce`: validates each line, publishes the valid ones, names the rejected ones.
pub async fn produce_file(kafka: &KafkaArgs, file: &Path, topic: &str) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(BufReader::new(opened))
    };
    let mut publisher = Publisher::new(kafka, topic)?;
    let mut rejected = 0u64;
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let line = line.with_context(|| format!("cannot read line {line_number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_event_json(&line, chrono::Utc::now()) {
            Ok(event) => {
                let bytes = encode_event(&event)?;
                publisher.send(&event.customer_id, &bytes).await?;
            }
            Err(rejection) => {
                rejected += 1;
                for error in &rejection.0 {
                    eprintln!("line {line_number}: {} at {}: {}", error.code, error.field, error.message);
                }
            }
        }
    }
    let published = publisher.finish().await?;
    eprintln!("published {published} events to {topic}, rejected {rejected} lines");
    Ok(if rejected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
