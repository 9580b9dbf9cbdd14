//! `omni journeys`: journey definitions (docs/journeys.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use omnistream_journeys::Journey;
use omnistream_journeys::definition::{Action, Trigger};
use omnistream_model::records::JourneyDefinition;
use omnistream_model::topics::JOURNEY_DEFINITIONS;
use omnistream_model::{OutputRecord, decode_record};
use omnistream_runtime::KafkaArgs;
use rdkafka::message::Message;

use crate::publisher::Publisher;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Definition files (TOML).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Checks each file: a one-line summary of a journey that can run, else every problem as
/// `FILE:LINE: message`. Exit 1 when any file has a problem, 2 when one could not be read.
pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut unreadable = false;
    for file in &args.files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                // The others are still checked; exit 2 says one could not be.
                eprintln!("omni: reading {}: {error}", file.display());
                unreadable = true;
                continue;
            }
        };
        match omnistream_journeys::check(&text) {
            Ok(journey) => {
                let entry = match &journey.entry.trigger {
                    Trigger::Event(filter) => filter.event.to_string(),
                    Trigger::Catalog { change, .. } => change.as_str().to_owned(),
                };
                let sends =
                    journey.steps.iter().filter(|step| matches!(step.action, Action::Send { .. })).count();
                println!(
                    "{}: ok: {} version {}, enters on {entry}; steps: {}, sends: {sends}",
                    file.display(),
                    journey.id,
                    journey.version,
                    journey.steps.len()
                );
            }
            Err(problems) => {
                failed = true;
                for problem in problems.0 {
                    println!("{}:{}: {}", file.display(), problem.line, problem.message);
                }
            }
        }
    }
    Ok(match (unreadable, failed) {
        (true, _) => ExitCode::from(2),
        (false, true) => ExitCode::FAILURE,
        (false, false) => ExitCode::SUCCESS,
    })
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Definition files (TOML), each checked first: nothing is published if one has a problem.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The definitions topic (compacted, one record per journey version).
    #[arg(long, env = "JOURNEY_DEFINITIONS_TOPIC", default_value = JOURNEY_DEFINITIONS)]
    topic: String,
}

/// Publishes each file as version `version` of its journey, keyed `id:version`: a version
/// published already with the same text is left as it is; with other text, or below the latest
/// version published, it is refused (an entry stays on the version it entered with, so a
/// version's text never changes). Exit 1 when a file is refused.
pub async fn publish(kafka: &KafkaArgs, args: PublishArgs) -> anyhow::Result<ExitCode> {
    let mut journeys: Vec<(PathBuf, String, Journey)> = Vec::new();
    let mut refused = false;
    for file in &args.files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        match omnistream_journeys::check(&text) {
            Ok(journey) => journeys.push((file.clone(), text, journey)),
            Err(problems) => {
                refused = true;
                for problem in problems.0 {
                    println!("{}:{}: {}", file.display(), problem.line, problem.message);
                }
            }
        }
    }
    if refused {
        println!("nothing published");
        return Ok(ExitCode::FAILURE);
    }
    crate::avro::prepare(&args.topic, omnistream_model::RecordKind::JourneyDefinition)?;
    let published = read_published(kafka, &args.topic)?;
    let mut publisher = Publisher::new(kafka, &args.topic)?;
    for (file, text, journey) in journeys {
        let key = format!("{}:{}", journey.id, journey.version);
        let latest = published.keys().filter(|(id, _)| *id == journey.id).map(|(_, version)| *version).max();
        match published.get(&(journey.id.clone(), journey.version)) {
            Some(existing) if existing.source == text => {
                println!("{}: {key} is published already", file.display());
            }
            Some(_) => {
                refused = true;
                println!(
                    "{}: {key} is published with other text: raise version (entries stay on the version they entered with)",
                    file.display()
                );
            }
            None if latest.is_some_and(|latest| latest > journey.version) => {
                refused = true;
                println!(
                    "{}: version {} of {} is below the latest published, {}",
                    file.display(),
                    journey.version,
                    journey.id,
                    latest.unwrap_or_default()
                );
            }
            None => {
                let record = JourneyDefinition {
                    journey_id: journey.id.clone(),
                    version: i32::try_from(journey.version).context("version over 2^31")?,
                    source: text,
                    published_at: chrono::Utc::now(),
                };
                publisher.send(&key, &record.encode()).await?;
                println!("{}: published {key}", file.display());
            }
        }
    }
    publisher.finish().await?;
    Ok(if refused { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Every version on the definitions topic, by (journey id, version); a tombstone withdraws one.
fn read_published(
    kafka: &KafkaArgs,
    topic: &str,
) -> anyhow::Result<BTreeMap<(String, u32), JourneyDefinition>> {
    let mut published = BTreeMap::new();
    crate::committed::each_to_end(kafka, topic, "journeys", |message| {
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
        let Some((id, version)) = key.rsplit_once(':') else { return Ok(()) };
        let Ok(version) = version.parse::<u32>() else { return Ok(()) };
        match message.payload() {
            Some(bytes) => {
                let definition: JourneyDefinition = decode_record(crate::avro::readable(bytes))
                    .with_context(|| format!("{topic} at {}@{}", message.partition(), message.offset()))?;
                published.insert((id.to_owned(), version), definition);
            }
            None => {
                published.remove(&(id.to_owned(), version));
            }
        }
        Ok(())
    })?;
    Ok(published)
}
