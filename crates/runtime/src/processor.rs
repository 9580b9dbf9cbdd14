//! The contract a service implements: a pure fold of one customer's events, plus timers.

use chrono::{DateTime, Utc};
use omnistream_model::{ErrorCode, EventPayload, OutputRecord, Rejection, TouchpointEvent};
use serde::Serialize;

use crate::lookup::{LookupInput, Lookups};
use serde::de::DeserializeOwned;

/// One record a processor emits under one of its output roles ([`Processor::OUTPUTS`]); the
/// runtime writes it, encoded, to the topic configuration binds that role to, inside the current
/// transaction. The processor knows neither topic names nor encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output<R> {
    pub role: &'static str,
    pub key: String,
    /// `None` is a tombstone.
    pub value: Option<R>,
    pub partitioning: Partitioning,
}

/// Which partition of its topic an output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// The partition number of the input record that caused it (co-partitioning, SPEC 3): the
    /// output of a customer's record, keyed by that customer.
    #[default]
    SameAsInput,
    /// Where its key hashes to (murmur2, as Java clients put it): a record keyed by something else
    /// than the customer, for a later stage that reads this topic keyed by that (a repartition
    /// topic; docs/runtime.md, "Repartition topics").
    ByKey,
}

impl<R> Output<R> {
    /// A record of the input's customer, on the input record's partition number.
    pub fn new(role: &'static str, key: String, value: Option<R>) -> Self {
        Self { role, key, value, partitioning: Partitioning::SameAsInput }
    }

    /// A record keyed by something else, on the partition its key hashes to.
    pub fn rekeyed(role: &'static str, key: String, value: Option<R>) -> Self {
        Self { role, key, value, partitioning: Partitioning::ByKey }
    }
}

/// What a processor reads from its input topic: touchpoint events for the services, a stage's
/// own requests for a service of several stages (the identity resolver). The runtime needs of it
/// its customer (the record's key), its id for dedupe, its time and whether it erases.
pub trait InputEvent: Sized + Send + 'static {
    /// Decodes and validates a record's value; a rejection dead-letters the record with its code.
    fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection>;

    /// The customer (or other key) whose state it changes: it must be the record's key.
    fn key(&self) -> &str;

    /// The id a retry of it repeats, for dedupe and the `cause.event_id` header of its outputs.
    fn event_id(&self) -> &str;

    /// Whether a second record with its `event_id` for the same key is a retry to drop. A
    /// stage's requests written by the runtime's own transactions are never retried, and several
    /// may carry the id of the event that caused them.
    fn deduped(&self) -> bool {
        true
    }

    /// When it happened, unix millis (erasure markers judge by it).
    fn occurred_at_millis(&self) -> i64;

    /// Whether it asks to erase its customer (SPEC 4.6).
    fn is_erasure(&self) -> bool {
        false
    }

    /// Decodes a record of the processor's feedback topic ([`Processor::FEEDBACK`]): what the
    /// service wrote to itself, in its own format. Only the input of a processor with a feedback
    /// topic is asked; the default refuses, as a record no stage of this processor writes.
    fn decode_feedback(_bytes: &[u8], _now: DateTime<Utc>) -> Result<Self, Rejection> {
        Err(Rejection::single(ErrorCode::Malformed, "$", "this processor reads no feedback topic"))
    }
}

impl InputEvent for TouchpointEvent {
    fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        omnistream_model::decode_and_validate(bytes, now)
    }

    fn key(&self) -> &str {
        &self.customer_id
    }

    fn event_id(&self) -> &str {
        &self.event_id
    }

    fn occurred_at_millis(&self) -> i64 {
        self.occurred_at.timestamp_millis()
    }

    fn is_erasure(&self) -> bool {
        matches!(self.payload, EventPayload::ErasureRequested)
    }
}

