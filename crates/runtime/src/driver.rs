//! The Kafka driver: executes the core's [`Action`]s with the transactional producer and the
//! consumer, and turns librdkafka's errors into the core's abort, reset or a fatal stop. The
//! decisions themselves are in `engine.rs`; the changelog reader is in `restore.rs`.
//!
//! It lives behind a mutex shared by the processing loop and the consumer's rebalance callbacks
//! (`context.rs`), which librdkafka runs inside `poll` on the loop's own thread: the lock is never
//! contended, it only lets the revoke callback commit the open transaction before partitions
//! leave (after the callback returns, the commit's offsets would belong to another member).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use omnistream_schema_registry::{SchemaCheck, SchemaLearner};
use opentelemetry::trace::{Span as _, SpanKind, Status};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::config::RuntimeConfig;
use crate::engine::{
    Action, CAUSE_HEADER, CommitOffset, EngineCore, Input, InputRecord, Now, OutRecord, TooLarge,
};
use crate::lookup_reader::LookupReader;
use crate::metrics::{Metrics, TransactionOutcome, TransactionOutcomeLabel};
use crate::processor::Processor;
use crate::server::Health;
use crate::trace::{self, TransactionSpans};
use crate::{RuntimeError, TxnProducer};

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
    /// A record would not fit its topic (the core noted its cause): abort and rebuild.
    TooLarge(TooLarge),
}

