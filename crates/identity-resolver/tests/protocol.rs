//! The resolver's protocol run as a network of keyed stages, every key its own partition (the
//! most interleavings Kafka allows: one queue per key, in production order), delivered in a random
//! seeded order, against a model recomputed from scratch: connected components of the events'
//! identifiers (union-find), each named by the smallest producer `customer_id` in it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::DateTime;
use omnistream_identity_resolver::protocol::{
    ClaimRequest, ClaimState, Conflict, Control, CustomerRequest, CustomerState, Effect, Evidence, Merge,
    OFFER_GIVEN_UP_AFTER_MILLIS, Routed, claim, customer, customer_timer, offer_due,
};
use omnistream_identity_resolver::{CUSTOMER_ID, IdentityRules};
use omnistream_model::{Channel, EventPayload, Identifier, TouchpointEvent};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod model;
use model::Components;

/// The event's index in the input.
type Payload = usize;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Claim(Identifier),
    Customer(String),
}

#[derive(Debug)]
enum Request {
    Claim(ClaimRequest<Payload>),
    Customer(CustomerRequest<Payload>),
}

#[derive(Default)]
struct Network {
    rules: IdentityRules,
    queues: BTreeMap<Key, VecDeque<Request>>,
    claims: BTreeMap<Identifier, ClaimState>,
    customers: BTreeMap<String, CustomerState>,
    /// (event index, customer it was published under)
    resolved: Vec<(Payload, String)>,
    merges: Vec<Merge>,
    conflicts: Vec<Conflict>,
    graph: BTreeMap<Identifier, (Option<String>, bool)>,
    /// Each customer's last published identity record (`None`: a tombstone).
    identity: BTreeMap<String, Option<CustomerState>>,
    /// Customers erased by an erasure that waited for an answer.
    erased: Vec<String>,
    /// The customer stage's clock (unix millis): it moves only to fire timers.
    now: i64,
    /// How many offers and answers may still be lost in flight (a dead-lettered request), and
    /// the chance that the next one is.
    losses_left: usize,
    loss_chance: f64,
    lost: usize,
    /// The chance that, while requests are in flight, the clock jumps to the next pending
    /// offer's due time and the timers fire: a stage lagging behind sends copies of offers whose
    /// answers are merely on their way.
    early_timer_chance: f64,
}

impl Network {
    fn send(&mut self, effects: Vec<Effect<Payload>>) {
        for effect in effects {
            match effect {
                Effect::Claim(key, request) => {
                    self.queues.entry(Key::Claim(key)).or_default().push_back(Request::Claim(request));
                }
                Effect::Customer(id, request) => {
                    self.queues.entry(Key::Customer(id)).or_default().push_back(Request::Customer(request));
                }
                Effect::Resolved { customer_id, event } => self.resolved.push((event.payload, customer_id)),
                Effect::Merged(merge) => self.merges.push(merge),
                Effect::Conflict(conflict) => self.conflicts.push(conflict),
                Effect::Graph { identifier, owner, contested } => {
                    self.graph.insert(identifier, (owner, contested));
                }
                Effect::Identity { customer_id, state } => {
                    self.identity.insert(customer_id, state);
                }
                Effect::Erased { customer_id, .. } => self.erased.push(customer_id),
            }
        }
    }

    fn deliver(&mut self, key: &Key) {
        let request = self.queues.get_mut(key).and_then(VecDeque::pop_front).expect("a queued request");
        let effects = match (key, request) {
            (Key::Claim(identifier), Request::Claim(request)) => {
                let mut state = self.claims.remove(identifier);
                let effects = claim(identifier, &mut state, request);
                if let Some(state) = state {
                    self.claims.insert(identifier.clone(), state);
                }
                effects
            }
            (Key::Customer(id), Request::Customer(request)) => {
                let mut state = self.customers.remove(id);
                let effects = customer(&self.rules, id, &mut state, request, self.now);
                if let Some(state) = state {
                    self.customers.insert(id.clone(), state);
                }
                effects
            }
            (key, request) => panic!("{request:?} queued for {key:?}"),
        };
        self.send(effects);
    }

