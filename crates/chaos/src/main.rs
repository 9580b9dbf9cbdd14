//! `make chaos` (issue 20): the whole pipeline (gateway, the five stream processors, the customer
//! API) on a 3-node Kafka cluster, under a seeded schedule of faults while simulated customers'
//! events flow through the gateway and straight to Kafka. When the traffic stops and the faults
//! heal, every derived topic must be the executable SPEC's for the input as the broker holds it.
//! Prints a report (and writes it with `--report`); exits 1 on any divergence.

mod cluster;
mod faults;
mod proxy;
mod traffic;
mod verify;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use omnistream_testkit::stack::{JOURNEYS_LOOKUP_GRACE, Stack, StackOptions};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::faults::{Fault, Kind, LANES, World};
use crate::proxy::Proxy;

#[derive(Debug, Parser)]
#[command(about = "The pipeline on a 3-broker cluster under seeded faults, checked against the SPEC")]
struct Args {
    /// Seed of the fault schedule and of the simulated customers.
    #[arg(long, env = "CHAOS_SEED", default_value_t = 1)]
    seed: u64,
    /// Faults of every kind.
    #[arg(long, env = "CHAOS_FAULTS", default_value_t = 50)]
    faults_per_kind: usize,
    /// Events per second.
    #[arg(long, env = "CHAOS_RATE", default_value_t = 40)]
    rate: u32,
    #[arg(long, env = "CHAOS_CUSTOMERS", default_value_t = 1_000)]
    customers: u32,
    /// Where to write the report (Markdown) besides printing it.
    #[arg(long, env = "CHAOS_REPORT")]
    report: Option<PathBuf>,
    /// The cluster's home and node 3's disk image.
    #[arg(long, default_value = "target/chaos")]
    work_dir: PathBuf,
    /// How long the pipeline may take to settle after the faults before a divergence counts.
    #[arg(long, default_value_t = 300)]
    settle_seconds: u64,
    /// One fault at a time (one lane of every kind): each recovery time is that fault's alone.
    #[arg(long, env = "CHAOS_SEQUENTIAL")]
    sequential: bool,
    /// Stop injecting after this many minutes even if some kind has not reached its count (the
    /// report says so); the checks run as usual.
    #[arg(long, env = "CHAOS_MAX_MINUTES")]
    max_minutes: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The test kit's readers and the direct producer go to the cluster itself, not through the proxy.
    if std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().as_deref() != Some(Cluster::bootstrap().as_str()) {
        bail!("run with KAFKA_BOOTSTRAP_SERVERS={} (make chaos sets it)", Cluster::bootstrap());
    }
    let work_dir = omnistream_testkit::repo_root().join(&args.work_dir);
    std::fs::create_dir_all(&work_dir)?;
    eprintln!("chaos: starting the 3-node cluster in {}", work_dir.display());
    let cluster = Cluster::start(&work_dir)?;
    // Interrupted, the run's processes and the cluster stop as their owners drop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        outcome = run(&args, cluster) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    outcome.and_then(|divergence| match divergence {
        0 => Ok(()),
        n => bail!("{n} divergences"),
    })
}

