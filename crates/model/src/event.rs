//! The touchpoint event of SPEC 2: one thing a customer did, or that was done to them, on one channel.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identifiers::Identifier;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the order of the Avro enum's symbols.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name (JSON value, Avro enum symbol).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Position of the symbol in the Avro enum.
            pub fn index(self) -> u32 {
                self as u32
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        // By hand: utoipa's derive does not see a `rename` whose text comes from a macro.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|value| value.as_str())))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

// `Channel`, `EventType`, `Purpose` and `EventPayload`, generated from the schema (build.rs).
include!(concat!(env!("OUT_DIR"), "/touchpoint_event_types.rs"));

impl Channel {
    /// Channels we send outbound messages on (suppression, affinity).
    pub const MESSAGING: &'static [Channel] =
        &[Channel::Email, Channel::Sms, Channel::Whatsapp, Channel::Push];
}

/// A profile trait value (`traits_updated`). Nested JSON objects and arrays are kept as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraitValue {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    String(String),
}

/// One touchpoint event (SPEC 2). `occurred_at` has millisecond precision, like its Avro form.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchpointEvent {
    pub event_id: String,
    pub customer_id: String,
    pub occurred_at: DateTime<Utc>,
    pub channel: Channel,
    pub source: Option<String>,
    pub payload: EventPayload,
    /// Unknown extra property keys, kept as strings.
    pub context: BTreeMap<String, String>,
    /// Who the customer is known as on this touchpoint (SPEC 4.7): normalized, each once.
    pub identifiers: Vec<Identifier>,
}

impl TouchpointEvent {
    /// The customer a `customers_merged` event moves its customer's state to (identity
    /// resolution): what a service's `handoff_target` answers.
    pub fn merge_winner(&self) -> Option<&str> {
        match &self.payload {
            EventPayload::CustomersMerged { winner, .. } => Some(winner),
            _ => None,
        }
    }

    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }
}
