//! The journeys core (docs/journeys.md, "How a journey runs"): pure, one customer at a time.
//!
//! [`Engine::apply`] folds one of the customer's events: it feeds the embedded suppression and
//! affinity cores (the same code and rules files as those services), ends every entry whose exit
//! or goal the event matches (also while it waits), moves on every entry waiting for it, and
//! enters the journeys it triggers. [`Engine::on_timer`] moves on the entries whose wait has
//! ended. Both run steps until each entry waits or ends, and return the send decisions made.
//! Time is the partition clock `now` (SPEC 4): replaying the same log decides the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Days, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use omnistream_channel_affinity::{AffinityConfig, AffinityState};
use omnistream_model::records::{CatalogEvent, CatalogEventType, SuppressionStatus};
use omnistream_model::traits::TraitHistory;
use omnistream_model::{
    Channel, EventPayload, Purpose, SortedMap, TouchpointEvent, TraitValue, event_to_json,
};
use omnistream_suppression::{PreparedRules, SuppressionMemory};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::definition::{
    Action, BranchCondition, CatalogChange, ChannelChoice, Condition, EventFilter, Field, Journey, Reentry,
    Scalar, Test, Trigger, Wait, WhenSuppressed,
};

/// Entries one customer is in at once, across journeys; a trigger beyond it does not enter.
pub const MAX_ENTRIES: usize = 32;
/// Ended entries remembered (re-entry, the state record): the latest.
pub const ENDED_KEPT: usize = 64;
/// Decisions not yet seen back as `message_sent` that still count as sends: the latest.
pub const PENDING_KEPT: usize = 256;
/// `per` re-entry keys remembered per journey (an order id enters once among the latest these).
pub const KEYS_KEPT: usize = 256;
/// Trigger event ids remembered per journey.
pub const TRIGGERS_KEPT: usize = 16;
/// Traits kept for conditions (SPEC 4's profile limit).
pub const TRAITS_KEPT: usize = 256;
/// Products viewed kept for catalog triggers: the latest viewed.
pub const INTERESTS_KEPT: usize = 32;
/// How long a view is kept for catalog triggers (the longest `entry.within`).
pub const INTEREST_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// The journeys published: every version an entry may still be on, and the latest of each.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    /// By journey id, then version: looked up on every event without building a key.
    versions: BTreeMap<String, BTreeMap<u32, Arc<Journey>>>,
}

impl Definitions {
    pub fn insert(&mut self, journey: Journey) {
        self.versions.entry(journey.id.clone()).or_default().insert(journey.version, Arc::new(journey));
    }

    pub fn get(&self, id: &str, version: u32) -> Option<&Journey> {
        self.versions.get(id)?.get(&version).map(Arc::as_ref)
    }

    /// Every published version of every journey.
    pub fn all(&self) -> impl Iterator<Item = &Journey> {
        self.versions.values().flat_map(BTreeMap::values).map(Arc::as_ref)
    }

    /// The latest version of each journey, by id: what new entries enter.
    pub fn latest(&self) -> impl Iterator<Item = &Journey> {
        self.versions
            .values()
            .filter_map(|versions| versions.last_key_value())
            .map(|(_, journey)| journey.as_ref())
    }
}

/// What journeys keeps of one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerJourneys {
    /// Suppression's own memory, fed the same events (and this service's decisions as sends).
    pub suppression: SuppressionMemory,
    pub affinity: AffinityState,
    /// Sorted vectors, not `BTreeMap`s: a tree allocates eleven slots for its first entry, and
    /// every customer keeps one (the same MessagePack map either way).
    pub traits: SortedMap<String, TraitHistory>,
    pub entries: Vec<EntryState>,
    /// The latest ended entries, oldest first.
    pub ended: Vec<Ended>,
    /// Decisions sent and not yet seen back as `message_sent`, oldest first: already counted as
    /// sends, so their `message_sent` is not counted again.
    pub pending: Vec<String>,
    /// What re-entry needs of each journey the customer ever entered (kept as long as the
    /// customer: `once` is for good, unlike the latest ended entries above).
    #[serde(default)]
    pub entered: SortedMap<String, Entered>,
    /// The products the customer viewed, for catalog triggers: the latest [`INTERESTS_KEPT`]
    /// within [`INTEREST_KEPT_FOR`].
    #[serde(default)]
    pub interests: Vec<Interest>,
    /// Per published journey version, the latest event that matched one of its goals (those
    /// about the journey's own messages aside), in or out of the journey: a merge ends the other
    /// customer's entries on that version that were running then (docs/journeys.md, "Merges").
    #[serde(default)]
    pub goals: Vec<GoalReached>,
}

/// When (the partition clock) an event last matched a goal of a journey version, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoalReached {
    pub journey: String,
    pub version: u32,
    pub at: i64,
    pub event_id: String,
}

/// A product the customer viewed: its catalog events appended after `seen_through` may enter
/// them in a journey (docs/journeys.md, "Catalog triggers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    pub product_id: String,
    /// The latest view (the event's time, at most the time it was applied).
    pub viewed_at: i64,
    /// The append time (unix millis) through which the product's catalog events were seen: a
    /// change before the view triggers nothing.
    pub seen_through: i64,
}

/// Re-entry's memory of one journey.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entered {
    /// When the last entry ended; `None` while one runs.
    pub last_end: Option<i64>,
    /// The `per` keys entered with: the latest [`KEYS_KEPT`].
    pub keys: Vec<String>,
    /// The trigger event ids of the latest [`TRIGGERS_KEPT`] entries: a producer's retry of one
    /// enters nothing.
    pub triggers: Vec<String>,
}

