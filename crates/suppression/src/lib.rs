//! suppression's pure core (SPEC 4.2): from a customer's events, may we message them, on which
//! channel, and if not, why and until when.
//!
//! The service remembers only what the rules need (open tickets, consent, hard bounces and spam
//! reports, recent marketing sends, the last order, the `timezone` trait) and evaluates the rules
//! into a `SuppressionState` record after every event it reads (and a customer's first), and again
//! by timer when a reason lapses or quiet hours begin.
//!
//! Evaluation time (SPEC 4, two clocks): every record is evaluated at the partition clock (the
//! broker's append time of the event's record; for a timer, its due time), never before the
//! previous evaluation, so the records an input produces do not depend on when it is processed.
//! Event time orders the facts: a marketing send dated 20 h ahead (clock skew) counts in its cap
//! window from its own time, and `next_change_at` names that time.

mod quiet_hours;
pub mod rules;

use quiet_hours::{offset_change, quiet_hours, quiet_hours_at_offset, steady_offset};

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use omnistream_model::records::{ChannelSuppression, SuppressionReason, SuppressionState};
use omnistream_model::tickets::{TicketFact, TicketLog, keep_latest};
use omnistream_model::traits::TraitHistory;
use omnistream_model::{Channel, EventPayload, Purpose, TouchpointEvent, TraitValue};
use omnistream_runtime::{Output, Processor};
use serde::{Deserialize, Serialize};

pub use omnistream_runtime::RulesError;
pub use rules::{FrequencyCap, PreparedRules, QuietHours, Rules};

/// Tickets no longer blocking (resolved, or open past the safety maximum) remembered, the latest
/// first, so that a late opening or resolution of one means what it would in event-time order.
const CLOSED_TICKETS_KEPT: usize = 16;
/// Open tickets a customer may have (SPEC 4, Limits; as in the profile).
pub const MAX_OPEN_TICKETS: usize = 64;

pub use omnistream_model::records::reason_code as code;

/// The latest consent of a channel and purpose, by event time (unix millis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentMark {
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    pub at: i64,
}

/// A hard bounce or spam report on a channel: it blocks every purpose there until consent is
/// granted again after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardBlock {
    pub channel: Channel,
    pub spam: bool,
    pub at: i64,
}

/// What suppression remembers of one customer. Times are unix millis.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SuppressionMemory {
    /// Open tickets (id, opened at) as state version 1 held them; moved into `tickets` when such
    /// a state is restored, always empty since.
    pub open_tickets: Vec<(String, i64)>,
    /// Resolved tickets (id, resolved at) of state version 1; moved into `tickets` likewise.
    pub resolved_tickets: VecDeque<(String, i64)>,
    pub consents: Vec<ConsentMark>,
    pub hard_blocks: Vec<HardBlock>,
    /// Marketing sends still inside a frequency-cap window.
    pub sends: Vec<(Channel, i64)>,
    /// The latest order as state version 1 held it; moved into `orders` when such a state is
    /// restored, always `None` since.
    pub last_order_at: Option<i64>,
    /// The `timezone` trait as state version 1 held it; moved into `timezone_history` when
    /// such a state is restored (`upgrade_state`), always `None` since.
    pub timezone: Option<(Option<String>, i64)>,
    /// When the last event was evaluated: evaluation never goes back in time.
    pub evaluated_at: i64,
    /// When the record changes next without a new event (a reason lapses, quiet hours start).
    pub next_change_at: Option<i64>,
    /// Events read and applied (`reads`).
    pub version: i64,
    /// The latest grant of consent (any purpose) per channel: it lifts older hard blocks, and a
    /// block arriving late but older than it stays lifted.
    #[serde(default)]
    pub last_grants: Vec<(Channel, i64)>,
    /// The `timezone` trait, resolved as profile-updater resolves every trait (SPEC 4).
    #[serde(default)]
    pub timezone_history: TraitHistory,
    /// Support tickets, resolved in event-time order (SPEC 4): every one still blocking, and the
    /// latest [`CLOSED_TICKETS_KEPT`] others.
    #[serde(default)]
    pub tickets: Vec<TicketLog>,
    /// Orders whose cool-down has not ended (one dated ahead starts it at its own time), at most
    /// [`ORDERS_KEPT`], the latest.
    #[serde(default)]
    pub orders: Vec<i64>,
}

