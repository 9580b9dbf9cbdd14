//! Per-event cost of each service's core, without Kafka: decode and validate the bench's simulated
//! events, then limits, `apply` and `next_timer` as the runtime calls them. Run it under
//! `valgrind --tool=callgrind` for instruction counts that repeat on a noisy machine.
//!
//!     cargo build --release -p omnistream-spec --example core_cost
//!     valgrind --tool=callgrind target/release/examples/core_cost suppression 30000

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_model::{TouchpointEvent, decode_and_validate};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_runtime::{OutputRecord, Processor};
use omnistream_sim::{SimConfig, Simulator};
use omnistream_suppression::{Rules, Suppression};

fn drive<P: Processor<Input = TouchpointEvent>>(processor: &P, records: &[Vec<u8>]) -> usize {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).single().expect("valid");
    let mut states: HashMap<String, Option<P::State>> = HashMap::new();
    let mut outputs = 0;
    for bytes in records {
        let Ok(event) = decode_and_validate(bytes, now) else { continue };
        let state = states.entry(event.customer_id.clone()).or_default();
        // As the runtime: an event the core does not read, of a customer it knows, is ignored.
        if (state.is_some() && !processor.reads(&event))
            || processor.check_limits(state.as_ref(), &event, now).is_err()
        {
            continue;
        }
        // Encoded as the runtime encodes them: part of a core's cost.
        for output in processor.apply(state, &event, now) {
            std::hint::black_box(output.value.map(|record| record.encode()));
            outputs += 1;
        }
        if let Some(state) = state {
            std::hint::black_box(processor.next_timer(state));
        }
    }
    outputs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let service = args.next().unwrap_or_else(|| "suppression".to_owned());
    let events: usize = args.next().map_or(30_000, |n| n.parse().expect("a number of events"));
    let config = SimConfig {
        customers: u32::try_from(events / 10).expect("fits").max(1),
        seed: 7,
        start: Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).single().expect("valid"),
        step: chrono::Duration::milliseconds(1),
        duplicate_share: 0.0,
        malformed_share: 0.0,
    };
    let records: Vec<Vec<u8>> =
        Simulator::new(config).take(events).map(|r| r.to_avro_bytes().expect("encodes")).collect();
    let outputs = match service.as_str() {
        "profile-updater" => drive(&ProfileUpdater, &records),
        "suppression" => drive(&Suppression::new(Rules::default()), &records),
        "channel-affinity" => drive(&ChannelAffinityProcessor::default(), &records),
        "loyalty-points" => drive(&LoyaltyPoints::new(LoyaltyRules::default()), &records),
        other => panic!("unknown service {other}"),
    };
    println!("{service}: {events} events, {outputs} outputs");
}
