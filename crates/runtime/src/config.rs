//! Settings every service shares, as flags with environment variables (SPEC 7).

use std::net::SocketAddr;
use std::time::Duration;

use omnistream_model::topics::{EVENTS, EVENTS_DLQ};

use omnistream_model::RecordKind;
use omnistream_schema_registry::WireFormatArgs;

use crate::kafka::KafkaArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub shutdown: crate::server::ShutdownArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub schema_registry: WireFormatArgs,

    /// Consumer group; default: the service name.
    #[arg(long, env = "KAFKA_GROUP_ID")]
    pub group_id: Option<String>,

    /// This instance's stable id, part of its `transactional.id`; default: the host name. Keep it
    /// stable across restarts so a restart fences and aborts its predecessor's transaction at once.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Topic of touchpoint events to read.
    #[arg(long, env = "INPUT_TOPIC", default_value = EVENTS)]
    pub input_topic: String,

    /// Internal topic through which a customer's state moves to another customer (merges), with
    /// the input's partition count, conventionally `<service>.handoff.v1`. Only services that
    /// hand off state use it, and only when it is set: merges (identity resolution) need it, and
    /// without it an event asking for one is dead-lettered (`merge_without_handoff`).
    #[arg(long, env = "HANDOFF_TOPIC")]
    pub handoff_topic: Option<String>,

    /// A table input: `ROLE=TOPIC`, a compacted topic with the input's partition count, keyed
    /// like the events (repeat the flag, or separate with commas).
    #[arg(long = "table", env = "TABLES", value_delimiter = ',', value_parser = role_and_topic)]
    pub tables: Vec<(String, String)>,

    /// A broadcast input: `ROLE=TOPIC`, a small topic every instance reads whole.
    #[arg(long = "broadcast", env = "BROADCASTS", value_delimiter = ',', value_parser = role_and_topic)]
    pub broadcasts: Vec<(String, String)>,

    /// Table and broadcast lookups for a record appended at T answer as of T minus this
    /// (milliseconds): at least the lookup topics' writers' transaction timeout, so that every
    /// version a lookup can return is committed before the record is applied, and a replay sees
    /// the same versions.
    #[arg(long, env = "LOOKUP_GRACE_MS", default_value_t = 15_000)]
    pub lookup_grace_ms: u64,

    /// How far before the oldest partition clock a broadcast lookup may still be asked (hours):
    /// a partition assigned later resumes at most this far behind (the events' retention, 7
    /// days). Older broadcast versions superseded since are dropped.
    #[arg(long, env = "BROADCAST_HORIZON_HOURS", default_value_t = 168)]
    pub broadcast_horizon_hours: u64,

    /// Dead-letter topic for records that cannot be decoded or fail validation.
    #[arg(long, env = "DLQ_TOPIC", default_value = EVENTS_DLQ)]
    pub dlq_topic: String,

    /// Compacted changelog of the service's state; default `<service>.state.v1`.
    #[arg(long, env = "CHANGELOG_TOPIC")]
    pub changelog_topic: Option<String>,

    /// Commit a transaction at least this often (milliseconds).
    #[arg(long, env = "COMMIT_INTERVAL_MS", default_value_t = 100)]
    pub commit_interval_ms: u64,

    /// While the service keeps up (its latest record was appended less than the commit interval
    /// ago), commit a transaction once it is this old (milliseconds): its outputs are visible
    /// sooner, and a backlog still commits by the interval.
    #[arg(long, env = "COMMIT_KEEPING_UP_MS", default_value_t = 20)]
    pub commit_keeping_up_ms: u64,

    /// Commit a transaction after this many input records even before the interval. The interval
    /// governs up to 500,000 records/s; at 10,000 a drain of 130,000/s committed every 75 ms and
    /// spent 7 % longer waiting for commits (journeys, median of 3 alternating runs).
    #[arg(long, env = "COMMIT_MAX_RECORDS", default_value_t = 50_000)]
    pub commit_max_records: usize,

    /// Compression of the record batches the service writes to its outputs and dead letters.
    #[arg(long, env = "COMPRESSION", value_enum, default_value_t = Compression::Lz4)]
    pub compression: Compression,

    /// Compression of the changelog's batches: written at every commit, read only by a restore,
    /// so the denser codec by default (zstd, at level 1: a seventh fewer of profile-updater's
    /// changelog bytes than lz4; docs/runtime.md, "Changelog compression").
    #[arg(long, env = "CHANGELOG_COMPRESSION", value_enum, default_value_t = Compression::Zstd)]
    pub changelog_compression: Compression,

    /// Write one record per customer per transaction to each output topic that keeps a
    /// customer's latest record (compacted: profiles, suppressions, affinity, balances), the
    /// transaction's last, as Kafka Streams' record cache does (docs/runtime.md, "One record per
    /// customer per transaction"). `false` writes every event's record.
    #[arg(long, env = "COALESCE_OUTPUTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub coalesce_outputs: bool,

    /// Carry each input record's W3C trace context (`traceparent`, `tracestate` headers) onto the
    /// outputs it causes (docs/operations.md, "Following one event"). Reading a record's headers
    /// makes librdkafka parse them, even an empty set: about 4 % of profile-updater's instructions
    /// on records without any (callgrind, 60,000 events); `false` skips it.
    #[arg(long, env = "TRACE_CONTEXT", default_value_t = true, action = clap::ArgAction::Set)]
    pub trace_context: bool,

    /// Transaction timeout (milliseconds): how long a crashed instance's open transaction can hold
    /// read_committed readers back at most.
    #[arg(long, env = "TRANSACTION_TIMEOUT_MS", default_value_t = 10_000)]
    pub transaction_timeout_ms: u64,

    /// Consumer group session timeout (milliseconds): how soon a dead instance's partitions move.
    #[arg(long, env = "SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u64,

    /// Event ids remembered per customer to drop producer retries.
    #[arg(long, env = "DEDUPE_WINDOW", default_value_t = 64)]
    pub dedupe_window: usize,

    /// How the state of a customer is held in memory between the transactions that touch them
    /// (docs/runtime.md, "Idle state"): `decoded`, ready for their next event, `encoded`, as
    /// their changelog record's bytes, decoded again at their next event or timer, or
    /// `compressed`, those bytes compressed with a dictionary the process trains.
    #[arg(long, env = "IDLE_STATE", value_enum, default_value_t = IdleState::Decoded)]
    pub idle_state: IdleState,

    /// How changelog records written from now on hold the dedupe ids (docs/operations.md,
    /// "Upgrading across a changelog layout"): `bytes`, or `array`, the only layout releases
    /// before 2026-12-07 read. Set `array` for the first rolling restart of an upgrade from such
    /// a release (or to be able to roll back to one), then remove it.
    #[arg(long, env = "CHANGELOG_IDS_LAYOUT", value_enum, default_value_t = IdsLayout::Bytes)]
    pub changelog_ids_layout: IdsLayout,

    /// How long an erasure stays final (SPEC 4.5): for this many days a marker holding only a keyed
    /// hash of the customer id drops retried events and events dated at or before the erasure.
    #[arg(long, env = "ERASURE_HORIZON_DAYS", default_value_t = 30)]
    pub erasure_horizon_days: u32,

    /// Secret key of the erasure markers' HMAC-SHA256. Without one a built-in key is used (with a
    /// warning at start): markers then protect nothing from someone who can read the changelog.
    #[arg(long, env = "ERASURE_HMAC_KEY", hide_env_values = true)]
    pub erasure_hmac_key: Option<String>,

    /// After an erasure, drop every event of the customer while the marker lives, also those
    /// dated after it (no new relationship).
    #[arg(long, env = "SUPPRESS_AFTER_ERASURE", default_value_t = false)]
    pub suppress_after_erasure: bool,

    /// How often due timers are fired (milliseconds).
    #[arg(long, env = "TIMER_INTERVAL_MS", default_value_t = 200)]
    pub timer_interval_ms: u64,

    /// Admin server (health, readiness, metrics); default per service.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
}

