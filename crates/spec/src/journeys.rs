//! SPEC 4.6 and docs/journeys.md, journeys, as a walk over a customer's whole history: the send
//! decisions one journey makes for one customer, recomputed from scratch.
//!
//! The service folds each event into per-entry state and sets timers. This model keeps nothing
//! between queries: it finds the entry in the history, then walks the steps forward in time,
//! asking the history at each point (the first matching event in a window, the first exit event
//! before a time) and asking this crate's own suppression and affinity models (SPEC 4.2, 4.3),
//! given the history plus the journey's own earlier sends, whether and where a send may go.
//!
//! Scope: the journeys the differential test generates (crates/spec/tests/journeys.rs): an event
//! trigger by type or a price drop of a product the customer viewed (docs/journeys.md, "Catalog
//! triggers"), re-entry once, goals and exits by type (optionally on this journey's
//! messages), steps: sends (one channel, or the best of several), waits for a duration, waits for
//! a local time in the customer's zone (DST gaps and overlaps as docs/journeys.md says), waits for
//! an event with a timeout that may jump forward, branches (an event happened since the entry, a
//! trait's value, affinity's first channel) that jump forward, an exit. No entry conditions.
//!
//! Decisions where the docs are silent, as the service makes them: a timer and a record never
//! fall on the same millisecond here (the generator makes sure), so their order is not modelled.
//! Records of one producer batch share an append time: at the entry's own instant only the
//! records up to the entry are applied (the service decides while it processes the entry).

use chrono::{DateTime, Days, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use omnistream_model::records::SuppressionStatus;
use omnistream_model::{Channel, EventPayload, EventType, Purpose, TouchpointEvent, TraitValue};
use sha2::{Digest, Sha256};

use crate::Record;
use crate::affinity::{AffinitySettings, affinity};
use crate::suppression::{Rules, suppression};

/// Which events match: a type, and for engagement only with this journey's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub event: EventType,
    pub of_this_journey: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenSuppressed {
    Skip,
    Exit,
    /// Wait at most this many millis.
    Wait(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// One channel, or the best of several by affinity.
    Send {
        id: String,
        channels: Vec<Channel>,
        template: String,
        when_suppressed: WhenSuppressed,
    },
    WaitFor {
        id: String,
        millis: i64,
    },
    /// Waits for an event; at the timeout goes to `on_timeout` (a later step, `None`: the end).
    WaitEvent {
        id: String,
        filter: Filter,
        timeout: i64,
        on_timeout: Option<usize>,
    },
    /// Waits until `time` in the customer's zone, `days_later` local days after the wait
    /// starts (0: the next such time, today if still ahead).
    WaitLocal {
        id: String,
        time: NaiveTime,
        days_later: u32,
    },
    /// Goes to `then` or `otherwise` (a step, `None`: the end).
    Branch {
        id: String,
        condition: Condition,
        then: Option<usize>,
        otherwise: Option<usize>,
    },
    Exit {
        id: String,
    },
}

/// A branch's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A matching event dated since the entry arrived by the branch.
    Happened(Filter),
    /// The trait's value now is this text.
    TraitIs { name: String, value: String },
    /// Affinity ranks this channel first now.
    AffinityFirst(Channel),
}

impl Step {
    fn id(&self) -> &str {
        match self {
            Step::Send { id, .. }
            | Step::WaitFor { id, .. }
            | Step::WaitEvent { id, .. }
            | Step::WaitLocal { id, .. }
            | Step::Branch { id, .. }
            | Step::Exit { id } => id,
        }
    }
}

/// What enters a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An event of this type.
    Event(EventType),
    /// A price drop of a product viewed within this many millis before the drop happened.
    PriceDrop { within: i64 },
}

/// The catalog changes journeys read, and the lookup grace after which each reaches a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub changes: Vec<CatalogChange>,
    pub grace: i64,
}

