//! The Confluent wire format's cost (docs/schema-registry.md): profile-updater drains the same
//! events written in single-object encoding and in the Confluent format (its outputs too, through
//! the local registry).

use omnistream_model::{RecordKind, confluent_schema_id, to_confluent};
use omnistream_runtime::admin::TopicRequest;
use omnistream_schema_registry::{SchemaRegistryArgs, WireFormatArgs};
use omnistream_testkit::{create_test_topics, produce_all, registry_url, unique_topic};
use rdkafka::message::{Message, OwnedMessage};

use crate::drain_variants::{Variant, drain_variants};
use crate::{Args, Row, simulated};

/// How many of the profiles written (tombstones, for erased customers, have no format) are in
/// the Confluent format: all of them or none, as `confluent` says.
fn formats(confluent: bool) -> impl Fn(&[OwnedMessage]) -> anyhow::Result<()> {
    move |written| {
        let values: Vec<&[u8]> = written.iter().filter_map(Message::payload).collect();
        let in_format = values.iter().filter(|value| confluent_schema_id(value).is_some()).count();
        anyhow::ensure!(
            !values.is_empty() && confluent == (in_format == values.len()),
            "{in_format} of {} profiles in the Confluent format",
            values.len()
        );
        Ok(())
    }
}

pub async fn wire_format_rows(args: &Args, input: &str) -> anyhow::Result<Vec<Row>> {
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
    let variants = [
        Variant {
            name: "single-object",
            input,
            flags: Vec::new(),
            env: Vec::new(),
            binary_dir: None,
            check: Box::new(formats(false)),
            min_ratio: None,
        },
        Variant {
            name: "Confluent format",
            input: &confluent_input,
            flags: ["--schema-registry-url", &registry, "--wire-format", "confluent"]
                .map(str::to_owned)
                .to_vec(),
            env: Vec::new(),
            binary_dir: None,
            check: Box::new(formats(true)),
            min_ratio: Some(0.95),
        },
    ];
    drain_variants(args, "wire", &variants).await
}
