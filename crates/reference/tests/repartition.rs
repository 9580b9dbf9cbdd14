//! A repartition topic, proven on the real broker: `alias-router` re-keys events by the customer
//! their customer is an alias of, and `event-counter` counts the re-keyed topic, while either or
//! both are SIGKILLed at random moments. Every event must be counted exactly once, under the
//! customer it was routed to, in its producer's order. The oracle is worked out here from the
//! input, not by running either processor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use omnistream_model::{Channel, EventPayload, TouchpointEvent, encode_event};
use omnistream_reference::{CountRecord, merge_request};
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::pipeline::{
    PARTITIONS, ServiceTopics, committed_outputs, output_may_be_complete, produce_at_rate,
};
use omnistream_testkit::{
    ServiceProcess, consume_committed, create_test_topics, end_offsets, unique_topic, wait_until,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 100_000;
const CANONICAL: usize = 400;
const ALIASES: usize = 800;

/// (customer, event_id, alias target): an alias event when the target is set.
type Step = (String, String, Option<String>);

fn record((customer, event_id, alias_of): &Step) -> (String, Vec<u8>) {
    let occurred_at = Utc::now() - chrono::Duration::minutes(5);
    let event = match alias_of {
        Some(target) => merge_request(event_id, customer, target, occurred_at),
        None => TouchpointEvent {
            event_id: event_id.clone(),
            customer_id: customer.clone(),
            occurred_at,
            channel: Channel::Sms,
            source: None,
            payload: EventPayload::PageViewed { url: "https://shop.example/".into() },
            context: BTreeMap::new(),
            identifiers: Vec::new(),
        },
    };
    (customer.clone(), encode_event(&event).expect("encodes"))
}

/// Events of 1,200 customers in random order; each of 800 becomes an alias of one of the other
/// 400 at a random moment; 1 % of records are sent twice (producer retries).
fn workload(seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut aliasing: Vec<(usize, usize)> = (0..ALIASES).map(|a| (rng.random_range(0..EVENTS), a)).collect();
    aliasing.sort_unstable();
    let mut aliasing = aliasing.into_iter().peekable();
    let mut steps: Vec<Step> = Vec::new();
    for index in 0..EVENTS {
        while let Some((_, a)) = aliasing.next_if(|(at, _)| *at == index) {
            let target = format!("c-{:04}", rng.random_range(0..CANONICAL));
            steps.push((format!("a-{a:04}"), format!("alias-{a}"), Some(target)));
        }
        let pick = rng.random_range(0..CANONICAL + ALIASES);
        let customer =
            if pick < CANONICAL { format!("c-{pick:04}") } else { format!("a-{:04}", pick - CANONICAL) };
        steps.push((customer, format!("e-{index}"), None));
        if rng.random_bool(0.01) {
            steps.push(steps[steps.len() - 1].clone());
        }
    }
    steps
}

/// Per routed-to customer, the event ids counted under it, in input order; and each event's
/// producer-side customer.
fn expected(steps: &[Step]) -> (HashMap<String, Vec<String>>, HashMap<String, String>) {
    let mut seen = HashSet::new();
    let mut alias: HashMap<&str, &str> = HashMap::new();
    let mut routed: HashMap<String, Vec<String>> = HashMap::new();
    let mut source = HashMap::new();
    for (customer, event_id, alias_of) in steps {
        if !seen.insert((customer, event_id)) {
            continue;
        }
        match alias_of {
            Some(target) => {
                alias.insert(customer, target);
            }
            None => {
                let to = alias.get(customer.as_str()).copied().unwrap_or(customer);
                routed.entry(to.to_owned()).or_default().push(event_id.clone());
                source.insert(event_id.clone(), customer.clone());
            }
        }
    }
    (routed, source)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_rekeyed_through_a_repartition_topic_under_sigkill_are_counted_exactly_once() {
    let router_topics = ServiceTopics::create("route", 0).await;
    let routed = unique_topic("route-routed");
    create_test_topics(&[TopicRequest::events(&routed, PARTITIONS, 1)]).await;
    let counter_topics = ServiceTopics {
        group: unique_topic("count-group"),
        input: routed.clone(),
        changelog: unique_topic("count-state"),
        dlq: router_topics.dlq.clone(),
        outputs: vec![unique_topic("count-out")],
    };
    create_test_topics(&[
        TopicRequest::compacted(&counter_topics.changelog, PARTITIONS, 1),
        TopicRequest::plain(&counter_topics.outputs[0], PARTITIONS, 1),
    ])
    .await;
    let steps = workload(41);
    let (expected, source) = expected(&steps);
    let total: usize = expected.values().map(Vec::len).sum();
    let input: Vec<(String, Vec<u8>)> = steps.iter().map(record).collect();
    // Slow enough that the six kills below (each restart takes seconds to rejoin) land while
    // events are still coming.
    let producing = produce_at_rate(router_topics.input.clone(), input, 2_500);

    let output = counter_topics.outputs[0].clone();
    let router = |label: &str| {
        let mut args = router_topics.runtime_args("router-0", 0);
        args.extend(["--routed-topic".to_owned(), routed.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::spawn(
            env!("CARGO_BIN_EXE_alias-router"),
            &format!("route-router-{label}"),
            &args,
            &[],
        )
    };
    let counter = |label: &str| {
        let mut args = counter_topics.runtime_args("counter-0", 0);
        args.extend(["--output-topic".to_owned(), output.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::spawn(
            env!("CARGO_BIN_EXE_event-counter"),
            &format!("route-counter-{label}"),
            &args,
            &[],
        )
    };
    // Six runs; each kills the router, the counter or both at a random moment after the counted
    // output grew, and restarts what it killed.
    let mut rng = StdRng::seed_from_u64(7);
    let (mut stage_one, mut stage_two) = (router("0"), counter("0"));
    let mut mid_stream = 0;
    for run in 1..=6 {
        let before = end_offsets(&output);
        let watched = output.clone();
        tokio::task::spawn_blocking(move || {
            // Or finished: the mid-stream count below says whether the kills came too late.
            wait_until("the stages make progress", Duration::from_secs(60), || {
                end_offsets(&watched) > before + 500 || output_may_be_complete(&watched, total)
            })
        })
        .await
        .expect("progress task");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        if !output_may_be_complete(&output, total) {
            mid_stream += 1;
        }
        match rng.random_range(0..3) {
            0 => {
                stage_one.kill();
                stage_one = router(&run.to_string());
            }
            1 => {
                stage_two.kill();
                stage_two = counter(&run.to_string());
            }
            _ => {
                stage_one.kill();
                stage_two.kill();
                stage_one = router(&run.to_string());
                stage_two = counter(&run.to_string());
            }
        }
    }
    assert!(mid_stream >= 5, "only {mid_stream} kills happened mid-stream");
    producing.await.expect("producer task");

    let actual = committed_outputs(&output, total, Duration::from_secs(180)).await;
    assert_eq!(actual.len(), expected.len(), "a count for every routed-to customer, and no other");
    for (customer, want) in &expected {
        let records: Vec<CountRecord> = actual[&(output.clone(), customer.clone())]
            .iter()
            .map(|value| serde_json::from_slice(value.as_deref().expect("a count")).expect("a count record"))
            .collect();
        let counts: Vec<u64> = records.iter().map(|r| r.count).collect();
        assert_eq!(counts, (1..=want.len() as u64).collect::<Vec<_>>(), "{customer}: one count per event");
        let mut got: Vec<&String> = records.iter().map(|r| &r.event_id).collect();
        // Events of different producers' customers interleave by timing; each one's own stay in order.
        for from in want.iter().map(|id| &source[id]).collect::<HashSet<_>>() {
            let theirs = |ids: &mut dyn Iterator<Item = &String>| -> Vec<String> {
                ids.filter(|id| &source[*id] == from).cloned().collect()
            };
            assert_eq!(
                theirs(&mut got.iter().copied()),
                theirs(&mut want.iter()),
                "{from}'s events under {customer}"
            );
        }
        got.sort();
        let mut want_sorted: Vec<&String> = want.iter().collect();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{customer}: each routed event once");
    }
    assert!(
        consume_committed(&router_topics.dlq, 1, Duration::from_secs(2)).is_empty(),
        "nothing dead-lettered"
    );
    assert!(stage_one.is_running() && stage_two.is_running(), "both stages still work");
}
