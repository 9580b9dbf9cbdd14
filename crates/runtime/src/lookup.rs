//! Table and broadcast inputs, without Kafka: versioned key-value views a processor reads as of
//! the partition clock less a grace period (docs/runtime.md, "Table and broadcast inputs"). A
//! table is co-partitioned with the events (partition `p` serves the events of partition `p`); a
//! broadcast topic is read whole by every instance. Each keeps every version of a key with its
//! append time, so a lookup made for a record appended at `T` returns the latest version appended
//! at or before `T - grace`, however late the record is processed or replayed.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

/// Whether a lookup input is co-partitioned with the events or read whole by every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LookupScope {
    /// A compacted topic with the events' partition count, keyed like the events.
    Table,
    /// A small topic every instance reads whole (definitions, a catalog).
    Broadcast,
}

/// A lookup input a processor reads, by the role its topic is configured under
/// (`--table ROLE=TOPIC`, `--broadcast ROLE=TOPIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupInput {
    pub role: &'static str,
    pub scope: LookupScope,
}

/// One value a key had from its append time on (`None`: deleted).
#[derive(Debug)]
struct Version {
    appended: i64,
    value: Option<Vec<u8>>,
}

/// Every version of every key of one partition of a lookup topic, in append-time order.
#[derive(Debug, Default)]
struct Versions {
    by_key: FxHashMap<String, Vec<Version>>,
    /// The latest append time read, for the completeness check.
    latest: Option<i64>,
    /// When (wall clock, unix millis, before asking) the partition was last found read to its end.
    read_to_end_at: Option<i64>,
}

impl Versions {
    fn insert(&mut self, key: String, appended: i64, value: Option<Vec<u8>>) {
        let versions = self.by_key.entry(key).or_default();
        // Append times follow offsets (LogAppendTime); a broker clock stepping back keeps the
        // order of the log for equal or earlier times.
        let at = versions.partition_point(|version| version.appended <= appended);
        versions.insert(at, Version { appended, value });
        self.latest = Some(self.latest.map_or(appended, |latest| latest.max(appended)));
    }

    fn get(&self, key: &str, as_of: i64) -> Option<&[u8]> {
        let versions = self.by_key.get(key)?;
        let newer = versions.partition_point(|version| version.appended <= as_of);
        versions[..newer].last()?.value.as_deref()
    }

    /// Drops the versions no lookup at or after `as_of` can return: all but the latest at or
    /// before it.
    fn prune(&mut self, as_of: i64) {
        self.by_key.retain(|_, versions| {
            let newer = versions.partition_point(|version| version.appended <= as_of);
            if newer > 1 {
                versions.drain(..newer - 1);
            }
            // A key whose only version left is an old tombstone is gone for every such lookup.
            !(versions.len() == 1 && versions[0].value.is_none() && versions[0].appended <= as_of)
        });
    }
}

/// One partition of one lookup topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LookupPartition {
    pub(crate) role: &'static str,
    pub(crate) partition: i32,
}

/// What the service has read of its lookup inputs.
#[derive(Debug, Default)]
pub(crate) struct LookupStore {
    inputs: Vec<LookupInput>,
    /// Partition count of each broadcast topic (all of which are read).
    broadcast_partitions: BTreeMap<&'static str, i32>,
    read: BTreeMap<LookupPartition, Versions>,
    grace_ms: i64,
    /// The longest a lookup topic's writer keeps a transaction open: a version appended at `t`
    /// is committed (or aborted) by `t` plus this.
    writer_timeout_ms: i64,
}

impl LookupStore {
    pub(crate) fn new(inputs: &[LookupInput], grace_ms: i64, writer_timeout_ms: i64) -> Self {
        Self { inputs: inputs.to_vec(), grace_ms, writer_timeout_ms, ..Self::default() }
    }

