//! Corrections of points that state version 1 expired early. Version 1 counted a month as 30
//! days, so a lot expired 360 days after its order, 5 or 6 days before the calendar date that
//! SPEC 4 now defines. Those lots are gone from the state, but the ledger keeps their `expire`
//! entries: this finds each one dated before its lot's calendar expiry and proposes a
//! `loyalty_points_adjusted` event giving the points back, with reason [`EXPIRY_RULE_CHANGE`].
//! The ledger itself is never rewritten. An event id derives from the `expire` entry it corrects,
//! and a correction already in the ledger (an `adjust` entry caused by that event id) is not
//! proposed again, so the procedure can be run any number of times.

use std::collections::{BTreeMap, HashMap, HashSet};

use omnistream_model::records::{LedgerEntryKind, LoyaltyLedgerEntry};

use crate::rules::LoyaltyRules;

/// The reason code of a correction's adjustment.
pub const EXPIRY_RULE_CHANGE: &str = "expiry_rule_change";

/// Points to give back to a customer for one early `expire` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub customer_id: String,
    /// The adjustment event's id: `expiry-correction:<the expire entry's id>`.
    pub event_id: String,
    pub points: i64,
    /// When the points expired, and when they should have (unix millis).
    pub expired_at: i64,
    pub calendar_expiry: i64,
}

/// The corrections `ledger` (every entry of a ledger topic, in offset order per customer) still
/// needs under `rules`. Customers erased since are left alone: their relationship ended.
pub fn expiry_corrections<'a>(
    ledger: impl IntoIterator<Item = &'a LoyaltyLedgerEntry>,
    rules: &LoyaltyRules,
) -> Vec<Correction> {
    let mut by_customer: BTreeMap<&str, Vec<&LoyaltyLedgerEntry>> = BTreeMap::new();
    for entry in ledger {
        let entries = by_customer.entry(entry.customer_id.as_str()).or_default();
        if entry.kind == LedgerEntryKind::Erase {
            entries.clear();
        } else {
            entries.push(entry);
        }
    }
    let mut corrections = Vec::new();
    for (customer_id, entries) in by_customer {
        // A lot's id is the id of the entry that created it (an earn, or a positive adjust).
        let lots: HashMap<&str, &LoyaltyLedgerEntry> = entries
            .iter()
            .filter(|e| matches!(e.kind, LedgerEntryKind::Earn | LedgerEntryKind::Adjust))
            .map(|e| (e.entry_id.as_str(), *e))
            .collect();
        let corrected: HashSet<&str> = entries
            .iter()
            .filter(|e| e.kind == LedgerEntryKind::Adjust && e.reason.as_deref() == Some(EXPIRY_RULE_CHANGE))
            .map(|e| e.cause_event_id.as_str())
            .collect();
        for expire in entries.iter().filter(|e| e.kind == LedgerEntryKind::Expire) {
            let Some(lot) = expire.entry_id.strip_suffix("/expire").and_then(|id| lots.get(id)) else {
                continue;
            };
            let expired_at = expire.occurred_at.timestamp_millis();
            let calendar_expiry = rules.expires_at(lot.occurred_at.timestamp_millis());
            let event_id = format!("expiry-correction:{}", expire.entry_id);
            if expired_at < calendar_expiry && !corrected.contains(event_id.as_str()) {
                corrections.push(Correction {
                    customer_id: customer_id.to_owned(),
                    event_id,
                    points: expire.points.abs(),
                    expired_at,
                    calendar_expiry,
                });
            }
        }
    }
    corrections
}
