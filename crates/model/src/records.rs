//! The derived records of SPEC 4, as written to the output topics. Each matches its `.avsc` file in
//! `schemas/` (a test proves it); timestamps are Avro `timestamp-millis`.

use std::borrow::Cow;

use chrono::serde::{ts_milliseconds, ts_milliseconds_option};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::avro_write::DatumWriter;
use crate::codec::{AvroRecord, CodecError, RecordKind};
use crate::event::{Channel, EventType, Purpose, TraitValue};
use crate::sorted_map::SortedMap;

/// Activity of one customer on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelActivity {
    pub channel: Channel,
    #[serde(with = "ts_milliseconds")]
    pub first_seen_at: DateTime<Utc>,
    #[serde(with = "ts_milliseconds")]
    pub last_seen_at: DateTime<Utc>,
    /// Events on this channel by event type name.
    pub event_counts: SortedMap<EventType, i64>,
}

/// A trait value and the event time that decided it; `value` is `Null` once unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitEntry {
    pub value: TraitValue,
    #[serde(with = "ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    pub set_once: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenTicket {
    pub ticket_id: String,
    #[serde(with = "ts_milliseconds")]
    pub opened_at: DateTime<Utc>,
    pub channel: Channel,
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedTicket {
    pub ticket_id: String,
    #[serde(with = "ts_milliseconds_option")]
    pub opened_at: Option<DateTime<Utc>>,
    #[serde(with = "ts_milliseconds")]
    pub resolved_at: DateTime<Utc>,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentEntry {
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    #[serde(with = "ts_milliseconds")]
    pub at: DateTime<Utc>,
}

/// One grant or revocation of consent, in the profile's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    /// The `consent_changed` event.
    pub event_id: String,
    /// The event's `occurred_at`.
    #[serde(with = "ts_milliseconds")]
    pub at: DateTime<Utc>,
}

impl ConsentChange {
    /// The history's order: by event time, then event id (the same whatever order the events
    /// came in, and across a merge).
    pub fn order_key(&self) -> (DateTime<Utc>, &str) {
        (self.at, &self.event_id)
    }
}

/// The traits whose string values are a customer's identifiers (the profile's `identifiers`).
pub const IDENTIFIER_TRAITS: &[&str] = &["email", "phone"];

/// The most consent changes a profile keeps (the newest).
pub const CONSENT_HISTORY_LIMIT: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identifier {
    /// `email` or `phone`.
    pub kind: String,
    pub value: String,
    #[serde(with = "ts_milliseconds")]
    pub first_seen_at: DateTime<Utc>,
}

/// `customer.profiles.v1`: one customer across every channel (SPEC 4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerProfile {
    pub customer_id: String,
    #[serde(with = "ts_milliseconds")]
    pub first_seen_at: DateTime<Utc>,
    #[serde(with = "ts_milliseconds")]
    pub last_seen_at: DateTime<Utc>,
    pub channels: Vec<ChannelActivity>,
    pub traits: SortedMap<String, TraitEntry>,
    pub orders_count: i64,
    /// Per ISO 4217 currency, refunds subtracted.
    pub lifetime_value_minor: SortedMap<String, i64>,
    #[serde(with = "ts_milliseconds_option")]
    pub last_order_at: Option<DateTime<Utc>>,
    pub last_order_channel: Option<Channel>,
    pub refunds_count: i64,
    pub refunded_value_minor: SortedMap<String, i64>,
    pub open_tickets: Vec<OpenTicket>,
    pub last_resolved_ticket: Option<ResolvedTicket>,
    pub consents: Vec<ConsentEntry>,
    pub identifiers: Vec<Identifier>,
    /// Number of events applied.
    pub version: i64,
    /// Every grant and revocation, oldest first (see [`ConsentChange::order_key`]), the newest
    /// [`CONSENT_HISTORY_LIMIT`]. Last, with a default: states saved before it (MessagePack, by
    /// position) and Avro records of v1 still read.
    #[serde(default)]
    pub consent_history: Vec<ConsentChange>,
}

impl AvroRecord for CustomerProfile {
    const KIND: RecordKind = RecordKind::CustomerProfile;

