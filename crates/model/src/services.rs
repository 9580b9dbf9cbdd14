//! The service registry: every omnistream process, its default admin port, what it reads and
//! writes, and its changelog. `omni`, the test kit, the bench, the demo and the Kubernetes checks
//! read it (the last two through `deploy/services.json`, which a test keeps equal to it), so adding
//! a service is its crate, one entry here, its schema and its docs page.

use serde::Serialize;

use crate::topics::{self, Cleanup, TopicSpec};

/// What kind of process a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// An exactly-once consume-transform-produce service on the shared runtime.
    StreamProcessor,
    /// An HTTP server.
    Http,
}

/// How a service reads one of its input topics (the runtime's kinds: docs/runtime.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Keyed records, each processed once; offsets commit with the outputs.
    Stream,
    /// A compacted topic co-partitioned with the stream, read as versioned lookups.
    Table,
    /// A topic every instance reads whole (a lookup input, or the customer-api's views).
    Broadcast,
    /// The service's own topic of states moving between customers.
    Handoff,
}

/// One topic a service reads, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InputSpec {
    pub kind: InputKind,
    #[serde(serialize_with = "topic_name")]
    pub topic: &'static TopicSpec,
}

/// One topic a service writes, under a role name and the command-line flag (and environment
/// variable) that sets its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutputSpec {
    pub role: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
    /// Its default name and cleanup (`registry_json` lists it by name; `topics` has the rest).
    #[serde(serialize_with = "topic_name")]
    pub topic: &'static TopicSpec,
}

/// One process of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    /// Its name, binary, consumer group, Deployment and docs page (`docs/<name>.md`).
    pub name: &'static str,
    pub kind: ServiceKind,
    /// Default port of `/healthz`, `/readyz` and `/metrics`.
    pub admin_port: u16,
    /// Default port of its HTTP API, if it has one.
    pub http_port: Option<u16>,
    /// The topics it consumes, and how.
    pub inputs: &'static [InputSpec],
    /// The topics it produces, with the record each holds.
    pub outputs: &'static [OutputSpec],
    /// Its state's changelog (stream processors).
    #[serde(serialize_with = "optional_topic_name")]
    pub changelog: Option<&'static TopicSpec>,
    /// Its state handoff topic, for merges (docs/runtime.md, "State handoff"): used only when
    /// given (`--handoff-topic`), with identity resolution on.
    #[serde(serialize_with = "optional_topic_name")]
    pub handoff: Option<&'static TopicSpec>,
}

impl ServiceSpec {
    /// The default admin address, on the loopback interface.
    pub fn default_admin_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// The output of this role; panics on a role the registry does not list (a programming error).
    pub fn output(&self, role: &str) -> &'static OutputSpec {
        self.outputs
            .iter()
            .find(|output| output.role == role)
            .unwrap_or_else(|| panic!("{} has no output {role:?}", self.name))
    }
}

fn topic_name<S: serde::Serializer>(topic: &&'static TopicSpec, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(topic.name)
}

fn optional_topic_name<S: serde::Serializer>(
    topic: &Option<&'static TopicSpec>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match topic {
        Some(topic) => serializer.serialize_some(topic.name),
        None => serializer.serialize_none(),
    }
}

const fn stream(topic: &'static TopicSpec) -> InputSpec {
    InputSpec { kind: InputKind::Stream, topic }
}

const fn broadcast(topic: &'static TopicSpec) -> InputSpec {
    InputSpec { kind: InputKind::Broadcast, topic }
}

const fn changelog(name: &'static str, value: &'static str) -> TopicSpec {
    TopicSpec { name, cleanup: Cleanup::Compact, value }
}

const fn handoff(name: &'static str) -> TopicSpec {
    TopicSpec {
        name,
        cleanup: Cleanup::Delete { retention_ms: 7 * topics::DAY_MS },
        value: "a customer's state handed to the winner of a merge (MessagePack)",
    }
}

const fn output(
    role: &'static str,
    flag: &'static str,
    env: &'static str,
    topic: &'static TopicSpec,
) -> OutputSpec {
    OutputSpec { role, flag, env, topic }
}

pub const PROFILE_UPDATER: ServiceSpec = ServiceSpec {
    name: "profile-updater",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9101,
    http_port: None,
    inputs: &[stream(&topics::EVENTS_TOPIC)],
    outputs: &[output("profiles", "--profiles-topic", "PROFILES_TOPIC", &topics::PROFILES_TOPIC)],
    changelog: Some(&changelog(topics::PROFILE_UPDATER_STATE, "profile-updater state (MessagePack)")),
    handoff: Some(&handoff(topics::PROFILE_UPDATER_HANDOFF)),
};

