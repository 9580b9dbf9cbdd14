//! The runtime against Kafka Streams (issue 21): a service and a Kafka Streams application doing
//! the same fold with exactly_once_v2 (`bench/kafka-streams`, built with Maven from Maven Central
//! like the broker), its twin, drain the same preloaded topic, [`RUNS`] rounds, each round in the
//! other order than the one before, so that the machine's drift falls on all of them. Twins: the
//! event-counter's (`CounterStreams`), profile-updater's (`ProfileStreams`), suppression's
//! (`SuppressionStreams`), channel-affinity's (`AffinityStreams`) and loyalty-points'
//! (`LoyaltyStreams`); all read the events' Avro with the Java library (all but the first write
//! Avro too, the first the event-counter's JSON), and each customer's last record they write (and
//! loyalty's whole ledger) must equal the service's, decoded by this project's codec (the
//! event-counter's by `serde_json`). The ratios are the medians of each round's ratio, with their range. Each drain is timed
//! like every other, by its output's append times (`Drain::timed_by_appends`; the output topics
//! stamp append times, since Kafka Streams gives an output the input's timestamp).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use omnistream_model::codec::AvroRecord;
use omnistream_model::records::{
    ChannelAffinity, CustomerProfile, LoyaltyBalance, LoyaltyLedgerEntry, SuppressionState,
};
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::{ServiceProcess, bootstrap_servers, create_test_topics, free_port, unique_topic};
use rdkafka::message::Message;

use crate::drain_variants::spread;
use crate::{
    Args, BenchService, COUNTER, Row, bench_services, committed_sum, mib, row, spawn_service, time_drain,
};

const RUNS: usize = 3;

/// A service and its Kafka Streams twin.
#[derive(Clone, Copy)]
pub struct Twin {
    service: BenchService,
    /// The twin's main class in `bench/kafka-streams`.
    main_class: &'static str,
    /// What the twin's output must show.
    check: Check,
    /// Whether a record cache coalesces the twin's output: a DSL aggregate forwards the latest
    /// of each key per commit, a fold of the Processor API every record it forwards.
    cache_coalesces: bool,
}

#[derive(Clone, Copy)]
enum Check {
    /// Each customer's last count record (or its absence, after an erasure) is the service's.
    Counts,
    /// Each customer's last profile (or its absence, after an erasure) is the service's.
    Profiles,
    /// Each customer's last affinity record is the service's, its doubles within 1e-9.
    Affinities,
    /// Each customer's last balance and whole ledger are the service's.
    Loyalty,
    /// Each customer's last suppression record is the service's last written for an input event
    /// (the twin has no timers).
    Suppressions,
}

