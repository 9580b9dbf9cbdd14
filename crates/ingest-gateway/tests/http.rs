//! The gateway over HTTP on the real broker: the bad-input table (each refused request and each
//! rule of SPEC 2 gets the right status and per-event errors, and nothing of a rejected event is
//! published), API keys, limits and metrics.

use std::time::Duration;

use chrono::Utc;
use omnistream_model::decode_event;
use omnistream_testkit::{
    ServiceProcess, consume_committed, free_port, fresh_topic, http_get, wait_until, workspace_binary,
};
use rdkafka::message::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WEB_KEY: &str = "0123456789abcdef";
const POS_KEY: &str = "fedcba9876543210";

struct Gateway {
    _process: ServiceProcess,
    url: String,
    client: reqwest::Client,
}

impl Gateway {
    async fn start(topic: &str) -> Self {
        let port = free_port();
        let process = ServiceProcess::spawn(
            &workspace_binary("ingest-gateway"),
            &format!("gateway-{topic}"),
            &[
                "--events-topic",
                topic,
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--admin-addr",
                "127.0.0.1:0",
                "--max-body-bytes",
                "65536",
                "--max-events",
                "10",
                // 1 event/s after a burst of 40: the refill cannot hide the limit on a slow run.
                "--rate-limit",
                "1",
                "--rate-limit-burst",
                "40",
            ],
            &[("GATEWAY_API_KEYS", &format!("web:{WEB_KEY},pos:{POS_KEY}"))],
        );
        let gateway = Self {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        tokio::task::block_in_place(|| {
            wait_until("the gateway is ready", Duration::from_secs(30), || {
                http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
            });
        });
        gateway
    }

    async fn post(
        &self,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.post(format!("{}/v1/events", self.url)).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("an answer");
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }
}

fn page_view(id: &str) -> Value {
    json!({"event_id": id, "customer_id": "c-gw", "occurred_at": Utc::now().to_rfc3339(), "channel": "web",
           "type": "page_viewed", "properties": {"url": "/"}})
}

fn order(id: &str, properties: Value) -> Value {
    json!({"event_id": id, "customer_id": "c-gw", "occurred_at": Utc::now().to_rfc3339(), "channel": "store",
           "type": "order_placed", "properties": properties})
}

fn with(mut event: Value, field: &str, value: Value) -> Value {
    event[field] = value;
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_status_and_errors_and_nothing_rejected_is_published() {
    let topic = fresh_topic("gateway-bad-input", 3).await;
    let gateway = Gateway::start(&topic).await;

    // Whole requests refused: (case, API key, body, status, error code).
    let mut too_large = page_view("big");
    too_large["properties"]["url"] = json!("/".repeat(70_000));
    let too_large = too_large.to_string();
    let eleven =
        json!({"events": (0..11).map(|i| page_view(&format!("many-{i}"))).collect::<Vec<_>>()}).to_string();
    let refused: Vec<(&str, Option<&str>, String, StatusCode, &str)> = vec![
        ("invalid JSON", Some(WEB_KEY), r#"{"event_id": "#.into(), StatusCode::BAD_REQUEST, "malformed"),
        ("not an event", Some(WEB_KEY), "[1, 2]".into(), StatusCode::BAD_REQUEST, "malformed"),
        ("empty batch", Some(WEB_KEY), r#"{"events": []}"#.into(), StatusCode::BAD_REQUEST, "empty_batch"),
        ("body too large", Some(WEB_KEY), too_large.clone(), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ("too many events", Some(WEB_KEY), eleven, StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"),
        ("missing API key", None, page_view("no-key").to_string(), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("no key, body too large", None, too_large.clone(), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            "wrong API key",
            Some("0123456789abcdeX"),
            page_view("bad-key").to_string(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ];
    for (case, key, body, status, code) in refused {
        let (got, headers, answer) = gateway.post(key, body).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{case}: {answer}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(headers["www-authenticate"], "Bearer", "{case}");
        }
    }

    // One event per rule of SPEC 2: 422 naming the event and the field.
    let valid_order = json!({"order_id": "o-1", "value_minor": 100, "currency": "EUR"});
    let rules: Vec<(&str, Value, &str, &str)> = vec![
        ("unknown type", with(page_view("r-type"), "type", json!("hologram_viewed")), "unknown_type", "type"),
        (
            "unknown channel",
            with(page_view("r-channel"), "channel", json!("fax")),
            "unknown_channel",
            "channel",
        ),
        (
            "missing field",
            with(page_view("r-customer"), "customer_id", Value::Null),
            "missing_field",
            "customer_id",
        ),
        (
            "missing property",
            order("r-property", json!({"value_minor": 100, "currency": "EUR"})),
            "missing_field",
            "properties.order_id",
        ),
        (
            "negative amount",
            order("r-negative", json!({"order_id": "o-1", "value_minor": -100, "currency": "EUR"})),
            "negative_amount",
            "properties.value_minor",
        ),
        (
            "wrong type",
            order("r-wrong", json!({"order_id": "o-1", "value_minor": "100", "currency": "EUR"})),
            "wrong_field_type",
            "properties.value_minor",
        ),
        (
            "bad currency",
            order("r-currency", json!({"order_id": "o-1", "value_minor": 100, "currency": "EURO"})),
            "invalid_currency",
            "properties.currency",
        ),
        (
            "future time",
            with(
                order("r-future", valid_order.clone()),
                "occurred_at",
                json!((Utc::now() + chrono::Duration::hours(25)).to_rfc3339()),
            ),
            "future_timestamp",
            "occurred_at",
        ),
        (
            "bad time",
            with(page_view("r-time"), "occurred_at", json!("yesterday")),
            "invalid_timestamp",
            "occurred_at",
        ),
        (
            "over-long string",
            with(page_view("r-long"), "customer_id", json!("c".repeat(129))),
            "invalid_length",
            "customer_id",
        ),
    ];
    for (case, event, code, field) in &rules {
        let event_id = event["event_id"].clone();
        let (status, _, answer) = gateway.post(Some(WEB_KEY), event.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {answer}");
        let result = &answer["results"][0];
        assert_eq!((result["status"].as_str(), &result["event_id"]), (Some("rejected"), &event_id), "{case}");
        let errors: Vec<(&str, &str)> = result["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["code"].as_str().unwrap(), e["field"].as_str().unwrap()))
            .collect();
        assert!(errors.contains(&(*code, *field)), "{case}: {errors:?}");
    }

    // A mixed batch: 207, the good ones acknowledged by Kafka with their offsets.
    let batch = json!({"events": [page_view("ok-1"), with(page_view("bad-1"), "channel", json!("fax")), page_view("ok-2")]});
    let (status, _, answer) = gateway.post(Some(WEB_KEY), batch.to_string()).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(1)));
    let statuses: Vec<&str> =
        answer["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted"]);
    assert!(answer["results"][0]["offset"].as_i64().is_some());
    let (status, _, _) = gateway.post(Some(POS_KEY), page_view("ok-3").to_string()).await;
    assert_eq!(status, StatusCode::OK);

    // The topic holds exactly the accepted events, keyed by customer, as Avro (they were
    // acknowledged before the answers: reading a while for a fourth finds none).
    let published = tokio::task::spawn_blocking(move || consume_committed(&topic, 4, Duration::from_secs(3)))
        .await
        .unwrap();
    let mut ids: Vec<String> = published
        .iter()
        .map(|m| {
            assert_eq!(m.key(), Some(b"c-gw".as_slice()));
            decode_event(m.payload().unwrap()).expect("Avro").event_id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["ok-1", "ok-2", "ok-3"], "nothing of a rejected or refused event");

    // Per-key rate limit: bursts of 40; `web` is unaffected by `pos` running out.
    let ten =
        json!({"events": (0..10).map(|i| page_view(&format!("rate-{i}"))).collect::<Vec<_>>()}).to_string();
    let mut limited = None;
    for _ in 0..6 {
        let (status, headers, answer) = gateway.post(Some(POS_KEY), ten.clone()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((headers, answer));
            break;
        }
        assert_eq!(status, StatusCode::OK);
    }
    let (headers, answer) = limited.expect("the burst of 40 runs out within 6 requests of 10");
    assert_eq!(answer["error"]["code"], "rate_limited");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let (status, _, _) = gateway.post(Some(WEB_KEY), page_view("web-still").to_string()).await;
    assert_eq!(status, StatusCode::OK);

    let metrics =
        gateway.client.get(format!("{}/metrics", gateway.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"omnistream_gateway_rejected_events_total{error_code="unknown_channel"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"omnistream_gateway_requests_total{status="401"} 3"#), "{metrics}");
}