/// Orders remembered for the cool-down.
const ORDERS_KEPT: usize = 16;

/// The suppression processor.
#[derive(Debug, Clone)]
pub struct Suppression {
    rules: Arc<PreparedRules>,
}

/// Its one output role: the suppression state after each change (`--suppressions-topic`).
pub const SUPPRESSIONS_OUTPUT: &str = "suppressions";

impl Suppression {
    pub fn new(rules: Rules) -> Self {
        Self { rules: Arc::new(rules.prepare()) }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules.rules
    }
}

impl Default for Suppression {
    fn default() -> Self {
        Self::new(Rules::default())
    }
}

impl Processor for Suppression {
    type Input = TouchpointEvent;
    type Record = SuppressionState;
    const OUTPUTS: &'static [&'static str] = &[SUPPRESSIONS_OUTPUT];
    const LATEST_PER_KEY: &'static [&'static str] = &[SUPPRESSIONS_OUTPUT];
    type State = SuppressionMemory;
    /// Version 2 (2026-12) resolves `timezone` by the SPEC's trait rule (`timezone_history`).
    const STATE_VERSION: u8 = 2;

    /// A version 1 state's resolved time zone becomes the history's base value, and its open and
    /// resolved tickets become ticket logs of one fact each.
    fn upgrade_state(&self, memory: &mut SuppressionMemory, _written_with: u8) {
        if let Some((name, at)) = memory.timezone.take() {
            match name {
                Some(name) => memory.timezone_history.set(&TraitValue::String(name), at),
                None => memory.timezone_history.unset(at),
            }
        }
        memory.orders.extend(memory.last_order_at.take());
        let opened = std::mem::take(&mut memory.open_tickets).into_iter().map(|(id, at)| (id, at, false));
        let resolved =
            std::mem::take(&mut memory.resolved_tickets).into_iter().map(|(id, at)| (id, at, true));
        for (seq, (ticket_id, at, resolves)) in (0..).zip(opened.chain(resolved)) {
            // Version 1 kept no channel; suppression reads none.
            let fact = TicketFact { at, resolves, channel: Channel::CallCenter, topic: None, seq };
            ticket(memory, &ticket_id).record(fact);
        }
    }

    /// A customer's first event makes their state (every customer seen has a record: quiet hours
    /// and the holdout apply to them too); after it, only what `remember` keeps, an erasure or a
    /// merge. A page view changes no reachability, so it writes nothing (docs/suppression.md).
    fn reads(&self, event: &TouchpointEvent) -> bool {
        reads(event)
    }

    fn check_limits(
        &self,
        state: Option<&SuppressionMemory>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let (Some(memory), EventPayload::SupportTicketOpened { ticket_id, .. }) = (state, &event.payload)
        else {
            return Ok(());
        };
        // Open as of the time `apply` would evaluate at (not the last event read: the events
        // suppression ignores since then have moved the partition clock).
        let at = memory.evaluated_at.max(now.timestamp_millis());
        let open = memory.tickets.iter().filter(|t| blocking(t, &self.rules, at).is_some()).count();
        let known = memory.tickets.iter().any(|t| &t.ticket_id == ticket_id);
        if open >= MAX_OPEN_TICKETS && !known {
            return Err(format!(
                "the customer would have {} open tickets (limit {MAX_OPEN_TICKETS})",
                open + 1
            ));
        }
        Ok(())
    }

    fn apply(
        &self,
        state: &mut Option<SuppressionMemory>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<SuppressionState>> {
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            return vec![Output::new(SUPPRESSIONS_OUTPUT, event.customer_id.clone(), None)];
        }
        if let EventPayload::CustomersMerged { .. } = event.payload {
            // Merged away: the runtime hands the memory to the winner; the record goes.
            return vec![Output::new(SUPPRESSIONS_OUTPUT, event.customer_id.clone(), None)];
        }
        let memory = state.get_or_insert_with(SuppressionMemory::default);
        remember(memory, event);
        memory.version += i64::from(reads(event));
        memory.evaluated_at = memory.evaluated_at.max(now.timestamp_millis());
        let record = evaluate(memory, &self.rules, &event.customer_id, memory.evaluated_at);
        vec![Output::new(SUPPRESSIONS_OUTPUT, event.customer_id.clone(), Some(record))]
    }

    /// Merges (identity resolution, docs/identity.md): the loser's memory moves to the winner.
    const HANDS_OFF_STATE: bool = true;

    fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
        event.merge_winner().map(str::to_owned)
    }

    /// The winner remembers what the loser did (its tickets, consents, bounces, sends, orders and
    /// time zone), and every rule is evaluated again over both: the most restrictive reasons of
    /// either stand, whichever of the two arrived first.
    fn merge(
        &self,
        state: &mut Option<SuppressionMemory>,
        customer_id: &str,
        _from: &str,
        _cause: &str,
        handed: SuppressionMemory,
        now: DateTime<Utc>,
    ) -> Vec<Output<SuppressionState>> {
        let memory = state.get_or_insert_with(SuppressionMemory::default);
        absorb(memory, handed);
        memory.version += 1;
        memory.evaluated_at = memory.evaluated_at.max(now.timestamp_millis());
        let record = evaluate(memory, &self.rules, customer_id, memory.evaluated_at);
        vec![Output::new(SUPPRESSIONS_OUTPUT, customer_id.to_owned(), Some(record))]
    }

    fn next_timer(&self, state: &SuppressionMemory) -> Option<DateTime<Utc>> {
        state.next_change_at.and_then(DateTime::from_timestamp_millis)
    }

    fn on_timer(
        &self,
        state: &mut Option<SuppressionMemory>,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<Output<SuppressionState>> {
        let Some(memory) = state else { return Vec::new() };
        let at = now.timestamp_millis().max(memory.evaluated_at);
        let record = evaluate(memory, &self.rules, customer_id, at);
        vec![Output::new(SUPPRESSIONS_OUTPUT, customer_id.to_owned(), Some(record))]
    }
}

