//! Avro single-object encoding (marker `C3 01`, 8-byte little-endian CRC-64-AVRO fingerprint of the
//! writer schema, then the datum) for every record of omnistream, with the `.avsc` files in
//! `schemas/` as the source of truth. Data written with a released schema is read with the current
//! one through Avro schema resolution.
//!
//! Every reader also accepts the Confluent wire format (magic byte `0`, 4-byte big-endian schema
//! id, then the datum) for the schema ids a schema registry has taught it ([`learn_schema`]);
//! writers convert their single-object bytes with [`to_confluent`].

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{LazyLock, RwLock};

use apache_avro::headers::HeaderBuilder;
use apache_avro::rabin::Rabin;
use apache_avro::schema::{NamesRef, Namespace, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter, Schema};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::{Channel, EventPayload, EventType, Purpose, TouchpointEvent, TraitValue};
use crate::identifiers::Identifier;
use crate::validate::{ErrorCode, Rejection};

/// Marker that starts every Avro single-object encoded value.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;
/// First byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Magic byte and the 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// Declares the record kinds, each with its `.avsc` file (`schemas/<file>.avsc`, released versions
/// in `schemas/released/v1/`; a kind added since has none yet): the enum and its tables come from
/// this one list.
macro_rules! record_kinds {
    (
        released_in_v1 { $($kind:ident => $file:literal),+ $(,)? }
        unreleased { $($new_kind:ident => $new_file:literal),* $(,)? }
    ) => {
        /// The kinds of record omnistream writes, one `.avsc` file each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RecordKind {
            $($kind,)+
            $($new_kind,)*
        }

        impl RecordKind {
            pub const ALL: [RecordKind; [$($file,)+ $($new_file,)*].len()] =
                [$(RecordKind::$kind,)+ $(RecordKind::$new_kind,)*];

            /// The `.avsc` file name in `schemas/` (and in `schemas/released/v1/`).
            pub fn file_name(self) -> &'static str {
                match self {
                    $(RecordKind::$kind => concat!($file, ".avsc"),)+
                    $(RecordKind::$new_kind => concat!($new_file, ".avsc"),)*
                }
            }

            /// The current `.avsc` text (what a schema registry is given).
            pub fn schema_text(self) -> &'static str {
                match self {
                    $(RecordKind::$kind => include_str!(concat!("../../../schemas/", $file, ".avsc")),)+
                    $(RecordKind::$new_kind => include_str!(concat!("../../../schemas/", $new_file, ".avsc")),)*
                }
            }

            /// Every released version of this record's schema; readers accept data written with any.
            fn released_texts(self) -> &'static [&'static str] {
                match self {
                    $(RecordKind::$kind => &[include_str!(concat!("../../../schemas/released/v1/", $file, ".avsc"))],)+
                    $(RecordKind::$new_kind => &[],)*
                }
            }
            /// The kind whose record is named `name` (`CustomerProfile`; the registry's topics
            /// name their values so).
            pub fn named(name: &str) -> Option<RecordKind> {
                RecordKind::ALL.into_iter().find(|kind| {
                    matches!(kind.schema(), Schema::Record(record) if record.name.name == name)
                })
            }

            /// The current schema, parsed once.
            pub fn schema(self) -> &'static Schema {
                &REGISTRY.current[&self].schema
            }
        }
    };
}

record_kinds!(
    released_in_v1 {
        TouchpointEvent => "touchpoint_event",
        CustomerProfile => "customer_profile",
        SuppressionState => "suppression_state",
        ChannelAffinity => "channel_affinity",
        LoyaltyLedgerEntry => "loyalty_ledger_entry",
        LoyaltyBalance => "loyalty_balance",
    }
    unreleased {
        IdentityConflict => "identity_conflict",
        CustomerIdentity => "customer_identity",
        JourneyAction => "journey_action",
        CustomerJourneyState => "journey_state",
        JourneyDefinition => "journey_definition",
        CatalogEvent => "catalog_event",
    }
);

/// Texts a kind was written with between two releases (its current text before a later change,
/// `schemas/drafts/`): their data stays readable. A change to a current schema that is not yet
/// released adds the text it replaces here.
fn draft_texts(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::TouchpointEvent => {
            &[include_str!("../../../schemas/drafts/touchpoint_event.2026-12-02.avsc")]
        }
        RecordKind::LoyaltyLedgerEntry => {
            &[include_str!("../../../schemas/drafts/loyalty_ledger_entry.2026-12-02.avsc")]
        }
        RecordKind::JourneyAction => {
            &[include_str!("../../../schemas/drafts/journey_action.2026-12-03.avsc")]
        }
        RecordKind::CustomerJourneyState => {
            &[include_str!("../../../schemas/drafts/journey_state.2026-12-04.avsc")]
        }
        _ => &[],
    }
}

