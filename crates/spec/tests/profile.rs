//! Differential tests of profile-updater against the executable SPEC (`omnistream_spec`):
//! random valid streams (late and early events within the 24 h skew, producer retries, traits
//! in any order, refunds, tickets resolved before they are opened, consent flips) folded by the
//! service's core must give, for every customer, exactly the profile the SPEC recomputes from the
//! whole history. The broker test runs the real service over the real broker, erasures included.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use omnistream_model::records::CustomerProfile;
use omnistream_model::{
    Channel, EventPayload, Purpose, TouchpointEvent, TraitValue, decode_record, encode_event,
};
use omnistream_profile_updater::{PROFILES_OUTPUT, ProfileState, ProfileUpdater};
use omnistream_runtime::Processor;
use omnistream_spec::{Record, profile};
use omnistream_testkit::pipeline::{ServiceTopics, fold};
use proptest::prelude::*;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()
}

const CHANNELS: [Channel; 5] =
    [Channel::Web, Channel::Email, Channel::Sms, Channel::Store, Channel::Whatsapp];

/// One generated event: what, and when relative to the base (minutes, up to 20 h either way).
fn payload() -> impl Strategy<Value = EventPayload> {
    let name = prop::sample::select(vec!["plan", "city", "email", "phone", "timezone"]);
    let value = prop_oneof![
        (0..3i64).prop_map(TraitValue::Long),
        prop::sample::select(vec!["a", "b", "x@example.com"]).prop_map(|s| TraitValue::String(s.to_owned())),
        Just(TraitValue::Bool(true)),
        Just(TraitValue::Null),
    ];
    let traits = prop::collection::btree_map(name.clone(), value, 0..3);
    prop_oneof![
        Just(EventPayload::PageViewed { url: "/".into() }),
        (0..3u8, 1..50_000i64, prop::sample::select(vec!["EUR", "USD"])).prop_map(|(o, v, c)| {
            EventPayload::OrderPlaced {
                order_id: format!("o-{o}"),
                value_minor: v,
                currency: c.into(),
                items: None,
            }
        }),
        (0..3u8, 1..50_000i64).prop_map(|(o, v)| EventPayload::OrderRefunded {
            order_id: format!("o-{o}"),
            value_minor: v,
            currency: "EUR".into()
        }),
        (traits.clone(), traits, prop::collection::vec(name, 0..2)).prop_map(|(set, set_once, unset)| {
            EventPayload::TraitsUpdated {
                set: set.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                set_once: set_once.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                unset: unset.into_iter().map(str::to_owned).collect(),
            }
        }),
        (any::<bool>(), prop::sample::select(vec![Purpose::Marketing, Purpose::Transactional]))
            .prop_map(|(granted, purpose)| EventPayload::ConsentChanged { purpose, granted }),
    ]
}

/// A customer's stream in offset order. Tickets: each id opened and resolved, in either arrival
/// order and at any event times (a resolution may arrive, or be dated, first), half of them
/// opened a second time anywhere.
fn stream(customer: &'static str) -> impl Strategy<Value = Vec<TouchpointEvent>> {
    let events = prop::collection::vec((payload(), -1200..1200i64, 0..CHANNELS.len()), 1..30);
    let tickets = prop::collection::vec((any::<bool>(), -1200..1200i64, -1200..1200i64), 0..3);
    let retries = prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..4);
    (events, tickets, retries).prop_perturb(move |(events, tickets, retries), mut rng| {
        let event = |n: usize, payload: EventPayload, minutes: i64, channel: Channel| TouchpointEvent {
            event_id: format!("{customer}-e{n}"),
            customer_id: customer.to_owned(),
            occurred_at: base() + chrono::Duration::minutes(minutes),
            channel,
            source: None,
            payload,
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        let mut out: Vec<TouchpointEvent> = events
            .into_iter()
            .enumerate()
            .map(|(n, (payload, minutes, channel))| event(n, payload, minutes, CHANNELS[channel]))
            .collect();
        for (t, (resolve_first, opened, resolved)) in tickets.into_iter().enumerate() {
            let id = format!("T-{t}");
            let open =
                EventPayload::SupportTicketOpened { ticket_id: id.clone(), topic: Some("delivery".into()) };
            let resolve = EventPayload::SupportTicketResolved { ticket_id: id };
            let (first, second) = if resolve_first {
                ((resolve, resolved), (open, opened))
            } else {
                ((open, opened), (resolve, resolved))
            };
            let at = rng.random_range(0..=out.len());
            out.insert(at, event(100 + 3 * t, first.0, first.1, Channel::Whatsapp));
            let later = rng.random_range(at + 1..=out.len());
            out.insert(later, event(101 + 3 * t, second.0, second.1, Channel::CallCenter));
            // Sometimes opened again (another system), anywhere in the log, at any time.
            if rng.random_bool(0.5) {
                let again = EventPayload::SupportTicketOpened { ticket_id: format!("T-{t}"), topic: None };
                let at = rng.random_range(0..=out.len());
                out.insert(at, event(102 + 3 * t, again, rng.random_range(-1200..1200), Channel::Email));
            }
        }
        // Producer retries: the same event again, later in the log.
        for (which, after) in retries {
            let copy = out[which.index(out.len())].clone();
            let at = after.index(out.len() + 1);
            out.insert(at.max(1), copy);
        }
        out
    })
}

