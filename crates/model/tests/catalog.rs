//! Given a catalog event in its JSON form, when it is parsed, then it is accepted as the expected
//! record or rejected with the touchpoint events' stable error code at the expected field.

use chrono::{DateTime, Utc};
use omnistream_model::catalog::{
    catalog_event_from_json, catalog_event_to_json, parse_catalog_event_json, validate_catalog_event,
};
use omnistream_model::records::{CatalogEvent, CatalogEventType};
use omnistream_model::{ErrorCode, decode_record, encode_record};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    "2026-12-03T12:00:00Z".parse().unwrap()
}

fn price_change() -> Value {
    json!({"event_id": "price-1", "product_id": "sku-42", "occurred_at": "2026-12-03T10:00:00Z",
           "type": "product_price_changed", "properties": {"old_minor": 4999, "new_minor": 3999, "currency": "EUR"},
           "source": "pim"})
}

fn restock() -> Value {
    json!({"event_id": "stock-1", "product_id": "sku-42", "occurred_at": "2026-12-03T10:00:00Z",
           "type": "product_restocked"})
}

/// `base` with the field at `path` set to `value`, or removed when `value` is `"<remove>"`.
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

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[test]
fn valid_catalog_events_are_accepted_as_their_record() {
    let price = |old, new| (Some(old), Some(new), Some("EUR".to_owned()));
    let none = (None, None, None);
    let long_id = "é".repeat(128);
    // (given, when parsed: occurred_at, (old, new, currency), source)
    type Expected = (DateTime<Utc>, (Option<i64>, Option<i64>, Option<String>), Option<&'static str>);
    let rows: Vec<(&str, Value, Expected)> = vec![
        ("a price drop", price_change(), (at("2026-12-03T10:00:00Z"), price(4999, 3999), Some("pim"))),
        (
            "the price unchanged: still a fact, not a drop",
            with(price_change(), &["properties", "new_minor"], json!(4999)),
            (at("2026-12-03T10:00:00Z"), price(4999, 4999), Some("pim")),
        ),
        (
            "a price rise",
            with(price_change(), &["properties", "new_minor"], json!(5999)),
            (at("2026-12-03T10:00:00Z"), price(4999, 5999), Some("pim")),
        ),
        (
            "free from the largest legal price",
            with(
                with(price_change(), &["properties", "old_minor"], json!(1_000_000_000_000_i64)),
                &["properties", "new_minor"],
                json!(0),
            ),
            (at("2026-12-03T10:00:00Z"), price(1_000_000_000_000, 0), Some("pim")),
        ),
        (
            "occurred_at with an offset is the same instant in UTC",
            with(price_change(), &["occurred_at"], json!("2026-12-03T11:00:00+01:00")),
            (at("2026-12-03T10:00:00Z"), price(4999, 3999), Some("pim")),
        ),
        (
            "exactly 24 h ahead, written with a negative offset",
            with(price_change(), &["occurred_at"], json!("2026-12-04T07:00:00-05:00")),
            (at("2026-12-04T12:00:00Z"), price(4999, 3999), Some("pim")),
        ),
        (
            "microseconds are cut to Avro's milliseconds",
            with(price_change(), &["occurred_at"], json!("2026-12-03T10:00:00.123456Z")),
            (at("2026-12-03T10:00:00.123Z"), price(4999, 3999), Some("pim")),
        ),
        ("a restock with no properties", restock(), (at("2026-12-03T10:00:00Z"), none.clone(), None)),
        (
            "a restock with empty properties and a null source",
            with(with(restock(), &["properties"], json!({})), &["source"], Value::Null),
            (at("2026-12-03T10:00:00Z"), none.clone(), None),
        ),
        (
            "ids of 128 characters (not bytes)",
            with(with(restock(), &["product_id"], json!(long_id)), &["event_id"], json!(long_id)),
            (at("2026-12-03T10:00:00Z"), none, None),
        ),
    ];
    for (case, given, (occurred_at, (old_minor, new_minor, currency), source)) in rows {
        let event = catalog_event_from_json(&given, now()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            (event.occurred_at, event.old_minor, event.new_minor, event.currency, event.source.as_deref()),
            (occurred_at, old_minor, new_minor, currency, source),
            "{case}"
        );
        assert_eq!(event.event_id, given["event_id"].as_str().unwrap(), "{case}");
        assert_eq!(event.product_id, given["product_id"].as_str().unwrap(), "{case}");
    }
}

#[test]
fn invalid_catalog_events_are_rejected_with_a_stable_code_and_field() {
    let long = "x".repeat(129);
    let price = |field: &str, value: Value| with(price_change(), &["properties", field], value);
    let rows: Vec<(&str, Value, ErrorCode, &str)> = vec![
        ("not an object", json!(["sku-42"]), ErrorCode::Malformed, "$"),
        (
            "missing event_id",
            with(restock(), &["event_id"], json!("<remove>")),
            ErrorCode::MissingField,
            "event_id",
        ),
        (
            "null product_id",
            with(restock(), &["product_id"], Value::Null),
            ErrorCode::MissingField,
            "product_id",
        ),
        (
            "missing occurred_at",
            with(restock(), &["occurred_at"], json!("<remove>")),
            ErrorCode::MissingField,
            "occurred_at",
        ),
        ("missing type", with(restock(), &["type"], json!("<remove>")), ErrorCode::MissingField, "type"),
        (
            "product id as a number",
            with(restock(), &["product_id"], json!(42)),
            ErrorCode::WrongFieldType,
            "product_id",
        ),
        ("empty event_id", with(restock(), &["event_id"], json!("")), ErrorCode::InvalidLength, "event_id"),
        (
            "over-long product_id",
            with(restock(), &["product_id"], json!(long)),
            ErrorCode::InvalidLength,
            "product_id",
        ),
        ("over-long source", with(restock(), &["source"], json!(long)), ErrorCode::InvalidLength, "source"),
        (
            "unknown type",
            with(restock(), &["type"], json!("product_deleted")),
            ErrorCode::UnknownType,
            "type",
        ),
        (
            "a touchpoint event type",
            with(restock(), &["type"], json!("product_viewed")),
            ErrorCode::UnknownType,
            "type",
        ),
        (
            "bad timestamp",
            with(restock(), &["occurred_at"], json!("yesterday")),
            ErrorCode::InvalidTimestamp,
            "occurred_at",
        ),
        (
            "timestamp without zone",
            with(restock(), &["occurred_at"], json!("2026-12-03T10:00:00")),
            ErrorCode::InvalidTimestamp,
            "occurred_at",
        ),
        (
            "a millisecond more than 24 h ahead, with an offset",
            with(restock(), &["occurred_at"], json!("2026-12-04T13:00:00.001+01:00")),
            ErrorCode::FutureTimestamp,
            "occurred_at",
        ),
        (
            "a touchpoint field",
            with(restock(), &["customer_id"], json!("c-1")),
            ErrorCode::UnknownField,
            "customer_id",
        ),
        (
            "a misspelt property",
            price("new_price", json!(3999)),
            ErrorCode::UnknownField,
            "properties.new_price",
        ),
        (
            "a price on a restock",
            with(restock(), &["properties"], json!({"new_minor": 3999})),
            ErrorCode::UnknownField,
            "properties.new_minor",
        ),
        (
            "properties not an object",
            with(restock(), &["properties"], json!([])),
            ErrorCode::WrongFieldType,
            "properties",
        ),
        (
            "a price change without properties",
            with(price_change(), &["properties"], json!("<remove>")),
            ErrorCode::MissingField,
            "properties.old_minor",
        ),
        (
            "missing new price",
            price("new_minor", json!("<remove>")),
            ErrorCode::MissingField,
            "properties.new_minor",
        ),
        ("missing currency", price("currency", Value::Null), ErrorCode::MissingField, "properties.currency"),
        (
            "price as a string",
            price("old_minor", json!("4999")),
            ErrorCode::WrongFieldType,
            "properties.old_minor",
        ),
        (
            "price in major units",
            price("new_minor", json!(39.99)),
            ErrorCode::WrongFieldType,
            "properties.new_minor",
        ),
        (
            "price beyond 64 bits",
            price("new_minor", json!(10_000_000_000_000_000_000_u64)),
            ErrorCode::WrongFieldType,
            "properties.new_minor",
        ),
        (
            "negative old price",
            price("old_minor", json!(-1)),
            ErrorCode::NegativeAmount,
            "properties.old_minor",
        ),
        (
            "negative new price",
            price("new_minor", json!(-3999)),
            ErrorCode::NegativeAmount,
            "properties.new_minor",
        ),
        (
            "a price above 10^12 minor units",
            price("old_minor", json!(1_000_000_000_001_i64)),
            ErrorCode::OutOfRange,
            "properties.old_minor",
        ),
        (
            "lower-case currency",
            price("currency", json!("eur")),
            ErrorCode::InvalidCurrency,
            "properties.currency",
        ),
        (
            "currency name",
            price("currency", json!("EURO")),
            ErrorCode::InvalidCurrency,
            "properties.currency",
        ),
        ("currency symbol", price("currency", json!("€")), ErrorCode::InvalidCurrency, "properties.currency"),
    ];
    for (case, given, code, field) in rows {
        let rejection = catalog_event_from_json(&given, now()).expect_err(case);
        assert!(
            rejection.0.iter().any(|e| e.code == code && e.field == field),
            "{case}: expected {code} at {field}, got {rejection}"
        );
    }
}

#[test]
fn every_problem_of_a_catalog_event_is_reported_not_only_the_first() {
    let given = json!({"product_id": "sku-42", "occurred_at": "soon", "type": "product_price_changed",
                       "channel": "web", "properties": {"old_minor": "4999", "currency": "EUR", "sale": true}});
    let rejection = catalog_event_from_json(&given, now()).unwrap_err();
    let mut found: Vec<(&str, &str)> =
        rejection.0.iter().map(|e| (e.code.as_str(), e.field.as_str())).collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("invalid_timestamp", "occurred_at"),
            ("missing_field", "event_id"),
            ("missing_field", "properties.new_minor"),
            ("unknown_field", "channel"),
            ("unknown_field", "properties.sale"),
            ("wrong_field_type", "properties.old_minor"),
        ]
    );
}

