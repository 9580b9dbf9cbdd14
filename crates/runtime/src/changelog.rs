//! The value of a customer's changelog record: a version tag, then the runtime's [`Entry`] in
//! MessagePack. MessagePack writes structs as arrays (by position), so a state type only ever
//! grows fields at its end, each with a serde default; the tag says which layout and which
//! semantics wrote the record, and [`Processor::upgrade_state`] brings an older one up to date.
//!
//! Records written before the tag existed (2026-11 and earlier) are state version 1.

use crate::processor::Processor;
use crate::store::Entry;

/// First byte of a tagged record: 0xc1 is the one byte MessagePack never uses, so it cannot be
/// the start of an untagged (version 1) record.
const TAG: u8 = 0xc1;

/// Why a changelog record cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum StateDecodeError {
    #[error(
        "written by a newer release (state version {written}; this build reads up to {supported}): \
         roll forward, or reset the changelog and replay the input"
    )]
    Newer { written: u8, supported: u8 },
    #[error("state version {version} does not decode: {source}")]
    Malformed { version: u8, source: rmp_serde::decode::Error },
}

/// Appends the tagged record of `entry` to `out`.
pub fn encode<P: Processor>(entry: &Entry<P::State>, out: &mut Vec<u8>) {
    out.extend_from_slice(&[TAG, P::STATE_VERSION]);
    rmp_serde::encode::write(out, entry).expect("state serializes");
}

/// Decodes a record of any state version up to `P::STATE_VERSION`, upgraded to the current one.
pub fn decode<P: Processor>(processor: &P, bytes: &[u8]) -> Result<Entry<P::State>, StateDecodeError> {
    let (version, body) = match bytes {
        [TAG, version, body @ ..] => (*version, body),
        untagged => (1, untagged),
    };
    if version > P::STATE_VERSION {
        return Err(StateDecodeError::Newer { written: version, supported: P::STATE_VERSION });
    }
    let mut entry: Entry<P::State> =
        rmp_serde::from_slice(body).map_err(|source| StateDecodeError::Malformed { version, source })?;
    if version < P::STATE_VERSION
        && let Some(state) = entry.state.as_mut()
    {
        processor.upgrade_state(state, version);
    }
    Ok(entry)
}
