//! SPEC 4.4, loyalty-points, recomputed from a customer's whole history.
//!
//! Built as a **timeline**, not as a fold of events: the records the service applies (after
//! dedupe and the erasure cut, [`crate::applied`]) are cut into relationships at each applied
//! erasure; in each, record arrivals (at their broker append time, the partition clock) are
//! merged with the instants time brings (a lot's activation at `occurred_at` + the return window,
//! its expiry N calendar months after `occurred_at`, an order's points leaving the tier window),
//! and the ledger is read off that merged timeline, instant by instant. At one instant what is
//! due comes before an arrival ("a timer due before the next record's timestamp fires before that
//! record is applied"). Redemptions are first come, first served in offset order, judged on the
//! active points as of the partition clock.
//!
//! Where SPEC 4.4 and docs/loyalty-points.md leave a detail open, the choice is marked
//! **Decision** in the comments.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use omnistream_model::records::{
    BalanceAfter, LedgerEntryKind, LoyaltyBalance, LoyaltyLedgerEntry, NextExpiry,
};
use omnistream_model::{Channel, EventPayload, TouchpointEvent};

use crate::{Record, applied_reading};

const DAY_MS: i64 = 86_400_000;
/// docs: "a refund that arrives before its order is kept (at most 32 per customer, for 28 days of
/// partition clock)".
pub const EARLY_REFUNDS_KEPT: usize = 32;
pub const EARLY_REFUND_MAX_AGE_MS: i64 = 28 * DAY_MS;
/// docs: "the last 64 accepted ids are remembered".
pub const REDEMPTIONS_REMEMBERED: usize = 64;
/// docs: the reason codes.
pub const INSUFFICIENT_POINTS: &str = "insufficient_points";
pub const REFUND: &str = "refund";
pub const ERASURE_REQUESTED: &str = "erasure_requested";

/// An exact rate: `numer / denom` (rates and multipliers are kept as fractions so that "rounded
/// down" is exact, not at the mercy of binary floating point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub numer: i64,
    pub denom: i64,
}

impl Ratio {
    pub const ONE: Ratio = Ratio { numer: 1, denom: 1 };

    pub fn as_f64(self) -> f64 {
        self.numer as f64 / self.denom as f64
    }
}

/// The loyalty rules (SPEC 4.4; the defaults are the SPEC's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// "points per currency major unit, rounded down (default 1 per unit, ...)"
    pub default_points_per_unit: Ratio,
    pub points_per_unit: Vec<(String, Ratio)>,
    /// "... per-channel multipliers" (default 1).
    pub channel_multipliers: Vec<(Channel, Ratio)>,
    /// "the return window (default 14 d)"
    pub return_window_days: i64,
    /// "points expire N months after the order's occurred_at (default 12)"
    pub expiry_months: i32,
    /// "tiers (default bronze/silver/gold)": name and threshold, lowest first.
    pub tiers: Vec<(String, i64)>,
    /// "from points earned in the last 12 months"
    pub tier_window_months: i32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            default_points_per_unit: Ratio::ONE,
            points_per_unit: Vec::new(),
            channel_multipliers: Vec::new(),
            return_window_days: 14,
            expiry_months: 12,
            tiers: vec![("bronze".into(), 0), ("silver".into(), 500), ("gold".into(), 2_000)],
            tier_window_months: 12,
        }
    }
}

/// Digits of a currency's minor unit, ISO 4217 (docs: "major units follow the ISO 4217 exponent
/// (JPY 0, KWD 3, most 2)").
pub fn minor_digits(currency: &str) -> u32 {
    const NONE: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    const FOUR: &[&str] = &["CLF", "UYW"];
    if NONE.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else if FOUR.contains(&currency) {
        4
    } else {
        2
    }
}

