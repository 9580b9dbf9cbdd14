//! One input partition's store, without Kafka: the customers' entries (dedupe window and the
//! processor's state), their timers, the partition clock (SPEC 4) and the erasure markers. The
//! engine drives it record by record; its rules are unit-tested here without a broker.

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::erasure::{MarkerId, Markers, Verdict};
use crate::record_compression::{Dictionary, RecordCompression};

/// What the runtime keeps per customer: the ids of recent events (dedupe) and the processor's
/// state. This is the value of the changelog record keyed by customer id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry<S> {
    /// FNV-1a hashes of the most recent event ids, oldest first.
    #[serde(with = "dedupe_ids")]
    pub recent: VecDeque<u64>,
    pub state: Option<S>,
    /// The customer this one's state was handed to (a merge): handoffs that reach this one later
    /// follow it there, and the entry stays, for its dedupe ids, until the customer is erased.
    /// Boxed: a pointer's 8 bytes in every entry rather than a `String`'s 24.
    #[serde(default)]
    pub merged_into: Option<Box<String>>,
    /// Checked against the erasure markers and found none (never persisted): the customer's next
    /// events skip the marker's HMAC, the costliest step of an event once a partition holds a
    /// marker. Only the customer's own erasure adds their marker, and it clears this.
    #[serde(skip)]
    pub unmarked: Cell<bool>,
}

/// `Entry::recent` in a changelog record: the hashes as one byte string of 8 bytes each
/// (big-endian), not a MessagePack array of integers, which takes 9 bytes for each (its marker,
/// then 8 random bytes no compression shortens): 64 bytes less for a full window of 64. An empty
/// window stays the empty array older releases read (a position record is such an entry). Both
/// forms decode.
mod dedupe_ids {
    use std::collections::VecDeque;

    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(recent: &VecDeque<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        if recent.is_empty() {
            return serializer.collect_seq(recent);
        }
        let mut bytes = Vec::with_capacity(recent.len() * 8);
        recent.iter().for_each(|hash| bytes.extend(hash.to_be_bytes()));
        serializer.serialize_bytes(&bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<VecDeque<u64>, D::Error> {
        deserializer.deserialize_any(Hashes)
    }

    struct Hashes;

    impl<'de> de::Visitor<'de> for Hashes {
        type Value = VecDeque<u64>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("event id hashes: an array of integers, or a byte string of 8 bytes each")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // The hint is the record's word: bounded, so a corrupt length allocates nothing large.
            let mut hashes = VecDeque::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 10));
            while let Some(hash) = seq.next_element()? {
                hashes.push_back(hash);
            }
            Ok(hashes)
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
            let (hashes, rest) = bytes.as_chunks::<8>();
            if !rest.is_empty() {
                return Err(E::invalid_length(bytes.len(), &self));
            }
            Ok(hashes.iter().map(|hash| u64::from_be_bytes(*hash)).collect())
        }
    }
}

/// A stable 64-bit hash (FNV-1a): persisted in the changelog, so it must not change between
/// releases the way `std`'s hasher may.
pub fn event_id_hash(event_id: &str) -> u64 {
    event_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// How the store holds a customer (`--idle-state`). Entries are boxed: a hash table keeps a power
/// of two of slots, mostly empty after it grows, and a slot of a large state would cost its full
/// size whether used or not.
#[derive(Debug)]
enum Held<S> {
    Decoded(Box<Entry<S>>),
    /// Their changelog record as written (`changelog::encode`, this build's state version), in
    /// the partition's [`Records`], decoded again when next touched ([`PartitionStore::thaw`]);
    /// `unmarked` as the entry's.
    Encoded {
        at: At,
        unmarked: bool,
    },
    /// Decoded for the open transaction; `at` is the record it was held by, until the commit.
    Thawed(Box<Thawed<S>>),
}

/// A customer held encoded and decoded for the open transaction.
#[derive(Debug)]
struct Thawed<S> {
    entry: Entry<S>,
    at: At,
}

impl<S> Held<S> {
    /// The entry, which the engine thawed before asking: the store's rules read decoded entries
    /// only, and one held encoded here is a missed `thaw` (a bug, not an input).
    fn decoded(&self, customer_id: &str) -> &Entry<S> {
        match self {
            Held::Decoded(entry) => entry,
            Held::Thawed(thawed) => &thawed.entry,
            Held::Encoded { .. } => panic!("the entry of {customer_id:?} is read before it was thawed"),
        }
    }

    fn decoded_mut(&mut self, customer_id: &str) -> &mut Entry<S> {
        match self {
            Held::Decoded(entry) => entry,
            Held::Thawed(thawed) => &mut thawed.entry,
            Held::Encoded { .. } => panic!("the entry of {customer_id:?} is changed before it was thawed"),
        }
    }

    fn unmarked(&self) -> bool {
        match self {
            Held::Decoded(entry) => entry.unmarked.get(),
            Held::Thawed(thawed) => thawed.entry.unmarked.get(),
            Held::Encoded { unmarked, .. } => *unmarked,
        }
    }

    /// Where its record is, if it is held by one.
    fn record_at(&self) -> Option<At> {
        match self {
            Held::Decoded(_) => None,
            Held::Thawed(thawed) => Some(thawed.at),
            Held::Encoded { at, .. } => Some(*at),
        }
    }
}

/// Where a record is in [`Records`]: `len` bytes at `offset`, compressed if `len`'s top bit
/// ([`COMPRESSED`]) is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    chunk: u32,
    offset: u32,
    len: u32,
}

const COMPRESSED: u32 = 1 << 31;

impl At {
    fn bytes(self) -> usize {
        (self.len & !COMPRESSED) as usize
    }

    fn compressed(self) -> bool {
        self.len & COMPRESSED != 0
    }
}

/// The records of a partition's customers held encoded, packed into large chunks of their own.
/// Each record allocated on its own (a `Box<[u8]>` per customer) left the allocator's pages
/// shared with the restore's and the transactions' short-lived blocks, and a restored
/// event-counter kept 160 MiB per 100,000 customers for 70 MiB of records. A record replaced by
/// a longer one, or forgotten, is garbage until a compaction copies the live ones into new
/// chunks, once the garbage exceeds a quarter of them. With `compression` (`--idle-state
/// compressed`) a record is held compressed with the process's dictionary once it is trained;
/// the next compaction compresses those held before.
#[derive(Debug, Default)]
struct Records {
    chunks: Vec<Vec<u8>>,
    live: usize,
    garbage: usize,
    compression: Option<Arc<RecordCompression>>,
    /// The process's dictionary, once trained: it never changes after.
    dictionary: Option<Arc<Dictionary>>,
    /// Some records are held uncompressed for want of a dictionary.
    awaiting_dictionary: bool,
    /// The last record compressed.
    scratch: Vec<u8>,
}

