//! The ingest-gateway's OpenAPI document against the running server: schemathesis (PyPI)
//! generates requests from `/openapi.json` and checks every answer against it, and every status
//! code the document lists for each route is then produced at least once.

use std::collections::BTreeSet;
use std::time::Duration;

use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::{
    ServiceProcess, create_test_topics, free_port, unique_topic, wait_until, workspace_binary,
};
use serde_json::{Value, json};

const KEY: &str = "0123456789abcdef0123";
const ROUTES: [&str; 2] = ["/v1/events", "/v1/catalog/events"];

fn gateway(label: &str, port: u16, extra: &[&str], bootstrap: Option<&str>) -> ServiceProcess {
    let mut args = vec![
        "--http-addr".to_owned(),
        format!("127.0.0.1:{port}"),
        "--admin-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    if let Some(bootstrap) = bootstrap {
        args.extend(["--bootstrap-servers".to_owned(), bootstrap.to_owned()]);
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = ServiceProcess::spawn(
        &workspace_binary("ingest-gateway"),
        label,
        &args,
        &[("GATEWAY_API_KEYS", &format!("test:{KEY}")), ("RUST_LOG", "info,rdkafka=warn")],
    );
    wait_until("the gateway answers", Duration::from_secs(30), || {
        omnistream_testkit::http_get(port, "/openapi.json").is_some_and(|(status, _)| status == 200)
    });
    process
}

/// POSTs `body` (raw text) to `route`; the status.
async fn post(client: &reqwest::Client, port: u16, route: &str, body: &str, key: Option<&str>) -> u16 {
    let mut request = client
        .post(format!("http://127.0.0.1:{port}{route}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

fn valid(route: &str, id: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339();
    match route {
        "/v1/events" => json!({"event_id": id, "customer_id": "c-api", "occurred_at": now, "channel": "web",
            "type": "page_viewed", "properties": {"url": "https://shop.example/"}}),
        _ => {
            json!({"event_id": id, "product_id": "sku-api", "occurred_at": now, "type": "product_restocked"})
        }
    }
}

fn invalid(route: &str, id: &str) -> Value {
    let mut event = valid(route, id);
    event["occurred_at"] = json!("yesterday");
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_matches_the_running_gateway_and_every_documented_status_is_produced() {
    let events = unique_topic("openapi-events");
    let catalog = unique_topic("openapi-catalog");
    create_test_topics(&[TopicRequest::events(&events, 2, 1), TopicRequest::plain(&catalog, 2, 1)]).await;
    let topics = ["--events-topic", &events, "--catalog-topic", &catalog];
    let port = free_port();
    let limits = ["--max-events", "5", "--max-body-bytes", "65536"];
    let _working = gateway("openapi-gateway", port, &[&topics[..], &limits[..]].concat(), None);

    // schemathesis: requests generated from the document (valid and invalid ones), every answer
    // checked against it (status, content type, body schema, authentication).
    omnistream_testkit::schemathesis(
        &omnistream_testkit::repo_root().join("tests/interop/schemathesis.toml"),
        &format!("http://127.0.0.1:{port}/openapi.json"),
        &[
            // A schema-valid event may still break a rule of SPEC 2 (a property its type needs):
            // the gateway answers that per event (422, 207), as the document says.
            "--exclude-checks",
            "positive_data_acceptance",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
            "--max-examples",
            "40",
        ],
    );

    let client = reqwest::Client::new();
    let document: Value = client
        .get(format!("http://127.0.0.1:{port}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut seen: BTreeSet<(String, u16)> = BTreeSet::new();
    for route in ROUTES {
        let key = Some(KEY);
        let one = |event: Value| event.to_string();
        let batch = |events: Vec<Value>| json!({ "events": events }).to_string();
        for (body, key) in [
            (one(valid(route, "ok-1")), key),
            (batch(vec![valid(route, "ok-2"), invalid(route, "bad-1")]), key),
            (one(invalid(route, "bad-2")), key),
            ("{not json".to_owned(), key),
            (one(valid(route, "no-key")), None),
            (batch((0..6).map(|i| valid(route, &format!("many-{i}"))).collect()), key),
        ] {
            seen.insert((route.to_owned(), post(&client, port, route, &body, key).await));
        }
    }

    // A gateway whose broker is gone (nothing listens on port 1) and whose key has a burst of 5.
    let down_port = free_port();
    let tight = [
        "--delivery-timeout-ms",
        "1000",
        "--rate-limit",
        "0.001",
        "--rate-limit-burst",
        "5",
        "--max-events",
        "5",
    ];
    let _down =
        gateway("openapi-gateway-down", down_port, &[&topics[..], &tight[..]].concat(), Some("127.0.0.1:1"));
    // One event per route (503: not acknowledged), then five per route (429: over the burst).
    for count in [1, 5] {
        for route in ROUTES {
            let events: Vec<Value> = (0..count).map(|i| valid(route, &format!("down-{count}-{i}"))).collect();
            let body = json!({ "events": events }).to_string();
            seen.insert((route.to_owned(), post(&client, down_port, route, &body, Some(KEY)).await));
        }
    }

    for route in ROUTES {
        let documented: BTreeSet<u16> = document["paths"][route]["post"]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{route} is not documented"))
            .keys()
            .map(|status| status.parse().unwrap())
            .collect();
        let produced: BTreeSet<u16> =
            seen.iter().filter(|(r, _)| r == route).map(|(_, status)| *status).collect();
        assert_eq!(produced, documented, "{route}: the statuses produced and the ones documented");
    }
}

/// docs/openapi/*.json are the documents the servers serve (docs/api.html renders them);
/// `OMNISTREAM_WRITE_OPENAPI=1` rewrites them.
#[test]
fn the_checked_in_documents_are_the_generated_ones() {
    use utoipa::OpenApi;
    for (file, generated) in [
        ("ingest-gateway.json", omnistream_ingest_gateway::openapi::GatewayApi::openapi()),
        ("customer-api.json", omnistream_customer_api::openapi::CustomerApiDoc::openapi()),
    ] {
        let generated = generated.to_pretty_json().unwrap() + "\n";
        let path = omnistream_testkit::repo_root().join("docs/openapi").join(file);
        if std::env::var_os("OMNISTREAM_WRITE_OPENAPI").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} is out of date: run with OMNISTREAM_WRITE_OPENAPI=1",
            path.display()
        );
    }
}
