//! `make bench`, journeys (issue 17): the service draining a preloaded input on which most
//! customers enter a journey, against the pass-through baseline on the same input; under a fixed
//! load, the latency from a goal event to the record of the exit it causes and how late timers
//! fire; its memory with the drain's customers in a journey. Both journeys are published first,
//! with the production lookup grace: events appended before the grace passed would not see them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnistream_model::records::JourneyAction;
use omnistream_model::services::JOURNEYS;
use omnistream_model::topics::{CATALOG_EVENTS_TOPIC, JOURNEY_DEFINITIONS_TOPIC};
use omnistream_model::{EventType, decode_event, decode_record};
use omnistream_runtime::CAUSE_HEADER;
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::{
    RuntimeFlags, ServiceProcess, client_config, create_test_topics, produce_all, temp_file, unique_topic,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{
    Args, Row, baseline_drain, binary, committed_sum, free_port, metric, mib, row, simulated, time_drain,
    wait_ready, watermark_sum,
};

/// The drain's journey: a page view enters (again a day after the last entry ended); an offer on
/// the best of three channels, then a day's wait for an open: every entered customer is still in
/// it when the drain ends. An order is the goal; a click on the offer exits.
const DRAIN_JOURNEY: &str = include_str!("../../../bench/journeys/drain.toml");

/// The load's journey: a page view enters (again a second after the last entry ended); an email,
/// two seconds' wait (a timer per entry), a second send. An order is the goal.
const LOAD_JOURNEY: &str = r#"
id = "bench-load"
version = 1
[entry]
event = "page_viewed"
reentry = { after = "1s" }
[[goals]]
event = "order_placed"
[[steps]]
id = "offer"
send = { channel = "email", template = "bench-offer", when_suppressed = "skip" }
[[steps]]
id = "pause"
wait = { for = "2s" }
[[steps]]
id = "second"
send = { best_of = ["sms", "whatsapp", "push"], template = "bench-second", when_suppressed = "skip" }
"#;

/// The runtime's default lookup grace (and a second): how long after publishing events see it.
const DEFINITIONS_VISIBLE_AFTER: Duration = Duration::from_secs(16);

/// One journeys instance's topics and command line.
struct Journeys {
    input: String,
    group: String,
    actions: String,
    states: String,
    admin_port: u16,
    args: Vec<String>,
}

impl Journeys {
    /// Creates its topics and publishes `journey` to its definitions topic.
    async fn create(args: &Args, label: &str, journey: &str) -> anyhow::Result<Self> {
        let topic = |name: &str| unique_topic(&format!("bench-journeys-{label}-{name}"));
        let (input, definitions, catalog) = (topic("in"), topic("definitions"), topic("catalog"));
        let (actions, states, dlq, changelog, group) =
            (topic("actions"), topic("states"), topic("dlq"), topic("state"), topic("group"));
        create_test_topics(&[
            TopicRequest::events(&input, args.partitions, 1),
            TopicRequest::for_spec(&JOURNEY_DEFINITIONS_TOPIC, &definitions, 1, 1),
            TopicRequest::for_spec(&CATALOG_EVENTS_TOPIC, &catalog, 1, 1),
            TopicRequest::plain(&actions, args.partitions, 1),
            TopicRequest::compacted(&states, args.partitions, 1),
            TopicRequest::plain(&dlq, args.partitions, 1),
            TopicRequest::compacted(&changelog, args.partitions, 1),
        ])
        .await;
        let file = temp_file("bench-journey", "toml", journey);
        let published = std::process::Command::new(binary("omni")?)
            .args(["journeys", "publish", "--topic", &definitions])
            .arg(&file)
            .output()?;
        std::fs::remove_file(&file).ok();
        anyhow::ensure!(published.status.success(), "omni journeys publish: {published:?}");
        let admin_port = free_port();
        let admin_addr = format!("127.0.0.1:{admin_port}");
        let flags = RuntimeFlags {
            input: &input,
            dlq: &dlq,
            changelog: &changelog,
            group: &group,
            instance: "bench",
            admin_addr: &admin_addr,
            session_timeout_ms: None,
        };
        let mut command = flags.args();
        for (flag, value) in [
            ("--definitions-topic", &definitions),
            ("--catalog-topic", &catalog),
            ("--actions-topic", &actions),
            ("--journey-states-topic", &states),
        ] {
            command.extend([flag.to_owned(), value.clone()]);
        }
        Ok(Self { input, group, actions, states, admin_port, args: command })
    }

    fn spawn(&self, label: &str) -> anyhow::Result<ServiceProcess> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Ok(ServiceProcess::spawn(&binary(JOURNEYS.name)?, label, &args, &[("RUST_LOG", "warn")]))
    }
}