/// Each twin, by the name `--service` selects it with.
pub fn twins() -> [(&'static str, Twin); 5] {
    let service = |spec: &omnistream_model::services::ServiceSpec| {
        bench_services().into_iter().find(|service| service.name == spec.name).expect("benchmarked")
    };
    use omnistream_model::services::{CHANNEL_AFFINITY, LOYALTY_POINTS, PROFILE_UPDATER, SUPPRESSION};
    [
        (
            "kafka-streams",
            Twin {
                service: COUNTER,
                main_class: "io.omnistream.bench.CounterStreams",
                check: Check::Counts,
                cache_coalesces: false,
            },
        ),
        (
            "kafka-streams-profile-updater",
            Twin {
                service: service(&PROFILE_UPDATER),
                main_class: "io.omnistream.bench.ProfileStreams",
                check: Check::Profiles,
                cache_coalesces: true,
            },
        ),
        (
            "kafka-streams-suppression",
            Twin {
                service: service(&SUPPRESSION),
                main_class: "io.omnistream.bench.SuppressionStreams",
                check: Check::Suppressions,
                cache_coalesces: false,
            },
        ),
        (
            "kafka-streams-channel-affinity",
            Twin {
                service: service(&CHANNEL_AFFINITY),
                main_class: "io.omnistream.bench.AffinityStreams",
                check: Check::Affinities,
                cache_coalesces: false,
            },
        ),
        (
            "kafka-streams-loyalty-points",
            Twin {
                service: service(&LOYALTY_POINTS),
                main_class: "io.omnistream.bench.LoyaltyStreams",
                check: Check::Loyalty,
                cache_coalesces: false,
            },
        ),
    ]
}

/// One way of running the Kafka Streams application.
struct StreamsSetup {
    name: &'static str,
    store: &'static str,
    threads: usize,
    /// `statestore.cache.max.bytes`; -1 keeps Kafka Streams' default (10 MiB).
    cache_bytes: i64,
}

fn setups() -> [StreamsSetup; 2] {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    [
        StreamsSetup {
            name: "Kafka Streams, no record cache, 1 thread, in-memory store",
            store: "memory",
            threads: 1,
            cache_bytes: 0,
        },
        StreamsSetup {
            name: "Kafka Streams defaults (RocksDB, record cache), a thread per core",
            store: "rocksdb",
            threads: cores,
            cache_bytes: -1,
        },
    ]
}

/// Builds the application (Maven does nothing when it is up to date); its classpath.
fn build() -> anyhow::Result<String> {
    let project = omnistream_testkit::repo_root().join("bench/kafka-streams");
    let status = Command::new("mvn")
        .args(["-q", "-B", "--no-transfer-progress", "-f"])
        .arg(project.join("pom.xml"))
        .arg("package")
        .status()
        .context("Maven (mvn) builds the Kafka Streams application")?;
    anyhow::ensure!(status.success(), "mvn package in {} failed", project.display());
    let target: PathBuf = project.join("target");
    Ok(format!("{}:{}/*", target.join("classes").display(), target.join("lib").display()))
}

/// What an application wrote to a topic: each customer's last record, decoded by this project's
/// codec or `serde_json` (`None` where it is a tombstone), and how many records it wrote.
struct Written<T> {
    last: HashMap<Vec<u8>, Option<T>>,
    records: usize,
}

/// How a topic's records are decoded.
type Decode<T> = fn(&[u8]) -> anyhow::Result<T>;

/// This project's Avro records.
fn avro<T: AvroRecord>(bytes: &[u8]) -> anyhow::Result<T> {
    Ok(omnistream_model::codec::decode_record::<T>(bytes)?)
}

/// The event-counter's records, JSON, compared as written (every field, by name).
fn count_json(bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(bytes)?)
}

/// What was written to `topic`, in Avro.
fn written<T: AvroRecord>(topic: &str) -> anyhow::Result<Written<T>> {
    written_where(topic, |_| true, avro)
}

/// What was written to `topic` among the records `kept` says.
fn written_where<T>(
    topic: &str,
    kept: impl Fn(&rdkafka::message::OwnedMessage) -> bool,
    decode: Decode<T>,
) -> anyhow::Result<Written<T>> {
    let mut written = Written { last: HashMap::new(), records: 0 };
    for message in omnistream_testkit::read_committed_to_end(topic).iter().filter(|message| kept(message)) {
        let record = match message.payload() {
            Some(bytes) => Some(decode(bytes).with_context(|| format!("a record on {topic}"))?),
            None => None,
        };
        written.last.insert(message.key().unwrap_or_default().to_vec(), record);
        written.records += 1;
    }
    Ok(written)
}

/// Whether the runtime wrote `message` for an input event (its `cause.event_id` header), not
/// by a timer.
fn caused_by_an_event(message: &rdkafka::message::OwnedMessage) -> bool {
    use rdkafka::message::Headers;
    message
        .headers()
        .is_some_and(|headers| headers.iter().any(|header| header.key == omnistream_runtime::CAUSE_HEADER))
}

