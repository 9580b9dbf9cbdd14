//! `omni loyalty expiry-corrections`: the `loyalty_points_adjusted` events that give back points
//! state version 1 expired before their calendar date (docs/loyalty-points.md, Existing state),
//! as JSON lines for review and then `omni produce`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use omnistream_loyalty_points::LoyaltyRules;
use omnistream_loyalty_points::corrections::{EXPIRY_RULE_CHANGE, expiry_corrections};
use omnistream_model::records::LoyaltyLedgerEntry;
use omnistream_model::topics::LOYALTY_LEDGER;
use omnistream_model::{decode_record, format_timestamp};
use omnistream_runtime::KafkaArgs;
use rdkafka::message::Message;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct ExpiryCorrectionsArgs {
    /// Ledger topic to read (from the beginning, read_committed).
    #[arg(long, default_value = LOYALTY_LEDGER)]
    ledger_topic: String,
    /// The loyalty rules file the service runs with (its expiry months); default: the SPEC's.
    #[arg(long, env = "LOYALTY_RULES")]
    rules: Option<PathBuf>,
    /// The channel the adjustments are published on.
    #[arg(long, default_value = "call_center")]
    channel: String,
}

pub async fn expiry_corrections_command(
    kafka: &KafkaArgs,
    args: ExpiryCorrectionsArgs,
) -> anyhow::Result<ExitCode> {
    let rules = match &args.rules {
        Some(path) => LoyaltyRules::from_file(path)?,
        None => LoyaltyRules::default(),
    };
    let kafka = kafka.clone();
    let topic = args.ledger_topic.clone();
    let ledger = tokio::task::spawn_blocking(move || read_ledger(&kafka, &topic)).await??;
    let now = format_timestamp(Utc::now());
    let corrections = expiry_corrections(&ledger, &rules);
    for correction in &corrections {
        let when = |millis| DateTime::<Utc>::from_timestamp_millis(millis).map(format_timestamp);
        let event = json!({
            "event_id": correction.event_id,
            "customer_id": correction.customer_id,
            "occurred_at": now,
            "channel": args.channel,
            "type": "loyalty_points_adjusted",
            "source": "omni loyalty expiry-corrections",
            // The two dates travel as context (SPEC 2 keeps unknown properties as strings).
            "properties": {
                "points": correction.points,
                "reason": EXPIRY_RULE_CHANGE,
                "expired_at": when(correction.expired_at),
                "calendar_expiry": when(correction.calendar_expiry),
            },
        });
        println!("{event}");
    }
    eprintln!("{} ledger entries read, {} corrections", ledger.len(), corrections.len());
    Ok(ExitCode::SUCCESS)
}

/// Every committed entry of the ledger, in offset order per partition.
fn read_ledger(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Vec<LoyaltyLedgerEntry>> {
    let mut entries = Vec::new();
    crate::committed::each_to_end(kafka, topic, "ledger", |message| {
        if let Some(value) = message.payload() {
            let entry =
                decode_record::<LoyaltyLedgerEntry>(crate::avro::readable(value)).with_context(|| {
                    format!("ledger record {}@{} does not decode", message.partition(), message.offset())
                })?;
            entries.push(entry);
        }
        Ok(())
    })?;
    Ok(entries)
}
