//! journeys on the runtime: reads the (resolved) events, keyed by customer, with the published
//! definitions as a broadcast input; writes each send decision to `journey.actions.v1` and the
//! customer's journeys to `journey.states.v1`. The core decides; this only feeds it.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    CatalogEvent, CustomerJourneyState, JourneyAction, JourneyDefinition, JourneyOutcome,
};
use omnistream_model::{EventPayload, OutputRecord, TouchpointEvent, decode_record};
use omnistream_runtime::{LookupInput, LookupScope, Lookups, Output, Processor};

use crate::core::{CustomerJourneys, Decision, Definitions, EndReason, Ended, Engine, EntryState};
use crate::records::{action_record, state_record};

/// The broadcast input of published definitions (`--definitions-topic`).
pub const DEFINITIONS_INPUT: &str = "definitions";
/// The broadcast input of catalog events (`--catalog-topic`), keyed by product: watched for the
/// products each customer viewed.
pub const CATALOG_INPUT: &str = "catalog";
pub const ACTIONS_OUTPUT: &str = "actions";
pub const STATES_OUTPUT: &str = "states";

/// One record journeys writes.
#[derive(Debug, Clone, PartialEq)]
pub enum JourneyRecord {
    Action(JourneyAction),
    State {
        record: CustomerJourneyState,
        /// What changed, for the metrics (not written): `journey_entered`, `journey_ended_<reason>`.
        transitions: Vec<&'static str>,
    },
}

impl OutputRecord for JourneyRecord {
    fn encode(&self) -> Vec<u8> {
        match self {
            JourneyRecord::Action(action) => action.encode(),
            JourneyRecord::State { record, .. } => record.encode(),
        }
    }
}

/// The processor: the core's rules and a cache of the parsed definitions.
#[derive(Debug)]
pub struct Journeys {
    engine: Engine,
    cache: Mutex<DefinitionCache>,
}

/// The definitions of the last lookup, with the bytes they were parsed from: a lookup that lists
/// the same bytes (nearly every one: definitions change rarely) reuses them without parsing.
#[derive(Debug, Default)]
struct DefinitionCache {
    /// Each published record's key and bytes, in key order.
    read: Vec<(String, Vec<u8>)>,
    parsed: Arc<Definitions>,
}

impl Journeys {
    pub fn new(engine: Engine) -> Self {
        Self { engine, cache: Mutex::new(DefinitionCache::default()) }
    }

    /// The definitions published as of the lookup time: every version, each parsed and checked
    /// once. A record that no longer passes `check` (published by another release) is left out
    /// with an error in the log: its entries end as withdrawn rather than run a flow this build
    /// reads differently.
    fn definitions(&self, lookups: &Lookups<'_>) -> Arc<Definitions> {
        let listed = lookups.entries(DEFINITIONS_INPUT);
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let unchanged = cache.read.len() == listed.len()
            && cache.read.iter().zip(&listed).all(|((key, bytes), (listed_key, listed_bytes))| {
                key == listed_key && bytes.as_slice() == *listed_bytes
            });
        if unchanged {
            return Arc::clone(&cache.parsed);
        }
        let mut definitions = Definitions::default();
        for (key, bytes) in &listed {
            match parse(bytes) {
                Ok(journey) => definitions.insert(journey),
                Err(problem) => tracing::error!(key, %problem, "a published journey definition is left out"),
            }
        }
        cache.read = listed.iter().map(|(key, bytes)| ((*key).to_owned(), bytes.to_vec())).collect();
        cache.parsed = Arc::new(definitions);
        Arc::clone(&cache.parsed)
    }
}

fn parse(bytes: &[u8]) -> Result<crate::Journey, String> {
    let record: JourneyDefinition = decode_record(bytes).map_err(|error| error.to_string())?;
    let journey = crate::check(&record.source).map_err(|problems| problems.to_string())?;
    let key_matches =
        journey.id == record.journey_id && i32::try_from(journey.version).is_ok_and(|v| v == record.version);
    if !key_matches {
        return Err(format!(
            "the record names {}:{}, its source {}:{}",
            record.journey_id, record.version, journey.id, journey.version
        ));
    }
    Ok(journey)
}