/// Every customer's ledger entries on `topic`, in the order written (a customer's are on one
/// partition).
fn ledgers(topic: &str) -> anyhow::Result<Written<Vec<LoyaltyLedgerEntry>>> {
    let mut ledgers: Written<Vec<LoyaltyLedgerEntry>> = Written { last: HashMap::new(), records: 0 };
    for message in omnistream_testkit::read_committed_to_end(topic) {
        let bytes = message.payload().with_context(|| format!("a ledger entry on {topic}"))?;
        let entry = omnistream_model::codec::decode_record::<LoyaltyLedgerEntry>(bytes)
            .with_context(|| format!("a ledger entry on {topic}"))?;
        let customer = ledgers.last.entry(message.key().unwrap_or_default().to_vec()).or_default();
        customer.get_or_insert_default().push(entry);
        ledgers.records += 1;
    }
    Ok(ledgers)
}

/// One topic a twin wrote, in one setup.
struct TwinOutput<'a> {
    setup: &'a str,
    /// Whether the setup's record cache may coalesce a key's updates (Kafka Streams' DSL writes
    /// the latest of each key per commit): then it writes fewer records than the service.
    coalesces: bool,
    topic: String,
}

/// Whether each twin's topic holds what the service wrote (`ours`): as many records where
/// neither coalesces a key's updates per commit (at most as many where only the twin's cache
/// does, at least where only the service does: its latest-per-key outputs), and each customer's
/// last alike by `same`.
fn same_as_written<T: std::fmt::Debug>(
    outputs: &[TwinOutput],
    ours: &Written<T>,
    ours_coalesce: bool,
    decode: Decode<T>,
    same: impl Fn(&T, &T) -> bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(!ours.last.is_empty(), "the service wrote no records to compare");
    for output in outputs {
        let theirs = written_where(&output.topic, |_| true, decode)?;
        same_as_ours(&theirs, ours, output.setup, (output.coalesces, ours_coalesce), &same)?;
    }
    Ok(())
}

/// `coalesce`: whether the twin's setup, and the service, may coalesce a key's updates.
fn same_as_ours<T: std::fmt::Debug>(
    theirs: &Written<T>,
    ours: &Written<T>,
    setup: &str,
    coalesce: (bool, bool),
    same: impl Fn(&T, &T) -> bool,
) -> anyhow::Result<()> {
    let records_agree = match coalesce {
        (false, false) => theirs.records == ours.records,
        (true, false) => theirs.records <= ours.records,
        (false, true) => theirs.records >= ours.records,
        (true, true) => true,
    };
    anyhow::ensure!(
        records_agree && theirs.last.len() == ours.last.len(),
        "{setup}: {} records of {} customers, the service's {} of {}",
        theirs.records,
        theirs.last.len(),
        ours.records,
        ours.last.len()
    );
    let agree = |key: &Vec<u8>, record: &Option<T>| match (theirs.last.get(key), record) {
        (Some(Some(twin)), Some(service)) => same(twin, service),
        (Some(None), None) => true,
        _ => false,
    };
    let differing: Vec<_> = ours.last.iter().filter(|(key, record)| !agree(key, record)).collect();
    if let Some((key, record)) = differing.first() {
        anyhow::bail!(
            "{setup}: {} of {} customers' last records differ from the service's; {}: {:?}\nagainst the service's {:?}",
            differing.len(),
            ours.last.len(),
            String::from_utf8_lossy(key),
            theirs.last.get(*key),
            record
        );
    }
    eprintln!(
        "bench: {setup}: {} records against the service's {}; each of the {} customers' last equal to the service's",
        theirs.records,
        ours.records,
        ours.last.len()
    );
    Ok(())
}

/// Two affinity records alike but for the last bits of their doubles (`exp2` against `Math.pow`).
fn same_affinity(twin: &ChannelAffinity, service: &ChannelAffinity) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let scores = twin.channels.len() == service.channels.len()
        && twin.channels.iter().zip(&service.channels).all(|(a, b)| {
            a.channel == b.channel
                && a.insufficient_data == b.insufficient_data
                && a.marketing_consent == b.marketing_consent
                && close(a.score, b.score)
                && close(a.std_dev, b.std_dev)
                && close(a.sent, b.sent)
                && close(a.engaged, b.engaged)
        });
    scores
        && twin.customer_id == service.customer_id
        && twin.ranking == service.ranking
        && twin.half_life_days == service.half_life_days
        && twin.as_of == service.as_of
        && twin.version == service.version
}

