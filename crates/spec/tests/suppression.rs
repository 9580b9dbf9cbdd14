//! Differential tests of suppression against the executable SPEC 4.2
//! (`omnistream_spec::suppression`): random valid streams of one customer (sends of both purposes
//! on every messaging channel, dated up to 24 h ahead or behind; consent in any event-time order;
//! hard bounces and spam reports; tickets resolved before they open, by arrival or by date;
//! orders; `timezone` traits set, set once and unset in any order, in zones with daylight saving;
//! producer retries; erasures; append times advancing irregularly over hours and days across DST
//! changes) are replayed through the service's core exactly as the runtime drives it, timers
//! included (`omnistream_testkit::replay`). Every record the core writes must be the SPEC's state
//! as of its `evaluated_at`, and after every input and at the end the latest record must be what
//! the SPEC says then (no pending change left unwritten). The broker test runs the real binary.

mod common;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use omnistream_model::records::{ChannelSuppression, SuppressionState, SuppressionStatus, reason_code};
use omnistream_model::{
    Channel, EventPayload, Purpose, TouchpointEvent, TraitValue, decode_record, encode_event,
};
use omnistream_spec::Record;
use omnistream_spec::suppression::{
    Cap, Disagreement, Quiet, Rules, canonical, check_last_record, excuse, suppression,
};
use omnistream_suppression::SUPPRESSIONS_OUTPUT as SUPPRESSIONS;
use omnistream_suppression::{FrequencyCap, QuietHours, Suppression};
use omnistream_testkit::replay::replay;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------------
// Rules: the SPEC's defaults, and a set that exercises every configurable rule.

fn clock(hour: u32, minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(hour, minute, 0).unwrap()
}

/// Every rule on: opt-in channels, a short ticket maximum, several caps on one channel, quiet
/// hours that end at a daylight-saving change (02:00 in Berlin, Sydney and New York) and one that
/// does not wrap midnight, a cool-down, a 50 % holdout.
fn busy_rules() -> Rules {
    Rules {
        ticket_max_days: 0.5,
        consent_required: vec![Channel::Sms, Channel::Whatsapp],
        caps: vec![
            Cap { channel: Channel::Email, max: 2, window_hours: 6.0 },
            Cap { channel: Channel::Email, max: 3, window_hours: 24.0 },
            Cap { channel: Channel::Sms, max: 1, window_hours: 24.0 },
            Cap { channel: Channel::Push, max: 2, window_hours: 3.0 },
        ],
        quiet: vec![
            Quiet {
                channels: vec![Channel::Sms, Channel::Whatsapp, Channel::Push],
                start: clock(21, 0),
                end: clock(8, 0),
            },
            // Ends at 02:30, a repeated time in Berlin and Sydney in the autumn (the clocks set
            // back re-enter the window) and a skipped one in the spring.
            Quiet { channels: vec![Channel::Email], start: clock(1, 0), end: clock(2, 30) },
            Quiet { channels: vec![Channel::Push], start: clock(12, 0), end: clock(13, 30) },
        ],
        order_cooldown_hours: 6.0,
        holdout_percent: 50.0,
    }
}

/// The same rules in the service's configuration type.
fn service(rules: &Rules) -> Suppression {
    let rules = omnistream_suppression::Rules {
        ticket_max_days: rules.ticket_max_days,
        consent_required: rules.consent_required.clone(),
        frequency_caps: rules
            .caps
            .iter()
            .map(|c| FrequencyCap { channel: c.channel, max: c.max, window_hours: c.window_hours })
            .collect(),
        quiet_hours: rules
            .quiet
            .iter()
            .map(|q| QuietHours { channels: q.channels.clone(), start: q.start, end: q.end })
            .collect(),
        order_cooldown_hours: rules.order_cooldown_hours,
        holdout_percent: rules.holdout_percent,
    };
    Suppression::new(rules)
}

// ---------------------------------------------------------------------------------------------
// Streams.

const ZONES: [&str; 8] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "UTC",
    "Mars/Olympus",
    "Europe/London",
];

/// One input record before it has times: what happened, and a retry marker.
#[derive(Debug, Clone)]
enum Step {
    Event {
        payload: EventPayload,
        channel: Channel,
    },
    /// A producer retry of the `n`-th earlier event (modulo their count).
    Retry(usize),
}

/// A step, the append-time gap before it (millis) and its event time relative to its append time
/// (minutes, within SPEC 2's 24 h of skew).
type Timed = (Step, i64, i64);

fn messaging() -> impl Strategy<Value = Channel> {
    prop::sample::select(Channel::MESSAGING.to_vec())
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop::sample::select(vec![Purpose::Marketing, Purpose::Transactional])
}

