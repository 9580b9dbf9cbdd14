//! channel-affinity end to end on the real broker: story 4 of SPEC 1 through `omni produce`, and
//! exactly-once under SIGKILL.

use std::time::{Duration, Instant};

use chrono::Utc;

use omnistream_channel_affinity::ChannelAffinityProcessor;
use omnistream_model::records::ChannelAffinity;
use omnistream_model::{Channel, decode_record};
use omnistream_testkit::pipeline::{ServiceTopics, assert_same_outputs, sigkill_mid_stream};
use omnistream_testkit::{CommittedReader, ServiceProcess, omni_produce, workspace_binary};
use rdkafka::message::Message;

fn channel_affinity(topics: &ServiceTopics, instance: &str, label: &str) -> ServiceProcess {
    channel_affinity_with(topics, instance, label, &[])
}

fn channel_affinity_with(
    topics: &ServiceTopics,
    instance: &str,
    label: &str,
    flags: &[&str],
) -> ServiceProcess {
    let mut args = topics.runtime_args(instance, 0);
    args.extend(["--affinity-topic".to_owned(), topics.outputs[0].clone()]);
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::spawn(
        &workspace_binary("channel-affinity"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    )
}

/// An event `minute` minutes into the last quarter hour: the record is as of the partition clock
/// (now), so the counts decay from the events' times to now, which must stay minutes.
fn event(n: usize, minute: usize, channel: &str, event_type: &str, properties: &str) -> String {
    let at =
        (Utc::now() - chrono::Duration::minutes(15) + chrono::Duration::minutes(minute as i64)).to_rfc3339();
    format!(
        r#"{{"event_id":"s4-{n}","customer_id":"c-4004","occurred_at":"{at}","channel":"{channel}","type":"{event_type}","properties":{properties}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn story_four_whatsapp_over_sms_over_email_and_the_unsubscribed_channel_absent() {
    let topics = ServiceTopics::create("affinity-story", 1).await;
    let _service = channel_affinity(&topics, "story", "affinity-story");
    let output = topics.outputs[0].clone();
    let input = topics.input.clone();
    tokio::task::spawn_blocking(move || {
        // Never opens email, clicks SMS, replies on WhatsApp; push is sent to but unsubscribed.
        let mut lines = Vec::new();
        let mut n = 0;
        let mut add = |minute: usize, channel: &str, event_type: &str, properties: &str| {
            n += 1;
            lines.push(event(n, minute, channel, event_type, properties));
        };
        // Engagement counts once per message (SPEC 4): every send is a message of its own.
        let sent = |id: String| format!(r#"{{"message_id":"{id}","purpose":"marketing"}}"#);
        let message = |id: String| format!(r#"{{"message_id":"{id}"}}"#);
        for minute in 0..5 {
            for channel in ["email", "sms", "push"] {
                add(minute, channel, "message_sent", &sent(format!("{channel}-{minute}")));
            }
        }
        for minute in 5..8 {
            add(minute, "sms", "message_clicked", &message(format!("sms-{}", minute - 5)));
            add(minute, "whatsapp", "message_sent", &sent(format!("whatsapp-{minute}")));
            add(minute, "whatsapp", "message_received", r#"{"conversation_id":"w-1"}"#);
            add(minute, "push", "message_opened", &message(format!("push-{}", minute - 5)));
        }
        add(9, "push", "consent_changed", r#"{"purpose":"marketing","granted":false}"#);
        let total = lines.len() as i64;
        omni_produce(&input, &lines);

        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_secs(60)
            && last.as_ref().is_none_or(|a: &ChannelAffinity| a.version < total)
        {
            let reader = CommittedReader::from_beginning(&output);
            last = reader.read_until(Duration::from_secs(5), |message| {
                let record = decode_record::<ChannelAffinity>(message.payload()?).expect("Avro affinity");
                (record.version == total).then_some(record)
            });
        }
        let record = last.expect("the record after the last event");
        assert_eq!(
            record.ranking,
            vec![Channel::Whatsapp, Channel::Sms, Channel::Email],
            "push is unsubscribed"
        );
        let counts = |channel: Channel| {
            let score = record.channels.iter().find(|c| c.channel == channel).unwrap();
            (
                (score.sent * 100.0).round() / 100.0,
                (score.engaged * 100.0).round() / 100.0,
                score.marketing_consent,
            )
        };
        // Minutes apart on a 30-day half-life: the counts are the event counts to two places.
        assert_eq!(counts(Channel::Email), (5.0, 0.0, true));
        assert_eq!(counts(Channel::Sms), (5.0, 3.0, true));
        assert_eq!(counts(Channel::Whatsapp), (3.0, 3.0, true));
        assert_eq!(counts(Channel::Push), (5.0, 3.0, false), "explained, but never recommended");
    })
    .await
    .unwrap();
}

/// With every record written (`--coalesce-outputs false`), record for record against the fold: a
/// transaction written twice or lost shows even where a later record of the customer would hide
/// it. The other services' proofs run with one record per customer per transaction.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_200000_events_committed_records_equal_the_pure_fold() {
    let topics = ServiceTopics::create("affinity-crash", 1).await;
    let output = topics.outputs[0].clone();
    let processor = ChannelAffinityProcessor::default();
    let outcome = sigkill_mid_stream(&topics, 47, processor, 0, |run| {
        let label = format!("affinity-crash-{run}");
        channel_affinity_with(&topics, "affinity-crash", &label, &["--coalesce-outputs", "false"])
    })
    .await;
    assert_same_outputs(&outcome.expected, &outcome.committed[0], &output, |bytes| {
        decode_record::<ChannelAffinity>(bytes).expect("channel affinity")
    });
}