/// A chunk's size (a longer record takes a chunk of its own). Chunks of up to 4 MiB, growing
/// with the store, left the process resident 4 times what 64 KiB chunks did (3,390 against 1,015
/// bytes per customer, event-counter, `omnistream-hot-path --resident`): the allocator kept the
/// large blocks each compaction freed.
const CHUNK_BYTES: usize = 64 << 10;

impl Records {
    fn holding(compression: Option<Arc<RecordCompression>>) -> Self {
        let dictionary = compression.as_ref().and_then(|compression| compression.decided()).flatten();
        Self { compression, dictionary, ..Self::default() }
    }

    /// The record at `at`, decompressed into `out` if it is held compressed.
    fn read<'a>(&'a self, at: At, out: &'a mut Vec<u8>) -> &'a [u8] {
        let stored = self.stored(at);
        if !at.compressed() {
            return stored;
        }
        self.dictionary.as_ref().expect("a record is compressed with the dictionary").decompress(stored, out);
        out
    }

    /// The record at `at` as it is held.
    fn stored(&self, at: At) -> &[u8] {
        &self.chunks[at.chunk as usize][at.offset as usize..][..at.bytes()]
    }

    fn put(&mut self, record: &[u8]) -> At {
        self.hold(record, None)
    }

    /// `record` replaces the one at `at`: in its place if it is held no longer (most commits
    /// change a record's length little or not at all), else at the end.
    fn replace(&mut self, at: At, record: &[u8]) -> At {
        self.hold(record, Some(at))
    }

    fn hold(&mut self, record: &[u8], replacing: Option<At>) -> At {
        let mut scratch = std::mem::take(&mut self.scratch);
        let compressed = self.compress(record, &mut scratch, replacing.is_none());
        let stored = if compressed { scratch.as_slice() } else { record };
        let at = match replacing {
            Some(old) if stored.len() <= old.bytes() => {
                self.chunks[old.chunk as usize][old.offset as usize..][..stored.len()]
                    .copy_from_slice(stored);
                let shortened = old.bytes() - stored.len();
                (self.live, self.garbage) = (self.live - shortened, self.garbage + shortened);
                At { len: held_len(stored.len(), compressed), ..old }
            }
            Some(old) => {
                self.free(old);
                self.append(stored, compressed)
            }
            None => self.append(stored, compressed),
        };
        self.scratch = scratch;
        at
    }

    /// Whether `record` is compressed into `out`: not while the process samples records for its
    /// dictionary (a customer's first record held is then a sample: later ones of the same
    /// customer share most of their dedupe ids with it, and would make the judged samples look
    /// more alike than customers are), nor when that does not pay or would lengthen it.
    fn compress(&mut self, record: &[u8], out: &mut Vec<u8>, first_of_customer: bool) -> bool {
        let Some(compression) = &self.compression else { return false };
        if self.dictionary.is_none() {
            match compression.decided() {
                Some(decided) => self.dictionary = decided,
                None => {
                    if first_of_customer {
                        compression.sample(record);
                    }
                    self.awaiting_dictionary = true;
                    return false;
                }
            }
        }
        self.dictionary.as_ref().is_some_and(|dictionary| dictionary.compress(record, out))
    }

    fn append(&mut self, stored: &[u8], compressed: bool) -> At {
        let room = self.chunks.last().map_or(0, |chunk| chunk.capacity() - chunk.len());
        if room < stored.len() {
            self.chunks.push(Vec::with_capacity(CHUNK_BYTES.max(stored.len())));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let offset = chunk.len();
        chunk.extend_from_slice(stored);
        self.live += stored.len();
        let narrow = |n: usize| u32::try_from(n).expect("a changelog record is far below 4 GiB");
        At { chunk: narrow(index), offset: narrow(offset), len: held_len(stored.len(), compressed) }
    }

    fn free(&mut self, at: At) {
        self.live -= at.bytes();
        self.garbage += at.bytes();
    }

    fn wants_compaction(&self) -> bool {
        let trained =
            || self.compression.as_ref().and_then(|compression| compression.decided()).flatten().is_some();
        (self.awaiting_dictionary && trained())
            || (self.garbage > CHUNK_BYTES && self.garbage > self.live / 4)
    }

    /// The live records, `held` in turn, copied into new chunks, those held uncompressed for
    /// want of a dictionary compressed if it is trained now.
    fn compact<'a>(&mut self, held: impl Iterator<Item = &'a mut At>) {
        let decided = self.compression.as_ref().map(|compression| compression.decided());
        let sampling = matches!(decided, Some(None));
        let mut compacted = Records {
            compression: self.compression.clone(),
            dictionary: decided.flatten().flatten(),
            ..Records::default()
        };
        let mut record = Vec::new();
        for at in held {
            // Those held uncompressed since the dictionary are so because it did not shorten them.
            *at = if at.compressed() || compacted.dictionary.is_none() || !self.awaiting_dictionary {
                compacted.awaiting_dictionary |= sampling && !at.compressed();
                compacted.append(self.stored(*at), at.compressed())
            } else {
                compacted.put(self.read(*at, &mut record))
            };
        }
        *self = compacted;
    }
}

/// `At::len` of `bytes` held, compressed or not.
fn held_len(bytes: usize, compressed: bool) -> u32 {
    let len = u32::try_from(bytes)
        .ok()
        .filter(|len| *len < COMPRESSED)
        .expect("a changelog record is far below 2 GiB");
    if compressed { len | COMPRESSED } else { len }
}

