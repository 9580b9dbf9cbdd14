//! The resolver's protocol (docs/identity.md, "Stages"): two keyed stages that send each other
//! requests through Kafka.
//!
//! - **claim**, keyed by identifier: the single writer of which customer owns it. The first claim
//!   in its log order wins, so two first sightings of one email cannot make two customers.
//! - **customer**, keyed by canonical customer id: the identifiers it holds, where it was merged,
//!   the merges into it, and its one pending offer.
//!
//! Pure: a call takes one request for one key and returns [`Effect`]s; the service routes the
//! requests to their stage's topic (keyed by their destination) and publishes the rest. A
//! customer's id is the producer's `customer_id` of some event; the producer's `customer_id` is
//! the weakest identifier of its event and always belongs to the customer of that id (so with no
//! other identifiers every event keeps its customer, as without resolution), which makes the
//! final canonical id of linked customers the smallest of their producers' ids whatever the
//! order the links arrived in.

use std::collections::BTreeMap;

use omnistream_model::{Channel, EventPayload, Identifier, TouchpointEvent};
use serde::{Deserialize, Serialize};

use crate::{CUSTOMER_ID, Holdings, IdentityRules, Refusal};

/// Which event linked an identifier or caused a request: its id, when it happened (unix
/// millis) and on which channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub event_id: String,
    pub occurred_at: i64,
    pub channel: Channel,
}

/// An event on its way to its canonical customer. `payload` is the event as the service carries
/// it (its encoded bytes); the protocol never looks inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed<E> {
    pub evidence: Evidence,
    /// The producer's `customer_id`.
    pub customer_id: String,
    /// Its linkable identifiers, strongest first, the producer's `customer_id` last (unless
    /// blocked). The first is where it is resolved.
    pub identifiers: Vec<Identifier>,
    pub payload: E,
    /// It asks to erase its customer (`erasure_requested`): the customer stage forgets what it
    /// knows of the canonical customer, every alias merged into it and their identifiers.
    #[serde(default)]
    pub erasure: bool,
}

impl<E> Routed<E> {
    pub fn new(rules: &IdentityRules, event: &TouchpointEvent, payload: E) -> Self {
        let mut identifiers = rules.sort(event).linked;
        if let Ok(own) = rules.linkable(&Identifier::new(CUSTOMER_ID, event.customer_id.as_str()))
            && !identifiers.contains(&own)
        {
            identifiers.push(own);
        }
        Self {
            evidence: Evidence {
                event_id: event.event_id.clone(),
                occurred_at: event.occurred_at.timestamp_millis(),
                channel: event.channel,
            },
            customer_id: event.customer_id.clone(),
            identifiers,
            payload,
            erasure: matches!(event.payload, EventPayload::ErasureRequested),
        }
    }

    /// Where the event goes first: the claim of its strongest identifier, or, with none that
    /// links (a till's shared `guest` and nothing else), straight to its producer's customer.
    ///
    /// An event whose only identifier is its own `customer_id` (most events: a page view, an
    /// order) goes straight to its customer too: that claim always belongs to the customer or, once
    /// merged, to its winner, which the customer stage follows itself (`merged_into`), so asking
    /// the claim would answer nothing the customer does not know.
    pub fn first_stop(self) -> Effect<E> {
        match self.identifiers.as_slice() {
            [] => Effect::Customer(self.customer_id.clone(), CustomerRequest::Event(self)),
            [own] if own.kind == CUSTOMER_ID && own.value == self.customer_id => {
                Effect::Customer(self.customer_id.clone(), CustomerRequest::Event(self))
            }
            [strongest, ..] => Effect::Claim(strongest.clone(), ClaimRequest::Resolve(self)),
        }
    }
}

/// What the claim stage is asked, keyed by the identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimRequest<E> {
    /// Resolve an event whose strongest identifier this is.
    Resolve(Routed<E>),
    /// An event of customer `to` carried this identifier too.
    Link { to: String, evidence: Evidence },
    /// `from` was merged into `to`: what `from` owned, `to` owns.
    Repoint { from: String, to: String, evidence: Evidence },
    /// `from` holds too many of this type already: the identifier is not its.
    Release { from: String, evidence: Evidence },
    /// This identifier linked two customers that may not be one: it links nothing any more.
    Contest { evidence: Evidence },
    /// `from` was erased: the identifier is forgotten unless someone else owns it by now.
    Erase { from: String, evidence: Evidence },
}

