//! `identity-resolver`: one canonical customer across cookies, logins, emails, phones and cards
//! (docs/identity.md). One binary, two stages, each its own process kind:
//! `identity-resolver claims|customers`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use omnistream_identity_resolver::IdentityRules;
use omnistream_identity_resolver::stages::{
    CONFLICTS_OUTPUT, CUSTOMERS_OUTPUT, Claims, Customers, IDENTITY_OUTPUT, REQUESTS_OUTPUT, RESOLVED_OUTPUT,
};
use omnistream_model::services::{IDENTITY_CLAIMS, IDENTITY_CUSTOMERS};
use omnistream_model::topics;
use omnistream_runtime::{RuntimeArgs, ServiceInfo, run_service};

#[derive(Debug, Parser)]
#[command(name = "identity-resolver", version, about = "Resolves every event to one canonical customer")]
struct Args {
    #[command(subcommand)]
    stage: Stage,
}

#[derive(Debug, Subcommand)]
enum Stage {
    /// Owns each identifier: the first claim wins. Reads `--requests-topic` (its input flag is
    /// ignored: it reads what it writes).
    Claims {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        topics: InternalTopics,
    },
    /// Each canonical customer: identifiers, merges, conflicts; publishes the resolved events.
    /// Reads the producers' events (`--input-topic`) and its own requests (`--customers-topic`,
    /// with as many partitions).
    Customers {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        topics: InternalTopics,
        #[command(flatten)]
        rules: RulesArg,
        /// Events resolved to their canonical customer: what the services read.
        #[arg(long, env = "RESOLVED_TOPIC", default_value = topics::RESOLVED_EVENTS)]
        resolved_topic: String,
        /// Links refused by merge protection, for review.
        #[arg(long, env = "CONFLICTS_TOPIC", default_value = topics::IDENTITY_CONFLICTS)]
        conflicts_topic: String,
        /// Each customer id's identifiers and merges (compacted): what the customer-api explains.
        #[arg(long, env = "IDENTITY_TOPIC", default_value = topics::CUSTOMER_IDENTITY)]
        identity_topic: String,
    },
}

/// The stages' own topics, with the input's partition count.
#[derive(Debug, clap::Args)]
struct InternalTopics {
    /// The claim stage's requests, keyed by identifier.
    #[arg(long, env = "IDENTITY_REQUESTS_TOPIC", default_value = topics::IDENTITY_REQUESTS)]
    requests_topic: String,
    /// The customer stage's requests, keyed by canonical customer id.
    #[arg(long, env = "IDENTITY_CUSTOMERS_TOPIC", default_value = topics::IDENTITY_CUSTOMERS)]
    customers_topic: String,
}

#[derive(Debug, clap::Args)]
struct RulesArg {
    /// A TOML file of identity rules (docs/identity.md); default: the documented table.
    #[arg(long, env = "IDENTITY_RULES")]
    rules: Option<PathBuf>,
}

impl RulesArg {
    fn load(&self) -> Result<IdentityRules, ExitCode> {
        match &self.rules {
            None => Ok(IdentityRules::default()),
            Some(path) => IdentityRules::from_file(path).map_err(|error| {
                eprintln!("identity-resolver: {}: {error}", path.display());
                ExitCode::from(2)
            }),
        }
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    match Args::parse().stage {
        Stage::Claims { mut runtime, topics } => {
            runtime.input_topic.clone_from(&topics.requests_topic);
            let service = ServiceInfo::registered(&IDENTITY_CLAIMS, VERSION)
                .with_output(REQUESTS_OUTPUT, topics.requests_topic)
                .with_output(CUSTOMERS_OUTPUT, topics.customers_topic);
            run_service(service, runtime, Claims)
        }
        Stage::Customers { runtime, topics, rules, resolved_topic, conflicts_topic, identity_topic } => {
            let rules = match rules.load() {
                Ok(rules) => rules,
                Err(code) => return code,
            };
            let service = ServiceInfo::registered(&IDENTITY_CUSTOMERS, VERSION)
                .with_output(REQUESTS_OUTPUT, topics.requests_topic)
                .with_output(CUSTOMERS_OUTPUT, topics.customers_topic)
                .with_output(RESOLVED_OUTPUT, resolved_topic)
                .with_output(CONFLICTS_OUTPUT, conflicts_topic)
                .with_output(IDENTITY_OUTPUT, identity_topic);
            let erasure_horizon = chrono::Duration::days(i64::from(runtime.erasure_horizon_days));
            run_service(service, runtime, Customers { rules, erasure_horizon })
        }
    }
}
