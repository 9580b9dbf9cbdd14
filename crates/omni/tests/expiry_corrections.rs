//! `omni loyalty expiry-corrections` end to end: a ledger written by state version 1 (points
//! expired 360 days after the order), the printed adjustments published with `omni produce`, the
//! real loyalty-points writes them, and a second run finds nothing left to correct.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use omnistream_model::records::{BalanceAfter, LedgerEntryKind, LoyaltyLedgerEntry};
use omnistream_model::{decode_record, encode_record};
use omnistream_testkit::pipeline::ServiceTopics;
use omnistream_testkit::{
    ServiceProcess, bootstrap_servers, produce_all, read_committed_to_end, workspace_binary,
};
use rdkafka::message::Message;

fn omni(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_omni"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers())
        .env("LOG_FORMAT", "text")
        .output()
        .expect("run omni");
    assert!(output.status.success(), "omni {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn entry(id: &str, kind: LedgerEntryKind, points: i64, when: DateTime<Utc>) -> (String, Vec<u8>) {
    let entry = LoyaltyLedgerEntry {
        entry_id: id.to_owned(),
        customer_id: "c-1".to_owned(),
        kind,
        points,
        balance_after: BalanceAfter { active: 0, pending: 0 },
        reason: None,
        cause_event_id: id.split('/').next().unwrap().to_owned(),
        order_id: None,
        channel: None,
        negative_balance: false,
        occurred_at: when,
        redemption_id: None,
        reason_detail: None,
    };
    ("c-1".to_owned(), encode_record(&entry).unwrap())
}

fn corrections(ledger: &str) -> Vec<serde_json::Value> {
    let output = omni(&["loyalty", "expiry-corrections", "--ledger-topic", ledger]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn early_expiries_are_given_back_once_through_the_real_service() {
    let topics = ServiceTopics::create("expiry-corrections", 2).await;
    let (ledger, balances) = (topics.outputs[0].clone(), topics.outputs[1].clone());
    // Ordered 2025-01-31; 70 of its 100 points expired on 2026-01-26 (360 days), not 2026-01-31.
    let day =
        |m, d| Utc.with_ymd_and_hms(if m == 1 && d == 26 { 2026 } else { 2025 }, m, d, 10, 0, 0).unwrap();
    produce_all(
        &ledger,
        [
            entry("e1/earn", LedgerEntryKind::Earn, 100, day(1, 31)),
            entry("e1/earn/activate", LedgerEntryKind::Activate, 100, day(2, 14)),
            entry("e2/redeem", LedgerEntryKind::Redeem, -30, day(6, 1)),
            entry("e1/earn/expire", LedgerEntryKind::Expire, -70, day(1, 26)),
        ],
    )
    .await;
    let proposed = corrections(&ledger);
    assert_eq!(proposed.len(), 1, "{proposed:?}");
    assert_eq!(proposed[0]["properties"]["points"], 70);
    assert_eq!(proposed[0]["properties"]["reason"], "expiry_rule_change");
    assert_eq!(proposed[0]["properties"]["calendar_expiry"], "2026-01-31T10:00:00.000Z");

    let file = std::env::temp_dir().join(format!("{ledger}.jsonl"));
    std::fs::write(&file, format!("{}\n", proposed[0])).unwrap();
    omni(&["produce", "--file", file.to_str().unwrap(), "--topic", &topics.input]);
    let mut args = topics.runtime_args("expiry", 0);
    args.extend(["--ledger-topic".to_owned(), ledger.clone(), "--balances-topic".to_owned(), balances]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _service =
        ServiceProcess::spawn(&workspace_binary("loyalty-points"), "expiry-corrections", &args, &[]);

    let ledger_reader = ledger.clone();
    let adjusted = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let adjusts: Vec<LoyaltyLedgerEntry> = read_committed_to_end(&ledger_reader)
                .iter()
                .map(|m| decode_record::<LoyaltyLedgerEntry>(m.payload().unwrap()).unwrap())
                .filter(|e| e.kind == LedgerEntryKind::Adjust)
                .collect();
            if !adjusts.is_empty() {
                return adjusts;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no adjust entry within 60 s");
    })
    .await
    .unwrap();
    assert_eq!(adjusted.len(), 1);
    assert_eq!((adjusted[0].points, adjusted[0].reason.as_deref()), (70, Some("expiry_rule_change")));
    assert_eq!(adjusted[0].cause_event_id, "expiry-correction:e1/earn/expire");
    assert_eq!(corrections(&ledger), Vec::<serde_json::Value>::new(), "a second run proposes nothing");
}
