//! profile-updater drains the same events in several variants (an input topic, flags,
//! environment and build each), three times each, alternating (every other round reversed) so the
//! machine's noise and drift fall on all of them;
//! each variant's outputs are checked, and the medians compared with the first variant's.

use std::time::Duration;

use omnistream_testkit::free_port;
use rdkafka::message::OwnedMessage;

use crate::{
    Args, BenchService, Row, bench_services, bench_topics, committed_sum, row, spawn_service_with,
    time_drain, written_per_event,
};

const RUNS: usize = 3;

/// Checks what a run wrote to the output topic (`Err` names what is wrong).
pub type OutputCheck<'a> = Box<dyn Fn(&[OwnedMessage]) -> anyhow::Result<()> + 'a>;

/// One way of running the drain.
pub struct Variant<'a> {
    pub name: &'static str,
    pub input: &'a str,
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Another build's binaries (`--baseline-build`); default: this build's.
    pub binary_dir: Option<&'a std::path::Path>,
    pub check: OutputCheck<'a>,
    /// The least ratio of its median to the first variant's that meets the target (none: shown).
    pub min_ratio: Option<f64>,
}

/// Median, min and max.
pub(crate) fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

/// Runs every variant `RUNS` times; a row per variant (events/s, median and range) and a row per
/// later variant with its ratio to the first, against its `min_ratio`.
pub async fn drain_variants(args: &Args, label: &str, variants: &[Variant<'_>]) -> anyhow::Result<Vec<Row>> {
    let service: BenchService = bench_services()
        .into_iter()
        .find(|service| service.name == omnistream_model::services::PROFILE_UPDATER.name)
        .expect("profile-updater is benchmarked");
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut bytes_per_event: Vec<Option<f64>> = vec![None; variants.len()];
    let watermarks: rdkafka::consumer::BaseConsumer = omnistream_testkit::client_config().create()?;
    for run in 0..RUNS {
        // Every other round in reverse order, so that no variant always runs first or last.
        let mut order: Vec<(&Variant<'_>, &mut Vec<f64>, &mut Option<f64>)> = variants
            .iter()
            .zip(&mut samples)
            .zip(&mut bytes_per_event)
            .map(|((variant, samples), bytes)| (variant, samples, bytes))
            .collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for (variant, samples, bytes) in order {
            let name = variant.name;
            // Topic names take no spaces.
            let slug: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            let topics =
                bench_topics(&format!("{label}-{slug}-{run}"), variant.input, args.partitions, service).await;
            let port = free_port();
            let env: Vec<(&str, &str)> = variant.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut process = spawn_service_with(
                service,
                &topics,
                &format!("bench-{label}-{slug}-{run}"),
                port,
                &variant.flags,
                &env,
                variant.binary_dir,
            )?;
            let input_end = omnistream_testkit::end_offsets(variant.input);
            let drain = time_drain(
                &mut process,
                || committed_sum(&topics.group, variant.input, args.partitions),
                input_end,
                Duration::from_secs(900),
            )?
            .timed_by_appends(&topics.output, input_end)?;
            let status = process.terminate(Duration::from_secs(30));
            anyhow::ensure!(status.success(), "profile-updater ({name}) exited with {status}");
            (variant.check)(&omnistream_testkit::read_committed_to_end(&topics.output))
                .map_err(|problem| anyhow::anyhow!("profile-updater ({name}): {problem}"))?;
            *bytes = written_per_event(&topics, &watermarks, args.partitions, input_end).1;
            eprintln!("bench: profile-updater, {name} run {run}: {:.0} events/s", drain.events_per_second);
            samples.push(drain.events_per_second);
        }
    }
    let mut rows = Vec::new();
    for (variant, values) in variants.iter().zip(&samples) {
        let (median, min, max) = spread(values.clone());
        rows.push(row(
            &format!("profile-updater drain, {}, events/s, median of {RUNS} (min–max)", variant.name),
            format!("{median:.0} ({min:.0}–{max:.0})"),
            "",
            None,
        ));
    }
    for (variant, bytes) in variants.iter().zip(&bytes_per_event) {
        if let Some(bytes) = bytes {
            rows.push(row(
                &format!(
                    "profile-updater, {}, bytes of broker log written per input event (outputs, changelog, DLQ; last run)",
                    variant.name
                ),
                format!("{bytes:.0}"),
                "",
                None,
            ));
        }
    }
    let baseline = spread(samples[0].clone()).0;
    for (variant, values) in variants.iter().zip(&samples).skip(1) {
        let ratio = spread(values.clone()).0 / baseline;
        rows.push(row(
            &format!("{} / {} (medians)", variant.name, variants[0].name),
            format!("{ratio:.3}"),
            &variant.min_ratio.map(|min| format!(">= {min}")).unwrap_or_default(),
            variant.min_ratio.map(|min| ratio >= min),
        ));
    }
    Ok(rows)
}