/// Errors of the codec itself (encoding a value its schema refuses is a bug, not bad input).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{kind:?} does not match its schema: {source}")]
    Encode {
        kind: RecordKind,
        #[source]
        source: apache_avro::Error,
    },
    #[error("{kind:?} does not fit its schema: {message}")]
    Conform { kind: RecordKind, message: String },
    #[error("cannot decode {kind:?}: {message}")]
    Decode { kind: RecordKind, message: String },
}

struct Registered {
    kind: RecordKind,
    schema: Schema,
    header: [u8; HEADER_LEN],
    /// The schema's Parsing Canonical Form: equal forms need no schema resolution.
    canonical_form: String,
    /// Decodes with the schema's names resolved once, not on every call.
    reader: GenericSingleObjectReader,
}

struct Registry {
    current: HashMap<RecordKind, Registered>,
    /// Writer schemas by fingerprint: the current ones and every released one, each under its
    /// specification fingerprint and under the one omnistream wrote before 2026-12 (see
    /// [`legacy_fingerprint`]), so data already on the topics still reads.
    writers: HashMap<[u8; 8], Registered>,
}

/// The header bytes a single-object reader or writer of apache-avro expects or writes.
#[derive(Debug, Clone, Copy)]
struct FixedHeader([u8; HEADER_LEN]);

impl HeaderBuilder for FixedHeader {
    fn build_header(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

fn header_with(fingerprint: [u8; 8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..2].copy_from_slice(&SINGLE_OBJECT_MARKER);
    header[2..].copy_from_slice(&fingerprint);
    header
}

/// The fingerprint omnistream wrote until 2026-12: CRC-64-AVRO of apache-avro 0.21's
/// `canonical_form`, which leaves named-type references short and so matches no other library.
/// Read-only: nothing is written with it any more.
fn legacy_fingerprint(schema: &Schema) -> [u8; 8] {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    bytes.try_into().expect("CRC-64-AVRO has 8 bytes")
}

fn register(kind: RecordKind, text: &str, fingerprint: Option<[u8; 8]>) -> Registered {
    let schema = Schema::parse_str(text)
        .unwrap_or_else(|e| panic!("schemas/{} does not parse: {e}", kind.file_name()));
    let canonical_form = crate::canonical::parsing_canonical_form(text)
        .unwrap_or_else(|e| panic!("schemas/{}: {e}", kind.file_name()));
    let fingerprint = fingerprint.unwrap_or_else(|| {
        crate::canonical::fingerprint(text).unwrap_or_else(|e| panic!("schemas/{}: {e}", kind.file_name()))
    });
    let header = header_with(fingerprint);
    let reader = GenericSingleObjectReader::new_with_header_builder(schema.clone(), FixedHeader(header))
        .unwrap_or_else(|e| panic!("schemas/{}: {e}", kind.file_name()));
    Registered { kind, schema, header, canonical_form, reader }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut current = HashMap::new();
    let mut writers = HashMap::new();
    for kind in RecordKind::ALL {
        let written = kind.released_texts().iter().chain(draft_texts(kind)).copied();
        for text in written.chain([kind.schema_text()]) {
            let registered = register(kind, text, None);
            let legacy = legacy_fingerprint(&registered.schema);
            writers.insert(fingerprint_of(&registered.header), registered);
            writers.insert(legacy, register(kind, text, Some(legacy)));
        }
        current.insert(kind, register(kind, kind.schema_text(), None));
    }
    Registry { current, writers }
});

fn fingerprint_of(header: &[u8; HEADER_LEN]) -> [u8; 8] {
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&header[2..]);
    fingerprint
}

/// Which record kind encoded bytes hold, if their writer schema is known (a single-object
/// fingerprint, or a schema id learned from a registry).
pub fn record_kind_of(bytes: &[u8]) -> Option<RecordKind> {
    writer_and_datum(bytes).ok().map(|(writer, _)| writer.kind)
}

// ---- The Confluent wire format ----

/// Writer schemas learned from a schema registry, by schema id. An id whose schema is one of
/// omnistream's known texts shares its entry; another text of an omnistream record (a producer's
/// own copy, with fields of an older or newer version) is registered once and kept for the
/// process's life: a registry holds few versions.
static LEARNED: LazyLock<RwLock<HashMap<u32, &'static Registered>>> = LazyLock::new(Default::default);

/// The schema id of Confluent wire-format bytes (`None` for any other encoding).
pub fn confluent_schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Whether a registry's schema `id` has been learned by this process.
pub fn is_schema_id_known(id: u32) -> bool {
    learned(id).is_some()
}

fn learned(id: u32) -> Option<&'static Registered> {
    LEARNED.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).copied()
}

