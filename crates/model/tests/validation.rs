//! Given an event in its JSON form, when it is parsed, then it is accepted or rejected with the
//! expected stable error code at the expected field: at least one row per rule of SPEC 2.

mod fixtures;

use chrono::{DateTime, Utc};
use omnistream_model::{ErrorCode, EventPayload, event_from_json, event_to_json, parse_event_json};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn order() -> Value {
    json!({"event_id": "e-1", "customer_id": "c-1", "occurred_at": "2026-11-23T10:15:00Z",
           "channel": "store", "type": "order_placed", "source": "pos",
           "properties": {"order_id": "o-1", "value_minor": 4599, "currency": "EUR"}})
}

fn with(mut base: Value, path: &[&str], value: Value) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut target = &mut base;
    for key in parents {
        target = target.get_mut(*key).unwrap();
    }
    if value == json!("<remove>") {
        target.as_object_mut().unwrap().remove(*last);
    } else {
        target[*last] = value;
    }
    base
}

#[test]
fn invalid_events_are_rejected_with_a_stable_code_and_field() {
    let long = "x".repeat(129);
    let rows: Vec<(&str, Value, ErrorCode, &str)> = vec![
        ("not an object", json!([1, 2]), ErrorCode::Malformed, "$"),
        ("unknown type", with(order(), &["type"], json!("order_teleported")), ErrorCode::UnknownType, "type"),
        ("unknown channel", with(order(), &["channel"], json!("fax")), ErrorCode::UnknownChannel, "channel"),
        (
            "missing event_id",
            with(order(), &["event_id"], json!("<remove>")),
            ErrorCode::MissingField,
            "event_id",
        ),
        (
            "missing customer_id",
            with(order(), &["customer_id"], json!("<remove>")),
            ErrorCode::MissingField,
            "customer_id",
        ),
        (
            "missing occurred_at",
            with(order(), &["occurred_at"], json!("<remove>")),
            ErrorCode::MissingField,
            "occurred_at",
        ),
        ("missing type", with(order(), &["type"], json!("<remove>")), ErrorCode::MissingField, "type"),
        (
            "missing property",
            with(order(), &["properties", "order_id"], json!("<remove>")),
            ErrorCode::MissingField,
            "properties.order_id",
        ),
        (
            "missing properties object",
            with(order(), &["properties"], json!("<remove>")),
            ErrorCode::MissingField,
            "properties.order_id",
        ),
        (
            "number as string",
            with(order(), &["properties", "value_minor"], json!("45.99")),
            ErrorCode::WrongFieldType,
            "properties.value_minor",
        ),
        (
            "id as number",
            with(order(), &["customer_id"], json!(42)),
            ErrorCode::WrongFieldType,
            "customer_id",
        ),
        (
            "properties not an object",
            with(order(), &["properties"], json!("x")),
            ErrorCode::WrongFieldType,
            "properties",
        ),
        (
            "bad timestamp",
            with(order(), &["occurred_at"], json!("yesterday")),
            ErrorCode::InvalidTimestamp,
            "occurred_at",
        ),
        (
            "timestamp without zone",
            with(order(), &["occurred_at"], json!("2026-11-23T10:15:00")),
            ErrorCode::InvalidTimestamp,
            "occurred_at",
        ),
        (
            "more than 24 h ahead",
            with(order(), &["occurred_at"], json!("2026-11-24T12:00:01Z")),
            ErrorCode::FutureTimestamp,
            "occurred_at",
        ),
        (
            "negative amount",
            with(order(), &["properties", "value_minor"], json!(-1)),
            ErrorCode::NegativeAmount,
            "properties.value_minor",
        ),
        (
            "absurd amount",
            with(order(), &["properties", "value_minor"], json!(10_000_000_000_000_i64)),
            ErrorCode::OutOfRange,
            "properties.value_minor",
        ),
        (
            "negative items",
            with(order(), &["properties", "items"], json!(-2)),
            ErrorCode::NegativeAmount,
            "properties.items",
        ),
        (
            "items beyond 32 bits",
            with(order(), &["properties", "items"], json!(5_000_000_000_i64)),
            ErrorCode::OutOfRange,
            "properties.items",
        ),
        (
            "bad currency",
            with(order(), &["properties", "currency"], json!("euro")),
            ErrorCode::InvalidCurrency,
            "properties.currency",
        ),
        ("empty event_id", with(order(), &["event_id"], json!("")), ErrorCode::InvalidLength, "event_id"),
        (
            "over-long customer_id",
            with(order(), &["customer_id"], json!(long)),
            ErrorCode::InvalidLength,
            "customer_id",
        ),
        (
            "over-long context value",
            with(order(), &["properties", "note"], json!("y".repeat(3000))),
            ErrorCode::InvalidLength,
            "properties.note",
        ),
        (
            "zero points redeemed",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "web",
                   "type": "loyalty_redeem_requested", "properties": {"redemption_id": "r", "points": 0}}),
            ErrorCode::OutOfRange,
            "properties.points",
        ),
        (
            "negative points redeemed",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "web",
                   "type": "loyalty_redeem_requested", "properties": {"redemption_id": "r", "points": -5}}),
            ErrorCode::NegativeAmount,
            "properties.points",
        ),
        (
            "unknown purpose",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "sms",
                   "type": "consent_changed", "properties": {"purpose": "spam", "granted": true}}),
            ErrorCode::WrongFieldType,
            "properties.purpose",
        ),
        (
            "bounce without hard flag",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "email",
                   "type": "message_bounced", "properties": {"message_id": "m"}}),
            ErrorCode::MissingField,
            "properties.hard",
        ),
        (
            "unset with a non-string key",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "web",
                   "type": "traits_updated", "properties": {"unset": [1]}}),
            ErrorCode::WrongFieldType,
            "properties.unset",
        ),
        (
            "over-long trait value",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "web",
                   "type": "traits_updated", "properties": {"set": {"bio": "z".repeat(3000)}}}),
            ErrorCode::InvalidLength,
            "properties.set.bio",
        ),
        (
            "empty set_once trait name",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "web",
                   "type": "traits_updated", "properties": {"set_once": {"": 1}}}),
            ErrorCode::InvalidLength,
            "properties.set_once.",
        ),
        (
            "over-long unset trait name",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "web",
                   "type": "traits_updated", "properties": {"unset": [long]}}),
            ErrorCode::InvalidLength,
            "properties.unset",
        ),
        (
            "empty message id",
            json!({"event_id": "e", "customer_id": "c", "occurred_at": "2026-11-23T10:00:00Z", "channel": "email",
                   "type": "message_opened", "properties": {"message_id": ""}}),
            ErrorCode::InvalidLength,
            "properties.message_id",
        ),
    ];
    for (name, event, code, field) in rows {
        let rejection = event_from_json(&event, now()).expect_err(name);
        assert!(
            rejection.0.iter().any(|e| e.code == code && e.field == field),
            "{name}: expected {code} at {field}, got {rejection}"
        );
    }
}

