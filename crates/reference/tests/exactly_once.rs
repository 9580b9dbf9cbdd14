//! The runtime's exactly-once guarantees, proven on the real broker with the event counter: its
//! committed output (read_committed) must equal the pure fold of its input, whatever happens to
//! the process. A lost event shows as a gap in a customer's counts, a duplicate as a repeat.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use omnistream_model::{Channel, EventPayload, TouchpointEvent, decode_and_validate, encode_event};
use omnistream_reference::{CountRecord, CounterState, EventCounter};
use omnistream_runtime::admin::TopicRequest;
use omnistream_runtime::{Processor, event_id_hash};
use omnistream_sim::{SimConfig, Simulator};
use omnistream_testkit::{
    ServiceProcess, consume_committed, create_test_topics, end_offsets, free_port, http_get, produce_all,
    unique_topic, wait_until,
};
use rand::Rng;
use rdkafka::message::{Headers, Message, OwnedMessage};

const PARTITIONS: i32 = 6;
const DEDUPE_WINDOW: usize = 64;

struct Topics {
    group: String,
    input: String,
    output: String,
    dlq: String,
    changelog: String,
}

async fn topics(label: &str) -> Topics {
    let topics = Topics {
        group: unique_topic(&format!("{label}-group")),
        input: unique_topic(&format!("{label}-input")),
        output: unique_topic(&format!("{label}-counts")),
        dlq: unique_topic(&format!("{label}-dlq")),
        changelog: unique_topic(&format!("{label}-state")),
    };
    create_test_topics(&[
        TopicRequest::plain(&topics.input, PARTITIONS, 1),
        TopicRequest::plain(&topics.output, PARTITIONS, 1),
        TopicRequest::plain(&topics.dlq, PARTITIONS, 1),
        TopicRequest::compacted(&topics.changelog, PARTITIONS, 1),
    ])
    .await;
    topics
}

fn counter(topics: &Topics, instance: &str, label: &str) -> ServiceProcess {
    counter_with_admin(topics, instance, label, 0)
}

fn counter_with_admin(topics: &Topics, instance: &str, label: &str, admin_port: u16) -> ServiceProcess {
    counter_with_args(topics, instance, label, admin_port, &[])
}

fn counter_with_args(
    topics: &Topics,
    instance: &str,
    label: &str,
    admin_port: u16,
    extra: &[&str],
) -> ServiceProcess {
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let mut args = vec![
        "--input-topic",
        &topics.input,
        "--output-topic",
        &topics.output,
        "--dlq-topic",
        &topics.dlq,
        "--changelog-topic",
        &topics.changelog,
        "--group-id",
        &topics.group,
        "--instance-id",
        instance,
        "--admin-addr",
        &admin_addr,
        "--session-timeout-ms",
        "6000",
    ];
    args.extend_from_slice(extra);
    ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_event-counter"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    )
}

fn simulated(events: usize, seed: u64, malformed_share: f64) -> Vec<(String, Vec<u8>)> {
    let config = SimConfig {
        customers: 2_000,
        seed,
        start: Utc::now() - chrono::Duration::hours(6),
        step: chrono::Duration::milliseconds(10),
        duplicate_share: 0.01,
        malformed_share,
    };
    Simulator::new(config)
        .take(events)
        .map(|record| (record.customer_id().to_owned(), record.to_avro_bytes().expect("encodes")))
        .collect()
}

/// Per customer, the outputs in order (`None` is a tombstone).
type Outputs = HashMap<String, Vec<Option<CountRecord>>>;

/// The pure fold: the counter applied to the valid input, in order, with the runtime's dedupe.
/// Returns the outputs and how many input records are invalid.
fn fold(input: &[(String, Vec<u8>)]) -> (Outputs, usize) {
    let counter = EventCounter { output_topic: Arc::from("fold"), idle_after: None };
    let mut customers: HashMap<String, (VecDeque<u64>, Option<CounterState>)> = HashMap::new();
    let mut expected: Outputs = HashMap::new();
    let mut rejected = 0;
    for (_, bytes) in input {
        let Ok(event) = decode_and_validate(bytes, Utc::now()) else {
            rejected += 1;
            continue;
        };
        let (recent, state) = customers.entry(event.customer_id.clone()).or_default();
        let hash = event_id_hash(&event.event_id);
        if recent.contains(&hash) {
            continue;
        }
        recent.push_back(hash);
        if recent.len() > DEDUPE_WINDOW {
            recent.pop_front();
        }
        for output in counter.apply(state, &event, Utc::now()) {
            let record = output.value.map(|v| serde_json::from_slice::<CountRecord>(&v).expect("count"));
            expected.entry(output.key).or_default().push(record);
        }
        if state.is_none() {
            customers.remove(&event.customer_id);
        }
    }
    (expected, rejected)
}

