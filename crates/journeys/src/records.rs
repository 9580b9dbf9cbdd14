//! The core's decisions and state as the records downstream reads (`journey.actions.v1`,
//! `journey.states.v1`; schemas/journey_action.avsc, schemas/journey_state.avsc).

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    ConsideredChannel, CustomerJourneyState, JourneyAction, JourneyEntry, JourneyExit, JourneyExitReason,
    JourneyOutcome, SuppressionStatus,
};

use crate::core::{CustomerJourneys, Decision, Definitions, EndReason, Outcome};

fn time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

fn version(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

/// A decision's `journey.actions.v1` record.
pub fn action_record(decision: &Decision) -> JourneyAction {
    let (outcome, channel, waiting_until) = match decision.outcome {
        Outcome::Send(channel) => (JourneyOutcome::Send, Some(channel.as_str().to_owned()), None),
        Outcome::Skipped => (JourneyOutcome::Skipped, None, None),
        Outcome::Waiting { until } => (JourneyOutcome::Waiting, None, Some(time(until))),
        Outcome::Exited => (JourneyOutcome::Exited, None, None),
    };
    JourneyAction {
        decision_id: decision.decision_id.clone(),
        customer_id: decision.customer_id.clone(),
        journey_id: decision.journey.clone(),
        journey_version: version(decision.version),
        entry_id: decision.entry_id.clone(),
        entry_key: decision.entry_key.clone(),
        step: decision.step.clone(),
        attempt: i32::try_from(decision.attempt).unwrap_or(i32::MAX),
        decided_at: time(decision.decided_at),
        template: decision.template.clone(),
        outcome,
        channel,
        waiting_until,
        considered: decision
            .considered
            .iter()
            .map(|considered| ConsideredChannel {
                channel: considered.channel.as_str().to_owned(),
                status: match considered.status {
                    SuppressionStatus::Allowed => "allowed",
                    SuppressionStatus::Blocked => "blocked",
                    SuppressionStatus::Deferred => "deferred",
                }
                .to_owned(),
                reason: considered.reason.clone(),
                until: considered.until.map(time),
            })
            .collect(),
        ranking: decision.ranking.iter().map(|channel| channel.as_str().to_owned()).collect(),
    }
}

/// A customer's `journey.states.v1` record: steps named as their journey's version names them.
pub fn state_record(
    customer_id: &str,
    state: &CustomerJourneys,
    definitions: &Definitions,
) -> CustomerJourneyState {
    CustomerJourneyState {
        customer_id: customer_id.to_owned(),
        entries: state
            .entries
            .iter()
            .map(|entry| JourneyEntry {
                journey_id: entry.journey.clone(),
                journey_version: version(entry.version),
                entry_id: entry.entry_id.clone(),
                entered_at: time(entry.entered_at),
                step: definitions
                    .get(&entry.journey, entry.version)
                    .and_then(|journey| journey.steps.get(entry.step))
                    .map_or_else(|| format!("#{}", entry.step), |step| step.id.clone()),
                step_since: time(entry.step_since),
                waiting_until: entry.waiting_until.map(time),
            })
            .collect(),
        last_exits: state
            .ended
            .iter()
            .map(|ended| {
                let (reason, detail) = match &ended.reason {
                    EndReason::Completed => (JourneyExitReason::Completed, None),
                    EndReason::Goal { event_id } => (JourneyExitReason::Goal, Some(event_id.clone())),
                    EndReason::Exited { event_id } => (JourneyExitReason::Exited, Some(event_id.clone())),
                    EndReason::ExitStep { reason } => (JourneyExitReason::ExitStep, Some(reason.clone())),
                    EndReason::Suppressed => (JourneyExitReason::Suppressed, None),
                    EndReason::Withdrawn => (JourneyExitReason::Withdrawn, None),
                    EndReason::Merged { continued_by } => (JourneyExitReason::Merged, continued_by.clone()),
                };
                JourneyExit {
                    journey_id: ended.journey.clone(),
                    journey_version: version(ended.version),
                    entry_id: ended.entry_id.clone(),
                    at: time(ended.at),
                    reason,
                    detail,
                }
            })
            .collect(),
    }
}
