//! profile-updater end to end on the real broker: the profile side of SPEC stories 1 and 2
//! through `omni produce`, and exactly-once under SIGKILL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use omnistream_model::records::CustomerProfile;
use omnistream_model::{Channel, EventType, decode_record};
use omnistream_profile_updater::{ProfileUpdater, activity};
use omnistream_testkit::pipeline::{
    ServiceTopics, assert_same_outputs, committed_outputs, fold, kill_repeatedly, produce_at_rate,
    records_in, simulated_input,
};
use omnistream_testkit::{CommittedReader, ServiceProcess, omni_produce, workspace_binary};
use rdkafka::message::Message;

fn profile_updater(topics: &ServiceTopics, instance: &str, label: &str) -> ServiceProcess {
    let mut args = topics.runtime_args(instance, 0);
    args.extend(["--profiles-topic".to_owned(), topics.outputs[0].clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::spawn(
        &workspace_binary("profile-updater"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    )
}

/// Waits until a committed profile of `customer` satisfies `condition`; returns it and how long
/// it took from the call. Reads from the beginning again every few seconds, so one slow reader
/// start on a busy broker cannot fail the test.
fn wait_for_profile(
    topic: &str,
    customer: &str,
    condition: impl Fn(&CustomerProfile) -> bool,
) -> (CustomerProfile, Duration) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let reader = CommittedReader::from_beginning(topic);
        let found = reader.read_until(Duration::from_secs(5), |message| {
            if message.key() != Some(customer.as_bytes()) {
                return None;
            }
            let profile = decode_record::<CustomerProfile>(message.payload()?).expect("Avro profile");
            condition(&profile).then_some(profile)
        });
        if let Some(profile) = found {
            return (profile, started.elapsed());
        }
    }
    panic!("the profile of {customer} never got there");
}

fn event(id: &str, at: &str, channel: &str, event_type: &str, properties: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","customer_id":"c-1042","occurred_at":"{at}","channel":"{channel}","type":"{event_type}","source":"test","properties":{properties}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn stories_one_and_two_the_profile_side() {
    let topics = ServiceTopics::create("profile-stories", 1).await;
    let _service = profile_updater(&topics, "stories", "profile-stories");
    let profiles = topics.outputs[0].clone();
    let input = topics.input.clone();
    tokio::task::spawn_blocking(move || {
        // Story 1: a WhatsApp support ticket about a late delivery, then its resolution.
        omni_produce(
            &input,
            &[event(
                "s1-open",
                "2026-11-20T10:15:00Z",
                "whatsapp",
                "support_ticket_opened",
                r#"{"ticket_id":"T-77","topic":"delivery"}"#,
            )],
        );
        let (profile, _) = wait_for_profile(&profiles, "c-1042", |p| !p.open_tickets.is_empty());
        assert_eq!(profile.open_tickets[0].ticket_id, "T-77");
        assert_eq!(profile.open_tickets[0].channel, Channel::Whatsapp);
        assert_eq!(profile.open_tickets[0].topic.as_deref(), Some("delivery"));

        omni_produce(
            &input,
            &[event(
                "s1-resolve",
                "2026-11-20T11:00:00Z",
                "call_center",
                "support_ticket_resolved",
                r#"{"ticket_id":"T-77"}"#,
            )],
        );
        let (profile, _) = wait_for_profile(&profiles, "c-1042", |p| p.last_resolved_ticket.is_some());
        assert!(profile.open_tickets.is_empty(), "the ticket is no longer open");
        let resolved = profile.last_resolved_ticket.unwrap();
        assert_eq!(resolved.ticket_id, "T-77");
        assert_eq!(resolved.opened_at.map(|t| t.to_rfc3339()), Some("2026-11-20T10:15:00+00:00".to_owned()));

        // Story 2: a purchase at a physical store updates the profile at once.
        omni_produce(
            &input,
            &[event(
                "s2-order",
                "2026-11-20T12:00:00Z",
                "store",
                "order_placed",
                r#"{"order_id":"o-1","value_minor":12999,"currency":"EUR","items":2}"#,
            )],
        );
        let (profile, took) = wait_for_profile(&profiles, "c-1042", |p| p.orders_count == 1);
        assert_eq!(profile.last_order_channel, Some(Channel::Store));
        assert_eq!(
            profile.last_order_at.map(|t| t.to_rfc3339()),
            Some("2026-11-20T12:00:00+00:00".to_owned())
        );
        assert_eq!(profile.lifetime_value_minor.get("EUR"), Some(&12_999));
        assert_eq!(
            activity(&profile, Channel::Store).map(|a| a.event_counts[&EventType::OrderPlaced]),
            Some(1)
        );
        assert_eq!(profile.version, 3);
        // Seconds at most here (a reader starts per try); the benchmark measures the real latency.
        assert!(took < Duration::from_secs(15), "the store purchase showed after {took:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_200000_events_committed_profiles_equal_the_pure_fold() {
    let topics = ServiceTopics::create("profile-crash", 1).await;
    let output = topics.outputs[0].clone();
    let input = simulated_input(200_000, 5_000, 41, 0.002);
    let (expected, _) = fold(&ProfileUpdater { profiles_topic: Arc::from(output.as_str()) }, &input);
    let producing = produce_at_rate(topics.input.clone(), input, 4_000);

    let complete_at = records_in(&expected, &output);
    let kills = kill_repeatedly(5, &output, complete_at, |run| {
        profile_updater(&topics, "profile-crash", &format!("profile-crash-{run}"))
    })
    .await;
    assert!(kills >= 5, "only {kills} kills happened mid-stream");
    producing.await.expect("producer task");

    let mut last = profile_updater(&topics, "profile-crash", "profile-crash-final");
    let actual = committed_outputs(&output, complete_at, Duration::from_secs(180)).await;
    assert!(last.is_running());
    assert_same_outputs(&expected, &actual, &output, |bytes| {
        decode_record::<CustomerProfile>(bytes).expect("profile")
    });
}
