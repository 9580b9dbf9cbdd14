//! The two stages on the real broker, SIGKILLed at random moments while linked events flow
//! through them, some sent twice (producer retries). The oracle is the union-find model
//! (`model/`), not the resolver: every event is published once, under a customer whose merges
//! (read back from the resolved topic) end at its component's smallest customer id; each
//! customer is merged away at most once; nothing is refused or dead-lettered. Third-party
//! check: fastavro reads the resolved topic's records by its own fingerprint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::Utc;
use omnistream_model::records::{CustomerIdentity, IdentityConflict};
use omnistream_model::{
    Channel, EventPayload, Identifier, TouchpointEvent, decode_event, decode_record, encode_event,
};
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::pipeline::{PARTITIONS, ServiceTopics, produce_at_rate};
use omnistream_testkit::{
    ServiceProcess, create_test_topics, end_offsets, read_committed_to_end, unique_topic, wait_until,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;

mod model;
use model::Components;

const PEOPLE: usize = 1_500;
const EVENTS: usize = 12_000;

/// People with identifiers no one else has (within every limit), each known under one to three
/// customer ids; events carry some of one person's identifiers under one of its ids.
fn workload(seed: u64) -> Vec<TouchpointEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let people: Vec<(Vec<Identifier>, Vec<String>)> = (0..PEOPLE)
        .map(|person| {
            let mut identifiers = vec![Identifier::new("anonymous_id", format!("a-{person}"))];
            if rng.random_bool(0.5) {
                identifiers.push(Identifier::new("user_id", format!("U-{person}")));
            }
            if rng.random_bool(0.3) {
                identifiers.push(Identifier::new("loyalty_card", format!("L{person}")));
            }
            if rng.random_bool(0.7) {
                identifiers.push(Identifier::new("email", format!("p{person}@example.org")));
            }
            if rng.random_bool(0.4) {
                identifiers.push(Identifier::new("phone", format!("+44207946{person:04}")));
            }
            let customers = (0..rng.random_range(1..=3))
                .map(|n| format!("{}-{person}-{n}", ["k", "b", "x", "m"][rng.random_range(0..4)]))
                .collect();
            (identifiers, customers)
        })
        .collect();
    let occurred_at = Utc::now() - chrono::Duration::minutes(10);
    (0..EVENTS)
        .map(|index| {
            let (identifiers, customers) = &people[rng.random_range(0..PEOPLE)];
            TouchpointEvent {
                event_id: format!("e-{index}"),
                customer_id: customers[rng.random_range(0..customers.len())].clone(),
                occurred_at,
                channel: Channel::Web,
                source: None,
                payload: EventPayload::PageViewed { url: "https://shop.example/".into() },
                context: BTreeMap::new(),
                // About one event in ten links something new; most carry nothing or one id.
                identifiers: identifiers.iter().filter(|_| rng.random_bool(0.15)).cloned().collect(),
            }
        })
        .collect()
}

struct Stage {
    label: &'static str,
    topics: ServiceTopics,
    extra: Vec<String>,
}

impl Stage {
    fn spawn(&self, run: usize) -> ServiceProcess {
        let mut args = vec![self.label.to_owned()];
        args.extend(self.topics.runtime_args(&format!("{}-0", self.label), 0));
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::spawn(
            env!("CARGO_BIN_EXE_identity-resolver"),
            &format!("identity-{}-{run}", self.label),
            &args,
            &[],
        )
    }
}

/// The resolver's topics (fresh) and its two stages' command lines.
struct Resolver {
    events: String,
    dlq: String,
    requests: String,
    customers: String,
    resolved: String,
    conflicts: String,
    identity: String,
    stages: [Stage; 2],
}