/// Whether each twin's outputs (setup, topics in the service's order) show what `check` asks,
/// against the service's outputs `expected`.
fn check_outputs(
    check: Check,
    outputs: &[(&str, bool, Vec<String>)],
    expected: &[String],
) -> anyhow::Result<()> {
    // The topics of each twin's output number `index`.
    let nth = |index: usize| -> Vec<TwinOutput> {
        outputs
            .iter()
            .map(|(setup, coalesces, topics)| TwinOutput {
                setup,
                coalesces: *coalesces,
                topic: topics[index].clone(),
            })
            .collect()
    };
    match check {
        Check::Counts => {
            let ours = written_where(&expected[0], |_| true, count_json)?;
            same_as_written(&nth(0), &ours, false, count_json, PartialEq::eq)
        }
        Check::Profiles => {
            same_as_written::<CustomerProfile>(&nth(0), &written(&expected[0])?, true, avro, PartialEq::eq)
        }
        Check::Affinities => same_as_written(&nth(0), &written(&expected[0])?, true, avro, same_affinity),
        Check::Suppressions => {
            let ours = written_where::<SuppressionState>(&expected[0], caused_by_an_event, avro)?;
            let all = written::<SuppressionState>(&expected[0])?.records;
            eprintln!("bench: suppression: {} records written by timers left out", all - ours.records);
            same_as_written(&nth(0), &ours, true, avro, PartialEq::eq)
        }
        Check::Loyalty => {
            same_as_written::<LoyaltyBalance>(&nth(0), &written(&expected[0])?, true, avro, PartialEq::eq)?;
            let ours = ledgers(&expected[1])?;
            for output in nth(1) {
                let setup = format!("{}, ledger", output.setup);
                same_as_ours(
                    &ledgers(&output.topic)?,
                    &ours,
                    &setup,
                    (output.coalesces, false),
                    PartialEq::eq,
                )?;
            }
            Ok(())
        }
    }
}

/// One drain by the Kafka Streams application: events/s, peak RSS and its output topic.
async fn streams_drain(
    args: &Args,
    twin: Twin,
    classpath: &str,
    setup: &StreamsSetup,
    input: &str,
    input_end: i64,
    label: &str,
) -> anyhow::Result<(f64, u64, Vec<String>)> {
    // As many outputs as the service's, in its order; the first is timed.
    let outputs: Vec<String> = (0..=twin.service.other_outputs.len())
        .map(|index| unique_topic(&format!("bench-{label}-out{index}")))
        .collect();
    let requests: Vec<TopicRequest> =
        outputs.iter().map(|topic| TopicRequest::events(topic, args.partitions, 1)).collect();
    create_test_topics(&requests).await;
    let joined = outputs.join(",");
    let application = unique_topic(&format!("bench-{label}"));
    let threads = setup.threads.to_string();
    let cache = setup.cache_bytes.to_string();
    let schemas = omnistream_testkit::repo_root().join("schemas").to_string_lossy().into_owned();
    let java_args = [
        "-cp",
        classpath,
        twin.main_class,
        bootstrap_servers(),
        input,
        &joined,
        &application,
        setup.store,
        &threads,
        &cache,
        &schemas,
    ];
    let mut process = ServiceProcess::spawn("java", &format!("bench-{label}"), &java_args, &[]);
    let drain = time_drain(
        &mut process,
        || committed_sum(&application, input, args.partitions),
        input_end,
        Duration::from_secs(900),
    )?
    .timed_by_appends(&outputs[0], input_end)?;
    // The JVM exits 143 on SIGTERM after its shutdown hook closed the application.
    process.terminate(Duration::from_secs(30));
    Ok((drain.events_per_second, drain.peak_rss, outputs))
}