impl From<TooLarge> for Failure {
    fn from(too_large: TooLarge) -> Self {
        Failure::TooLarge(too_large)
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

/// How long a restore keeps asking for the committed offsets (a coordinator moving, a broker
/// down) before the service gives up and exits; each try ticks liveness.
const COMMITTED_OFFSETS_DEADLINE: Duration = Duration::from_secs(300);
/// How long past its own timeout a transactional call may block before the process exits for a
/// restart (`Health::guard_call`) rather than after the two-minute stall limit.
const CALL_MARGIN: Duration = Duration::from_secs(5);
/// How many times a seek that failed is tried again (librdkafka answers "erroneous state" for a
/// partition whose fetcher is still starting after a broker came back).
const SEEK_ATTEMPTS: u32 = 5;

/// The group's committed offsets of `partitions`, asked again while the coordinator cannot
/// answer: a coordinator moving or a broker down is not a reason to exit.
fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &TopicPartitionList,
    health: &Health,
) -> Result<TopicPartitionList, RuntimeError> {
    let deadline = Instant::now() + COMMITTED_OFFSETS_DEADLINE;
    loop {
        health.tick();
        // librdkafka reports a partition's own error in its element, not in the call's result.
        let answer =
            consumer.committed_offsets(partitions.clone(), Duration::from_secs(30)).and_then(|committed| {
                match committed.elements().iter().find_map(|element| element.error().err()) {
                    Some(error) => Err(error),
                    None => Ok(committed),
                }
            });
        match answer {
            Ok(committed) => return Ok(committed),
            Err(error) if Instant::now() < deadline => {
                warn!(%error, "committed offsets not known yet; asking again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Seeks `partition` of `topic` to `target`, trying again a few times.
fn seek<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    target: Offset,
    health: &Health,
) -> Result<(), RuntimeError> {
    let mut attempt = 1;
    loop {
        health.tick();
        match consumer.seek(topic, partition, target, Duration::from_secs(10)) {
            Ok(()) => return Ok(()),
            Err(error) if attempt < SEEK_ATTEMPTS => {
                warn!(%error, topic, partition, attempt, "seek failed; trying again");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// What the processing loop must do before it goes on, after a failure (possibly inside a
/// rebalance callback, which cannot return one).
#[derive(Debug)]
enum Condition {
    Working,
    /// An unknown outcome: re-create the producer and restore everything.
    NeedsReset,
    /// Exit non-zero.
    Failed(RuntimeError),
}

pub(crate) struct Driver<P: Processor> {
    core: EngineCore<P>,
    config: Arc<RuntimeConfig>,
    producer: TxnProducer,
    /// `begin_transaction` succeeded and neither commit nor abort ended it yet.
    producer_in_transaction: bool,
    metrics: Arc<Metrics>,
    /// Ticked while a restore reads the changelog: that is progress, and it may take minutes.
    health: Arc<Health>,
    condition: Condition,
    /// Reused for every record's actions.
    actions: Vec<Action>,
    /// Records processed, for sampling the processing-time histogram.
    records_seen: u64,
    /// The table and broadcast inputs' reader, if the processor has any.
    lookups: Option<LookupReader>,
    /// Learns the schema ids of input records in the Confluent wire format.
    schemas: Arc<SchemaLearner>,
    /// Input partitions paused at a record whose schema id is being learned: resumed at that
    /// record once it is (a registry that is down holds them, never dead-letters them).
    waiting_for_schema: Vec<(Input, i32)>,
    /// The spans of the records in the open transaction (when spans are exported): its commit
    /// span links to them.
    transaction_spans: TransactionSpans,
    /// A graceful stop began: no transaction follows, so a failed one is simply aborted.
    leaving: bool,
    /// A failed transaction is left open in the producer for the reset to fence
    /// (`give_up_transaction`), which has not run yet.
    given_up: bool,
}

impl<P: Processor> std::fmt::Debug for Driver<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("core", &self.core)
            .field("condition", &self.condition)
            .finish_non_exhaustive()
    }
}

impl<P: Processor> Driver<P> {
    pub(crate) fn new(
        core: EngineCore<P>,
        config: Arc<RuntimeConfig>,
        producer: TxnProducer,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        lookups: Option<LookupReader>,
        schemas: Arc<SchemaLearner>,
    ) -> Self {
        Self {
            lookups,
            schemas,
            waiting_for_schema: Vec::new(),
            transaction_spans: TransactionSpans::default(),
            core,
            config,
            producer,
            producer_in_transaction: false,
            metrics,
            health,
            condition: Condition::Working,
            actions: Vec::new(),
            records_seen: 0,
            leaving: false,
            given_up: false,
        }
    }

    /// Changes with every assignment and revocation.
    pub(crate) fn assignment_generation(&self) -> u64 {
        self.core.assignment_generation()
    }

    /// The partitions assigned to this instance, restored or not.
    pub(crate) fn owned_partitions(&self) -> std::collections::BTreeSet<i32> {
        self.core.owned_partitions()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.core.is_ready() && matches!(self.condition, Condition::Working)
    }

    /// Partitions were assigned (in the rebalance callback): they stay paused until restored.
    pub(crate) fn on_assigned(&mut self, partitions: Vec<i32>) {
        self.core.on_assigned(partitions);
    }

    /// Partitions are about to be revoked (in the rebalance callback): commit what was done, or
    /// abort if they are already lost to another member, then forget their state.
    pub(crate) fn on_revoked<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
        lost: bool,
    ) {
        if lost {
            self.core.on_revoked(partitions);
            self.give_up_transaction(consumer);
        } else {
            self.commit(consumer);
        }
        self.core.on_revoked(partitions);
        if let Some(lookups) = &mut self.lookups {
            lookups.unassign_tables::<P>(partitions);
        }
        self.waiting_for_schema.retain(|(_, partition)| !partitions.contains(partition));
        self.metrics.partitions_waiting_for_schema.set(self.waiting_for_schema.len() as i64);
    }

    /// Before the next poll: stops on a fatal failure, re-creates the producer after an unknown
    /// outcome, and restores newly assigned or rebuilt partitions.
    pub(crate) fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        match std::mem::replace(&mut self.condition, Condition::Working) {
            Condition::Failed(error) => return Err(error),
            Condition::NeedsReset => self.reset(consumer)?,
            Condition::Working => {}
        }
        if self.core.has_pending_restore() {
            // A restore can outlast the transaction timeout: commit the open one first.
            self.commit(consumer);
            if matches!(self.condition, Condition::Working) {
                self.restore_pending(consumer, false)?;
            }
        }
        Ok(())
    }

    /// Processes one input record inside the open transaction. Failures are handled here.
    pub(crate) fn on_record<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        record: &InputRecord<'_>,
        now: Now,
    ) {
        if !matches!(self.condition, Condition::Working) {
            // A rebalance callback inside this poll hit an unknown outcome or a fatal error: the
            // reset (or the exit) comes first, and the reset rewinds to the committed offsets.
            return;
        }
        if let Some(payload) = record.payload
            && let SchemaCheck::Wait(id) = self.schemas.check(payload)
        {
            self.hold_for_schema(consumer, record, id);
            return;
        }
        // A record that carries a trace context: its span (when spans are exported) is the parent
        // its outputs name. (The lines logged about one record name its trace id as a field: a
        // `tracing` span per record would cost more than the record's processing.)
        let (span, carried) = record
            .trace
            .and_then(|parent| trace::start_span("process", SpanKind::Consumer, Some(parent)))
            .map_or((None, None), |(span, carried)| (Some(span), Some(Arc::new(carried))));
        let record = &InputRecord { trace: carried.as_ref().or(record.trace), ..*record };
        // Clock reads cost here (no TSC in some VMs): time one record in 32.
        self.records_seen = self.records_seen.wrapping_add(1);
        let timed = self.records_seen.is_multiple_of(32).then(Instant::now);
        if let Some(lookups) = &mut self.lookups
            && let Err(error) = lookups.wait_until_complete(&mut self.core, record, now)
        {
            self.fail(error);
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        let result = match self.core.on_record(record, now, &mut actions) {
            Ok(()) => self.execute(consumer, &mut actions),
            Err(too_large) => Err(Failure::TooLarge(too_large)),
        };
        if let Some(reason) = self.core.take_fatal() {
            self.fail(RuntimeError::Handoff(reason));
        }
        actions.clear();
        self.actions = actions;
        if let Some(mut span) = span {
            if let Err(failure) = &result {
                span.set_status(Status::error(format!("{failure:?}")));
            }
            // A record of a partition not restored yet is read again later: not in this transaction.
            if self.core.has_open_transaction() {
                self.transaction_spans.add(span.span_context());
            }
            span.end();
        }
        if let Err(failure) = result {
            self.handle(consumer, failure);
        }
        if let Some(started) = timed {
            self.metrics.processing_seconds.observe(started.elapsed().as_secs_f64());
        }
    }

    /// Pauses the record's partition at it until its schema id is learned: the records before it
    /// commit as usual, it and those after it are read again once resumed.
    fn hold_for_schema<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        record: &InputRecord<'_>,
        id: u32,
    ) {
        let topic = self.core.topic_of(record.input).clone();
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, record.partition);
        let held = consumer.pause(&list).and_then(|()| {
            consumer.seek(&topic, record.partition, Offset::Offset(record.offset), Duration::from_secs(10))
        });
        if let Err(error) = held {
            // Not paused at the record: start over from the committed offsets.
            warn!(%error, "cannot pause a partition to wait for its schema");
            self.handle(consumer, Failure::Abortable(error));
            return;
        }
        info!(
            topic = %topic,
            partition = record.partition,
            offset = record.offset,
            id,
            trace_id = record.trace.map(|trace| trace.trace_id()),
            "waiting for the schema registry to tell a schema id"
        );
        if !self.waiting_for_schema.contains(&(record.input, record.partition)) {
            self.waiting_for_schema.push((record.input, record.partition));
        }
        self.metrics.partitions_waiting_for_schema.set(self.waiting_for_schema.len() as i64);
    }

    /// Resumes the partitions held for schema ids once none is being learned any more (those
    /// whose state is being restored are resumed by the restore).
    pub(crate) fn resume_learned<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.waiting_for_schema.is_empty() || self.schemas.waiting() > 0 {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (input, partition) in self.waiting_for_schema.drain(..) {
            if self.core.is_restored(partition) {
                list.add_partition(self.core.topic_of(input), partition);
            }
        }
        self.metrics.partitions_waiting_for_schema.set(0);
        if let Err(error) = consumer.resume(&list) {
            warn!(%error, "cannot resume the partitions that waited for their schema");
            self.handle(consumer, Failure::Abortable(error));
            return;
        }
        wake_fetcher(consumer, &list);
    }

    /// Takes in what the table and broadcast inputs' reader has, without waiting.
    pub(crate) fn poll_lookups(&mut self) {
        if let Some(lookups) = &self.lookups
            && let Err(error) = lookups.poll(&mut self.core, Duration::ZERO)
        {
            self.fail(error);
        }
    }

    /// Stops: the loop exits non-zero before its next poll (the open transaction is left to the
    /// broker's timeout or the restarted instance's fencing).
    fn fail(&mut self, error: RuntimeError) {
        self.core.forget_ledger();
        self.producer_in_transaction = false;
        self.condition = Condition::Failed(error);
    }

    /// The consumer reached the end of `partition`: its clock may follow the wall clock now.
    pub(crate) fn on_end_of_partition(&mut self, partition: i32) {
        self.core.on_end_of_partition(partition);
    }

    /// Runs the due timers of every restored partition inside the open transaction.
    pub(crate) fn on_tick<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, now: Now) {
        if !matches!(self.condition, Condition::Working) {
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        self.core.on_tick(now, &mut actions);
        if let Some(lookups) = &mut self.lookups {
            // Due timers waiting for their lookups fire once these are proven: now, if this check
            // proves them (a quiet topic read to its end), else at a later sweep.
            let unproven = self.core.take_unproven_for_timers();
            if !unproven.is_empty() && lookups.check_without_waiting(unproven, &mut self.core) {
                self.core.on_tick(now, &mut actions);
                self.core.take_unproven_for_timers();
            }
        }
        let result = self.execute(consumer, &mut actions);
        actions.clear();
        self.actions = actions;
        if let Err(failure) = result {
            self.handle(consumer, failure);
        }
    }

    pub(crate) fn commit_due(&self, now: Instant) -> bool {
        self.core.commit_due(now)
    }

    fn execute<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        actions: &mut Vec<Action>,
    ) -> Result<(), Failure> {
        for action in actions.drain(..) {
            match action {
                Action::BeginTransaction => {
                    self.producer.begin_transaction().map_err(classify)?;
                    self.producer_in_transaction = true;
                }
                Action::Produce(record) => send(&self.producer, &record)?,
                Action::Seek { input, partition, offset } => consumer
                    .seek(
                        self.core.topic_of(input),
                        partition,
                        Offset::Offset(offset),
                        Duration::from_secs(10),
                    )
                    .map_err(Failure::Abortable)?,
            }
        }
        Ok(())
    }

    /// Commits the open transaction: changelog records of every customer it touched, the input
    /// offsets with the group metadata (KIP-447), then the commit itself.
    pub(crate) fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if !self.core.has_open_transaction() {
            self.transaction_spans.clear();
            return;
        }
        let started = Instant::now();
        let mut span = self.transaction_spans.start_commit_span();
        let committed = self.try_commit(consumer);
        if let Some(span) = &mut span {
            if let Err(failure) = &committed {
                span.set_status(Status::error(format!("{failure:?}")));
            }
            span.end();
        }
        match committed {
            Ok(()) => {
                self.producer_in_transaction = false;
                let now = Utc::now().timestamp_millis();
                for created in self.core.committed() {
                    self.metrics.end_to_end_seconds.observe((now - created).max(0) as f64 / 1000.0);
                }
                self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                self.metrics
                    .transactions
                    .get_or_create(&TransactionOutcomeLabel { outcome: TransactionOutcome::Committed })
                    .inc();
            }
            Err(failure) => self.handle(consumer, failure),
        }
    }

    fn try_commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Failure> {
        let started = Instant::now();
        let producer = &self.producer;
        let Some(offsets) = self.core.plan_commit(|record| send(producer, &record))? else { return Ok(()) };
        let mut list = TopicPartitionList::new();
        for CommitOffset { input, partition, next } in offsets {
            list.add_partition_offset(self.core.topic_of(input), partition, Offset::Offset(next))
                .map_err(Failure::Fatal)?;
        }
        for mut element in list.elements() {
            element.set_metadata(crate::changelog::OFFSET_METADATA);
        }
        let timeout = self.config.transactional_call_timeout();
        if list.count() > 0 {
            let metadata = consumer.group_metadata().ok_or_else(|| {
                Failure::Abortable(KafkaError::Subscription("no consumer group metadata".to_owned()))
            })?;
            // librdkafka #5456: this one can block for minutes past its timeout.
            self.health
                .guard_call("send_offsets_to_transaction", timeout + CALL_MARGIN, || {
                    self.producer.send_offsets_to_transaction(&list, &metadata, timeout)
                })
                .map_err(classify)?;
        }
        let offsets_sent = Instant::now();
        self.wait_for_deliveries(timeout);
        let resume = |error: &KafkaError| {
            warn!(%error, "commit timed out; calling it again to resume it");
            self.metrics.commit_resumes.inc();
        };
        crate::commit_resuming(
            &*self.producer,
            &self.health,
            timeout,
            CALL_MARGIN,
            crate::COMMIT_RESUMES,
            resume,
        )
        .map_err(classify)?;
        debug!(
            send_offsets_ms = (offsets_sent - started).as_secs_f64() * 1000.0,
            commit_ms = offsets_sent.elapsed().as_secs_f64() * 1000.0,
            "transaction committed"
        );
        Ok(())
    }

    /// Waits until every record of the transaction is acknowledged, or the timeout. rust-rdkafka's
    /// `commit_transaction` flushes too, but its flush sleeps in 100 ms polls of a queue that the
    /// threaded producer's own thread drains: it would add 100 ms to every commit. Records still
    /// in flight after the timeout are left to that flush (and its resumes).
    fn wait_for_deliveries(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn handle<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, failure: Failure) {
        match failure {
            Failure::Abortable(error) => {
                warn!(%error, "transaction failed; aborting and rewinding to the last commit");
                self.give_up_transaction(consumer);
            }
            Failure::Indefinite(error) => {
                warn!(%error, "transactional call with unknown outcome; re-creating the producer");
                self.core.drop_ledger();
                self.producer_in_transaction = false;
                self.condition = Condition::NeedsReset;
            }
            Failure::Fatal(error) => self.fail(RuntimeError::Fatal(error)),
            Failure::TooLarge(TooLarge { input, partition, offset, message }) => {
                let topic = self.core.topic_of(input).to_string();
                warn!(topic, partition, offset, %message, "aborting to dead-letter the record that caused it");
                self.give_up_transaction(consumer);
            }
        }
    }

    /// Ends a failed transaction by re-creating the producer rather than aborting it (except in a
    /// graceful stop, after which no transaction follows). The new producer's `init_transactions`
    /// aborts it under a bumped epoch, so a write of it still on its way to a broker (a request
    /// the client gave up on) is refused rather than taken into the next transaction of the same
    /// epoch: librdkafka speaks transactions v1, whose abort keeps the epoch (and bumps it only
    /// after timed-out messages); v2 (KIP-890) bumps it at the end of every transaction.
    /// With no transaction open in the producer there is nothing to fence: a plain abort
    /// rebuilds the partitions without a new producer.
    fn give_up_transaction<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.leaving || !self.producer_in_transaction || !matches!(self.condition, Condition::Working) {
            self.abort(consumer);
            return;
        }
        self.metrics
            .transactions
            .get_or_create(&TransactionOutcomeLabel { outcome: TransactionOutcome::Aborted })
            .inc();
        self.transaction_spans.clear();
        self.core.drop_ledger();
        self.condition = Condition::NeedsReset;
        self.given_up = true;
    }