/// A catalog change as journeys reads it: appended to the catalog topic at `appended_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogChange {
    pub event_id: String,
    pub product_id: String,
    pub occurred_at: i64,
    pub old_minor: i64,
    pub new_minor: i64,
    pub appended_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub id: String,
    pub version: u32,
    pub trigger: Trigger,
    pub goals: Vec<Filter>,
    pub exits: Vec<Filter>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Send(Channel),
    Skipped,
    Waiting { until: i64 },
    Exited,
}

/// One decision, as `journey.actions.v1` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub decision_id: String,
    /// The entry's key: a catalog trigger's product.
    pub entry_key: Option<String>,
    pub step: String,
    pub template: String,
    pub attempt: u32,
    pub decided_at: i64,
    pub outcome: Outcome,
}

/// docs/journeys.md: "128 bits of SHA-256 of (journey, version, customer, entry, step, the
/// entry's count of decisions so far, channel)", fields joined by NUL, hex, prefixed `jd-`.
pub fn decision_id(
    journey: &str,
    version: u32,
    customer_id: &str,
    entry_id: &str,
    step: &str,
    attempt: u32,
    channel: Option<Channel>,
) -> String {
    let channel = channel.map_or("", Channel::as_str);
    let text = format!(
        "{journey}\u{0}{version}\u{0}{customer_id}\u{0}{entry_id}\u{0}{step}\u{0}{attempt}\u{0}{channel}"
    );
    let digest = Sha256::digest(text.as_bytes());
    format!("jd-{}", digest[..16].iter().map(|byte| format!("{byte:02x}")).collect::<String>())
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

/// The walk's knowledge: the history and the sends decided so far.
struct Walk<'a> {
    customer_id: &'a str,
    journey: &'a Journey,
    history: &'a [Record],
    rules: &'a Rules,
    settings: &'a AffinitySettings,
    entry_id: String,
    entry_key: Option<String>,
    entered_at: i64,
    /// Index of the first record after the entry: what comes after it in the log can move it.
    after_entry: usize,
    decisions: Vec<Decision>,
    /// Own sends, as the `message_sent` records suppression and affinity count.
    sends: Vec<Record>,
}

