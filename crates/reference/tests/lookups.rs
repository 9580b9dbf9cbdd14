//! Table and broadcast inputs, proven on the real broker: the lookup counter stamps every count
//! with the customer's tier (a co-partitioned table) and the current campaign (a broadcast topic)
//! while both change under it and the service is SIGKILLed at random moments. Every committed
//! record must carry the versions the rule names (the latest appended at or before the event's
//! append time less the grace), which the test works out from what the broker holds, not from the
//! runtime; a replay after a kill must answer the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use omnistream_model::{Channel, EventPayload, TouchpointEvent, encode_event};
use omnistream_reference::CountRecord;
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::pipeline::{
    PARTITIONS, ServiceTopics, committed_outputs, kill_repeatedly, produce_at_rate,
};
use omnistream_testkit::{
    ServiceProcess, create_test_topics, produce_all, read_committed_to_end, unique_topic,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;

const EVENTS: usize = 150_000;
const CUSTOMERS: usize = 1_000;
const GRACE_MS: i64 = 4_000;

fn customer(index: usize) -> String {
    format!("c-{index:04}")
}

fn event(index: usize, customer: &str) -> (String, Vec<u8>) {
    let event = TouchpointEvent {
        event_id: format!("e-{index}"),
        customer_id: customer.to_owned(),
        occurred_at: Utc::now() - chrono::Duration::minutes(1),
        channel: Channel::Web,
        source: None,
        payload: EventPayload::PageViewed { url: "https://shop.example/".into() },
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    };
    (customer.to_owned(), encode_event(&event).expect("encodes"))
}

/// A lookup topic as the broker holds it: each key's versions as (append time, value).
fn versions(topic: &str) -> HashMap<String, Vec<(i64, Option<String>)>> {
    let mut versions: HashMap<String, Vec<(i64, Option<String>)>> = HashMap::new();
    for message in read_committed_to_end(topic) {
        let key = String::from_utf8_lossy(message.key().expect("keyed")).into_owned();
        let value = message.payload().map(|v| String::from_utf8_lossy(v).into_owned());
        versions.entry(key).or_default().push((message.timestamp().to_millis().expect("stamped"), value));
    }
    for list in versions.values_mut() {
        list.sort_by_key(|(time, _)| *time);
    }
    versions
}

/// The value the rule names: the latest version appended at or before `as_of`.
fn as_of(versions: &HashMap<String, Vec<(i64, Option<String>)>>, key: &str, as_of: i64) -> Option<String> {
    versions.get(key)?.iter().rfind(|(time, _)| *time <= as_of)?.1.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_answer_as_of_the_record_time_less_the_grace_also_after_sigkills() {
    let topics = ServiceTopics::create("lookups", 1).await;
    let (tiers, campaign) = (unique_topic("lookups-tiers"), unique_topic("lookups-campaign"));
    let mut table = TopicRequest::compacted(&tiers, PARTITIONS, 1);
    table.config.push(("message.timestamp.type".into(), "LogAppendTime".into()));
    create_test_topics(&[table, TopicRequest::events(&campaign, 2, 1)]).await;
    // What the service restores before its first event, then changes while it runs.
    produce_all(&tiers, (0..CUSTOMERS).map(|c| (customer(c), b"bronze".to_vec()))).await;
    produce_all(&campaign, [("current".to_owned(), b"launch".to_vec())]).await;

    let mut rng = StdRng::seed_from_u64(51);
    let mut input = Vec::new();
    for index in 0..EVENTS {
        input.push(event(index, &customer(rng.random_range(0..CUSTOMERS))));
        if rng.random_bool(0.01) {
            input.push(input[input.len() - 1].clone());
        }
    }
    let producing = produce_at_rate(topics.input.clone(), input, 4_000);
    let changing = tokio::spawn({
        let (tiers, campaign) = (tiers.clone(), campaign.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(52);
            let producer = omnistream_testkit::producer();
            for step in 0..(EVENTS / 4_000 * 50) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let tier = ["silver", "gold", ""][rng.random_range(0..3)];
                let key = customer(rng.random_range(0..CUSTOMERS));
                let record = match tier {
                    // An empty tier is a tombstone: the customer has none.
                    "" => rdkafka::producer::FutureRecord::<String, [u8]>::to(&tiers).key(&key),
                    tier => rdkafka::producer::FutureRecord::to(&tiers).key(&key).payload(tier.as_bytes()),
                };
                producer.send(record, Duration::from_secs(10)).await.expect("a tier change");
                if step % 50 == 0 {
                    let name = format!("campaign-{}", step / 50);
                    let record = rdkafka::producer::FutureRecord::to(&campaign)
                        .key("current")
                        .payload(name.as_bytes());
                    producer.send(record, Duration::from_secs(10)).await.expect("a campaign change");
                }
            }
        }
    });

    let output = topics.outputs[0].clone();
    let start = |label: &str| {
        let mut args = topics.runtime_args("lookups-0", 0);
        let table = format!("tiers={tiers}");
        let broadcast = format!("campaign={campaign}");
        args.extend(
            [
                "--output-topic",
                &output,
                "--lookups",
                "--table",
                &table,
                "--broadcast",
                &broadcast,
                "--transaction-timeout-ms",
                "3000",
                "--lookup-grace-ms",
                "4000",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::spawn(env!("CARGO_BIN_EXE_event-counter"), &format!("lookups-{label}"), &args, &[])
    };
    // Retries are dropped: one count per distinct event.
    let counted = EVENTS;
    let kills = kill_repeatedly(5, &output, counted, |run| start(&format!("run-{run}"))).await;
    assert!(kills >= 5, "only {kills} kills happened mid-stream");
    producing.await.expect("producer task");
    changing.await.expect("changes task");

    let mut last = start("final");
    let actual = committed_outputs(&output, counted, Duration::from_secs(180)).await;
    let (tiers, campaigns) = tokio::task::spawn_blocking(move || (versions(&tiers), versions(&campaign)))
        .await
        .expect("read lookups");
    let input_topic = topics.input.clone();
    let appended: HashMap<String, i64> = tokio::task::spawn_blocking(move || {
        let mut first = HashMap::new();
        for message in read_committed_to_end(&input_topic) {
            let event =
                omnistream_model::decode_event(message.payload().expect("a value")).expect("an event");
            first.entry(event.event_id).or_insert(message.timestamp().to_millis().expect("stamped"));
        }
        first
    })
    .await
    .expect("read events");

    let mut seen = HashSet::new();
    let mut changed_tiers = 0;
    for ((_, customer), values) in &actual {
        for (index, value) in values.iter().enumerate() {
            let record: CountRecord =
                serde_json::from_slice(value.as_deref().expect("a count")).expect("a count record");
            assert_eq!(record.count, index as u64 + 1, "{customer}: counts go up by one");
            assert!(seen.insert(record.event_id.clone()), "{} counted twice", record.event_id);
            let lookup_time = appended[&record.event_id] - GRACE_MS;
            let tier = as_of(&tiers, customer, lookup_time);
            changed_tiers += usize::from(tier.as_deref() != Some("bronze"));
            assert_eq!(record.tier, tier, "{customer}'s tier for {}", record.event_id);
            assert_eq!(
                record.campaign,
                as_of(&campaigns, "current", lookup_time),
                "campaign for {}",
                record.event_id
            );
        }
    }
    assert_eq!(seen.len(), EVENTS, "every event counted once");
    assert!(changed_tiers > EVENTS / 10, "the tiers changed under the service ({changed_tiers} records)");
    assert!(last.is_running(), "the last run is still working");
}