    /// Written by hand: profile-updater writes one per event.
    fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut w = DatumWriter::new(buf);
        w.string(&self.customer_id);
        w.timestamp(self.first_seen_at);
        w.timestamp(self.last_seen_at);
        w.block(self.channels.iter(), |w, activity| {
            w.index(activity.channel.index());
            w.timestamp(activity.first_seen_at);
            w.timestamp(activity.last_seen_at);
            w.block(activity.event_counts.iter(), |w, (event_type, count)| {
                w.string(event_type.as_str());
                w.long(*count);
            });
        });
        w.block(self.traits.iter(), |w, (name, entry)| {
            w.string(name);
            w.trait_value(&entry.value);
            w.timestamp(entry.updated_at);
            w.boolean(entry.set_once);
        });
        w.long(self.orders_count);
        w.block(self.lifetime_value_minor.iter(), |w, (currency, value)| {
            w.string(currency);
            w.long(*value);
        });
        w.optional(self.last_order_at, DatumWriter::timestamp);
        w.optional(self.last_order_channel, |w, channel| w.index(channel.index()));
        w.long(self.refunds_count);
        w.block(self.refunded_value_minor.iter(), |w, (currency, value)| {
            w.string(currency);
            w.long(*value);
        });
        w.block(self.open_tickets.iter(), |w, ticket| {
            w.string(&ticket.ticket_id);
            w.timestamp(ticket.opened_at);
            w.index(ticket.channel.index());
            w.optional(ticket.topic.as_deref(), DatumWriter::string);
        });
        w.optional(self.last_resolved_ticket.as_ref(), |w, ticket| {
            w.string(&ticket.ticket_id);
            w.optional(ticket.opened_at, DatumWriter::timestamp);
            w.timestamp(ticket.resolved_at);
            w.index(ticket.channel.index());
        });
        w.block(self.consents.iter(), |w, consent| {
            w.index(consent.channel.index());
            w.index(consent.purpose.index());
            w.boolean(consent.granted);
            w.timestamp(consent.at);
        });
        w.block(self.identifiers.iter(), |w, identifier| {
            w.string(&identifier.kind);
            w.string(&identifier.value);
            w.timestamp(identifier.first_seen_at);
        });
        w.long(self.version);
        w.block(self.consent_history.iter(), |w, change| {
            w.index(change.channel.index());
            w.index(change.purpose.index());
            w.boolean(change.granted);
            w.string(&change.event_id);
            w.timestamp(change.at);
        });
        Ok(())
    }
}

/// Declared in the order of the Avro enum's symbols: the variant index is the symbol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SuppressionStatus {
    Allowed,
    Blocked,
    Deferred,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionReason {
    /// `support_ticket_open`, `consent_revoked`, `no_consent`, `hard_bounce`, `spam_report`,
    /// `frequency_cap`, `quiet_hours`, `recent_order`, `holdout`, `erasure`.
    /// Borrowed for the fixed codes a service writes, owned when decoded.
    pub code: Cow<'static, str>,
    pub detail: Option<String>,
    #[serde(with = "ts_milliseconds_option")]
    pub until: Option<DateTime<Utc>>,
}

/// Why a channel is suppressed (the `code` of a reason).
pub mod reason_code {
    pub const SUPPORT_TICKET_OPEN: &str = "support_ticket_open";
    pub const CONSENT_REVOKED: &str = "consent_revoked";
    pub const NO_CONSENT: &str = "no_consent";
    pub const HARD_BOUNCE: &str = "hard_bounce";
    pub const SPAM_REPORT: &str = "spam_report";
    pub const FREQUENCY_CAP: &str = "frequency_cap";
    pub const QUIET_HOURS: &str = "quiet_hours";
    pub const RECENT_ORDER: &str = "recent_order";
    pub const HOLDOUT: &str = "holdout";
    /// The customer was erased; answered by the customer API while the erasure marker lives.
    pub const ERASED: &str = "erased";
}

