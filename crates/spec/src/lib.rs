//! The executable form of SPEC 4, built differently from the services: for a customer, the
//! expected record is recomputed from the **whole history** of input records (in offset order,
//! with the broker's append time of each), with no incremental state, by sorting facts into
//! event-time order where the SPEC says event time decides. It shares no code with the service
//! cores (only the event and record types, which are the contract); differential tests hold the
//! services to it.
//!
//! The shared semantics (dedupe, the erasure cut) and SPEC 4.1 (profile-updater) are here; SPEC
//! 4.2–4.4 in [`suppression`], [`affinity`] and [`loyalty`].

pub mod affinity;
pub mod journeys;
pub mod loyalty;
pub mod suppression;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    CONSENT_HISTORY_LIMIT, ChannelActivity, ConsentChange, ConsentEntry, CustomerProfile, Identifier,
    OpenTicket, ResolvedTicket, TraitEntry,
};
use omnistream_model::{EventPayload, TouchpointEvent, TraitValue};

/// Event ids remembered per customer (the services' default `--dedupe-window`).
pub const DEDUPE_WINDOW: usize = 64;
/// The erasure horizon (SPEC 4.5 default), in millis of partition clock.
pub const ERASURE_HORIZON_MS: i64 = 30 * 86_400_000;

/// One input record of the customer: the event and the broker's append time (unix millis).
#[derive(Debug, Clone)]
pub struct Record {
    pub event: TouchpointEvent,
    pub appended_at: i64,
}

/// The events a service applies, of the customer's current relationship, in offset order:
/// duplicates (an id among the last [`DEDUPE_WINDOW`] applied) are dropped; an erasure ends the
/// relationship, and for the horizon afterwards events dated at or before it and retries of the
/// ids seen before it are dropped (SPEC 4.5). `None` when the last applied event is an erasure.
pub fn applied(history: &[Record]) -> Option<Vec<&Record>> {
    applied_reading(history, |_| true)
}

/// [`applied`] for a service that reads only some events (docs/runtime.md, "Events of no
/// concern"): an event the service does not `read` is not applied and its id is not remembered
/// (the dedupe window counts the events applied), unless it is a new customer's first: one never
/// seen, or seen before an erasure whose horizon has passed (while it lasts, only an event read
/// starts a new relationship). An erasure is always read.
pub fn applied_reading(history: &[Record], reads: impl Fn(&EventPayload) -> bool) -> Option<Vec<&Record>> {
    let mut ids: Vec<&str> = Vec::new();
    let mut relationship: Vec<&Record> = Vec::new();
    // The last erasure: (its occurred_at, applied at, the ids seen before it).
    let mut erased: Option<(i64, i64, Vec<&str>)> = None;
    let mut ended = false;
    for record in history {
        let event = &record.event;
        let at = event.occurred_at.timestamp_millis();
        if let Some((erased_at, recorded_at, before)) = &erased
            && record.appended_at.max(*recorded_at) < recorded_at + ERASURE_HORIZON_MS
            && (at <= *erased_at || before.contains(&event.event_id.as_str()))
        {
            continue;
        }
        let recent = &ids[ids.len().saturating_sub(DEDUPE_WINDOW)..];
        if recent.contains(&event.event_id.as_str()) {
            continue;
        }
        let erasure = matches!(event.payload, EventPayload::ErasureRequested);
        let marker_lives = erased.as_ref().is_some_and(|(_, recorded_at, _)| {
            record.appended_at.max(*recorded_at) < recorded_at + ERASURE_HORIZON_MS
        });
        let new_customer = relationship.is_empty() && !marker_lives;
        if !erasure && !new_customer && !reads(&event.payload) {
            continue;
        }
        ids.push(&event.event_id);
        if matches!(event.payload, EventPayload::ErasureRequested) {
            let window = ids[ids.len().saturating_sub(DEDUPE_WINDOW)..].to_vec();
            erased = Some((at, record.appended_at, window));
            ids.clear();
            relationship.clear();
            ended = true;
        } else {
            relationship.push(record);
            ended = false;
        }
    }
    (!ended).then_some(relationship)
}

fn millis(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at).unwrap_or_default()
}

