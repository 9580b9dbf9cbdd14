//! loyalty-points' rules (SPEC 4.4): given/when/then tables and properties over the pure core.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use omnistream_loyalty_points::{
    BALANCES_OUTPUT, LEDGER_OUTPUT, LoyaltyPoints, LoyaltyRecord, LoyaltyRules, LoyaltyState,
};
use omnistream_model::records::{LedgerEntryKind, LoyaltyBalance, LoyaltyLedgerEntry};
use omnistream_model::{Channel, EventPayload, TouchpointEvent};
use omnistream_runtime::{Output, Processor};
use omnistream_testkit::temp_file;
use proptest::prelude::*;

use LedgerEntryKind::{Activate, Adjust, Earn, Expire, Redeem, Reject, Reverse};

fn t(days: f64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + Duration::milliseconds((days * 86_400_000.0) as i64)
}

fn order(id: &str, value_minor: i64) -> EventPayload {
    EventPayload::OrderPlaced { order_id: id.into(), value_minor, currency: "EUR".into(), items: None }
}
fn refund(id: &str, value_minor: i64) -> EventPayload {
    EventPayload::OrderRefunded { order_id: id.into(), value_minor, currency: "EUR".into() }
}
fn redeem(id: &str, points: i64) -> EventPayload {
    EventPayload::LoyaltyRedeemRequested { redemption_id: id.into(), points }
}
fn adjust(points: i64) -> EventPayload {
    EventPayload::LoyaltyPointsAdjusted { points, reason: "goodwill".into() }
}
fn page() -> EventPayload {
    EventPayload::PageViewed { url: "/".into() }
}

/// A customer's ledger and balances as the service publishes them.
struct Run {
    processor: LoyaltyPoints,
    state: Option<LoyaltyState>,
    ledger: Vec<LoyaltyLedgerEntry>,
    balance: Option<LoyaltyBalance>,
    n: usize,
}

impl Run {
    fn new(rules: LoyaltyRules) -> Self {
        Self { processor: LoyaltyPoints::new(rules), state: None, ledger: Vec::new(), balance: None, n: 0 }
    }

    fn take(&mut self, outputs: Vec<Output<LoyaltyRecord>>) -> Vec<LoyaltyLedgerEntry> {
        let mut entries = Vec::new();
        for output in outputs {
            match (output.role, output.value) {
                (BALANCES_OUTPUT, None) => self.balance = None,
                (LEDGER_OUTPUT, Some(LoyaltyRecord::Ledger(entry))) => entries.push(entry),
                (BALANCES_OUTPUT, Some(LoyaltyRecord::Balance(balance))) => self.balance = Some(balance),
                (role, value) => panic!("unexpected output {role}: {value:?}"),
            }
        }
        self.ledger.extend(entries.iter().cloned());
        entries
    }

    fn when(
        &mut self,
        at: DateTime<Utc>,
        channel: Channel,
        payload: EventPayload,
    ) -> Vec<LoyaltyLedgerEntry> {
        // It arrives as it happens: the partition clock reads its time.
        self.arrives(at, at, channel, payload)
    }

