//! Reads the table and broadcast inputs (Kafka side of `lookup.rs`) with an assign-only
//! read_committed consumer: broadcast topics whole from the start, a table's partition `p` from
//! its beginning when the events' partition `p` is assigned. They are never committed: every
//! assignment reads them again, as a restore reads the changelog.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnistream_schema_registry::SchemaLearner;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::RuntimeError;
use crate::config::RuntimeConfig;
use crate::engine::{EngineCore, InputRecord, Now};
use crate::kafka::ReadToEndContext;
use crate::lookup::{LookupPartition, LookupScope};
use crate::processor::Processor;
use crate::server::Health;

/// How long reading a lookup input to its end may take before the service exits.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a record may wait for its lookups (a partition without a leader, a writer's
/// transaction held open) before the service exits to be restarted: nothing hangs.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct LookupReader {
    consumer: BaseConsumer<ReadToEndContext>,
    /// Learns the schema ids of records in the Confluent wire format.
    schemas: Arc<SchemaLearner>,
    /// Role of each topic, and topic of each role.
    roles: HashMap<String, &'static str>,
    topics: HashMap<&'static str, String>,
    /// Table partitions assigned (by events partition).
    tables_assigned: BTreeSet<i32>,
    unproven: Vec<LookupPartition>,
    /// Per partition being checked: when the check began (wall clock, unix millis) and the low
    /// and high watermarks then; it is read to its end as of that time once its position reaches it.
    targets: HashMap<LookupPartition, (i64, i64, i64)>,
}

impl std::fmt::Debug for LookupReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupReader").field("topics", &self.topics).finish_non_exhaustive()
    }
}