fn total(outputs: &Outputs) -> usize {
    outputs.values().map(Vec::len).sum()
}

fn committed_counts(topic: &str, expected_records: usize) -> Outputs {
    let mut actual: Outputs = HashMap::new();
    // One more than expected, so that an extra (duplicated) output would be read too.
    for message in consume_committed(topic, expected_records + 1, Duration::from_secs(10)) {
        let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf-8 key");
        let record = message.payload().map(|v| serde_json::from_slice::<CountRecord>(v).expect("count"));
        actual.entry(key).or_default().push(record);
    }
    actual
}

fn assert_exactly_once(expected: &Outputs, actual: &Outputs) {
    for (customer, records) in expected {
        assert_eq!(actual.get(customer), Some(records), "outputs of {customer}");
    }
    assert_eq!(total(actual), total(expected), "no output beyond the fold");
}

/// Waits (off the async runtime) until `records` outputs are committed, then reads them all.
async fn committed_when_complete(topic: &str, records: usize, deadline: Duration) -> Outputs {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        wait_until("every output is committed", deadline, || {
            consume_committed(&topic, records, Duration::from_secs(5)).len() >= records
        });
        committed_counts(&topic, records)
    })
    .await
    .expect("reader task")
}

/// Produces `records` at about `rate` per second in the background.
fn produce_at_rate(
    topic: String,
    records: Vec<(String, Vec<u8>)>,
    rate: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let chunk = (rate / 10).max(1);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        for part in records.chunks(chunk) {
            ticker.tick().await;
            produce_all(&topic, part.to_vec()).await;
        }
    })
}

