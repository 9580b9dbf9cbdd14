//! Given a customer's events, when the runtime's engine applies them through profile-updater (in
//! the order given, which is the arrival order, not always event time), then the profile is as
//! SPEC 4.1 says.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use omnistream_model::records::CustomerProfile;
use omnistream_model::{Channel, EventPayload, EventType, Purpose, SortedMap, TouchpointEvent, TraitValue};
use omnistream_profile_updater::{PROFILES_OUTPUT, ProfileState, ProfileUpdater, activity};
use omnistream_runtime::Processor;
use omnistream_runtime::testing::ProcessorTest;

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn event(minute: i64, channel: Channel, payload: EventPayload) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!("e-{minute}-{channel}"),
        customer_id: "c-1".into(),
        occurred_at: t(minute),
        channel,
        source: None,
        payload,
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    }
}

/// Runs the events through the runtime's engine, each appended at its own time (the partition
/// clock never goes back), and returns the state and the last published profile (decoded from its
/// Avro output).
fn fold(events: &[TouchpointEvent]) -> (Option<ProfileState>, Option<CustomerProfile>) {
    let mut test = ProcessorTest::new(ProfileUpdater);
    let mut last = None;
    for event in events {
        let then = test.when(event);
        assert_eq!(then.dead_letters, Vec::new(), "{}", event.event_id);
        let mut values = then.decoded::<CustomerProfile>(PROFILES_OUTPUT);
        assert_eq!(values.len(), 1, "one profile record per event");
        last = values.pop().flatten();
    }
    (test.state("c-1"), last)
}

/// The core's state after the events, applied directly: for states no valid event stream builds
/// in one step (more than the 100 keys an event may set, texts longer than 2,048 bytes), as a
/// release before the limits could have left them.
fn core_state(events: &[TouchpointEvent]) -> Option<ProfileState> {
    let updater = ProfileUpdater;
    let mut state = None;
    for event in events {
        updater.apply(&mut state, event, event.occurred_at);
    }
    state
}

fn profile(events: &[TouchpointEvent]) -> CustomerProfile {
    let (state, published) = fold(events);
    let published = published.expect("a profile");
    assert_eq!(*state.expect("state").profile, published, "the published profile is the state");
    published
}

fn traits(set: &[(&str, TraitValue)], set_once: &[(&str, TraitValue)], unset: &[&str]) -> EventPayload {
    EventPayload::TraitsUpdated {
        set: set.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        set_once: set_once.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        unset: unset.iter().map(|k| (*k).to_owned()).collect(),
    }
}

fn text(value: &str) -> TraitValue {
    TraitValue::String(value.into())
}

fn order(id: &str, value_minor: i64, currency: &str) -> EventPayload {
    EventPayload::OrderPlaced { order_id: id.into(), value_minor, currency: currency.into(), items: Some(1) }
}

fn view() -> EventPayload {
    EventPayload::PageViewed { url: "https://shop.example".into() }
}

#[test]
fn first_and_last_seen_follow_event_time_overall_and_per_channel() {
    let p = profile(&[
        event(10, Channel::Web, view()),
        event(5, Channel::Store, view()),
        event(20, Channel::Web, view()),
        event(1, Channel::Web, view()),
    ]);
    assert_eq!((p.first_seen_at, p.last_seen_at), (t(1), t(20)));
    let web = activity(&p, Channel::Web).unwrap();
    assert_eq!((web.first_seen_at, web.last_seen_at), (t(1), t(20)));
    assert_eq!(web.event_counts[&EventType::PageViewed], 3);
    let store = activity(&p, Channel::Store).unwrap();
    assert_eq!(
        (store.first_seen_at, store.last_seen_at, store.event_counts[&EventType::PageViewed]),
        (t(5), t(5), 1)
    );
    assert_eq!(p.version, 4);
}

