//! The engine's decisions, without I/O (sans-I/O, as tansu's protocol crate): what each input
//! record, timer sweep, commit, abort and restore means for the partition stores and the open
//! transaction's ledger. It takes records and clock readings and answers with [`Action`]s; the
//! Kafka driver (`driver.rs`) executes them. No rdkafka type crosses this line, so every rule
//! here is unit-tested without a broker (below).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use omnistream_model::{ErrorCode, OutputRecord, Rejection, to_confluent};
use omnistream_schema_registry::TopicWriters;
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::debug;

use crate::config::{ErasureConfig, RuntimeConfig};
use crate::config::{IdleState, IdsLayout};
use crate::erasure::{ErasureMarker, MarkerId, MarkerKey, Markers};
use crate::handoff::HandoffError;
use crate::lookup::{LookupPartition, LookupScope, LookupStore};
use crate::metrics::{DomainEventLabel, ErrorCodeLabel, Metrics, RecordOutcome};
use crate::processor::{InputEvent, Output, Partitioning, Processor};
use crate::record_compression::RecordCompression;
use crate::record_limits::{header_size, record_size};
use crate::store::{Admission, Entry, Footprint, PartitionStore, Restored, event_id_hash};
use crate::trace::TraceContext;

/// What a record's trace context headers add to its size.
fn trace_size(trace: Option<&Arc<TraceContext>>) -> usize {
    trace.map_or(0, |trace| trace.headers().map(|(name, value)| header_size(name, value)).sum())
}

/// Header of every output record naming the `event_id` that caused it.
pub const CAUSE_HEADER: &str = "cause.event_id";

/// How far a broker's clock may run ahead of this host's: an append time beyond it is a producer's
/// create time, not a broker's.
const MAX_BROKER_CLOCK_LEAD_MS: i64 = 60_000;

/// Lookup versions are pruned once in this many commits (a walk over every key).
const PRUNE_EVERY_COMMITS: u32 = 64;
/// The fewest input records a transaction may hold after failed ones cut the limit.
const MIN_TRANSACTION_RECORDS: usize = 16;

/// The processing loop's clock reading for one iteration: monotonic and wall time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) instant: Instant,
    pub(crate) wall: DateTime<Utc>,
}

/// Which of the service's co-partitioned inputs a record comes from: partition `p` of each
/// belongs to the same task (the same store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Input {
    /// The touchpoint events.
    Events,
    /// The service's own handoff topic: states moving to another customer (docs/runtime.md).
    Handoff,
    /// What the service wrote to its own customers (`Processor::FEEDBACK`): applied as events.
    Feedback,
}

impl Input {
    pub(crate) const ALL: [Input; 3] = [Input::Events, Input::Handoff, Input::Feedback];

    fn index(self) -> usize {
        self as usize
    }
}

/// One record of an input topic, as the consumer delivered it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputRecord<'a> {
    pub(crate) input: Input,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    /// The record's timestamp (the broker's append time on the events topic), unix millis.
    pub(crate) timestamp: Option<i64>,
    /// The trace context its outputs carry on (`trace.rs`).
    pub(crate) trace: Option<&'a Arc<TraceContext>>,
}

/// An input position to commit with the transaction (KIP-447): the offset after the last
/// record processed of `input`'s `partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CommitOffset {
    pub(crate) input: Input,
    pub(crate) partition: i32,
    pub(crate) next: i64,
}

/// A record to produce inside the open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutRecord {
    pub(crate) topic: Arc<str>,
    /// `None` lets the producer's partitioner choose (the DLQ).
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<String>,
    /// `None` is a tombstone.
    pub(crate) value: Option<Vec<u8>>,
    /// The `event_id` that caused it, written as [`CAUSE_HEADER`].
    pub(crate) cause: Option<String>,
    /// The trace context of the record that caused it, written as its W3C headers.
    pub(crate) trace: Option<Arc<TraceContext>>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// Each output role of the processor, the topic configuration binds it to, and the schema id
/// its records are written with if that topic takes the Confluent wire format.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutputTopics(Vec<(&'static str, Arc<str>, Option<u32>)>);

impl OutputTopics {
    pub(crate) fn new(roles: Vec<(&'static str, Arc<str>)>, writers: &TopicWriters) -> Self {
        Self(roles.into_iter().map(|(role, topic)| (role, topic.clone(), writers.id_of(&topic))).collect())
    }

    /// The topics bound to `roles`.
    fn topics_of(&self, roles: &[&str]) -> Vec<Arc<str>> {
        self.0.iter().filter(|(role, _, _)| roles.contains(role)).map(|(_, topic, _)| topic.clone()).collect()
    }

    /// Appends `outputs` to `records` as records of their roles' topics, encoded, on `partition`
    /// when they stay with the input's partition number; no cause yet.
    fn bind<R: OutputRecord>(&self, outputs: Vec<Output<R>>, partition: i32, records: &mut Vec<OutRecord>) {
        records.extend(outputs.into_iter().map(|output| self.bind_one(output, partition)));
    }

    fn bind_one<R: OutputRecord>(&self, output: Output<R>, partition: i32) -> OutRecord {
        let (topic, schema_id) = self
            .0
            .iter()
            .find(|(role, _, _)| *role == output.role)
            .map(|(_, topic, schema_id)| (topic.clone(), *schema_id))
            // The start checks every declared role has a topic: this one was not declared.
            .unwrap_or_else(|| panic!("output role {:?} is not in the processor's OUTPUTS", output.role));
        let partition = match output.partitioning {
            Partitioning::SameAsInput => Some(partition),
            Partitioning::ByKey => None,
        };
        OutRecord {
            topic,
            partition,
            key: Some(output.key),
            value: output.value.map(|record| match schema_id {
                Some(id) => to_confluent(record.encode(), id),
                None => record.encode(),
            }),
            cause: None,
            trace: None,
            headers: Vec::new(),
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Begin a transaction: the records that follow belong to it.
    BeginTransaction,
    Produce(OutRecord),
    /// Set the input partition's position back to `offset`: that record comes again after the
    /// commit.
    Seek {
        input: Input,
        partition: i32,
        offset: i64,
    },
}

/// The input record at `offset` made an output or changelog record larger than its topic takes.
/// The core has noted it: abort, rebuild, and the record is dead-lettered when it comes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) input: Input,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) message: String,
}

/// Why a record goes to the DLQ: its `error.code` header and the `dlq_records` metric's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterReason {
    /// Decoding or validation refused it (SPEC 2).
    Invalid(ErrorCode),
    /// Its key is not its `customer_id`: one customer must live on one partition.
    KeyMismatch,
    /// It would break one of the customer's documented limits (SPEC 4, Limits).
    StateLimit,
    /// Its outputs or the customer's state would not fit their topics (SPEC 4, Limits).
    RecordTooLarge,
    /// A handoff record that does not decode (or was written by a newer release).
    HandoffUnreadable,
    /// It asks to move its customer's state (a merge) and no handoff topic is configured.
    MergeWithoutHandoff,
    /// It asks to merge its customer into itself (forged or broken input: the resolver never does).
    MergeIntoItself,
}

impl DeadLetterReason {
    pub(crate) fn code(self) -> &'static str {
        match self {
            DeadLetterReason::Invalid(code) => code.as_str(),
            DeadLetterReason::KeyMismatch => "key_mismatch",
            DeadLetterReason::StateLimit => "state_limit",
            DeadLetterReason::RecordTooLarge => "record_too_large",
            DeadLetterReason::HandoffUnreadable => "handoff_unreadable",
            DeadLetterReason::MergeWithoutHandoff => "merge_without_handoff",
            DeadLetterReason::MergeIntoItself => "merge_into_itself",
        }
    }
}

/// The largest record each topic takes (asked of the cluster by the driver's implementation).
pub(crate) trait TopicLimits: Send {
    fn limit(&mut self, topic: &str) -> usize;
}

/// What the core needs of the service's configuration.
#[derive(Debug, Clone)]
pub(crate) struct CoreSettings {
    pub(crate) input_topic: Arc<str>,
    pub(crate) outputs: OutputTopics,
    /// Where states go to their new customer; `None` unless the processor hands off state.
    pub(crate) handoff_topic: Option<Arc<str>>,
    /// The processor's feedback topic, if it has one.
    pub(crate) feedback_topic: Option<Arc<str>>,
    pub(crate) dlq_topic: Arc<str>,
    pub(crate) changelog_topic: Arc<str>,
    pub(crate) commit_max_records: usize,
    pub(crate) commit_interval: Duration,
    /// How old a transaction commits while the latest record was fresh (see `Ledger::keeping_up`).
    pub(crate) commit_keeping_up: Duration,
    pub(crate) dedupe_window: usize,
    /// Whether a transaction writes only its last record per key of the processor's
    /// [`Processor::LATEST_PER_KEY`] roles.
    pub(crate) coalesce_outputs: bool,
    /// How customers are held between the transactions that touch them.
    pub(crate) idle_state: IdleState,
    /// How the changelog records it writes hold the dedupe ids.
    pub(crate) changelog_ids_layout: IdsLayout,
    pub(crate) erasure: ErasureConfig,
    /// Lookups answer as of a record's time less this (milliseconds).
    pub(crate) lookup_grace_ms: i64,
    /// How long a lookup topic's writer may keep a transaction open (this service's own timeout).
    pub(crate) lookup_writer_timeout_ms: i64,
    /// How far before the oldest partition clock broadcast versions are kept (milliseconds).
    pub(crate) broadcast_horizon_ms: i64,
}

impl CoreSettings {
    /// `writers`: the schema ids of the output topics written in the Confluent format.
    pub(crate) fn new(config: &RuntimeConfig, writers: &TopicWriters) -> Self {
        Self {
            input_topic: config.input_topic.as_str().into(),
            outputs: OutputTopics::new(
                config
                    .service
                    .outputs
                    .iter()
                    .map(|(role, topic)| (*role, Arc::from(topic.as_str())))
                    .collect(),
                writers,
            ),
            handoff_topic: config.handoff_topic.as_deref().map(Arc::from),
            feedback_topic: config.feedback_topic.as_deref().map(Arc::from),
            dlq_topic: config.dlq_topic.as_str().into(),
            changelog_topic: config.changelog_topic.as_str().into(),
            commit_max_records: config.commit_max_records,
            commit_interval: config.commit_interval,
            commit_keeping_up: config.commit_keeping_up,
            dedupe_window: config.dedupe_window,
            coalesce_outputs: config.coalesce_outputs,
            idle_state: config.idle_state,
            changelog_ids_layout: config.changelog_ids_layout,
            erasure: config.erasure.clone(),
            lookup_grace_ms: i64::try_from(config.lookup_grace.as_millis()).unwrap_or(i64::MAX),
            lookup_writer_timeout_ms: i64::try_from(config.transaction_timeout.as_millis())
                .unwrap_or(i64::MAX),
            broadcast_horizon_ms: i64::try_from(config.broadcast_horizon.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// An input partition (of each input): its store and its progress in the open transaction.
#[derive(Debug)]
struct PartitionData<S> {
    store: PartitionStore<S>,
    /// Per input, the offset after the last record processed in the open transaction.
    next_offsets: [Option<i64>; Input::ALL.len()],
}

/// Per partition, the customers a transaction changed, with the last input record applied to each.
type Touched = FxHashMap<i32, FxHashMap<String, Touch>>;

/// A customer the open transaction changed.
#[derive(Debug, Clone, Copy)]
struct Touch {
    /// The last input record applied to them (`None` if only timers did): the cause of the
    /// changelog record.
    cause: Option<(Input, i64)>,
    /// They had an entry when the transaction first touched them. One without an entry then or
    /// at commit needs no changelog record: its key's last record is a tombstone or none (most
    /// of identity-resolver's customers: an event that only passes through leaves no state).
    had_entry: bool,
}

/// The open transaction: whose changelog records to write when it commits.
#[derive(Debug)]
struct Ledger {
    started: Instant,
    records: usize,
    /// The latest input record was appended less than the commit interval before it was applied:
    /// the service keeps up, and the transaction commits after `commit_keeping_up`. Once the
    /// transaction read an events record, only events records decide: the service's own feedback
    /// and handoff records are fresh by nature (written moments ago) even while it works through
    /// a backlog of events, and committing every 20 ms then cost identity-resolver's customer
    /// stage a third of its drain.
    keeping_up: bool,
    /// The transaction read a record of the events topic (with a timestamp, so it was judged).
    read_events: bool,
    /// Every customer (by partition) this transaction changed.
    touched: Touched,
    /// Timestamp (unix millis) of every input record, for the end-to-end latency.
    record_timestamps: Vec<i64>,
    /// Erasure markers this transaction created or expired, by partition: a set, so that an
    /// outage's thousands of expiries cost no more than their count.
    markers: BTreeSet<(i32, MarkerId)>,
    /// Records this transaction dead-lettered as noted too large: their notes go when it commits
    /// (an abort, e.g. because another record of the same customer is too large too, replays
    /// them and they must be dead-lettered again, or the two would take turns forever).
    noted_dead_letters: Vec<(Input, i32, i64)>,
    /// The records of latest-per-key topics, written at the commit.
    latest: LatestPerKey,
}

/// A transaction's records of the topics that keep each key's latest record: one per topic,
/// partition and key, the last, in the order each key first came; but a tombstone is never
/// replaced by a record after it (an erasure, then a new relationship in the same transaction):
/// both are written, so that a reader of the topic sees the erasure.
#[derive(Debug, Default)]
struct LatestPerKey {
    records: Vec<OutRecord>,
    index: FxHashMap<(Arc<str>, Option<i32>, String), usize>,
}

impl LatestPerKey {
    fn hold(&mut self, record: OutRecord) {
        let key = (record.topic.clone(), record.partition, record.key.clone().unwrap_or_default());
        match self.index.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut held) => {
                let at = *held.get();
                if self.records[at].value.is_none() && record.value.is_some() {
                    held.insert(self.records.len());
                    self.records.push(record);
                } else {
                    self.records[at] = record;
                }
            }
            std::collections::hash_map::Entry::Vacant(first) => {
                first.insert(self.records.len());
                self.records.push(record);
            }
        }
    }
}

/// Queues an input record's or timer's `records` in the open transaction: those of
/// `latest_topics` are held until the commit, each replacing its key's record before it; the
/// others are produced now.
fn queue(
    latest_topics: &[Arc<str>],
    ledger: &mut Option<Ledger>,
    records: impl Iterator<Item = OutRecord>,
    out: &mut Vec<Action>,
) {
    for record in records {
        match ledger {
            Some(ledger) if latest_topics.iter().any(|topic| Arc::ptr_eq(topic, &record.topic)) => {
                ledger.latest.hold(record)
            }
            _ => out.push(Action::Produce(record)),
        }
    }
}

impl Ledger {
    /// A marker to write at commit: once, whether created, expired or both.
    fn mark(&mut self, marked: impl IntoIterator<Item = (i32, MarkerId)>) {
        self.markers.extend(marked);
    }

    /// `has_entry` says whether the customer has a store entry now (asked at their first touch).
    fn touch(
        &mut self,
        partition: i32,
        customer_id: &str,
        offset: Option<(Input, i64)>,
        has_entry: impl FnOnce() -> bool,
    ) {
        let ids = self.touched.entry(partition).or_default();
        match ids.get_mut(customer_id) {
            Some(touch) => touch.cause = offset.or(touch.cause),
            None => {
                ids.insert(customer_id.to_owned(), Touch { cause: offset, had_entry: has_entry() });
            }
        }
    }
}

/// What a changelog partition holds: the customers' entries, the erasure markers and the input
/// positions they are as of.
pub(crate) struct RestoredPartition<S> {
    customers: Vec<(String, Restored<S>)>,
    markers: Markers,
    positions: FxHashMap<String, i64>,
}

impl<S> Default for RestoredPartition<S> {
    fn default() -> Self {
        Self { customers: Vec::new(), markers: Markers::default(), positions: FxHashMap::default() }
    }
}

impl<S> RestoredPartition<S> {
    /// The next offset of `topic` the restored state is as of, if the changelog says.
    pub(crate) fn position(&self, topic: &str) -> Option<i64> {
        self.positions.get(topic).copied()
    }
}

/// A changelog partition being read, in log order, into a [`RestoredPartition`].
///
/// A customer's records are kept as bytes, each replacing the last, and only the latest is decoded
/// ([`ChangelogPartition::finish`]): a changelog not compacted yet holds one per customer per
/// transaction, and a profile costs far more to decode than to copy (a restore at 64 events per
/// customer took 0.60 of the time of decoding every record; bench/results).
#[derive(Default)]
pub(crate) struct ChangelogPartition {
    /// Each customer's latest record: its offset and bytes.
    latest: FxHashMap<String, (i64, Vec<u8>)>,
    markers: Markers,
    positions: FxHashMap<String, i64>,
}

/// How many customers are decoded between two calls of `finish`'s `progress`.
const DECODED_PER_PROGRESS: usize = 10_000;

impl ChangelogPartition {
    /// Reads one changelog record at `offset`: a customer's entry, an erasure marker or an input
    /// position (its offset in `position_header`); a tombstone removes it. `Err` says why the
    /// record cannot be restored.
    pub(crate) fn read(
        &mut self,
        offset: i64,
        key: &[u8],
        payload: Option<&[u8]>,
        position_header: Option<&[u8]>,
        horizon_ms: i64,
    ) -> Result<(), String> {
        let key = String::from_utf8_lossy(key);
        if let Some(customer_id) = crate::changelog::escaped_customer_of(&key) {
            self.read_customer(offset, customer_id, payload);
            return Ok(());
        }
        if let Some(id) = crate::erasure::marker_id_of(&key) {
            match payload {
                None => self.markers.remove(&id),
                Some(bytes) => {
                    let marker: ErasureMarker = rmp_serde::from_slice(bytes)
                        .map_err(|e| format!("erasure marker {key:?} does not decode: {e}"))?;
                    self.markers.insert(id, marker, horizon_ms);
                }
            }
            return Ok(());
        }
        if let Some(topic) = crate::changelog::position_topic_of(&key) {
            match payload {
                None => {
                    self.positions.remove(topic);
                }
                Some(_) => {
                    let next =
                        position_header.and_then(crate::changelog::decode_position).ok_or_else(|| {
                            format!(
                                "the input position {key:?} has no offset in its {} header",
                                crate::changelog::POSITION_HEADER
                            )
                        })?;
                    self.positions.insert(topic.to_owned(), next);
                }
            }
            return Ok(());
        }
        self.read_customer(offset, &key, payload);
        Ok(())
    }

    fn read_customer(&mut self, offset: i64, customer_id: &str, payload: Option<&[u8]>) {
        match payload {
            None => {
                self.latest.remove(customer_id);
            }
            // The buffer of the customer's previous record is reused if the record fits, else
            // replaced by one of its length: grown by doubling, as `extend_from_slice` grows
            // one, most customers' buffers held twice their record while their state grew along
            // the log (bench/results/2026-12-07-restore-peak.md).
            Some(bytes) => match self.latest.get_mut(customer_id) {
                Some((at, latest)) => {
                    *at = offset;
                    if latest.capacity() < bytes.len() {
                        *latest = bytes.to_vec();
                    } else {
                        latest.clear();
                        latest.extend_from_slice(bytes);
                    }
                }
                None => {
                    self.latest.insert(customer_id.to_owned(), (offset, bytes.to_vec()));
                }
            },
        }
    }

    /// Decodes each customer's latest record, once the partition is read to its end, calling
    /// `progress` every [`DECODED_PER_PROGRESS`] customers (a million take seconds). `Err` names
    /// the latest record of a customer that does not decode; an earlier one that did not is
    /// replaced and never decoded, as compaction would have removed it. With `idle_state`
    /// encoded each customer keeps their record (one of an older state version encoded anew)
    /// with the timer and watched keys of their state, and the decoded state is dropped at once:
    /// holding every customer both ways until installed took the restore of 100,000
    /// profile-updater customers to 861-893 MiB, against 652 decoded.
    pub(crate) fn finish<P: Processor>(
        self,
        processor: &P,
        idle_state: IdleState,
        layout: IdsLayout,
        mut progress: impl FnMut(),
    ) -> Result<RestoredPartition<P::State>, String> {
        let Self { latest, markers, positions } = self;
        let mut customers = Vec::with_capacity(latest.len());
        for (decoded, (customer_id, (offset, bytes))) in latest.into_iter().enumerate() {
            if decoded % DECODED_PER_PROGRESS == 0 {
                progress();
            }
            let entry = crate::changelog::decode(processor, &bytes).map_err(|e| {
                format!(
                    "the state of {customer_id:?} (changelog record at offset {offset}) does not decode: {e}"
                )
            })?;
            let restored = match idle_state {
                IdleState::Decoded => Restored::Decoded(Box::new(entry)),
                IdleState::Encoded | IdleState::Compressed => {
                    let mut record = bytes;
                    if !crate::changelog::is_current::<P>(&record, layout) {
                        record.clear();
                        crate::changelog::encode::<P>(&entry, layout, &mut record);
                        record.shrink_to_fit();
                    }
                    let state = entry.state.as_ref();
                    Restored::Encoded {
                        record,
                        due: state
                            .and_then(|state| processor.next_timer(state))
                            .map(|due| due.timestamp_millis()),
                        watches: watches_of(processor, state).unwrap_or_default(),
                    }
                }
            };
            customers.push((customer_id, restored));
        }
        Ok(RestoredPartition { customers, markers, positions })
    }
}

/// Every input partition's store and the open transaction's ledger.
pub(crate) struct EngineCore<P: Processor> {
    processor: P,
    settings: CoreSettings,
    limits: Box<dyn TopicLimits>,
    metrics: Arc<Metrics>,
    marker_key: MarkerKey,
    horizon_ms: i64,
    partitions: FxHashMap<i32, PartitionData<P::State>>,
    pending_restore: BTreeSet<i32>,
    /// Partitions to seek to their committed offset once restored: records of theirs arrived
    /// before the restore (and were skipped), or an abort threw their progress away.
    rewind_after_restore: FxHashSet<i32>,
    ledger: Option<Ledger>,
    /// Input records a transaction may hold now: `commit_max_records`, cut after a transaction
    /// that failed (`shrink_records_limit`) and grown back by commits.
    records_limit: usize,
    /// The last committed ledger's touched maps, emptied: the next ledger reuses their capacity
    /// (growing a map of thousands of customers from empty every commit cost 5 % of a drain).
    spare_touched: Touched,
    /// Input records (input, partition, offset) to dead-letter with `record_too_large` when they
    /// are read again after the abort their outputs caused.
    too_large: FxHashMap<(Input, i32, i64), String>,
    /// At least one assignment happened (readiness).
    joined: bool,
    /// Counts assignments and revocations.
    assignment_generation: u64,
    /// What was read of the table and broadcast inputs.
    lookups: LookupStore,
    /// Why the service must stop (a record only a newer release can apply).
    fatal: Option<String>,
    /// The records of one input record or timer, bound and checked before they become actions
    /// (kept to reuse its allocation: this is the per-event path).
    bound: Vec<OutRecord>,
    /// The topics of the processor's [`Processor::LATEST_PER_KEY`] roles when outputs are
    /// coalesced (`COALESCE_OUTPUTS`), else none.
    latest_topics: Vec<Arc<str>>,
    /// Commits since table versions were last pruned.
    commits_since_prune: u32,
    /// Lookup partitions a due timer waits for (not known read as of its due time less the
    /// grace): the driver checks whether they are read to their end, without waiting.
    unproven_for_timers: Vec<LookupPartition>,
    /// The dictionary every partition's held records share (`--idle-state compressed`): one per
    /// process, so that a partition assigned again keeps using it.
    record_compression: Option<Arc<RecordCompression>>,
}

/// How far [`EngineCore::fire_due`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    /// Every timer due up to the time asked.
    All,
    /// The transaction is full: the rest fire after its commit.
    Full,
    /// The next due timer waits until its lookups are known complete.
    WaitingForLookups,
}

impl<P: Processor> std::fmt::Debug for EngineCore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCore")
            .field("partitions", &self.partitions.keys().collect::<Vec<_>>())
            .field("pending_restore", &self.pending_restore)
            .field("open", &self.ledger.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Processor> EngineCore<P> {
    pub(crate) fn new(
        processor: P,
        settings: CoreSettings,
        limits: Box<dyn TopicLimits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        assert!(
            P::WATCHED.is_none_or(|role| P::LOOKUPS
                .iter()
                .any(|i| i.role == role && i.scope == LookupScope::Broadcast)),
            "a processor watches one of its broadcast inputs"
        );
        let settings_idle_state = settings.idle_state;
        let records_limit = settings.commit_max_records;
        assert!(
            P::LATEST_PER_KEY.iter().all(|role| P::OUTPUTS.contains(role)),
            "a latest-per-key role is one of the processor's outputs"
        );
        // A topic shared with a role of facts keeps every record: held ones would land after
        // records written later.
        let facts = settings.outputs.topics_of(
            &P::OUTPUTS.iter().copied().filter(|role| !P::LATEST_PER_KEY.contains(role)).collect::<Vec<_>>(),
        );
        let latest_topics = if settings.coalesce_outputs {
            let mut topics = settings.outputs.topics_of(P::LATEST_PER_KEY);
            topics.retain(|topic| !facts.contains(topic));
            topics
        } else {
            Vec::new()
        };
        metrics.transaction_records_limit.set(i64::try_from(records_limit).unwrap_or(i64::MAX));
        Self {
            lookups: LookupStore::new(
                P::LOOKUPS,
                settings.lookup_grace_ms,
                settings.lookup_writer_timeout_ms,
            ),
            marker_key: MarkerKey::new(settings.erasure.key.as_deref()),
            horizon_ms: i64::try_from(settings.erasure.horizon.as_millis()).unwrap_or(i64::MAX),
            processor,
            settings,
            limits,
            metrics,
            partitions: FxHashMap::default(),
            pending_restore: BTreeSet::new(),
            rewind_after_restore: FxHashSet::default(),
            ledger: None,
            records_limit,
            spare_touched: Touched::default(),
            too_large: FxHashMap::default(),
            joined: false,
            assignment_generation: 0,
            fatal: None,
            bound: Vec::new(),
            latest_topics,
            commits_since_prune: 0,
            unproven_for_timers: Vec::new(),
            record_compression: (settings_idle_state == IdleState::Compressed)
                .then(|| Arc::new(RecordCompression::default())),
        }
    }

    /// With `--idle-state compressed`, trains the records' dictionary on the first `samples`
    /// records held instead (tests: before any partition is installed).
    pub(crate) fn train_record_compression_on(&mut self, samples: usize) {
        if let Some(compression) = &mut self.record_compression {
            *compression = Arc::new(RecordCompression::training_on(samples));
        }
    }

    pub(crate) fn processor(&self) -> &P {
        &self.processor
    }

    pub(crate) fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    /// Joined the group, every owned partition restored.
    pub(crate) fn is_ready(&self) -> bool {
        self.joined && self.pending_restore.is_empty()
    }

    /// Whether `partition` is owned and its state restored (it may be processed).
    pub(crate) fn is_restored(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition) && !self.pending_restore.contains(&partition)
    }

    pub(crate) fn has_pending_restore(&self) -> bool {
        !self.pending_restore.is_empty()
    }

    pub(crate) fn has_open_transaction(&self) -> bool {
        self.ledger.is_some()
    }

    /// Partitions were assigned: they wait (paused by the driver) until their state is restored.
    pub(crate) fn on_assigned(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.joined = true;
        self.assignment_generation += 1;
        self.pending_restore.extend(partitions);
        self.update_gauges();
    }

    /// Partitions left (after the driver committed, or aborted if they were lost): forget them.
    pub(crate) fn on_revoked(&mut self, partitions: &[i32]) {
        self.assignment_generation += 1;
        for partition in partitions {
            self.partitions.remove(partition);
            self.lookups.forget_table_partition(*partition);
            self.rewind_after_restore.remove(partition);
            self.pending_restore.remove(partition);
            self.metrics.consumer_lag.remove(&crate::metrics::PartitionLabel { partition: *partition });
        }
        self.update_gauges();
    }

    pub(crate) fn assignment_generation(&self) -> u64 {
        self.assignment_generation
    }

    /// Every partition assigned, restored or waiting for it.
    pub(crate) fn owned_partitions(&self) -> BTreeSet<i32> {
        self.partitions.keys().chain(&self.pending_restore).copied().collect()
    }

    /// Why the service must stop, once: the driver exits non-zero.
    pub(crate) fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    /// What was read of the table and broadcast inputs, for the driver to add to.
    pub(crate) fn lookups_mut(&mut self) -> &mut LookupStore {
        &mut self.lookups
    }

    /// The lookup partitions not yet known to be read far enough for `record` (an events or a
    /// handoff record): the driver reads on until each has a later version or is read to its end.
    pub(crate) fn unproven_lookups(
        &self,
        record: &InputRecord<'_>,
        clock: Now,
        out: &mut Vec<LookupPartition>,
    ) {
        let Some(data) = self.partitions.get(&record.partition) else { return };
        let applied_as_of = data.store.applies_as_of(self.stamped(record, clock));
        self.lookups.unproven(record.partition, self.lookups.as_of(applied_as_of), out);
    }

    /// The lookup partitions the last sweep's timers wait for, for the driver to check.
    pub(crate) fn take_unproven_for_timers(&mut self) -> Vec<LookupPartition> {
        std::mem::take(&mut self.unproven_for_timers)
    }

    /// The partitions to restore now; the driver reads their changelogs and [`Self::install`]s each.
    pub(crate) fn take_pending_restore(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.pending_restore).into_iter().collect()
    }

