package io.omnistream.bench;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;

/**
 * channel-affinity's fold in Kafka Streams (SPEC 4.3, docs/channel-affinity.md), with the Apache
 * Avro library: per messaging channel (email, sms, whatsapp, push) the decayed sends and
 * engagements of the customer's facts (sends, first opens or clicks of a message, inbound
 * messages, orders within 24 h of a click), walked in event-time order as of the partition clock
 * (the input record's append time), a Beta posterior score, and the ranking of the channels with
 * marketing consent. Like the service it writes a record for the events it reads and for a new
 * customer's first event, and keeps an erased customer's marker so that an event it does not read
 * starts nothing. The bench decodes both applications' last records with the project's codec and
 * requires them equal (the doubles within 1e-9, {@code exp2} and {@code Math.pow} may differ in the
 * last bit).
 *
 * <p>It does less than channel-affinity, so the ratio is in Kafka Streams' favour: no validation
 * beyond Avro's, no dedupe by event id, no merges, and it keeps every fact instead of folding those
 * beyond the 1,024 latest into decayed sums (the bench's customers have about ten events each).
 * The settings are the service's defaults: a half-life of 30 days, a Beta(1, 1) prior, 3 sends.
 *
 * <p>Usage: AffinityStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS CACHE_BYTES
 * SCHEMAS_DIR ({@link Twins.Args}). Runs until SIGTERM.
 */
public final class AffinityStreams {
    private static final String[] MESSAGING = {"email", "sms", "whatsapp", "push"};
    private static final double HALF_LIFE_DAYS = 30.0;
    private static final double DAY_MS = 86_400_000.0;
    private static final double PRIOR_ALPHA = 1.0;
    private static final double PRIOR_BETA = 1.0;
    private static final double MIN_SENDS = 3.0;
    private static final double ORDER_WEIGHT = 1.0;
    private static final long ORDER_ATTRIBUTION_MS = 24L * 60 * 60 * 1000;

    private static final byte SEND = 0;
    private static final byte ENGAGEMENT = 1;
    private static final byte INBOUND = 2;
    private static final byte CLICK = 3;
    private static final byte ORDER = 4;

    private AffinityStreams() {}

    /** One fact: event time, arrival (the version when applied), kind, channel slot, message hash. */
    record Fact(long at, long seq, byte kind, byte channel, long message) {
        boolean before(long otherAt, long otherSeq) {
            return at < otherAt || (at == otherAt && seq < otherSeq);
        }
    }

    /** A customer's state; {@code erased} is the marker an erasure leaves. */
    static final class State {
        boolean erased;
        long version;
        final List<Fact> facts = new ArrayList<>();
        /** Per channel slot: the latest marketing consent, or null; and its event time. */
        final Boolean[] consent = new Boolean[4];
        final long[] consentAt = new long[4];

        /** Inserts at its place in (event time, arrival) order, after equal ones. */
        void insert(Fact fact) {
            int index = 0;
            while (index < facts.size() && !fact.before(facts.get(index).at(), facts.get(index).seq())) {
                index++;
            }
            facts.add(index, fact);
        }

        /** An open or click: the first by event time of each message is its engagement. */
        void engage(int channel, long message, long at, long seq) {
            for (int i = 0; i < facts.size(); i++) {
                Fact kept = facts.get(i);
                if (kept.kind() == ENGAGEMENT && kept.channel() == channel && kept.message() == message) {
                    if (new Fact(at, seq, ENGAGEMENT, (byte) channel, message).before(kept.at(), kept.seq())) {
                        facts.remove(i);
                        insert(new Fact(at, seq, ENGAGEMENT, (byte) channel, message));
                    }
                    return;
                }
            }
            insert(new Fact(at, seq, ENGAGEMENT, (byte) channel, message));
        }
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        Twins.Args twin = Twins.Args.parse("AffinityStreams", args);
        Schema eventSchema = twin.schema("touchpoint_event.avsc");
        Schema affinitySchema = twin.schema("channel_affinity.avsc");
        StoreBuilder<KeyValueStore<String, State>> store = twin.store("affinity", stateSerde());
        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(store);
        builder.stream(twin.input(), Consumed.with(Serdes.String(), Twins.singleObject(eventSchema)))
            .process(() -> new Fold(affinitySchema), "affinity")
            .to(twin.output(), Produced.with(Serdes.String(), Twins.singleObject(affinitySchema)));
        Twins.run("affinity-streams", builder.build(), twin.config("affinity-streams"));
    }

