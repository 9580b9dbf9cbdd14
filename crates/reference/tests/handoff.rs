//! The state handoff (a merge), proven on the real broker with the merging counter: customers
//! merge into others on other partitions while the service is SIGKILLed at random moments, and
//! every count must arrive exactly once. The oracle is worked out here from the counter's rules
//! (docs/runtime.md, "State handoff"), by counting the input, not by running the processor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use omnistream_model::{Channel, EventPayload, TouchpointEvent, encode_event};
use omnistream_reference::{CountRecord, merge_request};
use omnistream_runtime::admin::TopicRequest;
use omnistream_testkit::pipeline::{
    OutputsByKey, PARTITIONS, ServiceTopics, committed_outputs, kill_repeatedly, produce_at_rate,
};
use omnistream_testkit::{ServiceProcess, consume_committed, create_test_topics, unique_topic};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 150_000;
const WINNERS: usize = 400;
const LOSERS: usize = 800;

/// One input record: a counted event or a merge, as the producer sends it.
#[derive(Debug, Clone)]
enum Step {
    Counted { customer: String, event_id: String },
    Merge { loser: String, winner: String, event_id: String },
}

impl Step {
    fn record(&self) -> (String, Vec<u8>) {
        let occurred_at = Utc::now() - chrono::Duration::minutes(5);
        let event = match self {
            Step::Counted { customer, event_id } => TouchpointEvent {
                event_id: event_id.clone(),
                customer_id: customer.clone(),
                occurred_at,
                channel: Channel::Web,
                source: None,
                payload: EventPayload::PageViewed { url: "https://shop.example/".into() },
                context: BTreeMap::new(),
                identifiers: Vec::new(),
            },
            Step::Merge { loser, winner, event_id } => merge_request(event_id, loser, winner, occurred_at),
        };
        (event.customer_id.clone(), encode_event(&event).expect("encodes"))
    }
}

/// Events of winners and losers in random order; each loser merges into a random winner once, at
/// a random point (before any event of theirs, for some). 1 % of records are sent twice (producer
/// retries), merges included.
fn workload(seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let winner = |i: usize| format!("w-{i:04}");
    let loser = |i: usize| format!("l-{i:04}");
    let mut merges: Vec<(usize, usize)> = (0..LOSERS).map(|l| (rng.random_range(0..EVENTS), l)).collect();
    merges.sort_unstable();
    let mut merges = merges.into_iter().peekable();
    let mut steps = Vec::new();
    for index in 0..EVENTS {
        while let Some((_, l)) = merges.next_if(|(at, _)| *at == index) {
            let merge = Step::Merge {
                loser: loser(l),
                winner: winner(rng.random_range(0..WINNERS)),
                event_id: format!("merge-{l}"),
            };
            steps.push(merge);
        }
        let pick = rng.random_range(0..WINNERS + LOSERS);
        let customer = if pick < WINNERS { winner(pick) } else { loser(pick - WINNERS) };
        steps.push(Step::Counted { customer, event_id: format!("e-{index}") });
        if rng.random_bool(0.01) {
            steps.push(steps[steps.len() - 1].clone());
        }
    }
    steps
}

/// What the committed output must hold, counted from the input.
#[derive(Debug, Default)]
struct Expected {
    /// A loser's records exactly: (count, event_id), `None` for the merge's tombstone.
    losers: HashMap<String, Vec<Option<(u64, String)>>>,
    /// A winner's own events, in order (each a +1 record).
    winner_events: HashMap<String, Vec<String>>,
    /// The merges a winner takes, as (loser, count moved): order depends on timing, not the sum.
    winner_merges: HashMap<String, Vec<(String, u64)>>,
}

impl Expected {
    fn records(&self) -> usize {
        self.losers.values().map(Vec::len).sum::<usize>()
            + self.winner_events.values().map(Vec::len).sum::<usize>()
            + self.handoffs()
    }

    fn handoffs(&self) -> usize {
        self.winner_merges.values().map(Vec::len).sum()
    }
}