/// Why a registry's schema cannot be read as an omnistream record.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("schema id {id} does not parse as Avro: {message}")]
    Unparsable { id: u32, message: String },
    #[error("schema id {id} is the record {name}, which is none of omnistream's")]
    NotOmnistream { id: u32, name: String },
}

/// Teaches this process the registry's schema `id` (its Avro `text`): Confluent bytes with that
/// id decode from now on, with Avro schema resolution when the text is not omnistream's own.
pub fn learn_schema(id: u32, text: &str) -> Result<RecordKind, LearnError> {
    if let Some(known) = learned(id) {
        return Ok(known.kind);
    }
    let unparsable = |message: String| LearnError::Unparsable { id, message };
    let fingerprint = crate::canonical::fingerprint(text).map_err(|e| unparsable(e.to_string()))?;
    let registered: &'static Registered = match REGISTRY.writers.get(&fingerprint) {
        Some(known) => known,
        None => {
            let schema = Schema::parse_str(text).map_err(|e| unparsable(e.to_string()))?;
            let name = match &schema {
                Schema::Record(record) => record.name.fullname(None),
                other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)),
            };
            let kind = RecordKind::ALL
                .into_iter()
                .find(
                    |kind| matches!(kind.schema(), Schema::Record(ours) if ours.name.fullname(None) == name),
                )
                .ok_or(LearnError::NotOmnistream { id, name })?;
            Box::leak(Box::new(register(kind, text, Some(fingerprint))))
        }
    };
    LEARNED.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, registered);
    Ok(registered.kind)
}

/// Turns single-object bytes written with the schema registered as `id` (what every encoder here
/// writes with the current schemas) into the Confluent wire format: the same datum behind a 5-byte
/// header instead of the 10-byte one. Other bytes are returned as they are: data of an older
/// schema version (a replayed or passed-through record) would otherwise be read with `id`'s
/// schema, and bytes already in the Confluent format keep their id.
pub fn to_confluent(mut single_object: Vec<u8>, id: u32) -> Vec<u8> {
    let Some(writer) = learned(id) else { return single_object };
    if !single_object.starts_with(&writer.header) {
        return single_object;
    }
    let mut header = [0u8; CONFLUENT_HEADER_LEN];
    header[0] = CONFLUENT_MAGIC;
    header[1..].copy_from_slice(&id.to_be_bytes());
    single_object.splice(..HEADER_LEN, header);
    single_object
}

/// The writer schema of encoded bytes, by their header, and the datum after it.
fn writer_and_datum(bytes: &[u8]) -> Result<(&'static Registered, &[u8]), Rejection> {
    if let Some(id) = confluent_schema_id(bytes) {
        let writer = learned(id).ok_or_else(|| {
            Rejection::single(
                ErrorCode::UnknownSchema,
                "$",
                format!("unknown schema id {id} (Confluent wire format; not learned from a schema registry)"),
            )
        })?;
        return Ok((writer, &bytes[CONFLUENT_HEADER_LEN..]));
    }
    if bytes.len() < HEADER_LEN || !bytes.starts_with(&SINGLE_OBJECT_MARKER) {
        return Err(Rejection::single(
            ErrorCode::Malformed,
            "$",
            "neither Avro single-object encoding (C3 01) nor the Confluent wire format (00 and a schema id)",
        ));
    }
    let fingerprint: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("8 bytes");
    match REGISTRY.writers.get(&fingerprint) {
        Some(writer) => Ok((writer, &bytes[HEADER_LEN..])),
        None => Err(Rejection::single(
            ErrorCode::UnknownSchema,
            "$",
            format!("unknown schema fingerprint {}", hex(&fingerprint)),
        )),
    }
}

thread_local! {
    /// One single-object writer per record kind and thread.
    static WRITERS: std::cell::RefCell<HashMap<RecordKind, GenericSingleObjectWriter>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Encodes a value of `kind`'s current schema as single-object bytes, with this thread's writer:
/// writers keep their schema's names resolved, which per call dominated encoding.
pub fn encode_value(kind: RecordKind, value: Value) -> Result<Vec<u8>, CodecError> {
    WRITERS.with(|writers| {
        let mut writers = writers.borrow_mut();
        let writer = match writers.entry(kind) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                GenericSingleObjectWriter::new_with_capacity_and_header_builder(
                    kind.schema(),
                    1024,
                    FixedHeader(REGISTRY.current[&kind].header),
                )
                .map_err(|source| CodecError::Encode { kind, source })?,
            ),
        };
        let mut bytes = Vec::with_capacity(256);
        writer.write_value_ref(&value, &mut bytes).map_err(|source| CodecError::Encode { kind, source })?;
        Ok(bytes)
    })
}

