//! identity-resolver's two stages as runtime processors (docs/identity.md, "Stages"): each is
//! exactly once on its own (its own consumer group, changelog and transactions), and they talk
//! through two internal topics: the claim stage's `identity.requests.v1` keyed by identifier,
//! which it reads and writes, and the customer stage's `identity.customers.v1` keyed by canonical
//! id, its feedback topic beside the producers' events (keyed by the same customer ids).

use chrono::{DateTime, Utc};
use omnistream_model::records::{
    ConflictRule, CustomerIdentity, IdentityConflict, IdentityMerge, LinkedIdentifier,
};
use omnistream_model::{
    ErrorCode, EventPayload, Identifier, OutputRecord, Rejection, TouchpointEvent, decode_event,
};
use omnistream_runtime::processor::InputEvent;
use omnistream_runtime::{Output, Processor};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::protocol::Control;
use crate::protocol::{
    ClaimRequest, ClaimState, Conflict, CustomerRequest, CustomerState, Effect, Evidence, Merge, Routed,
    claim, customer, customer_timer, offer_due,
};
use crate::{IdentityRules, Refusal, Skipped};

/// Output roles (bound to topics by the registry, `omnistream_model::services`).
pub const REQUESTS_OUTPUT: &str = "requests";
pub const CUSTOMERS_OUTPUT: &str = "customers";
pub const RESOLVED_OUTPUT: &str = "resolved";
pub const CONFLICTS_OUTPUT: &str = "conflicts";
pub const IDENTITY_OUTPUT: &str = "identity";

/// An event as the stages carry it: its Avro bytes, decoded again only to be published.
pub type EventBytes = ByteBuf;

/// A request to the claim stage: the value of an `identity.requests.v1` record (MessagePack,
/// fields by position: only ever added at the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMessage {
    pub identifier: Identifier,
    pub request: ClaimRequest<EventBytes>,
}

/// A request to the customer stage: the value of an `identity.customers.v1` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerMessage {
    pub customer_id: String,
    pub request: CustomerRequest<EventBytes>,
}

/// The key of an identifier's records: `type:value` (a type has no `:`).
pub fn identifier_key(identifier: &Identifier) -> String {
    format!("{}:{}", identifier.kind, identifier.value)
}

/// What the stages write.
#[derive(Debug, Clone)]
pub enum StageRecord {
    Claim(ClaimMessage),
    Customer(CustomerMessage),
    Event(TouchpointEvent),
    /// An event resolved to its producer's customer: its bytes as the producer wrote them.
    Unchanged(EventBytes),
    Conflict(IdentityConflict),
    Identity(CustomerIdentity),
}

impl OutputRecord for StageRecord {
    fn encode(&self) -> Vec<u8> {
        let internal = |result: Result<Vec<u8>, rmp_serde::encode::Error>| {
            result.unwrap_or_else(|error| panic!("a stage's request serializes: {error}"))
        };
        match self {
            StageRecord::Claim(message) => internal(rmp_serde::to_vec(message)),
            StageRecord::Customer(message) => internal(rmp_serde::to_vec(message)),
            StageRecord::Event(event) => event.encode(),
            StageRecord::Unchanged(bytes) => bytes.to_vec(),
            StageRecord::Conflict(conflict) => conflict.encode(),
            StageRecord::Identity(identity) => identity.encode(),
        }
    }
}

fn malformed(what: &str, error: impl std::fmt::Display) -> Rejection {
    Rejection::single(ErrorCode::Malformed, "$", format!("not {what}: {error}"))
}

/// A claim stage record as its processor reads it.
#[derive(Debug, Clone)]
pub struct ClaimInput {
    key: String,
    pub message: ClaimMessage,
}