/// How the state of a customer is held in memory between the transactions that touch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdleState {
    /// Decoded: no work at the customer's next event, the most memory.
    Decoded,
    /// Their changelog record's bytes (MessagePack): a fraction of the memory, a decode when the
    /// customer is next touched and a copy of the record at each commit that changed them.
    Encoded,
    /// Their changelog record compressed with a zstd dictionary the process trains on the first
    /// records it holds: less memory again, a decompression and a compression more.
    Compressed,
}

/// How a changelog record holds the customer's dedupe ids (docs/runtime.md, "The changelog").
/// Every release since 2026-12-07 reads both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdsLayout {
    /// One byte string of 8 bytes a hash, the record's version byte marked: 64 bytes shorter for
    /// a full window; releases before 2026-12-07 refuse such a record as newer.
    Bytes,
    /// A MessagePack array of integers, as releases before 2026-12-07 wrote and read.
    Array,
}

impl IdleState {
    /// Whether customers are held by their records between transactions.
    pub fn holds_records(self) -> bool {
        self != IdleState::Decoded
    }
}

fn role_and_topic(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((role, topic)) if !role.trim().is_empty() && !topic.trim().is_empty() => {
            Ok((role.trim().to_owned(), topic.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not ROLE=TOPIC")),
    }
}

/// What a service binary tells the runtime about itself.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub name: &'static str,
    pub default_admin_addr: SocketAddr,
    pub version: &'static str,
    /// Each output role and the topic it writes (the processor's `OUTPUTS`).
    pub outputs: Vec<(&'static str, String)>,
}

impl ServiceInfo {
    /// A service of the registry (`omnistream_model::services`), with its build's version, writing
    /// each output role to its registry default topic.
    pub fn registered(spec: &omnistream_model::services::ServiceSpec, version: &'static str) -> Self {
        Self {
            name: spec.name,
            default_admin_addr: spec.default_admin_addr(),
            version,
            outputs: spec.outputs.iter().map(|output| (output.role, output.topic.name.to_owned())).collect(),
        }
    }

    /// Writes output `role` to `topic` (the value of the role's flag); panics on a role the
    /// service does not have (a programming error).
    #[must_use]
    pub fn with_output(mut self, role: &str, topic: impl Into<String>) -> Self {
        let bound = self.outputs.iter_mut().find(|(name, _)| *name == role);
        bound.unwrap_or_else(|| panic!("{} has no output {role:?}", self.name)).1 = topic.into();
        self
    }

    /// Why `outputs` (a processor's `OUTPUTS`) and the roles bound here disagree, if they do.
    pub fn check_outputs(&self, outputs: &[&str]) -> Result<(), String> {
        let bound: Vec<&str> = self.outputs.iter().map(|(role, _)| *role).collect();
        let unbound: Vec<&str> = outputs.iter().copied().filter(|role| !bound.contains(role)).collect();
        let unwritten: Vec<&str> = bound.iter().copied().filter(|role| !outputs.contains(role)).collect();
        if unbound.is_empty() && unwritten.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{}: the processor writes {outputs:?}, the configuration binds {bound:?} \
             (no topic for {unbound:?}; nothing writes {unwritten:?})",
            self.name
        ))
    }
}

