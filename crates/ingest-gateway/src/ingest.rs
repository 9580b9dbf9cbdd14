//! The pure part of `POST /v1/events` and `POST /v1/catalog/events`: a body becomes events (each
//! validated and encoded as Avro, or rejected with every error), and the per-event results become
//! a status.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use omnistream_model::catalog::catalog_event_from_json;
use omnistream_model::{
    CodecError, ErrorCode, Rejection, ValidationError, encode_event, encode_record, event_from_json,
};
use serde::Serialize;
use serde_json::Value;

/// Why a whole request is refused before any event is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("the body must be one event object or {{\"events\": [...]}}")]
    NotAnEventOrBatch,
    #[error("the batch has no events")]
    EmptyBatch,
    #[error("{count} events in one request; at most {max}")]
    TooManyEvents { count: usize, max: usize },
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) | RequestError::NotAnEventOrBatch => ErrorCode::Malformed.as_str(),
            RequestError::EmptyBatch => "empty_batch",
            RequestError::TooManyEvents { .. } => "too_many_events",
        }
    }
}

/// One event of a request, ready to publish or rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The `event_id` as sent, when there is one to name the event by.
    pub event_id: Option<String>,
    pub outcome: Result<Encoded, Rejection>,
}

/// A valid event: its Kafka key and Avro single-object bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub key: String,
    pub value: Vec<u8>,
}

/// How one JSON event of an endpoint becomes a record, validated at `now`.
pub type EncodeJson = fn(&Value, DateTime<Utc>) -> Result<Encoded, Rejection>;

/// A touchpoint event (SPEC 2), keyed by customer.
pub fn touchpoint_event(value: &Value, now: DateTime<Utc>) -> Result<Encoded, Rejection> {
    let event = event_from_json(value, now)?;
    let value = encode_event(&event).map_err(unencodable)?;
    Ok(Encoded { key: event.customer_id, value })
}

/// A catalog event (`catalog.events.v1`), keyed by product.
pub fn catalog_event(value: &Value, now: DateTime<Utc>) -> Result<Encoded, Rejection> {
    let event = catalog_event_from_json(value, now)?;
    let value = encode_record(&event).map_err(unencodable)?;
    Ok(Encoded { key: event.product_id, value })
}

fn unencodable(error: CodecError) -> Rejection {
    Rejection::single(ErrorCode::Malformed, "$", error.to_string())
}

/// Parses a body with one event or `{"events": [...]}` and encodes every event with `encode`.
pub fn parse_request(
    body: &[u8],
    max_events: usize,
    now: DateTime<Utc>,
    encode: EncodeJson,
) -> Result<Vec<Parsed>, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let events = match value {
        Value::Object(mut object) if object.contains_key("events") => match object.remove("events") {
            Some(Value::Array(events)) => events,
            _ => return Err(RequestError::NotAnEventOrBatch),
        },
        single @ Value::Object(_) => vec![single],
        _ => return Err(RequestError::NotAnEventOrBatch),
    };
    if events.is_empty() {
        return Err(RequestError::EmptyBatch);
    }
    if events.len() > max_events {
        return Err(RequestError::TooManyEvents { count: events.len(), max: max_events });
    }
    Ok(events
        .iter()
        .map(|event| Parsed {
            event_id: event.get("event_id").and_then(Value::as_str).map(str::to_owned),
            outcome: encode(event, now),
        })
        .collect())
}

/// What happened to one event of a request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Kafka acknowledged it (`acks=all`).
    Accepted { partition: i32, offset: i64 },
    /// It breaks a validation rule; nothing of it was published.
    Rejected { errors: Vec<ValidationError> },
    /// Kafka did not acknowledge it in time: retry it with the same `event_id`.
    Unavailable { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The response body: counts and one result per event, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    pub accepted: usize,
    pub rejected: usize,
    pub unavailable: usize,
    pub results: Vec<EventResult>,
}

impl IngestResponse {
    pub fn new(results: Vec<EventResult>) -> Self {
        let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
        Self {
            accepted: count(|o| matches!(o, Outcome::Accepted { .. })),
            rejected: count(|o| matches!(o, Outcome::Rejected { .. })),
            unavailable: count(|o| matches!(o, Outcome::Unavailable { .. })),
            results,
        }
    }