#[test]
fn trait_rules_by_event_time() {
    // (name, given events in arrival order, expected value of trait "tier")
    let rows: Vec<(&str, Vec<TouchpointEvent>, TraitValue)> = vec![
        (
            "set: the newer value wins",
            vec![
                event(1, Channel::Web, traits(&[("tier", text("a"))], &[], &[])),
                event(2, Channel::Web, traits(&[("tier", text("b"))], &[], &[])),
            ],
            text("b"),
        ),
        (
            "set: a late older value does not overwrite",
            vec![
                event(2, Channel::Web, traits(&[("tier", text("b"))], &[], &[])),
                event(1, Channel::Web, traits(&[("tier", text("a"))], &[], &[])),
            ],
            text("b"),
        ),
        (
            "set_once: does not replace a set value",
            vec![
                event(1, Channel::Web, traits(&[("tier", text("a"))], &[], &[])),
                event(2, Channel::Web, traits(&[], &[("tier", text("b"))], &[])),
            ],
            text("a"),
        ),
        (
            "set_once: the first by event time wins even when it arrives last",
            vec![
                event(5, Channel::Web, traits(&[], &[("tier", text("late"))], &[])),
                event(3, Channel::Web, traits(&[], &[("tier", text("early"))], &[])),
            ],
            text("early"),
        ),
        (
            "set_once: a later set_once is a no-op",
            vec![
                event(3, Channel::Web, traits(&[], &[("tier", text("early"))], &[])),
                event(5, Channel::Web, traits(&[], &[("tier", text("late"))], &[])),
            ],
            text("early"),
        ),
        (
            "set after set_once replaces it",
            vec![
                event(3, Channel::Web, traits(&[], &[("tier", text("once"))], &[])),
                event(4, Channel::Web, traits(&[("tier", text("set"))], &[], &[])),
            ],
            text("set"),
        ),
        (
            "a late set from before a set_once wins (the set_once would have been a no-op)",
            vec![
                event(3, Channel::Web, traits(&[], &[("tier", text("once"))], &[])),
                event(1, Channel::Web, traits(&[("tier", text("set"))], &[], &[])),
            ],
            text("set"),
        ),
        (
            "unset: removes an older value",
            vec![
                event(1, Channel::Web, traits(&[("tier", text("a"))], &[], &[])),
                event(2, Channel::Web, traits(&[], &[], &["tier"])),
            ],
            TraitValue::Null,
        ),
        (
            "unset: a late older unset does not remove a newer value",
            vec![
                event(2, Channel::Web, traits(&[("tier", text("b"))], &[], &[])),
                event(1, Channel::Web, traits(&[], &[], &["tier"])),
            ],
            text("b"),
        ),
        (
            "unset: a late older set cannot resurrect an unset value",
            vec![
                event(3, Channel::Web, traits(&[], &[], &["tier"])),
                event(1, Channel::Web, traits(&[("tier", text("old"))], &[], &[])),
            ],
            TraitValue::Null,
        ),
        (
            "set_once after an unset applies",
            vec![
                event(1, Channel::Web, traits(&[("tier", text("a"))], &[], &[])),
                event(2, Channel::Web, traits(&[], &[], &["tier"])),
                event(3, Channel::Web, traits(&[], &[("tier", text("again"))], &[])),
            ],
            text("again"),
        ),
    ];
    for (name, given, then) in rows {
        let p = profile(&given);
        assert_eq!(p.traits.get("tier").map(|e| e.value.clone()), Some(then), "{name}");
    }
}

#[test]
fn the_trait_entry_keeps_the_event_time_that_decided_it() {
    let p = profile(&[
        event(2, Channel::Web, traits(&[("tier", text("b"))], &[], &[])),
        event(1, Channel::Web, traits(&[("tier", text("a"))], &[("since", TraitValue::Long(2020))], &[])),
    ]);
    assert_eq!(p.traits["tier"].updated_at, t(2));
    assert!(!p.traits["tier"].set_once);
    assert_eq!(p.traits["since"].updated_at, t(1));
    assert!(p.traits["since"].set_once);
}