/// Rows: each contender's events/s and peak RSS (medians with range), and the service's ratio to
/// each Kafka Streams setup.
pub async fn kafka_streams_rows(
    args: &Args,
    twin: Twin,
    input: &str,
    input_end: i64,
) -> anyhow::Result<Vec<Row>> {
    let service = twin.service;
    let classpath = build()?;
    let setups = setups();
    // Per contender (the event-counter first, then each setup): events/s and peak RSS per round.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); setups.len() + 1];
    let mut peaks: Vec<Vec<f64>> = vec![Vec::new(); setups.len() + 1];
    // Every Kafka Streams drain's output, checked once the service's first output is there.
    let mut twin_outputs: Vec<(&str, bool, Vec<String>)> = Vec::new();
    let mut service_output = None;
    for run in 0..RUNS {
        let mut order: Vec<usize> = (0..=setups.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for contender in order {
            let (rate, peak) = if contender == 0 {
                let label = format!("versus-streams-{}-{run}", service.name);
                let topics = crate::bench_topics(&label, input, args.partitions, service).await;
                let mut process = spawn_service(service, &topics, &format!("bench-{label}"), free_port())?;
                let drain = time_drain(
                    &mut process,
                    || committed_sum(&topics.group, input, args.partitions),
                    input_end,
                    Duration::from_secs(900),
                )?
                .timed_by_appends(&topics.output, input_end)?;
                let status = process.terminate(Duration::from_secs(30));
                anyhow::ensure!(status.success(), "{} exited with {status}", service.name);
                service_output.get_or_insert_with(|| {
                    std::iter::once(topics.output.clone())
                        .chain(topics.other_outputs.iter().cloned())
                        .collect::<Vec<_>>()
                });
                (drain.events_per_second, drain.peak_rss)
            } else {
                let setup = &setups[contender - 1];
                let label = format!("streams-{}-{contender}-{run}", service.name);
                let (rate, peak, output) =
                    streams_drain(args, twin, &classpath, setup, input, input_end, &label).await?;
                twin_outputs.push((setup.name, twin.cache_coalesces && setup.cache_bytes != 0, output));
                (rate, peak)
            };
            let name = if contender == 0 { service.name } else { setups[contender - 1].name };
            eprintln!("bench: {name}, round {run}: {rate:.0} events/s, peak RSS {:.0} MiB", mib(peak));
            rates[contender].push(rate);
            peaks[contender].push(mib(peak));
        }
    }
    let expected = service_output.expect("the service drained");
    check_outputs(twin.check, &twin_outputs, &expected)?;
    let names: Vec<&str> = std::iter::once(service.name).chain(setups.iter().map(|s| s.name)).collect();
    let mut rows = Vec::new();
    for ((name, rate), peak) in names.iter().zip(&rates).zip(&peaks) {
        let (median, min, max) = spread(rate.clone());
        rows.push(row(
            &format!("{name}, events/s, median of {RUNS} (min–max)"),
            format!("{median:.0} ({min:.0}–{max:.0})"),
            "",
            None,
        ));
        let (median, min, max) = spread(peak.clone());
        rows.push(row(
            &format!("{name}, peak RSS, median of {RUNS} (min–max)"),
            format!("{median:.0} MiB ({min:.0}–{max:.0})"),
            "",
            None,
        ));
    }
    for (index, setup) in setups.iter().enumerate() {
        let ratios: Vec<f64> =
            rates[0].iter().zip(&rates[index + 1]).map(|(counter, streams)| counter / streams).collect();
        let (median, min, max) = spread(ratios);
        rows.push(row(
            &format!("{} / {} (median of {RUNS} rounds' ratios, min–max)", service.name, setup.name),
            format!("{median:.2} ({min:.2}–{max:.2})"),
            ">= 3",
            Some(median >= 3.0),
        ));
    }
    Ok(rows)
}
