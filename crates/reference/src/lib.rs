//! The per-customer event counter: the smallest processor that makes every exactly-once mistake
//! visible. Its output for a customer is the sequence 1, 2, 3, ... with the event that caused each
//! step, so a lost event shows as a gap and a duplicate as a repeat. Optionally it reports a
//! customer idle some time after their last event, which exercises the runtime's timers.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use omnistream_model::{EventPayload, TouchpointEvent};
use omnistream_runtime::{Output, Processor};
use serde::{Deserialize, Serialize};

/// Default output topic of the counter.
pub const COUNTS_TOPIC: &str = "customer.event-counts.v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    pub count: u64,
    /// When the customer is to be reported idle (wall clock), if idle reports are on.
    #[serde(default)]
    pub idle_at: Option<DateTime<Utc>>,
}

/// One output record of the counter (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRecord {
    pub customer_id: String,
    pub count: u64,
    /// The event that caused this count; empty for an idle report.
    pub event_id: String,
    /// A timer's report that no event came for the idle period.
    #[serde(default)]
    pub idle: bool,
}

#[derive(Debug, Clone)]
pub struct EventCounter {
    pub output_topic: Arc<str>,
    /// Report a customer idle this long after their last event; `None`: never.
    pub idle_after: Option<Duration>,
}

impl EventCounter {
    fn output(&self, record: &CountRecord) -> Output {
        let value = serde_json::to_vec(record).expect("a count serializes");
        Output { topic: self.output_topic.clone(), key: record.customer_id.clone(), value: Some(value) }
    }
}

impl Processor for EventCounter {
    type State = CounterState;

    fn apply(
        &self,
        state: &mut Option<CounterState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output> {
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output {
                topic: self.output_topic.clone(),
                key: event.customer_id.clone(),
                value: None,
            }];
        }
        let state = state.get_or_insert(CounterState { count: 0, idle_at: None });
        state.count += 1;
        state.idle_at = self.idle_after.map(|idle_after| now + idle_after);
        let record = CountRecord {
            customer_id: event.customer_id.clone(),
            count: state.count,
            event_id: event.event_id.clone(),
            idle: false,
        };
        vec![self.output(&record)]
    }

    fn next_timer(&self, state: &CounterState) -> Option<DateTime<Utc>> {
        state.idle_at
    }

    fn on_timer(
        &self,
        state: &mut Option<CounterState>,
        customer_id: &str,
        _now: DateTime<Utc>,
    ) -> Vec<Output> {
        let Some(state) = state else { return Vec::new() };
        state.idle_at = None;
        let record = CountRecord {
            customer_id: customer_id.to_owned(),
            count: state.count,
            event_id: String::new(),
            idle: true,
        };
        vec![self.output(&record)]
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
        let counter = EventCounter { output_topic: Arc::from("out"), idle_after: None };
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

    #[test]
    fn given_idle_reports_when_the_timer_fires_then_one_idle_record_and_no_further_timer() {
        let counter = EventCounter { output_topic: Arc::from("out"), idle_after: Some(Duration::seconds(2)) };
        let now = Utc::now();
        let mut state = None;
        counter.apply(&mut state, &event("e1", EventPayload::PageViewed { url: "https://x".into() }), now);
        let due = counter.next_timer(state.as_ref().unwrap());
        assert_eq!(due, Some(now + Duration::seconds(2)));
        let out = counter.on_timer(&mut state, "c-1", now + Duration::seconds(2));
        let record: CountRecord = serde_json::from_slice(out[0].value.as_ref().unwrap()).unwrap();
        assert!(record.idle && record.count == 1);
        assert_eq!(counter.next_timer(state.as_ref().unwrap()), None);
    }
}
