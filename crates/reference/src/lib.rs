//! The per-customer event counter: the smallest processor that makes every exactly-once mistake
//! visible. Its output for a customer is the sequence 1, 2, 3, ... with the event that caused each
//! step, so a lost event shows as a gap and a duplicate as a repeat.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_model::{EventPayload, TouchpointEvent};
use omnistream_runtime::{Output, Processor};
use serde::{Deserialize, Serialize};

/// Default output topic of the counter.
pub const COUNTS_TOPIC: &str = "customer.event-counts.v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    pub count: u64,
}

/// One output record of the counter (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRecord {
    pub customer_id: String,
    pub count: u64,
    pub event_id: String,
}

#[derive(Debug, Clone)]
pub struct EventCounter {
    pub output_topic: Arc<str>,
}

impl Processor for EventCounter {
    type State = CounterState;

    fn apply(
        &self,
        state: &mut Option<CounterState>,
        event: &TouchpointEvent,
        _now: DateTime<Utc>,
    ) -> Vec<Output> {
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output {
                topic: self.output_topic.clone(),
                key: event.customer_id.clone(),
                value: None,
            }];
        }
        let state = state.get_or_insert(CounterState { count: 0 });
        state.count += 1;
        let record = CountRecord {
            customer_id: event.customer_id.clone(),
            count: state.count,
            event_id: event.event_id.clone(),
        };
        let value = serde_json::to_vec(&record).expect("a count serializes");
        vec![Output { topic: self.output_topic.clone(), key: event.customer_id.clone(), value: Some(value) }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnistream_model::Channel;
    use std::collections::BTreeMap;

    fn event(id: &str, payload: EventPayload) -> TouchpointEvent {
        TouchpointEvent {
            event_id: id.to_owned(),
            customer_id: "c-1".to_owned(),
            occurred_at: DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            channel: Channel::Web,
            source: None,
            payload,
            context: BTreeMap::new(),
        }
    }

    fn counts(outputs: &[Output]) -> Vec<Option<u64>> {
        outputs
            .iter()
            .map(|o| o.value.as_ref().map(|v| serde_json::from_slice::<CountRecord>(v).unwrap().count))
            .collect()
    }

    #[test]
    fn given_events_when_applied_then_counts_go_up_and_erasure_forgets() {
        let counter = EventCounter { output_topic: Arc::from("out") };
        let view = || EventPayload::PageViewed { url: "https://x".into() };
        let mut state = None;
        let rows: Vec<(TouchpointEvent, Vec<Option<u64>>, Option<u64>)> = vec![
            (event("e1", view()), vec![Some(1)], Some(1)),
            (event("e2", view()), vec![Some(2)], Some(2)),
            (event("e3", EventPayload::ErasureRequested), vec![None], None),
            (event("e4", view()), vec![Some(1)], Some(1)),
        ];
        for (given, outputs, count_after) in rows {
            let out = counter.apply(&mut state, &given, Utc::now());
            assert_eq!(counts(&out), outputs, "{}", given.event_id);
            assert_eq!(state.as_ref().map(|s| s.count), count_after);
        }
    }
}