/// Whether the output topic holds at least `records` records (transaction markers count too, so
/// `false` proves the run is still mid-stream).
fn output_may_be_complete(topic: &str, records: usize) -> bool {
    end_offsets(topic) >= records as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let topics = topics("crash").await;
    let input = simulated(200_000, 21, 0.002);
    let (expected, rejected) = fold(&input);
    let producing = produce_at_rate(topics.input.clone(), input, 20_000);

    let mut rng = rand::rng();
    let mut kills_mid_stream = 0;
    for run in 0..6 {
        let service = counter(&topics, "crash-0", &format!("crash-run-{run}"));
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        if !output_may_be_complete(&topics.output, total(&expected)) {
            kills_mid_stream += 1;
        }
        service.kill();
    }
    assert!(kills_mid_stream >= 5, "only {kills_mid_stream} kills happened mid-stream");
    producing.await.expect("producer task");

    let mut last = counter(&topics, "crash-0", "crash-final");
    let actual = committed_when_complete(&topics.output, total(&expected), Duration::from_secs(180)).await;
    assert!(last.is_running(), "the last run did not crash");
    assert_exactly_once(&expected, &actual);
    let dead_lettered = consume_committed(&topics.dlq, rejected + 1, Duration::from_secs(10)).len();
    assert_eq!(dead_lettered, rejected, "every malformed record is in the DLQ exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_joins_and_the_first_leaves_with_sigterm_exactly_once() {
    let topics = topics("rebalance").await;
    let input = simulated(60_000, 22, 0.0);
    let (expected, _) = fold(&input);
    let producing = produce_at_rate(topics.input.clone(), input, 6_000);

    let first = counter(&topics, "rebalance-a", "rebalance-a");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut second = counter(&topics, "rebalance-b", "rebalance-b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!output_may_be_complete(&topics.output, total(&expected)), "still mid-stream");
    let status = tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(20))).await.unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    producing.await.expect("producer task");

    let actual = committed_when_complete(&topics.output, total(&expected), Duration::from_secs(120)).await;
    assert!(second.is_running());
    assert_exactly_once(&expected, &actual);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dlq_with_their_headers_and_good_ones_are_processed() {
    let topics = topics("poison").await;
    let good = simulated(1_000, 23, 0.0);
    // Keys sort in the order the poison is produced, to match DLQ records to their cause.
    let poison: Vec<(String, Vec<u8>, &str)> = vec![
        ("c-000001".into(), b"\x00\x01garbage".to_vec(), "malformed"),
        ("c-000002".into(), br#"{"event_id":"x","type":"page_viewed"}"#.to_vec(), "malformed"),
        ("c-000003".into(), vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9], "unknown_schema"),
        ("z-someone-else".into(), good[0].1.clone(), "key_mismatch"),
    ];
    let mut input = Vec::new();
    for (index, record) in good.iter().enumerate() {
        if index % 200 == 0
            && let Some((key, bytes, _)) = poison.get(index / 200)
        {
            input.push((key.clone(), bytes.clone()));
        }
        input.push(record.clone());
    }
    let (expected, _) = fold(&good);
    produce_all(&topics.input, input).await;

    let mut service = counter(&topics, "poison", "poison");
    let actual = committed_when_complete(&topics.output, total(&expected), Duration::from_secs(60)).await;
    let mut dead = consume_committed(&topics.dlq, poison.len() + 1, Duration::from_secs(5));
    assert!(service.is_running(), "poison never crashes the service");
    assert_exactly_once(&expected, &actual);
    assert_eq!(dead.len(), poison.len(), "each poison record is dead-lettered once");
    dead.sort_by_key(|m| m.key().map(<[u8]>::to_vec));
    for ((key, bytes, code), message) in poison.iter().zip(&dead) {
        let header = |name: &str| header_text(message, name);
        assert_eq!(message.key(), Some(key.as_bytes()));
        assert_eq!(message.payload(), Some(bytes.as_slice()), "original bytes kept");
        assert_eq!(header("error.code").as_deref(), Some(*code));
        assert!(header("error.message").is_some_and(|m| !m.is_empty()));
        assert_eq!(header("source.topic").as_deref(), Some(topics.input.as_str()));
        assert!(header("source.partition").is_some_and(|p| p.parse::<i32>().is_ok()));
        assert!(header("source.offset").is_some_and(|o| o.parse::<i64>().is_ok()));
    }
}

fn header_text(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_every_customer_has_the_state_it_had_before() {
    let topics = topics("restore").await;
    let first_half = simulated(20_000, 24, 0.0);
    let (before, _) = fold(&first_half);
    produce_all(&topics.input, first_half.clone()).await;
    let service = counter(&topics, "restore", "restore-1");
    committed_when_complete(&topics.output, total(&before), Duration::from_secs(60)).await;
    let status =
        tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20))).await.unwrap();
    assert!(status.success());

    // One more event for every customer the counter remembers: each must continue its count.
    let more: Vec<(String, Vec<u8>)> = before
        .iter()
        .filter(|(_, records)| records.last().is_some_and(Option::is_some))
        .map(|(customer, _)| {
            let event = TouchpointEvent {
                event_id: format!("after-restart-{customer}"),
                customer_id: customer.clone(),
                occurred_at: Utc::now(),
                channel: Channel::Web,
                source: None,
                payload: EventPayload::PageViewed { url: "https://shop.example".into() },
                context: Default::default(),
            };
            (customer.clone(), encode_event(&event).unwrap())
        })
        .collect();
    let mut all = first_half;
    all.extend(more.iter().cloned());
    let (expected, _) = fold(&all);
    produce_all(&topics.input, more).await;
    let _restarted = counter(&topics, "restore", "restore-2");
    let actual = committed_when_complete(&topics.output, total(&expected), Duration::from_secs(60)).await;
    assert_exactly_once(&expected, &actual);
}

