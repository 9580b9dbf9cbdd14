//! The validation rules of SPEC 2, shared by the JSON form, the Avro decoder, the gateway and the
//! services' dead-letter path. Every error has a stable code and names the offending field.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::event::{EventPayload, TouchpointEvent, TraitValue};
use crate::identifiers::{IdentifierError, MAX_IDENTIFIERS, normalize};

/// Longest id (`event_id`, `customer_id`, order/message/ticket ids...).
pub const MAX_ID_LEN: usize = 128;
/// Longest free text (urls, reasons, trait and context values).
pub const MAX_TEXT_LEN: usize = 2048;
/// Most keys in `context` and in each trait map.
pub const MAX_KEYS: usize = 100;
/// How far in the future `occurred_at` may be (clock skew allowance).
pub const MAX_FUTURE: Duration = Duration::hours(24);
/// Largest money amount in minor units: 10^12 (ten billion major units) is no real order.
pub const MAX_VALUE_MINOR: i64 = 1_000_000_000_000;
/// Largest points amount in one event.
pub const MAX_POINTS: i64 = 1_000_000_000;
/// Largest item count in one cart or order.
pub const MAX_ITEMS: i32 = 100_000;

/// Stable, machine-readable reason an event was rejected (DLQ header `error.code`, gateway response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The bytes or the JSON text cannot be decoded at all.
    Malformed,
    /// Avro single-object encoding with a schema fingerprint we do not know.
    UnknownSchema,
    /// A record of another kind than expected (e.g. a profile on the events topic).
    WrongRecordType,
    UnknownType,
    UnknownChannel,
    MissingField,
    /// A field has the wrong JSON type (a string where a number belongs, ...).
    WrongFieldType,
    InvalidTimestamp,
    FutureTimestamp,
    NegativeAmount,
    /// A number no real event has (zero points, a billion items, ...).
    OutOfRange,
    /// An empty required string or an over-long string.
    InvalidLength,
    InvalidCurrency,
    /// The Avro `type` does not match the `properties` branch.
    TypeMismatch,
    /// An identifier whose type name or value is malformed (an email without `@`, a phone
    /// without its country code).
    InvalidIdentifier,
    /// A key a catalog event does not have: its schema keeps no extra context, so a key that would
    /// be dropped silently is refused (touchpoint events keep theirs in `context`).
    UnknownField,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownSchema => "unknown_schema",
            ErrorCode::WrongRecordType => "wrong_record_type",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::WrongFieldType => "wrong_field_type",
            ErrorCode::InvalidTimestamp => "invalid_timestamp",
            ErrorCode::FutureTimestamp => "future_timestamp",
            ErrorCode::NegativeAmount => "negative_amount",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::InvalidLength => "invalid_length",
            ErrorCode::InvalidCurrency => "invalid_currency",
            ErrorCode::TypeMismatch => "type_mismatch",
            ErrorCode::InvalidIdentifier => "invalid_identifier",
            ErrorCode::UnknownField => "unknown_field",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule an event broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{code} at `{field}`: {message}")]
pub struct ValidationError {
    pub code: ErrorCode,
    /// Dotted path of the offending field (`properties.order_id`), or `$` for the whole value.
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, field: field.into(), message: message.into() }
    }
}

/// Every rule an event broke, in field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", summary(.0))]
pub struct Rejection(pub Vec<ValidationError>);

fn summary(errors: &[ValidationError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Rejection {
    pub fn single(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ValidationError::new(code, field, message)])
    }

    /// The first error: the one that names the record in a DLQ header.
    pub fn first(&self) -> &ValidationError {
        &self.0[0]
    }
}

/// A field's dotted path (`properties.set.color`), written out only when an error names it:
/// formatting the paths of every valid event was 5 % of profile-updater's instructions.
#[derive(Clone, Copy)]
struct Dotted<'a, P>(P, &'a str);

impl<P: fmt::Display> fmt::Display for Dotted<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Collects errors while checking; `finish` turns them into a result.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ValidationError>);

impl Errors {
    pub(crate) fn push(&mut self, code: ErrorCode, field: impl fmt::Display, message: impl Into<String>) {
        self.0.push(ValidationError::new(code, field.to_string(), message));
    }

