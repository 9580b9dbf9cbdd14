//! The JSON form of a catalog event (the gateway's `POST /v1/catalog/events`, `omni produce
//! --catalog`): parsing with per-field errors under the touchpoint events' rules and codes, the
//! rules for a decoded record, and rendering back.
//!
//! ```json
//! {"event_id": "price-1", "product_id": "sku-42", "occurred_at": "2026-12-03T10:00:00Z",
//!  "type": "product_price_changed", "source": "pim",
//!  "properties": {"old_minor": 4999, "new_minor": 3999, "currency": "EUR"}}
//! ```

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::json::{Fields, format_timestamp};
use crate::records::{CatalogEvent, CatalogEventType};
use crate::validate::{ErrorCode, Errors, Rejection};

/// The keys of a catalog event object.
const FIELDS: &[&str] = &["event_id", "product_id", "occurred_at", "type", "source", "properties"];

/// The keys of `properties` each type has.
fn properties_of(kind: CatalogEventType) -> &'static [&'static str] {
    match kind {
        CatalogEventType::ProductPriceChanged => &["old_minor", "new_minor", "currency"],
        CatalogEventType::ProductRestocked => &[],
    }
}

/// Parses one catalog event from JSON text and checks every rule.
pub fn parse_catalog_event_json(text: &str, now: DateTime<Utc>) -> Result<CatalogEvent, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::single(ErrorCode::Malformed, "$", format!("invalid JSON: {e}")))?;
    catalog_event_from_json(&value, now)
}

/// Converts a parsed JSON value into a catalog event and checks every rule; `now` bounds
/// `occurred_at` as it does for touchpoint events.
pub fn catalog_event_from_json(value: &Value, now: DateTime<Utc>) -> Result<CatalogEvent, Rejection> {
    let Some(object) = value.as_object() else {
        return Err(Rejection::single(ErrorCode::Malformed, "$", "a catalog event must be a JSON object"));
    };
    let mut errors = Errors::default();
    let mut top = Fields { object, prefix: "", errors: &mut errors };
    let event_id = top.required_string("event_id");
    let product_id = top.required_string("product_id");
    let occurred_at = top.timestamp("occurred_at");
    let kind = top.required_string("type").and_then(|text| {
        let parsed = CatalogEventType::parse(&text);
        if parsed.is_none() {
            top.errors.push(
                ErrorCode::UnknownType,
                "type",
                format!("{text:?} is not a catalog event type (product_price_changed, product_restocked)"),
            );
        }
        parsed
    });
    let source = top.optional_string("source");
    refuse_unknown(object, FIELDS, "", "a catalog event", &mut errors);
    let empty = Map::new();
    let properties = match object.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.push(ErrorCode::WrongFieldType, "properties", "must be an object");
            &empty
        }
    };
    let (mut old_minor, mut new_minor, mut currency) = (None, None, None);
    if let Some(kind) = kind {
        refuse_unknown(properties, properties_of(kind), "properties.", kind.as_str(), &mut errors);
        if kind == CatalogEventType::ProductPriceChanged {
            let mut p = Fields { object: properties, prefix: "properties.", errors: &mut errors };
            (old_minor, new_minor, currency) =
                (p.required_i64("old_minor"), p.required_i64("new_minor"), p.required_string("currency"));
        }
    }
    errors.finish()?;
    let (Some(event_id), Some(product_id), Some(occurred_at), Some(kind)) =
        (event_id, product_id, occurred_at, kind)
    else {
        unreachable!("every missing part pushed an error");
    };
    let event =
        CatalogEvent { event_id, product_id, occurred_at, kind, old_minor, new_minor, currency, source };
    validate_catalog_event(&event, now)?;
    Ok(event)
}

/// A catalog event keeps no extra context, so a key it does not have would be lost: refused.
fn refuse_unknown(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
    owner: &str,
    errors: &mut Errors,
) {
    for key in object.keys().filter(|key| !known.contains(&key.as_str())) {
        errors.push(ErrorCode::UnknownField, format!("{prefix}{key}"), format!("{owner} has no {key:?}"));
    }
}

/// Checks the rules a decoded catalog event must keep: ids of 1..128 characters, `occurred_at`
/// at most 24 h ahead of `now`, and for a price change both prices (0..=10^12 minor units) and an
/// ISO 4217 currency; a restock carries no price.
pub fn validate_catalog_event(event: &CatalogEvent, now: DateTime<Utc>) -> Result<(), Rejection> {
    let mut errors = Errors::default();
    errors.id("event_id", &event.event_id);
    errors.id("product_id", &event.product_id);
    errors.not_too_far_ahead("occurred_at", event.occurred_at, now);
    if let Some(source) = &event.source {
        errors.id("source", source);
    }
    let prices = [("properties.old_minor", event.old_minor), ("properties.new_minor", event.new_minor)];
    match event.kind {
        CatalogEventType::ProductPriceChanged => {
            for (field, price) in prices {
                match price {
                    Some(price) => errors.amount(field, price),
                    None => errors.push(ErrorCode::MissingField, field, "is required"),
                }
            }
            match &event.currency {
                Some(currency) => errors.currency("properties.currency", currency),
                None => errors.push(ErrorCode::MissingField, "properties.currency", "is required"),
            }
        }
        CatalogEventType::ProductRestocked => {
            let set = prices
                .iter()
                .filter(|(_, price)| price.is_some())
                .map(|(field, _)| *field)
                .chain(event.currency.is_some().then_some("properties.currency"));
            for field in set {
                errors.push(ErrorCode::TypeMismatch, field, "product_restocked has no price");
            }
        }
    }
    errors.finish()
}

/// The JSON form of a catalog event; `catalog_event_from_json` of it gives the event back.
pub fn catalog_event_to_json(event: &CatalogEvent) -> Value {
    let mut properties = Map::new();
    let prices = [("old_minor", event.old_minor), ("new_minor", event.new_minor)];
    for (key, price) in prices {
        if let Some(price) = price {
            properties.insert(key.to_owned(), json!(price));
        }
    }
    if let Some(currency) = &event.currency {
        properties.insert("currency".to_owned(), json!(currency));
    }
    let mut object = json!({
        "event_id": event.event_id,
        "product_id": event.product_id,
        "occurred_at": format_timestamp(event.occurred_at),
        "type": event.kind.as_str(),
        "properties": properties,
    });
    if let Some(source) = &event.source {
        object["source"] = json!(source);
    }
    object
}
