//! The JSON form of a touchpoint event (gateway, CLI, docs): parsing with per-field errors, and
//! rendering back.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::event::{Channel, EventPayload, EventType, Purpose, TouchpointEvent, TraitValue};
use crate::identifiers::{Identifier, IdentifierError, normalize};
use crate::validate::{ErrorCode, Errors, Rejection, validate};

/// Parses one event from JSON text and checks every rule of SPEC 2.
pub fn parse_event_json(text: &str, now: DateTime<Utc>) -> Result<TouchpointEvent, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::single(ErrorCode::Malformed, "$", format!("invalid JSON: {e}")))?;
    event_from_json(&value, now)
}

/// Converts a parsed JSON value into an event and checks every rule of SPEC 2.
pub fn event_from_json(value: &Value, now: DateTime<Utc>) -> Result<TouchpointEvent, Rejection> {
    let Some(object) = value.as_object() else {
        return Err(Rejection::single(ErrorCode::Malformed, "$", "an event must be a JSON object"));
    };
    let mut errors = Errors::default();
    let mut top = Fields { object, prefix: "", errors: &mut errors };
    let event_id = top.required_string("event_id");
    let customer_id = top.required_string("customer_id");
    let occurred_at = top.timestamp("occurred_at");
    let channel = top.required_string("channel").and_then(|text| {
        let parsed = Channel::parse(&text);
        if parsed.is_none() {
            top.errors.push(ErrorCode::UnknownChannel, "channel", format!("{text:?} is not a channel"));
        }
        parsed
    });
    let event_type = top.required_string("type").and_then(|text| {
        let parsed = EventType::parse(&text);
        match parsed {
            None => top.errors.push(ErrorCode::UnknownType, "type", format!("{text:?} is not an event type")),
            // Only the resolver decides merges (docs/identity.md): no producer may send one.
            Some(EventType::CustomersMerged) => top.errors.push(
                ErrorCode::UnknownType,
                "type",
                "customers_merged is written by identity-resolver, not accepted from producers",
            ),
            Some(_) => {}
        }
        parsed
    });
    let source = top.optional_string("source");
    let identifiers = identifiers_from_json(object.get("identifiers"), &mut errors);
    let empty = Map::new();
    let properties = match object.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.push(ErrorCode::WrongFieldType, "properties", "must be an object");
            &empty
        }
    };
    let parsed_payload = event_type.map(|event_type| payload_from_json(event_type, properties));
    let (payload, context) = match parsed_payload {
        Some(Ok((payload, context))) => (Some(payload), context),
        Some(Err(payload_errors)) => {
            errors.extend(payload_errors);
            (None, BTreeMap::new())
        }
        None => (None, BTreeMap::new()),
    };
    errors.finish()?;
    let (Some(event_id), Some(customer_id), Some(occurred_at), Some(channel), Some(payload)) =
        (event_id, customer_id, occurred_at, channel, payload)
    else {
        unreachable!("every missing part pushed an error");
    };
    let event = TouchpointEvent {
        event_id,
        customer_id,
        occurred_at,
        channel,
        source,
        payload,
        context,
        identifiers,
    };
    validate(&event, now)?;
    Ok(event)
}

/// `"identifiers": [{"type": "email", "value": " Ann@Example.com"}, ...]`, normalized, each once
/// (two spellings of one email are one identifier).
fn identifiers_from_json(value: Option<&Value>, errors: &mut Errors) -> Vec<Identifier> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(
                ErrorCode::WrongFieldType,
                "identifiers",
                "must be an array of {\"type\", \"value\"} objects",
            );
            return Vec::new();
        }
    };
    let mut identifiers: Vec<Identifier> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = |field: &str| format!("identifiers[{index}].{field}");
        let text = |field: &str, errors: &mut Errors| match item.get(field) {
            Some(Value::String(text)) => Some(text.clone()),
            None | Some(Value::Null) => {
                errors.push(ErrorCode::MissingField, path(field), "is required");
                None
            }
            Some(_) => {
                errors.push(ErrorCode::WrongFieldType, path(field), "must be a string");
                None
            }
        };
        if !item.is_object() {
            errors.push(ErrorCode::WrongFieldType, format!("identifiers[{index}]"), "must be an object");
            continue;
        }
        let (Some(kind), Some(raw)) = (text("type", errors), text("value", errors)) else { continue };
        match normalize(&kind, &raw) {
            Ok(value) => {
                let identifier = Identifier { kind, value };
                if !identifiers.contains(&identifier) {
                    identifiers.push(identifier);
                }
            }
            Err(error) => {
                let field = if matches!(error, IdentifierError::Type(_) | IdentifierError::Reserved) {
                    "type"
                } else {
                    "value"
                };
                errors.push(ErrorCode::InvalidIdentifier, path(field), format!("{kind} {error}"));
            }
        }
    }
    identifiers
}

