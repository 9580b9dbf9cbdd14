//! The engine's hot path per event, without Kafka (issue 21): a service's processor driven by the
//! runtime's own engine (`ProcessorTest::when_batch`: decode, validate, dedupe, apply, encode the
//! outputs, then the changelog and position records at each commit) over simulated events,
//! batched per transaction as a commit interval batches them. `make bench-instructions` runs it
//! under `valgrind --tool=callgrind`, counting only inside `when_batch`, and divides by the
//! events: a figure that repeats exactly for the same binary whatever else the machine does,
//! unlike wall-clock throughput here. librdkafka's share (consume, produce, transactions) is not
//! in it.

use chrono::{DateTime, Utc};
use clap::Parser;
use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_reference::EventCounter;
use omnistream_runtime::Processor;
use omnistream_runtime::testing::ProcessorTest;
use omnistream_sim::{SimConfig, Simulator};
use omnistream_suppression::{Rules, Suppression};

#[derive(Parser)]
struct Args {
    /// event-counter, profile-updater, suppression, channel-affinity or loyalty-points.
    #[arg(long)]
    service: String,
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    #[arg(long, default_value_t = 10_000)]
    customers: u32,
    /// Events per transaction (a 100 ms commit interval at 10,000 events/s).
    #[arg(long, default_value_t = 1_000)]
    per_transaction: usize,
}

/// A fixed start, so that every run sees the same events.
const START: &str = "2026-11-01T00:00:00Z";
const STEP_MS: i64 = 10;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start: DateTime<Utc> = START.parse()?;
    let config = SimConfig {
        customers: args.customers,
        seed: 21,
        start,
        step: chrono::Duration::milliseconds(STEP_MS),
        duplicate_share: 0.0,
        malformed_share: 0.0,
    };
    let records = Simulator::new(config)
        .take(args.events)
        .map(|record| Ok((record.customer_id().as_bytes().to_vec(), record.to_avro_bytes()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let written = match args.service.as_str() {
        "event-counter" => drive(EventCounter { idle_after: None }, &records, &args, start),
        "profile-updater" => drive(ProfileUpdater, &records, &args, start),
        "suppression" => drive(Suppression::new(Rules::default()), &records, &args, start),
        "channel-affinity" => drive(ChannelAffinityProcessor::default(), &records, &args, start),
        "loyalty-points" => drive(LoyaltyPoints::new(LoyaltyRules::default()), &records, &args, start),
        other => anyhow::bail!("no service {other:?}"),
    };
    println!("{} events, {written} records written", records.len());
    Ok(())
}

/// Each event appended at its own event time, `per_transaction` to a transaction.
fn drive<P: Processor>(
    processor: P,
    records: &[(Vec<u8>, Vec<u8>)],
    args: &Args,
    start: DateTime<Utc>,
) -> usize {
    let mut test = ProcessorTest::new(processor);
    let start_ms = start.timestamp_millis();
    let mut offset = 0_i64;
    records
        .chunks(args.per_transaction.max(1))
        .map(|batch| {
            test.when_batch(batch.iter().map(|(key, payload)| {
                let appended = start_ms + offset * STEP_MS;
                offset += 1;
                (key.as_slice(), payload.as_slice(), appended)
            }))
        })
        .sum()
}