/// One entry into one journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    pub journey: String,
    /// The version it entered with: it stays on it.
    pub version: u32,
    /// The trigger event's id: with the journey, it names the entry in every decision id.
    pub entry_id: String,
    /// The `per` re-entry key's value.
    pub key: Option<String>,
    pub entered_at: i64,
    pub step: usize,
    pub step_since: i64,
    /// Decisions the entry made so far: with the step, it makes each decision id unique (a loop
    /// through a send decides again under a new id).
    pub attempt: u32,
    /// Waiting until then (unix millis): a timer, an event wait's timeout, a suppressed send's
    /// next try.
    pub waiting_until: Option<i64>,
    /// Decision ids of its sends: `of_this_journey` matches engagement with them.
    pub messages: Vec<String>,
    /// Steps whose branch condition `happened` matched an event since the entry.
    pub happened: Vec<usize>,
    /// The customer it entered as, when a merge moved it to another: part of its decision ids,
    /// so they cannot repeat the winner's own (a catalog entry's id is the same for everyone).
    #[serde(default)]
    pub origin: Option<String>,
}

/// How an entry ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// It ran through its last step.
    Completed,
    /// A goal event.
    Goal { event_id: String },
    /// An `exit_when` event.
    Exited { event_id: String },
    /// An exit step.
    ExitStep { reason: String },
    /// A send the customer could not be reached by, with `when_suppressed = "exit"`.
    Suppressed,
    /// Its version is no longer published.
    Withdrawn,
    /// Its customer was merged into another (docs/journeys.md, "Merges") that was in the same
    /// journey: `continued_by` is the entry that goes on for both (the one entered first), none
    /// if the merged customer was over [`MAX_ENTRIES`].
    Merged { continued_by: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub journey: String,
    pub version: u32,
    pub entry_id: String,
    pub key: Option<String>,
    pub at: i64,
    pub reason: EndReason,
}

/// A send decision (`journey.actions.v1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The same for a replay of the same decision; the sender's idempotency key and the
    /// `message_id` of the message it sends.
    pub decision_id: String,
    pub customer_id: String,
    pub journey: String,
    pub version: u32,
    pub entry_id: String,
    /// The entry's key: a catalog trigger's product, a `per` re-entry key's value.
    pub entry_key: Option<String>,
    pub step: String,
    pub attempt: u32,
    pub decided_at: i64,
    pub template: String,
    pub outcome: Outcome,
    /// What decided it: each channel considered with suppression's verdict, and affinity's
    /// ranking of the messaging channels.
    pub considered: Vec<Considered>,
    pub ranking: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Send(Channel),
    /// Not allowed on any channel considered: the journey goes on without it.
    Skipped,
    /// Not allowed yet: tried again by `until` or on the customer's next event.
    Waiting {
        until: i64,
    },
    /// Not allowed: the entry ends.
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Considered {
    pub channel: Channel,
    pub status: SuppressionStatus,
    /// Suppression's first reason code, if not allowed.
    pub reason: Option<String>,
    pub until: Option<i64>,
}

/// The rules of the embedded cores.
#[derive(Debug, Clone)]
pub struct Engine {
    pub suppression: Arc<PreparedRules>,
    pub affinity: AffinityConfig,
}

impl Engine {
    /// Folds one of the customer's events (not an erasure: the runtime forgets the customer).
    pub fn apply(
        &self,
        definitions: &Definitions,
        state: &mut CustomerJourneys,
        customer_id: &str,
        event: &TouchpointEvent,
        now: i64,
    ) -> Vec<Decision> {
        let catalog_triggers =
            definitions.latest().any(|journey| matches!(journey.entry.trigger, Trigger::Catalog { .. }));
        self.remember(state, event, now, catalog_triggers);
        for journey in definitions.all() {
            // No messages: a goal about the journey's own messages needs the entry's.
            if journey.goals.iter().any(|goal| matches(goal, event, &[], &state.traits)) {
                let (journey, version) = (journey.id.clone(), journey.version);
                let reached = GoalReached { journey, version, at: now, event_id: event.event_id.clone() };
                // One per published version: the latest.
                state.goals.retain(|kept| {
                    definitions.get(&kept.journey, kept.version).is_some()
                        && (kept.journey != reached.journey || kept.version != reached.version)
                });
                state.goals.push(reached);
            }
        }
        let mut run = Run { engine: self, customer_id, now, decisions: Vec::new() };
        let entries = std::mem::take(&mut state.entries);
        for mut entry in entries {
            let Some(journey) = definitions.get(&entry.journey, entry.version) else {
                end(state, entry, now, EndReason::Withdrawn);
                continue;
            };
            if let Some(reason) = exit_reason(journey, &entry, event, &state.traits) {
                end(state, entry, now, reason);
                continue;
            }
            for (position, step) in journey.steps.iter().enumerate() {
                if let Action::Branch { condition: BranchCondition::Happened(filter), .. } = &step.action
                    && !entry.happened.contains(&position)
                    && event.occurred_at.timestamp_millis() >= entry.entered_at
                    && matches(filter, event, &entry.messages, &state.traits)
                {
                    entry.happened.push(position);
                }
            }
            let moved = match &journey.steps[entry.step].action {
                Action::WaitForEvent { filter, next, .. }
                    if matches(filter, event, &entry.messages, &state.traits) =>
                {
                    Some(*next)
                }
                // A send waiting for suppression tries again on every event (a ticket resolved).
                Action::Send { .. } if entry.waiting_until.is_some() => Some(Some(entry.step)),
                _ => None,
            };
            match moved {
                Some(target) => run.go(state, journey, entry, target),
                None => state.entries.push(entry),
            }
        }
        for journey in definitions.latest() {
            if let Some(entry) = self.enters(state, journey, event, now) {
                run.enter(state, journey, entry);
            }
        }
        run.decisions
    }