impl SuppressionReason {
    /// Whether waiting lifts it (a cap, quiet hours, a cool-down) rather than an event.
    pub fn defers(&self) -> bool {
        matches!(
            &*self.code,
            reason_code::FREQUENCY_CAP | reason_code::QUIET_HOURS | reason_code::RECENT_ORDER
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSuppression {
    pub channel: Channel,
    pub status: SuppressionStatus,
    #[serde(with = "ts_milliseconds_option")]
    pub until: Option<DateTime<Utc>>,
    pub reasons: Vec<SuppressionReason>,
}

impl ChannelSuppression {
    /// A channel's status from its reasons: blocked if any reason blocks, deferred if all defer,
    /// allowed without reasons. `until` is when every reason has lapsed; none while one waits for
    /// an event.
    pub fn from_reasons(channel: Channel, reasons: Vec<SuppressionReason>) -> Self {
        let status = if reasons.is_empty() {
            SuppressionStatus::Allowed
        } else if reasons.iter().all(SuppressionReason::defers) {
            SuppressionStatus::Deferred
        } else {
            SuppressionStatus::Blocked
        };
        let until = if reasons.is_empty() || reasons.iter().any(|r| r.until.is_none()) {
            None
        } else {
            reasons.iter().filter_map(|r| r.until).max()
        };
        Self { channel, status, until, reasons }
    }
}

/// `customer.suppressions.v1`: may we message them now, where, and if not why and until when
/// (SPEC 4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionState {
    pub customer_id: String,
    pub marketing: Vec<ChannelSuppression>,
    pub transactional: Vec<ChannelSuppression>,
    pub holdout: bool,
    #[serde(with = "ts_milliseconds")]
    pub evaluated_at: DateTime<Utc>,
    #[serde(with = "ts_milliseconds_option")]
    pub next_change_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl AvroRecord for SuppressionState {
    const KIND: RecordKind = RecordKind::SuppressionState;

    /// Written by hand: suppression writes one per event it reads.
    fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        fn channels(w: &mut DatumWriter<'_>, channels: &[ChannelSuppression]) {
            w.block(channels.iter(), |w, channel| {
                w.index(channel.channel.index());
                w.index(channel.status as u32);
                w.optional(channel.until, DatumWriter::timestamp);
                w.block(channel.reasons.iter(), |w, reason| {
                    w.string(&reason.code);
                    w.optional(reason.detail.as_deref(), DatumWriter::string);
                    w.optional(reason.until, DatumWriter::timestamp);
                });
            });
        }
        let mut w = DatumWriter::new(buf);
        w.string(&self.customer_id);
        channels(&mut w, &self.marketing);
        channels(&mut w, &self.transactional);
        w.boolean(self.holdout);
        w.timestamp(self.evaluated_at);
        w.optional(self.next_change_at, DatumWriter::timestamp);
        w.long(self.version);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelScore {
    pub channel: Channel,
    pub score: f64,
    pub std_dev: f64,
    pub sent: f64,
    pub engaged: f64,
    pub insufficient_data: bool,
    pub marketing_consent: bool,
}

/// `customer.channel-affinity.v1`: the channel they most likely engage on, explained (SPEC 4.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelAffinity {
    pub customer_id: String,
    pub ranking: Vec<Channel>,
    pub channels: Vec<ChannelScore>,
    pub half_life_days: f64,
    #[serde(with = "ts_milliseconds")]
    pub as_of: DateTime<Utc>,
    pub version: i64,
}

impl AvroRecord for ChannelAffinity {
    const KIND: RecordKind = RecordKind::ChannelAffinity;

    /// Written by hand: channel-affinity writes one per event it reads.
    fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut w = DatumWriter::new(buf);
        w.string(&self.customer_id);
        w.block(self.ranking.iter(), |w, channel| w.index(channel.index()));
        w.block(self.channels.iter(), |w, score| {
            w.index(score.channel.index());
            w.double(score.score);
            w.double(score.std_dev);
            w.double(score.sent);
            w.double(score.engaged);
            w.boolean(score.insufficient_data);
            w.boolean(score.marketing_consent);
        });
        w.double(self.half_life_days);
        w.timestamp(self.as_of);
        w.long(self.version);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerEntryKind {
    Earn,
    Activate,
    Redeem,
    Reject,
    Reverse,
    Expire,
    Adjust,
    Erase,
    /// Points that left with the customer's state in a merge (identity resolution).
    MergeOut,
    /// Points that came with a merged customer's state.
    MergeIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceAfter {
    pub active: i64,
    pub pending: i64,
}

/// `loyalty.ledger.v1`: one movement of points (SPEC 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyLedgerEntry {
    pub entry_id: String,
    pub customer_id: String,
    pub kind: LedgerEntryKind,
    pub points: i64,
    pub balance_after: BalanceAfter,
    pub reason: Option<String>,
    pub cause_event_id: String,
    pub order_id: Option<String>,
    pub channel: Option<Channel>,
    pub negative_balance: bool,
    #[serde(with = "ts_milliseconds")]
    pub occurred_at: DateTime<Utc>,
    pub redemption_id: Option<String>,
    pub reason_detail: Option<String>,
}

impl AvroRecord for LoyaltyLedgerEntry {
    const KIND: RecordKind = RecordKind::LoyaltyLedgerEntry;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextExpiry {
    pub points: i64,
    #[serde(with = "ts_milliseconds")]
    pub at: DateTime<Utc>,
}

/// `loyalty.balances.v1`: a customer's points (SPEC 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyBalance {
    pub customer_id: String,
    pub active: i64,
    pub pending: i64,
    pub spent: i64,
    pub expired: i64,
    pub lifetime_earned: i64,
    pub tier: String,
    pub next_expiry: Option<NextExpiry>,
    #[serde(with = "ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl AvroRecord for LoyaltyBalance {
    const KIND: RecordKind = RecordKind::LoyaltyBalance;
}

/// Which protection rule refused a link (`identity.conflicts.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictRule {
    /// The two customers hold different values of a strong type (two user ids).
    DifferentStrong,
    /// Together they would hold more values of a type than its limit.
    OverLimit,
    /// No rule: an offer to merge got no answer for a day and was given up (an internal request
    /// was dead-lettered); the two stay apart until another link.
    Unanswered,
}

/// `identity.conflicts.v1`: a link identity-resolver refused, for review (docs/identity.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityConflict {
    pub customer_id: String,
    pub other_customer_id: Option<String>,
    pub identifier_type: String,
    pub identifier_value: String,
    pub evidence_event_id: String,
    #[serde(with = "ts_milliseconds")]
    pub occurred_at: DateTime<Utc>,
    pub rule: ConflictRule,
    pub reason: String,
}

impl AvroRecord for IdentityConflict {
    const KIND: RecordKind = RecordKind::IdentityConflict;
}

/// An identifier a customer holds, with the event that linked it (`customer.identity.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub event_id: String,
    #[serde(with = "ts_milliseconds")]
    pub occurred_at: DateTime<Utc>,
    pub channel: String,
}

/// A merge into a customer, with its evidence (`customer.identity.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityMerge {
    pub merge_id: String,
    pub merged_customer_id: String,
    pub identifier_type: String,
    pub identifier_value: String,
    pub evidence_event_id: String,
    #[serde(with = "ts_milliseconds")]
    pub occurred_at: DateTime<Utc>,
}