impl InputEvent for ClaimInput {
    fn decode(bytes: &[u8], _now: DateTime<Utc>) -> Result<Self, Rejection> {
        let message: ClaimMessage =
            rmp_serde::from_slice(bytes).map_err(|error| malformed("a claim request", error))?;
        Ok(Self { key: identifier_key(&message.identifier), message })
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn event_id(&self) -> &str {
        &self.message.request.evidence().event_id
    }

    /// Written in the stages' own transactions, never retried; one event causes several.
    fn deduped(&self) -> bool {
        false
    }

    fn occurred_at_millis(&self) -> i64 {
        self.message.request.evidence().occurred_at
    }
}

/// A customer stage request (`identity.customers.v1`) as its processor reads it, with the event
/// it carries decoded when it is to be published under another customer than its producer's (its
/// `customer_id` rewritten): an event this build cannot read is then dead-lettered with its code
/// (by the runtime). An event that stays its producer's customer's is published as the producer
/// wrote it, which the customer stage had validated when it read it from the events.
#[derive(Debug, Clone)]
pub struct CustomerInput {
    pub message: CustomerMessage,
    event: Option<TouchpointEvent>,
}

impl InputEvent for CustomerInput {
    fn decode(bytes: &[u8], _now: DateTime<Utc>) -> Result<Self, Rejection> {
        let message: CustomerMessage =
            rmp_serde::from_slice(bytes).map_err(|error| malformed("a customer request", error))?;
        let event = match &message.request {
            CustomerRequest::Event(routed) if routed.customer_id != message.customer_id => {
                Some(decode_event(&routed.payload)?)
            }
            CustomerRequest::Event(_) | CustomerRequest::Control(_) => None,
        };
        Ok(Self { message, event })
    }

    fn key(&self) -> &str {
        &self.message.customer_id
    }

    fn event_id(&self) -> &str {
        &self.message.request.evidence().event_id
    }

    fn deduped(&self) -> bool {
        false
    }

    fn occurred_at_millis(&self) -> i64 {
        self.message.request.evidence().occurred_at
    }
}

/// The records of a stage's effects; `event` is the input's event, decoded, when it carried one
/// (only an event's own request resolves it).
fn outputs(effects: Vec<Effect<EventBytes>>, event: Option<&TouchpointEvent>) -> Vec<Output<StageRecord>> {
    effects.into_iter().filter_map(|effect| output(effect, event)).collect()
}

fn output(effect: Effect<EventBytes>, event: Option<&TouchpointEvent>) -> Option<Output<StageRecord>> {
    let record = |role, key: String, record| Some(Output::rekeyed(role, key, Some(record)));
    match effect {
        Effect::Claim(identifier, request) => {
            let key = identifier_key(&identifier);
            record(REQUESTS_OUTPUT, key, StageRecord::Claim(ClaimMessage { identifier, request }))
        }
        Effect::Customer(customer_id, request) => {
            let message = CustomerMessage { customer_id: customer_id.clone(), request };
            record(CUSTOMERS_OUTPUT, customer_id, StageRecord::Customer(message))
        }
        Effect::Resolved { customer_id, event: routed } if routed.customer_id == customer_id => {
            record(RESOLVED_OUTPUT, customer_id, StageRecord::Unchanged(routed.payload))
        }
        Effect::Resolved { customer_id, .. } => {
            let mut resolved = event.expect("an event resolved to another customer is decoded").clone();
            resolved.customer_id.clone_from(&customer_id);
            record(RESOLVED_OUTPUT, customer_id, StageRecord::Event(resolved))
        }
        Effect::Merged(merge) => {
            let loser = merge.loser.clone();
            record(RESOLVED_OUTPUT, loser, StageRecord::Event(merged_event(merge)))
        }
        Effect::Conflict(conflict) => {
            let key = conflict.customer_id.clone();
            record(CONFLICTS_OUTPUT, key, StageRecord::Conflict(conflict_record(conflict)))
        }
        Effect::Identity { customer_id, state } => {
            let identity = state.map(|state| identity_record(&customer_id, state));
            Some(Output::rekeyed(IDENTITY_OUTPUT, customer_id, identity.map(StageRecord::Identity)))
        }
        Effect::Erased { customer_id, evidence } => record(
            RESOLVED_OUTPUT,
            customer_id.clone(),
            StageRecord::Event(erasure_event(customer_id, evidence)),
        ),
        // The claim stage's state is the graph (its changelog, compacted by identifier key);
        // `customer.identity.v1` shows it by customer.
        Effect::Graph { .. } => None,
    }
}

fn time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// The `customers_merged` event of a merge, keyed by the loser.
pub fn merged_event(merge: Merge) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!("merge-{}", merge.merge_id),
        customer_id: merge.loser,
        occurred_at: time(merge.evidence.occurred_at),
        channel: merge.evidence.channel,
        source: Some("identity-resolver".into()),
        payload: EventPayload::CustomersMerged {
            winner: merge.winner,
            merge_id: merge.merge_id,
            identifier_type: merge.identifier.kind,
            identifier_value: merge.identifier.value,
            evidence_event_id: merge.evidence.event_id,
        },
        context: Default::default(),
        identifiers: Vec::new(),
    }
}

