//! SPEC 4.3, channel-affinity: the expected `ChannelAffinity` of a customer recomputed from their
//! whole history at a time `now`, with no running state.
//!
//! Built differently from the service (which keeps decayed counters and folds events into them
//! one at a time): here every fact is found in the applied history first (sends, the first
//! engagement of each message, inbound messages, orders after clicks), put into event-time order
//! where the SPEC says event time decides, and each is weighted by `0.5^((now − occurred_at) /
//! half-life)` directly, then summed. Floating point therefore differs from the service's in the
//! last bits; tests compare the doubles with a relative tolerance.
//!
//! Decisions where SPEC 4.3 and docs/channel-affinity.md are silent (each marked `Decision:`
//! below) follow the SPEC's shared semantics (SPEC 4: "event time decides").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use omnistream_model::records::{ChannelAffinity, ChannelScore};
use omnistream_model::{Channel, EventPayload, Purpose};

use crate::{Record, applied_reading, millis};

/// The settings of SPEC 4.3 ("prior from configuration", "a configurable number of sends"), with
/// the defaults of docs/channel-affinity.md.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffinitySettings {
    /// "each weighted by exponential time decay (half-life default 30 d)".
    pub half_life_days: f64,
    /// The Beta prior (docs: 1, 1, uniform).
    pub prior_alpha: f64,
    pub prior_beta: f64,
    /// "`insufficient_data` when fewer than a configurable number of sends" (docs: 3).
    pub min_sends: f64,
    /// "an order within 24 h of a click on that channel counted extra": how much extra (docs: 1).
    pub order_weight: f64,
}

impl Default for AffinitySettings {
    fn default() -> Self {
        Self { half_life_days: 30.0, prior_alpha: 1.0, prior_beta: 1.0, min_sends: 3.0, order_weight: 1.0 }
    }
}

/// "an order within 24 h of a click".
pub const ORDER_AFTER_CLICK_MS: i64 = 24 * 3_600_000;

/// docs: "decayed sends below `--min-sends`, with a 1 % tolerance so that sends of a few hours ago
/// (weighing a hair under one) count whole".
pub const MIN_SENDS_TOLERANCE: f64 = 0.01;

/// SPEC 4.3 "updated on every relevant event"; docs/channel-affinity.md: "a customer's first
/// event, and after it sends, opens, clicks, inbound messages, orders and marketing consent".
/// `version` counts those (a first event of another kind makes the record at version 0); `as_of`
/// is the partition clock of the last event applied.
fn reads(payload: &EventPayload) -> bool {
    match payload {
        EventPayload::ConsentChanged { purpose, .. } => *purpose == Purpose::Marketing,
        EventPayload::MessageSent { .. }
        | EventPayload::MessageReceived { .. }
        | EventPayload::MessageOpened { .. }
        | EventPayload::MessageClicked { .. }
        | EventPayload::OrderPlaced { .. } => true,
        _ => false,
    }
}

/// The partition clock when the customer's last record was written: the greatest append time up
/// to the last applied event (SPEC 4: "now is the partition clock … a service stamps `as of`
/// fields … by the partition clock"). `None` when nothing of the current relationship was applied.
pub fn written_at(history: &[Record]) -> Option<DateTime<Utc>> {
    let last = *applied_reading(history, reads)?.last()?;
    let index = history.iter().position(|record| std::ptr::eq(record, last))?;
    history[..=index].iter().map(|record| record.appended_at).max().map(millis)
}

/// One fact on a messaging channel, at an event time, in a position of the offset order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fact {
    /// `message_sent` (whatever its purpose: docs, "engagements count whatever the message's
    /// purpose, so sends must too").
    Send,
    /// The first open or click of a message.
    Engagement,
    /// `message_received`.
    Inbound,
    /// An order credited to the channel of the click before it: weighs `order_weight`.
    OrderCredit,
}

/// SPEC 4.3: the customer's channel affinity as of `now`; `None` when their current relationship
/// has no event (never seen, or erased last: the topic holds a tombstone, SPEC 4.5).
pub fn affinity(
    customer_id: &str,
    history: &[Record],
    now: DateTime<Utc>,
    settings: &AffinitySettings,
) -> Option<ChannelAffinity> {
    let events = applied_reading(history, reads)?;
    if events.is_empty() {
        return None;
    }
    let facts = facts(&events);
    let channels: Vec<ChannelScore> = Channel::MESSAGING
        .iter()
        .map(|&channel| {
            let on: Vec<(i64, Fact)> =
                facts.iter().filter(|(c, _, _)| *c == channel).map(|(_, at, fact)| (*at, *fact)).collect();
            score(channel, &on, consent(&events, channel), now, settings)
        })
        .collect();
    Some(ChannelAffinity {
        customer_id: customer_id.to_owned(),
        ranking: ranking(&channels),
        channels,
        half_life_days: settings.half_life_days,
        as_of: now,
        version: events.iter().filter(|record| reads(&record.event.payload)).count() as i64,
    })
}

