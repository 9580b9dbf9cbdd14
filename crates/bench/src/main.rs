//! `make bench`: measures the exactly-once runtime against a plain pass-through baseline in the
//! same run (the machine is noisy, so ratios are what count), then its latency under a fixed
//! load, its memory, and the time to restore its state. Prints a markdown table and keeps it under
//! `bench/results/`.

mod api_scale;
mod compression;
mod drain_variants;
mod http;
mod identity;
mod journeys;
mod kafka_streams;
mod trace_context;
mod wire_format;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use omnistream_model::services::{OutputSpec, stream_processors};
use omnistream_runtime::CAUSE_HEADER;
use omnistream_runtime::admin::TopicRequest;
use omnistream_sim::{SimConfig, Simulator};

use crate::drain_variants::spread;
use omnistream_testkit::{
    RuntimeFlags, ServiceProcess, bootstrap_servers, client_config, create_test_topics,
    delete_topics_with_prefix, free_port, http_get, produce_all, unique_topic,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Parser)]
#[command(name = "omnistream-bench", about = "Throughput, latency, memory and restore benchmarks")]
struct Args {
    /// Events preloaded for the drain benchmarks.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Distinct customers among them: in the services' drain input each has a journey before
    /// any has a second, so every one is reached once the events outnumber their first journeys.
    #[arg(long, default_value_t = 100_000)]
    customers: u32,
    /// Partitions of every benchmark topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Offered load of the latency benchmark, events per second.
    #[arg(long, default_value_t = 5_000)]
    rate: usize,
    /// Duration of the latency benchmark, seconds.
    #[arg(long, default_value_t = 60)]
    load_seconds: u64,
    /// Seconds of each offered load in the search for the highest rate whose p99 stays within
    /// 250 ms (doubling from twice `--rate`, then the midpoint); 0 leaves the search out.
    #[arg(long, default_value_t = 10)]
    sweep_seconds: u64,
    /// Benchmark only these services (repeatable; `wire-format` is the Confluent format's cost,
    /// `trace-context` the cost of trace headers and of exporting spans, `kafka-streams` the
    /// event-counter against a Kafka Streams application of the same fold,
    /// `kafka-streams-profile-updater`, `kafka-streams-suppression`,
    /// `kafka-streams-channel-affinity` and `kafka-streams-loyalty-points` those services against
    /// their own, `compression` the
    /// codecs of the batches profile-updater writes);
    /// default: every one. The table is kept only for a full run.
    #[arg(long = "service")]
    services: Vec<String>,
    /// Customers of the customer-api's scale benchmark (`customer-api-scale`).
    #[arg(long, default_value_t = 1_000_000)]
    api_customers: u32,
    /// Duration of each HTTP load (gateway, customer-api), seconds.
    #[arg(long, default_value_t = 20)]
    http_seconds: u64,
    /// A directory holding an earlier build's service binaries (e.g. the previous release's
    /// `target/release`): `trace-context` then drains with its profile-updater too, the baseline
    /// for what this build costs on records without a trace context, and every service's restore
    /// is timed with the earlier binary too, alternating with this build's.
    #[arg(long)]
    baseline_build: Option<PathBuf>,
    /// Drains per service, each between two baselines: the ratio rows are the median of the
    /// rounds' ratios with their range (odd counts: an even one reports the upper middle).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Where to keep the results table.
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
}

/// One line of the results table.
struct Row {
    metric: String,
    value: String,
    target: String,
    verdict: &'static str,
}

fn row(metric: &str, value: String, target: &str, met: Option<bool>) -> Row {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "missed",
        None => "",
    };
    Row { metric: metric.to_owned(), value, target: target.to_owned(), verdict }
}

fn binary(name: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("binary directory")?.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not built; run `cargo build --release --workspace --bins`",
        path.display()
    );
    Ok(path.to_string_lossy().into_owned())
}

/// `events` simulated events over `customers`, each journey's customer picked at random.
fn simulated(events: usize, customers: u32, seed: u64, step_ms: i64) -> Vec<(String, Vec<u8>)> {
    keyed(simulator(events, customers, seed, step_ms).take(events))
}

/// The services' drain input: as [`simulated`], but every customer met in turn before any again,
/// so that the state holds `customers` once the events outnumber their first journeys.
fn preloaded(events: usize, customers: u32, seed: u64) -> Vec<(String, Vec<u8>)> {
    keyed(simulator(events, customers, seed, 1).covering_every_customer().take(events))
}

fn simulator(events: usize, customers: u32, seed: u64, step_ms: i64) -> Simulator {
    Simulator::new(SimConfig {
        customers,
        seed,
        start: Utc::now() - chrono::Duration::milliseconds(step_ms * events as i64),
        step: chrono::Duration::milliseconds(step_ms),
        duplicate_share: 0.0,
        malformed_share: 0.0,
    })
}

fn keyed(records: impl Iterator<Item = omnistream_sim::SimRecord>) -> Vec<(String, Vec<u8>)> {
    records
        .map(|record| (record.customer_id().to_owned(), record.to_avro_bytes().expect("encodes")))
        .collect()
}

fn watermark_sum(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).map(|w| w.1).unwrap_or(0))
        .sum()
}

/// Sum of the group's committed offsets on `topic`: how far an exactly-once group got.
fn committed_sum(group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = client_config().set("group.id", group).create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed offsets");
    committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o > 0).sum()
}

struct Drain {
    events_per_second: f64,
    seconds: f64,
    peak_rss: u64,
}

impl Drain {
    /// The drain timed by its output's append times, from the first output to the last: polling
    /// the watermarks or committed offsets of a broker saturated by the drain saw the first
    /// progress up to a second late, which made a 1.2 s drain look like 0.3 s (2026-12-05) and the
    /// event-counter 1.9 times the baseline (2026-12-06). Every per-event drain is timed this way
    /// (journeys', whose output is per decision, still by committed offsets).
    fn timed_by_appends(mut self, output: &str, events: i64) -> anyhow::Result<Self> {
        self.seconds = append_span(output)
            .with_context(|| format!("{output} has no append times (create it with TopicRequest::events)"))?;
        self.events_per_second = events as f64 / self.seconds;
        Ok(self)
    }
}

