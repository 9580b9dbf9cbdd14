# A stock Confluent consumer reading customer.profiles.v1 through the schema registry
# (`DEMO_REGISTRY=1 make demo` runs it; docs/schema-registry.md).
import uuid

from confluent_kafka import DeserializingConsumer
from confluent_kafka.error import ValueDeserializationError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer

registry = SchemaRegistryClient({"url": "http://127.0.0.1:8089/apis/ccompat/v7"})
consumer = DeserializingConsumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": f"readme-{uuid.uuid4()}", "auto.offset.reset": "earliest", "value.deserializer": AvroDeserializer(registry)})
consumer.subscribe(["customer.profiles.v1"])

# The first profile of c-000001 in the Confluent format. A long-lived topic may also hold
# single-object records written before it was switched (an earlier demo): a stock deserializer
# refuses those, and they are skipped.
while True:
    try:
        message = consumer.poll(10)
    except ValueDeserializationError:
        continue
    if message is None:
        break
    profile = message.value()  # None: a tombstone (an erased customer)
    if profile and profile["customer_id"] == "c-000001":
        print({k: profile[k] for k in ("customer_id", "orders_count", "lifetime_value_minor", "last_seen_at")})
        break
consumer.close()