    /// An event dated `occurred_at` that reaches the service at `arrives` (the partition clock).
    fn arrives(
        &mut self,
        arrives: DateTime<Utc>,
        occurred_at: DateTime<Utc>,
        channel: Channel,
        payload: EventPayload,
    ) -> Vec<LoyaltyLedgerEntry> {
        self.n += 1;
        let event = TouchpointEvent {
            event_id: format!("e-{}", self.n),
            customer_id: "c-1".into(),
            occurred_at,
            channel,
            source: None,
            payload,
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        let outputs = self.processor.apply(&mut self.state, &event, arrives);
        self.take(outputs)
    }

    fn timer(&mut self, now: DateTime<Utc>) -> Vec<LoyaltyLedgerEntry> {
        let outputs = self.processor.on_timer(&mut self.state, "c-1", now);
        self.take(outputs)
    }

    fn balance(&self) -> &LoyaltyBalance {
        self.balance.as_ref().unwrap()
    }

    fn active_pending(&self) -> (i64, i64) {
        (self.balance().active, self.balance().pending)
    }
}

fn kinds(entries: &[LoyaltyLedgerEntry]) -> Vec<(LedgerEntryKind, i64)> {
    entries.iter().map(|e| (e.kind, e.points)).collect()
}

#[test]
fn an_order_earns_pending_points_that_activate_after_the_return_window_by_timer() {
    let mut run = Run::new(LoyaltyRules::default());
    let earned = run.when(t(0.0), Channel::Store, order("o-1", 12_999));
    assert_eq!(kinds(&earned), vec![(Earn, 129)], "1 point per euro, rounded down");
    assert_eq!(earned[0].entry_id, "c-1/e-1/earn");
    assert_eq!(earned[0].order_id.as_deref(), Some("o-1"));
    assert_eq!(run.active_pending(), (0, 129));
    let processor = run.processor.clone();
    assert_eq!(processor.next_timer(run.state.as_ref().unwrap()), Some(t(14.0)));
    let activated = run.timer(t(14.0) + Duration::seconds(30));
    assert_eq!(kinds(&activated), vec![(Activate, 129)]);
    assert_eq!(activated[0].entry_id, "c-1/e-1/earn/activate");
    assert_eq!(activated[0].occurred_at, t(14.0), "dated when it fell due");
    assert_eq!(run.active_pending(), (129, 0));
    assert_eq!(
        run.balance().next_expiry.map(|n| (n.points, n.at)),
        Some((129, t(365.0))),
        "12 calendar months: 2027-01-01"
    );
}

#[test]
fn rates_multipliers_and_minor_units() {
    let rules = LoyaltyRules {
        channel_multipliers: BTreeMap::from([(Channel::Store, 2.0)]),
        points_per_unit: BTreeMap::from([("USD".into(), 1.5)]),
        ..LoyaltyRules::default()
    };
    // given an order (channel, value, currency), then points earned
    let cases = [
        (Channel::Store, 10_050, "EUR", 201),
        (Channel::Web, 10_050, "EUR", 100),
        (Channel::Web, 1_000, "USD", 15),
        (Channel::Web, 1_000, "JPY", 1_000),
        (Channel::Web, 1_000, "KWD", 1),
        (Channel::Web, 99, "EUR", 0),
    ];
    for (channel, value_minor, currency, points) in cases {
        let mut run = Run::new(rules.clone());
        let earned = run.when(
            t(0.0),
            channel,
            EventPayload::OrderPlaced {
                order_id: "o".into(),
                value_minor,
                currency: currency.into(),
                items: None,
            },
        );
        assert_eq!(
            earned.iter().map(|e| e.points).sum::<i64>(),
            points,
            "{channel} {value_minor} {currency}"
        );
    }
}

#[test]
fn an_order_older_than_the_return_window_is_active_at_once() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(30.0), Channel::Web, page());
    let entries = run.when(t(0.0), Channel::Store, order("o-old", 5_000));
    assert_eq!(kinds(&entries), vec![(Earn, 50), (Activate, 50)]);
    assert_eq!(run.active_pending(), (50, 0));
}

#[test]
fn redemptions_spend_active_points_only_and_are_rejected_with_a_reason_otherwise() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 20_000));
    let rejected = run.when(t(1.0), Channel::Web, redeem("r-1", 50));
    assert_eq!(rejected[0].kind, Reject, "pending points cannot be spent");
    // SPEC 4.4: the reason is exactly the code, the business key a field of its own.
    assert_eq!(rejected[0].reason.as_deref(), Some("insufficient_points"));
    assert_eq!(rejected[0].redemption_id.as_deref(), Some("r-1"));
    assert_eq!(rejected[0].reason_detail.as_deref(), Some("50 points requested, 0 active"));
    run.timer(t(14.5));
    let redeemed = run.when(t(15.0), Channel::Web, redeem("r-2", 150));
    assert_eq!(kinds(&redeemed), vec![(Redeem, -150)]);
    assert_eq!((redeemed[0].redemption_id.as_deref(), redeemed[0].reason.as_deref()), (Some("r-2"), None));
    assert_eq!(redeemed[0].balance_after.active, 50);
    let rejected = run.when(t(15.0), Channel::MobileApp, redeem("r-3", 51));
    assert_eq!((rejected[0].kind, rejected[0].balance_after.active), (Reject, 50), "never overdrawn");
    assert_eq!(run.balance().spent, 150);
    // The same redemption retried under another event id spends once.
    let retried = run.when(t(15.0), Channel::Web, redeem("r-2", 150));
    assert!(retried.is_empty());
    assert_eq!(run.active_pending(), (50, 0));
}

