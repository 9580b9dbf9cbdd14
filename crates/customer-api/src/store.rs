//! The materialized view, on local disk (redb): per customer, the latest record of each derived
//! topic and its most recent ledger entries, kept as Avro single-object bytes of the current
//! schemas and rendered per request; and, written in the same transaction, the next offset of
//! every partition read, so that a restart resumes where it stopped. The disk is a cache: a
//! deleted or outdated store is rebuilt from the topics.
//!
//! Memory stays bounded by the page cache (`--store-cache-mib`), whatever the number of
//! customers. redb rather than RocksDB (a 12-minute C++ build here) or fjall (a journal replayed
//! on open, 2 s per 330 MB): its copy-on-write B-tree opens in milliseconds.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use omnistream_model::codec::{current_header, decode_value, to_current_single_object};
use omnistream_model::records::{ChannelAffinity, CustomerIdentity, SuppressionState};
use omnistream_model::{RecordKind, value_to_json};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use rustc_hash::FxHashMap;
use tracing::{info, warn};

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

    /// Its byte in the store's keys (its place in [`Source::ALL`]).
    fn tag(self) -> u8 {
        Source::ALL.iter().position(|s| *s == self).expect("every source is listed") as u8
    }

    fn from_tag(tag: u8) -> Option<Source> {
        Source::ALL.get(usize::from(tag)).copied()
    }
}

/// (customer id, source) → the record's bytes, for every source but the ledger.
const RECORDS: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("records");
/// (customer id, offset) → a ledger entry: every entry since the customer's last `erase` (one
/// customer's entries are on one partition, so offsets order them).
const LEDGER: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("ledger");
/// (topic, partition) → the next offset to read.
const OFFSETS: TableDefinition<(&str, i32), i64> = TableDefinition::new("offsets");
/// (topic, partition) → when its reader was last at its end (milliseconds since the epoch).
const FRESH: TableDefinition<(&str, i32), i64> = TableDefinition::new("fresh");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (identifier type, normalized value, customer id): the ids identity resolution links each
/// identifier to, for finding a customer by email or phone.
const IDENTIFIERS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("identifiers");

/// What the stored bytes mean; a store written under another format is rebuilt.
const FORMAT_KEY: &str = "format";
/// Customers with at least one record (u64, little-endian).
const CUSTOMERS_KEY: &str = "customers";

/// The layout version and every current schema's fingerprint: a build with another schema
/// rebuilds rather than read records it was not written for.
fn format() -> Vec<u8> {
    let mut format = b"omnistream-customer-api-store/3".to_vec();
    for source in Source::ALL {
        format.extend_from_slice(&current_header(source.kind()));
    }
    format
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} cannot be opened: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error(transparent)]
    Commit(#[from] redb::CommitError),
    #[error(transparent)]
    Durability(#[from] redb::SetDurabilityError),
}

/// A record as the store keeps it, checked when it arrives.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Single-object bytes of the current schema.
    pub bytes: Vec<u8>,
    /// A ledger `erase` entry: what came before it is forgotten.
    pub erases: bool,
    /// An identity record's identifiers (type, normalized value).
    pub identifiers: Vec<(String, String)>,
}

/// Checks Avro bytes (single-object or Confluent) from `source`'s topic and gives them in the
/// current schema.
pub fn incoming(source: Source, bytes: &[u8]) -> Result<Incoming, String> {
    let (value, bytes) = to_current_single_object(source.kind(), bytes).map_err(|e| e.to_string())?;
    let identifiers = if source == Source::Identity { identifiers_of(&value) } else { Vec::new() };
    Ok(Incoming { bytes, erases: source == Source::Ledger && is_erase_entry(&value), identifiers })
}

/// The (type, value) of each of an identity record's `identifiers`.
fn identifiers_of(value: &Value) -> Vec<(String, String)> {
    let field = |fields: &[(String, Value)], name: &str| -> Option<String> {
        fields.iter().find(|(n, _)| n == name).and_then(|(_, v)| match v {
            Value::String(text) => Some(text.clone()),
            _ => None,
        })
    };
    let Value::Record(fields) = value else { return Vec::new() };
    let Some((_, Value::Array(items))) = fields.iter().find(|(name, _)| name == "identifiers") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Record(fields) => Some((field(fields, "type")?, field(fields, "value")?)),
            _ => None,
        })
        .collect()
}

