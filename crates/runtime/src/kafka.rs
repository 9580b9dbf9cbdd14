//! Kafka client settings. Every librdkafka option can be passed through, three ways (later wins):
//! a properties file (`--kafka-config`), `KAFKA_*` environment variables (`KAFKA_SASL_MECHANISM`
//! becomes `sasl.mechanism`), and `-X key=value` flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;

/// Environment variables with the `KAFKA_` prefix that are not librdkafka options: ours, and the
/// Java broker's own (the local broker script reads those).
const NOT_PASSED_THROUGH: &[&str] = &[
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CONFIG_FILE",
    "KAFKA_GROUP_ID",
    "KAFKA_HEAP_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_DEBUG",
];

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap_servers: String,

    /// A file of librdkafka properties (`key=value` lines, `#` comments), e.g. SASL/TLS settings.
    #[arg(long, env = "KAFKA_CONFIG_FILE", global = true)]
    pub kafka_config: Option<PathBuf>,

    /// A librdkafka property, `-X security.protocol=SASL_SSL`; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    pub kafka_property: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read Kafka config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: expected key=value, got {line:?}")]
    BadProperty { origin: String, line: String },
}

impl KafkaArgs {
    /// The pass-through properties, from the file, the environment and the flags.
    pub fn properties(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut properties = BTreeMap::new();
        if let Some(path) = &self.kafka_config {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::ReadFile { path: path.clone(), source })?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let (key, value) = split_property(line, &path.display().to_string())?;
                properties.insert(key, value);
            }
        }
        properties.extend(properties_from_env(std::env::vars()));
        for flag in &self.kafka_property {
            let (key, value) = split_property(flag, "-X")?;
            properties.insert(key, value);
        }
        Ok(properties)
    }

    /// A client configuration with the bootstrap servers and every pass-through property.
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in self.properties()? {
            config.set(key, value);
        }
        Ok(config)
    }

    /// Producer settings every omnistream producer shares: idempotent, `acks=all`, and the Java
    /// client's partitioner so keys land where Java producers put them (SPEC 3).
    pub fn idempotent_producer_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut config = self.client_config()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5");
        Ok(config)
    }
}

/// The context of a reader that reads partitions to their end (`enable.partition.eof`): reaching
/// the end is the goal, not an error to log.
#[derive(Debug, Clone, Copy)]
pub struct ReadToEndContext {
    /// What reads, for the log.
    pub reader: &'static str,
}

impl rdkafka::ClientContext for ReadToEndContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if !matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF))
        {
            tracing::warn!(%error, reason, reader = self.reader, "Kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadToEndContext {}

fn split_property(line: &str, origin: &str) -> Result<(String, String), ConfigError> {
    match line.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
        _ => Err(ConfigError::BadProperty { origin: origin.to_owned(), line: line.to_owned() }),
    }
}

/// `KAFKA_SASL_MECHANISM=PLAIN` → `sasl.mechanism=PLAIN`.
pub fn properties_from_env(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.filter(|(name, _)| {
        name.starts_with("KAFKA_") && !NOT_PASSED_THROUGH.contains(&name.as_str()) && !is_service_link(name)
    })
    .map(|(name, value)| (name["KAFKA_".len()..].to_ascii_lowercase().replace('_', "."), value))
    .collect()
}

/// Kubernetes (and Docker links) describe a Service named `kafka` as `KAFKA_SERVICE_HOST`,
/// `KAFKA_PORT`, `KAFKA_PORT_9092_TCP_ADDR`, ...: addresses, not librdkafka options.
fn is_service_link(name: &str) -> bool {
    name.starts_with("KAFKA_SERVICE_") || name == "KAFKA_PORT" || name.starts_with("KAFKA_PORT_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_prefixed_environment_variables_become_librdkafka_properties() {
        let vars = [
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_BOOTSTRAP_SERVERS", "broker:9092"),
            ("KAFKA_CONFIG_FILE", "/etc/omnistream/kafka.properties"),
            ("KAFKA_HEAP_OPTS", "-Xmx1g"),
            ("KAFKA_SERVICE_HOST", "10.0.0.7"),
            ("KAFKA_PORT", "tcp://10.0.0.7:9092"),
            ("KAFKA_PORT_9092_TCP_ADDR", "10.0.0.7"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let properties = properties_from_env(vars.into_iter());
        assert_eq!(
            properties,
            BTreeMap::from([
                ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ])
        );
    }

    #[test]
    fn a_property_without_equals_sign_is_an_error() {
        assert!(split_property("security.protocol", "-X").is_err());
        assert_eq!(split_property(" a.b = c=d ", "-X").unwrap(), ("a.b".to_owned(), "c=d".to_owned()));
    }
}