async fn run(args: &Args, cluster: Cluster) -> anyhow::Result<usize> {
    let started = Instant::now();
    let commit = checkout();
    let proxy = Proxy::start(&Cluster::faulty_routes()).await?;
    let options = StackOptions {
        bootstrap: Some(Cluster::faulty_bootstrap()),
        replication_factor: Some(3),
        ..StackOptions::default()
    };
    // The processes' logs (target/test-logs/chaos-*.log) are this run's evidence.
    let logs = omnistream_testkit::repo_root().join("target/test-logs");
    for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("chaos-") {
            std::fs::remove_file(entry.path()).ok();
        }
    }
    let mut stack = Stack::start("chaos", options).await;
    // Two instances of each of the four older services from the start: a paused one's partitions
    // move to the other, so it comes back as a zombie that must be fenced.
    for name in faults::SCALED {
        stack.add_instance(name);
    }
    let topics = verify::Topics {
        events: stack.topics.events.clone(),
        dlq: stack.topics.dlq.clone(),
        profiles: stack.topics.output("profiles").to_owned(),
        suppressions: stack.topics.output("suppressions").to_owned(),
        affinity: stack.topics.output("affinity").to_owned(),
        ledger: stack.topics.output("ledger").to_owned(),
        balances: stack.topics.output("balances").to_owned(),
        actions: stack.topics.output("actions").to_owned(),
    };
    // A journey is live before the traffic: events appended the lookup grace after it is
    // published enter it.
    stack.publish_journeys(&[verify::JOURNEY]);
    tokio::time::sleep(JOURNEYS_LOOKUP_GRACE + Duration::from_secs(1)).await;
    let gateway = format!("http://127.0.0.1:{}", stack.gateway_port);
    let world = Arc::new(World {
        stack: Mutex::new(stack),
        cluster,
        proxy,
        events_topic: topics.events.clone(),
        client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        exits: Mutex::new(BTreeMap::new()),
        paused: Mutex::new(std::collections::BTreeSet::new()),
        nodes_held: std::sync::Mutex::new(BTreeMap::new()),
        node_exits: Mutex::new(BTreeMap::new()),
    });

    let stop_traffic = CancellationToken::new();
    let traffic = tokio::spawn(traffic::run(
        gateway,
        topics.events.clone(),
        Cluster::bootstrap(),
        args.seed,
        args.customers,
        args.rate,
        stop_traffic.clone(),
    ));
    let stop_supervisor = CancellationToken::new();
    let supervisor = tokio::spawn(faults::supervise(world.clone(), stop_supervisor.clone()));
    eprintln!("chaos: pipeline up after {:.0} s; faults begin", started.elapsed().as_secs_f64());
    let faults_started = Instant::now();
    let every_kind: Vec<Kind> = LANES.iter().flat_map(|(_, kinds)| kinds.iter().copied()).collect();
    let lanes: Vec<(&'static str, Vec<Kind>)> = match args.sequential {
        true => vec![("all", every_kind)],
        false => LANES.iter().map(|(name, kinds)| (*name, kinds.to_vec())).collect(),
    };
    let lane_names: Vec<String> = lanes
        .iter()
        .map(|(name, kinds)| {
            format!("{name}: {}", kinds.iter().map(Kind::to_string).collect::<Vec<_>>().join(", "))
        })
        .collect();
    let budget = args.max_minutes.map(|minutes| Instant::now() + Duration::from_secs(minutes * 60));
    let lanes: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(n, (name, kinds))| {
            let seed = args.seed * 100 + n as u64;
            tokio::spawn(faults::lane(world.clone(), name, kinds, args.faults_per_kind, seed, budget))
        })
        .collect();
    let mut faults: Vec<Fault> = Vec::new();
    for lane in lanes {
        faults.extend(lane.await.context("a fault lane")?);
    }
    let faulted_for = faults_started.elapsed();
    stop_traffic.cancel();
    let published = Arc::new(traffic.await.context("the traffic")?);
    eprintln!("chaos: faults done after {:.0} s; checking against the SPEC", faulted_for.as_secs_f64());

    // Settled (every check passes, or the deadline), the processes stop as in a deploy (SIGTERM);
    // a zombie's late write would land now: the checks run once more on what is then committed.
    let topics = Arc::new(topics);
    let settle = Duration::from_secs(args.settle_seconds);
    let (t, p) = (topics.clone(), published.clone());
    let settled = tokio::task::spawn_blocking(move || verify::verify(&t, &p, settle)).await?;
    stop_supervisor.cancel();
    supervisor.await?;
    let stops = stop_every_process(&world).await;
    let (t, p) = (topics.clone(), published.clone());
    let mut verdict = tokio::task::spawn_blocking(move || verify::verify(&t, &p, Duration::ZERO)).await?;
    verdict.settled_after = settled.settled_after;
    for fault in &faults {
        if fault.target.starts_with(faults::FAILED) {
            verdict.checks.entry("faults that could not be injected").or_default().push(fault.target.clone());
        } else if let Err(why) = &fault.recovery
            && fault.target != faults::UNAVAILABLE
        {
            verdict
                .checks
                .entry("faults not recovered from")
                .or_default()
                .push(format!("{}: {} ({why})", fault.kind, fault.target));
        }
    }
    let exits = world.exits.lock().await.clone();
    let node_exits = world.node_exits.lock().await.clone();
    let outcome = Outcome {
        lanes: &lane_names,
        faults: &faults,
        faulted_for,
        published: &published,
        verdict: &verdict,
        exits: &exits,
        node_exits: &node_exits,
        stops: &stops,
        commit: &commit,
    };
    let report = report(args, &outcome);
    println!("{report}");
    if let Some(path) = &args.report {
        std::fs::write(path, &report).with_context(|| format!("write {}", path.display()))?;
        eprintln!("chaos: report written to {}", path.display());
    }
    let divergence = verdict.divergence();
    // The processes stop before the cluster does.
    let world = Arc::into_inner(world).context("the world is still shared")?;
    drop(world.stack.into_inner());
    Ok(divergence)
}