impl LookupReader {
    /// The reader of `P::LOOKUPS` (`None` if it has none), with every broadcast topic read to its
    /// end. Fails when a declared role has no topic configured.
    pub(crate) fn start<P: Processor>(
        config: &RuntimeConfig,
        core: &mut EngineCore<P>,
        health: &Health,
        schemas: Arc<SchemaLearner>,
    ) -> Result<Option<Self>, RuntimeError> {
        if P::LOOKUPS.is_empty() {
            if !config.tables.is_empty() || !config.broadcasts.is_empty() {
                warn!("table or broadcast inputs configured for a service that reads none; ignored");
            }
            return Ok(None);
        }
        let mut roles = HashMap::new();
        let mut topics = HashMap::new();
        for input in P::LOOKUPS {
            let (configured, flag) = match input.scope {
                LookupScope::Table => (&config.tables, "--table"),
                LookupScope::Broadcast => (&config.broadcasts, "--broadcast"),
            };
            let topic =
                configured.iter().find(|(role, _)| role == input.role).map(|(_, topic)| topic.clone());
            let topic = topic.ok_or_else(|| {
                RuntimeError::Lookup(format!("this service reads {0:?}: set {flag} {0}=TOPIC", input.role))
            })?;
            roles.insert(topic.clone(), input.role);
            topics.insert(input.role, topic);
        }
        let mut client = config.kafka.client_config()?;
        client
            .set("group.id", format!("{}-lookups", config.group_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            // A record waits until the position reaches the end offset asked of the broker:
            // fetch often when idle, so that it does soon.
            .set("fetch.wait.max.ms", "50");
        let consumer: BaseConsumer<ReadToEndContext> =
            client.create_with_context(ReadToEndContext { reader: "lookup reader" })?;
        let mut reader = Self {
            schemas,
            consumer,
            roles,
            topics,
            tables_assigned: BTreeSet::new(),
            unproven: Vec::new(),
            targets: HashMap::new(),
        };
        let partitions_of = |topic: &str| -> Result<usize, RuntimeError> {
            let metadata = reader.consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
            Ok(metadata.topics().first().map_or(0, |t| t.partitions().len()))
        };
        let events = partitions_of(&config.input_topic)?;
        for input in P::LOOKUPS.iter().filter(|input| input.scope == LookupScope::Table) {
            let topic = &reader.topics[input.role];
            let partitions = partitions_of(topic)?;
            if partitions != events {
                return Err(RuntimeError::Lookup(format!(
                    "table {topic} has {partitions} partitions, the input {} {events}: they must be equal",
                    config.input_topic
                )));
            }
        }
        let mut broadcast = Vec::new();
        let mut list = TopicPartitionList::new();
        for input in P::LOOKUPS.iter().filter(|input| input.scope == LookupScope::Broadcast) {
            let topic = &reader.topics[input.role];
            let partitions = partitions_of(topic)? as i32;
            if partitions == 0 {
                return Err(RuntimeError::Lookup(format!("broadcast topic {topic} does not exist")));
            }
            core.lookups_mut().set_broadcast_partitions(input.role, partitions);
            for partition in 0..partitions {
                list.add_partition_offset(topic, partition, Offset::Beginning)?;
                broadcast.push(LookupPartition { role: input.role, partition });
            }
        }
        reader.consumer.incremental_assign(&list)?;
        reader.read_to_end(&broadcast, core, health)?;
        Ok(Some(reader))
    }

    /// Reads the tables' partitions of newly assigned events partitions to their end.
    pub(crate) fn assign_tables<P: Processor>(
        &mut self,
        partitions: &[i32],
        core: &mut EngineCore<P>,
        health: &Health,
    ) -> Result<(), RuntimeError> {
        let mut list = TopicPartitionList::new();
        let mut added = Vec::new();
        for partition in partitions.iter().filter(|p| !self.tables_assigned.contains(p)) {
            for input in P::LOOKUPS.iter().filter(|input| input.scope == LookupScope::Table) {
                list.add_partition_offset(&self.topics[input.role], *partition, Offset::Beginning)?;
                added.push(LookupPartition { role: input.role, partition: *partition });
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        self.consumer.incremental_assign(&list)?;
        self.tables_assigned.extend(partitions);
        self.read_to_end(&added, core, health)
    }

    /// Stops reading the tables' partitions of revoked events partitions.
    pub(crate) fn unassign_tables<P: Processor>(&mut self, partitions: &[i32]) {
        let mut list = TopicPartitionList::new();
        for partition in partitions.iter().filter(|p| self.tables_assigned.remove(p)) {
            for input in P::LOOKUPS.iter().filter(|input| input.scope == LookupScope::Table) {
                list.add_partition(&self.topics[input.role], *partition);
            }
        }
        if list.count() > 0
            && let Err(error) = self.consumer.incremental_unassign(&list)
        {
            warn!(%error, "cannot stop reading revoked table partitions");
        }
    }

    /// Hands what the consumer has (up to a batch) to the core; waits up to `timeout` for a first.
    /// Fails on a record not stamped by the broker (`LogAppendTime`): the lookup rule orders
    /// versions by append time, which a producer's clock would not give.
    pub(crate) fn poll<P: Processor>(
        &self,
        core: &mut EngineCore<P>,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let mut timeout = timeout;
        for _ in 0..1_000 {
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    let Some(role) = self.roles.get(message.topic()).copied() else { continue };
                    let key = message.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                    let Timestamp::LogAppendTime(appended) = message.timestamp() else {
                        return Err(RuntimeError::Lookup(format!(
                            "{} is not stamped by the broker: create it with message.timestamp.type=LogAppendTime",
                            message.topic()
                        )));
                    };
                    let from = LookupPartition { role, partition: message.partition() };
                    // A lookup version cannot be skipped: one of a schema id not known yet holds
                    // the reader (and so the service) until the registry tells it, as a broker
                    // outage does, and as long: then the service stops, to be restarted.
                    let started = Instant::now();
                    if let Some(payload) = message.payload()
                        && !self.schemas.wait_until_ready(payload, || started.elapsed() < WAIT_TIMEOUT)
                    {
                        return Err(RuntimeError::Lookup(format!(
                            "{} at {}@{}: the schema registry did not tell its schema id in {} s",
                            message.topic(),
                            message.partition(),
                            message.offset(),
                            WAIT_TIMEOUT.as_secs()
                        )));
                    }
                    core.on_lookup_record(from, key, appended, message.payload().map(<[u8]>::to_vec));
                }
                Some(Err(error)) => warn!(%error, "lookup reader"),
                None => return Ok(()),
            }
            timeout = Duration::ZERO;
        }
        Ok(())
    }

    /// Before an events record is applied: reads on until every lookup partition it reads holds
    /// all versions up to its lookup time (a later version read, or the partition read to its
    /// end). A broker that does not answer stops processing here rather than answer differently
    /// from a replay, for at most [`WAIT_TIMEOUT`]; liveness is not ticked meanwhile.
    pub(crate) fn wait_until_complete<P: Processor>(
        &mut self,
        core: &mut EngineCore<P>,
        record: &InputRecord<'_>,
        now: Now,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut warned = started;
        loop {
            let mut unproven = std::mem::take(&mut self.unproven);
            unproven.clear();
            core.unproven_lookups(record, now, &mut unproven);
            unproven.retain(|from| !self.check_read_to_end(*from, core));
            let done = unproven.is_empty();
            self.unproven = unproven;
            if done {
                return Ok(());
            }
            if started.elapsed() > WAIT_TIMEOUT {
                return Err(RuntimeError::Lookup(format!(
                    "{:?} not known complete for a record after {} s",
                    self.unproven,
                    WAIT_TIMEOUT.as_secs()
                )));
            }
            self.poll(core, Duration::from_millis(10))?;
            if warned.elapsed() >= Duration::from_secs(10) {
                warned = Instant::now();
                warn!(waiting = ?self.unproven, seconds = started.elapsed().as_secs(), "waiting for lookup inputs");
            }
        }
    }

    /// Starts or continues the check of whether each of `partitions` is read to its end, without
    /// waiting: for timers, which a sweep fires once their lookups are proven. Returns whether
    /// every one was found read to its end.
    pub(crate) fn check_without_waiting<P: Processor>(
        &mut self,
        mut partitions: Vec<LookupPartition>,
        core: &mut EngineCore<P>,
    ) -> bool {
        partitions.sort_unstable();
        partitions.dedup();
        let mut all = true;
        for from in partitions {
            all &= self.check_read_to_end(from, core);
        }
        all
    }

    fn read_to_end<P: Processor>(
        &mut self,
        partitions: &[LookupPartition],
        core: &mut EngineCore<P>,
        health: &Health,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        while !partitions.iter().all(|from| self.check_read_to_end(*from, core)) {
            if started.elapsed() > READ_TIMEOUT {
                return Err(RuntimeError::Lookup(format!(
                    "lookup partitions {partitions:?} not read to their end in {} s",
                    READ_TIMEOUT.as_secs()
                )));
            }
            self.poll(core, Duration::from_millis(50))?;
            health.tick();
        }
        info!(?partitions, seconds = started.elapsed().as_secs_f64(), "lookup inputs read");
        Ok(())
    }

    /// Whether `from` is read to its end as of a check: the high watermark asked of the broker
    /// when the check began, reached by the consumer's position (which moves past transaction
    /// markers; an open transaction holds it back until decided). Tells the core when the check
    /// began; a partition written to all the time is proven this way too.
    fn check_read_to_end<P: Processor>(&mut self, from: LookupPartition, core: &mut EngineCore<P>) -> bool {
        let topic = &self.topics[from.role];
        let (began, low, target) = match self.targets.get(&from) {
            Some(target) => *target,
            None => {
                let began = chrono::Utc::now().timestamp_millis();
                let Ok((low, high)) =
                    self.consumer.fetch_watermarks(topic, from.partition, Duration::from_secs(10))
                else {
                    return false;
                };
                self.targets.insert(from, (began, low, high));
                (began, low, high)
            }
        };
        // Nothing to read (never written, or all of it past retention): the position may never
        // be set.
        let read = target <= low
            || self.consumer.position().ok().is_some_and(|positions| {
                matches!(
                    positions.find_partition(topic, from.partition).map(|element| element.offset()),
                    Some(Offset::Offset(position)) if position >= target
                )
            });
        if read {
            self.targets.remove(&from);
            core.lookups_mut().read_to_end(from, began);
        }
        read
    }
}
