//! customer-api on the real broker, over topics the services' pure folds filled beforehand: once
//! `/readyz` answers 200, every customer is served as the last record of each topic says, erased
//! customers (tombstones) are gone, and the lag per topic is reported.

use std::collections::HashMap;
use std::time::Duration;

use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_loyalty_points::{LoyaltyPoints, LoyaltyRules};
use omnistream_model::records::{
    ChannelAffinity, CustomerProfile, LoyaltyBalance, LoyaltyLedgerEntry, SuppressionState,
};
use omnistream_model::{Channel, EventPayload, TouchpointEvent, decode_record, encode_event};
use omnistream_profile_updater::ProfileUpdater;
use omnistream_runtime::admin::TopicRequest;
use omnistream_suppression::{Rules, Suppression};
use omnistream_testkit::pipeline::{OutputsByKey, fold, simulated_input};
use omnistream_testkit::{
    ServiceProcess, create_test_topics, free_port, http_get, producer, unique_topic, wait_until,
    workspace_binary,
};
use rdkafka::producer::FutureRecord;

/// Every output of the folds, in order, to its topic (tombstones as null values).
async fn publish(outputs: &OutputsByKey) {
    let producer = producer();
    let mut deliveries = Vec::new();
    // Per key in order: a key's records go to one partition, in the order sent.
    for ((topic, key), values) in outputs {
        for value in values {
            let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
            if let Some(bytes) = value {
                record = record.payload(bytes);
            }
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
            if deliveries.len() >= 10_000 {
                for delivery in deliveries.drain(..) {
                    delivery.await.expect("delivery").expect("acknowledged");
                }
            }
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivery").expect("acknowledged");
    }
}

fn last_values(outputs: &OutputsByKey, topic: &str) -> HashMap<String, Option<Vec<u8>>> {
    outputs
        .iter()
        .filter(|((t, _), _)| t == topic)
        .map(|((_, key), values)| (key.clone(), values.last().cloned().flatten()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_means_caught_up_and_tombstones_remove_customers() {
    let topic = |name: &str| unique_topic(&format!("api-{name}"));
    let (profiles, suppressions, affinity, ledger, balances) =
        (topic("profiles"), topic("suppressions"), topic("affinity"), topic("ledger"), topic("balances"));
    let mut requests = vec![TopicRequest::plain(&ledger, 3, 1)];
    for compacted in [&profiles, &suppressions, &affinity, &balances] {
        requests.push(TopicRequest::compacted(compacted, 3, 1));
    }
    create_test_topics(&requests).await;

    // 30,000 simulated events over 2,000 customers, and an erasure of one of them last (the
    // simulator's own erasures are rare and usually followed by more events), folded by every
    // service: the records the running services would have written.
    let mut input = simulated_input(30_000, 2_000, 61, 0.0);
    let erasure = TouchpointEvent {
        event_id: "api-test-erasure".into(),
        customer_id: "c-000001".into(),
        occurred_at: chrono::Utc::now(),
        channel: Channel::Web,
        source: None,
        payload: EventPayload::ErasureRequested,
        context: Default::default(),
        identifiers: Vec::new(),
    };
    input.push((erasure.customer_id.clone(), encode_event(&erasure).expect("encodes")));
    let mut outputs = fold(&ProfileUpdater, &[&profiles], &input).0;
    outputs.extend(fold(&Suppression::new(Rules::default()), &[&suppressions], &input).0);
    outputs.extend(fold(&ChannelAffinityProcessor::default(), &[&affinity], &input).0);
    outputs.extend(fold(&LoyaltyPoints::new(LoyaltyRules::default()), &[&ledger, &balances], &input).0);
    publish(&outputs).await;

    let last_profiles = last_values(&outputs, &profiles);
    let last_suppressions = last_values(&outputs, &suppressions);
    let last_affinities = last_values(&outputs, &affinity);
    let last_entries = last_values(&outputs, &ledger);
    let last_balances = last_values(&outputs, &balances);
    let erased: Vec<&String> = last_profiles.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
    assert!(!erased.is_empty(), "the simulation erases some customers");

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _api = ServiceProcess::spawn(
        &workspace_binary("customer-api"),
        "api-ready",
        &[
            "--http-addr",
            &addr,
            "--admin-addr",
            "127.0.0.1:0",
            "--profiles-topic",
            &profiles,
            "--suppressions-topic",
            &suppressions,
            "--affinity-topic",
            &affinity,
            "--ledger-topic",
            &ledger,
            "--balances-topic",
            &balances,
        ],
        &[],
    );
    wait_until("the customer-api is ready", Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });

    // Ready: every customer as the last records say, none missing, erased ones gone.
    for (customer, profile) in &last_profiles {
        let (status, body) = http_get(port, &format!("/v1/customers/{customer}")).expect("answers");
        match profile {
            Some(bytes) => {
                assert_eq!(status, 200, "{customer}: {body}");
                let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                let expected: CustomerProfile = decode_record(bytes).unwrap();
                assert_eq!(document["profile"]["version"], expected.version, "{customer}");
                if let Some(Some(state)) = last_suppressions.get(customer) {
                    let expected: SuppressionState = decode_record(state).unwrap();
                    assert_eq!(document["suppression"]["version"], expected.version, "{customer}");
                }
                if let Some(Some(scores)) = last_affinities.get(customer) {
                    let expected: ChannelAffinity = decode_record(scores).unwrap();
                    assert_eq!(document["channel_affinity"]["version"], expected.version, "{customer}");
                }
                if let Some(Some(balance)) = last_balances.get(customer) {
                    let expected: LoyaltyBalance = decode_record(balance).unwrap();
                    assert_eq!(document["loyalty"]["active"], expected.active, "{customer}");
                }
                if let Some(Some(entry)) = last_entries.get(customer) {
                    let expected: LoyaltyLedgerEntry = decode_record(entry).unwrap();
                    let (_, body) = http_get(port, &format!("/v1/customers/{customer}/loyalty")).unwrap();
                    let loyalty: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                    assert_eq!(
                        loyalty["recent_entries"][0]["entry_id"], expected.entry_id,
                        "{customer}: {body}"
                    );
                }
            }
            None => {
                assert_eq!(status, 404, "{customer} was erased: {body}");
                assert_eq!(http_get(port, &format!("/v1/customers/{customer}/loyalty")).unwrap().0, 404);
            }
        }
    }
    // Lag is measured every few seconds: it comes down to 0 on every topic.
    let topics = [&profiles, &suppressions, &affinity, &ledger, &balances];
    let mut metrics = String::new();
    wait_until("lag 0 on every topic", Duration::from_secs(20), || {
        metrics = http_get(port, "/metrics").unwrap().1;
        topics
            .iter()
            .all(|topic| metrics.contains(&format!("omnistream_api_topic_lag{{topic=\"{topic}\"}} 0\n")))
    });
    for topic in topics {
        assert!(metrics.contains(&format!("omnistream_api_records_total{{topic=\"{topic}\"}}")), "{metrics}");
    }
}
