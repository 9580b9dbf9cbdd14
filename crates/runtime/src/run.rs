//! The processing loop on its own thread (librdkafka's transactional calls block), and the async
//! shell around it: admin server, signals, exit code.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus_client::registry::Registry;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{RuntimeArgs, RuntimeConfig, ServiceInfo};
use crate::context::EngineContext;
use crate::driver::Driver;
use crate::engine::{CoreSettings, EngineCore, Input, InputRecord, Now};
use crate::logging::{self, LogFormat};
use crate::lookup_reader::LookupReader;
use crate::metrics::Metrics;
use crate::processor::Processor;
use crate::record_limits::RecordLimits;
use crate::server::{self, Health};
use crate::trace::TraceContext;
use crate::{RuntimeError, create_transactional_producer};

/// Runs a service until SIGTERM/SIGINT (exit 0 after committing and leaving the group) or a fatal
/// error (exit 1, for the orchestrator to restart it).
pub fn run_service<P: Processor>(service: ServiceInfo, args: RuntimeArgs, processor: P) -> ExitCode {
    logging::init(LogFormat::Json);
    let _telemetry = match crate::trace::init(service.name) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            error!(%error, "cannot export spans (OTEL_EXPORTER_OTLP_ENDPOINT)");
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = service.check_outputs(P::OUTPUTS) {
        error!(%message, "the processor's outputs and the service's disagree");
        return ExitCode::FAILURE;
    }
    if let Some(role) = P::FEEDBACK.filter(|role| !P::OUTPUTS.contains(role)) {
        error!(role, "the processor reads back an output it does not write");
        return ExitCode::FAILURE;
    }
    let config = Arc::new(RuntimeConfig::resolve(args, service, P::HANDS_OFF_STATE, P::FEEDBACK));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(config, processor));
    server::mark_stopped();
    match result {
        Ok(()) => {
            info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "stopping on error");
            ExitCode::FAILURE
        }
    }
}

async fn serve<P: Processor>(config: Arc<RuntimeConfig>, processor: P) -> Result<(), RuntimeError> {
    info!(
        service = config.service.name,
        version = config.service.version,
        group_id = %config.group_id,
        transactional_id = %config.transactional_id(),
        input = %config.input_topic,
        handoff = ?config.handoff_topic,
        feedback = ?config.feedback_topic,
        changelog = %config.changelog_topic,
        "starting"
    );
    if config.erasure.key.is_none() {
        warn!("no ERASURE_HMAC_KEY: erasure markers use the built-in key");
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry, config.service.name, config.service.version));
    let health = Arc::new(Health::new("joining the group or restoring state"));
    let shutdown = CancellationToken::new();

    // Bound before anything reaches Kafka: a port taken is named at once, not behind whatever
    // the start meets first (a missing topic).
    let listener = server::bind(config.admin_addr).await.map_err(RuntimeError::Admin)?;
    // The admin server stops only after the processing loop, which commits and leaves the group
    // on shutdown; an admin server that cannot serve stops the loop.
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn({
        let (registry, health, stop, shutdown) =
            (Arc::new(registry), health.clone(), admin_stop.clone(), shutdown.clone());
        async move {
            let served = server::serve(listener, registry, health, stop).await;
            if served.is_err() {
                shutdown.cancel();
            }
            served
        }
    });
    tokio::spawn(server::cancel_on_signal(shutdown.clone(), config.shutdown_grace));
    tokio::spawn(server::exit_when_stalled(health.clone(), shutdown.clone()));

    let loop_config = config.clone();
    let loop_shutdown = shutdown.clone();
    let loop_health = health.clone();
    let processed = tokio::task::spawn_blocking(move || {
        processing_loop(loop_config, processor, metrics, loop_health, loop_shutdown)
    })
    .await
    .unwrap_or_else(|e| Err(RuntimeError::Panicked("processing thread", e.to_string())));
    shutdown.cancel();
    admin_stop.cancel();
    let served = match admin.await {
        Ok(served) => served.map_err(RuntimeError::Admin),
        Err(e) => Err(RuntimeError::Panicked("admin server", e.to_string())),
    };
    processed.and(served)
}

