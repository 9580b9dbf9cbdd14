//! `omni` against the real broker.

use std::process::{Command, Output};
use std::time::Duration;

use omnistream_model::records::CatalogEvent;
use omnistream_model::{decode_event, decode_record};
use omnistream_testkit::{bootstrap_servers, consume_committed, fresh_topic};
use rdkafka::message::Message;

fn omni(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omni"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers())
        .env("LOG_FORMAT", "text")
        .output()
        .expect("run omni")
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_publishes_the_valid_lines_and_names_the_bad_ones() {
    let topic = fresh_topic("produce", 3).await;
    let dir = std::env::temp_dir().join(format!("omni-produce-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.jsonl");
    let lines = [
        r#"{"event_id":"e-1","customer_id":"c-1","occurred_at":"2026-11-20T10:00:00Z","channel":"store","type":"order_placed","properties":{"order_id":"o-1","value_minor":4599,"currency":"EUR"}}"#,
        r#"{"event_id":"e-2","customer_id":"c-1","occurred_at":"2026-11-20T10:01:00Z","channel":"store","type":"order_placed","properties":{"order_id":"o-2","value_minor":-5,"currency":"EUR"}}"#,
        r#"{"event_id":"e-3","customer_id":"c-2","occurred_at":"2026-11-20T10:02:00Z","channel":"whatsapp","type":"support_ticket_opened","properties":{"ticket_id":"T-77","topic":"delivery"}}"#,
        r#"{"event_id":"e-4","customer_id":"c-2","occurred_at":"2026-11-20T10:03:00Z","channel":"fax","type":"page_viewed","properties":{"url":"https://x"}}"#,
        r#"{"event_id":"e-5","customer_id":"c-3","occurred_at":"2026-11-20T10:04:00Z","channel":"web","type":"page_viewed","properties":{"url":"https://shop.example"}}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let output = omni(&["produce", "--file", file.to_str().unwrap(), "--topic", &topic]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "rejected lines make the exit code 1; stderr: {stderr}");
    assert!(stderr.contains("line 2: negative_amount at properties.value_minor"), "{stderr}");
    assert!(stderr.contains("line 4: unknown_channel at channel"), "{stderr}");
    assert!(
        !stderr.contains("line 1:") && !stderr.contains("line 3:") && !stderr.contains("line 5:"),
        "{stderr}"
    );
    assert!(stderr.contains("published 3 events"), "{stderr}");

    let messages = consume_committed(&topic, 4, Duration::from_secs(5));
    let mut ids: Vec<String> =
        messages.iter().map(|m| decode_event(m.payload().unwrap()).unwrap().event_id).collect();
    ids.sort();
    assert_eq!(ids, ["e-1", "e-3", "e-5"]);

    let tail = omni(&["tail", &topic, "--from-beginning", "-n", "3", "-t", "30"]);
    assert!(tail.status.success());
    let printed: Vec<serde_json::Value> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(printed.len(), 3);
    assert!(
        printed
            .iter()
            .any(|e| e["type"] == "support_ticket_opened" && e["properties"]["ticket_id"] == "T-77")
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_catalog_publishes_the_valid_lines_keyed_by_product_and_names_the_bad_ones() {
    let topic = fresh_topic("produce-catalog", 3).await;
    let lines = [
        r#"{"event_id":"price-1","product_id":"sku-42","occurred_at":"2026-12-03T10:00:00Z","type":"product_price_changed","properties":{"old_minor":4999,"new_minor":3999,"currency":"EUR"},"source":"pim"}"#,
        r#"{"event_id":"price-2","product_id":"sku-42","occurred_at":"2026-12-03T10:05:00Z","type":"product_price_changed","properties":{"old_minor":3999,"new_minor":-1,"currency":"EUR"}}"#,
        r#"{"event_id":"stock-1","product_id":"sku-7","occurred_at":"2026-12-03T11:00:00+01:00","type":"product_restocked"}"#,
        r#"{"event_id":"e-1","customer_id":"c-1","occurred_at":"2026-12-03T10:00:00Z","channel":"web","type":"page_viewed","properties":{"url":"/"}}"#,
    ];
    let file = omnistream_testkit::temp_file("catalog", "jsonl", &(lines.join("\n") + "\n"));

    let output = omni(&["produce", "--catalog", file.to_str().unwrap(), "--catalog-topic", &topic]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "rejected lines make the exit code 1; stderr: {stderr}");
    assert!(stderr.contains("line 2: negative_amount at properties.new_minor"), "{stderr}");
    assert!(
        stderr.contains("line 4: unknown_field at customer_id"),
        "a touchpoint event is no catalog event: {stderr}"
    );
    assert!(stderr.contains("line 4: missing_field at product_id"), "{stderr}");
    assert!(!stderr.contains("line 1:") && !stderr.contains("line 3:"), "{stderr}");
    assert!(stderr.contains("published 2 catalog events"), "{stderr}");

    // The publish has ended: the topic holds all it will.
    let published: Vec<(String, CatalogEvent)> = omnistream_testkit::read_committed_to_end(&topic)
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().unwrap()).into_owned(),
                decode_record(m.payload().unwrap()).unwrap(),
            )
        })
        .collect();
    let mut keys_and_ids: Vec<(&str, &str)> =
        published.iter().map(|(key, event)| (key.as_str(), event.event_id.as_str())).collect();
    keys_and_ids.sort();
    assert_eq!(keys_and_ids, [("sku-42", "price-1"), ("sku-7", "stock-1")]);
    let restock = &published.iter().find(|(key, _)| key == "sku-7").unwrap().1;
    assert_eq!(restock.occurred_at.to_rfc3339(), "2026-12-03T10:00:00+00:00", "the offset read as UTC");
}

#[test]
fn simulate_is_deterministic_for_a_seed_and_start() {
    let run = |seed: &str| {
        let output = omni(&[
            "simulate",
            "--output",
            "-",
            "--events",
            "500",
            "--rate",
            "0",
            "--seed",
            seed,
            "--start",
            "2026-11-20T08:00:00Z",
            "--customers",
            "20",
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    let first = run("5");
    assert_eq!(first, run("5"));
    assert_ne!(first, run("6"));
    assert_eq!(String::from_utf8(first).unwrap().lines().count(), 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_replay_publishes_each_source_record_once_if_it_now_passes_keyed_by_its_customer() {
    use omnistream_model::{encode_event, parse_event_json};
    use omnistream_testkit::producer;
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    use rdkafka::producer::FutureRecord;

    let dlq = fresh_topic("replay-dlq", 1).await;
    let events = fresh_topic("replay-events", 3).await;
    let event = |id: &str| {
        let json = format!(
            r#"{{"event_id":"{id}","customer_id":"c-9","occurred_at":"2026-11-20T10:00:00Z","channel":"web","type":"page_viewed","properties":{{"url":"/"}}}}"#
        );
        encode_event(&parse_event_json(&json, chrono::Utc::now()).unwrap()).unwrap()
    };
    // As the services write them: the same source record once per service that refused it.
    let dead = [
        ("c-9", event("e-fixed"), "unknown_schema", "5"),
        ("c-9", event("e-fixed"), "unknown_schema", "5"),
        ("c-9", b"\x00garbage".to_vec(), "unknown_schema", "6"),
        ("c-9", event("e-other"), "malformed", "7"),
        ("someone-else", event("e-rekeyed"), "key_mismatch", "8"),
    ];
    let producer = producer();
    for (key, value, code, offset) in &dead {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "error.code", value: Some(*code) })
            .insert(Header { key: "source.topic", value: Some("touchpoint.events.v1") })
            .insert(Header { key: "source.partition", value: Some("0") })
            .insert(Header { key: "source.offset", value: Some(*offset) })
            .insert(Header {
                key: "traceparent",
                value: Some(&format!("00-{:032x}-{:016x}-01", 9, offset.len())),
            });
        let record = FutureRecord::to(&dlq).key(*key).payload(value).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.expect("produced");
    }

    let dry = omni(&["dlq", "replay", "--dlq-topic", &dlq, "--events-topic", &events, "--dry-run"]);
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(stderr.contains("would replay 3 records"), "{stderr}");

    let output = omni(&[
        "dlq",
        "replay",
        "--dlq-topic",
        &dlq,
        "--events-topic",
        &events,
        "--error-code",
        "unknown_schema",
        "--error-code",
        "key_mismatch",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 2 records"), "{stderr}");
    assert!(stderr.contains("1 copies of the same source record, 1 still refused"), "{stderr}");
    let replayed = consume_committed(&events, 3, Duration::from_secs(3));
    let ids: Vec<String> =
        replayed.iter().map(|m| decode_event(m.payload().unwrap()).unwrap().event_id).collect();
    assert_eq!(ids, ["e-fixed", "e-rekeyed"]);
    assert!(replayed.iter().all(|m| m.key() == Some(b"c-9".as_slice())), "keyed by customer_id");
    let traceparents: Vec<Option<&[u8]>> = replayed
        .iter()
        .map(|m| m.headers().and_then(|h| h.iter().find(|h| h.key == "traceparent")).and_then(|h| h.value))
        .collect();
    let carried = b"00-00000000000000000000000000000009-0000000000000001-01".as_slice();
    assert_eq!(traceparents, [Some(carried), Some(carried)], "the dead letters' trace context");
}

#[test]
fn journeys_check_summarizes_each_journey_and_names_each_problem_at_its_line() {
    let root = omnistream_testkit::repo_root();
    let shipped = root.join("journeys/black-friday.toml");
    let output = omni(&["journeys", "check", shipped.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ok: black-friday version 1, enters on page_viewed; steps: 5, sends: 3"),
        "{stdout}"
    );

    let broken = omnistream_testkit::temp_file(
        "journey",
        "toml",
        "id = \"j\"\nversion = 1\n[entry]\nevent = \"order_placed\"\n[[steps]]\nid = \"a\"\nwait = { for = \"soon\" }\nnext = \"b\"\n",
    );
    let output = omni(&["journeys", "check", shipped.to_str().unwrap(), broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let broken = broken.display();
    assert!(stdout.contains(&format!("{broken}:7: step \"a\": wait.for \"soon\"")), "{stdout}");
    assert!(stdout.contains(&format!("{broken}:8: no step \"b\" (steps: a, or \"end\")")), "{stdout}");

    let output = omni(&["journeys", "check", "/no/such/journey.toml", shipped.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "an unreadable file is not a verdict: {output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok: black-friday"), "the others are checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn journeys_publish_writes_each_version_once_and_never_changes_a_published_one() {
    let topic = fresh_topic("journey-definitions", 2).await;
    let root = omnistream_testkit::repo_root();
    let shipped = root.join("journeys/store-to-inbox.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let publish = |file: &std::path::Path| {
        let output = omni(&["journeys", "publish", "--topic", &topic, file.to_str().unwrap()]);
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let file = |label: &str, text: &str| omnistream_testkit::temp_file(label, "toml", text);

    let (code, out) = publish(&shipped);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("published store-to-inbox:1"), "{out}");
    let (code, out) = publish(&shipped);
    assert_eq!((code, out.contains("store-to-inbox:1 is published already")), (Some(0), true), "{out}");
    // Version 1 edited: refused; as version 2: published; version 1 again afterwards: refused.
    let edited = text.replace("10:00", "09:30");
    let (code, out) = publish(&file("edited", &edited));
    assert_eq!((code, out.contains("published with other text: raise version")), (Some(1), true), "{out}");
    let (code, out) = publish(&file("v2", &edited.replace("version = 1", "version = 2")));
    assert_eq!((code, out.contains("published store-to-inbox:2")), (Some(0), true), "{out}");
    let (code, out) = publish(&file("v1-again", &text.replace("version = 1", "version = 1\n# a comment")));
    assert_eq!(code, Some(1), "{out}");
    // A file with a problem: nothing is published, not even the good one beside it.
    let broken = file("broken", &text.replace("version = 1", "version = 3").replace("10:00", "25:00"));
    let good = file("good", &edited.replace("version = 1", "version = 4"));
    let output =
        omni(&["journeys", "publish", "--topic", &topic, good.to_str().unwrap(), broken.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!((output.status.code(), out.contains("nothing published")), (Some(1), true), "{out}");

    // Every publish above has ended: the topic holds all it will.
    let records = omnistream_testkit::read_committed_to_end(&topic);
    let mut versions: Vec<(String, i32, bool)> = records
        .iter()
        .map(|message| {
            let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
            let definition: omnistream_model::records::JourneyDefinition =
                decode_record(message.payload().unwrap()).unwrap();
            (key, definition.version, definition.source.contains("09:30"))
        })
        .collect();
    versions.sort();
    assert_eq!(versions, [("store-to-inbox:1".into(), 1, false), ("store-to-inbox:2".into(), 2, true)]);
}