/// Erasure finality (SPEC 4.5).
#[derive(Clone)]
pub struct ErasureConfig {
    pub horizon: Duration,
    /// `None`: the built-in key.
    pub key: Option<Vec<u8>>,
    pub suppress_after: bool,
}

impl std::fmt::Debug for ErasureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureConfig")
            .field("horizon", &self.horizon)
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("suppress_after", &self.suppress_after)
            .finish()
    }
}

/// Settings resolved against the service's defaults.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub service: ServiceInfo,
    pub kafka: KafkaArgs,
    pub schema_registry: WireFormatArgs,
    pub group_id: String,
    pub instance_id: String,
    pub input_topic: String,
    /// `None` for a service that does not hand off state.
    pub handoff_topic: Option<String>,
    /// The topic of the processor's [`crate::Processor::FEEDBACK`] output, read as a second input.
    pub feedback_topic: Option<String>,
    /// Table inputs as (role, topic).
    pub tables: Vec<(String, String)>,
    /// Broadcast inputs as (role, topic).
    pub broadcasts: Vec<(String, String)>,
    pub lookup_grace: Duration,
    pub broadcast_horizon: Duration,
    pub dlq_topic: String,
    pub changelog_topic: String,
    pub commit_interval: Duration,
    pub commit_keeping_up: Duration,
    pub commit_max_records: usize,
    pub compression: Compression,
    pub changelog_compression: Compression,
    pub coalesce_outputs: bool,
    pub trace_context: bool,
    pub transaction_timeout: Duration,
    pub session_timeout: Duration,
    pub dedupe_window: usize,
    pub idle_state: IdleState,
    pub changelog_ids_layout: IdsLayout,
    pub erasure: ErasureConfig,
    pub timer_interval: Duration,
    pub shutdown_grace: Duration,
    pub admin_addr: SocketAddr,
}

