//! `suppression`: keeps `customer.suppressions.v1`, per channel, with reasons and `until`,
//! exactly once.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use omnistream_model::topics::SUPPRESSIONS;
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};
use omnistream_suppression::{Rules, SUPPRESSIONS_OUTPUT, Suppression};

#[derive(Debug, Parser)]
#[command(
    name = "suppression",
    version,
    about = "When not to message a customer, on which channel, why and until when"
)]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Compacted topic of suppression states.
    #[arg(long, env = "SUPPRESSIONS_TOPIC", default_value = SUPPRESSIONS)]
    suppressions_topic: String,
    /// A TOML file of suppression rules (docs/suppression.md); default: the SPEC's rules.
    #[arg(long, env = "SUPPRESSION_RULES")]
    rules: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rules = match &args.rules {
        Some(path) => match Rules::from_file(path) {
            Ok(rules) => rules,
            Err(error) => {
                eprintln!("suppression: {error}");
                return ExitCode::from(2);
            }
        },
        None => Rules::default(),
    };
    let service =
        ServiceInfo::registered(&omnistream_model::services::SUPPRESSION, env!("CARGO_PKG_VERSION"))
            .with_output(SUPPRESSIONS_OUTPUT, args.suppressions_topic);
    run_service(service, args.runtime, Suppression::new(rules))
}