/// What the customer stage is asked, keyed by the customer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerRequest<E> {
    /// An event resolved to this customer.
    Event(Routed<E>),
    Control(Control),
}

/// The customer stage's requests other than events: they change its identifiers and merges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The claim stage gave the customer this identifier.
    Attach { identifier: Identifier, evidence: Evidence },
    /// A contested identifier is no longer the customer's.
    Detach { identifier: Identifier, evidence: Evidence },
    /// `identifier`, owned by `other`, was carried by an event of this customer: the two are one
    /// person, unless protection says otherwise. Sent to the larger id, which offers itself.
    Link { other: String, identifier: Identifier, evidence: Evidence },
    /// `from` (a larger id) offers to be merged into this customer, with what it holds.
    Offer {
        from: String,
        holdings: BTreeMap<Identifier, Evidence>,
        identifier: Identifier,
        evidence: Evidence,
    },
    /// The answer to this customer's offer: merged.
    Accepted { merge: Merge },
    /// The answer to this customer's offer: the two stay apart (a conflict was recorded).
    Refused { by: String, evidence: Evidence },
    /// Erase the customer: an erasure that waited for its offer's answer, forwarded to the
    /// winner if it was merged meanwhile (the person is the winner now).
    Erase { evidence: Evidence },
    /// This customer was merged into one being erased: forget it and what was merged into it.
    Purge { evidence: Evidence },
}

impl<E> ClaimRequest<E> {
    /// The event behind the request.
    pub fn evidence(&self) -> &Evidence {
        match self {
            ClaimRequest::Resolve(event) => &event.evidence,
            ClaimRequest::Link { evidence, .. }
            | ClaimRequest::Repoint { evidence, .. }
            | ClaimRequest::Release { evidence, .. }
            | ClaimRequest::Contest { evidence }
            | ClaimRequest::Erase { evidence, .. } => evidence,
        }
    }
}

impl<E> CustomerRequest<E> {
    /// The event behind the request.
    pub fn evidence(&self) -> &Evidence {
        match self {
            CustomerRequest::Event(event) => &event.evidence,
            CustomerRequest::Control(
                Control::Attach { evidence, .. }
                | Control::Detach { evidence, .. }
                | Control::Link { evidence, .. }
                | Control::Offer { evidence, .. }
                | Control::Refused { evidence, .. }
                | Control::Erase { evidence }
                | Control::Purge { evidence },
            ) => evidence,
            CustomerRequest::Control(Control::Accepted { merge }) => &merge.evidence,
        }
    }
}

/// One merge, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    pub merge_id: String,
    pub loser: String,
    pub winner: String,
    /// The identifier that linked them, and the event that carried it.
    pub identifier: Identifier,
    pub evidence: Evidence,
}

/// A link that protection refused, for review (`identity.conflicts.v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The customer that decided, and the other one, if the link was between two customers
    /// (none when one customer's new identifier was over its type's limit).
    pub customer_id: String,
    pub other: Option<String>,
    pub identifier: Identifier,
    pub evidence: Evidence,
    pub refusal: Refusal,
}

/// What one request leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<E> {
    /// A request to the claim stage, keyed by the identifier.
    Claim(Identifier, ClaimRequest<E>),
    /// A request to the customer stage, keyed by the customer id.
    Customer(String, CustomerRequest<E>),
    /// The event, resolved: published keyed by `customer_id`.
    Resolved {
        customer_id: String,
        event: Routed<E>,
    },
    /// Published after the loser's last resolved event: its state moves to the winner.
    Merged(Merge),
    Conflict(Conflict),
    /// A customer's identifiers, merges or `merged_into` changed: its record
    /// (`customer.identity.v1`, compacted, keyed by the id); `None` once it was erased.
    Identity {
        customer_id: String,
        state: Option<CustomerState>,
    },
    /// A customer was erased by a request, not by the producer's event (an erasure that waited
    /// for an offer's answer and went on to the winner, a purge of a merged id): its services are
    /// told by an `erasure_requested` of their own.
    Erased {
        customer_id: String,
        evidence: Evidence,
    },
    /// The identity graph's record of an identifier (compacted, keyed by the identifier).
    Graph {
        identifier: Identifier,
        owner: Option<String>,
        contested: bool,
    },
}