#[test]
fn orders_refunds_and_lifetime_value_per_currency() {
    let p = profile(&[
        event(1, Channel::Store, order("o-1", 4_599, "EUR")),
        event(3, Channel::Web, order("o-2", 1_000, "USD")),
        event(2, Channel::MobileApp, order("o-3", 500, "EUR")),
        event(
            4,
            Channel::Store,
            EventPayload::OrderRefunded {
                order_id: "o-1".into(),
                value_minor: 4_599,
                currency: "EUR".into(),
            },
        ),
    ]);
    assert_eq!(p.orders_count, 3);
    assert_eq!(p.lifetime_value_minor, SortedMap::from([("EUR".into(), 500), ("USD".into(), 1_000)]));
    assert_eq!(
        (p.last_order_at, p.last_order_channel),
        (Some(t(3)), Some(Channel::Web)),
        "the latest by event time"
    );
    assert_eq!(p.refunds_count, 1);
    assert_eq!(p.refunded_value_minor, SortedMap::from([("EUR".into(), 4_599)]));
}

#[test]
fn support_tickets_open_and_resolve_even_out_of_order() {
    let opened = |minute, id: &str| {
        event(
            minute,
            Channel::Whatsapp,
            EventPayload::SupportTicketOpened { ticket_id: id.into(), topic: Some("delivery".into()) },
        )
    };
    let resolved = |minute, id: &str| {
        event(minute, Channel::CallCenter, EventPayload::SupportTicketResolved { ticket_id: id.into() })
    };

    let p = profile(&[opened(1, "T-1"), opened(2, "T-2")]);
    assert_eq!(p.open_tickets.iter().map(|t| t.ticket_id.as_str()).collect::<Vec<_>>(), ["T-1", "T-2"]);
    assert_eq!(p.open_tickets[0].channel, Channel::Whatsapp);

    let p = profile(&[opened(1, "T-1"), opened(2, "T-2"), resolved(5, "T-1")]);
    assert_eq!(p.open_tickets.iter().map(|t| t.ticket_id.as_str()).collect::<Vec<_>>(), ["T-2"]);
    let last = p.last_resolved_ticket.unwrap();
    assert_eq!((last.ticket_id.as_str(), last.opened_at, last.resolved_at), ("T-1", Some(t(1)), t(5)));

    // The resolution arrives before the opening: the ticket never shows as open.
    let p = profile(&[resolved(5, "T-9"), opened(1, "T-9")]);
    assert!(p.open_tickets.is_empty());
    assert_eq!(p.last_resolved_ticket.unwrap().ticket_id, "T-9");

    // An opening of an open ticket sent again under another event id does not add it twice (a
    // retry under the same id never reaches the core: the runtime drops it).
    let p = profile(&[opened(1, "T-1"), opened(2, "T-1")]);
    assert_eq!(p.open_tickets.len(), 1);
}

#[test]
fn consent_per_channel_and_purpose_by_event_time() {
    let consent = |minute, channel, purpose, granted| {
        event(minute, channel, EventPayload::ConsentChanged { purpose, granted })
    };
    let p = profile(&[
        consent(2, Channel::Sms, Purpose::Marketing, false),
        consent(1, Channel::Sms, Purpose::Marketing, true),
        consent(3, Channel::Email, Purpose::Marketing, true),
        consent(4, Channel::Sms, Purpose::Transactional, true),
    ]);
    let entries: Vec<(Channel, Purpose, bool, DateTime<Utc>)> =
        p.consents.iter().map(|c| (c.channel, c.purpose, c.granted, c.at)).collect();
    assert_eq!(
        entries,
        [
            (Channel::Email, Purpose::Marketing, true, t(3)),
            (Channel::Sms, Purpose::Marketing, false, t(2)),
            (Channel::Sms, Purpose::Transactional, true, t(4)),
        ]
    );
}