/// What a store's customer table and held records take in bytes (its timers and watched keys
/// are not counted), summed over partitions by `EngineCore::footprint`: for
/// `omnistream-hot-path --resident`, to tell the state's parts from the allocator's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub customers: usize,
    /// The customers' hash table, its empty slots too, and their ids' bytes.
    pub table_bytes: usize,
    /// The records held by customers, as held (compressed or not).
    pub record_bytes: usize,
    /// Replaced records not yet compacted away.
    pub garbage_bytes: usize,
    /// The chunks the records are packed in: records, garbage and room left.
    pub chunk_bytes: usize,
    /// Customers held decoded (`decoded`, or thawed in the open transaction).
    pub decoded: usize,
}

impl std::ops::Add for Footprint {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            customers: self.customers + other.customers,
            table_bytes: self.table_bytes + other.table_bytes,
            record_bytes: self.record_bytes + other.record_bytes,
            garbage_bytes: self.garbage_bytes + other.garbage_bytes,
            chunk_bytes: self.chunk_bytes + other.chunk_bytes,
            decoded: self.decoded + other.decoded,
        }
    }
}

/// A customer as a restore hands them to the store.
#[derive(Debug)]
pub(crate) enum Restored<S> {
    Decoded(Box<Entry<S>>),
    /// Their record, with the timer and the watched keys their state asks for, read when it was
    /// decoded (`due`: the processor's own timer; the engine adds the watched keys' before
    /// installing): a restore holding the records then keeps no decoded state.
    Encoded {
        record: Vec<u8>,
        due: Option<i64>,
        watches: Vec<(String, i64)>,
    },
}

/// What becomes of a valid event before the processor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission<'a, S> {
    /// Its customer was erased and the event is dated at or before the erasure, is a retry of
    /// one seen before it, or comes while `suppress_after` holds (SPEC 4.5).
    Erased,
    /// Its `event_id` is among the customer's recent ones.
    Duplicate,
    /// For the processor, with the customer's state (for its limits).
    New(Option<&'a S>),
}

#[derive(Debug)]
pub(crate) struct PartitionStore<S> {
    /// Keyed by `Box<str>`, not `String`: a slot 8 bytes shorter, about 1.5 MiB for 100,000
    /// customers over 6 partitions (a table keeps up to twice as many slots as customers).
    customers: FxHashMap<Box<str>, Held<S>>,
    /// The records of the customers held encoded.
    records: Records,
    /// The customers thawed since the last commit: those it leaves unchanged go back to the
    /// record they were held by.
    thawed: Vec<String>,
    /// Due timers as (unix millis, customer), and each customer's current due time.
    timers: BTreeSet<(i64, String)>,
    timer_of: FxHashMap<String, i64>,
    /// The partition clock, unix millis: the broker's append time of the last record consumed,
    /// following the wall clock only while the partition is caught up. Unknown (0) after a
    /// restore until the first record. Timers fire by it.
    clock: i64,
    /// The append time of the last record consumed: records are applied as of it, so that a
    /// record fetched just after the clock followed the wall clock past its append time is still
    /// applied as of that time (a replay must apply it so).
    record_clock: i64,
    /// The watched input's keys each customer waits for, with the append time it has seen each
    /// through (`Processor::watches`), and the same by key: a version read wakes its watchers.
    watching: FxHashMap<String, Vec<(String, i64)>>,
    watchers: FxHashMap<String, FxHashMap<String, i64>>,
    /// The consumer reached the end of the partition and no record came since.
    caught_up: bool,
    /// Erased customers of this partition.
    pub(crate) markers: Markers,
}

impl<S> Default for PartitionStore<S> {
    fn default() -> Self {
        Self {
            customers: FxHashMap::default(),
            thawed: Vec::new(),
            records: Records::default(),
            timers: BTreeSet::new(),
            timer_of: FxHashMap::default(),
            watching: FxHashMap::default(),
            watchers: FxHashMap::default(),
            clock: 0,
            record_clock: 0,
            caught_up: false,
            markers: Markers::default(),
        }
    }
}

impl<S> PartitionStore<S> {
    /// A store from a changelog's customers and markers, a decoded customer's timer at
    /// `next_timer`; a customer restored with their record is held encoded by it, compressed
    /// with `compression`'s dictionary if there is one.
    pub(crate) fn restored(
        customers: impl ExactSizeIterator<Item = (String, Restored<S>)>,
        markers: Markers,
        compression: Option<Arc<RecordCompression>>,
        next_timer: impl Fn(&S) -> Option<i64>,
        watches: impl Fn(&S) -> Vec<(String, i64)>,
    ) -> Self {
        let mut store = Self { markers, records: Records::holding(compression), ..Self::default() };
        store.customers.reserve(customers.len());
        for (customer_id, restored) in customers {
            let held = match restored {
                Restored::Decoded(entry) => {
                    let due = entry.state.as_ref().and_then(&next_timer);
                    store.set_timer(&customer_id, due);
                    if let Some(state) = &entry.state {
                        store.watch(&customer_id, &watches(state));
                    }
                    Held::Decoded(entry)
                }
                Restored::Encoded { record, due, watches } => {
                    store.set_timer(&customer_id, due);
                    store.watch(&customer_id, &watches);
                    Held::Encoded { at: store.records.put(&record), unmarked: false }
                }
            };
            store.customers.insert(customer_id.into_boxed_str(), held);
        }
        store
    }

    /// Decodes the customer's entry if it is held encoded, before the open transaction reads or
    /// changes it; the commit encodes it again ([`Self::freeze`], [`Self::refreeze_unchanged`]).
    pub(crate) fn thaw(&mut self, customer_id: &str, decode: impl FnOnce(&[u8]) -> Entry<S>) {
        let Some(held) = self.customers.get_mut(customer_id) else { return };
        let Held::Encoded { at, unmarked } = *held else { return };
        let mut record = Vec::new();
        let entry = decode(self.records.read(at, &mut record));
        entry.unmarked.set(unmarked);
        *held = Held::Thawed(Box::new(Thawed { entry, at }));
        self.thawed.push(customer_id.to_owned());
    }

    /// Holds the customer by `record`, the changelog record the commit writes of their entry.
    pub(crate) fn freeze(&mut self, customer_id: &str, record: &[u8]) {
        let Some(held) = self.customers.get_mut(customer_id) else { return };
        let at = match held.record_at() {
            Some(at) => self.records.replace(at, record),
            None => self.records.put(record),
        };
        *held = Held::Encoded { at, unmarked: held.unmarked() };
    }

