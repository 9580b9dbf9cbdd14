//! profile-updater's pure core (SPEC 4.1): folds every touchpoint event of a customer into one
//! `CustomerProfile`, by event time where it matters, and emits the profile after each event.
//!
//! Traits follow their event time, not arrival order: each resolves as if its `set`, `set_once`
//! and `unset` operations were applied in `occurred_at` order ([`TraitHistory`], the resolution
//! suppression's `timezone` uses too). An unset trait stays in the profile as a `null` value with
//! the unset's time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    ChannelActivity, ConsentEntry, CustomerProfile, Identifier, OpenTicket, ResolvedTicket, TraitEntry,
};
use omnistream_model::topics::PROFILES;
use omnistream_model::traits::{Resolved, TraitHistory};
use omnistream_model::{Channel, EventPayload, SortedMap, TouchpointEvent, TraitValue, encode_record};
use omnistream_runtime::{Output, Processor};
use serde::{Deserialize, Serialize};

/// Resolved tickets remembered so that a late `support_ticket_opened` does not reopen them.
const RESOLVED_TICKETS_KEPT: usize = 32;
/// Identifiers kept per customer (the most recently first seen are dropped beyond it).
const IDENTIFIERS_KEPT: usize = 20;
/// SPEC 4 Limits: a profile holds at most this many traits (an unset trait's tombstone counts)...
pub const MAX_TRAITS: usize = 256;
/// ...and this many bytes of trait data (names plus values; a number counts 8, a boolean 1).
pub const MAX_TRAIT_BYTES: usize = 64 * 1024;
/// Open support tickets per customer.
pub const MAX_OPEN_TICKETS: usize = 64;
/// Currencies of lifetime value and refunds per customer.
pub const MAX_CURRENCIES: usize = 32;
/// Traits whose string values are identifiers of the customer.
const IDENTIFIER_TRAITS: &[&str] = &["email", "phone"];

/// The service's state of one customer: the profile it publishes, and what it needs to stay
/// correct with late events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    pub profile: CustomerProfile,
    /// Recently resolved tickets with their resolution time (unix millis).
    pub resolved_tickets: VecDeque<(String, i64)>,
    /// What decides a trait, for the traits whose profile entry does not say it all: those with
    /// `set_once`s waiting after their latest `set` or `unset`. Any other trait's history is its
    /// profile entry ([`history_of_entry`]), so most customers keep nothing here (memory).
    #[serde(default)]
    pub traits: SortedMap<String, TraitHistory>,
}

impl ProfileState {
    fn new(event: &TouchpointEvent) -> Self {
        Self {
            profile: CustomerProfile {
                customer_id: event.customer_id.clone(),
                first_seen_at: event.occurred_at,
                last_seen_at: event.occurred_at,
                channels: Vec::new(),
                traits: Default::default(),
                orders_count: 0,
                lifetime_value_minor: Default::default(),
                last_order_at: None,
                last_order_channel: None,
                refunds_count: 0,
                refunded_value_minor: Default::default(),
                open_tickets: Vec::new(),
                last_resolved_ticket: None,
                consents: Vec::new(),
                identifiers: Vec::new(),
                version: 0,
            },
            resolved_tickets: VecDeque::new(),
            traits: SortedMap::default(),
        }
    }

    /// The history of trait `name` so far.
    fn trait_history(&self, name: &str) -> TraitHistory {
        match self.traits.get(name) {
            Some(history) => history.clone(),
            None => self.profile.traits.get(name).map(history_of_entry).unwrap_or_default(),
        }
    }
}

/// The history a profile entry alone stands for: a `set` value is a base, a `set_once` one a
/// `set_once` with no base, a null one an `unset`.
pub fn history_of_entry(entry: &TraitEntry) -> TraitHistory {
    let at = entry.updated_at.timestamp_millis();
    let mut history = TraitHistory::default();
    match (&entry.value, entry.set_once) {
        (TraitValue::Null, _) => history.unset(at),
        (value, true) => history.set_once(value, at),
        (value, false) => history.set(value, at),
    }
    history
}

/// The profile-updater processor.
#[derive(Debug, Clone)]
pub struct ProfileUpdater {
    pub profiles_topic: Arc<str>,
}