/// Whether suppression reads `event`: `remember` keeps something of it, or it erases or merges
/// the customer. `version` counts those applied; another event only makes a customer's first record.
pub fn reads(event: &TouchpointEvent) -> bool {
    match &event.payload {
        EventPayload::TraitsUpdated { set, set_once, unset } => {
            set.contains_key(TIMEZONE)
                || set_once.contains_key(TIMEZONE)
                || unset.iter().any(|n| n == TIMEZONE)
        }
        EventPayload::SupportTicketOpened { .. }
        | EventPayload::SupportTicketResolved { .. }
        | EventPayload::ConsentChanged { .. }
        | EventPayload::MessageBounced { hard: true, .. }
        | EventPayload::SpamReported { .. }
        | EventPayload::MessageSent { purpose: Purpose::Marketing, .. }
        | EventPayload::OrderPlaced { .. }
        | EventPayload::ErasureRequested
        | EventPayload::CustomersMerged { .. } => true,
        _ => false,
    }
}

/// Keeps what the rules need from one event (everything but erasure).
pub fn remember(memory: &mut SuppressionMemory, event: &TouchpointEvent) {
    let at = event.occurred_at.timestamp_millis();
    let channel = event.channel;
    match &event.payload {
        EventPayload::SupportTicketOpened { ticket_id, .. }
        | EventPayload::SupportTicketResolved { ticket_id } => {
            let resolves = matches!(event.payload, EventPayload::SupportTicketResolved { .. });
            let fact = TicketFact { at, resolves, channel, topic: None, seq: memory.version };
            ticket(memory, ticket_id).record(fact);
        }
        EventPayload::ConsentChanged { purpose, granted } => {
            let mark = ConsentMark { channel, purpose: *purpose, granted: *granted, at };
            match memory.consents.iter_mut().find(|c| c.channel == channel && c.purpose == *purpose) {
                Some(existing) if at >= existing.at => *existing = mark,
                Some(_) => {}
                None => memory.consents.push(mark),
            }
            if *granted {
                match memory.last_grants.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, last)) => *last = (*last).max(at),
                    None => memory.last_grants.push((channel, at)),
                }
                // Lifted for good: a later revocation is about consent, not about the bounce.
                // A grant at the same instant arriving after the block lifts it (ties: offset order).
                memory.hard_blocks.retain(|block| block.channel != channel || block.at > at);
            }
        }
        EventPayload::MessageBounced { hard: true, .. } => note_hard_block(memory, channel, false, at),
        EventPayload::SpamReported { .. } => note_hard_block(memory, channel, true, at),
        EventPayload::MessageSent { purpose: Purpose::Marketing, .. } => memory.sends.push((channel, at)),
        EventPayload::OrderPlaced { .. } => {
            memory.orders.push(at);
            if memory.orders.len() > ORDERS_KEPT {
                let earliest = memory.orders.iter().enumerate().min_by_key(|(_, t)| **t).map(|(i, _)| i);
                memory.orders.remove(earliest.expect("not empty"));
            }
        }
        EventPayload::TraitsUpdated { set, set_once, unset } => {
            let history = &mut memory.timezone_history;
            if let Some(value) = set.get(TIMEZONE) {
                history.set(value, at);
            }
            if let Some(value) = set_once.get(TIMEZONE) {
                history.set_once(value, at);
            }
            if unset.iter().any(|name| name == TIMEZONE) {
                history.unset(at);
            }
        }
        _ => {}
    }
}

