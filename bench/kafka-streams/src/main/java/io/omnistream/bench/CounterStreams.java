package io.omnistream.bench;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
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
 * <p>Usage: CounterStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID STORE THREADS CACHE_BYTES, where
 * STORE is {@code memory} or {@code rocksdb} and CACHE_BYTES is the record cache
 * ({@code statestore.cache.max.bytes}; 0 turns it off, -1 keeps the default). Runs until SIGTERM.
 */
public final class CounterStreams {
    private CounterStreams() {}

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 7) {
            System.err.println("usage: CounterStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS CACHE_BYTES");
            System.exit(2);
        }
        String bootstrap = args[0];
        String input = args[1];
        String output = args[2];
        String applicationId = args[3];
        String store = args[4];
        int threads = Integer.parseInt(args[5]);
        long cacheBytes = Long.parseLong(args[6]);

        Properties config = new Properties();
        config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        config.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        config.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        if (cacheBytes >= 0) {
            config.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, cacheBytes);
        }
        config.put(StreamsConfig.STATE_DIR_CONFIG, System.getProperty("java.io.tmpdir") + "/counter-streams-" + applicationId);
        config.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        Materialized<String, Long, KeyValueStore<Bytes, byte[]>> counts = switch (store) {
            case "memory" -> Materialized.as(Stores.inMemoryKeyValueStore("counts"));
            case "rocksdb" -> Materialized.as(Stores.persistentKeyValueStore("counts"));
            default -> throw new IllegalArgumentException("store is memory or rocksdb, not " + store);
        };
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
            .groupByKey()
            .count(counts.withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
            .toStream()
            .mapValues((customer, count) -> "{\"customer_id\":\"" + customer + "\",\"count\":" + count + "}")
            .to(output, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.err.println("counter-streams: stopped in ERROR");
            System.exit(1);
        }
    }
}