impl RuntimeConfig {
    /// The settings of `service`; `hands_off_state` and `feedback` as its processor's
    /// [`crate::Processor::HANDS_OFF_STATE`] and [`crate::Processor::FEEDBACK`].
    pub fn resolve(
        args: RuntimeArgs,
        service: ServiceInfo,
        hands_off_state: bool,
        feedback: Option<&str>,
    ) -> Self {
        let instance_id = args.instance_id.unwrap_or_else(|| {
            hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "local".to_owned())
        });
        Self {
            group_id: args.group_id.unwrap_or_else(|| service.name.to_owned()),
            changelog_topic: args.changelog_topic.unwrap_or_else(|| format!("{}.state.v1", service.name)),
            handoff_topic: args.handoff_topic.filter(|_| hands_off_state),
            feedback_topic: feedback.and_then(|role| {
                service.outputs.iter().find(|(bound, _)| *bound == role).map(|(_, topic)| topic.clone())
            }),
            admin_addr: args.admin_addr.unwrap_or(service.default_admin_addr),
            service,
            kafka: args.kafka,
            schema_registry: args.schema_registry,
            instance_id,
            input_topic: args.input_topic,
            tables: args.tables,
            broadcasts: args.broadcasts,
            lookup_grace: Duration::from_millis(args.lookup_grace_ms),
            broadcast_horizon: Duration::from_secs(args.broadcast_horizon_hours.saturating_mul(3_600)),
            dlq_topic: args.dlq_topic,
            commit_interval: Duration::from_millis(args.commit_interval_ms),
            commit_keeping_up: Duration::from_millis(args.commit_keeping_up_ms),
            commit_max_records: args.commit_max_records.max(1),
            compression: args.compression,
            changelog_compression: args.changelog_compression,
            coalesce_outputs: args.coalesce_outputs,
            trace_context: args.trace_context,
            transaction_timeout: Duration::from_millis(args.transaction_timeout_ms),
            session_timeout: Duration::from_millis(args.session_timeout_ms),
            dedupe_window: args.dedupe_window,
            idle_state: args.idle_state,
            changelog_ids_layout: args.changelog_ids_layout,
            erasure: ErasureConfig {
                horizon: Duration::from_secs(u64::from(args.erasure_horizon_days) * 86_400),
                key: args.erasure_hmac_key.map(String::into_bytes),
                suppress_after: args.suppress_after_erasure,
            },
            timer_interval: Duration::from_millis(args.timer_interval_ms.max(10)),
            shutdown_grace: args.shutdown.grace(),
        }
    }

    /// Each output topic with the Avro record it holds, as the service registry says (`None`:
    /// another encoding, or a service the registry does not list).
    pub fn written_records(&self) -> Vec<(&str, Option<RecordKind>)> {
        let spec = omnistream_model::services::service(self.service.name);
        let record = |role: &str| {
            let output = spec?.outputs.iter().find(|output| output.role == role)?;
            RecordKind::named(output.topic.value)
        };
        self.service.outputs.iter().map(|(role, topic)| (topic.as_str(), record(role))).collect()
    }

    /// Every topic the service writes: its outputs, dead letters and changelog.
    pub fn written_topics(&self) -> impl Iterator<Item = &str> {
        self.service
            .outputs
            .iter()
            .map(|(_, topic)| topic.as_str())
            .chain([self.dlq_topic.as_str(), self.changelog_topic.as_str()])
    }

    /// One transactional id per instance (KIP-447): stable across restarts.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id)
    }

    /// How long a blocking transactional call may take before its outcome counts as unknown.
    pub fn transactional_call_timeout(&self) -> Duration {
        self.transaction_timeout
    }
}

/// A codec of Kafka record batches (librdkafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The name librdkafka knows it by.
    pub fn codec(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceInfo;
    use omnistream_model::services::LOYALTY_POINTS;

    #[test]
    fn given_a_registered_service_then_its_outputs_are_bound_to_the_registry_topics_unless_a_flag_says() {
        let service = ServiceInfo::registered(&LOYALTY_POINTS, "0").with_output("ledger", "my.ledger");
        assert_eq!(
            service.outputs,
            vec![("balances", "loyalty.balances.v1".to_owned()), ("ledger", "my.ledger".to_owned())]
        );
        assert_eq!(service.check_outputs(&["ledger", "balances"]), Ok(()), "order does not matter");
    }

    #[test]
    fn given_a_processor_and_registry_that_disagree_then_the_check_names_both_sides() {
        let service = ServiceInfo::registered(&LOYALTY_POINTS, "0");
        let missing = service.check_outputs(&["ledger", "balances", "tiers"]).unwrap_err();
        assert!(missing.contains(r#"no topic for ["tiers"]"#), "{missing}");
        let unwritten = service.check_outputs(&["ledger"]).unwrap_err();
        assert!(unwritten.contains(r#"nothing writes ["balances"]"#), "{unwritten}");
    }

    #[test]
    #[should_panic(expected = "loyalty-points has no output \"points\"")]
    fn given_a_flag_for_a_role_the_service_lacks_then_it_is_a_programming_error() {
        let _ = ServiceInfo::registered(&LOYALTY_POINTS, "0").with_output("points", "x");
    }
}
