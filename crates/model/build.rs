//! Generates the touchpoint event's Rust side from `schemas/touchpoint_event.avsc`, the source of
//! truth: its enums (`Channel`, `EventType`, `Purpose`), the `EventPayload` variants (one per
//! record of the `properties` union, fields in schema order), and the codec's three per-variant
//! tables (the fast reader of the current schema, the writer to an Avro value, the reader of a
//! resolved value). A schema change therefore changes the code, or fails the build where an Avro
//! type has no mapping below; it cannot silently disagree with hand-written tables.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

const SCHEMA: &str = "../../schemas/touchpoint_event.avsc";

/// How one Avro field type is held and coded in Rust.
struct Mapping {
    rust_type: &'static str,
    /// Reads it from the current schema's datum (`r` is a `DatumReader`).
    read: &'static str,
    /// Its Avro `Value`, from a binding `{}` (a reference).
    value: &'static str,
    /// Reads it from a resolved record value (`r` is a `RecordFields`, `{}` the field name).
    from_value: &'static str,
}

fn mapping(field_type: &Value, enums: &[String]) -> Mapping {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let is_trait_union = |values: &Value| {
        values.as_array().is_some_and(|branches| {
            branches.iter().filter_map(text).collect::<Vec<_>>()
                == ["null", "boolean", "long", "double", "string"]
        })
    };
    let named_enum = match field_type {
        Value::String(name) if enums.contains(name) => Some(name.clone()),
        Value::Object(object) if object.get("type") == Some(&Value::from("enum")) => {
            object.get("name").and_then(text)
        }
        _ => None,
    };
    if named_enum.as_deref() == Some("Purpose") {
        return Mapping {
            rust_type: "Purpose",
            read: "*r.symbol(Purpose::ALL)?",
            value: "purpose_value(*{})",
            from_value: "r.purpose(\"{}\")?",
        };
    }
    match field_type {
        Value::String(name) => match name.as_str() {
            "string" => Mapping {
                rust_type: "String",
                read: "r.string()?",
                value: "string({})",
                from_value: "r.string(\"{}\")?",
            },
            "int" => Mapping {
                rust_type: "i32",
                read: "r.int()?",
                value: "Value::Int(*{})",
                from_value: "r.int(\"{}\")?",
            },
            "long" => Mapping {
                rust_type: "i64",
                read: "r.long()?",
                value: "Value::Long(*{})",
                from_value: "r.long(\"{}\")?",
            },
            "boolean" => Mapping {
                rust_type: "bool",
                read: "r.boolean()?",
                value: "Value::Boolean(*{})",
                from_value: "r.boolean(\"{}\")?",
            },
            other => panic!(
                "{SCHEMA}: no Rust mapping for the Avro type {other:?}; add one to crates/model/build.rs"
            ),
        },
        Value::Array(branches) => match branches.iter().filter_map(text).collect::<Vec<_>>().as_slice() {
            [null, string] if null == "null" && string == "string" => Mapping {
                rust_type: "Option<String>",
                read: "r.optional(DatumReader::string)?",
                value: "optional({}, |text| string(text))",
                from_value: "r.opt_string(\"{}\")?",
            },
            [null, int] if null == "null" && int == "int" => Mapping {
                rust_type: "Option<i32>",
                read: "r.optional(DatumReader::int)?",
                value: "optional({}, |n| Value::Int(*n))",
                from_value: "r.opt_int(\"{}\")?",
            },
            other => {
                panic!("{SCHEMA}: no Rust mapping for the union {other:?}; add one to crates/model/build.rs")
            }
        },
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("map") if object.get("values").is_some_and(is_trait_union) => Mapping {
                rust_type: "BTreeMap<String, TraitValue>",
                read: "r.map(DatumReader::trait_value)?",
                value: "trait_map({})",
                from_value: "r.traits(\"{}\")?",
            },
            Some("array") if object.get("items") == Some(&Value::from("string")) => Mapping {
                rust_type: "Vec<String>",
                read: "r.array(DatumReader::string)?",
                value: "Value::Array({}.iter().map(|item| string(item)).collect())",
                from_value: "r.string_list(\"{}\")?",
            },
            _ => panic!("{SCHEMA}: no Rust mapping for {field_type}; add one to crates/model/build.rs"),
        },
        other => panic!("{SCHEMA}: no Rust mapping for {other}; add one to crates/model/build.rs"),
    }
}

