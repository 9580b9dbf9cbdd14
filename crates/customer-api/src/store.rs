//! The materialized view: per customer, the latest record of each derived topic (as JSON, ready to
//! serve) and the most recent ledger entries. Tombstones remove records; a customer with no record
//! left is gone.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use omnistream_model::codec::decode_value;
use omnistream_model::records::{ChannelAffinity, CustomerIdentity, SuppressionState};
use omnistream_model::{RecordKind, value_to_json};
use rustc_hash::{FxBuildHasher, FxHashMap};

/// The derived topics the API reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Profiles,
    Suppressions,
    ChannelAffinity,
    Balances,
    Ledger,
    /// identity-resolver's record of the id: its identifiers and merges, or its winner.
    Identity,
    /// journeys' record of the customer's journeys: entries, steps, last exits.
    Journeys,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Profiles,
        Source::Suppressions,
        Source::ChannelAffinity,
        Source::Balances,
        Source::Ledger,
        Source::Identity,
        Source::Journeys,
    ];

    fn kind(self) -> RecordKind {
        match self {
            Source::Profiles => RecordKind::CustomerProfile,
            Source::Suppressions => RecordKind::SuppressionState,
            Source::ChannelAffinity => RecordKind::ChannelAffinity,
            Source::Balances => RecordKind::LoyaltyBalance,
            Source::Ledger => RecordKind::LoyaltyLedgerEntry,
            Source::Identity => RecordKind::CustomerIdentity,
            Source::Journeys => RecordKind::CustomerJourneyState,
        }
    }
}

/// One record, decoded once when it arrives.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The record as JSON (timestamps RFC 3339, enums as symbols).
    pub json: Arc<str>,
    /// The typed forms reachability needs.
    pub suppression: Option<Arc<SuppressionState>>,
    pub affinity: Option<Arc<ChannelAffinity>>,
    pub identity: Option<Arc<CustomerIdentity>>,
    /// A ledger `erase` entry: what came before it is forgotten.
    pub erases: bool,
}

/// Decodes Avro single-object bytes from `source`'s topic.
pub fn decode(source: Source, bytes: &[u8]) -> Result<Decoded, String> {
    let value = decode_value(source.kind(), bytes).map_err(|e| e.to_string())?;
    let json = value_to_json(&value);
    let erases = source == Source::Ledger && json.get("kind").and_then(|k| k.as_str()) == Some("erase");
    let typed_error = |e: apache_avro::Error| e.to_string();
    Ok(Decoded {
        suppression: match source {
            Source::Suppressions => Some(Arc::new(apache_avro::from_value(&value).map_err(typed_error)?)),
            _ => None,
        },
        affinity: match source {
            Source::ChannelAffinity => Some(Arc::new(apache_avro::from_value(&value).map_err(typed_error)?)),
            _ => None,
        },
        identity: match source {
            Source::Identity => Some(Arc::new(apache_avro::from_value(&value).map_err(typed_error)?)),
            _ => None,
        },
        json: Arc::from(json.to_string()),
        erases,
    })
}

/// What the API knows of one customer. Cloning is cheap (shared pointers).
#[derive(Debug, Clone, Default)]
pub struct CustomerView {
    pub profile: Option<Arc<str>>,
    pub suppression: Option<(Arc<str>, Arc<SuppressionState>)>,
    pub affinity: Option<(Arc<str>, Arc<ChannelAffinity>)>,
    pub balance: Option<Arc<str>>,
    /// What identity resolution knows of the id (`merged_into`: an alias of another customer).
    pub identity: Option<(Arc<str>, Arc<CustomerIdentity>)>,
    /// Newest last.
    pub ledger: VecDeque<Arc<str>>,
    /// The journeys the customer is in, and their last exits.
    pub journeys: Option<Arc<str>>,
}

impl CustomerView {
    /// Known: some service holds a current record of them. Ledger entries alone do not make a
    /// customer known (after an erasure only the `erase` entry remains), nor does an identity
    /// record (an alias holds nothing else).
    pub fn is_known(&self) -> bool {
        self.profile.is_some()
            || self.suppression.is_some()
            || self.affinity.is_some()
            || self.balance.is_some()
    }

    /// When the customer was erased, if the newest ledger entry says so.
    pub fn erased_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let newest: serde_json::Value = serde_json::from_str(self.ledger.back()?).ok()?;
        if newest.get("kind")?.as_str()? != "erase" {
            return None;
        }
        newest.get("occurred_at")?.as_str()?.parse().ok()
    }

    /// Applies one record of `source`; `None` is a tombstone.
    pub fn apply(&mut self, source: Source, record: Option<Decoded>, ledger_entries: usize) {
        match source {
            Source::Profiles => self.profile = record.map(|r| r.json),
            Source::Suppressions => self.suppression = record.and_then(|r| Some((r.json, r.suppression?))),
            Source::ChannelAffinity => self.affinity = record.and_then(|r| Some((r.json, r.affinity?))),
            Source::Balances => self.balance = record.map(|r| r.json),
            Source::Identity => self.identity = record.and_then(|r| Some((r.json, r.identity?))),
            Source::Journeys => self.journeys = record.map(|r| r.json),
            Source::Ledger => {
                // The ledger is not compacted: a null value carries nothing to apply.
                let Some(record) = record else { return };
                if record.erases {
                    self.ledger.clear();
                }
                self.ledger.push_back(record.json);
                while self.ledger.len() > ledger_entries {
                    self.ledger.pop_front();
                }
            }
        }
    }
}