impl Default for ProfileUpdater {
    fn default() -> Self {
        Self { profiles_topic: Arc::from(PROFILES) }
    }
}

impl Processor for ProfileUpdater {
    type State = ProfileState;
    /// Version 2 (2026-12) added trait histories. A version 1 state has none: each trait's profile
    /// entry stands for its history, as it does for every trait whose history is one `set`.
    const STATE_VERSION: u8 = 2;

    fn check_limits(&self, state: Option<&ProfileState>, event: &TouchpointEvent) -> Result<(), String> {
        let touches_a_limit = matches!(
            event.payload,
            EventPayload::TraitsUpdated { .. }
                | EventPayload::SupportTicketOpened { .. }
                | EventPayload::OrderPlaced { .. }
                | EventPayload::OrderRefunded { .. }
        );
        if !touches_a_limit {
            return Ok(());
        }
        // Most events are far from every limit: when even the most the event could add keeps
        // each measure within its limit, no copy is needed.
        let now = state.map(measures).unwrap_or_default();
        if now
            .iter()
            .zip(most_growth(event))
            .zip(LIMITS)
            .all(|((now, growth), (limit, _))| now + growth <= limit)
        {
            return Ok(());
        }
        // The event applied to a copy: what the profile would hold.
        let mut after = state.cloned().unwrap_or_else(|| ProfileState::new(event));
        apply_event(&mut after, event);
        limit_broken(state, &after).map_or(Ok(()), Err)
    }

    fn apply(
        &self,
        state: &mut Option<ProfileState>,
        event: &TouchpointEvent,
        _now: DateTime<Utc>,
    ) -> Vec<Output> {
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output {
                topic: self.profiles_topic.clone(),
                key: event.customer_id.clone(),
                value: None,
            }];
        }
        let state = state.get_or_insert_with(|| ProfileState::new(event));
        apply_event(state, event);
        let value = encode_record(&state.profile).expect("a profile matches its schema");
        vec![Output {
            topic: self.profiles_topic.clone(),
            key: event.customer_id.clone(),
            value: Some(value),
        }]
    }
}

/// Which of SPEC 4's limits the event that turned `before` into `after` breaks, if any: a
/// measure over its limit that the event raised. A customer already over a limit (state from
/// before the limits) is not locked out: events that do not grow that measure still apply.
pub fn limit_broken(before: Option<&ProfileState>, after: &ProfileState) -> Option<String> {
    let before = before.map(measures).unwrap_or_default();
    measures(after).into_iter().zip(before).zip(LIMITS).find_map(|((now, was), (limit, what))| {
        (now > limit && now > was).then(|| format!("the profile would hold {now} {what} (limit {limit})"))
    })
}

/// SPEC 4's limits on a profile, in the order of [`measures`].
const LIMITS: [(usize, &str); 4] = [
    (MAX_TRAITS, "traits"),
    (MAX_TRAIT_BYTES, "bytes of traits"),
    (MAX_OPEN_TICKETS, "open tickets"),
    (MAX_CURRENCIES, "currencies"),
];

/// Traits, bytes of trait data (the `set_once` values a history keeps count too), open tickets,
/// currencies.
fn measures(state: &ProfileState) -> [usize; 4] {
    let profile = &state.profile;
    let shown: usize =
        profile.traits.iter().map(|(name, entry)| name.len() + trait_value_bytes(&entry.value)).sum();
    let kept: usize = state
        .traits
        .iter()
        .flat_map(|(_, history)| history.set_once.iter())
        .map(|(value, _)| trait_value_bytes(value))
        .sum();
    [
        profile.traits.len(),
        shown + kept,
        profile.open_tickets.len(),
        profile.lifetime_value_minor.len().max(profile.refunded_value_minor.len()),
    ]
}