#[test]
fn the_points_that_expire_first_are_spent_first_and_expiry_takes_the_rest() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-a", 10_000));
    run.when(t(10.0), Channel::Web, order("o-b", 10_000));
    run.timer(t(30.0));
    assert_eq!(run.active_pending(), (200, 0));
    run.when(t(31.0), Channel::Web, redeem("r", 120));
    // o-a (expires 2027-01-01, day 365) gave 100, o-b (2027-01-11, day 375) 20.
    let expired = run.timer(t(365.5));
    assert_eq!(kinds(&expired), vec![]);
    let expired = run.timer(t(375.5));
    assert_eq!(kinds(&expired), vec![(Expire, -80)]);
    assert_eq!(expired[0].entry_id, "c-1/e-2/earn/expire");
    assert_eq!((run.balance().active, run.balance().expired), (0, 80));
}

#[test]
fn a_refund_takes_back_what_its_order_earned_pending_first_then_active_then_as_debt() {
    // Pending: simply removed.
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 10_000));
    let reversed = run.when(t(1.0), Channel::Store, refund("o-1", 10_000));
    assert_eq!(kinds(&reversed), vec![(Reverse, -100)]);
    assert_eq!(run.active_pending(), (0, 0));
    assert_eq!(run.balance().lifetime_earned, 0);

    // Partly refunded: its share.
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 10_000));
    assert_eq!(kinds(&run.when(t(1.0), Channel::Store, refund("o-1", 4_000))), vec![(Reverse, -40)]);
    assert_eq!(
        kinds(&run.when(t(2.0), Channel::Store, refund("o-1", 10_000))),
        vec![(Reverse, -60)],
        "never more than it earned"
    );
    assert!(run.when(t(3.0), Channel::Store, refund("o-1", 10_000)).is_empty());

    // Already spent: the balance goes negative and the entry says so; later points repay it.
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 10_000));
    run.timer(t(14.1));
    run.when(t(15.0), Channel::Web, redeem("r", 80));
    let reversed = run.when(t(16.0), Channel::Store, refund("o-1", 10_000));
    assert_eq!(kinds(&reversed), vec![(Reverse, -100)]);
    assert!(reversed[0].negative_balance);
    assert_eq!(run.active_pending(), (-80, 0));
    let rejected = run.when(t(16.0), Channel::Web, redeem("r-2", 1));
    assert_eq!(rejected[0].kind, Reject);
    run.when(t(17.0), Channel::Web, adjust(100));
    assert_eq!(run.active_pending(), (20, 0));

    // A refund of an order nobody earned for writes nothing.
    assert!(Run::new(LoyaltyRules::default()).when(t(0.0), Channel::Web, refund("o-x", 100)).is_empty());
}

#[test]
fn manual_adjustments_carry_their_reason() {
    let mut run = Run::new(LoyaltyRules::default());
    let added = run.when(t(0.0), Channel::CallCenter, adjust(500));
    assert_eq!(kinds(&added), vec![(Adjust, 500)]);
    assert_eq!(added[0].reason.as_deref(), Some("goodwill"));
    assert_eq!(run.active_pending(), (500, 0), "adjusted points are active at once");
    let removed = run.when(t(1.0), Channel::CallCenter, adjust(-600));
    assert_eq!(kinds(&removed), vec![(Adjust, -600)]);
    assert!(removed[0].negative_balance);
}

#[test]
fn tiers_follow_the_points_earned_over_the_last_twelve_months() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 60_000));
    assert_eq!(run.balance().tier, "silver");
    run.when(t(100.0), Channel::Store, order("o-2", 150_000));
    assert_eq!(run.balance().tier, "gold");
    run.when(t(364.9), Channel::Web, page());
    assert_eq!(run.balance().tier, "gold", "o-1 earned 2026-01-01 12:00 counts until 2027-01-01 12:00");
    run.when(t(365.0), Channel::Web, page());
    assert_eq!(run.balance().tier, "silver", "o-1 left the window");
    run.when(t(470.0), Channel::Web, page());
    assert_eq!(run.balance().tier, "bronze");
    assert_eq!(run.balance().lifetime_earned, 2_100);
}

