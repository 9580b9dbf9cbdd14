//! The JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1) of a record as
//! [`value_to_json`](crate::codec::value_to_json) renders it, derived from the record's `.avsc`
//! file: the HTTP documents describe the derived records from the files the topics use, so the
//! two cannot drift apart.
//!
//! The rendering it follows: every field is present (`null` for an absent optional), enums and
//! strings are strings, `timestamp-millis` is an RFC 3339 string, `int`/`long` are integers,
//! `float`/`double` numbers, maps objects, and a union is whichever branch the value holds.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::codec::RecordKind;

/// The JSON Schema of `kind`'s records in JSON (named types used twice are inlined twice; the
/// schemas have no recursive type).
pub fn record_json_schema(kind: RecordKind) -> Value {
    let avsc: Value = serde_json::from_str(kind.schema_text()).expect("the .avsc files are JSON");
    avro_json_schema(&avsc)
}

/// The JSON Schema of the datums of one Avro schema (its JSON text, parsed).
pub fn avro_json_schema(avsc: &Value) -> Value {
    Converter::default().convert(avsc)
}

#[derive(Default)]
struct Converter {
    /// Named types met so far, by simple and by full name: Avro refers back to them by name.
    named: HashMap<String, Value>,
}

impl Converter {
    fn convert(&mut self, avsc: &Value) -> Value {
        match avsc {
            Value::String(name) => self.primitive_or_named(name),
            Value::Array(branches) => {
                json!({ "anyOf": branches.iter().map(|branch| self.convert(branch)).collect::<Vec<_>>() })
            }
            Value::Object(definition) => self.complex(definition),
            // Not an Avro schema; the `.avsc` files are checked by the Avro library at start.
            _ => json!({}),
        }
    }

    fn primitive_or_named(&self, name: &str) -> Value {
        match name {
            "null" => json!({ "type": "null" }),
            "boolean" => json!({ "type": "boolean" }),
            "int" | "long" => json!({ "type": "integer" }),
            "float" | "double" => json!({ "type": "number" }),
            "string" | "bytes" => json!({ "type": "string" }),
            // A full name whose namespace was inherited is registered by its simple name.
            other => {
                let simple = other.rsplit('.').next().unwrap_or(other);
                self.named.get(other).or_else(|| self.named.get(simple)).cloned().unwrap_or_else(|| json!({}))
            }
        }
    }

    fn complex(&mut self, definition: &Map<String, Value>) -> Value {
        let text = |key: &str| definition.get(key).and_then(Value::as_str);
        let mut schema = match (text("type"), text("logicalType")) {
            (Some("long"), Some("timestamp-millis")) => json!({ "type": "string", "format": "date-time" }),
            (Some("record" | "error"), _) => self.record(definition),
            (Some("enum"), _) => json!({ "type": "string", "enum": definition["symbols"] }),
            (Some("array"), _) => json!({ "type": "array", "items": self.convert(&definition["items"]) }),
            (Some("map"), _) => {
                json!({ "type": "object", "additionalProperties": self.convert(&definition["values"]) })
            }
            (Some("fixed"), _) => json!({ "type": "string" }),
            (Some(primitive), _) => self.primitive_or_named(primitive),
            // `{"type": {...}}` or `{"type": [...]}`: the type is the inner schema.
            (None, _) => definition.get("type").map(|inner| self.convert(inner)).unwrap_or_else(|| json!({})),
        };
        if let (Some(doc), Some(object)) = (text("doc"), schema.as_object_mut()) {
            object.insert("description".to_owned(), json!(doc));
        }
        if let Some(name) = text("name") {
            if let Some(object) = schema.as_object_mut() {
                object.insert("title".to_owned(), json!(name));
            }
            self.named.insert(name.to_owned(), schema.clone());
            if let Some(namespace) = text("namespace") {
                self.named.insert(format!("{namespace}.{name}"), schema.clone());
            }
        }
        schema
    }

    fn record(&mut self, definition: &Map<String, Value>) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in definition.get("fields").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = field.get("name").and_then(Value::as_str) else { continue };
            let mut schema = self.convert(&field["type"]);
            if let (Some(doc), Some(object)) = (field.get("doc"), schema.as_object_mut()) {
                object.insert("description".to_owned(), doc.clone());
            }
            properties.insert(name.to_owned(), schema);
            required.push(name.to_owned());
        }
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::avro_json_schema;

    /// Each rule of the rendering, worked out by hand.
    #[test]
    fn every_avro_type_becomes_the_json_schema_of_its_rendering() {
        let avsc = json!({
            "type": "record", "name": "Example", "namespace": "io.example", "doc": "an example",
            "fields": [
                {"name": "id", "type": "string", "doc": "the key"},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "count", "type": "long"},
                {"name": "score", "type": ["null", "double"]},
                {"name": "tags", "type": {"type": "array", "items": "string"}},
                {"name": "totals", "type": {"type": "map", "values": "int"}},
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b"]}},
                {"name": "again", "type": ["null", "io.example.Kind"]},
                {"name": "flag", "type": {"type": "boolean"}},
            ]
        });
        let kind = json!({"type": "string", "enum": ["a", "b"], "title": "Kind"});
        assert_eq!(
            avro_json_schema(&avsc),
            json!({
                "type": "object", "title": "Example", "description": "an example",
                "additionalProperties": false,
                "required": ["id", "at", "count", "score", "tags", "totals", "kind", "again", "flag"],
                "properties": {
                    "id": {"type": "string", "description": "the key"},
                    "at": {"type": "string", "format": "date-time"},
                    "count": {"type": "integer"},
                    "score": {"anyOf": [{"type": "null"}, {"type": "number"}]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "totals": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "kind": kind,
                    "again": {"anyOf": [{"type": "null"}, kind]},
                    "flag": {"type": "boolean"},
                }
            })
        );
    }

    /// Every name a `.avsc` file refers to is one it defines (an unknown one would be `{}`).
    #[test]
    fn every_record_schema_resolves_every_name() {
        for kind in crate::codec::RecordKind::ALL {
            // A record without fields has no properties; any other `{}` is an unknown name.
            let schema = super::record_json_schema(kind).to_string().replace(r#""properties":{}"#, "");
            assert!(!schema.contains("{}"), "{kind:?}: {schema}");
        }
    }
}