type EngineConsumer<P> = BaseConsumer<EngineContext<P>>;

fn create_consumer<P: Processor>(
    config: &RuntimeConfig,
    context: EngineContext<P>,
) -> Result<EngineConsumer<P>, RuntimeError> {
    let mut client = config.kafka.client_config()?;
    // A handoff or feedback topic is co-partitioned with the input: partition p of each must go
    // to the same member, which the range assignor does (as Kafka Streams' own assignor does for
    // a task's topics); cooperative-sticky balances each topic on its own.
    let co_partitioned = config.handoff_topic.is_some() || config.feedback_topic.is_some();
    let assignment = if co_partitioned { "range" } else { "cooperative-sticky" };
    client
        .set("group.id", &config.group_id)
        .set("partition.assignment.strategy", assignment)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        // The end of a partition tells the engine its clock may follow the wall clock (SPEC 4).
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MiB by default; a quarter keeps the pipeline full here
        // and leaves the memory to state.
        .set("queued.max.messages.kbytes", "16384")
        // A full prefetch queue stops fetching for this long (default 1 s): a backlog drained
        // faster than that left the loop without records (a 1,000,000-event drain: 9.4 s → 9.1 s,
        // median of 3 alternating runs).
        .set("fetch.queue.backoff.ms", "20")
        // A reset runs between two polls: a new producer (`init_transactions`, tried for up to 4
        // minutes) and a restore. librdkafka's 300 s would let the group evict a member still
        // resetting; a loop stuck for longer than 2 minutes exits by itself anyway (the stall
        // watchdog), so the group needs no shorter limit.
        .set("max.poll.interval.ms", "600000");
    let consumer: BaseConsumer<EngineContext<P>> = client.create_with_context(context)?;
    Ok(consumer)
}

fn processing_loop<P: Processor>(
    config: Arc<RuntimeConfig>,
    processor: P,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    health.tick();
    // Registered before anything is written: a schema the registry refuses stops the start.
    let writers = config.schema_registry.writers(&config.written_records())?;
    let schemas = Arc::new(config.schema_registry.registry.learner()?);
    let producer = create_transactional_producer(&config, &health)?;
    let mut core = EngineCore::new(
        processor,
        CoreSettings::new(&config, &writers),
        Box::new(RecordLimits::new(&config)?),
        metrics.clone(),
    );
    let lookups = LookupReader::start(&config, &mut core, &health, schemas.clone())?;
    let driver = Arc::new(Mutex::new(Driver::new(
        core,
        config.clone(),
        producer,
        metrics.clone(),
        health.clone(),
        lookups,
        schemas,
    )));
    let context = EngineContext { driver: driver.clone(), metrics, input_topic: config.input_topic.clone() };
    let consumer = Arc::new(create_consumer(&config, context)?);
    let side_inputs: Vec<(Input, &str)> =
        [(Input::Handoff, &config.handoff_topic), (Input::Feedback, &config.feedback_topic)]
            .into_iter()
            .filter_map(|(input, topic)| topic.as_deref().map(|topic| (input, topic)))
            .collect();
    // A record to a topic that does not exist waits in the producer until its transaction times
    // out, and the transaction is retried forever: a missing topic stops the start instead.
    for topic in config.written_topics() {
        partition_count(&consumer, topic)?;
    }
    let mut topics = vec![config.input_topic.as_str()];
    for (_, topic) in &side_inputs {
        check_co_partitioned(&consumer, &config.input_topic, topic)?;
        topics.push(topic);
    }
    consumer.subscribe(&topics)?;
    let mut side_queues: Vec<SideQueues<P>> = side_inputs
        .iter()
        .map(|(input, topic)| SideQueues::new(*input, topic, config.trace_context))
        .collect();
    let mut clock = LoopClock::new();
    let mut last_timers = clock.read().instant;
    let mut last_tick = clock.read().instant;
    let mut side_busy = false;
    loop {
        let now = clock.read();
        // By time, not turns: a turn takes up to 64 records of every queue.
        if now.instant.duration_since(last_tick) >= LIVENESS_TICK {
            last_tick = now.instant;
            health.tick();
        }
        if shutdown.is_cancelled() {
            return leave(&consumer, &driver);
        }
        {
            let mut driver = driver.lock().expect("driver lock");
            for queues in &mut side_queues {
                queues.follow(&consumer, &driver);
            }
            driver.recover(&consumer)?;
            health.set_ready(driver.is_ready());
        }
        // Polled without the lock: the rebalance callbacks inside take it. It waits for a record
        // only while the side inputs have none either: their records come in turns too, and a
        // feedback topic can be as busy as the events.
        let wait = if side_busy { Duration::ZERO } else { Duration::from_millis(10) };
        let mut polled = consumer.poll(wait);
        let mut turn = 0;
        let mut driver = loop {
            let mut driver = driver.lock().expect("driver lock");
            turn += 1;
            let delivered = match polled {
                Some(Ok(message)) => {
                    // Only a service with a side input reads a second topic here (reading the
                    // topic name costs a UTF-8 check per record): before its queues are split.
                    let input = if side_inputs.is_empty() || message.topic() == config.input_topic {
                        Input::Events
                    } else {
                        side_inputs
                            .iter()
                            .find(|(_, topic)| message.topic() == *topic)
                            .map_or(Input::Events, |(input, _)| *input)
                    };
                    deliver(&consumer, &mut driver, &message, input, config.trace_context, now);
                    true
                }
                // Only the events' partitions are on this queue (the side inputs' have their own).
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    driver.on_end_of_partition(partition);
                    true
                }
                None => false,
                Some(Err(error)) => {
                    warn!(%error, "consumer error");
                    false
                }
            };
            if !delivered || !more_this_turn(turn, &driver, now) {
                break driver;
            }
            drop(driver);
            polled = consumer.poll(Duration::ZERO);
        };
        side_busy = false;
        for queues in &side_queues {
            side_busy |= queues.poll(&consumer, &mut driver, now);
        }
        driver.poll_lookups();
        driver.resume_learned(&consumer);
        if now.instant.duration_since(last_timers) >= config.timer_interval {
            last_timers = now.instant;
            driver.on_tick(&consumer, now);
        }
        if driver.commit_due(now.instant) {
            driver.commit(&consumer);
        }
    }
}

