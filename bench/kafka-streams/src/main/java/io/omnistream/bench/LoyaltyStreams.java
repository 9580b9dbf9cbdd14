package io.omnistream.bench;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;

/**
 * loyalty-points' fold in Kafka Streams (SPEC 4.4, docs/loyalty-points.md), with the Apache Avro
 * library and the service's default rules (1 point per major unit, a 14-day return window, expiry
 * 12 calendar months after the order, tiers bronze 0, silver 500, gold 2,000 over 12 months):
 * lots per order or positive adjustment, pending then active, spent the first to expire first;
 * refunds reverse their order's points (a debt when spent), a refund before its order waits for
 * it; redemptions beyond the active points are rejected. Each event it reads, and a new
 * customer's first, writes its ledger entries (OUTPUT's second topic) and the balance (the first),
 * as of the partition clock (the input record's append time); lots due by then are settled first.
 * The bench decodes both applications' records with the project's codec and requires every
 * customer's ledger and last balance to equal the service's.
 *
 * <p>It does less than loyalty-points, so the ratio is in Kafka Streams' favour: no validation
 * beyond Avro's, no dedupe by event id, no merges, no timers (a lot falls due only when the
 * customer's next event comes; none falls due within a bench's minutes).
 *
 * <p>Usage: LoyaltyStreams BOOTSTRAP INPUT BALANCES,LEDGER APPLICATION_ID memory|rocksdb THREADS
 * CACHE_BYTES SCHEMAS_DIR ({@link Twins.Args}). Runs until SIGTERM.
 */
public final class LoyaltyStreams {
    private static final long DAY_MS = 86_400_000L;
    private static final long RETURN_WINDOW_MS = 14 * DAY_MS;
    private static final int EXPIRY_MONTHS = 12;
    private static final int TIER_WINDOW_MONTHS = 12;
    private static final String[] TIERS = {"bronze", "silver", "gold"};
    private static final long[] TIER_MIN_POINTS = {0, 500, 2_000};
    private static final int REDEMPTIONS_KEPT = 64;
    private static final int EARLY_REFUNDS_KEPT = 32;
    private static final long EARLY_REFUND_MAX_AGE_MS = 28 * DAY_MS;

    private LoyaltyStreams() {}

    static final class Lot {
        String id;
        String orderId;
        /** The Channel symbol, or null. */
        String channel;
        long earnedAt;
        long points;
        long remaining;
        long reversed;
        long activatesAt;
        long expiresAt;
        boolean active;
        String causeEventId;
    }

    record EarlyRefund(String eventId, String orderId, long valueMinor, String currency, String channel,
                       long occurredAt, long arrivedAt) {}

    /** A customer's points; {@code erased} is the marker an erasure leaves. */
    static final class State {
        boolean erased;
        final List<Lot> lots = new ArrayList<>();
        long debt;
        long spent;
        long expired;
        long lifetimeEarned;
        /** Points earned (or reversed, negative) by time, within the tier window. */
        final List<long[]> earned = new ArrayList<>();
        final ArrayDeque<String> redemptions = new ArrayDeque<>();
        long evaluatedAt;
        long version;
        final List<EarlyRefund> earlyRefunds = new ArrayList<>();

        long active() {
            return lots.stream().filter(lot -> lot.active).mapToLong(lot -> lot.remaining).sum() - debt;
        }

        long pending() {
            return lots.stream().filter(lot -> !lot.active).mapToLong(lot -> lot.remaining).sum();
        }
    }

    /** A ledger entry before the customer and the balance are added. */
    record Movement(String entryId, String kind, long points, String reason, String reasonDetail,
                    String causeEventId, String orderId, String redemptionId, String channel, long occurredAt,
                    long activeAfter, long pendingAfter) {}

