//! loyalty-points' pure core (SPEC 4.4): an exactly-once points ledger per customer, earned on any
//! channel, spendable on any other.
//!
//! Points live in lots, one per order (or positive adjustment): pending until the return window
//! has passed, then active until they expire. Redemptions spend active points, the lot that expires
//! first first; a refund takes back what its order earned, from the order's lot, and what was
//! already spent becomes a debt (a negative active balance) that later points repay.
//!
//! Time (SPEC 4, two clocks): an event is evaluated at the partition clock (the broker's append
//! time of its record, never earlier than the previous evaluation), so the ledger an input
//! produces does not depend on when it is processed, and a future-dated order activates nothing
//! early; lots that activate or expire by then are settled first, with entries dated when they fell
//! due. Timers settle them by the partition clock when no event comes. Activation and expiry
//! follow the order's `occurred_at` (return window, calendar months). Entry ids derive from the cause: `<event_id>/<kind>` for an
//! event's entry, `<lot>/activate` and `<lot>/expire` for a lot's, so a replay can never write a
//! second entry.

pub mod corrections;
pub mod rules;

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    BalanceAfter, LedgerEntryKind, LoyaltyBalance, LoyaltyLedgerEntry, NextExpiry,
};
use omnistream_model::{Channel, EventPayload, TouchpointEvent};
use omnistream_runtime::{Output, OutputRecord, Processor};
use serde::{Deserialize, Serialize};

pub use omnistream_runtime::RulesError;
pub use rules::{LoyaltyRules, Tier};

/// Redemption ids remembered, so that a redemption retried under a new event id spends once.
const REDEMPTIONS_KEPT: usize = 64;
/// The reason of a rejected redemption.
pub const INSUFFICIENT_POINTS: &str = "insufficient_points";
/// The reason of a refund's reversal.
pub const REFUND: &str = "refund";

/// Points of one order or positive adjustment. Times are unix millis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// The id of the entry that created it.
    pub id: String,
    pub order_id: Option<String>,
    pub channel: Option<Channel>,
    pub earned_at: i64,
    pub points: i64,
    /// Not yet spent, expired or reversed.
    pub remaining: i64,
    /// Taken back by refunds so far.
    pub reversed: i64,
    pub activates_at: i64,
    pub expires_at: i64,
    pub active: bool,
    /// The event that created it; `None` in state written before 2026-12 (its id names it).
    #[serde(default)]
    pub cause_event_id: Option<String>,
}

/// What loyalty-points keeps per customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoyaltyState {
    /// Lots with points left, or of an order that a refund may still reverse.
    pub lots: Vec<Lot>,
    /// Points spent beyond the active balance (refund of spent points, negative adjustment).
    pub debt: i64,
    pub spent: i64,
    pub expired: i64,
    pub lifetime_earned: i64,
    /// Points earned, by time, within the tier window.
    pub earned: Vec<(i64, i64)>,
    pub redemptions: VecDeque<String>,
    pub evaluated_at: i64,
    pub version: i64,
    /// Refunds that arrived before their order (at most [`EARLY_REFUNDS_KEPT`], for at most
    /// [`EARLY_REFUND_MAX_AGE_MS`] of partition clock): applied when the order comes, so the
    /// ledger nets as in event-time order. State written before 2026-12 has none.
    #[serde(default)]
    pub early_refunds: Vec<EarlyRefund>,
}

/// A refund kept until its order arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyRefund {
    pub event_id: String,
    pub order_id: String,
    pub value_minor: i64,
    pub currency: String,
    pub channel: Channel,
    pub occurred_at: i64,
    /// Partition clock when it arrived: it is forgotten after [`EARLY_REFUND_MAX_AGE_MS`].
    pub arrived_at: i64,
}

/// Refunds of orders not seen yet that a customer's state keeps.
pub const EARLY_REFUNDS_KEPT: usize = 32;
/// How long a refund waits for its order: the default return window twice over.
pub const EARLY_REFUND_MAX_AGE_MS: i64 = 28 * 86_400_000;

impl LoyaltyState {
    pub fn active(&self) -> i64 {
        self.lots.iter().filter(|lot| lot.active).map(|lot| lot.remaining).sum::<i64>() - self.debt
    }

    pub fn pending(&self) -> i64 {
        self.lots.iter().filter(|lot| !lot.active).map(|lot| lot.remaining).sum()
    }