pub const SUPPRESSION: ServiceSpec = ServiceSpec {
    name: "suppression",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9102,
    http_port: None,
    inputs: &[stream(&topics::EVENTS_TOPIC)],
    outputs: &[output(
        "suppressions",
        "--suppressions-topic",
        "SUPPRESSIONS_TOPIC",
        &topics::SUPPRESSIONS_TOPIC,
    )],
    changelog: Some(&changelog(topics::SUPPRESSION_STATE, "suppression state (MessagePack)")),
    handoff: Some(&handoff(topics::SUPPRESSION_HANDOFF)),
};

pub const CHANNEL_AFFINITY: ServiceSpec = ServiceSpec {
    name: "channel-affinity",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9103,
    http_port: None,
    inputs: &[stream(&topics::EVENTS_TOPIC)],
    outputs: &[output("affinity", "--affinity-topic", "AFFINITY_TOPIC", &topics::CHANNEL_AFFINITY_TOPIC)],
    changelog: Some(&changelog(topics::CHANNEL_AFFINITY_STATE, "channel-affinity state (MessagePack)")),
    handoff: Some(&handoff(topics::CHANNEL_AFFINITY_HANDOFF)),
};

pub const LOYALTY_POINTS: ServiceSpec = ServiceSpec {
    name: "loyalty-points",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9104,
    http_port: None,
    inputs: &[stream(&topics::EVENTS_TOPIC)],
    outputs: &[
        // The balance comes first: one record per event it reads, the one the bench times.
        output("balances", "--balances-topic", "BALANCES_TOPIC", &topics::LOYALTY_BALANCES_TOPIC),
        output("ledger", "--ledger-topic", "LEDGER_TOPIC", &topics::LOYALTY_LEDGER_TOPIC),
    ],
    changelog: Some(&changelog(topics::LOYALTY_POINTS_STATE, "loyalty-points state (MessagePack)")),
    handoff: Some(&handoff(topics::LOYALTY_POINTS_HANDOFF)),
};

pub const JOURNEYS: ServiceSpec = ServiceSpec {
    name: "journeys",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9110,
    http_port: None,
    inputs: &[
        stream(&topics::EVENTS_TOPIC),
        broadcast(&topics::JOURNEY_DEFINITIONS_TOPIC),
        broadcast(&topics::CATALOG_EVENTS_TOPIC),
    ],
    outputs: &[
        output("actions", "--actions-topic", "ACTIONS_TOPIC", &topics::JOURNEY_ACTIONS_TOPIC),
        output("states", "--journey-states-topic", "JOURNEY_STATES_TOPIC", &topics::JOURNEY_STATES_TOPIC),
    ],
    changelog: Some(&changelog(topics::JOURNEYS_STATE, "journeys state (MessagePack)")),
    handoff: Some(&handoff(topics::JOURNEYS_HANDOFF)),
};

pub const INGEST_GATEWAY: ServiceSpec = ServiceSpec {
    name: "ingest-gateway",
    kind: ServiceKind::Http,
    admin_port: 9105,
    http_port: Some(8080),
    inputs: &[],
    outputs: &[
        output("events", "--events-topic", "EVENTS_TOPIC", &topics::EVENTS_TOPIC),
        output("catalog", "--catalog-topic", "CATALOG_TOPIC", &topics::CATALOG_EVENTS_TOPIC),
    ],
    changelog: None,
    handoff: None,
};

pub const CUSTOMER_API: ServiceSpec = ServiceSpec {
    name: "customer-api",
    kind: ServiceKind::Http,
    admin_port: 9106,
    http_port: Some(8081),
    inputs: &[
        broadcast(&topics::PROFILES_TOPIC),
        broadcast(&topics::SUPPRESSIONS_TOPIC),
        broadcast(&topics::CHANNEL_AFFINITY_TOPIC),
        broadcast(&topics::LOYALTY_BALANCES_TOPIC),
        broadcast(&topics::LOYALTY_LEDGER_TOPIC),
        broadcast(&topics::CUSTOMER_IDENTITY_TOPIC),
        broadcast(&topics::JOURNEY_STATES_TOPIC),
    ],
    outputs: &[],
    changelog: None,
    handoff: None,
};

/// identity-resolver's stages (docs/identity.md), one process kind each, all from the
/// `identity-resolver` binary (`identity-resolver claims|customers`). Optional: without
/// them the services read the producers' events as they are.
pub const IDENTITY_CLAIMS: ServiceSpec = ServiceSpec {
    name: "identity-claims",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9108,
    http_port: None,
    inputs: &[stream(&topics::IDENTITY_REQUESTS_TOPIC)],
    outputs: &[
        output("requests", "--requests-topic", "IDENTITY_REQUESTS_TOPIC", &topics::IDENTITY_REQUESTS_TOPIC),
        output(
            "customers",
            "--customers-topic",
            "IDENTITY_CUSTOMERS_TOPIC",
            &topics::IDENTITY_CUSTOMERS_TOPIC,
        ),
    ],
    changelog: Some(&changelog(
        topics::IDENTITY_CLAIMS_STATE,
        "identity graph: owner of each identifier (MessagePack)",
    )),
    handoff: None,
};

