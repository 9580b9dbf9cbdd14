package io.omnistream.bench;

import java.io.IOException;
import java.time.DateTimeException;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.LocalTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.time.zone.ZoneOffsetTransition;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

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
 * suppression's fold in Kafka Streams (SPEC 4.2, docs/suppression.md), with the Apache Avro
 * library and the service's default rules (caps: email 1 per 16 h, sms and whatsapp 1 per 24 h,
 * push 2 per 24 h; quiet hours 21:00-08:00 for sms, whatsapp and push in the customer's
 * {@code timezone}; open tickets block marketing for at most 14 days; no consent required, no
 * order cool-down, no holdout): for each messaging channel, may marketing and transactional
 * messages go, why not and until when, and when the answer next changes, evaluated at the
 * partition clock (the input record's append time). Like the service it writes a record for the
 * events it reads and for a new customer's first event, and keeps an erased customer's marker. The
 * bench decodes both applications' last records with the project's codec and requires them equal.
 *
 * <p>It does less than suppression, so the ratio is in Kafka Streams' favour: no validation beyond
 * Avro's, no dedupe by event id, no merges, no SPEC 4 limit on open tickets, and no timers: it
 * writes nothing when a reason lapses or quiet hours begin without an event. The bench leaves the
 * service's records written by timers (no {@code cause.event_id} header) out of the comparison.
 *
 * <p>Usage: SuppressionStreams BOOTSTRAP INPUT OUTPUT APPLICATION_ID memory|rocksdb THREADS
 * CACHE_BYTES SCHEMAS_DIR ({@link Twins.Args}). Runs until SIGTERM.
 */
public final class SuppressionStreams {
    private static final String[] MESSAGING = {"email", "sms", "whatsapp", "push"};
    /** Per channel: the cap's most messages and window. */
    private static final int[] CAP_MAX = {1, 1, 1, 2};
    private static final long[] CAP_WINDOW_MS = {16 * 3_600_000L, 24 * 3_600_000L, 24 * 3_600_000L, 24 * 3_600_000L};
    private static final String[] CAP_DETAIL = {"at most 1 per 16h", "at most 1 per 24h", "at most 1 per 24h", "at most 2 per 24h"};
    private static final boolean[] QUIET = {false, true, true, true};
    private static final LocalTime QUIET_START = LocalTime.of(21, 0);
    private static final LocalTime QUIET_END = LocalTime.of(8, 0);
    private static final String QUIET_LABEL = "21:00-08:00";
    private static final long TICKET_MAX_MS = 14 * 86_400_000L;

    private SuppressionStreams() {}

    /** What the rules need of one customer; {@code erased} is the marker an erasure leaves. */
    static final class State {
        boolean erased;
        long version;
        long evaluatedAt;
        /** Open tickets in the order first opened: id and when. */
        final List<String> ticketIds = new ArrayList<>();
        final List<Long> ticketOpenedAt = new ArrayList<>();
        /** Per channel slot: the latest marketing consent (null: none) and its time. */
        final Boolean[] consent = new Boolean[4];
        final long[] consentAt = new long[4];
        /** Per channel slot: the latest grant of consent of any purpose (null: none). */
        final Long[] lastGrant = new Long[4];
        /** Hard bounces and spam reports, in the order first noted: slot, spam, time. */
        final List<long[]> hardBlocks = new ArrayList<>();
        /** Marketing sends inside a cap window: slot, time. */
        final List<long[]> sends = new ArrayList<>();
        /** The timezone trait (null when absent) and the time of the operation that decided it. */
        String timezone;
        Long timezoneAt;
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        Twins.Args twin = Twins.Args.parse("SuppressionStreams", args);
        Schema eventSchema = twin.schema("touchpoint_event.avsc");
        Schema suppressionSchema = twin.schema("suppression_state.avsc");
        StoreBuilder<KeyValueStore<String, State>> store = twin.store("suppression", stateSerde());
        StreamsBuilder builder = new StreamsBuilder();
        builder.addStateStore(store);
        builder.stream(twin.input(), Consumed.with(Serdes.String(), Twins.singleObject(eventSchema)))
            .process(() -> new Fold(suppressionSchema), "suppression")
            .to(twin.output(), Produced.with(Serdes.String(), Twins.singleObject(suppressionSchema)));
        Twins.run("suppression-streams", builder.build(), twin.config("suppression-streams"));
    }

    /** One task's processor: one input partition, so its clock is that partition's. */
    static final class Fold extends Twins.PartitionFold<State> {
        private final Schema stateSchema;
        private final Schema channelSchema;
        private final Schema reasonSchema;
        private final Schema channelEnum;
        private final Schema statusEnum;

        Fold(Schema stateSchema) {
            super("suppression");
            this.stateSchema = stateSchema;
            this.channelSchema = stateSchema.getField("marketing").schema().getElementType();
            this.reasonSchema = channelSchema.getField("reasons").schema().getElementType();
            this.channelEnum = channelSchema.getField("channel").schema();
            this.statusEnum = channelSchema.getField("status").schema();
        }

        @Override
        void fold(Record<String, GenericRecord> record) {
            String customer = record.key();
            GenericRecord event = record.value();
            String type = event.get("type").toString();
            if (type.equals("erasure_requested")) {
                State marker = new State();
                marker.erased = true;
                store.put(customer, marker);
                context.forward(record.withValue(null));
                return;
            }
            GenericRecord properties = (GenericRecord) event.get("properties");
            boolean reads = reads(type, properties);
            State state = store.get(customer);
            if (!reads && state != null) {
                // Of no concern; an erased customer's too.
                return;
            }
            if (state == null || state.erased) {
                state = new State();
            }
            remember(state, type, properties, slot(event.get("channel").toString()), (Long) event.get("occurred_at"));
            state.version += reads ? 1 : 0;
            state.evaluatedAt = Math.max(state.evaluatedAt, clock);
            GenericRecord evaluated = evaluate(state, customer, state.evaluatedAt);
            store.put(customer, state);
            context.forward(record.withValue(evaluated));
        }

        private GenericRecord evaluate(State state, String customer, long at) {
            // Forget what no longer changes an answer: closed tickets, sends out of every window.
            for (int i = state.ticketIds.size() - 1; i >= 0; i--) {
                if (state.ticketOpenedAt.get(i) + TICKET_MAX_MS <= at) {
                    state.ticketIds.remove(i);
                    state.ticketOpenedAt.remove(i);
                }
            }
            state.sends.removeIf(send -> send[1] + CAP_WINDOW_MS[(int) send[0]] <= at);
            ZoneId zone = zone(state.timezone);
            List<Long> changes = new ArrayList<>();
            long[] quiet = quietHours(zone, at);
            long quietUntil = quiet[0];
            changes.add(quiet[1]);
            if (quiet[2] != Long.MIN_VALUE) {
                changes.add(quiet[2]);
            }
            List<GenericRecord> marketing = new ArrayList<>();
            List<GenericRecord> transactional = new ArrayList<>();
            for (int channel = 0; channel < MESSAGING.length; channel++) {
                List<GenericRecord> hard = new ArrayList<>();
                for (long[] block : state.hardBlocks) {
                    if (block[0] == channel) {
                        hard.add(reason(block[1] == 1 ? "spam_report" : "hard_bounce", null, null));
                    }
                }
                List<GenericRecord> reasons = new ArrayList<>();
                for (int i = 0; i < state.ticketIds.size(); i++) {
                    reasons.add(reason("support_ticket_open", state.ticketIds.get(i), state.ticketOpenedAt.get(i) + TICKET_MAX_MS));
                }
                if (Boolean.FALSE.equals(state.consent[channel])) {
                    reasons.add(reason("consent_revoked", null, null));
                }
                reasons.addAll(hard);
                List<Long> inside = new ArrayList<>();
                for (long[] send : state.sends) {
                    if (send[0] == channel && send[1] + CAP_WINDOW_MS[channel] > at && send[1] <= at) {
                        inside.add(send[1]);
                    }
                    if (send[0] == channel && send[1] > at) {
                        // Dated ahead: it enters its cap window at its own time.
                        changes.add(send[1]);
                    }
                }
                if (inside.size() >= CAP_MAX[channel]) {
                    inside.sort(null);
                    long until = inside.get(inside.size() - CAP_MAX[channel]) + CAP_WINDOW_MS[channel];
                    reasons.add(reason("frequency_cap", CAP_DETAIL[channel], until));
                }
                if (QUIET[channel] && quietUntil != Long.MIN_VALUE) {
                    reasons.add(reason("quiet_hours", QUIET_LABEL + " " + zoneName(zone), quietUntil));
                }
                for (GenericRecord reason : reasons) {
                    if (reason.get("until") != null) {
                        changes.add((Long) reason.get("until"));
                    }
                }
                marketing.add(channelSuppression(channel, reasons));
                transactional.add(channelSuppression(channel, hard));
            }
            Long next = changes.stream().filter(change -> change > at).min(Long::compare).orElse(null);
            GenericRecord suppression = new GenericData.Record(stateSchema);
            suppression.put("customer_id", customer);
            suppression.put("marketing", marketing);
            suppression.put("transactional", transactional);
            suppression.put("holdout", false);
            suppression.put("evaluated_at", at);
            suppression.put("next_change_at", next);
            suppression.put("version", state.version);
            return suppression;
        }

        private GenericRecord reason(String code, String detail, Long until) {
            GenericRecord reason = new GenericData.Record(reasonSchema);
            reason.put("code", code);
            reason.put("detail", detail);
            reason.put("until", until);
            return reason;
        }

        /** Blocked if a reason blocks, deferred if all wait for time, allowed without reasons. */
        private GenericRecord channelSuppression(int channel, List<GenericRecord> reasons) {
            boolean allDefer = reasons.stream().allMatch(reason -> switch (reason.get("code").toString()) {
                case "frequency_cap", "quiet_hours", "recent_order" -> true;
                default -> false;
            });
            String status = reasons.isEmpty() ? "allowed" : allDefer ? "deferred" : "blocked";
            Long until = null;
            if (!reasons.isEmpty() && reasons.stream().allMatch(reason -> reason.get("until") != null)) {
                until = reasons.stream().map(reason -> (Long) reason.get("until")).max(Long::compare).orElseThrow();
            }
            GenericRecord suppression = new GenericData.Record(channelSchema);
            suppression.put("channel", new GenericData.EnumSymbol(channelEnum, MESSAGING[channel]));
            suppression.put("status", new GenericData.EnumSymbol(statusEnum, status));
            suppression.put("until", until);
            suppression.put("reasons", reasons);
            return suppression;
        }
    }

    private static boolean reads(String type, GenericRecord properties) {
        return switch (type) {
            case "traits_updated" -> map(properties, "set").containsKey(TIMEZONE)
                || map(properties, "set_once").containsKey(TIMEZONE)
                || ((List<?>) properties.get("unset")).stream().anyMatch(name -> name.toString().equals("timezone"));
            case "support_ticket_opened", "support_ticket_resolved", "consent_changed", "spam_reported",
                 "order_placed" -> true;
            case "message_bounced" -> (Boolean) properties.get("hard");
            case "message_sent" -> properties.get("purpose").toString().equals("marketing");
            default -> false;
        };
    }

    private static final org.apache.avro.util.Utf8 TIMEZONE = new org.apache.avro.util.Utf8("timezone");

    @SuppressWarnings("unchecked")
    private static Map<Object, Object> map(GenericRecord record, String field) {
        return (Map<Object, Object>) record.get(field);
    }

    /** Keeps what the rules need of one event ({@code channel} a messaging slot or -1). */
    private static void remember(State state, String type, GenericRecord properties, int channel, long at) {
        switch (type) {
            case "support_ticket_opened" -> {
                String ticketId = properties.get("ticket_id").toString();
                if (!state.ticketIds.contains(ticketId)) {
                    state.ticketIds.add(ticketId);
                    state.ticketOpenedAt.add(at);
                }
            }
            case "support_ticket_resolved" -> {
                int index = state.ticketIds.indexOf(properties.get("ticket_id").toString());
                if (index >= 0) {
                    state.ticketIds.remove(index);
                    state.ticketOpenedAt.remove(index);
                }
            }
            case "consent_changed" -> {
                boolean granted = (Boolean) properties.get("granted");
                if (channel < 0) {
                    return;
                }
                if (properties.get("purpose").toString().equals("marketing")
                    && (state.consent[channel] == null || at >= state.consentAt[channel])) {
                    state.consent[channel] = granted;
                    state.consentAt[channel] = at;
                }
                if (granted) {
                    state.lastGrant[channel] = state.lastGrant[channel] == null ? at : Math.max(state.lastGrant[channel], at);
                    // Lifted for good; a grant at the same instant arriving after the block lifts it.
                    state.hardBlocks.removeIf(block -> block[0] == channel && block[2] <= at);
                }
            }
            case "message_bounced", "spam_reported" -> {
                boolean soft = type.equals("message_bounced") && !(Boolean) properties.get("hard");
                // Consent granted again after it: already lifted.
                if (soft || channel < 0 || (state.lastGrant[channel] != null && state.lastGrant[channel] > at)) {
                    return;
                }
                long spam = type.equals("spam_reported") ? 1 : 0;
                for (long[] block : state.hardBlocks) {
                    if (block[0] == channel && block[1] == spam) {
                        block[2] = Math.max(block[2], at);
                        return;
                    }
                }
                state.hardBlocks.add(new long[] {channel, spam, at});
            }
            case "message_sent" -> {
                if (channel >= 0 && properties.get("purpose").toString().equals("marketing")) {
                    state.sends.add(new long[] {channel, at});
                }
            }
            case "traits_updated" -> {
                // In event-time order (the bench's input): a set replaces, a set_once fills an absent trait.
                Object set = map(properties, "set").get(TIMEZONE);
                if (map(properties, "set").containsKey(TIMEZONE) && (state.timezoneAt == null || at >= state.timezoneAt)) {
                    state.timezone = set == null ? null : set.toString();
                    state.timezoneAt = at;
                }
                Object once = map(properties, "set_once").get(TIMEZONE);
                if (once != null && state.timezone == null) {
                    state.timezone = once.toString();
                    state.timezoneAt = at;
                }
                boolean unset = ((List<?>) properties.get("unset")).stream().anyMatch(name -> name.toString().equals("timezone"));
                if (unset && (state.timezoneAt == null || at >= state.timezoneAt)) {
                    state.timezone = null;
                    state.timezoneAt = at;
                }
            }
            default -> { }
        }
    }

    private static int slot(String channel) {
        for (int i = 0; i < MESSAGING.length; i++) {
            if (MESSAGING[i].equals(channel)) {
                return i;
            }
        }
        return -1;
    }

    /** The customer's zone: the timezone trait if it names an IANA zone, else UTC. */
    private static ZoneId zone(String name) {
        // IANA names only (java.time would also take offsets such as "+01:00", which chrono-tz does not).
        if (name == null || !name.contains("/") && !name.equals("UTC")) {
            return ZoneOffset.UTC;
        }
        try {
            return ZoneId.of(name);
        } catch (DateTimeException e) {
            return ZoneOffset.UTC;
        }
    }

    private static String zoneName(ZoneId zone) {
        return zone.equals(ZoneOffset.UTC) ? "UTC" : zone.getId();
    }

    private static boolean covers(LocalTime time) {
        return QUIET_START.isBefore(QUIET_END)
            ? !time.isBefore(QUIET_START) && time.isBefore(QUIET_END)
            : !time.isBefore(QUIET_START) || time.isBefore(QUIET_END);
    }

    /**
     * Quiet hours at {@code at} in {@code zone}: when they end if inside them (else MIN_VALUE),
     * when they next start, and a clock change before that start that can carry local time back
     * into them (else MIN_VALUE).
     */
    static long[] quietHours(ZoneId zone, long at) {
        LocalDateTime local = LocalDateTime.ofInstant(Instant.ofEpochMilli(at), zone);
        long until = Long.MIN_VALUE;
        if (covers(local.toLocalTime())) {
            until = instantOf(zone, nextLocal(local, QUIET_END), at);
        } else {
            // An end the clocks skipped moves later by the gap: the night lasts until then.
            for (int daysBack = 0; daysBack <= 1 && until == Long.MIN_VALUE; daysBack++) {
                LocalDateTime began = local.toLocalDate().minusDays(daysBack).atTime(QUIET_START);
                LocalDateTime end = (QUIET_START.isBefore(QUIET_END) ? began.toLocalDate() : began.toLocalDate().plusDays(1)).atTime(QUIET_END);
                boolean skipped = zone.getRules().getValidOffsets(end).isEmpty();
                List<ZoneOffset> startOffsets = zone.getRules().getValidOffsets(began);
                if (!skipped || startOffsets.isEmpty()) {
                    continue;
                }
                long start = began.toInstant(startOffsets.get(0)).toEpochMilli();
                long endAt = instantOf(zone, end, at);
                if (start <= at && at < endAt) {
                    until = endAt;
                }
            }
        }
        long nextStart = instantOf(zone, nextLocal(local, QUIET_START), at);
        long reentry = Long.MIN_VALUE;
        ZoneOffsetTransition transition = zone.getRules().nextTransition(Instant.ofEpochMilli(at));
        if (transition != null && transition.toEpochSecond() * 1000 <= nextStart) {
            long change = transition.toEpochSecond() * 1000;
            long outsideUntil = until == Long.MIN_VALUE ? at : until;
            if (change >= outsideUntil && covers(LocalDateTime.ofInstant(Instant.ofEpochMilli(change), zone).toLocalTime())) {
                reentry = change;
            }
        }
        return new long[] {until, nextStart, reentry};
    }

    private static LocalDateTime nextLocal(LocalDateTime local, LocalTime clock) {
        LocalDateTime today = local.toLocalDate().atTime(clock);
        return today.isAfter(local) ? today : today.plusDays(1);
    }

    /** The instant of a local time: an ambiguous one the earlier unless past, a skipped one later by the gap. */
    private static long instantOf(ZoneId zone, LocalDateTime local, long after) {
        List<ZoneOffset> offsets = zone.getRules().getValidOffsets(local);
        if (offsets.size() == 1) {
            return local.toInstant(offsets.get(0)).toEpochMilli();
        }
        if (offsets.size() == 2) {
            long first = local.toInstant(offsets.get(0)).toEpochMilli();
            long second = local.toInstant(offsets.get(1)).toEpochMilli();
            long earlier = Math.min(first, second);
            return earlier > after ? earlier : Math.max(first, second);
        }
        return local.atZone(zone).toInstant().toEpochMilli();
    }

    /** The state as plain binary: a Java team's own format for a store no one else reads. */
    private static Serde<State> stateSerde() {
        return Twins.dataSerde((state, out) -> {
            out.writeBoolean(state.erased);
            out.writeLong(state.version);
            out.writeLong(state.evaluatedAt);
            out.writeInt(state.ticketIds.size());
            for (int i = 0; i < state.ticketIds.size(); i++) {
                out.writeUTF(state.ticketIds.get(i));
                out.writeLong(state.ticketOpenedAt.get(i));
            }
            for (int channel = 0; channel < 4; channel++) {
                out.writeByte(state.consent[channel] == null ? 0 : state.consent[channel] ? 1 : 2);
                out.writeLong(state.consentAt[channel]);
                out.writeBoolean(state.lastGrant[channel] != null);
                out.writeLong(state.lastGrant[channel] == null ? 0 : state.lastGrant[channel]);
            }
            for (List<long[]> triples : List.of(state.hardBlocks, state.sends)) {
                out.writeInt(triples.size());
                for (long[] values : triples) {
                    out.writeByte(values.length);
                    for (long value : values) {
                        out.writeLong(value);
                    }
                }
            }
            out.writeBoolean(state.timezone != null);
            if (state.timezone != null) {
                out.writeUTF(state.timezone);
            }
            out.writeBoolean(state.timezoneAt != null);
            out.writeLong(state.timezoneAt == null ? 0 : state.timezoneAt);
        }, in -> {
            State state = new State();
            state.erased = in.readBoolean();
            state.version = in.readLong();
            state.evaluatedAt = in.readLong();
            for (int i = in.readInt(); i > 0; i--) {
                state.ticketIds.add(in.readUTF());
                state.ticketOpenedAt.add(in.readLong());
            }
            for (int channel = 0; channel < 4; channel++) {
                byte consent = in.readByte();
                state.consent[channel] = consent == 0 ? null : consent == 1;
                state.consentAt[channel] = in.readLong();
                boolean granted = in.readBoolean();
                long grantedAt = in.readLong();
                state.lastGrant[channel] = granted ? grantedAt : null;
            }
            for (List<long[]> triples : List.of(state.hardBlocks, state.sends)) {
                for (int i = in.readInt(); i > 0; i--) {
                    long[] values = new long[in.readByte()];
                    for (int j = 0; j < values.length; j++) {
                        values[j] = in.readLong();
                    }
                    triples.add(values);
                }
            }
            state.timezone = in.readBoolean() ? in.readUTF() : null;
            boolean dated = in.readBoolean();
            long timezoneAt = in.readLong();
            state.timezoneAt = dated ? timezoneAt : null;
            return state;
        });
    }
}