/// SPEC 4.1: the customer's profile after their whole history; `None` if they have none (never
/// seen, or erased last).
pub fn profile(customer_id: &str, history: &[Record]) -> Option<CustomerProfile> {
    let events: Vec<&TouchpointEvent> = applied(history)?.into_iter().map(|r| &r.event).collect();
    if events.is_empty() {
        return None;
    }
    let first_seen_at = events.iter().map(|e| e.occurred_at).min()?;
    let last_seen_at = events.iter().map(|e| e.occurred_at).max()?;
    Some(CustomerProfile {
        customer_id: customer_id.to_owned(),
        first_seen_at,
        last_seen_at,
        channels: channels(&events),
        traits: traits(&events).into_iter().collect(),
        orders_count: events.iter().filter(|e| matches!(e.payload, EventPayload::OrderPlaced { .. })).count()
            as i64,
        lifetime_value_minor: money(&events, true).into_iter().collect(),
        last_order_at: last_order(&events).map(|e| e.occurred_at),
        last_order_channel: last_order(&events).map(|e| e.channel),
        refunds_count: events
            .iter()
            .filter(|e| matches!(e.payload, EventPayload::OrderRefunded { .. }))
            .count() as i64,
        refunded_value_minor: money(&events, false).into_iter().collect(),
        open_tickets: tickets(&events).0,
        last_resolved_ticket: tickets(&events).1,
        consents: consents(&events),
        consent_history: consent_history(&events),
        identifiers: identifiers(&events),
        version: events.len() as i64,
    })
}

fn channels(events: &[&TouchpointEvent]) -> Vec<ChannelActivity> {
    let mut by_channel: BTreeMap<u32, Vec<&TouchpointEvent>> = BTreeMap::new();
    for event in events {
        by_channel.entry(event.channel.index()).or_default().push(event);
    }
    by_channel
        .into_values()
        .map(|on| {
            let mut counts: BTreeMap<_, i64> = BTreeMap::new();
            for event in &on {
                *counts.entry(event.event_type()).or_default() += 1;
            }
            ChannelActivity {
                channel: on[0].channel,
                first_seen_at: on.iter().map(|e| e.occurred_at).min().unwrap_or_default(),
                last_seen_at: on.iter().map(|e| e.occurred_at).max().unwrap_or_default(),
                event_counts: counts.into_iter().collect(),
            }
        })
        .collect()
}

/// SPEC 4 traits: per trait, every operation sorted by `occurred_at` (ties: offset order, and in
/// one event `set` before `set_once` before `unset`), replayed from nothing.
fn traits(events: &[&TouchpointEvent]) -> BTreeMap<String, TraitEntry> {
    enum Op<'a> {
        Set(&'a TraitValue),
        SetOnce(&'a TraitValue),
        Unset,
    }
    let mut ops: BTreeMap<&str, Vec<(i64, usize, Op<'_>)>> = BTreeMap::new();
    for (position, event) in events.iter().enumerate() {
        let EventPayload::TraitsUpdated { set, set_once, unset } = &event.payload else { continue };
        let at = event.occurred_at.timestamp_millis();
        for (name, value) in set {
            ops.entry(name).or_default().push((at, position * 3, Op::Set(value)));
        }
        // A `set_once` of null sets nothing: no operation.
        for (name, value) in set_once.iter().filter(|(_, value)| **value != TraitValue::Null) {
            ops.entry(name).or_default().push((at, position * 3 + 1, Op::SetOnce(value)));
        }
        for name in unset {
            ops.entry(name).or_default().push((at, position * 3 + 2, Op::Unset));
        }
    }
    ops.into_iter()
        .map(|(name, mut ops)| {
            ops.sort_by_key(|(at, order, _)| (*at, *order));
            let mut entry: Option<TraitEntry> = None;
            for (at, _, op) in ops {
                let present = entry.as_ref().is_some_and(|e| e.value != TraitValue::Null);
                match op {
                    Op::Set(value) => {
                        entry =
                            Some(TraitEntry { value: value.clone(), updated_at: millis(at), set_once: false })
                    }
                    Op::SetOnce(value) if !present => {
                        entry =
                            Some(TraitEntry { value: value.clone(), updated_at: millis(at), set_once: true })
                    }
                    Op::SetOnce(_) => {}
                    Op::Unset => {
                        entry = Some(TraitEntry {
                            value: TraitValue::Null,
                            updated_at: millis(at),
                            set_once: false,
                        })
                    }
                }
            }
            (name.to_owned(), entry.expect("a trait has an operation"))
        })
        .collect()
}

/// Orders (`lifetime`: minus refunds) or refunds, per currency.
fn money(events: &[&TouchpointEvent], lifetime: bool) -> BTreeMap<String, i64> {
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for event in events {
        match &event.payload {
            EventPayload::OrderPlaced { value_minor, currency, .. } if lifetime => {
                *totals.entry(currency.clone()).or_default() += value_minor;
            }
            EventPayload::OrderRefunded { value_minor, currency, .. } => {
                *totals.entry(currency.clone()).or_default() +=
                    if lifetime { -value_minor } else { *value_minor };
            }
            _ => {}
        }
    }
    totals
}

/// The latest order by event time (ties: the later in offset order).
fn last_order<'a>(events: &[&'a TouchpointEvent]) -> Option<&'a TouchpointEvent> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.payload, EventPayload::OrderPlaced { .. }))
        .max_by_key(|(position, e)| (e.occurred_at, *position))
        .map(|(_, e)| *e)
}