/// The claim stage's state of one identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimState {
    /// Who owns it (a customer id, possibly merged since: its chain ends at the canonical one).
    /// A `customer_id` identifier is owned by that customer until it is merged.
    pub owner: Option<String>,
    /// The event that claimed it for its owner.
    pub evidence: Option<Evidence>,
    /// It linked two customers that may not be one; it links nothing any more.
    pub contested: bool,
}

/// The customer stage's state of one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    /// What it holds, with the event that linked each (its own `customer_id` implied).
    pub identifiers: BTreeMap<Identifier, Evidence>,
    /// The customer it was merged into; its requests and events follow there.
    pub merged_into: Option<String>,
    /// The merges into it, oldest first.
    pub merges: Vec<Merge>,
    /// The customer its pending offer went to: one at a time.
    pub offering: Option<String>,
    /// Requests that wait for the answer to that offer.
    pub deferred: Vec<Control>,
    /// When the id was last erased (unix millis, the erasure's event time): requests caused by
    /// events dated at or before it are of the erased person and link nothing to the id.
    #[serde(default)]
    pub erased_at: Option<i64>,
    /// When `erased_at` is forgotten (unix millis): the erasure horizon after the stage applied
    /// the erasure (its clock, not the erasure's event time, which may be long past).
    #[serde(default)]
    pub forget_erasure_at: Option<i64>,
    /// The pending offer's link and when it is sent again (`offering` says to whom).
    #[serde(default)]
    pub offer: Option<PendingOffer>,
    /// The offers it refused, or accepted before an erasure, latest last (at most
    /// [`REFUSALS_REMEMBERED`], by [`offer_fingerprint`]: an erased customer keeps no alias id):
    /// a copy sent again is refused without a second conflict, even if what it holds changed
    /// since.
    #[serde(default)]
    pub refused: Vec<u64>,
}

/// An offer by who sent it and the event of its link.
pub fn offer_fingerprint(from: &str, event_id: &str) -> u64 {
    omnistream_runtime::event_id_hash(&format!("{from}\u{0}{event_id}"))
}

/// Refusals are rare (a conflict each); a copy of an offer comes within a day of the first.
pub const REFUSALS_REMEMBERED: usize = 32;

/// An offer waiting for its answer. An offer or its answer that is dead-lettered (a record the
/// next stage cannot read) would leave the customer deferring its requests forever: the offer is
/// sent again, then given up (docs/identity.md, "Lost offers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffer {
    /// The link that made the offer.
    pub identifier: Identifier,
    pub evidence: Evidence,
    /// When it was first sent, and when it is sent again (unix millis, the stage's clock).
    pub sent_at: i64,
    pub due: i64,
    /// How often it was sent again.
    pub resends: u32,
}

/// An unanswered offer is sent again after a minute, then after twice the wait before, at most
/// an hour, and given up a day after it was first sent. An answer normally comes within a few
/// commit intervals; a stage that lags a day behind another is an outage the conflict names.
pub const OFFER_FIRST_RESEND_MILLIS: i64 = 60_000;
pub const OFFER_MAX_RESEND_WAIT_MILLIS: i64 = 3_600_000;
pub const OFFER_GIVEN_UP_AFTER_MILLIS: i64 = 86_400_000;

impl PendingOffer {
    fn new(identifier: Identifier, evidence: Evidence, now: i64) -> Self {
        Self { identifier, evidence, sent_at: now, due: now + OFFER_FIRST_RESEND_MILLIS, resends: 0 }
    }

    fn resent(&mut self, now: i64) {
        self.resends += 1;
        let wait = OFFER_FIRST_RESEND_MILLIS.saturating_mul(1 << self.resends.min(16));
        self.due = now + wait.min(OFFER_MAX_RESEND_WAIT_MILLIS);
    }
}

impl CustomerState {
    /// What it holds by type, its own `customer_id` included.
    pub fn holdings(&self, id: &str) -> Holdings {
        let mut holdings = holdings_of(self.identifiers.keys());
        holdings.entry(CUSTOMER_ID.to_owned()).or_default().insert(id.to_owned());
        holdings
    }
}

