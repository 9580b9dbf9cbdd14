//! Differential tests of channel-affinity against the executable SPEC 4.3
//! (`omnistream_spec::affinity`): random valid streams (sends, several opens and clicks per
//! message, some before their send, opens of unknown messages, inbound messages, orders within and
//! beyond 24 h of a click, consent in any event-time order, producer retries, erasures, events
//! dated up to 24 h ahead or days late, append times advancing irregularly) driven through the
//! service's core exactly as the runtime does (`omnistream_testkit::replay`); the last record
//! written must be the model's at that record's `as_of`. The broker test runs the real binary.
//!
//! Doubles (sent, engaged, score, std_dev) are compared with a relative tolerance of 1e-9: the
//! service decays running counters, the model sums each fact's weight directly, so they differ in
//! the last bits. Everything else (ids, as_of, version, flags, the ranked set) must be equal; the
//! ranking order may differ only between channels whose scores are within the tolerance, and
//! `insufficient_data` is not compared when sent is within the tolerance of the threshold.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use omnistream_channel_affinity::{AFFINITY_OUTPUT, AffinityConfig, AffinityState, ChannelAffinityProcessor};
use omnistream_model::records::ChannelAffinity;
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent, decode_record, encode_event};
use omnistream_runtime::Processor;
use omnistream_spec::Record;
use omnistream_spec::affinity::{AffinitySettings, affinity, agree, close, written_at};
use omnistream_testkit::pipeline::ServiceTopics;
use omnistream_testkit::replay::replay;
use proptest::prelude::*;
use proptest::sample::Index;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
const MESSAGING: [Channel; 4] = [Channel::Email, Channel::Sms, Channel::Whatsapp, Channel::Push];
const ORDER_CHANNELS: [Channel; 4] = [Channel::Web, Channel::Store, Channel::Email, Channel::Sms];
const CONSENT_CHANNELS: [Channel; 5] =
    [Channel::Email, Channel::Sms, Channel::Whatsapp, Channel::Push, Channel::Web];

/// What one generated event is; times are seconds after `base()`.
#[derive(Debug, Clone)]
enum Item {
    /// A `message_sent` of a fresh message.
    Send {
        channel: usize,
        marketing: bool,
    },
    /// An open or click of a message sent earlier in the item list (dated `delta` seconds after
    /// its send, possibly before it), or of a message id never sent.
    Engage {
        send: Index,
        unknown: bool,
        channel: usize,
        click: bool,
        delta: i64,
    },
    Inbound {
        channel: usize,
    },
    /// An order; `after_click`: dated `delta` seconds after one of the clicks (0..30 h: within and
    /// beyond 24 h).
    Order {
        channel: usize,
        after_click: Option<(Index, i64)>,
    },
    Consent {
        channel: usize,
        marketing: bool,
        granted: bool,
    },
    Noise {
        delivered: bool,
        channel: usize,
    },
    Erasure,
}

fn item() -> impl Strategy<Value = Item> {
    // Sends crowd on some channels more than others, so that channels have enough data.
    let channel = || prop_oneof![4 => Just(0usize), 3 => Just(1usize), 2 => Just(2usize), 1 => Just(3usize)];
    prop_oneof![
        60 => (channel(), prop::bool::weighted(0.8)).prop_map(|(channel, marketing)| Item::Send { channel, marketing }),
        50 => (any::<Index>(), prop::bool::weighted(0.1), channel(), any::<bool>(),
              prop_oneof![3 => 0..3 * DAY, 1 => -3 * HOUR..0i64])
            .prop_map(|(send, unknown, channel, click, delta)| Item::Engage { send, unknown, channel, click, delta }),
        20 => channel().prop_map(|channel| Item::Inbound { channel }),
        20 => (0..4usize, prop::option::weighted(0.8, (any::<Index>(), 0..30 * HOUR)))
            .prop_map(|(channel, after_click)| Item::Order { channel, after_click }),
        15 => (0..5usize, prop::bool::weighted(0.8), prop::bool::weighted(0.6))
            .prop_map(|(channel, marketing, granted)| Item::Consent { channel, marketing, granted }),
        10 => (any::<bool>(), 0..4usize).prop_map(|(delivered, channel)| Item::Noise { delivered, channel }),
        2 => Just(Item::Erasure),
    ]
}

