//! channel-affinity's model (SPEC 4.3): given/when/then tables and properties over the pure core.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use omnistream_channel_affinity::{
    AffinityConfig, AffinityState, ChannelAffinityProcessor, affinity, apply_event,
};
use omnistream_model::records::{ChannelAffinity, ChannelScore};
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent};
use omnistream_runtime::Processor;
use proptest::prelude::*;

/// An event of a table: hours after the start, channel, what.
type AtHour = (f64, Channel, EventPayload);

fn t(hours: f64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::milliseconds((hours * 3_600_000.0) as i64)
}

fn event(at: DateTime<Utc>, channel: Channel, payload: EventPayload) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!("e-{}", at.timestamp_millis()),
        customer_id: "c-1".into(),
        occurred_at: at,
        channel,
        source: None,
        payload,
        context: BTreeMap::new(),
        identifiers: Vec::new(),
    }
}

fn sent() -> EventPayload {
    EventPayload::MessageSent { message_id: "m".into(), campaign_id: None, purpose: Purpose::Marketing }
}
fn opened() -> EventPayload {
    EventPayload::MessageOpened { message_id: "m".into() }
}
fn clicked() -> EventPayload {
    clicked_of("m")
}
fn sent_of(message_id: &str) -> EventPayload {
    EventPayload::MessageSent {
        message_id: message_id.into(),
        campaign_id: None,
        purpose: Purpose::Marketing,
    }
}
fn opened_of(message_id: &str) -> EventPayload {
    EventPayload::MessageOpened { message_id: message_id.into() }
}
fn clicked_of(message_id: &str) -> EventPayload {
    EventPayload::MessageClicked { message_id: message_id.into(), url: None }
}
fn received() -> EventPayload {
    EventPayload::MessageReceived { conversation_id: None, text_len: Some(12) }
}
fn order() -> EventPayload {
    EventPayload::OrderPlaced { order_id: "o".into(), value_minor: 100, currency: "EUR".into(), items: None }
}
fn consent(granted: bool) -> EventPayload {
    EventPayload::ConsentChanged { purpose: Purpose::Marketing, granted }
}

/// Folds events through the processor and returns the last record it published.
fn fold(config: AffinityConfig, events: Vec<(DateTime<Utc>, Channel, EventPayload)>) -> ChannelAffinity {
    let processor = ChannelAffinityProcessor { config: Arc::new(config) };
    let mut state = None;
    let mut last = None;
    let mut clock = None;
    for (at, channel, payload) in events {
        // It arrives as it happens, a late one when the clock has passed its time: the partition
        // clock never goes back (SPEC 4).
        let now = clock.map_or(at, |clock: DateTime<Utc>| clock.max(at));
        clock = Some(now);
        let outputs = processor.apply(&mut state, &event(at, channel, payload), now);
        last = outputs.into_iter().next().and_then(|o| o.value);
    }
    last.expect("a record")
}