/// A side input's partitions (the handoff or the feedback topic), each on a queue of its own:
/// librdkafka's end-of-partition event names no topic, and only the events' end may let a
/// partition clock follow the wall clock.
struct SideQueues<P: Processor> {
    input: Input,
    topic: String,
    queues: std::collections::BTreeMap<i32, PartitionQueue<EngineContext<P>>>,
    generation: u64,
    /// `TRACE_CONTEXT`: read the records' trace headers.
    trace_context: bool,
}

impl<P: Processor> SideQueues<P> {
    fn new(input: Input, topic: &str, trace_context: bool) -> Self {
        Self {
            input,
            topic: topic.to_owned(),
            trace_context,
            queues: std::collections::BTreeMap::new(),
            generation: 0,
        }
    }

    /// After a rebalance: a queue per owned partition, split anew for every one (rust-rdkafka
    /// documents that an assign deactivates earlier splits; librdkafka keeps a disabled forward,
    /// so splitting again is at worst redundant). The newly assigned are still paused (resumed
    /// once restored), so nothing of theirs went to the main queue; a record that did would still
    /// be told apart by its topic there.
    fn follow(&mut self, consumer: &Arc<EngineConsumer<P>>, driver: &Driver<P>) {
        if driver.assignment_generation() == self.generation {
            return;
        }
        self.generation = driver.assignment_generation();
        self.queues.clear();
        for partition in driver.owned_partitions() {
            if let Some(queue) = consumer.split_partition_queue(&self.topic, partition) {
                self.queues.insert(partition, queue);
            }
        }
    }

    /// A turn's records of each partition that has some; whether any had one.
    fn poll(&self, consumer: &EngineConsumer<P>, driver: &mut Driver<P>, now: Now) -> bool {
        let mut delivered = false;
        for queue in self.queues.values() {
            let mut turn = 0;
            while more_this_turn(turn, driver, now)
                && let Some(polled) = queue.poll(Duration::ZERO)
            {
                turn += 1;
                match polled {
                    Ok(message) => {
                        deliver(consumer, driver, &message, self.input, self.trace_context, now);
                        delivered = true;
                    }
                    Err(KafkaError::PartitionEOF(_)) => break,
                    Err(error) => {
                        warn!(%error, topic = %self.topic, "side input consumer error");
                        break;
                    }
                }
            }
        }
        delivered
    }
}

