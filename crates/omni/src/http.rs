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
                self.post(line).await?;
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
        self.post(serde_json::json!({ "events": events }).to_string()).await
    }

    async fn post(&mut self, body: String) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let mut request =
                self.client.post(&self.url).header("content-type", "application/json").body(body.clone());
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
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => retry_after,
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