fn holdings_of<'a>(identifiers: impl IntoIterator<Item = &'a Identifier>) -> Holdings {
    let mut holdings = Holdings::new();
    for identifier in identifiers {
        holdings.entry(identifier.kind.clone()).or_default().insert(identifier.value.clone());
    }
    holdings
}

/// The event behind a control that can link something to a customer; `None` for the answers to
/// its own offer and for erasures.
fn control_evidence(control: &Control) -> Option<&Evidence> {
    match control {
        Control::Attach { evidence, .. }
        | Control::Link { evidence, .. }
        | Control::Offer { evidence, .. } => Some(evidence),
        Control::Detach { .. }
        | Control::Accepted { .. }
        | Control::Refused { .. }
        | Control::Erase { .. }
        | Control::Purge { .. } => None,
    }
}

/// A merge's id: the same for a replay of the same decision, different for every other.
pub fn merge_id(loser: &str, winner: &str, event_id: &str) -> String {
    let text = format!("{loser}\u{0}{winner}\u{0}{event_id}");
    format!("{:016x}", omnistream_runtime::event_id_hash(&text))
}

/// The canonical id of a customer first known by `identifier` alone (its producer's id links
/// nothing): the same for every replay and every instance, and no personal data in a key.
pub fn minted_customer_id(identifier: &Identifier) -> String {
    let key = format!("{}:{}", identifier.kind, identifier.value);
    format!("idr-{:016x}", omnistream_runtime::event_id_hash(&key))
}

/// The claim stage: one request for the identifier `key`.
pub fn claim<E>(
    key: &Identifier,
    state: &mut Option<ClaimState>,
    request: ClaimRequest<E>,
) -> Vec<Effect<E>> {
    let current = state.get_or_insert_with(ClaimState::default);
    let own_customer = (key.kind == CUSTOMER_ID).then(|| key.value.clone());
    let owner = current.owner.clone().or_else(|| own_customer.clone());
    let mut effects = Vec::new();
    let graph = |current: &ClaimState| Effect::Graph {
        identifier: key.clone(),
        owner: current.owner.clone(),
        contested: current.contested,
    };
    match request {
        ClaimRequest::Resolve(mut event) => {
            if current.contested && own_customer.is_none() {
                // It names no one person: the event resolves by its next identifier.
                event.identifiers.retain(|identifier| identifier != key);
                effects.push(event.first_stop());
            } else {
                let owner = match owner {
                    Some(owner) => owner,
                    None => {
                        // Unowned: the producer's customer claims it; a producer id that links
                        // nothing (a till's shared `guest`) claims nothing, so a new customer,
                        // named after the identifier, does.
                        let claimant = if event.identifiers.iter().any(|i| i.kind == CUSTOMER_ID) {
                            event.customer_id.clone()
                        } else {
                            minted_customer_id(key)
                        };
                        current.owner = Some(claimant.clone());
                        current.evidence = Some(event.evidence.clone());
                        effects.push(graph(current));
                        effects.push(Effect::Customer(
                            claimant.clone(),
                            CustomerRequest::Control(Control::Attach {
                                identifier: key.clone(),
                                evidence: event.evidence.clone(),
                            }),
                        ));
                        claimant
                    }
                };
                for other in event.identifiers.iter().filter(|identifier| *identifier != key) {
                    let link = ClaimRequest::Link { to: owner.clone(), evidence: event.evidence.clone() };
                    effects.push(Effect::Claim(other.clone(), link));
                }
                effects.push(Effect::Customer(owner, CustomerRequest::Event(event)));
            }
        }
        ClaimRequest::Link { to, evidence } => match owner {
            _ if current.contested => {}
            None => {
                current.owner = Some(to.clone());
                current.evidence = Some(evidence.clone());
                effects.push(graph(current));
                let attach = Control::Attach { identifier: key.clone(), evidence };
                effects.push(Effect::Customer(to, CustomerRequest::Control(attach)));
            }
            Some(owner) if owner == to => {}
            Some(owner) => {
                let (larger, smaller) = if owner > to { (owner, to) } else { (to, owner) };
                let link = Control::Link { other: smaller, identifier: key.clone(), evidence };
                effects.push(Effect::Customer(larger, CustomerRequest::Control(link)));
            }
        },
        ClaimRequest::Repoint { from, to, .. } => {
            if owner.as_deref() == Some(from.as_str()) {
                current.owner = Some(to);
                effects.push(graph(current));
            }
        }
        ClaimRequest::Release { from, .. } => {
            if current.owner.as_deref() == Some(from.as_str()) && own_customer.is_none() {
                current.owner = None;
                current.evidence = None;
                effects.push(graph(current));
            }
        }
        // A customer's own id always names it: a refused link through it is a conflict, not a
        // reason for it to stop linking.
        ClaimRequest::Contest { .. } if own_customer.is_some() => {}
        ClaimRequest::Erase { from, .. } => {
            if owner.as_deref() == Some(from.as_str()) && !current.contested {
                *current = ClaimState::default();
                effects.push(graph(current));
            }
        }
        ClaimRequest::Contest { evidence } => {
            if !current.contested {
                current.contested = true;
                // Whoever claimed it first does not keep it: the outcome does not depend on who
                // was seen first.
                current.evidence = None;
                if let Some(former) = current.owner.take() {
                    let detach = Control::Detach { identifier: key.clone(), evidence };
                    effects.push(Effect::Customer(former, CustomerRequest::Control(detach)));
                }
                effects.push(graph(current));
            }
        }
    }
    if *current == ClaimState::default() {
        *state = None;
    }
    effects
}