impl Resolver {
    async fn create() -> Self {
        // The customer stage reads the producers' events (and its own requests).
        let customers_topics = ServiceTopics::create("idr-customers", 0).await;
        let [requests, customers, resolved, conflicts, identity] =
            ["idr-requests", "idr-customers", "idr-resolved", "idr-conflicts", "idr-identity"]
                .map(unique_topic);
        let mut requested = [&requests, &customers, &conflicts]
            .map(|topic| TopicRequest::plain(topic, PARTITIONS, 1))
            .to_vec();
        requested.push(TopicRequest::events(&resolved, PARTITIONS, 1));
        requested.push(TopicRequest::compacted(&identity, PARTITIONS, 1));
        create_test_topics(&requested).await;
        let internal = |label: &str, input: &str| {
            let topics = ServiceTopics {
                group: unique_topic(&format!("{label}-group")),
                input: input.to_owned(),
                dlq: customers_topics.dlq.clone(),
                changelog: unique_topic(&format!("{label}-state")),
                outputs: Vec::new(),
            };
            (TopicRequest::compacted(&topics.changelog, PARTITIONS, 1), topics)
        };
        let (claims_state, claims_topics) = internal("idr-claims", &requests);
        create_test_topics(&[claims_state]).await;
        let links = vec![
            "--requests-topic".to_owned(),
            requests.clone(),
            "--customers-topic".to_owned(),
            customers.clone(),
        ];
        let mut customer_flags = links.clone();
        customer_flags.extend(["--resolved-topic".to_owned(), resolved.clone()]);
        customer_flags.extend(["--conflicts-topic".to_owned(), conflicts.clone()]);
        customer_flags.extend(["--identity-topic".to_owned(), identity.clone()]);
        Self {
            events: customers_topics.input.clone(),
            dlq: customers_topics.dlq.clone(),
            requests,
            customers,
            resolved,
            conflicts,
            identity,
            stages: [
                Stage { label: "claims", topics: claims_topics, extra: links },
                Stage { label: "customers", topics: customers_topics, extra: customer_flags },
            ],
        }
    }

