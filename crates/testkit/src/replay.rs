//! A service's core driven in process the way the runtime drives one partition (SPEC 4): records
//! in offset order, each applied as of its broker append time after every timer due by then has
//! fired as of its due time; dedupe of recent event ids; an erasure's marker dropping its retries
//! and events dated at or before it for the horizon; `check_limits` refusals dead-lettered. The
//! differential tests run it against the executable SPEC (`omnistream-spec`) on thousands of
//! streams; the broker tests then run the real binaries.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use omnistream_model::{EventPayload, TouchpointEvent};
use omnistream_runtime::{Processor, event_id_hash};

use crate::pipeline::{DEDUPE_WINDOW, OutputsByKey};

/// The runtime's default erasure horizon (`ERASURE_HORIZON_DAYS`).
pub const ERASURE_HORIZON_MS: i64 = 30 * 86_400_000;

/// What a replay wrote and refused.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Per (topic, key), every value in the order written (`None` is a tombstone).
    pub outputs: OutputsByKey,
    /// Events `check_limits` refused (dead-lettered `state_limit`).
    pub refused: usize,
}

impl Replayed {
    /// The last value written to `topic` under `key`, if any was (`Some(None)`: a tombstone).
    pub fn last(&self, topic: &str, key: &str) -> Option<Option<&[u8]>> {
        let values = self.outputs.get(&(topic.to_owned(), key.to_owned()))?;
        values.last().map(Option::as_deref)
    }
}

struct Marker {
    erased_at: i64,
    recorded_at: i64,
    recent: VecDeque<u64>,
}

/// Replays `records` (event, broker append time; append times never decrease) through
/// `processor`, then fires the timers due by `until`.
pub fn replay<P: Processor>(
    processor: &P,
    records: &[(TouchpointEvent, DateTime<Utc>)],
    until: DateTime<Utc>,
) -> Replayed {
    let mut replayed = Replayed::default();
    let mut customers: HashMap<String, (VecDeque<u64>, Option<P::State>)> = HashMap::new();
    let mut markers: HashMap<String, Marker> = HashMap::new();
    let mut timers: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut timer_of: HashMap<String, i64> = HashMap::new();
    let mut set_timer = |timers: &mut BTreeSet<(i64, String)>, customer: &str, due: Option<i64>| {
        if let Some(old) = timer_of.remove(customer) {
            timers.remove(&(old, customer.to_owned()));
        }
        if let Some(due) = due {
            timer_of.insert(customer.to_owned(), due);
            timers.insert((due, customer.to_owned()));
        }
    };
    let write = |outputs: &mut OutputsByKey, written: Vec<omnistream_runtime::Output>| {
        for output in written {
            outputs.entry((output.topic.to_string(), output.key)).or_default().push(output.value);
        }
    };
    let mut clock = i64::MIN;
    let ends = records.iter().map(|(_, at)| at.timestamp_millis()).chain([until.timestamp_millis()]);
    let records = records.iter().map(Some).chain([None]);
    for (record, up_to) in records.zip(ends) {
        clock = clock.max(up_to);
        // Timers due by this record's time fire first, each as of its due time.
        while let Some((due, customer)) = timers.first().cloned().filter(|(due, _)| *due <= clock) {
            let (_, state) = customers.entry(customer.clone()).or_default();
            let now = DateTime::from_timestamp_millis(due).expect("due time");
            write(&mut replayed.outputs, processor.on_timer(state, &customer, now));
            let next = state.as_ref().and_then(|s| processor.next_timer(s)).map(|t| t.timestamp_millis());
            set_timer(&mut timers, &customer, next.filter(|next| *next > due));
        }
        let Some((event, _)) = record else { break };
        let now = DateTime::from_timestamp_millis(clock).expect("clock");
        let hash = event_id_hash(&event.event_id);
        let occurred_at = event.occurred_at.timestamp_millis();
        if let Some(marker) = markers.get(&event.customer_id)
            && clock < marker.recorded_at + ERASURE_HORIZON_MS
            && (occurred_at <= marker.erased_at || marker.recent.contains(&hash))
        {
            continue;
        }
        let (recent, state) = customers.entry(event.customer_id.clone()).or_default();
        if recent.contains(&hash) {
            continue;
        }
        if processor.check_limits(state.as_ref(), event).is_err() {
            replayed.refused += 1;
            continue;
        }
        while recent.len() >= DEDUPE_WINDOW {
            recent.pop_front();
        }
        recent.push_back(hash);
        write(&mut replayed.outputs, processor.apply(state, event, now));
        let due = state.as_ref().and_then(|s| processor.next_timer(s)).map(|t| t.timestamp_millis());
        if matches!(event.payload, EventPayload::ErasureRequested) {
            let marker = Marker { erased_at: occurred_at, recorded_at: clock, recent: recent.clone() };
            markers.insert(event.customer_id.clone(), marker);
        }
        if state.is_none() {
            customers.remove(&event.customer_id);
        }
        set_timer(&mut timers, &event.customer_id, due);
    }
    replayed
}