/// Decodes single-object bytes of `kind` into an Avro value of the current schema.
pub fn decode_value(kind: RecordKind, bytes: &[u8]) -> Result<Value, Rejection> {
    let (value, writer) = read_as_written(kind, bytes)?;
    let current = &REGISTRY.current[&kind];
    if writer.canonical_form != current.canonical_form && kind == RecordKind::TouchpointEvent {
        // By names, not by apache-avro's resolution (see `decode_event_resolved`).
        return Ok(event_value(&event_from_value(value)?));
    }
    if writer.canonical_form != current.canonical_form {
        return value
            .resolve(&current.schema)
            .map_err(|e| Rejection::single(ErrorCode::Malformed, "$", format!("invalid Avro datum: {e}")));
    }
    Ok(value)
}

/// `kind`'s record as single-object bytes of its current schema: `bytes` themselves when they
/// are written with it (checked by decoding), otherwise the decoded value written anew (an
/// older schema, or the Confluent wire format). What a store that outlives the writers keeps.
pub fn to_current_single_object(kind: RecordKind, bytes: &[u8]) -> Result<(Value, Vec<u8>), Rejection> {
    let value = decode_value(kind, bytes)?;
    if bytes.starts_with(&REGISTRY.current[&kind].header) {
        return Ok((value, bytes.to_vec()));
    }
    let current = encode_value(kind, value.clone())
        .map_err(|e| Rejection::single(ErrorCode::Malformed, "$", e.to_string()))?;
    Ok((value, current))
}

/// The single-object header (marker and fingerprint) of `kind`'s current schema.
pub fn current_header(kind: RecordKind) -> [u8; HEADER_LEN] {
    REGISTRY.current[&kind].header
}

/// The datum read with its writer's schema, not resolved to the current one.
fn read_as_written(kind: RecordKind, bytes: &[u8]) -> Result<(Value, &'static Registered), Rejection> {
    let (writer, datum) = writer_and_datum(bytes)?;
    if writer.kind != kind {
        return Err(Rejection::single(
            ErrorCode::WrongRecordType,
            "$",
            format!("expected {kind:?}, found {:?}", writer.kind),
        ));
    }
    let invalid = |e: apache_avro::Error| {
        Rejection::single(ErrorCode::Malformed, "$", format!("invalid Avro datum: {e}"))
    };
    // The reader checks the single-object header it was built with: given back in front of the
    // datum whatever the bytes' own header was.
    let mut input = writer.header.as_slice().chain(datum);
    let value = writer.reader.read_value(&mut input).map_err(invalid)?;
    let (_, datum) = input.into_inner();
    if !datum.is_empty() {
        return Err(Rejection::single(
            ErrorCode::Malformed,
            "$",
            format!("{} trailing bytes after the Avro datum", datum.len()),
        ));
    }
    Ok((value, writer))
}

/// Decodes single-object bytes of any omnistream record, whatever its kind.
pub fn decode_any(bytes: &[u8]) -> Result<(RecordKind, Value), Rejection> {
    let kind = record_kind_of(bytes).ok_or_else(|| {
        Rejection::single(ErrorCode::UnknownSchema, "$", "not an omnistream Avro single-object record")
    })?;
    Ok((kind, decode_value(kind, bytes)?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- Touchpoint events: hand-written conversion (hot path, and a union of records) ----

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn optional<T>(value: &Option<T>, convert: impl FnOnce(&T) -> Value) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(inner) => Value::Union(1, Box::new(convert(inner))),
    }
}

fn purpose_value(purpose: Purpose) -> Value {
    Value::Enum(purpose.index(), purpose.as_str().to_owned())
}

fn trait_value(value: &TraitValue) -> Value {
    match value {
        TraitValue::Null => Value::Union(0, Box::new(Value::Null)),
        TraitValue::Bool(flag) => Value::Union(1, Box::new(Value::Boolean(*flag))),
        TraitValue::Long(number) => Value::Union(2, Box::new(Value::Long(*number))),
        TraitValue::Double(number) => Value::Union(3, Box::new(Value::Double(*number))),
        TraitValue::String(text) => Value::Union(4, Box::new(string(text))),
    }
}

fn trait_map(map: &BTreeMap<String, TraitValue>) -> Value {
    Value::Map(map.iter().map(|(k, v)| (k.clone(), trait_value(v))).collect())
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(name, value)| (name.to_owned(), value)).collect())
}

// `read_payload`, `payload_value` and `payload_from_value`, generated from the schema (build.rs).
include!(concat!(env!("OUT_DIR"), "/touchpoint_event_codec.rs"));

