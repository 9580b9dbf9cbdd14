package io.omnistream.bench;

import java.io.IOException;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The event-counter's fold in Kafka Streams, with the Apache Avro library: per customer (the record
 * key) the number of events so far, written as the event-counter writes it, a JSON object with the
 * customer, the count and the event that made it (Jackson, on the classpath through Kafka Streams and the Avro library); an
 * erasure deletes the count and writes a tombstone, and the customer's next event counts from one,
 * as the service's does. Exactly_once_v2 and a 100 ms commit interval (the runtime's). The bench
 * decodes both applications' last records per customer and requires them equal.
 *
 * <p>It does less than the event-counter, so the ratio is in Kafka Streams' favour: no validation
 * beyond Avro's, no dedupe by event id, no merges, no idle timers, and an erasure that does not
 * judge the events dated before it (the bench's input is in event-time order).
 *
 * <p>Usage: CounterStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS CACHE_BYTES
 * SCHEMAS_DIR ({@link Twins.Args}). Runs until SIGTERM.
 */
public final class CounterStreams {
    private static final ObjectMapper JSON = new ObjectMapper();

    private CounterStreams() {}

    /** The event-counter's output record, its fields named as the service writes them. */
    record Count(String customer_id, long count, String event_id, boolean idle) {}

    public static void main(String[] args) throws IOException, InterruptedException {
        Twins.Args twin = Twins.Args.parse("CounterStreams", args);
        Schema eventSchema = twin.schema("touchpoint_event.avsc");
        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(twin.store("counts", Serdes.Long()));
        builder.stream(twin.input(), Consumed.with(Serdes.String(), Twins.singleObject(eventSchema)))
            .process(Fold::new, "counts")
            .to(twin.output(), Produced.with(Serdes.String(), Serdes.ByteArray()));
        Twins.run("counter-streams", builder.build(), twin.config("counter-streams"));
    }

    /** One task's processor: counts its customers' events. */
    static final class Fold implements Processor<String, GenericRecord, String, byte[]> {
        private ProcessorContext<String, byte[]> context;
        private KeyValueStore<String, Long> counts;

        @Override
        public void init(ProcessorContext<String, byte[]> context) {
            this.context = context;
            this.counts = context.getStateStore("counts");
        }

        @Override
        public void process(Record<String, GenericRecord> record) {
            String customer = record.key();
            GenericRecord event = record.value();
            if (event.get("type").toString().equals("erasure_requested")) {
                counts.delete(customer);
                context.forward(record.withValue(null));
                return;
            }
            Long before = counts.get(customer);
            long count = before == null ? 1 : before + 1;
            counts.put(customer, count);
            Count written = new Count(customer, count, event.get("event_id").toString(), false);
            try {
                context.forward(record.withValue(JSON.writeValueAsBytes(written)));
            } catch (JsonProcessingException e) {
                throw new IllegalStateException("a count serializes", e);
            }
        }
    }
}