    /// At a commit, after [`Self::freeze`] of every customer it changed: those thawed and left
    /// unchanged go back to the record they were held by. Then the records are compacted if
    /// enough of them are garbage.
    pub(crate) fn refreeze_unchanged(&mut self) {
        for customer_id in self.thawed.drain(..) {
            if let Some(held @ Held::Thawed(_)) = self.customers.get_mut(customer_id.as_str()) {
                let at = held.record_at().expect("a thawed customer has a record");
                *held = Held::Encoded { at, unmarked: held.unmarked() };
            }
        }
        if self.records.wants_compaction() {
            self.records.compact(self.customers.values_mut().filter_map(|held| match held {
                Held::Encoded { at, .. } => Some(at),
                _ => None,
            }));
        }
    }

    /// The customer's changelog record: as held, or encoded by `encode` from their entry.
    pub(crate) fn record(
        &self,
        customer_id: &str,
        encode: impl FnOnce(&Entry<S>) -> Vec<u8>,
    ) -> Option<Vec<u8>> {
        match self.customers.get(customer_id)? {
            Held::Decoded(entry) => Some(encode(entry)),
            Held::Thawed(thawed) => Some(encode(&thawed.entry)),
            Held::Encoded { at, .. } => Some(self.records.read(*at, &mut Vec::new()).to_vec()),
        }
    }

    /// The customer's state, decoding it with `decode` if it is held encoded.
    pub(crate) fn state_of(&self, customer_id: &str, decode: impl FnOnce(&[u8]) -> Entry<S>) -> Option<S>
    where
        S: Clone,
    {
        match self.customers.get(customer_id)? {
            Held::Decoded(entry) => entry.state.clone(),
            Held::Thawed(thawed) => thawed.entry.state.clone(),
            Held::Encoded { at, .. } => decode(self.records.read(*at, &mut Vec::new())).state,
        }
    }

    /// How many customers are held by a compressed record.
    #[cfg(test)]
    pub(crate) fn compressed_records(&self) -> usize {
        self.customers.values().filter_map(Held::record_at).filter(|at| at.compressed()).count()
    }

    /// Whether the customer has an entry, held either way.
    pub(crate) fn has_entry(&self, customer_id: &str) -> bool {
        self.customers.contains_key(customer_id)
    }

    /// A record appended at `stamped` (unix millis) was consumed: returns the time to apply it as
    /// of, which is also the time up to which timers are due before it (a timer due later, after
    /// the wall clock moved the partition clock, fires at a sweep: after the record, as on a
    /// replay). It never goes backwards.
    pub(crate) fn on_record(&mut self, stamped: i64) -> i64 {
        self.caught_up = false;
        self.record_clock = self.record_clock.max(stamped);
        self.clock = self.clock.max(self.record_clock);
        self.record_clock
    }

    /// The partition clock (unix millis; 0 until the first record after a restore).
    pub(crate) fn clock(&self) -> i64 {
        self.clock
    }

    /// The time a record appended at `stamped` would be applied as of (the clock never goes back).
    pub(crate) fn applies_as_of(&self, stamped: i64) -> i64 {
        self.record_clock.max(stamped)
    }

    /// The consumer reached the end of the partition: its clock may follow the wall clock now.
    pub(crate) fn on_end_of_partition(&mut self) {
        self.caught_up = true;
    }

    /// A timer sweep at wall-clock time `wall`: the clock of a caught-up partition moves to it.
    /// Returns the clock.
    pub(crate) fn follow_wall(&mut self, wall: i64) -> i64 {
        if self.caught_up {
            self.clock = self.clock.max(wall);
        }
        self.clock
    }