impl Walk<'_> {
    fn matches(&self, filter: &Filter, record: &Record) -> bool {
        record.event.event_type() == filter.event
            && (!filter.of_this_journey
                || message_id(&record.event).is_some_and(|id| {
                    self.decisions.iter().any(|d| {
                        d.decision_id == id
                            && d.decided_at <= record.appended_at
                            && matches!(d.outcome, Outcome::Send(_))
                    })
                }))
    }

    /// Records after the entry arriving in `(from, to)`.
    fn arrivals(&self, from: i64, to: i64) -> impl Iterator<Item = &Record> + '_ {
        self.history[self.after_entry..].iter().filter(move |r| r.appended_at > from && r.appended_at < to)
    }

    /// The first goal or exit event arriving in `(from, to)`.
    fn exit_between(&self, from: i64, to: i64) -> Option<i64> {
        let filters: Vec<&Filter> = self.journey.goals.iter().chain(&self.journey.exits).collect();
        self.arrivals(from, to).find(|r| filters.iter().any(|f| self.matches(f, r))).map(|r| r.appended_at)
    }

    /// Whether the history's record at `index` is applied when a decision is made at `at`: it
    /// arrived by then, except that at the entry's own instant the records after the entry are
    /// not applied yet (a producer's batch shares one append time; the service decides while it
    /// processes the entry).
    fn applied_by(&self, index: usize, at: i64) -> bool {
        let arrived = self.history[index].appended_at;
        arrived < at || (arrived == at && (at != self.entered_at || index < self.after_entry))
    }

    /// What the models know at `at`: the history applied by then and the sends decided before.
    fn known(&self, at: i64) -> Vec<Record> {
        let mut known: Vec<Record> = (0..self.history.len())
            .filter(|index| self.applied_by(*index, at))
            .map(|index| self.history[index].clone())
            .collect();
        known.extend(self.sends.iter().filter(|s| s.appended_at <= at).cloned());
        known.sort_by_key(|r| r.appended_at);
        known
    }

    /// The latest value (by event time; a tie: the later arrival) a `traits_updated` applied by
    /// `at` set `name` to, unless a later one unset it.
    fn trait_at(&self, name: &str, at: i64) -> Option<&TraitValue> {
        let mut latest: Option<(i64, Option<&TraitValue>)> = None;
        for (_, record) in self.history.iter().enumerate().filter(|(index, _)| self.applied_by(*index, at)) {
            let EventPayload::TraitsUpdated { set, unset, .. } = &record.event.payload else { continue };
            let time = record.event.occurred_at.timestamp_millis();
            let value = match (set.get(name), unset.iter().any(|n| n == name)) {
                (Some(value), _) => Some(value),
                (None, true) => None,
                (None, false) => continue,
            };
            if latest.is_none_or(|(t, _)| time >= t) {
                latest = Some((time, value));
            }
        }
        latest.and_then(|(_, value)| value)
    }

    fn holds(&self, condition: &Condition, at: i64) -> bool {
        match condition {
            Condition::Happened(filter) => (self.after_entry..self.history.len()).any(|index| {
                let r = &self.history[index];
                self.applied_by(index, at)
                    && r.event.occurred_at.timestamp_millis() >= self.entered_at
                    && self.matches(filter, r)
            }),
            Condition::TraitIs { name, value } => {
                matches!(self.trait_at(name, at), Some(TraitValue::String(v)) if v == value)
            }
            Condition::AffinityFirst(channel) => {
                let now = DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
                affinity(self.customer_id, &self.known(at), now, self.settings)
                    .is_some_and(|scores| scores.ranking.first() == Some(channel))
            }
        }
    }

    /// When a wait for `time`, `days_later`, started at `at` ends.
    fn local_due(&self, time: NaiveTime, days_later: u32, at: i64) -> i64 {
        let zone = match self.trait_at("timezone", at) {
            Some(TraitValue::String(name)) => name.parse::<Tz>().unwrap_or(Tz::UTC),
            _ => Tz::UTC,
        };
        let today =
            DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default().with_timezone(&zone).date_naive();
        if days_later > 0 {
            return local_instant(zone, (today + Days::new(u64::from(days_later))).and_time(time));
        }
        // The next instant the zone's clock reads `time` (either of an overlap's two), else
        // tomorrow's.
        let local = today.and_time(time);
        let today_instants = match zone.from_local_datetime(&local) {
            LocalResult::Ambiguous(first, second) => {
                vec![first.timestamp_millis(), second.timestamp_millis()]
            }
            _ => vec![local_instant(zone, local)],
        };
        today_instants
            .into_iter()
            .find(|instant| *instant > at)
            .unwrap_or_else(|| local_instant(zone, (today + Days::new(1)).and_time(time)))
    }

    fn decide(&mut self, step: &str, template: &str, at: i64, outcome: Outcome) {
        let attempt = u32::try_from(self.decisions.len()).unwrap_or(u32::MAX);
        let channel = match outcome {
            Outcome::Send(channel) => Some(channel),
            _ => None,
        };
        let id = decision_id(
            &self.journey.id,
            self.journey.version,
            self.customer_id,
            &self.entry_id,
            step,
            attempt,
            channel,
        );
        if let Some(channel) = channel {
            self.sends.push(Record { event: own_send(self.customer_id, &id, channel, at), appended_at: at });
        }
        self.decisions.push(Decision {
            decision_id: id,
            entry_key: self.entry_key.clone(),
            template: template.to_owned(),
            step: step.to_owned(),
            attempt,
            decided_at: at,
            outcome,
        });
    }

    /// One try of a send at `at`: the channel to send on, else the earliest time a considered
    /// channel's reason lapses after `at`.
    fn try_send(&self, channels: &[Channel], at: i64) -> Result<Channel, Option<i64>> {
        let known = self.known(at);
        let now = DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
        let verdict = suppression(self.customer_id, &known, now, self.rules);
        let mut ordered = channels.to_vec();
        if channels.len() > 1 {
            // docs: the best score first; equal scores keep the journey's order; a channel
            // affinity does not rank (no marketing consent) last.
            let scores = affinity(self.customer_id, &known, now, self.settings);
            let score = |channel: &Channel| -> f64 {
                let Some(scores) = &scores else { return 0.0 };
                if !scores.ranking.contains(channel) {
                    return f64::NEG_INFINITY;
                }
                scores
                    .channels
                    .iter()
                    .find(|c| c.channel == *channel)
                    .map_or(0.0, |c| (c.score * 1e9).round())
            };
            ordered.sort_by(|a, b| score(b).total_cmp(&score(a)));
        }
        let mut lapse: Option<i64> = None;
        for channel in ordered {
            let status = verdict.as_ref().and_then(|v| v.marketing.iter().find(|s| s.channel == channel));
            match status {
                None => return Ok(channel),
                Some(s) if s.status == SuppressionStatus::Allowed => return Ok(channel),
                Some(s) => {
                    if let Some(until) = s.until.map(|u| u.timestamp_millis()).filter(|u| *u > at) {
                        lapse = Some(lapse.map_or(until, |l: i64| l.min(until)));
                    }
                }
            }
        }
        Err(lapse)
    }
}