/// `customer.identity.v1`: what identity-resolver knows of one customer id (docs/identity.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerIdentity {
    pub customer_id: String,
    pub merged_into: Option<String>,
    pub identifiers: Vec<LinkedIdentifier>,
    pub merges: Vec<IdentityMerge>,
}

impl AvroRecord for CustomerIdentity {
    const KIND: RecordKind = RecordKind::CustomerIdentity;
}

/// What a journey's send step decided (`journey.actions.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyOutcome {
    Send,
    Skipped,
    Waiting,
    Exited,
}

/// A channel a send step considered, with suppression's verdict (`journey.actions.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsideredChannel {
    pub channel: String,
    pub status: String,
    pub reason: Option<String>,
    #[serde(with = "ts_milliseconds_option")]
    pub until: Option<DateTime<Utc>>,
}

/// `journey.actions.v1`: one send decision of the journeys service (docs/journeys.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyAction {
    pub decision_id: String,
    pub customer_id: String,
    pub journey_id: String,
    pub journey_version: i32,
    pub entry_id: String,
    pub step: String,
    pub attempt: i32,
    #[serde(with = "ts_milliseconds")]
    pub decided_at: DateTime<Utc>,
    pub template: String,
    pub outcome: JourneyOutcome,
    pub channel: Option<String>,
    #[serde(with = "ts_milliseconds_option")]
    pub waiting_until: Option<DateTime<Utc>>,
    pub considered: Vec<ConsideredChannel>,
    pub ranking: Vec<String>,
    pub entry_key: Option<String>,
}

impl AvroRecord for JourneyAction {
    const KIND: RecordKind = RecordKind::JourneyAction;

    /// Written by hand: journeys writes one per send decision, and the serde writer cost 4 % of
    /// a drain (callgrind, bench/drain-cost.sh).
    fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut w = DatumWriter::new(buf);
        w.string(&self.decision_id);
        w.string(&self.customer_id);
        w.string(&self.journey_id);
        w.long(i64::from(self.journey_version));
        w.string(&self.entry_id);
        w.string(&self.step);
        w.long(i64::from(self.attempt));
        w.timestamp(self.decided_at);
        w.string(&self.template);
        w.index(self.outcome as u32);
        w.optional(self.channel.as_deref(), DatumWriter::string);
        w.optional(self.waiting_until, DatumWriter::timestamp);
        w.block(self.considered.iter(), |w, considered| {
            w.string(&considered.channel);
            w.string(&considered.status);
            w.optional(considered.reason.as_deref(), DatumWriter::string);
            w.optional(considered.until, DatumWriter::timestamp);
        });
        w.block(self.ranking.iter(), |w, channel| w.string(channel));
        w.optional(self.entry_key.as_deref(), DatumWriter::string);
        Ok(())
    }
}