fn step() -> impl Strategy<Value = Step> {
    let ticket = (0..3u8).prop_map(|t| format!("T-{t}"));
    let zone = prop_oneof![
        4 => prop::sample::select(ZONES.to_vec()).prop_map(|z| TraitValue::String(z.to_owned())),
        1 => Just(TraitValue::Long(5)),
        1 => Just(TraitValue::Null),
    ];
    let traits = (0..3u8, zone).prop_map(|(how, value)| {
        let one = BTreeMap::from([("timezone".to_owned(), value)]);
        let (set, set_once, unset) = match how {
            0 => (one, BTreeMap::new(), Vec::new()),
            1 => (BTreeMap::new(), one, Vec::new()),
            _ => (BTreeMap::new(), BTreeMap::new(), vec!["timezone".to_owned()]),
        };
        EventPayload::TraitsUpdated { set, set_once, unset }
    });
    let event = |payload: BoxedStrategy<EventPayload>, channel: BoxedStrategy<Channel>| {
        (payload, channel).prop_map(|(payload, channel)| Step::Event { payload, channel })
    };
    let any_channel = prop::sample::select(Channel::ALL.to_vec()).boxed();
    prop_oneof![
        8 => event(
            prop_oneof![3 => Just(Purpose::Marketing), 1 => Just(Purpose::Transactional)]
                .prop_map(|purpose| EventPayload::MessageSent {
                    message_id: String::new(),
                    campaign_id: None,
                    purpose
                })
                .boxed(),
            messaging().boxed()
        ),
        4 => event(
            (purpose(), any::<bool>()).prop_map(|(purpose, granted)| EventPayload::ConsentChanged { purpose, granted }).boxed(),
            messaging().boxed()
        ),
        2 => event(
            any::<bool>().prop_map(|hard| EventPayload::MessageBounced { message_id: "m".into(), hard }).boxed(),
            messaging().boxed()
        ),
        1 => event(Just(EventPayload::SpamReported { message_id: "m".into() }).boxed(), messaging().boxed()),
        2 => event(
            ticket.clone().prop_map(|ticket_id| EventPayload::SupportTicketOpened { ticket_id, topic: None }).boxed(),
            any_channel.clone()
        ),
        2 => event(
            ticket.prop_map(|ticket_id| EventPayload::SupportTicketResolved { ticket_id }).boxed(),
            any_channel.clone()
        ),
        2 => event(
            Just(EventPayload::OrderPlaced {
                order_id: "o".into(),
                value_minor: 100,
                currency: "EUR".into(),
                items: None
            })
            .boxed(),
            any_channel.clone()
        ),
        3 => event(traits.boxed(), any_channel.clone()),
        1 => event(Just(EventPayload::PageViewed { url: "/".into() }).boxed(), any_channel),
        1 => (0..40usize).prop_map(Step::Retry),
        // Rare: an erasure, after which the stream goes on (a new relationship or dropped events).
        1 => prop::sample::select(vec![false, false, false, true]).prop_map(|erase| if erase {
            Step::Event { payload: EventPayload::ErasureRequested, channel: Channel::Web }
        } else {
            Step::Event { payload: EventPayload::PageViewed { url: "/".into() }, channel: Channel::Web }
        }),
    ]
}

fn timed() -> impl Strategy<Value = Timed> {
    let gap = prop_oneof![
        2 => Just(0i64),
        2 => 1..60_000i64,
        4 => (1..240i64).prop_map(|m| m * 60_000),
        2 => (1..40i64).prop_map(|h| h * 3_600_000 + 17),
    ];
    let skew = prop_oneof![3 => Just(0i64), 3 => -120..120i64, 2 => -1440..1440i64];
    (step(), gap, skew)
}

/// Instants a couple of days before daylight-saving changes (Berlin and London in March and
/// October, New York in March and November, Sydney in April and October) and one without.
fn base() -> impl Strategy<Value = DateTime<Utc>> {
    let days = prop::sample::select(vec![(3, 27), (10, 23), (3, 6), (10, 30), (4, 3), (10, 2), (11, 20)]);
    (days, 0..2880i64).prop_map(|((month, day), minutes)| {
        Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap() + Duration::minutes(minutes)
    })
}