fn event_value(event: &TouchpointEvent) -> Value {
    let event_type = event.event_type();
    record(vec![
        ("event_id", string(&event.event_id)),
        ("customer_id", string(&event.customer_id)),
        ("occurred_at", Value::TimestampMillis(event.occurred_at.timestamp_millis())),
        ("channel", Value::Enum(event.channel.index(), event.channel.as_str().to_owned())),
        ("type", Value::Enum(event_type.index(), event_type.as_str().to_owned())),
        ("source", optional(&event.source, |text| string(text))),
        ("properties", Value::Union(event_type.index(), Box::new(payload_value(&event.payload)))),
        ("context", Value::Map(event.context.iter().map(|(k, v)| (k.clone(), string(v))).collect())),
        ("identifiers", Value::Array(event.identifiers.iter().map(identifier_value).collect())),
    ])
}

fn identifier_value(identifier: &Identifier) -> Value {
    record(vec![("type", string(&identifier.kind)), ("value", string(&identifier.value))])
}

/// Encodes a touchpoint event as Avro single-object bytes.
pub fn encode_event(event: &TouchpointEvent) -> Result<Vec<u8>, CodecError> {
    encode_value(RecordKind::TouchpointEvent, event_value(event))
}

/// Decodes Avro single-object bytes into an event; does not apply the validation rules (see
/// [`crate::decode_and_validate`]). Data written with the current schema is read directly (every
/// service does this per record); data of a released schema goes through schema resolution.
pub fn decode_event(bytes: &[u8]) -> Result<TouchpointEvent, Rejection> {
    let current = &REGISTRY.current[&RecordKind::TouchpointEvent];
    if let Some(datum) = bytes.strip_prefix(current.header.as_slice()) {
        return read_current_event(datum);
    }
    // The header holds the canonical form's fingerprint: equal headers, equal forms.
    if let Some(writer) = confluent_schema_id(bytes).and_then(learned)
        && writer.header == current.header
    {
        return read_current_event(&bytes[CONFLUENT_HEADER_LEN..]);
    }
    decode_event_resolved(bytes)
}

/// The general path: any known writer schema (current or released). The datum is read with its
/// writer's schema and converted by names, not resolved by apache-avro: its resolution picks a
/// union branch by shape, and the `properties` union holds records of the same shape (two empty
/// ones, optional fields that fit another branch), so it read version 1's `traits_updated` as
/// `message_received`. Fields added since the writer's version take their defaults.
pub fn decode_event_resolved(bytes: &[u8]) -> Result<TouchpointEvent, Rejection> {
    let (value, _) = read_as_written(RecordKind::TouchpointEvent, bytes)?;
    event_from_value(value)
}

/// Reads an event datum written with the current schema, field by field in `.avsc` order.
fn read_current_event(datum: &[u8]) -> Result<TouchpointEvent, Rejection> {
    let malformed = |message: String| {
        Rejection::single(ErrorCode::Malformed, "$", format!("invalid Avro datum: {message}"))
    };
    let mut r = DatumReader { rest: datum };
    let event_id = r.string().map_err(malformed)?;
    let customer_id = r.string().map_err(malformed)?;
    let millis = r.long().map_err(malformed)?;
    let occurred_at = DateTime::<Utc>::from_timestamp_millis(millis)
        .ok_or_else(|| malformed(format!("occurred_at {millis} is out of range")))?;
    let channel = *r.symbol(Channel::ALL).map_err(malformed)?;
    let event_type = *r.symbol(EventType::ALL).map_err(malformed)?;
    let source = r.optional(DatumReader::string).map_err(malformed)?;
    let branch = r.index(EventType::ALL.len()).map_err(malformed)?;
    if branch != event_type.index() {
        return Err(Rejection::single(
            ErrorCode::TypeMismatch,
            "properties",
            format!("type {event_type} does not match properties branch {branch}"),
        ));
    }
    let payload = read_payload(&mut r, event_type).map_err(malformed)?;
    let context = r.map(DatumReader::string).map_err(malformed)?;
    let identifiers =
        r.array(|r| Ok(Identifier { kind: r.string()?, value: r.string()? })).map_err(malformed)?;
    if !r.rest.is_empty() {
        return Err(Rejection::single(
            ErrorCode::Malformed,
            "$",
            format!("{} trailing bytes after the Avro datum", r.rest.len()),
        ));
    }
    Ok(TouchpointEvent { event_id, customer_id, occurred_at, channel, source, payload, context, identifiers })
}

/// Reads Avro binary encodings; every read checks what is left, so no input can panic it.
struct DatumReader<'a> {
    rest: &'a [u8],
}