    /// Injects the events in the given order, interleaved at random with deliveries, and runs
    /// until every queue is empty.
    fn run(&mut self, events: &[TouchpointEvent], order: &[usize], rng: &mut ChaCha8Rng) {
        let mut pending = order.iter().copied().peekable();
        loop {
            let busy: Vec<Key> = self
                .queues
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(key, _)| key.clone())
                .collect();
            let inject = pending.peek().is_some() && (busy.is_empty() || rng.random_bool(0.3));
            if !busy.is_empty() && self.early_timer_chance > 0.0 && rng.random_bool(self.early_timer_chance) {
                self.fire_timers();
            } else if inject {
                let index = pending.next().expect("peeked");
                let routed = Routed::new(&self.rules, &events[index], index);
                let first = routed.first_stop();
                self.send(vec![first]);
            } else if let Some(key) = busy.choose(rng) {
                if self.losses_left > 0 && self.offer_or_answer_next(key) && rng.random_bool(self.loss_chance)
                {
                    self.queues.get_mut(key).and_then(VecDeque::pop_front);
                    self.losses_left -= 1;
                    self.lost += 1;
                } else {
                    self.deliver(key);
                }
            } else {
                return;
            }
        }
    }

    fn offer_or_answer_next(&self, key: &Key) -> bool {
        matches!(
            self.queues.get(key).and_then(VecDeque::front),
            Some(Request::Customer(CustomerRequest::Control(
                Control::Offer { .. } | Control::Accepted { .. } | Control::Refused { .. }
            )))
        )
    }

    /// Moves the clock to the next pending offer's due time and fires every customer's timer,
    /// then delivers what that sent, until no offer is pending.
    fn settle(&mut self, rng: &mut ChaCha8Rng) {
        // A day of resends is 29 rounds: a timer that answers nothing must fail, not hang.
        for _ in 0..1_000 {
            if !self.fire_timers() {
                return;
            }
            self.run(&[], &[], rng);
        }
        panic!("offers still pending after 1,000 rounds of timers");
    }

    /// Moves the clock to the next pending offer's due time and fires every customer's timer;
    /// `false` when no offer is pending.
    fn fire_timers(&mut self) -> bool {
        let Some(due) = self.customers.values().filter_map(offer_due).min() else { return false };
        self.now = self.now.max(due);
        for id in self.customers.keys().cloned().collect::<Vec<_>>() {
            let mut state = self.customers.remove(&id);
            let effects = customer_timer(&self.rules, &id, &mut state, self.now);
            if let Some(state) = state {
                self.customers.insert(id, state);
            }
            self.send(effects);
        }
        true
    }

    /// Follows merges from `id` to the customer it ends in.
    fn canonical(&self, id: &str) -> String {
        let mut id = id.to_owned();
        while let Some(next) = self.customers.get(&id).and_then(|state| state.merged_into.clone()) {
            id = next;
        }
        id
    }
}

fn event(index: usize, customer_id: &str, identifiers: &[Identifier]) -> TouchpointEvent {
    TouchpointEvent {
        event_id: format!("e-{index}"),
        customer_id: customer_id.to_owned(),
        occurred_at: DateTime::from_timestamp(1_795_000_000 + index as i64, 0).expect("time"),
        channel: Channel::Web,
        source: None,
        payload: EventPayload::Identify,
        context: BTreeMap::new(),
        identifiers: identifiers.to_vec(),
    }
}

fn id(kind: &str, value: &str) -> Identifier {
    Identifier::new(kind, value)
}

/// People, each with identifiers no one else has, within every limit of the default rules, and
/// events that each carry some of one person's identifiers under one of its customer ids.
fn people_and_events(rng: &mut ChaCha8Rng) -> Vec<TouchpointEvent> {
    let people: Vec<(Vec<Identifier>, Vec<String>)> = (0..rng.random_range(1..=5))
        .map(|person| {
            let mut identifiers = Vec::new();
            if rng.random_bool(0.5) {
                identifiers.push(id("user_id", &format!("U-{person}")));
            }
            if rng.random_bool(0.4) {
                identifiers.push(id("loyalty_card", &format!("L{person}")));
            }
            for n in 0..rng.random_range(0..=2) {
                identifiers.push(id("email", &format!("p{person}.{n}@example.org")));
            }
            for n in 0..rng.random_range(0..=2) {
                identifiers.push(id("phone", &format!("+4420794600{person}{n}")));
            }
            for n in 0..rng.random_range(0..=3) {
                identifiers.push(id("anonymous_id", &format!("a-{person}-{n}")));
            }
            // Customer ids sort across people in no particular order.
            let customers = (0..rng.random_range(1..=3))
                .map(|n| format!("{}-{person}{n}", ["k", "b", "x", "m"][rng.random_range(0..4)]))
                .collect();
            (identifiers, customers)
        })
        .collect();
    (0..rng.random_range(1..=25))
        .map(|index| {
            let (identifiers, customers) = &people[rng.random_range(0..people.len())];
            let carried: Vec<Identifier> =
                identifiers.iter().filter(|_| rng.random_bool(0.4)).cloned().collect();
            event(index, &customers[rng.random_range(0..customers.len())], &carried)
        })
        .collect()
}

fn check_against_model(network: &Network, events: &[TouchpointEvent], context: &str) {
    let names = Components::of(events).names();
    let name_of =
        |identifier: &Identifier| names[&format!("{}:{}", identifier.kind, identifier.value)].clone();
    assert!(network.conflicts.is_empty(), "{context}: conflicts {:?}", network.conflicts);
    // Every event published once, under a customer that ends in its component's name.
    let mut published: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, customer_id) in &network.resolved {
        published.entry(*index).or_default().push(customer_id.clone());
    }
    for (index, event) in events.iter().enumerate() {
        let under = published.get(&index).unwrap_or_else(|| panic!("{context}: event {index} lost"));
        assert_eq!(under.len(), 1, "{context}: event {index} published {under:?}");
        let expected = name_of(&id(CUSTOMER_ID, &event.customer_id));
        assert_eq!(network.canonical(&under[0]), expected, "{context}: event {index} {event:?}");
    }
    // The graph names each identifier's canonical owner directly.
    for event in events {
        for identifier in &event.identifiers {
            let (owner, contested) = network.graph.get(identifier).cloned().unwrap_or_default();
            assert_eq!(owner, Some(name_of(identifier)), "{context}: graph of {identifier:?}");
            assert!(!contested, "{context}: {identifier:?} contested");
        }
    }
    // Each canonical customer holds exactly its component's identifiers; each loser merged once.
    let mut held: BTreeMap<String, BTreeSet<Identifier>> = BTreeMap::new();
    for event in events {
        for identifier in &event.identifiers {
            held.entry(name_of(identifier)).or_default().insert(identifier.clone());
        }
    }
    for (customer_id, state) in &network.customers {
        assert!(
            state.offering.is_none() && state.deferred.is_empty(),
            "{context}: {customer_id} still waits"
        );
        let losers: BTreeSet<&String> = state.merges.iter().map(|merge| &merge.loser).collect();
        assert_eq!(losers.len(), state.merges.len(), "{context}: {customer_id} merged one twice");
        if state.merged_into.is_none() {
            let own: BTreeSet<Identifier> =
                state.identifiers.keys().filter(|i| i.kind != CUSTOMER_ID).cloned().collect();
            assert_eq!(own, held.remove(customer_id).unwrap_or_default(), "{context}: {customer_id} holds");
        }
    }
    assert!(held.is_empty(), "{context}: no live customer holds {held:?}");
    // What `customer.identity.v1` shows of each customer is its state.
    let ids: BTreeSet<&String> = network.customers.keys().chain(network.identity.keys()).collect();
    for id in ids {
        let shown = network
            .identity
            .get(id)
            .cloned()
            .flatten()
            .map(|state| (state.identifiers, state.merged_into, state.merges));
        let held = network
            .customers
            .get(id)
            .cloned()
            .map(|state| (state.identifiers, state.merged_into, state.merges));
        assert_eq!(shown, held, "{context}: the identity record of {id}");
    }
    let losers: Vec<&String> = network.merges.iter().map(|merge| &merge.loser).collect();
    let unique: BTreeSet<&String> = losers.iter().copied().collect();
    assert_eq!(losers.len(), unique.len(), "{context}: a customer merged twice: {losers:?}");
    for merge in &network.merges {
        assert!(merge.winner < merge.loser, "{context}: {merge:?}");
    }
}