    pub(crate) fn finish(self) -> Result<(), Rejection> {
        if self.0.is_empty() { Ok(()) } else { Err(Rejection(self.0)) }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn extend(&mut self, other: Errors) {
        self.0.extend(other.0);
    }

    pub(crate) fn id(&mut self, field: impl fmt::Display + Copy, value: &str) {
        self.length(field, value, 1, MAX_ID_LEN);
    }

    fn text(&mut self, field: impl fmt::Display + Copy, value: &str) {
        self.length(field, value, 0, MAX_TEXT_LEN);
    }

    fn length(&mut self, field: impl fmt::Display + Copy, value: &str, min: usize, max: usize) {
        // A character takes one to four bytes: most values are within the limits by their byte
        // length alone, and counting characters was 3 % of the event-counter's instructions.
        if value.len() <= max && value.len().div_ceil(4) >= min {
            return;
        }
        let len = value.chars().count();
        if len < min || len > max {
            self.push(
                ErrorCode::InvalidLength,
                field,
                format!("length {len} is outside {min}..={max} characters"),
            );
        }
    }

    fn opt_id(&mut self, field: impl fmt::Display + Copy, value: &Option<String>) {
        if let Some(value) = value {
            self.id(field, value);
        }
    }

    pub(crate) fn amount(&mut self, field: impl fmt::Display + Copy, value_minor: i64) {
        if value_minor < 0 {
            self.push(ErrorCode::NegativeAmount, field, format!("{value_minor} is negative"));
        } else if value_minor > MAX_VALUE_MINOR {
            self.push(ErrorCode::OutOfRange, field, format!("{value_minor} exceeds {MAX_VALUE_MINOR}"));
        }
    }

    pub(crate) fn currency(&mut self, field: impl fmt::Display + Copy, currency: &str) {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            self.push(
                ErrorCode::InvalidCurrency,
                field,
                format!("{currency:?} is not an ISO 4217 code (three upper-case letters)"),
            );
        }
    }

    /// The clock-skew allowance: a fact may be dated at most 24 h after `now`.
    pub(crate) fn not_too_far_ahead(
        &mut self,
        field: impl fmt::Display + Copy,
        time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        if time > now + MAX_FUTURE {
            self.push(
                ErrorCode::FutureTimestamp,
                field,
                format!("{} is more than 24 h after now ({now})", time.to_rfc3339()),
            );
        }
    }

    fn items(&mut self, field: impl fmt::Display + Copy, items: i32) {
        if items < 0 {
            self.push(ErrorCode::NegativeAmount, field, format!("{items} is negative"));
        } else if items > MAX_ITEMS {
            self.push(ErrorCode::OutOfRange, field, format!("{items} exceeds {MAX_ITEMS}"));
        }
    }

    fn traits(
        &mut self,
        field: impl fmt::Display + Copy,
        traits: &std::collections::BTreeMap<String, TraitValue>,
    ) {
        if traits.len() > MAX_KEYS {
            self.push(ErrorCode::OutOfRange, field, format!("{} keys exceed {MAX_KEYS}", traits.len()));
        }
        for (key, value) in traits {
            let path = Dotted(field, key);
            self.id(path, key);
            if let TraitValue::String(text) = value {
                self.text(path, text);
            }
            if let TraitValue::Double(number) = value
                && !number.is_finite()
            {
                self.push(ErrorCode::OutOfRange, path, "not a finite number");
            }
        }
    }
}

/// Checks every rule of SPEC 2 that applies to a decoded event. `now` bounds `occurred_at`.
pub fn validate(event: &TouchpointEvent, now: DateTime<Utc>) -> Result<(), Rejection> {
    let mut errors = Errors::default();
    errors.id("event_id", &event.event_id);
    errors.id("customer_id", &event.customer_id);
    errors.not_too_far_ahead("occurred_at", event.occurred_at, now);
    if let Some(source) = &event.source {
        errors.id("source", source);
    }
    if event.context.len() > MAX_KEYS {
        errors.push(
            ErrorCode::OutOfRange,
            "properties",
            format!("{} unknown keys exceed {MAX_KEYS}", event.context.len()),
        );
    }
    for (key, value) in &event.context {
        let path = Dotted("properties", key);
        errors.id(path, key);
        errors.text(path, value);
    }
    validate_payload(&mut errors, &event.payload);
    validate_identifiers(&mut errors, event);
    errors.finish()
}

/// Each identifier must normalize (docs/identity.md); the values themselves may be written in any
/// spelling that does (identity resolution normalizes them again).
fn validate_identifiers(errors: &mut Errors, event: &TouchpointEvent) {
    if event.identifiers.len() > MAX_IDENTIFIERS {
        errors.push(
            ErrorCode::OutOfRange,
            "identifiers",
            format!("{} identifiers exceed {MAX_IDENTIFIERS}", event.identifiers.len()),
        );
    }
    if matches!(event.payload, EventPayload::Identify) && event.identifiers.is_empty() {
        errors.push(
            ErrorCode::MissingField,
            "identifiers",
            "an identify event names at least one identifier",
        );
    }
    for (index, identifier) in event.identifiers.iter().enumerate() {
        if let Err(error) = normalize(&identifier.kind, &identifier.value) {
            let field = match error {
                IdentifierError::Type(_) | IdentifierError::Reserved => "type",
                _ => "value",
            };
            errors.push(
                ErrorCode::InvalidIdentifier,
                format!("identifiers[{index}].{field}"),
                format!("{} {error}", identifier.kind),
            );
        }
    }
}