/// Reads the fields of one JSON object and records each problem under the field's dotted path
/// (the prefix, then the name); a null field counts as absent.
pub(crate) struct Fields<'a, 'e> {
    pub(crate) object: &'a Map<String, Value>,
    pub(crate) prefix: &'static str,
    pub(crate) errors: &'e mut Errors,
}

impl Fields<'_, '_> {
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.object.get(name).filter(|v| !v.is_null())
    }

    fn missing(&mut self, name: &str) {
        let path = self.path(name);
        self.errors.push(ErrorCode::MissingField, &path, "is required");
    }

    fn wrong_type(&mut self, name: &str, expected: &str) {
        let path = self.path(name);
        self.errors.push(ErrorCode::WrongFieldType, &path, format!("must be {expected}"));
    }

    pub(crate) fn optional_string(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(text) => Some(text.clone()),
            _ => {
                self.wrong_type(name, "a string");
                None
            }
        }
    }

    pub(crate) fn required_string(&mut self, name: &str) -> Option<String> {
        let value = self.optional_string(name);
        if value.is_none() && self.get(name).is_none() {
            self.missing(name);
        }
        value
    }

    fn optional_i64(&mut self, name: &str) -> Option<i64> {
        let value = self.get(name)?;
        match value.as_i64() {
            Some(number) => Some(number),
            None => {
                self.wrong_type(name, "an integer");
                None
            }
        }
    }

    pub(crate) fn required_i64(&mut self, name: &str) -> Option<i64> {
        if self.get(name).is_none() {
            self.missing(name);
            return None;
        }
        self.optional_i64(name)
    }

    fn optional_i32(&mut self, name: &str) -> Option<i32> {
        let number = self.optional_i64(name)?;
        match i32::try_from(number) {
            Ok(number) => Some(number),
            Err(_) => {
                let path = self.path(name);
                self.errors.push(ErrorCode::OutOfRange, &path, format!("{number} does not fit 32 bits"));
                None
            }
        }
    }

    fn required_i32(&mut self, name: &str) -> Option<i32> {
        if self.get(name).is_none() {
            self.missing(name);
            return None;
        }
        self.optional_i32(name)
    }

    fn required_bool(&mut self, name: &str) -> Option<bool> {
        match self.get(name) {
            None => {
                self.missing(name);
                None
            }
            Some(Value::Bool(flag)) => Some(*flag),
            Some(_) => {
                self.wrong_type(name, "true or false");
                None
            }
        }
    }

    fn purpose(&mut self, name: &str) -> Option<Purpose> {
        let text = self.required_string(name)?;
        let parsed = Purpose::parse(&text);
        if parsed.is_none() {
            let path = self.path(name);
            self.errors.push(
                ErrorCode::WrongFieldType,
                &path,
                format!("{text:?} is not marketing or transactional"),
            );
        }
        parsed
    }

    pub(crate) fn timestamp(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let text = self.required_string(name)?;
        match DateTime::parse_from_rfc3339(&text) {
            Ok(time) => Some(truncate_to_millis(time.with_timezone(&Utc))),
            Err(e) => {
                let path = self.path(name);
                self.errors.push(
                    ErrorCode::InvalidTimestamp,
                    &path,
                    format!("{text:?} is not RFC 3339: {e}"),
                );
                None
            }
        }
    }

    fn trait_map(&mut self, name: &str) -> BTreeMap<String, TraitValue> {
        match self.get(name) {
            None => BTreeMap::new(),
            Some(Value::Object(map)) => {
                map.iter().map(|(key, value)| (key.clone(), trait_value(value))).collect()
            }
            Some(_) => {
                self.wrong_type(name, "an object");
                BTreeMap::new()
            }
        }
    }

    fn string_list(&mut self, name: &str) -> Vec<String> {
        match self.get(name) {
            None => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
            }
            Some(_) => {
                self.wrong_type(name, "an array of strings");
                Vec::new()
            }
        }
    }
}

