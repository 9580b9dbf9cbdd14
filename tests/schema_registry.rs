//! The Confluent wire format through a real schema registry (Apicurio, `deploy/local/registry.sh`),
//! checked by a stock client: Python `confluent-kafka`'s `AvroSerializer` publishes events the
//! pipeline takes, its `AvroDeserializer` reads every derived topic. Expected values are worked
//! out by hand from SPEC 4 (1 point per whole currency unit, pending).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::stack::{Stack, StackOptions};
use omnistream_testkit::{
    RuntimeFlags, ServiceProcess, create_test_topics, free_port, http_get, producer, read_committed_to_end,
    registry_url, unique_topic, wait_until, workspace_binary,
};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const EVENT_SCHEMA: &str = "schemas/touchpoint_event.avsc";

fn python() -> String {
    let root = omnistream_testkit::repo_root();
    std::env::var("OMNISTREAM_PYTHON")
        .unwrap_or_else(|_| root.join("target/py/bin/python3").to_string_lossy().into_owned())
}

/// Runs `tests/interop/confluent_registry.py` with `args`, `input` on its stdin; its JSON lines.
fn confluent_client(args: &[&str], input: &str) -> Vec<Value> {
    let root = omnistream_testkit::repo_root();
    let mut child = std::process::Command::new(python())
        .arg(root.join("tests/interop/confluent_registry.py"))
        .args(args)
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{}: {e} (`make py-deps` installs confluent-kafka in target/py)", python())
        });
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "confluent_registry.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A touchpoint event as the Avro record a Python producer writes: `properties` names its branch.
fn avro_event(
    id: &str,
    customer: &str,
    channel: &str,
    kind: &str,
    branch: &str,
    properties: Value,
) -> String {
    let value = json!({
        "event_id": id, "customer_id": customer, "occurred_at": Utc::now().timestamp_millis(),
        "channel": channel, "type": kind, "source": "python-confluent", "context": {}, "identifiers": [],
        "properties": [format!("io.omnistream.v1.{branch}"), properties],
    });
    json!({"key": customer, "value": value}).to_string() + "\n"
}

