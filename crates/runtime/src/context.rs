//! The consumer's context: rebalance callbacks, which hand partitions to the driver, and
//! librdkafka statistics.

use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::driver::Driver;
use crate::metrics::{Metrics, PartitionLabel};
use crate::processor::Processor;

pub(crate) struct EngineContext<P: Processor> {
    pub(crate) driver: Arc<Mutex<Driver<P>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) input_topic: String,
}

impl<P: Processor> std::fmt::Debug for EngineContext<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineContext").field("input_topic", &self.input_topic).finish_non_exhaustive()
    }
}

impl<P: Processor> ClientContext for EngineContext<P> {
    /// The end of a partition is news for the partition clock (`enable.partition.eof`), not an
    /// error to log.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if !matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF))
        {
            tracing::error!(%error, reason, "Kafka client error");
        }
    }

    /// Consumer lag per input partition, from librdkafka's statistics (`statistics.interval.ms`):
    /// the last stable offset minus the position. librdkafka's own `consumer_lag` is measured from
    /// the consumer's committed offset, which it never learns when offsets are committed inside
    /// the producer's transactions.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.input_topic) else { return };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.ls_offset >= 0 && stats.app_offset >= 0 {
                let lag = (stats.ls_offset - stats.app_offset).max(0);
                self.metrics.consumer_lag.get_or_create(&PartitionLabel { partition: *partition }).set(lag);
            }
        }
    }
}

impl<P: Processor> ConsumerContext for EngineContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list);
            let lost = consumer.assignment_lost();
            info!(?partitions, lost, "partitions revoked");
            self.driver.lock().expect("driver lock").on_revoked(consumer, &partitions, lost);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions = partitions_of(list);
            info!(?partitions, "partitions assigned; restoring state before processing them");
            if let Err(error) = consumer.pause(list) {
                warn!(%error, "cannot pause newly assigned partitions");
            }
            self.driver.lock().expect("driver lock").on_assigned(partitions);
        }
    }
}

/// The partition numbers of a rebalance's list: partition `p` of every input is one task.
fn partitions_of(list: &rdkafka::TopicPartitionList) -> Vec<i32> {
    let partitions: std::collections::BTreeSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
    partitions.into_iter().collect()
}