pub async fn journeys_rows(args: &Args, watermarks: &BaseConsumer) -> anyhow::Result<Vec<Row>> {
    let drain_topics = Journeys::create(args, "drain", DRAIN_JOURNEY).await?;
    std::thread::sleep(DEFINITIONS_VISIBLE_AFTER);
    eprintln!("bench: preloading {} events for journeys", args.events);
    produce_all(&drain_topics.input, simulated(args.events, args.customers, 23, 1)).await;
    let input_end = watermark_sum(watermarks, &drain_topics.input, args.partitions);

    let before = baseline_drain(args, &drain_topics.input, input_end, watermarks).await?;
    let mut process = drain_topics.spawn("bench-drain-journeys")?;
    let drain = time_drain(
        &mut process,
        || committed_sum(&drain_topics.group, &drain_topics.input, args.partitions),
        input_end,
        Duration::from_secs(900),
    )?;
    let customers = metric(drain_topics.admin_port, "omnistream_customers").unwrap_or(0.0);
    let entered =
        metric(drain_topics.admin_port, "omnistream_domain_events_total{event=\"journey_entered\"}")
            .unwrap_or(0.0);
    let status = process.terminate(Duration::from_secs(30));
    anyhow::ensure!(status.success(), "journeys exited with {status}");
    eprintln!("bench: journeys {:.0} events/s, {entered} entries", drain.events_per_second);
    let after = baseline_drain(args, &drain_topics.input, input_end, watermarks).await?;
    let ratio = drain.events_per_second / ((before.events_per_second + after.events_per_second) / 2.0);

    eprintln!("bench: offering {} events/s for {} s to journeys", args.rate, args.load_seconds);
    let load_topics = Journeys::create(args, "load", LOAD_JOURNEY).await?;
    let _service = load_topics.spawn("bench-load-journeys")?;
    wait_ready(load_topics.admin_port, Duration::from_secs(60))?;
    std::thread::sleep(DEFINITIONS_VISIBLE_AFTER);
    let load = offered_journey_load(args, &load_topics)?;

    let per_100k = mib(drain.peak_rss) * 100_000.0 / customers.max(1.0);
    Ok(vec![
        row(
            "journeys (a page view enters; an offer, a day's wait for an open), events/s",
            format!("{:.0} ({:.1} s, {entered:.0} entries)", drain.events_per_second, drain.seconds),
            "",
            None,
        ),
        row(
            &format!(
                "journeys / baseline on its input (mean of {:.0} before, {:.0} after)",
                before.events_per_second, after.events_per_second
            ),
            format!("{ratio:.2}"),
            ">= 0.70",
            Some(ratio >= 0.7),
        ),
        row(
            &format!("journeys, goal event to exit record p50 / p99 at {}/s", args.rate),
            format!("{:.1} / {:.1} ms ({} exits)", load.exit.p50, load.exit.p99, load.exit.count),
            "p99 <= 100 ms",
            Some(load.exit.count > 0 && load.exit.p99 <= 100.0),
        ),
        row(
            &format!("journeys, timer lateness (due to decision visible) p50 / p99 at {}/s", args.rate),
            format!(
                "{:.0} / {:.0} ms ({} timers)",
                load.lateness.p50, load.lateness.p99, load.lateness.count
            ),
            "p99 <= 1000 ms",
            Some(load.lateness.count > 0 && load.lateness.p99 <= 1_000.0),
        ),
        row(
            &format!("journeys, peak RSS of the drain ({customers:.0} customers, {entered:.0} entries)"),
            format!("{:.0} MiB, {per_100k:.0} MiB per 100,000 customers", mib(drain.peak_rss)),
            "",
            None,
        ),
    ])
}

