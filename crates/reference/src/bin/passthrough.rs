//! `passthrough`: the benchmark baseline. Copies records from one topic to another with a plain
//! consumer group (auto-commit) and a plain producer: no transactions, no decoding, no state.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use omnistream_runtime::KafkaArgs;
use omnistream_runtime::logging::{self, LogFormat};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Debug, Parser)]
#[command(
    name = "passthrough",
    version,
    about = "Copies a topic to another, at-least-once, as fast as it can"
)]
struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "passthrough")]
    group_id: String,
    #[arg(long, env = "INPUT_TOPIC")]
    input_topic: String,
    #[arg(long, env = "OUTPUT_TOPIC")]
    output_topic: String,
}

fn main() -> ExitCode {
    logging::init(LogFormat::Json);
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "passthrough failed");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let consumer: BaseConsumer = args
        .kafka
        .client_config()?
        .set("group.id", &args.group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .context("consumer")?;
    let producer: ThreadedProducer<DefaultProducerContext> = args
        .kafka
        .client_config()?
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("producer")?;
    consumer.subscribe(&[&args.input_topic])?;
    let terminate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, terminate.clone()).context("signal handler")?;
    }
    while !terminate.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(result) = consumer.poll(Duration::from_millis(50)) else { continue };
        let message = result?;
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.output_topic).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error).context("produce"),
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