#[test]
fn erasure_leaves_only_an_entry_saying_it_happened() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 10_000));
    let erased = run.when(t(1.0), Channel::Web, EventPayload::ErasureRequested);
    assert_eq!(kinds(&erased), vec![(LedgerEntryKind::Erase, 0)]);
    assert!(run.balance.is_none(), "balance tombstone");
    assert!(run.state.is_none());
}

#[test]
fn rules_files_and_their_checks() {
    let file = temp_file(
        "loyalty-rules",
        "toml",
        "return_window_days = 30\n[channel_multipliers]\nstore = 2.0\n[points_per_unit]\nUSD = 1.5\n",
    );
    let rules = LoyaltyRules::from_file(&file).unwrap();
    assert_eq!(rules.return_window_days, 30);
    assert_eq!(rules.channel_multipliers.get(&Channel::Store), Some(&2.0));
    assert_eq!(rules.expiry_months, 12, "left out: the default");
    for (bad, mentions) in [
        ("expiry_months = 0", "expiry"),
        ("[[tiers]]\nname = \"gold\"\nmin_points = 10", "first tier"),
        ("[channel_multipliers]\npigeon = 2.0", "pigeon"),
        ("default_points_per_unit = -1", "negative"),
        ("bonus = 1", "bonus"),
        ("return_window_days = 400", "expire before"),
    ] {
        let file = temp_file("loyalty-rules", "toml", bad);
        let error = LoyaltyRules::from_file(&file).unwrap_err().to_string();
        assert!(error.contains(mentions), "{bad:?} gave {error}");
        std::fs::remove_file(file).ok();
    }
    std::fs::remove_file(file).ok();
}

/// One step of a random history: an event or time passing.
#[derive(Debug, Clone)]
enum Step {
    Order(u8, i64),
    Redeem(u8, i64),
    Refund(u8, i64),
    Adjust(i64),
    Wait(f64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..6u8, 100..50_000i64).prop_map(|(o, v)| Step::Order(o, v)),
        (0..4u8, 1..400i64).prop_map(|(r, p)| Step::Redeem(r, p)),
        (0..6u8, 100..50_000i64).prop_map(|(o, v)| Step::Refund(o, v)),
        prop_oneof![1..300i64, -300..-1i64].prop_map(Step::Adjust),
        (0.0..60.0f64).prop_map(Step::Wait),
    ]
}

/// Runs a history; returns every entry and the balance after each call, in order.
fn replay(steps: &[Step]) -> (Vec<LoyaltyLedgerEntry>, Run) {
    let mut run = Run::new(LoyaltyRules::default());
    let mut day = 0.0;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Order(o, v) => drop(run.when(t(day), Channel::Store, order(&format!("o-{o}"), *v))),
            Step::Redeem(r, p) => drop(run.when(t(day), Channel::Web, redeem(&format!("r-{i}-{r}"), *p))),
            Step::Refund(o, v) => drop(run.when(t(day), Channel::Store, refund(&format!("o-{o}"), *v))),
            Step::Adjust(p) => drop(run.when(t(day), Channel::CallCenter, adjust(*p))),
            Step::Wait(days) => {
                day += days;
                if run.state.is_some() {
                    run.timer(t(day));
                }
            }
        }
    }
    (run.ledger.clone(), run)
}

