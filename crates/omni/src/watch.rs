//! `omni watch`: a live terminal view of a few customers through the customer-api, refreshed as
//! events arrive: profile, reachability, channel affinity and points.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The customer-api's base URL.
    #[arg(long, env = "CUSTOMER_API_URL", default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Customers to show, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "c-000000,c-000001,c-000002,c-000003,c-000004")]
    customers: Vec<String>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Stop after this many seconds; default: until interrupted.
    #[arg(long)]
    duration: Option<f64>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let base = args.api.trim_end_matches('/').to_owned();
    let started = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    loop {
        let mut frame = String::new();
        let _ = writeln!(frame, "omnistream — {} — {}", base, chrono::Utc::now().format("%H:%M:%S"));
        for customer in &args.customers {
            let document = get(&client, &format!("{base}/v1/customers/{customer}")).await;
            let reachability = get(&client, &format!("{base}/v1/customers/{customer}/reachability")).await;
            frame.push_str(&render(customer, document.as_ref(), reachability.as_ref()));
        }
        let mut stdout = std::io::stdout().lock();
        if terminal {
            write!(stdout, "\x1b[2J\x1b[H")?;
        }
        writeln!(stdout, "{frame}")?;
        stdout.flush()?;
        if args.duration.is_some_and(|limit| started.elapsed().as_secs_f64() >= limit) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.1))).await;
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Three lines per customer: who they are, where they may be messaged, their points.
fn render(customer: &str, document: Option<&Value>, reachability: Option<&Value>) -> String {
    let Some(document) = document else {
        return format!("{customer}: not known yet\n\n");
    };
    let profile = &document["profile"];
    let events: i64 = profile["channels"]
        .as_array()
        .map(|channels| {
            channels
                .iter()
                .filter_map(|c| c["event_counts"].as_object())
                .flat_map(|counts| counts.values().filter_map(Value::as_i64))
                .sum()
        })
        .unwrap_or(0);
    let lifetime_value = profile["lifetime_value_minor"]
        .as_object()
        .map(|values| {
            values
                .iter()
                .map(|(currency, minor)| format!("{currency} {}", minor.as_i64().unwrap_or(0)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .join(", ");
    let tickets: Vec<&str> = profile["open_tickets"]
        .as_array()
        .map(|tickets| tickets.iter().filter_map(|t| t["ticket_id"].as_str()).collect())
        .unwrap_or_default();
    let mut text = format!(
        "{customer}  events {events}  orders {} ({})  open tickets: {}\n",
        profile["orders_count"].as_i64().unwrap_or(0),
        if lifetime_value.is_empty() { "no spend".to_owned() } else { lifetime_value },
        if tickets.is_empty() { "none".to_owned() } else { tickets.join(", ") },
    );
    match reachability {
        Some(view) => {
            let allowed: Vec<&str> = view["allowed"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let others: Vec<String> = view["channels"]
                .as_array()
                .map(|channels| {
                    channels
                        .iter()
                        .filter(|c| c["status"] != "allowed")
                        .map(|c| {
                            let reasons: Vec<&str> = c["reasons"]
                                .as_array()
                                .map(|r| r.iter().filter_map(|r| r["code"].as_str()).collect())
                                .unwrap_or_default();
                            format!(
                                "{} {} ({})",
                                c["channel"].as_str().unwrap_or("?"),
                                c["status"].as_str().unwrap_or("?"),
                                reasons.join(", ")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "  marketing → {}{}",
                if allowed.is_empty() { "nowhere".to_owned() } else { allowed.join(" > ") },
                if others.is_empty() { String::new() } else { format!("   not now: {}", others.join("; ")) }
            );
        }
        None => text.push_str("  marketing → (no suppression state yet)\n"),
    }
    let balance = &document["loyalty"];
    if balance.is_null() {
        text.push_str("  points: none yet\n\n");
    } else {
        let _ = writeln!(
            text,
            "  points: {} active, {} pending, tier {}\n",
            balance["active"].as_i64().unwrap_or(0),
            balance["pending"].as_i64().unwrap_or(0),
            balance["tier"].as_str().unwrap_or("?")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_customer_renders_as_three_lines() {
        let document = json!({
            "customer_id": "c-1",
            "profile": {"channels": [{"event_counts": {"page_viewed": 3, "order_placed": 1}}],
                        "orders_count": 1, "lifetime_value_minor": {"EUR": 4200},
                        "open_tickets": [{"ticket_id": "T-77"}]},
            "loyalty": {"active": 0, "pending": 42, "tier": "base"}
        });
        let reachability = json!({"allowed": ["whatsapp", "sms"], "channels": [
            {"channel": "whatsapp", "status": "allowed", "reasons": []},
            {"channel": "email", "status": "blocked", "reasons": [{"code": "support_ticket_open"}]}]});
        let text = render("c-1", Some(&document), Some(&reachability));
        assert_eq!(
            text,
            "c-1  events 4  orders 1 (EUR 4200)  open tickets: T-77\n  marketing → whatsapp > sms   not now: email blocked (support_ticket_open)\n  points: 0 active, 42 pending, tier base\n\n"
        );
        assert_eq!(render("c-2", None, None), "c-2: not known yet\n\n");
    }
}
