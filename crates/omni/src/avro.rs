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

/// Single-object bytes of an omnistream record in `topic`'s wire format (other bytes as they are).
pub fn wire_bytes<'a>(topic: &str, single_object: &'a [u8]) -> anyhow::Result<Cow<'a, [u8]>> {
    let registry = registry();
    if registry.args.format_of(topic) == WireFormat::SingleObject
        || !single_object.starts_with(&SINGLE_OBJECT_MARKER)
    {
        return Ok(Cow::Borrowed(single_object));
    }
    let Some(kind) = record_kind_of(single_object) else { return Ok(Cow::Borrowed(single_object)) };
    let mut ids = registry.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = match ids.get(&(topic.to_owned(), kind)) {
        Some(id) => *id,
        None => {
            let writers = registry
                .args
                .writers(&[(topic, Some(kind))])
                .with_context(|| format!("cannot register the schema of {topic}"))?;
            let id = writers.id_of(topic).expect("a topic in the Confluent format gets an id");
            ids.insert((topic.to_owned(), kind), id);
            id
        }
    };
    Ok(Cow::Owned(to_confluent(single_object.to_vec(), id)))
}
