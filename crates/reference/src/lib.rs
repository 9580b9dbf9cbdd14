//! The per-customer event counter: the smallest processor that makes every exactly-once mistake
//! visible. Its output for a customer is the sequence 1, 2, 3, ... with the event that caused each
//! step, so a lost event shows as a gap and a duplicate as a repeat. Optionally it reports a
//! customer idle some time after their last event, which exercises the runtime's timers.
//!
//! [`MergingCounter`] is the worked example of a state handoff (docs/runtime.md): a customer's
//! count moves to another customer, possibly on another partition, exactly once.
//!
//! [`AliasRouter`] is the worked example of a repartition topic: a first stage re-keys each event
//! by the customer it is an alias of, and a second stage (the event counter reading that topic)
//! counts by the new key, both exactly once.

use chrono::{DateTime, Duration, Utc};
use omnistream_model::{EventPayload, TouchpointEvent, TraitValue};
use omnistream_runtime::{LookupInput, LookupScope, Lookups, Output, OutputRecord, Processor};
use serde::{Deserialize, Serialize};

/// Default output topic of the counter.
pub const COUNTS_TOPIC: &str = "customer.event-counts.v1";

/// The counters' output role: a count record per change (`--output-topic`).
pub const COUNTS_OUTPUT: &str = "counts";
/// The alias router's output role: the re-keyed events (`--routed-topic`).
pub const ROUTED_OUTPUT: &str = "routed";

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
    /// A merge's record: the customer whose count this one took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
    /// The customer's tier in the `tiers` table as of the event ([`LookupCounter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The `current` key of the `campaign` broadcast as of the event ([`LookupCounter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// Count records are JSON, written by hand as serde_json writes them (fields in declaration
/// order, the optional ones left out when absent): serde_json escapes every key and value a byte
/// at a time, a tenth of the event-counter's instructions per event (callgrind, 2026-12-08). A
/// string that needs escaping is still written by serde_json.
impl OutputRecord for CountRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.customer_id.len() + self.event_id.len());
        out.extend_from_slice(b"{\"customer_id\":");
        json_string(&mut out, &self.customer_id);
        out.extend_from_slice(b",\"count\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.count).as_bytes());
        out.extend_from_slice(b",\"event_id\":");
        json_string(&mut out, &self.event_id);
        out.extend_from_slice(if self.idle { b",\"idle\":true" } else { b",\"idle\":false" });
        for (key, value) in [
            (&b",\"merged_from\":"[..], &self.merged_from),
            (b",\"tier\":", &self.tier),
            (b",\"campaign\":", &self.campaign),
        ] {
            if let Some(value) = value {
                out.extend_from_slice(key);
                json_string(&mut out, value);
            }
        }
        out.push(b'}');
        out
    }
}

/// A JSON string: copied between quotes when nothing in it needs escaping (a quote, a backslash,
/// a control character), else escaped by serde_json.
fn json_string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\') {
        serde_json::to_writer(&mut *out, value).expect("a string serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
}

fn count_output(record: CountRecord) -> Output<CountRecord> {
    Output::new(COUNTS_OUTPUT, record.customer_id.clone(), Some(record))
}

#[derive(Debug, Clone, Default)]
pub struct EventCounter {
    /// Report a customer idle this long after their last event; `None`: never.
    pub idle_after: Option<Duration>,
}

impl Processor for EventCounter {
    type Input = TouchpointEvent;
    type State = CounterState;
    type Record = CountRecord;
    const OUTPUTS: &'static [&'static str] = &[COUNTS_OUTPUT];

    fn apply(
        &self,
        state: &mut Option<CounterState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output::new(COUNTS_OUTPUT, event.customer_id.clone(), None)];
        }
        let state = state.get_or_insert(CounterState { count: 0, idle_at: None });
        state.count += 1;
        state.idle_at = self.idle_after.map(|idle_after| now + idle_after);
        let record = CountRecord {
            customer_id: event.customer_id.clone(),
            count: state.count,
            event_id: event.event_id.clone(),
            idle: false,
            merged_from: None,
            tier: None,
            campaign: None,
        };
        vec![count_output(record)]
    }

    fn next_timer(&self, state: &CounterState) -> Option<DateTime<Utc>> {
        state.idle_at
    }

    fn on_timer(
        &self,
        state: &mut Option<CounterState>,
        customer_id: &str,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        let Some(state) = state else { return Vec::new() };
        state.idle_at = None;
        let record = CountRecord {
            customer_id: customer_id.to_owned(),
            count: state.count,
            event_id: String::new(),
            idle: true,
            merged_from: None,
            tier: None,
            campaign: None,
        };
        vec![count_output(record)]
    }
}

