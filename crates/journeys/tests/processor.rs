//! The journeys processor through the runtime's own engine (ProcessorTest, no broker): the
//! published definition arrives as a broadcast input, the timer of a local-time wait fires as
//! of its due time, and the records are what downstream reads. Expected values worked out by hand
//! from docs/journeys.md and journeys/store-to-inbox.toml.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_channel_affinity::AffinityConfig;
use omnistream_journeys::core::Engine;
use omnistream_journeys::processor::{DEFINITIONS_INPUT, JourneysProcessor};
use omnistream_model::records::{
    CustomerJourneyState, JourneyAction, JourneyDefinition, JourneyExitReason, JourneyOutcome,
};
use omnistream_model::{OutputRecord, TouchpointEvent, event_from_json};
use omnistream_runtime::testing::ProcessorTest;
use omnistream_suppression::Rules;
use serde_json::{Value, json};

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn event(id: &str, kind: &str, channel: &str, when: &str, properties: Value) -> TouchpointEvent {
    let json = json!({
        "event_id": id, "customer_id": "c-1", "occurred_at": when, "channel": channel,
        "type": kind, "properties": properties,
    });
    event_from_json(&json, time(when)).unwrap()
}

fn published(name: &str, at: &str) -> (String, Vec<u8>, DateTime<Utc>) {
    let source =
        std::fs::read_to_string(format!("{}/../../journeys/{name}.toml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let record = JourneyDefinition { journey_id: name.into(), version: 1, source, published_at: time(at) };
    (format!("{name}:1"), record.encode(), time(at))
}

fn processor() -> JourneysProcessor {
    JourneysProcessor::new(Engine {
        suppression: Arc::new(Rules::default().prepare()),
        affinity: AffinityConfig::default(),
    })
}

#[test]
fn a_store_purchase_brings_an_email_at_ten_the_next_morning_through_the_engine() {
    let (key, definition, at) = published("store-to-inbox", "2026-03-01T00:00:00Z");
    let zone = json!({"set": {"timezone": "America/New_York"}, "set_once": {}, "unset": []});
    let mut test = ProcessorTest::new(processor())
        .given_lookup(DEFINITIONS_INPUT, &key, Some(&definition), at)
        .given([event("tz", "traits_updated", "web", "2026-03-01T12:00:00Z", zone)]);
    let order = json!({"order_id": "o-1", "value_minor": 4000, "currency": "USD"});
    let then = test.when(&event("s-1", "order_placed", "store", "2026-03-07T20:00:00Z", order));
    assert!(then.decoded::<JourneyAction>("actions").is_empty(), "nothing to send yet");
    let state = then.decoded::<CustomerJourneyState>("states").remove(0).unwrap();
    assert_eq!(
        (state.entries[0].step.as_str(), state.entries[0].waiting_until),
        ("next-morning", Some(time("2026-03-08T14:00:00Z"))),
        "10:00 EDT, the morning clocks went forward"
    );
    assert!(
        test.when_time_passes(time("2026-03-08T13:59:59Z")).decoded::<JourneyAction>("actions").is_empty()
    );
    let then = test.when_time_passes(time("2026-03-08T14:00:05Z"));
    let action = then.decoded::<JourneyAction>("actions").remove(0).unwrap();
    assert_eq!(
        (action.outcome, action.channel.as_deref(), action.template.as_str(), action.decided_at),
        (JourneyOutcome::Send, Some("email"), "store-complement", time("2026-03-08T14:00:00Z")),
        "decided as of the timer's due time"
    );
    let state = then.decoded::<CustomerJourneyState>("states").remove(0).unwrap();
    assert_eq!((state.entries.len(), state.last_exits[0].reason), (0, JourneyExitReason::Completed));
}

#[test]
fn a_journey_published_after_the_event_does_not_enter_it_and_an_erasure_forgets_the_customer() {
    let (key, definition, _) = published("store-to-inbox", "2026-03-10T00:00:00Z");
    let mut test = ProcessorTest::new(processor()).given_lookup(
        DEFINITIONS_INPUT,
        &key,
        Some(&definition),
        time("2026-03-10T00:00:00Z"),
    );
    let order = json!({"order_id": "o-1", "value_minor": 4000, "currency": "USD"});
    let then = test.when(&event("s-1", "order_placed", "store", "2026-03-07T20:00:00Z", order.clone()));
    assert!(then.decoded::<CustomerJourneyState>("states").is_empty(), "no journey as of 7 March");
    let then = test.when(&event(
        "s-2",
        "order_placed",
        "store",
        "2026-03-10T20:00:00Z",
        json!({"order_id": "o-2", "value_minor": 4000, "currency": "USD"}),
    ));
    assert_eq!(then.decoded::<CustomerJourneyState>("states").remove(0).unwrap().entries.len(), 1);
    let then = test.when(&event("erase", "erasure_requested", "web", "2026-03-10T21:00:00Z", json!({})));
    assert_eq!(then.values("states"), vec![None], "a tombstone");
    assert!(test.state("c-1").is_none());
}
