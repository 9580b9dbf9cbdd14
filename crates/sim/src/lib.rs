//! A deterministic simulator of omnichannel customer journeys. For a seed and a start time it
//! yields the same sequence every time: browsing, orders in store and online, refunds, campaigns
//! sent/delivered/opened/clicked, inbound WhatsApp, support tickets opened and resolved, consent
//! changes, bounces and spam reports, trait updates, loyalty redemptions and adjustments, and rare
//! erasures: every channel and event type of SPEC 2. A configurable share of records are producer
//! retries (same `event_id`) and malformed records.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use omnistream_model::{
    Channel, CodecError, EventPayload, Identifier, Purpose, TouchpointEvent, TraitValue, encode_event,
    event_to_json, identifiers,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub customers: u32,
    pub seed: u64,
    /// Event time of the first event.
    pub start: DateTime<Utc>,
    /// Event time between consecutive records.
    pub step: Duration,
    /// Share of records that repeat the previous event (a producer retry, same `event_id`).
    pub duplicate_share: f64,
    /// Share of records that are malformed.
    pub malformed_share: f64,
}

/// How a record is broken, so each sink can render it in its own form.
#[derive(Debug, Clone, PartialEq)]
pub enum Malformed {
    /// Bytes that are no Avro and no JSON at all.
    Garbage(Vec<u8>),
    /// A well-formed event that breaks a validation rule (e.g. a negative amount).
    Invalid(TouchpointEvent),
    /// An event whose type no version of the schema knows (rendered as JSON or as a foreign
    /// fingerprint).
    UnknownType(TouchpointEvent),
}

/// One record the simulator emits.
#[derive(Debug, Clone, PartialEq)]
pub enum SimRecord {
    Event(TouchpointEvent),
    /// The previous event again (a producer retry).
    Duplicate(TouchpointEvent),
    Malformed {
        customer_id: String,
        kind: Malformed,
    },
}

impl SimRecord {
    /// The Kafka key: the customer id.
    pub fn customer_id(&self) -> &str {
        match self {
            SimRecord::Event(event) | SimRecord::Duplicate(event) => &event.customer_id,
            SimRecord::Malformed { customer_id, .. } => customer_id,
        }
    }

    /// The record as it travels on the events topic; malformed ones as a faulty producer sends them.
    pub fn to_avro_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(match self {
            SimRecord::Event(event) | SimRecord::Duplicate(event) => encode_event(event)?,
            SimRecord::Malformed { kind: Malformed::Garbage(bytes), .. } => bytes.clone(),
            SimRecord::Malformed { kind: Malformed::Invalid(event), .. } => encode_event(event)?,
            SimRecord::Malformed { kind: Malformed::UnknownType(event), .. } => {
                unknown_type_json(event).to_string().into_bytes()
            }
        })
    }

    /// The record as one line of JSON (gateway, files); malformed ones broken the same ways.
    pub fn to_json_line(&self) -> String {
        match self {
            SimRecord::Event(event) | SimRecord::Duplicate(event) => event_to_json(event).to_string(),
            SimRecord::Malformed { kind: Malformed::Garbage(bytes), .. } => {
                format!("{{\"garbage\": {}", String::from_utf8_lossy(bytes).escape_debug())
            }
            SimRecord::Malformed { kind: Malformed::Invalid(event), .. } => event_to_json(event).to_string(),
            SimRecord::Malformed { kind: Malformed::UnknownType(event), .. } => {
                unknown_type_json(event).to_string()
            }
        }
    }
}

fn unknown_type_json(event: &TouchpointEvent) -> serde_json::Value {
    let mut value = event_to_json(event);
    value["type"] = serde_json::json!("hologram_viewed");
    value
}

/// What the simulator knows of one customer, so journeys make sense (refunds of real orders,
/// resolving open tickets, opens after sends).
#[derive(Debug, Clone, Default)]
struct Customer {
    /// Engagement probability per messaging channel: each customer has favourites.
    engagement: BTreeMap<Channel, f64>,
    orders: Vec<(String, i64, String)>,
    open_tickets: Vec<String>,
    messages: u32,
    counter: u32,
}

