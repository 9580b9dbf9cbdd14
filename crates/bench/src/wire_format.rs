//! The Confluent wire format's cost (docs/schema-registry.md): profile-updater drains the same
//! events written in single-object encoding and in the Confluent format (its outputs too, through
//! the local registry), three times each, alternating; the ratio of the medians.

use std::time::Duration;

use omnistream_model::{RecordKind, confluent_schema_id, to_confluent};
use omnistream_runtime::admin::TopicRequest;
use omnistream_schema_registry::{SchemaRegistryArgs, WireFormatArgs};
use omnistream_testkit::{create_test_topics, free_port, produce_all, registry_url, unique_topic};

use crate::{
    Args, BenchService, Row, bench_services, bench_topics, committed_sum, row, simulated, spawn_service_with,
    time_drain,
};

const RUNS: usize = 3;

/// Median, min and max.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

pub async fn wire_format_rows(args: &Args, input: &str, input_end: i64) -> anyhow::Result<Vec<Row>> {
    let service: BenchService = bench_services()
        .into_iter()
        .find(|service| service.name == omnistream_model::services::PROFILE_UPDATER.name)
        .expect("profile-updater is benchmarked");
    let registry = registry_url().to_owned();
    let confluent_input = unique_topic("bench-confluent-input");
    create_test_topics(&[TopicRequest::events(&confluent_input, args.partitions, 1)]).await;
    // The events schema as a producer's serializer registers it (subject `<topic>-value`).
    let wire = WireFormatArgs {
        registry: SchemaRegistryArgs { schema_registry_url: Some(registry.clone()), ..Default::default() },
        wire_format: omnistream_schema_registry::WireFormat::Confluent,
        wire_format_topics: Vec::new(),
    };
    let writers = wire.writers(&[(confluent_input.as_str(), Some(RecordKind::TouchpointEvent))])?;
    let id = writers.id_of(&confluent_input).expect("registered");
    // The same events (the simulator's seed) as the single-object input.
    let events = simulated(args.events, args.customers, 7, 1);
    produce_all(&confluent_input, events.into_iter().map(|(key, bytes)| (key, to_confluent(bytes, id))))
        .await;

    let mut single = Vec::new();
    let mut confluent = Vec::new();
    for run in 0..RUNS {
        for (format, topic, samples) in
            [("single-object", input, &mut single), ("confluent", confluent_input.as_str(), &mut confluent)]
        {
            let topics = bench_topics(&format!("wire-{format}-{run}"), topic, args.partitions, service).await;
            let extra: Vec<String> = match format {
                "confluent" => ["--schema-registry-url", &registry, "--wire-format", "confluent"]
                    .map(str::to_owned)
                    .to_vec(),
                _ => Vec::new(),
            };
            let port = free_port();
            let process =
                spawn_service_with(service, &topics, &format!("bench-wire-{format}-{run}"), port, &extra)?;
            let drain = time_drain(
                &process,
                || committed_sum(&topics.group, topic, args.partitions),
                input_end,
                Duration::from_secs(900),
            )?;
            let status = process.terminate(Duration::from_secs(30));
            anyhow::ensure!(status.success(), "profile-updater ({format}) exited with {status}");
            // Tombstones (erased customers) have no format.
            let written: Vec<Vec<u8>> = omnistream_testkit::read_committed_to_end(&topics.output)
                .iter()
                .filter_map(|m| rdkafka::Message::payload(m).map(<[u8]>::to_vec))
                .collect();
            let in_format = written.iter().filter(|value| confluent_schema_id(value).is_some()).count();
            anyhow::ensure!(
                (format == "confluent") == (in_format == written.len()) && !written.is_empty(),
                "profile-updater ({format}) wrote {in_format} of {} profiles in the Confluent format",
                written.len()
            );
            eprintln!("bench: profile-updater, {format} run {run}: {:.0} events/s", drain.events_per_second);
            samples.push(drain.events_per_second);
        }
    }
    let describe = |values: &[f64]| {
        let (median, min, max) = spread(values.to_vec());
        format!("{median:.0} ({min:.0}–{max:.0})")
    };
    let ratio = spread(confluent.clone()).0 / spread(single.clone()).0;
    Ok(vec![
        row(
            "profile-updater drain, single-object, events/s, median of 3 (min–max)",
            describe(&single),
            "",
            None,
        ),
        row(
            "profile-updater drain, Confluent format, events/s, median of 3 (min–max)",
            describe(&confluent),
            "",
            None,
        ),
        row("Confluent / single-object (medians)", format!("{ratio:.3}"), ">= 0.95", Some(ratio >= 0.95)),
    ])
}
