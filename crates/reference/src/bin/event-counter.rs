//! `event-counter`: the exactly-once reference processor (see the crate docs).

use std::process::ExitCode;

use clap::Parser;
use omnistream_reference::{COUNTS_OUTPUT, COUNTS_TOPIC, EventCounter, LookupCounter, MergingCounter};
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};

#[derive(Debug, Parser)]
#[command(name = "event-counter", version, about = "Counts each customer's events, exactly once")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Topic of the per-customer counts.
    #[arg(long, env = "OUTPUT_TOPIC", default_value = COUNTS_TOPIC)]
    output_topic: String,
    /// Report a customer idle this many milliseconds after their last event (exercises timers).
    #[arg(long, env = "IDLE_AFTER_MS")]
    idle_after_ms: Option<i64>,
    /// Merge customers: an event setting the trait `merged_into` hands the customer's count to
    /// that customer through the handoff topic (`HANDOFF_TOPIC`, default
    /// `event-counter.handoff.v1`, as many partitions as the input).
    #[arg(long, env = "MERGES", conflicts_with = "lookups")]
    merges: bool,
    /// Stamp each count with the customer's tier from the `tiers` table and the current campaign
    /// from the `campaign` broadcast (`--table tiers=TOPIC --broadcast campaign=TOPIC`).
    #[arg(long, env = "LOOKUPS")]
    lookups: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let service = ServiceInfo {
        name: "event-counter",
        default_admin_addr: "127.0.0.1:9100".parse().expect("address"),
        version: env!("CARGO_PKG_VERSION"),
        outputs: vec![(COUNTS_OUTPUT, args.output_topic)],
    };
    let counter = EventCounter { idle_after: args.idle_after_ms.map(chrono::Duration::milliseconds) };
    if args.merges {
        run_service(service, args.runtime, MergingCounter(counter))
    } else if args.lookups {
        run_service(service, args.runtime, LookupCounter(counter))
    } else {
        run_service(service, args.runtime, counter)
    }
}