fn expected(steps: &[Step]) -> Expected {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut expected = Expected::default();
    for step in steps {
        match step {
            Step::Counted { customer, event_id } => {
                if !seen.insert((customer, event_id)) {
                    continue;
                }
                let count = counts.entry(customer).or_default();
                *count += 1;
                if customer.starts_with("l-") {
                    expected
                        .losers
                        .entry(customer.clone())
                        .or_default()
                        .push(Some((*count, event_id.clone())));
                } else {
                    expected.winner_events.entry(customer.clone()).or_default().push(event_id.clone());
                }
            }
            Step::Merge { loser, winner, event_id } => {
                if !seen.insert((loser, event_id)) {
                    continue;
                }
                expected.losers.entry(loser.clone()).or_default().push(None);
                let moved = counts.insert(loser, 0).unwrap_or(0);
                if moved > 0 {
                    expected.winner_merges.entry(winner.clone()).or_default().push((loser.clone(), moved));
                }
            }
        }
    }
    expected
}

fn decode(value: &Option<Vec<u8>>) -> Option<CountRecord> {
    value.as_deref().map(|bytes| serde_json::from_slice(bytes).expect("a count record"))
}

fn assert_exactly_once(expected: &Expected, actual: &OutputsByKey, output: &str) {
    for (loser, want) in &expected.losers {
        let got: Vec<Option<(u64, String)>> = actual
            .get(&(output.to_owned(), loser.clone()))
            .map(|values| values.iter().map(|v| decode(v).map(|r| (r.count, r.event_id))).collect())
            .unwrap_or_default();
        assert_eq!(&got, want, "the records of {loser}");
    }
    let winners: HashSet<&String> =
        expected.winner_events.keys().chain(expected.winner_merges.keys()).collect();
    for winner in winners {
        let records = actual.get(&(output.to_owned(), winner.clone())).cloned().unwrap_or_default();
        let (mut previous, mut events, mut merges) = (0, Vec::new(), Vec::new());
        for record in records.iter().map(decode) {
            let record = record.expect("a winner's record is never a tombstone");
            match record.merged_from {
                Some(loser) => merges.push((loser, record.count - previous)),
                None => {
                    assert_eq!(record.count, previous + 1, "{winner}: an event adds one");
                    events.push(record.event_id);
                }
            }
            previous = record.count;
        }
        let want_events = expected.winner_events.get(winner).cloned().unwrap_or_default();
        assert_eq!(events, want_events, "{winner}'s own events, each once, in order");
        let mut want_merges = expected.winner_merges.get(winner).cloned().unwrap_or_default();
        want_merges.sort();
        merges.sort();
        assert_eq!(merges, want_merges, "{winner} takes each loser's count once");
    }
    let keys = expected.losers.len()
        + expected.winner_events.keys().chain(expected.winner_merges.keys()).collect::<HashSet<_>>().len();
    assert_eq!(actual.len(), keys, "no output for a customer the input does not name");
}