    public static void main(String[] args) throws IOException, InterruptedException {
        Twins.Args twin = Twins.Args.parse("LoyaltyStreams", args);
        String[] outputs = twin.output().split(",");
        if (outputs.length != 2) {
            throw new IllegalArgumentException("OUTPUT is BALANCES,LEDGER, not " + twin.output());
        }
        Schema eventSchema = twin.schema("touchpoint_event.avsc");
        Schema balanceSchema = twin.schema("loyalty_balance.avsc");
        Schema ledgerSchema = twin.schema("loyalty_ledger_entry.avsc");
        StoreBuilder<KeyValueStore<String, State>> store = twin.store("loyalty", stateSerde());
        Topology topology = new Topology();
        topology.addSource("events", Serdes.String().deserializer(),
            Twins.singleObject(eventSchema).deserializer(), twin.input());
        topology.addProcessor("loyalty", () -> new Fold(balanceSchema, ledgerSchema), "events");
        topology.addStateStore(store, "loyalty");
        topology.addSink("balances", outputs[0], Serdes.String().serializer(),
            Twins.singleObject(balanceSchema).serializer(), "loyalty");
        topology.addSink("ledger", outputs[1], Serdes.String().serializer(),
            Twins.singleObject(ledgerSchema).serializer(), "loyalty");
        Twins.run("loyalty-streams", topology, twin.config("loyalty-streams"));
    }

    /** One task's processor: one input partition, so its clock is that partition's. */
    static final class Fold extends Twins.PartitionFold<State> {
        private final Schema balanceSchema;
        private final Schema nextExpirySchema;
        private final Schema ledgerSchema;
        private final Schema balanceAfterSchema;
        private final Schema kindSchema;
        private final Schema channelSchema;

        Fold(Schema balanceSchema, Schema ledgerSchema) {
            super("loyalty");
            this.balanceSchema = balanceSchema;
            this.nextExpirySchema = balanceSchema.getField("next_expiry").schema().getTypes().get(1);
            this.ledgerSchema = ledgerSchema;
            this.balanceAfterSchema = ledgerSchema.getField("balance_after").schema();
            this.kindSchema = ledgerSchema.getField("kind").schema();
            this.channelSchema = ledgerSchema.getField("channel").schema().getTypes().get(1);
        }

