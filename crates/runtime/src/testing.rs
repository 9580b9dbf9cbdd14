//! `ProcessorTest`: a service's processor driven through the runtime's own engine (`engine.rs`),
//! without Kafka, in the given/when/then shape of cqrs-es's `TestFramework`. What a test sees is
//! what the runtime would produce on one partition: dedupe, erasure markers, `check_limits`
//! refusals (dead-lettered), records validated as of the partition clock, timers fired as of
//! their due time, outputs with their keys and encoded values, each output role written to a
//! topic named after the role, every one of them (as with `COALESCE_OUTPUTS=false`). A state handoff (a merge) is delivered to the
//! winner within the same step, as the handoff topic would deliver it, and so is a record of the
//! processor's feedback output (`Processor::FEEDBACK`), after the step's own transaction.
//!
//! ```ignore
//! let then = ProcessorTest::new(MyService::default()).given([opened]).when(&resolved);
//! assert_eq!(then.decoded::<SuppressionState>("suppressions"), ...);
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use omnistream_model::{AvroRecord, TouchpointEvent, decode_record, encode_event};
use prometheus_client::registry::Registry;

use crate::config::{ErasureConfig, IdleState, IdsLayout};
use crate::engine::{
    Action, CoreSettings, EngineCore, Input, InputRecord, Now, OutputTopics, RestoredPartition, TooLarge,
    TopicLimits,
};
use crate::lookup::LookupPartition;
use crate::metrics::Metrics;
use crate::processor::Processor;
use crate::store::Footprint;

/// The DLQ topic of a test.
pub const TEST_DLQ: &str = "test.dlq";

/// The handoff topic of a test.
const TEST_HANDOFF: &str = "test.handoff";

/// What one step produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Then {
    /// (output role, key, value bytes) in the order produced; `None` is a tombstone.
    pub records: Vec<(String, String, Option<Vec<u8>>)>,
    /// The `error.code` and `error.message` of every record dead-lettered.
    pub dead_letters: Vec<(String, String)>,
}

impl Then {
    /// The value bytes produced under output `role`, in order.
    pub fn values(&self, role: &str) -> Vec<Option<&[u8]>> {
        self.records.iter().filter(|(r, _, _)| r == role).map(|(_, _, value)| value.as_deref()).collect()
    }

    /// The Avro records produced under output `role`, in order, read back from their bytes by
    /// the model's schema-driven decoder (not the writer that encoded them).
    pub fn decoded<T: AvroRecord>(&self, role: &str) -> Vec<Option<T>> {
        self.values(role)
            .into_iter()
            .map(|value| value.map(|bytes| decode_record(bytes).expect("an output decodes with its schema")))
            .collect()
    }

    /// The error codes of the dead-lettered records.
    pub fn dead_letter_codes(&self) -> Vec<&str> {
        self.dead_letters.iter().map(|(code, _)| code.as_str()).collect()
    }
}

/// Topics take records up to 1 MiB, as a default broker does.
struct DefaultTopics;

impl TopicLimits for DefaultTopics {
    fn limit(&mut self, _topic: &str) -> usize {
        1_048_588
    }
}

/// One partition of a service, in process.
pub struct ProcessorTest<P: Processor> {
    core: EngineCore<P>,
    offset: i64,
    handoff_offset: i64,
    feedback_offset: i64,
}

impl<P: Processor> std::fmt::Debug for ProcessorTest<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorTest").field("offset", &self.offset).finish_non_exhaustive()
    }
}

/// The records `ProcessorTest` trains its dictionary on (`IdleState::Compressed`).
const TRAINING_SAMPLES: usize = 16;

impl<P: Processor> ProcessorTest<P> {
    /// The runtime's defaults (a dedupe window of 64 ids, a 30-day erasure horizon), each
    /// customer held by their changelog record between steps, compressed with a dictionary
    /// trained on the first records of 16 customers (a service trains on 1,000, too many for a
    /// short test): every step also proves the state survives its changelog record, as a restore
    /// needs, and, once 16 customers trained the dictionary, its compression.
    pub fn new(processor: P) -> Self {
        Self::holding(processor, IdleState::Compressed, Some(TRAINING_SAMPLES))
    }

    /// `new`, holding customers between transactions as `idle_state` says, as a service does
    /// (`compressed` trains its dictionary on the first 1,000 records).
    pub fn with_idle_state(processor: P, idle_state: IdleState) -> Self {
        Self::holding(processor, idle_state, None)
    }