impl DatumReader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&first, rest) = self.rest.split_first().ok_or("unexpected end of data")?;
        self.rest = rest;
        Ok(first)
    }

    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("variable-length integer longer than 10 bytes".into())
    }

    fn int(&mut self) -> Result<i32, String> {
        let value = self.long()?;
        i32::try_from(value).map_err(|_| format!("int {value} out of range"))
    }

    fn boolean(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("invalid boolean byte {other}")),
        }
    }

    fn double(&mut self) -> Result<f64, String> {
        let bytes = self.rest.get(..8).ok_or("unexpected end of data")?;
        let value = f64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        self.rest = &self.rest[8..];
        Ok(value)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
        let bytes = self.rest.get(..len).ok_or("string longer than the data")?;
        let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?.to_owned();
        self.rest = &self.rest[len..];
        Ok(text)
    }

    /// A union branch or an enum symbol's position, below `count`.
    fn index(&mut self, count: usize) -> Result<u32, String> {
        let index = self.long()?;
        u32::try_from(index)
            .ok()
            .filter(|i| (*i as usize) < count)
            .ok_or_else(|| format!("index {index} out of range"))
    }

    fn symbol<'s, T>(&mut self, symbols: &'s [T]) -> Result<&'s T, String> {
        let index = self.index(symbols.len())?;
        Ok(&symbols[index as usize])
    }

    /// A `["null", T]` union.
    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.index(2)? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    fn trait_value(&mut self) -> Result<TraitValue, String> {
        Ok(match self.index(5)? {
            0 => TraitValue::Null,
            1 => TraitValue::Bool(self.boolean()?),
            2 => TraitValue::Long(self.long()?),
            3 => TraitValue::Double(self.double()?),
            _ => TraitValue::String(self.string()?),
        })
    }

    /// Items of array or map blocks until the empty block; a negative count is followed by the
    /// block's size in bytes (Avro spec).
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), String>) -> Result<(), String> {
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or("invalid block count")?;
                self.long()?;
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    fn array<T>(&mut self, mut read: impl FnMut(&mut Self) -> Result<T, String>) -> Result<Vec<T>, String> {
        let mut items = Vec::new();
        self.blocks(|r| {
            items.push(read(r)?);
            Ok(())
        })?;
        Ok(items)
    }

    fn map<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<BTreeMap<String, T>, String> {
        let mut map = BTreeMap::new();
        self.blocks(|r| {
            let key = r.string()?;
            let value = read(r)?;
            map.insert(key, value);
            Ok(())
        })?;
        Ok(map)
    }
}

/// Field access on a decoded record; a decoded value that lacks a field is a schema bug.
struct RecordFields(Vec<(String, Value)>);

impl RecordFields {
    fn new(value: Value) -> Result<Self, String> {
        match value {
            Value::Record(fields) => Ok(Self(fields)),
            other => Err(format!("expected a record, found {other:?}")),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(field, _)| field == name)
    }

    fn take_raw(&mut self, name: &str) -> Result<Value, String> {
        let index =
            self.0.iter().position(|(field, _)| field == name).ok_or_else(|| format!("no field {name}"))?;
        Ok(self.0.swap_remove(index).1)
    }

    fn take(&mut self, name: &str) -> Result<Value, String> {
        self.take_raw(name).map(unwrap_union)
    }

    fn string(&mut self, name: &str) -> Result<String, String> {
        match self.take(name)? {
            Value::String(text) => Ok(text),
            other => Err(format!("{name}: expected a string, found {other:?}")),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text)),
            other => Err(format!("{name}: expected a string or null, found {other:?}")),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, String> {
        match self.take(name)? {
            Value::Long(n) | Value::TimestampMillis(n) => Ok(n),
            Value::Int(n) => Ok(i64::from(n)),
            other => Err(format!("{name}: expected a long, found {other:?}")),
        }
    }

    fn int(&mut self, name: &str) -> Result<i32, String> {
        match self.take(name)? {
            Value::Int(n) => Ok(n),
            other => Err(format!("{name}: expected an int, found {other:?}")),
        }
    }