    /// A catalog event of a product the customer viewed (read as of `now` less the lookup
    /// grace): enters the journeys it triggers for a customer who viewed the product within
    /// their window before the change happened (its `occurred_at`). The caller then marks the
    /// product's events seen ([`Self::seen_catalog`]).
    pub fn on_catalog(
        &self,
        definitions: &Definitions,
        state: &mut CustomerJourneys,
        customer_id: &str,
        event: &CatalogEvent,
        now: i64,
    ) -> Vec<Decision> {
        let mut run = Run { engine: self, customer_id, now, decisions: Vec::new() };
        let Some(viewed_at) = state
            .interests
            .iter()
            .find(|interest| interest.product_id == event.product_id)
            .map(|i| i.viewed_at)
        else {
            return run.decisions;
        };
        for journey in definitions.latest() {
            let Trigger::Catalog { change, within } = &journey.entry.trigger else { continue };
            let fits = match change {
                CatalogChange::PriceDrop => event.is_price_drop(),
                CatalogChange::BackInStock => event.kind == CatalogEventType::ProductRestocked,
            };
            // Viewed within the window before the change happened: a view after it (a
            // producer's retry of the change reaching a later viewer) saw the new price.
            // A producer's clock ahead (up to 24 h, SPEC 4) dates it at most when it was read.
            let happened = event.occurred_at.timestamp_millis().min(now);
            if !fits || viewed_at > happened || viewed_at < happened.saturating_sub(millis(*within)) {
                continue;
            }
            if let Some(entry) = admit(state, journey, &event.event_id, Some(event.product_id.clone()), now) {
                run.enter(state, journey, entry);
            }
        }
        run.decisions
    }

    /// Folds the journeys of `from`, merged into this customer (`handed`, a merge's state
    /// handoff, docs/journeys.md, "Merges"), as of `now`. One person runs a journey (with a `per`
    /// key: a key) once at a time: of two such entries the one entered first goes on, with the
    /// other's messages, and the other ends as merged; an entry on a version no longer published
    /// ends as withdrawn; every other entry moves over where it was (step, wait, messages). What
    /// entries and sends depend on is united: suppression's and affinity's memories by their own
    /// merges, traits by event time, re-entry's memory, the latest ended entries, the sends not
    /// yet seen back and the viewed products. A goal either reached while the other's entry of
    /// that journey ran ends that entry (as `Goal`, with the goal's event). Decides nothing:
    /// the moved entries go on at their
    /// timers and at the customer's next events. Which entries go on does not depend on which
    /// customer won. Returns how each entry it ended ended.
    pub fn merge(
        &self,
        definitions: &Definitions,
        state: &mut CustomerJourneys,
        customer_id: &str,
        from: &str,
        mut handed: CustomerJourneys,
        now: i64,
    ) -> Vec<EndReason> {
        // A goal one of them reached ends the other's entries of that journey that were running
        // then: one person, and the goal was met (journeys keeps no event history to look in).
        let mut ended = Vec::new();
        let (ours, theirs) = (std::mem::take(&mut state.entries), std::mem::take(&mut handed.entries));
        let (ours, theirs) = (
            end_reached(definitions, state, ours, &handed.goals, &mut ended),
            end_reached(definitions, state, theirs, &state.goals.clone(), &mut ended),
        );
        state.entries = ours;
        handed.entries = theirs;
        for reached in std::mem::take(&mut handed.goals) {
            let kept = state
                .goals
                .iter_mut()
                .find(|kept| kept.journey == reached.journey && kept.version == reached.version);
            match kept {
                Some(kept) if kept.at < reached.at => *kept = reached,
                Some(_) => {}
                None => state.goals.push(reached),
            }
        }
        omnistream_suppression::absorb(&mut state.suppression, handed.suppression);
        let at = now.max(state.suppression.evaluated_at);
        omnistream_suppression::evaluate(&mut state.suppression, &self.suppression, customer_id, at);
        omnistream_channel_affinity::absorb(&mut state.affinity, &self.affinity, handed.affinity);
        for (name, history) in handed.traits {
            let room = state.traits.len() < TRAITS_KEPT;
            match state.traits.get_mut(&name) {
                Some(kept) => kept.absorb(&history),
                None if room => {
                    state.traits.insert(name, history);
                }
                None => {}
            }
        }
        for (journey, theirs) in handed.entered {
            let ours = state.entered.get_or_default(&journey);
            ours.last_end = ours.last_end.max(theirs.last_end);
            for key in theirs.keys {
                if !ours.keys.contains(&key) {
                    keep_latest(&mut ours.keys, key, KEYS_KEPT);
                }
            }
            for trigger in theirs.triggers {
                if !ours.triggers.contains(&trigger) {
                    keep_latest(&mut ours.triggers, trigger, TRIGGERS_KEPT);
                }
            }
        }
        state.ended.extend(handed.ended);
        state.ended.sort_by_key(|ended| ended.at);
        let dropped = state.ended.len().saturating_sub(ENDED_KEPT);
        state.ended.drain(..dropped);
        for pending in handed.pending {
            if !state.pending.contains(&pending) {
                keep_latest(&mut state.pending, pending, PENDING_KEPT);
            }
        }
        for theirs in handed.interests {
            match state.interests.iter_mut().find(|ours| ours.product_id == theirs.product_id) {
                // A change either side has seen is seen: it entered (or not) that side already.
                Some(ours) => {
                    ours.viewed_at = ours.viewed_at.max(theirs.viewed_at);
                    ours.seen_through = ours.seen_through.max(theirs.seen_through);
                }
                None => state.interests.push(theirs),
            }
        }
        state.interests.sort_by_key(|interest| std::cmp::Reverse(interest.viewed_at));
        state.interests.truncate(INTERESTS_KEPT);
        // The entries on a version no longer published end as they would at the next event;
        // of the rest, the first entered of each journey (and `per` key) goes on, within the limit.
        let mut entries = std::mem::take(&mut state.entries);
        entries.extend(handed.entries.into_iter().map(|entry| EntryState {
            origin: entry.origin.clone().or_else(|| Some(from.to_owned())),
            ..entry
        }));
        entries.sort_by(|a, b| precedence(a).cmp(&precedence(b)));
        for entry in entries {
            if definitions.get(&entry.journey, entry.version).is_none() {
                ended.push(EndReason::Withdrawn);
                end(state, entry, now, EndReason::Withdrawn);
                continue;
            }
            let room = state.entries.len() < MAX_ENTRIES;
            let going_on =
                state.entries.iter_mut().find(|kept| kept.journey == entry.journey && kept.key == entry.key);
            let continued_by = match going_on {
                Some(kept) => {
                    // The person may answer either one's messages: both count for the one that
                    // goes on (an open, a click, a `happened` branch).
                    for message in &entry.messages {
                        if !kept.messages.contains(message) {
                            kept.messages.push(message.clone());
                        }
                    }
                    // Branch positions name steps of one version.
                    for position in entry.happened.iter().filter(|_| kept.version == entry.version) {
                        if !kept.happened.contains(position) {
                            kept.happened.push(*position);
                        }
                    }
                    Some(kept.entry_id.clone())
                }
                None if room => {
                    state.entries.push(entry);
                    continue;
                }
                None => None,
            };
            ended.push(EndReason::Merged { continued_by: continued_by.clone() });
            end(state, entry, now, EndReason::Merged { continued_by });
        }
        // `end` marked the journey ended; one of its entries may still run.
        for entry in &state.entries {
            if let Some(entered) = state.entered.get_mut(&entry.journey) {
                entered.last_end = None;
            }
        }
        ended
    }