fn encoded(events: &[TouchpointEvent]) -> Vec<(String, Vec<u8>)> {
    events.iter().map(|e| (e.customer_id.clone(), encode_event(e).unwrap())).collect()
}

fn history(events: &[TouchpointEvent]) -> Vec<Record> {
    events
        .iter()
        .map(|event| Record { event: event.clone(), appended_at: base().timestamp_millis() })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn profile_updater_agrees_with_the_spec_on_every_valid_stream(events in stream("c-1")) {
        let updater = ProfileUpdater;
        let (outputs, rejected) = fold(&updater, &[PROFILES_OUTPUT], &encoded(&events));
        prop_assert_eq!(rejected, 0);
        let last = outputs[&(PROFILES_OUTPUT.to_owned(), "c-1".to_owned())].last().cloned().flatten();
        let service = last.map(|bytes| decode_record::<CustomerProfile>(&bytes).unwrap());
        prop_assert_eq!(service, profile("c-1", &history(&events)), "{:#?}", events);
    }
}

/// The core's state after `events`, as the runtime feeds them: each id once, an event over a
/// limit left out.
fn state_after(updater: &ProfileUpdater, events: &[TouchpointEvent]) -> Option<ProfileState> {
    let mut state = None;
    let mut seen = std::collections::HashSet::new();
    for event in events {
        if seen.insert(event.event_id.clone()) && updater.check_limits(state.as_ref(), event, base()).is_ok()
        {
            updater.apply(&mut state, event, base());
        }
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A merge (identity resolution) against the SPEC: the winner's profile after the loser's
    /// state is folded in is the profile of the winner's events followed by the loser's, all under
    /// the winner's id, recomputed from that whole history.
    #[test]
    fn a_merged_profile_is_the_specs_profile_of_both_histories(winner in stream("c-1"), loser in stream("c-2")) {
        let updater = ProfileUpdater;
        let mut merged = state_after(&updater, &winner);
        let handed = state_after(&updater, &loser).expect("the loser has a profile");
        let outputs = updater.merge(&mut merged, "c-1", "c-2", "merge-1", handed, base());
        let record = outputs[0].value.as_deref().cloned();
        let mut both = winner.clone();
        both.extend(loser.iter().cloned().map(|mut event| {
            event.customer_id = "c-1".into();
            event
        }));
        prop_assert_eq!(record, profile("c-1", &history(&both)), "{:#?}", both);
    }
}

/// The real service over the real broker, with erasures: 300 random customers' streams, each
/// customer's final committed profile (or its absence) equal to the SPEC's.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_broker_every_customers_final_profile_is_the_specs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let customers: Vec<&'static str> =
        (0..300).map(|n| &*Box::leak(format!("c-{n}").into_boxed_str())).collect();
    let mut runner = TestRunner::deterministic();
    let mut all: Vec<TouchpointEvent> = Vec::new();
    for (n, customer) in customers.iter().enumerate() {
        let mut events = stream(customer).new_tree(&mut runner).unwrap().current();
        if n % 5 == 0 {
            // An erasure mid-stream, then retries and events dated on both sides of it.
            let at = events.len() / 2;
            let erased_at = base();
            events.insert(
                at,
                TouchpointEvent {
                    event_id: format!("{customer}-erase"),
                    customer_id: (*customer).to_owned(),
                    occurred_at: erased_at,
                    channel: Channel::Web,
                    source: None,
                    payload: EventPayload::ErasureRequested,
                    context: BTreeMap::new(),
                    identifiers: Vec::new(),
                },
            );
        }
        all.extend(events);
    }
    let topics = ServiceTopics::create("spec-profile", 1).await;
    let output = topics.outputs[0].clone();
    omnistream_testkit::produce_all(&topics.input, encoded(&all)).await;
    let mut args = topics.runtime_args("spec", 0);
    args.extend(["--profiles-topic".to_owned(), output.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _service = omnistream_testkit::ServiceProcess::spawn(
        &omnistream_testkit::workspace_binary("profile-updater"),
        "spec-profile",
        &args,
        &[("RUST_LOG", "info,rdkafka=warn")],
    );
    let input_topic = topics.input.clone();
    let (expected, actual) = tokio::task::spawn_blocking(move || {
        let histories = common::input_histories(&input_topic);
        let expected: BTreeMap<String, Option<CustomerProfile>> = histories
            .iter()
            .map(|(customer, history)| (customer.clone(), profile(customer, history)))
            .collect();
        // The service is done when its consumer group has no lag: wait for every customer's last
        // expected version, then read the whole topic once more.
        let wanted = expected.values().flatten().map(|p| p.version).sum::<i64>();
        let mut actual: BTreeMap<String, Option<CustomerProfile>> = BTreeMap::new();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            actual.clear();
            for message in omnistream_testkit::read_committed_to_end(&output) {
                use rdkafka::message::Message;
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let value = message.payload().map(|bytes| decode_record::<CustomerProfile>(bytes).unwrap());
                actual.insert(key, value);
            }
            let have = actual.values().flatten().map(|p| p.version).sum::<i64>();
            if have == wanted && actual.len() == expected.len() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (expected, actual)
    })
    .await
    .unwrap();
    assert_eq!(expected.len(), customers.len());
    for (customer, want) in &expected {
        assert_eq!(actual.get(customer), Some(want), "{customer}");
    }
}

/// SPEC 4 "Arrival order vs event time" with a ticket opened twice (two systems): T-1 is opened at
/// 08:17 (arrives first) and at 08:16 (arrives second), then resolved at 12:00. In event-time
/// order the 08:16 opening opened it, so the resolution closes a ticket opened at 08:16. The
/// profile kept the opening that arrived first (08:17) until it resolved tickets with
/// `model::tickets`, as suppression does.
#[test]
fn a_ticket_opened_twice_was_opened_at_its_earliest_opening() {
    let event = |n: usize, payload: EventPayload, hour: u32, minute: u32| TouchpointEvent {
        event_id: format!("e{n}"),
        customer_id: "c-1".to_owned(),
        occurred_at: Utc.with_ymd_and_hms(2026, 11, 20, hour, minute, 0).unwrap(),
        channel: Channel::CallCenter,
        source: None,
        payload,
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    };
    let open = || EventPayload::SupportTicketOpened { ticket_id: "T-1".into(), topic: None };
    let events = [
        event(1, open(), 8, 17),
        event(2, open(), 8, 16),
        event(3, EventPayload::SupportTicketResolved { ticket_id: "T-1".into() }, 12, 0),
    ];
    let updater = ProfileUpdater;
    let (outputs, _) = fold(&updater, &[PROFILES_OUTPUT], &encoded(&events));
    let last = outputs[&(PROFILES_OUTPUT.to_owned(), "c-1".to_owned())].last().cloned().flatten();
    let profile = decode_record::<CustomerProfile>(&last.unwrap()).unwrap();
    let resolved = profile.last_resolved_ticket.unwrap();
    assert_eq!(resolved.opened_at, Some(Utc.with_ymd_and_hms(2026, 11, 20, 8, 16, 0).unwrap()));
}