impl Processor for Journeys {
    type Input = TouchpointEvent;
    type State = CustomerJourneys;
    type Record = JourneyRecord;
    const OUTPUTS: &'static [&'static str] = &[ACTIONS_OUTPUT, STATES_OUTPUT];
    const LOOKUPS: &'static [LookupInput] = &[
        LookupInput { role: DEFINITIONS_INPUT, scope: LookupScope::Broadcast },
        LookupInput { role: CATALOG_INPUT, scope: LookupScope::Broadcast },
    ];
    const WATCHED: Option<&'static str> = Some(CATALOG_INPUT);

    fn watches<'s>(&self, state: &'s CustomerJourneys) -> Vec<(&'s str, i64)> {
        state.interests.iter().map(|interest| (interest.product_id.as_str(), interest.seen_through)).collect()
    }

    /// As [`Self::apply_with_lookups`] with no journey published (the runtime always gives the
    /// lookups; this is for a caller without them): every entry ends as withdrawn.
    fn apply(
        &self,
        state: &mut Option<CustomerJourneys>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<JourneyRecord>> {
        self.apply_with_lookups(state, event, now, &Lookups::none())
    }

    fn apply_with_lookups(
        &self,
        state: &mut Option<CustomerJourneys>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
        lookups: &Lookups<'_>,
    ) -> Vec<Output<JourneyRecord>> {
        let customer_id = event.customer_id.as_str();
        if matches!(event.payload, EventPayload::ErasureRequested) {
            let known = state.take().is_some();
            return match known {
                true => vec![Output::new(STATES_OUTPUT, customer_id.to_owned(), None)],
                false => Vec::new(),
            };
        }
        if let EventPayload::CustomersMerged { .. } = event.payload {
            // Merged away: the runtime hands the journeys to the winner; the record goes.
            return match state.is_some() {
                true => vec![Output::new(STATES_OUTPUT, customer_id.to_owned(), None)],
                false => Vec::new(),
            };
        }
        let definitions = self.definitions(lookups);
        let journeys = state.get_or_insert_with(CustomerJourneys::default);
        let before = Before::of(journeys);
        let decisions = self.engine.apply(&definitions, journeys, customer_id, event, now.timestamp_millis());
        outputs(customer_id, &decisions, &before, journeys, &definitions)
    }

    /// Merges (identity resolution, docs/journeys.md, "Merges"): the loser's entries go on
    /// under the winner, one per journey.
    const HANDS_OFF_STATE: bool = true;

    fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
        event.merge_winner().map(str::to_owned)
    }

    fn merge_with_lookups(
        &self,
        state: &mut Option<CustomerJourneys>,
        customer_id: &str,
        from: &str,
        _cause: &str,
        handed: CustomerJourneys,
        now: DateTime<Utc>,
        lookups: &Lookups<'_>,
    ) -> Vec<Output<JourneyRecord>> {
        let definitions = self.definitions(lookups);
        let journeys = state.get_or_insert_with(CustomerJourneys::default);
        let ended =
            self.engine.merge(&definitions, journeys, customer_id, from, handed, now.timestamp_millis());
        // A customer who was never in a journey still has no record.
        if journeys.entries.is_empty() && journeys.ended.is_empty() {
            return Vec::new();
        }
        let record = state_record(customer_id, journeys, &definitions);
        // Moved entries are not new: only those the merge ended count.
        let transitions = ended.iter().map(ended_metric).collect();
        vec![Output::new(
            STATES_OUTPUT,
            customer_id.to_owned(),
            Some(JourneyRecord::State { record, transitions }),
        )]
    }

    fn next_timer(&self, state: &CustomerJourneys) -> Option<DateTime<Utc>> {
        Engine::next_timer(state).and_then(DateTime::from_timestamp_millis)
    }

    fn on_timer_with_lookups(
        &self,
        state: &mut Option<CustomerJourneys>,
        customer_id: &str,
        now: DateTime<Utc>,
        lookups: &Lookups<'_>,
    ) -> Vec<Output<JourneyRecord>> {
        let Some(journeys) = state else { return Vec::new() };
        let definitions = self.definitions(lookups);
        let before = Before::of(journeys);
        let now = now.timestamp_millis();
        let mut decisions = self.engine.on_timer(&definitions, journeys, customer_id, now);
        Engine::forget_stale_interests(journeys, &definitions, now);
        for event in catalog_events_unseen(journeys, lookups) {
            decisions.extend(self.engine.on_catalog(&definitions, journeys, customer_id, &event, now));
        }
        Engine::seen_catalog(journeys, lookups.as_of());
        outputs(customer_id, &decisions, &before, journeys, &definitions)
    }

    fn count_domain_events(
        &self,
        _input: Option<&TouchpointEvent>,
        outputs: &[Output<JourneyRecord>],
        count: &mut dyn FnMut(&'static str),
    ) {
        for output in outputs {
            match &output.value {
                Some(JourneyRecord::Action(action)) => count(match action.outcome {
                    JourneyOutcome::Send => "journey_decision_send",
                    JourneyOutcome::Skipped => "journey_decision_skipped",
                    JourneyOutcome::Waiting => "journey_decision_waiting",
                    JourneyOutcome::Exited => "journey_decision_exited",
                }),
                Some(JourneyRecord::State { transitions, .. }) => {
                    transitions.iter().for_each(|name| count(name))
                }
                _ => {}
            }
        }
    }
}