/// The customer stage: one request for the customer `id` at `now` (unix millis, the stage's
/// clock: when a pending offer is sent again).
pub fn customer<E>(
    rules: &IdentityRules,
    id: &str,
    state: &mut Option<CustomerState>,
    request: CustomerRequest<E>,
    now: i64,
) -> Vec<Effect<E>> {
    let current = state.get_or_insert_with(CustomerState::default);
    let mut effects = Vec::new();
    // Only controls and erasures change what the customer's identity record shows.
    let shown_before = match &request {
        CustomerRequest::Event(event) if !event.erasure => None,
        _ => Some(Shown::of(current)),
    };
    match request {
        CustomerRequest::Event(event) => match &current.merged_into {
            Some(winner) => effects.push(Effect::Customer(winner.clone(), CustomerRequest::Event(event))),
            // An event of the erased person that arrives late: the services drop it too.
            None if !event.erasure
                && current.erased_at.is_some_and(|at| event.evidence.occurred_at <= at) => {}
            None => {
                let erase = event.erasure.then(|| event.evidence.clone());
                effects.push(Effect::Resolved { customer_id: id.to_owned(), event });
                if let Some(evidence) = erase {
                    let mut customer = Customer { rules, id, state: current, now };
                    if customer.state.offering.is_some() {
                        // Its identifiers may be on their way to a winner: decided by the answer.
                        customer.state.deferred.push(Control::Erase { evidence });
                    } else {
                        customer.erase(evidence, &mut effects);
                    }
                }
            }
        },
        CustomerRequest::Control(control) => {
            Customer { rules, id, state: current, now }.control(control, &mut effects)
        }
    }
    finish(id, state, shown_before, &mut effects);
    effects
}

/// Publishes the customer's identity record if what it shows changed, and drops an empty state.
fn finish<E>(
    id: &str,
    state: &mut Option<CustomerState>,
    shown_before: Option<Shown>,
    effects: &mut Vec<Effect<E>>,
) {
    let Some(current) = state.as_mut() else { return };
    if let Some(before) = shown_before
        && before != Shown::of(current)
    {
        // Nothing left to show (an erasure): a tombstone.
        let shown = (!Shown::of(current).is_empty()).then(|| current.clone());
        effects.push(Effect::Identity { customer_id: id.to_owned(), state: shown });
    }
    if *current == CustomerState::default() {
        *state = None;
    }
}

/// What a customer's identity record shows.
#[derive(PartialEq)]
struct Shown {
    identifiers: BTreeMap<Identifier, Evidence>,
    merged_into: Option<String>,
    merges: usize,
}

impl Shown {
    fn is_empty(&self) -> bool {
        self.identifiers.is_empty() && self.merged_into.is_none() && self.merges == 0
    }

    fn of(state: &CustomerState) -> Self {
        Self {
            identifiers: state.identifiers.clone(),
            merged_into: state.merged_into.clone(),
            merges: state.merges.len(),
        }
    }
}