/// Takes in another customer's memory (a merge), fact by fact, with the rules `remember`
/// applies to the events they came from.
pub fn absorb(memory: &mut SuppressionMemory, loser: SuppressionMemory) {
    for log in loser.tickets {
        for fact in log.facts {
            ticket(memory, &log.ticket_id).record(fact);
        }
    }
    for mark in loser.consents {
        match memory.consents.iter_mut().find(|c| c.channel == mark.channel && c.purpose == mark.purpose) {
            Some(existing) if mark.at >= existing.at => *existing = mark,
            Some(_) => {}
            None => memory.consents.push(mark),
        }
    }
    for (channel, granted_at) in loser.last_grants {
        match memory.last_grants.iter_mut().find(|(c, _)| *c == channel) {
            Some((_, last)) => *last = (*last).max(granted_at),
            None => memory.last_grants.push((channel, granted_at)),
        }
        memory.hard_blocks.retain(|block| block.channel != channel || block.at > granted_at);
    }
    for block in loser.hard_blocks {
        note_hard_block(memory, block.channel, block.spam, block.at);
    }
    memory.sends.extend(loser.sends);
    memory.orders.extend(loser.orders);
    memory.orders.sort_unstable();
    let dropped = memory.orders.len().saturating_sub(ORDERS_KEPT);
    memory.orders.drain(..dropped);
    memory.timezone_history.absorb(&loser.timezone_history);
    memory.evaluated_at = memory.evaluated_at.max(loser.evaluated_at);
}

/// The trait that names the customer's IANA time zone.
const TIMEZONE: &str = "timezone";

/// The log of `ticket_id`, created empty when new.
fn ticket<'a>(memory: &'a mut SuppressionMemory, ticket_id: &str) -> &'a mut TicketLog {
    match memory.tickets.iter().position(|t| t.ticket_id == ticket_id) {
        Some(index) => &mut memory.tickets[index],
        None => {
            memory.tickets.push(TicketLog::new(ticket_id));
            memory.tickets.last_mut().expect("pushed")
        }
    }
}

/// When an open ticket stops blocking marketing (its safety maximum), if it blocks at `at`.
fn blocking(ticket: &TicketLog, rules: &PreparedRules, at: i64) -> Option<i64> {
    let opened = ticket.open()?;
    Some(opened.at.saturating_add(rules.ticket_max_ms)).filter(|until| *until > at)
}

