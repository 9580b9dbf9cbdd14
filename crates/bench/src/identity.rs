//! `make bench`, identity-resolver: its two stages draining a preloaded input on which 10 % of
//! the events carry a new link, against the pass-through baseline on the same input; the latency
//! from a send to the resolved event under a fixed load; the memory of its stages with every
//! customer of the input in their state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnistream_model::services::IDENTITY_STAGES;
use omnistream_model::{EventPayload, Identifier, decode_event, encode_event};
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::{RuntimeFlags, ServiceProcess, create_test_topics, produce_all, unique_topic};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use crate::{
    Answered, Answering, Args, Row, baseline_drain, binary, committed_sum, free_port, mib, offered_load, row,
    simulated, wait_ready, watermark_sum,
};

/// The simulator's events with identifiers the benchmark controls: every 10th event carries a
/// device id seen for the first time (a new link: a claim and an attach), every 100th also an
/// email that one other event (100 events later, usually another customer) carries too, so half
/// of those link two customers (a merge). Other identifiers are dropped, but an `identify` keeps
/// one: its customer's own cookie.
fn with_links(events: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, (key, bytes))| {
            let mut event = decode_event(&bytes).expect("simulated events decode");
            event.identifiers.clear();
            if index % 10 == 0 {
                event.identifiers.push(Identifier::new("device_id", format!("dev-{index}")));
            }
            if index % 100 == 0 {
                event
                    .identifiers
                    .push(Identifier::new("email", format!("shared-{}@bench.example", index / 200)));
            }
            if matches!(event.payload, EventPayload::Identify) && event.identifiers.is_empty() {
                let cookie = format!("cookie-{}", event.customer_id);
                event.identifiers.push(Identifier::new("anonymous_id", cookie));
            }
            (key, encode_event(&event).expect("encodes"))
        })
        .collect()
}