proptest! {
    #[test]
    fn the_ledger_adds_up_to_the_balance_and_never_overdraws(steps in prop::collection::vec(step(), 1..60)) {
        let (ledger, run) = replay(&steps);
        let (mut active, mut pending) = (0i64, 0i64);
        for entry in &ledger {
            let after = entry.balance_after;
            let moved = (after.active + after.pending) - (active + pending);
            match entry.kind {
                Activate => {
                    prop_assert_eq!(moved, 0, "activation moves pending to active: {:?}", entry);
                    prop_assert_eq!(after.pending, pending - entry.points);
                }
                Reject => prop_assert_eq!((after.active, after.pending), (active, pending), "a rejection changes nothing"),
                _ => prop_assert_eq!(moved, entry.points, "{:?}", entry),
            }
            if entry.kind == Redeem {
                prop_assert!(active >= -entry.points, "redeemed {} with {} active", -entry.points, active);
            }
            if after.active < 0 && active >= 0 {
                prop_assert!(matches!(entry.kind, Reverse | Adjust), "{:?} made the balance negative", entry.kind);
            }
            prop_assert_eq!(entry.negative_balance, after.active < 0);
            active = after.active;
            pending = after.pending;
        }
        if let Some(balance) = &run.balance {
            prop_assert_eq!((balance.active, balance.pending), (active, pending));
            let earned: i64 = ledger.iter().filter(|e| e.kind == Earn).map(|e| e.points).sum();
            let reversed: i64 = ledger.iter().filter(|e| e.kind == Reverse).map(|e| -e.points).sum();
            prop_assert_eq!(balance.lifetime_earned, earned - reversed);
        }
    }

    #[test]
    fn replaying_the_same_input_gives_an_identical_ledger(steps in prop::collection::vec(step(), 1..40)) {
        let (first, _) = replay(&steps);
        let (second, _) = replay(&steps);
        prop_assert_eq!(&first, &second);
        let mut ids: Vec<&str> = first.iter().map(|e| e.entry_id.as_str()).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        prop_assert_eq!(before, ids.len(), "entry ids are unique");
    }
}

#[test]
fn the_example_rules_file_states_the_defaults() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/loyalty-rules.example.toml");
    assert_eq!(LoyaltyRules::from_file(&example).unwrap(), LoyaltyRules::default());
}

#[test]
fn a_refund_debt_is_paid_from_the_active_points_left_before_they_can_expire() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-a", 10_000));
    run.when(t(1.0), Channel::Store, order("o-b", 5_000));
    run.timer(t(20.0));
    run.when(t(21.0), Channel::Web, redeem("r", 120));
    run.when(t(22.0), Channel::Store, refund("o-a", 10_000));
    assert_eq!(run.active_pending(), (-70, 0));
    run.timer(t(400.0));
    assert_eq!(
        (run.balance().active, run.balance().expired),
        (-70, 0),
        "o-b's 30 went to the debt, none expired"
    );
}

#[test]
fn a_rejected_redemption_may_be_tried_again_once_points_suffice() {
    let mut run = Run::new(LoyaltyRules::default());
    assert_eq!(run.when(t(0.0), Channel::Web, redeem("r-1", 50))[0].kind, Reject);
    run.when(t(0.0), Channel::CallCenter, adjust(100));
    assert_eq!(kinds(&run.when(t(1.0), Channel::Web, redeem("r-1", 50))), vec![(Redeem, -50)]);
}

#[test]
fn a_refund_leaves_the_tier_window_with_its_order() {
    let mut run = Run::new(LoyaltyRules::default());
    run.when(t(0.0), Channel::Store, order("o-1", 60_000));
    run.when(t(300.0), Channel::Store, refund("o-1", 30_000));
    assert_eq!(run.balance().tier, "bronze", "300 points left");
    run.when(t(200.0 + 170.0), Channel::Store, order("o-2", 60_000));
    assert_eq!(run.balance().tier, "silver", "o-1 and its refund have both left the window");
}

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

/// SPEC 4, arrival order vs event time: a refund that arrives before its order is kept and
/// applied when the order comes, so the ledger nets as in event-time order.
#[test]
fn a_refund_that_arrives_before_its_order_still_takes_back_its_points() {
    let mut run = Run::new(LoyaltyRules::default());
    assert!(run.arrives(t(0.1), t(0.05), Channel::Web, refund("o-1", 10_000)).is_empty());
    let entries = run.arrives(t(0.2), t(0.0), Channel::Store, order("o-1", 10_000));
    assert_eq!(kinds(&entries), vec![(Earn, 100), (Reverse, -100)]);
    assert_eq!(entries[1].entry_id, "c-1/e-1/reverse", "the refund event's own entry id");
    assert_eq!(entries[1].occurred_at, t(0.05), "dated when the refund happened");
    assert_eq!(run.active_pending(), (0, 0));
    assert_eq!(run.balance().lifetime_earned, 0);
    // Nothing is left to activate later.
    assert!(run.timer(t(20.0)).is_empty());
}