/// How late (or, negative, how early: clock skew, at most 24 h) an event reaches the broker after
/// its event time, in seconds.
fn delay() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0..600i64,
        2 => 0..5 * DAY,
        2 => -24 * HOUR..0i64,
    ]
}

/// Which streams to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mix {
    /// Everything SPEC 4 allows.
    Full,
    /// Mostly in order: engagements and orders arrive at their event time (sends, consent and
    /// the rest may still arrive days late, retried, or erased), nothing is dated ahead of the
    /// clock, and inbound messages come only on push, where nothing is sent. The cases the full
    /// mix reaches rarely: long in-order histories.
    Tame,
}

/// A customer's records in offset order with their append times (which never decrease; an
/// event is dated at most 24 h after its append time, so every one is valid).
fn stream(customer: &'static str, mix: Mix) -> impl Strategy<Value = Vec<(TouchpointEvent, DateTime<Utc>)>> {
    let items = prop::collection::vec((item(), 0..40 * DAY, delay()), 1..60).prop_map(move |items| {
        if mix == Mix::Full {
            return items;
        }
        let tame = |(item, at, delay): (Item, i64, i64)| {
            let (item, delay) = match item {
                Item::Engage { channel: 3, send, unknown, click, delta } => {
                    (Item::Engage { channel: 0, send, unknown, click, delta }, 0)
                }
                item @ (Item::Engage { .. } | Item::Order { .. }) => (item, 0),
                Item::Send { channel: 3, marketing } => (Item::Send { channel: 0, marketing }, delay),
                Item::Inbound { .. } => (Item::Inbound { channel: 3 }, delay),
                item => (item, delay),
            };
            (item, at, delay.abs())
        };
        items.into_iter().map(tame).collect()
    });
    let retries = prop::collection::vec((any::<Index>(), 0..2 * DAY), 0..4);
    (items, retries).prop_map(move |(items, retries)| {
        let event = |n: usize, payload: EventPayload, at: i64, channel: Channel| TouchpointEvent {
            event_id: format!("{customer}-e{n}"),
            customer_id: customer.to_owned(),
            occurred_at: base() + chrono::Duration::seconds(at),
            channel,
            source: None,
            payload,
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        // Sends first (engagements refer to them), then clicks (orders refer to them), then the rest.
        let sends: Vec<(usize, i64)> = items
            .iter()
            .enumerate()
            .filter_map(|(n, (item, at, _))| matches!(item, Item::Send { .. }).then_some((n, *at)))
            .collect();
        let mut built: Vec<Option<(TouchpointEvent, i64)>> = vec![None; items.len()];
        let mut clicks: Vec<(i64, usize)> = Vec::new();
        for (n, (item, at, _)) in items.iter().enumerate() {
            let (payload, at, channel) = match item {
                Item::Send { channel, marketing } => {
                    let purpose = if *marketing { Purpose::Marketing } else { Purpose::Transactional };
                    let payload =
                        EventPayload::MessageSent { message_id: format!("m{n}"), campaign_id: None, purpose };
                    (payload, *at, MESSAGING[*channel])
                }
                Item::Engage { send, unknown, channel, click, delta } => {
                    let (message_id, at, channel) = match sends.get(send.index(sends.len().max(1))) {
                        Some(&(s, sent_at)) if !unknown => {
                            let Item::Send { channel, .. } = items[s].0 else { unreachable!() };
                            (format!("m{s}"), sent_at + delta, MESSAGING[channel])
                        }
                        _ => (format!("unknown-{n}"), *at, MESSAGING[*channel]),
                    };
                    let payload = if *click {
                        clicks.push((at, n));
                        EventPayload::MessageClicked { message_id, url: None }
                    } else {
                        EventPayload::MessageOpened { message_id }
                    };
                    (payload, at, channel)
                }
                _ => continue,
            };
            built[n] = Some((event(n, payload, at, channel), at));
        }
        for (n, (item, at, _)) in items.iter().enumerate() {
            let (payload, at, channel) = match item {
                Item::Send { .. } | Item::Engage { .. } => continue,
                Item::Inbound { channel } => (
                    EventPayload::MessageReceived { conversation_id: None, text_len: Some(12) },
                    *at,
                    MESSAGING[*channel],
                ),
                Item::Order { channel, after_click } => {
                    let at = match after_click {
                        Some((click, delta)) if !clicks.is_empty() => {
                            clicks[click.index(clicks.len())].0 + delta
                        }
                        _ => *at,
                    };
                    let payload = EventPayload::OrderPlaced {
                        order_id: format!("o{n}"),
                        value_minor: 1_000,
                        currency: "EUR".into(),
                        items: None,
                    };
                    (payload, at, ORDER_CHANNELS[*channel])
                }
                Item::Consent { channel, marketing, granted } => {
                    let purpose = if *marketing { Purpose::Marketing } else { Purpose::Transactional };
                    (
                        EventPayload::ConsentChanged { purpose, granted: *granted },
                        *at,
                        CONSENT_CHANNELS[*channel],
                    )
                }
                Item::Noise { delivered: true, channel } => {
                    (EventPayload::MessageDelivered { message_id: format!("m{n}") }, *at, MESSAGING[*channel])
                }
                Item::Noise { delivered: false, .. } => {
                    (EventPayload::PageViewed { url: "/".into() }, *at, Channel::Web)
                }
                Item::Erasure => (EventPayload::ErasureRequested, *at, Channel::Web),
            };
            built[n] = Some((event(n, payload, at, channel), at));
        }
        // Arrival: each event reaches the broker `delay` after its event time (never more than
        // 24 h before it); retries of an event arrive again later.
        let mut arrivals: Vec<(i64, usize, TouchpointEvent)> = built
            .into_iter()
            .zip(&items)
            .enumerate()
            .map(|(n, (built, (_, _, delay)))| {
                let (event, at) = built.expect("every item built");
                (at + delay, n, event)
            })
            .collect();
        let retries = if arrivals.is_empty() { Vec::new() } else { retries };
        for (which, later) in retries {
            let (arrives, _, copy) = arrivals[which.index(arrivals.len())].clone();
            arrivals.push((arrives + later, arrivals.len(), copy));
        }
        arrivals.sort_by_key(|(arrives, n, _)| (*arrives, *n));
        let mut clock = i64::MIN;
        arrivals
            .into_iter()
            .map(|(arrives, _, event)| {
                clock = clock.max(arrives);
                (event, base() + chrono::Duration::seconds(clock))
            })
            .collect()
    })
}

fn settings() -> impl Strategy<Value = AffinitySettings> {
    prop_oneof![
        3 => Just(AffinitySettings::default()),
        2 => (
            prop::sample::select(vec![30.0, 7.0, 1.5]),
            prop::sample::select(vec![(1.0, 1.0), (2.0, 5.0), (0.5, 0.5)]),
            prop::sample::select(vec![3.0, 1.0, 0.5, 0.0]),
            prop::sample::select(vec![1.0, 0.0, 2.5]),
        )
            .prop_map(|(half_life_days, (prior_alpha, prior_beta), min_sends, order_weight)| AffinitySettings {
                half_life_days,
                prior_alpha,
                prior_beta,
                min_sends,
                order_weight,
            }),
    ]
}

fn processor(settings: &AffinitySettings) -> ChannelAffinityProcessor {
    ChannelAffinityProcessor {
        config: Arc::new(AffinityConfig {
            half_life_days: settings.half_life_days,
            prior_alpha: settings.prior_alpha,
            prior_beta: settings.prior_beta,
            min_sends: settings.min_sends,
            order_weight: settings.order_weight,
        }),
    }
}

fn history(records: &[(TouchpointEvent, DateTime<Utc>)]) -> Vec<Record> {
    records
        .iter()
        .map(|(event, at)| Record { event: event.clone(), appended_at: at.timestamp_millis() })
        .collect()
}

/// The last record the core wrote for `customer` (`None`: none or a tombstone) and the model's.
fn both(
    settings: &AffinitySettings,
    customer: &str,
    records: &[(TouchpointEvent, DateTime<Utc>)],
) -> (Option<ChannelAffinity>, Option<ChannelAffinity>, Vec<Record>) {
    let processor = processor(settings);
    let until = records.last().map(|(_, at)| *at).unwrap_or_else(base);
    let replayed = replay(&processor, records, until);
    let service = replayed
        .last(AFFINITY_OUTPUT, customer)
        .flatten()
        .map(|bytes| decode_record::<ChannelAffinity>(bytes).expect("decodes"));
    let history = history(records);
    let model = service.as_ref().and_then(|s| affinity(customer, &history, s.as_of, settings));
    (service, model, history)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn channel_affinity_agrees_with_the_spec_on_every_valid_stream(
        settings in settings(),
        records in stream("c-1", Mix::Full),
    ) {
        agrees(&settings, &records)?;
    }

    #[test]
    fn channel_affinity_agrees_with_the_spec_on_streams_mostly_in_order(
        settings in settings(),
        records in stream("c-1", Mix::Tame),
    ) {
        agrees(&settings, &records)?;
    }
}

/// The core's state after `records`, as the runtime feeds them (each id once, as of its append).
fn state_after(
    processor: &ChannelAffinityProcessor,
    records: &[(TouchpointEvent, DateTime<Utc>)],
) -> Option<AffinityState> {
    let mut state = None;
    let mut seen = std::collections::HashSet::new();
    for (event, at) in records {
        // An event of no concern is not applied and its id not remembered (docs/runtime.md).
        if (state.is_none() || processor.reads(event)) && seen.insert(event.event_id.clone()) {
            processor.apply(&mut state, event, *at);
        }
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A merge (identity resolution) against the SPEC: the winner's record once the loser's state
    /// is folded in is the record of the winner's events followed by the loser's, all under the
    /// winner's id, recomputed from that whole history (erasures left out: they end a history).
    #[test]
    fn a_merged_affinity_is_the_specs_of_both_histories(
        settings in settings(),
        winner in stream("c-1", Mix::Full),
        loser in stream("c-2", Mix::Full),
    ) {
        let kept = |records: Vec<(TouchpointEvent, DateTime<Utc>)>| -> Vec<(TouchpointEvent, DateTime<Utc>)> {
            records.into_iter().filter(|(e, _)| !matches!(e.payload, EventPayload::ErasureRequested)).collect()
        };
        let (winner, loser) = (kept(winner), kept(loser));
        prop_assume!(!loser.is_empty());
        let processor = processor(&settings);
        let mut merged = state_after(&processor, &winner);
        let handed = state_after(&processor, &loser).expect("the loser has a state");
        let at = winner.iter().chain(&loser).map(|(_, at)| *at).max().expect("records");
        let outputs = processor.merge(&mut merged, "c-1", "c-2", "merge-1", handed, at);
        let record = outputs[0].value.clone().expect("a record");
        let mut both = winner.clone();
        both.extend(loser.into_iter().map(|(mut event, at)| {
            event.customer_id = "c-1".into();
            (event, at)
        }));
        let model = affinity("c-1", &history(&both), record.as_of, &settings).expect("a model record");
        agree(&record, &model, &settings).map_err(TestCaseError::fail)?;
    }
}

fn agrees(
    settings: &AffinitySettings,
    records: &[(TouchpointEvent, DateTime<Utc>)],
) -> Result<(), TestCaseError> {
    let (service, model, history) = both(settings, "c-1", records);
    // The record written last is stamped with the partition clock of its event (SPEC 4).
    let clock = written_at(&history);
    prop_assert_eq!(service.as_ref().map(|s| s.as_of), clock, "as_of");
    if clock.is_none() {
        // Nothing of a current relationship: no record, or the erasure's tombstone.
        prop_assert!(service.is_none());
    }
    if let (Some(service), Some(model)) = (&service, &model) {
        let agreed = agree(service, model, settings);
        prop_assert!(agreed.is_ok(), "{}\n{:#?}", agreed.unwrap_err(), records);
    } else {
        prop_assert_eq!(service.is_some(), model.is_some());
    }
    Ok(())
}

/// The real service over the real broker: a few hundred random customers' streams (with their
/// erasures), non-default settings by flag; each customer's last committed record is the model's
/// at its `as_of`, from the input topic as read back with the broker's append times.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_broker_every_customers_last_affinity_is_the_specs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let settings = AffinitySettings {
        half_life_days: 7.0,
        prior_alpha: 1.0,
        prior_beta: 2.0,
        min_sends: 2.0,
        order_weight: 1.5,
    };
    let customers: Vec<&'static str> =
        (0..300).map(|n| &*Box::leak(format!("c-{n}").into_boxed_str())).collect();
    let mix = Mix::Full;
    let mut runner = TestRunner::deterministic();
    // Event times shifted so that the latest is 12 h ahead of the broker's clock (valid: ≤ 24 h)
    // and the earliest some 40 days behind it.
    let mut all: Vec<TouchpointEvent> = Vec::new();
    for customer in &customers {
        all.extend(
            stream(customer, mix).new_tree(&mut runner).unwrap().current().into_iter().map(|(e, _)| e),
        );
    }
    let latest = all.iter().map(|e| e.occurred_at).max().unwrap();
    let ahead = if mix == Mix::Full { chrono::Duration::hours(12) } else { -chrono::Duration::hours(1) };
    let shift = Utc::now() + ahead - latest;
    for event in &mut all {
        event.occurred_at += shift;
    }
    let topics = ServiceTopics::create("spec-affinity", 1).await;
    let output = topics.outputs[0].clone();
    let encoded: Vec<(String, Vec<u8>)> =
        all.iter().map(|e| (e.customer_id.clone(), encode_event(e).unwrap())).collect();
    omnistream_testkit::produce_all(&topics.input, encoded).await;
    let mut args = topics.runtime_args("spec", 0);
    for (flag, value) in [
        ("--affinity-topic", output.clone()),
        ("--half-life-days", settings.half_life_days.to_string()),
        ("--prior-alpha", settings.prior_alpha.to_string()),
        ("--prior-beta", settings.prior_beta.to_string()),
        ("--min-sends", settings.min_sends.to_string()),
        ("--order-weight", settings.order_weight.to_string()),
    ] {
        args.extend([flag.to_owned(), value]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _service = omnistream_testkit::ServiceProcess::spawn(
        &omnistream_testkit::workspace_binary("channel-affinity"),
        "spec-affinity",
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    );
    let input_topic = topics.input.clone();
    let (histories, actual) = tokio::task::spawn_blocking(move || {
        use rdkafka::message::Message;
        let histories = common::input_histories(&input_topic);
        // Done when every customer's last record is stamped as of their last applied event (or
        // is a tombstone when they were erased last).
        let wanted: BTreeMap<String, Option<DateTime<Utc>>> =
            histories.iter().map(|(customer, history)| (customer.clone(), written_at(history))).collect();
        let mut actual: BTreeMap<String, Option<ChannelAffinity>> = BTreeMap::new();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            actual.clear();
            for message in omnistream_testkit::read_committed_to_end(&output) {
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let value = message.payload().map(|bytes| decode_record::<ChannelAffinity>(bytes).unwrap());
                actual.insert(key, value);
            }
            let done = wanted.iter().all(|(customer, clock)| match (clock, actual.get(customer)) {
                (Some(clock), Some(Some(record))) => record.as_of == *clock,
                (None, Some(None)) => true,
                _ => false,
            });
            if done {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (histories, actual)
    })
    .await
    .unwrap();
    assert_eq!(histories.len(), customers.len());
    let mut failures = Vec::new();
    for (customer, history) in &histories {
        let service = actual.get(customer).cloned().flatten();
        let model = service.as_ref().and_then(|s| affinity(customer, history, s.as_of, &settings));
        let clock = written_at(history);
        match (&service, &model) {
            (Some(s), Some(m)) if Some(s.as_of) == clock => {
                if let Err(difference) = agree(s, m, &settings) {
                    failures.push(format!("{customer}: {difference}"));
                }
            }
            (None, None) if clock.is_none() && actual.contains_key(customer) => {}
            _ => failures.push(format!("{customer}: service {service:?}, expected as of {clock:?}")),
        }
    }
    // The first difference in full, then one line per customer.
    let summary: Vec<&str> = failures
        .iter()
        .enumerate()
        .map(|(n, f)| if n == 0 { f.as_str() } else { f.lines().next().unwrap_or("") })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} customers differ:\n{}",
        failures.len(),
        histories.len(),
        summary.join("\n")
    );
}

// ---- focused tests, hand-written streams ----

fn at(days: f64) -> DateTime<Utc> {
    base() + chrono::Duration::milliseconds((days * 86_400_000.0).round() as i64)
}

/// A hand-written stream on the default settings: (channel, payload, occurred_at day, appended day).
fn run(stream: &[(Channel, EventPayload, f64, f64)]) -> (ChannelAffinity, ChannelAffinity) {
    let records: Vec<(TouchpointEvent, DateTime<Utc>)> = stream
        .iter()
        .enumerate()
        .map(|(n, (channel, payload, occurred, appended))| {
            let event = TouchpointEvent {
                event_id: format!("h-e{n}"),
                customer_id: "h".to_owned(),
                occurred_at: at(*occurred),
                channel: *channel,
                source: None,
                payload: payload.clone(),
                context: BTreeMap::new(),
                identifiers: Vec::new(),
            };
            (event, at(*appended))
        })
        .collect();
    let (service, model, _) = both(&AffinitySettings::default(), "h", &records);
    (service.expect("a record"), model.expect("a record"))
}

fn sent(id: &str) -> EventPayload {
    EventPayload::MessageSent { message_id: id.into(), campaign_id: None, purpose: Purpose::Marketing }
}
fn opened(id: &str) -> EventPayload {
    EventPayload::MessageOpened { message_id: id.into() }
}
fn clicked(id: &str) -> EventPayload {
    EventPayload::MessageClicked { message_id: id.into(), url: None }
}
fn inbound() -> EventPayload {
    EventPayload::MessageReceived { conversation_id: None, text_len: None }
}
fn order() -> EventPayload {
    EventPayload::OrderPlaced { order_id: "o".into(), value_minor: 100, currency: "EUR".into(), items: None }
}

/// The decayed weight of a fact `age` days old, on the default half-life (30 d).
fn w(age: f64) -> f64 {
    2f64.powf(-age / 30.0)
}

/// Asserts the service's and the model's (sent, engaged) of `channel` both equal `expected`.
fn assert_counts(stream: &[(Channel, EventPayload, f64, f64)], channel: Channel, expected: (f64, f64)) {
    let (service, model) = run(stream);
    let counts = |r: &ChannelAffinity| {
        let c = r.channels.iter().find(|c| c.channel == channel).expect("listed");
        (c.sent, c.engaged)
    };
    let (s, m) = (counts(&service), counts(&model));
    assert!(close(m.0, expected.0) && close(m.1, expected.1), "the model: {m:?}, by hand: {expected:?}");
    assert!(close(s.0, expected.0) && close(s.1, expected.1), "the service: {s:?}, by hand: {expected:?}");
}

/// SPEC 4.3: "An inbound message with no send before it counts as a send"; this one has a send
/// before it, so sent is that send's decayed weight, 2^(-10/30) = 0.7937; the reply weighs 1 and
/// is capped at the sends (docs: "the record caps the engagements at the sends"). The service
/// reports sent = engaged = 1.0: it tops the sends up to the engagements, counting the 0.2063 the
/// send decayed before the reply as sends that never happened.
#[test]
fn an_inbound_reply_to_an_older_send_does_not_top_the_sends_up() {
    let stream = [(Channel::Sms, sent("m"), 0.0, 0.0), (Channel::Sms, inbound(), 10.0, 10.0)];
    assert_counts(&stream, Channel::Sms, (w(10.0), w(10.0)));
}

/// SPEC 4: "the first open or click of a `message_id` is one engagement" and "where event time
/// matters … event time decides, and late events are handled as below, not by arrival order"
/// (docs: counts "give the same counts in any arrival order"). The first open of m is the one
/// dated day 1, arriving late: as of day 6 it weighs 2^(-5/30) = 0.8909, the sends 2 × 2^(-6/30) =
/// 1.7411. The service keeps the open that arrived first (day 5, 0.9772).
#[test]
fn the_first_engagement_of_a_message_is_the_first_by_event_time() {
    let stream = [
        (Channel::Email, sent("m"), 0.0, 0.0),
        (Channel::Email, sent("n"), 0.0, 0.0),
        (Channel::Email, opened("m"), 5.0, 5.0),
        (Channel::Email, opened("m"), 1.0, 6.0),
    ];
    assert_counts(&stream, Channel::Email, (2.0 * w(6.0), w(5.0)));
}

/// SPEC 4.3: "an order within 24 h of a click on that channel counted extra"; SPEC 4: "Where a
/// fact arrives before its cause … applies it when the cause arrives, so the result equals
/// event-time order". The order (day 1.1) arrives before the click that precedes it (day 1.0,
/// arriving day 1.2): as of day 1.2, engaged = the click 2^(-0.2/30) + the order 2^(-0.1/30) =
/// 1.9931 of 3 sends 3 × 2^(-1.2/30) = 2.9180. The service credits no order (0.9954).
#[test]
fn an_order_arriving_before_its_click_is_credited_when_the_click_arrives() {
    let stream = [
        (Channel::Sms, sent("m"), 0.0, 0.0),
        (Channel::Sms, sent("n"), 0.0, 0.0),
        (Channel::Sms, sent("o"), 0.0, 0.0),
        (Channel::Web, order(), 1.1, 1.1),
        (Channel::Sms, clicked("m"), 1.0, 1.2),
    ];
    assert_counts(&stream, Channel::Sms, (3.0 * w(1.2), w(0.2) + w(0.1)));
}

/// The same rule for an order arriving late, dated between two clicks: the click of day 1.0 is
/// within 24 h before it, so as of day 1.3 engaged = the first click 2^(-0.3/30) + the order
/// 2^(-0.2/30) = 1.9885 of 3 × 2^(-1.3/30) = 2.9111 sends. The service compares the order with
/// the latest click only (day 1.2, after the order) and credits nothing (0.9931).
#[test]
fn a_late_order_is_credited_to_the_click_before_it_not_only_the_latest_click() {
    let stream = [
        (Channel::Sms, sent("m"), 0.0, 0.0),
        (Channel::Sms, sent("n"), 0.0, 0.0),
        (Channel::Sms, sent("o"), 0.0, 0.0),
        (Channel::Sms, clicked("m"), 1.0, 1.0),
        (Channel::Sms, clicked("m"), 1.2, 1.2),
        (Channel::Web, order(), 1.1, 1.3),
    ];
    assert_counts(&stream, Channel::Sms, (3.0 * w(1.3), w(0.3) + w(0.2)));
}

/// docs: "the record's `as_of` is the partition clock (SPEC 4), and the counts are decayed to
/// it; an event dated ahead of it (clock skew) is counted undecayed until the clock passes it".
/// An email sent dated 12 h ahead (allowed: SPEC 2) must not age the SMS send of day 0: as of
/// day 0.5 it weighs 2^(-0.5/30) = 0.9885. The service decayed it to the later event's time (day
/// 1: 0.9772), its "reference", though the record said as of day 0.5.
#[test]
fn a_future_dated_event_does_not_age_the_counts_beyond_as_of() {
    let stream = [(Channel::Sms, sent("m"), 0.0, 0.0), (Channel::Email, sent("e"), 1.0, 0.5)];
    assert_counts(&stream, Channel::Sms, (w(0.5), 0.0));
}

/// The same rule when the reply arrives before the send it answers (SPEC 4: "Events are applied
/// in offset order; where event time matters … event time decides"): the send of day 0 is
/// before the reply of day 1, so as of day 1.5 sent is that send, 2^(-1.5/30) = 0.9659, and the
/// reply (0.9885) is capped at it. docs/channel-affinity.md states this as a known limit ("an
/// inbound message that arrives before the (older) send that prompted it counts as a send of its
/// own, and the late send is added on top"): the service reports 1.9545 sends.
#[test]
fn an_inbound_reply_arriving_before_its_older_send_is_no_send_of_its_own() {
    let stream = [(Channel::Sms, inbound(), 1.0, 1.0), (Channel::Sms, sent("m"), 0.0, 1.5)];
    assert_counts(&stream, Channel::Sms, (w(1.5), w(1.5)));
}
