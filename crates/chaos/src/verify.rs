//! After the faults healed: every derived topic against the executable SPEC (`omnistream_spec`,
//! which recomputes each customer from the whole input history and shares no code with the
//! services), every gateway `accepted` against the events topic, and duplicates counted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use omnistream_model::records::{
    ChannelAffinity, CustomerProfile, JourneyAction, JourneyOutcome, LoyaltyBalance, LoyaltyLedgerEntry,
    SuppressionState,
};
use omnistream_model::{AvroRecord, Channel, EventPayload, EventType, decode_event, decode_record};
use omnistream_spec::affinity::{AffinitySettings, affinity, agree, written_at};
use omnistream_spec::journeys::{self, Catalog, Decision, Journey, Outcome, Step, Trigger, WhenSuppressed};
use omnistream_spec::suppression::check_last_record;
use omnistream_spec::{Record, applied, loyalty, profile};
use rdkafka::message::Message;

use crate::traffic::Published;

/// The topics to check.
pub struct Topics {
    pub events: String,
    pub dlq: String,
    pub profiles: String,
    pub suppressions: String,
    pub affinity: String,
    pub ledger: String,
    pub balances: String,
    pub actions: String,
}

/// The journey the run publishes before its traffic (`omni journeys publish`): a customer's first
/// order gets a thank-you email, then a cross-sell on their best messaging channel, each skipped
/// when suppressed. Sends only, so its decisions are all made at the order's time.
pub const JOURNEY: &str = r#"
id = "chaos-thanks"
version = 1

[entry]
event = "order_placed"
reentry = "once"

[[steps]]
id = "thanks"
send = { channel = "email", template = "thanks", when_suppressed = "skip" }

[[steps]]
id = "cross-sell"
send = { best_of = ["sms", "whatsapp", "push"], template = "cross-sell", when_suppressed = "skip" }
"#;

/// [`JOURNEY`] for the SPEC's journeys model, written out again by hand.
fn journey() -> Journey {
    let send = |id: &str, channels: Vec<Channel>, template: &str| Step::Send {
        id: id.into(),
        channels,
        template: template.into(),
        when_suppressed: WhenSuppressed::Skip,
    };
    Journey {
        id: "chaos-thanks".into(),
        version: 1,
        trigger: Trigger::Event(EventType::OrderPlaced),
        goals: Vec::new(),
        exits: Vec::new(),
        steps: vec![
            send("thanks", vec![Channel::Email], "thanks"),
            send("cross-sell", vec![Channel::Sms, Channel::Whatsapp, Channel::Push], "cross-sell"),
        ],
    }
}

/// Whether a committed action is the model's decision, field by field.
fn same_decision(action: &JourneyAction, decision: &Decision) -> bool {
    let outcome = match decision.outcome {
        Outcome::Send(channel) => {
            action.outcome == JourneyOutcome::Send && action.channel.as_deref() == Some(channel.as_str())
        }
        Outcome::Skipped => action.outcome == JourneyOutcome::Skipped,
        Outcome::Waiting { until } => {
            action.outcome == JourneyOutcome::Waiting
                && action.waiting_until.map(|at| at.timestamp_millis()) == Some(until)
        }
        Outcome::Exited => action.outcome == JourneyOutcome::Exited,
    };
    outcome
        && action.decision_id == decision.decision_id
        && action.step == decision.step
        && action.template == decision.template
        && i64::from(action.attempt) == i64::from(decision.attempt)
        && action.decided_at.timestamp_millis() == decision.decided_at
        && action.entry_key == decision.entry_key
}

/// Every check, in the report's order.
pub const CHECKS: [&str; 15] = [
    "gateway 2xx, not in the topic",
    "direct ack, not in the topic",
    "events nobody published",
    "dead letters",
    "profiles",
    "profile version written twice or back",
    "ledger",
    "ledger entry id twice",
    "balances",
    "suppressions",
    "affinity",
    "journey decisions",
    "journey decision twice",
    "a version went back",
    "outputs of customers not in the input",
];

/// Divergences by check; all must be 0.
#[derive(Debug, Default)]
pub struct Verdict {
    pub input_records: usize,
    pub customers: usize,
    pub checks: BTreeMap<&'static str, Vec<String>>,
    pub settled_after: Duration,
}

impl Verdict {
    pub fn divergence(&self) -> usize {
        self.checks.values().map(Vec::len).sum()
    }
}

/// Every committed record of `topic` as (key, value decoded or `None` for a tombstone).
fn read<T: AvroRecord>(topic: &str) -> Vec<(String, Option<T>)> {
    omnistream_testkit::read_committed_to_end(topic)
        .iter()
        .map(|message| {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let value =
                message.payload().map(|bytes| decode_record::<T>(bytes).expect("a record the schema reads"));
            (key, value)
        })
        .collect()
}

fn last<T: Clone>(records: &[(String, Option<T>)]) -> BTreeMap<String, Option<T>> {
    records.iter().cloned().collect()
}

