//! Exactly-once test helpers shared by every service: topics for one service instance, its runtime
//! flags, simulated input, the pure fold of a processor over that input (with the runtime's
//! dedupe), and the committed outputs to compare it with.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use omnistream_model::{EventPayload, TouchpointEvent, decode_and_validate};
use omnistream_runtime::admin::TopicRequest;
use omnistream_runtime::{OutputRecord, Processor, event_id_hash};
use omnistream_sim::{SimConfig, Simulator};
use rdkafka::message::Message;

use crate::{consume_committed, create_test_topics, unique_topic, wait_until};

/// Partitions of every pipeline test topic.
pub const PARTITIONS: i32 = 6;
/// The runtime's default `--dedupe-window`, which the fold mirrors.
pub const DEDUPE_WINDOW: usize = 64;

/// The topics and group of one service under test.
#[derive(Debug, Clone)]
pub struct ServiceTopics {
    pub group: String,
    pub input: String,
    pub dlq: String,
    pub changelog: String,
    /// The service's output topics, in the order of its processor's `OUTPUTS`.
    pub outputs: Vec<String>,
}

impl ServiceTopics {
    /// Creates fresh topics: plain input, DLQ and outputs, a compacted changelog.
    pub async fn create(label: &str, outputs: usize) -> Self {
        let topics = Self {
            group: unique_topic(&format!("{label}-group")),
            input: unique_topic(&format!("{label}-input")),
            dlq: unique_topic(&format!("{label}-dlq")),
            changelog: unique_topic(&format!("{label}-state")),
            outputs: (0..outputs).map(|i| unique_topic(&format!("{label}-out{i}"))).collect(),
        };
        let mut requests = vec![
            TopicRequest::events(&topics.input, PARTITIONS, 1),
            TopicRequest::plain(&topics.dlq, PARTITIONS, 1),
            TopicRequest::compacted(&topics.changelog, PARTITIONS, 1),
        ];
        requests.extend(topics.outputs.iter().map(|topic| TopicRequest::plain(topic, PARTITIONS, 1)));
        create_test_topics(&requests).await;
        topics
    }

    /// The runtime flags of an instance reading these topics (outputs are the service's own).
    pub fn runtime_args(&self, instance: &str, admin_port: u16) -> Vec<String> {
        crate::RuntimeFlags {
            input: &self.input,
            dlq: &self.dlq,
            changelog: &self.changelog,
            group: &self.group,
            instance,
            admin_addr: &format!("127.0.0.1:{admin_port}"),
            session_timeout_ms: Some(6_000),
        }
        .args()
    }
}