fn note_hard_block(memory: &mut SuppressionMemory, channel: Channel, spam: bool, at: i64) {
    if memory.last_grants.iter().any(|(c, granted_at)| *c == channel && *granted_at > at) {
        // Consent was granted again after it: already lifted.
        return;
    }
    match memory.hard_blocks.iter_mut().find(|b| b.channel == channel && b.spam == spam) {
        Some(existing) => existing.at = existing.at.max(at),
        None => memory.hard_blocks.push(HardBlock { channel, spam, at }),
    }
}

/// Whether a customer is in the global control group: a stable hash of the id (FNV-1a), so every
/// instance and every release puts the same customers there.
pub fn in_holdout(customer_id: &str, percent: f64) -> bool {
    let hash = customer_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    ((hash % 10_000) as f64) < percent * 100.0
}

/// The customer's time zone: the `timezone` trait if it names an IANA zone, else UTC.
pub fn zone(memory: &SuppressionMemory) -> Tz {
    match memory.timezone_history.value() {
        Some(TraitValue::String(name)) => name.parse::<Tz>().unwrap_or(Tz::UTC),
        _ => Tz::UTC,
    }
}

fn reason(code: &'static str, detail: Option<String>, until: Option<i64>) -> SuppressionReason {
    SuppressionReason {
        code: Cow::Borrowed(code),
        detail,
        until: until.and_then(DateTime::from_timestamp_millis),
    }
}

/// Evaluates every rule at `at` (unix millis) into the record to publish; forgets what can no
/// longer matter and sets `next_change_at`.
pub fn evaluate(
    memory: &mut SuppressionMemory,
    rules: &PreparedRules,
    customer_id: &str,
    at: i64,
) -> SuppressionState {
    forget_expired(memory, rules, at);
    let holdout = in_holdout(customer_id, rules.rules.holdout_percent);
    let zone = zone(memory);
    let steady = steady_offset(zone, at);
    // Reason changes ahead: every lapsing reason, and the next start of quiet hours.
    let mut changes: Vec<i64> = Vec::new();
    // Each quiet-hours rule once (it covers several channels): inside until when, next start.
    let quiet: Vec<(&QuietHours, Option<SuppressionReason>)> = rules
        .quiet
        .iter()
        .map(|(quiet, label)| {
            let until = match steady {
                Some(offset) => {
                    let (until, next_start) = quiet_hours_at_offset(quiet, offset, at);
                    changes.push(next_start);
                    until
                }
                None => {
                    let (until, next_start) = quiet_hours(quiet, zone, at);
                    changes.push(next_start);
                    // Clocks set back can carry local time into the window again before its
                    // next start (a window ending at 02:30 on the night 03:00 becomes 02:00):
                    // re-evaluate then.
                    let outside_until = until.unwrap_or(at);
                    changes.extend(offset_change(zone, at, next_start).filter(|change| {
                        *change >= outside_until && quiet_hours(quiet, zone, *change).0.is_some()
                    }));
                    until
                }
            };
            let reason = until.map(|until| {
                let detail = format!("{label} {}", zone.name());
                reason(code::QUIET_HOURS, Some(detail), Some(until))
            });
            (quiet, reason)
        })
        .collect();
    let open_tickets: Vec<(&TicketLog, i64)> =
        memory.tickets.iter().filter_map(|t| blocking(t, rules, at).map(|until| (t, until))).collect();
    let mut marketing = Vec::with_capacity(Channel::MESSAGING.len());
    let mut transactional = Vec::with_capacity(Channel::MESSAGING.len());
    for &channel in Channel::MESSAGING {
        let hard = hard_block_reasons(memory, channel);
        let mut reasons = Vec::new();
        if holdout {
            reasons.push(reason(code::HOLDOUT, None, None));
        }
        for (ticket, until) in &open_tickets {
            reasons.push(reason(code::SUPPORT_TICKET_OPEN, Some(ticket.ticket_id.clone()), Some(*until)));
        }
        match memory.consents.iter().find(|c| c.channel == channel && c.purpose == Purpose::Marketing) {
            Some(mark) if !mark.granted => reasons.push(reason(code::CONSENT_REVOKED, None, None)),
            None if rules.rules.consent_required.contains(&channel) => {
                reasons.push(reason(code::NO_CONSENT, None, None))
            }
            _ => {}
        }
        reasons.extend(hard.iter().cloned());
        for (cap, window, detail) in rules.caps.iter().filter(|(cap, _, _)| cap.channel == channel) {
            if let Some(until) = cap_until(memory, cap, *window, at) {
                reasons.push(reason(code::FREQUENCY_CAP, Some(detail.clone()), Some(until)));
            }
        }
        // A send dated ahead enters its cap windows (if the channel has any) at its own time.
        if rules.caps.iter().any(|(cap, _, _)| cap.channel == channel) {
            changes.extend(
                memory.sends.iter().filter(|(c, sent_at)| *c == channel && *sent_at > at).map(|(_, t)| *t),
            );
        }
        for (_, inside) in quiet.iter().filter(|(quiet, _)| quiet.channels.contains(&channel)) {
            reasons.extend(inside.iter().cloned());
        }
        // The cool-down (when on) runs from the order's own time: one dated ahead starts it then.
        if rules.order_cooldown_ms > 0 {
            changes.extend(memory.orders.iter().filter(|t| **t > at));
            let latest = memory.orders.iter().filter(|t| **t <= at).max();
            if let Some(until) =
                latest.map(|t| t.saturating_add(rules.order_cooldown_ms)).filter(|until| *until > at)
            {
                let detail = rules.order_cooldown_detail.clone();
                reasons.push(reason(code::RECENT_ORDER, Some(detail), Some(until)));
            }
        }
        changes.extend(reasons.iter().filter_map(|r| r.until.map(|t| t.timestamp_millis())));
        marketing.push(ChannelSuppression::from_reasons(channel, reasons));
        transactional.push(ChannelSuppression::from_reasons(channel, hard));
    }
    let next_change_at = changes.into_iter().filter(|t| *t > at).min();
    memory.next_change_at = next_change_at;
    SuppressionState {
        customer_id: customer_id.to_owned(),
        marketing,
        transactional,
        holdout,
        evaluated_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
        next_change_at: next_change_at.and_then(DateTime::from_timestamp_millis),
        version: memory.version,
    }
}