#[test]
fn every_problem_of_an_event_is_reported_not_only_the_first() {
    let event = json!({"customer_id": "", "occurred_at": "soon", "channel": "fax", "type": "order_placed",
                       "properties": {"value_minor": -5, "currency": "EUR"}});
    let rejection = event_from_json(&event, now()).unwrap_err();
    let codes: Vec<(ErrorCode, &str)> = rejection.0.iter().map(|e| (e.code, e.field.as_str())).collect();
    for expected in [
        (ErrorCode::MissingField, "event_id"),
        (ErrorCode::InvalidTimestamp, "occurred_at"),
        (ErrorCode::UnknownChannel, "channel"),
        (ErrorCode::MissingField, "properties.order_id"),
    ] {
        assert!(codes.contains(&expected), "{expected:?} missing from {codes:?}");
    }
}

#[test]
fn invalid_json_text_is_malformed() {
    let rejection = parse_event_json("{\"event_id\": ", now()).unwrap_err();
    assert_eq!(rejection.first().code, ErrorCode::Malformed);
}

#[test]
fn a_valid_event_is_accepted_and_unknown_properties_are_kept_as_strings() {
    let event = with(order(), &["properties", "till"], json!(7));
    let parsed = event_from_json(&event, now()).expect("valid");
    assert_eq!(parsed.context.get("till").map(String::as_str), Some("7"));
    assert_eq!(parsed.source.as_deref(), Some("pos"));
}

#[test]
fn an_event_exactly_24_hours_ahead_is_still_accepted() {
    let event = with(order(), &["occurred_at"], json!("2026-11-24T12:00:00Z"));
    assert!(event_from_json(&event, now()).is_ok());
}

#[test]
fn every_event_type_round_trips_through_its_json_form() {
    for event in fixtures::every_event_type() {
        let json = event_to_json(&event);
        match event.payload {
            // Rendered for readers (`omni tail`), refused from producers: only the resolver merges.
            EventPayload::CustomersMerged { .. } => {
                let rejection = event_from_json(&json, fixtures::at(0)).expect_err("refused");
                assert_eq!(rejection.first().code, ErrorCode::UnknownType, "{rejection}");
                assert!(rejection.to_string().contains("identity-resolver"), "{rejection}");
            }
            _ => assert_eq!(event_from_json(&json, fixtures::at(0)).expect("valid"), event),
        }
    }
}

#[test]
fn lengths_are_counted_in_characters_not_bytes() {
    let event = |customer_id: String, note: String| {
        let base = with(order(), &["customer_id"], json!(customer_id));
        with(base, &["properties", "note"], json!(note))
    };
    let rows = [
        ("128 four-byte characters, 2048 two-byte ones", "😀".repeat(128), "é".repeat(2048), None),
        ("one four-byte character", "😀".to_owned(), String::new(), None),
        ("129 four-byte characters", "😀".repeat(129), "n".to_owned(), Some("customer_id")),
        ("2049 two-byte characters", "c".to_owned(), "é".repeat(2049), Some("properties.note")),
    ];
    for (name, customer_id, note, refused_at) in rows {
        let result = event_from_json(&event(customer_id, note), now());
        match refused_at {
            None => assert!(result.is_ok(), "{name}: {result:?}"),
            Some(field) => {
                let rejection = result.expect_err(name);
                assert_eq!(
                    (rejection.first().code, rejection.first().field.as_str()),
                    (ErrorCode::InvalidLength, field),
                    "{name}"
                );
            }
        }
    }
}
