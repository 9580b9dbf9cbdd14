//! journeys on the runtime: reads the (resolved) events, keyed by customer, with the published
//! definitions as a broadcast input; writes each send decision to `journey.actions.v1` and the
//! customer's journeys to `journey.states.v1`. The core decides; this only feeds it.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use omnistream_model::records::JourneyDefinition;
use omnistream_model::{EventPayload, OutputRecord, TouchpointEvent, decode_record};
use omnistream_runtime::{LookupInput, LookupScope, Lookups, Output, Processor};

use crate::core::{CustomerJourneys, Decision, Definitions, Engine};
use crate::records::{action_record, state_record};

/// The broadcast input of published definitions (`--definitions-topic`).
pub const DEFINITIONS_INPUT: &str = "definitions";
pub const ACTIONS_OUTPUT: &str = "actions";
pub const STATES_OUTPUT: &str = "states";

/// One record journeys writes.
#[derive(Debug, Clone, PartialEq)]
pub enum JourneyRecord {
    Action(omnistream_model::records::JourneyAction),
    State(omnistream_model::records::CustomerJourneyState),
}

impl OutputRecord for JourneyRecord {
    fn encode(&self) -> Vec<u8> {
        match self {
            JourneyRecord::Action(action) => action.encode(),
            JourneyRecord::State(state) => state.encode(),
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
    const LOOKUPS: &'static [LookupInput] =
        &[LookupInput { role: DEFINITIONS_INPUT, scope: LookupScope::Broadcast }];

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
        let definitions = self.definitions(lookups);
        let journeys = state.get_or_insert_with(CustomerJourneys::default);
        let (before_entries, before_last_end) = (journeys.entries.clone(), journeys.ended.last().cloned());
        let decisions = self.engine.apply(&definitions, journeys, customer_id, event, now.timestamp_millis());
        let changed = before_entries != journeys.entries || before_last_end.as_ref() != journeys.ended.last();
        changed_outputs(customer_id, &decisions, changed, journeys, &definitions)
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
        let decisions = self.engine.on_timer(&definitions, journeys, customer_id, now.timestamp_millis());
        changed_outputs(customer_id, &decisions, true, journeys, &definitions)
    }

    fn count_domain_events(
        &self,
        _event: &TouchpointEvent,
        outputs: &[Output<JourneyRecord>],
        count: &mut dyn FnMut(&'static str),
    ) {
        for output in outputs {
            if let Some(JourneyRecord::Action(action)) = &output.value {
                count(match action.outcome {
                    omnistream_model::records::JourneyOutcome::Send => "journey_decision_send",
                    omnistream_model::records::JourneyOutcome::Skipped => "journey_decision_skipped",
                    omnistream_model::records::JourneyOutcome::Waiting => "journey_decision_waiting",
                    omnistream_model::records::JourneyOutcome::Exited => "journey_decision_exited",
                });
            }
        }
    }
}

/// The decisions' records, and the customer's journeys record when their entries or ends changed.
fn changed_outputs(
    customer_id: &str,
    decisions: &[Decision],
    changed: bool,
    state: &CustomerJourneys,
    definitions: &Definitions,
) -> Vec<Output<JourneyRecord>> {
    let mut outputs: Vec<Output<JourneyRecord>> = decisions
        .iter()
        .map(|decision| {
            Output::new(
                ACTIONS_OUTPUT,
                customer_id.to_owned(),
                Some(JourneyRecord::Action(action_record(decision))),
            )
        })
        .collect();
    if changed {
        let record = state_record(customer_id, state, definitions);
        outputs.push(Output::new(STATES_OUTPUT, customer_id.to_owned(), Some(JourneyRecord::State(record))));
    }
    outputs
}
