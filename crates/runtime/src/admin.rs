//! Topic administration: create the pipeline topics with their cleanup policies, idempotently.

use std::time::Duration;

use omnistream_model::topics::{Cleanup, TopicSpec};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic { topic: String, code: RDKafkaErrorCode },
}

/// A topic to create: its name, partitions, replicas and configuration.
#[derive(Debug, Clone)]
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub config: Vec<(String, String)>,
}

impl TopicRequest {
    /// The request for a pipeline topic under a (possibly renamed) name.
    pub fn for_spec(spec: &TopicSpec, name: &str, partitions: i32, replication: i32) -> Self {
        let config = match spec.cleanup {
            Cleanup::Compact => vec![("cleanup.policy".to_owned(), "compact".to_owned())],
            Cleanup::Delete { retention_ms } => vec![
                ("cleanup.policy".to_owned(), "delete".to_owned()),
                ("retention.ms".to_owned(), retention_ms.to_string()),
            ],
        };
        let mut request = Self { name: name.to_owned(), partitions, replication, config };
        if omnistream_model::topics::LOG_APPEND_TIME.contains(&spec.name) {
            request.config.push(log_append_time());
        }
        if spec.name == omnistream_model::topics::CATALOG_EVENTS {
            let lag_ms = omnistream_model::topics::CATALOG_EVENTS_MIN_COMPACTION_LAG_MS;
            request.config.push(("min.compaction.lag.ms".to_owned(), lag_ms.to_string()));
        }
        request
    }

    /// A compacted topic (a service's state changelog, test topics).
    pub fn compacted(name: &str, partitions: i32, replication: i32) -> Self {
        let config = vec![("cleanup.policy".to_owned(), "compact".to_owned())];
        Self { name: name.to_owned(), partitions, replication, config }
    }

    /// A touchpoint events topic: records stamped with the broker's append time, which the
    /// services read as their partition clock (SPEC 4).
    pub fn events(name: &str, partitions: i32, replication: i32) -> Self {
        let mut request = Self::plain(name, partitions, replication);
        request.config.push(log_append_time());
        request
    }

    /// A plain delete-policy topic with the broker's default retention.
    pub fn plain(name: &str, partitions: i32, replication: i32) -> Self {
        Self { name: name.to_owned(), partitions, replication, config: Vec::new() }
    }
}

fn log_append_time() -> (String, String) {
    ("message.timestamp.type".to_owned(), "LogAppendTime".to_owned())
}

/// What happened to each requested topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// Creates the topics; ones that exist already are left as they are.
pub async fn create_topics(
    config: &ClientConfig,
    requests: &[TopicRequest],
) -> Result<Vec<(String, TopicOutcome)>, AdminError> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new_topics: Vec<NewTopic<'_>> = requests
        .iter()
        .map(|request| {
            let mut topic = NewTopic::new(
                &request.name,
                request.partitions,
                TopicReplication::Fixed(request.replication),
            );
            for (key, value) in &request.config {
                topic = topic.set(key, value);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new_topics.iter(), &options).await?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(topic) => Ok((topic, TopicOutcome::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => Ok((topic, TopicOutcome::AlreadyExisted)),
            Err((topic, code)) => Err(AdminError::CreateTopic { topic, code }),
        })
        .collect()
}
