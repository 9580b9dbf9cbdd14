//! The journeys core on the runtime: a processor of the (resolved) customer's events with the
//! published definitions as a broadcast input, timers for waits, and two outputs, the send
//! decisions (`journey.actions.v1`) and each customer's state (`journey.states.v1`).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use omnistream_model::records::{CustomerJourneyState, JourneyAction, JourneyDefinition};
use omnistream_model::{EventPayload, OutputRecord, TouchpointEvent, decode_record};
use omnistream_runtime::{LookupInput, LookupScope, Lookups};
use omnistream_runtime::{Output, Processor};

use crate::Journey;
use crate::core::{CustomerJourneys, Decision, Definitions, Engine};
use crate::records::{action_record, state_record};

/// Output roles (bound to topics by configuration).
pub const ACTIONS_OUTPUT: &str = "actions";
pub const STATES_OUTPUT: &str = "states";
/// The broadcast input of published definitions (`journey.definitions.v1`).
pub const DEFINITIONS_INPUT: &str = "definitions";

/// What journeys writes.
#[derive(Debug, Clone, PartialEq)]
pub enum JourneyRecord {
    Action(JourneyAction),
    State(CustomerJourneyState),
}

impl OutputRecord for JourneyRecord {
    fn encode(&self) -> Vec<u8> {
        match self {
            JourneyRecord::Action(action) => action.encode(),
            JourneyRecord::State(state) => state.encode(),
        }
    }
}

/// Published definitions read once per distinct record: the definitions topic is read by every
/// record and timer, and reading TOML each time would cost more than the journey.
type ParsedCache = HashMap<u64, Option<Arc<Journey>>>;

#[derive(Debug)]
pub struct JourneysProcessor {
    engine: Engine,
    parsed: Mutex<ParsedCache>,
}

impl JourneysProcessor {
    pub fn new(engine: Engine) -> Self {
        Self { engine, parsed: Mutex::new(HashMap::new()) }
    }

    /// The definitions published as of the lookup time. A record that does not decode or check
    /// is left out (`omni journeys publish` checks before it writes; a newer build may write
    /// what this one cannot read).
    fn definitions(&self, lookups: &Lookups<'_>) -> Definitions {
        let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let mut parsed = self.parsed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut definitions = Definitions::default();
        for (_, bytes) in lookups.entries(DEFINITIONS_INPUT) {
            let journey = parsed
                .entry(hasher.hash_one(bytes))
                .or_insert_with(|| {
                    let record: JourneyDefinition = decode_record(bytes).ok()?;
                    crate::check(&record.source).ok().map(Arc::new)
                })
                .clone();
            if let Some(journey) = journey {
                definitions.insert((*journey).clone());
            }
        }
        definitions
    }

    fn outputs(
        customer_id: &str,
        state: &CustomerJourneys,
        shown_before: Option<Shown>,
        decisions: Vec<Decision>,
        definitions: &Definitions,
    ) -> Vec<Output<JourneyRecord>> {
        let mut outputs: Vec<Output<JourneyRecord>> = decisions
            .iter()
            .map(|decision| {
                let record = JourneyRecord::Action(action_record(decision));
                Output::new(ACTIONS_OUTPUT, customer_id.to_owned(), Some(record))
            })
            .collect();
        if shown_before != Some(Shown::of(state)) {
            let record = JourneyRecord::State(state_record(customer_id, state, definitions));
            outputs.push(Output::new(STATES_OUTPUT, customer_id.to_owned(), Some(record)));
        }
        outputs
    }
}

/// What the state record shows: written again only when it changes.
#[derive(Debug, PartialEq)]
struct Shown {
    entries: Vec<(String, u32, String, usize, Option<i64>)>,
    ended: usize,
    last_end: Option<(String, i64)>,
}

impl Shown {
    fn of(state: &CustomerJourneys) -> Self {
        Self {
            entries: state
                .entries
                .iter()
                .map(|e| (e.journey.clone(), e.version, e.entry_id.clone(), e.step, e.waiting_until))
                .collect(),
            ended: state.ended.len(),
            last_end: state.ended.last().map(|e| (e.entry_id.clone(), e.at)),
        }
    }
}

impl Processor for JourneysProcessor {
    type Input = TouchpointEvent;
    type State = CustomerJourneys;
    type Record = JourneyRecord;
    const OUTPUTS: &'static [&'static str] = &[ACTIONS_OUTPUT, STATES_OUTPUT];
    const LOOKUPS: &'static [LookupInput] =
        &[LookupInput { role: DEFINITIONS_INPUT, scope: LookupScope::Broadcast }];

    /// Without lookups no journey is published: the events still feed the embedded cores.
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
        if let EventPayload::ErasureRequested = event.payload {
            // Forgotten, entries and all (SPEC 4.5): the state record goes.
            *state = None;
            return vec![Output::new(STATES_OUTPUT, event.customer_id.clone(), None)];
        }
        let definitions = self.definitions(lookups);
        let customer = state.get_or_insert_with(CustomerJourneys::default);
        let before = Shown::of(customer);
        let decisions =
            self.engine.apply(&definitions, customer, &event.customer_id, event, now.timestamp_millis());
        Self::outputs(&event.customer_id, customer, Some(before), decisions, &definitions)
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
        let Some(customer) = state else { return Vec::new() };
        let definitions = self.definitions(lookups);
        let before = Shown::of(customer);
        let decisions = self.engine.on_timer(&definitions, customer, customer_id, now.timestamp_millis());
        Self::outputs(customer_id, customer, Some(before), decisions, &definitions)
    }
}
