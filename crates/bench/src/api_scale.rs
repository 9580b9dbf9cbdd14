//! `make bench`, the customer-api at scale (issue 19): a million customers' derived records
//! preloaded on the topics (each customer's profile, suppression state, channel affinity, balance
//! and two ledger entries, cloned from records the services' folds wrote for a simulated input),
//! then, each measured three times: the catch-up of an empty store, the restart to ready after a
//! clean stop (resumed from the stored offsets), and lookups of random customers against the same
//! server's `/healthz`; with its peak memory and the store's bytes per customer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_model::RecordKind;
use omnistream_model::codec::{decode_value, encode_value};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_runtime::admin::TopicRequest;
use omnistream_suppression::{Rules, Suppression};
use omnistream_testkit::pipeline::{OutputsByKey, fold, simulated_input};
use omnistream_testkit::{ServiceProcess, create_test_topics, produce_all, unique_topic};

use crate::{Args, Row, binary, free_port, http, metric, mib, row, wait_ready};

/// One derived topic of the benchmark: its flag, its records' kind, records per customer.
struct ScaleTopic {
    flag: &'static str,
    kind: RecordKind,
    per_customer: usize,
    name: String,
}

fn scale_topics() -> Vec<ScaleTopic> {
    let topic = |flag, kind, per_customer, label: &str| ScaleTopic {
        flag,
        kind,
        per_customer,
        name: unique_topic(&format!("bench-scale-{label}")),
    };
    vec![
        topic("--profiles-topic", RecordKind::CustomerProfile, 1, "profiles"),
        topic("--suppressions-topic", RecordKind::SuppressionState, 1, "suppressions"),
        topic("--affinity-topic", RecordKind::ChannelAffinity, 1, "affinity"),
        topic("--balances-topic", RecordKind::LoyaltyBalance, 1, "balances"),
        topic("--ledger-topic", RecordKind::LoyaltyLedgerEntry, 2, "ledger"),
        topic("--identity-topic", RecordKind::CustomerIdentity, 0, "identity"),
        topic("--journey-states-topic", RecordKind::CustomerJourneyState, 0, "journeys"),
    ]
}

/// Records the folds wrote for a simulated input, by kind: the templates of the preload.
fn templates() -> Vec<(RecordKind, Vec<Value>)> {
    let input = simulated_input(40_000, 4_000, 19, 0.0);
    let mut outputs: OutputsByKey = fold(&ProfileUpdater, &["profiles"], &input).0;
    outputs.extend(fold(&Suppression::new(Rules::default()), &["suppressions"], &input).0);
    outputs.extend(fold(&ChannelAffinityProcessor::default(), &["affinity"], &input).0);
    outputs.extend(fold(&LoyaltyPoints::new(LoyaltyRules::default()), &["ledger", "balances"], &input).0);
    let kinds = [
        ("profiles", RecordKind::CustomerProfile),
        ("suppressions", RecordKind::SuppressionState),
        ("affinity", RecordKind::ChannelAffinity),
        ("balances", RecordKind::LoyaltyBalance),
        ("ledger", RecordKind::LoyaltyLedgerEntry),
    ];
    kinds
        .into_iter()
        .map(|(topic, kind)| {
            let values: Vec<Value> = outputs
                .iter()
                .filter(|((t, _), _)| t == topic)
                .flat_map(|(_, values)| values.iter().flatten())
                .map(|bytes| decode_value(kind, bytes).expect("the fold's records decode"))
                .collect();
            (kind, values)
        })
        .collect()
}

