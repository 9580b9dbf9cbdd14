//! The customer-api's on-disk store across restarts, on the real broker: a clean stop resumes
//! from the stored offsets (reading only what came after), a SIGKILL mid-read loses nothing, and
//! a store the topics can no longer continue (records removed by retention, or written longer ago
//! than the topics keep tombstones) is rebuilt. The oracle is a second API started with no store,
//! reading every topic from the beginning, and the last records the services' folds wrote.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_model::OutputRecord;
use omnistream_model::decode_record;
use omnistream_model::records::{CustomerIdentity, CustomerProfile, LinkedIdentifier};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_runtime::admin::TopicRequest;
use omnistream_suppression::{Rules, Suppression};
use omnistream_testkit::pipeline::{OutputsByKey, fold, simulated_input};
use omnistream_testkit::{
    ServiceProcess, client_config, create_test_topics, free_port, http_get, producer, unique_topic,
    wait_until, workspace_binary,
};
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;

struct Topics {
    profiles: String,
    suppressions: String,
    affinity: String,
    ledger: String,
    balances: String,
    identity: String,
    journeys: String,
}

impl Topics {
    fn flags(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("--profiles-topic", &self.profiles),
            ("--suppressions-topic", &self.suppressions),
            ("--affinity-topic", &self.affinity),
            ("--ledger-topic", &self.ledger),
            ("--balances-topic", &self.balances),
            ("--identity-topic", &self.identity),
            ("--journey-states-topic", &self.journeys),
        ]
    }
}

/// A running customer-api and its port.
struct Api {
    process: ServiceProcess,
    port: u16,
}