/// The trait that merges a customer into another in the worked example: an event of customer L
/// setting `merged_into` to W hands L's count to W. (The identity service will ask for merges
/// with events of its own; this stands in for them.)
pub const MERGED_INTO_TRAIT: &str = "merged_into";

/// An event of `customer` asking to merge it into `winner` (the worked examples' convention).
pub fn merge_request(
    event_id: &str,
    customer: &str,
    winner: &str,
    occurred_at: DateTime<Utc>,
) -> TouchpointEvent {
    let set = std::collections::BTreeMap::from([(
        MERGED_INTO_TRAIT.to_owned(),
        TraitValue::String(winner.to_owned()),
    )]);
    TouchpointEvent {
        event_id: event_id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at,
        channel: omnistream_model::Channel::Web,
        source: None,
        payload: EventPayload::TraitsUpdated { set, set_once: Default::default(), unset: Vec::new() },
        context: Default::default(),
        identifiers: Vec::new(),
    }
}

/// The event counter with merges: an event setting the trait [`MERGED_INTO_TRAIT`] to another
/// customer's id is not counted; the customer's count record becomes a tombstone and their count
/// moves to that customer, whose next record is the sum (with `merged_from`). A customer merged
/// away who has events again starts from zero.
#[derive(Debug, Clone)]
pub struct MergingCounter(pub EventCounter);

impl MergingCounter {
    fn merge_target(event: &TouchpointEvent) -> Option<&str> {
        match &event.payload {
            EventPayload::TraitsUpdated { set, .. } => match set.get(MERGED_INTO_TRAIT) {
                Some(TraitValue::String(winner)) if *winner != event.customer_id => Some(winner),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Processor for MergingCounter {
    type Input = TouchpointEvent;
    type State = CounterState;
    type Record = CountRecord;
    const OUTPUTS: &'static [&'static str] = &[COUNTS_OUTPUT];

    const HANDS_OFF_STATE: bool = true;

    fn apply(
        &self,
        state: &mut Option<CounterState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        if Self::merge_target(event).is_none() {
            return self.0.apply(state, event, now);
        }
        // The state stays for the runtime to hand over; the loser's count record goes.
        vec![Output::new(COUNTS_OUTPUT, event.customer_id.clone(), None)]
    }

    fn next_timer(&self, state: &CounterState) -> Option<DateTime<Utc>> {
        self.0.next_timer(state)
    }

    fn on_timer(
        &self,
        state: &mut Option<CounterState>,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        self.0.on_timer(state, customer_id, now)
    }

    fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
        Self::merge_target(event).map(str::to_owned)
    }

    fn merge(
        &self,
        state: &mut Option<CounterState>,
        customer_id: &str,
        from: &str,
        _cause: &str,
        handed: CounterState,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        let state = state.get_or_insert(CounterState { count: 0, idle_at: None });
        state.count += handed.count;
        let record = CountRecord {
            customer_id: customer_id.to_owned(),
            count: state.count,
            event_id: String::new(),
            idle: false,
            merged_from: Some(from.to_owned()),
            tier: None,
            campaign: None,
        };
        vec![count_output(record)]
    }
}

/// The lookup roles of [`LookupCounter`].
pub const TIERS_TABLE: &str = "tiers";
pub const CAMPAIGN_BROADCAST: &str = "campaign";

/// The event counter reading a table and a broadcast input (the worked example of both): each
/// count record carries the customer's tier from the `tiers` table (value: the tier's name) and
/// the `current` campaign from the `campaign` broadcast, as the runtime answers them: as of the
/// record's append time less the lookup grace.
#[derive(Debug, Clone)]
pub struct LookupCounter(pub EventCounter);

impl Processor for LookupCounter {
    type Input = TouchpointEvent;
    type State = CounterState;
    type Record = CountRecord;
    const OUTPUTS: &'static [&'static str] = &[COUNTS_OUTPUT];

    const LOOKUPS: &'static [LookupInput] = &[
        LookupInput { role: TIERS_TABLE, scope: LookupScope::Table },
        LookupInput { role: CAMPAIGN_BROADCAST, scope: LookupScope::Broadcast },
    ];