    /// Forgets, at a timer, the views older than [`INTEREST_KEPT_FOR`], and every view when no
    /// catalog journey is published any more, as an event does: a customer without events is
    /// not watched for good.
    pub fn forget_stale_interests(state: &mut CustomerJourneys, definitions: &Definitions, now: i64) {
        if !definitions.latest().any(|journey| matches!(journey.entry.trigger, Trigger::Catalog { .. })) {
            state.interests.clear();
        }
        forget_old_interests(state, now);
    }

    /// The products whose catalog events the customer has seen through `as_of` (unix millis).
    pub fn seen_catalog(state: &mut CustomerJourneys, as_of: i64) {
        for interest in &mut state.interests {
            interest.seen_through = interest.seen_through.max(as_of);
        }
    }

    /// Moves on every entry whose wait ended by `now`.
    pub fn on_timer(
        &self,
        definitions: &Definitions,
        state: &mut CustomerJourneys,
        customer_id: &str,
        now: i64,
    ) -> Vec<Decision> {
        let mut run = Run { engine: self, customer_id, now, decisions: Vec::new() };
        let entries = std::mem::take(&mut state.entries);
        for entry in entries {
            let Some(journey) = definitions.get(&entry.journey, entry.version) else {
                end(state, entry, now, EndReason::Withdrawn);
                continue;
            };
            if entry.waiting_until.is_none_or(|until| until > now) {
                state.entries.push(entry);
                continue;
            }
            let target = match &journey.steps[entry.step].action {
                Action::Wait { next, .. } => *next,
                Action::WaitForEvent { on_timeout, .. } => *on_timeout,
                // A suppressed send's next try (it skips itself once its wait is over).
                _ => Some(entry.step),
            };
            run.go(state, journey, entry, target);
        }
        run.decisions
    }

    /// When [`Engine::on_timer`] should run next.
    pub fn next_timer(state: &CustomerJourneys) -> Option<i64> {
        state.entries.iter().filter_map(|entry| entry.waiting_until).min()
    }

    /// Feeds the embedded cores and the traits. A `message_sent` of one of this service's own
    /// decisions was counted when decided.
    /// Product views are kept only while a catalog trigger is published (`catalog_triggers`):
    /// each is a key the runtime indexes.
    fn remember(
        &self,
        state: &mut CustomerJourneys,
        event: &TouchpointEvent,
        now: i64,
        catalog_triggers: bool,
    ) {
        let own_send = match &event.payload {
            EventPayload::MessageSent { message_id, .. } => {
                let position = state.pending.iter().position(|pending| pending == message_id);
                position.map(|position| state.pending.remove(position)).is_some()
            }
            _ => false,
        };
        if !own_send {
            omnistream_suppression::remember(&mut state.suppression, event);
            omnistream_channel_affinity::apply_event(&mut state.affinity, &self.affinity, event);
        }
        // As the suppression service does after every event: what can no longer matter is
        // forgotten, so the copy stays within suppression's documented bounds (without building
        // the record suppression publishes: 7 % of a drain).
        let at = now.max(state.suppression.evaluated_at);
        omnistream_suppression::forget_expired(&mut state.suppression, &self.suppression, at);
        if let EventPayload::ProductViewed { product_id } = &event.payload
            && catalog_triggers
        {
            // Changes appended before this view was are seen (the customer saw the new price); a
            // view applied late does not make a change seen before new again, nor (dated
            // earlier) the latest view older: windows go by event time (SPEC 4).
            let before = state
                .interests
                .iter()
                .find(|i| i.product_id == *product_id)
                .map(|i| (i.viewed_at, i.seen_through));
            state.interests.retain(|interest| interest.product_id != *product_id);
            let dated = event.occurred_at.timestamp_millis().min(now);
            let viewed_at = before.map_or(dated, |(viewed, _)| viewed.max(dated));
            let seen_through = before.map_or(now, |(_, seen)| seen.max(now));
            state.interests.push(Interest { product_id: product_id.clone(), viewed_at, seen_through });
        }
        if !catalog_triggers {
            // Its memory too: most customers view products, and this stays empty until a
            // catalog trigger is published.
            state.interests = Vec::new();
        }
        forget_old_interests(state, now);
        if state.interests.len() > INTERESTS_KEPT {
            state.interests.sort_by_key(|interest| std::cmp::Reverse(interest.viewed_at));
            state.interests.truncate(INTERESTS_KEPT);
        }
        if let EventPayload::TraitsUpdated { set, set_once, unset } = &event.payload {
            let at = event.occurred_at.timestamp_millis();
            let room = |traits: &SortedMap<String, TraitHistory>, name: &String| {
                traits.contains_key(name) || traits.len() < TRAITS_KEPT
            };
            for (name, value) in set {
                if room(&state.traits, name) {
                    state.traits.get_or_default(name.as_str()).set(value, at);
                }
            }
            for (name, value) in set_once {
                if room(&state.traits, name) {
                    state.traits.get_or_default(name.as_str()).set_once(value, at);
                }
            }
            for name in unset {
                if let Some(history) = state.traits.get_mut(name) {
                    history.unset(at);
                }
            }
        }
    }