/// Every JSON log record of this run's processes, with the log file's name.
fn log_records() -> Vec<(String, serde_json::Value)> {
    let logs = omnistream_testkit::repo_root().join("target/test-logs");
    let mut records = Vec::new();
    for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("chaos-") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            if let Ok(record) = serde_json::from_str::<serde_json::Value>(line) {
                records.push((name.clone(), record));
            }
        }
    }
    records
}

/// The service a process's log file belongs to: `chaos-profile-updater-7.1.log` (an added
/// instance, restarted once) is profile-updater's.
fn service_of(file: &str) -> &str {
    let name = file.trim_start_matches("chaos-").trim_end_matches(".log");
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
}

/// Why processes of this run stopped on their own, from their logs: per service, the error of
/// each `stopping on error` (its first words) and each exit of the stall watchdog (with the call
/// it found stuck), counted.
fn exit_reasons(records: &[(String, serde_json::Value)]) -> BTreeMap<String, u32> {
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for (file, record) in records {
        let reason = match record["message"].as_str() {
            Some("stopping on error") => record["error"].as_str().unwrap_or("?").to_owned(),
            Some(message) if message.contains("stuck in a Kafka call") => match record["call"].as_str() {
                Some(call) => format!("{message} ({call})"),
                None => message.to_owned(),
            },
            _ => continue,
        };
        let reason: String = reason.chars().take(140).collect();
        *reasons.entry(format!("{}: `{reason}`", service_of(file))).or_default() += 1;
    }
    reasons
}

/// The last `per_file` warnings and errors of each process's log, oldest first: what a run that
/// diverged leaves to read where its logs are gone (a CI machine's output).
fn last_warnings(records: &[(String, serde_json::Value)], per_file: usize) -> BTreeMap<&str, Vec<String>> {
    let mut warnings: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (file, record) in records {
        if !matches!(record["level"].as_str(), Some("WARN" | "ERROR")) {
            continue;
        }
        let field = |name: &str| record[name].as_str().unwrap_or_default();
        let time = field("timestamp").get(11..23).unwrap_or_default();
        let mut line = format!("{time} {} {}", field("level"), field("message"));
        if let Some(error) = record["error"].as_str() {
            line = format!("{line}: {error}");
        }
        let line: String = line.chars().take(200).collect();
        warnings.entry(file.trim_end_matches(".log")).or_default().push(line);
    }
    for lines in warnings.values_mut() {
        let skip = lines.len().saturating_sub(per_file);
        lines.drain(..skip);
    }
    warnings
}