    fn balance_after(&self) -> BalanceAfter {
        BalanceAfter { active: self.active(), pending: self.pending() }
    }
}

/// The processor.
#[derive(Debug, Clone)]
pub struct LoyaltyPoints {
    rules: Arc<LoyaltyRules>,
}

/// Its output roles: every ledger entry (`--ledger-topic`) and the balance after each change
/// (`--balances-topic`).
pub const LEDGER_OUTPUT: &str = "ledger";
pub const BALANCES_OUTPUT: &str = "balances";

/// What loyalty-points writes.
#[derive(Debug, Clone, PartialEq)]
pub enum LoyaltyRecord {
    Ledger(LoyaltyLedgerEntry),
    Balance(LoyaltyBalance),
}

impl OutputRecord for LoyaltyRecord {
    fn encode(&self) -> Vec<u8> {
        match self {
            LoyaltyRecord::Ledger(entry) => entry.encode(),
            LoyaltyRecord::Balance(balance) => balance.encode(),
        }
    }
}

impl LoyaltyPoints {
    pub fn new(rules: LoyaltyRules) -> Self {
        Self { rules: Arc::new(rules) }
    }

    pub fn rules(&self) -> &LoyaltyRules {
        &self.rules
    }
}

impl Default for LoyaltyPoints {
    fn default() -> Self {
        Self::new(LoyaltyRules::default())
    }
}

/// A ledger entry in the making: what it says, before the customer and balance are added.
struct Movement {
    entry_id: String,
    kind: LedgerEntryKind,
    points: i64,
    /// A code only (SPEC 4.4); details go to `reason_detail`.
    reason: Option<String>,
    reason_detail: Option<String>,
    cause_event_id: String,
    order_id: Option<String>,
    redemption_id: Option<String>,
    channel: Option<Channel>,
    occurred_at: i64,
    /// The balance right after this movement.
    balance_after: BalanceAfter,
}

/// Whether loyalty reads `event`: an order, a refund, a redemption, an adjustment, an erasure or a
/// merge. `version` counts those applied; another event only opens a customer's balance.
pub fn reads(event: &TouchpointEvent) -> bool {
    matches!(
        event.payload,
        EventPayload::OrderPlaced { .. }
            | EventPayload::OrderRefunded { .. }
            | EventPayload::LoyaltyRedeemRequested { .. }
            | EventPayload::LoyaltyPointsAdjusted { .. }
            | EventPayload::ErasureRequested
            | EventPayload::CustomersMerged { .. }
    )
}

