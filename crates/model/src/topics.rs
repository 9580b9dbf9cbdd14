//! The topics of SPEC 3 with their default names and cleanup policies; which service writes
//! which is in `services.rs`.

use serde::Serialize;

/// How a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Time-based retention.
    Delete { retention_ms: i64 },
    /// Latest record per key.
    Compact,
}

/// One pipeline topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TopicSpec {
    pub name: &'static str,
    pub cleanup: Cleanup,
    /// What the record values are, for `omni tail` and the docs.
    pub value: &'static str,
}

pub(crate) const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub const EVENTS: &str = "touchpoint.events.v1";
pub const EVENTS_DLQ: &str = "touchpoint.events.dlq.v1";
pub const PROFILES: &str = "customer.profiles.v1";
pub const SUPPRESSIONS: &str = "customer.suppressions.v1";
pub const CHANNEL_AFFINITY: &str = "customer.channel-affinity.v1";
pub const LOYALTY_LEDGER: &str = "loyalty.ledger.v1";
pub const LOYALTY_BALANCES: &str = "loyalty.balances.v1";

/// Changelog of profile-updater's state (SPEC 3: `<service>.state.v1`).
pub const PROFILE_UPDATER_STATE: &str = "profile-updater.state.v1";
/// Changelog of suppression's state.
pub const SUPPRESSION_STATE: &str = "suppression.state.v1";
/// Changelog of channel-affinity's state.
pub const CHANNEL_AFFINITY_STATE: &str = "channel-affinity.state.v1";
/// Changelog of loyalty-points' state.
pub const LOYALTY_POINTS_STATE: &str = "loyalty-points.state.v1";
/// journeys' send decisions (`JourneyAction`, key customer id), its customers' journeys
/// (`CustomerJourneyState`, compacted), and its changelog.
pub const JOURNEY_ACTIONS: &str = "journey.actions.v1";
pub const JOURNEY_STATES: &str = "journey.states.v1";
pub const JOURNEYS_STATE: &str = "journeys.state.v1";

/// The services' state handoff topics (docs/runtime.md, "State handoff"), used with resolution.
pub const PROFILE_UPDATER_HANDOFF: &str = "profile-updater.handoff.v1";
pub const SUPPRESSION_HANDOFF: &str = "suppression.handoff.v1";
pub const CHANNEL_AFFINITY_HANDOFF: &str = "channel-affinity.handoff.v1";
pub const LOYALTY_POINTS_HANDOFF: &str = "loyalty-points.handoff.v1";
pub const JOURNEYS_HANDOFF: &str = "journeys.handoff.v1";

/// Topics whose records the services read by the broker's append time (SPEC 4, the partition
/// clock): what they take as input, and their handoffs.
pub const LOG_APPEND_TIME: &[&str] = &[
    EVENTS,
    RESOLVED_EVENTS,
    PROFILE_UPDATER_HANDOFF,
    SUPPRESSION_HANDOFF,
    CHANNEL_AFFINITY_HANDOFF,
    LOYALTY_POINTS_HANDOFF,
    JOURNEYS_HANDOFF,
    // A broadcast input of journeys: its lookups go by append time.
    JOURNEY_DEFINITIONS,
    // Another broadcast input of journeys, whose records also trigger entries by append time.
    CATALOG_EVENTS,
];

/// Identity resolution (docs/identity.md; optional): the claim stage's requests keyed by
/// identifier, the customer stage's keyed by canonical id, the events resolved to canonical
/// customers (what the services read when resolution is on), and refused links.
pub const IDENTITY_REQUESTS: &str = "identity.requests.v1";
pub const IDENTITY_CUSTOMERS: &str = "identity.customers.v1";
pub const RESOLVED_EVENTS: &str = "touchpoint.resolved.v1";
pub const IDENTITY_CONFLICTS: &str = "identity.conflicts.v1";
/// Each customer id's identifiers and merges, or where it was merged (`CustomerIdentity`).
pub const CUSTOMER_IDENTITY: &str = "customer.identity.v1";
/// Published journey definitions, one record per version (`JourneyDefinition`, key `id:version`).
pub const JOURNEY_DEFINITIONS: &str = "journey.definitions.v1";
/// Changes to products (`CatalogEvent`, key product id): price drops and restocks enter journeys.
pub const CATALOG_EVENTS: &str = "catalog.events.v1";
pub const IDENTITY_CLAIMS_STATE: &str = "identity-claims.state.v1";
pub const IDENTITY_CUSTOMERS_STATE: &str = "identity-customers.state.v1";