/// Turns steps into the customer's records: (event, broker append time), append times never
/// decreasing, event times within 24 h ahead of them (SPEC 2 validation).
fn records(customer: &str, base: DateTime<Utc>, steps: &[Timed]) -> Vec<(TouchpointEvent, DateTime<Utc>)> {
    let mut out: Vec<(TouchpointEvent, DateTime<Utc>)> = Vec::new();
    let mut appended = base;
    for (n, (step, gap, skew)) in steps.iter().enumerate() {
        appended += Duration::milliseconds(*gap);
        let event = match step {
            Step::Retry(which) if !out.is_empty() => out[which % out.len()].0.clone(),
            Step::Retry(_) => continue,
            Step::Event { payload, channel } => {
                let mut payload = payload.clone();
                // Consent, bounces and spam reports are dated on whole seconds, so that they often
                // tie (offset order decides).
                let occurred_at = appended + Duration::minutes(*skew);
                let second =
                    occurred_at - Duration::milliseconds(occurred_at.timestamp_subsec_millis().into());
                let occurred_at = match payload {
                    EventPayload::ConsentChanged { .. }
                    | EventPayload::MessageBounced { .. }
                    | EventPayload::SpamReported { .. } => second,
                    _ => occurred_at,
                };
                if let EventPayload::MessageSent { message_id, .. } = &mut payload {
                    *message_id = format!("m-{n}");
                }
                TouchpointEvent {
                    event_id: format!("{customer}-e{n}"),
                    customer_id: customer.to_owned(),
                    occurred_at,
                    channel: *channel,
                    source: None,
                    payload,
                    context: BTreeMap::new(),
                    identifiers: Vec::new(),
                }
            }
        };
        out.push((event, appended));
    }
    out
}