impl Processor for LoyaltyPoints {
    type Input = TouchpointEvent;
    type State = LoyaltyState;
    type Record = LoyaltyRecord;
    const OUTPUTS: &'static [&'static str] = &[LEDGER_OUTPUT, BALANCES_OUTPUT];
    const LATEST_PER_KEY: &'static [&'static str] = &[BALANCES_OUTPUT];
    /// Version 2 (2026-12): calendar months, refunds kept until their order, entry causes.
    const STATE_VERSION: u8 = 2;

    /// A version 1 lot expires 12 months of 30 days after its order: it is moved to the calendar
    /// date (5 or 6 days later). Points that rule already expired are no longer in the state;
    /// docs/loyalty-points.md says how to find and re-credit them.
    fn upgrade_state(&self, state: &mut LoyaltyState, _written_with: u8) {
        for lot in &mut state.lots {
            lot.expires_at = self.rules.expires_at(lot.earned_at);
        }
    }

    fn apply(
        &self,
        state: &mut Option<LoyaltyState>,
        event: &TouchpointEvent,
        now: DateTime<Utc>,
    ) -> Vec<Output<LoyaltyRecord>> {
        let customer_id = &event.customer_id;
        if let EventPayload::CustomersMerged { winner, merge_id, .. } = &event.payload {
            // Merged away: the runtime hands the state to the winner. The ledger says where the
            // points went; the balance goes.
            let Some(state) = state.as_ref() else { return Vec::new() };
            let (active, pending) = (state.active(), state.pending());
            let moved = LoyaltyLedgerEntry {
                entry_id: event_entry_id(customer_id, &event.event_id, LedgerEntryKind::MergeOut),
                customer_id: customer_id.clone(),
                kind: LedgerEntryKind::MergeOut,
                points: -active,
                balance_after: BalanceAfter { active: 0, pending: 0 },
                reason: Some(MERGE_REASON.to_owned()),
                cause_event_id: event.event_id.clone(),
                order_id: None,
                channel: None,
                negative_balance: false,
                occurred_at: event.occurred_at,
                redemption_id: None,
                reason_detail: Some(format!(
                    "{active} active and {pending} pending points moved to {winner} (merge {merge_id})"
                )),
            };
            return vec![ledger_output(moved), Output::new(BALANCES_OUTPUT, customer_id.clone(), None)];
        }
        if let EventPayload::ErasureRequested = event.payload {
            *state = None;
            let erase = LoyaltyLedgerEntry {
                entry_id: event_entry_id(customer_id, &event.event_id, LedgerEntryKind::Erase),
                customer_id: customer_id.clone(),
                kind: LedgerEntryKind::Erase,
                points: 0,
                balance_after: BalanceAfter { active: 0, pending: 0 },
                reason: Some("erasure_requested".to_owned()),
                cause_event_id: event.event_id.clone(),
                order_id: None,
                channel: None,
                negative_balance: false,
                occurred_at: event.occurred_at,
                redemption_id: None,
                reason_detail: None,
            };
            return vec![ledger_output(erase), Output::new(BALANCES_OUTPUT, customer_id.clone(), None)];
        }
        let state = state.get_or_insert_with(LoyaltyState::default);
        // SPEC 4: "now" is the partition clock; an event dated in the future never moves it.
        state.evaluated_at = state.evaluated_at.max(now.timestamp_millis());
        state.version += i64::from(reads(event));
        let mut outputs = Vec::new();
        let at = state.evaluated_at;
        for movement in settle(state, at).into_iter().chain(apply_event(state, &self.rules, event, at)) {
            outputs.push(self.entry(customer_id, movement));
        }
        outputs.push(self.balance_output(state, customer_id, at));
        outputs
    }

    /// Merges (identity resolution, docs/identity.md): the loser's lots move to the winner.
    const HANDS_OFF_STATE: bool = true;

    fn handoff_target(&self, event: &TouchpointEvent) -> Option<String> {
        event.merge_winner().map(str::to_owned)
    }

    /// The winner takes the loser's lots (with their own activation and expiry), spending and
    /// tier history, and says so in a `merge_in` entry.
    fn merge(
        &self,
        state: &mut Option<LoyaltyState>,
        customer_id: &str,
        from: &str,
        cause: &str,
        handed: LoyaltyState,
        now: DateTime<Utc>,
    ) -> Vec<Output<LoyaltyRecord>> {
        let state = state.get_or_insert_with(LoyaltyState::default);
        let at = state.evaluated_at.max(handed.evaluated_at).max(now.timestamp_millis());
        let (active, pending) = (handed.active(), handed.pending());
        absorb(state, handed);
        state.evaluated_at = at;
        let merged_in = LoyaltyLedgerEntry {
            entry_id: event_entry_id(customer_id, cause, LedgerEntryKind::MergeIn),
            customer_id: customer_id.to_owned(),
            kind: LedgerEntryKind::MergeIn,
            points: active,
            balance_after: BalanceAfter { active: state.active(), pending: state.pending() },
            reason: Some(MERGE_REASON.to_owned()),
            cause_event_id: cause.to_owned(),
            order_id: None,
            channel: None,
            negative_balance: state.active() < 0,
            occurred_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
            redemption_id: None,
            reason_detail: Some(format!("{active} active and {pending} pending points from {from}")),
        };
        let mut outputs = vec![ledger_output(merged_in)];
        outputs.extend(settle(state, at).into_iter().map(|movement| self.entry(customer_id, movement)));
        outputs.push(self.balance_output(state, customer_id, at));
        outputs
    }

    /// A customer's first event opens their balance (every customer seen has one, at zero); after
    /// it only orders, refunds, redemptions, adjustments, an erasure or a merge. Points activate
    /// and expire by timers, due before any later record, so another event settles nothing
    /// (docs/loyalty-points.md).
    fn reads(&self, event: &TouchpointEvent) -> bool {
        reads(event)
    }

    fn next_timer(&self, state: &LoyaltyState) -> Option<DateTime<Utc>> {
        let lots = state
            .lots
            .iter()
            .filter(|lot| lot.remaining > 0 || !lot.active)
            .map(|lot| if lot.active { lot.expires_at } else { lot.activates_at });
        // The tier falls when points leave its window, without waiting for another event.
        let tier_window = state
            .earned
            .iter()
            .map(|(earned_at, _)| self.rules.leaves_tier_window(*earned_at))
            .filter(|leaves| *leaves > state.evaluated_at);
        lots.chain(tier_window).min().and_then(DateTime::from_timestamp_millis)
    }

    fn on_timer(
        &self,
        state: &mut Option<LoyaltyState>,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<Output<LoyaltyRecord>> {
        let Some(state) = state else { return Vec::new() };
        let at = now.timestamp_millis().max(state.evaluated_at);
        let tier_before = self.rules.tier_for(state.earned.iter().map(|(_, points)| points).sum()).to_owned();
        let movements = settle(state, at);
        let mut outputs: Vec<Output<LoyaltyRecord>> =
            movements.into_iter().map(|movement| self.entry(customer_id, movement)).collect();
        let balance = self.balance_output(state, customer_id, at);
        // Only moved points and a fallen tier change a balance by time (docs/loyalty-points.md).
        let tier_after = self.rules.tier_for(state.earned.iter().map(|(_, points)| points).sum());
        if !outputs.is_empty() || tier_after != tier_before {
            outputs.push(balance);
        }
        outputs
    }
}