#[test]
fn given_linked_events_in_any_arrival_order_then_resolution_matches_the_components_of_their_identifiers() {
    for seed in 0..400 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let events = people_and_events(&mut rng);
        let mut outcomes = Vec::new();
        for permutation in 0..4 {
            let mut order: Vec<usize> = (0..events.len()).collect();
            order.shuffle(&mut rng);
            let mut network = Network::default();
            network.run(&events, &order, &mut rng);
            check_against_model(&network, &events, &format!("seed {seed} permutation {permutation}"));
            outcomes.push((network.graph.clone(), network.canonical_of_all()));
        }
        assert!(outcomes.windows(2).all(|pair| pair[0] == pair[1]), "seed {seed}: outcomes differ");
    }
}

#[test]
fn given_offers_and_answers_lost_or_copied_in_flight_then_resent_offers_still_resolve_to_the_components() {
    let mut lost = 0;
    for seed in 0..300 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let events = people_and_events(&mut rng);
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.shuffle(&mut rng);
        let mut network =
            Network { losses_left: 4, loss_chance: 0.5, early_timer_chance: 0.05, ..Network::default() };
        network.run(&events, &order, &mut rng);
        network.settle(&mut rng);
        check_against_model(&network, &events, &format!("seed {seed}, {} lost", network.lost));
        lost += network.lost;
    }
    assert!(lost > 100, "the test loses requests: {lost}");
}

/// Runs `events[0]` (b-anon's), then `events[1]` (a-user's, linking b-anon's identifier) until
/// a-user accepted b-anon's offer, and takes the acceptance out of b-anon's queue.
fn held_acceptance(network: &mut Network, events: &[TouchpointEvent]) -> Request {
    run_to_end(network, events, &[0]);
    network.send(vec![Routed::new(&network.rules, &events[1], 1).first_stop()]);
    while network.customers.get("a-user").is_none_or(|c| c.merges.is_empty()) {
        let key = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()).expect("busy");
        network.deliver(&key);
    }
    let answer = network.queues.get_mut(&Key::Customer("b-anon".into())).and_then(VecDeque::pop_front);
    match answer {
        Some(answer @ Request::Customer(CustomerRequest::Control(Control::Accepted { .. }))) => answer,
        other => panic!("not the acceptance: {other:?}"),
    }
}

#[test]
fn given_an_offer_whose_answer_was_lost_when_it_is_sent_again_then_the_same_merge_is_answered_once_more() {
    let events = [
        event(0, "b-anon", &[id("anonymous_id", "a1")]),
        event(1, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]),
    ];
    let mut network = Network::default();
    // a-user accepted; lose the answer.
    held_acceptance(&mut network, &events);
    run_to_end(&mut network, &events, &[]);
    let due = offer_due(&network.customers["b-anon"]).expect("b-anon waits for its answer");
    // Not before it is due.
    let mut state = network.customers.remove("b-anon");
    assert!(customer_timer::<Payload>(&network.rules, "b-anon", &mut state, due - 1).is_empty());
    network.customers.insert("b-anon".into(), state.expect("kept"));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    network.settle(&mut rng);
    assert_eq!(network.merges.len(), 1, "{:?}", network.merges);
    assert_eq!(network.customers["a-user"].merges.len(), 1);
    assert_eq!(network.customers["b-anon"].merged_into.as_deref(), Some("a-user"));
    check_against_model(&network, &events, "the answer lost once");
}

