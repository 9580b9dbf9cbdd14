//! Schema Registry support (docs/schema-registry.md): a process registers the schema of every
//! topic it writes in the Confluent wire format (subject `<topic>-value`, compatibility BACKWARD)
//! and writes that format there; every reader learns the schema ids it meets from the registry.
//! Avro single-object encoding stays the default, and needs no registry.
//!
//! The HTTP client is blocking (`ureq`): it is called at start and when a record carries a
//! schema id not seen yet, from threads of its own, never on an async runtime.

mod client;
mod learner;

use std::collections::HashMap;
use std::path::PathBuf;

use omnistream_model::RecordKind;

pub use client::{RegistryClient, RegistryError};
pub use learner::{SchemaCheck, SchemaLearner};

/// How a process writes the Avro records of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WireFormat {
    /// Avro single-object encoding (`C3 01`, the schema's fingerprint): no registry needed.
    #[default]
    SingleObject,
    /// The Confluent wire format (`00`, the registry's 4-byte schema id).
    Confluent,
}

/// The schema registry and the wire format of each written topic, as flags with environment
/// variables (the Confluent clients' names where they have one).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SchemaRegistryArgs {
    /// A Confluent-compatible schema registry (Confluent Schema Registry, Apicurio's
    /// `/apis/ccompat/v7`, Karapace, Redpanda). Needed to write the Confluent format, and to read
    /// records written in it.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,

    /// Basic authentication for the registry, `USER:PASSWORD`.
    #[arg(long, env = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", hide_env_values = true)]
    pub schema_registry_basic_auth: Option<String>,

    /// PEM file of the certificate authorities to trust for an `https` registry (default: the
    /// public roots).
    #[arg(long, env = "SCHEMA_REGISTRY_CA_LOCATION")]
    pub schema_registry_ca: Option<PathBuf>,

    /// PEM file of this client's certificate chain, for a registry that asks for one (with
    /// `--schema-registry-key`).
    #[arg(long, env = "SCHEMA_REGISTRY_CERTIFICATE_LOCATION", requires = "schema_registry_key")]
    pub schema_registry_certificate: Option<PathBuf>,

    /// PEM file of the private key of `--schema-registry-certificate`.
    #[arg(long, env = "SCHEMA_REGISTRY_KEY_LOCATION", requires = "schema_registry_certificate")]
    pub schema_registry_key: Option<PathBuf>,
}

/// What a process that writes Avro records needs: the registry, and the wire format of each
/// topic it writes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WireFormatArgs {
    #[command(flatten)]
    pub registry: SchemaRegistryArgs,

    /// How this process writes Avro records: `single-object` (no registry) or `confluent`.
    #[arg(long, env = "WIRE_FORMAT", value_enum, default_value = "single-object")]
    pub wire_format: WireFormat,

    /// The wire format of one topic, overriding `--wire-format`: `TOPIC=FORMAT` (repeat the
    /// flag, or separate with commas).
    #[arg(long = "wire-format-topic", env = "WIRE_FORMAT_TOPICS", value_delimiter = ',', value_parser = topic_and_format)]
    pub wire_format_topics: Vec<(String, WireFormat)>,
}

fn topic_and_format(text: &str) -> Result<(String, WireFormat), String> {
    let (topic, format) = text.split_once('=').ok_or_else(|| format!("{text:?} is not TOPIC=FORMAT"))?;
    let format = <WireFormat as clap::ValueEnum>::from_str(format.trim(), true)
        .map_err(|_| format!("{format:?} is not a wire format (single-object or confluent)"))?;
    Ok((topic.trim().to_owned(), format))
}

impl SchemaRegistryArgs {
    /// A client of the configured registry, if there is one.
    pub fn client(&self) -> Result<Option<RegistryClient>, RegistryError> {
        self.schema_registry_url.as_deref().map(|url| RegistryClient::new(url, self)).transpose()
    }

    /// The learner of the schema ids this process reads (one without a registry learns none:
    /// a Confluent record then cannot be decoded, and is refused as `unknown_schema`).
    pub fn learner(&self) -> Result<SchemaLearner, RegistryError> {
        SchemaLearner::start(self.client()?)
    }
}

impl WireFormatArgs {
    /// The format this process writes `topic` in.
    pub fn format_of(&self, topic: &str) -> WireFormat {
        self.wire_format_topics
            .iter()
            .rev()
            .find(|(name, _)| name == topic)
            .map_or(self.wire_format, |(_, format)| *format)
    }