const SHARDS: usize = 16;

/// The longest chain of merges an alias is followed through.
pub const MAX_MERGE_CHAIN: usize = 64;

/// Every customer, sharded so that lookups rarely wait for the writers.
#[derive(Debug)]
pub struct Store {
    shards: Vec<RwLock<FxHashMap<String, CustomerView>>>,
    ledger_entries: usize,
}

impl Store {
    pub fn new(ledger_entries: usize) -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::default()).collect(), ledger_entries }
    }

    fn shard(&self, customer_id: &str) -> &RwLock<FxHashMap<String, CustomerView>> {
        &self.shards[(FxBuildHasher.hash_one(customer_id) as usize) % SHARDS]
    }

    /// Applies one record; a tombstone that leaves nothing known removes the customer.
    pub fn apply(&self, source: Source, customer_id: &str, record: Option<Decoded>) {
        let tombstone = record.is_none();
        let mut shard = self.shard(customer_id).write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match shard.get_mut(customer_id) {
            Some(view) => {
                view.apply(source, record, self.ledger_entries);
                // Ledger entries may arrive before the balance does: only a tombstone removes.
                // An erased customer's `erase` entry stays, whatever order the topics' tombstones
                // come in: reachability answers `erased` from it (SPEC 4.5).
                if tombstone && !view.is_known() && view.identity.is_none() && view.erased_at().is_none() {
                    shard.remove(customer_id);
                }
            }
            None if record.is_some() => {
                let mut view = CustomerView::default();
                view.apply(source, record, self.ledger_entries);
                shard.insert(customer_id.to_owned(), view);
            }
            None => {}
        }
    }

    /// A known customer's view.
    pub fn get(&self, customer_id: &str) -> Option<CustomerView> {
        let shard = self.shard(customer_id).read().unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.get(customer_id).cloned()
    }

    /// The customer an id stands for: itself, or, for an id merged into another (an alias), the
    /// end of its chain of merges, with that customer's view.
    pub fn canonical(&self, customer_id: &str) -> Option<(String, CustomerView)> {
        let mut id = customer_id.to_owned();
        let mut view = self.get(&id)?;
        // A chain is as long as the merges one customer went through; the bound only guards
        // against a cycle the resolver never writes.
        for _ in 0..MAX_MERGE_CHAIN {
            let Some(winner) = view.identity.as_ref().and_then(|(_, identity)| identity.merged_into.clone())
            else {
                return Some((id, view));
            };
            view = self.get(&winner).unwrap_or_default();
            id = winner;
        }
        None
    }

    /// Customers held (known or with ledger entries only).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Option<Decoded> {
        Some(Decoded {
            json: Arc::from(json),
            suppression: None,
            affinity: None,
            identity: None,
            erases: json.contains("erase"),
        })
    }

    #[test]
    fn records_replace_and_tombstones_remove() {
        let store = Store::new(2);
        store.apply(Source::Profiles, "c-1", record("{\"v\":1}"));
        store.apply(Source::Profiles, "c-1", record("{\"v\":2}"));
        store.apply(Source::Balances, "c-1", record("{\"active\":5}"));
        let view = store.get("c-1").unwrap();
        assert_eq!(view.profile.as_deref(), Some("{\"v\":2}"));
        assert!(view.is_known());

        store.apply(Source::Profiles, "c-1", None);
        assert!(store.get("c-1").unwrap().is_known(), "the balance is still there");
        store.apply(Source::Balances, "c-1", None);
        assert!(store.get("c-1").is_none());
        // A tombstone for someone unknown changes nothing.
        store.apply(Source::Profiles, "c-2", None);
        assert!(store.is_empty());
    }

    #[test]
    fn the_ledger_keeps_the_latest_entries_and_an_erasure_forgets_the_rest() {
        let store = Store::new(2);
        for entry in ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"] {
            store.apply(Source::Ledger, "c-1", record(entry));
        }
        let view = store.get("c-1").unwrap();
        assert_eq!(view.ledger.iter().map(|e| &**e).collect::<Vec<_>>(), ["{\"n\":2}", "{\"n\":3}"]);
        assert!(!view.is_known(), "ledger entries alone do not make a customer known");

        store.apply(Source::Balances, "c-1", record("{\"active\":5}"));
        let erase = "{\"kind\":\"erase\",\"occurred_at\":\"2026-12-01T10:00:00.000Z\"}";
        store.apply(Source::Ledger, "c-1", record(erase));
        store.apply(Source::Balances, "c-1", None);
        let view = store.get("c-1").expect("an erased customer's erase entry stays");
        assert!(!view.is_known());
        assert_eq!(view.erased_at(), Some("2026-12-01T10:00:00Z".parse().unwrap()));
    }

    /// The topics are read apart: the `erase` entry may come before another topic's tombstone,
    /// which must not take it away (reachability answers `erased` from it).
    #[test]
    fn a_tombstone_after_the_erase_entry_keeps_the_erasure() {
        let store = Store::new(2);
        store.apply(Source::Profiles, "c-1", record("{\"v\":1}"));
        let erase = "{\"kind\":\"erase\",\"occurred_at\":\"2026-12-01T10:00:00.000Z\"}";
        store.apply(Source::Ledger, "c-1", record(erase));
        store.apply(Source::Profiles, "c-1", None);
        assert!(store.get("c-1").is_some_and(|view| view.erased_at().is_some()));
    }
}