    /// A partition's state is restored: it is processed from now on. Returns whether the driver
    /// must seek it to the group's committed offset (`rewind`, or records of it were skipped or
    /// thrown away meanwhile).
    pub(crate) fn install(
        &mut self,
        partition: i32,
        restored: RestoredPartition<P::State>,
        rewind: bool,
    ) -> bool {
        let RestoredPartition { customers, markers, positions: _ } = restored;
        let processor = &self.processor;
        let lookups = &self.lookups;
        let customers = customers.into_iter().map(|(customer_id, restored)| match restored {
            Restored::Encoded { record, due, watches } => {
                let watched =
                    watched_due::<P>(lookups, watches.iter().map(|(key, since)| (key.as_str(), *since)));
                let due = due.into_iter().chain(watched).min();
                (customer_id, Restored::Encoded { record, due, watches })
            }
            decoded => (customer_id, decoded),
        });
        let store = PartitionStore::restored(
            customers,
            markers,
            self.record_compression.clone(),
            |state| due_of(processor, lookups, state),
            |state| watches_of(processor, Some(state)).unwrap_or_default(),
        );
        self.partitions.insert(partition, PartitionData { store, next_offsets: Default::default() });
        let rewind = self.rewind_after_restore.remove(&partition) || rewind;
        self.update_gauges();
        rewind
    }

    /// A customer's state, as the store holds it.
    pub(crate) fn state_of(&self, partition: i32, customer_id: &str) -> Option<P::State> {
        let store = &self.partitions.get(&partition)?.store;
        store.state_of(customer_id, |record| decode_held(&self.processor, customer_id, record))
    }

    /// Decodes the customer's entry if it is held by a record (`--idle-state encoded` or
    /// `compressed`), before a record or a timer of the open transaction reads it.
    fn thaw(&mut self, partition: i32, customer_id: &str) {
        if !self.settings.idle_state.holds_records() {
            return;
        }
        let processor = &self.processor;
        if let Some(data) = self.partitions.get_mut(&partition) {
            data.store.thaw(customer_id, |record| decode_held(processor, customer_id, record));
        }
    }

    pub(crate) fn customer_count(&self) -> usize {
        self.partitions.values().map(|p| p.store.customer_count()).sum()
    }

    pub(crate) fn footprint(&self) -> Footprint {
        self.partitions.values().map(|p| p.store.footprint()).fold(Footprint::default(), |sum, one| sum + one)
    }

    fn update_gauges(&self) {
        self.metrics.assigned_partitions.set((self.partitions.len() + self.pending_restore.len()) as i64);
        self.metrics.restoring_partitions.set(self.pending_restore.len() as i64);
        self.metrics.customers.set(self.customer_count() as i64);
        self.metrics.transaction_records_limit.set(self.records_limit as i64);
    }

    /// Whether the open transaction should be committed now.
    pub(crate) fn commit_due(&self, now: Instant) -> bool {
        self.ledger.as_ref().is_some_and(|ledger| {
            let age = now.duration_since(ledger.started);
            ledger.records >= self.records_limit
                || age >= self.settings.commit_interval
                || (ledger.keeping_up && age >= self.settings.commit_keeping_up)
        })
    }

    fn open_ledger(&mut self, now: Instant, out: &mut Vec<Action>) -> &mut Ledger {
        let spare = &mut self.spare_touched;
        self.ledger.get_or_insert_with(|| {
            out.push(Action::BeginTransaction);
            Ledger {
                started: now,
                records: 0,
                keeping_up: false,
                read_events: false,
                touched: std::mem::take(spare),
                record_timestamps: Vec::new(),
                markers: BTreeSet::new(),
                noted_dead_letters: Vec::new(),
                latest: LatestPerKey::default(),
            }
        })
    }

    /// The consumer reached the end of `partition`: its clock may follow the wall clock now.
    pub(crate) fn on_end_of_partition(&mut self, partition: i32) {
        if let Some(data) = self.partitions.get_mut(&partition) {
            data.store.on_end_of_partition();
        }
    }

    /// One input record, inside the open transaction (begun by the first action if none is).
    pub(crate) fn on_record(
        &mut self,
        record: &InputRecord<'_>,
        clock: Now,
        out: &mut Vec<Action>,
    ) -> Result<(), TooLarge> {
        let partition = record.partition;
        if !self.partitions.contains_key(&partition) {
            // Fetched before its state was restored (or after it was revoked): not ours to apply.
            self.rewind_after_restore.insert(partition);
            return Ok(());
        }
        self.open_ledger(clock.instant, out);
        let outcome = match record.input {
            Input::Events => match self.on_event_record(record, clock, out)? {
                Some(outcome) => outcome,
                None => return Ok(()),
            },
            // As of its own time, as a handoff record: the clock is the events' (a feedback topic
            // is stamped by its writer, and its end says nothing of the events').
            Input::Feedback => {
                let stamped = self.stamped(record, clock);
                let now = DateTime::from_timestamp_millis(stamped).unwrap_or(clock.wall);
                self.apply_record(record, stamped, now, out)?
            }
            Input::Handoff => match self.apply_handoff(record, clock, out)? {
                Some(outcome) => outcome,
                None if self.fatal.is_some() => return Ok(()),
                None => RecordOutcome::DeadLettered,
            },
        };
        self.metrics.consumed.inc();
        let ledger = self.ledger.as_mut().expect("ledger opened above");
        ledger.records += 1;
        if let Some(millis) = record.timestamp {
            ledger.record_timestamps.push(millis);
            let events = record.input == Input::Events;
            if events || !ledger.read_events {
                let lag = clock.wall.timestamp_millis().saturating_sub(millis);
                ledger.keeping_up =
                    u128::try_from(lag).unwrap_or(0) < self.settings.commit_interval.as_millis();
            }
            ledger.read_events |= events;
        }
        if let Some(data) = self.partitions.get_mut(&partition) {
            data.next_offsets[record.input.index()] = Some(record.offset + 1);
        }
        self.metrics.record_processed(outcome);
        Ok(())
    }

    /// A record of the events topic: moves the partition clock, fires the timers due before it,
    /// then applies it. `None`: it waits for the next transaction (a `Seek` says so).
    fn on_event_record(
        &mut self,
        record: &InputRecord<'_>,
        clock: Now,
        out: &mut Vec<Action>,
    ) -> Result<Option<RecordOutcome>, TooLarge> {
        let partition = record.partition;
        // SPEC 4, the partition clock: the broker's append time of this record (the events topic
        // uses LogAppendTime), taken as it is, so that a replay applies the record as of the same
        // time; never backwards. Should a topic carry producers' create times, one further ahead
        // of this host's clock than any broker's would be is held to the wall clock.
        let stamped = self.stamped(record, clock);
        let data = self.partitions.get_mut(&partition).expect("restored partition");
        let partition_now = data.store.on_record(stamped);
        // A timer due before this record fires before it is applied; one due after the record's
        // own time (the wall clock moved the partition clock past it) fires at a sweep, after the
        // record: as on a replay.
        if self.fire_due(partition, partition_now, out) == Fired::Full {
            // More timers are due than one transaction takes: this record comes again after the
            // commit, and the next batch of timers with it.
            out.push(Action::Seek { input: Input::Events, partition, offset: record.offset });
            return Ok(None);
        }
        // Markers past their horizon by this record's time no longer judge it, whenever the
        // last sweep ran: a replay, batched differently, judges it the same.
        let data = self.partitions.get_mut(&partition).expect("restored partition");
        let expired = data.store.markers.expire(partition_now);
        if !expired.is_empty() {
            let ledger = self.ledger.as_mut().expect("ledger opened above");
            ledger.mark(expired.into_iter().map(|id| (partition, id)));
        }
        let now = DateTime::from_timestamp_millis(partition_now).unwrap_or(clock.wall);
        self.apply_record(record, partition_now, now, out).map(Some)
    }

    /// The record's append time, unix millis; the wall clock for one further ahead than a
    /// broker's clock can be (a producer's create time).
    fn stamped(&self, record: &InputRecord<'_>, clock: Now) -> i64 {
        let wall = clock.wall.timestamp_millis();
        match record.timestamp {
            Some(stamped) if stamped <= wall.saturating_add(MAX_BROKER_CLOCK_LEAD_MS) => stamped,
            _ => wall,
        }
    }

    fn apply_record(
        &mut self,
        record: &InputRecord<'_>,
        partition_now: i64,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) -> Result<RecordOutcome, TooLarge> {
        let (partition, offset) = (record.partition, record.offset);
        if self.dead_letter_if_noted_too_large(record, out) {
            return Ok(RecordOutcome::DeadLettered);
        }
        let decoded = match record.payload {
            None => Err(Rejection::single(ErrorCode::Malformed, "$", "null value")),
            Some(bytes) if record.input == Input::Feedback => P::Input::decode_feedback(bytes, now),
            Some(bytes) => P::Input::decode(bytes, now),
        };
        let event = match decoded {
            Err(rejection) => {
                let code = rejection.first().code;
                self.dead_letter(record, DeadLetterReason::Invalid(code), &rejection.to_string(), out);
                return Ok(RecordOutcome::DeadLettered);
            }
            Ok(event) if record.key != Some(event.key().as_bytes()) => {
                // Single writer per customer needs every event of a customer on one partition.
                let key = record.key.map(String::from_utf8_lossy);
                let text = format!("record key {key:?} is not the customer_id {:?}", event.key());
                self.dead_letter(record, DeadLetterReason::KeyMismatch, &text, out);
                return Ok(RecordOutcome::DeadLettered);
            }
            Ok(event) => event,
        };
        self.thaw(partition, event.key());
        let data = self.partitions.get_mut(&partition).expect("restored partition");
        let customer_id = event.key();
        let hash = event.deduped().then(|| event_id_hash(event.event_id()));
        let marker_key = &self.marker_key;
        let admission = if record.input == Input::Feedback {
            data.store.admit_unjudged(customer_id, hash)
        } else {
            data.store.admit(
                customer_id,
                || marker_key.id(customer_id),
                event.occurred_at_millis(),
                hash,
                self.settings.erasure.suppress_after,
                partition_now,
            )
        };
        match admission {
            Admission::Erased => return Ok(RecordOutcome::Erased),
            Admission::Duplicate => return Ok(RecordOutcome::Duplicate),
            // Not read: ignored, unless it makes a new customer (an erased or merged-away one
            // is not new: a retry of an event ignored before the erasure must not start a
            // relationship that the marker would have stopped, had the id been remembered).
            // Erasures and merges are read whatever `reads` says: the marker, the tombstones and
            // the handoff must not hang on each processor listing them.
            Admission::New(state)
                if !self.processor.reads(&event)
                    && !event.is_erasure()
                    && (!P::HANDS_OFF_STATE || self.processor.handoff_target(&event).is_none())
                    && (state.is_some()
                        || !data.store.is_new_customer(customer_id, || marker_key.id(customer_id))) =>
            {
                return Ok(RecordOutcome::Ignored);
            }
            Admission::New(state) => {
                if let Err(text) = self.processor.check_limits(state, &event, now) {
                    self.dead_letter(record, DeadLetterReason::StateLimit, &text, out);
                    return Ok(RecordOutcome::DeadLettered);
                }
            }
        }
        // A merge: the state `apply` leaves goes to the winner.
        let winner = P::HANDS_OFF_STATE.then(|| self.processor.handoff_target(&event)).flatten();
        if winner.as_deref() == Some(customer_id) {
            let text = format!("a merge of {customer_id} into itself");
            self.dead_letter(record, DeadLetterReason::MergeIntoItself, &text, out);
            return Ok(RecordOutcome::DeadLettered);
        }
        if let (Some(winner), None) = (&winner, &self.settings.handoff_topic) {
            let text = format!(
                "a merge of {customer_id} into {winner} needs the service's handoff topic (--handoff-topic)"
            );
            self.dead_letter(record, DeadLetterReason::MergeWithoutHandoff, &text, out);
            return Ok(RecordOutcome::DeadLettered);
        }
        let ledger = self.ledger.as_mut().expect("ledger opened");
        ledger.touch(partition, customer_id, Some((record.input, offset)), || {
            data.store.has_entry(customer_id)
        });
        let entry = data.store.remember(customer_id, hash, self.settings.dedupe_window);
        let lookups = self.lookups.view(partition, self.lookups.as_of(partition_now));
        let outputs = self.processor.apply_with_lookups(&mut entry.state, &event, now, &lookups);
        let domain_events = &self.metrics.domain_events;
        self.processor.count_domain_events(Some(&event), &outputs, &mut |name| {
            domain_events.get_or_create(&DomainEventLabel { event: name }).inc();
        });
        let mut records = std::mem::take(&mut self.bound);
        self.settings.outputs.bind(outputs, partition, &mut records);
        // A merge: the state the event left goes to the winner, with the dedupe memory (the
        // winner then drops this customer's retried events too); this customer's is forgotten.
        let handoff = match winner {
            Some(winner) => entry.state.take().map(|state| {
                let handed = Entry {
                    recent: entry.recent.clone(),
                    state: Some(state),
                    merged_into: None,
                    unmarked: Cell::new(false),
                };
                crate::handoff::encode::<P>(&event, &handed, self.settings.changelog_ids_layout)
                    .map(|value| (winner, value))
            }),
            _ => None,
        };
        let due = entry.state.as_ref().and_then(|state| due_of(&self.processor, &self.lookups, state));
        let watches = watches_of(&self.processor, entry.state.as_ref());
        if event.is_erasure() {
            // Erased: nothing of the customer stays, not even where its merges went.
            entry.merged_into = None;
            entry.unmarked.set(false);
            let marker = ErasureMarker {
                erased_at: event.occurred_at_millis(),
                recorded_at: partition_now,
                recent: entry.recent.clone(),
            };
            if P::DEDUPE_WITHOUT_STATE {
                // The marker judges the customer's retries now, until the horizon: an entry kept
                // for its dedupe memory alone would keep the erased id for ever.
                entry.recent.clear();
            }
            let id = self.marker_key.id(customer_id);
            data.store.markers.insert(id, marker, self.horizon_ms);
            ledger.mark([(partition, id)]);
        }
        if let Some(Ok((winner, _))) = &handoff {
            data.store.settle_handed_off(customer_id, winner);
        } else {
            data.store.settle(customer_id, due, P::DEDUPE_WITHOUT_STATE);
            if let Some(watches) = watches {
                data.store.watch(customer_id, &watches);
            }
        }
        // Checked before anything is produced: either may abort the transaction.
        let handoff = match handoff {
            Some(Ok((winner, value))) => {
                Some(self.handoff_record(winner, value, event.event_id(), record.trace))
            }
            Some(Err(message)) => Some(Err(message)),
            None => None,
        };
        let too_large = match &handoff {
            Some(Err(message)) => Some(message.clone()),
            _ if records.is_empty() => None,
            _ => self.oversized(&records, Some(event.event_id()), record.trace),
        };
        if let Some(message) = too_large {
            records.clear();
            self.bound = records;
            // The state already changed: the abort rebuilds it from the changelog.
            self.too_large.insert((record.input, partition, offset), message.clone());
            return Err(TooLarge { input: record.input, partition, offset, message });
        }
        if let Some((last, others)) = records.split_last_mut() {
            // The event's own id is the last output's cause; the others get a copy (most events
            // have one output: no allocation on this path).
            for output in others {
                output.cause = Some(event.event_id().to_owned());
                output.trace = record.trace.cloned();
            }
            last.cause = Some(event.event_id().to_owned());
            last.trace = record.trace.cloned();
            queue(&self.latest_topics, &mut self.ledger, records.drain(..), out);
        }
        self.bound = records;
        if let Some(Ok(record)) = handoff {
            out.push(Action::Produce(record));
        }
        Ok(RecordOutcome::Applied)
    }