    /** One task's processor: one input partition, so its clock is that partition's. */
    static final class Fold extends Twins.PartitionFold<State> {
        private final Schema affinitySchema;
        private final Schema scoreSchema;
        private final Schema channelSchema;

        Fold(Schema affinitySchema) {
            super("affinity");
            this.affinitySchema = affinitySchema;
            this.scoreSchema = affinitySchema.getField("channels").schema().getElementType();
            this.channelSchema = affinitySchema.getField("ranking").schema().getElementType();
        }

        @Override
        void fold(Record<String, GenericRecord> record) {
            String customer = record.key();
            GenericRecord event = record.value();
            String type = event.get("type").toString();
            if (type.equals("erasure_requested") || type.equals("customers_merged")) {
                State marker = new State();
                marker.erased = true;
                store.put(customer, marker);
                context.forward(record.withValue(null));
                return;
            }
            GenericRecord properties = (GenericRecord) event.get("properties");
            boolean reads = switch (type) {
                case "message_sent", "message_received", "message_opened", "message_clicked", "order_placed" -> true;
                case "consent_changed" -> properties.get("purpose").toString().equals("marketing");
                default -> false;
            };
            State state = store.get(customer);
            if (!reads && state != null) {
                // Of no concern; an erased customer's too.
                return;
            }
            if (state == null || state.erased) {
                state = new State();
            }
            apply(state, event, type, properties, reads);
            store.put(customer, state);
            context.forward(record.withValue(affinity(state, customer, clock)));
        }

        private static void apply(State state, GenericRecord event, String type, GenericRecord properties, boolean reads) {
            long at = (Long) event.get("occurred_at");
            state.version += reads ? 1 : 0;
            long seq = state.version;
            int channel = slot(event.get("channel").toString());
            switch (type) {
                case "message_sent" -> {
                    if (channel >= 0) {
                        state.insert(new Fact(at, seq, SEND, (byte) channel, 0));
                    }
                }
                case "message_received" -> {
                    if (channel >= 0) {
                        state.insert(new Fact(at, seq, INBOUND, (byte) channel, 0));
                    }
                }
                case "message_opened", "message_clicked" -> {
                    if (channel >= 0) {
                        state.engage(channel, messageHash(channel, properties.get("message_id").toString()), at, seq);
                        if (type.equals("message_clicked")) {
                            state.insert(new Fact(at, seq, CLICK, (byte) channel, 0));
                        }
                    }
                }
                case "order_placed" -> state.insert(new Fact(at, seq, ORDER, (byte) 0, 0));
                case "consent_changed" -> {
                    if (reads && channel >= 0 && (state.consent[channel] == null || at >= state.consentAt[channel])) {
                        state.consent[channel] = (Boolean) properties.get("granted");
                        state.consentAt[channel] = at;
                    }
                }
                default -> { }
            }
        }