/// Simulated input as (key, Avro bytes), with 1 % producer retries and `malformed_share` bad
/// records, event times in the recent past.
pub fn simulated_input(
    events: usize,
    customers: u32,
    seed: u64,
    malformed_share: f64,
) -> Vec<(String, Vec<u8>)> {
    let config = SimConfig {
        customers,
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

/// Per (topic, key), the output values in order (`None` is a tombstone).
pub type OutputsByKey = HashMap<(String, String), Vec<Option<Vec<u8>>>>;

/// The pure fold: `processor` applied to the valid input in order, with the runtime's dedupe, as
/// of now, each output written to the topic `topics` names for its role (in `P::OUTPUTS`
/// order). Returns its outputs and how many input records are invalid (the DLQ's share).
pub fn fold<P: Processor<Input = TouchpointEvent>>(
    processor: &P,
    topics: &[impl AsRef<str>],
    input: &[(String, Vec<u8>)],
) -> (OutputsByKey, usize) {
    let now = Utc::now();
    fold_at(processor, topics, input.iter().map(|(key, bytes)| (key.as_str(), bytes.as_slice(), now)))
}

/// The pure fold over `topic` as the broker holds it: every record applied as of its append time
/// (the partition clock, SPEC 4), in partition and offset order. No timer fires: the tests that
/// use it keep every timer beyond their run.
pub fn fold_appended<P: Processor<Input = TouchpointEvent>>(
    processor: &P,
    topics: &[impl AsRef<str>],
    topic: &str,
) -> (OutputsByKey, usize) {
    let records = crate::read_committed_to_end(topic);
    let input = records.iter().filter_map(|record| {
        let key = std::str::from_utf8(record.key()?).ok()?;
        let appended = DateTime::from_timestamp_millis(record.timestamp().to_millis()?)?;
        Some((key, record.payload()?, appended))
    });
    fold_at(processor, topics, input)
}

fn fold_at<'a, P: Processor<Input = TouchpointEvent>>(
    processor: &P,
    topics: &[impl AsRef<str>],
    input: impl Iterator<Item = (&'a str, &'a [u8], DateTime<Utc>)>,
) -> (OutputsByKey, usize) {
    assert_eq!(topics.len(), P::OUTPUTS.len(), "a topic for each of {:?}", P::OUTPUTS);
    let topic_of = |role: &str| {
        let index = P::OUTPUTS.iter().position(|r| *r == role).expect("a declared output role");
        topics[index].as_ref().to_owned()
    };
    let mut customers: HashMap<String, (VecDeque<u64>, Option<P::State>)> = HashMap::new();
    let mut outputs = OutputsByKey::new();
    let mut rejected = 0;
    for (key, bytes, now) in input {
        let event = match decode_and_validate(bytes, now) {
            Ok(event) if event.customer_id == key => event,
            _ => {
                rejected += 1;
                continue;
            }
        };
        let (recent, state) = customers.entry(event.customer_id.clone()).or_default();
        let hash = event_id_hash(&event.event_id);
        // Not read: ignored unless it makes a new customer (an erased one keeps its ids here).
        let new_customer = state.is_none() && recent.is_empty();
        if recent.contains(&hash) || (!processor.reads(&event) && !new_customer) {
            continue;
        }
        if processor.check_limits(state.as_ref(), &event, now).is_err() {
            rejected += 1;
            continue;
        }
        recent.push_back(hash);
        if recent.len() > DEDUPE_WINDOW {
            recent.pop_front();
        }
        for output in processor.apply(state, &event, now) {
            let value = output.value.map(|record| record.encode());
            outputs.entry((topic_of(output.role), output.key)).or_default().push(value);
        }
        // After an erasure the runtime's marker still drops retries of the customer's ids (SPEC
        // 4.5): their dedupe ids stay.
        if state.is_none() && !matches!(event.payload, EventPayload::ErasureRequested) {
            customers.remove(&event.customer_id);
        }
    }
    (outputs, rejected)
}

/// How many records the fold wrote to `topic`.
pub fn records_in(outputs: &OutputsByKey, topic: &str) -> usize {
    outputs.iter().filter(|((t, _), _)| t == topic).map(|(_, values)| values.len()).sum()
}

/// Waits (off the async runtime) until `records` outputs are committed to `topic`, then reads them
/// all, one more than expected so that an extra (duplicated) record would be read too.
pub async fn committed_outputs(topic: &str, records: usize, deadline: Duration) -> OutputsByKey {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        wait_until(&format!("{records} outputs are committed to {topic}"), deadline, || {
            consume_committed(&topic, records, Duration::from_secs(5)).len() >= records
        });
        let mut outputs = OutputsByKey::new();
        for message in consume_committed(&topic, records + 1, Duration::from_secs(10)) {
            let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf-8 key");
            outputs.entry((topic.clone(), key)).or_default().push(message.payload().map(<[u8]>::to_vec));
        }
        outputs
    })
    .await
    .expect("reader task")
}

/// Asserts that `actual` holds exactly the fold's records for `topic`, compared after `decode`
/// (Avro maps have no byte order, so equal records need not be equal bytes).
pub fn assert_same_outputs<T: PartialEq + std::fmt::Debug>(
    expected: &OutputsByKey,
    actual: &OutputsByKey,
    topic: &str,
    decode: impl Fn(&[u8]) -> T,
) {
    let decoded = |values: &Vec<Option<Vec<u8>>>| -> Vec<Option<T>> {
        values.iter().map(|value| value.as_deref().map(&decode)).collect()
    };
    for (key, values) in expected.iter().filter(|((t, _), _)| t == topic) {
        let want = decoded(values);
        let got = actual.get(key).map(decoded).unwrap_or_default();
        if got != want {
            let first_difference =
                got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
            panic!(
                "outputs of {} on {topic} differ from the fold: {} records, expected {}; first difference at #{first_difference}:\n got: {:?}\nwant: {:?}",
                key.1,
                got.len(),
                want.len(),
                got.get(first_difference),
                want.get(first_difference),
            );
        }
    }
    assert_eq!(
        records_in(actual, topic),
        records_in(expected, topic),
        "no output beyond the fold on {topic}"
    );
}