    /// The handoff record of a merge `cause` asked for, unless it is too large for its topic.
    fn handoff_record(
        &mut self,
        winner: String,
        value: Vec<u8>,
        cause: &str,
        trace: Option<&Arc<TraceContext>>,
    ) -> Result<OutRecord, String> {
        let topic = self.settings.handoff_topic.clone().expect("a handoff topic when handing off state");
        let size = record_size(&winner, Some(&value), &[(CAUSE_HEADER, cause)]) + trace_size(trace);
        let limit = self.limits.limit(&topic);
        if size > limit {
            return Err(format!("a {size}-byte handoff record for {topic} exceeds its {limit}-byte limit"));
        }
        // The partitioner puts it where the winner's events are (the same key hash and, checked
        // at start, the same partition count).
        Ok(OutRecord {
            topic,
            partition: None,
            key: Some(winner),
            value: Some(value),
            cause: Some(cause.to_owned()),
            trace: trace.cloned(),
            headers: Vec::new(),
        })
    }

    /// The winner's side of a handoff: the handed state is merged into the winner's once (the
    /// handoff's id joins the winner's dedupe memory with the loser's), as of the record's append
    /// time. It does not move the partition clock: the events' own times do.
    fn apply_handoff(
        &mut self,
        record: &InputRecord<'_>,
        clock: Now,
        out: &mut Vec<Action>,
    ) -> Result<Option<RecordOutcome>, TooLarge> {
        let (partition, offset) = (record.partition, record.offset);
        if self.dead_letter_if_noted_too_large(record, out) {
            return Ok(Some(RecordOutcome::DeadLettered));
        }
        let handoff = match crate::handoff::decode(&self.processor, record.key, record.payload) {
            Ok(handoff) => handoff,
            Err(HandoffError::Unreadable(text)) => {
                self.dead_letter(record, DeadLetterReason::HandoffUnreadable, &text, out);
                return Ok(None);
            }
            Err(HandoffError::Newer(text)) => {
                // Written by a newer release (a rolling upgrade): only it can apply the state;
                // stop here rather than lose it, as a changelog restore would.
                self.fatal = Some(text);
                return Ok(None);
            }
        };
        let stamped = self.stamped(record, clock);
        let now = DateTime::from_timestamp_millis(stamped).unwrap_or(clock.wall);
        self.thaw(partition, &handoff.to);
        let data = self.partitions.get_mut(&partition).expect("restored partition");
        let ledger = self.ledger.as_mut().expect("ledger opened");
        let hash = event_id_hash(&handoff.id);
        let marker_key = &self.marker_key;
        let admission = data.store.admit(
            &handoff.to,
            || marker_key.id(&handoff.to),
            handoff.occurred_at,
            Some(hash),
            self.settings.erasure.suppress_after,
            // Markers past their horizon by the record's own time no longer judge it, as for
            // events; they are not expired by it, though: this topic's append times can run far
            // ahead of the events partition's clock (a backlog, a replay), and an event retried
            // before a marker's horizon must still meet the marker.
            stamped,
        );
        match admission {
            // The winner was erased after the merge's time: what came with it goes too.
            Admission::Erased => return Ok(Some(RecordOutcome::Erased)),
            Admission::Duplicate => return Ok(Some(RecordOutcome::Duplicate)),
            Admission::New(_) => {}
        }
        ledger.touch(partition, &handoff.to, Some((Input::Handoff, offset)), || {
            data.store.has_entry(&handoff.to)
        });
        let window = self.settings.dedupe_window;
        let forward = data.store.entry(&handoff.to).and_then(|entry| entry.merged_into.as_deref().cloned());
        if let Some(next) = forward.filter(|next| *next != handoff.to) {
            // The winner was itself merged away meanwhile: the state follows it, under the same
            // id (so a cycle of merges drops it at its second visit rather than circle forever).
            data.store.remember(&handoff.to, Some(hash), window);
            let value = record.payload.unwrap_or_default().to_vec();
            return match self.handoff_record(next, value, &handoff.id, record.trace) {
                Ok(forwarded) => {
                    out.push(Action::Produce(forwarded));
                    Ok(Some(RecordOutcome::Applied))
                }
                Err(message) => {
                    self.too_large.insert((Input::Handoff, partition, offset), message.clone());
                    Err(TooLarge { input: Input::Handoff, partition, offset, message })
                }
            };
        }
        let entry = data.store.remember_merged(&handoff.to, &handoff.entry.recent, hash, window);
        let lookups = self.lookups.view(partition, self.lookups.as_of(stamped));
        let outputs = match handoff.entry.state {
            Some(handed) => self.processor.merge_with_lookups(
                &mut entry.state,
                &handoff.to,
                &handoff.from,
                &handoff.id,
                handed,
                now,
                &lookups,
            ),
            None => Vec::new(),
        };
        let mut records = std::mem::take(&mut self.bound);
        self.settings.outputs.bind(outputs, partition, &mut records);
        let due = entry.state.as_ref().and_then(|state| due_of(&self.processor, &self.lookups, state));
        let watches = watches_of(&self.processor, entry.state.as_ref());
        data.store.settle(&handoff.to, due, P::DEDUPE_WITHOUT_STATE);
        if let Some(watches) = watches {
            data.store.watch(&handoff.to, &watches);
        }
        let oversized = self.oversized(&records, Some(&handoff.id), record.trace);
        let caused = records.drain(..).filter(|_| oversized.is_none()).map(|output| OutRecord {
            cause: Some(handoff.id.clone()),
            trace: record.trace.cloned(),
            ..output
        });
        queue(&self.latest_topics, &mut self.ledger, caused, out);
        self.bound = records;
        if let Some(message) = oversized {
            self.too_large.insert((Input::Handoff, partition, offset), message.clone());
            return Err(TooLarge { input: Input::Handoff, partition, offset, message });
        }
        Ok(Some(RecordOutcome::Applied))
    }

    /// Dead-letters `record` if an earlier try noted it made a record too large for its topic
    /// (the abort rebuilt the state; this time nothing of it is applied).
    fn dead_letter_if_noted_too_large(&mut self, record: &InputRecord<'_>, out: &mut Vec<Action>) -> bool {
        if self.too_large.is_empty() {
            return false;
        }
        let noted = (record.input, record.partition, record.offset);
        let Some(text) = self.too_large.get(&noted).cloned() else { return false };
        self.dead_letter(record, DeadLetterReason::RecordTooLarge, &text, out);
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.noted_dead_letters.push(noted);
        }
        true
    }

    /// Why one of `outputs` cannot be sent, if one is larger than its topic takes.
    fn oversized(
        &mut self,
        outputs: &[OutRecord],
        cause: Option<&str>,
        trace: Option<&Arc<TraceContext>>,
    ) -> Option<String> {
        let cause_header;
        let headers: &[(&str, &str)] = match cause {
            Some(event_id) => {
                cause_header = [(CAUSE_HEADER, event_id)];
                &cause_header
            }
            None => &[],
        };
        outputs.iter().find_map(|output| {
            let size =
                record_size(output.key.as_deref().unwrap_or_default(), output.value.as_deref(), headers)
                    + trace_size(trace);
            let limit = self.limits.limit(&output.topic);
            (size > limit)
                .then(|| format!("a {size}-byte record for {} exceeds its {limit}-byte limit", output.topic))
        })
    }

    /// The topic of an input.
    pub(crate) fn topic_of(&self, input: Input) -> &Arc<str> {
        match input {
            Input::Events => &self.settings.input_topic,
            Input::Handoff => self.settings.handoff_topic.as_ref().unwrap_or(&self.settings.input_topic),
            Input::Feedback => self.settings.feedback_topic.as_ref().unwrap_or(&self.settings.input_topic),
        }
    }

    fn dead_letter(
        &mut self,
        record: &InputRecord<'_>,
        reason: DeadLetterReason,
        text: &str,
        out: &mut Vec<Action>,
    ) {
        let code = reason.code();
        let key = record.key.map(|key| String::from_utf8_lossy(key).into_owned());
        let mut headers = vec![
            ("error.code", code.to_owned()),
            ("error.message", text.to_owned()),
            ("source.topic", self.topic_of(record.input).to_string()),
            ("source.partition", record.partition.to_string()),
            ("source.offset", record.offset.to_string()),
        ];
        if let Some(trace) = record.trace {
            headers.extend(trace.headers().map(|(name, value)| (name, value.to_owned())));
        }
        // A record the input topic took may still not fit the DLQ with its headers (or this
        // producer's limit): sending it would abort every transaction that retries it. It goes
        // without its value then, with a header saying so; the input topic still holds it.
        let borrowed: Vec<(&str, &str)> =
            headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let size = record_size(key.as_deref().unwrap_or(""), record.payload, &borrowed);
        let limit = self.limits.limit(&self.settings.dlq_topic);
        let value = match record.payload {
            Some(bytes) if size > limit => {
                headers.push(("error.value_omitted_bytes", bytes.len().to_string()));
                None
            }
            payload => payload.map(<[u8]>::to_vec),
        };
        out.push(Action::Produce(OutRecord {
            topic: self.settings.dlq_topic.clone(),
            partition: None,
            key,
            value,
            cause: None,
            trace: None,
            headers,
        }));
        self.metrics.dead_lettered.get_or_create(&ErrorCodeLabel { error_code: code.to_owned() }).inc();
        debug!(
            error.code = code,
            error.message = text,
            partition = record.partition,
            offset = record.offset,
            trace_id = record.trace.map(|trace| trace.trace_id()),
            "dead-lettered"
        );
    }

    /// A timer sweep: the due timers of every restored partition run inside the open transaction
    /// (begun by the first action if none is). A caught-up partition's clock follows the wall
    /// clock; one with lag waits for its records' times.
    pub(crate) fn on_tick(&mut self, clock: Now, out: &mut Vec<Action>) {
        let wall = clock.wall.timestamp_millis();
        let mut partitions: Vec<i32> = self.partitions.keys().copied().collect();
        partitions.sort_unstable();
        for partition in partitions {
            let data = self.partitions.get_mut(&partition).expect("partition");
            let up_to = data.store.follow_wall(wall);
            let expired = data.store.markers.expire(up_to);
            let timer_due = data.store.due_timer(up_to).is_some();
            if !expired.is_empty() {
                let ledger = self.open_ledger(clock.instant, out);
                ledger.mark(expired.into_iter().map(|id| (partition, id)));
            }
            if !timer_due {
                continue;
            }
            let keeping_up = wall.saturating_sub(up_to) < self.settings.commit_interval.as_millis() as i64;
            let before = self.open_ledger(clock.instant, out).records;
            let fired = self.fire_due(partition, up_to, out);
            // Timers of a caught-up partition fire on time: their decisions are visible as soon.
            let ledger = self.ledger.as_mut().expect("ledger opened above");
            ledger.keeping_up |= keeping_up && ledger.records > before;
            match fired {
                Fired::All | Fired::WaitingForLookups => {}
                // The transaction is full: the rest fire after its commit, at the next sweep.
                Fired::Full => break,
            }
        }
    }

    /// Fires `partition`'s timers due at or before `up_to` (its clock), each as of its due time,
    /// so that replaying the log writes the same records however late it is replayed. Each counts
    /// as a record of the open transaction: stops, with timers still due, once the transaction
    /// holds its records limit, so one commit never holds an outage's backlog. A processor with
    /// lookups has a timer fire only once its lookups are known complete as of its due time less
    /// the grace; until then it and the later ones wait, and the lookup partitions in question
    /// are noted for the driver to check.
    fn fire_due(&mut self, partition: i32, up_to: i64, out: &mut Vec<Action>) -> Fired {
        loop {
            let data = self.partitions.get_mut(&partition).expect("partition");
            let Some((due, customer_id)) = data.store.due_timer(up_to) else { return Fired::All };
            let ledger = self.ledger.as_mut().expect("ledger opened");
            if ledger.records >= self.records_limit {
                return Fired::Full;
            }
            let as_of = self.lookups.as_of(due);
            let waiting_for = self.unproven_for_timers.len();
            self.lookups.unproven(partition, as_of, &mut self.unproven_for_timers);
            if self.unproven_for_timers.len() > waiting_for {
                return Fired::WaitingForLookups;
            }
            ledger.records += 1;
            self.thaw(partition, &customer_id);
            let data = self.partitions.get_mut(&partition).expect("partition");
            let ledger = self.ledger.as_mut().expect("ledger opened");
            ledger.touch(partition, &customer_id, None, || data.store.has_entry(&customer_id));
            let now = DateTime::from_timestamp_millis(due).unwrap_or_default();
            let mut before = None;
            let mut watches = None;
            let mut records = std::mem::take(&mut self.bound);
            let next = match data.store.entry_mut(&customer_id) {
                Some(entry) => {
                    // Kept to undo the timer should its records not fit (below): timers are few.
                    before = Some(entry.state.clone());
                    let lookups = self.lookups.view(partition, as_of);
                    let outputs =
                        self.processor.on_timer_with_lookups(&mut entry.state, &customer_id, now, &lookups);
                    let domain_events = &self.metrics.domain_events;
                    self.processor.count_domain_events(None, &outputs, &mut |name| {
                        domain_events.get_or_create(&DomainEventLabel { event: name }).inc();
                    });
                    self.settings.outputs.bind(outputs, partition, &mut records);
                    watches = watches_of(&self.processor, entry.state.as_ref());
                    // A timer that does not move forward would fire forever; each source is
                    // checked on its own, so one that does not move hides no later one.
                    entry.state.as_ref().and_then(|state| {
                        let parts = due_parts(&self.processor, &self.lookups, state);
                        parts.into_iter().flatten().filter(|next| *next > due).min()
                    })
                }
                None => None,
            };
            self.metrics.timers_fired.inc();
            // Checked before the entry settles: a timer that erased the state must still find
            // the entry to undo.
            let oversized = self.oversized(&records, None, None);
            if oversized.is_none() {
                queue(&self.latest_topics, &mut self.ledger, records.drain(..), out);
            }
            records.clear();
            self.bound = records;
            let data = self.partitions.get_mut(&partition).expect("partition");
            if let Some(message) = oversized {
                // No input record to dead-letter: the timer is undone (the customer keeps the
                // state the last event gave them) and not rescheduled until their next event.
                tracing::error!(customer_id, %message, "a timer's records do not fit; undone");
                if let (Some(state), Some(entry)) = (before, data.store.entry_mut(&customer_id)) {
                    entry.state = state;
                }
                data.store.settle(&customer_id, None, P::DEDUPE_WITHOUT_STATE);
                continue;
            }
            data.store.settle(&customer_id, next, P::DEDUPE_WITHOUT_STATE);
            if let Some(watches) = watches {
                data.store.watch(&customer_id, &watches);
            }
        }
    }

    /// A record of a lookup topic, in log order. A version of the watched input wakes the
    /// customers waiting for its key (`Processor::watches`) in every partition held.
    pub(crate) fn on_lookup_record(
        &mut self,
        from: LookupPartition,
        key: String,
        appended: i64,
        value: Option<Vec<u8>>,
    ) {
        if P::WATCHED == Some(from.role) {
            let due = appended.saturating_add(self.lookups.grace_ms());
            for data in self.partitions.values_mut() {
                data.store.wake_watchers(&key, appended, due);
            }
        }
        self.lookups.on_record(from, key, appended, value);
    }

    /// The open transaction's commit: the records of latest-per-key roles it held (each key's
    /// last), a changelog record per customer it touched (their final entry, or a tombstone) and
    /// per erasure marker it created or expired, to `emit`, and the
    /// input offsets to send with the group metadata (KIP-447). `None` when no transaction is open.
    ///
    /// The changelog records go to `emit` one at a time, as each is encoded, so that no more than
    /// one customer's encoded state is held here at once (a transaction touches up to
    /// `commit_max_records` customers: as a list they cost loyalty-points 13 to 20 MiB of peak
    /// memory in `make bench`). A record too large for the changelog stops the plan with the ones
    /// before it emitted: the transaction is aborted.
    pub(crate) fn plan_commit<E: From<TooLarge>>(
        &mut self,
        mut emit: impl FnMut(OutRecord) -> Result<(), E>,
    ) -> Result<Option<Vec<CommitOffset>>, E> {
        let Some(ledger) = self.ledger.as_mut() else { return Ok(None) };
        for record in std::mem::take(&mut ledger.latest).records {
            emit(record)?;
        }
        let ledger = &*ledger;
        let changelog_topic = self.settings.changelog_topic.clone();
        let changelog_limit = self.limits.limit(&changelog_topic);
        let changelog = |partition: i32, key: String, value: Option<Vec<u8>>| OutRecord {
            topic: changelog_topic.clone(),
            partition: Some(partition),
            key: Some(key),
            value,
            cause: None,
            trace: None,
            headers: Vec::new(),
        };
        let touched = ledger
            .touched
            .iter()
            .flat_map(|(partition, ids)| ids.iter().map(move |(id, touch)| (*partition, id, *touch)));
        let encoded = self.settings.idle_state.holds_records();
        let layout = self.settings.changelog_ids_layout;
        for (partition, customer_id, Touch { cause, had_entry }) in touched {
            let Some(data) = self.partitions.get_mut(&partition) else { continue };
            let record = data.store.record(customer_id, |entry| {
                let mut value = Vec::with_capacity(256);
                crate::changelog::encode::<P>(entry, layout, &mut value);
                value
            });
            let value = match record {
                None if !had_entry => continue,
                None => None,
                Some(value) => {
                    if encoded {
                        // Held by this record from now on, whether or not it fits: one an event
                        // caused aborts the transaction, which rebuilds the partition; one a
                        // timer caused is not written, and memory stays ahead of the changelog,
                        // as it does decoded.
                        data.store.freeze(customer_id, &value);
                    }
                    let size = record_size(customer_id, Some(&value), &[]);
                    if size > changelog_limit {
                        let message = format!(
                            "the state would be a {size}-byte changelog record (limit {changelog_limit})"
                        );
                        match cause {
                            Some((input, offset)) => {
                                self.too_large.insert((input, partition, offset), message.clone());
                                return Err(TooLarge { input, partition, offset, message }.into());
                            }
                            None => {
                                tracing::error!(customer_id, %message, "not writing a timer's changelog record");
                                continue;
                            }
                        }
                    }
                    Some(value)
                }
            };
            emit(changelog(partition, crate::changelog::customer_key(customer_id), value))?;
        }
        for data in self.partitions.values_mut() {
            data.store.refreeze_unchanged();
        }
        for (partition, id) in &ledger.markers {
            let Some(data) = self.partitions.get(partition) else { continue };
            let value = data.store.markers.get(id).map(|marker| {
                let mut value = Vec::with_capacity(64);
                rmp_serde::encode::write(&mut value, marker).expect("a marker serializes");
                value
            });
            emit(changelog(*partition, crate::erasure::changelog_key(id), value))?;
        }
        let mut offsets: Vec<CommitOffset> = self
            .partitions
            .iter()
            .flat_map(|(partition, data)| {
                Input::ALL.into_iter().filter_map(move |input| {
                    data.next_offsets[input.index()].map(|next| CommitOffset {
                        input,
                        partition: *partition,
                        next,
                    })
                })
            })
            .collect();
        offsets.sort_unstable();
        // Each position next to its offset, so that a restore can tell whether the group's
        // committed offset belongs to the state it reads (changelog::resume_offset).
        for CommitOffset { input, partition, next } in &offsets {
            let key = crate::changelog::position_key(self.topic_of(*input));
            let mut record = changelog(*partition, key, Some(crate::changelog::position_value()));
            record.headers.push((crate::changelog::POSITION_HEADER, next.to_string()));
            emit(record)?;
        }
        Ok(Some(offsets))
    }

    /// The open transaction committed: returns its input records' timestamps (for latency).
    pub(crate) fn committed(&mut self) -> Vec<i64> {
        for data in self.partitions.values_mut() {
            data.next_offsets = Default::default();
        }
        for noted in self.ledger.iter().flat_map(|ledger| &ledger.noted_dead_letters) {
            self.too_large.remove(noted);
        }
        self.commits_since_prune += 1;
        if !self.lookups.is_empty()
            && self.commits_since_prune >= PRUNE_EVERY_COMMITS
            // A timer looks up as of its due time, which may be long past (a backlog of timers).
            && let Some(oldest) = self
                .partitions
                .values()
                .map(|data| data.store.earliest_timer().map_or(data.store.clock(), |due| due.min(data.store.clock())))
                .min()
        {
            // No record of these partitions is applied as of an earlier time any more, replays
            // after an abort included (they come after the committed offsets), but for records
            // a writer's open transaction held back behind the clock: the writers' timeout more.
            self.commits_since_prune = 0;
            let as_of = self.lookups.as_of(oldest).saturating_sub(self.settings.lookup_writer_timeout_ms);
            self.lookups.prune(as_of, as_of.saturating_sub(self.settings.broadcast_horizon_ms));
        }
        self.records_limit = self.records_limit.saturating_mul(2).min(self.settings.commit_max_records);
        self.update_gauges();
        let Some(mut ledger) = self.ledger.take() else { return Vec::new() };
        ledger.touched.values_mut().for_each(FxHashMap::clear);
        self.spare_touched = ledger.touched;
        ledger.record_timestamps
    }

    /// The open transaction was aborted (or there was none, and the position moved past a record
    /// that was not processed): every owned partition is rebuilt, its state from the changelog and
    /// its position from the committed offsets. Returns them, for the driver to pause. Kafka
    /// Streams does the same under exactly-once (a task closed dirty is restored from its
    /// changelog); an undo log instead cost a deep copy of every customer each transaction
    /// touched, on the hot path, for a rare event.
    pub(crate) fn aborted(&mut self) -> Vec<i32> {
        self.shrink_records_limit();
        let mut owned: Vec<i32> = self.partitions.drain().map(|(partition, _)| partition).collect();
        owned.sort_unstable();
        self.pending_restore.extend(owned.iter().copied());
        self.rewind_after_restore.extend(owned.iter().copied());
        self.update_gauges();
        owned
    }

    /// The producer is re-created after an unknown outcome: the transaction is gone (fenced) and
    /// every owned partition waits to be restored and rewound.
    pub(crate) fn reset(&mut self) {
        self.shrink_records_limit();
        let owned: Vec<i32> = self.partitions.drain().map(|(partition, _)| partition).collect();
        self.pending_restore.extend(owned);
        self.update_gauges();
    }

    /// Drops the open transaction, which failed, and lets the next ones hold a quarter of its
    /// input records (at least [`MIN_TRANSACTION_RECORDS`]) until commits double the limit back.
    /// A cluster slow enough that a transaction's records time out (a follower lagging inside
    /// the ISR, a slow link) failed the same transaction again after every restore: the largest
    /// writer (a profile per event) then made no progress while smaller ones did (`make chaos`
    /// on a loaded machine). A transaction that failed for another reason costs a few commits.
    fn shrink_records_limit(&mut self) {
        let Some(ledger) = self.ledger.take() else { return };
        if ledger.records == 0 {
            // Refused at its first record (too large) or opened for markers only: not its size.
            return;
        }
        self.records_limit = (ledger.records.min(self.records_limit) / 4)
            .max(MIN_TRANSACTION_RECORDS)
            .min(self.settings.commit_max_records);
        self.update_gauges();
        tracing::info!(
            failed_records = ledger.records,
            records_limit = self.records_limit,
            "transactions hold fewer input records until commits grow the limit back"
        );
    }

    /// The transaction failed and is gone without an abort of the producer's: the producer is
    /// re-created, which fences it.
    pub(crate) fn drop_ledger(&mut self) {
        self.shrink_records_limit();
    }

    /// The transaction is gone with the process, which stops on a fatal error.
    pub(crate) fn forget_ledger(&mut self) {
        self.ledger = None;
    }
}