/// An upper bound of what `event` can add to each measure of [`measures`]: a `set` or
/// `set_once` adds at most its name and its value shown, plus its value kept in a history.
fn most_growth(event: &TouchpointEvent) -> [usize; 4] {
    match &event.payload {
        EventPayload::TraitsUpdated { set, set_once, .. } => {
            let bytes = set
                .iter()
                .chain(set_once.iter())
                .map(|(name, value)| name.len() + 2 * trait_value_bytes(value));
            [set.len() + set_once.len(), bytes.sum(), 0, 0]
        }
        EventPayload::SupportTicketOpened { .. } => [0, 0, 1, 0],
        EventPayload::OrderPlaced { .. } | EventPayload::OrderRefunded { .. } => [0, 0, 0, 1],
        _ => [0; 4],
    }
}

fn trait_value_bytes(value: &TraitValue) -> usize {
    match value {
        TraitValue::Null => 0,
        TraitValue::Bool(_) => 1,
        TraitValue::Long(_) | TraitValue::Double(_) => 8,
        TraitValue::String(text) => text.len(),
    }
}

/// Folds one event into the state (everything but erasure).
pub fn apply_event(state: &mut ProfileState, event: &TouchpointEvent) {
    let at = event.occurred_at;
    if let EventPayload::TraitsUpdated { set, set_once, unset } = &event.payload {
        apply_traits(state, set, set_once, unset, at);
    }
    let profile = &mut state.profile;
    profile.first_seen_at = profile.first_seen_at.min(at);
    profile.last_seen_at = profile.last_seen_at.max(at);
    record_activity(profile, event);
    match &event.payload {
        EventPayload::OrderPlaced { value_minor, currency, .. } => {
            profile.orders_count += 1;
            *profile.lifetime_value_minor.get_or_insert_with(currency, || (currency.clone(), 0)) +=
                value_minor;
            if profile.last_order_at.is_none_or(|last| at >= last) {
                profile.last_order_at = Some(at);
                profile.last_order_channel = Some(event.channel);
            }
        }
        EventPayload::OrderRefunded { value_minor, currency, .. } => {
            profile.refunds_count += 1;
            *profile.refunded_value_minor.get_or_insert_with(currency, || (currency.clone(), 0)) +=
                value_minor;
            *profile.lifetime_value_minor.get_or_insert_with(currency, || (currency.clone(), 0)) -=
                value_minor;
        }
        EventPayload::SupportTicketOpened { ticket_id, topic } => {
            let resolved_since = state
                .resolved_tickets
                .iter()
                .any(|(id, resolved)| id == ticket_id && *resolved >= at.timestamp_millis());
            let already_open = profile.open_tickets.iter().any(|t| &t.ticket_id == ticket_id);
            // Its resolution came first: in event-time order this opening is what it closed.
            if resolved_since
                && let Some(last) = profile.last_resolved_ticket.as_mut()
                && &last.ticket_id == ticket_id
                && last.resolved_at >= at
                && last.opened_at.is_none_or(|opened| opened > at)
            {
                last.opened_at = Some(at);
            }
            if !resolved_since && !already_open {
                profile.open_tickets.push(OpenTicket {
                    ticket_id: ticket_id.clone(),
                    opened_at: at,
                    channel: event.channel,
                    topic: topic.clone(),
                });
            }
        }
        EventPayload::SupportTicketResolved { ticket_id } => {
            // Only an opening at or before it: one dated later is a new opening after it.
            let opened =
                profile.open_tickets.iter().position(|t| &t.ticket_id == ticket_id && t.opened_at <= at);
            let opened_at = opened.map(|index| profile.open_tickets.remove(index).opened_at);
            if profile.last_resolved_ticket.as_ref().is_none_or(|last| at >= last.resolved_at) {
                profile.last_resolved_ticket = Some(ResolvedTicket {
                    ticket_id: ticket_id.clone(),
                    opened_at,
                    resolved_at: at,
                    channel: event.channel,
                });
            }
            state.resolved_tickets.retain(|(id, _)| id != ticket_id);
            state.resolved_tickets.push_back((ticket_id.clone(), at.timestamp_millis()));
            if state.resolved_tickets.len() > RESOLVED_TICKETS_KEPT {
                state.resolved_tickets.pop_front();
            }
        }
        EventPayload::ConsentChanged { purpose, granted } => {
            let entry = ConsentEntry { channel: event.channel, purpose: *purpose, granted: *granted, at };
            match profile.consents.iter_mut().find(|c| c.channel == event.channel && c.purpose == *purpose) {
                Some(existing) if at >= existing.at => *existing = entry,
                Some(_) => {}
                None => {
                    profile.consents.push(entry);
                    profile.consents.sort_by_key(|c| (c.channel, c.purpose));
                }
            }
        }
        _ => {}
    }
    profile.version += 1;
}