    fn apply(
        &self,
        state: &mut Option<CounterState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        self.apply_with_lookups(state, event, now, &Lookups::none())
    }

    fn apply_with_lookups(
        &self,
        state: &mut Option<CounterState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
        lookups: &Lookups<'_>,
    ) -> Vec<Output<Self::Record>> {
        let mut outputs = self.0.apply(state, event, now);
        let text = |value: Option<&[u8]>| value.map(|bytes| String::from_utf8_lossy(bytes).into_owned());
        for record in outputs.iter_mut().filter_map(|output| output.value.as_mut()) {
            record.tier = text(lookups.get(TIERS_TABLE, &event.customer_id));
            record.campaign = text(lookups.get(CAMPAIGN_BROADCAST, "current"));
        }
        outputs
    }
}

/// The first stage of the repartition example: keyed by the customer the producer knows, it
/// re-keys every event by the customer that one is an alias of and writes it, as a touchpoint
/// event of that customer, to a topic the second stage reads. An event setting the trait
/// [`MERGED_INTO_TRAIT`] makes its customer an alias of that one from then on (it is not routed
/// itself); an erasure is routed like any event and forgets the alias.
#[derive(Debug, Clone, Default)]
pub struct AliasRouter;

/// The customer a customer's events go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasState {
    pub alias_of: String,
}

