//! `profile-updater`: folds every touchpoint event into `customer.profiles.v1`, exactly once.

use std::process::ExitCode;

use clap::Parser;
use omnistream_model::topics::PROFILES;
use omnistream_profile_updater::{PROFILES_OUTPUT, ProfileUpdater};
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};

#[derive(Debug, Parser)]
#[command(name = "profile-updater", version, about = "One real-time customer profile across every channel")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Compacted topic of customer profiles.
    #[arg(long, env = "PROFILES_TOPIC", default_value = PROFILES)]
    profiles_topic: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let service =
        ServiceInfo::registered(&omnistream_model::services::PROFILE_UPDATER, env!("CARGO_PKG_VERSION"))
            .with_output(PROFILES_OUTPUT, args.profiles_topic);
    run_service(service, args.runtime, ProfileUpdater)
}
