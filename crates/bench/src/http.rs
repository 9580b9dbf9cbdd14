//! HTTP benchmarks with a real load generator (`wrk`): the ingest-gateway's events/s in batches
//! of 100 against producing the same events straight to Kafka, and the customer-api's lookups/s
//! against its own trivial `/healthz` on the same server.

use anyhow::{Context, bail};
use omnistream_sim::{SimConfig, SimRecord, Simulator};
use std::process::Command;

/// What `wrk --latency` reports.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub requests_per_second: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

/// Runs `wrk` for `seconds` against `url` with a Lua `script`.
pub fn wrk(url: &str, script: &str, seconds: u64, connections: u32) -> anyhow::Result<WrkResult> {
    let script_file = std::env::temp_dir().join(format!("omnistream-bench-{}.lua", std::process::id()));
    std::fs::write(&script_file, script)?;
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script_file)
        .arg(url)
        .output()
        .context("cannot run wrk (make bench installs it; or apt-get install wrk)")?;
    let _ = std::fs::remove_file(&script_file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&output.stderr));
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let value_after = |prefix: &str| -> Option<&str> {
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).and_then(|l| l.split_whitespace().last())
    };
    let percentile = |label: &str| -> Option<f64> {
        let line = text.lines().map(str::trim).find(|l| l.starts_with(label))?;
        duration_ms(line.split_whitespace().nth(1)?)
    };
    Some(WrkResult {
        requests_per_second: value_after("Requests/sec:")?.parse().ok()?,
        requests: text
            .lines()
            .map(str::trim)
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())?,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        non_2xx: value_after("Non-2xx or 3xx responses:").map_or(Some(0), |n| n.parse().ok())?,
    })
}

/// `812.00us`, `1.23ms`, `2.01s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

/// A request body of `events` valid simulated events, `{"events": [...]}`.
pub fn batch_body(events: usize, customers: u32) -> String {
    let config = SimConfig {
        customers,
        seed: 5,
        start: chrono::Utc::now() - chrono::Duration::hours(1),
        step: chrono::Duration::milliseconds(10),
        duplicate_share: 0.0,
        malformed_share: 0.0,
    };
    let lines: Vec<String> = Simulator::new(config)
        .filter_map(|record| match record {
            SimRecord::Event(_) => Some(record.to_json_line()),
            _ => None,
        })
        .take(events)
        .collect();
    format!(r#"{{"events": [{}]}}"#, lines.join(","))
}

/// A Lua script that posts `body` on every request.
pub fn post_script(body: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{body}]==]\n"
    )
}

/// A Lua script that looks up a random one of `customers` simulated customers per request.
pub fn lookup_script(customers: u32) -> String {
    format!(
        "math.randomseed(42)\nrequest = function()\n  return wrk.format(\"GET\", string.format(\"/v1/customers/c-%06d\", math.random(0, {})))\nend\n",
        customers.saturating_sub(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 10s test @ http://127.0.0.1:8080/v1/events
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  30.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    3.00ms
     90%    4.00ms
     99%    1.50s
  41234 requests in 10.00s, 5.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4123.40
Transfer/sec:    512.00KB
";
        let result = parse_wrk(text).unwrap();
        assert_eq!((result.requests_per_second, result.requests), (4123.4, 41234));
        assert_eq!((result.p50_ms, result.p99_ms, result.non_2xx), (0.812, 1500.0, 3));
    }

    #[test]
    fn a_batch_body_holds_valid_events() {
        let body = batch_body(100, 10);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let events = value["events"].as_array().unwrap();
        assert_eq!(events.len(), 100);
        for event in events {
            omnistream_model::event_from_json(event, chrono::Utc::now()).expect("valid");
        }
    }
}