#[test]
fn given_a_pending_offer_when_a_refusal_of_another_offer_arrives_then_only_the_refusal_of_this_one_ends_it() {
    let events = [
        event(0, "b-anon", &[id("anonymous_id", "a1")]),
        event(1, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]),
    ];
    let mut network = Network::default();
    // b-anon offered itself to a-user; a-user's acceptance is held back.
    held_acceptance(&mut network, &events);
    let pending = network.customers["b-anon"].offer.clone().expect("b-anon waits for its answer");
    let now = pending.sent_at + 1;
    let refusal = |evidence| CustomerRequest::Control(Control::Refused { by: "a-user".into(), evidence });
    // The answer to a copy of an offer answered or given up before: stale.
    let stale = Evidence { event_id: "e-earlier".into(), ..pending.evidence.clone() };
    let mut state = network.customers.remove("b-anon");
    let effects = customer::<Payload>(&network.rules, "b-anon", &mut state, refusal(stale), now);
    assert!(effects.is_empty(), "{effects:?}");
    let kept = state.as_ref().expect("b-anon is kept");
    assert_eq!((kept.offering.as_deref(), kept.offer.as_ref()), (Some("a-user"), Some(&pending)));
    // The refusal of the pending offer ends it.
    customer::<Payload>(&network.rules, "b-anon", &mut state, refusal(pending.evidence.clone()), now);
    assert!(state.as_ref().is_none_or(|state| state.offering.is_none() && state.offer.is_none()));
}

#[test]
fn given_a_copy_of_an_accepted_offer_reaching_a_winner_merged_since_then_it_answers_itself_and_nothing_merges_twice()
 {
    let events = [
        event(0, "b-anon", &[id("anonymous_id", "a1")]),
        event(1, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]),
        // Then a-user is merged into 0-x (a smaller id) through the user id.
        event(2, "0-x", &[id("user_id", "U-1")]),
    ];
    let mut network = Network::default();
    // a-user accepted; the answer is on its way (held here) while a-user merges into 0-x.
    let answer = held_acceptance(&mut network, &events);
    let b_anon = Key::Customer("b-anon".into());
    run_to_end(&mut network, &events, &[2]);
    assert_eq!(network.customers["a-user"].merged_into.as_deref(), Some("0-x"));
    // b-anon's timer sends its offer again; then the first answer arrives too.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    assert!(network.fire_timers());
    network.run(&[], &[], &mut rng);
    network.queues.entry(b_anon).or_default().push_back(answer);
    network.run(&[], &[], &mut rng);
    assert!(
        network.customers["0-x"].merges.iter().all(|merge| merge.loser != "b-anon"),
        "0-x merged b-anon a second time: {:?}",
        network.customers["0-x"].merges
    );
    assert_eq!(network.customers["b-anon"].merged_into.as_deref(), Some("a-user"));
    check_against_model(&network, &events, "a copy reaching a merged winner");
}

#[test]
fn given_an_offer_given_up_when_its_acceptance_comes_late_then_what_the_sender_linked_since_goes_to_the_winner()
 {
    let events = [
        event(0, "b-anon", &[id("anonymous_id", "a1")]),
        event(1, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]),
        event(2, "b-anon", &[id("email", "b@example.org")]),
    ];
    let mut network = Network::default();
    run_to_end(&mut network, &events, &[0]);
    network.send(vec![Routed::new(&network.rules, &events[1], 1).first_stop()]);
    let a_user = Key::Customer("a-user".into());
    let offer = loop {
        let offered = matches!(
            network.queues.get(&a_user).and_then(VecDeque::front),
            Some(Request::Customer(CustomerRequest::Control(Control::Offer { .. })))
        );
        if offered {
            break network.queues.get_mut(&a_user).and_then(VecDeque::pop_front).expect("the offer");
        }
        let key = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()).expect("busy");
        network.deliver(&key);
    };
    // Every copy lost for a day: given up. Then b-anon links an email.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    network.losses_left = usize::MAX;
    network.loss_chance = 1.0;
    network.run(&[], &[], &mut rng);
    network.settle(&mut rng);
    network.losses_left = 0;
    assert_eq!(network.conflicts.len(), 1, "given up: {:?}", network.conflicts);
    run_to_end(&mut network, &events, &[2]);
    assert!(network.customers["b-anon"].identifiers.contains_key(&id("email", "b@example.org")));
    // The first offer arrives at last, a day late.
    network.queues.entry(a_user).or_default().push_back(offer);
    network.run(&[], &[], &mut rng);
    assert_eq!(network.customers["b-anon"].merged_into.as_deref(), Some("a-user"));
    let a_user = &network.customers["a-user"];
    assert!(a_user.identifiers.contains_key(&id("email", "b@example.org")), "{:?}", a_user.identifiers);
    assert_eq!(network.graph[&id("email", "b@example.org")], (Some("a-user".to_owned()), false));
}

#[test]
fn given_a_winner_erased_between_two_copies_of_an_accepted_offer_then_the_second_is_refused_and_nothing_comes_back()
 {
    let events = [
        at_second(event(0, "b-anon", &[id("anonymous_id", "a1")]), 0),
        at_second(event(1, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]), 100),
        // Dated before the link: the link's copies are not refused for being older.
        at_second(erasure(2, "a-user"), 90),
    ];
    let mut network = Network::default();
    // The acceptance on its way, b-anon's timer sends a copy; a-user's erasure goes first.
    let answer = held_acceptance(&mut network, &events);
    let b_anon = Key::Customer("b-anon".into());
    assert!(network.fire_timers());
    network.send(vec![Routed::new(&network.rules, &events[2], 2).first_stop()]);
    let a_user = Key::Customer("a-user".into());
    let erasure_request = network.queues.get_mut(&a_user).and_then(VecDeque::pop_back).expect("erasure");
    network.queues.get_mut(&a_user).expect("queue").push_front(erasure_request);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    network.run(&[], &[], &mut rng);
    network.queues.entry(b_anon).or_default().push_back(answer);
    network.run(&[], &[], &mut rng);
    assert!(network.conflicts.is_empty(), "{:?}", network.conflicts);
    let all = [id("anonymous_id", "a1"), id("user_id", "U-1"), id(CUSTOMER_ID, "b-anon")];
    let left = remembered(&network, &all, &["a-user", "b-anon"]);
    assert!(left.is_empty(), "the copy brought back: {left:#?}");
    assert!(network.merges.is_empty(), "the erased b-anon merged late: {:?}", network.merges);
}