pub const IDENTITY_CUSTOMERS: ServiceSpec = ServiceSpec {
    name: "identity-customers",
    kind: ServiceKind::StreamProcessor,
    admin_port: 9109,
    http_port: None,
    inputs: &[stream(&topics::EVENTS_TOPIC), stream(&topics::IDENTITY_CUSTOMERS_TOPIC)],
    outputs: &[
        output("requests", "--requests-topic", "IDENTITY_REQUESTS_TOPIC", &topics::IDENTITY_REQUESTS_TOPIC),
        output(
            "customers",
            "--customers-topic",
            "IDENTITY_CUSTOMERS_TOPIC",
            &topics::IDENTITY_CUSTOMERS_TOPIC,
        ),
        output("resolved", "--resolved-topic", "RESOLVED_TOPIC", &topics::RESOLVED_EVENTS_TOPIC),
        output("conflicts", "--conflicts-topic", "CONFLICTS_TOPIC", &topics::IDENTITY_CONFLICTS_TOPIC),
        output("identity", "--identity-topic", "IDENTITY_TOPIC", &topics::CUSTOMER_IDENTITY_TOPIC),
    ],
    changelog: Some(&changelog(
        topics::IDENTITY_CUSTOMERS_STATE,
        "identity-customers state: identifiers, merges (MessagePack)",
    )),
    handoff: None,
};

/// identity-resolver's stages, in start order.
pub const IDENTITY_STAGES: &[ServiceSpec] = &[IDENTITY_CLAIMS, IDENTITY_CUSTOMERS];

/// Every service, in start order (the gateway last but one: the processors are ready for it).
pub const SERVICES: &[ServiceSpec] =
    &[PROFILE_UPDATER, SUPPRESSION, CHANNEL_AFFINITY, LOYALTY_POINTS, JOURNEYS, INGEST_GATEWAY, CUSTOMER_API];

/// The service or identity stage of this name.
pub fn service(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES.iter().chain(IDENTITY_STAGES).find(|service| service.name == name)
}

/// The stream processors, in start order.
pub fn stream_processors() -> impl Iterator<Item = &'static ServiceSpec> {
    SERVICES.iter().filter(|service| service.kind == ServiceKind::StreamProcessor)
}

/// Every topic of the pipeline (SPEC 3), once each: the events, their DLQ, each service's and
/// identity stage's outputs and changelog (the identity topics exist, empty, without resolution:
/// the customer-api reads `customer.identity.v1` either way).
pub fn pipeline_topics() -> Vec<&'static TopicSpec> {
    let mut topics: Vec<&'static TopicSpec> = vec![&topics::EVENTS_TOPIC, &topics::EVENTS_DLQ_TOPIC];
    // A broadcast input of a service is written by a tool (`omni journeys publish`), not a service.
    let each = SERVICES.iter().chain(IDENTITY_STAGES).flat_map(|service| {
        let written_by_tools = service.inputs.iter().filter(|input| input.kind == InputKind::Broadcast);
        let written_by_tools = written_by_tools
            .map(|input| input.topic)
            .filter(|_| service.kind == ServiceKind::StreamProcessor);
        service
            .outputs
            .iter()
            .map(|output| output.topic)
            .chain(service.changelog)
            .chain(service.handoff)
            .chain(written_by_tools)
    });
    for topic in each {
        if !topics.iter().any(|known| known.name == topic.name) {
            topics.push(topic);
        }
    }
    topics
}

/// The registry as `deploy/services.json` holds it, for the tools that do not build Rust.
pub fn registry_json() -> String {
    #[derive(Serialize)]
    struct Registry {
        services: &'static [ServiceSpec],
        identity_stages: &'static [ServiceSpec],
        topics: Vec<&'static TopicSpec>,
    }
    let registry =
        Registry { services: SERVICES, identity_stages: IDENTITY_STAGES, topics: pipeline_topics() };
    let mut text = serde_json::to_string_pretty(&registry).expect("the registry serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_services_json_is_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/services.json");
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == registry_json(),
            "deploy/services.json differs from crates/model/src/services.rs: run `cargo run -p omni -- services > deploy/services.json`"
        );
    }

    #[test]
    fn names_ports_and_topics_are_unique() {
        let all: Vec<ServiceSpec> = SERVICES.iter().chain(IDENTITY_STAGES).copied().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.admin_port, b.admin_port, "{} and {}", a.name, b.name);
                assert!(a.http_port.is_none() || a.http_port != b.http_port, "{} and {}", a.name, b.name);
            }
            assert_eq!(a.kind == ServiceKind::StreamProcessor, a.changelog.is_some(), "{}", a.name);
        }
        let topics = pipeline_topics();
        assert_eq!(
            topics.len(),
            28,
            "SPEC 3's seven topics, four changelogs and four handoff topics, identity's five topics and two changelogs, journeys' definitions, catalog events, actions, states, changelog and handoff topic"
        );
    }
}