/// Checks until every check passes or `deadline` (the pipeline may still be catching up); the
/// last verdict.
pub fn verify(topics: &Topics, published: &Published, deadline: Duration) -> Verdict {
    let started = Instant::now();
    loop {
        let mut verdict = check(topics, published);
        verdict.settled_after = started.elapsed();
        if verdict.divergence() == 0 || started.elapsed() > deadline {
            return verdict;
        }
        eprintln!(
            "chaos: {} divergences after {:.0} s ({}); checking again",
            verdict.divergence(),
            started.elapsed().as_secs_f64(),
            verdict
                .checks
                .iter()
                .map(|(name, d)| format!("{name} {}", d.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// Per key, each record's `version` against the last one (a tombstone starts again): a version
/// going back is a stale write (a zombie's); `strictly`, the same version twice is a duplicate.
fn versions_in_order<T>(
    records: &[(String, Option<T>)],
    version: impl Fn(&T) -> i64,
    strictly: bool,
) -> Vec<String> {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out_of_order = Vec::new();
    for (key, value) in records {
        match value {
            Some(record) => {
                let v = version(record);
                if last.get(key.as_str()).is_some_and(|&before| v < before || (strictly && v == before)) {
                    out_of_order.push(format!("{key} v{v} after v{}", last[key.as_str()]));
                }
                last.insert(key, v);
            }
            None => {
                last.remove(key.as_str());
            }
        }
    }
    out_of_order
}

fn check(topics: &Topics, published: &Published) -> Verdict {
    let mut histories: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let input = omnistream_testkit::read_committed_to_end(&topics.events);
    for message in &input {
        let event =
            decode_event(message.payload().unwrap_or_default()).expect("only valid events are published");
        let appended_at = message.timestamp().to_millis().expect("an append time");
        stored.insert((message.partition(), message.offset()), event.event_id.clone());
        histories.entry(event.customer_id.clone()).or_default().push(Record { event, appended_at });
    }
    let mut verdict =
        Verdict { input_records: input.len(), customers: histories.len(), ..Verdict::default() };
    let mut fail = |check: &'static str, what: String| verdict.checks.entry(check).or_default().push(what);
    // Every acknowledged event is where Kafka said it put it; nothing else was added.
    for (check, acknowledged) in [
        ("gateway 2xx, not in the topic", &published.accepted),
        ("direct ack, not in the topic", &published.direct),
    ] {
        for (id, partition, offset) in acknowledged {
            // A delivery acknowledged after an idempotent retry may come without its offset
            // (librdkafka reports -1001): then it must be somewhere in its partition.
            let found = match *offset {
                offset if offset >= 0 => stored.get(&(*partition, offset)) == Some(id),
                _ => stored
                    .range((*partition, i64::MIN)..=(*partition, i64::MAX))
                    .any(|(_, stored)| stored == id),
            };
            if !found {
                fail(check, format!("{id} at {partition}/{offset}"));
            }
        }
    }
    for id in stored.values() {
        if !published.generated.contains(id) && !id.starts_with("probe-") {
            fail("events nobody published", id.clone());
        }
    }
    // Every event is valid: nothing may be dead-lettered.
    for message in omnistream_testkit::read_committed_to_end(&topics.dlq) {
        fail("dead letters", format!("{}/{}", message.partition(), message.offset()));
    }

    // SPEC 4.1: each customer's last profile; and no profile version written twice.
    let profiles = read::<CustomerProfile>(&topics.profiles);
    for what in versions_in_order(&profiles, |p| p.version, true) {
        fail("profile version written twice or back", what);
    }
    let profiles = last(&profiles);
    for (customer, history) in &histories {
        let want = profile(customer, history);
        let got = profiles.get(customer).cloned().flatten();
        if got != want {
            fail(
                "profiles",
                format!(
                    "{customer}: v{:?}, the SPEC's v{:?}",
                    got.map(|p| p.version),
                    want.map(|p| p.version)
                ),
            );
        }
    }

    // SPEC 4.4: each customer's ledger in order, its balances, no entry id twice.
    let rules = loyalty::Rules::default();
    let until = Utc::now().timestamp_millis();
    let mut ledgers: BTreeMap<String, Vec<LoyaltyLedgerEntry>> = BTreeMap::new();
    let mut entry_ids: BTreeSet<String> = BTreeSet::new();
    for (_, entry) in read::<LoyaltyLedgerEntry>(&topics.ledger) {
        let entry = entry.expect("the ledger has no tombstones");
        if !entry_ids.insert(entry.entry_id.clone()) {
            fail("ledger entry id twice", entry.entry_id.clone());
        }
        ledgers.entry(entry.customer_id.clone()).or_default().push(entry);
    }
    let mut balances: BTreeMap<String, Vec<Option<LoyaltyBalance>>> = BTreeMap::new();
    let balance_records = read::<LoyaltyBalance>(&topics.balances);
    for what in versions_in_order(&balance_records, |b| b.version, false) {
        fail("a version went back", format!("balances {what}"));
    }
    for (key, balance) in balance_records {
        balances.entry(key).or_default().push(balance);
    }
    for (customer, history) in &histories {
        let want = loyalty::loyalty(&rules, customer, history, until);
        let ledger = ledgers.get(customer).cloned().unwrap_or_default();
        if ledger != want.ledger {
            fail("ledger", format!("{customer}: {} entries, the SPEC's {}", ledger.len(), want.ledger.len()));
        }
        // One balance per customer per transaction (COALESCE_OUTPUTS): at most the SPEC's count,
        // at least one if it writes any, the last the SPEC's. A transaction written twice shows
        // in the ledger (an entry id twice).
        let written = balances.get(customer).cloned().unwrap_or_default();
        let count_fits =
            written.len() <= want.balances_written && (want.balances_written == 0) == written.is_empty();
        if !count_fits || written.last().cloned().flatten() != want.balance {
            fail(
                "balances",
                format!(
                    "{customer}: {} records (the last {:?}), the SPEC's {} (the last {:?})",
                    written.len(),
                    written.last(),
                    want.balances_written,
                    want.balance
                ),
            );
        }
    }

    // SPEC 4.2: each customer's last record is the SPEC's as of its `evaluated_at`, with every
    // event applied and no change pending that it should have written by now.
    let suppression_records = read::<SuppressionState>(&topics.suppressions);
    for what in versions_in_order(&suppression_records, |s| s.version, false) {
        fail("a version went back", format!("suppressions {what}"));
    }
    let suppressions = last(&suppression_records);
    let rules = omnistream_spec::suppression::Rules::default();
    let read_at = Utc::now();
    for (customer, history) in &histories {
        let got = suppressions.get(customer).cloned().flatten();
        if let Err(disagreement) = check_last_record(customer, history, &rules, got, read_at) {
            fail("suppressions", format!("{customer}: v{:?}", disagreement.got.map(|s| s.version)));
        }
    }

    // SPEC 4.3: each customer's last affinity is the SPEC's at its `as_of`, as of the last event.
    let affinity_records = read::<ChannelAffinity>(&topics.affinity);
    for what in versions_in_order(&affinity_records, |a| a.version, false) {
        fail("a version went back", format!("affinity {what}"));
    }
    let affinities = last(&affinity_records);
    let settings = AffinitySettings::default();
    for (customer, history) in &histories {
        let got = affinities.get(customer).cloned().flatten();
        let clock = written_at(history);
        let agreed = match (&got, clock) {
            (Some(s), Some(clock)) if s.as_of == clock => {
                match affinity(customer, history, s.as_of, &settings) {
                    Some(model) => {
                        agree(s, &model, &settings).map_err(|d| d.lines().next().unwrap_or("").to_owned())
                    }
                    None => Err("the SPEC has none".to_owned()),
                }
            }
            (None, None) => Ok(()),
            _ => Err(format!("as_of {:?}, the last event's {clock:?}", got.map(|s| s.as_of))),
        };
        if let Err(difference) = agreed {
            fail("affinity", format!("{customer}: {difference}"));
        }
    }
    // SPEC 4.6: each customer's journey decisions in order, each once, as the model recomputes
    // them from the events applied. An erasure is outside the model's scope: those customers'
    // decisions are only checked for duplicates.
    let mut actions: BTreeMap<String, Vec<JourneyAction>> = BTreeMap::new();
    let mut decision_ids: BTreeSet<String> = BTreeSet::new();
    for (_, action) in read::<JourneyAction>(&topics.actions) {
        let action = action.expect("journey actions have no tombstones");
        if !decision_ids.insert(action.decision_id.clone()) {
            fail("journey decision twice", format!("{}: {}", action.customer_id, action.decision_id));
        }
        actions.entry(action.customer_id.clone()).or_default().push(action);
    }
    let model = journey();
    let suppression_rules = omnistream_spec::suppression::Rules::default();
    let until = Utc::now().timestamp_millis();
    for (customer, history) in &histories {
        if history.iter().any(|record| matches!(record.event.payload, EventPayload::ErasureRequested)) {
            continue;
        }
        let events: Vec<Record> = applied(history).unwrap_or_default().into_iter().cloned().collect();
        let want = journeys::decisions(
            customer,
            &model,
            &events,
            &Catalog::default(),
            &suppression_rules,
            &settings,
            until,
        );
        let got = actions.get(customer).map_or(&[][..], Vec::as_slice);
        if got.len() != want.len()
            || got.iter().zip(&want).any(|(action, decision)| !same_decision(action, decision))
        {
            fail(
                "journey decisions",
                format!("{customer}: {} decisions, the SPEC's {}", got.len(), want.len()),
            );
        }
    }

    // No output for a customer the input does not have.
    let outputs = [
        ("profiles", profiles.keys().cloned().collect::<Vec<_>>()),
        ("suppressions", suppressions.keys().cloned().collect()),
        ("affinity", affinities.keys().cloned().collect()),
        ("balances", balances.keys().cloned().collect()),
        ("ledger", ledgers.keys().cloned().collect()),
        ("journey actions", actions.keys().cloned().collect()),
    ];
    for (topic, customers) in outputs {
        for customer in customers.iter().filter(|c| !histories.contains_key(*c)) {
            fail("outputs of customers not in the input", format!("{topic}: {customer}"));
        }
    }
    verdict
}