    /// The entry `event` starts in `journey`, if it triggers it and re-entry allows.
    fn enters(
        &self,
        state: &CustomerJourneys,
        journey: &Journey,
        event: &TouchpointEvent,
        now: i64,
    ) -> Option<EntryState> {
        let Trigger::Event(trigger) = &journey.entry.trigger else { return None };
        if !matches(trigger, event, &[], &state.traits) {
            return None;
        }
        let key = match &journey.entry.reentry {
            Reentry::PerKey(property) => Some(property_text(event, property)?),
            _ => None,
        };
        admit(state, journey, &event.event_id, key, now)
    }
}

/// The entry a trigger `entry_id` starts in `journey`, if re-entry allows: `key` is the `per`
/// re-entry key's value (or a catalog trigger's product).
fn admit(
    state: &CustomerJourneys,
    journey: &Journey,
    entry_id: &str,
    key: Option<String>,
    now: i64,
) -> Option<EntryState> {
    let entered = state.entered.get(&journey.id);
    // The same trigger again (a producer's retry) enters nothing.
    if entered.is_some_and(|e| e.triggers.iter().any(|trigger| trigger == entry_id))
        || state.entries.len() >= MAX_ENTRIES
    {
        return None;
    }
    let inside = state.entries.iter().any(|entry| entry.journey == journey.id);
    match &journey.entry.reentry {
        Reentry::Once if entered.is_some() => return None,
        Reentry::Once => {}
        Reentry::After(cool_down) => {
            let cool_down = millis(*cool_down);
            let last_end = entered.and_then(|e| e.last_end);
            if inside || last_end.is_some_and(|at| now < at.saturating_add(cool_down)) {
                return None;
            }
        }
        Reentry::PerKey(_) => {
            if entered.is_some_and(|e| key.as_ref().is_some_and(|key| e.keys.contains(key))) {
                return None;
            }
        }
    }
    Some(EntryState {
        journey: journey.id.clone(),
        version: journey.version,
        entry_id: entry_id.to_owned(),
        key,
        entered_at: now,
        step: 0,
        step_since: now,
        attempt: 0,
        waiting_until: None,
        messages: Vec::new(),
        happened: Vec::new(),
        origin: None,
    })
}

/// Steps run at one instant.
struct Run<'a> {
    engine: &'a Engine,
    customer_id: &'a str,
    now: i64,
    decisions: Vec<Decision>,
}

