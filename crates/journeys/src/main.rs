//! `journeys`: runs the published journeys for every customer, exactly once: send decisions to
//! `journey.actions.v1`, each customer's journeys to `journey.states.v1` (docs/journeys.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use omnistream_channel_affinity::AffinityArgs;
use omnistream_journeys::core::Engine;
use omnistream_journeys::service::{
    ACTIONS_OUTPUT, CATALOG_INPUT, DEFINITIONS_INPUT, Journeys, STATES_OUTPUT,
};
use omnistream_model::topics::{CATALOG_EVENTS, JOURNEY_ACTIONS, JOURNEY_DEFINITIONS, JOURNEY_STATES};
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};
use omnistream_suppression::Rules;

#[derive(Debug, Parser)]
#[command(name = "journeys", version, about = "Multi-step cross-channel flows, decided in real time")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Topic of send decisions.
    #[arg(long, env = "ACTIONS_TOPIC", default_value = JOURNEY_ACTIONS)]
    actions_topic: String,
    /// Compacted topic of each customer's journeys.
    #[arg(long, env = "JOURNEY_STATES_TOPIC", default_value = JOURNEY_STATES)]
    journey_states_topic: String,
    /// Compacted topic of published definitions (`omni journeys publish`), read whole.
    #[arg(long, env = "DEFINITIONS_TOPIC", default_value = JOURNEY_DEFINITIONS)]
    definitions_topic: String,
    /// Compacted topic of products' price changes and restocks (the gateway's
    /// `POST /v1/catalog/events`), read whole: they enter the customers who viewed the product.
    #[arg(long, env = "CATALOG_TOPIC", default_value = CATALOG_EVENTS)]
    catalog_topic: String,
    /// The suppression service's rules file: sends are decided by the same rules.
    #[arg(long, env = "SUPPRESSION_RULES")]
    suppression_rules: Option<PathBuf>,
    #[command(flatten)]
    affinity: AffinityArgs,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let suppression = match &args.suppression_rules {
        Some(path) => Rules::from_file(path).map_err(|error| error.to_string()),
        None => Ok(Rules::default()),
    };
    let (suppression, affinity) = match (suppression, args.affinity.config()) {
        (Ok(suppression), Ok(affinity)) => (suppression, affinity),
        (Err(problem), _) | (_, Err(problem)) => {
            eprintln!("journeys: {problem}");
            return ExitCode::from(2);
        }
    };
    args.runtime.broadcasts.retain(|(role, _)| role != DEFINITIONS_INPUT && role != CATALOG_INPUT);
    args.runtime.broadcasts.push((DEFINITIONS_INPUT.to_owned(), args.definitions_topic));
    args.runtime.broadcasts.push((CATALOG_INPUT.to_owned(), args.catalog_topic));
    let engine = Engine { suppression: Arc::new(suppression.prepare()), affinity };
    let service = ServiceInfo::registered(&omnistream_model::services::JOURNEYS, env!("CARGO_PKG_VERSION"))
        .with_output(ACTIONS_OUTPUT, args.actions_topic)
        .with_output(STATES_OUTPUT, args.journey_states_topic);
    run_service(service, args.runtime, Journeys::new(engine))
}
