//! `omni journeys dispatch`: the sender side of journeys (docs/journeys.md, "Sending"). Reads
//! `journey.actions.v1` in a consumer group, calls the channel's webhook for every `send`
//! decision with the decision id as the idempotency key (retried with backoff), then publishes the
//! `message_sent` event the pipeline counts, with `message_id` = the decision id, and only then
//! commits the decision's offset: at-least-once, with every repeat carrying the same key and the
//! same event id, which the provider and the services drop.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use omnistream_model::records::{JourneyAction, JourneyOutcome};
use omnistream_model::topics::{EVENTS, JOURNEY_ACTIONS};
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent, decode_record, encode_event};
use omnistream_runtime::KafkaArgs;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tracing::{error, info, warn};

/// Decision ids delivered by this process remembered to drop a repeat (a rebalance re-reads what
/// was not committed yet).
const DELIVERED_KEPT: usize = 100_000;
/// The longest wait between two tries of a webhook that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct DispatchArgs {
    /// `CHANNEL=URL`: the webhook that sends on a channel (email, sms, whatsapp, push); repeat per
    /// channel. Decisions for other channels are left to another dispatcher (run one per channel,
    /// each with its own `--group-id`, so that one provider's outage holds back only its channel).
    #[arg(long = "webhook", required = true, value_parser = channel_and_url)]
    webhooks: Vec<(Channel, String)>,
    #[arg(long, env = "ACTIONS_TOPIC", default_value = JOURNEY_ACTIONS)]
    actions_topic: String,
    /// Where the `message_sent` events go (the pipeline's events topic).
    #[arg(long, env = "EVENTS_TOPIC", default_value = EVENTS)]
    events_topic: String,
    #[arg(long, env = "DISPATCH_GROUP_ID", default_value = "journey-dispatcher")]
    group_id: String,
    /// The first retry's delay (milliseconds); each next one doubles, up to 30 s.
    #[arg(long, env = "DISPATCH_BACKOFF_MS", default_value_t = 200)]
    backoff_ms: u64,
    /// A decision older than this (seconds since it was decided) is not sent but logged: a
    /// message a day late is worse than none, and a provider keeps idempotency keys about a day.
    #[arg(long, env = "DISPATCH_MAX_AGE_SECONDS", default_value_t = 86_400)]
    max_age_seconds: i64,
}

fn channel_and_url(text: &str) -> Result<(Channel, String), String> {
    let (channel, url) = text.split_once('=').ok_or("expected CHANNEL=URL")?;
    let channel = Channel::parse(channel).ok_or_else(|| format!("{channel:?} is not a channel"))?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    Ok((channel, url.to_owned()))
}

/// What became of one decision.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Sent,
    /// The webhook refused it for good (a 4xx other than 408 and 429).
    Refused(String),
}

