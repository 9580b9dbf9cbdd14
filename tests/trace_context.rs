//! W3C trace context across the pipeline. With spans exported, one event is followed through
//! every process in Jaeger (a real trace backend, built from the Go module proxy by
//! `deploy/local/jaeger.sh`), whose query API is the oracle; without, the services copy the
//! headers as they came, onto their outputs and their dead letters, and log the trace id.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use omnistream_model::services;
use omnistream_testkit::pipeline::ServiceTopics;
use omnistream_testkit::stack::{Stack, StackOptions};
use omnistream_testkit::{
    ServiceProcess, consume_committed, free_port, jaeger_urls, producer, wait_until, workspace_binary,
};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

const TRACESTATE: &str = "vendor=opaque-1";

/// A fresh trace id and parent span id (random: Jaeger keeps every trace of earlier runs).
fn fresh_ids() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (trace_id, parent_id)
}

fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
        .map(|value| std::str::from_utf8(value).expect("UTF-8"))
}

/// `traceparent`'s fields: version, trace id, parent id, flags.
fn fields(traceparent: &str) -> Vec<&str> {
    traceparent.split('-').collect()
}

/// Jaeger's trace `trace_id` once `complete` accepts it; panics with the last answer after 60 s.
async fn jaeger_trace(query: &str, trace_id: &str, complete: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let answer: Value = match client.get(format!("{query}/api/traces/{trace_id}")).send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let trace = &answer["data"][0];
        if complete(trace) {
            return trace.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "Jaeger's trace {trace_id}: {answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A span's id and its references, each as (type, span id).
type SpanAndReferences = (String, Vec<(String, String)>);

/// Each span of a Jaeger trace by (service, operation).
fn spans_of(trace: &Value) -> BTreeMap<(String, String), SpanAndReferences> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|span| {
            let process = span["processID"].as_str().unwrap_or_default();
            let service = processes[process]["serviceName"].as_str().unwrap_or_default().to_owned();
            let operation = span["operationName"].as_str().unwrap_or_default().to_owned();
            let references = span["references"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|reference| {
                    (
                        reference["refType"].as_str().unwrap_or_default().to_owned(),
                        reference["spanID"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            ((service, operation), (span["spanID"].as_str().unwrap_or_default().to_owned(), references))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_event_is_followed_through_the_gateway_and_every_service_in_jaeger() {
    let (otlp, query) = jaeger_urls();
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), otlp.clone()),
        // Spans leave within 200 ms (the SDK's default waits 5 s).
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
    ];
    let stack = Stack::start("trace", StackOptions { env, ..Default::default() }).await;
    let (trace_id, caller_span) = fresh_ids();
    let event = json!({"event_id": "trace-order", "customer_id": "c-trace", "channel": "store",
        "occurred_at": chrono::Utc::now().to_rfc3339(), "type": "order_placed",
        "properties": {"order_id": "o-trace", "value_minor": 1999, "currency": "EUR"}});
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/events", stack.gateway_port))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", TRACESTATE)
        .json(&event)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);

    // The profile names the trace, with profile-updater's span as its parent, and keeps the state.
    let profiles = consume_committed(stack.topics.output("profiles"), 1, Duration::from_secs(30));
    let profile = profiles.first().expect("a profile");
    let traceparent = header(profile, "traceparent").expect("the profile carries the trace");
    let [version, carried_trace, profile_parent, flags] = fields(traceparent)[..] else {
        panic!("{traceparent}")
    };
    assert_eq!((version, carried_trace, flags), ("00", trace_id.as_str(), "01"), "{traceparent}");
    assert_eq!(header(profile, "tracestate"), Some(TRACESTATE));

    // Jaeger holds the trace: the gateway's span under the caller's, each service's under the
    // gateway's.
    let processors: Vec<&str> = services::stream_processors().map(|service| service.name).collect();
    let trace = jaeger_trace(query, &trace_id, |trace| {
        let spans = spans_of(trace);
        processors.iter().all(|name| spans.contains_key(&((*name).to_owned(), "process".to_owned())))
    })
    .await;
    let spans = spans_of(&trace);
    let (ingest, ingest_references) =
        spans.get(&("ingest-gateway".to_owned(), "ingest".to_owned())).expect("the gateway's span");
    assert_eq!(ingest_references, &vec![("CHILD_OF".to_owned(), caller_span.clone())], "{trace}");
    for name in &processors {
        let (_, references) = &spans[&((*name).to_owned(), "process".to_owned())];
        assert_eq!(references, &vec![("CHILD_OF".to_owned(), ingest.clone())], "{name}: {trace}");
    }
    let (profile_span, _) = &spans[&("profile-updater".to_owned(), "process".to_owned())];
    assert_eq!(profile_parent, profile_span, "the profile names profile-updater's span");

    // The commit that carried the profile is a span of its own trace, linked to the record's.
    let client = reqwest::Client::new();
    let url = format!("{query}/api/traces?service=profile-updater&operation=commit&limit=50&lookback=1h");
    let started = Instant::now();
    loop {
        let answer: Value = client.get(&url).send().await.unwrap().json().await.unwrap_or(Value::Null);
        let linked = answer["data"].as_array().into_iter().flatten().any(|trace| {
            spans_of(trace)
                .values()
                .any(|(_, references)| references.iter().any(|(_, id)| id == profile_span))
        });
        if linked {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no commit span links to {profile_span}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A traced record through profile-updater (`TRACE_CONTEXT=trace_context`, no exporter): a valid
/// event and a malformed record, each with its own `traceparent` and the `tracestate`.
struct Traced {
    topics: ServiceTopics,
    service: ServiceProcess,
    good_parent_header: String,
    bad_parent_header: String,
    bad_trace: String,
}

async fn traced_records_through_profile_updater(label: &str, trace_context: &str) -> Traced {
    let topics = ServiceTopics::create(label, 1).await;
    let port = free_port();
    let mut args = topics.runtime_args(label, port);
    args.extend([services::PROFILE_UPDATER.outputs[0].flag.to_owned(), topics.outputs[0].clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let service = ServiceProcess::spawn(
        &workspace_binary("profile-updater"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn,omnistream_runtime=debug"), ("TRACE_CONTEXT", trace_context)],
    );

    let (good_trace, good_parent) = fresh_ids();
    let (bad_trace, bad_parent) = fresh_ids();
    let good_parent_header = format!("00-{good_trace}-{good_parent}-00");
    let bad_parent_header = format!("00-{bad_trace}-{bad_parent}-01");
    let now = chrono::Utc::now();
    let event = omnistream_model::event_from_json(
        &json!({"event_id": "copy-1", "customer_id": "c-copy", "occurred_at": now.to_rfc3339(),
            "channel": "web", "type": "page_viewed", "properties": {"url": "https://shop.example/"}}),
        now,
    )
    .expect("an event");
    let valid = omnistream_model::encode_event(&event).expect("encodes");
    let producer = producer();
    for (payload, traceparent) in
        [(&valid[..], &good_parent_header), (&b"\x01not avro"[..], &bad_parent_header)]
    {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "traceparent", value: Some(traceparent.as_str()) })
            .insert(Header { key: "tracestate", value: Some(TRACESTATE) });
        producer
            .send(
                FutureRecord::to(&topics.input).key("c-copy").payload(payload).headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged");
    }
    Traced { topics, service, good_parent_header, bad_parent_header, bad_trace }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_exporter_the_context_is_copied_as_it_came_and_the_logs_carry_the_trace_id() {
    let Traced { topics, service, good_parent_header, bad_parent_header, bad_trace } =
        traced_records_through_profile_updater("trace-copy", "true").await;

    let outputs = consume_committed(&topics.outputs[0], 1, Duration::from_secs(60));
    let profile = outputs.first().expect("a profile");
    assert_eq!(header(profile, "traceparent"), Some(good_parent_header.as_str()), "copied as it came");
    assert_eq!(header(profile, "tracestate"), Some(TRACESTATE));
    let dead = consume_committed(&topics.dlq, 1, Duration::from_secs(60));
    let dead = dead.first().expect("a dead letter");
    assert_eq!(header(dead, "error.code"), Some("malformed"));
    assert_eq!(header(dead, "traceparent"), Some(bad_parent_header.as_str()), "the dead letter too");

    // The log line of the dead letter names its trace.
    wait_until("the dead letter's log line", Duration::from_secs(10), || {
        std::fs::read_to_string(&service.log).unwrap_or_default().lines().any(|line| {
            line.contains("dead-lettered") && line.contains(&format!("\"trace_id\":\"{bad_trace}\""))
        })
    });
    service.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_trace_context_off_no_record_header_is_read_or_written() {
    let Traced { topics, service, .. } = traced_records_through_profile_updater("trace-off", "false").await;
    let outputs = consume_committed(&topics.outputs[0], 1, Duration::from_secs(60));
    let profile = outputs.first().expect("a profile");
    assert_eq!(header(profile, "traceparent"), None, "the output");
    let dead = consume_committed(&topics.dlq, 1, Duration::from_secs(60));
    assert_eq!(header(dead.first().expect("a dead letter"), "traceparent"), None, "the dead letter");
    service.kill();
}