/// Avro timestamps have millisecond precision; the event must equal its own round trip.
pub fn truncate_to_millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

fn trait_value(value: &Value) -> TraitValue {
    match value {
        Value::Null => TraitValue::Null,
        Value::Bool(flag) => TraitValue::Bool(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => TraitValue::Long(integer),
            None => TraitValue::Double(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => TraitValue::String(text.clone()),
        nested => TraitValue::String(nested.to_string()),
    }
}

/// Keys every event type knows; other keys go to `context`.
fn known_keys(event_type: EventType) -> &'static [&'static str] {
    match event_type {
        EventType::PageViewed => &["url"],
        EventType::ProductViewed => &["product_id"],
        EventType::CartUpdated => &["cart_id", "items", "value_minor", "currency"],
        EventType::OrderPlaced => &["order_id", "value_minor", "currency", "items"],
        EventType::OrderRefunded => &["order_id", "value_minor", "currency"],
        EventType::MessageSent => &["message_id", "campaign_id", "purpose"],
        EventType::MessageDelivered | EventType::MessageOpened | EventType::SpamReported => &["message_id"],
        EventType::MessageClicked => &["message_id", "url"],
        EventType::MessageBounced => &["message_id", "hard"],
        EventType::MessageReceived => &["conversation_id", "text_len"],
        EventType::SupportTicketOpened => &["ticket_id", "topic"],
        EventType::SupportTicketResolved => &["ticket_id"],
        EventType::ConsentChanged => &["purpose", "granted"],
        EventType::TraitsUpdated => &["set", "set_once", "unset"],
        EventType::LoyaltyRedeemRequested => &["redemption_id", "points"],
        EventType::LoyaltyPointsAdjusted => &["points", "reason"],
        EventType::ErasureRequested | EventType::Identify => &[],
        EventType::CustomersMerged => {
            &["winner", "merge_id", "identifier_type", "identifier_value", "evidence_event_id"]
        }
    }
}

type PayloadAndContext = (EventPayload, BTreeMap<String, String>);

fn payload_from_json(
    event_type: EventType,
    properties: &Map<String, Value>,
) -> Result<PayloadAndContext, Errors> {
    let mut errors = Errors::default();
    let mut p = Fields { object: properties, prefix: "properties.", errors: &mut errors };
    let payload = match event_type {
        EventType::PageViewed => p.required_string("url").map(|url| EventPayload::PageViewed { url }),
        EventType::ProductViewed => {
            p.required_string("product_id").map(|product_id| EventPayload::ProductViewed { product_id })
        }
        EventType::CartUpdated => {
            let (cart_id, items) = (p.required_string("cart_id"), p.required_i32("items"));
            let (value_minor, currency) = (p.required_i64("value_minor"), p.required_string("currency"));
            match (cart_id, items, value_minor, currency) {
                (Some(cart_id), Some(items), Some(value_minor), Some(currency)) => {
                    Some(EventPayload::CartUpdated { cart_id, items, value_minor, currency })
                }
                _ => None,
            }
        }
        EventType::OrderPlaced => {
            let (order_id, value_minor) = (p.required_string("order_id"), p.required_i64("value_minor"));
            let (currency, items) = (p.required_string("currency"), p.optional_i32("items"));
            match (order_id, value_minor, currency) {
                (Some(order_id), Some(value_minor), Some(currency)) => {
                    Some(EventPayload::OrderPlaced { order_id, value_minor, currency, items })
                }
                _ => None,
            }
        }
        EventType::OrderRefunded => {
            let (order_id, value_minor) = (p.required_string("order_id"), p.required_i64("value_minor"));
            let currency = p.required_string("currency");
            match (order_id, value_minor, currency) {
                (Some(order_id), Some(value_minor), Some(currency)) => {
                    Some(EventPayload::OrderRefunded { order_id, value_minor, currency })
                }
                _ => None,
            }
        }
        EventType::MessageSent => {
            let (message_id, campaign_id) =
                (p.required_string("message_id"), p.optional_string("campaign_id"));
            let purpose = p.purpose("purpose");
            match (message_id, purpose) {
                (Some(message_id), Some(purpose)) => {
                    Some(EventPayload::MessageSent { message_id, campaign_id, purpose })
                }
                _ => None,
            }
        }
        EventType::MessageDelivered => {
            p.required_string("message_id").map(|message_id| EventPayload::MessageDelivered { message_id })
        }
        EventType::MessageOpened => {
            p.required_string("message_id").map(|message_id| EventPayload::MessageOpened { message_id })
        }
        EventType::SpamReported => {
            p.required_string("message_id").map(|message_id| EventPayload::SpamReported { message_id })
        }
        EventType::MessageClicked => {
            let (message_id, url) = (p.required_string("message_id"), p.optional_string("url"));
            message_id.map(|message_id| EventPayload::MessageClicked { message_id, url })
        }
        EventType::MessageBounced => {
            let (message_id, hard) = (p.required_string("message_id"), p.required_bool("hard"));
            match (message_id, hard) {
                (Some(message_id), Some(hard)) => Some(EventPayload::MessageBounced { message_id, hard }),
                _ => None,
            }
        }
        EventType::MessageReceived => {
            let conversation_id = p.optional_string("conversation_id");
            let text_len = p.optional_i32("text_len");
            Some(EventPayload::MessageReceived { conversation_id, text_len })
        }
        EventType::SupportTicketOpened => {
            let (ticket_id, topic) = (p.required_string("ticket_id"), p.optional_string("topic"));
            ticket_id.map(|ticket_id| EventPayload::SupportTicketOpened { ticket_id, topic })
        }
        EventType::SupportTicketResolved => {
            p.required_string("ticket_id").map(|ticket_id| EventPayload::SupportTicketResolved { ticket_id })
        }
        EventType::ConsentChanged => {
            let (purpose, granted) = (p.purpose("purpose"), p.required_bool("granted"));
            match (purpose, granted) {
                (Some(purpose), Some(granted)) => Some(EventPayload::ConsentChanged { purpose, granted }),
                _ => None,
            }
        }
        EventType::TraitsUpdated => {
            let set = p.trait_map("set");
            let set_once = p.trait_map("set_once");
            let unset = p.string_list("unset");
            Some(EventPayload::TraitsUpdated { set, set_once, unset })
        }
        EventType::LoyaltyRedeemRequested => {
            let (redemption_id, points) = (p.required_string("redemption_id"), p.required_i64("points"));
            match (redemption_id, points) {
                (Some(redemption_id), Some(points)) => {
                    Some(EventPayload::LoyaltyRedeemRequested { redemption_id, points })
                }
                _ => None,
            }
        }
        EventType::LoyaltyPointsAdjusted => {
            let (points, reason) = (p.required_i64("points"), p.required_string("reason"));
            match (points, reason) {
                (Some(points), Some(reason)) => Some(EventPayload::LoyaltyPointsAdjusted { points, reason }),
                _ => None,
            }
        }
        EventType::ErasureRequested => Some(EventPayload::ErasureRequested),
        EventType::Identify => Some(EventPayload::Identify),
        // Refused with the type above; read here so that its fields are not called unknown.
        EventType::CustomersMerged => None,
    };
    let known = known_keys(event_type);
    let context = properties
        .iter()
        .filter(|(key, _)| !known.contains(&key.as_str()))
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect();
    match payload {
        Some(payload) if errors.is_empty() => Ok((payload, context)),
        _ => Err(errors),
    }
}

/// Renders an RFC 3339 UTC timestamp with milliseconds (`2026-11-23T10:15:00.000Z`).
pub fn format_timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn trait_json(value: &TraitValue) -> Value {
    match value {
        TraitValue::Null => Value::Null,
        TraitValue::Bool(flag) => json!(flag),
        TraitValue::Long(number) => json!(number),
        TraitValue::Double(number) => json!(number),
        TraitValue::String(text) => json!(text),
    }
}

/// The JSON form of an event; `event_from_json` of it gives the event back.
pub fn event_to_json(event: &TouchpointEvent) -> Value {
    let mut properties = match &event.payload {
        EventPayload::PageViewed { url } => json!({"url": url}),
        EventPayload::ProductViewed { product_id } => json!({"product_id": product_id}),
        EventPayload::CartUpdated { cart_id, items, value_minor, currency } => {
            json!({"cart_id": cart_id, "items": items, "value_minor": value_minor, "currency": currency})
        }
        EventPayload::OrderPlaced { order_id, value_minor, currency, items } => {
            json!({"order_id": order_id, "value_minor": value_minor, "currency": currency, "items": items})
        }
        EventPayload::OrderRefunded { order_id, value_minor, currency } => {
            json!({"order_id": order_id, "value_minor": value_minor, "currency": currency})
        }
        EventPayload::MessageSent { message_id, campaign_id, purpose } => {
            json!({"message_id": message_id, "campaign_id": campaign_id, "purpose": purpose.as_str()})
        }
        EventPayload::MessageDelivered { message_id }
        | EventPayload::MessageOpened { message_id }
        | EventPayload::SpamReported { message_id } => json!({"message_id": message_id}),
        EventPayload::MessageClicked { message_id, url } => {
            json!({"message_id": message_id, "url": url})
        }
        EventPayload::MessageBounced { message_id, hard } => {
            json!({"message_id": message_id, "hard": hard})
        }
        EventPayload::MessageReceived { conversation_id, text_len } => {
            json!({"conversation_id": conversation_id, "text_len": text_len})
        }
        EventPayload::SupportTicketOpened { ticket_id, topic } => {
            json!({"ticket_id": ticket_id, "topic": topic})
        }
        EventPayload::SupportTicketResolved { ticket_id } => json!({"ticket_id": ticket_id}),
        EventPayload::ConsentChanged { purpose, granted } => {
            json!({"purpose": purpose.as_str(), "granted": granted})
        }
        EventPayload::TraitsUpdated { set, set_once, unset } => {
            let set: Map<String, Value> = set.iter().map(|(k, v)| (k.clone(), trait_json(v))).collect();
            let set_once: Map<String, Value> =
                set_once.iter().map(|(k, v)| (k.clone(), trait_json(v))).collect();
            json!({"set": set, "set_once": set_once, "unset": unset})
        }
        EventPayload::LoyaltyRedeemRequested { redemption_id, points } => {
            json!({"redemption_id": redemption_id, "points": points})
        }
        EventPayload::LoyaltyPointsAdjusted { points, reason } => {
            json!({"points": points, "reason": reason})
        }
        EventPayload::ErasureRequested | EventPayload::Identify => json!({}),
        EventPayload::CustomersMerged {
            winner,
            merge_id,
            identifier_type,
            identifier_value,
            evidence_event_id,
        } => {
            json!({"winner": winner, "merge_id": merge_id, "identifier_type": identifier_type,
                   "identifier_value": identifier_value, "evidence_event_id": evidence_event_id})
        }
    };
    if let Value::Object(map) = &mut properties {
        map.retain(|_, value| !value.is_null());
        for (key, value) in &event.context {
            map.insert(key.clone(), Value::String(value.clone()));
        }
    }
    let mut object = json!({
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "occurred_at": format_timestamp(event.occurred_at),
        "channel": event.channel.as_str(),
        "type": event.event_type().as_str(),
        "properties": properties,
    });
    if let Some(source) = &event.source {
        object["source"] = json!(source);
    }
    if !event.identifiers.is_empty() {
        object["identifiers"] = json!(event.identifiers);
    }
    object
}