impl LoyaltyPoints {
    fn entry(&self, customer_id: &str, movement: Movement) -> Output<LoyaltyRecord> {
        let balance_after = movement.balance_after;
        let entry = LoyaltyLedgerEntry {
            entry_id: movement.entry_id,
            customer_id: customer_id.to_owned(),
            kind: movement.kind,
            points: movement.points,
            negative_balance: balance_after.active < 0,
            balance_after,
            reason: movement.reason,
            cause_event_id: movement.cause_event_id,
            order_id: movement.order_id,
            channel: movement.channel,
            occurred_at: DateTime::from_timestamp_millis(movement.occurred_at).unwrap_or_default(),
            redemption_id: movement.redemption_id,
            reason_detail: movement.reason_detail,
        };
        ledger_output(entry)
    }

    fn balance_output(&self, state: &mut LoyaltyState, customer_id: &str, at: i64) -> Output<LoyaltyRecord> {
        let balance = balance(state, &self.rules, customer_id, at);
        Output::new(BALANCES_OUTPUT, customer_id.to_owned(), Some(LoyaltyRecord::Balance(balance)))
    }
}

/// The reason code of the ledger entries of a merge.
pub const MERGE_REASON: &str = "customers_merged";

/// Takes in another customer's state (a merge): its lots keep their own activation and expiry,
/// its spending, expiry and tier history add up, its redemptions stay answered once.
pub fn absorb(state: &mut LoyaltyState, loser: LoyaltyState) {
    state.lots.extend(loser.lots);
    state.debt += loser.debt;
    state.spent += loser.spent;
    state.expired += loser.expired;
    state.lifetime_earned += loser.lifetime_earned;
    state.earned.extend(loser.earned);
    state.earned.sort_unstable();
    for redemption in loser.redemptions {
        if !state.redemptions.contains(&redemption) {
            if state.redemptions.len() >= REDEMPTIONS_KEPT {
                state.redemptions.pop_front();
            }
            state.redemptions.push_back(redemption);
        }
    }
    state.early_refunds.extend(loser.early_refunds);
    let dropped = state.early_refunds.len().saturating_sub(EARLY_REFUNDS_KEPT);
    state.early_refunds.drain(..dropped);
    state.version += loser.version;
}

fn ledger_output(entry: LoyaltyLedgerEntry) -> Output<LoyaltyRecord> {
    Output::new(LEDGER_OUTPUT, entry.customer_id.clone(), Some(LoyaltyRecord::Ledger(entry)))
}

