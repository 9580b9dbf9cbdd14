//! Avro's Parsing Canonical Form and its CRC-64-AVRO fingerprint, computed from a schema's JSON
//! text exactly as the Avro specification defines them (and as Java's
//! `SchemaNormalization.parsingFingerprint64` and Python's `fastavro` compute them).
//!
//! apache-avro 0.21's `Schema::canonical_form` differs: it leaves named-type references short
//! (`"Channel"` where the specification's [FULLNAMES] rule asks for `"io.omnistream.v1.Channel"`),
//! so its fingerprints matched no other library. It still computes the CRC-64-AVRO digest
//! ([`Rabin`]) over the form built here.

use apache_avro::rabin::Rabin;
use digest::Digest;
use serde_json::Value;

/// A schema that is not valid Avro JSON.
#[derive(Debug, thiserror::Error)]
#[error("not a valid Avro schema: {0}")]
pub struct CanonicalFormError(String);

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn parsing_canonical_form(schema_json: &str) -> Result<String, CanonicalFormError> {
    let schema: Value = serde_json::from_str(schema_json).map_err(|e| CanonicalFormError(e.to_string()))?;
    let mut form = String::with_capacity(schema_json.len() / 2);
    let mut defined = Vec::new();
    write_form(&schema, None, &mut defined, &mut form)?;
    Ok(form)
}

/// The 8 bytes that follow `C3 01` in single-object encoding: the little-endian CRC-64-AVRO of
/// the Parsing Canonical Form.
pub fn fingerprint(schema_json: &str) -> Result<[u8; 8], CanonicalFormError> {
    let form = parsing_canonical_form(schema_json)?;
    let digest = Rabin::digest(form.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest);
    Ok(bytes)
}

/// [FULLNAMES]: a name with a dot is full; otherwise it takes the given namespace, if any.
fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if !name.contains('.') && !namespace.is_empty() => format!("{namespace}.{name}"),
        _ => name.to_owned(),
    }
}

