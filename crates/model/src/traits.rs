//! Trait resolution (SPEC 4, shared semantics), the one function every service that reads a trait
//! uses: a trait's value is what applying every `set`, `set_once` and `unset` of it in
//! `occurred_at` order (ties: arrival order) gives, whatever order they arrive in. `set_once`
//! applies only if the trait is absent at that point.
//!
//! Kept per trait, bounded: the latest `set` or `unset` by event time (the base: nothing before it
//! can matter), and the `set_once`s after it, earliest first (one of them decides when the base is
//! an `unset`, or a later `unset` arrives).

use serde::{Deserialize, Serialize};

use crate::event::TraitValue;

/// `set_once`s kept after the base; beyond it the latest are dropped (the earliest decide).
pub const SET_ONCE_KEPT: usize = 8;

/// What decides one trait. Times are unix millis of `occurred_at`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TraitHistory {
    /// The latest `set` (a value) or `unset` (`None`) by event time, and its time.
    pub base: Option<(Option<TraitValue>, i64)>,
    /// `set_once`s not older than the base, earliest first (ties: arrival order).
    pub set_once: Vec<(TraitValue, i64)>,
}

/// A trait's resolved state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    /// Set (by `set`, or by `set_once` when `by_set_once`) at `at`.
    Value { value: &'a TraitValue, at: i64, by_set_once: bool },
    /// Removed by an `unset` at `at`.
    Unset { at: i64 },
}

impl TraitHistory {
    /// A `set` at `at`; setting `null` is an `unset` (the profile shows an unset trait as null).
    pub fn set(&mut self, value: &TraitValue, at: i64) {
        let value = (*value != TraitValue::Null).then(|| value.clone());
        self.rebase(value, at);
    }

    /// An `unset` at `at`.
    pub fn unset(&mut self, at: i64) {
        self.rebase(None, at);
    }

    /// A `set_once` at `at`; one of `null` sets nothing, so it is no operation at all.
    pub fn set_once(&mut self, value: &TraitValue, at: i64) {
        if *value == TraitValue::Null || self.base.as_ref().is_some_and(|(_, base_at)| at < *base_at) {
            // Before the base, which decides whatever came earlier.
            return;
        }
        // After the `set_once`s of the same time that arrived earlier.
        let index = self.set_once.partition_point(|(_, other)| *other <= at);
        if index < SET_ONCE_KEPT {
            self.set_once.insert(index, (value.clone(), at));
            self.set_once.truncate(SET_ONCE_KEPT);
        }
    }

    fn rebase(&mut self, value: Option<TraitValue>, at: i64) {
        // Ties: the later arrival is later in the order, so it becomes the base.
        if self.base.as_ref().is_some_and(|(_, base_at)| at < *base_at) {
            return;
        }
        self.base = Some((value, at));
        // A `set_once` of the same time that arrived earlier came before this base: dropped.
        self.set_once.retain(|(_, once_at)| *once_at > at);
    }

    /// Takes in another customer's history of the same trait (a merge): its base and its
    /// `set_once`s, as if they had arrived after this one's (the trait rule decides by event
    /// time, arrival order only breaks ties).
    pub fn absorb(&mut self, other: &TraitHistory) {
        if let Some((value, at)) = &other.base {
            self.rebase(value.clone(), *at);
        }
        for (value, at) in &other.set_once {
            self.set_once(value, *at);
        }
    }

    /// The trait now; `None` if no operation of it is known.
    pub fn resolved(&self) -> Option<Resolved<'_>> {
        match &self.base {
            Some((Some(value), at)) => Some(Resolved::Value { value, at: *at, by_set_once: false }),
            base => match (self.set_once.first(), base) {
                (Some((value, at)), _) => Some(Resolved::Value { value, at: *at, by_set_once: true }),
                (None, Some((None, at))) => Some(Resolved::Unset { at: *at }),
                (None, _) => None,
            },
        }
    }

    /// The value now, if the trait is set.
    pub fn value(&self) -> Option<&TraitValue> {
        match self.resolved()? {
            Resolved::Value { value, .. } => Some(value),
            Resolved::Unset { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> TraitValue {
        TraitValue::String(value.to_owned())
    }

    /// The case the issue found: suppression took a `set` over an older `set_once`, differently
    /// from profile-updater. Arrival: set_once A@5, set B@1, unset@3. In event-time order: B@1,
    /// unset@3 (absent), set_once A@5 (applies: absent) → A.
    #[test]
    fn a_late_unset_revives_a_set_once_that_came_after_it() {
        let mut history = TraitHistory::default();
        history.set_once(&text("A"), 5);
        history.set(&text("B"), 1);
        assert_eq!(history.value(), Some(&text("B")), "B@1 then set_once A@5: still B");
        history.unset(3);
        assert_eq!(history.value(), Some(&text("A")));
    }
}
