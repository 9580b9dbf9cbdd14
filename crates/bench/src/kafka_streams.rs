//! The runtime against Kafka Streams (issue 21): the event-counter and a Kafka Streams
//! application doing the same fold with exactly_once_v2 (`bench/kafka-streams`, built with Maven
//! from Maven Central like the broker) drain the same preloaded topic, [`RUNS`] rounds, each
//! round in the other order than the one before, so that the machine's drift falls on all of
//! them. The ratios are the medians of each round's ratio, with their range. Each drain is timed
//! like every other, by its output's append times (`Drain::timed_by_appends`; the output topics
//! stamp append times, since Kafka Streams gives an output the input's timestamp).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::{ServiceProcess, bootstrap_servers, create_test_topics, free_port, unique_topic};
use rdkafka::message::Message;

use crate::drain_variants::spread;
use crate::{Args, COUNTER, Row, bench_topics, committed_sum, mib, row, spawn_service, time_drain};

const RUNS: usize = 3;

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

/// Sum over customers of the last count written to `topic`: each event counted once gives the
/// number of input records.
fn last_counts_sum(topic: &str) -> u64 {
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    for message in omnistream_testkit::read_committed_to_end(topic) {
        let count = message
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0);
        last.insert(message.key().unwrap_or_default().to_vec(), count);
    }
    last.values().sum()
}

/// One drain by the Kafka Streams application: events/s and peak RSS.
async fn streams_drain(
    args: &Args,
    classpath: &str,
    setup: &StreamsSetup,
    input: &str,
    input_end: i64,
    label: &str,
) -> anyhow::Result<(f64, u64)> {
    let output = unique_topic(&format!("bench-{label}-out"));
    create_test_topics(&[TopicRequest::events(&output, args.partitions, 1)]).await;
    let application = unique_topic(&format!("bench-{label}"));
    let threads = setup.threads.to_string();
    let cache = setup.cache_bytes.to_string();
    let process = ServiceProcess::spawn(
        "java",
        &format!("bench-{label}"),
        &[
            "-cp",
            classpath,
            "io.omnistream.bench.CounterStreams",
            bootstrap_servers(),
            input,
            &output,
            &application,
            setup.store,
            &threads,
            &cache,
        ],
        &[],
    );
    let drain = time_drain(
        &process,
        || committed_sum(&application, input, args.partitions),
        input_end,
        Duration::from_secs(900),
    )?
    .timed_by_appends(&output, input_end)?;
    // The JVM exits 143 on SIGTERM after its shutdown hook closed the application.
    process.terminate(Duration::from_secs(30));
    let counted = last_counts_sum(&output);
    anyhow::ensure!(
        counted == u64::try_from(input_end)?,
        "{}: the last counts add up to {counted}, not the {input_end} input records",
        setup.name
    );
    Ok((drain.events_per_second, drain.peak_rss))
}

/// Rows: each contender's events/s and peak RSS (medians with range), and the event-counter's
/// ratio to each Kafka Streams setup.
pub async fn kafka_streams_rows(args: &Args, input: &str, input_end: i64) -> anyhow::Result<Vec<Row>> {
    let classpath = build()?;
    let setups = setups();
    // Per contender (the event-counter first, then each setup): events/s and peak RSS per round.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); setups.len() + 1];
    let mut peaks: Vec<Vec<f64>> = vec![Vec::new(); setups.len() + 1];
    for run in 0..RUNS {
        let mut order: Vec<usize> = (0..=setups.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for contender in order {
            let (rate, peak) = if contender == 0 {
                let topics =
                    bench_topics(&format!("versus-streams-counter-{run}"), input, args.partitions, COUNTER)
                        .await;
                let process = spawn_service(
                    COUNTER,
                    &topics,
                    &format!("bench-versus-streams-counter-{run}"),
                    free_port(),
                )?;
                let drain = time_drain(
                    &process,
                    || committed_sum(&topics.group, input, args.partitions),
                    input_end,
                    Duration::from_secs(900),
                )?
                .timed_by_appends(&topics.output, input_end)?;
                let status = process.terminate(Duration::from_secs(30));
                anyhow::ensure!(status.success(), "event-counter exited with {status}");
                (drain.events_per_second, drain.peak_rss)
            } else {
                let setup = &setups[contender - 1];
                streams_drain(
                    args,
                    &classpath,
                    setup,
                    input,
                    input_end,
                    &format!("streams-{contender}-{run}"),
                )
                .await?
            };
            let name = if contender == 0 { COUNTER.name } else { setups[contender - 1].name };
            eprintln!("bench: {name}, round {run}: {rate:.0} events/s, peak RSS {:.0} MiB", mib(peak));
            rates[contender].push(rate);
            peaks[contender].push(mib(peak));
        }
    }
    let names: Vec<&str> = std::iter::once(COUNTER.name).chain(setups.iter().map(|s| s.name)).collect();
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
            &format!("event-counter / {} (median of {RUNS} rounds' ratios, min–max)", setup.name),
            format!("{median:.2} ({min:.2}–{max:.2})"),
            ">= 3",
            Some(median >= 3.0),
        ));
    }
    Ok(rows)
}
