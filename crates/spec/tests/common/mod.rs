//! Shared by the broker tests: the input topic as the broker holds it.

use std::collections::BTreeMap;

use omnistream_spec::Record;
use rdkafka::message::Message;

/// Every committed input record with its broker append time, per customer in offset order.
pub fn input_histories(topic: &str) -> BTreeMap<String, Vec<Record>> {
    let mut histories: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for message in omnistream_testkit::read_committed_to_end(topic) {
        let event = omnistream_model::decode_event(message.payload().expect("a value")).expect("an event");
        let appended_at = message.timestamp().to_millis().expect("an append time");
        histories.entry(event.customer_id.clone()).or_default().push(Record { event, appended_at });
    }
    histories
}
