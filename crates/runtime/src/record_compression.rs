//! The compression of the records customers are held by between transactions
//! (`--idle-state compressed`, issue 21): zstd with a dictionary trained once per process on the
//! first records of [`SAMPLES`] customers held, shared by every partition. A changelog record is
//! a kilobyte or two, too short for zstd alone to find much to reuse (profile-updater's 1,870
//! bytes at 64 events per customer: 1,236 without a dictionary, about 950 with one of 8 KiB
//! trained on 500 to 8,000 others; loyalty-points' 1,359: 923 and 909; `zstd --train` on records
//! dumped by `omnistream-hot-path`). The dictionary learns what every customer's record repeats:
//! the names of event types, channels and traits. What is left is mostly the 64 dedupe ids, which
//! no compression can shorten. Records held before the dictionary exists are kept as they are and
//! compressed by the next compaction of their partition.

use std::sync::{Arc, Mutex, OnceLock};

use zstd::bulk::{Compressor, Decompressor};

/// Records sampled before training: 500 gave the same sizes as 2,000 (above), and training on
/// them takes about 0.1 s, once.
const SAMPLES: usize = 1_000;
const DICTIONARY_BYTES: usize = 8 << 10;
/// zstd's fastest level: level 3 shortened profile-updater's records by 1 %.
const LEVEL: i32 = 1;

/// The process's dictionary, once trained, and the samples until then.
pub(crate) struct RecordCompression {
    /// Decided by the samples: the dictionary, or `None` where compression does not pay.
    decided: OnceLock<Option<Arc<Dictionary>>>,
    samples: Mutex<Samples>,
    /// How many records train the dictionary.
    train_on: usize,
    /// Whether the samples judge if compression pays (tests compress whatever it gains).
    judges: bool,
}

impl Default for RecordCompression {
    fn default() -> Self {
        Self { judges: true, ..Self::training_on(SAMPLES) }
    }
}

impl std::fmt::Debug for RecordCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCompression").field("decided", &self.decided.get().is_some()).finish()
    }
}

#[derive(Default)]
struct Samples {
    bytes: Vec<u8>,
    sizes: Vec<usize>,
}

/// A trained dictionary's contexts. The engine runs on one thread: the locks are never waited on.
pub(crate) struct Dictionary {
    compressor: Mutex<Compressor<'static>>,
    decompressor: Mutex<Decompressor<'static>>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dictionary")
    }
}

impl RecordCompression {
    /// One that trains its dictionary on the first `samples` records and compresses whenever
    /// that shortens a record (`ProcessorTest`: a few, so that a short test's records are
    /// compressed too).
    pub(crate) fn training_on(samples: usize) -> Self {
        Self { decided: OnceLock::new(), samples: Mutex::default(), train_on: samples.max(1), judges: false }
    }

    /// `None` while sampling; then the dictionary, or `None` if compressing does not pay.
    pub(crate) fn decided(&self) -> Option<Option<Arc<Dictionary>>> {
        self.decided.get().cloned()
    }

    /// Takes `record`, held uncompressed while sampling, as a sample; the last sample trains
    /// the dictionary and decides whether it pays.
    pub(crate) fn sample(&self, record: &[u8]) {
        if self.decided.get().is_some() {
            return;
        }
        let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.bytes.extend_from_slice(record);
        samples.sizes.push(record.len());
        if samples.sizes.len() < self.train_on {
            return;
        }
        let Samples { bytes, sizes } = std::mem::take(&mut *samples);
        let started = std::time::Instant::now();
        // Trained on three quarters, judged on the rest: a dictionary holds pieces of the records
        // it learned from, so they would shorten even where nothing repeats between customers.
        let learned = if self.judges { (sizes.len() * 3 / 4).max(1) } else { sizes.len() };
        let learned_bytes: usize = sizes[..learned].iter().sum();
        let trained = zstd::dict::from_continuous(
            &bytes[..learned_bytes],
            &sizes[..learned],
            DICTIONARY_BYTES,
        )
        .unwrap_or_else(|error| {
            // Too few distinct bytes to learn from (customers with next to no state): zstd
            // without a dictionary still shortens what is long.
            tracing::warn!(%error, "record compression: no dictionary trained, compressing without one");
            Vec::new()
        });
        let dictionary = Dictionary::new(&trained).expect("zstd takes a dictionary it trained");
        let judged = &bytes[learned_bytes..];
        let compressed = dictionary.compressed_bytes(judged, &sizes[learned..]);
        let pays = !self.judges || compressed * 10 <= judged.len() * 9;
        tracing::info!(
            samples = sizes.len(),
            dictionary_bytes = trained.len(),
            judged_bytes = judged.len(),
            compressed_bytes = compressed,
            compressing = pays,
            millis = started.elapsed().as_millis() as u64,
            "record compression: dictionary trained{}",
            if pays { "" } else { "; records held uncompressed: it saves less than a tenth" }
        );
        // Only this call decides: the lock is held and the samples are taken.
        let _ = self.decided.set(pays.then(|| Arc::new(dictionary)));
    }
}

