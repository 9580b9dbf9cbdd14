//! `alias-router`: the first stage of the repartition example (see the crate docs): re-keys each
//! event by the customer its customer is an alias of, exactly once.

use std::process::ExitCode;

use clap::Parser;
use omnistream_reference::{AliasRouter, ROUTED_OUTPUT};
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};

#[derive(Debug, Parser)]
#[command(name = "alias-router", version, about = "Re-keys events by the customer they are an alias of")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Topic of the re-keyed events (created like the events topic, `LogAppendTime`).
    #[arg(long, env = "ROUTED_TOPIC")]
    routed_topic: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let service = ServiceInfo {
        name: "alias-router",
        default_admin_addr: "127.0.0.1:9107".parse().expect("address"),
        version: env!("CARGO_PKG_VERSION"),
        outputs: vec![(ROUTED_OUTPUT, args.routed_topic)],
    };
    run_service(service, args.runtime, AliasRouter)
}