/// The instant a local time names: the first of an overlap's two; in a gap (the clocks jump
/// past it) as many minutes after the gap as it falls into it, i.e. read with the offset before.
fn local_instant(zone: Tz, local: NaiveDateTime) -> i64 {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(instant) | LocalResult::Ambiguous(instant, _) => instant.timestamp_millis(),
        LocalResult::None => {
            // No zone moves twice within a day: three hours earlier is before the gap.
            let before = zone.from_local_datetime(&(local - Duration::hours(3))).earliest();
            let offset = before.map_or(0, |b| i64::from(chrono::Offset::fix(b.offset()).local_minus_utc()));
            (local.and_utc().timestamp() - offset) * 1000
        }
    }
}

fn own_send(customer_id: &str, decision_id: &str, channel: Channel, at: i64) -> TouchpointEvent {
    TouchpointEvent {
        event_id: decision_id.to_owned(),
        customer_id: customer_id.to_owned(),
        occurred_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
        channel,
        source: None,
        payload: EventPayload::MessageSent {
            message_id: decision_id.to_owned(),
            campaign_id: None,
            purpose: Purpose::Marketing,
        },
        context: Default::default(),
        identifiers: Vec::new(),
    }
}

/// The entry: its id, its key, its time, and the index of the first record after it.
fn entry(
    journey: &Journey,
    history: &[Record],
    catalog: &Catalog,
) -> Option<(String, Option<String>, i64, usize)> {
    match journey.trigger {
        Trigger::Event(trigger) => {
            let index = history.iter().position(|r| r.event.event_type() == trigger)?;
            Some((history[index].event.event_id.clone(), None, history[index].appended_at, index + 1))
        }
        Trigger::PriceDrop { within } => {
            // A change reaches the customer the grace after it was appended; of the drops, in that
            // order, the first for which the customer's latest view of the product by then was
            // appended before the change (else it saw the new price) and happened within the
            // window before the change (its time, at most when it was read).
            let mut drops: Vec<&CatalogChange> =
                catalog.changes.iter().filter(|c| c.new_minor < c.old_minor).collect();
            drops.sort_by_key(|c| c.appended_at);
            drops.into_iter().find_map(|change| {
                let arrives = change.appended_at + catalog.grace;
                let views: Vec<&Record> = history
                    .iter()
                    .filter(|r| {
                        r.appended_at < arrives
                            && matches!(&r.event.payload, EventPayload::ProductViewed { product_id } if *product_id == change.product_id)
                    })
                    .collect();
                // Seen if any view arrived after the change; the window by the latest date (a
                // view's date, at most when it arrived).
                let last_arrived = views.last()?;
                let viewed = views.iter().map(|r| r.event.occurred_at.timestamp_millis().min(r.appended_at)).max()?;
                let happened = change.occurred_at.min(arrives);
                let entered = last_arrived.appended_at < change.appended_at && viewed <= happened && viewed >= happened - within;
                let after = history.iter().position(|r| r.appended_at >= arrives).unwrap_or(history.len());
                entered.then(|| (change.event_id.clone(), Some(change.product_id.clone()), arrives, after))
            })
        }
    }
}