impl Run<'_> {
    /// Starts `entry` at the journey's first step, remembered for re-entry.
    fn enter(&mut self, state: &mut CustomerJourneys, journey: &Journey, entry: EntryState) {
        let entered = state.entered.get_or_default(&journey.id);
        keep_latest(&mut entered.triggers, entry.entry_id.clone(), TRIGGERS_KEPT);
        if let (Reentry::PerKey(_), Some(key)) = (&journey.entry.reentry, &entry.key) {
            keep_latest(&mut entered.keys, key.clone(), KEYS_KEPT);
        }
        entered.last_end = None;
        self.go(state, journey, entry, Some(0));
    }

    /// Moves `entry` to `target` (`None`: the end) and runs steps until it waits or ends.
    fn go(
        &mut self,
        state: &mut CustomerJourneys,
        journey: &Journey,
        mut entry: EntryState,
        target: Option<usize>,
    ) {
        let mut target = target;
        // `check` refuses loops with no wait, so a run passes each step at most once.
        for _ in 0..=journey.steps.len() {
            let Some(position) = target else {
                end(state, entry, self.now, EndReason::Completed);
                return;
            };
            // A send waiting for suppression, tried again: its wait goes on.
            let retry = position == entry.step && entry.waiting_until.is_some();
            if position != entry.step {
                entry.step = position;
                entry.step_since = self.now;
            }
            entry.waiting_until = None;
            let step = &journey.steps[position];
            target = match &step.action {
                Action::Send { channels, template, when_suppressed, next } => {
                    let choice = Choice {
                        step: &step.id,
                        channels,
                        template,
                        when_suppressed: *when_suppressed,
                        retry,
                    };
                    match self.send(state, journey, &mut entry, &choice) {
                        Sent::Done => *next,
                        Sent::Wait(until) => {
                            entry.waiting_until = Some(until);
                            state.entries.push(entry);
                            return;
                        }
                        Sent::Exit => {
                            end(state, entry, self.now, EndReason::Suppressed);
                            return;
                        }
                    }
                }
                Action::Wait { wait, .. } => {
                    entry.waiting_until = Some(match wait {
                        Wait::For(duration) => self.now.saturating_add(millis(*duration)),
                        Wait::UntilLocalTime { time, days_later } => {
                            let zone = omnistream_suppression::zone(&state.suppression);
                            local_time_after(zone, self.now, *time, *days_later)
                        }
                    });
                    state.entries.push(entry);
                    return;
                }
                Action::WaitForEvent { timeout, .. } => {
                    entry.waiting_until = Some(self.now.saturating_add(millis(*timeout)));
                    state.entries.push(entry);
                    return;
                }
                Action::Branch { condition, then, otherwise } => {
                    let holds = match condition {
                        BranchCondition::Happened(_) => entry.happened.contains(&position),
                        BranchCondition::Trait(condition) => trait_passes(condition, &state.traits),
                        BranchCondition::AffinityFirst(channel) => {
                            ranking(self.engine, state, self.customer_id, self.now).first() == Some(channel)
                        }
                    };
                    if holds { *then } else { *otherwise }
                }
                Action::Exit { reason } => {
                    end(state, entry, self.now, EndReason::ExitStep { reason: reason.clone() });
                    return;
                }
            };
        }
        unreachable!("a checked journey's run passes each step at most once");
    }

    /// Decides a send: the allowed channels of the choice, ranked by affinity.
    fn send(
        &mut self,
        state: &mut CustomerJourneys,
        journey: &Journey,
        entry: &mut EntryState,
        choice: &Choice<'_>,
    ) -> Sent {
        let Choice { step, channels, template, when_suppressed, retry } = *choice;
        let at = self.now.max(state.suppression.evaluated_at);
        let verdict = omnistream_suppression::evaluate(
            &mut state.suppression,
            &self.engine.suppression,
            self.customer_id,
            at,
        );
        let ranking = ranking(self.engine, state, self.customer_id, self.now);
        let candidates: Vec<Channel> = match channels {
            ChannelChoice::Fixed(channel) => vec![*channel],
            ChannelChoice::BestOf(list) | ChannelChoice::EveryAllowed(list) => {
                // By affinity's score; equal scores (no history yet) keep the journey's order. A
                // channel affinity leaves out of its ranking (no marketing consent) comes last.
                let scores = omnistream_channel_affinity::affinity(
                    &state.affinity,
                    &self.engine.affinity,
                    self.customer_id,
                    self.now,
                );
                let score = |channel: &Channel| {
                    let ranked = scores.ranking.contains(channel);
                    // To nine places: scores equal but for rounding are equal.
                    let score = scores
                        .channels
                        .iter()
                        .find(|c| c.channel == *channel)
                        .map_or(0.0, |c| (c.score * 1e9).round());
                    if ranked { score } else { f64::NEG_INFINITY }
                };
                let mut ordered = list.clone();
                ordered.sort_by(|a, b| score(b).total_cmp(&score(a)));
                ordered
            }
        };
        let considered: Vec<Considered> = candidates
            .iter()
            .map(|channel| {
                let status = verdict.marketing.iter().find(|s| s.channel == *channel);
                Considered {
                    channel: *channel,
                    status: status.map_or(SuppressionStatus::Allowed, |s| s.status),
                    reason: status.and_then(|s| s.reasons.first()).map(|r| r.code.to_string()),
                    until: status.and_then(|s| s.until).map(|until| until.timestamp_millis()),
                }
            })
            .collect();
        let allowed: Vec<Channel> =
            considered.iter().filter(|c| c.status == SuppressionStatus::Allowed).map(|c| c.channel).collect();
        let chosen: Vec<Channel> = match channels {
            ChannelChoice::EveryAllowed(_) => allowed,
            ChannelChoice::Fixed(_) | ChannelChoice::BestOf(_) => allowed.into_iter().take(1).collect(),
        };
        let decision = |outcome: Outcome, channel: Option<Channel>| Decision {
            decision_id: decision_id(
                &journey.id,
                journey.version,
                self.customer_id,
                (&entry.entry_id, entry.origin.as_deref()),
                step,
                entry.attempt,
                channel,
            ),
            customer_id: self.customer_id.to_owned(),
            journey: journey.id.clone(),
            version: journey.version,
            entry_id: entry.entry_id.clone(),
            entry_key: entry.key.clone(),
            step: step.to_owned(),
            attempt: entry.attempt,
            decided_at: self.now,
            template: template.to_owned(),
            outcome,
            considered: considered.clone(),
            ranking: ranking.clone(),
        };
        if !chosen.is_empty() {
            for channel in chosen {
                let sent = decision(Outcome::Send(channel), Some(channel));
                // Counted as a send now, so another journey's send meets the cap at once.
                state.suppression.sends.push((channel, self.now));
                omnistream_channel_affinity::apply_event(
                    &mut state.affinity,
                    &self.engine.affinity,
                    &own_send_event(self.customer_id, &sent, channel),
                );
                state.pending.push(sent.decision_id.clone());
                if state.pending.len() > PENDING_KEPT {
                    state.pending.remove(0);
                }
                entry.messages.push(sent.decision_id.clone());
                self.decisions.push(sent);
            }
            entry.attempt += 1;
            return Sent::Done;
        }
        let outcome = match when_suppressed {
            WhenSuppressed::Skip => Outcome::Skipped,
            WhenSuppressed::Exit => Outcome::Exited,
            WhenSuppressed::Wait(max) => {
                let give_up = entry.step_since.saturating_add(millis(max));
                // The earliest time a channel's reason lapses, else the end of the wait (a ticket
                // has no time: the next event tries again).
                let lapse = considered.iter().filter_map(|c| c.until).filter(|until| *until > self.now).min();
                let until = lapse.map_or(give_up, |lapse| lapse.min(give_up));
                if self.now >= give_up { Outcome::Skipped } else { Outcome::Waiting { until } }
            }
        };
        // One record when a send starts waiting and one when it ends, not one per try.
        let first_try_or_final = !retry || !matches!(outcome, Outcome::Waiting { .. });
        let result = match outcome {
            Outcome::Waiting { until } => Sent::Wait(until),
            Outcome::Exited => Sent::Exit,
            _ => Sent::Done,
        };
        if first_try_or_final {
            self.decisions.push(decision(outcome, None));
            entry.attempt += 1;
        }
        result
    }
}