#[test]
fn given_every_offer_lost_then_it_is_given_up_after_a_day_with_a_conflict_and_the_deferred_requests_go_on() {
    let events = [
        event(0, "b-anon", &[id("anonymous_id", "a1")]),
        event(1, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]),
        // Waits behind b-anon's offer: a new identifier for b-anon.
        event(2, "b-anon", &[id("email", "b@example.org")]),
    ];
    let mut network = Network { losses_left: usize::MAX, loss_chance: 1.0, ..Network::default() };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    network.run(&events, &[0, 1, 2], &mut rng);
    let b_anon = &network.customers["b-anon"];
    assert_eq!(b_anon.offering.as_deref(), Some("a-user"));
    assert_eq!(b_anon.deferred.len(), 1, "the email's attachment waits: {:?}", b_anon.deferred);
    let sent_at = network.now;
    network.settle(&mut rng);
    // Sent at 0, again after 1, 2, 4, 8, 16, 32 minutes, then hourly: the day is up at 24 h.
    assert_eq!(network.now - sent_at, OFFER_GIVEN_UP_AFTER_MILLIS + 3 * 60_000, "given up when");
    assert_eq!(network.lost, 1 + 6 + 22, "offers lost");
    let [conflict] = network.conflicts.as_slice() else { panic!("{:?}", network.conflicts) };
    assert_eq!((conflict.customer_id.as_str(), conflict.other.as_deref()), ("b-anon", Some("a-user")));
    assert_eq!(
        conflict.refusal.to_string(),
        "no answer to 29 offers to merge over a day: the two stay apart"
    );
    let b_anon = &network.customers["b-anon"];
    assert_eq!(
        (b_anon.offering.as_ref(), b_anon.offer.as_ref(), b_anon.merged_into.as_ref()),
        (None, None, None)
    );
    assert!(b_anon.deferred.is_empty());
    assert!(b_anon.identifiers.contains_key(&id("email", "b@example.org")), "{:?}", b_anon.identifiers);
    assert_eq!(
        network.identity["b-anon"].as_ref().map(|shown| shown.identifiers.len()),
        Some(b_anon.identifiers.len()),
        "the identity record shows the attachment taken up"
    );
}

impl Network {
    fn canonical_of_all(&self) -> BTreeMap<String, String> {
        self.customers.keys().map(|id| (id.clone(), self.canonical(id))).collect()
    }
}

/// Runs `events` in each of the given orders (fully delivered one after another) and returns the
/// networks.
fn each_order(events: &[TouchpointEvent], orders: &[&[usize]]) -> Vec<Network> {
    orders
        .iter()
        .map(|order| {
            let mut network = Network::default();
            for index in *order {
                let routed = Routed::new(&network.rules, &events[*index], *index);
                network.send(vec![routed.first_stop()]);
                while let Some(key) =
                    network.queues.iter().find(|(_, queue)| !queue.is_empty()).map(|(key, _)| key.clone())
                {
                    network.deliver(&key);
                }
            }
            network
        })
        .collect()
}

#[test]
fn given_an_anonymous_visitor_who_logs_in_and_buys_in_store_with_a_card_on_the_same_email_then_one_customer()
{
    let events = [
        event(0, "anon-7f3a", &[id("anonymous_id", "7f3a")]),
        event(
            1,
            "U-1042",
            &[id("anonymous_id", "7f3a"), id("user_id", "U-1042"), id("email", "ann@example.com")],
        ),
        event(2, "card-55", &[id("loyalty_card", "55"), id("email", "ann@example.com")]),
    ];
    for network in each_order(&events, &[&[0, 1, 2], &[2, 1, 0], &[1, 2, 0]]) {
        let customers: BTreeSet<String> =
            network.resolved.iter().map(|(_, c)| network.canonical(c)).collect();
        assert_eq!(customers, BTreeSet::from(["U-1042".to_owned()]));
        let live = &network.customers["U-1042"];
        assert!(live.identifiers.contains_key(&id("loyalty_card", "55")), "{:?}", live.identifiers);
        assert_eq!(network.merges.len(), 2, "{:?}", network.merges);
    }
}