    fn spawn(&self, run: usize) -> Vec<ServiceProcess> {
        self.stages.iter().map(|stage| stage.spawn(run)).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn linked_events_resolve_to_their_components_exactly_once_while_stages_are_sigkilled() {
    let resolver = Resolver::create().await;
    let Resolver { events: events_topic, dlq, requests, customers, resolved, conflicts, identity, stages } =
        &resolver;
    let events = workload(16);
    let mut input: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|event| (event.customer_id.clone(), encode_event(event).expect("encodes")))
        .collect();
    // Producer retries: 1 % of records again, right after.
    let mut rng = StdRng::seed_from_u64(3);
    for index in (0..input.len()).rev() {
        if rng.random_bool(0.01) {
            input.insert(index + 1, input[index].clone());
        }
    }
    let producing = produce_at_rate(events_topic.clone(), input, 400);
    let mut running = resolver.spawn(0);
    // Four rounds: each SIGKILLs one stage, or both, once the resolved topic grew.
    let mut mid_stream = 0;
    for run in 1..=4 {
        let before = end_offsets(resolved);
        let watched = resolved.clone();
        tokio::task::spawn_blocking(move || {
            wait_until("the stages make progress", Duration::from_secs(90), || {
                end_offsets(&watched) > before + 300
            })
        })
        .await
        .expect("progress task");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        if end_offsets(resolved) < EVENTS as i64 {
            mid_stream += 1;
        }
        let victims: Vec<usize> = match rng.random_range(0..3) {
            2 => vec![0, 1],
            one => vec![one],
        };
        for victim in victims {
            let killed = std::mem::replace(&mut running[victim], stages[victim].spawn(run));
            killed.kill();
        }
    }
    assert!(mid_stream >= 3, "only {mid_stream} kills happened mid-stream");
    producing.await.expect("producer task");

    // Done when every event is out and the internal topics stopped moving (merges settled).
    let (watched, internal) = (resolved.clone(), [requests.clone(), customers.clone()]);
    tokio::task::spawn_blocking(move || {
        let mut last = (0, 0);
        let mut stable_since = std::time::Instant::now();
        wait_until("every event resolved and merges settled", Duration::from_secs(180), || {
            let now = (end_offsets(&internal[0]), end_offsets(&internal[1]));
            if now != last {
                last = now;
                stable_since = std::time::Instant::now();
            }
            let events_out = read_committed_to_end(&watched)
                .iter()
                .filter(|m| {
                    m.payload()
                        .and_then(|p| decode_event(p).ok())
                        .is_some_and(|e| e.event_id.starts_with("e-"))
                })
                .count();
            events_out >= EVENTS && stable_since.elapsed() > Duration::from_secs(8)
        })
    })
    .await
    .expect("settle task");

    let mut published: HashMap<String, Vec<String>> = HashMap::new();
    let mut merged_into: BTreeMap<String, String> = BTreeMap::new();
    for message in read_committed_to_end(resolved) {
        let event = decode_event(message.payload().expect("a value")).expect("a resolved event decodes");
        let key = std::str::from_utf8(message.key().expect("a key")).expect("utf-8");
        assert_eq!(key, event.customer_id, "keyed by its customer");
        match event.payload {
            EventPayload::CustomersMerged { winner, .. } => {
                assert!(winner < event.customer_id, "the smaller id wins: {winner} < {}", event.customer_id);
                let previous = merged_into.insert(event.customer_id.clone(), winner);
                assert!(previous.is_none(), "{} merged twice", event.customer_id);
            }
            _ => published.entry(event.event_id.clone()).or_default().push(event.customer_id.clone()),
        }
    }
    let canonical = |id: &str| {
        let mut id = id.to_owned();
        while let Some(next) = merged_into.get(&id) {
            id = next.clone();
        }
        id
    };
    let names = Components::of(&events).names();
    for event in &events {
        let under = published.get(&event.event_id).unwrap_or_else(|| panic!("{} lost", event.event_id));
        assert_eq!(under.len(), 1, "{} published {under:?}", event.event_id);
        let expected = &names[&format!("customer_id:{}", event.customer_id)];
        assert_eq!(&canonical(&under[0]), expected, "{event:?}");
    }
    assert_eq!(published.len(), EVENTS, "only the input's events");
    let components: BTreeSet<&String> = names.values().collect();
    let customers_seen: BTreeSet<String> = events.iter().map(|e| canonical(&e.customer_id)).collect();
    assert_eq!(customers_seen.len(), components.len(), "one canonical customer per component");
    let refused: Vec<IdentityConflict> = read_committed_to_end(conflicts)
        .iter()
        .map(|m| decode_record(m.payload().expect("a value")).expect("a conflict"))
        .collect();
    assert!(refused.is_empty(), "no conflicts: {refused:?}");
    // customer.identity.v1, as a compacted topic keeps it: each id's last record. The canonical
    // customer of each component holds exactly the component's identifiers (its own id aside,
    // the merged ids as `customer_id`), and every other id there points along its merges.
    let mut records: BTreeMap<String, Option<CustomerIdentity>> = BTreeMap::new();
    for message in read_committed_to_end(identity) {
        let key = std::str::from_utf8(message.key().expect("a key")).expect("utf-8").to_owned();
        records.insert(key, message.payload().map(|p| decode_record(p).expect("an identity record")));
    }
    let mut expected: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for event in &events {
        let name = &names[&format!("customer_id:{}", event.customer_id)];
        let held = expected.entry(name.clone()).or_default();
        for identifier in &event.identifiers {
            held.insert((identifier.kind.clone(), identifier.value.clone()));
        }
        if &event.customer_id != name {
            held.insert(("customer_id".to_owned(), event.customer_id.clone()));
        }
    }
    for (name, held) in &expected {
        let shown: BTreeSet<(String, String)> = match records.get(name) {
            Some(Some(record)) => {
                assert_eq!(record.merged_into, None, "{name} is canonical");
                record.identifiers.iter().map(|i| (i.kind.clone(), i.value.clone())).collect()
            }
            _ => BTreeSet::new(),
        };
        assert_eq!(&shown, held, "the identity record of {name}");
    }
    for (id, winner) in &merged_into {
        let record =
            records.get(id).cloned().flatten().unwrap_or_else(|| panic!("no identity record of {id}"));
        assert_eq!(record.merged_into.as_ref(), Some(winner), "{id}");
        assert!(record.identifiers.is_empty(), "{id} holds nothing once merged");
    }
    assert!(read_committed_to_end(dlq).is_empty(), "nothing dead-lettered");
    for (stage, process) in stages.iter().zip(running.iter_mut()) {
        assert!(process.is_running(), "{} still works", stage.label);
    }
    println!("{} events, {} merges, {} customers", EVENTS, merged_into.len(), customers_seen.len());
}

fn story_event(
    event_id: &str,
    customer_id: &str,
    channel: Channel,
    payload: EventPayload,
    identifiers: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let event = TouchpointEvent {
        event_id: event_id.into(),
        customer_id: customer_id.into(),
        occurred_at: Utc::now() - chrono::Duration::minutes(5),
        channel,
        source: None,
        payload,
        context: BTreeMap::new(),
        identifiers: identifiers.iter().map(|(kind, value)| Identifier::new(*kind, *value)).collect(),
    };
    (event.customer_id.clone(), encode_event(&event).expect("encodes"))
}

/// The story, on the broker: a support ticket opened on WhatsApp (known by phone)
/// suppresses the email promo of the same person, once a login links that phone to their
/// account. suppression reads the resolved events and takes the merge as a state handoff.
#[tokio::test(flavor = "multi_thread")]
async fn a_whatsapp_ticket_suppresses_the_email_promo_of_the_same_person_once_a_login_links_them() {
    let resolver = Resolver::create().await;
    let suppressions = unique_topic("idr-suppressions");
    let suppression_topics = ServiceTopics {
        group: unique_topic("idr-suppression-group"),
        input: resolver.resolved.clone(),
        dlq: resolver.dlq.clone(),
        changelog: unique_topic("idr-suppression-state"),
        outputs: vec![suppressions.clone()],
    };
    let handoff = unique_topic("idr-suppression-handoff");
    create_test_topics(&[
        TopicRequest::plain(&suppressions, PARTITIONS, 1),
        TopicRequest::compacted(&suppression_topics.changelog, PARTITIONS, 1),
        TopicRequest::events(&handoff, PARTITIONS, 1),
    ])
    .await;
    let mut args = suppression_topics.runtime_args("suppression-0", 0);
    args.extend([
        "--suppressions-topic".to_owned(),
        suppressions.clone(),
        "--handoff-topic".to_owned(),
        handoff,
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let binary = omnistream_testkit::workspace_binary("suppression");
    let mut suppression = ServiceProcess::spawn(&binary, "identity-story-suppression", &args, &[]);
    let mut stages = resolver.spawn(0);

    let phone = ("phone", "+1 415 555 0100");
    omnistream_testkit::produce_all(
        &resolver.events,
        [
            story_event("s-1", "U-7", Channel::Email, consent(), &[("user_id", "U-7")]),
            story_event(
                "s-2",
                "wa-14155550100",
                Channel::Whatsapp,
                EventPayload::SupportTicketOpened { ticket_id: "T-1".into(), topic: None },
                &[phone],
            ),
            story_event(
                "s-3",
                "U-7",
                Channel::Web,
                EventPayload::Identify,
                &[("user_id", "U-7"), ("email", "Ann@Example.com"), phone],
            ),
        ],
    )
    .await;

    let topic = suppressions.clone();
    let latest = tokio::task::spawn_blocking(move || {
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        wait_until("the merged customer's email marketing is blocked", Duration::from_secs(90), || {
            for message in read_committed_to_end(&topic) {
                let key = String::from_utf8(message.key().expect("a key").to_vec()).expect("utf-8");
                latest.insert(key, message.payload().map(<[u8]>::to_vec));
            }
            latest.get("U-7").cloned().flatten().is_some_and(|value| {
                let record: omnistream_model::records::SuppressionState =
                    decode_record(&value).expect("decodes");
                record.marketing.iter().any(|c| {
                    c.channel == Channel::Email && c.reasons.iter().any(|r| r.code == "support_ticket_open")
                })
            })
        });
        latest
    })
    .await
    .expect("waiting task");
    assert_eq!(latest.get("wa-14155550100"), Some(&None), "the loser's record is a tombstone");
    assert!(read_committed_to_end(&resolver.dlq).is_empty(), "nothing dead-lettered");
    assert!(suppression.is_running());
    for stage in &mut stages {
        assert!(stage.is_running());
    }
}

fn consent() -> EventPayload {
    EventPayload::ConsentChanged { purpose: omnistream_model::Purpose::Marketing, granted: true }
}