impl Rules {
    /// "earn on order_placed: points per currency major unit, rounded down", times the channel's
    /// multiplier: floor(value_minor / 10^digits × rate × multiplier), in exact integers.
    pub fn points_for(&self, value_minor: i64, currency: &str, channel: Channel) -> i64 {
        let rate = self
            .points_per_unit
            .iter()
            .find(|(c, _)| c == currency)
            .map_or(self.default_points_per_unit, |(_, r)| *r);
        let multiplier =
            self.channel_multipliers.iter().find(|(c, _)| *c == channel).map_or(Ratio::ONE, |(_, m)| *m);
        let numer = i128::from(value_minor) * i128::from(rate.numer) * i128::from(multiplier.numer);
        let denom =
            10i128.pow(minor_digits(currency)) * i128::from(rate.denom) * i128::from(multiplier.denom);
        i64::try_from(numer.div_euclid(denom)).unwrap_or(i64::MAX).max(0)
    }

    /// The tier reached by `points` earned in the window: the highest threshold reached.
    fn tier(&self, points: i64) -> String {
        let mut tier = self.tiers.first().map(|(name, _)| name.clone()).unwrap_or_default();
        for (name, threshold) in &self.tiers {
            if points >= *threshold {
                tier = name.clone();
            }
        }
        tier
    }

    /// Whether points earned at `earned_at` count for the tier at `at`: SPEC "points earned in the
    /// last 12 months"; docs: "the same calendar arithmetic backwards: points earned 2026-01-01
    /// 12:00 count for the tier until 2027-01-01 12:00, exclusive". **Decision** (SPEC silent):
    /// no upper bound, so a future-dated order counts from its arrival (it is earned then).
    fn in_tier_window(&self, earned_at: i64, at: i64) -> bool {
        earned_at > months_after(at, -self.tier_window_months)
    }

    /// The first instant at which points earned at `earned_at` no longer count for the tier.
    fn leaves_tier_window(&self, earned_at: i64) -> i64 {
        let candidate = months_after(earned_at, self.tier_window_months);
        if !self.in_tier_window(earned_at, candidate) {
            return candidate;
        }
        // Clamped to a month's end (29 February a year on is 28 February): the window, counted
        // backwards from the next day, starts after the earning, from the next midnight on.
        let midnight = candidate.div_euclid(DAY_MS) * DAY_MS + DAY_MS;
        debug_assert!(!self.in_tier_window(earned_at, midnight));
        midnight
    }
}

/// SPEC 4, Months: "N months after a date is the same day N months later, or the last day of that
/// month when it has no such day (UTC)"; the time of day is kept. Negative `months` count back.
pub fn months_after(at: i64, months: i32) -> i64 {
    let Some(moment) = DateTime::<Utc>::from_timestamp_millis(at) else { return at };
    let index = moment.year() * 12 + moment.month0() as i32 + months;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
    let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else { return at };
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let last_day =
        NaiveDate::from_ymd_opt(next_year, next_month, 1).and_then(|d| d.pred_opt()).map_or(28, |d| d.day());
    let date = first.with_day(moment.day().min(last_day)).unwrap_or(first);
    date.and_time(moment.time()).and_utc().timestamp_millis()
}

/// What the service must have written for a customer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// Every ledger entry, in the order written (`loyalty.ledger.v1` is append-only and one
    /// customer's entries come from one partition's single writer: the order is the contract,
    /// `balance_after` only means something in it).
    pub ledger: Vec<LoyaltyLedgerEntry>,
    /// The balance last written; `None` if none was, or the last was a tombstone (erasure).
    pub balance: Option<LoyaltyBalance>,
    /// How many balance records were written, tombstones included.
    pub balances_written: usize,
}

/// SPEC 4.4 (and its part of 4.5): the ledger and final balance of `customer_id` after `history`
/// (every input record of the customer, offset order, broker append times), with time run on to
/// `until` (the partition clock at the end; timers due by then have fired).
pub fn loyalty(rules: &Rules, customer_id: &str, history: &[Record], until: i64) -> Expected {
    let mut expected = Expected::default();
    let mut relationship: Vec<&Record> = Vec::new();
    let mut clock = i64::MIN;
    for record in applied_in_order(history) {
        clock = clock.max(record.appended_at);
        if matches!(record.event.payload, EventPayload::ErasureRequested) {
            // SPEC 4.5: "removes the customer from every service's state, writes tombstones to
            // every compacted output ... records nothing identifying afterwards except a ledger
            // entry that the erasure happened". Time runs on to the erasure first.
            Timeline::new(rules, customer_id).run(&relationship, clock, &mut expected);
            relationship.clear();
            expected.ledger.push(erase_entry(customer_id, &record.event));
            expected.balance = None;
            expected.balances_written += 1;
        } else {
            relationship.push(record);
        }
    }
    Timeline::new(rules, customer_id).run(&relationship, until.max(clock), &mut expected);
    expected
}