/// Each restored partition whose offsets, read around its changelog, show a transaction the
/// brokers committed in part (docs/runtime.md, "Input positions in the changelog").
fn resumed_from_changelog(records: &[(String, serde_json::Value)]) -> Vec<String> {
    records
        .iter()
        .filter(|(_, record)| {
            record["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("a transaction the brokers committed in part"))
        })
        .map(|(file, record)| {
            let field = |name: &str| record[name].to_string().trim_matches('"').to_owned();
            format!(
                "{} {}: {} partition {}, {}: committed {} before, changelog {}, committed {} after",
                field("timestamp"),
                file.trim_end_matches(".log"),
                field("topic"),
                field("partition"),
                field("split"),
                field("committed_before"),
                field("changelog"),
                field("committed_after")
            )
        })
        .collect()
}

/// SIGTERM to every process of the pipeline, as a deploy does: (exit code or signal, count), and
/// how many did not stop within a minute (then killed).
async fn stop_every_process(world: &Arc<World>) -> BTreeMap<String, u32> {
    let processes: Vec<_> = {
        let mut stack = world.stack.lock().await;
        stack.running().into_iter().filter_map(|index| stack.detach_instance(index)).collect()
    };
    for process in &processes {
        process.send_sigterm();
    }
    tokio::task::spawn_blocking(move || {
        let mut stops: BTreeMap<String, u32> = BTreeMap::new();
        let started = Instant::now();
        for mut process in processes {
            while process.is_running() && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let outcome = match (process.is_running(), process.exit_code()) {
                (true, _) => "still running a minute after SIGTERM (killed)".to_owned(),
                (false, Some(code)) => format!("exit {code}"),
                (false, None) => "killed by a signal".to_owned(),
            };
            *stops.entry(outcome).or_default() += 1;
        }
        stops
    })
    .await
    .unwrap_or_default()
}

fn seconds(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// What a run did, for its report.
struct Outcome<'a> {
    lanes: &'a [String],
    faults: &'a [Fault],
    faulted_for: Duration,
    published: &'a traffic::Published,
    verdict: &'a verify::Verdict,
    /// Processes that exited by themselves, by name.
    exits: &'a BTreeMap<&'static str, u32>,
    /// Broker nodes started again after they stopped by themselves, by node and last error.
    node_exits: &'a BTreeMap<String, u32>,
    /// How the processes ended at the final SIGTERM.
    stops: &'a BTreeMap<String, u32>,
    /// The checkout the run started from (`-dirty`: with uncommitted changes); the processes run
    /// the binaries built then.
    commit: &'a str,
}

/// `git describe --always --dirty` of the checkout, now.
fn checkout() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn report(args: &Args, outcome: &Outcome<'_>) -> String {
    let Outcome { lanes, faults, faulted_for, published, verdict, exits, node_exits, stops, .. } = *outcome;
    let mut out = String::new();
    let commit = outcome.commit;
    let _ = writeln!(
        out,
        "# make chaos, {} (started from {commit})\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(
        out,
        "`omnistream-chaos --seed {} --faults-per-kind {} --rate {} --customers {}{}{}`: 3 Kafka 4.1 nodes \
         (each broker and controller, RF 3, min ISR 2), the gateway, the five stream processors (the \
         four older ones with two instances each), the customer API; services reach the brokers \
         through the fault proxy. Faults ran for {} s in {} lane(s) side by side ({}).\n",
        args.seed,
        args.faults_per_kind,
        args.rate,
        args.customers,
        if args.sequential { " --sequential" } else { "" },
        args.max_minutes.map_or(String::new(), |m| format!(" --max-minutes {m}")),
        seconds(faulted_for),
        lanes.len(),
        lanes.join("; ")
    );
    let _ = writeln!(out, "## Faults\n");
    let _ = writeln!(
        out,
        "Recovery: from the heal (restart, SIGCONT, link cleared, disk freed) until the cluster's \
         replicas are in sync again (broker faults) and an order published through the gateway for a \
         new customer shows in the customer API, applied by all four older services. Faults of \
         other lanes overlap.\n"
    );
    let _ = writeln!(
        out,
        "| kind | what | injected | failed to inject | held (median / max s) | recovery median s | recovery max s | not recovered |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let mut kinds: Vec<Kind> = faults.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let of: Vec<&Fault> = faults.iter().filter(|f| f.kind == kind).collect();
        let mut held: Vec<Duration> = of.iter().map(|f| f.held).collect();
        let mut recovered: Vec<Duration> =
            of.iter().filter_map(|f| f.recovery.as_ref().ok().copied()).collect();
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} / {} | {} | {} | {} |",
            kind.describe(),
            of.len(),
            of.iter().filter(|f| f.target.starts_with("failed") || f.target == faults::UNAVAILABLE).count(),
            seconds(median(&mut held)),
            seconds(held.last().copied().unwrap_or_default()),
            seconds(median(&mut recovered)),
            seconds(recovered.last().copied().unwrap_or_default()),
            of.len() - recovered.len()
        );
    }
    let short: Vec<String> = LANES
        .iter()
        .flat_map(|(_, kinds)| kinds.iter())
        .map(|kind| (kind, faults.iter().filter(|f| f.kind == *kind).count()))
        .filter(|(_, n)| *n < args.faults_per_kind)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    if !short.is_empty() {
        let _ = writeln!(
            out,
            "\n**Fewer than {} faults** of: {} (the time budget, `--max-minutes`, ran out first).",
            args.faults_per_kind,
            short.join(", ")
        );
    }
    let failed: Vec<&Fault> =
        faults.iter().filter(|f| f.target.starts_with("failed") || f.target == faults::UNAVAILABLE).collect();
    for fault in failed.iter().take(10) {
        let _ = writeln!(out, "\n- {}: {}", fault.kind, fault.target);
    }
    let restarts: Vec<String> = exits.iter().map(|(name, n)| format!("{name} {n}")).collect();
    let records = log_records();
    let reasons: Vec<String> =
        exit_reasons(&records).iter().map(|(reason, n)| format!("{n} × {reason}")).collect();
    let resumed = resumed_from_changelog(&records);
    let _ = writeln!(
        out,
        "\nProcesses that exited by themselves (fatal errors, non-zero exit) and broker nodes that \
         stopped outside a fault, each restarted by the harness as an orchestrator would: {}.\n",
        if restarts.is_empty() { "none".to_owned() } else { restarts.join(", ") }
    );
    if !reasons.is_empty() {
        let _ = writeln!(out, "Why, from their logs (`stopping on error` and the stall watchdog):\n");
        for reason in &reasons {
            let _ = writeln!(out, "- {reason}");
        }
        let _ = writeln!(out);
    }
    if !node_exits.is_empty() {
        let _ = writeln!(
            out,
            "Broker nodes that stopped outside a fault, with the last error each logged since it \
             started (Kafka's reason when it stopped itself; a kill logs none):\n"
        );
        for (reason, n) in node_exits {
            let _ = writeln!(out, "- {n} × {reason}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "Restored partitions that found a transaction the brokers committed in part (offsets read \
         around the changelog disagreeing with its position; resumed from the position, \
         docs/runtime.md): {}.\n",
        resumed.len()
    );
    for line in resumed.iter().take(20) {
        let _ = writeln!(out, "- {line}");
    }
    if !resumed.is_empty() {
        let _ = writeln!(out);
    }
    let stopped: Vec<String> = stops.iter().map(|(outcome, n)| format!("{n}: {outcome}")).collect();
    let _ = writeln!(
        out,
        "At the end every process got SIGTERM, as in a deploy ({}), and the checks ran once more on \
         what was then committed.\n",
        stopped.join("; ")
    );
    let _ = writeln!(out, "## Traffic\n");
    let _ = writeln!(
        out,
        "- {} events generated ({} customers; 1 % are producer retries of the event before)\n\
         - straight to Kafka (idempotent producer, the gateway's partitioner): {} acknowledged, {} \
         re-sent after a delivery error\n\
         - through the gateway: {} `accepted` in {} requests, {} sent again after no answer or \
         `unavailable`, {} rejected\n\
         - given up after 10 minutes of failures: {}\n\
         - the events topic holds {} records of {} customers (the probes' included; retries and \
         re-sends are there as often as they were stored: the services drop them by `event_id`, and \
         so does the SPEC)\n",
        published.generated.len(),
        args.customers,
        published.direct.len(),
        published.direct_resends,
        published.accepted.len(),
        published.gateway_requests,
        published.gateway_retries,
        published.gateway_rejected,
        published.abandoned,
        verdict.input_records,
        verdict.customers
    );
    let _ = writeln!(out, "## Against the SPEC\n");
    let _ = writeln!(
        out,
        "Every customer's records recomputed by `crates/spec` from the events topic as the brokers hold \
         it (append times included); settled {} s after the traffic stopped (the first check that \
         passed, or the deadline). Journeys: one journey published before the traffic (a first \
         order's thank-you email, then a cross-sell on the best messaging channel), its decisions \
         checked against the SPEC's journeys model for every customer without an erasure.\n",
        seconds(verdict.settled_after)
    );
    let _ = writeln!(out, "| check | divergences |");
    let _ = writeln!(out, "|---|---:|");
    for check in
        verify::CHECKS.iter().chain(&["faults not recovered from", "faults that could not be injected"])
    {
        let found = verdict.checks.get(check).map_or(0, Vec::len);
        let _ = writeln!(out, "| {check} | {found} |");
    }
    let _ = writeln!(out, "\n**Divergence: {}**", verdict.divergence());
    for (check, failures) in &verdict.checks {
        for failure in failures.iter().take(5) {
            let _ = writeln!(out, "- {check}: {failure}");
        }
    }
    if verdict.divergence() > 0 {
        let _ = writeln!(out, "\n## Each process's last warnings\n");
        for (process, lines) in last_warnings(&records, 4) {
            let _ = writeln!(out, "{process}:");
            for line in lines {
                let _ = writeln!(out, "- {line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_file_belongs_to_its_service_whatever_its_instance_and_restart() {
        assert_eq!(service_of("chaos-profile-updater.log"), "profile-updater");
        assert_eq!(service_of("chaos-profile-updater-7.1.log"), "profile-updater");
        assert_eq!(service_of("chaos-ingest-gateway.1.log"), "ingest-gateway");
        assert_eq!(service_of("chaos-suppression-12.log"), "suppression");
    }

    #[test]
    fn exits_are_counted_per_service_and_a_stuck_call_is_named() {
        let record = |file: &str, json: serde_json::Value| (file.to_owned(), json);
        let records = [
            record(
                "chaos-loyalty-points-10.log",
                serde_json::json!({"message": "stopping on error", "error": "fenced"}),
            ),
            record(
                "chaos-loyalty-points.log",
                serde_json::json!({"message": "stopping on error", "error": "fenced"}),
            ),
            record(
                "chaos-profile-updater.log",
                serde_json::json!({"message": "the processing loop is stuck in a Kafka call past its timeout", "call": "commit_transaction"}),
            ),
            record("chaos-profile-updater.log", serde_json::json!({"message": "committed"})),
        ];
        let reasons = exit_reasons(&records);
        assert_eq!(reasons.get("loyalty-points: `fenced`"), Some(&2));
        assert_eq!(
            reasons.get("profile-updater: `the processing loop is stuck in a Kafka call past its timeout (commit_transaction)`"),
            Some(&1)
        );
        assert_eq!(reasons.len(), 2);
    }

    #[test]
    fn only_the_last_warnings_of_each_process_are_kept_oldest_first() {
        let warning = |n: u32| {
            (
                "chaos-suppression.log".to_owned(),
                serde_json::json!({"timestamp": format!("2026-12-08T00:36:0{n}.000000Z"), "level": "WARN", "message": format!("w{n}"), "error": "e"}),
            )
        };
        let mut records: Vec<_> = (1..=5).map(warning).collect();
        records
            .push(("chaos-suppression.log".to_owned(), serde_json::json!({"level": "INFO", "message": "i"})));
        let kept = last_warnings(&records, 2);
        assert_eq!(kept["chaos-suppression"], ["00:36:04.000 WARN w4: e", "00:36:05.000 WARN w5: e"]);
    }
}