/// Hands one consumed record of `input` to the driver (with its trace context when `TRACE_CONTEXT`
/// asks to read the headers).
fn deliver<P: Processor>(
    consumer: &EngineConsumer<P>,
    driver: &mut Driver<P>,
    message: &BorrowedMessage<'_>,
    input: Input,
    trace_context: bool,
    now: Now,
) {
    let trace = trace_context.then(|| TraceContext::from_record(message.headers())).flatten();
    let record = InputRecord {
        input,
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload(),
        timestamp: message.timestamp().to_millis(),
        trace: trace.as_ref(),
    };
    driver.on_record(consumer, &record, now);
}

/// Records of one queue a turn of the loop takes at most. A turn also polls every side input's
/// partition queue (each poll a lock and clock reads in librdkafka, whether or not it has a
/// record) and checks restores, lookups, timers and the commit: taken per record, with six
/// feedback partitions, that was most of identity-resolver's customer stage's polling.
const RECORDS_PER_TURN: usize = 64;

/// How often the processing loop tells `/healthz` it is alive.
const LIVENESS_TICK: Duration = Duration::from_millis(100);

/// Whether a turn takes another record of the queue it polls: not past `RECORDS_PER_TURN`, nor
/// once the driver must recover or restore, or the transaction is due (`COMMIT_MAX_RECORDS` stays
/// exact; the interval is judged by the clock read at the turn's start).
fn more_this_turn<P: Processor>(turn: usize, driver: &Driver<P>, now: Now) -> bool {
    turn < RECORDS_PER_TURN && driver.is_ready() && !driver.commit_due(now.instant)
}

/// A handoff record (keyed by the winner) and a feedback record are partitioned like the events
/// (murmur2 of the key): they reach their customer's store only if the topics have the same
/// partition count.
fn check_co_partitioned<P: Processor>(
    consumer: &EngineConsumer<P>,
    input: &str,
    side: &str,
) -> Result<(), RuntimeError> {
    let (events, sides) = (partition_count(consumer, input)?, partition_count(consumer, side)?);
    if events != sides {
        return Err(RuntimeError::NotCoPartitioned {
            side: side.to_owned(),
            sides,
            input: input.to_owned(),
            events,
        });
    }
    Ok(())
}

/// The partitions of `topic`; a topic that does not exist is an error.
fn partition_count<P: Processor>(consumer: &EngineConsumer<P>, topic: &str) -> Result<usize, RuntimeError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(RuntimeError::MissingTopic(topic.to_owned()));
    }
    Ok(partitions)
}

/// One clock read per loop iteration: wall time is derived from the monotonic clock and
/// re-anchored every second, so it follows wall-clock adjustments.
struct LoopClock {
    anchor_instant: Instant,
    anchor_wall: chrono::DateTime<Utc>,
}

impl LoopClock {
    fn new() -> Self {
        Self { anchor_instant: Instant::now(), anchor_wall: Utc::now() }
    }

    fn read(&mut self) -> Now {
        let instant = Instant::now();
        let since = instant.duration_since(self.anchor_instant);
        if since >= Duration::from_secs(1) {
            *self = Self::new();
            return Now { instant: self.anchor_instant, wall: self.anchor_wall };
        }
        let wall = self.anchor_wall + chrono::Duration::from_std(since).unwrap_or_default();
        Now { instant, wall }
    }
}

/// Graceful stop: commit the open transaction, leave the group (the revoke callback runs inside
/// the polls below), close.
fn leave<P: Processor>(consumer: &EngineConsumer<P>, driver: &Mutex<Driver<P>>) -> Result<(), RuntimeError> {
    driver.lock().expect("driver lock").commit_before_leaving(consumer)?;
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !consumer.assignment().map(|a| a.count() == 0).unwrap_or(true) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    driver.lock().expect("driver lock").finish(consumer)
}