/// The `erasure_requested` the services of a customer erased by a forwarded erasure read.
fn erasure_event(customer_id: String, evidence: Evidence) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!(
            "erase-{:016x}",
            omnistream_runtime::event_id_hash(&format!("{customer_id}\u{0}{}", evidence.event_id))
        ),
        customer_id,
        occurred_at: time(evidence.occurred_at),
        channel: evidence.channel,
        source: Some("identity-resolver".into()),
        payload: EventPayload::ErasureRequested,
        context: Default::default(),
        identifiers: Vec::new(),
    }
}

/// A customer's `customer.identity.v1` record.
pub fn identity_record(customer_id: &str, state: CustomerState) -> CustomerIdentity {
    CustomerIdentity {
        customer_id: customer_id.to_owned(),
        merged_into: state.merged_into,
        identifiers: state
            .identifiers
            .into_iter()
            .map(|(identifier, evidence)| LinkedIdentifier {
                kind: identifier.kind,
                value: identifier.value,
                event_id: evidence.event_id,
                occurred_at: time(evidence.occurred_at),
                channel: evidence.channel.as_str().to_owned(),
            })
            .collect(),
        merges: state
            .merges
            .into_iter()
            .map(|merge| IdentityMerge {
                merge_id: merge.merge_id,
                merged_customer_id: merge.loser,
                identifier_type: merge.identifier.kind,
                identifier_value: merge.identifier.value,
                evidence_event_id: merge.evidence.event_id,
                occurred_at: time(merge.evidence.occurred_at),
            })
            .collect(),
    }
}

fn conflict_record(conflict: Conflict) -> IdentityConflict {
    IdentityConflict {
        customer_id: conflict.customer_id,
        other_customer_id: conflict.other,
        identifier_type: conflict.identifier.kind,
        identifier_value: conflict.identifier.value,
        evidence_event_id: conflict.evidence.event_id,
        occurred_at: time(conflict.evidence.occurred_at),
        rule: match conflict.refusal {
            Refusal::DifferentStrong { .. } => ConflictRule::DifferentStrong,
            Refusal::OverLimit { .. } => ConflictRule::OverLimit,
            Refusal::Unanswered { .. } => ConflictRule::Unanswered,
        },
        reason: conflict.refusal.to_string(),
    }
}

/// A producer's event as the customer stage reads it: any valid event but `customers_merged`,
/// which only the resolver writes (a forged one would move a customer's state to whoever it
/// names).
#[derive(Debug, Clone)]
pub struct ProducerEvent {
    pub event: TouchpointEvent,
    /// As the producer wrote it: carried on to a claim and published as it is (no encoding again).
    bytes: EventBytes,
}

impl InputEvent for ProducerEvent {
    fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        let event = TouchpointEvent::decode(bytes, now)?;
        if let EventPayload::CustomersMerged { .. } = event.payload {
            return Err(Rejection::single(
                ErrorCode::UnknownType,
                "type",
                "customers_merged is written by identity-resolver, not accepted from producers",
            ));
        }
        Ok(Self { event, bytes: ByteBuf::from(bytes) })
    }

    fn key(&self) -> &str {
        self.event.key()
    }

    fn event_id(&self) -> &str {
        self.event.event_id()
    }

    fn occurred_at_millis(&self) -> i64 {
        self.event.occurred_at_millis()
    }

    fn is_erasure(&self) -> bool {
        self.event.is_erasure()
    }
}

/// The claim stage: the owner of each identifier.
#[derive(Debug, Clone, Default)]
pub struct Claims;

