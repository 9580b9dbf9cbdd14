package io.omnistream.bench;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The event-counter's fold in Kafka Streams: per customer (the record key), the number of events
 * so far, written to the output topic as JSON, with exactly_once_v2 and a 100 ms commit interval
 * (the runtime's). It does less than the event-counter: no Avro decoding, no validation, no
 * dedupe by event id, so the ratio `make bench` reports is in Kafka Streams' favour.
 *
 * <p>Usage: CounterStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS CACHE_BYTES
 * ({@link Twins.Args}). Runs until SIGTERM.
 */
public final class CounterStreams {
    private CounterStreams() {}

    public static void main(String[] args) throws InterruptedException {
        Twins.Args twin = Twins.Args.parse("CounterStreams", args, false);
        Materialized<String, Long, KeyValueStore<Bytes, byte[]>> counts = twin.inMemory()
            ? Materialized.as(Stores.inMemoryKeyValueStore("counts"))
            : Materialized.as(Stores.persistentKeyValueStore("counts"));
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(twin.input(), Consumed.with(Serdes.String(), Serdes.ByteArray()))
            .groupByKey()
            .count(counts.withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
            .toStream()
            .mapValues((customer, count) -> "{\"customer_id\":\"" + customer + "\",\"count\":" + count + "}")
            .to(twin.output(), Produced.with(Serdes.String(), Serdes.String()));
        Twins.run("counter-streams", builder.build(), twin.config("counter-streams"));
    }
}
