//! Kafka plumbing shared by the `omni` CLI and the services: client configuration with librdkafka
//! pass-through (so SASL/TLS clusters work), topic administration, logging setup.

pub mod admin;
pub mod kafka;
pub mod logging;

pub use kafka::KafkaArgs;
