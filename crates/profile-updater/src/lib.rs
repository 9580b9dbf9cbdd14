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
    CONSENT_HISTORY_LIMIT, ChannelActivity, ConsentChange, ConsentEntry, CustomerProfile, IDENTIFIER_TRAITS,
    Identifier, OpenTicket, ResolvedTicket, TraitEntry,
};
use omnistream_model::tickets::{TicketFact, TicketLog, keep_latest};
use omnistream_model::traits::{Resolved, TraitHistory};
use omnistream_model::{Channel, EventPayload, SortedMap, TouchpointEvent, TraitValue};
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

/// The service's state of one customer: the profile it publishes, and what it needs to stay
/// correct with late events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// Shared with the output the runtime encodes (changed copy-on-write after it is dropped),
    /// so publishing the profile after each event copies nothing.
    pub profile: Arc<CustomerProfile>,
    /// Resolved tickets (id, resolution time) as state version 1 held them; moved into `tickets`
    /// when such a state is restored, always empty since.
    pub resolved_tickets: VecDeque<(String, i64)>,
    /// What decides a trait, for the traits whose profile entry does not say it all: those with
    /// `set_once`s waiting after their latest `set` or `unset`. Any other trait's history is its
    /// profile entry ([`history_of_entry`]), so most customers keep nothing here (memory).
    #[serde(default)]
    pub traits: SortedMap<String, TraitHistory>,
    /// Support tickets, resolved in event-time order (SPEC 4, `model::tickets`): every open one
    /// and the [`RESOLVED_TICKETS_KEPT`] others touched latest.
    #[serde(default)]
    pub tickets: Vec<TicketLog>,
}

