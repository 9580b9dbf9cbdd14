//! Prometheus metrics of a service (SPEC 7), named the Vector way: `*_total` counters and bounded
//! label values (`outcome`, `error_code`, partition numbers).

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RecordOutcome {
    Applied,
    Duplicate,
    DeadLettered,
    /// Dropped by an erasure marker (SPEC 4.5).
    Erased,
    /// Not read by the processor (`Processor::reads`): nothing written.
    Ignored,
}

impl EncodeLabelValue for RecordOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            RecordOutcome::Applied => "applied",
            RecordOutcome::Duplicate => "duplicate",
            RecordOutcome::DeadLettered => "dead_lettered",
            RecordOutcome::Erased => "erased",
            RecordOutcome::Ignored => "ignored",
        })
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum TransactionOutcome {
    Committed,
    Aborted,
}

impl EncodeLabelValue for TransactionOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            TransactionOutcome::Committed => "committed",
            TransactionOutcome::Aborted => "aborted",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordOutcomeLabel {
    pub outcome: RecordOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransactionOutcomeLabel {
    pub outcome: TransactionOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorCodeLabel {
    pub error_code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainEventLabel {
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    service: String,
    version: String,
}

/// Every metric of the runtime; cheap to clone handles.
#[derive(Debug)]
pub struct Metrics {
    pub consumed: Counter,
    pub processed: Family<RecordOutcomeLabel, Counter>,
    pub dead_lettered: Family<ErrorCodeLabel, Counter>,
    pub transactions: Family<TransactionOutcomeLabel, Counter>,
    pub producer_resets: Counter,
    /// Commit calls that timed out and were made again to resume them (`commit_resuming`).
    pub commit_resumes: Counter,
    pub timers_fired: Counter,
    pub processing_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub assigned_partitions: Gauge,
    pub restoring_partitions: Gauge,
    pub restored_records: Counter,
    pub restore_seconds: Histogram,
    /// Restored input partitions whose offsets show a transaction the brokers committed in part.
    pub resumed_from_changelog: Counter,
    pub customers: Gauge,
    /// Input records a transaction may hold now (`EngineCore::records_limit`).
    pub transaction_records_limit: Gauge,
    /// Input partitions paused at a record whose schema id is being learned from the registry.
    pub partitions_waiting_for_schema: Gauge,
    /// What the processor says its inputs did (`Processor::count_domain_events`).
    pub domain_events: Family<DomainEventLabel, Counter>,
    /// The `processed` counters, resolved once: a label lookup per record is measurable.
    processed_by_outcome: [Counter; 5],
}

impl Metrics {
    /// Counts one processed input record.
    pub fn record_processed(&self, outcome: RecordOutcome) {
        let index = match outcome {
            RecordOutcome::Applied => 0,
            RecordOutcome::Duplicate => 1,
            RecordOutcome::DeadLettered => 2,
            RecordOutcome::Erased => 3,
            RecordOutcome::Ignored => 4,
        };
        self.processed_by_outcome[index].inc();
    }

    /// Creates the metrics and registers them under the `omnistream_` prefix.
    pub fn register(registry: &mut Registry, service: &str, version: &str) -> Self {
        let metrics = Self {
            consumed: Counter::default(),
            processed: Family::default(),
            dead_lettered: Family::default(),
            transactions: Family::default(),
            producer_resets: Counter::default(),
            commit_resumes: Counter::default(),
            timers_fired: Counter::default(),
            processing_seconds: Histogram::new(exponential_buckets(1e-6, 4.0, 10)),
            end_to_end_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            consumer_lag: Family::default(),
            assigned_partitions: Gauge::default(),
            restoring_partitions: Gauge::default(),
            restored_records: Counter::default(),
            restore_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            resumed_from_changelog: Counter::default(),
            customers: Gauge::default(),
            transaction_records_limit: Gauge::default(),
            partitions_waiting_for_schema: Gauge::default(),
            domain_events: Family::default(),
            processed_by_outcome: Default::default(),
        };
        let mut metrics = metrics;
        metrics.processed_by_outcome = [
            RecordOutcome::Applied,
            RecordOutcome::Duplicate,
            RecordOutcome::DeadLettered,
            RecordOutcome::Erased,
            RecordOutcome::Ignored,
        ]
        .map(|outcome| metrics.processed.get_or_create(&RecordOutcomeLabel { outcome }).clone());
        let r = registry.sub_registry_with_prefix("omnistream");
        r.register("records_consumed", "Input records read", metrics.consumed.clone());
        r.register("records_processed", "Input records by outcome", metrics.processed.clone());
        r.register("dlq_records", "Records sent to the dead-letter topic", metrics.dead_lettered.clone());
        r.register("transactions", "Kafka transactions by outcome", metrics.transactions.clone());
        r.register(
            "producer_resets",
            "Transactional producers re-created (a failed transaction or an unknown outcome)",
            metrics.producer_resets.clone(),
        );
        r.register(
            "commit_resumes",
            "Commit calls that timed out and were made again to resume the commit rather than give it up",
            metrics.commit_resumes.clone(),
        );
        r.register("timers_fired", "Processor timers fired", metrics.timers_fired.clone());
        r.register(
            "processing_seconds",
            "Time to decode, validate and apply one record",
            metrics.processing_seconds.clone(),
        );
        r.register(
            "end_to_end_latency_seconds",
            "Input record timestamp to the commit of its outputs (or of its offset, for a record that wrote none)",
            metrics.end_to_end_seconds.clone(),
        );
        r.register("commit_seconds", "Time to commit a transaction", metrics.commit_seconds.clone());
        r.register(
            "consumer_lag",
            "Records behind the end of each input partition",
            metrics.consumer_lag.clone(),
        );
        r.register("assigned_partitions", "Input partitions assigned", metrics.assigned_partitions.clone());
        r.register(
            "restoring_partitions",
            "Assigned partitions whose state is being restored",
            metrics.restoring_partitions.clone(),
        );
        r.register(
            "restored_records",
            "Changelog records read while restoring",
            metrics.restored_records.clone(),
        );
        r.register(
            "restore_seconds",
            "Time to restore newly assigned partitions",
            metrics.restore_seconds.clone(),
        );
        r.register(
            "resumed_from_changelog",
            "Restored input partitions whose offsets, read around the changelog, show a transaction committed in part",
            metrics.resumed_from_changelog.clone(),
        );
        r.register("customers", "Customers held in state", metrics.customers.clone());
        r.register(
            "transaction_records_limit",
            "Input records a transaction may hold now: COMMIT_MAX_RECORDS, less for a while after a transaction failed",
            metrics.transaction_records_limit.clone(),
        );
        r.register(
            "partitions_waiting_for_schema",
            "Input partitions paused at a record whose schema id the schema registry has not told yet",
            metrics.partitions_waiting_for_schema.clone(),
        );
        r.register(
            "domain_events",
            "What the processor's inputs did, by event (e.g. identity merges)",
            metrics.domain_events.clone(),
        );
        let build = Info::new(BuildLabels { service: service.to_owned(), version: version.to_owned() });
        r.register("build", "Service name and version", build);
        metrics
    }
}
