//! omnistream's data model: the touchpoint event of SPEC 2 and the derived records of SPEC 4, their
//! Avro single-object codec (the `.avsc` files in `schemas/` are the source of truth), the JSON form
//! of events, and validation with stable error codes.

pub mod avro_write;
pub mod canonical;
pub mod catalog;
pub mod codec;
pub mod event;
pub mod identifiers;
pub mod json;
pub mod json_schema;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod records;
pub mod services;
pub mod sorted_map;
pub mod tickets;
pub mod topics;
pub mod traits;
pub mod validate;

pub use codec::{
    AvroRecord, CodecError, LearnError, OutputRecord, RecordKind, confluent_schema_id, decode_any,
    decode_event, decode_record, encode_event, encode_record, is_schema_id_known, learn_schema, to_confluent,
    value_to_json,
};
pub use event::{Channel, EventPayload, EventType, Purpose, TouchpointEvent, TraitValue};
pub use identifiers::Identifier;
pub use json::{event_from_json, event_to_json, format_timestamp, parse_event_json};
pub use sorted_map::{MapKey, SortedMap};
pub use validate::{ErrorCode, Rejection, ValidationError, validate};

use chrono::{DateTime, Utc};

/// Decodes Avro bytes from the events topic and applies every validation rule: what a service does
/// with each input record before its domain logic sees it.
pub fn decode_and_validate(bytes: &[u8], now: DateTime<Utc>) -> Result<TouchpointEvent, Rejection> {
    let event = decode_event(bytes)?;
    validate(&event, now)?;
    Ok(event)
}