        @Override
        void fold(Record<String, GenericRecord> record) {
            String customer = record.key();
            GenericRecord event = record.value();
            String type = event.get("type").toString();
            String eventId = event.get("event_id").toString();
            long occurredAt = (Long) event.get("occurred_at");
            if (type.equals("erasure_requested")) {
                State marker = new State();
                marker.erased = true;
                store.put(customer, marker);
                ledger(record, customer, new Movement(entryId(customer, eventId, "erase"), "erase", 0,
                    "erasure_requested", null, eventId, null, null, null, occurredAt, 0, 0));
                context.forward(record.withValue(null), "balances");
                return;
            }
            boolean reads = switch (type) {
                case "order_placed", "order_refunded", "loyalty_redeem_requested", "loyalty_points_adjusted" -> true;
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
            state.evaluatedAt = Math.max(state.evaluatedAt, clock);
            state.version += reads ? 1 : 0;
            long at = state.evaluatedAt;
            List<Movement> movements = settle(state, at);
            movements.addAll(apply(state, customer, eventId, event.get("channel").toString(), occurredAt, type,
                (GenericRecord) event.get("properties"), at));
            for (Movement movement : movements) {
                ledger(record, customer, movement);
            }
            store.put(customer, state);
            context.forward(record.withValue(balance(state, customer, at)), "balances");
        }

        private void ledger(Record<String, GenericRecord> record, String customer, Movement movement) {
            GenericRecord balanceAfter = new GenericData.Record(balanceAfterSchema);
            balanceAfter.put("active", movement.activeAfter());
            balanceAfter.put("pending", movement.pendingAfter());
            GenericRecord entry = new GenericData.Record(ledgerSchema);
            entry.put("entry_id", movement.entryId());
            entry.put("customer_id", customer);
            entry.put("kind", new GenericData.EnumSymbol(kindSchema, movement.kind()));
            entry.put("points", movement.points());
            entry.put("balance_after", balanceAfter);
            entry.put("reason", movement.reason());
            entry.put("cause_event_id", movement.causeEventId());
            entry.put("order_id", movement.orderId());
            entry.put("channel", movement.channel() == null ? null : new GenericData.EnumSymbol(channelSchema, movement.channel()));
            entry.put("negative_balance", movement.activeAfter() < 0);
            entry.put("occurred_at", movement.occurredAt());
            entry.put("redemption_id", movement.redemptionId());
            entry.put("reason_detail", movement.reasonDetail());
            context.forward(record.withValue(entry), "ledger");
        }

        private GenericRecord balance(State state, String customer, long at) {
            long windowStart = addMonths(at, -TIER_WINDOW_MONTHS);
            state.earned.removeIf(earned -> earned[0] <= windowStart);
            long earnedInWindow = state.earned.stream().mapToLong(earned -> earned[1]).sum();
            GenericRecord nextExpiry = null;
            Lot first = null;
            for (Lot lot : state.lots) {
                if (lot.active && lot.remaining > 0 && (first == null || lot.expiresAt < first.expiresAt)) {
                    first = lot;
                }
            }
            if (first != null) {
                long expiresAt = first.expiresAt;
                nextExpiry = new GenericData.Record(nextExpirySchema);
                nextExpiry.put("points", state.lots.stream()
                    .filter(lot -> lot.active && lot.expiresAt == expiresAt).mapToLong(lot -> lot.remaining).sum());
                nextExpiry.put("at", expiresAt);
            }
            String tier = "";
            for (int i = TIERS.length - 1; i >= 0; i--) {
                if (earnedInWindow >= TIER_MIN_POINTS[i]) {
                    tier = TIERS[i];
                    break;
                }
            }
            GenericRecord balance = new GenericData.Record(balanceSchema);
            balance.put("customer_id", customer);
            balance.put("active", state.active());
            balance.put("pending", state.pending());
            balance.put("spent", state.spent);
            balance.put("expired", state.expired);
            balance.put("lifetime_earned", state.lifetimeEarned);
            balance.put("tier", tier);
            balance.put("next_expiry", nextExpiry);
            balance.put("updated_at", at);
            balance.put("version", state.version);
            return balance;
        }
    }

    /** Activates and expires every lot due by {@code at}, in the order they fell due. */
    static List<Movement> settle(State state, long at) {
        List<long[]> due = new ArrayList<>();
        for (int index = 0; index < state.lots.size(); index++) {
            Lot lot = state.lots.get(index);
            if (!lot.active && lot.activatesAt <= at) {
                due.add(new long[] {lot.activatesAt, index, 1});
            }
            if (lot.expiresAt <= at && (lot.remaining > 0 || !lot.active)) {
                due.add(new long[] {lot.expiresAt, index, 0});
            }
        }
        due.sort(Comparator.<long[]>comparingLong(d -> d[0]).thenComparingLong(d -> d[1]).thenComparingLong(d -> d[2]));
        List<Movement> movements = new ArrayList<>();
        for (long[] fell : due) {
            Lot lot = state.lots.get((int) fell[1]);
            String kind;
            long points;
            if (fell[2] == 1) {
                lot.active = true;
                points = lot.remaining;
                if (points == 0) {
                    // Refunded in full while pending: nothing to announce.
                    continue;
                }
                repayDebt(state);
                kind = "activate";
            } else if (lot.remaining > 0) {
                points = -lot.remaining;
                state.expired += lot.remaining;
                lot.remaining = 0;
                kind = "expire";
            } else {
                continue;
            }
            movements.add(new Movement(lot.id + "/" + kind, kind, points, null, null, lot.causeEventId, lot.orderId,
                null, lot.channel, fell[0], state.active(), state.pending()));
        }
        state.lots.removeIf(lot -> lot.expiresAt <= at);
        return movements;
    }