#[test]
fn the_consent_history_lists_every_change_by_event_time_and_keeps_the_newest_200() {
    let consent = |minute, granted| {
        event(minute, Channel::Sms, EventPayload::ConsentChanged { purpose: Purpose::Marketing, granted })
    };
    // Given a revocation, then a grant that happened before it (late), then a grant after.
    let p = profile(&[consent(5, false), consent(2, true), consent(9, true)]);
    // Then the history is in event time, each change with its event.
    let history: Vec<(bool, DateTime<Utc>)> = p.consent_history.iter().map(|c| (c.granted, c.at)).collect();
    assert_eq!(history, [(true, t(2)), (false, t(5)), (true, t(9))]);
    assert!(p.consent_history.iter().all(|c| c.channel == Channel::Sms && !c.event_id.is_empty()));
    assert!(p.consents[0].granted, "the current consent is the newest by event time");

    // Given 250 changes in shuffled minutes, only the newest 200 by event time stay.
    let mut minutes: Vec<i64> = (0..250).collect();
    minutes.reverse();
    minutes.swap(3, 200);
    let events: Vec<TouchpointEvent> = minutes.iter().map(|m| consent(*m, m % 2 == 0)).collect();
    let p = profile(&events);
    let kept: Vec<DateTime<Utc>> = p.consent_history.iter().map(|c| c.at).collect();
    assert_eq!(kept, (50..250).map(t).collect::<Vec<_>>());
}

#[test]
fn email_and_phone_traits_are_identifiers() {
    let p = profile(&[
        event(2, Channel::Web, traits(&[("email", text("a@example.com")), ("name", text("Ada"))], &[], &[])),
        event(
            3,
            Channel::Store,
            traits(&[("email", text("ada@work.example")), ("phone", text("+491511"))], &[], &[]),
        ),
        event(1, Channel::Web, traits(&[("email", text("a@example.com"))], &[], &[])),
    ]);
    let identifiers: Vec<(&str, &str, DateTime<Utc>)> =
        p.identifiers.iter().map(|i| (i.kind.as_str(), i.value.as_str(), i.first_seen_at)).collect();
    assert_eq!(
        identifiers,
        [("email", "a@example.com", t(1)), ("email", "ada@work.example", t(3)), ("phone", "+491511", t(3))]
    );
}

#[test]
fn erasure_forgets_the_customer_and_publishes_a_tombstone() {
    let mut test = ProcessorTest::new(ProfileUpdater).given([event(
        1,
        Channel::Web,
        traits(&[("email", text("a@example.com"))], &[], &[]),
    )]);
    let then = test.when(&event(2, Channel::Web, EventPayload::ErasureRequested));
    assert!(test.state("c-1").is_none());
    assert_eq!(then.records, vec![(PROFILES_OUTPUT.to_owned(), "c-1".to_owned(), None)], "a tombstone");
    // Afterwards the customer starts from nothing.
    let then = test.when(&event(3, Channel::Web, view()));
    let p = then.decoded::<CustomerProfile>(PROFILES_OUTPUT)[0].clone().unwrap();
    assert_eq!((p.version, p.first_seen_at, p.traits.len()), (1, t(3), 0));
}