impl ProfileState {
    fn new(event: &TouchpointEvent) -> Self {
        Self {
            profile: Arc::new(CustomerProfile {
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
                consent_history: Vec::new(),
                identifiers: Vec::new(),
                version: 0,
            }),
            resolved_tickets: VecDeque::new(),
            tickets: Vec::new(),
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
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdater;

/// Its one output role: the profile after each event (`--profiles-topic`).
pub const PROFILES_OUTPUT: &str = "profiles";

impl Processor for ProfileUpdater {
    type Input = TouchpointEvent;
    type State = ProfileState;
    type Record = Arc<CustomerProfile>;
    const OUTPUTS: &'static [&'static str] = &[PROFILES_OUTPUT];
    const LATEST_PER_KEY: &'static [&'static str] = &[PROFILES_OUTPUT];
    /// Version 2 (2026-12) added trait histories and ticket logs. A version 1 state has no trait
    /// history: each trait's profile entry stands for it, as it does for every trait whose
    /// history is one `set`.
    const STATE_VERSION: u8 = 2;

    /// A version 1 state's open and resolved tickets become ticket logs of one fact each, before
    /// anything the new events add (the channel of a resolution other than the last was not kept).
    fn upgrade_state(&self, state: &mut ProfileState, _written_with: u8) {
        let profile = &state.profile;
        let last = profile.last_resolved_ticket.as_ref();
        let opened = profile.open_tickets.iter().map(|t| {
            (t.ticket_id.clone(), t.opened_at.timestamp_millis(), false, t.channel, t.topic.clone())
        });
        let resolved = std::mem::take(&mut state.resolved_tickets).into_iter().map(|(id, at)| {
            let channel =
                last.filter(|last| last.ticket_id == id).map_or(Channel::CallCenter, |last| last.channel);
            (id, at, true, channel, None)
        });
        // The opening the last resolution closed: version 1 kept it only there.
        let closed = last.and_then(|last| {
            let opened_at = last.opened_at?.timestamp_millis();
            Some((last.ticket_id.clone(), opened_at, false, last.channel, None))
        });
        let facts: Vec<_> = closed.into_iter().chain(opened).chain(resolved).collect();
        let first = -i64::try_from(facts.len()).unwrap_or(0);
        for (seq, (ticket_id, at, resolves, channel, topic)) in (first..).zip(facts) {
            ticket_log(state, &ticket_id).record(TicketFact { at, resolves, channel, topic, seq });
        }
    }

    fn check_limits(
        &self,
        state: Option<&ProfileState>,
        event: &TouchpointEvent,
        _now: DateTime<Utc>,
    ) -> Result<(), String> {
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

    /// Merges (identity resolution, docs/identity.md): the loser's profile moves to the winner.
    const HANDS_OFF_STATE: bool = true;

    fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
        event.merge_winner().map(str::to_owned)
    }

    /// The winner's profile with the loser's folded in as if the loser's events had come after
    /// the winner's own (SPEC 4.1's rules decide by event time; arrival only breaks ties).
    fn merge(
        &self,
        state: &mut Option<ProfileState>,
        customer_id: &str,
        _from: &str,
        _cause: &str,
        handed: ProfileState,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Arc<CustomerProfile>>> {
        let merged = match state.take() {
            Some(mut ours) => {
                absorb(&mut ours, handed);
                ours
            }
            None => {
                let mut theirs = handed;
                Arc::make_mut(&mut theirs.profile).customer_id = customer_id.to_owned();
                theirs
            }
        };
        let profile = Arc::clone(&merged.profile);
        *state = Some(merged);
        vec![Output::new(PROFILES_OUTPUT, customer_id.to_owned(), Some(profile))]
    }

    fn apply(
        &self,
        state: &mut Option<ProfileState>,
        event: &TouchpointEvent,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Arc<CustomerProfile>>> {
        if let EventPayload::CustomersMerged { .. } = event.payload {
            // Merged away: the runtime hands the state to the winner; the profile goes.
            return vec![Output::new(PROFILES_OUTPUT, event.customer_id.clone(), None)];
        }
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output::new(PROFILES_OUTPUT, event.customer_id.clone(), None)];
        }
        let state = state.get_or_insert_with(|| ProfileState::new(event));
        apply_event(state, event);
        vec![Output::new(PROFILES_OUTPUT, event.customer_id.clone(), Some(Arc::clone(&state.profile)))]
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
/// `set_once` adds at most its name and its value shown, plus its value kept in a history; an
/// `unset` of a trait never seen adds its name (an unset trait stays, as null).
fn most_growth(event: &TouchpointEvent) -> [usize; 4] {
    match &event.payload {
        EventPayload::TraitsUpdated { set, set_once, unset } => {
            let bytes = set
                .iter()
                .chain(set_once.iter())
                .map(|(name, value)| name.len() + 2 * trait_value_bytes(value));
            let unset_bytes: usize = unset.iter().map(String::len).sum();
            [set.len() + set_once.len() + unset.len(), bytes.sum::<usize>() + unset_bytes, 0, 0]
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

/// Notes a ticket's opening or resolution, then shows the tickets anew.
fn note_ticket(state: &mut ProfileState, event: &TouchpointEvent) {
    let (ticket_id, resolves, topic) = match &event.payload {
        EventPayload::SupportTicketOpened { ticket_id, topic } => (ticket_id, false, topic.clone()),
        EventPayload::SupportTicketResolved { ticket_id } => (ticket_id, true, None),
        _ => return,
    };
    // Events applied so far: unique per event, growing with the offset.
    let seq = state.profile.version;
    let fact =
        TicketFact { at: event.occurred_at.timestamp_millis(), resolves, channel: event.channel, topic, seq };
    ticket_log(state, ticket_id).record(fact);
    show_tickets(state);
}

/// The log of `ticket_id`, created empty when new.
fn ticket_log<'a>(state: &'a mut ProfileState, ticket_id: &str) -> &'a mut TicketLog {
    match state.tickets.iter().position(|t| t.ticket_id == ticket_id) {
        Some(index) => &mut state.tickets[index],
        None => {
            state.tickets.push(TicketLog::new(ticket_id));
            state.tickets.last_mut().expect("pushed")
        }
    }
}

/// The profile's open tickets (in the arrival order of the opening that opened each) and last
/// resolution (the latest by event time, ties: arrival order) from the ticket logs; then keeps
/// every open ticket's log and the latest others.
fn show_tickets(state: &mut ProfileState) {
    let time = |millis: i64| DateTime::from_timestamp_millis(millis).unwrap_or_default();
    let profile = Arc::make_mut(&mut state.profile);
    let mut open: Vec<(&TicketFact, &str)> = state
        .tickets
        .iter()
        .filter_map(|log| log.open().map(|fact| (fact, log.ticket_id.as_str())))
        .collect();
    open.sort_by_key(|(fact, _)| fact.seq);
    profile.open_tickets = open
        .into_iter()
        .map(|(fact, ticket_id)| OpenTicket {
            ticket_id: ticket_id.to_owned(),
            opened_at: time(fact.at),
            channel: fact.channel,
            topic: fact.topic.clone(),
        })
        .collect();
    let latest = state
        .tickets
        .iter()
        .flat_map(|log| log.resolutions().into_iter().map(move |resolution| (log, resolution)))
        .max_by_key(|(_, resolution)| (resolution.resolved.at, resolution.resolved.seq));
    // A resolution of a log no longer kept stays shown until a later one comes.
    if let Some((log, resolution)) = latest
        && profile
            .last_resolved_ticket
            .as_ref()
            .is_none_or(|last| time(resolution.resolved.at) >= last.resolved_at)
    {
        profile.last_resolved_ticket = Some(ResolvedTicket {
            ticket_id: log.ticket_id.clone(),
            opened_at: resolution.opened.map(|opened| time(opened.at)),
            resolved_at: time(resolution.resolved.at),
            channel: resolution.resolved.channel,
        });
    }
    keep_latest(&mut state.tickets, RESOLVED_TICKETS_KEPT, |log| log.open().is_some());
}

/// Folds another customer's state into this one (a merge), as if its events had arrived after
/// this one's: counts and amounts add up, times widen, traits, consents and the last order go by
/// event time (ties: the loser's, the later arrival), tickets join by id.
pub fn absorb(state: &mut ProfileState, loser: ProfileState) {
    for (name, _) in loser.profile.traits.iter() {
        let mut history = state.trait_history(name);
        history.absorb(&loser.trait_history(name));
        let Some(entry) = trait_entry(&history) else { continue };
        if history_of_entry(&entry) == history {
            state.traits.remove(name.as_str());
        } else {
            state.traits.insert(name.clone(), history);
        }
        Arc::make_mut(&mut state.profile).traits.insert(name.clone(), entry);
    }
    // The loser's facts after this customer's: sequence numbers grow with arrival.
    let after = state.profile.version;
    for log in &loser.tickets {
        for fact in &log.facts {
            ticket_log(state, &log.ticket_id).record(TicketFact { seq: after + fact.seq, ..fact.clone() });
        }
    }
    let theirs = &loser.profile;
    let profile = Arc::make_mut(&mut state.profile);
    profile.first_seen_at = profile.first_seen_at.min(theirs.first_seen_at);
    profile.last_seen_at = profile.last_seen_at.max(theirs.last_seen_at);
    for activity in &theirs.channels {
        match profile.channels.binary_search_by_key(&activity.channel, |a| a.channel) {
            Err(index) => profile.channels.insert(index, activity.clone()),
            Ok(index) => {
                let ours = &mut profile.channels[index];
                ours.first_seen_at = ours.first_seen_at.min(activity.first_seen_at);
                ours.last_seen_at = ours.last_seen_at.max(activity.last_seen_at);
                for (event_type, count) in activity.event_counts.iter() {
                    *ours.event_counts.get_or_insert_with(event_type, || (*event_type, 0)) += count;
                }
            }
        }
    }
    profile.orders_count += theirs.orders_count;
    profile.refunds_count += theirs.refunds_count;
    for (currency, value) in theirs.lifetime_value_minor.iter() {
        *profile.lifetime_value_minor.get_or_insert_with(currency, || (currency.clone(), 0)) += value;
    }
    for (currency, value) in theirs.refunded_value_minor.iter() {
        *profile.refunded_value_minor.get_or_insert_with(currency, || (currency.clone(), 0)) += value;
    }
    if let Some(at) = theirs.last_order_at
        && profile.last_order_at.is_none_or(|last| at >= last)
    {
        profile.last_order_at = Some(at);
        profile.last_order_channel = theirs.last_order_channel;
    }
    for entry in &theirs.consents {
        match profile.consents.iter_mut().find(|c| c.channel == entry.channel && c.purpose == entry.purpose) {
            Some(existing) if entry.at >= existing.at => *existing = entry.clone(),
            Some(_) => {}
            None => profile.consents.push(entry.clone()),
        }
    }
    profile.consents.sort_by_key(|c| (c.channel, c.purpose));
    profile.consent_history.extend(theirs.consent_history.iter().cloned());
    profile.consent_history.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    keep_newest_consent_changes(&mut profile.consent_history);
    for identifier in &theirs.identifiers {
        let value = TraitValue::String(identifier.value.clone());
        note_identifier(profile, &identifier.kind, &value, identifier.first_seen_at);
    }
    if let Some(resolved) = &theirs.last_resolved_ticket
        && profile.last_resolved_ticket.as_ref().is_none_or(|last| resolved.resolved_at > last.resolved_at)
    {
        profile.last_resolved_ticket = Some(resolved.clone());
    }
    profile.version += theirs.version;
    show_tickets(state);
}

/// Folds one event into the state (everything but erasure).
pub fn apply_event(state: &mut ProfileState, event: &TouchpointEvent) {
    let at = event.occurred_at;
    if let EventPayload::TraitsUpdated { set, set_once, unset } = &event.payload {
        apply_traits(state, set, set_once, unset, at);
    }
    let profile = Arc::make_mut(&mut state.profile);
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
        EventPayload::ConsentChanged { purpose, granted } => {
            let change = ConsentChange {
                channel: event.channel,
                purpose: *purpose,
                granted: *granted,
                event_id: event.event_id.clone(),
                at,
            };
            let position = profile.consent_history.partition_point(|c| c.order_key() <= change.order_key());
            profile.consent_history.insert(position, change);
            keep_newest_consent_changes(&mut profile.consent_history);
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
    note_ticket(state, event);
}

/// The history keeps the newest [`CONSENT_HISTORY_LIMIT`] changes.
fn keep_newest_consent_changes(history: &mut Vec<ConsentChange>) {
    let excess = history.len().saturating_sub(CONSENT_HISTORY_LIMIT);
    history.drain(..excess);
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
        Arc::make_mut(&mut state.profile).traits.insert(name.clone(), entry);
    }
    // Seen is seen, whether or not the value is the current one.
    for (name, value) in set.iter().chain(set_once) {
        note_identifier(Arc::make_mut(&mut state.profile), name, value, at);
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