fn history(records: &[(TouchpointEvent, DateTime<Utc>)]) -> Vec<Record> {
    records
        .iter()
        .map(|(event, at)| Record { event: event.clone(), appended_at: at.timestamp_millis() })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Comparison.

fn decode(value: &Option<Vec<u8>>) -> Option<SuppressionState> {
    value.as_deref().map(|bytes| decode_record::<SuppressionState>(bytes).expect("a SuppressionState"))
}

/// Replays every prefix of `records` through the core (each up to just before the next record's
/// append time, the last up to `end`), and holds every record written to the SPEC.
fn differential(
    customer: &str,
    rules: &Rules,
    records: &[(TouchpointEvent, DateTime<Utc>)],
    end: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    let core = service(rules);
    let history = history(records);
    let model =
        |prefix: usize, at: DateTime<Utc>| canonical(suppression(customer, &history[..prefix], at, rules));
    let key = (SUPPRESSIONS.to_owned(), customer.to_owned());
    let mut written: Vec<Option<SuppressionState>> = Vec::new();
    for k in 1..=records.len() {
        let appended = records[k - 1].1;
        let until = records.get(k).map_or(end, |(_, next)| (*next - Duration::milliseconds(1)).max(appended));
        let replayed = replay(&core, &records[..k], until);
        prop_assert_eq!(replayed.refused, 0, "state_limit refusals");
        let outputs: Vec<Option<SuppressionState>> =
            replayed.outputs.get(&key).map(|values| values.iter().map(decode).collect()).unwrap_or_default();
        prop_assert!(
            outputs.len() >= written.len() && outputs[..written.len()] == written[..],
            "replay is a prefix"
        );
        let new = &outputs[written.len()..];
        for (i, output) in new.iter().enumerate() {
            let (prefix, expected) = match output {
                // Only an erasure writes a tombstone: it is this record's.
                None => (k, model(k, appended)),
                Some(state) => {
                    let at = state.evaluated_at;
                    // A timer of the same instant fires before the record (SPEC 4: "a timer due
                    // before the next record's timestamp fires before that record is applied"):
                    // the state before the record.
                    let before_record = at == appended
                        && new[i + 1..].iter().any(|o| o.as_ref().is_none_or(|o| o.evaluated_at == at));
                    let prefix = if before_record { k - 1 } else { k };
                    (prefix, model(prefix, at))
                }
            };
            prop_assert_eq!(
                excuse(customer, &history[..prefix], rules, canonical(output.clone()), &expected),
                expected,
                "record {} of {} written after input {} (appended {})",
                written.len() + i,
                outputs.len(),
                k - 1,
                appended
            );
        }
        // What a reader sees at `until`: the latest record is the SPEC's state then (a change
        // the service owed by then would show here), all but the time it was evaluated.
        let now = canonical(suppression(customer, &history[..k], until, rules));
        let latest =
            excuse(customer, &history[..k], rules, canonical(outputs.last().cloned().flatten()), &now);
        let strip = |s: Option<SuppressionState>| {
            s.map(|mut s| {
                s.evaluated_at = DateTime::UNIX_EPOCH;
                s
            })
        };
        prop_assert_eq!(strip(latest), strip(now), "the latest record as of {}", until);
        written = outputs;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn suppression_agrees_with_the_spec_on_every_valid_stream(
        busy in any::<bool>(),
        customer in (0..10_000u32).prop_map(|n| format!("c-{n}")),
        base in base(),
        steps in prop::collection::vec(timed(), 1..30),
    ) {
        let rules = if busy { busy_rules() } else { Rules::default() };
        let records = records(&customer, base, &steps);
        prop_assume!(!records.is_empty());
        let end = records.last().unwrap().1 + Duration::days(3);
        differential(&customer, &rules, &records, end)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The real service over the real broker.

/// 300 random customers through the real `suppression` binary (default rules) on the real broker:
/// each customer's last committed record is the SPEC's state as of its `evaluated_at`, from the
/// input as the broker holds it (append times included), with every event applied and no change
/// pending that it should have written by then.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_broker_every_customers_last_record_is_the_specs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use rdkafka::message::Message;

    let mut runner = TestRunner::deterministic();
    let now = Utc::now();
    let mut input = Vec::new();
    for n in 0..300 {
        let customer = format!("b-{n}");
        let steps = prop::collection::vec(timed(), 1..25).new_tree(&mut runner).unwrap().current();
        // Append times are the broker's: event times are relative to now, within the 24 h skew.
        let steps: Vec<Timed> = steps.into_iter().map(|(step, _, skew)| (step, 0, skew.min(1380))).collect();
        for (event, _) in records(&customer, now, &steps) {
            input.push((customer.clone(), encode_event(&event).unwrap()));
        }
    }
    let customers = input.iter().map(|(key, _)| key.clone()).collect::<std::collections::BTreeSet<_>>().len();
    let topics = omnistream_testkit::pipeline::ServiceTopics::create("spec-suppression", 1).await;
    let output = topics.outputs[0].clone();
    omnistream_testkit::produce_all(&topics.input, input).await;
    let mut args = topics.runtime_args("spec", 0);
    args.extend(["--suppressions-topic".to_owned(), output.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _service = omnistream_testkit::ServiceProcess::spawn(
        &omnistream_testkit::workspace_binary("suppression"),
        "spec-suppression",
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    );
    let input_topic = topics.input.clone();
    let rules = Rules::default();
    let failures = tokio::task::spawn_blocking(move || {
        let histories = common::input_histories(&input_topic);
        assert_eq!(histories.len(), customers, "every customer's input read back");
        let started = std::time::Instant::now();
        loop {
            let mut last: BTreeMap<String, Option<SuppressionState>> = BTreeMap::new();
            for message in omnistream_testkit::read_committed_to_end(&output) {
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                last.insert(key, message.payload().map(|b| decode_record::<SuppressionState>(b).unwrap()));
            }
            let read_at = Utc::now();
            let mut failures = Vec::new();
            for (customer, history) in &histories {
                let got = last.get(customer).cloned().flatten();
                if let Err(disagreement) = check_last_record(customer, history, &rules, got, read_at) {
                    let Disagreement { got, expected } = *disagreement;
                    failures.push(format!("{customer}: got {got:#?}\nexpected {expected:#?}"));
                }
            }
            let written = last.values().flatten().count();
            if (failures.is_empty() && written > 200) || started.elapsed() > StdDuration::from_secs(60) {
                return failures;
            }
            std::thread::sleep(StdDuration::from_secs(1));
        }
    })
    .await
    .unwrap();
    assert!(failures.is_empty(), "{} customers differ; the first:\n{}", failures.len(), failures[0]);
}

// ---------------------------------------------------------------------------------------------
// Worked examples of the model itself (hand-computed from SPEC 4.2 and docs/suppression.md).

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn event(n: usize, occurred_at: &str, channel: Channel, payload: EventPayload) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!("x-e{n}"),
        customer_id: "x".into(),
        occurred_at: at(occurred_at),
        channel,
        source: None,
        payload,
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    }
}

fn marketing_send() -> EventPayload {
    EventPayload::MessageSent { message_id: "m".into(), campaign_id: None, purpose: Purpose::Marketing }
}

fn channel(state: &SuppressionState, channel: Channel) -> &ChannelSuppression {
    state.marketing.iter().find(|c| c.channel == channel).unwrap()
}

#[test]
fn the_model_defers_email_for_the_cap_window_and_counts_a_send_dated_ahead_from_its_time() {
    let rules = Rules { quiet: Vec::new(), ..Rules::default() };
    // Appended 10:00; a send now and one dated 20 h ahead.
    let history = history(&[
        (event(0, "2026-11-20T10:00:00Z", Channel::Email, marketing_send()), at("2026-11-20T10:00:00Z")),
        (event(1, "2026-11-21T06:00:00Z", Channel::Email, marketing_send()), at("2026-11-20T10:00:00Z")),
    ]);
    let state = suppression("x", &history, at("2026-11-20T10:00:00Z"), &rules).unwrap();
    let email = channel(&state, Channel::Email);
    assert_eq!((email.status, email.until), (SuppressionStatus::Deferred, Some(at("2026-11-21T02:00:00Z"))));
    // At 02:00 the first send left the window; at 06:00 the second enters it.
    assert_eq!(state.next_change_at, Some(at("2026-11-21T02:00:00Z")));
    let later = suppression("x", &history, at("2026-11-21T02:00:00Z"), &rules).unwrap();
    assert_eq!(channel(&later, Channel::Email).status, SuppressionStatus::Allowed);
    assert_eq!(later.next_change_at, Some(at("2026-11-21T06:00:00Z")));
}

#[test]
fn the_model_ends_a_berlin_night_an_hour_earlier_in_utc_when_clocks_go_forward() {
    let rules = Rules::default();
    let zone = EventPayload::TraitsUpdated {
        set: BTreeMap::from([("timezone".to_owned(), TraitValue::String("Europe/Berlin".into()))]),
        set_once: BTreeMap::new(),
        unset: Vec::new(),
    };
    let history =
        history(&[(event(0, "2026-03-28T21:00:00Z", Channel::Web, zone), at("2026-03-28T21:00:00Z"))]);
    // 22:00 CET: quiet until 08:00 CEST = 06:00 UTC.
    let state = suppression("x", &history, at("2026-03-28T21:00:00Z"), &rules).unwrap();
    let sms = channel(&state, Channel::Sms);
    assert_eq!((sms.status, sms.until), (SuppressionStatus::Deferred, Some(at("2026-03-29T06:00:00Z"))));
    assert_eq!(sms.reasons[0].code, reason_code::QUIET_HOURS);
    assert_eq!(state.next_change_at, Some(at("2026-03-29T06:00:00Z")));
}

// ---------------------------------------------------------------------------------------------
// Defects found by the differential test: each fails today.

/// SPEC 4.2: "a recent order suppresses promotional messages for a configurable cool-down
/// (default off)"; SPEC 4 "Future-dated events ... are facts dated in the future". With the
/// default rules (cool-down 0 h, off), an order dated one minute ahead of its append time makes
/// the service write `recent_order` ("cool-down 0h") on every channel until the order's time:
/// marketing deferred by a rule that is off. Expected: email allowed, no `recent_order` reason
/// anywhere.
#[test]
fn a_future_dated_order_suppresses_marketing_with_the_cool_down_off() {
    let order = EventPayload::OrderPlaced {
        order_id: "o".into(),
        value_minor: 100,
        currency: "EUR".into(),
        items: None,
    };
    let records = [(event(0, "2026-11-20T12:01:00Z", Channel::Web, order), at("2026-11-20T12:00:00Z"))];
    let replayed = replay(&service(&Rules::default()), &records, at("2026-11-20T12:00:00Z"));
    let state = decode(&replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())][0]).unwrap();
    let email = channel(&state, Channel::Email);
    assert_eq!((email.status, email.reasons.len()), (SuppressionStatus::Allowed, 0), "{email:?}");
    assert!(state.marketing.iter().all(|c| c.reasons.iter().all(|r| r.code != reason_code::RECENT_ORDER)));
}

/// docs/suppression.md: "`next_change_at`: the earliest time the record changes without a new
/// event: a reason lapsing, or quiet hours starting". With caps on email only and no quiet hours,
/// a marketing WhatsApp send dated an hour ahead changes nothing, ever: expected `next_change_at`
/// none. The service names the send's time (and its timer then re-emits the same record).
#[test]
fn next_change_at_names_a_time_when_nothing_changes() {
    let rules = Rules {
        caps: vec![Cap { channel: Channel::Email, max: 1, window_hours: 16.0 }],
        quiet: Vec::new(),
        ..Rules::default()
    };
    let records =
        [(event(0, "2026-11-20T13:00:00Z", Channel::Whatsapp, marketing_send()), at("2026-11-20T12:00:00Z"))];
    let replayed = replay(&service(&rules), &records, at("2026-11-20T12:00:00Z"));
    let state = decode(&replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())][0]).unwrap();
    assert_eq!(channel(&state, Channel::Whatsapp).status, SuppressionStatus::Allowed);
    assert_eq!(state.next_change_at, None);
}