/// The decisions `journey` makes for the customer of `history` (offset order, `appended_at` the
/// partition clock) up to `until`, with the product changes of `catalog`.
pub fn decisions(
    customer_id: &str,
    journey: &Journey,
    history: &[Record],
    catalog: &Catalog,
    rules: &Rules,
    settings: &AffinitySettings,
    until: i64,
) -> Vec<Decision> {
    let Some((entry_id, entry_key, entered_at, after_entry)) = entry(journey, history, catalog) else {
        return Vec::new();
    };
    let mut walk = Walk {
        customer_id,
        journey,
        history,
        rules,
        settings,
        entry_id,
        entry_key,
        entered_at,
        after_entry,
        decisions: Vec::new(),
        sends: Vec::new(),
    };
    let mut at = entered_at;
    let mut position = Some(0);
    while let Some(index) = position {
        let step = &journey.steps[index];
        let id = step.id().to_owned();
        match step {
            Step::Send { channels, when_suppressed, template, .. } => {
                let started = at;
                let mut waiting = false;
                let mut time = at;
                let sent = loop {
                    match walk.try_send(channels, time) {
                        Ok(channel) => break Some((channel, time)),
                        Err(lapse) => match when_suppressed {
                            WhenSuppressed::Skip => {
                                walk.decide(&id, template, time, Outcome::Skipped);
                                break None;
                            }
                            WhenSuppressed::Exit => {
                                walk.decide(&id, template, time, Outcome::Exited);
                                return walk.decisions;
                            }
                            WhenSuppressed::Wait(max) => {
                                let give_up = started + max;
                                if time >= give_up {
                                    walk.decide(&id, template, time, Outcome::Skipped);
                                    break None;
                                }
                                let until_try = lapse.map_or(give_up, |l| l.min(give_up));
                                if !waiting {
                                    walk.decide(&id, template, time, Outcome::Waiting { until: until_try });
                                    waiting = true;
                                }
                                // The next try: the customer's next event, else the time set.
                                let next_event = walk.arrivals(time, until_try).next().map(|r| r.appended_at);
                                let next = next_event.unwrap_or(until_try);
                                if next > until || walk.exit_between(time, next + 1).is_some() {
                                    return walk.decisions;
                                }
                                time = next;
                            }
                        },
                    }
                };
                if let Some((channel, time)) = sent {
                    walk.decide(&id, template, time, Outcome::Send(channel));
                }
                at = time;
                position = (index + 1 < journey.steps.len()).then_some(index + 1);
            }
            Step::WaitFor { .. } | Step::WaitLocal { .. } => {
                let due = match *step {
                    Step::WaitLocal { time, days_later, .. } => walk.local_due(time, days_later, at),
                    Step::WaitFor { millis, .. } => at + millis,
                    Step::Send { .. } | Step::WaitEvent { .. } | Step::Branch { .. } | Step::Exit { .. } => {
                        at
                    }
                };
                if due > until || walk.exit_between(at, due).is_some() {
                    return walk.decisions;
                }
                at = due;
                position = (index + 1 < journey.steps.len()).then_some(index + 1);
            }
            Step::WaitEvent { filter, timeout, on_timeout, .. } => {
                let due = at + timeout;
                let exit = walk.exit_between(at, due);
                let matched = walk.arrivals(at, due).find(|r| walk.matches(filter, r)).map(|r| r.appended_at);
                match (matched, exit) {
                    // An event that is both an exit and the awaited one ends the entry first.
                    (_, Some(exit)) if matched.is_none_or(|m| exit <= m) => return walk.decisions,
                    (Some(matched), _) => {
                        at = matched;
                        position = (index + 1 < journey.steps.len()).then_some(index + 1);
                    }
                    _ => {
                        if due > until {
                            return walk.decisions;
                        }
                        at = due;
                        position = *on_timeout;
                    }
                }
            }
            Step::Branch { condition, then, otherwise, .. } => {
                position = if walk.holds(condition, at) { *then } else { *otherwise };
            }
            Step::Exit { .. } => return walk.decisions,
        }
    }
    walk.decisions
}
