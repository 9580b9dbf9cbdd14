//! The exactly-once engine: per-partition state, the open transaction, commit, abort and reset.
//!
//! It lives behind a mutex shared by the processing loop and the consumer's rebalance callbacks,
//! which librdkafka runs inside `poll` on the loop's own thread: the lock is never contended, it
//! only lets the revoke callback commit the open transaction before partitions leave.

use std::collections::{BTreeSet, HashMap, HashSet};

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use omnistream_model::{ErrorCode, EventPayload, decode_and_validate};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::config::RuntimeConfig;
use crate::erasure::{ErasureMarker, MarkerId, MarkerKey, Markers};
use crate::kafka::ReadToEndContext;
use crate::metrics::{ErrorCodeLabel, Metrics, RecordOutcome, TransactionOutcome, TransactionOutcomeLabel};
use crate::processor::{Output, Processor};
use crate::record_limits::{RecordLimits, record_size};
use crate::server::Health;
use crate::store::{Admission, Customers, PartitionStore, event_id_hash};
use crate::{RuntimeError, TxnProducer};

/// An input partition: its store and its progress in the open transaction.
#[derive(Debug)]
struct PartitionData<S> {
    store: PartitionStore<S>,
    /// The offset after the last record processed in the open transaction.
    next_offset: Option<i64>,
}

/// The open transaction: whose changelog records to write when it commits.
#[derive(Debug)]
struct Transaction {
    started: Instant,
    records: usize,
    /// Every customer (by partition) this transaction changed, with the offset of the last input
    /// record applied to them (`None` if only timers did): the cause of a changelog record.
    touched: FxHashMap<i32, FxHashMap<String, Option<i64>>>,
    /// Create-time (unix millis) of every input record, for the end-to-end latency.
    record_timestamps: Vec<i64>,
    /// Erasure markers this transaction created or expired, by partition.
    markers: Vec<(i32, MarkerId)>,
}

impl Transaction {
    fn touch(&mut self, partition: i32, customer_id: &str, offset: Option<i64>) {
        let ids = self.touched.entry(partition).or_default();
        match ids.get_mut(customer_id) {
            Some(cause) => *cause = offset.or(*cause),
            None => {
                ids.insert(customer_id.to_owned(), offset);
            }
        }
    }
}

/// How a failed transactional call must be handled (librdkafka's error classes, plus Jepsen's
/// advice to treat an unknown outcome as a reason to start over, not to retry).
#[derive(Debug)]
enum Failure {
    /// Abort, rebuild state and positions from Kafka, go on.
    Abortable(KafkaError),
    /// The outcome is unknown (a timeout): re-create the producer and rebuild state from Kafka.
    Indefinite(KafkaError),
    /// The producer is dead (fenced and the like): exit non-zero.
    Fatal(KafkaError),
    /// The input record at this offset made an output or changelog record too large for its
    /// topic: abort, rebuild, and dead-letter that record when it comes again.
    TooLarge { partition: i32, offset: i64, message: String },
}

/// How far a broker's clock may run ahead of this host's: an append time beyond it is a producer's
/// create time, not a broker's.
const MAX_BROKER_CLOCK_LEAD_MS: i64 = 60_000;

/// Why a record goes to the DLQ: its `error.code` header and the `dlq_records` metric's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadLetterReason {
    /// Decoding or validation refused it (SPEC 2).
    Invalid(ErrorCode),
    /// Its key is not its `customer_id`: one customer must live on one partition.
    KeyMismatch,
    /// It would break one of the customer's documented limits (SPEC 4, Limits).
    StateLimit,
    /// Its outputs or the customer's state would not fit their topics (SPEC 4, Limits).
    RecordTooLarge,
}

impl DeadLetterReason {
    fn code(self) -> &'static str {
        match self {
            DeadLetterReason::Invalid(code) => code.as_str(),
            DeadLetterReason::KeyMismatch => "key_mismatch",
            DeadLetterReason::StateLimit => "state_limit",
            DeadLetterReason::RecordTooLarge => "record_too_large",
        }
    }
}

fn classify(error: KafkaError) -> Failure {
    match &error {
        KafkaError::Transaction(rd) if rd.is_fatal() => Failure::Fatal(error),
        KafkaError::Transaction(rd) if rd.txn_requires_abort() => Failure::Abortable(error),
        KafkaError::Transaction(rd)
            if rd.is_retriable() || rd.code() == RDKafkaErrorCode::OperationTimedOut =>
        {
            Failure::Indefinite(error)
        }
        KafkaError::Transaction(_) => Failure::Fatal(error),
        // A flush timeout inside commit and the like: the outcome is not known for sure.
        _ => Failure::Indefinite(error),
    }
}