/// Decodes the record a customer is held by: written by this build, so it decodes unless
/// the build is broken (a panic, which ends the process, rather than a customer's state lost).
fn decode_held<P: Processor>(processor: &P, customer_id: &str, record: &[u8]) -> Entry<P::State> {
    crate::changelog::decode(processor, record)
        .unwrap_or_else(|e| panic!("the record holding {customer_id:?} does not decode: {e}"))
}

/// When a customer's timer is due (unix millis): the processor's own next timer, or the append
/// time plus the grace of the first watched version the customer has not seen, if earlier.
fn due_of<P: Processor>(processor: &P, lookups: &LookupStore, state: &P::State) -> Option<i64> {
    due_parts(processor, lookups, state).into_iter().flatten().min()
}

/// The processor's own next timer, and the first watched version's append time plus the grace.
fn due_parts<P: Processor>(processor: &P, lookups: &LookupStore, state: &P::State) -> [Option<i64>; 2] {
    let own = processor.next_timer(state).map(|due| due.timestamp_millis());
    if P::WATCHED.is_none() {
        return [own, None];
    }
    [own, watched_due::<P>(lookups, processor.watches(state))]
}

/// When the first watched version a customer has not seen (`watches`: each key with the time
/// seen through) is due: its append time plus the grace.
fn watched_due<'k, P: Processor>(
    lookups: &LookupStore,
    watches: impl IntoIterator<Item = (&'k str, i64)>,
) -> Option<i64> {
    let role = P::WATCHED?;
    watches
        .into_iter()
        .filter_map(|(key, since)| lookups.first_after(role, key, since))
        .map(|appended| appended.saturating_add(lookups.grace_ms()))
        .min()
}

/// The keys a customer in `state` waits for, owned for the store's index; `None` for a
/// processor that watches nothing.
fn watches_of<P: Processor>(processor: &P, state: Option<&P::State>) -> Option<Vec<(String, i64)>> {
    P::WATCHED?;
    let watches = state.map(|state| processor.watches(state)).unwrap_or_default();
    Some(watches.into_iter().map(|(key, since)| (key.to_owned(), since)).collect())
}