/// The resolver's topics and command lines.
struct Stages {
    /// The customer stage's group: the one that reads the producers' events.
    events_group: String,
    resolved: String,
    /// (stage name, arguments), in start order.
    commands: Vec<(&'static str, Vec<String>)>,
    admin_ports: Vec<u16>,
}

impl Stages {
    async fn create(args: &Args, input: &str, label: &str) -> Self {
        let topic = |name: &str| unique_topic(&format!("bench-idr-{label}-{name}"));
        let dlq = topic("dlq");
        let mut requests = vec![TopicRequest::plain(&dlq, args.partitions, 1)];
        let mut outputs: Vec<(&'static str, String)> = Vec::new();
        for output in IDENTITY_STAGES.iter().flat_map(|stage| stage.outputs) {
            if outputs.iter().all(|(role, _)| *role != output.role) {
                let name = topic(output.role);
                requests.push(TopicRequest::for_spec(output.topic, &name, args.partitions, 1));
                outputs.push((output.role, name));
            }
        }
        let mut commands = Vec::new();
        let mut events_group = String::new();
        let mut admin_ports = Vec::new();
        for stage in IDENTITY_STAGES {
            // `identity-claims` runs as `identity-resolver claims`.
            let subcommand = stage.name.trim_start_matches("identity-");
            let (changelog, group) =
                (topic(&format!("{subcommand}-state")), topic(&format!("{subcommand}-group")));
            requests.push(TopicRequest::compacted(&changelog, args.partitions, 1));
            let port = free_port();
            admin_ports.push(port);
            let admin_addr = format!("127.0.0.1:{port}");
            let flags = RuntimeFlags {
                input,
                dlq: &dlq,
                changelog: &changelog,
                group: &group,
                instance: "bench",
                admin_addr: &admin_addr,
                session_timeout_ms: None,
            };
            let mut command = vec![subcommand.to_owned()];
            command.extend(flags.args());
            for output in stage.outputs {
                let (_, name) = outputs.iter().find(|(role, _)| *role == output.role).expect("created");
                command.extend([output.flag.to_owned(), name.clone()]);
            }
            if subcommand == "customers" {
                events_group = group;
            }
            commands.push((stage.name, command));
        }
        create_test_topics(&requests).await;
        let resolved = outputs.into_iter().find(|(role, _)| *role == "resolved").expect("resolved").1;
        Self { events_group, resolved, commands, admin_ports }
    }

    /// Starts the stages and waits until each is ready.
    fn spawn(&self, label: &str) -> anyhow::Result<Vec<ServiceProcess>> {
        let binary = binary("identity-resolver")?;
        let processes: Vec<ServiceProcess> = self
            .commands
            .iter()
            .map(|(name, command)| {
                let command: Vec<&str> = command.iter().map(String::as_str).collect();
                ServiceProcess::spawn(
                    &binary,
                    &format!("bench-{label}-{name}"),
                    &command,
                    &[("RUST_LOG", "warn")],
                )
            })
            .collect();
        for port in &self.admin_ports {
            wait_ready(*port, Duration::from_secs(60))?;
        }
        Ok(processes)
    }
}

/// A drain of the stages: from the first resolved record to the last, once the customer stage
/// read the whole input and the resolved topic stopped growing (merges settled).
struct Resolution {
    events_per_second: f64,
    seconds: f64,
    /// Peak RSS of each stage, in start order.
    peak_rss: Vec<u64>,
    /// CPU seconds each stage used for the drain.
    cpu_seconds: Vec<f64>,
}

/// How long the resolved topic must stay still for the resolution to count as finished.
const SETTLED: Duration = Duration::from_secs(5);

fn time_resolution(
    args: &Args,
    stages: &Stages,
    processes: &mut [ServiceProcess],
    input: &str,
    input_end: i64,
    watermarks: &BaseConsumer,
) -> anyhow::Result<Resolution> {
    let started = Instant::now();
    let mut first_output: Option<Instant> = None;
    let (mut last_end, mut last_change) = (0, Instant::now());
    let mut peak_rss = vec![0; processes.len()];
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1_800),
            "identity-resolver did not finish; see {}",
            processes[0].log.display()
        );
        for (peak, process) in peak_rss.iter_mut().zip(processes.iter_mut()) {
            anyhow::ensure!(process.is_running(), "a stage exited; see {}", process.log.display());
            *peak = (*peak).max(process.peak_rss_bytes().unwrap_or(0));
        }
        let end = watermark_sum(watermarks, &stages.resolved, args.partitions);
        if end > 0 && first_output.is_none() {
            first_output = Some(Instant::now());
        }
        if end != last_end {
            (last_end, last_change) = (end, Instant::now());
        }
        if last_change.elapsed() >= SETTLED
            && committed_sum(&stages.events_group, input, args.partitions) >= input_end
        {
            let seconds = first_output
                .map(|first| last_change.duration_since(first))
                .unwrap_or_default()
                .as_secs_f64()
                .max(1e-3);
            let cpu_seconds = processes.iter().map(|p| p.cpu_seconds().unwrap_or(0.0)).collect();
            return Ok(Resolution {
                events_per_second: input_end as f64 / seconds,
                seconds,
                peak_rss,
                cpu_seconds,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub async fn resolver_rows(args: &Args, watermarks: &BaseConsumer) -> anyhow::Result<Vec<Row>> {
    let input = unique_topic("bench-idr-input");
    create_test_topics(&[TopicRequest::events(&input, args.partitions, 1)]).await;
    eprintln!("bench: preloading {} events with links for identity-resolver", args.events);
    produce_all(&input, with_links(simulated(args.events, args.customers, 17, 1))).await;
    let input_end = watermark_sum(watermarks, &input, args.partitions);

    let before = baseline_drain(args, &input, input_end, watermarks).await?;
    let stages = Stages::create(args, &input, "drain").await;
    let mut processes = stages.spawn("drain")?;
    let drain = time_resolution(args, &stages, &mut processes, &input, input_end, watermarks)?;
    eprintln!("bench: identity-resolver {:.0} events/s", drain.events_per_second);
    for process in processes {
        let status = process.terminate(Duration::from_secs(30));
        anyhow::ensure!(status.success(), "an identity stage exited with {status}");
    }
    let after = baseline_drain(args, &input, input_end, watermarks).await?;
    let baseline = (before.events_per_second + after.events_per_second) / 2.0;
    let ratio = drain.events_per_second / baseline;

    eprintln!("bench: offering {} events/s for {} s to identity-resolver", args.rate, args.load_seconds);
    let load_input = unique_topic("bench-idr-load-in");
    create_test_topics(&[TopicRequest::events(&load_input, args.partitions, 1)]).await;
    let load_stages = Stages::create(args, &load_input, "load").await;
    let load_processes = load_stages.spawn("load")?;
    let events = with_links(simulated(args.rate * args.load_seconds as usize, args.customers, 99, 0));
    let latency = offered_load(
        args,
        args.rate,
        args.load_seconds,
        &load_input,
        &load_stages.resolved,
        Answering { answered: Answered::Every, coalesced: None },
        events,
    )?;
    drop(load_processes);
    let merges = merge_latency(args).await?;

    let [claims, customers] = drain.peak_rss[..] else { anyhow::bail!("two stages") };
    let cpu: Vec<String> = drain.cpu_seconds.iter().map(|seconds| format!("{seconds:.1}")).collect();
    let per_100k = |bytes: u64| mib(bytes) * 100_000.0 / f64::from(args.customers);
    Ok(vec![
        row(
            "identity-resolver (2 stages, 10 % new links, 0.5 % merges), events/s",
            format!("{:.0} ({:.1} s)", drain.events_per_second, drain.seconds),
            "",
            None,
        ),
        row(
            "identity-resolver, CPU seconds of the drain, claims / customers (2 cores)",
            cpu.join(" / "),
            "",
            None,
        ),
        row(
            &format!(
                "identity-resolver / baseline on its input (mean of {:.0} before, {:.0} after)",
                before.events_per_second, after.events_per_second
            ),
            format!("{ratio:.2}"),
            ">= 0.70",
            Some(ratio >= 0.7),
        ),
        row(
            &format!("identity-resolver, send to resolved event p50 at {}/s", args.rate),
            format!("{:.1} ms", latency.p50_ms),
            "",
            None,
        ),
        row(
            &format!("identity-resolver, send to resolved event p99 at {}/s", args.rate),
            format!("{:.1} ms", latency.p99_ms),
            "",
            None,
        ),
        row(
            "identity-resolver, resolved events seen / offered",
            format!("{} / {}", latency.delivered, latency.offered),
            "all",
            Some(latency.delivered == latency.offered),
        ),
        row(
            &format!("identity-resolver, peak RSS claims / customers ({} customers)", args.customers),
            format!("{:.0} / {:.0} MiB", mib(claims), mib(customers)),
            "",
            None,
        ),
        row(
            "identity graph (claims + customers stages' peak RSS) per 100,000 customers",
            format!("{:.0} MiB", per_100k(claims + customers)),
            "",
            None,
        ),
        row(
            &format!("gateway to merged profile, p50 / p99 / max ({} merges)", merges.measured),
            format!("{:.0} / {:.0} / {:.0} ms", merges.p50_ms, merges.p99_ms, merges.max_ms),
            "",
            None,
        ),
    ])
}

/// Merges measured from the gateway to the merged profile.
struct MergeLatency {
    measured: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Merges to time, and how many are sent a second.
const MERGES: usize = 200;
const MERGES_PER_SECOND: u64 = 10;

/// The whole path of a merge: the ingest-gateway, the resolver and profile-updater (reading the
/// resolved events, with its handoff topic). Each of `MERGES` pairs is a customer `m-a-N` known by
/// an email and a customer `m-b-N` with one event of its own; then an event of `m-b-N` carries
/// that email (posted to the gateway: the clock starts). The profile is merged when `m-a-N`'s
/// holds all three events: its own, the linking one, and `m-b-N`'s, handed over by the merge.
async fn merge_latency(args: &Args) -> anyhow::Result<MergeLatency> {
    use omnistream_model::records::CustomerProfile;
    let input = unique_topic("bench-idr-merge-in");
    let (profiles, handoff, changelog, dlq, group) = (
        unique_topic("bench-idr-merge-profiles"),
        unique_topic("bench-idr-merge-handoff"),
        unique_topic("bench-idr-merge-profile-state"),
        unique_topic("bench-idr-merge-profile-dlq"),
        unique_topic("bench-idr-merge-profile-group"),
    );
    create_test_topics(&[
        TopicRequest::events(&input, args.partitions, 1),
        TopicRequest::plain(&profiles, args.partitions, 1),
        TopicRequest::events(&handoff, args.partitions, 1),
        TopicRequest::compacted(&changelog, args.partitions, 1),
        TopicRequest::plain(&dlq, args.partitions, 1),
    ])
    .await;
    let stages = Stages::create(args, &input, "merge").await;
    let _stages = stages.spawn("merge")?;
    let profile_port = free_port();
    let profile_admin = format!("127.0.0.1:{profile_port}");
    let flags = RuntimeFlags {
        input: &stages.resolved,
        dlq: &dlq,
        changelog: &changelog,
        group: &group,
        instance: "bench",
        admin_addr: &profile_admin,
        session_timeout_ms: None,
    };
    let mut profile_args = flags.args();
    profile_args.extend([
        "--profiles-topic".to_owned(),
        profiles.clone(),
        "--handoff-topic".to_owned(),
        handoff,
    ]);
    let profile_args: Vec<&str> = profile_args.iter().map(String::as_str).collect();
    let _updater = ServiceProcess::spawn(
        &binary("profile-updater")?,
        "bench-merge-profile-updater",
        &profile_args,
        &[("RUST_LOG", "warn")],
    );
    wait_ready(profile_port, Duration::from_secs(60))?;
    let gateway_port = free_port();
    let gateway_addr = format!("127.0.0.1:{gateway_port}");
    let _gateway = ServiceProcess::spawn(
        &binary("ingest-gateway")?,
        "bench-merge-gateway",
        &[
            "--events-topic",
            &input,
            "--http-addr",
            &gateway_addr,
            "--admin-addr",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    );
    wait_ready(gateway_port, Duration::from_secs(60))?;

    let event = |id: String, customer: String, identifiers: serde_json::Value| {
        serde_json::json!({
            "event_id": id, "customer_id": customer, "occurred_at": chrono::Utc::now().to_rfc3339(),
            "channel": "web", "type": "page_viewed", "properties": {"url": "/"}, "identifiers": identifiers,
        })
    };
    let email =
        |n: usize| serde_json::json!([{"type": "email", "value": format!("merge-{n}@bench.example")}]);
    for chunk in (0..MERGES).collect::<Vec<_>>().chunks(50) {
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .flat_map(|n| {
                [
                    event(format!("m-a-{n}-1"), format!("m-a-{n}"), email(*n)),
                    event(format!("m-b-{n}-1"), format!("m-b-{n}"), serde_json::json!([])),
                ]
            })
            .collect();
        post_events(gateway_port, &serde_json::json!({ "events": events }))?;
    }
    // Both customers of every pair are resolved before the links are sent.
    std::thread::sleep(Duration::from_secs(5));

    let reader: BaseConsumer = omnistream_testkit::client_config()
        .set("group.id", unique_topic("bench-merge-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    rdkafka::consumer::Consumer::subscribe(&reader, &[&profiles])?;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let reader_sent = sent_at.clone();
    let reading = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(MERGES);
        let started = Instant::now();
        while latencies.len() < MERGES && started.elapsed() < Duration::from_secs(120) {
            let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) else { continue };
            let seen = Instant::now();
            let Some(Ok(profile)) = message.payload().map(omnistream_model::decode_record::<CustomerProfile>)
            else {
                continue;
            };
            let events: i64 =
                profile.channels.iter().flat_map(|c| c.event_counts.iter().map(|(_, n)| *n)).sum();
            if events == 3
                && let Some(sent) = reader_sent.lock().expect("lock").remove(&profile.customer_id)
            {
                latencies.push(seen.duration_since(sent).as_secs_f64() * 1000.0);
            }
        }
        latencies
    });
    for n in 0..MERGES {
        let started = Instant::now();
        sent_at.lock().expect("lock").insert(format!("m-a-{n}"), Instant::now());
        let link = event(format!("m-b-{n}-2"), format!("m-b-{n}"), email(n));
        post_events(gateway_port, &serde_json::json!({ "events": [link] }))?;
        let pause = Duration::from_millis(1_000 / MERGES_PER_SECOND).saturating_sub(started.elapsed());
        std::thread::sleep(pause);
    }
    let mut latencies = reading.join().expect("reader thread");
    anyhow::ensure!(latencies.len() == MERGES, "{} of {MERGES} merged profiles seen", latencies.len());
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok(MergeLatency { measured: latencies.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) })
}

/// `POST /v1/events` on the gateway; every event must be accepted.
fn post_events(port: u16, body: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let answer: serde_json::Value = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_default();
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 200") && answer["rejected"] == 0 && answer["unavailable"] == 0,
        "the gateway refused: {response}"
    );
    Ok(())
}