    /** One event's movements (everything but an erasure), at the partition clock {@code at}. */
    static List<Movement> apply(State state, String customer, String eventId, String channel, long occurredAt,
                                String type, GenericRecord properties, long at) {
        List<Movement> movements = new ArrayList<>();
        switch (type) {
            case "order_placed" -> {
                String orderId = properties.get("order_id").toString();
                long points = pointsFor((Long) properties.get("value_minor"), properties.get("currency").toString());
                if (points == 0 || state.lots.stream().anyMatch(lot -> orderId.equals(lot.orderId))) {
                    return movements;
                }
                Lot lot = new Lot();
                lot.id = entryId(customer, eventId, "earn");
                lot.causeEventId = eventId;
                lot.orderId = orderId;
                lot.channel = channel;
                lot.earnedAt = occurredAt;
                lot.points = points;
                lot.remaining = points;
                lot.activatesAt = occurredAt + RETURN_WINDOW_MS;
                lot.expiresAt = addMonths(occurredAt, EXPIRY_MONTHS);
                state.lots.add(lot);
                state.lifetimeEarned += points;
                state.earned.add(new long[] {occurredAt, points});
                movements.add(movement(state, customer, eventId, "earn", points, null, null, orderId, null, channel, occurredAt));
                movements.addAll(applyEarlyRefunds(state, customer, orderId));
                movements.addAll(settle(state, at));
            }
            case "loyalty_redeem_requested" -> {
                String redemptionId = properties.get("redemption_id").toString();
                long points = (Long) properties.get("points");
                if (state.redemptions.contains(redemptionId)) {
                    return movements;
                }
                long active = state.active();
                if (points > active) {
                    // Not remembered: the same redemption may be tried again once points suffice.
                    movements.add(movement(state, customer, eventId, "reject", points, "insufficient_points",
                        points + " points requested, " + active + " active", null, redemptionId, channel, occurredAt));
                    return movements;
                }
                if (state.redemptions.size() >= REDEMPTIONS_KEPT) {
                    state.redemptions.removeFirst();
                }
                state.redemptions.addLast(redemptionId);
                spend(state, points);
                state.spent += points;
                movements.add(movement(state, customer, eventId, "redeem", -points, null, null, null, redemptionId, channel, occurredAt));
            }
            case "order_refunded" -> {
                String orderId = properties.get("order_id").toString();
                long valueMinor = (Long) properties.get("value_minor");
                String currency = properties.get("currency").toString();
                Lot lot = state.lots.stream().filter(l -> orderId.equals(l.orderId)).findFirst().orElse(null);
                if (lot == null) {
                    state.earlyRefunds.removeIf(refund -> refund.arrivedAt() + EARLY_REFUND_MAX_AGE_MS <= at);
                    if (state.earlyRefunds.size() >= EARLY_REFUNDS_KEPT) {
                        state.earlyRefunds.remove(0);
                    }
                    state.earlyRefunds.add(new EarlyRefund(eventId, orderId, valueMinor, currency, channel, occurredAt, at));
                    return movements;
                }
                long points = Math.min(pointsFor(valueMinor, currency), lot.points - lot.reversed);
                if (points <= 0) {
                    return movements;
                }
                lot.reversed += points;
                long fromLot = Math.min(lot.remaining, points);
                lot.remaining -= fromLot;
                // Already spent: the customer owes it, from the active points they still have first.
                state.debt += points - fromLot;
                repayDebt(state);
                state.lifetimeEarned -= points;
                state.earned.add(new long[] {lot.earnedAt, -points});
                movements.add(movement(state, customer, eventId, "reverse", -points, "refund", null, orderId, null, channel, occurredAt));
            }
            case "loyalty_points_adjusted" -> {
                long points = (Long) properties.get("points");
                if (points > 0) {
                    Lot lot = new Lot();
                    lot.id = entryId(customer, eventId, "adjust");
                    lot.causeEventId = eventId;
                    lot.channel = channel;
                    lot.earnedAt = occurredAt;
                    lot.points = points;
                    lot.remaining = points;
                    lot.activatesAt = occurredAt;
                    lot.expiresAt = addMonths(occurredAt, EXPIRY_MONTHS);
                    lot.active = true;
                    state.lots.add(lot);
                    repayDebt(state);
                } else {
                    spend(state, -points);
                }
                movements.add(movement(state, customer, eventId, "adjust", points, properties.get("reason").toString(),
                    null, null, null, channel, occurredAt));
            }
            default -> { }
        }
        return movements;
    }