impl Processor for AliasRouter {
    type Input = TouchpointEvent;
    type State = AliasState;
    type Record = TouchpointEvent;
    const OUTPUTS: &'static [&'static str] = &[ROUTED_OUTPUT];

    fn apply(
        &self,
        state: &mut Option<AliasState>,
        event: &TouchpointEvent,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        if let Some(target) = MergingCounter::merge_target(event) {
            *state = Some(AliasState { alias_of: target.to_owned() });
            return Vec::new();
        }
        let routed_to = state.as_ref().map_or(&event.customer_id, |state| &state.alias_of).clone();
        if matches!(event.payload, EventPayload::ErasureRequested) {
            *state = None;
        }
        let routed = TouchpointEvent { customer_id: routed_to.clone(), ..event.clone() };
        vec![Output::rekeyed(ROUTED_OUTPUT, routed_to, Some(routed))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnistream_model::Channel;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Strings that need escaping and strings that do not, non-ASCII included.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9-]{0,40}", ".{0,20}", "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀a]{0,12}"]
    }

    proptest! {
        /// serde_json is the oracle: the hand-written record must be its bytes exactly (the
        /// Kafka Streams twin and every reader parse them).
        #[test]
        fn a_count_record_is_written_as_serde_json_writes_it(
            customer_id in any_text(),
            count in any::<u64>(),
            event_id in any_text(),
            idle in any::<bool>(),
            merged_from in proptest::option::of(any_text()),
            tier in proptest::option::of(any_text()),
            campaign in proptest::option::of(any_text()),
        ) {
            let record = CountRecord { customer_id, count, event_id, idle, merged_from, tier, campaign };
            let written = record.encode();
            prop_assert_eq!(&written, &serde_json::to_vec(&record).unwrap());
            prop_assert_eq!(serde_json::from_slice::<CountRecord>(&written).unwrap(), record);
        }
    }

    fn event(id: &str, payload: EventPayload) -> TouchpointEvent {
        TouchpointEvent {
            event_id: id.to_owned(),
            customer_id: "c-1".to_owned(),
            occurred_at: DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            channel: Channel::Web,
            source: None,
            payload,
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        }
    }

    fn counts(outputs: &[Output<CountRecord>]) -> Vec<Option<u64>> {
        outputs.iter().map(|o| o.value.as_ref().map(|record| record.count)).collect()
    }

    #[test]
    fn given_events_when_applied_then_counts_go_up_and_erasure_forgets() {
        let counter = EventCounter { idle_after: None };
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
        let counter = EventCounter { idle_after: Some(Duration::seconds(2)) };
        let now = Utc::now();
        let mut state = None;
        counter.apply(&mut state, &event("e1", EventPayload::PageViewed { url: "https://x".into() }), now);
        let due = counter.next_timer(state.as_ref().unwrap());
        assert_eq!(due, Some(now + Duration::seconds(2)));
        let out = counter.on_timer(&mut state, "c-1", now + Duration::seconds(2));
        let record = out[0].value.as_ref().unwrap();
        assert!(record.idle && record.count == 1);
        assert_eq!(counter.next_timer(state.as_ref().unwrap()), None);
    }

    fn merge_into(id: &str, customer: &str, winner: &str) -> TouchpointEvent {
        merge_request(id, customer, winner, DateTime::from_timestamp(1_795_000_000, 0).unwrap())
    }

    fn of(id: &str, customer: &str) -> TouchpointEvent {
        TouchpointEvent {
            customer_id: customer.to_owned(),
            ..event(id, EventPayload::PageViewed { url: "https://x".into() })
        }
    }

    fn records(then: &omnistream_runtime::testing::Then) -> Vec<Option<(String, u64, Option<String>)>> {
        then.values(COUNTS_OUTPUT)
            .into_iter()
            .map(|value| {
                value.map(|bytes| {
                    let record: CountRecord = serde_json::from_slice(bytes).unwrap();
                    (record.customer_id, record.count, record.merged_from)
                })
            })
            .collect()
    }

    /// Through the runtime's engine: each count carries the tier and campaign as of the event's
    /// append time, whatever was read later (a replay answers the same).
    #[test]
    fn given_versions_of_a_table_and_a_broadcast_then_each_event_sees_those_as_of_its_time() {
        use omnistream_runtime::testing::ProcessorTest;
        let base = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let at = |seconds: i64| base + Duration::seconds(seconds);
        let mut test = ProcessorTest::new(LookupCounter(EventCounter { idle_after: None }))
            .given_lookup(TIERS_TABLE, "c-1", Some(b"gold"), at(1))
            .given_lookup(CAMPAIGN_BROADCAST, "current", Some(b"black-friday"), at(2))
            .given_lookup(TIERS_TABLE, "c-1", Some(b"silver"), at(10))
            .given_lookup(TIERS_TABLE, "c-1", None, at(20));
        let seen = |then: omnistream_runtime::testing::Then| {
            let record: CountRecord = serde_json::from_slice(then.values(COUNTS_OUTPUT)[0].unwrap()).unwrap();
            (record.tier, record.campaign)
        };
        let text = |value: &str| Some(value.to_owned());
        assert_eq!(seen(test.when_appended(&of("e0", "c-1"), at(0))), (None, None), "before any version");
        assert_eq!(seen(test.when_appended(&of("e1", "c-1"), at(5))), (text("gold"), text("black-friday")));
        assert_eq!(
            seen(test.when_appended(&of("e2", "c-1"), at(10))),
            (text("silver"), text("black-friday"))
        );
        assert_eq!(
            seen(test.when_appended(&of("e3", "c-1"), at(25))),
            (None, text("black-friday")),
            "a tombstone"
        );
        assert_eq!(
            seen(test.when_appended(&of("e4", "c-2"), at(26))),
            (None, text("black-friday")),
            "another key"
        );
    }

    /// Through the runtime's engine (one partition): the handoff record the merge sends reaches
    /// the winner in the same step, as the handoff topic would deliver it.
    #[test]
    fn given_counted_customers_when_one_merges_into_the_other_then_the_winner_has_the_sum_once() {
        use omnistream_runtime::testing::ProcessorTest;
        let counter = MergingCounter(EventCounter { idle_after: None });
        let mut test = ProcessorTest::new(counter).given([of("a1", "c-a"), of("a2", "c-a"), of("b1", "c-b")]);

        let merged = test.when(&merge_into("m1", "c-a", "c-b"));
        assert_eq!(records(&merged), vec![None, Some(("c-b".into(), 3, Some("c-a".into())))]);
        assert_eq!(test.state("c-a"), None);

        let retried = test.when(&merge_into("m1", "c-a", "c-b"));
        assert_eq!(records(&retried), vec![], "a retried merge is a duplicate event");
        let again = test.when(&merge_into("m2", "c-a", "c-b"));
        assert_eq!(records(&again), vec![None], "nothing left to move: only the tombstone again");
        let later = test.when(&of("a3", "c-a"));
        assert_eq!(
            records(&later),
            vec![Some(("c-a".into(), 1, None))],
            "a merged-away customer starts over"
        );
        let winner = test.when(&of("b2", "c-b"));
        assert_eq!(records(&winner), vec![Some(("c-b".into(), 4, None))]);
    }
}