#[test]
fn json_text_that_is_not_json_is_malformed() {
    let rejection = parse_catalog_event_json("{\"event_id\": ", now()).unwrap_err();
    assert_eq!((rejection.first().code, rejection.first().field.as_str()), (ErrorCode::Malformed, "$"));
    assert!(parse_catalog_event_json(&price_change().to_string(), now()).is_ok());
}

#[test]
fn a_decoded_record_is_held_to_the_same_rules() {
    let valid = catalog_event_from_json(&price_change(), now()).unwrap();
    let restocked = catalog_event_from_json(&restock(), now()).unwrap();
    // (given a decoded record, then the codes at their fields)
    type Codes = Vec<(ErrorCode, &'static str)>;
    let rows: Vec<(&str, CatalogEvent, Codes)> = vec![
        ("valid", valid.clone(), vec![]),
        (
            "a price change without prices",
            CatalogEvent { old_minor: None, new_minor: None, currency: None, ..valid.clone() },
            vec![
                (ErrorCode::MissingField, "properties.old_minor"),
                (ErrorCode::MissingField, "properties.new_minor"),
                (ErrorCode::MissingField, "properties.currency"),
            ],
        ),
        (
            "a restock with a price",
            CatalogEvent { new_minor: Some(10), currency: Some("EUR".into()), ..restocked },
            vec![
                (ErrorCode::TypeMismatch, "properties.new_minor"),
                (ErrorCode::TypeMismatch, "properties.currency"),
            ],
        ),
        (
            "dated two days ahead",
            CatalogEvent { occurred_at: now() + chrono::Duration::days(2), ..valid },
            vec![(ErrorCode::FutureTimestamp, "occurred_at")],
        ),
    ];
    for (case, given, expected) in rows {
        let found: Vec<(ErrorCode, String)> = match validate_catalog_event(&given, now()) {
            Ok(()) => Vec::new(),
            Err(rejection) => rejection.0.into_iter().map(|e| (e.code, e.field)).collect(),
        };
        let expected: Vec<(ErrorCode, String)> =
            expected.into_iter().map(|(code, field)| (code, field.to_owned())).collect();
        assert_eq!(found, expected, "{case}");
    }
}

#[test]
fn both_types_round_trip_through_their_json_form_and_avro() {
    for kind in [CatalogEventType::ProductPriceChanged, CatalogEventType::ProductRestocked] {
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            json!(kind.as_str()),
            "the Avro symbol is the JSON name"
        );
        assert_eq!(CatalogEventType::parse(kind.as_str()), Some(kind));
    }
    for given in [price_change(), restock()] {
        let event = catalog_event_from_json(&given, now()).unwrap();
        let rendered = catalog_event_to_json(&event);
        assert_eq!(catalog_event_from_json(&rendered, now()).unwrap(), event, "{rendered}");
        assert_eq!(decode_record::<CatalogEvent>(&encode_record(&event).unwrap()).unwrap(), event);
    }
    assert_eq!(
        catalog_event_to_json(&catalog_event_from_json(&price_change(), now()).unwrap()),
        json!({"event_id": "price-1", "product_id": "sku-42", "occurred_at": "2026-12-03T10:00:00.000Z",
               "type": "product_price_changed", "properties": {"old_minor": 4999, "new_minor": 3999, "currency": "EUR"},
               "source": "pim"})
    );
}