/// `template` as the record of `customer_id`.
fn for_customer(kind: RecordKind, template: &Value, customer_id: &str) -> Vec<u8> {
    let mut value = template.clone();
    if let Value::Record(fields) = &mut value {
        for (name, field) in fields.iter_mut() {
            if name == "customer_id" {
                *field = Value::String(customer_id.to_owned());
            }
        }
    }
    encode_value(kind, value).expect("a template with another id still fits its schema")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// "median (min–max)" of three or more runs.
fn spread(values: &mut [f64], format: impl Fn(f64) -> String) -> String {
    let m = median(values);
    format!("{} ({}–{})", format(m), format(values[0]), format(values[values.len() - 1]))
}

struct Server {
    process: ServiceProcess,
    port: u16,
}

fn start(topics: &[ScaleTopic], store_dir: &Path, label: &str) -> anyhow::Result<Server> {
    let port = free_port();
    let http_addr = format!("127.0.0.1:{port}");
    let dir = store_dir.to_string_lossy();
    let mut args = vec!["--http-addr", &http_addr, "--admin-addr", "127.0.0.1:0", "--store-dir", &dir];
    for topic in topics {
        args.extend([topic.flag, topic.name.as_str()]);
    }
    let process = ServiceProcess::spawn(&binary("customer-api")?, label, &args, &[("RUST_LOG", "info")]);
    Ok(Server { process, port })
}

fn stop(server: Server) -> anyhow::Result<()> {
    let status = server.process.terminate(Duration::from_secs(60));
    anyhow::ensure!(status.success(), "the customer-api exited with {status}");
    Ok(())
}

pub async fn api_scale_rows(args: &Args) -> anyhow::Result<Vec<Row>> {
    let customers = args.api_customers;
    let topics = scale_topics();
    let requests: Vec<TopicRequest> = topics
        .iter()
        .map(|topic| match topic.kind {
            RecordKind::LoyaltyLedgerEntry => TopicRequest::plain(&topic.name, args.partitions, 1),
            _ => TopicRequest::compacted(&topic.name, args.partitions, 1),
        })
        .collect();
    create_test_topics(&requests).await;

    eprintln!("bench: preloading the derived records of {customers} customers");
    let preload_started = Instant::now();
    let templates = templates();
    let mut records = 0usize;
    for topic in topics.iter().filter(|t| t.per_customer > 0) {
        let (kind, pool) = templates.iter().find(|(kind, _)| *kind == topic.kind).expect("a template");
        let per_customer = topic.per_customer;
        let generated = (0..customers as usize * per_customer).map(|n| {
            let id = format!("c-{:06}", n / per_customer);
            let bytes = for_customer(*kind, &pool[n % pool.len()], &id);
            (id, bytes)
        });
        produce_all(&topic.name, generated).await;
        records += customers as usize * per_customer;
    }
    eprintln!("bench: preloaded {records} records in {:.0}s", preload_started.elapsed().as_secs_f64());

    let base = std::env::temp_dir().join(format!("omnistream-bench-store-{}", std::process::id()));
    let store_dir = |run: usize| -> PathBuf { base.join(format!("run-{run}")) };
    let (mut catch_up_rss, mut restart_rss) = (0u64, 0u64);
    let (mut catch_up_rates, mut catch_up_seconds) = (Vec::new(), Vec::new());
    for run in 0..3 {
        let _ = std::fs::remove_dir_all(store_dir(run));
        let mut server = start(&topics, &store_dir(run), &format!("bench-scale-catch-up-{run}"))?;
        let ready = wait_ready(server.port, Duration::from_secs(1800))?;
        anyhow::ensure!(server.process.is_running(), "exited; see {}", server.process.log.display());
        catch_up_rss = catch_up_rss.max(server.process.peak_rss_bytes().unwrap_or(0));
        eprintln!("bench: caught up with {records} records in {:.1}s", ready.as_secs_f64());
        catch_up_rates.push(records as f64 / ready.as_secs_f64());
        catch_up_seconds.push(ready.as_secs_f64());
        stop(server)?;
        if run > 0 {
            let _ = std::fs::remove_dir_all(store_dir(run));
        }
    }
    let store_file = store_dir(0).join("customer-api.redb");
    let store_bytes = std::fs::metadata(&store_file)?.len();

    let mut restarts = Vec::new();
    let mut held = 0.0;
    for run in 0..3 {
        let server = start(&topics, &store_dir(0), &format!("bench-scale-restart-{run}"))?;
        let ready = wait_ready(server.port, Duration::from_secs(600))?;
        restarts.push(ready.as_secs_f64());
        for _ in 0..60 {
            held = metric(server.port, "omnistream_api_customers").unwrap_or(0.0);
            if held > 0.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("bench: restarted to ready in {:.2}s holding {held} customers", ready.as_secs_f64());
        restart_rss = restart_rss.max(server.process.peak_rss_bytes().unwrap_or(0));
        stop(server)?;
    }

    let mut server = start(&topics, &store_dir(0), "bench-scale-lookups")?;
    wait_ready(server.port, Duration::from_secs(600))?;
    let url = format!("http://127.0.0.1:{}", server.port);
    let (mut ceilings, mut lookups, mut ratios, mut p99s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut not_found = 0;
    for _ in 0..3 {
        let ceiling = http::wrk(&format!("{url}/healthz"), "", args.http_seconds, 16)?;
        let lookup = http::wrk(&url, &http::lookup_script(customers), args.http_seconds, 16)?;
        eprintln!(
            "bench: {:.0} lookups/s (ceiling {:.0}), p99 {:.2} ms",
            lookup.requests_per_second, ceiling.requests_per_second, lookup.p99_ms
        );
        ceilings.push(ceiling.requests_per_second);
        lookups.push(lookup.requests_per_second);
        ratios.push(lookup.requests_per_second / ceiling.requests_per_second);
        p99s.push(lookup.p99_ms);
        not_found += lookup.non_2xx;
    }
    anyhow::ensure!(server.process.is_running(), "exited; see {}", server.process.log.display());
    let lookup_rss = server.process.peak_rss_bytes().unwrap_or(0);
    stop(server)?;
    let peak_rss = catch_up_rss.max(restart_rss).max(lookup_rss);
    let _ = std::fs::remove_dir_all(&base);

    let p99_median = median(&mut p99s.clone());
    let restart_median = median(&mut restarts.clone());
    let rate_median = median(&mut catch_up_rates.clone());
    let label = |what: &str| format!("customer-api at {customers} customers, {what}");
    Ok(vec![
        row(&label("records preloaded"), records.to_string(), "", None),
        row(
            &label("catch-up of an empty store, records/s (3 runs)"),
            spread(&mut catch_up_rates, |v| format!("{v:.0}")),
            ">= 100000",
            Some(rate_median >= 100_000.0),
        ),
        row(&label("catch-up, seconds"), spread(&mut catch_up_seconds, |v| format!("{v:.1}")), "", None),
        row(
            &label("restart to ready after a clean stop, s (3 runs)"),
            spread(&mut restarts, |v| format!("{v:.2}")),
            "<= 5 s",
            Some(restart_median <= 5.0),
        ),
        row(&label("customers held after the restart"), format!("{held:.0}"), "", None),
        row(
            &label("store on disk, bytes per customer"),
            format!("{:.0} ({:.0} MiB)", store_bytes as f64 / f64::from(customers), mib(store_bytes)),
            "",
            None,
        ),
        row(
            &label("GET /healthz, requests/s (HTTP ceiling)"),
            spread(&mut ceilings, |v| format!("{v:.0}")),
            "",
            None,
        ),
        row(
            &label("GET /v1/customers/{id}, lookups/s (random customers, 16 connections)"),
            spread(&mut lookups, |v| format!("{v:.0}")),
            "",
            None,
        ),
        row(&label("lookups / HTTP ceiling"), spread(&mut ratios, |v| format!("{v:.2}")), "", None),
        row(
            &label("lookup p99, ms"),
            spread(&mut p99s, |v| format!("{v:.2}")),
            "<= 5 ms",
            Some(p99_median <= 5.0),
        ),
        row(&label("lookups answered 404"), not_found.to_string(), "0", Some(not_found == 0)),
        row(&label("peak RSS while catching up"), format!("{:.0} MiB", mib(catch_up_rss)), "", None),
        row(&label("peak RSS of a restart"), format!("{:.0} MiB", mib(restart_rss)), "", None),
        row(&label("peak RSS under lookups"), format!("{:.0} MiB", mib(lookup_rss)), "", None),
        row(
            &label("peak RSS, all of these"),
            format!("{:.0} MiB", mib(peak_rss)),
            "<= 150 MiB",
            Some(mib(peak_rss) <= 150.0),
        ),
    ])
}