/// The balance record as of `at`; forgets tier history older than the window.
pub fn balance(state: &mut LoyaltyState, rules: &LoyaltyRules, customer_id: &str, at: i64) -> LoyaltyBalance {
    let window_start = rules.tier_window_start(at);
    state.earned.retain(|(earned_at, _)| *earned_at > window_start);
    let earned_in_window: i64 = state.earned.iter().map(|(_, points)| points).sum();
    let next_expiry = state
        .lots
        .iter()
        .filter(|lot| lot.active && lot.remaining > 0)
        .min_by_key(|lot| lot.expires_at)
        .map(|first| {
            let points = state
                .lots
                .iter()
                .filter(|lot| lot.active && lot.expires_at == first.expires_at)
                .map(|lot| lot.remaining)
                .sum();
            NextExpiry { points, at: DateTime::from_timestamp_millis(first.expires_at).unwrap_or_default() }
        });
    LoyaltyBalance {
        customer_id: customer_id.to_owned(),
        active: state.active(),
        pending: state.pending(),
        spent: state.spent,
        expired: state.expired,
        lifetime_earned: state.lifetime_earned,
        tier: rules.tier_for(earned_in_window).to_owned(),
        next_expiry,
        updated_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
        version: state.version,
    }
}

/// Activates and expires every lot due by `at`, in the order they fell due.
fn settle(state: &mut LoyaltyState, at: i64) -> Vec<Movement> {
    let mut due: Vec<(i64, usize, bool)> = Vec::new();
    for (index, lot) in state.lots.iter().enumerate() {
        if !lot.active && lot.activates_at <= at {
            due.push((lot.activates_at, index, true));
        }
        if lot.expires_at <= at && (lot.remaining > 0 || !lot.active) {
            due.push((lot.expires_at, index, false));
        }
    }
    due.sort_unstable();
    let mut movements = Vec::new();
    for (when, index, activation) in due {
        let lot = &mut state.lots[index];
        let (id, order_id, channel) = (lot.id.clone(), lot.order_id.clone(), lot.channel);
        let cause_event_id = lot.cause_event_id.clone();
        let (kind, points) = if activation {
            lot.active = true;
            let points = lot.remaining;
            if points == 0 {
                // Refunded in full while pending: nothing to announce.
                continue;
            }
            repay_debt(state);
            (LedgerEntryKind::Activate, points)
        } else if lot.remaining > 0 {
            let points = lot.remaining;
            lot.remaining = 0;
            state.expired += points;
            (LedgerEntryKind::Expire, -points)
        } else {
            continue;
        };
        movements.push(Movement {
            entry_id: format!("{id}/{}", kind_name(kind)),
            kind,
            points,
            reason: None,
            reason_detail: None,
            cause_event_id: cause_event_id.unwrap_or_else(|| cause_of(&id)),
            order_id,
            redemption_id: None,
            channel,
            occurred_at: when,
            balance_after: state.balance_after(),
        });
    }
    // A lot past its expiry has nothing left to give or to reverse.
    state.lots.retain(|lot| lot.expires_at > at);
    movements
}

/// The event id in the id of a lot created before 2026-12 (`<event_id>/earn` or
/// `<event_id>/adjust`); newer lots name their cause.
fn cause_of(lot_id: &str) -> String {
    lot_id.rsplit_once('/').map_or(lot_id, |(event_id, _)| event_id).to_owned()
}

/// Active points repay a debt first.
fn repay_debt(state: &mut LoyaltyState) {
    let mut debt = state.debt;
    if debt == 0 {
        return;
    }
    for lot in spending_order(&mut state.lots) {
        let taken = lot.remaining.min(debt);
        lot.remaining -= taken;
        debt -= taken;
        if debt == 0 {
            break;
        }
    }
    state.debt = debt;
}

/// Active lots with points left, the one expiring first first.
fn spending_order(lots: &mut [Lot]) -> impl Iterator<Item = &mut Lot> {
    let mut order: Vec<&mut Lot> = lots.iter_mut().filter(|lot| lot.active && lot.remaining > 0).collect();
    order.sort_by_key(|lot| (lot.expires_at, lot.earned_at));
    order.into_iter()
}

/// Takes `points` from active lots, the first to expire first; what they lack becomes debt.
fn spend(state: &mut LoyaltyState, mut points: i64) {
    for lot in spending_order(&mut state.lots) {
        let taken = lot.remaining.min(points);
        lot.remaining -= taken;
        points -= taken;
        if points == 0 {
            break;
        }
    }
    state.debt += points;
}