/// The core without a broker: one test per rule of docs/runtime.md ("Per record" and the
/// failure table) that needs no Kafka. The expected actions are written out by hand from the
/// docs, not computed by the core.
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use omnistream_model::{Channel, EventPayload, TouchpointEvent, encode_event};
    use prometheus_client::registry::Registry;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::lookup::{LookupInput, Lookups};

    const BASE: i64 = 1_795_000_000_000;

    /// A processor small enough to check by hand: counts a customer's events, emits the count,
    /// refuses a fourth event (a limit), reports the customer idle 1 s after their last event,
    /// emits a record too large for any topic for an event whose url is "huge", keys its record by
    /// K for the url "rekey:K", and hands its
    /// count to customer X for a view of the url "merge:X" (the winner adds it up).
    #[derive(Debug)]
    struct Tally;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Count {
        count: u32,
        idle_at: Option<i64>,
        /// Grows the changelog record past its limit.
        ballast: String,
    }

    fn out(customer: &str, value: &str) -> Output<String> {
        Output::new("out", customer.to_owned(), Some(value.to_owned()))
    }

    impl Processor for Tally {
        type Input = TouchpointEvent;
        type State = Count;
        type Record = String;
        const OUTPUTS: &'static [&'static str] = &["out", "routed"];

        fn apply(
            &self,
            state: &mut Option<Count>,
            event: &TouchpointEvent,
            now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            match &event.payload {
                EventPayload::ErasureRequested => {
                    *state = None;
                    vec![Output::new("out", event.customer_id.clone(), None)]
                }
                EventPayload::PageViewed { url } => {
                    let count =
                        state.get_or_insert(Count { count: 0, idle_at: None, ballast: String::new() });
                    count.count += 1;
                    count.idle_at = Some(now.timestamp_millis() + 1_000);
                    if url.ends_with("/heavy") {
                        count.ballast = "x".repeat(2_000);
                    }
                    let value =
                        if url.ends_with("/huge") { "x".repeat(2_000) } else { count.count.to_string() };
                    if let Some(key) = url.strip_prefix("rekey:") {
                        return vec![Output::rekeyed("routed", key.to_owned(), Some(value))];
                    }
                    vec![out(&event.customer_id, &value)]
                }
                // Not read (`reads`), but a new customer's first event is applied.
                EventPayload::ProductViewed { .. } => {
                    let count =
                        state.get_or_insert(Count { count: 0, idle_at: None, ballast: String::new() });
                    count.count += 1;
                    vec![out(&event.customer_id, &count.count.to_string())]
                }
                _ => Vec::new(),
            }
        }

        /// Page views only (a product view makes a new customer's count; erasures are read
        /// whatever this says).
        fn reads(&self, event: &TouchpointEvent) -> bool {
            matches!(event.payload, EventPayload::PageViewed { .. })
        }

        fn check_limits(
            &self,
            state: Option<&Count>,
            _event: &TouchpointEvent,
            _now: DateTime<Utc>,
        ) -> Result<(), String> {
            match state {
                Some(count) if count.count >= 3 => Err("at most 3 events".to_owned()),
                _ => Ok(()),
            }
        }

        fn next_timer(&self, state: &Count) -> Option<DateTime<Utc>> {
            state.idle_at.and_then(DateTime::from_timestamp_millis)
        }

        const HANDS_OFF_STATE: bool = true;

        fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
            match &event.payload {
                EventPayload::PageViewed { url } => url.strip_prefix("merge:").map(str::to_owned),
                _ => None,
            }
        }

        fn merge(
            &self,
            state: &mut Option<Count>,
            customer_id: &str,
            from: &str,
            _cause: &str,
            handed: Count,
            _now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            let count = state.get_or_insert(Count { count: 0, idle_at: None, ballast: String::new() });
            count.count += handed.count;
            vec![out(customer_id, &format!("{} with {from}'s", count.count))]
        }

        fn on_timer(
            &self,
            state: &mut Option<Count>,
            customer_id: &str,
            now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            if let Some(count) = state {
                count.idle_at = None;
            }
            vec![out(customer_id, &format!("idle at {}", now.timestamp_millis() - BASE))]
        }
    }

    /// Every topic takes 1,000-byte records.
    struct SmallTopics;

    impl TopicLimits for SmallTopics {
        fn limit(&mut self, _topic: &str) -> usize {
            1_000
        }
    }

    fn core_with(commit_max_records: usize) -> EngineCore<Tally> {
        core_of(commit_max_records, Some("handoff".into()))
    }

    fn core_of(commit_max_records: usize, handoff_topic: Option<Arc<str>>) -> EngineCore<Tally> {
        assigned(Tally, settings(commit_max_records, handoff_topic))
    }

    fn settings(commit_max_records: usize, handoff_topic: Option<Arc<str>>) -> CoreSettings {
        CoreSettings {
            input_topic: "in".into(),
            outputs: OutputTopics::new(
                vec![("out", "out".into()), ("routed", "routed".into())],
                &TopicWriters::default(),
            ),
            handoff_topic,
            feedback_topic: None,
            dlq_topic: "dlq".into(),
            changelog_topic: "state".into(),
            commit_max_records,
            commit_interval: Duration::from_millis(100),
            commit_keeping_up: Duration::from_millis(20),
            dedupe_window: 8,
            coalesce_outputs: true,
            // The strictest form: every customer is encoded (and compressed, once the first
            // records trained the dictionary: `assigned`) at each commit and thawed at their
            // next record or timer, so these tests also prove no path reads one held encoded.
            idle_state: IdleState::Compressed,
            changelog_ids_layout: IdsLayout::Bytes,
            lookup_grace_ms: 0,
            lookup_writer_timeout_ms: 0,
            broadcast_horizon_ms: 7 * 86_400_000,
            erasure: ErasureConfig {
                horizon: Duration::from_secs(86_400),
                key: Some(b"test".to_vec()),
                suppress_after: false,
            },
        }
    }

    /// A core of `processor` with partitions 0 and 1 assigned and restored empty.
    fn assigned<P: Processor>(processor: P, settings: CoreSettings) -> EngineCore<P> {
        let metrics = Arc::new(Metrics::register(&mut Registry::default(), "test", "0"));
        let mut core = EngineCore::new(processor, settings, Box::new(SmallTopics), metrics);
        core.train_record_compression_on(8);
        core.on_assigned([0, 1]);
        for partition in core.take_pending_restore() {
            core.install(partition, RestoredPartition::default(), false);
        }
        core
    }

    fn core() -> EngineCore<Tally> {
        core_with(10_000)
    }

    fn event_bytes(event_id: &str, customer: &str, at: i64, payload: EventPayload) -> Vec<u8> {
        let event = TouchpointEvent {
            event_id: event_id.to_owned(),
            customer_id: customer.to_owned(),
            occurred_at: DateTime::from_timestamp_millis(at).expect("time"),
            channel: Channel::Web,
            source: None,
            payload,
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        encode_event(&event).expect("encodes")
    }

    fn view(event_id: &str, customer: &str, at: i64) -> Vec<u8> {
        view_of(event_id, customer, at, "https://shop.example/")
    }

    fn view_of(event_id: &str, customer: &str, at: i64, url: &str) -> Vec<u8> {
        event_bytes(event_id, customer, at, EventPayload::PageViewed { url: url.to_owned() })
    }

    fn clock(wall: i64) -> Now {
        Now { instant: Instant::now(), wall: DateTime::from_timestamp_millis(wall).expect("time") }
    }

    /// Feeds one record (appended at `appended`, keyed `key`) to partition `partition`.
    fn feed(
        core: &mut EngineCore<Tally>,
        partition: i32,
        offset: i64,
        key: &str,
        payload: &[u8],
        appended: i64,
    ) -> Result<Vec<Action>, TooLarge> {
        feed_input(core, Input::Events, partition, offset, key, payload, appended)
    }

    /// Feeds one record of `input`.
    fn feed_input<P: Processor>(
        core: &mut EngineCore<P>,
        input: Input,
        partition: i32,
        offset: i64,
        key: &str,
        payload: &[u8],
        appended: i64,
    ) -> Result<Vec<Action>, TooLarge> {
        let mut actions = Vec::new();
        let record = InputRecord {
            input,
            partition,
            offset,
            key: Some(key.as_bytes()),
            payload: Some(payload),
            timestamp: Some(appended),
            trace: None,
        };
        core.on_record(&record, clock(appended), &mut actions)?;
        Ok(actions)
    }

    fn produced(actions: &[Action]) -> Vec<(&str, Option<&str>, Option<String>)> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Produce(record) => Some((
                    record.topic.as_ref(),
                    record.key.as_deref(),
                    record.value.as_ref().map(|value| String::from_utf8_lossy(value).into_owned()),
                )),
                _ => None,
            })
            .collect()
    }

    fn header<'a>(action: &'a Action, name: &str) -> Option<&'a str> {
        match action {
            Action::Produce(record) => {
                record.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
            }
            _ => None,
        }
    }

    /// The commit's changelog records of customers and markers, and its offsets; checks that
    /// every offset has its position record (and nothing else does).
    fn plan<P: Processor>(core: &mut EngineCore<P>) -> (Vec<Action>, Vec<(Input, i32, i64)>) {
        let mut actions = Vec::new();
        let offsets = plan_into(core, &mut actions).expect("fits").expect("a transaction is open");
        let (positions, actions): (Vec<Action>, Vec<Action>) = actions.into_iter().partition(|action| {
            matches!(action, Action::Produce(record)
                if record.key.as_deref().is_some_and(|key| crate::changelog::position_topic_of(key).is_some()))
        });
        let offsets: Vec<(Input, i32, i64)> =
            offsets.into_iter().map(|o| (o.input, o.partition, o.next)).collect();
        let written: Vec<(Input, i32, i64)> = positions
            .iter()
            .map(|action| {
                let Action::Produce(record) = action else { unreachable!("partitioned on produce") };
                let topic = crate::changelog::position_topic_of(record.key.as_deref().unwrap_or_default());
                let input =
                    Input::ALL.into_iter().find(|input| Some(core.topic_of(*input).as_ref()) == topic);
                let next = position_header(record).and_then(crate::changelog::decode_position);
                assert_eq!(record.topic.as_ref(), "state", "a position goes to the changelog");
                (
                    input.expect("an input's topic"),
                    record.partition.expect("its partition"),
                    next.expect("an offset"),
                )
            })
            .collect();
        assert_eq!(written, offsets, "a position record per committed offset");
        (actions, offsets)
    }

    fn plan_into<P: Processor>(
        core: &mut EngineCore<P>,
        actions: &mut Vec<Action>,
    ) -> Result<Option<Vec<CommitOffset>>, TooLarge> {
        core.plan_commit(|record| {
            actions.push(Action::Produce(record));
            Ok::<(), TooLarge>(())
        })
    }

    /// The offset header of a position record.
    fn position_header(record: &OutRecord) -> Option<&[u8]> {
        record
            .headers
            .iter()
            .find(|(name, _)| *name == crate::changelog::POSITION_HEADER)
            .map(|(_, v)| v.as_bytes())
    }

    /// A commit's changelog records read back as the restore reads a changelog partition.
    fn read_back(commit: &[Action], horizon_ms: i64) -> RestoredPartition<Count> {
        let mut reader = ChangelogPartition::default();
        let records = commit.iter().filter_map(|action| match action {
            Action::Produce(record) => Some(record),
            _ => None,
        });
        for (offset, record) in (0..).zip(records) {
            let key = record.key.as_deref().expect("keyed").as_bytes();
            reader
                .read(offset, key, record.value.as_deref(), position_header(record), horizon_ms)
                .expect("reads");
        }
        reader.finish(&Tally, IdleState::Encoded, IdsLayout::Bytes, || {}).expect("decodes")
    }

    /// A customer's changelog record, as the runtime writes it.
    fn changelog_record(count: u32) -> Vec<u8> {
        let entry = Entry {
            recent: Default::default(),
            state: Some(Count { count, idle_at: None, ballast: String::new() }),
            merged_into: None,
            unmarked: Cell::new(false),
        };
        let mut bytes = Vec::new();
        crate::changelog::encode::<Tally>(&entry, IdsLayout::Bytes, &mut bytes);
        bytes
    }

    #[test]
    fn given_a_changelog_then_each_customers_latest_record_is_restored_and_only_it_must_decode() {
        let (one, two, broken) = (changelog_record(1), changelog_record(2), b"\xc1\x02\xff".to_vec());
        let read = |records: &[(i64, &str, Option<&[u8]>)]| {
            let mut reader = ChangelogPartition::default();
            for (offset, customer, payload) in records {
                reader.read(*offset, customer.as_bytes(), *payload, None, 0).expect("read as it is");
            }
            reader.finish(&Tally, IdleState::Decoded, IdsLayout::Bytes, || {})
        };
        let restored = read(&[
            (3, "c-1", Some(&one)),
            (4, "c-2", Some(&broken)),
            (5, "c-1", None),
            (6, "c-2", Some(&two)),
            (7, "c-3", Some(&one)),
            (8, "c-3", None),
            (9, "c-1", Some(&two)),
        ])
        .expect("every latest record decodes");
        let count = |customer: &str| {
            let Some((_, Restored::Decoded(entry))) =
                restored.customers.iter().find(|(id, _)| id == customer)
            else {
                return None;
            };
            entry.state.as_ref().map(|state| state.count)
        };
        assert_eq!(count("c-1"), Some(2), "a record after the tombstone");
        assert_eq!(count("c-2"), Some(2), "a broken record replaced is never decoded");
        assert_eq!(count("c-3"), None, "tombstoned last");
        let error = read(&[(3, "c-1", Some(&one)), (5, "c-2", Some(&two)), (9, "c-1", Some(&broken))])
            .err()
            .expect("the latest record does not decode");
        assert!(error.contains("\"c-1\"") && error.contains("offset 9"), "{error}");
    }

    #[test]
    fn given_a_customers_records_growing_along_the_changelog_then_the_restore_holds_the_longest_not_twice_it()
    {
        let mut reader = ChangelogPartition::default();
        for length in 1_000..1_100 {
            reader.read(i64::from(length), b"c-1", Some(&vec![7; length as usize]), None, 0).expect("read");
        }
        let (_, latest) = &reader.latest["c-1"];
        assert_eq!(latest.len(), 1_099);
        // Grown by doubling it held 2,000 bytes for 1,099: most customers' records, restored.
        assert!(latest.capacity() < 1_099 + 1_099 / 8, "{} bytes held", latest.capacity());
    }

    /// `CHANGELOG_IDS_LAYOUT=array`, for the first restart of a rolling upgrade: the bytes a release
    /// from before 2026-12-07 wrote (worked out by hand, as in the test below: the version byte
    /// unmarked, the ids an array of integers), so that such a release, still running, restores
    /// and takes handoffs from this one; a record in the byte-string layout is held rewritten.
    #[test]
    fn given_the_array_layout_then_records_are_those_releases_before_the_byte_string_wrote() {
        let count = Count { count: 3, idle_at: None, ballast: String::new() };
        let entry = Entry {
            recent: VecDeque::from([0x0102_0304_0506_0708, u64::MAX]),
            state: Some(count.clone()),
            merged_into: None,
            unmarked: Default::default(),
        };
        let mut written = Vec::new();
        crate::changelog::encode::<Tally>(&entry, IdsLayout::Array, &mut written);
        let mut by_hand = vec![0xc1, 0x01, 0x93, 0x92, 0xcf, 1, 2, 3, 4, 5, 6, 7, 8, 0xcf];
        by_hand.extend([0xff; 8]);
        by_hand.extend([0x93, 0x03, 0xc0, 0xa0, 0xc0]);
        assert_eq!(written, by_hand, "tag, state version 1 unmarked, the ids as uint 64s");
        assert!(crate::changelog::is_current::<Tally>(&written, IdsLayout::Array));
        assert!(!crate::changelog::is_current::<Tally>(&written, IdsLayout::Bytes));
        let mut small = Vec::new();
        let few = Entry { recent: VecDeque::from([7]), ..entry.clone() };
        crate::changelog::encode::<Tally>(&few, IdsLayout::Array, &mut small);
        assert_eq!(
            small[..5],
            [0xc1, 0x01, 0x93, 0x91, 0x07],
            "a small hash as the smallest integer, as serde wrote it"
        );

        let mut bytes_layout = Vec::new();
        crate::changelog::encode::<Tally>(&entry, IdsLayout::Bytes, &mut bytes_layout);
        let mut reader = ChangelogPartition::default();
        reader.read(0, b"c-1", Some(&bytes_layout), None, 0).expect("read as it is");
        let restored = reader.finish(&Tally, IdleState::Encoded, IdsLayout::Array, || {}).expect("decodes");
        let Restored::Encoded { record, .. } = &restored.customers[0].1 else { panic!("held encoded") };
        assert_eq!(record, &by_hand, "held as this process writes");
        let decoded = crate::changelog::decode(&Tally, &written).expect("decodes");
        assert_eq!((decoded.recent, decoded.state), (entry.recent, Some(count)));
    }

    /// What the engine writes with `CHANGELOG_IDS_LAYOUT=array`: changelog records and the
    /// handoffs it makes, in the layout a release from before reads.
    #[test]
    fn given_the_array_layout_then_the_changelog_and_handoffs_are_written_in_it() {
        let settings = CoreSettings {
            changelog_ids_layout: IdsLayout::Array,
            ..settings(10_000, Some("handoff".into()))
        };
        let mut core = assigned(Tally, settings);
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        feed(&mut core, 0, 1, "c-3", &view("e-2", "c-3", BASE), BASE).expect("fits");
        let merge = view_of("e-3", "c-1", BASE + 1, "merge:c-2");
        let actions = feed(&mut core, 0, 2, "c-1", &merge, BASE + 1).expect("fits");
        let (_, _, value, _) = handoff_record(&actions);
        let handed = crate::handoff::tests_support::entry_of(&value);
        assert!(crate::changelog::is_current::<Tally>(&handed, IdsLayout::Array), "{handed:02x?}");
        let (commit, _) = plan(&mut core);
        let records: Vec<&[u8]> = commit
            .iter()
            .filter_map(|action| match action {
                Action::Produce(record) if &*record.topic == "state" => record.value.as_deref(),
                _ => None,
            })
            .collect();
        assert_eq!(records.len(), 2, "c-1 (its dedupe memory) and c-3");
        for record in records {
            assert!(crate::changelog::is_current::<Tally>(record, IdsLayout::Array), "{record:02x?}");
            assert!(!crate::changelog::is_current::<Tally>(record, IdsLayout::Bytes));
        }
    }

    /// The bytes worked out by hand from the MessagePack spec: a record is the tag, then the
    /// entry as an array of 3 (`recent`, `state`, `merged_into`), `Count` an array of 3.
    #[test]
    fn given_event_ids_then_the_record_holds_their_hashes_as_one_byte_string_and_the_array_form_still_decodes()
     {
        let count = Count { count: 3, idle_at: None, ballast: String::new() };
        let entry = Entry {
            recent: VecDeque::from([0x0102_0304_0506_0708, u64::MAX]),
            state: Some(count.clone()),
            merged_into: None,
            unmarked: Default::default(),
        };
        let state = [0x93, 0x03, 0xc0, 0xa0];
        let mut written = Vec::new();
        crate::changelog::encode::<Tally>(&entry, IdsLayout::Bytes, &mut written);
        let mut by_hand = vec![0xc1, 0x81, 0x93, 0xc4, 16, 1, 2, 3, 4, 5, 6, 7, 8];
        by_hand.extend([0xff; 8]);
        by_hand.extend(state);
        by_hand.push(0xc0);
        assert_eq!(written, by_hand, "bin 8 of 16 bytes; the version byte marked");
        assert!(written[1] > 0x7f, "a release before the mark reads a state version above its own");

        let mut array_form = vec![0xc1, 0x01, 0x93, 0x92, 0xcf, 1, 2, 3, 4, 5, 6, 7, 8, 0xcf];
        array_form.extend([0xff; 8]);
        array_form.extend(state);
        array_form.push(0xc0);
        let decoded = crate::changelog::decode(&Tally, &array_form).expect("the array form decodes");
        assert_eq!(decoded.recent, entry.recent);
        assert_eq!(decoded.state, Some(count.clone()));
        let decoded = crate::changelog::decode(&Tally, &written).expect("its own record decodes");
        assert_eq!((decoded.recent, decoded.state), (entry.recent.clone(), Some(count.clone())));
        assert!(crate::changelog::is_current::<Tally>(&written, IdsLayout::Bytes));
        assert!(
            !crate::changelog::is_current::<Tally>(&array_form, IdsLayout::Bytes),
            "held records are encoded anew"
        );

        let empty = Entry { recent: VecDeque::new(), ..entry };
        let mut written = Vec::new();
        crate::changelog::encode::<Tally>(&empty, IdsLayout::Bytes, &mut written);
        assert_eq!(written[..4], [0xc1, 0x81, 0x93, 0x90], "no ids: the empty array older releases read");

        let mut ragged = vec![0xc1, 0x81, 0x93, 0xc4, 7, 1, 2, 3, 4, 5, 6, 7];
        ragged.extend(state);
        ragged.push(0xc0);
        assert!(crate::changelog::decode(&Tally, &ragged).is_err(), "7 bytes are no hash");
    }

    fn some(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    #[test]
    fn given_a_valid_event_then_a_transaction_begins_and_its_output_names_its_cause() {
        let mut core = core();
        let actions = feed(&mut core, 0, 41, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        assert_eq!(actions[0], Action::BeginTransaction);
        assert_eq!(produced(&actions), vec![("out", Some("c-1"), some("1"))]);
        let Action::Produce(output) = &actions[1] else { panic!("an output") };
        assert_eq!(
            (output.partition, output.cause.as_deref()),
            (Some(0), Some("e-1")),
            "co-partitioned, traced"
        );
        let actions = feed(&mut core, 0, 42, "c-1", &view("e-2", "c-1", BASE + 5), BASE + 5).expect("fits");
        assert_eq!(produced(&actions), vec![("out", Some("c-1"), some("2"))], "no second begin");
        let (commit, offsets) = plan(&mut core);
        assert_eq!(offsets, vec![(Input::Events, 0, 43)], "the offset after the last record");
        assert_eq!(produced(&commit).len(), 1, "one changelog record per customer, the final state only");
        assert_eq!(produced(&commit)[0].0, "state");
        assert_eq!(core.committed(), vec![BASE, BASE + 5], "the records' timestamps, for the latency");
        assert!(!core.has_open_transaction());
    }

    /// Tally whose "out" records are each customer's latest count (a compacted topic's).
    #[derive(Debug)]
    struct LatestTally;

    impl Processor for LatestTally {
        type Input = TouchpointEvent;
        type State = Count;
        type Record = String;
        const OUTPUTS: &'static [&'static str] = &["out", "routed"];
        const LATEST_PER_KEY: &'static [&'static str] = &["out"];

        fn apply(
            &self,
            state: &mut Option<Count>,
            event: &TouchpointEvent,
            now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            Tally.apply(state, event, now)
        }
    }

    fn latest_core(coalesce_outputs: bool) -> EngineCore<LatestTally> {
        assigned(LatestTally, CoreSettings { coalesce_outputs, ..settings(100, None) })
    }

    #[test]
    fn given_events_of_customers_in_one_transaction_then_each_latest_record_is_written_once_at_the_commit() {
        let mut core = latest_core(true);
        let mut during = Vec::new();
        for (offset, (id, customer, url)) in
            [("e-1", "c-1", "/a"), ("e-2", "c-2", "/a"), ("e-3", "c-1", "rekey:k"), ("e-4", "c-1", "/b")]
                .into_iter()
                .enumerate()
        {
            let at = BASE + offset as i64;
            let record = view_of(id, customer, at, url);
            during.extend(
                feed_input(&mut core, Input::Events, 0, offset as i64, customer, &record, at).expect("fits"),
            );
        }
        assert_eq!(
            produced(&during),
            vec![("routed", Some("k"), some("2"))],
            "a role of facts is written at once; the latest-per-key role waits for the commit"
        );
        let (commit, _) = plan(&mut core);
        let outputs: Vec<_> = commit
            .iter()
            .filter_map(|action| match action {
                Action::Produce(record) if record.topic.as_ref() == "out" => Some((
                    record.key.as_deref(),
                    record.value.as_deref().map(|value| String::from_utf8_lossy(value).into_owned()),
                    record.cause.as_deref(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            outputs,
            vec![(Some("c-1"), some("3"), Some("e-4")), (Some("c-2"), some("1"), Some("e-2"))],
            "each customer's last record, caused by their last event, in the order customers came"
        );
        assert_eq!(
            produced(&commit)[..2].iter().map(|(topic, _, _)| *topic).collect::<Vec<_>>(),
            ["out", "out"]
        );
        core.committed();

        let next = feed_input(&mut core, Input::Events, 0, 4, "c-2", &view("e-5", "c-2", BASE + 9), BASE + 9)
            .expect("fits");
        assert!(produced(&next).is_empty());
        let (commit, _) = plan(&mut core);
        assert_eq!(
            produced(&commit)[0],
            ("out", Some("c-2"), some("2")),
            "the next transaction starts afresh"
        );
    }

    #[test]
    fn given_an_erasure_after_an_event_in_one_transaction_then_only_the_tombstone_is_written() {
        let mut core = latest_core(true);
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let erasure = event_bytes("e-2", "c-1", BASE + 1, EventPayload::ErasureRequested);
        feed_input(&mut core, Input::Events, 0, 1, "c-1", &erasure, BASE + 1).expect("fits");
        let (commit, _) = plan(&mut core);
        let outputs: Vec<_> = produced(&commit).into_iter().filter(|(topic, _, _)| *topic == "out").collect();
        assert_eq!(outputs, vec![("out", Some("c-1"), None)]);
    }

    #[test]
    fn given_an_erasure_then_a_new_event_in_one_transaction_then_the_tombstone_is_written_before_the_record()
    {
        let mut core = latest_core(true);
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let erasure = event_bytes("e-2", "c-1", BASE + 1, EventPayload::ErasureRequested);
        feed_input(&mut core, Input::Events, 0, 1, "c-1", &erasure, BASE + 1).expect("fits");
        for (offset, id) in [(2, "e-3"), (3, "e-4")] {
            let at = BASE + offset;
            feed_input(&mut core, Input::Events, 0, offset, "c-1", &view(id, "c-1", at), at).expect("fits");
        }
        let (commit, _) = plan(&mut core);
        let outputs: Vec<_> = produced(&commit).into_iter().filter(|(topic, _, _)| *topic == "out").collect();
        assert_eq!(
            outputs,
            vec![("out", Some("c-1"), None), ("out", Some("c-1"), some("2"))],
            "the erasure stays visible; the new relationship's last record follows it"
        );
    }

    #[test]
    fn given_an_aborted_transaction_then_its_held_records_are_never_written() {
        let mut core = latest_core(true);
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        core.aborted();
        assert!(!core.has_open_transaction());
        assert_eq!(plan_into(&mut core, &mut Vec::new()).expect("fits"), None, "nothing left to commit");
    }

    #[test]
    fn given_coalescing_off_then_every_events_record_is_written_at_once() {
        let mut core = latest_core(false);
        let first =
            feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let second =
            feed_input(&mut core, Input::Events, 0, 1, "c-1", &view("e-2", "c-1", BASE + 1), BASE + 1)
                .expect("fits");
        assert_eq!(produced(&first), vec![("out", Some("c-1"), some("1"))]);
        assert_eq!(produced(&second), vec![("out", Some("c-1"), some("2"))]);
        let (commit, _) = plan(&mut core);
        assert!(
            produced(&commit).iter().all(|(topic, _, _)| *topic == "state"),
            "only the changelog at the commit"
        );
    }

    #[test]
    fn given_an_event_of_no_concern_then_it_leaves_no_trace_not_even_its_id() {
        let product = |id: &str, at: i64| {
            event_bytes(id, "c-1", at, EventPayload::ProductViewed { product_id: "sku-1".to_owned() })
        };
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        plan(&mut core);
        core.committed();

        let ignored = feed(&mut core, 0, 1, "c-1", &product("e-2", BASE + 5), BASE + 5).expect("fits");
        assert_eq!(produced(&ignored), Vec::new(), "no output");
        let (commit, offsets) = plan(&mut core);
        assert_eq!(produced(&commit), Vec::new(), "no changelog record");
        assert_eq!(offsets, vec![(Input::Events, 0, 2)], "its offset committed all the same");

        // Its id was not remembered: eight later events (the dedupe window) all still count, and
        // the view that was first of them is still a duplicate when retried.
        for offset in 2..9 {
            feed(&mut core, 0, offset, "c-1", &product(&format!("p-{offset}"), BASE + 10), BASE + 10)
                .expect("fits");
        }
        let retried = feed(&mut core, 0, 9, "c-1", &view("e-1", "c-1", BASE + 20), BASE + 20).expect("fits");
        assert_eq!(produced(&retried), Vec::new(), "still remembered: a duplicate");
        let next = feed(&mut core, 0, 10, "c-1", &view("e-3", "c-1", BASE + 30), BASE + 30).expect("fits");
        assert_eq!(produced(&next), vec![("out", Some("c-1"), some("2"))]);
    }

    /// SPEC 4.5: a retry of an id the customer had is dropped after an erasure. An ignored event's
    /// id was never remembered, so the erasure marker does not name it: were the erased customer
    /// new again, its retry (dated after the erasure) would start a relationship.
    #[test]
    fn given_an_erasure_then_a_retried_event_that_was_ignored_before_it_starts_nothing() {
        let product = |id: &str, at: i64| {
            event_bytes(id, "c-1", at, EventPayload::ProductViewed { product_id: "sku-1".to_owned() })
        };
        let erasure = event_bytes("e-3", "c-1", BASE + 20, EventPayload::ErasureRequested);
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let ignored = feed(&mut core, 0, 1, "c-1", &product("e-2", BASE + 30), BASE + 1).expect("fits");
        assert_eq!(produced(&ignored), Vec::new());
        let erased = feed(&mut core, 0, 2, "c-1", &erasure, BASE + 2).expect("fits");
        assert_eq!(produced(&erased), vec![("out", Some("c-1"), None)]);

        let retried = feed(&mut core, 0, 3, "c-1", &product("e-2", BASE + 30), BASE + 3).expect("fits");
        assert_eq!(produced(&retried), Vec::new(), "the retry starts no relationship");
        let unread = feed(&mut core, 0, 4, "c-1", &product("e-4", BASE + 40), BASE + 4).expect("fits");
        assert_eq!(produced(&unread), Vec::new(), "nor does a new event it does not read");
        let read = feed(&mut core, 0, 5, "c-1", &view("e-5", "c-1", BASE + 50), BASE + 5).expect("fits");
        assert_eq!(produced(&read), vec![("out", Some("c-1"), some("1"))], "one it reads does");
        let first = feed(
            &mut core,
            1,
            0,
            "c-2",
            &event_bytes("p-1", "c-2", BASE, EventPayload::ProductViewed { product_id: "sku-1".to_owned() }),
            BASE,
        )
        .expect("fits");
        assert_eq!(produced(&first), vec![("out", Some("c-2"), some("1"))], "a new customer's first event");
    }

    #[test]
    fn given_a_record_with_a_trace_context_then_its_outputs_and_its_dead_letter_carry_it() {
        let mut core = core();
        let trace = Arc::new(TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            tracestate: Some("congo=t61rcWkgMzE".to_owned()),
        });
        let traced = |core: &mut EngineCore<Tally>, offset: i64, payload: &[u8]| {
            let record = InputRecord {
                input: Input::Events,
                partition: 0,
                offset,
                key: Some(b"c-1"),
                payload: Some(payload),
                timestamp: Some(BASE),
                trace: Some(&trace),
            };
            let mut actions = Vec::new();
            core.on_record(&record, clock(BASE), &mut actions).expect("fits");
            actions
        };
        let actions = traced(&mut core, 0, &view("e-1", "c-1", BASE));
        let Some(Action::Produce(output)) = actions.last() else { panic!("an output") };
        assert_eq!(output.trace.as_deref(), Some(&*trace), "the output");
        let actions = traced(&mut core, 1, b"not avro");
        let dead = actions.last().expect("a DLQ record");
        assert_eq!(header(dead, "error.code"), Some("malformed"));
        assert_eq!(header(dead, "traceparent"), Some(trace.traceparent.as_str()), "the dead letter");
        assert_eq!(header(dead, "tracestate"), Some("congo=t61rcWkgMzE"));
        let untraced = feed(&mut core, 0, 2, "c-1", &view("e-2", "c-1", BASE), BASE).expect("fits");
        let Some(Action::Produce(output)) = untraced.last() else { panic!("an output") };
        assert_eq!(output.trace, None, "a record without one");
    }

    #[test]
    fn given_bad_records_then_each_goes_to_the_dlq_with_reason_headers_and_the_partition_moves_on() {
        let mut core = core();
        let cases: [(&str, &[u8], &str); 3] = [
            ("c-1", b"not avro", "malformed"),
            ("c-2", &view("e-1", "c-1", BASE), "key_mismatch"),
            ("c-1", &view("e-2", "c-1", BASE + 2 * 86_400_000), "future_timestamp"),
        ];
        for (offset, (key, payload, code)) in (7..).zip(cases) {
            let actions = feed(&mut core, 1, offset, key, payload, BASE).expect("fits");
            let dead = actions.last().expect("a DLQ record");
            assert_eq!(header(dead, "error.code"), Some(code), "{key}: {code}");
            assert_eq!(header(dead, "source.topic"), Some("in"));
            assert_eq!(header(dead, "source.partition"), Some("1"));
            assert_eq!(header(dead, "source.offset"), Some(offset.to_string().as_str()));
            let Action::Produce(record) = dead else { panic!("produce") };
            assert_eq!((record.topic.as_ref(), record.key.as_deref()), ("dlq", Some(key)), "original key");
            assert_eq!(record.value.as_deref(), Some(payload), "original bytes");
        }
        let (commit, offsets) = plan(&mut core);
        assert_eq!(offsets, vec![(Input::Events, 1, 10)], "past every bad record");
        assert!(produced(&commit).is_empty(), "no state changed");
    }

    #[test]
    fn given_a_record_too_large_for_the_dlq_then_it_goes_without_its_value() {
        let mut core = core();
        let payload = vec![b'x'; 2_000];
        let actions = feed(&mut core, 0, 0, "c-1", &payload, BASE).expect("fits");
        let dead = actions.last().expect("a DLQ record");
        assert_eq!(header(dead, "error.value_omitted_bytes"), Some("2000"));
        assert_eq!(produced(&actions)[0].2, None);
    }

    #[test]
    fn given_a_seen_event_id_then_it_is_a_duplicate_and_changes_nothing() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        plan(&mut core);
        core.committed();
        let actions = feed(&mut core, 0, 1, "c-1", &view("e-1", "c-1", BASE), BASE + 1).expect("fits");
        assert_eq!(produced(&actions), Vec::new(), "a producer's retry");
        let (commit, offsets) = plan(&mut core);
        assert_eq!(
            (produced(&commit).len(), offsets),
            (0, vec![(Input::Events, 0, 2)]),
            "no changelog record, progress"
        );
    }

    #[test]
    fn given_an_event_past_a_limit_then_it_is_dead_lettered_and_the_state_is_unchanged() {
        let mut core = core();
        for (offset, id) in (0..).zip(["e-1", "e-2", "e-3"]) {
            feed(&mut core, 0, offset, "c-1", &view(id, "c-1", BASE), BASE).expect("fits");
        }
        let actions = feed(&mut core, 0, 3, "c-1", &view("e-4", "c-1", BASE), BASE).expect("fits");
        assert_eq!(header(&actions[0], "error.code"), Some("state_limit"));
        assert_eq!(header(&actions[0], "error.message"), Some("at most 3 events"));
        let tally = |core: &EngineCore<Tally>| core.state_of(0, "c-1").map(|count| count.count);
        assert_eq!(tally(&core), Some(3), "the state is unchanged");
        let actions = feed(&mut core, 0, 4, "c-1", &view("e-4", "c-1", BASE), BASE).expect("fits");
        assert_eq!(
            header(&actions[0], "error.code"),
            Some("state_limit"),
            "refused again, not a duplicate: the refused event's id was not remembered"
        );
        assert_eq!(tally(&core), Some(3));
    }

    #[test]
    fn given_an_output_too_large_then_abort_rebuild_and_dead_letter_the_record_when_it_comes_again() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let huge = view_of("e-2", "c-1", BASE, "https://shop.example/huge");
        let too_large = feed(&mut core, 0, 1, "c-1", &huge, BASE).expect_err("the output does not fit");
        assert_eq!((too_large.partition, too_large.offset), (0, 1));
        assert!(too_large.message.contains("exceeds its 1000-byte limit"), "{}", too_large.message);
        assert_eq!(core.aborted(), vec![0, 1], "every owned partition is rebuilt");
        assert!(!core.is_ready() && !core.has_open_transaction());
        let skipped = feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("skipped");
        assert!(skipped.is_empty(), "not restored yet: not applied");
        assert_eq!(core.take_pending_restore(), vec![0, 1]);
        assert!(core.install(0, RestoredPartition::default(), false), "rewound to the committed offset");
        assert!(core.install(1, RestoredPartition::default(), false), "rewound too");
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let actions = feed(&mut core, 0, 1, "c-1", &huge, BASE).expect("dead-lettered, not aborted");
        assert_eq!(header(&actions[0], "error.code"), Some("record_too_large"));
        let actions = feed(&mut core, 0, 2, "c-1", &view("e-3", "c-1", BASE), BASE).expect("fits");
        assert_eq!(produced(&actions), vec![("out", Some("c-1"), some("2"))], "the state before e-2");
    }

    #[test]
    fn given_a_state_too_large_for_its_changelog_then_the_commit_names_the_last_event_that_made_it() {
        let mut core = core();
        let heavy = view_of("e-1", "c-1", BASE, "https://shop.example/heavy");
        feed(&mut core, 1, 5, "c-1", &heavy, BASE).expect("the output fits");
        feed(&mut core, 1, 6, "c-2", &view("e-2", "c-2", BASE), BASE).expect("fits");
        let mut actions = Vec::new();
        let too_large = plan_into(&mut core, &mut actions).expect_err("the state does not fit");
        assert_eq!((too_large.partition, too_large.offset), (1, 5));
        core.aborted();
        for partition in core.take_pending_restore() {
            core.install(partition, RestoredPartition::default(), false);
        }
        let actions = feed(&mut core, 1, 5, "c-1", &heavy, BASE).expect("dead-lettered");
        assert_eq!(header(&actions[1], "error.code"), Some("record_too_large"));
    }

    /// Two events of one customer in one transaction, each leaving a state too large: the replay
    /// dead-letters the one named, the next commit names the other, and the one after must
    /// dead-letter both (the first note kept through the second abort), or the partition stalls
    /// with the two taking turns.
    #[test]
    fn given_two_events_each_leaving_a_state_too_large_then_both_are_dead_lettered_and_the_commit_goes_through()
     {
        let mut core = core();
        let first = view_of("e-1", "c-1", BASE, "https://shop.example/heavy");
        let second = view_of("e-2", "c-1", BASE, "https://shop.example/heavy");
        let restart = |core: &mut EngineCore<Tally>| {
            core.aborted();
            for partition in core.take_pending_restore() {
                core.install(partition, RestoredPartition::default(), false);
            }
        };
        feed(&mut core, 1, 5, "c-1", &first, BASE).expect("the output fits");
        feed(&mut core, 1, 6, "c-1", &second, BASE).expect("the output fits");
        let mut actions = Vec::new();
        let named = plan_into(&mut core, &mut actions).expect_err("the state does not fit");
        assert_eq!(named.offset, 6, "the last event applied to the customer");
        restart(&mut core);
        feed(&mut core, 1, 5, "c-1", &first, BASE).expect("applied again");
        feed(&mut core, 1, 6, "c-1", &second, BASE).expect("dead-lettered");
        let named = plan_into(&mut core, &mut Vec::new()).expect_err("the first alone is too large");
        assert_eq!(named.offset, 5);
        restart(&mut core);
        for (offset, event) in [(5, &first), (6, &second)] {
            let actions = feed(&mut core, 1, offset, "c-1", event, BASE).expect("dead-lettered");
            let codes: Vec<_> = actions.iter().filter_map(|action| header(action, "error.code")).collect();
            assert_eq!(codes, ["record_too_large"], "offset {offset}");
        }
        plan_into(&mut core, &mut Vec::new()).expect("nothing of c-1 to write").expect("open");
        core.committed();
        let actions = feed(&mut core, 1, 6, "c-1", &second, BASE).expect("a later read applies it");
        assert_eq!(produced(&actions).len(), 1, "the note went with the commit");
    }

    #[test]
    fn given_a_due_timer_then_it_fires_as_of_its_due_time_before_the_record_that_passes_it() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let actions =
            feed(&mut core, 0, 1, "c-2", &view("e-2", "c-2", BASE + 5_000), BASE + 5_000).expect("fits");
        assert_eq!(
            produced(&actions),
            vec![("out", Some("c-1"), some("idle at 1000")), ("out", Some("c-2"), some("1"))],
            "the timer (due at +1 s, as of then) first, then the record"
        );
        let Action::Produce(timer) = &actions[0] else { panic!("produce") };
        assert_eq!(timer.cause, None, "a timer has no causing event");
    }

    #[test]
    fn given_a_lagging_partition_then_a_sweep_does_not_follow_the_wall_clock_until_it_caught_up() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let mut actions = Vec::new();
        core.on_tick(clock(BASE + 10_000), &mut actions);
        assert!(produced(&actions).is_empty(), "lag: the partition clock stays at its last record");
        core.on_end_of_partition(0);
        core.on_tick(clock(BASE + 10_000), &mut actions);
        assert_eq!(produced(&actions), vec![("out", Some("c-1"), some("idle at 1000"))]);
    }

    /// Reminds a customer 1 s after their last page view with the text the broadcast input
    /// `texts` has under "greeting" as of then (less the grace).
    #[derive(Debug)]
    struct Reminder;

    impl Processor for Reminder {
        type Input = TouchpointEvent;
        type State = i64;
        type Record = String;
        const OUTPUTS: &'static [&'static str] = &["out"];
        const LOOKUPS: &'static [LookupInput] =
            &[LookupInput { role: "texts", scope: LookupScope::Broadcast }];

        fn apply(
            &self,
            state: &mut Option<i64>,
            _event: &TouchpointEvent,
            now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            *state = Some(now.timestamp_millis() + 1_000);
            Vec::new()
        }

        fn next_timer(&self, due: &i64) -> Option<DateTime<Utc>> {
            DateTime::from_timestamp_millis(*due)
        }

        fn on_timer_with_lookups(
            &self,
            state: &mut Option<i64>,
            customer_id: &str,
            _now: DateTime<Utc>,
            lookups: &Lookups<'_>,
        ) -> Vec<Output<String>> {
            *state = None;
            let text =
                lookups.get("texts", "greeting").map(|text| String::from_utf8_lossy(text).into_owned());
            vec![out(customer_id, text.as_deref().unwrap_or("nothing"))]
        }
    }

    const TEXTS: LookupPartition = LookupPartition { role: "texts", partition: 0 };

    /// Lookups as of 1 s before; lookup writers' transactions last at most 0.5 s.
    fn reminder_core() -> EngineCore<Reminder> {
        let settings =
            CoreSettings { lookup_grace_ms: 1_000, lookup_writer_timeout_ms: 500, ..settings(10_000, None) };
        let mut core = assigned(Reminder, settings);
        core.lookups_mut().set_broadcast_partitions("texts", 1);
        core
    }

    fn sweep<P: Processor>(core: &mut EngineCore<P>, wall: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        core.on_tick(clock(wall), &mut actions);
        actions
    }

    #[test]
    fn given_a_timer_whose_lookups_are_not_known_complete_then_it_waits_for_them_and_sees_them_as_of_its_time()
     {
        let mut core = reminder_core();
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        core.on_end_of_partition(0);
        core.lookups_mut().on_record(TEXTS, "greeting".into(), BASE - 10, Some(b"hello".to_vec()));
        assert!(produced(&sweep(&mut core, BASE + 5_000)).is_empty(), "nothing says texts is read to BASE");
        assert_eq!(core.take_unproven_for_timers(), vec![TEXTS], "the driver is asked to check its end");
        core.lookups_mut().read_to_end(TEXTS, BASE + 499);
        assert!(
            produced(&sweep(&mut core, BASE + 5_000)).is_empty(),
            "a transaction begun at BASE could still be open then"
        );
        core.take_unproven_for_timers();
        core.lookups_mut().read_to_end(TEXTS, BASE + 500);
        core.lookups_mut().on_record(TEXTS, "greeting".into(), BASE + 1, Some(b"later".to_vec()));
        assert_eq!(
            produced(&sweep(&mut core, BASE + 5_000)),
            vec![("out", Some("c-1"), some("hello"))],
            "due at BASE + 1 s: as of BASE, not the version appended after"
        );
        assert!(core.take_unproven_for_timers().is_empty());
    }

    #[test]
    fn given_a_timer_waiting_for_lookups_then_a_record_before_its_due_time_is_applied_first() {
        let mut core = reminder_core();
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        core.on_end_of_partition(0);
        sweep(&mut core, BASE + 5_000);
        core.take_unproven_for_timers();
        let actions =
            feed_input(&mut core, Input::Events, 0, 1, "c-2", &view("e-2", "c-2", BASE + 200), BASE + 200)
                .expect("fits");
        assert!(
            !actions.iter().any(|action| matches!(action, Action::Seek { .. })),
            "applied, not put back: {actions:?}"
        );
        core.lookups_mut().on_record(TEXTS, "greeting".into(), BASE + 100, Some(b"hi".to_vec()));
        core.lookups_mut().on_record(TEXTS, "other".into(), BASE + 9_000, None);
        assert_eq!(
            produced(&sweep(&mut core, BASE + 5_000)),
            vec![("out", Some("c-1"), some("nothing")), ("out", Some("c-2"), some("hi"))],
            "c-1's timer as of BASE (before the greeting), c-2's as of BASE + 200 ms"
        );
    }

    /// Watches the catalog key its customer last viewed (the page's url): each version of it
    /// appended after the view comes out once, as `value@appended`.
    #[derive(Debug)]
    struct Watcher;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Watching {
        key: String,
        since: i64,
        /// A timer of its own that never moves (a view of `stuck:KEY` sets it at the view).
        stuck: Option<i64>,
    }

    impl Processor for Watcher {
        type Input = TouchpointEvent;
        type State = Watching;
        type Record = String;
        const OUTPUTS: &'static [&'static str] = &["out"];
        const LOOKUPS: &'static [LookupInput] =
            &[LookupInput { role: "catalog", scope: LookupScope::Broadcast }];
        const WATCHED: Option<&'static str> = Some("catalog");

        fn apply(
            &self,
            _: &mut Option<Watching>,
            _: &TouchpointEvent,
            _: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            unreachable!("the runtime gives lookups")
        }

        fn apply_with_lookups(
            &self,
            state: &mut Option<Watching>,
            event: &TouchpointEvent,
            now: DateTime<Utc>,
            lookups: &Lookups<'_>,
        ) -> Vec<Output<String>> {
            if let EventPayload::PageViewed { url } = &event.payload {
                let (key, stuck) = match url.strip_prefix("stuck:") {
                    Some(key) => (key, Some(now.timestamp_millis())),
                    None => (url.as_str(), None),
                };
                *state = Some(Watching { key: key.to_owned(), since: lookups.as_of(), stuck });
            }
            Vec::new()
        }

        fn next_timer(&self, state: &Watching) -> Option<DateTime<Utc>> {
            state.stuck.and_then(DateTime::from_timestamp_millis)
        }

        fn watches<'s>(&self, state: &'s Watching) -> Vec<(&'s str, i64)> {
            vec![(state.key.as_str(), state.since)]
        }

        fn on_timer_with_lookups(
            &self,
            state: &mut Option<Watching>,
            customer_id: &str,
            _now: DateTime<Utc>,
            lookups: &Lookups<'_>,
        ) -> Vec<Output<String>> {
            let Some(watching) = state else { return Vec::new() };
            let seen = watching.since;
            watching.since = lookups.as_of();
            match lookups.get_versioned("catalog", &watching.key) {
                Some((value, appended)) if appended > seen => {
                    let text = String::from_utf8_lossy(value);
                    vec![out(customer_id, &format!("{text}@{}", appended - BASE))]
                }
                _ => Vec::new(),
            }
        }
    }

    const CATALOG: LookupPartition = LookupPartition { role: "catalog", partition: 0 };

    /// Lookups as of 1 s before; the catalog proven read far ahead (this is about waking).
    fn watcher_core() -> EngineCore<Watcher> {
        let settings =
            CoreSettings { lookup_grace_ms: 1_000, lookup_writer_timeout_ms: 500, ..settings(10_000, None) };
        let mut core = assigned(Watcher, settings);
        core.lookups_mut().set_broadcast_partitions("catalog", 1);
        core.lookups_mut().read_to_end(CATALOG, BASE + 1_000_000);
        core
    }

    #[test]
    fn given_a_customer_watching_a_key_then_each_later_version_read_fires_its_timer_as_of_its_append_time() {
        let mut core = watcher_core();
        let view = |id, customer, at, key| view_of(id, customer, at, key);
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE, "p"), BASE)
            .expect("fits");
        feed_input(&mut core, Input::Events, 0, 1, "c-3", &view("e-3", "c-3", BASE, "q"), BASE)
            .expect("fits");
        core.on_end_of_partition(0);
        core.on_lookup_record(CATALOG, "p".into(), BASE + 2_000, Some(b"drop".to_vec()));
        core.on_lookup_record(CATALOG, "q".into(), BASE - 5_000, Some(b"old".to_vec()));
        assert_eq!(
            produced(&sweep(&mut core, BASE + 2_999)),
            vec![],
            "due at its append time plus the grace"
        );
        assert_eq!(
            produced(&sweep(&mut core, BASE + 3_000)),
            vec![("out", Some("c-1"), some("drop@2000"))],
            "c-3 viewed q after q's version: nothing"
        );
        commit_now(&mut core);
        let actions = feed_input(
            &mut core,
            Input::Events,
            0,
            2,
            "c-2",
            &view("e-2", "c-2", BASE + 6_000, "p"),
            BASE + 6_000,
        )
        .expect("fits");
        assert!(produced(&actions).is_empty());
        core.on_lookup_record(CATALOG, "p".into(), BASE + 4_000, Some(b"drop2".to_vec()));
        core.on_lookup_record(CATALOG, "other".into(), BASE + 4_500, Some(b"x".to_vec()));
        assert_eq!(
            produced(&sweep(&mut core, BASE + 20_000)),
            vec![("out", Some("c-1"), some("drop2@4000"))],
            "c-2 viewed p after drop2 (as of 5 000)"
        );
        commit_now(&mut core);
        assert_eq!(produced(&sweep(&mut core, BASE + 30_000)), vec![], "each version once");
    }

    #[test]
    fn given_an_own_timer_that_does_not_move_then_a_watched_version_still_fires() {
        let mut core = watcher_core();
        let view = view_of("e-1", "c-1", BASE, "stuck:p");
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view, BASE).expect("fits");
        core.on_end_of_partition(0);
        core.on_lookup_record(CATALOG, "p".into(), BASE + 2_000, Some(b"drop".to_vec()));
        assert_eq!(
            produced(&sweep(&mut core, BASE + 5_000)),
            vec![("out", Some("c-1"), some("drop@2000"))],
            "the own timer at BASE fires and is dropped; the version's at BASE + 3 s still fires"
        );
    }

    #[test]
    fn given_a_restored_customer_then_a_version_read_before_the_restore_fires_its_timer() {
        let mut core = watcher_core();
        core.on_lookup_record(CATALOG, "p".into(), BASE + 2_000, Some(b"drop".to_vec()));
        core.on_revoked(&[0]);
        core.on_assigned([0]);
        assert_eq!(core.take_pending_restore(), vec![0]);
        let watching = Watching { key: "p".into(), since: BASE, stuck: None };
        let entry = Entry {
            recent: Default::default(),
            state: Some(watching),
            merged_into: None,
            unmarked: Cell::new(false),
        };
        let restored = RestoredPartition {
            customers: vec![("c-1".to_owned(), Restored::Decoded(Box::new(entry)))],
            ..RestoredPartition::default()
        };
        core.install(0, restored, false);
        core.on_end_of_partition(0);
        assert_eq!(produced(&sweep(&mut core, BASE + 10_000)), vec![("out", Some("c-1"), some("drop@2000"))]);
    }

    /// As `Reminder`, but the text is the customer's row of the *table* `tiers`.
    #[derive(Debug)]
    struct TableReminder;

    impl Processor for TableReminder {
        type Input = TouchpointEvent;
        type State = i64;
        type Record = String;
        const OUTPUTS: &'static [&'static str] = &["out"];
        const LOOKUPS: &'static [LookupInput] = &[LookupInput { role: "tiers", scope: LookupScope::Table }];

        fn apply(
            &self,
            state: &mut Option<i64>,
            _event: &TouchpointEvent,
            now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            *state = Some(now.timestamp_millis() + 1_000);
            Vec::new()
        }

        fn next_timer(&self, due: &i64) -> Option<DateTime<Utc>> {
            DateTime::from_timestamp_millis(*due)
        }

        fn on_timer_with_lookups(
            &self,
            state: &mut Option<i64>,
            customer_id: &str,
            _now: DateTime<Utc>,
            lookups: &Lookups<'_>,
        ) -> Vec<Output<String>> {
            *state = None;
            let text = lookups.get("tiers", customer_id).map(|t| String::from_utf8_lossy(t).into_owned());
            vec![out(customer_id, text.as_deref().unwrap_or("nothing"))]
        }
    }

    fn commit_now<P: Processor>(core: &mut EngineCore<P>) {
        core.plan_commit(|_| Ok::<(), TooLarge>(())).expect("fits");
        core.committed();
    }

    /// A backlog of overdue timers spans commits (commit_max_records): after 64 commits the table
    /// versions older than (partition clock - grace - timeout) are pruned, though the timers still
    /// due look up as of (their due time - grace), far earlier.
    #[test]
    fn given_overdue_timers_across_many_commits_then_pruned_tables_still_answer_as_of_their_due_times() {
        let settings =
            CoreSettings { lookup_grace_ms: 1_000, lookup_writer_timeout_ms: 500, ..settings(1, None) };
        let mut core = assigned(TableReminder, settings);
        let tiers = LookupPartition { role: "tiers", partition: 0 };
        for i in 0..80 {
            let id = format!("c-{i:02}");
            feed_input(&mut core, Input::Events, 0, i, &id, &view(&format!("e-{i}"), &id, BASE), BASE)
                .expect("fits");
            core.lookups_mut().on_record(tiers, id.clone(), BASE - 500, Some(b"silver".to_vec()));
        }
        commit_now(&mut core);
        for i in 0..80 {
            // Appended after every timer's lookup time (BASE): no timer may see it.
            core.lookups_mut().on_record(tiers, format!("c-{i:02}"), BASE + 100, Some(b"gold".to_vec()));
        }
        core.on_end_of_partition(0);
        // Another partition's clock is where the wall clock is (its records are live).
        feed_input(&mut core, Input::Events, 1, 0, "d-1", &view("x-1", "d-1", BASE + 60_000), BASE + 60_000)
            .expect("fits");
        let mut seen = Vec::new();
        for _ in 0..81 {
            let actions = sweep(&mut core, BASE + 60_000);
            seen.extend(
                produced(&actions)
                    .into_iter()
                    .map(|(_, key, value)| (key.unwrap().to_owned(), value.unwrap())),
            );
            commit_now(&mut core);
        }
        assert_eq!(seen.len(), 80);
        let wrong: Vec<_> = seen.iter().filter(|(_, text)| text != "silver").collect();
        assert!(wrong.is_empty(), "{} of 80 timers saw other than silver: {wrong:?}", wrong.len());
    }

    /// A timer waiting at a sweep is proven before the next one (the sweep's own check, or a
    /// record's); a record appended before the timer's due time, delivered now, comes after it.
    /// On a replay the record comes first and moves the timer.
    #[test]
    fn given_a_proven_timer_due_after_a_record_then_it_does_not_fire_before_that_record() {
        let mut core = reminder_core();
        feed_input(&mut core, Input::Events, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        core.on_end_of_partition(0);
        assert!(produced(&sweep(&mut core, BASE + 1_000)).is_empty(), "waits");
        // The driver's check after the sweep finds texts read to its end (a quiet topic).
        for from in core.take_unproven_for_timers() {
            core.lookups_mut().read_to_end(from, BASE + 1_000);
        }
        // c-1's own event appended at BASE + 500 (< due BASE + 1 000), delivered now.
        let actions =
            feed_input(&mut core, Input::Events, 0, 1, "c-1", &view("e-2", "c-1", BASE + 500), BASE + 500)
                .expect("fits");
        assert!(
            produced(&actions).is_empty(),
            "the timer due at BASE + 1 s fired before a record appended at BASE + 0.5 s: {actions:?}"
        );
    }

    #[test]
    fn given_a_failed_transaction_then_timers_fill_the_next_only_up_to_the_cut_limit() {
        let mut core = core_with(64);
        for offset in 0..20 {
            let customer = format!("c-{offset}");
            feed(&mut core, 0, offset, &customer, &view(&customer, &customer, BASE), BASE).expect("fits");
        }
        // The 20 fail: the limit is cut to 16 (the customers and their timers stay in memory here).
        core.drop_ledger();
        let actions =
            feed(&mut core, 0, 20, "d-1", &view("e-d", "d-1", BASE + 5_000), BASE + 5_000).expect("fits");
        assert_eq!(produced(&actions).len(), 16, "16 of 20 due timers fill the transaction");
        assert_eq!(actions.last(), Some(&Action::Seek { input: Input::Events, partition: 0, offset: 20 }));
    }

    #[test]
    fn given_more_due_timers_than_a_transaction_takes_then_the_record_waits_for_the_next_one() {
        let mut core = core_with(3);
        for (offset, customer) in (0..).zip(["c-1", "c-2", "c-3", "c-4"]) {
            feed(&mut core, 0, offset, customer, &view(customer, customer, BASE), BASE).expect("fits");
        }
        plan(&mut core);
        core.committed();
        let actions =
            feed(&mut core, 0, 4, "c-5", &view("e-5", "c-5", BASE + 5_000), BASE + 5_000).expect("fits");
        assert_eq!(produced(&actions).len(), 3, "three of four timers fill the transaction");
        assert_eq!(
            actions.last(),
            Some(&Action::Seek { input: Input::Events, partition: 0, offset: 4 }),
            "the record comes again"
        );
        let (_, offsets) = plan(&mut core);
        assert_eq!(offsets, Vec::new(), "the record did not count as progress");
        assert!(core.commit_due(Instant::now()), "a full transaction is due");
    }

    /// c-1's view appended at BASE, applied when `clock` says (a record's lag behind the wall).
    fn applied_at(core: &mut EngineCore<Tally>, clock: Now) {
        let payload = view("e-1", "c-1", BASE);
        let record = InputRecord {
            input: Input::Events,
            partition: 0,
            offset: 0,
            key: Some(b"c-1"),
            payload: Some(&payload),
            timestamp: Some(BASE),
            trace: None,
        };
        core.on_record(&record, clock, &mut Vec::new()).expect("fits");
    }

    #[test]
    fn given_fresh_records_then_the_transaction_commits_sooner_than_a_backlogs() {
        let commits_after = |lag_ms: i64| {
            let mut core = core();
            let opened = clock(BASE + lag_ms);
            applied_at(&mut core, opened);
            [0, 19, 20, 99, 100].map(|ms| core.commit_due(opened.instant + Duration::from_millis(ms)))
        };
        assert_eq!(commits_after(0), [false, false, true, true, true], "appended just now: after 20 ms");
        assert_eq!(commits_after(99), [false, false, true, true, true], "appended within the interval");
        assert_eq!(commits_after(-5_000), [false, false, true, true, true], "stamped ahead of this clock");
        assert_eq!(commits_after(100), [false, false, false, false, true], "a backlog: after the interval");
    }

    #[test]
    fn given_timers_a_sweep_fires_on_time_then_their_transaction_commits_sooner() {
        let mut core = core();
        // A backlog's record: applied a minute after it was appended; its timer is due a second
        // after it.
        applied_at(&mut core, clock(BASE + 60_000));
        plan(&mut core);
        core.committed();
        core.on_end_of_partition(0);
        let opened = clock(BASE + 1_050);
        let mut actions = Vec::new();
        core.on_tick(opened, &mut actions);
        assert!(!produced(&actions).is_empty(), "the timer fired: {actions:?}");
        let due = [0, 19, 20].map(|ms| core.commit_due(opened.instant + Duration::from_millis(ms)));
        assert_eq!(due, [false, false, true], "the caught-up partition's timer commits after 20 ms");
    }

    #[test]
    fn given_an_erasure_then_the_changelog_gets_a_tombstone_and_a_marker_that_drops_older_events() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        plan(&mut core);
        core.committed();
        let erase = event_bytes("e-2", "c-1", BASE + 10, EventPayload::ErasureRequested);
        feed(&mut core, 0, 1, "c-1", &erase, BASE + 10).expect("fits");
        let (commit, _) = plan(&mut core);
        let records = produced(&commit);
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!((records[0].1, records[0].2.as_deref()), (Some("c-1"), None), "the state's tombstone");
        assert!(
            records[1].1.is_some_and(|key| key != "c-1") && records[1].2.is_some(),
            "a marker, keyed by its hash"
        );
        core.committed();
        let late = feed(&mut core, 0, 2, "c-1", &view("e-0", "c-1", BASE - 1), BASE + 20).expect("fits");
        assert!(produced(&late).is_empty(), "dated before the erasure: dropped");
        let retry = feed(&mut core, 0, 3, "c-1", &view("e-1", "c-1", BASE + 30), BASE + 30).expect("fits");
        assert!(produced(&retry).is_empty(), "a retry of an erased event: dropped");
        let back = feed(&mut core, 0, 4, "c-1", &view("e-9", "c-1", BASE + 40), BASE + 40).expect("fits");
        assert_eq!(produced(&back), vec![("out", Some("c-1"), some("1"))], "a new relationship starts at 1");
    }

    #[test]
    fn given_a_customer_without_state_before_and_after_a_transaction_then_no_changelog_record_is_written() {
        let mut core = core();
        // Never seen, erased: nothing was or is stored under c-1; only the erasure's marker.
        let erase = event_bytes("e-1", "c-1", BASE, EventPayload::ErasureRequested);
        feed(&mut core, 0, 0, "c-1", &erase, BASE).expect("fits");
        // Seen and erased within one transaction: nothing of c-2 was committed either.
        feed(&mut core, 0, 1, "c-2", &view("e-2", "c-2", BASE), BASE).expect("fits");
        let erase = event_bytes("e-3", "c-2", BASE + 1, EventPayload::ErasureRequested);
        feed(&mut core, 0, 2, "c-2", &erase, BASE + 1).expect("fits");
        let (commit, _) = plan(&mut core);
        let records = produced(&commit);
        assert_eq!(records.len(), 2, "two markers, no tombstones: {records:?}");
        assert!(
            records.iter().all(|(_, key, value)| !matches!(*key, Some("c-1" | "c-2")) && value.is_some())
        );
    }

    #[test]
    fn given_an_erasure_past_its_horizon_then_the_next_record_is_applied_without_waiting_for_a_sweep() {
        let mut core = core();
        let erase = event_bytes("e-1", "c-1", BASE, EventPayload::ErasureRequested);
        feed(&mut core, 0, 0, "c-1", &erase, BASE).expect("fits");
        let day = 86_400_000;
        let inside =
            feed(&mut core, 0, 1, "c-1", &view("e-2", "c-1", BASE - 1), BASE + day - 1).expect("fits");
        assert!(produced(&inside).is_empty(), "within the 1-day horizon: dated before the erasure, dropped");
        let past = feed(&mut core, 0, 2, "c-1", &view("e-3", "c-1", BASE - 1), BASE + day).expect("fits");
        assert_eq!(
            produced(&past),
            vec![("out", Some("c-1"), some("1"))],
            "at the horizon the marker is gone"
        );
        let (commit, _) = plan(&mut core);
        let tombstones =
            produced(&commit).into_iter().filter(|(_, key, value)| *key != Some("c-1") && value.is_none());
        assert_eq!(tombstones.count(), 1, "the marker's changelog record is tombstoned");
    }

    #[test]
    fn given_a_record_from_before_state_versions_when_restored_encoded_then_it_is_held_as_this_build_writes_it()
     {
        let entry = Entry {
            recent: VecDeque::from([event_id_hash("e-1")]),
            state: Some(Count { count: 2, idle_at: None, ballast: String::new() }),
            merged_into: None,
            unmarked: Cell::new(false),
        };
        // Written before the tag (2026-11): MessagePack alone, read as state version 1, the
        // window an array of integers (by hand: this build writes a byte string).
        let mut untagged = vec![0x93, 0x91, 0xcf];
        untagged.extend(event_id_hash("e-1").to_be_bytes());
        untagged.extend([0x93, 0x02, 0xc0, 0xa0, 0xc0]);
        let mut reader = ChangelogPartition::default();
        reader.read(0, b"c-1", Some(&untagged), None, 0).expect("read as it is");
        let restored = reader.finish(&Tally, IdleState::Encoded, IdsLayout::Bytes, || {}).expect("decodes");
        let mut tagged = Vec::new();
        crate::changelog::encode::<Tally>(&entry, IdsLayout::Bytes, &mut tagged);
        let Restored::Encoded { record, .. } = &restored.customers[0].1 else { panic!("held encoded") };
        assert_eq!(record, &tagged, "held tagged");
        let mut core = core_with(10_000);
        core.on_revoked(&[0]);
        core.on_assigned([0]);
        core.take_pending_restore();
        core.install(0, restored, false);
        let retried = feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        assert!(produced(&retried).is_empty(), "its window came back");
        let next = feed(&mut core, 0, 1, "c-1", &view("e-2", "c-1", BASE), BASE).expect("fits");
        assert_eq!(produced(&next), vec![("out", Some("c-1"), some("3"))], "its state came back");
    }

    #[test]
    fn given_customers_held_compressed_then_their_states_survive_commits_and_a_restore() {
        let customers: Vec<String> = (0..20).map(|index| format!("c-{index}")).collect();
        let mut core = core();
        let mut changelog = Vec::new();
        let mut offset = 0;
        // Every customer's first transaction has the same two event ids: the dictionary learns
        // their hashes from the first 8 customers' records (a record of ids it never saw is random
        // bytes, and may not shorten). A second transaction adds one more.
        let rounds: [&[&str]; 2] = [&["e-0", "e-1"], &["e-2"]];
        for ids in rounds {
            for customer in &customers {
                for id in ids {
                    feed(&mut core, 0, offset, customer, &view(id, customer, BASE), BASE).expect("fits");
                    offset += 1;
                }
            }
            plan_into(&mut core, &mut changelog).expect("fits").expect("a transaction is open");
            core.committed();
        }
        let held = core.partitions.get(&0).expect("partition 0").store.compressed_records();
        assert!(held > 0, "records held compressed once the first 8 trained the dictionary");
        for customer in &customers {
            assert_eq!(core.state_of(0, customer).map(|count| count.count), Some(3), "{customer}");
        }
        let mut fresh = core_with(10_000);
        fresh.on_revoked(&[0]);
        fresh.on_assigned([0]);
        fresh.take_pending_restore();
        fresh.install(0, read_back(&changelog, 86_400_000), false);
        assert!(fresh.partitions.get(&0).expect("partition 0").store.compressed_records() > 0);
        for customer in &customers {
            let retried =
                feed(&mut fresh, 0, offset, customer, &view("e-2", customer, BASE), BASE).expect("fits");
            assert!(produced(&retried).is_empty(), "{customer}'s dedupe window came back");
            assert_eq!(fresh.state_of(0, customer).map(|count| count.count), Some(3), "{customer}");
            offset += 1;
        }
    }

    #[test]
    fn given_a_committed_changelog_when_restored_then_windows_states_and_markers_come_back() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        feed(&mut core, 0, 1, "c-2", &view("e-2", "c-2", BASE), BASE).expect("fits");
        let erase = event_bytes("e-3", "c-2", BASE + 1, EventPayload::ErasureRequested);
        feed(&mut core, 0, 2, "c-2", &erase, BASE + 1).expect("fits");
        let mut commit = Vec::new();
        plan_into(&mut core, &mut commit).expect("fits").expect("a transaction is open");
        core.committed();
        // Read back as the restore reads a changelog partition, into a fresh core.
        let restored = read_back(&commit, 86_400_000);
        assert_eq!(restored.position("in"), Some(3), "the state is as of the events' offset 3");
        assert_eq!(restored.position("handoff"), None);
        let mut fresh = core_with(10_000);
        fresh.on_revoked(&[0]);
        fresh.on_assigned([0]);
        fresh.take_pending_restore();
        assert!(!fresh.install(0, restored, false), "a new assignment resumes where the group committed");
        let again = feed(&mut fresh, 0, 3, "c-1", &view("e-1", "c-1", BASE), BASE + 2).expect("fits");
        assert!(produced(&again).is_empty(), "the dedupe window came back");
        let next = feed(&mut fresh, 0, 4, "c-1", &view("e-4", "c-1", BASE), BASE + 2).expect("fits");
        assert_eq!(produced(&next), vec![("out", Some("c-1"), some("2"))], "the state came back");
        let erased = feed(&mut fresh, 0, 5, "c-2", &view("e-0", "c-2", BASE - 5), BASE + 3).expect("fits");
        assert!(produced(&erased).is_empty(), "the marker came back");
        let mut newer = ChangelogPartition::default();
        newer.read(0, b"c-9", Some(b"\xc1\x09"), None, 0).expect("read as it is");
        let error = newer
            .finish(&Tally, IdleState::Decoded, IdsLayout::Bytes, || {})
            .err()
            .expect("a state written by a newer release does not decode");
        assert!(error.contains("newer release"), "{error}");
        let position = crate::changelog::position_key("in");
        let value = crate::changelog::position_value();
        // Each record: its value and its position header.
        type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
        let restored_position = |records: &[Record<'_>]| {
            let mut reader = ChangelogPartition::default();
            for (value, header) in records {
                reader.read(0, position.as_bytes(), *value, *header, 0)?;
            }
            Ok::<_, String>(
                reader.finish(&Tally, IdleState::Decoded, IdsLayout::Bytes, || {})?.position("in"),
            )
        };
        assert!(restored_position(&[(Some(&value), Some(b"x"))]).is_err(), "not an offset");
        assert!(restored_position(&[(Some(&value), None)]).is_err(), "no offset");
        assert_eq!(restored_position(&[(Some(&value), Some(b"7"))]), Ok(Some(7)));
        assert_eq!(restored_position(&[(Some(&value), Some(b"7")), (None, None)]), Ok(None), "tombstoned");
    }

    /// What a release from before positions does with a position record: it decodes the value
    /// as a customer's entry and gets nothing. The bytes are those such a release wrote and
    /// reads (tag, state version 1, an empty window as an empty array, no state, no merge).
    #[test]
    fn an_older_release_reads_a_position_record_as_a_customer_with_nothing() {
        assert_eq!(crate::changelog::position_value(), [0xc1, 0x01, 0x93, 0x90, 0xc0, 0xc0]);
        let entry = crate::changelog::decode(&Tally, &crate::changelog::position_value()).expect("decodes");
        assert!(entry.state.is_none() && entry.recent.is_empty() && entry.merged_into.is_none());
    }

    /// Customer ids are any string (SPEC 2): ones that look like the runtime's reserved keys
    /// commit and restore as customers, and leave the positions and markers alone.
    #[test]
    fn given_customers_named_like_reserved_keys_then_they_restore_as_customers() {
        let mut core = core();
        let marker_like = crate::erasure::changelog_key(&[7; 32]);
        let ids = ["\0position:in".to_owned(), marker_like];
        for (offset, id) in ids.iter().enumerate() {
            let event = view(&format!("e-{offset}"), id, BASE);
            feed(&mut core, 0, offset as i64, id, &event, BASE).expect("fits");
        }
        let mut commit = Vec::new();
        plan_into(&mut core, &mut commit).expect("fits").expect("a transaction is open");
        let restored = read_back(&commit, 0);
        assert_eq!(restored.position("in"), Some(2), "the events' next offset");
        assert!(restored.markers.is_empty(), "no marker");
        let mut restored_ids: Vec<String> = restored.customers.iter().map(|(id, _)| id.clone()).collect();
        restored_ids.sort();
        let mut expected = ids.to_vec();
        expected.sort();
        assert_eq!(restored_ids, expected, "both customers, under their own ids");
    }

    #[test]
    fn given_revoked_and_reset_partitions_then_their_state_is_dropped_and_restored() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        feed(&mut core, 1, 0, "c-2", &view("e-2", "c-2", BASE), BASE).expect("fits");
        // Lost: the driver forgets the partition, then aborts (a revoke that is not lost commits
        // first, see driver.rs).
        core.on_revoked(&[1]);
        let (_, offsets) = plan(&mut core);
        assert_eq!(
            offsets,
            vec![(Input::Events, 0, 1)],
            "a lost partition's progress is not this member's to commit"
        );
        core.reset();
        assert!(!core.has_open_transaction(), "a re-created producer's transaction is gone");
        assert_eq!(core.take_pending_restore(), vec![0], "what is owned is restored");
    }

    /// Feeds views of c-1 to partition 0 until the open transaction is due by its record count;
    /// returns that count (at most 2,000).
    fn records_until_due(core: &mut EngineCore<Tally>, offset: &mut i64) -> usize {
        for records in 1..=2_000 {
            let id = format!("e-{offset}");
            feed(core, 0, *offset, "c-1", &view(&id, "c-1", BASE), BASE).expect("fits");
            *offset += 1;
            if core.commit_due(Instant::now()) {
                return records;
            }
        }
        2_000
    }

    /// Restores every partition waiting for it, empty (as after a reset or an abort).
    fn restore_pending(core: &mut EngineCore<Tally>) {
        for partition in core.take_pending_restore() {
            core.install(partition, RestoredPartition::default(), false);
        }
    }

    #[test]
    fn given_failed_transactions_then_the_next_hold_a_quarter_of_their_records_until_commits_double_it_back()
    {
        // Neither age nor freshness makes a transaction due here: only its record count.
        let hour = Duration::from_secs(3_600);
        let mut core = assigned(
            Tally,
            CoreSettings { commit_interval: hour, commit_keeping_up: hour, ..settings(1_000, None) },
        );
        let mut offset = 0;
        assert_eq!(records_until_due(&mut core, &mut offset), 1_000, "COMMIT_MAX_RECORDS at first");
        plan(&mut core);
        core.committed();

        for _ in 0..400 {
            feed(&mut core, 0, offset, "c-1", &view(&format!("e-{offset}"), "c-1", BASE), BASE)
                .expect("fits");
            offset += 1;
        }
        core.drop_ledger();
        core.reset();
        restore_pending(&mut core);
        assert_eq!(records_until_due(&mut core, &mut offset), 100, "a quarter of the 400 that failed");

        core.aborted();
        restore_pending(&mut core);
        assert_eq!(records_until_due(&mut core, &mut offset), 25, "an abort of 100: a quarter again");
        core.aborted();
        restore_pending(&mut core);
        assert_eq!(records_until_due(&mut core, &mut offset), 16, "never fewer than 16");

        let mut limits = Vec::new();
        for _ in 0..8 {
            plan(&mut core);
            core.committed();
            limits.push(records_until_due(&mut core, &mut offset));
        }
        assert_eq!(
            limits,
            [32, 64, 128, 256, 512, 1_000, 1_000, 1_000],
            "doubled by each commit, up to the setting"
        );

        core.aborted();
        restore_pending(&mut core);
        core.aborted();
        restore_pending(&mut core);
        assert_eq!(
            records_until_due(&mut core, &mut offset),
            250,
            "a quarter of the 1,000 aborted; the second abort had no transaction and changes nothing"
        );
    }

    /// The handoff record among `actions`: (winner, partition, value, cause).
    fn handoff_record(actions: &[Action]) -> (String, Option<i32>, Vec<u8>, Option<String>) {
        actions
            .iter()
            .find_map(|action| match action {
                Action::Produce(record) if record.topic.as_ref() == "handoff" => Some((
                    record.key.clone().expect("keyed"),
                    record.partition,
                    record.value.clone().expect("a value"),
                    record.cause.clone(),
                )),
                _ => None,
            })
            .expect("a handoff record")
    }

    #[test]
    fn given_a_merge_then_the_state_leaves_with_a_tombstone_and_reaches_the_winner_once() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        feed(&mut core, 0, 1, "c-1", &view("e-2", "c-1", BASE + 1), BASE + 1).expect("fits");
        let merge = view_of("e-3", "c-1", BASE + 2, "merge:c-2");
        let actions = feed(&mut core, 0, 2, "c-1", &merge, BASE + 2).expect("fits");
        // The loser's side: what the processor emits for the event, then the state on its way,
        // keyed by the winner and left to the partitioner (the winner's partition).
        assert_eq!(produced(&actions)[0], ("out", Some("c-1"), some("3")));
        let (winner, partition, value, cause) = handoff_record(&actions);
        assert_eq!((winner.as_str(), partition, cause.as_deref()), ("c-2", None, Some("e-3")));
        assert_eq!(core.state_of(0, "c-1"), None, "the loser keeps no state");
        let (commit, offsets) = plan(&mut core);
        let Action::Produce(changelog) = &commit[0] else { panic!("a changelog record") };
        let kept = crate::changelog::decode(&Tally, changelog.value.as_deref().expect("not a tombstone"))
            .expect("decodes");
        assert_eq!((changelog.key.as_deref(), kept.state), (Some("c-1"), None), "only the dedupe memory");
        assert_eq!(kept.recent.len(), 3);
        assert_eq!(offsets, vec![(Input::Events, 0, 3)]);
        core.committed();

        // The winner's side, on its partition, in a later transaction.
        feed(&mut core, 1, 0, "c-2", &view("e-9", "c-2", BASE), BASE).expect("fits");
        let applied = feed_input(&mut core, Input::Handoff, 1, 7, "c-2", &value, BASE + 3).expect("fits");
        assert_eq!(produced(&applied), vec![("out", Some("c-2"), some("4 with c-1's"))]);
        let Action::Produce(merged) = &applied[0] else { panic!("an output") };
        assert_eq!(merged.cause.as_deref(), Some("e-3"), "the merge names the event that asked for it");
        let (commit, offsets) = plan(&mut core);
        assert_eq!(produced(&commit).len(), 1, "the winner's changelog record");
        assert_eq!(offsets, vec![(Input::Events, 1, 1), (Input::Handoff, 1, 8)]);
        core.committed();

        // The same handoff again (a second copy of the record): applied once.
        let again = feed_input(&mut core, Input::Handoff, 1, 8, "c-2", &value, BASE + 4).expect("fits");
        assert!(produced(&again).is_empty(), "a handoff is applied once, by its id");
        // A retry of one of the loser's events, now keyed by the winner (as identity re-keys it).
        let retried = feed(&mut core, 1, 1, "c-2", &view("e-1", "c-2", BASE), BASE + 5).expect("fits");
        assert!(produced(&retried).is_empty(), "the loser's dedupe memory moved with the state");
        assert_eq!(core.state_of(1, "c-2").map(|count| count.count), Some(4));
    }

    #[test]
    fn given_no_handoff_topic_when_an_event_asks_for_a_merge_then_it_is_dead_lettered_and_the_state_stays() {
        let mut core = core_of(10_000, None);
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let merge = view_of("e-2", "c-1", BASE + 1, "merge:c-2");
        let actions = feed(&mut core, 0, 1, "c-1", &merge, BASE + 1).expect("fits");
        let dead = produced(&actions);
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].0, "dlq");
        assert_eq!(header(&actions[0], "error.code"), Some("merge_without_handoff"));
        assert_eq!(core.state_of(0, "c-1").map(|count| count.count), Some(1), "nothing moved or counted");
    }

    #[test]
    fn given_an_event_asking_to_merge_its_customer_into_itself_then_it_is_dead_lettered() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let merge = view_of("e-2", "c-1", BASE + 1, "merge:c-1");
        let actions = feed(&mut core, 0, 1, "c-1", &merge, BASE + 1).expect("fits");
        assert_eq!(produced(&actions).len(), 1);
        assert_eq!(header(&actions[0], "error.code"), Some("merge_into_itself"));
        assert_eq!(core.state_of(0, "c-1").map(|count| count.count), Some(1), "untouched");
    }

    #[test]
    fn given_a_bad_handoff_record_or_an_erased_winner_then_nothing_is_merged() {
        let mut core = core();
        let garbage = feed_input(&mut core, Input::Handoff, 1, 0, "c-2", b"\x93garbage", BASE).expect("fits");
        assert_eq!(header(&garbage[1], "error.code"), Some("handoff_unreadable"));
        assert_eq!(header(&garbage[1], "source.topic"), Some("handoff"));

        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        let merge = view_of("e-2", "c-1", BASE + 10, "merge:c-3");
        let (_, _, value, _) =
            handoff_record(&feed(&mut core, 0, 1, "c-1", &merge, BASE + 10).expect("fits"));
        // The winner is erased after the merge's time, before its handoff arrives.
        let erase = event_bytes("e-7", "c-3", BASE + 50, EventPayload::ErasureRequested);
        feed(&mut core, 1, 1, "c-3", &erase, BASE + 50).expect("fits");
        let dropped = feed_input(&mut core, Input::Handoff, 1, 1, "c-3", &value, BASE + 60).expect("fits");
        assert!(produced(&dropped).is_empty(), "an erased winner takes nothing dated before the erasure");
        assert_eq!(core.state_of(1, "c-3"), None);
    }

    #[test]
    fn given_a_handoff_appended_past_a_markers_horizon_then_events_still_meet_the_marker() {
        let mut core = core();
        let day = 86_400_000;
        feed(&mut core, 1, 0, "c-3", &view("e-1", "c-3", BASE), BASE).expect("fits");
        let erase = event_bytes("e-2", "c-3", BASE + 10, EventPayload::ErasureRequested);
        feed(&mut core, 1, 1, "c-3", &erase, BASE + 10).expect("fits");
        feed(&mut core, 0, 0, "c-1", &view("e-3", "c-1", BASE), BASE).expect("fits");
        let merge = view_of("e-4", "c-1", BASE + 5, "merge:c-3");
        let (_, _, value, _) = handoff_record(&feed(&mut core, 0, 1, "c-1", &merge, BASE + 5).expect("fits"));
        // The merge is dated before c-3's erasure, but its handoff was appended after the 1-day
        // horizon: by its own time no marker judges it.
        let late =
            feed_input(&mut core, Input::Handoff, 1, 0, "c-3", &value, BASE + 10 + day + 1).expect("fits");
        assert_eq!(produced(&late), vec![("out", Some("c-3"), some("2 with c-1's"))]);
        let (commit, _) = plan(&mut core);
        let tombstones = produced(&commit).into_iter().filter(|(_, _, value)| value.is_none()).count();
        assert_eq!(tombstones, 0, "the marker's changelog record stays: {commit:?}");
        core.committed();
        // The events partition is behind: a retry of c-3's event from before the erasure,
        // appended within the horizon, still meets the marker.
        let retried = feed(&mut core, 1, 2, "c-3", &view("e-1", "c-3", BASE), BASE + day).expect("fits");
        assert!(produced(&retried).is_empty(), "{retried:?}");
        assert_eq!(core.state_of(1, "c-3").map(|count| count.count), Some(2));
    }

    #[test]
    fn given_an_output_keyed_by_something_else_then_the_partitioner_places_it_by_its_key() {
        let mut core = core();
        let routed = view_of("e-1", "c-1", BASE, "rekey:email:a@example.com");
        let actions = feed(&mut core, 1, 0, "c-1", &routed, BASE).expect("fits");
        let Action::Produce(record) = &actions[1] else { panic!("an output") };
        assert_eq!(
            (record.topic.as_ref(), record.key.as_deref(), record.partition),
            ("routed", Some("email:a@example.com"), None),
            "not the input's partition 1: where its key hashes to"
        );
        let counted = feed(&mut core, 1, 1, "c-1", &view("e-2", "c-1", BASE), BASE).expect("fits");
        let Action::Produce(record) = &counted[0] else { panic!("an output") };
        assert_eq!(record.partition, Some(1), "a record of the customer stays on the input's partition");
    }

    #[test]
    fn given_a_winner_merged_away_meanwhile_then_a_handoff_to_it_follows_under_the_same_id() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-2", &view("e-20", "c-2", BASE), BASE).expect("fits");
        feed(&mut core, 0, 1, "c-2", &view_of("m-23", "c-2", BASE + 1, "merge:c-3"), BASE + 1).expect("fits");
        feed(&mut core, 1, 0, "c-1", &view("e-10", "c-1", BASE), BASE).expect("fits");
        let merge = feed(&mut core, 1, 1, "c-1", &view_of("m-12", "c-1", BASE + 2, "merge:c-2"), BASE + 2);
        let (_, _, value, _) = handoff_record(&merge.expect("fits"));
        let reached = feed_input(&mut core, Input::Handoff, 0, 0, "c-2", &value, BASE + 3).expect("fits");
        let (winner, partition, forwarded, cause) = handoff_record(&reached);
        assert_eq!((winner.as_str(), partition, cause.as_deref()), ("c-3", None, Some("m-12")));
        assert_eq!(forwarded, value, "the same handoff, on to where c-2 went");
        assert!(
            produced(&reached).iter().all(|(topic, _, _)| *topic == "handoff"),
            "nothing merged into c-2"
        );
        let again = feed_input(&mut core, Input::Handoff, 0, 1, "c-2", &value, BASE + 4).expect("fits");
        assert!(produced(&again).is_empty(), "a second copy is dropped where it passed");
    }

    #[test]
    fn given_a_merged_away_customer_then_a_merge_with_nothing_to_move_keeps_its_dedupe_ids() {
        let mut core = core();
        feed(&mut core, 0, 0, "c-1", &view("e-1", "c-1", BASE), BASE).expect("fits");
        feed(&mut core, 0, 1, "c-1", &view_of("m-1", "c-1", BASE + 1, "merge:c-2"), BASE + 1).expect("fits");
        core.committed();
        // Tally counts the merge view itself: the second merge starts a count, then hands it on.
        let second = feed(&mut core, 0, 2, "c-1", &view_of("m-2", "c-1", BASE + 2, "merge:c-2"), BASE + 2);
        handoff_record(&second.expect("fits"));
        let retried = feed(&mut core, 0, 3, "c-1", &view("e-1", "c-1", BASE), BASE + 3).expect("fits");
        assert!(produced(&retried).is_empty(), "the pre-merge event is still a duplicate");
        let (commit, _) = plan(&mut core);
        let Action::Produce(changelog) = &commit[0] else { panic!("a changelog record") };
        assert!(changelog.value.is_some(), "not a tombstone: the dedupe ids and the merge stay");
    }

    #[test]
    fn given_a_handoff_written_by_a_newer_release_then_the_service_stops_without_moving_on() {
        let mut core = core();
        let handed = crate::handoff::tests_support::value_with_state_version(99);
        let actions = feed_input(&mut core, Input::Handoff, 1, 5, "c-2", &handed, BASE).expect("no abort");
        assert!(produced(&actions).is_empty(), "not dead-lettered: only the newer release can apply it");
        assert!(core.take_fatal().is_some_and(|reason| reason.contains("newer release")));
        let (_, offsets) = plan(&mut core);
        assert_eq!(offsets, vec![], "its offset is not committed");
    }

    /// Counts each customer's events; a view of the url "relay:X" writes a note to X on its
    /// feedback output ("notes", `key|event_id|occurred_at`), which counts as one of X's events
    /// (the relaying customer keeps no state, only its dedupe memory).
    #[derive(Debug)]
    struct Relay;

    #[derive(Debug)]
    enum Relayed {
        Event(TouchpointEvent),
        Note { key: String, event_id: String, at: i64 },
    }

    impl InputEvent for Relayed {
        fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
            TouchpointEvent::decode(bytes, now).map(Relayed::Event)
        }

        fn decode_feedback(bytes: &[u8], _now: DateTime<Utc>) -> Result<Self, Rejection> {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            match text.split('|').collect::<Vec<_>>()[..] {
                [key, event_id, at] if at.parse::<i64>().is_ok() => Ok(Relayed::Note {
                    key: key.to_owned(),
                    event_id: event_id.to_owned(),
                    at: at.parse().expect("checked"),
                }),
                _ => Err(Rejection::single(ErrorCode::Malformed, "$", "not a note")),
            }
        }

        fn key(&self) -> &str {
            match self {
                Relayed::Event(event) => &event.customer_id,
                Relayed::Note { key, .. } => key,
            }
        }

        fn event_id(&self) -> &str {
            match self {
                Relayed::Event(event) => &event.event_id,
                Relayed::Note { event_id, .. } => event_id,
            }
        }

        fn deduped(&self) -> bool {
            matches!(self, Relayed::Event(_))
        }

        fn occurred_at_millis(&self) -> i64 {
            match self {
                Relayed::Event(event) => event.occurred_at_millis(),
                Relayed::Note { at, .. } => *at,
            }
        }

        fn is_erasure(&self) -> bool {
            matches!(self, Relayed::Event(event) if event.is_erasure())
        }
    }

    impl Processor for Relay {
        type Input = Relayed;
        type State = u32;
        type Record = String;
        const OUTPUTS: &'static [&'static str] = &["out", "notes"];
        const FEEDBACK: Option<&'static str> = Some("notes");
        const DEDUPE_WITHOUT_STATE: bool = true;

        fn apply(
            &self,
            state: &mut Option<u32>,
            input: &Relayed,
            _now: DateTime<Utc>,
        ) -> Vec<Output<String>> {
            if input.is_erasure() {
                *state = None;
                return Vec::new();
            }
            if let Relayed::Event(event) = input
                && let EventPayload::PageViewed { url } = &event.payload
                && let Some(to) = url.strip_prefix("relay:")
            {
                let note = format!("{to}|note-{}|{}", event.event_id, event.occurred_at_millis());
                return vec![Output::rekeyed("notes", to.to_owned(), Some(note))];
            }
            let count = state.get_or_insert(0);
            *count += 1;
            vec![Output::new("out", input.key().to_owned(), Some(count.to_string()))]
        }
    }

    /// A Relay on partition 0, its notes read back as its feedback topic.
    fn relay_core() -> EngineCore<Relay> {
        let settings = CoreSettings {
            outputs: OutputTopics::new(
                vec![("out", "out".into()), ("notes", "notes".into())],
                &TopicWriters::default(),
            ),
            feedback_topic: Some("notes".into()),
            ..settings(10_000, None)
        };
        assigned(Relay, settings)
    }

    #[test]
    fn given_a_feedback_topic_then_its_records_are_applied_as_of_their_time_and_no_erasure_marker_judges_them()
     {
        let mut core = relay_core();
        // c-1 writes a note to c-2 (the same partition here: the topics are co-partitioned).
        let relayed = feed_input(
            &mut core,
            Input::Events,
            0,
            0,
            "c-1",
            &view_of("e-1", "c-1", BASE, "relay:c-2"),
            BASE,
        )
        .expect("fits");
        let (_, _, note) = produced(&relayed).pop().expect("a note");
        let note = note.expect("a value");
        assert_eq!(produced(&relayed), vec![("notes", Some("c-2"), Some(note.clone()))]);
        // c-2 is erased as of BASE + 10: its own late event from before is dropped, the note
        // (written by the service, dated BASE) is applied.
        let erasure = event_bytes("e-erase", "c-2", BASE + 10, EventPayload::ErasureRequested);
        feed_input(&mut core, Input::Events, 0, 1, "c-2", &erasure, BASE + 20).expect("fits");
        let late = feed_input(&mut core, Input::Events, 0, 2, "c-2", &view("e-late", "c-2", BASE), BASE + 30)
            .expect("fits");
        assert!(produced(&late).is_empty(), "an event from before the erasure is dropped");
        // c-1 keeps its dedupe memory without state; c-2's erasure left no entry behind.
        assert_eq!(core.customer_count(), 1);
        let retry = view_of("e-1", "c-1", BASE, "relay:c-2");
        let retried = feed_input(&mut core, Input::Events, 0, 3, "c-1", &retry, BASE + 35).expect("fits");
        assert!(produced(&retried).is_empty(), "a retry of a customer without state is dropped");
        // Stamped by its writer a minute ahead: applied as of then, the events' clock unmoved.
        let noted = feed_input(&mut core, Input::Feedback, 0, 5, "c-2", note.as_bytes(), BASE + 59_000)
            .expect("fits");
        assert_eq!(produced(&noted), vec![("out", Some("c-2"), some("1"))]);
        assert_eq!(core.partitions[&0].store.clock(), BASE + 35);
        // A record the feedback decoder refuses is dead-lettered naming the feedback topic.
        let refused =
            feed_input(&mut core, Input::Feedback, 0, 6, "c-2", b"garbage", BASE + 50).expect("fits");
        let dead =
            refused.iter().find(|action| header(action, "source.topic").is_some()).expect("dead-lettered");
        assert_eq!(header(dead, "source.topic"), Some("notes"));
        let (_, offsets) = plan(&mut core);
        assert_eq!(offsets, vec![(Input::Events, 0, 4), (Input::Feedback, 0, 7)]);
    }

    #[test]
    fn given_a_backlog_of_events_then_fresh_feedback_records_do_not_make_the_transaction_commit_sooner() {
        // (input, appended, applied) of each record, then when the transaction is due.
        let commits_after = |records: &[(Input, i64, i64)]| {
            let mut core = relay_core();
            let mut opened = None;
            for (offset, &(input, appended, applied)) in records.iter().enumerate() {
                let payload = match input {
                    Input::Events => view(&format!("e-{offset}"), "c-1", appended),
                    _ => format!("c-1|note-{offset}|{appended}").into_bytes(),
                };
                let record = InputRecord {
                    input,
                    partition: 0,
                    offset: offset as i64,
                    key: Some(b"c-1"),
                    payload: Some(&payload),
                    timestamp: Some(appended),
                    trace: None,
                };
                let now = clock(applied);
                opened.get_or_insert(now.instant);
                core.on_record(&record, now, &mut Vec::new()).expect("fits");
            }
            let opened = opened.expect("a record");
            [19, 20, 99, 100].map(|ms| core.commit_due(opened + Duration::from_millis(ms)))
        };
        let minute_late = BASE + 60_000;
        assert_eq!(
            commits_after(&[(Input::Events, BASE, minute_late), (Input::Feedback, minute_late, minute_late)]),
            [false, false, false, true],
            "a backlog's event, then the service's own note written just now: after the interval"
        );
        assert_eq!(
            commits_after(&[(Input::Feedback, BASE, BASE), (Input::Events, BASE, minute_late)]),
            [false, false, false, true],
            "a fresh note, then a backlog's event: after the interval"
        );
        assert_eq!(
            commits_after(&[(Input::Events, BASE, minute_late), (Input::Handoff, minute_late, minute_late)]),
            [false, false, false, true],
            "a backlog's event, then a handoff written just now: after the interval"
        );
        assert_eq!(
            commits_after(&[(Input::Feedback, BASE, BASE + 5)]),
            [false, true, true, true],
            "notes alone (a merge's hop while no events come): after 20 ms"
        );
        assert_eq!(
            commits_after(&[(Input::Events, BASE, BASE), (Input::Feedback, BASE - 60_000, BASE)]),
            [false, true, true, true],
            "a fresh event, then an old note: the events decide"
        );
    }
}
