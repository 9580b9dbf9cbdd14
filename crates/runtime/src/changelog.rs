//! The value of a customer's changelog record: a version tag, then the runtime's [`Entry`] in
//! MessagePack. MessagePack writes structs as arrays (by position), so a state type only ever
//! grows fields at its end, each with a serde default; the tag says which layout and which
//! semantics wrote the record, and [`Processor::upgrade_state`] brings an older one up to date.
//!
//! Records written before the tag existed (2026-11 and earlier) are state version 1.

use crate::config::IdsLayout;
use crate::processor::Processor;
use crate::store::Entry;

/// First byte of a tagged record: 0xc1 is the one byte MessagePack never uses, so it cannot be
/// the start of an untagged (version 1) record.
const TAG: u8 = 0xc1;

/// Set in the version byte of a record that may hold its event id hashes as one byte string
/// (written since 2026-12-07, `Entry::recent`): a release from before reads the byte as a state
/// version above its own and refuses the record as written by a newer release, where it would
/// fail to decode it or misread it. The state version is the byte without it.
const HASHES_AS_BYTES: u8 = 0x80;

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

/// Appends the tagged record of `entry` to `out`, its dedupe ids in `layout`.
pub fn encode<P: Processor>(entry: &Entry<P::State>, layout: IdsLayout, out: &mut Vec<u8>) {
    const { assert!(P::STATE_VERSION < HASHES_AS_BYTES, "a state version is below 128") };
    out.push(TAG);
    match layout {
        IdsLayout::Bytes => {
            out.push(HASHES_AS_BYTES | P::STATE_VERSION);
            rmp_serde::encode::write(out, entry).expect("state serializes");
        }
        IdsLayout::Array => {
            out.push(P::STATE_VERSION);
            // The entry's fields by position, as a struct is written, the ids as a sequence.
            let fields = (&entry.recent, &entry.state, &entry.merged_into);
            rmp_serde::encode::write(out, &fields).expect("state serializes");
        }
    }
}

/// Whether `bytes` is a record of this build's state version written in `layout` (held as it is,
/// needing no upgrade).
pub fn is_current<P: Processor>(bytes: &[u8], layout: IdsLayout) -> bool {
    let version = match layout {
        IdsLayout::Bytes => HASHES_AS_BYTES | P::STATE_VERSION,
        IdsLayout::Array => P::STATE_VERSION,
    };
    matches!(bytes, [TAG, written, ..] if *written == version)
}