/// Percentiles of one measure, milliseconds.
struct Spread {
    count: usize,
    p50: f64,
    p99: f64,
}

fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    Spread { count: values.len(), p50: at(0.5), p99: at(0.99) }
}

struct JourneyLoad {
    exit: Spread,
    lateness: Spread,
}

/// How long the reader goes on after the last send: the last entries' timers (2 s) and commits.
const READ_ON_AFTER_LOAD: Duration = Duration::from_secs(10);

/// Offers `args.rate` events/s for `args.load_seconds` (after a warm-up) and measures, from what
/// a read_committed consumer sees: for each `order_placed` that ended an entry, the time from its
/// send to the journeys record it caused (its `cause.event_id` header); for each decision of the
/// step after the 2 s wait, the time from its due time (`decided_at`) to its record.
fn offered_journey_load(args: &Args, journeys: &Journeys) -> anyhow::Result<JourneyLoad> {
    let events = simulated(args.rate * args.load_seconds as usize, args.customers, 99, 0);
    let warm_up = (args.rate * crate::WARM_UP_SECONDS).min(events.len() / 2);
    let orders_sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let reader: BaseConsumer = client_config()
        .set("group.id", unique_topic("bench-journeys-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in [&journeys.states, &journeys.actions] {
        for partition in 0..args.partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    reader.assign(&assignment)?;
    let done = Arc::new(Mutex::new(None::<Instant>));
    let (reader_sent, reader_done, states, actions) =
        (orders_sent.clone(), done.clone(), journeys.states.clone(), journeys.actions.clone());
    let reading = std::thread::spawn(move || {
        let (mut exits, mut lateness) = (Vec::new(), Vec::new());
        loop {
            if reader_done.lock().expect("lock").is_some_and(|at: Instant| at.elapsed() > READ_ON_AFTER_LOAD)
            {
                return (exits, lateness);
            }
            let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) else { continue };
            let (seen, seen_wall) = (Instant::now(), chrono::Utc::now().timestamp_millis());
            if message.topic() == states {
                let cause = message
                    .headers()
                    .and_then(|headers| headers.iter().find(|h| h.key == CAUSE_HEADER).and_then(|h| h.value));
                let Some(cause) = cause else { continue };
                if let Some(sent) =
                    reader_sent.lock().expect("lock").remove(String::from_utf8_lossy(cause).as_ref())
                {
                    exits.push(seen.duration_since(sent).as_secs_f64() * 1000.0);
                }
            } else if message.topic() == actions
                && let Some(Ok(action)) = message.payload().map(decode_record::<JourneyAction>)
                && action.step == "second"
            {
                lateness.push((seen_wall - action.decided_at.timestamp_millis()) as f64);
            }
        }
    });

    let producer: ThreadedProducer<DefaultProducerContext> = client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "1")
        .create()?;
    let per_tick = (args.rate / 100).max(1);
    let started = Instant::now();
    for (index, chunk) in events.chunks(per_tick).enumerate() {
        let due = started + Duration::from_millis(10 * index as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let measured = index * per_tick >= warm_up;
        for (key, bytes) in chunk {
            let event = decode_event(bytes).expect("simulated events decode");
            if measured && event.event_type() == EventType::OrderPlaced {
                orders_sent.lock().expect("lock").insert(event.event_id, Instant::now());
            }
            producer
                .send(BaseRecord::to(&journeys.input).key(key.as_str()).payload(bytes.as_slice()))
                .map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    *done.lock().expect("lock") = Some(Instant::now());
    let (exits, lateness) = reading.join().expect("reader thread");
    Ok(JourneyLoad { exit: spread(exits), lateness: spread(lateness) })
}