/// Header of every output record naming the `event_id` that caused it.
pub const CAUSE_HEADER: &str = "cause.event_id";

/// The processing loop's clock reading for one iteration: monotonic and wall time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) instant: Instant,
    pub(crate) wall: DateTime<Utc>,
}

pub(crate) type EngineConsumer<P> = BaseConsumer<crate::context::EngineContext<P>>;

/// All state of the processing loop except the consumer.
pub(crate) struct Engine<P: Processor> {
    processor: P,
    config: Arc<RuntimeConfig>,
    producer: TxnProducer,
    metrics: Arc<Metrics>,
    /// Ticked while a restore reads the changelog: that is progress, and it may take minutes.
    health: Arc<Health>,
    partitions: HashMap<i32, PartitionData<P::State>>,
    pending_restore: BTreeSet<i32>,
    /// Partitions to seek to their committed offset once restored: records of theirs arrived
    /// before the restore (and were skipped), or an abort threw their progress away.
    rewind_after_restore: HashSet<i32>,
    transaction: Option<Transaction>,
    pub(crate) needs_reset: bool,
    pub(crate) failure: Option<RuntimeError>,
    /// Records processed, for sampling the processing-time histogram.
    records_seen: u64,
    /// At least one assignment happened (readiness).
    pub(crate) joined: bool,
    limits: RecordLimits,
    marker_key: MarkerKey,
    /// Input records (partition, offset) to dead-letter with `record_too_large` when they are
    /// read again after the abort their outputs caused.
    too_large: FxHashMap<(i32, i64), String>,
}