    fn opt_int(&mut self, name: &str) -> Result<Option<i32>, String> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(n)),
            other => Err(format!("{name}: expected an int or null, found {other:?}")),
        }
    }

    fn boolean(&mut self, name: &str) -> Result<bool, String> {
        match self.take(name)? {
            Value::Boolean(flag) => Ok(flag),
            other => Err(format!("{name}: expected a boolean, found {other:?}")),
        }
    }

    fn symbol(&mut self, name: &str) -> Result<String, String> {
        match self.take(name)? {
            Value::Enum(_, symbol) => Ok(symbol),
            other => Err(format!("{name}: expected an enum, found {other:?}")),
        }
    }

    fn purpose(&mut self, name: &str) -> Result<Purpose, String> {
        let symbol = self.symbol(name)?;
        Purpose::parse(&symbol).ok_or_else(|| format!("{name}: unknown purpose {symbol}"))
    }

    fn traits(&mut self, name: &str) -> Result<BTreeMap<String, TraitValue>, String> {
        match self.take(name)? {
            Value::Map(map) => map
                .into_iter()
                .map(|(key, value)| {
                    let value = match unwrap_union(value) {
                        Value::Null => TraitValue::Null,
                        Value::Boolean(flag) => TraitValue::Bool(flag),
                        Value::Long(n) => TraitValue::Long(n),
                        Value::Double(n) => TraitValue::Double(n),
                        Value::String(text) => TraitValue::String(text),
                        other => return Err(format!("{name}.{key}: unexpected {other:?}")),
                    };
                    Ok((key, value))
                })
                .collect(),
            other => Err(format!("{name}: expected a map, found {other:?}")),
        }
    }

    fn string_map(&mut self, name: &str) -> Result<BTreeMap<String, String>, String> {
        match self.take(name)? {
            Value::Map(map) => map
                .into_iter()
                .map(|(key, value)| match value {
                    Value::String(text) => Ok((key, text)),
                    other => Err(format!("{name}.{key}: expected a string, found {other:?}")),
                })
                .collect(),
            other => Err(format!("{name}: expected a map, found {other:?}")),
        }
    }

    fn string_list(&mut self, name: &str) -> Result<Vec<String>, String> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    other => Err(format!("{name}: expected strings, found {other:?}")),
                })
                .collect(),
            other => Err(format!("{name}: expected an array, found {other:?}")),
        }
    }

    fn identifiers(&mut self, name: &str) -> Result<Vec<Identifier>, String> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| {
                    let mut fields = RecordFields::new(item)?;
                    Ok(Identifier { kind: fields.string("type")?, value: fields.string("value")? })
                })
                .collect(),
            other => Err(format!("{name}: expected an array, found {other:?}")),
        }
    }
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn event_from_value(value: Value) -> Result<TouchpointEvent, Rejection> {
    let malformed = |message: String| Rejection::single(ErrorCode::Malformed, "$", message);
    let mut r = RecordFields::new(value).map_err(malformed)?;
    let (event_type, properties) = take_properties(&mut r)?;
    let event = || -> Result<TouchpointEvent, String> {
        let channel_symbol = r.symbol("channel")?;
        let occurred_at_millis = r.long("occurred_at")?;
        Ok(TouchpointEvent {
            event_id: r.string("event_id")?,
            customer_id: r.string("customer_id")?,
            occurred_at: DateTime::<Utc>::from_timestamp_millis(occurred_at_millis)
                .ok_or_else(|| format!("occurred_at {occurred_at_millis} is out of range"))?,
            channel: Channel::parse(&channel_symbol)
                .ok_or_else(|| format!("unknown channel {channel_symbol}"))?,
            source: r.opt_string("source")?,
            payload: payload_from_value(event_type, properties)?,
            context: r.string_map("context")?,
            // Added in version 2 (default: none).
            identifiers: if r.has("identifiers") { r.identifiers("identifiers")? } else { Vec::new() },
        })
    };
    event().map_err(malformed)
}

/// The event type and its properties; a `type` that disagrees with the union branch is rejected.
fn take_properties(r: &mut RecordFields) -> Result<(EventType, Value), Rejection> {
    let malformed = |message: String| Rejection::single(ErrorCode::Malformed, "$", message);
    let type_symbol = r.symbol("type").map_err(malformed)?;
    let event_type = EventType::parse(&type_symbol).ok_or_else(|| {
        Rejection::single(ErrorCode::UnknownType, "type", format!("{type_symbol:?} is not an event type"))
    })?;
    let (branch, properties) = match r.take_raw("properties").map_err(malformed)? {
        Value::Union(branch, inner) => (branch, *inner),
        other => {
            return Err(malformed(format!("properties: expected a union, found {other:?}")));
        }
    };
    // The branch as its writer numbered it: every version appends a type's enum symbol and its
    // union branch together, so a type keeps its index in every version.
    if branch != event_type.index() {
        return Err(Rejection::single(
            ErrorCode::TypeMismatch,
            "properties",
            format!("type {type_symbol} does not match properties branch {branch}"),
        ));
    }
    Ok((event_type, properties))
}

// ---- Derived records: serde through apache-avro against the `.avsc`, or by hand ----

/// A derived record type and the schema it is written with.
pub trait AvroRecord: Serialize + DeserializeOwned {
    const KIND: RecordKind;

    /// Appends the record's binary datum. By default serde writes it directly against the schema
    /// (no intermediate `Value`); records written on every event write it by hand instead
    /// ([`crate::avro_write`]), and a test holds both to the same bytes.
    fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        write_datum_with_serde(self, buf)
    }
}

/// Serde's encoding of a record's datum: struct fields in declaration order, which is the
/// schema's (a test proves it), enums by variant index, which is the symbol's, unions by shape.
pub fn write_datum_with_serde<T: AvroRecord>(record: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let kind = T::KIND;
    apache_avro::write_avro_datum_ref(&INLINED_SCHEMAS[&kind], record, buf)
        .map_err(|source| CodecError::Encode { kind, source })?;
    Ok(())
}