    /// Aborts the open transaction, then has the core rebuild every owned partition (paused here
    /// until restored). The rebuild happens even with no transaction open: the record whose
    /// failure led here was polled (the position is past it) but not processed.
    pub(crate) fn abort<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        self.transaction_spans.clear();
        // A record refused before its transaction's first action ran (too large) leaves a ledger
        // but no producer transaction: still an abort, for the metric.
        if !self.producer_in_transaction && self.core.has_open_transaction() {
            self.metrics
                .transactions
                .get_or_create(&TransactionOutcomeLabel { outcome: TransactionOutcome::Aborted })
                .inc();
        }
        if self.producer_in_transaction {
            if !self.abort_in_producer() {
                return;
            }
            self.metrics
                .transactions
                .get_or_create(&TransactionOutcomeLabel { outcome: TransactionOutcome::Aborted })
                .inc();
        }
        let owned = self.core.aborted();
        if owned.is_empty() {
            return;
        }
        if let Err(error) = consumer.pause(&self.input_partitions(&owned)) {
            // Records fetched meanwhile are skipped: the partition is not restored yet.
            warn!(%error, "cannot pause partitions to rebuild after an abort");
        }
    }

    /// `abort_transaction` of the producer's open transaction; false when it failed (the
    /// condition then says what follows: a reset, or the exit).
    fn abort_in_producer(&mut self) -> bool {
        self.producer_in_transaction = false;
        let timeout = self.config.transactional_call_timeout();
        let aborted = self.health.guard_call("abort_transaction", timeout + CALL_MARGIN, || {
            self.producer.abort_transaction(timeout)
        });
        let Err(error) = aborted else { return true };
        self.core.drop_ledger();
        match classify(error) {
            Failure::Fatal(error) => self.condition = Condition::Failed(RuntimeError::Fatal(error)),
            other => {
                warn!(error = ?other, "abort failed; re-creating the producer");
                self.condition = Condition::NeedsReset;
            }
        }
        false
    }

    /// Starts over after an unknown outcome: a new producer (whose `init_transactions` fences the
    /// old one and completes or aborts its transaction), then every partition's state restored
    /// from the changelog and every partition rewound to the group's committed offsets.
    fn reset<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), RuntimeError> {
        self.metrics.producer_resets.inc();
        self.producer_in_transaction = false;
        self.given_up = false;
        self.transaction_spans.clear();
        self.core.reset();
        self.producer = crate::create_transactional_producer(&self.config, &self.health)?;
        self.restore_pending(consumer, true)
    }

    /// Restores the state of every partition waiting for it, then lets it be processed.
    fn restore_pending<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        rewind: bool,
    ) -> Result<(), RuntimeError> {
        let partitions = self.core.take_pending_restore();
        if partitions.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let input = self.input_partitions(&partitions);
        // Offsets first: a read_committed fetch waits while the last transaction's offsets are
        // still pending (KIP-447, require_stable); the restore then waits for that transaction's
        // changelog marker too, so the state read is not older than the offsets it resumes from.
        let committed = committed_offsets(consumer, &input, &self.health)?;
        if let Some(lookups) = &mut self.lookups {
            lookups.assign_tables(&partitions, &mut self.core, &self.health)?;
        }
        let mut restored = crate::restore::read_changelog(
            self.core.processor(),
            &self.config,
            &partitions,
            self.core.horizon_ms(),
            &self.metrics,
            &self.health,
        )?;
        // Asked again now that the changelog is read: a transaction whose changelog records
        // committed without its offsets shows as an offset still short of the position.
        let committed_after = committed_offsets(consumer, &input, &self.health)?;
        for partition in &partitions {
            let state = restored.remove(partition).unwrap_or_default();
            let mut seeks = Vec::new();
            for topic in self.input_topics() {
                let read = |list: &TopicPartitionList| {
                    list.find_partition(topic, *partition).and_then(|element| match element.offset() {
                        Offset::Offset(offset) => Some((offset, element.metadata().to_owned())),
                        _ => None,
                    })
                };
                let (before, after) = (read(&committed), read(&committed_after));
                let before = before.as_ref().map(|(offset, metadata)| (*offset, metadata.as_str()));
                let after = after.as_ref().map(|(offset, metadata)| (*offset, metadata.as_str()));
                let position = state.position(topic);
                let target = crate::changelog::resume_offset(before, position);
                let committed_at = before.map(|(offset, _)| offset);
                let disagrees = target != committed_at;
                if let Some(split) = crate::changelog::split_seen(before, position, after) {
                    self.metrics.resumed_from_changelog.inc();
                    warn!(
                        topic,
                        partition,
                        ?split,
                        committed_before = ?committed_at,
                        changelog = ?position,
                        committed_after = ?after.map(|(offset, _)| offset),
                        "a transaction the brokers committed in part: resuming from the changelog's position"
                    );
                } else if disagrees {
                    info!(
                        topic,
                        partition,
                        committed = ?committed_at,
                        changelog = ?target,
                        "resuming from the changelog's position, past the committed offset read before the restore"
                    );
                }
                seeks.push((topic.to_owned(), target, disagrees));
            }
            let rewind = self.core.install(*partition, state, rewind);
            for (topic, target, disagrees) in seeks {
                if rewind || disagrees {
                    let target = target.map_or(Offset::Beginning, Offset::Offset);
                    seek(consumer, &topic, *partition, target, &self.health)?;
                }
            }
        }
        // Before the fetchers allocate again, so that the resident set reads what the state holds.
        let resident_before = crate::memory::resident_bytes();
        crate::memory::release_freed();
        consumer.resume(&input)?;
        wake_fetcher(consumer, &input);
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        info!(
            partitions = ?partitions,
            customers = self.core.customer_count(),
            seconds = started.elapsed().as_secs_f64(),
            resident_mib_before_release = resident_before.map(|bytes| bytes >> 20),
            resident_mib = crate::memory::resident_bytes().map(|bytes| bytes >> 20),
            "state restored"
        );
        Ok(())
    }

    /// The topics the service consumes: the events, its handoff topic if it hands off state,
    /// its feedback topic if it has one.
    fn input_topics(&self) -> impl Iterator<Item = &str> {
        Input::ALL.into_iter().filter_map(|input| match input {
            Input::Events => Some(self.config.input_topic.as_str()),
            Input::Handoff => self.config.handoff_topic.as_deref(),
            Input::Feedback => self.config.feedback_topic.as_deref(),
        })
    }

    /// Partition `p` of every input, for each `p` of `partitions`.
    fn input_partitions(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for topic in self.input_topics() {
            for partition in partitions {
                list.add_partition(topic, *partition);
            }
        }
        list
    }

    /// Graceful stop, first half: commit the open transaction. Returns the error that makes the
    /// stop unclean, if any.
    pub(crate) fn commit_before_leaving<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        self.leaving = true;
        if std::mem::take(&mut self.given_up)
            && self.producer_in_transaction
            && matches!(self.condition, Condition::NeedsReset)
        {
            // Given up just before the stop (no poll ran the reset since): no transaction
            // follows, so a plain abort ends it instead of a new producer.
            self.condition = Condition::Working;
            self.abort_in_producer();
        }
        self.commit(consumer);
        match std::mem::replace(&mut self.condition, Condition::Working) {
            Condition::Failed(error) => Err(error),
            // Not lost (the transaction is atomic and a restart restores from Kafka), but not a
            // clean stop either.
            Condition::NeedsReset => Err(RuntimeError::UnknownOutcome),
            Condition::Working => Ok(()),
        }
    }

    /// Graceful stop, second half, after the group was left: abort whatever a late callback
    /// opened.
    pub(crate) fn finish<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        self.abort(consumer);
        match std::mem::replace(&mut self.condition, Condition::Working) {
            Condition::Failed(error) => Err(error),
            _ => Ok(()),
        }
    }
}