    /// Registers the schema of each topic this process writes in the Confluent format (`topics`:
    /// each with the Avro record it holds, `None` for another encoding) and returns the ids to
    /// write with. Fails on a topic in the Confluent format without a registry or without an Avro
    /// record, or a schema the registry refuses; a registry that cannot be reached is asked again
    /// for up to [`START_PATIENCE`].
    pub fn writers(&self, topics: &[(&str, Option<RecordKind>)]) -> Result<TopicWriters, RegistryError> {
        let confluent: Vec<_> =
            topics.iter().filter(|(topic, _)| self.format_of(topic) == WireFormat::Confluent).collect();
        let mut ids = HashMap::new();
        if confluent.is_empty() {
            return Ok(TopicWriters { ids });
        }
        let client = self
            .registry
            .client()?
            .ok_or_else(|| RegistryError::NoRegistry { topic: confluent[0].0.to_owned() })?;
        for (topic, kind) in confluent {
            // `--wire-format` covers the Avro topics; naming another topic is a mistake.
            let named = self.wire_format_topics.iter().any(|(name, _)| name == topic);
            let kind = match kind {
                Some(kind) => *kind,
                None if named => return Err(RegistryError::NotAvro { topic: (*topic).to_owned() }),
                None => continue,
            };
            let subject = format!("{topic}-value");
            let started = std::time::Instant::now();
            let id = loop {
                match client.register_backward(&subject, kind) {
                    Err(error) if error.is_transient() && started.elapsed() < START_PATIENCE => {
                        tracing::warn!(%error, subject, "schema registry not answering; asking again");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    registered => break registered?,
                }
            };
            ids.insert((*topic).to_owned(), id);
        }
        Ok(TopicWriters { ids })
    }
}

/// How long a writer asks an unreachable registry at start before it gives up (exit non-zero,
/// for the orchestrator to restart it).
pub const START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// The schema id each topic written in the Confluent format is written with.
#[derive(Debug, Clone, Default)]
pub struct TopicWriters {
    ids: HashMap<String, u32>,
}

impl TopicWriters {
    /// The schema id `topic` is written with, if it is written in the Confluent format.
    pub fn id_of(&self, topic: &str) -> Option<u32> {
        self.ids.get(topic).copied()
    }

    /// The bytes to write to `topic`: `single_object` as it is, or in the Confluent format.
    pub fn encode(&self, topic: &str, single_object: Vec<u8>) -> Vec<u8> {
        match self.id_of(topic) {
            Some(id) => omnistream_model::to_confluent(single_object, id),
            None => single_object,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        registry: WireFormatArgs,
    }

    #[test]
    fn given_a_default_and_a_topic_override_then_each_topic_gets_its_format() {
        let cli = Cli::parse_from([
            "x",
            "--wire-format",
            "confluent",
            "--wire-format-topic",
            "a=single-object,b=confluent",
        ]);
        assert_eq!(cli.registry.format_of("a"), WireFormat::SingleObject);
        assert_eq!(cli.registry.format_of("b"), WireFormat::Confluent);
        assert_eq!(cli.registry.format_of("c"), WireFormat::Confluent);
        assert_eq!(Cli::parse_from(["x"]).registry.format_of("c"), WireFormat::SingleObject);
        assert!(Cli::try_parse_from(["x", "--wire-format-topic", "a=avro"]).is_err());
    }

    #[test]
    fn the_confluent_format_without_a_registry_is_refused_naming_the_topic() {
        let cli = Cli::parse_from(["x", "--wire-format-topic", "customer.profiles.v1=confluent"]);
        let error = cli
            .registry
            .writers(&[
                ("touchpoint.events.v1", Some(RecordKind::TouchpointEvent)),
                ("customer.profiles.v1", Some(RecordKind::CustomerProfile)),
            ])
            .unwrap_err();
        assert!(error.to_string().contains("customer.profiles.v1"), "{error}");
        let single =
            cli.registry.writers(&[("touchpoint.events.v1", Some(RecordKind::TouchpointEvent))]).unwrap();
        assert_eq!(single.id_of("touchpoint.events.v1"), None);
        let internal = ["x", "--schema-registry-url", "http://127.0.0.1:1", "--wire-format", "confluent"];
        let skipped = Cli::parse_from(internal).registry.writers(&[("identity.requests.v1", None)]).unwrap();
        assert_eq!(skipped.id_of("identity.requests.v1"), None, "the default covers Avro topics only");
        let named = internal.into_iter().chain(["--wire-format-topic", "identity.requests.v1=confluent"]);
        let internal =
            Cli::parse_from(named).registry.writers(&[("identity.requests.v1", None)]).unwrap_err();
        assert!(
            matches!(&internal, RegistryError::NotAvro { topic } if topic == "identity.requests.v1"),
            "{internal}"
        );
    }
}
