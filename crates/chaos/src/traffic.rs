//! Simulated customers' events at a steady rate, half through the gateway's HTTP API (retried,
//! same `event_id`, after anything but an `accepted`, as a producer does), half straight to Kafka
//! with an idempotent producer (re-sent after a delivery error).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use omnistream_sim::{SimConfig, SimRecord, Simulator};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where Kafka said it stored an event: (event id, partition, offset).
pub type Acknowledged = (String, i32, i64);

/// What was published, for the report and the checks.
#[derive(Debug, Default)]
pub struct Published {
    /// Every event id the simulator made (both ways).
    pub generated: BTreeSet<String>,
    /// Acknowledged by Kafka to the direct producer.
    pub direct: Vec<Acknowledged>,
    pub direct_resends: u64,
    /// Answered `accepted` (a 2xx) by the gateway, with the partition and offset it gave.
    pub accepted: Vec<Acknowledged>,
    /// Given up on after 10 minutes of failures (neither acknowledged nor expected anywhere).
    pub abandoned: u64,
    pub gateway_requests: u64,
    /// Events sent again after a failed request or an `unavailable`.
    pub gateway_retries: u64,
    pub gateway_rejected: u64,
}

const BATCH: usize = 50;
/// How long an event is retried before the traffic gives up on it.
const GIVE_UP: Duration = Duration::from_secs(600);

/// Publishes until `stop`, then finishes what is in flight.
pub async fn run(
    gateway: String,
    events_topic: String,
    bootstrap: String,
    seed: u64,
    customers: u32,
    rate: u32,
    stop: CancellationToken,
) -> Published {
    let (to_gateway, gateway_queue) = mpsc::unbounded_channel::<(String, String)>();
    let (to_direct, direct_queue) = mpsc::unbounded_channel::<(String, String, Vec<u8>)>();
    let gateway_task = tokio::spawn(gateway_sender(gateway, gateway_queue));
    let direct_task = tokio::spawn(direct_sender(bootstrap, events_topic, direct_queue));
    let step_ms = i64::from(1_000 / rate.max(1)).max(1);
    let mut simulator = Simulator::new(SimConfig {
        customers,
        seed,
        // Event times follow the wall clock, from a few minutes back.
        start: Utc::now() - chrono::Duration::minutes(5),
        step: chrono::Duration::milliseconds(step_ms),
        duplicate_share: 0.01,
        malformed_share: 0.0,
    });
    let per_tick = (rate / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = 0;
    let mut generated = BTreeSet::new();
    'publishing: loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break 'publishing,
        }
        for _ in 0..per_tick {
            let Some(record) = simulator.next() else { break 'publishing };
            let key = record.customer_id().to_owned();
            let id = match &record {
                SimRecord::Event(event) | SimRecord::Duplicate(event) => event.event_id.clone(),
                SimRecord::Malformed { .. } => continue,
            };
            generated.insert(id.clone());
            n += 1;
            let sent = if n.is_multiple_of(2) {
                to_gateway.send((id, record.to_json_line())).is_ok()
            } else {
                to_direct.send((id, key, record.to_avro_bytes().expect("a valid event encodes"))).is_ok()
            };
            assert!(sent, "a sender stopped early");
        }
    }
    drop((to_gateway, to_direct));
    let mut published = gateway_task.await.expect("the gateway sender");
    let (direct, direct_resends, abandoned) = direct_task.await.expect("the direct sender");
    published.generated = generated;
    published.direct = direct;
    published.direct_resends = direct_resends;
    published.abandoned += abandoned;
    published
}

async fn gateway_sender(url: String, mut queue: mpsc::UnboundedReceiver<(String, String)>) -> Published {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("an HTTP client");
    let mut published = Published::default();
    let mut pending: Vec<(String, String)> = Vec::new();
    let mut open = true;
    let mut closed_at: Option<std::time::Instant> = None;
    while open || !pending.is_empty() {
        if !open && closed_at.get_or_insert_with(std::time::Instant::now).elapsed() > GIVE_UP {
            published.abandoned += pending.len() as u64;
            break;
        }
        if pending.is_empty() {
            match queue.recv().await {
                Some(event) => pending.push(event),
                None => open = false,
            }
        }
        while pending.len() < BATCH {
            match queue.try_recv() {
                Ok(event) => pending.push(event),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            continue;
        }
        let batch: Vec<(String, String)> = pending.drain(..pending.len().min(BATCH)).collect();
        let body = format!(
            "{{\"events\":[{}]}}",
            batch.iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join(",")
        );
        published.gateway_requests += 1;
        let answer = client
            .post(format!("{url}/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let results = match answer {
            Ok(response) => {
                response.json::<Value>().await.ok().and_then(|body| body["results"].as_array().cloned())
            }
            Err(_) => None,
        };
        let Some(results) = results.filter(|results| results.len() == batch.len()) else {
            // No answer (the gateway died, the connection broke): everything again.
            published.gateway_retries += batch.len() as u64;
            pending.splice(0..0, batch);
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let mut again = Vec::new();
        for (result, event) in results.iter().zip(batch) {
            match result["status"].as_str() {
                Some("accepted") => {
                    let at = (result["partition"].as_i64(), result["offset"].as_i64());
                    let (Some(partition), Some(offset)) = at else {
                        panic!("an accepted result has no offset: {result}")
                    };
                    published.accepted.push((
                        event.0,
                        i32::try_from(partition).expect("a partition"),
                        offset,
                    ));
                }
                Some("rejected") => published.gateway_rejected += 1,
                _ => again.push(event),
            }
        }
        if !again.is_empty() {
            published.gateway_retries += again.len() as u64;
            pending.splice(0..0, again);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    published
}

async fn direct_sender(
    bootstrap: String,
    topic: String,
    mut queue: mpsc::UnboundedReceiver<(String, String, Vec<u8>)>,
) -> (Vec<Acknowledged>, u64, u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The gateway's partitioner (Java's): one customer, one partition, whoever publishes.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("a producer");
    let resends = Arc::new(AtomicU64::new(0));
    let mut sends = tokio::task::JoinSet::new();
    let mut acknowledged = Vec::new();
    let mut abandoned = 0;
    let mut collect = |done: Option<Acknowledged>| match done {
        Some(ack) => acknowledged.push(ack),
        None => abandoned += 1,
    };
    while let Some((id, key, value)) = queue.recv().await {
        let (producer, topic, resends) = (producer.clone(), topic.clone(), resends.clone());
        sends.spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let record = FutureRecord::to(&topic).key(&key).payload(&value);
                match producer.send(record, Duration::from_secs(60)).await {
                    Ok(delivery) => return Some((id, delivery.partition, delivery.offset)),
                    Err(_) if started.elapsed() > GIVE_UP => return None,
                    Err(_) => {
                        resends.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        });
        while let Some(done) = sends.try_join_next() {
            collect(done.expect("a send"));
        }
    }
    while let Some(done) = sends.join_next().await {
        collect(done.expect("a send"));
    }
    (acknowledged, resends.load(Ordering::Relaxed), abandoned)
}
