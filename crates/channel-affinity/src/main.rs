//! `channel-affinity`: keeps `customer.channel-affinity.v1` fresh on every event it reads, exactly once.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use omnistream_channel_affinity::{AFFINITY_OUTPUT, AffinityArgs, ChannelAffinityProcessor};
use omnistream_model::topics::CHANNEL_AFFINITY;
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};

#[derive(Debug, Parser)]
#[command(
    name = "channel-affinity",
    version,
    about = "The channel each customer most likely engages on, explained"
)]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Compacted topic of channel affinities.
    #[arg(long, env = "AFFINITY_TOPIC", default_value = CHANNEL_AFFINITY)]
    affinity_topic: String,
    #[command(flatten)]
    affinity: AffinityArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.affinity.config() {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("channel-affinity: {problem}");
            return ExitCode::from(2);
        }
    };
    let service =
        ServiceInfo::registered(&omnistream_model::services::CHANNEL_AFFINITY, env!("CARGO_PKG_VERSION"))
            .with_output(AFFINITY_OUTPUT, args.affinity_topic);
    run_service(service, args.runtime, ChannelAffinityProcessor { config: Arc::new(config) })
}