/// The value of a metric line that starts with `prefix` (`name{labels}`), if exposed.
fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|line| line.starts_with(prefix)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_tell_what_happened() {
    let topics = topics("admin").await;
    let mut input = simulated(5_000, 25, 0.01);
    input.push(("c-000001".into(), b"not avro".to_vec()));
    let (expected, _) = fold(&input);
    produce_all(&topics.input, input).await;
    let port = free_port();
    let service = counter_with_admin(&topics, "admin", "admin", port);
    committed_when_complete(&topics.output, total(&expected), Duration::from_secs(60)).await;

    let body = tokio::task::spawn_blocking(move || {
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
        wait_until("ready", Duration::from_secs(10), || {
            http_get(port, "/readyz").is_some_and(|r| r.0 == 200)
        });
        let mut body = String::new();
        // Lag comes from librdkafka statistics, every 5 s.
        wait_until("lag is reported", Duration::from_secs(15), || {
            body = http_get(port, "/metrics").expect("metrics").1;
            body.contains("omnistream_consumer_lag{")
        });
        let status = service.terminate(Duration::from_secs(20));
        assert!(status.success());
        body
    })
    .await
    .unwrap();
    let applied = metric(&body, "omnistream_records_processed_total{outcome=\"applied\"}").unwrap_or(0.0);
    assert_eq!(applied as usize, total(&expected), "{body}");
    assert!(metric(&body, "omnistream_records_processed_total{outcome=\"duplicate\"}").unwrap_or(0.0) > 0.0);
    assert!(metric(&body, "omnistream_dlq_records_total{error_code=\"malformed\"}").unwrap_or(0.0) >= 1.0);
    assert!(metric(&body, "omnistream_transactions_total{outcome=\"committed\"}").unwrap_or(0.0) >= 1.0);
    assert!(metric(&body, "omnistream_end_to_end_latency_seconds_count").unwrap_or(0.0) > 0.0);
    assert!(body.contains("omnistream_build_info{service=\"event-counter\""), "{body}");
    assert_eq!(metric(&body, "omnistream_restoring_partitions"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn timers_fire_on_wall_clock_without_new_events_and_survive_a_restart() {
    let topics = topics("timers").await;
    let input = simulated(300, 26, 0.0);
    let (counts, _) = fold(&input);
    let customers: Vec<&String> =
        counts.iter().filter(|(_, r)| r.last().is_some_and(Option::is_some)).map(|(c, _)| c).collect();
    produce_all(&topics.input, input.clone()).await;
    // Stopped before the idle period ends: the restarted instance must fire the restored timers.
    let first = counter_with_args(
        &topics,
        "timers",
        "timers-1",
        0,
        &["--idle-after-ms", "4000", "--timer-interval-ms", "200"],
    );
    committed_when_complete(&topics.output, total(&counts), Duration::from_secs(60)).await;
    assert!(
        tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .success()
    );
    let _second = counter_with_args(
        &topics,
        "timers",
        "timers-2",
        0,
        &["--idle-after-ms", "4000", "--timer-interval-ms", "200"],
    );

    let expected_records = total(&counts) + customers.len();
    let actual = committed_when_complete(&topics.output, expected_records, Duration::from_secs(60)).await;
    for customer in customers {
        let records = &actual[customer.as_str()];
        let idle: Vec<&CountRecord> = records.iter().flatten().filter(|r| r.idle).collect();
        assert_eq!(idle.len(), 1, "one idle report for {customer}");
        let last_count = counts[customer.as_str()].last().unwrap().as_ref().unwrap().count;
        assert_eq!(idle[0].count, last_count, "the idle report carries the restored count");
        assert!(records.last().unwrap().as_ref().unwrap().idle, "the idle report comes last");
    }
    assert_eq!(total(&actual), expected_records);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_with_the_same_instance_id_is_fenced_and_exits_non_zero() {
    let topics = topics("fencing").await;
    let input = simulated(30_000, 27, 0.0);
    let (expected, _) = fold(&input);
    let producing = produce_at_rate(topics.input.clone(), input, 5_000);
    let mut zombie = counter(&topics, "same-id", "fencing-zombie");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A second process with the same transactional id (a restart whose predecessor still runs).
    let mut successor = counter(&topics, "same-id", "fencing-successor");
    let status = tokio::task::spawn_blocking(move || {
        wait_until("the zombie exits", Duration::from_secs(60), || !zombie.is_running());
        zombie.terminate(Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert!(!status.success(), "a fenced instance exits non-zero, got {status}");
    producing.await.expect("producer task");
    let actual = committed_when_complete(&topics.output, total(&expected), Duration::from_secs(120)).await;
    assert!(successor.is_running());
    assert_exactly_once(&expected, &actual);
}