/// Asserts that `actual` holds, for `topic`, records of each key the fold wrote and no other:
/// the fold's records in its order, none twice (a subsequence: a transaction writes only its last
/// record per key of a latest-per-key role, `COALESCE_OUTPUTS`), ending with the fold's last.
/// Compared after `decode`, as [`assert_same_outputs`].
pub fn assert_latest_outputs<T: PartialEq + std::fmt::Debug>(
    expected: &OutputsByKey,
    actual: &OutputsByKey,
    topic: &str,
    decode: impl Fn(&[u8]) -> T,
) {
    let decoded = |values: &Vec<Option<Vec<u8>>>| -> Vec<Option<T>> {
        values.iter().map(|value| value.as_deref().map(&decode)).collect()
    };
    for (key, values) in expected.iter().filter(|((t, _), _)| t == topic) {
        let want = decoded(values);
        let got = actual.get(key).map(decoded).unwrap_or_default();
        let mut rest = want.iter();
        for (n, record) in got.iter().enumerate() {
            assert!(
                rest.any(|written| written == record),
                "record #{n} of {} on {topic} is not one the fold wrote after the record before it ({} records, the fold {}):\n got: {record:?}",
                key.1,
                got.len(),
                want.len(),
            );
        }
        assert_eq!(got.last(), want.last(), "the latest record of {} on {topic}", key.1);
    }
    for (key, _) in actual.iter().filter(|((t, _), _)| t == topic) {
        assert!(expected.contains_key(key), "{} has records on {topic} but the fold wrote none", key.1);
    }
    eprintln!(
        "{topic}: {} records committed for the fold's {}",
        records_in(actual, topic),
        records_in(expected, topic)
    );
}

/// Waits (off the async runtime) until `group` committed every one of `input_records` records of
/// `input`, then reads `topic`'s committed records: what a latest-per-key output holds once the
/// service is done, however many records its transactions coalesced.
pub async fn committed_outputs_when_done(
    topic: &str,
    group: &str,
    input: &str,
    input_records: usize,
    deadline: Duration,
) -> OutputsByKey {
    let (topic, group, input) = (topic.to_owned(), group.to_owned(), input.to_owned());
    tokio::task::spawn_blocking(move || {
        wait_until(&format!("{group} committed {input_records} records of {input}"), deadline, || {
            crate::committed_sum(&group, &input) >= input_records as i64
        });
        // The coordinator writes the output partitions' commit markers apart from the offsets':
        // a moment for the last ones to land.
        std::thread::sleep(Duration::from_secs(1));
        let mut outputs = OutputsByKey::new();
        for message in crate::read_committed_to_end(&topic) {
            let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf-8 key");
            outputs.entry((topic.clone(), key)).or_default().push(message.payload().map(<[u8]>::to_vec));
        }
        outputs
    })
    .await
    .expect("reader task")
}

/// Produces `records` at about `rate` per second in the background.
pub fn produce_at_rate(
    topic: String,
    records: Vec<(String, Vec<u8>)>,
    rate: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = crate::producer();
        let chunk = (rate / 10).max(1);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        for part in records.chunks(chunk) {
            ticker.tick().await;
            crate::produce_with(&producer, &topic, part.to_vec()).await;
        }
    })
}

/// Starts the service `runs` times; each run is SIGKILLed at a random moment after its output
/// topic grew by 500 records (so it made progress). Returns how many kills happened before the
/// output could be complete (`complete_at` records, transaction markers included).
pub async fn kill_repeatedly(
    runs: usize,
    output: &str,
    complete_at: usize,
    spawn: impl FnMut(usize) -> crate::ServiceProcess,
) -> usize {
    kill_repeatedly_judged(runs, output, || output_may_be_complete(output, complete_at), spawn).await
}