/// SPEC 4.2: an open ticket blocks "until every open ticket is resolved (... a safety maximum,
/// default 14 d, after which it lapses)"; docs: "their safety maximum counts from their
/// `occurred_at`"; SPEC 4.1 keeps a ticket opened twice open since its first opening; SPEC 4
/// "Arrival order vs event time": the result must not depend on when facts arrive. Ticket T-1 is
/// opened on day 0 and never resolved; a second `support_ticket_opened` of T-1 (another event id)
/// arrives on day 15. The ticket's maximum lapsed on day 14: expected email allowed. The service
/// forgot the lapsed ticket and opens it afresh, blocking marketing for another 14 days (had the
/// second opening arrived on day 13, it would have lapsed on day 14).
#[test]
fn a_ticket_opened_again_after_its_maximum_blocks_anew() {
    let open = || EventPayload::SupportTicketOpened { ticket_id: "T-1".into(), topic: None };
    let records = [
        (event(0, "2026-11-01T12:00:00Z", Channel::Web, open()), at("2026-11-01T12:00:00Z")),
        (event(1, "2026-11-16T12:00:00Z", Channel::Web, open()), at("2026-11-16T12:00:00Z")),
    ];
    let replayed = replay(&service(&Rules::default()), &records, at("2026-11-16T12:00:00Z"));
    let outputs = &replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())];
    let state = decode(outputs.last().unwrap()).unwrap();
    let email = channel(&state, Channel::Email);
    assert_eq!((email.status, email.reasons.len()), (SuppressionStatus::Allowed, 0), "{email:?}");
}

