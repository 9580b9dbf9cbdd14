//! The touchpoint event of SPEC 2: one thing a customer did, or that was done to them, on one channel.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where the touchpoint happened.
    Channel {
        Web => "web",
        MobileApp => "mobile_app",
        Email => "email",
        Sms => "sms",
        Whatsapp => "whatsapp",
        Push => "push",
        Store => "store",
        CallCenter => "call_center",
        Social => "social",
        Chat => "chat",
    }
);

impl Channel {
    /// Channels we send outbound messages on (suppression, affinity).
    pub const MESSAGING: &'static [Channel] =
        &[Channel::Email, Channel::Sms, Channel::Whatsapp, Channel::Push];
}

string_enum!(
    /// What kind of touchpoint it is; decides the required properties.
    EventType {
        PageViewed => "page_viewed",
        ProductViewed => "product_viewed",
        CartUpdated => "cart_updated",
        OrderPlaced => "order_placed",
        OrderRefunded => "order_refunded",
        MessageSent => "message_sent",
        MessageDelivered => "message_delivered",
        MessageOpened => "message_opened",
        MessageClicked => "message_clicked",
        MessageBounced => "message_bounced",
        SpamReported => "spam_reported",
        MessageReceived => "message_received",
        SupportTicketOpened => "support_ticket_opened",
        SupportTicketResolved => "support_ticket_resolved",
        ConsentChanged => "consent_changed",
        TraitsUpdated => "traits_updated",
        LoyaltyRedeemRequested => "loyalty_redeem_requested",
        LoyaltyPointsAdjusted => "loyalty_points_adjusted",
        ErasureRequested => "erasure_requested",
    }
);

string_enum!(
    /// Why a message is sent or consent is given.
    Purpose {
        Marketing => "marketing",
        Transactional => "transactional",
    }
);

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

/// The type-specific properties of an event; the variant decides the event type.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    PageViewed {
        url: String,
    },
    ProductViewed {
        product_id: String,
    },
    CartUpdated {
        cart_id: String,
        items: i32,
        value_minor: i64,
        currency: String,
    },
    OrderPlaced {
        order_id: String,
        value_minor: i64,
        currency: String,
        items: Option<i32>,
    },
    OrderRefunded {
        order_id: String,
        value_minor: i64,
        currency: String,
    },
    MessageSent {
        message_id: String,
        campaign_id: Option<String>,
        purpose: Purpose,
    },
    MessageDelivered {
        message_id: String,
    },
    MessageOpened {
        message_id: String,
    },
    MessageClicked {
        message_id: String,
        url: Option<String>,
    },
    MessageBounced {
        message_id: String,
        hard: bool,
    },
    SpamReported {
        message_id: String,
    },
    MessageReceived {
        conversation_id: Option<String>,
        text_len: Option<i32>,
    },
    SupportTicketOpened {
        ticket_id: String,
        topic: Option<String>,
    },
    SupportTicketResolved {
        ticket_id: String,
    },
    ConsentChanged {
        purpose: Purpose,
        granted: bool,
    },
    TraitsUpdated {
        set: BTreeMap<String, TraitValue>,
        set_once: BTreeMap<String, TraitValue>,
        unset: Vec<String>,
    },
    LoyaltyRedeemRequested {
        redemption_id: String,
        points: i64,
    },
    LoyaltyPointsAdjusted {
        points: i64,
        reason: String,
    },
    ErasureRequested,
}

impl EventPayload {
    pub fn event_type(&self) -> EventType {
        match self {
            EventPayload::PageViewed { .. } => EventType::PageViewed,
            EventPayload::ProductViewed { .. } => EventType::ProductViewed,
            EventPayload::CartUpdated { .. } => EventType::CartUpdated,
            EventPayload::OrderPlaced { .. } => EventType::OrderPlaced,
            EventPayload::OrderRefunded { .. } => EventType::OrderRefunded,
            EventPayload::MessageSent { .. } => EventType::MessageSent,
            EventPayload::MessageDelivered { .. } => EventType::MessageDelivered,
            EventPayload::MessageOpened { .. } => EventType::MessageOpened,
            EventPayload::MessageClicked { .. } => EventType::MessageClicked,
            EventPayload::MessageBounced { .. } => EventType::MessageBounced,
            EventPayload::SpamReported { .. } => EventType::SpamReported,
            EventPayload::MessageReceived { .. } => EventType::MessageReceived,
            EventPayload::SupportTicketOpened { .. } => EventType::SupportTicketOpened,
            EventPayload::SupportTicketResolved { .. } => EventType::SupportTicketResolved,
            EventPayload::ConsentChanged { .. } => EventType::ConsentChanged,
            EventPayload::TraitsUpdated { .. } => EventType::TraitsUpdated,
            EventPayload::LoyaltyRedeemRequested { .. } => EventType::LoyaltyRedeemRequested,
            EventPayload::LoyaltyPointsAdjusted { .. } => EventType::LoyaltyPointsAdjusted,
            EventPayload::ErasureRequested => EventType::ErasureRequested,
        }
    }
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
}

impl TouchpointEvent {
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }
}