pub const EVENTS_TOPIC: TopicSpec = TopicSpec {
    name: EVENTS,
    cleanup: Cleanup::Delete { retention_ms: 7 * DAY_MS },
    value: "TouchpointEvent",
};
pub const EVENTS_DLQ_TOPIC: TopicSpec = TopicSpec {
    name: EVENTS_DLQ,
    cleanup: Cleanup::Delete { retention_ms: 30 * DAY_MS },
    value: "original bytes",
};
pub const PROFILES_TOPIC: TopicSpec =
    TopicSpec { name: PROFILES, cleanup: Cleanup::Compact, value: "CustomerProfile" };
pub const SUPPRESSIONS_TOPIC: TopicSpec =
    TopicSpec { name: SUPPRESSIONS, cleanup: Cleanup::Compact, value: "SuppressionState" };
pub const CHANNEL_AFFINITY_TOPIC: TopicSpec =
    TopicSpec { name: CHANNEL_AFFINITY, cleanup: Cleanup::Compact, value: "ChannelAffinity" };
pub const LOYALTY_LEDGER_TOPIC: TopicSpec = TopicSpec {
    name: LOYALTY_LEDGER,
    cleanup: Cleanup::Delete { retention_ms: 10 * 365 * DAY_MS },
    value: "LoyaltyLedgerEntry",
};
pub const LOYALTY_BALANCES_TOPIC: TopicSpec =
    TopicSpec { name: LOYALTY_BALANCES, cleanup: Cleanup::Compact, value: "LoyaltyBalance" };
pub const IDENTITY_REQUESTS_TOPIC: TopicSpec = TopicSpec {
    name: IDENTITY_REQUESTS,
    cleanup: Cleanup::Delete { retention_ms: 7 * DAY_MS },
    value: "identity-resolver claim request (MessagePack)",
};
pub const IDENTITY_CUSTOMERS_TOPIC: TopicSpec = TopicSpec {
    name: IDENTITY_CUSTOMERS,
    cleanup: Cleanup::Delete { retention_ms: 7 * DAY_MS },
    value: "identity-resolver customer request (MessagePack)",
};
pub const RESOLVED_EVENTS_TOPIC: TopicSpec = TopicSpec {
    name: RESOLVED_EVENTS,
    cleanup: Cleanup::Delete { retention_ms: 7 * DAY_MS },
    value: "TouchpointEvent",
};
pub const CUSTOMER_IDENTITY_TOPIC: TopicSpec =
    TopicSpec { name: CUSTOMER_IDENTITY, cleanup: Cleanup::Compact, value: "CustomerIdentity" };
pub const JOURNEY_DEFINITIONS_TOPIC: TopicSpec =
    TopicSpec { name: JOURNEY_DEFINITIONS, cleanup: Cleanup::Compact, value: "JourneyDefinition" };
/// Compacted: a journeys instance reads it whole at start, and only a product's recent changes
/// still trigger anything; but not before the events they may concern are gone
/// ([`CATALOG_EVENTS_MIN_COMPACTION_LAG_MS`]).
pub const CATALOG_EVENTS_TOPIC: TopicSpec =
    TopicSpec { name: CATALOG_EVENTS, cleanup: Cleanup::Compact, value: "CatalogEvent" };
/// A catalog change stays readable as long as the events it may concern (their retention): a
/// replay after a crash or a rebalance must find a drop that a later rise of the same product
/// would compact away.
pub const CATALOG_EVENTS_MIN_COMPACTION_LAG_MS: i64 = 7 * DAY_MS;
pub const JOURNEY_ACTIONS_TOPIC: TopicSpec = TopicSpec {
    name: JOURNEY_ACTIONS,
    cleanup: Cleanup::Delete { retention_ms: 30 * DAY_MS },
    value: "JourneyAction",
};
pub const JOURNEY_STATES_TOPIC: TopicSpec =
    TopicSpec { name: JOURNEY_STATES, cleanup: Cleanup::Compact, value: "CustomerJourneyState" };
pub const IDENTITY_CONFLICTS_TOPIC: TopicSpec = TopicSpec {
    name: IDENTITY_CONFLICTS,
    cleanup: Cleanup::Delete { retention_ms: 365 * DAY_MS },
    value: "IdentityConflict",
};