fn validate_payload(e: &mut Errors, payload: &EventPayload) {
    let f = |name| Dotted("properties", name);
    match payload {
        EventPayload::PageViewed { url } => {
            e.length(f("url"), url, 1, MAX_TEXT_LEN);
        }
        EventPayload::ProductViewed { product_id } => e.id(f("product_id"), product_id),
        EventPayload::CartUpdated { cart_id, items, value_minor, currency } => {
            e.id(f("cart_id"), cart_id);
            e.items(f("items"), *items);
            e.amount(f("value_minor"), *value_minor);
            e.currency(f("currency"), currency);
        }
        EventPayload::OrderPlaced { order_id, value_minor, currency, items } => {
            e.id(f("order_id"), order_id);
            e.amount(f("value_minor"), *value_minor);
            e.currency(f("currency"), currency);
            if let Some(items) = items {
                e.items(f("items"), *items);
            }
        }
        EventPayload::OrderRefunded { order_id, value_minor, currency } => {
            e.id(f("order_id"), order_id);
            e.amount(f("value_minor"), *value_minor);
            e.currency(f("currency"), currency);
        }
        EventPayload::MessageSent { message_id, campaign_id, .. } => {
            e.id(f("message_id"), message_id);
            e.opt_id(f("campaign_id"), campaign_id);
        }
        EventPayload::MessageDelivered { message_id }
        | EventPayload::MessageOpened { message_id }
        | EventPayload::MessageBounced { message_id, .. }
        | EventPayload::SpamReported { message_id } => e.id(f("message_id"), message_id),
        EventPayload::MessageClicked { message_id, url } => {
            e.id(f("message_id"), message_id);
            if let Some(url) = url {
                e.text(f("url"), url);
            }
        }
        EventPayload::MessageReceived { conversation_id, text_len } => {
            e.opt_id(f("conversation_id"), conversation_id);
            if let Some(len) = text_len
                && *len < 0
            {
                e.push(ErrorCode::NegativeAmount, f("text_len"), format!("{len} is negative"));
            }
        }
        EventPayload::SupportTicketOpened { ticket_id, topic } => {
            e.id(f("ticket_id"), ticket_id);
            if let Some(topic) = topic {
                e.text(f("topic"), topic);
            }
        }
        EventPayload::SupportTicketResolved { ticket_id } => e.id(f("ticket_id"), ticket_id),
        EventPayload::ConsentChanged { .. } | EventPayload::ErasureRequested | EventPayload::Identify => {}
        EventPayload::CustomersMerged {
            winner,
            merge_id,
            identifier_type,
            identifier_value,
            evidence_event_id,
        } => {
            e.id(f("winner"), winner);
            e.id(f("merge_id"), merge_id);
            e.id(f("identifier_type"), identifier_type);
            e.length(f("identifier_value"), identifier_value, 1, crate::identifiers::MAX_EMAIL_LEN);
            e.id(f("evidence_event_id"), evidence_event_id);
        }
        EventPayload::TraitsUpdated { set, set_once, unset } => {
            e.traits(f("set"), set);
            e.traits(f("set_once"), set_once);
            if unset.len() > MAX_KEYS {
                e.push(ErrorCode::OutOfRange, f("unset"), format!("{} keys exceed {MAX_KEYS}", unset.len()));
            }
            for key in unset {
                e.id(f("unset"), key);
            }
        }
        EventPayload::LoyaltyRedeemRequested { redemption_id, points } => {
            e.id(f("redemption_id"), redemption_id);
            if *points < 0 {
                e.push(ErrorCode::NegativeAmount, f("points"), format!("{points} is negative"));
            } else if *points == 0 || *points > MAX_POINTS {
                e.push(ErrorCode::OutOfRange, f("points"), format!("{points} is outside 1..={MAX_POINTS}"));
            }
        }
        EventPayload::LoyaltyPointsAdjusted { points, reason } => {
            if *points == 0 || points.unsigned_abs() > MAX_POINTS.unsigned_abs() {
                e.push(
                    ErrorCode::OutOfRange,
                    f("points"),
                    format!("{points} is zero or its size exceeds {MAX_POINTS}"),
                );
            }
            e.length(f("reason"), reason, 1, MAX_TEXT_LEN);
        }
    }
}