    /// `training_samples`: the records that train the dictionary, if not a service's number.
    fn holding(processor: P, idle_state: IdleState, training_samples: Option<usize>) -> Self {
        let settings = CoreSettings {
            input_topic: "test.events".into(),
            outputs: OutputTopics::new(
                P::OUTPUTS.iter().map(|role| (*role, Arc::from(*role))).collect(),
                &omnistream_schema_registry::TopicWriters::default(),
            ),
            handoff_topic: P::HANDS_OFF_STATE.then(|| TEST_HANDOFF.into()),
            feedback_topic: P::FEEDBACK.map(Arc::from),
            dlq_topic: TEST_DLQ.into(),
            changelog_topic: "test.state".into(),
            // One transaction per step, however many timers it fires (a Seek would need a broker).
            commit_max_records: usize::MAX,
            commit_interval: Duration::from_millis(100),
            commit_keeping_up: Duration::from_millis(20),
            dedupe_window: 64,
            // Every record, as `COALESCE_OUTPUTS=false` writes them: coalescing drops records and
            // never changes one, so tests that hold each record to the SPEC see them all (the
            // engine's unit tests and the SIGKILL proofs cover coalescing).
            coalesce_outputs: false,
            idle_state,
            changelog_ids_layout: IdsLayout::Bytes,
            lookup_grace_ms: 0,
            lookup_writer_timeout_ms: 0,
            broadcast_horizon_ms: i64::MAX,
            erasure: ErasureConfig {
                horizon: Duration::from_secs(30 * 86_400),
                key: None,
                suppress_after: false,
            },
        };
        let metrics = Arc::new(Metrics::register(&mut Registry::default(), "test", "0"));
        let mut core = EngineCore::new(processor, settings, Box::new(DefaultTopics), metrics);
        if let Some(samples) = training_samples {
            core.train_record_compression_on(samples);
        }
        core.on_assigned([0]);
        core.take_pending_restore();
        core.install(0, RestoredPartition::default(), false);
        Self { core, offset: 0, handoff_offset: 0, feedback_offset: 0 }
    }

    pub fn processor(&self) -> &P {
        self.core.processor()
    }

    /// The state the runtime keeps for `customer_id`.
    pub fn state(&self, customer_id: &str) -> Option<P::State> {
        self.core.state_of(0, customer_id)
    }

    /// What the store's customer table and held records take, in bytes.
    pub fn footprint(&self) -> Footprint {
        self.core.footprint()
    }

    /// A record of the lookup input `role` (one of `P::LOOKUPS`: a table, this partition's, or a
    /// broadcast), appended at `appended`; the records of one role come in append order. A
    /// record appended at `t` looks up the versions appended at or before `t` (no grace here).
    pub fn given_lookup(
        mut self,
        role: &str,
        key: &str,
        value: Option<&[u8]>,
        appended: DateTime<Utc>,
    ) -> Self {
        let input = P::LOOKUPS
            .iter()
            .find(|input| input.role == role)
            .unwrap_or_else(|| panic!("{role:?} is not one of the processor's LOOKUPS"));
        let from = LookupPartition { role: input.role, partition: 0 };
        let value = value.map(<[u8]>::to_vec);
        self.core.lookups_mut().on_record(from, key.to_owned(), appended.timestamp_millis(), value);
        self
    }

    /// Events that happened before, each appended at its `occurred_at`; what they produced is
    /// dropped.
    pub fn given(mut self, events: impl IntoIterator<Item = TouchpointEvent>) -> Self {
        for event in events {
            self.when(&event);
        }
        self
    }

    /// One event, appended at its `occurred_at` (the partition clock never goes back).
    pub fn when(&mut self, event: &TouchpointEvent) -> Then {
        self.when_appended(event, event.occurred_at)
    }

    /// One event whose record the broker appended at `appended`.
    pub fn when_appended(&mut self, event: &TouchpointEvent, appended: DateTime<Utc>) -> Then {
        let bytes = encode_event(event).expect("a test event encodes");
        self.when_record(Some(event.customer_id.as_bytes()), Some(&bytes), appended)
    }

    /// One raw record (any key and bytes), appended at `appended`.
    pub fn when_record(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        appended: DateTime<Utc>,
    ) -> Then {
        let record = InputRecord {
            input: Input::Events,
            partition: 0,
            offset: self.offset,
            key,
            payload,
            timestamp: Some(appended.timestamp_millis()),
            trace: None,
        };
        self.offset += 1;
        let mut actions = self.step(&record, appended);
        // The handoffs and feedback records it sent reach their customer (one partition here) in
        // later transactions, in the order they were sent.
        let mut delivered = 0;
        while let Some((input, key, value)) = self.side_record_at(&actions, delivered) {
            delivered += 1;
            let offset = match input {
                Input::Feedback => &mut self.feedback_offset,
                _ => &mut self.handoff_offset,
            };
            let record = InputRecord {
                input,
                partition: 0,
                offset: *offset,
                key: Some(key.as_bytes()),
                payload: Some(&value),
                timestamp: Some(appended.timestamp_millis()),
                trace: None,
            };
            *offset += 1;
            let more = self.step(&record, appended);
            actions.extend(more);
        }
        collect(actions)
    }