/// The events loyalty reads (docs/loyalty-points.md: "a customer's first event opens their
/// balance; after it only orders, refunds, redemptions and adjustments are applied"): no other
/// event writes a balance, and `version` counts only these (a first event of another kind opens
/// the balance at version 0).
fn reads(payload: &EventPayload) -> bool {
    matches!(
        payload,
        EventPayload::OrderPlaced { .. }
            | EventPayload::OrderRefunded { .. }
            | EventPayload::LoyaltyRedeemRequested { .. }
            | EventPayload::LoyaltyPointsAdjusted { .. }
    )
}

/// The records the service applies, erasures included, in offset order: a record is applied when
/// it is the last of what [`applied_reading`] gives for the history ending with it; an erasure is
/// applied when an event loyalty reads in its place (same id, date and arrival) would be.
fn applied_in_order(history: &[Record]) -> Vec<&Record> {
    let mut out = Vec::new();
    for (at, record) in history.iter().enumerate() {
        let is_last = |prefix: &[Record]| {
            applied_reading(prefix, reads)
                .and_then(|events| events.last().copied())
                .is_some_and(|last| std::ptr::eq(last, &prefix[at]))
        };
        let taken = if matches!(record.event.payload, EventPayload::ErasureRequested) {
            let mut prefix = history[..at].to_vec();
            let mut stand_in = record.clone();
            stand_in.event.payload =
                EventPayload::LoyaltyPointsAdjusted { points: 0, reason: "stand-in".into() };
            prefix.push(stand_in);
            is_last(&prefix)
        } else {
            is_last(&history[..=at])
        };
        if taken {
            out.push(record);
        }
    }
    out
}

/// SPEC: "entry_id (derived from event_id, so replays are idempotent)"; docs: "`<event_id>/<kind>`
/// for an event's entry, `<lot id>/activate` and `<lot id>/expire` for a lot's". The service
/// prefixes the customer id (event ids are unique per customer only, SPEC 4 dedupe), which the
/// SPEC allows and the model follows (reported as a docs inaccuracy).
fn entry_id(customer_id: &str, event: &TouchpointEvent, kind: &str) -> String {
    format!("{customer_id}/{}/{kind}", event.event_id)
}

/// **Decision** (docs: erasure writes "`erase` (the only entry left saying the customer existed)"):
/// no points, an empty balance, reason `erasure_requested`, no channel (the least said), dated
/// by the erasure.
fn erase_entry(customer_id: &str, event: &TouchpointEvent) -> LoyaltyLedgerEntry {
    LoyaltyLedgerEntry {
        entry_id: entry_id(customer_id, event, "erase"),
        customer_id: customer_id.to_owned(),
        kind: LedgerEntryKind::Erase,
        points: 0,
        balance_after: BalanceAfter { active: 0, pending: 0 },
        reason: Some(ERASURE_REQUESTED.to_owned()),
        cause_event_id: event.event_id.clone(),
        order_id: None,
        channel: None,
        negative_balance: false,
        occurred_at: event.occurred_at,
        redemption_id: None,
        reason_detail: None,
    }
}

/// Points from one order or one positive adjustment. docs: "a lot's id is the id of the entry
/// that created it".
#[derive(Debug, Clone)]
struct Lot {
    id: String,
    cause_event_id: String,
    /// `None` for an adjustment's lot.
    order_id: Option<String>,
    channel: Channel,
    /// The order's (adjustment's) `occurred_at`.
    earned_at: i64,
    points: i64,
    /// Points of this lot still held (pending or active).
    remaining: i64,
    /// Points its refunds took back (at most `points`).
    reversed: i64,
    /// `Some(due)` while pending.
    activates_at: Option<i64>,
    expires_at: i64,
    /// Set once its expiry has been written.
    expired: bool,
}

