//! The Confluent wire format (magic byte 0, 4-byte big-endian schema id, datum): bytes worked out
//! by hand from the format's definition, and writer schemas a registry may hold that are not
//! omnistream's own texts. (The independent check, a stock Confluent client through a real
//! registry, is `tests/interop/confluent_registry.py`.)
//!
//! The learned ids are process-wide: every test uses ids of its own.

use chrono::{TimeZone, Utc};
use omnistream_model::records::LoyaltyBalance;
use omnistream_model::{
    Channel, ErrorCode, EventPayload, LearnError, RecordKind, TouchpointEvent, confluent_schema_id,
    decode_event, decode_record, encode_event, is_schema_id_known, learn_schema, to_confluent,
};

const BALANCE_SCHEMA: &str = include_str!("../../../schemas/loyalty_balance.avsc");
const EVENT_SCHEMA: &str = include_str!("../../../schemas/touchpoint_event.avsc");

/// `LoyaltyBalance {customer_id "c1", active 10, pending 0, spent 0, expired 0, lifetime_earned 10,
/// tier "gold", next_expiry null, updated_at 1000 ms, version 1}` in Avro binary, by hand:
/// strings are a zig-zag length then UTF-8, longs zig-zag varints, a union its branch index.
const BALANCE_DATUM: &[u8] = &[
    0x04, b'c', b'1', // customer_id
    0x14, // active 10
    0x00, 0x00, 0x00, // pending, spent, expired
    0x14, // lifetime_earned 10
    0x08, b'g', b'o', b'l', b'd', // tier
    0x00, // next_expiry: branch 0, null
    0xD0, 0x0F, // updated_at 1000 → zig-zag 2000
    0x02, // version 1
];

fn confluent(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

#[test]
fn given_a_learned_id_then_a_hand_made_confluent_record_decodes() {
    let bytes = confluent(7_001, BALANCE_DATUM);
    assert_eq!(confluent_schema_id(&bytes), Some(7_001));
    let unknown = decode_record::<LoyaltyBalance>(&bytes).unwrap_err().to_string();
    assert!(unknown.contains("unknown schema id 7001"), "{unknown}");

    assert_eq!(learn_schema(7_001, BALANCE_SCHEMA).unwrap(), RecordKind::LoyaltyBalance);
    assert!(is_schema_id_known(7_001));
    let balance: LoyaltyBalance = decode_record(&bytes).unwrap();
    assert_eq!((balance.customer_id.as_str(), balance.active, balance.tier.as_str()), ("c1", 10, "gold"));
    assert_eq!(balance.updated_at, Utc.timestamp_millis_opt(1_000).unwrap());
    assert_eq!(balance.version, 1);
}

#[test]
fn to_confluent_puts_magic_zero_and_the_big_endian_id_in_front_of_the_same_datum() {
    let event = TouchpointEvent {
        event_id: "e1".into(),
        customer_id: "c1".into(),
        occurred_at: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
        channel: Channel::Web,
        source: None,
        payload: EventPayload::PageViewed { url: "https://shop.example/".into() },
        context: Default::default(),
        identifiers: Vec::new(),
    };
    let single_object = encode_event(&event).unwrap();
    assert_eq!(
        to_confluent(single_object.clone(), 0x0102_0304),
        single_object,
        "an id not learned: unchanged"
    );
    learn_schema(0x0102_0304, EVENT_SCHEMA).unwrap();
    let bytes = to_confluent(single_object.clone(), 0x0102_0304);
    assert_eq!(&bytes[..5], &[0x00, 0x01, 0x02, 0x03, 0x04]);
    assert_eq!(&bytes[5..], &single_object[10..], "the datum is unchanged");
    assert_eq!(decode_event(&bytes).unwrap(), event);
    assert_eq!(to_confluent(bytes.clone(), 0x0102_0304), bytes, "Confluent bytes keep their id");
}

#[test]
fn bytes_of_an_older_schema_version_are_not_given_the_current_schema_id() {
    // Version 1's event (no `identifiers`), as a replayed dead letter would carry it.
    let v1 = include_str!("../../../schemas/released/v1/touchpoint_event.avsc");
    let fingerprint = omnistream_model::canonical::fingerprint(v1).unwrap();
    let mut old = vec![0xC3, 0x01];
    old.extend_from_slice(&fingerprint);
    old.extend_from_slice(b"datum of version 1");
    learn_schema(7_007, EVENT_SCHEMA).unwrap();
    assert_eq!(to_confluent(old.clone(), 7_007), old);
}

#[test]
fn a_writer_schema_with_a_field_omnistream_does_not_have_is_resolved_by_name() {
    // A producer's copy with an extra field at the end (with a default, so it stays
    // compatible): the reader skips it.
    let mut schema: serde_json::Value = serde_json::from_str(BALANCE_SCHEMA).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "note", "type": "string", "default": ""}));
    assert_eq!(learn_schema(7_002, &schema.to_string()).unwrap(), RecordKind::LoyaltyBalance);
    let mut datum = BALANCE_DATUM.to_vec();
    datum.extend_from_slice(&[0x06, b'h', b'e', b'y']);
    let balance: LoyaltyBalance = decode_record(&confluent(7_002, &datum)).unwrap();
    assert_eq!((balance.customer_id.as_str(), balance.lifetime_earned, balance.version), ("c1", 10, 1));
}

#[test]
fn a_record_of_another_kind_under_a_learned_id_is_the_wrong_record_type() {
    learn_schema(7_003, BALANCE_SCHEMA).unwrap();
    let rejection = decode_event(&confluent(7_003, BALANCE_DATUM)).unwrap_err();
    assert_eq!(rejection.first().code, ErrorCode::WrongRecordType, "{rejection}");
}

#[test]
fn schemas_that_are_not_omnistream_records_are_refused_by_name() {
    let other =
        r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;
    match learn_schema(7_004, other) {
        Err(LearnError::NotOmnistream { id: 7_004, name }) => assert_eq!(name, "shop.Order"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(learn_schema(7_005, "{not json"), Err(LearnError::Unparsable { id: 7_005, .. })));
    assert!(!is_schema_id_known(7_004) && !is_schema_id_known(7_005));
}

#[test]
fn an_unknown_id_is_an_unknown_schema_and_a_truncated_header_is_malformed() {
    let rejection = decode_event(&confluent(7_006, b"")).unwrap_err();
    assert_eq!(rejection.first().code, ErrorCode::UnknownSchema);
    assert_eq!(confluent_schema_id(&[0, 0, 0, 1]), None, "four bytes hold no id");
    assert_eq!(decode_event(&[0, 0, 0, 1]).unwrap_err().first().code, ErrorCode::Malformed);
}