fn last_value<'a>(records: &'a [Value], topic: &str, key: &str) -> &'a Value {
    &records
        .iter()
        .rev()
        .find(|r| r["topic"] == topic && r["key"] == key)
        .unwrap_or_else(|| panic!("no {key} on {topic}"))["value"]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_confluent_client_publishes_events_and_reads_every_derived_topic_through_the_registry() {
    let registry = registry_url();
    let stack =
        Stack::start("registry", StackOptions { registry: Some(registry.to_owned()), ..Default::default() })
            .await;
    let order = avro_event(
        "py-2",
        "c-py",
        "store",
        "order_placed",
        "OrderPlaced",
        json!({"order_id": "o-1", "value_minor": 4999, "currency": "EUR", "items": null}),
    );
    let events = [
        avro_event(
            "py-1",
            "c-py",
            "web",
            "page_viewed",
            "PageViewed",
            json!({"url": "https://shop.example/"}),
        ),
        order.clone(),
        // A producer's retry: the same event id again.
        order,
        avro_event(
            "py-3",
            "c-py",
            "whatsapp",
            "support_ticket_opened",
            "SupportTicketOpened",
            json!({"ticket_id": "T-9", "topic": null}),
        ),
    ]
    .concat();
    let produced = confluent_client(
        &["produce", &stack.bootstrap, registry, &stack.topics.events, EVENT_SCHEMA],
        &events,
    );
    let python_id = produced[0]["schema_id"].as_u64().unwrap();

    // The gateway writes the Confluent format too, and the services read both writers' records.
    let body = json!({"event_id": "gw-1", "customer_id": "c-py", "occurred_at": Utc::now().to_rfc3339(),
        "channel": "web", "type": "order_placed",
        "properties": {"order_id": "o-2", "value_minor": 1000, "currency": "EUR"}});
    let (status, answer) = stack.post_events(&body, None).await;
    assert_eq!(status, 200, "{answer}");

    let document = stack
        .api_until("/v1/customers/c-py", WAIT, |d| {
            d["profile"]["orders_count"] == 2 && d["loyalty"]["pending"] == 59 && !d["suppression"].is_null()
        })
        .await;
    assert_eq!(document["profile"]["lifetime_value_minor"], json!({"EUR": 5999}));

    let events_written = read_committed_to_end(&stack.topics.events);
    assert_eq!(events_written.len(), 5);
    for message in &events_written {
        assert_eq!(message.payload().unwrap()[0], 0, "every event is in the Confluent format");
    }
    assert!(read_committed_to_end(&stack.topics.dlq).is_empty(), "nothing dead-lettered");

    let derived =
        ["profiles", "suppressions", "affinity", "balances", "ledger"].map(|role| stack.topics.output(role));
    let mut args = vec!["consume", &stack.bootstrap, registry];
    args.extend(derived.iter().copied());
    let records = confluent_client(&args, "");
    for topic in derived {
        let ids: std::collections::BTreeSet<u64> =
            records.iter().filter(|r| r["topic"] == topic).filter_map(|r| r["schema_id"].as_u64()).collect();
        assert_eq!(ids.len(), 1, "{topic}: one schema id, registered by its writer ({ids:?})");
        assert_ne!(ids.first(), Some(&python_id), "{topic}: not the events' schema");
    }
    let profile = last_value(&records, stack.topics.output("profiles"), "c-py");
    assert_eq!(profile["orders_count"], 2);
    assert_eq!(profile["lifetime_value_minor"], json!({"EUR": 5999}));
    assert_eq!(profile["open_tickets"][0]["ticket_id"], "T-9");
    let balance = last_value(&records, stack.topics.output("balances"), "c-py");
    assert_eq!((balance["pending"].as_i64(), balance["lifetime_earned"].as_i64()), (Some(59), Some(59)));
    let ledger: Vec<i64> = records
        .iter()
        .filter(|r| r["topic"] == stack.topics.output("ledger"))
        .map(|r| r["value"]["points"].as_i64().unwrap())
        .collect();
    assert_eq!(ledger, [49, 10], "one entry per order, the retry dropped");
    let suppression = last_value(&records, stack.topics.output("suppressions"), "c-py");
    assert!(
        suppression["marketing"].to_string().contains("T-9"),
        "the open ticket suppresses: {suppression}"
    );
    let affinity = last_value(&records, stack.topics.output("affinity"), "c-py");
    assert_eq!(affinity["customer_id"], "c-py");
}