/// One relationship's timeline (from the first event, or the one after an erasure).
struct Timeline<'a> {
    rules: &'a Rules,
    customer_id: &'a str,
    /// Lots in the order they were created (ties of "oldest-expiring first" go by it).
    lots: Vec<Lot>,
    /// Points spent beyond what was held: a negative active balance (docs: "a debt").
    debt: i64,
    spent: i64,
    expired: i64,
    /// Orders seen, with their channel (refunds reverse at the order's rate).
    orders: Vec<(String, Channel)>,
    /// Refunds that came before their order: (event, arrived at).
    early_refunds: Vec<(&'a TouchpointEvent, i64)>,
    accepted_redemptions: Vec<String>,
    version: i64,
    /// The last instant looked at (an arrival's clock or a due time).
    evaluated_at: i64,
    last_balance: Option<LoyaltyBalance>,
}

impl<'a> Timeline<'a> {
    fn new(rules: &'a Rules, customer_id: &'a str) -> Self {
        Self {
            rules,
            customer_id,
            lots: Vec::new(),
            debt: 0,
            spent: 0,
            expired: 0,
            orders: Vec::new(),
            early_refunds: Vec::new(),
            accepted_redemptions: Vec::new(),
            version: 0,
            evaluated_at: i64::MIN,
            last_balance: None,
        }
    }