/// Every fact of the messaging channels, as (channel, occurred_at millis, fact), in event-time
/// order (ties: offset order).
fn facts(events: &[&Record]) -> Vec<(Channel, i64, Fact)> {
    let messaging = |channel: Channel| Channel::MESSAGING.contains(&channel);
    let at = |record: &Record| record.event.occurred_at.timestamp_millis();
    // (channel, event time, offset position, fact)
    let mut facts: Vec<(Channel, i64, usize, Fact)> = Vec::new();

    // SPEC 4: "the first open or click of a `message_id` is one engagement". Decision: "first" by
    // event time (ties: offset order), as SPEC 4 makes event time decide and late facts give the
    // result of event-time order; a message is a (channel, message_id) (docs: "the first
    // `message_opened` or `message_clicked` of a `message_id` on the channel").
    let mut first: BTreeMap<(u32, &str), (i64, usize)> = BTreeMap::new();
    for (position, record) in events.iter().enumerate() {
        let event = &record.event;
        if !messaging(event.channel) {
            continue;
        }
        match &event.payload {
            EventPayload::MessageSent { .. } => facts.push((event.channel, at(record), position, Fact::Send)),
            EventPayload::MessageReceived { .. } => {
                facts.push((event.channel, at(record), position, Fact::Inbound))
            }
            EventPayload::MessageOpened { message_id } | EventPayload::MessageClicked { message_id, .. } => {
                let key = (event.channel.index(), message_id.as_str());
                let candidate = (at(record), position);
                first.entry(key).and_modify(|known| *known = (*known).min(candidate)).or_insert(candidate);
            }
            _ => {}
        }
    }
    for &(at, position) in first.values() {
        facts.push((events[position].event.channel, at, position, Fact::Engagement));
    }

    // SPEC 4.3: "an order within 24 h of a click on that channel counted extra". docs: "an
    // `order_placed` on any channel within 24 h after a click is credited … to the channel of the
    // latest click before the order". Every click counts (not only a message's first), by event
    // time: a click dated 0..=24 h before the order, the latest (ties: the later in offset
    // order). Decision: "within 24 h" includes exactly 24 h, and an order arriving before its
    // click is credited once the click is there (SPEC 4: "the result equals event-time order").
    let clicks: Vec<(i64, usize, Channel)> = events
        .iter()
        .enumerate()
        .filter(|(_, r)| messaging(r.event.channel))
        .filter(|(_, r)| matches!(r.event.payload, EventPayload::MessageClicked { .. }))
        .map(|(position, r)| (at(r), position, r.event.channel))
        .collect();
    for (position, record) in events.iter().enumerate() {
        if !matches!(record.event.payload, EventPayload::OrderPlaced { .. }) {
            continue;
        }
        let ordered = at(record);
        let click = clicks
            .iter()
            .filter(|(clicked, _, _)| *clicked <= ordered && ordered - clicked <= ORDER_AFTER_CLICK_MS)
            .max_by_key(|(clicked, p, _)| (*clicked, *p));
        if let Some(&(_, _, channel)) = click {
            facts.push((channel, ordered, position, Fact::OrderCredit));
        }
    }

    facts.sort_by_key(|(_, at, position, _)| (*at, *position));
    facts.into_iter().map(|(channel, at, _, fact)| (channel, at, fact)).collect()
}

/// SPEC 4.3, one channel: the decayed counts, the Beta posterior, consent and the data flag.
fn score(
    channel: Channel,
    facts: &[(i64, Fact)],
    marketing_consent: bool,
    now: DateTime<Utc>,
    settings: &AffinitySettings,
) -> ChannelScore {
    // "each weighted by exponential time decay (half-life default 30 d)": 0.5^(age / half-life).
    // docs: "an event dated ahead of [the partition clock] (clock skew) is counted undecayed
    // until the clock passes it" (SPEC 4: future-dated events are facts, allowed up to 24 h).
    let half_life_ms = settings.half_life_days * 86_400_000.0;
    let weight = |at: i64| 0.5f64.powf((now.timestamp_millis() - at).max(0) as f64 / half_life_ms);

    // SPEC 4.3: "An inbound message with no send before it counts as a send and an engagement,
    // so engaged never exceeds sent." Decision: "no send before it" is read with its purpose:
    // walking the channel in event-time order, an inbound message counts as a send too when every
    // send before it is already matched by an engagement (counted once each: a first open or
    // click, or an earlier inbound message); otherwise it answers one of those sends.
    let mut sent = 0.0;
    let mut engaged = 0.0;
    let mut unanswered: i64 = 0; // sends so far minus engagements so far
    for &(at, fact) in facts {
        match fact {
            Fact::Send => {
                sent += weight(at);
                unanswered += 1;
            }
            Fact::Engagement => {
                engaged += weight(at);
                unanswered -= 1;
            }
            Fact::Inbound => {
                engaged += weight(at);
                if unanswered > 0 {
                    unanswered -= 1;
                } else {
                    sent += weight(at);
                }
            }
            Fact::OrderCredit => engaged += settings.order_weight * weight(at),
        }
    }
    // docs: "the record caps the engagements at the sends, so the score stays a rate" (an open
    // whose send is older than the history, or an engagement decayed less than its send).
    let engaged = engaged.min(sent);

    // "Score = posterior mean of a Beta(prior_α + engaged, prior_β + sent − engaged)"; the
    // confidence is the posterior standard deviation (docs: `std_dev`).
    let a = settings.prior_alpha + engaged;
    let b = settings.prior_beta + sent - engaged;
    let n = a + b;
    ChannelScore {
        channel,
        score: a / n,
        std_dev: (a * b / (n * n * (n + 1.0))).sqrt(),
        sent,
        engaged,
        // "`insufficient_data` when fewer than a configurable number of sends".
        insufficient_data: sent < settings.min_sends * (1.0 - MIN_SENDS_TOLERANCE),
        marketing_consent,
    }
}

