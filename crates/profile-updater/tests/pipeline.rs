//! profile-updater end to end on the real broker: the profile side of SPEC stories 1 and 2
//! through `omni produce`, and exactly-once under SIGKILL.

use std::time::{Duration, Instant};

use omnistream_model::records::CustomerProfile;
use omnistream_model::{Channel, EventType, decode_record};
use omnistream_profile_updater::{ProfileUpdater, activity};
use omnistream_testkit::pipeline::{ServiceTopics, assert_latest_outputs, sigkill_mid_stream};
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
    let processor = ProfileUpdater;
    let outcome = sigkill_mid_stream(&topics, 41, processor, 0, |run| {
        profile_updater(&topics, "profile-crash", &format!("profile-crash-{run}"))
    })
    .await;
    assert_latest_outputs(&outcome.expected, &outcome.committed[0], &output, |bytes| {
        decode_record::<CustomerProfile>(bytes).expect("profile")
    });
}

fn traits_event(id: &str, customer: &str, traits: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","customer_id":"{customer}","occurred_at":"2026-11-20T10:00:00Z","channel":"web","type":"traits_updated","properties":{{"set":{{{traits}}}}}}}"#
    )
}

/// SPEC 4 Limits: one customer's data never stops a service. The profiles topic here takes
/// records of 4,000 bytes at most; the event that would grow a profile past it is dead-lettered
/// with `record_too_large` (before: the produce failed, every abort replayed it, and the service
/// crash-looped), and one that would break the 256-trait limit with `state_limit`. Both leave the
/// profile as it was, and later events of the same and other customers are applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_profile_too_large_for_its_topic_dead_letters_its_cause_and_the_partition_goes_on() {
    let mut topics = ServiceTopics::create("profile-limits", 1).await;
    let small = omnistream_testkit::unique_topic("profile-limits-small");
    let mut request = omnistream_runtime::admin::TopicRequest::plain(&small, 6, 1);
    request.config.push(("max.message.bytes".to_owned(), "4000".to_owned()));
    omnistream_testkit::create_test_topics(&[request]).await;
    topics.outputs[0] = small;
    let mut service = profile_updater(&topics, "limits", "profile-limits");
    let (input, profiles, dlq) = (topics.input.clone(), topics.outputs[0].clone(), topics.dlq.clone());
    tokio::task::spawn_blocking(move || {
        let text = |n: usize| format!("\"{}\"", "x".repeat(n));
        // 90 small traits an event (an event may carry 100): a third batch would make 270 traits.
        let batch =
            |from: usize| (from..from + 90).map(|i| format!("\"t{i:03}\":1")).collect::<Vec<_>>().join(",");
        omni_produce(
            &input,
            &[
                traits_event("big-1", "c-big", &format!("\"bio1\":{}", text(1500))),
                traits_event("big-2", "c-big", &format!("\"bio2\":{}", text(1500))),
                // The third 1,500-byte trait makes the profile record larger than 4,000 bytes.
                traits_event("big-3", "c-big", &format!("\"bio3\":{}", text(1500))),
                traits_event("big-4", "c-big", "\"plan\":\"gold\""),
                traits_event("many-1", "c-many", &batch(0)),
                traits_event("many-2", "c-many", &batch(90)),
                traits_event("many-3", "c-many", &batch(180)),
                traits_event("many-4", "c-many", "\"plan\":\"gold\""),
                traits_event("other", "c-other", "\"plan\":\"silver\""),
            ],
        );
        let (profile, _) = wait_for_profile(&profiles, "c-big", |p| p.traits.get("plan").is_some());
        let names: Vec<&str> = profile.traits.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["bio1", "bio2", "plan"], "the refused event changed nothing");
        assert_eq!(profile.version, 3);
        let (profile, _) = wait_for_profile(&profiles, "c-many", |p| p.traits.get("plan").is_some());
        let names: Vec<&str> = profile.traits.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), 180 + 1, "the refused event changed nothing");
        assert!(names.contains(&"t179") && !names.contains(&"t180"));
        assert_eq!(profile.version, 3);
        wait_for_profile(&profiles, "c-other", |p| p.traits.get("plan").is_some());

        let reader = CommittedReader::from_beginning(&dlq);
        let mut codes = Vec::new();
        reader.read_until(Duration::from_secs(30), |message| {
            let header = |name: &str| {
                use rdkafka::message::Headers;
                let headers = message.headers()?;
                let found = headers.iter().find(|h| h.key == name)?;
                Some(String::from_utf8_lossy(found.value?).into_owned())
            };
            codes.push((header("error.code")?, header("error.message")?));
            (codes.len() == 2).then_some(())
        });
        // Two customers, maybe two partitions: in either order.
        codes.sort();
        assert_eq!(codes.len(), 2, "two records dead-lettered: {codes:?}");
        assert_eq!(codes[0].0, "record_too_large", "{codes:?}");
        assert!(codes[0].1.contains("4000-byte limit"), "{codes:?}");
        assert_eq!(
            codes[1],
            ("state_limit".to_owned(), "the profile would hold 270 traits (limit 256)".to_owned())
        );
    })
    .await
    .unwrap();
    assert!(service.is_running(), "the service kept running");
}