/// Applies one event's trait operations in the order `set`, `set_once`, `unset` (one event, one
/// time: SPEC 4's ties go by that order).
fn apply_traits(
    state: &mut ProfileState,
    set: &BTreeMap<String, TraitValue>,
    set_once: &BTreeMap<String, TraitValue>,
    unset: &[String],
    at: DateTime<Utc>,
) {
    let at_ms = at.timestamp_millis();
    let names: BTreeSet<&String> = set.keys().chain(set_once.keys()).chain(unset).collect();
    for name in names {
        let mut history = state.trait_history(name);
        if let Some(value) = set.get(name) {
            history.set(value, at_ms);
        }
        if let Some(value) = set_once.get(name) {
            history.set_once(value, at_ms);
        }
        if unset.contains(name) {
            history.unset(at_ms);
        }
        let Some(entry) = trait_entry(&history) else { continue };
        // Keep the history only where the entry does not stand for it.
        if history_of_entry(&entry) == history {
            state.traits.remove(name.as_str());
        } else {
            state.traits.insert(name.clone(), history);
        }
        state.profile.traits.insert(name.clone(), entry);
    }
    // Seen is seen, whether or not the value is the current one.
    for (name, value) in set.iter().chain(set_once) {
        note_identifier(&mut state.profile, name, value, at);
    }
}

fn record_activity(profile: &mut CustomerProfile, event: &TouchpointEvent) {
    let at = event.occurred_at;
    let index = match profile.channels.binary_search_by_key(&event.channel, |a| a.channel) {
        Ok(index) => index,
        Err(index) => {
            profile.channels.insert(
                index,
                ChannelActivity {
                    channel: event.channel,
                    first_seen_at: at,
                    last_seen_at: at,
                    event_counts: Default::default(),
                },
            );
            index
        }
    };
    let activity = &mut profile.channels[index];
    activity.first_seen_at = activity.first_seen_at.min(at);
    activity.last_seen_at = activity.last_seen_at.max(at);
    let event_type = event.event_type();
    *activity.event_counts.get_or_insert_with(&event_type, || (event_type, 0)) += 1;
}

/// The profile's entry of a resolved trait: an unset one is a `null` value.
fn trait_entry(history: &TraitHistory) -> Option<TraitEntry> {
    let time = |at| DateTime::from_timestamp_millis(at).unwrap_or_default();
    Some(match history.resolved()? {
        Resolved::Value { value, at, by_set_once } => {
            TraitEntry { value: value.clone(), updated_at: time(at), set_once: by_set_once }
        }
        Resolved::Unset { at } => {
            TraitEntry { value: TraitValue::Null, updated_at: time(at), set_once: false }
        }
    })
}

/// Email and phone traits are identifiers of the customer: keep every one seen, with when.
fn note_identifier(profile: &mut CustomerProfile, name: &str, value: &TraitValue, at: DateTime<Utc>) {
    let TraitValue::String(text) = value else { return };
    if !IDENTIFIER_TRAITS.contains(&name) || text.is_empty() {
        return;
    }
    match profile.identifiers.iter_mut().find(|i| i.kind == name && &i.value == text) {
        Some(existing) => existing.first_seen_at = existing.first_seen_at.min(at),
        None => {
            profile.identifiers.push(Identifier {
                kind: name.to_owned(),
                value: text.clone(),
                first_seen_at: at,
            });
            if profile.identifiers.len() > IDENTIFIERS_KEPT {
                let newest = profile
                    .identifiers
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, identifier)| identifier.first_seen_at)
                    .map(|(index, _)| index);
                if let Some(index) = newest {
                    profile.identifiers.remove(index);
                }
            }
        }
    }
}

/// The activity of a profile on one channel, if it was ever seen there.
pub fn activity(profile: &CustomerProfile, channel: Channel) -> Option<&ChannelActivity> {
    profile.channels.iter().find(|a| a.channel == channel)
}