fn zone(name: &str) -> EventPayload {
    EventPayload::TraitsUpdated {
        set: BTreeMap::from([("timezone".to_owned(), TraitValue::String(name.into()))]),
        set_once: BTreeMap::new(),
        unset: Vec::new(),
    }
}

/// Quiet hours 01:00-02:30 on email, Australia/Sydney, on the night clocks go back (2026-04-05
/// 03:00 AEDT becomes 02:00 AEST, at 16:00 UTC). At 15:30 UTC (02:30 AEDT) the first pass of the
/// window has ended: email allowed. At 16:00 UTC the local clock shows 02:00 again, inside the
/// window; docs: an end that is "ambiguous (clocks set back) is the earlier instant, or the later
/// when the earlier has already passed (an evaluation inside the repeated hour)": quiet until
/// 02:30 AEST = 16:30 UTC. The service evaluates so when an event arrives at 16:15 UTC, but its
/// record at 15:30 names no change at 16:00 (`next_change_at` is 22:00, the SMS night's end), so
/// no timer re-emits it: a reader at 16:15 sees email allowed. Expected: `next_change_at` 16:00
/// UTC, and the record as of 16:15 email deferred until 16:30.
#[test]
fn quiet_hours_that_begin_again_in_the_repeated_hour_are_not_emitted() {
    let rules = Rules {
        quiet: vec![Quiet { channels: vec![Channel::Email], start: clock(1, 0), end: clock(2, 30) }],
        ..Rules::default()
    };
    let set = (
        event(0, "2026-04-04T15:30:00Z", Channel::Web, zone("Australia/Sydney")),
        at("2026-04-04T15:30:00Z"),
    );
    let key = (SUPPRESSIONS.to_owned(), "x".to_owned());
    // What the service says when asked inside the repeated hour (an event at 16:15).
    let view = (
        event(1, "2026-04-04T16:15:00Z", Channel::Web, EventPayload::PageViewed { url: "/".into() }),
        at("2026-04-04T16:15:00Z"),
    );
    let asked = replay(&service(&rules), &[set.clone(), view], at("2026-04-04T16:15:00Z"));
    let asked = decode(asked.outputs[&key].last().unwrap()).unwrap();
    assert_eq!(channel(&asked, Channel::Email).until, Some(at("2026-04-04T16:30:00Z")), "{asked:#?}");
    // Without that event: the record at 15:30, and what a reader sees at 16:15.
    let replayed = replay(&service(&rules), &[set], at("2026-04-04T16:15:00Z"));
    let outputs = &replayed.outputs[&key];
    let first = decode(&outputs[0]).unwrap();
    let latest = decode(outputs.last().unwrap()).unwrap();
    let email = channel(&latest, Channel::Email);
    assert_eq!(
        (first.next_change_at, email.status, email.until),
        (Some(at("2026-04-04T16:00:00Z")), SuppressionStatus::Deferred, Some(at("2026-04-04T16:30:00Z"))),
        "{latest:#?}"
    );
}

/// docs/suppression.md: "A local time that does not exist (skipped by the change) moves later by
/// the gap, as java.time does". Quiet hours 01:00-02:30 in Berlin on 2026-03-29: 02:30 does not
/// exist (02:00 CET becomes 03:00 CEST at 01:00 UTC), so the night ends at 03:30 CEST = 01:30 UTC.
#[test]
fn a_quiet_end_skipped_by_the_clocks_moves_later_by_the_gap() {
    let rules = Rules {
        quiet: vec![Quiet { channels: vec![Channel::Email], start: clock(1, 0), end: clock(2, 30) }],
        ..Rules::default()
    };
    let records =
        [(event(0, "2026-03-29T00:10:00Z", Channel::Web, zone("Europe/Berlin")), at("2026-03-29T00:10:00Z"))];
    let expected = suppression("x", &history(&records), at("2026-03-29T00:10:00Z"), &rules).unwrap();
    assert_eq!(channel(&expected, Channel::Email).until, Some(at("2026-03-29T01:30:00Z")));
    let replayed = replay(&service(&rules), &records, at("2026-03-29T00:10:00Z"));
    let state = decode(&replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())][0]).unwrap();
    assert_eq!(canonical(Some(state)), canonical(Some(expected)));
}

