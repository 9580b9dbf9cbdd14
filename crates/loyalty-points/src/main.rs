//! `loyalty-points`: keeps the points ledger `loyalty.ledger.v1` and the balances
//! `loyalty.balances.v1`, exactly once.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use omnistream_loyalty_points::{BALANCES_OUTPUT, LEDGER_OUTPUT, LoyaltyPoints, LoyaltyRules};
use omnistream_model::topics::{LOYALTY_BALANCES, LOYALTY_LEDGER};
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};

#[derive(Debug, Parser)]
#[command(
    name = "loyalty-points",
    version,
    about = "Points earned anywhere, spendable anywhere, exactly once"
)]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Topic of ledger entries (append-only).
    #[arg(long, env = "LEDGER_TOPIC", default_value = LOYALTY_LEDGER)]
    ledger_topic: String,
    /// Compacted topic of balances.
    #[arg(long, env = "BALANCES_TOPIC", default_value = LOYALTY_BALANCES)]
    balances_topic: String,
    /// A TOML file of loyalty rules (docs/loyalty-points.md); default: the SPEC's rules.
    #[arg(long, env = "LOYALTY_RULES")]
    rules: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rules = match &args.rules {
        Some(path) => match LoyaltyRules::from_file(path) {
            Ok(rules) => rules,
            Err(error) => {
                eprintln!("loyalty-points: {error}");
                return ExitCode::from(2);
            }
        },
        None => LoyaltyRules::default(),
    };
    let service =
        ServiceInfo::registered(&omnistream_model::services::LOYALTY_POINTS, env!("CARGO_PKG_VERSION"))
            .with_output(LEDGER_OUTPUT, args.ledger_topic)
            .with_output(BALANCES_OUTPUT, args.balances_topic);
    run_service(service, args.runtime, LoyaltyPoints::new(rules))
}
