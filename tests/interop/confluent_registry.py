"""A stock Confluent client against omnistream through a real schema registry: the independent
check of the Confluent wire format (tests/schema_registry.rs runs it).

  confluent_registry.py produce BOOTSTRAP REGISTRY_URL TOPIC SCHEMA_FILE < records.jsonl
      Publishes each line, {"key": ..., "value": {...}}, with confluent-kafka's AvroSerializer
      (auto-registering SCHEMA_FILE under TOPIC-value); a union branch of records is written as
      ["FullName", {...}]. Prints the schema id it wrote with.
  confluent_registry.py consume BOOTSTRAP REGISTRY_URL TOPIC...
      Reads each topic from the beginning to its end (read_committed) with AvroDeserializer,
      which fetches every writer schema by the id in the record; prints one JSON line per
      record: {"topic", "key", "value", "schema_id"}.
"""

import datetime
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def branches(value):
    """["io.omnistream.v1.X", {...}] → fastavro's (name, record) union notation."""
    if isinstance(value, dict):
        return {k: branches(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict) and "." in value[0]:
            return (value[0], branches(value[1]))
        return [branches(v) for v in value]
    return value


def plain(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def produce(bootstrap, registry_url, topic, schema_file):
    registry = SchemaRegistryClient({"url": registry_url})
    with open(schema_file) as f:
        serializer = AvroSerializer(registry, f.read())
    # omnistream's producers partition like Java clients (SPEC 3).
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "enable.idempotence": True})
    failures = []
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        value = serializer(branches(record["value"]), SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=record["key"].encode(), value=value,
                         on_delivery=lambda err, _msg: err and failures.append(str(err)))
        schema_id = int.from_bytes(value[1:5], "big")
    producer.flush(30)
    if failures:
        sys.exit(f"not delivered: {failures}")
    print(json.dumps({"schema_id": schema_id}))


def consume(bootstrap, registry_url, topics):
    registry = SchemaRegistryClient({"url": registry_url})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "interop-confluent", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True,
    })
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign(partitions)
        while pending:
            message = consumer.poll(10)
            if message is None:
                sys.exit(f"{topic}: nothing more to read before its end {ends}")
            if message.error():
                if message.error().code() == -191:  # _PARTITION_EOF
                    pending.discard(message.partition())
                    continue
                sys.exit(f"{topic}: {message.error()}")
            if message.offset() + 1 >= ends[message.partition()]:
                pending.discard(message.partition())
            raw = message.value()
            value = None
            schema_id = None
            if raw is not None:
                schema_id = int.from_bytes(raw[1:5], "big")
                value = deserializer(raw, SerializationContext(topic, MessageField.VALUE))
            print(json.dumps({"topic": topic, "key": message.key().decode(), "value": plain(value),
                              "schema_id": schema_id}))
        consumer.unassign()
    consumer.close()


if __name__ == "__main__":
    command, bootstrap, registry_url, *rest = sys.argv[1:]
    if command == "produce":
        produce(bootstrap, registry_url, rest[0], rest[1])
    elif command == "consume":
        consume(bootstrap, registry_url, rest)
    else:
        sys.exit(__doc__)