/// `mobile_app` → `MobileApp`.
fn pascal_case(symbol: &str) -> String {
    symbol
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every named enum in the schema, in the order they appear.
fn collect_enums(value: &Value, out: &mut Vec<(String, Vec<String>)>) {
    match value {
        Value::Object(object) => {
            if object.get("type") == Some(&Value::from("enum")) {
                let name = object["name"].as_str().expect("an enum's name").to_owned();
                let symbols = object["symbols"]
                    .as_array()
                    .expect("symbols")
                    .iter()
                    .map(|s| s.as_str().expect("a symbol").to_owned());
                out.push((name, symbols.collect()));
            }
            object.values().for_each(|inner| collect_enums(inner, out));
        }
        Value::Array(items) => items.iter().for_each(|inner| collect_enums(inner, out)),
        _ => {}
    }
}

struct Variant {
    name: String,
    fields: Vec<(String, Mapping)>,
}

fn main() {
    println!("cargo::rerun-if-changed={SCHEMA}");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).expect("read the schema"))
        .expect("the schema is JSON");
    let mut enums = Vec::new();
    collect_enums(&schema, &mut enums);
    let enum_names: Vec<String> = enums.iter().map(|(name, _)| name.clone()).collect();
    let fields = schema["fields"].as_array().expect("fields");
    let properties = fields.iter().find(|field| field["name"] == "properties").expect("a properties field");
    let variants: Vec<Variant> = properties["type"]
        .as_array()
        .expect("properties is a union of records")
        .iter()
        .map(|record| Variant {
            name: record["name"].as_str().expect("a record name").to_owned(),
            fields: record["fields"]
                .as_array()
                .expect("record fields")
                .iter()
                .map(|field| {
                    (
                        field["name"].as_str().expect("a field name").to_owned(),
                        mapping(&field["type"], &enum_names),
                    )
                })
                .collect(),
        })
        .collect();
    let event_types = &enums.iter().find(|(name, _)| name == "EventType").expect("an EventType enum").1;
    let branch_names: Vec<String> = variants.iter().map(|variant| variant.name.clone()).collect();
    let type_names: Vec<String> = event_types.iter().map(|symbol| pascal_case(symbol)).collect();
    assert_eq!(
        branch_names, type_names,
        "{SCHEMA}: the properties union's records must follow the EventType symbols, in order"
    );

    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("touchpoint_event_types.rs"), types(&enums, &variants))
        .expect("write the types");
    std::fs::write(Path::new(&out_dir).join("touchpoint_event_codec.rs"), codec(&variants))
        .expect("write the codec");
}

fn fill(template: &str, with: &str) -> String {
    template.replace("{}", with)
}

fn pattern(variant: &Variant) -> String {
    if variant.fields.is_empty() {
        return format!("EventPayload::{}", variant.name);
    }
    let names: Vec<&str> = variant.fields.iter().map(|(name, _)| name.as_str()).collect();
    format!("EventPayload::{} {{ {} }}", variant.name, names.join(", "))
}

fn construct(variant: &Variant, read: impl Fn(&str, &Mapping) -> String) -> String {
    if variant.fields.is_empty() {
        return format!("EventPayload::{}", variant.name);
    }
    let fields: Vec<String> =
        variant.fields.iter().map(|(name, mapping)| format!("{name}: {}", read(name, mapping))).collect();
    format!("EventPayload::{} {{ {} }}", variant.name, fields.join(", "))
}

fn types(enums: &[(String, Vec<String>)], variants: &[Variant]) -> String {
    let mut code =
        String::from("// Generated by crates/model/build.rs from schemas/touchpoint_event.avsc.\n\n");
    for (name, symbols) in enums {
        let _ = writeln!(
            code,
            "string_enum!(\n    /// The Avro enum `{name}` of touchpoint_event.avsc.\n    {name} {{"
        );
        for symbol in symbols {
            let _ = writeln!(code, "        {} => {symbol:?},", pascal_case(symbol));
        }
        code.push_str("    }\n);\n\n");
    }
    code.push_str(
        "/// The type-specific properties of an event (one record of the `properties` union each,\n\
         /// fields in schema order); the variant decides the event type.\n\
         #[derive(Debug, Clone, PartialEq)]\npub enum EventPayload {\n",
    );
    for variant in variants {
        if variant.fields.is_empty() {
            let _ = writeln!(code, "    {},", variant.name);
            continue;
        }
        let _ = writeln!(code, "    {} {{", variant.name);
        for (name, mapping) in &variant.fields {
            let _ = writeln!(code, "        {name}: {},", mapping.rust_type);
        }
        code.push_str("    },\n");
    }
    code.push_str(
        "}\n\nimpl EventPayload {\n    pub fn event_type(&self) -> EventType {\n        match self {\n",
    );
    for variant in variants {
        let any = if variant.fields.is_empty() { String::new() } else { " { .. }".to_owned() };
        let _ =
            writeln!(code, "            EventPayload::{}{any} => EventType::{},", variant.name, variant.name);
    }
    code.push_str("        }\n    }\n}\n");
    code
}

fn codec(variants: &[Variant]) -> String {
    let mut code =
        String::from("// Generated by crates/model/build.rs from schemas/touchpoint_event.avsc.\n\n");
    code.push_str(
        "/// Reads the properties of `event_type` from a datum of the current schema, in field order.\n\
         fn read_payload(r: &mut DatumReader<'_>, event_type: EventType) -> Result<EventPayload, String> {\n    Ok(match event_type {\n",
    );
    for variant in variants {
        let read = construct(variant, |_, mapping| mapping.read.to_owned());
        let _ = writeln!(code, "        EventType::{} => {read},", variant.name);
    }
    code.push_str("    })\n}\n\n");
    code.push_str("/// The properties as an Avro record value.\nfn payload_value(payload: &EventPayload) -> Value {\n    match payload {\n");
    for variant in variants {
        let fields: Vec<String> = variant
            .fields
            .iter()
            .map(|(name, mapping)| format!("({name:?}, {})", fill(mapping.value, name)))
            .collect();
        let _ = writeln!(code, "        {} => record(vec![{}]),", pattern(variant), fields.join(", "));
    }
    code.push_str("    }\n}\n\n");
    code.push_str(
        "/// Reads the properties of `event_type` from a resolved record value.\n\
         fn payload_from_value(event_type: EventType, value: Value) -> Result<EventPayload, String> {\n    \
         let mut r = RecordFields::new(value)?;\n    Ok(match event_type {\n",
    );
    for variant in variants {
        let read = construct(variant, |name, mapping| fill(mapping.from_value, name));
        let _ = writeln!(code, "        EventType::{} => {read},", variant.name);
    }
    code.push_str("    })\n}\n");
    code
}