impl<P: Processor> Engine<P> {
    pub(crate) fn new(
        processor: P,
        config: Arc<RuntimeConfig>,
        producer: TxnProducer,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        limits: RecordLimits,
    ) -> Self {
        Self {
            marker_key: MarkerKey::new(config.erasure.key.as_deref()),
            limits,
            too_large: FxHashMap::default(),
            processor,
            config,
            producer,
            metrics,
            health,
            partitions: HashMap::new(),
            pending_restore: BTreeSet::new(),
            rewind_after_restore: HashSet::new(),
            transaction: None,
            needs_reset: false,
            failure: None,
            records_seen: 0,
            joined: false,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.joined && self.pending_restore.is_empty() && !self.needs_reset
    }

    pub(crate) fn has_pending_restore(&self) -> bool {
        !self.pending_restore.is_empty()
    }

    /// Partitions were assigned: they stay paused until their state is restored.
    pub(crate) fn on_assigned(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.joined = true;
        self.pending_restore.extend(partitions);
        self.metrics.restoring_partitions.set(self.pending_restore.len() as i64);
    }

    /// Partitions are about to be revoked: commit what was done (or abort if they are already
    /// lost to another member), then forget their state.
    pub(crate) fn on_revoked(&mut self, consumer: &EngineConsumer<P>, partitions: &[i32], lost: bool) {
        if lost {
            // Lost partitions belong to another member already: forget them, then abort.
            for partition in partitions {
                self.partitions.remove(partition);
            }
            self.abort(consumer);
        } else {
            self.commit(consumer);
        }
        for partition in partitions {
            self.partitions.remove(partition);
            self.rewind_after_restore.remove(partition);
            self.pending_restore.remove(partition);
            self.metrics.consumer_lag.remove(&crate::metrics::PartitionLabel { partition: *partition });
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        self.metrics.assigned_partitions.set((self.partitions.len() + self.pending_restore.len()) as i64);
        self.metrics.restoring_partitions.set(self.pending_restore.len() as i64);
        self.metrics.customers.set(self.partitions.values().map(|p| p.store.customer_count() as i64).sum());
    }

    fn ensure_transaction(&mut self, now: Instant) -> Result<(), Failure> {
        if self.transaction.is_none() {
            self.producer.begin_transaction().map_err(classify)?;
            self.transaction = Some(Transaction {
                started: now,
                records: 0,
                touched: FxHashMap::default(),
                record_timestamps: Vec::new(),
                markers: Vec::new(),
            });
        }
        Ok(())
    }

    /// Whether the open transaction should be committed now.
    pub(crate) fn commit_due(&self, now: Instant) -> bool {
        self.transaction.as_ref().is_some_and(|t| {
            t.records >= self.config.commit_max_records
                || now.duration_since(t.started) >= self.config.commit_interval
        })
    }

    fn send(&self, record: BaseRecord<'_, str, [u8]>) -> Result<(), Failure> {
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error @ KafkaError::MessageProduction(RDKafkaErrorCode::Fatal), _)) => {
                    return Err(Failure::Fatal(error));
                }
                Err((error, _)) => return Err(Failure::Abortable(error)),
            }
        }
    }

    /// Produces a processor's outputs; those caused by an event carry its id in the header
    /// `cause.event_id`, so any output can be traced back to its input.
    fn send_outputs(&self, partition: i32, outputs: &[Output], cause: Option<&str>) -> Result<(), Failure> {
        for output in outputs {
            let mut record = BaseRecord::to(&output.topic).partition(partition).key(output.key.as_str());
            if let Some(event_id) = cause {
                record = record
                    .headers(OwnedHeaders::new().insert(Header { key: CAUSE_HEADER, value: Some(event_id) }));
            }
            if let Some(value) = &output.value {
                record = record.payload(value.as_slice());
            }
            self.send(record)?;
        }
        Ok(())
    }

    /// Processes one input record inside the open transaction. Failures are handled here.
    pub(crate) fn process(&mut self, consumer: &EngineConsumer<P>, message: &BorrowedMessage<'_>, now: Now) {
        if self.needs_reset || self.failure.is_some() {
            // A rebalance callback inside this poll hit an unknown outcome or a fatal error: the
            // reset (or the exit) comes first, and the reset rewinds to the committed offsets.
            return;
        }
        let partition = message.partition();
        if !self.partitions.contains_key(&partition) {
            // Fetched before its state was restored (or after it was revoked): not ours to apply.
            self.rewind_after_restore.insert(partition);
            return;
        }
        if let Err(failure) = self.try_process(consumer, message, now) {
            self.handle(consumer, failure);
        }
    }

    /// The consumer reached the end of `partition`: its clock may follow the wall clock now.
    pub(crate) fn caught_up(&mut self, partition: i32) {
        if let Some(data) = self.partitions.get_mut(&partition) {
            data.store.on_end_of_partition();
        }
    }

    fn try_process(
        &mut self,
        consumer: &EngineConsumer<P>,
        message: &BorrowedMessage<'_>,
        clock: Now,
    ) -> Result<(), Failure> {
        self.ensure_transaction(clock.instant)?;
        let partition = message.partition();
        let offset = message.offset();
        // SPEC 4, the partition clock: the broker's append time of this record (the events topic
        // uses LogAppendTime), taken as it is, so that a replay applies the record as of the same
        // time; never backwards. Should a topic carry producers' create times, one further ahead
        // of this host's clock than any broker's would be is held to the wall clock.
        let wall = clock.wall.timestamp_millis();
        let stamped = match message.timestamp().to_millis() {
            Some(stamped) if stamped <= wall.saturating_add(MAX_BROKER_CLOCK_LEAD_MS) => stamped,
            _ => wall,
        };
        let data = self.partitions.get_mut(&partition).expect("restored partition");
        let (partition_now, timers_up_to) = data.store.on_record(stamped);
        // A timer due before this record fires before it is applied.
        if !self.fire_due(partition, timers_up_to)? {
            // More timers are due than one transaction takes: this record comes again after the
            // commit, and the next batch of timers with it.
            consumer
                .seek(&self.config.input_topic, partition, Offset::Offset(offset), Duration::from_secs(10))
                .map_err(Failure::Abortable)?;
            return Ok(());
        }
        // Clock reads cost here (no TSC in some VMs): time one record in 32.
        self.records_seen = self.records_seen.wrapping_add(1);
        let timed = self.records_seen.is_multiple_of(32).then(Instant::now);
        self.metrics.consumed.inc();
        let now = DateTime::from_timestamp_millis(partition_now).unwrap_or(clock.wall);
        let key = message.key().map(String::from_utf8_lossy);
        if !self.too_large.is_empty()
            && let Some(text) = self.too_large.remove(&(partition, offset))
        {
            self.dead_letter(message, DeadLetterReason::RecordTooLarge, &text)?;
            return self.processed(message, RecordOutcome::DeadLettered, timed);
        }
        let decoded = match message.payload() {
            None => Err(omnistream_model::Rejection::single(ErrorCode::Malformed, "$", "null value")),
            Some(bytes) => decode_and_validate(bytes, now),
        };
        let outcome = match decoded {
            Err(rejection) => {
                let first = rejection.first();
                self.dead_letter(message, DeadLetterReason::Invalid(first.code), &rejection.to_string())?;
                RecordOutcome::DeadLettered
            }
            Ok(event) if key.as_deref() != Some(event.customer_id.as_str()) => {
                // Single writer per customer needs every event of a customer on one partition.
                let message_text =
                    format!("record key {key:?} is not the customer_id {:?}", event.customer_id);
                self.dead_letter(message, DeadLetterReason::KeyMismatch, &message_text)?;
                RecordOutcome::DeadLettered
            }
            Ok(event) => {
                let data = self.partitions.get_mut(&partition).expect("restored partition");
                let hash = event_id_hash(&event.event_id);
                let erasure = &self.config.erasure;
                let marker_key = &self.marker_key;
                let admission = data.store.admit(
                    &event.customer_id,
                    || marker_key.id(&event.customer_id),
                    event.occurred_at.timestamp_millis(),
                    hash,
                    erasure.suppress_after,
                );
                // The event does not reach the processor: dropped as `Ok(outcome)`, or `Err(why)` it
                // breaks one of the customer's limits.
                let refused = match admission {
                    Admission::Erased => Some(Ok(RecordOutcome::Erased)),
                    Admission::Duplicate => Some(Ok(RecordOutcome::Duplicate)),
                    Admission::New(state) => self.processor.check_limits(state, &event).err().map(Err),
                };
                match refused {
                    Some(Ok(outcome)) => outcome,
                    Some(Err(text)) => {
                        self.dead_letter(message, DeadLetterReason::StateLimit, &text)?;
                        RecordOutcome::DeadLettered
                    }
                    None => {
                        let transaction = self.transaction.as_mut().expect("transaction begun");
                        transaction.touch(partition, &event.customer_id, Some(offset));
                        let entry = data.store.remember(&event.customer_id, hash, self.config.dedupe_window);
                        let outputs = self.processor.apply(&mut entry.state, &event, now);
                        let due = entry.state.as_ref().and_then(|state| self.processor.next_timer(state));
                        if matches!(event.payload, EventPayload::ErasureRequested) {
                            let marker = ErasureMarker {
                                erased_at: event.occurred_at.timestamp_millis(),
                                recorded_at: partition_now,
                                recent: entry.recent.clone(),
                            };
                            let id = self.marker_key.id(&event.customer_id);
                            let horizon = i64::try_from(erasure.horizon.as_millis()).unwrap_or(i64::MAX);
                            data.store.markers.insert(id, marker, horizon);
                            transaction.markers.push((partition, id));
                        }
                        data.store.settle(&event.customer_id, due.map(|due| due.timestamp_millis()));
                        if let Some(message) = self.oversized(&outputs, Some(&event.event_id)) {
                            // The state already changed: the abort rebuilds it from the changelog.
                            return Err(Failure::TooLarge { partition, offset, message });
                        }
                        self.send_outputs(partition, &outputs, Some(&event.event_id))?;
                        RecordOutcome::Applied
                    }
                }
            }
        };
        self.processed(message, outcome, timed)
    }

    /// Bookkeeping after an input record: transaction size, latency, position, metrics.
    fn processed(
        &mut self,
        message: &BorrowedMessage<'_>,
        outcome: RecordOutcome,
        timed: Option<Instant>,
    ) -> Result<(), Failure> {
        let partition = message.partition();
        let transaction = self.transaction.as_mut().expect("transaction begun");
        transaction.records += 1;
        if let Some(millis) = message.timestamp().to_millis() {
            transaction.record_timestamps.push(millis);
        }
        if let Some(data) = self.partitions.get_mut(&partition) {
            data.next_offset = Some(message.offset() + 1);
        }
        self.metrics.record_processed(outcome);
        if let Some(started) = timed {
            self.metrics.processing_seconds.observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Why one of `outputs` cannot be sent, if one is larger than its topic takes.
    fn oversized(&mut self, outputs: &[Output], cause: Option<&str>) -> Option<String> {
        let cause_header;
        let headers: &[(&str, &str)] = match cause {
            Some(event_id) => {
                cause_header = [(CAUSE_HEADER, event_id)];
                &cause_header
            }
            None => &[],
        };
        outputs.iter().find_map(|output| {
            let size = record_size(&output.key, output.value.as_deref(), headers);
            let limit = self.limits.limit(&output.topic);
            (size > limit)
                .then(|| format!("a {size}-byte record for {} exceeds its {limit}-byte limit", output.topic))
        })
    }

    fn dead_letter(
        &mut self,
        message: &BorrowedMessage<'_>,
        reason: DeadLetterReason,
        text: &str,
    ) -> Result<(), Failure> {
        let code = reason.code();
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let key = message.key().map(String::from_utf8_lossy);
        let fields = [
            ("error.code", code),
            ("error.message", text),
            ("source.topic", message.topic()),
            ("source.partition", partition.as_str()),
            ("source.offset", offset.as_str()),
        ];
        // A record the input topic took may still not fit the DLQ with its headers (or this
        // producer's limit): sending it would abort every transaction that retries it. It goes
        // without its value then, with a header saying so; the input topic still holds it.
        let size = record_size(key.as_deref().unwrap_or(""), message.payload(), &fields);
        let dlq_topic = self.config.dlq_topic.clone();
        let payload = message.payload().filter(|_| size <= self.limits.limit(&dlq_topic));
        let omitted = message.payload().filter(|_| payload.is_none()).map(|bytes| bytes.len().to_string());
        let mut headers = OwnedHeaders::new();
        for (name, value) in fields {
            headers = headers.insert(Header { key: name, value: Some(value) });
        }
        if let Some(length) = &omitted {
            headers =
                headers.insert(Header { key: "error.value_omitted_bytes", value: Some(length.as_str()) });
        }
        let mut record = BaseRecord::to(&self.config.dlq_topic).headers(headers);
        if let Some(key) = &key {
            record = record.key(key.as_ref());
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.send(record)?;
        self.metrics.dead_lettered.get_or_create(&ErrorCodeLabel { error_code: code.to_owned() }).inc();
        debug!(
            error.code = code,
            error.message = text,
            partition = message.partition(),
            offset = message.offset(),
            "dead-lettered"
        );
        Ok(())
    }

    /// Runs the due timers of every restored partition inside the open transaction: a caught-up
    /// partition's clock follows the wall clock; one with lag waits for its records' times.
    pub(crate) fn fire_timers(&mut self, consumer: &EngineConsumer<P>, now: Now) {
        if self.needs_reset || self.failure.is_some() {
            return;
        }
        if let Err(failure) = self.try_fire_timers(now) {
            self.handle(consumer, failure);
        }
    }

    fn try_fire_timers(&mut self, clock: Now) -> Result<(), Failure> {
        let wall = clock.wall.timestamp_millis();
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            let data = self.partitions.get_mut(&partition).expect("partition");
            let up_to = data.store.follow_wall(wall);
            let expired = data.store.markers.expire(up_to);
            if !expired.is_empty() {
                self.ensure_transaction(clock.instant)?;
                let transaction = self.transaction.as_mut().expect("transaction begun");
                transaction.markers.extend(expired.into_iter().map(|id| (partition, id)));
            }
            let data = self.partitions.get_mut(&partition).expect("partition");
            if data.store.due_timer(up_to).is_none() {
                continue;
            }
            self.ensure_transaction(clock.instant)?;
            if !self.fire_due(partition, up_to)? {
                // The transaction is full: the rest fire after its commit, at the next sweep.
                break;
            }
        }
        Ok(())
    }

    /// Fires `partition`'s timers due at or before `up_to` (its clock), each as of its due time,
    /// so that replaying the log writes the same records however late it is replayed. Each counts
    /// as a record of the open transaction: returns false, with timers still due, once the
    /// transaction holds `commit_max_records`, so one commit never holds an outage's backlog.
    fn fire_due(&mut self, partition: i32, up_to: i64) -> Result<bool, Failure> {
        loop {
            let data = self.partitions.get_mut(&partition).expect("partition");
            let Some((due, customer_id)) = data.store.due_timer(up_to) else { return Ok(true) };
            let transaction = self.transaction.as_mut().expect("transaction begun");
            if transaction.records >= self.config.commit_max_records {
                return Ok(false);
            }
            transaction.records += 1;
            transaction.touch(partition, &customer_id, None);
            let now = DateTime::from_timestamp_millis(due).unwrap_or_default();
            let mut before = None;
            let (outputs, next) = match data.store.entry_mut(&customer_id) {
                Some(entry) => {
                    // Kept to undo the timer should its records not fit (below): timers are few.
                    before = Some(entry.state.clone());
                    let outputs = self.processor.on_timer(&mut entry.state, &customer_id, now);
                    let next = entry.state.as_ref().and_then(|state| self.processor.next_timer(state));
                    // A timer that does not move forward would fire forever.
                    (outputs, next.map(|next| next.timestamp_millis()).filter(|next| *next > due))
                }
                None => (Vec::new(), None),
            };
            self.metrics.timers_fired.inc();
            // Checked before the entry settles: a timer that erased the state must still find
            // the entry to undo.
            let oversized = self.oversized(&outputs, None);
            let data = self.partitions.get_mut(&partition).expect("partition");
            if let Some(message) = oversized {
                // No input record to dead-letter: the timer is undone (the customer keeps the
                // state the last event gave them) and not rescheduled until their next event.
                tracing::error!(customer_id, %message, "a timer's records do not fit; undone");
                if let (Some(state), Some(entry)) = (before, data.store.entry_mut(&customer_id)) {
                    entry.state = state;
                }
                data.store.settle(&customer_id, None);
                continue;
            }
            data.store.settle(&customer_id, next);
            self.send_outputs(partition, &outputs, None)?;
        }
    }

    /// Commits the open transaction: changelog records of every customer it touched, the input
    /// offsets with the group metadata (KIP-447), then the commit itself.
    pub(crate) fn commit(&mut self, consumer: &EngineConsumer<P>) {
        if self.transaction.is_none() {
            return;
        }
        let started = Instant::now();
        match self.try_commit(consumer) {
            Ok(()) => {
                let transaction = self.transaction.take().expect("transaction");
                for data in self.partitions.values_mut() {
                    data.next_offset = None;
                }
                let now = Utc::now().timestamp_millis();
                for created in transaction.record_timestamps {
                    self.metrics.end_to_end_seconds.observe((now - created).max(0) as f64 / 1000.0);
                }
                self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                self.metrics
                    .transactions
                    .get_or_create(&TransactionOutcomeLabel { outcome: TransactionOutcome::Committed })
                    .inc();
                self.update_gauges();
            }
            Err(failure) => self.handle(consumer, failure),
        }
    }

    fn try_commit(&mut self, consumer: &EngineConsumer<P>) -> Result<(), Failure> {
        let started = Instant::now();
        let changelog_limit = self.limits.limit(&self.config.changelog_topic.clone());
        let transaction = self.transaction.as_ref().expect("transaction");
        let mut value = Vec::with_capacity(1024);
        for (partition, customer_id, cause) in
            transaction.touched.iter().flat_map(|(p, ids)| ids.iter().map(move |(id, cause)| (p, id, cause)))
        {
            let Some(data) = self.partitions.get(partition) else { continue };
            let entry = data.store.entry(customer_id);
            if let Some(entry) = entry {
                value.clear();
                crate::changelog::encode::<P>(entry, &mut value);
                let size = record_size(customer_id, Some(&value), &[]);
                if size > changelog_limit {
                    let message = format!(
                        "the state would be a {size}-byte changelog record (limit {changelog_limit})"
                    );
                    match cause {
                        Some(offset) => {
                            return Err(Failure::TooLarge {
                                partition: *partition,
                                offset: *offset,
                                message,
                            });
                        }
                        None => {
                            tracing::error!(customer_id, %message, "not writing a timer's changelog record");
                            continue;
                        }
                    }
                }
            }
            let mut record =
                BaseRecord::to(&self.config.changelog_topic).partition(*partition).key(customer_id.as_str());
            if entry.is_some() {
                record = record.payload(value.as_slice());
            }
            self.send(record)?;
        }
        for (partition, id) in &transaction.markers {
            let Some(data) = self.partitions.get(partition) else { continue };
            let key = crate::erasure::changelog_key(id);
            let mut record =
                BaseRecord::to(&self.config.changelog_topic).partition(*partition).key(key.as_str());
            if let Some(marker) = data.store.markers.get(id) {
                value.clear();
                rmp_serde::encode::write(&mut value, marker).expect("a marker serializes");
                record = record.payload(value.as_slice());
            }
            self.send(record)?;
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, data) in &self.partitions {
            if let Some(next) = data.next_offset {
                offsets
                    .add_partition_offset(&self.config.input_topic, *partition, Offset::Offset(next))
                    .map_err(Failure::Fatal)?;
            }
        }
        let timeout = self.config.transactional_call_timeout();
        if offsets.count() > 0 {
            let metadata = consumer.group_metadata().ok_or_else(|| {
                Failure::Abortable(KafkaError::Subscription("no consumer group metadata".to_owned()))
            })?;
            self.producer.send_offsets_to_transaction(&offsets, &metadata, timeout).map_err(classify)?;
        }
        let offsets_sent = Instant::now();
        self.wait_for_deliveries(timeout)?;
        self.producer.commit_transaction(timeout).map_err(classify)?;
        debug!(
            send_offsets_ms = (offsets_sent - started).as_secs_f64() * 1000.0,
            commit_ms = offsets_sent.elapsed().as_secs_f64() * 1000.0,
            "transaction committed"
        );
        Ok(())
    }

    /// Waits until every record of the transaction is acknowledged. rust-rdkafka's
    /// `commit_transaction` flushes too, but its flush sleeps in 100 ms polls of a queue that the
    /// threaded producer's own thread drains: it would add 100 ms to every commit.
    fn wait_for_deliveries(&self, timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(Failure::Indefinite(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(())
    }

    fn handle(&mut self, consumer: &EngineConsumer<P>, failure: Failure) {
        match failure {
            Failure::Abortable(error) => {
                warn!(%error, "transaction failed; aborting and rewinding to the last commit");
                self.abort(consumer);
            }
            Failure::Indefinite(error) => {
                warn!(%error, "transactional call with unknown outcome; re-creating the producer");
                self.transaction = None;
                self.needs_reset = true;
            }
            Failure::Fatal(error) => {
                self.transaction = None;
                self.failure = Some(RuntimeError::Fatal(error));
            }
            Failure::TooLarge { partition, offset, message } => {
                warn!(partition, offset, %message, "aborting to dead-letter the record that caused it");
                self.too_large.insert((partition, offset), message);
                self.abort(consumer);
            }
        }
    }

    /// Aborts the open transaction, then rebuilds every owned partition: its state from the
    /// changelog and its position from the committed offsets. Kafka Streams does the same under
    /// exactly-once (a task closed dirty is restored from its changelog); an undo log instead cost
    /// a deep copy of every customer each transaction touched, on the hot path, for a rare event.
    /// The rebuild happens even with no transaction open: the record whose failure led here was
    /// polled (the position is past it) but not processed.
    pub(crate) fn abort(&mut self, consumer: &EngineConsumer<P>) {
        if self.transaction.take().is_some() {
            if let Err(error) = self.producer.abort_transaction(self.config.transactional_call_timeout()) {
                match classify(error) {
                    Failure::Fatal(error) => self.failure = Some(RuntimeError::Fatal(error)),
                    other => {
                        warn!(error = ?other, "abort failed; re-creating the producer");
                        self.needs_reset = true;
                    }
                }
                return;
            }
            self.metrics
                .transactions
                .get_or_create(&TransactionOutcomeLabel { outcome: TransactionOutcome::Aborted })
                .inc();
        }
        // Every owned partition, not only those with progress: the record whose failure caused
        // this abort has not advanced `next_offset`, but the consumer's position is past it.
        let owned: Vec<i32> = self.partitions.drain().map(|(partition, _)| partition).collect();
        if owned.is_empty() {
            return;
        }
        let mut paused = TopicPartitionList::new();
        for partition in &owned {
            paused.add_partition(&self.config.input_topic, *partition);
        }
        if let Err(error) = consumer.pause(&paused) {
            // Records fetched meanwhile are skipped: the partition is not restored yet.
            warn!(%error, "cannot pause partitions to rebuild after an abort");
        }
        self.pending_restore.extend(owned.iter().copied());
        self.rewind_after_restore.extend(owned);
        self.update_gauges();
    }

    /// Starts over after an unknown outcome: a new producer (whose `init_transactions` fences the
    /// old one and completes or aborts its transaction), then every partition's state restored
    /// from the changelog and every partition rewound to the group's committed offsets.
    pub(crate) fn reset(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        self.metrics.producer_resets.inc();
        self.transaction = None;
        self.producer = crate::create_transactional_producer(&self.config)?;
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        self.partitions.clear();
        self.pending_restore.extend(owned);
        self.restore_pending(consumer, true)?;
        self.needs_reset = false;
        Ok(())
    }

    /// Restores the state of every partition waiting for it, then lets it be processed.
    pub(crate) fn restore_pending(
        &mut self,
        consumer: &EngineConsumer<P>,
        rewind: bool,
    ) -> Result<(), RuntimeError> {
        let partitions: Vec<i32> = std::mem::take(&mut self.pending_restore).into_iter().collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut input = TopicPartitionList::new();
        for partition in &partitions {
            input.add_partition(&self.config.input_topic, *partition);
        }
        // Offsets first: a read_committed fetch waits while the last transaction's commit markers
        // are still being written (KIP-447, require_stable), and by then the changelog's are too
        // in practice, so the state read next is not older than the offsets it resumes from.
        let committed = consumer.committed_offsets(input.clone(), Duration::from_secs(30))?;
        let mut restored =
            read_changelog(&self.processor, &self.config, &partitions, &self.metrics, &self.health)?;
        for partition in &partitions {
            let offset = committed
                .find_partition(&self.config.input_topic, *partition)
                .map(|element| element.offset())
                .unwrap_or(Offset::Invalid);
            let RestoredPartition { customers, markers } = restored.remove(partition).unwrap_or_default();
            let processor = &self.processor;
            let store = PartitionStore::restored(customers, markers, |state| {
                processor.next_timer(state).map(|due| due.timestamp_millis())
            });
            let data = PartitionData { store, next_offset: None };
            if rewind || self.rewind_after_restore.remove(partition) {
                let target = match offset {
                    Offset::Offset(offset) => Offset::Offset(offset),
                    _ => Offset::Beginning,
                };
                consumer.seek(&self.config.input_topic, *partition, target, Duration::from_secs(10))?;
            }
            self.partitions.insert(*partition, data);
        }
        consumer.resume(&input)?;
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        self.update_gauges();
        info!(
            partitions = ?partitions,
            customers = self.partitions.values().map(|p| p.store.customer_count()).sum::<usize>(),
            seconds = started.elapsed().as_secs_f64(),
            "state restored"
        );
        Ok(())
    }
}

type RestoredPartitions<S> = HashMap<i32, RestoredPartition<S>>;

/// What a changelog partition holds: the customers' entries and the erasure markers.
struct RestoredPartition<S> {
    customers: Customers<S>,
    markers: Markers,
}

impl<S> Default for RestoredPartition<S> {
    fn default() -> Self {
        Self { customers: Customers::default(), markers: Markers::default() }
    }
}

/// How long a restore may take before the service gives up and exits (to be restarted).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads changelog partitions from the beginning to their end (the last stable offset, as
/// read_committed) with an assign-only consumer, within [`RESTORE_TIMEOUT`]; every poll ticks
/// `health`, so a long restore does not fail liveness (the timeout bounds a stuck one).
fn read_changelog<P: Processor>(
    processor: &P,
    config: &RuntimeConfig,
    partitions: &[i32],
    metrics: &Metrics,
    health: &Health,
) -> Result<RestoredPartitions<P::State>, RuntimeError> {
    let mut client = config.kafka.client_config()?;
    set_restore_consumer(&mut client, config);
    let reader: BaseConsumer<ReadToEndContext> =
        client.create_with_context(ReadToEndContext { reader: "changelog reader" })?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(&config.changelog_topic, *partition, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    let mut remaining: HashSet<i32> = partitions.iter().copied().collect();
    let mut restored: RestoredPartitions<P::State> =
        partitions.iter().map(|p| (*p, RestoredPartition::default())).collect();
    let horizon = i64::try_from(config.erasure.horizon.as_millis()).unwrap_or(i64::MAX);
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(RuntimeError::Restore(format!(
                "changelog partitions {remaining:?} not read to the end in {} s",
                RESTORE_TIMEOUT.as_secs()
            )));
        }
        health.tick();
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                remaining.remove(&partition);
            }
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => {
                metrics.restored_records.inc();
                let Some(key) = message.key() else { continue };
                let customer_id = String::from_utf8_lossy(key).into_owned();
                let RestoredPartition { customers, markers } =
                    restored.entry(message.partition()).or_default();
                if let Some(id) = crate::erasure::marker_id_of(&customer_id) {
                    match message.payload() {
                        None => markers.remove(&id),
                        Some(bytes) => {
                            let marker: ErasureMarker = rmp_serde::from_slice(bytes).map_err(|e| {
                                RuntimeError::Restore(format!(
                                    "erasure marker {customer_id:?} does not decode: {e}"
                                ))
                            })?;
                            markers.insert(id, marker, horizon);
                        }
                    }
                    continue;
                }
                match message.payload() {
                    None => {
                        customers.remove(&customer_id);
                    }
                    Some(bytes) => {
                        let entry = crate::changelog::decode(processor, bytes).map_err(|e| {
                            RuntimeError::Restore(format!(
                                "changelog record {}@{} of {customer_id} does not decode: {e}",
                                message.partition(),
                                message.offset()
                            ))
                        })?;
                        customers.insert(customer_id, Box::new(entry));
                    }
                }
            }
        }
    }
    Ok(restored)
}

fn set_restore_consumer(client: &mut ClientConfig, config: &RuntimeConfig) {
    client
        .set("group.id", format!("{}-restore", config.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "20")
        .set("isolation.level", "read_committed")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "16384");
}

impl<P: Processor> ConsumerContext for crate::context::EngineContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            let lost = consumer.assignment_lost();
            info!(?partitions, lost, "partitions revoked");
            self.engine.lock().expect("engine lock").on_revoked(consumer, &partitions, lost);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            info!(?partitions, "partitions assigned; restoring state before processing them");
            if let Err(error) = consumer.pause(list) {
                warn!(%error, "cannot pause newly assigned partitions");
            }
            self.engine.lock().expect("engine lock").on_assigned(partitions);
        }
    }
}
