//! The corrections of points state version 1 expired early (360 days after the order instead of
//! 12 calendar months): dates worked out by hand.

use chrono::{DateTime, TimeZone, Utc};
use omnistream_loyalty_points::LoyaltyRules;
use omnistream_loyalty_points::corrections::{Correction, EXPIRY_RULE_CHANGE, expiry_corrections};
use omnistream_model::records::{BalanceAfter, LedgerEntryKind, LoyaltyLedgerEntry};

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
}

fn entry(
    customer: &str,
    id: &str,
    kind: LedgerEntryKind,
    points: i64,
    when: DateTime<Utc>,
) -> LoyaltyLedgerEntry {
    LoyaltyLedgerEntry {
        entry_id: id.to_owned(),
        customer_id: customer.to_owned(),
        kind,
        points,
        balance_after: BalanceAfter { active: 0, pending: 0 },
        reason: None,
        cause_event_id: id.split('/').next().unwrap().to_owned(),
        order_id: None,
        channel: None,
        negative_balance: false,
        occurred_at: when,
        redemption_id: None,
        reason_detail: None,
    }
}

/// A version 1 ledger (entry ids `<event_id>/<kind>`): an order of 31 January 2025 whose 70 points
/// left expired 360 days later, on 26 January 2026, five days before 31 January 2026.
fn early(customer: &str) -> Vec<LoyaltyLedgerEntry> {
    vec![
        entry(customer, "e1/earn", LedgerEntryKind::Earn, 100, at(2025, 1, 31)),
        entry(customer, "e1/earn/activate", LedgerEntryKind::Activate, 100, at(2025, 2, 14)),
        entry(customer, "e2/redeem", LedgerEntryKind::Redeem, -30, at(2025, 6, 1)),
        entry(customer, "e1/earn/expire", LedgerEntryKind::Expire, -70, at(2026, 1, 26)),
    ]
}

#[test]
fn points_expired_before_their_calendar_date_are_given_back() {
    let corrections = expiry_corrections(&early("c-1"), &LoyaltyRules::default());
    assert_eq!(
        corrections,
        vec![Correction {
            customer_id: "c-1".into(),
            event_id: "expiry-correction:e1/earn/expire".into(),
            points: 70,
            expired_at: at(2026, 1, 26).timestamp_millis(),
            calendar_expiry: at(2026, 1, 31).timestamp_millis(),
        }]
    );
}

#[test]
fn a_leap_day_order_is_due_on_28_february_and_an_expiry_on_the_calendar_date_needs_nothing() {
    // 29 February 2028 + 360 days = 23 February 2029; the calendar date is 28 February 2029.
    let mut ledger = vec![
        entry("c-2", "c-2/o1/earn", LedgerEntryKind::Earn, 40, at(2028, 2, 29)),
        entry("c-2", "c-2/o1/earn/expire", LedgerEntryKind::Expire, -40, at(2029, 2, 23)),
    ];
    // Expired by the calendar rule already: nothing to correct.
    ledger.push(entry("c-2", "c-2/o2/earn", LedgerEntryKind::Earn, 15, at(2027, 3, 31)));
    ledger.push(entry("c-2", "c-2/o2/earn/expire", LedgerEntryKind::Expire, -15, at(2028, 3, 31)));
    let corrections = expiry_corrections(&ledger, &LoyaltyRules::default());
    assert_eq!(corrections.len(), 1);
    assert_eq!(corrections[0].points, 40);
    assert_eq!(corrections[0].calendar_expiry, at(2029, 2, 28).timestamp_millis());
}

#[test]
fn a_correction_already_in_the_ledger_is_not_proposed_again() {
    let mut ledger = early("c-1");
    let mut adjust =
        entry("c-1", "expiry-correction:e1/earn/expire/adjust", LedgerEntryKind::Adjust, 70, at(2026, 12, 2));
    adjust.cause_event_id = "expiry-correction:e1/earn/expire".into();
    adjust.reason = Some(EXPIRY_RULE_CHANGE.into());
    ledger.push(adjust);
    assert_eq!(expiry_corrections(&ledger, &LoyaltyRules::default()), vec![]);
}

#[test]
fn an_erased_customer_is_left_alone() {
    let mut ledger = early("c-1");
    ledger.push(entry("c-1", "e9/erase", LedgerEntryKind::Erase, 0, at(2026, 3, 1)));
    assert_eq!(expiry_corrections(&ledger, &LoyaltyRules::default()), vec![]);
}