/// SPEC 4 Limits, worked out by hand: 256 traits and 64 KiB of trait data; the event that would
/// break one is refused whole (the runtime dead-letters it with `state_limit`), state unchanged.
#[test]
fn an_event_that_would_break_a_trait_limit_is_refused_whole() {
    let updater = ProfileUpdater;
    let many = |from: usize, count: usize| -> Vec<(String, TraitValue)> {
        (from..from + count).map(|i| (format!("t{i:03}"), TraitValue::Long(1))).collect()
    };
    let update = |set: &[(String, TraitValue)]| {
        event(
            1,
            Channel::Web,
            EventPayload::TraitsUpdated {
                set: set.iter().cloned().collect(),
                set_once: BTreeMap::new(),
                unset: Vec::new(),
            },
        )
    };
    // Given 250 traits, when 6 more come, then the profile holds 256: at the limit is allowed.
    let state = core_state(&[update(&many(0, 250))]);
    assert_eq!(updater.check_limits(state.as_ref(), &update(&many(250, 6)), t(0)), Ok(()));
    // When 7 more come, the 257th breaks the limit and the whole event is refused.
    let refused = updater.check_limits(state.as_ref(), &update(&many(250, 7)), t(0));
    assert_eq!(refused, Err("the profile would hold 257 traits (limit 256)".to_owned()));
    // Setting traits it already has adds none.
    assert_eq!(updater.check_limits(state.as_ref(), &update(&many(0, 250)), t(0)), Ok(()));

    // 64 KiB of data: two 32,760-byte strings under names of 4 bytes are 65,528 bytes, one more
    // 9-byte trait (4 + 5) is 65,537 > 65,536.
    let big = |name: &str| (name.to_owned(), TraitValue::String("x".repeat(32_760)));
    let state = core_state(&[update(&[big("bio1"), big("bio2")])]);
    let small = [("note".to_owned(), TraitValue::String("12345".into()))];
    assert_eq!(
        updater.check_limits(state.as_ref(), &update(&small), t(0)),
        Err("the profile would hold 65537 bytes of traits (limit 65536)".to_owned())
    );
    let fits = [("note".to_owned(), TraitValue::String("1234".into()))];
    assert_eq!(updater.check_limits(state.as_ref(), &update(&fits), t(0)), Ok(()));
}

/// An unset of traits never seen still adds them (as null): 300 such names break the 256 limit.
#[test]
fn unsetting_names_never_seen_counts_toward_the_trait_limit() {
    let updater = ProfileUpdater;
    let unset = |count: usize| {
        event(
            1,
            Channel::Web,
            EventPayload::TraitsUpdated {
                set: BTreeMap::new(),
                set_once: BTreeMap::new(),
                unset: (0..count).map(|i| format!("u{i:03}")).collect(),
            },
        )
    };
    assert_eq!(updater.check_limits(None, &unset(256), t(0)), Ok(()));
    assert_eq!(
        updater.check_limits(None, &unset(300), t(0)),
        Err("the profile would hold 300 traits (limit 256)".to_owned())
    );
}

/// A customer already over a limit (state from before the limits existed) is not locked out: an
/// event that does not grow the measure over its limit still applies.
#[test]
fn a_profile_already_over_a_limit_still_takes_events_that_do_not_grow_it() {
    let updater = ProfileUpdater;
    let many: BTreeMap<String, TraitValue> =
        (0..300).map(|i| (format!("t{i:03}"), TraitValue::Long(1))).collect();
    let over = event(
        1,
        Channel::Web,
        EventPayload::TraitsUpdated { set: many, set_once: BTreeMap::new(), unset: Vec::new() },
    );
    // Folded without the check, as the state of an earlier release would be.
    let state = core_state(&[over]);
    let order = EventPayload::OrderPlaced {
        order_id: "o-1".into(),
        value_minor: 100,
        currency: "EUR".into(),
        items: None,
    };
    assert_eq!(updater.check_limits(state.as_ref(), &event(2, Channel::Store, order), t(0)), Ok(()));
    let again = traits(&[("t000", TraitValue::Long(2))], &[], &[]);
    assert_eq!(
        updater.check_limits(state.as_ref(), &event(3, Channel::Web, again), t(0)),
        Ok(()),
        "no new trait"
    );
    let new = traits(&[("another", TraitValue::Long(2))], &[], &[]);
    assert_eq!(
        updater.check_limits(state.as_ref(), &event(4, Channel::Web, new), t(0)),
        Err("the profile would hold 301 traits (limit 256)".to_owned())
    );
}