/// The generator; an iterator of [`SimRecord`]s.
#[derive(Debug)]
pub struct Simulator {
    config: SimConfig,
    rng: ChaCha8Rng,
    customers: Vec<Customer>,
    pending: VecDeque<TouchpointEvent>,
    last: Option<TouchpointEvent>,
    emitted: u64,
    /// With [`Simulator::covering_every_customer`]: the next customer whose first journey has
    /// not been planned yet.
    unvisited: Option<u32>,
}

const CURRENCIES: &[&str] = &["EUR", "EUR", "EUR", "USD", "GBP"];
const TIMEZONES: &[&str] = &["Europe/Berlin", "Europe/London", "America/New_York", "Asia/Tokyo", "UTC"];

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        assert!(config.customers > 0, "at least one customer");
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let customers = (0..config.customers)
            .map(|_| Customer {
                engagement: Channel::MESSAGING.iter().map(|&c| (c, rng.random::<f64>().powi(2))).collect(),
                ..Customer::default()
            })
            .collect();
        Self { config, rng, customers, pending: VecDeque::new(), last: None, emitted: 0, unvisited: None }
    }

    /// Plans a journey for each customer in turn before any random one, so that a run of
    /// `customers` journeys or more reaches every customer (random picks reach about 63 % of
    /// them in as many journeys): for measuring state at a given number of customers.
    pub fn covering_every_customer(mut self) -> Self {
        self.unvisited = Some(0);
        self
    }

    /// The customer id of customer number `index`.
    pub fn customer_id(index: u32) -> String {
        format!("c-{index:06}")
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.start + self.config.step * i32::try_from(self.emitted).unwrap_or(i32::MAX)
    }

    fn event_id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid().to_string()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    /// Queues the next journey of a random customer.
    fn plan_journey(&mut self) {
        let index = match self.unvisited {
            Some(next) if next < self.config.customers => {
                self.unvisited = Some(next + 1);
                next
            }
            _ => self.rng.random_range(0..self.config.customers),
        };
        let customer_id = Self::customer_id(index);
        let mut journey: Vec<(Channel, EventPayload)> = Vec::new();
        let mut identifiers = Vec::new();
        let roll: f64 = self.rng.random();
        let customer = &self.customers[index as usize];
        let has_orders = !customer.orders.is_empty();
        let has_tickets = !customer.open_tickets.is_empty();
        match roll {
            r if r < 0.25 => self.browse(index, &mut journey),
            r if r < 0.37 => self.order(index, &mut journey),
            r if r < 0.62 => self.campaign(index, &mut journey),
            r if r < 0.67 => self.inbound(&mut journey),
            r if r < 0.71 && has_tickets => self.resolve_ticket(index, &mut journey),
            r if r < 0.74 => self.open_ticket(index, &mut journey),
            r if r < 0.78 => self.consent(&mut journey),
            r if r < 0.83 => self.traits(index, &mut journey),
            r if r < 0.86 && has_orders => self.refund(index, &mut journey),
            r if r < 0.90 => self.redeem(index, &mut journey),
            r if r < 0.91 => self.adjust(&mut journey),
            r if r < 0.94 => self.transactional(index, &mut journey),
            r if r < 0.965 => self.bounce_or_spam(index, &mut journey),
            r if r < 0.9652 => journey.push((Channel::Web, EventPayload::ErasureRequested)),
            r if r < 0.99 => identifiers = self.identify(index, &mut journey),
            _ => self.browse(index, &mut journey),
        }
        for (channel, payload) in journey {
            let event = TouchpointEvent {
                event_id: self.event_id(),
                customer_id: customer_id.clone(),
                occurred_at: self.config.start, // set when emitted
                channel,
                source: Some("omni-simulate".to_owned()),
                payload,
                context: BTreeMap::new(),
                identifiers: identifiers.clone(),
            };
            self.pending.push_back(event);
        }
    }

    fn next_id(&mut self, index: u32, prefix: &str) -> String {
        let customer = &mut self.customers[index as usize];
        customer.counter += 1;
        format!("{prefix}-{index}-{}", customer.counter)
    }

    fn browse(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Web, Channel::Web, Channel::MobileApp]);
        let product = format!("sku-{}", self.rng.random_range(1..500));
        journey
            .push((channel, EventPayload::PageViewed { url: format!("https://shop.example/p/{product}") }));
        journey.push((channel, EventPayload::ProductViewed { product_id: product }));
        if self.rng.random_bool(0.4) {
            let cart_id = self.next_id(index, "cart");
            let items = self.rng.random_range(1..5);
            let value_minor = i64::from(items) * self.rng.random_range(500..9_000);
            let currency = self.pick(CURRENCIES).to_owned();
            journey.push((channel, EventPayload::CartUpdated { cart_id, items, value_minor, currency }));
        }
    }

    fn order(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[
            Channel::Store,
            Channel::Store,
            Channel::Web,
            Channel::MobileApp,
            Channel::CallCenter,
        ]);
        let order_id = self.next_id(index, "order");
        let items = self.rng.random_range(1..6);
        let value_minor = i64::from(items) * self.rng.random_range(300..15_000);
        let currency = self.pick(CURRENCIES).to_owned();
        self.customers[index as usize].orders.push((order_id.clone(), value_minor, currency.clone()));
        journey.push((
            channel,
            EventPayload::OrderPlaced { order_id, value_minor, currency, items: Some(items) },
        ));
    }

    fn refund(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let orders = &mut self.customers[index as usize].orders;
        let (order_id, value_minor, currency) = orders.remove(self.rng.random_range(0..orders.len()));
        let channel = self.pick(&[Channel::Store, Channel::Web, Channel::CallCenter]);
        journey.push((channel, EventPayload::OrderRefunded { order_id, value_minor, currency }));
    }

    fn campaign(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(Channel::MESSAGING);
        let message_id = self.next_id(index, "msg");
        self.customers[index as usize].messages += 1;
        let campaign_id = Some(format!("camp-{}", self.rng.random_range(1..20)));
        journey.push((
            channel,
            EventPayload::MessageSent {
                message_id: message_id.clone(),
                campaign_id,
                purpose: Purpose::Marketing,
            },
        ));
        journey.push((channel, EventPayload::MessageDelivered { message_id: message_id.clone() }));
        let engagement = self.customers[index as usize].engagement[&channel];
        if self.rng.random_bool(engagement) {
            journey.push((channel, EventPayload::MessageOpened { message_id: message_id.clone() }));
            if self.rng.random_bool(0.5) {
                let url = Some("https://shop.example/sale".to_owned());
                journey.push((channel, EventPayload::MessageClicked { message_id: message_id.clone(), url }));
                if self.rng.random_bool(0.3) {
                    self.order(index, journey);
                }
            }
        }
        if matches!(channel, Channel::Whatsapp | Channel::Sms) && self.rng.random_bool(engagement / 2.0) {
            let text_len = Some(self.rng.random_range(2..300));
            journey.push((
                channel,
                EventPayload::MessageReceived { conversation_id: Some(message_id), text_len },
            ));
        }
    }

    fn inbound(&mut self, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Whatsapp, Channel::Whatsapp, Channel::Chat, Channel::Social]);
        let text_len = Some(self.rng.random_range(2..500));
        journey.push((channel, EventPayload::MessageReceived { conversation_id: None, text_len }));
    }

    fn open_ticket(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Whatsapp, Channel::CallCenter, Channel::Chat, Channel::Email]);
        let ticket_id = self.next_id(index, "T");
        let topic = Some(self.pick(&["delivery", "refund", "product", "account"]).to_owned());
        self.customers[index as usize].open_tickets.push(ticket_id.clone());
        journey.push((
            channel,
            EventPayload::MessageReceived { conversation_id: Some(ticket_id.clone()), text_len: Some(120) },
        ));
        journey.push((channel, EventPayload::SupportTicketOpened { ticket_id, topic }));
    }

    fn resolve_ticket(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let ticket_id = self.customers[index as usize].open_tickets.remove(0);
        let channel = self.pick(&[Channel::Whatsapp, Channel::CallCenter, Channel::Email]);
        journey.push((channel, EventPayload::SupportTicketResolved { ticket_id }));
    }

    fn consent(&mut self, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(Channel::MESSAGING);
        let granted = self.rng.random_bool(0.6);
        let purpose = if self.rng.random_bool(0.9) { Purpose::Marketing } else { Purpose::Transactional };
        journey.push((channel, EventPayload::ConsentChanged { purpose, granted }));
    }

    fn traits(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Web, Channel::MobileApp, Channel::Store, Channel::CallCenter]);
        let mut set = BTreeMap::new();
        set.insert("email".to_owned(), TraitValue::String(format!("customer{index}@example.com")));
        if self.rng.random_bool(0.5) {
            set.insert("phone".to_owned(), TraitValue::String(format!("+4915{index:08}")));
        }
        set.insert("timezone".to_owned(), TraitValue::String(self.pick(TIMEZONES).to_owned()));
        set.insert("newsletter_score".to_owned(), TraitValue::Double(self.rng.random_range(0.0..1.0)));
        let set_once =
            BTreeMap::from([("signup_channel".to_owned(), TraitValue::String(channel.as_str().to_owned()))]);
        let unset = if self.rng.random_bool(0.1) { vec!["fax".to_owned()] } else { Vec::new() };
        journey.push((channel, EventPayload::TraitsUpdated { set, set_once, unset }));
    }

    /// A login on the web or in the app (a cookie, the account, its email), or a card scanned at
    /// the till (the card, a phone): the journey's identifiers, spelled as people type them.
    fn identify(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) -> Vec<Identifier> {
        let channel = self.pick(&[Channel::Web, Channel::MobileApp, Channel::Store]);
        journey.push((channel, EventPayload::Identify));
        if channel == Channel::Store {
            return vec![
                Identifier::new(identifiers::LOYALTY_CARD, format!("LC{index:08}")),
                Identifier::new(identifiers::PHONE, format!("+49 15 {index:08}")),
            ];
        }
        let session = self.next_id(index, "anon");
        vec![
            Identifier::new(identifiers::ANONYMOUS_ID, session),
            Identifier::new(identifiers::USER_ID, format!("U-{index}")),
            Identifier::new(identifiers::EMAIL, format!("Customer{index}@Example.com")),
        ]
    }

    fn redeem(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Web, Channel::MobileApp, Channel::Store]);
        let redemption_id = self.next_id(index, "redeem");
        let points = self.rng.random_range(1..300);
        journey.push((channel, EventPayload::LoyaltyRedeemRequested { redemption_id, points }));
    }

    fn adjust(&mut self, journey: &mut Vec<(Channel, EventPayload)>) {
        let points = self.rng.random_range(-50..200);
        let points = if points == 0 { 10 } else { points };
        journey.push((
            Channel::CallCenter,
            EventPayload::LoyaltyPointsAdjusted { points, reason: "goodwill".to_owned() },
        ));
    }

    fn transactional(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Email, Channel::Sms, Channel::Push]);
        let message_id = self.next_id(index, "tx");
        journey.push((
            channel,
            EventPayload::MessageSent {
                message_id: message_id.clone(),
                campaign_id: None,
                purpose: Purpose::Transactional,
            },
        ));
        journey.push((channel, EventPayload::MessageDelivered { message_id }));
    }

    fn bounce_or_spam(&mut self, index: u32, journey: &mut Vec<(Channel, EventPayload)>) {
        let channel = self.pick(&[Channel::Email, Channel::Email, Channel::Sms]);
        let message_id = self.next_id(index, "msg");
        journey.push((
            channel,
            EventPayload::MessageSent {
                message_id: message_id.clone(),
                campaign_id: None,
                purpose: Purpose::Marketing,
            },
        ));
        if self.rng.random_bool(0.7) {
            let hard = self.rng.random_bool(0.5);
            journey.push((channel, EventPayload::MessageBounced { message_id, hard }));
        } else {
            journey.push((channel, EventPayload::SpamReported { message_id }));
        }
    }

    fn malformed(&mut self, mut template: TouchpointEvent) -> SimRecord {
        let customer_id = template.customer_id.clone();
        template.event_id = self.event_id();
        let kind = match self.rng.random_range(0..3) {
            0 => Malformed::Garbage((0..self.rng.random_range(1..40)).map(|_| self.rng.random()).collect()),
            1 => {
                template.payload = EventPayload::OrderPlaced {
                    order_id: "bad".to_owned(),
                    value_minor: -self.rng.random_range(1..10_000),
                    currency: "EUR".to_owned(),
                    items: None,
                };
                Malformed::Invalid(template)
            }
            _ => Malformed::UnknownType(template),
        };
        SimRecord::Malformed { customer_id, kind }
    }
}

