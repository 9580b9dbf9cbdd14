//! `omni`: the omnistream command line. Publish events from a file, tail any pipeline topic as
//! JSON, simulate omnichannel customers, and create the pipeline topics.

mod avro;
mod committed;
mod dispatch;
mod dlq;
mod http;
mod identity;
mod journeys;
mod loyalty;
mod publisher;
mod simulate;
mod tail;
mod topics;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use omnistream_model::topics::{CATALOG_EVENTS, EVENTS};
use omnistream_runtime::KafkaArgs;
use omnistream_runtime::logging::{self, LogFormat};
use publisher::Lines;

#[derive(Debug, Parser)]
#[command(name = "omni", version, about = "The omnistream command line", long_about = None)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    registry: omnistream_schema_registry::WireFormatArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate JSON-lines events, encode them as Avro and publish them (idempotent, acks=all).
    ///
    /// Each line is one event in the JSON form of SPEC 2 (`--file`), or one catalog event
    /// (`--catalog`: a price change or a restock, keyed by product). Rejected lines are reported
    /// with their line number and error codes and nothing of them is published; the exit code is 1
    /// when any line was rejected.
    #[command(group(clap::ArgGroup::new("input").required(true).args(["file", "catalog"])))]
    Produce {
        /// JSON-lines file of touchpoint events; `-` reads standard input.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Topic the touchpoint events go to.
        #[arg(long, env = "EVENTS_TOPIC", default_value = EVENTS)]
        topic: String,
        /// JSON-lines file of catalog events instead; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Topic the catalog events go to.
        #[arg(long, env = "CATALOG_TOPIC", default_value = CATALOG_EVENTS)]
        catalog_topic: String,
    },
    /// Print the records of a topic as JSON lines, decoding Avro (read_committed).
    Tail(tail::TailArgs),
    /// Simulate omnichannel customer journeys, deterministic for a seed.
    Simulate(simulate::SimulateArgs),
    /// The dead-letter topic: replay records the current rules accept (after a fix).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// A live view of a few customers through the customer-api.
    Watch(watch::WatchArgs),
    /// Loyalty ledger maintenance.
    Loyalty {
        #[command(subcommand)]
        command: LoyaltyCommand,
    },
    /// Identity resolution (docs/identity.md).
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Journey definitions (docs/journeys.md).
    Journeys {
        #[command(subcommand)]
        command: JourneysCommand,
    },
    /// Print the service registry (names, admin ports, inputs, outputs, changelogs) as JSON:
    /// what `deploy/services.json` holds for the demo and the Kubernetes checks.
    Services,
    /// Manage the pipeline topics of SPEC 3.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Publish dead-lettered records back to the events topic, once per source record, if they
    /// now pass validation.
    Replay(dlq::ReplayArgs),
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Why an id is the customer it is: its canonical customer, each identifier with the event
    /// that linked it, every merge with its evidence (through the customer-api). Exit 1: unknown.
    Explain(identity::ExplainArgs),
}

#[derive(Debug, Subcommand)]
enum JourneysCommand {
    /// Check definition files: a summary of each journey that can run, else every problem with
    /// its line. Exit 1: a file has a problem.
    Check(journeys::CheckArgs),
    /// Publish checked definition files to `journey.definitions.v1`, one record per version.
    /// Exit 1: a file has a problem (nothing is published) or its version is taken.
    Publish(journeys::PublishArgs),
    /// Send the journeys' decisions: each `send` through its channel's webhook (the decision id
    /// as `Idempotency-Key`, retried with backoff), then its `message_sent` to the events topic.
    /// Runs until interrupted.
    Dispatch(dispatch::DispatchArgs),
}

#[derive(Debug, Subcommand)]
enum LoyaltyCommand {
    /// Print (as JSON lines for `omni produce`) the adjustments that give back points expired
    /// before their calendar date by state version 1; run again, it prints only what is missing.
    ExpiryCorrections(loyalty::ExpiryCorrectionsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    logging::init(LogFormat::Text);
    let cli = Cli::parse();
    if let Err(error) = avro::init(cli.registry.clone()) {
        eprintln!("omni: {error:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Produce { file, topic, catalog, catalog_topic } => {
            let (file, topic, lines) = match (catalog, file) {
                (Some(catalog), _) => (catalog, catalog_topic, Lines::Catalog),
                (None, Some(file)) => (file, topic, Lines::Touchpoint),
                (None, None) => unreachable!("clap requires one of --file and --catalog"),
            };
            publisher::produce_file(&cli.kafka, &file, &topic, lines).await
        }
        Command::Tail(args) => tail::run(&cli.kafka, args).await,
        Command::Simulate(args) => simulate::run(&cli.kafka, args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Dlq { command: DlqCommand::Replay(args) } => dlq::replay(&cli.kafka, args).await,
        Command::Loyalty { command: LoyaltyCommand::ExpiryCorrections(args) } => {
            loyalty::expiry_corrections_command(&cli.kafka, args).await
        }
        Command::Identity { command: IdentityCommand::Explain(args) } => identity::explain(args).await,
        Command::Journeys { command: JourneysCommand::Check(args) } => journeys::check(args),
        Command::Journeys { command: JourneysCommand::Publish(args) } => {
            journeys::publish(&cli.kafka, args).await
        }
        Command::Journeys { command: JourneysCommand::Dispatch(args) } => {
            dispatch::run(&cli.kafka, args).await
        }
        Command::Topics { command } => topics::run(&cli.kafka, command).await,
        Command::Services => {
            print!("{}", omnistream_model::services::registry_json());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("omni: {error:#}");
            ExitCode::from(2)
        }
    }
}
