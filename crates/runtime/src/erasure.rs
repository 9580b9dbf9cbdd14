//! Erasure is final (SPEC 4.5). When a customer is erased, the runtime keeps a marker for a
//! horizon (default 30 days of partition clock): it holds only an HMAC-SHA256 of the customer id,
//! the erasure's event time and the hashes of the customer's recent event ids. While it lives,
//! every service drops the customer's retried events and events dated at or before the erasure
//! (outcome `erased`), so nothing in flight recreates them; an event dated after it starts a new
//! relationship unless `suppress_after_erasure` is set.
//!
//! Markers live in the service's changelog under their own keys (a NUL, `erased:`, the HMAC in
//! hex), restored with the state, and are tombstoned when the horizon passes.

use std::collections::{BTreeSet, VecDeque};

use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The key used when none is configured (a warning says so at start).
const BUILT_IN_KEY: &[u8] = b"omnistream erasure markers: configure ERASURE_HMAC_KEY";
/// Changelog keys of markers start with this (a NUL: no customer id a producer sends has one).
const MARKER_KEY_PREFIX: &str = "\u{0}erased:";

/// An erased customer's marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureMarker {
    /// The erasure's `occurred_at` (unix millis): events dated at or before it are dropped.
    pub erased_at: i64,
    /// The partition clock when the erasure was applied: the horizon counts from it.
    pub recorded_at: i64,
    /// Hashes of the customer's recent event ids (their retries are dropped too).
    pub recent: VecDeque<u64>,
}

/// The HMAC of a customer id, as the marker's identity.
pub type MarkerId = [u8; 32];

/// Computes marker ids with the configured key.
#[derive(Clone)]
pub struct MarkerKey(Hmac<Sha256>);

impl std::fmt::Debug for MarkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarkerKey(..)")
    }
}

impl MarkerKey {
    pub fn new(key: Option<&[u8]>) -> Self {
        let mac =
            Hmac::<Sha256>::new_from_slice(key.unwrap_or(BUILT_IN_KEY)).expect("HMAC takes any key length");
        Self(mac)
    }

    pub fn id(&self, customer_id: &str) -> MarkerId {
        let mut mac = self.0.clone();
        mac.update(customer_id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The changelog key of a marker.
pub fn changelog_key(id: &MarkerId) -> String {
    let hex: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{MARKER_KEY_PREFIX}{hex}")
}

/// The marker id in a changelog key, if it is a marker's.
pub fn marker_id_of(key: &str) -> Option<MarkerId> {
    let hex = key.strip_prefix(MARKER_KEY_PREFIX)?;
    let mut id = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (index, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(id)
}

/// What to do with an event of a customer who may have been erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Dropped: a retry, dated at or before the erasure, or suppressed after it.
    Erased,
}

/// The markers of one partition.
#[derive(Debug, Default)]
pub struct Markers {
    /// Each marker with the partition clock its horizon passes at.
    by_id: FxHashMap<MarkerId, (ErasureMarker, i64)>,
    /// (expires at, id), to tombstone markers whose horizon passed.
    expiry: BTreeSet<(i64, MarkerId)>,
}

impl Markers {
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains(&self, id: &MarkerId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Whether a record of an erased customer is applied: `event_hash` is its id's, when it
    /// has one a retry repeats. A marker whose horizon has passed by `judged_at` (the record's
    /// own time) does not judge it, whether or not the partition clock has expired it yet.
    pub fn verdict(
        &self,
        id: &MarkerId,
        occurred_at: i64,
        event_hash: Option<u64>,
        suppress_after: bool,
        judged_at: i64,
    ) -> Verdict {
        match self.by_id.get(id) {
            Some((marker, expires_at))
                if *expires_at > judged_at
                    && (suppress_after
                        || occurred_at <= marker.erased_at
                        || event_hash.is_some_and(|hash| marker.recent.contains(&hash))) =>
            {
                Verdict::Erased
            }
            _ => Verdict::Apply,
        }
    }

    /// Records an erasure; a later erasure of the same customer replaces an earlier one.
    pub fn insert(&mut self, id: MarkerId, marker: ErasureMarker, horizon_ms: i64) {
        if let Some((_, previous_expiry)) = self.by_id.remove(&id) {
            self.expiry.remove(&(previous_expiry, id));
        }
        let expires_at = marker.recorded_at.saturating_add(horizon_ms);
        self.expiry.insert((expires_at, id));
        self.by_id.insert(id, (marker, expires_at));
    }

    pub fn remove(&mut self, id: &MarkerId) {
        if let Some((_, expires_at)) = self.by_id.remove(id) {
            self.expiry.remove(&(expires_at, *id));
        }
    }

    pub fn get(&self, id: &MarkerId) -> Option<&ErasureMarker> {
        self.by_id.get(id).map(|(marker, _)| marker)
    }

    /// Removes the markers whose horizon has passed by `clock`; returns their ids.
    pub fn expire(&mut self, clock: i64) -> Vec<MarkerId> {
        let mut expired = Vec::new();
        while let Some(&(expires_at, id)) = self.expiry.first() {
            if expires_at > clock {
                break;
            }
            self.expiry.pop_first();
            self.by_id.remove(&id);
            expired.push(id);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_drops_retries_and_older_events_and_expires_after_the_horizon() {
        let key = MarkerKey::new(Some(b"secret"));
        let id = key.id("c-1");
        assert_ne!(id, MarkerKey::new(Some(b"other")).id("c-1"), "keyed");
        assert_eq!(marker_id_of(&changelog_key(&id)), Some(id));
        assert_eq!(marker_id_of("c-1"), None);
        let mut markers = Markers::default();
        markers.insert(
            id,
            ErasureMarker { erased_at: 100, recorded_at: 150, recent: VecDeque::from([7]) },
            1_000,
        );
        assert_eq!(markers.verdict(&id, 100, Some(1), false, 300), Verdict::Erased, "dated at the erasure");
        assert_eq!(markers.verdict(&id, 200, Some(7), false, 300), Verdict::Erased, "a retry");
        assert_eq!(markers.verdict(&id, 200, Some(8), false, 300), Verdict::Apply, "a new relationship");
        assert_eq!(markers.verdict(&id, 200, Some(8), true, 300), Verdict::Erased, "suppress after erasure");
        assert_eq!(
            markers.verdict(&key.id("c-2"), 1, Some(7), true, 300),
            Verdict::Apply,
            "another customer"
        );
        assert_eq!(
            markers.verdict(&id, 100, Some(7), false, 1_150),
            Verdict::Apply,
            "a record of the horizon's time is not judged, expired or not"
        );
        assert!(markers.expire(1_149).is_empty());
        assert_eq!(markers.expire(1_150), vec![id]);
        assert!(markers.is_empty());
    }
}
