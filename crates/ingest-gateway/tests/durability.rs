//! Durability on a broker of its own (the shared test broker must stay up for the other tests):
//! with the broker stopped the gateway answers 503 and claims nothing accepted; once it is back,
//! the retried batch (sent twice, as a client that lost an answer would) is counted once
//! downstream.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use omnistream_testkit::stack::{Stack, StackOptions};
use omnistream_testkit::{free_port, repo_root};
use serde_json::{Value, json};

/// A single-node broker in a temporary directory, on ports of its own.
struct OwnBroker {
    env: Vec<(&'static str, String)>,
    home: PathBuf,
    bootstrap: String,
}

impl OwnBroker {
    fn new() -> Self {
        let home = std::env::temp_dir().join(format!("omnistream-own-broker-{}", uuid_like()));
        let port = free_port();
        let env = vec![
            ("OMNISTREAM_KAFKA_HOME", home.to_string_lossy().into_owned()),
            ("OMNISTREAM_KAFKA_PORT", port.to_string()),
            ("OMNISTREAM_KAFKA_CONTROLLER_PORT", free_port().to_string()),
            ("OMNISTREAM_KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m".to_owned()),
        ];
        Self { env, home, bootstrap: format!("127.0.0.1:{port}") }
    }

    fn run(&self, command: &str) {
        let status = Command::new("bash")
            .arg(repo_root().join("deploy/local/kafka.sh"))
            .arg(command)
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .expect("kafka.sh");
        assert!(status.success(), "kafka.sh {command} failed");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.run("down");
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

fn batch(ids: std::ops::Range<usize>) -> Value {
    let events: Vec<Value> = ids
        .map(|i| {
            json!({"event_id": format!("d-{i}"), "customer_id": "c-durable", "occurred_at": Utc::now().to_rfc3339(),
                   "channel": "web", "type": "page_viewed", "properties": {"url": format!("/{i}")}})
        })
        .collect();
    json!({ "events": events })
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_means_503_and_nothing_claimed_then_a_retried_batch_counts_once() {
    let broker = OwnBroker::new();
    broker.run("up");
    let options = StackOptions {
        bootstrap: Some(broker.bootstrap.clone()),
        gateway_args: vec!["--delivery-timeout-ms".into(), "3000".into()],
        ..StackOptions::default()
    };
    let mut stack = Stack::start("durable", options).await;

    let (status, answer) = stack.post_events(&batch(0..5), None).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(5)), "{answer}");

    broker.run("down");
    let retried = batch(5..10);
    let (status, answer) = stack.post_events(&retried, None).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["unavailable"].as_u64()), (Some(0), Some(5)), "{answer}");
    assert!(answer["results"].as_array().unwrap().iter().all(|r| r["status"] == "unavailable"));

    broker.run("up");
    // Processes that gave up while the broker was away are restarted, as Kubernetes would.
    let started = Instant::now();
    loop {
        stack.restart_exited();
        let (status, answer) = stack.post_events(&retried, None).await;
        if status == 200 {
            assert_eq!(answer["accepted"].as_u64(), Some(5));
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(started.elapsed() < Duration::from_secs(90), "the gateway did not recover: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The client did not see that answer and sends the batch once more.
    let (status, _) = stack.post_events(&retried, None).await;
    assert_eq!(status, 200);

    let deadline = Instant::now() + Duration::from_secs(120);
    let document = loop {
        stack.restart_exited();
        let (status, document) = stack.api("/v1/customers/c-durable").await;
        if status == 200 && document["profile"]["version"].as_i64() >= Some(10) {
            break document;
        }
        assert!(Instant::now() < deadline, "the profile did not reach 10 events: {status} {document}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let any further (duplicate) record arrive before judging.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, document_later) = stack.api("/v1/customers/c-durable").await;
    assert_eq!(document_later["profile"]["version"], document["profile"]["version"]);
    let views = &document_later["profile"]["channels"][0]["event_counts"]["page_viewed"];
    assert_eq!(
        (document_later["profile"]["version"].as_i64(), views.as_i64()),
        (Some(10), Some(10)),
        "counted once"
    );
}