/// "channels without marketing consent excluded". docs: "the latest marketing `consent_changed`
/// of the channel by event time (a late, older one does not win) … No consent event counts as
/// granted". Ties: the later in offset order. Decision: a consent event dated ahead of the clock
/// is already the latest (as future-dated sends count at once, docs).
fn consent(events: &[&Record], channel: Channel) -> bool {
    events
        .iter()
        .enumerate()
        .filter(|(_, r)| r.event.channel == channel)
        .filter_map(|(position, r)| match r.event.payload {
            EventPayload::ConsentChanged { purpose: Purpose::Marketing, granted } => {
                Some((r.event.occurred_at, position, granted))
            }
            _ => None,
        })
        .max_by_key(|(at, position, _)| (*at, *position))
        .is_none_or(|(_, _, granted)| granted)
}

/// "Output: channels ranked by score … channels without marketing consent excluded". docs:
/// "the consented channels, those with enough data first, each group by score, best first".
/// Decision: equal scores keep `Channel::MESSAGING` order (email, sms, whatsapp, push); the
/// tests accept any order of scores equal within their tolerance.
pub fn ranking(channels: &[ChannelScore]) -> Vec<Channel> {
    let mut ranked: Vec<&ChannelScore> = channels.iter().filter(|c| c.marketing_consent).collect();
    ranked.sort_by(|x, y| x.insufficient_data.cmp(&y.insufficient_data).then(y.score.total_cmp(&x.score)));
    ranked.into_iter().map(|c| c.channel).collect()
}

/// Relative tolerance of [`agree`]: the model sums weights in another order than the service.
pub const TOLERANCE: f64 = 1e-9;

/// Equal within [`TOLERANCE`].
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()) + 1e-300
}

/// The service's record against the model's at the same `as_of`: `Err` names the first difference.
pub fn agree(
    service: &ChannelAffinity,
    model: &ChannelAffinity,
    settings: &AffinitySettings,
) -> Result<(), String> {
    let fail = |what: String| Err(format!("{what}\nservice: {service:#?}\nmodel: {model:#?}"));
    if (&service.customer_id, service.as_of, service.version)
        != (&model.customer_id, model.as_of, model.version)
    {
        return fail("customer_id, as_of or version".into());
    }
    if service.half_life_days != model.half_life_days || service.channels.len() != model.channels.len() {
        return fail("half_life_days or the channels listed".into());
    }
    let threshold = settings.min_sends * (1.0 - MIN_SENDS_TOLERANCE);
    for (s, m) in service.channels.iter().zip(&model.channels) {
        let doubles = [(s.sent, m.sent), (s.engaged, m.engaged), (s.score, m.score), (s.std_dev, m.std_dev)];
        if s.channel != m.channel || s.marketing_consent != m.marketing_consent {
            return fail(format!("{:?}: channel or consent", m.channel));
        }
        if !doubles.iter().all(|(a, b)| close(*a, *b)) {
            return fail(format!("{:?}: sent, engaged, score or std_dev", m.channel));
        }
        if s.insufficient_data != m.insufficient_data && !close(m.sent, threshold) {
            return fail(format!("{:?}: insufficient_data", m.channel));
        }
    }
    // The ranked set is the model's; the order is the model's up to ties within the tolerance.
    let mut ranked = service.ranking.clone();
    let mut expected = model.ranking.clone();
    ranked.sort_by_key(|c| c.index());
    expected.sort_by_key(|c| c.index());
    if ranked != expected {
        return fail("the channels ranked".into());
    }
    let key = |channel: &Channel| {
        let s = service.channels.iter().find(|s| s.channel == *channel).expect("listed");
        (s.insufficient_data, s.score)
    };
    for pair in service.ranking.windows(2) {
        let ((worse_data, first), (better_data, second)) = (key(&pair[0]), key(&pair[1]));
        if (worse_data && !better_data)
            || (worse_data == better_data && second > first && !close(first, second))
        {
            return fail("the ranking order".into());
        }
    }
    Ok(())
}