    /// One record in a transaction of its own.
    fn step(&mut self, record: &InputRecord<'_>, appended: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        // The wall clock is the record's time: these tests replay, they do not run live.
        let now = Now { instant: Instant::now(), wall: appended };
        if let Err(too_large) = self.core.on_record(record, now, &mut actions) {
            panic!(
                "a record too large aborts the transaction (tested with the broker): {}",
                too_large.message
            );
        }
        self.commit();
        actions
    }

    /// Raw event records (key, payload, append time in unix millis; append times never
    /// decrease) in one transaction, as the runtime batches a commit interval's records, then
    /// committed. Returns how many records the transaction wrote (outputs, dead letters, changelog
    /// and position records), keeping none: for measuring the engine's cost per record
    /// (`omnistream-hot-path` under callgrind). Handoffs and feedback records are not delivered.
    #[inline(never)]
    pub fn when_batch<'a>(&mut self, records: impl IntoIterator<Item = (&'a [u8], &'a [u8], i64)>) -> usize {
        let instant = Instant::now();
        let mut actions = Vec::new();
        let mut written = 0;
        for (key, payload, appended) in records {
            let record = InputRecord {
                input: Input::Events,
                partition: 0,
                offset: self.offset,
                key: Some(key),
                payload: Some(payload),
                timestamp: Some(appended),
                trace: None,
            };
            self.offset += 1;
            let wall = DateTime::from_timestamp_millis(appended).unwrap_or_default();
            if let Err(too_large) = self.core.on_record(&record, Now { instant, wall }, &mut actions) {
                panic!("a record too large aborts the transaction: {}", too_large.message);
            }
            written += actions.iter().filter(|action| matches!(action, Action::Produce(_))).count();
            actions.clear();
        }
        let planned = self.core.plan_commit(|_| {
            written += 1;
            Ok::<(), TooLarge>(())
        });
        if let Err(too_large) = planned {
            panic!("a state too large aborts the transaction: {}", too_large.message);
        }
        self.core.committed();
        written
    }

    /// The partition has caught up and the wall clock reads `wall`: due timers fire.
    pub fn when_time_passes(&mut self, wall: DateTime<Utc>) -> Then {
        self.core.on_end_of_partition(0);
        let mut actions = Vec::new();
        self.core.on_tick(Now { instant: Instant::now(), wall }, &mut actions);
        self.commit();
        collect(actions)
    }

    /// Commits after every step: the next step starts a transaction of its own.
    fn commit(&mut self) {
        if let Err(too_large) = self.core.plan_commit(|_| Ok::<(), TooLarge>(())) {
            panic!(
                "a state too large aborts the transaction (tested with the broker): {}",
                too_large.message
            );
        }
        self.core.committed();
    }
}

impl<P: Processor> ProcessorTest<P> {
    /// The `nth` record among `actions` that comes back as an input: a handoff or a feedback
    /// record, as (input, key, value).
    fn side_record_at(&self, actions: &[Action], nth: usize) -> Option<(Input, String, Vec<u8>)> {
        actions
            .iter()
            .filter_map(|action| {
                let Action::Produce(record) = action else { return None };
                let input = if record.topic.as_ref() == TEST_HANDOFF {
                    Input::Handoff
                } else if P::FEEDBACK.is_some_and(|role| record.topic.as_ref() == role) {
                    Input::Feedback
                } else {
                    return None;
                };
                Some((
                    input,
                    record.key.clone().unwrap_or_default(),
                    record.value.clone().unwrap_or_default(),
                ))
            })
            .nth(nth)
    }
}

fn collect(actions: Vec<Action>) -> Then {
    let mut then = Then::default();
    for action in actions {
        let Action::Produce(record) = action else { continue };
        if record.topic.as_ref() == TEST_HANDOFF {
            continue;
        }
        if record.topic.as_ref() == TEST_DLQ {
            let header = |name: &str| {
                record
                    .headers
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default()
            };
            then.dead_letters.push((header("error.code"), header("error.message")));
        } else {
            then.records.push((record.topic.to_string(), record.key.unwrap_or_default(), record.value));
        }
    }
    then
}
