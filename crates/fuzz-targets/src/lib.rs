//! What every input door does with any bytes, as fuzz targets (issue 20): `fuzz/` runs them under
//! libFuzzer with `cargo fuzz` (`make fuzz`), and `tests/corpus.rs` runs the seed corpus, every
//! regression and a short pseudo-random run through them on stable in `make test`.
//!
//! A target panics only on a bug: a door that panics, or two readers of the same bytes that
//! disagree, or a value that does not survive its own round trip. Refusing input is fine.

use chrono::{DateTime, Utc};
use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_model::codec::{current_header, decode_event_resolved};
use omnistream_model::{
    EventPayload, RecordKind, TouchpointEvent, TraitValue, decode_event, encode_event, event_from_json,
};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_runtime::processor::Processor;
use omnistream_runtime::testing::ProcessorTest;
use omnistream_runtime::{IdsLayout, changelog};
use omnistream_suppression::{Rules, Suppression};

/// The clock every target runs at: fixed, so that a finding replays.
pub fn now() -> DateTime<Utc> {
    "2026-12-05T12:00:00Z".parse().expect("a time")
}

/// Avro touchpoint events, as every service reads them. Both readers must agree on any datum
/// of the current schema: the hand-written one every service uses per record, and the general
/// one (the writer's schema, then converted by names) it falls back to. A decoded event encodes
/// and decodes to itself.
pub fn touchpoint_avro(data: &[u8]) {
    // The fuzzer's bytes are the datum: behind the current header they reach both readers.
    let mut bytes = current_header(RecordKind::TouchpointEvent).to_vec();
    bytes.extend_from_slice(data);
    let fast = decode_event(&bytes);
    let general = decode_event_resolved(&bytes);
    match (&fast, &general) {
        (Ok(fast), Ok(general)) => {
            assert_eq!(comparable(fast), comparable(general), "the two readers read different events");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("one reader accepts what the other refuses: {fast:?} / {general:?}"),
    }
    // Any bytes, headers included, as a consumer may meet them.
    let _ = decode_event(data);
    if let Ok(event) = fast {
        round_trips(&event);
    }
}

/// The event with every NaN trait (a valid Avro double, which equals nothing, itself included)
/// replaced by a marker no JSON or Avro value can be, so that equal events compare equal.
fn comparable(event: &TouchpointEvent) -> TouchpointEvent {
    let mut event = event.clone();
    if let EventPayload::TraitsUpdated { set, set_once, .. } = &mut event.payload {
        for value in set.values_mut().chain(set_once.values_mut()) {
            if matches!(value, TraitValue::Double(double) if double.is_nan()) {
                *value = TraitValue::String("\u{0}NaN".into());
            }
        }
    }
    event
}

/// An event encodes to Avro that decodes to the same event.
fn round_trips(event: &TouchpointEvent) {
    let bytes = encode_event(event).expect("a decoded or accepted event encodes");
    let decoded = decode_event(&bytes).expect("its encoding decodes");
    assert_eq!(comparable(&decoded), comparable(event), "an event changed through its own round trip");
}

/// The JSON form of an event (gateway, `omni produce`): parsed and validated at [`now`]; an
/// accepted event encodes to Avro and decodes to itself.
pub fn touchpoint_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(event) = event_from_json(&value, now()) else { return };
    round_trips(&event);
}

/// The gateway's `POST /v1/events` body: one event or `{"events": [...]}`. Every event of an
/// accepted request gets exactly one outcome, and an accepted one is Avro that decodes.
pub fn gateway_body(data: &[u8]) {
    const MAX_EVENTS: usize = 1_000;
    let Ok(parsed) = omnistream_ingest_gateway::ingest::parse_request(
        data,
        MAX_EVENTS,
        now(),
        omnistream_ingest_gateway::ingest::touchpoint_event,
    ) else {
        return;
    };
    assert!(!parsed.is_empty() && parsed.len() <= MAX_EVENTS, "{} outcomes", parsed.len());
    for outcome in parsed {
        if let Ok(encoded) = outcome.outcome {
            let event = decode_event(&encoded.value).expect("an accepted event decodes");
            assert_eq!(event.customer_id, encoded.key, "keyed by its customer");
        }
    }
}