/// A send step as [`Run::send`] decides it.
struct Choice<'a> {
    step: &'a str,
    channels: &'a ChannelChoice,
    template: &'a str,
    when_suppressed: WhenSuppressed,
    /// Tried again while waiting for suppression.
    retry: bool,
}

enum Sent {
    Done,
    Wait(i64),
    Exit,
}

/// The `message_sent` a decision stands for, as affinity counts it.
fn own_send_event(customer_id: &str, decision: &Decision, channel: Channel) -> TouchpointEvent {
    TouchpointEvent {
        event_id: decision.decision_id.clone(),
        customer_id: customer_id.to_owned(),
        occurred_at: DateTime::from_timestamp_millis(decision.decided_at).unwrap_or_default(),
        channel,
        source: Some("journeys".into()),
        payload: EventPayload::MessageSent {
            message_id: decision.decision_id.clone(),
            campaign_id: Some(format!("{}/{}", decision.journey, decision.step)),
            purpose: Purpose::Marketing,
        },
        context: Default::default(),
        identifiers: Vec::new(),
    }
}

fn ranking(engine: &Engine, state: &CustomerJourneys, customer_id: &str, now: i64) -> Vec<Channel> {
    omnistream_channel_affinity::affinity(&state.affinity, &engine.affinity, customer_id, now).ranking
}

fn forget_old_interests(state: &mut CustomerJourneys, now: i64) {
    let kept_from = now.saturating_sub(millis(INTEREST_KEPT_FOR));
    state.interests.retain(|interest| interest.viewed_at >= kept_from);
}

fn keep_latest(list: &mut Vec<String>, item: String, kept: usize) {
    list.push(item);
    if list.len() > kept {
        list.remove(0);
    }
}

/// The order in which a merge lets entries go on: the first entered, then by what tells two
/// entries of one catalog change apart (each customer's decision ids), so that which goes on
/// does not depend on which customer won.
#[allow(clippy::type_complexity)]
fn precedence(entry: &EntryState) -> (i64, &str, &[String], usize, i64, u32, Option<i64>, u32) {
    (
        entry.entered_at,
        &entry.entry_id,
        &entry.messages,
        entry.step,
        entry.step_since,
        entry.attempt,
        entry.waiting_until,
        entry.version,
    )
}

fn end(state: &mut CustomerJourneys, entry: EntryState, at: i64, reason: EndReason) {
    let entered = state.entered.get_or_default(&entry.journey);
    entered.last_end = Some(entered.last_end.map_or(at, |last| last.max(at)));
    state.ended.push(Ended {
        journey: entry.journey,
        version: entry.version,
        entry_id: entry.entry_id,
        key: entry.key,
        at,
        reason,
    });
    if state.ended.len() > ENDED_KEPT {
        state.ended.remove(0);
    }
}

/// Of `entries`, ends those whose version's goal `goals` (the other customer's) records as
/// reached while they ran, as of the goal (as the goal would have, applied to them), and returns
/// the others. An entry on a version no longer published is left to end as withdrawn.
fn end_reached(
    definitions: &Definitions,
    state: &mut CustomerJourneys,
    entries: Vec<EntryState>,
    goals: &[GoalReached],
    ended: &mut Vec<EndReason>,
) -> Vec<EntryState> {
    let mut going_on = Vec::with_capacity(entries.len());
    for entry in entries {
        let published = definitions.get(&entry.journey, entry.version).is_some();
        match goals.iter().find(|goal| goal.journey == entry.journey && goal.version == entry.version) {
            Some(reached) if published && reached.at >= entry.entered_at => {
                let reason = EndReason::Goal { event_id: reached.event_id.clone() };
                ended.push(reason.clone());
                let at = reached.at;
                end(state, entry, at, reason);
            }
            _ => going_on.push(entry),
        }
    }
    going_on
}

fn exit_reason(
    journey: &Journey,
    entry: &EntryState,
    event: &TouchpointEvent,
    traits: &SortedMap<String, TraitHistory>,
) -> Option<EndReason> {
    let event_id = || event.event_id.clone();
    if journey.goals.iter().any(|goal| matches(goal, event, &entry.messages, traits)) {
        return Some(EndReason::Goal { event_id: event_id() });
    }
    if journey.exit_when.iter().any(|exit| matches(exit, event, &entry.messages, traits)) {
        return Some(EndReason::Exited { event_id: event_id() });
    }
    None
}

