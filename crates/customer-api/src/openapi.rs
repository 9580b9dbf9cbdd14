//! The customer-api's OpenAPI 3.1 document, served at `GET /openapi.json`: the routes come from
//! the handlers' `utoipa::path` annotations; the derived records inside the answers are described
//! from their `.avsc` files (the answers render them with `value_to_json`), so the document
//! follows the topics' schemas.

use omnistream_model::codec::RecordKind;
use omnistream_model::json_schema::record_json_schema;
use omnistream_model::openapi::BearerKeys;
use serde_json::{Value, json};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "omnistream customer-api",
        description = "One customer across every derived topic (SPEC 6): the customer document, \
                       reachability (may I send, and where?), loyalty, identity and journeys. \
                       An id merged into another customer answers as that customer, and the answer's \
                       `Content-Location` names the canonical resource."
    ),
    paths(
        crate::find_customers,
        crate::get_customer,
        crate::get_reachability,
        crate::get_loyalty,
        crate::get_identity,
        crate::get_journeys,
        crate::get_export,
        crate::get_changes
    ),
    modifiers(&BearerKeys),
    security(("api_key" = []))
)]
pub struct CustomerApiDoc;

/// A JSON Schema as utoipa's type (it reads every keyword `record_json_schema` writes; a test
/// compares the served components with the generated JSON).
fn from_json(schema: Value) -> RefOr<Schema> {
    serde_json::from_value(schema).expect("utoipa reads the JSON Schema of a record")
}

/// A derived record as a component named after its Avro record.
macro_rules! record_component {
    ($($marker:ident => $kind:ident),+ $(,)?) => {$(
        #[doc = concat!("`", stringify!($kind), "` as the answers render it.")]
        #[derive(Debug)]
        pub struct $marker;

        impl PartialSchema for $marker {
            fn schema() -> RefOr<Schema> {
                from_json(record_json_schema(RecordKind::$kind))
            }
        }

        impl ToSchema for $marker {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($kind).into()
            }
        }
    )+};
}

record_component!(
    CustomerProfileRecord => CustomerProfile,
    SuppressionStateRecord => SuppressionState,
    ChannelAffinityRecord => ChannelAffinity,
    LoyaltyBalanceRecord => LoyaltyBalance,
    LoyaltyLedgerEntryRecord => LoyaltyLedgerEntry,
    CustomerJourneyStateRecord => CustomerJourneyState,
);

fn component(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn or_null(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

fn object(properties: Value, description: &str) -> Value {
    let required: Vec<&String> = properties.as_object().expect("properties").keys().collect();
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A document type described by a JSON Schema, with the record components it refers to.
macro_rules! document {
    ($(#[$meta:meta])* $name:ident, [$($record:ident),*], $schema:expr) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                from_json($schema)
            }
        }

        impl ToSchema for $name {
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                schemas.extend([$(($record::name().into_owned(), $record::schema())),*]);
            }
        }
    };
}

document!(
    /// `GET /v1/customers/{id}`.
    CustomerDocument,
    [CustomerProfileRecord, SuppressionStateRecord, ChannelAffinityRecord, LoyaltyBalanceRecord],
    object(
        json!({
            "customer_id": { "type": "string" },
            "profile": or_null(component("CustomerProfile")),
            "suppression": or_null(component("SuppressionState")),
            "channel_affinity": or_null(component("ChannelAffinity")),
            "loyalty": or_null(component("LoyaltyBalance")),
        }),
        "every derived record of the customer, as on its topic; null where a service has nothing for them yet",
    )
);

document!(
    /// `GET /v1/customers/{id}/loyalty`.
    LoyaltyDocument,
    [LoyaltyBalanceRecord, LoyaltyLedgerEntryRecord],
    object(
        json!({
            "customer_id": { "type": "string" },
            "balance": or_null(component("LoyaltyBalance")),
            "recent_entries": { "type": "array", "items": component("LoyaltyLedgerEntry"),
                                "description": "the most recent ledger entries (LEDGER_ENTRIES), newest first" },
        }),
        "the balance and the most recent ledger entries",
    )
);

document!(
    /// `GET /v1/customers/{id}/identity`.
    IdentityDocument,
    [],
    identity_document()
);

document!(
    /// `GET /v1/customers/{id}/export`.
    ExportDocument,
    [
        CustomerProfileRecord,
        SuppressionStateRecord,
        ChannelAffinityRecord,
        LoyaltyBalanceRecord,
        LoyaltyLedgerEntryRecord,
        CustomerJourneyStateRecord
    ],
    object(
        json!({
            "customer_id": { "type": "string" },
            "exported_at": { "type": "string", "format": "date-time" },
            "profile": or_null(component("CustomerProfile")),
            "suppression": or_null(component("SuppressionState")),
            "channel_affinity": or_null(component("ChannelAffinity")),
            "loyalty": object(
                json!({
                    "balance": or_null(component("LoyaltyBalance")),
                    "entries": { "type": "array", "items": component("LoyaltyLedgerEntry"),
                                 "description": "every ledger entry held, oldest first (since the last erasure)" },
                }),
                "the balance and every ledger entry",
            ),
            "identity": identity_document(),
            "journeys": or_null(component("CustomerJourneyState")),
            "merged_ids": { "type": "array", "description": "what is still held under each id merged into the customer",
                            "items": object(
                                json!({
                                    "customer_id": { "type": "string" },
                                    "ledger_entries": { "type": "array", "items": component("LoyaltyLedgerEntry"),
                                                        "description": "its ledger entries from before the merge, oldest first" },
                                    "journeys": or_null(component("CustomerJourneyState")),
                                }),
                                "an id merged into the customer",
                            ) },
        }),
        "everything held on the customer, for a subject-access request",
    )
);

/// The canonical customer's identifiers as identity-resolver records them, every id merged into
/// it, and each merge (its evidence and the customer it was merged into).
fn identity_document() -> Value {
    let identity = record_json_schema(RecordKind::CustomerIdentity);
    let identifiers = identity["properties"]["identifiers"].clone();
    let mut merge = identity["properties"]["merges"]["items"].clone();
    merge["properties"]["into_customer_id"] =
        json!({ "type": "string", "description": "the customer the merged id went into" });
    merge["required"].as_array_mut().expect("a record's required fields").push(json!("into_customer_id"));
    object(
        json!({
            "customer_id": { "type": "string" },
            "identifiers": identifiers,
            "aliases": { "type": "array", "items": { "type": "string" },
                         "description": "every id merged into this customer, directly or not" },
            "merges": { "type": "array", "items": merge, "description": "oldest first" },
        }),
        "who this customer is: identifiers, aliases and the merges behind them",
    )
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    /// utoipa keeps every keyword of the records' JSON Schemas.
    #[test]
    fn the_served_components_are_the_records_json_schemas() {
        let document = serde_json::to_value(CustomerApiDoc::openapi()).unwrap();
        for kind in [
            RecordKind::CustomerProfile,
            RecordKind::SuppressionState,
            RecordKind::ChannelAffinity,
            RecordKind::LoyaltyBalance,
            RecordKind::LoyaltyLedgerEntry,
            RecordKind::CustomerJourneyState,
        ] {
            let name = format!("{kind:?}");
            assert_eq!(document["components"]["schemas"][&name], record_json_schema(kind), "{name}");
        }
        assert_eq!(
            serde_json::to_value(IdentityDocument::schema()).unwrap(),
            identity_document(),
            "the identity document"
        );
    }
}