#[test]
fn given_a_family_email_on_two_card_holders_then_they_stay_apart_and_the_link_is_a_conflict_in_either_order()
{
    let events = [
        event(0, "card-1", &[id("loyalty_card", "1"), id("email", "family@example.com")]),
        event(1, "card-2", &[id("loyalty_card", "2"), id("email", "family@example.com")]),
        // After the conflict, the shared email links nothing: a newsletter sign-up stays its own.
        event(2, "news-9", &[id("email", "family@example.com")]),
    ];
    let networks = each_order(&events, &[&[0, 1, 2], &[1, 0, 2]]);
    for network in &networks {
        assert!(network.merges.is_empty(), "{:?}", network.merges);
        assert_eq!(network.conflicts.len(), 1, "{:?}", network.conflicts);
        let conflict = &network.conflicts[0];
        assert_eq!((conflict.customer_id.as_str(), conflict.other.as_deref()), ("card-1", Some("card-2")));
        let reason = conflict.refusal.to_string();
        assert!(reason.contains("loyalty_card"), "{reason}");
        assert_eq!(network.graph[&id("email", "family@example.com")], (None, true));
        assert!(
            network
                .customers
                .values()
                .all(|c| !c.identifiers.contains_key(&id("email", "family@example.com")))
        );
        let under: Vec<&str> = network.resolved.iter().map(|(_, c)| c.as_str()).collect();
        assert!(under.contains(&"news-9"), "{under:?}");
    }
    assert_eq!(networks[0].graph, networks[1].graph);
    // Offers sent again while their answers are on their way, some lost: the same one conflict.
    for seed in 0..100 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Half the seeds lose nothing: both copies of an offer arrive.
        let losses_left = if seed % 2 == 0 { 0 } else { 2 };
        let mut network =
            Network { losses_left, loss_chance: 0.5, early_timer_chance: 0.3, ..Network::default() };
        let mut order = vec![0, 1];
        order.shuffle(&mut rng);
        order.push(2);
        // Each event and what it leads to, lost requests sent again included, before the next.
        for index in order {
            network.run(&events, &[index], &mut rng);
            network.settle(&mut rng);
        }
        assert!(network.merges.is_empty(), "seed {seed}: {:?}", network.merges);
        assert_eq!(network.conflicts.len(), 1, "seed {seed}: {:?}", network.conflicts);
        assert_eq!(network.graph, networks[0].graph, "seed {seed}");
        assert!(network.customers.values().all(|c| c.offering.is_none() && c.deferred.is_empty()));
    }
}

#[test]
fn given_a_blocked_value_on_two_customers_then_it_links_nothing() {
    let events = [
        event(0, "c-1", &[id("email", "test@example.com")]),
        event(1, "c-2", &[id("email", "test@example.com"), id("user_id", "null")]),
    ];
    let network = &each_order(&events, &[&[0, 1]])[0];
    assert!(network.merges.is_empty() && network.conflicts.is_empty() && network.graph.is_empty());
    let under: BTreeSet<&str> = network.resolved.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(under, BTreeSet::from(["c-1", "c-2"]));
}

#[test]
fn given_a_customer_at_its_email_limit_when_a_sixth_email_arrives_then_it_is_released_with_a_conflict() {
    let emails: Vec<Identifier> = (0..6).map(|n| id("email", &format!("e{n}@example.com"))).collect();
    let events: Vec<TouchpointEvent> = emails
        .iter()
        .enumerate()
        .map(|(n, email)| event(n, "U-1", &[id("user_id", "U-1"), email.clone()]))
        .collect();
    let network = &each_order(&events, &[&[0, 1, 2, 3, 4, 5]])[0];
    assert_eq!(network.conflicts.len(), 1, "{:?}", network.conflicts);
    let reason = network.conflicts[0].refusal.to_string();
    assert!(reason.contains("limit of 5"), "{reason}");
    assert_eq!(network.graph[&emails[5]], (None, false));
    assert_eq!(network.customers["U-1"].identifiers.len(), 6, "user_id and five emails");
}

#[test]
fn given_two_customers_with_different_user_ids_on_one_phone_then_never_merged() {
    let events = [
        event(0, "c-a", &[id("user_id", "U-1"), id("phone", "+14155550100")]),
        event(1, "c-b", &[id("user_id", "U-2"), id("phone", "+14155550100")]),
        event(2, "c-c", &[id("user_id", "U-2"), id("anonymous_id", "z")]),
    ];
    for network in each_order(&events, &[&[0, 1, 2], &[2, 1, 0]]) {
        assert!(network.merges.iter().all(|merge| merge.winner != "c-a"), "{:?}", network.merges);
        assert_eq!(network.canonical("c-c"), "c-b");
        assert_eq!(network.canonical("c-a"), "c-a");
    }
}

#[test]
fn given_a_tills_shared_guest_id_with_customers_emails_then_guest_claims_nothing_and_no_two_people_merge() {
    let events = [
        event(0, "guest", &[id("email", "ann@example.org")]),
        event(1, "guest", &[id("email", "bob@example.org")]),
        event(2, "c-ann", &[id("email", "ann@example.org")]),
        event(3, "guest", &[]),
        event(4, "c-bob", &[id("email", "bob@example.org")]),
    ];
    for network in each_order(&events, &[&[0, 1, 2, 3, 4], &[4, 3, 2, 1, 0]]) {
        assert!(network.merges.iter().all(|merge| merge.loser != "guest" && merge.winner != "guest"));
        assert_ne!(network.canonical("c-ann"), network.canonical("c-bob"), "{:?}", network.merges);
        let under = |index: usize| {
            let (_, customer) = network.resolved.iter().find(|(i, _)| *i == index).expect("published");
            network.canonical(customer)
        };
        assert_eq!(under(0), "c-ann");
        assert_eq!(under(1), "c-bob");
        assert_eq!(under(3), "guest", "an anonymous till event stays the till's");
    }
}

#[test]
fn given_a_refused_link_through_a_customers_own_id_then_that_id_still_links_later() {
    let events = [
        event(0, "c-a", &[id("user_id", "U-1")]),
        event(1, "c-b", &[id("user_id", "U-2")]),
        event(2, "c-z", &[id("email", "z@example.org")]),
        // c-b's producer says it is U-1 too: refused (two user ids), a conflict.
        event(3, "c-b", &[id("user_id", "U-1")]),
        event(4, "c-b", &[id("email", "z@example.org")]),
    ];
    for network in each_order(&events, &[&[0, 1, 2, 3, 4], &[0, 1, 2, 4, 3]]) {
        assert_eq!(network.conflicts.len(), 1, "{:?}", network.conflicts);
        assert_eq!(network.canonical("c-z"), "c-b", "{:?}", network.merges);
        assert_eq!(network.canonical("c-a"), "c-a");
    }
}

