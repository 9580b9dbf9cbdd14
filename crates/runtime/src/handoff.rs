//! The record that moves one customer's state to another (a merge), through the service's
//! handoff topic: keyed by the winner, so it lands on the winner's partition, and applied there
//! once by its id (docs/runtime.md, "State handoff").

use omnistream_model::TouchpointEvent;
use serde::{Deserialize, Serialize};

use crate::processor::Processor;
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

/// The value of the handoff record for `handed`, the state `event` asked to move.
pub(crate) fn encode<P: Processor>(
    event: &TouchpointEvent,
    handed: &Entry<P::State>,
) -> Result<Vec<u8>, String> {
    let mut entry = Vec::with_capacity(256);
    crate::changelog::encode::<P>(handed, &mut entry);
    let value = HandoffValue {
        id: event.event_id.clone(),
        from: event.customer_id.clone(),
        occurred_at: event.occurred_at.timestamp_millis(),
        entry,
    };
    rmp_serde::to_vec(&value)
        .map_err(|e| format!("the handoff of {} does not serialize: {e}", event.customer_id))
}

/// Reads a handoff record; `Err` says why it cannot be applied.
pub(crate) fn decode<P: Processor>(
    processor: &P,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<Handoff<P::State>, String> {
    let to = key
        .and_then(|key| std::str::from_utf8(key).ok())
        .ok_or("a handoff record's key must be the winner's customer id (UTF-8)")?
        .to_owned();
    let value: HandoffValue = rmp_serde::from_slice(payload.ok_or("a handoff record has no value")?)
        .map_err(|e| format!("the handoff record does not decode: {e}"))?;
    let entry = crate::changelog::decode(processor, &value.entry)
        .map_err(|e| format!("the state handed from {} does not decode: {e}", value.from))?;
    Ok(Handoff { id: value.id, from: value.from, to, occurred_at: value.occurred_at, entry })
}