/// Drops what no longer changes any answer from `at` on (evaluation times only grow): what
/// [`evaluate`] does first, for a caller that keeps the memory without publishing its record.
pub fn forget_expired(memory: &mut SuppressionMemory, rules: &PreparedRules, at: i64) {
    // Every blocking ticket stays; of the others, the latest by event time.
    keep_latest(&mut memory.tickets, CLOSED_TICKETS_KEPT, |ticket| blocking(ticket, rules, at).is_some());
    memory.sends.retain(|(channel, sent_at)| sent_at.saturating_add(rules.longest_window_ms(*channel)) > at);
    memory.orders.retain(|t| t.saturating_add(rules.order_cooldown_ms) > at);
}

/// Hard bounces and spam reports on `channel` (a later grant of consent removed lifted ones).
fn hard_block_reasons(memory: &SuppressionMemory, channel: Channel) -> Vec<SuppressionReason> {
    memory
        .hard_blocks
        .iter()
        .filter(|block| block.channel == channel)
        .map(|block| reason(if block.spam { code::SPAM_REPORT } else { code::HARD_BOUNCE }, None, None))
        .collect()
}

/// When a full frequency cap lets the next message through: the send that must leave the window
/// for the count to drop below `max`, plus the window. `None` when the cap is not full.
fn cap_until(memory: &SuppressionMemory, cap: &FrequencyCap, window: i64, at: i64) -> Option<i64> {
    let mut inside: Vec<i64> = memory
        .sends
        .iter()
        .filter(|(channel, sent_at)| *channel == cap.channel && *sent_at + window > at && *sent_at <= at)
        .map(|(_, sent_at)| *sent_at)
        .collect();
    let max = cap.max as usize;
    if inside.len() < max {
        return None;
    }
    inside.sort_unstable();
    Some(inside[inside.len() - max] + window)
}