fn erasure(index: usize, customer_id: &str) -> TouchpointEvent {
    TouchpointEvent { payload: EventPayload::ErasureRequested, ..event(index, customer_id, &[]) }
}

/// Everything the network remembers of `identifiers` and `customers`.
fn remembered(network: &Network, identifiers: &[Identifier], customers: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    for identifier in identifiers {
        if let Some(state) = network.claims.get(identifier) {
            left.push(format!("claim {identifier:?}: {state:?}"));
        }
    }
    for customer in customers {
        // When it was erased, and the fingerprints of offers it answered (no id), is all an
        // erased id may keep (until the horizon).
        let forgotten = |state: &CustomerState| {
            CustomerState { erased_at: None, refused: Vec::new(), ..state.clone() }
                == CustomerState::default()
        };
        if let Some(state) = network.customers.get(*customer).filter(|state| !forgotten(state)) {
            left.push(format!("customer {customer}: {state:?}"));
        }
        if let Some(Some(record)) = network.identity.get(*customer) {
            left.push(format!("identity record of {customer}: {record:?}"));
        }
    }
    left
}

#[test]
fn given_a_merged_customer_when_an_alias_asks_for_erasure_then_every_identifier_and_alias_is_forgotten() {
    let anne = [
        id("anonymous_id", "7f3a"),
        id("user_id", "U-1042"),
        id("email", "ann@example.com"),
        id("loyalty_card", "55"),
    ];
    let events = [
        event(0, "anon-7f3a", &[anne[0].clone()]),
        event(1, "U-1042", &[anne[0].clone(), anne[1].clone(), anne[2].clone()]),
        event(2, "card-55", &[anne[3].clone(), anne[2].clone()]),
        // Someone else, who must be untouched.
        event(3, "bob", &[id("email", "bob@example.com")]),
        // The erasure names the store's id, merged away by now.
        erasure(4, "card-55"),
    ];
    for network in each_order(&events, &[&[0, 1, 2, 3, 4], &[2, 3, 1, 0, 4]]) {
        let mut all: Vec<Identifier> = anne.to_vec();
        all.extend(["anon-7f3a", "U-1042", "card-55"].map(|c| id(CUSTOMER_ID, c)));
        let left = remembered(&network, &all, &["anon-7f3a", "U-1042", "card-55"]);
        assert!(left.is_empty(), "remembered after the erasure: {left:#?}");
        // The services were told under the canonical id, once.
        let told: Vec<&String> =
            network.resolved.iter().filter(|(index, _)| *index == 4).map(|(_, c)| c).collect();
        assert_eq!(told, [&"U-1042".to_owned()]);
        // The merged ids' services are told too (their late events dropped, `erased` answered).
        let mut purged = network.erased.clone();
        purged.sort();
        assert_eq!(purged, ["anon-7f3a", "card-55"]);
        assert!(network.claims.contains_key(&id("email", "bob@example.com")), "bob is untouched");
        assert!(network.identity.get("bob").is_some_and(Option::is_some));
    }
    // After it, the same cookie starts a new customer of its own.
    let mut network = each_order(&events, &[&[0, 1, 2, 3, 4]]).remove(0);
    let again = event(5, "anon-new", &[anne[0].clone()]);
    network.send(vec![Routed::new(&network.rules, &again, 5).first_stop()]);
    while let Some(key) = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()) {
        network.deliver(&key);
    }
    assert_eq!(network.resolved.last(), Some(&(5, "anon-new".to_owned())));
}

#[test]
fn given_an_erasure_while_the_customer_offers_itself_then_it_waits_and_the_winner_is_erased() {
    let events = [
        event(0, "b-anon", &[id("anonymous_id", "a1")]),
        event(1, "a-user", &[id("user_id", "U-1")]),
        // Links b-anon to a-user: b-anon (the larger id) offers itself.
        event(2, "a-user", &[id("user_id", "U-1"), id("anonymous_id", "a1")]),
        erasure(3, "b-anon"),
    ];
    let mut network = Network::default();
    for index in [0, 1] {
        network.send(vec![Routed::new(&network.rules, &events[index], index).first_stop()]);
        while let Some(key) = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()) {
            network.deliver(&key);
        }
    }
    network.send(vec![Routed::new(&network.rules, &events[2], 2).first_stop()]);
    // Deliver until b-anon has offered itself, then let the erasure reach it before the answer.
    while network.customers.get("b-anon").is_none_or(|c| c.offering.is_none()) {
        let key = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()).expect("busy");
        network.deliver(&key);
    }
    network.send(vec![Routed::new(&network.rules, &events[3], 3).first_stop()]);
    let b_anon = Key::Customer("b-anon".into());
    while network.queues.get(&b_anon).is_none_or(VecDeque::is_empty)
        || !matches!(network.queues[&b_anon].back(), Some(Request::Customer(CustomerRequest::Event(_))))
    {
        let key = network
            .queues
            .iter()
            .find(|(k, q)| !q.is_empty() && **k != b_anon && **k != Key::Customer("a-user".into()))
            .map(|(k, _)| k.clone())
            .expect("the erasure on its way");
        network.deliver(&key);
    }
    // The erasure first, then the offer's answer.
    let erasure_request = network.queues.get_mut(&b_anon).and_then(VecDeque::pop_back).expect("erasure");
    network.queues.get_mut(&b_anon).expect("queue").push_front(erasure_request);
    while let Some(key) = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()) {
        network.deliver(&key);
    }
    // b-anon's services erased it at once; once merged, the person is a-user: erased too, and
    // b-anon, merged into it, purged (its services mark it erased again).
    assert_eq!(network.resolved.iter().find(|(index, _)| *index == 3), Some(&(3, "b-anon".to_owned())));
    assert_eq!(network.erased, ["a-user", "b-anon"]);
    let all = [id("anonymous_id", "a1"), id("user_id", "U-1"), id(CUSTOMER_ID, "b-anon")];
    let left = remembered(&network, &all, &["a-user", "b-anon"]);
    assert!(left.is_empty(), "remembered after the erasure: {left:#?}");
}

