//! `channel-affinity`: keeps `customer.channel-affinity.v1` fresh on every event, exactly once.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use omnistream_channel_affinity::{AFFINITY_OUTPUT, AffinityConfig, ChannelAffinityProcessor};
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
    /// Half-life of the exponential decay of sends and engagements, in days.
    #[arg(long, env = "AFFINITY_HALF_LIFE_DAYS", default_value_t = 30.0)]
    half_life_days: f64,
    /// Beta prior alpha (pseudo-engagements).
    #[arg(long, env = "AFFINITY_PRIOR_ALPHA", default_value_t = 1.0)]
    prior_alpha: f64,
    /// Beta prior beta (pseudo-sends without engagement).
    #[arg(long, env = "AFFINITY_PRIOR_BETA", default_value_t = 1.0)]
    prior_beta: f64,
    /// Decayed sends below which a channel is `insufficient_data`.
    #[arg(long, env = "AFFINITY_MIN_SENDS", default_value_t = 3.0)]
    min_sends: f64,
    /// Engagement weight of an order placed within 24 h of a click, for the clicked channel.
    #[arg(long, env = "AFFINITY_ORDER_WEIGHT", default_value_t = 1.0)]
    order_weight: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = AffinityConfig {
        half_life_days: args.half_life_days,
        prior_alpha: args.prior_alpha,
        prior_beta: args.prior_beta,
        min_sends: args.min_sends,
        order_weight: args.order_weight,
    };
    if let Err(problem) = config.check() {
        eprintln!("channel-affinity: {problem}");
        return ExitCode::from(2);
    }
    let service =
        ServiceInfo::registered(&omnistream_model::services::CHANNEL_AFFINITY, env!("CARGO_PKG_VERSION"))
            .with_output(AFFINITY_OUTPUT, args.affinity_topic);
    run_service(service, args.runtime, ChannelAffinityProcessor { config: Arc::new(config) })
}