fn score(record: &ChannelAffinity, channel: Channel) -> &ChannelScore {
    record.channels.iter().find(|c| c.channel == channel).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn story_four_whatsapp_then_sms_then_email_with_the_counts() {
    let mut events = Vec::new();
    for i in 0..5 {
        let h = f64::from(i);
        events.push((t(h), Channel::Email, sent_of(&format!("e{i}"))));
        events.push((t(h), Channel::Sms, sent_of(&format!("s{i}"))));
    }
    for i in 0..3 {
        let h = 5.0 + f64::from(i);
        events.push((t(h), Channel::Sms, clicked_of(&format!("s{i}"))));
        events.push((t(h), Channel::Whatsapp, sent()));
        events.push((t(h + 0.1), Channel::Whatsapp, received()));
    }
    let record = fold(AffinityConfig { half_life_days: 1e9, ..AffinityConfig::default() }, events);
    assert_eq!(record.ranking, vec![Channel::Whatsapp, Channel::Sms, Channel::Email, Channel::Push]);
    let (email, sms, whatsapp) =
        (score(&record, Channel::Email), score(&record, Channel::Sms), score(&record, Channel::Whatsapp));
    assert!(close(email.sent, 5.0) && close(email.engaged, 0.0), "{email:?}");
    assert!(close(sms.sent, 5.0) && close(sms.engaged, 3.0), "{sms:?}");
    assert!(close(whatsapp.sent, 3.0) && close(whatsapp.engaged, 3.0), "{whatsapp:?}");
    // Beta(1 + 3, 1 + 0): 4/5; Beta(1 + 3, 1 + 2): 4/7; Beta(1, 6): 1/7.
    assert!(close(whatsapp.score, 0.8) && close(sms.score, 4.0 / 7.0) && close(email.score, 1.0 / 7.0));
    assert!(score(&record, Channel::Push).insufficient_data, "never sent on push");
    assert!(!sms.insufficient_data);
}

#[test]
fn an_unsubscribed_channel_is_never_ranked_but_still_explained() {
    let record = fold(
        AffinityConfig::default(),
        vec![
            (t(0.0), Channel::Whatsapp, sent()),
            (t(0.1), Channel::Whatsapp, received()),
            (t(1.0), Channel::Whatsapp, consent(false)),
        ],
    );
    assert!(!record.ranking.contains(&Channel::Whatsapp));
    let whatsapp = score(&record, Channel::Whatsapp);
    assert!(!whatsapp.marketing_consent);
    assert!(whatsapp.engaged > 0.9, "its evidence is still shown");
    // Granted again: back in the ranking. A late, older grant does not override the revocation.
    let late = fold(
        AffinityConfig::default(),
        vec![(t(1.0), Channel::Whatsapp, consent(false)), (t(0.5), Channel::Whatsapp, consent(true))],
    );
    assert!(!late.ranking.contains(&Channel::Whatsapp));
    let again = fold(
        AffinityConfig::default(),
        vec![(t(1.0), Channel::Whatsapp, consent(false)), (t(2.0), Channel::Whatsapp, consent(true))],
    );
    assert!(again.ranking.contains(&Channel::Whatsapp));
}

#[test]
fn engagements_and_what_counts_as_one() {
    // given events on email, then (sent, engaged) as of the last one; no decay
    let cases: Vec<(&str, Vec<AtHour>, f64, f64)> = vec![
        ("a send", vec![(0.0, Channel::Email, sent())], 1.0, 0.0),
        (
            "a transactional send counts too (its opens do)",
            vec![(
                0.0,
                Channel::Email,
                EventPayload::MessageSent {
                    message_id: "m".into(),
                    campaign_id: None,
                    purpose: Purpose::Transactional,
                },
            )],
            1.0,
            0.0,
        ),
        ("an open", vec![(0.0, Channel::Email, sent()), (1.0, Channel::Email, opened())], 1.0, 1.0),
        (
            "an open and a click of one message are one engagement (unique engagements)",
            vec![
                (0.0, Channel::Email, sent()),
                (1.0, Channel::Email, opened()),
                (1.1, Channel::Email, clicked()),
                (1.2, Channel::Email, opened()),
            ],
            1.0,
            1.0,
        ),
        (
            "an open whose send is not in the history invents no send",
            vec![(0.0, Channel::Email, sent_of("a")), (1.0, Channel::Email, opened_of("older"))],
            1.0,
            1.0,
        ),
        (
            "two messages opened of three sent",
            vec![
                (0.0, Channel::Email, sent_of("a")),
                (0.0, Channel::Email, sent_of("b")),
                (0.0, Channel::Email, sent_of("c")),
                (1.0, Channel::Email, opened_of("a")),
                (1.0, Channel::Email, clicked_of("c")),
            ],
            3.0,
            2.0,
        ),
        ("an inbound message with no send before it", vec![(0.0, Channel::Email, received())], 1.0, 1.0),
        (
            "an order within 24 h of a click counts extra, within the sends",
            vec![
                (0.0, Channel::Email, sent_of("a")),
                (0.0, Channel::Email, sent_of("b")),
                (1.0, Channel::Email, clicked_of("a")),
                (2.0, Channel::Store, order()),
            ],
            2.0,
            2.0,
        ),
        (
            "an order after 24 h does not",
            vec![
                (0.0, Channel::Email, sent()),
                (1.0, Channel::Email, clicked()),
                (26.0, Channel::Web, order()),
            ],
            1.0,
            1.0,
        ),
        (
            "a delivery is no engagement",
            vec![
                (0.0, Channel::Email, sent()),
                (1.0, Channel::Email, EventPayload::MessageDelivered { message_id: "m".into() }),
            ],
            1.0,
            0.0,
        ),
        (
            "other channels do not count",
            vec![
                (0.0, Channel::Sms, sent()),
                (0.0, Channel::Web, EventPayload::PageViewed { url: "/".into() }),
            ],
            0.0,
            0.0,
        ),
    ];
    for (name, given, want_sent, want_engaged) in cases {
        let events = given.into_iter().map(|(h, c, p)| (t(h), c, p)).collect();
        let record = fold(AffinityConfig { half_life_days: 1e9, ..AffinityConfig::default() }, events);
        let email = score(&record, Channel::Email);
        assert!(close(email.sent, want_sent) && close(email.engaged, want_engaged), "{name}: {email:?}");
    }
}

/// The defect of issue 14: five opens of one email counted as five engagements (and five sends)
/// and outranked a channel clicked four times out of five.
#[test]
fn five_opens_of_one_email_do_not_outrank_four_clicks_of_five_texts() {
    let mut events = vec![(t(0.0), Channel::Email, sent_of("promo"))];
    events.extend((1..=5).map(|i| (t(f64::from(i)), Channel::Email, opened_of("promo"))));
    for i in 0..5 {
        events.push((t(0.0), Channel::Sms, sent_of(&format!("text-{i}"))));
    }
    events.extend((0..4).map(|i| (t(2.0), Channel::Sms, clicked_of(&format!("text-{i}")))));
    let config = AffinityConfig { half_life_days: 1e9, min_sends: 0.0, ..AffinityConfig::default() };
    let record = fold(config, events);
    let (email, sms) = (score(&record, Channel::Email), score(&record, Channel::Sms));
    // By hand: email Beta(1 + 1, 1 + 0) = 2/3, sms Beta(1 + 4, 1 + 1) = 5/7.
    assert!(close(email.sent, 1.0) && close(email.engaged, 1.0), "{email:?}");
    assert!(close(email.score, 2.0 / 3.0) && close(sms.score, 5.0 / 7.0), "{email:?} {sms:?}");
    assert_eq!(&record.ranking[..2], &[Channel::Sms, Channel::Email]);
}

#[test]
fn the_order_credit_goes_to_the_latest_click_before_it() {
    let record = fold(
        AffinityConfig { half_life_days: 1e9, ..AffinityConfig::default() },
        vec![
            (t(0.0), Channel::Email, sent_of("e1")),
            (t(0.0), Channel::Email, sent_of("e2")),
            (t(0.0), Channel::Push, sent_of("p1")),
            (t(0.0), Channel::Push, sent_of("p2")),
            (t(0.0), Channel::Email, clicked_of("e1")),
            (t(2.0), Channel::Push, clicked_of("p1")),
            (t(3.0), Channel::Store, order()),
        ],
    );
    assert!(close(score(&record, Channel::Push).engaged, 2.0));
    assert!(close(score(&record, Channel::Email).engaged, 1.0));
}

#[test]
fn decay_is_exact_whatever_the_order_of_arrival() {
    let config = AffinityConfig::default();
    let events = vec![
        (t(0.0), Channel::Sms, sent()),
        (t(24.0 * 30.0), Channel::Sms, sent()),
        (t(24.0 * 45.0), Channel::Sms, sent()),
    ];
    let in_order = fold(config.clone(), events.clone());
    let mut reversed = events;
    reversed.reverse();
    let out_of_order = fold(config, reversed);
    let (a, b) = (score(&in_order, Channel::Sms), score(&out_of_order, Channel::Sms));
    assert!(close(a.sent, b.sent) && close(a.engaged, b.engaged), "{a:?} vs {b:?}");
    // As of day 45, with a 30-day half-life: the sends of day 0 and 30 weigh 2^-1.5 and 2^-0.5.
    assert!(close(a.sent, 2f64.powf(-1.5) + 2f64.powf(-0.5) + 1.0), "{a:?}");
    assert_eq!(in_order.as_of, t(24.0 * 45.0));
}

#[test]
fn insufficient_data_below_the_configured_sends_and_bad_settings_refused() {
    let record = fold(
        AffinityConfig { min_sends: 2.0, ..AffinityConfig::default() },
        vec![(t(0.0), Channel::Email, sent())],
    );
    assert!(score(&record, Channel::Email).insufficient_data);
    let record = fold(
        AffinityConfig { min_sends: 2.0, ..AffinityConfig::default() },
        vec![(t(0.0), Channel::Email, sent()), (t(0.0), Channel::Email, sent())],
    );
    assert!(!score(&record, Channel::Email).insufficient_data);
    assert!(AffinityConfig::default().check().is_ok());
    assert!(AffinityConfig { half_life_days: 0.0, ..AffinityConfig::default() }.check().is_err());
    assert!(AffinityConfig { prior_beta: -1.0, ..AffinityConfig::default() }.check().is_err());
    assert!(AffinityConfig { min_sends: f64::NAN, ..AffinityConfig::default() }.check().is_err());
}

#[test]
fn erasure_writes_a_tombstone() {
    let processor = ChannelAffinityProcessor::default();
    let mut state = None;
    processor.apply(&mut state, &event(t(0.0), Channel::Email, sent()), Utc::now());
    let outputs =
        processor.apply(&mut state, &event(t(1.0), Channel::Web, EventPayload::ErasureRequested), Utc::now());
    assert_eq!(outputs[0].value, None);
    assert!(state.is_none());
}

/// Random histories: events on the four messaging channels and orders, within 90 days.
fn history() -> impl Strategy<Value = Vec<(f64, usize, u8)>> {
    prop::collection::vec((0.0..(90.0 * 24.0), 0..4usize, 0..7u8), 0..40)
}

/// An event of a random history; sends, opens and clicks name the message of that hour and
/// channel, so a send and its open can be generated apart.
fn payload(kind: u8, hours: f64, channel: usize) -> EventPayload {
    let message_id = format!("m-{}-{channel}", hours.to_bits());
    match kind {
        0 | 1 => sent_of(&message_id),
        2 => opened_of(&message_id),
        3 => clicked_of(&message_id),
        4 => received(),
        5 => order(),
        _ => consent(false),
    }
}

fn state_of(config: &AffinityConfig, history: &[(f64, usize, u8)]) -> AffinityState {
    let mut state = AffinityState::default();
    for (hours, channel, kind) in history {
        let payload = payload(*kind, *hours, *channel);
        apply_event(&mut state, config, &event(t(*hours), Channel::MESSAGING[*channel], payload));
    }
    state
}

proptest! {
    #[test]
    fn one_more_engagement_never_lowers_that_channels_score(history in history(), channel in 0..4usize, kind in 2..5u8) {
        let config = AffinityConfig::default();
        let state = state_of(&config, &history);
        let as_of = state.reference.unwrap_or(0);
        let before = affinity(&state, &config, "c", as_of);
        let mut after_state = state.clone();
        let at = DateTime::from_timestamp_millis(as_of).unwrap();
        let payload = payload(kind, as_of as f64, channel);
        apply_event(&mut after_state, &config, &event(at, Channel::MESSAGING[channel], payload));
        let after = affinity(&after_state, &config, "c", as_of);
        prop_assert!(after.channels[channel].score >= before.channels[channel].score - 1e-12);
    }

    #[test]
    fn after_one_half_life_without_events_the_counts_are_halved(history in history()) {
        let config = AffinityConfig::default();
        let state = state_of(&config, &history);
        let now = state.reference.unwrap_or(0);
        let half_life = (config.half_life_days * 86_400_000.0) as i64;
        let (a, b) = (affinity(&state, &config, "c", now), affinity(&state, &config, "c", now + half_life));
        for (x, y) in a.channels.iter().zip(&b.channels) {
            prop_assert!((x.sent / 2.0 - y.sent).abs() < 1e-9 && (x.engaged / 2.0 - y.engaged).abs() < 1e-9);
        }
    }

    #[test]
    fn scores_stay_in_the_unit_interval_and_engaged_within_sent(history in history()) {
        let config = AffinityConfig::default();
        let state = state_of(&config, &history);
        let record = affinity(&state, &config, "c", state.reference.unwrap_or(0));
        for channel in &record.channels {
            prop_assert!((0.0..=1.0).contains(&channel.score) && channel.std_dev >= 0.0);
            prop_assert!(channel.engaged <= channel.sent + 1e-9);
        }
    }

    #[test]
    fn a_channel_without_consent_never_appears_in_the_ranking(history in history()) {
        let config = AffinityConfig::default();
        let state = state_of(&config, &history);
        let record = affinity(&state, &config, "c", state.reference.unwrap_or(0));
        for channel in &record.channels {
            prop_assert_eq!(record.ranking.contains(&channel.channel), channel.marketing_consent);
        }
    }

    #[test]
    fn sends_and_opens_decay_the_same_whatever_the_order_of_arrival(history in history()) {
        // Sends, then opens of those sends: neither the order credit nor the engaged <= sent
        // top-up (which depend on what came before) is involved.
        let config = AffinityConfig::default();
        let sends: Vec<(f64, usize, u8)> = history.iter().map(|(h, c, _)| (*h, *c, 0)).collect();
        let opens: Vec<(f64, usize, u8)> = history.iter().map(|(h, c, _)| (*h, *c, 2)).collect();
        let forward: Vec<_> = sends.iter().chain(&opens).copied().collect();
        let mut backward = forward.clone();
        backward.reverse();
        let backward: Vec<_> = backward.iter().filter(|e| e.2 == 0).chain(backward.iter().filter(|e| e.2 == 2)).copied().collect();
        let (a, b) = (state_of(&config, &forward), state_of(&config, &backward));
        let as_of = a.reference.unwrap_or(0);
        let (x, y) = (affinity(&a, &config, "c", as_of), affinity(&b, &config, "c", as_of));
        for (p, q) in x.channels.iter().zip(&y.channels) {
            prop_assert!((p.sent - q.sent).abs() < 1e-9 && (p.engaged - q.engaged).abs() < 1e-9, "{:?} vs {:?}", p, q);
        }
    }
}

/// A history longer than the facts kept: the oldest are folded into decayed sums, which must give
/// what walking the whole history in event-time order gives (here computed naively: the events
/// arrive in event-time order, so the first engagement is the first to arrive and an order's click
/// is the latest click so far).
#[test]
fn a_long_history_folds_its_oldest_facts_exactly() {
    let config = AffinityConfig { half_life_days: 7.0, order_weight: 1.5, ..AffinityConfig::default() };
    let half_life_ms = config.half_life_days * 86_400_000.0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut events: Vec<(i64, usize, u8, u64)> = Vec::new(); // (at, channel, kind, message)
    let mut at = t(0.0).timestamp_millis();
    for n in 0..(3 * omnistream_channel_affinity::FACTS_KEPT as u64) {
        at += next(4 * 3_600_000) as i64;
        let kind = next(6) as u8; // 0 send, 1 open, 2 click, 3 inbound, 4 order, 5 page view
        // Engagements of one of the last few messages (repeats count once).
        events.push((at, next(4) as usize, kind, n.saturating_sub(next(20))));
    }
    let payload = |kind: u8, message: u64| {
        let id = format!("m-{message}");
        match kind {
            0 => sent_of(&id),
            1 => opened_of(&id),
            2 => clicked_of(&id),
            3 => received(),
            4 => order(),
            _ => EventPayload::PageViewed { url: "/".into() },
        }
    };
    let mut state = AffinityState::default();
    for (checked, &(at, channel, kind, message)) in events.iter().enumerate() {
        let event = event(
            DateTime::from_timestamp_millis(at).unwrap(),
            Channel::MESSAGING[channel],
            payload(kind, message),
        );
        apply_event(&mut state, &config, &event);
        assert!(state.facts.len() <= omnistream_channel_affinity::FACTS_KEPT);
        if checked % 500 != 499 && checked + 1 != events.len() {
            continue;
        }
        let as_of = at + 3_600_000;
        let weight = |t: i64| 0.5f64.powf((as_of - t) as f64 / half_life_ms);
        let (mut sent, mut engaged, mut unanswered) = ([0.0; 4], [0.0; 4], [0i64; 4]);
        let mut engaged_messages = std::collections::HashSet::new();
        let mut last_click: Option<(i64, usize)> = None;
        for &(t, c, kind, message) in &events[..=checked] {
            match kind {
                0 => {
                    sent[c] += weight(t);
                    unanswered[c] += 1;
                }
                1 | 2 => {
                    if engaged_messages.insert((c, message)) {
                        engaged[c] += weight(t);
                        unanswered[c] -= 1;
                    }
                    if kind == 2 {
                        last_click = Some((t, c));
                    }
                }
                3 => {
                    engaged[c] += weight(t);
                    if unanswered[c] > 0 {
                        unanswered[c] -= 1;
                    } else {
                        sent[c] += weight(t);
                    }
                }
                4 => {
                    if let Some((clicked, c)) =
                        last_click.filter(|(clicked, _)| t - clicked <= 24 * 3_600_000)
                    {
                        assert!(clicked <= t);
                        engaged[c] += config.order_weight * weight(t);
                    }
                }
                _ => {}
            }
        }
        let record = affinity(&state, &config, "c-1", as_of);
        for (channel, score) in record.channels.iter().enumerate() {
            let want = (sent[channel], engaged[channel].min(sent[channel]));
            assert!(
                close(score.sent, want.0) && close(score.engaged, want.1),
                "after {} events, channel {channel}: {score:?}, want {want:?}",
                checked + 1
            );
        }
    }
    assert!(state.folded_at.is_some(), "the history was long enough to fold");
}