    /// Whether an event of `customer_id` with id hash `hash`, dated `occurred_at` and judged at
    /// partition time `judged_at`, reaches the processor. `marker_id` (a keyed hash) is computed
    /// only if the partition holds markers.
    pub(crate) fn admit(
        &self,
        customer_id: &str,
        marker_id: impl FnOnce() -> MarkerId,
        occurred_at: i64,
        hash: Option<u64>,
        suppress_after: bool,
        judged_at: i64,
    ) -> Admission<'_, S> {
        if !self.markers.is_empty() {
            let entry = self.entry(customer_id);
            if !entry.is_some_and(|entry| entry.unmarked.get()) {
                let id = marker_id();
                if self.markers.verdict(&id, occurred_at, hash, suppress_after, judged_at) == Verdict::Erased
                {
                    return Admission::Erased;
                }
                if let Some(entry) = entry {
                    entry.unmarked.set(!self.markers.contains(&id));
                }
            }
        }
        self.admit_unjudged(customer_id, hash)
    }

    /// `admit` for a record no erasure marker judges (a feedback record: the processor wrote it
    /// and decides what an erased customer does with it).
    pub(crate) fn admit_unjudged(&self, customer_id: &str, hash: Option<u64>) -> Admission<'_, S> {
        match self.entry(customer_id) {
            Some(entry) if hash.is_some_and(|hash| entry.recent.contains(&hash)) => Admission::Duplicate,
            entry => Admission::New(entry.and_then(|entry| entry.state.as_ref())),
        }
    }

    /// Whether the customer has no state, no live erasure marker and was not merged away: their
    /// first event, read or not, makes their state. `marker_id` is computed only if needed.
    pub(crate) fn is_new_customer(&self, customer_id: &str, marker_id: impl FnOnce() -> MarkerId) -> bool {
        let entry = self.entry(customer_id);
        entry.is_none_or(|entry| entry.state.is_none() && entry.merged_into.is_none())
            && (self.markers.is_empty() || !self.markers.contains(&marker_id()))
    }

    /// The customer's entry, thawed.
    pub(crate) fn entry(&self, customer_id: &str) -> Option<&Entry<S>> {
        self.customers.get(customer_id).map(|held| held.decoded(customer_id))
    }

    /// The customer's entry, thawed.
    pub(crate) fn entry_mut(&mut self, customer_id: &str) -> Option<&mut Entry<S>> {
        self.customers.get_mut(customer_id).map(|held| held.decoded_mut(customer_id))
    }

    /// The customer's entry (a new one if needed) with `hash` remembered as their latest event,
    /// forgetting the oldest beyond `window` ids (`None`: an input that is never retried).
    pub(crate) fn remember(&mut self, customer_id: &str, hash: Option<u64>, window: usize) -> &mut Entry<S> {
        // Looked up before inserting: `entry` would clone the id on every event.
        if !self.customers.contains_key(customer_id) {
            let empty = Box::new(Entry {
                recent: VecDeque::new(),
                state: None,
                merged_into: None,
                unmarked: Cell::new(false),
            });
            self.customers.insert(customer_id.into(), Held::Decoded(empty));
        }
        let entry = self.entry_mut(customer_id).expect("inserted above");
        if let Some(hash) = hash {
            // Make room first: a full deque would otherwise double its capacity.
            while entry.recent.len() >= window.max(1) {
                entry.recent.pop_front();
            }
            entry.recent.push_back(hash);
        }
        entry
    }

    /// After the processor ran for `customer_id`: an entry without state is forgotten (its
    /// changelog record becomes a tombstone) unless it was merged into another or, when
    /// `keep_dedupe` ([`crate::Processor::DEDUPE_WITHOUT_STATE`]), it remembers event ids; the
    /// customer's timer moves to `due`.
    pub(crate) fn settle(&mut self, customer_id: &str, due: Option<i64>, keep_dedupe: bool) {
        if self.entry(customer_id).is_some_and(|entry| {
            entry.state.is_none() && entry.merged_into.is_none() && (!keep_dedupe || entry.recent.is_empty())
        }) {
            if let Some(at) = self.customers.remove(customer_id).and_then(|held| held.record_at()) {
                self.records.free(at);
            }
            self.watch(customer_id, &[]);
        }
        self.set_timer(customer_id, due);
    }

    /// The customer's entry (a new one if needed) with `older` ids (another customer's, merged
    /// in) placed before its own and `hash` as its latest, keeping the `window` latest: a merge
    /// never pushes out the customer's own recent ids in favour of the other's.
    pub(crate) fn remember_merged(
        &mut self,
        customer_id: &str,
        older: &VecDeque<u64>,
        hash: u64,
        window: usize,
    ) -> &mut Entry<S> {
        let entry = self.remember(customer_id, Some(hash), window);
        let own = std::mem::take(&mut entry.recent);
        let mut merged: VecDeque<u64> = older.iter().copied().filter(|id| !own.contains(id)).collect();
        merged.extend(own);
        while merged.len() > window.max(1) {
            merged.pop_front();
        }
        entry.recent = merged;
        entry
    }

    /// After a customer's state was handed to `winner`: the entry stays without state, its
    /// dedupe ids dropping retries of the events that led there (a retried merge included), and
    /// handoffs that reach it later follow to the winner of its latest merge.
    pub(crate) fn settle_handed_off(&mut self, customer_id: &str, winner: &str) {
        if let Some(entry) = self.entry_mut(customer_id) {
            entry.merged_into = Some(Box::new(winner.to_owned()));
        }
        self.set_timer(customer_id, None);
        self.watch(customer_id, &[]);
    }

    /// The keys `customer_id` waits for now (see `watching`); unchanged lists cost no allocation.
    pub(crate) fn watch(&mut self, customer_id: &str, watches: &[(String, i64)]) {
        let current = self.watching.get(customer_id).map_or(&[][..], Vec::as_slice);
        let unchanged = current.len() == watches.len()
            && current
                .iter()
                .zip(watches)
                .all(|((key, since), (new_key, new_since))| key == new_key && since == new_since);
        if unchanged {
            return;
        }
        for (key, _) in self.watching.remove(customer_id).unwrap_or_default() {
            if let Some(customers) = self.watchers.get_mut(&key) {
                customers.remove(customer_id);
                if customers.is_empty() {
                    self.watchers.remove(&key);
                }
            }
        }
        if watches.is_empty() {
            return;
        }
        for (key, since) in watches {
            self.watchers.entry(key.clone()).or_default().insert(customer_id.to_owned(), *since);
        }
        self.watching.insert(customer_id.to_owned(), watches.to_vec());
    }

    /// A version of watched `key` appended at `appended` was read: each customer that has not
    /// seen the key through that time gets its timer at `due` at the latest.
    pub(crate) fn wake_watchers(&mut self, key: &str, appended: i64, due: i64) {
        let Some(customers) = self.watchers.get(key) else { return };
        let woken: Vec<String> = customers
            .iter()
            .filter(|(customer_id, since)| {
                **since < appended && self.timer_of.get(*customer_id).is_none_or(|current| *current > due)
            })
            .map(|(customer_id, _)| customer_id.clone())
            .collect();
        for customer_id in woken {
            self.set_timer(&customer_id, Some(due));
        }
    }

    /// When the earliest timer is due.
    pub(crate) fn earliest_timer(&self) -> Option<i64> {
        self.timers.first().map(|(due, _)| *due)
    }

    pub(crate) fn due_timer(&self, up_to: i64) -> Option<(i64, String)> {
        // Peeked before cloning: this runs before every record.
        match self.timers.first() {
            Some((due, _)) if *due <= up_to => self.timers.first().cloned(),
            _ => None,
        }
    }

    pub(crate) fn customer_count(&self) -> usize {
        self.customers.len()
    }

    pub(crate) fn footprint(&self) -> Footprint {
        // A hash table keeps a power of two of slots, up to 7/8 of them used; an empty one none.
        let capacity = self.customers.capacity();
        let slots = if capacity == 0 { 0 } else { (capacity * 8 / 7).next_power_of_two() };
        let slot_bytes = size_of::<(Box<str>, Held<S>)>() + 1;
        Footprint {
            customers: self.customers.len(),
            table_bytes: slots * slot_bytes + self.customers.keys().map(|id| id.len()).sum::<usize>(),
            record_bytes: self.records.live,
            garbage_bytes: self.records.garbage,
            chunk_bytes: self.records.chunks.iter().map(Vec::capacity).sum(),
            decoded: self.customers.values().filter(|held| !matches!(held, Held::Encoded { .. })).count(),
        }
    }

    fn set_timer(&mut self, customer_id: &str, due: Option<i64>) {
        if self.timer_of.get(customer_id).copied() == due {
            // Unchanged, as for most events: no allocation, no tree update.
            return;
        }
        if let Some(previous) = self.timer_of.remove(customer_id) {
            self.timers.remove(&(previous, customer_id.to_owned()));
        }
        if let Some(due) = due {
            self.timers.insert((due, customer_id.to_owned()));
            self.timer_of.insert(customer_id.to_owned(), due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure::{ErasureMarker, MarkerKey};

    type Store = PartitionStore<u32>;

    fn with_state(store: &mut Store, customer: &str, event: &str, state: u32, due: Option<i64>) {
        store.remember(customer, Some(event_id_hash(event)), 3).state = Some(state);
        store.settle(customer, due, false);
    }

    fn no_marker() -> MarkerId {
        panic!("no marker id is needed while the partition holds no markers")
    }

    #[test]
    fn the_partition_clock_follows_append_times_and_the_wall_clock_only_when_caught_up() {
        let mut store = Store::default();
        assert_eq!(store.on_record(1_000), 1_000, "given a first record at 1,000");
        assert_eq!(store.on_record(900), 1_000, "an earlier append time does not move it back");
        assert_eq!(store.follow_wall(5_000), 1_000, "with lag the wall clock is not followed");
        store.on_end_of_partition();
        assert_eq!(store.follow_wall(5_000), 5_000, "caught up, the sweep follows the wall clock");
        assert_eq!(store.follow_wall(4_000), 5_000, "a wall clock set back does not move it back");
        assert_eq!(
            store.on_record(4_500),
            4_500,
            "a record appended before the clock is applied as of its own time, timers due by then"
        );
        assert_eq!(store.clock(), 5_000, "the sweeps' clock stays");
        assert_eq!(store.follow_wall(9_000), 5_000, "a record means lag again until the next end");
    }

    #[test]
    fn an_event_id_is_a_duplicate_while_in_the_customers_window() {
        let mut store = Store::default();
        fn admit<'a>(store: &'a Store, customer: &str, event: &str) -> Admission<'a, u32> {
            store.admit(customer, no_marker, 0, Some(event_id_hash(event)), false, 0)
        }
        assert_eq!(admit(&store, "c-1", "e-1"), Admission::New(None), "nothing seen");
        for event in ["e-1", "e-2", "e-3"] {
            with_state(&mut store, "c-1", event, 1, None);
        }
        assert_eq!(admit(&store, "c-1", "e-1"), Admission::Duplicate, "the oldest of a full window");
        assert_eq!(admit(&store, "c-2", "e-1"), Admission::New(None), "another customer's id");
        with_state(&mut store, "c-1", "e-4", 1, None);
        assert_eq!(admit(&store, "c-1", "e-1"), Admission::New(Some(&1)), "forgotten beyond the window of 3");
        assert_eq!(admit(&store, "c-1", "e-2"), Admission::Duplicate);
        assert_eq!(store.entry("c-1").map(|entry| entry.recent.len()), Some(3));
        store.remember("c-1", Some(event_id_hash("e-5")), 0);
        assert_eq!(store.entry("c-1").map(|entry| entry.recent.len()), Some(1), "a window of 0 keeps one");
    }

    #[test]
    fn a_customer_found_without_a_marker_skips_the_markers_hmac_until_erased() {
        let key = MarkerKey::new(Some(b"test"));
        let mut store = Store::default();
        with_state(&mut store, "c-1", "e-1", 1, None);
        let marker = ErasureMarker { erased_at: 1_000, recorded_at: 1_000, recent: VecDeque::new() };
        store.markers.insert(key.id("c-2"), marker, 10_000);
        let computed = Cell::new(0);
        // Whether c-1's event is admitted for the processor, counting the HMACs computed.
        let admit = |store: &Store, event: &str| {
            let id = || {
                computed.set(computed.get() + 1);
                key.id("c-1")
            };
            matches!(
                store.admit("c-1", id, 2_000, Some(event_id_hash(event)), false, 2_000),
                Admission::New(_)
            )
        };
        assert!(admit(&store, "e-2"), "given another customer's marker");
        assert!(admit(&store, "e-3"));
        assert_eq!(computed.get(), 1, "then the HMAC is computed once");
        store.markers.insert(
            key.id("c-1"),
            ErasureMarker { erased_at: 1_500, recorded_at: 1_500, recent: VecDeque::new() },
            10_000,
        );
        store.entry_mut("c-1").expect("an entry").unmarked.set(false);
        assert!(admit(&store, "e-4"), "dated after the erasure");
        assert_eq!(computed.get(), 2, "erased (the mark cleared), it is computed again");
        assert!(admit(&store, "e-5"));
        assert_eq!(computed.get(), 3, "and on every event while the customer has a marker");
    }

    #[test]
    fn erased_customers_events_dated_before_the_erasure_and_retries_are_dropped() {
        let key = MarkerKey::new(Some(b"test"));
        let mut store = Store::default();
        // The customer came back after the erasure: the marker still rules their earlier events.
        with_state(&mut store, "c-1", "e-late", 1, None);
        let recent = VecDeque::from([event_id_hash("e-before")]);
        store.markers.insert(
            key.id("c-1"),
            ErasureMarker { erased_at: 1_000, recorded_at: 1_000, recent },
            10_000,
        );
        let admit = |customer: &str, occurred_at: i64, event: &str, suppress_after: bool| {
            store.admit(
                customer,
                || key.id(customer),
                occurred_at,
                Some(event_id_hash(event)),
                suppress_after,
                occurred_at,
            )
        };
        assert_eq!(
            admit("c-1", 999, "e-late", false),
            Admission::Erased,
            "dated before, though also a duplicate"
        );
        assert_eq!(admit("c-1", 1_000, "e-at", false), Admission::Erased, "dated at the erasure");
        assert_eq!(admit("c-1", 2_000, "e-before", false), Admission::Erased, "a retry of an erased event");
        assert_eq!(admit("c-1", 2_000, "e-new", false), Admission::New(Some(&1)), "a new relationship");
        assert_eq!(admit("c-1", 2_000, "e-new", true), Admission::Erased, "unless suppressed after erasure");
        assert_eq!(admit("c-2", 999, "e-late", false), Admission::New(None), "another customer");
    }

    #[test]
    fn timers_fire_earliest_first_and_move_with_the_state() {
        let mut store = Store::default();
        with_state(&mut store, "c-1", "e-1", 1, Some(300));
        with_state(&mut store, "c-2", "e-2", 1, Some(200));
        with_state(&mut store, "c-3", "e-3", 1, None);
        assert_eq!(store.due_timer(199), None, "none due yet");
        assert_eq!(store.due_timer(200), Some((200, "c-2".to_owned())), "due at its time");
        assert_eq!(store.due_timer(1_000), Some((200, "c-2".to_owned())), "earliest first");
        store.settle("c-2", Some(400), false);
        assert_eq!(store.due_timer(1_000), Some((300, "c-1".to_owned())), "c-2 moved past c-1");
        store.settle("c-1", None, false);
        assert_eq!(store.due_timer(1_000), Some((400, "c-2".to_owned())), "c-1 cancelled");
        store.settle("c-9", Some(100), false);
        store.settle("c-9", None, false);
        assert_eq!(store.due_timer(1_000), Some((400, "c-2".to_owned())), "a customer without entry too");
        store.entry_mut("c-2").expect("c-2 has state").state = None;
        store.settle("c-2", None, false);
        assert_eq!(store.due_timer(i64::MAX), None, "no timers left");
        assert!(store.entry("c-2").is_none(), "a customer without state is forgotten");
        assert_eq!(store.customer_count(), 2);
    }

    #[test]
    fn a_restored_store_has_each_customers_timer_window_and_marker() {
        let entry = |state: u32| {
            Box::new(Entry {
                recent: VecDeque::from([7]),
                state: Some(state),
                merged_into: None,
                unmarked: Cell::new(false),
            })
        };
        let customers = [
            ("c-1".to_owned(), Restored::Decoded(entry(500))),
            ("c-2".to_owned(), Restored::Decoded(entry(0))),
        ];
        let key = MarkerKey::new(Some(b"test"));
        let mut markers = Markers::default();
        markers.insert(
            key.id("c-3"),
            ErasureMarker { erased_at: 100, recorded_at: 100, recent: VecDeque::new() },
            1_000,
        );
        let mut store = Store::restored(
            customers.into_iter(),
            markers,
            None,
            |state| (*state > 0).then_some(i64::from(*state)),
            |_| Vec::new(),
        );
        assert_eq!(store.due_timer(i64::MAX), Some((500, "c-1".to_owned())));
        assert_eq!(
            store.admit("c-2", || key.id("c-2"), 0, Some(7), false, 0),
            Admission::Duplicate,
            "the window is restored"
        );
        assert_eq!(
            store.admit("c-3", || key.id("c-3"), 50, Some(1), false, 50),
            Admission::Erased,
            "the marker is kept"
        );
        assert_eq!(store.follow_wall(5_000), 0, "the clock is unknown (0) until the first record");
    }

    fn entry_of(state: u32, events: &[&str]) -> Box<Entry<u32>> {
        Box::new(Entry {
            recent: events.iter().map(|event| event_id_hash(event)).collect(),
            state: Some(state),
            merged_into: None,
            unmarked: Cell::new(false),
        })
    }

    fn encoded(entry: &Entry<u32>) -> Vec<u8> {
        rmp_serde::to_vec(entry).expect("encodes")
    }

    fn decoded(record: &[u8]) -> Entry<u32> {
        rmp_serde::from_slice(record).expect("decodes")
    }

    /// c-1 and c-2, restored held encoded.
    fn held_encoded() -> Store {
        let restored = [("c-1", 1, "e-1"), ("c-2", 2, "e-2")].map(|(customer, state, event)| {
            let record = encoded(&entry_of(state, &[event]));
            (customer.to_owned(), Restored::Encoded { record, due: None, watches: Vec::new() })
        });
        Store::restored(restored.into_iter(), Markers::default(), None, |_| None, |_| Vec::new())
    }

    #[test]
    fn given_customers_held_encoded_then_a_thawed_one_is_read_and_held_again_by_its_latest_record() {
        let mut store = held_encoded();
        let c2_record = store.record("c-2", |_| panic!("held encoded: not encoded again"));
        assert_eq!(store.state_of("c-1", decoded), Some(1), "read without thawing");
        store.thaw("c-1", decoded);
        store.thaw("c-2", decoded);
        store.thaw("c-9", |_| panic!("no entry: nothing to decode"));
        assert_eq!(
            store.admit_unjudged("c-1", Some(event_id_hash("e-1"))),
            Admission::Duplicate,
            "thawed, its window is read"
        );
        store.remember("c-1", Some(event_id_hash("e-3")), 8).state = Some(3);
        store.entry("c-1").expect("c-1").unmarked.set(true);
        let c1_record = encoded(store.entry("c-1").expect("c-1"));
        store.freeze("c-1", &c1_record);
        store.refreeze_unchanged();
        assert_eq!(
            store.record("c-1", |_| panic!("held encoded")),
            Some(c1_record),
            "the changed one is held by the record its commit wrote"
        );
        assert_eq!(
            store.record("c-2", |_| panic!("held encoded")),
            c2_record,
            "the one only read goes back to its record, not encoded again"
        );
        store.thaw("c-1", decoded);
        let entry = store.entry("c-1").expect("c-1");
        assert_eq!((entry.state, entry.unmarked.get()), (Some(3), true), "its state and its marker check");
        assert_eq!(store.customer_count(), 2);
    }

    #[test]
    fn given_records_replaced_longer_and_shorter_then_garbage_is_compacted_and_each_customer_keeps_theirs() {
        replace_longer_and_shorter_then_compact(None);
    }

    #[test]
    fn given_records_held_compressed_then_those_held_before_the_dictionary_are_compressed_by_a_compaction() {
        let store =
            replace_longer_and_shorter_then_compact(Some(Arc::new(RecordCompression::training_on(100))));
        let held = store.customers.values().filter_map(Held::record_at);
        let dictionary = store.records.dictionary.clone().expect("trained");
        for at in held.clone().filter(|at| !at.compressed()) {
            let record = store.records.read(at, &mut Vec::new()).to_vec();
            assert!(
                !dictionary.compress(&record, &mut Vec::new()),
                "a record the dictionary shortens is held compressed"
            );
        }
        let compressed = held.clone().filter(|at| at.compressed()).count();
        assert!(
            compressed * 2 > held.clone().count(),
            "most records compressed once the dictionary is trained"
        );
        let raw_bytes = held.clone().map(|at| store.records.read(at, &mut Vec::new()).len()).sum::<usize>();
        assert!(store.records.live < raw_bytes, "{} bytes held for {raw_bytes}", store.records.live);
    }

    #[test]
    fn given_records_restored_before_the_dictionary_then_the_next_commit_compresses_them_untouched() {
        let compression = Arc::new(RecordCompression::training_on(40));
        // Thirty customers sharing their event ids (a dictionary learns them), fewer than the
        // samples the dictionary needs.
        let events: Vec<String> = (0..64).map(|index| format!("e-{index}")).collect();
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let restore = |customers: std::ops::Range<u32>| {
            customers.map(|customer| {
                let record = encoded(&entry_of(customer, &events));
                (format!("c-{customer}"), Restored::Encoded { record, due: None, watches: Vec::new() })
            })
        };
        let restored = |customers| {
            Store::restored(
                restore(customers),
                Markers::default(),
                Some(compression.clone()),
                |_| None,
                |_| Vec::new(),
            )
        };
        let mut store = restored(0..30);
        assert!(store.records.awaiting_dictionary && compression.decided().is_none());
        // Another partition's restore brings the samples that train it.
        let other = restored(30..40);
        assert!(compression.decided().flatten().is_some(), "trained by the fortieth record");
        let raw_bytes = store.records.live;

        store.refreeze_unchanged();
        let held: Vec<At> = store.customers.values().filter_map(Held::record_at).collect();
        assert!(held.iter().all(|at| at.compressed()), "the untouched customers' records compressed");
        assert!(!store.records.awaiting_dictionary);
        assert!(store.records.live * 4 < raw_bytes, "{} bytes held for {raw_bytes}", store.records.live);
        for customer in 0..30 {
            assert_eq!(store.state_of(&format!("c-{customer}"), decoded), Some(customer));
        }
        assert_eq!(other.state_of("c-39", decoded), Some(39), "held as restored (the sample that trained)");
    }

    #[test]
    fn given_records_of_random_ids_then_the_process_holds_them_uncompressed_and_never_compacts_for_it() {
        let compression = Arc::new(RecordCompression::default());
        // Each customer's record is little but their own 64 dedupe ids (the event-counter's).
        let restored = (0..1_200_u32).map(|customer| {
            let events: Vec<String> = (0..64).map(|index| format!("c-{customer}-e-{index}")).collect();
            let events: Vec<&str> = events.iter().map(String::as_str).collect();
            let record = encoded(&entry_of(customer, &events));
            (format!("c-{customer}"), Restored::Encoded { record, due: None, watches: Vec::new() })
        });
        let mut store = Store::restored(
            restored,
            Markers::default(),
            Some(compression.clone()),
            |_| None,
            |_| Vec::new(),
        );
        assert_eq!(
            compression.decided().map(|dictionary| dictionary.is_some()),
            Some(false),
            "judged not to pay"
        );
        store.refreeze_unchanged();
        assert!(!store.records.wants_compaction(), "no compaction waits for a dictionary that will not come");
        assert_eq!(store.compressed_records(), 0);
        for customer in 0..1_200 {
            assert_eq!(store.state_of(&format!("c-{customer}"), decoded), Some(customer));
        }
    }

    /// 200 customers, 40 commits, each changing every customer; every seventh, to a shorter
    /// record. The store at the end.
    fn replace_longer_and_shorter_then_compact(compression: Option<Arc<RecordCompression>>) -> Store {
        let mut store =
            Store::restored(std::iter::empty(), Markers::default(), compression, |_| None, |_| Vec::new());
        let customers = 200_u32;
        for round in 1..=40_u32 {
            for customer in 0..customers {
                let id = format!("c-{customer}");
                store.thaw(&id, decoded);
                // Five ids in turn, all five in every customer's first record: records a
                // dictionary trained on those shortens (ids it never saw are random bytes).
                if round == 1 {
                    for first in 2..=5 {
                        store.remember(&id, Some(event_id_hash(&format!("e-{}", first % 5))), 64);
                    }
                }
                let entry = store.remember(&id, Some(event_id_hash(&format!("e-{}", round % 5))), 64);
                if round % 7 == 0 {
                    // A shorter record: written in the place of the last.
                    entry.recent.truncate(1);
                }
                entry.state = Some(round * 1_000 + customer);
                let record = encoded(store.entry(&id).expect("remembered"));
                store.freeze(&id, &record);
            }
            store.refreeze_unchanged();
            let records = &store.records;
            let used: usize = records.chunks.iter().map(Vec::len).sum();
            assert_eq!(used, records.live + records.garbage, "round {round}: every byte is live or garbage");
            assert!(
                records.garbage <= CHUNK_BYTES.max(records.live / 4),
                "round {round}: {} bytes of garbage for {} live were compacted",
                records.garbage,
                records.live
            );
        }
        for customer in 0..customers {
            let id = format!("c-{customer}");
            assert_eq!(store.state_of(&id, decoded), Some(40_000 + customer), "{id}");
            store.thaw(&id, decoded);
            let latest = store.entry(&id).expect("held").recent.back().copied();
            assert_eq!(latest, Some(event_id_hash("e-0")), "{id}'s latest event id");
        }
        store.refreeze_unchanged();
        store
    }

    #[test]
    #[should_panic(expected = "read before it was thawed")]
    fn an_entry_held_encoded_is_never_taken_for_an_absent_one() {
        let store = held_encoded();
        let _ = store.admit_unjudged("c-1", Some(event_id_hash("e-1")));
    }

    #[test]
    fn a_merge_puts_the_other_customers_ids_before_the_customers_own() {
        let mut store: PartitionStore<u32> = PartitionStore::default();
        for id in [1, 2, 3] {
            store.remember("w", Some(id), 6);
        }
        let loser = VecDeque::from([10, 11, 2]);
        let entry = store.remember_merged("w", &loser, 99, 6);
        assert_eq!(entry.recent, VecDeque::from([10, 11, 1, 2, 3, 99]), "the loser's first, once each");
        let mut full: PartitionStore<u32> = PartitionStore::default();
        for id in [1, 2, 3] {
            full.remember("w", Some(id), 4);
        }
        let entry = full.remember_merged("w", &loser, 99, 4);
        assert_eq!(entry.recent, VecDeque::from([1, 2, 3, 99]), "a full window keeps the winner's own");
    }
}