/// Decodes a record of any state version up to `P::STATE_VERSION`, upgraded to the current one.
pub fn decode<P: Processor>(processor: &P, bytes: &[u8]) -> Result<Entry<P::State>, StateDecodeError> {
    let (version, body) = match bytes {
        [TAG, version, body @ ..] => (*version & !HASHES_AS_BYTES, body),
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

/// Changelog keys of input positions start with this (a NUL, like erasure markers' keys); the
/// input topic's name follows.
const POSITION_KEY_PREFIX: &str = "\u{0}position:";
/// The changelog key of a customer whose id starts with a NUL (producers may send any string):
/// this prefix, then the id, so that no customer's key is ever read as a marker or a position.
const ESCAPED_CUSTOMER_PREFIX: &str = "\u{0}customer:";
/// The header that carries a position record's offset, in decimal.
pub(crate) const POSITION_HEADER: &str = "omnistream.position";

/// The changelog key of `customer_id`'s entry.
pub(crate) fn customer_key(customer_id: &str) -> String {
    if customer_id.starts_with('\0') {
        format!("{ESCAPED_CUSTOMER_PREFIX}{customer_id}")
    } else {
        customer_id.to_owned()
    }
}

/// The customer id of a changelog key written by [`customer_key`] for an id with a NUL first.
pub(crate) fn escaped_customer_of(key: &str) -> Option<&str> {
    key.strip_prefix(ESCAPED_CUSTOMER_PREFIX)
}

/// The changelog key under which a partition's position in `topic` is written.
pub(crate) fn position_key(topic: &str) -> String {
    format!("{POSITION_KEY_PREFIX}{topic}")
}

/// The input topic a changelog key is the position of, if it is a position's.
pub(crate) fn position_topic_of(key: &str) -> Option<&str> {
    key.strip_prefix(POSITION_KEY_PREFIX)
}

/// A position record's value: an entry without state or event ids, tagged state version 1. The
/// offset is in the [`POSITION_HEADER`]; a release from before positions (2026-12-06) reads the
/// record as a customer with nothing, instead of failing on it in a rolling upgrade or after a
/// rollback.
pub(crate) fn position_value() -> Vec<u8> {
    let empty: Entry<()> =
        Entry { recent: Default::default(), state: None, merged_into: None, unmarked: Default::default() };
    let mut out = vec![TAG, 1];
    rmp_serde::encode::write(&mut out, &empty).expect("an empty entry serializes");
    out
}

/// A position header's offset.
pub(crate) fn decode_position(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok().filter(|next: &i64| *next >= 0)
}

/// The metadata of every offset a service's transaction commits: such an offset has its
/// partition's position in the changelog next to it. An offset committed by anything else (an
/// operator's `kafka-consumer-groups.sh --reset-offsets`) has other metadata.
pub(crate) const OFFSET_METADATA: &str = "omnistream: position in the changelog";

/// Where a restored partition's input resumes, from the group's committed offset (with its
/// metadata) and the position its changelog holds.
///
/// Both are written in one transaction, so they agree; `make chaos` once saw a broker commit a
/// transaction's offsets while aborting its changelog records and outputs. The changelog's
/// position is what the restored state is as of, so it wins over an offset a transaction
/// committed, and over none (offsets expire after `offsets.retention.minutes`: resuming from the
/// earliest offset would apply the retained input to the state a second time). An operator's
/// reset wins over it.
pub(crate) fn resume_offset(committed: Option<(i64, &str)>, in_changelog: Option<i64>) -> Option<i64> {
    match (committed, in_changelog) {
        (Some((offset, metadata)), _) if metadata != OFFSET_METADATA => Some(offset),
        (_, Some(position)) => Some(position),
        (committed, None) => committed.map(|(offset, _)| offset),
    }
}

/// A transaction the brokers committed in part, as a restore sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// Its offsets committed, its changelog records (and outputs) not.
    OffsetsWithoutChangelog,
    /// Its changelog records committed, its offsets not.
    ChangelogWithoutOffsets,
}

/// Whether a partition's committed offsets, read `before` and `after` the changelog's
/// `position`, show a split transaction. Only the runtime's own offsets count (an operator's are
/// followed as they are). Without a split, an offset read before the changelog is never past
/// the position, and one read after it is never short of it: another member committing
/// meanwhile moves both.
pub(crate) fn split_seen(
    before: Option<(i64, &str)>,
    position: Option<i64>,
    after: Option<(i64, &str)>,
) -> Option<Split> {
    let position = position?;
    let ours =
        |read: Option<(i64, &str)>| read.filter(|(_, metadata)| *metadata == OFFSET_METADATA).map(|(o, _)| o);
    if ours(before).is_some_and(|offset| offset > position) {
        Some(Split::OffsetsWithoutChangelog)
    } else if ours(after).is_some_and(|offset| offset < position) {
        Some(Split::ChangelogWithoutOffsets)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "";

    /// The committed offset and its metadata, the changelog's position, where the input resumes.
    type Case = (Option<(i64, &'static str)>, Option<i64>, Option<i64>);

    #[test]
    fn given_a_committed_offset_and_a_changelog_position_then_the_input_resumes_from() {
        let cases: [Case; 8] = [
            // The transaction committed both: they agree.
            (Some((120, OFFSET_METADATA)), Some(120), Some(120)),
            // Its offsets committed, its changelog records aborted: the state is as of 100.
            (Some((120, OFFSET_METADATA)), Some(100), Some(100)),
            // Its changelog records committed, its offsets aborted: the state is as of 140.
            (Some((120, OFFSET_METADATA)), Some(140), Some(140)),
            // An operator moved the group: their offset, whatever the changelog says.
            (Some((0, OPERATOR)), Some(100), Some(0)),
            (Some((500, "set by a script")), Some(100), Some(500)),
            // The group's offsets expired: the state's position, not the earliest offset.
            (None, Some(100), Some(100)),
            // A changelog from before positions were written.
            (Some((120, OFFSET_METADATA)), None, Some(120)),
            // A first start: the consumer's reset policy.
            (None, None, None),
        ];
        for (committed, in_changelog, expected) in cases {
            assert_eq!(
                resume_offset(committed, in_changelog),
                expected,
                "committed {committed:?}, changelog {in_changelog:?}"
            );
        }
    }

    #[test]
    fn given_offsets_read_around_the_changelog_then_a_split_is_seen_only_when_they_cannot_agree() {
        let ours = |offset| Some((offset, OFFSET_METADATA));
        // The offset read before the changelog, its position, the offset read after, the split.
        type Read = Option<(i64, &'static str)>;
        let cases: [(Read, Option<i64>, Read, Option<Split>); 7] = [
            (ours(100), Some(100), ours(100), None),
            // Another member committed while the restore ran: both moved on.
            (ours(100), Some(400), ours(420), None),
            (ours(102), Some(100), ours(102), Some(Split::OffsetsWithoutChangelog)),
            // Still short of the position after it was read: those offsets never committed.
            (ours(1337), Some(1338), ours(1337), Some(Split::ChangelogWithoutOffsets)),
            // An operator's offsets, a changelog without positions, no offsets at all.
            (Some((0, OPERATOR)), Some(100), Some((0, OPERATOR)), None),
            (ours(100), None, ours(100), None),
            (None, Some(100), None, None),
        ];
        for (before, position, after, expected) in cases {
            assert_eq!(split_seen(before, position, after), expected, "{before:?} {position:?} {after:?}");
        }
    }

    #[test]
    fn a_position_is_read_back_and_a_malformed_one_is_not_a_position() {
        assert_eq!(decode_position(b"1234567"), Some(1_234_567));
        assert_eq!(decode_position(b"12x"), None);
        assert_eq!(decode_position(b"-1"), None);
        assert_eq!(position_topic_of(&position_key("touchpoint.events.v1")), Some("touchpoint.events.v1"));
        assert_eq!(position_topic_of("c-000001"), None);
    }

    #[test]
    fn a_customer_id_that_looks_like_a_reserved_key_is_escaped() {
        for id in ["\0position:touchpoint.events.v1", "\0erased:00", "\0customer:c-1"] {
            let key = customer_key(id);
            assert_eq!(escaped_customer_of(&key), Some(id));
            assert_eq!(position_topic_of(&key), None);
            assert_eq!(crate::erasure::marker_id_of(&key), None);
        }
        assert_eq!(customer_key("c-1"), "c-1");
    }
}
