//! Publishing through the ingest-gateway over HTTP (`omni simulate --gateway`), as a web page or a
//! store till would: batches of JSON events, retried with the same event ids when the gateway
//! answers 503 or 429.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::Value;

/// How long one batch may keep failing before the command gives up.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Counts of what the gateway said.
#[derive(Debug, Default, Clone, Copy)]
pub struct GatewayCounts {
    pub accepted: u64,
    pub rejected: u64,
    pub retries: u64,
}

/// What one request carries.
#[derive(Debug)]
enum Body {
    Events(Vec<Value>),
    /// A line that is not JSON, sent as it is.
    Raw(String),
}

/// The events of a batch the gateway answered `unavailable` for, in order.
fn unavailable_events(events: &[Value], answer: &Value) -> Vec<Value> {
    answer["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter(|r| r["status"] == "unavailable")
                .filter_map(|r| events.get(usize::try_from(r["index"].as_u64()?).ok()?).cloned())
                .collect()
        })
        .unwrap_or_else(|| events.to_vec())
}

#[derive(Debug)]
pub struct GatewayClient {
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
    batch: Vec<Value>,
    batch_size: usize,
    pub counts: GatewayCounts,
}

impl GatewayClient {
    pub fn new(base_url: &str, api_key: Option<String>, batch_size: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self {
            client,
            url: format!("{}/v1/events", base_url.trim_end_matches('/')),
            api_key,
            batch: Vec::with_capacity(batch_size),
            batch_size: batch_size.max(1),
            counts: GatewayCounts::default(),
        })
    }

    /// Adds one JSON line to the batch (posting it when full). A line that is not JSON at all is
    /// posted on its own, as a broken producer would, and counted as rejected.
    pub async fn send(&mut self, line: String) -> anyhow::Result<()> {
        match serde_json::from_str::<Value>(&line) {
            Ok(event) => {
                self.batch.push(event);
                if self.batch.len() >= self.batch_size {
                    self.flush().await?;
                }
            }
            Err(_) => {
                self.post(Body::Raw(line)).await?;
            }
        }
        Ok(())
    }

    /// Posts what is batched.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.batch);
        self.post(Body::Events(events)).await
    }

    /// Posts until the gateway has taken every event: after a 503 only the events it reports
    /// `unavailable` go again (the others are in Kafka); after no answer at all, every event.
    async fn post(&mut self, mut body: Body) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let payload = match &body {
                Body::Events(events) => serde_json::json!({ "events": events }).to_string(),
                Body::Raw(text) => text.clone(),
            };
            let mut request =
                self.client.post(&self.url).header("content-type", "application/json").body(payload);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let wait = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map_or(Duration::from_millis(500), Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    match status {
                        StatusCode::OK | StatusCode::MULTI_STATUS | StatusCode::UNPROCESSABLE_ENTITY => {
                            let answer: Value = serde_json::from_str(&text).context("gateway answer")?;
                            self.counts.accepted += answer["accepted"].as_u64().unwrap_or(0);
                            self.counts.rejected += answer["rejected"].as_u64().unwrap_or(0);
                            return Ok(());
                        }
                        StatusCode::BAD_REQUEST => {
                            self.counts.rejected += 1;
                            return Ok(());
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            if let (Body::Events(events), Ok(answer)) =
                                (&mut body, serde_json::from_str::<Value>(&text))
                            {
                                self.counts.accepted += answer["accepted"].as_u64().unwrap_or(0);
                                self.counts.rejected += answer["rejected"].as_u64().unwrap_or(0);
                                *events = unavailable_events(events, &answer);
                            }
                            retry_after
                        }
                        StatusCode::TOO_MANY_REQUESTS => retry_after,
                        other => bail!("gateway answered {other}: {text}"),
                    }
                }
                Err(error) if error.is_connect() || error.is_timeout() => Duration::from_millis(500),
                Err(error) => return Err(error).context("posting to the gateway"),
            };
            if started.elapsed() > RETRY_FOR {
                bail!("the gateway did not take a batch for {RETRY_FOR:?}");
            }
            self.counts.retries += 1;
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn after_a_503_only_the_unavailable_events_go_again() {
        let events = vec![json!({"event_id": "a"}), json!({"event_id": "b"}), json!({"event_id": "c"})];
        let answer = json!({"results": [
            {"index": 0, "status": "accepted"}, {"index": 1, "status": "unavailable"},
            {"index": 2, "status": "rejected"}]});
        assert_eq!(unavailable_events(&events, &answer), vec![json!({"event_id": "b"})]);
        // No per-event results (a proxy's 503): all again.
        assert_eq!(unavailable_events(&events, &json!({})), events);
    }
}