pub async fn run(kafka: &KafkaArgs, args: DispatchArgs) -> anyhow::Result<ExitCode> {
    // Before any webhook is called: a send must not happen that cannot be reported back.
    crate::avro::prepare(&args.events_topic, omnistream_model::RecordKind::TouchpointEvent)?;
    let webhooks: BTreeMap<Channel, String> = args.webhooks.iter().cloned().collect();
    let consumer: StreamConsumer = kafka
        .client_config()?
        .set("group.id", &args.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .context("cannot create the Kafka consumer")?;
    consumer.subscribe(&[&args.actions_topic]).context("cannot subscribe")?;
    let producer: FutureProducer =
        kafka.idempotent_producer_config()?.create().context("cannot create the Kafka producer")?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut delivered: (HashSet<String>, VecDeque<String>) = Default::default();
    info!(actions = %args.actions_topic, events = %args.events_topic, "dispatching journey decisions");
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message.context("consuming decisions")?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let action =
            match message.payload().map(|bytes| decode_record::<JourneyAction>(crate::avro::readable(bytes)))
            {
                Some(Ok(action)) => action,
                // Written by a newer release, or not a decision: skipping it could lose a send.
                Some(Err(error)) => bail!(
                    "{} partition {} offset {} is not a decision this release reads: {error}",
                    message.topic(),
                    message.partition(),
                    message.offset()
                ),
                None => {
                    consumer.commit_message(&message, CommitMode::Async)?;
                    continue;
                }
            };
        let channel = action.channel.as_deref().and_then(Channel::parse);
        let webhook = channel.and_then(|channel| webhooks.get(&channel));
        let age = Utc::now() - action.decided_at;
        let to_send = action.outcome == JourneyOutcome::Send && !delivered.0.contains(&action.decision_id);
        if let (true, Some(url)) = (to_send, webhook) {
            if age > chrono::Duration::seconds(args.max_age_seconds) {
                error!(decision_id = %action.decision_id, customer_id = %action.customer_id, age_seconds = age.num_seconds(), "decision too old to send; not sent");
                consumer.commit_message(&message, CommitMode::Sync).context("committing a decision")?;
                continue;
            }
            // Interrupted while a webhook is down: the decision is not committed, nothing is lost.
            let delivery = tokio::select! {
                delivery = deliver(&http, url, &args, &action) => delivery,
                _ = tokio::signal::ctrl_c() => break,
            };
            match delivery {
                Delivery::Sent => {
                    publish_sent(&producer, &args.events_topic, &action).await?;
                    if delivered.1.len() >= DELIVERED_KEPT
                        && let Some(oldest) = delivered.1.pop_front()
                    {
                        delivered.0.remove(&oldest);
                    }
                    delivered.0.insert(action.decision_id.clone());
                    delivered.1.push_back(action.decision_id.clone());
                }
                Delivery::Refused(why) => {
                    error!(decision_id = %action.decision_id, customer_id = %action.customer_id, %why, "decision refused by the webhook; not sent");
                }
            }
        }
        // After the event is acknowledged: a crash before it repeats the call, never skips it.
        consumer.commit_message(&message, CommitMode::Sync).context("committing a decision")?;
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Calls the webhook until it answers 2xx or refuses for good. A webhook that is down (5xx,
/// 408, 429, no answer) is tried again with the same key, for as long as it takes: the decision
/// is not committed meanwhile, so stopping the dispatcher loses nothing.
async fn deliver(http: &reqwest::Client, url: &str, args: &DispatchArgs, action: &JourneyAction) -> Delivery {
    let body = json!({
        "decision_id": action.decision_id,
        "customer_id": action.customer_id,
        "channel": action.channel,
        "template": action.template,
        "journey_id": action.journey_id,
        "journey_version": action.journey_version,
        "step": action.step,
        "entry_key": action.entry_key,
        "decided_at": action.decided_at.to_rfc3339(),
    });
    let mut delay = Duration::from_millis(args.backoff_ms);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let sent = http.post(url).header("Idempotency-Key", &action.decision_id).json(&body).send().await;
        let failure = match sent {
            Ok(response) if response.status().is_success() => return Delivery::Sent,
            Ok(response) => {
                let status = response.status();
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if !retryable {
                    return Delivery::Refused(format!("{url} answered {status}"));
                }
                format!("{url} answered {status}")
            }
            Err(error) => format!("{url}: {error}"),
        };
        warn!(decision_id = %action.decision_id, attempt, %failure, "webhook failed; trying again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// The `message_sent` of a delivered decision, keyed by its customer; its event id is the
/// decision id, so a repeat after a crash is a retry the services drop.
async fn publish_sent(producer: &FutureProducer, topic: &str, action: &JourneyAction) -> anyhow::Result<()> {
    let channel =
        action.channel.as_deref().and_then(Channel::parse).context("a sent decision has a channel")?;
    let event = TouchpointEvent {
        event_id: action.decision_id.clone(),
        customer_id: action.customer_id.clone(),
        // When it was decided: a repeat after a crash is the same event, and frequency caps
        // count it when journeys counted it.
        occurred_at: action.decided_at,
        channel,
        source: Some("journey-dispatcher".to_owned()),
        payload: EventPayload::MessageSent {
            message_id: action.decision_id.clone(),
            campaign_id: Some(format!("{}/{}", action.journey_id, action.step)),
            purpose: Purpose::Marketing,
        },
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    };
    let encoded = encode_event(&event)?;
    let bytes = crate::avro::wire_bytes(topic, &encoded)?;
    let record = FutureRecord::to(topic).key(&action.customer_id).payload(bytes.as_ref());
    if let Err((error, _)) = producer.send(record, Duration::from_secs(60)).await {
        bail!("cannot publish message_sent of {}: {error}", action.decision_id);
    }
    Ok(())
}