/// Asks the offsets of every resumed partition, to wake librdkafka's fetcher: a resume does not
/// wake it (only a request, an answer or its one-second idle timeout does:
/// `rd_kafka_max_block_ms`), so the first records after every restore came a second late. The
/// answer is not needed. A broker that does not answer is asked no more (the fetcher then wakes
/// by itself), so an outage holds the loop for one timeout.
fn wake_fetcher<C: ConsumerContext>(consumer: &BaseConsumer<C>, resumed: &TopicPartitionList) {
    for element in resumed.elements() {
        if let Err(error) =
            consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(2))
        {
            debug!(%error, partition = element.partition(), "offsets asked to wake the fetcher");
            return;
        }
    }
}

/// Produces one record; those caused by an event carry its id in the header
/// `cause.event_id`, so any output can be traced back to its input.
fn send(producer: &TxnProducer, out: &OutRecord) -> Result<(), Failure> {
    let mut record = BaseRecord::<str, [u8]>::to(&out.topic);
    if let Some(partition) = out.partition {
        record = record.partition(partition);
    }
    if let Some(key) = &out.key {
        record = record.key(key.as_str());
    }
    if let Some(value) = &out.value {
        record = record.payload(value.as_slice());
    }
    if out.cause.is_some() || out.trace.is_some() || !out.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(out.headers.len() + 3);
        if let Some(cause) = &out.cause {
            headers = headers.insert(Header { key: CAUSE_HEADER, value: Some(cause.as_str()) });
        }
        for (name, value) in out.trace.iter().flat_map(|trace| trace.headers()) {
            headers = headers.insert(Header { key: name, value: Some(value) });
        }
        for (name, value) in &out.headers {
            headers = headers.insert(Header { key: name, value: Some(value.as_str()) });
        }
        record = record.headers(headers);
    }
    loop {
        match producer.send(record) {
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