/// docs/suppression.md: "Consent, tickets and bounces follow `occurred_at`, not arrival order ...
/// their safety maximum counts from their `occurred_at`"; SPEC 4 "Arrival order vs event time":
/// the result equals event-time order. T-1 is opened twice (two event ids, e.g. two systems): the
/// opening dated 2026-11-01 arrives after one dated 2026-11-03. In event-time order the ticket
/// opened on 2026-11-01 (the second opening changes nothing, as SPEC 4.1 keeps the first
/// `opened_at`): its maximum lapses 2026-11-15 12:00. The service keeps the opening that arrived
/// first and names 2026-11-17 12:00.
#[test]
fn an_earlier_dated_opening_of_an_open_ticket_does_not_move_its_maximum() {
    let open = || EventPayload::SupportTicketOpened { ticket_id: "T-1".into(), topic: None };
    let records = [
        (event(0, "2026-11-03T12:00:00Z", Channel::Web, open()), at("2026-11-03T12:00:00Z")),
        (event(1, "2026-11-01T12:00:00Z", Channel::Chat, open()), at("2026-11-03T12:00:00Z")),
    ];
    let replayed = replay(&service(&Rules::default()), &records, at("2026-11-03T12:00:00Z"));
    let state = decode(replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())].last().unwrap()).unwrap();
    assert_eq!(channel(&state, Channel::Email).until, Some(at("2026-11-15T12:00:00Z")), "{state:#?}");
}

/// docs/suppression.md: "Event time orders the facts. Consent, tickets and bounces follow
/// `occurred_at`, not arrival order"; SPEC 4 "Arrival order vs event time": the result equals
/// event-time order (as SPEC 4.1's profile shows it). T-1 is opened at 10:00, resolved at 10:30
/// and opened again at 11:00 (event times); the 11:00 opening arrives before the resolution. In
/// event-time order T-1 is open since 11:00: email blocked, `support_ticket_open` T-1 until 14
/// days after 11:00. The service says allowed.
#[test]
fn a_ticket_resolved_between_two_openings_stays_open() {
    let open = || EventPayload::SupportTicketOpened { ticket_id: "T-1".into(), topic: None };
    let resolve = EventPayload::SupportTicketResolved { ticket_id: "T-1".into() };
    let records = [
        (event(0, "2026-11-20T10:00:00Z", Channel::Web, open()), at("2026-11-20T11:00:00Z")),
        (event(1, "2026-11-20T11:00:00Z", Channel::Web, open()), at("2026-11-20T11:00:00Z")),
        (event(2, "2026-11-20T10:30:00Z", Channel::Web, resolve), at("2026-11-20T11:00:00Z")),
    ];
    let expected =
        suppression("x", &history(&records), at("2026-11-20T11:00:00Z"), &Rules::default()).unwrap();
    let email = channel(&expected, Channel::Email);
    assert_eq!((email.status, email.until), (SuppressionStatus::Blocked, Some(at("2026-12-04T11:00:00Z"))));
    let replayed = replay(&service(&Rules::default()), &records, at("2026-11-20T11:00:00Z"));
    let state = decode(replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())].last().unwrap()).unwrap();
    assert_eq!(channel(&state, Channel::Email), email, "{state:#?}");
}

/// docs/suppression.md: "Consent, tickets and bounces follow `occurred_at`, not arrival order";
/// SPEC 4: a resolution that arrives before its ticket is kept and applied when the ticket
/// arrives, "so the result equals event-time order". T-1 is resolved twice (two event ids): the
/// resolution dated 10:40 arrives first, then one dated 10:00; then the opening dated 10:30. In
/// event-time order: resolved 10:00 (nothing open), opened 10:30, resolved 10:40: closed, email
/// allowed. The service keeps only the resolution that arrived last (10:00), older than the
/// opening, and blocks email for 14 days.
#[test]
fn an_older_resolution_arriving_later_reopens_the_ticket() {
    let resolve = || EventPayload::SupportTicketResolved { ticket_id: "T-1".into() };
    let open = EventPayload::SupportTicketOpened { ticket_id: "T-1".into(), topic: None };
    let records = [
        (event(0, "2026-11-20T10:40:00Z", Channel::Web, resolve()), at("2026-11-20T11:00:00Z")),
        (event(1, "2026-11-20T10:00:00Z", Channel::Web, resolve()), at("2026-11-20T11:00:00Z")),
        (event(2, "2026-11-20T10:30:00Z", Channel::Web, open), at("2026-11-20T11:00:00Z")),
    ];
    let replayed = replay(&service(&Rules::default()), &records, at("2026-11-20T11:00:00Z"));
    let state = decode(replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())].last().unwrap()).unwrap();
    let email = channel(&state, Channel::Email);
    assert_eq!((email.status, email.reasons.len()), (SuppressionStatus::Allowed, 0), "{state:#?}");
}