    /// The driver found `from` read to its end with a check begun at `wall` (unix millis).
    pub(crate) fn read_to_end(&mut self, from: LookupPartition, wall: i64) {
        let versions = self.read.entry(from).or_default();
        versions.read_to_end_at = Some(versions.read_to_end_at.map_or(wall, |at| at.max(wall)));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    pub(crate) fn set_broadcast_partitions(&mut self, role: &'static str, partitions: i32) {
        self.broadcast_partitions.insert(role, partitions);
    }

    /// One record of a lookup topic, in log order.
    pub(crate) fn on_record(
        &mut self,
        from: LookupPartition,
        key: String,
        appended: i64,
        value: Option<Vec<u8>>,
    ) {
        self.read.entry(from).or_default().insert(key, appended, value);
    }

    /// A table partition left with its events partition.
    pub(crate) fn forget_table_partition(&mut self, partition: i32) {
        let inputs = &self.inputs;
        let is_table = |role: &str| inputs.iter().any(|i| i.role == role && i.scope == LookupScope::Table);
        self.read.retain(|from, _| from.partition != partition || !is_table(from.role));
    }

    /// The time lookups for a record appended at `appended` are made as of.
    pub(crate) fn as_of(&self, appended: i64) -> i64 {
        appended.saturating_sub(self.grace_ms)
    }

    /// The lookup partitions that the events of `partition` read, which must hold every version
    /// up to `as_of` before a record is applied: those not known to are returned, for the driver
    /// to check whether they are read to their end. Known: a version appended after `as_of` was
    /// read (append times follow offsets), or the partition was read to its end once every
    /// version up to `as_of` was decided (`as_of` plus the writers' transaction timeout).
    pub(crate) fn unproven(&self, partition: i32, as_of: i64, out: &mut Vec<LookupPartition>) {
        for input in &self.inputs {
            let partitions = match input.scope {
                LookupScope::Table => partition..partition + 1,
                LookupScope::Broadcast => 0..self.broadcast_partitions.get(input.role).copied().unwrap_or(0),
            };
            for partition in partitions {
                let from = LookupPartition { role: input.role, partition };
                let proven = self.read.get(&from).is_some_and(|versions| {
                    versions.latest.is_some_and(|latest| latest > as_of)
                        || versions
                            .read_to_end_at
                            .is_some_and(|at| at >= as_of.saturating_add(self.writer_timeout_ms))
                });
                if !proven {
                    out.push(from);
                }
            }
        }
    }

    /// When the first version of broadcast `key` of `role` appended after `since` was appended.
    pub(crate) fn first_after(&self, role: &str, key: &str, since: i64) -> Option<i64> {
        let from = LookupPartition { role: self.role_name(role)?, partition: 0 };
        let to = LookupPartition { partition: i32::MAX, ..from };
        self.read
            .range(from..=to)
            .filter_map(|(_, versions)| {
                let versions = versions.by_key.get(key)?;
                let later = versions.partition_point(|version| version.appended <= since);
                versions.get(later).map(|version| version.appended)
            })
            .min()
    }

    fn role_name(&self, role: &str) -> Option<&'static str> {
        self.inputs.iter().find(|input| input.role == role).map(|input| input.role)
    }

    /// The grace lookups are made with (unix millis).
    pub(crate) fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The view of `partition`'s lookups as of `as_of`.
    pub(crate) fn view(&self, partition: i32, as_of: i64) -> Lookups<'_> {
        Lookups { store: Some(self), partition, as_of }
    }

    /// Drops table versions no lookup at or after `tables_as_of` can return, and broadcast
    /// versions none at or after `broadcasts_as_of` can: a partition assigned later may still
    /// look up a broadcast as of an earlier time (up to the broadcast horizon), and a broadcast
    /// topic is not read again, unlike its table partition.
    pub(crate) fn prune(&mut self, tables_as_of: i64, broadcasts_as_of: i64) {
        let inputs = &self.inputs;
        let is_table = |role: &str| inputs.iter().any(|i| i.role == role && i.scope == LookupScope::Table);
        for (from, versions) in &mut self.read {
            versions.prune(if is_table(from.role) { tables_as_of } else { broadcasts_as_of });
        }
    }
}