fn run_to_end(network: &mut Network, events: &[TouchpointEvent], indices: &[usize]) {
    for index in indices {
        network.send(vec![Routed::new(&network.rules, &events[*index], *index).first_stop()]);
        while let Some(key) = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()) {
            network.deliver(&key);
        }
    }
}

fn at_second(mut event: TouchpointEvent, second: i64) -> TouchpointEvent {
    event.occurred_at = DateTime::from_timestamp(1_795_000_000 + second, 0).expect("time");
    event
}

#[test]
fn given_an_erasure_carrying_identifiers_then_they_are_not_linked_to_the_erased_id_afterwards() {
    let carried = [id("email", "e1@example.com"), id("phone", "+14155550199"), id("anonymous_id", "c-9")];
    let events = [
        event(0, "E1", &[]),
        TouchpointEvent { payload: EventPayload::ErasureRequested, ..event(1, "E1", &carried) },
    ];
    let mut network = Network::default();
    run_to_end(&mut network, &events, &[0, 1]);
    let left = remembered(&network, &carried, &["E1"]);
    assert!(left.is_empty(), "linked by the erasure itself: {left:#?}");
    assert_eq!(network.identity.get("E1").cloned().flatten(), None, "no identity record");
}

#[test]
fn given_an_erased_customer_when_a_late_event_from_before_the_erasure_arrives_then_it_links_nothing() {
    let events = [
        event(0, "U-1", &[id("user_id", "U-1"), id("anonymous_id", "7f3a")]),
        erasure(5, "U-1"),
        // Dated before the erasure, sent after it: the old cookie and an email never seen.
        at_second(event(6, "U-1", &[id("anonymous_id", "7f3a"), id("email", "late@example.com")]), 2),
    ];
    let mut network = Network::default();
    run_to_end(&mut network, &events, &[0, 1, 2]);
    let all = [id("user_id", "U-1"), id("anonymous_id", "7f3a"), id("email", "late@example.com")];
    let left = remembered(&network, &all, &["U-1"]);
    assert!(left.is_empty(), "re-linked to the erased id: {left:#?}");
    assert!(network.resolved.iter().all(|(index, _)| *index != 2), "the late event is not published");
    // An event after the erasure is a new life of the id: linked as usual.
    let after = at_second(event(7, "U-1", &[id("email", "new@example.com")]), 9);
    let mut events = events.to_vec();
    events.push(after);
    run_to_end(&mut network, &events, &[3]);
    assert!(network.customers["U-1"].identifiers.contains_key(&id("email", "new@example.com")));
}

#[test]
fn given_a_merge_offer_that_reaches_a_customer_erased_meanwhile_then_it_is_refused_without_a_conflict() {
    let events = [
        event(0, "A-w", &[id("user_id", "U-w")]),
        event(1, "B-l", &[id("anonymous_id", "c-l")]),
        // Links B-l to A-w (B-l offers itself), and, a moment later, A-w asks to be erased.
        event(2, "B-l", &[id("user_id", "U-w"), id("anonymous_id", "c-l")]),
        erasure(3, "A-w"),
    ];
    let mut network = Network::default();
    run_to_end(&mut network, &events, &[0, 1]);
    for index in [2, 3] {
        network.send(vec![Routed::new(&network.rules, &events[index], index).first_stop()]);
    }
    // A-w's queue gets the erasure (straight: it carries only its own id), the link event, then
    // B-l's offer.
    for key in
        [Key::Claim(id("user_id", "U-w")), Key::Claim(id("anonymous_id", "c-l")), Key::Customer("B-l".into())]
    {
        network.deliver(&key);
    }
    let queued: Vec<&Request> = network.queues[&Key::Customer("A-w".into())].iter().collect();
    assert!(
        matches!(
            queued[..],
            [
                Request::Customer(CustomerRequest::Event(_)),
                Request::Customer(CustomerRequest::Event(_)),
                Request::Customer(CustomerRequest::Control(Control::Offer { .. }))
            ]
        ),
        "{queued:?}"
    );
    while let Some(key) = network.queues.iter().find(|(_, q)| !q.is_empty()).map(|(k, _)| k.clone()) {
        network.deliver(&key);
    }
    assert!(
        network.merges.is_empty() && network.conflicts.is_empty(),
        "{:?} {:?}",
        network.merges,
        network.conflicts
    );
    let b_l = &network.customers["B-l"];
    assert_eq!((b_l.merged_into.as_ref(), b_l.offering.as_ref()), (None, None), "B-l stays itself");
    let left = remembered(&network, &[id("user_id", "U-w")], &["A-w"]);
    assert!(left.is_empty(), "{left:#?}");
}