/// Applies one event at `at` (everything but erasure) and returns its ledger movements.
fn apply_event(
    state: &mut LoyaltyState,
    rules: &LoyaltyRules,
    event: &TouchpointEvent,
    at: i64,
) -> Vec<Movement> {
    let occurred_at = event.occurred_at.timestamp_millis();
    // Made after the state changed: it carries the balance the change left.
    let movement = |state: &LoyaltyState, kind: LedgerEntryKind, points: i64, business: Business| Movement {
        entry_id: event_entry_id(&event.customer_id, &event.event_id, kind),
        kind,
        points,
        reason: business.reason,
        reason_detail: business.reason_detail,
        cause_event_id: event.event_id.clone(),
        order_id: business.order_id,
        redemption_id: business.redemption_id,
        channel: Some(event.channel),
        occurred_at,
        balance_after: state.balance_after(),
    };
    match &event.payload {
        EventPayload::OrderPlaced { order_id, value_minor, currency, .. } => {
            let points = rules.points_for(*value_minor, currency, event.channel);
            if points == 0 || state.lots.iter().any(|lot| lot.order_id.as_deref() == Some(order_id.as_str()))
            {
                return Vec::new();
            }
            state.lots.push(Lot {
                id: event_entry_id(&event.customer_id, &event.event_id, LedgerEntryKind::Earn),
                cause_event_id: Some(event.event_id.clone()),
                order_id: Some(order_id.clone()),
                channel: Some(event.channel),
                earned_at: occurred_at,
                points,
                remaining: points,
                reversed: 0,
                activates_at: occurred_at + rules.return_window_ms(),
                expires_at: rules.expires_at(occurred_at),
                active: false,
            });
            state.lifetime_earned += points;
            state.earned.push((occurred_at, points));
            let earn = movement(state, LedgerEntryKind::Earn, points, Business::order(order_id));
            // An order older than the return window is active at once (and one older than the
            // expiry is gone at once).
            let mut movements = vec![earn];
            movements.extend(apply_early_refunds(state, rules, &event.customer_id, order_id));
            movements.extend(settle(state, at));
            movements
        }
        EventPayload::LoyaltyRedeemRequested { redemption_id, points } => {
            if state.redemptions.iter().any(|id| id == redemption_id) {
                return Vec::new();
            }
            let active = state.active();
            if *points > active {
                // Not remembered: the same redemption may be tried again once points suffice.
                let rejected = Business {
                    reason: Some(INSUFFICIENT_POINTS.to_owned()),
                    reason_detail: Some(format!("{points} points requested, {active} active")),
                    ..Business::redemption(redemption_id)
                };
                return vec![movement(state, LedgerEntryKind::Reject, *points, rejected)];
            }
            if state.redemptions.len() >= REDEMPTIONS_KEPT {
                state.redemptions.pop_front();
            }
            state.redemptions.push_back(redemption_id.clone());
            spend(state, *points);
            state.spent += points;
            vec![movement(state, LedgerEntryKind::Redeem, -points, Business::redemption(redemption_id))]
        }
        EventPayload::OrderRefunded { order_id, value_minor, currency } => {
            let Some(lot) =
                state.lots.iter_mut().find(|lot| lot.order_id.as_deref() == Some(order_id.as_str()))
            else {
                keep_early_refund(state, event, order_id, *value_minor, currency, at);
                return Vec::new();
            };
            let channel = lot.channel.unwrap_or(event.channel);
            let points = rules.points_for(*value_minor, currency, channel).min(lot.points - lot.reversed);
            if points <= 0 {
                return Vec::new();
            }
            lot.reversed += points;
            let from_lot = lot.remaining.min(points);
            lot.remaining -= from_lot;
            let earned_at = lot.earned_at;
            // Already spent: the customer owes it, from the active points they still have first.
            state.debt += points - from_lot;
            repay_debt(state);
            state.lifetime_earned -= points;
            // Taken off the tier count as of the order, so that both leave the window together.
            state.earned.push((earned_at, -points));
            let refund = Business { reason: Some(REFUND.to_owned()), ..Business::order(order_id) };
            vec![movement(state, LedgerEntryKind::Reverse, -points, refund)]
        }
        EventPayload::LoyaltyPointsAdjusted { points, reason } => {
            if *points > 0 {
                state.lots.push(Lot {
                    id: event_entry_id(&event.customer_id, &event.event_id, LedgerEntryKind::Adjust),
                    cause_event_id: Some(event.event_id.clone()),
                    order_id: None,
                    channel: Some(event.channel),
                    earned_at: occurred_at,
                    points: *points,
                    remaining: *points,
                    reversed: 0,
                    activates_at: occurred_at,
                    expires_at: rules.expires_at(occurred_at),
                    active: true,
                });
                repay_debt(state);
            } else {
                spend(state, -points);
            }
            let adjustment = Business { reason: Some(reason.clone()), ..Business::default() };
            vec![movement(state, LedgerEntryKind::Adjust, *points, adjustment)]
        }
        _ => Vec::new(),
    }
}