/// A service's domain logic: no I/O, no clock of its own. The runtime owns Kafka, transactions,
/// state restore, dedupe of `event_id`s, the DLQ, metrics and shutdown.
///
/// State is per customer. `None` means the processor knows nothing of the customer: it is `None`
/// before the first event, and a processor sets it back to `None` to forget a customer (erasure),
/// which makes the runtime write a tombstone to the changelog.
pub trait Processor: Send + 'static {
    /// What it reads (`TouchpointEvent` for a service of the pipeline).
    type Input: InputEvent;

    type State: Serialize + DeserializeOwned + Clone + Send + 'static;

    /// The records it emits (an enum when it writes several kinds).
    type Record: OutputRecord;

    /// Its output roles, each bound to a topic by configuration (the registry's outputs,
    /// `omnistream_model::services`, with their flags); the runtime refuses to start when the
    /// two disagree.
    const OUTPUTS: &'static [&'static str];

    /// The output roles whose records are each key's whole latest value (a compacted topic that
    /// readers use as a table: a profile, a balance), as opposed to facts that each count (a
    /// ledger entry). With `COALESCE_OUTPUTS` (the default) a transaction writes only its last
    /// record per key of these roles, at its commit.
    const LATEST_PER_KEY: &'static [&'static str] = &[];

    /// The layout and meaning of `State` this build writes to the changelog (the record's tag).
    /// Raise it with a change to either; a field is only ever added at the end of a struct, with
    /// a serde default, so that every earlier version still decodes. Below 128: the tag's top bit
    /// marks the runtime's own layout (`changelog`).
    const STATE_VERSION: u8 = 1;

    /// Brings a state restored from a record of an older `STATE_VERSION` (`written_with`) up to
    /// this build's meaning, before any event or timer sees it.
    fn upgrade_state(&self, _state: &mut Self::State, _written_with: u8) {}

    /// Folds one valid, not yet seen event of the customer into their state.
    fn apply(
        &self,
        state: &mut Option<Self::State>,
        event: &Self::Input,
        now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>>;

    /// Names what one applied input or fired timer did that an SRE counts (an identifier linked,
    /// a merge, a conflict, a journey's decision): each `count(name)` adds one to
    /// `omnistream_domain_events_total{event=name}`. Called after `apply` with the input and its
    /// outputs, and after `on_timer` with `None` and its outputs; the default counts nothing.
    fn count_domain_events(
        &self,
        _input: Option<&Self::Input>,
        _outputs: &[Output<Self::Record>],
        _count: &mut dyn FnMut(&'static str),
    ) {
    }

    /// The table and broadcast inputs this processor reads (docs/runtime.md, "Table and broadcast
    /// inputs"); each role must be configured (`--table ROLE=TOPIC`, `--broadcast ROLE=TOPIC`).
    const LOOKUPS: &'static [LookupInput] = &[];

    /// `apply` for a processor with [`Self::LOOKUPS`]: `lookups` answers as of the record's
    /// partition clock less the lookup grace, the same on every replay. The default ignores them.
    fn apply_with_lookups(
        &self,
        state: &mut Option<Self::State>,
        event: &Self::Input,
        now: DateTime<Utc>,
        _lookups: &Lookups<'_>,
    ) -> Vec<Output<Self::Record>> {
        self.apply(state, event, now)
    }

    /// Whether this processor reads `event`; a pure function of the event, so that a replay
    /// reads the same ones. One it does not read is counted `ignored` and leaves no trace (the
    /// state is not touched, its id not remembered, nothing written, not even a changelog
    /// record), unless it is the first event of a new customer (no state, no erasure marker, not
    /// merged away), which makes the customer's state as any other: every customer seen has a
    /// record. So a service writes for the events it reads, not for every event (docs/runtime.md,
    /// "Events of no concern"). An erasure and a merge (`handoff_target`) are read whatever this
    /// says. The default: it reads every event.
    fn reads(&self, _event: &Self::Input) -> bool {
        true
    }

    /// Refuses an event that would break one of the customer's documented limits (SPEC 4,
    /// Limits), with a message saying which: the runtime dead-letters it with code
    /// `state_limit` and leaves the state unchanged. Called before `apply`, with the same `now`.
    fn check_limits(
        &self,
        _state: Option<&Self::State>,
        _event: &Self::Input,
        _now: DateTime<Utc>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// When `on_timer` should next run for a customer in this state; `None` for never.
    fn next_timer(&self, _state: &Self::State) -> Option<DateTime<Utc>> {
        None
    }

    /// A time-based transition (wall clock), e.g. a suppression `until` passing. It must move
    /// `next_timer` past the time it fired at (or to `None`): the runtime drops a timer that does
    /// not move, but an abort or a restore recomputes it from the state and would fire it again.
    fn on_timer(
        &self,
        _state: &mut Option<Self::State>,
        _customer_id: &str,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        Vec::new()
    }

    /// `on_timer` for a processor with [`Self::LOOKUPS`]: `lookups` answers as of the due time
    /// less the lookup grace. The runtime fires a timer only once every lookup partition is known
    /// read that far, so a timer sees the same versions live as on any replay; it waits (late)
    /// rather than see fewer. The default ignores them.
    fn on_timer_with_lookups(
        &self,
        state: &mut Option<Self::State>,
        customer_id: &str,
        now: DateTime<Utc>,
        _lookups: &Lookups<'_>,
    ) -> Vec<Output<Self::Record>> {
        self.on_timer(state, customer_id, now)
    }

    /// The broadcast input (a role of [`Self::LOOKUPS`]) whose records a customer can wait for,
    /// as journeys waits for the catalog events of the products a customer viewed: see
    /// [`Self::watches`].
    const WATCHED: Option<&'static str> = None;

    /// The keys of the [`Self::WATCHED`] input this customer waits for, each with the append time
    /// (unix millis) it has seen that key through. A version of a key appended at `T`, later than
    /// that, fires the customer's timer at `T` plus the lookup grace, whenever it is read, so that
    /// `on_timer_with_lookups` sees it as of `T` on every replay. That timer must move each key's
    /// time to at least its lookups' `as_of`, as a timer must move `next_timer`. Listed after
    /// every event, timer and restore; the default waits for nothing.
    fn watches<'s>(&self, _state: &'s Self::State) -> Vec<(&'s str, i64)> {
        Vec::new()
    }

    /// Whether a customer's dedupe memory is kept when `apply` leaves them no state. Without it
    /// the entry is forgotten (a tombstone), which suits a processor whose `apply` changes
    /// nothing for a customer without state; one that publishes for customers it keeps nothing of
    /// (identity's customer stage passes most events on) needs it to drop their retries.
    const DEDUPE_WITHOUT_STATE: bool = false;

    /// The output role whose topic the service reads back as a second input, co-partitioned with
    /// its events: requests it sends to its own customers (identity's customer stage forwards an
    /// event to the customer it was merged into). Its records are decoded by
    /// [`InputEvent::decode_feedback`] and applied as events are, but as of their own timestamp
    /// (the partition clock stays the events': a feedback topic is stamped by its writer, and its
    /// end says nothing of the events'), and erasure markers do not judge them: the processor
    /// wrote them and decides itself what an erased customer does with them. See
    /// docs/runtime.md, "Feedback topic".
    const FEEDBACK: Option<&'static str> = None;

    /// Whether this processor moves state between customers (merges). The runtime then also
    /// reads and writes its handoff topic (`HANDOFF_TOPIC`, co-partitioned with the input); see
    /// docs/runtime.md, "State handoff".
    const HANDS_OFF_STATE: bool = false;

    /// Whether `event` asks to move its customer's state to another customer: the winner's id.
    /// The runtime asks after `apply` (which emits what the loser's side publishes, e.g. a
    /// tombstone), then takes the state it left, with the customer's dedupe ids, and sends it to
    /// the winner's partition; the loser keeps only its dedupe ids and where it was merged (later
    /// handoffs to it follow there). Read only when `HANDS_OFF_STATE`.
    fn handoff_target(&self, _event: &Self::Input) -> Option<String> {
        None
    }

    /// The winner's side of a handoff: folds the state handed over by `from` into the winner's
    /// (`None` if the winner is new), as of the handoff record's append time; `cause` is the
    /// event that asked for the merge (for records that must name it, as a ledger entry). Applied once per
    /// handoff (its id is remembered with the winner's event ids), in arrival order relative to
    /// the winner's own events: a merge should not depend on that order (counts add, traits by
    /// event time). It keeps the winner within its documented limits itself (no event to
    /// dead-letter here: the loser's state is already on its way).
    fn merge(
        &self,
        _state: &mut Option<Self::State>,
        _customer_id: &str,
        _from: &str,
        _cause: &str,
        _handed: Self::State,
        _now: DateTime<Utc>,
    ) -> Vec<Output<Self::Record>> {
        Vec::new()
    }

    /// `merge` for a processor with [`Self::LOOKUPS`]: `lookups` answers as of the handoff
    /// record's append time less the lookup grace. The default ignores them.
    #[allow(clippy::too_many_arguments)]
    fn merge_with_lookups(
        &self,
        state: &mut Option<Self::State>,
        customer_id: &str,
        from: &str,
        cause: &str,
        handed: Self::State,
        now: DateTime<Utc>,
        _lookups: &Lookups<'_>,
    ) -> Vec<Output<Self::Record>> {
        self.merge(state, customer_id, from, cause, handed, now)
    }
}