/// Whether `event` passes `filter`: its type, channels, property conditions (on the event) and
/// trait conditions (on the customer's traits); `messages` are the entry's own message ids
/// (`of_this_journey`).
pub fn matches(
    filter: &EventFilter,
    event: &TouchpointEvent,
    messages: &[String],
    traits: &SortedMap<String, TraitHistory>,
) -> bool {
    if event.event_type() != filter.event
        || !(filter.channels.is_empty() || filter.channels.contains(&event.channel))
    {
        return false;
    }
    if filter.of_this_journey && !message_id(event).is_some_and(|id| messages.iter().any(|m| m == id)) {
        return false;
    }
    let properties = || event_to_json(event)["properties"].clone();
    filter.conditions.iter().all(|condition| match &condition.field {
        Field::Property(name) => passes(&condition.test, properties().get(name)),
        Field::Trait(_) => trait_passes(condition, traits),
    })
}

fn trait_passes(condition: &Condition, traits: &SortedMap<String, TraitHistory>) -> bool {
    let Field::Trait(name) = &condition.field else { return false };
    let value = traits.get(name).and_then(TraitHistory::value).map(|value| match value {
        TraitValue::Null => serde_json::Value::Null,
        TraitValue::Bool(b) => serde_json::Value::from(*b),
        TraitValue::Long(n) => serde_json::Value::from(*n),
        TraitValue::Double(x) => serde_json::Value::from(*x),
        TraitValue::String(s) => serde_json::Value::from(s.as_str()),
    });
    passes(&condition.test, value.as_ref())
}

fn passes(test: &Test, value: Option<&serde_json::Value>) -> bool {
    let value = value.filter(|value| !value.is_null());
    let equal = |scalar: &Scalar, value: &serde_json::Value| match scalar {
        Scalar::Bool(b) => value.as_bool() == Some(*b),
        Scalar::Integer(n) => value.as_f64() == Some(*n as f64),
        Scalar::Float(x) => value.as_f64() == Some(*x),
        Scalar::Text(text) => value.as_str() == Some(text.as_str()),
    };
    match test {
        Test::Exists(expected) => value.is_some() == *expected,
        Test::Equals(scalar) => value.is_some_and(|value| equal(scalar, value)),
        Test::OneOf(scalars) => value.is_some_and(|value| scalars.iter().any(|scalar| equal(scalar, value))),
        Test::AtLeast(bound) => value.and_then(serde_json::Value::as_f64).is_some_and(|x| x >= *bound),
        Test::AtMost(bound) => value.and_then(serde_json::Value::as_f64).is_some_and(|x| x <= *bound),
        Test::StartsWith(prefix) => {
            value.and_then(serde_json::Value::as_str).is_some_and(|s| s.starts_with(prefix.as_str()))
        }
    }
}

fn property_text(event: &TouchpointEvent, name: &str) -> Option<String> {
    match event_to_json(event)["properties"].get(name)? {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn message_id(event: &TouchpointEvent) -> Option<&str> {
    match &event.payload {
        EventPayload::MessageDelivered { message_id }
        | EventPayload::MessageOpened { message_id }
        | EventPayload::MessageClicked { message_id, .. }
        | EventPayload::MessageBounced { message_id, .. }
        | EventPayload::SpamReported { message_id } => Some(message_id),
        _ => None,
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A decision's id: a hash of what names it, so a replay decides the same id. The entry is named
/// by its id and, if a merge moved it, the customer it entered as.
pub fn decision_id(
    journey: &str,
    version: u32,
    customer_id: &str,
    (entry_id, origin): (&str, Option<&str>),
    step: &str,
    attempt: u32,
    channel: Option<Channel>,
) -> String {
    let channel = channel.map_or("", Channel::as_str);
    let mut text = format!(
        "{journey}\u{0}{version}\u{0}{customer_id}\u{0}{entry_id}\u{0}{step}\u{0}{attempt}\u{0}{channel}"
    );
    if let Some(origin) = origin {
        text.push('\u{0}');
        text.push_str(origin);
    }
    // 128 bits of SHA-256: an idempotency key at a provider must not collide, even for ids a
    // producer chose to make it (a 64-bit hash would, after some billions of decisions).
    // The precision caps the digits: the first 16 bytes as 32 lower-case hex digits.
    format!("jd-{:.32x}", Sha256::digest(text.as_bytes()))
}

/// The instant of local `time` in `zone`, `days_later` days after the local date of `now`
/// (0: the next such time, today if still ahead, also the second time of a time that happens
/// twice). A local time that does not exist (clocks
/// jump forward over it) is taken later by the length of the gap, as java.time does (02:30 on
/// the night 02:00 becomes 03:00 is 03:30); one that happens twice (clocks go back) is the first.
pub fn local_time_after(zone: Tz, now: i64, time: chrono::NaiveTime, days_later: u32) -> i64 {
    let now_utc = DateTime::from_timestamp_millis(now).unwrap_or_default();
    let today = now_utc.with_timezone(&zone).date_naive();
    let at = |days: u32| {
        let date = today.checked_add_days(Days::new(u64::from(days))).unwrap_or(today);
        resolve(zone, date.and_time(time))
    };
    let candidate = at(days_later);
    if days_later > 0 || candidate > now {
        return candidate;
    }
    // Past the first of a time that happens twice today (clocks go back): the second may be ahead.
    if let LocalResult::Ambiguous(_, second) = zone.from_local_datetime(&today.and_time(time))
        && second.timestamp_millis() > now
    {
        return second.timestamp_millis();
    }
    at(1)
}

fn resolve(zone: Tz, local: NaiveDateTime) -> i64 {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.timestamp_millis(),
        LocalResult::None => {
            // In a gap: the offset in force before it, applied to the local time.
            let before = local - chrono::Duration::hours(3);
            let offset = match zone.from_local_datetime(&before) {
                LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
                    at.offset().fix().local_minus_utc()
                }
                LocalResult::None => 0,
            };
            (local - chrono::Duration::seconds(i64::from(offset))).and_utc().timestamp_millis()
        }
    }
}