/// Keeps a refund whose order has not arrived (yet), within the bounds.
fn keep_early_refund(
    state: &mut LoyaltyState,
    event: &TouchpointEvent,
    order_id: &str,
    value_minor: i64,
    currency: &str,
    at: i64,
) {
    state.early_refunds.retain(|refund| refund.arrived_at + EARLY_REFUND_MAX_AGE_MS > at);
    if state.early_refunds.len() >= EARLY_REFUNDS_KEPT {
        state.early_refunds.remove(0);
    }
    state.early_refunds.push(EarlyRefund {
        event_id: event.event_id.clone(),
        order_id: order_id.to_owned(),
        value_minor,
        currency: currency.to_owned(),
        channel: event.channel,
        occurred_at: event.occurred_at.timestamp_millis(),
        arrived_at: at,
    });
}

/// The order of refunds that came first has arrived: reverse them now, as their own events would
/// have (same entry ids, dated when the refunds happened).
fn apply_early_refunds(
    state: &mut LoyaltyState,
    rules: &LoyaltyRules,
    customer_id: &str,
    order_id: &str,
) -> Vec<Movement> {
    let now = state.evaluated_at;
    state.early_refunds.retain(|refund| refund.arrived_at + EARLY_REFUND_MAX_AGE_MS > now);
    let (mut waiting, others): (Vec<EarlyRefund>, Vec<EarlyRefund>) =
        std::mem::take(&mut state.early_refunds).into_iter().partition(|refund| refund.order_id == order_id);
    state.early_refunds = others;
    // In event-time order (ties: arrival order), as if they had come after their order.
    waiting.sort_by_key(|refund| refund.occurred_at);
    waiting
        .into_iter()
        .filter_map(|refund| {
            let event = TouchpointEvent {
                event_id: refund.event_id,
                customer_id: customer_id.to_owned(),
                occurred_at: DateTime::from_timestamp_millis(refund.occurred_at).unwrap_or_default(),
                channel: refund.channel,
                source: None,
                payload: EventPayload::OrderRefunded {
                    order_id: refund.order_id,
                    value_minor: refund.value_minor,
                    currency: refund.currency,
                },
                context: Default::default(),
                identifiers: Vec::new(),
            };
            apply_event(state, rules, &event, refund.arrived_at).into_iter().next()
        })
        .collect()
}

/// What an event's entry says beyond points and balance: its business key and its reason.
#[derive(Default)]
struct Business {
    order_id: Option<String>,
    redemption_id: Option<String>,
    reason: Option<String>,
    reason_detail: Option<String>,
}

impl Business {
    fn order(order_id: &str) -> Self {
        Self { order_id: Some(order_id.to_owned()), ..Self::default() }
    }

    fn redemption(redemption_id: &str) -> Self {
        Self { redemption_id: Some(redemption_id.to_owned()), ..Self::default() }
    }
}

/// `<customer_id>/<event_id>/<kind>`: one entry of a kind per customer and event, whatever replays
/// or retries happen, and distinct when two customers' producers reuse an event id. `%` and `/`
/// in the customer id are percent-encoded, so the first `/` ends it and no two pairs of ids
/// give one entry id (`<kind>` has no `/`).
fn event_entry_id(customer_id: &str, event_id: &str, kind: LedgerEntryKind) -> String {
    let customer = customer_id.replace('%', "%25").replace('/', "%2F");
    format!("{customer}/{event_id}/{}", kind_name(kind))
}

fn kind_name(kind: LedgerEntryKind) -> &'static str {
    match kind {
        LedgerEntryKind::Earn => "earn",
        LedgerEntryKind::Activate => "activate",
        LedgerEntryKind::Redeem => "redeem",
        LedgerEntryKind::Reject => "reject",
        LedgerEntryKind::Reverse => "reverse",
        LedgerEntryKind::Expire => "expire",
        LedgerEntryKind::Adjust => "adjust",
        LedgerEntryKind::Erase => "erase",
        LedgerEntryKind::MergeOut => "merge_out",
        LedgerEntryKind::MergeIn => "merge_in",
    }
}
