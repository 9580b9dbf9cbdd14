//! profile-updater's pure core (SPEC 4.1): folds every touchpoint event of a customer into one
//! `CustomerProfile`, by event time where it matters, and emits the profile after each event.
//!
//! Traits follow their event time, not arrival order:
//! - `set` at t replaces the value if t is not older than the value's time (or the value came
//!   from a later `set_once`, which a set before it would have made a no-op);
//! - `set_once` at t applies when the trait is absent (never set, or unset before t), and replaces
//!   an earlier-arriving `set_once` with a later time (the first by event time wins);
//! - `unset` at t removes a value not newer than t and leaves a tombstone, so a late older `set`
//!   cannot bring the value back.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    ChannelActivity, ConsentEntry, CustomerProfile, Identifier, OpenTicket, ResolvedTicket, TraitEntry,
};
use omnistream_model::topics::PROFILES;
use omnistream_model::{Channel, EventPayload, TouchpointEvent, TraitValue, encode_record};
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
        }
    }
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
        // The event applied to a copy: what the profile would hold.
        let mut after = state.cloned().unwrap_or_else(|| ProfileState::new(event));
        apply_event(&mut after, event);
        limit_broken(&after.profile).map_or(Ok(()), Err)
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

/// Which of SPEC 4's limits a profile breaks, if any.
pub fn limit_broken(profile: &CustomerProfile) -> Option<String> {
    let traits = profile.traits.len();
    if traits > MAX_TRAITS {
        return Some(format!("the profile would hold {traits} traits (limit {MAX_TRAITS})"));
    }
    let bytes: usize =
        profile.traits.iter().map(|(name, entry)| name.len() + trait_value_bytes(&entry.value)).sum();
    if bytes > MAX_TRAIT_BYTES {
        return Some(format!("the profile would hold {bytes} bytes of traits (limit {MAX_TRAIT_BYTES})"));
    }
    let tickets = profile.open_tickets.len();
    if tickets > MAX_OPEN_TICKETS {
        return Some(format!("the customer would have {tickets} open tickets (limit {MAX_OPEN_TICKETS})"));
    }
    let currencies = profile.lifetime_value_minor.len().max(profile.refunded_value_minor.len());
    if currencies > MAX_CURRENCIES {
        return Some(format!("the profile would hold {currencies} currencies (limit {MAX_CURRENCIES})"));
    }
    None
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
            let opened = profile.open_tickets.iter().position(|t| &t.ticket_id == ticket_id);
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
        EventPayload::TraitsUpdated { set, set_once, unset } => {
            for (name, value) in set {
                set_trait(profile, name, value, at);
            }
            for (name, value) in set_once {
                set_trait_once(profile, name, value, at);
            }
            for name in unset {
                unset_trait(profile, name, at);
            }
        }
        _ => {}
    }
    profile.version += 1;
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

fn set_trait(profile: &mut CustomerProfile, name: &str, value: &TraitValue, at: DateTime<Utc>) {
    let applies = profile.traits.get(name).is_none_or(|entry| at >= entry.updated_at || entry.set_once);
    if applies {
        profile
            .traits
            .insert(name.to_owned(), TraitEntry { value: value.clone(), updated_at: at, set_once: false });
    }
    // Seen is seen, whether or not the value is still the current one.
    note_identifier(profile, name, value, at);
}

fn set_trait_once(profile: &mut CustomerProfile, name: &str, value: &TraitValue, at: DateTime<Utc>) {
    let applies = match profile.traits.get(name) {
        None => true,
        // An earlier set_once by event time wins over one that arrived first.
        Some(entry) if entry.set_once => at < entry.updated_at,
        // Unset before this set_once: the trait was absent when it happened.
        Some(entry) => entry.value == TraitValue::Null && entry.updated_at <= at,
    };
    if applies {
        profile
            .traits
            .insert(name.to_owned(), TraitEntry { value: value.clone(), updated_at: at, set_once: true });
    }
    // Seen is seen, whether or not the value is still the current one.
    note_identifier(profile, name, value, at);
}

fn unset_trait(profile: &mut CustomerProfile, name: &str, at: DateTime<Utc>) {
    let applies = profile.traits.get(name).is_none_or(|entry| at >= entry.updated_at);
    if applies {
        profile
            .traits
            .insert(name.to_owned(), TraitEntry { value: TraitValue::Null, updated_at: at, set_once: false });
    }
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
