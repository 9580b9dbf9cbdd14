package io.omnistream.bench;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.util.Utf8;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * profile-updater's fold in Kafka Streams, as a Java team would write it with the Apache Avro
 * library: each event (Avro single-object encoding, the project's {@code touchpoint_event.avsc})
 * folded into the customer's {@code CustomerProfile} (held in the store as Avro binary), and the
 * profile written after every event in single-object encoding, with exactly_once_v2 and a 100 ms
 * commit interval (the runtime's). The bench decodes both applications' last profiles with the
 * project's own codec and requires them equal, so the twin is checked to do the same fold.
 *
 * <p>It folds events in arrival order, which is event-time order for the bench's input (the
 * simulator's clock only moves forward); it does less than profile-updater, so the ratio `make
 * bench` reports is in Kafka Streams' favour: no validation beyond Avro's, no dedupe by event id,
 * no SPEC 4 limits, no trait histories or ticket logs for late events, no merges (an erasure or a
 * merge deletes the profile).
 *
 * <p>Usage: ProfileStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS CACHE_BYTES
 * SCHEMAS_DIR ({@link Twins.Args}). Runs until SIGTERM.
 */
public final class ProfileStreams {
    private static final int CONSENT_HISTORY_LIMIT = 200;
    private static final int IDENTIFIERS_KEPT = 20;
    private static final List<String> IDENTIFIER_TRAITS = List.of("email", "phone");

    private final Schema profileSchema;
    private final Schema channelActivity;
    private final Schema traitEntry;
    private final Schema openTicket;
    private final Schema resolvedTicket;
    private final Schema consentEntry;
    private final Schema consentChange;
    private final Schema identifier;

    private ProfileStreams(Schema profileSchema) {
        this.profileSchema = profileSchema;
        this.channelActivity = profileSchema.getField("channels").schema().getElementType();
        this.traitEntry = profileSchema.getField("traits").schema().getValueType();
        this.openTicket = profileSchema.getField("open_tickets").schema().getElementType();
        this.resolvedTicket = profileSchema.getField("last_resolved_ticket").schema().getTypes().get(1);
        this.consentEntry = profileSchema.getField("consents").schema().getElementType();
        this.consentChange = profileSchema.getField("consent_history").schema().getElementType();
        this.identifier = profileSchema.getField("identifiers").schema().getElementType();
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        Twins.Args twin = Twins.Args.parse("ProfileStreams", args);
        Schema eventSchema = twin.schema("touchpoint_event.avsc");
        Schema profileSchema = twin.schema("customer_profile.avsc");
        ProfileStreams fold = new ProfileStreams(profileSchema);
        Materialized<String, GenericRecord, KeyValueStore<Bytes, byte[]>> profiles = twin.inMemory()
            ? Materialized.as(Stores.inMemoryKeyValueStore("profiles"))
            : Materialized.as(Stores.persistentKeyValueStore("profiles"));
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(twin.input(), Consumed.with(Serdes.String(), Twins.singleObject(eventSchema)))
            .groupByKey()
            // No profile yet: the fold starts one from the event.
            .aggregate(() -> null, (customer, event, profile) -> fold.apply(profile, event),
                profiles.withKeySerde(Serdes.String()).withValueSerde(binary(profileSchema)))
            .toStream()
            .to(twin.output(), Produced.with(Serdes.String(), Twins.singleObject(profileSchema)));
        Twins.run("profile-streams", builder.build(), twin.config("profile-streams"));
    }

    /** The profile after {@code event}; null (a tombstone) when the customer is erased or merged away. */
    GenericRecord apply(GenericRecord profile, GenericRecord event) {
        String type = event.get("type").toString();
        if (type.equals("erasure_requested") || type.equals("customers_merged")) {
            return null;
        }
        long at = (Long) event.get("occurred_at");
        Object channel = event.get("channel");
        GenericRecord properties = (GenericRecord) event.get("properties");
        if (profile == null) {
            profile = newProfile(event.get("customer_id"), at);
        }
        if (type.equals("traits_updated")) {
            applyTraits(profile, properties, at);
        }
        profile.put("first_seen_at", Math.min((Long) profile.get("first_seen_at"), at));
        profile.put("last_seen_at", Math.max((Long) profile.get("last_seen_at"), at));
        recordActivity(profile, channel, type, at);
        switch (type) {
            case "order_placed" -> {
                profile.put("orders_count", (Long) profile.get("orders_count") + 1);
                add(map(profile, "lifetime_value_minor"), properties.get("currency"), (Long) properties.get("value_minor"));
                Long last = (Long) profile.get("last_order_at");
                if (last == null || at >= last) {
                    profile.put("last_order_at", at);
                    profile.put("last_order_channel", channel);
                }
            }
            case "order_refunded" -> {
                long value = (Long) properties.get("value_minor");
                profile.put("refunds_count", (Long) profile.get("refunds_count") + 1);
                add(map(profile, "refunded_value_minor"), properties.get("currency"), value);
                add(map(profile, "lifetime_value_minor"), properties.get("currency"), -value);
            }
            case "consent_changed" -> noteConsent(profile, event, channel, properties, at);
            case "support_ticket_opened" -> openTicket(profile, properties, channel, at);
            case "support_ticket_resolved" -> resolveTicket(profile, properties, channel, at);
            default -> { }
        }
        profile.put("version", (Long) profile.get("version") + 1);
        return profile;
    }

    private GenericRecord newProfile(Object customerId, long at) {
        GenericRecord profile = new GenericData.Record(profileSchema);
        profile.put("customer_id", customerId);
        profile.put("first_seen_at", at);
        profile.put("last_seen_at", at);
        profile.put("channels", new ArrayList<>());
        profile.put("traits", new HashMap<>());
        profile.put("orders_count", 0L);
        profile.put("lifetime_value_minor", new HashMap<>());
        profile.put("refunds_count", 0L);
        profile.put("refunded_value_minor", new HashMap<>());
        profile.put("open_tickets", new ArrayList<>());
        profile.put("consents", new ArrayList<>());
        profile.put("identifiers", new ArrayList<>());
        profile.put("version", 0L);
        profile.put("consent_history", new ArrayList<>());
        return profile;
    }

    /** One event's trait operations, per trait in the order set, set_once, unset (SPEC 4's ties). */
    private void applyTraits(GenericRecord profile, GenericRecord properties, long at) {
        Map<Object, Object> set = map(properties, "set");
        Map<Object, Object> setOnce = map(properties, "set_once");
        List<Object> unset = list(properties, "unset");
        TreeSet<String> names = new TreeSet<>();
        set.keySet().forEach(name -> names.add(name.toString()));
        setOnce.keySet().forEach(name -> names.add(name.toString()));
        unset.forEach(name -> names.add(name.toString()));
        Map<Object, Object> traits = map(profile, "traits");
        for (String name : names) {
            Utf8 key = new Utf8(name);
            GenericRecord entry = (GenericRecord) traits.get(key);
            if (set.containsKey(key) && (entry == null || at >= (Long) entry.get("updated_at"))) {
                // Setting null is an unset.
                entry = trait(set.get(key), at, false);
            }
            Object once = setOnce.get(key);
            if (once != null && (entry == null || entry.get("value") == null)) {
                entry = trait(once, at, true);
            }
            if (unset.stream().anyMatch(other -> name.contentEquals((CharSequence) other)) && (entry == null || at >= (Long) entry.get("updated_at"))) {
                entry = trait(null, at, false);
            }
            if (entry != null) {
                traits.put(key, entry);
            }
        }
        // Seen is seen, whether or not the value is the current one; by name, as profile-updater.
        for (Map<Object, Object> operations : List.of(set, setOnce)) {
            TreeMap<String, Object> byName = new TreeMap<>();
            operations.forEach((name, value) -> byName.put(name.toString(), value));
            byName.forEach((name, value) -> noteIdentifier(profile, name, value, at));
        }
    }

    private GenericRecord trait(Object value, long at, boolean setOnce) {
        GenericRecord entry = new GenericData.Record(traitEntry);
        entry.put("value", value);
        entry.put("updated_at", at);
        entry.put("set_once", setOnce);
        return entry;
    }

    private void noteIdentifier(GenericRecord profile, String kind, Object value, long at) {
        if (!(value instanceof CharSequence text) || !IDENTIFIER_TRAITS.contains(kind) || text.isEmpty()) {
            return;
        }
        List<Object> identifiers = list(profile, "identifiers");
        for (Object existing : identifiers) {
            GenericRecord known = (GenericRecord) existing;
            if (kind.contentEquals((CharSequence) known.get("kind")) && text.toString().contentEquals((CharSequence) known.get("value"))) {
                known.put("first_seen_at", Math.min((Long) known.get("first_seen_at"), at));
                return;
            }
        }
        GenericRecord added = new GenericData.Record(identifier);
        added.put("kind", kind);
        added.put("value", text);
        added.put("first_seen_at", at);
        identifiers.add(added);
        if (identifiers.size() > IDENTIFIERS_KEPT) {
            // The most recently first seen goes (the last of equals).
            int newest = 0;
            for (int i = 1; i < identifiers.size(); i++) {
                if (firstSeen(identifiers.get(i)) >= firstSeen(identifiers.get(newest))) {
                    newest = i;
                }
            }
            identifiers.remove(newest);
        }
    }

    private static long firstSeen(Object identifier) {
        return (Long) ((GenericRecord) identifier).get("first_seen_at");
    }

    /** Activity per channel, the channels in the order of the Channel enum. */
    private void recordActivity(GenericRecord profile, Object channel, String type, long at) {
        List<Object> channels = list(profile, "channels");
        int ordinal = ordinal(channel);
        int index = 0;
        while (index < channels.size() && ordinal(((GenericRecord) channels.get(index)).get("channel")) < ordinal) {
            index++;
        }
        GenericRecord activity;
        if (index < channels.size() && ordinal(((GenericRecord) channels.get(index)).get("channel")) == ordinal) {
            activity = (GenericRecord) channels.get(index);
        } else {
            activity = new GenericData.Record(channelActivity);
            activity.put("channel", channel);
            activity.put("first_seen_at", at);
            activity.put("last_seen_at", at);
            activity.put("event_counts", new HashMap<>());
            channels.add(index, activity);
        }
        activity.put("first_seen_at", Math.min((Long) activity.get("first_seen_at"), at));
        activity.put("last_seen_at", Math.max((Long) activity.get("last_seen_at"), at));
        add(map(activity, "event_counts"), type, 1);
    }

    private void noteConsent(GenericRecord profile, GenericRecord event, Object channel, GenericRecord properties, long at) {
        Object purpose = properties.get("purpose");
        boolean granted = (Boolean) properties.get("granted");
        String eventId = event.get("event_id").toString();
        List<Object> history = list(profile, "consent_history");
        // Oldest first by event time, then event id; after the equal ones.
        int position = 0;
        while (position < history.size() && !isAfter((GenericRecord) history.get(position), at, eventId)) {
            position++;
        }
        GenericRecord change = new GenericData.Record(consentChange);
        change.put("channel", channel);
        change.put("purpose", purpose);
        change.put("granted", granted);
        change.put("event_id", eventId);
        change.put("at", at);
        history.add(position, change);
        while (history.size() > CONSENT_HISTORY_LIMIT) {
            history.remove(0);
        }
        List<Object> consents = list(profile, "consents");
        GenericRecord entry = new GenericData.Record(consentEntry);
        entry.put("channel", channel);
        entry.put("purpose", purpose);
        entry.put("granted", granted);
        entry.put("at", at);
        int index = 0;
        while (index < consents.size() && consentOrder((GenericRecord) consents.get(index)) < ordinal(channel) * 2 + ordinal(purpose)) {
            index++;
        }
        if (index < consents.size() && consentOrder((GenericRecord) consents.get(index)) == ordinal(channel) * 2 + ordinal(purpose)) {
            if (at >= (Long) ((GenericRecord) consents.get(index)).get("at")) {
                consents.set(index, entry);
            }
        } else {
            consents.add(index, entry);
        }
    }

    private static boolean isAfter(GenericRecord change, long at, String eventId) {
        long changeAt = (Long) change.get("at");
        return changeAt > at || (changeAt == at && change.get("event_id").toString().compareTo(eventId) > 0);
    }

    private static int consentOrder(GenericRecord consent) {
        return ordinal(consent.get("channel")) * 2 + ordinal(consent.get("purpose"));
    }

    private void openTicket(GenericRecord profile, GenericRecord properties, Object channel, long at) {
        List<Object> open = list(profile, "open_tickets");
        String ticketId = properties.get("ticket_id").toString();
        if (findTicket(open, ticketId) >= 0) {
            return;
        }
        GenericRecord ticket = new GenericData.Record(openTicket);
        ticket.put("ticket_id", ticketId);
        ticket.put("opened_at", at);
        ticket.put("channel", channel);
        ticket.put("topic", properties.get("topic"));
        open.add(ticket);
    }

    private void resolveTicket(GenericRecord profile, GenericRecord properties, Object channel, long at) {
        List<Object> open = list(profile, "open_tickets");
        String ticketId = properties.get("ticket_id").toString();
        int index = findTicket(open, ticketId);
        Long openedAt = index >= 0 ? (Long) ((GenericRecord) open.remove(index)).get("opened_at") : null;
        GenericRecord last = (GenericRecord) profile.get("last_resolved_ticket");
        if (last == null || at >= (Long) last.get("resolved_at")) {
            GenericRecord resolved = new GenericData.Record(resolvedTicket);
            resolved.put("ticket_id", ticketId);
            resolved.put("opened_at", openedAt);
            resolved.put("resolved_at", at);
            resolved.put("channel", channel);
            profile.put("last_resolved_ticket", resolved);
        }
    }

    private static int findTicket(List<Object> tickets, String ticketId) {
        for (int i = 0; i < tickets.size(); i++) {
            if (ticketId.contentEquals((CharSequence) ((GenericRecord) tickets.get(i)).get("ticket_id"))) {
                return i;
            }
        }
        return -1;
    }

    private static int ordinal(Object symbol) {
        GenericData.EnumSymbol enumSymbol = (GenericData.EnumSymbol) symbol;
        return enumSymbol.getSchema().getEnumOrdinal(enumSymbol.toString());
    }

    /** Adds {@code amount} to the entry of {@code key} (the map's keys as Avro decodes them, Utf8). */
    private static void add(Map<Object, Object> map, Object key, long amount) {
        map.merge(new Utf8(key.toString()), amount, (was, more) -> (Long) was + (Long) more);
    }

    @SuppressWarnings("unchecked")
    private static Map<Object, Object> map(GenericRecord record, String field) {
        return (Map<Object, Object>) record.get(field);
    }

    @SuppressWarnings("unchecked")
    private static List<Object> list(GenericRecord record, String field) {
        Object value = record.get(field);
        if (value instanceof List<?>) {
            return (List<Object>) value;
        }
        List<Object> copy = new ArrayList<>((Collection<Object>) value);
        record.put(field, copy);
        return copy;
    }

    /** Plain Avro binary, for the store and its changelog (one schema, no header needed). */
    private static Serde<GenericRecord> binary(Schema schema) {
        GenericDatumWriter<GenericRecord> writer = new GenericDatumWriter<>(schema);
        GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(schema);
        Serializer<GenericRecord> serializer = (topic, record) -> {
            if (record == null) {
                return null;
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream(512);
            BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
            try {
                writer.write(record, encoder);
                encoder.flush();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        };
        Deserializer<GenericRecord> deserializer = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(bytes, null);
            try {
                return reader.read(null, decoder);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        };
        return Serdes.serdeFrom(serializer, deserializer);
    }
}