    private static Movement movement(State state, String customer, String eventId, String kind, long points,
                                     String reason, String reasonDetail, String orderId, String redemptionId,
                                     String channel, long occurredAt) {
        return new Movement(entryId(customer, eventId, kind), kind, points, reason, reasonDetail, eventId, orderId,
            redemptionId, channel, occurredAt, state.active(), state.pending());
    }

    /** Refunds that came before their order, reversed now as their own events would have been. */
    private static List<Movement> applyEarlyRefunds(State state, String customer, String orderId) {
        long now = state.evaluatedAt;
        state.earlyRefunds.removeIf(refund -> refund.arrivedAt() + EARLY_REFUND_MAX_AGE_MS <= now);
        List<EarlyRefund> waiting = new ArrayList<>(state.earlyRefunds.stream().filter(r -> r.orderId().equals(orderId)).toList());
        state.earlyRefunds.removeIf(r -> r.orderId().equals(orderId));
        waiting.sort(Comparator.comparingLong(EarlyRefund::occurredAt));
        List<Movement> movements = new ArrayList<>();
        for (EarlyRefund refund : waiting) {
            GenericRecord properties = new GenericData.Record(REFUND);
            properties.put("order_id", refund.orderId());
            properties.put("value_minor", refund.valueMinor());
            properties.put("currency", refund.currency());
            List<Movement> reversed = apply(state, customer, refund.eventId(), refund.channel(), refund.occurredAt(),
                "order_refunded", properties, refund.arrivedAt());
            if (!reversed.isEmpty()) {
                movements.add(reversed.get(0));
            }
        }
        return movements;
    }

    /** The fields of a refund the fold reads, for a refund replayed from the state. */
    private static final Schema REFUND = new Schema.Parser().parse("""
        {"type": "record", "name": "Refund", "fields": [
          {"name": "order_id", "type": "string"}, {"name": "value_minor", "type": "long"},
          {"name": "currency", "type": "string"}]}""");

    /** Active points repay a debt first. */
    private static void repayDebt(State state) {
        if (state.debt == 0) {
            return;
        }
        state.debt = take(state, state.debt);
    }

    /** Takes {@code points} from active lots, the first to expire first; what they lack becomes debt. */
    private static void spend(State state, long points) {
        state.debt += take(state, points);
    }

    /** Takes up to {@code points} from the active lots, the first to expire first; what is left. */
    private static long take(State state, long points) {
        List<Lot> order = new ArrayList<>(state.lots.stream().filter(lot -> lot.active && lot.remaining > 0).toList());
        order.sort(Comparator.<Lot>comparingLong(lot -> lot.expiresAt).thenComparingLong(lot -> lot.earnedAt));
        for (Lot lot : order) {
            long taken = Math.min(lot.remaining, points);
            lot.remaining -= taken;
            points -= taken;
            if (points == 0) {
                break;
            }
        }
        return points;
    }

    /** Points an amount earns at 1 point per major unit (ISO 4217 exponent), rounded down. */
    static long pointsFor(long valueMinor, String currency) {
        double major = valueMinor / Math.pow(10, minorUnitExponent(currency));
        double whole = Math.rint(major);
        // Rates are decimals binary floating point only approximates: near a whole number is it.
        double points = Math.abs(major - whole) <= Math.abs(whole) * 1e-12 ? whole : Math.floor(major);
        return (long) Math.max(points, 0.0);
    }

    private static int minorUnitExponent(String currency) {
        return switch (currency) {
            case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
                 "XAF", "XOF", "XPF" -> 0;
            case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND" -> 3;
            case "CLF", "UYW" -> 4;
            default -> 2;
        };
    }