fn write_form(
    schema: &Value,
    namespace: Option<&str>,
    defined: &mut Vec<String>,
    out: &mut String,
) -> Result<(), CanonicalFormError> {
    match schema {
        Value::String(name) if PRIMITIVES.contains(&name.as_str()) => push_string(out, name),
        Value::String(reference) => {
            // A reference to a named type defined earlier: by its full name.
            let qualified = full_name(reference, namespace);
            let full = if defined.contains(&qualified) { qualified } else { reference.clone() };
            if !defined.contains(&full) {
                return Err(CanonicalFormError(format!("unknown type {reference:?}")));
            }
            push_string(out, &full);
        }
        Value::Array(branches) => {
            out.push('[');
            for (index, branch) in branches.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_form(branch, namespace, defined, out)?;
            }
            out.push(']');
        }
        Value::Object(object) => {
            let kind = object
                .get("type")
                .ok_or_else(|| CanonicalFormError("a schema object without \"type\"".to_owned()))?;
            let Value::String(kind) = kind else {
                // `{"type": {...}}` or `{"type": [...]}`: the inner schema is the schema.
                return write_form(kind, namespace, defined, out);
            };
            match kind.as_str() {
                "record" | "error" | "enum" | "fixed" => {
                    let name = text(object, "name")?;
                    let own_namespace = object.get("namespace").and_then(Value::as_str).or(namespace);
                    let full = full_name(name, own_namespace);
                    if defined.contains(&full) {
                        return Err(CanonicalFormError(format!("{full} is defined twice")));
                    }
                    defined.push(full.clone());
                    // Names nested in this one default to its namespace.
                    let inner_namespace = full.rsplit_once('.').map(|(namespace, _)| namespace.to_owned());
                    out.push_str("{\"name\":");
                    push_string(out, &full);
                    out.push_str(",\"type\":");
                    push_string(out, if kind == "error" { "error" } else { kind });
                    match kind.as_str() {
                        "enum" => {
                            out.push_str(",\"symbols\":[");
                            let symbols = object
                                .get("symbols")
                                .and_then(Value::as_array)
                                .ok_or_else(|| CanonicalFormError(format!("enum {full} without symbols")))?;
                            for (index, symbol) in symbols.iter().enumerate() {
                                if index > 0 {
                                    out.push(',');
                                }
                                let symbol = symbol.as_str().ok_or_else(|| {
                                    CanonicalFormError(format!("enum {full}: a symbol is not a string"))
                                })?;
                                push_string(out, symbol);
                            }
                            out.push(']');
                        }
                        "fixed" => {
                            let size = object
                                .get("size")
                                .and_then(Value::as_u64)
                                .ok_or_else(|| CanonicalFormError(format!("fixed {full} without a size")))?;
                            out.push_str(&format!(",\"size\":{size}"));
                        }
                        _ => {
                            out.push_str(",\"fields\":[");
                            let fields = object
                                .get("fields")
                                .and_then(Value::as_array)
                                .ok_or_else(|| CanonicalFormError(format!("record {full} without fields")))?;
                            for (index, field) in fields.iter().enumerate() {
                                if index > 0 {
                                    out.push(',');
                                }
                                let field = field.as_object().ok_or_else(|| {
                                    CanonicalFormError(format!("record {full}: a field is not an object"))
                                })?;
                                out.push_str("{\"name\":");
                                push_string(out, text(field, "name")?);
                                out.push_str(",\"type\":");
                                let field_type = field.get("type").ok_or_else(|| {
                                    CanonicalFormError(format!("record {full}: a field without a type"))
                                })?;
                                write_form(field_type, inner_namespace.as_deref(), defined, out)?;
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    let items = object
                        .get("items")
                        .ok_or_else(|| CanonicalFormError("an array without items".to_owned()))?;
                    write_form(items, namespace, defined, out)?;
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    let values = object
                        .get("values")
                        .ok_or_else(|| CanonicalFormError("a map without values".to_owned()))?;
                    write_form(values, namespace, defined, out)?;
                    out.push('}');
                }
                // [PRIMITIVES], and [STRIP] drops `logicalType` and every other attribute.
                primitive if PRIMITIVES.contains(&primitive) => push_string(out, primitive),
                reference => write_form(&Value::String(reference.to_owned()), namespace, defined, out)?,
            }
        }
        other => return Err(CanonicalFormError(format!("{other} is not a schema"))),
    }
    Ok(())
}

fn text<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a str, CanonicalFormError> {
    object.get(key).and_then(Value::as_str).ok_or_else(|| CanonicalFormError(format!("no {key:?}")))
}

/// [STRINGS]: JSON string literal with only `"` and `\` escaped (Avro names and symbols hold
/// neither, but a field name in a hand-written schema could).
fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        if matches!(character, '"' | '\\') {
            out.push('\\');
        }
        out.push(character);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const NESTED: &str = r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[
        {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]},"default":"X"},
        {"name":"again","type":"E"},
        {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"m","type":{"type":"map","values":["null","string"]}}]}"#;

    /// The form Java's `SchemaNormalization.toParsingForm` printed for `NESTED`.
    #[test]
    fn nested_names_take_the_enclosing_namespace_and_attributes_are_stripped() {
        assert_eq!(
            parsing_canonical_form(NESTED).unwrap(),
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X","Y"]}},{"name":"again","type":"a.b.E"},{"name":"t","type":"long"},{"name":"m","type":{"type":"map","values":["null","string"]}}]}"#
        );
    }

    /// What Java's `SchemaNormalization.parsingFingerprint64` (org.apache.avro:avro 1.12.0) printed
    /// for these schemas, as little-endian bytes.
    #[test]
    fn fingerprints_match_the_avro_projects_vectors() {
        for (schema, java_long) in [
            (r#""null""#, 7_195_948_357_588_979_594_u64),
            (r#"{"type":"int"}"#, 8_247_732_601_305_521_295_u64),
            (r#"{"type":"fixed","name":"foo","size":15}"#, 1_756_455_273_707_447_556_u64),
            (NESTED, 8_124_569_714_281_325_160_u64),
        ] {
            assert_eq!(fingerprint(schema).unwrap(), java_long.to_le_bytes(), "{schema}");
        }
    }
}
