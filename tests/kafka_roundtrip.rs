//! Simulated events go through the real broker and come back byte-identical to a read_committed
//! consumer, keyed by customer, partitioned the way Java clients partition.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omnistream_model::{decode_and_validate, encode_event};
use omnistream_sim::{SimConfig, SimRecord, Simulator};
use omnistream_testkit::{consume_committed, fresh_topic, produce_all};
use rdkafka::message::Message;

#[tokio::test(flavor = "multi_thread")]
async fn simulated_events_round_trip_byte_identical_through_kafka() {
    let topic = fresh_topic("roundtrip", 6).await;
    let start = DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z").unwrap().with_timezone(&Utc);
    let config = SimConfig {
        customers: 300,
        seed: 11,
        start,
        step: chrono::Duration::milliseconds(50),
        duplicate_share: 0.0,
        malformed_share: 0.0,
    };
    let sent: Vec<(String, Vec<u8>)> = Simulator::new(config)
        .take(5_000)
        .map(|record| match record {
            SimRecord::Event(event) => (event.customer_id.clone(), encode_event(&event).unwrap()),
            other => panic!("no duplicates or malformed records were asked for: {other:?}"),
        })
        .collect();
    produce_all(&topic, sent.clone()).await;

    let received = consume_committed(&topic, sent.len(), Duration::from_secs(60));
    assert_eq!(received.len(), sent.len(), "every event comes back");

    // Per customer, the order is kept and the bytes are identical.
    let mut sent_by_key: HashMap<&str, Vec<&[u8]>> = HashMap::new();
    for (key, value) in &sent {
        sent_by_key.entry(key).or_default().push(value);
    }
    let mut received_by_key: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for message in &received {
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        assert_eq!(message.partition(), java_partition(&key, 6), "{key} is where a Java producer puts it");
        received_by_key.entry(key).or_default().push(message.payload().unwrap().to_vec());
    }
    assert_eq!(received_by_key.len(), sent_by_key.len());
    for (key, values) in &sent_by_key {
        let got: Vec<&[u8]> = received_by_key[*key].iter().map(Vec::as_slice).collect();
        assert_eq!(&got, values, "events of {key}");
    }
    for message in received.iter().take(100) {
        decode_and_validate(message.payload().unwrap(), start + chrono::Duration::days(1))
            .expect("valid event");
    }
}

#[test]
fn the_reference_murmur2_matches_the_java_client() {
    // Vectors from the Java client's and librdkafka's own unit tests.
    let vectors: [(&str, i32); 6] = [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("abc", 479_470_107),
        ("kafka", 0xd067_cf64_u32 as i32),
        ("1234", 0x9fc9_7b14_u32 as i32),
        ("", 0x106e_08d9),
    ];
    for (key, expected) in vectors {
        assert_eq!(murmur2(key.as_bytes()), expected, "murmur2({key:?})");
    }
}

/// The Java client's default partition for a key: positive murmur2 modulo partitions.
fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

/// Kafka's murmur2 (org.apache.kafka.common.utils.Utils#murmur2).
fn murmur2(data: &[u8]) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let m: u32 = 0x5bd1_e995;
    let r = 24;
    let length = data.len() as u32;
    let mut h: u32 = seed ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}
