//! The schema registry for omni's commands, set once from the global flags: records of schema
//! ids not known yet are learned before they are decoded, and the topics written in the
//! Confluent wire format get their schema registered on the first record.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use omnistream_model::codec::{SINGLE_OBJECT_MARKER, record_kind_of};
use omnistream_model::{RecordKind, to_confluent};
use omnistream_schema_registry::{SchemaLearner, WireFormat, WireFormatArgs};

struct Registry {
    args: WireFormatArgs,
    learner: SchemaLearner,
    /// The schema id each (topic, record) is written with, once registered.
    ids: Mutex<HashMap<(String, RecordKind), u32>>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Sets the registry and wire formats up (once, at start).
pub fn init(args: WireFormatArgs) -> anyhow::Result<()> {
    let learner = args.registry.learner()?;
    let _ = REGISTRY.set(Registry { args, learner, ids: Mutex::default() });
    Ok(())
}

fn registry() -> &'static Registry {
    REGISTRY.get().expect("avro::init runs first")
}

/// `bytes`, once their schema id (if they are in the Confluent wire format) is known; waits
/// while the registry cannot be reached.
pub fn readable(bytes: &[u8]) -> &[u8] {
    registry().learner.wait_until_ready(bytes, || true);
    bytes
}

/// Registers `kind`'s schema for `topic` if the topic is written in the Confluent format: a
/// command calls it before it does anything (a refused schema stops it first).
pub fn prepare(topic: &str, kind: RecordKind) -> anyhow::Result<()> {
    schema_id(topic, kind).map(drop)
}

/// The schema id `kind` is written with on `topic`, registered on first use; `None` for a topic
/// written in single-object encoding.
fn schema_id(topic: &str, kind: RecordKind) -> anyhow::Result<Option<u32>> {
    let registry = registry();
    if registry.args.format_of(topic) == WireFormat::SingleObject {
        return Ok(None);
    }
    let mut ids = registry.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(id) = ids.get(&(topic.to_owned(), kind)) {
        return Ok(Some(*id));
    }
    let writers = registry
        .args
        .writers(&[(topic, Some(kind))])
        .with_context(|| format!("cannot register the schema of {topic}"))?;
    let id = writers.id_of(topic).expect("a topic in the Confluent format gets an id");
    ids.insert((topic.to_owned(), kind), id);
    Ok(Some(id))
}

/// Single-object bytes of an omnistream record in `topic`'s wire format (other bytes, and
/// records of an older schema version, as they are: see `to_confluent`).
pub fn wire_bytes<'a>(topic: &str, single_object: &'a [u8]) -> anyhow::Result<Cow<'a, [u8]>> {
    let Some(kind) =
        record_kind_of(single_object).filter(|_| single_object.starts_with(&SINGLE_OBJECT_MARKER))
    else {
        return Ok(Cow::Borrowed(single_object));
    };
    Ok(match schema_id(topic, kind)? {
        Some(id) => Cow::Owned(to_confluent(single_object.to_vec(), id)),
        None => Cow::Borrowed(single_object),
    })
}