fn start_api(label: &str, topics: &Topics, store_dir: Option<&std::path::Path>) -> Api {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<&str> = vec!["--http-addr", &addr, "--admin-addr", "127.0.0.1:0"];
    let dir = store_dir.map(|d| d.to_string_lossy().into_owned());
    if let Some(dir) = &dir {
        args.extend(["--store-dir", dir]);
    }
    for (flag, topic) in topics.flags() {
        args.extend([flag, topic]);
    }
    let process = ServiceProcess::spawn(&workspace_binary("customer-api"), label, &args, &[]);
    wait_until(&format!("{label} is ready"), Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    Api { process, port }
}

/// Records read by the API since it started, every topic together.
fn records_read(port: u16) -> u64 {
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    metrics
        .lines()
        .filter(|line| line.starts_with("omnistream_api_records_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn log_of(api: &Api) -> String {
    std::fs::read_to_string(&api.process.log).expect("the log")
}

/// Each route's answer for every id, from one API.
fn answers(port: u16, ids: &BTreeSet<String>) -> Vec<(String, u16, String)> {
    let mut answers = Vec::new();
    for id in ids {
        for route in ["", "/loyalty", "/reachability", "/identity"] {
            let path = format!("/v1/customers/{id}{route}");
            let (status, body) = http_get(port, &path).expect("answers");
            // Reachability is as of the request: its clock fields differ between two APIs.
            let body = if route == "/reachability" { without_clock(&body) } else { body };
            answers.push((path, status, body));
        }
    }
    answers
}

fn without_clock(body: &str) -> String {
    let mut document: serde_json::Value = serde_json::from_str(body).expect("JSON");
    if let Some(object) = document.as_object_mut() {
        object.remove("evaluated_at");
        object.remove("stale");
    }
    document.to_string()
}

fn assert_same_answers(label: &str, port: u16, oracle: u16, ids: &BTreeSet<String>) {
    let (got, expected) = (answers(port, ids), answers(oracle, ids));
    let differing: Vec<_> = got.iter().zip(&expected).filter(|(g, e)| g != e).take(3).collect();
    assert!(differing.is_empty(), "{label}: answers differ from a store built from scratch: {differing:#?}");
}

/// Identity records of the first `count` customers, three each (one per published third): an
/// email `a-…`, then `b-…` in its place, then `b-…` and a phone, or, for every third customer, a
/// tombstone. The store's index of identifiers must drop what a newer record no longer lists.
fn identity_records(topic: &str, customers: &[String]) -> OutputsByKey {
    let record = |id: &str, identifiers: &[(&str, String)]| {
        let linked = identifiers
            .iter()
            .map(|(kind, value)| LinkedIdentifier {
                kind: (*kind).into(),
                value: value.clone(),
                event_id: format!("e-{id}"),
                occurred_at: "2026-12-01T10:00:00Z".parse().expect("time"),
                channel: "web".into(),
            })
            .collect();
        CustomerIdentity {
            customer_id: id.into(),
            merged_into: None,
            identifiers: linked,
            merges: Vec::new(),
        }
        .encode()
    };
    let mut records = OutputsByKey::new();
    for (n, id) in customers.iter().enumerate() {
        let last = (n % 3 != 0).then(|| {
            record(id, &[("email", format!("b-{id}@example.com")), ("phone", format!("+1415555{n:04}"))])
        });
        records.insert(
            (topic.to_owned(), id.clone()),
            vec![
                Some(record(id, &[("email", format!("a-{id}@example.com"))])),
                Some(record(id, &[("email", format!("b-{id}@example.com"))])),
                last,
            ],
        );
    }
    records
}

/// What searching each identifier finds after all three parts, worked out from
/// [`identity_records`]: replaced and tombstoned identifiers find no one.
fn assert_lookups(label: &str, port: u16, customers: &[String]) {
    let find = |kind: &str, value: &str| -> serde_json::Value {
        let query =
            format!("/v1/customers?identifier_type={kind}&identifier_value={}", value.replace('+', "%2B"));
        let (status, body) = http_get(port, &query).expect("answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["customers"].clone()
    };
    for (n, id) in customers.iter().enumerate() {
        let held = if n % 3 == 0 { serde_json::json!([]) } else { serde_json::json!([id]) };
        assert_eq!(find("email", &format!("a-{id}@example.com")), serde_json::json!([]), "{label}: {id}");
        assert_eq!(find("email", &format!("b-{id}@example.com")), held, "{label}: {id}");
        assert_eq!(find("phone", &format!("+1415555{n:04}")), held, "{label}: {id}");
    }
}

/// Publishes the part `[from, to)` of each key's records (tombstones as null values); answers
/// how many records that is.
async fn publish_part(outputs: &OutputsByKey, part: std::ops::Range<usize>, parts: usize) -> usize {
    let producer = producer();
    let mut deliveries = Vec::new();
    for ((topic, key), values) in outputs {
        let bounds = |i: usize| values.len() * i / parts;
        for value in &values[bounds(part.start)..bounds(part.end)] {
            let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
            if let Some(bytes) = value {
                record = record.payload(bytes);
            }
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
        }
    }
    let sent = deliveries.len();
    for delivery in deliveries {
        delivery.await.expect("delivery").expect("acknowledged");
    }
    sent
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_a_kill_loses_nothing_and_a_stale_store_is_rebuilt() {
    let topic = |name: &str| unique_topic(&format!("api-restart-{name}"));
    let topics = Topics {
        profiles: topic("profiles"),
        suppressions: topic("suppressions"),
        affinity: topic("affinity"),
        ledger: topic("ledger"),
        balances: topic("balances"),
        identity: topic("identity"),
        journeys: topic("journeys"),
    };
    let mut requests = vec![TopicRequest::plain(&topics.ledger, 3, 1)];
    for compacted in [
        &topics.profiles,
        &topics.suppressions,
        &topics.affinity,
        &topics.balances,
        &topics.identity,
        &topics.journeys,
    ] {
        requests.push(TopicRequest::compacted(compacted, 3, 1));
    }
    create_test_topics(&requests).await;

    let input = simulated_input(12_000, 600, 73, 0.0);
    let mut outputs = fold(&ProfileUpdater, &[&topics.profiles], &input).0;
    outputs.extend(fold(&Suppression::new(Rules::default()), &[&topics.suppressions], &input).0);
    outputs.extend(fold(&ChannelAffinityProcessor::default(), &[&topics.affinity], &input).0);
    outputs.extend(
        fold(&LoyaltyPoints::new(LoyaltyRules::default()), &[&topics.ledger, &topics.balances], &input).0,
    );
    let mut ids: BTreeSet<String> = outputs.keys().map(|(_, key)| key.clone()).collect();
    let resolved: Vec<String> = ids.iter().take(60).cloned().collect();
    outputs.extend(identity_records(&topics.identity, &resolved));
    ids.insert("nobody-at-all".into());
    let store_dir = std::env::temp_dir().join(format!("customer-api-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);

    // A first third of each customer's records; an API reads them and stops cleanly.
    publish_part(&outputs, 0..1, 3).await;
    let first = start_api("api-restart-1", &topics, Some(&store_dir));
    assert!(log_of(&first).contains("the store is empty"), "{}", first.process.log.display());
    assert!(first.process.terminate(Duration::from_secs(30)).success());

    // The second third arrives while it is down: the restart reads exactly those records.
    let second_part = publish_part(&outputs, 1..2, 3).await;
    let second = start_api("api-restart-2", &topics, Some(&store_dir));
    assert!(log_of(&second).contains("resuming from the stored offsets"));
    assert_eq!(records_read(second.port), second_part as u64, "only what came after the stop is read");

    // The last third arrives while it runs, and it is killed while reading.
    let third_part = {
        let outputs = outputs.clone();
        tokio::spawn(async move { publish_part(&outputs, 2..3, 3).await })
    };
    // Killed as soon as it has read some of them (polled, not waited for).
    let started = std::time::Instant::now();
    while records_read(second.port) <= second_part as u64 {
        assert!(started.elapsed() < Duration::from_secs(30), "the API reads the last part");
        std::thread::sleep(Duration::from_millis(2));
    }
    let read_before_kill = records_read(second.port) - second_part as u64;
    second.process.kill();
    let third_part = third_part.await.expect("published");
    eprintln!("killed after reading {read_before_kill} of {third_part} records");
    let third = start_api("api-restart-3", &topics, Some(&store_dir));
    // A crash loses what was written since the last durable commit (at most a second's worth),
    // which is read again; what the clean stop left is not.
    let reread = records_read(third.port);
    assert!(reread <= (second_part + third_part) as u64, "resumed, not read from the beginning: {reread}");
    let mut metrics = String::new();
    wait_until("the restarted API reads to the end", Duration::from_secs(30), || {
        metrics = http_get(third.port, "/metrics").map(|(_, metrics)| metrics).unwrap_or_default();
        let lags: Vec<&str> =
            metrics.lines().filter(|line| line.starts_with("omnistream_api_topic_lag{")).collect();
        lags.len() == 7 && lags.iter().all(|line| line.ends_with(" 0"))
    });

    // The oracles: the last profile each fold wrote, and an API that read everything anew.
    let last_profiles: HashMap<&str, Option<&Vec<u8>>> = outputs
        .iter()
        .filter(|((topic, _), _)| *topic == topics.profiles)
        .map(|((_, key), values)| (key.as_str(), values.last().and_then(Option::as_ref)))
        .collect();
    for (customer, profile) in &last_profiles {
        let (status, body) = http_get(third.port, &format!("/v1/customers/{customer}")).expect("answers");
        if let Some(bytes) = profile {
            let expected: CustomerProfile = decode_record(bytes).expect("decodes");
            let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(
                (status, &document["profile"]["version"]),
                (200, &expected.version.into()),
                "{customer}"
            );
        }
    }
    let scratch = start_api("api-restart-scratch", &topics, None);
    assert_same_answers("after a kill", third.port, scratch.port, &ids);
    assert_lookups("after a kill", third.port, &resolved);
    assert!(third.process.terminate(Duration::from_secs(30)).success());
    assert!(scratch.process.terminate(Duration::from_secs(30)).success());

    // Retention removes ledger records the store has not read: it is rebuilt.
    let ledger_entry = outputs
        .iter()
        .find(|((topic, _), values)| *topic == topics.ledger && !values.is_empty())
        .map(|((_, key), values)| (key.clone(), values[0].clone().expect("an entry")))
        .expect("ledger entries");
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    let ends = || -> Vec<i64> {
        (0..3)
            .map(|p| consumer.fetch_watermarks(&topics.ledger, p, Duration::from_secs(10)).expect("ends").1)
            .collect()
    };
    let before = ends();
    let producer = producer();
    for _ in 0..5 {
        let record = FutureRecord::to(&topics.ledger).key(&ledger_entry.0).payload(&ledger_entry.1);
        producer.send(record, Duration::from_secs(10)).await.expect("sent");
    }
    let after = ends();
    let partition = (0..3).find(|p| after[*p as usize] > before[*p as usize]).expect("a partition grew");
    let high = after[partition as usize];
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    let mut removed = TopicPartitionList::new();
    removed.add_partition_offset(&topics.ledger, partition, rdkafka::Offset::Offset(high)).expect("offset");
    admin.delete_records(&removed, &AdminOptions::new()).await.expect("records deleted");
    let rebuilt = start_api("api-restart-rebuilt", &topics, Some(&store_dir));
    assert!(log_of(&rebuilt).contains("the records from"), "{}", rebuilt.process.log.display());
    let scratch = start_api("api-restart-scratch-2", &topics, None);
    assert_same_answers("after retention", rebuilt.port, scratch.port, &ids);
    assert!(rebuilt.process.terminate(Duration::from_secs(30)).success());
    drop(scratch);

    // A store last written longer ago than a compacted topic keeps its tombstones may have missed
    // one (an erasure): it is rebuilt.
    let config = AlterConfig::new(ResourceSpecifier::Topic(&topics.profiles))
        .set("cleanup.policy", "compact")
        .set("delete.retention.ms", "1000");
    admin.alter_configs([&config], &AdminOptions::new()).await.expect("altered").remove(0).expect("altered");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = start_api("api-restart-late", &topics, Some(&store_dir));
    assert!(
        log_of(&late).contains("longer ago than the topics keep tombstones"),
        "{}",
        late.process.log.display()
    );
    drop(late);
    let _ = std::fs::remove_dir_all(&store_dir);
}