/// Tickets in event-time order (ties: openings first, then offset order): an open opens a ticket not open; a
/// resolution closes it (`opened_at` the open's time) or, not open, only records itself. Open
/// tickets are listed in the offset order of their opening; the last resolution is the latest by
/// event time.
fn tickets(events: &[&TouchpointEvent]) -> (Vec<OpenTicket>, Option<ResolvedTicket>) {
    let mut ordered: Vec<(usize, &&TouchpointEvent)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e.payload,
                EventPayload::SupportTicketOpened { .. } | EventPayload::SupportTicketResolved { .. }
            )
        })
        .collect();
    // At one instant an opening comes before a resolution: a resolution never precedes its cause.
    let resolves = |e: &TouchpointEvent| matches!(e.payload, EventPayload::SupportTicketResolved { .. });
    ordered.sort_by_key(|(position, e)| (e.occurred_at, resolves(e), *position));
    let mut open: Vec<(usize, OpenTicket)> = Vec::new();
    let mut last: Option<ResolvedTicket> = None;
    for (position, event) in ordered {
        match &event.payload {
            EventPayload::SupportTicketOpened { ticket_id, topic }
                if !open.iter().any(|(_, t)| &t.ticket_id == ticket_id) =>
            {
                let ticket = OpenTicket {
                    ticket_id: ticket_id.clone(),
                    opened_at: event.occurred_at,
                    channel: event.channel,
                    topic: topic.clone(),
                };
                open.push((position, ticket));
            }
            EventPayload::SupportTicketResolved { ticket_id } => {
                let index = open.iter().position(|(_, t)| &t.ticket_id == ticket_id);
                let opened_at = index.map(|index| open.remove(index).1.opened_at);
                last = Some(ResolvedTicket {
                    ticket_id: ticket_id.clone(),
                    opened_at,
                    resolved_at: event.occurred_at,
                    channel: event.channel,
                });
            }
            _ => {}
        }
    }
    open.sort_by_key(|(position, _)| *position);
    (open.into_iter().map(|(_, ticket)| ticket).collect(), last)
}

/// Per channel and purpose, the latest consent by event time (ties: the later in offset order).
fn consents(events: &[&TouchpointEvent]) -> Vec<ConsentEntry> {
    let mut latest: BTreeMap<(u32, u32), (DateTime<Utc>, usize, ConsentEntry)> = BTreeMap::new();
    for (position, event) in events.iter().enumerate() {
        let EventPayload::ConsentChanged { purpose, granted } = &event.payload else { continue };
        let entry = ConsentEntry {
            channel: event.channel,
            purpose: *purpose,
            granted: *granted,
            at: event.occurred_at,
        };
        let key = (event.channel.index(), purpose.index());
        if latest.get(&key).is_none_or(|(at, order, _)| (event.occurred_at, position) >= (*at, *order)) {
            latest.insert(key, (event.occurred_at, position, entry));
        }
    }
    latest.into_values().map(|(_, _, entry)| entry).collect()
}

/// Every consent change, by event time then event id, the newest `CONSENT_HISTORY_LIMIT`.
fn consent_history(events: &[&TouchpointEvent]) -> Vec<ConsentChange> {
    let mut history: Vec<ConsentChange> = events
        .iter()
        .filter_map(|event| match &event.payload {
            EventPayload::ConsentChanged { purpose, granted } => Some(ConsentChange {
                channel: event.channel,
                purpose: *purpose,
                granted: *granted,
                event_id: event.event_id.clone(),
                at: event.occurred_at,
            }),
            _ => None,
        })
        .collect();
    history.sort_by(|a, b| (a.at, &a.event_id).cmp(&(b.at, &b.event_id)));
    history.split_off(history.len().saturating_sub(CONSENT_HISTORY_LIMIT))
}

/// Every email and phone in `set`/`set_once` traits, in the order first seen (offset order), with
/// the earliest event time it was seen at.
fn identifiers(events: &[&TouchpointEvent]) -> Vec<Identifier> {
    let mut seen: Vec<Identifier> = Vec::new();
    for event in events {
        let EventPayload::TraitsUpdated { set, set_once, .. } = &event.payload else { continue };
        for (name, value) in set.iter().chain(set_once) {
            let TraitValue::String(text) = value else { continue };
            if !matches!(name.as_str(), "email" | "phone") || text.is_empty() {
                continue;
            }
            match seen.iter_mut().find(|i| &i.kind == name && &i.value == text) {
                Some(known) => known.first_seen_at = known.first_seen_at.min(event.occurred_at),
                None => seen.push(Identifier {
                    kind: name.clone(),
                    value: text.clone(),
                    first_seen_at: event.occurred_at,
                }),
            }
        }
    }
    seen
}
