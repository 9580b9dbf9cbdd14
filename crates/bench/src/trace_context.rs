//! Trace context's cost (docs/operations.md, "Following one event"): profile-updater drains the
//! same events without trace headers, with them and no exporter (the headers are copied), and
//! with them and spans exported to the local Jaeger (`deploy/local/jaeger.sh`).

use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::{create_test_topics, jaeger_urls, producer, unique_topic};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;

use crate::drain_variants::{Variant, drain_variants};
use crate::{Args, Row, simulated};

/// Every profile written carries a `traceparent`, or none does, as `traced` says.
fn traced(traced: bool) -> impl Fn(&[OwnedMessage]) -> anyhow::Result<()> {
    move |written| {
        let carrying = written
            .iter()
            .filter(|message| {
                message.headers().is_some_and(|headers| headers.iter().any(|h| h.key == "traceparent"))
            })
            .count();
        anyhow::ensure!(
            !written.is_empty() && traced == (carrying == written.len()),
            "{carrying} of {} profiles carry a traceparent",
            written.len()
        );
        Ok(())
    }
}

pub async fn trace_context_rows(args: &Args, input: &str) -> anyhow::Result<Vec<Row>> {
    let (otlp, _) = jaeger_urls();
    let traced_input = unique_topic("bench-traced-input");
    create_test_topics(&[TopicRequest::events(&traced_input, args.partitions, 1)]).await;
    // The same events (the simulator's seed) as the plain input, each with its own trace.
    let producer = producer();
    let mut deliveries = Vec::new();
    for (index, (key, bytes)) in simulated(args.events, args.customers, 7, 1).into_iter().enumerate() {
        let traceparent = format!("00-{:032x}-{:016x}-01", index + 1, index + 1);
        let headers = OwnedHeaders::new_with_capacity(1)
            .insert(Header { key: "traceparent", value: Some(traceparent.as_str()) });
        let record = FutureRecord::to(&traced_input).key(&key).payload(&bytes).headers(headers);
        deliveries.push(producer.send_result(record).map_err(|(error, _)| error)?);
        if deliveries.len() >= 10_000 {
            for delivery in deliveries.drain(..) {
                delivery.await?.map_err(|(error, _)| error)?;
            }
        }
    }
    for delivery in deliveries {
        delivery.await?.map_err(|(error, _)| error)?;
    }
    let exporting = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), otlp.clone())];
    let mut variants = Vec::new();
    if let Some(dir) = &args.baseline_build {
        variants.push(Variant {
            name: "no trace context, baseline build",
            input,
            flags: Vec::new(),
            env: Vec::new(),
            binary_dir: Some(dir.as_path()),
            check: Box::new(traced(false)),
            min_ratio: None,
        });
    }
    variants.extend([
        Variant {
            name: "no trace context",
            input,
            flags: Vec::new(),
            env: Vec::new(),
            binary_dir: None,
            check: Box::new(traced(false)),
            // Against an earlier build: what trace support costs records without a context.
            min_ratio: args.baseline_build.as_ref().map(|_| 0.97),
        },
        Variant {
            name: "trace context, no exporter",
            input: &traced_input,
            flags: Vec::new(),
            env: Vec::new(),
            binary_dir: None,
            check: Box::new(traced(true)),
            min_ratio: Some(0.95),
        },
        Variant {
            name: "trace context, spans exported",
            input: &traced_input,
            flags: Vec::new(),
            env: exporting,
            binary_dir: None,
            check: Box::new(traced(true)),
            // Exporting a span per record is the price of turning it on: measured, no target.
            min_ratio: None,
        },
    ]);
    drain_variants(args, "trace", &variants).await
}