/// Rules and definition files, by the first byte: suppression's and loyalty-points' rules (then
/// run over a few events: a rule that passed its checks must not break the service),
/// identity-resolver's rules, a journey definition.
pub fn rules_files(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    match which % 4 {
        0 => {
            if let Ok(rules) = toml::from_str::<Rules>(text)
                && rules.check().is_ok()
            {
                drive(Suppression::new(rules));
            }
        }
        1 => {
            if let Ok(rules) = toml::from_str::<LoyaltyRules>(text)
                && rules.check().is_ok()
            {
                drive(LoyaltyPoints::new(rules));
            }
        }
        2 => {
            let _ = omnistream_identity_resolver::IdentityRules::from_toml(text);
        }
        _ => {
            let _ = omnistream_journeys::check(text);
        }
    }
}

/// A customer's life in a few events, and a year passing: what a service does with its rules.
fn drive<P: Processor<Input = TouchpointEvent>>(processor: P) {
    let events = [
        r#"{"event_id":"f-1","customer_id":"c-1","occurred_at":"2026-12-05T11:00:00Z","channel":"email","type":"consent_changed","properties":{"purpose":"marketing","granted":true}}"#,
        r#"{"event_id":"f-2","customer_id":"c-1","occurred_at":"2026-12-05T11:01:00Z","channel":"web","type":"order_placed","properties":{"order_id":"o-1","value_minor":12990,"currency":"EUR"}}"#,
        r#"{"event_id":"f-3","customer_id":"c-1","occurred_at":"2026-12-05T11:02:00Z","channel":"email","type":"message_sent","properties":{"message_id":"m-1","purpose":"marketing"}}"#,
        r#"{"event_id":"f-4","customer_id":"c-1","occurred_at":"2026-12-05T11:03:00Z","channel":"whatsapp","type":"support_ticket_opened","properties":{"ticket_id":"t-1"}}"#,
        r#"{"event_id":"f-5","customer_id":"c-1","occurred_at":"2026-12-05T11:04:00Z","channel":"web","type":"loyalty_redeem_requested","properties":{"redemption_id":"r-1","points":50}}"#,
        r#"{"event_id":"f-6","customer_id":"c-1","occurred_at":"2026-12-05T11:05:00Z","channel":"web","type":"order_refunded","properties":{"order_id":"o-1","value_minor":12990,"currency":"EUR"}}"#,
    ];
    let mut test = ProcessorTest::new(processor);
    for text in events {
        let value = serde_json::from_str(text).expect("JSON");
        let event = event_from_json(&value, now()).expect("a valid event");
        test.when(&event);
    }
    test.when_time_passes(now() + chrono::Duration::days(400));
}

/// A changelog record, by the first byte: each service's state decoder. A state that decodes
/// encodes to bytes that decode to the same state (compared by their encodings).
pub fn changelog_state(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 4 {
        0 => round_trip(&ProfileUpdater, bytes),
        1 => round_trip(&Suppression::default(), bytes),
        2 => round_trip(&ChannelAffinityProcessor::default(), bytes),
        _ => round_trip(&LoyaltyPoints::new(LoyaltyRules::default()), bytes),
    }
}

fn round_trip<P: Processor>(processor: &P, bytes: &[u8]) {
    let Ok(entry) = changelog::decode(processor, bytes) else { return };
    for layout in [IdsLayout::Bytes, IdsLayout::Array] {
        let mut first = Vec::new();
        changelog::encode::<P>(&entry, layout, &mut first);
        let again = changelog::decode(processor, &first).expect("an encoded state decodes");
        let mut second = Vec::new();
        changelog::encode::<P>(&again, layout, &mut second);
        assert_eq!(first, second, "a state changed through its own round trip ({layout:?})");
    }
}

/// A fuzz target: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target by its name (the `fuzz/fuzz_targets` files and the corpus directories).
pub const TARGETS: [(&str, Target); 5] = [
    ("touchpoint_avro", touchpoint_avro),
    ("touchpoint_json", touchpoint_json),
    ("gateway_body", gateway_body),
    ("rules_files", rules_files),
    ("changelog_state", changelog_state),
];
