//! loyalty-points end to end on the real broker: story 3 of SPEC 1 (earn in store, spend on the
//! web, two channels redeeming at the same moment, a refund taking the points back), and
//! exactly-once under SIGKILL.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use omnistream_loyalty_points::{INSUFFICIENT_POINTS, LoyaltyPoints, LoyaltyRules};
use omnistream_model::records::{LedgerEntryKind, LoyaltyBalance, LoyaltyLedgerEntry};
use omnistream_model::{decode_record, encode_event, parse_event_json};
use omnistream_testkit::pipeline::{
    ServiceTopics, assert_latest_outputs, assert_same_outputs, sigkill_mid_stream,
};
use omnistream_testkit::{
    CommittedReader, ServiceProcess, consume_committed, produce_all, produce_with, producer, workspace_binary,
};
use rdkafka::message::Message;

fn loyalty(topics: &ServiceTopics, instance: &str, label: &str) -> ServiceProcess {
    loyalty_holding(topics, instance, label, "decoded")
}

/// The service with `--idle-state` `idle_state`.
fn loyalty_holding(topics: &ServiceTopics, instance: &str, label: &str, idle_state: &str) -> ServiceProcess {
    let mut args = topics.runtime_args(instance, 0);
    args.extend([
        "--ledger-topic".to_owned(),
        topics.outputs[0].clone(),
        "--balances-topic".to_owned(),
        topics.outputs[1].clone(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServiceProcess::spawn(
        &workspace_binary("loyalty-points"),
        label,
        &args,
        &[("RUST_LOG", "info,rdkafka=warn"), ("IDLE_STATE", idle_state)],
    )
}

/// One event of c-3003, `days_ago` days before now, as (key, Avro bytes).
fn event(id: &str, days_ago: i64, channel: &str, event_type: &str, properties: &str) -> (String, Vec<u8>) {
    let at = Utc::now() - chrono::Duration::days(days_ago);
    let json = format!(
        r#"{{"event_id":"{id}","customer_id":"c-3003","occurred_at":"{}","channel":"{channel}","type":"{event_type}","properties":{properties}}}"#,
        at.to_rfc3339()
    );
    ("c-3003".to_owned(), encode_event(&parse_event_json(&json, Utc::now()).expect("valid event")).unwrap())
}

/// The committed ledger of c-3003 once it holds `entries` entries.
fn ledger_of(topic: &str, entries: usize) -> Vec<LoyaltyLedgerEntry> {
    let started = Instant::now();
    loop {
        let ledger: Vec<LoyaltyLedgerEntry> = consume_committed(topic, usize::MAX, Duration::from_secs(3))
            .iter()
            .filter(|m| m.key() == Some(b"c-3003".as_slice()))
            .map(|m| decode_record(m.payload().unwrap()).unwrap())
            .collect();
        if ledger.len() >= entries || started.elapsed() > Duration::from_secs(60) {
            return ledger;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn story_three_earn_in_store_spend_on_the_web_never_overdrawn_refund_takes_back() {
    let topics = ServiceTopics::create("loyalty-story", 2).await;
    let _service = loyalty(&topics, "story", "loyalty-story");
    let (ledger, balances) = (topics.outputs[0].clone(), topics.outputs[1].clone());

    // A store purchase 15 days ago: past its return window, so its points activate (by timer:
    // no later event comes).
    produce_all(
        &topics.input,
        [event(
            "s3-order",
            15,
            "store",
            "order_placed",
            r#"{"order_id":"o-3","value_minor":12999,"currency":"EUR"}"#,
        )],
    )
    .await;
    let entries = tokio::task::block_in_place(|| ledger_of(&ledger, 2));
    let kinds: Vec<_> = entries.iter().map(|e| (e.kind, e.points)).collect();
    assert_eq!(kinds, vec![(LedgerEntryKind::Earn, 129), (LedgerEntryKind::Activate, 129)]);

    // The website and the app redeem 100 each at the same moment, from two producers: only one
    // fits.
    let (web, app) = (producer(), producer());
    let redeem = |id: &str, channel: &str| {
        event(
            id,
            0,
            channel,
            "loyalty_redeem_requested",
            &format!(r#"{{"redemption_id":"{id}","points":100}}"#),
        )
    };
    tokio::join!(
        produce_with(&web, &topics.input, [redeem("s3-web", "web")]),
        produce_with(&app, &topics.input, [redeem("s3-app", "mobile_app")]),
    );
    let entries = tokio::task::block_in_place(|| ledger_of(&ledger, 4));
    let decisions: Vec<_> = entries[2..].iter().map(|e| e.kind).collect();
    assert!(
        decisions == [LedgerEntryKind::Redeem, LedgerEntryKind::Reject]
            || decisions == [LedgerEntryKind::Reject, LedgerEntryKind::Redeem],
        "exactly one redemption succeeds: {decisions:?}"
    );
    let rejected = entries.iter().find(|e| e.kind == LedgerEntryKind::Reject).unwrap();
    assert!(rejected.reason.as_deref().unwrap().starts_with(INSUFFICIENT_POINTS));
    assert_eq!(entries[3].balance_after.active, 29, "never overdrawn");

    // The order is refunded: its points are taken back; 100 were spent, so the balance goes
    // negative and the entry says so.
    produce_all(
        &topics.input,
        [event(
            "s3-refund",
            0,
            "store",
            "order_refunded",
            r#"{"order_id":"o-3","value_minor":12999,"currency":"EUR"}"#,
        )],
    )
    .await;
    let entries = tokio::task::block_in_place(|| ledger_of(&ledger, 5));
    let reverse = &entries[4];
    assert_eq!(
        (reverse.kind, reverse.points, reverse.negative_balance),
        (LedgerEntryKind::Reverse, -129, true)
    );
    assert_eq!(reverse.balance_after.active, -100);

    let reader = CommittedReader::from_beginning(&balances);
    let balance = tokio::task::block_in_place(|| {
        reader.read_until(Duration::from_secs(30), |m| {
            let balance: LoyaltyBalance = decode_record(m.payload()?).unwrap();
            (balance.active == -100).then_some(balance)
        })
    })
    .expect("the balance after the refund");
    assert_eq!((balance.spent, balance.lifetime_earned, balance.pending), (100, 0, 0));
}

/// With customers held by their records compressed between transactions (`--idle-state
/// compressed`): every run trains its dictionary on the first thousand records it holds, every
/// restore holds the records it read, every transaction thaws and freezes them again.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_200000_events_held_compressed_no_duplicate_entry_and_balances_equal_the_pure_fold() {
    let topics = ServiceTopics::create("loyalty-crash", 2).await;
    let (ledger, balances) = (topics.outputs[0].clone(), topics.outputs[1].clone());
    let processor = LoyaltyPoints::new(LoyaltyRules::default());
    // Progress is watched on the balances: one record per applied event.
    let outcome = sigkill_mid_stream(&topics, 53, processor, 1, |run| {
        loyalty_holding(&topics, "loyalty-crash", &format!("loyalty-crash-{run}"), "compressed")
    })
    .await;
    let (actual_ledger, actual_balances) = (&outcome.committed[0], &outcome.committed[1]);
    let mut ids = HashSet::new();
    for values in actual_ledger.values() {
        for value in values {
            let entry: LoyaltyLedgerEntry =
                decode_record(value.as_deref().expect("no ledger tombstones")).unwrap();
            assert!(ids.insert(entry.entry_id.clone()), "entry {} is in the ledger twice", entry.entry_id);
        }
    }
    assert_same_outputs(&outcome.expected, actual_ledger, &ledger, |bytes| {
        decode_record::<LoyaltyLedgerEntry>(bytes).unwrap()
    });
    assert_latest_outputs(&outcome.expected, actual_balances, &balances, |bytes| {
        decode_record::<LoyaltyBalance>(bytes).unwrap()
    });
}

/// SPEC 4.5, erasure is final: after `erasure_requested`, a producer's retry of an earlier event
/// and an event in flight dated before the erasure recreate nothing (before: a duplicate `earn`
/// and a new balance); an event dated after it starts a new relationship. Worked out by hand:
/// the ledger holds earn (o-1), erase, earn (o-3), and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn after_an_erasure_retries_and_older_events_recreate_nothing() {
    let topics = ServiceTopics::create("loyalty-erasure", 2).await;
    let _service = loyalty(&topics, "erasure", "loyalty-erasure");
    let order = |id: &str, order_id: &str, minutes_ago: i64| {
        let at = Utc::now() - chrono::Duration::minutes(minutes_ago);
        let json = format!(
            r#"{{"event_id":"{id}","customer_id":"c-3003","occurred_at":"{}","channel":"store","type":"order_placed","properties":{{"order_id":"{order_id}","value_minor":10000,"currency":"EUR"}}}}"#,
            at.to_rfc3339()
        );
        ("c-3003".to_owned(), encode_event(&parse_event_json(&json, Utc::now()).expect("valid")).unwrap())
    };
    let erase = {
        let json = format!(
            r#"{{"event_id":"erase","customer_id":"c-3003","occurred_at":"{}","channel":"web","type":"erasure_requested","properties":{{}}}}"#,
            (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339()
        );
        ("c-3003".to_owned(), encode_event(&parse_event_json(&json, Utc::now()).unwrap()).unwrap())
    };
    produce_all(
        &topics.input,
        [
            order("o-1", "o-1", 10),
            erase,
            // The producer retries o-1 (same event id), and an order from before the erasure
            // arrives late: both dropped.
            order("o-1", "o-1", 10),
            order("o-2", "o-2", 7),
            // After the erasure: a new relationship.
            order("o-3", "o-3", 1),
        ],
    )
    .await;
    let ledger = tokio::task::spawn_blocking({
        let topic = topics.outputs[0].clone();
        // Per partition in order: a recreated entry would come before o-3's and change these three.
        move || ledger_of(&topic, 3)
    })
    .await
    .unwrap();
    let entries: Vec<(LedgerEntryKind, Option<&str>)> =
        ledger.iter().map(|entry| (entry.kind, entry.order_id.as_deref())).collect();
    assert_eq!(
        entries,
        vec![
            (LedgerEntryKind::Earn, Some("o-1")),
            (LedgerEntryKind::Erase, None),
            (LedgerEntryKind::Earn, Some("o-3"))
        ]
    );
    let balance = tokio::task::spawn_blocking({
        let topic = topics.outputs[1].clone();
        move || {
            consume_committed(&topic, usize::MAX, Duration::from_secs(3))
                .last()
                .and_then(|m| m.payload().map(|bytes| decode_record::<LoyaltyBalance>(bytes).unwrap()))
        }
    })
    .await
    .unwrap()
    .expect("the new relationship's balance");
    assert_eq!((balance.pending, balance.lifetime_earned, balance.version), (100, 100, 1));
}