/// The customer stage's timer for the customer `id` at `now` (unix millis): its pending offer,
/// unanswered when due, is sent again with what the customer holds now, or, a day after it was
/// first sent, given up: recorded as a conflict, and the deferred requests are taken up as after
/// a refusal.
pub fn customer_timer<E>(
    rules: &IdentityRules,
    id: &str,
    state: &mut Option<CustomerState>,
    now: i64,
) -> Vec<Effect<E>> {
    let mut effects = Vec::new();
    let Some(current) = state.as_mut().filter(|current| offer_due(current).is_some_and(|due| due <= now))
    else {
        return effects;
    };
    let shown_before = Some(Shown::of(current));
    let (Some(to), Some(mut offer)) = (current.offering.clone(), current.offer.take()) else {
        unreachable!("an offer is due")
    };
    if now - offer.sent_at >= OFFER_GIVEN_UP_AFTER_MILLIS {
        current.offering = None;
        effects.push(Effect::Conflict(Conflict {
            customer_id: id.to_owned(),
            other: Some(to),
            identifier: offer.identifier,
            evidence: offer.evidence,
            refusal: Refusal::Unanswered { offers: offer.resends + 1 },
        }));
        Customer { rules, id, state: current, now }.redispatch(&mut effects);
    } else {
        offer.resent(now);
        let again = Control::Offer {
            from: id.to_owned(),
            holdings: current.identifiers.clone(),
            identifier: offer.identifier.clone(),
            evidence: offer.evidence.clone(),
        };
        current.offer = Some(offer);
        effects.push(Effect::Customer(to, CustomerRequest::Control(again)));
    }
    finish(id, state, shown_before, &mut effects);
    effects
}

/// When the customer's pending offer is due to be sent again.
pub fn offer_due(state: &CustomerState) -> Option<i64> {
    state.offering.as_ref().and(state.offer.as_ref()).map(|offer| offer.due)
}

struct Customer<'a> {
    rules: &'a IdentityRules,
    id: &'a str,
    state: &'a mut CustomerState,
    now: i64,
}