/// [`kill_repeatedly`], judging whether the output may be complete at a kill by
/// `may_be_complete` (a kill is mid-stream when it says `false`).
pub async fn kill_repeatedly_judged(
    runs: usize,
    output: &str,
    may_be_complete: impl Fn() -> bool,
    mut spawn: impl FnMut(usize) -> crate::ServiceProcess,
) -> usize {
    use rand::Rng;
    let mut kills_mid_stream = 0;
    for run in 0..runs {
        let service = spawn(run);
        let topic = output.to_owned();
        let before = crate::end_offsets(&topic);
        tokio::task::spawn_blocking(move || {
            wait_until("the run makes progress", Duration::from_secs(60), || {
                crate::end_offsets(&topic) > before + 500
            })
        })
        .await
        .expect("progress task");
        let pause = rand::rng().random_range(0..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if !may_be_complete() {
            kills_mid_stream += 1;
        }
        service.kill();
    }
    kills_mid_stream
}

/// Whether `topic` may hold `records` records already. Transaction markers count too, so `false`
/// proves the service is still mid-stream.
pub fn output_may_be_complete(topic: &str, records: usize) -> bool {
    crate::end_offsets(topic) >= records as i64
}

/// What [`sigkill_mid_stream`] leaves to compare: the fold of the input as the broker holds it,
/// and each output topic's committed records (in `ServiceTopics::outputs` order).
#[derive(Debug)]
pub struct SigkillOutcome {
    pub expected: OutputsByKey,
    pub committed: Vec<OutputsByKey>,
}

/// The exactly-once proof every stream processor instantiates: 200,000 simulated events over 5,000
/// customers (`seed`; 0.2 % malformed, 1 % retries) are produced at 4,000/s while the service is
/// started five times and SIGKILLed at a random moment of each run (at least five kills must land
/// mid-stream, judged by the output `progress` indexes, or for a latest-per-key output by the
/// group's committed input); a sixth run finishes. Returns the pure fold of `processor` over the
/// input as the broker appended it (each record as of its append time) and every output topic's
/// committed records, for the caller to compare with [`assert_same_outputs`] (or, for a role of
/// `P::LATEST_PER_KEY`, [`assert_latest_outputs`]) and its own decoder. The fold is a second
/// implementation of the runtime's rules (decode, key check, dedupe window, limits), not the
/// runtime's engine.
pub async fn sigkill_mid_stream<P: Processor<Input = TouchpointEvent>>(
    topics: &ServiceTopics,
    seed: u64,
    processor: P,
    progress: usize,
    start: impl Fn(&str) -> crate::ServiceProcess,
) -> SigkillOutcome {
    let input = simulated_input(200_000, 5_000, seed, 0.002);
    let input_records = input.len();
    let (expected, _) = fold(&processor, &topics.outputs, &input);
    let producing = produce_at_rate(topics.input.clone(), input, 4_000);
    let watched = &topics.outputs[progress];
    let latest = |index: usize| P::LATEST_PER_KEY.contains(&P::OUTPUTS[index]);
    let complete_at = records_in(&expected, watched);
    let may_be_complete = || {
        if latest(progress) {
            crate::committed_sum(&topics.group, &topics.input) >= input_records as i64
        } else {
            output_may_be_complete(watched, complete_at)
        }
    };
    let kills = kill_repeatedly_judged(5, watched, may_be_complete, |run| start(&format!("run-{run}"))).await;
    assert!(kills >= 5, "only {kills} kills happened mid-stream");
    producing.await.expect("producer task");

    let mut last = start("final");
    // Outputs are as of each record's append time (the partition clock): fold what the broker
    // holds, now that it holds all of it.
    let (appended, outputs) = (topics.input.clone(), topics.outputs.clone());
    let (expected, _) = tokio::task::spawn_blocking(move || fold_appended(&processor, &outputs, &appended))
        .await
        .expect("fold");
    let mut committed = Vec::new();
    for (index, output) in topics.outputs.iter().enumerate() {
        let deadline = Duration::from_secs(180);
        committed.push(if latest(index) {
            committed_outputs_when_done(output, &topics.group, &topics.input, input_records, deadline).await
        } else {
            committed_outputs(output, records_in(&expected, output), deadline).await
        });
    }
    assert!(last.is_running(), "the last run is still working");
    SigkillOutcome { expected, committed }
}