    /** {@code months} calendar months after {@code millis} in UTC, clamped to the month's last day. */
    static long addMonths(long millis, int months) {
        return Instant.ofEpochMilli(millis).atOffset(ZoneOffset.UTC).plusMonths(months).toInstant().toEpochMilli();
    }

    /** {@code <customer_id>/<event_id>/<kind>}, {@code %} and {@code /} in the customer id percent-encoded. */
    static String entryId(String customer, String eventId, String kind) {
        return customer.replace("%", "%25").replace("/", "%2F") + "/" + eventId + "/" + kind;
    }

    /** The state as plain binary: a Java team's own format for a store no one else reads. */
    private static Serde<State> stateSerde() {
        return Twins.dataSerde((state, out) -> {
            out.writeBoolean(state.erased);
            for (long value : new long[] {state.debt, state.spent, state.expired, state.lifetimeEarned,
                state.evaluatedAt, state.version}) {
                out.writeLong(value);
            }
            out.writeInt(state.lots.size());
            for (Lot lot : state.lots) {
                writeOptional(out, lot.id);
                writeOptional(out, lot.orderId);
                writeOptional(out, lot.channel);
                writeOptional(out, lot.causeEventId);
                for (long value : new long[] {lot.earnedAt, lot.points, lot.remaining, lot.reversed,
                    lot.activatesAt, lot.expiresAt}) {
                    out.writeLong(value);
                }
                out.writeBoolean(lot.active);
            }
            out.writeInt(state.earned.size());
            for (long[] earned : state.earned) {
                out.writeLong(earned[0]);
                out.writeLong(earned[1]);
            }
            out.writeInt(state.redemptions.size());
            for (String redemption : state.redemptions) {
                out.writeUTF(redemption);
            }
            out.writeInt(state.earlyRefunds.size());
            for (EarlyRefund refund : state.earlyRefunds) {
                out.writeUTF(refund.eventId());
                out.writeUTF(refund.orderId());
                out.writeLong(refund.valueMinor());
                out.writeUTF(refund.currency());
                out.writeUTF(refund.channel());
                out.writeLong(refund.occurredAt());
                out.writeLong(refund.arrivedAt());
            }
        }, in -> {
            State state = new State();
            state.erased = in.readBoolean();
            state.debt = in.readLong();
            state.spent = in.readLong();
            state.expired = in.readLong();
            state.lifetimeEarned = in.readLong();
            state.evaluatedAt = in.readLong();
            state.version = in.readLong();
            for (int i = in.readInt(); i > 0; i--) {
                Lot lot = new Lot();
                lot.id = readOptional(in);
                lot.orderId = readOptional(in);
                lot.channel = readOptional(in);
                lot.causeEventId = readOptional(in);
                lot.earnedAt = in.readLong();
                lot.points = in.readLong();
                lot.remaining = in.readLong();
                lot.reversed = in.readLong();
                lot.activatesAt = in.readLong();
                lot.expiresAt = in.readLong();
                lot.active = in.readBoolean();
                state.lots.add(lot);
            }
            for (int i = in.readInt(); i > 0; i--) {
                state.earned.add(new long[] {in.readLong(), in.readLong()});
            }
            for (int i = in.readInt(); i > 0; i--) {
                state.redemptions.addLast(in.readUTF());
            }
            for (int i = in.readInt(); i > 0; i--) {
                state.earlyRefunds.add(new EarlyRefund(in.readUTF(), in.readUTF(), in.readLong(), in.readUTF(),
                    in.readUTF(), in.readLong(), in.readLong()));
            }
            return state;
        });
    }

    private static void writeOptional(DataOutputStream out, String value) throws IOException {
        out.writeBoolean(value != null);
        if (value != null) {
            out.writeUTF(value);
        }
    }

    private static String readOptional(DataInputStream in) throws IOException {
        return in.readBoolean() ? in.readUTF() : null;
    }
}