fn is_erase_entry(value: &Value) -> bool {
    let Value::Record(fields) = value else { return false };
    fields
        .iter()
        .any(|(name, value)| name == "kind" && matches!(value, Value::Enum(_, symbol) if symbol == "erase"))
}

/// One record read from a topic, to apply.
#[derive(Debug, Clone)]
pub struct Change {
    pub source: Source,
    pub customer_id: String,
    /// Its offset on its partition.
    pub offset: i64,
    /// `None`: a tombstone.
    pub record: Option<Incoming>,
}

/// Changes to write in one transaction, and the next offset of each partition they come from.
#[derive(Debug, Default)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub positions: FxHashMap<(Arc<str>, i32), i64>,
    /// Partitions whose reader was at the end, and when (milliseconds since the epoch).
    pub at_end: FxHashMap<(Arc<str>, i32), i64>,
}

/// One record decoded for an answer.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The record as JSON (timestamps RFC 3339, enums as symbols).
    pub json: Arc<str>,
    /// The typed forms reachability needs.
    pub suppression: Option<Arc<SuppressionState>>,
    pub affinity: Option<Arc<ChannelAffinity>>,
    pub identity: Option<Arc<CustomerIdentity>>,
}

/// Decodes a stored record of `source`.
pub fn decode(source: Source, bytes: &[u8]) -> Result<Decoded, String> {
    let value = decode_value(source.kind(), bytes).map_err(|e| e.to_string())?;
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
        json: Arc::from(value_to_json(&value).to_string()),
    })
}

/// What the API knows of one customer, decoded for one answer.
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
    /// Known: some service holds a current record of them (see [`Source::makes_known`]).
    pub fn is_known(&self) -> bool {
        self.profile.is_some()
            || self.suppression.is_some()
            || self.affinity.is_some()
            || self.balance.is_some()
    }

    /// When the customer was erased, if the newest ledger entry says so.
    pub fn erased_at(&self) -> Option<DateTime<Utc>> {
        let newest: serde_json::Value = serde_json::from_str(self.ledger.back()?).ok()?;
        if newest.get("kind")?.as_str()? != "erase" {
            return None;
        }
        newest.get("occurred_at")?.as_str()?.parse().ok()
    }

    fn set(&mut self, source: Source, record: Decoded) {
        match source {
            Source::Profiles => self.profile = Some(record.json),
            Source::Suppressions => self.suppression = record.suppression.map(|s| (record.json, s)),
            Source::ChannelAffinity => self.affinity = record.affinity.map(|a| (record.json, a)),
            Source::Balances => self.balance = Some(record.json),
            Source::Identity => self.identity = record.identity.map(|i| (record.json, i)),
            Source::Journeys => self.journeys = Some(record.json),
            Source::Ledger => self.ledger.push_back(record.json),
        }
    }
}

/// A table opened for reading; `None` before the first write created it.
fn existing<T>(result: Result<T, TableError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The longest chain of merges an alias is followed through.
pub const MAX_MERGE_CHAIN: usize = 64;

/// Every customer, on disk.
pub struct Store {
    db: Database,
    ledger_entries: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("ledger_entries", &self.ledger_entries).finish_non_exhaustive()
    }
}

/// The tables a write changes.
struct Tables<'txn> {
    records: redb::Table<'txn, (&'static str, u8), &'static [u8]>,
    ledger: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    identifiers: redb::Table<'txn, (&'static str, &'static str, &'static str), ()>,
}

/// One read snapshot's tables.
struct Snapshot {
    records: redb::ReadOnlyTable<(&'static str, u8), &'static [u8]>,
    ledger: redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
}

/// How many ledger entries a view decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerDepth {
    /// None: answers that show no ledger skip decoding it.
    None,
    /// The most recent `--ledger-entries`.
    Recent,
    /// Every entry held (a subject-access export).
    All,
}