impl Processor for Claims {
    type Input = ClaimInput;
    type State = ClaimState;
    type Record = StageRecord;
    const OUTPUTS: &'static [&'static str] = &[REQUESTS_OUTPUT, CUSTOMERS_OUTPUT];

    fn apply(
        &self,
        state: &mut Option<ClaimState>,
        input: &ClaimInput,
        _now: DateTime<Utc>,
    ) -> Vec<Output<StageRecord>> {
        let message = input.message.clone();
        outputs(claim(&message.identifier, state, message.request), None)
    }

    fn count_domain_events(
        &self,
        _input: Option<&ClaimInput>,
        outputs: &[Output<StageRecord>],
        count: &mut dyn FnMut(&'static str),
    ) {
        for output in outputs {
            if let Some(StageRecord::Customer(CustomerMessage {
                request: CustomerRequest::Control(control),
                ..
            })) = &output.value
            {
                match control {
                    Control::Attach { .. } => count("identifier_linked"),
                    Control::Detach { .. } => count("identifier_contested"),
                    Control::Link { .. } => count("customers_linked"),
                    _ => {}
                }
            }
        }
    }
}

/// What the customer stage reads: the producers' events (its events topic, keyed by the
/// producer's `customer_id`) and its own requests (its feedback topic, keyed by canonical id).
#[derive(Debug, Clone)]
pub enum CustomerStageInput {
    Producer(ProducerEvent),
    Request(CustomerInput),
}

impl InputEvent for CustomerStageInput {
    fn decode(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        ProducerEvent::decode(bytes, now).map(Self::Producer)
    }

    fn decode_feedback(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
        CustomerInput::decode(bytes, now).map(Self::Request)
    }

    fn key(&self) -> &str {
        match self {
            Self::Producer(producer) => producer.key(),
            Self::Request(request) => request.key(),
        }
    }

    fn event_id(&self) -> &str {
        match self {
            Self::Producer(producer) => producer.event_id(),
            Self::Request(request) => request.event_id(),
        }
    }

    /// A producer's retry stops here (the runtime's dedupe per producer customer); requests are
    /// written in the stages' own transactions, never retried, and one event causes several.
    fn deduped(&self) -> bool {
        matches!(self, Self::Producer(_))
    }

    fn occurred_at_millis(&self) -> i64 {
        match self {
            Self::Producer(producer) => producer.occurred_at_millis(),
            Self::Request(request) => request.occurred_at_millis(),
        }
    }

    /// A producer's erasure: the runtime then drops the producer customer's earlier events that
    /// come late, as it does for every service (the protocol erases the identity state itself).
    fn is_erasure(&self) -> bool {
        match self {
            Self::Producer(producer) => producer.is_erasure(),
            Self::Request(_) => false,
        }
    }
}

/// The customer stage: each canonical customer's identifiers and merges; publishes the resolved
/// events. A producer's event with an identifier to resolve goes to its strongest identifier's
/// claim first; one with none (most) is resolved here at once, under its own customer (or the
/// one that customer was merged into).
#[derive(Debug, Clone, Default)]
pub struct Customers {
    pub rules: IdentityRules,
    /// How long an erased id remembers when it was erased (the runtime's erasure horizon).
    pub erasure_horizon: chrono::Duration,
}

impl Customers {
    /// A request to `customer_id`, applied to its state.
    fn request(
        &self,
        state: &mut Option<CustomerState>,
        customer_id: &str,
        request: CustomerRequest<EventBytes>,
        event: Option<&TouchpointEvent>,
        now: DateTime<Utc>,
    ) -> Vec<Output<StageRecord>> {
        let erased_before = state.as_ref().and_then(|current| current.erased_at);
        let effects = customer(&self.rules, customer_id, state, request, now.timestamp_millis());
        self.remember_erasure(state, erased_before, now);
        outputs(effects, event)
    }

    /// An erasure just applied is remembered for the horizon from now.
    fn remember_erasure(
        &self,
        state: &mut Option<CustomerState>,
        erased_before: Option<i64>,
        now: DateTime<Utc>,
    ) {
        if let Some(current) = state
            && current.erased_at.is_some()
            && current.erased_at != erased_before
        {
            current.forget_erasure_at = Some((now + self.erasure_horizon).timestamp_millis());
        }
    }
}

