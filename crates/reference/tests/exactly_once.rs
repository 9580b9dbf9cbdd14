//! The runtime's exactly-once guarantees, proven on the real broker with the event counter: its
//! committed output (read_committed) must equal the pure fold of its input, whatever happens to
//! the process. A lost event shows as a gap in a customer's counts, a duplicate as a repeat.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::Utc;
use omnistream_model::{Channel, EventPayload, TouchpointEvent, encode_event};
use omnistream_reference::{CountRecord, CounterState, EventCounter};
use omnistream_runtime::Entry;
use omnistream_testkit::pipeline::{
    OutputsByKey, ServiceTopics, assert_same_outputs, committed_outputs, fold, kill_repeatedly,
    output_may_be_complete, produce_at_rate, records_in, simulated_input,
};
use omnistream_testkit::{
    ServiceProcess, batch_codecs, client_config, consume_committed, free_port, http_get, produce_all,
    read_committed_to_end, unique_topic, wait_until,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const CUSTOMERS: u32 = 2_000;

async fn topics(label: &str) -> ServiceTopics {
    ServiceTopics::create(label, 1).await
}

fn counter_with_args(
    topics: &ServiceTopics,
    instance: &str,
    label: &str,
    admin_port: u16,
    extra: &[&str],
) -> ServiceProcess {
    let mut args = topics.runtime_args(instance, admin_port);
    args.extend(["--output-topic".to_owned(), topics.outputs[0].clone()]);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::spawn(
        env!("CARGO_BIN_EXE_event-counter"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    )
}

fn counter(topics: &ServiceTopics, instance: &str, label: &str) -> ServiceProcess {
    counter_with_args(topics, instance, label, 0, &[])
}

/// The pure fold of the counter over `input`, keyed by its output topic in `topics`.
fn expected(topics: &ServiceTopics, input: &[(String, Vec<u8>)]) -> (OutputsByKey, usize) {
    fold(&EventCounter { idle_after: None }, &topics.outputs, input)
}

fn count_record(bytes: &[u8]) -> CountRecord {
    serde_json::from_slice(bytes).expect("a count record")
}

async fn assert_exactly_once(
    topics: &ServiceTopics,
    expected: &OutputsByKey,
    deadline: Duration,
) -> OutputsByKey {
    let output = &topics.outputs[0];
    let actual = committed_outputs(output, records_in(expected, output), deadline).await;
    assert_same_outputs(expected, &actual, output, count_record);
    actual
}

fn simulated(events: usize, seed: u64, malformed_share: f64) -> Vec<(String, Vec<u8>)> {
    simulated_input(events, CUSTOMERS, seed, malformed_share)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let topics = topics("crash").await;
    let input = simulated(200_000, 21, 0.002);
    let (expected, rejected) = expected(&topics, &input);
    let producing = produce_at_rate(topics.input.clone(), input, 4_000);

    let complete_at = records_in(&expected, &topics.outputs[0]);
    let kills = kill_repeatedly(6, &topics.outputs[0], complete_at, |run| {
        counter(&topics, "crash-0", &format!("crash-run-{run}"))
    })
    .await;
    assert!(kills >= 5, "only {kills} kills happened mid-stream");
    producing.await.expect("producer task");

    let mut last = counter(&topics, "crash-0", "crash-final");
    assert_exactly_once(&topics, &expected, Duration::from_secs(180)).await;
    assert!(last.is_running(), "the last run did not crash");
    let dead_lettered = consume_committed(&topics.dlq, rejected + 1, Duration::from_secs(10)).len();
    assert_eq!(dead_lettered, rejected, "every malformed record is in the DLQ exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_joins_and_the_first_leaves_with_sigterm_exactly_once() {
    let topics = topics("rebalance").await;
    let input = simulated(60_000, 22, 0.0);
    let (expected, _) = expected(&topics, &input);
    let producing = produce_at_rate(topics.input.clone(), input, 6_000);

    let first = counter(&topics, "rebalance-a", "rebalance-a");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second_admin = free_port();
    let mut second = counter_with_args(&topics, "rebalance-b", "rebalance-b", second_admin, &[]);
    // Ready: the second has partitions of its own, restored, before the first leaves.
    tokio::task::spawn_blocking(move || {
        wait_until("the second instance is ready", Duration::from_secs(30), || {
            http_get(second_admin, "/readyz").is_some_and(|(status, _)| status == 200)
        });
    })
    .await
    .unwrap();
    assert!(
        !output_may_be_complete(&topics.outputs[0], records_in(&expected, &topics.outputs[0])),
        "still mid-stream"
    );
    let status = tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(20))).await.unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    producing.await.expect("producer task");

    assert_exactly_once(&topics, &expected, Duration::from_secs(120)).await;
    assert!(second.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dlq_with_their_headers_and_good_ones_are_processed() {
    let topics = topics("poison").await;
    let good = simulated(1_000, 23, 0.0);
    // Keys sort in the order the poison is produced, to match DLQ records to their cause.
    let poison: Vec<(String, Vec<u8>, &str)> = vec![
        ("c-000001".into(), b"\x01\x02garbage".to_vec(), "malformed"),
        ("c-000002".into(), br#"{"event_id":"x","type":"page_viewed"}"#.to_vec(), "malformed"),
        ("c-000003".into(), vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9], "unknown_schema"),
        // The Confluent wire format (magic 0, schema id 7) with no registry to tell the id.
        ("c-000004".into(), vec![0, 0, 0, 0, 7, 2, 4], "unknown_schema"),
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
    let (expected, rejected) = expected(&topics, &input);
    assert_eq!(rejected, poison.len(), "the fold rejects exactly the poison");
    produce_all(&topics.input, input).await;

    let mut service = counter(&topics, "poison", "poison");
    assert_exactly_once(&topics, &expected, Duration::from_secs(60)).await;
    let mut dead = consume_committed(&topics.dlq, poison.len() + 1, Duration::from_secs(5));
    assert!(service.is_running(), "poison never crashes the service");
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

/// Customers the counter still remembers at the end of `outputs` (their last output is a count).
fn remembered_customers(outputs: &OutputsByKey) -> Vec<String> {
    outputs
        .iter()
        .filter(|(_, values)| values.last().is_some_and(Option::is_some))
        .map(|((_, c), _)| c.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_every_customer_has_the_state_it_had_before() {
    let topics = topics("restore").await;
    let first_half = simulated(20_000, 24, 0.0);
    let (before, _) = expected(&topics, &first_half);
    produce_all(&topics.input, first_half.clone()).await;
    let service = counter(&topics, "restore", "restore-1");
    committed_outputs(&topics.outputs[0], records_in(&before, &topics.outputs[0]), Duration::from_secs(60))
        .await;
    let status =
        tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20))).await.unwrap();
    assert!(status.success());
    // By default the changelog is zstd (CHANGELOG_COMPRESSION) and the outputs lz4 (COMPRESSION):
    // the restore below reads zstd. librdkafka sends a batch that compression would lengthen
    // uncompressed (`none`).
    match (batch_codecs(&topics.changelog), batch_codecs(&topics.outputs[0])) {
        (Some(changelog), Some(counts)) => {
            let only = |codecs: &std::collections::BTreeMap<String, usize>, codec: &str| {
                codecs.contains_key(codec) && codecs.keys().all(|c| c == codec || c == "none")
            };
            assert!(only(&changelog, "zstd"), "the changelog's batches: {changelog:?}");
            assert!(only(&counts, "lz4"), "the output's batches: {counts:?}");
        }
        _ => eprintln!("codecs not checked: the broker of KAFKA_BOOTSTRAP_SERVERS keeps its logs elsewhere"),
    }

    // One more event for every customer the counter remembers: each must continue its count.
    let more: Vec<(String, Vec<u8>)> = remembered_customers(&before)
        .into_iter()
        .map(|customer| page_view(&format!("after-restart-{customer}"), &customer))
        .collect();
    let mut all = first_half;
    all.extend(more.iter().cloned());
    let (expected, _) = expected(&topics, &all);
    produce_all(&topics.input, more).await;
    let _restarted = counter(&topics, "restore", "restore-2");
    assert_exactly_once(&topics, &expected, Duration::from_secs(60)).await;
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
    let (expected, _) = expected(&topics, &input);
    produce_all(&topics.input, input).await;
    let port = free_port();
    let service = counter_with_args(&topics, "admin", "admin", port, &[]);
    assert_exactly_once(&topics, &expected, Duration::from_secs(60)).await;

    let body = tokio::task::spawn_blocking(move || {
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
        wait_until("ready", Duration::from_secs(10), || {
            http_get(port, "/readyz").is_some_and(|r| r.0 == 200)
        });
        let mut body = String::new();
        // Lag comes from librdkafka statistics, every 5 s: reported per partition, and 0 once
        // everything is processed.
        wait_until("lag is reported, and 0", Duration::from_secs(20), || {
            body = http_get(port, "/metrics").expect("metrics").1;
            let lags: Vec<&str> =
                body.lines().filter(|l| l.starts_with("omnistream_consumer_lag{")).collect();
            !lags.is_empty() && lags.iter().all(|line| line.ends_with(" 0"))
        });
        assert!(service.terminate(Duration::from_secs(20)).success());
        body
    })
    .await
    .unwrap();
    let applied = metric(&body, "omnistream_records_processed_total{outcome=\"applied\"}").unwrap_or(0.0);
    assert_eq!(applied as usize, records_in(&expected, &topics.outputs[0]), "{body}");
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
    let (counts, _) = expected(&topics, &input);
    let customers = remembered_customers(&counts);
    produce_all(&topics.input, input).await;
    // Stopped before the idle period ends: the restarted instance must fire the restored timers.
    let idle_after = Duration::from_secs(12);
    let idle = ["--idle-after-ms", &idle_after.as_millis().to_string(), "--timer-interval-ms", "200"]
        .map(String::from);
    let idle: Vec<&str> = idle.iter().map(String::as_str).collect();
    let started = Instant::now();
    let first = counter_with_args(&topics, "timers", "timers-1", 0, &idle);
    let output = &topics.outputs[0];
    let counted = records_in(&counts, output);
    let before = {
        let output = output.clone();
        tokio::task::spawn_blocking(move || consume_committed(&output, counted, Duration::from_secs(60)))
            .await
            .unwrap()
    };
    assert_eq!(before.len(), counted, "every count is committed");
    assert!(before.iter().all(|m| !count_record(m.payload().unwrap()).idle), "no idle report yet");
    assert!(started.elapsed() < idle_after / 2, "the first instance stops well before its timers are due");
    assert!(
        tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .success()
    );
    let _second = counter_with_args(&topics, "timers", "timers-2", 0, &idle);

    let expected_records = records_in(&counts, output) + customers.len();
    let actual = committed_outputs(output, expected_records, Duration::from_secs(60)).await;
    for customer in customers {
        let key = (output.clone(), customer.clone());
        let records: Vec<CountRecord> = actual[&key].iter().flatten().map(|v| count_record(v)).collect();
        let idle: Vec<&CountRecord> = records.iter().filter(|r| r.idle).collect();
        assert_eq!(idle.len(), 1, "one idle report for {customer}");
        let last_count = count_record(counts[&key].last().unwrap().as_ref().unwrap()).count;
        assert_eq!(idle[0].count, last_count, "the idle report carries the restored count");
        assert!(records.last().unwrap().idle, "the idle report comes last");
    }
    assert_eq!(records_in(&actual, output), expected_records);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_with_the_same_instance_id_is_fenced_and_exits_non_zero() {
    let topics = topics("fencing").await;
    let input = simulated(30_000, 27, 0.0);
    let (expected, _) = expected(&topics, &input);
    let producing = produce_at_rate(topics.input.clone(), input, 5_000);
    let mut zombie = counter(&topics, "same-id", "fencing-zombie");
    let zombie_log = zombie.log.clone();
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
    let log = std::fs::read_to_string(&zombie_log).expect("zombie log");
    assert!(log.contains("fatal transactional error"), "it stopped because it was fenced: {log}");
    producing.await.expect("producer task");
    assert_exactly_once(&topics, &expected, Duration::from_secs(120)).await;
    assert!(successor.is_running());
}

/// A changelog transaction still undecided when a partition is restored (its commit marker not
/// written yet: on three nodes `make chaos` saw a changelog's marker come after the offsets'
/// one) is waited for, and its state installed; reading to the first end of partition (the last
/// stable offset) would start the customer over from nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_waits_for_a_changelog_transaction_not_yet_decided() {
    let topics = topics("undecided").await;
    let customer = "c-undecided";
    // A predecessor's last transaction: the customer's count at 41, not committed yet.
    let writer: BaseProducer = client_config()
        .set("transactional.id", unique_topic("undecided-writer"))
        .set("partitioner", "murmur2_random")
        .create()
        .expect("a transactional producer");
    writer.init_transactions(Duration::from_secs(30)).expect("init");
    writer.begin_transaction().expect("begin");
    let entry = Entry {
        recent: VecDeque::new(),
        state: Some(CounterState { count: 41, idle_at: None }),
        merged_into: None,
        unmarked: Default::default(),
    };
    let mut value = Vec::new();
    omnistream_runtime::changelog::encode::<EventCounter>(
        &entry,
        omnistream_runtime::IdsLayout::Bytes,
        &mut value,
    );
    writer.send(BaseRecord::to(&topics.changelog).key(customer).payload(&value)).expect("queued");
    writer.flush(Duration::from_secs(10)).expect("flushed");

    let port = free_port();
    let service = counter_with_args(&topics, "undecided", "undecided", port, &[]);
    let restoring = tokio::task::spawn_blocking(move || {
        wait_until("the counter restores", Duration::from_secs(30), || {
            http_get(port, "/metrics").is_some_and(|(_, body)| {
                metric(&body, "omnistream_restoring_partitions").is_some_and(|n| n > 0.0)
            })
        });
        std::thread::sleep(Duration::from_secs(2));
        http_get(port, "/readyz").map(|r| r.0)
    });
    assert_ne!(restoring.await.unwrap(), Some(200), "ready before the transaction was decided");
    writer.commit_transaction(Duration::from_secs(30)).expect("commit");
    produce_all(&topics.input, [page_view("after-restore", customer)]).await;

    let outputs = consume_committed(&topics.outputs[0], 1, Duration::from_secs(60));
    let counts: Vec<u64> =
        outputs.iter().filter_map(|m| m.payload()).map(|p| count_record(p).count).collect();
    assert_eq!(counts, vec![42], "the restored count (41) plus the new event");
    assert!(
        tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20)))
            .await
            .unwrap()
            .success()
    );
}

/// A transaction whose input offsets commit while its changelog records and outputs abort (what
/// `make chaos` saw a three-node cluster do once) resumes from the changelog's position: the
/// events whose effects were aborted are counted again. An offset set by an operator (without
/// the runtime's offset metadata) is followed. Counts worked out by hand: one per event.
#[tokio::test(flavor = "multi_thread")]
async fn offsets_committed_without_their_changelog_records_resume_from_the_changelogs_position() {
    let topics = topics("split").await;
    let customer = "c-split";
    let views =
        |range: std::ops::RangeInclusive<u32>| range.map(|n| page_view(&format!("split-{n}"), customer));
    let counts = |expected: usize| {
        let outputs = consume_committed(&topics.outputs[0], expected, Duration::from_secs(60));
        outputs.iter().filter_map(|m| m.payload()).map(|p| count_record(p).count).collect::<Vec<u64>>()
    };
    let stop = |service: ServiceProcess| async move {
        let status = tokio::task::spawn_blocking(move || service.terminate(Duration::from_secs(20))).await;
        assert!(status.unwrap().success());
    };

    let first = counter(&topics, "split-1", "split-1");
    produce_all(&topics.input, views(1..=3)).await;
    assert_eq!(counts(3), vec![1, 2, 3]);
    stop(first).await;

    // Offsets 3 and 4 committed as the runtime's transactions commit them, with no changelog
    // record and no output: the split.
    produce_all(&topics.input, views(4..=5)).await;
    commit_group_offset(&topics, 5, "omnistream: position in the changelog");
    let port = free_port();
    let second = counter_with_args(&topics, "split-2", "split-2", port, &[]);
    produce_all(&topics.input, views(6..=6)).await;
    assert_eq!(counts(6), vec![1, 2, 3, 4, 5, 6], "events 4 and 5 counted again");
    let resumed =
        http_get(port, "/metrics").and_then(|(_, body)| metric(&body, "omnistream_resumed_from_changelog"));
    assert_eq!(resumed, Some(1.0));
    stop(second).await;

    // An operator skips offsets 6 and 7.
    produce_all(&topics.input, views(7..=8)).await;
    commit_group_offset(&topics, 8, "");
    let third = counter(&topics, "split-3", "split-3");
    produce_all(&topics.input, views(9..=9)).await;
    assert_eq!(counts(7), vec![1, 2, 3, 4, 5, 6, 7], "events 7 and 8 skipped");
    stop(third).await;
}

/// Commits `next` as the group's offset of the input's partition 0, with `metadata`, once the
/// group is empty.
fn commit_group_offset(topics: &ServiceTopics, next: i64, metadata: &str) {
    let consumer: BaseConsumer = client_config().set("group.id", &topics.group).create().expect("a consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topics.input, 0, Offset::Offset(next)).expect("an offset");
    for mut element in offsets.elements() {
        element.set_metadata(metadata);
    }
    wait_until("the group takes the offset", Duration::from_secs(30), || {
        consumer.commit(&offsets, CommitMode::Sync).is_ok()
    });
}

/// A page view of `customer`, keyed for the input topic.
fn page_view(event_id: &str, customer: &str) -> (String, Vec<u8>) {
    let event = TouchpointEvent {
        event_id: event_id.into(),
        customer_id: customer.into(),
        occurred_at: Utc::now(),
        channel: Channel::Web,
        source: None,
        payload: EventPayload::PageViewed { url: "https://shop.example/".into() },
        context: Default::default(),
        identifiers: Vec::new(),
    };
    (customer.to_owned(), encode_event(&event).expect("encodes"))
}

/// A commit that timed out is resumed, not given up: librdkafka goes on with it in the background
/// and a new call completes it (what keeps a coordinator failover from committing it in part).
/// The timeout here comes from a record whose topic does not exist yet (the broker creates no
/// topic by itself): the commit's flush cannot finish until the topic is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_that_timed_out_is_resumed_and_commits_once() {
    let existing = omnistream_testkit::fresh_topic("resume-existing", 1).await;
    let missing = unique_topic("resume-missing");
    let producer: BaseProducer = client_config()
        .set("transactional.id", unique_topic("resume-writer"))
        .set("transaction.timeout.ms", "60000")
        .create()
        .expect("a transactional producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init");
    producer.begin_transaction().expect("begin");
    for topic in [&existing, &missing] {
        producer.send(BaseRecord::to(topic).key("c-1").payload("once")).expect("queued");
    }

    let committing = tokio::task::spawn_blocking(move || {
        let health = omnistream_runtime::server::Health::new("the test");
        let mut resumes = 0;
        let result = omnistream_runtime::commit_resuming(
            &producer,
            &health,
            Duration::from_secs(2),
            Duration::from_secs(5),
            10,
            |_| resumes += 1,
        );
        (result, resumes)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    omnistream_testkit::create_test_topics(&[omnistream_runtime::admin::TopicRequest::plain(&missing, 1, 1)])
        .await;
    let (result, resumes) = committing.await.expect("the commit thread");

    result.expect("the resumed commit succeeds");
    assert!(resumes >= 1, "the first call should have timed out while the topic was missing");
    for topic in [&existing, &missing] {
        let payloads: Vec<_> =
            read_committed_to_end(topic).iter().map(|m| m.payload().unwrap_or_default().to_vec()).collect();
        assert_eq!(payloads, [b"once".to_vec()], "{topic}: the record committed exactly once");
    }
}

/// A service whose output topic does not exist stops at once, naming it, rather than retrying a
/// transaction that can never commit (the broker creates no topic by itself).
#[tokio::test(flavor = "multi_thread")]
async fn given_a_missing_output_topic_then_the_service_exits_1_naming_it() {
    let mut topics = topics("missing-output").await;
    let missing = unique_topic("missing-output-never-created");
    topics.outputs[0].clone_from(&missing);
    let mut service = counter(&topics, "a", "exactly-once-missing-output");
    let mut code = None;
    wait_until("the service exits", Duration::from_secs(60), || {
        code = service.exit_code();
        code.is_some()
    });
    assert_eq!(code, Some(1), "see {}", service.log.display());
    let log = std::fs::read_to_string(&service.log).expect("log");
    assert!(log.contains(&format!("topic {missing} does not exist")), "{log}");
}