/// An entry a customer is in (`journey.states.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyEntry {
    pub journey_id: String,
    pub journey_version: i32,
    pub entry_id: String,
    #[serde(with = "ts_milliseconds")]
    pub entered_at: DateTime<Utc>,
    pub step: String,
    #[serde(with = "ts_milliseconds")]
    pub step_since: DateTime<Utc>,
    #[serde(with = "ts_milliseconds_option")]
    pub waiting_until: Option<DateTime<Utc>>,
}

/// Why an entry ended (`journey.states.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyExitReason {
    Completed,
    Goal,
    Exited,
    ExitStep,
    Suppressed,
    Withdrawn,
    Merged,
}

/// An ended entry (`journey.states.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyExit {
    pub journey_id: String,
    pub journey_version: i32,
    pub entry_id: String,
    #[serde(with = "ts_milliseconds")]
    pub at: DateTime<Utc>,
    pub reason: JourneyExitReason,
    pub detail: Option<String>,
}

/// `journey.states.v1`: the journeys a customer is in and how the latest ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerJourneyState {
    pub customer_id: String,
    pub entries: Vec<JourneyEntry>,
    pub last_exits: Vec<JourneyExit>,
}

impl AvroRecord for CustomerJourneyState {
    const KIND: RecordKind = RecordKind::CustomerJourneyState;

    /// Written by hand: journeys writes one whenever an entry starts, moves or ends.
    fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut w = DatumWriter::new(buf);
        w.string(&self.customer_id);
        w.block(self.entries.iter(), |w, entry| {
            w.string(&entry.journey_id);
            w.long(i64::from(entry.journey_version));
            w.string(&entry.entry_id);
            w.timestamp(entry.entered_at);
            w.string(&entry.step);
            w.timestamp(entry.step_since);
            w.optional(entry.waiting_until, DatumWriter::timestamp);
        });
        w.block(self.last_exits.iter(), |w, exit| {
            w.string(&exit.journey_id);
            w.long(i64::from(exit.journey_version));
            w.string(&exit.entry_id);
            w.timestamp(exit.at);
            w.index(exit.reason as u32);
            w.optional(exit.detail.as_deref(), DatumWriter::string);
        });
        Ok(())
    }
}

/// `journey.definitions.v1`: one published version of a journey, keyed `journey_id:version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyDefinition {
    pub journey_id: String,
    pub version: i32,
    pub source: String,
    #[serde(with = "ts_milliseconds")]
    pub published_at: DateTime<Utc>,
}

impl AvroRecord for JourneyDefinition {
    const KIND: RecordKind = RecordKind::JourneyDefinition;
}

/// What changed in a product (`catalog.events.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CatalogEventType {
    ProductPriceChanged,
    ProductRestocked,
}

impl CatalogEventType {
    /// The wire name (JSON value, Avro enum symbol).
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogEventType::ProductPriceChanged => "product_price_changed",
            CatalogEventType::ProductRestocked => "product_restocked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "product_price_changed" => Some(CatalogEventType::ProductPriceChanged),
            "product_restocked" => Some(CatalogEventType::ProductRestocked),
            _ => None,
        }
    }
}

/// `catalog.events.v1`: a change to a product, keyed by `product_id` (docs/journeys.md, "Catalog
/// triggers"). The price fields are set for `product_price_changed` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEvent {
    pub event_id: String,
    pub product_id: String,
    #[serde(with = "ts_milliseconds")]
    pub occurred_at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: CatalogEventType,
    pub old_minor: Option<i64>,
    pub new_minor: Option<i64>,
    pub currency: Option<String>,
    pub source: Option<String>,
}

impl CatalogEvent {
    /// A price change to a lower price in the same currency.
    pub fn is_price_drop(&self) -> bool {
        self.kind == CatalogEventType::ProductPriceChanged
            && matches!((self.old_minor, self.new_minor), (Some(old), Some(new)) if new < old)
    }
}

impl AvroRecord for CatalogEvent {
    const KIND: RecordKind = RecordKind::CatalogEvent;
}