    /// Merges the arrivals with the instants time brings, up to `end` (inclusive), and writes
    /// what each instant gives into `out`.
    fn run(mut self, arrivals: &[&'a Record], end: i64, out: &mut Expected) {
        let mut arrivals = arrivals.iter().peekable();
        loop {
            let next_arrival = arrivals.peek().map(|r| r.appended_at);
            let horizon = next_arrival.unwrap_or(end);
            // Time-driven instants due by the next arrival (or the end) come first, each as of
            // its own due time (SPEC 4: "a timer due before the next record's timestamp fires
            // before that record is applied").
            if let Some(due) = self.next_instant().filter(|due| *due <= horizon) {
                self.instant(due, out);
                continue;
            }
            let Some(&record) = arrivals.next() else { break };
            self.arrive(&record.event, record.appended_at, out);
        }
    }

    /// The next instant at which time alone changes something: a pending lot's activation, a
    /// lot's expiry, an order's points leaving the tier window.
    fn next_instant(&self) -> Option<i64> {
        let lots = self
            .lots
            .iter()
            .filter(|lot| !lot.expired)
            .flat_map(|lot| lot.activates_at.into_iter().chain(self.kept(lot).then_some(lot.expires_at)));
        let tier_exits = self
            .lots
            .iter()
            .filter(|lot| lot.order_id.is_some() && lot.points > lot.reversed)
            .map(|lot| self.rules.leaves_tier_window(lot.earned_at));
        lots.chain(tier_exits).filter(|at| *at > self.evaluated_at).min()
    }

    /// Whether a lot is still held until its expiry: an order's lot always (its refunds reverse
    /// from it), an adjustment's while it has points.
    fn kept(&self, lot: &Lot) -> bool {
        lot.order_id.is_some() || lot.remaining > 0
    }

    /// A time-driven instant: lots due settle, and the balance is written when points moved
    /// (an entry was written) or the tier fell (SPEC 4.4 "tiers ... from points earned in the last
    /// 12 months"; docs: "the tier falls by timer when points leave the window, without waiting
    /// for another event"). **Decision** (SPEC silent): nothing else changes a balance by time,
    /// so nothing else rewrites it.
    fn instant(&mut self, at: i64, out: &mut Expected) {
        self.evaluated_at = at;
        let entries = out.ledger.len();
        self.settle(at, out);
        let moved = out.ledger.len() > entries;
        let balance = self.balance(at);
        let tier_fell = self.last_balance.as_ref().is_some_and(|last| last.tier != balance.tier);
        if moved || tier_fell {
            self.write_balance(balance, out);
        }
    }

    /// Every activation and expiry due by `at`, in due order (ties: the lot created first;
    /// **Decision**, SPEC silent), each entry dated when it fell due (docs: "dated when due").
    fn settle(&mut self, at: i64, out: &mut Expected) {
        let mut due: Vec<(i64, usize, bool)> = Vec::new();
        for (index, lot) in self.lots.iter().enumerate() {
            if let Some(when) = lot.activates_at.filter(|when| *when <= at) {
                due.push((when, index, false));
            }
            if !lot.expired && lot.expires_at <= at {
                due.push((lot.expires_at, index, true));
            }
        }
        due.sort();
        for (when, index, expiry) in due {
            if expiry {
                self.expire(index, when, out);
            } else {
                self.activate(index, when, out);
            }
        }
    }

    /// SPEC: "points are pending until the order's occurred_at + the return window ..., then
    /// active". docs: "later points repay a debt first".
    fn activate(&mut self, index: usize, when: i64, out: &mut Expected) {
        let lot = &mut self.lots[index];
        lot.activates_at = None;
        let moved = lot.remaining;
        let repaid = moved.min(self.debt);
        lot.remaining -= repaid;
        self.debt -= repaid;
        if moved > 0 {
            let lot = self.lots[index].clone();
            let entry = self
                .entry(LedgerEntryKind::Activate, &format!("{}/activate", lot.id), &lot.cause_event_id)
                .points(moved)
                .order(lot.order_id.clone())
                .channel(lot.channel)
                .at(when);
            out.ledger.push(entry.build(self));
        }
    }

    /// SPEC: "points expire N months after the order's occurred_at (default 12), oldest first";
    /// docs: "whatever is left of each lot".
    fn expire(&mut self, index: usize, when: i64, out: &mut Expected) {
        let lot = &mut self.lots[index];
        lot.expired = true;
        let left = lot.remaining;
        lot.remaining = 0;
        // **Decision** (SPEC silent; as the service does): an expired order is forgotten. What
        // expired was not spent, so a refund coming later takes nothing back: it is kept like
        // one for an order not seen, and dropped after 28 days.
        if let Some(order_id) = &lot.order_id {
            self.orders.retain(|(id, _)| id != order_id);
        }
        if left > 0 {
            self.expired += left;
            let lot = self.lots[index].clone();
            let entry = self
                .entry(LedgerEntryKind::Expire, &format!("{}/expire", lot.id), &lot.cause_event_id)
                .points(-left)
                .order(lot.order_id.clone())
                .channel(lot.channel)
                .at(when);
            out.ledger.push(entry.build(self));
        }
    }

    /// A record arrives at partition clock `now`: what fell due by then is settled (by the
    /// instants before), then the event is applied and the balance written.
    fn arrive(&mut self, event: &'a TouchpointEvent, now: i64, out: &mut Expected) {
        self.evaluated_at = self.evaluated_at.max(now);
        self.settle(now, out);
        // Kept refunds age out by partition clock (docs: "for 28 days of partition clock").
        self.early_refunds.retain(|(_, arrived)| now - arrived < EARLY_REFUND_MAX_AGE_MS);
        match &event.payload {
            EventPayload::OrderPlaced { order_id, value_minor, currency, .. } => {
                self.order(event, order_id, *value_minor, currency, out)
            }
            EventPayload::OrderRefunded { order_id, .. } => {
                match self.orders.iter().find(|(id, _)| id == order_id) {
                    Some(_) => self.refund(event, out),
                    // SPEC 4: "Where a fact arrives before its cause (a refund before its order
                    // ...), the service keeps it (bounded in count and age, documented)".
                    // **Decision**: beyond 32 the oldest kept goes.
                    None => {
                        self.early_refunds.push((event, now));
                        if self.early_refunds.len() > EARLY_REFUNDS_KEPT {
                            self.early_refunds.remove(0);
                        }
                    }
                }
            }
            EventPayload::LoyaltyRedeemRequested { redemption_id, points } => {
                self.redeem(event, redemption_id, *points, out)
            }
            EventPayload::LoyaltyPointsAdjusted { points, reason } => {
                self.adjust(event, *points, reason, out)
            }
            // The customer's first event opens the balance; no other is applied (`reads`).
            _ => {}
        }
        // What the event brought that is already due settles at once: an order older than the
        // return window is active at once (after its kept refunds, which are dated after it and,
        // in event-time order, mostly within its window); a lot dated a year back expires at once.
        self.settle(now, out);
        // docs: "the balance after each event it applies"; `version`: "the events loyalty
        // applied" (the SPEC leaves it open, the docs decide).
        self.version += i64::from(reads(&event.payload));
        let balance = self.balance(now);
        self.write_balance(balance, out);
    }

    /// SPEC: "earn on order_placed ...; points are pending until the order's occurred_at + the
    /// return window (default 14 d), then active (an order older than the window is active at
    /// once)". docs: kept refunds are applied when their order comes, "`earn` then `reverse`".
    fn order(
        &mut self,
        event: &'a TouchpointEvent,
        order_id: &str,
        value_minor: i64,
        currency: &str,
        out: &mut Expected,
    ) {
        self.orders.push((order_id.to_owned(), event.channel));
        let points = self.rules.points_for(value_minor, currency, event.channel);
        let earned_at = event.occurred_at.timestamp_millis();
        // **Decision**: an order earning 0 points writes no entry and makes no lot.
        if points > 0 {
            let id = entry_id(self.customer_id, event, "earn");
            self.lots.push(Lot {
                id: id.clone(),
                cause_event_id: event.event_id.clone(),
                order_id: Some(order_id.to_owned()),
                channel: event.channel,
                earned_at,
                points,
                remaining: points,
                reversed: 0,
                activates_at: Some(earned_at + self.rules.return_window_days * DAY_MS),
                expires_at: months_after(earned_at, self.rules.expiry_months),
                expired: false,
            });
            let entry = self
                .entry(LedgerEntryKind::Earn, &id, &event.event_id)
                .points(points)
                .order(Some(order_id.to_owned()))
                .channel(event.channel)
                .at(earned_at);
            out.ledger.push(entry.build(self));
        }
        // The refunds kept for it, in event-time order (SPEC 4: "so the result equals
        // event-time order"; ties: arrival order).
        let mut kept: Vec<(&'a TouchpointEvent, i64)> = Vec::new();
        self.early_refunds.retain(|(refund, arrived)| {
            let EventPayload::OrderRefunded { order_id: of, .. } = &refund.payload else { return true };
            if of == order_id {
                kept.push((*refund, *arrived));
            }
            of != order_id
        });
        kept.sort_by_key(|(refund, arrived)| (refund.occurred_at, *arrived));
        for (refund, _) in kept {
            self.refund(refund, out);
        }
    }

    /// SPEC: "refund on order_refunded: reverses the points that order earned (pending first,
    /// then active); if already spent, the balance may go negative and the entry says so". docs:
    /// "at most what the order earned overall: from the order's lot (pending or active), and
    /// what was already spent becomes a debt, paid at once from the customer's other active
    /// points, else active goes negative".
    fn refund(&mut self, event: &TouchpointEvent, out: &mut Expected) {
        let EventPayload::OrderRefunded { order_id, value_minor, currency } = &event.payload else { return };
        let Some(channel) = self.orders.iter().find(|(id, _)| id == order_id).map(|(_, c)| *c) else {
            return;
        };
        // The points its value earned: at the order's rate, with the order's channel multiplier.
        let worth = self.rules.points_for(*value_minor, currency, channel);
        let Some(index) = self.lots.iter().position(|lot| lot.order_id.as_deref() == Some(order_id)) else {
            return; // the order earned nothing
        };
        let lot = &mut self.lots[index];
        let points = worth.min(lot.points - lot.reversed);
        // **Decision**: a refund that reverses nothing writes no entry.
        if points <= 0 {
            return;
        }
        lot.reversed += points;
        let from_lot = points.min(lot.remaining);
        lot.remaining -= from_lot;
        self.take_active(points - from_lot, Some(index));
        let entry = self
            .entry(LedgerEntryKind::Reverse, &entry_id(self.customer_id, event, "reverse"), &event.event_id)
            .points(-points)
            .order(Some(order_id.clone()))
            .channel(event.channel)
            .reason(REFUND)
            .at(event.occurred_at.timestamp_millis());
        out.ledger.push(entry.build(self));
    }

    /// SPEC: "redeem on loyalty_redeem_requested: accepted only if active points cover it, else a
    /// rejected ledger entry with reason insufficient_points; spends oldest-expiring points
    /// first". docs: a retry under a new event id but the same redemption id spends once; a
    /// rejected one may be tried again.
    fn redeem(&mut self, event: &TouchpointEvent, redemption_id: &str, points: i64, out: &mut Expected) {
        if self.accepted_redemptions.iter().any(|id| id == redemption_id) {
            return;
        }
        let active = self.active();
        let entry = if points <= active {
            self.take_active(points, None);
            self.spent += points;
            self.accepted_redemptions.push(redemption_id.to_owned());
            if self.accepted_redemptions.len() > REDEMPTIONS_REMEMBERED {
                self.accepted_redemptions.remove(0);
            }
            self.entry(LedgerEntryKind::Redeem, &entry_id(self.customer_id, event, "redeem"), &event.event_id)
                .points(-points)
        } else {
            // docs: "the requested points, redemption_id, reason exactly insufficient_points,
            // reason_detail `<n> points requested, <m> active`, balance unchanged".
            self.entry(LedgerEntryKind::Reject, &entry_id(self.customer_id, event, "reject"), &event.event_id)
                .points(points)
                .reason(INSUFFICIENT_POINTS)
                .detail(format!("{points} points requested, {active} active"))
        };
        let entry =
            entry.redemption(redemption_id).channel(event.channel).at(event.occurred_at.timestamp_millis());
        out.ledger.push(entry.build(self));
    }

    /// SPEC: "manual adjustments with a reason". docs: "positive points are a new active lot;
    /// negative ones are spent like a redemption, and may leave a debt". **Decision** (SPEC
    /// silent): an adjustment's lot expires like an order's, N months after its `occurred_at`;
    /// adjustments are not "earned" (neither lifetime_earned nor the tier) nor "spent".
    fn adjust(&mut self, event: &TouchpointEvent, points: i64, reason: &str, out: &mut Expected) {
        let id = entry_id(self.customer_id, event, "adjust");
        let at = event.occurred_at.timestamp_millis();
        if points > 0 {
            let repaid = points.min(self.debt);
            self.debt -= repaid;
            self.lots.push(Lot {
                id: id.clone(),
                cause_event_id: event.event_id.clone(),
                order_id: None,
                channel: event.channel,
                earned_at: at,
                points,
                remaining: points - repaid,
                reversed: 0,
                activates_at: None,
                expires_at: months_after(at, self.rules.expiry_months),
                expired: false,
            });
        } else {
            self.take_active(-points, None);
        }
        let entry = self
            .entry(LedgerEntryKind::Adjust, &id, &event.event_id)
            .points(points)
            .reason(reason)
            .channel(event.channel)
            .at(at);
        out.ledger.push(entry.build(self));
    }

    /// Takes `points` from the active lots, the one expiring first first (ties: created first),
    /// never from `except`; what they cannot cover becomes debt.
    fn take_active(&mut self, mut points: i64, except: Option<usize>) {
        let mut order: Vec<usize> = (0..self.lots.len())
            .filter(|i| Some(*i) != except)
            .filter(|i| self.lots[*i].activates_at.is_none() && self.lots[*i].remaining > 0)
            .collect();
        order.sort_by_key(|i| (self.lots[*i].expires_at, *i));
        for i in order {
            let take = points.min(self.lots[i].remaining);
            self.lots[i].remaining -= take;
            points -= take;
        }
        self.debt += points;
    }

    /// Spendable points: active lots less the debt (may be negative).
    fn active(&self) -> i64 {
        self.lots.iter().filter(|lot| lot.activates_at.is_none()).map(|lot| lot.remaining).sum::<i64>()
            - self.debt
    }

    fn pending(&self) -> i64 {
        self.lots.iter().filter(|lot| lot.activates_at.is_some()).map(|lot| lot.remaining).sum()
    }

    /// SPEC: "Balance: active, pending, spent, expired, lifetime_earned, tier, next_expiry", as
    /// of `at`. docs: lifetime_earned "refunds subtracted"; tiers "by points earned (a refund
    /// subtracted as of its order's date) over the last 12 calendar months"; next_expiry "the
    /// points of the lots expiring first and when" (**Decision**, SPEC and docs open, as the
    /// service does: of the active lots, the spendable points that expire first).
    fn balance(&self, at: i64) -> LoyaltyBalance {
        let orders = self.lots.iter().filter(|lot| lot.order_id.is_some());
        let lifetime_earned = orders.clone().map(|lot| lot.points - lot.reversed).sum();
        let in_window = orders
            .filter(|lot| self.rules.in_tier_window(lot.earned_at, at))
            .map(|lot| lot.points - lot.reversed)
            .sum();
        let holding: Vec<&Lot> = self
            .lots
            .iter()
            .filter(|lot| lot.activates_at.is_none() && lot.remaining > 0 && !lot.expired)
            .collect();
        let next_expiry = holding.iter().map(|lot| lot.expires_at).min().map(|first| NextExpiry {
            points: holding.iter().filter(|lot| lot.expires_at == first).map(|lot| lot.remaining).sum(),
            at: millis(first),
        });
        LoyaltyBalance {
            customer_id: self.customer_id.to_owned(),
            active: self.active(),
            pending: self.pending(),
            spent: self.spent,
            expired: self.expired,
            lifetime_earned,
            tier: self.rules.tier(in_window),
            next_expiry,
            updated_at: millis(at),
            version: self.version,
        }
    }

    fn write_balance(&mut self, balance: LoyaltyBalance, out: &mut Expected) {
        out.balance = Some(balance.clone());
        out.balances_written += 1;
        self.last_balance = Some(balance);
    }

    fn entry(&self, kind: LedgerEntryKind, entry_id: &str, cause: &str) -> EntryDraft {
        EntryDraft {
            entry: LoyaltyLedgerEntry {
                entry_id: entry_id.to_owned(),
                customer_id: self.customer_id.to_owned(),
                kind,
                points: 0,
                balance_after: BalanceAfter { active: 0, pending: 0 },
                reason: None,
                cause_event_id: cause.to_owned(),
                order_id: None,
                channel: None,
                negative_balance: false,
                occurred_at: DateTime::default(),
                redemption_id: None,
                reason_detail: None,
            },
        }
    }
}

/// A ledger entry being filled in; [`EntryDraft::build`] stamps the balance after it.
struct EntryDraft {
    entry: LoyaltyLedgerEntry,
}

impl EntryDraft {
    fn points(mut self, points: i64) -> Self {
        self.entry.points = points;
        self
    }
    fn order(mut self, order_id: Option<String>) -> Self {
        self.entry.order_id = order_id;
        self
    }
    fn channel(mut self, channel: Channel) -> Self {
        self.entry.channel = Some(channel);
        self
    }
    fn reason(mut self, reason: &str) -> Self {
        self.entry.reason = Some(reason.to_owned());
        self
    }
    fn detail(mut self, detail: String) -> Self {
        self.entry.reason_detail = Some(detail);
        self
    }
    fn redemption(mut self, redemption_id: &str) -> Self {
        self.entry.redemption_id = Some(redemption_id.to_owned());
        self
    }
    fn at(mut self, at: i64) -> Self {
        self.entry.occurred_at = millis(at);
        self
    }
    /// SPEC: "Every ledger entry: ... balance after"; "the balance may go negative and the entry
    /// says so" (**Decision**: `negative_balance` is whether active is below zero after it).
    fn build(mut self, timeline: &Timeline<'_>) -> LoyaltyLedgerEntry {
        let active = timeline.active();
        self.entry.balance_after = BalanceAfter { active, pending: timeline.pending() };
        self.entry.negative_balance = active < 0;
        self.entry
    }
}

fn millis(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at).unwrap_or_default()
}

/// Every kind of ledger entry the model writes (for coverage checks in tests).
pub fn kinds(expected: &Expected) -> BTreeSet<&'static str> {
    expected
        .ledger
        .iter()
        .map(|entry| match entry.kind {
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
        })
        .collect()
}