/// Every catalog event of the customer's viewed products appended since they were last seen, up
/// to the lookups' time, in append order. A record this build cannot read is left out with an
/// error in the log (the topic's writers are the gateway and `omni produce`, which check it).
fn catalog_events_unseen(journeys: &CustomerJourneys, lookups: &Lookups<'_>) -> Vec<CatalogEvent> {
    let mut unseen: Vec<(i64, CatalogEvent)> = journeys
        .interests
        .iter()
        .flat_map(|interest| {
            let versions = lookups.versions_after(CATALOG_INPUT, &interest.product_id, interest.seen_through);
            versions.into_iter().filter_map(|(bytes, appended)| match decode_record::<CatalogEvent>(bytes) {
                Ok(event) => Some((appended, event)),
                Err(error) => {
                    tracing::error!(product_id = interest.product_id, %error, "a catalog event is left out");
                    None
                }
            })
        })
        .collect();
    unseen.sort_by_key(|(appended, _)| *appended);
    unseen.into_iter().map(|(_, event)| event).collect()
}

/// What a customer's journeys were before an event or timer, to tell what it changed.
struct Before {
    entries: Vec<EntryState>,
    last_end: Option<Ended>,
}

impl Before {
    fn of(state: &CustomerJourneys) -> Self {
        Self { entries: state.entries.clone(), last_end: state.ended.last().cloned() }
    }

    fn changed(&self, state: &CustomerJourneys) -> bool {
        self.entries != state.entries || self.last_end.as_ref() != state.ended.last()
    }

    /// The entries that ended since, oldest first: those after the last one known (the list
    /// drops its oldest first).
    fn ended_since<'a>(&self, state: &'a CustomerJourneys) -> &'a [Ended] {
        let from = match &self.last_end {
            Some(last) => state.ended.iter().rposition(|ended| ended == last).map_or(0, |at| at + 1),
            None => 0,
        };
        &state.ended[from..]
    }

    /// What changed, by metric name: an entry started (also one that ended at once), an entry
    /// ended, by reason.
    fn transitions(&self, state: &CustomerJourneys) -> Vec<&'static str> {
        let was_in = |journey: &str, entry_id: &str| {
            self.entries.iter().any(|entry| entry.journey == journey && entry.entry_id == entry_id)
        };
        let ended = self.ended_since(state);
        let entered = state.entries.iter().filter(|entry| !was_in(&entry.journey, &entry.entry_id)).count()
            + ended.iter().filter(|end| !was_in(&end.journey, &end.entry_id)).count();
        let reasons = ended.iter().map(|end| ended_metric(&end.reason));
        std::iter::repeat_n("journey_entered", entered).chain(reasons).collect()
    }
}