    /// 200 when every event was accepted; 207 when some were rejected and the rest accepted; 422
    /// when every event was rejected; 503 when Kafka did not acknowledge one (send the
    /// `unavailable` ones again, with their `event_id`s).
    pub fn status(&self) -> StatusCode {
        if self.unavailable > 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else if self.accepted == 0 {
            StatusCode::UNPROCESSABLE_ENTITY
        } else if self.rejected > 0 {
            StatusCode::MULTI_STATUS
        } else {
            StatusCode::OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnistream_model::records::CatalogEvent;
    use omnistream_model::{Identifier, decode_event, decode_record};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn page_view(event_id: &str) -> Value {
        json!({"event_id": event_id, "customer_id": "c-1", "occurred_at": "2026-11-23T11:00:00Z",
               "channel": "web", "type": "page_viewed", "properties": {"url": "/"}})
    }

    fn codes(parsed: &Parsed) -> Vec<(&'static str, String)> {
        match &parsed.outcome {
            Ok(_) => Vec::new(),
            Err(rejection) => rejection.0.iter().map(|e| (e.code.as_str(), e.field.clone())).collect(),
        }
    }

    #[test]
    fn a_single_event_and_a_batch_are_both_accepted_forms() {
        let single =
            parse_request(page_view("e1").to_string().as_bytes(), 1000, now(), touchpoint_event).unwrap();
        assert_eq!(single.len(), 1);
        let Ok(encoded) = &single[0].outcome else { panic!("valid") };
        assert_eq!(encoded.key, "c-1");
        assert_eq!(decode_event(&encoded.value).unwrap().event_id, "e1");

        let batch = json!({"events": [page_view("e1"), page_view("e2")]}).to_string();
        let parsed = parse_request(batch.as_bytes(), 1000, now(), touchpoint_event).unwrap();
        assert_eq!(parsed.iter().map(|p| p.event_id.clone().unwrap()).collect::<Vec<_>>(), ["e1", "e2"]);
    }

    #[test]
    fn a_catalog_body_is_keyed_by_product_and_each_event_validated_on_its_own() {
        let price_drop = json!({"event_id": "price-1", "product_id": "sku-42", "occurred_at": "2026-11-23T11:00:00Z",
                                "type": "product_price_changed",
                                "properties": {"old_minor": 4999, "new_minor": 3999, "currency": "EUR"}});
        let restock_with_a_price = json!({"event_id": "stock-1", "product_id": "sku-42",
                                          "occurred_at": "2026-11-23T11:00:00Z", "type": "product_restocked",
                                          "properties": {"new_minor": 3999}});
        let batch = json!({"events": [price_drop, restock_with_a_price, page_view("e1")]});
        let parsed = parse_request(batch.to_string().as_bytes(), 1000, now(), catalog_event).unwrap();
        let Ok(encoded) = &parsed[0].outcome else { panic!("valid: {:?}", parsed[0]) };
        assert_eq!(encoded.key, "sku-42");
        let event: CatalogEvent = decode_record(&encoded.value).unwrap();
        assert!(event.is_price_drop());
        assert_eq!(codes(&parsed[1]), [("unknown_field", "properties.new_minor".to_owned())]);
        assert_eq!(parsed[2].event_id.as_deref(), Some("e1"), "named by its id even when rejected");
        assert!(codes(&parsed[2]).contains(&("missing_field", "product_id".to_owned())), "{:?}", parsed[2]);
    }

    #[test]
    fn whole_request_errors() {
        let too_many = json!({"events": [page_view("a"), page_view("b"), page_view("c")]}).to_string();
        let cases: &[(&str, RequestError, StatusCode)] = &[
            ("{not json", RequestError::InvalidJson(String::new()), StatusCode::BAD_REQUEST),
            ("[1, 2]", RequestError::NotAnEventOrBatch, StatusCode::BAD_REQUEST),
            ("\"text\"", RequestError::NotAnEventOrBatch, StatusCode::BAD_REQUEST),
            (r#"{"events": {"a": 1}}"#, RequestError::NotAnEventOrBatch, StatusCode::BAD_REQUEST),
            (r#"{"events": []}"#, RequestError::EmptyBatch, StatusCode::BAD_REQUEST),
            (&too_many, RequestError::TooManyEvents { count: 3, max: 2 }, StatusCode::PAYLOAD_TOO_LARGE),
        ];
        for (body, expected, status) in cases {
            let error = parse_request(body.as_bytes(), 2, now(), touchpoint_event).unwrap_err();
            match (&error, expected) {
                (RequestError::InvalidJson(_), RequestError::InvalidJson(_)) => {}
                _ => assert_eq!(&error, expected, "{body}"),
            }
            assert_eq!(error.status(), *status, "{body}");
        }
    }

    #[test]
    fn each_event_is_validated_on_its_own() {
        let mut negative = page_view("e2");
        negative["type"] = json!("order_placed");
        negative["properties"] = json!({"order_id": "o-1", "value_minor": -5, "currency": "EUR"});
        let mut future = page_view("e3");
        future["occurred_at"] = json!("2026-11-25T12:00:00Z");
        let mut unknown = page_view("e4");
        unknown["channel"] = json!("fax");
        let batch =
            json!({"events": [page_view("e1"), negative, future, unknown, {"customer_id": "c-1"}, 7]});
        let parsed = parse_request(batch.to_string().as_bytes(), 1000, now(), touchpoint_event).unwrap();
        assert!(parsed[0].outcome.is_ok());
        assert_eq!(codes(&parsed[1]), [("negative_amount", "properties.value_minor".to_owned())]);
        assert_eq!(codes(&parsed[2]), [("future_timestamp", "occurred_at".to_owned())]);
        assert_eq!(codes(&parsed[3]), [("unknown_channel", "channel".to_owned())]);
        assert!(codes(&parsed[4]).contains(&("missing_field", "event_id".to_owned())));
        assert_eq!(parsed[4].event_id, None);
        assert_eq!(codes(&parsed[5]), [("malformed", "$".to_owned())]);
    }

    #[test]
    fn identifiers_are_normalized_and_a_malformed_one_rejects_its_event_with_its_field() {
        let mut login = page_view("e1");
        login["type"] = json!("identify");
        login["properties"] = json!({});
        login["identifiers"] = json!([
            {"type": "email", "value": " Ann@Example.COM"},
            {"type": "email", "value": "ann@example.com"},
            {"type": "phone", "value": "+44 20 7946 0958"},
        ]);
        let mut no_country_code = page_view("e2");
        no_country_code["identifiers"] = json!([
            {"type": "user_id", "value": "U-1"},
            {"type": "phone", "value": "(415) 555-0100"},
        ]);
        let mut bad_type = page_view("e3");
        bad_type["identifiers"] = json!([{"type": "E-mail", "value": "ann@example.com"}]);
        let mut empty_identify = page_view("e4");
        empty_identify["type"] = json!("identify");
        let batch = json!({"events": [login, no_country_code, bad_type, empty_identify]});
        let parsed = parse_request(batch.to_string().as_bytes(), 1000, now(), touchpoint_event).unwrap();
        let event = decode_event(&parsed[0].outcome.as_ref().unwrap().value).unwrap();
        assert_eq!(
            event.identifiers,
            [Identifier::new("email", "ann@example.com"), Identifier::new("phone", "+442079460958")],
            "normalized, the second spelling of the email dropped"
        );
        assert_eq!(codes(&parsed[1]), [("invalid_identifier", "identifiers[1].value".to_owned())]);
        assert_eq!(codes(&parsed[2]), [("invalid_identifier", "identifiers[0].type".to_owned())]);
        assert_eq!(codes(&parsed[3]), [("missing_field", "identifiers".to_owned())]);
    }

    #[test]
    fn the_status_follows_the_outcomes() {
        let accepted = || Outcome::Accepted { partition: 0, offset: 1 };
        let rejected = || Outcome::Rejected { errors: Vec::new() };
        let unavailable = || Outcome::Unavailable { message: "timed out".into() };
        let cases: Vec<(Vec<Outcome>, StatusCode)> = vec![
            (vec![accepted(), accepted()], StatusCode::OK),
            (vec![accepted(), rejected()], StatusCode::MULTI_STATUS),
            (vec![rejected()], StatusCode::UNPROCESSABLE_ENTITY),
            (vec![accepted(), unavailable()], StatusCode::SERVICE_UNAVAILABLE),
            (vec![rejected(), unavailable()], StatusCode::SERVICE_UNAVAILABLE),
        ];
        for (outcomes, status) in cases {
            let results = outcomes
                .into_iter()
                .enumerate()
                .map(|(index, outcome)| EventResult { index, event_id: None, outcome })
                .collect();
            assert_eq!(IngestResponse::new(results).status(), status);
        }
    }

    #[test]
    fn results_serialize_with_their_status() {
        let response = IngestResponse::new(vec![
            EventResult {
                index: 0,
                event_id: Some("e1".into()),
                outcome: Outcome::Accepted { partition: 2, offset: 7 },
            },
            EventResult {
                index: 1,
                event_id: None,
                outcome: Outcome::Rejected {
                    errors: vec![ValidationError::new(ErrorCode::MissingField, "event_id", "required")],
                },
            },
        ]);
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"accepted": 1, "rejected": 1, "unavailable": 0, "results": [
                {"index": 0, "event_id": "e1", "status": "accepted", "partition": 2, "offset": 7},
                {"index": 1, "status": "rejected",
                 "errors": [{"code": "missing_field", "field": "event_id", "message": "required"}]}]})
        );
    }
}