/// SPEC 4, future-dated events: an order dated 20 h ahead (clock skew) is a fact dated then; it
/// never moves the clock, so its points activate 14 days after its own date, not earlier.
#[test]
fn an_order_dated_in_the_future_activates_nothing_early() {
    let mut run = Run::new(LoyaltyRules::default());
    run.arrives(t(0.0), t(0.0) + Duration::hours(20), Channel::Store, order("o-1", 10_000));
    let processor = run.processor.clone();
    assert_eq!(
        processor.next_timer(run.state.as_ref().unwrap()),
        Some(t(14.0) + Duration::hours(20)),
        "activation 14 days after the order's own time"
    );
    assert_eq!(run.balance().updated_at, t(0.0), "the balance is as of the partition clock");
    // A redemption 14 days after arrival (but before the activation) cannot spend it.
    let rejected = run.when(t(14.0) + Duration::hours(1), Channel::Web, redeem("r-1", 50));
    assert_eq!(rejected[0].kind, Reject);
}

/// SPEC 4, months: calendar months, the last day of the month when it has no such day.
#[test]
fn points_expire_calendar_months_after_the_order() {
    let expiry = |rules: LoyaltyRules, at: DateTime<Utc>| {
        let mut run = Run::new(rules);
        run.when(at, Channel::Store, order("o", 10_000));
        run.timer(at + Duration::days(15));
        run.balance().next_expiry.map(|next| next.at)
    };
    let months = |expiry_months| LoyaltyRules { expiry_months, ..LoyaltyRules::default() };
    assert_eq!(expiry(LoyaltyRules::default(), utc(2026, 1, 31)), Some(utc(2027, 1, 31)));
    assert_eq!(expiry(months(2), utc(2026, 12, 31)), Some(utc(2027, 2, 28)), "no 31 February");
    assert_eq!(expiry(months(2), utc(2027, 12, 31)), Some(utc(2028, 2, 29)), "a leap year");
    assert_eq!(expiry(LoyaltyRules::default(), utc(2028, 2, 29)), Some(utc(2029, 2, 28)));
}

/// The tier falls when points leave the window, by timer, with no other event.
#[test]
fn the_tier_falls_by_timer_when_points_leave_the_window() {
    let mut run = Run::new(LoyaltyRules { expiry_months: 24, ..LoyaltyRules::default() });
    run.when(t(0.0), Channel::Store, order("o-1", 60_000));
    run.timer(t(15.0));
    assert_eq!(run.balance().tier, "silver");
    let processor = run.processor.clone();
    assert_eq!(processor.next_timer(run.state.as_ref().unwrap()), Some(t(365.0)));
    run.timer(t(365.0));
    assert_eq!(run.balance().tier, "bronze", "12 calendar months after the order, by timer");
    assert_eq!(processor.next_timer(run.state.as_ref().unwrap()), Some(t(730.0)), "then its expiry");
}

/// Entry ids are unique per customer and event: two customers' producers may reuse an event id
/// (here the same `e-1`), and a customer id holding `/` cannot make one pair look like another.
#[test]
fn entry_ids_are_unique_per_customer_and_event() {
    let processor = LoyaltyPoints::new(LoyaltyRules::default());
    let earn_id = |customer: &str, event_id: &str| {
        let event = TouchpointEvent {
            event_id: event_id.into(),
            customer_id: customer.into(),
            occurred_at: t(0.0),
            channel: Channel::Store,
            source: None,
            payload: order("o-1", 10_000),
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        let outputs = processor.apply(&mut None, &event, t(0.0));
        match outputs.into_iter().next().and_then(|output| output.value) {
            Some(LoyaltyRecord::Ledger(entry)) => entry.entry_id,
            other => panic!("an earn entry first, not {other:?}"),
        }
    };
    assert_ne!(earn_id("c-1", "e-1"), earn_id("c-2", "e-1"));
    assert_ne!(earn_id("a/b", "c"), earn_id("a", "b/c"));
    assert_eq!(earn_id("a/b", "c"), "a%2Fb/c/earn");
}