impl Iterator for Simulator {
    type Item = SimRecord;

    fn next(&mut self) -> Option<SimRecord> {
        let roll: f64 = self.rng.random();
        let record = if let Some(last) = self.last.clone().filter(|_| roll < self.config.duplicate_share) {
            self.last = None;
            SimRecord::Duplicate(last)
        } else {
            while self.pending.is_empty() {
                self.plan_journey();
            }
            let mut event = self.pending.pop_front().expect("a planned journey has events");
            event.occurred_at = self.now();
            if roll < self.config.duplicate_share + self.config.malformed_share {
                self.pending.push_front(event.clone());
                self.malformed(event)
            } else {
                self.last = Some(event.clone());
                SimRecord::Event(event)
            }
        };
        self.emitted += 1;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnistream_model::EventType;
    use std::collections::BTreeSet;

    fn config(seed: u64) -> SimConfig {
        SimConfig {
            customers: 50,
            seed,
            start: DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            step: Duration::milliseconds(10),
            duplicate_share: 0.02,
            malformed_share: 0.01,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_records() {
        let a: Vec<_> = Simulator::new(config(7)).take(2_000).collect();
        let b: Vec<_> = Simulator::new(config(7)).take(2_000).collect();
        let c: Vec<_> = Simulator::new(config(8)).take(2_000).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn journeys_use_every_channel_and_event_type() {
        let mut channels = BTreeSet::new();
        let mut types = BTreeSet::new();
        for record in Simulator::new(config(1)).take(100_000) {
            if let SimRecord::Event(event) = record {
                channels.insert(event.channel);
                types.insert(event.event_type());
            }
        }
        assert_eq!(channels.len(), Channel::ALL.len(), "channels seen: {channels:?}");
        // Every type a producer may send: `customers_merged` is the resolver's alone.
        let producible = EventType::ALL.iter().filter(|t| **t != EventType::CustomersMerged).count();
        assert_eq!(types.len(), producible, "types seen: {types:?}");
        assert!(!types.contains(&EventType::CustomersMerged));
    }

    #[test]
    fn covering_every_customer_meets_each_in_turn_before_any_again() {
        let customers = 1_000;
        let first_sightings = |simulator: Simulator| {
            let mut seen = BTreeSet::new();
            let mut order = Vec::new();
            for record in simulator.take(customers as usize * 20) {
                if seen.insert(record.customer_id().to_owned()) {
                    order.push(record.customer_id().to_owned());
                }
            }
            order
        };
        let in_turn: Vec<String> = (0..customers).map(Simulator::customer_id).collect();
        let config = SimConfig { customers, ..config(2) };
        assert_eq!(first_sightings(Simulator::new(config.clone()).covering_every_customer()), in_turn);
        assert_ne!(first_sightings(Simulator::new(config)), in_turn, "random picks come in no order");
    }

    #[test]
    fn every_simulated_event_is_valid_and_duplicates_and_malformed_come_at_their_share() {
        let (mut duplicates, mut malformed, total) = (0, 0, 50_000);
        let end = config(3).start + Duration::days(1);
        for record in Simulator::new(config(3)).take(total) {
            match record {
                SimRecord::Event(event) => omnistream_model::validate(&event, end).expect("valid"),
                SimRecord::Duplicate(_) => duplicates += 1,
                SimRecord::Malformed { .. } => malformed += 1,
            }
        }
        let share = |n: i32| f64::from(n) / total as f64;
        assert!((share(duplicates) - 0.02).abs() < 0.005, "duplicates {duplicates}");
        assert!((share(malformed) - 0.01).abs() < 0.004, "malformed {malformed}");
    }

    #[test]
    fn a_duplicate_repeats_the_previous_event_exactly() {
        let records: Vec<_> = Simulator::new(config(5)).take(5_000).collect();
        let mut seen = 0;
        for pair in records.windows(2) {
            if let (SimRecord::Event(previous), SimRecord::Duplicate(again)) = (&pair[0], &pair[1]) {
                assert_eq!(previous, again);
                seen += 1;
            }
        }
        assert!(seen > 10);
    }
}
