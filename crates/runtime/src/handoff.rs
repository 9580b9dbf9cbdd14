//! The record that moves one customer's state to another (a merge), through the service's
//! handoff topic: keyed by the winner, so it lands on the winner's partition, and applied there
//! once by its id (docs/runtime.md, "State handoff").

use serde::{Deserialize, Serialize};

use crate::config::IdsLayout;
use crate::processor::{InputEvent, Processor};
use crate::store::Entry;

/// The handoff record's value (MessagePack, by position: fields are only ever added at the end).
#[derive(Debug, Serialize, Deserialize)]
struct HandoffValue {
    /// The handoff's id: the `event_id` of the event that asked for it.
    id: String,
    /// The customer whose state this was.
    from: String,
    /// That event's `occurred_at` (unix millis): an erasure of the winner dated later drops it.
    occurred_at: i64,
    /// The loser's entry, as its changelog record would hold it (versioned state).
    #[serde(with = "serde_bytes")]
    entry: Vec<u8>,
}

/// A handoff as the winner's partition reads it.
#[derive(Debug)]
pub(crate) struct Handoff<S> {
    pub(crate) id: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) occurred_at: i64,
    pub(crate) entry: Entry<S>,
}

/// The value of the handoff record for `handed`, the state `event` asked to move, its dedupe ids in
/// `layout` (the winner's partition may be read by an instance of an older release).
pub(crate) fn encode<P: Processor>(
    event: &P::Input,
    handed: &Entry<P::State>,
    layout: IdsLayout,
) -> Result<Vec<u8>, String> {
    let mut entry = Vec::with_capacity(256);
    crate::changelog::encode::<P>(handed, layout, &mut entry);
    let value = HandoffValue {
        id: event.event_id().to_owned(),
        from: event.key().to_owned(),
        occurred_at: event.occurred_at_millis(),
        entry,
    };
    rmp_serde::to_vec(&value).map_err(|e| format!("the handoff of {} does not serialize: {e}", event.key()))
}

/// Why a handoff record cannot be applied.
#[derive(Debug)]
pub(crate) enum HandoffError {
    /// It does not decode: dead-lettered.
    Unreadable(String),
    /// A newer release wrote its state: only that release can apply it.
    Newer(String),
}

/// Reads a handoff record.
pub(crate) fn decode<P: Processor>(
    processor: &P,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<Handoff<P::State>, HandoffError> {
    let unreadable = |text: String| HandoffError::Unreadable(text);
    let to = key
        .and_then(|key| std::str::from_utf8(key).ok())
        .ok_or_else(|| unreadable("a handoff record's key must be the winner's customer id (UTF-8)".into()))?
        .to_owned();
    let value: HandoffValue =
        rmp_serde::from_slice(payload.ok_or_else(|| unreadable("a handoff record has no value".into()))?)
            .map_err(|e| unreadable(format!("the handoff record does not decode: {e}")))?;
    let entry = crate::changelog::decode(processor, &value.entry).map_err(|e| {
        let text = format!("the state handed from {} to {to} does not decode: {e}", value.from);
        match e {
            crate::changelog::StateDecodeError::Newer { .. } => HandoffError::Newer(text),
            crate::changelog::StateDecodeError::Malformed { .. } => HandoffError::Unreadable(text),
        }
    })?;
    Ok(Handoff { id: value.id, from: value.from, to, occurred_at: value.occurred_at, entry })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::HandoffValue;

    /// The entry a handoff record carries, as its changelog record would hold it.
    pub(crate) fn entry_of(value: &[u8]) -> Vec<u8> {
        rmp_serde::from_slice::<HandoffValue>(value).expect("a handoff record").entry
    }

    /// A handoff record whose state says it was written with `version`.
    pub(crate) fn value_with_state_version(version: u8) -> Vec<u8> {
        let value = HandoffValue {
            id: "m-9".into(),
            from: "c-9".into(),
            occurred_at: 0,
            entry: vec![0xc1, version, 0x90],
        };
        rmp_serde::to_vec(&value).expect("serializes")
    }
}