impl Dictionary {
    /// What the records `bytes` holds, of `sizes`, take compressed (or as they are, where that
    /// is shorter).
    fn compressed_bytes(&self, bytes: &[u8], sizes: &[usize]) -> usize {
        let (mut rest, mut out, mut total) = (bytes, Vec::new(), 0);
        for size in sizes {
            let (record, after) = rest.split_at(*size);
            total += if self.compress(record, &mut out) { out.len() } else { record.len() };
            rest = after;
        }
        total
    }

    fn new(dictionary: &[u8]) -> std::io::Result<Self> {
        let mut compressor = Compressor::with_dictionary(LEVEL, dictionary)?;
        // The dictionary is the process's own, and records are checked by the MessagePack
        // decoding: neither its id nor a checksum is worth 4 bytes a customer.
        compressor.include_dictid(false)?;
        compressor.include_checksum(false)?;
        Ok(Self {
            compressor: Mutex::new(compressor),
            decompressor: Mutex::new(Decompressor::with_dictionary(dictionary)?),
        })
    }

    /// `record` compressed into `out` (cleared first), if that is shorter.
    pub(crate) fn compress(&self, record: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(record.len()));
        let mut compressor = self.compressor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        compressor.compress_to_buffer(record, out).expect("the buffer has zstd's bound") > 0
            && out.len() < record.len()
    }

    /// The record `compressed` holds, into `out` (cleared first). The bytes are this process's
    /// own: one that does not decompress is a bug, and the process exits.
    pub(crate) fn decompress(&self, compressed: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let size = zstd::zstd_safe::get_frame_content_size(compressed)
            .ok()
            .flatten()
            .expect("a held record's frame gives its size");
        out.reserve(usize::try_from(size).expect("a held record fits in memory"));
        let mut decompressor = self.decompressor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        decompressor.decompress_to_buffer(compressed, out).expect("a held record decompresses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize) -> Vec<u8> {
        format!(
            "{{\"channel\":\"whatsapp\",\"type\":\"message_delivered\",\"count\":{index},\"id\":{}}}",
            index * 7919
        )
        .into_bytes()
    }

    #[test]
    fn no_dictionary_until_the_last_sample_then_records_round_trip_shorter() {
        let compression = RecordCompression::default();
        for index in 0..SAMPLES - 1 {
            compression.sample(&record(index));
        }
        assert!(compression.decided().is_none(), "decided early");
        compression.sample(&record(SAMPLES));
        let dictionary = compression.decided().flatten().expect("trained by the last sample");
        let (long, mut compressed, mut back) = (record(123_456), Vec::new(), Vec::new());
        assert!(dictionary.compress(&long, &mut compressed), "shorter with the dictionary");
        assert!(compressed.len() < long.len() / 2, "{} of {} bytes", compressed.len(), long.len());
        dictionary.decompress(&compressed, &mut back);
        assert_eq!(back, long);
    }

    #[test]
    fn records_of_random_bytes_are_held_uncompressed() {
        // The event-counter's records are mostly their 64 dedupe ids: random bytes.
        let mut seed = 21_u64;
        let mut random = || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            (seed ^ (seed >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9).to_le_bytes()
        };
        let compression = RecordCompression::default();
        for _ in 0..SAMPLES {
            let record: Vec<u8> = (0..64).flat_map(|_| random()).collect();
            compression.sample(&record);
        }
        assert_eq!(compression.decided().map(|dictionary| dictionary.is_some()), Some(false));
    }

    #[test]
    fn a_record_compression_would_lengthen_is_not_compressed() {
        let dictionary = Dictionary::new(&[]).expect("no dictionary");
        assert!(!dictionary.compress(&[7], &mut Vec::new()));
    }
}