/// docs/suppression.md: a hard bounce blocks "until consent (any purpose) is granted again after
/// it"; SPEC 4 orders facts by event time with ties in offset order (traits; the SPEC 4.1 model
/// does the same for consent). A hard bounce on email and, later in the log, a marketing grant
/// on email with the same `occurred_at`: the grant is after the bounce, email allowed. The service
/// keeps the bounce (it asks for a strictly later event time). An ambiguity of ties, decided by
/// the SPEC's one tie rule.
#[test]
fn a_grant_of_the_same_instant_after_a_bounce_lifts_it() {
    let bounce = EventPayload::MessageBounced { message_id: "m".into(), hard: true };
    let grant = EventPayload::ConsentChanged { purpose: Purpose::Marketing, granted: true };
    let records = [
        (event(0, "2026-11-20T10:00:00Z", Channel::Email, bounce), at("2026-11-20T10:00:00Z")),
        (event(1, "2026-11-20T10:00:00Z", Channel::Email, grant), at("2026-11-20T10:00:00Z")),
    ];
    let replayed = replay(&service(&Rules::default()), &records, at("2026-11-20T10:00:00Z"));
    let state = decode(replayed.outputs[&(SUPPRESSIONS.to_owned(), "x".to_owned())].last().unwrap()).unwrap();
    assert_eq!(channel(&state, Channel::Email).status, SuppressionStatus::Allowed, "{state:#?}");
}

// ---------------------------------------------------------------------------------------------
// Merges (identity resolution).

/// The service's memory after its core applied `records` (each at its append time; retries,
/// events it does not read of a customer it knows, and refused events skipped, as the runtime does).
fn memory_after(
    core: &Suppression,
    records: &[(TouchpointEvent, DateTime<Utc>)],
) -> Option<omnistream_suppression::SuppressionMemory> {
    use omnistream_runtime::Processor;
    let mut state = None;
    let mut seen = std::collections::HashSet::new();
    for (event, appended) in records {
        let read = state.is_none() || core.reads(event);
        if read
            && seen.insert(event.event_id.clone())
            && core.check_limits(state.as_ref(), event, *appended).is_ok()
        {
            core.apply(&mut state, event, *appended);
        }
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A merge against the SPEC: the winner's record once the loser's memory is folded in is the
    /// SPEC's state of the winner's records followed by the loser's (as if they had arrived
    /// after), all under the winner's id, as of the merge.
    #[test]
    fn a_merged_suppression_is_the_specs_state_of_both_histories(
        busy in any::<bool>(),
        base in base(),
        winner_steps in prop::collection::vec(timed(), 1..20),
        loser_steps in prop::collection::vec(timed(), 1..20),
    ) {
        use omnistream_runtime::Processor;
        let rules = if busy { busy_rules() } else { Rules::default() };
        let core = service(&rules);
        // An erasure belongs to its customer's own history (erasure through merges: the
        // identity tests); here the two histories are folded.
        let kept = |records: Vec<(TouchpointEvent, DateTime<Utc>)>| -> Vec<(TouchpointEvent, DateTime<Utc>)> {
            records.into_iter().filter(|(event, _)| !matches!(event.payload, EventPayload::ErasureRequested)).collect()
        };
        let winner = kept(records("c-1", base, &winner_steps));
        // The loser's message ids are its own (the generator numbers them per stream).
        let loser: Vec<(TouchpointEvent, DateTime<Utc>)> = kept(records("c-2", base, &loser_steps))
            .into_iter()
            .map(|(mut event, at)| {
                if let EventPayload::MessageSent { message_id, .. } = &mut event.payload {
                    *message_id = format!("loser-{message_id}");
                }
                (event, at)
            })
            .collect();
        let Some(merged_at) = winner.iter().chain(&loser).map(|(_, at)| *at).max() else {
            return Ok(());
        };
        let handed = memory_after(&core, &loser);
        prop_assume!(handed.is_some());
        let mut state = memory_after(&core, &winner);
        let outputs = core.merge(&mut state, "c-1", "c-2", "merge-1", handed.expect("assumed"), merged_at);
        let both: Vec<(TouchpointEvent, DateTime<Utc>)> = winner
            .iter()
            .cloned()
            .chain(loser.iter().cloned().map(|(mut event, at)| {
                event.customer_id = "c-1".into();
                (event, at)
            }))
            .collect();
        let strip = |state: Option<SuppressionState>| state.map(|mut state| {
            state.version = 0;
            state
        });
        let both = history(&both);
        let expected = canonical(suppression("c-1", &both, merged_at, &rules));
        // The service's known early `next_change_at` (see `excuse`) is tolerated here too.
        let merged = excuse("c-1", &both, &rules, canonical(outputs[0].value.clone()), &expected);
        prop_assert_eq!(strip(merged), strip(expected), "{:#?}", both);
    }
}