/// The metric of an entry's end, by reason.
fn ended_metric(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::Completed => "journey_ended_completed",
        EndReason::Goal { .. } => "journey_ended_goal",
        EndReason::Exited { .. } => "journey_ended_exited",
        EndReason::ExitStep { .. } => "journey_ended_exit_step",
        EndReason::Suppressed => "journey_ended_suppressed",
        EndReason::Withdrawn => "journey_ended_withdrawn",
        EndReason::Merged { .. } => "journey_ended_merged",
    }
}

/// The decisions' records, and the customer's journeys record when an entry started, moved or
/// ended.
fn outputs(
    customer_id: &str,
    decisions: &[Decision],
    before: &Before,
    state: &CustomerJourneys,
    definitions: &Definitions,
) -> Vec<Output<JourneyRecord>> {
    let mut outputs: Vec<Output<JourneyRecord>> = decisions
        .iter()
        .map(|decision| {
            let record = JourneyRecord::Action(action_record(decision));
            Output::new(ACTIONS_OUTPUT, customer_id.to_owned(), Some(record))
        })
        .collect();
    if before.changed(state) {
        let record = state_record(customer_id, state, definitions);
        let value = JourneyRecord::State { record, transitions: before.transitions(state) };
        outputs.push(Output::new(STATES_OUTPUT, customer_id.to_owned(), Some(value)));
    }
    outputs
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use omnistream_channel_affinity::AffinityConfig;
    use omnistream_model::event_from_json;
    use omnistream_suppression::Rules;
    use serde_json::json;

    use super::*;

    const FLOW: &str = r#"
id = "flow"
version = 1
[entry]
event = "page_viewed"
[[goals]]
event = "order_placed"
[[steps]]
id = "offer"
send = { channel = "email", template = "t" }
[[steps]]
id = "pause"
wait = { for = "1h" }
"#;

    fn event(id: &str, kind: &str, at: &str, properties: serde_json::Value) -> TouchpointEvent {
        let json = json!({
            "event_id": id, "customer_id": "c-1", "occurred_at": at, "channel": "web",
            "type": kind, "properties": properties,
        });
        event_from_json(&json, Utc::now()).expect("a valid event")
    }

    /// Applies `event` as of its time; the metric names its outputs count and whether the
    /// customer's journeys record was written.
    fn step(
        journeys: &Journeys,
        definitions: &Definitions,
        state: &mut CustomerJourneys,
        event: &TouchpointEvent,
    ) -> (Vec<&'static str>, bool) {
        let before = Before::of(state);
        let now = event.occurred_at.timestamp_millis();
        let decisions = journeys.engine.apply(definitions, state, "c-1", event, now);
        let outputs = outputs("c-1", &decisions, &before, state, definitions);
        let mut names = Vec::new();
        journeys.count_domain_events(Some(event), &outputs, &mut |name| names.push(name));
        (names, outputs.iter().any(|output| output.role == STATES_OUTPUT))
    }

    /// The processor with the default rules, and [`FLOW`] published.
    fn given_the_flow() -> (Journeys, Definitions) {
        let journeys = Journeys::new(Engine {
            suppression: Arc::new(Rules::default().prepare()),
            affinity: AffinityConfig::default(),
        });
        let mut definitions = Definitions::default();
        definitions.insert(crate::check(FLOW).expect("a valid flow"));
        (journeys, definitions)
    }

    #[test]
    fn an_entry_its_send_and_its_goal_are_counted_once_and_an_event_that_changes_nothing_writes_nothing() {
        let (journeys, definitions) = given_the_flow();
        let mut state = CustomerJourneys::default();
        let view = event("v-1", "page_viewed", "2026-12-03T12:00:00Z", json!({"url": "/"}));
        assert_eq!(
            step(&journeys, &definitions, &mut state, &view),
            (vec!["journey_decision_send", "journey_entered"], true)
        );
        let retried = step(&journeys, &definitions, &mut state, &view);
        assert_eq!(retried, (vec![], false), "a retry of the trigger enters nothing and writes nothing");
        let order = json!({"order_id": "o-1", "value_minor": 100, "currency": "EUR"});
        let order = event("o-1", "order_placed", "2026-12-03T12:10:00Z", order);
        assert_eq!(step(&journeys, &definitions, &mut state, &order), (vec!["journey_ended_goal"], true));
    }

    #[test]
    fn a_merge_tombstones_the_losers_record_and_the_winners_counts_only_the_entries_it_ended() {
        let (journeys, definitions) = given_the_flow();
        let mut loser = CustomerJourneys::default();
        step(
            &journeys,
            &definitions,
            &mut loser,
            &event("v-1", "page_viewed", "2026-12-03T12:00:00Z", json!({"url": "/"})),
        );
        let mut winner = CustomerJourneys::default();
        step(
            &journeys,
            &definitions,
            &mut winner,
            &event("v-2", "page_viewed", "2026-12-03T12:05:00Z", json!({"url": "/"})),
        );
        let mut merge = event("m-1", "page_viewed", "2026-12-03T12:10:00Z", json!({"url": "/"}));
        merge.payload = EventPayload::CustomersMerged {
            winner: "c-0".into(),
            merge_id: "m".into(),
            identifier_type: "email".into(),
            identifier_value: "a@example.com".into(),
            evidence_event_id: "e-9".into(),
        };
        assert_eq!(journeys.handoff_target(&merge).as_deref(), Some("c-0"));
        let mut held = Some(loser);
        let before = held.clone();
        let outputs = journeys.apply(&mut held, &merge, merge.occurred_at);
        assert_eq!(outputs.len(), 1);
        assert_eq!((outputs[0].key.as_str(), outputs[0].value.is_none()), ("c-1", true));
        assert_eq!(held, before, "untouched: the runtime moves it");
        let mut state = Some(winner);
        let handed = held.expect("the loser's journeys");
        // The flow as published: what the cache holds for the lookups (none here) it last read.
        journeys.cache.lock().expect("cache").parsed = Arc::new(definitions.clone());
        let outputs = journeys.merge_with_lookups(
            &mut state,
            "c-0",
            "c-1",
            "m-1",
            handed,
            merge.occurred_at,
            &Lookups::none(),
        );
        let mut names = Vec::new();
        journeys.count_domain_events(None, &outputs, &mut |name| names.push(name));
        assert_eq!(names, ["journey_ended_merged"], "the moved entry is not a new one");
        let Some(JourneyRecord::State { record, .. }) = &outputs[0].value else { panic!("{outputs:?}") };
        assert_eq!((record.customer_id.as_str(), record.entries[0].entry_id.as_str()), ("c-0", "v-1"));
        assert_eq!(record.last_exits[0].reason, omnistream_model::records::JourneyExitReason::Merged);
        assert_eq!(record.last_exits[0].detail.as_deref(), Some("v-1"));
        // A customer never in a journey still has no record after a merge of another such.
        let mut nobody = None;
        let outputs = journeys.merge_with_lookups(
            &mut nobody,
            "c-5",
            "c-6",
            "m-2",
            CustomerJourneys::default(),
            merge.occurred_at,
            &Lookups::none(),
        );
        assert!(outputs.is_empty(), "{outputs:?}");
    }
}