        /** The record as of {@code asOf}: every fact weighted {@code 2^-(max(0, asOf - t) / half-life)}. */
        private GenericRecord affinity(State state, String customer, long asOf) {
            double[] sent = new double[4];
            double[] engaged = new double[4];
            long[] unanswered = new long[4];
            for (Fact fact : state.facts) {
                double weight = Math.pow(2.0, -(double) Math.max(0, asOf - fact.at()) / (HALF_LIFE_DAYS * DAY_MS));
                int channel = fact.channel();
                switch (fact.kind()) {
                    case ORDER -> {
                        int credited = credited(state.facts, fact.at());
                        if (credited >= 0) {
                            engaged[credited] += weight * ORDER_WEIGHT;
                        }
                    }
                    case SEND -> {
                        sent[channel] += weight;
                        unanswered[channel]++;
                    }
                    case ENGAGEMENT -> {
                        engaged[channel] += weight;
                        unanswered[channel]--;
                    }
                    case INBOUND -> {
                        // SPEC 4.3: with no send before it unanswered, an inbound message counts as a send too.
                        engaged[channel] += weight;
                        if (unanswered[channel] > 0) {
                            unanswered[channel]--;
                        } else {
                            sent[channel] += weight;
                        }
                    }
                    default -> { }
                }
            }
            List<GenericRecord> channels = new ArrayList<>();
            for (int channel = 0; channel < 4; channel++) {
                double engagedAtMost = Math.min(engaged[channel], sent[channel]);
                double alpha = PRIOR_ALPHA + engagedAtMost;
                double beta = PRIOR_BETA + sent[channel] - engagedAtMost;
                double total = alpha + beta;
                GenericRecord score = new GenericData.Record(scoreSchema);
                score.put("channel", new GenericData.EnumSymbol(channelSchema, MESSAGING[channel]));
                score.put("score", alpha / total);
                score.put("std_dev", Math.sqrt(alpha * beta / (total * total * (total + 1.0))));
                score.put("sent", sent[channel]);
                score.put("engaged", engagedAtMost);
                score.put("insufficient_data", sent[channel] < MIN_SENDS * 0.99);
                score.put("marketing_consent", state.consent[channel] == null || state.consent[channel]);
                channels.add(score);
            }
            List<GenericRecord> ranked = new ArrayList<>(channels.stream()
                .filter(score -> (Boolean) score.get("marketing_consent")).toList());
            ranked.sort((a, b) -> {
                int data = Boolean.compare((Boolean) a.get("insufficient_data"), (Boolean) b.get("insufficient_data"));
                return data != 0 ? data : Double.compare((Double) b.get("score"), (Double) a.get("score"));
            });
            GenericRecord affinity = new GenericData.Record(affinitySchema);
            affinity.put("customer_id", customer);
            affinity.put("ranking", ranked.stream().map(score -> score.get("channel")).toList());
            affinity.put("channels", channels);
            affinity.put("half_life_days", HALF_LIFE_DAYS);
            affinity.put("as_of", asOf);
            affinity.put("version", state.version);
            return affinity;
        }
    }

    /** The channel of the latest click 0 to 24 h before an order at {@code at} (ties: the later arrival), or -1. */
    private static int credited(List<Fact> facts, long at) {
        Fact latest = null;
        for (Fact fact : facts) {
            if (fact.kind() == CLICK && fact.at() <= at) {
                latest = fact;
            }
        }
        return latest != null && at - latest.at() <= ORDER_ATTRIBUTION_MS ? latest.channel() : -1;
    }

    private static int slot(String channel) {
        for (int i = 0; i < MESSAGING.length; i++) {
            if (MESSAGING[i].equals(channel)) {
                return i;
            }
        }
        return -1;
    }

    /** FNV-1a of the channel slot and the message id, as the service keys a message. */
    private static long messageHash(int channel, String messageId) {
        long hash = 0xcbf29ce484222325L;
        hash = (hash ^ channel) * 0x100000001b3L;
        for (byte b : messageId.getBytes(StandardCharsets.UTF_8)) {
            hash = (hash ^ (b & 0xff)) * 0x100000001b3L;
        }
        return hash;
    }

    /** The state as plain binary: a Java team's own format for a store no one else reads. */
    private static Serde<State> stateSerde() {
        return Twins.dataSerde((state, out) -> {
            out.writeBoolean(state.erased);
            out.writeLong(state.version);
            for (int channel = 0; channel < 4; channel++) {
                out.writeByte(state.consent[channel] == null ? 0 : state.consent[channel] ? 1 : 2);
                out.writeLong(state.consentAt[channel]);
            }
            out.writeInt(state.facts.size());
            for (Fact fact : state.facts) {
                out.writeLong(fact.at());
                out.writeLong(fact.seq());
                out.writeByte(fact.kind());
                out.writeByte(fact.channel());
                out.writeLong(fact.message());
            }
        }, in -> {
            State state = new State();
            state.erased = in.readBoolean();
            state.version = in.readLong();
            for (int channel = 0; channel < 4; channel++) {
                byte consent = in.readByte();
                state.consent[channel] = consent == 0 ? null : consent == 1;
                state.consentAt[channel] = in.readLong();
            }
            int facts = in.readInt();
            for (int i = 0; i < facts; i++) {
                state.facts.add(new Fact(in.readLong(), in.readLong(), in.readByte(), in.readByte(), in.readLong()));
            }
            return state;
        });
    }
}
