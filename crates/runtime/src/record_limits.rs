//! How large a record each topic takes. Under exactly-once a produce error aborts the whole
//! transaction, and the same input replays into the same error: a record that cannot fit must be
//! caught before it is sent (SPEC 4, `record_too_large`), never by the broker.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rustc_hash::FxHashMap;
use tracing::{info, warn};

use crate::RuntimeError;
use crate::config::RuntimeConfig;

/// librdkafka's default `message.max.bytes`: the largest record the producer sends.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// A one-record batch's header (61 bytes) and the record's own varints, with room to spare.
const RECORD_OVERHEAD: usize = 128;

/// The size a record with this key, value and headers takes in a batch of its own.
pub fn record_size(key: &str, value: Option<&[u8]>, headers: &[(&str, &str)]) -> usize {
    RECORD_OVERHEAD
        + key.len()
        + value.map_or(0, <[u8]>::len)
        + headers.iter().map(|(name, value)| header_size(name, value)).sum::<usize>()
}

/// What one header adds to a record's size.
pub fn header_size(name: &str, value: &str) -> usize {
    name.len() + value.len() + 10
}

/// The maximum record size per topic: the smaller of the topic's `max.message.bytes` (asked of
/// the cluster once per topic) and the producer's `message.max.bytes`.
pub(crate) struct RecordLimits {
    admin: AdminClient<DefaultClientContext>,
    producer_max: usize,
    by_topic: FxHashMap<String, usize>,
}

impl std::fmt::Debug for RecordLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLimits").field("by_topic", &self.by_topic).finish_non_exhaustive()
    }
}

impl RecordLimits {
    pub(crate) fn new(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let client = config.kafka.client_config()?;
        let producer_max = client
            .get("message.max.bytes")
            .and_then(|value| value.parse().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        Ok(Self { admin: client.create()?, producer_max, by_topic: FxHashMap::default() })
    }

    fn topic_max_message_bytes(&self, topic: &str) -> Result<usize, String> {
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let resources = [ResourceSpecifier::Topic(topic)];
        let request = self.admin.describe_configs(&resources, &options);
        let results = tokio::runtime::Handle::current().block_on(request).map_err(|e| e.to_string())?;
        let resource = results.into_iter().next().ok_or("no answer")?.map_err(|e| e.to_string())?;
        let value = resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.clone())
            .ok_or("no max.message.bytes")?;
        value.parse().map_err(|e| format!("max.message.bytes {value:?}: {e}"))
    }
}

impl crate::engine::TopicLimits for RecordLimits {
    /// The largest record `topic` takes from this service.
    fn limit(&mut self, topic: &str) -> usize {
        if let Some(limit) = self.by_topic.get(topic) {
            return *limit;
        }
        let limit = match self.topic_max_message_bytes(topic) {
            Ok(topic_max) => topic_max.min(self.producer_max),
            Err(error) => {
                // The producer's own limit still holds; the broker's may be lower, which a later
                // abort would then show (and the next start asks again).
                warn!(topic, %error, "cannot read the topic's max.message.bytes; using the producer's");
                self.producer_max
            }
        };
        info!(topic, limit, "largest record this topic takes");
        self.by_topic.insert(topic.to_owned(), limit);
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_its_key_value_headers_and_batch_overhead() {
        assert_eq!(record_size("c-1", None, &[]), RECORD_OVERHEAD + 3);
        assert_eq!(
            record_size("c-1", Some(&[0; 1000]), &[("cause.event_id", "e-1")]),
            RECORD_OVERHEAD + 3 + 1000 + 14 + 3 + 10
        );
    }
}