/// A processor's read-only view of its table and broadcast inputs while it applies one record.
#[derive(Debug, Clone, Copy)]
pub struct Lookups<'a> {
    store: Option<&'a LookupStore>,
    partition: i32,
    as_of: i64,
}

impl<'a> Lookups<'a> {
    /// No lookup inputs: every lookup finds nothing.
    pub fn none() -> Self {
        Self { store: None, partition: 0, as_of: 0 }
    }

    /// The value of `key` in the lookup input `role` as of the record's time less the grace;
    /// `None` if it had none then (or a tombstone).
    pub fn get(&self, role: &str, key: &str) -> Option<&'a [u8]> {
        self.get_versioned(role, key).map(|(value, _)| value)
    }

    /// As [`Self::get`], with the time the value was appended (unix millis): a processor tells a
    /// version it has seen from a newer one.
    pub fn get_versioned(&self, role: &str, key: &str) -> Option<(&'a [u8], i64)> {
        let store = self.store?;
        let input = store.inputs.iter().find(|input| input.role == role)?;
        let partitions = match input.scope {
            LookupScope::Table => self.partition..=self.partition,
            LookupScope::Broadcast => 0..=i32::MAX,
        };
        let from = LookupPartition { role: input.role, partition: *partitions.start() };
        let to = LookupPartition { role: input.role, partition: *partitions.end() };
        store.read.range(from..=to).find_map(|(_, versions)| {
            let versions = versions.by_key.get(key)?;
            let newer = versions.partition_point(|version| version.appended <= self.as_of);
            let version = versions[..newer].last()?;
            Some((version.value.as_deref()?, version.appended))
        })
    }

    /// Every version of `key` in the lookup input `role` appended after `after` and by the lookup
    /// time, with its append time, oldest first (of every partition: a key can move when a
    /// topic's partitions are added): a processor watching the key sees each change once, also
    /// two in one producer batch (one append time). Tombstones are left out.
    pub fn versions_after(&self, role: &str, key: &str, after: i64) -> Vec<(&'a [u8], i64)> {
        let Some(store) = self.store else { return Vec::new() };
        let Some(input) = store.inputs.iter().find(|input| input.role == role) else { return Vec::new() };
        let partitions = match input.scope {
            LookupScope::Table => self.partition..=self.partition,
            LookupScope::Broadcast => 0..=i32::MAX,
        };
        let from = LookupPartition { role: input.role, partition: *partitions.start() };
        let to = LookupPartition { role: input.role, partition: *partitions.end() };
        let mut found: Vec<(&'a [u8], i64)> = store
            .read
            .range(from..=to)
            .filter_map(|(_, versions)| versions.by_key.get(key))
            .flat_map(|versions| {
                let first = versions.partition_point(|version| version.appended <= after);
                let last = versions.partition_point(|version| version.appended <= self.as_of);
                versions[first..last.max(first)]
                    .iter()
                    .filter_map(|version| Some((version.value.as_deref()?, version.appended)))
            })
            .collect();
        found.sort_by_key(|(_, appended)| *appended);
        found
    }

    /// Every key of the lookup input `role` with its value as of the record's time less the
    /// grace, in key order (a broadcast input's definitions, all of them): deleted keys and keys
    /// first written later are left out.
    pub fn entries(&self, role: &str) -> Vec<(&'a str, &'a [u8])> {
        let Some(store) = self.store else { return Vec::new() };
        let Some(input) = store.inputs.iter().find(|input| input.role == role) else { return Vec::new() };
        let partitions = match input.scope {
            LookupScope::Table => self.partition..=self.partition,
            LookupScope::Broadcast => 0..=i32::MAX,
        };
        let from = LookupPartition { role: input.role, partition: *partitions.start() };
        let to = LookupPartition { role: input.role, partition: *partitions.end() };
        let mut entries: Vec<(&'a str, &'a [u8])> = store
            .read
            .range(from..=to)
            .flat_map(|(_, versions)| {
                versions.by_key.keys().filter_map(|key| Some((key.as_str(), versions.get(key, self.as_of)?)))
            })
            .collect();
        entries.sort_unstable_by_key(|(key, _)| *key);
        entries
    }

    /// The time lookups are made as of (unix millis).
    pub fn as_of(&self) -> i64 {
        self.as_of
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: LookupInput = LookupInput { role: "tiers", scope: LookupScope::Table };
    const CAMPAIGN: LookupInput = LookupInput { role: "campaign", scope: LookupScope::Broadcast };

    fn store() -> LookupStore {
        let mut store = LookupStore::new(&[TIERS, CAMPAIGN], 1_000, 500);
        store.set_broadcast_partitions("campaign", 2);
        store
    }

    fn tier(partition: i32) -> LookupPartition {
        LookupPartition { role: "tiers", partition }
    }

    #[test]
    fn a_lookup_returns_the_latest_version_appended_at_or_before_the_record_time_less_the_grace() {
        let mut store = store();
        store.on_record(tier(0), "c-1".into(), 10_000, Some(b"silver".to_vec()));
        store.on_record(tier(0), "c-1".into(), 20_000, Some(b"gold".to_vec()));
        store.on_record(tier(0), "c-1".into(), 30_000, None);
        let at = |appended: i64| store.view(0, store.as_of(appended)).get("tiers", "c-1");
        assert_eq!(at(10_999), None, "appended 10 s, visible from 11 s (grace 1 s)");
        assert_eq!(at(11_000), Some(&b"silver"[..]));
        assert_eq!(at(20_999), Some(&b"silver"[..]));
        assert_eq!(at(21_000), Some(&b"gold"[..]));
        assert_eq!(at(31_000), None, "a tombstone deletes");
        assert_eq!(store.view(1, 25_000).get("tiers", "c-1"), None, "another partition's table");
        assert_eq!(store.view(0, 25_000).get("unknown", "c-1"), None);
    }

    #[test]
    fn a_broadcast_key_is_found_on_whichever_partition_holds_it() {
        let mut store = store();
        let campaign = |partition| LookupPartition { role: "campaign", partition };
        store.on_record(campaign(1), "current".into(), 5_000, Some(b"spring".to_vec()));
        assert_eq!(store.view(0, 6_000).get("campaign", "current"), Some(&b"spring"[..]));
        assert_eq!(store.view(3, 6_000).get("campaign", "current"), Some(&b"spring"[..]), "every partition");
    }

    #[test]
    fn every_broadcast_entry_is_listed_as_of_the_time_across_partitions() {
        let mut store = store();
        let campaign = |partition| LookupPartition { role: "campaign", partition };
        store.on_record(campaign(1), "b".into(), 5_000, Some(b"b1".to_vec()));
        store.on_record(campaign(0), "a".into(), 5_000, Some(b"a1".to_vec()));
        store.on_record(campaign(0), "a".into(), 7_000, Some(b"a2".to_vec()));
        store.on_record(campaign(1), "b".into(), 8_000, None);
        store.on_record(campaign(0), "c".into(), 9_000, Some(b"c1".to_vec()));
        let entries = |as_of| store.view(2, as_of).entries("campaign");
        assert_eq!(entries(4_999), vec![]);
        assert_eq!(entries(6_000), vec![("a", &b"a1"[..]), ("b", &b"b1"[..])]);
        assert_eq!(entries(8_500), vec![("a", &b"a2"[..])], "b deleted at 8 000");
        assert_eq!(entries(9_000), vec![("a", &b"a2"[..]), ("c", &b"c1"[..])]);
        assert_eq!(store.view(0, 9_000).entries("unknown"), vec![]);
    }

    #[test]
    fn versions_after_a_time_are_listed_oldest_first_from_every_partition_up_to_the_lookup_time() {
        let mut store = store();
        let campaign = |partition| LookupPartition { role: "campaign", partition };
        store.on_record(campaign(0), "p".into(), 1_000, Some(b"seen".to_vec()));
        store.on_record(campaign(0), "p".into(), 2_000, Some(b"restock".to_vec()));
        store.on_record(campaign(0), "p".into(), 2_000, Some(b"drop".to_vec()));
        store.on_record(campaign(0), "p".into(), 2_500, None);
        store.on_record(campaign(1), "p".into(), 3_000, Some(b"moved".to_vec()));
        store.on_record(campaign(1), "p".into(), 9_000, Some(b"later".to_vec()));
        let after = |as_of| store.view(0, as_of).versions_after("campaign", "p", 1_000);
        assert_eq!(
            after(5_000),
            vec![(&b"restock"[..], 2_000), (&b"drop"[..], 2_000), (&b"moved"[..], 3_000)],
            "one batch's two changes, the tombstone left out, the other partition's"
        );
        assert_eq!(after(500), vec![]);
        assert_eq!(store.view(0, 5_000).versions_after("unknown", "p", 0), vec![]);
    }

    #[test]
    fn a_partition_is_proven_complete_by_a_later_version_else_the_driver_checks_its_end() {
        let mut store = store();
        let mut unproven = Vec::new();
        store.unproven(0, 10_000, &mut unproven);
        let campaign = |partition| LookupPartition { role: "campaign", partition };
        assert_eq!(unproven, vec![tier(0), campaign(0), campaign(1)]);
        store.on_record(tier(0), "c-9".into(), 10_001, None);
        store.on_record(campaign(0), "x".into(), 10_000, None);
        unproven.clear();
        store.unproven(0, 10_000, &mut unproven);
        assert_eq!(unproven, vec![campaign(0), campaign(1)], "a version at 10 000 may have company");
        store.read_to_end(campaign(0), 10_499);
        store.read_to_end(campaign(1), 10_500);
        unproven.clear();
        store.unproven(0, 10_000, &mut unproven);
        assert_eq!(
            unproven,
            vec![campaign(0)],
            "read to its end before a transaction from 10 000 had to end"
        );
    }

    #[test]
    fn pruning_keeps_what_a_lookup_at_or_after_its_time_can_return() {
        let mut store = store();
        for (time, value) in [(1_000, Some(&b"a"[..])), (2_000, Some(b"b")), (3_000, Some(b"c"))] {
            store.on_record(tier(0), "k".into(), time, value.map(<[u8]>::to_vec));
        }
        store.on_record(tier(0), "gone".into(), 1_500, None);
        store.prune(2_500, i64::MIN);
        assert_eq!(store.view(0, 2_500).get("tiers", "k"), Some(&b"b"[..]));
        assert_eq!(store.view(0, 3_000).get("tiers", "k"), Some(&b"c"[..]));
        assert_eq!(store.read[&tier(0)].by_key["k"].len(), 2, "the version before 2 500 is gone");
        assert!(!store.read[&tier(0)].by_key.contains_key("gone"));
    }

    #[test]
    fn broadcast_versions_are_pruned_only_up_to_their_own_horizon() {
        let mut store = store();
        let campaign = |partition| LookupPartition { role: "campaign", partition };
        for time in [1_000, 2_000, 3_000] {
            store.on_record(tier(0), "k".into(), time, Some(time.to_string().into_bytes()));
            store.on_record(campaign(0), "c".into(), time, Some(time.to_string().into_bytes()));
        }
        // Tables as of 3 000, broadcasts as of 2 500 (a horizon of 500 before).
        store.prune(3_000, 2_500);
        assert_eq!(store.read[&tier(0)].by_key["k"].len(), 1, "only the table's latest");
        assert_eq!(store.read[&campaign(0)].by_key["c"].len(), 2, "the broadcast's version of 2 500 stays");
        assert_eq!(store.view(0, 2_500).get("campaign", "c"), Some(&b"2000"[..]));
        assert_eq!(store.view(0, 1_500).get("campaign", "c"), None, "before the horizon: pruned");
    }
}