/// Encodes a derived record as Avro single-object bytes.
pub fn encode_record<T: AvroRecord>(record: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::with_capacity(512);
    bytes.extend_from_slice(&REGISTRY.current[&T::KIND].header);
    record.write_datum(&mut bytes)?;
    Ok(bytes)
}

/// Each current schema with its named-type references replaced by their definitions: the
/// serde writer of apache-avro 0.21 resolves no names.
static INLINED_SCHEMAS: LazyLock<HashMap<RecordKind, Schema>> = LazyLock::new(|| {
    RecordKind::ALL
        .into_iter()
        .map(|kind| {
            let schema = kind.schema();
            let resolved = ResolvedSchema::try_from(schema).expect("a parsed schema resolves");
            (kind, inline_refs(schema, resolved.get_names(), &schema.namespace()))
        })
        .collect()
});

fn inline_refs(schema: &Schema, names: &NamesRef<'_>, namespace: &Namespace) -> Schema {
    match schema {
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(namespace);
            let target = names.get(&full).expect("a resolved schema defines every reference");
            inline_refs(target, names, &full.namespace)
        }
        Schema::Record(record) => {
            let inner = record.name.namespace.clone().or_else(|| namespace.clone());
            let mut record = record.clone();
            for field in &mut record.fields {
                field.schema = inline_refs(&field.schema, names, &inner);
            }
            Schema::Record(record)
        }
        Schema::Union(union) => Schema::Union(
            UnionSchema::new(union.variants().iter().map(|v| inline_refs(v, names, namespace)).collect())
                .expect("inlining keeps a union valid"),
        ),
        Schema::Array(array) => {
            let mut array = array.clone();
            array.items = Box::new(inline_refs(&array.items, names, namespace));
            Schema::Array(array)
        }
        Schema::Map(map) => {
            let mut map = map.clone();
            map.types = Box::new(inline_refs(&map.types, names, namespace));
            Schema::Map(map)
        }
        other => other.clone(),
    }
}

/// A record's value bytes on a topic: what the runtime writes for a processor's output.
pub trait OutputRecord: Send + 'static {
    /// Its bytes. A processor builds its records from its own types, so one its schema refuses
    /// is a bug, not bad input (it panics).
    fn encode(&self) -> Vec<u8>;
}

/// Every derived record of `schemas/`, as Avro single-object bytes.
impl<T: AvroRecord + Send + 'static> OutputRecord for T {
    fn encode(&self) -> Vec<u8> {
        encode_record(self).unwrap_or_else(|error| panic!("a derived record matches its schema: {error}"))
    }
}

/// A touchpoint event re-published (a repartition topic of events).
impl OutputRecord for TouchpointEvent {
    fn encode(&self) -> Vec<u8> {
        encode_event(self).unwrap_or_else(|error| panic!("a valid event matches its schema: {error}"))
    }
}

/// A record shared with the state that holds it (the state changes it copy-on-write, after the
/// runtime has encoded and dropped this one): publishing it copies nothing.
impl<T: OutputRecord + Sync> OutputRecord for std::sync::Arc<T> {
    fn encode(&self) -> Vec<u8> {
        T::encode(self)
    }
}

/// A text record (UTF-8).
impl OutputRecord for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

/// Decodes Avro single-object bytes into a derived record.
pub fn decode_record<T: AvroRecord>(bytes: &[u8]) -> Result<T, CodecError> {
    let kind = T::KIND;
    let value = decode_value(kind, bytes).map_err(|e| CodecError::Decode { kind, message: e.to_string() })?;
    apache_avro::from_value(&value).map_err(|e| CodecError::Decode { kind, message: e.to_string() })
}

// ---- Any record as JSON (omni tail) ----

/// Renders a decoded Avro value as JSON: unions unwrapped, enums as their symbol, timestamps as
/// RFC 3339.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::Null => Json::Null,
        Value::Boolean(flag) => Json::Bool(*flag),
        Value::Int(n) => Json::from(*n),
        Value::Long(n) => Json::from(*n),
        Value::Float(n) => Json::from(*n),
        Value::Double(n) => Json::from(*n),
        Value::String(text) | Value::Enum(_, text) => Json::String(text.clone()),
        Value::TimestampMillis(millis) => match DateTime::<Utc>::from_timestamp_millis(*millis) {
            Some(time) => Json::String(crate::json::format_timestamp(time)),
            None => Json::from(*millis),
        },
        Value::Union(_, inner) => value_to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Map(map) => {
            let sorted: BTreeMap<_, _> = map.iter().collect();
            Json::Object(sorted.into_iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
        }
        Value::Record(fields) => {
            Json::Object(fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
        }
        other => Json::String(format!("{other:?}")),
    }
}