/// Registers `schema` under `subject` in the test registry; the id.
async fn register(subject: &str, schema: &str) -> u64 {
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .json(&json!({"schema": schema}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id"].as_u64().unwrap_or_else(|| panic!("{answer}"))
}

/// Fresh events, profiles, dead-letter and changelog topics of one profile-updater, created.
async fn profile_updater_topics(label: &str) -> [String; 4] {
    let [events, profiles, dlq, changelog] =
        ["events", "profiles", "dlq", "state"].map(|name| unique_topic(&format!("{label}-{name}")));
    create_test_topics(&[
        TopicRequest::compacted(&changelog, 2, 1),
        TopicRequest::events(&events, 2, 1),
        TopicRequest::compacted(&profiles, 2, 1),
        TopicRequest::plain(&dlq, 2, 1),
    ])
    .await;
    [events, profiles, dlq, changelog]
}

fn profile_updater(
    label: &str,
    events: &str,
    profiles: &str,
    dlq: &str,
    changelog: &str,
    admin_port: u16,
    extra: &[&str],
) -> ServiceProcess {
    let group = unique_topic(&format!("{label}-group"));
    let flags = RuntimeFlags {
        input: events,
        dlq,
        changelog,
        group: &group,
        instance: label,
        admin_addr: &format!("127.0.0.1:{admin_port}"),
        session_timeout_ms: Some(6_000),
    };
    let mut args = flags.args();
    args.extend(["--profiles-topic".to_owned(), profiles.to_owned()]);
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::spawn(
        &workspace_binary("profile-updater"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_the_registry_refuses_as_incompatible_stops_the_start_naming_the_field() {
    let [events, profiles, dlq, changelog] = profile_updater_topics("incompatible").await;
    // An earlier version of the profile without `orders_count`: the current one adds it without
    // a default, so it cannot read what the earlier one wrote (BACKWARD).
    let mut earlier: Value = serde_json::from_str(include_str!("../schemas/customer_profile.avsc")).unwrap();
    earlier["fields"].as_array_mut().unwrap().retain(|field| field["name"] != "orders_count");
    register(&format!("{profiles}-value"), &earlier.to_string()).await;

    let mut service = profile_updater(
        "incompatible",
        &events,
        &profiles,
        &dlq,
        &changelog,
        free_port(),
        &["--schema-registry-url", registry_url(), "--wire-format", "confluent"],
    );
    wait_until("profile-updater exits", WAIT, || !service.is_running());
    assert_eq!(service.exit_code(), Some(1));
    let log = std::fs::read_to_string(&service.log).unwrap();
    assert!(log.contains("incompatible") && log.contains("orders_count"), "{log}");
    assert!(log.contains(&format!("{profiles}-value")), "names the subject: {log}");
}

/// A TCP proxy to the registry that can refuse every connection, as a registry that is down.
async fn switchable_proxy(target: SocketAddr, up: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            if !up.load(Ordering::SeqCst) {
                continue; // dropped: the connection closes unanswered
            }
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_of_a_schema_id_not_known_while_the_registry_is_down_waits_and_other_partitions_go_on() {
    let registry = registry_url();
    let address = registry.trim_start_matches("http://").split('/').next().unwrap();
    let path = registry.trim_start_matches("http://").trim_start_matches(address);
    let up = Arc::new(AtomicBool::new(false));
    let proxy = switchable_proxy(address.parse().unwrap(), up.clone()).await;

    let [events, profiles, dlq, changelog] = profile_updater_topics("registry-down").await;
    let admin_port = free_port();
    let proxied = format!("http://127.0.0.1:{proxy}{path}");
    let _service = profile_updater(
        "registry-down",
        &events,
        &profiles,
        &dlq,
        &changelog,
        admin_port,
        &["--schema-registry-url", &proxied],
    );
    wait_until("profile-updater ready", WAIT, || {
        http_get(admin_port, "/readyz").is_some_and(|(status, _)| status == 200)
    });

    // A stock client writes c-down's event in the Confluent format (registering its schema in
    // the real registry); the service cannot ask the registry for that id.
    let page_view = avro_event(
        "d-1",
        "c-down",
        "web",
        "page_viewed",
        "PageViewed",
        json!({"url": "https://shop.example/"}),
    );
    confluent_client(
        &["produce", omnistream_testkit::bootstrap_servers(), registry, &events, EVENT_SCHEMA],
        &page_view,
    );
    let held = read_committed_to_end(&events)[0].partition();
    // Another customer's single-object event on the other partition.
    let other = omnistream_model::TouchpointEvent {
        event_id: "d-2".into(),
        customer_id: "c-other".into(),
        occurred_at: Utc::now(),
        channel: omnistream_model::Channel::Web,
        source: None,
        payload: omnistream_model::EventPayload::PageViewed { url: "https://shop.example/".into() },
        context: Default::default(),
        identifiers: Vec::new(),
    };
    let bytes = omnistream_model::encode_event(&other).unwrap();
    producer()
        .send(
            FutureRecord::to(&events).partition(1 - held).key("c-other").payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let keys = |topic: &str| -> Vec<String> {
        read_committed_to_end(topic)
            .iter()
            .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
            .collect()
    };
    wait_until("the other partition's profile", WAIT, || keys(&profiles).contains(&"c-other".to_owned()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!keys(&profiles).contains(&"c-down".to_owned()), "held while the registry is down");
    assert!(read_committed_to_end(&dlq).is_empty(), "a registry outage is not bad input");
    let (_, metrics) = http_get(admin_port, "/metrics").unwrap();
    assert!(metrics.contains("omnistream_partitions_waiting_for_schema 1"), "{metrics}");

    up.store(true, Ordering::SeqCst);
    wait_until("c-down's profile once the registry answers", WAIT, || {
        keys(&profiles).contains(&"c-down".to_owned())
    });
    assert!(read_committed_to_end(&dlq).is_empty());
    let (_, metrics) = http_get(admin_port, "/metrics").unwrap();
    assert!(metrics.contains("omnistream_partitions_waiting_for_schema 0"), "{metrics}");
}
