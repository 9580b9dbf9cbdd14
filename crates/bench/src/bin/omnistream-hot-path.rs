//! The engine's hot path per event, without Kafka (issue 21): a service's processor driven by the
//! runtime's own engine (`ProcessorTest::when_batch`: decode, validate, dedupe, apply, encode the
//! outputs, then the changelog and position records at each commit) over simulated events,
//! batched per transaction as a commit interval batches them. `make bench-instructions` runs it
//! under `valgrind --tool=callgrind`, counting only inside `when_batch`, and divides by the
//! events: a figure that repeats exactly for the same binary whatever else the machine does,
//! unlike wall-clock throughput here. librdkafka's share (consume, produce, transactions) is not
//! in it. `--resident` prints what the state takes per customer: the resident set it added, the
//! store's parts (its customer table and held records, `Footprint`), and its changelog record's
//! size (what the state would take kept encoded).

use chrono::{DateTime, Utc};
use clap::Parser;
use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_reference::EventCounter;
use omnistream_runtime::config::IdleState;
use omnistream_runtime::testing::ProcessorTest;
use omnistream_runtime::{Entry, Processor};
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
    /// Also print the resident set the state added, per customer (the process's growth over
    /// the drive, freed memory handed back first): what a compact state form would shrink.
    #[arg(long)]
    resident: bool,
    /// How customers are held between transactions (the services' `--idle-state`).
    #[arg(long, env = "IDLE_STATE", value_enum, default_value_t = IdleState::Decoded)]
    idle_state: IdleState,
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
    omnistream_runtime::memory::release_freed();
    let resident_before = omnistream_runtime::memory::resident_bytes();
    let written = match args.service.as_str() {
        "event-counter" => drive(EventCounter { idle_after: None }, &records, &args, start, resident_before),
        "profile-updater" => drive(ProfileUpdater, &records, &args, start, resident_before),
        "suppression" => drive(Suppression::new(Rules::default()), &records, &args, start, resident_before),
        "channel-affinity" => {
            drive(ChannelAffinityProcessor::default(), &records, &args, start, resident_before)
        }
        "loyalty-points" => {
            drive(LoyaltyPoints::new(LoyaltyRules::default()), &records, &args, start, resident_before)
        }
        other => anyhow::bail!("no service {other:?}"),
    };
    println!("{} events, {written} records written", records.len());
    Ok(())
}

/// Each event appended at its own event time, `per_transaction` to a transaction; the records
/// written. `resident_before`: the resident set before, for `--resident`.
fn drive<P: Processor>(
    processor: P,
    records: &[(Vec<u8>, Vec<u8>)],
    args: &Args,
    start: DateTime<Utc>,
    resident_before: Option<u64>,
) -> usize {
    let mut test = ProcessorTest::with_idle_state(processor, args.idle_state);
    let start_ms = start.timestamp_millis();
    let mut offset = 0_i64;
    let written: usize = records
        .chunks(args.per_transaction.max(1))
        .map(|batch| {
            test.when_batch(batch.iter().map(|(key, payload)| {
                let appended = start_ms + offset * STEP_MS;
                offset += 1;
                (key.as_slice(), payload.as_slice(), appended)
            }))
        })
        .sum();
    if args.resident {
        omnistream_runtime::memory::release_freed();
        let grown = omnistream_runtime::memory::resident_bytes()
            .zip(resident_before)
            .map(|(after, before)| after.saturating_sub(before) as f64);
        if let Some(grown) = grown {
            let per_customer = grown / f64::from(args.customers);
            println!("resident set the state added: {per_customer:.0} bytes per customer");
        }
        let footprint = test.footprint();
        let per_customer = |bytes: usize| bytes as f64 / footprint.customers.max(1) as f64;
        println!(
            "the store's bytes per customer: table {:.0}, records {:.0}, garbage {:.0}, chunks {:.0}; {} of {} customers held decoded",
            per_customer(footprint.table_bytes),
            per_customer(footprint.record_bytes),
            per_customer(footprint.garbage_bytes),
            per_customer(footprint.chunk_bytes),
            footprint.decoded,
            footprint.customers,
        );
        print_encoded_size(&test, records);
    }
    written
}

/// The mean size of a customer's changelog record (MessagePack, before compression) with a
/// full dedupe window: what the state would take in memory kept encoded.
fn print_encoded_size<P: Processor>(test: &ProcessorTest<P>, records: &[(Vec<u8>, Vec<u8>)]) {
    let customers: std::collections::BTreeSet<&[u8]> =
        records.iter().map(|(key, _)| key.as_slice()).collect();
    let (mut count, mut bytes, mut buffer) = (0_usize, 0_usize, Vec::new());
    for customer in customers {
        let state = test.state(std::str::from_utf8(customer).unwrap_or_default());
        let entry = Entry {
            recent: (0..64).map(|index| omnistream_runtime::event_id_hash(&format!("e-{index}"))).collect(),
            state,
            merged_into: None,
            unmarked: Default::default(),
        };
        buffer.clear();
        omnistream_runtime::changelog::encode::<P>(&entry, omnistream_runtime::IdsLayout::Bytes, &mut buffer);
        (count, bytes) = (count + 1, bytes + buffer.len());
    }
    println!(
        "changelog record with 64 event ids: {:.0} bytes per customer",
        bytes as f64 / count.max(1) as f64
    );
}
