//! `omni identity explain ID`: why an id is the customer it is, from the customer-api's
//! `/v1/customers/{id}/identity` (docs/identity.md): the canonical customer, each identifier and
//! the event that linked it, every merge with its evidence.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A customer id: a canonical one or one merged into it.
    id: String,
    /// The customer-api's base URL.
    #[arg(long, env = "CUSTOMER_API_URL", default_value = "http://127.0.0.1:8081")]
    api: String,
    /// Print the API's JSON document instead of the explanation.
    #[arg(long)]
    json: bool,
}

pub async fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let url = format!(
        "{}/v1/customers/{}/identity",
        args.api.trim_end_matches('/'),
        utf8_percent_encode(&args.id, NON_ALPHANUMERIC)
    );
    let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await.with_context(|| format!("GET {url}: reading the answer"))?;
    if status == StatusCode::NOT_FOUND {
        eprintln!("omni: no customer {:?} (the customer-api knows no record of it)", args.id);
        return Ok(ExitCode::from(1));
    }
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    if args.json {
        println!("{body}");
    } else {
        let document: Value = serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON"))?;
        print!("{}", render(&args.id, &document));
    }
    Ok(ExitCode::SUCCESS)
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("?")
}

/// The explanation, as plain text.
pub fn render(asked: &str, document: &Value) -> String {
    let canonical = text(document, "customer_id");
    let mut out = String::new();
    if asked != canonical {
        let _ = writeln!(out, "{asked} was merged into {canonical}: it answers as {canonical}.");
    }
    let identifiers = document["identifiers"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "customer {canonical}: {} identifiers besides its own id", identifiers.len());
    for identifier in &identifiers {
        let _ = writeln!(
            out,
            "  {:<14} {:<32} linked by event {} ({}, {})",
            text(identifier, "type"),
            text(identifier, "value"),
            text(identifier, "event_id"),
            text(identifier, "channel"),
            text(identifier, "occurred_at"),
        );
    }
    let merges = document["merges"].as_array().cloned().unwrap_or_default();
    if merges.is_empty() {
        let _ = writeln!(out, "no merges");
    } else {
        let _ = writeln!(out, "merges, oldest first:");
        for merge in &merges {
            let _ = writeln!(
                out,
                "  {} {} into {}: both held {} {} (event {}; merge {})",
                text(merge, "occurred_at"),
                text(merge, "merged_customer_id"),
                text(merge, "into_customer_id"),
                text(merge, "identifier_type"),
                text(merge, "identifier_value"),
                text(merge, "evidence_event_id"),
                text(merge, "merge_id"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    #[test]
    fn given_an_alias_then_the_explanation_names_its_customer_each_identifier_and_each_merge() {
        let document = json!({
            "customer_id": "U-1042",
            "identifiers": [{"type": "email", "value": "ann@example.com", "event_id": "e-2",
                             "occurred_at": "2026-11-27T10:05:00.000Z", "channel": "web"}],
            "aliases": ["anon-7f3a"],
            "merges": [{"merge_id": "0a1b", "merged_customer_id": "anon-7f3a", "into_customer_id": "U-1042",
                        "identifier_type": "anonymous_id", "identifier_value": "7f3a",
                        "evidence_event_id": "e-2", "occurred_at": "2026-11-27T10:05:00.000Z"}],
        });
        let text = render("anon-7f3a", &document);
        assert_eq!(
            text,
            "anon-7f3a was merged into U-1042: it answers as U-1042.\n\
             customer U-1042: 1 identifiers besides its own id\n  \
             email          ann@example.com                  linked by event e-2 (web, 2026-11-27T10:05:00.000Z)\n\
             merges, oldest first:\n  \
             2026-11-27T10:05:00.000Z anon-7f3a into U-1042: both held anonymous_id 7f3a (event e-2; merge 0a1b)\n"
        );
        assert!(render("U-1042", &json!({"customer_id": "U-1042"})).ends_with("no merges\n"));
    }
}