impl Processor for Customers {
    type Input = CustomerStageInput;
    type State = CustomerState;
    type Record = StageRecord;
    const OUTPUTS: &'static [&'static str] =
        &[REQUESTS_OUTPUT, CUSTOMERS_OUTPUT, RESOLVED_OUTPUT, CONFLICTS_OUTPUT, IDENTITY_OUTPUT];
    const FEEDBACK: Option<&'static str> = Some(CUSTOMERS_OUTPUT);
    /// Most customers keep no state here (their events pass on), but their retries must stop.
    const DEDUPE_WITHOUT_STATE: bool = true;
    /// 2: `erased_at` and `forget_erasure_at`; 3: `offer` (an earlier build cannot read them:
    /// it says so).
    const STATE_VERSION: u8 = 3;

    fn apply(
        &self,
        state: &mut Option<CustomerState>,
        input: &CustomerStageInput,
        now: DateTime<Utc>,
    ) -> Vec<Output<StageRecord>> {
        match input {
            CustomerStageInput::Producer(ProducerEvent { event, bytes }) => {
                match Routed::new(&self.rules, event, bytes.clone()).first_stop() {
                    Effect::Customer(customer_id, request) => {
                        self.request(state, &customer_id, request, Some(event), now)
                    }
                    claim => outputs(vec![claim], None),
                }
            }
            CustomerStageInput::Request(CustomerInput { message, event }) => {
                self.request(state, &message.customer_id, message.request.clone(), event.as_ref(), now)
            }
        }
    }

    fn next_timer(&self, state: &CustomerState) -> Option<DateTime<Utc>> {
        state.forget_erasure_at.into_iter().chain(offer_due(state)).min().map(time)
    }

    fn on_timer(
        &self,
        state: &mut Option<CustomerState>,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Vec<Output<StageRecord>> {
        if let Some(current) = state
            && current.forget_erasure_at.is_some_and(|at| at <= now.timestamp_millis())
        {
            (current.erased_at, current.forget_erasure_at) = (None, None);
            // What the erasure left to answer copies with: they come within a day.
            current.refused.clear();
            if *current == CustomerState::default() {
                *state = None;
            }
        }
        let erased_before = state.as_ref().and_then(|current| current.erased_at);
        let effects = customer_timer(&self.rules, customer_id, state, now.timestamp_millis());
        // A deferred erasure taken up when the offer is given up.
        self.remember_erasure(state, erased_before, now);
        outputs(effects, None)
    }

    fn count_domain_events(
        &self,
        input: Option<&CustomerStageInput>,
        outputs: &[Output<StageRecord>],
        count: &mut dyn FnMut(&'static str),
    ) {
        if let Some(CustomerStageInput::Producer(ProducerEvent { event, .. })) = input
            && !event.identifiers.is_empty()
        {
            for (_, skipped) in self.rules.sort(event).skipped {
                count(match skipped {
                    Skipped::Blocked(_) => "identifier_blocked",
                    Skipped::UnknownType => "identifier_unknown_type",
                    Skipped::Malformed(_) => "identifier_malformed",
                });
            }
        }
        let unanswered = |output: &Output<StageRecord>| matches!(&output.value, Some(StageRecord::Conflict(conflict)) if conflict.rule == ConflictRule::Unanswered);
        // A timer that gives an offer up may send a first offer elsewhere (a deferred link).
        let gave_up = outputs.iter().any(unanswered);
        for output in outputs {
            match &output.value {
                Some(StageRecord::Event(event))
                    if matches!(event.payload, EventPayload::CustomersMerged { .. }) =>
                {
                    count("merge");
                }
                // Offers the customer stage sends at a timer are sent again: their first copy or
                // its answer went missing (dead-lettered).
                Some(StageRecord::Customer(CustomerMessage {
                    request: CustomerRequest::Control(Control::Offer { .. }),
                    ..
                })) if input.is_none() && !gave_up => count("offer_resent"),
                Some(StageRecord::Conflict(conflict)) if conflict.rule == ConflictRule::Unanswered => {
                    count("offer_given_up");
                }
                Some(StageRecord::Conflict(_)) => count("conflict"),
                None if output.role == IDENTITY_OUTPUT => count("identity_erased"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use omnistream_model::{Channel, ErrorCode, EventPayload, Identifier, TouchpointEvent, encode_event};
    use omnistream_runtime::processor::InputEvent;
    use omnistream_runtime::{Output, Processor};

    use super::*;
    use crate::protocol::{ClaimRequest, Control, CustomerRequest, Evidence, Merge};

    #[test]
    fn given_a_customers_merged_event_from_a_producer_then_the_customer_stage_refuses_it() {
        let forged = TouchpointEvent {
            event_id: "e-1".into(),
            customer_id: "c-victim".into(),
            occurred_at: DateTime::from_timestamp(1_795_000_000, 0).expect("time"),
            channel: Channel::Web,
            source: None,
            payload: EventPayload::CustomersMerged {
                winner: "a-attacker".into(),
                merge_id: "m".into(),
                identifier_type: "email".into(),
                identifier_value: "x@example.org".into(),
                evidence_event_id: "e-0".into(),
            },
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        let bytes = encode_event(&forged).expect("encodes");
        let rejection = CustomerStageInput::decode(&bytes, forged.occurred_at).expect_err("refused");
        assert_eq!(rejection.first().code, ErrorCode::UnknownType, "{rejection}");
        let view = TouchpointEvent { payload: EventPayload::PageViewed { url: "/".into() }, ..forged };
        assert!(CustomerStageInput::decode(&encode_event(&view).expect("encodes"), view.occurred_at).is_ok());
    }

    #[test]
    fn given_an_erasure_dated_long_ago_then_it_is_remembered_for_the_horizon_from_when_it_was_applied() {
        let customers =
            Customers { rules: IdentityRules::default(), erasure_horizon: chrono::Duration::days(30) };
        let now = DateTime::from_timestamp(1_795_000_000, 0).expect("time");
        let long_ago = now - chrono::Duration::days(40);
        let erasure = TouchpointEvent {
            event_id: "e-erase".into(),
            customer_id: "U-1".into(),
            occurred_at: long_ago,
            channel: Channel::Web,
            source: None,
            payload: EventPayload::ErasureRequested,
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        };
        let routed = Routed::new(
            &IdentityRules::default(),
            &erasure,
            ByteBuf::from(encode_event(&erasure).expect("encodes")),
        );
        let message = CustomerMessage { customer_id: "U-1".into(), request: CustomerRequest::Event(routed) };
        let bytes = rmp_serde::to_vec(&message).expect("serializes");
        let input = CustomerStageInput::decode_feedback(&bytes, now).expect("decodes");
        let mut state = None;
        customers.apply(&mut state, &input, now);
        let remembered = state.as_ref().expect("the erasure is remembered");
        assert_eq!(remembered.erased_at, Some(long_ago.timestamp_millis()));
        assert_eq!(customers.next_timer(remembered), Some(now + chrono::Duration::days(30)));
        // The same erasure again (a retry under a new id) keeps the running horizon.
        let again = CustomerStageInput::decode_feedback(&bytes, now).expect("decodes");
        customers.apply(&mut state, &again, now + chrono::Duration::days(1));
        let remembered = state.as_ref().expect("remembered");
        assert_eq!(customers.next_timer(remembered), Some(now + chrono::Duration::days(30)));
        customers.on_timer(&mut state, "U-1", now + chrono::Duration::days(29));
        assert!(state.is_some(), "not before the horizon");
        customers.on_timer(&mut state, "U-1", now + chrono::Duration::days(30));
        assert_eq!(state, None, "forgotten at the horizon");
    }

    #[test]
    fn given_an_unanswered_offer_then_the_timer_sends_it_again_and_gives_up_a_day_later_counting_only_resends()
     {
        let customers = Customers::default();
        let now = DateTime::from_timestamp(1_795_000_000, 0).expect("time");
        let evidence = Evidence { event_id: "e-1".into(), occurred_at: 0, channel: Channel::Web };
        // c-2 learns it is linked to c-1 (the smaller id): it offers itself.
        let link = Control::Link {
            other: "c-1".into(),
            identifier: Identifier::new("email", "ann@example.com"),
            evidence,
        };
        let message = CustomerMessage { customer_id: "c-2".into(), request: CustomerRequest::Control(link) };
        let input = CustomerStageInput::Request(CustomerInput { message, event: None });
        let mut state = None;
        let offered = customers.apply(&mut state, &input, now);
        // While it waits, c-2 is linked to c-0 too: deferred until the answer (or the give-up).
        let to_c0 = Control::Link {
            other: "c-0".into(),
            identifier: Identifier::new("phone", "+442079460000"),
            evidence: Evidence { event_id: "e-2".into(), occurred_at: 0, channel: Channel::Web },
        };
        let deferred =
            CustomerMessage { customer_id: "c-2".into(), request: CustomerRequest::Control(to_c0) };
        customers.apply(
            &mut state,
            &CustomerStageInput::Request(CustomerInput { message: deferred, event: None }),
            now,
        );
        let is_offer_to_c1 = |output: &Output<StageRecord>| {
            output.key == "c-1"
                && matches!(
                    &output.value,
                    Some(StageRecord::Customer(CustomerMessage {
                        request: CustomerRequest::Control(Control::Offer { .. }),
                        ..
                    }))
                )
        };
        assert!(offered.iter().any(is_offer_to_c1));
        let timer_counts = |outputs: &[Output<StageRecord>]| {
            let mut names = Vec::new();
            customers.count_domain_events(None, outputs, &mut |name| names.push(name));
            names
        };
        let due = customers.next_timer(state.as_ref().expect("waits")).expect("a timer");
        assert_eq!(due, now + chrono::Duration::minutes(1));
        let again = customers.on_timer(&mut state, "c-2", due);
        assert!(again.iter().all(is_offer_to_c1) && again.len() == 1, "{again:?}");
        assert_eq!(timer_counts(&again), ["offer_resent"]);
        let last = loop {
            let due = state.as_ref().and_then(|current| customers.next_timer(current)).expect("a timer");
            let outputs = customers.on_timer(&mut state, "c-2", due);
            if !outputs.iter().all(is_offer_to_c1) {
                break outputs;
            }
        };
        let conflicts: Vec<_> = last
            .iter()
            .filter_map(|output| match &output.value {
                Some(StageRecord::Conflict(conflict)) => {
                    Some((conflict.rule, conflict.other_customer_id.as_deref()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(conflicts, [(ConflictRule::Unanswered, Some("c-1"))]);
        // The deferred link goes on: c-2's first offer to c-0, not a resend.
        assert!(last.iter().any(|output| output.key == "c-0"), "{last:?}");
        assert_eq!(timer_counts(&last), ["offer_given_up"]);
        assert_eq!(state.and_then(|state| state.offering).as_deref(), Some("c-0"));
    }

    fn counted<P: Processor>(
        processor: &P,
        input: &P::Input,
        outputs: &[Output<P::Record>],
    ) -> Vec<&'static str> {
        let mut names = Vec::new();
        processor.count_domain_events(Some(input), outputs, &mut |name| names.push(name));
        names
    }

    #[test]
    fn given_what_each_stage_did_then_it_counts_blocked_identifiers_links_merges_and_conflicts() {
        let at = DateTime::from_timestamp(1_795_000_000, 0).expect("time");
        let event = TouchpointEvent {
            event_id: "e-1".into(),
            customer_id: "c-1".into(),
            occurred_at: at,
            channel: Channel::Web,
            source: None,
            payload: EventPayload::Identify,
            context: BTreeMap::new(),
            identifiers: vec![
                Identifier::new("email", "test@example.com"),
                Identifier::new("email", "ann@example.com"),
            ],
        };
        let customers = Customers::default();
        let mut state = None;
        let input = CustomerStageInput::decode(&encode_event(&event).expect("encodes"), at).expect("valid");
        let routed = customers.apply(&mut state, &input, at);
        assert_eq!(counted(&customers, &input, &routed), ["identifier_blocked"]);

        let evidence = Evidence { event_id: "e-1".into(), occurred_at: 0, channel: Channel::Web };
        let attach = |control| {
            let message =
                CustomerMessage { customer_id: "c-1".into(), request: CustomerRequest::Control(control) };
            vec![Output::rekeyed(CUSTOMERS_OUTPUT, "c-1".into(), Some(StageRecord::Customer(message)))]
        };
        let input = ClaimInput {
            key: "email:ann@example.com".into(),
            message: ClaimMessage {
                identifier: Identifier::new("email", "ann@example.com"),
                request: ClaimRequest::Contest { evidence: evidence.clone() },
            },
        };
        let identifier = Identifier::new("email", "ann@example.com");
        let linked = attach(Control::Attach { identifier: identifier.clone(), evidence: evidence.clone() });
        assert_eq!(counted(&Claims, &input, &linked), ["identifier_linked"]);
        let contested =
            attach(Control::Detach { identifier: identifier.clone(), evidence: evidence.clone() });
        assert_eq!(counted(&Claims, &input, &contested), ["identifier_contested"]);

        let merge = Merge {
            merge_id: "m".into(),
            loser: "c-2".into(),
            winner: "c-1".into(),
            identifier,
            evidence: evidence.clone(),
        };
        let customer_input = CustomerStageInput::Request(CustomerInput {
            message: CustomerMessage {
                customer_id: "c-2".into(),
                request: CustomerRequest::Control(Control::Accepted { merge: merge.clone() }),
            },
            event: None,
        });
        let published = vec![
            Output::rekeyed(RESOLVED_OUTPUT, "c-2".into(), Some(StageRecord::Event(merged_event(merge)))),
            Output::rekeyed(RESOLVED_OUTPUT, "c-2".into(), Some(StageRecord::Event(event))),
            Output::rekeyed(IDENTITY_OUTPUT, "c-3".into(), None),
        ];
        assert_eq!(counted(&customers, &customer_input, &published), ["merge", "identity_erased"]);
    }

    fn page_view(event_id: &str, customer_id: &str, identifiers: Vec<Identifier>) -> TouchpointEvent {
        TouchpointEvent {
            event_id: event_id.into(),
            customer_id: customer_id.into(),
            occurred_at: DateTime::from_timestamp(1_795_000_000, 0).expect("time"),
            channel: Channel::Web,
            source: None,
            payload: EventPayload::PageViewed { url: "/".into() },
            context: BTreeMap::new(),
            identifiers,
        }
    }

    #[test]
    fn given_a_producer_event_then_the_customer_stage_resolves_it_at_once_or_sends_it_to_its_claim() {
        let customers = Customers::default();
        let at = DateTime::from_timestamp(1_795_000_000, 0).expect("time");
        let read = |event: &TouchpointEvent| {
            let bytes = encode_event(event).expect("encodes");
            (CustomerStageInput::decode(&bytes, at).expect("valid"), bytes)
        };
        // No identifier but its customer's: published under it at once, as the producer wrote it.
        let (plain, bytes) = read(&page_view("e-1", "c-7", Vec::new()));
        let mut state = None;
        let outputs = customers.apply(&mut state, &plain, at);
        let [resolved] = outputs.as_slice() else { panic!("{outputs:?}") };
        assert_eq!((resolved.role, resolved.key.as_str()), (RESOLVED_OUTPUT, "c-7"));
        assert_eq!(resolved.value.as_ref().map(OutputRecord::encode), Some(bytes.clone()));
        assert!(plain.deduped() && !plain.is_erasure());
        // An email: the event waits for the email's owner, at its claim.
        let (linked, _) = read(&page_view("e-2", "c-7", vec![Identifier::new("email", "ann@example.com")]));
        let outputs = customers.apply(&mut state, &linked, at);
        let [claim] = outputs.as_slice() else { panic!("{outputs:?}") };
        assert_eq!((claim.role, claim.key.as_str()), (REQUESTS_OUTPUT, "email:ann@example.com"));
        assert_eq!(state, None, "a customer with nothing linked keeps no state");
        // A request the stage wrote to itself is never taken for a producer's retry.
        let request = CustomerMessage {
            customer_id: "c-7".into(),
            request: CustomerRequest::Control(Control::Attach {
                identifier: Identifier::new("email", "ann@example.com"),
                evidence: Evidence { event_id: "e-2".into(), occurred_at: 0, channel: Channel::Web },
            }),
        };
        let feedback = rmp_serde::to_vec(&request).expect("serializes");
        let attached = CustomerStageInput::decode_feedback(&feedback, at).expect("decodes");
        assert!(!attached.deduped());
        customers.apply(&mut state, &attached, at);
        assert!(state.is_some_and(|state| state.identifiers.len() == 1));
        // Neither door reads the other's records: a request on the events topic is not an event.
        assert!(CustomerStageInput::decode(&feedback, at).is_err());
        assert!(CustomerStageInput::decode_feedback(&bytes, at).is_err());
    }

    #[test]
    fn given_a_producer_retry_of_an_event_that_left_no_state_then_the_runtime_still_drops_it() {
        let mut stage = omnistream_runtime::testing::ProcessorTest::new(Customers::default());
        let event = page_view("e-1", "c-7", Vec::new());
        assert_eq!(stage.when(&event).values(RESOLVED_OUTPUT).len(), 1);
        assert_eq!(stage.state("c-7"), None, "nothing linked: no state");
        let retry =
            TouchpointEvent { occurred_at: event.occurred_at + chrono::Duration::seconds(1), ..event };
        assert!(stage.when(&retry).records.is_empty(), "the retry is dropped by its id");
    }
}