impl Customer<'_> {
    fn control<E>(&mut self, control: Control, effects: &mut Vec<Effect<E>>) {
        if let Control::Offer { from, evidence, .. } = &control
            && self.answer_again(from, evidence, effects)
        {
            return;
        }
        // A purge is for this id itself, merged or not.
        let purge = matches!(control, Control::Purge { .. });
        if let Some(winner) = self.state.merged_into.clone()
            && !purge
        {
            self.forward(winner, control, effects);
            return;
        }
        let answer = matches!(control, Control::Accepted { .. } | Control::Refused { .. });
        if self.state.offering.is_some() && !answer && !purge {
            // Decided once the pending offer is answered (with what it then holds, or by the
            // winner it then belongs to).
            self.state.deferred.push(control);
            return;
        }
        let id = self.id.to_owned();
        if let Some(erased_at) = self.state.erased_at
            && control_evidence(&control).is_some_and(|evidence| evidence.occurred_at <= erased_at)
        {
            self.refuse_for_erasure(control, effects);
            return;
        }
        match control {
            Control::Attach { identifier, evidence } => {
                if self.state.identifiers.contains_key(&identifier) {
                    return;
                }
                let incoming = holdings_of([&identifier]);
                match self.rules.may_join(&self.state.holdings(&id), &incoming) {
                    Ok(()) => {
                        self.state.identifiers.insert(identifier, evidence);
                    }
                    Err(refusal) => {
                        effects.push(Effect::Conflict(Conflict {
                            customer_id: id.clone(),
                            other: None,
                            identifier: identifier.clone(),
                            evidence: evidence.clone(),
                            refusal,
                        }));
                        effects.push(Effect::Claim(identifier, ClaimRequest::Release { from: id, evidence }));
                    }
                }
            }
            Control::Detach { identifier, .. } => {
                self.state.identifiers.remove(&identifier);
            }
            Control::Link { other, identifier, evidence } => match other.as_str().cmp(id.as_str()) {
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => {
                    // The larger id offers itself.
                    let link = Control::Link { other: id, identifier, evidence };
                    effects.push(Effect::Customer(other, CustomerRequest::Control(link)));
                }
                std::cmp::Ordering::Less => {
                    self.state.offering = Some(other.clone());
                    self.state.offer =
                        Some(PendingOffer::new(identifier.clone(), evidence.clone(), self.now));
                    let offer = Control::Offer {
                        from: id,
                        holdings: self.state.identifiers.clone(),
                        identifier,
                        evidence,
                    };
                    effects.push(Effect::Customer(other, CustomerRequest::Control(offer)));
                }
            },
            Control::Offer { from, mut holdings, identifier, evidence } => {
                holdings.insert(Identifier::new(CUSTOMER_ID, from.as_str()), evidence.clone());
                match self.rules.may_join(&self.state.holdings(&id), &holdings_of(holdings.keys())) {
                    Ok(()) => {
                        let merge = Merge {
                            merge_id: merge_id(&from, &id, &evidence.event_id),
                            loser: from.clone(),
                            winner: id.clone(),
                            identifier,
                            evidence,
                        };
                        for identifier in holdings.keys() {
                            let repoint = ClaimRequest::Repoint {
                                from: from.clone(),
                                to: id.clone(),
                                evidence: merge.evidence.clone(),
                            };
                            effects.push(Effect::Claim(identifier.clone(), repoint));
                        }
                        self.state.identifiers.extend(holdings);
                        self.state.merges.push(merge.clone());
                        effects.push(Effect::Customer(
                            from,
                            CustomerRequest::Control(Control::Accepted { merge }),
                        ));
                    }
                    Err(refusal) => {
                        effects.push(Effect::Conflict(Conflict {
                            customer_id: id.clone(),
                            other: Some(from.clone()),
                            identifier: identifier.clone(),
                            evidence: evidence.clone(),
                            refusal,
                        }));
                        effects.push(Effect::Claim(
                            identifier,
                            ClaimRequest::Contest { evidence: evidence.clone() },
                        ));
                        if self.state.refused.len() >= REFUSALS_REMEMBERED {
                            self.state.refused.remove(0);
                        }
                        self.state.refused.push(offer_fingerprint(&from, &evidence.event_id));
                        let refused = Control::Refused { by: id, evidence };
                        effects.push(Effect::Customer(from, CustomerRequest::Control(refused)));
                    }
                }
            }
            // A late acceptance of an offer given up by a customer erased since: nothing of it
            // is left to merge.
            Control::Accepted { .. } if self.state.offer.is_none() && self.state.erased_at.is_some() => {}
            Control::Accepted { merge } => {
                // Not the answer to the pending offer, if any: one given up.
                let given_up = self.state.offer.as_ref().is_none_or(|offer| offer.evidence != merge.evidence);
                self.state.offering = None;
                self.state.offer = None;
                self.state.merged_into = Some(merge.winner.clone());
                let held = std::mem::take(&mut self.state.identifiers);
                if given_up {
                    // Accepted after the offer was given up: what it linked since goes to the
                    // winner too (the winner holds what it offered).
                    for (identifier, evidence) in held {
                        self.forward(merge.winner.clone(), Control::Attach { identifier, evidence }, effects);
                    }
                }
                effects.push(Effect::Merged(merge));
                self.redispatch(effects);
            }
            // A copy's answer to an offer answered already, or given up: nothing pending.
            Control::Refused { evidence, .. }
                if self.state.offer.as_ref().is_none_or(|offer| offer.evidence != evidence) => {}
            Control::Refused { .. } => {
                self.state.offering = None;
                self.state.offer = None;
                self.redispatch(effects);
            }
            Control::Erase { evidence } => {
                effects.push(Effect::Erased { customer_id: id, evidence: evidence.clone() });
                self.erase(evidence, effects);
            }
            // The merged id's services hold nothing of it (its state moved), but they mark it
            // erased: its late events are dropped and it answers `erased`.
            Control::Purge { evidence } => {
                effects.push(Effect::Erased { customer_id: id, evidence: evidence.clone() });
                self.erase(evidence, effects);
            }
        }
    }

    /// A request caused by an event of the person erased since: it links nothing to this id. An
    /// identifier its claim gave the id is handed back, an offer is answered no (without a
    /// conflict: nothing was judged), a link is dropped.
    fn refuse_for_erasure<E>(&mut self, control: Control, effects: &mut Vec<Effect<E>>) {
        let id = self.id.to_owned();
        match control {
            Control::Attach { identifier, evidence } => {
                effects.push(Effect::Claim(identifier, ClaimRequest::Erase { from: id, evidence }));
            }
            Control::Offer { from, evidence, .. } => {
                let refused = Control::Refused { by: id, evidence };
                effects.push(Effect::Customer(from, CustomerRequest::Control(refused)));
            }
            _ => {}
        }
    }

    /// Forgets the customer: its identifiers' claims, the customers merged into it (and theirs),
    /// its own record; remembers only when, so that late requests of the erased person link
    /// nothing to the id.
    fn erase<E>(&mut self, evidence: Evidence, effects: &mut Vec<Effect<E>>) {
        let id = self.id.to_owned();
        for identifier in std::mem::take(&mut self.state.identifiers).into_keys() {
            let erase = ClaimRequest::Erase { from: id.clone(), evidence: evidence.clone() };
            effects.push(Effect::Claim(identifier, erase));
        }
        // The offers it answered are answered no from now on: a copy still on its way must not
        // bring the erased customers' identifiers back, nor be judged anew after a refusal.
        let mut answered = std::mem::take(&mut self.state.refused);
        for merge in std::mem::take(&mut self.state.merges) {
            answered.push(offer_fingerprint(&merge.loser, &merge.evidence.event_id));
            let purge = Control::Purge { evidence: evidence.clone() };
            effects.push(Effect::Customer(merge.loser, CustomerRequest::Control(purge)));
        }
        answered.drain(..answered.len().saturating_sub(REFUSALS_REMEMBERED));
        // Erased again: the horizon already running (or the one the stage sets for a later
        // erasure) still ends the memory.
        let erased_at = self.state.erased_at.max(Some(evidence.occurred_at));
        let forget_erasure_at = self.state.forget_erasure_at;
        *self.state =
            CustomerState { erased_at, forget_erasure_at, refused: answered, ..CustomerState::default() };
    }

    /// An offer this customer answered already (the sender sent it again: the answer was lost, or
    /// late): the same answer, nothing merged or refused twice. Asked before a merged customer
    /// forwards the offer to its winner, which would judge it anew.
    fn answer_again<E>(&mut self, from: &str, evidence: &Evidence, effects: &mut Vec<Effect<E>>) -> bool {
        let answer = if let Some(merge) = self.state.merges.iter().find(|merge| merge.loser == from) {
            Control::Accepted { merge: merge.clone() }
        } else if self.state.refused.contains(&offer_fingerprint(from, &evidence.event_id)) {
            Control::Refused { by: self.id.to_owned(), evidence: evidence.clone() }
        } else {
            return false;
        };
        effects.push(Effect::Customer(from.to_owned(), CustomerRequest::Control(answer)));
        true
    }

    fn redispatch<E>(&mut self, effects: &mut Vec<Effect<E>>) {
        for control in std::mem::take(&mut self.state.deferred) {
            self.control(control, effects);
        }
    }

    /// A request to a customer merged into `winner`.
    fn forward<E>(&mut self, winner: String, control: Control, effects: &mut Vec<Effect<E>>) {
        let to_customer =
            |id: String, control: Control| Effect::Customer(id, CustomerRequest::Control(control));
        match control {
            Control::Attach { identifier, evidence } => {
                let repoint = ClaimRequest::Repoint {
                    from: self.id.to_owned(),
                    to: winner.clone(),
                    evidence: evidence.clone(),
                };
                effects.push(Effect::Claim(identifier.clone(), repoint));
                effects.push(to_customer(winner, Control::Attach { identifier, evidence }));
            }
            Control::Link { other, identifier, evidence } => {
                if other != winner {
                    let (larger, smaller) = if other > winner { (other, winner) } else { (winner, other) };
                    effects.push(to_customer(larger, Control::Link { other: smaller, identifier, evidence }));
                }
            }
            passed_on @ (Control::Detach { .. } | Control::Offer { .. } | Control::Erase { .. }) => {
                effects.push(to_customer(winner, passed_on));
            }
            // Only an offering customer is answered, and it is not merged until answered; a
            // purge never reaches here.
            Control::Accepted { .. } | Control::Refused { .. } | Control::Purge { .. } => {}
        }
    }
}