/// Waits until `progress()` reaches `target`, timing from the first `progress() > 0`.
fn time_drain(
    service: &mut ServiceProcess,
    mut progress: impl FnMut() -> i64,
    target: i64,
    deadline: Duration,
) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let mut first_output: Option<Instant> = None;
    let mut peak_rss = 0;
    loop {
        anyhow::ensure!(
            started.elapsed() < deadline,
            "did not finish within {deadline:?}; see {}",
            service.log.display()
        );
        let done = progress();
        // A contender that stopped short will not finish: say so now rather than at the deadline.
        anyhow::ensure!(
            done >= target || service.is_running(),
            "it exited before the drain finished; see {}",
            service.log.display()
        );
        peak_rss = peak_rss.max(service.peak_rss_bytes().unwrap_or(0));
        if done > 0 && first_output.is_none() {
            first_output = Some(Instant::now());
        }
        if done >= target {
            let seconds = first_output.map(|t| t.elapsed()).unwrap_or_default().as_secs_f64().max(1e-3);
            return Ok(Drain { events_per_second: target as f64 / seconds, seconds, peak_rss });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A service binary under benchmark and the flags naming its output topics.
#[derive(Clone, Copy)]
struct BenchService {
    name: &'static str,
    /// The output with a record per event the service reads: the latency is measured on it.
    output_flag: &'static str,
    /// The service's other outputs, each on a topic of its own.
    other_outputs: &'static [OutputSpec],
    /// Whether it answers every event (docs/runtime.md, "Events of no concern"): then the
    /// latency load expects an output for each one, and a lost output shows.
    reads_every_event: bool,
    /// The events it reads, if its timed output keeps one record per customer per transaction
    /// (`COALESCE_OUTPUTS`): a record then answers the customer's events before its cause too.
    coalesced: Option<Reads>,
}

/// The reference service of `crates/reference`: the runtime's own cost.
const COUNTER: BenchService = BenchService {
    name: "event-counter",
    output_flag: "--output-topic",
    other_outputs: &[],
    reads_every_event: true,
    coalesced: None,
};

/// The registry's stream processors whose first output has a record per event they read, which is
/// how the bench times them; journeys writes per decision and has rows of its own (`journeys.rs`).
fn per_event_processors() -> impl Iterator<Item = &'static omnistream_model::services::ServiceSpec> {
    stream_processors().filter(|spec| spec.name != omnistream_model::services::JOURNEYS.name)
}

/// Every benchmarked service, in table order: the counter, then the per-event stream processors.
fn bench_services() -> Vec<BenchService> {
    let registered = per_event_processors().map(|spec| {
        let (first, rest) = spec.outputs.split_first().expect("a stream processor writes a topic");
        // Of the registry's, profile-updater alone reads every event (its `version` counts them).
        let reads_every_event = spec.name == omnistream_model::services::PROFILE_UPDATER.name;
        // Their first outputs are latest-per-key roles (loyalty's is the ledger: every entry).
        let coalesced: Option<Reads> = match spec.name {
            name if name == omnistream_model::services::PROFILE_UPDATER.name => Some(|_| true),
            name if name == omnistream_model::services::SUPPRESSION.name => {
                Some(omnistream_suppression::reads)
            }
            name if name == omnistream_model::services::CHANNEL_AFFINITY.name => {
                Some(omnistream_channel_affinity::reads)
            }
            _ => None,
        };
        BenchService {
            name: spec.name,
            output_flag: first.flag,
            other_outputs: rest,
            reads_every_event,
            coalesced,
        }
    });
    std::iter::once(COUNTER).chain(registered).collect()
}

struct BenchTopics {
    group: String,
    input: String,
    output: String,
    /// One per `other_outputs` of the service.
    other_outputs: Vec<String>,
    dlq: String,
    changelog: String,
}

async fn bench_topics(label: &str, input: &str, partitions: i32, service: BenchService) -> BenchTopics {
    let topics = BenchTopics {
        group: unique_topic(&format!("bench-{label}")),
        input: input.to_owned(),
        output: unique_topic(&format!("bench-{label}-out")),
        other_outputs: service
            .other_outputs
            .iter()
            .enumerate()
            .map(|(i, _)| unique_topic(&format!("bench-{label}-out{i}")))
            .collect(),
        dlq: unique_topic(&format!("bench-{label}-dlq")),
        changelog: unique_topic(&format!("bench-{label}-state")),
    };
    let mut requests = vec![
        // Append times, for timing drains.
        TopicRequest::events(&topics.output, partitions, 1),
        TopicRequest::plain(&topics.dlq, partitions, 1),
        TopicRequest::compacted(&topics.changelog, partitions, 1),
    ];
    requests.extend(topics.other_outputs.iter().map(|topic| TopicRequest::plain(topic, partitions, 1)));
    create_test_topics(&requests).await;
    topics
}

fn spawn_service(
    service: BenchService,
    topics: &BenchTopics,
    label: &str,
    admin_port: u16,
) -> anyhow::Result<ServiceProcess> {
    spawn_service_with(service, topics, label, admin_port, &[], &[], None)
}

/// [`spawn_service`] with `extra` flags.
fn spawn_service_with(
    service: BenchService,
    topics: &BenchTopics,
    label: &str,
    admin_port: u16,
    extra: &[String],
    env: &[(&str, &str)],
    binary_dir: Option<&std::path::Path>,
) -> anyhow::Result<ServiceProcess> {
    let admin = format!("127.0.0.1:{admin_port}");
    let flags = RuntimeFlags {
        input: &topics.input,
        dlq: &topics.dlq,
        changelog: &topics.changelog,
        group: &topics.group,
        instance: "bench",
        admin_addr: &admin,
        session_timeout_ms: None,
    };
    let mut args = flags.args();
    args.extend([service.output_flag.to_owned(), topics.output.clone()]);
    for (output, topic) in service.other_outputs.iter().zip(&topics.other_outputs) {
        args.extend([output.flag.to_owned(), topic.clone()]);
    }
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info,rdkafka=warn"));
    let binary = match binary_dir {
        Some(dir) => dir.join(service.name).to_string_lossy().into_owned(),
        None => binary(service.name)?,
    };
    Ok(ServiceProcess::spawn(&binary, label, &args, &env))
}

fn wait_ready(port: u16, deadline: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if http_get(port, "/readyz").is_some_and(|(status, _)| status == 200) {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("not ready within {deadline:?}")
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines().find(|line| line.starts_with(name)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// One restart of a drained service, until it is ready again.
struct Restore {
    /// Process start to `/readyz`: group join, offsets, changelog, seeks.
    to_ready: f64,
    /// The changelog read alone (`omnistream_restore_seconds`).
    read: f64,
    customers: f64,
    /// Resident set size in MiB [`SETTLE`] after it is ready, idle: the steady state of its
    /// customers (state, dedupe windows, librdkafka's buffers and the allocator's); NaN when
    /// `/proc` could not tell.
    settled_rss: f64,
    /// Its peak resident set size by then (the restore's), MiB.
    peak_rss: f64,
}

/// How long a restored service idles before its resident set size is read.
const SETTLE: Duration = Duration::from_secs(5);

/// Restarts `service` on its drained `topics` (the binary in `binary_dir`, else this build's)
/// and times its restore.
fn time_restore(
    service: BenchService,
    topics: &BenchTopics,
    label: &str,
    binary_dir: Option<&std::path::Path>,
) -> anyhow::Result<Restore> {
    let port = free_port();
    let restarted = spawn_service_with(service, topics, label, port, &[], &[], binary_dir)?;
    let to_ready = wait_ready(port, Duration::from_secs(300))?.as_secs_f64();
    std::thread::sleep(SETTLE);
    let restore = Restore {
        to_ready,
        read: metric(port, "omnistream_restore_seconds_sum").unwrap_or(f64::NAN),
        customers: metric(port, "omnistream_customers").unwrap_or(0.0),
        settled_rss: restarted.rss_bytes().map_or(f64::NAN, mib),
        peak_rss: restarted.peak_rss_bytes().map_or(f64::NAN, mib),
    };
    let status = restarted.terminate(Duration::from_secs(30));
    anyhow::ensure!(status.success(), "{label} exited with {status}");
    eprintln!(
        "bench: {label} restored {:.0} customers: ready in {:.2} s, changelog read in {:.2} s, RSS {:.0} MiB ({:.0} MiB peak)",
        restore.customers, restore.to_ready, restore.read, restore.settled_rss, restore.peak_rss
    );
    Ok(restore)
}

/// The restore rows: this build's times, and the baseline build's beside them when measured.
fn restore_rows(name: &str, customers: f64, restores: &[Restore], baseline: &[Restore]) -> Vec<Row> {
    let (ready, ready_min, ready_max) = spread(restores.iter().map(|r| r.to_ready).collect());
    let (read, read_min, read_max) = spread(restores.iter().map(|r| r.read).collect());
    let mut rows = vec![
        row(
            &format!(
                "{name}, restore {customers:.0} customers (restart to ready), median of {} (min–max)",
                restores.len()
            ),
            format!("{ready:.1} s ({ready_min:.1}–{ready_max:.1})"),
            "<= 10 s",
            Some(ready <= 10.0),
        ),
        row(
            &format!("{name}, changelog read of that restore, median (min–max)"),
            format!("{read:.2} s ({read_min:.2}–{read_max:.2})"),
            "",
            None,
        ),
    ];
    // The whole process's resident set scaled: an upper bound of the state's, meaningful near
    // 100,000 customers or more (librdkafka's and the runtime's share does not scale).
    let per_100k = |mib: f64| mib * 100_000.0 / customers.max(1.0);
    let (settled, settled_min, settled_max) =
        spread(restores.iter().map(|r| per_100k(r.settled_rss)).collect());
    rows.push(row(
        &format!(
            "{name}, RSS {} s after a restore, idle (steady state, the whole process), per 100,000 customers, median (min–max)",
            SETTLE.as_secs()
        ),
        format!("{settled:.0} MiB ({settled_min:.0}–{settled_max:.0})"),
        "<= 128 MiB",
        Some(settled <= 128.0),
    ));
    let (peak, peak_min, peak_max) = spread(restores.iter().map(|r| r.peak_rss).collect());
    rows.push(row(
        &format!("{name}, peak RSS of a restore, median (min–max)"),
        format!("{peak:.0} MiB ({peak_min:.0}–{peak_max:.0})"),
        "",
        None,
    ));
    if !baseline.is_empty() {
        let (old, old_min, old_max) = spread(baseline.iter().map(|r| r.to_ready).collect());
        let (ratio, ratio_min, ratio_max) =
            spread(restores.iter().zip(baseline).map(|(new, old)| new.to_ready / old.to_ready).collect());
        rows.push(row(
            &format!("{name}, the baseline build's restore (restart to ready), median (min–max)"),
            format!("{old:.1} s ({old_min:.1}–{old_max:.1})"),
            "",
            None,
        ));
        rows.push(row(
            &format!("{name}, restore time / the baseline build's (median of the rounds' ratios, min–max)"),
            format!("{ratio:.2} ({ratio_min:.2}–{ratio_max:.2})"),
            "",
            None,
        ));
    }
    rows
}

/// The pass-through baseline's drain of `input` (`input_end` records): a plain copy, no
/// transactions, no decoding, no state.
async fn baseline_drain(
    args: &Args,
    input: &str,
    input_end: i64,
    watermarks: &BaseConsumer,
) -> anyhow::Result<Drain> {
    let baseline_out = unique_topic("bench-pass-out");
    // Append time: its records' stamps say when the broker wrote them (below).
    create_test_topics(&[TopicRequest::events(&baseline_out, args.partitions, 1)]).await;
    let mut passthrough = ServiceProcess::spawn(
        &binary("passthrough")?,
        "bench-passthrough",
        &["--input-topic", input, "--output-topic", &baseline_out, "--group-id", &unique_topic("bench-pass")],
        &[],
    );
    let baseline = time_drain(
        &mut passthrough,
        || watermark_sum(watermarks, &baseline_out, args.partitions),
        input_end,
        Duration::from_secs(600),
    )?;
    let baseline = baseline.timed_by_appends(&baseline_out, input_end)?;
    eprintln!("bench: baseline {:.0} events/s", baseline.events_per_second);
    Ok(baseline)
}

/// The local broker's log directory (`deploy/local/kafka.sh`), if the bench talks to it.
fn local_log_dir() -> Option<PathBuf> {
    if bootstrap_servers() != "127.0.0.1:9092" {
        return None;
    }
    let home = match std::env::var_os("OMNISTREAM_KAFKA_HOME") {
        Some(home) => PathBuf::from(home),
        None => match std::env::var_os("OMNISTREAM_CACHE") {
            Some(cache) => PathBuf::from(cache).join("broker"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/omnistream/broker"),
        },
    };
    Some(home.join("data")).filter(|dir| dir.is_dir())
}

/// Bytes of `topic`'s log segments in the broker's log directory (every partition).
fn topic_log_bytes(log_dir: &std::path::Path, topic: &str) -> u64 {
    let prefix = format!("{topic}-");
    std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix).is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
        })
        .flat_map(|entry| std::fs::read_dir(entry.path()).into_iter().flatten().flatten())
        .filter(|segment| segment.path().extension().is_some_and(|ext| ext == "log"))
        .filter_map(|segment| segment.metadata().ok().map(|m| m.len()))
        .sum()
}

/// What a service wrote per input event: offsets (records and transaction markers) and, on the
/// local broker, bytes of log, over its outputs, changelog and dead letters.
fn written_per_event(
    topics: &BenchTopics,
    watermarks: &BaseConsumer,
    partitions: i32,
    input_end: i64,
) -> (f64, Option<f64>) {
    let written: Vec<&String> =
        [&topics.output, &topics.changelog, &topics.dlq].into_iter().chain(&topics.other_outputs).collect();
    let offsets: i64 = written.iter().map(|topic| watermark_sum(watermarks, topic, partitions)).sum();
    let bytes =
        local_log_dir().map(|dir| written.iter().map(|topic| topic_log_bytes(&dir, topic)).sum::<u64>());
    let per_event = |total: f64| total / input_end.max(1) as f64;
    (per_event(offsets as f64), bytes.map(|b| per_event(b as f64)))
}

/// Seconds from the first append time to the last of `topic`'s committed records (a topic created
/// with `TopicRequest::events`, so the broker stamps them), or None if they carry no append time.
fn append_span(topic: &str) -> Option<f64> {
    let (mut first, mut last, mut stamped) = (i64::MAX, i64::MIN, true);
    omnistream_testkit::visit_committed_to_end(topic, |message| match message.timestamp() {
        Timestamp::LogAppendTime(millis) => {
            first = first.min(millis);
            last = last.max(millis);
        }
        _ => stamped = false,
    });
    (stamped && last >= first).then(|| ((last - first) as f64 / 1000.0).max(1e-3))
}

/// Seconds of offered load before latency is measured.
const WARM_UP_SECONDS: usize = 3;

struct Latency {
    /// The rate the load generator kept, events/s (it may fall behind the one asked for).
    sent_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    delivered: usize,
    offered: usize,
    peak_rss: u64,
}

/// Offers `rate` events/s for `seconds` to a caught-up service and measures, per event, the time
/// from its send to its output becoming visible to a read_committed consumer (matched by the
/// output's `cause.event_id` header).
async fn fixed_load(
    args: &Args,
    bench_service: BenchService,
    rate: usize,
    seconds: u64,
) -> anyhow::Result<Latency> {
    let input = unique_topic("bench-load-in");
    create_test_topics(&[TopicRequest::events(&input, args.partitions, 1)]).await;
    let topics = bench_topics("load", &input, args.partitions, bench_service).await;
    let port = free_port();
    let service = spawn_service(bench_service, &topics, &format!("bench-load-{}", bench_service.name), port)?;
    wait_ready(port, Duration::from_secs(60))?;
    let events = simulated(rate * seconds as usize, args.customers, 99, 0);
    let answered = if bench_service.reads_every_event {
        Answered::Every
    } else {
        Answered::WhenCommitted { group: &topics.group }
    };
    let answering = Answering { answered, coalesced: bench_service.coalesced };
    let mut latency = offered_load(args, rate, seconds, &input, &topics.output, answering, events)?;
    latency.peak_rss = service.peak_rss_bytes().unwrap_or(0);
    let service_log = service.log.display().to_string();
    let status = service.terminate(Duration::from_secs(30));
    if !status.success() {
        eprintln!("bench: {} stopped with {status} after the load; see {}", bench_service.name, service_log);
    }
    Ok(latency)
}

/// p99 end to end the search for the highest rate keeps within.
const SWEEP_P99_MS: f64 = 250.0;

/// One load of the search for the highest rate: the rate offered and what came of it (an error
/// of the load itself, e.g. the generator's queue full, counts as missed).
struct SweepStep {
    rate: usize,
    outcome: Result<Latency, String>,
}

impl SweepStep {
    fn met(&self) -> bool {
        self.outcome.as_ref().is_ok_and(|latency| {
            latency.p99_ms <= SWEEP_P99_MS
                && latency.delivered == latency.offered
                && latency.sent_per_second >= 0.95 * self.rate as f64
        })
    }

    fn describe(&self) -> String {
        match &self.outcome {
            Ok(latency) => format!(
                "{}/s offered ({:.0}/s sent): p99 {:.1} ms, {} / {} seen",
                self.rate, latency.sent_per_second, latency.p99_ms, latency.delivered, latency.offered
            ),
            Err(error) => format!("{}/s offered: {error}", self.rate),
        }
    }
}

/// The highest offered rate whose p99 stays within [`SWEEP_P99_MS`] with every output seen and
/// the load generator keeping the rate: doubling from twice `--rate` until a load misses, then
/// the midpoint of the last two. Returns the highest load met and the first missed, if any.
async fn highest_rate(args: &Args, service: BenchService) -> (Option<SweepStep>, Option<SweepStep>) {
    let step = |rate: usize| async move {
        let outcome =
            fixed_load(args, service, rate, args.sweep_seconds).await.map_err(|error| format!("{error:#}"));
        let step = SweepStep { rate, outcome };
        eprintln!("bench: {}: {}", service.name, step.describe());
        step
    };
    let mut passed: Option<SweepStep> = None;
    let mut failed: Option<SweepStep> = None;
    let mut rate = args.rate * 2;
    while failed.is_none() && rate <= 640_000 {
        let load = step(rate).await;
        if load.met() {
            passed = Some(load);
            rate *= 2;
        } else {
            failed = Some(load);
        }
    }
    if let (Some(low), Some(high)) = (&passed, &failed) {
        let load = step((low.rate + high.rate) / 2).await;
        if load.met() {
            passed = Some(load);
        } else {
            failed = Some(load);
        }
    }
    (passed, failed)
}

/// Which offered events `output` answers.
#[derive(Clone, Copy)]
pub(crate) enum Answered<'a> {
    /// Every one (identity-resolver's resolved events).
    Every,
    /// Those the service reads (docs/runtime.md, "Events of no concern"): once `group` has
    /// committed the whole input, the committed output names them by its `cause.event_id`.
    WhenCommitted { group: &'a str },
}

/// Whether a service reads an event.
pub(crate) type Reads = fn(&omnistream_model::TouchpointEvent) -> bool;

/// Which offered events an output answers, and whether it keeps one record per customer per
/// transaction (`COALESCE_OUTPUTS`): then a record also answers its customer's events before its
/// cause that the service reads (`coalesced`), whose records it replaced.
pub(crate) struct Answering<'a> {
    pub(crate) answered: Answered<'a>,
    pub(crate) coalesced: Option<Reads>,
}

/// Per customer, their measured events not seen yet (id, sent at, read by a coalescing service),
/// in the order they were sent.
type Unseen = HashMap<String, VecDeque<(String, Instant, bool)>>;

/// Offers `events` at `args.rate`/s to `input` and measures, per event after the warm-up, the
/// time from its send to an `output` record caused by it (its `cause.event_id` header) becoming
/// visible to a read_committed consumer. On an output that keeps one record per customer per
/// transaction, caused by their last event in it (`COALESCE_OUTPUTS`), a record also answers the
/// customer's events before its cause that the service reads (`coalesced`): their records were
/// replaced by it. Erasures are left out (a tombstone names no event).
fn offered_load(
    args: &Args,
    rate: usize,
    seconds: u64,
    input: &str,
    output: &str,
    answering: Answering<'_>,
    events: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<Latency> {
    let Answering { answered, coalesced } = answering;
    // Erasures answer with a tombstone, which names no event: leave them out of the load.
    let events: Vec<(String, Vec<u8>)> = events
        .into_iter()
        .filter(|(_, bytes)| {
            let event = omnistream_model::decode_event(bytes).expect("simulated events decode");
            event.event_type() != omnistream_model::EventType::ErasureRequested
        })
        .collect();
    let per_tick = (rate / 100).max(1);
    // Whole ticks: the first measured event starts a tick (a partial one left the count of
    // events offered higher than those measured, and the row read as outputs lost).
    let warm_up = ((rate * WARM_UP_SECONDS).min(events.len() / 2)).div_ceil(per_tick) * per_tick;
    let total = events.len().saturating_sub(warm_up);
    let sent_at: Arc<Mutex<Unseen>> = Arc::new(Mutex::new(HashMap::with_capacity(total)));
    // How many outputs the reader waits for: all measured events, or (sparse outputs) as many as
    // the committed output answers, known once the service committed the whole input.
    let expected = Arc::new(AtomicUsize::new(match answered {
        Answered::Every => total,
        Answered::WhenCommitted { .. } => usize::MAX,
    }));

    let reader: BaseConsumer = client_config()
        .set("group.id", unique_topic("bench-latency-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..args.partitions {
        assignment.add_partition_offset(output, partition, Offset::Beginning)?;
    }
    reader.assign(&assignment)?;
    let reader_sent = sent_at.clone();
    let reader_expected = expected.clone();
    let deadline = Duration::from_secs(seconds + 60);
    let reading = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(total);
        let started = Instant::now();
        while latencies.len() < reader_expected.load(Ordering::Acquire) && started.elapsed() < deadline {
            let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) else { continue };
            let seen = Instant::now();
            let Some(headers) = message.headers() else { continue };
            let Some(event_id) = headers.iter().find(|h| h.key == CAUSE_HEADER).and_then(|h| h.value) else {
                continue;
            };
            let customer = String::from_utf8_lossy(message.key().unwrap_or_default());
            let event_id = String::from_utf8_lossy(event_id);
            let mut sent = reader_sent.lock().expect("lock");
            let Some(pending) = sent.get_mut(customer.as_ref()) else { continue };
            let Some(at) = pending.iter().position(|(id, _, _)| *id == event_id) else { continue };
            // Without coalescing a record answers its cause alone; events before it stay pending.
            let from = if coalesced.is_some() { 0 } else { at };
            for (index, (_, sent, read)) in pending.drain(from..=at).enumerate() {
                if read || index + from == at {
                    latencies.push(seen.duration_since(sent).as_secs_f64() * 1000.0);
                }
            }
        }
        latencies
    });

    let producer: ThreadedProducer<DefaultProducerContext> = client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "1")
        .create()?;
    // Per customer, their measured events' ids in the order they are sent, and whether a
    // coalescing service reads each.
    let reads = |event: &omnistream_model::TouchpointEvent| coalesced.is_some_and(|reads| reads(event));
    let mut measured: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    for (key, bytes) in &events[warm_up.min(events.len())..] {
        let event = omnistream_model::decode_event(bytes).expect("simulated events decode");
        let read = reads(&event);
        measured.entry(key.clone()).or_default().push((event.event_id, read));
    }
    let started = Instant::now();
    for (index, chunk) in events.chunks(per_tick).enumerate() {
        let due = started + Duration::from_millis(10 * index as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // The first seconds warm up the service's transactions and the reader: not measured.
        let measured = index * per_tick >= warm_up;
        for (key, bytes) in chunk {
            let event = omnistream_model::decode_event(bytes).expect("simulated events decode");
            if measured {
                let read = reads(&event);
                sent_at.lock().expect("lock").entry(key.clone()).or_default().push_back((
                    event.event_id,
                    Instant::now(),
                    read,
                ));
            }
            producer
                .send(BaseRecord::to(input).key(key.as_str()).payload(bytes.as_slice()))
                .map_err(|(e, _)| e)?;
        }
    }
    let sent_per_second = events.len() as f64 / started.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(30))?;
    let offered = match answered {
        Answered::Every => total,
        Answered::WhenCommitted { group } => {
            let watermarks: BaseConsumer = client_config().create()?;
            let input_end = watermark_sum(&watermarks, input, args.partitions);
            let deadline = Instant::now() + Duration::from_secs(60);
            while committed_sum(group, input, args.partitions) < input_end {
                anyhow::ensure!(Instant::now() < deadline, "{group} did not commit {input} within 60 s");
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut answered = HashSet::new();
            omnistream_testkit::visit_committed_to_end(output, |message| {
                let cause = message
                    .headers()
                    .and_then(|headers| headers.iter().find(|h| h.key == CAUSE_HEADER).and_then(|h| h.value));
                let customer = String::from_utf8_lossy(message.key().unwrap_or_default());
                if let (Some(id), Some(ids)) =
                    (cause.map(String::from_utf8_lossy), measured.get(customer.as_ref()))
                    && let Some(at) = ids.iter().position(|(measured, _)| *measured == id)
                {
                    answered.insert(id.into_owned());
                    if coalesced.is_some() {
                        answered.extend(ids[..at].iter().filter(|(_, read)| *read).map(|(id, _)| id.clone()));
                    }
                }
            });
            expected.store(answered.len(), Ordering::Release);
            answered.len()
        }
    };
    let mut latencies = reading.join().expect("reader thread");
    anyhow::ensure!(!latencies.is_empty(), "no output was seen");
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok(Latency {
        sent_per_second,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: *latencies.last().expect("not empty"),
        delivered: latencies.len(),
        offered,
        peak_rss: 0,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("bench: broker at {}", bootstrap_servers());
    // An interrupted earlier run leaves its topics behind.
    delete_bench_topics().await;
    let mut rows: Vec<Row> = Vec::new();

    let input = unique_topic("bench-input");
    create_test_topics(&[TopicRequest::events(&input, args.partitions, 1)]).await;
    eprintln!("bench: preloading {} events over {} customers", args.events, args.customers);
    let preload_started = Instant::now();
    produce_all(&input, preloaded(args.events, args.customers, 7)).await;
    eprintln!("bench: preloaded in {:.1}s", preload_started.elapsed().as_secs_f64());
    let watermarks: BaseConsumer = client_config().create()?;
    let input_end = watermark_sum(&watermarks, &input, args.partitions);

    // Baseline: plain copy, no transactions, no decoding, no state. Measured next to each
    // service's drain (this machine's throughput drifts by a third over minutes), and the ratio
    // uses the mean of the two baselines around it.
    let measure_baseline = || baseline_drain(&args, &input, input_end, &watermarks);
    let mut baseline = measure_baseline().await?;
    rows.push(row(
        "pass-through baseline, events/s",
        format!("{:.0} ({:.1} s)", baseline.events_per_second, baseline.seconds),
        "",
        None,
    ));
    rows.push(row("peak RSS, baseline", format!("{:.0} MiB", mib(baseline.peak_rss)), "", None));
    if let Some(dir) = local_log_dir() {
        let bytes = topic_log_bytes(&dir, &input) as f64 / input_end.max(1) as f64;
        rows.push(row("input, bytes of broker log per event (for scale)", format!("{bytes:.0}"), "", None));
    }

    let selected = |name: &str| args.services.is_empty() || args.services.iter().any(|n| n == name);
    // Each service's output topics after its drain: the customer-api benchmark serves them.
    let mut drained: HashMap<&str, BenchTopics> = HashMap::new();
    for service in bench_services().into_iter().filter(|s| selected(s.name)) {
        let name = service.name;
        // Drain: decode, validate, dedupe, state, changelog, transactions; `repeat` rounds, each
        // against the mean of the baselines measured just before and just after it.
        let mut rounds = Vec::new();
        let mut ratios = Vec::new();
        let mut written = (0.0, None);
        let mut topics = None;
        for round in 0..args.repeat.max(1) {
            let round_topics =
                bench_topics(&format!("{name}-{round}"), &input, args.partitions, service).await;
            let port = free_port();
            let mut process =
                spawn_service(service, &round_topics, &format!("bench-drain-{name}-{round}"), port)?;
            let drain = time_drain(
                &mut process,
                || committed_sum(&round_topics.group, &input, args.partitions),
                input_end,
                Duration::from_secs(900),
            )?
            .timed_by_appends(&round_topics.output, input_end)?;
            written = written_per_event(&round_topics, &watermarks, args.partitions, input_end);
            let status = process.terminate(Duration::from_secs(30));
            anyhow::ensure!(status.success(), "{name} exited with {status}");
            let baseline_after = measure_baseline().await?;
            let ratio = drain.events_per_second
                / ((baseline.events_per_second + baseline_after.events_per_second) / 2.0);
            eprintln!(
                "bench: {name} round {round}: {:.0} events/s, {ratio:.2} x the baselines {:.0} and {:.0}",
                drain.events_per_second, baseline.events_per_second, baseline_after.events_per_second
            );
            baseline = baseline_after;
            rounds.push(drain);
            ratios.push(ratio);
            topics = Some(round_topics);
        }
        let topics = topics.expect("at least one round");
        let (offsets_per_event, bytes_per_event) = written;

        // Restore: restart the same instance `repeat` times and time until it is ready again,
        // alternating with the baseline build's binary when one is given.
        let mut restores = Vec::new();
        let mut baseline_restores = Vec::new();
        for round in 0..args.repeat.max(1) {
            restores.push(time_restore(service, &topics, &format!("bench-restore-{name}-{round}"), None)?);
            if let Some(dir) = &args.baseline_build {
                let label = format!("bench-restore-{name}-baseline-{round}");
                baseline_restores.push(time_restore(service, &topics, &label, Some(dir))?);
            }
        }
        let customers = restores.iter().map(|restore| restore.customers).fold(0.0, f64::max);

        eprintln!("bench: offering {} events/s for {} s to {name}", args.rate, args.load_seconds);
        let latency = fixed_load(&args, service, args.rate, args.load_seconds).await?;
        let sweep = if args.sweep_seconds > 0 { Some(highest_rate(&args, service).await) } else { None };

        let (rate, rate_min, rate_max) = spread(rounds.iter().map(|drain| drain.events_per_second).collect());
        rows.push(row(
            &format!("{name}, events/s, median of {} (min–max)", rounds.len()),
            format!("{rate:.0} ({rate_min:.0}–{rate_max:.0})"),
            "",
            None,
        ));
        let (ratio, ratio_min, ratio_max) = spread(ratios);
        rows.push(row(
            &format!("{name} / baseline (median of {} rounds' ratios, min–max)", rounds.len()),
            format!("{ratio:.2} ({ratio_min:.2}–{ratio_max:.2})"),
            ">= 0.9",
            Some(ratio >= 0.9),
        ));
        rows.push(row(
            &format!("{name}, offsets written per input event (records and transaction markers: outputs, changelog, DLQ)"),
            format!("{offsets_per_event:.2}"),
            "",
            None,
        ));
        if let Some(bytes) = bytes_per_event {
            rows.push(row(
                &format!("{name}, bytes of broker log written per input event"),
                format!("{bytes:.0}"),
                "",
                None,
            ));
        }
        rows.push(row(
            &format!("{name}, end-to-end p50 at {}/s", args.rate),
            format!("{:.1} ms", latency.p50_ms),
            "",
            None,
        ));
        rows.push(row(
            &format!("{name}, end-to-end p99 at {}/s", args.rate),
            format!("{:.1} ms", latency.p99_ms),
            "<= 250 ms",
            Some(latency.p99_ms <= 250.0),
        ));
        rows.push(row(
            &format!("{name}, end-to-end max at {}/s", args.rate),
            format!("{:.1} ms", latency.max_ms),
            "",
            None,
        ));
        if let Some((passed, failed)) = &sweep {
            rows.push(row(
                &format!(
                    "{name}, highest offered rate with p99 <= {SWEEP_P99_MS} ms ({} s loads doubling from {}/s, then the midpoint; the first load missed)",
                    args.sweep_seconds,
                    args.rate * 2
                ),
                format!(
                    "{} ({})",
                    passed.as_ref().map_or("none met".to_owned(), SweepStep::describe),
                    failed.as_ref().map_or("none missed".to_owned(), SweepStep::describe)
                ),
                "",
                None,
            ));
        }
        rows.push(row(
            &format!("{name}, outputs seen live / committed for the measured events"),
            format!("{} / {}", latency.delivered, latency.offered),
            "all",
            Some(latency.delivered == latency.offered),
        ));
        let peak = rounds.iter().map(|drain| drain.peak_rss).chain([latency.peak_rss]).max().unwrap_or(0);
        rows.push(row(
            &format!("{name}, peak RSS ({} customers)", args.customers),
            format!("{:.0} MiB", mib(peak)),
            "<= 256 MiB",
            Some(mib(peak) <= 256.0),
        ));
        rows.extend(restore_rows(name, customers, &restores, &baseline_restores));
        drained.insert(name, topics);
    }

    for (selection, twin) in kafka_streams::twins() {
        if selected(selection) {
            rows.extend(kafka_streams::kafka_streams_rows(&args, twin, &input, input_end).await?);
        }
    }
    if selected("compression") {
        rows.extend(compression::compression_rows(&args, &input).await?);
    }
    if selected("wire-format") {
        rows.extend(wire_format::wire_format_rows(&args, &input).await?);
    }
    if selected("trace-context") {
        rows.extend(trace_context::trace_context_rows(&args, &input).await?);
    }
    if selected("identity-resolver") {
        rows.extend(identity::resolver_rows(&args, &watermarks).await?);
    }
    if selected("journeys") {
        rows.extend(journeys::journeys_rows(&args, &watermarks).await?);
    }
    if selected("ingest-gateway") {
        rows.extend(gateway_rows(&args).await?);
    }
    if selected("customer-api-scale") {
        rows.extend(api_scale::api_scale_rows(&args).await?);
    }
    if selected("customer-api") {
        // Without resolution its identity topic is empty, as is its journeys topic here, but
        // they must exist.
        let identity = unique_topic("bench-identity");
        let journeys = unique_topic("bench-journey-states");
        create_test_topics(&[
            TopicRequest::compacted(&identity, args.partitions, 1),
            TopicRequest::compacted(&journeys, args.partitions, 1),
        ])
        .await;
        rows.extend(api_rows(&args, &drained, &identity, &journeys)?);
    }

    let machine = format!(
        "{} cores, {:.0} GiB",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        total_memory_gib()
    );
    let mut table = format!(
        "# omnistream benchmark, {}\n\nMachine: {machine}; Kafka: local single node; {} events over {} customers, {} partitions.\n\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        args.events,
        args.customers,
        args.partitions
    );
    table.push_str("| metric | value | target | |\n|---|---|---|---|\n");
    for r in &rows {
        writeln!(table, "| {} | {} | {} | {} |", r.metric, r.value, r.target, r.verdict)?;
    }
    println!("{table}");
    delete_bench_topics().await;
    if !args.services.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&args.results_dir)?;
    let file = args.results_dir.join(format!(
        "{}-{}cpu.md",
        Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    std::fs::write(&file, &table)?;
    eprintln!("bench: results kept in {}", file.display());
    Ok(())
}

/// The gateway over HTTP: `wrk` posting batches of 100 valid events, against producing events
/// straight to Kafka with the same idempotent settings just before.
async fn gateway_rows(args: &Args) -> anyhow::Result<Vec<Row>> {
    const DIRECT_EVENTS: usize = 200_000;
    let direct_topic = unique_topic("bench-direct");
    create_test_topics(&[TopicRequest::plain(&direct_topic, args.partitions, 1)]).await;
    let records = simulated(DIRECT_EVENTS, args.customers, 11, 1);
    let started = Instant::now();
    produce_all(&direct_topic, records).await;
    let direct = DIRECT_EVENTS as f64 / started.elapsed().as_secs_f64();
    eprintln!("bench: producing straight to Kafka {direct:.0} events/s");

    let topic = unique_topic("bench-gateway");
    create_test_topics(&[TopicRequest::plain(&topic, args.partitions, 1)]).await;
    let port = free_port();
    let http_addr = format!("127.0.0.1:{port}");
    let mut gateway = ServiceProcess::spawn(
        &binary("ingest-gateway")?,
        "bench-gateway",
        &[
            "--events-topic",
            &topic,
            "--http-addr",
            &http_addr,
            "--admin-addr",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    );
    wait_ready(port, Duration::from_secs(60))?;
    eprintln!("bench: posting batches of 100 events to the gateway for {} s", args.http_seconds);
    let script = http::post_script(&http::batch_body(100, args.customers));
    let result = http::wrk(&format!("http://{http_addr}/v1/events"), &script, args.http_seconds, 32)?;
    let peak = gateway.peak_rss_bytes().unwrap_or(0);
    anyhow::ensure!(gateway.is_running(), "the gateway exited; see {}", gateway.log.display());
    let events = result.requests_per_second * 100.0;
    eprintln!("bench: gateway {events:.0} events/s, p99 {:.1} ms", result.p99_ms);
    Ok(vec![
        row("producing straight to Kafka (idempotent, acks=all), events/s", format!("{direct:.0}"), "", None),
        row(
            "ingest-gateway, events/s accepted over HTTP (batches of 100, 32 connections)",
            format!("{events:.0}"),
            ">= 50000",
            Some(events >= 50_000.0 && result.non_2xx == 0),
        ),
        row("ingest-gateway / producing straight to Kafka", format!("{:.2}", events / direct), "", None),
        row("ingest-gateway, non-2xx answers", result.non_2xx.to_string(), "0", Some(result.non_2xx == 0)),
        row("ingest-gateway, p50 per batch", format!("{:.1} ms", result.p50_ms), "", None),
        row("ingest-gateway, p99 per batch", format!("{:.1} ms", result.p99_ms), "", None),
        row("ingest-gateway, peak RSS", format!("{:.0} MiB", mib(peak)), "", None),
    ])
}

/// The customer-api with every customer of the drained outputs loaded: `wrk` looking up random
/// customers, against its own `/healthz` (the HTTP ceiling of this machine) just before.
fn api_rows(
    args: &Args,
    drained: &HashMap<&str, BenchTopics>,
    identity: &str,
    journeys: &str,
) -> anyhow::Result<Vec<Row>> {
    let topics = |name: &str| {
        drained.get(name).with_context(|| {
            format!("the customer-api benchmark serves {name}'s drained outputs: run it too")
        })
    };
    let port = free_port();
    let http_addr = format!("127.0.0.1:{port}");
    let mut api_args = vec![
        "--http-addr",
        &http_addr,
        "--admin-addr",
        "127.0.0.1:0",
        "--identity-topic",
        identity,
        "--journey-states-topic",
        journeys,
    ];
    // It reads each processor's drained outputs under the flags the processor wrote them with.
    for spec in per_event_processors() {
        let drained = topics(spec.name)?;
        let outputs = std::iter::once(&drained.output).chain(&drained.other_outputs);
        for (output, topic) in spec.outputs.iter().zip(outputs) {
            api_args.extend([output.flag, topic.as_str()]);
        }
    }
    let mut api = ServiceProcess::spawn(
        &binary("customer-api")?,
        "bench-customer-api",
        &api_args,
        &[("RUST_LOG", "warn")],
    );
    let catch_up = wait_ready(port, Duration::from_secs(900))?;
    // The gauge is refreshed every 5 s.
    let mut customers = 0.0;
    for _ in 0..60 {
        customers = metric(port, "omnistream_api_customers").unwrap_or(0.0);
        if customers > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("bench: customer-api caught up in {:.1}s", catch_up.as_secs_f64());
    let base = format!("http://{http_addr}");
    let ceiling = http::wrk(&format!("{base}/healthz"), "", args.http_seconds, 16)?;
    let lookups = http::wrk(&base, &http::lookup_script(args.customers), args.http_seconds, 16)?;
    let peak = api.peak_rss_bytes().unwrap_or(0);
    anyhow::ensure!(api.is_running(), "the customer-api exited; see {}", api.log.display());
    eprintln!(
        "bench: customer-api {:.0} lookups/s, p99 {:.2} ms",
        lookups.requests_per_second, lookups.p99_ms
    );
    Ok(vec![
        row(
            &format!("customer-api, catch-up from the beginning of the outputs ({customers:.0} customers)"),
            format!("{:.1} s", catch_up.as_secs_f64()),
            "",
            None,
        ),
        row(
            "customer-api, GET /healthz, requests/s (HTTP ceiling)",
            format!("{:.0}", ceiling.requests_per_second),
            "",
            None,
        ),
        row(
            "customer-api, GET /v1/customers/{id}, lookups/s (random customers, 16 connections)",
            format!("{:.0}", lookups.requests_per_second),
            ">= 20000",
            Some(lookups.requests_per_second >= 20_000.0),
        ),
        row(
            "customer-api lookups / HTTP ceiling",
            format!("{:.2}", lookups.requests_per_second / ceiling.requests_per_second),
            "",
            None,
        ),
        // Simulated customers without any event are unknown: 404 is their right answer.
        row(
            "customer-api, 404 answers (customers without events)",
            format!("{:.1} %", 100.0 * lookups.non_2xx as f64 / lookups.requests.max(1) as f64),
            "",
            None,
        ),
        row("customer-api, p50", format!("{:.2} ms", lookups.p50_ms), "", None),
        row(
            "customer-api, p99",
            format!("{:.2} ms", lookups.p99_ms),
            "<= 10 ms",
            Some(lookups.p99_ms <= 10.0),
        ),
        row(
            &format!("customer-api, peak RSS ({customers:.0} customers)"),
            format!("{:.0} MiB", mib(peak)),
            "",
            None,
        ),
    ])
}

/// Every topic of this command is named `test.bench-*`; none is needed once the table is printed.
async fn delete_bench_topics() {
    let deleted = delete_topics_with_prefix("test.bench-").await;
    if deleted > 0 {
        eprintln!("bench: deleted {deleted} benchmark topics");
    }
}

fn total_memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}
