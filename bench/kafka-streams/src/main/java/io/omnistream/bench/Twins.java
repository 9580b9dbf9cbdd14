package io.omnistream.bench;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;

/**
 * What every twin shares: its command line, its configuration (exactly_once_v2, the runtime's
 * 100 ms commit interval), running until SIGTERM, and the topics' Avro single-object encoding.
 */
final class Twins {
    private Twins() {}

    /** The command line every twin takes; SCHEMAS_DIR holds the .avsc files. */
    record Args(String bootstrap, String input, String output, String applicationId, String store, int threads,
                long cacheBytes, Path schemas) {
        static Args parse(String name, String[] args) {
            if (args.length != 8) {
                System.err.println("usage: " + name
                    + " BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS CACHE_BYTES SCHEMAS_DIR");
                System.exit(2);
            }
            return new Args(args[0], args[1], args[2], args[3], args[4], Integer.parseInt(args[5]),
                Long.parseLong(args[6]), Path.of(args[7]));
        }

        /** {@code memory} or {@code rocksdb}. */
        boolean inMemory() {
            return switch (store) {
                case "memory" -> true;
                case "rocksdb" -> false;
                default -> throw new IllegalArgumentException("store is memory or rocksdb, not " + store);
            };
        }

        /**
         * A key-value store of the Processor API named {@code name}, with a changelog, cached
         * unless CACHE_BYTES is 0 (the DSL caches its stores unless the cache is 0 bytes; a store
         * of the Processor API only when asked).
         */
        <V> StoreBuilder<KeyValueStore<String, V>> store(String name, Serde<V> values) {
            StoreBuilder<KeyValueStore<String, V>> store = Stores.keyValueStoreBuilder(
                inMemory() ? Stores.inMemoryKeyValueStore(name) : Stores.persistentKeyValueStore(name),
                Serdes.String(), values);
            return cacheBytes != 0 ? store.withCachingEnabled() : store;
        }

        Schema schema(String file) throws IOException {
            return new Schema.Parser().parse(Files.readString(schemas.resolve(file)));
        }

        /**
         * exactly_once_v2, a 100 ms commit interval, THREADS threads; CACHE_BYTES the record cache
         * ({@code statestore.cache.max.bytes}; 0 turns it off, -1 keeps the default).
         */
        Properties config(String name) {
            Properties config = new Properties();
            config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            config.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
            config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
            config.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
            config.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
            if (cacheBytes >= 0) {
                config.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, cacheBytes);
            }
            config.put(StreamsConfig.STATE_DIR_CONFIG,
                System.getProperty("java.io.tmpdir") + "/" + name + "-" + applicationId);
            config.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
            return config;
        }
    }

    /** Runs the topology until SIGTERM; exits 1 if Kafka Streams stopped in ERROR. */
    static void run(String name, Topology topology, Properties config) throws InterruptedException {
        KafkaStreams streams = new KafkaStreams(topology, config);
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
            System.err.println(name + ": stopped in ERROR");
            System.exit(1);
        }
    }

    /** Avro single-object encoding (the topics' format): the schema's fingerprint checked on reading. */
    static Serde<GenericRecord> singleObject(Schema schema) {
        BinaryMessageEncoder<GenericRecord> encoder = new BinaryMessageEncoder<>(GenericData.get(), schema);
        BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);
        Serializer<GenericRecord> serializer = (topic, record) -> {
            if (record == null) {
                return null;
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream(1024);
            try {
                encoder.encode(record, out);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        };
        Deserializer<GenericRecord> deserializer = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            try {
                return decoder.decode(bytes);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        };
        return Serdes.serdeFrom(serializer, deserializer);
    }

    /**
     * A fold of the Processor API over one task's input partition: the customers' store, and the
     * partition clock (the latest append time the task has read; append times only grow within a
     * partition).
     */
    abstract static class PartitionFold<S> implements Processor<String, GenericRecord, String, GenericRecord> {
        private final String storeName;
        ProcessorContext<String, GenericRecord> context;
        KeyValueStore<String, S> store;
        long clock = Long.MIN_VALUE;

        PartitionFold(String storeName) {
            this.storeName = storeName;
        }

        @Override
        public void init(ProcessorContext<String, GenericRecord> context) {
            this.context = context;
            this.store = context.getStateStore(storeName);
        }

        @Override
        public void process(Record<String, GenericRecord> record) {
            clock = Math.max(clock, record.timestamp());
            fold(record);
        }

        /** Applies one event, its key the customer, at {@link #clock}. */
        abstract void fold(Record<String, GenericRecord> record);
    }

    /** Writes a value to a data stream. */
    interface DataWriter<T> {
        void write(T value, DataOutputStream out) throws IOException;
    }

    /** Reads a value from a data stream. */
    interface DataReader<T> {
        T read(DataInputStream in) throws IOException;
    }

    /** A serde of a state in a twin's own binary layout (a store no one else reads); null is null. */
    static <T> Serde<T> dataSerde(DataWriter<T> writer, DataReader<T> reader) {
        Serializer<T> serializer = (topic, value) -> {
            if (value == null) {
                return null;
            }
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(256);
            try (DataOutputStream out = new DataOutputStream(bytes)) {
                writer.write(value, out);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return bytes.toByteArray();
        };
        Deserializer<T> deserializer = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes))) {
                return reader.read(in);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        };
        return Serdes.serdeFrom(serializer, deserializer);
    }
}