impl Store {
    /// Opens (or creates) the store at `path`, with a page cache of `cache_bytes`. A store of
    /// another format is emptied: it is rebuilt from the topics.
    pub fn open(path: &Path, cache_bytes: usize, ledger_entries: usize) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let store = Self { db, ledger_entries };
        let stored_format = store.meta(FORMAT_KEY)?;
        if stored_format.as_deref() != Some(format().as_slice()) {
            if stored_format.is_some() {
                info!(path = %path.display(), "the store was written by another build's schemas: rebuilding it");
            }
            store.reset()?;
        }
        Ok(store)
    }

    /// Empties the store: what it held is read again from the topics.
    pub fn reset(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.delete_table(RECORDS)?;
        txn.delete_table(LEDGER)?;
        txn.delete_table(OFFSETS)?;
        txn.delete_table(FRESH)?;
        txn.delete_table(META)?;
        txn.delete_table(IDENTIFIERS)?;
        txn.open_table(META)?.insert(FORMAT_KEY, format().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(table) = existing(txn.open_table(META))? else { return Ok(None) };
        Ok(table.get(key)?.map(|value| value.value().to_vec()))
    }

    /// A table of (topic, partition) → number, whole.
    fn by_partition(
        &self,
        definition: TableDefinition<(&str, i32), i64>,
    ) -> Result<FxHashMap<(String, i32), i64>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(table) = existing(txn.open_table(definition))? else { return Ok(FxHashMap::default()) };
        let mut values = FxHashMap::default();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let (topic, partition) = key.value();
            values.insert((topic.to_owned(), partition), value.value());
        }
        Ok(values)
    }

    /// The next offset of every partition the store holds records up to.
    pub fn offsets(&self) -> Result<FxHashMap<(String, i32), i64>, StoreError> {
        self.by_partition(OFFSETS)
    }

    /// When the store was last up to date with each partition (its reader at the end).
    pub fn fresh(&self) -> Result<FxHashMap<(String, i32), DateTime<Utc>>, StoreError> {
        let millis = self.by_partition(FRESH)?;
        Ok(millis
            .into_iter()
            .filter_map(|(key, at)| Some((key, DateTime::from_timestamp_millis(at)?)))
            .collect())
    }

    /// Customers with at least one record.
    pub fn customers(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta(CUSTOMERS_KEY)?
            .and_then(|bytes| Some(u64::from_le_bytes(bytes.try_into().ok()?)))
            .unwrap_or(0))
    }

    /// Writes a batch, its partitions' next offsets and which are at their end, in one
    /// transaction. `durable`: on disk when this returns (fsync);
    /// otherwise a crash loses it, with its offsets, back to the last durable one.
    pub fn write(&self, batch: &Batch, durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        if durable {
            txn.set_durability(Durability::Immediate)?;
            // The allocator's state is saved with the commit: reopening after a crash takes
            // milliseconds instead of a walk of the whole file.
            txn.set_quick_repair(true);
        } else {
            txn.set_durability(Durability::None)?;
        }
        {
            let mut tables = Tables {
                records: txn.open_table(RECORDS)?,
                ledger: txn.open_table(LEDGER)?,
                identifiers: txn.open_table(IDENTIFIERS)?,
            };
            let mut meta = txn.open_table(META)?;
            let mut customers = meta
                .get(CUSTOMERS_KEY)?
                .and_then(|bytes| Some(i64::from_le_bytes(bytes.value().try_into().ok()?)))
                .unwrap_or(0);
            for change in &batch.changes {
                customers += Self::apply(&mut tables, change)?;
            }
            meta.insert(CUSTOMERS_KEY, customers.max(0).to_le_bytes().as_slice())?;
            let mut offsets = txn.open_table(OFFSETS)?;
            for ((topic, partition), next) in &batch.positions {
                offsets.insert((&**topic, *partition), next)?;
            }
            let mut fresh = txn.open_table(FRESH)?;
            for ((topic, partition), at) in &batch.at_end {
                fresh.insert((&**topic, *partition), at)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Applies one change; answers the change in the number of customers (-1, 0 or 1).
    fn apply(tables: &mut Tables<'_>, change: &Change) -> Result<i64, StoreError> {
        let id = change.customer_id.as_str();
        let held_before = Self::holds_any(tables, id)?;
        let key = (id, change.source.tag());
        if change.source == Source::Identity {
            Self::index_identifiers(tables, id, change.record.as_ref())?;
        }
        match (&change.record, change.source) {
            // The ledger is not compacted: a null value carries nothing to apply.
            (None, Source::Ledger) => {}
            (Some(record), Source::Ledger) => {
                if record.erases {
                    tables.ledger.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
                }
                let offset = u64::try_from(change.offset).unwrap_or_default();
                tables.ledger.insert((id, offset), record.bytes.as_slice())?;
            }
            (Some(record), _) => {
                tables.records.insert(key, record.bytes.as_slice())?;
            }
            // A tombstone removes its own record only. Ledger entries stay until an `erase`
            // entry replaces them (SPEC 4.5 keeps that one): what a merged id earned before its
            // merge stays held (and exported) whatever order the topics' records come in.
            (None, _) => {
                tables.records.remove(key)?;
            }
        }
        let held_after = Self::holds_any(tables, id)?;
        Ok(i64::from(held_after) - i64::from(held_before))
    }

    /// Replaces the identifiers indexed for `id` (those of its stored identity record) with
    /// the new record's.
    fn index_identifiers(
        tables: &mut Tables<'_>,
        id: &str,
        record: Option<&Incoming>,
    ) -> Result<(), StoreError> {
        let stored = tables.records.get((id, Source::Identity.tag()))?.map(|bytes| bytes.value().to_vec());
        if let Some(bytes) = stored {
            match decode_value(RecordKind::CustomerIdentity, &bytes) {
                Ok(value) => {
                    for (kind, value) in identifiers_of(&value) {
                        tables.identifiers.remove((kind.as_str(), value.as_str(), id))?;
                    }
                }
                // Written by this build's schema when it was stored: not expected.
                Err(error) => warn!(customer_id = id, %error, "a stored identity record does not decode"),
            }
        }
        for (kind, value) in record.map_or(&[][..], |record| record.identifiers.as_slice()) {
            tables.identifiers.insert((kind.as_str(), value.as_str(), id), ())?;
        }
        Ok(())
    }

    /// The customers an identifier (type, normalized value) is linked to, as identity
    /// resolution's records say; at most `limit`, in id order.
    pub fn lookup(&self, kind: &str, value: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(table) = existing(txn.open_table(IDENTIFIERS))? else { return Ok(Vec::new()) };
        let mut ids = Vec::new();
        for entry in table.range((kind, value, "")..)?.take(limit) {
            let (key, _) = entry?;
            let (k, v, id) = key.value();
            if (k, v) != (kind, value) {
                break;
            }
            ids.push(id.to_owned());
        }
        Ok(ids)
    }

    fn holds_any(tables: &Tables<'_>, id: &str) -> Result<bool, StoreError> {
        Ok(tables.records.range((id, 0)..=(id, u8::MAX))?.next().transpose()?.is_some()
            || tables.ledger.range((id, 0)..=(id, u64::MAX))?.next().transpose()?.is_some())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read()?;
        // Both are created by the first write after a reset.
        let (Some(records), Some(ledger)) =
            (existing(txn.open_table(RECORDS))?, existing(txn.open_table(LEDGER))?)
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot { records, ledger }))
    }

    /// What the store holds of a customer, decoded; `None` when it holds nothing.
    pub fn get(&self, customer_id: &str) -> Result<Option<CustomerView>, StoreError> {
        self.get_with(customer_id, LedgerDepth::Recent)
    }

    /// As [`Store::get`], with the ledger entries of `depth`.
    pub fn get_with(
        &self,
        customer_id: &str,
        depth: LedgerDepth,
    ) -> Result<Option<CustomerView>, StoreError> {
        let Some(snapshot) = self.snapshot()? else { return Ok(None) };
        self.view(&snapshot, customer_id, depth)
    }

    fn view(
        &self,
        snapshot: &Snapshot,
        id: &str,
        depth: LedgerDepth,
    ) -> Result<Option<CustomerView>, StoreError> {
        let mut view = CustomerView::default();
        let mut held = false;
        let mut add = |source: Source, stored: &[u8]| match decode(source, stored) {
            Ok(decoded) => view.set(source, decoded),
            // It decoded when it was stored, under the same schemas (the store's format).
            Err(error) => {
                warn!(customer_id = id, ?source, error, "a stored record does not decode; left out")
            }
        };
        for entry in snapshot.records.range((id, 0)..=(id, u8::MAX))? {
            let (key, value) = entry?;
            held = true;
            if let Some(source) = Source::from_tag(key.value().1) {
                add(source, value.value());
            }
        }
        let limit = match depth {
            LedgerDepth::None => 0,
            LedgerDepth::Recent => self.ledger_entries,
            LedgerDepth::All => usize::MAX,
        };
        let mut entries = Vec::new();
        for entry in snapshot.ledger.range((id, 0)..=(id, u64::MAX))?.rev().take(limit) {
            entries.push(entry?.1);
        }
        held |= !entries.is_empty();
        for entry in entries.iter().rev() {
            add(Source::Ledger, entry.value());
        }
        Ok(held.then_some(view))
    }

    /// The customer an id stands for: itself, or, for an id merged into another (an alias), the
    /// end of its chain of merges, with that customer's view. One snapshot for the whole chain.
    pub fn canonical(
        &self,
        customer_id: &str,
        depth: LedgerDepth,
    ) -> Result<Option<(String, CustomerView)>, StoreError> {
        let Some(snapshot) = self.snapshot()? else { return Ok(None) };
        let mut id = customer_id.to_owned();
        let Some(mut view) = self.view(&snapshot, &id, depth)? else { return Ok(None) };
        // A chain is as long as the merges one customer went through; the bound only guards
        // against a cycle the resolver never writes.
        for _ in 0..MAX_MERGE_CHAIN {
            let Some(winner) = view.identity.as_ref().and_then(|(_, identity)| identity.merged_into.clone())
            else {
                return Ok(Some((id, view)));
            };
            view = self.view(&snapshot, &winner, depth)?.unwrap_or_default();
            id = winner;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnistream_model::codec::encode_record;
    use omnistream_model::records::{BalanceAfter, LedgerEntryKind, LoyaltyBalance, LoyaltyLedgerEntry};

    struct TempStore {
        dir: std::path::PathBuf,
        store: Store,
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn temp_store(ledger_entries: usize) -> TempStore {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("customer-api-store-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("store.redb"), 1 << 20, ledger_entries).unwrap();
        TempStore { dir, store }
    }

    fn balance(active: i64) -> Incoming {
        let record = LoyaltyBalance {
            customer_id: "c-1".into(),
            active,
            pending: 0,
            spent: 0,
            expired: 0,
            lifetime_earned: active,
            tier: "silver".into(),
            next_expiry: None,
            updated_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            version: 1,
        };
        incoming(Source::Balances, &encode_record(&record).unwrap()).unwrap()
    }

    fn entry(points: i64, kind: LedgerEntryKind) -> Incoming {
        let record = LoyaltyLedgerEntry {
            entry_id: format!("x-{points}"),
            customer_id: "c-1".into(),
            kind,
            points,
            balance_after: BalanceAfter { active: points, pending: 0 },
            reason: None,
            cause_event_id: "e-1".into(),
            order_id: None,
            channel: None,
            negative_balance: false,
            occurred_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            redemption_id: None,
            reason_detail: None,
        };
        incoming(Source::Ledger, &encode_record(&record).unwrap()).unwrap()
    }

    impl Store {
        fn write_durably(&self, batch: &Batch) -> Result<(), StoreError> {
            self.write(batch, true)
        }
    }

    fn next_offset() -> i64 {
        static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn change(source: Source, record: Option<Incoming>) -> Batch {
        Batch {
            changes: vec![Change { source, customer_id: "c-1".into(), offset: next_offset(), record }],
            ..Batch::default()
        }
    }

    fn points(view: &CustomerView) -> Vec<i64> {
        view.ledger
            .iter()
            .map(|json| serde_json::from_str::<serde_json::Value>(json).unwrap()["points"].as_i64().unwrap())
            .collect()
    }

    fn identity(emails: &[&str]) -> Incoming {
        let record = CustomerIdentity {
            customer_id: "c-1".into(),
            merged_into: None,
            identifiers: emails
                .iter()
                .map(|email| omnistream_model::records::LinkedIdentifier {
                    kind: "email".into(),
                    value: (*email).into(),
                    event_id: "e-1".into(),
                    occurred_at: "2026-12-01T10:00:00Z".parse().unwrap(),
                    channel: "web".into(),
                })
                .collect(),
            merges: Vec::new(),
        };
        incoming(Source::Identity, &encode_record(&record).unwrap()).unwrap()
    }

    #[test]
    fn identifiers_find_the_customer_their_current_identity_record_lists() {
        let t = temp_store(2);
        let find = |email: &str| t.store.lookup("email", email, 10).unwrap();
        t.store
            .write_durably(&change(Source::Identity, Some(identity(&["ann@example.com", "a@work.example"]))))
            .unwrap();
        assert_eq!(find("ann@example.com"), ["c-1"]);
        assert_eq!(find("a@work.example"), ["c-1"]);
        assert!(find("ann@example.co").is_empty(), "a prefix is not a match");
        // The next record replaces the identifiers: the one it no longer lists finds no one.
        t.store.write_durably(&change(Source::Identity, Some(identity(&["ann@example.com"])))).unwrap();
        assert_eq!(find("ann@example.com"), ["c-1"]);
        assert!(find("a@work.example").is_empty());
        assert!(t.store.lookup("phone", "ann@example.com", 10).unwrap().is_empty(), "types differ");
        t.store.write_durably(&change(Source::Identity, None)).unwrap();
        assert!(find("ann@example.com").is_empty(), "a tombstone (an erasure) unlists them");
    }

    #[test]
    fn records_replace_and_tombstones_remove() {
        let t = temp_store(2);
        t.store.write_durably(&change(Source::Balances, Some(balance(5)))).unwrap();
        t.store.write_durably(&change(Source::Balances, Some(balance(7)))).unwrap();
        let view = t.store.get("c-1").unwrap().unwrap();
        assert!(view.balance.as_deref().unwrap().contains("\"active\":7"));
        assert!(view.is_known());
        assert_eq!(t.store.customers().unwrap(), 1);

        t.store.write_durably(&change(Source::Balances, None)).unwrap();
        assert!(t.store.get("c-1").unwrap().is_none());
        assert_eq!(t.store.customers().unwrap(), 0);
        // A tombstone for someone unknown changes nothing.
        t.store.write_durably(&change(Source::Profiles, None)).unwrap();
        assert_eq!(t.store.customers().unwrap(), 0);
    }

    #[test]
    fn the_ledger_keeps_the_latest_entries_and_an_erasure_forgets_the_rest() {
        let t = temp_store(2);
        for n in 1..=3 {
            t.store.write_durably(&change(Source::Ledger, Some(entry(n, LedgerEntryKind::Earn)))).unwrap();
        }
        let view = t.store.get("c-1").unwrap().unwrap();
        assert_eq!(points(&view), [2, 3]);
        assert!(!view.is_known(), "ledger entries alone do not make a customer known");

        t.store.write_durably(&change(Source::Balances, Some(balance(5)))).unwrap();
        t.store.write_durably(&change(Source::Ledger, Some(entry(0, LedgerEntryKind::Erase)))).unwrap();
        t.store.write_durably(&change(Source::Balances, None)).unwrap();
        let view = t.store.get("c-1").unwrap().expect("an erased customer's erase entry stays");
        assert!(!view.is_known());
        assert_eq!(points(&view), [0]);
        assert!(view.erased_at().is_some());
    }

    #[test]
    fn a_tombstone_removes_its_record_only_and_ledger_entries_stay_until_an_erasure() {
        let t = temp_store(2);
        t.store.write_durably(&change(Source::Ledger, Some(entry(1, LedgerEntryKind::Earn)))).unwrap();
        t.store.write_durably(&change(Source::Balances, Some(balance(5)))).unwrap();
        t.store.write_durably(&change(Source::Balances, None)).unwrap();
        let view = t.store.get("c-1").unwrap().expect("the entry is still held");
        assert!(!view.is_known() && view.balance.is_none());
        assert_eq!(points(&view), [1]);
        assert_eq!(t.store.customers().unwrap(), 1);
    }

    #[test]
    fn offsets_are_written_with_the_records_and_survive_a_reopen() {
        let t = temp_store(2);
        let mut batch = change(Source::Balances, Some(balance(5)));
        batch.positions.insert((Arc::from("balances"), 3), 42);
        batch.at_end.insert((Arc::from("balances"), 3), 1_795_000_000_000);
        t.store.write(&batch, true).unwrap();
        let path = t.dir.join("store.redb");
        let mut t = t;
        t.store = Store::open(&t.dir.join("other.redb"), 1 << 20, 2).unwrap();
        let reopened = Store::open(&path, 1 << 20, 2).unwrap();
        assert_eq!(reopened.offsets().unwrap().get(&("balances".to_owned(), 3)), Some(&42));
        assert_eq!(
            reopened.fresh().unwrap().get(&("balances".to_owned(), 3)),
            DateTime::from_timestamp_millis(1_795_000_000_000).as_ref()
        );
        assert!(reopened.get("c-1").unwrap().is_some());
        reopened.reset().unwrap();
        assert!(reopened.offsets().unwrap().is_empty());
        assert!(reopened.get("c-1").unwrap().is_none());
    }
}
