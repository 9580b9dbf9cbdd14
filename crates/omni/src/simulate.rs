//! `omni simulate`: deterministic omnichannel journeys to Kafka or to a JSON-lines file.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use omnistream_model::topics::EVENTS;
use omnistream_runtime::KafkaArgs;
use omnistream_sim::{SimConfig, Simulator};

use crate::http::GatewayClient;
use crate::publisher::Publisher;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Number of distinct customers.
    #[arg(long, default_value_t = 1_000)]
    customers: u32,
    /// Records per second; 0 publishes as fast as Kafka takes them.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to run, in seconds (with --rate > 0).
    #[arg(long, conflicts_with = "events")]
    duration: Option<f64>,
    /// How many records to emit.
    #[arg(long)]
    events: Option<u64>,
    /// Random seed: the same seed and --start give the same records (event ids included, so a
    /// rerun with the same seed is all retries). Default: new every run, printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Event time of the first record (RFC 3339); default now.
    #[arg(long)]
    start: Option<DateTime<Utc>>,
    /// Event time between records, in milliseconds; default 1000/rate (10 when --rate 0).
    #[arg(long)]
    step_ms: Option<i64>,
    /// Share of records that are producer retries of the previous event (same event_id).
    #[arg(long, default_value_t = 0.01)]
    duplicates: f64,
    /// Share of records that are malformed (garbage bytes, invalid values, unknown types).
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Topic to publish to.
    #[arg(long, env = "EVENTS_TOPIC", default_value = EVENTS)]
    topic: String,
    /// Write JSON lines to this file (`-` = standard output) instead of publishing to Kafka.
    #[arg(long, conflicts_with = "gateway")]
    output: Option<std::path::PathBuf>,
    /// Publish through the ingest-gateway at this URL (e.g. http://127.0.0.1:8080) instead of
    /// straight to Kafka.
    #[arg(long)]
    gateway: Option<String>,
    /// Bearer API key for --gateway.
    #[arg(long, env = "GATEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Events per request with --gateway.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

enum Sink {
    Kafka(Publisher),
    Gateway(GatewayClient),
    Lines(Box<dyn Write>),
}

pub async fn run(kafka: &KafkaArgs, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rate >= 0.0, "--rate must not be negative");
    let limit = match (args.events, args.duration) {
        (Some(events), _) => events,
        (None, Some(seconds)) if args.rate > 0.0 => (seconds * args.rate).round() as u64,
        (None, Some(_)) => anyhow::bail!("--duration needs a --rate above 0; use --events"),
        (None, None) => u64::MAX,
    };
    let step_ms =
        args.step_ms.unwrap_or(if args.rate > 0.0 { (1000.0 / args.rate).max(1.0) as i64 } else { 10 });
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        nanos as u64
    });
    eprintln!("simulating {} customers with --seed {seed}", args.customers);
    let simulator = Simulator::new(SimConfig {
        customers: args.customers,
        seed,
        start: args.start.unwrap_or_else(Utc::now),
        step: chrono::Duration::milliseconds(step_ms),
        duplicate_share: args.duplicates,
        malformed_share: args.malformed,
    });
    let mut sink = match (&args.output, &args.gateway) {
        (None, Some(url)) => Sink::Gateway(GatewayClient::new(url, args.api_key.clone(), args.batch)?),
        (None, None) => Sink::Kafka(Publisher::new(kafka, &args.topic)?),
        (Some(path), _) if path.as_os_str() == "-" => {
            Sink::Lines(Box::new(std::io::BufWriter::new(std::io::stdout())))
        }
        (Some(path), _) => Sink::Lines(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ))),
    };
    let started = Instant::now();
    let mut last_report = started;
    let mut emitted = 0u64;
    for record in simulator.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(emitted as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        match &mut sink {
            Sink::Kafka(publisher) => publisher.send(record.customer_id(), &record.to_avro_bytes()?).await?,
            Sink::Gateway(client) => client.send(record.to_json_line()).await?,
            Sink::Lines(writer) => writeln!(writer, "{}", record.to_json_line())?,
        }
        emitted += 1;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let rate = emitted as f64 / started.elapsed().as_secs_f64();
            eprintln!("simulated {emitted} records ({rate:.0}/s)");
        }
    }
    match sink {
        Sink::Kafka(publisher) => {
            let delivered = publisher.finish().await?;
            eprintln!(
                "published {delivered} records to {} in {:.1}s",
                args.topic,
                started.elapsed().as_secs_f64()
            );
        }
        Sink::Gateway(mut client) => {
            client.flush().await?;
            let counts = client.counts;
            eprintln!(
                "the gateway accepted {} and rejected {} events in {:.1}s ({} retries)",
                counts.accepted,
                counts.rejected,
                started.elapsed().as_secs_f64(),
                counts.retries
            );
        }
        Sink::Lines(mut writer) => writer.flush()?,
    }
    Ok(ExitCode::SUCCESS)
}
