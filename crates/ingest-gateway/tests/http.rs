//! The gateway over HTTP on the real broker: the bad-input table (each refused request and each
//! rule of SPEC 2 gets the right status and per-event errors, and nothing of a rejected event is
//! published), API keys, limits and metrics; catalog events through their own endpoint to their own
//! topic.

use std::time::Duration;

use chrono::Utc;
use omnistream_model::records::{CatalogEvent, CatalogEventType};
use omnistream_model::{decode_event, decode_record};
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
    /// A gateway publishing events to `topic`, with `extra_args` (a catalog topic).
    async fn start(topic: &str, extra_args: &[&str]) -> Self {
        let port = free_port();
        let http_addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--events-topic",
            topic,
            "--http-addr",
            &http_addr,
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
        ];
        args.extend(extra_args);
        let process = ServiceProcess::spawn(
            &workspace_binary("ingest-gateway"),
            &format!("gateway-{topic}"),
            &args,
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
        self.post_to("/v1/events", key, body).await
    }

    async fn post_to(
        &self,
        path: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.post(format!("{}{path}", self.url)).body(body);
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
    let gateway = Gateway::start(&topic, &[]).await;

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
        metrics.contains(
            r#"omnistream_gateway_rejected_events_total{route="/v1/events",error_code="unknown_channel"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"omnistream_gateway_requests_total{route="/v1/events",status="401"} 3"#),
        "{metrics}"
    );
}

fn price_change(id: &str, product: &str, old_minor: i64, new_minor: i64) -> Value {
    json!({"event_id": id, "product_id": product, "occurred_at": Utc::now().to_rfc3339(), "source": "pim",
           "type": "product_price_changed",
           "properties": {"old_minor": old_minor, "new_minor": new_minor, "currency": "EUR"}})
}

fn restock(id: &str, product: &str) -> Value {
    json!({"event_id": id, "product_id": product, "occurred_at": Utc::now().to_rfc3339(), "type": "product_restocked"})
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_events_go_to_the_catalog_topic_keyed_by_product_and_bad_ones_are_named() {
    let events_topic = fresh_topic("gateway-catalog-events", 3).await;
    let catalog_topic = fresh_topic("gateway-catalog", 3).await;
    let gateway = Gateway::start(&events_topic, &["--catalog-topic", &catalog_topic]).await;
    let post = |key, body: Value| gateway.post_to("/v1/catalog/events", key, body.to_string());

    // The whole-request rules of /v1/events: keys, the batch limit.
    let (status, _, answer) = post(None, price_change("no-key", "sku-1", 100, 90)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let eleven =
        json!({"events": (0..11).map(|i| restock(&format!("many-{i}"), "sku-1")).collect::<Vec<_>>()});
    let (status, _, answer) = post(Some(WEB_KEY), eleven).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_many_events"))
    );

    // One event: 200 once Kafka has it.
    let (status, _, answer) = post(Some(POS_KEY), price_change("drop-1", "sku-42", 4999, 3999)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"][0]["status"], "accepted");

    // A mixed batch: 207, each bad event named with its codes and fields, the good ones accepted.
    let touchpoint = json!({"event_id": "view-1", "customer_id": "c-1", "occurred_at": Utc::now().to_rfc3339(),
                            "channel": "web", "type": "product_viewed", "properties": {"product_id": "sku-42"}});
    let batch = json!({"events": [
        restock("stock-1", "sku-7"),
        price_change("negative", "sku-42", 4999, -1),
        with(restock("priced-restock", "sku-7"), "properties", json!({"new_minor": 100})),
        touchpoint,
        price_change("rise-1", "sku-9", 1000, 1200),
    ]});
    let (status, _, answer) = post(Some(WEB_KEY), batch).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(3)), "{answer}");
    // (event id, status, its error codes and fields, sorted)
    type Errors<'a> = Vec<(&'a str, &'a str)>;
    let results: Vec<(&str, &str, Errors)> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| {
            let mut errors: Errors = result["errors"].as_array().map_or(Vec::new(), |errors| {
                errors.iter().map(|e| (e["code"].as_str().unwrap(), e["field"].as_str().unwrap())).collect()
            });
            errors.sort();
            (result["event_id"].as_str().unwrap(), result["status"].as_str().unwrap(), errors)
        })
        .collect();
    assert_eq!(
        results,
        [
            ("stock-1", "accepted", vec![]),
            ("negative", "rejected", vec![("negative_amount", "properties.new_minor")]),
            ("priced-restock", "rejected", vec![("unknown_field", "properties.new_minor")]),
            (
                "view-1",
                "rejected",
                vec![
                    ("missing_field", "product_id"),
                    ("unknown_field", "channel"),
                    ("unknown_field", "customer_id"),
                    ("unknown_type", "type"),
                ]
            ),
            ("rise-1", "accepted", vec![]),
        ]
    );

    // Every event rejected: 422.
    let mut bad_currency = price_change("bad-currency", "sku-42", 10, 5);
    bad_currency["properties"]["currency"] = json!("euro");
    let (status, _, answer) = post(Some(WEB_KEY), bad_currency).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["results"][0]["errors"][0]["code"], "invalid_currency");

    // The catalog topic holds exactly the accepted events, keyed by product, as Avro (acknowledged
    // before the answers: reading a while for a fourth finds none); the events topic holds none.
    let published =
        tokio::task::spawn_blocking(move || consume_committed(&catalog_topic, 4, Duration::from_secs(3)))
            .await
            .unwrap();
    let mut found: Vec<(String, CatalogEvent)> = published
        .iter()
        .map(|m| {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            (key, decode_record::<CatalogEvent>(m.payload().unwrap()).expect("Avro"))
        })
        .collect();
    found.sort_by(|a, b| a.1.event_id.cmp(&b.1.event_id));
    let summary: Vec<_> = found
        .iter()
        .map(|(key, e)| (key.as_str(), e.event_id.as_str(), e.kind, e.old_minor, e.new_minor))
        .collect();
    assert_eq!(
        summary,
        [
            ("sku-42", "drop-1", CatalogEventType::ProductPriceChanged, Some(4999), Some(3999)),
            ("sku-9", "rise-1", CatalogEventType::ProductPriceChanged, Some(1000), Some(1200)),
            ("sku-7", "stock-1", CatalogEventType::ProductRestocked, None, None),
        ]
    );
    assert!(found.iter().all(|(key, e)| *key == e.product_id));
    assert_eq!(found[0].1.source.as_deref(), Some("pim"));
    assert!(found[0].1.is_price_drop());
    let on_events_topic =
        tokio::task::spawn_blocking(move || omnistream_testkit::read_committed_to_end(&events_topic))
            .await
            .unwrap();
    assert!(on_events_topic.is_empty(), "catalog events never go to the events topic");

    let metrics =
        gateway.client.get(format!("{}/metrics", gateway.url)).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"omnistream_gateway_requests_total{route="/v1/catalog/events",status="207"} 1"#,
        r#"omnistream_gateway_requests_total{route="/v1/catalog/events",status="401"} 1"#,
        r#"omnistream_gateway_events_total{route="/v1/catalog/events",outcome="accepted"} 3"#,
        r#"omnistream_gateway_rejected_events_total{route="/v1/catalog/events",error_code="negative_amount"} 1"#,
        r#"omnistream_gateway_request_seconds_count{route="/v1/catalog/events"} 5"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}