#[tokio::test(flavor = "multi_thread")]
async fn merges_under_sigkill_move_every_count_exactly_once() {
    let topics = ServiceTopics::create("handoff", 1).await;
    let handoff = unique_topic("handoff-handoff");
    create_test_topics(&[TopicRequest::events(&handoff, PARTITIONS, 1)]).await;
    let steps = workload(31);
    let expected = expected(&steps);
    assert!(expected.handoffs() > LOSERS / 2, "most losers have a count to move");
    let input: Vec<(String, Vec<u8>)> = steps.iter().map(Step::record).collect();
    let producing = produce_at_rate(topics.input.clone(), input, 4_000);

    let output = topics.outputs[0].clone();
    let start = |label: &str| {
        let mut args = topics.runtime_args("handoff-0", 0);
        args.extend(["--output-topic", &output, "--handoff-topic", &handoff, "--merges"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::spawn(
            env!("CARGO_BIN_EXE_event-counter"),
            &format!("handoff-{label}"),
            &args,
            &[("RUST_LOG", "info,rdkafka=warn")],
        )
    };
    let kills = kill_repeatedly(5, &output, expected.records(), |run| start(&format!("run-{run}"))).await;
    assert!(kills >= 5, "only {kills} kills happened mid-stream");
    producing.await.expect("producer task");

    let mut last = start("final");
    let actual = committed_outputs(&output, expected.records(), Duration::from_secs(180)).await;
    assert_exactly_once(&expected, &actual, &output);
    let handoffs = consume_committed(&handoff, expected.handoffs() + 1, Duration::from_secs(10)).len();
    assert_eq!(handoffs, expected.handoffs(), "one committed handoff record per merge with a count");
    assert!(consume_committed(&topics.dlq, 1, Duration::from_secs(2)).is_empty(), "nothing dead-lettered");
    assert!(last.is_running(), "the last run is still working");
}

fn merging_counter(topics: &ServiceTopics, handoff: &str, label: &str) -> ServiceProcess {
    let mut args = topics.runtime_args("steps-0", 0);
    // Long transactions: the kill below lands after step 1 committed and before step 2 can.
    args.extend(
        [
            "--output-topic",
            &topics.outputs[0],
            "--handoff-topic",
            handoff,
            "--merges",
            "--commit-interval-ms",
            "3000",
            // Also while it keeps up (a fresh record would otherwise commit after 20 ms).
            "--commit-keeping-up-ms",
            "3000",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::spawn(env!("CARGO_BIN_EXE_event-counter"), label, &args, &[])
}

/// The step between the two transactions, hit on purpose: the process dies once the handoff
/// record is committed and before the winner's transaction can commit; the restart applies it
/// once.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_between_the_two_steps_of_a_merge_applies_it_once_after_the_restart() {
    let topics = ServiceTopics::create("steps", 1).await;
    let handoff = unique_topic("steps-handoff");
    create_test_topics(&[TopicRequest::events(&handoff, PARTITIONS, 1)]).await;
    let counted = |customer: &str, id: &str| {
        Step::Counted { customer: customer.to_owned(), event_id: id.to_owned() }.record()
    };
    let output = topics.outputs[0].clone();
    let before = vec![counted("l-1", "a"), counted("l-1", "b"), counted("l-1", "c"), counted("w-1", "d")];
    omnistream_testkit::produce_all(&topics.input, before).await;
    let first = merging_counter(&topics, &handoff, "steps-first");
    let watched = output.clone();
    tokio::task::spawn_blocking(move || {
        omnistream_testkit::wait_until("the counts are committed", Duration::from_secs(60), || {
            consume_committed(&watched, 4, Duration::from_secs(1)).len() == 4
        })
    })
    .await
    .expect("wait task");

    let merge = Step::Merge { loser: "l-1".into(), winner: "w-1".into(), event_id: "m".into() };
    omnistream_testkit::produce_all(&topics.input, [merge.record()]).await;
    let watched = handoff.clone();
    let first = tokio::task::spawn_blocking(move || {
        omnistream_testkit::wait_until("step 1 commits", Duration::from_secs(30), || {
            consume_committed(&watched, 1, Duration::from_millis(20)).len() == 1
        });
        first.kill();
    });
    first.await.expect("kill task");
    let after_step_one = consume_committed(&output, 6, Duration::from_secs(2));
    assert_eq!(after_step_one.len(), 5, "step 1 (the loser's tombstone) committed, step 2 not");

    let _restarted = merging_counter(&topics, &handoff, "steps-restarted");
    let actual = committed_outputs(&output, 6, Duration::from_secs(60)).await;
    let winner: Vec<CountRecord> =
        actual[&(output.clone(), "w-1".to_owned())].iter().map(|v| decode(v).expect("a count")).collect();
    assert_eq!(winner.len(), 2, "the merge is applied once");
    assert_eq!((winner[1].count, winner[1].merged_from.as_deref()), (4, Some("l-1")));
    assert_eq!(consume_committed(&handoff, 2, Duration::from_secs(2)).len(), 1, "one handoff record");
}
