//! `omni journeys`: journey definitions (docs/journeys.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use omnistream_journeys::definition::{Action, Trigger};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Definition files (TOML).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Checks each file: a one-line summary of a journey that can run, else every problem as
/// `FILE:LINE: message`. Exit 1 when any file has a problem.
pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for file in &args.files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
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
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
